"""Quality figures of generated samples, per member: the :class:`Evaluator` a run
is scored with, and the helpers that draw samples from every member of a state.

Kept apart from :mod:`ganfn.loop` so that building a run's evaluator
(:mod:`ganfn.presets`) never imports the training loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from . import ensemble
from .gan import GAN, TrainState
from .metrics.card import ProtocolCard

__all__ = ["DEFAULT_EVAL_SAMPLES", "Evaluator", "sample_members", "evaluate_members", "update_best"]


DEFAULT_EVAL_SAMPLES = 1000
"""Generated samples per evaluation unless a figure's protocol says otherwise."""


@dataclass
class Evaluator:
    """A quality figure computed from generated samples.

    ``fn(samples [N, *sample]) -> {name: float}`` must include ``primary``;
    for a conditional GAN it is ``fn(samples, labels [N])``, the samples drawn
    for every class equally often (``labels``, class-major).
    ``higher_is_better`` gives the direction used for early stopping.
    ``n_samples`` latents (from a fixed generator) are drawn per evaluation
    (conditional: rounded up to a multiple of the number of classes).
    ``reference`` ([M, 2] points) is drawn under 2-D scatter plots.
    ``card``: what the figure depends on (:class:`ganfn.metrics.card.ProtocolCard`),
    printed with the scores and saved in ``metrics.json``; None for the 2-D
    mixtures' mode coverage (no feature extractor).
    ``ties``: other figures of ``fn``'s that break ties in ``primary`` when
    members are ranked (sweep tables, population rounds), in order; None for
    :func:`ganfn.population.ranking`'s default.
    """

    fn: Callable[..., dict[str, float]]  # fn(samples) or, conditional, fn(samples, labels)
    primary: str
    higher_is_better: bool = False
    n_samples: int = DEFAULT_EVAL_SAMPLES
    reference: Tensor | None = None
    card: ProtocolCard | None = None
    ties: tuple[str, ...] | None = None


def sample_members(gan: GAN, state: TrainState, z: Tensor, stacked: bool, y: Tensor | None = None, *,
                   standing: int = 0) -> list[Tensor]:
    """Samples [N, *sample] for latents ``z`` [N, *latent] (of classes ``y`` [N] for a
    conditional GAN) from each member (a list of one for a single run);
    ``standing``: batches of standing BatchNorm statistics (``GAN.sample``)."""
    states = ensemble.unstack(state) if stacked else [state]
    with torch.no_grad():
        return [gan.sample(s, z, y, standing=standing).float().cpu() for s in states]


def evaluate_members(evaluator: Evaluator, gan: GAN, state: TrainState, z: Tensor, stacked: bool,
                     y: Tensor | None = None, *, standing: int = 0) -> list[dict[str, float]]:
    """``evaluator``'s figures for each member's samples of ``z`` (classes ``y``:
    ``fn(samples, labels)``); a member with non-finite samples (diverged) gets NaN
    for the primary figure."""
    outs = []
    for smp in sample_members(gan, state, z, stacked, y, standing=standing):
        if not torch.isfinite(smp).all():
            outs.append({evaluator.primary: math.nan})
            continue
        figs = evaluator.fn(smp) if y is None else evaluator.fn(smp, y.cpu())
        outs.append({k: float(v) for k, v in figs.items()})
    return outs


def update_best(best: list[float] | None, figs: list[dict[str, float]], ev: Evaluator) -> tuple[list[float], bool]:
    """Each member's best primary figure so far, and whether any member improved."""
    vals = [f.get(ev.primary, math.nan) for f in figs]
    if best is None:
        return vals, any(math.isfinite(v) for v in vals)
    improved = False
    new = list(best)
    for i, (b, v) in enumerate(zip(best, vals, strict=True)):
        if not math.isfinite(v):
            continue
        if not math.isfinite(b) or (v > b if ev.higher_is_better else v < b):
            new[i], improved = v, True
    return new, improved
