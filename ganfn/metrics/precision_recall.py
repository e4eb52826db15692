"""Improved precision and recall (Kynkäänniemi et al. 2019), k-NN manifold estimate.

Each set's manifold is approximated by the union of balls around its points,
the radius of each ball being the distance to that point's k-th nearest
neighbour within the same set. Precision is the fraction of fake samples that
fall inside the real manifold (sample quality); recall is the fraction of real
samples inside the fake manifold (coverage / diversity).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .frechet import check_features

__all__ = ["precision_recall", "knn_radii", "manifold_fraction"]


def knn_radii(x: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance from each row of x [N, d] to its k-th nearest other row -> [N]."""
    out = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start : start + chunk], x)
        # k + 1 smallest because each point's nearest "neighbour" is itself (distance 0).
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def manifold_fraction(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """Fraction of queries [Q, d] inside some ball (support [S, d], radii [S])."""
    inside = []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start : start + chunk], support)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside).to(torch.float64).mean()


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3) -> tuple[Tensor, Tensor]:
    """(precision, recall) float64 scalar tensors in [0, 1].

    real: [N, d] real features, fake: [M, d] generated features (same d);
    k: neighbourhood size (the paper uses k=3), needs k < min(N, M).
    Note the argument order (real first): the metric is not symmetric.
    """
    real = check_features(real, "real")
    fake = check_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: real d={real.shape[1]}, fake d={fake.shape[1]}")
    if not 1 <= k < min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k must be in [1, min(N, M) - 1], got k={k} with N={real.shape[0]}, M={fake.shape[0]}")
    precision = manifold_fraction(fake, real, knn_radii(real, k))
    recall = manifold_fraction(real, fake, knn_radii(fake, k))
    return precision, recall
