"""This checkout against an older commit, side by side in one run.

    python bench/versus.py                       # against fa4bc11 (before the parts redesign)
    python bench/versus.py --base fa4bc11 --alternations 4 --vmap-rounds 3

The older commit is exported (``git archive``) into a temporary directory. Each alternation
runs, in fresh subprocesses and alternating which goes first, the *same*
benchmarks from each tree with that tree on ``PYTHONPATH`` (each tree's own
``bench/`` code, so each measures its own API):

- ``bench/overhead.py``: the 003 MLP GAN step (batch 64), ganfn ``train_step``
  against the hand-written imperative loop in the same process;
- ``bench/vmap.py --workload W --members 16 --no-compile --no-jax`` for W in
  ring8 and 003: the eager vmapped ensemble step of 16 members.

Prints, per figure, the median over alternations of each tree's value and the
ratio new / old (below 1: the new code is faster). The imperative loop is the
same code in both trees, so its two columns show how much of the spread is
machine load. Timings are noisy on a shared machine: read ratios, not absolutes.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tree: Path, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return out.stdout


def overhead(tree: Path, rounds: int) -> dict[str, float]:
    """``{"imperative ms", "ganfn ms"}`` from one ``bench/overhead.py`` run."""
    text = _run(tree, ["bench/overhead.py", "--rounds", str(rounds)])
    imp = float(re.search(r"imperative loop\s*:\s*([\d.]+) ms", text).group(1))
    fn = float(re.search(r"ganfn train_step:\s*([\d.]+) ms", text).group(1))
    return {"overhead: imperative ms": imp, "overhead: ganfn ms": fn}


def vmap(tree: Path, workload: str, members: int, rounds: int) -> dict[str, float]:
    """The ms/step columns of ``bench/vmap.py``'s row for ``members``."""
    text = _run(tree, ["bench/vmap.py", "--workload", workload, "--members", str(members), "--rounds", str(rounds),
                       "--threads", "1", "--no-compile", "--no-jax"])
    header = next(line for line in text.splitlines() if line.startswith("| S |"))
    row = next(line for line in text.splitlines() if line.startswith(f"| {members} |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    vals = [c.strip() for c in row.strip("|").split("|")]
    return {f"vmap {workload} S={members}: {n}": float(v) for n, v in zip(names, vals, strict=True)
            if n.endswith(" ms")}


def measure(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    out = overhead(tree, args.overhead_rounds)
    for w in args.workloads:
        out.update(vmap(tree, w, args.members, args.vmap_rounds))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="fa4bc11", help="the older commit")
    ap.add_argument("--alternations", type=int, default=3)
    ap.add_argument("--overhead-rounds", type=int, default=10)
    ap.add_argument("--vmap-rounds", type=int, default=3)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--workloads", nargs="+", default=["ring8", "003"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ganfn-base-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.base], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=tar, check=True)
        res: dict[str, dict[str, list[float]]] = {"new": {}, "old": {}}
        for a in range(args.alternations):
            order = [("new", ROOT), ("old", base)] if a % 2 == 0 else [("old", base), ("new", ROOT)]
            for name, tree in order:
                for k, v in measure(tree, args).items():
                    res[name].setdefault(k, []).append(v)
            print(f"alternation {a + 1}/{args.alternations} done", file=sys.stderr, flush=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    print(f"# new = {head} (+ working tree), old = {args.base}; median of {args.alternations} alternations; "
          f"command: python bench/versus.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print("| figure | old | new | new / old |\n|---|---|---|---|")
    for k in res["new"]:
        o, n = statistics.median(res["old"][k]), statistics.median(res["new"][k])
        print(f"| {k} | {o:.3f} | {n:.3f} | {n / o:.3f} |")


if __name__ == "__main__":
    main()
