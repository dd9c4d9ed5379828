"""The bridge keeps its clients while the engine is away, says so, and resumes when it returns."""
from __future__ import annotations

import asyncio
import time

from tests.bridge_procs import BridgeProcess, Recorder
from tests.procs import EngineProcess


def test_engine_down_degrades_keeps_clients_then_resumes_after_a_restart(start_engine, started):
    engine = start_engine()
    bridge = BridgeProcess(engine=engine)
    started.append(bridge)
    bridge.start()

    async def scenario():
        client = Recorder()
        await client.connect(bridge.url)
        try:
            await client.call("subscribe", {"symbol": "EURUSD", "timeframe": "M1"})
            await client.wait_for("tick")
            await client.call("get_candles", {"symbol": "EURUSD", "timeframe": "M1", "count": 10})

            engine.stop()
            stopped = time.monotonic()
            down = await client.wait_for("health", lambda d: d["status"] == "degraded", timeout=8)
            assert down["engine"]["status"] == "down"
            assert time.monotonic() - stopped < 6
            code, body = await asyncio.to_thread(bridge.health)
            assert code == 503 and body["engine"]["status"] == "down"
            error = await client.call("get_order_book", {"symbol": "EURUSD"})
            assert error["code"] == "unavailable" and error["event"] == "get_order_book"
            pong = await client.call("ping")  # the bridge still answers what it can
            assert pong["status"] == "degraded" and client.sio.connected

            restarted = EngineProcess(bus_port=engine.bus_port, rpc_port=engine.rpc_port, pub_port=engine.pub_port)
            started.append(restarted)
            await asyncio.to_thread(restarted.start)
            mark = len(client.events)
            await client.wait_for("health", lambda d: d["status"] == "ok", timeout=10, after=mark)
            await client.wait_for("tick", timeout=5, after=mark)
            bars = await client.call("get_candles", {"symbol": "EURUSD", "timeframe": "M1", "count": 10})
            assert len(bars["candles"]) == 10
            return await asyncio.to_thread(bridge.health)
        finally:
            await client.close()

    code, body = asyncio.run(asyncio.wait_for(scenario(), 45))
    assert code == 200 and body["engine"]["status"] == "ok"
    assert body["stats"]["bus_restarts"] >= 1  # the new epoch was noticed (caches refreshed)
    assert body["clients"] == 1
