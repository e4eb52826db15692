"""Figures for class-conditional generators.

- **Intra-class Fréchet distance** (Miyato & Koyama 2018 report intra-FID): the
  Fréchet distance between the generated and the real samples *of each class*,
  averaged over the classes. A generator that ignores its labels but matches the
  overall distribution scores well on FD and badly here.
- **Class accuracy**: how often a classifier (ganfn's LeNet on digits) puts a
  sample generated for class c in class c (the "classification accuracy score"
  idea of ACGAN's evaluation, Odena et al. 2017, with a fixed classifier).

Names follow :func:`~ganfn.metrics.metric_names`: with the digits LeNet the keys
are ``intra-FD-LeNet(digits)`` and ``class-acc-LeNet(digits)``; with Inception
features ``intra-FID`` (no class accuracy: Inception's classes are ImageNet's).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .extractor import Extractor, Features, metric_names
from .frechet import frechet_distance

__all__ = [
    "intra_class_frechet_distance",
    "class_accuracy",
    "conditional_names",
    "evaluate_conditional_images",
    "evaluate_stacked_conditional_images",
]


def _check_labels(labels: Tensor, n: int, name: str) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an int64 tensor of class labels, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}] (one label per sample), got {tuple(labels.shape)}")
    return labels.cpu()


def intra_class_frechet_distance(
    fake: Tensor, fake_labels: Tensor, real: Tensor, real_labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean over classes of FD(fake features of class c, real features of class c).

    fake [N, d] with fake_labels [N]; real [M, d] with real_labels [M]. The
    classes are those present in ``real_labels``; each needs at least 2 samples
    on both sides. Returns (mean float64 0-d, per-class FD [K] float64, in
    sorted class order). Small per-class sample counts bias FD upwards: compare
    figures at equal counts only.
    """
    fake_labels = _check_labels(fake_labels, fake.shape[0], "fake_labels")
    real_labels = _check_labels(real_labels, real.shape[0], "real_labels")
    per_class = []
    for c in torch.unique(real_labels).tolist():
        f, r = fake[fake_labels == c], real[real_labels == c]
        if f.shape[0] < 2 or r.shape[0] < 2:
            raise ValueError(f"class {c} has {f.shape[0]} generated and {r.shape[0]} real samples; "
                             "the intra-class FD needs at least 2 of each for every class")
        per_class.append(frechet_distance(f, r))
    fds = torch.stack(per_class)
    return fds.mean(), fds


def class_accuracy(probs: Tensor, requested: Tensor) -> Tensor:
    """Fraction of samples whose most probable class is the requested one.

    probs [N, K] (class probabilities or logits), requested int64 [N] -> 0-d float64.
    """
    requested = _check_labels(requested, probs.shape[0], "requested labels")
    return (probs.detach().cpu().argmax(1) == requested).to(torch.float64).mean()


def conditional_names(extractor: Extractor) -> dict[str, str]:
    """Figure names: ``{"intra_fd": "intra-FD-<name>" | "intra-FID", "acc": "class-acc-<name>"}``."""
    names = metric_names(extractor)
    return {"intra_fd": f"intra-{names['fd']}", "acc": "class-acc-" + names["fd"].removeprefix("FD-")}


def _figures(ff: Features, fake_labels: Tensor, rf: Features, real_labels: Tensor,
             extractor: Extractor) -> dict[str, float]:
    names = conditional_names(extractor)
    out = {names["intra_fd"]: float(intra_class_frechet_distance(ff.features, fake_labels,
                                                                 rf.features, real_labels)[0])}
    if ff.probs is not None and getattr(extractor, "kind", "") != "inception":
        out[names["acc"]] = float(class_accuracy(ff.probs, fake_labels))
    return out


def evaluate_conditional_images(
    fake: Tensor, fake_labels: Tensor, real: Tensor | Features, real_labels: Tensor, extractor: Extractor
) -> dict[str, float]:
    """Intra-class FD and class accuracy of generated images fake [N, C, H, W]
    asked for as classes fake_labels [N], against real images (or their
    ``extractor`` Features) with real_labels [M]. Returns Python floats."""
    rf = real if isinstance(real, Features) else extractor(real)
    return _figures(extractor(fake), fake_labels, rf, real_labels, extractor)


def evaluate_stacked_conditional_images(
    fake: Tensor, fake_labels: Tensor, real: Tensor | Features, real_labels: Tensor, extractor: Extractor
) -> dict[str, Tensor]:
    """Per-member figures of a stacked run: fake [S, N, C, H, W], fake_labels [N]
    (shared) or [S, N] -> {name: float64 tensor [S]}. Features are extracted in
    one call over all members; member i equals ``evaluate_conditional_images(fake[i], ...)``."""
    if fake.dim() != 5:
        raise ValueError(f"fake must be [S, N, C, H, W], got {tuple(fake.shape)}")
    s, n = fake.shape[:2]
    labels = fake_labels.expand(s, n) if fake_labels.dim() == 1 else fake_labels
    rf = real if isinstance(real, Features) else extractor(real)
    ff = extractor(fake.reshape(s * n, *fake.shape[2:]))
    feats = ff.features.reshape(s, n, -1)
    probs = None if ff.probs is None else ff.probs.reshape(s, n, -1)
    rows = [_figures(Features(feats[i], None if probs is None else probs[i]), labels[i], rf,
                     real_labels, extractor) for i in range(s)]
    return {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0]}
