"""How ``GAN`` turns its short-hand options into parts, and checks a list of parts."""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

from . import penalties as _penalties
from . import parts as _parts
from .parts.base import Hyper, Part, check_part

__all__ = ["PartInfo", "shorthand_parts", "validate_parts"]


class PartInfo(NamedTuple):
    """What a part's ``check`` hook may inspect about the setup."""

    d_batch_stats: bool
    latent_shape: tuple[int, ...]


def _penalty_list(penalty: Any) -> list:
    if penalty is None:
        return []
    if isinstance(penalty, (str, _penalties.Penalty, Part)):
        return [penalty]
    return list(penalty)


def shorthand_parts(*, penalty: Any, spectral_norm: bool, sn_iters: int, instance_noise: float,
                    instance_noise_anneal: int | None, replay_size: int, replay_fraction: float,
                    d_skip_accuracy: float | None, g_skip_accuracy: float | None, ema_decay: float | None) -> list[Part]:
    """The parts ``GAN``'s keyword options describe, in the order their hooks run:
    penalties (their clipping before the power iteration), spectral norm,
    instance noise, replay, balancing, EMA. Noise is drawn in this order too."""
    out = [p if isinstance(p, Part) else _penalties.as_part(p) for p in _penalty_list(penalty)]
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
    if ema_decay is not None:
        out.append(_parts.ema(ema_decay))
    return out


def validate_parts(parts: Sequence[Part], reserved: Mapping[str, Hyper], info: PartInfo) -> tuple[Part, ...]:
    """``parts`` checked: well-formed, unique names, hyperparameter keys that
    collide with no other part's or the loss's, and each part's own ``check``."""
    seen: dict[str, str] = {k: "the loss" for k in reserved}
    names: set[str] = set()
    for p in parts:
        check_part(p)
        if p.name in names:
            raise ValueError(f"two parts are named {p.name!r}: part names key the state and the noise, so they must be unique")
        names.add(p.name)
        for k in p.hparams:
            if k in seen:
                raise ValueError(f"part {p.name!r} declares hyperparameter {k!r}, which {seen[k]} already declares")
            seen[k] = f"part {p.name!r}"
        if p.check is not None:
            p.check(info)
    return tuple(parts)
