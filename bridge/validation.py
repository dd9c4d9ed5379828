"""Client request validation (pure): one event and its arguments in, a ``Request`` or a ``ClientError`` out."""
from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from engine.protocol import MAX_SYMBOL_LEN, MAX_TIME_S, ErrorCode

RATE_LIMITED = "rate_limited"
SLOW_CONSUMER = "slow_consumer"  # sent to a client just before it is disconnected over its budget
MAX_TIMEFRAME_LEN = 8
MAX_EVENT_NAME_LEN = 64
DEFAULT_COUNT = 100
# Ticks in one get_ticks reply: its event and its acknowledgement both carry them (about 150
# bytes a tick as JSON), and all of it counts in the client's CLIENT_BUFFER_HARD_BYTES budget.
MAX_BRIDGE_TICKS = 5_000
# Each event's date range fields (both inclusive, both or neither) and their largest value.
RANGES: dict[str, tuple[str, str, int, str]] = {
    "get_candles": ("from", "to", MAX_TIME_S, "epoch seconds, bar open times"),
    "get_ticks": ("from_msc", "to_msc", MAX_TIME_S * 1000, "epoch ms"),
}

# Event -> the fields its payload may carry (required ones first in REQUIRED).
FIELDS: dict[str, frozenset[str]] = {
    "subscribe": frozenset({"symbol", "timeframe"}),
    "unsubscribe": frozenset({"symbol", "timeframe"}),
    "get_symbols": frozenset(),
    "get_candles": frozenset({"symbol", "timeframe", "count", "from", "to"}),
    "get_ticks": frozenset({"symbol", "from_msc", "to_msc", "count"}),
    "get_indicators": frozenset({"symbol", "timeframe", "count"}),
    "get_order_book": frozenset({"symbol"}),
    "get_account_info": frozenset(),
    "ping": frozenset(),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "subscribe": ("symbol",),
    "unsubscribe": ("symbol",),
    "get_candles": ("symbol", "timeframe"),
    "get_ticks": ("symbol", "from_msc", "to_msc"),
    "get_indicators": ("symbol", "timeframe"),
    "get_order_book": ("symbol",),
}
EVENTS = tuple(FIELDS)


class ClientError(Exception):
    """A request refused with ``code``; sent to its client as ``error {code, message, event}``."""

    def __init__(self, code: str, message: str, event: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.event = event

    def payload(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "event": self.event}


@dataclass(frozen=True, slots=True)
class Request:
    event: str
    symbol: str | None = None
    timeframe: str | None = None
    count: int = DEFAULT_COUNT
    span: tuple[int, int] | None = None  # a date range, in RANGES' units


def event_name(event: object) -> str:
    """The event name as it may be echoed back in an error (bounded, printable)."""
    text = event if isinstance(event, str) else repr(event)
    text = text[:MAX_EVENT_NAME_LEN]
    return text if text.isprintable() else text.encode("unicode_escape").decode()[:MAX_EVENT_NAME_LEN]


def parse_request(
    event: object,
    args: tuple[Any, ...],
    symbols: Container[str] | None,
    timeframes: Container[str],
    max_candles: int,
) -> Request:
    """Check one client event; ``symbols`` is ``None`` while the engine's list is not known."""
    name = event_name(event)
    if not isinstance(event, str) or event not in FIELDS:
        raise ClientError(ErrorCode.BAD_REQUEST, f"unknown event {name!r}; valid: {', '.join(EVENTS)}", name)
    if len(args) > 1:
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event} takes at most one argument, got {len(args)}", event)
    data = args[0] if args else None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event} payload must be an object, got {_kind(data)}", event)
    allowed = FIELDS[event]
    extra = [k for k in data if k not in allowed]
    if extra:
        shown = ", ".join(repr(event_name(k)) for k in extra[:4])
        raise ClientError(ErrorCode.BAD_REQUEST,
                          f"{event}: unexpected field(s) {shown}; allowed: {', '.join(sorted(allowed)) or 'none'}", event)
    for key in REQUIRED.get(event, ()):
        if data.get(key) is None:
            raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: '{key}' is required", event)
    symbol = _symbol(event, data.get("symbol"), symbols) if "symbol" in allowed else None
    timeframe = _timeframe(event, data.get("timeframe"), timeframes) if "timeframe" in allowed else None
    span = _span(event, data) if event in RANGES else None
    if span is not None and event == "get_candles" and "count" in data:
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: give either 'count' or 'from' and 'to', not both", event)
    limit, limit_name = (MAX_BRIDGE_TICKS, "MAX_BRIDGE_TICKS") if event == "get_ticks" else \
        (max_candles, "MAX_CANDLES")
    default = limit if event == "get_ticks" else DEFAULT_COUNT
    count = _count(event, data.get("count", default), limit, limit_name) if "count" in allowed else default
    return Request(event, symbol, timeframe, count, span)


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


def _symbol(event: str, value: object, symbols: Container[str] | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_SYMBOL_LEN:
        raise ClientError(ErrorCode.BAD_REQUEST,
                          f"{event}: 'symbol' must be a string of 1..{MAX_SYMBOL_LEN} characters", event)
    if symbols is None:
        raise ClientError(ErrorCode.UNAVAILABLE, f"{event}: the symbol list is not available yet (engine down?)", event)
    if value not in symbols:
        raise ClientError(ErrorCode.UNKNOWN_SYMBOL, f"{event}: unknown symbol {event_name(value)!r}", event)
    return value


def _timeframe(event: str, value: object, timeframes: Container[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TIMEFRAME_LEN:
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: 'timeframe' must be a string such as 'M1'", event)
    if value not in timeframes:
        raise ClientError(ErrorCode.UNKNOWN_TIMEFRAME, f"{event}: unknown timeframe {event_name(value)!r}", event)
    return value


def _count(event: str, value: object, limit: int, limit_name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: 'count' must be an integer", event)
    if value < 1:
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: 'count' must be at least 1, got {value}", event)
    if value > limit:
        raise ClientError(ErrorCode.TOO_MANY, f"{event}: 'count' {value} exceeds {limit_name}={limit}", event)
    return value


def _span(event: str, data: dict[str, Any]) -> tuple[int, int] | None:
    """The event's date range, or None if it names neither end."""
    first, last, limit, unit = RANGES[event]
    if data.get(first) is None and data.get(last) is None:
        return None
    ends = []
    for key in (first, last):
        value = data.get(key)
        if value is None:
            raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: '{first}' and '{last}' go together", event)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise ClientError(ErrorCode.BAD_REQUEST,
                              f"{event}: '{key}' must be an integer from 0 to {limit} ({unit})", event)
        ends.append(value)
    if ends[0] > ends[1]:
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: '{first}' ({ends[0]}) is after '{last}' ({ends[1]})", event)
    return ends[0], ends[1]
