"""Regularisers as parts: DRAGAN, the one-sided gradient penalty, bCR, top-k G training.

The math is :mod:`ganfn.regularisers` and :func:`ganfn.losses.top_k`; these wire
it into the step with per-member weights and declared noise. (LeCam and the lazy
R1/R2/GP are :func:`ganfn.penalties.lecam` and ``penalties.r1(..., every=k)``.)
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from .. import augment as _aug
from .. import losses as _losses
from .. import regularisers as _reg
from ..validate import Range
from .base import Ctx, Draw, DTerm, GTerm, Hyper, Part

__all__ = ["dragan", "one_sided_gp", "bcr", "top_k"]

_NONNEG = Range(0.0)


def _per_sample_grads(info) -> None:
    if info.d_batch_stats:
        raise ValueError("this penalty needs per-sample input gradients, but the discriminator has batch-normalisation "
                         "layers whose batch statistics mix samples; use LayerNorm or no normalisation in D")


def dragan(weight: float | Tensor = 10.0, *, scale: float = 0.5) -> Part:
    """DRAGAN (Kodali et al., 2017): ``dragan_weight * E[(||grad D(x_hat)|| - 1)^2]``
    at real samples perturbed by ``alpha * scale * std(real) * u``
    (:func:`ganfn.regularisers.dragan_term`). Draws ``u`` [n_critic, B, *sample]
    and ``alpha`` [n_critic, B], uniform in [0, 1)."""

    def noise_d(draw: Draw) -> dict[str, Tensor]:
        return {"u": draw.uniform(*draw.sample_shape), "alpha": draw.uniform()}

    def d_term(x: DTerm, ctx: Ctx):
        return _reg.dragan_term(x.d_fn, x.real, ctx.noise["u"], ctx.noise["alpha"], ctx.hp["dragan_weight"],
                                scale=scale), {}

    return Part("dragan", {"dragan_weight": Hyper(weight, _NONNEG)}, noise_d=noise_d, d_term=d_term,
                check=_per_sample_grads)


def one_sided_gp(weight: float | Tensor = 10.0) -> Part:
    """The one-sided gradient penalty (Petzka et al., 2018):
    ``ogp_weight * E[relu(||grad D(x_hat)|| - 1)^2]`` at WGAN-GP's interpolates
    (:func:`ganfn.regularisers.one_sided_gp_term`). Draws ``eps`` [n_critic, B]."""

    def d_term(x: DTerm, ctx: Ctx):
        return _reg.one_sided_gp_term(x.d_fn, x.real, x.fake, ctx.noise["eps"], ctx.hp["ogp_weight"]), {}

    return Part("one_sided_gp", {"ogp_weight": Hyper(weight, _NONNEG)}, noise_d=lambda draw: {"eps": draw.uniform()},
                d_term=d_term, check=_per_sample_grads)


def bcr(weight_real: float | Tensor = 10.0, weight_fake: float | Tensor = 10.0, *,
        policy: str | Sequence[str] = "translation") -> Part:
    """bCR (Zhao et al., 2020): D's outputs on an image and on its augmented copy
    (``ganfn.augment`` under ``policy``) are pulled together, on real and on fake
    images, with per-member weights ``bcr_real`` / ``bcr_fake`` (10 and 10 in the
    paper). It regularises D only: G's loss is unchanged. Draws one augmentation
    of the real and one of the fake batch per D update."""
    ops = _aug.parse_policy(policy)

    def noise_d(draw: Draw) -> dict[str, Tensor]:
        shapes = _aug.noise_shapes(ops, draw.batch_size)
        return {f"{side}/{k}": draw.uniform(*s[1:]) for side in ("real", "fake") for k, s in shapes.items()}

    def d_term(x: DTerm, ctx: Ctx):
        side = lambda s: {k[len(s) + 1:]: v for k, v in ctx.noise.items() if k.startswith(s + "/")}
        val = _reg.bcr_term(x.d_fn, x.real, x.fake, side("real"), side("fake"), ctx.hp["bcr_real"], ctx.hp["bcr_fake"],
                            policy=ops, real_out=x.d_real, fake_out=x.d_fake)
        return val, {}

    hparams = {"bcr_real": Hyper(weight_real, _NONNEG), "bcr_fake": Hyper(weight_fake, _NONNEG)}
    return Part("bcr", hparams, noise_d=noise_d, d_term=d_term)


def top_k(loss: str | _losses.LossPair, *, steps_per_epoch: int, gamma: float | Tensor = 0.99,
          min_fraction: float | Tensor = 0.5) -> Part:
    """Top-k training of G (Sinha et al., 2020): G's loss is averaged over the
    ``k`` fakes D scores highest only, ``k`` decaying from the batch size by
    ``topk_gamma`` per epoch (``steps_per_epoch`` train steps) to ``topk_min``
    of it (:func:`ganfn.losses.top_k_count`).

    ``loss`` must be the GAN's own loss: the part adds ``top_k(loss) - mean(loss)``
    to G's loss, so the total is the top-k loss (its gradients too). Default
    targets only (``g_target = 1``)."""
    lp = _losses.get(loss)
    if lp.g_needs_real or lp.takes_labels:
        raise ValueError(f"top_k: needs a loss on D's fake outputs alone, got {lp.name}")
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"top_k: steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")

    def g_term(x: GTerm, ctx: Ctx):
        per = lp.g(x.d_fake, reduction="none")
        k = _losses.top_k_count(ctx.step, per.shape[0], steps_per_epoch=steps_per_epoch, gamma=ctx.hp["topk_gamma"],
                                min_fraction=ctx.hp["topk_min"])
        return _losses.top_k(per, x.d_fake, k) - per.mean(), {"k": k.to(per.dtype)}

    hparams = {"topk_gamma": Hyper(gamma, Range(0.0, 1.0)), "topk_min": Hyper(min_fraction, Range(0.0, 1.0))}
    return Part("top_k", hparams, g_term=g_term)
