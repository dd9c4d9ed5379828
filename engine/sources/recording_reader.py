"""Playing a recording (``mt5-recorder``'s directory) with the ``replay`` source.

The ``tick`` dataset is played: each symbol's ticks in the order they were published (by
``epoch`` then ``seq``), the symbols merged by ``time_msc``, one date at a time (a day of ticks
is read at once; the recording is never loaded whole). Every finished file's footer is checked
when the reader opens, so a directory that is not a recording, or a corrupt file, stops the
replay at start-up. A symbol's digits are the most decimals in its first ticks' prices, as for
MT5 exports.

The footers' row counts index the play: ``ticks_from`` starts at the first date a range can
reach, each tick numbered with its place in the whole play, without reading the dates before.
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from engine.models import SymbolInfo, Tick
from engine.protocol import TICK, TICK_FIELDS, ProtocolError, validate_symbol
from engine.recording import KINDS, data_files
from engine.sources.base import SourceError

SAMPLE_ROWS = 200  # first ticks of each symbol read to infer its digits
MAX_DIGITS = 10
_TICK_COLUMNS = (*(name for name in TICK_FIELDS if name != "symbol"), "seq", "epoch")
_TICK_TYPES = dict(KINDS[TICK].columns)


def price_digits(price: float) -> int:
    """The decimals a price is written with: ``1.0851`` -> 4 (at most ``MAX_DIGITS``)."""
    for digits in range(MAX_DIGITS):
        if round(price, digits) == price:
            return digits
    return MAX_DIGITS


class RecordingReader:
    """One recording's ticks: ``infos`` (its symbols) and ``ticks`` (an iterator of them)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files = self._tick_files()
        self._rows: dict[str, int] = {}  # date -> the tick rows of its files
        self._check_files()
        self.infos = [self._info(symbol, files) for symbol, files in sorted(self._symbols().items())]
        self.ticks = self._play()
        self.partitions_read = 0  # (date, symbol) partitions read, for playback and ranges

    def _tick_files(self) -> dict[tuple[str, str], list[Path]]:
        """Finished tick files by (date, symbol), each list in write order."""
        by_partition: dict[tuple[str, str], list[Path]] = {}
        for path in data_files(self.root, (TICK,)):
            symbol = unquote(path.parent.parent.name.removeprefix("symbol="))
            date = path.parent.name.removeprefix("date=")
            try:
                validate_symbol(symbol)
            except ProtocolError as exc:
                raise SourceError(f"{path.parent.parent}: {exc}") from None
            by_partition.setdefault((date, symbol), []).append(path)
        if not by_partition:
            raise SourceError(
                f"{self.root} is not a recording: no {TICK}/symbol=*/date=*/*.parquet files "
                "(mt5-recorder writes them)")
        return {key: sorted(paths) for key, paths in sorted(by_partition.items())}

    def _check_files(self) -> None:
        """Every file of the recording (all kinds) must open, and a tick file have the tick
        columns with their types: found now, not in the middle of a replay."""
        for path in data_files(self.root):
            try:
                footer = pq.read_metadata(path)
                schema = footer.schema.to_arrow_schema()
            except (OSError, pa.ArrowException) as exc:
                raise SourceError(f"{path}: corrupt recording file: {exc}") from None
            if path.parts[-4] == TICK:
                date = path.parent.name.removeprefix("date=")
                self._rows[date] = self._rows.get(date, 0) + footer.num_rows
                wrong = [n for n, t in _TICK_TYPES.items()
                         if schema.get_field_index(n) < 0 or schema.field(n).type != t]
                if wrong:
                    raise SourceError(f"{path}: not a tick file of a recording (columns {wrong} "
                                      "missing or of another type)")

    def _symbols(self) -> dict[str, list[Path]]:
        files: dict[str, list[Path]] = {}
        for (_, symbol), paths in self._files.items():
            files.setdefault(symbol, []).extend(paths)
        return files

    def _info(self, symbol: str, paths: list[Path]) -> SymbolInfo:
        table = _read([paths[0]]).slice(0, SAMPLE_ROWS)
        prices = (*table.column("bid").to_pylist(), *table.column("ask").to_pylist())
        digits = max((price_digits(p) for p in prices), default=0)
        return SymbolInfo(symbol, digits, 10.0 ** -digits)

    def ticks_from(self, from_ms: int) -> Iterator[tuple[int, Tick]]:
        """The ticks in play order, each with its place in the whole play (the first is 1),
        from the first date that can hold one stamped ``from_ms`` or later (a date partition
        holds the ticks stamped that day)."""
        first = time.strftime("%Y-%m-%d", time.gmtime(max(from_ms, 0) // 1000))
        before = sum(rows for date, rows in self._rows.items() if date < first)
        yield from enumerate(self._play(first), start=before + 1)

    def _play(self, first_date: str = "") -> Iterator[Tick]:
        dates = sorted({date for date, _ in self._files if date >= first_date})
        for date in dates:
            streams = [self._symbol_ticks(symbol, paths)
                       for (day, symbol), paths in self._files.items() if day == date]
            yield from heapq.merge(*streams, key=lambda tick: tick.time_msc)

    def _symbol_ticks(self, symbol: str, paths: list[Path]) -> Iterator[Tick]:
        self.partitions_read += 1
        table = _read(paths).sort_by([("epoch", "ascending"), ("seq", "ascending")])
        nulls = [name for name in _TICK_COLUMNS if table.column(name).null_count]
        if nulls:
            raise SourceError(f"{paths[0].parent}: ticks without {', '.join(nulls)}")
        columns = [table.column(name).to_pylist() for name in
                   ("time_msc", "bid", "ask", "last", "volume", "flags", "volume_real")]
        for time_msc, bid, ask, last, volume, flags, volume_real in zip(*columns):
            yield Tick(symbol, time_msc, bid, ask, last, volume, flags, volume_real)

    def close(self) -> None:
        self.ticks.close()


def recorded_ticks(root: Path) -> int:
    """How many ticks a recording holds (from the files' footers)."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in data_files(root, (TICK,)))


def _read(paths: list[Path]) -> pa.Table:
    try:
        return pa.concat_tables(pq.read_table(path, columns=list(_TICK_COLUMNS)) for path in paths)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{paths[0].parent}: cannot read the recording: {exc}") from None
