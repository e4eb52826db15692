"""Building blocks shared by ganfn's models: shape helpers, weight initialisers,
the conditional batch norm, and the list of weights spectral norm applies to.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
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


def _eager() -> bool:
    # Under torch.compile the convolution stays: inductor already runs the
    # (grouped) convolutions in channels_last, and that compiled step is the
    # one measured in bench/README_vmap.md; the shortcut is for eager steps.
    return not torch.compiler.is_compiling()


class FullConv2d(nn.Conv2d):
    """A ``Conv2d`` that, when its kernel covers the whole unpadded input (DCGAN's
    last discriminator layer, 4x4 -> 1x1), computes the same thing as one matrix
    product ``[B, C*kh*kw] @ [C*kh*kw, O]`` -> ``[B, O, 1, 1]``.

    Same parameters and ``state_dict`` as ``nn.Conv2d``; any other input takes the
    convolution. Why: under ``vmap`` with per-member weights a convolution
    becomes a grouped convolution, which oneDNN runs slowly on the CPU for these
    shapes, while a matrix product becomes a batched matmul
    (bench/README_vmap.md: the default eager ``ganfn train --seeds 16`` step 1.4x
    faster). Under ``torch.compile`` the layer stays a convolution.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (_eager() and x.dim() == 4 and tuple(x.shape[-2:]) == tuple(self.kernel_size) and self.padding == (0, 0)
                and self.dilation == (1, 1) and self.groups == 1):
            return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
        return super().forward(x)


class FullConvTranspose2d(nn.ConvTranspose2d):
    """A ``ConvTranspose2d`` that, on a 1x1 input (DCGAN's first generator layer,
    1x1 -> kh x kw), computes the same thing as one matrix product
    ``[B, C] @ [C, O*kh*kw]`` reshaped to ``[B, O, kh, kw]``; any other input
    takes the transposed convolution. Same parameters as ``nn.ConvTranspose2d``;
    why: see :class:`FullConv2d`.
    """

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if (_eager() and output_size is None and x.dim() == 4 and tuple(x.shape[-2:]) == (1, 1) and self.padding == (0, 0)
                and self.output_padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1):
            out = (x.flatten(1) @ self.weight.flatten(1)).reshape(x.shape[0], *self.weight.shape[1:])
            return out if self.bias is None else out + self.bias[:, None, None]
        return super().forward(x, output_size)


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


def check_labels_arg(y: Tensor, batch: int, num_classes: int) -> None:
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
        layers += [nn.Conv2d(c_in, ch, 3, 1, 1), nn.LeakyReLU(negative_slope), nn.Conv2d(ch, ch, 4, 2, 1), nn.LeakyReLU(negative_slope)]
        c_in, ch = ch, ch * 2
    layers += [nn.Conv2d(c_in, ch, 3, 1, 1), nn.LeakyReLU(negative_slope), nn.Flatten()]
    return layers, ch * 16
