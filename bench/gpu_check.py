"""One prepared GPU check: every section under its own time limit, one markdown table.

    bash bench/gpu_check.sh                  # on a CUDA machine (installs .whl/ wheels first)
    python bench/gpu_check.py --out DIR      # the same, without the wheel step
    python bench/gpu_check.py --cpu-smoke    # the script's logic on a CPU in ~1 minute

Sections (each a subprocess with its own timeout, so one hang cannot eat the
budget; the whole check is planned for under 8 minutes on one H100/H200):

- ``tests``       : ``pytest -m cuda`` (vmapped members equal single runs, the
                    step is pure, compiled equals eager, on the GPU);
- ``harness_*``   : ``bench/harness.py --device cuda``: the imperative loop,
                    Lightning (if installed) and ganfn eager, then (a section of
                    its own, so a slow compile costs only it) ganfn compiled and
                    CUDA graphs, on the MLP GAN and DCGAN 32x32 / 64x64;
- ``vmap``        : ``bench/vmap.py --device cuda`` on the 003 MLP GAN at
                    S = 1, 16, 64, 256 against S sequential runs, memory per member;
- ``noise``       : ``bench/noise.py --device cuda``: drawing S members' noise from
                    S generators, against one draw and the vmapped step;
- ``flops``       : DCGAN 64x64 in bfloat16, achieved FLOP/s against the
                    measured bf16 matmul rate.

Output: ``DIR/gpu_check.md`` (one table: section, status, seconds, and every
row of every table the sections printed, plus their FLOP/s lines) and
``DIR/gpu_check_logs.txt`` (every section's command and full output). DIR defaults to ``$OUT`` when set, else
``bench/gpu_check_out``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 470  # the sections' timeouts are clipped so the whole check ends before this


@dataclass
class Section:
    name: str
    argv: list[str]
    timeout_s: int


def sections(smoke: bool) -> list[Section]:
    """The check's sections; ``smoke`` shrinks each to seconds on a CPU."""
    py = sys.executable
    if smoke:
        h = [py, "bench/harness.py", "--device", "cpu", "--rounds", "1", "--steps", "1", "--warmup", "1", "--no-memory"]
        return [
            Section("tests", [py, "-m", "pytest", "-o", "addopts=", "-m", "cuda", "-q", "-rfEs", "-p",
                              "no:cacheprovider", "tests/test_cuda.py"], 60),
            Section("harness_mlp",
                    h + ["--workloads", "mlp_b64", "--variants", "imperative,ganfn,ganfn_cudagraphs"], 60),
            Section("vmap", [py, "bench/vmap.py", "--workload", "ring8", "--members", "1", "2", "--rounds", "1",
                             "--steps", "1", "--no-compile", "--no-jax"], 60),
            Section("noise", [py, "bench/noise.py", "--workload", "ring8", "--members", "2", "4", "--rounds", "1"], 60),
            Section("seeds",
                    [py, "bench/seeds.py", "--device", "cpu", "--members", "2", "--rounds", "1", "--steps", "1",
                              "--no-compile", "--plain-convs"], 60),
            Section("flops", h + ["--workloads", "mlp_b64", "--variants", "imperative,ganfn",
                                  "--flops", "--dtype", "bfloat16"], 60),
            Section("hang",
                    [py, "-c",
                     "import time; print('| a | b |'); print('|---|---|'); print('| 1 | 2 |', flush=True); "
                     "time.sleep(60)"], 3),
        ]
    h = [py, "bench/harness.py", "--device", "cuda", "--rounds", "5", "--steps", "20"]
    eager, compiled = "imperative,lightning,ganfn", "imperative,ganfn_compiled,ganfn_cudagraphs"
    harness = []
    for name, wl in (("mlp", "mlp_b64"), ("dcgan32", "dcgan32_b128"), ("dcgan64", "dcgan64_b64")):
        # eager and compiled apart: a slow compile must not cost the eager figures
        harness += [Section(f"harness_{name}", h + ["--workloads", wl, "--variants", eager], 25),
                    Section(f"harness_{name}_compiled", h + ["--workloads", wl, "--variants", compiled], 50)]
    return [
        Section("tests", [py, "-m", "pytest", "-o", "addopts=", "-m", "cuda", "-q", "-rfEs", "-p",
                          "no:cacheprovider", "tests/test_cuda.py"], 40),
        *harness,
        Section("vmap",
                [py, "bench/vmap.py", "--device", "cuda", "--workload", "003", "--members", "1", "16", "64", "256",
                         "--rounds", "3", "--steps", "8", "--no-jax"], 90),
        Section("noise", [py, "bench/noise.py", "--device", "cuda", "--workload", "003", "--rounds", "3"], 20),
        # ganfn train --seeds N's default DCGAN/digits: matrix-form layers vs cuDNN's (grouped) convolutions
        Section("seeds", [py, "bench/seeds.py", "--device", "cuda", "--members", "4", "16", "64", "--rounds", "3",
                          "--steps", "5", "--no-compile", "--plain-convs"], 30),
        Section("flops", h + ["--workloads", "dcgan64_b64", "--variants", "imperative,ganfn,ganfn_compiled", "--flops",
                              "--dtype", "bfloat16", "--no-memory"], 65),
    ]


def run(sec: Section, out: Path, left_s: float) -> tuple[str, float, str]:
    """Run one section; return (status, seconds, its output). Output printed
    before a timeout is kept (the child writes unbuffered to a log file)."""
    timeout = max(1.0, min(sec.timeout_s, left_s))
    log = out / f"{sec.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        # own process group: a timeout kills the section's children (compile workers) too
        p = subprocess.Popen(sec.argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
            status = f"timed out after {timeout:.0f} s"
    return status, time.perf_counter() - t0, log.read_text(errors="replace")


_ROW = re.compile(r"^\|(.*)\|\s*$")


def rows(text: str) -> list[tuple[str, str]]:
    """(case, figures) for every markdown table row in ``text`` (cells named by
    their table's header; the case is the nearest ``## `` heading and first
    cell), every FLOP/s line and every pytest summary line."""
    out, header, heading = [], None, ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading, header = line[3:].split(":")[0].strip(), None
            continue
        m = _ROW.match(line)
        if not m:
            header = None
            if "TFLOP/s" in line or re.search(r"\d+ (passed|failed|skipped|error)", line):
                out.append((heading or "-", line.lstrip("# ").strip()))
            continue
        cells = [c.strip() for c in m.group(1).split("|")]
        if header is None:
            header = cells
        elif not all(set(c) <= set("-: ") for c in cells):
            named = [f"{h}={c}" for h, c in zip(header[1:], cells[1:], strict=False) if c]
            out.append((" ".join(filter(None, [heading, f"{header[0]}={cells[0]}"])), "; ".join(named)))
    return out


def table(results: list[tuple[Section, str, float, str]]) -> str:
    lines = ["| section | status | s | case | figures |", "|---|---|---|---|---|"]
    for sec, status, secs, text in results:
        found = rows(text) or [("-", "(no table printed; see the log)")]
        for i, (case, figs) in enumerate(found):
            head = f"| {sec.name} | {status} | {secs:.0f} |" if i == 0 else "| | | |"
            lines.append(f"{head} {case.replace('|', '/')} | {figs.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "gpu_check_out"))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny CPU versions of every section (tests the script)")
    ap.add_argument("--only", default=None, help="comma list of section names to run")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    secs = [s for s in sections(args.cpu_smoke) if not args.only or s.name in args.only.split(",")]
    start, results = time.perf_counter(), []
    for sec in secs:
        left = BUDGET_S - (time.perf_counter() - start)
        if left < 5:
            results.append((sec, "not run: out of time", 0.0, ""))
            continue
        status, took, text = run(sec, out, left)
        print(f"# {sec.name}: {status} in {took:.0f} s", flush=True)
        results.append((sec, status, took, text))
    # one log file: the device tool brings back at most 8 files
    with open(out / "gpu_check_logs.txt", "w") as f:
        for sec, status, _, text in results:
            f.write(f"===== {sec.name}: {status}\n$ {' '.join(sec.argv)}\n{text}\n")
            (out / f"{sec.name}.log").unlink(missing_ok=True)
    md = (f"# ganfn GPU check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{'CPU smoke run' if args.cpu_smoke else _gpu()}\n\n"
          f"Total {time.perf_counter() - start:.0f} s. Every section's output: "
          "gpu_check_logs.txt.\n\n" + table(results))
    (out / "gpu_check.md").write_text(md)
    print(md)
    return 0 if all(r[1] == "ok" for r in results if r[0].name != "hang") else 1


def _gpu() -> str:
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return q.stdout.strip() or "no nvidia-smi output"
    except (OSError, subprocess.TimeoutExpired):
        return "nvidia-smi not found"


if __name__ == "__main__":
    sys.exit(main())
