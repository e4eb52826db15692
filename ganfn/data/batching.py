"""Functional, checkpointable batching: a position is a few ints, not an iterator.

A data source is either a tensor of samples in memory ([N, ...]) or a sampler
``f(n, generator) -> [n, ...]`` that draws fresh samples (``ring8``, ``grid25``).
Iteration state lives in a *position*, a plain dict of ints::

    {"n": N or None, "seed": s, "epoch": e, "index": i, "rank": r, "world_size": w}

``next_batch(data, position, B)`` returns ``(batch, new_position)`` and never
mutates its inputs. For a tensor, samples are drawn without replacement: the
order of epoch ``e`` is a permutation computed from ``(seed, epoch)`` alone, so
the position stays tiny, can be saved with ``torch.save`` and loaded with
``weights_only=True`` (or as JSON), and a resumed run sees exactly the batches an
uninterrupted one would. A batch that runs past the end of an epoch takes the
rest from the next epoch's order, so every sample is seen exactly once per epoch
and no batch is short.

Data parallel: with ``world_size=w`` the epoch's permutation is cut into ``w``
equal contiguous shards of ``N // w`` samples and rank ``r`` iterates over shard
``r``; the ``N % w`` samples left at the end of each epoch's permutation are
skipped that epoch (different ones each epoch). Equal shards keep ranks in
lock-step: every rank reaches an epoch boundary at the same step.

For a sampler, each call draws from a fresh ``torch.Generator`` seeded from
``(seed, rank, index)`` and increments ``index``: an endless stream that is just
as reproducible and resumable.
"""
from __future__ import annotations

import functools
from typing import Callable, Union

import torch
from torch import Tensor

__all__ = ["Position", "Sampler", "loader_init", "epoch_indices", "next_batch", "batch_indices", "flip_bits"]

Position = dict[str, Union[int, None]]
Data = Union[Tensor, tuple[Tensor, ...]]
Sampler = Callable[[int, torch.Generator], Data]

_MASK64 = (1 << 64) - 1
_FLIP_STREAM = 0x464C4950  # "FLIP": the flip decisions' own stream, apart from the order


def _splitmix64(x: int) -> int:
    # A strong 64-bit integer mix, so nearby (seed, epoch) pairs give unrelated
    # generator seeds (mt19937 seeded with 0, 1, 2, ... is fine, but mixing
    # several ints into one seed needs a real hash to avoid collisions).
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix(*values: int) -> int:
    h = 0
    for v in values:
        h = _splitmix64(h ^ (v & _MASK64))
    return h & ((1 << 63) - 1)  # manual_seed wants a value that fits int64


def _count(position: Position, key: str) -> int:
    # Only "n" may be None (a sampler's position); every other field is a count.
    v = position[key]
    if v is None:
        raise ValueError(f"position[{key!r}] is None; only 'n' may be (a sampler's position): {position}")
    return v


def loader_init(n: int | None, seed: int, *, rank: int = 0, world_size: int = 1) -> Position:
    """The starting position for iterating ``n`` samples (``None``: a sampler).

    ``seed`` fixes every epoch's order. ``rank``/``world_size`` select this
    process's shard (see the module docstring).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if n is not None and n // world_size < 1:
        raise ValueError(f"{n} samples cannot be split across {world_size} ranks (each needs at least one)")
    return {"n": n, "seed": int(seed), "epoch": 0, "index": 0, "rank": rank, "world_size": world_size}


@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> Tensor:
    # Cached: consecutive batches of one epoch reuse the same permutation.
    # Callers only index with it, never write to it.
    return torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))


def epoch_indices(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """The sample indices (int64, CPU) that ``rank`` visits in ``epoch``, in order.

    Length ``n // world_size``; shards of different ranks are disjoint.
    """
    m = n // world_size
    return _permutation(n, seed, epoch)[rank * m : (rank + 1) * m].clone()


def flip_bits(n: int, seed: int, epoch: int) -> Tensor:
    """Horizontal-flip decisions (bool [n], one per sample) of ``epoch``.

    Drawn from the data position's own seed, like the order: a resumed run
    flips exactly the samples an uninterrupted one would, whatever the workers.
    """
    return _flips(n, seed, epoch)


@functools.lru_cache(maxsize=8)
def _flips(n: int, seed: int, epoch: int) -> Tensor:
    gen = torch.Generator().manual_seed(_mix(seed, epoch, _FLIP_STREAM))
    return torch.randint(0, 2, (n,), generator=gen, dtype=torch.uint8).bool()


def batch_indices(position: Position, total: int, *, flips: bool = False) -> tuple[Tensor, Tensor | None, Position]:
    """The next ``total`` sample indices (int64 [total]) of a position over n samples,
    their flip decisions (bool [total], with ``flips=True``) and the position after them.

    A batch that runs past the end of an epoch takes the rest from the next
    epoch's order (see the module docstring).
    """
    n, seed, ws = position["n"], _count(position, "seed"), _count(position, "world_size")
    rank = _count(position, "rank")
    if n is None:
        raise ValueError("batch_indices needs a position over n samples (loader_init(n, seed)), not a sampler's")
    epoch, index = _count(position, "epoch"), _count(position, "index")
    m = n // ws
    pieces, flip_pieces = [], []
    need = total
    while need > 0:
        take = min(need, m - index)
        start = rank * m + index
        piece = _permutation(n, seed, epoch)[start : start + take]
        pieces.append(piece)
        if flips:
            flip_pieces.append(_flips(n, seed, epoch)[piece])
        need -= take
        index += take
        if index == m:  # epoch finished: the next draw starts the next order
            epoch, index = epoch + 1, 0
    return torch.cat(pieces), torch.cat(flip_pieces) if flips else None, {**position, "epoch": epoch, "index": index}


def next_batch(
    data: Data | Sampler, position: Position, batch_size: int, *, leading: int | None = None
) -> tuple[Data, Position]:
    """The next batch and the position after it.

    ``data`` is a tensor [N, ...] (N must equal ``position["n"]``), a labelled
    pair ``(images [N, ...], labels [N])`` (both indexed alike; the batch is a
    pair too), a sampler (returning a tensor or such a pair), or an image
    source (``ganfn.data.images_source``: uint8 in memory or streamed from
    disk by worker processes; it yields float32 in [-1, 1]).
    Returns ``[batch_size, ...]``, or with ``leading=k`` ``[k, batch_size, ...]``:
    k consecutive batches at once, e.g. one per critic update when
    ``n_critic > 1``, or one per member of a stacked run. The batch is on
    ``data``'s device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if leading is not None and leading < 1:
        raise ValueError(f"leading must be >= 1 or None, got {leading}")
    total = batch_size * (leading or 1)
    n, seed, rank = position["n"], _count(position, "seed"), _count(position, "rank")
    if callable(data) and not isinstance(data, Tensor):
        if n is not None:
            raise ValueError("position was made for a tensor of n samples; use loader_init(None, seed) for a sampler")
        index = _count(position, "index")
        gen = torch.Generator().manual_seed(_mix(seed, rank, index))
        batch = data(total, gen)
        new = {**position, "index": index + 1}
    elif isinstance(data, (Tensor, tuple)):
        if n is None or _length(data) != n:
            raise ValueError(f"position is for n={n} samples but data has {_length(data)}")
        idx, _, new = batch_indices(position, total)
        batch = _map(lambda t: t[idx.to(t.device)], data)
    else:  # an image source (ganfn.data.sources): it gathers, decodes and flips itself
        batch, new = data.batch_at(position, total)
    if leading is not None:
        batch = _map(lambda t: t.reshape(leading, batch_size, *t.shape[1:]), batch)
    return batch, new


def _map(fn: Callable[[Tensor], Tensor], data: Data) -> Data:
    # A labelled data set is an (images, labels) pair indexed alike.
    return tuple(fn(t) for t in data) if isinstance(data, tuple) else fn(data)


def _length(data: Data) -> int:
    if isinstance(data, tuple):
        sizes = {t.shape[0] for t in data}
        if len(sizes) != 1:
            raise ValueError("the tensors of a labelled data set must have equal lengths, got "
                             f"{[t.shape[0] for t in data]}")
        return sizes.pop()
    return data.shape[0]
