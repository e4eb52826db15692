"""Synthetic 2-D mixtures of Gaussians: the classic mode-collapse benchmarks.

ring8: 8 Gaussians evenly spaced on a circle of radius 2, std 0.02.
grid25: 25 Gaussians on the 5x5 grid {-4,-2,0,2,4}^2, std 0.05.

Every component is equally likely. These centres and stds are the single source
of truth: the mode-coverage metric (``ganfn.metrics.modes``) counts against them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["RING8_STD", "GRID25_STD", "ring8_centers", "grid25_centers", "ring8", "grid25", "mixture",
           "ring8_labelled", "grid25_labelled"]

RING8_STD = 0.02
GRID25_STD = 0.05


def ring8_centers(dtype: torch.dtype = torch.float32) -> Tensor:
    """The 8 ring centres, [8, 2], at angles 2*pi*k/8 on radius 2 (computed in float64)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)).to(dtype)


def grid25_centers(dtype: torch.dtype = torch.float32) -> Tensor:
    """The 25 grid centres, [25, 2], row-major over {-4,-2,0,2,4}^2."""
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=dtype)
    xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def mixture(
    centers: Tensor, std: float, n: int, generator: torch.Generator, *, labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` samples, [n, d], from an equal-weight mixture of isotropic Gaussians.

    ``centers`` is [K, d]. Both draws (component, then offset) use ``generator``
    on the CPU, so the same generator state always gives the same samples.
    With ``labels=True`` also the component (mode) index of each sample, int64
    [n]: the class label of a conditional run. The samples are the same either way.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    k = torch.randint(centers.shape[0], (n,), generator=generator)
    noise = torch.randn(n, centers.shape[1], generator=generator)
    x = centers[k] + std * noise
    return (x, k) if labels else x


def ring8(n: int, generator: torch.Generator, *, labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` samples, [n, 2] float32, from the 8-Gaussian ring (labels: mode k at angle 2*pi*k/8)."""
    return mixture(ring8_centers(), RING8_STD, n, generator, labels=labels)


def grid25(n: int, generator: torch.Generator, *, labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` samples, [n, 2] float32, from the 25-Gaussian grid (labels: row-major mode index)."""
    return mixture(grid25_centers(), GRID25_STD, n, generator, labels=labels)


def ring8_labelled(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A labelled sampler: ``ring8(n, generator, labels=True)``."""
    out = ring8(n, generator, labels=True)
    assert isinstance(out, tuple)
    return out


def grid25_labelled(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A labelled sampler: ``grid25(n, generator, labels=True)``."""
    out = grid25(n, generator, labels=True)
    assert isinstance(out, tuple)
    return out
