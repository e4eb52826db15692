"""Population-based training and successive halving on a stacked state.

A stacked state (``ganfn.stack`` / ``ensemble.init_many``) holds a whole
population in one program, so the two classic ways of spending a sweep's
budget on its good members are pure functions of that state:

- :func:`exploit_explore` (population-based training, Jaderberg et al., 2017):
  the worst ``fraction`` of the members take a copy of the whole state of a
  member drawn from the best ``fraction`` (parameters, buffers, optimizer
  states, EMA, part states: every leaf), then perturb the declared
  hyperparameters (x0.8 / x1.2, or a fresh draw from their range) within bounds.
- :func:`halve` (successive halving, Jamieson & Talwalkar, 2016): the worst half
  of the active members are frozen exactly as a diverged member is
  (``ensemble.freeze``); :func:`refill` puts new configurations into slots.

Both rank members with :func:`rank`: scores from the loop's quality figures,
each :class:`Metric` knowing its direction, non-finite scores after finite ones
and frozen (diverged) members always last. Everything here is tensor work on the
state's device with no host synchronisation; the scores are the only values a
caller reads back (the loop reads them anyway to log them). The random draws
come from an explicit ``torch.Generator``. :mod:`ganfn.lineage` keeps the
record of who copied whom and each member's hyperparameters over time.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import optree
import torch
from torch import Tensor

from .ensemble import freeze, frozen, num_members

__all__ = ["Bounds", "Metric", "metric", "ranking", "hyperparameters", "set_hyperparameters", "check_space", "draw_in",
           "rank", "scores_from_figures", "exploit_explore", "halve", "refill"]


class Bounds(NamedTuple):
    """The range a hyperparameter may take: ``low <= value <= high``. ``log``
    resamples log-uniformly (learning rates, penalty weights) instead of uniformly."""

    low: float
    high: float
    log: bool = True


class Metric(NamedTuple):
    """A quality figure by name, and whether a larger value is better."""

    name: str
    higher_is_better: bool


_HIGHER = ("modes", "high_quality", "precision", "recall", "IS", "inception_score", "density", "coverage")
_LOWER = ("kl", "FD", "FID", "KID", "fd", "fid", "kid")


def metric(name: str | Metric) -> Metric:
    """The :class:`Metric` for a figure the loop computes: ``modes``,
    ``high_quality``, precision, recall and Inception scores are better higher;
    ``kl`` and Fréchet / kernel distances (``FD-...``, ``FID``, ``KID-...``)
    lower. Other names need an explicit ``Metric(name, higher_is_better)``."""
    if isinstance(name, Metric):
        return name
    if name in _HIGHER:
        return Metric(name, True)
    if name in ("kl",) or name.split("-")[0] in _LOWER:
        return Metric(name, False)
    raise ValueError(f"metric {name!r}: direction unknown; pass ganfn.population.Metric({name!r}, "
                     "higher_is_better=True/False)")


def ranking(primary: str | Metric, ties: Sequence[str | Metric] | None = None) -> list[Metric]:
    """The figures that rank members, in order, for a run whose quality figure is
    ``primary``, then ``ties`` (the figures that break its ties, each with its
    direction from :func:`metric`). Without ``ties``: mode coverage (``modes``)
    ties often (every member at 0 modes early on, or at 8/8 late), so it is
    followed by the high-quality fraction (higher better) and then the KL of the
    mode histogram to uniform (lower better); any other figure ranks alone.
    An evaluator that computes other figures beside ``modes`` (stacked digits
    have no high-quality fraction) names them in ``ties``."""
    first = metric(primary)
    if ties is None:
        ties = ("high_quality", "kl") if first.name == "modes" else ()
    return [first, *(metric(t) for t in ties)]


def _named_path(accessor: Any) -> tuple:
    return tuple(getattr(e, "field", None) or e.entry for e in accessor)


def _net_suffix(prefix: tuple) -> str | None:
    """``"g"``/``"d"`` for an optimizer-state path (``g_opt``, ``d``, ...), else None."""
    for p in prefix:
        if isinstance(p, str) and (p in ("g", "d") or p[:2] in ("g_", "d_")):
            return p[0]
    return None


def _paths(state: Any) -> tuple[dict[str, int], Any, list[Tensor]]:
    """``name -> leaf index`` of every per-member hyperparameter in ``state``:
    ``hparams[k]`` is ``k``; an optimizer's ``hp[k]`` is ``k_g`` / ``k_d``
    (the names ``GAN.init`` takes). Also the flat leaves and the treedef."""
    leaves, treedef = optree.tree_flatten(state, none_is_leaf=False)
    accessors = optree.tree_accessors(state, none_is_leaf=False)
    found: dict[str, list[int]] = {}
    for i, acc in enumerate(accessors):
        p = _named_path(acc)
        if len(p) < 2 or not isinstance(p[-1], str):
            continue
        if p[-2] == "hparams":
            found.setdefault(p[-1], []).append(i)
        elif p[-2] == "hp" and (net := _net_suffix(p[:-2])) is not None:
            found.setdefault(f"{p[-1]}_{net}", []).append(i)
    return {k: v[0] for k, v in found.items() if len(v) == 1}, treedef, leaves


def hyperparameters(state: Any) -> dict[str, Tensor]:
    """Every per-member hyperparameter of ``state`` by its ``GAN.init`` name
    (``lr_d``, ``b1_g``, ``r1_weight``, ``real_label``, ...): 0-d tensors for one
    state, [S] for a stacked one."""
    index, _, leaves = _paths(state)
    return {k: leaves[i] for k, i in sorted(index.items())}


def set_hyperparameters(state: Any, values: Mapping[str, Tensor]) -> Any:
    """A new ``state`` whose hyperparameters ``values`` are replaced (same shape
    and dtype as the old leaf); every other leaf is the same tensor as before."""
    index, treedef, leaves = _paths(state)
    leaves = list(leaves)
    for name, v in values.items():
        if name not in index:
            raise ValueError(f"unknown hyperparameter {name!r}; this state has {sorted(index)}")
        old = leaves[index[name]]
        leaves[index[name]] = torch.as_tensor(v).to(dtype=old.dtype, device=old.device).reshape(old.shape)
    return optree.tree_unflatten(treedef, leaves)


def rank(scores: Tensor, higher_is_better: bool | Sequence[bool], last: Tensor | None = None) -> Tensor:
    """Member indices, best first.

    ``scores`` is [S] or [S, K]: K figures compared lexicographically (column 0
    first, e.g. modes then high-quality fraction). A NaN figure ranks after every
    finite one; members where ``last`` (bool [S]) is set rank after all others.
    Ties keep member order (stable sorts). Pure tensor work, no host sync.
    """
    s = scores if scores.dim() == 2 else scores.reshape(-1, 1)
    K = s.shape[1]
    dirs = [bool(higher_is_better)] * K if isinstance(higher_is_better, bool) else [bool(h) for h in higher_is_better]
    if len(dirs) != K:
        raise ValueError(f"rank: {K} score columns but {len(dirs)} directions")
    order = torch.arange(s.shape[0], device=s.device)
    keys = [torch.where(torch.isnan(c), math.inf, c)
            for c in ((-s[:, j] if dirs[j] else s[:, j]).double() for j in range(K))]
    if last is not None:
        keys.insert(0, last.to(device=s.device, dtype=torch.float64))
    for key in reversed(keys):  # least significant key first; stable sorts keep the earlier order within ties
        order = order[torch.argsort(key[order], stable=True)]
    return order


def scores_from_figures(
    figures: Sequence[Mapping[str, float]], metrics: Sequence[str | Metric]
) -> tuple[Tensor, list[bool]]:
    """``(scores [S, K] float64, directions)`` from the loop's per-member figure
    dicts; a missing figure is NaN (ranked last)."""
    ms = [metric(m) for m in metrics]
    if not ms:
        raise ValueError("scores_from_figures needs at least one metric")
    rows = [[float(f.get(m.name, math.nan)) for m in ms] for f in figures]
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(ms)), [m.higher_is_better for m in ms]


def check_space(space: Mapping[str, Bounds | Sequence[float]], state: Any = None) -> dict[str, Bounds]:
    """``space`` as ``name -> Bounds``, checked (and, given ``state``, against
    its hyperparameters); raises ``ValueError`` naming an unknown name or bad bounds."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError("space must map at least one hyperparameter name to its (low, high) bounds")
    known = hyperparameters(state) if state is not None else None
    out = {}
    for name, b in space.items():
        if known is not None and name not in known:
            raise ValueError(f"unknown hyperparameter {name!r} in space; this state has {sorted(known)}")
        b = Bounds(*b)
        if not (math.isfinite(b.low) and math.isfinite(b.high)) or b.low > b.high:
            raise ValueError(f"bounds of {name!r} must be finite with low <= high, got low={b.low}, high={b.high} "
                             "(inverted?)")
        if b.log and b.low <= 0:
            raise ValueError(f"bounds of {name!r}: log-uniform resampling needs low > 0, got {b.low}; pass "
                             "Bounds(low, high, log=False)")
        out[name] = b
    return out


def draw_in(bounds: Bounds, u: Tensor) -> Tensor:
    """Values in ``[low, high]`` from uniforms ``u`` in [0, 1): log-uniform when
    ``bounds.log``, else uniform (same shape, dtype and device as ``u``)."""
    lo, hi = (math.log(bounds.low), math.log(bounds.high)) if bounds.log else (bounds.low, bounds.high)
    x = lo + u * (hi - lo)
    return (torch.exp(x) if bounds.log else x).clamp(bounds.low, bounds.high)


def _active(S: int, retired: Sequence[int]) -> list[int]:
    bad = [r for r in retired if not (isinstance(r, int) and 0 <= r < S)]
    if bad:
        raise ValueError(f"retired members must be indices in [0, {S}), got {bad}")
    return [i for i in range(S) if i not in set(retired)]


def _check_scores(scores: Any, S: int) -> Tensor:
    s = torch.as_tensor(scores, dtype=torch.float64) if not isinstance(scores, Tensor) else scores
    if s.dim() not in (1, 2) or s.shape[0] != S:
        raise ValueError(f"scores must have shape [S] or [S, K] with S={S} members, got {tuple(s.shape)}")
    return s


def _ranked_active(state: Any, scores: Tensor, higher_is_better: bool | Sequence[bool], active: list[int]) -> Tensor:
    """Active member indices (on the state's device), best first; frozen members last."""
    dev = state.step.device
    idx = torch.tensor(active, dtype=torch.int64, device=dev)
    s = scores.to(dev)[idx]
    return idx[rank(s, higher_is_better, last=frozen(state)[idx])]


def exploit_explore(state: Any, scores: Tensor | Sequence[float], rng: torch.Generator, *,
                    space: Mapping[str, Bounds | Sequence[float]], fraction: float = 0.25,
                    higher_is_better: bool | Sequence[bool] = True, perturb: Sequence[float] = (0.8, 1.2),
                    resample_probability: float = 0.25, retired: Sequence[int] = ()) -> tuple[Any, dict[str, Any]]:
    """One round of population-based training on a stacked state.

    Ranks the active members (all but ``retired``) by ``scores`` ([S] or [S, K],
    see :func:`rank`; frozen members last). Each of the worst
    ``k = floor(fraction * active)`` members takes a copy of every leaf of a
    member drawn uniformly from the best ``k`` (no copy when that member is
    frozen), then each hyperparameter named in ``space`` is, for the copied
    members only, either redrawn from its bounds (probability
    ``resample_probability``; log-uniform when ``Bounds.log``) or multiplied by
    a factor drawn from ``perturb``, and clipped to its bounds. A copy takes the
    source's ``diverged_at``, so a diverged member comes back to life as a copy
    of a good one; retired members (successive halving) never change.
    The members' noise generators are not part of the state: a copy keeps
    drawing its own noise.

    Returns ``(state, report)``; ``report`` holds tensors on the state's device
    (reading them is the caller's host sync): ``source`` (int64 [S], the member
    whose state each member now holds, itself when not copied), ``copied``
    (bool [S]), ``order`` (active members best first) and ``hparams`` (name ->
    [S] values after exploring). Pure: ``state`` is not modified.
    """
    S = num_members(state)
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 0.5:
        raise ValueError("fraction must be in (0, 0.5] (the worst fraction copies from the best fraction), got "
                         f"{fraction!r}")
    if not 0 <= resample_probability <= 1:
        raise ValueError(f"resample_probability must be in [0, 1], got {resample_probability!r}")
    factors = [float(f) for f in perturb]
    if not factors or any(not math.isfinite(f) or f <= 0 for f in factors):
        raise ValueError(f"perturb must be positive factors such as (0.8, 1.2), got {tuple(perturb)}")
    bounds = check_space(space, state)
    scores = _check_scores(scores, S)
    active = _active(S, retired)
    k = int(fraction * len(active))
    dev = state.step.device
    # Every draw is made whatever the scores say, so the generator advances the same way on every call.
    pick = torch.randint(0, max(k, 1), (S,), generator=rng)
    coin = torch.rand(len(bounds), S, generator=rng, dtype=torch.float64) < resample_probability
    factor = torch.tensor(factors, dtype=torch.float64)[torch.randint(0, len(factors), (len(bounds), S), generator=rng)]
    u = torch.rand(len(bounds), S, generator=rng, dtype=torch.float64)
    coin, factor, u = coin.to(dev), factor.to(dev), u.to(dev)  # host -> device copies only: no sync
    source = torch.arange(S, device=dev)
    if k > 0:
        order = _ranked_active(state, scores, higher_is_better, active)
        top, bottom = order[:k], order[-k:]
        src = top[pick[:k].to(dev)]
        src = torch.where(frozen(state)[src], bottom, src)
        source = source.index_copy(0, bottom, src)
    else:
        order = torch.tensor(active, dtype=torch.int64, device=dev)
    copied = source != torch.arange(S, device=dev)
    new = optree.tree_map(lambda x: x[source], state, none_is_leaf=False)
    current = hyperparameters(new)
    values = {}
    for j, (name, b) in enumerate(sorted(bounds.items())):
        v = current[name]
        explored = torch.where(coin[j], draw_in(b, u[j]), v.double() * factor[j]).clamp(b.low, b.high)
        values[name] = torch.where(copied, explored.to(v.dtype), v)
    new = set_hyperparameters(new, values)
    return new, {"source": source, "copied": copied, "order": order, "hparams": values}


def halve(state: Any, scores: Tensor | Sequence[float], *, higher_is_better: bool | Sequence[bool] = True,
          retired: Sequence[int] = ()) -> tuple[Any, dict[str, Any]]:
    """Successive halving: freeze the worst ``floor(active / 2)`` of the active
    members (all but ``retired``), ranked by ``scores`` with frozen members last,
    through ``ensemble.freeze`` (their train step keeps them unchanged from now
    on). Returns ``(state, report)`` with ``frozen`` (bool [S], the members
    this call retires), ``was_frozen`` (bool [S], members already frozen before
    this call: diverged, not halved) and ``order`` (active members, best first). Pure."""
    S = num_members(state)
    scores = _check_scores(scores, S)
    active = _active(S, retired)
    n = len(active) // 2
    order = _ranked_active(state, scores, higher_is_better, active)
    mask = torch.zeros(S, dtype=torch.bool, device=state.step.device)
    if n > 0:
        mask = mask.index_fill(0, order[-n:], True)
    return freeze(state, mask), {"frozen": mask, "was_frozen": frozen(state), "order": order}


def refill(state: Any, slots: Sequence[int], members: Any) -> Any:
    """``state`` with the members at ``slots`` replaced by ``members`` (a stacked
    state of ``len(slots)`` members with the same structure, e.g. from
    ``ensemble.init_many`` with new hyperparameters): slots freed by
    :func:`halve` get new configurations. Pure."""
    S = num_members(state)
    slots = list(slots)
    if not slots or len(set(slots)) != len(slots) or any(not (isinstance(i, int) and 0 <= i < S) for i in slots):
        raise ValueError(f"slots must be distinct member indices in [0, {S}), got {slots}")
    if optree.tree_structure(members, none_is_leaf=False) != optree.tree_structure(state, none_is_leaf=False):
        raise ValueError("refill: the new members' state has a different structure (another GAN setup or other "
                         "hyperparameter keys)")
    if num_members(members) != len(slots):
        raise ValueError(f"refill: {len(slots)} slots but {num_members(members)} new members")
    idx = torch.tensor(slots, dtype=torch.int64, device=state.step.device)

    def put(x: Tensor, y: Tensor) -> Tensor:
        if y.shape[1:] != x.shape[1:]:
            raise ValueError(f"refill: a leaf of the new members has shape {tuple(y.shape[1:])}, the state's has "
                             f"{tuple(x.shape[1:])}")
        return x.index_copy(0, idx, y.to(device=x.device, dtype=x.dtype))

    return optree.tree_map(put, state, members, none_is_leaf=False)
