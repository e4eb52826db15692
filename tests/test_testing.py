"""ganfn.testing: every check passes on the core and FAILS on a deliberately broken input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import small_gan_modules
from hypothesis import given
from hypothesis import strategies as st

import ganfn
from ganfn import losses, penalties, recipes
from ganfn.penalties import Penalty
from ganfn.testing import (
    assert_accumulation_equivalent,
    assert_grads_isolated,
    assert_loss_invariants,
    assert_penalty_invariants,
    assert_pure,
    assert_trees_close,
    assert_trees_equal,
    assert_vmap_equivalent,
)
from ganfn.testing import strategies as gst

torch.set_num_threads(1)


def make_gan(cls=ganfn.GAN, **kw):
    G, D = small_gan_modules()
    kw.setdefault("latent_dim", 3)
    return cls(G, D, **kw)


def inputs(gan, B=8, seed=0):
    real = torch.randn(B, 2, generator=torch.Generator().manual_seed(seed + 100))
    return gan.init(seed), real, gan.draw_noise(torch.Generator().manual_seed(seed), B)


# -- strategies produce what they promise ------------------------------------------------


@given(gst.logits(max_magnitude=1e4))
def test_logits_are_finite_and_bounded(x):
    assert x.dim() in (1, 2) and x.shape[0] >= 1
    assert torch.isfinite(x).all() and x.abs().max() <= 1e4


def test_logits_reach_extremes():
    seen = set()

    @given(gst.logits(min_size=16, max_size=16))
    def collect(x):
        seen.update(x.reshape(-1).tolist())

    collect()
    assert max(abs(v) for v in seen) >= 1e3


@given(gst.batches((1, 4, 4), kind="image", min_batch=2, max_batch=5),
       gst.batches(st.tuples(st.integers(1, 3), st.just(5)), batch_size=3))
def test_batches_shapes_and_ranges(img, vec):
    assert img.shape[1:] == (1, 4, 4) and 2 <= img.shape[0] <= 5
    assert img.min() >= -1 and img.max() <= 1
    assert vec.shape[0] == 3 and vec.shape[2] == 5


@given(gst.learning_rates(), gst.betas(), gst.penalty_weights(), gst.label_smoothing(), gst.seeds())
def test_hyperparameters_in_range(lr, b, w, t, s):
    assert 1e-5 <= lr <= 1e-1
    assert 0 <= b[0] < 1 and 0 < b[1] < 1
    assert 0 <= w <= 100 and 0.5 <= t <= 1.0 and 0 <= s < 2**31


@given(
    st.sampled_from(["sgd", "adam", "adamw", "rmsprop"]).flatmap(
        lambda n: st.tuples(st.just(n), gst.optimizer_hparams(n))
    )
)
def test_optimizer_hparams_accepted_by_ganfn_and_torch(pair):
    name, hp = pair
    getattr(ganfn.optim, name)(**hp)  # valid for ganfn
    torch_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                 "rmsprop": torch.optim.RMSprop}[name]
    torch_cls([torch.zeros(1, requires_grad=True)], **hp)  # and for torch


_STATE_GAN = make_gan(parts=recipes.wgan_gp(), loss="wasserstein")


@given(gst.train_states(_STATE_GAN, lr_d=gst.learning_rates(), gp_weight=gst.penalty_weights()))
def test_train_states_carry_drawn_hparams(state):
    assert isinstance(state, ganfn.TrainState)
    assert 1e-5 <= state.d.opt["hp"]["lr"].item() <= 1e-1
    assert 0 <= state.hparams["gp_weight"].item() <= 100


# -- assert_pure ------------------------------------------------------------------------------


def test_assert_pure_passes_on_core_step():
    gan = make_gan()
    assert_pure(gan.train_step, *inputs(gan))


def test_assert_pure_catches_mutated_nested_input():
    def bad(state):
        state["inner"]["w"].add_(1.0)
        return state["inner"]["w"].sum()

    with pytest.raises(AssertionError, match=r"modified its input args\[0\]\['inner'\]\['w'\]"):
        assert_pure(bad, {"inner": {"w": torch.zeros(3)}})


def test_assert_pure_catches_same_value_inplace_write():
    def bad(x):
        x.mul_(1.0)  # same values, but still an in-place write into the caller's tensor
        return x * 2

    with pytest.raises(AssertionError, match="version counter"):
        assert_pure(bad, torch.ones(3))


def test_assert_pure_catches_nondeterminism():
    g = torch.Generator().manual_seed(0)

    def bad(x):
        return x + torch.rand(x.shape, generator=g)  # hidden RNG state

    with pytest.raises(AssertionError, match="not deterministic"):
        assert_pure(bad, torch.zeros(3))


def test_assert_pure_catches_consumed_generator():
    def draws(g):
        return torch.rand(2, generator=g)

    with pytest.raises(AssertionError, match="changed"):
        assert_pure(draws, torch.Generator().manual_seed(0))
    assert_pure(lambda g: torch.rand(2, generator=g.clone_state()), torch.Generator().manual_seed(0))


def test_assert_pure_catches_grad_on_module():
    lin = torch.nn.Linear(2, 1)

    def bad(x):
        lin(x).sum().backward()
        return x

    with pytest.raises(AssertionError, match=r"wrote \.grad"):
        assert_pure(bad, torch.ones(4, 2), modules=[lin])


def test_assert_pure_catches_module_trained_in_place():
    gan = make_gan()

    class Sneaky:
        def __init__(self, gan):
            self.gan, self.D = gan, gan.discriminator

        def step(self, state, real, noise):
            with torch.no_grad():
                self.D[0].weight.add_(0.1)
            return self.gan.train_step(state, real, noise)

    with pytest.raises(AssertionError, match="modules"):
        assert_pure(Sneaky(gan).step, *inputs(gan))


# -- assert_grads_isolated ------------------------------------------------------------------


class GStepMovesD(ganfn.GAN):
    """The reference's classic bug, restated: the G update also changes D."""

    def g_update(self, state, grads, aux):
        new = super().g_update(state, grads, aux)
        return new._replace(d=new.d._replace(params={k: v - 1e-3 for k, v in new.d.params.items()}))


class GGradsOverBoth(ganfn.GAN):
    """g_grads that returns gradients for D's parameters too."""

    def g_grads(self, state, noise_g):
        loss, grads, aux = super().g_grads(state, noise_g)
        return loss, {**grads, **{f"D.{k}": torch.zeros_like(v) for k, v in state.d.params.items()}}, aux


class DStepMovesG(ganfn.GAN):
    def d_update(self, state, grads, aux):
        new = super().d_update(state, grads, aux)
        return new._replace(g=new.g._replace(opt={**new.g.opt, "count": new.g.opt["count"] + 1}))


def test_grads_isolated_passes_on_core():
    for kw in ({}, dict(parts=recipes.wgan_gp(ema_decay=0.9), loss="wasserstein"),
               dict(parts=recipes.classic(spectral_norm=True, replay_size=16))):
        gan = make_gan(**kw)
        assert_grads_isolated(gan, *inputs(gan))


@pytest.mark.parametrize("cls,msg", [(GStepMovesD, "G update moved the discriminator"),
                                     (GGradsOverBoth, "g_grads must return gradients over exactly"),
                                     (DStepMovesG, "D update moved the generator")])
def test_grads_isolated_catches_leaks(cls, msg):
    gan = make_gan(cls)
    with pytest.raises(AssertionError, match=msg):
        assert_grads_isolated(gan, *inputs(gan))


# -- accumulation and penalties: the one-norm-over-the-batch GP ---------------------------------


def _global_norm_gp_term(d_fn, real, fake, eps, weight):
    e = eps.reshape(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    x_hat = e * real + (1 - e) * fake
    g = torch.func.grad(lambda x: d_fn(x).sum())(x_hat)
    return weight * (g.norm() - 1) ** 2  # BUG: one norm over the whole batch


BATCH_NORM_GP = Penalty("gp_batch_norm", "gp_weight", 10.0, term=_global_norm_gp_term, needs_eps=True)


def test_accumulation_check_passes_on_core():
    gan = make_gan(parts=recipes.wgan_gp(), loss="wasserstein")
    state, real, _ = inputs(gan)
    assert_accumulation_equivalent(gan, state, real, 4)


def test_accumulation_check_catches_batch_norm_gp():
    gan = make_gan(parts=[BATCH_NORM_GP], loss="wasserstein")
    state, real, _ = inputs(gan)
    with pytest.raises(AssertionError, match="not equivalent to one batch"):
        assert_accumulation_equivalent(gan, state, real, 4)


def test_accumulation_check_catches_sum_instead_of_mean():
    class SummedGrads(ganfn.GAN):  # sums micro-batch gradients instead of averaging
        def d_grads(self, state, real, noise_d):
            loss, grads, aux = super().d_grads(state, real, noise_d)
            return loss, {k: g * self.accumulation_steps for k, g in grads.items()}, aux

    gan = make_gan(SummedGrads)
    state, real, _ = inputs(gan)
    with pytest.raises(AssertionError, match="D gradients differ"):
        assert_accumulation_equivalent(gan, state, real, 2)


@pytest.mark.parametrize("name", ["gp", "r1", "r2", "weight_clip"])
def test_penalty_invariants_pass_on_core(name):
    assert_penalty_invariants(name)
    assert_penalty_invariants(penalties.get(name), sample_shape=(1, 3, 3), batch_size=4, seed=1)


def test_penalty_invariants_catch_batch_norm_gp():
    with pytest.raises(AssertionError, match="not per-sample"):
        assert_penalty_invariants(BATCH_NORM_GP)


def test_penalty_invariants_catch_wrong_target_and_sign():
    off_target = Penalty("gp_off", "gp_weight", 10.0, term=lambda d, r, f, e, w: w * torch.mean(
        (penalties.input_grad_norms(d, r) - 2.0) ** 2), needs_eps=True)
    with pytest.raises(AssertionError, match="must be zero"):
        assert_penalty_invariants(off_target)
    negative = Penalty("neg_r1", "r1_weight", 1.0, term=lambda d, r, f, e,
                       w: -w * torch.mean(penalties.input_grad_norms(d, r) ** 2))
    with pytest.raises(AssertionError, match=">= 0"):
        assert_penalty_invariants(negative)


def test_penalty_invariants_catch_bad_clip():
    leaky = Penalty("weight_clip", "clip_value", 0.01, project=lambda p,
                    c: {k: torch.clamp(v, -2 * c, 2 * c) for k, v in p.items()})
    with pytest.raises(AssertionError, match="outside"):
        assert_penalty_invariants(leaky)


# -- losses: the log(sigmoid) overflow --------------------------------------------------------


def _naive_bce_d(real, fake, **_):
    return -torch.log(torch.sigmoid(real)).mean(), -torch.log(1 - torch.sigmoid(fake)).mean()


NAIVE_BCE = losses.LossPair("naive_bce", _naive_bce_d, lambda fake, **_: -torch.log(torch.sigmoid(fake)).mean(), 0.0)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_loss_invariants_pass_on_core(name):
    assert_loss_invariants(name)


@given(gst.logit_pairs())
def test_loss_invariants_hold_on_generated_logits(pair):
    for name in losses.LOSSES:
        assert_loss_invariants(name, *pair, dtypes=())


def test_loss_invariants_catch_log_sigmoid_overflow():
    with pytest.raises(AssertionError, match="not finite"):
        assert_loss_invariants(NAIVE_BCE)


def test_loss_invariants_catch_overflow_on_generated_logits():
    # The hypothesis strategy itself finds the overflow of the naive loss.
    @given(gst.logit_pairs())
    def prop(pair):
        assert_loss_invariants(NAIVE_BCE, *pair, dtypes=())

    with pytest.raises(AssertionError, match="not finite"):
        prop()


def test_loss_invariants_catch_wrong_direction():
    flipped = losses.LossPair("flipped", lambda r, f, **_: (F.softplus(r).mean(), F.softplus(-f).mean()),
                              lambda f, **_: F.softplus(-f).mean(), 0.0)
    with pytest.raises(AssertionError, match="rises|does not fall"):
        assert_loss_invariants(flipped)


# -- vmap ------------------------------------------------------------------------------------


def test_vmap_check_passes_on_core():
    assert_vmap_equivalent(make_gan(parts=recipes.wgan_gp(), loss="wasserstein"), [0, 1, 2], steps=2)


def test_vmap_check_catches_member_dependent_step():
    class CrossTalk(ganfn.GAN):
        """A step whose result depends on batch-level reductions across members under vmap
        would be caught; here: a step that behaves differently when traced."""

        def train_step(self, state, real, noise):
            new, m = super().train_step(state, real, noise)
            if ganfn.gan.in_transform(real):
                new = new._replace(d=new.d._replace(params={k: v * 1.01 for k, v in new.d.params.items()}))
            return new, m

    with pytest.raises(AssertionError, match="differs from its single run"):
        assert_vmap_equivalent(make_gan(CrossTalk), [0, 1], steps=1)


# -- tree helpers --------------------------------------------------------------------------------


def test_tree_assertions_name_the_leaf():
    a = {"x": torch.zeros(2), "y": [torch.ones(1)]}
    b = {"x": torch.zeros(2), "y": [torch.ones(1) + 1e-3]}
    assert_trees_equal(a, {"x": torch.zeros(2), "y": [torch.ones(1)]})
    with pytest.raises(AssertionError, match=r"\['y'\]\[0\]"):
        assert_trees_equal(a, b)
    assert_trees_close(a, b, atol=1e-2)
    with pytest.raises(AssertionError, match=r"\['y'\]\[0\]"):
        assert_trees_close(a, b, atol=1e-5, rtol=0)
    nan = {"x": torch.tensor([float("nan")])}
    assert_trees_equal(nan, {"x": torch.tensor([float("nan")])})
