"""How ``GAN`` checks its arguments, turns its short-hand options into parts, and checks a list of parts."""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

from . import optim as _optim
from . import parts as _parts
from . import penalties as _penalties
from .parts.base import Hyper, Part, check_part
from .validate import Range, check_range

__all__ = ["PartInfo", "check_counts", "check_optimizer", "latent_shape_of", "loss_hparams", "shorthand_parts",
           "validate_parts"]


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


def loss_hparams(loss: Any, *, real_label: float, fake_label: float, g_target: float) -> dict[str, Hyper]:
    """The loss's per-member hyperparameters: its targets (a BCE target is a
    probability, in [0, 1]) and the loss's own (e.g. a mixture's weight)."""
    bce = loss.name in ("minimax", "non_saturating")
    hp = {"real_label": Hyper(real_label, Range(0.0, 1.0) if bce else Range()), "fake_label": Hyper(fake_label),
          "g_target": Hyper(g_target), **{k: Hyper(v) for k, v in loss.hparams.items()}}
    for k, h in hp.items():
        check_range(k, h.value, h.range)
    return hp


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
                    d_skip_accuracy: float | None, g_skip_accuracy: float | None,
                    ema_decay: float | None) -> list[Part]:
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
