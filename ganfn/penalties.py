"""Penalties and constraints on the discriminator.

A :class:`Penalty` may add a ``term`` to D's loss (gradient penalty, R1, R2) and
may ``project`` D's parameters after each update (weight clipping). Its weight is
a hyperparameter stored in the training state under ``weight_key`` (so each
ensemble member can have its own) and passed in as a tensor.

Gradients with respect to D's *inputs* are taken with ``torch.func.grad``; when
the D loss is itself differentiated (by ``torch.func.grad`` or autograd) this is
a grad inside a grad, with no ``autograd.grad(create_graph=True)`` on module
state. Per-sample input gradients come from ``grad(sum_i D(x_i))``, valid because
ganfn refuses these penalties for discriminators with batch statistics.

A penalty joins a GAN step as a part (:func:`as_part`): its weight becomes a
per-member hyperparameter, its interpolation weights a declared noise draw, its
term a D loss term and its projection an after-D-update hook. Spectral
normalisation is the part :func:`ganfn.parts.spectral_norm`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from . import regularisers as _reg
from .parts import combinators as _combinators
from .parts.base import Ctx, DTerm, Hyper, InitCtx, Part
from .validate import Range, check_range

DFn = Callable[[Tensor], Tensor]
_NONNEG = Range(0.0)
_POSITIVE = Range(0.0, low_open=True)

__all__ = [
    "Penalty",
    "gradient_penalty",
    "r1",
    "r2",
    "weight_clip",
    "lecam",
    "input_grad_norms",
    "as_part",
    "get",
]


class Penalty(NamedTuple):
    """A D-side regulariser.

    ``term(d_fn, real, fake, eps, weight) -> Tensor`` (0-d) is added to D's loss
    (``None``: no loss term); ``project(d_params, weight) -> d_params`` is applied
    after each D update (``None``: no projection). ``needs_eps``: the term reads
    one uniform random number per sample (interpolation weights), which
    ``GAN.draw_noise`` supplies. ``on_fake``: in a conditional setup the term's
    ``d_fn`` is D with the fake batch's labels (R2); otherwise with the real
    batch's (R1, and the gradient penalty's interpolates, as in conditional
    WGAN-GP implementations). Either way the labels are fixed: the term
    differentiates with respect to the images only.
    """

    name: str
    weight_key: str
    weight: float | Tensor
    term: Callable[..., Tensor] | None = None
    project: Callable[[dict, Tensor], dict] | None = None
    needs_eps: bool = False
    on_fake: bool = False
    every: int | None = None
    """Lazy regularisation: the term runs on every ``every``-th D update only,
    with its weight times ``every`` (``None``: on every update)."""


def input_grad_norms(d_fn: DFn, x: Tensor) -> Tensor:
    """Per-sample L2 norms ``||grad_x D(x_i)||`` for ``x`` of shape [B, ...] -> [B].

    A tiny constant inside the square root keeps the gradient of the norm finite
    where the input gradient is exactly zero.
    """
    g = torch.func.grad(lambda inp: d_fn(inp).sum())(x)
    return torch.sqrt(torch.sum(torch.square(g.reshape(g.shape[0], -1)), dim=1) + 1e-12)


def _broadcast(eps: Tensor, x: Tensor) -> Tensor:
    return eps.reshape(eps.shape[0], *([1] * (x.dim() - 1))).to(x.dtype)


def _gp_term(target: float):
    def term(d_fn: DFn, real: Tensor, fake: Tensor, eps: Tensor, weight: Tensor) -> Tensor:
        e = _broadcast(eps, real)
        x_hat = e * real + (1 - e) * fake
        norms = input_grad_norms(d_fn, x_hat)
        return weight * torch.mean(torch.square(norms - target))

    return term


def _check_every(every: int | None) -> int | None:
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
        raise ValueError(f"every= must be an int >= 1 (StyleGAN2 uses 16 for R1) or None, got {every!r}")
    return every


def gradient_penalty(weight: float | Tensor = 10.0, *, target: float = 1.0, every: int | None = None) -> Penalty:
    """WGAN-GP (Gulrajani et al., 2017): ``weight * E[(||grad D(x_hat)|| - target)^2]``
    at ``x_hat = eps * real + (1 - eps) * fake`` with ``eps ~ U[0, 1]`` per sample,
    supplied explicitly by the noise. Stored under hyperparameter ``gp_weight``.
    ``every=k``: lazily, on every k-th D update with weight ``k * weight``."""
    check_range("gradient_penalty weight", weight, _NONNEG)
    return Penalty("gp", "gp_weight", weight, term=_gp_term(target), needs_eps=True, every=_check_every(every))


def _zero_centred(on_real: bool):
    def term(d_fn: DFn, real: Tensor, fake: Tensor, eps: Tensor, weight: Tensor) -> Tensor:
        x = real if on_real else fake
        return 0.5 * weight * torch.mean(torch.square(input_grad_norms(d_fn, x)))

    return term


def r1(gamma: float | Tensor = 10.0, *, every: int | None = None) -> Penalty:
    """R1 (Mescheder et al., 2018): ``gamma / 2 * E_real[||grad D(x)||^2]``.
    Stored under hyperparameter ``r1_weight``. ``every=k``: lazy R1 (Karras et
    al., 2020, StyleGAN2: ``every=16``), on every k-th D update with weight
    ``k * gamma``; see :func:`ganfn.regularisers.lazy_adam_compensation` for
    StyleGAN2's optimizer compensation."""
    check_range("r1 gamma", gamma, _NONNEG)
    return Penalty("r1", "r1_weight", gamma, term=_zero_centred(True), every=_check_every(every))


def r2(gamma: float | Tensor = 10.0, *, every: int | None = None) -> Penalty:
    """R2 (Mescheder et al., 2018): ``gamma / 2 * E_fake[||grad D(x)||^2]``.
    Stored under hyperparameter ``r2_weight``. ``every=k`` as for :func:`r1`."""
    check_range("r2 gamma", gamma, _NONNEG)
    return Penalty("r2", "r2_weight", gamma, term=_zero_centred(False), every=_check_every(every), on_fake=True)


def weight_clip(clip: float | Tensor = 0.01) -> Penalty:
    """WGAN weight clipping (Arjovsky et al., 2017): after every D update, every D
    parameter is clamped to ``[-clip, clip]``. Stored as ``clip_value``."""
    check_range("weight_clip clip", clip, _POSITIVE)

    def project(d_params: dict, c: Tensor) -> dict:
        return {k: torch.clamp(v, -c.to(v.dtype), c.to(v.dtype)) for k, v in d_params.items()}

    return Penalty("weight_clip", "clip_value", clip, project=project)


_BUILDERS: dict[str, Callable[..., Penalty]] = {
    "gp": gradient_penalty, "wgan-gp": gradient_penalty, "gradient_penalty": gradient_penalty,
    "r1": r1, "r2": r2, "weight_clip": weight_clip, "clip": weight_clip}


def get(spec: str | Penalty, weight: float | None = None) -> Penalty:
    """A penalty by name (``gp``, ``r1``, ``r2``, ``weight_clip``) or itself."""
    if isinstance(spec, Penalty):
        return spec
    key = str(spec).lower().replace("-", "_") if spec != "wgan-gp" else spec
    if key not in _BUILDERS:
        raise ValueError(f"unknown penalty {spec!r}: expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[key]() if weight is None else _BUILDERS[key](weight)


def as_part(p: Penalty | str) -> Part:
    """The penalty as a :class:`~ganfn.parts.Part` named ``p.name``: hyperparameter
    ``p.weight_key``; draws ``{"eps": [n_critic, B]}`` if it needs interpolation
    weights; a D loss term (refused for D with batch statistics: per-sample input
    gradients need samples that do not interact); a projection after each D update."""
    p = get(p)
    key = p.weight_key
    kw: dict = {}
    if p.needs_eps:
        kw["noise_d"] = lambda draw: {"eps": draw.uniform()}
    if p.term is not None:
        term, side = p.term, ("d_fn_fake" if p.on_fake else "d_fn")
        kw["d_term"] = lambda x, ctx: (term(getattr(x, side), x.real, x.fake, ctx.noise.get("eps"), ctx.hp[key]), {})
        kw["check"] = _needs_per_sample_grads
    if p.project is not None:
        project = p.project
        kw["after_d"] = lambda d_params, ctx, aux: (project(d_params, ctx.hp[key]), ctx.state)
    valid = _POSITIVE if p.project is not None else _NONNEG
    part = Part(p.name, {key: Hyper(p.weight, valid)}, **kw)
    if p.every is None:
        return part
    if p.term is None or p.project is not None:
        raise ValueError(f"penalty {p.name!r}: every= applies to loss terms (gp, r1, r2), not to projections")
    # Lazy: the term on every k-th D update times k (parts.every); the metric "<name>/term" shows it where computed.
    return _combinators.every(p.every, part)


def lecam(weight: float | Tensor = 0.3, *, decay: float | Tensor = 0.99, start: int = 0,
          one_sided: bool = True) -> Part:
    """LeCam regularisation (Tseng et al., 2021) as a part named ``lecam``:
    ``lecam_weight * (E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2])``
    (:func:`ganfn.regularisers.lecam_term`), with ``a_real`` / ``a_fake`` moving
    averages (decay ``lecam_decay``) of D's mean outputs kept in the state as a
    dict (the fields of :class:`~ganfn.regularisers.LeCamState`: plain dicts
    checkpoint with ``torch.load(weights_only=True)``). As in the authors' code the averages
    take in the current batch before the term is computed, and follow the batch
    exactly for the first ``start`` D updates. Both weights are per-member
    hyperparameters; the paper's digits-scale setting is 0.3."""

    def init(ctx: InitCtx) -> dict:
        return _reg.lecam_init(dtype=ctx.dtype, device=ctx.device)._asdict()

    def d_term(x: DTerm, ctx: Ctx):
        new = _reg.lecam_update(_reg.LeCamState(**ctx.state), x.d_real, x.d_fake, decay=ctx.hp["lecam_decay"],
                                start=start)
        val = _reg.lecam_term(x.d_real, x.d_fake, new, ctx.hp["lecam_weight"].to(x.d_real.dtype), one_sided=one_sided)
        return val, {"real": new.real, "fake": new.fake}

    def after_d(d_params, ctx: Ctx, aux):
        a = ctx.aux  # this part's own d_term aux
        return d_params, {"real": a["real"], "fake": a["fake"], "count": ctx.state["count"] + 1}

    hparams = {"lecam_weight": Hyper(weight, _NONNEG), "lecam_decay": Hyper(decay, Range(0.0, 1.0))}
    return Part("lecam", hparams, init=init, d_term=d_term, after_d=after_d)


def _needs_per_sample_grads(info) -> None:
    if info.d_batch_stats:
        raise ValueError(
            "gradient penalties (gp, r1, r2) need per-sample input gradients, but the discriminator "
            "has batch-normalisation layers whose batch statistics mix samples; use LayerNorm, "
            "InstanceNorm or no normalisation in D (as WGAN-GP recommends)"
        )
