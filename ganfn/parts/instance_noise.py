"""Instance noise (Sønderby et al., 2017; Arjovsky & Bottou, 2017), annealed to zero."""
from __future__ import annotations

import torch
from torch import Tensor

from ..validate import Range
from .base import Ctx, Draw, Hyper, Part

__all__ = ["instance_noise", "instance_noise_level"]


def instance_noise_level(hp: dict[str, Tensor], step: Tensor | int) -> Tensor:
    """The noise std at train step ``step``: ``instance_noise * max(0, 1 - step / instance_noise_anneal)``,
    or ``instance_noise`` itself when ``instance_noise_anneal`` is 0 (float64)."""
    k = hp["instance_noise_anneal"]
    step = torch.as_tensor(step, device=k.device).to(torch.float64)
    frac = torch.clamp(1.0 - step / torch.where(k > 0, k, torch.ones_like(k)), min=0.0)
    return hp["instance_noise"] * torch.where(k > 0, frac, torch.ones_like(frac))


def instance_noise(std: float | Tensor = 0.1, *, anneal_steps: int | float | Tensor = 0) -> Part:
    """Gaussian noise of std ``instance_noise`` added to D's real and fake inputs on
    every D update, decaying linearly to 0 over ``instance_noise_anneal`` train
    steps (0: constant). Both are per-member hyperparameters. Draws
    ``{"real", "fake"}`` [n_critic, B, *sample] per step."""

    def noise_d(draw: Draw) -> dict[str, Tensor]:
        return {"real": draw.normal(*draw.sample_shape), "fake": draw.normal(*draw.sample_shape)}

    def d_inputs(real: Tensor, fake: Tensor, ctx: Ctx) -> tuple[Tensor, Tensor]:
        s = instance_noise_level(ctx.hp, ctx.step).to(real.dtype)
        return real + s * ctx.noise["real"], fake + s * ctx.noise["fake"]

    hparams = {"instance_noise": Hyper(std, Range(0.0)), "instance_noise_anneal": Hyper(anneal_steps, Range(0.0))}
    return Part("instance_noise", hparams, noise_d=noise_d, d_inputs=d_inputs)
