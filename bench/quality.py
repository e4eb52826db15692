"""Issue 6's ring8 quality target, checked as one vmapped run of 16 seeds.

    python bench/quality.py                      # the ring8-hinge preset, 16 seeds, 8000 steps
    python bench/quality.py --loss wasserstein   # WGAN-GP (n_critic 5)
    python bench/quality.py --steps 2000 --members 4   # a quick look

Target: 8/8 modes and at least 90% high-quality samples (within 3 std of a
mode) for at least 14 of 16 seeds. Every seed is one member of a stacked
state trained by ``ganfn.ensemble.make_step``; each member draws its own data
and noise. Figures use 2,500 samples of the EMA generator per member and
``ganfn.metrics.mode_coverage``. Prints one row per seed and the verdict.
"""
from __future__ import annotations

import argparse
import time

import torch

import ganfn
from ganfn import data, ensemble, metrics, presets


def build(loss: str, steps: int, lr: float, hidden: int, latent: int) -> ganfn.GAN:
    """The ``ring8-hinge`` preset (MLP G and D, hinge + R1 0.1, Adam (0.5, 0.9) with
    the learning rate decayed linearly to 0, EMA 0.999); ``loss="wasserstein"``
    swaps in WGAN-GP (0.1, n_critic 5)."""
    over = dict(steps=steps, lr_g=lr, lr_d=lr, hidden=hidden, latent_dim=latent)
    if loss == "wasserstein":
        over.update(loss="wasserstein", penalty="gp", n_critic=5)
    cfg = presets.merge(presets.from_preset("ring8-hinge"), over)
    return presets.build_gan(cfg, (2,))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", choices=["hinge", "wasserstein"], default="hinge")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--latent", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    gan = build(args.loss, args.steps, args.lr, args.hidden, args.latent)
    S, B, nc = args.members, args.batch, gan.n_critic
    seeds = list(range(S))
    state = ensemble.init_many(gan, seeds)
    rngs = ensemble.rngs([1000 + s for s in seeds])
    data_rng = torch.Generator().manual_seed(7)
    step = ensemble.make_step(gan, shared_data=False, compile=args.compile)
    t0 = time.time()
    for i in range(args.steps):
        real = data.ring8(S * nc * B, data_rng).reshape(S, *((nc,) if nc > 1 else ()), B, 2)
        state, m = step(state, real, ensemble.draw_noise_many(gan, rngs, B))
        if (i + 1) % max(1, args.steps // 8) == 0:
            print(f"step {i + 1}/{args.steps}  {time.time() - t0:.0f}s  d_loss {m['d_loss'].mean():.3f}", flush=True)

    z_rng = torch.Generator().manual_seed(5)
    rows = []
    for s, st in zip(seeds, ganfn.unstack(state), strict=True):
        cov = metrics.mode_coverage(gan.sample(st, gan.draw_latents(z_rng, 2500)), metrics.ring8_centers(),
                                    metrics.RING8_STD)
        rows.append((s, int(cov.modes), float(cov.high_quality), float(cov.kl), int(st.diverged_at)))
    print(f"\nring8, {args.loss}, {S} seeds as one vmapped run, {args.steps} steps, batch {B}, "
          f"{time.time() - t0:.0f}s, torch {torch.__version__}")
    print("| seed | modes | high-quality | KL | diverged at |\n|---|---|---|---|---|")
    for s, mo, hq, kl, dv in rows:
        print(f"| {s} | {mo}/8 | {hq:.3f} | {kl:.4f} | {dv if dv >= 0 else '-'} |")
    good = sum(1 for _, mo, hq, _, _ in rows if mo == 8 and hq >= 0.9)
    hqs = torch.tensor([r[2] for r in rows])
    need = -(-14 * S // 16)
    print(f"\nhigh-quality mean {hqs.mean():.3f} ± {hqs.std():.3f}; seeds with 8/8 modes and >= 90% "
          f"high-quality: {good}/{S} (target >= {need}): {'met' if good >= need else 'MISSED'}")
    return 0 if good >= need else 1


if __name__ == "__main__":
    raise SystemExit(main())
