"""Differentiable augmentation: DiffAugment's policies and ADA's controller.

DiffAugment (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient
GAN Training") augments both the real and the generated images that D sees, with
operations that are differentiable with respect to the images, so G is trained
through them. ADA (Karras et al., 2020, "Training Generative Adversarial Networks
with Limited Data") applies each operation with a probability ``p`` and adapts
``p`` from how confidently D recognises the training images.

Everything here is a pure function of explicit tensors:

- the randomness of an augmentation is a dict of uniform ``U[0, 1)`` tensors from
  :func:`draw` (or drawn by ``gan.draw_noise``), so the same noise gives the same
  augmented batch, and a stacked ensemble can carry one noise dict per member;
- ``p`` is a float or a 0-d tensor (one per member under ``torch.func.vmap``);
- no operation branches on data, so :func:`apply` runs under ``vmap``, ``grad``
  and ``torch.compile``.

Policies (DiffAugment's names): ``color`` = brightness, saturation, contrast;
``translation`` = an integer shift of up to 1/8 of the image size with zero
fill; ``cutout`` = a zeroed square of half the image size. Images are
``[B, C, H, W]``, in any value range (ganfn's loaders give ``[-1, 1]``)::

    noise = augment.draw(rng, batch_size, "color,translation,cutout")
    x_aug = augment.apply(x, noise, "color,translation,cutout", p=0.3)
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .tree import in_transform

__all__ = [
    "POLICIES",
    "OPS",
    "parse_policy",
    "check_probability",
    "noise_shapes",
    "draw",
    "apply",
    "brightness",
    "saturation",
    "contrast",
    "translation",
    "cutout",
    "AdaState",
    "ada_init",
    "ada_update",
    "ada_accumulate",
]

Prob = float | Tensor


def _per_sample(u: Tensor, x: Tensor) -> Tensor:
    """``u`` [B] (or [B, 1]) reshaped to broadcast over [B, C, H, W], in x's dtype."""
    return u.reshape(u.shape[0], 1, 1, 1).to(x.dtype)


# -- the operations (each: images [B, C, H, W], uniforms [B, k] -> images) --------------


def brightness(x: Tensor, u: Tensor) -> Tensor:
    """Adds ``u - 0.5`` (one value per sample, ``u`` [B, 1] in [0, 1)) to every pixel."""
    return x + (_per_sample(u, x) - 0.5)


def saturation(x: Tensor, u: Tensor) -> Tensor:
    """Scales each pixel's deviation from its mean over channels by ``2u`` in [0, 2)."""
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (2 * _per_sample(u, x)) + m


def contrast(x: Tensor, u: Tensor) -> Tensor:
    """Scales each image's deviation from its mean (over C, H, W) by ``u + 0.5`` in [0.5, 1.5)."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_per_sample(u, x) + 0.5) + m


def _shift_matrix(shift: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """[B, n, n] 0/1 matrices ``M[b, i, j] = (j == i - shift[b])``: ``M @ v`` moves
    ``v`` by ``shift`` places and fills with zeros."""
    i = torch.arange(n, device=shift.device)
    return (i.reshape(1, n, 1) - shift.reshape(-1, 1, 1) == i.reshape(1, 1, n)).to(dtype)


def _integers(u: Tensor, low: int, high: int) -> Tensor:
    """Uniform integers in ``[low, high]`` from uniforms in [0, 1) (as ``randint``)."""
    return torch.clamp(torch.floor(u * (high - low + 1)), max=high - low).long() + low


def translation(x: Tensor, u: Tensor, ratio: float = 0.125) -> Tensor:
    """Shifts each image by whole pixels, up to ``round(ratio * size)`` in each
    direction (``u`` [B, 2]: rows, columns), filling with zeros.

    The shift is a product with 0/1 shift matrices rather than an index gather,
    so it is exact, differentiable with respect to ``x`` and batched by vmap.
    """
    H, W = x.shape[-2:]
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    rows = _shift_matrix(_integers(u[:, 0], -sh, sh), H, x.dtype)
    cols = _shift_matrix(_integers(u[:, 1], -sw, sw), W, x.dtype)
    return torch.einsum("bij,bcjk,blk->bcil", rows, x, cols)


def cutout(x: Tensor, u: Tensor, ratio: float = 0.5) -> Tensor:
    """Zeroes one ``round(ratio * H) x round(ratio * W)`` rectangle per image, its
    centre uniform over the image (``u`` [B, 2]); the rectangle may leave the image."""
    H, W = x.shape[-2:]
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    top = _integers(u[:, 0], 0, H - ch % 2) - ch // 2
    left = _integers(u[:, 1], 0, W - cw % 2) - cw // 2
    r = torch.arange(H, device=x.device).reshape(1, H, 1)
    c = torch.arange(W, device=x.device).reshape(1, 1, W)
    t, lft = top.reshape(-1, 1, 1), left.reshape(-1, 1, 1)
    inside = (r >= t) & (r < t + ch) & (c >= lft) & (c < lft + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class _Op(NamedTuple):
    fn: Callable[[Tensor, Tensor], Tensor]
    width: int  # uniforms per sample


OPS: dict[str, _Op] = {
    "brightness": _Op(brightness, 1),
    "saturation": _Op(saturation, 1),
    "contrast": _Op(contrast, 1),
    "translation": _Op(translation, 2),
    "cutout": _Op(cutout, 2),
}
"""Every operation by name, with the number of uniforms it reads per sample."""

POLICIES: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout",),
}
"""DiffAugment's policies and the operations each runs, in order."""


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """The operations of ``policy`` in order: a comma-separated string or a
    sequence of policy names (``POLICIES``) or operation names (``OPS``).

    Raises ``ValueError`` on an unknown or repeated name, or an empty policy.
    """
    names = [n.strip() for n in policy.split(",")] if isinstance(policy, str) else [str(n).strip() for n in policy]
    ops: list[str] = []
    for n in names:
        if n in POLICIES:
            ops.extend(POLICIES[n])
        elif n in OPS:
            ops.append(n)
        else:
            raise ValueError(f"unknown augmentation {n!r}: expected policies {sorted(POLICIES)} or operations "
                             f"{sorted(OPS)}, "
                             "e.g. 'color,translation,cutout'")
    if not ops:
        raise ValueError("empty augmentation policy: name at least one of " + ", ".join(sorted(POLICIES)))
    if len(set(ops)) != len(ops):
        raise ValueError(f"augmentation policy {policy!r} repeats an operation: {ops}")
    return tuple(ops)


def noise_shapes(policy: str | Sequence[str], batch_size: int) -> dict[str, tuple[int, ...]]:
    """The uniform tensors :func:`apply` reads for a batch of ``batch_size``:
    ``"gate"`` [B, n_ops] (operation i runs on sample b iff ``gate[b, i] < p``)
    and one [B, k] tensor per operation."""
    ops = parse_policy(policy)
    return {"gate": (batch_size, len(ops)), **{op: (batch_size, OPS[op].width) for op in ops}}


def draw(rng: torch.Generator, batch_size: int, policy: str | Sequence[str], *,
         dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> dict[str, Tensor]:
    """The noise of one augmentation of a batch: uniforms in [0, 1) drawn from
    ``rng`` only, in the fixed order of :func:`noise_shapes`."""
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    out = {k: torch.rand(*s, generator=rng, dtype=dtype, device=rng.device)
           for k, s in noise_shapes(policy, batch_size).items()}
    return out if device is None else {k: v.to(device) for k, v in out.items()}


def check_probability(p: Prob, name: str = "augmentation probability p") -> None:
    """Raises ``ValueError`` unless ``p`` is in [0, 1] (values under a transform
    cannot be read and are not checked)."""
    if isinstance(p, Tensor):
        if in_transform(p) or p.numel() != 1:
            return
        p = float(p)
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p!r}")


def apply(x: Tensor, noise: dict[str, Tensor], policy: str | Sequence[str], p: Prob = 1.0) -> Tensor:
    """``x`` [B, C, H, W] augmented by each operation of ``policy`` in turn, each
    applied to sample b iff ``noise["gate"][b, i] < p``.

    ``p = 1`` is DiffAugment (every operation on every sample); ``p = 0`` returns
    ``x`` unchanged in value; ADA adapts ``p`` (see :func:`ada_update`). Pure and
    differentiable with respect to ``x``; no data-dependent control flow.
    """
    ops = parse_policy(policy)
    if x.dim() != 4:
        raise ValueError(f"augmentation needs images [B, C, H, W], got shape {tuple(x.shape)}")
    for k, s in noise_shapes(ops, x.shape[0]).items():
        if k not in noise:
            raise ValueError(f"augmentation noise lacks {k!r}: draw it with augment.draw(rng, B, {','.join(ops)!r})")
        if tuple(noise[k].shape) != s:
            raise ValueError(f"augmentation noise {k!r} has shape {tuple(noise[k].shape)}, expected {s} for a batch "
                             f"of {x.shape[0]}")
    check_probability(p)
    gate = noise["gate"] < torch.as_tensor(p, dtype=noise["gate"].dtype, device=x.device)
    for i, op in enumerate(ops):
        x = torch.where(gate[:, i].reshape(-1, 1, 1, 1), OPS[op].fn(x, noise[op]), x)
    return x


# -- ADA's controller (Karras et al., 2020, sec. 2.4) ---------------------------------------


class AdaState(NamedTuple):
    """ADA's running state (all 0-d tensors): the probability ``p``, the sum of
    ``sign(D(x_real) - threshold)`` and the number of real samples since the last
    adjustment, the number of D updates since then, and the last ``r_t``."""

    p: Tensor
    sign_sum: Tensor
    n_real: Tensor
    n_updates: Tensor
    rt: Tensor


def ada_init(p: float = 0.0, *, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> AdaState:
    """ADA's state at the start of training (``p = 0``: no augmentation yet)."""
    check_probability(p, "ADA's initial p")
    z = torch.zeros((), dtype=dtype, device=device)
    return AdaState(p=z + p, sign_sum=z, n_real=z, n_updates=torch.zeros((), dtype=torch.long, device=device), rt=z)


def ada_update(state: AdaState, real_scores: Tensor, *, target: Prob = 0.6, interval: int = 4,
               speed_images: Prob = 500_000.0, threshold: float = 0.0) -> AdaState:
    """Accumulate ``r_t = E[sign(D(x_real))]`` and, every ``interval`` calls, move
    ``p`` toward keeping ``r_t`` at ``target``. Pure; no data-dependent branch.

    Args:
        state: the current :class:`AdaState`.
        real_scores: D's outputs on the (augmented) real batch, [B] or [B, 1].
        target: the wanted ``r_t`` (0.6 in the paper); ``r_t`` above it means D is
            overconfident on the training images, i.e. overfits, and ``p`` rises.
        interval: D updates between adjustments (4 in the paper).
        speed_images: ``p`` can move from 0 to 1 in this many real images
            (500k in the paper): each adjustment is ``sign(r_t - target) *
            n_images / speed_images``.
        threshold: D's output that separates "real" from "fake" (0 for logits,
            ``loss.threshold`` in general).

    ``p`` stays in [0, 1] (ADA clamps below at 0; a probability above 1 means the
    same as 1). The accumulators restart after each adjustment.
    """
    s = real_scores.detach().reshape(real_scores.shape[0], -1).mean(1).to(state.sign_sum.dtype)
    return ada_accumulate(state, torch.sign(s - threshold).sum(), s.shape[0], target=target, interval=interval,
                          speed_images=speed_images)


def ada_accumulate(state: AdaState, sign_sum: Tensor, n_real: int | Tensor, *, target: Prob = 0.6, interval: int = 4,
                   speed_images: Prob = 500_000.0) -> AdaState:
    """:func:`ada_update` from a batch's ``sum(sign(D(x_real) - threshold))`` and
    its size ``n_real`` (what the ADA part carries from D's loss to after the update)."""
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f"ADA interval must be an int >= 1, got {interval!r}")
    sign_sum = state.sign_sum + sign_sum.to(state.sign_sum.dtype)
    n_real = state.n_real + n_real
    n_updates = state.n_updates + 1
    due = n_updates >= interval
    rt = sign_sum / n_real
    adjust = torch.sign(rt - target) * n_real / speed_images
    p = torch.where(due, torch.clamp(state.p + adjust, 0.0, 1.0), state.p)
    zero = torch.zeros_like(sign_sum)
    return AdaState(
        p=p.to(state.p.dtype),
        sign_sum=torch.where(due, zero, sign_sum),
        n_real=torch.where(due, zero, n_real).to(state.n_real.dtype),
        n_updates=torch.where(due, torch.zeros_like(n_updates), n_updates),
        rt=torch.where(due, rt, state.rt).to(state.rt.dtype),
    )
