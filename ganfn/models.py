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

Discriminators contain no BatchNorm unless asked (``norm="batch"`` in
``DCGANDiscriminator``), as the reference material advises: batch statistics
leak information between samples and break per-sample gradient penalties.
"""
from __future__ import annotations

import math
from typing import Sequence

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
    "sn_weight_names",
    "build",
    "MODELS",
]

Shape = int | Sequence[int]


def _shape(s: Shape) -> tuple[int, ...]:
    return (int(s),) if isinstance(s, int) else tuple(int(v) for v in s)


def _act(name: str | None) -> nn.Module:
    acts = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, None: nn.Identity}
    if name not in acts:
        raise ValueError(f"out_act must be 'tanh', 'sigmoid' or None, got {name!r}")
    return acts[name]()


NORMS = ("batch", "layer", "none")


def _check_norm(kind: str) -> None:
    # Checked up front: small models may build no normalisation layer at all.
    if kind not in NORMS:
        raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # LayerNorm over (C, H, W) with a per-channel affine; unlike nn.LayerNorm it
        # needs no spatial size, and it is per-sample, so vmap and penalties are safe.
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")


def _n_doublings(size: int) -> int:
    # Every conv model starts or ends at 4x4 and changes resolution by 2x per layer.
    n = int(round(math.log2(size))) - 2 if size > 0 else -1
    if n < 1 or 4 * 2**n != size:
        raise ValueError(f"size must be a power of two >= 8 (8, 16, 32, 64, 128, ...), got {size}")
    return n


# ----------------------------------------------------------------- init -----


@torch.no_grad()
def dcgan_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """DCGAN initialisation (Radford et al. 2016), in place; returns ``module``.

    Conv / transposed-conv / linear weights ~ N(0, 0.02), their biases 0;
    normalisation scales ~ N(1, 0.02), shifts 0. Draws only from ``generator``
    (``None`` falls back to torch's global RNG, like any ``nn.init``).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
                nn.init.zeros_(m.bias)
    return module


@torch.no_grad()
def default_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """PyTorch's default initialisation of linear / conv layers, from ``generator``.

    The same distribution as ``reset_parameters()`` (Kaiming-uniform weights with
    a=sqrt(5), biases U(+-1/sqrt(fan_in))), but with an explicit generator;
    normalisation layers get scale 1, shift 0 and fresh running statistics.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()  # deterministic: ones, zeros, running stats reset
    return module


def sn_weight_names(module: nn.Module) -> list[str]:
    """Names (as in ``named_parameters``) of the weights spectral norm applies to.

    Every conv / transposed-conv / linear weight; biases and normalisation
    parameters are left alone. ganfn's core normalises these as a pure parameter
    transform (``torch.nn.utils.spectral_norm`` keeps state in hooks and fails
    under ``vmap``).
    """
    names = []
    for prefix, m in module.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            names.append(f"{prefix}.weight" if prefix else "weight")
    return names


# ------------------------------------------------------------------ MLP -----


class MLPGenerator(nn.Module):
    """MLP generator (reference 003): Linear-ReLU, ``depth`` times, then Linear-Tanh.

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
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        layers += [nn.Linear(d, math.prod(self.sample_shape)), _act(out_act)]
        self.net = nn.Sequential(*layers)
        if generator is not None:
            default_init(self, generator)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).reshape(z.shape[0], *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """MLP discriminator (reference 003): Linear-LeakyReLU, ``depth`` times, then Linear.

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
            layers += [nn.Linear(d, hidden), nn.LeakyReLU(negative_slope)]
            d = hidden
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        if generator is not None:
            default_init(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape[0])


# ---------------------------------------------------------------- DCGAN -----


class DCGANGenerator(nn.Module):
    """DCGAN generator (reference 004): transposed convs, BatchNorm + ReLU, tanh.

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
            nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=bias),  # 1x1 -> 4x4
            _norm2d(norm, ch),
            nn.ReLU(),
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=bias), _norm2d(norm, ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self, generator)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator (reference 004): strided convs with LeakyReLU(0.2).

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
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(negative_slope)]
        ch = width
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=bias), _norm2d(norm, ch * 2), nn.LeakyReLU(negative_slope)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0))  # 4x4 -> 1x1
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
        n = _n_doublings(size)
        self.sample_shape = (channels, size, size)
        act = lambda: nn.LeakyReLU(negative_slope)  # noqa: E731
        layers: list[nn.Module] = []
        c_in, ch = channels, width
        for _ in range(n):
            layers += [nn.Conv2d(c_in, ch, 3, 1, 1), act(), nn.Conv2d(ch, ch, 4, 2, 1), act()]
            c_in, ch = ch, ch * 2
        layers += [nn.Conv2d(c_in, ch, 3, 1, 1), act(), nn.Flatten(), nn.Linear(ch * 16, 1)]
        self.net = nn.Sequential(*layers)
        dcgan_init(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0])


# ------------------------------------------------------------- registry -----

MODELS = ("mlp", "dcgan", "sngan")


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
    generator: torch.Generator | None = None,
) -> tuple[nn.Module, nn.Module, int]:
    """Build ``(generator, discriminator, latent_dim)`` for data of ``data_shape``.

    ``data_shape`` is the shape of one sample: ``(2,)`` for the toy mixtures,
    ``(C, H, W)`` for images.

    - ``mlp``: MLPGenerator / MLPDiscriminator (reference 003). Images: latent
      100, hidden 128, depth 1, tanh output. Vector data (toy mixtures): latent 16,
      hidden 256, depth 3, unbounded output (the modes lie outside [-1, 1]).
    - ``dcgan``: DCGANGenerator (``g_norm``) / DCGANDiscriminator (``d_norm``,
      default ``"none"``: no batch statistics in D, as the reference advises;
      pass ``"batch"`` for the classic DCGAN), latent 100, ``width``.
    - ``sngan``: DCGANGenerator / SNDiscriminator (``wants_spectral_norm``).

    ``generator`` makes the initial weights independent of the global RNG.
    """
    shape = _shape(data_shape)
    if name == "mlp":
        image = len(shape) > 1
        latent = latent_dim or (100 if image else 16)
        h = hidden or (128 if image else 256)
        dp = depth or (1 if image else 3)
        g = MLPGenerator(latent, shape, h, dp, out_act="tanh" if image else None, generator=generator)
        d = MLPDiscriminator(shape, h, dp, generator=generator)
        return g, d, latent
    if name in ("dcgan", "sngan"):
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"model {name!r} needs square images (C, S, S), got data shape {shape}; use 'mlp'")
        c, s = shape[0], shape[1]
        latent = latent_dim or 100
        g = DCGANGenerator(latent, s, c, width, g_norm, generator=generator)
        if name == "dcgan":
            d: nn.Module = DCGANDiscriminator(s, c, width, d_norm, generator=generator)
        else:
            d = SNDiscriminator(s, c, width, generator=generator)
        return g, d, latent
    raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
