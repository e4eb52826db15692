"""Profile one training step of S vmapped R3GAN members against S sequential single runs (CPU, 1 thread).

    nice python bench/profile_r3gan.py                  # S = 4, 32 px, width 16, batch 8, top 15 ops
    nice python bench/profile_r3gan.py --batch 32 --top 25

Prints torch.profiler's table of the ops with the most self CPU time for each
form, and the total, so that the ops that make the vmapped step slow (or fast)
stand out. Same model, loss and penalties as ``bench/modern_vmap.py``.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
from modern_vmap import _gan

import ganfn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--model", default="r3gan")
    a = ap.parse_args()
    torch.set_num_threads(1)
    gan = _gan(a.model, a.size, a.width)
    states = [gan.init(s) for s in range(a.members)]
    rngs = [torch.Generator().manual_seed(s) for s in range(a.members)]
    real = [torch.randn(a.batch, 3, a.size, a.size, generator=r) for r in rngs]
    noise = [gan.draw_noise(r, a.batch) for r in rngs]
    stacked, sreal, snoise = ganfn.stack(states), torch.stack(real), ganfn.stack(noise)
    vstep = torch.func.vmap(gan.train_step)
    forms = {"vmap": lambda: vstep(stacked, sreal, snoise),
             "sequential": lambda: [gan.train_step(s, r, n) for s, r, n in zip(states, real, noise, strict=True)]}
    for name, fn in forms.items():
        fn()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        avg = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in avg) / 1e3
        print(f"== {name}: {total:.0f} ms self CPU in all")
        print(avg.table(sort_by="self_cpu_time_total", row_limit=a.top, max_name_column_width=48))


if __name__ == "__main__":
    main()
