"""Random-feature Fréchet distance: an offline figure for any image folder.

A folder of the user's own images has no pretrained classifier, and FID's
Inception weights may be out of reach on a closed machine. A small conv net
with fixed random weights still embeds images in a space where the Fréchet
distance separates image sets by their local statistics (edges, textures,
colour): random conv filters are known to give usable image features
(Jarrett et al., 2009), and how much a Fréchet figure depends on its
network is the point of Kynkäänniemi et al. (2023). It measures fidelity of
those low-level statistics, not semantics.

The net: three 3x3 conv layers (16, 32, 64 channels, stride 1, ReLU, 2x2
average pooling after each), weights He-normal from
``torch.Generator().manual_seed(seed)``, never trained; the features are
each layer's spatial mean, concatenated (16 + 32 + 64 = 112 numbers: fine
and coarse scales). Images reach it as RGB
(grey repeated to 3 channels, so grey and colour runs share one space) and
are resized (bilinear, antialiased when shrinking) to 32x32. Nothing is
downloaded or cached: the weights are rebuilt from the seed, and their
:func:`ganfn.metrics.card.weights_hash` goes on the protocol card.

The figure, ``FD-RandConv``, is comparable only between runs scored on the
same reference images with the same card: it is not FID and says nothing
about published FIDs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.images import resize, to_unit_range
from .card import weights_hash
from .extractor import Features

__all__ = ["RandomConvExtractor", "random_conv_extractor", "random_conv_init", "random_conv_apply", "INPUT_SIZE",
           "WIDTHS"]

INPUT_SIZE = 32
WIDTHS = (16, 32, 64)


def random_conv_init(seed: int = 0) -> dict[str, Tensor]:
    """The fixed random weights: ``conv{i}.weight`` [w_i, w_{i-1}, 3, 3] He-normal, zero biases."""
    g = torch.Generator().manual_seed(seed)
    params, c_in = {}, 3
    for i, w in enumerate(WIDTHS):
        params[f"conv{i}.weight"] = torch.randn((w, c_in, 3, 3), generator=g) * (2.0 / (c_in * 9)) ** 0.5
        params[f"conv{i}.bias"] = torch.zeros(w)
        c_in = w
    return params


def random_conv_apply(params: dict[str, Tensor], x: Tensor) -> Tensor:
    """x [N, 3, 32, 32] float in [-1, 1] -> features [N, 112]: conv-ReLU x3 (2x2 average pooling
    between), each layer's spatial mean concatenated."""
    feats = []
    for i in range(len(WIDTHS)):
        x = F.relu(F.conv2d(x, params[f"conv{i}.weight"], params[f"conv{i}.bias"], padding=1))
        feats.append(x.mean((2, 3)))
        x = F.avg_pool2d(x, 2)
    return torch.cat(feats, 1)


class RandomConvExtractor:
    """Extractor: images [N, C, H, W] (C 1 or 3; uint8, or float in [-1, 1]) -> Features([N, 112], None)."""

    kind = "random"

    def __init__(self, seed: int = 0, batch_size: int = 1024) -> None:
        self.params, self.seed, self.batch_size = random_conv_init(seed), seed, batch_size
        self.name = "RandConv"
        self.weights_sha256 = weights_hash(self.params)
        self.description = (f"random conv net (3x3 convs {'-'.join(map(str, WIDTHS))}, He-normal from seed {seed}, "
                            f"untrained), each layer's spatial mean ({sum(WIDTHS)} features)")
        self.resize = f"grey repeated to RGB; bilinear (antialiased when shrinking) to {INPUT_SIZE}x{INPUT_SIZE}"

    def __call__(self, images: Tensor) -> Features:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
        out = []
        with torch.no_grad():
            for chunk in torch.split(images.detach().cpu(), self.batch_size):
                x = to_unit_range(chunk) if chunk.dtype == torch.uint8 else chunk.float()
                x = resize(x.expand(-1, 3, -1, -1), INPUT_SIZE, clamp=False)
                out.append(random_conv_apply(self.params, x))
        return Features(torch.cat(out), None)


def random_conv_extractor(seed: int = 0) -> RandomConvExtractor:
    """The random-feature extractor of this module (weights from ``seed``)."""
    return RandomConvExtractor(seed)
