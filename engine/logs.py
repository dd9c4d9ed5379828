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


class LogThrottle:
    """Logs a repeated event (bad input from a peer) at most once per ``every_s``; the next
    line it lets through says how many were left out, so a flood costs one line, not one each."""

    def __init__(self, logger: logging.Logger, every_s: float = 5.0) -> None:
        self._logger = logger
        self._every = every_s
        self._next = 0.0
        self._left_out = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        self._next = now + self._every
        if self._left_out:
            message += " (%d more like it not logged)"
            args = (*args, self._left_out)
            self._left_out = 0
        self._logger.warning(message, *args)
