"""Logging of bad client input at a bounded rate, never a traceback per packet.

A client can send thousands of bad packets a second; each must not cost a log line, let alone a
traceback. ``engine.logs.RateLimitedLog`` logs the first occurrence of each kind, then at most
one line per ``INTERVAL_S`` with how many were not logged meanwhile. ``LibraryLog`` is what python-socketio
and python-engineio log through: their per-packet chatter goes to DEBUG and their errors, which
bad input triggers (``logger.exception(...)`` from inside their handlers), become one short
rate-limited warning, the traceback going to DEBUG. As a ``logging`` filter it does the same to
aiohttp's records (a traceback for every malformed HTTP request).
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from engine.logs import RateLimitedLog

INTERVAL_S = 10.0  # bad client input: at most a line per kind this often


class LibraryLog:
    """A ``logging.Logger`` stand-in for python-socketio/engineio (they call these five methods)."""

    def __init__(self, logger: logging.Logger, bad_input: RateLimitedLog) -> None:
        self.logger = logger
        self.bad_input = bad_input
        self.errors = 0

    def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(message, *args)

    info = debug  # they log every packet at INFO: detail, not news

    def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._error(message, args)

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._error(message, args)

    def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(message, *args, exc_info=True)
        self._error(f"{message}: {_one_line(exc)}" if exc is not None else message, args)

    def filter(self, record: logging.LogRecord) -> bool:
        """As a ``logging`` filter: a record with a traceback becomes one rate-limited line."""
        if not record.exc_info or record.levelno < logging.WARNING:
            return True
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s", record.getMessage(), exc_info=record.exc_info)
        self._error(f"{record.getMessage()}: {_one_line(record.exc_info[1])}", (), "http")
        return False

    def _error(self, message: str, args: tuple[Any, ...], kind: str = "Socket.IO") -> None:
        self.errors += 1
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = message
        self.bad_input.warning(kind, "bridge: %s: %s", kind, text[:300])


def _one_line(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
