"""The small periodic actions of :func:`ganfn.loop.fit` and the files a run leaves.

Each action takes the :class:`ganfn.loop.Run` (the run's set-up and mutable
bookkeeping) and the step just finished: :func:`log`, :func:`images`,
:func:`evaluate`, :func:`checkpoint`. :func:`write_outputs` writes
``samples.png``, ``losses.png`` and ``metrics.json`` at the end; every JSON
file of a run is strict JSON (``null`` for NaN and infinities).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor

from . import figures
from . import tensorboard as tb
from .distributed import members as split_members
from .distributed import shards
from .evaluation import evaluate_members, sample_members, update_best
from .population import hyperparameters

if TYPE_CHECKING:  # pragma: no cover
    from .loop import Run

__all__ = ["log", "images", "evaluate", "checkpoint", "population_round", "write_outputs",
           "param_rows", "output_files", "to_float", "strict_json", "eval_line", "KID_NOTE"]

KID_NOTE = ("KID is an unbiased estimate: around 0 (slightly negative values included) the two sample sets "
            "cannot be told apart at this sample size")


def to_float(v: Tensor) -> float | list[float]:
    """A 0-d tensor as a float, a [S] tensor as a list of floats."""
    t = v.detach().double().cpu().reshape(-1)
    vals = [float(x) for x in t]
    return vals[0] if v.dim() == 0 else vals


def strict_json(obj: Any) -> Any:
    """``obj`` with tensors as floats and NaN / +-inf as None, so ``json.dumps(allow_nan=False)`` accepts it."""
    if isinstance(obj, Tensor):
        obj = to_float(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(strict_json(obj), indent=2, allow_nan=False))


def picture(samples: Tensor, reference: Tensor | None, cols: int | None = None) -> Tensor:
    """A [C, H, W] picture in [0, 1]: image grid for images (``cols`` per row: one
    row per class for a conditional GAN), scatter plot for 2-D points."""
    if samples.dim() == 2 and samples.shape[1] == 2:
        return tb.scatter_image(samples, reference=reference)
    if samples.dim() == 4:
        return tb.image_grid(samples, cols=cols, pad=1)
    raise ValueError(f"cannot draw samples of shape {tuple(samples.shape)}")


def member_labels(run: "Run") -> list[str] | None:
    """One caption per member of a stacked run: index, seed and its hyperparameters."""
    if not run.stacked:
        return None
    out = []
    for i, (seed, hp) in enumerate(zip(run.seeds, run.hp_list, strict=True)):
        hps = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in hp.items())
        out.append(f"member {i}: seed {seed}" + (f", {hps}" if hps else ""))
    return out


def log(run: "Run", step: int, metrics: Mapping[str, Tensor]) -> None:
    """Every ``log_every`` steps: the metrics into the history and TensorBoard, the bar's postfix."""
    # Only at multiples of log_every (never "at the end"): a run stopped and
    # resumed must keep exactly the history of one that was not.
    rec = {"step": step, **{k: to_float(v) for k, v in metrics.items()}}
    diverged = rec.get("diverged")
    if run.population is not None and isinstance(diverged, list):
        # Halving freezes through the divergence flag: a halved member is recorded as halved.
        halved = run.population.lineage.halved_at(len(diverged))
        rec["diverged"] = [0.0 if h >= 0 else d for d, h in zip(diverged, halved, strict=True)]
        rec["halved"] = [float(h >= 0) for h in halved]
    run.history["train"].append(rec)
    if run.logger is not None:
        run.logger.log_scalars(step, {f"train/{k}": v for k, v in metrics.items() if k != "diverged"})
    run.bar.set_postfix(_postfix(rec), refresh=False)


def member_samples(run: "Run") -> list[Tensor]:
    """Each member's samples of the run's fixed latents (and classes), with the run's standing statistics
    (a population split across ranks: every member's, gathered from its rank)."""
    out = sample_members(run.gan, run.state, run.fixed_z, run.stacked, run.fixed_y, standing=run.standing_stats)
    return out if run.split is None else split_members.gather_objects(run.split, out, "sampling")


def member_figures(run: "Run") -> list[dict[str, float]]:
    """Each member's figures from the run's evaluator on the evaluation latents, with its standing statistics
    (a population split across ranks: every member's, gathered from its rank)."""
    # setup draws the evaluation latents whenever there is an evaluator, and figures are asked for only then
    assert run.evaluator is not None and run.eval_z is not None
    out = evaluate_members(run.evaluator, run.gan, run.state, run.eval_z, run.stacked, run.eval_y,
                           standing=run.standing_stats)
    return out if run.split is None else split_members.gather_objects(run.split, out, "an evaluation")


def gathered(run: "Run", tree: Any) -> Any:
    """``tree`` (leaves [members held here, ...]) for the whole population: the identity unless split across ranks."""
    return tree if run.split is None else split_members.gather(run.split, tree)


def images(run: "Run", step: int) -> None:
    """Sample grids (or scatter plots) of the fixed latents into TensorBoard, one per member."""
    if run.logger is None and run.split is None:
        return
    samples = member_samples(run)  # split across ranks: every rank takes part in the gather
    if run.logger is not None:
        ref = run.evaluator.reference if run.evaluator else None
        run.logger.log_images(step, "samples", [picture(s, ref, _cols(run)) for s in samples])


def _cols(run: "Run") -> int | None:
    # A conditional run's fixed samples are class-major: one row per class.
    return None if run.fixed_y is None or run.gan.num_classes is None else len(run.fixed_y) // run.gan.num_classes


def evaluate(run: "Run", step: int, metrics: Mapping[str, Tensor], patience: int | None) -> bool:
    """Score every member, log and print the figures; True when early stopping says stop."""
    ev = run.evaluator
    assert ev is not None  # evaluate is scheduled only with an evaluator
    figs = member_figures(run)
    run.history["eval"].append({"step": step, "figures": figs})
    if run.logger is not None:  # a member without a figure (diverged) gets NaN, which is not logged
        names = dict.fromkeys(k for f in figs for k in f)
        run.logger.log_scalars(step, {f"quality/{k}": [f.get(k, math.nan) for f in figs] for k in names})
    run.say(eval_line(step, metrics, figs, ev.primary))
    run.best, improved = update_best(run.best, figs, ev)
    run.bad_evals = 0 if improved else run.bad_evals + 1
    if patience is not None and run.bad_evals >= patience:
        run.history["stopped"] = f"no improvement of {ev.primary} for {patience} evaluations"
        run.say(f"step {step}: {run.history['stopped']}; stopping early")
        return True
    return False


def checkpoint(run: "Run", step: int) -> None:
    """An atomic checkpoint of the state, data position, RNGs and bookkeeping (rank 0 only;
    a population split across ranks: each rank's shard, :mod:`ganfn.distributed.shards`)."""
    extra = {"history": run.history, "best": run.best, "bad_evals": run.bad_evals,
             "population": run.population.state_dict() if run.population is not None else None}
    if run.split is not None:
        if run.manager is not None:
            shards.save(run.manager.directory, run.split, run.state, step=step, position=run.position,
                        rngs=run.rngs, extra=extra, keep=run.manager.keep)
        return
    if run.manager is None or not run.main:
        return
    run.manager.save(run.state, step=step, position=run.position, rngs=run.rngs, extra=extra)


def population_round(run: "Run", step: int) -> None:
    """A PBT / successive-halving round on the members' latest figures (evaluated now if not at this step)."""
    h = run.history
    figs = h["eval"][-1]["figures"] if h["eval"] and h["eval"][-1]["step"] == step else \
        member_figures(run)
    run.state = run.population(step, run.state, figs)
    if run.logger is not None or run.split is not None:
        hp = population_hparams(run.population, run.state, run)
        if run.logger is not None:
            run.logger.log_scalars(step, {f"hparams/{k}": v for k, v in hp.items()})


def param_rows(run: "Run", config: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Each member's settings for the trackers: the run's config (plain values and None), its hyperparameters and
    seed."""
    base = {k: v for k, v in (config or {}).items() if v is None or isinstance(v, (int, float, str, bool))}
    return [{**base, **hp, "seed": s} for hp, s in zip(run.hp_list, run.seeds, strict=True)]


def output_files(path: Path) -> list[Path]:
    """The files :func:`write_outputs` leaves in a run folder (pictures, ``metrics.json``, ``config.json``)."""
    return sorted(path.glob("*.png")) + [p for p in (path / "metrics.json", path / "config.json") if p.is_file()]


def population_hparams(population: Any, state: Any, run: "Run | None" = None) -> dict[str, Tensor]:
    """The members' current values of the hyperparameters a population schedule explores
    (given ``run``: the whole population's, when it is split across ranks)."""
    hp = hyperparameters(state)
    out = {k: hp[k] for k in sorted(population.space)}
    return out if run is None else gathered(run, out)


def progress_line(run: "Run", step: int, steps: int, metrics: Mapping[str, Tensor]) -> str:
    """A plain progress line for logs without a progress bar."""
    parts = [f"step {step}/{steps}"]
    parts += [f"{k} {_mean(metrics[k]):.4f}" for k in ("d_loss", "g_loss") if k in metrics]
    return " | ".join(parts + _part_readings(metrics))


def _part_readings(metrics: Mapping[str, Tensor]) -> list[str]:
    """The parts' step metrics (``"<part>/<key>"``: declared scalars such as ADA's
    ``ada/p``, loss terms such as ``r1/term``), as ``"ada/p 0.123"`` (stacked: the members' mean)."""
    return [f"{k} {_mean(v):.4g}" + (" (mean)" if v.numel() > 1 else "") for k, v in metrics.items() if "/" in k]


def eval_line(step: int, metrics: Mapping[str, Tensor], figs: list[dict[str, float]], primary: str) -> str:
    """``step N | d_loss .. | g_loss .. | <primary> <value(s)>`` (means over members for the losses)."""
    parts = [f"step {step}"]
    for k in ("d_loss", "g_loss"):
        if k in metrics:
            parts.append(f"{k} {_mean(metrics[k]):.4f}" + (" (mean)" if metrics[k].numel() > 1 else ""))
    parts += _part_readings(metrics)
    vals = [f.get(primary, math.nan) for f in figs]
    parts.append(f"{primary} {vals[0]:.4g}" if len(vals) == 1 else f"{primary} " + " ".join(f"{v:.3g}" for v in vals))
    return " | ".join(parts)


def _mean(v: Tensor) -> float:
    return float(v.detach().double().cpu().reshape(-1).mean())


def _postfix(rec: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k in ("d_loss", "g_loss"):
        v = rec.get(k)
        if v is None:
            continue
        out[k] = f"{v:.3f}" if isinstance(v, float) else f"{sum(v) / len(v):.3f}(mean)"
    return out


def write_outputs(run: "Run", config: Mapping | None) -> None:
    """``samples.png`` (stacked: one labelled panel per member and a mosaic), the figures of
    :func:`ganfn.figures.run_figures` (``losses.png``, ...), and ``metrics.json``."""
    samples = member_samples(run)  # split across ranks: every rank calls this, rank 0 writes
    if not run.main:
        return
    path = run.run_path
    assert path is not None  # outputs are written only with a run directory
    path.mkdir(parents=True, exist_ok=True)
    ref = run.evaluator.reference if run.evaluator else None
    pics = [picture(s, ref, _cols(run)) for s in samples]
    scale = max(1, 480 // max(pics[0].shape[-1], 1)) if samples[0].dim() == 4 else 1
    # one row per class, each labelled with it (fixed classes come only with a conditional GAN's num_classes)
    classes = run.gan.num_classes if run.fixed_y is not None and samples[0].dim() == 4 else None
    if len(pics) == 1:
        if classes is not None:
            figures.class_rows(samples[0], classes, path / "samples.png")
        else:
            tb.save_png(pics[0], path / "samples.png", scale=scale)
    else:
        labels = member_labels(run)
        assert labels is not None  # several pictures: a stacked run
        for i, p in enumerate(pics):
            if classes is not None:
                figures.class_rows(samples[i], classes, path / f"samples_member{i:02d}.png",
                                   title=labels[i])
            else:
                tb.save_png(tb.labelled(tb.upscale(p, scale), labels[i]), path / f"samples_member{i:02d}.png")
        # All members' grids tiled into one picture, member 0 top left, each captioned
        # (captions may wrap to different heights: pad each panel to the tallest).
        small = [tb.labelled(tb.upscale(p, max(1, scale // 2)), labels[i]) for i, p in enumerate(pics)]
        h = max(p.shape[-2] for p in small)
        small = [torch.nn.functional.pad(p, (2, 2, 2 + h - p.shape[-2], 2), value=1.0) for p in small]
        tb.save_png(tb.image_grid(torch.stack(small) * 2 - 1), path / "samples.png")
    ev = run.evaluator
    figures.run_figures(path, run.history, primary=ev.primary if ev else None, n_samples=ev.n_samples if ev else None,
                        higher_is_better=ev.higher_is_better if ev else None, samples=samples,
                        hparams=run.hp_list if run.stacked else None, seeds=run.seeds if run.stacked else None)
    # "protocol": what the figures depend on
    out = {"config": dict(config) if config else None, "seeds": run.seeds, "hparams": run.hp_list, **run.history,
           "protocol": ev.card._asdict() if ev is not None and ev.card is not None else None}
    write_json(path / "metrics.json", out)
