"""R3GAN's networks (ganfn.models.r3gan): shapes, fix-up initialisation, no
normalisation and no dead parameters, purity, and vmapped members equal to
their single runs.

The equivalence these tests prove: with Adam (the paper's optimizer, betas
(0, 0.9)), RpGAN and R1 + R2, ``vmap(train_step)`` over 3 stacked members
gives every member's state and metrics to rtol 1e-4 / atol 1e-5 of its own
single run after 2 steps (``assert_vmap_equivalent``), and no parameter drifts
by more than 1e-5 (``member_drift``)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import optim, penalties
from ganfn.models.r3gan import (
    R3GANDiscriminator,
    R3GANGenerator,
    _Block,
    bilinear_down,
    bilinear_up,
    r3gan,
)
from ganfn.testing import assert_pure, assert_vmap_equivalent
from ganfn.testing.drift import assert_no_member_drift, dead_parameters

torch.set_num_threads(1)
FEW = settings(max_examples=8, deadline=None)
TINY = {"width": 8, "blocks": 1, "group_channels": 4}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perturbed(net: nn.Module, seed: int) -> nn.Module:
    """The net with every zero-initialised weight (the branches' last convs) made
    non-zero, as after the first update: then every parameter gets a gradient."""
    g = gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


@given(size=st.sampled_from([8, 16, 32]), channels=st.sampled_from([1, 3]), batch=st.integers(1, 4),
       blocks=st.integers(1, 2), classes=st.sampled_from([None, 3]), seed=st.integers(0, 100))
@FEW
def test_shapes_and_conditioning(size, channels, batch, blocks, classes, seed):
    G, D = r3gan(size, channels, latent_dim=5, width=8, blocks=blocks, group_channels=4, num_classes=classes,
                 generator=gen(seed))
    assert G.sample_shape == D.sample_shape == (channels, size, size)
    z = torch.randn(batch, 5, generator=gen(seed + 1))
    y = None if classes is None else torch.randint(classes, (batch,), generator=gen(seed))
    x = G(z) if y is None else G(z, y)
    assert x.shape == (batch, channels, size, size) and torch.isfinite(x).all()
    out = D(x) if y is None else D(x, y)
    assert out.shape == (batch,) and torch.isfinite(out).all()
    if y is not None:  # the label is used, in G and in D
        other = (y + 1) % classes
        assert not torch.allclose(G(z, other), x) and not torch.allclose(D(x, other), out)


def test_the_stages_and_widths():
    G, D = r3gan(64, 3, width=[16, 16, 8, 8, 4], blocks=2, group_channels=4)
    assert len(G.stages) == len(D.stages) == 5  # 4, 8, 16, 32, 64
    assert sum(isinstance(m, _Block) for m in G.modules()) == 10
    h = torch.randn(2, 3, 64, 64, generator=gen(0))
    assert D(h).shape == (2,) and G(torch.randn(2, 64)).shape == (2, 3, 64, 64)
    grouped = [m for m in G.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert grouped and all(m.in_channels // m.groups == 4 for m in grouped)


def test_no_normalisation_no_conv_bias():
    G, D = r3gan(16, 3, **TINY)
    for net in (G, D):
        assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) for m in net.modules())
        assert all(m.bias is None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_fixup_init_blocks_are_identity_and_branch_gain_scales_with_depth():
    G, D = r3gan(16, 3, width=64, blocks=1, group_channels=16, generator=gen(0))
    x = torch.randn(2, 64, 8, 8, generator=gen(1))
    for block in [m for net in (G, D) for m in net.modules() if isinstance(m, _Block)]:
        assert torch.equal(block.conv3.weight, torch.zeros_like(block.conv3.weight))
        assert torch.equal(block(x), x)
    # conv1's std is gain * L ** -1/4 / sqrt(fan_in): 3 blocks in G at 16 px with 1 per stage, 6 with 2
    G2, _ = r3gan(16, 3, width=64, blocks=2, group_channels=16, generator=gen(0))
    s1, s2 = (net.stages[1][-1].conv1.weight.std().item() for net in (G, G2))
    assert s1 / s2 == pytest.approx((6 / 3) ** 0.25, rel=0.05)
    assert s1 == pytest.approx(2**0.5 / 1.04**0.5 * 3**-0.25 / 64**0.5, rel=0.05)


def test_init_uses_only_the_given_generator():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        a = r3gan(16, 3, **TINY, generator=gen(3))
        torch.manual_seed(2)  # a different global RNG state changes nothing
        b = r3gan(16, 3, **TINY, generator=gen(3))
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(x.parameters(), y.parameters(), strict=True))
    c, _ = r3gan(16, 3, **TINY, generator=gen(4))
    assert not torch.equal(c.basis.weight, a[0].basis.weight)


@pytest.mark.parametrize("classes", [None, 3])
def test_no_parameter_has_a_zero_true_gradient(classes):
    G, D = r3gan(16, 3, latent_dim=4, **TINY, num_classes=classes, generator=gen(0))
    y = () if classes is None else (torch.tensor([0, 1, 2, 1]),)
    assert dead_parameters(perturbed(G, 1), torch.randn(4, 4, generator=gen(2)), *y) == []
    assert dead_parameters(perturbed(D, 1), torch.randn(4, 3, 16, 16, generator=gen(2)), *y) == []



def test_bilinear_resampling():
    x = torch.randn(2, 3, 8, 8, generator=gen(0), dtype=torch.float64)
    assert bilinear_up(x).shape == (2, 3, 16, 16) and bilinear_down(x).shape == (2, 3, 4, 4)
    const = torch.full((1, 2, 8, 8), 1.5, dtype=torch.float64)
    assert torch.allclose(bilinear_down(const), torch.full((1, 2, 4, 4), 1.5, dtype=torch.float64))
    # interior output pixel (1, 1) is the [1, 3, 3, 1]/8 triangle filter over input rows/cols 1..4
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) / 8
    want = (x[:, :, 1:5, 1:5] * taps[:, None] * taps[None, :]).sum((2, 3))
    torch.testing.assert_close(bilinear_down(x)[:, :, 1, 1], want)


@pytest.mark.parametrize("bad, match", [
    ({"image_size": 12}, "power of two"), ({"image_size": 4}, "power of two"),
    ({"width": [8, 8]}, "one per stage"), ({"group_channels": 3}, "multiple of group_channels"),
])
def test_bad_arguments_rejected(bad, match):
    kw = dict(image_size=16, channels=3, **TINY) | bad
    with pytest.raises(ValueError, match=match):
        r3gan(**kw)


def _gan(classes=None):
    G, D = r3gan(8, 3, latent_dim=4, **TINY, num_classes=classes)
    parts = [penalties.as_part(penalties.r1(0.05)), penalties.as_part(penalties.r2(0.05))]
    return ganfn.GAN(G, D, latent_dim=4, loss="rpgan", g_optimizer=optim.adam(2e-4, (0.0, 0.9)),
                     d_optimizer=optim.adam(2e-4, (0.0, 0.9)), parts=parts, num_classes=classes)


@pytest.mark.parametrize("classes", [None, 3])
def test_vmapped_members_equal_their_single_runs(classes):
    assert_vmap_equivalent(_gan(classes), [0, 1, 2], steps=2, batch_size=4)


def test_no_parameter_drifts_under_vmap_with_adam():
    assert_no_member_drift(_gan(), [0, 1, 2], steps=2, atol=1e-5)


def test_train_step_is_pure():
    gan = _gan()
    state = gan.init(0)
    real = torch.randn(4, 3, 8, 8, generator=gen(1))
    assert_pure(gan.train_step, state, real, gan.draw_noise(gen(2), 4))


def test_classes_are_checked():
    G, D = r3gan(8, 3, **TINY, num_classes=3)
    assert isinstance(G, R3GANGenerator) and isinstance(D, R3GANDiscriminator)
    with pytest.raises(TypeError, match="int64"):
        D(torch.randn(2, 3, 8, 8), torch.tensor([0.0, 1.0]))


def test_gan_init_keeps_the_fixup_scheme_and_seeds_differ():
    # GAN.init re-draws every submodule by its reset_parameters(): the branches' last convs stay zero
    gan = _gan()
    a, b, c = gan.init(0), gan.init(0), gan.init(1)
    for net in ("g", "d"):
        pa, pb, pc = (getattr(s, net).params for s in (a, b, c))
        last = [k for k in pa if k.endswith("conv3.weight")]
        assert last and all(torch.equal(pa[k], torch.zeros_like(pa[k])) for k in last)
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
        assert any(not torch.equal(pa[k], pc[k]) for k in pa)
        first = [k for k in pa if k.endswith("conv1.weight")]
        assert all(pa[k].abs().sum() > 0 for k in first)


def test_conditional_nets_need_labels():
    G, D = r3gan(8, 3, **TINY, num_classes=3)
    with pytest.raises(TypeError, match="class-conditional"):
        G(torch.randn(2, 64))
    with pytest.raises(TypeError, match="class-conditional"):
        D(torch.randn(2, 3, 8, 8))
