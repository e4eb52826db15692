"""This rank's slice of each global batch and of its noise."""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

from ..data.batching import Data, Position, Sampler, next_batch
from ..gan import GAN
from ..state import Noise
from ..tree import tree_map
from .group import world

__all__ = ["shard_noise", "draw_noise_shard", "next_shard"]


# -- this rank's part of the global batch ---------------------------------------------------------


def _slice(x: Tensor, axis: int, r: int, w: int) -> Tensor:
    n = x.shape[axis]
    if n % w:
        raise ValueError(f"a global batch of {n} cannot be split evenly across {w} ranks")
    b = n // w
    return x.narrow(axis, r * b, b)


def shard_noise(noise: Noise, rank: int | None = None, world_size: int | None = None, *, batch_axis: int = 1) -> Noise:
    """Rank ``rank``'s slice of a global batch's noise (every leaf cut along
    ``batch_axis``: 1 for ``gan.draw_noise`` output, ``[n_critic, B, ...]``; 2 for
    stacked noise ``[S, n_critic, B, ...]``). Defaults: this process's rank/size."""
    if rank is None or world_size is None:
        w = world()
        rank, world_size = w.rank if rank is None else rank, w.size if world_size is None else world_size
    return tree_map(lambda x: _slice(x, batch_axis, rank, world_size), noise)


def draw_noise_shard(gan: GAN, rng: torch.Generator | Sequence[torch.Generator], batch_size: int, *,
                     rank: int | None = None, world_size: int | None = None,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Noise:
    """This rank's noise for a step with ``batch_size`` samples per rank.

    Every rank draws the noise of the whole global batch
    (``gan.draw_noise(rng, batch_size * world_size)``) from its copy of the
    shared generator and keeps its slice, so the ranks' noise together is
    exactly a single process's noise for batch ``batch_size * world_size``, and
    every rank's generator stays at the same position. ``rng`` may be a
    sequence of generators (one per stacked member, as
    ``ganfn.ensemble.rngs``): the result is then stacked, leaves ``[S, ...]``.
    """
    w = world()
    r = w.rank if rank is None else rank
    n = w.size if world_size is None else world_size
    if isinstance(rng, torch.Generator):
        full = gan.draw_noise(rng, batch_size * n, dtype=dtype, device=device)
        return shard_noise(full, r, n, batch_axis=1)
    members = [shard_noise(gan.draw_noise(g, batch_size * n, dtype=dtype, device=device), r, n) for g in rng]
    if not members:
        raise ValueError("draw_noise_shard needs a generator or a non-empty sequence of generators")
    return tree_map(lambda *xs: torch.stack(xs), *members)


@functools.lru_cache(maxsize=4)
def _arange(n: int) -> Tensor:
    # Cached: every batch of a run indexes the same range; callers never write to it.
    return torch.arange(n)


def next_shard(data: Tensor | Sampler, position: Position, batch_size: int, *, leading: int | None = None,
               rank: int | None = None, world_size: int | None = None) -> tuple[Data, Position]:
    """This rank's ``batch_size`` samples of the next global batch, and the new
    position (identical on every rank).

    ``position`` is a single-process position, ``ganfn.data.loader_init(n,
    seed)`` with the default ``rank=0, world_size=1``: the global batch of
    ``batch_size * world_size`` samples is exactly the one a single process
    with that batch size would draw (each epoch reshuffled from the shared
    seed), and rank ``r`` gathers only its slice ``[r*B, (r+1)*B)`` of it. So the
    ranks see disjoint parts of every epoch, the position in a checkpoint
    resumes any rank (even at another world size with the same global batch),
    and N ranks reproduce one process. For a sampler (``ring8``) every rank
    draws the global batch and keeps its slice. ``leading=k`` gives
    ``[k, batch_size, ...]`` (one batch per critic update), sliced on axis 1.
    """
    w = world()
    r = w.rank if rank is None else rank
    n = w.size if world_size is None else world_size
    if position.get("world_size", 1) != 1:
        raise ValueError("next_shard takes a single-process position (loader_init(n, seed) without rank/world_size); "
                         "it computes the rank's slice itself")
    axis = 0 if leading is None else 1
    if callable(data) and not isinstance(data, Tensor):
        full, new = next_batch(data, position, batch_size * n, leading=leading)
        return tree_map(lambda t: _slice(t, axis, r, n), full), new
    N, first = position["n"], data[0] if isinstance(data, tuple) else data  # labelled data: an (images, labels) pair
    if N is None or first.shape[0] != N:
        raise ValueError(f"position is for n={N} samples but data has {first.shape[0]}")
    # Run the data module's batching on the index range [0, N): the same global
    # order, but only this rank's samples are gathered.
    idx, new = next_batch(_arange(N), position, batch_size * n, leading=leading)
    assert isinstance(idx, Tensor)  # indices of a tensor data set
    mine = _slice(idx, axis, r, n)
    return tree_map(lambda t: t[mine.to(t.device)], data), new
