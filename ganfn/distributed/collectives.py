"""Collectives on pytrees: one flattened buffer per call, not one call per tensor."""
from __future__ import annotations

from typing import Any, Callable

import optree
import torch
import torch.distributed as dist
from torch import Tensor

from ..tree import PyTree
from .group import is_distributed

__all__ = ["flatten", "all_reduce_mean", "broadcast", "broadcast_object", "max_divergence"]


# -- collectives on pytrees ------------------------------------------------------------------


def flatten(tree: PyTree, dtype: torch.dtype | None = None) -> tuple[Tensor, Callable[[Tensor], PyTree]]:
    """``(flat, unflatten)``: every leaf of ``tree`` concatenated into one 1-d
    tensor (cast to ``dtype``, default the leaves' promoted dtype), and the
    function mapping such a buffer back to a tree of the original shapes and
    dtypes. Leaves must share one device. An empty tree gives a 0-length buffer."""
    ls, treedef = optree.tree_flatten(tree, none_is_leaf=False)
    if dtype is None:
        dtype = ls[0].dtype if ls else torch.float32
        for x in ls[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
    dev = ls[0].device if ls else torch.device("cpu")
    flat = torch.cat([x.reshape(-1).to(dtype) for x in ls]) if ls else torch.zeros(0, dtype=dtype, device=dev)
    shapes = [(x.shape, x.dtype) for x in ls]
    sizes = [x.numel() for x in ls]

    def unflatten(buf: Tensor) -> PyTree:
        parts = torch.split(buf, sizes) if sizes else []
        return optree.tree_unflatten(treedef, [p.reshape(s).to(dt) for p, (s, dt) in zip(parts, shapes, strict=True)])

    return flat, unflatten


def all_reduce_mean(tree: PyTree, group: Any = None) -> PyTree:
    """The mean of ``tree`` over all ranks, with ONE ``all_reduce`` of a
    flattened buffer (summed, then divided by the world size). Float leaves
    only. Pure: returns a new tree. Without a process group: ``tree`` itself.

    The buffer has the leaves' promoted dtype, so float32 gradients travel as
    float32. With world size 1 the collective still runs (its cost is what
    ``bench/distributed.py`` measures).
    """
    if not is_distributed():
        return tree
    flat, unflatten = flatten(tree)
    if flat.numel() == 0:
        return tree
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    return unflatten(flat / dist.get_world_size(group))


def broadcast(tree: PyTree, src: int = 0, group: Any = None) -> PyTree:
    """``tree`` as held by rank ``src``, on every rank (one broadcast per leaf
    dtype). Use it after loading a checkpoint on rank 0 only. Pure."""
    if not is_distributed():
        return tree
    ls, treedef = optree.tree_flatten(tree, none_is_leaf=False)
    out: list[Tensor | None] = [None] * len(ls)
    for dt in dict.fromkeys(x.dtype for x in ls):
        idx = [i for i, x in enumerate(ls) if x.dtype == dt]
        flat, unflatten = flatten([ls[i] for i in idx], dtype=dt)
        flat = flat.clone()  # flatten of a single leaf may alias the caller's tensor
        dist.broadcast(flat, src, group=group)
        for i, x in zip(idx, unflatten(flat), strict=True):
            out[i] = x
    return optree.tree_unflatten(treedef, out)


def broadcast_object(obj: Any, src: int = 0, group: Any = None) -> Any:
    """A picklable Python object as held by rank ``src`` (e.g. a run directory
    name made from the clock), on every rank. Without a process group: ``obj``."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src, group=group)
    return box[0]


def max_divergence(tree: PyTree, group: Any = None) -> float:
    """The largest absolute difference between any rank's ``tree`` and rank 0's
    (0.0 when the ranks are in sync; NaN-aware: a NaN anywhere gives inf unless
    every rank has it in the same place). Every rank gets the same number."""
    if not is_distributed():
        return 0.0
    ls = [x for x in optree.tree_leaves(tree, none_is_leaf=False)]
    flat, _ = flatten(ls, dtype=torch.float64)
    ref = flat.clone()
    dist.broadcast(ref, 0, group=group)
    both_nan = torch.isnan(flat) & torch.isnan(ref)
    diff = torch.where(both_nan, torch.zeros_like(flat), (flat - ref).abs().nan_to_num(nan=float("inf")))
    m = diff.max() if diff.numel() else torch.zeros((), dtype=torch.float64, device=flat.device)
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    return float(m)
