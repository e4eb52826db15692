"""The random tensors of one train step, drawn from one generator in a fixed order."""
from __future__ import annotations

from typing import Any

import torch

from .parts.base import Draw
from .state import Noise, UpdateNoise
from .tree import tree_map

__all__ = ["draw_noise"]


def draw_noise(gan: Any, rng: torch.Generator, batch_size: int, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Noise:
    """Every random tensor one ``gan.train_step`` needs, drawn from ``rng`` only.

    Returns a :class:`~ganfn.state.Noise`: ``d.z`` [n_critic, B, *latent], in a
    conditional setup the fake batches' labels ``d.labels = (y [n_critic, B],)``,
    then each part's ``noise_d`` draws (``d.parts[name]``); then the same for G
    (``g.z`` [n_gen, B, *latent], ``g.labels``, ``noise_g`` draws). The order is
    fixed, so a seed determines the noise exactly. ``device``: where the tensors
    go after drawing (``rng``'s device draws them).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")

    def side(n: int, hook: str) -> UpdateNoise:
        draw = Draw(rng, n, batch_size, gan.sample_shape, gan.latent_shape, dtype)
        z = torch.randn(n, batch_size, *gan.latent_shape, generator=rng, dtype=dtype, device=rng.device)
        labels = gan.labels.draw(rng, n, batch_size)  # (): nothing drawn for an unconditional GAN
        return UpdateNoise(z, {p.name: fn(draw) for p, fn in getattr(gan.table, hook)}, labels)

    noise = Noise(side(gan.n_critic, "noise_d"), side(gan.n_gen, "noise_g"))
    return noise if device is None else tree_map(lambda t: t.to(device), noise)
