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

import heapq
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.models import Book, Candle, SymbolInfo, Tick
from engine.sources.base import MarketSource
from engine.timeframes import Timeframe

ANCHOR_S = 1578268800  # 2020-01-06 00:00:00 UTC, a Monday
DAY_S = 86400
MINUTES_PER_DAY = 1440
BOOK_LEVELS = 10
# History is built from M1 bars; this bounds that work (about 1000 days).
MAX_HISTORY_MINUTES = 1_500_000
MAX_RATE_BATCH = 512
DAY_CACHE = 3
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
    info = SymbolInfo(name, digits, 10.0 ** -digits, desc, base, profit, contract)
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


class _DayBars:
    """The 1440 M1 bars of one symbol's UTC day, as arrays."""

    __slots__ = ("open", "high", "low", "close", "ticks", "spread")

    def __init__(self, o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray,
                 n: np.ndarray, spread: np.ndarray) -> None:
        self.open, self.high, self.low, self.close, self.ticks, self.spread = o, h, l, c, n, spread


class SimMarket:
    """The pure price model of one symbol: day levels, minute bars and a minute's ticks."""

    def __init__(self, sym: SimSymbol, seed: int, ticks_per_minute: float) -> None:
        self.sym = sym
        self.seed = seed
        self.ticks_per_minute = ticks_per_minute
        self._levels = np.zeros(1)  # log level at the start of day d (relative to anchor)
        self._days: dict[int, _DayBars] = {}

    def _level(self, day: int) -> float:
        if day >= len(self._levels):
            n = day + 64
            z = _rng(self.seed, self.sym.info.name, 0).standard_normal(n) * self.sym.daily_vol
            levels = np.empty(n)
            x = 0.0
            for d in range(n):  # an AR(1) walk: sequential by nature, cheap at one step per day
                levels[d] = x
                x = x * (1.0 - _MEAN_REVERSION) + z[d]
            self._levels = levels
        return float(self._levels[day])

    def day(self, day: int) -> _DayBars:
        """Bars of day ``day`` (counted from the anchor), cached."""
        bars = self._days.get(day)
        if bars is not None:
            return bars
        sym = self.sym
        rng = _rng(self.seed, sym.info.name, 1, day)
        vol_m = sym.daily_vol / math.sqrt(MINUTES_PER_DAY)
        start, end = self._level(day), self._level(day + 1)
        walk = np.cumsum(rng.standard_normal(MINUTES_PER_DAY) * vol_m)
        frac = np.arange(1, MINUTES_PER_DAY + 1) / MINUTES_PER_DAY
        log_close = start + walk - frac * walk[-1] + frac * (end - start)
        digits = sym.info.digits
        close = np.round(sym.price * np.exp(log_close), digits)
        open_ = np.empty_like(close)
        open_[0] = round(sym.price * math.exp(start), digits)
        open_[1:] = close[:-1]
        wick = np.abs(rng.standard_normal((2, MINUTES_PER_DAY))) * vol_m * 0.5 * close
        high = np.round(np.maximum(open_, close) + wick[0], digits)
        low = np.round(np.minimum(open_, close) - wick[1], digits)
        ticks = np.maximum(4, rng.poisson(self.ticks_per_minute, MINUTES_PER_DAY))
        spread = rng.integers(sym.spread[0], sym.spread[1] + 1, MINUTES_PER_DAY)
        bars = _DayBars(open_, high, low, close, ticks, spread)
        # Live ticks need only today (and yesterday, around midnight); history reads each day
        # once, in order. A tiny cache keeps a thousand symbols' memory flat.
        if len(self._days) >= DAY_CACHE:
            self._days.pop(next(iter(self._days)))
        self._days[day] = bars
        return bars

    def minute_bars(self, first_minute: int, last_minute: int) -> dict[str, np.ndarray]:
        """M1 bars for absolute minutes ``[first_minute, last_minute)`` as column arrays."""
        anchor_minute = ANCHOR_S // 60
        cols: dict[str, list[np.ndarray]] = {k: [] for k in _DayBars.__slots__}
        m = first_minute
        while m < last_minute:
            rel = m - anchor_minute
            d, i = divmod(rel, MINUTES_PER_DAY)
            j = min(MINUTES_PER_DAY, i + last_minute - m)
            bars = self.day(d)
            for k in cols:
                cols[k].append(getattr(bars, k)[i:j])
            m += j - i
        out = {k: np.concatenate(v) if v else np.empty(0) for k, v in cols.items()}
        out["time"] = np.arange(first_minute, last_minute, dtype=np.int64) * 60
        return out

    def partial_minute(self, minute: int, now_ms: int) -> dict[str, np.ndarray] | None:
        """The M1 bar of ``minute`` made of its ticks up to ``now_ms``, or None before its first."""
        ticks = [t for t in self.minute_ticks(minute) if t[0] <= now_ms]
        if not ticks:
            return None
        bids = [t[1] for t in ticks]
        d, i = divmod(minute - ANCHOR_S // 60, MINUTES_PER_DAY)
        return {
            "time": np.array([minute * 60]), "open": np.array([bids[0]]),
            "high": np.array([max(bids)]), "low": np.array([min(bids)]),
            "close": np.array([bids[-1]]), "ticks": np.array([len(bids)]),
            "spread": self.day(d).spread[i:i + 1],
        }

    def day_open(self, ts: int) -> float:
        """The first price of the UTC day containing ``ts`` (seconds)."""
        return float(self.day((ts - ANCHOR_S) // DAY_S).open[0])

    def minute_ticks(self, minute: int) -> list[tuple[int, float, float]]:
        """The ticks of absolute minute ``minute``: ``(time_msc, bid, ask)`` in time order."""
        d, i = divmod(minute - ANCHOR_S // 60, MINUTES_PER_DAY)
        bars = self.day(d)
        o, h, l, c = (float(a[i]) for a in (bars.open, bars.high, bars.low, bars.close))
        n = int(bars.ticks[i])
        spread = int(bars.spread[i]) * self.sym.info.point
        rng = _rng(self.seed, self.sym.info.name, 2, minute)
        offsets = np.sort(rng.integers(0, 60_000, n))
        # A bridge from open to close; then pin the high and the low on two interior ticks.
        steps = rng.standard_normal(n - 1)
        path = np.concatenate(([0.0], np.cumsum(steps)))
        path = o + (path - np.linspace(0, 1, n) * path[-1]) * (h - l) / (2 + math.sqrt(n)) \
            + np.linspace(0, 1, n) * (c - o)
        path = np.clip(path, l, h)
        path[0], path[-1] = o, c
        hi, lo = rng.choice(np.arange(1, n - 1), 2, replace=False)
        path[hi], path[lo] = h, l
        digits = self.sym.info.digits
        bids = np.round(path, digits).tolist()
        base = minute * 60_000
        return [
            (base + int(off), bid, round(bid + spread, digits))
            for off, bid in zip(offsets.tolist(), bids)
        ]


def _aggregate(symbol: str, tf: Timeframe, m1: dict[str, np.ndarray]) -> list[Candle]:
    """Group M1 bars into ``tf`` bars (``m1`` time-ordered)."""
    times = m1["time"]
    if not len(times):
        return []
    if tf.seconds and tf.seconds < 7 * DAY_S:
        keys = times - times % tf.seconds
    else:
        keys = np.array([tf.bar_open(int(t)) for t in times], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(times)] - 1
    opens = m1["open"][starts]
    highs = np.maximum.reduceat(m1["high"], starts)
    lows = np.minimum.reduceat(m1["low"], starts)
    closes = m1["close"][ends]
    vols = np.add.reduceat(m1["ticks"], starts)
    spreads = np.minimum.reduceat(m1["spread"], starts)
    return [
        Candle(symbol, tf.name, int(k), o, h, l, c, int(v), int(s), 0)
        for k, o, h, l, c, v, s in zip(
            keys[starts].tolist(), opens.tolist(), highs.tolist(), lows.tolist(),
            closes.tolist(), vols.tolist(), spreads.tolist(),
        )
    ]


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
        self._heap: list[tuple[int, int, int]] = []  # (time_msc, symbol index, position)
        self._pending: list[list[tuple[int, float, float]]] = []
        self._minute: list[int] = []
        self._last: dict[str, Tick] = {}
        self._walk: _FastWalk | None = None

    def start(self) -> None:
        if self._start_ms is None:
            import time

            self._start_ms = time.time_ns() // 1_000_000
        now = self._start_ms
        if self.rate == 0:
            self._walk = _FastWalk(self._syms, self.seed)
        minute = now // 60_000
        for idx, sym in enumerate(self._syms):
            ticks = self._markets[sym.info.name].minute_ticks(minute)
            self._pending.append(ticks)
            self._minute.append(minute)
            done = [t for t in ticks if t[0] <= now]
            last = done[-1] if done else self._previous_close_tick(sym, minute)
            self._last[sym.info.name] = Tick(sym.info.name, last[0], last[1], last[2])
            if self.rate:
                self._schedule(idx, len(done))

    def _previous_close_tick(self, sym: SimSymbol, minute: int) -> tuple[int, float, float]:
        prev = self._markets[sym.info.name].minute_ticks(minute - 1)
        return prev[-1]

    def _schedule(self, idx: int, pos: int) -> None:
        ticks = self._pending[idx]
        while pos >= len(ticks):
            self._minute[idx] += 1
            ticks = self._pending[idx] = self._markets[self._syms[idx].info.name].minute_ticks(
                self._minute[idx]
            )
            pos = 0
        heapq.heappush(self._heap, (ticks[pos][0], idx, pos))

    def symbols(self) -> list[SymbolInfo]:
        return [s.info for s in self._syms]

    def history(self, symbol: str, timeframe: Timeframe, count: int) -> list[Candle]:
        """``count`` bars up to the start instant, the forming bar last (with its ticks so far)."""
        market = self._markets[symbol]
        now = self._start_ms
        now_minute = now // 60_000
        first_open = timeframe.bar_open(now // 1000)
        for _ in range(count - 1):
            first_open = timeframe.bar_open(first_open - 1)
        first_minute = max(first_open // 60, now_minute - MAX_HISTORY_MINUTES)
        m1 = market.minute_bars(first_minute, now_minute)
        partial = market.partial_minute(now_minute, now)
        if partial is not None:
            m1 = {k: np.concatenate((m1[k], partial[k])) for k in m1}
        return _aggregate(symbol, timeframe, m1)[-count:]

    def poll(self, now_ms: int) -> list[Tick]:
        if self._walk is not None:
            ticks = self._walk.batch(now_ms)
            self._last.update((t.symbol, t) for t in ticks[-len(self._syms):])
            return ticks
        out: list[Tick] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            t_ms, idx, pos = heapq.heappop(heap)
            _, bid, ask = self._pending[idx][pos]
            tick = Tick(self._syms[idx].info.name, t_ms, bid, ask)
            out.append(tick)
            self._last[tick.symbol] = tick
            self._schedule(idx, pos + 1)
        return out

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
        info = self._markets[symbol].sym.info
        rng = _rng(self.seed, symbol, 3, now_ms // 250)
        half_spread = max(1, round((tick.ask - tick.bid) / info.point / 2))
        # Level offsets in points from the best price, growing by 1-3 half-spreads per level.
        steps = rng.integers(1, 4, (2, BOOK_LEVELS)) * half_spread
        offsets = (steps.cumsum(axis=1) - steps[:, :1]).tolist()
        lots = np.round(rng.lognormal(0.0, 0.8, (2, BOOK_LEVELS)) * (1 + np.arange(BOOK_LEVELS)), 2)
        d = info.digits
        bids = [[round(tick.bid - o * info.point, d), v] for o, v in zip(offsets[0], lots[0].tolist())]
        asks = [[round(tick.ask + o * info.point, d), v] for o, v in zip(offsets[1], lots[1].tolist())]
        return Book(symbol, tick.time_msc, bids, asks)

    def account(self, now_ms: int) -> dict[str, Any] | None:
        sym = self._syms[0]
        entry = self._markets[sym.info.name].day_open(now_ms // 1000)
        return demo_account(sym.info, entry, self._last[sym.info.name].bid)


class _FastWalk:
    """Max-rate ticks: a random walk per symbol, round-robin, stamped with the wall clock."""

    def __init__(self, syms: list[SimSymbol], seed: int) -> None:
        self._syms = syms
        self._rng = np.random.default_rng(seed)
        self._prices = [s.price for s in syms]
        self._i = 0

    def batch(self, now_ms: int) -> list[Tick]:
        n = len(self._syms)
        steps = self._rng.standard_normal(MAX_RATE_BATCH).tolist()
        out = []
        for step in steps:
            i = self._i
            self._i = (i + 1) % n
            sym = self._syms[i]
            info = sym.info
            price = self._prices[i] * (1.0 + step * sym.daily_vol / 1000)
            self._prices[i] = price
            bid = round(price, info.digits)
            out.append(Tick(info.name, now_ms, bid, round(bid + sym.spread[0] * info.point, info.digits)))
        return out


# The demo account: a balance and one long position in the first symbol, opened at the day's open.
DEMO_BALANCE = 10_000.0
DEMO_LEVERAGE = 100
DEMO_VOLUME = 0.10


def demo_account(info: SymbolInfo, entry: float, bid: float) -> dict[str, Any]:
    """MT5 ``account_info`` fields for the demo account with its position marked at ``bid``."""
    profit = (bid - entry) * DEMO_VOLUME * info.trade_contract_size
    notional = DEMO_VOLUME * info.trade_contract_size * entry
    if info.currency_profit != "USD" and info.currency_base == "USD":
        profit /= bid  # quoted in the other currency: convert to the USD account
        notional /= entry
    profit = round(profit, 2)
    equity = round(DEMO_BALANCE + profit, 2)
    margin = round(notional / DEMO_LEVERAGE, 2)
    return {
        "login": 10000001, "trade_mode": 0, "leverage": DEMO_LEVERAGE, "limit_orders": 200,
        "margin_so_mode": 0, "trade_allowed": True, "trade_expert": True, "margin_mode": 2,
        "currency_digits": 2, "fifo_close": False, "balance": DEMO_BALANCE, "credit": 0.0,
        "profit": profit, "equity": equity, "margin": margin,
        "margin_free": round(equity - margin, 2),
        "margin_level": round(equity / margin * 100, 2) if margin else 0.0,
        "margin_so_call": 50.0, "margin_so_so": 30.0, "margin_initial": 0.0,
        "margin_maintenance": 0.0, "assets": 0.0, "liabilities": 0.0,
        "commission_blocked": 0.0, "name": "Demo Trader", "server": "Simulated-Demo",
        "currency": "USD", "company": "MT5 market-data simulator",
    }
