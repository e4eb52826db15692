"""Balancing D and G by D's accuracy: skip updates of the network that is ahead."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..validate import Range, check_range
from .base import Hyper, Part

__all__ = ["balance"]


def _accuracy(aux) -> Tensor:
    return 0.5 * (aux.d_acc_real + aux.d_acc_fake)


def balance(d_above: float | Tensor | None = None, g_below: float | Tensor | None = None) -> Part:
    """Skip a D update while D's accuracy on the batch (measured before the update)
    is above ``d_above`` (0.8 is a common choice), and a G update while the last
    D update's accuracy is below ``g_below``. ``None`` leaves that side alone.

    Hyperparameters (per member, in [0, 1]): ``d_skip_accuracy`` (``d_above``)
    and ``g_skip_accuracy`` (``g_below``). No state, no noise.
    """
    hparams: dict[str, Hyper] = {}
    kw: dict[str, Any] = {}
    if d_above is not None:
        hparams["d_skip_accuracy"] = Hyper(d_above, Range(0.0, 1.0))
        kw["skip_d"] = lambda aux, ctx: _accuracy(aux) > ctx.hp["d_skip_accuracy"]
    if g_below is not None:
        hparams["g_skip_accuracy"] = Hyper(g_below, Range(0.0, 1.0))
        kw["skip_g"] = lambda d_aux, ctx: _accuracy(d_aux) < ctx.hp["g_skip_accuracy"]
    if not kw:
        raise ValueError("balance needs d_above and/or g_below")
    for name, h in hparams.items():
        check_range(name, h.value, h.range)
    return Part("balance", hparams, **kw)
