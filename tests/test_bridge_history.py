"""Socket.IO history by date range: ``get_candles`` with ``from``/``to`` and ``get_ticks``, against a
real engine and bridge (python-socketio AsyncClient), as the engine's RPC answers them."""
from __future__ import annotations

import asyncio

import pytest

from bridge.validation import MAX_BRIDGE_TICKS
from engine.client import RpcClient
from tests.bridge_procs import BridgeProcess, run
from tests.procs import EngineProcess, running

SYMBOL = "EURUSD"


@pytest.fixture(scope="module")
def engine():
    with running(EngineProcess(["--rate", "1000"])) as proc:
        yield proc


@pytest.fixture(scope="module")
def bridge(engine):
    with running(BridgeProcess([], engine=engine)) as proc:
        yield proc


def test_get_candles_with_from_and_to_is_the_engines_range(bridge, engine):
    with RpcClient(engine.rpc) as rpc:
        bars = rpc.candles(SYMBOL, "M5", 300)
    lo, hi = bars[50]["time"], bars[99]["time"]

    async def scenario(c):
        mark = len(c.events)
        ack = await c.call("get_candles", {"symbol": SYMBOL, "timeframe": "M5", "from": lo, "to": hi})
        return ack, await c.wait_for("candles", after=mark)
    ack, event = run(scenario, bridge)
    assert ack == event
    assert (ack["symbol"], ack["timeframe"], ack["from"], ack["to"]) == (SYMBOL, "M5", lo, hi)
    assert ack["candles"] == bars[50:100]


def test_get_ticks_is_the_engines_tick_range(bridge, engine):
    with RpcClient(engine.rpc) as rpc:
        newest = rpc.tick(SYMBOL)["time_msc"]
        expected = rpc.ticks(SYMBOL, newest - 5_000, newest)
    assert expected  # 1000 ticks/s over five symbols: a few hundred EURUSD ticks in 5 s

    async def scenario(c):
        mark = len(c.events)
        ack = await c.call("get_ticks", {"symbol": SYMBOL, "from_msc": newest - 5_000, "to_msc": newest})
        return ack, await c.wait_for("ticks", after=mark)
    ack, event = run(scenario, bridge)
    assert ack == event
    assert (ack["symbol"], ack["from_msc"], ack["to_msc"]) == (SYMBOL, newest - 5_000, newest)
    assert ack["ticks"] == expected
    assert [t["time_msc"] for t in ack["ticks"]] == sorted(t["time_msc"] for t in ack["ticks"])


@pytest.mark.parametrize(("event", "data", "code", "words"), [
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": 20, "to": 10}, "bad_request", "is after"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": 20}, "bad_request", "go together"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": "a", "to": 10}, "bad_request", "integer"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": 1.5, "to": 10}, "bad_request", "integer"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": -1, "to": 10}, "bad_request", "integer"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": 1, "to": 10, "count": 5}, "bad_request",
     "either 'count'"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": 0, "to": 2**37}, "too_many", "MAX_CANDLES"),
    ("get_ticks", {"symbol": SYMBOL, "from_msc": 10}, "bad_request", "'to_msc' is required"),
    ("get_ticks", {"symbol": SYMBOL, "from_msc": 10, "to_msc": 5}, "bad_request", "is after"),
    ("get_ticks", {"symbol": SYMBOL, "from_msc": True, "to_msc": 5}, "bad_request", "integer"),
    ("get_ticks", {"symbol": SYMBOL, "from_msc": 1, "to_msc": 5, "count": MAX_BRIDGE_TICKS + 1}, "too_many",
     "MAX_BRIDGE_TICKS"),
    ("get_ticks", {"symbol": SYMBOL, "from_msc": 1, "to_msc": 5, "after_seq": 1}, "bad_request", "unexpected"),
    ("get_ticks", {"symbol": "NOPE", "from_msc": 1, "to_msc": 5}, "unknown_symbol", "NOPE"),
])
def test_bad_ranges_get_an_error_to_their_sender_only(bridge, event, data, code, words):
    async def scenario(c, bystander):
        mark = len(bystander.events)
        ack = await c.call(event, data)
        error = await c.wait_for("error")
        pong = await c.call("ping")  # still usable
        await asyncio.sleep(0.1)
        return ack, error, pong, [e for _, e, _ in bystander.events[mark:]]
    ack, error, pong, bystander_events = run(scenario, bridge, clients=2)
    assert ack == error and error["code"] == code and words in error["message"], error
    assert error["event"] == event and pong["status"] == "ok"
    assert "error" not in bystander_events


def test_get_ticks_is_rate_limited_like_every_request(bridge, engine):
    with RpcClient(engine.rpc) as rpc:
        newest = rpc.tick(SYMBOL)["time_msc"]

    async def scenario(c):
        request = {"symbol": SYMBOL, "from_msc": newest - 100, "to_msc": newest}
        return await asyncio.gather(*(c.call("get_ticks", request) for _ in range(80)))
    acks = run(scenario, bridge)
    limited = [a for a in acks if a.get("code") == "rate_limited"]
    served = [a for a in acks if "ticks" in a]
    assert limited and served and len(limited) + len(served) == 80
