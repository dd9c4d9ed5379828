"""The recent ticks of each symbol with their ``seq``: ``TickRing`` (one symbol) and ``TickJournal``.

Bots that lost ticks (a slow reader, a full high-water mark) ask for them again by ``seq``; a
date range inside the journal is answered from it too. Rings hold compact columns, as
``engine.candle_store`` does for bars: prices as int32 points (exact, switching to float64 for a
price off the grid), ``flags`` as uint32, ``volume`` and ``volume_real`` only from their first
non-zero value on; 24 bytes a tick for an FX pair. A tick's ``seq`` is not stored: the ticks of a
topic are numbered consecutively, so a ring keeps the ``seq`` of its oldest tick.

Appends come in bulk (the engine's deferred path hands over every tick published since the last
call) and are stored thousands at a time: the ticks are turned into columns once, every check
(on the price grid? flags, volumes) runs once over all of them, and each symbol's ring then
copies its slice, so the cost per tick is one transposition and a few numpy element copies.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

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
FLUSH_TICKS = 2048  # ticks queued before they are stored...
# ... or this many a symbol, when there are many: a ring's share of a flush costs a few µs
# whatever its size, so each should take its ticks dozens at a time.
FLUSH_TICKS_PER_SYMBOL = 32
_POINTS = np.int32
_POINTS_MAX = int(np.iinfo(_POINTS).max)
_FLAGS = np.uint32
_FLAGS_MAX = int(np.iinfo(_FLAGS).max)


class TooOld(LookupError):
    """The ticks asked for are no longer in the journal (or the epoch is not the current one)."""


class Layout(NamedTuple):
    """How a ring stores ticks; or what some ticks need."""

    points: bool  # prices as int32 points (else float64)
    wide_flags: bool  # flags as int64 (else uint32)
    volume: bool  # a volume column at all
    volume_real: bool

    def widened(self, needs: Layout) -> Layout:
        """This layout, widened to hold ticks that need ``needs``."""
        return Layout(self.points and needs.points, self.wide_flags or needs.wide_flags,
                      self.volume or needs.volume, self.volume_real or needs.volume_real)


@functools.cache
def _stored(layout: Layout) -> dict[str, type]:
    """The columns a ring of ``layout`` stores, and their types."""
    price = _POINTS if layout.points else np.float64
    kinds = {"time_msc": np.int64, **dict.fromkeys(PRICES, price),
             "flags": np.int64 if layout.wide_flags else _FLAGS}
    if layout.volume:
        kinds["volume"] = np.int64
    if layout.volume_real:
        kinds["volume_real"] = np.float64
    return kinds


class TickRing:
    """The last ``capacity`` ticks of one symbol, with the ``seq`` of each.

    Storage (one array a stored column) grows by doubling up to ``capacity`` and is then reused
    in place. ``covers_from`` is the first millisecond from which the ring holds every tick
    appended.
    """

    __slots__ = ("capacity", "scale", "_layout", "_cols", "_alloc", "_start", "_size", "_first_seq",
                 "_boundary_msc")

    def __init__(self, capacity: int, point: float) -> None:
        self.capacity = capacity
        self.scale = price_scale(point)  # None: prices are stored as float64
        self._layout = Layout(self.scale is not None, False, False, False)
        self._cols = {name: np.empty(0, kind) for name, kind in _stored(self._layout).items()}
        self._alloc = 0
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
        return sum(col.nbytes for col in self._cols.values())

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

    def append(self, columns: Columns, points: Columns, needs: Layout, first_seq: int) -> None:
        """Store ticks numbered ``first_seq``, ``first_seq + 1``... oldest first, given as
        ``columns`` (``TICK_FIELDS`` but ``symbol``), with their prices in whole points of
        ``scale`` (``points``: bid, ask, last) exact where ``needs.points``. A batch that does not
        follow on from the newest held (its numbering restarted) replaces what was held."""
        n = len(columns["time_msc"])
        if not n:
            return
        if self._size and first_seq != self.last_seq + 1:
            self._start = self._size = 0
            self._boundary_msc = None
        if self._boundary_msc is None:
            self._boundary_msc = int(columns["time_msc"][0])
        self._fit(needs)
        if n >= self.capacity:  # only the newest capacity ticks are kept
            skip = n - self.capacity
            if skip or self._size:
                self._boundary_msc = int(columns["time_msc"][skip - 1]) if skip else \
                    int(self._cols["time_msc"][(self._start + self._size - 1) % self._alloc])
            columns = {k: v[skip:] for k, v in columns.items()}
            points = {k: v[skip:] for k, v in points.items()}
            first_seq += skip
            n = self.capacity
            self._start = self._size = 0
        if not self._size:
            self._first_seq = first_seq
        self._reserve(self._size + n)
        alloc = self._alloc
        dropped = max(0, self._size + n - alloc)
        if dropped:
            self._boundary_msc = int(self._cols["time_msc"][(self._start + dropped - 1) % alloc])
        first = (self._start + self._size) % alloc
        head = min(n, alloc - first)  # rows up to the end of the storage, the rest from its start
        in_points = self._layout.points
        for name, col in self._cols.items():
            values = points[name] if in_points and name in PRICES else columns[name]
            col[first:first + head] = values[:head]
            if head < n:
                col[:n - head] = values[head:]
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
        alloc, start, size = self._alloc, self._start, self._size
        times = self._cols["time_msc"]
        head = times[start:min(alloc, start + size)]
        k = int(np.searchsorted(head, time_msc, side))
        if k < len(head) or start + size <= alloc:
            return k
        return len(head) + int(np.searchsorted(times[:start + size - alloc], time_msc, side))

    def _columns(self, lo: int, hi: int) -> Columns:
        """Logical rows ``lo..hi-1`` as float64 and int64 columns, every tick column present."""
        n = hi - lo
        if not n:
            return empty_columns()
        first = (self._start + lo) % self._alloc
        out: Columns = {}
        for name in COLUMNS:
            col = self._cols.get(name)
            if col is None:
                out[name] = np.zeros(n, _KINDS[name])
                continue
            rows = col[first:first + n] if first + n <= self._alloc else \
                np.concatenate((col[first:], col[:first + n - self._alloc]))
            if name in PRICES and self._layout.points:
                out[name] = rows / self.scale
            else:
                out[name] = rows.astype(_KINDS[name])
        return out

    def _fit(self, needs: Layout) -> None:
        """Widen the layout (converting what is held) if the new ticks need more."""
        layout = self._layout.widened(needs)
        if layout == self._layout:
            return
        old, in_points = self._cols, self._layout.points
        cols = {}
        for name, kind in _stored(layout).items():
            if name not in old:
                cols[name] = np.zeros(self._alloc, kind)
            elif name in PRICES and in_points and not layout.points:
                cols[name] = old[name] / self.scale
            else:
                cols[name] = old[name].astype(kind)
        self._cols, self._layout = cols, layout

    def _reserve(self, rows: int) -> None:
        """Grow the storage (up to capacity) to hold ``rows``, oldest first from index 0."""
        alloc = self._alloc
        if rows <= alloc or alloc >= self.capacity:
            return
        grown = min(self.capacity, max(_MIN_ALLOC, 2 * alloc, rows))
        n, start = self._size, self._start
        tail = min(n, alloc - start)
        for name, col in self._cols.items():
            new = np.empty(grown, col.dtype)
            new[:tail] = col[start:start + tail]
            new[tail:n] = col[:n - tail]
            self._cols[name] = new
        self._alloc, self._start = grown, 0


def _needs(columns: Columns, constant: dict[str, object], starts: np.ndarray,
           scale: float | np.ndarray) -> tuple[Columns, list[Layout]]:
    """The prices of ``columns`` in whole points of ``scale`` (one for all, or one a tick; NaN:
    none), and the layout each group of ticks needs, the groups beginning at ``starts``.

    Every check runs once over all the groups (``reduceat``): a symbol's share of a flush may
    be a dozen ticks, and numpy's cost per call would otherwise be paid per symbol.
    """
    points: Columns = {}
    on_grid = np.ones(len(starts), bool)
    for name in PRICES:
        prices = columns[name]
        if constant.get(name, 1) == 0:  # zero is zero points at any scale
            points[name] = prices
            continue
        q = np.rint(prices * scale)
        exact = q / scale == prices
        exact &= np.abs(q) <= _POINTS_MAX
        on_grid &= np.logical_and.reduceat(exact, starts)
        points[name] = q
    wide = _any("flags", columns, constant, starts, lambda f: (f < 0) | (f > _FLAGS_MAX))
    volume = _any("volume", columns, constant, starts, _nonzero)
    real = _any("volume_real", columns, constant, starts, _nonzero)
    return points, [Layout(*row) for row in zip(on_grid.tolist(), wide, volume, real)]


def _any(name: str, columns: Columns, constant: dict[str, object], starts: np.ndarray,
         test: Callable[[np.ndarray], np.ndarray]) -> list[bool]:
    """Per group, whether any of its values of column ``name`` passes ``test``; a constant
    column is tested once."""
    if name in constant:
        return [bool(test(np.array(constant[name])))] * len(starts)
    return np.logical_or.reduceat(test(columns[name]), starts).tolist()


def _nonzero(values: np.ndarray) -> np.ndarray:
    return values != 0


def tick_columns(ticks: Sequence[Tick]) -> Columns:
    """Ticks of one symbol as columns (``COLUMNS``: float64 prices and volume_real, int64 the rest)."""
    return _transposed(ticks)[1] if ticks else empty_columns()


def _transposed(ticks: Sequence[Tick]) -> tuple[tuple[str, ...], Columns, dict[str, object]]:
    """The symbols of ``ticks``, their columns (one transposition, in C), and the value of each
    column that is the same for every tick (``last``, ``volume``, ``flags``, ``volume_real``
    usually are: a currency pair has no trades)."""
    symbols, *values = zip(*ticks)
    columns: Columns = {}
    constant: dict[str, object] = {}
    for name, column in zip(Tick._fields[1:], values):
        kind = _KINDS[name]
        # Counting is cheaper than converting each value (a quarter of the journal's cost).
        if name in _OFTEN_CONSTANT and column.count(first := column[0]) == len(column):
            constant[name] = first
            columns[name] = np.full(len(column), first, kind)
        else:
            columns[name] = np.array(column, kind)
    return symbols, columns, constant


def empty_columns() -> Columns:
    return {name: np.empty(0, _KINDS[name]) for name in COLUMNS}


def joined(parts: Sequence[Columns]) -> Columns:
    """Columns one after the other."""
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS} if parts else empty_columns()


def _id_type(symbols: int) -> type:
    return np.int16 if symbols <= np.iinfo(np.int16).max else np.intp


class TickJournal:
    """The last ``capacity`` ticks of every symbol, numbered as published, for one ``epoch``.

    ``append`` only queues the ticks; they are stored ``FLUSH_TICKS`` at a time (at least
    ``FLUSH_TICKS_PER_SYMBOL`` a symbol), or before any read, so numpy's cost per call is spread
    over thousands of ticks whatever the number of symbols. ``last_seq(symbol)`` is the ``seq``
    of the newest tick of ``symbol`` handed to ``append``; the ones before it count down. It
    must hold whenever ``append`` or a read is called: every tick published has been handed
    over by then.
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
        if len(self._pending) >= max(FLUSH_TICKS, FLUSH_TICKS_PER_SYMBOL * len(self._rings)):
            self._flush()

    def append_columns(self, symbol: str, columns: Columns) -> None:
        """Journal one symbol's ticks given as columns (``COLUMNS``), after those ``append`` queued."""
        self._flush()
        n = len(columns["time_msc"])
        if not n:
            return
        ring = self._ring(symbol)
        points, needs = _needs(columns, {}, np.zeros(1, np.intp), np.nan if ring.scale is None else ring.scale)
        ring.append(columns, points, needs[0], self._last_seq(symbol) - n + 1)

    def _flush(self) -> None:
        """Store the queued ticks: one conversion to columns, one stable sort by symbol, the
        checks on all of them at once, then each symbol's slice into its ring."""
        ticks, self._pending = self._pending, []
        if not ticks:
            return
        symbols, columns, constant = _transposed(ticks)
        n = len(symbols)
        if symbols.count(symbols[0]) == n:
            names, starts = [symbols[0]], np.zeros(1, np.intp)
        else:
            for name in set(symbols).difference(self._ids):
                self._ids[name] = len(self._names)
                self._names.append(name)
            # Small integers sort by radix: a stable sort in linear time.
            ids = np.fromiter(map(self._ids.__getitem__, symbols), _id_type(len(self._names)), n)
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            columns = {k: v if k in constant else v[order] for k, v in columns.items()}
            starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
            names = [self._names[i] for i in ids[starts].tolist()]
        rings = [self._ring(name) for name in names]
        bounds = [*starts.tolist(), n]
        scales = [np.nan if r.scale is None else r.scale for r in rings]
        scale = scales[0] if len(rings) == 1 else np.repeat(scales, np.diff(bounds))
        points, needs = _needs(columns, constant, starts, scale)
        for name, ring, lo, hi, need in zip(names, rings, bounds, bounds[1:], needs):
            ring.append({k: v[lo:hi] for k, v in columns.items()},
                        {k: v[lo:hi] for k, v in points.items()}, need, self._last_seq(name) - (hi - lo) + 1)

    def _ring(self, symbol: str) -> TickRing:
        ring = self._rings.get(symbol)
        if ring is None:
            ring = self._rings[symbol] = TickRing(self.capacity, self._points.get(symbol, 0.0))
        return ring

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

