"""StyleGAN2's generator and discriminator (Karras et al., CVPR 2020, "Analyzing
and Improving the Image Quality of StyleGAN"), in plain PyTorch, for vmap.

- Mapping network: z normalised to unit second moment, ``mapping_layers``
  fully connected layers (leaky ReLU(0.2) x sqrt 2, learning-rate multiplier
  0.01) to w.
- Synthesis ("skip" G): a learned 4x4 constant; per resolution two 3x3
  modulated, demodulated convolutions (one at 4x4), each followed by a noise
  input, a bias and leaky ReLU x sqrt 2; a 1x1 modulated toRGB (no
  demodulation) per resolution, summed into the upsampled image of the one
  below. Every layer gets the same w, unless the latent carries a second z
  and a per-layer choice (style mixing, :func:`ganfn.parts.style_mixing`).
- Discriminator ("resnet" D, or plain with ``residual=False``, the
  architecture StyleGAN2-ADA uses for CIFAR-10): fromRGB at full resolution,
  per resolution two 3x3 convs and a downsampling, residual shortcut
  ``(skip + x) / sqrt 2``; at 4x4 minibatch standard deviation
  (:class:`MinibatchStd`), a 3x3 conv, a fully connected layer and the output.
- Equalised learning rate everywhere: weights stored ~ N(0, 1) (N(0, 1/lr_mul^2)
  in the mapping) and scaled by ``lr_mul / sqrt(fan_in)`` when used.

**Modulated convolution under vmap.** Written as the "non-fused" form of the
official code: the input is scaled by the styles, convolved with the shared
weight, and the output scaled by the demodulation coefficients
``1 / sqrt(sum_{i,k} (w[o,i,k] s[b,i])^2 + 1e-8)``. That is the same function
as a per-sample weight, but one ordinary convolution per layer: under ``vmap``
over members it becomes one convolution with one group per member (not one
group per sample, as the grouped "fused" form would).

**Noise inputs, with a pure step.** Per-pixel noise comes from the latent:
``G.latent_dim = z_dim + noise_numel``, and G splits each latent vector into z
(its first ``z_dim`` entries) and the per-layer N(0, 1) noise maps (the rest,
in layer order, ``G.noise_shapes``). The noise is therefore drawn with the
latents by ``gan.draw_latents`` / ``gan.draw_noise`` from an explicit
``torch.Generator``, never from the global RNG, and a sample is a pure
function of its latent. Fixed noise (the official ``noise_mode="const"``
without stored buffers) is a latent whose noise part is fixed; zero noise is
a latent whose noise part is zero.

Deviations from the official code, for plain PyTorch: resampling is bilinear
(``F.interpolate`` up, the [1, 3, 3, 1] triangle filter down) applied before
the 3x3 convolution instead of the FIR filter fused into a strided or
transposed convolution; no ``w_avg`` buffer (truncation would need a state
update in forward); no fp16 clamping; no class conditioning.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .r3gan import bilinear_down, bilinear_up

__all__ = ["MinibatchStd", "StyleGAN2Discriminator", "StyleGAN2Generator", "stylegan2", "stylegan2_init"]

_SQRT2 = math.sqrt(2)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * _SQRT2


class _EqLinear(nn.Module):
    """Fully connected layer with equalised learning rate: [B, c_in] -> [B, c_out]."""

    def __init__(self, c_in: int, c_out: int, *, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c_out, c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.bias_init, self.lr_mul, self.act = bias_init, lr_mul, act

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0 / self.lr_mul, generator=generator)
        nn.init.constant_(self.bias, self.bias_init / self.lr_mul)

    def forward(self, x: Tensor) -> Tensor:
        gain = self.lr_mul / math.sqrt(self.weight.shape[1])
        y = F.linear(x, self.weight * gain, self.bias * self.lr_mul)
        return _lrelu(y) if self.act else y


class _EqConv(nn.Module):
    """Conv with equalised learning rate, optional downsampling first (bilinear),
    bias and leaky ReLU x sqrt 2: [B, c_in, H, W] -> [B, c_out, H', W']."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, down: bool = False, bias: bool = True,
                 act: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.down, self.act = down, act

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0, generator=generator)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = bilinear_down(x) if self.down else x
        w = self.weight * (1 / math.sqrt(self.weight[0].numel()))
        y = F.conv2d(x, w, self.bias, padding=self.weight.shape[-1] // 2)
        return _lrelu(y) if self.act else y


class _ModConv(nn.Module):
    """Modulated convolution (StyleGAN2, Sec. 2.2): x [B, c_in, H, W], w [B, w_dim]
    (, noise [B, 1, H', W']) -> [B, c_out, H', W'] (H' = 2H with ``up``).
    ``demod`` and ``noise`` off and no activation for toRGB."""

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, *, up: bool = False, demod: bool = True,
                 noise: bool = True) -> None:
        super().__init__()
        self.affine = _EqLinear(w_dim, c_in, bias_init=1.0, act=False)
        self.weight = nn.Parameter(torch.zeros(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise_strength = nn.Parameter(torch.zeros(())) if noise else None
        self.up, self.demod = up, demod

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0, generator=generator)
        nn.init.zeros_(self.bias)
        if self.noise_strength is not None:
            nn.init.zeros_(self.noise_strength)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        s = self.affine(w)  # [B, c_in]
        weight = self.weight * (1 / math.sqrt(self.weight[0].numel()))
        x = x * s[:, :, None, None]
        x = bilinear_up(x) if self.up else x
        y = F.conv2d(x, weight, padding=self.weight.shape[-1] // 2)
        if self.demod:
            d = torch.rsqrt(s.square() @ weight.square().sum((2, 3)).t() + 1e-8)  # [B, c_out]
            y = y * d[:, :, None, None]
        if self.noise_strength is not None and noise is not None:
            y = y + noise * self.noise_strength
        y = y + self.bias[None, :, None, None]
        return _lrelu(y) if self.demod else y


class _Const(nn.Module):
    """G's learned 4x4 input [C, 4, 4], ~ N(0, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 4, 4))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            nn.init.normal_(self.weight, 0.0, 1.0, generator=generator)


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al., 2018, Sec. 3; StyleGAN2's
    form): [B, C, H, W] -> [B, C + features, H, W].

    The batch is split into groups of ``G = gcd(group_size, B)`` samples
    (sample ``n`` in group ``n mod (B / G)``, as the official reshape does);
    within each group the standard deviation of every feature and pixel over
    the group's samples is averaged over pixels and over the ``C / features``
    channels of each of ``features`` channel slices, and appended as
    ``features`` constant maps to every sample of the group. Samples interact
    only within their group; under ``vmap`` the groups stay within a member.
    R1 / R2 take the input gradient of ``D(x).sum()``, so with this layer a
    sample's penalty gradient includes its group's cross terms, as in the
    official StyleGAN2 code, which does the same.
    """

    def __init__(self, group_size: int = 4, features: int = 1) -> None:
        super().__init__()
        self.group_size, self.features = int(group_size), int(features)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if c % self.features:
            raise ValueError(f"MinibatchStd: {c} channels do not split into {self.features} feature slices")
        g, f = math.gcd(self.group_size, b), self.features
        y = x.reshape(g, b // g, f, c // f, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # [B/G, F, c, H, W]
        y = y.mean((2, 3, 4)).reshape(b // g, f, 1, 1).repeat(g, 1, h, w)  # [B, F, H, W]
        return torch.cat([x, y], dim=1)


def _widths(width: int | Sequence[int], n: int) -> list[int]:
    ws = [int(width)] * n if isinstance(width, int) else [int(v) for v in width]
    if len(ws) != n or min(ws) < 1:
        raise ValueError(f"width must be an int or {n} positive ints (one per resolution, 4x4 first), got {width!r}")
    return ws


def _n_res(size: int) -> int:
    n = round(math.log2(size)) - 1 if size > 0 else 0
    if n < 2 or 2 ** (n + 1) != size:
        raise ValueError(f"image_size must be a power of two >= 8 (8, 16, 32, 64, ..., 256), got {size}")
    return n


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 skip generator: latents [B, z_dim + noise_numel] -> images [B, channels, S, S].

    The latent's first ``z_dim`` entries are z, the rest the noise maps
    (``noise_shapes``, layer order); see the module docstring. ``width``: one
    int or one per resolution, 4x4 first."""

    def __init__(self, image_size: int = 32, channels: int = 3, *, z_dim: int = 512, w_dim: int = 512,
                 mapping_layers: int = 8, width: int | Sequence[int] = 512,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        ws = _widths(width, _n_res(image_size))
        self.z_dim, self.sample_shape = int(z_dim), (channels, image_size, image_size)
        dims = [z_dim] + [w_dim] * mapping_layers
        self.mapping = nn.ModuleList([_EqLinear(a, b, lr_mul=0.01) for a, b in itertools.pairwise(dims)])
        self.const = _Const(ws[0])
        self.convs, self.to_rgb = nn.ModuleList(), nn.ModuleList()
        self.noise_shapes: list[tuple[int, int, int]] = []
        for i, c in enumerate(ws):
            res = 4 * 2**i
            if i > 0:
                self.convs.append(_ModConv(ws[i - 1], c, 3, w_dim, up=True))
                self.noise_shapes.append((1, res, res))
            self.convs.append(_ModConv(c, c, 3, w_dim))
            self.noise_shapes.append((1, res, res))
            self.to_rgb.append(_ModConv(c, channels, 1, w_dim, demod=False, noise=False))
        self.noise_numel = sum(math.prod(s) for s in self.noise_shapes)
        self.latent_dim = self.z_dim + self.noise_numel
        # One w per conv, and toRGB sharing the next conv's (the official code's num_ws).
        self.num_ws = len(self.convs) + 1
        stylegan2_init(self, generator)

    def _map(self, z: Tensor) -> Tensor:
        w = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
        for layer in self.mapping:
            w = layer(w)
        return w

    def forward(self, latent: Tensor) -> Tensor:
        """Latents [B, latent_dim] (z, noise), or for style mixing [B, latent_dim +
        z_dim + num_ws] (z, noise, a second z, then per w index 1: take the second
        z's w, 0: the first's) -> images [B, channels, S, S]."""
        b = latent.shape[0]
        latent = latent.reshape(b, -1)
        mixing = self.latent_dim + self.z_dim + self.num_ws
        if latent.shape[1] not in (self.latent_dim, mixing):
            raise ValueError(f"StyleGAN2Generator takes latents [B, {self.latent_dim}] (z_dim {self.z_dim} + "
                             f"{self.noise_numel} noise values), or [B, {mixing}] with style mixing (+ a second z "
                             f"and {self.num_ws} per-layer choices), got {tuple(latent.shape)}")
        w = self._map(latent[:, : self.z_dim])
        ws = [w] * self.num_ws
        if latent.shape[1] == mixing:
            w2, pick = self._map(latent[:, self.latent_dim: self.latent_dim + self.z_dim]), latent[:, -self.num_ws:]
            ws = [torch.where(pick[:, i:i + 1] > 0.5, w2, w) for i in range(self.num_ws)]
        sizes = [math.prod(s) for s in self.noise_shapes]
        rest = latent[:, self.z_dim: self.latent_dim]
        noises = [n.reshape(b, *s) for n, s in zip(rest.split(sizes, dim=1), self.noise_shapes, strict=True)]
        x = self.const.weight[None].expand(b, -1, -1, -1)
        x = self.convs[0](x, ws[0], noises[0])
        img = self.to_rgb[0](x, ws[1])
        for i, to_rgb in enumerate(self.to_rgb[1:]):
            x = self.convs[2 * i + 1](x, ws[2 * i + 1], noises[2 * i + 1])
            x = self.convs[2 * i + 2](x, ws[2 * i + 2], noises[2 * i + 2])
            img = bilinear_up(img) + to_rgb(x, ws[2 * i + 3])
        return img


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 discriminator: images [B, channels, S, S] -> logits [B].

    ``residual=True``: the "resnet" D (StyleGAN2's default); ``False``: the
    plain "orig" D (StyleGAN2-ADA's CIFAR-10 setting). ``mbstd_group``: the
    minibatch-std group size (4 by default, 32 in StyleGAN2-ADA's cifar config)."""

    def __init__(self, image_size: int = 32, channels: int = 3, *, width: int | Sequence[int] = 512,
                 residual: bool = True, mbstd_group: int = 4, mbstd_features: int = 1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        ws = _widths(width, _n_res(image_size))[::-1]  # highest resolution first
        self.sample_shape, self.residual = (channels, image_size, image_size), residual
        self.from_rgb = _EqConv(channels, ws[0], 1)
        self.conv0 = nn.ModuleList([_EqConv(c, c, 3) for c in ws[:-1]])
        self.conv1 = nn.ModuleList([_EqConv(c, n, 3, down=True) for c, n in itertools.pairwise(ws)])
        self.skip = nn.ModuleList([_EqConv(c, n, 1, down=True, bias=False, act=False)
                                   for c, n in itertools.pairwise(ws)]
                                  if residual else [])
        self.mbstd = MinibatchStd(mbstd_group, mbstd_features)
        c = ws[-1]
        self.conv = _EqConv(c + mbstd_features, c, 3)
        self.fc = _EqLinear(c * 16, c)
        self.out = _EqLinear(c, 1, act=False)
        stylegan2_init(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        h = self.from_rgb(x)
        for i, (c0, c1) in enumerate(zip(self.conv0, self.conv1, strict=True)):
            y = c1(c0(h))
            h = (self.skip[i](h) + y) * (1 / _SQRT2) if self.residual else y
        h = self.conv(self.mbstd(h))
        return self.out(self.fc(h.reshape(h.shape[0], -1))).reshape(x.shape[0])


@torch.no_grad()
def stylegan2_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """StyleGAN2's initialisation, in place, drawing only from ``generator``:
    weights ~ N(0, 1) (N(0, 1/lr_mul^2) in the mapping; the runtime gain makes
    them He-scaled), biases 0 (the style affines 1), noise strengths 0, the
    generator's 4x4 constant ~ N(0, 1)."""
    for m in module.modules():
        if isinstance(m, (_EqLinear, _EqConv, _ModConv, _Const)):
            m.reset_parameters(generator)
    return module


def stylegan2(image_size: int = 32, channels: int = 3, *, z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
              width: int | Sequence[int] = 512, residual: bool = True, mbstd_group: int = 4,
              generator: torch.Generator | None = None) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """StyleGAN2's ``(G, D)`` for ``image_size`` px images with ``channels`` channels.

    Defaults: StyleGAN2 (config F: 512 channels up to 64 px, 8 mapping layers,
    residual D, minibatch-std groups of 4). StyleGAN2-ADA's ``cifar`` config:
    ``mapping_layers=2, residual=False, mbstd_group=32``. ``G.latent_dim`` is
    ``z_dim`` plus the noise maps' size (see the module docstring): give it to
    ``GAN(latent_dim=...)``. Initial weights come only from ``generator`` (D
    after G)."""
    g = StyleGAN2Generator(image_size, channels, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers, width=width,
                           generator=generator)
    d = StyleGAN2Discriminator(image_size, channels, width=width, residual=residual, mbstd_group=mbstd_group,
                               generator=generator)
    return g, d
