"""The few pytree helpers ganfn needs beyond optree.

All helpers are pure: they return new containers and never write into the
tensors they are given. Containers are dicts, lists, tuples and NamedTuples,
which both optree and ``torch.utils._pytree`` (used by ``torch.func.vmap``)
understand. Never pair a flatten from one library with an unflatten from the
other: optree sorts dict keys, torch's pytree keeps insertion order.
"""
from __future__ import annotations

from typing import Any, Callable

import optree
import torch
from torch import Tensor

PyTree = Any

__all__ = [
    "PyTree",
    "in_transform",
    "tree_map",
    "leaves",
    "global_norm",
    "tree_where",
    "tree_index",
    "replace",
]


def in_transform(*tensors: Tensor) -> bool:
    """True under ``torch.compile`` or a ``torch.func`` transform (vmap, grad, ...),
    or when any of ``tensors`` is a transform's wrapped tensor: then values cannot
    be read and torch.func paths are required."""
    if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def tree_map(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """``fn`` applied leaf-wise over one or more trees of the same structure."""
    return optree.tree_map(fn, tree, *rest, none_is_leaf=False)


def leaves(tree: PyTree) -> list[Tensor]:
    """The tensors of ``tree`` in optree's (sorted-key) order."""
    return optree.tree_leaves(tree)


def global_norm(tree: PyTree) -> Tensor:
    """sqrt of the sum of squares of every element of every leaf (a 0-d tensor).

    Computed in float32 at least so that bf16 gradients do not overflow.
    """
    ls = leaves(tree)
    if not ls:
        return torch.zeros(())
    dtype = ls[0].dtype
    if not in_transform() and all(x.dtype == dtype for x in ls):
        # Eager: one fused kernel per dtype instead of a square and a sum per leaf.
        # (Outside every transform no leaf is a transform's wrapped tensor.)
        norms = torch.stack(torch._foreach_norm(ls))
        wide = torch.promote_types(dtype, torch.float32)
        return torch.linalg.vector_norm(norms if wide == dtype else norms.to(wide))
    sq = [torch.sum(torch.square(x.to(torch.promote_types(x.dtype, torch.float32)))) for x in ls]
    return torch.sqrt(torch.stack(sq).sum())


def tree_where(cond: Tensor, a: PyTree, b: PyTree) -> PyTree:
    """Leaf-wise ``torch.where(cond, a, b)``.

    ``cond`` is 0-d, or [S] for stacked trees (broadcast over each leaf's
    trailing axes). A leaf that is the same tensor in ``a`` and ``b`` is returned
    as it is. No data-dependent control flow: valid under ``vmap`` and
    ``torch.compile``; used to skip updates and freeze diverged members.
    """

    def sel(x: Tensor, y: Tensor) -> Tensor:
        if x is y:
            return x
        return torch.where(cond.reshape(cond.shape + (1,) * (x.dim() - cond.dim())), x, y)

    return tree_map(sel, a, b)


def tree_index(tree: PyTree, i: int | slice | Tensor) -> PyTree:
    """Every leaf indexed along its leading axis."""
    return tree_map(lambda x: x[i], tree)


def replace(nt: Any, **changes: Any) -> Any:
    """``nt._replace(**changes)`` for a NamedTuple, in a form ``torch.compile``
    traces correctly on every supported torch (torch 2.11's Dynamo returns an
    empty tuple from a compiled ``_replace``)."""
    return type(nt)(**{**nt._asdict(), **changes})
