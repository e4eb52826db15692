"""Hyperparameter schedules: values that move with the train step.

A schedule is a value, not a callback: a :class:`Schedule` names its ``kind``
(static) and holds its end points and step counts as numbers or 0-d tensors::

    from ganfn import schedules
    gamma = schedules.linear(10.0, 1.0, steps=50_000)   # 10 -> 1 over 50k steps
    gamma(torch.tensor(25_000))                          # tensor(5.5, dtype=float64)

A schedule is accepted wherever a part's or an optimizer's hyperparameter is
(``penalties.r1(schedules.linear(...))``, ``parts.ema(schedules.cosine(...))``,
``optim.adam(betas=(0.0, schedules.linear(0.9, 0.999, 1000)))``). Its fields
are stored flat in the per-member hyperparameters, one 0-d tensor per field
under ``"<key>.<field>"`` (``r1_weight.start``, ``r1_weight.end``,
``r1_weight.steps``, ...), so a stacked population holds a schedule's end points
per member, a sweep can vary them (``init(seed, **{"r1_weight.end": 0.5})``), and
a vmapped step evaluates each member's own schedule. The core evaluates it
(:func:`at`) at the train step (an optimizer: at its update count) before any
part sees ``ctx.hp``: parts read plain values and need no change.

Kinds: :func:`constant`, :func:`linear`, :func:`cosine` (Loshchilov & Hutter,
2017's half cosine) and :func:`piecewise` (piecewise constant). All are pure
functions of the step, computed in float64, with no data-dependent control flow.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence, TypeGuard

import torch
from torch import Tensor

from .validate import Range, check_range

__all__ = ["Schedule", "constant", "linear", "cosine", "piecewise", "at", "flat", "is_schedule", "resolve"]

Value = float | Tensor
_STEPS = Range(0.0)


class Schedule(NamedTuple):
    """A hyperparameter as a function of the step. ``kind`` is static (one of
    ``constant``, ``linear``, ``cosine``, ``piecewise``); ``fields`` maps each
    field to a number or 0-d tensor; ``value_fields`` are those holding values
    of the hyperparameter (checked against its valid range), the others hold
    step counts. Call it with a step (int or tensor) for its 0-d float64 value."""

    kind: str
    fields: Mapping[str, Value]
    value_fields: tuple[str, ...]

    def __call__(self, step: int | Tensor) -> Tensor:
        return at(self.kind, self.fields, step)

    def check_within(self, name: str, valid: Range) -> None:
        """``ValueError`` naming the field when a value field is outside ``valid``
        or a step field is negative."""
        for f, v in self.fields.items():
            check_range(f"{name}.{f}", v, valid if f in self.value_fields else _STEPS)


def is_schedule(value: Any) -> TypeGuard[Schedule]:
    """Whether ``value`` is a :class:`Schedule` (else a plain number or tensor)."""
    return isinstance(value, Schedule)


def constant(value: Value) -> Schedule:
    """``value`` at every step."""
    return Schedule("constant", {"value": value}, ("value",))


def _positive_steps(steps: Value) -> None:
    check_range("schedule steps", steps, Range(0.0, low_open=True))


def linear(start: Value, end: Value, steps: Value, *, begin: Value = 0) -> Schedule:
    """``start`` until step ``begin``, then linearly to ``end`` at step
    ``begin + steps``, then ``end``."""
    _positive_steps(steps)
    return Schedule("linear", {"start": start, "end": end, "begin": begin, "steps": steps}, ("start", "end"))


def cosine(start: Value, end: Value, steps: Value, *, begin: Value = 0) -> Schedule:
    """Half a cosine from ``start`` at step ``begin`` to ``end`` at step
    ``begin + steps`` (``end + (start - end) (1 + cos(pi t)) / 2``), then ``end``."""
    _positive_steps(steps)
    return Schedule("cosine", {"start": start, "end": end, "begin": begin, "steps": steps}, ("start", "end"))


def piecewise(boundaries: Sequence[Value], values: Sequence[Value]) -> Schedule:
    """``values[0]`` before step ``boundaries[0]``, ``values[i]`` from step
    ``boundaries[i-1]`` on (``len(values) == len(boundaries) + 1``)."""
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"piecewise needs one value more than boundaries, got {len(values)} values and "
                         f"{len(boundaries)} boundaries")
    plain = [float(b) for b in boundaries if not isinstance(b, Tensor)]
    if plain != sorted(plain):
        raise ValueError(f"piecewise boundaries must be increasing, got {list(boundaries)}")
    fields = {**{f"v{i}": v for i, v in enumerate(values)}, **{f"b{i}": b for i, b in enumerate(boundaries)}}
    return Schedule("piecewise", fields, tuple(f"v{i}" for i in range(len(values))))


def _f64(v: Value, like: Tensor) -> Tensor:
    if isinstance(v, Tensor):
        return v.to(torch.float64)
    return torch.as_tensor(v, dtype=torch.float64, device=like.device)


def at(kind: str, fields: Mapping[str, Value], step: int | Tensor) -> Tensor:
    """The value of a ``kind`` schedule with ``fields`` at ``step``: a 0-d float64
    tensor (``[S]``-batched under vmap when the fields or the step are)."""
    t = torch.as_tensor(step).to(torch.float64)
    f = {k: _f64(v, t) for k, v in fields.items()}
    if kind == "constant":
        return f["value"] + 0.0 * t
    if kind in ("linear", "cosine"):
        frac = torch.clamp((t - f["begin"]) / f["steps"], 0.0, 1.0)
        if kind == "cosine":
            frac = 0.5 * (1.0 - torch.cos(math.pi * frac))
        return f["start"] + (f["end"] - f["start"]) * frac
    if kind == "piecewise":
        n = sum(1 for k in f if k.startswith("b"))
        out = f["v0"] + 0.0 * t
        for i in range(n):
            out = torch.where(t >= f[f"b{i}"], f[f"v{i + 1}"], out)
        return out
    raise ValueError(f"unknown schedule kind {kind!r}: expected constant, linear, cosine or piecewise")


def flat(key: str, value: Any) -> dict[str, Any]:
    """The hyperparameter ``key`` as stored: ``{key: value}`` for a plain value,
    ``{"<key>.<field>": v}`` for each field of a schedule."""
    if is_schedule(value):
        return {f"{key}.{f}": v for f, v in value.fields.items()}
    return {key: value}


def resolve(hp: Mapping[str, Tensor], scheduled: Mapping[str, Schedule], keys: Sequence[str],
            step: Tensor) -> dict[str, Tensor]:
    """``{key: value at step}`` for ``keys``: a plain key read from ``hp``, a
    scheduled one (its template in ``scheduled``) evaluated from its stored
    fields ``hp["<key>.<field>"]`` (so each member's own end points are used)."""
    out = {}
    for k in keys:
        s = scheduled.get(k)
        out[k] = hp[k] if s is None else at(s.kind, {f: hp[f"{k}.{f}"] for f in s.fields}, step)
    return out
