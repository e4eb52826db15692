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
        kw = dict(loss="wasserstein", parts=ganfn.recipes.wgan_gp(), n_critic=2)
    elif model == "dcgan":  # reference 004's DCGAN at 64x64
        G, D, z = models.build("dcgan", (3, 64, 64), latent_dim=100)
        kw = dict(loss=ganfn.losses.bce(real_label=0.9))
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


def time_steps(variants: dict, gan, state, real, batch, device, steps, warmup) -> dict[str, float]:
    """Seconds per step of each ``name -> (step, shard)`` variant: the median of
    5 timed blocks, the variants' blocks interleaved so that load changes on a
    shared machine hit all of them alike."""
    def block(step, shard, state, rng, n):
        for _ in range(n):
            noise = gd.draw_noise_shard(gan, rng, batch) if shard else gan.draw_noise(rng, batch)
            noise = ganfn.tree_map(lambda t: t.to(device), noise)
            state = step(state, real, noise)[0]
        _sync(device)
        return state

    states = {k: state for k in variants}
    rngs = {k: torch.Generator().manual_seed(1) for k in variants}
    for k, (step, shard) in variants.items():
        states[k] = block(step, shard, states[k], rngs[k], warmup)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(5):
        for k, (step, shard) in variants.items():
            t0 = time.perf_counter()
            states[k] = block(step, shard, states[k], rngs[k], steps)
            times[k].append((time.perf_counter() - t0) / steps)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


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
        variants = {"distributed": (gd.make_train_step(gan), True)}
        if world == 1:  # the plain step in the same process, for the overhead
            variants["plain"] = (gan.train_step, False)
        secs = time_steps(variants, gan, state, real, args.batch, device, args.steps, args.warmup)
        # The collectives alone: one step's n_critic D and n_gen G all-reduces
        # (flatten, all_reduce, divide, unflatten) on gradient-sized trees.
        reps = []
        for _ in range(5):
            gd.barrier()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                for _ in range(gan.n_critic):
                    gd.all_reduce_mean(state.d.params)
                for _ in range(gan.n_gen):
                    gd.all_reduce_mean(state.g.params)
            _sync(device)
            reps.append((time.perf_counter() - t0) / args.steps)
        secs["allreduce"] = sorted(reps)[2]
        secs["numel"] = sum(v.numel() for v in (*state.d.params.values(), *state.g.params.values()))
        gd.barrier()
        if gd.is_main():
            with open(out, "w") as f:
                json.dump(secs, f)
    finally:
        gd.teardown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, nargs="+", default=[1, 2], help="world sizes to run")
    p.add_argument("--model", default="mlp", choices=["mlp", "mlp_gp", "dcgan"])
    p.add_argument("--batch", type=int, default=64, help="per-rank batch size")
    p.add_argument("--steps", type=int, default=30, help="steps per timed block (5 blocks)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.device == "cuda" and max(args.world) > torch.cuda.device_count():
        raise SystemExit(f"--world {max(args.world)} needs that many GPUs; this machine has "
                         f"{torch.cuda.device_count()}")
    torch.set_num_threads(args.threads)

    results = {"model": args.model, "batch_per_rank": args.batch, "device": args.device,
               "threads_per_rank": args.threads, "cpus": os.cpu_count(), "torch": torch.__version__}
    for world in args.world:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            mp.start_processes(_rank, args=(world, port, args, out), nprocs=world, join=True, start_method="spawn")
            with open(out) as f:
                secs = json.load(f)
        sec = secs["distributed"]
        if "plain" in secs:
            p_ = secs["plain"]
            results["plain"] = {"steps_per_s": 1 / p_, "samples_per_s": args.batch / p_, "ms_per_step": 1e3 * p_}
            print(f"plain gan.train_step (no all-reduce), batch {args.batch:4d}: {1 / p_:8.2f} steps/s  "
                  f"{1e3 * p_:8.2f} ms/step", flush=True)
        backend = "nccl" if args.device == "cuda" else "gloo"
        results[f"world{world}"] = {"backend": backend, "steps_per_s": 1 / sec,
                                    "samples_per_s": world * args.batch / sec,
                                    "ms_per_step": 1e3 * sec,
                                    "allreduce_ms_per_step": 1e3 * secs["allreduce"], "parameters": secs["numel"]}
        print(f"distributed {backend:5s} world {world}               : {1 / sec:8.2f} steps/s  {1e3 * sec:8.2f} "
              f"ms/step (global batch {world * args.batch}, {world * args.batch / sec:9.1f} samples/s; "
              f"all-reduces alone {1e3 * secs['allreduce']:.2f} ms/step for {secs['numel'] / 1e6:.2f}M parameters)",
              flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
