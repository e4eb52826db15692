"""Spectral normalisation of D (Miyato et al., 2018) as a part."""
from __future__ import annotations

from ..spectral import sn_apply, sn_init, sn_step
from .base import Ctx, InitCtx, Part

__all__ = ["spectral_norm"]


def spectral_norm(iters: int = 1) -> Part:
    """Every D weight of 2+ dimensions divided by its spectral-norm estimate on
    every use of D; ``iters`` power iterations after each D update. State: the
    ``u`` vector per normalised weight (see :mod:`ganfn.spectral`)."""
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"spectral_norm iters must be an int >= 1, got {iters!r}")

    def init(ctx: InitCtx) -> dict:
        return {k: u.to(ctx.device) for k, u in sn_init(ctx.d_params, ctx.generator).items()}

    def after_d(d_params, ctx: Ctx, aux):
        return d_params, sn_step(d_params, ctx.state, iters)

    return Part("spectral_norm", init=init, d_weights=lambda p, ctx: sn_apply(p, ctx.state), after_d=after_d)
