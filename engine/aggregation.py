"""Candle aggregation: ticks in, MT5-style bars out. Pure: time comes from the ticks and callers.

A bar covers ``[open, next_open)`` of its timeframe, aligned to UTC boundaries. OHLC come from
the symbol's chart price (MT5's ``chart_mode``): the bid, or for exchange symbols charted by
``last`` the trades, so there only ticks with ``TICK_FLAG_LAST`` count. ``tick_volume`` counts
the ticks that count, ``real_volume`` adds up their ``volume``, ``spread`` is the bar's smallest
spread in points (as MT5 stores it) among ticks with both quotes. A tick without a positive
chart price (a one-sided quote) never touches a bar, so no low is ever 0. A bar closes on the
first tick of a later bar, or when the market clock passes its end by ``close_grace_ms`` (so
quiet markets still close bars); each closed bar is emitted once. Forming-bar updates are
throttled per timeframe by market time. Closed bars are kept in compact numpy ring buffers
(``engine.candle_store``); only the forming bar is a Python object.

``on_tick_columns`` folds a batch of ticks given as arrays (a replay of bars at full speed) with
whole-array work and gives the events ``on_tick`` would give tick by tick, in the same order.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from engine.candle_store import Bars, CandleRing
from engine.models import CHART_MODE_BID, CHART_MODE_LAST, TICK_FLAG_LAST, Candle, Tick
from engine.timeframes import Timeframe

# (candle, closed). A forming candle is the live object: encode it before the next tick.
CandleEvent = tuple[Candle, bool]

# The spread of a tick without both quotes: above any real one, so never a bar's smallest.
NO_SPREAD = 1 << 62
# A tick's columns as ``on_tick_columns`` takes them (``Tick``'s fields but the symbol).
TickColumns = Mapping[str, np.ndarray]
_BAR_FIELDS = ("open", "high", "low", "close", "tick_volume", "spread", "real_volume")
_BAR_COLUMNS = ("time", *_BAR_FIELDS)


class _Series:
    __slots__ = ("tf", "forming", "open_ms", "start_ms", "end_ms", "min_spread", "closed", "newest",
                 "next_emit_ms", "emitted_volume")

    def __init__(self, tf: Timeframe, max_candles: int, point: float) -> None:
        self.tf = tf
        self.forming: Candle | None = None
        self.open_ms = 0  # the forming bar's open
        # Ticks in [start_ms, end_ms) fold on the fast path; the window is empty while no bar is
        # forming. start_ms is open_ms, or just after the time a seeded forming bar already
        # covers (its earlier ticks are in it).
        self.start_ms = 0
        self.end_ms = 0
        # The forming bar's smallest spread so far; NO_SPREAD (and the bar's spread 0) until a
        # tick with both quotes.
        self.min_spread = NO_SPREAD
        self.closed = CandleRing(max_candles, point)
        # The newest closed bar as an object too: the daily summary reads it for every symbol.
        self.newest: Candle | None = None
        # Throttled forming updates: the market time the next may go out, and the forming bar's
        # tick_volume when it last did (every tick counted changes it, so "changed since" is a
        # comparison at flush time, not a flag written per tick).
        self.next_emit_ms = -(1 << 62)
        self.emitted_volume = 0


class _SeriesRows(NamedTuple):
    """One series' events of a batch: its closed bars and forming updates as columns
    (``_BAR_COLUMNS``), each with the index of the tick it came with."""

    rank: int  # the series' place among the aggregator's timeframes
    closing: np.ndarray
    closed: dict[str, np.ndarray]
    emits: np.ndarray
    forming: dict[str, np.ndarray]


@dataclass(frozen=True)
class CandleRows:
    """Events of several series as rows in publishing order (by tick, then timeframe, a close
    before a forming update): ``series[i]`` indexes ``timeframes``, ``closed[i]`` says which."""

    timeframes: tuple[str, ...]
    series: np.ndarray
    closed: np.ndarray
    values: dict[str, np.ndarray]  # ``_BAR_COLUMNS``

    @classmethod
    def ordered(cls, timeframes: tuple[str, ...], parts: Iterable[_SeriesRows | None]) -> CandleRows:
        parts = [p for p in parts if p is not None]
        ranks, closed, keys = [], [], []
        for p in parts:
            for at, forming in ((p.closing, False), (p.emits, True)):
                ranks.append(np.full(len(at), p.rank, np.int64))
                closed.append(np.full(len(at), not forming))
                keys.append((np.asarray(at, np.int64) * len(timeframes) + p.rank) * 2 + forming)
        if not parts:
            return cls(timeframes, np.zeros(0, np.int64), np.zeros(0, bool),
                       {name: np.zeros(0) for name in _BAR_COLUMNS})
        order = np.argsort(np.concatenate(keys), kind="stable")
        values = {name: np.concatenate([c[name] for p in parts for c in (p.closed, p.forming)])[order]
                  for name in _BAR_COLUMNS}
        return cls(timeframes, np.concatenate(ranks)[order], np.concatenate(closed)[order], values)

    def __len__(self) -> int:
        return len(self.closed)

    def events(self, symbol: str) -> list[CandleEvent]:
        """The rows as ``on_tick`` events (a Candle each)."""
        columns = [self.values[name].tolist() for name in _BAR_COLUMNS]
        return [(Candle(symbol, self.timeframes[k], *row), closed)
                for k, closed, row in zip(self.series.tolist(), self.closed.tolist(), zip(*columns))]


class CandleAggregator:
    """Bars of one symbol for several timeframes, from its chart price (``chart_mode``)."""

    def __init__(
        self,
        symbol: str,
        point: float,
        timeframes: Iterable[Timeframe],
        max_candles: int = 1000,
        forming_throttle_ms: int = 250,
        close_grace_ms: int = 1000,
        chart_mode: int = CHART_MODE_BID,
    ) -> None:
        if chart_mode not in (CHART_MODE_BID, CHART_MODE_LAST):
            raise ValueError(f"chart_mode must be {CHART_MODE_BID} (bid) or {CHART_MODE_LAST} (last), "
                             f"got {chart_mode!r}")
        self.symbol = symbol
        self.point = point
        self.max_candles = max_candles
        self.forming_throttle_ms = forming_throttle_ms
        self.close_grace_ms = close_grace_ms
        self._price_at = Tick._fields.index("last" if chart_mode == CHART_MODE_LAST else "bid")
        if chart_mode == CHART_MODE_LAST:
            # Bound per instance so that bid charts, nearly every symbol, pay no test per tick.
            self.on_tick = self._on_trade_tick  # type: ignore[method-assign]
        self._series = {tf.name: _Series(tf, max_candles, point) for tf in timeframes}
        self._ordered = tuple(self._series.values())
        self.late_ticks = 0

    @property
    def timeframes(self) -> tuple[str, ...]:
        return tuple(self._series)

    def seed(self, timeframe: str, history: Bars | Sequence[Candle],
             covered_through_ms: int | None = None) -> None:
        """Load history (oldest first, the forming bar last) before the first tick.

        ``covered_through_ms``: the forming bar already holds every tick up to this market time
        (the terminal built it), so ``on_tick`` skips that bar's ticks at or before it.
        """
        if not isinstance(history, Bars):
            history = Bars.from_candles(history)
        s = self._series[timeframe]
        s.closed.load(history[:-1])
        s.newest = Candle(self.symbol, timeframe, *s.closed.row(-1)) if len(s.closed) else None
        s.forming = Candle(self.symbol, timeframe, *history[-1:].rows()[0]) if len(history) else None
        if s.forming is not None:
            s.open_ms = s.start_ms = s.forming.time * 1000
            s.end_ms = s.tf.next_open(s.forming.time) * 1000
            if covered_through_ms is not None:
                s.start_ms = min(max(covered_through_ms + 1, s.open_ms), s.end_ms)
            s.min_spread = s.forming.spread
            s.emitted_volume = s.forming.tick_volume
        else:
            s.start_ms = s.end_ms

    def on_tick(self, tick: Tick) -> list[CandleEvent]:
        """Fold one tick into every timeframe; returns the closed and forming bars to publish."""
        bid = tick.bid
        ask = tick.ask
        price = tick[self._price_at]
        # Float constants: 3.11 specialises float-float comparisons only.
        if bid > 0.0 < ask:
            spread = round((ask - bid) / self.point)
        elif price > 0.0:
            spread = NO_SPREAD
        else:  # a one-sided quote: no price for the bar
            return []
        events: list[CandleEvent] = []
        t = tick.time_msc
        volume = tick.volume
        throttle = self.forming_throttle_ms
        for s in self._ordered:
            if not s.start_ms <= t < s.end_ms:  # rare: a new, stale or first bar (or none forming)
                self._roll(s, tick, price, spread, events)
                continue
            c = s.forming
            if price > c.high:
                c.high = price
            elif price < c.low:
                c.low = price
            c.close = price
            c.tick_volume += 1
            if volume:
                c.real_volume += volume
            if spread < s.min_spread:
                s.min_spread = c.spread = spread
            if t >= s.next_emit_ms:
                s.next_emit_ms = t + throttle
                s.emitted_volume = c.tick_volume
                events.append((c, False))
        return events

    def on_tick_columns(self, columns: TickColumns, wanted: Collection[str] | None = None) -> list[CandleEvent]:
        """``on_tick`` for each of a batch of this symbol's ticks, given as columns; the events
        are the same, in the same order (only those of the ``wanted`` timeframes): from
        ``fold_columns`` when the batch is plain, tick by tick otherwise."""
        rows = self.fold_columns(columns, wanted)
        if rows is not None:
            return rows.events(self.symbol)
        return self.on_ticks_of(columns, wanted)

    def on_ticks_of(self, columns: TickColumns, wanted: Collection[str] | None = None) -> list[CandleEvent]:
        """``on_tick_columns`` tick by tick, for a batch ``fold_columns`` refused."""
        # The forming candle is the live object: copied, as later ticks of the batch change it.
        return [(c, True) if closed else (c.copy(), False)
                for tick in _ticks_of(self.symbol, columns) for c, closed in self.on_tick(tick)
                if wanted is None or c.timeframe in wanted]

    def fold_columns(self, columns: TickColumns, wanted: Collection[str] | None = None) -> CandleRows | None:
        """Fold a plain batch (bid chart, both quotes on every tick, times never going back,
        none before a forming bar's window) with whole-array work: the events ``on_tick`` would
        give tick by tick, as rows (only those of the ``wanted`` timeframes). None, and nothing
        folded, for a batch that is not plain (``on_tick_columns`` folds it tick by tick)."""
        t, bid, ask = columns["time_msc"], columns["bid"], columns["ask"]
        if not self._foldable(t, bid, ask):
            return None
        spread = np.rint((ask - bid) / self.point).astype(np.int64)  # round(), half to even
        parts = [self._fold(s, rank, wanted is None or s.tf.name in wanted, t, bid, spread, columns["volume"])
                 for rank, s in enumerate(self._ordered)]
        return CandleRows.ordered(tuple(s.tf.name for s in self._ordered), parts)

    def _foldable(self, t: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> bool:
        if not len(t) or self._price_at != Tick._fields.index("bid"):
            return False
        if not ((bid > 0.0).all() and (ask > 0.0).all()) or (len(t) > 1 and (t[1:] < t[:-1]).any()):
            return False
        first = int(t[0])
        return all(first >= (s.start_ms if s.forming is not None else s.end_ms) for s in self._ordered)

    def _fold(self, s: _Series, rank: int, wanted: bool, t: np.ndarray, price: np.ndarray,
              spread: np.ndarray, volume: np.ndarray) -> _SeriesRows | None:
        """One series' state after a foldable batch, and its events (if ``wanted``): a closed
        row per bar closed, then a forming row per update, each with the tick it came with.
        A segment is the ticks of one bar; the first may continue the forming bar (``carried``)."""
        n, tf, old = len(t), s.tf, s.forming
        opens = _bar_opens(tf, t)
        new = np.empty(n, bool)
        new[1:] = opens[1:] != opens[:-1]
        carried = old is not None and int(t[0]) < s.end_ms
        new[0] = not carried
        seg = np.flatnonzero(new) if not carried else np.concatenate(([0], np.flatnonzero(new[1:]) + 1))
        ends = np.append(seg[1:], n)
        bars = {"time": opens[seg], "open": price[seg], "high": np.maximum.reduceat(price, seg),
                "low": np.minimum.reduceat(price, seg), "close": price[ends - 1],
                "tick_volume": ends - seg, "spread": np.minimum.reduceat(spread, seg),
                "real_volume": np.add.reduceat(volume, seg)}
        emits = np.asarray(self._emissions(s, t, new), np.int64)
        at = np.searchsorted(seg, emits, "right") - 1  # the segment of each emission
        forming = {"tick_volume": emits - seg[at] + 1}
        if wanted:  # an unpublished series keeps only the volume of its last update
            pairs = np.column_stack((seg[at], emits + 1)).ravel()
            forming.update({"time": bars["time"][at], "open": bars["open"][at], "close": price[emits],
                            **{name: _running(ufunc, column, pairs) for name, ufunc, column in (
                                ("high", np.maximum, price), ("low", np.minimum, price),
                                ("spread", np.minimum, spread), ("real_volume", np.add, volume))}})
        if carried:  # the forming bar's ticks so far count too
            _merge(bars, slice(0, 1), old, s.min_spread)
            if wanted:
                _merge(forming, at == 0, old, s.min_spread)
            else:
                forming["tick_volume"][at == 0] += old.tick_volume
        closes_old = old is not None and not carried  # the first tick closes the forming bar
        out = None
        if wanted:
            # A bar closes on the first tick of the next: the forming bar on the batch's first.
            closed = {name: values[:-1] for name, values in bars.items()}
            closing = ends[:-1]
            if closes_old:
                closed = {name: np.concatenate(([getattr(old, name)], values)) for name, values in closed.items()}
                closing = np.concatenate(([0], closing))
            out = _SeriesRows(rank, closing, closed, emits, forming)
        if closes_old:
            s.closed.append(old)
            s.newest = old
        if len(seg) > 1:
            s.closed.extend(Bars(**{name: values[:-1] for name, values in bars.items()}))
            s.newest = Candle(self.symbol, tf.name, *_rows(bars, slice(-2, -1))[0])
        last = _rows(bars, slice(-1, None))[0]
        s.min_spread = last[6]
        s.forming = Candle(self.symbol, tf.name, *last[:6], 0 if last[6] == NO_SPREAD else last[6], last[7])
        if not carried or len(seg) > 1:
            s.open_ms = s.start_ms = last[0] * 1000
            s.end_ms = tf.next_open(last[0]) * 1000
        if len(emits):
            s.next_emit_ms = int(t[emits[-1]]) + self.forming_throttle_ms
            s.emitted_volume = int(forming["tick_volume"][-1])
        return out

    def _emissions(self, s: _Series, t: np.ndarray, new: np.ndarray) -> list[int]:
        """The ticks after which ``on_tick`` sends the forming bar: each bar's first, then any at
        or past the last one sent plus the throttle."""
        throttle, next_emit = self.forming_throttle_ms, s.next_emit_ms
        if s.tf.seconds and throttle >= s.tf.seconds * 1000:
            # A bar is shorter than the throttle: after its first tick only a bar carried on
            # from the batch before can be due, once.
            emits = np.flatnonzero(new).tolist()
            if not new[0]:
                due = np.flatnonzero(t[:emits[0] if emits else len(t)] >= next_emit)
                emits[:0] = due[:1].tolist()
            return emits
        # Each bar's updates are a chain: its first tick (or, for the bar carried on, its first
        # due tick), then from each update the first tick a throttle later; followed by index
        # rather than tick by tick (an M1 bar replay updates D1 once per four ticks).
        due_after = np.maximum(np.searchsorted(t, t + throttle), np.arange(1, len(t) + 1)).tolist()
        starts = np.flatnonzero(new).tolist()
        ends = [*starts[1:], len(t)]
        emits: list[int] = []
        if not new[0]:
            first_end = starts[0] if starts else len(t)
            starts[:0], ends[:0] = [int(np.searchsorted(t[:first_end], next_emit))], [first_end]
        for i, end in zip(starts, ends):
            while i < end:
                emits.append(i)
                i = due_after[i]
        return emits

    def _on_trade_tick(self, tick: Tick) -> list[CandleEvent]:
        """``on_tick`` of a Last chart: only trades (a positive ``last``) make its bars."""
        if tick.flags & TICK_FLAG_LAST and tick.last > 0.0:
            return CandleAggregator.on_tick(self, tick)
        return []

    def _roll(self, s: _Series, tick: Tick, price: float, spread: int, events: list[CandleEvent]) -> None:
        """A tick outside the fast-path window: close the forming bar and open the tick's, or
        skip a tick the seeded bar already holds, or count it late."""
        t = tick.time_msc
        if s.forming is not None:
            if t < s.start_ms:
                if t < s.open_ms:
                    self.late_ticks += 1
                # else the seeded bar holds it already
                return
            self._close(s, events)
        if s.end_ms and t < s.end_ms:
            # Older than a bar already closed by the clock: too late to count.
            self.late_ticks += 1
            return
        opened = s.tf.bar_open(t // 1000)
        s.forming = Candle(self.symbol, s.tf.name, opened, price, price, price, price, 1,
                           0 if spread == NO_SPREAD else spread, tick.volume)
        s.open_ms = s.start_ms = opened * 1000
        s.end_ms = s.tf.next_open(opened) * 1000
        s.min_spread = spread
        s.next_emit_ms = t + self.forming_throttle_ms
        s.emitted_volume = 1
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
            elif c.tick_volume != s.emitted_volume and market_ms >= s.next_emit_ms:
                s.next_emit_ms = market_ms + self.forming_throttle_ms
                s.emitted_volume = c.tick_volume
                events.append((c, False))
        return events

    def _close(self, s: _Series, events: list[CandleEvent]) -> None:
        c = s.forming
        s.closed.append(c)
        s.newest = c
        s.forming = None
        s.start_ms = s.end_ms
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


def _ticks_of(symbol: str, columns: TickColumns) -> list[Tick]:
    return [Tick(symbol, *row) for row in zip(*(columns[k].tolist() for k in Tick._fields[1:]))]


def _bar_opens(tf: Timeframe, t: np.ndarray) -> np.ndarray:
    """The open (s) of the bar of each tick time (ms)."""
    seconds = t // 1000
    if tf.seconds:
        return tf.bar_open(seconds)  # plain arithmetic: it takes arrays
    days, at = np.unique(seconds // 86400, return_inverse=True)  # MN1: a month is whole days
    return np.array([tf.bar_open(int(d) * 86400) for d in days], np.int64)[at]


def _running(ufunc: np.ufunc, column: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``ufunc`` over ``column[a:b]`` for each ``(a, b)`` of ``pairs`` (flattened)."""
    if not len(pairs):
        return column[:0]
    return ufunc.reduceat(np.append(column, column[:1]), pairs)[::2]


def _merge(values: dict[str, np.ndarray], rows: Any, old: Candle, min_spread: int) -> None:
    """Fold the forming bar ``old`` into the ``rows`` of bar columns that continue it."""
    values["time"][rows] = old.time
    values["open"][rows] = old.open
    values["high"][rows] = np.maximum(values["high"][rows], old.high)
    values["low"][rows] = np.minimum(values["low"][rows], old.low)
    values["tick_volume"][rows] += old.tick_volume
    values["spread"][rows] = np.minimum(values["spread"][rows], min_spread)
    values["real_volume"][rows] += old.real_volume


def _rows(values: dict[str, np.ndarray], rows: slice) -> list[tuple[Any, ...]]:
    """Bar columns as tuples of Python numbers: time, OHLC, tick_volume, spread, real_volume."""
    return list(zip(*(values[name][rows].tolist() for name in _BAR_COLUMNS)))
