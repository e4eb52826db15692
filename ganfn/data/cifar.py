"""CIFAR-10 from the user's copy of the official python-format files (Krizhevsky, 2009).

The files are ``cifar-10-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html,
or the folder ``cifar-10-batches-py`` it unpacks to: ``data_batch_1`` .. ``data_batch_5``
(the 50,000 training images) and ``test_batch`` (the 10,000 test images). Each batch is
a pickle written by Python 2's cPickle: a dict whose ``b"data"`` is a numpy uint8 array
[N, 3072] (each row 1,024 red, then green, then blue values of a 32x32 image, row-major)
and whose ``b"labels"`` is a list of N ints in 0..9.

A pickle can run any callable it names, so the batches are read with an unpickler
that builds only plain dicts, lists, strings and numbers, plus numpy arrays through
numpy's own array reconstruction; any other global is refused before anything runs.
The archive is read in place (never extracted to disk). ganfn never downloads.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from . import roots
from .images import to_unit_range

__all__ = ["ARCHIVE", "FOLDER", "TEST_BATCHES", "TRAIN_BATCHES", "cifar10", "cifar10_uint8", "find_cifar10",
           "load_batch"]

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
_PIXELS = 3 * 32 * 32
_SPLITS = {"train": TRAIN_BATCHES, "test": TEST_BATCHES, "all": TRAIN_BATCHES + TEST_BATCHES}
_GET = (f"download {ARCHIVE} (the python version) from https://www.cs.toronto.edu/~kriz/cifar.html and put it, "
        f"or the {FOLDER} folder it unpacks to, in that folder (or pass --data-root / set $GANFN_DATA_ROOT)")

# The globals an official batch names (numpy arrays pickled by numpy 1.x under Python 2);
# both module spellings resolve to the running numpy's own reconstruction function.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED`; dicts, lists, str, bytes and ints need no global."""

    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as the data set's page says
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise ValueError(f"{self.where}: refused to unpickle: it names {module}.{name}, which a CIFAR-10 batch "
                         "never holds (only dicts, lists, bytes, ints and numpy arrays are built); the file is "
                         f"not an official CIFAR-10 batch. Replace it with the one from {ARCHIVE}")

    def persistent_load(self, pid: Any) -> Any:
        raise ValueError(f"{self.where}: refused to unpickle: it holds a persistent id, which a CIFAR-10 batch "
                         "never does")


def load_batch(file: IO[bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch pickle -> (uint8 [N, 3, 32, 32], int64 labels [N]); ``where`` names it in errors.

    Raises ``ValueError`` naming ``where`` for a refused global, a broken
    pickle, or a dict without ``data`` [N, 3072] uint8 and N ``labels`` in 0..9."""
    try:
        obj = _BatchUnpickler(file, where).load()
    except ValueError:
        raise
    except Exception as e:  # a truncated or corrupt pickle: pickle raises many kinds
        raise ValueError(f"{where}: not a readable CIFAR-10 batch pickle ({type(e).__name__}: {e}); {_GET}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a CIFAR-10 batch is a dict with data and labels, got {type(obj).__name__}")
    data, labels = (next((obj[k] for k in (key.encode(), key) if k in obj), None) for key in ("data", "labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{where}: b'data' must be a uint8 array [N, {_PIXELS}] (32x32 RGB images), got {got}; "
                         f"is this the python version of CIFAR-10 ({ARCHIVE})?")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: b'labels' must be a list of ints, got {type(labels).__name__}") from e
    if labels is None or len(y) != len(data) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"{where}: b'labels' must hold {len(data)} ints in 0..9 (one per image), got "
                         f"{0 if labels is None else len(y)}" + (f" in {y.min()}..{y.max()}" if len(y) else ""))
    return data.reshape(-1, 3, 32, 32), y


def find_cifar10(root: str | os.PathLike | None = None) -> Path:
    """The CIFAR-10 source under ``root`` (default :func:`ganfn.data.roots.torchvision_root`):
    ``root`` itself when it is the archive or a folder holding the batches, else
    ``root/cifar-10-batches-py``, else ``root/cifar-10-python.tar.gz``.
    Raises ``FileNotFoundError`` naming the paths tried and how to get the files."""
    base = Path(root if root is not None else roots.torchvision_root()).expanduser()
    tried = [base / FOLDER, base / ARCHIVE]
    if base.is_file() or (base.is_dir() and any((base / b).exists() for b in _SPLITS["all"])):
        return base
    for path in tried:
        if path.exists():
            return path
    raise FileNotFoundError(f"CIFAR-10 not found: none of {', '.join(str(p) for p in tried)} exists; {_GET}")


def _read(source: Path, names: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The named batches of a folder or a .tar.gz archive (read as a stream, in archive order)."""
    if source.is_dir():
        return {name: _read_file(source / name) for name in names}
    out = {}
    try:
        with tarfile.open(source, "r|*") as tar:
            for member in tar:
                name = Path(member.name).name
                f = tar.extractfile(member) if name in names and name not in out and member.isfile() else None
                if f is not None:
                    out[name] = load_batch(io.BytesIO(f.read()), f"{source}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{source}: not a readable tar archive ({e}); {_GET}") from e
    missing = [n for n in names if n not in out]
    if missing:
        raise FileNotFoundError(f"{source} holds no {FOLDER}/{missing[0]}" + (f" (nor {', '.join(missing[1:])})"
                                if len(missing) > 1 else "") + f": is it the python version of CIFAR-10? {_GET}")
    return out


def _read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {path} not found; {_GET}")
    with path.open("rb") as f:
        return load_batch(f, str(path))


def cifar10_uint8(root: str | os.PathLike | None = None, split: str = "train") -> tuple[Tensor, Tensor]:
    """CIFAR-10 ``split`` (train: 50,000 images, test: 10,000, all: both, in
    that order) as (uint8 [N, 3, 32, 32], int64 labels [N]), from
    :func:`find_cifar10` ``(root)``. Raises ``FileNotFoundError`` / ``ValueError``
    naming the missing or malformed file."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
    names = _SPLITS[split]
    batches = _read(find_cifar10(root), names)
    x = np.concatenate([batches[n][0] for n in names])
    y = np.concatenate([batches[n][1] for n in names])
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def cifar10(root: str | os.PathLike | None = None, split: str = "train", *,
            labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """CIFAR-10 ``split`` as float32 [N, 3, 32, 32] in [-1, 1] (``v / 127.5 - 1``),
    with the int64 labels [N] when ``labels`` (see :func:`cifar10_uint8`)."""
    x, y = cifar10_uint8(root, split)
    images = to_unit_range(x)
    return (images, y) if labels else images
