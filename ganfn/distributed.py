"""Data-parallel training of the pure GAN steps on ``torch.distributed``.

Every rank (process) holds the whole :class:`~ganfn.TrainState` and trains on
its own shard of each global batch. Between computing a network's gradients and
applying them, the gradient pytree is flattened into ONE buffer and averaged
across ranks by a single ``all_reduce`` (one per network per update, not one per
tensor), so the pure optimizer update sees the same mean gradient everywhere and
the ranks' states stay identical::

    world = distributed.setup()                 # reads torchrun's env; gloo or nccl
    step = distributed.make_train_step(gan)
    state = gan.init(0)                         # same seed on every rank
    rng = torch.Generator().manual_seed(1)      # same noise seed on every rank
    pos = data.loader_init(len(x), seed=2)      # same data seed on every rank
    for _ in range(steps):
        real, pos = distributed.next_shard(x, pos, B)        # this rank's B samples
        noise = distributed.draw_noise_shard(gan, rng, B)    # this rank's noise
        state, metrics = step(state, real, noise)            # metrics: global means
        if distributed.is_main():
            ...                                  # only rank 0 writes files

Exactness. Each rank draws the *global* batch's indices and noise from the
shared seeds and keeps its slice ``[rank*B, (rank+1)*B)``, so N ranks with batch
B compute exactly what one process with batch N*B computes: the losses are
batch means and equal shards make the mean of the ranks' gradients the
full-batch gradient. This holds with gradient penalties (per-sample terms),
``n_critic > 1``, ``accumulation_steps`` (micro-batches of each rank's shard),
instance noise, weight clipping, spectral norm and EMA (functions of the
identical parameters), and D/G skipping by accuracy (the skip decision uses the
all-reduced accuracy, so every rank skips together). Reduced metrics (losses,
accuracies, gradient norms) are the global values.

BatchNorm: batch statistics in a training forward pass are *per rank* (each rank
normalises its own B samples, like DDP without SyncBatchNorm), so a network with
BatchNorm trains like a run with per-shard statistics, not like one process
with batch N*B. Running statistics (float buffers) are averaged across ranks in
the same buffer as the gradients after every update (``sync_buffers=True``), so
the whole state, buffers included, stays identical on all ranks and rank 0's
checkpoint resumes every rank. The replay buffer (``replay_size > 0``) is the
one per-rank part of the state: each rank stores its own fake samples.

Stacked (vmapped) states compose: with ``stacked=True`` every rank holds all S
members, computes their gradients in one vmapped call, and reduces all
members' gradients in the same single buffer; a member whose numbers turn
non-finite stays confined to its own slice of that buffer and is frozen
(``isolate``), as in :mod:`ganfn.ensemble`.

Nothing here reads global RNG. Without an initialised process group every
collective is the identity, so the same code runs unchanged in one process.
"""
from __future__ import annotations

import datetime
import functools
import os
from typing import Any, Callable, NamedTuple, Sequence

import optree
import torch
import torch.distributed as dist
from torch import Tensor

from .data.batching import Position, Sampler, next_batch
from .ensemble import _WATCHED
from .gan import GAN, Noise, TrainState, grad_norm_metrics
from .tree import PyTree, tree_map, tree_where
from .tree import replace as _nt_replace

__all__ = [
    "World",
    "world",
    "rank",
    "world_size",
    "is_main",
    "is_distributed",
    "setup",
    "teardown",
    "device",
    "barrier",
    "flatten",
    "all_reduce_mean",
    "broadcast",
    "broadcast_object",
    "max_divergence",
    "shard_noise",
    "draw_noise_shard",
    "next_shard",
    "make_train_step",
    "train_step",
]

_D_SCALARS = ("d_loss_real", "d_loss_fake", "penalty", "d_acc_real", "d_acc_fake")


# -- who am I ----------------------------------------------------------------------------


class World(NamedTuple):
    """This process's place in the job: ``rank`` in ``[0, size)``, ``local_rank``
    on its machine (picks the GPU), and whether a process group is running."""

    rank: int
    size: int
    local_rank: int
    distributed: bool


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world(group: Any = None) -> World:
    """``World(rank, size, local_rank, distributed)``; ``World(0, 1, 0, False)``
    in a plain single process."""
    if not is_distributed():
        return World(0, 1, 0, False)
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank(group)))
    return World(dist.get_rank(group), dist.get_world_size(group), local, True)


def rank(group: Any = None) -> int:
    """This process's rank (0 without a process group)."""
    return world(group).rank


def world_size(group: Any = None) -> int:
    """The number of ranks (1 without a process group)."""
    return world(group).size


def is_main(group: Any = None) -> bool:
    """True on rank 0 (and in a plain single process): the one rank that writes
    TensorBoard logs, sample grids and checkpoints."""
    return rank(group) == 0


def device(world_: World | None = None) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` when CUDA is
    available, else the CPU."""
    w = world_ or world()
    if torch.cuda.is_available():
        return torch.device("cuda", w.local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def setup(backend: str | None = None, *, timeout_s: float = 300.0) -> World:
    """Join the process group described by the environment, and return the World.

    Reads the variables ``torchrun`` (or :mod:`ganfn.dask_launch`) sets:
    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
    Without ``WORLD_SIZE`` in the environment it does nothing and returns
    ``World(0, 1, 0, False)``: the same script runs in one process. ``backend``
    defaults to ``"nccl"`` when CUDA is available and ``"gloo"`` otherwise; with
    CUDA the current device is set to ``cuda:LOCAL_RANK``. Idempotent.
    """
    if is_distributed():
        return world()
    if "WORLD_SIZE" not in os.environ:
        return World(0, 1, 0, False)
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch with torchrun "
                           "(torchrun --nproc_per_node N -m ganfn train ...) or ganfn.dask_launch.run")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group(backend, init_method="env://", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]),
                            timeout=datetime.timedelta(seconds=timeout_s))
    return world()


def teardown() -> None:
    """Leave the process group (a no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier(group: Any = None) -> None:
    """Wait for every rank (a no-op without a process group)."""
    if is_distributed():
        dist.barrier(group)


# -- collectives on pytrees ------------------------------------------------------------------


def flatten(tree: PyTree, dtype: torch.dtype | None = None) -> tuple[Tensor, Callable[[Tensor], PyTree]]:
    """``(flat, unflatten)``: every leaf of ``tree`` concatenated into one 1-d
    tensor (cast to ``dtype``, default the leaves' promoted dtype), and the
    function mapping such a buffer back to a tree of the original shapes and
    dtypes. Leaves must share one device. An empty tree gives a 0-length buffer."""
    ls, treedef = optree.tree_flatten(tree, none_is_leaf=False)
    if dtype is None:
        dtype = ls[0].dtype if ls else torch.float32
        for x in ls[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
    dev = ls[0].device if ls else torch.device("cpu")
    flat = torch.cat([x.reshape(-1).to(dtype) for x in ls]) if ls else torch.zeros(0, dtype=dtype, device=dev)
    shapes = [(x.shape, x.dtype) for x in ls]
    sizes = [x.numel() for x in ls]

    def unflatten(buf: Tensor) -> PyTree:
        parts = torch.split(buf, sizes) if sizes else []
        return optree.tree_unflatten(treedef, [p.reshape(s).to(dt) for p, (s, dt) in zip(parts, shapes)])

    return flat, unflatten


def all_reduce_mean(tree: PyTree, group: Any = None) -> PyTree:
    """The mean of ``tree`` over all ranks, with ONE ``all_reduce`` of a
    flattened buffer (summed, then divided by the world size). Float leaves
    only. Pure: returns a new tree. Without a process group: ``tree`` itself.

    The buffer has the leaves' promoted dtype, so float32 gradients travel as
    float32. With world size 1 the collective still runs (its cost is what
    ``bench/distributed.py`` measures).
    """
    if not is_distributed():
        return tree
    flat, unflatten = flatten(tree)
    if flat.numel() == 0:
        return tree
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    return unflatten(flat / dist.get_world_size(group))


def broadcast(tree: PyTree, src: int = 0, group: Any = None) -> PyTree:
    """``tree`` as held by rank ``src``, on every rank (one broadcast per leaf
    dtype). Use it after loading a checkpoint on rank 0 only. Pure."""
    if not is_distributed():
        return tree
    ls, treedef = optree.tree_flatten(tree, none_is_leaf=False)
    out: list[Tensor | None] = [None] * len(ls)
    for dt in dict.fromkeys(x.dtype for x in ls):
        idx = [i for i, x in enumerate(ls) if x.dtype == dt]
        flat, unflatten = flatten([ls[i] for i in idx], dtype=dt)
        flat = flat.clone()  # flatten of a single leaf may alias the caller's tensor
        dist.broadcast(flat, src, group=group)
        for i, x in zip(idx, unflatten(flat)):
            out[i] = x
    return optree.tree_unflatten(treedef, out)


def broadcast_object(obj: Any, src: int = 0, group: Any = None) -> Any:
    """A picklable Python object as held by rank ``src`` (e.g. a run directory
    name made from the clock), on every rank. Without a process group: ``obj``."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src, group=group)
    return box[0]


def max_divergence(tree: PyTree, group: Any = None) -> float:
    """The largest absolute difference between any rank's ``tree`` and rank 0's
    (0.0 when the ranks are in sync; NaN-aware: a NaN anywhere gives inf unless
    every rank has it in the same place). Every rank gets the same number."""
    if not is_distributed():
        return 0.0
    ls = [x for x in optree.tree_leaves(tree, none_is_leaf=False)]
    flat, _ = flatten(ls, dtype=torch.float64)
    ref = flat.clone()
    dist.broadcast(ref, 0, group=group)
    both_nan = torch.isnan(flat) & torch.isnan(ref)
    diff = torch.where(both_nan, torch.zeros_like(flat), (flat - ref).abs().nan_to_num(nan=float("inf")))
    m = diff.max() if diff.numel() else torch.zeros((), dtype=torch.float64, device=flat.device)
    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    return float(m)


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
    w = world() if rank is None or world_size is None else None
    r = w.rank if rank is None else rank
    n = w.size if world_size is None else world_size
    return tree_map(lambda x: _slice(x, batch_axis, r, n), noise)


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
    return optree.tree_map(lambda *xs: torch.stack(xs), *members, none_is_leaf=False)


@functools.lru_cache(maxsize=4)
def _arange(n: int) -> Tensor:
    # Cached: every batch of a run indexes the same range; callers never write to it.
    return torch.arange(n)


def next_shard(data: Tensor | Sampler, position: Position, batch_size: int, *, leading: int | None = None,
               rank: int | None = None, world_size: int | None = None) -> tuple[Tensor, Position]:
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
        return _slice(full, axis, r, n), new
    N = position["n"]
    if N is None or data.shape[0] != N:
        raise ValueError(f"position is for n={N} samples but data has {data.shape[0]}")
    # Run the data module's batching on the index range [0, N): the same global
    # order, but only this rank's samples are gathered.
    idx, new = next_batch(_arange(N), position, batch_size * n, leading=leading)
    mine = _slice(idx, axis, r, n)
    return data[mine.to(data.device)], new


# -- the data-parallel step -------------------------------------------------------------------------


def _float_only(buffers: dict) -> dict:
    return {k: v for k, v in buffers.items() if v.is_floating_point()}


def make_train_step(gan: GAN, *, stacked: bool = False, shared_data: bool = True, sync_buffers: bool = True,
                    isolate: bool = True, group: Any = None) -> Callable[[TrainState, Tensor, Noise], tuple[TrainState, dict[str, Tensor]]]:
    """A data-parallel ``step(state, real, noise) -> (state, metrics)``.

    It is ``gan.train_step`` built from the public pieces ``d_grads`` /
    ``d_update`` / ``g_grads`` / ``g_update``, with each network's gradients
    (plus the update's loss parts, accuracies and float buffers) averaged across
    ranks by one flattened ``all_reduce`` before the pure optimizer update.
    ``real`` and ``noise`` are this rank's shard (:func:`next_shard`,
    :func:`draw_noise_shard`). Metrics are the global ones, identical on every
    rank, with the keys of ``gan.train_step``'s metrics.

    Args:
        stacked: ``state`` is a stacked ensemble (leaves ``[S, ...]``), noise is
            stacked (``[S, n_critic, B, ...]``); all members' gradients share the
            one buffer per network per update. Metrics are ``[S]`` tensors.
        shared_data: (stacked only) ``real`` is one batch for every member;
            otherwise it has a leading member axis.
        sync_buffers: average float buffers (BatchNorm running statistics)
            across ranks after each update, keeping the whole state identical on
            all ranks. Batch statistics in the forward pass are per rank.
        isolate: (stacked only) freeze members whose losses or gradient norms
            become non-finite, recording ``diverged_at`` (as ``ganfn.ensemble``).
        group: the process group (default: the whole world).
    """
    if not isinstance(gan, GAN):
        raise TypeError(f"make_train_step needs a ganfn.GAN, got {type(gan).__name__}")
    nc, ng = gan.n_critic, gan.n_gen
    if stacked:
        vm = torch.func.vmap
        d_grads = vm(gan.d_grads, in_dims=(0, None if shared_data else 0, 0))
        g_grads = vm(gan.g_grads)
        d_update, g_update = vm(gan.d_update), vm(gan.g_update)
        norm = vm(grad_norm_metrics, in_dims=(None, 0, 0))
        lr_d, lr_g = vm(gan.d_optimizer.lr), vm(gan.g_optimizer.lr)
        batch_axis = 2
    else:
        d_grads, g_grads, d_update, g_update = gan.d_grads, gan.g_grads, gan.d_update, gan.g_update
        norm, lr_d, lr_g = grad_norm_metrics, gan.d_optimizer.lr, gan.g_optimizer.lr
        batch_axis = 1
    real_axis = 0 if (not stacked or shared_data) else 1  # where n_critic sits in real

    def reduce(grads: dict, scalars: dict, aux: dict) -> tuple[dict, dict, dict]:
        bufs = {k: _float_only(aux[k]) for k in ("d_buffers", "g_buffers")} if sync_buffers else {}
        grads, scalars, bufs = all_reduce_mean((grads, scalars, bufs), group)
        if sync_buffers:
            aux = {**aux, **{k: {**aux[k], **bufs[k]} for k in bufs}}
        return grads, scalars, aux

    def step(state: TrainState, real: Tensor, noise: Noise) -> tuple[TrainState, dict[str, Tensor]]:
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a ganfn.TrainState, got {type(state).__name__}")
        if not stacked:
            gan._check_step_inputs(state, real, noise)
        elif state.step.dim() != 1:
            raise ValueError("stacked=True needs a stacked state (ganfn.ensemble.init_many / stack)")
        start = state
        d_metrics = []
        for i in range(nc):
            r = real if nc == 1 else real.select(real_axis, i)
            nd = tree_map(lambda x: x.select(batch_axis - 1, i), noise["d"])
            loss, grads, aux = d_grads(state, r, nd)
            scal = {"d_loss": loss, **{k: aux[k] for k in _D_SCALARS}}
            grads, scal, aux = reduce(grads, scal, aux)
            new = d_update(state, grads, aux)
            m = {**scal, **norm("d", grads, state.d_opt)}
            if gan.d_skip_accuracy is not None:
                skip = 0.5 * (scal["d_acc_real"] + scal["d_acc_fake"]) > gan.d_skip_accuracy
                new = _nt_replace(new, **{f: tree_where(skip, getattr(state, f), getattr(new, f)) for f in ("d_params", "d_opt", "d_sn")})
                m["d_skipped"] = skip.to(loss.dtype)
            d_metrics.append(m)
            state = new
        g_metrics = []
        for j in range(ng):
            ngz = tree_map(lambda x: x.select(batch_axis - 1, j), noise["g"])
            loss, grads, aux = g_grads(state, ngz)
            grads, scal, aux = reduce(grads, {"g_loss": loss}, aux)
            new = g_update(state, grads, aux)
            m = {**scal, **norm("g", grads, state.g_opt)}
            if gan.g_skip_accuracy is not None:
                acc = 0.5 * (d_metrics[-1]["d_acc_real"] + d_metrics[-1]["d_acc_fake"])
                skip = acc < gan.g_skip_accuracy
                new = _nt_replace(new, **{f: tree_where(skip, getattr(state, f), getattr(new, f)) for f in ("g_params", "g_opt", "g_ema")})
                m["g_skipped"] = skip.to(loss.dtype)
            g_metrics.append(m)
            state = new
        metrics = {k: torch.stack([m[k] for m in d_metrics]).mean(0) for k in d_metrics[0]}
        metrics.update({k: torch.stack([m[k] for m in g_metrics]).mean(0) for k in g_metrics[0]})
        metrics["lr_d"], metrics["lr_g"] = lr_d(state.d_opt), lr_g(state.g_opt)
        state = _nt_replace(state, step=state.step + 1)
        if stacked:
            finite = torch.stack([torch.isfinite(metrics[k]) for k in _WATCHED]).all(0)
            healthy = start.diverged_at < 0
            if isolate:
                state = tree_where(finite & healthy, state, start)
                state = _nt_replace(state, diverged_at=torch.where(healthy & ~finite, start.step, start.diverged_at))
            metrics["diverged"] = state.diverged_at >= 0
        return state, metrics

    return step


def train_step(gan: GAN, state: TrainState, real: Tensor, noise: Noise, *, group: Any = None) -> tuple[TrainState, dict[str, Tensor]]:
    """One data-parallel step of an unstacked state (``make_train_step(gan)``
    called once; build the step once in a loop instead)."""
    return make_train_step(gan, group=group)(state, real, noise)
