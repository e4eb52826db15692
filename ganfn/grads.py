"""The two differentiation paths of a GAN update, giving the same numbers.

Outside any ``torch.func`` transform and outside ``torch.compile`` gradients
come from ``torch.autograd.grad`` on fresh leaf copies of the parameters (pure:
it never touches ``.grad``, and is cheaper per call on CPU); under
``vmap``/``grad``/``compile`` they come from ``torch.func.grad_and_value``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .functional import Params
from .tree import in_transform, tree_map

__all__ = ["value_and_grad"]


def value_and_grad(fn: Callable, params: Params, *args: Any, scale: Tensor | None = None) -> tuple[Tensor, Params, Any]:
    """``(loss, grads, aux)`` of ``fn(params, *args) -> (loss, aux)`` w.r.t. ``params``.
    With ``scale`` (fp16 loss scaling) the gradients are those of ``loss * scale``."""
    if scale is not None:
        inner = fn

        def fn(p, *a):  # the scaled loss, the unscaled one kept in aux
            loss, aux = inner(p, *a)
            return loss * scale.to(loss.dtype), (loss.detach(), aux)

    leaf = next(iter(params.values()), None)
    if leaf is not None and in_transform(leaf):
        grads, (loss, aux) = torch.func.grad_and_value(fn, has_aux=True)(params, *args)
    else:
        # Fresh leaves: the caller's tensors never get requires_grad or .grad.
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            loss, aux = fn(leaves, *args)
            gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        grads = {k: (g if g is not None else torch.zeros_like(v)) for (k, v), g in zip(leaves.items(), gs, strict=True)}
        loss, aux = loss.detach(), tree_map(lambda t: t.detach(), aux)
    if scale is not None:
        loss, aux = aux  # the unscaled loss
    return loss, grads, aux
