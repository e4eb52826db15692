"""The vmapped ensemble step equals separate single runs, member by member."""
from __future__ import annotations

import warnings

import optree
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

torch.set_num_threads(1)

import ganfn  # noqa: E402
from ganfn import ensemble, losses  # noqa: E402

SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LATENT, HIDDEN = 4, 16


def nets() -> tuple[nn.Module, nn.Module]:
    G = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2))
    D = nn.Sequential(nn.Linear(2, HIDDEN), nn.LeakyReLU(0.2), nn.Linear(HIDDEN, 1))
    return G, D


def gp_gan(n_critic: int = 2) -> ganfn.GAN:
    """n_critic > 1, a gradient penalty and EMA: the hardest setup to vmap."""
    G, D = nets()
    return ganfn.GAN(G, D, latent_dim=LATENT, loss="non_saturating", n_critic=n_critic,
                     parts=ganfn.recipes.wgan_gp(ema_decay=0.9))


GP_GAN = gp_gan()
MIX_GAN = ganfn.GAN(*nets(), latent_dim=LATENT, loss=losses.mixture("non_saturating", "least_squares"), n_critic=1)


def real_batches(gan: ganfn.GAN, steps: int, B: int, seed: int = 123, members: int | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = ([members] if members else []) + ([gan.n_critic] if gan.n_critic > 1 else [])
    return [torch.randn(*lead, B, 2, generator=g) * 2 for _ in range(steps)]


def single_run(gan, seed, hp, reals, B):
    state = gan.init(seed, **hp)
    rng = ensemble.rngs([seed])[0]
    for real in reals:
        state, _ = gan.train_step(state, real, gan.draw_noise(rng, B))
    return state


def ensemble_run(gan, seeds, hps, reals, B, **kw):
    state = ensemble.init_many(gan, seeds, hps)
    rngs = ensemble.rngs(seeds)
    step = ensemble.make_step(gan, **kw)
    ms = []
    for real in reals:
        state, m = step(state, real, ensemble.draw_noise_many(gan, rngs, B))
        ms.append(m)
    return state, ms


def assert_close(a, b, exact: bool = False) -> None:
    fa, ta = optree.tree_flatten(a)
    fb, tb = optree.tree_flatten(b)
    assert ta == tb
    for x, y in zip(fa, fb, strict=True):
        if exact or not x.is_floating_point():
            # bit-identical (a frozen NaN member equals itself)
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
        else:
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


hp_member = st.fixed_dictionaries({
    "lr_d": st.sampled_from([0.0, 1e-4, 5e-4, 2e-3]),
    "lr_g": st.sampled_from([1e-4, 1e-3]),
    "b1_g": st.sampled_from([0.0, 0.5, 0.9]),
    "b2_d": st.sampled_from([0.9, 0.999]),
    "gp_weight": st.sampled_from([0.1, 1.0, 10.0]),
    "real_label": st.sampled_from([0.9, 1.0]),
})


@SETTINGS
@given(S=st.integers(1, 4), B=st.sampled_from([4, 8]), data=st.data())
def test_vmapped_step_equals_single_runs(S, B, data):
    """20 steps with n_critic=2, a gradient penalty and EMA, per-member seeds and
    hyperparameters: member i == a single run with its seed and hyperparameters."""
    seeds = data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=S, max_size=S, unique=True))
    hps = data.draw(st.lists(hp_member, min_size=S, max_size=S))
    reals = real_batches(GP_GAN, 20, B)
    state, ms = ensemble_run(GP_GAN, seeds, hps, reals, B)
    assert ms[-1]["d_loss"].shape == (S,) and ms[-1]["diverged"].dtype == torch.bool
    assert not ms[-1]["diverged"].any()
    for i, member in enumerate(ganfn.unstack(state)):
        assert_close(member, single_run(GP_GAN, seeds[i], hps[i], reals, B))


@SETTINGS
@given(S=st.integers(2, 3), B=st.sampled_from([4, 6]),
       mix=st.lists(st.sampled_from([0.0, 0.3, 1.0]), min_size=3, max_size=3))
def test_per_member_data_and_loss_mixture(S, B, mix):
    """Per-member batches ([S, B, ...]) and a per-member loss mixture weight."""
    seeds = list(range(10, 10 + S))
    hps = [{"loss_mix": w} for w in mix[:S]]
    reals = real_batches(MIX_GAN, 20, B, members=S)
    state, _ = ensemble_run(MIX_GAN, seeds, hps, reals, B, shared_data=False)
    for i, member in enumerate(ganfn.unstack(state)):
        assert_close(member, single_run(MIX_GAN, seeds[i], hps[i], [r[i] for r in reals], B))


def test_shared_and_per_member_data_agree_when_batches_are_equal():
    S, B = 3, 8
    reals = real_batches(GP_GAN, 5, B)
    shared, _ = ensemble_run(GP_GAN, [0, 1, 2], None, reals, B)
    per, _ = ensemble_run(GP_GAN, [0, 1, 2], None, [r.expand(S, *r.shape) for r in reals], B, shared_data=False)
    assert_close(shared, per)
    # and different per-member batches give different members
    other = [torch.stack([r, r + 1.0, r]) for r in reals]
    diff, _ = ensemble_run(GP_GAN, [0, 1, 2], None, other, B, shared_data=False)
    assert not torch.allclose(ganfn.unstack(diff)[1].d.params["0.weight"],
                              ganfn.unstack(shared)[1].d.params["0.weight"])
    assert_close(ganfn.unstack(diff)[0], ganfn.unstack(shared)[0])


def test_mixture_endpoints_are_the_plain_losses():
    g = torch.Generator().manual_seed(0)
    r, f = torch.randn(16, generator=g) * 3, torch.randn(16, generator=g) * 3
    mix = losses.mixture("non_saturating", "hinge", weight=0.25)
    for w, ref in ((0.0, losses.non_saturating), (1.0, losses.hinge)):
        assert torch.equal(torch.stack(mix.d_parts(r, f, loss_mix=torch.tensor(w))), torch.stack(ref.d_parts(r, f)))
        assert torch.equal(mix.g(f, loss_mix=w), ref.g(f))
    a, b = losses.non_saturating.d(r, f), losses.hinge.d(r, f)
    torch.testing.assert_close(mix.d(r, f), 0.75 * a + 0.25 * b)
    with pytest.raises(ValueError):
        losses.mixture("hinge", "wasserstein", weight=1.5)


@SETTINGS
@given(S=st.integers(2, 4), zero=st.integers(0, 3), lr=st.sampled_from([1e-3, 1e-2]))
def test_zero_learning_rate_member_is_unchanged_while_others_move(S, zero, lr):
    zero = zero % S
    hps = [{"lr_d": 0.0, "lr_g": 0.0} if i == zero else {"lr_d": lr, "lr_g": lr} for i in range(S)]
    seeds = list(range(S))
    init = ganfn.unstack(ensemble.init_many(GP_GAN, seeds, hps))
    state, _ = ensemble_run(GP_GAN, seeds, hps, real_batches(GP_GAN, 5, 8), 8)
    for i, (m, m0) in enumerate(zip(ganfn.unstack(state), init, strict=True)):
        for k in m.d.params:
            assert torch.equal(m.d.params[k], m0.d.params[k]) == (i == zero)
        for k in m.g.params:
            assert torch.equal(m.g.params[k], m0.g.params[k]) == (i == zero)
        assert int(m.step) == 5


def test_different_learning_rates_equal_single_runs_with_those_rates():
    lrs = [1e-4, 1e-3, 1e-2]
    hps = [{"lr_d": lr, "lr_g": lr / 2} for lr in lrs]
    reals = real_batches(GP_GAN, 20, 8)
    state, ms = ensemble_run(GP_GAN, [7, 7, 7], hps, reals, 8)  # one seed: only the rate differs
    torch.testing.assert_close(ms[-1]["lr_d"], torch.tensor(lrs, dtype=torch.float64))
    members = ganfn.unstack(state)
    assert not torch.allclose(members[0].d.params["0.weight"], members[2].d.params["0.weight"])
    for m, hp in zip(members, hps, strict=True):
        assert_close(m, single_run(GP_GAN, 7, hp, reals, 8))


def _poison(state: ganfn.TrainState, i: int) -> ganfn.TrainState:
    members = ganfn.unstack(state)
    bad = members[i]
    k = next(iter(bad.g.params))
    members[i] = bad._replace(g=bad.g._replace(params={**bad.g.params, k: bad.g.params[k].clone().fill_(float("nan"))}))
    return ganfn.stack(members)


@pytest.mark.parametrize("in_graph", [False, True])
@pytest.mark.parametrize("at", [0, 3])
def test_nan_member_is_frozen_and_others_are_bit_identical(at, in_graph):
    """Both freeze paths: eager CPU (select outside vmap, only when needed) and
    in-graph (the torch.where inside vmap used under compile and on CUDA)."""
    S, B, bad, steps = 4, 8, 2, 8
    seeds = [3, 1, 4, 1]
    reals = real_batches(GP_GAN, steps, B)
    step = torch.func.vmap(ensemble._isolated(GP_GAN), in_dims=(0, None, 0)) if in_graph else ensemble.make_step(GP_GAN)

    def run(poison: bool):
        state = ensemble.init_many(GP_GAN, seeds, [{"lr_d": 1e-3}] * S)
        rngs = ensemble.rngs(seeds)
        frozen, ms = None, []
        for t, real in enumerate(reals):
            if t == at and poison:
                state = _poison(state, bad)
                frozen = ganfn.unstack(state)[bad]
            state, m = step(state, real, ensemble.draw_noise_many(GP_GAN, rngs, B))
            ms.append(m)
        return state, ms, frozen

    clean, clean_ms, _ = run(False)
    dirty, dirty_ms, frozen = run(True)
    for i, (c, d) in enumerate(zip(ganfn.unstack(clean), ganfn.unstack(dirty), strict=True)):
        if i == bad:
            assert int(d.diverged_at) == at
            assert_close(d._replace(diverged_at=frozen.diverged_at), frozen, exact=True)  # nothing moved since
            assert int(c.diverged_at) == -1
        else:
            assert_close(c, d, exact=True)
    expect = torch.tensor([i == bad for i in range(S)])
    assert torch.equal(dirty_ms[-1]["diverged"], expect)
    assert torch.equal(dirty_ms[at]["diverged"], expect)
    if at:
        assert not dirty_ms[at - 1]["diverged"].any()
    for k in ("d_loss", "g_loss"):
        keep = ~expect
        assert torch.equal(dirty_ms[-1][k][keep], clean_ms[-1][k][keep])


def test_without_isolation_a_nan_member_keeps_moving():
    """The freeze above is the isolation's doing: without it the bad member's step advances."""
    state = _poison(ensemble.init_many(GP_GAN, [0, 1], None), 1)
    step = ensemble.make_step(GP_GAN, isolate=False)
    rngs = ensemble.rngs([0, 1])
    new, m = step(state, real_batches(GP_GAN, 1, 4)[0], ensemble.draw_noise_many(GP_GAN, rngs, 4))
    assert new.step.tolist() == [1, 1]
    assert torch.isnan(m["d_loss"][1]) and torch.isfinite(m["d_loss"][0])


@SETTINGS
@given(S=st.integers(1, 5), seed=st.integers(0, 1000), lr=st.floats(1e-5, 1e-2))
def test_stack_unstack_round_trip(S, seed, lr):
    states = [GP_GAN.init(seed + i, lr_d=lr * (i + 1), gp_weight=float(i)) for i in range(S)]
    stacked = ganfn.stack(states)
    assert stacked.step.shape == (S,) and stacked.d.params["0.weight"].shape == (S, HIDDEN, 2)
    assert stacked.d.opt["hp"]["lr"].dtype == torch.float64
    back = ganfn.unstack(stacked)
    assert len(back) == S
    for a, b in zip(back, states, strict=True):
        assert_close(a, b, exact=True)
    # torch's pytree (used by vmap) sees the same leaves, whatever order it uses
    tl, _ = torch.utils._pytree.tree_flatten(stacked)
    assert sorted(x.numel() for x in tl) == sorted(x.numel() for x in optree.tree_leaves(stacked))
    assert ensemble.num_members(stacked) == S


def test_stack_errors():
    with pytest.raises(ValueError, match="at least one"):
        ganfn.stack([])
    with pytest.raises(ValueError, match="structure"):
        ganfn.stack([GP_GAN.init(0), MIX_GAN.init(0)])
    with pytest.raises(ValueError, match="leading"):
        ganfn.unstack(GP_GAN.init(0))


def test_init_many_and_noise_reproduce_single_draws():
    seeds = [5, 9, 5]
    state = ensemble.init_many(GP_GAN, seeds, [{"lr_d": 1e-4}, {"lr_d": 2e-4}, {"lr_d": 3e-4, "gp_weight": 1.0}])
    torch.testing.assert_close(state.d.opt["hp"]["lr"], torch.tensor([1e-4, 2e-4, 3e-4], dtype=torch.float64))
    assert state.hparams["gp_weight"].tolist() == [10.0, 10.0, 1.0]
    assert torch.equal(state.g.params["0.weight"][0], state.g.params["0.weight"][2])
    assert not torch.equal(state.g.params["0.weight"][0], state.g.params["0.weight"][1])
    noise = ensemble.draw_noise_many(GP_GAN, ensemble.rngs(seeds), 6)
    for i, s in enumerate(seeds):
        assert_close(optree.tree_map(lambda x, i=i: x[i], noise),
                     GP_GAN.draw_noise(torch.Generator().manual_seed(s), 6), exact=True)
    with pytest.raises(ValueError, match="one dict per member"):
        ensemble.init_many(GP_GAN, [0, 1], [{}])


def test_step_input_errors():
    state = ensemble.init_many(GP_GAN, [0, 1], None)
    noise = ensemble.draw_noise_many(GP_GAN, ensemble.rngs([0, 1]), 4)
    step = ensemble.make_step(GP_GAN)
    with pytest.raises(ValueError, match="real must have shape"):
        step(state, torch.randn(4, 2), noise)  # n_critic=2 needs [2, B, 2]
    with pytest.raises(ValueError, match="stacked for 2 members"):
        step(state, torch.randn(2, 4, 2), ensemble.draw_noise_many(GP_GAN, ensemble.rngs([0]), 4))
    with pytest.raises(ValueError, match="stacked state"):
        step(GP_GAN.init(0), torch.randn(2, 4, 2), noise)
    per = ensemble.make_step(GP_GAN, shared_data=False)
    with pytest.raises(ValueError, match="3 members"):
        per(state, torch.randn(3, 2, 4, 2), noise)


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken_compile(fn, **kw):
        def run(*a):
            raise RuntimeError("backend exploded")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    reals = real_batches(GP_GAN, 3, 4)
    with pytest.warns(RuntimeWarning, match="backend exploded") as rec:
        comp, _ = ensemble_run(GP_GAN, [0, 1], None, reals, 4, compile=True)
    assert len([w for w in rec if issubclass(w.category, RuntimeWarning)]) == 1
    eager, _ = ensemble_run(GP_GAN, [0, 1], None, reals, 4)
    assert_close(comp, eager, exact=True)


@pytest.mark.slow
def test_compiled_step_equals_eager():
    """torch.compile(vmap(step), fullgraph=True) compiles (no fallback) and matches eager."""
    torch._dynamo.reset()
    gan = gp_gan(n_critic=1)  # the penalty's nested grad under compile; one D update keeps the graph small
    seeds, B = [0, 1, 2], 8
    hps = [{"lr_d": 1e-3, "gp_weight": 1.0}, {"lr_d": 1e-4}, {"lr_d": 0.0, "real_label": 0.9}]
    reals = real_batches(gan, 4, B)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        comp, cms = ensemble_run(gan, seeds, hps, reals, B, compile=True)
    eager, ems = ensemble_run(gan, seeds, hps, reals, B)
    assert_close(comp, eager)
    torch.testing.assert_close(cms[-1]["d_loss"], ems[-1]["d_loss"], rtol=1e-4, atol=1e-5)


def test_accuracy_skip_thresholds_are_per_member():
    # Member 0 never skips D (threshold 1), member 1 always does (threshold 0):
    # each equals its own single run, and they differ from each other.
    gan = ganfn.GAN(*nets(), latent_dim=LATENT, loss="non_saturating", parts=[ganfn.parts.balance(0.8, 0.1)])
    seeds, hps, B = [3, 3], [{"d_skip_accuracy": 1.0}, {"d_skip_accuracy": 0.0}], 8
    reals = real_batches(gan, 3, B)
    stacked, ms = ensemble_run(gan, seeds, hps, reals, B)
    members = ganfn.unstack(stacked)
    for seed, hp, member in zip(seeds, hps, members, strict=True):
        assert_close(member, single_run(gan, seed, hp, reals, B))
    assert float(ms[0]["d_skipped"][0]) == 0.0 and float(ms[0]["d_skipped"][1]) == 1.0
    assert not torch.equal(members[0].d.params["0.weight"], members[1].d.params["0.weight"])


def test_dcgan_members_match_single_runs_to_round_off():
    """The CLI's default model (DCGAN on 8x8 images, batch norm, EMA): each
    vmapped member equals its single run to round-off; its layers' matrix
    products are batched over members, which may sum in another order
    (README, 'Many seeds and sweeps')."""
    from ganfn import models

    torch.manual_seed(0)
    gan = ganfn.GAN(models.DCGANGenerator(8, 8, 1, 8), models.DCGANDiscriminator(8, 1, 8), latent_dim=8,
                    loss="non_saturating", parts=[ganfn.parts.ema(0.9)])
    g = torch.Generator().manual_seed(1)
    reals = [torch.rand(16, 1, 8, 8, generator=g) * 2 - 1 for _ in range(3)]
    seeds = [0, 1, 2]
    stacked, _ = ensemble_run(gan, seeds, None, reals, 16)
    for i, seed in enumerate(seeds):
        single = single_run(gan, seed, {}, reals, 16)
        got, want = optree.tree_leaves(ensemble.unstack(stacked)[i]), optree.tree_leaves(single)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the members really differ (distinct seeds), so the comparison above is not vacuous
    assert not torch.equal(ensemble.unstack(stacked)[0].g.params["net.0.weight"],
                           ensemble.unstack(stacked)[1].g.params["net.0.weight"])
