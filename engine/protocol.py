"""The bus protocol: topics, frames, payload codec and RPC error codes.

Defined once here and imported by every publisher and subscriber. Every bus message is a
two-frame ZeroMQ multipart ``[topic, payload]``: the topic is UTF-8, colon-separated and
colon-terminated (so prefix subscription is exact), the payload a msgpack map stamped with
``seq`` (per topic, per publisher, from 1) and ``epoch`` (changes when the publisher restarts).
"""
from __future__ import annotations

import struct
import time
from typing import Any

import msgpack
import numpy as np

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


# A tick's keys after "symbol", each with the msgpack type code of its value: float64 for
# prices and volume_real, uint64 for integers (msgpack's widest; every decoder reads them as
# the same numbers).
_TICK_FLOATS = ("bid", "ask", "last", "volume_real")
_TICK_KEYS = tuple(_packer.pack(k) + bytes([0xCB if k in _TICK_FLOATS else 0xCF])
                   for k in (*TICK_FIELDS[1:], "seq", "epoch"))
_TICK_BODY = "".join(f"{len(k)}s{'d' if k[-1] == 0xCB else 'Q'}" for k in _TICK_KEYS)


class TickEncoder:
    """Encodes one symbol's stamped tick payloads, four times faster than ``encode``.

    Ticks are most of the bus' traffic and their map has fixed keys and types, so the frame is
    one ``struct`` pack of a per-symbol prefix, the keys and the values. Decoded, it is the map
    ``encode`` would give (key order included); values a uint64 cannot hold (a negative volume)
    take ``encode``.
    """

    __slots__ = ("symbol", "_prefix", "_pack", "size", "_layout")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        # The map's header (a fixmap: the tick's fields, seq and epoch) and its first entry.
        self._prefix = bytes([0x80 + len(TICK_FIELDS) + 2]) + _packer.pack("symbol") + _packer.pack(symbol)
        # The prefix packed with the rest spares a concatenation per tick.
        layout = struct.Struct(f">{len(self._prefix)}s{_TICK_BODY}")
        self._pack, self.size = layout.pack, layout.size
        self._layout: tuple[np.dtype, np.ndarray] | None = None

    def values_of(self, frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Frames of ``size`` bytes, read at once: a structured array of their values (fields
        ``bid, ask, last, volume, time_msc, flags, volume_real, seq, epoch``, big-endian) and
        a mask of the frames this encoder wrote (any other is read with ``decode``)."""
        if self._layout is None:
            names = (*TICK_FIELDS[1:], "seq", "epoch")
            dtype = np.dtype([("head", f"V{len(self._prefix)}")] + [
                field for i, (key, name) in enumerate(zip(_TICK_KEYS, names))
                for field in ((f"key{i}", f"V{len(key)}"), (name, ">f8" if key[-1] == 0xCB else ">u8"))])
            expected = np.zeros(1, dtype)
            expected["head"] = np.void(self._prefix)
            for i, key in enumerate(_TICK_KEYS):
                expected[f"key{i}"] = np.void(key)
            self._layout = (dtype, expected)
        dtype, expected = self._layout
        values = np.frombuffer(b"".join(frames), dtype)
        written = values["head"] == expected["head"]
        for i in range(len(_TICK_KEYS)):
            written &= values[f"key{i}"] == expected[f"key{i}"]
        return values, written

    def encode(self, bid: float, ask: float, last: float, volume: int, time_msc: int, flags: int,
               volume_real: float, seq: int, epoch: int) -> bytes:
        k0, k1, k2, k3, k4, k5, k6, k7, k8 = _TICK_KEYS
        try:
            return self._pack(self._prefix, k0, bid, k1, ask, k2, last, k3, volume, k4, time_msc,
                              k5, flags, k6, volume_real, k7, seq, k8, epoch)
        except struct.error:
            return encode(dict(zip((*TICK_FIELDS, "seq", "epoch"),
                                   (self.symbol, bid, ask, last, volume, time_msc, flags, volume_real,
                                    seq, epoch))))


# A candle's keys after symbol and timeframe with the msgpack type code of each value: float64
# prices, int64 the other numbers (a spread may be negative), then ``closed`` (a bool) and the
# stamp's uint64 ``seq`` and ``epoch``.
_CANDLE_NUMBERS = CANDLE_FIELDS[2:-1]
_CANDLE_BODY = struct.Struct(">" + "".join(
    f"{len(_packer.pack(k)) + 1}s{'d' if k in ('open', 'high', 'low', 'close') else 'q'}"
    for k in _CANDLE_NUMBERS) + f"{len(_packer.pack('closed'))}sB" + "".join(
    f"{len(_packer.pack(k)) + 1}sQ" for k in ("seq", "epoch")))
_CANDLE_KEYS = tuple(_packer.pack(k) + bytes([0xCB if k in ("open", "high", "low", "close") else 0xD3])
                     for k in _CANDLE_NUMBERS)
_CLOSED_KEY = _packer.pack("closed")
_SEQ_KEY, _EPOCH_KEY = (_packer.pack(k) + b"\xcf" for k in ("seq", "epoch"))


class CandleEncoder:
    """Encodes one (symbol, timeframe)'s stamped candle payloads with one ``struct`` pack, as
    ``TickEncoder`` does ticks: decoded, the map ``Candle.to_payload`` stamped would give (key
    order included); values an int64 cannot hold take ``encode``."""

    __slots__ = ("symbol", "timeframe", "_prefix", "_pack")

    def __init__(self, symbol: str, timeframe: str) -> None:
        self.symbol, self.timeframe = symbol, timeframe
        self._prefix = (bytes([0x80 + len(CANDLE_FIELDS) + 2]) + _packer.pack("symbol") + _packer.pack(symbol)
                        + _packer.pack("timeframe") + _packer.pack(timeframe))
        self._pack = _CANDLE_BODY.pack

    def encode(self, time_: int, open_: float, high: float, low: float, close: float,
               tick_volume: int, spread: int, real_volume: int, closed: bool, seq: int, epoch: int) -> bytes:
        k0, k1, k2, k3, k4, k5, k6, k7 = _CANDLE_KEYS
        try:
            return self._prefix + self._pack(
                k0, time_, k1, open_, k2, high, k3, low, k4, close, k5, tick_volume, k6, spread,
                k7, real_volume, _CLOSED_KEY, 0xC3 if closed else 0xC2, _SEQ_KEY, seq, _EPOCH_KEY, epoch)
        except struct.error:
            return encode(dict(zip((*CANDLE_FIELDS, "seq", "epoch"), (
                self.symbol, self.timeframe, time_, open_, high, low, close, tick_volume, spread,
                real_volume, closed, seq, epoch))))


class Packed(bytes):
    """A reply's ``data`` already msgpack-encoded: ``encode_reply`` splices it in as it is."""


def encode_reply(reply: dict[str, Any]) -> bytes:
    """``encode(reply)``, with a ``Packed`` value written as its bytes."""
    if not any(isinstance(v, Packed) for v in reply.values()):
        return encode(reply)
    return bytes([0x80 + len(reply)]) + b"".join(
        encode(k) + (v if isinstance(v, Packed) else encode(v)) for k, v in reply.items())


def pack_ticks(symbol: str, columns: dict[str, np.ndarray], first_seq: int | None = None,
               epoch: int = 0) -> Packed:
    """The msgpack array of ``symbol``'s tick payloads from columns (``TICK_FIELDS`` but
    ``symbol``), with ``seq`` from ``first_seq`` and ``epoch`` when ``first_seq`` is given.

    The map ``TickEncoder`` writes, for a whole array at once: one numpy record per tick of the
    fixed keys and big-endian values, so 10,000 ticks take 1-3 ms instead of the 15-20 a dict
    per tick and ``encode`` take. Decoded, it is the list of maps ``encode`` would give.
    """
    n = len(columns["time_msc"])
    names = TICK_FIELDS[1:] + (("seq", "epoch") if first_seq is not None else ())
    values = dict(columns)
    if first_seq is not None:
        values["seq"] = np.arange(first_seq, first_seq + n, dtype=np.int64)
        values["epoch"] = np.full(n, epoch, np.int64)
    if any(name not in _TICK_FLOATS and n and values[name].min() < 0 for name in names):
        rows = [dict(zip(("symbol", *names), (symbol, *row)))
                for row in zip(*(values[name].tolist() for name in names))]
        return Packed(encode(rows))  # a negative integer: not a uint64
    prefix = bytes([0x80 + 1 + len(names)]) + _packer.pack("symbol") + _packer.pack(symbol)
    fields = [("prefix", f"S{len(prefix)}")]
    for name, key in zip(names, _TICK_KEYS):
        fields += [("key_" + name, f"S{len(key)}"), (name, ">f8" if name in _TICK_FLOATS else ">u8")]
    template = np.zeros(1, np.dtype(fields))
    template["prefix"] = prefix
    for name, key in zip(names, _TICK_KEYS):
        template["key_" + name] = key
    # Every record starts as the template (one copy of its bytes), then takes its values.
    records = np.frombuffer(bytearray(template.tobytes() * n), template.dtype)
    for name in names:
        records[name] = values[name]
    return Packed(_packer.pack_array_header(n) + records.tobytes())


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
