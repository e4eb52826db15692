"""Atomic, code-free checkpoints of a training run.

A checkpoint is one ``torch.save`` file holding only plain containers (dicts,
lists, ints, floats, strings, None) and tensors::

    {"format": "ganfn-checkpoint", "version": 3, "sha256": str, "step": int,
     "state": TrainState.to_dict(): nested dicts of tensors,
     "position": the data position (``ganfn.data.loader_init``: a dict of ints),
     "rngs": [ByteTensor, ...]  (``torch.Generator.get_state()`` of every RNG),
     "extra": {...}}            (the loop's own bookkeeping: history, best figure, ...)

It is read back with ``torch.load(weights_only=True)``: a checkpoint someone
else gives you cannot execute code. Writes are atomic: the bytes go to a
temporary file in the same directory, are flushed and ``fsync``-ed, then
``os.replace`` renames it over the final name, so a crash mid-write leaves the
previous checkpoint intact and never a truncated file under a checkpoint name.

``sha256`` is a digest of everything else in the file (every tensor's dtype,
shape and bytes, every other value's text), checked on load: a bit flipped on
disk inside tensor data, which ``torch.load`` reads without complaint, raises
:class:`CorruptCheckpointError`. :meth:`CheckpointManager.load_latest` then
falls back to the newest checkpoint that verifies, with a warning naming both.

Format versions: 1 had no checksum; 2 adds ``sha256``; 3 stores the state per
network (``g``/``d``: params, buffers, opt) with the parts' states under ``parts``. A file of another
version is refused with an error naming both versions.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from .atomic import atomic_write
from .state import TrainState

__all__ = [
    "state_to_dict",
    "state_from_dict",
    "save",
    "load",
    "CheckpointManager",
    "rng_states",
    "set_rng_states",
    "atomic_save",
    "digest",
    "CorruptCheckpointError",
]

FORMAT = "ganfn-checkpoint"
VERSION = 3
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


class CorruptCheckpointError(ValueError):
    """A checkpoint file whose contents do not match its stored SHA-256 digest."""


def digest(obj: Any) -> str:
    """SHA-256 (hex) of a checkpoint's contents: tensors by dtype, shape and
    bytes, containers in order, other values by their ``repr``."""
    h = hashlib.sha256()

    def walk(o: Any) -> None:
        if isinstance(o, Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(f"D{len(o)}".encode())
            for k, v in o.items():
                walk(k)
                walk(v)
        elif isinstance(o, (list, tuple)):
            h.update(f"L{len(o)}".encode())
            for v in o:
                walk(v)
        else:
            h.update(f"V{o!r};".encode())

    walk(obj)
    return h.hexdigest()


def state_to_dict(state: TrainState) -> dict[str, Any]:
    """A :class:`TrainState` as plain nested dicts of tensors."""
    if not isinstance(state, TrainState):
        raise TypeError(f"expected a ganfn.TrainState, got {type(state).__name__}")
    return state.to_dict()


def state_from_dict(d: dict[str, Any]) -> TrainState:
    """Rebuild a :class:`TrainState` from :func:`state_to_dict`'s output."""
    return TrainState.from_dict(d)


def rng_states(rngs: Sequence[torch.Generator]) -> list[Tensor]:
    """The state (a uint8 tensor) of every generator, in order."""
    return [g.get_state() for g in rngs]


def set_rng_states(rngs: Sequence[torch.Generator], states: Sequence[Tensor]) -> None:
    """Restore generators in place from :func:`rng_states` (side effect by design: RNGs are the loop's)."""
    if len(rngs) != len(states):
        raise ValueError(f"checkpoint holds {len(states)} RNG states but the run has {len(rngs)} generators")
    for g, s in zip(rngs, states, strict=True):
        g.set_state(s.cpu() if s.device.type != "cpu" else s)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save(
    path: str | os.PathLike,
    state: TrainState,
    *,
    step: int,
    position: dict | None = None,
    rngs: Sequence[torch.Generator] = (),
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its path. See the module docstring."""
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "state": state_to_dict(state),
        "position": dict(position) if position is not None else None,
        "rngs": rng_states(rngs),
        "extra": extra or {},
    }
    obj["sha256"] = digest(obj)
    return atomic_save(obj, path)


def load(path: str | os.PathLike, *, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Returns the dict of the module docstring with ``"state"`` rebuilt as a
    :class:`TrainState`. Raises ``FileNotFoundError`` naming the path,
    :class:`CorruptCheckpointError` when the contents fail their checksum, and
    ``ValueError`` for a file that is not a ganfn checkpoint or has another
    format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # re-raised with the path named
        raise ValueError(f"{path} is not a readable ganfn checkpoint: {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ganfn checkpoint (no '{FORMAT}' marker)")
    if obj.get("version") != VERSION:
        raise ValueError(f"{path} is a checkpoint of format version {obj.get('version')}, but this ganfn reads format "
                         f"version {VERSION}: load it with the ganfn release that wrote it, or start a new run")
    stored = obj.pop("sha256", None)
    actual = digest(obj)
    if stored != actual:
        raise CorruptCheckpointError(f"{path} is damaged: its contents do not match the SHA-256 stored in it "
                                     f"({str(stored)[:12]}... stored, {actual[:12]}... now); do not resume from it")
    obj["state"] = state_from_dict(obj["state"])
    return obj


class CheckpointManager:
    """Checkpoints ``ckpt-<step>.pt`` in one directory, keeping the newest ``keep``."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.directory / f"ckpt-{int(step):08d}.pt"

    def list(self) -> list[Path]:
        """Existing checkpoints, oldest first (by step)."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        ck = self.list()
        return ck[-1] if ck else None

    def load_latest(self, *, map_location: str | torch.device | None = "cpu") -> tuple[Path, dict[str, Any]] | None:
        """``(path, checkpoint)`` of the newest checkpoint that loads and verifies, or None if there is none.

        A damaged newer checkpoint (failed checksum or unreadable) is skipped
        with a ``RuntimeWarning`` naming it and the file used instead; if none
        verifies, the newest one's error is raised.
        """
        found = self.list()
        skipped: list[tuple[Path, Exception]] = []
        for path in reversed(found):
            try:
                c = load(path, map_location=map_location)
            except (CorruptCheckpointError, ValueError) as e:
                if "format version" in str(e):
                    raise  # another ganfn's checkpoint: older ones are no better
                skipped.append((path, e))
                continue
            for bad, err in skipped:
                warnings.warn(f"checkpoint {bad} is damaged ({err}); using the newest good one, {path}, instead",
                              RuntimeWarning, stacklevel=2)
            return path, c
        if skipped:
            raise skipped[0][1]
        return None

    def save(self, state: TrainState, *, step: int, **kwargs: Any) -> Path:
        """Write the checkpoint for ``step`` atomically, then prune to the newest ``keep``."""
        path = save(self.path(step), state, step=step, **kwargs)
        for old in self.list()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path
