"""A stride-1 convolution that, under ``torch.func.vmap`` with per-member
weights, runs one convolution per member instead of one folded grouped
convolution. Opt-in: no ganfn model uses it, because in a whole R3GAN-32 step
it did not pay (below).

vmap's batching rule for ``conv2d`` with a batched weight folds the S members
into the groups: one convolution with ``S * groups`` groups over ``[B, S * C,
H, W]``. Its forward runs at the speed of S separate convolutions on the CPU,
but the backward kernels (input and weight gradients) of a convolution with
many groups run well below that rate: for R3GAN's 3x3 bottleneck (32 channels,
groups of 16, batch 8, 32x32, S = 4) the folded backward took 17.6 ms against
11.1 ms for four separate ones (``bench/README_models.md``). R1 and R2 make
it worse: they differentiate through D's input gradient, so each convolution
runs its backward kernels twice more.

:func:`member_conv2d` is the convolution, its input gradient (a transposed
convolution) and its weight gradient as three ``torch.autograd.Function`` s,
each differentiable through the other two (so gradients of any order exist,
R1 and R2 included), each with a ``vmap`` rule that loops over the members,
or folds them into the batch where the weight is shared. Outside eager vmap
(single runs, ``torch.compile``) the layer is ``F.conv2d`` exactly.

Measured (CPU, 1 thread, S = 4; ``bench/README_models.md``): alone, a 3x3
grouped convolution with an R1-style double backward at batch 32, 32x32, ran
241 ms per member-looped step against 321 ms folded (a loop of single runs:
234 ms). Inside R3GAN-32's vmapped training step (width 16, batch 32), the
same layers made the step slower, 3.0 s against 2.8 s: there the activations
already sit in vmap's [B, S] layout, which the folded convolution reads as it
is, while the per-member form reads strided slices and pays a stack copy per
call and about 1 ms of torch.func Python per call.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .linear import _interpreters, _under_vmap

__all__ = ["MEMBER_MIN_MACS", "member_conv2d"]

# Per-member multiply-adds below which a convolution keeps vmap's folded form:
# each Function call under torch.func's grad transforms costs about 1-2 ms of
# Python (argument binding, pytree walks, a generated class per call), which a
# small convolution does not win back. Measured on R3GAN's 3x3 bottleneck
# (32 channels, groups of 16, S = 4, with a double backward): 9.4M MACs (batch
# 8 at 16x16) lost 12 ms per layer, 38M (batch 8 at 32x32) gained 17 ms.
MEMBER_MIN_MACS = 2**25

_Pad = tuple[int, int]


def _conv(x: Tensor, w: Tensor, pad: _Pad, groups: int) -> Tensor:
    return F.conv2d(x, w, padding=pad, groups=groups)


def _conv_input_grad(gy: Tensor, w: Tensor, pad: _Pad, groups: int) -> Tensor:
    # stride 1: the input is (output + kernel - 1 - 2 pad) in each axis; the
    # convolution's own backward kernel, not conv_transpose2d, whose grouped
    # CPU form takes a slow unvectorised path
    size = [gy.shape[0], w.shape[1] * groups] + [gy.shape[i] + w.shape[i] - 1 - 2 * pad[i - 2] for i in (2, 3)]
    x = gy.new_empty(size)  # read for its shape only
    return torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], list(pad), [1, 1], False, [0, 0], groups,
                                               [True, False, False])[0]


def _conv_weight_grad(x: Tensor, gy: Tensor, w_shape: tuple[int, ...], pad: _Pad, groups: int) -> Tensor:
    w = x.new_empty(w_shape)  # read for its shape only (output_mask asks for the weight gradient alone)
    return torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], list(pad), [1, 1], False, [0, 0], groups,
                                               [False, True, False])[1]


def _op(fn: Any) -> Any:
    # With no torch.func transform left below this vmap level nothing records
    # the call, so the op's plain function replaces ``Function.apply`` (whose
    # argument binding and pytree walks cost more than a small convolution).
    return fn.apply if _interpreters() else fn.forward


def _conv_grads(x: Tensor, gy: Tensor, w: Tensor, pad: _Pad, groups: int) -> tuple[Tensor, Tensor]:
    # one kernel call for both gradients: about 2/3 of the time of two calls
    gx, gw, _ = torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], list(pad), [1, 1], False, [0, 0], groups,
                                                    [True, True, False])
    return gx, gw


def _loop(fn: Any, info: Any, in_dims: tuple, args: tuple, n_tensors: int, out_dim: int = 1) -> tuple[Tensor, int]:
    """``fn`` once per member (unbatched tensors shared), outputs stacked on ``out_dim``.

    Activations on dim 1, as vmap's own convolution rule leaves its output
    ([B, S, O, H, W] when the members fold into the groups), weight gradients
    on dim 0, as the stacked parameters: the tensors each meets in elementwise
    ops (residual adds, activation gradients, Adam) share its layout, so those
    kernels stay on their contiguous paths instead of mixing strides."""
    size, fn = info.batch_size, _op(fn)
    pairs = list(zip(args[:n_tensors], in_dims[:n_tensors], strict=True))
    outs = [fn(*[a if d is None else a.select(d, i) for a, d in pairs], *args[n_tensors:]) for i in range(size)]
    return torch.stack(outs, out_dim), out_dim


def _fold_batch(fn: Any, x: Tensor, x_dim: int, w: Tensor, *rest: Any) -> tuple[Tensor, int]:
    """A batched input under a shared weight: the members join the batch axis."""
    x = x.movedim(x_dim, 0)
    s, b = x.shape[:2]
    out = _op(fn)(x.reshape(s * b, *x.shape[2:]), w, *rest)
    return out.reshape(s, b, *out.shape[1:]), 0


class _Conv(torch.autograd.Function):
    """y = conv2d(x, w), stride 1."""

    @staticmethod
    def forward(x: Tensor, w: Tensor, pad: _Pad, groups: int) -> Tensor:
        return _conv(x, w, pad, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, w, ctx.pad, ctx.groups = inputs
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple:
        x, w = ctx.saved_tensors
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1]:
            return (*_ConvGrads.apply(x, gy, w, ctx.pad, ctx.groups), None, None)
        gx = _ConvT.apply(gy, w, ctx.pad, ctx.groups) if ctx.needs_input_grad[0] else None
        gw = _ConvW.apply(x, gy, tuple(w.shape), ctx.pad, ctx.groups) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, w: Tensor, pad: _Pad, groups: int) -> tuple[Tensor, int]:
        if in_dims[1] is None:
            return _fold_batch(_Conv, x, in_dims[0], w, pad, groups)
        return _loop(_Conv, info, in_dims, (x, w, pad, groups), 2)


class _ConvT(torch.autograd.Function):
    """z = the input gradient of conv2d(., w) for output gradient g."""

    @staticmethod
    def forward(g: Tensor, w: Tensor, pad: _Pad, groups: int) -> Tensor:
        return _conv_input_grad(g, w, pad, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        g, w, ctx.pad, ctx.groups = inputs
        ctx.save_for_backward(g, w)

    @staticmethod
    def backward(ctx: Any, gz: Tensor) -> tuple:
        # <convT(g, w), gz> = <g, conv(gz, w)>
        g, w = ctx.saved_tensors
        dg = _Conv.apply(gz, w, ctx.pad, ctx.groups) if ctx.needs_input_grad[0] else None
        dw = _ConvW.apply(gz, g, tuple(w.shape), ctx.pad, ctx.groups) if ctx.needs_input_grad[1] else None
        return dg, dw, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, g: Tensor, w: Tensor, pad: _Pad, groups: int) -> tuple[Tensor, int]:
        if in_dims[1] is None:
            return _fold_batch(_ConvT, g, in_dims[0], w, pad, groups)
        return _loop(_ConvT, info, in_dims, (g, w, pad, groups), 2)


class _ConvW(torch.autograd.Function):
    """v = the weight gradient of conv2d(x, .) for output gradient g."""

    @staticmethod
    def forward(x: Tensor, g: Tensor, w_shape: tuple[int, ...], pad: _Pad, groups: int) -> Tensor:
        return _conv_weight_grad(x, g, w_shape, pad, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, g, _, ctx.pad, ctx.groups = inputs
        ctx.save_for_backward(x, g)

    @staticmethod
    def backward(ctx: Any, gv: Tensor) -> tuple:
        # <convW(x, g), gv> = <g, conv(x, gv)> = <convT(g, gv), x>
        x, g = ctx.saved_tensors
        dx = _ConvT.apply(g, gv, ctx.pad, ctx.groups) if ctx.needs_input_grad[0] else None
        dg = _Conv.apply(x, gv, ctx.pad, ctx.groups) if ctx.needs_input_grad[1] else None
        return dx, dg, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, g: Tensor, w_shape: tuple[int, ...], pad: _Pad,
             groups: int) -> tuple[Tensor, int]:
        return _loop(_ConvW, info, in_dims, (x, g, w_shape, pad, groups), 2, out_dim=0)


class _ConvGrads(torch.autograd.Function):
    """(gx, gw) = both gradients of conv2d(x, w) for output gradient gy, in one kernel call."""

    @staticmethod
    def forward(x: Tensor, gy: Tensor, w: Tensor, pad: _Pad, groups: int) -> tuple[Tensor, Tensor]:
        return _conv_grads(x, gy, w, pad, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, gy, w, ctx.pad, ctx.groups = inputs
        ctx.save_for_backward(x, gy, w)

    @staticmethod
    def backward(ctx: Any, ggx: Tensor, ggw: Tensor) -> tuple:
        # gx = convT(gy, w), gw = convW(x, gy): the adjoints of _ConvT and _ConvW, summed over both outputs
        x, gy, w = ctx.saved_tensors
        p, g, need = ctx.pad, ctx.groups, ctx.needs_input_grad
        dx = _ConvT.apply(gy, ggw, p, g) if need[0] else None
        dgy = _Conv.apply(ggx, w, p, g) + _Conv.apply(x, ggw, p, g) if need[1] else None
        dw = _ConvW.apply(ggx, gy, tuple(w.shape), p, g) if need[2] else None
        return dx, dgy, dw, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, gy: Tensor, w: Tensor, pad: _Pad,
             groups: int) -> tuple[tuple[Tensor, Tensor], tuple[int, int]]:
        fn = _op(_ConvGrads)
        pairs = list(zip((x, gy, w), in_dims[:3], strict=True))
        outs = [fn(*[a if d is None else a.select(d, i) for a, d in pairs], pad, groups)
                for i in range(info.batch_size)]
        return (torch.stack([o[0] for o in outs], 1), torch.stack([o[1] for o in outs], 0)), (1, 0)


def _macs(x: Tensor, w: Tensor, pad: _Pad) -> int:
    """Multiply-adds of one member's convolution."""
    if x.dim() != 4:
        return 0
    h, w_ = (x.shape[i] + 2 * pad[i - 2] - w.shape[i] + 1 for i in (2, 3))
    return x.shape[0] * w.shape[0] * h * w_ * w[0].numel()


def member_conv2d(x: Tensor, weight: Tensor, padding: int | _Pad = 0, groups: int = 1) -> Tensor:
    """``F.conv2d(x, weight, padding=padding, groups=groups)`` (stride 1,
    dilation 1, no bias): x [B, C, H, W], weight [O, C / groups, kh, kw] ->
    [B, O, H + 2 ph - kh + 1, W + 2 pw - kw + 1].

    Under eager ``vmap``, one convolution per member (forward and every
    backward), equal to the folded convolution to round-off; elsewhere
    ``F.conv2d`` itself. Why: see the module docstring."""
    pad = (padding, padding) if isinstance(padding, int) else (int(padding[0]), int(padding[1]))
    if not _under_vmap() or _macs(x, weight, pad) < _min_macs():
        return F.conv2d(x, weight, padding=pad, groups=groups)
    return _Conv.apply(x, weight, pad, groups)


def _min_macs() -> int:
    return MEMBER_MIN_MACS  # read at call time, so that benchmarks can move the threshold
