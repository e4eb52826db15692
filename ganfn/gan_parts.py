"""How ``GAN`` checks its arguments and its list of parts, and refuses the short-hand options it no longer takes."""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

from . import optim as _optim
from . import penalties as _penalties
from .parts.base import Hyper, Part, check_part
from .validate import Range, check_range

__all__ = ["PartInfo", "REMOVED", "check_counts", "check_optimizer", "check_spectral_norm", "latent_shape_of",
           "loss_hparams", "refuse_removed", "validate_parts"]


def latent_shape_of(latent_dim: int | Sequence[int]) -> tuple[int, ...]:
    """The shape of one latent sample: ``(latent_dim,)`` for an int."""
    shape = (int(latent_dim),) if isinstance(latent_dim, int) else tuple(int(d) for d in latent_dim)
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"latent_dim must be a positive int or shape, got {latent_dim!r}")
    return shape


def check_optimizer(name: str, opt: Any) -> Any:
    """``opt`` if it is a ``ganfn.optim.Optimizer``, else a ``TypeError`` naming ``name``."""
    if not isinstance(opt, _optim.Optimizer):
        raise TypeError(f"{name} must be a ganfn.optim.Optimizer (e.g. ganfn.optim.adam(2e-4)), got "
                        f"{type(opt).__name__}")
    return opt


def check_counts(**counts: int) -> tuple[int, ...]:
    """The update counts (``n_critic``, ``n_gen``, ``accumulation_steps``), each an int >= 1."""
    for name, v in counts.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return tuple(counts.values())


def loss_hparams(loss: Any) -> dict[str, Hyper]:
    """The loss's per-member hyperparameters: its targets (``loss.targets``; a BCE
    target is a probability, in [0, 1]) and the loss's own (e.g. a mixture's weight)."""
    bce = loss.name in ("minimax", "non_saturating")
    t = loss.targets
    hp = {"real_label": Hyper(t["real_label"], Range(0.0, 1.0) if bce else Range()),
          "fake_label": Hyper(t["fake_label"]), "g_target": Hyper(t["g_target"]),
          **{k: Hyper(v) for k, v in loss.hparams.items()}}
    for k, h in hp.items():
        check_range(k, h.value, h.range)
    return hp


REMOVED = {
    "penalty": "parts=[ganfn.penalties.r1(10.0)] (any penalty, or ganfn.recipes.wgan_gp())",
    "ema_decay": "parts=[ganfn.parts.ema(0.999)]",
    "spectral_norm": "parts=[ganfn.parts.spectral_norm()] (or ganfn.recipes.sngan())",
    "sn_iters": "parts=[ganfn.parts.spectral_norm(n_iters)]",
    "instance_noise": "parts=[ganfn.parts.instance_noise(std)]",
    "instance_noise_anneal": "parts=[ganfn.parts.instance_noise(std, anneal_steps=n)]",
    "replay_size": "parts=[ganfn.parts.replay(size, fraction)]",
    "replay_fraction": "parts=[ganfn.parts.replay(size, fraction)]",
    "d_skip_accuracy": "parts=[ganfn.parts.balance(d_above, g_below)]",
    "g_skip_accuracy": "parts=[ganfn.parts.balance(d_above, g_below)]",
    "real_label": "loss=ganfn.losses.bce(real_label=0.9) (or ganfn.losses.with_targets(loss, real_label=...))",
    "fake_label": "loss=ganfn.losses.with_targets(loss, fake_label=...)",
    "g_target": "loss=ganfn.losses.with_targets(loss, g_target=...)",
}
"""Each keyword ``GAN`` no longer takes, and what replaces it."""


def refuse_removed(kwargs: Mapping[str, Any]) -> None:
    """``TypeError`` for any keyword in ``kwargs``: naming its replacement for a
    removed short-hand option, and the accepted keywords otherwise."""
    for k in kwargs:
        if k in REMOVED:
            raise TypeError(f"GAN no longer takes {k}=: features are parts, run in the order listed; use {REMOVED[k]}")
        raise TypeError(f"GAN got an unexpected keyword argument {k!r}")


def check_spectral_norm(discriminator: Any, parts: Sequence[Part]) -> None:
    """``ValueError`` when the discriminator declares ``wants_spectral_norm`` but
    no part reparametrises D's weights (spectral norm is no longer implicit)."""
    if getattr(discriminator, "wants_spectral_norm", False) and not any(p.d_weights is not None for p in parts):
        raise ValueError(f"the discriminator ({type(discriminator).__name__}) declares wants_spectral_norm, "
                         "but no part normalises its weights: add ganfn.parts.spectral_norm() to parts= "
                         "(ganfn.recipes.sngan()), or set its wants_spectral_norm = False to train it without")


class PartInfo(NamedTuple):
    """What a part's ``check`` hook may inspect about the setup."""

    d_batch_stats: bool
    latent_shape: tuple[int, ...]


def validate_parts(parts: Sequence[Any], reserved: Mapping[str, Hyper], info: PartInfo) -> tuple[Part, ...]:
    """``parts`` (a penalty taken as its part) checked: well-formed, unique names, hyperparameter keys that
    collide with no other part's or the loss's, and each part's own ``check``."""
    seen: dict[str, str] = {k: "the loss" for k in reserved}
    names: set[str] = set()
    parts = [_penalties.as_part(p) if isinstance(p, _penalties.Penalty) else p for p in parts]
    for p in parts:
        check_part(p)
        if p.name in names:
            raise ValueError(f"two parts are named {p.name!r}: part names key the state and the noise, so they must "
                             "be unique")
        names.add(p.name)
        for k in p.hparams:
            if k in seen:
                raise ValueError(f"part {p.name!r} declares hyperparameter {k!r}, which {seen[k]} already declares")
            seen[k] = f"part {p.name!r}"
        if p.check is not None:
            p.check(info)
    return tuple(parts)
