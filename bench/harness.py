"""Side-by-side speed and memory of one GAN update, five ways, in one process.

    python bench/harness.py                       # every workload, every variant
    python bench/harness.py --quick               # fewer repeats (minutes on 2 CPU cores)
    python bench/harness.py --workloads mlp_b64 --variants imperative,ganfn
    python bench/harness.py --device cuda --variants imperative,ganfn,ganfn_compiled,ganfn_cudagraphs
    python bench/harness.py --device cuda --flops # + FLOP/s of DCGAN 64x64 vs matmul peak

Variants (bench/workloads.py): imperative (reference 003 loop), lightning
(reference 000 manual optimization), ganfn (``train_step`` eager),
ganfn_compiled (``torch.compile``), ganfn_cudagraphs (``mode="reduce-overhead"``,
CUDA only), jax (``jax.jit`` + optax). Lightning and JAX are skipped with a message when not installed.

Method: variants are set up (and compiled: the compile time is reported apart),
then run round-robin: each round runs ``--steps`` steps of every variant in
turn, so machine noise hits all variants alike. The figure per variant is the
median over rounds of the round's median step time; ratios are to the
imperative loop's figure (ratio < 1: faster than imperative). Then one extra
step per variant is run under a memory tracker: peak bytes allocated during
the step above the level before it (CPU: ``torch.profiler`` allocation events,
running sum; CUDA: ``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="all", help="comma list of bench.workloads.WORKLOADS names, or 'all'")
    ap.add_argument("--variants", default="imperative,lightning,ganfn,ganfn_compiled,jax")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (and XLA's pool when 1)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="round-robin rounds (default 15, --quick 5; DCGAN fewer on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per variant per round (default 10; DCGAN on CPU 2)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing")
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--flops", action="store_true", help="FLOP/s of each step vs a measured matmul rate")
    ap.add_argument("--profile", default=None, help="print a torch.profiler table for this variant on each workload")
    ap.add_argument("--malloc-tuning", action="store_true",
                    help="tune glibc's allocator first, as `ganfn train` does on the CPU (ganfn.allocator; "
                         "process-wide, so every variant runs with it)")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    from bench.jax_workloads import configure_threads

    configure_threads(args.threads)  # before anything imports jax; one thread: pinned to one core
    import torch

    torch.set_num_threads(args.threads)
    from bench.workloads import WORKLOADS, available, make_pool, variant_class

    if args.malloc_tuning:
        from ganfn.allocator import tune_cpu_allocator

        print(f"# glibc allocator tuned (ganfn.allocator.tune_cpu_allocator): {tune_cpu_allocator()}")

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    names = list(WORKLOADS) if args.workloads == "all" else args.workloads.split(",")
    wanted = args.variants.split(",")
    if "imperative" not in wanted:
        wanted.insert(0, "imperative")
    variants = []
    for v in wanted:
        ok, why = available(v, args.device)
        if ok:
            variants.append(v)
        else:
            print(f"# skipping {v}: {why}")

    print(f"# torch {torch.__version__}, device {_device_name(device)}, dtype {args.dtype}, "
          f"torch.get_num_threads()={torch.get_num_threads()}, "
          f"cores pinned {sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}, python "
          f"{platform.python_version()}")
    _versions(variants)
    print(f"# command: python bench/harness.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    peak = _matmul_peak(device, dtype) if args.flops else None
    for wname in names:
        wl = WORKLOADS[wname]
        conv_cpu = wl.kind == "dcgan" and device.type == "cpu"
        rounds = args.rounds or (3 if args.quick else 7) if conv_cpu else args.rounds or (5 if args.quick else 15)
        steps = args.steps or (2 if conv_cpu else 10)
        G, D = wl.models()
        pool = make_pool(wl, wl.gan(G, D), 4, device, dtype)
        print(f"\n## {wname}: {wl.kind}, batch {wl.batch}, loss {wl.loss}, gp {wl.gp}, n_critic {wl.n_critic}; "
              f"{rounds} rounds x {steps} steps, median of round medians")
        objs = {}
        for v in variants:
            t0 = time.perf_counter()
            try:
                objs[v] = variant_class(v)(wl, pool, device, dtype).setup()
            except Exception as e:  # a variant that cannot run is reported, not fatal
                print(f"# {v}: set-up failed: {type(e).__name__}: {e}")
                continue
            objs[v].setup_s = time.perf_counter() - t0
            objs[v].run(list(range(args.warmup)))
        times: dict[str, list[float]] = {v: [] for v in objs}
        for r in range(rounds):
            for v, o in objs.items():
                ts = o.run([r * steps + j for j in range(steps)])
                times[v].append(statistics.median(ts))
        mem = {}
        if not args.no_memory:
            for v, o in objs.items():
                try:
                    mem[v] = o.memory(0)
                except Exception as e:
                    mem[v] = (-1, f"failed: {type(e).__name__}: {e}")
        base = statistics.median(times["imperative"])
        flops = _step_flops(objs["imperative"]) if args.flops else None
        print("| variant | step ms | IQR of rounds ms | ratio to imperative | speed-up | compile s | peak MB/step | "
              "mem ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for v in objs:
            med = statistics.median(times[v])
            q = statistics.quantiles(times[v], n=4) if len(times[v]) > 1 else [med, med, med]
            c = objs[v].compile_s
            mb, how = mem.get(v, (-1, ""))
            mb_s = f"{mb / 2**20:.2f}" if mb >= 0 else "n/a"
            mr = f"{mb / mem['imperative'][0]:.2f}" if mb >= 0 and mem.get("imperative", (0,))[0] > 0 else "n/a"
            print(f"| {v} | {med * 1e3:.2f} | {q[0] * 1e3:.2f}-{q[2] * 1e3:.2f} | {med / base:.3f} | "
                  f"{base / med:.2f}x | {'' if c is None else f'{c:.1f}'} | {mb_s} | {mr} |")
        for v in objs:
            if objs[v].note:
                print(f"# {v}: {objs[v].note}")
        hows = {how for _, how in mem.values() if how}
        for h in sorted(hows):
            print(f"# memory: {h}")
        if flops:
            print(f"# FLOPs per step (torch.utils.flop_counter on the imperative step): {flops / 1e9:.2f} GFLOP")
            for v in objs:
                rate = flops / statistics.median(times[v])
                extra = (f" = {100 * rate / peak:.1f}% of the measured {args.dtype} matmul rate "
                         f"({peak / 1e12:.2f} TFLOP/s)" if peak else "")
                print(f"#   {v}: {rate / 1e12:.3f} TFLOP/s{extra}")
        if args.profile and args.profile in objs:
            _profile(objs[args.profile], steps)


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()})"


def _versions(variants) -> None:
    out = []
    if "lightning" in variants:
        import lightning

        out.append(f"lightning {lightning.__version__}")
    if "jax" in variants:
        import jax
        import optax

        out.append(f"jax {jax.__version__} ({jax.devices()[0].platform}), optax {optax.__version__}")
    if out:
        print("# " + ", ".join(out))


def _matmul_peak(device, dtype) -> float:
    """Measured dense matmul FLOP/s for ``dtype`` (tf32 allowed for float32 on CUDA)."""
    import torch

    from bench.workloads import sync

    n = 8192 if device.type == "cuda" else 1024
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 5
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    rate = 2 * n**3 * reps / (time.perf_counter() - t0)
    print(f"# measured matmul rate ({n}x{n}, "
          f"{dtype}{', tf32' if device.type == 'cuda' and dtype == torch.float32 else ''}): {rate / 1e12:.2f} TFLOP/s")
    return rate


def _step_flops(imp) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        imp.step(0)
    return float(fc.get_total_flops())


def _profile(obj, steps: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if obj.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        obj.run(list(range(steps)))
    key = "self_cuda_time_total" if obj.device.type == "cuda" else "self_cpu_time_total"
    print(f"\n# torch.profiler, {obj.name}, {steps} steps, sorted by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=40))


if __name__ == "__main__":
    main()
