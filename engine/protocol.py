"""The bus protocol: topics, frames, payload codec and RPC error codes.

Defined once here and imported by every publisher and subscriber. Every bus message is a
two-frame ZeroMQ multipart ``[topic, payload]``: the topic is UTF-8, colon-separated and
colon-terminated (so prefix subscription is exact), the payload a msgpack map stamped with
``seq`` (per topic, per publisher, from 1) and ``epoch`` (changes when the publisher restarts).
"""
from __future__ import annotations

import time
from typing import Any

import msgpack

# Topic kinds. A topic is ``kind:part:part:`` -- always ending in ':'.
TICK = "tick"
CANDLE = "candle"
INDICATOR = "ind"
BOOK = "book"
ACCOUNT = "account"
SUMMARY = "summary"
HEALTH = "health"

ACCOUNT_TOPIC = b"account:"
SUMMARY_TOPIC = b"summary:"

# Payload fields, in documentation order (seq and epoch are added to every payload).
TICK_FIELDS = ("symbol", "bid", "ask", "last", "volume", "time_msc", "flags")
CANDLE_FIELDS = (
    "symbol", "timeframe", "time", "open", "high", "low", "close",
    "tick_volume", "spread", "real_volume", "closed",
)
BOOK_FIELDS = ("symbol", "time_msc", "bids", "asks")
HEALTH_STATUSES = ("ok", "degraded", "down")

MAX_SYMBOL_LEN = 64


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


def decode(data: bytes) -> dict[str, Any]:
    """Decode one payload; ``ProtocolError`` if it is not a msgpack map within the limits."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"payload is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"payload must be a map, got {type(value).__name__}")
    return value


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
        seq = self._seq.get(topic_, 0) + 1
        self._seq[topic_] = seq
        payload["seq"] = seq
        payload["epoch"] = self.epoch
        return payload

    def last_seq(self, topic_: bytes) -> int:
        return self._seq.get(topic_, 0)


# RPC: request ``{"op": ..., ...}``; reply ``{"ok": True, "data": ...}`` or
# ``{"ok": False, "error": {"code": ..., "message": ...}}``.
RPC_OPS = ("symbols", "tick", "candles", "book", "account", "snapshot", "health")
MAX_REQUEST_BYTES = 64 * 1024


class ErrorCode:
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_SYMBOL = "unknown_symbol"
    UNKNOWN_TIMEFRAME = "unknown_timeframe"
    TOO_MANY = "too_many"
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
