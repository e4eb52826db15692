"""Data-efficient GAN training on 300 digits: no augmentation vs DiffAugment vs ADA.

Each arm is ONE vmapped run of S seeds (``ganfn.ensemble.make_step`` over a
stacked state) of the same DCGAN; the arms differ only in their parts:
``parts.diffaugment(policy)`` (p = 1) or ``parts.ada(policy, target=0.6)``. D
sees augmented real and fake images, G is trained through the augmentation of
its fakes, and samples come from ``gan.sample`` (never augmented). All arms
advance in lockstep and are scored by FD-LeNet(digits) against the 397
held-out digits every ``--eval-every`` steps, with D's overfitting gap: its
mean logit on the training subset minus on the held-out digits (Karras et al.
2020, fig. 1: the gap grows as D memorises the training set).

    python bench/augment_quality.py                          # the table in bench/README_quality.md
    python bench/augment_quality.py --steps 200 --seeds 2     # a smoke run

Single-threaded (``torch.set_num_threads(1)``): the machine is shared.
"""
from __future__ import annotations

import argparse
import time

import torch

import ganfn
from ganfn import data, ensemble, metrics, models, optim, parts


def build(arm: str, args) -> ganfn.GAN:
    G = models.DCGANGenerator(args.latent, size=8, channels=1, width=args.width, norm="batch")
    D = models.DCGANDiscriminator(size=8, channels=1, width=args.d_width or args.width, norm="none")
    extra = {"none": [], "diffaugment": [parts.diffaugment(args.policy)],
             "ada": [parts.ada(args.policy, target=args.ada_target, speed_images=args.ada_speed)]}[arm]
    return ganfn.GAN(G, D, latent_dim=args.latent, loss="non_saturating", g_optimizer=optim.adam(args.lr, (0.5, 0.999)),
                     d_optimizer=optim.adam(args.lr_d or args.lr, (0.5, 0.999)), parts=extra)


class Arm:
    """One arm: a GAN, the stacked state of its S seeds and its vmapped step."""

    def __init__(self, name: str, args) -> None:
        self.name, self.gan = name, build(name, args)
        seeds = list(range(args.seeds))
        self.state = ensemble.init_many(self.gan, seeds)
        self.step = ensemble.make_step(self.gan, shared_data=False)
        self.noise_rngs = ensemble.rngs(seeds)
        self.data_rngs = ensemble.rngs([1000 + s for s in seeds])  # every arm draws the same batches
        self.secs = 0.0

    def advance(self, train: torch.Tensor, B: int) -> None:
        t0 = time.time()
        idx = torch.stack([torch.randint(0, train.shape[0], (B,), generator=g) for g in self.data_rngs])
        self.state, _ = self.step(self.state, train[idx], ensemble.draw_noise_many(self.gan, self.noise_rngs, B))
        self.secs += time.time() - t0

    def p(self) -> str:
        if self.name == "ada":
            return f"{float(self.state.parts['ada']['p'].mean()):.2f}"
        return "1" if self.name == "diffaugment" else "-"

    def overfit(self, train: torch.Tensor, test: torch.Tensor) -> str:
        """D's mean logit on the training subset minus on held-out digits (mean over
        members): ADA's sign of D overfitting, 0 when D generalises."""
        gaps = []
        with torch.no_grad():
            for s in ganfn.unstack(self.state):
                d = lambda x, s=s: self.gan.d_apply(s.d.params, s.d.buffers, x, train=False)[0].mean()
                gaps.append(float(d(train) - d(test)))
        return f"{sum(gaps) / len(gaps):.2f}"

    def fd(self, ext, real_test, n: int) -> torch.Tensor:
        z = self.gan.draw_latents(torch.Generator().manual_seed(7), n)
        fake = torch.stack([self.gan.sample(s, z) for s in ganfn.unstack(self.state)])  # never augmented
        return metrics.evaluate_stacked_images(fake, real_test, ext, kid_subsets=10,
                                               kid_subset_size=min(300, n))["FD-LeNet(digits)"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--d-width", type=int, default=128,
                    help="D's width (0: --width); a wider D overfits the subset sooner")
    ap.add_argument("--lr-d", type=float, default=2e-3, help="D's learning rate (0: --lr)")
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--subset", type=int, default=300)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--policy", default="translation,cutout")
    ap.add_argument("--ada-target", type=float, default=0.6)
    ap.add_argument("--ada-speed", type=float, default=20_000.0,
                    help="real images for p to move by 1 (ADA: 500k on long runs)")
    ap.add_argument("--arms", default="none,diffaugment,ada")
    ap.add_argument("--eval-every", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    full = data.digits("train", 8)
    train = full[torch.randperm(full.shape[0], generator=torch.Generator().manual_seed(0))[: args.subset]]
    ext = metrics.lenet_extractor("digits")
    test_images = data.digits("test", 8)
    real_test = ext(test_images)
    print(f"digits subset {args.subset}, DCGAN width G {args.width} D {args.d_width or args.width}, "
          f"Adam G {args.lr:g} D {args.lr_d or args.lr:g} (0.5, 0.999), {args.steps} steps, "
          f"batch {args.batch}, policy {args.policy}, {args.seeds} seeds per arm (one vmapped run each), "
          f"torch {torch.__version__}, 1 thread")
    arms = [Arm(a, args) for a in args.arms.split(",")]
    print("| step | arm | FD-LeNet(digits) mean ± std | per seed | mean p | D overfit gap | time |")
    print("|---|---|---|---|---|---|---|")
    for t in range(1, args.steps + 1):
        for arm in arms:
            arm.advance(train, args.batch)
        if t % args.eval_every == 0 or t == args.steps:
            for arm in arms:
                fd = arm.fd(ext, real_test, args.n_eval)
                per = " ".join(f"{v:.2f}" for v in fd.tolist())
                print(f"| {t} | {arm.name} | {float(fd.mean()):.3f} ± {float(fd.std()):.3f} | {per} | {arm.p()} | "
                      f"{arm.overfit(train, test_images)} | {arm.secs:.0f}s |", flush=True)


if __name__ == "__main__":
    main()
