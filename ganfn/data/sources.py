"""Image sources for ``next_batch``: uint8 in memory, or streamed from disk by workers.

Both kinds walk the same checkpointable position as a tensor does
(``ganfn.data.batching``: epoch orders from the position's seed), gather the
samples of the next batch, flip the ones the position's seed says to flip
(``flip_bits``) and return float32 [B, C, H, W] in [-1, 1]. So for one seed
the streaming and the preloaded pipelines yield the same batches, bit for bit,
and a run resumed from a checkpoint's position continues exactly.

- :class:`InMemoryImages`: uint8 [N, C, H, W] in memory (4x less than float32:
  20,000 RGB images at 64x64 are 246 MB instead of 983 MB).
- :class:`StreamingImages`: decodes each batch from the files with a
  ``torch.utils.data.DataLoader`` and ``workers`` processes that run ahead of
  training; memory stays at a few batches whatever the folder's size.
- :func:`images_source`: either one, from a folder or a ``.zip`` archive.
"""
from __future__ import annotations

import os
from typing import Collection, Iterator

import torch
from torch import Tensor

from .batching import Position, batch_indices
from .folder import BadImageError, ImageFiles
from .images import to_unit_range

__all__ = ["ImageSource", "InMemoryImages", "StreamingImages", "images_source", "preload", "in_order"]


def _one_thread(_worker_id: int) -> None:
    # Decoding workers do not need torch's intra-op threads; on a shared
    # machine they would only fight the training process for cores.
    torch.set_num_threads(1)


class _Decoded(torch.utils.data.Dataset):
    """``files[item]``, or the :class:`BadImageError` it raised, returned rather than raised.

    A DataLoader worker re-raises its exceptions in the main process wrapped in
    the worker's traceback text; returning the error lets the main process raise
    it as it is: one line naming the file.
    """

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int | tuple[int, bool]) -> Tensor | BadImageError:
        try:
            return self.files[item]
        except BadImageError as e:
            return e


def _stack(items: list[Tensor | BadImageError]) -> Tensor | BadImageError:
    bad = [x for x in items if isinstance(x, BadImageError)]
    return bad[0] if bad else torch.stack([x for x in items if isinstance(x, Tensor)])


def _batches(loader: torch.utils.data.DataLoader) -> Iterator[Tensor]:
    for batch in loader:
        if isinstance(batch, BadImageError):
            raise BadImageError(batch.name, batch.reason)
        yield batch


def preload(files: ImageFiles, workers: int = 0, batch_size: int = 256) -> Tensor:
    """Decode every image of ``files`` into one uint8 tensor [N, C, size, size] (with ``workers`` processes)."""
    out = torch.empty((len(files), files.channels, files.size, files.size), dtype=torch.uint8)
    start = 0
    for batch in in_order(StreamingImages(files, workers=workers), batch_size, workers):
        out[start : start + batch.shape[0]] = batch
        start += batch.shape[0]
    return out


class InMemoryImages:
    """uint8 images [N, C, H, W] in memory, served as float32 [-1, 1] batches (optionally flipped)."""

    def __init__(self, images: Tensor, *, flip: bool = False) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"InMemoryImages holds uint8 [N, C, H, W] images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images, self.flip = images, flip

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch_at(self, position: Position, total: int) -> tuple[Tensor, Position]:
        """The next ``total`` images [total, C, H, W] float32 in [-1, 1] and the position after them."""
        _check(position, len(self))
        idx, flips, new = batch_indices(position, total, flips=self.flip)
        x = self.images[idx]
        if flips is not None and bool(flips.any()):
            x[flips] = x[flips].flip(-1)
        return to_unit_range(x), new


class StreamingImages:
    """Images decoded from disk batch by batch by ``workers`` DataLoader processes.

    The loader runs ahead along the positions that follow the last one asked
    for (``prefetch`` batches per worker). Asking for any other position (a
    resume, a different batch size) restarts it there: batches depend only on
    the position, never on the workers' timing.
    """

    def __init__(self, files: ImageFiles, *, flip: bool = False, workers: int = 2, prefetch: int = 2) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.files, self.flip, self.workers, self.prefetch = files, flip, workers, prefetch
        self._it: Iterator[Tensor] | None = None
        self._expect: tuple[tuple, int] | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.files.channels, self.files.size, self.files.size))

    def __len__(self) -> int:
        return len(self.files)

    def _plans(self, position: Position, total: int) -> Iterator[list[tuple[int, bool]]]:
        while True:
            idx, flips, position = batch_indices(position, total, flips=self.flip)
            fl = flips.tolist() if flips is not None else [False] * total
            yield list(zip(idx.tolist(), fl, strict=True))

    def _restart(self, position: Position, total: int) -> None:
        self.close()
        if self.workers:  # worker options are refused by DataLoader without workers
            loader = torch.utils.data.DataLoader(_Decoded(self.files), batch_sampler=self._plans(position, total),
                                                 num_workers=self.workers, collate_fn=_stack,
                                                 prefetch_factor=self.prefetch, worker_init_fn=_one_thread,
                                                 persistent_workers=False)
        else:
            loader = torch.utils.data.DataLoader(_Decoded(self.files), batch_sampler=self._plans(position, total),
                                                 num_workers=0, collate_fn=_stack)
        self._it = _batches(loader)

    def batch_at(self, position: Position, total: int) -> tuple[Tensor, Position]:
        """The next ``total`` images [total, C, H, W] float32 in [-1, 1] and the position after them."""
        _check(position, len(self))
        key = (tuple(sorted(position.items())), total)
        if self._it is None or self._expect != key:
            self._restart(position, total)
        assert self._it is not None  # _restart made it
        try:
            batch = next(self._it)
        except BadImageError:
            self.close()  # the loader is spent: a retry restarts it
            raise
        _, _, new = batch_indices(position, total)
        self._expect = (tuple(sorted(new.items())), total)
        return to_unit_range(batch), new

    def close(self) -> None:
        """Stop the worker processes (they are restarted on the next batch)."""
        self._it, self._expect = None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_it": None, "_expect": None}


ImageSource = (InMemoryImages, StreamingImages)  # for isinstance checks


def in_order(data: Tensor | InMemoryImages | StreamingImages, batch_size: int = 256,
             workers: int = 0) -> Iterator[Tensor]:
    """Every sample of ``data`` once, in storage order, unflipped, in batches of ``batch_size``.

    A tensor yields its own slices; an image source yields uint8 [b, C, H, W]
    (streamed from disk with ``workers`` processes). This is how reference
    statistics for FID see a training set: each real image exactly once.
    """
    if isinstance(data, Tensor):
        yield from torch.split(data, batch_size)
    elif isinstance(data, InMemoryImages):
        yield from torch.split(data.images, batch_size)
    elif isinstance(data, StreamingImages):
        yield from _batches(torch.utils.data.DataLoader(_Decoded(data.files), batch_size=batch_size,
                                                        num_workers=workers, collate_fn=_stack,
                                                        worker_init_fn=_one_thread if workers else None))
    else:
        raise TypeError(f"in_order needs images (a tensor or an image source), got {type(data).__name__}")


def _check(position: Position, n: int) -> None:
    if position.get("n") != n:
        raise ValueError(f"position is for n={position.get('n')} samples but the image source has {n}")


def images_source(
    path: str | os.PathLike,
    size: int = 64,
    *,
    stream: bool = True,
    workers: int = 2,
    flip: bool = False,
    channels: int = 3,
    max_images: int | None = None,
    exclude: Collection[str] = (),
) -> InMemoryImages | StreamingImages:
    """The images of a folder or ``.zip`` archive as a source for ``next_batch`` / ``fit``.

    Centre crop and bilinear resize to ``size`` (:class:`ImageFiles`);
    ``flip``: random horizontal flips drawn from the data position's seed.
    ``stream=True`` decodes batches on the fly with ``workers`` processes
    (folders larger than memory); ``stream=False`` decodes everything once
    (with the same workers) into uint8 memory. Both give the same batches.
    ``exclude``: files to leave out (the ``skipped`` of :func:`ganfn.data.scan_images`).
    A file that cannot be decoded raises :class:`ganfn.data.BadImageError` naming it.
    """
    files = ImageFiles(path, size, channels=channels, max_images=max_images, exclude=exclude)
    if stream:
        return StreamingImages(files, flip=flip, workers=workers)
    return InMemoryImages(preload(files, workers), flip=flip)
