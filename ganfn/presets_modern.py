"""The modern presets' GANs, built from their recipes (:mod:`ganfn.recipes_modern`).

``r3gan-cifar10`` and ``stylegan2-ada-cifar10`` keep their settings in
:data:`ganfn.presets.PRESETS` like every preset (the options a user may
override), but their GAN comes from :func:`ganfn.recipes.r3gan` and
:func:`ganfn.recipes.stylegan2_ada`, whose schedules a flat option cannot
express. How each option maps onto the recipe is in :func:`recipe_gan`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from . import optim, recipes
from .gan import GAN
from .parts.base import Part

__all__ = ["MODERN_PRESETS", "RECIPE_PRESETS", "recipe_gan"]

# Options that build tricks the recipes do not have: with a recipe preset they must keep the preset's value.
_NOT_READ = ("optimizer", "weight_decay", "lr_decay", "lr_decay_every", "lr_linear_decay", "grad_clip", "replay_size",
             "replay_fraction", "instance_noise", "instance_noise_anneal", "d_skip_accuracy", "g_skip_accuracy",
             "spectral_norm", "lecam", "real_label", "fake_label", "penalty")
_ALSO_NOT_READ = {"r3gan-cifar10": ("r1_every", "ema_rampup", "ada_target")}  # R3GAN: no lazy R1, ramp or ADA


def _r3gan(cfg: Any) -> tuple[list[Part], optim.Optimizer, optim.Optimizer]:
    """R3GAN: the schedules span the whole run, ``steps * batch_size`` images (the
    preset's defaults: the paper's 20 Mimg), the EMA half-life growing to a quarter of
    it (5 of 20 Mimg). ``--penalty-weight``, ``--lr-g``/``--lr-d`` and ``--beta2`` set the
    schedules' starts, their ends keep the paper's ratios (gamma / 10, lr / 4, beta2 to
    0.99). ``--augment`` names the operations (``none``: no augmentation);
    ``--ema-decay 0``: no EMA. A resumed run keeps the schedules it started with
    (they are in its checkpointed hyperparameters), whatever ``--steps`` it resumes to."""
    images = float(cfg.steps * cfg.batch_size)
    gamma = cfg.penalty_weight
    parts = recipes.r3gan(batch_size=cfg.batch_size, schedule_images=images, gamma=(gamma, gamma / 10),
                          ema_half_life_images=images / 4,
                          augment_p=None if cfg.augment in ("none", "") else (0.0, 0.55),
                          augment=cfg.augment or "color,translation,cutout")
    parts = [p for p in parts if p.name != "ema" or cfg.ema_decay]

    def opt(lr: float) -> optim.Optimizer:
        return recipes.r3gan_optimizers(batch_size=cfg.batch_size, schedule_images=images, lr=(lr, lr / 4),
                                        beta2=(cfg.beta2, 0.99), beta1=cfg.beta1)["g_optimizer"]

    return parts, opt(cfg.lr_g), opt(cfg.lr_d)


def _stylegan2_ada(cfg: Any) -> tuple[list[Part], optim.Optimizer, optim.Optimizer]:
    """StyleGAN2-ADA: ``--penalty-weight`` is R1's gamma, ``--r1-every`` its interval,
    ``--ada-target`` and ``--augment`` ADA's, ``--ema-rampup`` the ramp; ``--ema-decay``
    is the decay per update at the preset's batch size, so its half-life in images
    (500 kimg) is kept at another ``--batch-size`` (0: no EMA)."""
    if cfg.ada_target is None:
        raise ValueError("preset stylegan2-ada-cifar10 is built around ADA: keep --ada-target (the paper's 0.6)")
    kimg = 64 * math.log(0.5) / math.log(cfg.ema_decay) / 1000 if cfg.ema_decay else 1.0
    parts = recipes.stylegan2_ada(batch_size=cfg.batch_size, gamma=cfg.penalty_weight, r1_every=cfg.r1_every or 1,
                                  ema_kimg=kimg, ema_rampup=cfg.ema_rampup or 0.0, ada_target=cfg.ada_target,
                                  augment=cfg.augment or "color,translation,cutout")
    parts = [p for p in parts if p.name != "ema" or cfg.ema_decay]

    def opt(lr: float) -> optim.Optimizer:
        return recipes.stylegan2_ada_optimizers(lr=lr, betas=(cfg.beta1, cfg.beta2))["g_optimizer"]

    return parts, opt(cfg.lr_g), opt(cfg.lr_d)


MODERN_PRESETS: dict[str, dict[str, Any]] = {
    "r3gan-cifar10": dict(
        # Huang et al. (2024), official train.py preset CIFAR10: width 768 per stage (3 * 1024 / 4),
        # 2 blocks per stage, 96 groups in the 1536-channel bottleneck (ganfn: groups of 16), latent 64,
        # RpGAN with R1 and R2, Adam betas (0, beta2), batch 512, 20 Mimg. The GAN comes from
        # ganfn.recipes.r3gan: gamma 0.05 -> 0.005, lr 2e-4 -> 5e-5, beta2 0.9 -> 0.99 (cosines), EMA
        # half-life 0 -> 5 Mimg and augmentation p 0 -> 0.55 over the run; the values below are the
        # schedules' starts (see _r3gan). On a CPU pass --width 32 --batch-size 64 (the paper's size
        # needs a GPU) and fewer --steps: the schedules then span the shorter run.
        data="cifar10", model="r3gan", width=768, latent_dim=64, loss="rpgan", penalty="r1+r2", penalty_weight=0.05,
        optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9, ema_decay=0.999, batch_size=512, steps=39063,
    ),
    "stylegan2-ada-cifar10": dict(
        # Karras et al. (2020b), train.py config "cifar": 512 channels at every resolution
        # (fmaps 1), 2 mapping layers, the plain ("orig") D with minibatch-std groups of 32,
        # no style mixing and no path-length regularisation; lr 0.0025, Adam betas (0, 0.99),
        # batch 64, R1 gamma 0.01 every 16 D steps, EMA half-life 500 kimg (decay
        # 0.5 ** (64 / 500000)) ramped up over 5% of training, ADA target 0.6, 100,000 kimg.
        # The GAN comes from ganfn.recipes.stylegan2_ada (see _stylegan2_ada). ganfn's ADA
        # augments with its own differentiable ops (color, translation, cutout), not the
        # paper's 18-op pipeline. On a CPU pass --width 32 --latent-dim 64.
        data="cifar10", model="stylegan2", width=512, latent_dim=512, loss="non_saturating", penalty="r1",
        penalty_weight=0.01, r1_every=16, optimizer="adam", lr_g=0.0025, lr_d=0.0025, beta1=0.0, beta2=0.99,
        ema_decay=0.5 ** (64 / 500_000), ema_rampup=0.05, augment="color,translation,cutout", ada_target=0.6,
        batch_size=64, steps=1_562_500,
    ),
}
"""The modern presets' settings (joined into :data:`ganfn.presets.PRESETS`)."""

RECIPE_PRESETS: dict[str, Callable[[Any], tuple[list[Part], optim.Optimizer, optim.Optimizer]]] = {
    "r3gan-cifar10": _r3gan, "stylegan2-ada-cifar10": _stylegan2_ada}
"""The presets whose GAN a recipe builds: name -> ``cfg -> (parts, g_optimizer, d_optimizer)``."""


def recipe_gan(cfg: Any, baseline: Any, G: Any, D: Any, latent: Any, classes: int | None, weight_init: Any) -> GAN:
    """The GAN of recipe preset ``cfg.preset``: its recipe's parts and optimizers
    for config ``cfg``, whose trick options must equal ``baseline``'s (the preset's
    own :class:`~ganfn.presets.Config`): the recipe has no place for them."""
    changed = [k for k in (*_NOT_READ, *_ALSO_NOT_READ.get(cfg.preset, ())) if getattr(cfg, k) != getattr(baseline, k)]
    if changed:
        opts = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise ValueError(f"preset {cfg.preset} builds its GAN from ganfn.recipes; {opts} "
                         f"{'is' if len(changed) == 1 else 'are'} not part of it: drop {opts}, or start from "
                         "another preset (or none) to combine these options")
    parts, g_opt, d_opt = RECIPE_PRESETS[cfg.preset](cfg)
    if cfg.precision == "fp16":  # fp16 autocast needs loss scaling, which lives in the (pure) optimizer state
        g_opt, d_opt = optim.loss_scaled(g_opt), optim.loss_scaled(d_opt)
    return GAN(G, D, latent_dim=latent, loss=cfg.loss, g_optimizer=g_opt, d_optimizer=d_opt, parts=parts,
               n_critic=cfg.n_critic, n_gen=cfg.n_gen, num_classes=classes if cfg.conditional else None,
               weight_init=weight_init)
