"""Overhead of ganfn's functional ``train_step`` against the hand-written loop.

    python bench/overhead.py            # MLP GAN of reference 003, batch 64, CPU, 1 thread
    python bench/overhead.py --batch 256 --rounds 30

Both run the same update (same models, initial parameters, batch, noise, Adam
2e-4 betas (0.5, 0.999), BCE) side by side in one process, interleaved in
rounds; the figure is the median over rounds of each round's median step time.
Prints ``ratio = ganfn / imperative`` (target <= 1.05). The full comparison
(Lightning, compiled, JAX, more workloads, memory) is ``bench/harness.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--diagnostics-cost", action="store_true",
                    help="also time the step with its two diagnostics (D's accuracy, the gradient norms) replaced by "
                         "constants: a measurement of what they cost, not a mode ganfn offers")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from bench.workloads import WORKLOADS, GanfnEager, Imperative, make_pool

    dev = torch.device(args.device)
    wl = dataclasses.replace(WORKLOADS["mlp_b64"], batch=args.batch)
    G, D = wl.models()
    pool = make_pool(wl, wl.gan(G, D), 4, dev, torch.float32)
    imp = Imperative(wl, pool, dev, torch.float32).setup()
    fn = GanfnEager(wl, pool, dev, torch.float32).setup()
    # the step without both diagnostics, without the gradient norms, without D's accuracy
    leans = {k: GanfnEager(wl, pool, dev, torch.float32).setup()
             for k in (("norm", "accuracy"), ("norm",), ("accuracy",))} if args.diagnostics_cost else {}
    for v in (imp, fn, *leans.values()):
        v.run(list(range(5)))
    t_imp, t_fn, t_leans = [], [], {k: [] for k in leans}
    for r in range(args.rounds):
        idx = [r * args.steps + j for j in range(args.steps)]
        t_imp.append(statistics.median(imp.run(idx)))
        t_fn.append(statistics.median(fn.run(idx)))
        for k, lean in leans.items():
            with _without_diagnostics(k):
                t_leans[k].append(statistics.median(lean.run(idx)))
    a, b = statistics.median(t_imp), statistics.median(t_fn)
    ratio = b / a
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"MLP GAN (ref 003) batch {args.batch}, {args.rounds} rounds x {args.steps} steps")
    print(f"imperative loop : {a * 1e3:.3f} ms/step")
    print(f"ganfn train_step: {b * 1e3:.3f} ms/step")
    # Per-round ratios show how much of the spread is machine noise.
    per_round = sorted(f / i for f, i in zip(t_fn, t_imp, strict=True))
    print(f"ratio ganfn/imperative = {ratio:.3f} (per-round ratios: min {per_round[0]:.3f}, "
          f"median {statistics.median(per_round):.3f}, max {per_round[-1]:.3f}); target <= 1.05: "
          f"{'met' if ratio <= 1.05 else 'MISSED'}")
    if t_leans:
        c = statistics.median(t_leans[("norm", "accuracy")])
        print(f"ganfn without its diagnostics: {c * 1e3:.3f} ms/step, ratio to imperative {c / a:.3f}: "
              f"D's accuracy and the gradient norms cost {100 * (b - c) / b:.1f}% of the step")
        for k, name in ((("norm",), "the gradient norms"), (("accuracy",), "D's accuracy")):
            c = statistics.median(t_leans[k])
            print(f"  {name} alone: {(b - c) * 1e3:.3f} ms/step ({100 * (b - c) / b:.1f}%)")
    return ratio


class _without_diagnostics:
    """The named diagnostics ("norm": the gradient-norm metric, "accuracy": D's
    accuracy) replaced by constants, for timing only."""

    def __init__(self, which: tuple[str, ...]):
        self.which = which

    def __enter__(self):
        import torch

        from ganfn import diagnose, step

        self.saved = (step.global_norm, diagnose.d_accuracy)
        if "norm" in self.which:
            step.global_norm = lambda tree: torch.zeros(())
        if "accuracy" in self.which:
            diagnose.d_accuracy = lambda *a: (torch.zeros(()), torch.zeros(()))

    def __exit__(self, *exc):
        from ganfn import diagnose, step

        step.global_norm, diagnose.d_accuracy = self.saved


if __name__ == "__main__":
    main()
