"""Image files on disk, one decoded image at a time: folders and zip archives.

:class:`ImageFiles` is a map-style ``torch.utils.data.Dataset``: item ``i`` is
file ``i`` (sorted path order, so N and the order are deterministic) decoded
with PIL, centre-cropped to a square and resized to ``size`` x ``size``
(bilinear), as in the DCGAN recipe, returned as uint8 [C, size, size]. Item
``(i, True)`` is the same image flipped left-right. It works in DataLoader
worker processes: a zip archive is opened lazily once per process.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Collection, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "READ_ERRORS", "BadImageError", "ImageFiles", "decode_square"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
PathLike = Union[str, os.PathLike]
# What PIL raises for a damaged file: OSError (unidentified, truncated), SyntaxError (a bad
# PNG checksum in verify), ValueError / EOFError / struct.error / zlib.error (mangled data).
READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


class BadImageError(ValueError):
    """An image file PIL cannot open or decode: ``name`` is the file, ``reason`` PIL's message."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)  # both in args, so the error crosses process boundaries intact
        self.name, self.reason = name, reason

    def __str__(self) -> str:
        return (f"cannot read image {self.name}: {self.reason} (remove or replace the file, or skip unreadable "
                "files: ganfn train --skip-bad-images)")


def decode_square(source: PathLike | io.BytesIO, size: int, mode: str, name: str) -> np.ndarray:
    """Decode one image, centre-crop it to a square, resize: uint8 [size, size, C].

    Cropping before resizing keeps the aspect ratio (DCGAN's recipe). An
    unreadable file raises :class:`BadImageError` naming ``name``.
    """
    from PIL import Image

    try:
        with Image.open(source) as im:
            im = im.convert(mode)
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BILINEAR,
                                                                reducing_gap=None)
            arr = np.array(im, dtype=np.uint8)  # a writable copy: torch warns on read-only buffers
    except READ_ERRORS as e:
        raise BadImageError(name, str(e) or type(e).__name__) from e
    return arr[:, :, None] if arr.ndim == 2 else arr


class ImageFiles(torch.utils.data.Dataset):
    """The images under a folder (recursively) or inside a ``.zip`` archive.

    ``size``: output side; ``channels``: 3 (RGB) or 1 (greyscale);
    ``exclude``: names (as in ``self.names``) to leave out, e.g. the unreadable
    files a header scan found (:func:`ganfn.data.scan_images`); ``max_images``:
    keep the first that many of the rest. ``self[i]`` and ``self[(i, flip)]``
    are uint8 [channels, size, size].
    """

    def __init__(self, path: PathLike, size: int = 64, *, channels: int = 3, max_images: int | None = None,
                 exclude: Collection[str] = ()) -> None:
        root = Path(path).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"image folder or zip archive not found: {root}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.root, self.size, self.channels = root, size, channels
        self.is_zip = root.is_file()
        if self.is_zip:
            if not zipfile.is_zipfile(root):
                raise NotADirectoryError(f"not a folder of images nor a zip archive: {root}")
            with zipfile.ZipFile(root) as z:
                names = sorted(n for n in z.namelist()
                               if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            names = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if exclude:
            drop = set(exclude)
            names = [n for n in names if n not in drop]
        if max_images is not None:
            if not isinstance(max_images, int) or max_images < 1:
                raise ValueError(f"max_images must be a positive int, got {max_images!r}")
            names = names[:max_images]
        if not names:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
        self.names = names
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        # An open zip handle cannot cross into a worker process: each opens its own.
        return {**self.__dict__, "_zip": None, "_zip_pid": None}

    def display_name(self, i: int) -> str:
        """File ``i`` as errors name it: its path (``archive.zip:inner/path`` inside a zip)."""
        return f"{self.root}:{self.names[i]}" if self.is_zip else self.names[i]

    def open(self, i: int) -> PathLike | io.BytesIO:
        """What ``PIL.Image.open`` reads file ``i`` from: its path, or its bytes from the zip archive."""
        if not self.is_zip:
            return self.names[i]
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip, self._zip_pid = zipfile.ZipFile(self.root), os.getpid()
        return io.BytesIO(self._zip.read(self.names[i]))

    def __getitem__(self, item: int | tuple[int, bool]) -> Tensor:
        i, flip = item if isinstance(item, tuple) else (item, False)
        arr = decode_square(self.open(i), self.size, "RGB" if self.channels == 3 else "L", self.display_name(i))
        if flip:
            arr = arr[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
