"""MT5 timeframes: names, terminal constants and UTC bar alignment."""
from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

_WEEK = 7 * 86400
# MT5 weekly bars open on Sunday 00:00; 1970-01-04 was the first Sunday after the epoch.
_FIRST_SUNDAY = 3 * 86400


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One MT5 timeframe. ``seconds`` is 0 for MN1, whose length varies."""

    name: str
    code: int
    seconds: int

    def bar_open(self, ts: int) -> int:
        """Open time (UTC seconds) of the bar that contains ``ts``."""
        if self.seconds == _WEEK:
            return ts - (ts - _FIRST_SUNDAY) % _WEEK
        if self.seconds:
            return ts - ts % self.seconds
        year, month = time.gmtime(ts)[:2]
        return calendar.timegm((year, month, 1, 0, 0, 0))

    def next_open(self, bar_open: int) -> int:
        """Open time of the bar after the one opening at ``bar_open``."""
        if self.seconds:
            return bar_open + self.seconds
        year, month = time.gmtime(bar_open)[:2]
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0))


TIMEFRAMES: dict[str, Timeframe] = {
    tf.name: tf
    for tf in (
        Timeframe("M1", 1, 60),
        Timeframe("M2", 2, 120),
        Timeframe("M3", 3, 180),
        Timeframe("M4", 4, 240),
        Timeframe("M5", 5, 300),
        Timeframe("M6", 6, 360),
        Timeframe("M10", 10, 600),
        Timeframe("M12", 12, 720),
        Timeframe("M15", 15, 900),
        Timeframe("M20", 20, 1200),
        Timeframe("M30", 30, 1800),
        Timeframe("H1", 16385, 3600),
        Timeframe("H2", 16386, 7200),
        Timeframe("H3", 16387, 10800),
        Timeframe("H4", 16388, 14400),
        Timeframe("H6", 16390, 21600),
        Timeframe("H8", 16392, 28800),
        Timeframe("H12", 16396, 43200),
        Timeframe("D1", 16408, 86400),
        Timeframe("W1", 32769, _WEEK),
        Timeframe("MN1", 49153, 0),
    )
}


def timeframe(name: str) -> Timeframe:
    """The timeframe called ``name`` (e.g. ``"H1"``); ``KeyError`` names the valid ones."""
    try:
        return TIMEFRAMES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown timeframe {name!r}; valid: {', '.join(TIMEFRAMES)}") from None
