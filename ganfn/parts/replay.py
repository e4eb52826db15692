"""A replay buffer of past generated samples shown to D (Shrivastava et al., 2017)."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Ctx, InitCtx, Part

__all__ = ["replay"]


def replay(size: int, fraction: float = 0.5) -> Part:
    """Keep the last ``size`` fake samples D saw; on each D update replace the first
    ``round(fraction * B)`` of the fake batch with samples drawn uniformly from the
    buffer (once it holds any). State: ``{"samples": [size, *sample], "count"}``.
    Draws ``{"u": [n_critic, B]}`` (the buffer indices). A skipped D update writes
    nothing."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"replay size must be an int >= 1, got {size!r}")
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"replay fraction must be in [0, 1], got {fraction!r}")

    def init(ctx: InitCtx) -> dict:
        return {"samples": torch.zeros(size, *ctx.sample_shape, dtype=ctx.dtype, device=ctx.device),
                "count": torch.zeros((), dtype=torch.int64, device=ctx.device)}

    def fake_for_d(fake: Tensor, ctx: Ctx) -> Tensor:
        B = fake.shape[0]
        filled = torch.clamp(ctx.state["count"], max=size)
        idx = torch.clamp((ctx.noise["u"] * filled).long(), max=size - 1)
        # Only the first `fraction` of the batch, and only once the buffer holds samples.
        use = (torch.arange(B, device=fake.device) < int(round(fraction * B))) & (filled > 0)
        old = ctx.state["samples"][idx]
        return torch.where(use.reshape(B, *([1] * (fake.dim() - 1))), old, fake)

    def after_d(d_params, ctx: Ctx, aux):
        st, fake = ctx.state, aux.fake
        n = min(fake.shape[0], size)
        pos = (st["count"] + torch.arange(n, device=fake.device)) % size
        samples = st["samples"].index_copy(0, pos, fake[:n].to(st["samples"].dtype))
        return d_params, {"samples": samples, "count": st["count"] + n}

    return Part("replay", noise_d=lambda draw: {"u": draw.uniform()}, init=init, fake_for_d=fake_for_d, after_d=after_d)
