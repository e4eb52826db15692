"""Combinators: functions that take a part and return a part, as optax's wrappers do.

- :func:`every` ``(k, part)``: the part's loss term on every ``k``-th update
  only (lazy regularisation, Karras et al., 2020, StyleGAN2 sec. 3.1), by
  default scaled by ``k`` so its average strength is kept.
- :func:`starting_at` ``(step, part)``: the part is off before train step
  ``step`` (its terms 0, its input transforms and updates identities).
- :func:`named` ``(name, part)``: the same part under another name, its
  hyperparameters namespaced ``"<name>/<key>"``, so one part can be used twice
  (two EMAs, two augmentation policies). ``GAN.init`` and the CLI's ``--grid``
  still accept the old flat key while only one part declares it.

Each wraps the hooks of the part it is given and hands that part its own view
of the context: its own state, its own hyperparameters under its own keys.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..tree import in_transform, tree_where
from ..validate import Range
from .base import Ctx, Hyper, InitCtx, Part

__all__ = ["every", "starting_at", "named", "wrap"]

_CTX_AT = {"d_weights": 1, "fake_for_d": 1, "d_inputs": 2, "d_term": 1, "skip_d": 1, "after_d": 1, "g_inputs": 1,
           "g_term": 1, "skip_g": 1, "after_g": 1, "sample_weights": 1, "g_latents": 1}


def wrap(part: Part, inner: Callable[[Ctx], Ctx], outer_state: Callable[[Ctx, Any], Any], **changes: Any) -> Part:
    """``part`` with every hook that takes a :class:`Ctx` called on ``inner(ctx)``
    (the wrapped part's own view), and the state an ``after_*`` hook returns
    mapped back by ``outer_state(ctx, new_inner_state)``. ``changes`` replace
    fields of the result (a wrapper's own hooks, name or hyperparameters)."""
    kw: dict[str, Any] = {}
    for hook, i in _CTX_AT.items():
        fn = getattr(part, hook)
        if fn is None:
            continue
        if hook.startswith("after_"):
            def after(params, ctx, aux, fn=fn):
                new_p, new_s = fn(params, inner(ctx), aux)
                return new_p, outer_state(ctx, new_s)
            kw[hook] = after
        else:
            def call(*args, fn=fn, i=i):
                return fn(*args[:i], inner(args[i]), *args[i + 1:])
            kw[hook] = call
    return part._replace(**{**kw, **changes})


def _check_k(k: Any) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"every: k must be an int >= 1 (StyleGAN2 uses 16 for R1, 4 for path length), got {k!r}")
    return k


def every(k: int, part: Part, *, scale: bool = True) -> Part:
    """``part`` with its loss term (``d_term`` or ``g_term``) computed on every
    ``k``-th update of its network only (updates 0, k, 2k, ...), times ``k``
    when ``scale`` (StyleGAN2's weighting: the same average strength), and 0 on
    the other updates. A counter of the network's updates is the state
    (``{"count"}``, plus the part's own state under ``"inner"``); a skipped update
    does not advance it. Selection is a ``torch.where`` (valid under vmap and
    compile); eagerly an update that is not due skips the term altogether.

    The term's aux becomes ``{"due", "metrics": {"term"}}``: the metric
    ``"<name>/term"`` is the (scaled) term where computed, NaN elsewhere (left
    out of a step's mean). The part's own after-hook on that network runs on
    due updates only, seeing its term's aux as ``ctx.aux`` (its other metrics
    are not reported).
    """
    k = _check_k(k)
    if (part.d_term is None) == (part.g_term is None):
        raise ValueError(f"every: part {part.name!r} must have exactly one loss term (d_term or g_term) to make lazy")
    side = "d" if part.d_term is not None else "g"
    term_fn, own_init = getattr(part, f"{side}_term"), part.init
    has_state = own_init is not None

    def inner(ctx: Ctx) -> Ctx:
        return ctx._replace(state=ctx.state.get("inner"))

    def outer(ctx: Ctx, new_inner: Any, step: int = 0) -> dict:
        return {"count": ctx.state["count"] + step, **({"inner": new_inner} if has_state else {})}

    def init(ictx: InitCtx) -> dict:
        count = torch.zeros((), dtype=torch.int64, device=ictx.device)
        return {"count": count, **({"inner": own_init(ictx)} if own_init is not None else {})}

    def term(x: Any, ctx: Ctx) -> tuple[Tensor, dict]:
        count = ctx.state["count"]
        if not in_transform(count) and bool(torch.remainder(count, k) != 0):
            # Not due, eagerly: the same numbers as the masked term below, without computing it.
            zero = x.d_fake.new_zeros((), dtype=_term_dtype(x.d_fake, ctx.hp))
            return zero, {"due": zero, "metrics": {"term": torch.full_like(zero, float("nan"))}}
        val, own = term_fn(x, inner(ctx))
        due = torch.remainder(count, k) == 0
        val = torch.where(due, val * k if scale else val, torch.zeros_like(val))
        shown = torch.where(due, val, torch.full_like(val, float("nan"))).detach()
        out = {"due": due.to(val.dtype), "metrics": {"term": shown}}
        # The part's own aux (for its after-hook) where it has one; an eager update that is not due has none.
        return val, {**out, "inner": own} if own_after is not None and own else out

    own_after = getattr(part, f"after_{side}")

    def after(params, ctx: Ctx, aux):
        old = ctx.state.get("inner")
        if own_after is None:
            return params, outer(ctx, old, 1)
        # The part's own after-hook acts on the updates its term ran on only, seeing that term's aux.
        due = torch.remainder(ctx.state["count"], k) == 0
        if not in_transform(due) and not bool(due):
            return params, outer(ctx, old, 1)
        own_aux = ctx.aux.get("inner") if isinstance(ctx.aux, dict) else None
        new_p, new_s = own_after(params, inner(ctx)._replace(aux=own_aux), aux)
        new_p, new_s = tree_where(due, (new_p, new_s), (params, old))
        return new_p, outer(ctx, new_s, 1)

    wrapped = wrap(part, inner, outer)
    changes: dict[str, Any] = {"init": init, f"{side}_term": term, f"after_{side}": after}
    return wrapped._replace(**changes)


def _term_dtype(like: Tensor, hp: dict[str, Tensor]) -> torch.dtype:
    # A term is a weight (a float64 hyperparameter) times a batch mean (0-d): its dtype promotes to both.
    dtype = like.dtype
    for v in hp.values():
        dtype = torch.promote_types(dtype, v.dtype)
    return dtype


def starting_at(step: int | float | Tensor, part: Part) -> Part:
    """``part`` switched on from train step ``step`` (the per-member
    hyperparameter ``<name>_start_at``, so a sweep can vary it). Before it the
    part's loss terms are 0, its input and weight transforms are identities, its
    gates never skip, its ``after_*`` hooks keep the parameters and its state,
    and sampling uses G's own weights. Everything is a ``torch.where`` on the
    step (valid under vmap and compile); the part's hooks run either way."""
    key = f"{part.name}_start_at"
    if part.g_latents is not None:
        raise ValueError(f"starting_at: part {part.name!r} changes G's latents (their size may change, so there is "
                         "no 'off' to select); schedule its own hyperparameter instead (e.g. a piecewise probability)")
    if key in part.hparams:
        raise ValueError(f"starting_at: part {part.name!r} already has a start ({key!r}); wrap it once")

    def on(ctx: Ctx) -> Tensor:
        return ctx.step >= ctx.hp[key]

    def inner(ctx: Ctx) -> Ctx:
        return ctx._replace(hp={k: v for k, v in ctx.hp.items() if k != key})

    w = wrap(part, inner, lambda ctx, s: s)
    kw: dict[str, Any] = {hook: _gated(hook, getattr(w, hook), on) for hook in _CTX_AT if getattr(w, hook) is not None}
    kw["hparams"] = {**part.hparams, key: Hyper(step, Range(0.0))}
    return w._replace(**kw)


def _gated(hook: str, fn: Callable, on: Callable[[Ctx], Tensor]) -> Callable:
    """``fn`` (hook ``hook``) where ``on(ctx)``, and what the hook does when off elsewhere."""
    if hook == "d_inputs":
        return lambda r, f, ctx: tree_where(on(ctx), fn(r, f, ctx), (r, f))
    if hook in ("d_term", "g_term"):
        return lambda x, ctx: _masked_term(fn(x, ctx), on(ctx))
    if hook in ("skip_d", "skip_g"):
        return lambda aux, ctx: fn(aux, ctx) & on(ctx)
    if hook in ("after_d", "after_g"):
        return lambda p, ctx, aux: tree_where(on(ctx), fn(p, ctx, aux), (p, ctx.state))
    return lambda x, ctx: tree_where(on(ctx), fn(x, ctx), x)  # d_weights, fake_for_d, g_inputs, sample_weights


def _masked_term(out: tuple[Tensor, dict], on: Tensor) -> tuple[Tensor, dict]:
    val, aux = out
    metrics = {k: torch.where(on, v, torch.full_like(v, float("nan"))) for k, v in aux.get("metrics", {}).items()}
    return torch.where(on, val, torch.zeros_like(val)), {**aux, **({"metrics": metrics} if metrics else {})}


def named(name: str, part: Part) -> Part:
    """``part`` called ``name``: its state, noise and metrics keyed by ``name``, its
    hyperparameters stored as ``"<name>/<key>"`` (``named("ema_slow", ema(0.9999))``
    has ``ema_slow/ema_decay``). Its hooks still read their own keys."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"named: a part's name must be an identifier (it keys the state and the noise), got {name!r}")
    own = tuple(part.hparams)

    def inner(ctx: Ctx) -> Ctx:
        return ctx._replace(hp={k: ctx.hp[f"{name}/{k}"] for k in own})

    hparams = {f"{name}/{k}": v for k, v in part.hparams.items()}
    return wrap(part, inner, lambda ctx, s: s, name=name, hparams=hparams)
