"""Experiment trackers behind one small interface, :class:`Logger`.

``ganfn.loop.fit`` logs through a :class:`Logger` and knows no tracker by name:
TensorBoard (:class:`ganfn.tensorboard.TensorBoardLogger`, always on when a run
has a folder) and the trackers passed as ``fit(..., trackers=[...])``, each a
function ``(run_dir, members) -> Logger`` called when the run starts writing:

- :func:`mlflow`: MLflow (``ganfn train --mlflow``), ``pip install 'ganfn[mlflow]'``;
- :func:`wandb`: Weights & Biases, offline by default (``ganfn train --wandb``),
  ``pip install 'ganfn[wandb]'``.

Your own tracker is any object with the :class:`Logger` methods.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import Fanout, Logger, Tracker, failure, fanout, member_scalars, plain_params

__all__ = ["Logger", "Tracker", "Fanout", "fanout", "failure", "member_scalars", "plain_params", "mlflow", "wandb",
           "require"]

_EXTRA = {"mlflow": "mlflow", "wandb": "wandb"}


def require(package: str) -> None:
    """``ImportError`` naming the extra to install unless ``package`` (``mlflow`` or ``wandb``) can be imported."""
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"logging to {package} needs the {package} package: pip install 'ganfn[{_EXTRA[package]}]'")


def mlflow(*, experiment: str = "ganfn", run_name: str | None = None) -> Tracker:
    """A tracker logging to MLflow (:class:`~ganfn.loggers.mlflow_logger.MLflowLogger`): ``MLFLOW_TRACKING_URI``,
    else ``<run_dir>/mlruns``; a stacked run's members as runs nested under the sweep's."""
    require("mlflow")

    def make(run_dir: Path, members: int | None) -> Logger:
        from .mlflow_logger import MLflowLogger

        return MLflowLogger(run_dir, members, experiment=experiment, run_name=run_name)

    return make


def wandb(*, project: str = "ganfn", run_name: str | None = None) -> Tracker:
    """A tracker logging to W&B (:class:`~ganfn.loggers.wandb_logger.WandbLogger`), offline unless
    ``WANDB_MODE`` says otherwise; a stacked run's members as one group."""
    require("wandb")

    def make(run_dir: Path, members: int | None) -> Logger:
        from .wandb_logger import WandbLogger

        return WandbLogger(run_dir, members, project=project, run_name=run_name)

    return make
