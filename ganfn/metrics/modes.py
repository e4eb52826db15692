"""Mode metrics for 2-D Gaussian mixtures (ring8, grid25), as in the
mode-collapse literature (Unrolled GAN, VEEGAN, PacGAN).

Rules (all computed from samples [N, 2], centres [M, 2] and the mixture std):
- a sample is *high quality* if its Euclidean distance to the nearest centre is
  at most ``3 * std``; the data itself scores ~98.9% (for a 2-D isotropic
  Gaussian, P(r <= 3 std) = 1 - exp(-4.5));
- each high-quality sample is assigned to its nearest centre; a mode is
  *covered* if it receives at least ``min_count`` high-quality samples, where by
  default ``min_count = max(1, ceil(min_share * N / M))`` with
  ``min_share = 0.2`` -- i.e. at least 20% of the count a uniform generator
  would put there (PacGAN's rule: 20 of 2,500 samples on 25 modes);
- ``kl`` is KL(h || uniform) = sum_i h_i log(M h_i) of the normalised
  histogram h of high-quality samples over modes: 0 for perfect balance,
  log(M) when everything is in one mode, NaN when no sample is high quality.

The centres and stds are those of ``ganfn.data.toy``, which draws the data, so
data and metric agree by construction.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ganfn.data.toy import GRID25_STD, RING8_STD, grid25_centers, ring8_centers

__all__ = [
    "RING8_RADIUS",
    "RING8_STD",
    "RING8_CENTERS",
    "GRID25_STD",
    "GRID25_CENTERS",
    "ring8_centers",
    "grid25_centers",
    "ModeCoverage",
    "mode_coverage",
    "mode_coverage_core",
    "default_min_count",
    "sample_mixture",
]

# The mixtures are defined once, in the data module that draws them.
RING8_RADIUS: float = 2.0
RING8_CENTERS: tuple[tuple[float, float], ...] = tuple(map(tuple, ring8_centers(torch.float64).tolist()))
GRID25_CENTERS: tuple[tuple[float, float], ...] = tuple(map(tuple, grid25_centers(torch.float64).tolist()))


class ModeCoverage(NamedTuple):
    """Mode metrics (all tensors; a leading member axis when stacked)."""

    modes: Tensor  # int64 [] number of covered modes
    high_quality: Tensor  # float64 [] fraction of samples within 3 std of a centre
    kl: Tensor  # float64 [] KL(mode histogram of HQ samples || uniform)
    counts: Tensor  # int64 [M] high-quality samples assigned to each mode


def default_min_count(n_samples: int, n_modes: int, min_share: float = 0.2) -> int:
    """Coverage threshold: max(1, ceil(min_share * N / M)) high-quality samples."""
    return max(1, math.ceil(min_share * n_samples / n_modes - 1e-9))


def mode_coverage_core(samples: Tensor, centers: Tensor, std: float, min_count: int) -> ModeCoverage:
    """Pure-tensor mode metrics (no validation, no data-dependent Python control
    flow) so that ``torch.func.vmap`` can batch it over stacked members.
    samples [N, 2], centers [M, 2]."""
    x = samples.to(torch.float64)
    c = centers.to(torch.float64)
    dist = torch.cdist(x, c)  # [N, M]
    nearest_d, nearest = dist.min(dim=1)
    hq = nearest_d <= 3.0 * std
    m = c.shape[0]
    # One-hot sum instead of bincount: same result, but vmappable.
    counts = (torch.nn.functional.one_hot(nearest, m) * hq[:, None]).sum(0)
    total = counts.sum()
    h = counts.to(torch.float64) / total.clamp_min(1)
    kl = torch.special.xlogy(h, h * m).sum()
    kl = torch.where(total > 0, kl, torch.full_like(kl, float("nan")))
    modes = (counts >= min_count).sum()
    return ModeCoverage(modes=modes, high_quality=hq.to(torch.float64).mean(), kl=kl, counts=counts)


def mode_coverage(
    samples: Tensor,
    centers: Tensor,
    std: float,
    *,
    min_count: int | None = None,
    min_share: float = 0.2,
) -> ModeCoverage:
    """Modes covered, high-quality fraction and histogram KL (see module docstring).

    samples: [N, 2] (or [N, D] with centres [M, D]); centers: [M, D]; std: the
    mixture's per-axis standard deviation. ``min_count`` overrides the default
    threshold ``default_min_count(N, M, min_share)``.
    """
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"need samples [N, D] and centers [M, D], got {tuple(samples.shape)} and {tuple(centers.shape)}"
        )
    if samples.shape[0] < 1:
        raise ValueError("need at least one sample")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples contain NaN or infinite values (a diverged generator?)")
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    if min_count is None:
        min_count = default_min_count(samples.shape[0], centers.shape[0], min_share)
    return mode_coverage_core(samples, centers, std, min_count)


def sample_mixture(
    centers: Tensor, std: float, n: int, generator: torch.Generator, modes: Tensor | None = None
) -> Tensor:
    """Draw n points [n, D] from the equal-weight Gaussian mixture (for tests and
    baselines). ``modes`` [n] fixes the component of each sample (e.g. all
    zeros for a collapsed generator); otherwise components are uniform."""
    if modes is None:
        modes = torch.randint(centers.shape[0], (n,), generator=generator)
    noise = torch.randn(n, centers.shape[1], generator=generator, dtype=centers.dtype)
    return centers[modes] + std * noise
