"""R3GAN's generator and discriminator (Huang et al., NeurIPS 2024, "The GAN is
dead; long live the GAN! A Modern GAN Baseline", Sec. 3 and Fig. 4).

A ConvNeXt-style residual pair with no normalisation layers at all:

- every residual branch is an inverted bottleneck: 1x1 conv to
  ``expansion * width`` channels, bias + leaky ReLU(0.2), a grouped 3x3 conv
  (groups of ``group_channels`` channels), bias + leaky ReLU, 1x1 conv back to
  ``width``; the block returns ``x + branch(x)``;
- fix-up initialisation: weights ~ N(0, gain^2 / fan_in), the first two convs
  of each branch with the activation gain scaled by ``L ** (-1 / (2m - 2))``
  (``L`` residual blocks in the network, ``m = 3`` convs per branch, so
  ``L ** -0.25``), the last conv of each branch zero: at initialisation every
  block is the identity;
- resampling is bilinear: up by ``F.interpolate(mode="bilinear")``, down by
  its anti-aliased counterpart (a [1, 3, 3, 1] triangle filter, stride 2);
  a 1x1 conv changes the width between stages;
- G starts from a learned 4x4 basis modulated by a linear map of the latent
  (the "generative basis"); D ends with a depthwise 4x4 conv to 1x1 and a
  linear layer (the "discriminative basis");
- no conv has a bias: biases live only in the activations, where their
  gradient is not zero (there is no normalisation to cancel them).

With ``num_classes`` G concatenates a class embedding to the latent and D
projects its features onto a class embedding (scaled by 1/sqrt(dim)), as the
official code does; ``G(z, y)``, ``D(x, y)``.

Pure PyTorch (no custom ops): the official code's fused bias-activation and
FIR resampling kernels are replaced by their plain definitions. The stages run
from 4x4 to ``image_size``: ``log2(image_size) - 1`` of them (4 at 32 px).
Defaults are the paper's CIFAR-10 model (width 768 at every stage, 2 blocks
per stage, 96 groups of 16 channels in the 1536-channel bottleneck, latent 64);
pass small ``width`` / ``blocks`` for a CPU.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import check_labels_arg
from .linear import _under_vmap

__all__ = ["R3GANDiscriminator", "R3GANGenerator", "bilinear_down", "bilinear_up", "r3gan"]

_SLOPE = 0.2
_GAIN = math.sqrt(2 / (1 + _SLOPE**2))  # leaky ReLU(0.2)'s variance-preserving gain (He et al., 2015)
_BRANCH_CONVS = 3  # m: convs per residual branch


def bilinear_up(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, C, 2H, 2W], bilinear (align_corners=False)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def bilinear_down(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, C, H/2, W/2]: the triangle filter [1, 3, 3, 1]/8 in
    each axis at stride 2 (the bilinear kernel, anti-aliased), edges replicated.
    One fixed single-channel filter over ``B * C`` maps; under eager ``vmap``
    the same filter as a depthwise convolution over ``[S * B, C]`` (the same
    outputs, gradients equal to round-off), whose backward ran 2x faster
    there than the single-channel one over ``S * B * C`` maps."""
    b, c, h, w = x.shape
    taps = x.new_tensor([1.0, 3.0, 3.0, 1.0]) / 8
    kernel = (taps[:, None] * taps[None, :])[None, None]
    if _under_vmap():
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 4, 4), stride=2, groups=c)
    y = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(y, kernel, stride=2).reshape(b, c, h // 2, w // 2)


class _Conv(nn.Conv2d):
    """Bias-free conv whose ``reset_parameters`` draws N(0, gain^2 / fan_in)
    (``gain`` 0: zeros), so that ``GAN.init``'s re-initialisation (each
    submodule's ``reset_parameters()``) keeps the fix-up scheme."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, groups: int = 1, gain: float = 1.0,
                 padding: int | None = None) -> None:
        self.gain = gain
        super().__init__(c_in, c_out, kernel, 1, kernel // 2 if padding is None else padding, groups=groups, bias=False)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.normal_(self.weight, 0.0, self.gain / math.sqrt(self.weight[0].numel()), generator=generator)


class _Linear(nn.Linear):
    """Bias-free linear layer, weights N(0, 1 / fan_in)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, bias=False)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.normal_(self.weight, 0.0, 1 / math.sqrt(self.weight.shape[1]), generator=generator)


class _Basis(nn.Module):
    """G's learned 4x4 basis [C, 4, 4], ~ N(0, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 4, 4))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.normal_(self.weight, 0.0, 1.0, generator=generator)


class _BiasAct(nn.Module):
    """x + bias (per channel), then leaky ReLU(0.2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.reshape(1, -1, 1, 1), _SLOPE)


class _Block(nn.Module):
    """Inverted-bottleneck residual block: ``x + conv3(act(conv2(act(conv1(x)))))``,
    conv2 grouped. [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, width: int, expansion: int, group_channels: int, kernel: int, n_blocks: int) -> None:
        super().__init__()
        wide = width * expansion
        if wide % group_channels:
            raise ValueError(f"width * expansion = {wide} is not a multiple of group_channels = {group_channels}: "
                             "choose a width or group_channels that divides it")
        gain = _GAIN * n_blocks ** (-1 / (2 * _BRANCH_CONVS - 2))  # fix-up: L ** (-1 / (2m - 2))
        self.conv1, self.act1 = _Conv(width, wide, gain=gain), _BiasAct(wide)
        self.conv2, self.act2 = _Conv(wide, wide, kernel, groups=wide // group_channels, gain=gain), _BiasAct(wide)
        self.conv3 = _Conv(wide, width, gain=0.0)  # each block starts as the identity

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


def _stage_widths(width: int | Sequence[int], stages: int) -> list[int]:
    ws = [int(width)] * stages if isinstance(width, int) else [int(w) for w in width]
    if len(ws) != stages or min(ws) < 1:
        raise ValueError(f"width must be an int or {stages} positive ints (one per stage, 4x4 first), got {width!r}")
    return ws


def _n_stages(size: int) -> int:
    n = round(math.log2(size)) - 1 if size > 0 else 0
    if n < 2 or 2 ** (n + 1) != size:
        raise ValueError(f"image_size must be a power of two >= 8 (8, 16, 32, 64, ..., 256), got {size}")
    return n


class R3GANGenerator(nn.Module):
    """R3GAN generator: (z [B, latent_dim] (, y [B])) -> images [B, channels, size, size].

    ``width``: one int, or one per stage from 4x4 up; ``blocks``: residual
    blocks per stage. Output is linear (no tanh), as in the paper. Initialised
    by :func:`r3gan_init` from ``generator``."""

    def __init__(self, latent_dim: int = 64, image_size: int = 32, channels: int = 3,
                 width: int | Sequence[int] = 768, blocks: int = 2, *, expansion: int = 2,
                 group_channels: int = 16, kernel: int = 3, num_classes: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        ws = _stage_widths(width, _n_stages(image_size))
        self.latent_dim, self.num_classes = int(latent_dim), num_classes
        self.sample_shape = (channels, image_size, image_size)
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes is not None else None
        z_in = latent_dim * (2 if num_classes is not None else 1)
        self.basis, self.basis_linear = _Basis(ws[0]), _Linear(z_in, ws[0])
        self.stages = nn.ModuleList()
        for i, w in enumerate(ws):
            layers: list[nn.Module] = [] if i == 0 or ws[i - 1] == w else [_Conv(ws[i - 1], w)]
            layers += [_Block(w, expansion, group_channels, kernel, blocks * len(ws)) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*layers))
        self.out = _Conv(ws[-1], channels)
        r3gan_init(self, generator)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        z = z.reshape(z.shape[0], -1)
        if self.embed is not None:
            if y is None:
                raise TypeError("this R3GAN generator is class-conditional: call G(z, y) with int64 labels y [B]")
            check_labels_arg(y, z.shape[0], self.embed.num_embeddings)
            z = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)
        h = self.basis.weight[None] * self.basis_linear(z)[:, :, None, None]
        for i, stage in enumerate(self.stages):
            h = stage(h if i == 0 else bilinear_up(h))
        return self.out(h)


class R3GANDiscriminator(nn.Module):
    """R3GAN discriminator: (images [B, channels, size, size] (, y [B])) -> logits [B].

    The generator's stages in reverse (``width`` is given 4x4 first, as for G);
    each stage's blocks run before its downsampling."""

    def __init__(self, image_size: int = 32, channels: int = 3, width: int | Sequence[int] = 768,
                 blocks: int = 2, *, expansion: int = 2, group_channels: int = 16, kernel: int = 3,
                 num_classes: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        ws = _stage_widths(width, _n_stages(image_size))[::-1]  # highest resolution first
        self.sample_shape, self.num_classes = (channels, image_size, image_size), num_classes
        self.inp = _Conv(channels, ws[0])
        self.stages = nn.ModuleList([nn.Sequential(*[_Block(w, expansion, group_channels, kernel, blocks * len(ws))
                                                     for _ in range(blocks)]) for w in ws])
        # after each downsampling, a 1x1 conv where the width changes
        self.widen = nn.ModuleList([_Conv(w, n) if n != w else nn.Identity() for w, n in itertools.pairwise(ws)])
        self.basis = _Conv(ws[-1], ws[-1], 4, groups=ws[-1], padding=0)  # depthwise 4x4 -> 1x1
        out_dim = 1 if num_classes is None else ws[-1]
        self.head = _Linear(ws[-1], out_dim)
        self.embed = nn.Embedding(num_classes, out_dim) if num_classes is not None else None
        r3gan_init(self, generator)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.inp(x)
        for stage, widen in zip(self.stages, self.widen, strict=False):
            h = widen(bilinear_down(stage(h)))
        out = self.head(self.basis(self.stages[-1](h)).reshape(x.shape[0], -1))
        if self.embed is None:
            return out.reshape(x.shape[0])
        if y is None:
            raise TypeError("this R3GAN discriminator is class-conditional: call D(x, y) with int64 labels y [B]")
        check_labels_arg(y, x.shape[0], self.embed.num_embeddings)
        return (out * self.embed(y).to(out.dtype)).sum(1) / math.sqrt(out.shape[1])


@torch.no_grad()
def r3gan_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """R3GAN's fix-up initialisation, in place, drawing only from ``generator``
    (``None``: the global RNG, as ``GAN.init``'s ``reset_parameters()`` pass does).

    Conv and linear weights ~ N(0, gain^2 / fan_in): the first two convs of
    every residual branch with gain ``sqrt(2 / 1.04) * L ** (-1 / (2m - 2))``
    (``L`` residual blocks in the network, ``m = 3``), the branch's last conv
    zero, every other layer gain 1; activation biases 0; G's 4x4 basis and the
    class embeddings ~ N(0, 1). Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (_Conv, _Linear, _Basis, _BiasAct)):
            m.reset_parameters(generator)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 1.0, generator=generator)
    return module


def r3gan(image_size: int = 32, channels: int = 3, *, latent_dim: int = 64, width: int | Sequence[int] = 768,
          blocks: int = 2, expansion: int = 2, group_channels: int = 16, kernel: int = 3,
          num_classes: int | None = None, generator: torch.Generator | None = None
          ) -> tuple[R3GANGenerator, R3GANDiscriminator]:
    """R3GAN's ``(G, D)`` for ``image_size`` px images with ``channels`` channels.

    Defaults: the paper's CIFAR-10 model (official ``train.py`` preset
    ``CIFAR10``: width 768 per stage, 2 blocks per stage, bottleneck expansion 2,
    96 groups in the 1536-channel bottleneck = ``group_channels`` 16, latent 64).
    ``width`` may list one width per stage, 4x4 first (FFHQ-256: 768, 768, 768,
    768, 384, 192, 96). Both networks draw their initial weights only from
    ``generator`` (D after G)."""
    kw = {"width": width, "blocks": blocks, "expansion": expansion, "group_channels": group_channels, "kernel": kernel,
              "num_classes": num_classes, "generator": generator}
    return (R3GANGenerator(latent_dim, image_size, channels, **kw),  # type: ignore[arg-type]
            R3GANDiscriminator(image_size, channels, **kw))  # type: ignore[arg-type]
