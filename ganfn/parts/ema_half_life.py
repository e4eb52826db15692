"""An EMA of G's parameters whose half-life, in images, may follow a schedule (R3GAN)."""
from __future__ import annotations

from typing import Any

import torch

from ..validate import Range
from .base import Ctx, Hyper, Part, check_part
from .combinators import wrap
from .ema import ema

__all__ = ["ema_half_life"]


def ema_half_life(half_life_images: Any, batch_size: int) -> Part:
    """:func:`ganfn.parts.ema` (named ``ema``, same state, ``GAN.sample`` uses it)
    with its decay per G update set from a half-life in images,
    ``0.5 ** (batch_size / max(h, 1e-8))`` (StyleGAN2-ADA's and R3GAN's form), where
    ``h`` is the per-member hyperparameter ``ema_half_life`` (images, >= 0; a
    :mod:`ganfn.schedules` value moves it with the train step: R3GAN grows it
    from 0 to 5 Mimg by a cosine, Huang et al., 2024). ``h = 0``: the average
    is the current weights."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"ema_half_life: batch_size must be an int >= 1 (the images per G update), got {batch_size!r}")
    base = ema(0.0, warmup=False)

    def inner(ctx: Ctx) -> Ctx:
        h = ctx.hp["ema_half_life"]
        decay = torch.pow(0.5, batch_size / torch.clamp(h, min=1e-8))
        zero = torch.zeros_like(decay)
        return ctx._replace(hp={"ema_decay": decay, "ema_start": zero, "ema_rampup": zero})

    part = wrap(base, inner, lambda ctx, s: s, hparams={"ema_half_life": Hyper(half_life_images, Range(0.0))})
    return check_part(part)
