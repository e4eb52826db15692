"""The one range check for hyperparameters, used by every constructor and by ``GAN.init``.

A value may be a Python number or a 0-d tensor. Inside a ``torch.func``
transform or ``torch.compile`` a tensor's value cannot be read, so it is
not checked there (it was checked when the state was made).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor

from .tree import in_transform

__all__ = ["Range", "check_range", "UNBOUNDED"]


class Range(NamedTuple):
    """The valid interval of one hyperparameter (``low_open``: ``low`` excluded)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return "a finite number"
        if self.high == math.inf:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"a finite number in {lo}{self.low:g}, {self.high:g}{hi}"

    def contains(self, v: float) -> bool:
        return (math.isfinite(v) and (v > self.low if self.low_open else v >= self.low)
                and (v < self.high if self.high_open else v <= self.high))


UNBOUNDED = Range()


def check_range(name: str, value: float | Tensor, valid: Range = UNBOUNDED) -> None:
    """Raise ``ValueError`` naming ``name``, its value and its valid range when
    ``value`` is not a finite number inside ``valid``. A schedule
    (:class:`ganfn.schedules.Schedule`) is checked field by field."""
    if hasattr(value, "check_within"):
        value.check_within(name, valid)
        return
    if isinstance(value, Tensor):
        if in_transform(value):
            return
        if value.dim() != 0:
            raise ValueError(f"hyperparameter {name} must be a 0-d tensor or a number, got shape {tuple(value.shape)}")
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"hyperparameter {name} must be a number, got {value!r}")
    if not valid.contains(float(value)):
        raise ValueError(f"hyperparameter {name}={value!r} is outside its valid range: it must be {valid.describe()}")
