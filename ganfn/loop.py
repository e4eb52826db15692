"""``fit``: a complete training loop built only from ganfn's public API.

Everything here could be written by a user: it calls ``gan.init``,
``gan.draw_noise``, ``gan.train_step`` and ``gan.sample`` for a single run, and
``ganfn.ensemble`` (``init_many``, ``rngs``, ``draw_noise_many``, ``make_step``)
for a stacked (vmapped) run of several seeds or a hyperparameter sweep. Around
the pure step it adds the side effects: a tqdm progress bar, TensorBoard
logging, periodic evaluation with early stopping, atomic checkpoints that
resume bit-identically, optional mixed precision, and the end-of-run files
``samples.png``, ``losses.png`` (``ganfn.figures``) and ``metrics.json``.

Randomness: the run's only random sources are explicit ``torch.Generator``s
(one per member, seeded with the member's seed) for the step noise, and the
data position (``ganfn.data.loader_init``) for the batch order; both are saved
in every checkpoint, so a resumed run sees exactly the batches and noise an
uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed as gd
from . import ensemble, figures
from . import tensorboard as tb
from .data import loader_init, next_batch
from .errors import NonFiniteLossError, check_finite
from .gan import GAN, TrainState
from .population import hyperparameters
from .tree import tree_map
from .tree import replace as _nt_replace

__all__ = ["fit", "Evaluator", "anneal_instance_noise", "PRECISIONS", "sample_members"]

PRECISIONS = ("fp32", "bf16", "fp16")
ON_NONFINITE = ("stop", "rollback", "raise")


@dataclass
class Evaluator:
    """A quality figure computed from generated samples.

    ``fn(samples [N, *sample]) -> {name: float}`` must include ``primary``;
    ``higher_is_better`` gives the direction used for early stopping.
    ``n_samples`` latents (from a fixed generator) are drawn per evaluation.
    ``reference`` ([M, 2] points) is drawn under 2-D scatter plots.
    """

    fn: Callable[[Tensor], dict[str, float]]
    primary: str
    higher_is_better: bool = False
    n_samples: int = 1000
    reference: Tensor | None = None


def anneal_instance_noise(state: TrainState, base: Tensor, step: int, anneal_steps: int) -> TrainState:
    """``state`` with ``hparams["instance_noise"] = base * max(0, 1 - step / anneal_steps)``.

    A pure function of its arguments (a new state; the old one is untouched):
    instance noise (Sønderby et al., 2016) is strongest at the start and gone
    after ``anneal_steps``. ``base`` is the initial level ([] or [S]).
    """
    frac = max(0.0, 1.0 - step / anneal_steps)
    return _nt_replace(state, hparams={**state.hparams, "instance_noise": base * frac})


def sample_members(gan: GAN, state: TrainState, z: Tensor, stacked: bool) -> list[Tensor]:
    """Samples for latents ``z`` from each member (a list of one for a single run)."""
    states = ensemble.unstack(state) if stacked else [state]
    with torch.no_grad():
        return [gan.sample(s, z).float().cpu() for s in states]


def _to_float(v: Tensor) -> float | list[float]:
    t = v.detach().double().cpu().reshape(-1)
    vals = [float(x) for x in t]
    return vals[0] if v.dim() == 0 else vals


def _picture(samples: Tensor, reference: Tensor | None) -> Tensor:
    """A [C, H, W] picture in [0, 1]: image grid for images, scatter plot for 2-D points."""
    if samples.dim() == 2 and samples.shape[1] == 2:
        return tb.scatter_image(samples, reference=reference)
    if samples.dim() == 4:
        return tb.image_grid(samples, pad=1)
    raise ValueError(f"cannot draw samples of shape {tuple(samples.shape)}")


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
    instance_noise_anneal: int | None = None,
    progress: bool = True,
    print_fn: Callable[[str], None] | None = None,
    config: Mapping[str, Any] | None = None,
    n_fixed: int = 64,
    population: Any = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Train ``gan`` on ``data`` for ``steps`` steps; return ``(state, history)``.

    Args:
        gan: the setup. Its modules are only templates; the state is created
            on the CPU and moved to ``device``.
        data: samples [N, *sample] (iterated in epochs of a seeded permutation)
            or a sampler ``f(n, generator)`` (``ganfn.data.ring8``...). With
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
            ``run_dir/checkpoints`` (from scratch if there is none); a path names
            a checkpoint file or a run directory.
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
        instance_noise_anneal: linearly anneal ``instance_noise`` to 0 over
            this many steps (see :func:`anneal_instance_noise`).
        config: recorded in ``metrics.json`` and as TensorBoard hparams.
        population: a :class:`ganfn.lineage.Schedule` (stacked runs with an
            evaluator): at its steps the members' figures drive successive
            halving and population-based training; the lineage goes into every
            checkpoint (a resumed run is bit-identical), ``metrics.json``
            (``population``) and TensorBoard (``hparams/<name>`` per member).

    Returns ``(state, history)``: history is a JSON-able dict with ``train``
    (every ``log_every`` steps: step and each metric, lists for stacked runs),
    ``eval`` (step and figures), ``final`` (the last figures), ``stopped``
    (why training ended), ``diverged_at`` and timings: ``wall_time_s``,
    ``steps_per_s`` and ``first_step_s`` (the first step, which includes any compile).
    """
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
    for name, v in (("log_every", log_every), ("image_every", image_every), ("eval_every", eval_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every!r}")
    if instance_noise_anneal is not None:
        if instance_noise_anneal < 1:
            raise ValueError(f"instance_noise_anneal must be >= 1 steps, got {instance_noise_anneal}")
        if gan.instance_noise <= 0:
            raise ValueError("instance_noise_anneal needs a GAN built with instance_noise > 0")
    if population is not None and (seeds is None or evaluator is None):
        raise ValueError("population (PBT / successive halving) needs a stacked run (seeds=...) and an evaluator for its scores")
    if resume and run_dir is None and not isinstance(resume, (str, os.PathLike)):
        raise ValueError("resume=True needs run_dir (where the checkpoints are)")
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
    say = (print_fn or tqdm.write) if main else (lambda _msg: None)

    stacked = seeds is not None
    if stacked:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        S = len(seeds)
        hp_list = [dict(h) for h in hparams] if isinstance(hparams, Sequence) else [dict(hparams or {})] * S
        if len(hp_list) != S:
            raise ValueError(f"got {S} seeds but {len(hp_list)} hyperparameter dicts")
        state = ensemble.init_many(gan, seeds, hp_list)
        rngs = ensemble.rngs(seeds, device)
        step_fn = gd.make_train_step(gan, stacked=True) if world.distributed else ensemble.make_step(gan, compile=compile)
        data_seed = seeds[0] if data_seed is None else data_seed
    else:
        if isinstance(hparams, Sequence):
            raise ValueError("one hyperparameter dict per member needs seeds= (a stacked run)")
        hp_list = [dict(hparams or {})]
        state = gan.init(int(seed), **hp_list[0])
        rngs = [torch.Generator(device=device).manual_seed(int(seed))]
        step_fn = gd.make_train_step(gan) if world.distributed else (_compiled_single(gan) if compile else gan.train_step)
        data_seed = seed if data_seed is None else data_seed
    state = tree_map(lambda t: t.to(device), state)
    like = state.g_params[next(iter(state.g_params))]

    is_sampler = callable(data) and not isinstance(data, Tensor)
    if not is_sampler:
        if not isinstance(data, Tensor):
            raise TypeError(f"data must be a tensor [N, ...] or a sampler f(n, generator), got {type(data).__name__}")
        if tuple(data.shape[1:]) != gan.sample_shape:
            raise ValueError(f"data samples have shape {tuple(data.shape[1:])} but the generator makes {gan.sample_shape}")
        data = data.to(device=device, dtype=like.dtype)
    position = loader_init(None if is_sampler else data.shape[0], data_seed)
    leading = gan.n_critic if gan.n_critic > 1 else None

    run_path = Path(run_dir) if run_dir is not None else None
    manager = ckpt.CheckpointManager(run_path / "checkpoints", keep) if run_path is not None else None
    noise_base = state.hparams.get("instance_noise")

    history: dict[str, Any] = {"train": [], "eval": [], "final": {}, "stopped": "steps", "diverged_at": None,
                               "members": S if stacked else None}
    best: list[float] | None = None
    bad_evals = 0
    start = 0
    if resume:
        src = _resolve_resume(resume, manager)
        if src is not None:
            c = ckpt.load(src, map_location=device)
            state = c["state"]
            position = c["position"]
            ckpt.set_rng_states(rngs, c["rngs"])
            extra = c["extra"]
            history = extra["history"]
            best, bad_evals = extra.get("best"), int(extra.get("bad_evals", 0))
            if population is not None and extra.get("population") is not None:
                population.load_state_dict(extra["population"])
            if "noise_base" in extra and extra["noise_base"] is not None:
                noise_base = extra["noise_base"].to(device)
            start = int(c["step"])
            say(f"resumed from {src} at step {start}")

    fixed_z = gan.draw_latents(torch.Generator().manual_seed(1234), n_fixed).to(device=device, dtype=like.dtype)
    eval_z = None
    if evaluator is not None:
        eval_z = gan.draw_latents(torch.Generator().manual_seed(4321), evaluator.n_samples).to(device=device, dtype=like.dtype)
    logger = tb.Logger(run_path / "tb", S if stacked else None) if run_path is not None and main else None
    if run_path is not None and config is not None and main:
        run_path.mkdir(parents=True, exist_ok=True)
        (run_path / "config.json").write_text(json.dumps(dict(config), indent=2, default=str))

    def evaluate(st: TrainState) -> list[dict[str, float]]:
        outs = []
        for smp in sample_members(gan, st, eval_z, stacked):
            if not torch.isfinite(smp).all():
                outs.append({evaluator.primary: math.nan})
                continue
            outs.append({k: float(v) for k, v in evaluator.fn(smp).items()})
        return outs

    def save_checkpoint(st: TrainState, step: int) -> None:
        if manager is None or not main:
            return
        extra = {"history": history, "best": best, "bad_evals": bad_evals,
                 "noise_base": noise_base.cpu() if noise_base is not None else None,
                 "population": population.state_dict() if population is not None else None}
        manager.save(st, step=step, position=position, rngs=rngs, extra=extra)

    if population is not None:
        population.start(state, start)
        if logger is not None and start == 0:
            logger.scalars(0, _population_hparams(population, state), prefix="hparams/")
    if evaluator is not None and start == 0:
        # The untrained generator's figures: the baseline a run is judged against.
        history["initial"] = {"step": 0, "figures": evaluate(state)}
        best, _ = _update_best(None, history["initial"]["figures"], evaluator)
        say(_eval_line(0, {}, history["initial"]["figures"], evaluator.primary) + "  (untrained generator)")
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, disable=not progress or not main, unit="step", dynamic_ncols=True)
    step = start
    last_metrics: dict[str, Tensor] = {}
    try:
        while step < steps:
            if world.distributed:  # this rank's slice of the global batch (batch_size per rank)
                real, position_next = gd.next_shard(data, position, batch_size, leading=leading)
            else:
                real, position_next = next_batch(data, position, batch_size, leading=leading)
            real = real.to(device=device, dtype=like.dtype)
            if world.distributed:
                noise = gd.draw_noise_shard(gan, rngs if stacked else rngs[0], batch_size, dtype=like.dtype, device=device)
            elif stacked:
                noise = ensemble.draw_noise_many(gan, rngs, batch_size, dtype=like.dtype, device=device)
            else:
                noise = gan.draw_noise(rngs[0], batch_size, dtype=like.dtype, device=device)
            if instance_noise_anneal is not None:
                state = anneal_instance_noise(state, noise_base, step, instance_noise_anneal)
            with _autocast(device, precision):
                new_state, metrics = step_fn(state, real, noise)
            position = position_next
            if stacked:
                diverged = metrics["diverged"]
                if bool(diverged.all()):
                    state, step = new_state, step + 1
                    history["stopped"] = "all members diverged"
                    history["diverged_at"] = _to_float(new_state.diverged_at)
                    say(f"step {step}: every member has diverged; stopping")
                    break
            else:
                try:
                    check_finite(metrics, step)
                except NonFiniteLossError as e:
                    history["diverged_at"] = step
                    if on_nonfinite == "raise":
                        raise
                    if on_nonfinite == "rollback" and manager is not None and manager.latest() is not None:
                        c = ckpt.load(manager.latest(), map_location=device)
                        state = c["state"]
                        history["stopped"] = f"non-finite loss at step {step}; rolled back to checkpoint step {c['step']}"
                    else:
                        history["stopped"] = f"non-finite loss at step {step}; kept the last finite state"
                    say(f"{e}; {history['stopped']}")
                    break
            state = new_state
            step += 1
            if step == start + 1:  # the first step carries any compile: reported apart
                history["first_step_s"] = time.perf_counter() - t0
            last_metrics = metrics
            bar.update(1)
            if step % log_every == 0:
                # Only at multiples of log_every (never "at the end"): a run
                # stopped and resumed must keep exactly the history of one that was not.
                rec = {"step": step, **{k: _to_float(v) for k, v in metrics.items()}}
                history["train"].append(rec)
                if logger is not None:
                    logger.scalars(step, {k: v for k, v in metrics.items() if k != "diverged"}, prefix="train/")
                bar.set_postfix(_postfix(rec), refresh=False)
            if logger is not None and (step % image_every == 0 or step == steps):
                pics = [_picture(s, evaluator.reference if evaluator else None) for s in sample_members(gan, state, fixed_z, stacked)]
                logger.images(step, "samples", pics)
            if evaluator is not None and step % eval_every == 0:
                figs = evaluate(state)
                history["eval"].append({"step": step, "figures": figs})
                if logger is not None:
                    for i, w in enumerate(logger.writers):
                        for k, v in figs[i].items():
                            if math.isfinite(v):
                                w.add_scalar(f"quality/{k}", v, step)
                say(_eval_line(step, last_metrics, figs, evaluator.primary))
                best, improved = _update_best(best, figs, evaluator)
                bad_evals = 0 if improved else bad_evals + 1
                if patience is not None and bad_evals >= patience:
                    history["stopped"] = f"no improvement of {evaluator.primary} for {patience} evaluations"
                    say(f"step {step}: {history['stopped']}; stopping early")
                    save_checkpoint(state, step)
                    break
            if population is not None and population.due(step) and step < steps:
                figs = history["eval"][-1]["figures"] if history["eval"] and history["eval"][-1]["step"] == step else evaluate(state)
                state = population(step, state, figs)
                if logger is not None:
                    logger.scalars(step, _population_hparams(population, state), prefix="hparams/")
            if checkpoint_every is not None and step % checkpoint_every == 0 and step < steps:
                save_checkpoint(state, step)
    finally:
        bar.close()
    wall = time.perf_counter() - t0

    if stacked and history["diverged_at"] is None:
        da = _to_float(state.diverged_at)
        history["diverged_at"] = da
    if evaluator is not None:
        if history["eval"] and history["eval"][-1]["step"] == step:
            history["final"] = {"step": step, "figures": history["eval"][-1]["figures"]}
        else:
            history["final"] = {"step": step, "figures": evaluate(state)}
    if last_metrics:
        history["last"] = {"step": step, **{k: _to_float(v) for k, v in last_metrics.items()}}
    if population is not None:
        history["population"] = population.lineage.to_dict()
    history["steps_run"] = step - start
    history["wall_time_s"] = wall
    history["steps_per_s"] = (step - start) / wall if wall > 0 else None
    if run_path is not None and main:
        save_checkpoint(state, step)
        _write_outputs(run_path, gan, state, stacked, fixed_z, history, evaluator, config, hp_list, seeds if stacked else [seed])
    if logger is not None:
        fin = history["final"].get("figures") or [{} for _ in range(S if stacked else 1)]
        hp_rows = [{**({k: v for k, v in (config or {}).items() if isinstance(v, (int, float, str, bool))}),
                    **h, "seed": s} for h, s in zip(hp_list, seeds if stacked else [seed])]
        logger.hparams(hp_rows, fin)
        logger.close()
    return state, history


def _population_hparams(population: Any, state: TrainState) -> dict[str, Tensor]:
    hp = hyperparameters(state)
    return {k: hp[k] for k in sorted(population.space)}


def _compiled_single(gan: GAN) -> Callable:
    compiled = torch.compile(gan.train_step)
    failed = [False]

    def step(state, real, noise):
        if not failed[0]:
            try:
                return compiled(state, real, noise)
            except Exception as e:  # noqa: BLE001 - any compiler failure falls back to the same pure step
                failed[0] = True
                warnings.warn(f"torch.compile of train_step failed ({type(e).__name__}); running eagerly", RuntimeWarning, stacklevel=2)
        return gan.train_step(state, real, noise)

    return step


def _resolve_resume(resume: bool | str | os.PathLike, manager: ckpt.CheckpointManager | None) -> Path | None:
    if resume is True:
        return manager.latest() if manager is not None else None
    p = Path(resume)
    if p.is_file():
        return p
    if p.is_dir():
        latest = ckpt.CheckpointManager(p / "checkpoints" if (p / "checkpoints").is_dir() else p).latest()
        if latest is None:
            raise FileNotFoundError(f"--resume {p}: no checkpoint (ckpt-*.pt) in {p} or {p / 'checkpoints'}")
        return latest
    raise FileNotFoundError(f"--resume {p}: no such checkpoint file or run directory")


def _postfix(rec: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k in ("d_loss", "g_loss"):
        v = rec.get(k)
        if v is None:
            continue
        out[k] = f"{v:.3f}" if isinstance(v, float) else f"{sum(v) / len(v):.3f}(mean)"
    return out


def _eval_line(step: int, metrics: Mapping[str, Tensor], figs: list[dict[str, float]], primary: str) -> str:
    parts = [f"step {step}"]
    for k in ("d_loss", "g_loss"):
        if k in metrics:
            v = metrics[k].detach().double().cpu().reshape(-1)
            parts.append(f"{k} {float(v.mean()):.4f}" + (" (mean)" if v.numel() > 1 else ""))
    vals = [f.get(primary, math.nan) for f in figs]
    if len(vals) == 1:
        parts.append(f"{primary} {vals[0]:.4g}")
    else:
        parts.append(f"{primary} " + " ".join(f"{v:.3g}" for v in vals))
    return " | ".join(parts)


def _update_best(best: list[float] | None, figs: list[dict[str, float]], ev: Evaluator) -> tuple[list[float], bool]:
    vals = [f.get(ev.primary, math.nan) for f in figs]
    if best is None:
        return vals, any(math.isfinite(v) for v in vals)
    improved = False
    new = list(best)
    for i, (b, v) in enumerate(zip(best, vals)):
        if not math.isfinite(v):
            continue
        if not math.isfinite(b) or (v > b if ev.higher_is_better else v < b):
            new[i], improved = v, True
    return new, improved


def _write_outputs(run_path: Path, gan: GAN, state: TrainState, stacked: bool, fixed_z: Tensor,
                   history: dict, evaluator: Evaluator | None, config: Mapping | None,
                   hp_list: list[dict], seeds: list[int]) -> None:
    run_path.mkdir(parents=True, exist_ok=True)
    samples = sample_members(gan, state, fixed_z, stacked)
    ref = evaluator.reference if evaluator else None
    pics = [_picture(s, ref) for s in samples]
    scale = max(1, 480 // max(pics[0].shape[-1], 1)) if samples[0].dim() == 4 else 1
    if len(pics) == 1:
        tb.save_png(pics[0], run_path / "samples.png", scale=scale)
    else:
        for i, p in enumerate(pics):
            tb.save_png(p, run_path / f"samples_member{i:02d}.png", scale=scale)
        # All members' grids tiled into one picture, member 0 top left.
        mosaic = tb.image_grid(torch.stack([torch.nn.functional.pad(p, (2, 2, 2, 2), value=1.0) for p in pics]) * 2 - 1)
        tb.save_png(mosaic, run_path / "samples.png", scale=max(1, scale // 2))
    figures.run_figures(run_path, history, primary=evaluator.primary if evaluator else None,
                        n_samples=evaluator.n_samples if evaluator else None,
                        higher_is_better=evaluator.higher_is_better if evaluator else None,
                        samples=samples, hparams=hp_list if stacked else None, seeds=seeds if stacked else None)
    out = {"config": dict(config) if config else None, "seeds": seeds, "hparams": hp_list, **history}
    (run_path / "metrics.json").write_text(json.dumps(out, indent=2, default=_json_default, allow_nan=True))


def _json_default(o: Any) -> Any:
    if isinstance(o, Tensor):
        return _to_float(o)
    return str(o)
