"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the
cubic polynomial kernel k(a, b) = (a.b / d + 1)^3, averaged over random subsets.

Unlike the Fréchet distance, the estimator is unbiased, so its expectation does
not depend on the sample count; the spread over subsets gives a standard
deviation to report with it.

Subsets follow torch-fidelity's convention, so figures are comparable with
its ``calculate_metrics(kid=True)``: 100 subsets of 1,000 samples; subset i
takes ``choice(N, m, replace=False)`` rows of x, then of y, from one
``numpy.random.RandomState(2020)``; the figure is the mean of the per-subset
estimates and its std the population std. torch-fidelity refuses sets smaller
than the subset size; ganfn shrinks the subset to min(subset_size, N, M)
instead (training-time evaluations use a few hundred samples), which is the
same draw whenever torch-fidelity would accept the input. Passing a
``torch.Generator`` draws with it instead (never the global RNG either way).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .frechet import check_features

__all__ = ["kernel_inception_distance", "mmd2_unbiased", "kid_subset_indices"]

DEFAULT_SEED = 2020  # torch-fidelity's rng_seed


def mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 between x [m, d] and y [n, d] (m, n >= 2), cubic kernel.

    Pure tensor code with no data-dependent Python control flow, so it can be
    batched with ``torch.func.vmap`` (stacked members, subsets).
    """
    d = x.shape[-1]
    m, n = x.shape[-2], y.shape[-2]
    k_xx = (x @ x.transpose(-1, -2) / d + 1.0) ** 3
    k_yy = (y @ y.transpose(-1, -2) / d + 1.0) ** 3
    k_xy = (x @ y.transpose(-1, -2) / d + 1.0) ** 3
    # Drop the diagonals (k(a, a) terms): that is what makes it unbiased.
    sum_xx = k_xx.sum((-1, -2)) - torch.diagonal(k_xx, dim1=-2, dim2=-1).sum(-1)
    sum_yy = k_yy.sum((-1, -2)) - torch.diagonal(k_yy, dim1=-2, dim2=-1).sum(-1)
    return sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.mean((-1, -2))


def kid_subset_indices(
    n_x: int, n_y: int, subsets: int, subset_size: int, generator: torch.Generator | int | None = None
) -> tuple[Tensor, Tensor]:
    """Index draws [subsets, m] into x and y, each row without replacement.

    m = min(subset_size, n_x, n_y) so that small sets still work. ``generator``:
    an int seed or None (``DEFAULT_SEED``) draws as torch-fidelity does (see the
    module docstring); a ``torch.Generator`` draws with ``torch.randperm``.
    """
    m = min(subset_size, n_x, n_y)
    if isinstance(generator, torch.Generator):
        ix = torch.stack([torch.randperm(n_x, generator=generator)[:m] for _ in range(subsets)])
        iy = torch.stack([torch.randperm(n_y, generator=generator)[:m] for _ in range(subsets)])
        return ix, iy
    rng = np.random.RandomState(DEFAULT_SEED if generator is None else int(generator))
    rows = [(rng.choice(n_x, m, replace=False), rng.choice(n_y, m, replace=False)) for _ in range(subsets)]
    return torch.from_numpy(np.stack([r[0] for r in rows])), torch.from_numpy(np.stack([r[1] for r in rows]))


def kid_from_indices(x: Tensor, y: Tensor, ix: Tensor, iy: Tensor) -> Tensor:
    """Per-subset MMD^2 estimates [subsets] for x [N, d], y [M, d] and indices [subsets, m].

    Loops over subsets in Python (a [subsets, m, m] kernel would not fit in
    memory at the usual 100 x 1000); vmappable over a leading member axis.
    """
    return torch.stack([mmd2_unbiased(x[ix[s]], y[iy[s]]) for s in range(ix.shape[0])])


def kernel_inception_distance(
    x: Tensor,
    y: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | int | None = None,
) -> tuple[Tensor, Tensor]:
    """KID between feature sets x [N, d] and y [M, d] (same d, N, M >= 2).

    Returns (mean, std) float64 scalar tensors over ``subsets`` subsets of
    size min(subset_size, N, M). ``std`` is the population standard deviation
    of the per-subset estimates (as in the KID paper's code and torchmetrics).
    ``generator`` drives the subset draws (see :func:`kid_subset_indices`);
    the default reproduces torch-fidelity's figure.
    The mean can be slightly negative (it is unbiased, not clamped).
    """
    x = check_features(x, "x")
    y = check_features(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: x has d={x.shape[1]}, y has d={y.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    ix, iy = kid_subset_indices(x.shape[0], y.shape[0], subsets, subset_size, generator)
    est = kid_from_indices(x, y, ix, iy)
    return est.mean(), est.std(correction=0)
