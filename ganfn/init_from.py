"""Start a run from another run's trained weights (``ganfn train --init-from RUN``).

Weights only: G's and D's parameters and buffers come from the newest
checkpoint of ``RUN`` (or a checkpoint file); the optimizers, the step count
and every part's state start fresh, and parts that copy G's weights at
initialisation (the EMA) copy the loaded ones. It works as a ``weight_init``
of :class:`ganfn.GAN`: ``GAN.init`` re-draws the networks and then loads the
weights over them, so single and vmapped (stacked) runs start alike, every
member from the same weights.

A stacked source run gives member 0, or member ``k`` with ``RUN:k``. Every
parameter and buffer must match by name and shape; a mismatch raises
``ValueError`` naming the tensors (a different ``--width`` or image size, say).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from . import checkpoint

__all__ = ["load_weights", "weights_init_from"]


def _split_member(spec: str) -> tuple[Path, int | None]:
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and head:
        return Path(head), int(tail)
    return Path(spec), None


def load_weights(spec: str | os.PathLike) -> dict[str, dict[str, Tensor]]:
    """``{"g": {name: tensor}, "d": {...}}``: parameters and buffers of G and D
    from ``spec`` (a run directory, whose newest verified checkpoint is used, or
    a checkpoint file; ``:k`` selects member ``k`` of a stacked run)."""
    path, member = _split_member(str(spec))
    if path.is_dir():
        found = checkpoint.CheckpointManager(path / "checkpoints").load_latest()
        if found is None:
            raise FileNotFoundError(f"--init-from {spec}: no checkpoint in {path / 'checkpoints'}")
        ck = found[1]
    elif path.is_file():
        ck = checkpoint.load(path)
    else:
        raise FileNotFoundError(f"--init-from {spec}: no such run directory or checkpoint file")
    state = ck["state"]
    stacked = state.step.dim() == 1
    if member is not None and not stacked:
        raise ValueError(f"--init-from {spec}: member {member} asked for, but {path} is a single run "
                         f"(drop ':{member}')")
    k = member or 0
    if stacked and not 0 <= k < state.step.shape[0]:
        raise ValueError(f"--init-from {spec}: the run has {state.step.shape[0]} members, no member {k}")
    out = {}
    for net in ("g", "d"):
        ns = getattr(state, net)
        tensors = {**ns.params, **ns.buffers}
        out[net] = {n: (t[k] if stacked else t).detach().clone() for n, t in tensors.items()}
    return out


def _copy_into(module: nn.Module, weights: dict[str, Tensor], which: str, source: str) -> None:
    own = dict(module.state_dict())
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    wrong = [f"{n} {tuple(weights[n].shape)} -> {tuple(own[n].shape)}" for n in own
             if n in weights and weights[n].shape != own[n].shape]
    if missing or unexpected or wrong:
        parts = [f"missing in the source: {', '.join(missing[:5])}" if missing else "",
                 f"not in this model: {', '.join(unexpected[:5])}" if unexpected else "",
                 f"shapes differ (source -> this model): {'; '.join(wrong[:5])}" if wrong else ""]
        raise ValueError(f"--init-from {source}: the {which} does not match the source run's "
                         f"({'; '.join(p for p in parts if p)}); build the same model (--model, --width, "
                         "--latent-dim, image size) as the source run")
    with torch.no_grad():
        for n, t in own.items():
            t.copy_(weights[n].to(t.dtype))


def weights_init_from(spec: str | os.PathLike) -> Callable[[nn.Module, torch.Generator], None]:
    """A ``weight_init(module, generator)`` for :class:`ganfn.GAN` that loads
    the source's G weights into the generator (a module with ``latent_dim``)
    and its D weights into the discriminator, checking names and shapes.
    The checkpoint is read once, here."""
    weights = load_weights(spec)

    def init(module: nn.Module, generator: torch.Generator) -> None:
        which = "generator" if hasattr(module, "latent_dim") else "discriminator"
        _copy_into(module, weights["g" if which == "generator" else "d"], which, str(spec))

    return init
