"""Differentiable augmentation as parts: DiffAugment (fixed p) and ADA (adaptive p).

Both augment what D sees and nothing else: the real and the fake batch of every
D update (``d_inputs``) and the fakes of every G update (``g_inputs``), so G is
trained through the augmentation (Zhao et al., 2020; Karras et al., 2020).
``GAN.sample`` and the sample grids never pass through these hooks. The
operations and ADA's controller are :mod:`ganfn.augment`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .. import augment as _aug
from ..validate import Range
from .base import Ctx, Draw, DTerm, Hyper, InitCtx, Part

__all__ = ["diffaugment", "ada"]


def _noise_fn(ops: tuple[str, ...], sides: Sequence[str]):
    """A noise hook drawing ``augment.noise_shapes`` uniforms for each side
    (``"real"``, ``"fake"``), keyed ``"{side}/{name}"``."""

    def noise(draw: Draw) -> dict[str, Tensor]:
        return {f"{side}/{k}": draw.uniform(*s[1:]) for side in sides
                for k, s in _aug.noise_shapes(ops, draw.batch_size).items()}

    return noise


def _side(noise: dict[str, Tensor], side: str) -> dict[str, Tensor]:
    pre = side + "/"
    return {k[len(pre):]: v for k, v in noise.items() if k.startswith(pre)}


def _hooks(ops: tuple[str, ...], p_of):
    """The input hooks shared by both parts; ``p_of(ctx)`` is this update's p."""

    def d_inputs(real: Tensor, fake: Tensor, ctx: Ctx) -> tuple[Tensor, Tensor]:
        p = p_of(ctx)
        return _aug.apply(real, _side(ctx.noise, "real"), ops, p), _aug.apply(fake, _side(ctx.noise, "fake"), ops, p)

    def g_inputs(fake: Tensor, ctx: Ctx) -> Tensor:
        return _aug.apply(fake, _side(ctx.noise, "fake"), ops, p_of(ctx))

    return dict(noise_d=_noise_fn(ops, ("real", "fake")), noise_g=_noise_fn(ops, ("fake",)), d_inputs=d_inputs,
                g_inputs=g_inputs)


def diffaugment(policy: str | Sequence[str] = "color,translation,cutout", p: float | Tensor = 1.0) -> Part:
    """DiffAugment (Zhao et al., 2020): every operation of ``policy`` applied to
    D's real and fake inputs on D updates and to the fakes on G updates, each to
    each sample with probability ``augment_p`` (a per-member hyperparameter;
    1 is the paper's setting). Images must be [B, C, H, W]."""
    ops = _aug.parse_policy(policy)
    return Part("diffaugment", {"augment_p": Hyper(p, Range(0.0, 1.0))}, **_hooks(ops, lambda ctx: ctx.hp["augment_p"]))


def ada(policy: str | Sequence[str] = "color,translation,cutout", *, target: float | Tensor = 0.6, interval: int = 4,
        speed_images: float | Tensor = 500_000.0, threshold: float = 0.0, p: float = 0.0) -> Part:
    """ADA (Karras et al., 2020): DiffAugment's operations with a probability ``p``
    kept in the state (``state.parts["ada"]["p"]``, one per member; the state is
    the fields of :class:`~ganfn.augment.AdaState` as a dict, which checkpoints) and adapted
    from D's outputs on the augmented real images.

    Every D update adds ``sign(D(x_real) - threshold)`` to a running sum (a zero
    D loss term whose aux carries it); every ``interval`` D updates
    :func:`ganfn.augment.ada_accumulate` moves ``p`` by ``sign(r_t - ada_target) *
    images / ada_speed`` (per-member hyperparameters ``ada_target``, default 0.6,
    and ``ada_speed``, images for ``p`` to go from 0 to 1; the paper uses 500k).
    Use ``threshold = loss.threshold`` for losses whose real/fake boundary is not 0.
    ``p`` after each step is the step metric ``ada/p`` (the part's ``scalars``).
    Images counted per D update are the real batch a D loss term sees (with
    gradient accumulation, one micro-batch).
    """
    ops = _aug.parse_policy(policy)
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f"ADA interval must be an int >= 1, got {interval!r}")
    _aug.check_probability(p, "ADA's initial p")

    def init(ctx: InitCtx) -> dict:
        return _aug.ada_init(p, dtype=torch.float64, device=ctx.device)._asdict()

    def d_term(x: DTerm, ctx: Ctx) -> tuple[Tensor, dict]:
        s = x.d_real.detach().reshape(x.d_real.shape[0], -1).mean(1)
        sign = torch.sign(s - threshold).mean().to(torch.float64)
        return torch.zeros((), dtype=x.d_real.dtype, device=s.device), {"sign": sign,
                                                                        "n": torch.full_like(sign, s.shape[0])}

    def after_d(d_params, ctx: Ctx, aux) -> tuple[dict, dict]:
        a = ctx.aux  # this part's own d_term aux
        new = _aug.ada_accumulate(_aug.AdaState(**ctx.state), a["sign"] * a["n"], a["n"], target=ctx.hp["ada_target"],
                                  interval=interval, speed_images=ctx.hp["ada_speed"])
        return d_params, new._asdict()

    hparams = {"ada_target": Hyper(target, Range(-1.0, 1.0)),
               "ada_speed": Hyper(speed_images, Range(0.0, low_open=True))}
    return Part("ada", hparams, init=init, d_term=d_term, after_d=after_d, scalars=lambda ctx: {"p": ctx.state["p"]},
                **_hooks(ops, lambda ctx: ctx.state["p"]))
