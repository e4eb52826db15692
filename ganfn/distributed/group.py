"""The process group: who this process is in a data-parallel job, and setting one up."""
from __future__ import annotations

import datetime
import os
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

__all__ = ["World", "world", "rank", "world_size", "is_main", "is_distributed", "setup", "teardown", "device",
           "barrier"]


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
    """Leave the process group (a no-op without one).

    Every rank first waits at a barrier, so that none tears its connections
    down while a peer is still finishing its last collective (rank 0 writes the
    run's files after the others are done); a peer already gone is no reason to
    keep this one from exiting."""
    if not is_distributed():
        return
    try:
        dist.barrier()
    except (RuntimeError, ConnectionError):
        pass
    dist.destroy_process_group()


def barrier(group: Any = None) -> None:
    """Wait for every rank (a no-op without a process group)."""
    if is_distributed():
        dist.barrier(group)
