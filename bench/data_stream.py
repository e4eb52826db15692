"""Steps/s and peak memory of a DCGAN-64 on a folder of 20,000 64x64 PNGs:
streamed by DataLoader workers, preloaded as uint8, and (for reference) the
old path that held the whole folder as float32.

    python bench/data_stream.py --folder /tmp/ganfn_bench_pngs --steps 4

The folder is generated on first use (smooth random colour fields, 64x64 RGB
PNGs). ``baseline`` trains the same model on 256 random images held in
memory: the process's footprint without the data set. Each mode runs in its
own process, so peak RSS (``ru_maxrss``) is that mode's alone. Decoding
workers are separate processes, not counted in it; each holds a few batches
(``RUSAGE_CHILDREN`` cannot measure them: any forked child, even a short
``ldconfig`` run at import time, reports the parent's resident pages as its
own). The preloaded float32 size of the folder is N x 3 x 64 x 64 x 4 bytes
(983 MB for 20,000 images).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("baseline", "stream", "preload_uint8", "float32")


def make_folder(path: Path, n: int, size: int = 64) -> None:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    have = len(list(path.glob("*.png")))
    if have >= n:
        return
    rng = np.random.default_rng(0)
    for i in range(have, n):
        low = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        img.save(path / f"{i:05d}.png")


def run_mode(mode: str, folder: str, steps: int, batch: int, workers: int, width: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from ganfn import data
    from ganfn import presets as P
    from ganfn.loop import fit

    t0 = time.perf_counter()
    if mode == "stream":
        src = data.images_source(folder, 64, workers=workers, flip=True)
    elif mode == "preload_uint8":
        src = data.images_source(folder, 64, stream=False, workers=workers, flip=True)
    elif mode == "float32":
        src = data.image_folder(folder, 64, workers=workers)
    else:  # the same training on 256 images in memory: what the process needs without the data set
        src = torch.rand(256, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    load_s = time.perf_counter() - t0
    cfg = P.Config(data=folder, model="dcgan", image_size=64, width=width, latent_dim=100, g_norm="batch",
                   d_norm="batch", ema_decay=None)
    gan = P.build_gan(cfg, (3, 64, 64))
    warm = 2
    _, hist = fit(gan, src, steps=warm, batch_size=batch, progress=False, print_fn=lambda s: None,
                        checkpoint_every=None)
    t1 = time.perf_counter()
    _, hist = fit(gan, src, steps=steps, batch_size=batch, progress=False, print_fn=lambda s: None,
                        checkpoint_every=None)
    train_s = time.perf_counter() - t1
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "n": len(src) if not isinstance(src, torch.Tensor) else src.shape[0],
            "load_s": load_s, "steps": steps, "steps_per_s": steps / train_s,
            "peak_rss_mb": self_kb / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="/tmp/ganfn_bench_pngs")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_mode(a.one, a.folder, a.steps, a.batch_size, a.workers, a.width)))
        return
    t = time.perf_counter()
    make_folder(Path(a.folder), a.n)
    print(f"folder {a.folder}: {a.n} PNGs ready ({time.perf_counter() - t:.0f} s)", flush=True)
    float32_mb = a.n * 3 * 64 * 64 * 4 / 1e6
    rows = []
    for mode in a.modes.split(","):
        cmd = [sys.executable, __file__, "--one", mode, "--folder", a.folder, "--steps", str(a.steps),
               "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--width", str(a.width)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["mode"] == "stream"), rows[0])
    print(f"\npreloaded float32 size of the folder: {float32_mb:.0f} MB")
    print("| mode | load s | steps/s | peak RSS MB | RSS / float32 size | steps/s vs " + base["mode"] + " |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['load_s']:.1f} | {r['steps_per_s']:.3f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] / float32_mb:.2f} | "
              f"{r['steps_per_s'] / base['steps_per_s']:.2f} |")


if __name__ == "__main__":
    main()
