"""The protocol card of a score: everything a Fréchet-type figure depends on besides the generator.

A Fréchet distance changes with the network that embeds the images, its
weights, how images are resized to its input, how many generated and
reference images are used (the estimate is biased upwards at small n) and
which real images are the reference. Two figures are comparable only when
their cards agree. An :class:`ganfn.evaluation.Evaluator` carries its card;
``ganfn train`` and ``ganfn eval`` print it with the scores and
``metrics.json`` stores it under ``protocol``.
"""
from __future__ import annotations

import hashlib
from typing import Mapping, NamedTuple

import torch
from torch import Tensor

__all__ = ["ProtocolCard", "weights_hash"]


class ProtocolCard(NamedTuple):
    """What determines a score (all plain strings and ints, JSON-ready via ``_asdict()``).

    ``figure``: the score's name (``FD-LeNet(digits)``, ``FID``, ...);
    ``extractor``: the network and layer the features come from;
    ``weights_sha256``: SHA-256 of the extractor's weights (a file's digest, or
    :func:`weights_hash` of its tensors); ``resize``: how images reach the
    extractor; ``n_generated`` / ``n_reference``: images behind each side
    (``None``: unknown, e.g. a statistics file without a count);
    ``reference``: which real images (the split, or the file of statistics).
    """

    figure: str
    extractor: str
    weights_sha256: str
    resize: str
    n_generated: int | None
    n_reference: int | None
    reference: str

    def line(self) -> str:
        """The card as one printed line."""
        n_gen = "?" if self.n_generated is None else self.n_generated
        n_ref = "?" if self.n_reference is None else self.n_reference
        return (f"{self.figure} protocol: {self.extractor}, weights sha256 {self.weights_sha256[:16]}; {self.resize}; "
                f"{n_gen} generated vs {n_ref} reference images ({self.reference})")


def weights_hash(params: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of a parameter dict: each name, dtype, shape and the raw bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(params):
        t = params[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
