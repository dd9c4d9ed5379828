"""The bridge's client API: every Socket.IO event a client may send, each declared once here with
its payload fields, its reply event and its handler.

A new event is one ``@EVENTS.event(name, *fields, reply=..., large=...)`` declaration on one
handler ``(bridge, sid, request) -> reply payload``; ``bridge.events.ClientNamespace`` does the
rate limiting, validation, reply and acknowledgement for all of them.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from bridge.encoded import encode_in_slices
from bridge.events import EventTable
from bridge.indicator_history import IndicatorRows
from bridge.subscriptions import RoomChange
from bridge.validation import (MAX_BRIDGE_TICKS, RATE_LIMITED, ClientError, Count, Request, Span, Symbol, Text,
                               Timeframe)
from engine.protocol import MAX_SYMBOL_LEN, MAX_TIME_S, ORDER, POSITION, ErrorCode, validate_symbol
from indicators.catalog import KINDS
from indicators.spec import DEFAULT_SET, PAYLOAD_KEYS, Instance, parse_indicators

if TYPE_CHECKING:
    from bridge.server import Bridge

STAMP_FIELDS = ("seq", "epoch")

EVENTS = EventTable()


def unstamped(data: dict[str, Any]) -> dict[str, Any]:
    """The payload without the bus's ``seq``/``epoch`` (the bridge handles gaps for its clients)."""
    return {k: v for k, v in data.items() if k not in STAMP_FIELDS}


@EVENTS.event("subscribe", Symbol(required=True), Timeframe(), reply="subscribed")
async def subscribe(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    client = bridge.clients.get(sid)
    if client is not None:  # else gone while the symbol list was fetched
        _move(bridge, sid, client.subscriptions.subscribe(req["symbol"], req["timeframe"]))
    return {"symbol": req["symbol"], "timeframe": req["timeframe"]}


@EVENTS.event("unsubscribe", Symbol(required=True), Timeframe(), reply="unsubscribed")
async def unsubscribe(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    client = bridge.clients.get(sid)
    if client is not None:
        _move(bridge, sid, client.subscriptions.unsubscribe(req["symbol"], req["timeframe"]))
    return {"symbol": req["symbol"], "timeframe": req["timeframe"]}


def _move(bridge: Bridge, sid: str, change: RoomChange) -> None:
    """Move the client into and out of exactly the rooms its subscriptions' change names."""
    bridge.fanout.leave(sid, list(change.leave))
    bridge.fanout.join(sid, list(change.enter))


@EVENTS.event("get_symbols", reply="symbols")
async def get_symbols(bridge: Bridge, sid: str, req: Request) -> list[dict[str, Any]]:
    return await bridge.symbol_list()


@EVENTS.event("get_candles", Symbol(required=True), Timeframe(required=True),
              Span("from", "to", MAX_TIME_S, "epoch seconds, bar open times", instead_of="count"), Count(),
              reply="candles", large=True)
async def get_candles(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    symbol, timeframe, span = req["symbol"], req["timeframe"], req["span"]
    if span is None:
        bars = await bridge.recent_candles(req.event, symbol, timeframe, req["count"])
        return {"symbol": symbol, "timeframe": timeframe, "candles": bars}
    # Ranges are not cached: each one asks the engine (memory, or the source's store).
    bars = await bridge.engine_call(req.event, "candles", symbol=symbol, timeframe=timeframe,
                                    **{"from": span[0], "to": span[1]})
    return {"symbol": symbol, "timeframe": timeframe, "from": span[0], "to": span[1], "candles": bars}


@EVENTS.event("get_ticks", Symbol(required=True), Span("from_msc", "to_msc", MAX_TIME_S * 1000, "epoch ms",
                                                        required=True),
              Count(MAX_BRIDGE_TICKS, "MAX_BRIDGE_TICKS", default=None), reply="ticks", large=True)
async def get_ticks(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    first, last = req["span"]
    ticks = await bridge.engine_call(req.event, "ticks", symbol=req["symbol"], from_msc=first, to_msc=last,
                                     count=req["count"])
    return {"symbol": req["symbol"], "from_msc": first, "to_msc": last, "ticks": ticks}


# A client's own indicator set: computed on demand over the cached history (in the event loop),
# so bounded: at most this many instances, periods at most the MAX_CANDLES bars it has, and its
# work and reply grow with its keys: it counts as one request per default set's worth of keys.
MAX_REQUEST_INDICATORS = 16
MAX_REQUEST_SPEC_CHARS = 1024
DEFAULT_KEYS = sum(len(instance.keys) for instance in DEFAULT_SET)
MAX_KEYS_PER_INSTANCE = max(len(kind.outputs) for kind in KINDS.values())
# Each reply row's own fields besides its keys (the payload's fields but the bus's stamps).
ROW_FIELDS = tuple(key for key in PAYLOAD_KEYS if key not in STAMP_FIELDS)

# All clients' own sets together also draw on one bridge-wide budget (INDICATOR_BUDGET_VALUES_PER_S),
# counted in reply values: what a set costs the event loop, measured on the development machine
# (2 shared cores, sets of 1 to 48 keys, 1 to 1000 bars): a value sent (a row's key or own field,
# built into the row and JSON-encoded once for the reply event and its acknowledgement) 0.8 us for
# a number when the machine is quiet, 1.2 us when it is busy (a null, still warming up, less); a
# value computed over the history (update_many) 20 to 30 ns, so 32 of them count as one sent; and
# the request's own work (the history's columns read, the indicators built) ~0.4 ms.
COMPUTED_PER_VALUE = 32
REQUEST_VALUES = 512
# A reply's values are built into rows and JSON-encoded this many at a time, the event loop let
# through between (a slice of numbers takes some 3 ms on a quiet machine; the whole reply of
# 48 keys x 1000 bars some 45 ms).
SLICE_VALUES = 2048


def indicator_work(keys: int, count: int, history: int) -> int:
    """What ``keys`` computed over ``history`` bars and ``count`` rows of them sent cost, in values."""
    return count * (keys + len(ROW_FIELDS)) + history * keys // COMPUTED_PER_VALUE + REQUEST_VALUES


def largest_indicator_work(max_candles: int) -> int:
    """The most one ``get_indicators`` may cost: the bridge-wide budget's burst, so that any fits."""
    return indicator_work(MAX_REQUEST_INDICATORS * MAX_KEYS_PER_INSTANCE, max_candles, max_candles)


def request_indicators(event: str, spec: str, max_candles: int) -> tuple[Instance, ...]:
    """A client's ``indicators`` spec, checked as ``INDICATORS`` is; ``bad_request`` naming the entry."""
    try:
        return parse_indicators(spec, MAX_REQUEST_INDICATORS, max_period=max_candles)
    except ValueError as exc:
        raise ClientError(ErrorCode.BAD_REQUEST, f"{event}: 'indicators' {exc}", event) from None


@EVENTS.event("get_indicators", Symbol(required=True), Timeframe(required=True), Count(),
              Text("indicators", MAX_REQUEST_SPEC_CHARS), reply="indicators_history", large=True)
async def get_indicators(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    """Values for the bars ``get_candles`` would return, computed over up to ``MAX_CANDLES`` bars
    of history so that the first of them are warmed up as the worker's are: the configured set,
    or the client's ``indicators`` spec. ``indicators`` in the reply names the instances and keys."""
    symbol, timeframe, spec = req["symbol"], req["timeframe"], req["indicators"]
    max_candles = bridge.config.max_candles
    if spec is None:
        instances = bridge.config.indicator_set
    else:
        instances = request_indicators(req.event, spec, max_candles)
        charge(bridge, sid, req.event, instances, req["count"])
    bars = await bridge.recent_candles(req.event, symbol, timeframe, max_candles)
    rows = IndicatorRows(symbol, timeframe, bars, req["count"], instances)  # computed; built and encoded in slices
    row = len(ROW_FIELDS) + sum(len(instance.keys) for instance in instances)
    return {"symbol": symbol, "timeframe": timeframe, "indicators": [described(i) for i in instances],
            "values": await encode_in_slices(rows, max(1, SLICE_VALUES // row))}


def charge(bridge: Bridge, sid: str, event: str, instances: tuple[Instance, ...], count: int) -> None:
    """Take what a client's own set costs: beyond the request itself, from the client's rate limit
    (a request per ``DEFAULT_KEYS`` keys), and its work (``indicator_work``, over at most
    ``MAX_CANDLES`` bars) from the budget all clients share. ``rate_limited`` when either holds
    less, and then nothing is taken: a client refused for the others' use keeps its own tokens."""
    keys = sum(len(instance.keys) for instance in instances)
    extra = math.ceil(keys / DEFAULT_KEYS) - 1
    client = bridge.clients.get(sid)
    bucket = client.bucket if extra > 0 and client is not None else None
    now = time.monotonic()
    if bucket is not None and bucket.ready_in(now, extra) > 0.0:
        bridge.rate_limited += 1
        raise ClientError(RATE_LIMITED, f"{event}: {keys} indicator keys count as {extra + 1} requests against "
                                        f"the rate limit; slow down", event)
    cost = indicator_work(keys, count, bridge.config.max_candles)
    budget = bridge.indicator_budget
    if not budget.take(now, cost):
        bridge.indicator_budget_refused += 1
        raise ClientError(RATE_LIMITED, f"{event}: the bridge-wide indicator budget is spent (clients' own sets, "
                                        f"{budget.rate:g} values/s for all clients together); this set costs {cost} "
                                        f"values: retry in {budget.ready_in(now, cost):.2f} s at the earliest", event)
    if bucket is not None:
        bucket.take(now, extra)


def described(instance: Instance) -> dict[str, Any]:
    """An instance as a client sees it: its name, kind, parameters and payload keys."""
    return {"name": instance.name, "kind": instance.kind.name, "params": list(instance.params),
            "keys": list(instance.keys)}


@EVENTS.event("get_order_book", Symbol(required=True), reply="order_book")
async def get_order_book(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    return unstamped(await bridge.engine_call(req.event, "book", symbol=req["symbol"]))


@EVENTS.event("get_account_info", reply="account_info")
async def get_account_info(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    return unstamped(await bridge.engine_call(req.event, "account"))


# The account's activity may be filtered by any symbol the account trades, not only served ones.
ACCOUNT_SYMBOL = Text("symbol", MAX_SYMBOL_LEN, convert=validate_symbol)


@EVENTS.event("get_positions", ACCOUNT_SYMBOL, reply="positions")
async def get_positions(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    """The open positions, from the bridge's cache of the position: topics."""
    return {"symbol": req["symbol"], "positions": await _open_items(bridge, req, POSITION, "positions")}


@EVENTS.event("get_orders", ACCOUNT_SYMBOL, reply="orders")
async def get_orders(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    """The pending orders, from the bridge's cache of the order: topics."""
    return {"symbol": req["symbol"], "orders": await _open_items(bridge, req, ORDER, "orders")}


async def _open_items(bridge: Bridge, req: Request, kind: str, op: str) -> list[dict[str, Any]]:
    """The cache once it is in step with the engine (its snapshot applied), the engine's own
    answer before (just started, or after an outage)."""
    symbol = req["symbol"]
    if bridge.resync_needed:
        items = await bridge.engine_call(req.event, op, **({"symbol": symbol} if symbol else {}))
    elif not bridge.engine_health.get("account_activity"):
        raise ClientError(ErrorCode.UNAVAILABLE, f"{req.event}: the engine publishes no account activity "
                                                 "(a replay, or ACCOUNT_STREAMS=0)", req.event)
    else:
        items = bridge.open_items[kind].items(symbol)
    return [unstamped(item) for item in items]


@EVENTS.event("get_deals", Span("from", "to", MAX_TIME_S, "epoch seconds, deal times", required=True),
              ACCOUNT_SYMBOL, reply="deals", large=True)
async def get_deals(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    """Deals by date range, from the engine (the terminal's history, or the sim's)."""
    first, last = req["span"]
    symbol = req["symbol"]
    deals = await bridge.engine_call(req.event, "deals", **{"from": first, "to": last},
                                     **({"symbol": symbol} if symbol else {}))
    return {"from": first, "to": last, "symbol": symbol, "deals": deals}


@EVENTS.event("ping", reply="health")
async def ping(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    return bridge.health()
