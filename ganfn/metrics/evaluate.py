"""Image-level evaluation: extract features once, report FD / KID / score with
honest names and the sample count.

With a LeNet extractor trained on digits the keys are ``FD-LeNet(digits)``,
``KID-LeNet(digits)``, ``KID-LeNet(digits)-std``, ``CS-LeNet(digits)``; with
Inception features they are ``FID``, ``KID``, ``KID-std``, ``IS``. ``n`` is the
number of generated samples (Fréchet distances are biased upwards at small n,
so figures are only comparable at equal n).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .extractor import Extractor, Features, metric_names
from .frechet import frechet_distance
from .inception_score import inception_score
from .kid import kernel_inception_distance

__all__ = ["evaluate_features", "evaluate_images"]


def evaluate_features(
    fake: Features,
    real: Features,
    names: dict[str, str],
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Figures from precomputed features (fake.features [N, d], real.features [M, d])."""
    out: dict[str, float] = {}
    out[names["fd"]] = float(frechet_distance(fake.features, real.features))
    kid, kid_std = kernel_inception_distance(
        fake.features, real.features, subsets=kid_subsets, subset_size=kid_subset_size, generator=generator
    )
    out[names["kid"]] = float(kid)
    out[names["kid"] + "-std"] = float(kid_std)
    if fake.probs is not None:
        out[names["score"]] = float(inception_score(fake.probs)[0])
    out["n"] = int(fake.features.shape[0])
    return out


def evaluate_images(
    fake: Tensor,
    real: Tensor | Features,
    extractor: Extractor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Evaluate generated images fake [N, C, H, W] against real images [M, C, H, W]
    (or their precomputed ``extractor(real)`` Features, to extract them once
    per run). Returns a dict of Python numbers; see the module docstring."""
    real_f = real if isinstance(real, Features) else extractor(real)
    return evaluate_features(
        extractor(fake),
        real_f,
        metric_names(extractor),
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        generator=generator,
    )
