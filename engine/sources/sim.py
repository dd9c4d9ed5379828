"""The simulated market: deterministic from a seed, realistic enough to develop and demo against.

The market is a pure function of (seed, rate, time), so a restarted engine sees the same prices
at the same instants and its history equals what an uninterrupted run aggregated live:

* each symbol's log price follows a mean-reverting random walk from day to day, anchored at
  2020-01-06 UTC; inside a day the 1440 minute closes are a Brownian bridge between day levels;
* each minute has a precomputed bar: open (the previous close), high, low, close, a tick count
  drawn from the tick rate (at least 4) and a spread;
* the minute's ticks are drawn when it starts: irregular arrival times, the first at the open,
  the last at the close, one at the high and one at the low, the rest wandering in between. So
  ticks aggregate exactly to the precomputed bar, and history is built from bars, not ticks.

With ``rate=0`` ("as fast as possible", for benchmarks) ticks come in batches from a plain
random walk stamped with the wall clock; that mode is not restart-reproducible.
"""
from __future__ import annotations

import bisect
import calendar
import heapq
import math
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from engine.candle_store import PRICES, Bars
from engine.models import Book, Candle, SymbolInfo, Tick
from engine.activity import Activity, Record
from engine.sources.base import MarketSource
from engine.sources.sim_account import DemoAccount
from engine.timeframes import Timeframe

ANCHOR_S = 1578268800  # 2020-01-06 00:00:00 UTC, a Monday
DAY_S = 86400
MINUTES_PER_DAY = 1440
BOOK_LEVELS = 10
BOOK_SHAPES = 64  # distinct depth-of-market shapes a symbol cycles through
# History is built from M1 bars; this bounds that work (about 1000 days).
MAX_HISTORY_MINUTES = 1_500_000
MAX_RATE_BATCH = 512
# Ticks of a minute are drawn this many at a time, so a minute of a busy market (hundreds of
# thousands of ticks) never stalls the engine while it is generated.
TICK_CHUNK = 512
LEVEL_MARGIN = 64  # days of the level walk kept around what was asked
LIVE_MINUTES = 60  # minute bars kept for live ticks: a day is recomputed once an hour per symbol
HISTORY_CHUNK_DAYS = 8  # days computed together for history: small temporaries stay in cache
_MEAN_REVERSION = 0.01  # per day, pulls the walk back towards the anchor price


@dataclass(frozen=True, slots=True)
class SimSymbol:
    info: SymbolInfo
    price: float  # anchor price
    daily_vol: float  # stdev of the daily log return
    spread: tuple[int, int]  # spread in points, min and max
    weight: float  # share of the tick rate


def _fx(name: str, desc: str, price: float, digits: int, vol: float, spread: tuple[int, int],
        weight: float, contract: float = 100_000.0) -> SimSymbol:
    base, profit = (name[:3], name[3:6]) if len(name) >= 6 else (name, "USD")
    point = 10.0 ** -digits
    # The demo account is in USD: a point of a USD-quoted pair is worth point x contract.
    tick_value = point * contract / (price if base == "USD" else 1.0)
    info = SymbolInfo(name, digits, point, desc, base, profit, contract,
                      trade_tick_value=round(tick_value, 8))
    return SimSymbol(info, price, vol, spread, weight)


KNOWN_SYMBOLS: dict[str, SimSymbol] = {
    s.info.name: s
    for s in (
        _fx("EURUSD", "Euro vs US Dollar", 1.0850, 5, 0.005, (6, 14), 1.0),
        _fx("GBPUSD", "Great Britain Pound vs US Dollar", 1.2650, 5, 0.006, (9, 20), 0.8),
        _fx("USDJPY", "US Dollar vs Japanese Yen", 149.50, 3, 0.006, (8, 18), 0.8),
        _fx("XAUUSD", "Gold vs US Dollar", 2350.00, 2, 0.010, (15, 35), 1.2, 100.0),
        _fx("BTCUSD", "Bitcoin vs US Dollar", 65000.00, 2, 0.030, (1500, 3000), 1.5, 1.0),
    )
}


def sim_symbol(name: str) -> SimSymbol:
    """Parameters for ``name``: the known majors, or a stable made-up FX pair for any other."""
    if name in KNOWN_SYMBOLS:
        return KNOWN_SYMBOLS[name]
    h = zlib.crc32(name.encode())
    price = round(0.5 + (h % 15000) / 10000, 5)
    return _fx(name, f"Simulated {name}", price, 5, 0.004 + (h % 5) / 1000, (8, 20), 1.0)


def _rng(seed: int, symbol: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(symbol.encode()), *index])


_BAR_FIELDS = ("open", "high", "low", "close", "ticks", "spread")


Columns = tuple[list[int], list[float], list[float]]  # one chunk's times, bids and asks


def _quotes(prices: np.ndarray, scale: float | np.ndarray, spread_points: float | np.ndarray,
            ) -> tuple[list[float], list[float]]:
    """Bids (``prices`` rounded to whole points) and asks ``spread_points`` above, as lists.

    Whole points over ``scale`` (10**digits) are the same doubles ``round(price, digits)``
    gives, computed for the whole array at once. Overwrites ``prices``.
    """
    points = np.rint(np.multiply(prices, scale, out=prices), out=prices)
    return (points / scale).ravel().tolist(), ((points + spread_points) / scale).ravel().tolist()


class SimMarket:
    """The pure price model of one symbol: day levels, minute bars and a minute's ticks.

    Whole days are the unit of computation (a day's minutes are a bridge between its levels).
    History computes its days in batches and keeps nothing; live ticks keep only the next
    ``LIVE_MINUTES`` minute bars and the current minute's ticks, so a thousand symbols stay small.
    """

    def __init__(self, sym: SimSymbol, seed: int, ticks_per_minute: float) -> None:
        self.sym = sym
        self.seed = seed
        self.ticks_per_minute = ticks_per_minute
        self._levels = np.empty(0)  # log levels at the start of days _levels_from, ...
        self._levels_from = 0
        self._live = np.empty((0, len(_BAR_FIELDS)))  # minute bars from _live_from on, one a row
        self._live_from = 0
        self._book_shapes: tuple[np.ndarray, np.ndarray] | None = None
        self._plans: dict[int, _MinutePlan] = {}  # the current minute's and the next one's
        self._so_far: tuple[int, int, MinuteSoFar | None] | None = None  # (minute, until, summary)

    def levels(self, first_day: int, last_day: int) -> np.ndarray:
        """Log levels (relative to the anchor price) at the start of days ``first_day..last_day``."""
        lo, hi = first_day - self._levels_from, last_day - self._levels_from
        if lo < 0 or hi >= len(self._levels):
            n = last_day + LEVEL_MARGIN
            z = (_rng(self.seed, self.sym.info.name, 0).standard_normal(n) * self.sym.daily_vol).tolist()
            walk = [0.0] * n
            x = 0.0
            for d in range(n):  # an AR(1) walk: sequential by nature, cheap at one step per day
                walk[d] = x
                x = x * (1.0 - _MEAN_REVERSION) + z[d]
            # Keep a window: start-up, history and the next weeks of live ticks all fall in it.
            self._levels_from = max(0, first_day - LEVEL_MARGIN)
            self._levels = np.array(walk[self._levels_from:])
            lo, hi = first_day - self._levels_from, last_day - self._levels_from
        return self._levels[lo:hi + 1]

    def days(self, first_day: int, last_day: int) -> dict[str, np.ndarray]:
        """M1 bars of days ``[first_day, last_day)`` (counted from the anchor), ``(days, 1440)`` each.

        The random draws are per day (each day has its own stream); the arithmetic runs on all
        the days at once, element by element as for one day, so a day's bars do not depend on
        the batch it was computed in.
        """
        n = last_day - first_day
        sym = self.sym
        vol_m = sym.daily_vol / math.sqrt(MINUTES_PER_DAY)
        steps = np.empty((n, MINUTES_PER_DAY))
        wick = np.empty((n, 2, MINUTES_PER_DAY))
        ticks = np.empty((n, MINUTES_PER_DAY), np.int64)
        spread = np.empty((n, MINUTES_PER_DAY), np.int64)
        for k in range(n):
            rng = _rng(self.seed, sym.info.name, 1, first_day + k)
            rng.standard_normal(out=steps[k])
            rng.standard_normal(out=wick[k])
            ticks[k] = rng.poisson(self.ticks_per_minute, MINUTES_PER_DAY)
            spread[k] = rng.integers(sym.spread[0], sym.spread[1] + 1, MINUTES_PER_DAY)
        # In place, but the same operations in the same order as a formula per day would do.
        levels = self.levels(first_day, last_day)
        start, end = levels[:-1, None], levels[1:, None]
        steps *= vol_m
        walk = np.cumsum(steps, axis=1, out=steps)
        frac = np.arange(1, MINUTES_PER_DAY + 1) / MINUTES_PER_DAY
        bridge = frac * walk[:, -1:]
        walk += start
        walk -= bridge
        walk += frac * (end - start)
        digits = sym.info.digits
        close = np.exp(walk, out=walk)
        close *= sym.price
        np.round(close, digits, out=close)
        open_ = np.empty_like(close)
        open_[:, 0] = [self._day_open(level) for level in levels[:-1].tolist()]
        open_[:, 1:] = close[:, :-1]
        np.abs(wick, out=wick)
        wick *= vol_m
        wick *= 0.5
        wick *= close[:, None, :]
        high = np.maximum(open_, close)
        high += wick[:, 0]
        low = np.minimum(open_, close)
        low -= wick[:, 1]
        return {"open": open_, "high": np.round(high, digits, out=high),
                "low": np.round(low, digits, out=low), "close": close,
                "ticks": np.maximum(ticks, 4, out=ticks), "spread": spread}

    def _day_open(self, level: float) -> float:
        return round(self.sym.price * math.exp(level), self.sym.info.digits)

    def minute_bars(self, first_minute: int, last_minute: int, now_ms: int) -> dict[str, np.ndarray]:
        """M1 bars of absolute minutes ``[first_minute, last_minute)`` as columns, then the bar of
        minute ``last_minute`` made of its ticks up to ``now_ms`` if it has any yet."""
        anchor = ANCHOR_S // 60
        n = last_minute - first_minute
        out = {k: np.empty(n + 1, np.float64 if k in PRICES else np.int64) for k in _BAR_FIELDS}
        first_day = (first_minute - anchor) // MINUTES_PER_DAY
        last_day = (last_minute - 1 - anchor) // MINUTES_PER_DAY + 1 if n else first_day
        for d0 in range(first_day, last_day, HISTORY_CHUNK_DAYS):
            d1 = min(d0 + HISTORY_CHUNK_DAYS, last_day)
            bars = self.days(d0, d1)
            base = anchor + d0 * MINUTES_PER_DAY
            lo, hi = max(first_minute, base), min(last_minute, base + (d1 - d0) * MINUTES_PER_DAY)
            for k in _BAR_FIELDS:
                out[k][lo - first_minute:hi - first_minute] = bars[k].reshape(-1)[lo - base:hi - base]
        partial = self._partial_minute(last_minute, now_ms)
        if partial is None:
            n -= 1
        else:
            for k, v in zip(_BAR_FIELDS, partial):
                out[k][n] = v
        out = {k: v[:n + 1] for k, v in out.items()}
        out["time"] = np.arange(first_minute, first_minute + n + 1, dtype=np.int64) * 60
        return out

    def _partial_minute(self, minute: int, now_ms: int) -> tuple[float, ...] | None:
        """The bar of ``minute`` made of its ticks up to ``now_ms``, or None before its first."""
        so_far = self.minute_so_far(minute, now_ms)
        if so_far is None:
            return None
        return (so_far.open, so_far.high, so_far.low, so_far.last[1], so_far.count,
                self._minute_bar(minute)[5])

    def minute_so_far(self, minute: int, until_ms: int) -> MinuteSoFar | None:
        """The ticks of ``minute`` up to ``until_ms`` in brief, or None before its first. Start-up
        asks twice (the live position, then the history's forming bar): they are drawn once."""
        if self._so_far is None or self._so_far[:2] != (minute, until_ms):
            ticks = self.minute_ticks(minute, until_ms)
            bids = [bid for _, bid, _ in ticks]
            so_far = MinuteSoFar(len(ticks), bids[0], max(bids), min(bids), ticks[-1]) if ticks else None
            self._so_far = (minute, until_ms, so_far)
        return self._so_far[2]

    def last_tick_of(self, minute: int) -> tuple[int, float, float]:
        """The last tick of ``minute``: only its last chunk is drawn."""
        return self.ticks(minute, self.chunks(minute) - 1)[-1]

    def _minute_bar(self, minute: int) -> tuple[float, float, float, float, int, int]:
        """(open, high, low, close, ticks, spread) of absolute minute ``minute``, for live ticks."""
        j = minute - self._live_from
        if not 0 <= j < len(self._live):
            d, i = divmod(minute - ANCHOR_S // 60, MINUTES_PER_DAY)
            bars = self.days(d, d + 1)
            # One minute back too: start-up reads the previous minute's close.
            first = max(0, i - 1)
            rows = slice(first, i + LIVE_MINUTES)
            self._live = np.stack([bars[k][0, rows] for k in _BAR_FIELDS], axis=1)
            self._live_from, j = minute - (i - first), i - first
        o, h, l, c, n, spread = self._live[j].tolist()
        return o, h, l, c, int(n), int(spread)

    def book_shape(self, slot: int) -> tuple[list[list[int]], list[list[float]]]:
        """Depth of market shape number ``slot``: level offsets from the best price in
        half-spreads (growing by 1-3 a level) and lots, bids then asks. Drawn once, reused."""
        if self._book_shapes is None:
            # As arrays (12 kB a symbol): as Python lists a thousand symbols would take 80 MB.
            rng = _rng(self.seed, self.sym.info.name, 3)
            steps = rng.integers(1, 4, (BOOK_SHAPES, 2, BOOK_LEVELS), dtype=np.int16)
            lots = rng.lognormal(0.0, 0.8, (BOOK_SHAPES, 2, BOOK_LEVELS)) * (1 + np.arange(BOOK_LEVELS))
            self._book_shapes = (steps.cumsum(axis=2, dtype=np.int16) - steps[:, :, :1], np.round(lots, 2))
        offsets, lots = self._book_shapes
        k = (slot * 0x9E3779B1 >> 16) % BOOK_SHAPES
        return offsets[k].tolist(), lots[k].tolist()

    def day_open(self, ts: int) -> float:
        """The first price of the UTC day containing ``ts`` (seconds)."""
        day = (ts - ANCHOR_S) // DAY_S
        return self._day_open(float(self.levels(day, day)[0]))

    def plan(self, minute: int) -> _MinutePlan:
        """How the ticks of ``minute`` are laid out: cheap, so a busy minute starts without a stall."""
        plan = self._plans.get(minute)
        if plan is not None:
            return plan
        o, h, l, c, n, spread_points = self._minute_bar(minute)
        rng = _rng(self.seed, self.sym.info.name, 4, minute)
        k = -(-n // TICK_CHUNK)
        counts = np.full(k, n // k) + (np.arange(k) < n % k)
        starts = np.concatenate(([0], np.cumsum(counts)))  # first index of each chunk, then n
        # Sorted uniform arrival times split by rank: the chunks' time spans are Dirichlet-spaced.
        spans = np.cumsum(rng.standard_gamma(counts))
        bounds = np.concatenate(([0], np.floor(spans / spans[-1] * 60_000))).astype(np.int64)
        # The random walk at each chunk start and at the last tick (index n - 1).
        ends = np.append(starts[1:-1], n - 1)
        walk = np.concatenate(([0.0], np.cumsum(rng.standard_normal(k) * np.sqrt(ends - starts[:-1]))))
        # Two distinct inner indices for the high and the low (n >= 4), without a permutation.
        hi = int(rng.integers(1, n - 1))
        lo = int(rng.integers(1, n - 2))
        lo += lo >= hi
        plan = _MinutePlan(minute, o, h, l, c, n, spread_points,
                           starts.tolist(), bounds.tolist(), walk, hi, lo)
        if len(self._plans) >= 2:
            del self._plans[min(self._plans)]
        self._plans[minute] = plan
        return plan

    def ticks(self, minute: int, chunk: int) -> list[tuple[int, float, float]]:
        """Chunk ``chunk`` of the ticks of ``minute``: ``(time_msc, bid, ask)`` in time order."""
        return list(zip(*self.chunk_columns(minute, chunk)))

    def chunk_columns(self, minute: int, chunk: int) -> Columns:
        """``ticks`` as three lists: times, bids and asks (what live cursors read).

        The minute's path is a Brownian bridge from its open to its close, scaled to its range and
        clipped into it, with the first tick at the open, the last at the close, and one each at
        the high and the low; so the minute's ticks aggregate exactly to its bar.
        """
        p = self.plan(minute)
        a, b = p.starts[chunk], p.starts[chunk + 1]
        end = b if b < p.n else p.n - 1  # the walk index this chunk's bridge runs to
        rng = _rng(self.seed, self.sym.info.name, 5, minute, chunk)
        steps = rng.standard_normal(end - a)
        w = np.concatenate(([0.0], np.cumsum(steps)))
        frac = np.arange(end - a + 1) / max(end - a, 1)
        w = p.walk[chunk] + w - frac * w[-1] + frac * (p.walk[chunk + 1] - p.walk[chunk])
        w = w[: b - a]
        i = np.arange(a, b) / max(p.n - 1, 1)
        path = p.o + (w - i * p.walk[-1]) * (p.h - p.l) / (2 + math.sqrt(p.n)) + i * (p.c - p.o)
        path = np.clip(path, p.l, p.h)
        for index, price in ((0, p.o), (p.n - 1, p.c), (p.hi, p.h), (p.lo, p.l)):
            if a <= index < b:
                path[index - a] = price
        offsets = np.sort(rng.integers(p.bounds[chunk], max(p.bounds[chunk] + 1, p.bounds[chunk + 1]), b - a))
        offsets += minute * 60_000
        bids, asks = _quotes(path, 10.0 ** self.sym.info.digits, p.spread)
        return offsets.tolist(), bids, asks

    def chunks(self, minute: int) -> int:
        return len(self.plan(minute).starts) - 1

    def minute_ticks(self, minute: int, until_ms: int | None = None) -> list[tuple[int, float, float]]:
        """The ticks of ``minute`` (up to ``until_ms`` when given), generating only the chunks needed."""
        out: list[tuple[int, float, float]] = []
        for chunk in range(self.chunks(minute)):
            if until_ms is not None and minute * 60_000 + self.plan(minute).bounds[chunk] > until_ms:
                break
            out += self.ticks(minute, chunk)
        return out if until_ms is None else [t for t in out if t[0] <= until_ms]


class MinuteSoFar(NamedTuple):
    count: int
    open: float
    high: float
    low: float
    last: tuple[int, float, float]  # (time_msc, bid, ask)


def _tick_time(tick: Tick) -> int:
    return tick.time_msc


class _TickCursor:
    """One symbol's place in its live ticks: the current chunk, and the next one once prefetched."""

    __slots__ = ("market", "name", "minute", "chunk", "times", "bids", "asks", "pos", "upcoming",
                 "queued", "_unprefetched")

    def __init__(self, market: SimMarket, minute: int, pos: int,
                 unprefetched: deque[_TickCursor]) -> None:
        """Start at tick ``pos`` of ``minute`` (past its last: at the next minute)."""
        self.market = market
        self.name = market.sym.info.name
        self._unprefetched = unprefetched
        self.queued = False
        starts = market.plan(minute).starts
        self.minute = minute
        self.chunk = max(0, bisect.bisect_right(starts, pos, hi=len(starts) - 1) - 1)
        self.upcoming: Columns | None = None
        self._load(market.chunk_columns(minute, self.chunk))
        self.pos = pos - starts[self.chunk]
        self._skip_drained()

    def _load(self, columns: Columns) -> None:
        self.times, self.bids, self.asks = columns
        self.pos = 0
        if not self.queued:
            self.queued = True
            self._unprefetched.append(self)

    def _following(self) -> tuple[int, int]:
        """(minute, chunk) after the current chunk."""
        if self.chunk + 1 < self.market.chunks(self.minute):
            return self.minute, self.chunk + 1
        return self.minute + 1, 0

    def prefetch(self) -> None:
        if self.upcoming is None:
            self.upcoming = self.market.chunk_columns(*self._following())

    def _skip_drained(self) -> None:
        while self.pos >= len(self.times):
            self.prefetch()
            columns, self.upcoming = self.upcoming, None
            self.minute, self.chunk = self._following()
            self._load(columns)

    def next_time(self) -> int:
        return self.times[self.pos]

    def take(self, now_ms: int, out: list[Tick]) -> None:
        """Append every tick stamped at or before ``now_ms`` to ``out``, in time order."""
        name = self.name
        while True:
            times, pos = self.times, self.pos
            end = bisect.bisect_right(times, now_ms, pos)
            out += map(Tick, repeat(name, end - pos), times[pos:end], self.bids[pos:end], self.asks[pos:end])
            self.pos = end
            if end < len(times):
                return
            self._skip_drained()


@dataclass(frozen=True, slots=True)
class _MinutePlan:
    minute: int
    o: float
    h: float
    l: float
    c: float
    n: int
    spread: int  # in points
    starts: list[int]  # index of each chunk's first tick, then n
    bounds: list[int]  # ms offsets where each chunk's time span starts, then 60000
    walk: np.ndarray  # the walk at each chunk start, then at the last tick
    hi: int  # the index of the tick at the high
    lo: int  # ... and at the low


def _first_open(tf: Timeframe, now_s: int, count: int) -> int:
    """Open time of the first of ``count`` bars of ``tf`` ending with the one containing ``now_s``."""
    last = tf.bar_open(now_s)
    if tf.seconds:
        return last - (count - 1) * tf.seconds
    year, month = time.gmtime(last)[:2]
    k = year * 12 + month - 1 - (count - 1)
    return calendar.timegm((k // 12, k % 12 + 1, 1, 0, 0, 0))


def _opens(tf: Timeframe, first: int, last: int) -> np.ndarray:
    """Open times of the bars of ``tf`` from the one opening at ``first`` to the one holding ``last``."""
    if tf.seconds:
        return np.arange(first, last + 1, tf.seconds, dtype=np.int64)
    opens = [first]
    while (t := tf.next_open(opens[-1])) <= last:
        opens.append(t)
    return np.array(opens, np.int64)


def _aggregate(tf: Timeframe, m1: dict[str, np.ndarray], first: int) -> Bars:
    """Group gapless, time-ordered M1 bars into ``tf`` bars, from the bar opening at ``first``."""
    times = m1["time"]
    if not len(times):
        return Bars.from_candles(())
    t0 = int(times[0])
    opens = _opens(tf, first, int(times[-1]))
    opens = opens[opens >= t0]  # a bar opening before the minute bars would be incomplete
    starts = (opens - t0) // 60
    ends = np.r_[starts[1:], len(times)] - 1
    return Bars(
        opens, m1["open"][starts], np.maximum.reduceat(m1["high"], starts),
        np.minimum.reduceat(m1["low"], starts), m1["close"][ends],
        np.add.reduceat(m1["ticks"], starts), np.minimum.reduceat(m1["spread"], starts),
        np.zeros(len(opens), np.int64),
    )


class SimSource(MarketSource):
    """The default source: a deterministic simulated market on the wall clock."""

    name = "sim"

    def __init__(self, symbols: list[str] | tuple[str, ...], seed: int = 42, rate: float = 100.0,
                 clock_ms: int | None = None) -> None:
        self._syms = [sim_symbol(s) for s in symbols]
        self.seed = seed
        self.rate = rate
        total_weight = sum(s.weight for s in self._syms)
        self._markets = {
            s.info.name: SimMarket(s, seed, max(rate, 1.0) * 60 * s.weight / total_weight)
            for s in self._syms
        }
        self._start_ms = clock_ms
        self._cursors: list[_TickCursor] = []
        self._unprefetched: deque[_TickCursor] = deque()  # cursors whose next chunk is not drawn
        self._heap: list[tuple[int, int]] = []  # (time_msc of its next tick, cursor index)
        self._last: dict[str, Tick] = {}
        self._walk: _FastWalk | None = None
        self._archives: dict[str, SimMarket] = {}  # models answering ranges
        self._quoting: dict[str, SimMarket] = {}  # models quoting the demo account's trades
        self._demo = DemoAccount(seed, [s.info for s in self._syms], self._minute_quote)

    def start(self) -> None:
        if self._start_ms is None:
            self._start_ms = time.time_ns() // 1_000_000
        now = self._start_ms
        if self.rate == 0:
            self._walk = _FastWalk(self._syms, self.seed)
        minute = now // 60_000
        for idx, sym in enumerate(self._syms):
            market = self._markets[sym.info.name]
            so_far = market.minute_so_far(minute, now)
            last = so_far.last if so_far else market.last_tick_of(minute - 1)
            self._last[sym.info.name] = Tick(sym.info.name, *last)
            if self.rate:
                cursor = _TickCursor(market, minute, so_far.count if so_far else 0, self._unprefetched)
                self._cursors.append(cursor)
                heapq.heappush(self._heap, (cursor.next_time(), idx))
        self._demo.activity(now, self._last)  # the account as it stands: its deals so far are history

    def symbols(self) -> list[SymbolInfo]:
        return [s.info for s in self._syms]

    def history(self, symbol: str, timeframe: Timeframe, count: int) -> list[Candle]:
        """``count`` bars up to the start instant, the forming bar last (with its ticks so far)."""
        bars = self.history_arrays(symbol, {timeframe: count})[timeframe.name]
        return bars.candles(symbol, timeframe.name)

    def history_arrays(self, symbol: str, counts: Mapping[Timeframe, int]) -> dict[str, Bars]:
        """``history`` of several timeframes at once, as arrays: the minute bars of the longest
        span are computed once and every timeframe is aggregated from them."""
        market = self._markets[symbol]
        now = self._start_ms
        now_minute = now // 60_000
        firsts = {tf: _first_open(tf, now // 1000, count) for tf, count in counts.items()}
        first_minute = max(min(firsts.values()) // 60, now_minute - MAX_HISTORY_MINUTES)
        m1 = market.minute_bars(first_minute, now_minute, now)
        return {tf.name: _aggregate(tf, m1, firsts[tf])[-count:] for tf, count in counts.items()}

    def tick_range(self, symbol: str, from_msc: int, to_msc: int, count: int) -> list[Tick] | None:
        """Regenerated from the model, which the live ticks came from (not at rate 0: that walk
        is not reproducible); from the anchor on, up to the last tick delivered."""
        if self._walk is not None:
            return None
        market = self._archive_market(symbol)
        lo, hi = max(from_msc, ANCHOR_S * 1000), min(to_msc, self._last[symbol].time_msc)
        out: list[Tick] = []
        for minute in range(lo // 60_000, hi // 60_000 + 1):
            bounds = market.plan(minute).bounds
            for chunk in range(market.chunks(minute)):
                if minute * 60_000 + max(bounds[chunk] + 1, bounds[chunk + 1]) <= lo:
                    continue  # every tick of this chunk is before the range
                times, bids, asks = market.chunk_columns(minute, chunk)
                a, b = bisect.bisect_left(times, lo), bisect.bisect_right(times, hi)
                out += map(Tick, repeat(symbol, b - a), times[a:b], bids[a:b], asks[a:b])
                if len(out) >= count or b < len(times):
                    return out[:count]
        return out

    def candle_range(self, symbol: str, timeframe: Timeframe, from_s: int, to_s: int,
                     count: int) -> list[Candle] | None:
        """Closed bars recomputed from the model's minute bars, as ``history`` builds them; the
        model's history starts at the anchor, at most ``MAX_HISTORY_MINUTES`` before the start."""
        earliest = max(ANCHOR_S, (self._start_ms // 60_000 - MAX_HISTORY_MINUTES) * 60)
        now_s = time.time_ns() // 1_000_000_000
        start = max(from_s, earliest)
        first = timeframe.bar_open(start)
        if first < start:
            first = timeframe.next_open(first)
        last = timeframe.bar_open(min(to_s, now_s))
        if timeframe.next_open(last) > now_s:  # still forming
            last = timeframe.bar_open(last - 1)
        if first > last:
            return []
        if timeframe.seconds:
            last = min(last, first + (count - 1) * timeframe.seconds)
        opens = _opens(timeframe, first, last)[:count]
        end_minute = timeframe.next_open(int(opens[-1])) // 60
        # The minute after the range has no ticks before its own start: no partial bar.
        m1 = self._archive_market(symbol).minute_bars(first // 60, end_minute, end_minute * 60_000 - 1)
        return _aggregate(timeframe, m1, first).candles(symbol, timeframe.name)

    def _archive_market(self, symbol: str) -> SimMarket:
        """The model of ``symbol`` for ranges: its own caches, so the live ones stay warm."""
        market = self._archives.get(symbol)
        if market is None:
            live = self._markets[symbol]
            market = self._archives[symbol] = SimMarket(live.sym, live.seed, live.ticks_per_minute)
        return market

    def poll(self, now_ms: int) -> list[Tick]:
        if self._walk is not None:
            ticks = self._walk.batch(now_ms)
            self._last.update((t.symbol, t) for t in ticks[-len(self._syms):])
            return ticks
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now_ms:
            due.append(heapq.heappop(heap)[1])
        if not due:
            return []
        out: list[Tick] = []
        due.sort()  # symbol order, then a stable sort by time: ties in a ms come in symbol order
        for idx in due:
            cursor = self._cursors[idx]
            cursor.take(now_ms, out)
            self._last[cursor.name] = out[-1]
            heapq.heappush(heap, (cursor.next_time(), idx))
        if len(due) > 1:
            out.sort(key=_tick_time)
        return out

    def prefetch_due(self) -> int | None:
        # The cursor queued first: its current chunk runs out first, near enough.
        return self._unprefetched[0].times[-1] if self._unprefetched else None

    def prefetch(self) -> None:
        """Draw the next chunk of one symbol whose current chunk is being read."""
        if self._unprefetched:
            cursor = self._unprefetched.popleft()
            cursor.queued = False
            cursor.prefetch()

    def next_due(self, now_ms: int) -> int:
        if self._walk is not None or not self._heap:
            return 0
        return max(0, self._heap[0][0] - now_ms)

    def last_tick(self, symbol: str) -> Tick:
        return self._last[symbol]

    def book(self, symbol: str, now_ms: int) -> Book | None:
        tick = self._last.get(symbol)
        if tick is None:
            return None
        market = self._markets[symbol]
        info = market.sym.info
        # The depth changes every 250 ms, picked from the symbol's precomputed shapes.
        offsets, lots = market.book_shape(now_ms // 250)
        unit = max(1, round((tick.ask - tick.bid) / info.point / 2)) * info.point  # half a spread
        d = info.digits
        bids = [[round(tick.bid - o * unit, d), v] for o, v in zip(offsets[0], lots[0])]
        asks = [[round(tick.ask + o * unit, d), v] for o, v in zip(offsets[1], lots[1])]
        return Book(symbol, tick.time_msc, bids, asks)

    def account(self, now_ms: int) -> dict[str, Any] | None:
        return self._demo.info(now_ms, self._last)

    def activity(self, now_ms: int) -> Activity | None:
        return self._demo.activity(now_ms, self._last)

    def deal_range(self, from_s: int, to_s: int, symbol: str | None, count: int) -> list[Record] | None:
        return self._demo.deal_range(from_s, to_s, symbol, count)

    def _minute_quote(self, symbol: str, minute: int) -> tuple[float, float]:
        """The bid and ask of the first tick of ``minute``: its bar's open, with its spread."""
        market = self._quoting.get(symbol)
        if market is None:
            live = self._markets[symbol]
            market = self._quoting[symbol] = SimMarket(live.sym, live.seed, live.ticks_per_minute)
        open_, *_, spread = market._minute_bar(minute)
        scale = 10.0 ** market.sym.info.digits
        points = round(open_ * scale)  # as _quotes rounds: half to even
        return points / scale, (points + spread) / scale


class _FastWalk:
    """Max-rate ticks: a random walk per symbol, round-robin, stamped with the wall clock."""

    def __init__(self, syms: list[SimSymbol], seed: int) -> None:
        n = len(syms)
        self._rng = np.random.default_rng(seed)
        self._prices = np.array([s.price for s in syms])
        # Batches are whole rounds over the symbols, so column k of a batch is symbol k.
        self._rounds = max(1, MAX_RATE_BATCH // n)
        self._names = [s.info.name for s in syms] * self._rounds
        self._vol = np.array([s.daily_vol / 1000 for s in syms])
        self._scale = np.array([10.0 ** s.info.digits for s in syms])
        self._spread = np.array([float(s.spread[0]) for s in syms])

    def batch(self, now_ms: int) -> list[Tick]:
        steps = self._rng.standard_normal((self._rounds, len(self._prices)))
        steps *= self._vol
        steps += 1.0
        prices = np.cumprod(steps, axis=0, out=steps)
        prices *= self._prices
        self._prices = prices[-1].copy()
        bids, asks = _quotes(prices, self._scale, self._spread)
        return [Tick(name, now_ms, bid, ask) for name, bid, ask in zip(self._names, bids, asks)]
