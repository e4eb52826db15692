"""The logger interface every experiment tracker implements, and the helpers they share.

A run logs through one :class:`Logger`; ``ganfn.loop.fit`` never names a
tracker. A logger serves a single run (``members=None``) or a stacked run of S
members: then every scalar has a leading member axis and there is one image
and one parameter dict per member.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Logger", "Tracker", "Fanout", "fanout", "member_scalars", "plain_params", "failure"]


@runtime_checkable
class Logger(Protocol):
    """What a run tells its trackers. Every method may be called any number of times, in step order."""

    def log_params(self, params: Sequence[Mapping[str, Any]]) -> None:
        """The settings of each member (one dict per member; a single run: one dict), once, at the start."""

    def log_scalars(self, step: int, values: Mapping[str, Tensor | float | Sequence[float]]) -> None:
        """Scalars at ``step``: each value 0-d, or ``[S]`` for a stacked run (member i's is ``values[k][i]``).
        Non-finite values are not logged."""

    def log_images(self, step: int, name: str, images: Sequence[Tensor]) -> None:
        """One ``[C, H, W]`` image in [0, 1] per member, under ``name`` at ``step``."""

    def log_summary(self, figures: Sequence[Mapping[str, float]]) -> None:
        """Each member's final figures (the quality figures the run ends with)."""

    def log_artifact(self, path: str | os.PathLike) -> None:
        """A file the whole run leaves (a figure, ``samples.png``, ``metrics.json``)."""

    def close(self) -> None:
        """Flush and finish; nothing is logged after this. When training fails, ``fit``
        calls it while the exception is being handled, so ``sys.exc_info()`` tells a
        tracker to mark its run as failed (the MLflow and W&B loggers do)."""


#: ``tracker(run_dir, members) -> Logger``: how ``fit`` makes a tracker's logger once the run starts writing.
Tracker = Callable[[Path, "int | None"], Logger]


def member_scalars(values: Mapping[str, Any], members: int | None) -> list[dict[str, float]]:
    """``values`` split per member (one dict for a single run), finite values only."""
    n = 1 if members is None else members
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for name, v in values.items():
        t = torch.as_tensor(v).detach().reshape(-1).double().cpu()
        for i in range(n):
            x = float(t[i] if t.numel() > 1 else t[0])
            if math.isfinite(x):
                out[i][name] = x
    return out


def failure() -> str | None:
    """How the run a logger is closing ended, read from the exception in flight:
    None when none is (the run finished), ``"killed"`` for an interrupt
    (``KeyboardInterrupt``, ``SystemExit``), ``"failed"`` for any other error."""
    error = sys.exc_info()[1]
    if error is None:
        return None
    return "killed" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "failed"


def plain_params(params: Mapping[str, Any]) -> dict[str, int | float | str | bool]:
    """Parameters as trackers store them: numbers, strings and booleans as they
    are, None as ``"None"``, anything else as its text."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}


class Fanout:
    """A :class:`Logger` that passes every call to each of ``loggers`` in turn."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def log_params(self, params: Sequence[Mapping[str, Any]]) -> None:
        for lg in self.loggers:
            lg.log_params(params)

    def log_scalars(self, step: int, values: Mapping[str, Tensor | float | Sequence[float]]) -> None:
        for lg in self.loggers:
            lg.log_scalars(step, values)

    def log_images(self, step: int, name: str, images: Sequence[Tensor]) -> None:
        for lg in self.loggers:
            lg.log_images(step, name, images)

    def log_summary(self, figures: Sequence[Mapping[str, float]]) -> None:
        for lg in self.loggers:
            lg.log_summary(figures)

    def log_artifact(self, path: str | os.PathLike) -> None:
        for lg in self.loggers:
            lg.log_artifact(path)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def fanout(loggers: Sequence[Logger]) -> Logger:
    """One logger for several: ``loggers[0]`` itself when there is only one."""
    return loggers[0] if len(loggers) == 1 else Fanout(loggers)
