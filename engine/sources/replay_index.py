"""A sparse index of a replay file, so a range is read from near its start, not from the top.

Every ``SPACING``-th data row of each stream (the one symbol of an MT5 export, each symbol of a
plain CSV) is an entry: its byte offset, line number, ordinal (data rows are counted from 1
after the header, blank lines not counted, as the replay counts them), time (ms) and the
parser's state before it (``RowState``: what a blank field of a tick export repeats, the
direction of the bar before). Entries are numpy arrays, the states a list, so a 10-million-row
file costs about 10,000 entries; everything else is read from the file when asked.

The file is read as text in its own encoding; offsets count its bytes (a UTF-16 export's two
per character), so a reader seeks straight to an entry and decodes from there.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from engine.sources.base import SourceError

SPACING = 1024  # data rows of one stream between two entries

Row = tuple[int, list[str]]  # line number, fields


def file_encoding(path: Path) -> str:
    """The encoding of an export: MT5 writes UTF-16 LE in some versions, UTF-8 in others."""
    with path.open("rb") as f:
        head = f.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    if len(head) >= 2 and head[1] == 0:
        return "utf-16-le"
    return "utf-8-sig"


def _seekable(path: Path) -> tuple[str, int]:
    """The codec that decodes the file from any line start (no byte-order mark to read
    there), and the bytes one ASCII character takes in it."""
    encoding = file_encoding(path)
    if encoding == "utf-16":
        with path.open("rb") as f:
            bom = f.read(2)
        return ("utf-16-le" if bom == b"\xff\xfe" else "utf-16-be"), 2
    return ("utf-16-le", 2) if encoding == "utf-16-le" else ("utf-8", 1)


class RowState(Protocol):
    """What an index remembers of the rows before an entry, for the parser to start there."""

    # Whether rows are told apart by ``key`` (a plain CSV's symbols), and whether ``after``
    # needs them (an export's parser carries something from row to row).
    keyed: bool
    carries: bool

    def key(self, fields: list[str]) -> str:
        """The stream a row belongs to: its symbol in a plain CSV."""

    def time_ms(self, fields: list[str]) -> int:
        """The row's time; ``ValueError`` (or ``IndexError``) if it has none."""

    def after(self, lines: list[str]) -> None:
        """Take in the next rows, in file order, as lines (only if ``carries``): the rows since
        the last entry, in one piece or several."""

    def snapshot(self) -> Any:
        """The state before the next row, as the parser needs it there."""


@dataclass
class Entry:
    """A place to read a stream from: the row at ``offset`` and the parser state before it."""

    offset: int
    lineno: int
    ordinal: int
    state: Any


@dataclass
class _Stream:
    offsets: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    ordinals: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)
    since: int = 0  # the stream's rows since its last entry


class ReplayIndex:
    """Where each stream's rows are in a replay file (``build``), and its rows from there
    (``rows_from``)."""

    def __init__(self, path: Path, codec: str, width: int, sep: str, rows: int,
                 streams: dict[str, tuple[np.ndarray, ...]], states: dict[str, list[Any]]) -> None:
        self.path = path
        self.rows = rows  # every data row of the file (the replay's ``total``)
        self.rows_parsed = 0  # rows handed to readers so far: what ranges cost
        self._codec, self._width, self._sep = codec, width, sep
        self._streams = streams
        self._states = states

    @classmethod
    def build(cls, path: Path, sep: str, state: RowState, spacing: int = SPACING) -> ReplayIndex:
        """One pass over the file: count its data rows and take every ``spacing``-th row of
        each stream (with a time) as an entry. A row that cannot be read stops nothing here:
        the replay stops there, and a range reaching it gets its error."""
        codec, width = _seekable(path)
        streams: dict[str, _Stream] = {}
        stream = _Stream()  # an export's one stream
        keyed, carries = state.keyed, state.carries
        pending: list[str] = []  # the rows since the last entry, for a state that carries
        rows = 0
        with _open(path, codec) as f:
            # A byte-order mark decodes as U+FEFF in the header line and is counted with it.
            offset, header = 0, False
            try:
                for lineno, line in enumerate(f, start=1):
                    at = offset
                    offset += len(line) * width if line.isascii() else len(line.encode(codec))
                    if not line.strip():
                        continue
                    if not header:
                        header = True
                        continue
                    rows += 1
                    # Split only where needed: an export's rows are mostly just counted.
                    fields = line.rstrip("\r\n").split(sep) if keyed else None
                    if keyed:
                        try:
                            key = state.key(fields)
                        except IndexError:
                            continue  # a short row: the replay stops there
                        stream = streams.get(key) or streams.setdefault(key, _Stream())
                    if stream.since >= spacing or not stream.times:
                        _enter(stream, state, pending, fields or line.rstrip("\r\n").split(sep),
                               at, lineno, rows)
                    stream.since += 1
                    if carries:
                        pending.append(line)
                        if len(pending) >= spacing:  # taken in a piece at a time: bounded
                            state.after(pending)
                            pending.clear()
            except UnicodeError:
                pass  # the replay stops at this line with its error; no row after it plays
        if not keyed and stream.times:
            streams[""] = stream
        arrays = {key: tuple(np.array(column, np.int64) for column in
                             (s.offsets, s.lines, s.ordinals, s.times)) for key, s in streams.items()}
        return cls(path, codec, width, sep, rows, arrays, {k: s.states for k, s in streams.items()})

    @property
    def entries(self) -> int:
        return sum(len(states) for states in self._states.values())

    def locate(self, key: str, from_ms: int) -> Entry | None:
        """The last entry of stream ``key`` whose row is stamped before ``from_ms`` (else its
        first): no row of the stream from ``from_ms`` on comes before it. ``None`` for a stream
        the file does not have."""
        arrays = self._streams.get(key)
        if arrays is None or not len(arrays[0]):
            return None
        offsets, lines, ordinals, times = arrays
        k = max(0, int(np.searchsorted(times, from_ms, "left")) - 1)
        return Entry(int(offsets[k]), int(lines[k]), int(ordinals[k]), self._states[key][k])

    def first(self) -> Entry | None:
        """The file's first data row (of whichever stream), with the state before it."""
        found = [self.locate(key, -(1 << 62)) for key in self._streams]
        return min((e for e in found if e is not None), key=lambda e: e.ordinal, default=None)

    def rows_from(self, entry: Entry) -> RowCursor:
        """The data rows from ``entry`` on, to the end of the file."""
        return RowCursor(self, entry)


class RowCursor:
    """Rows ``(line number, fields)`` from an entry; ``ordinal`` is the last row's."""

    def __init__(self, index: ReplayIndex, entry: Entry) -> None:
        self._index = index
        self._entry = entry
        self.ordinal = entry.ordinal - 1
        self._rows = self._read()

    def __iter__(self) -> RowCursor:
        return self

    def __next__(self) -> Row:
        return next(self._rows)

    def close(self) -> None:
        self._rows.close()

    def _read(self) -> Iterator[Row]:
        index, entry = self._index, self._entry
        with index.path.open("rb") as raw:
            raw.seek(entry.offset)
            text = io.TextIOWrapper(raw, encoding=index._codec, newline="")
            lineno = entry.lineno
            try:
                for lineno, line in enumerate(text, start=entry.lineno):
                    if line.strip():
                        self.ordinal += 1
                        index.rows_parsed += 1
                        yield lineno, line.rstrip("\r\n").split(index._sep)
            except UnicodeError as exc:
                raise SourceError(f"{index.path}:{lineno + 1}: cannot decode the file: {exc}") from None


def _open(path: Path, codec: str) -> IO[str]:
    return path.open("r", encoding=codec, newline="")


def _enter(stream: _Stream, state: RowState, pending: list[str], fields: list[str],
           offset: int, lineno: int, ordinal: int) -> None:
    """Make this row its stream's next entry, if it has a time (else the next row will be)."""
    try:
        t = state.time_ms(fields)
    except (ValueError, IndexError):
        return
    if pending:
        state.after(pending)
        pending.clear()
    stream.offsets.append(offset)
    stream.lines.append(lineno)
    stream.ordinals.append(ordinal)
    # Times never go back in a file that plays; past one that does, nothing plays.
    stream.times.append(max(t, stream.times[-1]) if stream.times else t)
    stream.states.append(state.snapshot())
    stream.since = 0
