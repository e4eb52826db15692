"""Part lists for known setups, the way ``optax.adam`` is a chain.

A recipe is a function returning a list of :class:`~ganfn.parts.Part` s; pass it
(and any more parts, in the order they should run) to ``GAN(parts=...)``::

    gan = ganfn.GAN(G, D, latent_dim=128, loss="wasserstein", n_critic=5,
                    parts=ganfn.recipes.wgan_gp(10.0))
    gan = ganfn.GAN(G, SND, latent_dim=128, loss="hinge",
                    parts=[*ganfn.recipes.sngan(), ganfn.parts.ema(0.999)])

The loss, the optimizers and the update counts stay ``GAN``'s arguments; each
recipe's docstring gives the paper's. :func:`classic` builds the classic
stabilisation tricks in one fixed order (what ``GAN``'s removed keyword options
built). :func:`r3gan` and :func:`stylegan2_ada` (:mod:`ganfn.recipes_modern`)
come with ``*_optimizers`` helpers for their optimizer settings. To add a
recipe, write a function returning a part list and add it to :data:`RECIPES`; schedules (:mod:`ganfn.schedules`) and
combinators (:func:`ganfn.parts.every`, :func:`ganfn.parts.starting_at`) are how
a recipe's hyperparameters move and act lazily.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from . import parts as _parts
from . import penalties as _penalties
from .parts.base import Part
from .recipes_modern import r3gan, r3gan_optimizers, steps_of, stylegan2_ada, stylegan2_ada_optimizers

__all__ = ["RECIPES", "classic", "dcgan", "wgan", "wgan_gp", "sngan", "r3gan", "r3gan_optimizers", "stylegan2_ada",
           "stylegan2_ada_optimizers", "steps_of"]


def _ema(decay: Any) -> list[Part]:
    return [] if decay is None else [_parts.ema(decay)]


def dcgan(*, ema_decay: float | None = None) -> list[Part]:
    """DCGAN (Radford et al., 2016): no part at all (BCE loss, Adam 2e-4 with
    betas (0.5, 0.999), batch norm in both networks); optionally G's EMA."""
    return _ema(ema_decay)


def wgan(clip: float = 0.01, *, ema_decay: float | None = None) -> list[Part]:
    """WGAN (Arjovsky et al., 2017): D's weights clipped to ``[-clip, clip]``
    after every update (Wasserstein loss, RMSprop 5e-5, ``n_critic=5``)."""
    return [_penalties.as_part(_penalties.weight_clip(clip)), *_ema(ema_decay)]


def wgan_gp(weight: float = 10.0, *, every: int | None = None, ema_decay: float | None = None) -> list[Part]:
    """WGAN-GP (Gulrajani et al., 2017): the gradient penalty with weight 10
    (Wasserstein loss, Adam 1e-4 with betas (0, 0.9) or (0.5, 0.9), ``n_critic=5``,
    no batch norm in D)."""
    return [_penalties.as_part(_penalties.gradient_penalty(weight, every=every)), *_ema(ema_decay)]


def sngan(n_iters: int = 1, *, ema_decay: float | None = None) -> list[Part]:
    """SNGAN (Miyato et al., 2018): spectral normalisation of every D weight,
    ``n_iters`` power iterations per D update (hinge loss, Adam 2e-4 with betas
    (0, 0.9), ``n_critic=5``)."""
    return [_parts.spectral_norm(n_iters), *_ema(ema_decay)]


def classic(*, penalties: Sequence[Any] = (), spectral_norm: bool = False, sn_iters: int = 1,
            instance_noise: float = 0.0,
            instance_noise_anneal: int | None = None, replay_size: int = 0, replay_fraction: float = 0.5,
            d_skip_accuracy: float | None = None, g_skip_accuracy: float | None = None,
            ema_decay: float | None = None) -> list[Part]:
    """The classic tricks in one fixed order (their hooks and noise draws run in
    it): ``penalties`` (penalties or parts; a clipping before the power
    iteration), spectral norm, instance noise (annealed over
    ``instance_noise_anneal`` steps), a replay buffer, balancing by D's accuracy,
    EMA (with warm-up). An option left at its default adds nothing."""
    out = [p if isinstance(p, Part) else _penalties.as_part(p) for p in penalties]
    if not isinstance(sn_iters, int) or sn_iters < 1:
        raise ValueError(f"sn_iters must be an int >= 1, got {sn_iters!r}")
    if spectral_norm:
        out.append(_parts.spectral_norm(sn_iters))
    if instance_noise_anneal is not None and not instance_noise > 0:
        raise ValueError("instance_noise_anneal needs instance_noise > 0 (the level it anneals from)")
    if instance_noise != 0:
        out.append(_parts.instance_noise(instance_noise, anneal_steps=instance_noise_anneal or 0))
    if not isinstance(replay_size, int) or replay_size < 0:
        raise ValueError(f"replay_size must be an int >= 0, got {replay_size!r}")
    if replay_size:
        out.append(_parts.replay(replay_size, replay_fraction))
    if d_skip_accuracy is not None or g_skip_accuracy is not None:
        out.append(_parts.balance(d_skip_accuracy, g_skip_accuracy))
    return out + _ema(ema_decay)


RECIPES: dict[str, Callable[..., list[Part]]] = {"dcgan": dcgan, "wgan": wgan, "wgan_gp": wgan_gp, "sngan": sngan,
                                                 "r3gan": r3gan, "stylegan2_ada": stylegan2_ada}
"""The recipes by name (the modern ones' optimizers: ``r3gan_optimizers``, ``stylegan2_ada_optimizers``)."""
