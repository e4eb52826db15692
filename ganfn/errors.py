"""Errors ganfn raises, and the host-side finiteness check for step metrics."""
from __future__ import annotations

import math
from typing import Mapping

from torch import Tensor

__all__ = ["NonFiniteLossError", "check_finite", "WATCHED"]

# The one definition of "diverged": any of these step metrics is NaN or infinite.
# The losses (the penalty is inside d_loss) and the gradient norms (an infinite
# gradient poisons the parameters even when the loss that produced it is finite;
# under loss scaling an overflow step reports a zero norm and is skipped).
WATCHED = ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; ``step`` is the training step it happened at."""

    def __init__(self, step: int, values: Mapping[str, float]):
        self.step = step
        self.values = dict(values)
        bad = ", ".join(f"{k}={v}" for k, v in self.values.items())
        super().__init__(f"non-finite loss at step {step}: {bad}")


def check_finite(metrics: Mapping[str, Tensor], step: int | Tensor) -> None:
    """Raise :class:`NonFiniteLossError` if any :data:`WATCHED` metric is NaN/inf.

    This reads tensor values (a host sync): call it from the loop, not inside a
    step. For stacked runs every member is checked and the message names the
    first bad member.
    """
    step = int(step.reshape(-1)[0]) if isinstance(step, Tensor) else int(step)
    bad = {}
    for k in WATCHED:
        if k not in metrics:
            continue
        vals = metrics[k].detach().reshape(-1).tolist()
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                bad[k if len(vals) == 1 else f"{k}[member {i}]"] = v
    if bad:
        raise NonFiniteLossError(step, bad)
