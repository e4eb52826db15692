"""Data-efficient GAN training on 300 digits: no augmentation vs DiffAugment vs ADA.

Each arm is ONE vmapped run of S seeds (a stacked state). The step is written
from ganfn's public pieces (``GAN.init`` for the per-seed initial state, pure
apply functions, ``ganfn.optim``, ``ganfn.losses``, ``ganfn.augment``): D sees
augmented real and fake images, G is trained through the augmentation of its
fakes, and samples are made WITHOUT augmentation (``gan.sample``).

    python bench/augment_quality.py                  # the table in bench/README_quality.md
    python bench/augment_quality.py --steps 200 --seeds 2   # a smoke run

Single-threaded (``torch.set_num_threads(1)``): the machine is shared.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.func import grad_and_value, vmap

import ganfn
from ganfn import augment, data, ensemble, losses, metrics, models, optim
from ganfn.functional import make_apply
from ganfn.tree import replace, tree_map

POLICY = "color,translation,cutout"


def build(width: int, latent: int, lr: float):
    G = models.DCGANGenerator(latent, size=8, channels=1, width=width, norm="batch")
    D = models.DCGANDiscriminator(size=8, channels=1, width=width, norm="none")
    adam = optim.adam(lr, (0.5, 0.999))
    return ganfn.GAN(G, D, latent_dim=latent, loss="non_saturating", g_optimizer=adam, d_optimizer=adam)


def make_step(gan: ganfn.GAN, arm: str, *, ada_target: float, ada_interval: int, ada_speed: float):
    g_apply, d_apply = make_apply(gan.generator), make_apply(gan.discriminator)
    loss = losses.non_saturating

    def aug(x, n, p):
        return x if arm == "none" else augment.apply(x, n, POLICY, p)

    def step(state, ada, real, nz):
        p = ada.p
        B = real.shape[0]
        with torch.no_grad():
            fake, g_buf = g_apply(state.g_params, state.g_buffers, nz["z_d"])

        def d_loss(dp):
            out, _ = d_apply(dp, state.d_buffers, torch.cat([aug(real, nz["a_real"], p), aug(fake, nz["a_fake"], p)]))
            return loss.d(out[:B], out[B:]), out[:B].detach()

        gd, (ld, real_out) = grad_and_value(d_loss, has_aux=True)(state.d_params)
        d_params, d_opt = gan.d_optimizer.update(gd, state.d_opt, state.d_params)
        if arm == "ada":
            ada = augment.ada_update(ada, real_out, target=ada_target, interval=ada_interval, speed_images=ada_speed)

        def g_loss(gp):
            f, gb = g_apply(gp, g_buf, nz["z_g"])
            out, _ = d_apply(d_params, state.d_buffers, aug(f, nz["a_gen"], p))
            return loss.g(out), gb

        gg, (lg, g_buf2) = grad_and_value(g_loss, has_aux=True)(state.g_params)
        g_params, g_opt = gan.g_optimizer.update(gg, state.g_opt, state.g_params)
        new = replace(state, d_params=d_params, d_opt=d_opt, g_params=g_params, g_opt=g_opt, g_buffers=g_buf2, step=state.step + 1)
        return new, ada, {"d_loss": ld, "g_loss": lg, "p": ada.p, "rt": ada.rt}

    return vmap(step)


def noise(gen: torch.Generator, B: int, latent: int) -> dict:
    return {"z_d": torch.randn(B, latent, generator=gen), "z_g": torch.randn(B, latent, generator=gen),
            "a_real": augment.draw(gen, B, POLICY), "a_fake": augment.draw(gen, B, POLICY), "a_gen": augment.draw(gen, B, POLICY)}


class Arm:
    """One arm: a stacked state of S seeds, its ADA state and its vmapped step."""

    def __init__(self, name: str, args) -> None:
        self.name, self.gan = name, build(args.width, args.latent, args.lr)
        seeds = list(range(args.seeds))
        self.state = ensemble.init_many(self.gan, seeds)
        p0 = {"none": 0.0, "diffaugment": 1.0, "ada": 0.0}[name]
        self.ada = augment.AdaState(*[torch.stack([t] * len(seeds)) for t in augment.ada_init(p0)])
        self.step = make_step(self.gan, name, ada_target=args.ada_target, ada_interval=4, ada_speed=args.ada_speed)
        # Every arm sees the same batches and latents: seed s's generator.
        self.gens = ensemble.rngs([1000 + s for s in seeds])
        self.secs = 0.0

    def advance(self, train: torch.Tensor, B: int, latent: int) -> None:
        t0 = time.time()
        idx = torch.stack([torch.randint(0, train.shape[0], (B,), generator=g) for g in self.gens])
        nz = ensemble.stack([noise(g, B, latent) for g in self.gens])
        self.state, self.ada, _ = self.step(self.state, self.ada, train[idx], nz)
        self.secs += time.time() - t0

    def fd(self, ext, real_test, n: int, latent: int) -> torch.Tensor:
        z = torch.randn(n, latent, generator=torch.Generator().manual_seed(7))
        fake = torch.stack([self.gan.sample(s, z) for s in ensemble.unstack(self.state)])  # never augmented
        return metrics.evaluate_stacked_images(fake, real_test, ext, kid_subsets=10, kid_subset_size=min(300, n))["FD-LeNet(digits)"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--subset", type=int, default=300)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--ada-target", type=float, default=0.6)
    ap.add_argument("--ada-speed", type=float, default=20_000.0, help="real images for p to move by 1 (ADA: 500k on long runs)")
    ap.add_argument("--arms", default="none,diffaugment,ada")
    ap.add_argument("--eval-every", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    full = data.digits("train", 8)
    train = full[torch.randperm(full.shape[0], generator=torch.Generator().manual_seed(0))[: args.subset]]
    ext = metrics.lenet_extractor("digits")
    real_test = ext(data.digits("test", 8))
    print(f"digits subset {args.subset}, DCGAN width {args.width}, Adam {args.lr:g} (0.5, 0.999), {args.steps} steps, batch {args.batch}, "
          f"{args.seeds} seeds per arm (one vmapped run each), torch {torch.__version__}, 1 thread")
    arms = [Arm(a, args) for a in args.arms.split(",")]
    print("| step | arm | FD-LeNet(digits) mean ± std | per seed | mean p | time |")
    print("|---|---|---|---|---|---|")
    for t in range(1, args.steps + 1):
        for arm in arms:
            arm.advance(train, args.batch, args.latent)
        if t % args.eval_every == 0 or t == args.steps:
            for arm in arms:
                fd = arm.fd(ext, real_test, args.n_eval, args.latent)
                per = " ".join(f"{v:.2f}" for v in fd.tolist())
                ps = f"{float(arm.ada.p.mean()):.2f}" if arm.name != "none" else "-"
                print(f"| {t} | {arm.name} | {float(fd.mean()):.3f} ± {float(fd.std()):.3f} | {per} | {ps} | {arm.secs:.0f}s |", flush=True)


if __name__ == "__main__":
    main()
