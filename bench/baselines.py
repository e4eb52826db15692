"""Baseline figures for ganfn.metrics, so a run's numbers can be placed between
"as good as real data" and "untrained".

    python bench/baselines.py

Everything is seeded; the LeNet is trained once (seconds) into a temporary
cache dir unless GANFN_CACHE is set. Prints a markdown table.

Definitions:
- real-vs-real: the 397 held-out digits (``data.digits_split("test")``) against the
  1,400 training digits the reference features come from.
- untrained generator: uniform noise images in [-1, 1], [397, 1, 8, 8] (the
  fixed baseline the quality target refers to); if ``ganfn.models`` is
  importable, randomly initialised DCGAN (size 8) and MLP generators too.
- ring8 / grid25: 2,500 samples from the mixture itself, and a collapsed
  generator: all 2,500 at mode 0 with the mixture's std noise.
"""

from __future__ import annotations

import os
import tempfile

import torch

torch.set_num_threads(1)

import ganfn.metrics as M  # noqa: E402
from ganfn.metrics.modes import sample_mixture  # noqa: E402

N_FAKE = 397  # = held-out count, so all digit rows are at the same n (FD is biased at small n)


def digit_rows(ext) -> list[tuple[str, dict]]:
    xtr, _ = M.digits_labelled("train")
    xte, _ = M.digits_labelled("test")
    real = ext(xtr)
    g = torch.Generator().manual_seed(0)
    rows = [("real held-out digits (test split)", xte)]
    rows.append(("untrained: uniform noise in [-1, 1]", torch.rand(N_FAKE, 1, 8, 8, generator=g) * 2 - 1))
    try:
        from ganfn.models import DCGANGenerator, MLPGenerator

        with torch.no_grad():
            dc = DCGANGenerator(latent_dim=64, size=8, channels=1, width=32,
                                generator=torch.Generator().manual_seed(0)).eval()
            rows.append(("untrained: random-init DCGANGenerator(size=8)", dc(torch.randn(N_FAKE, 64, generator=g))))
            mlp = MLPGenerator(64, (1, 8, 8), hidden=128, generator=torch.Generator().manual_seed(0))
            rows.append(("untrained: random-init MLPGenerator", mlp(torch.randn(N_FAKE, 64, generator=g))))
    except ImportError:
        pass
    kid_kw = dict(kid_subsets=100, kid_subset_size=N_FAKE, generator=torch.Generator().manual_seed(0))
    return [(name, M.evaluate_images(x, real, ext, **kid_kw)) for name, x in rows]


def mixture_rows() -> list[tuple[str, M.ModeCoverage, int]]:
    out = []
    for label, centers, std in (("ring8", M.ring8_centers(), M.RING8_STD),
                                ("grid25", M.grid25_centers(), M.GRID25_STD)):
        g = torch.Generator().manual_seed(0)
        data = sample_mixture(centers, std, 2500, g)
        collapsed = sample_mixture(centers, std, 2500, g, modes=torch.zeros(2500, dtype=torch.long))
        res = M.stacked_mode_coverage(torch.stack([data, collapsed]), centers, std)  # both in one vmapped call
        for i, name in enumerate(("data itself", "collapsed (one mode)")):
            out.append((f"{label}: {name}", M.ModeCoverage(*(t[i] for t in res)), centers.shape[0]))
    return out


def main() -> None:
    cache = os.environ.get("GANFN_CACHE") or tempfile.mkdtemp(prefix="ganfn-bench-")
    ext = M.lenet_extractor("digits", cache_dir=cache)
    xte, yte = M.digits_labelled("test")
    acc = float((ext(xte).probs.argmax(1) == yte).float().mean())
    print(f"LeNet(digits) held-out accuracy: {acc:.4f} (397 images); feature dim {ext(xte[:1]).features.shape[1]}\n")
    print("| samples | n | FD-LeNet(digits) | KID-LeNet(digits) (± std) | CS-LeNet(digits) |")
    print("|---|---|---|---|---|")
    for name, r in digit_rows(ext):
        print(
            f"| {name} | {r['n']} | {r['FD-LeNet(digits)']:.2f} | "
            f"{r['KID-LeNet(digits)']:.4f} ± {r['KID-LeNet(digits)-std']:.4f} | {r['CS-LeNet(digits)']:.2f} |"
        )
    print("\n| mixture samples (n = 2500) | modes covered | high-quality fraction | KL(modes ‖ uniform) |")
    print("|---|---|---|---|")
    for name, r, m in mixture_rows():
        print(f"| {name} | {int(r.modes)}/{m} | {float(r.high_quality):.4f} | {float(r.kl):.4f} |")


if __name__ == "__main__":
    main()
