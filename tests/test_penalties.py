"""ganfn.penalties: closed forms on linear critics, per-sample norms, clipping bounds, errors."""
from __future__ import annotations

import pytest
import torch
from conftest import small_gan_modules
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import penalties
from ganfn.testing import assert_penalty_invariants
from ganfn.testing import strategies as gst

dims = st.integers(1, 6)


@st.composite
def linear_critic_cases(draw):
    """(w, b, real, fake, eps) in float64 for a linear critic D(x) = w.x + b."""
    d = draw(dims)
    w = draw(gst.batches((d,), batch_size=1, dtype=torch.float64, scale=st.floats(0.0, 5.0)))[0]
    b = draw(st.floats(-10, 10))
    real = draw(gst.batches((d,), dtype=torch.float64, scale=3.0))
    fake = draw(gst.batches((d,), batch_size=real.shape[0], dtype=torch.float64, scale=3.0))
    eps = torch.rand(real.shape[0], generator=torch.Generator().manual_seed(draw(gst.seeds())), dtype=torch.float64)
    return w, b, real, fake, eps


def lin(w, b):
    return lambda x: x @ w + b


@given(linear_critic_cases(), gst.penalty_weights())
def test_gp_on_linear_critic_is_weight_times_norm_minus_one_squared(case, weight):
    w, b, real, fake, eps = case
    val = penalties.gradient_penalty(weight).term(lin(w, b), real, fake, eps, torch.tensor(weight, dtype=torch.float64))
    expected = weight * (torch.sqrt(w.dot(w) + 1e-12) - 1) ** 2  # the 1e-12 keeps grad finite at w = 0
    torch.testing.assert_close(val, expected, rtol=1e-9, atol=1e-12)


@given(linear_critic_cases(), gst.penalty_weights())
def test_r1_and_r2_on_linear_critic_are_half_gamma_norm_squared(case, gamma):
    w, b, real, fake, eps = case
    g = torch.tensor(gamma, dtype=torch.float64)
    expected = gamma / 2 * (w.dot(w) + 1e-12)
    torch.testing.assert_close(penalties.r1(gamma).term(lin(w, b), real, fake, eps, g), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(penalties.r2(gamma).term(lin(w, b), real, fake, eps, g), expected, rtol=1e-9, atol=1e-12)


@given(linear_critic_cases(), gst.penalty_weights())
def test_gp_zero_for_unit_norm_critic(case, weight):
    w, b, real, fake, eps = case
    if w.norm() == 0:
        w = torch.ones_like(w)
    # Rescale before normalising: a w of subnormal entries (scale ~1e-310) has
    # lost its low bits, and w / ||w|| would miss unit norm by ~1e-5.
    w = w / w.abs().max()
    u = w / w.norm()
    val = penalties.gradient_penalty(weight).term(lin(u, b), real, fake, eps, torch.tensor(weight, dtype=torch.float64))
    assert abs(val.item()) < 1e-12 * max(1.0, weight)


@given(st.sampled_from(["gp", "r1", "r2", "weight_clip"]), gst.penalty_weights(10.0, allow_zero=False), gst.seeds(1000),
       st.sampled_from([(3,), (2, 2), (1, 3, 3)]))
def test_invariants_hold_for_generated_weights_and_shapes(name, weight, seed, shape):
    assert_penalty_invariants(name, weight=weight, seed=seed, sample_shape=shape, batch_size=3)


@given(gst.seeds(), gst.penalty_weights())
def test_gp_through_gan_equals_closed_form(seed, weight):
    """The GAN wires the penalty on the interpolates: a linear D gives the closed form."""
    G = nn.Linear(3, 2)
    D = nn.Linear(2, 1)
    gan = ganfn.GAN(G, D, latent_dim=3, loss="wasserstein", parts=[penalties.gradient_penalty(weight)])
    state = gan.init(seed % 1000, gp_weight=weight)
    B = 4
    noise = gan.draw_noise(torch.Generator().manual_seed(seed), B)
    real = torch.randn(B, 2, generator=torch.Generator().manual_seed(seed + 1))
    _, _, aux = gan.d_grads(state, real, ganfn.tree_index(noise.d, 0))
    w = state.d.params["weight"].reshape(-1).double()
    torch.testing.assert_close(aux.penalty.double(), weight * (w.norm() - 1) ** 2, rtol=1e-4, atol=1e-6)


@given(st.floats(1e-3, 0.5), gst.seeds(1000))
def test_weight_clip_bounds_every_d_weight_after_a_step(c, seed):
    G, D = small_gan_modules()
    gan = ganfn.GAN(G, D, latent_dim=3, loss="wasserstein", parts=[penalties.weight_clip(0.01)],
                    d_optimizer=ganfn.optim.sgd(1.0))  # a large step pushes weights far out
    state = gan.init(seed, clip_value=c)
    noise = gan.draw_noise(torch.Generator().manual_seed(seed), 8)
    state, _ = gan.train_step(state, torch.randn(8, 2) * 10, noise)
    for k, v in state.d.params.items():
        assert v.abs().max().item() <= c * (1 + 1e-6), k
    assert max(v.abs().max().item() for v in state.d.params.values()) >= c * (1 - 1e-6)  # the clip was active


def test_errors():
    with pytest.raises(ValueError, match="unknown penalty 'gpp'"):
        penalties.get("gpp")
    with pytest.raises(ValueError, match="gradient_penalty weight"):
        penalties.gradient_penalty(-1.0)
    with pytest.raises(ValueError, match="finite"):
        penalties.r1(float("nan"))
    with pytest.raises(ValueError, match="> 0"):
        penalties.weight_clip(0.0)
    G, D = small_gan_modules(d_norm=nn.BatchNorm1d(8))
    with pytest.raises(ValueError, match="batch-normalisation"):
        ganfn.GAN(G, D, latent_dim=3, parts=[penalties.gradient_penalty()])


def test_input_grad_norms_are_per_sample():
    x = torch.randn(5, 3, dtype=torch.float64)
    scales = torch.arange(1.0, 6.0, dtype=torch.float64)
    # D(x_i) = s_i * sum(x_i): each sample has its own gradient norm s_i * sqrt(3).
    norms = penalties.input_grad_norms(lambda z: (z * scales[:, None]).sum(1), x)
    torch.testing.assert_close(norms, scales * 3**0.5)
