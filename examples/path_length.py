"""Path-length regularisation (Karras et al., 2020, StyleGAN2 sec. 3.2) as a part, made lazy with ``every``.

For latents ``z`` and an image-space direction ``y ~ N(0, I) / sqrt(pixels)``,
the length ``||grad_z <G(z), y>||`` should not vary: the term is
``pl_weight * E[(length - a)^2]`` with ``a`` a moving average of the lengths
(decay ``pl_decay``) kept in the part's state. StyleGAN2 takes it every 4th G
update with its weight times 4: ``ganfn.parts.every(4, path_length())``.

The built-in :func:`ganfn.parts.path_length` follows the official code more
closely (running mean from 0, half the batch, image noise over H x W only);
this one shows a newcomer's version. Written with the public API only (``ganfn.parts``): G runs again through
``GTerm.g_fn``, differentiable in G's parameters, so the term's gradient is a
grad inside the grad of G's loss.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ganfn.parts import Ctx, Draw, GTerm, Hyper, InitCtx, Part, every


def path_length(weight: float | Tensor = 2.0, *, decay: float | Tensor = 0.01) -> Part:
    """The path-length term as a part named ``path_length`` (hyperparameters
    ``pl_weight``, ``pl_decay``; state ``{"mean"}``; draws ``y`` [n, B, *sample])."""

    def init(ctx: InitCtx) -> dict:
        return {"mean": torch.zeros((), dtype=torch.float64, device=ctx.device)}

    def noise_g(draw: Draw) -> dict[str, Tensor]:
        return {"y": draw.normal(*draw.sample_shape) / math.sqrt(math.prod(draw.sample_shape))}

    def g_term(x: GTerm, ctx: Ctx) -> tuple[Tensor, dict]:
        y = ctx.noise["y"].to(x.fake.dtype)
        grads = torch.func.grad(lambda z: (x.g_fn(z) * y).sum())(x.z)
        lengths = grads.reshape(grads.shape[0], -1).square().sum(1).add(1e-12).sqrt()
        batch = lengths.mean().detach().to(torch.float64)
        # The first update sets the average (a zero average would make the first term huge).
        mean = torch.where(ctx.state["mean"] == 0, batch, torch.lerp(ctx.state["mean"], batch, ctx.hp["pl_decay"]))
        term = ctx.hp["pl_weight"] * (lengths - mean.to(lengths.dtype)).square().mean()
        return term, {"mean": mean, "metrics": {"length": batch}}

    def after_g(g_params, ctx: Ctx, aux):
        return g_params, {"mean": ctx.aux["mean"]}

    hparams = {"pl_weight": Hyper(weight), "pl_decay": Hyper(decay)}
    return Part("path_length", hparams, init=init, noise_g=noise_g, g_term=g_term, after_g=after_g)


def lazy_path_length(k: int = 4, weight: float | Tensor = 2.0) -> Part:
    """StyleGAN2's setting: the term every ``k`` G updates, weight times ``k``."""
    return every(k, path_length(weight))
