"""The launcher's health, carried to the engine over the engine's stdin.

Only the engine speaks for the market and for the service, so ``mt5-service`` does not publish
``health:service:`` on the bus itself: it writes its health as one JSON line a second into the
engine child's stdin, a pipe only the launcher holds (it works on Windows too, where the mt5
source runs), and the engine publishes the newest line from its own publisher. Each side does
its I/O on a thread of its own, so neither the launcher's supervision nor the engine's loop ever
waits on the pipe.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import IO, Any

from engine.protocol import SERVICE_COMPONENT

log = logging.getLogger("engine")

# ``mt5-engine`` flag the launcher starts its engine child with.
STDIN_FLAG = "--service-health-stdin"
MAX_LINE_BYTES = 64 * 1024


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One line's health map, or None if it is not the launcher's health as JSON."""
    try:
        health = json.loads(line)
    except ValueError:
        return None
    if not isinstance(health, dict) or health.get("component") != SERVICE_COMPONENT:
        return None
    return health


class HealthReader:
    """Reads health lines from the file descriptor ``fd`` on a daemon thread; ``take()`` hands
    over the newest one not taken yet (older unread ones are superseded).

    It reads with ``os.read``, not through ``sys.stdin``'s buffered reader: a daemon thread
    blocked inside that reader holds its lock, and the interpreter aborts when it finds the lock
    taken at exit ("could not acquire lock for <stdin> at interpreter shutdown").
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._latest: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, name="service-health", daemon=True)

    def start(self) -> HealthReader:
        self._thread.start()
        return self

    def take(self) -> dict[str, Any] | None:
        with self._lock:
            health, self._latest = self._latest, None
        return health

    def _run(self) -> None:
        pending = b""
        skipping = False  # inside a line over MAX_LINE_BYTES: dropped whole
        while chunk := self._read():
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if skipping:
                    skipping = False
                elif (health := parse_line(line)) is not None:
                    with self._lock:
                        self._latest = health
            if len(pending) > MAX_LINE_BYTES:
                pending, skipping = b"", True
        log.info("service health: stdin closed")

    def _read(self) -> bytes:
        try:
            return os.read(self._fd, MAX_LINE_BYTES)
        except OSError:
            return b""


class HealthWriter:
    """Writes the newest ``offer``ed health into a child's stdin on a daemon thread: a child that
    stops reading blocks that thread, never the launcher. Ends, closing ``stream``, on
    ``close()`` or when the pipe breaks."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="service-health-writer", daemon=True)
        self._thread.start()

    def offer(self, health: dict[str, Any]) -> None:
        with self._cond:
            self._pending = json.dumps(health, separators=(",", ":")) + "\n"
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._pending is not None or self._closed)
                    if self._closed:
                        return
                    line, self._pending = self._pending, None
                self._stream.write(line)
                self._stream.flush()
        except (OSError, ValueError):  # the child exited (broken pipe)
            pass
        finally:
            try:
                self._stream.close()
            except OSError:
                pass
