"""Caches of RPC answers, kept fresh from the bus (pure: the caller passes the time)."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Collection
from typing import Any


@dataclass(slots=True)
class _History:
    bars: list[dict[str, Any]]
    fetched: float
    # Bars asked for when fetched; fewer came back when the engine has no more.
    asked: int


class CandleCache:
    """Candle history per (symbol, timeframe), from RPC ``candles``, updated by bus candles.

    Histories are only ``put`` for requests of a symbol and timeframe the bridge serves, and a
    bus candle only updates a history already there, so there are at most symbols x timeframes.

    A cached history answers any ``count`` up to what it was fetched with, while it is younger
    than ``ttl`` seconds. A candle from the bus replaces the bar with its open time or appends a
    newer one, so a closed bar is in the cache as soon as it is published.
    """

    def __init__(self, ttl: float, max_candles: int) -> None:
        self.ttl = ttl
        self.max_candles = max_candles
        self._entries: dict[tuple[str, str], _History] = {}
        self.hits = 0
        self.misses = 0

    def get(self, symbol: str, timeframe: str, count: int, now: float) -> list[dict[str, Any]] | None:
        """The last ``count`` bars, or ``None`` when they must be fetched."""
        entry = self._entries.get((symbol, timeframe))
        if entry is None or now - entry.fetched > self.ttl or (
                count > entry.asked and len(entry.bars) >= entry.asked):
            self.misses += 1
            return None
        self.hits += 1
        return entry.bars[-count:]

    def fetch_count(self, count: int) -> int:
        """How many bars to fetch for a request of ``count`` (at least 100, to serve later ones)."""
        return min(self.max_candles, max(count, 100))

    def put(self, symbol: str, timeframe: str, bars: list[dict[str, Any]], asked: int, now: float) -> None:
        self._entries[(symbol, timeframe)] = _History(list(bars), now, asked)

    def on_candle(self, candle: dict[str, Any]) -> None:
        """Fold a bus candle (``symbol, timeframe, time, ..., closed``) into its cached history."""
        entry = self._entries.get((candle.get("symbol"), candle.get("timeframe")))
        if entry is None or not entry.bars:
            return
        last = entry.bars[-1]["time"]
        t = candle.get("time")
        if not isinstance(t, int):
            return
        if t == last:
            entry.bars[-1] = candle
        elif t > last:
            entry.bars.append(candle)
            if len(entry.bars) > max(entry.asked, 1):
                del entry.bars[0]

    def retain(self, symbols: Collection[str]) -> None:
        """Forget the histories of symbols not in ``symbols`` (the engine's, when its list changes)."""
        for key in [key for key in self._entries if key[0] not in symbols]:
            del self._entries[key]

    def invalidate(self, symbol: str | None = None, timeframe: str | None = None) -> None:
        """Forget one history, or every history when called without arguments."""
        if symbol is None:
            self._entries.clear()
        else:
            self._entries.pop((symbol, timeframe or ""), None)


class ValueCache:
    """One value (e.g. the symbol list) with a time to live."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.value: Any = None
        self._stamp = 0.0

    def get(self, now: float) -> Any:
        if self.value is None or now - self._stamp > self.ttl:
            return None
        return self.value

    def put(self, value: Any, now: float) -> None:
        self.value = value
        self._stamp = now

    def invalidate(self) -> None:
        self._stamp = float("-inf")
