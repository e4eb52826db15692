"""The modern baselines' recipes: R3GAN (Huang et al., NeurIPS 2024) and StyleGAN2-ADA (Karras et al., NeurIPS 2020).

Each recipe returns the part list of the paper's setup; its ``*_optimizers``
helper returns ``{"g_optimizer", "d_optimizer"}`` for ``GAN(**...)``, because a
recipe's optimizer settings (R3GAN's scheduled lr and Adam beta2) are
``GAN``'s arguments, not parts::

    G, D = ganfn.models.r3gan(32, 3, latent_dim=64)
    gan = ganfn.GAN(G, D, latent_dim=64, loss="rpgan", parts=ganfn.recipes.r3gan(),
                    **ganfn.recipes.r3gan_optimizers())

Schedules run in train steps (G and D updates: ``n_critic = n_gen = 1`` in
both papers), converted from the papers' image counts with ``batch_size``.
"""
from __future__ import annotations

from typing import Any, Sequence

from . import optim as _optim
from . import parts as _parts
from . import penalties as _penalties
from . import schedules as _sched
from .parts.base import Part, check_part

__all__ = ["r3gan", "r3gan_optimizers", "stylegan2_ada", "stylegan2_ada_optimizers", "steps_of"]

Pair = Sequence[float]


def steps_of(images: float, batch_size: int) -> int:
    """Train steps that show ``images`` images at ``batch_size`` per step (at least 1)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not images > 0:
        raise ValueError(f"an image count must be > 0, got {images!r}")
    return max(1, round(images / batch_size))


def _pair(name: str, v: Pair) -> tuple[float, float]:
    if isinstance(v, (str, bytes)) or len(v) != 2:
        raise ValueError(f"{name} must be a (start, end) pair, got {v!r}")
    return float(v[0]), float(v[1])


def r3gan(*, batch_size: int = 512, schedule_images: float = 20e6, gamma: Pair = (0.05, 0.005),
          ema_half_life_images: float = 5e6, augment_p: Pair | None = (0.0, 0.55),
          augment: str = "color,translation,cutout") -> list[Part]:
    """R3GAN's parts (Huang et al., 2024, "The GAN is dead; long live the GAN!";
    official ``train.py`` preset ``CIFAR10``). Use with ``loss="rpgan"`` (the
    relativistic pairing loss) and :func:`r3gan_optimizers`.

    - R1 and R2 with one gamma, ``gamma / 2 * E||grad D||^2`` each, cosine from
      0.05 to 0.005 over ``schedule_images`` (20 Mimg) images
      (``gamma_scheduler``); hyperparameters ``r1_weight.*`` and ``r2_weight.*``.
    - Augmentation with probability cosine from 0 to 0.55 over the same span
      (``aug_scheduler``); ganfn's differentiable DiffAugment operations
      (``augment``) stand in for the ADA pipeline the official code uses.
      ``augment_p=None``: none.
    - G's EMA with a half-life in images cosine from 0 to ``ema_half_life_images``
      (5 Mimg) over the schedule (``ema_scheduler``), decay per update
      ``0.5 ** (batch_size / half-life)`` (:func:`ganfn.parts.ema_half_life`;
      hyperparameter ``ema_half_life.*``).

    ``batch_size`` (512 in the paper) converts image counts to steps: pass the
    run's. A CPU run that cannot show 20 Mimg should shrink ``schedule_images``
    (and ``ema_half_life_images`` with it), else it stays at the schedules' start.
    """
    steps = steps_of(schedule_images, batch_size)
    g0, g1 = _pair("gamma", gamma)
    # Any: these hyperparameters take schedules, which their annotations do not list yet.
    gamma_s: Any = _sched.cosine(g0, g1, steps)
    out = [_penalties.as_part(_penalties.r1(gamma_s)), _penalties.as_part(_penalties.r2(gamma_s))]
    if augment_p is not None:
        p0, p1 = _pair("augment_p", augment_p)
        p_s: Any = _sched.cosine(p0, p1, steps)
        out.insert(0, _parts.diffaugment(augment, p=p_s))
    if not ema_half_life_images > 0:
        raise ValueError(f"ema_half_life_images must be > 0, got {ema_half_life_images!r}")
    half_s: Any = _sched.cosine(0.0, float(ema_half_life_images), steps)
    out.append(_parts.ema_half_life(half_s, batch_size))
    return [check_part(p) for p in out]  # out-of-range values named now, not first at GAN(...)


def r3gan_optimizers(*, batch_size: int = 512, schedule_images: float = 20e6, lr: Pair = (2e-4, 5e-5),
                     beta2: Pair = (0.9, 0.99), beta1: float = 0.0, eps: float = 1e-8) -> dict[str, _optim.Optimizer]:
    """R3GAN's Adam for G and D (official ``CIFAR10`` preset): lr cosine from 2e-4
    to 5e-5 and beta2 cosine from 0.9 to 0.99 over ``schedule_images`` images
    (``lr_scheduler``, ``beta2_scheduler``), beta1 0, eps 1e-8. Each
    optimizer's schedule runs in its own updates (with ``n_critic = 1``, the
    train steps). Returns ``{"g_optimizer", "d_optimizer"}`` for ``GAN(**...)``."""
    steps = steps_of(schedule_images, batch_size)
    (l0, l1), (b0, b1) = _pair("lr", lr), _pair("beta2", beta2)

    lr_s: Any = _sched.cosine(l0, l1, steps)  # Any: as in r3gan
    beta2_s: Any = _sched.cosine(b0, b1, steps)

    def adam() -> _optim.Optimizer:
        return _optim.adam(lr_s, betas=(beta1, beta2_s), eps=eps)

    return {"g_optimizer": adam(), "d_optimizer": adam()}


def stylegan2_ada(*, batch_size: int = 64, gamma: float = 0.01, r1_every: int = 16, ema_kimg: float = 500.0,
                  ema_rampup: float = 0.05, ada_target: float = 0.6, ada_kimg: float = 500.0,
                  augment: str = "color,translation,cutout", pl_weight: float = 0.0, pl_every: int = 4,
                  mixing_prob: float = 0.0, z_dims: int | None = None, num_ws: int | None = None) -> list[Part]:
    """StyleGAN2-ADA's parts (Karras et al., 2020, "Training Generative Adversarial
    Networks with Limited Data"; official ``train.py`` config ``cifar``). Use with
    ``loss="non_saturating"`` and :func:`stylegan2_ada_optimizers`.

    - ADA with target 0.6 and adjustment speed 500 kimg (``ada_target``,
      ``ada_kimg``); ganfn's differentiable operations (``augment``) stand in
      for the paper's 18-operation pipeline.
    - Lazy R1, gamma 0.01 (``cifar``), on every 16th D update with its weight
      times 16 (StyleGAN2's weighting, :func:`ganfn.parts.every`).
    - Path length (:func:`ganfn.parts.path_length`, every ``pl_every`` G updates):
      off in the ``cifar`` config (``pl_weight=0``, the default here); StyleGAN2's
      other configs use 2 (pass ``z_dims=G.z_dim`` for ``ganfn.models.stylegan2``).
    - G's EMA with a half-life of 500 kimg, ramped up over the first 5% of the
      images seen (``ema_rampup``): decay ``0.5 ** (batch_size / 500,000)``.
    - Style mixing (:func:`ganfn.parts.style_mixing`): off in the ``cifar``
      config (``mixing_prob=0``, the default here), 0.9 in StyleGAN2's others;
      it needs ``z_dims=G.z_dim, num_ws=G.num_ws``.

    ``batch_size`` (64 in ``cifar``) sets the EMA decay per update: pass the
    run's, so the half-life in images stays the paper's.
    """
    steps_of(1.0, batch_size)
    if not isinstance(r1_every, int) or isinstance(r1_every, bool) or r1_every < 1:
        raise ValueError(f"r1_every must be an int >= 1 (StyleGAN2 uses 16), got {r1_every!r}")
    if not ema_kimg > 0:
        raise ValueError(f"ema_kimg must be > 0, got {ema_kimg!r}")
    mixing = []
    if mixing_prob:
        if z_dims is None or num_ws is None:
            raise ValueError("stylegan2_ada: mixing_prob needs the generator's z_dims=G.z_dim and num_ws=G.num_ws")
        mixing = [_parts.style_mixing(mixing_prob, z_dim=z_dims, num_ws=num_ws)]
    out = [*mixing, _parts.ada(augment, target=ada_target, speed_images=ada_kimg * 1000),
           _parts.every(r1_every, _penalties.as_part(_penalties.r1(gamma)))]
    if pl_weight:
        out.append(_parts.path_length(pl_weight, every=pl_every, z_dims=z_dims))
    out.append(_parts.ema(0.5 ** (batch_size / (ema_kimg * 1000)), warmup=False, rampup=ema_rampup))
    return [check_part(p) for p in out]


def stylegan2_ada_optimizers(*, lr: float = 0.0025, betas: tuple[float, float] = (0.0, 0.99),
                             eps: float = 1e-8) -> dict[str, _optim.Optimizer]:
    """StyleGAN2-ADA's Adam for G and D (``cifar``: lr 0.0025, betas (0, 0.99),
    eps 1e-8). The official code's lazy-regularisation compensation (lr and
    betas to the power k/(k+1)) is not applied, and need not be: it makes up for
    the separate optimizer step the official code takes for a lazy term, while
    :func:`ganfn.parts.every` adds the term to the regular update instead."""
    return {"g_optimizer": _optim.adam(lr, betas=betas, eps=eps), "d_optimizer": _optim.adam(lr, betas=betas, eps=eps)}
