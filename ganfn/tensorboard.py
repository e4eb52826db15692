"""TensorBoard logging and the pictures a run leaves behind.

- :func:`image_grid`: samples [N, C, H, W] in [-1, 1] -> one grid image
  [C, rows*H, cols*W] in [0, 1], tiled with ``einops.rearrange``.
- :func:`scatter_image`: 2-D samples -> an RGB scatter plot (drawn with PIL),
  for the Gaussian-mixture data sets.
- :func:`curve_image`: loss curves -> an RGB line plot (PIL).
- :class:`TensorBoardLogger`: the TensorBoard :class:`ganfn.loggers.Logger`, one
  ``SummaryWriter`` per member (``tb/`` for a single run, ``tb/member_00``,
  ``tb/member_01``, ... for a stacked run) so that the members' curves overlay
  in TensorBoard, plus ``add_hparams`` per member.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw
from torch import Tensor

from .loggers.base import member_scalars

__all__ = ["image_grid", "scatter_image", "curve_image", "save_png", "upscale", "labelled", "TensorBoardLogger",
           "member_dirs"]

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def image_grid(images: Tensor, cols: int | None = None, pad: int = 0, pad_value: float = 0.0) -> Tensor:
    """Tile ``images`` [N, C, H, W] (values in [-1, 1]) into [C, rows*(H+2p), cols*(W+2p)] in [0, 1].

    ``cols`` defaults to ceil(sqrt(N)); missing cells are filled with black (-1).
    ``pad`` pixels of ``pad_value`` (in [-1, 1]; 0 is mid-grey) frame each
    image so that neighbouring samples do not run into each other.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    n = images.shape[0]
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    missing = rows * cols - n
    x = images.detach().float().cpu().clamp(-1, 1)
    if missing:
        x = torch.cat([x, torch.full((missing, *x.shape[1:]), -1.0)])
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=pad_value)
    grid = rearrange(x, "(r c) ch h w -> ch (r h) (c w)", r=rows, c=cols)
    return (grid + 1.0) / 2.0


def _to_uint8_hwc(img: Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> uint8 [H, W, 3]."""
    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return rearrange(arr, "c h w -> h w c").numpy()


def save_png(img: Tensor, path: str | os.PathLike, scale: int = 1) -> Path:
    """Save a [C, H, W] image in [0, 1] as PNG, enlarged ``scale`` times (nearest)."""
    pil = Image.fromarray(_to_uint8_hwc(img))
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    pil.save(path)
    return path


def upscale(img: Tensor, scale: int) -> Tensor:
    """[C, H, W] enlarged ``scale`` times (nearest neighbour)."""
    return img if scale <= 1 else img.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def labelled(img: Tensor, text: str) -> Tensor:
    """[C, H, W] in [0, 1] with ``text`` in black on a white band above it (wrapped to the width)."""
    import textwrap

    width = img.shape[-1]
    lines = textwrap.wrap(text, max(8, width // 6)) or [""]
    band = Image.new("RGB", (width, 12 * len(lines) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        draw.text((2, 2 + 12 * i), line, fill=(0, 0, 0))
    top = torch.from_numpy(np.array(band)).permute(2, 0, 1).float() / 255.0
    body = img.float().expand(3, -1, -1) if img.shape[0] == 1 else img.float()
    return torch.cat([top, body], dim=-2)


def scatter_image(points: Tensor, *, reference: Tensor | None = None, size: int = 320,
                  extent: float | None = None) -> Tensor:
    """A scatter plot of 2-D ``points`` [N, 2] (blue) over ``reference`` [M, 2]
    (grey, e.g. the mixture's centres or real samples): [3, size, size] in [0, 1]."""
    pts = points.detach().float().cpu()
    if pts.dim() != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be [N, 2], got {tuple(pts.shape)}")
    finite = pts[torch.isfinite(pts).all(1)]
    ref = reference.detach().float().cpu() if reference is not None else None
    if extent is None:
        both = torch.cat([finite, ref]) if ref is not None else finite
        extent = float(both.abs().max()) * 1.1 if both.numel() else 1.0
        extent = max(extent, 1e-3)
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)

    def px(p: Tensor) -> tuple[float, float]:
        x = (float(p[0]) / extent + 1) / 2 * (size - 1)
        y = (1 - (float(p[1]) / extent + 1) / 2) * (size - 1)
        return x, y

    draw.line([(0, size / 2), (size, size / 2)], fill=(230, 230, 230))
    draw.line([(size / 2, 0), (size / 2, size)], fill=(230, 230, 230))
    if ref is not None:
        for p in ref:
            x, y = px(p)
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(150, 150, 150))
    for p in finite:
        x, y = px(p)
        draw.rectangle([x - 1, y - 1, x + 1, y + 1], fill=_COLORS[0])
    arr = torch.from_numpy(np.asarray(img).copy())
    return rearrange(arr, "h w c -> c h w").float() / 255.0


def curve_image(series: Mapping[str, Sequence[tuple[int, float]]], *, width: int = 640, height: int = 360) -> Tensor:
    """Line plot of named series of (step, value) pairs: [3, height, width] in [0, 1].

    Non-finite values are skipped. The y range is printed at the left edge and
    each series' name in its colour at the top.
    """
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, 10, 24, 24
    pts = {k: [(s, v) for s, v in vals if math.isfinite(v)] for k, vals in series.items()}
    allv = [v for vals in pts.values() for _, v in vals]
    alls = [s for vals in pts.values() for s, _ in vals]
    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    if allv:
        lo, hi = min(allv), max(allv)
        if hi - lo < 1e-12:
            lo, hi = lo - 1, hi + 1
        s0, s1 = min(alls), max(alls)
        s1 = s1 if s1 > s0 else s0 + 1
        draw.text((2, top - 4), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((2, height - bottom - 8), f"{lo:.3g}", fill=(0, 0, 0))
        draw.text((left, height - bottom + 6), f"step {s0}", fill=(0, 0, 0))
        draw.text((width - right - 80, height - bottom + 6), f"step {s1}", fill=(0, 0, 0))

        def px(s: float, v: float) -> tuple[float, float]:
            return (left + (s - s0) / (s1 - s0) * (width - left - right),
                    height - bottom - (v - lo) / (hi - lo) * (height - top - bottom))

        x_text = left
        for i, (name, vals) in enumerate(pts.items()):
            color = _COLORS[i % len(_COLORS)]
            if len(vals) > 1:
                draw.line([px(s, v) for s, v in vals], fill=color, width=2)
            elif vals:
                x, y = px(*vals[0])
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
            draw.text((x_text, 6), name, fill=color)
            x_text += 8 * len(name) + 16
    arr = torch.from_numpy(np.asarray(img).copy())
    return rearrange(arr, "h w c -> c h w").float() / 255.0


def member_dirs(log_dir: str | os.PathLike, members: int | None) -> list[Path]:
    """TensorBoard run directories: ``[log_dir]`` for a single run (``members=None``),
    ``log_dir/member_00`` ... for a stacked run of ``members`` members."""
    log_dir = Path(log_dir)
    if members is None:
        return [log_dir]
    return [log_dir / f"member_{i:02d}" for i in range(members)]


class TensorBoardLogger:
    """The TensorBoard :class:`ganfn.loggers.Logger`: one ``SummaryWriter`` per member.

    ``members=None`` is a single (unstacked) run in ``log_dir``; otherwise member
    i logs to ``log_dir/member_<i>`` (:func:`member_dirs`) so that the members'
    curves overlay. The parameters are written with the final figures as
    TensorBoard hparams (``add_hparams`` needs both at once); artifacts are the
    run folder's own files and are not copied.
    """

    def __init__(self, log_dir: str | os.PathLike, members: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.members = members
        self.dirs = member_dirs(log_dir, members)
        self.writers = [SummaryWriter(log_dir=str(d)) for d in self.dirs]
        self.params: list[Mapping[str, Any]] = [{} for _ in self.writers]

    def log_params(self, params: Sequence[Mapping[str, Any]]) -> None:
        self.params = [dict(p) for p in params]

    def log_scalars(self, step: int, values: Mapping[str, Tensor | float | Sequence[float]]) -> None:
        for w, vals in zip(self.writers, member_scalars(values, self.members), strict=True):
            for name, x in vals.items():
                w.add_scalar(name, x, step)

    def log_images(self, step: int, name: str, images: Sequence[Tensor]) -> None:
        for w, img in zip(self.writers, images, strict=True):
            w.add_image(name, img, step)

    def log_summary(self, figures: Sequence[Mapping[str, float]]) -> None:
        """``add_hparams`` for each member, written into that member's own run."""
        for w, hp, m in zip(self.writers, self.params, figures, strict=True):
            clean = {k: v for k, v in hp.items() if isinstance(v, (int, float, str, bool))}
            mets = {f"hparam/{k}": float(v) for k, v in m.items()
                    if isinstance(v, (int, float)) and math.isfinite(float(v))}
            w.add_hparams(clean, mets, run_name=".")

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Nothing: TensorBoard's files live in the run folder beside the artifacts."""

    def close(self) -> None:
        for w in self.writers:
            w.flush()
            w.close()
