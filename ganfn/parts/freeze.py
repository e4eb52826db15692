"""Freeze part of D: its first blocks keep their weights (StyleGAN2-ADA's
``--freezed``; Mo et al., 2020, "Freeze the Discriminator"), the usual way to
fine-tune a trained GAN on a small data set (``ganfn train --init-from RUN``)."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .base import Ctx, InitCtx, Part

__all__ = ["d_block_prefixes", "freeze_d"]


def _frozen_names(d_params: dict[str, Tensor], prefixes: tuple[str, ...]) -> list[str]:
    names = [k for k in d_params if any(k == p or k.startswith(p + ".") for p in prefixes)]
    unused = [p for p in prefixes if not any(k == p or k.startswith(p + ".") for k in d_params)]
    if unused:
        raise ValueError(f"freeze_d: no discriminator parameter under {', '.join(map(repr, unused))}; "
                         f"D's parameters start with: {', '.join(sorted({k.split('.')[0] for k in d_params}))}")
    return names


def freeze_d(prefixes: Sequence[str], *, name: str = "freeze_d") -> Part:
    """D's parameters named ``prefix`` or ``prefix.*`` (names as in
    ``named_parameters``) keep their initial values (those ``GAN.init`` gives,
    the loaded ones with ``--init-from``): after every D update they are set
    back. Adam's moments still see their gradients, which nothing applies.
    State: the frozen values. A prefix that names no parameter raises
    ``ValueError`` at ``gan.init``. :func:`d_block_prefixes` gives the
    prefixes of the first k blocks of ganfn's discriminators."""
    pre = tuple(str(p) for p in prefixes)
    if not pre:
        raise ValueError("freeze_d needs at least one parameter-name prefix")

    def init(ctx: InitCtx) -> dict[str, Tensor]:
        return {k: ctx.d_params[k].clone() for k in _frozen_names(ctx.d_params, pre)}

    def after_d(d_params: dict[str, Tensor], ctx: Ctx, aux) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return {**d_params, **ctx.state}, ctx.state

    return Part(name, init=init, after_d=after_d)


def d_block_prefixes(discriminator, k: int) -> list[str]:
    """Parameter-name prefixes of the first ``k`` blocks (from the input) of a
    ganfn discriminator: the R3GAN stages (with the input conv and the width
    changes after them), the StyleGAN2 resolutions (fromRGB with the first),
    or the ResNet's ``blocks``."""
    if k < 1:
        raise ValueError(f"k (blocks to freeze) must be >= 1, got {k}")
    kind = type(discriminator).__name__
    if kind == "R3GANDiscriminator":
        n = len(discriminator.stages)
        return ["inp"] + [f"stages.{i}" for i in range(min(k, n))] + [f"widen.{i}" for i in range(min(k, n - 1))
                                                                      if len(list(discriminator.widen[i].parameters()))]
    if kind == "StyleGAN2Discriminator":
        n = len(discriminator.conv0)
        skips = [f"skip.{i}" for i in range(min(k, n))] if discriminator.residual else []
        return ["from_rgb"] + [f"conv{j}.{i}" for i in range(min(k, n)) for j in (0, 1)] + skips
    if hasattr(discriminator, "blocks"):
        return [f"blocks.{i}" for i in range(min(k, len(discriminator.blocks)))]
    raise ValueError(f"d_block_prefixes knows R3GAN, StyleGAN2 and ResNet discriminators, not {kind}: "
                     "pass freeze_d the parameter-name prefixes yourself")
