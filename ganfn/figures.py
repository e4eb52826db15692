"""Figures a person reads at a glance (matplotlib, drawn off-screen).

Each function returns a ``matplotlib.figure.Figure``; ``save(fig, path)``
writes it as a PNG and closes it. matplotlib is imported lazily with the Agg
backend, so nothing here needs a display.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["heatmap", "population_curves", "save"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def heatmap(values: Sequence[Sequence[float]], row_labels: Sequence[Any], col_labels: Sequence[Any], *,
            row_name: str = "", col_name: str = "", title: str = "", fmt: str = "{:.3g}",
            higher_is_better: bool = True) -> Any:
    """A 2-D grid of values ([rows][cols]) as a colour map with each value
    written in its cell; the colour scale runs from worst (light) to best (dark).
    NaN cells (diverged members) are grey and marked ``nan``."""
    import numpy as np

    a = np.asarray(values, dtype=float)
    if a.ndim != 2 or a.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"heatmap: values of shape {a.shape} do not match {len(row_labels)} row and {len(col_labels)} column labels")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * a.shape[1] + 2.5, 0.8 * a.shape[0] + 1.8))
    cmap = plt.get_cmap("viridis" if higher_is_better else "viridis_r").with_extremes(bad="0.8")
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, aspect="auto")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(a.shape[1]), [str(c) for c in col_labels])
    ax.set_yticks(range(a.shape[0]), [str(r) for r in row_labels])
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    finite = a[np.isfinite(a)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j]
            # viridis is dark at its low end: white text on the darker half of the scale.
            dark = math.isfinite(v) and ((v < mid) if higher_is_better else (v > mid))
            ax.text(j, i, fmt.format(v) if math.isfinite(v) else "nan", ha="center", va="center",
                    color="white" if dark else "black", fontsize=9)
    ax.set_title(title)
    return fig


def population_curves(evals: Sequence[Mapping[str, Any]], metric: str, *,
                      events: Sequence[Mapping[str, Any]] = (), title: str = "") -> Any:
    """Each member's ``metric`` over the steps, with copy events marked.

    ``evals`` is the loop's ``history["eval"]`` (``{"step", "figures": [per
    member dict]}``); ``events`` is :attr:`ganfn.lineage.Lineage.events`: a copy
    draws a dashed line from the source's value to the member's next point and
    a marker; a halved member's line ends with an x.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if not evals:
        raise ValueError("population_curves needs at least one evaluation")
    S = len(evals[0]["figures"])
    steps = [e["step"] for e in evals]
    ys = [[e["figures"][i].get(metric, math.nan) for e in evals] for i in range(S)]
    colors = plt.get_cmap("tab20" if S > 10 else "tab10")
    for i in range(S):
        ax.plot(steps, ys[i], color=colors(i % colors.N), lw=1.2, label=f"member {i}")
    at = {s: k for k, s in enumerate(steps)}
    for e in events:
        k = at.get(e["step"])
        if k is None:
            continue
        i = e["member"]
        if e["kind"] == "copy" and e.get("source") is not None:
            nxt = min(k + 1, len(steps) - 1)
            ax.plot([steps[k], steps[nxt]], [ys[e["source"]][k], ys[i][nxt]], ls="--", lw=0.8, color=colors(i % colors.N))
            ax.plot([steps[k]], [ys[e["source"]][k]], marker="o", ms=4, mfc="none", color=colors(i % colors.N))
        elif e["kind"] == "halved":
            ax.plot([steps[k]], [ys[i][k]], marker="x", ms=7, color=colors(i % colors.N))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per member (o--: copied from that member; x: halved)")
    if S <= 16:
        ax.legend(fontsize=7, ncol=2, loc="best")
    return fig
