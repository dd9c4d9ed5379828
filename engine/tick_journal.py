"""The recent ticks of each symbol with their ``seq``: ``TickRing`` (one symbol) and ``TickJournal``.

Bots that lost ticks (a slow reader, a full high-water mark) ask for them again by ``seq``; a
date range inside the journal is answered from it too. Rings hold compact packed records, as
``engine.candle_store`` does for bars: prices as int32 points (exact, switching to float64 for a
price off the grid), ``flags`` as uint32, ``volume`` and ``volume_real`` only from their first
non-zero value on; 24 bytes a tick for an FX pair. A tick's ``seq`` is not stored: the ticks of a
topic are numbered consecutively, so a ring keeps the ``seq`` of its oldest tick.

Appends come in bulk (the engine's deferred path hands over every tick published since the last
call) and are stored thousands at a time, so the cost per tick is a few numpy element copies.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from engine.candle_store import price_scale
from engine.models import Tick
from engine.protocol import TICK_FIELDS

PRICES = ("bid", "ask", "last")
COLUMNS = TICK_FIELDS[1:]  # a tick's columns: every field but the symbol
# The type of each column handed in and out.
_KINDS = {name: np.float64 if name in (*PRICES, "volume_real") else np.int64 for name in COLUMNS}
Columns = dict[str, np.ndarray]
_OFTEN_CONSTANT = frozenset(("last", "volume", "flags", "volume_real"))
_MIN_ALLOC = 64  # a quiet symbol's ring grows only if it is used
FLUSH_TICKS = 2048  # ticks queued before they are stored
_POINTS = np.int32
_POINTS_MAX = int(np.iinfo(_POINTS).max)
_FLAGS = np.uint32
_FLAGS_MAX = int(np.iinfo(_FLAGS).max)


class TooOld(LookupError):
    """The ticks asked for are no longer in the journal (or the epoch is not the current one)."""


@functools.cache
def _record(points: bool, wide_flags: bool, volume: bool, volume_real: bool) -> np.dtype:
    """The packed record of one tick; columns not stored are left out."""
    price = _POINTS if points else np.float64
    columns = [("time_msc", np.int64), *((p, price) for p in PRICES),
               ("flags", np.int64 if wide_flags else _FLAGS)]
    if volume:
        columns.append(("volume", np.int64))
    if volume_real:
        columns.append(("volume_real", np.float64))
    return np.dtype(columns)


class TickRing:
    """The last ``capacity`` ticks of one symbol, with the ``seq`` of each.

    Storage grows by doubling up to ``capacity`` and is then reused in place. ``covers_from``
    is the first millisecond from which the ring holds every tick appended.
    """

    __slots__ = ("capacity", "_scale", "_layout", "_data", "_start", "_size", "_first_seq",
                 "_boundary_msc")

    def __init__(self, capacity: int, point: float) -> None:
        self.capacity = capacity
        self._scale = price_scale(point)  # None: prices are stored as float64
        self._layout = (self._scale is not None, False, False, False)
        self._data = np.empty(0, _record(*self._layout))
        self._start = 0
        self._size = 0
        self._first_seq = 0  # seq of the oldest tick held
        # The time of the newest tick dropped, or of the first tick held while none was: the
        # ring may miss ticks stamped in that millisecond.
        self._boundary_msc: int | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    @property
    def first_seq(self) -> int:
        """``seq`` of the oldest tick held (0 while empty)."""
        return self._first_seq if self._size else 0

    @property
    def last_seq(self) -> int:
        return self._first_seq + self._size - 1 if self._size else 0

    @property
    def covers_from(self) -> int | None:
        """The first ms from which every tick appended is held (None while empty)."""
        return None if self._boundary_msc is None else self._boundary_msc + 1

    def append(self, columns: dict[str, np.ndarray], first_seq: int) -> None:
        """Store ticks numbered ``first_seq``, ``first_seq + 1``... given as columns
        (``TICK_FIELDS`` but ``symbol``), oldest first. A batch that does not follow on from
        the newest held (its numbering restarted) replaces what was held."""
        n = len(columns["time_msc"])
        if not n:
            return
        if self._size and first_seq != self.last_seq + 1:
            self._start = self._size = 0
            self._boundary_msc = None
        if self._boundary_msc is None:
            self._boundary_msc = int(columns["time_msc"][0])
        self._fit(columns)
        if n >= self.capacity:  # only the newest capacity ticks are kept
            skip = n - self.capacity
            if skip or self._size:
                self._boundary_msc = int(columns["time_msc"][skip - 1]) if skip else \
                    int(self._data["time_msc"][(self._start + self._size - 1) % len(self._data)])
            columns = {k: v[skip:] for k, v in columns.items()}
            first_seq += skip
            n = self.capacity
            self._start = self._size = 0
        if not self._size:
            self._first_seq = first_seq
        self._reserve(self._size + n)
        alloc = len(self._data)
        dropped = max(0, self._size + n - alloc)
        if dropped:
            self._boundary_msc = int(self._data["time_msc"][(self._start + dropped - 1) % alloc])
        first = (self._start + self._size) % alloc
        rows = np.arange(first, first + n) % alloc if first + n > alloc else slice(first, first + n)
        data = self._data
        for name in data.dtype.names:
            data[name][rows] = self._stored(name, columns[name])
        self._size += n - dropped
        self._start = (self._start + dropped) % alloc
        self._first_seq += dropped

    def since(self, after_seq: int, count: int) -> tuple[int, Columns]:
        """The ticks numbered ``after_seq + 1`` on, at most ``count``: ``(first seq, columns)``.
        ``TooOld`` if ``after_seq + 1`` was dropped."""
        if self._size and after_seq + 1 < self._first_seq:
            raise TooOld(f"seq {after_seq + 1} is no longer journaled; the oldest held is {self._first_seq}")
        lo = max(0, after_seq + 1 - self._first_seq)
        hi = min(self._size, lo + count)
        return after_seq + 1, self._columns(lo, max(lo, hi))

    def between(self, from_msc: int, to_msc: int, count: int) -> Columns:
        """Up to ``count`` ticks stamped ``from_msc..to_msc`` (inclusive), oldest first."""
        lo = self._search(from_msc, "left")
        hi = min(self._search(to_msc, "right"), lo + count)
        return self._columns(lo, max(lo, hi))

    def _search(self, time_msc: int, side: str) -> int:
        """The logical index where ``time_msc`` would go in the held times (in time order)."""
        alloc, start, size = len(self._data), self._start, self._size
        times = self._data["time_msc"]
        head = times[start:min(alloc, start + size)]
        k = int(np.searchsorted(head, time_msc, side))
        if k < len(head) or start + size <= alloc:
            return k
        return len(head) + int(np.searchsorted(times[:start + size - alloc], time_msc, side))

    def _columns(self, lo: int, hi: int) -> Columns:
        """Logical rows ``lo..hi-1`` as float64 and int64 columns, every tick column present."""
        alloc, n = len(self._data), hi - lo
        if not n:
            return empty_columns()
        first = (self._start + lo) % alloc
        rows = self._data[np.arange(first, first + n) % alloc if first + n > alloc else slice(first, first + n)]
        names = rows.dtype.names
        out: Columns = {}
        for name in COLUMNS:
            kind = _KINDS[name]
            if name not in names:
                out[name] = np.zeros(n, kind)
            elif name in PRICES and self._layout[0]:
                out[name] = rows[name] / self._scale
            else:
                out[name] = rows[name].astype(kind)
        return out

    def _stored(self, name: str, values: np.ndarray) -> np.ndarray:
        if name in PRICES and self._layout[0]:
            return np.rint(values * self._scale)
        return values

    def _fit(self, columns: dict[str, np.ndarray]) -> None:
        """Widen the layout (copying what is held) if the new ticks need more."""
        points, wide, volume, real = self._layout
        if points and not all(_on_grid(columns[p], self._scale) for p in PRICES):
            points = False
        flags = columns["flags"]
        wide = wide or bool(len(flags) and (flags.min() < 0 or flags.max() > _FLAGS_MAX))
        volume = volume or bool(columns["volume"].any())
        real = real or bool(columns["volume_real"].any())
        layout = (points, wide, volume, real)
        if layout == self._layout:
            return
        old, old_points = self._data, self._layout[0]
        data = np.zeros(len(old), _record(*layout))
        for name in old.dtype.names:
            data[name] = old[name] / self._scale if name in PRICES and old_points and not points \
                else old[name]
        self._data, self._layout = data, layout

    def _reserve(self, rows: int) -> None:
        """Grow the storage (up to capacity) to hold ``rows``, oldest first from index 0."""
        alloc = len(self._data)
        if rows <= alloc or alloc >= self.capacity:
            return
        grown = np.empty(min(self.capacity, max(_MIN_ALLOC, 2 * alloc, rows)), self._data.dtype)
        n, start = self._size, self._start
        tail = min(n, alloc - start)
        grown[:tail] = self._data[start:start + tail]
        grown[tail:n] = self._data[:n - tail]
        self._data, self._start = grown, 0


def _on_grid(prices: np.ndarray, scale: float) -> bool:
    """Whether every price comes back bit for bit from int32 points."""
    q = np.rint(prices * scale)
    return bool((q / scale == prices).all() and (not q.size or np.abs(q).max() <= _POINTS_MAX))


def tick_columns(ticks: Sequence[Tick]) -> Columns:
    """Ticks of one symbol as columns (``COLUMNS``: float64 prices and volume_real, int64 the rest)."""
    return _transposed(ticks)[1] if ticks else empty_columns()


def _transposed(ticks: Sequence[Tick]) -> tuple[tuple[str, ...], Columns]:
    """The symbols of ``ticks`` and their columns (one transposition, in C)."""
    symbols, *values = zip(*ticks)
    return symbols, {name: _column(v, name) for name, v in zip(Tick._fields[1:], values)}


def _column(values: tuple[object, ...], name: str) -> np.ndarray:
    """One column as an array. ``last``, ``volume``, ``flags`` and ``volume_real`` are often the
    same for every tick (a currency pair has no trades): counting that is cheaper than
    converting each value (a quarter of the journal's cost per tick)."""
    kind = _KINDS[name]
    if name in _OFTEN_CONSTANT and values.count(first := values[0]) == len(values):
        return np.full(len(values), first, kind)
    return np.array(values, kind)


def empty_columns() -> Columns:
    return {name: np.empty(0, _KINDS[name]) for name in COLUMNS}


def joined(parts: Sequence[Columns]) -> Columns:
    """Columns one after the other."""
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS} if parts else empty_columns()


class TickJournal:
    """The last ``capacity`` ticks of every symbol, numbered as published, for one ``epoch``.

    ``append`` only queues the ticks; they are stored ``FLUSH_TICKS`` at a time, or before any
    read, so numpy's cost per call is spread over thousands of ticks whatever the number of
    symbols. ``last_seq(symbol)`` is the ``seq`` of the newest tick of ``symbol`` handed to
    ``append``; the ones before it count down. It must hold whenever ``append`` or a read is
    called: every tick published has been handed over by then.
    """

    def __init__(self, capacity: int, epoch: int, points: dict[str, float],
                 last_seq: Callable[[str], int]) -> None:
        self.capacity = capacity
        self.epoch = epoch
        self._points = points
        self._last_seq = last_seq
        self._rings: dict[str, TickRing] = {}
        self._pending: list[Tick] = []
        self._ids: dict[str, int] = {}  # symbol -> a small integer, to group ticks by symbol
        self._names: list[str] = []

    def ring(self, symbol: str) -> TickRing | None:
        self._flush()
        return self._rings.get(symbol)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._rings.values())

    def append(self, ticks: Sequence[Tick]) -> None:
        """Journal ``ticks`` (several symbols, each in publishing order)."""
        self._pending += ticks
        if len(self._pending) >= FLUSH_TICKS:
            self._flush()

    def append_columns(self, symbol: str, columns: Columns) -> None:
        """Journal one symbol's ticks given as columns (``COLUMNS``), after those ``append`` queued."""
        self._flush()
        self._append(symbol, columns)

    def _flush(self) -> None:
        """Store the queued ticks: one conversion to columns, one stable sort by symbol, then
        each symbol's slice into its ring."""
        ticks, self._pending = self._pending, []
        if not ticks:
            return
        symbols, columns = _transposed(ticks)
        first = symbols[0]
        if symbols.count(first) == len(symbols):
            self._append(first, columns)
            return
        for name in set(symbols).difference(self._ids):
            self._ids[name] = len(self._names)
            self._names.append(name)
        ids = np.fromiter(map(self._ids.__getitem__, symbols), np.int64, len(symbols))
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        columns = {k: v[order] for k, v in columns.items()}
        bounds = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), len(ids)]
        for lo, hi in zip(bounds, bounds[1:]):
            self._append(self._names[ids[lo]], {k: v[lo:hi] for k, v in columns.items()})

    def _append(self, symbol: str, columns: Columns) -> None:
        ring = self._rings.get(symbol)
        if ring is None:
            ring = self._rings[symbol] = TickRing(self.capacity, self._points.get(symbol, 0.0))
        ring.append(columns, self._last_seq(symbol) - len(columns["time_msc"]) + 1)

    def since(self, symbol: str, epoch: int, after_seq: int, count: int) -> tuple[int, Columns]:
        """``symbol``'s ticks after ``after_seq`` (at most ``count``): ``(seq of the first,
        columns)``; ``TooOld`` if they are gone or ``epoch`` is not this one."""
        self._flush()
        if epoch != self.epoch:
            raise TooOld(f"epoch {epoch} is not the engine's current epoch {self.epoch}; "
                         "the journal holds this run's ticks only")
        ring = self._rings.get(symbol)
        if ring is None:
            if after_seq > 0:
                raise TooOld(f"no tick of {symbol} is journaled")
            return after_seq + 1, empty_columns()
        return ring.since(after_seq, count)

    def between(self, symbol: str, from_msc: int, to_msc: int, count: int) -> Columns:
        self._flush()
        ring = self._rings.get(symbol)
        return ring.between(from_msc, to_msc, count) if ring else empty_columns()

    def covers_from(self, symbol: str) -> int | None:
        """The first ms from which ``symbol``'s every published tick is journaled (None: none yet)."""
        self._flush()
        ring = self._rings.get(symbol)
        return ring.covers_from if ring else None

