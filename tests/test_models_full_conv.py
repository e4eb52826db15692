"""FullConv2d / FullConvTranspose2d: on small images the convolutions run as
matrix products, equal to the convolutions they replace, alone, under vmap,
under torch.compile and in their gradients (double backward included)."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, vmap

from ganfn.models import DCGANDiscriminator, DCGANGenerator, FullConv2d, FullConvTranspose2d, layers
from ganfn.models.conditional import CondDCGANGenerator
from ganfn.models.layers import DENSE_PAIRS

torch.set_num_threads(1)
dims = st.integers(1, 5)
pair = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))


def _twin(full: nn.Module) -> nn.Module:
    """The plain torch layer with the same configuration and parameters."""
    plain_cls = nn.ConvTranspose2d if isinstance(full, nn.ConvTranspose2d) else nn.Conv2d
    plain = plain_cls.__new__(plain_cls)
    plain.__dict__ = copy.deepcopy(full.__dict__)
    return plain


@contextlib.contextmanager
def convolutions_refused():
    """torch's convolutions raise inside: proves a layer took the matrix form."""
    def refuse(*a, **k):
        raise AssertionError("the convolution was called")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "conv2d", refuse)
        mp.setattr(F, "conv_transpose2d", refuse)
        yield


@pytest.fixture
def no_convolution():
    with convolutions_refused():
        yield


def _layer(transpose, C, O, kernel, stride, padding, dilation, out_pad, bias):
    if transpose:
        # torch requires output_padding < max(stride, dilation) per axis
        out_pad = tuple(min(o, max(s, d) - 1) for o, s, d in zip(out_pad, stride, dilation, strict=True))
        return FullConvTranspose2d(C, O, kernel, stride, padding, out_pad, bias=bias, dilation=dilation).double()
    return FullConv2d(C, O, kernel, stride, padding, dilation, bias=bias).double()


def _assert_same(full, plain, x):
    """Same output, input gradient and weight gradient, in float64."""
    x = x.detach().requires_grad_()
    out, ref = full(x), plain(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [x, full.weight], g)
    want = torch.autograd.grad(ref, [x, plain.weight], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@given(transpose=st.booleans(), B=dims, C=dims, O=dims, hw=pair(1, 7), kernel=pair(1, 4), stride=pair(1, 3),
       padding=pair(0, 2), dilation=pair(1, 2), out_pad=pair(0, 2), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matrix_form_equals_the_convolution(transpose, B, C, O, hw, kernel, stride, padding, dilation, out_pad, bias,
                                            seed):
    torch.manual_seed(seed)
    full = _layer(transpose, C, O, kernel, stride, padding, dilation, out_pad, bias)
    plain = _twin(full)
    x = torch.randn(B, C, *hw, dtype=torch.float64)
    try:
        plain(x)
    except RuntimeError:  # a configuration torch itself refuses (output smaller than 1x1)
        assume(False)
    _assert_same(full, plain, x)


@given(transpose=st.booleans(), hw=pair(1, 8), stride=pair(1, 2), seed=st.integers(0, 2**16))
def test_small_images_take_the_matrix_form(transpose, hw, stride, seed):
    torch.manual_seed(seed)
    full = _layer(transpose, 2, 3, (3, 3), stride, (1, 1), (1, 1), (1, 1), True)
    x = torch.randn(2, 2, *hw, dtype=torch.float64)
    ref = _twin(full)(x)
    assume(x[0, 0].numel() * ref[0, 0].numel() <= DENSE_PAIRS)
    with convolutions_refused():
        out = full(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make, shape", [
    (lambda: FullConv2d(3, 2, 4, 2, 1), (5, 3, 40, 40)),                        # image too large
    (lambda: FullConvTranspose2d(3, 2, 4, 2, 1), (5, 3, 16, 16)),               # output too large
    (lambda: FullConv2d(4, 2, 3, 1, 1, groups=2), (5, 4, 4, 4)),                # groups
    (lambda: FullConv2d(3, 2, 3, 1, 1, padding_mode="reflect"), (5, 3, 4, 4)),  # another padding mode
    (lambda: FullConv2d(3, 2, 3, 1, "same"), (5, 3, 4, 4)),                     # padding given as a string
])
def test_other_inputs_take_the_convolution(make, shape):
    """The matrix form is only a shortcut: elsewhere the layer is the plain one, bit for bit."""
    torch.manual_seed(0)
    full = make().double()
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.equal(full(x), _twin(full)(x))


def test_devices_outside_dense_devices_take_the_convolution(monkeypatch):
    """The matrix form is used only on the devices it was measured faster on."""
    torch.manual_seed(0)
    full = FullConv2d(3, 2, 4, 2, 1).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    monkeypatch.setattr(layers, "DENSE_DEVICES", set())
    assert torch.equal(full(x), _twin(full)(x))
    with convolutions_refused(), pytest.raises(AssertionError, match="the convolution was called"):
        full(x)


def test_output_size_takes_the_transposed_convolution():
    torch.manual_seed(0)
    full = FullConvTranspose2d(3, 2, 4, 2, 1).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(full(x, output_size=[9, 9]), _twin(full)(x, output_size=[9, 9]))


def test_results_are_contiguous(no_convolution):
    """A channels-last result would send the next layer down its strided kernels."""
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    for layer, inp in ((FullConv2d(3, 5, 4, 2, 1), x), (FullConvTranspose2d(3, 5, 4, 2, 1), x[:, :, :4, :4])):
        out = layer(inp)
        assert out.is_contiguous()
        g, = torch.autograd.grad(out, inp, torch.ones_like(out))
        assert g.is_contiguous()


def test_vmapped_members_and_double_backward_match_the_convolutions():
    """Per-member weights under vmap (the ensemble's case) and the input
    gradient's own gradient (a gradient penalty's case) equal the conv layers'."""
    torch.manual_seed(0)
    S, B = 3, 4
    D_full = DCGANDiscriminator(size=8, channels=1, width=4, norm="none").double()
    D_plain = copy.deepcopy(D_full)
    for i, m in enumerate(D_full.net):
        if isinstance(m, FullConv2d):
            D_plain.net[i] = _twin(m)
    params = {k: torch.stack([v.detach() + 0.01 * i for i in range(S)]) for k, v in D_full.named_parameters()}
    x = torch.randn(S, B, 1, 8, 8, dtype=torch.float64)

    def penalty(net):
        def f(p, xs):
            gx = grad(lambda x_: functional_call(net, p, (x_,)).sum())(xs)
            return gx.square().sum() + functional_call(net, p, (xs,)).sum()
        return vmap(grad(f))(params, x)

    want = penalty(D_plain)
    with convolutions_refused():
        got = penalty(D_full)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=k)


def test_generators_on_digits_run_as_matrix_products(no_convolution):
    """The default DCGAN and the conditional one on 8x8 digits call no convolution."""
    G, D = DCGANGenerator(latent_dim=5, size=8, channels=1, width=4), DCGANDiscriminator(size=8, channels=1, width=4)
    assert G(torch.randn(2, 5)).shape == (2, 1, 8, 8) and D(torch.randn(2, 1, 8, 8)).shape == (2,)
    cG = CondDCGANGenerator(latent_dim=5, num_classes=3, size=8, channels=1, width=4)
    assert cG(torch.randn(2, 5), torch.tensor([0, 2])).shape == (2, 1, 8, 8)


def test_dcgan_parameter_names_are_unchanged():
    """A checkpoint of the plain-conv model loads as is."""
    G, D = DCGANGenerator(latent_dim=5, size=8, channels=1, width=4), DCGANDiscriminator(size=8, channels=1, width=4)
    assert isinstance(G.net[0], FullConvTranspose2d) and isinstance(D.net[0], FullConv2d)
    assert "net.0.weight" in G.state_dict() and f"net.{len(D.net) - 1}.weight" in D.state_dict()
    assert all(type(m) is not nn.Conv2d and type(m) is not nn.ConvTranspose2d for m in [*G.modules(), *D.modules()])


@pytest.mark.slow
def test_compiled_matrix_form_equals_eager():
    """Under torch.compile the plan is traced as a constant (no graph break)."""
    torch.manual_seed(0)
    G = DCGANGenerator(latent_dim=5, size=8, channels=1, width=4, norm="none").double()
    D = DCGANDiscriminator(size=8, channels=1, width=4, norm="none").double()
    z = torch.randn(3, 5, dtype=torch.float64)
    f = lambda z_: D(G(z_)).sum()
    want = torch.func.grad(f)(z)
    torch._dynamo.reset()
    got = torch.compile(torch.func.grad(f), fullgraph=True)(z)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@given(transpose=st.booleans(), seed=st.integers(0, 2**16))
def test_matrix_form_step_is_pure(transpose, seed):
    """A pure gradient step through the matrix form: the parameters, the input
    and the layer are left as they were, repeat calls agree bit for bit, and no
    ``.grad`` is written."""
    from ganfn.testing import assert_pure

    torch.manual_seed(seed)
    layer = FullConvTranspose2d(3, 4, 4, 2, 1) if transpose else FullConv2d(3, 4, 4, 2, 1)
    x = torch.randn(2, 3, *((4, 4) if transpose else (8, 8)))
    params = {k: v.detach().clone() for k, v in layer.named_parameters()}

    def loss_grad(p, x_):
        return grad(lambda q: functional_call(layer, q, (x_,)).square().sum())(p)

    with convolutions_refused():  # the matrix form, not the convolution, is what is checked
        out = assert_pure(loss_grad, params, x, modules=layer)
    assert set(out) == set(params) and all(torch.isfinite(g).all() for g in out.values())


@pytest.mark.parametrize("transpose", [False, True])
def test_gradients_and_second_derivatives_pass_gradcheck(transpose):
    """Finite differences agree with the matrix form's first and second
    derivatives (a gradient penalty on D, a path-length penalty on G)."""
    torch.manual_seed(0)
    layer = (FullConvTranspose2d(2, 3, 4, 2, 1) if transpose else FullConv2d(2, 3, 4, 2, 1)).double()
    x = torch.randn(2, 2, *((3, 3) if transpose else (6, 6)), dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    f = lambda x_, w_, b_: functional_call(layer, {"weight": w_, "bias": b_}, (x_,))
    with convolutions_refused():
        assert torch.autograd.gradcheck(f, (x, w, b))
        assert torch.autograd.gradgradcheck(f, (x, w, b))
