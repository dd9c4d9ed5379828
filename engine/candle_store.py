"""Closed candle history in compact numpy records: ``Bars`` (a batch) and ``CandleRing`` (a series).

A thousand symbols × four timeframes × ``MAX_CANDLES`` bars is four million bars: over a gigabyte
as Python objects, 24 bytes a bar here (one packed record array per series). Prices are stored as
int32 points, which is exact: a price on its symbol's grid is ``points / 10**digits`` to the last
bit. A series holding a price off the grid (or too large for int32) switches to float64, so
nothing is ever rounded. Integer columns start narrow and move up a type when a value does not
fit; ``real_volume`` (FX has none) is stored from its first non-zero value on.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from engine.models import Candle

PRICES = ("open", "high", "low", "close")
INTEGERS = ("time", "tick_volume", "spread", "real_volume")
# Each integer column's types, narrowest first. None: not stored while every value is 0.
_LADDERS: dict[str, tuple[Any, ...]] = {
    "time": (np.uint32, np.int64),  # uint32 holds bar times until 2106
    "tick_volume": (np.uint16, np.uint32, np.int64),
    "spread": (np.int16, np.int32, np.int64),
    "real_volume": (None, np.int64),
}
_BOUNDS = {t: (int(np.iinfo(t).min), int(np.iinfo(t).max))
           for ladder in _LADDERS.values() for t in ladder if t is not None}
_POINTS = np.int32
_POINTS_MAX = int(np.iinfo(_POINTS).max)
_MIN_ALLOC = 8  # a series seeded with a few bars (D1 for the summary) grows only if it is used


@dataclass(frozen=True, slots=True)
class Bars:
    """Bars as equal-length columns, oldest first: float64 prices, integers the rest."""

    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    tick_volume: np.ndarray
    spread: np.ndarray
    real_volume: np.ndarray

    @classmethod
    def from_candles(cls, candles: Sequence[Candle]) -> Bars:
        return cls(*(
            np.array([getattr(c, f) for c in candles], np.float64 if f in PRICES else np.int64)
            for f in COLUMNS
        ))

    def __len__(self) -> int:
        return len(self.time)

    def __getitem__(self, rows: slice) -> Bars:
        return Bars(*(getattr(self, f)[rows] for f in COLUMNS))

    def rows(self) -> list[tuple[Any, ...]]:
        """Each bar as a tuple of Python numbers, in ``COLUMNS`` order."""
        return list(zip(*self._lists()))

    def _lists(self) -> list[list[Any]]:
        return [getattr(self, f).tolist() for f in COLUMNS]

    def candles(self, symbol: str, timeframe: str) -> list[Candle]:
        return [Candle(symbol, timeframe, *row) for row in self.rows()]

    def payloads(self, symbol: str, timeframe: str, closed: bool) -> list[dict[str, Any]]:
        """The bus payload of each bar (as ``Candle.to_payload``), built without a Candle each."""
        return [
            {"symbol": symbol, "timeframe": timeframe, "time": t, "open": o, "high": h, "low": lo,
             "close": c, "tick_volume": v, "spread": s, "real_volume": r, "closed": closed}
            for t, o, h, lo, c, v, s, r in zip(*self._lists())
        ]


COLUMNS = tuple(f.name for f in fields(Bars))


def price_scale(point: float) -> float | None:
    """``10**digits`` for a symbol whose point is ``10**-digits``; None if the point is not one."""
    if not 0 < point <= 1:
        return None
    digits = round(-math.log10(point))
    return 10.0 ** digits if digits <= 15 else None


def _points(prices: np.ndarray, scale: float) -> np.ndarray | None:
    """``prices`` as int32 points, or None if any would not come back bit for bit."""
    q = np.rint(prices * scale)
    if (q / scale == prices).all() and (not q.size or np.abs(q).max() <= _POINTS_MAX):
        return q.astype(_POINTS)
    return None  # off the grid, too large, or not finite


def _point(price: float, scale: float) -> int | None:
    """``price`` as points if they give it back bit for bit and fit int32, else None."""
    if not math.isfinite(price):
        return None
    q = round(price * scale)
    return q if q / scale == price and -_POINTS_MAX <= q <= _POINTS_MAX else None


def _fits(dtype: Any, low: int, high: int) -> bool:
    if dtype is None:
        return low == high == 0
    lo, hi = _BOUNDS[dtype]
    return lo <= low and high <= hi


def _rung(name: str, current: Any, low: int, high: int) -> Any:
    """The narrowest type of column ``name``, not below ``current``, that holds ``low..high``."""
    ladder = _LADDERS[name]
    return next(t for t in ladder[ladder.index(current):] if _fits(t, low, high))


def _span(values: np.ndarray) -> tuple[int, int]:
    return (int(values.min()), int(values.max())) if len(values) else (0, 0)


@functools.cache
def _record(points: bool, ints: tuple[Any, ...]) -> np.dtype:
    """The packed record of one bar, in ``COLUMNS`` order: prices as points or float64, then
    ``ints`` (the types of ``INTEGERS``; a None column is left out)."""
    types = dict(zip(INTEGERS, ints), **dict.fromkeys(PRICES, _POINTS if points else np.float64))
    return np.dtype([(name, types[name]) for name in COLUMNS if types[name] is not None])


class CandleRing:
    """The last ``capacity`` closed bars of one series: O(1) append, the oldest dropped when full.

    Storage grows by doubling up to ``capacity`` and is then reused in place (no allocation per
    bar: a series that reallocates as it closes bars leaves the heap full of holes).
    """

    __slots__ = ("capacity", "_scale", "_ints", "_data", "_start", "_size")

    def __init__(self, capacity: int, point: float) -> None:
        self.capacity = capacity
        self._scale = price_scale(point)  # None: prices are stored as float64
        self._ints = tuple(_LADDERS[name][0] for name in INTEGERS)
        self._data = np.empty(0, _record(self._scale is not None, self._ints))
        self._start = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Memory held by the bars (allocated rows included)."""
        return self._data.nbytes

    def load(self, bars: Bars) -> None:
        """Replace the contents with the last ``capacity`` bars of ``bars``."""
        bars = bars[max(0, len(bars) - self.capacity):]
        n = len(bars)
        prices = np.stack([getattr(bars, name) for name in PRICES])
        points = None if self._scale is None else _points(prices, self._scale)
        if points is None:
            self._scale = None
        self._ints = tuple(_rung(name, _LADDERS[name][0], *_span(getattr(bars, name))) for name in INTEGERS)
        # Room to double: a series seeded one bar short of capacity never copies itself.
        data = np.empty(min(self.capacity, max(2 * n, _MIN_ALLOC)), _record(points is not None, self._ints))
        for k, name in enumerate(PRICES):
            data[name][:n] = prices[k] if points is None else points[k]
        for name in INTEGERS:
            if name in data.dtype.names:
                data[name][:n] = getattr(bars, name)
        self._data, self._start, self._size = data, 0, n

    def append(self, c: Candle) -> None:
        """Store a closed bar (its values are copied: the Candle may be reused)."""
        i = self._slot()
        try:
            self._data[i] = self._record_of(c)
        except OverflowError:  # an integer too large for its column: move the column up
            self._retype(tuple(
                _rung(name, t, getattr(c, name), getattr(c, name))
                for name, t in zip(INTEGERS, self._ints)
            ))
            self._data[i] = self._record_of(c)

    def extend(self, bars: Bars) -> None:
        """Store closed bars at once (oldest first), as ``append`` would one by one."""
        bars = bars[max(0, len(bars) - self.capacity):]
        n = len(bars)
        if not n:
            return
        ints = tuple(_rung(name, t, *_span(getattr(bars, name))) for name, t in zip(INTEGERS, self._ints))
        if ints != self._ints:
            self._retype(ints)
        prices = np.stack([getattr(bars, name) for name in PRICES])
        points = None if self._scale is None else _points(prices, self._scale)
        if self._scale is not None and points is None:
            self._retype(self._ints, points=False)
        records = np.empty(n, self._data.dtype)
        for k, name in enumerate(PRICES):
            records[name] = prices[k] if points is None else points[k]
        for name in INTEGERS:
            if name in records.dtype.names:
                records[name] = getattr(bars, name)
        slots = self._slots(n)  # first: it may grow the storage
        self._data[slots] = records

    def row(self, k: int) -> tuple[Any, ...]:
        """Bar ``k`` (0 the oldest, -1 the newest) as Python numbers in ``COLUMNS`` order."""
        if not -self._size <= k < self._size:
            raise IndexError(k)
        t, o, h, lo, c, v, s, *r = self._data.item((self._start + k % self._size) % len(self._data))
        scale = self._scale
        if scale is not None:
            o, h, lo, c = o / scale, h / scale, lo / scale, c / scale
        return t, o, h, lo, c, v, s, r[0] if r else 0

    def last(self, count: int) -> Bars:
        """The newest ``count`` bars (all if fewer), oldest first."""
        count = max(0, min(count, self._size))
        alloc = len(self._data)
        first = self._start + self._size - count
        rows = self._data[np.arange(first, first + count) % alloc if first + count > alloc
                          else slice(first, first + count)]
        names = rows.dtype.names
        return Bars(**{
            name: rows[name] / self._scale if name in PRICES and self._scale is not None
            else rows[name] if name in names else np.zeros(count, np.int64)
            for name in COLUMNS
        })

    def _slot(self) -> int:
        """The index to write the next bar to: grow while below capacity, then overwrite the oldest."""
        alloc = len(self._data)
        if self._size < alloc:
            self._size += 1
            return (self._start + self._size - 1) % alloc
        if alloc < self.capacity:  # full but allowed to grow; _start is still 0 here
            grown = np.empty(min(self.capacity, max(_MIN_ALLOC, 2 * alloc)), self._data.dtype)
            grown[:alloc] = self._data
            self._data = grown
            self._size += 1
            return alloc
        i = self._start
        self._start = (i + 1) % alloc
        return i

    def _slots(self, n: int) -> np.ndarray:
        """The indices ``n`` calls of ``_slot`` give (``n`` <= capacity), growing the storage
        to what they would have grown it to."""
        alloc, wanted = len(self._data), min(self._size + n, self.capacity)
        if alloc < wanted:  # full while growing: _start is still 0 here
            while alloc < wanted:
                alloc = min(self.capacity, max(_MIN_ALLOC, 2 * alloc))
            grown = np.empty(alloc, self._data.dtype)
            grown[:len(self._data)] = self._data
            self._data = grown
        free = min(alloc - self._size, n)
        slots = np.concatenate((self._start + self._size + np.arange(free), self._start + np.arange(n - free))) % alloc
        self._size += free
        self._start = (self._start + n - free) % alloc
        return slots

    def _record_of(self, c: Candle) -> tuple[Any, ...]:
        prices = (c.open, c.high, c.low, c.close)
        if self._scale is not None:
            points = tuple(_point(p, self._scale) for p in prices)
            if None not in points:
                prices = points
            else:
                self._retype(self._ints, points=False)
        if self._ints[3] is None:
            if c.real_volume:
                self._retype(self._ints[:3] + (_LADDERS["real_volume"][1],))
                return (c.time, *prices, c.tick_volume, c.spread, c.real_volume)
            return (c.time, *prices, c.tick_volume, c.spread)
        return (c.time, *prices, c.tick_volume, c.spread, c.real_volume)

    def _retype(self, ints: tuple[Any, ...], points: bool | None = None) -> None:
        """Copy the records into wider types (``points=False``: prices to float64)."""
        old, scale = self._data, self._scale
        points = scale is not None if points is None else points
        data = np.zeros(len(old), _record(points, ints))
        for name in old.dtype.names:
            data[name] = old[name] / scale if name in PRICES and scale is not None and not points \
                else old[name]
        self._data, self._ints = data, ints
        if not points:
            self._scale = None
