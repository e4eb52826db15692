"""Who copied whom, and when: the record and the schedule of a population run.

:class:`Lineage` is plain Python data (JSON-able, and loadable from a
``weights_only`` checkpoint): each member's hyperparameters over time, every
copy (PBT exploit), every member retired by successive halving and every refill.
:class:`Schedule` is the periodic action a training loop calls: at its steps it
turns the members' quality figures into scores, runs
:func:`ganfn.population.halve` and :func:`ganfn.population.exploit_explore`
and records the outcome. Its random generator and lineage are its whole state
(:meth:`Schedule.state_dict`), so a resumed run repeats an uninterrupted one bit
for bit. No I/O here; the loop logs and saves.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from . import population as pop

__all__ = ["Lineage", "Schedule", "space_from_grid"]


def _floats(t: Tensor) -> list[float]:
    return [float(x) for x in t.detach().double().cpu().reshape(-1)]


class Lineage:
    """The record of a population run (see the module docstring).

    ``hparams[i]`` is member i's hyperparameter history, a list of
    ``{"step": s, name: value, ...}`` (one entry per change, the first at the
    start); ``events`` lists ``{"step", "kind": "copy" | "halved" | "refill",
    "member", "source"}``; ``retired`` the members frozen by halving.
    """

    def __init__(self, hparams: list[list[dict[str, float]]] | None = None, events: list[dict] | None = None,
                 retired: list[int] | None = None) -> None:
        self.hparams = hparams or []
        self.events = events or []
        self.retired = retired or []

    @classmethod
    def start(cls, step: int, values: Mapping[str, Tensor]) -> "Lineage":
        """The record of a population whose members start with ``values`` (name -> [S])."""
        cols = {k: _floats(v) for k, v in values.items()}
        S = len(next(iter(cols.values()))) if cols else 0
        return cls([[{"step": int(step), **{k: c[i] for k, c in cols.items()}}] for i in range(S)])

    def _set(self, step: int, member: int, values: Mapping[str, Sequence[float] | Mapping[int, float]]) -> None:
        entry = {"step": int(step), **{k: v[member] for k, v in values.items()}}
        hist = self.hparams[member]
        if hist and hist[-1]["step"] == step:
            hist[-1] = entry
        elif not hist or any(hist[-1].get(k) != v for k, v in entry.items() if k != "step"):
            hist.append(entry)

    def record_exploit(self, step: int, report: Mapping[str, Any]) -> None:
        """Record an :func:`~ganfn.population.exploit_explore` report (reads its tensors)."""
        source, copied = _floats(report["source"]), _floats(report["copied"])
        values = {k: _floats(v) for k, v in report["hparams"].items()}
        for i, c in enumerate(copied):
            if c:
                self.events.append({"step": int(step), "kind": "copy", "member": i, "source": int(source[i])})
                self._set(step, i, values)

    def record_halving(self, step: int, report: Mapping[str, Any]) -> None:
        """Record a :func:`~ganfn.population.halve` report. A member that had
        diverged before is retired but not recorded as halved: it stays diverged."""
        frozen = _floats(report["frozen"])
        was = _floats(report["was_frozen"]) if "was_frozen" in report else [0.0] * len(frozen)
        for i, (f, w) in enumerate(zip(frozen, was, strict=True)):
            if f and i not in self.retired:
                self.retired.append(i)
                if not w:
                    self.events.append({"step": int(step), "kind": "halved", "member": i, "source": None})

    def record_refill(self, step: int, slots: Sequence[int], values: Mapping[str, Tensor]) -> None:
        """Record :func:`~ganfn.population.refill` of ``slots`` with new members
        whose hyperparameters are ``values`` (name -> [len(slots)])."""
        cols = {k: _floats(v) for k, v in values.items()}
        for j, i in enumerate(slots):
            self.retired = [r for r in self.retired if r != i]
            self.events.append({"step": int(step), "kind": "refill", "member": int(i), "source": None})
            self._set(step, int(i), {k: {int(i): c[j]} for k, c in cols.items()})

    def halved_at(self, n: int) -> list[int]:
        """For each of ``n`` members the step at which successive halving froze it,
        -1 if it was not halved (or a refill gave its slot a new member since)."""
        out = [-1] * n
        for e in self.events:
            if e["member"] < n and e["kind"] in ("halved", "refill"):
                out[e["member"]] = int(e["step"]) if e["kind"] == "halved" else -1
        return out

    def split_frozen(self, diverged_at: Sequence[float]) -> tuple[list[float], list[int]]:
        """``(diverged_at, halved_at)`` from a state's ``diverged_at`` (one value per
        member): halving freezes a member through the same field as divergence
        (:func:`ganfn.population.halve`), so a halved member's entry moves to
        ``halved_at`` and its ``diverged_at`` becomes -1."""
        halved = self.halved_at(len(diverged_at))
        return [-1 if h >= 0 else d for d, h in zip(diverged_at, halved, strict=True)], halved

    def final_values(self, member: int) -> dict[str, float]:
        """Member's explored hyperparameters as it ends (the last entry of its history)."""
        hist = self.hparams[member]
        return {k: v for k, v in hist[-1].items() if k != "step"} if hist else {}

    def schedule_text(self, member: int, fmt: str = "{:.3g}") -> str:
        """Member's hyperparameters over time, e.g. ``lr_d 0.002 -> 0.0024@1000``."""
        hist = self.hparams[member]
        names = [k for k in hist[0] if k != "step"] if hist else []
        parts = []
        for k in names:
            seq = [fmt.format(hist[0][k])] + [f"{fmt.format(h[k])}@{h['step']}" for h in hist[1:]]
            parts.append(f"{k} " + " -> ".join(seq))
        return "; ".join(parts)

    def lineage_text(self, member: int) -> str:
        """Member's copies and retirement, e.g. ``<-3@1000 <-5@2000 halved@2000``."""
        out = []
        for e in self.events:
            if e["member"] == member:
                out.append(f"<-{e['source']}@{e['step']}" if e["kind"] == "copy" else f"{e['kind']}@{e['step']}")
        return " ".join(out) or "-"

    def to_dict(self) -> dict[str, Any]:
        return {"hparams": self.hparams, "events": self.events, "retired": self.retired}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Lineage":
        return cls([list(map(dict, h)) for h in d["hparams"]], [dict(e) for e in d["events"]], list(d["retired"]))


class Schedule:
    """Population-based training and successive halving as a periodic action.

    Args:
        space: the hyperparameters to explore, ``name -> (low, high)`` or
            :class:`~ganfn.population.Bounds` (names as ``GAN.init`` takes them).
        every: exploit/explore every this many steps (None: no PBT).
        fraction: the worst fraction copies from the best fraction (0, 0.5].
        halving_at: steps at which the worst half of the active members is frozen.
        metrics: figure names (or :class:`~ganfn.population.Metric`), compared
            lexicographically: ``("modes", "high_quality")`` ranks by modes, then
            by the high-quality fraction.
        seed: seed of the schedule's own generator (source choice and perturbations).
        refill: ``init(seeds) -> stacked state`` of ``len(seeds)`` fresh members
            (e.g. ``lambda seeds: ensemble.init_many(gan, seeds)``): with it, the
            slots a halving frees are refilled at once with new configurations,
            each hyperparameter of ``space`` drawn within its bounds and the
            others kept from the slot's old member. The seeds come from the
            schedule's generator.
    """

    def __init__(self, space: Mapping[str, Any], *, every: int | None = None, fraction: float = 0.25,
                 halving_at: Sequence[int] = (), metrics: Sequence[str | pop.Metric] = ("modes",), seed: int = 0,
                 perturb: Sequence[float] = (0.8, 1.2), resample_probability: float = 0.25,
                 refill: Callable[[list[int]], Any] | None = None) -> None:
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every (--pbt-every) must be an int >= 1 or None, got {every!r}")
        if not 0 < fraction <= 0.5:
            raise ValueError(f"fraction (--pbt-fraction) must be in (0, 0.5], got {fraction!r}")
        halving_at = sorted(int(s) for s in halving_at)
        if any(s < 1 for s in halving_at):
            raise ValueError(f"halving steps (--halving-at) must be >= 1, got {halving_at}")
        if every is None and not halving_at:
            raise ValueError("a population schedule needs every (PBT) or halving_at (successive halving)")
        pop.check_space(space)
        self.space, self.every, self.fraction, self.halving_at = dict(space), every, float(fraction), halving_at
        self.metrics = [pop.metric(m) for m in metrics]
        if not self.metrics:
            raise ValueError("metrics must name at least one quality figure")
        self.perturb, self.resample_probability = tuple(perturb), float(resample_probability)
        if refill is not None and not callable(refill):
            raise TypeError(f"refill must be a function init(seeds) -> stacked state, got {type(refill).__name__}")
        self.refill = refill
        self.rng = torch.Generator().manual_seed(int(seed))
        self.lineage: Lineage | None = None

    def start(self, state: Any, step: int = 0) -> None:
        """Check the space against ``state`` and record the members' starting hyperparameters."""
        pop.check_space(self.space, state)
        if self.lineage is None:
            hp = pop.hyperparameters(state)
            self.lineage = Lineage.start(step, {k: hp[k] for k in sorted(self.space)})

    def due(self, step: int) -> bool:
        """Whether :meth:`__call__` acts at ``step`` (and so needs figures)."""
        return bool(self.every and step % self.every == 0) or step in self.halving_at

    def __call__(self, step: int, state: Any, figures: Sequence[Mapping[str, float]]) -> Any:
        """The state after this step's halving and exploit/explore (either may be
        absent), recorded in :attr:`lineage`; ``figures`` has one dict per member."""
        if self.lineage is None:
            self.start(state, step)
        assert self.lineage is not None  # start made it
        if not self.due(step):
            return state
        scores, dirs = pop.scores_from_figures(figures, self.metrics)
        fresh: list[int] = []
        if step in self.halving_at:
            state, rep = pop.halve(state, scores, higher_is_better=dirs, retired=self.lineage.retired)
            self.lineage.record_halving(step, rep)
            if self.refill is not None:
                fresh = [i for i, f in enumerate(_floats(rep["frozen"])) if f]
                state = self._refill(step, state, fresh)
        if self.every and step % self.every == 0:
            # Members refilled at this step have no score yet: they sit this round out.
            state, rep = pop.exploit_explore(state, scores, self.rng, space=self.space, fraction=self.fraction,
                                             higher_is_better=dirs, perturb=self.perturb,
                                             resample_probability=self.resample_probability,
                                             retired=sorted(set(self.lineage.retired) | set(fresh)))
            self.lineage.record_exploit(step, rep)
        return state

    def _refill(self, step: int, state: Any, slots: list[int]) -> Any:
        """``state`` with ``slots`` holding fresh members with newly drawn hyperparameters."""
        if not slots:
            return state
        assert self.refill is not None and self.lineage is not None  # called for a refilling, started schedule
        seeds = [int(s) for s in torch.randint(0, 2**31 - 1, (len(slots),), generator=self.rng)]
        bounds = pop.check_space(self.space, state)
        u = torch.rand(len(bounds), len(slots), generator=self.rng, dtype=torch.float64)
        idx = torch.tensor(slots, dtype=torch.int64, device=state.step.device)
        values = {k: v[idx] for k, v in pop.hyperparameters(state).items()}
        for j, (name, b) in enumerate(sorted(bounds.items())):
            values[name] = pop.draw_in(b, u[j]).to(device=values[name].device, dtype=values[name].dtype)
        members = pop.set_hyperparameters(self.refill(seeds), values)
        self.lineage.record_refill(step, slots, {k: values[k] for k in sorted(bounds)})
        return pop.refill(state, slots, members)

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state for a checkpoint: generator state and lineage."""
        return {"rng": self.rng.get_state(), "lineage": self.lineage.to_dict() if self.lineage else None}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        self.rng.set_state(d["rng"])
        self.lineage = Lineage.from_dict(d["lineage"]) if d.get("lineage") else None


def space_from_grid(spec: Mapping[str, Sequence[float]]) -> dict[str, pop.Bounds]:
    """PBT bounds from a grid (``sweep.parse_grid``'s output): each key with at
    least two values explores ``[min, max]`` (log-uniform redraws when min > 0);
    single-valued keys stay fixed. Raises ``ValueError`` when nothing varies."""
    out = {}
    for k, vals in spec.items():
        lo, hi = min(vals), max(vals)
        if lo < hi:
            out[k] = pop.Bounds(float(lo), float(hi), log=lo > 0)
    if not out:
        raise ValueError("the grid has no hyperparameter with two different values to explore: "
                         "give bounds with --pbt-space \"lr_d=1e-4,1e-2\"")
    return out
