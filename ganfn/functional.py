"""``nn.Module`` -> pure function of explicit parameter and buffer pytrees.

A user's module is never changed: ``extract`` copies its parameters and buffers
into plain dicts, and ``make_apply`` returns ``apply(params, buffers, *args)``
that runs the module through ``torch.func.functional_call`` and returns the
output together with the *new* buffers (BatchNorm running statistics), so a
forward pass never writes into the state it was given.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
Buffers = dict[str, Tensor]
Apply = Callable[..., tuple[Any, Buffers]]

__all__ = ["extract", "make_apply", "has_batch_stats", "fresh_copies", "Params", "Buffers", "Apply"]


def extract(module: nn.Module) -> tuple[Params, Buffers]:
    """Detached copies of ``module``'s parameters and buffers, keyed by name."""
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in module.named_buffers()}
    return params, buffers


def has_batch_stats(module: nn.Module) -> bool:
    """True when a training-mode forward mixes samples (batch-statistic norms).

    Such a module forbids two shortcuts: one forward over concatenated real and
    fake batches, and per-sample input gradients from ``grad(D(x).sum())``.
    """
    return any(
        isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm))
        for m in module.modules()
    )


def make_apply(module: nn.Module, *, tie_weights: bool | None = None) -> Apply:
    """``apply(params, buffers, *args, train=True) -> (output, new_buffers)``.

    ``train`` selects the module's mode for this call only (the user's module is
    put back in the mode it was in). Buffers are cloned before the call because
    ``functional_call`` lets in-place buffer updates (running statistics) write
    into the tensors it is given; the clones, updated, come back as
    ``new_buffers``.
    """
    if tie_weights is None:
        # Tied-weight bookkeeping costs ~30us a call; only pay it when needed.
        names = {id(p) for _, p in module.named_parameters(remove_duplicate=False)}
        n_all = sum(1 for _ in module.named_parameters(remove_duplicate=False))
        tie_weights = len(names) != n_all

    slots = None if tie_weights else _tensor_slots(module)

    def call(params: Params, buffers: Buffers, args: tuple) -> Any:
        if slots is None or torch.compiler.is_compiling():
            return functional_call(module, (params, buffers), args, tie_weights=tie_weights, strict=False)
        # functional_call's swap, without its per-tensor Module.__setattr__ (~5 us
        # each, a tenth of a small GAN's eager step): the tensors go straight into
        # the owners' _parameters/_buffers dicts and the originals come back after.
        saved = []
        try:
            for owner, key, name in slots:
                new = params.get(name, buffers.get(name))
                if new is not None:
                    saved.append((owner, key, owner[key]))
                    owner[key] = new
            return module(*args)
        finally:
            for owner, key, old in saved:
                owner[key] = old

    def apply(params: Params, buffers: Buffers, *args: Any, train: bool = True) -> tuple[Any, Buffers]:
        new_buffers = {k: v.clone() for k, v in buffers.items()} if (buffers and train) else buffers
        was_training = module.training
        if was_training != train:
            module.train(train)
        try:
            out = call(params, new_buffers, args)
        finally:
            if was_training != train:
                module.train(was_training)
        return out, new_buffers

    return apply


def _tensor_slots(module: nn.Module) -> list[tuple[dict, str, str]]:
    """``(owner dict, key, full name)`` of every parameter and buffer of ``module``:
    where ``functional_call`` would put the tensor called ``full name``."""
    out: list[tuple[dict, str, str]] = []
    for prefix, m in module.named_modules():
        for owner in (m._parameters, m._buffers):
            out.extend((owner, k, f"{prefix}.{k}" if prefix else k) for k, v in owner.items() if v is not None)
    return out


def fresh_copies(modules: Sequence[nn.Module], seed: int,
                 weight_init: Callable[[nn.Module, torch.Generator], None] | None = None) -> list[nn.Module]:
    """Deep copies of ``modules`` with parameters re-drawn from ``seed``: each
    submodule's ``reset_parameters()`` under ``torch.manual_seed(seed)``, then
    ``weight_init(module, generator)`` with a generator seeded ``seed``. The
    global RNG is restored afterwards, so the caller's stream is left as it was."""
    copies = [copy.deepcopy(m) for m in modules]
    devices = sorted({t.device.index or 0 for m in copies for t in m.parameters() if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        for net in copies:
            for m in net.modules():
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
            if weight_init is not None:
                weight_init(net, gen)
    return copies
