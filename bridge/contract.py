"""The written contract: the bus, the RPC and the Socket.IO API as one AsyncAPI 3 document.

Generated from the declarations, never written by hand: bus payloads from ``bridge.payloads``'
SHAPES (the checks the bridge applies), RPC replies from the same shapes and ``engine.models``,
client events from ``bridge.api``'s EVENTS. ``python -m bridge.contract`` writes
docs/asyncapi.yaml; a test checks the committed file equals a fresh one and validates real
messages against it. It lives beside the bridge's declarations because it reads them (the
engine never imports the bridge).
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.api import EVENTS
from bridge.payloads import INDICATOR_VALUES, SHAPES, Record
from bridge.validation import Count, Span, Symbol, Text, Timeframe
from engine.models import SymbolInfo
from engine.protocol import (
    MAX_REQUEST_BYTES,
    MAX_SYMBOL_LEN,
    MAX_TICKS,
    MAX_TIME_S,
    REPLAY_ACTIONS,
    RPC_OPS,
    ErrorCode,
)
from engine.rpc import MAX_PREFIX_LEN, MAX_SEEK_S
from engine.timeframes import TIMEFRAMES

PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
REF = "#/components/schemas/"
STAMP = ("seq", "epoch")

# Bus channels: the topic kind, its address with the names the topic gives, and what it is.
CHANNELS = {
    "tick": ("tick:{symbol}:", "Every tick of a symbol (MT5 tick fields)."),
    "candle": ("candle:{symbol}:{timeframe}:", "The forming bar, throttled, and each bar once as it closes."),
    "ind": ("ind:{symbol}:{timeframe}:", "Indicator values from the indicator workers, one per candle message."),
    "book": ("book:{symbol}:", "The order book, [price, volume] levels best first."),
    "account": ("account:", "MT5 account_info, on change."),
    "summary": ("summary:", "Last, change and range of the day of every symbol."),
    "position": ("position:{symbol}:", "An open position that changed (state open, modified or closed)."),
    "order": ("order:{symbol}:", "A pending order that changed (state open, modified or closed)."),
    "deal": ("deal:{symbol}:", "A deal, once; balance operations (symbol \"\") on deal:-:."),
    "health": ("health:{component}:", "A component's status and figures (engine, service, indicators:N)."),
}
PARAMETERS = {
    "symbol": "A symbol name (no ':'); '-' on deal: for deals without a symbol.",
    "timeframe": f"One of {', '.join(TIMEFRAMES)} that the engine serves.",
    "component": "engine, service, indicators:N, or another publisher's component (may hold ':').",
}

INTEGER = {"type": "integer"}
STRING = {"type": "string"}
SYMBOL_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_SYMBOL_LEN}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _whole(limit: int | float, description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": limit, "description": description}


def _array(items: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": dict(items)}


def _object(properties: Mapping[str, Any], required: tuple[str, ...] = (), open_: bool = False) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required),
            "additionalProperties": open_}


def stamped(record: Record, stamp: str) -> dict[str, Any]:
    """A payload's schema with its ``seq``/``epoch`` ``required`` (the bus), ``optional`` (RPC
    replies: a stored tick has them, a bar from history does not) or ``absent`` (Socket.IO)."""
    schema = record.schema()
    if stamp != "required":
        schema["required"] = [key for key in schema["required"] if key not in STAMP]
    if stamp == "absent":
        schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in STAMP}
        schema["maxProperties"] -= len(STAMP)
    return schema


def _symbol_info() -> dict[str, Any]:
    kinds = {str: STRING, int: INTEGER, float: {"type": "number"}, "str": STRING, "int": INTEGER,
             "float": {"type": "number"}}
    fields = dataclasses.fields(SymbolInfo)
    return _object({f.name: dict(kinds[f.type]) for f in fields}, tuple(f.name for f in fields))


# RPC requests: each op's own fields (``op`` and ``id`` are every request's). Unknown fields are
# ignored, so a request's map is open.
COUNT_TICKS = {"type": "integer", "minimum": 1, "maximum": MAX_TICKS}
COUNT_CANDLES = {"type": "integer", "minimum": 1, "description": "1..MAX_CANDLES (engine setting), default 100"}
RPC_REQUESTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "symbols": ({}, ()),
    "tick": ({"symbol": SYMBOL_NAME}, ("symbol",)),
    "candles": ({"symbol": SYMBOL_NAME, "timeframe": STRING, "count": COUNT_CANDLES,
                 "from": _whole(MAX_TIME_S, "epoch s, bar open time, inclusive (with to, instead of count)"),
                 "to": _whole(MAX_TIME_S, "epoch s, bar open time, inclusive")}, ("symbol", "timeframe")),
    "ticks": ({"symbol": SYMBOL_NAME, "count": COUNT_TICKS,
               "from_msc": _whole(MAX_TIME_S * 1000, "epoch ms, inclusive (with to_msc)"),
               "to_msc": _whole(MAX_TIME_S * 1000, "epoch ms, inclusive"),
               "after_seq": _whole(2**63 - 1, "gap repair: the ticks after this seq (with epoch)"),
               "epoch": _whole(2**63 - 1, "the epoch of after_seq")}, ("symbol",)),
    "book": ({"symbol": SYMBOL_NAME}, ("symbol",)),
    "account": ({}, ()),
    "positions": ({"symbol": SYMBOL_NAME}, ()),
    "orders": ({"symbol": SYMBOL_NAME}, ()),
    "deals": ({"from": _whole(MAX_TIME_S, "epoch s of the market clock, inclusive"),
               "to": _whole(MAX_TIME_S, "epoch s of the market clock, inclusive"), "symbol": SYMBOL_NAME},
              ("from", "to")),
    "snapshot": ({"prefix": {"type": "string", "maxLength": MAX_PREFIX_LEN}}, ()),
    "health": ({}, ()),
    "replay": ({"action": {"enum": list(REPLAY_ACTIONS)},
                "time": {"type": "number", "minimum": 0, "maximum": MAX_SEEK_S,
                         "description": "seek: epoch s in the file's clock"}}, ("action",)),
}
REPLAY_STATUS = _object({"state": {"enum": ["ready", "playing", "paused", "finished"]}, "position": INTEGER,
                         "total": INTEGER, "speed": {"type": "number"}, "source_file": STRING,
                         "time_msc": {"type": ["integer", "null"]}},
                        ("state", "position", "total", "speed", "source_file", "time_msc"))
RPC_DATA: dict[str, dict[str, Any]] = {
    "symbols": _array(_ref("symbol_info")),
    "tick": _ref("tick_data"),
    "candles": _array(_ref("candle_data")),
    "ticks": _array(_ref("tick_data")),
    "book": _ref("book_data"),
    "account": _ref("account_data"),
    "positions": _array(_ref("position_data")),
    "orders": _array(_ref("order_data")),
    "deals": _array(_ref("deal_data")),
    "snapshot": _array({"type": "array", "prefixItems": [STRING, {"anyOf": [_ref(f"bus_{k}") for k in CHANNELS]}],
                        "items": False, "minItems": 2}),
    "health": _ref("health_data"),
    "replay": REPLAY_STATUS,
}


def rpc_request(op: str) -> dict[str, Any]:
    fields, required = RPC_REQUESTS[op]
    schema = _object({"op": {"const": op}, "id": {"type": ["integer", "string"]}, **fields}, ("op", *required),
                     open_=True)
    schema["description"] = f"At most {MAX_REQUEST_BYTES} bytes of msgpack; unknown fields are ignored."
    return schema


def rpc_reply(op: str) -> dict[str, Any]:
    ok = _object({"ok": {"const": True}, "data": RPC_DATA[op], "id": {"type": ["integer", "string"]}}, ("ok", "data"))
    return {"oneOf": [ok, _ref("rpc_error")]}


RPC_ERROR = _object({
    "ok": {"const": False},
    "error": _object({"code": {"enum": [v for k, v in vars(ErrorCode).items() if k.isupper()]},
                      "message": STRING}, ("code", "message")),
    "id": {"type": ["integer", "string"], "description": "the request's id, whenever it could be read"},
}, ("ok", "error"))


# Socket.IO: what the bridge sends. Bus payloads go without seq/epoch.
def _client_event(fields: tuple[Any, ...]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in fields:
        if isinstance(field, Symbol):
            properties["symbol"] = SYMBOL_NAME
        elif isinstance(field, Timeframe):
            properties["timeframe"] = STRING
        elif isinstance(field, Count):
            properties["count"] = {"type": "integer", "minimum": 1, **({"maximum": field.limit} if field.limit else {})}
        elif isinstance(field, Span):
            properties.update({key: _whole(field.limit, field.unit) for key in field.keys})
        elif isinstance(field, Text):
            properties[field.key] = {"type": "string", "minLength": 1, "maxLength": field.max_len}
        else:
            raise TypeError(f"no JSON Schema for the client event field {field!r}")
        required += field.keys if field.required else []
    return {**_object(properties, tuple(required)), "description": "a missing field may also be null"}


NULLABLE_SYMBOL = {"type": ["string", "null"]}
# The default INDICATORS set's keys are listed; a configured set (or get_indicators' own) has
# other keys, each a number or nil.
INDICATORS = {**_object({"symbol": STRING, "timeframe": STRING, "time": INTEGER, "closed": {"type": "boolean"},
                         **{name: {"type": ["number", "null"]} for name in INDICATOR_VALUES}},
                        ("symbol", "timeframe", "time", "closed")),
              "additionalProperties": {"type": ["number", "null"]}}
INSTANCE = _object({"name": STRING, "kind": STRING, "params": _array({"type": "number"}), "keys": _array(STRING)},
                   ("name", "kind", "params", "keys"))
SERVER_EVENTS: dict[str, tuple[dict[str, Any], str]] = {
    "connected": (_object({"sid": STRING, "server_time": INTEGER, "version": STRING},
                          ("sid", "server_time", "version")), "the new client, before any other event"),
    "subscribed": (_object({"symbol": STRING, "timeframe": NULLABLE_SYMBOL}, ("symbol", "timeframe")),
                   "reply to subscribe"),
    "unsubscribed": (_object({"symbol": STRING, "timeframe": NULLABLE_SYMBOL}, ("symbol", "timeframe")),
                     "reply to unsubscribe"),
    "symbols": (_array(_ref("symbol_info")), "reply to get_symbols"),
    "tick": (_ref("tick_event"), "subscribers of the symbol, the latest per flush"),
    "ticks": (_object({"symbol": STRING, "from_msc": INTEGER, "to_msc": INTEGER, "ticks": _array(_ref("tick_data"))},
                      ("symbol", "from_msc", "to_msc", "ticks")), "reply to get_ticks"),
    "order_book": (_ref("book_event"), "subscribers of the symbol; reply to get_order_book"),
    "candles": (_object({"symbol": STRING, "timeframe": STRING, "from": INTEGER, "to": INTEGER,
                         "candles": _array(_ref("candle_event"))}, ("symbol", "timeframe", "candles")),
                "subscribers of the (symbol, timeframe); reply to get_candles (from/to with a range)"),
    "indicators": (INDICATORS, "subscribers of the (symbol, timeframe)"),
    "indicators_history": (_object({"symbol": STRING, "timeframe": STRING, "indicators": _array(INSTANCE),
                                    "values": _array(INDICATORS)},
                                   ("symbol", "timeframe", "indicators", "values")), "reply to get_indicators"),
    "account_info": (_ref("account_event"), "reply to get_account_info"),
    "account_update": (_ref("account_event"), "every client, when the account changes"),
    "positions": (_object({"symbol": NULLABLE_SYMBOL, "positions": _array(_ref("position_event"))},
                          ("symbol", "positions")), "reply to get_positions"),
    "orders": (_object({"symbol": NULLABLE_SYMBOL, "orders": _array(_ref("order_event"))}, ("symbol", "orders")),
               "reply to get_orders"),
    "deals": (_object({"from": INTEGER, "to": INTEGER, "symbol": NULLABLE_SYMBOL, "deals": _array(_ref("deal_data"))},
                      ("from", "to", "symbol", "deals")), "reply to get_deals"),
    "position_update": (_ref("position_event"), "every client, when an open position changes"),
    "order_update": (_ref("order_event"), "every client, when a pending order changes"),
    "deal": (_ref("deal_event"), "every client, once per deal"),
    "market_summary": (_ref("summary_event"), "every client, every 2 s"),
    "health": (_object({"status": {"enum": ["ok", "degraded", "down"]}, "bridge": STRING,
                        "engine": _object({"status": STRING, "health": {"type": "object"}}, ("status",)),
                        "workers": {"type": "object", "additionalProperties": STRING},
                        "server_time": INTEGER, "version": STRING, "stats": {"type": "object"}},
                       ("status", "bridge", "engine", "workers", "server_time", "version", "stats"), open_=True),
               "every client when the bridge's status changes; reply to ping"),
    "error": (_object({"code": STRING, "message": STRING, "event": STRING}, ("code", "message", "event")),
              "the sender only, for a refused request"),
}
# Socket.IO events from bus kinds: the payload as the bus has it, without seq/epoch.
EVENT_KINDS = {"tick": "tick", "book": "book", "candle": "candle", "account": "account", "summary": "summary",
               "position": "position", "order": "order", "deal": "deal"}


def schemas() -> dict[str, Any]:
    """Every named schema: the bus payloads (``bus_*``), the same in RPC replies (``*_data``)
    and Socket.IO events (``*_event``), and the RPC's own."""
    out: dict[str, Any] = {"symbol_info": _symbol_info(), "rpc_error": RPC_ERROR}
    for kind in CHANNELS:
        out[f"bus_{kind}"] = stamped(SHAPES[kind].payload, "required")
        out[f"{kind}_data"] = stamped(SHAPES[kind].payload, "optional")
    for kind in EVENT_KINDS.values():
        out[f"{kind}_event"] = stamped(SHAPES[kind].payload, "absent")
    return out


def document() -> dict[str, Any]:
    """The AsyncAPI 3 document, as a plain mapping."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for kind, (address, description) in CHANNELS.items():
        channels[kind] = {
            "address": address, "description": description,
            "parameters": {name: {"description": PARAMETERS[name]} for name in PARAMETERS if f"{{{name}}}" in address},
            "messages": {kind: {"name": kind, "contentType": "application/msgpack", "payload": _ref(f"bus_{kind}")}},
        }
        operations[f"receive_{kind}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{kind}"}}
    channels["rpc"] = {"address": None, "description": "ROUTER request/reply: one msgpack map each way.",
                       "messages": {}}
    for op in RPC_OPS:
        messages = channels["rpc"]["messages"]
        messages[f"{op}_request"] = {"name": f"{op}_request", "contentType": "application/msgpack",
                                     "payload": rpc_request(op)}
        messages[f"{op}_reply"] = {"name": f"{op}_reply", "contentType": "application/msgpack",
                                   "payload": rpc_reply(op)}
        operations[f"rpc_{op}"] = {
            "action": "send", "channel": {"$ref": "#/channels/rpc"},
            "messages": [{"$ref": f"#/channels/rpc/messages/{op}_request"}],
            "reply": {"channel": {"$ref": "#/channels/rpc"},
                      "messages": [{"$ref": f"#/channels/rpc/messages/{op}_reply"}]}}
    socket_messages: dict[str, Any] = {}
    for event in EVENTS:
        socket_messages[f"client_{event.name}"] = {"name": event.name, "contentType": "application/json",
                                                   "payload": _client_event(event.fields)}
        operations[f"client_{event.name}"] = {
            "action": "send", "channel": {"$ref": "#/channels/socketio"},
            "messages": [{"$ref": f"#/channels/socketio/messages/client_{event.name}"}],
            "reply": {"channel": {"$ref": "#/channels/socketio"},
                      "messages": [{"$ref": f"#/channels/socketio/messages/server_{event.reply}"},
                                   {"$ref": "#/channels/socketio/messages/server_error"}]}}
    for name, (payload, description) in SERVER_EVENTS.items():
        socket_messages[f"server_{name}"] = {"name": name, "contentType": "application/json",
                                             "description": description, "payload": payload}
        operations[f"server_{name}"] = {"action": "receive", "channel": {"$ref": "#/channels/socketio"},
                                        "messages": [{"$ref": f"#/channels/socketio/messages/server_{name}"}]}
    channels["socketio"] = {"address": "/", "description": "The bridge's default Socket.IO namespace (protocol 5).",
                            "messages": socket_messages}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "MT5 market data service", "version": "1",
                 "description": "Generated by `python -m bridge.contract` from the declarations; README.md explains "
                                "the rules (Clone pattern, seq/epoch, limits). Integers are msgpack ints in their "
                                "smallest form, prices float64."},
        "servers": {
            "bus": {"host": "127.0.0.1:5555", "protocol": "zmq", "description": "XPUB: [topic, msgpack payload]"},
            "rpc": {"host": "127.0.0.1:5556", "protocol": "zmq", "description": "ROUTER: REQ or DEALER clients"},
            "bridge": {"host": "127.0.0.1:8765", "protocol": "ws", "description": "Socket.IO 5 (socket.io-client 4)"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas()},
    }


def render() -> str:
    import yaml  # the test extra's: only generating and checking the document need it

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # each schema written out where it is used
            return True

    header = "# Generated by `python -m bridge.contract` from the declarations: do not edit.\n"
    return header + yaml.dump(document(), Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)


def validator(doc: Mapping[str, Any], schema: Mapping[str, Any]):
    """A JSON-Schema validator of ``schema`` whose ``$ref``s resolve in ``doc``."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator({**schema, "components": doc["components"]})


def main() -> None:
    PATH.parent.mkdir(exist_ok=True)
    PATH.write_text(render())
    print(f"wrote {PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
