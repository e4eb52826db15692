"""One step factory: every train step a run uses (single, members, data-parallel, compiled) comes from
:func:`make_step`.

All of them run :func:`ganfn.step.run`; they differ in how the primitives are
lifted (one state, ``vmap`` over stacked members) and in the reduce between
gradients and update (identity, or an all-reduce across ``torch.distributed``
ranks). Compilation has one fallback, :func:`with_fallback`: a compiler failure
warns once and the same pure step runs eagerly, and ``GANFN_NO_COMPILE=1``
turns compilation off everywhere.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

from . import compiling

__all__ = ["make_step", "with_fallback", "compile_disabled"]

Step = Callable[[Any, Any, Any], tuple[Any, dict]]


def compile_disabled() -> bool:
    """Whether ``GANFN_NO_COMPILE`` is set (to anything but ``""`` or ``"0"``)."""
    return os.environ.get("GANFN_NO_COMPILE", "") not in ("", "0")


def with_fallback(compiled: Callable, eager: Callable, what: str, check: Callable | None = None) -> Step:
    """``compiled`` (after ``check`` of the inputs); on its first failure a
    ``RuntimeWarning`` naming ``what`` and the error, and ``eager`` (the same
    pure step) from then on."""
    use_compiled = [True]

    def step(state, real, noise):
        if check is not None:
            check(state, real, noise)
        if use_compiled[0]:
            try:
                return compiled(state, real, noise)
            except Exception as e:  # any compiler failure falls back to the same pure step
                use_compiled[0] = False
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                warnings.warn(f"ganfn: torch.compile of {what} failed ({type(e).__name__}: {msg[:300]}); "
                              "running it eagerly instead (same results, slower). "
                              "Pass compile=False (or set GANFN_NO_COMPILE=1) to skip the attempt.",
                              RuntimeWarning, stacklevel=2)
        return eager(state, real, noise)

    return step


def make_step(gan: Any, *, members: bool = False, reduce: str | None = None, compile: bool | str = False,
              isolate: bool = True, shared_data: bool = True) -> Step:
    """The ``step(state, real, noise) -> (state, metrics)`` of a run of ``gan``.

    ``members``: a stacked state of S members, vmapped (:func:`ganfn.ensemble.make_step`;
    ``isolate`` freezes a diverged member, ``shared_data`` feeds every member the same batch).
    ``reduce``: ``None`` in one process, ``"all_reduce"`` for data-parallel ranks
    (:func:`ganfn.distributed.make_train_step`). ``compile``: ``torch.compile`` the
    step (a mode or backend name may be given), with the one fallback above.
    """
    if reduce not in (None, "all_reduce"):
        raise ValueError(f"reduce must be None (one process) or 'all_reduce' (torch.distributed ranks), got {reduce!r}")
    if reduce == "all_reduce":
        from .distributed import step as _dist

        return _dist.make_train_step(gan, stacked=members, shared_data=shared_data, isolate=isolate)
    if members:
        from . import ensemble

        return ensemble.make_step(gan, shared_data=shared_data, compile=compile, isolate=isolate)
    if not compile or compile_disabled():
        return gan.train_step
    kw: dict[str, Any] = {}
    if isinstance(compile, str):
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        kw["mode" if compile in modes else "backend"] = compile
    return with_fallback(compiling.compile(gan.train_step, **kw), gan.train_step, "train_step")
