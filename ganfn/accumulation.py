"""Gradient accumulation over micro-batches: one update's loss, gradients and aux averaged over ``k`` slices
of its batch (``GAN(accumulation_steps=k)``), the buffers threaded from slice to slice.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .tree import tree_map

__all__ = ["accumulate", "tree_mean"]


def tree_mean(xs: Sequence[Any]) -> Any:
    """The leaf-wise mean of the pytrees ``xs`` (``xs[0]`` itself when there is one)."""
    return xs[0] if len(xs) == 1 else tree_map(lambda *v: torch.stack(v).mean(0), *xs)


def accumulate(k: int, n: int, one: Callable, carry: Any) -> tuple[list, Any]:
    """``one(cut, carry) -> (out, carry)`` on ``k`` micro-batches of a batch of ``n``:
    ``cut`` slices a pytree of batch-leading tensors to the micro-batch, ``carry``
    threads the buffers (BatchNorm statistics) from one micro-batch to the next.
    Returns the ``k`` outputs and the last carry."""
    if k == 1:
        out, carry = one(lambda tree: tree, carry)
        return [out], carry
    m, outs = n // k, []
    for j in range(k):
        sl = slice(j * m, (j + 1) * m)
        out, carry = one(lambda tree: tree_map(lambda x: x[sl], tree), carry)  # noqa: B023 - called before sl moves on
        outs.append(out)
    return outs, carry
