"""Generators and discriminators: plain ``nn.Module``s, usable with or without ganfn.

Conventions every model here follows, so the functional core can treat them
alike (and so users can drop in their own modules that follow them too):

- a generator maps latents [B, latent_dim] to samples [B, *sample_shape] and
  has attributes ``latent_dim`` and ``sample_shape``;
- a discriminator maps samples [B, *sample_shape] to raw scores (logits) [B]:
  no sigmoid, the losses work on logits;
- no model draws random numbers in ``forward`` (no dropout), so
  ``torch.func.functional_call`` of a model is a pure function of
  (parameters, buffers, input);
- weights can be (re)initialised from an explicit ``torch.Generator``:
  ``dcgan_init(module, generator)`` or ``default_init(module, generator)``,
  or ``generator=`` in any constructor.

Class-conditional models (:mod:`ganfn.models.conditional`, and the ResNets of
:mod:`ganfn.models.resnet` with ``num_classes``) take int64 labels [B] as a
second argument: ``G(z, y)``, ``D(x, y)``, and have a ``num_classes`` attribute.

Discriminators contain no BatchNorm unless asked (``norm="batch"`` in
``DCGANDiscriminator``), as Radford et al. (2016) and Gulrajani et al. (2017) advise: batch statistics
leak information between samples and break per-sample gradient penalties.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "SNDiscriminator",
    "dcgan_init",
    "default_init",
    "FullConv2d",
    "FullConvTranspose2d",
    "Linear",
    "sn_weight_names",
    "build",
    "MODELS",
    "CondMLPGenerator",
    "CondMLPDiscriminator",
    "CondDCGANGenerator",
    "ProjectionDiscriminator",
    "ACGANDiscriminator",
    "ConditionalBatchNorm2d",
    "ResNetGenerator",
    "ResNetDiscriminator",
    "r3gan",
    "R3GANGenerator",
    "R3GANDiscriminator",
    "stylegan2",
    "StyleGAN2Generator",
    "StyleGAN2Discriminator",
    "MinibatchStd",
]

from .conditional import (
    ACGANDiscriminator,
    CondDCGANGenerator,
    CondMLPDiscriminator,
    CondMLPGenerator,
    ProjectionDiscriminator,
)
from .layers import (
    ConditionalBatchNorm2d,
    FullConv2d,
    FullConvTranspose2d,
    Shape,
    dcgan_init,
    default_init,
    sn_weight_names,
    sngan_conv_body,
)
from .layers import activation as _act
from .layers import as_shape as _shape
from .layers import check_norm as _check_norm
from .layers import n_doublings as _n_doublings
from .layers import norm2d as _norm2d
from .linear import Linear
from .r3gan import R3GANDiscriminator, R3GANGenerator, r3gan  # the function shadows the module's name
from .resnet import ResNetDiscriminator, ResNetGenerator
from .stylegan2 import MinibatchStd, StyleGAN2Discriminator, StyleGAN2Generator, stylegan2  # likewise

# ------------------------------------------------------------------ MLP -----


class MLPGenerator(nn.Module):
    """MLP generator (Goodfellow et al., 2014): Linear-ReLU, ``depth`` times, then Linear-Tanh.

    latents [B, latent_dim] -> samples [B, *out_shape]; ``out_shape`` is an int
    (vectors, e.g. 2 for the toy mixtures) or a shape such as (1, 28, 28), in
    which case the last layer's output is unflattened into images.
    ``out_act=None`` gives an unbounded output (toy data outside [-1, 1]).
    """

    def __init__(
        self,
        latent_dim: int,
        out_shape: Shape,
        hidden: int = 128,
        depth: int = 1,
        out_act: str | None = "tanh",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth (number of hidden layers) must be >= 1, got {depth}")
        self.latent_dim = int(latent_dim)
        self.sample_shape = _shape(out_shape)
        layers: list[nn.Module] = []
        d = self.latent_dim
        for _ in range(depth):
            layers += [Linear(d, hidden), nn.ReLU()]
            d = hidden
        layers += [Linear(d, math.prod(self.sample_shape)), _act(out_act)]
        self.net = nn.Sequential(*layers)
        if generator is not None:
            default_init(self, generator)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).reshape(z.shape[0], *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """MLP discriminator (Goodfellow et al., 2014): Linear-LeakyReLU, ``depth`` times, then Linear.

    samples [B, *in_shape] (flattened internally) -> logits [B]. No batch norm
    and no sigmoid.
    """

    def __init__(
        self,
        in_shape: Shape,
        hidden: int = 128,
        depth: int = 1,
        negative_slope: float = 0.2,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth (number of hidden layers) must be >= 1, got {depth}")
        self.sample_shape = _shape(in_shape)
        layers: list[nn.Module] = []
        d = math.prod(self.sample_shape)
        for _ in range(depth):
            layers += [Linear(d, hidden), nn.LeakyReLU(negative_slope)]
            d = hidden
        layers.append(Linear(d, 1))
        self.net = nn.Sequential(*layers)
        if generator is not None:
            default_init(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape[0])


# ---------------------------------------------------------------- DCGAN -----


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al., 2016): transposed convs, BatchNorm + ReLU, tanh.

    latents [B, latent_dim] -> images [B, channels, size, size]. The latent is
    projected to a 4x4 map of ``width * 2**(n-1)`` channels, then ``n`` =
    log2(size) - 2 stride-2 transposed convs double the resolution and halve
    the channels, the last one producing ``channels`` maps: size 64 is the
    classic DCGAN (512-256-128-64 channels at width 64); size 8 and 16 (the
    digits) are the same design with fewer layers, small enough for a CPU.
    ``norm="none"`` or ``"layer"`` replaces BatchNorm (e.g. for vmapped members
    without batch statistics). Weights are DCGAN-initialised (``dcgan_init``).
    """

    def __init__(
        self,
        latent_dim: int = 100,
        size: int = 64,
        channels: int = 3,
        width: int = 64,
        norm: str = "batch",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n = _n_doublings(size)
        _check_norm(norm)
        self.latent_dim = int(latent_dim)
        self.sample_shape = (channels, size, size)
        bias = norm == "none"  # a bias right before a normalisation layer is redundant
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            FullConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=bias),  # 1x1 -> 4x4
            _norm2d(norm, ch),
            nn.ReLU(),
        ]
        for _ in range(n - 1):
            layers += [FullConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=bias), _norm2d(norm, ch // 2), nn.ReLU()]
            ch //= 2
        layers += [FullConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self, generator)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator (Radford et al., 2016): strided convs with LeakyReLU(0.2).

    images [B, channels, size, size] -> logits [B]. ``n`` = log2(size) - 2
    stride-2 convs halve the resolution down to 4x4 while doubling the channels
    from ``width`` (no normalisation after the first, as in DCGAN); a final 4x4
    conv gives one logit. ``norm`` is ``"batch"`` (classic DCGAN), ``"layer"``
    (per-sample, safe with gradient penalties and vmap) or ``"none"``.
    """

    def __init__(
        self,
        size: int = 64,
        channels: int = 3,
        width: int = 64,
        norm: str = "batch",
        negative_slope: float = 0.2,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n = _n_doublings(size)
        _check_norm(norm)
        self.sample_shape = (channels, size, size)
        bias = norm == "none"
        layers: list[nn.Module] = [FullConv2d(channels, width, 4, 2, 1), nn.LeakyReLU(negative_slope)]
        ch = width
        for _ in range(n - 1):
            layers += [FullConv2d(ch, ch * 2, 4, 2, 1, bias=bias), _norm2d(norm, ch * 2), nn.LeakyReLU(negative_slope)]
            ch *= 2
        layers.append(FullConv2d(ch, 1, 4, 1, 0))  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)
        dcgan_init(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0])


class SNDiscriminator(nn.Module):
    """SNGAN-style conv discriminator (Miyato et al. 2018), meant for spectral norm.

    images [B, channels, size, size] -> logits [B]. Per resolution: a 3x3
    stride-1 conv then a 4x4 stride-2 conv, LeakyReLU(0.1) after each, channels
    ``width, 2*width, ...``; at 4x4 one more 3x3 conv and a linear layer. No
    normalisation layers at all: the Lipschitz control is spectral norm.

    It does not normalise anything itself (``torch.nn.utils.spectral_norm``
    keeps state in hooks and fails under ``vmap``); the class attribute
    ``wants_spectral_norm = True`` is the documented flag telling ``ganfn.GAN``
    (whose ``spectral_norm`` option defaults to it) to apply spectral normalisation, as a pure parameter transform in
    the training state, to the weights named by :func:`sn_weight_names`.
    Without it this is simply an unnormalised conv discriminator.
    """

    wants_spectral_norm = True

    def __init__(
        self,
        size: int = 32,
        channels: int = 3,
        width: int = 64,
        negative_slope: float = 0.1,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        layers, features = sngan_conv_body(size, channels, width, negative_slope)
        self.net = nn.Sequential(*layers, Linear(features, 1))
        dcgan_init(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0])


# ------------------------------------------------------------- registry -----

MODELS = ("mlp", "dcgan", "sngan", "resnet", "acgan", "r3gan", "stylegan2")


def build(
    name: str,
    data_shape: Shape,
    *,
    latent_dim: int | None = None,
    width: int = 64,
    hidden: int | None = None,
    depth: int | None = None,
    g_norm: str = "batch",
    d_norm: str = "none",
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[nn.Module, nn.Module, int]:
    """Build ``(generator, discriminator, latent_dim)`` for data of ``data_shape``.

    ``data_shape`` is the shape of one sample: ``(2,)`` for the toy mixtures,
    ``(C, H, W)`` for images.

    - ``mlp``: MLPGenerator / MLPDiscriminator (Goodfellow et al., 2014). Images: latent
      100, hidden 128, depth 1, tanh output. Vector data (toy mixtures): latent 16,
      hidden 256, depth 3, unbounded output (the modes lie outside [-1, 1]).
    - ``dcgan``: DCGANGenerator (``g_norm``) / DCGANDiscriminator (``d_norm``,
      default ``"none"``: no batch statistics in D, as gradient penalties need;
      pass ``"batch"`` for the classic DCGAN), latent 100, ``width``.
    - ``sngan``: DCGANGenerator / SNDiscriminator (``wants_spectral_norm``).
    - ``resnet``: the SNGAN ResNet pair (:mod:`ganfn.models.resnet`), latent 128,
      ``width`` for both networks.
    - ``acgan``: CondDCGANGenerator / ACGANDiscriminator (needs ``num_classes``).
    - ``r3gan``: R3GAN's pair (:mod:`ganfn.models.r3gan`), ``width`` per stage,
      2 blocks per stage, groups of 16 channels, latent 64; conditional with ``num_classes``.
    - ``stylegan2``: StyleGAN2 as StyleGAN2-ADA's ``cifar`` config builds it
      (:mod:`ganfn.models.stylegan2`: 2 mapping layers, plain D, minibatch-std
      groups of 32), ``width`` channels, z of ``latent_dim`` (default 512); the
      returned latent size includes the noise maps. Unconditional only.

    With ``num_classes`` the pair is class-conditional (``G(z, y)``, ``D(x, y)``):
    ``mlp`` -> CondMLPGenerator / CondMLPDiscriminator (label embeddings
    concatenated); ``dcgan`` and ``sngan`` -> CondDCGANGenerator (conditional
    batch norm) / ProjectionDiscriminator; ``resnet`` -> conditional batch norm
    in G and the projection in D.

    ``generator`` makes the initial weights independent of the global RNG.
    """
    shape = _shape(data_shape)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    if name == "acgan" and num_classes is None:
        raise ValueError("model 'acgan' is class-conditional: pass num_classes (ganfn train --conditional)")
    if name == "mlp":
        return _build_mlp(shape, latent_dim, hidden, depth, num_classes, generator)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"model {name!r} needs square images (C, S, S), got data shape {shape}; use 'mlp'")
    c, s = shape[0], shape[1]
    if name in ("r3gan", "stylegan2"):
        return _build_modern(name, c, s, latent_dim, width, num_classes, generator)
    if name == "resnet":
        latent = latent_dim or 128
        return (ResNetGenerator(latent, s, c, width, num_classes, generator=generator),
                ResNetDiscriminator(s, c, width, num_classes, generator=generator), latent)
    latent = latent_dim or 100
    if num_classes is not None:
        g: nn.Module = CondDCGANGenerator(latent, num_classes, s, c, width, generator=generator)
        head = ACGANDiscriminator if name == "acgan" else ProjectionDiscriminator
        return g, head(s, c, width, num_classes, generator=generator), latent
    g = DCGANGenerator(latent, s, c, width, g_norm, generator=generator)
    if name == "dcgan":
        d: nn.Module = DCGANDiscriminator(s, c, width, d_norm, generator=generator)
    else:
        d = SNDiscriminator(s, c, width, generator=generator)
    return g, d, latent


def _build_mlp(shape, latent_dim, hidden, depth, num_classes, generator) -> tuple[nn.Module, nn.Module, int]:
    image = len(shape) > 1
    latent = latent_dim or (100 if image else 16)
    h = hidden or (128 if image else 256)
    dp = depth or (1 if image else 3)
    act = "tanh" if image else None
    if num_classes is None:
        return (MLPGenerator(latent, shape, h, dp, out_act=act, generator=generator),
                MLPDiscriminator(shape, h, dp, generator=generator), latent)
    return (CondMLPGenerator(latent, shape, num_classes, h, dp, out_act=act, generator=generator),
            CondMLPDiscriminator(shape, num_classes, h, dp, generator=generator), latent)


def _build_modern(name, c, s, latent_dim, width, num_classes, generator) -> tuple[nn.Module, nn.Module, int]:
    if name == "r3gan":
        g3, d3 = r3gan(s, c, latent_dim=latent_dim or 64, width=width, num_classes=num_classes, generator=generator)
        return g3, d3, g3.latent_dim
    if num_classes is not None:
        raise ValueError("model 'stylegan2' is unconditional here: drop --conditional, or use r3gan or resnet")
    g2, d2 = stylegan2(s, c, z_dim=latent_dim or 512, w_dim=latent_dim or 512, mapping_layers=2, width=width,
                       residual=False, mbstd_group=32, generator=generator)
    return g2, d2, g2.latent_dim
