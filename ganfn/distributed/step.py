"""The data-parallel step: the one orchestration (:func:`ganfn.step.run`) with an all-reduce as its reduce hook."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .. import step as _step
from ..gan import GAN
from ..inputs import check_step_inputs
from ..state import DAux, GAux, Noise, TrainState
from .collectives import all_reduce_mean

__all__ = ["make_reduce", "make_train_step", "train_step"]


# -- the data-parallel step -------------------------------------------------------------------------


def _float_only(buffers: dict) -> dict:
    return {k: v for k, v in buffers.items() if v.is_floating_point()}


def make_reduce(*, sync_buffers: bool = True, group: Any = None) -> _step.Reduce:
    """The reduce hook of :func:`ganfn.step.run` for data parallelism: each
    network's loss, gradients, the aux's loss parts, accuracies and parts' aux
    (batch means) and, with ``sync_buffers``, float buffers, averaged across
    ranks by ONE flattened ``all_reduce``. The fake batch stays per rank."""

    def reduce(net: str, loss: Tensor, grads: dict, aux: DAux | GAux):
        bufs = {"d": _float_only(aux.d_buffers), "g": _float_only(aux.g_buffers)} if sync_buffers else {}
        if net == "d":
            assert isinstance(aux, DAux)
            scal = (aux.d_loss_real, aux.d_loss_fake, aux.penalty, aux.d_acc_real, aux.d_acc_fake, aux.parts)
            loss, grads, scal, bufs = all_reduce_mean((loss, grads, scal, bufs), group)
            aux = aux._replace(**dict(zip(("d_loss_real", "d_loss_fake", "penalty", "d_acc_real", "d_acc_fake",
                                           "parts"), scal, strict=True)))
        else:
            loss, grads, parts, bufs = all_reduce_mean((loss, grads, aux.parts, bufs), group)
            aux = aux._replace(parts=parts)
        if sync_buffers:
            aux = aux._replace(d_buffers={**aux.d_buffers, **bufs["d"]}, g_buffers={**aux.g_buffers, **bufs["g"]})
        return loss, grads, aux

    return reduce


def make_train_step(gan: GAN, *, stacked: bool = False, shared_data: bool = True, sync_buffers: bool = True,
                    isolate: bool = True, group: Any = None) -> Callable[[TrainState, Tensor, Noise],
                                                                         tuple[TrainState, dict[str, Tensor]]]:
    """A data-parallel ``step(state, real, noise) -> (state, metrics)``.

    It is ``gan.train_step``'s orchestration (:func:`ganfn.step.run`) with the
    reduce hook of :func:`make_reduce` between each network's gradients and its
    pure optimizer update. ``real`` and ``noise`` are this rank's shard
    (:func:`next_shard`, :func:`draw_noise_shard`). Metrics are the global ones,
    identical on every rank, with the keys of ``gan.train_step``'s metrics.

    Args:
        stacked: ``state`` is a stacked ensemble (leaves ``[S, ...]``), noise is
            stacked (``[S, n_critic, B, ...]``); each primitive is vmapped and all
            members' gradients share the one buffer per network per update.
            Metrics are ``[S]`` tensors.
        shared_data: (stacked only) ``real`` is one batch for every member;
            otherwise it has a leading member axis.
        sync_buffers: average float buffers (BatchNorm running statistics)
            across ranks after each update, keeping the whole state identical on
            all ranks. Batch statistics in the forward pass are per rank.
        isolate: (stacked only) freeze members whose losses or gradient norms
            become non-finite (``ganfn.step.freeze_diverged``, as ``ganfn.ensemble``).
        group: the process group (default: the whole world).
    """
    if not isinstance(gan, GAN):
        raise TypeError(f"make_train_step needs a ganfn.GAN, got {type(gan).__name__}")
    lift = (lambda fn, in_dims=0: torch.func.vmap(fn, in_dims=in_dims)) if stacked else None
    ops = _step.ops(gan, lift, shared_data=shared_data)
    reduce = make_reduce(sync_buffers=sync_buffers, group=group)
    real_axis = 0 if (not stacked or shared_data) else 1  # where n_critic sits in real
    noise_axis = 1 if stacked else 0

    def step(state: TrainState, real: Tensor, noise: Noise) -> tuple[TrainState, dict[str, Tensor]]:
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a ganfn.TrainState, got {type(state).__name__}")
        if not stacked:
            check_step_inputs(gan, state, real, noise)
        elif state.step.dim() != 1:
            raise ValueError("stacked=True needs a stacked state (ganfn.ensemble.init_many / stack)")
        new, metrics = _step.run(ops, state, real, noise, reduce=reduce, real_axis=real_axis, noise_axis=noise_axis)
        if not stacked:
            return new, metrics
        if isolate:
            return _step.freeze_diverged(state, new, metrics)
        return new, {**metrics, "diverged": _step.frozen(new)}

    return step


def train_step(
    gan: GAN, state: TrainState, real: Tensor, noise: Noise, *, group: Any = None
) -> tuple[TrainState, dict[str, Tensor]]:
    """One data-parallel step of an unstacked state (``make_train_step(gan)``
    called once; build the step once in a loop instead)."""
    return make_train_step(gan, group=group)(state, real, noise)
