"""Evaluate every member of a stacked run (leading member axis S) in one call.

What is vmapped and what is looped:
- Fréchet distance: vmapped (``torch.func.vmap``) over members -- the
  statistics and both ``eigh`` calls batch, one float64 program for all S.
- KID: the subset indices are drawn once (shared by all members, so members
  are compared on equal footing) and the per-subset MMD^2 is vmapped.
- Mode coverage: vmapped (the core is written without data-dependent control flow).
- Feature extraction: not vmapped; the member axis is folded into the batch
  axis ([S, N, ...] -> [S*N, ...]), which is the same computation and works
  for any extractor, then unfolded.
- Classifier / inception score: looped over members (S is small, IS is cheap).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import vmap

from .extractor import Extractor, Features, metric_names
from .frechet import check_features, feature_stats, frechet_distance_from_stats_core
from .inception_score import inception_score
from .kid import kid_from_indices, kid_subset_indices
from .modes import ModeCoverage, default_min_count, mode_coverage_core

__all__ = [
    "stacked_frechet_distance",
    "stacked_kernel_inception_distance",
    "stacked_mode_coverage",
    "evaluate_stacked_images",
]


def _check_stack(x: Tensor, name: str) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be [S, N, d] (members, samples, features), got {tuple(x.shape)}")
    check_features(x.reshape(-1, x.shape[-1]), name)
    if x.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 samples per member, got {x.shape[1]}")


def _fd_core(x: Tensor, mu_y: Tensor, s_y: Tensor) -> Tensor:
    xc = x - x.mean(0)
    s_x = xc.T @ xc / (x.shape[0] - 1)
    return frechet_distance_from_stats_core(x.mean(0), s_x, mu_y, s_y)


def stacked_frechet_distance(fake: Tensor, real: Tensor) -> Tensor:
    """Fréchet distance per member: fake [S, N, d] against real [M, d] -> [S] float64."""
    _check_stack(fake, "fake")
    mu_r, s_r = feature_stats(real)
    if fake.shape[-1] != real.shape[-1]:
        raise ValueError(f"feature dimensions differ: fake d={fake.shape[-1]}, real d={real.shape[-1]}")
    return vmap(_fd_core, in_dims=(0, None, None))(fake.to(torch.float64), mu_r, s_r)


def stacked_kernel_inception_distance(
    fake: Tensor,
    real: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """KID per member: fake [S, N, d] vs real [M, d] -> (mean [S], std [S]) float64."""
    _check_stack(fake, "fake")
    real = check_features(real, "real")
    ix, iy = kid_subset_indices(fake.shape[1], real.shape[0], subsets, subset_size, generator)
    est = vmap(kid_from_indices, in_dims=(0, None, None, None))(fake.to(torch.float64), real, ix, iy)
    return est.mean(1), est.std(1, correction=0)


def stacked_mode_coverage(
    samples: Tensor, centers: Tensor, std: float, *, min_count: int | None = None, min_share: float = 0.2
) -> ModeCoverage:
    """Mode metrics per member: samples [S, N, D] -> ModeCoverage with a leading [S] axis."""
    if samples.dim() != 3 or samples.shape[-1] != centers.shape[-1]:
        raise ValueError(f"samples must be [S, N, D] with D = centers' D, got {tuple(samples.shape)}")
    if min_count is None:
        min_count = default_min_count(samples.shape[1], centers.shape[0], min_share)
    return vmap(mode_coverage_core, in_dims=(0, None, None, None))(samples, centers, std, min_count)


def evaluate_stacked_images(
    fake: Tensor,
    real: Tensor | Features,
    extractor: Extractor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor | int]:
    """Per-member image figures: fake [S, N, C, H, W] -> {name: tensor [S], "n": N}.

    Same names as ``evaluate_images``; member i's figures equal
    ``evaluate_images(fake[i], real, extractor)`` up to round-off.
    """
    if fake.dim() != 5:
        raise ValueError(f"fake must be [S, N, C, H, W], got {tuple(fake.shape)}")
    s, n = fake.shape[:2]
    names = metric_names(extractor)
    real_f = real if isinstance(real, Features) else extractor(real)
    ff = extractor(fake.reshape(s * n, *fake.shape[2:]))
    feats = ff.features.reshape(s, n, -1)
    out: dict[str, Tensor | int] = {names["fd"]: stacked_frechet_distance(feats, real_f.features)}
    kid, kid_std = stacked_kernel_inception_distance(
        feats, real_f.features, subsets=kid_subsets, subset_size=kid_subset_size, generator=generator
    )
    out[names["kid"]], out[names["kid"] + "-std"] = kid, kid_std
    if ff.probs is not None:
        probs = ff.probs.reshape(s, n, -1)
        out[names["score"]] = torch.stack([inception_score(p)[0] for p in probs])
    out["n"] = int(n)
    return out
