"""One population split across ranks: each rank trains a contiguous block of members.

The other way to spend N processes on a stacked run (``--split members``, beside
the data-parallel ``--split batch`` of :mod:`.step`): rank r holds members
``[lo, hi)`` of the S-member population as one vmapped slice on its own device,
and trains them on the *whole* batch, so the population can outgrow one device.
Member indices, seeds and grid points are global; member i draws its noise from
its own generator seeded with ``seeds[i]``, exactly as in one process, so each
member follows the trajectory a single-process run of the population gives it.

What crosses the network: every step, the members' metrics (a few floats per
member) so that every rank sees the whole population's losses and divergence;
at each evaluation, the figures; at each population round, the members'
hyperparameters, step and ``diverged_at``, then the whole state of each member
copied to another rank (:mod:`.exploit`).

:func:`placement` puts ``ceil(S / N)`` members on the first ``S mod N`` ranks
and ``floor(S / N)`` on the others. Without a process group every collective
here is the identity, so the same code runs in one process.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import optree
import torch
import torch.distributed as dist
from torch import Tensor

from .group import World

__all__ = ["Split", "placement", "split", "describe", "gather", "gather_objects", "local", "make_step", "lost_rank"]


class Split(NamedTuple):
    """This rank's share of an S-member population: ``counts[r]`` members on rank r,
    rank r holding global members ``[starts[r], starts[r] + counts[r])``."""

    rank: int
    counts: tuple[int, ...]
    distributed: bool

    @property
    def size(self) -> int:
        return len(self.counts)

    @property
    def members(self) -> int:
        return sum(self.counts)

    @property
    def starts(self) -> tuple[int, ...]:
        return tuple(sum(self.counts[:r]) for r in range(len(self.counts)))

    @property
    def lo(self) -> int:
        return self.starts[self.rank]

    @property
    def hi(self) -> int:
        return self.lo + self.counts[self.rank]

    def owner(self, member: int) -> int:
        """The rank that holds global member ``member``."""
        for r, (s, c) in enumerate(zip(self.starts, self.counts, strict=True)):
            if s <= member < s + c:
                return r
        raise ValueError(f"member {member} is not in this population of {self.members}")


def placement(n_members: int, n_ranks: int) -> tuple[int, ...]:
    """Members per rank: ``ceil(S/N)`` on the first ``S mod N`` ranks, ``floor(S/N)``
    on the rest. Raises ``ValueError`` when a rank would get no member."""
    if n_ranks < 1 or n_members < 1:
        raise ValueError(f"placement needs at least one member and one rank, got {n_members} members, {n_ranks} ranks")
    if n_members < n_ranks:
        raise ValueError(f"--split members: {n_members} members cannot fill {n_ranks} ranks (each rank needs at least "
                         f"one): launch at most {n_members} processes, or use --split batch")
    q, r = divmod(n_members, n_ranks)
    return tuple(q + 1 if i < r else q for i in range(n_ranks))


def split(world: World, n_members: int) -> Split:
    """This rank's :class:`Split` of ``n_members`` over the ranks of ``world``."""
    return Split(world.rank, placement(n_members, world.size), world.distributed)


def describe(s: Split) -> str:
    """One line naming each rank's members, and whether the split is uneven."""
    blocks = ", ".join(f"rank {r}: {a}-{a + c - 1}" if c > 1 else f"rank {r}: {a}"
                       for r, (a, c) in enumerate(zip(s.starts, s.counts, strict=True)))
    uneven = "" if len(set(s.counts)) == 1 else f" (uneven: {s.members} members on {s.size} ranks)"
    return f"members split across {s.size} ranks: {blocks}{uneven}"


def lost_rank(what: str, error: BaseException) -> RuntimeError:
    """The error a rank raises when a collective fails: another rank died or stopped answering."""
    return RuntimeError(f"--split members: this rank lost contact with the other ranks during {what} "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                        "A rank died or hung; the job stops. The newest complete checkpoint "
                        "(every rank's shard written) resumes the population with --resume.")


def _guard(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (RuntimeError, ConnectionError) as e:  # gloo / NCCL report a dead peer as RuntimeError (DistBackendError)
        raise lost_rank(what, e) from e


def gather(s: Split, tree: Any, what: str = "a gather") -> Any:
    """The population-wide pytree from every rank's ``tree`` (leaves ``[counts[rank], ...]``):
    leaves ``[S, ...]`` in global member order. One ``all_gather`` per dtype (padded
    to the largest block); the identity without a process group."""
    if not s.distributed or s.size == 1:
        return tree
    leaves, treedef = optree.tree_flatten(tree, none_is_leaf=False)
    n, big = s.counts[s.rank], max(s.counts)
    out: list[Tensor | None] = [None] * len(leaves)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, x in enumerate(leaves):
        if x.shape[0] != n:
            raise ValueError(f"gather: a leaf has {x.shape[0]} members on rank {s.rank}, which holds {n}")
        by_dtype.setdefault(x.dtype, []).append(i)
    for dtype, idx in sorted(by_dtype.items(), key=lambda kv: str(kv[0])):
        wire = torch.uint8 if dtype == torch.bool else dtype
        cols = [leaves[i].to(wire).reshape(n, -1) for i in idx]
        widths = [c.shape[1] for c in cols]
        buf = torch.zeros(big, sum(widths), dtype=wire, device=leaves[idx[0]].device)
        buf[:n] = torch.cat(cols, 1)
        parts = [torch.empty_like(buf) for _ in range(s.size)]
        _guard(what, functools.partial(dist.all_gather, parts, buf))
        full = torch.cat([p[:c] for p, c in zip(parts, s.counts, strict=True)])
        for i, block in zip(idx, full.split(widths, 1), strict=True):
            out[i] = block.reshape(s.members, *leaves[i].shape[1:]).to(dtype)
    return optree.tree_unflatten(treedef, out)


def gather_objects(s: Split, items: Sequence[Any], what: str = "a gather") -> list[Any]:
    """The population-wide list from every rank's list of per-member Python objects."""
    if not s.distributed or s.size == 1:
        return list(items)
    parts: list[Any] = [None] * s.size
    _guard(what, lambda: dist.all_gather_object(parts, list(items)))
    return [x for p in parts for x in p]


def local(s: Split, tree: Any) -> Any:
    """This rank's members ``[lo, hi)`` of a population-wide pytree (leaves ``[S, ...]``)."""
    return optree.tree_map(lambda x: x[s.lo:s.hi], tree, none_is_leaf=False)


def make_step(s: Split, step: Callable) -> Callable:
    """``step`` (a vmapped step over this rank's members) returning population-wide
    metrics ``[S]``, so every rank sees every member's losses and divergence."""

    def split_step(state: Any, real: Any, noise: Any) -> tuple[Any, dict[str, Tensor]]:
        new, metrics = step(state, real, noise)
        return new, gather(s, metrics, "a train step's metrics")

    return split_step
