"""Where a stacked-digits reverse KL comes from: the generator or the protocol's floor.

    python bench/stacked_modes_kl.py RUN_DIR      # a finished `ganfn train --data stacked_digits` run

For real stacked digits (two draws) and for every member of the run's newest
checkpoint, on 26,000 samples each (the StackedMNIST protocol): modes covered,
the joint reverse KL to uniform, and its split into the three channels'
marginal digit KLs plus the rest (the dependence between channels, whose
finite-sample floor is about (1000 - 1) / (2 * 26000) = 0.019), the spread of
the mode counts, and how sure the digits LeNet is of each channel.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ganfn import checkpoint, evaluation, metrics
from ganfn import presets as P
from ganfn.data.stacked_digits import stacked_digits
from ganfn.metrics.stacked_modes import STACKED_EVAL_SAMPLES, mode_histogram_figures


def row(name: str, x: torch.Tensor, ext: Any) -> str:
    """One markdown row of figures for samples x [N, 3, H, W]."""
    n, _, h, w = x.shape
    probs = ext(x.reshape(n * 3, 1, h, w)).probs
    digits, conf = probs.argmax(1).reshape(n, 3), probs.max(1).values
    modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
    joint = mode_histogram_figures(modes)
    marginal = []
    for ch in range(3):
        p = torch.bincount(digits[:, ch], minlength=10).double() / n
        marginal.append(float((p[p > 0] * (p[p > 0] * 10).log()).sum()))
    counts = torch.bincount(modes, minlength=1000)
    return (f"| {name} | {joint['modes']:.0f} | {joint['kl']:.4f} | {', '.join(f'{m:.4f}' for m in marginal)} | "
            f"{joint['kl'] - sum(marginal):.4f} | {counts.min()} / {counts.median()} / {counts.max()} | "
            f"{conf.mean():.3f} | {(conf < 0.5).double().mean():.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--n", type=int, default=STACKED_EVAL_SAMPLES)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = P.saved(json.loads((args.run_dir / "config.json").read_text()))
    found = checkpoint.CheckpointManager(args.run_dir / "checkpoints").load_latest()
    if found is None:
        raise SystemExit(f"no checkpoint in {args.run_dir / 'checkpoints'}")
    gan, _, _ = P.build(cfg)
    ext = metrics.lenet_extractor("digits")
    print("| samples | modes | joint KL | marginal KLs (channels 0, 1, 2) | dependence | mode counts min / median / "
          "max | LeNet confidence | channels with confidence < 0.5 |")
    print("|---|---:|---:|---|---:|---|---:|---:|")
    for s in (0, 1):
        print(row(f"real stacked digits (seed {s})", stacked_digits(args.n, torch.Generator().manual_seed(s)), ext))
    state = found[1]["state"]
    z = gan.draw_latents(torch.Generator().manual_seed(4321), args.n)
    for i, x in enumerate(evaluation.sample_members(gan, state, z, state.step.dim() == 1)):
        print(row(f"member {i}", x, ext))


if __name__ == "__main__":
    main()
