"""Tests of the class-conditional and ResNet models: shapes, the labels really
condition, purity and vmap under torch.func, init, projection, bad labels."""
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

FEW = settings(max_examples=8, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labels(b: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(k, (b,), generator=gen(seed))


def cond_pairs(k: int = 5):
    """(G, D) factories for every conditional pair, small."""
    return {
        "mlp": lambda s: (M.CondMLPGenerator(4, (1, 8, 8), k, 16, 2, generator=gen(s)),
                          M.CondMLPDiscriminator((1, 8, 8), k, 16, 2, generator=gen(s + 100))),
        "dcgan-projection": lambda s: (M.CondDCGANGenerator(4, k, 8, 1, 4, generator=gen(s)),
                                       M.ProjectionDiscriminator(8, 1, 4, k, generator=gen(s + 100))),
        "acgan": lambda s: (M.CondDCGANGenerator(4, k, 16, 1, 4, generator=gen(s)),
                            M.ACGANDiscriminator(16, 1, 4, k, generator=gen(s + 100))),
        "resnet": lambda s: (M.ResNetGenerator(4, 8, 1, 8, k, generator=gen(s)),
                             M.ResNetDiscriminator(8, 1, 8, k, generator=gen(s + 100))),
    }


def scores(out):
    return out[0] if isinstance(out, tuple) else out


@given(name=st.sampled_from(sorted(cond_pairs())), batch=st.integers(2, 5), seed=st.integers(0, 10))
@FEW
def test_conditional_shapes_and_labels_condition(name, batch, seed):
    G, D = cond_pairs()[name](seed)
    z = torch.randn(batch, 4, generator=gen(seed))
    y = labels(batch, 5, seed)
    G.eval()  # batch statistics would make samples depend on each other
    x = G(z, y)
    assert x.shape == (batch, *G.sample_shape) and x.abs().max() <= 1
    out = D(x, y)
    assert scores(out).shape == (batch,)
    if name == "acgan":
        assert out[1].shape == (batch, 5)
    # A different class for the same latent gives a different sample: the label is used.
    G.train(False)
    for m in G.modules():  # move the per-class parameters away from their equal init
        if isinstance(m, (nn.Embedding, M.ConditionalBatchNorm2d)):
            for p in m.parameters():
                p.data.add_(torch.randn(p.shape, generator=gen(seed + 1)))
    y2 = (y + 1) % 5
    assert not torch.allclose(G(z, y), G(z, y2))
    if name != "acgan":  # ACGAN's D does not read the label, by design
        for m in D.modules():
            if isinstance(m, nn.Embedding):
                m.weight.data.add_(torch.randn(m.weight.shape, generator=gen(seed + 2)))
        assert not torch.allclose(D(x, y), D(x, y2))


def test_acgan_discriminator_ignores_the_label():
    D = M.ACGANDiscriminator(8, 1, 4, 5, generator=gen(0))
    x = torch.randn(3, 1, 8, 8, generator=gen(1))
    a, b = D(x, torch.tensor([0, 1, 2])), D(x, torch.tensor([4, 4, 4]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_projection_is_an_inner_product_with_the_class_embedding():
    D = M.ProjectionDiscriminator(8, 1, 4, 6, generator=gen(0))
    x = torch.randn(4, 1, 8, 8, generator=gen(1))
    y, y2 = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])
    phi = D.body(x)
    diff = D(x, y) - D(x, y2)
    expected = ((D.embed.weight[y] - D.embed.weight[y2]) * phi).sum(1)
    torch.testing.assert_close(diff, expected)


def test_conditional_batch_norm_is_per_class_affine():
    cbn = M.ConditionalBatchNorm2d(3, 4)
    with torch.no_grad():
        cbn.gain.copy_(torch.arange(12.0).reshape(4, 3))
        cbn.shift.copy_(-torch.arange(12.0).reshape(4, 3))
    x = torch.randn(5, 3, 2, 2, generator=gen(0))
    y = torch.tensor([0, 1, 2, 3, 1])
    bn = nn.BatchNorm2d(3, affine=False)(x)
    out = cbn(x, y)
    torch.testing.assert_close(out, bn * cbn.gain[y][:, :, None, None] + cbn.shift[y][:, :, None, None])
    cbn.reset_parameters()
    assert torch.equal(cbn.gain, torch.ones(4, 3)) and torch.equal(cbn.shift, torch.zeros(4, 3))


@pytest.mark.parametrize("name", sorted(cond_pairs()))
def test_conditional_vmap_over_stacked_members_matches_each(name):
    pairs = [cond_pairs()[name](s) for s in range(2)]
    B = 4
    z = torch.randn(2, B, 4, generator=gen(3))
    y = torch.stack([labels(B, 5, 7), labels(B, 5, 8)])
    for idx in (0, 1):  # G, then D (D on fixed images)
        mods = [p[idx] for p in pairs]
        params, buffers = stack_module_state(mods)
        base = copy.deepcopy(mods[0]).to("meta")
        inp = z if idx == 0 else torch.randn(2, B, *pairs[0][1].sample_shape, generator=gen(4))
        out = vmap(lambda p, b, a, c, base=base: functional_call(base, (p, b), (a, c)))(params, buffers, inp, y)
        for i, m in enumerate(mods):
            torch.testing.assert_close(scores(out)[i], scores(m(inp[i], y[i])), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "dcgan-projection", "resnet"])
def test_gradient_penalty_through_a_conditional_discriminator(name):
    # The penalty differentiates with respect to the images only; labels stay fixed.
    _, D = cond_pairs()[name](0)
    params = {k: v.detach() for k, v in D.named_parameters()}
    x = torch.randn(3, *D.sample_shape, generator=gen(1))
    y = labels(3, 5, 2)

    def penalty(p):
        g = grad(lambda inp: functional_call(D, p, (inp, y)).sum())(x)
        return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()

    grads = grad(penalty)(params)
    assert set(grads) == set(params) and all(torch.isfinite(v).all() for v in grads.values())
    if name != "mlp":  # (piecewise-linear concat MLP: the input gradient does not see the embedding)
        assert grads["embed.weight"].abs().sum() > 0  # the projection embedding is regularised too


def test_pure_functional_call_on_conditional_models():
    G, D = cond_pairs()["dcgan-projection"](0)
    gp = {k: v.detach().clone() for k, v in G.named_parameters()}
    gb = {k: v.detach().clone() for k, v in G.named_buffers()}
    before = {k: v.clone() for k, v in gb.items()}
    z, y = torch.randn(4, 4, generator=gen(1)), labels(4, 5, 1)
    a = functional_call(G, (gp, {k: v.clone() for k, v in gb.items()}), (z, y))
    b = functional_call(G, (gp, {k: v.clone() for k, v in gb.items()}), (z, y))
    assert torch.equal(a, b) and all(torch.equal(before[k], gb[k]) for k in gb)


def test_init_depends_only_on_the_given_generator():
    for name, make in cond_pairs().items():
        with torch.random.fork_rng():
            torch.manual_seed(1)
            g1, d1 = make(3)
            torch.manual_seed(2)  # a different global RNG state changes nothing
            g2, d2 = make(3)
        for a, b in ((g1, g2), (d1, d2)):
            assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)), name


def test_sn_weight_names_cover_the_projection_embedding():
    D = M.ProjectionDiscriminator(8, 1, 4, 5)
    names = M.sn_weight_names(D)
    assert "embed.weight" in names and "head.weight" in names
    assert D.wants_spectral_norm and M.ResNetDiscriminator.wants_spectral_norm
    params = dict(D.named_parameters())
    assert set(names) == {n for n, p in params.items() if p.dim() >= 2}


def test_resnet_is_the_sngan_32_layout():
    G, D = M.ResNetGenerator(128, 32, 3, 32), M.ResNetDiscriminator(32, 3, 32)
    assert len(G.blocks) == 3  # 4 -> 8 -> 16 -> 32
    z = torch.randn(2, 128, generator=gen(0))
    assert G(z).shape == (2, 3, 32, 32)
    h = torch.randn(2, 3, 32, 32, generator=gen(1))
    sizes = []
    for b in D.blocks:
        h = b(h)
        sizes.append(h.shape[-1])
    assert sizes == [16, 8, 8, 8]  # optimised block, one down-block, two at 8x8 (Miyato et al. 2018)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in D.modules())
    assert D(G(z)).shape == (2,)


@pytest.mark.parametrize("make", [
    lambda: (M.CondMLPGenerator(4, 2, 3), "g"),
    lambda: (M.CondDCGANGenerator(4, 3, 8, 1, 4), "g"),
    lambda: (M.ProjectionDiscriminator(8, 1, 4, 3), "d"),
    lambda: (M.ResNetDiscriminator(8, 1, 8, 3), "d"),
])
def test_bad_labels_rejected(make):
    net, kind = make()
    inp = torch.randn(2, 4) if kind == "g" else torch.randn(2, *net.sample_shape)
    with pytest.raises(TypeError, match="int64"):
        net(inp, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        net(inp, torch.tensor([[0], [1]]))


def test_bad_num_classes_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        M.CondMLPGenerator(4, 2, 1)
    with pytest.raises(ValueError, match="num_classes"):
        M.ProjectionDiscriminator(8, 1, 4, 2.5)


@pytest.mark.parametrize("name, shape",
                         [("mlp", (2,)), ("mlp", (1, 8, 8)), ("dcgan", (1, 8, 8)), ("sngan", (1, 16, 16)),
                                         ("resnet", (3, 8, 8)), ("acgan", (1, 8, 8))])
def test_build_conditional(name, shape):
    G, D, latent = M.build(name, shape, width=4, num_classes=3, generator=gen(0))
    assert G.num_classes == D.num_classes == 3
    z, y = torch.randn(2, latent, generator=gen(1)), torch.tensor([0, 2])
    assert scores(D(G(z, y), y)).shape == (2,)


def test_build_unconditional_resnet_and_errors():
    G, D, latent = M.build("resnet", (3, 8, 8), width=4)
    assert latent == 128 and D(G(torch.randn(2, latent))).shape == (2,)
    with pytest.raises(ValueError, match="num_classes"):
        M.build("acgan", (1, 8, 8))
