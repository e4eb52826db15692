"""How far vmapped members drift from their single runs, parameter by parameter.

:func:`ganfn.testing.assert_vmap_equivalent` answers yes or no; this answers
*where*: after ``steps`` steps, the largest absolute difference of every G and
D parameter between member ``i`` of a ``torch.func.vmap``-ed run and member
``i`` run alone, on the same inputs. A batched kernel rounds differently from
the single one (about 1e-7 in float32); SGD carries that round-off along, but
Adam divides each step by the root of the squared-gradient average, so a
parameter whose true gradient is zero (a bias right before a normalisation
layer) takes full-size steps in the direction of its round-off, differently in
each run. Such a parameter shows up here as the worst leaf by orders of
magnitude.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .checks import single_and_vmapped_runs

__all__ = ["assert_no_member_drift", "dead_parameters", "member_drift"]


def member_drift(gan: Any, seeds: Sequence[int], steps: int = 2, *, batch_size: int = 4,
                 data: Callable[[int, torch.Generator], Any] | None = None) -> dict[str, float]:
    """``{"g.<name>" / "d.<name>": max |vmapped - single|}`` over the members,
    for every parameter of G and D after ``steps`` train steps (``n_critic`` 1).

    Member ``i`` is ``gan.init(seeds[i])`` with noise from a generator seeded
    ``seeds[i]`` and data ``data(batch_size, generator seeded seeds[i] + 1)``
    (standard normal samples by default), as in ``assert_vmap_equivalent``.
    Sort the result by value to find the leaf that drifts.
    """
    if getattr(gan, "n_critic", 1) != 1:
        raise ValueError("member_drift compares n_critic=1 setups; build the GAN with n_critic=1")
    data = data or (lambda n, g: torch.randn(n, *gan.sample_shape, generator=g))
    singles, _, vmapped, _ = single_and_vmapped_runs(gan, seeds, steps, batch_size=batch_size, data=data)
    out: dict[str, float] = {}
    for net in ("g", "d"):
        for k in getattr(singles[0], net).params:
            diffs: list[Tensor] = [(getattr(a, net).params[k] - getattr(b, net).params[k]).abs().max()
                                   for a, b in zip(singles, vmapped, strict=True)]
            out[f"{net}.{k}"] = float(torch.stack(diffs).max())
    return out


def assert_no_member_drift(gan: Any, seeds: Sequence[int], steps: int = 2, *, atol: float = 1e-5,
                           batch_size: int = 4, data: Callable[[int, torch.Generator], Any] | None = None) -> None:
    """Raise ``AssertionError`` naming the worst parameter when any G or D parameter of
    a vmapped member differs from its single run by ``atol`` or more after ``steps``
    train steps (:func:`member_drift`, same arguments)."""
    drift = member_drift(gan, seeds, steps, batch_size=batch_size, data=data)
    worst = max(drift, key=lambda k: drift[k])
    if not drift[worst] < atol:
        raise AssertionError(f"{worst} drifts by {drift[worst]:.2e} (tolerance {atol:.0e}): a vmapped member "
                             "left its single run; a parameter with a zero true gradient (see dead_parameters) "
                             "does this under Adam")


def dead_parameters(net: nn.Module, *inputs: Tensor, rel: float = 1e-9, seed: int = 0) -> list[str]:
    """Names of ``net``'s parameters whose true gradient is zero: in float64, the
    gradient of a fixed random projection of ``net(*inputs)`` is below ``rel``
    times the largest parameter gradient (a zero true gradient, such as a bias
    right before a normalisation layer, shows up at round-off level, ~1e-16).

    Runs on a float64 copy; ``net`` is not changed. A parameter that is zero at
    initialisation and silences others (a fix-up residual branch) makes them
    dead too: perturb such weights first."""
    net = copy.deepcopy(net).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}
    args = tuple(t.double() if t.is_floating_point() else t for t in inputs)

    def call(p: dict[str, Tensor]) -> Tensor:  # fresh buffers: batch norm writes its statistics in place
        return functional_call(net, (p, {k: v.clone() for k, v in buffers.items()}), args)

    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(call(params).shape, generator=gen, dtype=torch.float64)
    grads = torch.func.grad(lambda p: (call(p) * weights).sum())(params)
    norms = {k: float(g.norm()) for k, g in grads.items()}
    top = max(norms.values(), default=0.0)
    return [k for k, v in norms.items() if v <= rel * top]
