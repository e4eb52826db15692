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
    torch.testing.assert_close(losses.non_saturating.g(fake),
                               F.binary_cross_entropy_with_logits(flat(fake), torch.ones_like(flat(fake))))


@given(f64_pairs, gst.label_smoothing(), st.floats(0.0, 0.3))
def test_bce_d_loss_equals_torch_and_minimax_equals_non_saturating_for_d(pair, real_t, fake_t):
    real, fake = pair
    kw = dict(real_target=real_t, fake_target=fake_t)
    r, f = losses.non_saturating.d_parts(real, fake, **kw)
    torch.testing.assert_close(r, F.binary_cross_entropy_with_logits(flat(real), torch.full_like(flat(real), real_t)),
                               rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f, F.binary_cross_entropy_with_logits(flat(fake), torch.full_like(flat(fake), fake_t)),
                               rtol=1e-12, atol=1e-9)
    assert torch.equal(losses.minimax.d(real, fake, **kw), losses.non_saturating.d(real, fake, **kw))
    # Targets as 0-d tensors (one per ensemble member) give the same numbers.
    t = dict(real_target=torch.tensor(real_t, dtype=torch.float64),
             fake_target=torch.tensor(fake_t, dtype=torch.float64))
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
        other, _ = losses.non_saturating.d_parts(torch.tensor([opt + d], dtype=torch.float64),
                                                 torch.zeros(1, dtype=torch.float64), real_target=t)
        assert other.item() > r.item()
    # and the unsmoothed loss has no finite optimum: its gradient stays negative there.
    x1 = torch.tensor([opt], dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(losses.non_saturating.d_parts(x1, torch.zeros(1, dtype=torch.float64))[0], x1)
    assert g1.item() < 0


@given(st.floats(0.0, 2.0))
def test_least_squares_optimum_is_the_target(b):
    xs = torch.linspace(b - 1, b + 1, 201, dtype=torch.float64)
    vals = torch.stack([losses.least_squares.d_parts(x.reshape(1), torch.zeros(1, dtype=torch.float64),
                                                     real_target=b)[0] for x in xs])
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


# -- relativistic losses (Jolicoeur-Martineau, 2018) ------------------------------------

paired = gst.logit_pairs(same_size=True, dtype=torch.float64)


@given(paired)
def test_rpgan_is_minus_log_sigmoid_of_real_minus_fake(pair):
    real, fake = pair
    r, f = flat(real), flat(fake)
    ref_d = -F.logsigmoid(r - f).mean()
    torch.testing.assert_close(losses.rpgan.d(real, fake), ref_d, rtol=1e-10, atol=1e-12)  # two halves summed
    torch.testing.assert_close(losses.rpgan.g(fake, real_out=real), -F.logsigmoid(f - r).mean(), rtol=1e-12, atol=1e-12)
    dr, df = losses.rpgan.d_parts(real, fake)
    assert torch.equal(dr, df)


@given(paired)
def test_ragan_matches_its_definition(pair):
    real, fake = pair
    r, f = flat(real), flat(fake)
    ref_d = -F.logsigmoid(r - f.mean()).mean() - F.logsigmoid(-(f - r.mean())).mean()
    ref_g = -F.logsigmoid(f - r.mean()).mean() - F.logsigmoid(-(r - f.mean())).mean()
    torch.testing.assert_close(losses.ragan.d(real, fake), ref_d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses.ragan.g(fake, real_out=real), ref_g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", [losses.rpgan, losses.ragan], ids=lambda lp: lp.name)
@given(pair=gst.logit_pairs(same_size=True), shift=st.floats(-1e3, 1e3))
def test_relativistic_losses_finite_and_invariant_to_a_common_shift(loss, pair, shift):
    """Only differences of D's outputs matter, and softplus keeps every form finite."""
    real, fake = (t.double() for t in pair)
    real_, fake_ = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    d, g = loss.d(real_, fake_), loss.g(fake_, real_out=real_)
    gr, gf = torch.autograd.grad(d + g, (real_, fake_))
    assert torch.isfinite(d) and torch.isfinite(g) and torch.isfinite(gr).all() and torch.isfinite(gf).all()
    scale = 1e-9 * max(1.0, real.abs().max().item(), fake.abs().max().item(), abs(shift))
    torch.testing.assert_close(loss.d(real + shift, fake + shift), d.detach(), rtol=0, atol=scale * 10)
    torch.testing.assert_close(loss.g(fake + shift, real_out=real + shift), g.detach(), rtol=0, atol=scale * 10)
    # D gains from raising real and lowering fake outputs; G from raising fake ones.
    gdr, gdf = torch.autograd.grad(loss.d(real_, fake_), (real_, fake_))
    (ggf,) = torch.autograd.grad(loss.g(fake_, real_out=real_), (fake_,))
    assert (gdr <= 0).all() and (gdf >= 0).all() and (ggf <= 0).all()


@pytest.mark.parametrize("loss", [losses.rpgan, losses.ragan], ids=lambda lp: lp.name)
def test_relativistic_g_needs_real_outputs_of_the_same_size(loss):
    assert loss.g_needs_real and not losses.hinge.g_needs_real
    with pytest.raises(ValueError, match="pass real_out="):
        loss.g(torch.zeros(3))
    with pytest.raises(ValueError, match="batch sizes differ"):
        loss.g(torch.zeros(3), real_out=torch.zeros(4))
    with pytest.raises(ValueError, match="cannot be mixed"):
        losses.mixture(loss, "hinge")
    # reductions: "none" is per index, "mean"/"sum" reduce it
    r, f = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(loss.g(f, real_out=r, reduction="none").mean(), loss.g(f, real_out=r))
    torch.testing.assert_close(loss.g(f, real_out=r, reduction="none").sum(), loss.g(f, real_out=r, reduction="sum"))


def test_rpgan_pairs_samples_and_rejects_unequal_batches():
    with pytest.raises(ValueError, match="pairs real sample i with fake sample i"):
        losses.rpgan.d(torch.zeros(3), torch.zeros(2))


# -- top-k training of G (Sinha et al., 2020) ----------------------------------------------


@given(gst.logits(column=False, max_magnitude=100.0), st.data())
def test_top_k_keeps_exactly_the_k_highest_scored_fakes(scores, data):
    B = scores.shape[0]
    k = data.draw(st.integers(1, B))
    m = losses.top_k_mask(scores, k)
    assert int(m.sum()) == k
    # every kept score is >= every dropped one
    if k < B:
        assert scores[m.bool()].min() >= scores[~m.bool()].max()
    per = torch.randn(B, dtype=torch.float64, generator=torch.Generator().manual_seed(B))
    torch.testing.assert_close(losses.top_k(per, scores, k), (per * m.double()).sum() / k)
    torch.testing.assert_close(losses.top_k(per, scores, B), per.mean())


def test_top_k_with_per_member_k_under_vmap():
    scores = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    per = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    ks = torch.tensor([1, 3, 6])
    out = torch.func.vmap(losses.top_k)(per, scores, ks)
    for i in range(3):
        torch.testing.assert_close(out[i], losses.top_k(per[i], scores[i], int(ks[i])))


def test_top_k_gradient_reaches_only_the_kept_samples():
    per = torch.randn(4, requires_grad=True)
    (g,) = torch.autograd.grad(losses.top_k(per, torch.tensor([0.0, 5.0, -1.0, 2.0]), 2), per)
    assert torch.equal(g, torch.tensor([0.0, 0.5, 0.0, 0.5]))


@given(st.integers(0, 10_000), st.integers(1, 256), st.integers(1, 50), st.floats(0.5, 1.0), st.floats(0.05, 1.0))
def test_top_k_schedule_decays_from_the_batch_to_its_floor(step, B, spe, gamma, nu):
    k = losses.top_k_count(step, B, steps_per_epoch=spe, gamma=gamma, min_fraction=nu)
    assert 1 <= int(k) <= B
    assert int(losses.top_k_count(0, B, steps_per_epoch=spe, gamma=gamma, min_fraction=nu)) == B
    assert int(k) >= min(B, int(torch.ceil(torch.tensor(nu * B - 1e-9))))
    assert int(losses.top_k_count(step + spe, B, steps_per_epoch=spe, gamma=gamma, min_fraction=nu)) <= int(k)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        losses.top_k_count(step, B, steps_per_epoch=0)
