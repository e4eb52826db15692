"""Data-parallel training (ganfn.distributed, ganfn.dask_launch) on CPU with gloo.

The multi-process tests spawn 2 ranks on 127.0.0.1 and check, for several GAN
setups, that 2 ranks with batch B end with the same state as 1 process with
batch 2B (float64, so summation order is the only difference), that the ranks'
states are identical, and the same through a Dask LocalCluster of 2 workers.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import optree
import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import data as gdata
from ganfn import distributed as gd
from ganfn import models as gmodels

torch.set_num_threads(1)

B = 6          # per-rank batch
WORLD = 2
STEPS = 3
N_DATA = 40    # not a multiple of the global batch: batches run across epochs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlp(i: int, o: int, norm: bool = False) -> nn.Sequential:
    mid = [nn.BatchNorm1d(16)] if norm else []
    return nn.Sequential(nn.Linear(i, 16), *mid, nn.LeakyReLU(0.2), nn.Linear(16, o))


# -- the setups every multi-process test runs ------------------------------------------------------

SCENARIOS = {
    # WGAN-GP with n_critic > 1 and gradient accumulation inside each rank.
    "wgan_gp": dict(loss="wasserstein", parts=ganfn.recipes.wgan_gp(), n_critic=3, accumulation_steps=2),
    # R1, label smoothing, EMA, spectral norm, instance noise, D skipping by accuracy.
    "ns_extras": dict(loss=ganfn.losses.bce(real_label=0.9), n_gen=2,
                      parts=ganfn.recipes.classic(penalties=[ganfn.penalties.r1()], spectral_norm=True,
                                                  instance_noise=0.1, d_skip_accuracy=0.55, ema_decay=0.9)),
    # Weight clipping with RMSprop (WGAN).
    "wgan_clip": dict(loss="wasserstein", parts=ganfn.recipes.wgan(0.01), n_critic=2,
                      g_optimizer=ganfn.optim.rmsprop(5e-3), d_optimizer=ganfn.optim.rmsprop(5e-3)),
    # Class-conditional (labels in the data and the noise), hinge + R1, n_critic > 1.
    "conditional": dict(loss="hinge", parts=[ganfn.penalties.r1(), ganfn.parts.ema(0.9)], n_critic=2, num_classes=3),
}
STACK_SEEDS, STACK_LRS = (0, 1), (1e-3, 3e-3)


def _gan(name: str) -> ganfn.GAN:
    kw = dict(SCENARIOS.get(name, {}))
    kw.setdefault("g_optimizer", ganfn.optim.adam(1e-3, (0.5, 0.999)))
    kw.setdefault("d_optimizer", ganfn.optim.adam(1e-3, (0.5, 0.999)))
    if name == "stacked":
        kw.update(loss="hinge", parts=ganfn.recipes.wgan_gp(), n_critic=2)
    norm = name == "batchnorm"
    if "num_classes" in kw:
        k = kw["num_classes"]
        G, D = gmodels.CondMLPGenerator(3, 2, k, 16, 1, out_act=None), gmodels.CondMLPDiscriminator(2, k, 16, 1)
        return ganfn.GAN(G.double(), D.double(), latent_dim=3, **kw)
    return ganfn.GAN(_mlp(3, 2, norm=norm).double(), _mlp(2, 1).double(), latent_dim=3, **kw)


def _data(gan: ganfn.GAN | None = None):
    """The training data; an (x, labels) pair for a conditional GAN."""
    x = torch.randn(N_DATA, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2
    if gan is None or gan.num_classes is None:
        return x
    return x, torch.randint(gan.num_classes, (N_DATA,), generator=torch.Generator().manual_seed(8))


def _leading(gan: ganfn.GAN) -> int | None:
    return gan.n_critic if gan.n_critic > 1 else None


def _run_dp(name: str, *, sync_buffers: bool = True):
    """Train ``name`` data-parallel in the current process group; the rank's
    final state and metrics."""
    gan = _gan(name)
    x = _data(gan)
    stacked = name == "stacked"
    step = gd.make_train_step(gan, stacked=stacked, sync_buffers=sync_buffers)
    if stacked:
        from ganfn import ensemble
        state = ensemble.init_many(gan, STACK_SEEDS, [{"lr_d": lr} for lr in STACK_LRS])
        rng = [torch.Generator().manual_seed(100 + s) for s in STACK_SEEDS]
    else:
        state, rng = gan.init(0), torch.Generator().manual_seed(1)
    pos = gdata.loader_init(N_DATA, seed=3)
    history = []
    for _ in range(STEPS):
        real, pos = gd.next_shard(x, pos, B, leading=_leading(gan))
        noise = gd.draw_noise_shard(gan, rng, B, dtype=torch.float64)
        state, metrics = step(state, real, noise)
        history.append(metrics)
    return state, history, gd.max_divergence(state)


def _run_single(name: str, member: int | None = None):
    """The reference: one process, batch WORLD*B, gan.train_step."""
    gan = _gan(name)
    x = _data(gan)
    if member is None:
        state, rng = gan.init(0), torch.Generator().manual_seed(1)
    else:
        state = gan.init(STACK_SEEDS[member], lr_d=STACK_LRS[member])
        rng = torch.Generator().manual_seed(100 + STACK_SEEDS[member])
    pos = gdata.loader_init(N_DATA, seed=3)
    history = []
    for _ in range(STEPS):
        real, pos = gdata.next_batch(x, pos, WORLD * B, leading=_leading(gan))
        noise = gan.draw_noise(rng, WORLD * B, dtype=torch.float64)
        state, metrics = gan.train_step(state, real, noise)
        history.append(metrics)
    return state, history


def _worker(rank: int, port: int, out: str, names: list[str]) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    gd.setup("gloo", timeout_s=60)
    try:
        results = {n: _run_dp(n) for n in names}
        results["batchnorm_nosync"] = _run_dp("batchnorm", sync_buffers=False)
        results["world"] = tuple(gd.world())
        results["fit"] = _fit_rank(rank, out)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        gd.teardown()


def _fit_rank(rank: int, out: str):
    """ganfn.loop.fit under the process group, each rank given its own run_dir:
    only rank 0's may receive files."""
    from ganfn import loop
    gan = _gan("wgan_gp")
    state, hist = loop.fit(gan, _data(), steps=4, batch_size=B, run_dir=os.path.join(out, f"fit_rank{rank}"),
                           seed=0, log_every=2, image_every=2, checkpoint_every=2, progress=False,
                           print_fn=lambda _m: None)
    return state, gd.max_divergence(state)


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """One 2-rank gloo job running every scenario; the ranks' results."""
    out = tmp_path_factory.mktemp("dp")
    names = [*SCENARIOS, "stacked", "batchnorm"]
    mp.start_processes(_worker, args=(_free_port(), str(out), names), nprocs=WORLD, join=True, start_method="spawn")
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r in results:
        r["out"] = str(out)
    return results


def _assert_close(a, b, what: str, atol: float = 1e-9) -> None:
    la, ta = optree.tree_flatten(a, none_is_leaf=False)
    lb, tb = optree.tree_flatten(b, none_is_leaf=False)
    assert ta == tb, f"{what}: different structures"
    paths = optree.tree_paths(a, none_is_leaf=False)
    for p, x, y in zip(paths, la, lb, strict=True):
        assert x.shape == y.shape, f"{what} {p}: shapes {x.shape} vs {y.shape}"
        assert torch.allclose(x.double(), y.double(), rtol=1e-7, atol=atol, equal_nan=True), \
            f"{what} {p}: max diff {float((x.double() - y.double()).abs().max())}"


# -- multi-process: 2 ranks x B == 1 process x 2B ------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks_equal_one_process_with_double_batch(spawned, name):
    ref_state, ref_hist = _run_single(name)
    for r in range(WORLD):
        state, hist, _ = spawned[r][name]
        _assert_close(state, ref_state, f"{name} rank {r} state")
        for t, (m, mr) in enumerate(zip(hist, ref_hist, strict=True)):
            assert set(m) == set(mr)
            _assert_close(m, mr, f"{name} rank {r} metrics step {t}")
    # The run really trained: parameters moved away from the initial state.
    init = _gan(name).init(0)
    k = next(iter(init.d.params))  # "0.weight" of the MLP, "net.0.weight" of the conditional one
    assert not torch.allclose(ref_state.d.params[k], init.d.params[k])


def test_stacked_members_reduce_together_and_match_single_runs(spawned):
    from ganfn import ensemble
    state, hist, _ = spawned[0]["stacked"]
    assert state.step.shape == (len(STACK_SEEDS),)
    for i, member in enumerate(ensemble.unstack(state)):
        ref_state, ref_hist = _run_single("stacked", member=i)
        _assert_close(member, ref_state, f"stacked member {i}")
        for m, mr in zip(hist, ref_hist, strict=True):
            _assert_close({k: m[k][i] for k in mr}, mr, f"stacked member {i} metrics")


@pytest.mark.parametrize("name", [*SCENARIOS, "stacked", "batchnorm"])
def test_ranks_stay_in_sync(spawned, name):
    s0, _, div0 = spawned[0][name]
    s1, _, div1 = spawned[1][name]
    assert div0 == div1 == 0.0
    for x, y in zip(optree.tree_leaves(s0), optree.tree_leaves(s1), strict=True):
        assert torch.equal(x, y)


def test_batchnorm_running_stats_are_synchronised_only_with_sync_buffers(spawned):
    # With sync_buffers=False the ranks' running statistics drift apart (each
    # normalises its own shard), which is exactly what sync_buffers prevents.
    s0, _, div = spawned[0]["batchnorm_nosync"]
    s1, _, _ = spawned[1]["batchnorm_nosync"]
    assert div > 0
    assert not torch.equal(s0.g.buffers["1.running_mean"], s1.g.buffers["1.running_mean"])
    # ...while the parameters still agree: gradients are always reduced.
    for k in s0.g.params:
        assert torch.equal(s0.g.params[k], s1.g.params[k])
    # BatchNorm normalises per rank, so unlike the setups above it does NOT
    # reproduce the single process with batch 2B (documented behaviour).
    ref, _ = _run_single("batchnorm")
    synced, _, _ = spawned[0]["batchnorm"]
    assert not torch.allclose(synced.g.params["0.weight"], ref.g.params["0.weight"], atol=1e-9)


def test_fit_writes_files_on_rank_0_only(spawned, tmp_path_factory):
    s0, div = spawned[0]["fit"]
    s1, _ = spawned[1]["fit"]
    assert div == 0.0
    for x, y in zip(optree.tree_leaves(s0), optree.tree_leaves(s1), strict=True):
        assert torch.equal(x, y)
    out = Path(spawned[0]["out"])
    written = sorted(p.relative_to(out / "fit_rank0").as_posix() for p in (out / "fit_rank0").rglob("*") if p.is_file())
    assert "metrics.json" in written and "samples.png" in written
    assert any(w.startswith("checkpoints/") for w in written) and any(w.startswith("tb/") for w in written)
    assert not (out / "fit_rank1").exists(), "rank 1 wrote files"
    # fit under 2 ranks (batch B each) trained like one process with batch 2B.
    ref, _ = _run_single_fit()
    _assert_close(s0, ref, "fit state", atol=1e-9)


def _run_single_fit():
    from ganfn import loop
    return loop.fit(_gan("wgan_gp"), _data(), steps=4, batch_size=WORLD * B, seed=0, progress=False,
                    print_fn=lambda _m: None)


def test_world_reported_by_each_rank(spawned):
    assert [spawned[r]["world"] for r in range(WORLD)] == [(0, 2, 0, True), (1, 2, 1, True)]


# -- single process: the pieces ---------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=0, max_size=5),
       dtypes=st.lists(st.sampled_from([torch.float32, torch.float64, torch.float16]), min_size=5, max_size=5))
def test_flatten_roundtrip(shapes, dtypes):
    tree = {f"k{i}": torch.randn(tuple(s)).to(dtypes[i]) for i, s in enumerate(shapes)}
    flat, unflatten = gd.flatten(tree)
    assert flat.dim() == 1 and flat.numel() == sum(t.numel() for t in tree.values())
    back = unflatten(flat)
    assert list(back) == list(tree)
    for k in tree:
        assert back[k].dtype == tree[k].dtype and torch.equal(back[k], tree[k])


def test_collectives_are_identity_without_a_process_group():
    tree = {"a": torch.randn(3), "b": [torch.ones(2, 2)]}
    assert gd.all_reduce_mean(tree) is tree and gd.broadcast(tree) is tree
    assert gd.max_divergence(tree) == 0.0
    assert tuple(gd.world()) == (0, 1, 0, False) and gd.is_main() and gd.world_size() == 1


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(list(SCENARIOS)), seed=st.integers(0, 2**31 - 1))
def test_step_equals_train_step_in_one_process(name, seed):
    gan = _gan(name)
    state = gan.init(seed % 1000)
    rng = torch.Generator().manual_seed(seed)
    real = torch.randn(*([gan.n_critic] if gan.n_critic > 1 else []), 8, 2, generator=rng, dtype=torch.float64)
    if gan.num_classes is not None:
        real = (real, torch.randint(gan.num_classes, real.shape[:-1], generator=rng))
    noise = gan.draw_noise(rng, 8, dtype=torch.float64)
    a, ma = gan.train_step(state, real, noise)
    b, mb = gd.make_train_step(gan)(state, real, noise)
    _assert_close(b, a, "state", atol=0)
    _assert_close(mb, ma, "metrics", atol=0)


@settings(max_examples=10, deadline=None)
@given(world=st.integers(1, 4), b=st.integers(1, 5), seed=st.integers(0, 1000), n_critic=st.integers(1, 3))
def test_noise_shards_concatenate_to_the_global_draw(world, b, seed, n_critic):
    gan = ganfn.GAN(_mlp(3, 2), _mlp(2, 1), latent_dim=3, parts=ganfn.recipes.wgan_gp(), n_critic=n_critic)
    full = gan.draw_noise(torch.Generator().manual_seed(seed), world * b)
    parts = [gd.draw_noise_shard(gan, torch.Generator().manual_seed(seed), b, rank=r, world_size=world)
             for r in range(world)]
    glued = optree.tree_map(lambda *xs: torch.cat(xs, dim=1), *parts)
    _assert_close(glued, full, "noise", atol=0)
    # Stacked: a list of generators, batch axis 2.
    rngs = [torch.Generator().manual_seed(seed + i) for i in range(2)]
    st_parts = [gd.draw_noise_shard(gan, [torch.Generator().manual_seed(seed + i) for i in range(2)], b,
                                    rank=r, world_size=world) for r in range(world)]
    glued = optree.tree_map(lambda *xs: torch.cat(xs, dim=2), *st_parts)
    for i, g in enumerate(rngs):
        _assert_close(optree.tree_map(lambda x, i=i: x[i], glued), gan.draw_noise(g, world * b), f"member {i}", atol=0)


@settings(max_examples=15, deadline=None)
@given(world=st.integers(1, 4), b=st.integers(1, 7), n=st.integers(8, 40), seed=st.integers(0, 99),
       leading=st.sampled_from([None, 2]))
def test_shards_are_disjoint_slices_of_the_global_batch(world, b, n, seed, leading):
    x = torch.arange(n) * 10
    pos = [gdata.loader_init(n, seed)] * world
    ref_pos = gdata.loader_init(n, seed)
    seen_per_epoch: list[list[int]] = []
    for _ in range(4):
        ref, ref_pos = gdata.next_batch(x, ref_pos, world * b, leading=leading)
        outs = [gd.next_shard(x, pos[r], b, leading=leading, rank=r, world_size=world) for r in range(world)]
        assert all(p == ref_pos for _, p in outs)  # every rank holds the same position
        pos = [p for _, p in outs]
        glued = torch.cat([o for o, _ in outs], dim=0 if leading is None else 1)
        assert torch.equal(glued, ref)
        seen_per_epoch.append(glued.flatten().tolist())
    # Within one epoch no sample repeats: the ranks' parts are disjoint.
    first = [v for batch in seen_per_epoch for v in batch][:n]
    assert len(set(first)) == len(first)


def test_next_shard_rejects_a_sharded_position():
    with pytest.raises(ValueError, match="single-process position"):
        gd.next_shard(torch.zeros(8, 2), gdata.loader_init(8, 0, rank=1, world_size=2), 2, rank=1, world_size=2)


def test_noise_shard_rejects_uneven_split():
    gan = ganfn.GAN(_mlp(3, 2), _mlp(2, 1), latent_dim=3)
    noise = gan.draw_noise(torch.Generator().manual_seed(0), 5)
    with pytest.raises(ValueError, match="evenly"):
        gd.shard_noise(noise, 0, 2)


def test_setup_without_launcher_is_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert gd.setup() == gd.World(0, 1, 0, False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        gd.setup()


# -- Dask: the same job launched through a LocalCluster of 2 worker processes ----------------------------


def _dask_train(name: str) -> dict:
    torch.set_num_threads(1)
    state, hist, div = _run_dp(name)
    return {"world": tuple(gd.world()), "state": state, "records": [{k: float(v) for k, v in m.items()} for m in hist],
            "divergence": div, "pid": os.getpid()}


def test_dask_local_cluster_two_workers():
    dd = pytest.importorskip("dask.distributed", reason="Dask is the optional extra ganfn[dask]; "
                             "pip install 'dask[distributed]' to run the Dask launcher test")
    import cloudpickle

    from ganfn import dask_launch

    # The workers cannot import this test module: ship its functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None, worker_dashboard_address=None) as cluster, \
                dd.Client(cluster) as client:
            results = dask_launch.run(client, _dask_train, "wgan_gp", backend="gloo",
                                      env={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}, timeout_s=60)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r["world"][:2] for r in results] == [(0, 2), (1, 2)]
    assert len({r["pid"] for r in results} | {os.getpid()}) == 3  # two separate worker processes
    ref_state, ref_hist = _run_single("wgan_gp")
    for r in results:
        assert r["divergence"] == 0.0
        _assert_close(r["state"], ref_state, "dask state")
        assert len(r["records"]) == STEPS
        for rec, mr in zip(r["records"], ref_hist, strict=True):
            assert rec["d_loss"] == pytest.approx(float(mr["d_loss"]), rel=1e-9, abs=1e-12)


# -- torchrun: the command line, end to end --------------------------------------------------------------


def _latest_state(run_dir: Path):
    from ganfn import checkpoint
    c = checkpoint.load(checkpoint.CheckpointManager(run_dir / "checkpoints").latest())
    return c["step"], c["state"]


@pytest.mark.slow
def test_torchrun_train_matches_one_process_and_resumes(tmp_path):
    """``torchrun --nproc_per_node 2 -m ganfn train`` for 6 steps, then resumed
    to 12 under torchrun again, ends where ``ganfn train`` in one process with
    twice the batch ends."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    common = ["train", "--data", "ring8", "--model", "mlp", "--log-every", "3", "--eval-every", "1000",
              "--n-eval", "100", "--checkpoint-every", "3", "--no-progress", "--seed", "5"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "ganfn"]
    dp = tmp_path / "dp"
    for args in (["--batch-size", "16", "--steps", "6", "--run-dir", str(dp)], ["--resume", str(dp), "--steps", "12"]):
        torchrun[-3] = str(_free_port())
        r = subprocess.run(torchrun + common + args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert r.stdout.count("ganfn train:") == 1  # rank 0 alone prints
    one = tmp_path / "one"
    r = subprocess.run([sys.executable, "-m", "ganfn", *common, "--batch-size", "32",
                        "--steps", "12", "--run-dir", str(one)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    (step_dp, s_dp), (step_one, s_one) = _latest_state(dp), _latest_state(one)
    assert step_dp == step_one == 12
    for p, x, y in zip(optree.tree_paths(s_one), optree.tree_leaves(s_dp), optree.tree_leaves(s_one), strict=True):
        assert torch.allclose(x.double(), y.double(), rtol=1e-4, atol=1e-5), \
            f"{p}: {float((x.double() - y.double()).abs().max())}"
    # Training really moved the state between the resumed checkpoints.
    from ganfn import checkpoint
    ckpts = sorted((dp / "checkpoints").glob("ckpt-*.pt"))
    first = checkpoint.load(ckpts[0])["state"]
    k = next(iter(first.g.params))
    assert int(first.step) < 12 and not torch.equal(first.g.params[k], s_dp.g.params[k])


def test_stacked_step_equals_ensemble_step_in_one_process_and_isolates_nan():
    from ganfn import ensemble
    gan = _gan("stacked")
    # Member 1's learning rate is absurd: its numbers overflow and it must be frozen
    # without touching member 0, exactly as ganfn.ensemble does.
    state = ensemble.init_many(gan, [0, 1], [{"lr_d": 1e-3}, {"lr_d": 1e300}])
    ours, theirs = gd.make_train_step(gan, stacked=True), ensemble.make_step(gan)
    a = b = state
    rngs_a, rngs_b = ensemble.rngs([0, 1]), ensemble.rngs([0, 1])
    x = _data()
    for t in range(4):
        real = x[t * 8:(t + 1) * 8].expand(gan.n_critic, 8, 2)
        a, ma = ours(a, real, gd.draw_noise_shard(gan, rngs_a, 8, dtype=torch.float64))
        b, mb = theirs(b, real, ensemble.draw_noise_many(gan, rngs_b, 8, dtype=torch.float64))
        _assert_close(ma, mb, f"metrics step {t}", atol=1e-12)
    _assert_close(a, b, "stacked state", atol=1e-12)
    assert a.diverged_at.tolist()[0] == -1 and a.diverged_at.tolist()[1] >= 0
    assert torch.isfinite(a.d.params["0.weight"][1]).all()  # frozen at its last finite state
