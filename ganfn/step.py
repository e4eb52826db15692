"""The one orchestration of a train step: ``n_critic`` D updates, then ``n_gen`` G updates.

A step is built from four pure primitives (``d_grads``, ``d_update``, ``g_grads``,
``g_update``) and a *reduce* hook between each network's gradients and its
update: the identity in one process, an all-reduce across ranks under
``torch.distributed`` (:mod:`ganfn.distributed`). ``GAN.train_step``, the
vmapped ensemble step and the data-parallel step all run :func:`run`.

Also here: the one definition of a diverged member (:func:`finite`) and the one
freeze of diverged members (:func:`freeze_diverged`), used by ensembles and
data-parallel runs alike.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .errors import WATCHED
from .state import NetState, Noise, TrainState
from .tree import global_norm, tree_map, tree_where
from .tree import replace as _replace

__all__ = ["Ops", "ops", "run", "Reduce", "finite", "frozen", "freeze", "freeze_diverged", "keep", "grad_norm_metrics",
           "part_metrics"]

# reduce(net, loss, grads, aux) -> (loss, grads, aux); net is "d" or "g".
Reduce = Callable[[str, Tensor, Any, Any], tuple[Tensor, Any, Any]]


def grad_norm_metrics(net: str, grads: Any, optimizer: Any, opt_state: dict) -> dict[str, Tensor]:
    """``{net}_grad_norm``; with a loss-scaling optimizer the norm of the unscaled
    gradients, 0 on an overflow step (which the optimizer skips), plus ``{net}_loss_scale``."""
    norm = global_norm(grads)
    if optimizer.loss_scale is None:
        return {f"{net}_grad_norm": norm}
    scale = optimizer.loss_scale(opt_state)
    norm = norm / scale.to(norm.dtype)
    return {f"{net}_grad_norm": torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm)),
            f"{net}_loss_scale": scale}


def keep(skip: Tensor, old: TrainState, new: TrainState, net: str) -> TrainState:
    """``new`` with network ``net``'s parameters and optimizer state and every
    part's state taken from ``old`` where ``skip`` (0-d, or [S] for stacked
    states): a skipped update. Buffers advance (the forward passes ran)."""
    o, n = getattr(old, net), getattr(new, net)
    kept = NetState(tree_where(skip, o.params, n.params), n.buffers, tree_where(skip, o.opt, n.opt))
    return _replace(new, **{net: kept, "parts": tree_where(skip, old.parts, new.parts)})


class Ops(NamedTuple):
    """The primitives :func:`run` composes (possibly vmapped). ``d_skip``/``g_skip``
    are None when no part gates updates."""

    d_grads: Callable
    d_update: Callable
    d_metrics: Callable
    d_skip: Callable | None
    g_grads: Callable
    g_update: Callable
    g_metrics: Callable
    g_skip: Callable | None
    lrs: Callable
    n_critic: int
    n_gen: int
    g_real: bool = False  # g_grads also takes the last D update's real batch (relativistic losses)


def ops(gan: Any, lift: Callable[..., Callable] | None = None, *, shared_data: bool = True) -> Ops:
    """``gan``'s primitives for :func:`run`; ``lift(fn, in_dims)`` wraps each
    (``torch.func.vmap`` for a stacked state whose primitives run one by one)."""
    lift = lift or (lambda fn, in_dims=0: fn)

    def d_metrics(loss, grads, aux, state):
        return {**part_metrics(aux.parts), "d_loss": loss, "d_loss_real": aux.d_loss_real,
                "d_loss_fake": aux.d_loss_fake, "penalty": aux.penalty,
                "d_acc_real": aux.d_acc_real, "d_acc_fake": aux.d_acc_fake,
                **grad_norm_metrics("d", grads, gan.d_optimizer, state.d.opt)}

    def g_metrics(loss, grads, aux, state):
        return {**part_metrics(aux.parts), "g_loss": loss,
                **grad_norm_metrics("g", grads, gan.g_optimizer, state.g.opt)}

    def lrs(state):  # the end-of-step readings: learning rates and the parts' declared scalars
        return {"lr_d": gan.d_optimizer.lr(state.d.opt), "lr_g": gan.g_optimizer.lr(state.g.opt), **gan.scalars(state)}

    return Ops(
        d_grads=lift(gan.d_grads, in_dims=(0, 0 if not shared_data else None, 0)),
        d_update=lift(gan.d_update), d_metrics=lift(d_metrics),
        d_skip=lift(gan.d_skip) if gan.gates_d else None,
        g_grads=(lift(gan.g_grads, in_dims=(0, 0, 0 if not shared_data else None)) if gan.loss.g_needs_real
                 else lift(gan.g_grads)),
        g_update=lift(gan.g_update), g_metrics=lift(g_metrics),
        g_skip=lift(gan.g_skip) if gan.gates_g else None,
        lrs=lift(lrs), n_critic=gan.n_critic, n_gen=gan.n_gen, g_real=gan.loss.g_needs_real,
    )


def part_metrics(parts_aux: dict[str, Any]) -> dict[str, Tensor]:
    """The step metrics parts report: ``"<part>/<key>"`` for each entry of the
    ``"metrics"`` dict in a part's loss-term aux."""
    return {f"{name}/{k}": v for name, a in parts_aux.items() if isinstance(a, dict)
            for k, v in a.get("metrics", {}).items()}


def _mean(xs: Sequence[dict]) -> dict:
    if len(xs) == 1:
        return dict(xs[0])
    # A part's metric is NaN on updates where it was not computed (a lazy
    # penalty): those are left out of its mean. The core metrics keep NaN,
    # which is how a diverged update shows.
    return {k: (torch.nanmean if "/" in k else torch.mean)(torch.stack([x[k] for x in xs]), 0) for k in xs[0]}


def _update(o: Ops, net: str, state: TrainState, out: tuple, reduce: Reduce | None, gate_aux: Any):
    """One update of network ``net`` from its ``(loss, grads, aux)``: reduce, apply,
    measure, and undo it where a part's gate (seeing ``gate_aux``) says skip."""
    loss, grads, aux = out if reduce is None else reduce(net, *out)
    d = net == "d"
    new = (o.d_update if d else o.g_update)(state, grads, aux)
    m = (o.d_metrics if d else o.g_metrics)(loss, grads, aux, state)
    gate = o.d_skip if d else o.g_skip
    if gate is not None:
        skip = gate(state, aux if d else gate_aux)
        new, m[f"{net}_skipped"] = keep(skip, state, new, net), skip.to(loss.dtype)
    return new, m, aux


def run(o: Ops, state: TrainState, real: Any, noise: Noise, *, reduce: Reduce | None = None,
        real_axis: int = 0, noise_axis: int = 0) -> tuple[TrainState, dict[str, Tensor]]:
    """One train step: ``o.n_critic`` D updates (update ``i`` sees ``real`` (images,
    or an (images, labels) pair) indexed
    ``i`` on ``real_axis`` when ``n_critic > 1``, and ``noise.d`` indexed ``i`` on
    ``noise_axis``), then ``o.n_gen`` G updates, each ``grads -> reduce -> update``.
    A part's gate skips an update (:func:`keep`; G's gate sees the last D update's
    aux). Returns the new state (step + 1) and the metrics: each update's values
    averaged over the step's updates."""
    d_ms, g_ms, d_aux = [], [], None
    for i in range(o.n_critic):
        r = real if o.n_critic == 1 else tree_map(lambda x, i=i: x.select(real_axis, i), real)
        out = o.d_grads(state, r, tree_map(lambda x, i=i: x.select(noise_axis, i), noise.d))
        state, m, d_aux = _update(o, "d", state, out, reduce, None)
        d_ms.append(m)
    for j in range(o.n_gen):
        ng = tree_map(lambda x, j=j: x.select(noise_axis, j), noise.g)
        out = o.g_grads(state, ng, r) if o.g_real else o.g_grads(state, ng)
        state, m, _ = _update(o, "g", state, out, reduce, d_aux)
        g_ms.append(m)
    metrics = {**_mean(d_ms), **_mean(g_ms), **o.lrs(state)}
    return _replace(state, step=state.step + 1), metrics


def finite(metrics: dict[str, Tensor]) -> Tensor:
    """True (per member: a 0-d or [S] bool tensor) while every watched metric
    (``ganfn.errors.WATCHED``: the losses and gradient norms) is finite. The one
    definition of "not diverged"."""
    return torch.stack([torch.isfinite(metrics[k]) for k in WATCHED if k in metrics]).all(0)


def frozen(state: TrainState) -> Tensor:
    """Bool tensor (``state.step``'s shape: [] or [S]): the member is frozen, i.e.
    its ``diverged_at`` is set. A frozen member's train step (ensemble,
    data-parallel) keeps its state unchanged."""
    return state.diverged_at >= 0


def freeze(state: TrainState, members: Tensor) -> TrainState:
    """``state`` with the members where ``members`` (bool, shaped like
    ``state.step``) is True frozen at their current step, exactly as a member
    whose numbers turned non-finite is frozen; already frozen members keep their
    ``diverged_at``. Pure, no host synchronisation."""
    members = members.to(device=state.diverged_at.device, dtype=torch.bool)
    if members.shape != state.diverged_at.shape:
        raise ValueError(f"freeze: the member mask has shape {tuple(members.shape)} but the state's members are "
                         f"{tuple(state.diverged_at.shape)}")
    return _replace(state, diverged_at=torch.where(members & ~frozen(state), state.step, state.diverged_at))


def freeze_diverged(old: TrainState, new: TrainState, metrics: dict[str, Tensor], *,
                    lazy: bool = False) -> tuple[TrainState, dict[str, Tensor]]:
    """The step's result with diverged members frozen: a member whose metrics are
    not :func:`finite`, or that was :func:`frozen` before, keeps ``old`` (every
    tensor, step count included), and one that diverges now is :func:`freeze`-d
    at ``old.step``. Works per member under vmap (0-d) and on stacked states
    ([S]) alike; no data-dependent control flow unless ``lazy``, which skips the
    leaf-wise select when every member is healthy (a host sync: eager CPU only).
    Adds ``metrics["diverged"]``."""
    ok_now = finite(metrics)
    ok = ok_now & ~frozen(old)
    if not (lazy and bool(ok.all())):
        new = tree_where(ok, new, old)
    out = _replace(new, diverged_at=freeze(old, ~ok_now).diverged_at)
    return out, {**metrics, "diverged": frozen(out)}
