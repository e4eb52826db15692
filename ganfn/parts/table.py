"""The typed hook table: for each hook, the parts that implement it and the function, built once per ``GAN``."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from torch import Tensor

from ..functional import Params
from .base import Ctx, Draw, DTerm, GTerm, InitCtx, Part

__all__ = ["Hooks", "hook_table"]

PyTree = Any
_After = Callable[[Params, Ctx, Any], tuple[Params, PyTree]]
_Term = tuple[Tensor, dict]


class Hooks(NamedTuple):
    """Each field: ``((part, hook function), ...)`` for the parts that implement
    that hook, in the order the parts were listed. The functions are never
    ``None``, so the step calls them without checks."""

    init: tuple[tuple[Part, Callable[[InitCtx], PyTree]], ...]
    noise_d: tuple[tuple[Part, Callable[[Draw], dict[str, Tensor]]], ...]
    noise_g: tuple[tuple[Part, Callable[[Draw], dict[str, Tensor]]], ...]
    d_weights: tuple[tuple[Part, Callable[[Params, Ctx], Params]], ...]
    fake_for_d: tuple[tuple[Part, Callable[[Tensor, Ctx], Tensor]], ...]
    d_inputs: tuple[tuple[Part, Callable[[Tensor, Tensor, Ctx], tuple[Tensor, Tensor]]], ...]
    d_term: tuple[tuple[Part, Callable[[DTerm, Ctx], _Term]], ...]
    skip_d: tuple[tuple[Part, Callable[[Any, Ctx], Tensor]], ...]
    after_d: tuple[tuple[Part, _After], ...]
    g_inputs: tuple[tuple[Part, Callable[[Tensor, Ctx], Tensor]], ...]
    g_term: tuple[tuple[Part, Callable[[GTerm, Ctx], _Term]], ...]
    skip_g: tuple[tuple[Part, Callable[[Any, Ctx], Tensor]], ...]
    after_g: tuple[tuple[Part, _After], ...]
    sample_weights: tuple[tuple[Part, Callable[[Params, Ctx], Params]], ...]
    check: tuple[tuple[Part, Callable[[Any], None]], ...]
    scalars: tuple[tuple[Part, Callable[[Ctx], dict[str, Tensor]]], ...]
    g_latents: tuple[tuple[Part, Callable[[Tensor, Ctx], Tensor]], ...]


def hook_table(parts: Sequence[Part]) -> Hooks:
    """The :class:`Hooks` of ``parts`` (each a well-formed :class:`Part`)."""
    return Hooks(**{f: tuple((p, getattr(p, f)) for p in parts if getattr(p, f) is not None) for f in Hooks._fields})
