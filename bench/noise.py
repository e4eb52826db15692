"""What drawing S members' noise costs per step, against the step itself.

    python bench/noise.py                       # S = 16 64 256, ring8 and 003 MLP GANs
    python bench/noise.py --members 16 64 --workload 003

Member i's noise comes from its own ``torch.Generator`` (so it equals the
noise of a single run with that seed): ``ensemble.draw_noise_many`` makes
S ``gan.draw_noise`` calls and stacks them. Side by side, per S:

- ``per-member draw``: ``ensemble.draw_noise_many`` (what training does);
- ``one randn``       : the same shapes from ONE generator in one call: the
                        floor any batched scheme could reach (it does not
                        reproduce single runs; here only as a bound);
- ``vmap step``       : ``ensemble.make_step(gan)`` eager, on that noise.

``share`` is per-member draw / (draw + step): the fraction of a training step
spent drawing noise, and the most a batched or counter-based generator could save.
Timings are medians over interleaved rounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optree
import torch

from bench.vmap import WORKLOADS, make_gan, sync, tune_malloc
from ganfn import ensemble


def one_randn(gan, rng: torch.Generator, S: int, B: int, device):
    """The same tree of shapes as ``draw_noise_many``, from one generator."""
    like = gan.draw_noise(torch.Generator(device=device).manual_seed(0), B)
    return optree.tree_map(lambda t: torch.randn(S, *t.shape, generator=rng, device=device), like)


def bench(workload: str, S: int, rounds: int, device: torch.device) -> dict[str, float]:
    gan = make_gan(workload, device)
    B, shape = WORKLOADS[workload][3], WORKLOADS[workload][1]
    real = torch.randn(B, *shape, device=device)
    state = optree.tree_map(lambda t: t.to(device), ensemble.init_many(gan, range(S)))
    rngs = ensemble.rngs(range(S), device=device)
    one = torch.Generator(device=device).manual_seed(0)
    step = ensemble.make_step(gan)
    noise = ensemble.draw_noise_many(gan, rngs, B)
    fns = {
        "per-member draw": lambda: ensemble.draw_noise_many(gan, rngs, B),
        "one randn": lambda: one_randn(gan, one, S, B, device),
        "vmap step": lambda: step(state, real, noise),
    }
    reps = max(1, 64 // S)
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            sync(device)
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    ap.add_argument("--members", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tuned = args.device == "cpu" and tune_malloc()
    device = torch.device(args.device)
    print(f"# torch {torch.__version__}, {device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, malloc tuning {'on' if tuned else 'off'}")
    print(f"# command: python bench/noise.py {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    print("| workload | S | per-member draw ms | one randn ms | vmap step ms | share of step | per-member / one "
          "randn |")
    print("|---|---|---|---|---|---|---|")
    for w in (list(WORKLOADS) if args.workload == "all" else [args.workload]):
        for S in args.members:
            r = bench(w, S, args.rounds, device)
            d, o, s = r["per-member draw"], r["one randn"], r["vmap step"]
            print(f"| {w} | {S} | {d * 1e3:.3f} | {o * 1e3:.3f} | {s * 1e3:.2f} | {100 * d / (d + s):.1f}% | "
                  f"{d / o:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
