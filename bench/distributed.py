"""Data-parallel step throughput: ganfn.distributed against the plain step.

CPU (gloo, 127.0.0.1): steps/s of the plain ``gan.train_step`` in one process,
and of ``distributed.make_train_step`` with 1 and 2 ranks (each rank runs the
per-rank batch; the global batch grows with the world size)::

    python bench/distributed.py --world 1 2 --model mlp --batch 64 --steps 40

GPU (NCCL, world size 1): the plain step against the distributed step on one
GPU, so the cost of flattening and all-reducing the gradients is known::

    python bench/distributed.py --device cuda --world 1 --model dcgan --batch 128 --steps 100

Prints one line per configuration and a JSON summary on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

import ganfn
from ganfn import distributed as gd
from ganfn import models


def build(model: str, device: str) -> ganfn.GAN:
    if model == "mlp":  # reference 003's MLP GAN on 28x28 digits (784-128)
        G, D, z = models.build("mlp", (1, 28, 28), latent_dim=64, hidden=128)
        kw = dict(loss="non_saturating")
    elif model == "mlp_gp":  # the same with WGAN-GP, n_critic=2
        G, D, z = models.build("mlp", (1, 28, 28), latent_dim=64, hidden=128)
        kw = dict(loss="wasserstein", penalty="gp", n_critic=2)
    elif model == "dcgan":  # reference 004's DCGAN at 64x64
        G, D, z = models.build("dcgan", (3, 64, 64), latent_dim=100)
        kw = dict(loss="non_saturating", real_label=0.9)
    else:
        raise SystemExit(f"unknown model {model!r}")
    return ganfn.GAN(G.to(device), D.to(device), latent_dim=z, **kw)


def _batches(gan: ganfn.GAN, batch: int, device: str):
    g = torch.Generator().manual_seed(0)
    lead = [gan.n_critic] if gan.n_critic > 1 else []
    return torch.rand(*lead, batch, *gan.sample_shape, generator=g).mul(2).sub(1).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, gan, state, real, rng, batch, device, steps, warmup, shard: bool) -> float:
    """Seconds per step (median of 3 timed blocks after warm-up)."""
    def one(state):
        noise = gd.draw_noise_shard(gan, rng, batch) if shard else gan.draw_noise(rng, batch)
        noise = ganfn.tree_map(lambda t: t.to(device), noise)
        return step(state, real, noise)[0]

    for _ in range(warmup):
        state = one(state)
    _sync(device)
    blocks = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            state = one(state)
        _sync(device)
        blocks.append((time.perf_counter() - t0) / steps)
    return sorted(blocks)[1]


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    if args.device == "cpu":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    gd.setup("nccl" if args.device == "cuda" else "gloo")
    try:
        device = str(gd.device()) if args.device == "cuda" else "cpu"
        gan = build(args.model, device)
        state = gan.init(0)
        real = _batches(gan, args.batch, device)
        rng = torch.Generator().manual_seed(1)
        step = gd.make_train_step(gan)
        sec = time_steps(step, gan, state, real, rng, args.batch, device, args.steps, args.warmup, shard=True)
        gd.barrier()
        if gd.is_main():
            with open(out, "w") as f:
                json.dump({"sec": sec}, f)
    finally:
        gd.teardown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, nargs="+", default=[1, 2], help="world sizes to run")
    p.add_argument("--model", default="mlp", choices=["mlp", "mlp_gp", "dcgan"])
    p.add_argument("--batch", type=int, default=64, help="per-rank batch size")
    p.add_argument("--steps", type=int, default=30, help="steps per timed block (3 blocks)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.device == "cuda" and max(args.world) > torch.cuda.device_count():
        raise SystemExit(f"--world {max(args.world)} needs that many GPUs; this machine has {torch.cuda.device_count()}")
    torch.set_num_threads(args.threads)

    results = {"model": args.model, "batch_per_rank": args.batch, "device": args.device,
               "threads_per_rank": args.threads, "cpus": os.cpu_count(), "torch": torch.__version__}
    # The plain, non-distributed step in this process.
    device = "cuda:0" if args.device == "cuda" else "cpu"
    gan = build(args.model, device)
    sec = time_steps(gan.train_step, gan, gan.init(0), _batches(gan, args.batch, device),
                     torch.Generator().manual_seed(1), args.batch, device, args.steps, args.warmup, shard=False)
    results["plain"] = {"steps_per_s": 1 / sec, "samples_per_s": args.batch / sec, "ms_per_step": 1e3 * sec}
    print(f"plain train_step        batch {args.batch:4d}: {1 / sec:8.2f} steps/s  {1e3 * sec:8.2f} ms/step", flush=True)
    for world in args.world:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            mp.start_processes(_rank, args=(world, port, args, out), nprocs=world, join=True, start_method="spawn")
            with open(out) as f:
                sec = json.load(f)["sec"]
        backend = "nccl" if args.device == "cuda" else "gloo"
        results[f"world{world}"] = {"backend": backend, "steps_per_s": 1 / sec, "samples_per_s": world * args.batch / sec,
                                    "ms_per_step": 1e3 * sec}
        print(f"distributed {backend:5s} world {world}: {1 / sec:8.2f} steps/s  {1e3 * sec:8.2f} ms/step "
              f"(global batch {world * args.batch}, {world * args.batch / sec:9.1f} samples/s)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
