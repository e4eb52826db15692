"""An R1 penalty whose gamma follows a linear schedule, written as a newcomer's part.

R1 (Mescheder et al., 2018) is ``gamma / 2 * E_real[||grad_x D(x)||^2]``.
R3GAN (Huang et al., 2024) moves gamma over training; here it goes linearly
from ``start`` to ``end`` over ``steps`` train steps. The part declares its
hyperparameter as a ``ganfn.schedules.linear`` value: the core stores its end
points per member (``r1_gamma.start``, ``r1_gamma.end``, ...) and hands the
hook the value at the current step, so the hook reads a plain number.
"""
from __future__ import annotations

from torch import Tensor

from ganfn import schedules
from ganfn.parts import Ctx, DTerm, Hyper, Part
from ganfn.penalties import input_grad_norms


def scheduled_r1(start: float = 10.0, end: float = 1.0, steps: int = 1000) -> Part:
    """R1 with ``gamma`` linear from ``start`` to ``end`` over ``steps`` train steps."""

    def d_term(x: DTerm, ctx: Ctx) -> tuple[Tensor, dict]:
        gamma = ctx.hp["r1_gamma"]
        return 0.5 * gamma * input_grad_norms(x.d_fn, x.real).square().mean(), {"metrics": {"gamma": gamma}}

    def check(info) -> None:
        if info.d_batch_stats:
            raise ValueError("scheduled_r1 needs per-sample input gradients: use a discriminator without batch norm")

    return Part("scheduled_r1", {"r1_gamma": Hyper(schedules.linear(start, end, steps))}, d_term=d_term, check=check)
