"""Does a vmapped (grouped) convolution run batched, and how fast against a loop?

    nice python bench/grouped_conv.py                 # CPU, 1 thread, S = 4 members
    python bench/grouped_conv.py --members 8 --device cuda

For each (channels, groups) case, times the forward and backward (gradients of
weight and input) of a 3x3 convolution with per-member weights: once as
``vmap(grad(f))`` over S stacked members, once as a loop of S single calls.
Under vmap torch folds the members into the groups (one convolution with
``S * groups`` groups); the script also reports whether functorch fell back to
its slow per-member loop (it warns when it does). Median over interleaved rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

CASES = ((64, 8), (64, 1), (64, 64))  # R3GAN-32 at width 32: 64-channel bottleneck, groups of 8


def _time(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch._C._functorch._set_vmap_fallback_warning_enabled(True)
    S = a.members
    for C, G in CASES:
        x = torch.randn(S, a.batch, C, a.size, a.size, device=a.device)
        w = torch.randn(S, C, C // G, 3, 3, device=a.device)

        def f(w, x, G=G):
            return F.conv2d(x, w, padding=1, groups=G).square().sum()

        def vm(f=f, w=w, x=x):
            return vmap(grad(f, argnums=(0, 1)))(w, x)

        def loop(f=f, w=w, x=x):
            return [grad(f, argnums=(0, 1))(w[i], x[i]) for i in range(S)]

        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            vm()
        loop()
        tv, tl = [], []
        for _ in range(a.rounds):
            tv.append(_time(vm, a.device))
            tl.append(_time(loop, a.device))
        v, lo = statistics.median(tv), statistics.median(tl)
        fell_back = any("performance drop" in str(r.message) for r in rec)
        print(f"C={C:3d} groups={G:2d} S={S}: vmap {v:7.1f} ms  loop {lo:7.1f} ms  vmap/loop {v / lo:.2f}  "
              f"per-member fallback: {'yes' if fell_back else 'no'}")


if __name__ == "__main__":
    main()
