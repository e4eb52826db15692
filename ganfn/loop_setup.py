"""The set-up of a training run: :func:`setup` builds a :class:`Run` (state,
RNGs, step function, data position, fixed latents), fresh or resumed from a
checkpoint, and writes nothing. :func:`ganfn.loop.fit` then steps it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed as gd
from . import ensemble, steps
from .data import ImageSource, loader_init
from .distributed import exploit, shards
from .distributed import members as split_members
from .evaluation import Evaluator
from .gan import GAN, TrainState
from .labels import check_labels
from .loggers import Logger
from .sampling import check_standing
from .tree import tree_map

__all__ = ["Run", "setup", "FinishedRunError", "check_args", "default_print", "PRECISIONS", "ON_NONFINITE", "SPLITS"]

PRECISIONS = ("fp32", "bf16", "fp16")
ON_NONFINITE = ("stop", "rollback", "raise")
SPLITS = ("batch", "members")  # what N processes share out: each member's batch, or the members themselves


class FinishedRunError(ValueError):
    """Resuming a run that is already at or past the requested number of steps (nothing is written)."""

    def __init__(self, message: str, step: int, steps: int) -> None:
        super().__init__(message)
        self.step, self.steps = step, steps


def default_print(msg: str) -> None:
    """Print a line through tqdm (so it never glues onto a progress bar) and flush it at once."""
    tqdm.write(msg, file=sys.stdout)
    sys.stdout.flush()


@dataclass
class Run:
    """One run's set-up (fixed after :func:`setup`) and its bookkeeping (updated as it trains)."""

    gan: GAN
    stacked: bool
    seeds: list[int]
    hp_list: list[dict]
    state: TrainState
    rngs: list[torch.Generator]
    step_fn: Callable
    data: Any
    position: dict
    leading: int | None
    device: torch.device
    like: Tensor
    world: Any
    main: bool
    say: Callable[[str], None]
    run_path: Path | None
    manager: ckpt.CheckpointManager | None
    evaluator: Evaluator | None
    fixed_z: Tensor
    eval_z: Tensor | None
    history: dict[str, Any]
    start: int = 0
    best: list[float] | None = None
    bad_evals: int = 0
    fixed_y: Tensor | None = None  # conditional: the classes of the fixed samples, one picture row per class
    eval_y: Tensor | None = None   # conditional: every class equally often
    logger: Logger | None = None  # TensorBoard and the run's trackers (ganfn.loggers)
    bar: Any = None
    resumed_from: Path | None = None
    population: Any = None
    standing_stats: int = 0  # batches of standing BatchNorm statistics for samples and figures (0: the live G's)
    t0: float = 0.0
    extra: dict = field(default_factory=dict)
    # a population split across ranks (ganfn.distributed.members.Split): state, rngs are this rank's members
    split: Any = None


def check_args(gan: GAN, steps: int, batch_size: int, precision: str, on_nonfinite: str, every: Mapping[str, int],
                checkpoint_every: int | None, resume: Any, run_dir: Any, standing_stats: int = 0) -> None:
    """Every argument error of :func:`fit`, raised before anything is built or written."""
    if not isinstance(gan, GAN):
        raise TypeError(f"fit needs a ganfn.GAN, got {type(gan).__name__}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {on_nonfinite!r}")
    for name, v in every.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every!r}")
    if resume and run_dir is None and not isinstance(resume, (str, os.PathLike)):
        raise ValueError("resume=True needs run_dir (where the checkpoints are)")
    check_standing(standing_stats, "standing_stats")


def _members(gan: GAN, seed: int, seeds: Sequence[int] | None, hparams: Any, device: torch.device, compile: bool,
             world: Any, split: str = "batch"
             ) -> tuple[bool, list[int], list[dict], TrainState, list[torch.Generator], Callable, Any]:
    """The initial state, RNGs and step function of a single or stacked run (split across ranks:
    this rank's members' state and RNGs, and the :class:`~ganfn.distributed.members.Split`)."""
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        S = len(seeds)
        hp_list = [dict(h) for h in hparams] if isinstance(hparams, Sequence) else [dict(hparams or {})] * S
        if len(hp_list) != S:
            raise ValueError(f"got {S} seeds but {len(hp_list)} hyperparameter dicts")
        if split == "members":
            sp = split_members.split(world, S)
            state = ensemble.init_many(gan, seeds[sp.lo:sp.hi], hp_list[sp.lo:sp.hi])
            step_fn = split_members.make_step(sp, steps.make_step(gan, members=True, compile=compile))
            return True, seeds, hp_list, state, ensemble.rngs(seeds[sp.lo:sp.hi], device), step_fn, sp
        state = ensemble.init_many(gan, seeds, hp_list)
        step_fn = steps.make_step(gan, members=True, reduce="all_reduce" if world.distributed else None,
                                  compile=compile)
        return True, seeds, hp_list, state, ensemble.rngs(seeds, device), step_fn, None
    if split == "members":
        raise ValueError("split='members' (--split members) spreads the members of a population over the ranks: "
                         "it needs seeds= (ganfn sweep), not a single run")
    if isinstance(hparams, Sequence):
        raise ValueError("one hyperparameter dict per member needs seeds= (a stacked run)")
    hp_list = [dict(hparams or {})]
    state = gan.init(int(seed), **hp_list[0])
    rngs = [torch.Generator(device=device).manual_seed(int(seed))]
    step_fn = steps.make_step(gan, reduce="all_reduce" if world.distributed else None, compile=compile)
    return False, [int(seed)], hp_list, state, rngs, step_fn, None


def _restore(run: Run, resume: Any, steps: int) -> None:
    """Continue ``run`` from its checkpoint; refuse (:class:`FinishedRunError`) a run already at or past ``steps``."""
    if run.split is not None:
        found = _restore_split(run, resume)
    elif resume is True:
        found = run.manager.load_latest(map_location=run.device) if run.manager is not None else None
    else:
        found = _resolve_resume(resume, run.device)
    if found is None:
        return
    src, c = found
    start = int(c["step"])
    if start >= steps:
        raise FinishedRunError(
            f"{src} is at step {start} and the run was asked for {steps} steps: nothing was trained and no file "
            f"was changed. To train longer, give more steps (--steps above {start}); to score it, run ganfn eval.",
            start, steps)
    run.state, run.position = c["state"], c["position"]
    ckpt.set_rng_states(run.rngs, c["rngs"])
    extra = c["extra"]
    run.history = extra["history"]
    if run.history.pop("interrupted", None) is not None:  # the stop is not part of the continued run's story
        run.history["stopped"] = "steps"
    run.best, run.bad_evals = extra.get("best"), int(extra.get("bad_evals", 0))
    if run.population is not None and extra.get("population") is not None:
        run.population.load_state_dict(extra["population"])
    run.start, run.resumed_from = start, src
    run.say(f"resumed from {src} at step {start}")


def _restore_split(run: Run, resume: Any) -> tuple[Path, dict] | None:
    """This rank's members from the newest complete set of shards (written by any number of ranks)."""
    p = run.manager.directory if resume is True and run.manager is not None else Path(resume)
    if resume is not True and not p.is_dir():
        raise FileNotFoundError(f"--resume {p}: a population split across ranks resumes from its run directory "
                                "(every rank's shard of a step), not from one file")
    p = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    found = shards.load(p, run.split, map_location=run.device)
    if found is None and resume is not True:
        raise FileNotFoundError(f"--resume {p}: no complete set of population shards (ckpt-*.members-*.pt) in {p}")
    return found


def _resolve_resume(resume: str | os.PathLike, device: torch.device) -> tuple[Path, dict] | None:
    p = Path(resume)
    if p.is_file():
        return p, ckpt.load(p, map_location=device)  # a file named by the user: a damaged one is refused
    if p.is_dir():
        found = ckpt.CheckpointManager(p / "checkpoints" if (p / "checkpoints").is_dir()
                                       else p).load_latest(map_location=device)
        if found is None:
            raise FileNotFoundError(f"--resume {p}: no checkpoint (ckpt-*.pt) in {p} or {p / 'checkpoints'}")
        return found
    raise FileNotFoundError(f"--resume {p}: no such checkpoint file or run directory")


def setup(gan: GAN, data: Tensor | Callable, *, steps: int, device: str | torch.device = "cpu",
          run_dir: str | os.PathLike | None = None, seed: int = 0, seeds: Sequence[int] | None = None,
          hparams: Any = None, data_seed: int | None = None, evaluator: Evaluator | None = None, keep: int = 3,
          resume: bool | str | os.PathLike = False, compile: bool = False,
          print_fn: Callable[[str], None] | None = None, n_fixed: int = 64, population: Any = None,
          split: str = "batch") -> Run:
    """A :class:`Run` ready to train: state (fresh or resumed), RNGs, step function, data position, fixed latents.

    Writes nothing. Raises :class:`FinishedRunError` when resuming a run already
    at or past ``steps``. Arguments as in :func:`fit`.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available on this machine")
    # Data parallel (under torchrun / ganfn.dask_launch, see ganfn.distributed):
    # every rank runs this loop on its shard with identical states; rank 0
    # alone writes files and prints.
    world = gd.world()
    main = world.rank == 0
    if world.distributed and device.type == "cuda" and device.index is None:
        device = gd.device(world)
    say = (print_fn or default_print) if main else (lambda _msg: None)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    stacked, seeds, hp_list, state, rngs, step_fn, sp = _members(gan, seed, seeds, hparams, device, compile, world,
                                                                 split)
    state = tree_map(lambda t: t.to(device), state)
    like = state.g.params[next(iter(state.g.params))]
    is_sampler = callable(data) and not isinstance(data, Tensor)
    if not is_sampler and world.distributed and sp is None and isinstance(data, ImageSource):
        raise ValueError("data-parallel training does not shard an image source yet: pass the images as a tensor "
                         "(ganfn.data.image_folder) or train in one process")
    data = _checked_data(gan, data, is_sampler, device, like.dtype)
    data_seed = seeds[0] if data_seed is None else data_seed
    run_path = Path(run_dir) if run_dir is not None else None
    fixed_y, eval_y, eval_z = gan.labels.rows(n_fixed, device), None, None
    if evaluator is not None:
        eval_y = gan.labels.rows(evaluator.n_samples, device)
        n_eval = evaluator.n_samples if eval_y is None else len(eval_y)
        eval_z = gan.draw_latents(torch.Generator().manual_seed(4321), n_eval).to(device=device, dtype=like.dtype)
    run = Run(
        gan=gan, stacked=stacked, seeds=seeds, hp_list=hp_list, state=state, rngs=rngs, step_fn=step_fn, data=data,
        position=loader_init(None if is_sampler else gan.labels.split(data)[0].shape[0], data_seed),
        leading=gan.n_critic if gan.n_critic > 1 else None, device=device, like=like, world=world, main=main, say=say,
        run_path=run_path,
        manager=ckpt.CheckpointManager(run_path / "checkpoints", keep) if run_path is not None else None,
        evaluator=evaluator, eval_z=eval_z, eval_y=eval_y, fixed_y=fixed_y,
        fixed_z=gan.draw_latents(torch.Generator().manual_seed(1234),
                                 n_fixed if fixed_y is None else len(fixed_y)).to(device=device, dtype=like.dtype),
        history={"train": [], "eval": [], "final": {}, "stopped": "steps", "diverged_at": None,
                 "members": len(seeds) if stacked else None},
        population=exploit.SplitSchedule(population, sp) if sp is not None and population is not None else population,
        split=sp,
    )
    if sp is not None and sp.size > 1:
        say(split_members.describe(sp))
    if resume:
        _restore(run, resume, steps)
    return run



def _checked_data(gan: GAN, data: Any, is_sampler: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """The training data on ``device``, checked before any step: images of G's
    sample shape; for a conditional GAN an ``(images, labels)`` pair whose labels
    all lie in ``[0, num_classes)``. A sampler is not called here (it may count
    its calls); the step checks each of its batches."""
    if is_sampler:
        return data
    images, labels = gan.labels.split(data)
    if not isinstance(images, (Tensor, ImageSource)):
        raise TypeError(f"data must be a tensor [N, ...] (conditional: an (images, labels) pair), an image source "
                        f"(ganfn.data.images_source) or a sampler f(n, generator), got {type(images).__name__}")
    if tuple(images.shape[1:]) != gan.sample_shape:
        raise ValueError(f"data samples have shape {tuple(images.shape[1:])} but the generator makes "
                         f"{gan.sample_shape}")
    for y in labels:
        assert gan.num_classes is not None  # labels come with classes
        check_labels(y, gan.num_classes, (images.shape[0],), "the data's labels")
    if isinstance(images, Tensor):  # an image source stays where it is (uint8 or on disk)
        images = images.to(device=device, dtype=dtype)
    return gan.labels.join(images, tuple(y.to(device) for y in labels))


