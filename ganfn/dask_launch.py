"""Launch data-parallel training on a Dask cluster: one rank per worker.

People who already run a Dask cluster (as many GPU clusters are run) can use it as the
launcher instead of ``torchrun``::

    from dask.distributed import Client
    from ganfn import dask_launch

    client = Client("tcp://scheduler:8786")
    results = dask_launch.run(client, train, steps=1000)   # one result per rank

``run`` picks worker 0's host and a free port on it as the rendezvous address,
submits ``fn(*args, **kwargs)`` to every worker (pinned: rank i runs on worker
i) with ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
set and the ``torch.distributed`` process group initialised, and gathers what
each rank returns (e.g. its loss records) as a list ordered by rank. Inside
``fn`` the :mod:`ganfn.distributed` helpers (``world()``, ``is_main()``,
``make_train_step``, ...) work exactly as under ``torchrun``, and so does
``ganfn.loop.fit(..., seeds=..., split="members")``: a population placed across
the workers, each rank returning its own members' state.

``fn`` and its arguments are pickled to the workers, so ``fn`` must be
importable there (a module-level function of an installed module, or a
function cloudpickle can ship). Workers must be separate processes
(``LocalCluster(processes=True)`` or ``dask worker`` processes), each able to
run one task at a time; Dask is the optional extra ``pip install ganfn[dask]``.
"""
from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Callable, Sequence

__all__ = ["run", "workers"]


def _require_dask() -> Any:
    try:
        import dask.distributed as dd
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("ganfn.dask_launch needs Dask: pip install 'ganfn[dask]' (dask[distributed])") from e
    return dd


def workers(client: Any) -> list[str]:
    """The addresses of the client's workers, sorted (the rank order ``run`` uses)."""
    import inspect

    # Recent distributed lists only 5 workers unless told otherwise.
    kw = {"n_workers": -1} if "n_workers" in inspect.signature(client.scheduler_info).parameters else {}
    return sorted(client.scheduler_info(**kw)["workers"])


def _host(address: str) -> str:
    from distributed.comm import get_address_host
    return get_address_host(address)


def _free_port(host: str) -> int:
    # Runs on worker 0: the port must be free on the machine that hosts the
    # rendezvous store, not on the client's machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _rank_main(fn: Callable, args: tuple, kwargs: dict, rank: int, world_size: int, local_rank: int,
               addr: str, port: int, backend: str | None, env: dict[str, str], timeout_s: float) -> Any:
    """Runs on one worker: set the rendezvous environment, join the group, run
    ``fn``, leave the group, and restore the worker's environment."""
    import torch.distributed as dist

    from . import distributed as gd

    if dist.is_initialized():
        raise RuntimeError("this Dask worker already has a torch.distributed process group: "
                           "are two ranks sharing one worker process (LocalCluster(processes=False))?")
    new = {"MASTER_ADDR": addr, "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world_size),
           "LOCAL_RANK": str(local_rank), **env}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        gd.setup(backend, timeout_s=timeout_s)
        try:
            return fn(*args, **kwargs)
        finally:
            gd.teardown()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(client: Any, fn: Callable[..., Any], *args: Any, backend: str | None = None,
        worker_addresses: Sequence[str] | None = None, port: int | None = None,
        env: dict[str, str] | None = None, timeout_s: float = 300.0, **kwargs: Any) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` as a data-parallel job, one rank per Dask worker.

    Args:
        client: a connected ``dask.distributed.Client``.
        fn: the training function; it runs with the process group initialised
            and returns this rank's result (e.g. ``{"records": [...], ...}``).
        backend: ``"nccl"`` / ``"gloo"``; default nccl where CUDA is available.
        worker_addresses: the workers to use, in rank order (default: all of
            them, sorted by address). World size = their number.
        port: the rendezvous port on worker 0's host (default: a free one found
            there).
        env: extra environment variables for the ranks while ``fn`` runs
            (``{"GLOO_SOCKET_IFNAME": "lo"}``, ``{"NCCL_DEBUG": "INFO"}``, ...).
        timeout_s: the process group's timeout.

    Returns the ranks' results, ``results[r]`` from rank ``r``. If any rank
    raises, the exception is re-raised here (the other ranks then fail at the
    group's timeout or as soon as a collective notices the dead peer).
    """
    _require_dask()
    addrs = list(worker_addresses) if worker_addresses is not None else workers(client)
    if not addrs:
        raise ValueError("the Dask cluster has no workers")
    hosts = [_host(a) for a in addrs]
    master = hosts[0]
    if port is None:
        port = client.submit(_free_port, master, workers=[addrs[0]], allow_other_workers=False, pure=False).result()
    local_ranks = [hosts[:i].count(h) for i, h in enumerate(hosts)]
    job = uuid.uuid4().hex[:8]
    futures = [
        client.submit(_rank_main, fn, tuple(args), dict(kwargs), i, len(addrs), local_ranks[i], master, int(port),
                      backend, dict(env or {}), float(timeout_s), key=f"ganfn-rank-{i}-{job}",
                      workers=[a], allow_other_workers=False, pure=False)
        for i, a in enumerate(addrs)
    ]
    return client.gather(futures)
