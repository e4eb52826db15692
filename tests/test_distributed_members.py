"""A population split across ranks (``split="members"``, ``--split members``) on CPU with gloo.

The multi-process tests spawn 2 ranks on 127.0.0.1 and train 8 ring8 members
with PBT, successive halving and refills; every member's figures, the lineage,
the report and the final states must equal those of one process training the
whole population, and the shards must resume on another number of ranks. A
rank killed mid-run must take the job down with a clear message, and the
population must resume from its last complete checkpoint to the figures of an
uninterrupted run.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import traceback
from pathlib import Path

import optree
import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

import ganfn
import ganfn.population
from ganfn import data, models
from ganfn.distributed import exploit, members, shards
from ganfn.lineage import Schedule
from ganfn.loop import Evaluator, fit

torch.set_num_threads(1)
WORLD = 2
QUIET = dict(progress=False, print_fn=lambda s: None)
KW = dict(steps=8, batch_size=16, eval_every=2, log_every=2, image_every=4, checkpoint_every=4, keep=10,
          seeds=list(range(8)), hparams=[{"lr_d": 1e-3 * (1 + i % 4), "lr_g": 1e-3 * (1 + i // 4)} for i in range(8)],
          config={"test": "members"}, **QUIET)


def _gan() -> ganfn.GAN:
    G, D, latent = models.build("mlp", (2,), hidden=16, depth=1)
    return ganfn.GAN(G, D, latent_dim=latent, loss="hinge", parts=[ganfn.parts.ema(0.9)])


def _schedule(gan: ganfn.GAN) -> Schedule:
    return Schedule({"lr_d": (1e-4, 1e-2), "lr_g": (1e-4, 1e-2)}, every=2, fraction=0.25, halving_at=[4],
                    metrics=(ganfn.population.Metric("m", True),), seed=1,
                    refill=lambda seeds: ganfn.ensemble.init_many(gan, seeds))


class _Figure:
    """A figure that depends on the parameters (so the ranking changes as training goes);
    with ``kill_at``, the process kills itself (SIGKILL) at that call, as a crashed rank would."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.calls, self.kill_at = 0, kill_at

    def __call__(self, s: torch.Tensor) -> dict[str, float]:
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"m": float(s.std())}


def _evaluator(kill_at: int | None = None) -> Evaluator:
    return Evaluator(_Figure(kill_at), "m", higher_is_better=True, n_samples=32)


def _fit(run_dir, split="members", kill_at=None, **kw):
    gan = _gan()
    return fit(gan, data.ring8, evaluator=_evaluator(kill_at), population=_schedule(gan), run_dir=run_dir,
               split=split, **{**KW, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_group(rank: int, port: int, timeout_s: float = 30) -> None:
    from ganfn import distributed as gd

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    gd.setup("gloo", timeout_s=timeout_s)


def _worker(rank: int, port: int, out: str) -> None:
    from ganfn import distributed as gd

    _join_group(rank, port)
    try:
        state, hist = _fit(Path(out) / "split")
        uneven = fit(_gan(), data.ring8, evaluator=_evaluator(), split="members",
                     **{**KW, "seeds": [0, 1, 2], "hparams": [{"lr_d": 1e-3 * (i + 1)} for i in range(3)],
                        "checkpoint_every": None, "steps": 4})
        # One process's shards (step 4), resumed by two ranks.
        resumed = _fit(Path(out) / "one_split", resume=True)
        torch.save({"state": state, "hist": hist, "uneven": uneven, "resumed": resumed},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        gd.teardown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The whole population trained in one process, the usual way (``split="batch"``)."""
    out = tmp_path_factory.mktemp("one")
    state, hist = _fit(out, split="batch")
    return out, state, hist


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """One 2-rank gloo job; each rank's (state, history) and the shared run directory."""
    out = tmp_path_factory.mktemp("members")
    _fit(out / "one_split", steps=5)  # one process writes step-4 and step-5 shards of the whole population
    for p in (out / "one_split" / "checkpoints").glob("ckpt-00000005.*"):
        p.unlink()
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _equal(a, b, what: str) -> None:
    la, lb = optree.tree_leaves(a, none_is_leaf=False), optree.tree_leaves(b, none_is_leaf=False)
    assert optree.tree_structure(a, none_is_leaf=False) == optree.tree_structure(b, none_is_leaf=False), what
    for p, x, y in zip(optree.tree_paths(a, none_is_leaf=False), la, lb, strict=True):
        assert torch.equal(x, y), f"{what} {p}: max diff {float((x.double() - y.double()).abs().max())}"


def _slice(state, lo: int, hi: int):
    return optree.tree_map(lambda x: x[lo:hi], state, none_is_leaf=False)


_TIMING = ("wall_time_s", "steps_per_s", "first_step_s", "steps_run")


def _report(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in _TIMING}


# -- 2 ranks x 4 members == 1 process x 8 members ---------------------------------------------------


def test_two_ranks_train_the_population_one_process_trains(spawned, reference):
    out, ranks = spawned
    ref_dir, ref_state, ref_hist = reference
    lin = ref_hist["population"]
    # The schedule really acted: copies (some across ranks: members 0-3 live on rank 0), halving, refills.
    kinds = [e["kind"] for e in lin["events"]]
    assert "copy" in kinds and kinds.count("halved") == kinds.count("refill") == 4
    assert any((e["source"] < 4) != (e["member"] < 4) for e in lin["events"] if e["kind"] == "copy")
    for r, res in enumerate(ranks):
        lo, hi = 4 * r, 4 * (r + 1)
        _equal(res["state"], _slice(ref_state, lo, hi), f"rank {r} members {lo}-{hi - 1}")
        assert res["hist"]["population"] == lin
        assert res["hist"]["eval"] == ref_hist["eval"] and res["hist"]["train"] == ref_hist["train"]
    # One report, written by rank 0, equal to the one-process run's.
    assert _report(out / "split") == _report(ref_dir)
    for name in ("population.png", "samples.png", "losses.png", "samples_member07.png"):
        assert (out / "split" / name).stat().st_size > 0
    assert len(list((out / "split" / "tb").glob("member_*"))) == 8


def test_two_ranks_resume_what_one_process_saved(spawned, reference):
    _, ranks = spawned
    _, ref_state, ref_hist = reference
    for r, res in enumerate(ranks):
        state, hist = res["resumed"]
        _equal(state, _slice(ref_state, 4 * r, 4 * (r + 1)), f"rank {r} resumed")
        assert hist["population"] == ref_hist["population"] and hist["eval"] == ref_hist["eval"]


def test_uneven_split_places_three_members_on_two_ranks(spawned):
    _, ranks = spawned
    one_state, one_hist = fit(_gan(), data.ring8, evaluator=_evaluator(),
                              **{**KW, "seeds": [0, 1, 2], "hparams": [{"lr_d": 1e-3 * (i + 1)} for i in range(3)],
                                 "checkpoint_every": None, "steps": 4})
    assert [int(r["uneven"][0].step.shape[0]) for r in ranks] == [2, 1]
    _equal(ranks[0]["uneven"][0], _slice(one_state, 0, 2), "uneven rank 0")
    _equal(ranks[1]["uneven"][0], _slice(one_state, 2, 3), "uneven rank 1")
    assert ranks[0]["uneven"][1]["eval"] == one_hist["eval"]


def test_shards_resume_on_one_process_and_match(spawned, reference):
    """The 2-rank run's step-4 shards, resumed by one process, end where the uninterrupted run ends."""
    out, _ = spawned
    _, ref_state, ref_hist = reference
    ck = out / "split" / "checkpoints"
    assert shards.complete_steps(ck, 8) == [8, 4]
    for p in ck.glob("ckpt-00000008.*"):
        p.unlink()  # the run as it stood after step 4
    state, hist = _fit(None, resume=ck)
    _equal(state, ref_state, "resumed on one process")
    assert hist["population"] == ref_hist["population"] and hist["eval"] == ref_hist["eval"]


# -- a rank killed mid-run -------------------------------------------------------------------------


def _doomed(rank: int, port: int, out: str) -> None:
    """Rank 1 dies (SIGKILL) in its 4th evaluation (step 6, after the step-4 checkpoint:
    the figure is called once per member, 4 members a rank, evaluations at steps 0, 2, 4, 6);
    rank 0 must stop with a clear message and write why to ``rank0.err``."""
    _join_group(rank, port, timeout_s=20)
    try:
        _fit(Path(out), kill_at=3 * 4 + 1 if rank == 1 else None)
    except Exception:
        Path(out, f"rank{rank}.err").write_text(traceback.format_exc())
        os._exit(3)  # the group is broken: leave without tearing it down
    os._exit(0)


def test_a_killed_rank_stops_the_job_and_the_population_resumes(tmp_path, reference):
    _, ref_state, ref_hist = reference
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_doomed, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung after its peer died"
    assert procs[1].exitcode == -signal.SIGKILL and procs[0].exitcode == 3
    err = (tmp_path / "rank0.err").read_text()
    assert "lost contact with the other ranks" in err and "--resume" in err
    ck = tmp_path / "checkpoints"
    assert shards.complete_steps(ck, 8)[0] == 4
    # Resume the population (here in one process) from the last complete checkpoint.
    state, hist = _fit(tmp_path, resume=True)
    _equal(state, ref_state, "resumed after the crash")
    assert hist["population"] == ref_hist["population"] and hist["eval"] == ref_hist["eval"]


# -- one process: the split path equals the usual one; the pieces ------------------------------------


def test_one_process_split_equals_the_usual_run(tmp_path, reference):
    ref_dir, ref_state, ref_hist = reference
    state, hist = _fit(tmp_path)
    _equal(state, ref_state, "split in one process")
    assert hist["population"] == ref_hist["population"]
    assert _report(tmp_path) == _report(ref_dir)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt-00000004.members-0000-0008-of-0008.pt", "ckpt-00000008.members-0000-0008-of-0008.pt"]


@given(st.integers(1, 64), st.integers(1, 16))
def test_placement_spreads_members_ceil_then_floor(n_members, n_ranks):
    if n_members < n_ranks:
        with pytest.raises(ValueError, match="cannot fill"):
            members.placement(n_members, n_ranks)
        return
    counts = members.placement(n_members, n_ranks)
    assert sum(counts) == n_members and len(counts) == n_ranks
    assert max(counts) - min(counts) <= 1 and list(counts) == sorted(counts, reverse=True)
    s = members.Split(n_ranks - 1, counts, False)
    assert [s.owner(i) for i in range(n_members)] == [r for r, c in enumerate(counts) for _ in range(c)]
    assert ("uneven" in members.describe(s)) == (n_members % n_ranks != 0)


@given(st.lists(st.integers(-3, 7), min_size=8, max_size=8), st.sampled_from([(4, 4), (3, 3, 2), (8,), (2, 2, 2, 2)]))
def test_transfers_name_each_cross_rank_copy_once(origin, counts):
    s = members.Split(0, counts, True)
    pairs = exploit.transfers(origin, s)
    expect = {(o, s.owner(g)) for g, o in enumerate(origin) if o >= 0 and s.owner(o) != s.owner(g)}
    assert pairs == sorted(expect) and len(pairs) == len(set(pairs))
    assert all(s.owner(src) != dst for src, dst in pairs)


def test_split_members_rejects_a_single_run_and_unknown_modes():
    with pytest.raises(ValueError, match="needs seeds="):
        fit(_gan(), data.ring8, steps=1, split="members", **QUIET)
    with pytest.raises(ValueError, match="split must be one of"):
        fit(_gan(), data.ring8, steps=1, seeds=[0, 1], split="ranks", **QUIET)


def test_resume_refuses_a_population_of_another_size(tmp_path):
    _fit(tmp_path / "pop", steps=4)
    with pytest.raises(ValueError, match="population of \\[8\\] members but this run has 3"):
        fit(_gan(), data.ring8, evaluator=_evaluator(), split="members", run_dir=tmp_path / "pop", resume=True,
            **{**KW, "seeds": [0, 1, 2], "hparams": None})
    with pytest.raises(FileNotFoundError, match="not from one file"):
        _fit(None, resume=next((tmp_path / "pop" / "checkpoints").glob("*.pt")))


# -- the command line under torchrun ---------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_sweep_split_members_resumes_and_matches_one_process(tmp_path):
    """``torchrun --nproc-per-node 2 -m ganfn sweep --split members`` for 5 steps, resumed to 8
    under torchrun, writes the report one process writes for 8 steps (PBT, halving). (A run
    ends before a population round due at its last step: 5 steps keep the step-4 round.)"""
    import subprocess
    import sys

    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    common = ["sweep", "--grid", "lr_d=1e-3,2e-3,3e-3,4e-3;lr_g=1e-3,2e-3", "--data", "ring8", "--model", "mlp",
              "--batch-size", "32", "--n-eval", "200", "--eval-every", "2", "--log-every", "2", "--image-every", "4",
              "--pbt-every", "2", "--halving-at", "4", "--checkpoint-every", "2", "--no-progress"]
    split = tmp_path / "split"
    for args in (["--steps", "5", "--run-dir", str(split), "--split", "members"],
                 ["--resume", str(split), "--steps", "8"]):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                    "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "ganfn"]
        r = subprocess.run(torchrun + common + args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert r.stdout.count("members split across 2 ranks: rank 0: 0-3, rank 1: 4-7") == 1  # rank 0 alone prints
    one = tmp_path / "one"
    r = subprocess.run([sys.executable, "-m", "ganfn", *common, "--steps", "8", "--run-dir", str(one)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _report(split), _report(one)
    assert a.pop("config")["split"] == "members" and b.pop("config")["split"] == "batch"
    assert a == b


# -- Dask: the same population through a LocalCluster of 2 worker processes --------------------------------


def _dask_rank(run_dir: str) -> dict:
    torch.set_num_threads(1)
    from ganfn import distributed as gd

    state, hist = _fit(Path(run_dir))
    return {"world": tuple(gd.world())[:2], "state": state, "hist": hist}


def test_dask_local_cluster_trains_the_same_population(tmp_path, reference):
    dd = pytest.importorskip("dask.distributed", reason="Dask is the optional extra ganfn[dask]; "
                             "pip install 'dask[distributed]' to run the Dask launcher test")
    import sys

    import cloudpickle

    from ganfn import dask_launch

    _, ref_state, ref_hist = reference
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None, worker_dashboard_address=None) as cluster, \
                dd.Client(cluster) as client:
            results = dask_launch.run(client, _dask_rank, str(tmp_path), backend="gloo",
                                      env={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}, timeout_s=60)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r["world"] for r in results] == [(0, 2), (1, 2)]
    for r, res in enumerate(results):
        _equal(res["state"], _slice(ref_state, 4 * r, 4 * (r + 1)), f"dask rank {r}")
        assert res["hist"]["population"] == ref_hist["population"] and res["hist"]["eval"] == ref_hist["eval"]
    assert (tmp_path / "metrics.json").is_file() and shards.complete_steps(tmp_path / "checkpoints", 8) == [8, 4]


def test_eval_reads_a_split_run(tmp_path, capsys):
    """``ganfn eval RUN`` scores every member of a run whose checkpoints are shards."""
    from ganfn import cli

    args = ["sweep", "--grid", "lr_d=1e-3,2e-3,3e-3", "--data", "ring8", "--model", "mlp", "--steps", "2",
            "--batch-size", "16", "--n-eval", "100", "--eval-every", "2", "--no-progress", "--split", "members",
            "--run-dir", str(tmp_path)]
    assert cli.main(args) == 0
    assert shards.complete_steps(tmp_path / "checkpoints", 3) == [2]
    capsys.readouterr()
    assert cli.main(["eval", str(tmp_path), "--n-eval", "100"]) == 0
    out = capsys.readouterr().out
    assert "at step 2 (ckpt-00000002.members-0000-0003-of-0003.pt)" in out and "member 2" in out
    # A new run into the same directory would overwrite the shards: refused.
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2 and "already holds a run" in capsys.readouterr().err


_DTYPES = [torch.float32, torch.float64, torch.int64, torch.bool, torch.uint8, torch.float16]


@given(st.lists(st.tuples(st.lists(st.integers(0, 4), max_size=3), st.sampled_from(_DTYPES)), min_size=1, max_size=6),
       st.integers(0, 2**31 - 1))
def test_pack_unpack_roundtrip_one_message_per_dtype(spec, seed):
    g = torch.Generator().manual_seed(seed)
    leaves = [(torch.randn(shape, generator=g) * 5).to(dt) for shape, dt in spec]
    bufs = exploit.pack(leaves)
    assert len(bufs) == len({torch.uint8 if dt == torch.bool else dt for _, dt in spec})
    back = exploit.unpack([b.clone() for b in bufs], [torch.empty_like(x) for x in leaves])
    assert all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
               for x, y in zip(leaves, back, strict=True))


def test_split_is_a_sweep_option_with_two_choices(capsys):
    from ganfn import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--split", "members"])
    assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--grid", "lr_d=1e-3,2e-3", "--split", "ranks"])
    assert "invalid choice: 'ranks'" in capsys.readouterr().err


def test_a_damaged_newest_shard_falls_back_to_the_previous_step(tmp_path):
    _fit(tmp_path)
    ck = tmp_path / "checkpoints"
    newest = next(ck.glob("ckpt-00000008.*"))
    raw = bytearray(newest.read_bytes())
    raw[-200] ^= 0xFF  # one damaged byte: the shard fails its checksum or does not load
    newest.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="step-8 shards .* are damaged"):
        _, c = shards.load(ck, members.Split(0, (8,), False))
    assert c["step"] == 4
    for p in ck.glob("ckpt-00000004.*"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match="no complete set of population shards"):
        with pytest.warns(RuntimeWarning):
            _fit(None, resume=tmp_path)


def test_gather_refuses_a_block_of_the_wrong_size():
    s = members.Split(0, (2, 2), True)
    with pytest.raises(ValueError, match="has 3 members on rank 0, which holds 2"):
        members.gather(s, {"x": torch.zeros(3)})


def test_bench_traffic_figure_is_twelve_bytes_a_parameter_with_adam():
    """The README's traffic table rests on this: a member's copied state is its fp32
    parameters and two Adam moments (plus two step counters), the gathered part ~120 bytes."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.population_ranks import make_gan, state_bytes

    state = make_gan("mlp").init(0)
    params = sum(v.numel() for v in [*state.g.params.values(), *state.d.params.values()])
    b = state_bytes("mlp")
    assert 12 * params <= b["copied"] <= 12 * params + 64
    assert b["gathered"] == 120


# -- every member of one rank diverges: the others go on ------------------------------------------------------

_ONE_RANK_DIVERGES = dict(KW, hparams=[{"lr_d": 1e38 if i < 4 else 1e-3} for i in range(8)], checkpoint_every=None)


def _worker_one_rank_diverges(rank: int, port: int, out: str) -> None:
    from ganfn import distributed as gd

    _join_group(rank, port, timeout_s=30)  # a rank left behind would wait here 30 s, then fail
    try:
        _, hist = fit(_gan(), data.ring8, evaluator=_evaluator(), split="members", **_ONE_RANK_DIVERGES)
        torch.save(hist, os.path.join(out, f"diverged{rank}.pt"))
    finally:
        gd.teardown()


def test_a_rank_whose_members_all_diverged_keeps_stepping_with_the_others(tmp_path):
    """Members 0-3 (all of rank 0's) diverge at the first step: rank 0 must not stop while rank 1's members
    train, or rank 1 waits alone at the next collective. Both end as one process does."""
    _, one = fit(_gan(), data.ring8, evaluator=_evaluator(), **_ONE_RANK_DIVERGES)
    assert one["stopped"] == "steps" and one["diverged_at"][:4] == [0.0] * 4 and one["diverged_at"][4:] == [-1.0] * 4
    mp.start_processes(_worker_one_rank_diverges, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    for r in range(WORLD):
        hist = torch.load(tmp_path / f"diverged{r}.pt", weights_only=False)
        assert hist["stopped"] == "steps" and hist["steps_run"] == 8, (r, hist["stopped"])
        assert hist["diverged_at"] == one["diverged_at"] and hist["eval"] == one["eval"]
