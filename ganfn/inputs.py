"""Checks of a step's inputs, before any state changes (metadata only: valid under vmap and compile)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import diagnose
from .labels import check_labels
from .state import Noise, TrainState

__all__ = ["check_batch", "check_step_inputs", "check_compatible"]


def check_batch(gan: Any, state: TrainState, real: Tensor | None, z: Tensor, which: str) -> None:
    """One update's inputs: latents ``z`` [B, *latent] and, for D, ``real`` [B, *sample]
    of the parameters' dtype and device."""
    if tuple(z.shape[1:]) != gan.latent_shape:
        raise ValueError(f"{which}-noise latents must have shape [B, {', '.join(map(str, gan.latent_shape))}], got "
                         f"{tuple(z.shape)}")
    B = z.shape[0]
    if B % gan.accumulation_steps:
        raise ValueError(f"batch size {B} is not divisible by accumulation_steps={gan.accumulation_steps}")
    if real is None:
        return
    like = next(iter(state.d.params.values()))
    if tuple(real.shape[1:]) != gan.sample_shape:
        raise ValueError(f"real batch has sample shape {tuple(real.shape[1:])} but the generator makes "
                         f"{gan.sample_shape} (real batch shape {tuple(real.shape)})")
    if real.shape[0] != B:
        raise ValueError(f"real batch size {real.shape[0]} does not match the noise batch size {B}")
    if real.dtype != like.dtype:
        raise TypeError(f"real data has dtype {real.dtype} but the parameters are {like.dtype}")
    if real.device != like.device:
        raise ValueError(f"real data is on {real.device} but the parameters are on {like.device}")


def check_step_inputs(gan: Any, state: TrainState, real: Any, noise: Noise) -> None:
    """A train step's inputs: a ``TrainState``, real data of the right rank and
    leading axis for ``n_critic`` (an ``(images, labels)`` pair with labels in
    range for a conditional GAN), and noise drawn by this GAN's ``draw_noise``."""
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a ganfn.TrainState (from gan.init), got {type(state).__name__}")
    real, labels = gan.labels.split(real)
    if not isinstance(real, Tensor):
        raise TypeError(f"real must be a tensor, got {type(real).__name__}")
    if not isinstance(noise, Noise):
        raise TypeError("noise must be the ganfn.state.Noise returned by gan.draw_noise(rng, batch_size), got "
                        f"{type(noise).__name__}")
    want = 1 + len(gan.sample_shape) + (gan.n_critic > 1)
    if real.dim() != want:
        lead = f"[{gan.n_critic}, B, " if gan.n_critic > 1 else "[B, "
        raise ValueError(f"real must have shape {lead}{', '.join(map(str, gan.sample_shape))}] "
                         f"(n_critic={gan.n_critic}), got {tuple(real.shape)}")
    if gan.n_critic > 1 and real.shape[0] != gan.n_critic:
        raise ValueError(f"real has {real.shape[0]} batches on its leading axis but n_critic={gan.n_critic}")
    for y in labels:
        check_labels(y, gan.num_classes, tuple(real.shape[: want - len(gan.sample_shape)]), "real labels")
    if noise.d.z.shape[0] != gan.n_critic or noise.g.z.shape[0] != gan.n_gen:
        raise ValueError("noise was drawn for a different n_critic/n_gen: use this GAN's draw_noise")
    for side, n in ((noise.d, gan.n_critic), (noise.g, gan.n_gen)):
        if len(side.labels) != len(labels):
            raise ValueError("noise was drawn by a GAN with different conditioning (labels in the noise must match "
                             "num_classes): use this GAN's draw_noise")
        for y in side.labels:
            check_labels(y, gan.num_classes, (n, side.z.shape[1]), "noise labels")
    for side, hook in ((noise.d, "noise_d"), (noise.g, "noise_g")):
        for p in gan.parts:
            if getattr(p, hook) is not None and p.name not in side.parts:
                raise ValueError(f"part {p.name!r} needs interpolation weights / random draws that this noise lacks: "
                                 "draw the noise with this GAN's draw_noise")


def how_called(num_classes: int | None) -> str:
    """How a GAN calls G and D, for error messages."""
    if num_classes:
        return (f"this GAN is conditional (num_classes={num_classes}), so it calls G(z, y) and D(x, y) "
                "with int64 labels y [B]")
    return "this GAN is unconditional, so it calls G(z) and D(x); for class-conditional networks pass num_classes=K"


def check_compatible(gan: Any, g_params: dict, g_buffers: dict, d_params: dict, d_buffers: dict) -> tuple[int, ...]:
    """G's sample shape, after checking that G takes latents ``[2, *latent]`` (and
    labels, conditionally) and D takes G's output, returning one score per
    sample; ``ValueError`` naming the shapes and how the GAN calls G and D."""
    like = next(iter(g_params.values()), None)
    z = torch.zeros(2, *gan.latent_shape, dtype=like.dtype if like is not None else None,
                    device=like.device if like is not None else None)
    y = gan.labels.probe(2, z.device)
    how = how_called(gan.num_classes)
    try:
        with torch.no_grad():
            fake, _ = gan.g_apply(g_params, g_buffers, z, *y, train=False)
    except Exception as e:  # re-raised with the shapes named
        raise ValueError(f"the generator cannot take latents of shape {tuple(z.shape)} "
                         f"(latent_dim={gan.latent_shape}) ({how}): {e}") from e
    try:
        with torch.no_grad():
            out, _ = gan.d_apply(d_params, d_buffers, fake, *y, train=False)
    except Exception as e:
        raise ValueError(f"the discriminator cannot take the generator's output of shape {tuple(fake.shape)} "
                         f"(sample shape {tuple(fake.shape[1:])}) ({how}): {e}") from e
    if isinstance(out, (tuple, list)) and not gan.loss.takes_labels:
        raise ValueError(f"the discriminator returns a {type(out).__name__} of {len(out)} (scores and class "
                         f"logits?), but loss {gan.loss.name} takes one score per sample; use ganfn.losses.acgan "
                         "for an auxiliary classifier")
    try:
        out = gan.loss.scores(out)
    except Exception as e:
        raise ValueError(f"loss {gan.loss.name} expects D to return (scores, class logits): {e}") from e
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError("the discriminator must return scores with a leading batch axis ([B] or [B, 1]), got "
                         f"shape {got} for a batch of 2")
    def d_fn(x: Tensor) -> Tensor:  # D's scores, labelled class 0 in a conditional GAN
        return gan.loss.scores(gan.d_apply(d_params, d_buffers, x,
                                           *gan.labels.probe(x.shape[0], x.device), train=False)[0])

    diagnose.check_discriminator(gan.discriminator, d_fn, fake, gan.loss.name)
    return tuple(fake.shape[1:])
