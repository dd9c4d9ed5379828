"""Ranges of ticks and closed bars read back from a recording (``mt5-recorder``'s directory).

The engine answers ``ticks`` and ``candles`` ranges older than its memory from its source's own
store; where the source keeps none (a replay of bars, or a range the terminal no longer holds)
and ``RECORD_DIR`` names a recording, from that recording. Only the date partitions a range
covers are read, a date at a time, oldest first, until ``count`` rows are found.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.models import Candle, Tick
from engine.protocol import CANDLE, TICK
from engine.recording import KINDS, SUFFIX, Partition, partition_of
from engine.timeframes import Timeframe

_STAMP = ("seq", "epoch")
# The recorded columns a Tick / a Candle is made of, in their field order (engine.recording's).
_TICK_COLUMNS = [name for name in KINDS[TICK].names if name not in _STAMP]
_CANDLE_COLUMNS = [name for name in KINDS[CANDLE].names if name not in ("timeframe", "closed", *_STAMP)]
MAX_MS = 253_402_300_799_999  # 9999-12-31 23:59:59.999, the last date a partition can name


class RecordingStore:
    """Reads ranges from the recording in ``root`` (which may not exist yet)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def tick_range(self, symbol: str, from_msc: int, to_msc: int, count: int) -> list[Tick] | None:
        """The first ``count`` recorded ticks of ``symbol`` stamped ``from_msc..to_msc``, in
        time order (publish order within a millisecond); ``None`` when nothing of the symbol
        was recorded."""
        table = self._read(TICK, symbol, from_msc, to_msc, count, _TICK_COLUMNS)
        if table is None:
            return None
        columns = [table.column(name).to_pylist() for name in _TICK_COLUMNS]
        return [Tick(symbol, t, bid, ask, last, volume, flags, volume_real)
                for bid, ask, last, volume, t, flags, volume_real in zip(*columns)]

    def candle_range(self, symbol: str, timeframe: Timeframe, from_s: int, to_s: int,
                     count: int) -> list[Candle] | None:
        """The first ``count`` recorded closed bars of ``symbol``'s ``timeframe`` opening
        ``from_s..to_s``; ``None`` when nothing of the symbol was recorded."""
        table = self._read(CANDLE, symbol, from_s * 1000, to_s * 1000 + 999, count, _CANDLE_COLUMNS,
                           timeframe.name)
        if table is None:
            return None
        columns = [table.column(name).to_pylist() for name in _CANDLE_COLUMNS]
        return [Candle(symbol, timeframe.name, *row) for row in zip(*columns)]

    def _read(self, kind: str, symbol: str, from_ms: int, to_ms: int, count: int,
              columns: list[str], timeframe: str = "") -> pa.Table | None:
        time_field, unit = KINDS[kind].time_field, KINDS[kind].time_ms
        symbol_dir = partition_of(kind, symbol, 0).path(self.root).parent
        if not symbol_dir.is_dir():
            return None
        parts: list[pa.Table] = []
        rows = 0
        for directory in self._dates(symbol_dir, kind, symbol, from_ms, to_ms):
            files = sorted(directory.glob(f"[!.]*{SUFFIX}"))
            if not files:
                continue
            table = pa.concat_tables(pq.read_table(f, columns=[*columns, *_STAMP, *(
                ["timeframe"] if timeframe else [])]) for f in files)
            when = table.column(time_field)
            keep = pc.and_(pc.greater_equal(when, from_ms // unit), pc.less_equal(when, to_ms // unit))
            if timeframe:
                keep = pc.and_(keep, pc.equal(table.column("timeframe"), timeframe))
            table = table.filter(keep).sort_by([(time_field, "ascending"), ("epoch", "ascending"),
                                                ("seq", "ascending")])
            parts.append(table)
            rows += table.num_rows
            if rows >= count:
                break
        if not parts:
            return pa.table({name: [] for name in columns})
        return pa.concat_tables(parts).slice(0, count)

    @staticmethod
    def _dates(symbol_dir: Path, kind: str, symbol: str, from_ms: int,
               to_ms: int) -> Iterator[Path]:
        """The symbol's date partitions that ``from_ms..to_ms`` covers, oldest first."""
        first = partition_of(kind, symbol, min(max(from_ms, 0), MAX_MS)).date
        last = partition_of(kind, symbol, min(max(to_ms, 0), MAX_MS)).date
        held = sorted(p.name.removeprefix("date=") for p in symbol_dir.glob("date=*"))
        for date in held:
            if first <= date <= last:
                yield Partition(kind, symbol, date).path(symbol_dir.parent.parent)
