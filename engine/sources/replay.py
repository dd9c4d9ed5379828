"""The ``replay`` source: plays a file of ticks or bars at a speed factor.

Formats, recognised by the header line:

* MT5's bar export (tab-separated ``<DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL>
  <SPREAD>``; the D1 export has no ``<TIME>``). Each bar becomes ticks the way the strategy
  tester's "1 minute OHLC" mode does: the open, then the low and the high -- low first for a
  bullish bar (close > open), high first for a bearish one; a doji (close = open) goes the
  opposite way of the bar before it, as in the tester, and a first doji counts as bullish --
  then the close. The four ticks sit at 0, 1/4, 2/4 and 3/4 of the bar; a tick repeating the
  price of the one before is dropped (a flat bar is one tick). ``ask = bid + SPREAD * point``.
  So bars re-aggregated from a replay have the file's OHLC and spread, but their
  ``tick_volume`` counts these 1 to 4 synthetic ticks, not the file's ``<TICKVOL>``.
* MT5's tick export (``<DATE> <TIME> <BID> <ASK> <LAST> <VOLUME> <FLAGS>``, time with
  milliseconds). A blank BID, ASK or LAST means unchanged: the previous value is carried; rows
  before both BID and ASK are known are skipped. VOLUME is the tick's ``volume_real`` (its whole
  part the integer ``volume``); a blank VOLUME is 0. Blank FLAGS are inferred.
* A plain CSV ``symbol,time_msc,bid,ask[,last,volume,flags]`` (several symbols allowed).
* A directory: a recording made by ``mt5-recorder`` (``engine.sources.recording_reader``).

For the MT5 exports, the symbol is ``REPLAY_SYMBOL`` or else the file name without its
``.csv``/``.txt``/``.tsv`` extension, up to the first ``_`` (MT5 names its exports like
``EURUSD_M1_202401020000_202401312359.csv``, so ``EURUSD.m_ticks.csv`` plays ``EURUSD.m``; a
symbol with ``_`` in its name needs ``REPLAY_SYMBOL``). The bar length comes from the timeframe
in the file name (``_M1_``, ``_H1_``...), else D1 for a file without ``<TIME>``, else the shortest
step between the first bars. Digits (and point) are the most decimals seen in the prices of the
first rows. Times stay the file's own (MT5 writes the trade server's clock) and must not go back.

Playing: at ``REPLAY_SPEED`` s > 0 the replay clock starts at the first tick when the engine
first polls and runs s times faster than the wall clock, gaps (nights, weekends) included; at 0
ticks come as fast as the engine takes them, ``BATCH`` per poll, and the clock is the time of
the last tick delivered. A bar file at 0 is read ``BAR_BATCH`` whole bars at a time as arrays
(``poll_bars``): the same ticks, without a Python object per row or tick. The file is read as it plays, never loaded whole; a plain CSV is read
once beforehand, to learn its symbols, and every file once to count its rows (``status``) and
index them for ranges (``engine.sources.replay_index``).

Control (the RPC op ``replay``): with ``REPLAY_START=paused`` the file is loaded and nothing
plays until ``start_playing``; ``pause``/``resume`` stop and go on (at a speed > 0 the clock
resumes where it stopped); ``seek`` plays on from a time, whole bars only.
"""
from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Iterator
from contextlib import closing
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.aggregation import CandleAggregator, TickColumns
from engine.config import EngineConfig
from engine.models import (
    TICK_FLAG_ASK, TICK_FLAG_BID, TICK_FLAG_LAST, TICK_FLAG_VOLUME, Candle, SymbolInfo, Tick,
)
from engine.protocol import ProtocolError, validate_symbol
from engine.sources.base import MarketSource, SourceError
from engine.sources.recording_reader import RecordingReader, recorded_ticks
from engine.sources.replay_index import Entry, ReplayIndex, file_encoding
from engine.tick_journal import tick_columns
from engine.timeframes import TIMEFRAMES, Timeframe

BATCH = 1000  # ticks per poll in "as fast as possible" mode
# Bars per ``poll_bars`` (about 4,000 ticks). Measured with benchmarks/replay_lossless.py: 250
# cost its three processes 20-30% more CPU (more wake-ups, numpy calls on small arrays); 2000
# saved no more and delivered later (the worker waits for a whole batch's candles).
BAR_BATCH = 1000
SAMPLE_ROWS = 200  # first rows read to infer digits and the bar length
IDLE_DUE_MS = 1000  # next_due once the file is played
EXTENSIONS = (".csv", ".txt", ".tsv")

BAR_COLUMNS = ("DATE", "OPEN", "HIGH", "LOW", "CLOSE")
TICK_COLUMNS = ("DATE", "TIME", "BID", "ASK")
CSV_COLUMNS = ("symbol", "time_msc", "bid", "ask")

Row = tuple[int, list[str]]  # line number, fields
# A bar read from an export: open (ms), length (ms), OHLC, spread (points), bullish; and
# many of them as columns of these names.
BarRow = tuple[int, int, float, float, float, float, int, bool]
BAR_FIELDS = ("time", "length", "open", "high", "low", "close", "spread", "bullish")
BarColumns = dict[str, np.ndarray]


# -- pure pieces ------------------------------------------------------------------------------


def detect_format(header: str) -> tuple[str, str, dict[str, int]]:
    """``(kind, separator, column index by name)`` for a header line; ``kind`` is ``bars``,
    ``ticks`` or ``csv``. ``ValueError`` if the header is none of the three."""
    sep = "\t" if "\t" in header else ","
    names = [n.strip() for n in header.strip().split(sep)]
    mt5 = {n.strip("<>").upper(): i for i, n in enumerate(names) if n.startswith("<")}
    if all(c in mt5 for c in BAR_COLUMNS):
        return "bars", sep, mt5
    if all(c in mt5 for c in TICK_COLUMNS):
        return "ticks", sep, mt5
    plain = {n.lower(): i for i, n in enumerate(names)}
    if all(c in plain for c in CSV_COLUMNS):
        return "csv", sep, plain
    raise ValueError(
        f"unknown header {header.strip()!r}; expected an MT5 bar export (<DATE> <TIME> <OPEN> "
        "<HIGH> <LOW> <CLOSE> <TICKVOL> <VOL> <SPREAD>), an MT5 tick export (<DATE> <TIME> "
        "<BID> <ASK> <LAST> <VOLUME> <FLAGS>) or a CSV symbol,time_msc,bid,ask[,last,volume,flags]"
    )


def decimals(number: str) -> int:
    """Decimal places written in ``number``: ``"1.10390"`` -> 5."""
    _, dot, frac = number.strip().partition(".")
    return len(frac) if dot else 0


@lru_cache(maxsize=4096)
def parse_date(date: str) -> int:
    """``2024.01.02`` (any separator) -> seconds at 00:00 of that day, read as UTC."""
    if len(date) != 10:
        raise ValueError(f"bad date {date!r}, expected YYYY.MM.DD")
    return calendar.timegm((int(date[0:4]), int(date[5:7]), int(date[8:10]), 0, 0, 0))


def parse_clock(clock: str) -> int:
    """``HH:MM[:SS[.mmm]]`` -> milliseconds since midnight."""
    n = len(clock)
    if n == 12 and clock[8] == ".":  # the tick export's form, the hot path
        return _clock_seconds(clock[:8]) * 1000 + int(clock[9:])
    if n not in (5, 8) and not (n > 9 and clock[8] == "."):
        raise ValueError(f"bad time {clock!r}, expected HH:MM:SS[.mmm]")
    ms = int(clock[9:12].ljust(3, "0")) if n > 9 else 0
    return _clock_seconds(clock[:8] if n >= 8 else clock + ":00") * 1000 + ms


@lru_cache(maxsize=4096)
def _clock_seconds(hms: str) -> int:
    if len(hms) != 8 or hms[2] != ":" or hms[5] != ":":
        raise ValueError(f"bad time {hms!r}, expected HH:MM:SS")
    h, m, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
    if h > 23 or m > 59 or s > 59:
        raise ValueError(f"bad time {hms!r}")
    return (h * 60 + m) * 60 + s


def symbol_from_filename(path: str | Path) -> str:
    """``EURUSD_M1_2024.csv`` -> ``EURUSD``; ``EURUSD.m_ticks.csv`` -> ``EURUSD.m``."""
    name = Path(path).name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return name.split("_", 1)[0]


def timeframe_from_filename(path: str | Path) -> Timeframe | None:
    """The timeframe MT5 writes after the symbol in an export's name (``EURUSD_H1_...``)."""
    parts = Path(path).name.split("_")
    return TIMEFRAMES.get(parts[1].split(".")[0]) if len(parts) > 1 else None


def bar_is_bullish(open_: float, close: float, previous_bullish: bool) -> bool:
    """The tester's rule: a doji goes the opposite way of the bar before it."""
    if close != open_:
        return close > open_
    return not previous_bullish


def bar_ticks(
    symbol: str, open_ms: int, length_ms: int, o: float, h: float, low: float, c: float,
    spread_price: float, digits: int, bullish: bool,
) -> list[Tick]:
    """A bar as "1 minute OHLC" ticks: open, low/high (low first when bullish), close."""
    path = (o, low, h, c) if bullish else (o, h, low, c)
    ticks: list[Tick] = []
    previous = None
    for k, bid in enumerate(path):
        if bid == previous:
            continue
        previous = bid
        ask = round(bid + spread_price, digits)
        ticks.append(Tick(symbol, open_ms + k * length_ms // 4, bid, ask))
    return ticks


def tick_flags(bid: str, ask: str, last: str, volume: str) -> int:
    """Flags for a tick-export row without FLAGS: the fields it sets."""
    return ((TICK_FLAG_BID if bid else 0) | (TICK_FLAG_ASK if ask else 0)
            | (TICK_FLAG_LAST if last else 0) | (TICK_FLAG_VOLUME if volume else 0))


def _indices(cols: dict[str, int], names: tuple[str, ...]) -> tuple[int, tuple[int, ...]]:
    """Row width and the index of each column; an absent column reads an always-blank slot
    past the header's columns (rows are padded to the width)."""
    blank = max(cols.values()) + 1
    return blank + 1, tuple(cols.get(n, blank) for n in names)


def _number(fields: list[str], cols: dict[str, int], name: str) -> str:
    """The raw field ``name``, ``""`` when the column is absent or the row is short."""
    i = cols.get(name)
    return fields[i].strip() if i is not None and i < len(fields) else ""


# -- reading the file ---------------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    """Open an export as text, in its encoding (``file_encoding``)."""
    return path.open("r", encoding=file_encoding(path), newline=None)


class _Replay:
    """One opened file: its symbols and the generator of its ticks."""

    def __init__(self, path: Path, symbol: str) -> None:
        self.path = path
        self.rows_read = 0  # data rows turned into ticks so far
        if path.is_dir():  # a recording (mt5-recorder's Parquet datasets), not an export
            self.kind, self.file = "recording", RecordingReader(path)
            self.infos, self.ticks = self.file.infos, self._counted(self.file.ticks)
            return
        try:
            self.file = _open_text(path)
        except FileNotFoundError:
            raise SourceError(f"replay file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise SourceError(f"cannot read replay file {str(path)!r}: {exc}") from None
        try:
            self._prepare(symbol)
        except BaseException:
            self.file.close()
            raise

    def _prepare(self, symbol: str) -> None:
        lines = self._lines(self.file)
        header_no, header = next(lines, (1, ""))
        try:
            self.kind, self.sep, self.cols = detect_format(header)
        except ValueError as exc:
            raise SourceError(f"{self.path}:{header_no}: {exc}") from None
        rows = ((n, line.split(self.sep)) for n, line in lines)
        if self.kind == "csv":
            digits = self._scan_csv()
            self.infos = [SymbolInfo(s, d, 10.0 ** -d) for s, d in digits.items()]
            self.ticks = self._csv_ticks(rows)
            return
        name = symbol or symbol_from_filename(self.path)
        sample = list(islice(rows, SAMPLE_ROWS))
        prices = (("OPEN", "HIGH", "LOW", "CLOSE") if self.kind == "bars"
                  else ("BID", "ASK", "LAST"))
        digits = max((decimals(_number(f, self.cols, p)) for _, f in sample for p in prices),
                     default=0)
        self.infos = [SymbolInfo(self._valid(name), digits, 10.0 ** -digits)]
        rows = chain(sample, rows)
        if self.kind == "bars":
            self.bars = BarTicks(_BarReader(self, rows, self._bar_length(sample)), name, digits)
            self.ticks = self.bars
        else:
            self.ticks = self._export_ticks(rows, name)

    def _lines(self, file: IO[str]) -> Iterator[tuple[int, str]]:
        """The non-blank lines with their numbers (from 1)."""
        lineno = 0
        try:
            for lineno, line in enumerate(file, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
        except UnicodeError as exc:
            raise SourceError(f"{self.path}:{lineno + 1}: cannot decode the file: {exc}") from None

    def close(self) -> None:
        self.file.close()

    def _counted(self, ticks: Iterator[Tick]) -> Iterator[Tick]:
        """A recording's ticks, each counted as a row read (a recording row is one tick)."""
        for tick in ticks:
            self.rows_read += 1
            yield tick

    def _valid(self, symbol: str, lineno: int | None = None) -> str:
        try:
            return validate_symbol(symbol)
        except ProtocolError as exc:
            if lineno is None:  # named after the file
                raise SourceError(f"{self.path}: {exc}; set REPLAY_SYMBOL") from None
            raise SourceError(f"{self.path}:{lineno}: {exc}") from None

    def _error(self, lineno: int, fields: list[str], exc: Exception) -> SourceError:
        row = self.sep.join(fields)
        return SourceError(f"{self.path}:{lineno}: malformed row ({exc}): {row!r}")

    def _time_ms(self, fields: list[str]) -> int:
        date = parse_date(_number(fields, self.cols, "DATE")) * 1000
        clock = _number(fields, self.cols, "TIME")
        return date + parse_clock(clock) if "TIME" in self.cols else date

    def _bar_length(self, sample: list[Row]) -> Callable[[int], int]:
        """Bar length in ms as a function of the bar's open time (months differ)."""
        tf = timeframe_from_filename(self.path)
        if tf is None and "TIME" not in self.cols:
            tf = TIMEFRAMES["D1"]
        if tf is not None:
            if tf.seconds:
                return lambda _: tf.seconds * 1000
            return lambda t: (tf.next_open(t // 1000) - t // 1000) * 1000
        times = []
        for lineno, fields in sample:
            try:
                times.append(self._time_ms(fields))
            except (ValueError, IndexError) as exc:
                raise self._error(lineno, fields, exc) from None
        steps = [b - a for a, b in zip(times, times[1:]) if b > a]
        step = min(steps, default=60_000)
        return lambda _: step

    def _export_ticks(self, rows: Iterator[Row], symbol: str) -> Iterator[Tick]:
        width, (i_d, i_t, i_b, i_a, i_l, i_v, i_f) = _indices(
            self.cols, ("DATE", "TIME", "BID", "ASK", "LAST", "VOLUME", "FLAGS"))
        bid = ask = last = None
        previous = -1
        for lineno, f in rows:
            self.rows_read += 1
            try:
                if len(f) < width:
                    f += [""] * (width - len(f))
                t = parse_date(f[i_d]) * 1000 + parse_clock(f[i_t])
                b, a, la, v, fl = f[i_b].strip(), f[i_a].strip(), f[i_l].strip(), f[i_v], f[i_f]
                bid = float(b) if b else bid
                ask = float(a) if a else ask
                last = float(la) if la else last
                volume_real = float(v) if v.strip() else 0.0
                volume = int(volume_real)
                flags = int(fl) if fl.strip() else tick_flags(b, a, la, v.strip())
            except ValueError as exc:
                raise self._error(lineno, f, exc) from None
            if t < previous:
                raise SourceError(f"{self.path}:{lineno}: time goes back")
            previous = t
            if bid is not None and ask is not None:
                yield Tick(symbol, t, bid, ask, last or 0.0, volume, flags, volume_real)

    def _csv_ticks(self, rows: Iterator[Row]) -> Iterator[Tick]:
        width, (i_s, i_t, i_b, i_a, i_l, i_v, i_f) = _indices(
            self.cols, (*CSV_COLUMNS, "last", "volume", "flags"))
        default_flags = TICK_FLAG_BID | TICK_FLAG_ASK
        previous = -1
        for lineno, f in rows:
            self.rows_read += 1
            try:
                if len(f) < width:
                    f += [""] * (width - len(f))
                t = int(f[i_t])
                last, volume, flags = f[i_l].strip(), f[i_v].strip(), f[i_f].strip()
                volume_real = float(volume) if volume else 0.0
                tick = Tick(
                    f[i_s].strip(), t, float(f[i_b]), float(f[i_a]),
                    float(last) if last else 0.0, int(volume_real),
                    int(flags) if flags else default_flags, volume_real,
                )
            except ValueError as exc:
                raise self._error(lineno, f, exc) from None
            if t < previous:
                raise SourceError(f"{self.path}:{lineno}: time goes back")
            previous = t
            yield tick

    def _scan_csv(self) -> dict[str, int]:
        """Every symbol of a plain CSV, in order of appearance, with its digits.

        The engine needs all symbols before the first tick; this one pass reads only the first
        field of most rows.
        """
        digits: dict[str, int] = {}
        seen: dict[str, int] = {}
        i_sym, i_bid, i_ask = self.cols["symbol"], self.cols["bid"], self.cols["ask"]
        with _open_text(self.path) as f:
            lines = self._lines(f)
            next(lines)  # the header
            for lineno, line in lines:
                fields = line.split(self.sep)
                name = fields[i_sym].strip() if i_sym < len(fields) else ""
                n = seen.get(name, 0)
                if n >= SAMPLE_ROWS:
                    continue
                if n == 0:
                    self._valid(name, lineno)
                    digits[name] = 0
                seen[name] = n + 1
                try:
                    d = max(decimals(fields[i_bid]), decimals(fields[i_ask]))
                except IndexError as exc:
                    raise self._error(lineno, fields, exc) from None
                digits[name] = max(digits[name], d)
        return digits


class _BarReader:
    """A bar export's rows as bars: one by one (``BarRow``), or many at once as columns
    (``many``), read with whole-array work where the rows are plain and row by row otherwise,
    so a bad row gets the same error either way."""

    def __init__(self, replay: _Replay, rows: Iterator[Row], length: Callable[[int], int]) -> None:
        self._replay = replay
        self._rows = rows
        self._length = length
        self._width, self._at = _indices(replay.cols, ("DATE", "TIME", "OPEN", "HIGH", "LOW", "CLOSE", "SPREAD"))
        self._timed = "TIME" in replay.cols
        self._bullish = False  # the last bar's direction (a doji goes the other way)
        self._previous = -1  # the last bar's open (ms)

    def __iter__(self) -> _BarReader:
        return self

    def __next__(self) -> BarRow:
        return self._bar(*next(self._rows))

    def _bar(self, lineno: int, f: list[str]) -> BarRow:
        i_d, i_t, i_o, i_h, i_l, i_c, i_s = self._at
        self._replay.rows_read += 1
        try:
            if len(f) < self._width:
                f += [""] * (self._width - len(f))
            t = parse_date(f[i_d].strip()) * 1000
            if self._timed:
                t += parse_clock(f[i_t].strip())
            o, h, low, c = float(f[i_o]), float(f[i_h]), float(f[i_l]), float(f[i_c])
            spread = int(f[i_s].strip() or 0)
            if not (low <= o <= h and low <= c <= h):
                raise ValueError("prices break low <= open, close <= high")
        except ValueError as exc:
            raise self._replay._error(lineno, f, exc) from None
        if t <= self._previous:
            raise SourceError(f"{self._replay.path}:{lineno}: bar time goes back or repeats")
        self._previous = t
        self._bullish = bar_is_bullish(o, c, self._bullish)
        return t, self._length(t), o, h, low, c, spread, self._bullish

    def many(self, count: int) -> tuple[BarColumns, SourceError | None]:
        """Up to ``count`` bars as columns (``BAR_FIELDS``), and the error of a bad row that
        ended them early."""
        rows: list[Row] = []
        error = None
        try:
            rows.extend(islice(self._rows, count))
        except SourceError as exc:  # a line that cannot be decoded
            error = exc
        columns = self._plain(rows)
        if columns is not None:
            return columns, error
        bars: list[BarRow] = []
        try:
            for row in rows:
                bars.append(self._bar(*row))
        except SourceError as exc:
            error = exc
        return bar_columns(bars), error

    def _plain(self, rows: list[Row]) -> BarColumns | None:
        """``rows`` read at once, or None if any is not plain (short, blank, malformed, out of
        order), for ``_bar`` to read them one by one."""
        i_d, i_t, i_o, i_h, i_l, i_c, i_s = self._at
        used = [i for i in self._at if i < self._width - 1]  # the header's columns
        if not rows or min(len(f) for _, f in rows) <= max(used):
            return None
        fields = list(zip(*(f for _, f in rows)))
        try:
            t = np.array(list(map(_bar_date, fields[i_d])), np.int64) * 1000
            if self._timed:
                t += np.array(list(map(_bar_clock, fields[i_t])), np.int64)
            # numpy reads a str as float() does (whitespace, underscores; ValueError otherwise).
            o, h, low, c = (np.array(fields[i], np.float64) for i in (i_o, i_h, i_l, i_c))
            spread = (np.array(list(map(int, fields[i_s])), np.int64) if i_s in used
                      else np.zeros(len(rows), np.int64))
        except ValueError:
            return None
        if not ((low <= o) & (o <= h) & (low <= c) & (c <= h)).all() or t[0] <= self._previous or (
                len(t) > 1 and (t[1:] <= t[:-1]).any()):
            return None
        bullish = _directions(o, c, self._bullish)
        self._replay.rows_read += len(rows)
        self._previous, self._bullish = int(t[-1]), bool(bullish[-1])
        length = np.array(list(map(self._length, t.tolist())), np.int64)
        return {"time": t, "length": length, "open": o, "high": h, "low": low, "close": c,
                "spread": spread, "bullish": bullish}


# Bars repeat the same days and times of day: each field's text read once.
_bar_date = lru_cache(maxsize=4096)(lambda field: parse_date(field.strip()))
_bar_clock = lru_cache(maxsize=4096)(lambda field: parse_clock(field.strip()))


def _directions(o: np.ndarray, c: np.ndarray, bullish: bool) -> np.ndarray:
    """``bar_is_bullish`` of each bar, the bar before the first one ``bullish``: a doji goes
    the other way of the bar before it, so a run of dojis alternates from the last real bar."""
    n = len(o)
    real = o != c
    last_real = np.maximum.accumulate(np.where(real, np.arange(n), -1))
    base = np.where(last_real >= 0, c[np.maximum(last_real, 0)] > o[np.maximum(last_real, 0)], bullish)
    return base ^ ((np.arange(n) - last_real) % 2 == 1)


def bar_columns(bars: list[BarRow]) -> BarColumns:
    """Bars as columns (``BAR_FIELDS``)."""
    if not bars:
        return {name: np.empty(0, np.float64 if name in ("open", "high", "low", "close") else
                               bool if name == "bullish" else np.int64) for name in BAR_FIELDS}
    return {name: np.array(column) for name, column in zip(BAR_FIELDS, zip(*bars))}


class BarTicks:
    """A bar file's ticks (``bar_ticks``), drawn one by one or, at a bar's start, handed over
    as columns whole bars at a time (``take``), which spares a ``Tick`` per tick."""

    def __init__(self, bars: _BarReader, symbol: str, digits: int) -> None:
        self._bars = bars
        self.symbol = symbol
        self.digits = digits
        self.point = 10.0 ** -digits
        self._bar: BarRow | None = None  # the bar whose ticks are being drawn
        self._left: list[Tick] = []  # its ticks not drawn yet, the next last

    def __iter__(self) -> BarTicks:
        return self

    def __next__(self) -> Tick:
        while not self._left:
            self._bar = bar = next(self._bars)
            t, length, o, h, low, c, spread, bullish = bar
            self._left = bar_ticks(self.symbol, t, length, o, h, low, c, spread * self.point,
                                   self.digits, bullish)[::-1]
        return self._left.pop()

    @property
    def at_bar_start(self) -> bool:
        """Whether exactly the first tick of the current bar has been drawn."""
        return self._bar is not None and len(self._left) == _tick_count(self._bar) - 1

    def take(self, count: int) -> tuple[TickColumns, SourceError | None]:
        """The ticks of the current bar (its first tick drawn: ``at_bar_start``) and of up to
        ``count - 1`` bars after it, as columns; and the error of a bad row that ended them
        early (the bars before it are played first)."""
        more, error = self._bars.many(count - 1)
        first = bar_columns([self._bar])
        self._bar, self._left = None, []
        bars = {name: np.concatenate((first[name], more[name])) for name in BAR_FIELDS}
        return bars_to_ticks(bars, self.point, self.digits), error


def _tick_count(bar: BarRow) -> int:
    _, _, o, h, low, c, _, bullish = bar
    path = (o, low, h, c) if bullish else (o, h, low, c)
    return 1 + sum(a != b for a, b in zip(path, path[1:]))


def bars_to_ticks(bars: BarColumns, point: float, digits: int) -> TickColumns:
    """``bar_ticks`` of many bars at once (columns ``BAR_FIELDS``), as tick columns (``Tick``'s
    fields but the symbol)."""
    o, h, low, c, bullish = (bars[name] for name in ("open", "high", "low", "close", "bullish"))
    second, third = np.where(bullish, low, h), np.where(bullish, h, low)
    bid = np.column_stack((o, second, third, c))
    time_msc = bars["time"][:, None] + np.arange(4) * bars["length"][:, None] // 4
    keep = np.ones(bid.shape, bool)
    keep[:, 1:] = bid[:, 1:] != bid[:, :-1]  # a price repeating the one before is no tick
    bid, time_msc = bid[keep], time_msc[keep]
    ask = _rounded(bid + np.repeat(bars["spread"] * point, keep.sum(axis=1)), digits)
    n = len(bid)
    return {"time_msc": time_msc, "bid": bid, "ask": ask, "last": np.zeros(n),
            "volume": np.zeros(n, np.int64), "flags": np.full(n, TICK_FLAG_BID | TICK_FLAG_ASK, np.int64),
            "volume_real": np.zeros(n)}


def _rounded(values: np.ndarray, digits: int) -> np.ndarray:
    """``round(v, digits)`` of each value, as Python rounds it: numpy's scaled rounding agrees
    except within a hair of a half, where Python's own is used."""
    scale = 10.0 ** digits
    scaled = values * scale
    out = np.rint(scaled) / scale
    for i in np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6).tolist():
        out[i] = round(float(values[i]), digits)
    return out


def count_rows(path: Path) -> int:
    """The data rows of a replay file: its non-blank lines after the header; a recording's
    tick rows."""
    if path.is_dir():
        return recorded_ticks(path)
    with _open_text(path) as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


# -- ranges of what was played (``tick_range``, ``candle_range``) --------------------------------


class _TickCarry:
    """A tick export's state for the index: the BID, ASK and LAST a blank field repeats."""

    keyed, carries = False, True

    def __init__(self, sep: str, cols: dict[str, int]) -> None:
        self._sep = sep
        _, (self._date, self._time, *self._prices) = _indices(cols, ("DATE", "TIME", "BID", "ASK", "LAST"))
        self._carried = ["", "", ""]

    def key(self, fields: list[str]) -> str:
        return ""

    def time_ms(self, fields: list[str]) -> int:
        return parse_date(fields[self._date].strip()) * 1000 + parse_clock(fields[self._time].strip())

    def after(self, lines: list[str]) -> None:
        sep = self._sep
        for k, i in enumerate(self._prices):  # each one's last value, from the end
            for line in reversed(lines):
                fields = line.split(sep)
                if i < len(fields) and (value := fields[i].strip()):
                    self._carried[k] = value
                    break

    def snapshot(self) -> tuple[str, ...]:
        return tuple(self._carried)


class _BarDirection:
    """A bar export's state for the index: whether the bar before was bullish (a doji goes
    the other way)."""

    keyed, carries = False, True

    def __init__(self, sep: str, cols: dict[str, int]) -> None:
        self._sep = sep
        _, (self._date, self._time, self._open, self._close) = _indices(cols, ("DATE", "TIME", "OPEN", "CLOSE"))
        self._timed = "TIME" in cols
        self._bullish = False  # as _BarReader starts

    def key(self, fields: list[str]) -> str:
        return ""

    def time_ms(self, fields: list[str]) -> int:
        t = parse_date(fields[self._date].strip()) * 1000
        return t + parse_clock(fields[self._time].strip()) if self._timed else t

    def after(self, lines: list[str]) -> None:
        for line in lines:
            fields = line.split(self._sep)
            try:
                self._bullish = bar_is_bullish(float(fields[self._open]), float(fields[self._close]),
                                               self._bullish)
            except (ValueError, IndexError):
                return  # a bad row: the replay stops there, and no entry after it is read

    def snapshot(self) -> bool:
        return self._bullish


class _CsvStreams:
    """A plain CSV's rows for the index: one stream per symbol, nothing carried."""

    keyed, carries = True, False

    def __init__(self, sep: str, cols: dict[str, int]) -> None:
        self._symbol, self._time = cols["symbol"], cols["time_msc"]

    def key(self, fields: list[str]) -> str:
        return fields[self._symbol].strip()

    def time_ms(self, fields: list[str]) -> int:
        return int(fields[self._time])

    def after(self, lines: list[str]) -> None:
        pass

    def snapshot(self) -> None:
        return None


_ROW_STATES = {"ticks": _TickCarry, "bars": _BarDirection, "csv": _CsvStreams}
# The primer row's time: before any row, so the tick export's order check passes.
_PRIMER_DATE, _PRIMER_TIME = "1970.01.01", "00:00:00.000"


class _FileRanges:
    """An export or a plain CSV read again for ranges: from the index entry nearest before a
    time, through the replay's own parsers (so the ticks are those playback makes), each tick
    with the ordinal of its row."""

    def __init__(self, replay: _Replay) -> None:
        self._parser = object.__new__(_Replay)  # the file's format, without a file: parses rows
        self._parser.path, self._parser.kind, self._parser.sep = replay.path, replay.kind, replay.sep
        self._parser.cols, self._parser.infos, self._parser.rows_read = replay.cols, replay.infos, 0
        self.kind = replay.kind
        self.index = ReplayIndex.build(replay.path, replay.sep, _ROW_STATES[replay.kind](replay.sep, replay.cols))
        self._name, self._digits = replay.infos[0].name, replay.infos[0].digits
        if self.kind == "bars":  # the bar length as playback found it, from the same rows
            first = self.index.first()
            sample: list[Row] = []
            if first is not None:
                with closing(self.index.rows_from(first)) as rows:
                    sample = list(islice(rows, SAMPLE_ROWS))
            self._length = self._parser._bar_length(sample)
        self.index.rows_parsed = 0  # what ranges cost from here on

    def ticks(self, symbol: str, from_ms: int, upto_row: int) -> Iterator[tuple[int, Tick]]:
        """``(row ordinal, tick)`` in file order from before ``symbol``'s first tick stamped
        ``from_ms`` or later, to the end of the file; nothing if that is past row ``upto_row``
        (what lies past a bad row is never played, and the state carried there is no good)."""
        if self.kind != "csv" and symbol != self._name:
            return
        entry = self.index.locate(symbol if self.kind == "csv" else "", from_ms)
        if entry is None or entry.ordinal > upto_row:
            return
        rows = self.index.rows_from(entry)
        try:
            for tick in self._parsed(rows, entry, symbol):
                if rows.ordinal >= entry.ordinal:  # not the primer's
                    yield rows.ordinal, tick
        finally:
            rows.close()

    def _parsed(self, rows: Iterator[Row], entry: Entry, symbol: str) -> Iterator[Tick]:
        parser = self._parser
        if self.kind == "csv":  # the other symbols' rows are skipped unread
            at = parser.cols["symbol"]
            return parser._csv_ticks(r for r in rows if len(r[1]) <= at or r[1][at].strip() == symbol)
        if self.kind == "bars":
            bars = _BarReader(parser, rows, self._length)
            bars._bullish = entry.state
            return BarTicks(bars, self._name, self._digits)
        return parser._export_ticks(chain([(entry.lineno, self._primer(entry.state))], rows), self._name)

    def _primer(self, carried: tuple[str, ...]) -> list[str]:
        """A row giving the tick parser the BID, ASK and LAST that blank fields repeat at the
        entry; its own tick (if any) comes before the entry's ordinal and is dropped."""
        width, at = _indices(self._parser.cols, ("DATE", "TIME", "BID", "ASK", "LAST"))
        row = [""] * width
        row[at[0]], row[at[1]] = _PRIMER_DATE, _PRIMER_TIME
        for i, value in zip(at[2:], carried):
            row[i] = value
        return row


# Playback states (the replay op's ``status``): loaded and waiting for ``start``, playing,
# paused, every tick delivered.
READY, PLAYING, PAUSED, FINISHED = "ready", "playing", "paused", "finished"


class PlaybackError(ValueError):
    """A playback action the replay's state does not allow; the message says why."""


class ReplaySource(MarketSource):
    """Plays ``config.replay_file`` at ``config.replay_speed`` (0: as fast as possible).

    With ``REPLAY_START=paused`` it loads the file and delivers nothing until ``start_playing()``;
    ``pause()``, ``resume()`` and ``seek()`` control the playback (the RPC op ``replay``).
    """

    name = "replay"

    def __init__(self, config: EngineConfig, batch: int = BATCH, bar_batch: int = BAR_BATCH) -> None:
        self._path = Path(config.replay_file)
        self._symbol = config.replay_symbol
        self._speed = config.replay_speed
        self._batch = batch
        self._bar_batch = bar_batch
        self._replay: _Replay | None = None
        self._next: Tick | None = None
        self._error: SourceError | None = None  # raised by the poll after the good ticks
        self._origin: tuple[int, int] | None = None  # (wall ms, file ms) when play began
        self._last_ms = 0
        self._state = READY if config.replay_start == "paused" else PLAYING
        self._total = 0
        self._ranges: _FileRanges | None = None  # an export's index, for ranges

    def start(self) -> None:
        replay = _Replay(self._path, self._symbol)
        try:
            first = next(replay.ticks, None)
            if first is None:
                raise SourceError(f"replay file {str(self._path)!r} holds no ticks to play")
        except BaseException:
            replay.close()
            raise
        self._replay, self._next, self._last_ms = replay, first, first.time_msc
        if replay.kind == "recording":
            self._total = count_rows(self._path)
        else:  # indexed in the pass that counts the rows, before anything plays
            self._ranges = _FileRanges(replay)
            self._total = self._ranges.index.rows

    def stop(self) -> None:
        if self._replay is not None:
            self._replay.close()

    def symbols(self) -> list[SymbolInfo]:
        return list(self._replay.infos) if self._replay else []

    def history(self, symbol: str, timeframe: Timeframe, count: int) -> list[Candle]:
        return []  # the bars come from the replay itself

    def poll(self, now_ms: int) -> list[Tick]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        nxt = self._next
        if nxt is None or self._state != PLAYING:
            return []
        out: list[Tick] = []
        ticks = self._replay.ticks
        try:
            if self._speed == 0:  # a whole batch, without looking at each tick's time
                out.append(nxt)
                out.extend(islice(ticks, self._batch - 1))
                nxt = next(ticks, None)
            else:
                until = self._clock(now_ms)
                while nxt is not None and nxt.time_msc <= until and len(out) < self._batch:
                    out.append(nxt)
                    nxt = next(ticks, None)
        except SourceError as exc:  # what was read before the bad row is played first
            self._error, nxt = exc, None
        self._next = nxt
        if out:
            self._last_ms = out[-1].time_msc
        if nxt is None:
            self._replay.close()
        return out

    @property
    def plays_bars(self) -> bool:
        """Whether the ticks come from ``poll_bars``: a bar file played as fast as possible."""
        return self._speed == 0 and self._replay is not None and self._replay.kind == "bars"

    def poll_bars(self, now_ms: int) -> tuple[str, TickColumns] | None:
        """``poll`` for ``plays_bars``: the ticks of up to ``BAR_BATCH`` whole bars, as columns
        (``Tick``'s fields but the symbol) with their symbol; None when none are due."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._next is None or self._state != PLAYING:
            return None
        bars = self._replay.bars
        if not bars.at_bar_start:  # not after a seek or a poll: play on to the next bar's start
            ticks = self.poll(now_ms)
            return (bars.symbol, tick_columns(ticks)) if ticks else None
        columns, self._error = bars.take(self._bar_batch)
        try:
            self._next = next(bars, None) if self._error is None else None
        except SourceError as exc:  # the bars before the bad row are played first
            self._error, self._next = exc, None
        self._last_ms = int(columns["time_msc"][-1])
        if self._next is None:
            self._replay.close()
        return bars.symbol, columns

    def next_due(self, now_ms: int) -> int:
        if self._next is None:
            return 0 if self._error is not None else IDLE_DUE_MS
        if self._state != PLAYING:
            return IDLE_DUE_MS
        if self._speed == 0:
            return 0
        return max(0, math.ceil((self._next.time_msc - self._clock(now_ms)) / self._speed))

    def market_time(self, now_ms: int) -> int:
        if self._speed == 0 or self._state != PLAYING:
            return self._last_ms
        return int(self._clock(now_ms))

    @property
    def finished(self) -> bool:
        return self._replay is not None and self._next is None and self._error is None

    # Playback control
    @property
    def playing(self) -> bool:
        return self._state == PLAYING and self._next is not None

    def start_playing(self) -> None:
        """Begin a replay loaded with ``REPLAY_START=paused``."""
        if self._state != READY:
            raise PlaybackError(f"the replay has already started (it is {self.state}); use resume or seek")
        self._state, self._origin = PLAYING, None

    def pause(self, now_ms: int) -> None:
        if self._state != PLAYING or self._next is None:
            raise PlaybackError(f"only a playing replay can pause; it is {self.state}")
        self._last_ms = self.market_time(now_ms)
        self._state = PAUSED

    def resume(self) -> None:
        if self._state != PAUSED:
            raise PlaybackError(f"only a paused replay can resume; it is {self.state}"
                                + (" (use start)" if self._state == READY else ""))
        self._state, self._origin = PLAYING, None  # the clock goes on from where it paused

    def seek(self, time_ms: int) -> None:
        """Play on from the first row (a bar, a tick) at or after ``time_ms`` (the file's
        clock), in the same state; a finished replay becomes paused. A bar is played whole or
        not at all, so no bar is rebuilt from part of its ticks. Before the current position
        the file is read again from its start; the rows before ``time_ms`` are read and skipped."""
        was_finished = self.finished
        nxt = self._next
        if nxt is None or time_ms < nxt.time_msc:
            replay = _Replay(self._path, self._symbol)
            self._replay.close()
            self._replay, nxt, self._error = replay, next(replay.ticks, None), None
        replay, skipped_row = self._replay, -1
        try:
            # rows_read is the row of the tick just drawn (the generator counts a row first).
            while nxt is not None and (nxt.time_msc < time_ms or replay.rows_read == skipped_row):
                if nxt.time_msc < time_ms:
                    skipped_row = replay.rows_read
                nxt = next(replay.ticks, None)
        except SourceError as exc:
            self._error, nxt = exc, None
        self._next, self._last_ms, self._origin = nxt, time_ms, None
        if nxt is None:
            self._replay.close()
        elif was_finished and self._state == PLAYING:
            self._state = PAUSED

    @property
    def state(self) -> str:
        if self._state != READY and self.finished:
            return FINISHED
        return self._state

    def status(self) -> dict[str, Any]:
        """``{state, position, total, speed, source_file, time_msc}``: ``position`` rows of the
        file played of ``total``; ``time_msc`` the time of the last tick played."""
        replay = self._replay
        # The row of the next tick is read, not yet (all) played.
        played = 0 if replay is None else replay.rows_read - (self._next is not None)
        return {
            "state": self.state,
            "position": self._total if self.finished else max(0, played),
            "total": self._total,
            "speed": self._speed,
            "source_file": str(self._path),
            "time_msc": self._last_ms,
        }

    def report(self) -> dict[str, Any]:
        status = self.status()
        return {**super().report(), "replay_state": status["state"],
                "replay_position": status["position"], "replay_total": status["total"]}

    def _clock(self, now_ms: int) -> float:
        """The file time being played at wall time ``now_ms``."""
        if self._origin is None:
            self._origin = (now_ms, self._last_ms)
        wall, file = self._origin
        return file + (now_ms - wall) * self._speed

    @property
    def index(self) -> ReplayIndex | None:
        """The file's index (ranges are read from it); None for a recording or before start."""
        return self._ranges.index if self._ranges else None

    def tick_range(self, symbol: str, from_msc: int, to_msc: int, count: int) -> list[Tick] | None:
        """Read again from the file, from its index entry nearest before ``from_msc`` (a
        recording: from its start), up to the next tick to play: a replay never answers with
        ticks it has not published yet."""
        out: list[Tick] = []
        for tick in self._played(symbol, from_msc):
            if tick.time_msc > to_msc:
                break
            if tick.symbol == symbol and tick.time_msc >= from_msc:
                out.append(tick)
                if len(out) >= count:  # no row read past it
                    break
        return out

    def candle_range(self, symbol: str, timeframe: Timeframe, from_s: int, to_s: int,
                     count: int) -> list[Candle] | None:
        """The closed bars the engine built from the file's played ticks: the same ticks read
        again (``tick_range``) through the engine's own aggregation. A bar counts as closed
        once the replay's clock as of the last poll (the last tick played, or where it paused)
        has reached its end."""
        info = next((i for i in self.symbols() if i.name == symbol), None)
        if info is None:
            return []
        # No grace: the bars still open at the clock are the engine's forming ones.
        bars = CandleAggregator(symbol, info.point, (timeframe,), 1, close_grace_ms=0,
                                chart_mode=info.chart_mode)
        to_s = min(to_s, self._last_ms // 1000)  # no bar opening later is closed
        end_ms = timeframe.next_open(timeframe.bar_open(to_s)) * 1000  # the last bar asked for ends
        out: list[Candle] = []
        for tick in self._played(symbol, from_s * 1000):
            if tick.time_msc >= end_ms or len(out) >= count:
                break
            if tick.symbol == symbol:
                out += (c for c, closed in bars.on_tick(tick) if closed and c.time >= from_s)
        out += (c for c, closed in bars.on_time(self._last_ms) if closed and from_s <= c.time <= to_s)
        return out[:count]

    def _played(self, symbol: str, from_ms: int) -> Iterator[Tick]:
        """The file's ticks in file order, from before ``symbol``'s first one stamped ``from_ms``
        or later, up to the next one to play: the rows playback has read (``rows_read``) but
        the ticks of the last one it has not played yet, and nothing stamped after that."""
        replay = self._replay
        if replay is None:
            return
        limit, unplayed = replay.rows_read, self._next
        if self._ranges:
            ticks = self._ranges.ticks(symbol, from_ms, limit)
        else:  # a recording, indexed by its files' row counts
            ticks = replay.file.ticks_from(from_ms)
        with closing(ticks):
            for ordinal, tick in ticks:
                if ordinal > limit or unplayed is not None and (
                        tick.time_msc > unplayed.time_msc or ordinal == limit and tick == unplayed):
                    return
                yield tick

