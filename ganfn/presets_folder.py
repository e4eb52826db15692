"""A run on the user's own image folder: its defaults, chosen from a header scan, and its quality figure.

- :func:`choose`: the channels (grey stays 1, colour 3) and the image size
  (the smallest size the model takes that is not below the images' own,
  capped at :data:`AUTO_MAX_SIZE`), each with the reason, in one line.
- :func:`folder_evaluator`: ``FD-RandConv`` (:mod:`ganfn.metrics.random_features`)
  of generated samples against the folder's images, with its protocol card;
  :func:`randconv_evaluator`: the same figure against any reference images.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from . import data as gdata
from . import metrics
from .evaluation import Evaluator

__all__ = ["AUTO_MAX_SIZE", "REFERENCE_MAX", "FolderChoice", "choose", "folder_evaluator", "randconv_evaluator"]

AUTO_MAX_SIZE = 64  # DCGAN's classic size; larger photos train at 64 unless --image-size asks for more
REFERENCE_MAX = 10_000  # reference images for FD-RandConv: the folder's first ones, in sorted order


class FolderChoice(NamedTuple):
    """The settings a folder run takes (``channels``, ``size``), the scan behind them, and a one-line ``note``."""

    scan: gdata.FolderScan
    channels: int
    size: int
    note: str


def choose(scan: gdata.FolderScan, model: str, takes: Callable[[int], int] | None, *,
           channels: int | None = None, image_size: int | None = None) -> FolderChoice:
    """Channels and image size for a folder run, from its scan; given values win.

    ``takes(side)``: the smallest size ``model`` accepts that is >= ``side``
    (None: the model takes any size, as an MLP does).
    """
    why_c = "given" if channels is not None else ("every image is grey" if scan.channels == 1 else "colour images")
    channels = channels if channels is not None else scan.channels
    side = scan.side
    if image_size is not None:
        size, why = image_size, "--image-size"
    else:
        size = takes(side) if takes is not None else side
        why = f"smallest size {model} takes >= {side}" if takes is not None else f"{model} takes any size"
        if size > AUTO_MAX_SIZE:
            size, why = AUTO_MAX_SIZE, f"capped at {AUTO_MAX_SIZE} for a first run; --image-size for more"
    skipped = f", {len(scan.skipped)} unreadable skipped" if scan.skipped else ""
    note = (f"data: folder {scan.root}, {scan.describe()} (all headers scanned{skipped}); train as {channels} "
            f"channel{'s' if channels > 1 else ''} ({why_c}), {side}x{side} -> {size}x{size} ({why})")
    return FolderChoice(scan, channels, size, note)


def _real_images(data: Any, workers: int) -> Tensor:
    """The first :data:`REFERENCE_MAX` training images (uint8 or float [M, C, H, W]), unflipped, in order."""
    images = data[0] if isinstance(data, tuple) else data
    out, seen = [], 0
    for batch in gdata.in_order(images, min(256, REFERENCE_MAX), workers):  # decode no file past the cap
        out.append(batch[: REFERENCE_MAX - seen])
        seen += out[-1].shape[0]
        if seen >= REFERENCE_MAX:
            break
    return torch.cat(out)


def folder_evaluator(data: Any, n: int, root: str, workers: int = 0) -> Evaluator:
    """``FD-RandConv`` (and ``KID-RandConv``) of generated samples against the folder's images.

    ``data``: the run's training data (an image source, a tensor, or a
    labelled ``(images, labels)`` pair); its first :data:`REFERENCE_MAX`
    images are embedded once, here. Conditional runs are scored over all
    classes together. Comparable only between runs on the same folder.
    """
    images = _real_images(data, workers)
    shape = "x".join(map(str, images.shape[1:]))
    return randconv_evaluator(images, n, f"the training folder {root} as trained ({shape}): its first {{m}} images in "
                              "sorted order, unflipped; no held-out split; comparable only between runs on this folder "
                              "at this shape", root)


def randconv_evaluator(images: Tensor, n: int, reference: str, name: str) -> Evaluator:
    """``FD-RandConv`` (and ``KID-RandConv``) of ``n`` generated samples against
    ``images`` [M, C, H, W] (uint8, or float in [-1, 1]), embedded once here.
    ``reference`` describes them on the card (``{m}`` becomes M); ``name``
    names them in errors."""
    ext = metrics.random_conv_extractor()
    real = ext(images)
    m = real.features.shape[0]
    if m < 2:
        raise ValueError(f"FD-RandConv needs >= 2 reference images; {name} has {m}")

    def fd(samples: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        size = min(300, samples.shape[0], m)
        out = metrics.evaluate_images(samples, real, ext, kid_subsets=20, kid_subset_size=size,
                                      generator=torch.Generator().manual_seed(0))
        return {k: float(v) for k, v in out.items()}

    card = metrics.ProtocolCard("FD-RandConv", ext.description, ext.weights_sha256, ext.resize, n, m,
                                reference.replace("{m}", str(m)))
    return Evaluator(fd, "FD-RandConv", higher_is_better=False, n_samples=n, card=card)
