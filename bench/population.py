"""Population-based training vs the plain grid on ring8, at the same total steps.

    python bench/population.py                    # 16 members, 1500 steps, PBT every 250
    python bench/population.py --steps 300 --every 100 --members-per-axis 2   # a quick look

A 4 x 4 grid of (lr_g, lr_d) in {1e-3, 2e-3, 1e-2, 2e-2}: half of each axis is
10x the ring8-hinge preset's good learning rates. Both runs start from the same
16 members (seeds 0..15, same data and noise) and train as one vmapped program
of 32 members; the grid half trains unchanged,
PBT runs ``ganfn.population.exploit_explore`` (ranking by modes, then high-quality
fraction; the worst quarter copies a member of the best quarter and perturbs
lr_g / lr_d x0.8 / x1.2 or redraws them within [1e-3, 2e-2]). Target: PBT's
best final modes and high-quality fraction >= the grid's best, and PBT's median
member strictly better than the grid's median (modes, then high-quality
fraction). Writes ``curves.png`` (PBT members over steps with copy events) and
``heatmap_grid.png`` / ``heatmap_pbt.png`` (final high-quality fraction per
starting grid cell) to ``--out``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ganfn import data, ensemble, figures, metrics, population, presets, sweep
from ganfn.lineage import Lineage


def evaluate(gan, state, z) -> list[dict[str, float]]:
    out = []
    for st in ensemble.unstack(state):
        x = gan.sample(st, z)
        if not torch.isfinite(x).all():
            out.append({"modes": 0.0, "high_quality": float("nan")})
            continue
        cov = metrics.mode_coverage(x.double(), metrics.ring8_centers().double(), metrics.RING8_STD)
        out.append({"modes": float(cov.modes), "high_quality": float(cov.high_quality)})
    return out


def run(gan, members, steps, batch, every, space, fraction):
    """The grid and its PBT copy as ONE vmapped run of 2S members: members
    0..S-1 are the plain grid (``retired`` for exploit_explore, so PBT never
    touches them), S..2S-1 the PBT population; member i and S+i share seed,
    data and noise, so they are identical until the first PBT round.
    Returns (grid final figures, PBT final figures, PBT eval history, lineage)."""
    S = len(members)
    state = ensemble.init_many(gan, list(range(S)) * 2, list(members) * 2)
    rngs, data_rng = ensemble.rngs([1000 + s for s in range(S)] * 2), torch.Generator().manual_seed(7)
    step = ensemble.make_step(gan, shared_data=False)
    z_eval = gan.draw_latents(torch.Generator().manual_seed(4321), 1000)
    pbt_rng, grid_half = torch.Generator().manual_seed(0), list(range(S))
    hp = population.hyperparameters(state)
    lin = Lineage.start(0, {k: hp[k] for k in sorted(space)})
    evals = [{"step": 0, "figures": evaluate(gan, state, z_eval)[S:]}]
    for t in range(1, steps + 1):
        real = data.ring8(S * batch, data_rng).reshape(S, batch, 2).repeat(2, 1, 1)
        state, _ = step(state, real, ensemble.draw_noise_many(gan, rngs, batch))
        if t % every == 0:
            figs = evaluate(gan, state, z_eval)
            evals.append({"step": t, "figures": figs[S:]})
            if t < steps:
                scores, dirs = population.scores_from_figures(figs, ("modes", "high_quality"))
                state, rep = population.exploit_explore(state, scores, pbt_rng, space=space, fraction=fraction,
                                                        higher_is_better=dirs, retired=grid_half)
                lin.record_exploit(t, rep)
    final = evaluate(gan, state, gan.draw_latents(torch.Generator().manual_seed(5), 2500))
    # Shift the lineage to the PBT half's own numbering (member S+i is PBT member i).
    events = [{**e, "member": e["member"] - S, "source": e["source"] - S} for e in lin.events]
    return final[:S], final[S:], evals, Lineage(lin.hparams[S:], events, [])


def key(f):
    hq = f["high_quality"]
    return (f["modes"], hq if hq == hq else -1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=250, help="evaluate (and run PBT) every this many steps")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--members-per-axis", type=int, default=4, choices=[2, 4])
    ap.add_argument("--ema-decay", type=float, default=0.99,
                    help="EMA of G (the preset's 0.999 averages over ~1000 steps, longer than a PBT interval)")
    ap.add_argument("--out", default="runs/bench-population")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lrs = [1e-3, 2e-3, 1e-2, 2e-2] if args.members_per_axis == 4 else [2e-3, 2e-2]
    members = sweep.grid({"lr_g": lrs, "lr_d": lrs})
    cfg = presets.merge(presets.from_preset("ring8-hinge"),
                        dict(steps=args.steps, batch_size=args.batch, ema_decay=args.ema_decay))
    gan = presets.build_gan(cfg, (2,))
    t0 = time.time()
    lo, hi = min(lrs), max(lrs)
    grid_final, pbt_final, evals, lineage = run(gan, members, args.steps, args.batch, args.every,
                                                {"lr_g": (lo, hi), "lr_d": (lo, hi)}, args.fraction)
    wall = time.time() - t0

    print(f"ring8-hinge, {len(members)} members (lr_g x lr_d in {lrs}), {args.steps} steps, batch {args.batch}, "
          f"EMA {args.ema_decay}, PBT every {args.every} steps, fraction {args.fraction}; both as one vmapped run "
          f"of {2 * len(members)} members, {wall:.0f}s, torch {torch.__version__}")
    print("\n| member | start lr_g | start lr_d | grid modes | grid high-q | PBT modes | PBT high-q | PBT schedule "
          "| PBT lineage |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, m in enumerate(members):
        g, p = grid_final[i], pbt_final[i]
        print(f"| {i} | {m['lr_g']:g} | {m['lr_d']:g} | {g['modes']:.0f}/8 | {g['high_quality']:.3f} | "
              f"{p['modes']:.0f}/8 | "
              f"{p['high_quality']:.3f} | {lineage.schedule_text(i)} | {lineage.lineage_text(i)} |")
    rows = []
    verdict = True
    for name, fin in (("grid", grid_final), ("PBT", pbt_final)):
        ks = sorted((key(f) for f in fin), reverse=True)
        best_modes, best_hq = max(f["modes"] for f in fin), max(key(f)[1] for f in fin)
        med_modes = statistics.median(f["modes"] for f in fin)
        med_hq = statistics.median(key(f)[1] for f in fin)
        rows.append((name, best_modes, best_hq, med_modes, med_hq, ks[len(ks) // 2]))
    print("\n| run | best modes | best high-q | median modes | median high-q |\n|---|---|---|---|---|")
    for name, bm, bh, mm, mh, _ in rows:
        print(f"| {name} | {bm:.0f}/8 | {bh:.3f} | {mm:.1f}/8 | {mh:.3f} |")
    (_, gbm, gbh, gmm, gmh, _), (_, pbm, pbh, pmm, pmh, _) = rows
    best_ok = pbm >= gbm and pbh >= gbh
    median_ok = (pmm, pmh) > (gmm, gmh)
    verdict = best_ok and median_ok
    print(f"\nbest: PBT >= grid on modes and high-quality: {'met' if best_ok else 'MISSED'}; "
          f"median: PBT strictly better (modes, then high-quality): {'met' if median_ok else 'MISSED'}")

    out = Path(args.out)
    figures.population_curves(evals, "high_quality", out / "curves.png", events=lineage.events,
                              title="PBT on ring8: high-quality fraction per member (o- -: copy; x: halved)")
    for name, fin in (("grid", grid_final), ("pbt", pbt_final)):
        figures.sweep_heatmap(members, [f["high_quality"] for f in fin], out / f"heatmap_{name}.png",
                              keys=("lr_g", "lr_d"),
                              value_name=f"final high-quality fraction ({name}, by starting cell)",
                              higher_is_better=True)
    print(f"wrote {out}/curves.png, heatmap_grid.png, heatmap_pbt.png")
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
