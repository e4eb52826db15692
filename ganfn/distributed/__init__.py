"""Data-parallel training of the pure GAN steps on ``torch.distributed``.

Four jobs, one module each: :mod:`.group` (the process group), :mod:`.collectives`
(pytree all-reduce / broadcast), :mod:`.sharding` (this rank's slice of the data
and noise) and :mod:`.step` (the step: ``ganfn.step.run`` with an all-reduce).
The other way to use N ranks for a population, splitting the *members* instead
of each batch (``fit(split="members")``, ``ganfn sweep --split members``), is
:mod:`.members` (placement, gathers), :mod:`.exploit` (PBT and halving across
ranks) and :mod:`.shards` (per-rank checkpoints).

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

from .collectives import all_reduce_mean, broadcast, broadcast_object, flatten, max_divergence
from .group import World, barrier, device, is_distributed, is_main, rank, setup, teardown, world, world_size
from .sharding import draw_noise_shard, next_shard, shard_noise
from .step import make_reduce, make_train_step, train_step

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
    "make_reduce",
    "make_train_step",
    "train_step",
]
