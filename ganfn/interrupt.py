"""Stopping a run on SIGINT / SIGTERM without losing work.

:func:`deferred_signals` replaces the handlers of SIGINT and SIGTERM by ones
that only note the signal, and yields a poll for :func:`ganfn.loop.fit`'s
``stop``: the loop finishes the step under way, then ends the run as at its
last step (checkpoint, ``samples.png``, ``metrics.json``, figures), and the
command line exits with :data:`EXIT_STATUS`. A second signal raises
``KeyboardInterrupt`` at once, for a user who will not wait for the files.

The handlers are installed with ``signal.signal`` whatever was there before,
so a run started with SIGINT ignored (``cmd &`` in a script, ``nohup``), which
Python's own Ctrl-C handling skips, can be interrupted too; the previous
handlers are restored on leaving. DataLoader workers forked while the handlers
are installed inherit them, so a Ctrl-C sent to the whole process group does
not kill the workers under a step that is still running.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator

__all__ = ["deferred_signals", "SIGNALS", "EXIT_STATUS"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = 130  # 128 + SIGINT: the shell's status for a command stopped by Ctrl-C


@contextlib.contextmanager
def deferred_signals(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[Callable[[], str | None]]:
    """While inside: the first of ``signals`` is noted, a second raises ``KeyboardInterrupt``.

    Yields a function returning the first signal's name (``"SIGINT"``) once one
    has arrived, else None. Outside the main thread, where Python installs no
    handlers, nothing changes and the function always returns None.
    """
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without writing the run's files")

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for s in signals:
            previous[s] = signal.signal(s, note)
    try:
        yield lambda: signal.Signals(received[0]).name if received else None
    finally:
        for s, handler in previous.items():
            # None: the old handler was not set from Python, and the default is the nearest one Python can set.
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
