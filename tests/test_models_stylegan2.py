"""StyleGAN2's networks (ganfn.models.stylegan2): the modulated convolution
equals its per-sample-weight definition, the noise comes only from the latent,
minibatch standard deviation, and vmapped members equal their single runs.

The equivalence these tests prove: with Adam (betas (0, 0.99)), the
non-saturating loss and R1, ``vmap(train_step)`` over 3 stacked members gives
every member's state and metrics to rtol 1e-4 / atol 1e-5 of its own single
run after 2 steps (``assert_vmap_equivalent``), and no parameter drifts by more
than 1e-5 (``member_drift``); the same for the plain ("orig") D."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import optim, penalties
from ganfn.models.stylegan2 import MinibatchStd, _ModConv, stylegan2
from ganfn.testing import assert_pure, assert_vmap_equivalent
from ganfn.testing.drift import assert_no_member_drift, dead_parameters

torch.set_num_threads(1)
FEW = settings(max_examples=8, deadline=None)
TINY = {"z_dim": 6, "w_dim": 6, "mapping_layers": 2, "width": 4}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(size=st.sampled_from([8, 16, 32]), channels=st.sampled_from([1, 3]), batch=st.integers(1, 5),
       residual=st.booleans(), seed=st.integers(0, 100))
@FEW
def test_shapes(size, channels, batch, residual, seed):
    G, D = stylegan2(size, channels, **TINY, residual=residual, generator=gen(seed))
    assert G.sample_shape == D.sample_shape == (channels, size, size)
    assert G.latent_dim == 6 + sum(h * w for _, h, w in G.noise_shapes)
    x = G(torch.randn(batch, G.latent_dim, generator=gen(seed + 1)))
    assert x.shape == (batch, channels, size, size) and torch.isfinite(x).all()
    out = D(x)
    assert out.shape == (batch,) and torch.isfinite(out).all()


@given(batch=st.integers(1, 4), c_in=st.integers(1, 5), c_out=st.integers(1, 5), kernel=st.sampled_from([1, 3]),
       up=st.booleans(), demod=st.booleans(), seed=st.integers(0, 1000))
@FEW
def test_modulated_conv_equals_per_sample_weights(batch, c_in, c_out, kernel, up, demod, seed):
    torch.manual_seed(seed)
    layer = _ModConv(c_in, c_out, kernel, 3, up=up, demod=demod, noise=False).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p, generator=gen(seed))
    x = torch.randn(batch, c_in, 4, 4, dtype=torch.float64, generator=gen(seed + 1))
    w = torch.randn(batch, 3, dtype=torch.float64, generator=gen(seed + 2))
    # the definition: each sample's weight w[o, i] * s[i], demodulated per output channel, as a grouped conv
    s = layer.affine(w)
    weight = layer.weight / (c_in * kernel * kernel) ** 0.5
    per_sample = weight[None] * s[:, None, :, None, None]  # [B, O, I, k, k]
    if demod:
        per_sample = per_sample * torch.rsqrt(per_sample.square().sum((2, 3, 4), keepdim=True) + 1e-8)
    xi = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) if up else x
    ref = F.conv2d(xi.reshape(1, -1, *xi.shape[2:]), per_sample.reshape(-1, c_in, kernel, kernel),
                   padding=kernel // 2, groups=batch).reshape(batch, c_out, *xi.shape[2:])
    ref = ref + layer.bias[None, :, None, None]
    ref = F.leaky_relu(ref, 0.2) * 2**0.5 if demod else ref
    torch.testing.assert_close(layer(x, w), ref)


def test_noise_comes_from_the_latent_only():
    G, _ = stylegan2(8, 3, **TINY, generator=gen(0))
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, _ModConv) and m.noise_strength is not None:
                m.noise_strength.fill_(0.5)
    z = torch.randn(2, G.latent_dim, generator=gen(1))
    state = torch.get_rng_state()
    a, b = G(z), G(z)
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())
    other = z.clone()
    other[:, G.z_dim:] = torch.randn(2, G.noise_numel, generator=gen(2))
    assert not torch.allclose(G(other), a)  # same z, new noise: a different image
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, _ModConv) and m.noise_strength is not None:
                m.noise_strength.zero_()
    assert torch.equal(G(other), G(z))  # noise strength 0: the noise part is unused


def test_wrong_latent_size_is_rejected():
    G, _ = stylegan2(8, 3, **TINY)
    with pytest.raises(ValueError, match=f"latents \\[B, {G.latent_dim}\\].*z_dim 6"):
        G(torch.randn(2, 6))


def _mbstd_reference(x, group):
    """Per sample: the std over its group's samples, averaged over channels and pixels."""
    b = x.shape[0]
    g = torch.gcd(torch.tensor(group), torch.tensor(b)).item()
    out = []
    for n in range(b):
        members = x[[j for j in range(b) if j % (b // g) == n % (b // g)]]
        std = (members.var(0, unbiased=False) + 1e-8).sqrt().mean()
        out.append(torch.cat([x[n], std.expand(1, *x.shape[2:])]))
    return torch.stack(out)


@given(batch=st.integers(1, 9), group=st.integers(1, 6), seed=st.integers(0, 100))
@FEW
def test_minibatch_std_matches_its_definition(batch, group, seed):
    x = torch.randn(batch, 3, 2, 2, dtype=torch.float64, generator=gen(seed))
    torch.testing.assert_close(MinibatchStd(group)(x), _mbstd_reference(x, group))


def test_minibatch_std_groups_do_not_interact():
    x = torch.randn(8, 4, 3, 3, generator=gen(0))
    y = x.clone()
    y[1] += 5.0  # sample 1 is in group {1, 3, 5, 7} (groups of 4 in a batch of 8)
    a, b = MinibatchStd(4)(x), MinibatchStd(4)(y)
    assert torch.equal(a[0::2], b[0::2]) and not torch.allclose(a[3], b[3])
    with pytest.raises(ValueError, match="feature slices"):
        MinibatchStd(4, features=3)(x)


@pytest.mark.parametrize("residual", [True, False])
def test_no_parameter_has_a_zero_true_gradient(residual):
    G, D = stylegan2(8, 3, **TINY, residual=residual, generator=gen(0))
    z = torch.randn(4, G.latent_dim, generator=gen(1))
    assert dead_parameters(G, z) == []
    assert dead_parameters(D, torch.randn(4, 3, 8, 8, generator=gen(2))) == []


def test_init_uses_only_the_given_generator():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        a = stylegan2(8, 3, **TINY, generator=gen(3))
        torch.manual_seed(2)
        b = stylegan2(8, 3, **TINY, generator=gen(3))
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(x.parameters(), y.parameters(), strict=True))


@pytest.mark.parametrize("bad, match", [({"image_size": 12}, "power of two"),
                                        ({"width": [4, 4, 4]}, "one per resolution")])
def test_bad_arguments_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        stylegan2(**({"image_size": 8, "channels": 3} | TINY | bad))


def _gan(residual=True):
    G, D = stylegan2(8, 3, **TINY, residual=residual)
    return ganfn.GAN(G, D, latent_dim=G.latent_dim, g_optimizer=optim.adam(2.5e-3, (0.0, 0.99)),
                     d_optimizer=optim.adam(2.5e-3, (0.0, 0.99)), parts=[penalties.as_part(penalties.r1(0.01))])


@pytest.mark.parametrize("residual", [True, False])
def test_vmapped_members_equal_their_single_runs(residual):
    assert_vmap_equivalent(_gan(residual), [0, 1, 2], steps=2, batch_size=4)


def test_no_parameter_drifts_under_vmap_with_adam():
    assert_no_member_drift(_gan(), [0, 1, 2], steps=2, atol=1e-5)


def test_train_step_is_pure():
    gan = _gan()
    real = torch.randn(4, 3, 8, 8, generator=gen(1))
    assert_pure(gan.train_step, gan.init(0), real, gan.draw_noise(gen(2), 4))


def test_gan_init_redraws_stylegan2_weights_per_seed():
    gan = _gan()
    a, b, c = gan.init(0), gan.init(0), gan.init(1)
    for net in ("g", "d"):
        pa, pb, pc = (getattr(s, net).params for s in (a, b, c))
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
        assert all(not torch.equal(pa[k], pc[k]) for k in pa if k.endswith("weight"))
    styles = [k for k in a.g.params if k.endswith("affine.bias")]
    assert styles and all(torch.equal(a.g.params[k], torch.ones_like(a.g.params[k])) for k in styles)
