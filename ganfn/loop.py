"""``fit``: a complete training loop built only from ganfn's public API.

Everything here could be written by a user: it calls ``gan.init``,
``gan.draw_noise``, ``gan.train_step`` and ``gan.sample`` for a single run, and
``ganfn.ensemble`` (``init_many``, ``rngs``, ``draw_noise_many``, ``make_step``)
for a stacked (vmapped) run of several seeds or a hyperparameter sweep.
:func:`fit` sets a :class:`Run` up (:func:`setup`), then steps it and calls the
small periodic actions of :mod:`ganfn.loop_actions` (log, images, evaluation,
checkpoint); around the pure step it adds the side effects: a tqdm progress
bar, TensorBoard logging, early stopping, atomic checkpoints that resume
bit-identically, optional mixed precision, and the end-of-run files
``samples.png``, ``losses.png`` (``ganfn.figures``) and ``metrics.json``.

Randomness: the run's only random sources are explicit ``torch.Generator``s
(one per member, seeded with the member's seed) for the step noise, and the
data position (``ganfn.data.loader_init``) for the batch order; both are saved
in every checkpoint, so a resumed run sees exactly the batches and noise an
uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed as gd
from . import ensemble
from . import loop_actions as act
from . import tensorboard as tb
from .data import BadImageError, next_batch
from .errors import NonFiniteLossError, check_finite
from .evaluation import Evaluator, sample_members, update_best
from .gan import GAN
from .loggers import Tracker, fanout
from .loop_setup import PRECISIONS, FinishedRunError, Run, check_args, default_print, setup
from .state import TrainState

__all__ = ["fit", "setup", "Run", "Evaluator", "PRECISIONS", "sample_members", "FinishedRunError", "default_print"]




def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)



def fit(
    gan: GAN,
    data: Tensor | Callable[[int, torch.Generator], Tensor],
    *,
    steps: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    run_dir: str | os.PathLike | None = None,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    hparams: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
    data_seed: int | None = None,
    evaluator: Evaluator | None = None,
    log_every: int = 50,
    image_every: int = 500,
    eval_every: int = 500,
    checkpoint_every: int | None = 1000,
    keep: int = 3,
    resume: bool | str | os.PathLike = False,
    precision: str = "fp32",
    compile: bool = False,
    patience: int | None = None,
    on_nonfinite: str = "stop",
    progress: bool = True,
    print_fn: Callable[[str], None] | None = None,
    config: Mapping[str, Any] | None = None,
    n_fixed: int = 64,
    population: Any = None,
    standing_stats: int = 0,
    trackers: Sequence[Tracker] = (),
    split: str = "batch",
    stop: Callable[[], str | None] | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Train ``gan`` on ``data`` for ``steps`` steps; return ``(state, history)``.

    Args:
        gan: the setup. Its modules are only templates; the state is created
            on the CPU and moved to ``device``.
        data: samples [N, *sample] (iterated in epochs of a seeded permutation),
            an image source (``ganfn.data.images_source``: a folder or zip
            streamed by workers, or uint8 in memory), or a sampler ``f(n, generator)`` (``ganfn.data.ring8``...). With
            ``n_critic > 1`` each step takes ``[n_critic, B, ...]``.
        steps: total number of train steps (a resumed run continues up to it).
        seed: the run's seed (parameters and noise) for a single run.
        seeds: train ``len(seeds)`` members at once as one vmapped program
            (``ganfn.ensemble``); member i is seeded ``seeds[i]``. All members
            see the same batches.
        hparams: per-state hyperparameter overrides (``lr_d``, ``gp_weight``,
            ``real_label``, ...): one dict, or one dict per member (a sweep).
        data_seed: seed of the batch order (default: ``seed``, or ``seeds[0]``).
        evaluator: quality figure computed every ``eval_every`` steps and at the
            end, logged and used for early stopping.
        log_every, image_every: TensorBoard scalars / fixed-noise sample grids.
        checkpoint_every, keep: atomic checkpoints in ``run_dir/checkpoints``
            (None: only at the end), keeping the newest ``keep``.
        resume: ``True`` continues from the newest checkpoint in
            ``run_dir/checkpoints`` that passes its checksum (from scratch if
            there is none; a damaged newer one is skipped with a warning); a
            path names a checkpoint file (refused if damaged) or a run
            directory. A run already at or past ``steps`` raises
            :class:`FinishedRunError` and nothing is written.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: ``torch.autocast``
            around the (pure) step; parameters and optimizer state stay fp32.
            For fp16, build the GAN's optimizers with ``optim.loss_scaled``
            (dynamic loss scaling inside the pure step; ``ganfn train
            --precision fp16`` does this): without it small fp16 gradients
            flush to zero.
        compile: ``torch.compile`` the step (stacked runs: the vmapped step).
        patience: stop when the evaluator's primary figure has not improved
            for this many evaluations (stacked: for no member).
        on_nonfinite: single run whose loss turns NaN/inf: ``"stop"`` (return
            the last finite state), ``"rollback"`` (return the newest
            checkpoint's state) or ``"raise"``. Stacked runs freeze the
            diverged member (``ensemble.make_step(isolate=True)``) and stop
            only when every member has diverged.
        progress: a tqdm progress bar; without one, a plain progress line is
            printed every ``eval_every`` steps when there is no evaluator.
        print_fn: where lines go (default: through tqdm, flushed at once).
        config: recorded in ``config.json``, ``metrics.json`` and as TensorBoard hparams.
        population: a :class:`ganfn.lineage.Schedule` (stacked runs with an
            evaluator): at its steps the members' figures drive successive
            halving and population-based training; the lineage goes into every
            checkpoint (a resumed run is bit-identical), ``metrics.json``
            (``population``) and TensorBoard (``hparams/<name>`` per member).
        standing_stats: samples and figures use BatchNorm statistics recomputed
            for the EMA generator over this many batches (``GAN.sample``'s
            ``standing``; StudioGAN's standing statistics); 0: the live G's.
        trackers: experiment trackers besides TensorBoard, each a function
            ``(run_dir, members) -> ganfn.loggers.Logger`` (``ganfn.loggers.mlflow()``,
            ``ganfn.loggers.wandb()``), called when the run starts writing; needs ``run_dir``.
        split: under torchrun with ``seeds``: ``"batch"`` (data parallel: every
            rank holds every member and a shard of each batch) or ``"members"``
            (each rank holds a block of the members, :mod:`ganfn.distributed.members`;
            the returned state is this rank's members, the history the whole population's).
        stop: asked before every step; when it returns a reason (such as
            ``"SIGINT"``, from :func:`ganfn.interrupt.deferred_signals`) the
            run ends there as at its last step: checkpoint, samples and
            metrics are written, ``history["interrupted"]`` says why and where,
            and resuming continues as if it had never stopped.

    Returns ``(state, history)``: history is a JSON-able dict with ``train``
    (every ``log_every`` steps: step and each metric, lists for stacked runs),
    ``eval`` (step and figures), ``final`` (the last figures), ``stopped``
    (why training ended), ``interrupted`` (``{"by": reason, "step": N}``, only
    when ``stop`` ended it), ``diverged_at`` (and ``halved_at`` for a population
    run: members successive halving froze, apart from diverged ones) and timings: ``wall_time_s``,
    ``steps_per_s`` and ``first_step_s`` (the first step, which includes any compile).
    """
    check_args(gan, steps, batch_size, precision, on_nonfinite,
                {"log_every": log_every, "image_every": image_every, "eval_every": eval_every},
                checkpoint_every, resume, run_dir, standing_stats)
    if population is not None and (seeds is None or evaluator is None):
        raise ValueError("population (PBT / successive halving) needs a stacked run (seeds=...) and an evaluator "
                         "for its scores")
    run = setup(gan, data, steps=steps, device=device, run_dir=run_dir, seed=seed, seeds=seeds, hparams=hparams,
                data_seed=data_seed, evaluator=evaluator, keep=keep, resume=resume, compile=compile,
                print_fn=print_fn, n_fixed=n_fixed, population=population, split=split)
    run.standing_stats = standing_stats
    _start(run, config, trackers)
    t0 = run.t0 = time.perf_counter()
    run.bar = tqdm(total=steps, initial=run.start, disable=not progress or not run.main, unit="step",
                   dynamic_ncols=True)
    try:
        step, last_metrics = _train(run, steps, batch_size, precision, on_nonfinite, patience,
                                    log_every, image_every, eval_every, checkpoint_every, progress, stop)
    except BadImageError as e:
        run.bar.close()
        _save_before_bad_image(run, e, time.perf_counter() - t0, config)
        raise
    except BaseException:
        if run.logger is not None:  # called with the error in flight: a tracker's run ends as failed, not open
            run.logger.close()
        raise
    finally:
        run.bar.close()
        _close_workers(run.data)
    _finish(run, step, last_metrics, time.perf_counter() - t0, config)
    return run.state, run.history


def _start(run: Run, config: Mapping[str, Any] | None, trackers: Sequence[Tracker] = ()) -> None:
    """Before the first step: the logger and config.json, the population's
    start, and the untrained generator's figures (the baseline a run is judged against)."""
    evaluator, population = run.evaluator, run.population
    if run.run_path is not None and run.main:
        members = len(run.seeds) if run.stacked else None
        run.logger = fanout([tb.TensorBoardLogger(run.run_path / "tb", members),
                             *(t(run.run_path, members) for t in trackers)])
        run.logger.log_params(act.param_rows(run, config))
        if config is not None:
            run.run_path.mkdir(parents=True, exist_ok=True)
            act.write_json(run.run_path / "config.json", dict(config))
    if population is not None:
        population.start(run.state, run.start)
        if (run.logger is not None or run.split is not None) and run.start == 0:
            hp = act.population_hparams(population, run.state, run)  # split: every rank joins the gather
            if run.logger is not None:
                run.logger.log_scalars(0, {f"hparams/{k}": v for k, v in hp.items()})
    if evaluator is not None and run.start == 0:
        run.history["initial"] = {"step": 0, "figures": act.member_figures(run)}
        run.best, _ = update_best(None, run.history["initial"]["figures"], evaluator)
        run.say(act.eval_line(0, {}, run.history["initial"]["figures"], evaluator.primary) + "  (untrained generator)")


def _next_inputs(run: Run, batch_size: int) -> tuple[Tensor | tuple[Tensor, Tensor], dict, Any]:
    """This step's real batch, the data position after it, and the step's noise."""
    if run.world.distributed and run.split is None:  # this rank's slice of the global batch (batch_size per rank)
        real, position = gd.next_shard(run.data, run.position, batch_size, leading=run.leading)
        noise = gd.draw_noise_shard(run.gan, run.rngs if run.stacked else run.rngs[0], batch_size, dtype=run.like.dtype,
                                    device=run.device)
    else:
        real, position = next_batch(run.data, run.position, batch_size, leading=run.leading)
        if run.stacked:
            noise = ensemble.draw_noise_many(run.gan, run.rngs, batch_size, dtype=run.like.dtype, device=run.device)
        else:
            noise = run.gan.draw_noise(run.rngs[0], batch_size, dtype=run.like.dtype, device=run.device)
    x, y = run.gan.labels.split(real)  # a conditional batch: (images, labels); only the images take the dtype
    return run.gan.labels.join(x.to(device=run.device, dtype=run.like.dtype),
                               tuple(t.to(run.device) for t in y)), position, noise


def _diverged(run: Run, step: int, new_state: TrainState, metrics: Mapping[str, Tensor], on_nonfinite: str) -> bool:
    """Handle a non-finite step; True when training must stop (``run.state`` is then the state to keep)."""
    if run.stacked:
        if not bool(metrics["diverged"].all()):
            return False
        run.state = new_state
        # successive halving freezes members through the same flag: they were not lost to divergence
        halved = sum(h >= 0 for h in run.population.lineage.halved_at(len(run.seeds))) if run.population else 0
        run.history["stopped"] = "all members diverged" + (" or were halved" if halved else "")
        run.history["diverged_at"] = act.to_float(act.gathered(run, new_state.diverged_at))
        who = f"every member still training ({halved} halved earlier)" if halved else "every member"
        run.say(f"step {step + 1}: {who} has diverged; stopping")
        return True
    try:
        check_finite(metrics, step)
    except NonFiniteLossError as e:
        run.history["diverged_at"] = step
        if on_nonfinite == "raise":
            raise
        found = run.manager.load_latest(map_location=run.device) if on_nonfinite == "rollback" and run.manager else None
        if found is not None:
            run.state = found[1]["state"]
            run.history["stopped"] = (f"non-finite loss at step {step}; rolled back to checkpoint step "
                                      f"{found[1]['step']}")
        else:
            run.history["stopped"] = f"non-finite loss at step {step}; kept the last finite state"
        run.say(f"{e}; {run.history['stopped']}")
        return True
    return False


def _close_workers(data: Any) -> None:
    # A streamed source's DataLoader workers, stopped while the interpreter still runs: they then exit
    # normally and remove their multiprocessing temporary folders (killed at exit, they leave pymp-* behind).
    close = getattr(data, "close", None)
    if callable(close):
        close()


def _interrupted(run: Run, step: int, stop: Callable[[], str | None] | None) -> bool:
    """Whether ``stop`` asks to end the run before the step after ``step`` (recorded in the history)."""
    why = stop() if stop is not None else None
    if why:
        run.history["interrupted"] = {"by": why, "step": step}
        run.history["stopped"] = f"interrupted ({why}) at step {step}"
    return bool(why)


def _train(run: Run, steps: int, batch_size: int, precision: str, on_nonfinite: str, patience: int | None,
           log_every: int, image_every: int, eval_every: int, checkpoint_every: int | None,
           progress: bool, stop: Callable[[], str | None] | None = None) -> tuple[int, Mapping[str, Tensor]]:
    """Step ``run`` up to ``steps``, calling the periodic actions; returns the last step and its metrics."""
    step, last_metrics = run.start, {}
    # ``stop`` is asked between steps, after the periodic actions (a population round changes the
    # state), so the checkpoint at the stopping step is the one an uninterrupted run would have.
    while step < steps and not _interrupted(run, step, stop):
        real, position, noise = _next_inputs(run, batch_size)
        with _autocast(run.device, precision):
            new_state, metrics = run.step_fn(run.state, real, noise)
        run.position = position
        if _diverged(run, step, new_state, metrics, on_nonfinite):
            step += int(run.stacked)
            break
        run.state, step, last_metrics = new_state, step + 1, metrics
        if step == run.start + 1:  # the first step carries any compile: reported apart
            run.history["first_step_s"] = time.perf_counter() - run.t0
        run.bar.update(1)
        if step % log_every == 0:
            act.log(run, step, metrics)
        if step % image_every == 0 or step == steps:
            act.images(run, step)
        if step % eval_every == 0:
            if run.evaluator is not None and act.evaluate(run, step, metrics, patience):
                act.checkpoint(run, step)
                break
            if run.evaluator is None and (not progress or run.bar.disable):
                run.say(act.progress_line(run, step, steps, metrics))
        if run.population is not None and run.population.due(step) and step < steps:
            act.population_round(run, step)
        if checkpoint_every is not None and step % checkpoint_every == 0 and step < steps:
            act.checkpoint(run, step)
    return step, last_metrics


def _save_before_bad_image(run: Run, error: BadImageError, wall: float, config: Mapping | None) -> None:
    """A file that passed the header scan failed to decode mid-run: keep what was trained
    (checkpoint at the last finished step, samples, metrics.json) before the error goes up.
    Nothing is written when no step ran in this call."""
    step = int(run.state.step.reshape(-1).max())
    if step <= run.start:
        if run.logger is not None:
            run.logger.close()
        return
    run.history["stopped"] = f"unreadable image at step {step}: {error.name}"
    _finish(run, step, {}, wall, config)


def _finish(run: Run, step: int, last_metrics: Mapping[str, Tensor], wall: float, config: Mapping | None) -> None:
    """Final figures, timings, the last checkpoint, the output files and the hparams record."""
    h = run.history
    if run.stacked and h["diverged_at"] is None:
        h["diverged_at"] = act.to_float(act.gathered(run, run.state.diverged_at))
    if run.evaluator is not None:
        if h["eval"] and h["eval"][-1]["step"] == step:
            h["final"] = {"step": step, "figures": h["eval"][-1]["figures"]}
        else:
            h["final"] = {"step": step, "figures": act.member_figures(run)}
    if last_metrics:
        h["last"] = {"step": step, **{k: act.to_float(v) for k, v in last_metrics.items()}}
    if run.population is not None:
        h["population"] = run.population.lineage.to_dict()
        # halving is not divergence
        h["diverged_at"], h["halved_at"] = run.population.lineage.split_frozen(h["diverged_at"])
    h["steps_run"] = step - run.start
    h["wall_time_s"] = wall
    h["steps_per_s"] = (step - run.start) / wall if wall > 0 else None
    if run.run_path is not None and (run.main or run.split is not None):  # split: every rank writes its shard
        act.checkpoint(run, step)
        act.write_outputs(run, config)
    if run.logger is not None:
        lin = run.population.lineage if run.population is not None else None
        if lin is not None:  # PBT: the values members end with, beside the ones they started with
            run.logger.log_params([{**row, **{f"{k}_end": v for k, v in lin.final_values(i).items()}}
                                   for i, row in enumerate(act.param_rows(run, config))])
        run.logger.log_summary(h["final"].get("figures") or [{} for _ in run.seeds])
        assert run.run_path is not None  # _start makes a logger only for a run with a directory
        for f in act.output_files(run.run_path):
            run.logger.log_artifact(f)
        run.logger.close()
