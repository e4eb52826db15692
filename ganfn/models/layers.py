"""Building blocks shared by ganfn's models: shape helpers, weight initialisers,
the conditional batch norm, and the list of weights spectral norm applies to.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "Shape",
    "NORMS",
    "as_shape",
    "activation",
    "check_norm",
    "norm2d",
    "n_doublings",
    "ConditionalBatchNorm2d",
    "DENSE_PAIRS",
    "DENSE_DEVICES",
    "FullConv2d",
    "FullConvTranspose2d",
    "dcgan_init",
    "default_init",
    "sn_weight_names",
    "check_labels_arg",
]

Shape = int | Sequence[int]
NORMS = ("batch", "layer", "none")
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


# Above this many (input pixel, output pixel) pairs a layer keeps its
# convolution: the one-hot matrix that gathers the patches grows as their
# product, so the matrix form only pays on small images (DCGAN on 8x8 digits:
# 8x8 -> 4x4 is 1,024 pairs).
DENSE_PAIRS = 1024
# Devices where the matrix form is used. Measured faster on the CPU only; on
# CUDA one cuDNN call may beat the form's several kernel launches, so the
# layers stay convolutions there until bench/gpu_check.sh (section "seeds",
# which adds "cuda" here) has measured it.
DENSE_DEVICES = {"cpu"}


class _Plan(NamedTuple):
    """How a small convolution becomes matrix products: ``pairs`` lists, for
    each kernel tap ``k`` joining input pixel ``p`` to output pixel ``q``, the
    one-hot matrix's ``(row, column)``: for a convolution ``[P, Q*K]`` (input
    pixel -> (output pixel, tap)), for a transposed one ``[P*K, Q]``.
    ``identity`` when that matrix is the identity, so that the products reduce
    to reshapes (a full-image kernel, a 1x1 input: DCGAN's end layers)."""

    pairs: tuple[tuple[int, int], ...]
    identity: bool
    K: int
    P: int
    Q: int
    out_hw: tuple[int, int]


def _out_size(n_in: int, k: int, stride: int, pad: int, dil: int, out_pad: int, transpose: bool) -> int:
    """Output size along one axis, by torch's rules (``nn.Conv2d`` / ``ConvTranspose2d`` docs)."""
    if transpose:
        return (n_in - 1) * stride - 2 * pad + dil * (k - 1) + out_pad + 1
    return (n_in + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _axis(n_in: int, k: int, stride: int, pad: int, dil: int, out_pad: int, transpose: bool) -> list:
    """Along one axis, every (input index, tap, output index) that a
    convolution (or transposed convolution) joins."""
    n_out = _out_size(n_in, k, stride, pad, dil, out_pad, transpose)
    if transpose:  # input i, tap t -> output i*stride - pad + t*dil
        hits = [(i, t, i * stride - pad + t * dil) for i in range(n_in) for t in range(k)]
    else:  # output o, tap t <- input o*stride - pad + t*dil
        hits = [(o * stride - pad + t * dil, t, o) for o in range(n_out) for t in range(k)]
    return [(i, t, o) for i, t, o in hits if 0 <= i < n_in and 0 <= o < n_out]


_Axis = tuple[int, int, int, int, int, int]  # input size, kernel, stride, padding, dilation, output padding


@functools.lru_cache(maxsize=64)
def _plan(transpose: bool, axes: tuple[_Axis, _Axis]) -> _Plan:
    """The one-hot matrix of a small convolution (``axes``: height, width), as
    python ints (so that ``torch.compile`` traces it as a constant)."""
    (ho, wo), (ys, xs) = [_out_size(*a, transpose) for a in axes], [_axis(*a, transpose) for a in axes]
    (h, kh), (w, kw) = axes[0][:2], axes[1][:2]
    K, P, Q = kh * kw, h * w, ho * wo
    pairs = []
    for iy, ty, oy in ys:
        for ix, tx, ox in xs:
            p, k, q = iy * w + ix, ty * kw + tx, oy * wo + ox
            pairs.append((p * K + k, q) if transpose else (p, q * K + k))
    rows, cols = (P * K, Q) if transpose else (P, Q * K)
    identity = rows == cols == len(pairs) and all(r == c for r, c in pairs)
    return _Plan(tuple(pairs), identity, K, P, Q, (ho, wo))


def _one_hot(plan: _Plan, transpose: bool, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The plan's constant one-hot matrix."""
    shape = (plan.P * plan.K, plan.Q) if transpose else (plan.P, plan.Q * plan.K)
    out = torch.zeros(shape, dtype=dtype, device=device)
    index = torch.tensor(plan.pairs, dtype=torch.long, device=device).reshape(-1, 2)
    return out.index_put_((index[:, 0], index[:, 1]), torch.ones((), dtype=dtype, device=device))


@functools.lru_cache(maxsize=64)
def _one_hot_cached(plan: _Plan, transpose: bool, dtype: torch.dtype, device: torch.device) -> Tensor:
    # Built outside any torch.func transform: a tensor made inside grad/vmap
    # is wrapped for that transform's level and fails once the level is gone.
    with torch._C._DisableFuncTorch():
        return _one_hot(plan, transpose, dtype, device)


class _TransposeCopy(torch.autograd.Function):
    """``x.transpose(-1, -2).contiguous()`` whose gradient is contiguous too.
    Autograd's own transpose hands back a transposed (strided) gradient, and
    the layer before (a ReLU's backward, say) then runs its strided kernel,
    3-10x slower on the CPU than on matching layouts."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.transpose(-1, -2).contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _TransposeCopy.apply(grad)


def _transpose_copy(x: Tensor) -> Tensor:
    if torch.compiler.is_compiling():  # inductor picks the layouts itself
        return x.transpose(-1, -2).contiguous()
    return _TransposeCopy.apply(x)


def _conv_dense(x: Tensor, weight: Tensor, bias: Tensor | None, d: _Plan, gather: Tensor | None) -> Tensor:
    """``conv2d(x, weight, bias)`` as two matrix products: the patches by a
    constant one-hot matrix, ``[B*C, P] @ [P, Q*K]``, then the kernel,
    ``[B*Q, C*K] @ [C*K, O]``. x [B, C, H, W] -> [B, O, Ho, Wo].

    Both products keep the batch in their rows (one matmul, and one batched
    matmul under ``vmap``); the two transposes are views when ``C`` or ``Q``
    is 1 and ``O`` or ``Q`` is 1, as in DCGAN's first and last D layers."""
    K, P, Q = d.K, d.P, d.Q
    B, C = x.shape[:2]
    O = weight.shape[0]
    patches = x if gather is None else x.reshape(B * C, P) @ gather
    patches = patches.reshape(B, C, Q, K)
    if torch.compiler.is_compiling():
        # For inductor, one product per sample with the kernel broadcast gives
        # NCHW directly: the transposes of the eager form below became strided,
        # unvectorised loops in its fused kernels (compiled --seeds 16 step
        # 46 -> 34 ms). Eager, the broadcast kernel is copied per sample (slower).
        out = torch.bmm(weight.reshape(O, C * K).expand(B, O, C * K), patches.transpose(2, 3).reshape(B, C * K, Q))
        out = out if bias is None else out + bias[:, None]
        return out.reshape(B, O, *d.out_hw)
    patches, weight = patches.transpose(1, 2).reshape(B * Q, C * K), weight.reshape(O, C * K).transpose(0, 1)
    out = patches @ weight if bias is None else torch.addmm(bias, patches, weight)
    # contiguous: a channels-last result would send the next layers' kernels
    # (and their backward) down their strided paths, several times slower.
    return out.reshape(B, Q, O).transpose(1, 2).contiguous().reshape(B, O, *d.out_hw)


def _conv_transpose_dense(x: Tensor, weight: Tensor, bias: Tensor | None, d: _Plan,
                          gather: Tensor | None) -> Tensor:
    """``conv_transpose2d(x, weight, bias)`` as two matrix products: each
    tap's contribution ``[B*P, C] @ [C, O*K]``, then their sum into the output
    pixels by a constant one-hot matrix, ``[B*O, P*K] @ [P*K, Q]``.
    x [B, C, H, W] -> [B, O, Ho, Wo]; the transposes are views when ``C`` or
    ``P`` is 1 and ``O`` or ``P`` is 1, as in DCGAN's first and last G layers."""
    K, P = d.K, d.P
    B, C = x.shape[:2]
    O = weight.shape[1]
    taps = _transpose_copy(x.reshape(B, C, P)).reshape(B * P, C) @ weight.reshape(C, O * K)  # [B*P, O*K]
    taps = taps.reshape(B, P, O, K).transpose(1, 2).reshape(B * O, P * K)
    out = (taps if gather is None else taps @ gather).reshape(B, O, *d.out_hw)
    return out if bias is None else out + bias[:, None, None]


def _dense_plan(layer: nn.Conv2d | nn.ConvTranspose2d, x: Tensor,
                transpose: bool) -> tuple[_Plan, Tensor | None] | None:
    """The layer's plan on input ``x`` and its one-hot matrix (None: the
    identity), or None where the layer keeps its convolution (a large image,
    groups, a padding mode other than zeros, a device not in ``DENSE_DEVICES``)."""
    if (x.dim() != 4 or x.device.type not in DENSE_DEVICES or layer.groups != 1 or layer.padding_mode != "zeros"
            or isinstance(layer.padding, str)):
        return None
    out_pad = layer.output_padding if transpose else (0, 0)
    axes = tuple((int(x.shape[2 + a]), layer.kernel_size[a], layer.stride[a], layer.padding[a], layer.dilation[a],
                  out_pad[a]) for a in (0, 1))
    ho, wo = (_out_size(*a, transpose) for a in axes)
    if x.shape[2] * x.shape[3] * ho * wo > DENSE_PAIRS:  # checked before any plan is built
        return None
    compiling = torch.compiler.is_compiling()
    # under torch.compile: uncached, so that dynamo traces the python ints and
    # inductor folds the matrix into a constant
    plan = (_plan.__wrapped__ if compiling else _plan)(transpose, axes)
    gather = None if plan.identity else (_one_hot if compiling else _one_hot_cached)(plan, transpose, x.dtype, x.device)
    return plan, gather


class FullConv2d(nn.Conv2d):
    """A ``Conv2d`` that, on a small image (at most ``DENSE_PAIRS`` pairs of input
    and output pixels: DCGAN on 8x8 digits, or the 4x4 -> 1x1 last layer of any
    DCGAN discriminator), computes the same convolution as two matrix
    products: the patches by a constant one-hot matrix, then the kernel.

    Same parameters and ``state_dict`` as ``nn.Conv2d``, equal outputs and
    gradients to round-off; larger images, groups, non-zero padding modes and
    devices other than the CPU (``DENSE_DEVICES``) take the convolution. Why:
    under ``vmap`` with per-member weights a convolution becomes a grouped
    convolution, which oneDNN runs no faster per FLOP than the separate ones on
    the CPU, while a matrix product becomes one batched matmul (``ganfn train
    --seeds 16`` on digits: bench/README_vmap.md).
    Single runs gain too: a small convolution runs far below a dense matmul's
    rate.
    """

    def forward(self, x: Tensor) -> Tensor:
        dense = _dense_plan(self, x, transpose=False)
        if dense is None:
            return super().forward(x)
        return _conv_dense(x, self.weight, self.bias, *dense)


class FullConvTranspose2d(nn.ConvTranspose2d):
    """A ``ConvTranspose2d`` that, on a small image (DCGAN's generator on 8x8
    digits: 1x1 -> 4x4 -> 8x8, or the 1x1 -> 4x4 first layer of any DCGAN
    generator), computes the same transposed convolution as two matrix
    products; otherwise (and with ``output_size``) the transposed convolution.
    Same parameters as ``nn.ConvTranspose2d``; why: see :class:`FullConv2d`.
    """

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        dense = None if output_size is not None else _dense_plan(self, x, transpose=True)
        if dense is None:
            return super().forward(x, output_size)
        return _conv_transpose_dense(x, self.weight, self.bias, *dense)


def as_shape(s: Shape) -> tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple."""
    return (int(s),) if isinstance(s, int) else tuple(int(v) for v in s)


def activation(name: str | None) -> nn.Module:
    """The output activation ``"tanh"``, ``"sigmoid"`` or ``None`` (identity)."""
    acts = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, None: nn.Identity}
    if name not in acts:
        raise ValueError(f"out_act must be 'tanh', 'sigmoid' or None, got {name!r}")
    return acts[name]()


def check_norm(kind: str) -> None:
    """Reject a normalisation name other than batch / layer / none."""
    # Checked up front: small models may build no normalisation layer at all.
    if kind not in NORMS:
        raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")


def norm2d(kind: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer over ``channels`` maps."""
    check_norm(kind)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # LayerNorm over (C, H, W) with a per-channel affine; unlike nn.LayerNorm it
        # needs no spatial size, and it is per-sample, so vmap and penalties are safe.
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def n_doublings(size: int) -> int:
    """log2(size) - 2: the resolution doublings from a 4x4 map to ``size``."""
    # Every conv model starts or ends at 4x4 and changes resolution by 2x per layer.
    n = int(round(math.log2(size))) - 2 if size > 0 else -1
    if n < 1 or 4 * 2**n != size:
        raise ValueError(f"size must be a power of two >= 8 (8, 16, 32, 64, 128, ...), got {size}")
    return n


def check_labels_arg(y: Tensor | None, batch: int, num_classes: int | None) -> None:
    """Metadata checks of a label argument (valid under vmap and compile):
    an integer tensor [batch]. Values are checked by ``GAN`` before a step."""
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        what = y.dtype if isinstance(y, Tensor) else type(y).__name__
        raise TypeError(f"class labels must be an int64 tensor [B] with values in [0, {num_classes}), got {what}")
    if y.shape != (batch,):
        raise ValueError(f"class labels must have shape [B] = [{batch}], got {tuple(y.shape)}")


class ConditionalBatchNorm2d(nn.Module):
    """Conditional batch norm (de Vries et al. 2017; Miyato & Koyama 2018):
    BatchNorm2d without its own affine, then a per-class scale and shift.

    x [B, C, H, W], y int64 [B] -> [B, C, H, W]: ``bn(x) * gain[y] + shift[y]``,
    ``gain`` and ``shift`` of shape [num_classes, C] (initialised to 1 and 0).
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Parameter(torch.ones(num_classes, channels))
        self.shift = nn.Parameter(torch.zeros(num_classes, channels))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gain)
        nn.init.zeros_(self.shift)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.bn(x)
        return h * self.gain[y][:, :, None, None] + self.shift[y][:, :, None, None]


# ----------------------------------------------------------------- init -----


@torch.no_grad()
def dcgan_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """DCGAN initialisation (Radford et al. 2016), in place; returns ``module``.

    Conv / transposed-conv / linear weights ~ N(0, 0.02), their biases 0;
    normalisation scales ~ N(1, 0.02), shifts 0 (per class in a conditional
    batch norm); label embeddings ~ N(0, 0.02). Draws only from ``generator``
    (``None`` falls back to torch's global RNG, like any ``nn.init``).
    """
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM_LAYERS):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
                nn.init.zeros_(m.bias)
        elif isinstance(m, ConditionalBatchNorm2d):
            nn.init.normal_(m.gain, 1.0, 0.02, generator=generator)
            nn.init.zeros_(m.shift)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
    return module


@torch.no_grad()
def default_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """PyTorch's default initialisation of linear / conv layers, from ``generator``.

    The same distribution as ``reset_parameters()`` (Kaiming-uniform weights with
    a=sqrt(5), biases U(+-1/sqrt(fan_in)); embeddings N(0, 1)), but with an
    explicit generator; normalisation layers get scale 1, shift 0 and fresh
    running statistics.
    """
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, generator=generator)
        elif isinstance(m, (*_NORM_LAYERS, ConditionalBatchNorm2d)):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()  # deterministic: ones, zeros, running stats reset
    return module


def sn_weight_names(module: nn.Module) -> list[str]:
    """Names (as in ``named_parameters``) of the weights spectral norm applies to.

    Every conv / transposed-conv / linear weight and every label embedding (the
    projection discriminator normalises its class embedding too, as in
    SNGAN-projection, Miyato & Koyama 2018); biases and normalisation
    parameters are left alone. ganfn's core normalises these as a pure parameter
    transform (``torch.nn.utils.spectral_norm`` keeps state in hooks and fails
    under ``vmap``).
    """
    names = []
    for prefix, m in module.named_modules():
        if isinstance(m, (*_WEIGHTED, nn.Embedding)):
            names.append(f"{prefix}.weight" if prefix else "weight")
    return names


def sngan_conv_body(size: int, channels: int, width: int, negative_slope: float = 0.1) -> tuple[list[nn.Module], int]:
    """The conv body of the SNGAN discriminator (Miyato et al. 2018, Table 3):
    per resolution a 3x3 stride-1 conv then a 4x4 stride-2 conv, LeakyReLU after
    each, channels ``width, 2*width, ...``; at 4x4 one more 3x3 conv, flattened.

    Returns the layers (images [B, channels, size, size] -> features [B, F]) and F.
    """
    n = n_doublings(size)
    layers: list[nn.Module] = []
    c_in, ch = channels, width
    for _ in range(n):
        layers += [nn.Conv2d(c_in, ch, 3, 1, 1), nn.LeakyReLU(negative_slope), nn.Conv2d(ch, ch, 4, 2, 1),
                   nn.LeakyReLU(negative_slope)]
        c_in, ch = ch, ch * 2
    layers += [nn.Conv2d(c_in, ch, 3, 1, 1), nn.LeakyReLU(negative_slope), nn.Flatten()]
    return layers, ch * 16
