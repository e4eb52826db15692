"""Losses on patch outputs (PatchGAN, Isola et al., 2017): D returns several
scores per sample and, as in pix2pix, CycleGAN and TF-GAN, every patch carries
its own loss and the losses are averaged. Checked against torch.nn.functional,
over generated shapes and values; accuracies and penalties with patch outputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import losses, models, penalties

torch.set_num_threads(1)


@st.composite
def patch_outputs(draw):
    """D's outputs on a real and a fake batch: [B, *patch] float64 in [-8, 8]."""
    B = draw(st.integers(1, 5))
    patch = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 8.0]))
    make = lambda: (torch.rand(B, *patch, generator=g, dtype=torch.float64) * 2 - 1) * scale
    return make(), make()


def _full(x, t):
    return torch.full_like(x, float(t))


def _bce(x, t, reduction="mean"):
    return F.binary_cross_entropy_with_logits(x, _full(x, t), reduction=reduction)


def _per_sample(x):
    return x.flatten(1).mean(1)


targets = st.sampled_from([(1.0, 0.0, 1.0), (0.9, 0.0, 1.0), (0.7, 0.2, 0.9)])


@settings(max_examples=40, deadline=None)
@given(patch_outputs(), targets)
def test_bce_losses_average_the_per_patch_cross_entropy(out, t):
    r, f = out
    tr, tf, tg = t
    d_r, d_f = losses.non_saturating.d_parts(r, f, real_target=tr, fake_target=tf)
    torch.testing.assert_close(d_r, _bce(r, tr))
    torch.testing.assert_close(d_f, _bce(f, tf))
    torch.testing.assert_close(losses.non_saturating.g(f, g_target=tg), _bce(f, tg))
    torch.testing.assert_close(losses.minimax.g(f), torch.log1p(-torch.sigmoid(f)).mean())
    none_r, _ = losses.non_saturating.d_parts(r, f, real_target=tr, fake_target=tf, reduction="none")
    torch.testing.assert_close(none_r, _per_sample(_bce(r, tr, "none")))
    s_r, _ = losses.non_saturating.d_parts(r, f, real_target=tr, fake_target=tf, reduction="sum")
    torch.testing.assert_close(s_r, _per_sample(_bce(r, tr, "none")).sum())


@settings(max_examples=40, deadline=None)
@given(patch_outputs(), targets)
def test_least_squares_hinge_and_wasserstein_per_patch(out, t):
    r, f = out
    tr, tf, tg = t
    ls_r, ls_f = losses.least_squares.d_parts(r, f, real_target=tr, fake_target=tf)
    torch.testing.assert_close(ls_r, 0.5 * F.mse_loss(r, _full(r, tr)))
    torch.testing.assert_close(ls_f, 0.5 * F.mse_loss(f, _full(f, tf)))
    torch.testing.assert_close(losses.least_squares.g(f, g_target=tg), 0.5 * F.mse_loss(f, _full(f, tg)))
    h_r, h_f = losses.hinge.d_parts(r, f)
    torch.testing.assert_close(h_r, torch.clamp(1 - r, min=0).mean())
    torch.testing.assert_close(h_f, torch.clamp(1 + f, min=0).mean())
    w_r, w_f = losses.wasserstein.d_parts(r, f)
    torch.testing.assert_close(w_r + w_f, f.mean() - r.mean())


@settings(max_examples=30, deadline=None)
@given(patch_outputs())
def test_relativistic_losses_pair_patch_by_patch(out):
    r, f = out
    a, b = losses.rpgan.d_parts(r, f)
    torch.testing.assert_close(a + b, -F.logsigmoid(r - f).mean())
    torch.testing.assert_close(losses.rpgan.g(f, real_out=r), -F.logsigmoid(f - r).mean())
    ra_r, ra_f = losses.ragan.d_parts(r, f)
    torch.testing.assert_close(ra_r, -F.logsigmoid(r - f.mean()).mean())
    torch.testing.assert_close(ra_f, -F.logsigmoid(r.mean() - f).mean())
    with pytest.raises(ValueError, match="patch by patch"):
        losses.rpgan.d_parts(r.reshape(r.shape[0], -1), torch.cat([f.reshape(f.shape[0], -1)] * 2, 1))


@settings(max_examples=30, deadline=None)
@given(patch_outputs())
def test_sample_means_variant_is_explicit_and_differs_for_nonlinear_losses(out):
    r, f = out
    mean_first = losses.on_sample_means(losses.non_saturating)
    a, _ = mean_first.d_parts(r, f, real_target=1.0, fake_target=0.0)
    torch.testing.assert_close(a, _bce(_per_sample(r), 1.0))
    torch.testing.assert_close(mean_first.g(f), _bce(_per_sample(f), 1.0))
    # Linear: the two conventions agree.
    w = losses.on_sample_means("wasserstein")
    torch.testing.assert_close(sum(w.d_parts(r, f)), sum(losses.wasserstein.d_parts(r, f)))
    # Nonlinear with patches that disagree within a sample: they differ (the default is per patch).
    spread = torch.tensor([-3.0, 3.0], dtype=r.dtype).repeat(r.shape[0], 1)
    per_patch, _ = losses.non_saturating.d_parts(spread, spread)
    first, _ = mean_first.d_parts(spread, spread)
    three = torch.tensor(3.0, dtype=r.dtype)
    torch.testing.assert_close(per_patch, (F.softplus(three) + F.softplus(-three)) / 2)
    torch.testing.assert_close(first, torch.log(torch.tensor(2.0, dtype=r.dtype)))
    with pytest.raises(ValueError, match="class logits"):
        losses.on_sample_means(losses.acgan())


def test_per_sample_targets_still_align_with_column_outputs():
    out = torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)
    t = torch.tensor([1.0, 0.9, 0.8], dtype=torch.float64)
    r, _ = losses.non_saturating.d_parts(out, out, real_target=t, fake_target=0.0, reduction="none")
    torch.testing.assert_close(r, F.binary_cross_entropy_with_logits(out[:, 0], t, reduction="none"))
    r1d, _ = losses.least_squares.d_parts(out[:, 0], out[:, 0], real_target=t, reduction="none")
    torch.testing.assert_close(r1d, 0.5 * (out[:, 0] - t) ** 2)


class _Patch(nn.Module):
    """A tiny PatchGAN: [B, 1, 8, 8] -> [B, 1, 4, 4] scores."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "least_squares"])
def test_a_patch_discriminator_trains_with_per_patch_loss_accuracy_and_penalties(loss):
    G = models.DCGANGenerator(4, size=8, channels=1, width=4, norm="none")
    gan = ganfn.GAN(G, _Patch(), latent_dim=4, loss=loss,
                    parts=[penalties.as_part(penalties.gradient_penalty(1.0)), penalties.as_part(penalties.r1(1.0))])
    state = gan.init(0)
    real = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    noise = gan.draw_noise(torch.Generator().manual_seed(1), 6)
    _, _, aux = gan.d_grads(state, real, ganfn.tree_index(noise.d, 0))
    out = gan.d_apply(state.d.params, state.d.buffers, torch.cat([real, aux.fake]))[0]
    assert out.shape == (12, 1, 4, 4)
    o_r, o_f = out[:6], out[6:]
    want = {"non_saturating": (_bce(o_r, 1.0), _bce(o_f, 0.0)),
            "hinge": (F.relu(1 - o_r).mean(), F.relu(1 + o_f).mean()),
            "least_squares": (0.5 * F.mse_loss(o_r, _full(o_r, 1.0)), 0.5 * F.mse_loss(o_f, _full(o_f, 0.0)))}[loss]
    torch.testing.assert_close((aux.d_loss_real, aux.d_loss_fake), want)
    thr = 0.5 if loss == "least_squares" else 0.0
    torch.testing.assert_close(aux.d_acc_real, (o_r > thr).float().mean())
    torch.testing.assert_close(aux.d_acc_fake, (o_f < thr).float().mean())
    assert float(aux.penalty) > 0 and torch.isfinite(aux.penalty)
    new, m = gan.train_step(state, real, noise)
    assert all(torch.isfinite(v).all() for v in m.values())
    assert not torch.equal(new.d.params["net.0.weight"], state.d.params["net.0.weight"])
