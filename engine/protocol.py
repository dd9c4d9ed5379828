"""The bus protocol: topics, frames, payload codec and RPC error codes.

Defined once here and imported by every publisher and subscriber. Every bus message is a
two-frame ZeroMQ multipart ``[topic, payload]``: the topic is UTF-8, colon-separated and
colon-terminated (so prefix subscription is exact), the payload a msgpack map stamped with
``seq`` (per topic, per publisher, from 1) and ``epoch`` (changes when the publisher restarts).
"""
from __future__ import annotations

import functools
import operator
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Topic kinds. A topic is ``kind:part:part:`` -- always ending in ':'.
TICK = "tick"
CANDLE = "candle"
INDICATOR = "ind"
BOOK = "book"
ACCOUNT = "account"
SUMMARY = "summary"
HEALTH = "health"
POSITION = "position"
ORDER = "order"
DEAL = "deal"

ACCOUNT_TOPIC = b"account:"
SUMMARY_TOPIC = b"summary:"

# Payload fields, in documentation order (seq and epoch are added to every payload).
TICK_FIELDS = ("symbol", "bid", "ask", "last", "volume", "time_msc", "flags", "volume_real")
CANDLE_FIELDS = (
    "symbol", "timeframe", "time", "open", "high", "low", "close",
    "tick_volume", "spread", "real_volume", "closed",
)
BOOK_FIELDS = ("symbol", "time_msc", "bids", "asks")
# Account activity: MT5's TradePosition, TradeOrder and TradeDeal fields (times in the market
# clock). Positions and orders also carry ``state`` (ACTIVITY_STATES), so an order's own MT5
# state (ORDER_STATE_*) is ``order_state``.
POSITION_FIELDS = (
    "ticket", "time_msc", "type", "magic", "identifier", "volume", "price_open", "sl", "tp",
    "price_current", "swap", "profit", "symbol", "comment",
)
ORDER_FIELDS = (
    "ticket", "time_setup_msc", "type", "order_state", "volume_initial", "volume_current",
    "price_open", "sl", "tp", "symbol", "comment",
)
DEAL_FIELDS = (
    "ticket", "order", "time_msc", "type", "entry", "magic", "position_id", "volume", "price",
    "commission", "swap", "profit", "fee", "symbol", "comment",
)
ACTIVITY_STATES = ("open", "modified", "closed")
HEALTH_STATUSES = ("ok", "degraded", "down")

MAX_SYMBOL_LEN = 64
# Indicator values an ``ind:`` payload may carry besides its own fields (INDICATORS' output keys).
MAX_INDICATOR_VALUES = 64

# Who may publish what (engine.publish_policy): the market's kinds, and the health of these
# components, come only from the engine; other publishers have ``ind:`` and other components'
# ``health:``.
ENGINE_KINDS = (TICK, CANDLE, BOOK, ACCOUNT, SUMMARY, POSITION, ORDER, DEAL)
ENGINE_COMPONENT = "engine"
SERVICE_COMPONENT = "service"  # mt5-service, the launcher, whose health the engine publishes
ENGINE_COMPONENTS = (ENGINE_COMPONENT, SERVICE_COMPONENT)
MAX_COMPONENT_LEN = 64
# Other publishers' health components the engine keeps for ``snapshot``, each until it has
# been silent this long.
MAX_HEALTH_COMPONENTS = 64
HEALTH_SILENCE_MS = 30_000
# What the engine's embedded bus takes from each other publisher's connection: messages queued
# until the engine reads them (between ticks; workers send a few per bar), and bytes per frame
# (``ind:`` and ``health:`` maps are small); a larger frame disconnects the publisher.
PUBLISHER_QUEUE_MESSAGES = 1000
MAX_PUBLISHER_FRAME_BYTES = 64 * 1024


class ProtocolError(ValueError):
    """A frame or name that does not follow the protocol."""


def validate_symbol(symbol: object) -> str:
    """Return ``symbol`` if it can be a topic part, else raise ``ProtocolError`` saying why."""
    if not isinstance(symbol, str) or not symbol:
        raise ProtocolError(f"symbol must be a non-empty string, got {symbol!r}")
    if ":" in symbol:
        raise ProtocolError(f"symbol {symbol!r} contains ':', which separates topic parts")
    if len(symbol) > MAX_SYMBOL_LEN or not symbol.isprintable() or symbol.strip() != symbol:
        raise ProtocolError(
            f"symbol {symbol!r} must be printable, without surrounding spaces, "
            f"at most {MAX_SYMBOL_LEN} characters"
        )
    return symbol


def topic(kind: str, *parts: str) -> bytes:
    """``topic("candle", "EURUSD", "M5") == b"candle:EURUSD:M5:"``."""
    return (":".join((kind, *parts)) + ":").encode()


def tick_topic(symbol: str) -> bytes:
    return topic(TICK, symbol)


def candle_topic(symbol: str, timeframe: str) -> bytes:
    return topic(CANDLE, symbol, timeframe)


def indicator_topic(symbol: str, timeframe: str) -> bytes:
    return topic(INDICATOR, symbol, timeframe)


def book_topic(symbol: str) -> bytes:
    return topic(BOOK, symbol)


def health_topic(component: str) -> bytes:
    """``health_topic("indicators:0")`` -> ``b"health:indicators:0:"``."""
    return topic(HEALTH, component)


def topic_parts(raw: bytes) -> list[str]:
    """Split a topic into its parts: ``b"tick:EURUSD:"`` -> ``["tick", "EURUSD"]``."""
    text = raw.decode("utf-8")
    if not text.endswith(":"):
        raise ProtocolError(f"topic {text!r} is not colon-terminated")
    return text[:-1].split(":")


# Payload codec. Limits keep a hostile frame from allocating much before it is refused.
MAX_PAYLOAD_BYTES = 1 << 20

_packer = msgpack.Packer(use_bin_type=True)
encode = _packer.pack


def decode(data: bytes, max_bytes: int = MAX_PAYLOAD_BYTES, what: str = "payload") -> dict[str, Any]:
    """Decode one payload; ``ProtocolError`` if it is not a msgpack map within the limits, its
    message naming ``what`` was wrong in msgpack's terms (never Python's)."""
    if len(data) > max_bytes:
        raise ProtocolError(f"{what} of {len(data)} bytes exceeds {max_bytes}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"{what} is not valid msgpack: {msgpack_fault(exc)}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a map, got {msgpack_type_name(value)}")
    return value


def msgpack_fault(exc: Exception) -> str:
    """Why msgpack-python refused a frame, said of the bytes rather than of its exception."""
    if isinstance(exc, msgpack.ExtraData):
        return f"extra bytes ({len(exc.extra)}) after the first value; send exactly one map per frame"
    if isinstance(exc, msgpack.StackError):
        return "values are nested too deeply"
    if isinstance(exc, msgpack.FormatError):
        return "it holds a byte that starts no msgpack value (such as 0xc1)"
    if "incomplete input" in str(exc):
        return "it ends inside a value (empty or cut short)"
    if "map key" in str(exc):
        return "a map key is not a string"
    return "it does not decode"


_MSGPACK_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
                       bytes: "bin (send strings as msgpack str)", list: "an array", dict: "a map",
                       type(None): "nil", msgpack.ExtType: "an ext value"}


def msgpack_type_name(value: object) -> str:
    """The msgpack type of a decoded value, as an error message names it: ``"an array"``."""
    return _MSGPACK_TYPE_NAMES.get(type(value), "an unknown value")


# A tick's keys after "symbol", in order. Prices and volume_real are float64 always; the others
# are integers in msgpack's smallest form, as ``encode`` writes them, on every path (a frame, a
# ``ticks`` reply, a snapshot), so a decoder gives a field the same type whatever path it took.
_TICK_NAMES = (*TICK_FIELDS[1:], "seq", "epoch")
_TICK_FLOATS = ("bid", "ask", "last", "volume_real")
_TICK_KEYS = {name: _packer.pack(name) for name in _TICK_NAMES}
_TICK_ENTRIES = tuple((_TICK_KEYS[name], "f" if name in _TICK_FLOATS else "i") for name in _TICK_NAMES)
# An integer's smallest msgpack form, as msgpack-python picks it: the type byte ahead of it and
# its struct code (a fixint is its own type byte), by the bit length of a non-negative value
# (0..4: positive fixint, uint8/16/32/64) or of ``~value`` for a negative one (5..9: negative
# fixint, int8/16/32/64).
_INT_FORMS = ((b"", "B"), (b"\xcc", "B"), (b"\xcd", "H"), (b"\xce", "I"), (b"\xcf", "Q"),
              (b"", "b"), (b"\xd0", "b"), (b"\xd1", "h"), (b"\xd2", "i"), (b"\xd3", "q"))
_FORM_OF_BITS = (0,) * 8 + (1,) + (2,) * 8 + (3,) * 16 + (4,) * 32
_NEGATIVE_FORM_OF_BITS = (5,) * 6 + (6,) * 2 + (7,) * 8 + (8,) * 16 + (9,) * 32


def _int_form(value: int) -> int:
    """``value``'s form in ``_INT_FORMS``; IndexError beyond 64 bits."""
    return _FORM_OF_BITS[value.bit_length()] if value >= 0 else _NEGATIVE_FORM_OF_BITS[(~value).bit_length()]


def _map_layout(prefix: bytes, entries: tuple[tuple[bytes, str], ...],
                forms: tuple[int, ...]) -> tuple[Any, tuple[bytes, ...]]:
    """The ``struct`` pack of a map with fixed keys after ``prefix``, and its keys with their
    values' type bytes: ``entries`` are (packed key, kind), kind ``f`` a float64, ``b`` a bool
    (its value the type byte), ``i`` an integer in the next of ``forms``."""
    keys, codes, next_form = [], [], iter(forms).__next__
    for key, kind in entries:
        type_byte, code = (b"\xcb", "d") if kind == "f" else (b"", "B") if kind == "b" else _INT_FORMS[next_form()]
        keys.append(key + type_byte)
        codes.append(f"{len(keys[-1])}s{code}")
    return struct.Struct(f">{len(prefix)}s" + "".join(codes)).pack, tuple(keys)
# Reading any msgpack int form: the bytes after its type byte (-1: not an int) and whether signed.
# The forms of _INT_FORMS with a type byte: (type byte, form, value bytes) each.
_TYPED_INTS = np.array([(t[0], form, struct.calcsize(code)) for form, (t, code) in enumerate(_INT_FORMS) if t])
_INT_WIDTH = np.full(256, -1, np.int64)
_INT_WIDTH[:0x80] = _INT_WIDTH[0xE0:] = 0
_INT_WIDTH[_TYPED_INTS[:, 0]] = _TYPED_INTS[:, 2]
_INT_SIGNED = np.zeros(256, bool)
_INT_SIGNED[[0xD0, 0xD1, 0xD2, 0xD3]] = True
_INT64_MAX = 2**63 - 1
TICK_VALUES = np.dtype([(name, "f8" if name in _TICK_FLOATS else "i8") for name in _TICK_NAMES])


# The fast path's constant runs: a fixint's key, the fixint itself and the next key with its
# value's type byte, indexed by the fixint (volume then a uint64 time_msc; flags then the float
# volume_real), so the two commonest integers cost a tuple index instead of two struct fields.
_VOLUME_TO_TIME = tuple(_TICK_KEYS["volume"] + bytes([v]) + _TICK_KEYS["time_msc"] + b"\xcf" for v in range(0x80))
_FLAGS_TO_VOLUME_REAL = tuple(_TICK_KEYS["flags"] + bytes([v]) + _TICK_KEYS["volume_real"] + b"\xcb"
                              for v in range(0x80))
_UINT64 = 4  # the form of time_msc and epoch (ms since 1970) in every layout of the fast path
_EPOCH_KEY = _TICK_KEYS["epoch"] + b"\xcf"


@functools.lru_cache(maxsize=None)  # one per length of a symbol's prefix: at most a few hundred
def _tick_fast_layouts(head_len: int) -> tuple[tuple[Any, ...], tuple[tuple[Any, ...], ...]]:
    """``TickEncoder.encode``'s fast layouts for a head (prefix and bid's key) of ``head_len``
    bytes, by the bit length of seq (volume a fixint: its run from ``_VOLUME_TO_TIME``) and by
    those of volume then seq (volume any unsigned form): (struct pack, then the keys it takes).
    The last field is the epoch's entry, packed already (``TickEncoder._stamp``)."""
    ask_key, last_key = _TICK_KEYS["ask"] + b"\xcb", _TICK_KEYS["last"] + b"\xcb"
    prices = f">{head_len}sd{len(ask_key)}sd{len(last_key)}sd"  # bid, ask and last
    by_seq_form, by_forms = [], {}
    for seq_form in range(_UINT64 + 1):
        seq_type, seq_code = _INT_FORMS[seq_form]
        seq_key = _TICK_KEYS["seq"] + seq_type
        stamp = f"{len(seq_key)}s{seq_code}{len(_EPOCH_KEY) + 8}s"
        fixint = struct.Struct(f"{prices}{len(_VOLUME_TO_TIME[0])}sQ{len(_FLAGS_TO_VOLUME_REAL[0])}sd{stamp}")
        by_seq_form.append((fixint.pack, ask_key, last_key, seq_key))
        for volume_form in range(_UINT64 + 1):
            volume_type, volume_code = _INT_FORMS[volume_form]
            volume_key, time_key = _TICK_KEYS["volume"] + volume_type, _TICK_KEYS["time_msc"] + b"\xcf"
            layout = struct.Struct(f"{prices}{len(volume_key)}s{volume_code}{len(time_key)}sQ"
                                   f"{len(_FLAGS_TO_VOLUME_REAL[0])}sd{stamp}")
            by_forms[volume_form, seq_form] = (layout.pack, ask_key, last_key, volume_key, time_key, seq_key)
    by_seq = tuple(by_seq_form[form] for form in _FORM_OF_BITS)
    by_volume = (tuple(by_forms[_FORM_OF_BITS[bits], form] for form in _FORM_OF_BITS) for bits in range(65))
    return by_seq, tuple(by_volume)


@functools.lru_cache(maxsize=1024)
def _tick_layout(prefix_len: int, forms: tuple[int, ...]) -> tuple[Any, tuple[bytes, ...]]:
    """Any tick layout (``_map_layout``), for a prefix of ``prefix_len`` bytes."""
    return _map_layout(bytes(prefix_len), _TICK_ENTRIES, forms)


class TickEncoder:
    """Encodes one symbol's stamped tick payloads to the bytes ``encode`` gives, several times
    faster.

    Ticks are most of the bus' traffic and their map has fixed keys, so a frame is one ``struct``
    pack of a per-symbol prefix, the keys with their values' type bytes, and the values. The
    layout depends on the integers' widths: ticks whose times are uint64 and flags a fixint (all
    of MT5's) take theirs from a table by the bit lengths of seq (and volume, past a fixint),
    their epoch's entry packed once (a publisher's epoch is one int object); others, from a cache
    by every integer's form. A negative integer (never from MT5) takes ``encode``.
    """

    __slots__ = ("symbol", "prefix", "_head", "_by_seq", "_by_volume", "_epoch", "_epoch_entry")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        # The map's header (a fixmap: the tick's fields, seq and epoch) and its first entry.
        self.prefix = bytes([0x80 + len(_TICK_NAMES) + 1]) + _packer.pack("symbol") + _packer.pack(symbol)
        self._head = self.prefix + _TICK_KEYS["bid"] + b"\xcb"
        self._by_seq, self._by_volume = _tick_fast_layouts(len(self._head))
        self._epoch: object = None  # the epoch whose entry is packed, and the entry
        self._epoch_entry = b""

    def encode(self, bid: float, ask: float, last: float, volume: int, time_msc: int, flags: int,
               volume_real: float, seq: int, epoch: int) -> bytes:
        try:
            # Negative indexes would read the tables from the end; a flags past a fixint is an
            # IndexError.
            if epoch is self._epoch and volume >= 0 and flags >= 0 and time_msc > 0xFFFFFFFF:
                if volume < 0x80:  # most ticks
                    pack, ask_key, last_key, seq_key = self._by_seq[seq.bit_length()]
                    return pack(self._head, bid, ask_key, ask, last_key, last, _VOLUME_TO_TIME[volume], time_msc,
                                _FLAGS_TO_VOLUME_REAL[flags], volume_real, seq_key, seq, self._epoch_entry)
                pack, ask_key, last_key, volume_key, time_key, seq_key = \
                    self._by_volume[volume.bit_length()][seq.bit_length()]
                return pack(self._head, bid, ask_key, ask, last_key, last, volume_key, volume, time_key, time_msc,
                            _FLAGS_TO_VOLUME_REAL[flags], volume_real, seq_key, seq, self._epoch_entry)
        except (IndexError, AttributeError, TypeError, struct.error):
            pass  # flags past a fixint, negative or wider than 64 bits, numpy integers
        if epoch is not self._epoch and self._stamp(epoch):
            return self.encode(bid, ask, last, volume, time_msc, flags, volume_real, seq, epoch)
        return self._encode_any(bid, ask, last, volume, time_msc, flags, volume_real, seq, epoch)

    def _stamp(self, epoch: object) -> bool:
        """Pack ``epoch``'s entry for the fast path, if it is a uint64 int (False if not)."""
        if type(epoch) is not int or not 0xFFFFFFFF < epoch <= 0xFFFFFFFFFFFFFFFF:
            return False
        self._epoch, self._epoch_entry = epoch, _EPOCH_KEY + epoch.to_bytes(8, "big")
        return True

    def _encode_any(self, bid: float, ask: float, last: float, volume: int, time_msc: int, flags: int,
                    volume_real: float, seq: int, epoch: int) -> bytes:
        """``encode`` for any integers: their layout by every one's form, else ``encode``'s bytes."""
        try:
            ints = tuple(map(operator.index, (volume, time_msc, flags, seq, epoch)))
            volume, time_msc, flags, seq, epoch = ints
            pack, (k0, k1, k2, k3, k4, k5, k6, k7, k8) = _tick_layout(
                len(self.prefix), tuple(_FORM_OF_BITS[value.bit_length()] for value in ints))
            return pack(self.prefix, k0, bid, k1, ask, k2, last, k3, volume, k4, time_msc, k5, flags,
                        k6, volume_real, k7, seq, k8, epoch)
        except (TypeError, IndexError, struct.error):  # not integers, negative or wider than 64 bits
            values = (float(bid), float(ask), float(last), volume, time_msc, flags, float(volume_real), seq, epoch)
            return encode({"symbol": self.symbol, **dict(zip(_TICK_NAMES, values))})

    def values_of(self, frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Frames read at once: their values (``TICK_VALUES``: the tick's fields but ``symbol``,
        ``seq`` and ``epoch``; floats and int64) and a mask of those that are this symbol's tick
        as the engine writes it (the prefix, every key in order, float64 prices, integers in any
        msgpack int form within int64, nothing after); read any other with ``decode``.

        Frames of one layout are read at once as numpy records and checked against the layout's
        fixed bytes. A run of frames of one length (most batches are one, or one per width of
        seq) is read in its first frame's layout; if there are more than ``_READ_RUNS`` runs, or
        for the frames of a run that are not in that layout, each frame's layout is found from its
        integers' type bytes (``_read_by_layout``)."""
        n = len(frames)
        lengths = np.fromiter(map(len, frames), np.int64, n)
        ends = np.cumsum(lengths)
        joined = b"".join(frames)
        values, ok = np.zeros(n, TICK_VALUES), np.zeros(n, bool)
        starts = [0, *(np.flatnonzero(np.diff(lengths)) + 1).tolist()] if n else []
        if len(starts) > _READ_RUNS:
            self._read_by_layout(frames, joined, lengths, ends, np.arange(n), values, ok)
            return values, ok
        firsts = np.array(starts, np.int64)
        layouts = _tick_layouts_of(joined, ends[firsts] - lengths[firsts], ends[firsts], len(self.prefix))
        for start, stop, layout in zip(starts, [*starts[1:], n], layouts.tolist()):
            if layout >= 0:
                run = memoryview(joined)[ends[start] - lengths[start]:ends[stop - 1]]
                ok[start:stop] = _read_records(self.prefix, _forms_of_layout(layout), run, values[start:stop])
        unread = np.flatnonzero(~ok)
        if len(unread):
            self._read_by_layout(frames, joined, lengths, ends, unread, values, ok)
        return values, ok

    def _read_by_layout(self, frames: list[bytes], joined: bytes, lengths: np.ndarray, ends: np.ndarray,
                        rows: np.ndarray, values: np.ndarray, ok: np.ndarray) -> None:
        """``values_of`` for the frames ``rows`` of many layouts, into ``values`` and ``ok``: each
        frame's layout from its integers' type bytes, each layout's frames gathered and read at
        once; past ``_READ_LAYOUTS`` layouts, the fewest frames' parsed field by field (slower)."""
        layouts = _tick_layouts_of(joined, ends[rows] - lengths[rows], ends[rows], len(self.prefix))
        order = np.argsort(layouts, kind="stable")
        firsts = np.flatnonzero(np.diff(layouts[order], prepend=-2))  # where each layout's frames begin
        found, by_layout = layouts[order[firsts]], np.split(rows[order], firsts[1:])
        read = set(np.argsort(firsts - np.append(firsts[1:], len(rows)))[:_READ_LAYOUTS].tolist())  # the largest
        buf, unread = np.frombuffer(joined, np.uint8), []
        for i, (layout, group) in enumerate(zip(found.tolist(), by_layout)):
            if layout < 0:
                continue
            if i in read:
                size = int(lengths[group[0]])
                data = sliding_window_view(buf, size)[ends[group] - size]  # the group's frames, end to end
                read_values = np.empty(len(group), TICK_VALUES)
                ok[group] = _read_records(self.prefix, _forms_of_layout(layout), data, read_values)
                _as_void(values)[group] = _as_void(read_values)
            else:
                unread.append(group)
        if unread:
            group = np.concatenate(unread)
            parsed, ok[group] = self._parse([frames[i] for i in group.tolist()])
            _as_void(values)[group] = _as_void(parsed)

    def _parse(self, frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """``values_of`` for frames of any layout, field by field (slower)."""
        n = len(frames)
        lengths = np.fromiter(map(len, frames), np.int64, n)
        ends = np.cumsum(lengths)
        joined = b"".join(frames)
        # Padding, and positions kept within the frames' bytes: a malformed frame reads garbage
        # from inside the buffer, never past it, and fails the checks.
        buf = np.frombuffer(joined + bytes(len(self.prefix) + 16), np.uint8)
        limit = len(joined)
        pos = ends - lengths
        ok = _matches(buf, pos, self.prefix)
        pos, ok = _advance(pos + len(self.prefix), ends, limit, ok)
        values = np.zeros(n, TICK_VALUES)
        for name in _TICK_NAMES:
            ok &= _matches(buf, pos, _TICK_KEYS[name])
            pos, ok = _advance(pos + len(_TICK_KEYS[name]), ends, limit, ok)
            head = buf[pos]
            body = np.ascontiguousarray(buf[pos[:, None] + _AFTER_HEAD]).view(">u8").ravel()
            if name in _TICK_FLOATS:
                ok &= head == 0xCB
                values[name] = body.view(">f8")
                pos, ok = _advance(pos + 9, ends, limit, ok)
                continue
            width = _INT_WIDTH[head]
            ok &= width >= 0
            width = np.maximum(width, 0)
            shift = ((8 - width) % 8 * 8).astype(np.uint64)  # width 8: no shift; 0 (fixint) unused
            unsigned = body >> shift
            bits = (width * 8).astype(np.uint64)
            sign = _INT_SIGNED[head] & (width < 8) & ((unsigned >> np.maximum(bits, 1) - 1) & 1 == 1)
            value = (unsigned - (sign.astype(np.uint64) << bits)).astype(np.int64)  # two's complement
            ok &= ~((head == 0xCF) & (unsigned > _INT64_MAX))
            fixint = head.astype(np.int64)
            values[name] = np.where(width == 0, np.where(fixint >= 0xE0, fixint - 256, fixint), value)
            pos, ok = _advance(pos + 1 + width, ends, limit, ok)
        ok &= pos == ends
        return values, ok


_AFTER_HEAD = np.arange(1, 9)


def _advance(pos: np.ndarray, ends: np.ndarray, limit: int, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions moved on, frames read past their end no longer ok, and positions kept within
    the buffer (a malformed frame reads garbage from inside it, never past it)."""
    return np.minimum(pos, limit), ok & (pos <= ends)


_READ_RUNS = 8  # runs of frames of one length values_of reads in their first frame's layout
_READ_LAYOUTS = 64  # layouts of frames values_of reads as records; past them, field by field
_TICK_INTS = tuple(name for name in _TICK_NAMES if name not in _TICK_FLOATS)
_INT_DTYPES = ("u1", "u1", ">u2", ">u4", ">u8", "i1", "i1", ">i2", ">i4", ">i8")  # by form
_UINT_BOUNDS = np.array([128, 256, 65536, 2**32], np.uint64)  # where each unsigned form ends
# Reading a tick's layout from its integers' type bytes: a layout is one number, the forms of
# ``_TICK_INTS`` as its digits (base _LAYOUT_BASE); a byte that is no int's type makes it at least
# _NO_LAYOUT. After a type byte, its value: _SKIP_OF_TYPE bytes from the type byte on.
_LAYOUT_BASE = 10
_NO_LAYOUT = _LAYOUT_BASE ** len(_TICK_INTS)
_FORM_OF_TYPE = np.full(256, _NO_LAYOUT, np.int64)
_FORM_OF_TYPE[:0x80], _FORM_OF_TYPE[0xE0:] = 0, 5
_FORM_OF_TYPE[_TYPED_INTS[:, 0]] = _TYPED_INTS[:, 1]
_SKIP_OF_TYPE = np.maximum(_INT_WIDTH, 0) + 1


def _tick_layouts_of(joined: bytes, starts: np.ndarray, ends: np.ndarray, prefix_len: int) -> np.ndarray:
    """Each tick frame's layout, from the type bytes where a tick map of those widths has them;
    -1 for a frame whose bytes there are no integers' or whose length is not that layout's.
    Nothing else is checked (``_read_records`` does)."""
    buf = np.frombuffer(joined, np.uint8)
    pos, layouts = starts + prefix_len, np.zeros(len(starts), np.int64)
    gap = 0  # fixed bytes (keys, floats) between the last integer read and the next type byte
    for name in _TICK_NAMES:
        gap += len(_TICK_KEYS[name])
        if name in _TICK_FLOATS:
            gap += 9
            continue
        pos += gap
        head = buf.take(pos, mode="clip")  # a malformed frame's positions may run past the end
        layouts *= _LAYOUT_BASE
        layouts += _FORM_OF_TYPE[head]
        pos += _SKIP_OF_TYPE[head]
        gap = 0
    layouts[(layouts >= _NO_LAYOUT) | (pos + gap != ends)] = -1
    return layouts


def _as_void(values: np.ndarray) -> np.ndarray:
    """Records as opaque bytes: indexed many at once, numpy copies them whole, not field by field."""
    return values.view(f"V{values.dtype.itemsize}")


def _forms_of_layout(layout: int) -> tuple[int, ...]:
    forms = []
    for _ in _TICK_INTS:
        layout, form = divmod(layout, _LAYOUT_BASE)
        forms.append(form)
    return tuple(reversed(forms))


def _read_records(prefix: bytes, forms: tuple[int, ...], data: bytes | memoryview | np.ndarray,
                  values: np.ndarray) -> np.ndarray:
    """Frames of one layout, end to end, read as records: their values into ``values`` (of
    ``TICK_VALUES``), and which have the layout's fixed bytes (prefix, keys, type bytes) and
    integers in their forms' ranges."""
    values_dtype, fixed_dtype, expected, limits = _tick_reader(prefix, forms)
    fixed = np.frombuffer(data, fixed_dtype)
    ok = np.ones(len(fixed), bool)
    for name in fixed_dtype.names:
        ok &= fixed[name] == expected[name]
    records = np.frombuffer(data, values_dtype)
    for name, within, bound in limits:
        ok &= within(records[name], bound)
    values[:] = records  # field by field, by position: big-endian to native
    return ok


@functools.lru_cache(maxsize=1024)
def _tick_reader(prefix: bytes, forms: tuple[int, ...]
                 ) -> tuple[np.dtype, np.dtype, np.ndarray, tuple[tuple[str, np.ufunc, int], ...]]:
    """How ``_read_records`` reads a layout: the dtype of its values (big-endian, in place), that
    of its fixed bytes as unsigned words (each run of them covered by words of the widest size
    it holds, the last overlapping) with their expected record, and its integers' limits."""
    dtype, template = _tick_records(prefix, _TICK_NAMES, forms)
    fields = [(name, *dtype.fields[name][:2]) for name in dtype.names]
    values = np.dtype({"names": list(_TICK_NAMES), "itemsize": dtype.itemsize,
                       "formats": [code for name, code, _ in fields if name in _TICK_NAMES],
                       "offsets": [offset for name, _, offset in fields if name in _TICK_NAMES]})
    runs: list[list[int]] = []  # [start, end) of the fixed bytes
    for name, code, offset in fields:
        if name not in _TICK_NAMES:
            if runs and runs[-1][1] == offset:
                runs[-1][1] += code.itemsize
            else:
                runs.append([offset, offset + code.itemsize])
    words = []
    for start, end in runs:
        size = next(size for size in (8, 4, 2, 1) if size <= end - start)
        words += [(offset, size) for offset in range(start, end - size, size)] + [(end - size, size)]
    fixed = np.dtype({"names": [f"word{i}" for i in range(len(words))], "itemsize": dtype.itemsize,
                      "formats": [f"u{size}" for _, size in words], "offsets": [offset for offset, _ in words]})
    limits = tuple((name, *_FORM_LIMITS[form]) for name, form in zip(_TICK_INTS, forms) if form in _FORM_LIMITS)
    return values, fixed, np.frombuffer(template.tobytes(), fixed)[0], limits


# What a record's integer of these forms may hold: a positive or negative fixint (its own type
# byte, read as any byte: u1 or i1), an int64 (a uint64).
_FORM_LIMITS = {0: (np.less_equal, 0x7F), 5: (np.greater_equal, -32), 4: (np.less_equal, _INT64_MAX)}


@functools.lru_cache(maxsize=1024)
def _tick_records(prefix: bytes, names: tuple[str, ...], forms: tuple[int, ...]) -> tuple[np.dtype, np.ndarray]:
    """One layout of a tick map as a numpy record: its dtype (``head``, then ``key_NAME`` (the
    key and its value's type byte) and ``NAME`` per field) and a record of its fixed bytes."""
    next_form, entries = iter(forms).__next__, []
    for name in names:
        if name in _TICK_FLOATS:
            entries.append((name, _TICK_KEYS[name] + b"\xcb", ">f8"))
        else:
            form = next_form()
            entries.append((name, _TICK_KEYS[name] + _INT_FORMS[form][0], _INT_DTYPES[form]))
    return _map_records(prefix, entries)


def _map_records(prefix: bytes, entries: list[tuple[str, bytes, str]]) -> tuple[np.dtype, np.ndarray]:
    """A map's layout as a numpy record: ``head`` (``prefix``), then per ``(name, fixed, code)``
    entry ``key_NAME`` (its ``fixed`` bytes: the key and its value's type byte) and ``NAME`` (the
    value, numpy type ``code``); and a record holding the fixed bytes."""
    fields, fixed = [("head", f"V{len(prefix)}")], {"head": prefix}
    for name, key, code in entries:
        fields += [("key_" + name, f"V{len(key)}"), (name, code)]
        fixed["key_" + name] = key
    template = np.zeros(1, np.dtype(fields))
    for field, raw in fixed.items():
        template[field] = np.void(raw)
    return template.dtype, template


def _matches(buf: np.ndarray, pos: np.ndarray, expected: bytes) -> np.ndarray:
    """Which rows hold ``expected`` at ``pos``."""
    return (buf[pos[:, None] + np.arange(len(expected))] == np.frombuffer(expected, np.uint8)).all(axis=1)


# A candle's keys after symbol and timeframe: float64 prices, integers (a spread may be negative)
# in their smallest form, ``closed`` a bool, then the stamp.
_CANDLE_PRICES = ("open", "high", "low", "close")
_CANDLE_VALUES = (*CANDLE_FIELDS[2:], "seq", "epoch")
_CANDLE_ENTRIES = tuple((_packer.pack(k), "f" if k in _CANDLE_PRICES else "b" if k == "closed" else "i")
                        for k in _CANDLE_VALUES)
_CANDLE_INTS = tuple(k for k, (_, kind) in zip(_CANDLE_VALUES, _CANDLE_ENTRIES) if kind == "i")


@functools.lru_cache(maxsize=1024)
def _candle_records(prefix: bytes, forms: tuple[int, ...]) -> tuple[np.dtype, np.ndarray]:
    """One layout of a candle map (unsigned integers of ``forms``) as a numpy record: its dtype
    (``head``, then ``key_NAME`` (the key and its value's type byte) and ``NAME`` per field;
    ``closed`` is its own type byte) and a record of its fixed bytes."""
    next_form, entries = iter(forms).__next__, []
    for name, (key, kind) in zip(_CANDLE_VALUES, _CANDLE_ENTRIES):
        if kind == "f":
            entries.append((name, key + b"\xcb", ">f8"))
        elif kind == "b":
            entries.append((name, key, "u1"))
        else:
            form = next_form()
            entries.append((name, key + _INT_FORMS[form][0], _INT_DTYPES[form]))
    return _map_records(prefix, entries)


class CandleEncoder:
    """Encodes one (symbol, timeframe)'s stamped candle payloads with one ``struct`` pack, as
    ``TickEncoder`` does ticks: the bytes ``encode`` gives for the map ``Candle.to_payload``
    stamped would give (key order included)."""

    __slots__ = ("symbol", "timeframe", "prefix", "_layouts")

    def __init__(self, symbol: str, timeframe: str) -> None:
        self.symbol, self.timeframe = symbol, timeframe
        self.prefix = (bytes([0x80 + len(CANDLE_FIELDS) + 2]) + _packer.pack("symbol") + _packer.pack(symbol)
                       + _packer.pack("timeframe") + _packer.pack(timeframe))
        self._layouts: dict[tuple[int, ...], tuple[Any, tuple[bytes, ...]]] = {}

    def encode(self, time_: int, open_: float, high: float, low: float, close: float,
               tick_volume: int, spread: int, real_volume: int, closed: bool, seq: int, epoch: int) -> bytes:
        form = _int_form
        try:
            forms = (form(time_), form(tick_volume), form(spread), form(real_volume), form(seq), form(epoch))
            layout = self._layouts.get(forms)
            if layout is None:
                layout = self._layouts[forms] = _map_layout(self.prefix, _CANDLE_ENTRIES, forms)
            pack, (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10) = layout
            return pack(self.prefix, k0, time_, k1, open_, k2, high, k3, low, k4, close, k5, tick_volume,
                        k6, spread, k7, real_volume, k8, 0xC3 if closed else 0xC2, k9, seq, k10, epoch)
        except (IndexError, AttributeError, struct.error):  # wider than 64 bits, or numpy numbers
            return encode(dict(zip((*CANDLE_FIELDS, "seq", "epoch"), (
                self.symbol, self.timeframe, int(time_), float(open_), float(high), float(low), float(close),
                int(tick_volume), int(spread), int(real_volume), bool(closed), int(seq), int(epoch)))))

    def encode_columns(self, bars: Mapping[str, np.ndarray], closed: np.ndarray, first_seq: int,
                       epoch: int) -> list[bytes]:
        """``encode`` of many bars at once (``bars``: columns ``time`` to ``real_volume``;
        ``closed``: each bar's flag), stamped from ``first_seq``: a run of bars whose integers
        have the same forms is one array of numpy records (a template's bytes, then the values).
        A negative integer (a spread), or more than ``_PACK_RUNS`` runs, takes ``encode`` bar by
        bar."""
        n = len(closed)
        values = {name: bars[name] for name in _CANDLE_VALUES[:-3]}
        values["closed"] = np.where(closed, 0xC3, 0xC2).astype(np.uint8)
        values["seq"] = np.arange(first_seq, first_seq + n, dtype=np.int64)
        values["epoch"] = np.full(n, epoch, np.int64)
        ints = [np.asarray(values[name], np.int64) for name in _CANDLE_INTS]
        if not n or min(int(v.min()) for v in ints) < 0:
            return self._one_by_one(values)
        forms = np.stack([np.searchsorted(_UINT_BOUNDS, v.astype(np.uint64), "right") for v in ints])
        starts = [0, *(np.flatnonzero((forms[:, 1:] != forms[:, :-1]).any(axis=0)) + 1).tolist()]
        if len(starts) > _PACK_RUNS:
            return self._one_by_one(values)
        frames: list[bytes] = []
        for start, end in zip(starts, [*starts[1:], n]):
            dtype, template = _candle_records(self.prefix, tuple(forms[:, start].tolist()))
            records = np.frombuffer(bytearray(template.tobytes() * (end - start)), dtype)
            for name in _CANDLE_VALUES:
                records[name] = values[name][start:end]
            data, size = records.tobytes(), dtype.itemsize
            frames += [data[k:k + size] for k in range(0, len(data), size)]
        return frames

    def _one_by_one(self, values: dict[str, np.ndarray]) -> list[bytes]:
        """``encode_columns``' frames written bar by bar (``closed`` given as its type byte)."""
        rows = zip(*(np.asarray(values[name], np.float64 if name in _CANDLE_PRICES else None).tolist()
                     for name in _CANDLE_VALUES))
        return [self.encode(*row[:8], row[8] == 0xC3, *row[9:]) for row in rows]


class Packed(bytes):
    """A reply's ``data`` already msgpack-encoded: ``encode_reply`` splices it in as it is."""


def encode_reply(reply: dict[str, Any]) -> bytes:
    """``encode(reply)``, with a ``Packed`` value written as its bytes."""
    if not any(isinstance(v, Packed) for v in reply.values()):
        return encode(reply)
    return bytes([0x80 + len(reply)]) + b"".join(
        encode(k) + (v if isinstance(v, Packed) else encode(v)) for k, v in reply.items())


def _tick_columns(columns: dict[str, np.ndarray], first_seq: int | None, epoch: int) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    n = len(columns["time_msc"])
    values = dict(columns)
    if first_seq is None:
        return TICK_FIELDS[1:], values
    values["seq"] = np.arange(first_seq, first_seq + n, dtype=np.int64)
    values["epoch"] = np.full(n, epoch, np.int64)
    return _TICK_NAMES, values


def _has_negative(names: tuple[str, ...], values: dict[str, np.ndarray]) -> bool:
    return any(name not in _TICK_FLOATS and len(values[name]) and values[name].min() < 0 for name in names)


def _packed_rows(symbol: str, names: tuple[str, ...], values: dict[str, np.ndarray]
                 ) -> tuple[list[bytes], list[int] | None]:
    """Every tick's map as ``encode`` writes it (no integer negative), in chunks of maps end to
    end, and the size of each chunk's maps. A run of ticks whose integers have the same forms is
    a chunk, packed as one array of numpy records (a template's bytes, then the values); past
    ``_PACK_RUNS`` runs, each map is a chunk (sizes None), the ticks regrouped by layout to be
    packed as records (``_packed_by_layout``)."""
    n = len(values["time_msc"])
    if not n:
        return [], []
    prefix = bytes([0x80 + 1 + len(names)]) + _packer.pack("symbol") + _packer.pack(symbol)
    ints = [name for name in names if name not in _TICK_FLOATS]
    forms = np.stack([np.searchsorted(_UINT_BOUNDS, np.asarray(values[name]).astype(np.uint64), "right")
                      for name in ints])
    starts = [0, *(np.flatnonzero((forms[:, 1:] != forms[:, :-1]).any(axis=0)) + 1).tolist()]
    if len(starts) > _PACK_RUNS:
        return _packed_by_layout(prefix, names, values, forms), None
    chunks, sizes = [], []
    for start, end in zip(starts, [*starts[1:], n]):
        layout = tuple(forms[:, start].tolist())
        chunks.append(_records(prefix, names, layout, values, slice(start, end), end - start))
        sizes.append(len(chunks[-1]) // (end - start))
    return chunks, sizes


_PACK_RUNS = 16  # runs of one layout packed in order; more (volumes that vary) are regrouped


def _records(prefix: bytes, names: tuple[str, ...], forms: tuple[int, ...], values: dict[str, np.ndarray],
             rows: slice | np.ndarray, count: int) -> bytes:
    """The maps of the ``count`` ``rows`` of ``values``, all of the layout ``forms``, end to end."""
    records = np.repeat(_tick_records(prefix, names, forms)[1], count)
    for name in names:
        records[name] = values[name][rows]
    return records.tobytes()


def _packed_by_layout(prefix: bytes, names: tuple[str, ...], values: dict[str, np.ndarray],
                      forms: np.ndarray) -> list[bytes]:
    """Each tick's map, for ticks of many layouts (``forms``: each integer's form, a row per
    integer): the ticks of each layout packed at once, their maps cut apart and put in order."""
    layouts = (forms * (_LAYOUT_BASE ** np.arange(len(forms)))[:, None]).sum(axis=0)
    order = np.argsort(layouts, kind="stable")
    maps = []
    for rows in np.split(order, np.flatnonzero(np.diff(layouts[order])) + 1):
        data = _records(prefix, names, tuple(forms[:, rows[0]].tolist()), values, rows, len(rows))
        size = len(data) // len(rows)
        maps += [data[start:start + size] for start in range(0, len(data), size)]
    in_order = np.empty(len(maps), object)
    in_order[order] = maps
    return in_order.tolist()


def pack_ticks(symbol: str, columns: dict[str, np.ndarray], first_seq: int | None = None,
               epoch: int = 0) -> Packed:
    """The msgpack array of ``symbol``'s tick payloads from columns (``TICK_FIELDS`` but
    ``symbol``), with ``seq`` from ``first_seq`` and ``epoch`` when ``first_seq`` is given.

    The bytes ``encode`` gives for the list of maps, written for the whole array at once (numpy),
    so 10,000 ticks take a few ms instead of the 15-20 a dict per tick and ``encode`` take.
    """
    names, values = _tick_columns(columns, first_seq, epoch)
    n = len(values["time_msc"])
    if _has_negative(names, values):
        return Packed(encode([dict(zip(("symbol", *names), (symbol, *row))) for row in _rows(names, values)]))
    return Packed(b"".join([_packer.pack_array_header(n), *_packed_rows(symbol, names, values)[0]]))


def tick_frames(symbol: str, columns: dict[str, np.ndarray], first_seq: int, epoch: int) -> list[bytes]:
    """The bus frames of ``symbol``'s ticks from columns, stamped from ``first_seq``: those
    ``TickEncoder.encode`` writes, for many ticks at once."""
    names, values = _tick_columns(columns, first_seq, epoch)
    if _has_negative(names, values):
        encoder = TickEncoder(symbol)
        return [encoder.encode(*row) for row in _rows(names, values)]
    chunks, sizes = _packed_rows(symbol, names, values)
    if sizes is None:
        return chunks
    return [chunk[start:start + size] for chunk, size in zip(chunks, sizes)
            for start in range(0, len(chunk), size)]


def _rows(names: tuple[str, ...], values: dict[str, np.ndarray]) -> Iterator[tuple[Any, ...]]:
    """Each tick's values as Python numbers (prices as floats, whatever their column's type)."""
    return zip(*(np.asarray(values[name], np.float64 if name in _TICK_FLOATS else None).tolist()
                 for name in names))


def new_epoch() -> int:
    """An epoch for a publisher starting now: milliseconds since 1970, so restarts increase it."""
    return time.time_ns() // 1_000_000


class Stamper:
    """Stamps payloads with this publisher's ``epoch`` and a per-topic ``seq``."""

    __slots__ = ("epoch", "_seq")

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = new_epoch() if epoch is None else epoch
        self._seq: dict[bytes, int] = {}

    def stamp(self, topic_: bytes, payload: dict[str, Any]) -> dict[str, Any]:
        """Add ``seq`` and ``epoch`` to ``payload`` (in place) and return it."""
        payload["seq"] = self.next_seq(topic_)
        payload["epoch"] = self.epoch
        return payload

    def next_seq(self, topic_: bytes) -> int:
        """The ``seq`` of the next message on ``topic_`` (counted as sent)."""
        seq = self._seq.get(topic_, 0) + 1
        self._seq[topic_] = seq
        return seq

    def next_seqs(self, topic_: bytes, count: int) -> int:
        """``next_seq`` for ``count`` messages at once: the ``seq`` of the first."""
        first = self._seq.get(topic_, 0) + 1
        self._seq[topic_] = first + count - 1
        return first

    def last_seq(self, topic_: bytes) -> int:
        return self._seq.get(topic_, 0)


# RPC: request ``{"op": ..., ...}``; reply ``{"ok": True, "data": ...}`` or
# ``{"ok": False, "error": {"code": ..., "message": ...}}``.
RPC_OPS = ("symbols", "tick", "candles", "ticks", "book", "account", "positions", "orders", "deals",
           "snapshot", "health", "replay")
# The ``replay`` op's actions (the replay source's playback; ``seek`` takes ``time``, epoch s).
REPLAY_ACTIONS = ("start", "pause", "resume", "status", "seek")
MAX_REQUEST_BYTES = 64 * 1024
# Ticks in one ``ticks`` reply (about 1.3 MB of msgpack with their seq and epoch).
MAX_TICKS = 10_000
# Deals in one ``deals`` reply (a longer range is too_many).
MAX_DEALS = 10_000
# Times a date range may name: epoch seconds up to the end of year 9999 (ms for ticks).
MAX_TIME_S = 253_402_300_799
# What a client decodes of one reply: larger than a bus payload, as a ``ticks`` reply may be.
MAX_REPLY_BYTES = 4 * 1024 * 1024
# A request is the client's envelope (REQ's empty delimiter, a proxy's routing ids) and a body:
# more frames, or envelope frames longer than a routing id, are refused with bad_request.
MAX_REQUEST_FRAMES = 8
MAX_ENVELOPE_FRAME_BYTES = 255
# ZMQ_MAXMSGSIZE on the RPC socket: a longer frame closes the connection inside libzmq before it
# is stored; shorter oversize requests still get a bad_request reply.
MAX_REQUEST_FRAME_BYTES = 16 * MAX_REQUEST_BYTES
# Replies waiting for one client to read them, in bytes (what the engine has sent that the
# client's side has not received: in libzmq and in the kernel) and in number (ZMQ_SNDHWM).
# Over either, its next replies are dropped (counted as rpc_replies_dropped) until it reads;
# one reply is always sent to a client with nothing waiting, however large.
MAX_QUEUED_REPLY_BYTES = 4 * 1024 * 1024
MAX_QUEUED_REPLIES = 1000
# Bytes a client may have sent that the engine has not yet read as whole requests (libzmq holds
# a multipart message until its last frame arrives, whatever its frame count); over it, the
# connection is closed. Linux only (TCP_INFO).
MAX_UNREAD_BYTES = 16 * 1024 * 1024

# Bus subscriptions, per connection to the subscribers' endpoint. libzmq keeps subscriptions in
# a trie costing about 47 bytes per prefix byte, and walks all of it each time a subscriber
# leaves, so they are bounded in length (the longest valid topic is under 128 bytes), in number
# and bytes per connection, and in distinct bytes for all connections together (a trie of ~3 MB;
# a prefix many connections share is stored, and counted, once). A connection over any of these
# is closed. A frame over MAX_SUBSCRIPTION_FRAME_BYTES (ZMQ_MAXMSGSIZE, room for CURVE's
# handshake commands) closes the connection inside libzmq before it is stored.
MAX_SUBSCRIPTION_BYTES = 128
MAX_SUBSCRIPTION_FRAME_BYTES = 1024
MAX_SUBSCRIPTIONS_PER_PEER = 1000
MAX_SUBSCRIPTION_BYTES_PER_PEER = 16 * 1024
MAX_SUBSCRIPTION_BYTES_TOTAL = 64 * 1024


class ErrorCode:
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_SYMBOL = "unknown_symbol"
    UNKNOWN_TIMEFRAME = "unknown_timeframe"
    TOO_MANY = "too_many"
    TOO_OLD = "too_old"  # the ticks after a seq are no longer journaled, or another epoch's
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    INTERNAL = "internal"


class RpcError(Exception):
    """An error reply, raised on the client side and returned as a value on the server side."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_reply(self) -> dict[str, Any]:
        return {"ok": False, "error": {"code": self.code, "message": self.message}}


def ok_reply(data: Any) -> dict[str, Any]:
    return {"ok": True, "data": data}
