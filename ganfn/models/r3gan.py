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

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import check_labels_arg

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
    One fixed single-channel filter over ``B * C`` maps, so under ``vmap`` the
    members fold into the batch."""
    b, c, h, w = x.shape
    taps = x.new_tensor([1.0, 3.0, 3.0, 1.0]) / 8
    kernel = (taps[:, None] * taps[None, :])[None, None]
    y = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(y, kernel, stride=2).reshape(b, c, h // 2, w // 2)


def _conv(c_in: int, c_out: int, kernel: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, groups=groups, bias=False)


class _BiasAct(nn.Module):
    """x + bias (per channel), then leaky ReLU(0.2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.reshape(1, -1, 1, 1), _SLOPE)


class _Block(nn.Module):
    """Inverted-bottleneck residual block: ``x + conv3(act(conv2(act(conv1(x)))))``,
    conv2 grouped. [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, width: int, expansion: int, group_channels: int, kernel: int) -> None:
        super().__init__()
        wide = width * expansion
        if wide % group_channels:
            raise ValueError(f"width * expansion = {wide} is not a multiple of group_channels = {group_channels}: "
                             "choose a width or group_channels that divides it")
        self.conv1, self.act1 = _conv(width, wide), _BiasAct(wide)
        self.conv2, self.act2 = _conv(wide, wide, kernel, groups=wide // group_channels), _BiasAct(wide)
        self.conv3 = _conv(wide, width)

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
        self.basis = nn.Parameter(torch.zeros(ws[0], 4, 4))
        self.basis_linear = nn.Linear(z_in, ws[0], bias=False)
        self.stages = nn.ModuleList()
        for i, w in enumerate(ws):
            layers: list[nn.Module] = [] if i == 0 or ws[i - 1] == w else [_conv(ws[i - 1], w)]
            layers += [_Block(w, expansion, group_channels, kernel) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*layers))
        self.out = _conv(ws[-1], channels)
        r3gan_init(self, generator)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        z = z.reshape(z.shape[0], -1)
        if self.embed is not None:
            check_labels_arg(y, z.shape[0], self.embed.num_embeddings)
            z = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)
        h = self.basis[None] * self.basis_linear(z)[:, :, None, None]
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
        self.inp = _conv(channels, ws[0])
        self.stages = nn.ModuleList()
        for i, w in enumerate(ws):
            layers: list[nn.Module] = [_Block(w, expansion, group_channels, kernel) for _ in range(blocks)]
            if i + 1 < len(ws) and ws[i + 1] != w:
                layers.append(_conv(w, ws[i + 1]))  # after the downsampling, see forward
            self.stages.append(nn.Sequential(*layers))
        self.basis = nn.Conv2d(ws[-1], ws[-1], 4, groups=ws[-1], bias=False)  # depthwise 4x4 -> 1x1
        out_dim = 1 if num_classes is None else ws[-1]
        self.head = nn.Linear(ws[-1], out_dim, bias=False)
        self.embed = nn.Embedding(num_classes, out_dim) if num_classes is not None else None
        r3gan_init(self, generator)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.inp(x)
        for i, stage in enumerate(self.stages):
            blocks = [m for m in stage if isinstance(m, _Block)]
            for b in blocks:
                h = b(h)
            if i + 1 < len(self.stages):
                h = bilinear_down(h)
                if len(stage) > len(blocks):
                    h = stage[-1](h)
        out = self.head(self.basis(h).reshape(x.shape[0], -1))
        if self.embed is None:
            return out.reshape(x.shape[0])
        check_labels_arg(y, x.shape[0], self.embed.num_embeddings)
        return (out * self.embed(y).to(out.dtype)).sum(1) / math.sqrt(out.shape[1])


@torch.no_grad()
def r3gan_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """R3GAN's fix-up initialisation, in place, drawing only from ``generator``.

    Weights ~ N(0, gain^2 / fan_in): the first two convs of every residual
    branch with gain ``sqrt(2 / 1.04) * L ** (-1 / (2m - 2))`` (``L`` blocks in
    ``module``, ``m = 3``), the branch's last conv zero, every other conv and
    linear layer gain 1; biases 0; G's 4x4 basis and the class embeddings ~ N(0, 1)."""
    blocks = [m for m in module.modules() if isinstance(m, _Block)]
    branch_gain = _GAIN * max(len(blocks), 1) ** (-1 / (2 * _BRANCH_CONVS - 2))
    in_branch = {id(b.conv1): branch_gain for b in blocks} | {id(b.conv2): branch_gain for b in blocks}
    last = {id(b.conv3) for b in blocks}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, 0.0, 0.0 if id(m) in last else in_branch.get(id(m), 1.0) / math.sqrt(fan_in),
                            generator=generator)
        elif isinstance(m, _BiasAct):
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 1.0, generator=generator)
    if isinstance(module, R3GANGenerator):
        nn.init.normal_(module.basis, 0.0, 1.0, generator=generator)
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
