"""``torch.compile`` as ganfn calls it: the same, minus one misleading log line.

On a machine without a CUDA runtime but with a CUDA toolkit in sight (``nvcc``
on the PATH, ``/usr/local/cuda``, ``$CUDA_HOME``; the CUDA build of torch
brings one), importing ``torch.utils.cpp_extension``, which inductor does on
the first compile, logs ``No CUDA runtime is found, using CUDA_HOME=...``.
A CPU compile needs no CUDA, so the line reads as a fault where there is none.
:func:`compile` drops that one message and nothing else.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

__all__ = ["compile", "quiet_cuda_probe", "NO_CUDA_NOTE"]

NO_CUDA_NOTE = "No CUDA runtime is found"
_LOGGER = "torch.utils.cpp_extension"


def _not_the_cuda_note(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(NO_CUDA_NOTE)


def quiet_cuda_probe() -> None:
    """Drop the "No CUDA runtime is found" record of ``torch.utils.cpp_extension`` (idempotent)."""
    logger = logging.getLogger(_LOGGER)
    if _not_the_cuda_note not in logger.filters:
        logger.addFilter(_not_the_cuda_note)


def compile(fn: Callable, **kwargs: Any) -> Callable:
    """``torch.compile(fn, **kwargs)`` after :func:`quiet_cuda_probe`."""
    quiet_cuda_probe()
    return torch.compile(fn, **kwargs)
