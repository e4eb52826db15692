"""Latent consistency regularisation, zCR (Zhao et al., 2021, "Improved
Consistency Regularization for GANs", sec. 3.2), as a part.

A small latent perturbation ``dz ~ N(0, sigma^2)`` should change D's score
little and G's output much:

- D's loss gains ``zcr_dis * E[(D(G(z)) - D(G(z + dz)))^2]`` (G fixed: the
  D term runs G through ``DTerm.g_fn``, whose weights are constants there);
- G's loss gains ``-zcr_gen * E[||G(z) - G(z + dz)||^2]`` (G differentiable:
  ``GTerm.g_fn``).

The paper's settings: ``zcr_dis = 5``, ``zcr_gen = 0.5``, ``sigma = 0.03``.
Written with the public API only (``ganfn.parts``).
"""
from __future__ import annotations

from torch import Tensor

from ganfn.parts import Ctx, Draw, DTerm, GTerm, Hyper, Part


def zcr(dis: float | Tensor = 5.0, gen: float | Tensor = 0.5, *, sigma: float = 0.03) -> Part:
    """zCR as a part named ``zcr`` (hyperparameters ``zcr_dis``, ``zcr_gen``;
    draws ``z``, ``dz`` for D updates and ``dz`` for G updates)."""

    def noise_d(draw: Draw) -> dict[str, Tensor]:
        return {"z": draw.normal(*draw.latent_shape), "dz": sigma * draw.normal(*draw.latent_shape)}

    def noise_g(draw: Draw) -> dict[str, Tensor]:
        return {"dz": sigma * draw.normal(*draw.latent_shape)}

    def d_term(x: DTerm, ctx: Ctx) -> tuple[Tensor, dict]:
        z = ctx.noise["z"].to(x.fake.dtype)
        fake, moved = x.g_fn(z), x.g_fn(z + ctx.noise["dz"].to(z.dtype))
        gap = (x.d_fn_fake(fake) - x.d_fn_fake(moved)).square().mean()
        return ctx.hp["zcr_dis"] * gap, {"metrics": {"d_gap": gap.detach()}}

    def g_term(x: GTerm, ctx: Ctx) -> tuple[Tensor, dict]:
        moved = x.g_fn(x.z + ctx.noise["dz"].to(x.z.dtype))
        dist = (x.fake - moved).reshape(x.fake.shape[0], -1).square().sum(1).mean()
        return -ctx.hp["zcr_gen"] * dist, {"metrics": {"g_dist": dist.detach()}}

    return Part("zcr", {"zcr_dis": Hyper(dis), "zcr_gen": Hyper(gen)}, noise_d=noise_d, noise_g=noise_g,
                d_term=d_term, g_term=g_term)
