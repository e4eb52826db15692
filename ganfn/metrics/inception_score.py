"""Inception Score (Salimans et al. 2016) from class probabilities.

IS = exp(E_x KL(p(y|x) || p(y))). It lies in [1, K]: K when predictions are
confident and spread evenly over the K classes, 1 when every sample gets the
same prediction. On a non-Inception classifier report it as a "classifier
score" (e.g. ``CS-LeNet(digits)``), never as IS.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["inception_score", "check_probs"]


def check_probs(probs: Tensor, atol: float = 1e-3) -> Tensor:
    """Validate class probabilities [N, K] (rows non-negative, summing to 1); return float64."""
    if not isinstance(probs, Tensor) or probs.dim() != 2:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a 2-D tensor [N, K] of class probabilities, got {shape}")
    if probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(f"probs must be non-empty, got shape {tuple(probs.shape)}")
    p = probs.detach().to(torch.float64)
    if not bool(torch.isfinite(p).all()):
        raise ValueError("probs contains NaN or infinite values")
    if bool((p < 0).any()) or not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=atol):
        raise ValueError("probs rows must be non-negative and sum to 1 (pass softmax outputs, not logits)")
    return p


def _score(p: Tensor) -> Tensor:
    """exp of mean KL(p(y|x) || p(y)) for one split p [n, K]; vmappable."""
    py = p.mean(0, keepdim=True)
    # xlogy gives 0 * log 0 = 0 for classes with zero probability.
    kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, py)).sum(1)
    return kl.mean().exp()


def inception_score(probs: Tensor, splits: int = 1) -> tuple[Tensor, Tensor]:
    """Inception Score of class probabilities probs [N, K].

    The N rows are cut into ``splits`` consecutive, (nearly) equal parts (the
    original code used 10 splits of 5,000); returns (mean, std) float64 scalar
    tensors over the splits (std is 0 for ``splits=1``; population std, as in
    the original code).
    """
    p = check_probs(probs)
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be in [1, N={p.shape[0]}], got {splits}")
    scores = torch.stack([_score(part) for part in torch.tensor_split(p, splits)])
    return scores.mean(), scores.std(correction=0)
