"""Candle aggregation: ticks in, MT5-style bars out. Pure: time comes from the ticks and callers.

A bar covers ``[open, next_open)`` of its timeframe, aligned to UTC boundaries. OHLC come from
the bid, ``tick_volume`` counts ticks, ``spread`` is the bar's smallest spread in points (as MT5
stores it). A bar closes on the first tick of a later bar, or when the market clock passes its
end by ``close_grace_ms`` (so quiet markets still close bars); each closed bar is emitted once.
Forming-bar updates are throttled per timeframe by market time. Closed bars are kept in compact
numpy ring buffers (``engine.candle_store``); only the forming bar is a Python object.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from engine.candle_store import Bars, CandleRing
from engine.models import Candle, Tick
from engine.timeframes import Timeframe

# (candle, closed). A forming candle is the live object: encode it before the next tick.
CandleEvent = tuple[Candle, bool]


class _Series:
    __slots__ = ("tf", "forming", "start_ms", "end_ms", "closed", "newest", "last_emit_ms", "dirty")

    def __init__(self, tf: Timeframe, max_candles: int, point: float) -> None:
        self.tf = tf
        self.forming: Candle | None = None
        self.start_ms = 0
        self.end_ms = 0
        self.closed = CandleRing(max_candles, point)
        # The newest closed bar as an object too: the daily summary reads it for every symbol.
        self.newest: Candle | None = None
        self.last_emit_ms = -(1 << 62)
        self.dirty = False


class CandleAggregator:
    """Bars of one symbol for several timeframes."""

    def __init__(
        self,
        symbol: str,
        point: float,
        timeframes: Iterable[Timeframe],
        max_candles: int = 1000,
        forming_throttle_ms: int = 250,
        close_grace_ms: int = 1000,
    ) -> None:
        self.symbol = symbol
        self.point = point
        self.max_candles = max_candles
        self.forming_throttle_ms = forming_throttle_ms
        self.close_grace_ms = close_grace_ms
        self._series = {tf.name: _Series(tf, max_candles, point) for tf in timeframes}
        self._ordered = tuple(self._series.values())
        self.late_ticks = 0

    @property
    def timeframes(self) -> tuple[str, ...]:
        return tuple(self._series)

    def seed(self, timeframe: str, history: Bars | Sequence[Candle]) -> None:
        """Load history (oldest first, the forming bar last) before the first tick."""
        if not isinstance(history, Bars):
            history = Bars.from_candles(history)
        s = self._series[timeframe]
        s.closed.load(history[:-1])
        s.newest = Candle(self.symbol, timeframe, *s.closed.row(-1)) if len(s.closed) else None
        s.forming = Candle(self.symbol, timeframe, *history[-1:].rows()[0]) if len(history) else None
        if s.forming is not None:
            s.start_ms = s.forming.time * 1000
            s.end_ms = s.tf.next_open(s.forming.time) * 1000

    def on_tick(self, tick: Tick) -> list[CandleEvent]:
        """Fold one tick into every timeframe; returns the closed and forming bars to publish."""
        events: list[CandleEvent] = []
        t = tick.time_msc
        bid = tick.bid
        volume = tick.volume
        spread = round((tick.ask - bid) / self.point)
        throttle = self.forming_throttle_ms
        for s in self._ordered:
            c = s.forming
            if c is None or not s.start_ms <= t < s.end_ms:  # rare: a new, stale or first bar
                self._roll(s, tick, spread, events)
                continue
            if bid > c.high:
                c.high = bid
            elif bid < c.low:
                c.low = bid
            c.close = bid
            c.tick_volume += 1
            if volume:
                c.real_volume += volume
            if spread < c.spread:
                c.spread = spread
            if t - s.last_emit_ms >= throttle:
                s.last_emit_ms = t
                s.dirty = False
                events.append((c, False))
            else:
                s.dirty = True
        return events

    def _roll(self, s: _Series, tick: Tick, spread: int, events: list[CandleEvent]) -> None:
        """A tick outside the forming bar: close it and open the tick's bar, or count it late."""
        t = tick.time_msc
        if s.forming is not None:
            if t < s.start_ms:
                self.late_ticks += 1
                return
            self._close(s, events)
        if s.end_ms and t < s.end_ms:
            # Older than a bar already closed by the clock: too late to count.
            self.late_ticks += 1
            return
        opened = s.tf.bar_open(t // 1000)
        bid = tick.bid
        s.forming = Candle(self.symbol, s.tf.name, opened, bid, bid, bid, bid, 1, spread, tick.volume)
        s.start_ms = opened * 1000
        s.end_ms = s.tf.next_open(opened) * 1000
        s.last_emit_ms = t
        s.dirty = False
        events.append((s.forming, False))

    def on_time(self, market_ms: int) -> list[CandleEvent]:
        """Close bars whose end has passed and flush throttled forming updates that are due."""
        events: list[CandleEvent] = []
        for s in self._ordered:
            c = s.forming
            if c is None:
                continue
            if market_ms >= s.end_ms + self.close_grace_ms:
                self._close(s, events)
            elif s.dirty and market_ms - s.last_emit_ms >= self.forming_throttle_ms:
                s.last_emit_ms = market_ms
                s.dirty = False
                events.append((c, False))
        return events

    def _close(self, s: _Series, events: list[CandleEvent]) -> None:
        c = s.forming
        s.closed.append(c)
        s.newest = c
        s.forming = None
        s.dirty = False
        events.append((c, True))

    def candles(self, timeframe: str, count: int) -> list[Candle]:
        """The last ``count`` bars, oldest first, the forming bar (if any) last.

        Reads bar by bar: for a few bars (the daily summary); ``payloads`` serves many.
        """
        s = self._series[timeframe]
        n = min(count - (s.forming is not None), len(s.closed))
        bars = [Candle(self.symbol, timeframe, *s.closed.row(k)) for k in range(-n, -1)]
        if n > 0:
            bars.append(s.newest)
        if s.forming is not None:
            bars.append(s.forming)
        return bars

    def payloads(self, timeframe: str, count: int) -> list[dict[str, Any]]:
        """``candles`` as bus payloads (``closed`` false on the forming bar), read as arrays."""
        s = self._series[timeframe]
        out = s.closed.last(count - (s.forming is not None)).payloads(self.symbol, timeframe, True)
        if s.forming is not None:
            out.append(s.forming.to_payload(False))
        return out

    def forming(self, timeframe: str) -> Candle | None:
        return self._series[timeframe].forming
