"""A run leaves nothing behind in the temporary directory (its DataLoader workers are stopped before exit)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_a_streamed_folder_run_leaves_no_pymp_folders(tmp_path):
    # Two decoding workers (the default), each of which makes a multiprocessing pymp-* folder.
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    r = subprocess.run([sys.executable, "-m", "ganfn", "train", "--data", str(images), "--image-size", "16",
                        "--model", "mlp", "--steps", "3", "--batch-size", "8", "--data-workers", "2",
                        "--no-progress", "--run-dir", str(tmp_path / "run")],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "samples.png").is_file()
    assert sorted(p.name for p in tmp.iterdir()) == []
