"""Logging set-up shared by every process: one line per event, component first."""
from __future__ import annotations

import logging
import logging.handlers
import sys
import time

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # LOG_LEVEL, in any case


def setup_logging(level: str = "INFO", log_file: str = "") -> None:
    """Log to stderr, and to a rotating ``log_file`` (10 MB x 5) when one is named."""
    formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.handlers.RotatingFileHandler(
            log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"))
    root = logging.getLogger()
    root.handlers.clear()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level.upper())


class RateLimitedLog:
    """Warnings about bad input, at most one per kind every ``interval_s``, each saying how
    many of that kind went unlogged since the last: a flood costs a line a second, never a
    line (or a traceback) per packet."""

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0) -> None:
        self._log = logger
        self._interval = interval_s
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (logged at, unlogged since)

    def warning(self, kind: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``kind`` was logged within the interval; True if logged."""
        now = time.monotonic()
        logged_at, unlogged = self._last.get(kind, (-self._interval, 0))
        if now - logged_at < self._interval:
            self._last[kind] = (logged_at, unlogged + 1)
            return False
        self._last[kind] = (now, 0)
        self._log.warning(msg + (f" (and {unlogged} more since the last report)" if unlogged else ""), *args,
                          exc_info=exc_info)
        return True
