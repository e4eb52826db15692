"""The MLflow :class:`~ganfn.loggers.Logger` (``ganfn train --mlflow``; needs ``pip install 'ganfn[mlflow]'``).

A single run is one MLflow run. A stacked run (seeds, a sweep, a population) is
a parent run holding the sweep's settings and files, with one nested child run
per member (MLflow's ``mlflow.parentRunId`` tag) holding that member's
settings, scalars, sample grids and final figures.

Where: ``MLFLOW_TRACKING_URI`` when set, else a file store in
``<run-dir>/mlruns`` (no server, no database; MLflow 3 keeps its file store in
maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which this default sets).
MLflow allows only letters, digits and ``_ - . / : `` and spaces in names: other
characters become ``_`` (``FD-LeNet(digits)`` is logged as ``FD-LeNet_digits_``).
A resumed run (``--resume``) logs as a new MLflow run with the same name.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import Tensor

from .base import failure, member_scalars, plain_params

__all__ = ["MLflowLogger", "tracking_uri", "key"]

_BAD = re.compile(r"[^/\w.\- :]")
_BATCH = 100  # MLflow's limit on params per log_batch call


def key(name: str) -> str:
    """``name`` with the characters MLflow refuses in metric and parameter names replaced by ``_``."""
    return _BAD.sub("_", name)


def tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI``, or the file store ``<run_dir>/mlruns`` (allowed through ``MLFLOW_ALLOW_FILE_STORE``)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path(run_dir) / "mlruns").resolve().as_uri()


class MLflowLogger:
    """Logs a run (and its members as nested runs) to MLflow through ``MlflowClient``."""

    def __init__(self, run_dir: str | os.PathLike, members: int | None = None, *, experiment: str = "ganfn",
                 run_name: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri(Path(run_dir)))
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        name = run_name or Path(run_dir).resolve().name
        self.parent = self.client.create_run(exp_id, run_name=name).info.run_id
        self.members = members
        self.runs = [self.parent] if members is None else [
            self.client.create_run(exp_id, run_name=f"{name}/member_{i:02d}",
                                   tags={"mlflow.parentRunId": self.parent, "member": str(i)}).info.run_id
            for i in range(members)]
        self._tmp = tempfile.TemporaryDirectory(prefix="ganfn-mlflow-")

    def _params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key(k), str(v)[:6000]) for k, v in plain_params(params).items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[i:i + _BATCH])

    def log_params(self, params: Sequence[Mapping[str, Any]]) -> None:
        if self.members is not None:  # the sweep's own run: what every member shares
            shared = {k: v for k, v in params[0].items() if all(p.get(k) == v for p in params)}
            self._params(self.parent, shared)
        for run_id, p in zip(self.runs, params, strict=True):
            self._params(run_id, p)

    def log_scalars(self, step: int, values: Mapping[str, Tensor | float | Sequence[float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for run_id, vals in zip(self.runs, member_scalars(values, self.members), strict=True):
            if vals:
                self.client.log_batch(run_id, metrics=[Metric(key(k), v, now, int(step)) for k, v in vals.items()])

    def log_images(self, step: int, name: str, images: Sequence[Tensor]) -> None:
        from ..tensorboard import save_png

        for run_id, img in zip(self.runs, images, strict=True):
            folder = Path(self._tmp.name) / run_id
            folder.mkdir(exist_ok=True)
            path = save_png(img, folder / f"{key(name)}_step{int(step):08d}.png")
            self.client.log_artifact(run_id, str(path), artifact_path=f"images/{key(name)}")
            path.unlink()

    def log_summary(self, figures: Sequence[Mapping[str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for run_id, figs in zip(self.runs, figures, strict=True):
            mets = [Metric(key(f"final/{k}"), float(v), now, 0) for k, v in figs.items()
                    if isinstance(v, (int, float)) and math.isfinite(v)]
            if mets:
                self.client.log_batch(run_id, metrics=mets)

    def log_artifact(self, path: str | os.PathLike) -> None:
        self.client.log_artifact(self.parent, str(path))

    def close(self) -> None:
        status = {None: "FINISHED", "failed": "FAILED", "killed": "KILLED"}[failure()]
        for run_id in dict.fromkeys([*self.runs, self.parent]):
            self.client.set_terminated(run_id, status)
        self._tmp.cleanup()
