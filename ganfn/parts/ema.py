"""An exponential moving average of G's parameters, with warm-up."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..validate import Range
from .base import Ctx, Hyper, InitCtx, Part

__all__ = ["ema", "ema_decay"]


def ema_decay(hp: dict[str, Tensor], count: Tensor, *, warmup: bool) -> Tensor:
    """The decay of EMA update number ``count`` (0-based, a 0-d tensor), in float64.

    ``t = count - ema_start``. Before the start (``t < 0``) the average copies the
    parameters (decay 0). With ``ema_rampup = r > 0`` (StyleGAN2's ``ema_rampup``,
    Karras et al., 2020) the average's half-life, in updates, is at most
    ``r * t``: decay ``0.5 ** (1 / min(h, r t))`` where ``h`` is ``ema_decay``'s
    half-life. Otherwise with ``warmup`` the decay is TensorFlow's
    ``ExponentialMovingAverage(num_updates=t)``: ``min(ema_decay, (1 + t) / (10 + t))``;
    without, ``ema_decay`` itself.
    """
    base = hp["ema_decay"]
    t = (count - hp["ema_start"]).to(torch.float64)
    decay = torch.minimum(base, (1 + t) / (10 + t)) if warmup else base
    # log(1) = 0 would give an infinite half-life of the wrong sign: clamp below zero.
    half_life = math.log(0.5) / torch.clamp(torch.log(base), max=-1e-300)
    ramped = torch.pow(0.5, 1.0 / torch.clamp(torch.minimum(half_life, hp["ema_rampup"] * t), min=1e-8))
    decay = torch.where(hp["ema_rampup"] > 0, ramped, decay)
    return torch.where(t < 0, torch.zeros_like(decay), decay)


def ema(decay: float | Tensor = 0.999, *, warmup: bool = True, start: int | float | Tensor = 0,
        rampup: float | Tensor = 0.0) -> Part:
    """A moving average of G's parameters after every G update (Karras et al., 2018;
    Yazıcı et al., 2019); ``GAN.sample`` uses it by default.

    Hyperparameters (per member): ``ema_decay`` in [0, 1]; ``ema_start``, the G
    update from which averaging starts (before it the average equals the
    parameters); ``ema_rampup`` (0: off), StyleGAN2's ramp of the half-life.
    ``warmup`` (default on): TensorFlow's ``num_updates`` warm-up, so a short run's
    average is not dominated by the untrained initial weights. See :func:`ema_decay`.
    State: ``{"params": averaged G parameters, "count": EMA updates so far}``.
    """

    def init(ctx: InitCtx) -> dict:
        return {"params": {k: v.clone() for k, v in ctx.g_params.items()},
                "count": torch.zeros((), dtype=torch.int64, device=ctx.device)}

    def after_g(g_params, ctx: Ctx, aux):
        w = 1.0 - ema_decay(ctx.hp, ctx.state["count"], warmup=warmup)
        avg = {k: torch.lerp(e, g_params[k], w.to(e.dtype)) for k, e in ctx.state["params"].items()}
        return g_params, {"params": avg, "count": ctx.state["count"] + 1}

    hparams = {"ema_decay": Hyper(decay, Range(0.0, 1.0)), "ema_start": Hyper(start, Range(0.0)),
               "ema_rampup": Hyper(rampup, Range(0.0))}
    return Part("ema", hparams, init=init, after_g=after_g, sample_weights=lambda g_params, ctx: ctx.state["params"])
