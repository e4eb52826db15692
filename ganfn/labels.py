"""Class labels of a conditional GAN: their distribution, their draws and their checks.

A conditional setup (``GAN(..., num_classes=K)``) calls ``G(z, y)`` and
``D(x, y)`` with int64 labels ``y`` [B]. Real labels come with the data (the
real batch is an ``(images, labels)`` pair); the fake batches' labels are part
of the step's noise, drawn here from an explicit ``torch.Generator``: uniform
over the K classes, or with given class frequencies (e.g. the data set's).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence, cast

import torch
from torch import Tensor

from .tree import in_transform

__all__ = ["NoLabels", "ClassLabels", "Labelling", "check_setup", "class_labels", "draw_labels", "check_labels",
           "class_rows", "rows_for"]


class NoLabels(NamedTuple):
    """How an unconditional setup passes labels: not at all. G is called as
    ``G(z)`` and D as ``D(x)``; the real batch is a tensor and every update's
    noise has ``labels == ()``."""

    num_classes: None = None

    def draw(self, rng: torch.Generator, n: int, batch_size: int) -> tuple[()]:
        """No labels to draw (and no random numbers consumed)."""
        return ()

    def split(self, real: object) -> tuple[Tensor, tuple[()]]:
        """``(images, ())`` of a real batch, which must be images alone."""
        if isinstance(real, (tuple, list)):
            raise TypeError("this GAN is unconditional, but the real batch is a pair (images, labels): pass the images "
                            "alone, or build a conditional GAN with ganfn.GAN(..., num_classes=K)")
        return cast(Tensor, real), ()

    def args(self, y: Tensor | None, n: int) -> tuple[()]:
        """G's extra arguments for ``n`` samples of classes ``y`` (which must be None)."""
        if y is not None:
            raise ValueError("labels were given, but this GAN is unconditional (build it with num_classes=K to "
                             "condition on classes)")
        return ()

    def probe(self, n: int, device: torch.device | None) -> tuple[()]:
        """Example label arguments for ``n`` samples (none)."""
        return ()

    def join(self, images: Tensor, labels: tuple[Tensor, ...]) -> Tensor:
        """The inverse of :meth:`split`: the images."""
        return images

    def rows(self, n: int, device: torch.device | str | None = None) -> None:
        """Labels for a picture of ``n`` samples: none (the grid is square)."""
        return None


class ClassLabels(NamedTuple):
    """How a conditional setup passes labels: int64 class labels ``y`` [B] as
    the second argument, ``G(z, y)`` and ``D(x, y)``. The real batch is an
    ``(images, labels)`` pair and each update's noise carries the fake batch's
    labels (``labels == (y,)``), drawn uniformly over ``num_classes`` or with
    the class frequencies ``probs`` (float64 [K] summing to 1)."""

    num_classes: int
    probs: Tensor | None = None

    def draw(self, rng: torch.Generator, n: int, batch_size: int) -> tuple[Tensor]:
        """The fake batches' labels ``(y [n, batch_size],)``, from ``rng`` only."""
        return (draw_labels(self, rng, n, batch_size),)

    def split(self, real: object) -> tuple[Tensor, tuple[Tensor]]:
        """``(images, (labels,))`` of a real batch given as an ``(images, labels)`` pair."""
        if not isinstance(real, (tuple, list)) or len(real) != 2:
            got = "a tensor" if isinstance(real, Tensor) else type(real).__name__
            raise TypeError(f"a conditional GAN (num_classes={self.num_classes}) takes the real batch as an "
                            "(images, labels) "
                            f"pair, got {got}; load labelled data (e.g. ganfn.data.load(name, labels=True)) and "
                            "pass (x, y)")
        return real[0], (real[1],)

    def args(self, y: Tensor | None, n: int) -> tuple[Tensor]:
        """G's extra arguments for ``n`` samples of classes ``y`` [n] (checked)."""
        if y is None:
            raise ValueError(f"this GAN is conditional (num_classes={self.num_classes}): pass the classes y [N] of "
                             "the samples (e.g. ganfn.labels.class_rows(K, per_class) for one row per class)")
        check_labels(y, self.num_classes, (n,), "labels y")
        return (y,)

    def probe(self, n: int, device: torch.device | None) -> tuple[Tensor]:
        """Example label arguments for ``n`` samples (class 0)."""
        return (torch.zeros(n, dtype=torch.int64, device=device),)

    def join(self, images: Tensor, labels: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """The inverse of :meth:`split`: the ``(images, labels)`` pair."""
        return (images, labels[0])

    def rows(self, n: int, device: torch.device | str | None = None) -> Tensor:
        """Labels for a picture of about ``n`` samples with one row per class:
        ``class_rows(K, ceil(n / K))`` (every class equally often, class-major)."""
        return class_rows(self.num_classes, rows_for(n, self.num_classes), device)


Labelling = NoLabels | ClassLabels


def class_labels(num_classes: int | None, class_probs: Sequence[float] | Tensor | None = None) -> Labelling:
    """A checked :class:`ClassLabels` (``num_classes=None``: :class:`NoLabels`). ``class_probs`` are relative
    frequencies (non-negative, finite, not all zero; normalised here), one per class."""
    if num_classes is None:
        if class_probs is not None:
            raise ValueError("class_probs needs num_classes (a conditional GAN)")
        return NoLabels()
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError("num_classes must be an int >= 2 (a conditional GAN needs at least 2 classes), got "
                         f"{num_classes!r}")
    if class_probs is None:
        return ClassLabels(num_classes)
    p = torch.as_tensor(class_probs, dtype=torch.float64).detach().cpu()
    if p.shape != (num_classes,):
        raise ValueError(f"class_probs must have one frequency per class, shape [{num_classes}], got {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ValueError(f"class_probs must be finite, non-negative and not all zero, got {p.tolist()}")
    return ClassLabels(num_classes, p / p.sum())


def draw_labels(spec: ClassLabels, rng: torch.Generator, n: int, batch_size: int) -> Tensor:
    """Labels int64 [n, batch_size] from ``rng`` only: uniform, or i.i.d. from ``spec.probs``."""
    if spec.probs is None:
        return torch.randint(spec.num_classes, (n, batch_size), generator=rng, device=rng.device)
    probs = spec.probs.to(rng.device)
    return torch.multinomial(probs.expand(n, -1), batch_size, replacement=True, generator=rng)


def check_labels(y: object, num_classes: int, batch_shape: tuple[int, ...], what: str) -> None:
    """Raise a clear error unless ``y`` is an integer tensor of ``batch_shape`` with
    values in [0, num_classes). The value check reads the data (a host sync), so
    it runs only outside ``torch.func`` transforms and ``torch.compile``; the
    metadata checks run everywhere."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{what} must be an int64 tensor of class labels, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{what} must be integer class labels (int64) in [0, {num_classes}), got dtype {y.dtype}; "
                        "convert with labels.long() (float labels are usually one-hot or soft targets by mistake)")
    if tuple(y.shape) != tuple(batch_shape):
        raise ValueError(f"{what} must have shape {list(batch_shape)} (one label per sample), got {list(y.shape)}")
    if in_transform(y) or y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{what} has values in [{lo}, {hi}] but num_classes={num_classes}: labels must lie in [0, "
                         f"{num_classes})")


def check_setup(labels: Labelling, loss: Any, parts: Sequence[Any]) -> None:
    """Refuse a loss that reads labels (ACGAN) without classes, and, with classes,
    parts that swap fake samples for others (a replay buffer): the swapped-in
    samples would lose their labels."""
    if loss.takes_labels and labels.num_classes is None:
        raise ValueError(f"loss {loss.name} classifies samples by class: build a conditional GAN with num_classes=K")
    swaps = [p.name for p in parts if p.fake_for_d is not None]
    if labels.num_classes is not None and swaps:
        raise ValueError(f"part(s) {swaps} replace fake samples seen by D (fake_for_d), which would separate them from "
                         "their class labels; they are not supported in a conditional GAN")


def class_rows(num_classes: int, per_class: int, device: torch.device | str | None = None) -> Tensor:
    """Labels [num_classes * per_class] in class-major order (0, 0, ..., 1, 1, ...):
    tiled ``per_class`` to a row, the samples make one row per class."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def rows_for(n: int, num_classes: int) -> int:
    """Samples per class row so that about ``n`` samples fill ``num_classes`` rows."""
    return max(1, math.ceil(n / num_classes))
