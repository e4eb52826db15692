"""``ganfn train --seeds N`` on its default setup: N vmapped seeds vs N separate runs.

    python bench/seeds.py                          # N = 1 4 16, eager and compiled
    python bench/seeds.py --members 4 16 --no-compile
    python bench/seeds.py --profile 16             # torch.profiler of the eager vmapped step

The setup is the CLI's default (``ganfn.presets.Config()``: DCGAN on
scikit-learn's 8x8 digits, batch 64, EMA 0.999, Adam), built by the same
functions the CLI uses. Per training step of N members, contenders:

- ``seq``          : N separate single runs, one after the other (each its own
                     state and ``torch.Generator``; ``gan.train_step`` eager,
                     what ``ganfn train`` runs for one seed);
- ``vmap``         : ``ensemble.make_step(gan)`` over N stacked members, eager;
- ``vmap+compile`` : the same with ``compile=True`` (compile time reported apart).

``--plain-convs`` adds each contender again with the DCGAN's layers run as
``nn.Conv2d`` / ``nn.ConvTranspose2d`` (before ``ganfn.models.FullConv2d``'s
matrix form): ``x seq`` stays relative to ``seq`` with the current layers.

Every contender draws its noise every step (``noise ms`` is that share of the
vmapped step) and trains on one shared real batch, as ``loop.fit`` does.
Contenders run interleaved, round by round, so load hits them alike; figures
are medians over rounds. ``x seq`` is throughput relative to ``seq``
(member-steps/s ratio; higher is better).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import ganfn
from bench.vmap import sync
from ganfn import ensemble, presets
from ganfn.allocator import tune_cpu_allocator
from ganfn.models import FullConv2d, FullConvTranspose2d, layers

_FULL = {FullConv2d: FullConv2d.forward, FullConvTranspose2d: FullConvTranspose2d.forward}


def plain_convs(on: bool) -> None:
    """Make the DCGAN's layers run as the plain convolutions (``on``) or as
    matrix products (ganfn's default): for the before/after columns."""
    for cls, fwd in _FULL.items():
        cls.forward = cls.__mro__[1].forward if on else fwd


def default_gan(device: str = "cpu", **overrides):
    cfg = presets.Config(**overrides)
    data = presets.load_data(cfg)
    return presets.build_gan(cfg, tuple(data.shape[1:])), data[: cfg.batch_size].contiguous().to(device)


def _to(tree, device: torch.device):
    return ganfn.tree_map(lambda t: t.to(device), tree)


class Seq:
    name = "seq"
    plain = False

    def __init__(self, gan, real, N):
        self.gan, self.real, dev = gan, real, real.device
        self.states = [_to(gan.init(s), dev) for s in range(N)]
        self.rngs = ensemble.rngs(range(N), device=dev)

    def step(self):
        plain_convs(self.plain)
        B, dev = self.real.shape[0], self.real.device
        for i, r in enumerate(self.rngs):
            self.states[i], _ = self.gan.train_step(self.states[i], self.real, self.gan.draw_noise(r, B, device=dev))


class Vmap:
    plain = False

    def __init__(self, gan, real, N, compile):
        self.name = "vmap+compile" if compile else "vmap"
        self.gan, self.real = gan, real
        self.fn = ensemble.make_step(gan, compile=compile)
        self.state = _to(ensemble.init_many(gan, range(N)), real.device)
        self.rngs = ensemble.rngs(range(N), device=real.device)
        self.noise_s: list[float] = []

    def step(self):
        plain_convs(self.plain)
        dev = self.real.device
        sync(dev)
        t0 = time.perf_counter()
        noise = ensemble.draw_noise_many(self.gan, self.rngs, self.real.shape[0], device=dev)
        sync(dev)
        self.noise_s.append(time.perf_counter() - t0)
        self.state, _ = self.fn(self.state, self.real, noise)


def bench(N: int, args) -> None:
    torch._dynamo.reset()
    gan, real = default_gan(args.device)
    cs = [Seq(gan, real, N), Vmap(gan, real, N, False)]
    if not args.no_compile:
        cs.append(Vmap(gan, real, N, True))
    if args.plain_convs:  # the same contenders with every layer a convolution
        # (eager only: a compiled step keeps the graph it was traced with, and
        # dynamo's guards do not see the swapped forward methods)
        for c in [Seq(gan, real, N), Vmap(gan, real, N, False)]:
            c.plain, c.name = True, f"{c.name} (plain convs)"
            cs.append(c)
    setup = {}
    torch._dynamo.utils.counters.clear()
    for c in cs:  # warm-up; the compiled contender compiles here
        t0 = time.perf_counter()
        for _ in range(3):
            c.step()
        sync(real.device)
        setup[c.name] = time.perf_counter() - t0
    times = {c.name: [] for c in cs}
    graphs_warm = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for _ in range(args.rounds):
        for c in cs:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                c.step()
            sync(real.device)
            times[c.name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    graphs_after = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    base = med["seq"]
    for c in cs:
        noise = (f"{statistics.median(c.noise_s) * 1e3:.2f} ({100 * statistics.median(c.noise_s) / med[c.name]:.1f}%)"
                 if hasattr(c, "noise_s") else "")
        comp = f"{setup[c.name]:.1f}" if c.name.startswith("vmap+compile") else ""
        print(f"| {N} | {c.name} | {med[c.name] * 1e3:.1f} | {N / med[c.name]:.1f} | {base / med[c.name]:.2f} | "
              f"{noise} | {comp} |", flush=True)
    if graphs_after != graphs_warm:  # a compiled contender recompiled while timed: its figure is not a steady step
        print(f"# N = {N}: WARNING {graphs_after - graphs_warm} graphs compiled during the timed rounds", flush=True)


def profile(N: int, steps: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    gan, real = default_gan()
    v = Vmap(gan, real, N, False)
    for _ in range(2):
        v.step()
    with prof(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for _ in range(steps):
            v.step()
    print(f"\n# torch.profiler, eager vmapped step, N = {N}, {steps} steps, by self CPU time:")
    print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25,
                                                          max_name_column_width=32, max_shapes_column_width=70))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="steps per contender per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bench/gpu_check.sh)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--plain-convs", action="store_true",
                    help="also time every contender with every DCGAN layer a plain convolution (before/after)")
    ap.add_argument("--profile", type=int, default=None, metavar="N",
                    help="profile the eager vmapped step at N members and exit")
    ap.add_argument("--no-malloc-tuning", dest="malloc", action="store_false",
                    help="keep glibc's allocator defaults (ganfn train tunes them on the CPU: ganfn.allocator)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):  # measure the matrix form there too (ganfn uses it on the CPU only)
        layers.DENSE_DEVICES.add("cuda")
    torch.set_num_threads(args.threads)
    tuned = args.malloc and tune_cpu_allocator()
    print(f"# torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPU cores, "
          f"{torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.1f}, glibc allocator tuning {'on' if tuned else 'off'} (as ganfn train)")
    print(f"# command: python bench/seeds.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    if args.profile:
        profile(args.profile, args.steps)
        return
    print("\n| N | contender | ms/step (N members) | member-steps/s | x seq | noise ms (share) | warm-up+compile s |")
    print("|---|---|---|---|---|---|---|")
    for N in args.members:
        bench(N, args)


if __name__ == "__main__":
    main()
