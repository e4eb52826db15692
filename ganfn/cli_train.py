"""``ganfn train`` / ``ganfn sweep`` once the options are parsed and checked: build the run, train it with
:func:`ganfn.loop.fit`, and print its start and its end-of-run report (the per-member table of a stacked run).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from . import presets as P
from .interrupt import EXIT_STATUS, deferred_signals

__all__ = ["AUTO_COMPILE_MEMBERS", "AUTO_COMPILE_STEPS", "auto_compile", "run", "say"]


AUTO_COMPILE_MEMBERS, AUTO_COMPILE_STEPS = 4, 1000


def auto_compile(n_members: int, steps: int) -> bool:
    """Whether ``ganfn train`` compiles when neither --compile nor --no-compile is given.

    A stacked run of >= 4 members for >= 1000 steps: on the default DCGAN/digits
    run (2-core CPU, bench/README_vmap.md) the compiled vmapped step takes
    9-13 ms against the eager one's 34-49 ms at 4 members and 36-40 ms against
    96-116 ms at 16, so the 10-30 s compile is paid back within about 1000
    steps at 4 members and 500 at 16. Short or single runs stay eager (no
    compile wait).
    """
    return n_members >= AUTO_COMPILE_MEMBERS and steps >= AUTO_COMPILE_STEPS


def _members(cfg: P.Config) -> tuple[list[int], list[dict[str, float]]] | None:
    """Seeds and hyperparameter dicts of a stacked run, or None for a single run."""
    from . import sweep

    combos = sweep.grid(sweep.parse_grid(cfg.grid)) if cfg.grid else [{}]
    if cfg.seeds == 1 and not cfg.grid:
        return None
    seeds, hps = [], []
    for hp in combos:
        for k in range(cfg.seeds):
            seeds.append(cfg.seed + k)
            hps.append(dict(hp))
    return seeds, hps


def _announce_lenet(cfg: P.Config) -> None:
    """Say so before the scoring LeNet trains for the first time (it then comes from the cache)."""
    from .metrics import lenet

    if cfg.data in ("digits", "stacked_digits") and not lenet.cache_path("digits").exists():
        say("training the LeNet that scores digits (FD-LeNet): once, a few seconds; cached in "
            f"{lenet.cache_path('digits')}")


def say(msg: str) -> None:
    """Print a line at once (through tqdm, flushed): log files and pipes see it as it happens."""
    from .loop import default_print

    default_print(msg)


def _size_note(cfg: P.Config, gan: Any) -> str:
    """`` (images 28 -> 32 px: ...)`` when the image size was chosen for the model rather than given."""
    shape = tuple(gan.sample_shape)
    if len(shape) != 3 or cfg.image_size is not None:
        return ""
    return f", image size {shape[-1]} (chosen for the data and the {cfg.model} model; --image-size to change)"


def _population(cfg: P.Config, gan: Any, evaluator: Any, parser: argparse.ArgumentParser) -> Any:
    """The PBT / successive-halving schedule the options ask for, or None."""
    if cfg.halving_refill and not cfg.halving_at:
        parser.error("--halving-refill refills the slots freed by --halving-at: give --halving-at too")
    if cfg.pbt_every is None and not cfg.halving_at:
        return None
    from . import ensemble, lineage, sweep

    if not cfg.grid:
        parser.error("--pbt-every / --halving-at need a --grid (the population and the hyperparameters to explore)")
    if evaluator is None:
        parser.error(f"--pbt-every / --halving-at rank members by a quality figure; data {cfg.data!r} has none (use "
                     "ring8, grid25, digits or stacked_digits)")
    try:
        if cfg.pbt_space:
            spec = sweep.parse_grid(cfg.pbt_space)
            bad = [k for k, v in spec.items() if len(v) != 2]
            if bad:
                raise ValueError(f"--pbt-space: give exactly two values (low,high) for {bad}")
            space: dict[str, Any] = {k: (min(v), max(v)) if v[0] <= v[1] else tuple(v) for k, v in spec.items()}
        else:
            space = lineage.space_from_grid(sweep.parse_grid(cfg.grid))
        halving = [int(x) for x in cfg.halving_at.split(",") if x.strip()] if cfg.halving_at else []
        from .population import Metric, ranking

        default = ranking(Metric(evaluator.primary, evaluator.higher_is_better), evaluator.ties)
        names = [m.strip() for m in cfg.pbt_metric.split(",") if m.strip()] if cfg.pbt_metric else default
        return lineage.Schedule(space, every=cfg.pbt_every, fraction=cfg.pbt_fraction, halving_at=halving,
                                metrics=names, seed=cfg.seed,
                                refill=(lambda seeds: ensemble.init_many(gan, seeds)) if cfg.halving_refill else None)
    except ValueError as e:
        parser.error(str(e))


def _run_dir(cfg: P.Config, resume: str | None, parser: argparse.ArgumentParser) -> Path:
    """The run's folder, kept in ``cfg.run_dir``: ``runs/<time>-<preset or data>`` when not given (rank 0's name on
    every rank); a usage error when it already holds a run and this is not ``--resume``."""
    from . import checkpoint
    from . import distributed as gd
    from .distributed import shards

    if cfg.run_dir is None:
        name = Path(cfg.data).name if cfg.data not in P.gdata.NAMES else cfg.data
        cfg.run_dir = str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.preset or name}")
    cfg.run_dir = gd.broadcast_object(cfg.run_dir)  # the clock may differ across ranks: rank 0's name
    run_dir = Path(cfg.run_dir)
    if not resume and (checkpoint.CheckpointManager(run_dir / "checkpoints").latest() is not None
                       or shards.shards(run_dir / "checkpoints")):
        parser.error(f"--run-dir {run_dir} already holds a run (checkpoints in {run_dir / 'checkpoints'}); "
                     f"continue it with --resume {run_dir}, or choose another --run-dir: a new run would overwrite it")
    return run_dir


def run(cfg: P.Config, resume: str | None, progress: bool, parser: argparse.ArgumentParser,
        trackers: Sequence[Any] = ()) -> int:
    """Train the run ``cfg`` describes (checked by the caller; ``resume``: the run folder or checkpoint to continue),
    printing its start, its end-of-run report and how to continue it; returns the exit status. Bad input is a usage
    error of ``parser``."""
    from . import loop

    if not cfg.device.startswith("cuda"):
        from .allocator import tune_cpu_allocator

        tune_cpu_allocator()  # pure steps allocate per op: keep freed memory for reuse (ganfn.allocator)
    if cfg.threads is not None:
        if cfg.threads < 1:
            parser.error(f"--threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    try:
        members = _members(cfg)
    except (ValueError, TypeError) as e:
        parser.error(f"--grid: {e}")
    from . import distributed as gd

    world = gd.world()
    if world.distributed and world.rank != 0:
        gd.barrier()  # rank 0 builds first, so only it trains and caches the LeNet evaluator
    if world.rank == 0:
        _announce_lenet(cfg)
    try:
        gan, data, evaluator = _build(cfg)
    except P.gdata.BadImageError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")  # one line naming the file: no usage block
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        parser.error(str(e))
    if world.distributed and world.rank == 0:
        gd.barrier()
    population = _population(cfg, gan, evaluator, parser)
    run_dir = _run_dir(cfg, resume, parser)
    n_members = len(members[0]) if members else 1
    compile_ = auto_compile(n_members, cfg.steps) if cfg.compile is None else cfg.compile
    say(f"{parser.prog}: {cfg.model} on {cfg.data} {tuple(gan.sample_shape)}{_size_note(cfg, gan)}, loss {cfg.loss}"
        f"{', penalty ' + cfg.penalty if cfg.penalty else ''}, {cfg.steps} steps x batch {cfg.batch_size}"
        f"{f', {n_members} members (vmapped)' if members else ''}, device {cfg.device} -> {run_dir}")
    if evaluator is not None and evaluator.card is not None:
        say(evaluator.card.line())
    if compile_:
        say(f"compiling the {'vmapped ' if members else ''}step with torch.compile"
            f"{'' if cfg.compile else ' (chosen for this run size; --no-compile to skip)'}: the first step includes "
            "the compile")
    t0 = time.perf_counter()
    existed = run_dir.exists()
    # SIGINT / SIGTERM end the run after the current step, with its files written (ganfn.interrupt);
    # data-parallel ranks would stop at different steps, so they keep the default handling.
    signals = contextlib.nullcontext(None) if world.distributed else deferred_signals()
    try:
        with signals as stop:
            state, hist = loop.fit(
                gan, data, steps=cfg.steps, batch_size=cfg.batch_size, device=cfg.device, run_dir=run_dir,
                seed=cfg.seed, seeds=members[0] if members else None,
                hparams=members[1] if members else None, data_seed=cfg.seed, evaluator=evaluator,
                log_every=cfg.log_every, image_every=cfg.image_every, eval_every=cfg.eval_every,
                checkpoint_every=cfg.checkpoint_every or None, keep=cfg.keep, resume=resume or False,
                precision=cfg.precision, compile=compile_, patience=cfg.patience, on_nonfinite=cfg.on_nonfinite,
                progress=progress, print_fn=say, config=cfg.to_dict(), population=population,
                standing_stats=cfg.standing_stats, trackers=trackers, split=cfg.split, stop=stop,
            )
    except P.gdata.BadImageError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n{_after_bad_image(run_dir, existed)}\n")
    except loop.FinishedRunError as e:
        if e.step == e.steps:  # asked to finish a finished run: nothing to do, and that is not an error
            say(f"{parser.prog}: {e}")
            return 0
        parser.error(str(e))
    except ValueError as e:
        parser.error(str(e))
    if hist.get("interrupted"):
        stopped = hist["interrupted"]
        say(f"{parser.prog}: interrupted by {stopped['by']} at step {stopped['step']} of {cfg.steps}: checkpoint, "
            f"samples.png, metrics.json and figures written to {run_dir}; "
            f"continue with: {parser.prog} --resume {run_dir}")
        return EXIT_STATUS
    _report(cfg, hist, evaluator, members, population, compile_, time.perf_counter() - t0, run_dir)
    return 0


def _build(cfg: P.Config) -> tuple[Any, Any, Any]:
    """``P.build`` after a folder's header scan, whose choices are printed and kept in
    ``cfg`` (so config.json, a resume and ``ganfn eval`` rebuild the same shapes)."""
    folder = P.choose_folder(cfg)
    if folder is not None:
        cfg.channels, cfg.image_size = folder.channels, folder.size
        say(folder.note)
        for name, reason in folder.scan.skipped[:5]:
            say(f"warning: skipped unreadable image {name}: {reason}")
        if len(folder.scan.skipped) > 5:
            say(f"warning: ... and {len(folder.scan.skipped) - 5} more unreadable images skipped")
    return P.build(cfg, folder)


def _after_bad_image(run_dir: Path, existed: bool) -> str:
    """A run stopped by an image that failed to decode: keep what it saved, or remove the folder it just made."""
    import shutil

    from . import checkpoint

    latest = checkpoint.CheckpointManager(run_dir / "checkpoints").latest() if run_dir.exists() else None
    if latest is not None:
        return (f"what was trained is saved in {run_dir} (checkpoint {latest.name}, samples.png, metrics.json); "
                f"after fixing the file, continue with: ganfn train --resume {run_dir}")
    if not existed and run_dir.exists():
        shutil.rmtree(run_dir)  # nothing was trained: leave no half-made run folder
    return "nothing was trained and no run folder was kept"


def _report(cfg: P.Config, hist: dict, evaluator: Any, members: Any, population: Any, compile_: bool, wall: float,
            run_dir: Path) -> None:
    """The end-of-run lines: the per-member table (stacked) or the final figures, the stop reason and speed, the
    files."""
    from . import sweep

    n_members = len(members[0]) if members else 1
    primary = evaluator.primary if evaluator else None
    final = (hist.get("final") or {}).get("figures")
    last = hist.get("last") or {}
    if members:
        rows_metrics = []
        for i in range(len(members[0])):
            m: dict[str, Any] = {}
            for k in ("d_loss", "g_loss"):
                if k in last:
                    m[k] = last[k][i]
            if final:
                m.update({k: v for k, v in final[i].items()
                          if k == primary or k in ("high_quality", "kl", "on_class_mode")
                          or k.startswith(("intra-", "class-acc-"))})
            da, ha = hist.get("diverged_at"), hist.get("halved_at")
            m["diverged"] = bool(da is not None and isinstance(da, list) and da[i] >= 0)
            if population is not None and population.halving_at:
                m["halved"] = f"at {ha[i]}" if ha and ha[i] >= 0 else "no"
            if population is not None:
                m["lineage"] = population.lineage.lineage_text(i)
            rows_metrics.append(m)
        table_members = [{"seed": s, **hp} for s, hp in zip(*members, strict=True)]
        if population is not None:  # the values each member ends with, its schedule beside them
            table_members = [{"seed": t["seed"],
                              **{k: v for k, v in t.items() if k != "seed" and k not in population.space},
                              **{f"{k} (end)": v for k, v in population.lineage.final_values(i).items()},
                              "schedule": population.lineage.schedule_text(i)} for i, t in enumerate(table_members)]
        from .population import Metric, ranking

        order = ranking(Metric(primary, evaluator.higher_is_better), evaluator.ties) if (primary and cfg.grid) else []
        say(sweep.table(table_members, rows_metrics, sort_by=[m.name for m in order] or None,
                        descending=[m.higher_is_better for m in order], with_summary=True))
    else:
        parts = [f"{k} {last[k]:.4f}" for k in ("d_loss", "g_loss") if k in last]
        if final and primary:
            parts.append(f"{primary} {final[0][primary]:.4g}")
            init = (hist.get("initial") or {}).get("figures")
            if init and math.isfinite(init[0].get(primary, math.nan)):
                parts.append(f"(untrained generator: {init[0][primary]:.4g})")
        say("final: " + ", ".join(parts))
    if evaluator is not None and evaluator.card is not None:
        say(evaluator.card.line())
    say(f"stopped: {hist['stopped']}; {hist['steps_run']} steps in {wall:.1f} s ({_rates(hist, n_members, compile_)})")
    say(f"wrote {run_dir}/samples.png, losses.png, metrics.json, checkpoints/, tb/ "
        f"(tensorboard --logdir {run_dir / 'tb'})")


def _rates(hist: dict[str, Any], n_members: int, compiled: bool) -> str:
    """Training speed: steps/s, member-steps/s for a stacked run, and the
    compile's share (the first step) when compiled."""
    rate, first, n = hist["steps_per_s"] or 0.0, hist.get("first_step_s"), hist["steps_run"]
    out = f"{rate:.1f} steps/s of training" + (f" = {rate * n_members:.1f} member-steps/s" if n_members > 1 else "")
    if compiled and first is not None and n > 1 and hist["wall_time_s"] > first:
        after = (n - 1) / (hist["wall_time_s"] - first)
        out += f"; first step {first:.1f} s (compile included), then {after:.1f} steps/s"
        out += f" = {after * n_members:.1f} member-steps/s" if n_members > 1 else ""
    return out
