"""The shape of every bus payload the bridge uses, declared once per topic kind (pure).

Anything that connects to the bus' publisher side may publish, so a payload is checked before
it reaches a cache, a room or ``/metrics``: numbers are finite numbers (never a bool, NaN or
infinity), integers are integers, strings are short, lists and maps are bounded and their
elements have the declared shape, and the names in the topic (``symbol``, ``timeframe``,
``component``) are the payload's own. ``check`` says why a message is refused (``Malformed``);
``SHAPES`` is the table: adding a topic kind or a field is one declaration there. The ``ind:``
shape's value keys are the configured indicator set's (``shapes_for``); ``SHAPES`` has the default
set's. Each check also says what it accepts as JSON Schema, from which ``bridge.contract`` writes
docs/asyncapi.yaml.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.activity import DEALS, ORDERS, POSITIONS, ActivityKind, deal_topic_part
from engine.protocol import (ACCOUNT, ACTIVITY_STATES, BOOK, CANDLE, HEALTH, HEALTH_STATUSES, INDICATOR,
                             MAX_SYMBOL_LEN, SUMMARY, TICK, ProtocolError, validate_symbol)
from engine.timeframes import TIMEFRAMES
from indicators.spec import DEFAULT_SET, Instance

MAX_TEXT = 256  # a name, a currency, a status detail
MAX_DETAIL = 4096  # the engine's source_detail: an error message
MAX_BOOK_LEVELS = 256  # per side
MAX_SUMMARY_SYMBOLS = 10_000
MAX_COMPONENT_LEN = 64
MAX_FIELDS = 64  # keys of a map whose keys are not all declared (account, health)
SHOWN_CHARS = 40  # of a refused value, in the reason


class Malformed(ValueError):
    """A bus message whose topic or payload does not have its declared shape."""


@dataclass(frozen=True, slots=True)
class Check:
    """A test of one value, what it wants (for the reason a message is refused) and the same
    as JSON Schema (for the written contract)."""

    wants: str
    test: Callable[[Any], bool]
    schema: Mapping[str, Any]


def _is_number(value: Any) -> bool:
    # ``type`` rather than ``isinstance``: a bool is an int, and is not a number here.
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _is_symbol(value: Any) -> bool:
    try:
        validate_symbol(value)
    except ProtocolError:
        return False
    return True


def _is_name(value: Any) -> bool:
    return (type(value) is str and 0 < len(value) <= MAX_COMPONENT_LEN and value.isprintable()
            and value.strip() == value and not value.endswith(":"))


# Prices and amounts are float64 on the wire (engine.protocol); a whole number may still come
# as an integer from another publisher, which the bridge accepts.
NUMBER = Check("a finite number", _is_number, {"type": "number"})
INTEGER = Check("an integer", lambda v: type(v) is int, {"type": "integer"})
FLAG = Check("a bool", lambda v: type(v) is bool, {"type": "boolean"})
NIL = Check("nil", lambda v: v is None, {"type": "null"})
SYMBOL = Check(f"a symbol name (printable, no ':', at most {MAX_SYMBOL_LEN} characters)", _is_symbol,
               {"type": "string", "minLength": 1, "maxLength": MAX_SYMBOL_LEN, "pattern": "^[^:\\s](?:[^:]*[^:\\s])?$"})
TIMEFRAME = Check("a timeframe name", lambda v: type(v) is str and v in TIMEFRAMES, {"enum": list(TIMEFRAMES)})
COMPONENT = Check(f"a component name (printable, at most {MAX_COMPONENT_LEN} characters)", _is_name,
                  {"type": "string", "minLength": 1, "maxLength": MAX_COMPONENT_LEN})
STATUS = Check(f"one of {', '.join(HEALTH_STATUSES)}", lambda v: type(v) is str and v in HEALTH_STATUSES,
               {"enum": list(HEALTH_STATUSES)})


def text(max_len: int = MAX_TEXT) -> Check:
    return Check(f"a string of at most {max_len} characters", lambda v: type(v) is str and len(v) <= max_len,
                 {"type": "string", "maxLength": max_len})


def nullable(check: Check) -> Check:
    test = check.test
    return Check(f"{check.wants} or nil", lambda v: v is None or test(v), {"anyOf": [check.schema, NIL.schema]})


def either(*checks: Check, wants: str = "") -> Check:
    tests = [c.test for c in checks]
    return Check(wants or " or ".join(c.wants for c in checks), lambda v: any(test(v) for test in tests),
                 {"anyOf": [c.schema for c in checks]})


def list_of(item: Check, max_len: int) -> Check:
    test = item.test
    return Check(f"a list of at most {max_len} ({item.wants})",
                 lambda v: type(v) is list and len(v) <= max_len and all(map(test, v)),
                 {"type": "array", "items": item.schema, "maxItems": max_len})


def map_of(key: Check, value: Check, max_len: int) -> Check:
    key_test, value_test = key.test, value.test
    return Check(f"a map of at most {max_len} ({key.wants}: {value.wants})",
                 lambda v: type(v) is dict and len(v) <= max_len
                 and all(key_test(k) and value_test(x) for k, x in v.items()),
                 {"type": "object", "propertyNames": key.schema, "additionalProperties": value.schema,
                  "maxProperties": max_len})


class Record:
    """A map with declared keys: ``fields`` required, ``optional`` may be absent, and any other
    key (at most ``max_fields`` keys in all) only where ``extra`` says what its value may be."""

    def __init__(self, fields: Mapping[str, Check], optional: Mapping[str, Check] | None = None,
                 extra: Check | None = None, max_fields: int = MAX_FIELDS) -> None:
        self.fields = dict(fields)
        self.optional = dict(optional or {})
        self.extra = extra
        self.max_fields = max(max_fields, len(self.fields) + len(self.optional))
        # The hot path (every tick): one dict lookup and one test per key, no reason built.
        self._tests = {key: check.test for key, check in {**self.optional, **self.fields}.items()}
        self._required = self.fields.keys()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not this record, or ``None`` when it is."""
        if type(value) is not dict or len(value) > self.max_fields or not self._required <= value.keys():
            return self._reason(value)
        tests, extra = self._tests, self.extra
        for key, item in value.items():
            test = tests.get(key)
            if test is None:
                if extra is None or type(key) is not str or len(key) > MAX_TEXT or not extra.test(item):
                    return self._reason(value)
            elif not test(item):
                return self._reason(value)
        return None

    def _reason(self, value: Any) -> str:
        if type(value) is not dict:
            return f"{_shown(value)} is not a map"
        if len(value) > self.max_fields:
            return f"{len(value)} keys (at most {self.max_fields})"
        for key in self.fields:
            if key not in value:
                return f"no {key!r}"
        for key, item in value.items():
            check = self.fields.get(key) or self.optional.get(key) if type(key) is str else None
            if check is None:
                check = self.extra if type(key) is str and len(key) <= MAX_TEXT else None
                if check is None:
                    return f"unexpected key {_shown(key)}"
            if not check.test(item):
                return f"{_shown(key)} is {_shown(item)}, not {check.wants}"
        raise AssertionError("_reason called for a value of the record's shape")

    def check(self) -> Check:
        """This record as a ``Check`` for a nested value."""
        return Check("a map of " + ", ".join(self.fields), lambda v: self.problem(v) is None, self.schema())

    def schema(self) -> dict[str, Any]:
        """This record as JSON Schema: every declared key, the required ones, and other keys
        only as ``extra`` allows (none where the record is fixed)."""
        return {"type": "object",
                "properties": {key: dict(check.schema) for key, check in {**self.fields, **self.optional}.items()},
                "required": list(self.fields),
                "additionalProperties": False if self.extra is None else dict(self.extra.schema),
                "maxProperties": self.max_fields}


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + "..."


@dataclass(frozen=True, slots=True)
class TopicShape:
    """A topic kind: the payload fields its topic names, in topic order, and its payload.

    ``names_of`` gives the topic's names from a payload where they are not its fields' values
    as they are (a deal without a symbol is on ``deal:-:``). ``served_only``: a message for a
    symbol the engine does not serve is dropped (the account may trade any symbol: its
    activity is not)."""

    parts: tuple[str, ...]
    payload: Record
    names_of: Callable[[dict[str, Any]], tuple[str, ...]] | None = None
    served_only: bool = True


STAMP = {"seq": INTEGER, "epoch": INTEGER}
SCALAR = either(NUMBER, FLAG, text(), NIL,
                wants=f"a scalar (a finite number, a bool, a string of at most {MAX_TEXT} characters or nil)")
# Health figures the bridge does not know: scalars, or a small flat list or map of short ones
# (the engine's health goes into /health whole: at most ~70 KB, whatever it holds).
MAX_FIGURE_ITEMS, MAX_FIGURE_TEXT = 16, 64
_ITEM = either(NUMBER, FLAG, text(MAX_FIGURE_TEXT), NIL)
FIGURE = either(SCALAR, list_of(_ITEM, MAX_FIGURE_ITEMS), map_of(text(MAX_FIGURE_TEXT), _ITEM, MAX_FIGURE_ITEMS),
                wants=f"a scalar, or a list or map of at most {MAX_FIGURE_ITEMS} short scalars")
ACTIVITY_STATE = Check(f"one of {', '.join(ACTIVITY_STATES)}", lambda v: type(v) is str and v in ACTIVITY_STATES,
                       {"enum": list(ACTIVITY_STATES)})
NO_SYMBOL = Check("an empty string", lambda v: v == "", {"const": ""})


def activity(kind: ActivityKind, symbol: Check, **more: Check) -> Record:
    """An account activity payload: the engine's declared fields (engine.activity), prices and
    amounts as numbers, the rest integers, ``symbol`` and ``comment`` strings."""
    def field_check(name: str) -> Check:
        if name == "symbol":
            return symbol
        if name == "comment":
            return text()
        return NUMBER if name in kind.floats else INTEGER
    return Record({**{name: field_check(name) for name in kind.fields}, **more, **STAMP})


LEVEL = Check("[price, volume]", lambda v: type(v) is list and len(v) == 2 and _is_number(v[0]) and _is_number(v[1]),
              {"type": "array", "prefixItems": [NUMBER.schema, NUMBER.schema], "items": False, "minItems": 2})


def indicator_values(instances: Iterable[Instance]) -> tuple[str, ...]:
    """The value keys of an ``ind:`` payload for an indicator set, in its order."""
    return tuple(key for instance in instances for key in instance.keys)


def indicator_shape(instances: Iterable[Instance]) -> TopicShape:
    """The worker's ind: payload (indicators.series.IndicatorSeries.on_candle) for an indicator
    set: a value per output key, nil while warming up."""
    return TopicShape(("symbol", "timeframe"), Record({
        "symbol": SYMBOL, "timeframe": TIMEFRAME, "time": INTEGER, "closed": FLAG,
        **{name: nullable(NUMBER) for name in indicator_values(instances)}, **STAMP}))


# The default set's keys (sma, ema, rsi, macd, macd_signal, macd_hist).
INDICATOR_VALUES = indicator_values(DEFAULT_SET)

SHAPES: dict[str, TopicShape] = {
    TICK: TopicShape(("symbol",), Record({
        "symbol": SYMBOL, "bid": NUMBER, "ask": NUMBER, "last": NUMBER, "volume": INTEGER,
        "time_msc": INTEGER, "flags": INTEGER, "volume_real": NUMBER, **STAMP})),
    CANDLE: TopicShape(("symbol", "timeframe"), Record({
        "symbol": SYMBOL, "timeframe": TIMEFRAME, "time": INTEGER, "open": NUMBER, "high": NUMBER,
        "low": NUMBER, "close": NUMBER, "tick_volume": INTEGER, "spread": INTEGER, "real_volume": INTEGER,
        "closed": FLAG, **STAMP})),
    INDICATOR: indicator_shape(DEFAULT_SET),
    BOOK: TopicShape(("symbol",), Record({
        "symbol": SYMBOL, "time_msc": INTEGER, "bids": list_of(LEVEL, MAX_BOOK_LEVELS),
        "asks": list_of(LEVEL, MAX_BOOK_LEVELS), **STAMP})),
    # MT5's account_info: the fields the dashboard shows are typed, the others are scalars.
    ACCOUNT: TopicShape((), Record(STAMP, optional={
        "login": INTEGER, "leverage": INTEGER, "currency_digits": INTEGER,
        **{name: NUMBER for name in ("balance", "credit", "profit", "equity", "margin", "margin_free",
                                     "margin_level")},
        **{name: text() for name in ("name", "server", "currency", "company")},
    }, extra=SCALAR)),
    SUMMARY: TopicShape((), Record({
        "time_msc": INTEGER, **STAMP,
        "symbols": map_of(SYMBOL, Record({
            **{name: NUMBER for name in ("last", "open", "high", "low", "prev_close", "change", "change_pct")},
            "day": INTEGER}).check(), MAX_SUMMARY_SYMBOLS)})),
    # The account's activity: any symbol it trades, not only the served ones.
    POSITIONS.name: TopicShape(("symbol",), activity(POSITIONS, SYMBOL, state=ACTIVITY_STATE), served_only=False),
    ORDERS.name: TopicShape(("symbol",), activity(ORDERS, SYMBOL, state=ACTIVITY_STATE), served_only=False),
    DEALS.name: TopicShape(("symbol",), activity(DEALS, either(SYMBOL, NO_SYMBOL)),
                           names_of=lambda deal: (deal_topic_part(deal),), served_only=False),
    # health:engine:, health:indicators:N:, health:service: and any other component: the
    # figures /metrics reads are typed, the others are FIGUREs.
    HEALTH: TopicShape(("component",), Record({"component": COMPONENT, "status": STATUS, "time_msc": INTEGER,
                                               **STAMP}, optional={
        **{name: NUMBER for name in ("ticks_per_s", "uptime_s", "updates_per_s", "lag_us_max")},
        **{name: INTEGER for name in ("ticks_total", "messages_total", "late_ticks", "rpc_requests",
                                      "rpc_errors", "symbols", "series", "updates_total", "malformed",
                                      "rewarms", "rewarms_limited", "epoch", "server_utc_offset_s",
                                      "forged_dropped", "foreign_topics",
                                      "rpc_requests_refused", "rpc_replies_dropped", "rpc_connections_closed",
                                      "bus_subscriptions_refused", "bus_subscription_bytes",
                                      "bus_connections_closed")},
        "source_connected": FLAG, "source_finished": FLAG, "account_activity": FLAG, "source": text(), "source_detail": text(MAX_DETAIL),
        "shard": text(),
        **{name: list_of(SYMBOL, MAX_SUMMARY_SYMBOLS) for name in ("missing_symbols", "stale_symbols")},
        "history_incomplete": list_of(text(), MAX_SUMMARY_SYMBOLS),
        "children": map_of(COMPONENT, Record({"running": FLAG, "pid": nullable(INTEGER),
                                              "restarts": INTEGER}).check(), MAX_FIELDS),
    }, extra=FIGURE)),
}


def shapes_for(instances: Iterable[Instance]) -> dict[str, TopicShape]:
    """``SHAPES`` with the ``ind:`` shape of a configured indicator set."""
    return {**SHAPES, INDICATOR: indicator_shape(instances)}


def check(topic: Any, data: Any, shapes: Mapping[str, TopicShape] = SHAPES) -> tuple[str, tuple[str, ...]]:
    """The kind of a bus message and the names its topic gives (``("EURUSD", "M5")``), or
    ``Malformed`` saying what in it does not have its declared shape (``shapes``: ``shapes_for``
    the configured indicator set)."""
    if type(topic) is not str or not topic.endswith(":"):
        raise Malformed(f"topic {_shown(topic)} is not colon-terminated")
    kind, _, rest = topic[:-1].partition(":")
    shape = shapes.get(kind)
    if shape is None:
        raise Malformed(f"topic kind {_shown(kind)} is not one the bridge reads")
    names = tuple(rest.split(":", len(shape.parts) - 1)) if shape.parts else ()
    if len(names) != len(shape.parts) or (not shape.parts and rest):
        raise Malformed(f"{kind}: topic {_shown(topic)} does not name {', '.join(shape.parts) or 'nothing'}")
    problem = shape.payload.problem(data)
    if problem is not None:
        raise Malformed(f"{kind}: {problem}")
    given = shape.names_of(data) if shape.names_of is not None else tuple(data[name] for name in shape.parts)
    for name, part, value in zip(shape.parts, names, given):
        if value != part:
            raise Malformed(f"{kind}: the topic's {name} is {_shown(part)}, the payload's gives {_shown(value)}")
    return kind, names
