"""Two recipes in the same CPU budget, side by side: the R3GAN recipe against the DCGAN one.

    python bench/same_budget.py --data stacked_digits --budget 600
    python bench/same_budget.py --data fashion_mnist --budget 600     # needs Debian's dataset-fashion-mnist

Both arms are ``ganfn train`` runs of ``--seeds`` vmapped members, one torch
thread each, started together so that they share the machine's load. A short
probe of each arm measures its training rate; each arm then gets the number of
steps that fills ``--budget`` seconds of training at that rate (its learning-rate
and other schedules span those steps), and is evaluated once, at its end, by the
run's own evaluator (stacked digits: modes of 1,000 and reverse KL on 26,000
samples; Fashion-MNIST: FD-LeNet(fashion-mnist) against the 10,000 test images).
An arm that runs past twice its budget is interrupted (SIGINT: it writes its
checkpoint and files) and reported as such. Printed: each arm's steps, training
seconds and CPU seconds, and its members' figures with their mean and std.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Each arm's options beyond the shared ones, per data set. The DCGAN arm is ganfn's
# default model with an EMA of G and a linear learning-rate decay to 0; the R3GAN arm is
# the r3gan-cifar10 preset (the paper's schedules over the run) at a CPU width.
ARMS = {
    "stacked_digits": {
        "dcgan": "--ema-decay 0.999 --lr-linear-decay",
        "r3gan": "--preset r3gan-cifar10 --width 16 --latent-dim 32 --batch-size 64 --augment none",
    },
    "fashion_mnist": {
        "dcgan": "--image-size 32 --ema-decay 0.999 --lr-linear-decay",
        "r3gan": "--preset r3gan-cifar10 --image-size 32 --width 16 --latent-dim 32 --batch-size 64",
    },
}


def ganfn(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "ganfn", "train", *args]


def start(arm: str, args: list[str], out: Path) -> tuple[subprocess.Popen, float]:
    with open(out / f"{arm}.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(ganfn(args), stdout=log, stderr=subprocess.STDOUT), time.perf_counter()


def wait(p: subprocess.Popen, t0: float, limit: float | None) -> tuple[float, float, bool]:
    """Wall and CPU seconds of the child ``p``, and whether it had to be interrupted past ``limit``."""
    interrupted = False
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, interrupted
        if limit is not None and not interrupted and time.perf_counter() - t0 > limit:
            p.send_signal(signal.SIGINT)
            interrupted = True
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=sorted(ARMS), default="stacked_digits")
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per arm")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--probe-s", type=float, default=40.0, help="seconds of each arm's rate probe")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-same-budget"))
    args = ap.parse_args()
    out = args.out / args.data
    out.mkdir(parents=True, exist_ok=True)
    common = ["--data", args.data, "--seeds", str(args.seeds), "--threads", "1", "--no-compile", "--no-progress"]
    arms = {k: shlex.split(v) for k, v in ARMS[args.data].items()}

    # The probe: each arm trains for --probe-s seconds (interrupted), with a tiny evaluation.
    probes = {a: start(f"{a}-probe", [*common, *extra, "--steps", "1000000", "--n-eval", "100", "--eval-every",
                                      "100000000", "--log-every", "1000000", "--run-dir", str(out / f"{a}-probe")], out)
              for a, extra in arms.items()}
    time.sleep(args.probe_s)
    for p, _ in probes.values():
        p.send_signal(signal.SIGINT)
    rate = {}
    for a, (p, t0) in probes.items():
        wait(p, t0, None)
        m = json.loads((out / f"{a}-probe" / "metrics.json").read_text())
        rate[a] = m["steps_per_s"]
    steps = {a: max(2, int(args.budget * r)) for a, r in rate.items()}
    print(f"{args.data}: budget {args.budget:.0f} s of training per arm, {args.seeds} vmapped seeds, 1 thread each; "
          "probe rates " + ", ".join(f"{a} {r:.2f} steps/s -> {steps[a]} steps" for a, r in rate.items()))

    runs = {a: start(a, [*common, *extra, "--steps", str(steps[a]), "--eval-every", str(steps[a]), "--log-every",
                         str(max(1, steps[a] // 10)), "--run-dir", str(out / a)], out)
            for a, extra in arms.items()}
    print("| arm | options | steps | training s | process CPU s | figure | members | mean ± std |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for a, (p, t0) in runs.items():
        wall, cpu, interrupted = wait(p, t0, 2 * args.budget + 300)
        m = json.loads((out / a / "metrics.json").read_text())
        fig = m["protocol"]["figure"] if m.get("protocol") else "modes"
        final = (m.get("final") or {}).get("figures") or []
        names = ("modes", "kl") if fig == "modes" else (fig,)
        cells = []
        for name in names:
            vals = [f[name] for f in final if name in f]
            if vals:
                spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append((name, ", ".join(f"{v:.4g}" for v in vals), f"{statistics.mean(vals):.4g} ± {spread:.2g}"))
        note = " (interrupted)" if interrupted else ""
        for name, members, summary in cells or [("-", "no final figures", "-")]:
            print(f"| {a}{note} | `{ARMS[args.data][a]}` | {m['steps_run']} | {m['wall_time_s']:.0f} | {cpu:.0f} "
                  f"| {name} | {members} | {summary} |")


if __name__ == "__main__":
    main()
