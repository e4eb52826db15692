"""The Weights & Biases :class:`~ganfn.loggers.Logger` (``ganfn train --wandb``; needs ``pip install 'ganfn[wandb]'``).

Offline by default (``WANDB_MODE`` decides; unset means ``offline``): no login,
no network; the runs land in ``<run-dir>/wandb/offline-run-*`` and ``wandb sync``
uploads them later. A single run is one W&B run. A stacked run (seeds, a sweep,
a population) is one W&B group named after the run folder: a run per member
(its settings, scalars, sample grids and final figures) and a ``sweep`` run
holding the settings every member shares and the run's files. A resumed run
(``--resume``) logs as new W&B runs with the same names.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import Tensor

from .base import failure, member_scalars, plain_params

__all__ = ["WandbLogger"]

_MODES = ("offline", "online", "disabled", "shared")


class WandbLogger:
    """Logs a run (and its members, grouped) to W&B, offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, run_dir: str | os.PathLike, members: int | None = None, *, project: str = "ganfn",
                 run_name: str | None = None) -> None:
        import wandb

        self.wandb = wandb
        self.mode: Any = os.environ.get("WANDB_MODE", "offline")
        if self.mode not in _MODES:
            raise ValueError(f"WANDB_MODE={self.mode!r} is not a W&B mode: use one of {', '.join(_MODES)} "
                             "(or unset it: ganfn logs offline)")
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = run_name or self.dir.resolve().name
        group = name if members is not None else None
        self.members = members
        self.parent = self._init(project, name, group, "sweep" if members is not None else "train")
        self.runs = [self.parent] if members is None else [
            self._init(project, f"{name}/member_{i:02d}", group, "member") for i in range(members)]

    def _init(self, project: str, name: str, group: str | None, job_type: str) -> Any:
        settings = self.wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)
        return self.wandb.init(project=project, name=name, group=group, job_type=job_type, dir=str(self.dir),
                               mode=self.mode, reinit="create_new", settings=settings)

    def log_params(self, params: Sequence[Mapping[str, Any]]) -> None:
        if self.members is not None:
            shared = {k: v for k, v in params[0].items() if all(p.get(k) == v for p in params)}
            self.parent.config.update(plain_params(shared), allow_val_change=True)
        for run, p in zip(self.runs, params, strict=True):
            run.config.update(plain_params(p), allow_val_change=True)

    def log_scalars(self, step: int, values: Mapping[str, Tensor | float | Sequence[float]]) -> None:
        for run, vals in zip(self.runs, member_scalars(values, self.members), strict=True):
            if vals:
                run.log(vals, step=int(step))

    def log_images(self, step: int, name: str, images: Sequence[Tensor]) -> None:
        for run, img in zip(self.runs, images, strict=True):
            arr = (img.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            run.log({name: self.wandb.Image(arr[..., 0] if arr.shape[-1] == 1 else arr)}, step=int(step))

    def log_summary(self, figures: Sequence[Mapping[str, float]]) -> None:
        for run, figs in zip(self.runs, figures, strict=True):
            run.summary.update({f"final/{k}": float(v) for k, v in figs.items()
                                if isinstance(v, (int, float)) and math.isfinite(v)})

    def log_artifact(self, path: str | os.PathLike) -> None:
        p = Path(path).resolve()
        self.parent.save(str(p), base_path=str(p.parent), policy="now")

    def close(self) -> None:
        code = 0 if failure() is None else 1  # W&B shows a run that exits non-zero as failed
        for run in dict.fromkeys([*self.runs, self.parent]):
            run.finish(exit_code=code)
