"""Checkpoints of a population split across ranks: one shard per rank per step.

Rank r writes its members ``[lo, hi)`` of an S-member population as an ordinary
ganfn checkpoint (:func:`ganfn.checkpoint.save`: atomic, SHA-256 checked) named
``ckpt-<step>.members-<lo>-<hi>-of-<S>.pt``, holding its slice of the state,
its members' noise generators, the data position and the loop's bookkeeping
(the same on every rank). A step is *complete* when its shards cover members
``0..S-1``; only complete steps are resumed, and old steps are pruned only
after every rank has written the new one, so a rank that dies mid-write leaves
the previous complete step loadable.

Resume reads whichever shards overlap this rank's members, so a population
saved by N ranks resumes on any number of ranks (one process included) and a
one-process checkpoint resumes split; :func:`load` picks the newest step whose
shards verify on every rank.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import optree
import torch
import torch.distributed as dist

from .. import checkpoint as ckpt
from .members import Split, lost_rank

__all__ = ["shard_path", "shards", "complete_steps", "save", "load", "load_whole"]

_SHARD = re.compile(r"^ckpt-(\d{8,})\.members-(\d+)-(\d+)-of-(\d+)\.pt$")


def shard_path(directory: Path, step: int, lo: int, hi: int, n: int) -> Path:
    return Path(directory) / f"ckpt-{int(step):08d}.members-{lo:04d}-{hi:04d}-of-{n:04d}.pt"


def shards(directory: Path) -> dict[int, list[tuple[int, int, int, Path]]]:
    """``step -> [(lo, hi, S, path), ...]`` of the shard files in ``directory``."""
    out: dict[int, list[tuple[int, int, int, Path]]] = {}
    if not Path(directory).is_dir():
        return out
    for p in Path(directory).iterdir():
        if m := _SHARD.match(p.name):
            step, lo, hi, n = (int(g) for g in m.groups())
            out.setdefault(step, []).append((lo, hi, n, p))
    return out


def _cover(found: list[tuple[int, int, int, Path]], n: int) -> list[tuple[int, int, Path]] | None:
    """Shards of one S that tile ``[0, S)``, or None."""
    chain, at = [], 0
    for lo, hi, _, p in sorted(f for f in found if f[2] == n):
        if lo == at:
            chain.append((lo, hi, p))
            at = hi
    return chain if at == n else None


def complete_steps(directory: Path, n: int) -> list[int]:
    """Steps (newest first) whose shards cover all ``n`` members."""
    return sorted((st for st, f in shards(directory).items() if _cover(f, n) is not None), reverse=True)


def save(directory: Path, s: Split, state: Any, *, step: int, position: dict, rngs: Sequence[torch.Generator],
         extra: dict, keep: int) -> Path:
    """Write this rank's shard for ``step``; once every rank has written, rank 0 prunes
    steps older than the newest ``keep`` complete ones."""
    path = ckpt.save(shard_path(directory, step, s.lo, s.hi, s.members), state, step=step, position=position,
                     rngs=rngs, extra={**extra, "members": [s.lo, s.hi], "population_size": s.members})
    if s.distributed:
        try:
            dist.barrier()
        except (RuntimeError, ConnectionError) as e:
            raise lost_rank(f"the step-{step} checkpoint (this rank's shard {path.name} is written)", e) from e
    if s.rank == 0:
        kept = set(complete_steps(directory, s.members)[:keep])
        for st, found in shards(directory).items():
            if st not in kept and st < max(kept, default=st + 1):
                for *_, p in found:
                    p.unlink(missing_ok=True)
    return path


def _load_part(directory: Path, step: int, s: Split, map_location: Any) -> dict[str, Any]:
    """This rank's members at ``step``: the overlapping shards' slices joined (raises if one fails its checksum)."""
    cover = _cover(shards(directory)[step], s.members)
    assert cover is not None
    states, rngs, first = [], [], None  # type: list[Any], list[Any], dict[str, Any] | None
    for lo, hi, p in cover:
        a, b = max(lo, s.lo), min(hi, s.hi)
        if a >= b:
            continue
        c = ckpt.load(p, map_location=map_location)
        first = first or c
        states.append(optree.tree_map(lambda x, a=a, lo=lo, b=b: x[a - lo:b - lo], c["state"], none_is_leaf=False))
        rngs += c["rngs"][a - lo:b - lo]
    assert first is not None  # the shards tile [0, S), so one overlaps this rank's members
    state = optree.tree_map(lambda *xs: torch.cat(xs), *states, none_is_leaf=False)
    return {**first, "state": state, "rngs": rngs}


def load(directory: Path, s: Split, *, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """``(directory, checkpoint of this rank's members)`` at the newest complete step whose
    shards verify on every rank, or None when there is no complete step. A damaged
    newer step is skipped with a warning; a population of another size is refused."""
    directory = Path(directory)
    sizes = {f[2] for found in shards(directory).values() for f in found}
    if sizes and s.members not in sizes:
        raise ValueError(f"{directory} holds a population of {sorted(sizes)} members but this run has {s.members}: "
                         "resume with the same --grid and --seeds")
    for step in complete_steps(directory, s.members):
        try:
            c, ok = _load_part(directory, step, s, map_location), 1
        except (ckpt.CorruptCheckpointError, ValueError) as e:
            warnings.warn(f"step-{step} shards in {directory} are damaged ({e}); trying an older step",
                          RuntimeWarning, stacklevel=2)
            c, ok = None, 0
        if s.distributed:  # every rank must resume the same step: the newest that verifies everywhere
            flag = torch.tensor([ok], device="cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = int(flag)
        if ok and c is not None:
            return directory, c
    return None


def load_whole(directory: Path, *, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The whole population at the newest complete step, in one process (``ganfn eval``,
    a user's notebook): ``(path of its first shard, checkpoint)``, or None without shards."""
    sizes = {f[2] for found in shards(Path(directory)).values() for f in found}
    if not sizes:
        return None
    n = max(sizes)
    found = load(Path(directory), Split(0, (n,), False), map_location=map_location)
    if found is None:
        return None
    cover = _cover(shards(Path(directory))[int(found[1]["step"])], n)
    assert cover is not None  # load() returns complete steps only
    return cover[0][2], found[1]
