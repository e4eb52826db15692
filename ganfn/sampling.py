"""Latent samplers for generating (not for training): the truncation trick.

The truncation trick (Brock et al., 2019, BigGAN, sec. 3.1) samples latents from
a normal distribution truncated at ``threshold``: values whose magnitude exceeds
it are drawn again until none does. Smaller thresholds trade variety for
fidelity. Training always uses untruncated latents (``gan.draw_noise``); use
these only to make samples::

    z = sampling.truncated_normal(torch.Generator().manual_seed(0), (64, latent_dim), 0.5)
    images = gan.sample(state, z)
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["truncated_normal"]


def truncated_normal(rng: torch.Generator, shape: Sequence[int], threshold: float | None, *,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """A tensor of ``shape`` with independent standard normal entries conditioned
    on ``|z| <= threshold``, drawn by resampling from ``rng`` only.

    Each round redraws, in index order, every entry still outside the threshold,
    so a seed determines the result. ``threshold=None`` (or ``inf``) gives plain
    ``torch.randn`` values, identical to ``torch.randn(shape, generator=rng)``.
    Raises ``ValueError`` unless ``threshold`` is a positive number.
    """
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
    if threshold is not None and (not isinstance(threshold, (int, float)) or math.isnan(threshold) or threshold <= 0):
        raise ValueError(f"truncation threshold must be a number > 0 (BigGAN uses 0.04 to 2), got {threshold!r}")
    z = torch.randn(*shape, generator=rng, dtype=dtype, device=rng.device)
    if threshold is None or math.isinf(threshold):
        return z if device is None else z.to(device)
    bad = z.abs() > threshold
    while bool(bad.any()):  # sampling outside any step: a host loop is fine here
        z[bad] = torch.randn(int(bad.sum()), generator=rng, dtype=dtype, device=rng.device)
        bad = z.abs() > threshold
    return z if device is None else z.to(device)
