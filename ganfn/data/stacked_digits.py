"""Stacked digits: a 1,000-mode image benchmark that runs offline.

The StackedMNIST protocol (Metz et al., 2017; Srivastava et al., 2017, VEEGAN;
Lin et al., 2018, PacGAN; Huang et al., 2024, R3GAN) built from scikit-learn's
bundled 8x8 digits instead of MNIST: each sample stacks three independently,
uniformly drawn digit images as its three channels, so its class (mode) is
``100 * d0 + 10 * d1 + d2``, one of 10^3 = 1,000. The digits are those of
:func:`ganfn.data.digits` (the same split rule, [-1, 1], bilinear resize).
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from .images import digits

__all__ = ["STACKED_MODES", "stacked_digits", "stacked_digits_sampler", "stacked_mode"]

STACKED_MODES = 1000


@functools.lru_cache(maxsize=8)
def _digits(split: str, size: int) -> tuple[Tensor, Tensor]:
    x, y = digits(split, size, labels=True)
    return x[:, 0].contiguous(), y


def stacked_mode(d: Tensor) -> Tensor:
    """Digit triples [..., 3] (int) -> their mode index ``100 d0 + 10 d1 + d2`` [...]."""
    return d[..., 0] * 100 + d[..., 1] * 10 + d[..., 2]


def stacked_digits(n: int, generator: torch.Generator, *, split: str = "train", size: int = 8,
                   labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` stacked-digit images [n, 3, size, size] in [-1, 1], each channel an
    independent uniform draw (from ``generator``) among the split's digits;
    with ``labels`` also their modes int64 [n] in [0, 1000)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    images, classes = _digits(split, size)
    idx = torch.randint(len(images), (n, 3), generator=generator)
    x = images[idx]  # [n, 3, size, size]
    return (x, stacked_mode(classes[idx])) if labels else x


def stacked_digits_sampler(size: int = 8, *, split: str = "train", labels: bool = False):
    """A sampler ``f(n, generator)`` of fresh stacked digits (see :func:`stacked_digits`):
    every batch draws new triples, so all 1,400^3 combinations are reachable."""
    def sample(n: int, generator: torch.Generator) -> Tensor | tuple[Tensor, Tensor]:
        return stacked_digits(n, generator, split=split, size=size, labels=labels)

    return sample
