"""ganfn.regularisers: LeCam's moving averages and term, DRAGAN, the one-sided
gradient penalty and bCR, as closed forms on linear critics plus vmap/purity."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfn import augment
from ganfn import regularisers as R
from ganfn.testing import assert_pure
from ganfn.testing import strategies as gst

f64 = torch.float64


@st.composite
def linear_critics(draw, d_max=6):
    """(w, b, real, fake) in float64 for a linear critic D(x) = x.w + b."""
    d = draw(st.integers(1, d_max))
    w = draw(gst.batches((d,), batch_size=1, dtype=f64, scale=st.floats(0.0, 3.0)))[0]
    real = draw(gst.batches((d,), dtype=f64, scale=2.0))
    fake = draw(gst.batches((d,), batch_size=real.shape[0], dtype=f64, scale=2.0))
    return w, draw(st.floats(-5, 5)), real, fake


def rand(seed, *shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


# -- LeCam ---------------------------------------------------------------------------


@given(gst.logit_pairs(dtype=f64, max_magnitude=100.0), st.floats(0.0, 0.999), st.integers(0, 3))
def test_lecam_averages_follow_the_first_batch_then_decay(pair, decay, start):
    real, fake = pair
    s = R.lecam_update(R.lecam_init(dtype=f64), real, fake, decay=decay, start=start)
    assert float(s.real) == pytest.approx(float(real.mean())) and float(s.fake) == pytest.approx(float(fake.mean()))
    r2, f2 = real.flip(0) + 1, fake.flip(0) - 1
    s2 = R.lecam_update(s, r2, f2, decay=decay, start=start)
    d = 0.0 if start > 1 else decay  # inside the start period the averages track the batch
    torch.testing.assert_close(s2.real, d * s.real + (1 - d) * r2.mean())
    torch.testing.assert_close(s2.fake, d * s.fake + (1 - d) * f2.mean())
    assert int(s2.count) == 2


@given(gst.logit_pairs(dtype=f64, max_magnitude=100.0), st.floats(-10, 10), st.floats(-10, 10), gst.penalty_weights())
def test_lecam_term_closed_forms(pair, a_real, a_fake, w):
    real, fake = pair
    s = R.LeCamState(torch.tensor(a_real, dtype=f64), torch.tensor(a_fake, dtype=f64), torch.tensor(5))
    two = w * (((real - a_fake).clamp(min=0) ** 2).mean() + ((a_real - fake).clamp(min=0) ** 2).mean())
    sq = w * (((real - a_fake) ** 2).mean() + ((a_real - fake) ** 2).mean())
    torch.testing.assert_close(R.lecam_term(real, fake, s, w), two)
    torch.testing.assert_close(R.lecam_term(real, fake, s, w, one_sided=False), sq)
    # zero once D's real outputs sit below the fake average and fake ones above the real average
    assert float(R.lecam_term(torch.full_like(real, a_fake - 1), torch.full_like(fake, a_real + 1), s, w)) == 0.0


def test_lecam_pulls_real_and_fake_outputs_together():
    real = torch.tensor([3.0, 4.0], requires_grad=True)
    fake = torch.tensor([-3.0, -2.0], requires_grad=True)
    s = R.lecam_update(R.lecam_init(), real, fake)
    gr, gf = torch.autograd.grad(R.lecam_term(real, fake, s, 1.0), (real, fake))
    assert (gr > 0).all() and (gf < 0).all()  # descent lowers real outputs and raises fake ones


def test_lecam_update_under_vmap_equals_single_and_is_pure():
    real, fake = torch.randn(3, 4), torch.randn(3, 4)
    decays = torch.tensor([0.0, 0.5, 0.99])
    s0 = R.lecam_update(R.lecam_init(), torch.ones(4), -torch.ones(4))
    stacked = R.LeCamState(*[torch.stack([t] * 3) for t in s0])
    out = torch.func.vmap(lambda s, r, f, d: R.lecam_update(s, r, f, decay=d))(stacked, real, fake, decays)
    for i in range(3):
        single = R.lecam_update(s0, real[i], fake[i], decay=float(decays[i]))
        assert torch.equal(out.real[i], single.real) and torch.equal(out.fake[i], single.fake)
    assert_pure(R.lecam_update, s0, real[0], fake[0])


# -- DRAGAN and the one-sided GP --------------------------------------------------------


@given(linear_critics(), gst.penalty_weights(), gst.seeds())
def test_dragan_on_linear_critic_is_weight_times_norm_minus_one_squared(case, weight, seed):
    w, b, real, _ = case
    u, alpha = rand(seed, *real.shape), rand(seed + 1, real.shape[0])
    val = R.dragan_term(lambda x: x @ w + b, real, u, alpha, weight)
    torch.testing.assert_close(val, weight * (torch.sqrt(w.dot(w) + 1e-12) - 1) ** 2, rtol=1e-9, atol=1e-12)


def test_dragan_evaluates_at_perturbed_real_points():
    """A critic D(x) = sum(x^2)/2 has grad x, so the penalty reveals where it was taken."""
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], dtype=f64)
    u, alpha = rand(0, 3, 2), rand(1, 3)
    x_hat = real + alpha[:, None] * 0.5 * real.std(correction=0) * u
    expected = ((x_hat.norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(R.dragan_term(lambda x: 0.5 * x.square().sum(1), real, u, alpha, 1.0), expected)
    with pytest.raises(ValueError, match="perturbation u"):
        R.dragan_term(lambda x: x.sum(1), real, u[:2], alpha, 1.0)


@given(linear_critics(), gst.penalty_weights(), gst.seeds())
def test_one_sided_gp_penalises_only_norms_above_one(case, weight, seed):
    w, b, real, fake = case
    eps = rand(seed, real.shape[0])
    val = R.one_sided_gp_term(lambda x: x @ w + b, real, fake, eps, weight)
    norm = torch.sqrt(w.dot(w) + 1e-12)
    torch.testing.assert_close(val, weight * torch.clamp(norm - 1, min=0) ** 2, rtol=1e-9, atol=1e-12)
    if norm <= 1:
        assert float(val) == 0.0


def test_penalty_terms_are_second_order_differentiable_under_vmap():
    """The terms sit inside D's loss: their gradient w.r.t. D's weights must exist
    under vmap (grad of grad), as in a stacked GAN step."""
    W = torch.randn(3, 4, dtype=f64)
    real, fake = torch.randn(3, 5, 4, dtype=f64), torch.randn(3, 5, 4, dtype=f64)
    u, a = torch.rand(3, 5, 4, dtype=f64), torch.rand(3, 5, dtype=f64)

    def loss(w, r, f, u_, a_):
        d = lambda x: torch.tanh(x @ w)
        return R.dragan_term(d, r, u_, a_, 10.0) + R.one_sided_gp_term(d, r, f, a_, 10.0)

    g = torch.func.vmap(torch.func.grad(loss))(W, real, fake, u, a)
    for i in range(3):
        torch.testing.assert_close(g[i], torch.func.grad(loss)(W[i], real[i], fake[i], u[i], a[i]))


# -- bCR ------------------------------------------------------------------------------------


@given(gst.batches((2, 4, 4), max_batch=4, dtype=f64, kind="image"), gst.seeds(), gst.penalty_weights(),
       gst.penalty_weights())
def test_bcr_brightness_on_a_sum_critic_is_the_shift_squared(x, seed, wr, wf):
    """D(x) = c * sum(x) moves by c * numel * (u - 0.5) under brightness."""
    c = 0.3
    d = lambda t: c * t.flatten(1).sum(1)
    nr, nf = augment.draw(torch.Generator().manual_seed(seed), x.shape[0], "brightness", dtype=f64), \
        augment.draw(torch.Generator().manual_seed(seed + 1), x.shape[0], "brightness", dtype=f64)
    fake = x.flip(0)
    val = R.bcr_term(d, x, fake, nr, nf, wr, wf, policy="brightness")
    n = x[0].numel()
    exp = (wr * ((c * n * (nr["brightness"][:, 0] - 0.5)) ** 2).mean()
           + wf * ((c * n * (nf["brightness"][:, 0] - 0.5)) ** 2).mean())
    torch.testing.assert_close(val, exp)
    # passing the already computed outputs gives the same value
    torch.testing.assert_close(R.bcr_term(d, x, fake, nr, nf, wr, wf, policy="brightness",
                                          real_out=d(x), fake_out=d(fake)), exp)


def test_bcr_zero_for_an_augmentation_invariant_critic_and_at_p_zero():
    x = torch.rand(4, 1, 8, 8, dtype=f64)
    n = augment.draw(torch.Generator().manual_seed(0), 4, "translation,cutout", dtype=f64)
    const = lambda t: t.flatten(1)[:, :1] * 0 + 2.0
    assert float(R.bcr_term(const, x, x, n, n, 10.0, 10.0, policy="translation,cutout")) == 0.0
    mean = lambda t: t.flatten(1).mean(1)
    assert float(R.bcr_term(mean, x, x, n, n, 10.0, 10.0, policy="translation,cutout", p=0.0)) == 0.0
    assert float(R.bcr_term(mean, x, x, n, n, 10.0, 10.0, policy="translation,cutout")) > 0.0


# -- lazy regularisation ----------------------------------------------------------------------


@given(st.integers(1, 20), st.floats(0.0, 100.0))
def test_lazy_is_due_on_every_kth_update_with_weight_times_k(every, v):
    value = torch.tensor(v, dtype=f64)
    outs = [R.lazy(value, torch.tensor(c), every) for c in range(3 * every)]
    assert [c for c, (_, due) in enumerate(outs) if due] == [0, every, 2 * every]
    for c, (val, _) in enumerate(outs):
        assert float(val) == (every * v if c % every == 0 else 0.0)
    # the time average equals the eager penalty
    assert sum(float(x) for x, _ in outs) / (3 * every) == pytest.approx(v)
    if every == 1:
        assert all(torch.equal(x, value) for x, _ in outs)


def test_lazy_under_vmap_with_members_at_different_counts():
    vals, counts = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 5, 16])
    out, due = torch.func.vmap(lambda v, c: R.lazy(v, c, 16))(vals, counts)
    assert due.tolist() == [True, False, True] and out.tolist() == [16.0, 0.0, 48.0]
    with pytest.raises(ValueError, match="every= an int >= 1"):
        R.lazy(vals[0], counts[0], 0)


def test_lazy_adam_compensation_matches_stylegan2():
    lr, (b1, b2) = R.lazy_adam_compensation(0.0025, (0.0, 0.99), 16)
    c = 16 / 17
    assert lr == pytest.approx(0.0025 * c) and b1 == 0.0 and b2 == pytest.approx(0.99 ** c)
    assert R.lazy_adam_compensation(1e-3, (0.5, 0.9), 1) == (0.5e-3, (0.5 ** 0.5, 0.9 ** 0.5))
    with pytest.raises(ValueError, match="every="):
        R.lazy_adam_compensation(1e-3, (0.5, 0.9), 0)
