"""A recording of the bus on disk: Parquet datasets, their schemas, partitions and file names.

A recording directory holds one dataset per kind of market message: ``tick``, ``candle``
(closed bars), ``ind`` (closed indicator values) and ``book``, each hive-partitioned by symbol
and date::

    DIR/tick/symbol=EURUSD/date=2024-01-02/1735689600000-000042.parquet

The date is the day of the payload's own time (a tick's or book's ``time_msc``, a bar's
``time``) in the market clock every payload carries (UTC for sim and replay, the trade server's
clock for mt5). Columns are the payload's fields with fixed types (integers int64, prices
float64), ``seq`` and ``epoch`` included; ``symbol`` is the partition key and not a column of
the files (pyarrow, pandas, polars and DuckDB add it back from the path, and a column in both
places would clash). An ``ind`` payload's fields beyond the fixed ones are the indicator values,
float64 (null where the worker has none yet).

Each file is one chunk, written to a hidden temporary name and renamed, so a crash leaves every
finished file whole and a reader never sees a partial one. File names are ``RUN-N``: ``RUN`` the
recorder run's start (ms, greater than every earlier run's), ``N`` its file counter, so names
sort in write order and a restart never reuses one. Each file's footer holds, per topic, the
``[epoch, seq]`` of its last row, and ``DIR/_recorder.json`` (rewritten atomically after each
flush) the last ``[epoch, seq]`` seen per topic: where the recording is complete up to.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.protocol import (
    BOOK,
    BOOK_FIELDS,
    CANDLE,
    CANDLE_FIELDS,
    INDICATOR,
    MAX_INDICATOR_VALUES,
    TICK,
    TICK_FIELDS,
    ProtocolError,
    TickEncoder,
    decode,
    topic_parts,
    validate_symbol,
)
from engine.protocol import topic as topic_name  # ``topic`` names the parsed Topic below
from engine.timeframes import TIMEFRAMES

STATE_FILE = "_recorder.json"
LOCK_FILE = "_recorder.lock"
POSITIONS_KEY = b"mt5_positions"  # the footer's per-topic [epoch, seq] of the last row
SUFFIX = ".parquet"
# Measured on tick columns: zstd without dictionary pages writes 0.3 µs a row at 5 bytes a row;
# with them 0.7 µs at 8, snappy 0.2 µs at 14.
COMPRESSION = "zstd"
DAY_MS = 86_400_000
_STAMP = (("seq", pa.int64()), ("epoch", pa.int64()))
_LEVELS = pa.list_(pa.list_(pa.float64()))  # a book side: [[price, volume], ...]
_INT64_MAX = 2**63 - 1


class RecordingError(ValueError):
    """A directory that is not a recording, or a file of it that cannot be read as one."""


@dataclass(frozen=True)
class Kind:
    """One dataset: the bus kind it records and the columns of its files."""

    name: str  # the topic kind and the dataset's directory
    columns: tuple[tuple[str, pa.DataType], ...]  # fixed columns, in payload order
    time_field: str  # partitions by the date of this field
    time_ms: int  # milliseconds per unit of it
    closed_only: bool = False  # only closed bars / values are recorded
    extra_values: bool = False  # further fields are float64 values (indicator outputs)

    def __post_init__(self) -> None:
        names = tuple(name for name, _ in self.columns)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "row_of", itemgetter(*names))  # a payload's row, in C
        object.__setattr__(self, "schema", pa.schema(self.columns))


def _columns(fields: tuple[str, ...], types: dict[str, pa.DataType]) -> tuple[tuple[str, pa.DataType], ...]:
    return tuple((f, types[f]) for f in fields if f != "symbol") + _STAMP


_F, _I, _B, _S = pa.float64(), pa.int64(), pa.bool_(), pa.string()
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(TICK, _columns(TICK_FIELDS, {"bid": _F, "ask": _F, "last": _F, "volume": _I, "time_msc": _I,
                                          "flags": _I, "volume_real": _F}), "time_msc", 1),
        Kind(CANDLE, _columns(CANDLE_FIELDS, {"timeframe": _S, "time": _I, "open": _F, "high": _F, "low": _F,
                                              "close": _F, "tick_volume": _I, "spread": _I,
                                              "real_volume": _I, "closed": _B}),
             "time", 1000, closed_only=True),
        Kind(INDICATOR, _columns(("symbol", "timeframe", "time", "closed"),
                                 {"timeframe": _S, "time": _I, "closed": _B}),
             "time", 1000, closed_only=True, extra_values=True),
        Kind(BOOK, _columns(BOOK_FIELDS, {"time_msc": _I, "bids": _LEVELS, "asks": _LEVELS}), "time_msc", 1),
    )
}
PREFIXES = tuple(topic_name(name) for name in KINDS)  # what the recorder subscribes to


class Partition(NamedTuple):
    kind: str
    symbol: str
    date: str  # YYYY-MM-DD, market clock

    def path(self, root: Path) -> Path:
        # Hive partition values are URI-encoded (pyarrow decodes them), so a symbol with '/'
        # or '%' stays one directory.
        return root / self.kind / f"symbol={quote(self.symbol, safe='')}" / f"date={self.date}"


class Topic(NamedTuple):
    """What a recorded topic's name tells: its dataset, symbol and timeframe (or ''); for a
    tick topic, the engine's frame layout for the symbol (``TickEncoder``)."""

    kind: Kind
    symbol: str
    timeframe: str
    ticks: TickEncoder | None = None


def parse_topic(raw: bytes) -> Topic:
    """The recorded kind, symbol and timeframe of a topic; ``ProtocolError`` if it is none."""
    try:
        name, *parts = topic_parts(raw)
    except UnicodeDecodeError:
        raise ProtocolError(f"topic is not UTF-8: {raw[:80]!r}") from None
    kind = KINDS.get(name)
    with_timeframe = "timeframe" in (kind.names if kind else ())
    if kind is None or len(parts) != (2 if with_timeframe else 1):
        raise ProtocolError(f"not a recorded topic: {raw[:80]!r}")
    if with_timeframe and parts[1] not in TIMEFRAMES:
        raise ProtocolError(f"unknown timeframe in {raw[:80]!r}")
    symbol = validate_symbol(parts[0])
    return Topic(kind, symbol, parts[1] if with_timeframe else "", TickEncoder(symbol) if name == TICK else None)


class Record(NamedTuple):
    """One received message: its stream position and, if it is recorded, its row."""

    epoch: int
    seq: int
    partition: Partition | None  # None: not recorded (a forming bar)
    row: tuple[Any, ...]
    extra: dict[str, Any] | None  # an ind: payload's values


_PARTITIONS: dict[tuple[str, str, int], Partition] = {}


def partition_of(kind: str, symbol: str, time_ms: int) -> Partition:
    """The partition of a row of ``symbol`` at ``time_ms`` (the payload's clock); one object per
    partition, so the per-message cost is a lookup."""
    key = (kind, symbol, time_ms // DAY_MS)
    partition = _PARTITIONS.get(key)
    if partition is None:
        if len(_PARTITIONS) > 100_000:
            _PARTITIONS.clear()
        date = time.strftime("%Y-%m-%d", time.gmtime(key[2] * 86_400))
        partition = _PARTITIONS[key] = Partition(kind, symbol, date)
    return partition


def read_record(topic: Topic, payload: bytes) -> Record:
    """A message of a recorded topic as a ``Record``; ``ProtocolError`` if its stamp, time,
    symbol or timeframe are unusable (the other fields' types are checked when written)."""
    data = decode(payload)
    epoch, seq = data.get("epoch"), data.get("seq")
    if type(epoch) is not int or type(seq) is not int or not (0 <= epoch <= _INT64_MAX and 0 < seq <= _INT64_MAX):
        raise ProtocolError("seq and epoch must be non-negative integers")
    kind = topic.kind
    if data.get("symbol") != topic.symbol or data.get("timeframe", "") != topic.timeframe:
        raise ProtocolError("symbol or timeframe differ from the topic's")
    if kind.closed_only and data.get("closed") is not True:
        return Record(epoch, seq, None, (), None)
    when = data.get(kind.time_field)
    if type(when) is not int or not 0 <= when <= _INT64_MAX // kind.time_ms:
        raise ProtocolError(f"{kind.time_field} must be a non-negative integer")
    try:
        row = kind.row_of(data)
    except KeyError as exc:
        raise ProtocolError(f"no {exc.args[0]!r} field") from None
    extra = None
    if kind.extra_values:
        fixed = kind.names
        extra = {k: v for k, v in data.items() if k not in fixed and k != "symbol"}
        if len(extra) > MAX_INDICATOR_VALUES:
            raise ProtocolError(f"more than {MAX_INDICATOR_VALUES} indicator values")
    return Record(epoch, seq, partition_of(kind.name, topic.symbol, when * kind.time_ms), row, extra)


def tick_tables(symbol: str, values: np.ndarray) -> Iterator[tuple[Partition, pa.Table, tuple[int, int]]]:
    """Ticks read at once (``TickEncoder.values_of``, stamps already checked) as tables of the
    tick schema, one per date, each with the ``(epoch, seq)`` of its last row."""
    kind = KINDS[TICK]
    columns = {name: values[name].astype(type_.to_pandas_dtype()) for name, type_ in kind.columns}
    days = columns["time_msc"] // DAY_MS
    bounds = np.flatnonzero(np.diff(days)) + 1  # a symbol's ticks are in time order
    for start, end in zip((0, *bounds.tolist()), (*bounds.tolist(), len(days))):
        table = pa.table({name: column[start:end] for name, column in columns.items()}, schema=kind.schema)
        last = (int(columns["epoch"][end - 1]), int(columns["seq"][end - 1]))
        yield partition_of(TICK, symbol, int(columns["time_msc"][start])), table, last


def fits_int64(values: np.ndarray) -> np.ndarray:
    """Which ticks have every unsigned field within int64 and a ``seq`` of at least 1."""
    fits = values["seq"] >= 1
    for name in ("volume", "time_msc", "flags", "seq", "epoch"):
        fits &= values[name] <= _INT64_MAX
    return fits


# -- chunks ---------------------------------------------------------------------------------


class Chunk:
    """The rows of one partition waiting to be written, and the last stamp per topic in them."""

    __slots__ = ("rows", "extras", "tables", "positions")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.extras: list[dict[str, Any]] = []
        self.tables: list[pa.Table] = []  # rows read as columns (ticks), before and after ``rows``
        self.positions: dict[str, tuple[int, int]] = {}


def table_of(kind: Kind, chunk: Chunk) -> tuple[pa.Table, int]:
    """The chunk as an Arrow table of the kind's schema, and how many rows were dropped
    because a field did not fit its type (checked row by row only when the fast path fails)."""
    rows, extras = chunk.rows, chunk.extras
    dropped = 0
    try:
        table = _table(kind, rows, extras)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        keep = [i for i in range(len(rows)) if _fits(kind, rows[i], extras[i] if extras else None)]
        dropped = len(rows) - len(keep)
        table = _table(kind, [rows[i] for i in keep], [extras[i] for i in keep] if extras else [])
    if chunk.tables:
        # Rows come in order of arrival within a topic; a tick topic's rows are all columns
        # but for the rare frame of another layout, whose place among them is kept by stamp.
        table = pa.concat_tables([*chunk.tables, table]) if rows else pa.concat_tables(chunk.tables)
        if rows:
            table = table.sort_by([("epoch", "ascending"), ("seq", "ascending")])
    positions = {topic: list(position) for topic, position in sorted(chunk.positions.items())}
    return table.replace_schema_metadata({POSITIONS_KEY: json.dumps(positions).encode()}), dropped


def _table(kind: Kind, rows: list[tuple[Any, ...]], extras: list[dict[str, Any]]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [()] * len(kind.columns)
    arrays = {name: pa.array(values, type=type_) for (name, type_), values in zip(kind.columns, columns)}
    if kind.extra_values:
        keys = sorted({k for extra in extras for k in extra})
        for key in keys:
            arrays[key] = pa.array([_value(extra.get(key)) for extra in extras], type=pa.float64())
    return pa.table(arrays)


def _value(value: Any) -> float | None:
    """An indicator value as float64 (None stays null); ``TypeError`` for anything else."""
    if value is None or (type(value) in (float, int)):
        return value
    raise TypeError(f"an indicator value must be a number or nil, got {type(value).__name__}")


def _fits(kind: Kind, row: tuple[Any, ...], extra: dict[str, Any] | None) -> bool:
    try:
        _table(kind, [row], [extra] if extra is not None else [])
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return False
    return True


class Chunks:
    """Rows buffered per partition; ``due`` says when to write them all: after ``flush_s``
    since the oldest, or once ``flush_rows`` are buffered (bounding memory)."""

    def __init__(self, flush_s: float, flush_rows: int) -> None:
        self.flush_s = flush_s
        self.flush_rows = flush_rows
        self.rows = 0
        self.oldest = 0.0  # monotonic time of the oldest buffered row
        self._chunks: dict[Partition, Chunk] = {}

    def add(self, topic: str, record: Record, now: float) -> None:
        chunk = self._chunks.get(record.partition)
        if chunk is None:
            chunk = self._chunks[record.partition] = Chunk()
        chunk.rows.append(record.row)
        if record.extra is not None:
            chunk.extras.append(record.extra)
        chunk.positions[topic] = (record.epoch, record.seq)
        if not self.rows:
            self.oldest = now
        self.rows += 1

    def add_table(self, topic: str, partition: Partition, table: pa.Table, last: tuple[int, int],
                  now: float) -> None:
        chunk = self._chunks.get(partition)
        if chunk is None:
            chunk = self._chunks[partition] = Chunk()
        chunk.tables.append(table)
        chunk.positions[topic] = last
        if not self.rows:
            self.oldest = now
        self.rows += table.num_rows

    def due(self, now: float) -> bool:
        return self.rows >= self.flush_rows or (self.rows > 0 and now - self.oldest >= self.flush_s)

    def take(self) -> list[tuple[Partition, Chunk]]:
        """Every buffered chunk, in a stable order; the buffer is then empty."""
        chunks = sorted(self._chunks.items())
        self._chunks = {}
        self.rows = 0
        return chunks


# -- files ----------------------------------------------------------------------------------


def file_name(run: int, counter: int) -> str:
    """``RUN-N.parquet``, zero-padded so that names sort in the order they were written."""
    return f"{run:013d}-{counter:06d}{SUFFIX}"


def write_atomic(path: Path, table: pa.Table) -> int:
    """Write ``table`` to ``path`` through a hidden temporary file in the same directory,
    flushed to disk and renamed: ``path`` is whole or absent. Returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression=COMPRESSION, use_dictionary=False)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def write_state(root: Path, run: int, through: str, positions: dict[str, tuple[int, int]]) -> None:
    """``_recorder.json``: this run, the last file written and the last stamp seen per topic."""
    state = {"run": run, "through": through, "positions": {t: list(p) for t, p in sorted(positions.items())}}
    tmp = root / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, root / STATE_FILE)


def data_files(root: Path, kinds: Iterable[str] = KINDS) -> Iterator[Path]:
    """Every finished file of the recording (temporary files are hidden and skipped)."""
    for kind in kinds:
        yield from (root / kind).glob(f"symbol=*/date=*/[!.]*{SUFFIX}")


def temporary_files(root: Path) -> Iterator[Path]:
    """What a crash left half-written: hidden ``.NAME.tmp`` files."""
    yield from root.glob(f".{STATE_FILE}.tmp")
    for kind in KINDS:
        yield from (root / kind).glob("symbol=*/date=*/.*.tmp")


def file_positions(path: Path) -> dict[str, tuple[int, int]]:
    """The per-topic ``(epoch, seq)`` of the last row in a file; ``RecordingError`` if the file
    is not a readable Parquet file."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return {t: (int(p[0]), int(p[1])) for t, p in json.loads(metadata.get(POSITIONS_KEY, b"{}")).items()}
    except (OSError, pa.ArrowException, ValueError, TypeError, IndexError) as exc:
        raise RecordingError(f"{path}: not a readable recording file: {exc}") from None


@dataclass
class Resume:
    """Where a recording left off: the next run number and the last stamp per topic."""

    run: int
    positions: dict[str, tuple[int, int]]


def resume(root: Path, now_ms: int) -> Resume:
    """Read ``_recorder.json`` and the footers of the files written after it (a crash between
    a file and the state), so positions cover every finished file; without a readable state
    (none yet, or cut short by a power loss), every footer. The run is later than every run
    that wrote a file here."""
    positions: dict[str, tuple[int, int]] = {}
    last_run, through = 0, ""
    try:
        state = json.loads((root / STATE_FILE).read_text())
        last_run, through = int(state["run"]), str(state["through"])
        positions = {t: (int(p[0]), int(p[1])) for t, p in state["positions"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        positions, last_run, through = {}, 0, ""
    for path in data_files(root):
        last_run = max(last_run, _run_of(path))
        if path.name > through:
            for topic, position in file_positions(path).items():
                if position > positions.get(topic, (0, 0)):
                    positions[topic] = position
    return Resume(max(now_ms, last_run + 1), positions)


def _run_of(path: Path) -> int:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


# -- stream positions -------------------------------------------------------------------------


class Gap(NamedTuple):
    """Messages ``first..last`` of ``topic`` (in ``epoch``) were not received."""

    topic: str
    epoch: int
    first: int
    last: int

    @property
    def missed(self) -> int:
        return self.last - self.first + 1


class Positions:
    """The last ``(epoch, seq)`` accepted per topic. ``accept`` tells a message that continues
    its topic from one already recorded (a duplicate) and from one after a gap.

    A later epoch is a restarted publisher: its messages before this one are a gap from 1. An
    earlier epoch is a message from before a restart already passed: not recorded.
    """

    def __init__(self, known: dict[str, tuple[int, int]] | None = None) -> None:
        self.last: dict[str, tuple[int, int]] = dict(known or {})

    def accept_many(self, topic: str, epochs: np.ndarray, seqs: np.ndarray) -> tuple[np.ndarray | None, list[Gap]]:
        """``accept`` for messages read at once: (a mask of those to record, or None for all;
        the gaps before them). One epoch and rising seqs, the usual case, cost no loop."""
        first_epoch = int(epochs[0])
        fresh, gap = self.accept(topic, first_epoch, int(seqs[0]))
        gaps = [gap] if gap is not None else []
        steps = np.diff(seqs)
        if fresh and (epochs == first_epoch).all() and (steps > 0).all():
            gaps += [Gap(topic, first_epoch, int(seqs[i]) + 1, int(seqs[i + 1]) - 1)
                     for i in np.flatnonzero(steps > 1).tolist()]
            self.last[topic] = (first_epoch, int(seqs[-1]))
            return None, gaps
        keep = [fresh]
        for epoch, seq in zip(epochs[1:].tolist(), seqs[1:].tolist()):
            fresh, gap = self.accept(topic, epoch, seq)
            keep.append(fresh)
            if gap is not None:
                gaps.append(gap)
        return np.array(keep), gaps

    def accept(self, topic: str, epoch: int, seq: int) -> tuple[bool, Gap | None]:
        """``(record it, the gap before it or None)``."""
        known = self.last.get(topic)
        if known is None:
            self.last[topic] = (epoch, seq)
            return True, None
        known_epoch, known_seq = known
        if epoch < known_epoch or (epoch == known_epoch and seq <= known_seq):
            return False, None
        self.last[topic] = (epoch, seq)
        first = known_seq + 1 if epoch == known_epoch else 1
        return True, (Gap(topic, epoch, first, seq - 1) if seq > first else None)
