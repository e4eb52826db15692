"""FullConv2d / FullConvTranspose2d: the DCGAN end layers as matrix products equal
the convolutions they replace, alone, under vmap and in their gradients."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, vmap

from ganfn.models import DCGANDiscriminator, DCGANGenerator, FullConv2d, FullConvTranspose2d

torch.set_num_threads(1)
dims = st.integers(1, 6)


def _twin(full: nn.Module, plain_cls: type) -> nn.Module:
    """The plain torch layer with the same configuration and parameters."""
    plain = plain_cls.__new__(plain_cls)
    plain.__dict__ = copy.deepcopy(full.__dict__)
    return plain


@given(B=dims, C=dims, O=dims, k=st.integers(1, 5), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_full_conv2d_equals_conv2d_on_a_full_input(B, C, O, k, bias, seed):
    torch.manual_seed(seed)
    full = FullConv2d(C, O, k, 1, 0, bias=bias).double()
    plain = _twin(full, nn.Conv2d)
    x = torch.randn(B, C, k, k, dtype=torch.float64, requires_grad=True)
    out = full(x)
    assert out.shape == (B, O, 1, 1)
    torch.testing.assert_close(out, plain(x), rtol=1e-12, atol=1e-12)
    gx_full, = torch.autograd.grad(out.square().sum(), x)
    gx_plain, = torch.autograd.grad(plain(x).square().sum(), x)
    torch.testing.assert_close(gx_full, gx_plain, rtol=1e-12, atol=1e-12)


@given(B=dims, C=dims, O=dims, k=st.integers(1, 5), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_full_conv_transpose_equals_conv_transpose_on_a_1x1_input(B, C, O, k, bias, seed):
    torch.manual_seed(seed)
    full = FullConvTranspose2d(C, O, k, 1, 0, bias=bias).double()
    plain = _twin(full, nn.ConvTranspose2d)
    z = torch.randn(B, C, 1, 1, dtype=torch.float64, requires_grad=True)
    out = full(z)
    assert out.shape == (B, O, k, k)
    torch.testing.assert_close(out, plain(z), rtol=1e-12, atol=1e-12)
    gz_full, = torch.autograd.grad(out.square().sum(), z)
    gz_plain, = torch.autograd.grad(plain(z).square().sum(), z)
    torch.testing.assert_close(gz_full, gz_plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, shape", [
    (lambda: FullConv2d(3, 2, 4, 1, 0), (5, 3, 6, 6)),       # input larger than the kernel
    (lambda: FullConv2d(3, 2, 4, 1, 1), (5, 3, 4, 4)),       # padded
    (lambda: FullConvTranspose2d(3, 2, 4, 2, 1), (5, 3, 1, 1)),  # padded transpose
    (lambda: FullConvTranspose2d(3, 2, 4, 1, 0), (5, 3, 2, 2)),  # input larger than 1x1
])
def test_other_inputs_take_the_convolution(make, shape):
    """The matrix product is only a shortcut: elsewhere the layer is the plain one."""
    torch.manual_seed(0)
    full = make().double()
    plain = _twin(full, nn.ConvTranspose2d if isinstance(full, nn.ConvTranspose2d) else nn.Conv2d)
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.equal(full(x), plain(x))


def test_vmapped_members_and_double_backward_match_the_convolutions():
    """Per-member weights under vmap (the ensemble's case) and the input
    gradient's own gradient (a gradient penalty's case) equal the conv layers'."""
    torch.manual_seed(0)
    S, B = 3, 4
    D_full = DCGANDiscriminator(size=8, channels=1, width=4, norm="none").double()
    D_plain = copy.deepcopy(D_full)
    D_plain.net[-1] = _twin(D_full.net[-1], nn.Conv2d)
    assert type(D_full.net[-1]) is FullConv2d and type(D_plain.net[-1]) is nn.Conv2d
    params = {k: torch.stack([v.detach() + 0.01 * i for i in range(S)]) for k, v in D_full.named_parameters()}
    x = torch.randn(S, B, 1, 8, 8, dtype=torch.float64)

    def penalty(net):
        def f(p, xs):
            gx = grad(lambda x_: functional_call(net, p, (x_,)).sum())(xs)
            return gx.square().sum() + functional_call(net, p, (xs,)).sum()
        return vmap(grad(f))(params, x)

    got, want = penalty(D_full), penalty(D_plain)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=k)


def test_dcgan_uses_the_full_layers_with_unchanged_parameter_names():
    G, D = DCGANGenerator(latent_dim=5, size=8, channels=1, width=4), DCGANDiscriminator(size=8, channels=1, width=4)
    assert isinstance(G.net[0], FullConvTranspose2d) and isinstance(D.net[-1], FullConv2d)
    assert G(torch.randn(2, 5)).shape == (2, 1, 8, 8) and D(torch.randn(2, 1, 8, 8)).shape == (2,)
    # a checkpoint of the plain-conv model loads as is
    assert "net.0.weight" in G.state_dict() and f"net.{len(D.net) - 1}.weight" in D.state_dict()
