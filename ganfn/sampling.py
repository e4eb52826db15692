"""Latent samplers for generating (not for training): the truncation trick.

- :func:`sample` / :func:`sample_params`: a trained state's samples (what
  ``GAN.sample`` runs).
- :func:`truncated_normal`: the truncation trick.
- :func:`standing_stats`: BatchNorm statistics recomputed for the weights that
  make samples (the EMA generator), as StudioGAN's "standing statistics".

The truncation trick (Brock et al., 2019, BigGAN, sec. 3.1) samples latents from
a normal distribution truncated at ``threshold``: values whose magnitude exceeds
it are drawn again until none does. Smaller thresholds trade variety for
fidelity. Training always uses untruncated latents (``gan.draw_noise``); use
these only to make samples::

    z = sampling.truncated_normal(torch.Generator().manual_seed(0), (64, latent_dim), 0.5)
    images = gan.sample(state, z)
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .functional import Buffers, make_apply

__all__ = ["sample", "sample_params", "check_single", "check_standing", "truncated_normal", "standing_stats"]


def check_standing(standing: int, name: str = "standing") -> None:
    """``ValueError`` unless ``standing`` (batches of standing statistics; 0: off) is an int >= 0."""
    if not isinstance(standing, int) or isinstance(standing, bool) or standing < 0:
        raise ValueError(f"{name} must be an int >= 0 (batches of standing statistics; 0: off), got {standing!r}")


def check_single(state: Any) -> None:
    """``ValueError`` naming :func:`ganfn.unstack` when ``state`` is a stacked state
    (``state.step`` of shape ``[S]``, outside ``vmap``): a stacked state holds S
    generators, and sampling picks one."""
    step = getattr(state, "step", None)
    if isinstance(step, Tensor) and step.dim() > 0:
        raise ValueError(
            f"this state is stacked ({step.shape[0]} members: state.step has shape {tuple(step.shape)}); sample one "
            "member with ganfn.unstack(state)[i], e.g. gan.sample(ganfn.unstack(state)[0], z), or every member with "
            "torch.func.vmap(gan.sample, in_dims=(0, None))(state, z)")


def sample_params(gan: Any, state: Any, *, ema: bool | None = None) -> dict[str, Tensor]:
    """The G weights :func:`sample` uses: the parts' sampling weights (G's EMA)
    when the setup keeps them (``ema=None``; ``ema=False``: G's own parameters)."""
    hooks = gan.table.sample_weights
    use = bool(hooks) if ema is None else ema
    if use and not hooks:
        raise ValueError("ema=True but this GAN keeps no EMA (add parts=[ganfn.parts.ema(0.999)] to GAN)")
    params = state.g.params
    for p, fn in hooks if use else ():
        params = fn(params, gan.ctx(p, state))
    return params


def sample(gan: Any, state: Any, z: Tensor, y: Tensor | None = None, *, ema: bool | None = None, train: bool = False,
           standing: int = 0) -> Tensor:
    """Generated samples ``[N, *sample]`` of ``gan`` in ``state`` for latents ``z``
    ``[N, *latent]`` (from ``gan.draw_latents`` or :func:`truncated_normal`); in a
    conditional setup of the classes ``y`` (int64 ``[N]``, required there and
    refused otherwise).

    Uses :func:`sample_params` (G's EMA when the setup keeps one), and G in eval
    mode (``train=False``: BatchNorm uses running statistics; see
    :func:`standing_stats` for statistics of the EMA weights). ``standing = n > 0``
    uses those instead: BatchNorm statistics recomputed for the sampling weights
    over ``n`` batches of 64 latents from a generator seeded 0 (deterministic).
    No part's input hook runs: augmentation never reaches samples.
    """
    check_single(state)
    if tuple(z.shape[1:]) != gan.latent_shape:
        raise ValueError(f"latents must have shape [N, {', '.join(map(str, gan.latent_shape))}], got {tuple(z.shape)}")
    check_standing(standing)
    labels = gan.labels.args(y, z.shape[0])
    buffers = (standing_stats(gan, state, torch.Generator().manual_seed(0), batches=standing, ema=ema) if standing
               else state.g.buffers)
    out, _ = gan.g_apply(sample_params(gan, state, ema=ema), buffers, z, *labels, train=train)
    return out


def truncated_normal(rng: torch.Generator, shape: Sequence[int], threshold: float | None, *,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """A tensor of ``shape`` with independent standard normal entries conditioned
    on ``|z| <= threshold``, drawn by resampling from ``rng`` only.

    Each round redraws, in index order, every entry still outside the threshold,
    so a seed determines the result. ``threshold=None`` (or ``inf``) gives plain
    ``torch.randn`` values, identical to ``torch.randn(shape, generator=rng)``.
    Raises ``ValueError`` unless ``threshold`` is a positive number.
    """
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
    if threshold is not None and (not isinstance(threshold, (int, float)) or math.isnan(threshold) or threshold <= 0):
        raise ValueError(f"truncation threshold must be a number > 0 (BigGAN uses 0.04 to 2), got {threshold!r}")
    z = torch.randn(*shape, generator=rng, dtype=dtype, device=rng.device)
    if threshold is None or math.isinf(threshold):
        return z if device is None else z.to(device)
    bad = z.abs() > threshold
    while bool(bad.any()):  # sampling outside any step: a host loop is fine here
        z[bad] = torch.randn(int(bad.sum()), generator=rng, dtype=dtype, device=rng.device)
        bad = z.abs() > threshold
    return z if device is None else z.to(device)


def standing_stats(gan: Any, state: Any, rng: torch.Generator, *, batches: int = 16, batch_size: int = 64,
                   ema: bool | None = None) -> Buffers:
    """G's buffers with every BatchNorm's running mean and variance recomputed
    for the weights ``gan.sample`` uses (the EMA's, by default): the plain
    average of the batch statistics of ``batches`` batches of ``batch_size``
    latents drawn from ``rng`` (a conditional GAN's classes drawn as in training).

    The live generator's running statistics belong to its own weights; an EMA
    generator's activations have other statistics, so StudioGAN recomputes
    ("standing statistics") before sampling. Use the result as::

        buffers = sampling.standing_stats(gan, state, rng)
        x = gan.sample(state._replace(g=state.g._replace(buffers=buffers)), z)

    Pure: a private copy of G runs with cumulative averaging; neither the user's
    module nor ``state`` changes. Without BatchNorm the buffers come back as they are.
    """
    if not isinstance(batches, int) or batches < 1 or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"standing_stats needs batches >= 1 and batch_size >= 2, got {batches}, {batch_size}")
    g = copy.deepcopy(gan.generator)
    bns = {n: m for n, m in g.named_modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}
    if not bns:
        return dict(state.g.buffers)
    for m in bns.values():
        m.momentum = None  # cumulative average over the batches below
    buffers = dict(state.g.buffers)
    for n in bns:
        pre = f"{n}." if n else ""
        buffers[pre + "running_mean"] = torch.zeros_like(buffers[pre + "running_mean"])
        buffers[pre + "running_var"] = torch.ones_like(buffers[pre + "running_var"])
        buffers[pre + "num_batches_tracked"] = torch.zeros_like(buffers[pre + "num_batches_tracked"])
    params = sample_params(gan, state, ema=ema)
    apply = make_apply(g)
    like = next(iter(params.values()))
    with torch.no_grad():
        for _ in range(batches):
            z = gan.draw_latents(rng, batch_size, dtype=like.dtype)
            # conditional: classes as in training
            y = [t[0].to(like.device) for t in gan.labels.draw(rng, 1, batch_size)]
            _, buffers = apply(params, buffers, z.to(like.device), *y, train=True)
    return buffers

