"""Style mixing (Karras et al., CVPR 2019, StyleGAN sec. 3.1; kept in StyleGAN2) as a part.

With probability ``mixing_prob`` per batch, the generator's w from a second
latent z2 drives every layer from a random crossover index on (drawn uniformly
in ``[1, num_ws)``), the first latent's w the layers before it; otherwise every
layer gets the first w. Training only: ``GAN.sample`` never mixes. The part
widens each latent to ``[z, noise, z2, choice per w index]``, the layout
``ganfn.models.stylegan2``'s generator takes (``G.z_dim``, ``G.num_ws``).
As in the official code, one crossover and one mixing decision per batch (per
member under vmap).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..validate import Range
from .base import Ctx, Draw, Hyper, Part, check_part

__all__ = ["style_mixing"]


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"style_mixing: {name} must be an int >= {low} (ganfn.models.stylegan2: G.{name}), "
                         f"got {value!r}")
    return value


def style_mixing(mixing_prob: float | Tensor = 0.9, *, z_dim: int, num_ws: int) -> Part:
    """The style-mixing part named ``style_mixing`` for a generator with ``z_dim``
    and ``num_ws`` (``style_mixing(0.9, z_dim=G.z_dim, num_ws=G.num_ws)``).

    Hyperparameter ``mixing_prob`` in [0, 1] (per member; schedules allowed):
    0.9 in StyleGAN2's FFHQ configs, 0 in StyleGAN2-ADA's ``cifar`` config.
    Draws ``{"z2": [n, B, z_dim], "mix": [n, B], "cut": [n, B]}`` for D and G
    updates (the first sample's ``mix`` and ``cut`` decide for the batch).
    ``g_latents``: latents ``[B, L]`` -> ``[B, L + z_dim + num_ws]``."""
    z_dim, num_ws = _check_int("z_dim", z_dim, 1), _check_int("num_ws", num_ws, 2)

    def noise(draw: Draw) -> dict[str, Tensor]:
        return {"z2": draw.normal(z_dim), "mix": draw.uniform(), "cut": draw.uniform()}

    def g_latents(z: Tensor, ctx: Ctx) -> Tensor:
        if z.dim() != 2:
            raise ValueError(f"style_mixing needs flat latents [B, L], got {tuple(z.shape)}")
        cut = 1 + torch.clamp(torch.floor(ctx.noise["cut"][0] * (num_ws - 1)), max=num_ws - 2)
        cut = torch.where(ctx.noise["mix"][0] < ctx.hp["mixing_prob"], cut.to(torch.float64),
                          torch.full_like(cut, num_ws, dtype=torch.float64))
        idx = torch.arange(num_ws, device=z.device, dtype=torch.float64)
        pick = (idx >= cut).to(z.dtype).expand(z.shape[0], num_ws)
        return torch.cat([z, ctx.noise["z2"].to(z.dtype), pick], dim=1)

    part = Part("style_mixing", {"mixing_prob": Hyper(mixing_prob, Range(0.0, 1.0))}, noise_d=noise, noise_g=noise,
                g_latents=g_latents)
    return check_part(part)
