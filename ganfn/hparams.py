"""Per-state hyperparameters: defaults, overrides by key, and their checks.

``GAN.init(seed, **overrides)`` takes keys of two kinds: the loss's and the
parts' (``real_label``, ``gp_weight``, ``ema_decay``, ...), stored in
``TrainState.hparams``; and optimizer hyperparameters suffixed ``_g``/``_d``
(``lr_d``, ``b1_g``, ...), stored in that network's ``opt["hp"]``.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from . import schedules as _sched
from .parts.base import Hyper
from .validate import Range, check_range

__all__ = ["OPT_ALIASES", "aliases", "apply_overrides", "expand", "make_hparams"]

OPT_ALIASES = {"lr": "lr", "b1": "b1", "b2": "b2", "beta1": "b1", "beta2": "b2", "eps": "eps",
               "weight_decay": "weight_decay", "momentum": "momentum", "alpha": "alpha",
               "dampening": "dampening", "max_norm": "max_norm"}


def expand(defaults: Mapping[str, Hyper]) -> tuple[dict[str, Hyper], dict[str, _sched.Schedule]]:
    """``defaults`` as stored (a schedule's fields under ``"<key>.<field>"``, each
    value field with the key's range, each step field >= 0) and the scheduled
    keys' templates (:func:`ganfn.schedules.resolve` evaluates them)."""
    out: dict[str, Hyper] = {}
    scheduled: dict[str, _sched.Schedule] = {}
    for k, h in defaults.items():
        if _sched.is_schedule(h.value):
            scheduled[k] = h.value
            for f, v in h.value.fields.items():
                out[f"{k}.{f}"] = Hyper(v, h.range if f in h.value.value_fields else Range(0.0))
        else:
            out[k] = h
    return out, scheduled


def make_hparams(defaults: Mapping[str, Hyper], device: torch.device) -> dict[str, Tensor]:
    """Every default as a 0-d float64 tensor on ``device``."""
    return {k: torch.as_tensor(h.value, dtype=torch.float64).detach().to(device).clone() for k, h in defaults.items()}


def _set_opt(key: str, t: Tensor, opt_state: dict, optimizer) -> None:
    base, dot, field = key[:-2].partition(".")  # "lr.end_g": a field of a scheduled learning rate
    name = OPT_ALIASES[base] + dot + field
    if name not in opt_state["hp"]:
        raise ValueError(f"hyperparameter {key!r}: the {'G' if key.endswith('_g') else 'D'} optimizer has no {name!r} "
                         f"(it has {sorted(opt_state['hp'])})")
    if name in optimizer.fixed and float(t) != float(opt_state["hp"][name]):
        raise ValueError(f"hyperparameter {key!r}: the optimizer was built with {name}=0.0, which removes its "
                         f"arithmetic; build it with a tensor (e.g. {name}=torch.tensor(0.0)) to sweep {name}")
    check_range(key, t, Range(0.0) if name.partition(".")[0] == "lr" else Range())
    opt_state["hp"][name] = t


def apply_overrides(overrides: Mapping[str, float | Tensor], defaults: Mapping[str, Hyper], hp: dict[str, Tensor],
                    g_opt: dict, d_opt: dict, g_optimizer, d_optimizer) -> None:
    """Write ``overrides`` into ``hp`` / the optimizer states (fresh dicts made by
    ``init``), each checked against its valid range; ``ValueError`` on an unknown
    key, naming the known ones."""
    for key, value in overrides.items():
        t = torch.as_tensor(value, dtype=torch.float64,
                            device=next(iter(hp.values()), torch.zeros(())).device).detach().clone()
        if key in defaults:
            check_range(key, t, defaults[key].range)
            hp[key] = t
        elif key.endswith(("_g", "_d")) and key[:-2].partition(".")[0] in OPT_ALIASES:
            check_range(key, t)
            g = key.endswith("_g")
            _set_opt(key, t, g_opt if g else d_opt, g_optimizer if g else d_optimizer)
        else:
            known = sorted(set(hp) | {f"{a}_{n}" for a in OPT_ALIASES for n in "gd"})
            raise ValueError(f"unknown hyperparameter {key!r}; known: {known}")


def aliases(hp: dict) -> dict[str, str]:
    """The flat keys of namespaced hyperparameters (``ema_decay`` for
    ``ema_slow/ema_decay``: ``parts.named``) where exactly one part declares them."""
    short: dict[str, list[str]] = {}
    for k in hp:
        if "/" in k:
            short.setdefault(k.split("/", 1)[1], []).append(k)
    return {s: ks[0] for s, ks in short.items() if len(ks) == 1 and s not in hp}
