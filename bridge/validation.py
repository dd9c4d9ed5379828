"""Client request validation (pure): an event's declared fields and its arguments in, a ``Request``
or a ``ClientError`` out.

An event's payload schema is a tuple of field kinds (``Symbol``, ``Timeframe``, ``Count``,
``Span``, ``Text``), declared with the event in ``bridge.api``. Each kind names the payload keys
it reads, whether they are required, and checks them; ``parse_request`` refuses anything else.
"""
from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.protocol import MAX_SYMBOL_LEN, ErrorCode

RATE_LIMITED = "rate_limited"
SLOW_CONSUMER = "slow_consumer"  # sent to a client just before it is disconnected over its budget
MAX_TIMEFRAME_LEN = 8
MAX_EVENT_NAME_LEN = 64
DEFAULT_COUNT = 100
# Ticks in one get_ticks reply: its event and its acknowledgement both carry them (about 150
# bytes a tick as JSON), and all of it counts in the client's CLIENT_BUFFER_HARD_BYTES budget.
MAX_BRIDGE_TICKS = 5_000


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
class Context:
    """What a request is checked against: the symbols served (``None`` while the engine's list is
    not known), the timeframes served and the bridge's MAX_CANDLES."""

    symbols: Container[str] | None
    timeframes: Container[str]
    max_candles: int


class Field(Protocol):
    """One field kind of a payload schema: the ``keys`` it reads, the value it gives under ``name``."""

    @property
    def name(self) -> str: ...

    @property
    def required(self) -> bool: ...

    @property
    def keys(self) -> tuple[str, ...]: ...

    def parse(self, event: str, data: Mapping[str, Any], ctx: Context) -> Any:
        """The checked value (``None`` when absent and optional); ``ClientError`` when invalid."""


@dataclass(frozen=True, slots=True)
class Request:
    """A valid request: its event and a value for each declared field, by field name."""

    event: str
    values: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


@dataclass(frozen=True, slots=True)
class Symbol:
    """``symbol``: one the engine serves."""

    required: bool = False
    name = "symbol"
    keys = ("symbol",)

    def parse(self, event: str, data: Mapping[str, Any], ctx: Context) -> str | None:
        value = data.get("symbol")
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > MAX_SYMBOL_LEN:
            raise ClientError(ErrorCode.BAD_REQUEST,
                              f"{event}: 'symbol' must be a string of 1..{MAX_SYMBOL_LEN} characters", event)
        if ctx.symbols is None:
            raise ClientError(ErrorCode.UNAVAILABLE,
                              f"{event}: the symbol list is not available yet (engine down?)", event)
        if value not in ctx.symbols:
            raise ClientError(ErrorCode.UNKNOWN_SYMBOL, f"{event}: unknown symbol {event_name(value)!r}", event)
        return value


@dataclass(frozen=True, slots=True)
class Timeframe:
    """``timeframe``: one the bridge serves."""

    required: bool = False
    name = "timeframe"
    keys = ("timeframe",)

    def parse(self, event: str, data: Mapping[str, Any], ctx: Context) -> str | None:
        value = data.get("timeframe")
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > MAX_TIMEFRAME_LEN:
            raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: 'timeframe' must be a string such as 'M1'", event)
        if value not in ctx.timeframes:
            raise ClientError(ErrorCode.UNKNOWN_TIMEFRAME, f"{event}: unknown timeframe {event_name(value)!r}", event)
        return value


@dataclass(frozen=True, slots=True)
class Count:
    """``count``: 1 up to ``limit`` (``None``: the bridge's MAX_CANDLES), ``default`` when absent
    (``None``: the limit)."""

    limit: int | None = None
    limit_name: str = "MAX_CANDLES"
    default: int | None = DEFAULT_COUNT
    required = False
    name = "count"
    keys = ("count",)

    def parse(self, event: str, data: Mapping[str, Any], ctx: Context) -> int:
        limit = ctx.max_candles if self.limit is None else self.limit
        value = data.get("count", limit if self.default is None else self.default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: 'count' must be an integer", event)
        if value < 1:
            raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: 'count' must be at least 1, got {value}", event)
        if value > limit:
            raise ClientError(ErrorCode.TOO_MANY, f"{event}: 'count' {value} exceeds {self.limit_name}={limit}", event)
        return value


@dataclass(frozen=True, slots=True)
class Span:
    """A date range as ``(first, last)``, both inclusive, both or neither, each 0..``limit`` in
    ``unit``; ``instead_of`` names a field that may not come with it."""

    first: str
    last: str
    limit: int
    unit: str
    required: bool = False
    instead_of: str | None = None
    name = "span"

    @property
    def keys(self) -> tuple[str, ...]:
        return self.first, self.last

    def parse(self, event: str, data: Mapping[str, Any], ctx: Context) -> tuple[int, int] | None:
        first, last = self.first, self.last
        if data.get(first) is None and data.get(last) is None:
            return None
        ends = []
        for key in (first, last):
            value = data.get(key)
            if value is None:
                raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: '{first}' and '{last}' go together", event)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= self.limit:
                raise ClientError(ErrorCode.BAD_REQUEST,
                                  f"{event}: '{key}' must be an integer from 0 to {self.limit} ({self.unit})", event)
            ends.append(value)
        if ends[0] > ends[1]:
            raise ClientError(ErrorCode.BAD_REQUEST,
                              f"{event}: '{first}' ({ends[0]}) is after '{last}' ({ends[1]})", event)
        if self.instead_of is not None and self.instead_of in data:
            raise ClientError(ErrorCode.BAD_REQUEST,
                              f"{event}: give either '{self.instead_of}' or '{first}' and '{last}', not both", event)
        return ends[0], ends[1]


@dataclass(frozen=True, slots=True)
class Text:
    """A string under ``key``, 1..``max_len`` characters, its value what ``convert`` makes of it
    (the string itself without one); a ``ValueError`` from ``convert`` refuses it with its message."""

    key: str
    max_len: int
    convert: Callable[[str], Any] | None = None
    required: bool = False

    @property
    def name(self) -> str:
        return self.key

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def parse(self, event: str, data: Mapping[str, Any], ctx: Context) -> Any:
        value = data.get(self.key)
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > self.max_len:
            raise ClientError(ErrorCode.BAD_REQUEST,
                              f"{event}: '{self.key}' must be a string of 1..{self.max_len} characters", event)
        if self.convert is None:
            return value
        try:
            return self.convert(value)
        except ValueError as exc:
            raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: '{self.key}' {exc}", event) from None


def event_name(event: object) -> str:
    """The event name as it may be echoed back in an error (bounded, printable)."""
    text = event if isinstance(event, str) else repr(event)
    text = text[:MAX_EVENT_NAME_LEN]
    return text if text.isprintable() else text.encode("unicode_escape").decode()[:MAX_EVENT_NAME_LEN]


def unknown_event(event: object, known: Iterable[str]) -> ClientError:
    """The error for an event no declaration names."""
    name = event_name(event)
    return ClientError(ErrorCode.BAD_REQUEST, f"unknown event {name!r}; valid: {', '.join(known)}", name)


def parse_request(event: str, fields: Sequence[Field], args: tuple[Any, ...], ctx: Context) -> Request:
    """Check one client event's arguments against its declared ``fields``: at most one argument,
    an object (or nothing), only the declared keys, the required ones present, each valid."""
    if len(args) > 1:
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event} takes at most one argument, got {len(args)}", event)
    data = args[0] if args else None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event} payload must be an object, got {_kind(data)}", event)
    allowed = {key for field in fields for key in field.keys}
    extra = [k for k in data if k not in allowed]
    if extra:
        shown = ", ".join(repr(event_name(k)) for k in extra[:4])
        listed = ", ".join(sorted(allowed)) or "none"
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: unexpected field(s) {shown}; allowed: {listed}", event)
    for field in fields:
        for key in field.keys if field.required else ():
            if data.get(key) is None:
                raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: '{key}' is required", event)
    return Request(event, {field.name: field.parse(event, data, ctx) for field in fields})


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)
