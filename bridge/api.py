"""The bridge's client API: every Socket.IO event a client may send, each declared once here with
its payload fields, its reply event and its handler.

A new event is one ``@EVENTS.event(name, *fields, reply=..., large=...)`` declaration on one
handler ``(bridge, sid, request) -> reply payload``; ``bridge.events.ClientNamespace`` does the
rate limiting, validation, reply and acknowledgement for all of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.events import EventTable
from bridge.indicator_history import indicator_history
from bridge.subscriptions import RoomChange
from bridge.validation import MAX_BRIDGE_TICKS, Count, Request, Span, Symbol, Timeframe
from engine.protocol import MAX_TIME_S

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


@EVENTS.event("get_indicators", Symbol(required=True), Timeframe(required=True), Count(),
              reply="indicators_history", large=True)
async def get_indicators(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    """Values for the bars ``get_candles`` would return, computed over up to ``MAX_CANDLES`` bars
    of history so that the first of them are warmed up as the worker's are."""
    symbol, timeframe = req["symbol"], req["timeframe"]
    bars = await bridge.recent_candles(req.event, symbol, timeframe, bridge.config.max_candles)
    values = indicator_history(symbol, timeframe, bars, req["count"], bridge.config.periods)
    return {"symbol": symbol, "timeframe": timeframe, "values": values}


@EVENTS.event("get_order_book", Symbol(required=True), reply="order_book")
async def get_order_book(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    return unstamped(await bridge.engine_call(req.event, "book", symbol=req["symbol"]))


@EVENTS.event("get_account_info", reply="account_info")
async def get_account_info(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    return unstamped(await bridge.engine_call(req.event, "account"))


@EVENTS.event("ping", reply="health")
async def ping(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    return bridge.health()
