"""Figures a person reads at a glance, drawn with matplotlib.

- :func:`curves`: one quantity over the steps on an axis; for a stacked run
  ([T, S] values) each member's thin line, the member mean and a ±1 std band.
- :func:`training_figure`: losses and the quality figure of a run's history
  (``ganfn.loop.fit``'s ``history`` or ``metrics.json``) over the steps, with
  labelled axes, a legend and the number of samples behind the quality figure
  (Fréchet distances are biased by it: figures are only comparable at equal n),
  on a log axis when the figure spans a factor of 10 or more.
- :func:`heatmap`: any [R, C] grid of numbers with labelled rows and columns;
  :func:`sweep_heatmap` puts a sweep's final figure on its 2-D grid with it.
- :func:`member_rows`: a sample grid with one row per member of a stacked run.
- :func:`class_rows`: a conditional run's sample grid, each row labelled with its class.
- :func:`population_curves`: each member's quality figure over the steps of a
  population-based training run, with its copy and halving events marked.
- :func:`run_figures`: what ``fit`` writes at the end of a run.

Figures are built on a bare :class:`matplotlib.figure.Figure` with the Agg
canvas, never through ``pyplot``: no global state, no backend switch, safe in
threads and notebooks. Every function saves a PNG and returns its path.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["curves", "training_figure", "training_plot", "heatmap", "sweep_heatmap", "member_rows", "class_rows",
           "class_rows_plot", "population_curves", "run_figures", "series"]

LOSS_KEYS = ("d_loss", "g_loss")


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def curves(ax: Any, steps: Sequence[int], values: Any, label: str, *, color: str | None = None) -> None:
    """Draw ``values`` ([T] or [T, S]) against ``steps`` [T] on a matplotlib axis.

    [T]: one line. [T, S] with S > 1: each member as a thin translucent line,
    the mean over members as a thick line labelled ``label (mean of S)`` and a
    shaded mean ± std band. Non-finite values (a diverged member) are left out
    of the mean and the band, and drawn as gaps.
    """
    v = np.asarray(values, dtype=np.float64)
    x = np.asarray(steps, dtype=np.float64)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim not in (1, 2) or v.shape[0] != x.shape[0]:
        raise ValueError(f"values must be [T] or [T, S] with T = len(steps) = {x.shape[0]}, got shape {v.shape}")
    if v.ndim == 1:
        ax.plot(x, v, label=label, color=color)
        return
    line = None
    for s in range(v.shape[1]):
        (line,) = ax.plot(x, v[:, s], lw=0.7, alpha=0.35, color=color if line is None else line.get_color())
    assert line is not None  # v has at least one column
    c = line.get_color()
    finite = np.isfinite(v)
    count = finite.sum(1)
    safe = np.where(finite, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, safe.sum(1) / np.maximum(count, 1), np.nan)
        std = np.sqrt(np.where(count > 0,
                               (np.where(finite, v - mean[:, None], 0.0) ** 2).sum(1) / np.maximum(count, 1), np.nan))
    ax.plot(x, mean, lw=2.0, color=c, label=f"{label} (mean of {v.shape[1]})")
    ax.fill_between(x, mean - std, mean + std, color=c, alpha=0.2, lw=0, label=f"{label} ± std")


def series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[Any]]:
    """Steps and values of ``key`` from history records ``{"step": t, key: v}``
    (v a float, or a list of floats for a stacked run); records without it are skipped."""
    steps, vals = [], []
    for rec in records:
        if rec.get(key) is not None:
            steps.append(int(rec["step"]))
            vals.append(rec[key])
    return steps, vals


def _quality_records(history: Mapping[str, Any], primary: str) -> list[dict[str, Any]]:
    recs = []
    for entry in ([history["initial"]] if history.get("initial") else []) + list(history.get("eval") or []):
        figs = entry["figures"]
        vals = [f.get(primary, math.nan) for f in figs]
        recs.append({"step": entry["step"], primary: vals[0] if len(vals) == 1 else vals})
    return recs


def training_figure(
    history: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    primary: str | None = None,
    n_samples: int | None = None,
    title: str | None = None,
) -> Path:
    """:func:`training_plot` saved as a PNG at ``path``."""
    return _save(training_plot(history, primary=primary, n_samples=n_samples, title=title), path)


def _log_worthy(values: Any) -> bool:
    """Positive values spanning at least a factor of 10: a linear axis would
    flatten the small ones (a Fréchet distance falls from 21 at step 0 to 0.2)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return bool(v.size) and bool((v > 0).all()) and float(v.max()) >= 10 * float(v.min())


def training_plot(
    history: Mapping[str, Any],
    *,
    primary: str | None = None,
    n_samples: int | None = None,
    title: str | None = None,
) -> Figure:
    """Losses (and the quality figure ``primary``, if the history has it) over the steps.

    ``history`` is ``fit``'s: ``train`` records (``d_loss``/``g_loss``, floats
    or per-member lists) and ``initial``/``eval`` records of figures.
    ``n_samples``: generated samples behind each quality value, shown on its axis.
    The quality axis is logarithmic when its values are positive and span a
    factor of 10 or more (a distance's first value would flatten the rest).
    """
    quality = _quality_records(history, primary) if primary else []
    panels = 2 if quality else 1
    fig = Figure(figsize=(6.4 * panels, 4.0), layout="constrained")
    ax = fig.add_subplot(1, panels, 1)
    drawn = False
    for k in LOSS_KEYS:
        steps, vals = series(history.get("train") or [], k)
        if steps:
            curves(ax, steps, vals, k)
            drawn = True
    ax.set(xlabel="step", ylabel="loss", title="losses")
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no losses logged yet", ha="center", va="center", transform=ax.transAxes)
    if quality and primary:  # quality records exist only for a primary figure
        qa = fig.add_subplot(1, panels, 2)
        steps, vals = series(quality, primary)
        curves(qa, steps, vals, primary, color="tab:green")
        n_txt = f" (n = {n_samples} samples)" if n_samples else ""
        log = _log_worthy(vals)
        qa.set(xlabel="step", ylabel=primary + n_txt + (", log scale" if log else ""), title=f"{primary} over training")
        if log:
            qa.set_yscale("log")
        qa.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.3g}"


def heatmap(
    values: Any,
    row_labels: Sequence[Any],
    col_labels: Sequence[Any],
    path: str | os.PathLike,
    *,
    row_name: str,
    col_name: str,
    value_name: str,
    higher_is_better: bool | None = None,
) -> Path:
    """A heatmap of ``values`` [R, C] with each cell's number written in it.

    Rows are labelled ``row_labels`` [R] under the axis name ``row_name``,
    columns likewise; the colour bar is ``value_name``. With
    ``higher_is_better`` the best cell is outlined. NaN cells (a diverged
    member, a missing combination) are grey.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"values must be [R, C] = [{len(row_labels)}, {len(col_labels)}] (one row per row label, one column "
            f"per column label), got shape {v.shape}"
        )
    fig = Figure(figsize=(1.2 + 1.1 * max(3, v.shape[1]), 1.0 + 0.7 * max(3, v.shape[0])), layout="constrained")
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(v)
    import matplotlib

    cmap = matplotlib.colormaps["viridis" if higher_is_better in (None, True)
                                else "viridis_r"].with_extremes(bad="lightgrey")
    im = ax.imshow(masked, cmap=cmap, aspect="auto")
    ax.set_xticks(range(v.shape[1]), [str(c) for c in col_labels])
    ax.set_yticks(range(v.shape[0]), [str(r) for r in row_labels])
    ax.set(xlabel=col_name, ylabel=row_name, title=value_name)
    for (r, c), x in np.ndenumerate(v):
        # White text on dark cells: the cell colour's luma decides.
        red, green, blue, _ = cmap(im.norm(x)) if math.isfinite(x) else (1.0, 1.0, 1.0, 1.0)
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(c, r, _fmt(x), ha="center", va="center", color="white" if dark else "black", fontsize="small")
    if higher_is_better is not None and masked.count():
        r, c = np.unravel_index(int(np.ma.argmax(masked) if higher_is_better else np.ma.argmin(masked)), v.shape)
        ax.add_patch(_outline(int(c), int(r)))
    fig.colorbar(im, ax=ax, label=value_name)
    return _save(fig, path)


def _outline(c: int, r: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.5)


def sweep_heatmap(
    hparams: Sequence[Mapping[str, float]],
    finals: Sequence[float],
    path: str | os.PathLike,
    *,
    value_name: str,
    keys: tuple[str, str] | None = None,
    higher_is_better: bool | None = None,
) -> Path:
    """The final figure of a sweep over a 2-D grid: ``hparams[i]`` and ``finals[i]`` per member.

    ``keys`` = (row key, column key); default: the two hyperparameters that
    vary across members. Members sharing a cell (several seeds) are averaged
    over their finite values.
    """
    if len(hparams) != len(finals):
        raise ValueError(f"{len(hparams)} hyperparameter dicts but {len(finals)} final figures")
    if keys is None:
        varying = [k for k in hparams[0] if len({h.get(k) for h in hparams}) > 1] if hparams else []
        if len(varying) != 2:
            raise ValueError(f"a sweep heatmap needs exactly 2 varying hyperparameters, found {varying}; pass keys=")
        keys = (varying[0], varying[1])
    rows = sorted({h[keys[0]] for h in hparams})
    cols = sorted({h[keys[1]] for h in hparams})
    cells: dict[tuple[int, int], list[float]] = {}
    for h, f in zip(hparams, finals, strict=True):
        cells.setdefault((rows.index(h[keys[0]]), cols.index(h[keys[1]])), []).append(float(f))
    grid = np.full((len(rows), len(cols)), np.nan)
    for (r, c), fs in cells.items():
        ok = [f for f in fs if math.isfinite(f)]
        grid[r, c] = sum(ok) / len(ok) if ok else math.nan
    return heatmap(grid, rows, cols, path, row_name=keys[0], col_name=keys[1], value_name=value_name,
                   higher_is_better=higher_is_better)


def member_rows(
    samples: Sequence[Tensor], path: str | os.PathLike, *, labels: Sequence[str] | None = None, per_row: int = 8
) -> Path:
    """One row of ``per_row`` images per member: ``samples[i]`` [N, C, H, W] in [-1, 1].

    Rows are labelled ``labels[i]`` (default ``member i``), so a collapsed or
    diverged seed stands out next to the healthy ones.
    """
    if not samples or any(s.dim() != 4 for s in samples):
        raise ValueError("samples must be a non-empty list of image batches [N, C, H, W]")
    labels = list(labels) if labels is not None else [f"member {i}" for i in range(len(samples))]
    if len(labels) != len(samples):
        raise ValueError(f"{len(samples)} members but {len(labels)} labels")
    k = min(per_row, min(s.shape[0] for s in samples))
    rows = []
    for s in samples:
        x = ((s[:k].detach().float().cpu().nan_to_num(0.0).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1.0)
        rows.append(np.concatenate(list(x), axis=1))
    h = rows[0].shape[0]
    fig = Figure(figsize=(1.5 + 0.9 * k, 0.3 + 0.9 * len(samples)), layout="constrained")
    for i, (row, lab) in enumerate(zip(rows, labels, strict=True)):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        ax.imshow(row[..., 0] if row.shape[-1] == 1 else row, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([h / 2], [lab])
        ax.tick_params(length=0)
    return _save(fig, path)


def class_rows_plot(samples: Tensor, num_classes: int, *, class_names: Sequence[str] | None = None,
                    title: str | None = None) -> Figure:
    """A conditional run's sample grid with each row labelled by its class.

    ``samples`` [K * n, C, H, W] in [-1, 1] are class-major (``n`` samples of
    class 0, then of class 1, ...: ``ganfn.labels.class_rows``); row k is
    labelled ``class_names[k]`` (default ``class k``).
    """
    if samples.dim() != 4 or samples.shape[0] == 0 or samples.shape[0] % num_classes:
        raise ValueError(f"samples must be [K * n, C, H, W] with K = {num_classes} classes, class-major; "
                         f"got shape {tuple(samples.shape)}")
    names = [f"class {k}" for k in range(num_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{num_classes} classes but {len(names)} class names")
    n = samples.shape[0] // num_classes
    x = ((samples.detach().float().cpu().nan_to_num(0.0).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1.0)
    h, w = x.shape[1], x.shape[2]
    grid = x.reshape(num_classes, n, h, w, -1).transpose(0, 2, 1, 3, 4).reshape(num_classes * h, n * w, -1)
    scale = max(0.15, min(0.6, 8.0 / max(n, num_classes)))
    fig = Figure(figsize=(1.3 + scale * n, 0.4 + scale * num_classes), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([h * (k + 0.5) for k in range(num_classes)], names)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize="small")
    return fig


def class_rows(samples: Tensor, num_classes: int, path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
               title: str | None = None) -> Path:
    """:func:`class_rows_plot` saved as a PNG at ``path``."""
    return _save(class_rows_plot(samples, num_classes, class_names=class_names, title=title), path)


def population_curves(
    evals: Sequence[Mapping[str, Any]], metric: str, path: str | os.PathLike, *,
    events: Sequence[Mapping[str, Any]] = (), title: str | None = None,
) -> Path:
    """Each member's ``metric`` over the steps, with the lineage's events marked.

    ``evals`` is ``fit``'s ``history["eval"]`` (``{"step", "figures": [one dict
    per member]}``); ``events`` is ``ganfn.lineage.Lineage.events``. A copy is a
    dashed line from the source's value at that step to the member's next value
    (the member continues from the source's state); a halved member gets an x.
    """
    if not evals:
        raise ValueError("population_curves needs at least one evaluation (history['eval'])")
    import matplotlib

    S = len(evals[0]["figures"])
    steps = [int(e["step"]) for e in evals]
    ys = [[e["figures"][i].get(metric, math.nan) for e in evals] for i in range(S)]
    colors = matplotlib.colormaps["tab20" if S > 10 else "tab10"]
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    at = {s: k for k, s in enumerate(steps)}
    copied_at = {(int(e["member"]), at[int(e["step"])]) for e in events if e["kind"] == "copy" and int(e["step"]) in at}
    for i in range(S):
        # A copied member's own line breaks at the copy: it continues from the source's state.
        xs, vs = [], []
        for k, (x, v) in enumerate(zip(steps, ys[i], strict=True)):
            xs.append(x)
            vs.append(v)
            if (i, k) in copied_at:
                xs.append(x)
                vs.append(math.nan)
        ax.plot(xs, vs, color=colors(i % colors.N), lw=1.2, label=f"member {i}")
    for e in events:
        at_k, i = at.get(int(e["step"])), int(e["member"])
        if at_k is None:
            continue
        k = at_k
        c = colors(i % colors.N)
        if e["kind"] == "copy" and e.get("source") is not None:
            nxt = min(k + 1, len(steps) - 1)
            ax.plot([steps[k], steps[nxt]], [ys[e["source"]][k], ys[i][nxt]], ls="--", lw=0.9, color=c)
            ax.plot([steps[k]], [ys[e["source"]][k]], marker="o", ms=4, mfc="none", color=c)
        elif e["kind"] == "halved":
            ax.plot([steps[k]], [ys[i][k]], marker="x", ms=7, color=c)
    ax.set(xlabel="step", ylabel=metric,
           title=title or f"{metric} per member (o- -: copied that member's state; x: frozen by halving)")
    if S <= 16:
        ax.legend(fontsize="x-small", ncol=2)
    return _save(fig, path)


def run_figures(
    run_path: str | os.PathLike,
    history: Mapping[str, Any],
    *,
    primary: str | None = None,
    n_samples: int | None = None,
    higher_is_better: bool | None = None,
    samples: Sequence[Tensor] | None = None,
    hparams: Sequence[Mapping[str, float]] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Path]:
    """The end-of-run figures in ``run_path``: ``losses.png`` always; for a stacked
    run of images ``samples_members.png`` (one row per member); for a sweep over
    exactly two hyperparameters with a final figure, ``sweep_heatmap.png``; for a
    population run (``history["population"]``), ``population.png``."""
    run_path = Path(run_path)
    title = f"{primary} on n = {n_samples} samples" if primary and n_samples else None
    out = [training_figure(history, run_path / "losses.png", primary=primary, n_samples=n_samples, title=title)]
    if samples is not None and len(samples) > 1 and samples[0].dim() == 4:
        labels = None
        if seeds is not None:
            labels = [f"seed {s}" + "".join(f"\n{k}={v:g}" for k, v in (hparams[i] if hparams else {}).items()
                                             if isinstance(v, (int, float)))
                      for i, s in enumerate(seeds)]
        out.append(member_rows(samples, run_path / "samples_members.png", labels=labels))
    finals = (history.get("final") or {}).get("figures")
    if primary and finals and hparams and len(hparams) > 1:
        varying = [k for k in hparams[0] if len({h.get(k) for h in hparams}) > 1]
        if len(varying) == 2:
            name = primary + (f" (n = {n_samples})" if n_samples else "")
            out.append(sweep_heatmap(hparams, [f.get(primary, math.nan) for f in finals],
                                     run_path / "sweep_heatmap.png",
                                     value_name=name, keys=(varying[0], varying[1]), higher_is_better=higher_is_better))
    if primary and history.get("population") and history.get("eval"):
        out.append(population_curves(history["eval"], primary, run_path / "population.png",
                                     events=history["population"]["events"]))
    return out

