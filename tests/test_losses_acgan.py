"""ganfn.losses.acgan: ACGAN's auxiliary classification (Odena et al. 2017)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ganfn import losses


@st.composite
def acgan_batch(draw):
    b, k = draw(st.integers(1, 6)), draw(st.integers(2, 5))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.floats(0.1, 20.0))

    def out():
        return (scale * torch.randn(b, generator=g, dtype=torch.float64),
                scale * torch.randn(b, k, generator=g, dtype=torch.float64))

    return out(), out(), torch.randint(k, (b,), generator=g), torch.randint(k, (b,), generator=g)


@pytest.mark.parametrize("base", ["non_saturating", "hinge", "wasserstein", "least_squares"])
@given(batch=acgan_batch(), wd=st.floats(0.0, 3.0), wg=st.floats(0.0, 3.0))
def test_acgan_is_base_plus_weighted_cross_entropy(base, batch, wd, wg):
    real, fake, yr, yf = batch
    loss, b = losses.acgan(base, wd, wg), losses.get(base)
    r, f = loss.d_parts(real, fake, real_labels=yr, fake_labels=yf)
    br, bf = b.d_parts(real[0], fake[0])
    torch.testing.assert_close(r, br + wd * F.cross_entropy(real[1], yr))
    torch.testing.assert_close(f, bf + wd * F.cross_entropy(fake[1], yf))
    torch.testing.assert_close(loss.g(fake, fake_labels=yf), b.g(fake[0]) + wg * F.cross_entropy(fake[1], yf))
    # the weights are per-member hyperparameters: passing them as tensors overrides the defaults
    r2, _ = loss.d_parts(real, fake, real_labels=yr, fake_labels=yf,
                         acgan_d_weight=torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(r2, br)
    assert torch.equal(loss.scores(real), real[0])


@given(batch=acgan_batch())
def test_acgan_generator_gradient_on_class_logits(batch):
    _, fake, _, yf = batch
    logits = fake[1].clone().requires_grad_(True)
    loss = losses.acgan("hinge", 1.0, 2.0)
    (g,) = torch.autograd.grad(loss.g((fake[0], logits), fake_labels=yf), [logits])
    onehot = F.one_hot(yf, logits.shape[1]).to(logits.dtype)
    torch.testing.assert_close(g, 2.0 * (logits.detach().softmax(1) - onehot) / logits.shape[0])


def test_acgan_reductions_and_registry():
    real = (torch.randn(4), torch.randn(4, 3))
    fake = (torch.randn(4), torch.randn(4, 3))
    y = torch.tensor([0, 1, 2, 0])
    loss = losses.get("acgan")
    assert loss.takes_labels and loss.hparams == {"acgan_d_weight": 1.0, "acgan_g_weight": 1.0}
    r, f = loss.d_parts(real, fake, real_labels=y, fake_labels=y, reduction="none")
    assert r.shape == f.shape == (4,)
    rm, fm = loss.d_parts(real, fake, real_labels=y, fake_labels=y)
    torch.testing.assert_close(r.mean(), rm)
    assert not losses.hinge.takes_labels and losses.hinge.scores(real[0]) is real[0]


def test_acgan_bad_arguments():
    with pytest.raises(ValueError, match="d_weight"):
        losses.acgan(d_weight=-1.0)
    with pytest.raises(ValueError, match="g_weight"):
        losses.acgan(g_weight=float("nan"))
    with pytest.raises(ValueError, match="plain loss"):
        losses.acgan(losses.mixture("hinge", "wasserstein"))
