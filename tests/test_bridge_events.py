"""Client events: a new one is one declaration plus one handler, answered through a real Socket.IO
client by the same namespace as every other; the table refuses a name twice or a lifecycle name,
and the README documents each declared event with its fields and reply."""
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from bridge.api import EVENTS
from bridge.config import BridgeConfig
from bridge.events import ClientEvent, EventTable
from bridge.server import Bridge
from bridge.validation import Count, Request, Symbol, Text
from tests.bridge_procs import Recorder
from tests.procs import ROOT, free_port

SYMBOL = "EURUSD"


@asynccontextmanager
async def serving(bridge: Bridge) -> AsyncIterator[str]:
    """``bridge`` on 127.0.0.1 (its engine endpoints lead nowhere: nothing here asks the engine)."""
    runner = web.AppRunner(bridge.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", bridge.config.ws_port).start()
    try:
        yield f"http://127.0.0.1:{bridge.config.ws_port}"
    finally:
        await runner.cleanup()


def offline_bridge() -> Bridge:
    """A bridge that knows its symbols already and whose bus and RPC endpoints have no engine."""
    config = replace(BridgeConfig.load(environ={}, dotenv=None), ws_port=free_port(),
                     bus_endpoint=f"tcp://127.0.0.1:{free_port()}", rpc_endpoint=f"tcp://127.0.0.1:{free_port()}")
    bridge = Bridge(config)
    bridge._set_symbols([{"name": SYMBOL}])
    return bridge


async def echo(bridge: Bridge, sid: str, req: Request) -> dict[str, Any]:
    return {"symbol": req["symbol"], "count": req["count"], "side": req["side"], "sid_known": sid in bridge.clients}


def side(text: str) -> int:
    """A trade side as MT5's order type (a field kind's ``convert``)."""
    if text not in ("buy", "sell"):
        raise ValueError("must be 'buy' or 'sell'")
    return ("buy", "sell").index(text)


def test_a_new_event_is_one_declaration_and_one_handler():
    bridge = offline_bridge()
    fields = (Symbol(required=True), Count(limit=5, limit_name="ECHO_MAX", default=2), Text("side", 4, side))
    bridge.events.declare(ClientEvent("echo", fields, "echoed", echo, large=True))

    async def main() -> dict[str, Any]:
        async with serving(bridge) as url:
            c = await Recorder().connect(url)
            try:
                got = {
                    "given": await c.call("echo", {"symbol": SYMBOL, "count": 5, "side": "sell"}),
                    "default": await c.call("echo", {"symbol": SYMBOL}),
                    "too_many": await c.call("echo", {"symbol": SYMBOL, "count": 6}),
                    "extra": await c.call("echo", {"symbol": SYMBOL, "price": 1.1}),
                    "bad_side": await c.call("echo", {"symbol": SYMBOL, "side": "hold"}),
                    "missing": await c.call("echo", {}),
                    "unknown": await c.call("echo_twice", {}),
                }
                await c.wait_for("error", lambda e: e["event"] == "echo_twice")
                got["replies"] = c.of("echoed")
                got["errors"] = c.of("error")
                return got
            finally:
                await c.close()

    got = asyncio.run(main())
    assert got["given"] == {"symbol": SYMBOL, "count": 5, "side": 1, "sid_known": True}
    assert got["default"] == {"symbol": SYMBOL, "count": 2, "side": None, "sid_known": True}
    assert got["replies"] == [got["given"], got["default"]], "the reply event carries what the ack does"
    assert got["too_many"] == {"code": "too_many", "message": "echo: 'count' 6 exceeds ECHO_MAX=5", "event": "echo"}
    assert got["extra"]["code"] == "bad_request" and got["extra"]["message"] == (
        "echo: unexpected field(s) 'price'; allowed: count, side, symbol")
    assert got["bad_side"] == {"code": "bad_request", "message": "echo: 'side' must be 'buy' or 'sell'",
                               "event": "echo"}
    assert got["missing"] == {"code": "bad_request", "message": "echo: 'symbol' is required", "event": "echo"}
    assert got["unknown"]["code"] == "bad_request" and got["unknown"]["message"].endswith(", ping, echo")
    assert got["errors"] == [got["too_many"], got["extra"], got["bad_side"], got["missing"], got["unknown"]]
    assert "echo" not in {event.name for event in EVENTS}, "declared on this bridge alone"
    print(f"\nthrowaway event: ack {got['given']}, errors {[e['code'] for e in got['errors']]}")


def test_a_name_is_declared_once_and_never_as_connect_or_disconnect():
    table = EventTable()
    table.declare(ClientEvent("echo", (), "echoed", echo))
    for name in ("echo", "connect", "disconnect"):
        with pytest.raises(ValueError, match="taken"):
            table.declare(ClientEvent(name, (), "echoed", echo))
    assert [event.name for event in table] == ["echo"]


def readme_client_events() -> dict[str, tuple[str, str]]:
    """The README's client events table: event -> (payload cell, reply cell)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Client events"):text.index("### Server events")]
    rows = re.findall(r"^\| `(\w+)` \| (.*?) \| (.*) \|$", table, re.MULTILINE)
    return {event: (payload, reply) for event, payload, reply in rows}


def test_the_readme_documents_each_declared_event_with_its_fields_and_reply():
    documented = readme_client_events()
    assert list(documented) == [event.name for event in EVENTS]
    for event in EVENTS:
        payload, reply = documented[event.name]
        assert reply.startswith(f"`{event.reply}"), (event.name, reply)
        keys = [key for field in event.fields for key in field.keys]
        assert all(re.search(rf"\b{key}\b", payload) for key in keys) if keys else payload == "none", \
            (event.name, keys, payload)


def test_a_connect_event_whose_task_runs_after_its_client_left_does_not_bring_it_back():
    """python-socketio runs each event in a task of its own, which may start after the client's
    disconnect: the namespace then gets the client's 'connect' event for a sid that is gone."""
    bridge = offline_bridge()

    async def main() -> tuple[Any, int, int]:
        async with serving(bridge) as url:
            c = await Recorder().connect(url)
            sid = c.sio.get_sid()
            assert set(bridge.clients) == {sid}
            await c.close()
            for _ in range(250):
                if not bridge.clients:
                    break
                await asyncio.sleep(0.02)
            namespace = bridge.sio.namespace_handlers["/"]
            late_connect = await namespace.trigger_event("connect", sid, {"token": "x"})
            return late_connect, len(bridge.clients), len(bridge.fanout.members)

    late_connect, clients, members = asyncio.run(main())
    assert (late_connect, clients, members) == (None, 0, 0)
