"""Stopping a process's main loop on SIGINT/SIGTERM (and Ctrl+Break on Windows), safely from a
signal handler."""
from __future__ import annotations

import signal
import time
from collections.abc import Callable


class StopFlag:
    """A stop request that any thread, or a signal handler, may make; the loop polls it.

    Not a ``threading.Event``: its ``set`` takes a lock, and a handler that runs while the main
    thread holds that lock (inside ``Event.set``/``wait``, e.g. on a second SIGTERM during the
    first one's handler) blocks forever, so the process never exits. Setting a flag takes none.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float, step: float = 0.05) -> bool:
        """Sleep up to ``timeout`` seconds, waking within ``step`` of a stop; True if stopped."""
        deadline = time.monotonic() + timeout
        while not self._set and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(step, left))
        return self._set


def stop_signals() -> list[int]:
    """The signals that ask this process to stop: Ctrl+C (SIGINT); SIGTERM, which supervisors
    send on POSIX (Windows has the name, but ends a process without any signal); and on Windows
    Ctrl+Break (SIGBREAK), which a console sends to a process group and POSIX does not have."""
    return [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)]


def stop_on_signals(stop: Callable[[], None]) -> None:
    """Call ``stop`` on each of ``stop_signals()``; it must only set a ``StopFlag`` (call from the
    main thread)."""
    for sig in stop_signals():
        signal.signal(sig, lambda *_: stop())
