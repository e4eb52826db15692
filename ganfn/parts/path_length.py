"""Path-length regularisation (Karras et al., CVPR 2020, StyleGAN2 sec. 3.2) as a lazy part.

For latents ``z`` and an image-space direction ``y ~ N(0, I) / sqrt(H W)``, the
Jacobian-vector length ``||grad_z <G(z), y>||`` should not depend on ``z``. The
G loss term is ``pl_weight * E[(length - a)^2]``, ``a`` a moving average of the
batch's mean length (``a <- lerp(a, mean length, pl_decay)``, from 0 as in the
official code), kept in the part's state. StyleGAN2 computes it on every 4th
G update only, with its weight times 4 (:func:`ganfn.parts.every`), on half the
batch (``batch_shrink=2``).

One deviation: the official code differentiates with respect to the
intermediate latents ``w`` (after the mapping network); a part sees G as a
function of its latent only, so here the gradient is with respect to ``z``
(the mapping network's Jacobian is part of the length). For a generator whose
latent carries more than z (``ganfn.models.stylegan2``: z then the noise
maps), ``z_dims`` restricts the differentiation to the first ``z_dims``
entries.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..validate import Range
from .base import Ctx, Draw, GTerm, Hyper, InitCtx, Part, check_part
from .combinators import every as _every

__all__ = ["path_length"]


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"path_length: {name} must be an int >= {low}, got {value!r}")
    return value


def _lengths(x: GTerm, y: Tensor, z_dims: int | None, n: int) -> Tensor:
    """``||grad_z <G(z), y>||`` per sample, for the first ``n`` samples: [n]."""
    if x.g_fn is None:
        raise ValueError("path_length needs GTerm.g_fn (G as a function of its latent)")
    g_fn = x.g_fn
    z = x.z[:n]
    head, rest = (z, None) if z_dims is None else (z[:, :z_dims], z[:, z_dims:])

    def inner(h: Tensor) -> Tensor:
        out = g_fn(h if rest is None else torch.cat([h, rest], dim=1))
        return (out * y.to(out.dtype)).sum()

    grads = torch.func.grad(inner)(head)
    return grads.reshape(n, -1).square().sum(1).sqrt()


def path_length(weight: float | Tensor = 2.0, *, every: int = 4, decay: float | Tensor = 0.01, batch_shrink: int = 2,
                z_dims: int | None = None) -> Part:
    """StyleGAN2's path-length term as a part named ``path_length``.

    Hyperparameters (per member, schedules allowed): ``pl_weight`` >= 0 (2 in
    StyleGAN2's FFHQ config; StyleGAN2-ADA's ``cifar`` config turns it off) and
    ``pl_decay`` in [0, 1]. The term acts on every ``every``-th G update with its
    weight times ``every`` (:func:`ganfn.parts.every`; ``every=1``: each update).
    It uses the first ``B // batch_shrink`` samples of the batch (at least one).
    Draws ``{"y": [n_gen, B, *sample]}``; the images must be ``[..., H, W]``.
    State: ``{"count", "inner": {"mean"}}`` (the running mean length, float64).
    Metric: ``path_length/term``, the scaled term (NaN on updates it skips)."""
    k = _check_int("every", every, 1)
    shrink = _check_int("batch_shrink", batch_shrink, 1)
    if z_dims is not None:
        _check_int("z_dims", z_dims, 1)

    def init(ctx: InitCtx) -> dict:
        if len(ctx.sample_shape) < 2:
            raise ValueError(f"path_length needs image samples [..., H, W], got sample shape {tuple(ctx.sample_shape)}")
        return {"mean": torch.zeros((), dtype=torch.float64, device=ctx.device)}

    def check(info) -> None:
        if z_dims is not None and (len(info.latent_shape) != 1 or z_dims > info.latent_shape[0]):
            raise ValueError(f"path_length: z_dims={z_dims} needs flat latents of at least that size, "
                             f"got latent shape {tuple(info.latent_shape)}")

    def noise_g(draw: Draw) -> dict[str, Tensor]:
        h, w = draw.sample_shape[-2:]
        return {"y": draw.normal(*draw.sample_shape) / math.sqrt(h * w)}

    def g_term(x: GTerm, ctx: Ctx) -> tuple[Tensor, dict]:
        n = max(1, x.z.shape[0] // shrink)
        lengths = _lengths(x, ctx.noise["y"][:n], z_dims, n)
        batch = lengths.mean().detach().to(torch.float64)
        mean = torch.lerp(ctx.state["mean"], batch, ctx.hp["pl_decay"])
        term = ctx.hp["pl_weight"] * (lengths - mean.to(lengths.dtype)).square().mean()
        return term, {"mean": mean}

    def after_g(g_params, ctx: Ctx, aux):
        return g_params, {"mean": ctx.aux["mean"]}

    hparams = {"pl_weight": Hyper(weight, Range(0.0)), "pl_decay": Hyper(decay, Range(0.0, 1.0))}
    part = Part("path_length", hparams, init=init, noise_g=noise_g, g_term=g_term, after_g=after_g,
                check=check)
    return _every(k, check_part(part))  # ranges checked here, not first at GAN(...)
