"""Tests of ganfn.models: shapes, purity under torch.func, vmap over stacks, init."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

import ganfn.models as M

torch.set_num_threads(1)

FEW = settings(max_examples=10, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------- shapes -----


@given(
    size=st.sampled_from([8, 16, 32, 64]),
    channels=st.sampled_from([1, 3]),
    width=st.sampled_from([2, 4]),
    batch=st.integers(1, 4),
    latent=st.integers(1, 12),
    norm=st.sampled_from(["batch", "layer", "none"]),
)
@FEW
def test_conv_model_shapes(size, channels, width, batch, latent, norm):
    g = M.DCGANGenerator(latent, size, channels, width, norm, generator=gen(0))
    x = g(torch.randn(batch, latent, generator=gen(1)))
    assert x.shape == (batch, channels, size, size) and g.sample_shape == (channels, size, size)
    assert x.abs().max() <= 1  # tanh output
    for d in (M.DCGANDiscriminator(size, channels, width, norm, generator=gen(2)),
              M.SNDiscriminator(size, channels, width, generator=gen(3))):
        out = d(x)
        assert out.shape == (batch,) and torch.isfinite(out).all()


@given(
    out_shape=st.sampled_from([2, 5, (1, 8, 8), (3, 4, 4)]),
    hidden=st.integers(1, 16),
    depth=st.integers(1, 3),
    batch=st.integers(1, 5),
    out_act=st.sampled_from(["tanh", "sigmoid", None]),
)
@FEW
def test_mlp_shapes(out_shape, hidden, depth, batch, out_act):
    g = M.MLPGenerator(7, out_shape, hidden, depth, out_act, generator=gen(0))
    d = M.MLPDiscriminator(out_shape, hidden, depth, generator=gen(1))
    x = g(torch.randn(batch, 7, generator=gen(2)))
    shape = (out_shape,) if isinstance(out_shape, int) else out_shape
    assert x.shape == (batch, *shape)
    if out_act == "tanh":
        assert x.abs().max() <= 1
    if out_act == "sigmoid":
        assert x.min() >= 0 and x.max() <= 1
    assert d(x).shape == (batch,)
    # depth hidden layers: depth + 1 Linear layers in each network.
    assert sum(isinstance(m, nn.Linear) for m in g.modules()) == depth + 1
    assert sum(isinstance(m, nn.Linear) for m in d.modules()) == depth + 1


def test_mlp_matches_reference_003_layout():
    g = M.MLPGenerator(100, (1, 28, 28))
    assert issubclass(M.Linear, nn.Linear)  # same parameters and state_dict
    assert [type(m) for m in g.net] == [M.Linear, nn.ReLU, M.Linear, nn.Tanh]
    d = M.MLPDiscriminator((1, 28, 28))
    assert [type(m) for m in d.net] == [M.Linear, nn.LeakyReLU, M.Linear]  # logits, no sigmoid
    assert g.net[0].out_features == 128 and g.net[2].out_features == 784


def test_dcgan64_is_the_classic_architecture():
    g = M.DCGANGenerator(100, 64, 3, 64)
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 4
    d = M.DCGANDiscriminator(64, 3, 64, norm="batch")
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3


def test_width_scales_models():
    assert n_params(M.DCGANGenerator(16, 32, 3, 16)) > 3 * n_params(M.DCGANGenerator(16, 32, 3, 8))
    assert n_params(M.DCGANDiscriminator(32, 3, 16)) > 3 * n_params(M.DCGANDiscriminator(32, 3, 8))


def test_no_normalisation_in_sn_discriminator():
    d = M.SNDiscriminator(32, 3, 8)
    assert d.wants_spectral_norm
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) for m in d.modules())
    assert not getattr(M.DCGANDiscriminator, "wants_spectral_norm", False)
    names = M.sn_weight_names(d)
    params = dict(d.named_parameters())
    assert names and all(params[n].dim() >= 2 for n in names)
    # every weight matrix / kernel is covered, nothing else
    assert set(names) == {n for n, p in params.items() if p.dim() >= 2}


@pytest.mark.parametrize("bad", [0, 4, 12, 100])
def test_bad_sizes_rejected(bad):
    with pytest.raises(ValueError, match="power of two"):
        M.DCGANGenerator(8, bad)
    with pytest.raises(ValueError, match="power of two"):
        M.SNDiscriminator(bad)


def test_bad_options_rejected():
    with pytest.raises(ValueError, match="norm"):
        M.DCGANDiscriminator(8, norm="spectral")
    with pytest.raises(ValueError, match="out_act"):
        M.MLPGenerator(2, 2, out_act="relu")
    with pytest.raises(ValueError, match="depth"):
        M.MLPDiscriminator(2, depth=0)


# ----------------------------------------------------------------- init -----


def test_dcgan_init_statistics_and_determinism():
    g = M.DCGANGenerator(100, 32, 3, 32, generator=gen(0))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert w.mean().abs() < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.05)
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01) and bn.std().item() == pytest.approx(0.02, rel=0.2)
    assert all(torch.all(m.bias == 0) for m in g.modules() if isinstance(m, nn.BatchNorm2d))
    same = M.DCGANGenerator(100, 32, 3, 32, generator=gen(0))
    other = M.DCGANGenerator(100, 32, 3, 32, generator=gen(1))
    sd, sd_same, sd_other = g.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd_same[k]) for k in sd)
    assert not torch.equal(sd["net.0.weight"], sd_other["net.0.weight"])


def test_dcgan_init_uses_only_the_given_generator():
    d = M.DCGANDiscriminator(16, 1, 4, norm="none")
    state = torch.get_rng_state()
    M.dcgan_init(d, gen(5))
    assert torch.equal(state, torch.get_rng_state())
    a = copy.deepcopy(d)
    M.dcgan_init(d, gen(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), d.parameters(), strict=True))
    assert all(torch.all(m.bias == 0) for m in d.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)


def test_default_init_matches_torch_bounds():
    d = M.MLPDiscriminator(50, hidden=40, generator=gen(0))
    lin = d.net[0]
    bound = 1 / 50**0.5  # kaiming_uniform(a=sqrt 5) and the bias both give U(+-1/sqrt(fan_in))
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
    assert lin.bias.abs().max() <= bound
    e = M.MLPDiscriminator(50, hidden=40)
    state = torch.get_rng_state()
    M.default_init(e, gen(0))
    assert torch.equal(state, torch.get_rng_state())  # only the given generator is used
    assert all(torch.equal(p, q) for p, q in zip(d.parameters(), e.parameters(), strict=True))


# -------------------------------------------------------- torch.func use ----


def no_batchnorm_discriminators():
    return [
        lambda s: M.MLPDiscriminator((1, 8, 8), 16, 2, generator=gen(s)),
        lambda s: M.DCGANDiscriminator(8, 1, 4, "none", generator=gen(s)),
        lambda s: M.DCGANDiscriminator(16, 1, 4, "layer", generator=gen(s)),
        lambda s: M.SNDiscriminator(8, 1, 4, generator=gen(s)),
    ]


@pytest.mark.parametrize("make", no_batchnorm_discriminators())
def test_discriminator_functional_call_and_vmap_over_stacked_params(make):
    members = [make(s) for s in range(3)]
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x = torch.randn(3, 5, *members[0].sample_shape, generator=gen(9))

    def f(p, b, xi):
        return functional_call(base, (p, b), (xi,))

    out = vmap(f)(params, buffers, x)
    assert out.shape == (3, 5)
    for i, m in enumerate(members):
        torch.testing.assert_close(out[i], m(x[i]))
    # Same data for every member (in_dims None) also works.
    shared = vmap(f, in_dims=(0, 0, None))(params, buffers, x[0])
    for i, m in enumerate(members):
        torch.testing.assert_close(shared[i], m(x[0]))
    assert not torch.allclose(shared[0], shared[1])  # members really differ


@pytest.mark.parametrize("make", no_batchnorm_discriminators())
def test_discriminator_supports_gradient_penalty(make):
    # WGAN-GP needs per-sample input gradients and a gradient of their norm
    # with respect to the parameters (a grad inside a grad).
    d = make(0)
    params = {k: v.detach() for k, v in d.named_parameters()}
    x = torch.randn(4, *d.sample_shape, generator=gen(1))

    def penalty(p):
        def score(xi):
            return functional_call(d, p, (xi.unsqueeze(0),)).squeeze(0)

        g = vmap(grad(score))(x)
        return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()

    grads = grad(penalty)(params)
    assert set(grads) == set(params)
    assert all(torch.isfinite(v).all() for v in grads.values())
    assert any(v.abs().sum() > 0 for v in grads.values())


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_generator_vmap_over_stacked_params(norm):
    members = [M.DCGANGenerator(6, 8, 1, 4, norm, generator=gen(s)) for s in range(2)]
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    z = torch.randn(2, 5, 6, generator=gen(3))
    out = vmap(lambda p, b, zi: functional_call(base, (p, b), (zi,)))(params, buffers, z)
    assert out.shape == (2, 5, 1, 8, 8)
    for i, m in enumerate(members):
        torch.testing.assert_close(out[i], m(z[i]))


def test_functional_call_is_pure_for_batchnorm_free_models():
    d = M.DCGANDiscriminator(8, 1, 4, "layer", generator=gen(0))
    params = {k: v.detach().clone() for k, v in d.named_parameters()}
    x = torch.randn(3, 1, 8, 8, generator=gen(1))
    a = functional_call(d, params, (x,))
    b = functional_call(d, params, (x,))
    assert torch.equal(a, b)
    shifted = {k: v + 0.1 for k, v in params.items()}
    assert not torch.allclose(functional_call(d, shifted, (x,)), a)


# ------------------------------------------------------------- registry -----


@pytest.mark.parametrize(
    "name, shape",
    [("mlp", (2,)), ("mlp", (1, 8, 8)), ("dcgan", (1, 8, 8)), ("dcgan", (1, 16, 16)),
     ("dcgan", (3, 32, 32)), ("sngan", (3, 32, 32))],
)
def test_build(name, shape):
    g, d, latent = M.build(name, shape, width=4, generator=gen(0))
    assert g.latent_dim == latent
    x = g(torch.randn(3, latent, generator=gen(1)))
    assert x.shape == (3, *shape) and d(x).shape == (3,)
    if name == "sngan":
        assert d.wants_spectral_norm
    if name == "dcgan":
        # default D has no batch statistics
        assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    # toy data is unbounded, images are in [-1, 1]
    assert isinstance(g.net[-1], nn.Identity if shape == (2,) else nn.Tanh)
    g2, _, _ = M.build(name, shape, width=4, generator=gen(0))
    assert all(torch.equal(p, q) for p, q in zip(g.parameters(), g2.parameters(), strict=True))


def test_build_errors():
    with pytest.raises(ValueError, match="unknown model 'vae'.*mlp"):
        M.build("vae", (2,))
    with pytest.raises(ValueError, match="square images"):
        M.build("dcgan", (2,))
    assert M.build("dcgan", (1, 16, 16), latent_dim=7)[2] == 7
