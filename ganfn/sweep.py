"""Hyperparameter grids for ensembles, and the member -> hyperparameter table.

A sweep is an ensemble whose members differ in per-state hyperparameters
(``GAN.init`` keywords: ``lr_g``, ``lr_d``, ``b1_g``, ``b2_d``, ``gp_weight``,
``real_label``, ``loss_mix``, ...)::

    members = sweep.grid({"lr_d": [1e-4, 2e-4, 4e-4], "gp_weight": [1, 10]})  # 6 dicts
    state = ensemble.init_many(gan, [0] * len(members), members)
    ...
    print(sweep.table(members, metrics, sort_by="fd"))

Member i of the ensemble has hyperparameters ``members[i]``: the list itself
is the index -> hyperparameters map used for reporting. Everything here is
pure Python (no tensors are created); :func:`table` only formats.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import torch

__all__ = ["grid", "parse_grid", "rows", "table", "summary"]


def grid(spec: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``spec``'s value lists, one dict per member.

    The first key varies slowest: ``grid({"a": [1, 2], "b": [3, 4]})`` is
    ``[{a:1,b:3}, {a:1,b:4}, {a:2,b:3}, {a:2,b:4}]``. ``grid({})`` is ``[{}]``
    (one member with the defaults).
    """
    keys = list(spec)
    values = []
    for k in keys:
        v = spec[k]
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
            raise TypeError(f"grid: the values of {k!r} must be a list, got {v!r}")
        if len(v) == 0:
            raise ValueError(f"grid: {k!r} has no values")
        values.append(list(v))
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _number(text: str) -> float | int:
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"parse_grid: {text!r} is not a number") from None


def parse_grid(text: str) -> dict[str, list[float | int]]:
    """Parse ``"lr_d=1e-4,2e-4;gp_weight=1,10"`` into ``{"lr_d": [1e-4, 2e-4], "gp_weight": [1, 10]}``.

    Entries are separated by ``;`` (or whitespace-separated ``key=values``
    arguments joined by the caller); values by ``,``. Raises ``ValueError``
    naming the bad part.
    """
    spec: dict[str, list[float | int]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"parse_grid: expected key=v1,v2,... but got {part!r} (entries are separated by ';')")
        key, vals = (s.strip() for s in part.split("=", 1))
        if not key.isidentifier():
            raise ValueError(f"parse_grid: {key!r} is not a hyperparameter name")
        if key in spec:
            raise ValueError(f"parse_grid: {key!r} given twice")
        items = [v for v in vals.split(",") if v.strip()]
        if not items:
            raise ValueError(f"parse_grid: {key!r} has no values")
        spec[key] = [_number(v) for v in items]
    return spec


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return bool(v) if v.dtype == torch.bool else float(v)
    return v


def _per_member(metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    """Metrics as one dict per member, from either a list of dicts or a dict of [S] sequences."""
    if isinstance(metrics, Mapping):
        out: list[dict[str, Any]] = [{} for _ in range(n)]
        for k, v in metrics.items():
            seq = v.detach().cpu().tolist() if isinstance(v, torch.Tensor) else list(v)
            if len(seq) != n:
                raise ValueError(f"metric {k!r} has {len(seq)} values for {n} members")
            for i, x in enumerate(seq):
                out[i][k] = x
        return out
    metrics = list(metrics)
    if len(metrics) != n:
        raise ValueError(f"got metrics for {len(metrics)} members but {n} members")
    return [{k: _scalar(v) for k, v in m.items()} for m in metrics]


def _sort_key(value: Any, descending: bool) -> tuple:
    # Missing and NaN values sort last in either direction.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0.0)
    v = float(value)
    return (0, -v if descending else v)


def rows(members: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
         *, sort_by: str | Sequence[str] | None = None,
         descending: bool | Sequence[bool] = False) -> list[dict[str, Any]]:
    """One row per member: ``{"member": i, **members[i], **metrics of member i}``.

    ``metrics`` is a dict of per-member sequences / [S] tensors (an ensemble's
    metrics) or a list of per-member dicts. Rows are sorted by ``sort_by``
    (ascending unless ``descending``; missing or NaN values last); several
    columns (with one direction each) sort lexicographically, later columns
    breaking ties of earlier ones; ``member`` always keeps the ensemble index.
    """
    members = list(members)
    per = _per_member(metrics, len(members)) if metrics is not None else [{} for _ in members]
    out = [{"member": i, **dict(m), **p} for i, (m, p) in enumerate(zip(members, per, strict=True))]
    if sort_by is not None:
        keys = [sort_by] if isinstance(sort_by, str) else list(sort_by)
        desc = [descending] * len(keys) if isinstance(descending, bool) else list(descending)
        if len(desc) != len(keys):
            raise ValueError(f"sort_by has {len(keys)} columns but descending has {len(desc)} directions")
        for k in keys:
            if not any(k in r for r in out):
                raise KeyError(f"sort_by={k!r} is not a column; columns: {sorted({c for r in out for c in r})}")
        out.sort(key=lambda r: tuple(_sort_key(r.get(k), d) for k, d in zip(keys, desc, strict=True)))
    return out


def summary(metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]], n: int | None = None, *,
            exclude_diverged: bool = True) -> dict[str, tuple[float, float, int]]:
    """``name -> (mean, std, count)`` of each numeric metric over members.

    Members whose ``diverged`` flag is set are left out when
    ``exclude_diverged`` (their numbers are those of the frozen state). ``std``
    is the sample standard deviation (0 for a single member).
    """
    if n is None:
        n = len(next(iter(metrics.values()))) if isinstance(metrics, Mapping) else len(metrics)
    per = _per_member(metrics, n)
    keep = [p for p in per if not (exclude_diverged and p.get("diverged"))]
    out: dict[str, tuple[float, float, int]] = {}
    for k in per[0] if per else []:
        if k == "diverged":
            continue
        vals = [float(p[k]) for p in keep if isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)]
        vals = [v for v in vals if math.isfinite(v)]
        if not vals:
            out[k] = (math.nan, math.nan, 0)
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        out[k] = (mean, std, len(vals))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def table(members: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
          *, sort_by: str | Sequence[str] | None = None, descending: bool | Sequence[bool] = False,
          columns: Sequence[str] | None = None, with_summary: bool = False) -> str:
    """A plain-text (markdown) table of :func:`rows`, optionally followed by a
    ``mean ± std`` line over the non-diverged members (``with_summary``).

    ``columns`` picks and orders the metric columns (default: all, in first-seen
    order); the member index and the hyperparameters always come first.
    """
    rs = rows(members, metrics, sort_by=sort_by, descending=descending)
    hp_cols = list(dict.fromkeys(k for m in members for k in m))
    all_cols = list(dict.fromkeys(k for r in rs for k in r if k != "member" and k not in hp_cols))
    metric_cols = list(columns) if columns is not None else all_cols
    cols = ["member", *hp_cols, *metric_cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rs:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    if with_summary and metrics is not None:
        s = summary(metrics, len(list(members)))
        cells = ["mean ± std", *[""] * len(hp_cols)]
        for c in metric_cols:
            if c in s and s[c][2]:
                cells.append(f"{s[c][0]:.4g} ± {s[c][1]:.2g}")
            else:
                cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
