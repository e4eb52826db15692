"""The pluggable feature-extractor interface shared by the image metrics.

An extractor is any callable ``images [N, C, H, W] -> Features`` with a
``name`` attribute (used to name the figures honestly) and a ``kind``:
``"inception"`` names the figures FID / KID / IS, anything else names them
``FD-<name>``, ``KID-<name>``, ``CS-<name>`` (classifier score). Use
``FunctionExtractor`` to wrap your own function.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch
from torch import Tensor

__all__ = ["Features", "Extractor", "FunctionExtractor", "metric_names", "to_gray"]


class Features(NamedTuple):
    features: Tensor  # [N, d] embedding for FD / KID / precision-recall
    probs: Tensor | None  # [N, K] class probabilities for IS / CS, or None


class Extractor(Protocol):
    name: str
    kind: str

    def __call__(self, images: Tensor) -> Features: ...


class FunctionExtractor:
    """Wrap ``fn(images) -> features [N, d]`` (or ``-> (features, probs)``) as an extractor."""

    def __init__(self, fn: Callable[[Tensor], Tensor | tuple[Tensor, Tensor | None]], name: str, kind: str = "custom"):
        self.fn, self.name, self.kind = fn, name, kind

    def __call__(self, images: Tensor) -> Features:
        out = self.fn(images)
        if isinstance(out, tuple):
            return Features(out[0], out[1])
        return Features(out, None)


def metric_names(extractor: Extractor) -> dict[str, str]:
    """Figure names for an extractor: FID/KID/IS only for Inception features."""
    if getattr(extractor, "kind", "") == "inception":
        return {"fd": "FID", "kid": "KID", "score": "IS"}
    name = getattr(extractor, "name", "custom")
    return {"fd": f"FD-{name}", "kid": f"KID-{name}", "score": f"CS-{name}"}


def to_gray(images: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, 1, H, W]: keep 1 channel, ITU-R 601 luma for 3 channels."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    c = images.shape[1]
    if c == 1:
        return images
    if c == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
        return (images * w[None, :, None, None]).sum(1, keepdim=True)
    raise ValueError(f"images must have 1 or 3 channels, got {c}")
