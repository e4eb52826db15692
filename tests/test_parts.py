"""ganfn.parts: a user's own part (defined here, outside the package) works like a
built-in one; the built-in parts' own rules (EMA warm-up, instance-noise annealing)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compiled_and_eager, small_gan_modules
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import data, parts, penalties, recipes
from ganfn.loop import fit
from ganfn.parts import Ctx, DTerm, Hyper, InitCtx, Part, PartError
from ganfn.testing import (
    assert_grads_isolated,
    assert_pure,
    assert_trees_close,
    assert_trees_equal,
    assert_vmap_equivalent,
)
from ganfn.tree import leaves

torch.set_num_threads(1)
B = 8
QUIET = dict(progress=False, print_fn=lambda s: None)


# -- a user's part: LeCam regularisation (Tseng et al., 2021) ---------------------------------------


def lecam(weight: float = 0.3, decay: float = 0.99) -> Part:
    """``weight * (E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2])`` where
    ``a_real`` / ``a_fake`` are moving averages of D's mean outputs, kept in the
    part's state and advanced after every D update."""

    def init(ctx: InitCtx):
        zero = torch.zeros((), dtype=ctx.dtype, device=ctx.device)
        return {"real": zero, "fake": zero.clone()}

    def d_term(x: DTerm, ctx: Ctx):
        reg = (torch.mean(F.relu(x.d_real - ctx.state["fake"]) ** 2)
               + torch.mean(F.relu(ctx.state["real"] - x.d_fake) ** 2))
        return ctx.hp["lecam_weight"] * reg, {"real": x.d_real.detach().mean(), "fake": x.d_fake.detach().mean()}

    def after_d(d_params, ctx: Ctx, aux):
        d = ctx.hp["lecam_decay"]
        mine = aux.parts["lecam"]
        new = {k: torch.lerp(mine[k], v, d.to(v.dtype)) for k, v in ctx.state.items()}
        return d_params, new

    return Part("lecam", {"lecam_weight": weight, "lecam_decay": decay}, init=init, d_term=d_term, after_d=after_d)


def _gan(*extra: Part, first=(), **kw):
    G, D = small_gan_modules()
    return ganfn.GAN(G, D, latent_dim=3, loss="hinge", parts=[*first, lecam(), *extra], **kw)


def _inputs(gan, seed=0):
    real = torch.randn(B, 2, generator=torch.Generator().manual_seed(seed + 100))
    return gan.init(seed), real, gan.draw_noise(torch.Generator().manual_seed(seed), B)


def test_user_part_is_pure_and_keeps_running_state():
    gan = _gan()
    state, real, noise = _inputs(gan)
    assert sorted(state.parts) == ["lecam"] and float(state.hparams["lecam_weight"]) == pytest.approx(0.3)
    new, m = assert_pure(gan.train_step, state, real, noise)
    assert float(new.parts["lecam"]["real"]) != 0.0, "the running averages advance"
    assert m["penalty"] >= 0
    assert_grads_isolated(gan, state, real, noise)
    nd = ganfn.tree_index(noise.d, 0)
    _, grads, aux = assert_pure(gan.d_grads, state, real, nd)
    assert set(aux.parts["lecam"]) == {"real", "fake"}
    assert_pure(gan.d_update, state, grads, aux)


def test_user_part_regularises():
    # With averages pushed apart the term is positive and changes D's gradient.
    gan = _gan()
    state, real, noise = _inputs(gan)
    state = state._replace(parts={"lecam": {"real": torch.tensor(5.0), "fake": torch.tensor(-5.0)}})
    nd = ganfn.tree_index(noise.d, 0)
    _, g_on, aux = gan.d_grads(state, real, nd)
    _, g_off, _ = gan.d_grads(state._replace(hparams={**state.hparams,
                                                      "lecam_weight": torch.tensor(0.0, dtype=torch.float64)}), real,
                              nd)
    assert float(aux.penalty) > 0
    assert any(not torch.equal(a, b) for a, b in zip(leaves(g_on), leaves(g_off), strict=True))


def test_user_part_vmapped_equals_single_runs():
    assert_vmap_equivalent(_gan(), [0, 1, 2], steps=3,
                           hparams=[{"lecam_weight": 0.1}, {"lecam_weight": 1.0}, {"lecam_decay": 0.5}])


def test_user_part_resumes_bit_identically(tmp_path):
    gan = _gan(first=[parts.ema(0.9)])
    kw = dict(steps=6, batch_size=8, log_every=1, checkpoint_every=None, seed=3, **QUIET)
    full, _ = fit(gan, data.ring8, run_dir=tmp_path / "full", **kw)
    fit(gan, data.ring8, run_dir=tmp_path / "half", **{**kw, "steps": 3})
    resumed, _ = fit(gan, data.ring8, run_dir=tmp_path / "half", resume=True, **kw)
    assert_trees_equal(full, resumed, "resumed vs uninterrupted state")
    assert int(resumed.step) == 6 and float(resumed.parts["lecam"]["fake"]) != 0.0


def test_user_part_in_the_data_parallel_step_equals_train_step():
    # Without a process group the all-reduce is the identity: the data-parallel
    # step is the same orchestration and must give the same numbers, stacked too.
    from ganfn import distributed as gd
    from ganfn import ensemble

    gan = _gan()
    state, real, noise = _inputs(gan)
    a, ma = gan.train_step(state, real, noise)
    b, mb = gd.make_train_step(gan)(state, real, noise)
    assert_trees_equal((a, ma), (b, mb), "data-parallel step vs train_step")
    stacked = ensemble.init_many(gan, [0, 1], [{"lecam_weight": 0.1}, {}])
    noises = ensemble.draw_noise_many(gan, ensemble.rngs([0, 1]), B)
    c, mc = ensemble.make_step(gan)(stacked, real, noises)
    d, md = gd.make_train_step(gan, stacked=True)(stacked, real, noises)
    assert_trees_close((c, mc), (d, md), "stacked data-parallel step vs ensemble step", rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_user_part_under_torch_compile_equals_eager():
    from ganfn import ensemble

    torch._dynamo.reset()
    gan = _gan(first=[parts.ema(0.9)])
    state = ensemble.init_many(gan, [0, 1], [{"lecam_weight": 1.0}, {}])
    rng = torch.Generator().manual_seed(5)
    reals = [torch.randn(B, 2, generator=rng) for _ in range(3)]
    assert_trees_close(*compiled_and_eager(gan, state, reals, B), "compiled vs eager", rtol=1e-4, atol=1e-5)


def _broken(hook: str) -> Part:
    base = lecam()
    if hook == "after_d":
        return base._replace(after_d=lambda p, ctx, aux: (p, {"real": torch.zeros(2), "fake": ctx.state["fake"]}))
    if hook == "d_inputs":
        return base._replace(d_inputs=lambda real, fake, ctx: (real[:, :1], fake))
    if hook == "d_term":
        return base._replace(d_term=lambda x, ctx: (x.d_real.mean(1), {}))
    raise AssertionError(hook)


@pytest.mark.parametrize("hook", ["after_d", "d_inputs", "d_term"])
def test_hook_returning_the_wrong_shape_is_rejected_naming_the_part(hook):
    G, D = small_gan_modules()
    gan = ganfn.GAN(G, D, latent_dim=3, loss="hinge", parts=[_broken(hook)])
    state, real, noise = _inputs(gan)
    with pytest.raises(PartError, match=rf"part 'lecam': {hook}.*shape"):
        gan.train_step(state, real, noise)


def test_bad_parts_are_refused_at_construction():
    G, D = small_gan_modules()
    with pytest.raises(ValueError, match="two parts are named 'lecam'"):
        ganfn.GAN(G, D, latent_dim=3, parts=[lecam(), lecam()])
    with pytest.raises(ValueError, match="'ema_decay', which part 'ema' already declares"):
        ganfn.GAN(G, D, latent_dim=3, parts=[parts.ema(0.9), Part("mine", {"ema_decay": 0.5})])
    with pytest.raises(ValueError, match="'real_label', which the loss already declares"):
        ganfn.GAN(G, D, latent_dim=3, parts=[Part("mine", {"real_label": 0.5})])
    with pytest.raises(ValueError, match="identifier"):
        ganfn.GAN(G, D, latent_dim=3, parts=[Part("my part")])
    with pytest.raises(TypeError, match="ganfn.parts.Part"):
        ganfn.GAN(G, D, latent_dim=3, parts=[object()])
    with pytest.raises(ValueError, match="lecam_decay"):
        ganfn.GAN(G, D, latent_dim=3,
                  parts=[lecam()._replace(hparams={"lecam_decay": Hyper(2.0, ganfn.validate.Range(0.0, 1.0))})])
    gan = _gan()
    with pytest.raises(ValueError, match="lecam_weight"):
        gan.init(0, lecam_weight=float("nan"))


def test_noise_lacking_a_parts_draws_is_refused():
    gan = _gan(first=[penalties.get("gp")])
    state, real, _ = _inputs(gan)
    plain = _gan()
    with pytest.raises(ValueError, match="part 'gp' needs"):
        gan.train_step(state, real, plain.draw_noise(torch.Generator().manual_seed(0), B))


# -- EMA warm-up --------------------------------------------------------------------------------


def _hp(decay, start=0.0, rampup=0.0):
    return {k: torch.tensor(float(v), dtype=torch.float64) for k, v in
            (("ema_decay", decay), ("ema_start", start), ("ema_rampup", rampup))}


@given(st.floats(0.0, 1.0), st.integers(0, 10_000), st.integers(0, 50))
def test_ema_decay_follows_tensorflow_num_updates(decay, t, start):
    got = float(parts.ema_decay(_hp(decay, start), torch.tensor(t), warmup=True))
    want = 0.0 if t < start else min(decay, (1 + t - start) / (10 + t - start))
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    got = float(parts.ema_decay(_hp(decay, start), torch.tensor(t), warmup=False))
    assert got == (0.0 if t < start else pytest.approx(decay))


@given(st.floats(0.5, 0.9999), st.integers(0, 10_000), st.floats(0.01, 1.0))
def test_ema_rampup_follows_stylegan2(decay, t, rampup):
    # StyleGAN2: ema_nimg = min(ema_nimg, cur_nimg * ema_rampup); beta = 0.5 ** (batch / ema_nimg),
    # in units of updates (batch = 1): half-life h = log(0.5) / log(decay).
    h = math.log(0.5) / math.log(decay)
    want = 0.5 ** (1 / max(min(h, t * rampup), 1e-8))
    got = float(parts.ema_decay(_hp(decay, 0, rampup), torch.tensor(t), warmup=True))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_short_run_ema_is_not_the_untrained_generator():
    # 300 G updates with decay 0.999 and no warm-up leave 0.999**300 = 74% of the
    # initial weights in the average; TensorFlow's warm-up leaves almost none.
    G, D = small_gan_modules()
    for warmup in (True, False):
        gan = ganfn.GAN(G, D, latent_dim=3, parts=[parts.ema(0.999, warmup=warmup)])
        state = gan.init(0)
        p0 = {k: v.clone() for k, v in state.g.params.items()}
        for _ in range(300):  # move G's parameters far from their start, step by step
            moved = {k: v + 1.0 for k, v in p0.items()}
            _, st_ = gan.part("ema").after_g(moved, gan.ctx(gan.part("ema"), state), None)
            state = state._replace(parts={"ema": st_})
        weight_on_init = max(float((1.0 - (e - p0[k])).abs().max()) for k, e in state.parts["ema"]["params"].items())
        assert (weight_on_init < 1e-3) if warmup else (weight_on_init > 0.7), (warmup, weight_on_init)


def test_ema_start_copies_parameters_until_then():
    G, D = small_gan_modules()
    gan = ganfn.GAN(G, D, latent_dim=3, parts=[parts.ema(0.9, start=2)])
    state, real, noise = _inputs(gan)
    rng = torch.Generator().manual_seed(0)
    for _ in range(2):
        state, _ = gan.train_step(state, real, gan.draw_noise(rng, B))
        assert_trees_equal(state.parts["ema"]["params"], state.g.params, "EMA before its start")
    state, _ = gan.train_step(state, real, gan.draw_noise(rng, B))
    assert any(not torch.equal(a, b)
               for a, b in zip(leaves(state.parts["ema"]["params"]), leaves(state.g.params), strict=True))


# -- instance noise annealing -------------------------------------------------------------------


@settings(max_examples=10)
@given(st.floats(0.01, 2.0), st.integers(0, 50), st.integers(1, 40))
def test_instance_noise_anneals_inside_the_step(base, step, k):
    G, D = small_gan_modules()
    gan = ganfn.GAN(G, D, latent_dim=3, parts=recipes.classic(instance_noise=base, instance_noise_anneal=k))
    state, real, noise = _inputs(gan)
    state = state._replace(step=torch.tensor(step))
    nd = ganfn.tree_index(noise.d, 0)
    level = base * max(0.0, 1 - step / k)
    p = gan.part("instance_noise")
    r, f = p.d_inputs(real, real, gan.ctx(p, state, nd.parts))
    torch.testing.assert_close(
        r, real + torch.tensor(level, dtype=torch.float64).float() * nd.parts["instance_noise"]["real"]
    )


def test_hooks_lists_the_parts_implementing_a_hook_in_run_order():
    gan = _gan(first=recipes.classic(instance_noise=0.1, ema_decay=0.9))
    for hook in ("d_term", "after_d", "after_g", "noise_d", "sample_weights", "g_term"):
        want = [p.name for p in gan.parts if getattr(p, hook) is not None]
        assert [p.name for p in gan.hooks(hook)] == want
    assert [p.name for p in gan.hooks("sample_weights")] == ["ema"]
    assert gan.hooks("g_term") == ()
    with pytest.raises(KeyError, match="no hook 'no_such_hook'.*d_term"):
        gan.hooks("no_such_hook")
