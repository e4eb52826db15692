"""ganfn.losses: identities between the formulas, torch references, stability, label smoothing."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ganfn import losses
from ganfn.testing import assert_loss_invariants
from ganfn.testing import strategies as gst

f64_logits = gst.logits(dtype=torch.float64)
f64_pairs = gst.logit_pairs(dtype=torch.float64)


def flat(x):
    return x.reshape(x.shape[0], -1).mean(1)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
@given(pair=gst.logit_pairs())
def test_invariants_on_generated_logits(name, pair):
    assert_loss_invariants(name, *pair, dtypes=())


@given(f64_logits)
def test_minimax_g_is_minus_bce_against_fake_label(fake):
    ref = -F.binary_cross_entropy_with_logits(flat(fake), torch.zeros_like(flat(fake)))
    torch.testing.assert_close(losses.minimax.g(fake), ref, rtol=1e-12, atol=1e-12)


@given(f64_logits, st.floats(0.0, 1.0))
def test_non_saturating_g_is_bce_with_logits(fake, t):
    ref = F.binary_cross_entropy_with_logits(flat(fake), torch.full_like(flat(fake), t))
    torch.testing.assert_close(losses.non_saturating.g(fake, g_target=t), ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(losses.non_saturating.g(fake), F.binary_cross_entropy_with_logits(flat(fake), torch.ones_like(flat(fake))))


@given(f64_pairs, gst.label_smoothing(), st.floats(0.0, 0.3))
def test_bce_d_loss_equals_torch_and_minimax_equals_non_saturating_for_d(pair, real_t, fake_t):
    real, fake = pair
    kw = dict(real_target=real_t, fake_target=fake_t)
    r, f = losses.non_saturating.d_parts(real, fake, **kw)
    torch.testing.assert_close(r, F.binary_cross_entropy_with_logits(flat(real), torch.full_like(flat(real), real_t)), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f, F.binary_cross_entropy_with_logits(flat(fake), torch.full_like(flat(fake), fake_t)), rtol=1e-12, atol=1e-9)
    assert torch.equal(losses.minimax.d(real, fake, **kw), losses.non_saturating.d(real, fake, **kw))
    # Targets as 0-d tensors (one per ensemble member) give the same numbers.
    t = dict(real_target=torch.tensor(real_t, dtype=torch.float64), fake_target=torch.tensor(fake_t, dtype=torch.float64))
    torch.testing.assert_close(losses.non_saturating.d(real, fake, **t), r + f)


@given(f64_pairs, st.floats(-1e3, 1e3))
def test_wasserstein_d_invariant_to_constant_shift(pair, c):
    real, fake = pair
    base = losses.wasserstein.d(real, fake)
    shifted = losses.wasserstein.d(real + c, fake + c)
    scale = max(1.0, real.abs().max().item(), fake.abs().max().item(), abs(c))
    assert abs((shifted - base).item()) <= 1e-12 * scale * 4
    torch.testing.assert_close(base, flat(fake).mean() - flat(real).mean())
    torch.testing.assert_close(losses.wasserstein.g(fake), -flat(fake).mean())


@given(f64_pairs)
def test_hinge_zero_when_margins_met_positive_otherwise(pair):
    real, fake = pair
    met_real, met_fake = 1 + real.abs(), -1 - fake.abs()
    assert losses.hinge.d(met_real, met_fake).item() == 0.0
    r, f = losses.hinge.d_parts(real, fake)
    torch.testing.assert_close(r, F.relu(1 - flat(real)).mean())
    torch.testing.assert_close(f, F.relu(1 + flat(fake)).mean())
    violated = bool((flat(real) < 1).any() or (flat(fake) > -1).any())
    assert (r + f > 0).item() == violated
    assert torch.equal(losses.hinge.g(fake), losses.wasserstein.g(fake))


@given(f64_pairs, st.floats(-1, 1), st.floats(0, 2), st.floats(0, 2))
def test_least_squares_formula(pair, a, b, c):
    real, fake = pair
    r, f = losses.least_squares.d_parts(real, fake, real_target=b, fake_target=a)
    torch.testing.assert_close(r, 0.5 * ((flat(real) - b) ** 2).mean())
    torch.testing.assert_close(f, 0.5 * ((flat(fake) - a) ** 2).mean())
    torch.testing.assert_close(losses.least_squares.g(fake, g_target=c), 0.5 * ((flat(fake) - c) ** 2).mean())


@given(st.floats(0.05, 0.999))
def test_label_smoothing_moves_bce_optimum_to_logit_of_target(t):
    """With real target t, D's loss on a real logit x is minimised at x = logit(t)."""
    opt = math.log(t / (1 - t))
    x = torch.tensor([opt], dtype=torch.float64, requires_grad=True)
    r, _ = losses.non_saturating.d_parts(x, torch.zeros(1, dtype=torch.float64), real_target=t)
    (g,) = torch.autograd.grad(r, x)
    assert abs(g.item()) < 1e-12
    for d in (-0.5, 0.5):
        other, _ = losses.non_saturating.d_parts(torch.tensor([opt + d], dtype=torch.float64), torch.zeros(1, dtype=torch.float64), real_target=t)
        assert other.item() > r.item()
    # and the unsmoothed loss has no finite optimum: its gradient stays negative there.
    x1 = torch.tensor([opt], dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(losses.non_saturating.d_parts(x1, torch.zeros(1, dtype=torch.float64))[0], x1)
    assert g1.item() < 0


@given(st.floats(0.0, 2.0))
def test_least_squares_optimum_is_the_target(b):
    xs = torch.linspace(b - 1, b + 1, 201, dtype=torch.float64)
    vals = torch.stack([losses.least_squares.d_parts(x.reshape(1), torch.zeros(1, dtype=torch.float64), real_target=b)[0] for x in xs])
    assert abs(xs[vals.argmin()].item() - b) < 1e-9


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
@given(pair=gst.logit_pairs(same_size=True, column=False, max_magnitude=50.0))
def test_reductions_and_column_layout(name, pair):
    loss = losses.get(name)
    real, fake = pair
    B = real.shape[0]
    rm, fm = loss.d_parts(real, fake)
    rs, fs = loss.d_parts(real, fake, reduction="sum")
    rn, fn_ = loss.d_parts(real, fake, reduction="none")
    assert rn.shape == (B,) and fn_.shape == (B,)
    torch.testing.assert_close(rs, rn.sum())
    torch.testing.assert_close(rm, rn.mean())
    # [B, 1] outputs (nn.Linear(.., 1)) mean the same as [B].
    assert torch.equal(loss.d(real[:, None], fake[:, None]), loss.d(real, fake))
    assert torch.equal(loss.g(fake[:, None]), loss.g(fake))
    with pytest.raises(ValueError, match="reduction"):
        loss.d_parts(real, fake, reduction="avg")


def test_get_names_aliases_and_unknown():
    assert losses.get("bce") is losses.non_saturating
    assert losses.get("WGAN") is losses.wasserstein
    assert losses.get(losses.hinge) is losses.hinge
    with pytest.raises(ValueError, match=r"unknown loss 'wgan_gpp'.*hinge"):
        losses.get("wgan_gpp")


def test_bce_with_logits_extremes_exact():
    x = torch.tensor([-1e4, -200.0, 0.0, 200.0, 1e4])
    # softplus(x) - t*x: exact limits, no inf/nan anywhere.
    torch.testing.assert_close(losses.bce_with_logits(x, 1.0), torch.tensor([1e4, 200.0, math.log(2), 0.0, 0.0]))
    torch.testing.assert_close(losses.bce_with_logits(x, 0.0), torch.tensor([0.0, 0.0, math.log(2), 200.0, 1e4]))
