"""Class-conditional generators and discriminators.

Same conventions as the unconditional models (``ganfn.models``), plus an int64
label argument: a generator maps ``(z [B, latent_dim], y [B])`` to samples and a
discriminator ``(x [B, *sample_shape], y [B])`` to scores [B] (an ACGAN
discriminator to ``(scores [B], class logits [B, K])``). Every model has a
``num_classes`` attribute. Labels index embeddings, so the models are pure
functions of (parameters, buffers, inputs), safe under ``torch.func``.

- :class:`CondMLPGenerator` / :class:`CondMLPDiscriminator`: the conditional GAN
  of Mirza & Osindero (2014): a learned label embedding concatenated to the input.
- :class:`CondDCGANGenerator`: DCGAN with conditional batch norm (a per-class
  scale and shift after each batch norm; de Vries et al. 2017).
- :class:`ProjectionDiscriminator`: SNGAN-projection (Miyato & Koyama 2018): the
  SNGAN conv body phi, then ``psi(phi(x)) + <embed(y), phi(x)>``; meant for
  spectral normalisation (``wants_spectral_norm``), the embedding included.
- :class:`ACGANDiscriminator`: the same body with a score head and a K-way
  class head (Odena et al. 2017); use it with ``ganfn.losses.acgan``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import (
    ConditionalBatchNorm2d,
    FullConvTranspose2d,
    Shape,
    activation,
    as_shape,
    check_labels_arg,
    dcgan_init,
    default_init,
    n_doublings,
    sngan_conv_body,
)
from .linear import Linear

__all__ = [
    "CondMLPGenerator",
    "CondMLPDiscriminator",
    "CondDCGANGenerator",
    "ProjectionDiscriminator",
    "ACGANDiscriminator",
]


def _mlp(d_in: int, hidden: int, depth: int, act: type[nn.Module], **act_kw) -> tuple[list[nn.Module], int]:
    if depth < 1:
        raise ValueError(f"depth (number of hidden layers) must be >= 1, got {depth}")
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [Linear(d_in, hidden), act(**act_kw)]
        d_in = hidden
    return layers, d_in


def _check_classes(num_classes: int) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes


class CondMLPGenerator(nn.Module):
    """Conditional MLP generator: ``[z, embed(y)]`` -> Linear-ReLU x depth -> Linear-act.

    (z [B, latent_dim], y [B]) -> samples [B, *out_shape]. ``embed_dim`` defaults
    to ``num_classes`` (the size of a one-hot label, as in Mirza & Osindero 2014).
    """

    def __init__(
        self,
        latent_dim: int,
        out_shape: Shape,
        num_classes: int,
        hidden: int = 128,
        depth: int = 1,
        out_act: str | None = "tanh",
        embed_dim: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = int(latent_dim), _check_classes(num_classes)
        self.sample_shape = as_shape(out_shape)
        self.embed = nn.Embedding(num_classes, embed_dim or num_classes)
        layers, d = _mlp(self.latent_dim + self.embed.embedding_dim, hidden, depth, nn.ReLU)
        self.net = nn.Sequential(*layers, Linear(d, math.prod(self.sample_shape)), activation(out_act))
        if generator is not None:
            default_init(self, generator)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        check_labels_arg(y, z.shape[0], self.num_classes)
        h = torch.cat([z.reshape(z.shape[0], -1), self.embed(y).to(z.dtype)], dim=1)
        return self.net(h).reshape(z.shape[0], *self.sample_shape)


class CondMLPDiscriminator(nn.Module):
    """Conditional MLP discriminator: ``[flatten(x), embed(y)]`` -> Linear-LeakyReLU x depth -> Linear.

    (x [B, *in_shape], y [B]) -> logits [B]. No batch norm, no sigmoid.
    """

    def __init__(
        self,
        in_shape: Shape,
        num_classes: int,
        hidden: int = 128,
        depth: int = 1,
        negative_slope: float = 0.2,
        embed_dim: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.sample_shape, self.num_classes = as_shape(in_shape), _check_classes(num_classes)
        self.embed = nn.Embedding(num_classes, embed_dim or num_classes)
        layers, d = _mlp(math.prod(self.sample_shape) + self.embed.embedding_dim, hidden, depth, nn.LeakyReLU,
                         negative_slope=negative_slope)
        self.net = nn.Sequential(*layers, Linear(d, 1))
        if generator is not None:
            default_init(self, generator)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_labels_arg(y, x.shape[0], self.num_classes)
        h = torch.cat([x.reshape(x.shape[0], -1), self.embed(y).to(x.dtype)], dim=1)
        return self.net(h).reshape(x.shape[0])


class CondDCGANGenerator(nn.Module):
    """DCGAN generator with conditional batch norm.

    (z [B, latent_dim], y [B]) -> images [B, channels, size, size]. The layout of
    :class:`~ganfn.models.DCGANGenerator` (a 4x4 map of ``width * 2**(n-1)``
    channels, then n - 1 stride-2 transposed convs halving the channels, a last
    one to ``channels`` and tanh), with every BatchNorm replaced by a
    :class:`~ganfn.models.layers.ConditionalBatchNorm2d`: the class picks the
    scale and shift of each normalised feature map. DCGAN-initialised.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        num_classes: int = 10,
        size: int = 64,
        channels: int = 3,
        width: int = 64,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n = n_doublings(size)
        self.latent_dim, self.num_classes = int(latent_dim), _check_classes(num_classes)
        self.sample_shape = (channels, size, size)
        ch = width * 2 ** (n - 1)
        convs: list[nn.Module] = [FullConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False)]  # 1x1 -> 4x4
        norms: list[nn.Module] = [ConditionalBatchNorm2d(ch, num_classes)]
        for _ in range(n - 1):
            convs.append(FullConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False))
            norms.append(ConditionalBatchNorm2d(ch // 2, num_classes))
            ch //= 2
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.out = FullConvTranspose2d(ch, channels, 4, 2, 1, bias=False)
        dcgan_init(self, generator)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        check_labels_arg(y, z.shape[0], self.num_classes)
        h = z.reshape(z.shape[0], self.latent_dim, 1, 1)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = torch.relu(norm(conv(h), y))
        return torch.tanh(self.out(h))


class _SNGANBodyDiscriminator(nn.Module):
    """The SNGAN conv body ``phi`` and a linear score head ``psi``; subclasses
    add their class-dependent part. Meant for spectral normalisation."""

    wants_spectral_norm = True

    def __init__(self, size: int, channels: int, width: int, num_classes: int, negative_slope: float) -> None:
        super().__init__()
        self.sample_shape, self.num_classes = (channels, size, size), _check_classes(num_classes)
        layers, self.features = sngan_conv_body(size, channels, width, negative_slope)
        self.body = nn.Sequential(*layers)
        self.head = Linear(self.features, 1)

    def _phi_psi(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        check_labels_arg(y, x.shape[0], self.num_classes)
        h = self.body(x)
        return h, self.head(h).reshape(x.shape[0])


class ProjectionDiscriminator(_SNGANBodyDiscriminator):
    """SNGAN-projection discriminator (Miyato & Koyama 2018), SNGAN conv body.

    (images [B, channels, size, size], y [B]) -> logits [B]:
    ``f(x, y) = psi(phi(x)) + <V[y], phi(x)>`` with phi the SNGAN conv body
    (:func:`~ganfn.models.layers.sngan_conv_body`), psi a linear layer and V a
    class embedding [num_classes, F]. ``wants_spectral_norm = True``: ganfn
    normalises every conv and linear weight and the embedding V, as the paper
    does (``sn_weight_names``).
    """

    def __init__(self, size: int = 32, channels: int = 3, width: int = 64, num_classes: int = 10,
                 negative_slope: float = 0.1, *, generator: torch.Generator | None = None) -> None:
        super().__init__(size, channels, width, num_classes, negative_slope)
        self.embed = nn.Embedding(num_classes, self.features)
        dcgan_init(self, generator)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h, score = self._phi_psi(x, y)
        return score + (self.embed(y).to(h.dtype) * h).sum(1)


class ACGANDiscriminator(_SNGANBodyDiscriminator):
    """Auxiliary-classifier discriminator (Odena et al. 2017), SNGAN conv body.

    (images [B, channels, size, size], y [B]) -> (scores [B], class logits
    [B, num_classes]). ``y`` is accepted (ganfn calls every conditional D as
    ``D(x, y)``) but unused: ACGAN's D sees only the image and must *predict*
    the class. Pair it with ``ganfn.losses.acgan``.
    """

    def __init__(self, size: int = 32, channels: int = 3, width: int = 64, num_classes: int = 10,
                 negative_slope: float = 0.1, *, generator: torch.Generator | None = None) -> None:
        super().__init__(size, channels, width, num_classes, negative_slope)
        self.classifier = Linear(self.features, num_classes)
        dcgan_init(self, generator)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        h, score = self._phi_psi(x, y)
        return score, self.classifier(h)
