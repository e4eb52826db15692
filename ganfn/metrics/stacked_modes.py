"""Mode coverage on stacked digits (the StackedMNIST protocol of VEEGAN and PacGAN).

Each channel of a generated [N, 3, H, W] sample is classified by the digits
LeNet (:func:`ganfn.metrics.lenet_extractor`, trained by ganfn on
scikit-learn's digits); the three predicted digits give the sample's mode
``100 d0 + 10 d1 + d2``. Reported, as Srivastava et al. (2017, Table 2) and
Lin et al. (2018, Table 2) do:

- ``modes``: the number of the 1,000 modes that get at least one sample;
- ``kl``: the reverse KL divergence KL(p_model || uniform) of the predicted
  mode distribution from the uniform one, in nats.

The protocol uses 26,000 samples (:data:`STACKED_EVAL_SAMPLES`), 26 per mode on
average: a perfect generator then misses a given mode with probability
e^-26, and the finite-sample bias of ``kl`` is about (1000 - 1) / (2 * 26000)
= 0.019 nats (the floor any generator's figure sits on).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..data.stacked_digits import STACKED_MODES, stacked_mode

__all__ = ["STACKED_EVAL_SAMPLES", "mode_histogram_figures", "stacked_digit_modes"]

STACKED_EVAL_SAMPLES = 26_000


def mode_histogram_figures(modes: Tensor, n_modes: int = STACKED_MODES) -> dict[str, float]:
    """Mode indices [N] (int) -> ``{"modes": covered, "kl": KL(p || uniform)}``."""
    if modes.numel() == 0:
        raise ValueError("need at least one sample to count modes")
    counts = torch.bincount(modes.reshape(-1).long(), minlength=n_modes).double()
    p = counts / counts.sum()
    nz = p > 0
    kl = (p[nz] * (p[nz] * n_modes).log()).sum()
    return {"modes": float(nz.sum()), "kl": float(kl)}


def stacked_digit_modes(samples: Tensor, classify: Callable[[Tensor], Tensor]) -> dict[str, float]:
    """Samples [N, 3, H, W] in [-1, 1] -> ``{"modes", "kl"}`` (see the module docstring).

    ``classify`` maps images [M, 1, H, W] to class probabilities [M, 10]
    (``lambda x: extractor(x).probs`` for the digits LeNet)."""
    if samples.dim() != 4 or samples.shape[1] != 3:
        raise ValueError(f"stacked digits are [N, 3, H, W] (three digits as channels), got {tuple(samples.shape)}")
    n, _, h, w = samples.shape
    digits = classify(samples.reshape(n * 3, 1, h, w)).argmax(1).reshape(n, 3)
    return mode_histogram_figures(stacked_mode(digits))
