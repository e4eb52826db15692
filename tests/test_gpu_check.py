"""bench/gpu_check.py: its table parsing, its time limits and its CPU smoke mode."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_check  # noqa: E402

HARNESS = """# torch 2.11
## mlp_b64: mlp, batch 64
| variant | step ms | ratio to imperative |
|---|---|---|
| imperative | 1.20 | 1.000 |
| ganfn | 1.10 | 0.917 |
#   ganfn: 0.120 TFLOP/s = 1.0% of the measured bfloat16 matmul rate
"""


def test_rows_name_every_cell_and_keep_flop_and_pytest_lines() -> None:
    rows = gpu_check.rows(HARNESS + "\n5 passed, 2 skipped in 3.1s\n")
    assert rows == [
        ("mlp_b64 variant=imperative", "step ms=1.20; ratio to imperative=1.000"),
        ("mlp_b64 variant=ganfn", "step ms=1.10; ratio to imperative=0.917"),
        ("mlp_b64", "ganfn: 0.120 TFLOP/s = 1.0% of the measured bfloat16 matmul rate"),
        ("mlp_b64", "5 passed, 2 skipped in 3.1s"),
    ]


def test_rows_of_text_without_tables_is_empty_and_the_table_says_so() -> None:
    assert gpu_check.rows("Traceback (most recent call last):\nRuntimeError: CUDA error\n") == []
    sec = gpu_check.Section("harness_mlp", ["x"], 1)
    md = gpu_check.table([(sec, "failed (exit 1)", 2.0, "RuntimeError\n")])
    assert "| harness_mlp | failed (exit 1) | 2 | - | (no table printed; see the log) |" in md


def test_a_hanging_section_is_stopped_and_its_output_kept(tmp_path: Path) -> None:
    code = "import time; print('| a | b |'); print('|---|---|'); print('| 1 | 2 |', flush=True); time.sleep(30)"
    status, took, text = gpu_check.run(gpu_check.Section("hang", [sys.executable, "-c", code], 2), tmp_path, 100)
    assert status == "timed out after 2 s" and took < 15
    assert gpu_check.rows(text) == [("a=1", "b=2")]
    # and the overall budget clips a section's own limit
    status, _, _ = gpu_check.run(gpu_check.Section("hang", [sys.executable, "-c", code], 60), tmp_path, 1)
    assert status == "timed out after 1 s"


def test_every_gpu_section_fits_the_budget() -> None:
    secs = gpu_check.sections(smoke=False)
    assert sum(s.timeout_s for s in secs) <= gpu_check.BUDGET_S < 8 * 60
    names = {s.name for s in secs}
    assert {"tests", "vmap", "noise", "flops"} <= names
    assert {f"harness_{w}{c}" for w in ("mlp", "dcgan32", "dcgan64") for c in ("", "_compiled")} <= names


@pytest.mark.slow
def test_cpu_smoke_mode_writes_one_table(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "bench/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    md = (tmp_path / "gpu_check.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.md", "gpu_check_logs.txt"]
    assert "===== hang: timed out after 3 s" in (tmp_path / "gpu_check_logs.txt").read_text()
    for name in ("tests", "harness_mlp", "vmap", "noise", "flops"):
        assert f"| {name} | ok |" in md, md
    assert "| hang | timed out after 3 s |" in md and "TFLOP/s" in md and "ring8 S=2" in md
