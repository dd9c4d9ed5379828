"""Reading a payload laid out as one already decoded and checked: one ``struct`` unpack instead
of a msgpack decode.

A topic's publisher writes the same map over and over, its keys in the same order and its values
in the same msgpack forms (the engine's ``CandleEncoder``): only the numbers change. ``learn``
takes a payload the checked path accepted, with what it decoded to, and keeps its layout (the
bytes that must stay the same, and a ``struct`` code per number); ``read`` gives a later
payload's map when it has a known layout, with exactly the values and types msgpack would give,
and None otherwise (then the checked path decodes it). A payload is only read by a layout whose
constant bytes (the map header, every key, every string value, every number's type byte) it
holds byte for byte, so it decodes to the same keys with the same types as the one learned.
"""
from __future__ import annotations

import struct
from operator import itemgetter
from typing import Any, NamedTuple

import msgpack
import numpy as np

from engine.protocol import encode
from indicators.series import BAR_FIELDS

# The type byte of each msgpack form a layout reads, and its struct code; a fixint is its own
# type byte, read as a signed byte: 0..127 (positive fixint) or -32..-1 (negative fixint).
_TYPED = {0xCB: "d", 0xCC: "B", 0xCD: "H", 0xCE: "I", 0xCF: "Q", 0xD0: "b", 0xD1: "h", 0xD2: "i", 0xD3: "q"}
_SIGNED = (0xD0, 0xD1, 0xD2, 0xD3)
_FIXINT_LOW = -32
_TRUE, _FALSE = 0xC3, 0xC2
_DTYPES = {"d": ">f8", "B": "u1", "H": ">u2", "I": ">u4", "Q": ">u8", "b": "i1", "h": ">i2", "i": ">i4", "q": ">i8"}
_header = msgpack.Packer(use_bin_type=True).pack_map_header


class Columns(NamedTuple):
    """Many candles' fields as columns (``CandleLayouts.columns``)."""

    time: np.ndarray
    seq: np.ndarray
    epoch: np.ndarray
    closed: np.ndarray
    bar: tuple[np.ndarray, ...]  # BAR_FIELDS

# Payload lengths remembered per topic; past it the oldest is forgotten, so a publisher sending
# ever new lengths cannot keep the engine's current one from being learned.
LAYOUTS_PER_TOPIC = 32


def _getter(indexes: list[int]) -> Any:
    """A function of the fields giving a tuple of those at ``indexes`` (a zero if none): its
    first index twice, so that one index gives a tuple too."""
    return itemgetter(*indexes, indexes[0]) if indexes else lambda fields: (0,)


class _Layout:
    """One candle payload layout: its struct, its constant bytes (the even fields) and what
    each value field must hold."""

    __slots__ = ("unpack", "constants", "unsigned_fixints", "signed_fixints", "closed", "other_bools", "pick",
                 "fixints", "bools", "picked", "records", "_constant_at", "_constant_bytes")

    def __init__(self, codes: list[str], constants: tuple[bytes, ...], fixints: tuple[tuple[int, int], ...],
                 bools: tuple[int, ...], pick: tuple[int, ...]) -> None:
        self.unpack = struct.Struct(">" + "".join(f"{len(c)}s{code}" for c, code in zip(constants, codes))).unpack
        self.constants = constants
        self.fixints, self.bools, self.picked = fixints, bools, pick
        # The same layout as numpy records (field i as ``f{i}``), and where its constant bytes
        # sit, for ``columns``.
        self.records = np.dtype([(f"f{2 * k + j}", fmt) for k, (c, code) in enumerate(zip(constants, codes))
                                 for j, fmt in enumerate((f"V{len(c)}", _DTYPES[code]))])
        at, offset = [], 0
        for c, code in zip(constants, codes):
            at += range(offset, offset + len(c))
            offset += len(c) + struct.calcsize(">" + code)
        self._constant_at = np.array(at, np.intp)
        self._constant_bytes = np.frombuffer(b"".join(constants), np.uint8)
        # A fixint field's byte below its lowest value is another msgpack type: 0 for the
        # unsigned keys' fixints, -32 for the others' (their fields read as signed bytes).
        self.unsigned_fixints = _getter([i for i, low in fixints if low == 0])
        self.signed_fixints = _getter([i for i, low in fixints if low != 0])
        # Bools are their type byte 0xC2/0xC3: ``closed`` is read, any other only checked.
        self.closed, *other = pick[3:4] + tuple(i for i in bools if i != pick[3])
        self.other_bools = tuple(other)
        self.pick = itemgetter(*pick[:3], *pick[4:])

    def read(self, payload: bytes) -> tuple[int, int, int, bool, tuple[float, ...]] | None:
        """``CandleLayouts.read``'s answer for a payload of this layout's length."""
        fields = self.unpack(payload)
        if fields[0::2] != self.constants:
            return None
        if min(self.unsigned_fixints(fields)) < 0 or min(self.signed_fixints(fields)) < _FIXINT_LOW:
            return None
        closed = fields[self.closed]
        if closed == _TRUE:
            closed = True
        elif closed == _FALSE:
            closed = False
        else:
            return None
        for i in self.other_bools:
            if fields[i] != _TRUE and fields[i] != _FALSE:
                return None
        t, seq, epoch, *bar = self.pick(fields)
        return t, seq, epoch, closed, tuple(bar)

    def columns(self, data: bytes) -> Columns | None:
        """``read`` of many payloads of this layout at once (``data``: them joined), as
        columns: ``time``, ``seq``, ``epoch`` int64, ``closed`` bool, the bar float64; None
        if one of them would not be read (or holds an integer past int64)."""
        rows = np.frombuffer(data, np.uint8).reshape(-1, self.records.itemsize)
        if not (rows[:, self._constant_at] == self._constant_bytes).all():
            return None
        records = np.frombuffer(data, self.records)
        for i, low in self.fixints:
            if records[f"f{i}"].min() < low:
                return None
        for i in self.bools:
            flag = records[f"f{i}"]
            if not ((flag == _TRUE) | (flag == _FALSE)).all():
                return None
        t, seq, epoch = (records[f"f{i}"].astype(np.int64) for i in self.picked[:3])
        if min(t.min(), seq.min(), epoch.min()) < 0:
            return None  # a uint64 past int64
        bar = tuple(records[f"f{i}"].astype(np.float64) for i in self.picked[4:])
        return Columns(t, seq, epoch, records[f"f{self.picked[3]}"] == _TRUE, bar)


def _layout_of(payload: bytes, value: dict[str, Any], picked: tuple[str, ...],
               unsigned: frozenset[str]) -> _Layout | None:
    """The layout of ``payload``, which decodes to ``value``, reading the keys ``picked``;
    None unless it is written as msgpack-python writes ``value`` and holds only strings, bools,
    float64s and integers (those named in ``unsigned`` in an unsigned form, so any value their
    layout reads is >= 0)."""
    if encode(value) != payload or not all(key in value for key in picked):
        return None
    constants: list[bytes] = []
    codes, index, fixints, bools = [], {}, [], []
    pending = _header(len(value))
    for key, item in value.items():
        pending += encode(key)
        if type(item) is str:
            pending += encode(item)
            continue
        field = 2 * len(constants) + 1
        if type(item) is bool:
            code = "B"
            bools.append(field)
        elif type(item) in (int, float):
            raw = encode(item)
            if raw[0] < 0x80 or raw[0] >= 0xE0:
                code = "b"
                fixints.append((field, 0 if key in unsigned else _FIXINT_LOW))
            elif raw[0] in _TYPED and not (key in unsigned and raw[0] in _SIGNED):
                code = _TYPED[raw[0]]
                pending += raw[:1]
            else:
                return None  # float32, or a signed form where only non-negative values are taken
        else:
            return None
        constants.append(pending)
        codes.append(code)
        index[key] = field
        pending = b""
    if pending or not all(key in index for key in picked):
        return None  # a layout ends with a number, and reads numbers and bools only
    layout = _Layout(codes, tuple(constants), tuple(fixints), tuple(bools),
                     tuple(index[key] for key in picked))
    # The layout must give back exactly what msgpack gave, types included.
    if _typed(layout.read(payload)) != _typed(fields_of(value)):
        return None
    return layout


def fields_of(candle: dict[str, Any]) -> tuple[int, int, int, bool, tuple[float, ...]]:
    """What ``CandleLayouts.read`` gives, of a decoded candle."""
    return candle["time"], candle["seq"], candle["epoch"], candle["closed"], tuple(candle[k] for k in BAR_FIELDS)


def _typed(fields: tuple[Any, ...] | None) -> list[tuple[Any, type]] | None:
    """The values of ``fields`` (the bar's flattened) with their types, to compare exactly."""
    if fields is None:
        return None
    *head, bar = fields
    return [(v, type(v)) for v in (*head, *bar)]


class CandleLayouts:
    """The layouts of one candle topic's payloads, by payload length (one each, the latest
    learned), reading what the indicator worker uses of a candle."""

    __slots__ = ("_by_length", "_layouts")

    FIELDS = ("time", "seq", "epoch", "closed", *BAR_FIELDS)
    _UNSIGNED = frozenset(("time", "seq", "epoch"))  # the worker takes non-negative integers only

    def __init__(self) -> None:
        self._by_length: dict[int, Any] = {}  # payload length -> its layout's read
        self._layouts: dict[int, _Layout] = {}  # payload length -> its layout

    def __len__(self) -> int:
        return len(self._by_length)

    def read(self, payload: bytes) -> tuple[int, int, int, bool, tuple[float, ...]] | None:
        """``(time, seq, epoch, closed, bar)`` of ``payload`` if it has a learned layout (the
        first three non-negative integers, ``closed`` a bool, ``bar`` the ``BAR_FIELDS``:
        numbers, finite or not), else None."""
        read = self._by_length.get(len(payload))
        return None if read is None else read(payload)

    def learn(self, payload: bytes, candle: dict[str, Any]) -> bool:
        """Keep the layout of a checked ``payload`` (``candle``: what it decoded to), forgetting
        the oldest length past ``LAYOUTS_PER_TOPIC``; False if it has none a layout can read."""
        if type(candle.get("closed")) is not bool:
            return False
        layout = _layout_of(payload, candle, self.FIELDS, self._UNSIGNED)
        if layout is None:
            return False
        size = len(payload)
        if size not in self._layouts and len(self._layouts) >= LAYOUTS_PER_TOPIC:
            oldest = next(iter(self._layouts))
            del self._layouts[oldest], self._by_length[oldest]
        self._by_length[size] = layout.read
        self._layouts[size] = layout
        return True

    def columns(self, payloads: list[bytes]) -> Columns | None:
        """``read`` of ``payloads`` as columns, if they all have one learned layout and would
        all be read; else None."""
        size = len(payloads[0])
        layout = self._layouts.get(size)
        if layout is None:
            return None
        data = b"".join(payloads)
        if len(data) != size * len(payloads):
            return None  # lengths differ
        return layout.columns(data)
