"""The engine loop in-process, around sources that misbehave."""
import threading

import pytest
import zmq

from engine.client import RpcClient
from engine.config import EngineConfig
from engine.service import EngineService
from engine.sources.base import SourceError
from engine.sources.sim import SimSource
from tests.procs import free_port


class FlakySim(SimSource):
    """A sim whose poll raises while ``broken`` is set."""

    broken = threading.Event()

    def poll(self, now_ms):
        if self.broken.is_set():
            raise SourceError("replay.csv:7: malformed row")
        return super().poll(now_ms)


@pytest.fixture
def running():
    ctx = zmq.Context()
    cfg = EngineConfig.load(
        {"bus_endpoint": f"tcp://127.0.0.1:{free_port()}", "bus_pub_endpoint": f"tcp://127.0.0.1:{free_port()}",
         "rpc_endpoint": f"tcp://127.0.0.1:{free_port()}", "symbols": "EURUSD", "timeframes": "M1"},
        environ={}, dotenv=None,
    )
    service = EngineService(cfg, FlakySim(cfg.symbols, rate=200), ctx)
    opened = threading.Event()

    def run():  # sockets belong to the thread that opens and runs them
        service.open()
        opened.set()
        try:
            service.run()
        finally:
            service.close()

    thread = threading.Thread(target=run)
    thread.start()
    assert opened.wait(30)
    rpc = RpcClient(cfg.rpc_endpoint, timeout_ms=3000, ctx=ctx)
    yield service, rpc
    FlakySim.broken.clear()
    rpc.close()
    service.stop()
    thread.join(5)
    ctx.destroy(0)
    assert not thread.is_alive()


def test_a_failing_source_degrades_health_and_the_engine_keeps_serving(running):
    service, rpc = running
    assert rpc.health()["status"] == "ok"
    FlakySim.broken.set()
    health = _wait_health(rpc, "degraded")
    assert "malformed row" in health["source_detail"]
    assert rpc.candles("EURUSD", "M1", 5)  # still serving
    FlakySim.broken.clear()
    assert _wait_health(rpc, "ok")["source_detail"] == ""


def _wait_health(rpc, status, attempts=200):
    for _ in range(attempts):
        health = rpc.health()
        if health["status"] == status:
            return health
        threading.Event().wait(0.01)
    raise AssertionError(f"health never became {status}: {health}")


class CountingSim(SimSource):
    """A sim that tells chunks drawn ahead (``prefetch``) from chunks drawn on demand (``poll``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ahead = self.on_demand = 0
        self.polling = False

    def start(self):
        super().start()
        for market in self._markets.values():
            draw = market.ticks

            def counted(*args, draw=draw):
                if self.polling:
                    self.on_demand += 1
                return draw(*args)
            market.ticks = counted

    def prefetch(self):
        did = super().prefetch()
        self.ahead += did
        return did

    def poll(self, now_ms):
        self.polling = True
        try:
            return super().poll(now_ms)
        finally:
            self.polling = False


def test_the_loop_gives_idle_time_to_the_source_so_ticks_are_drawn_ahead():
    ctx = zmq.Context()
    cfg = EngineConfig.load(
        {"bus_endpoint": f"tcp://127.0.0.1:{free_port()}", "bus_pub_endpoint": f"tcp://127.0.0.1:{free_port()}",
         "rpc_endpoint": f"tcp://127.0.0.1:{free_port()}", "symbols": "EURUSD", "timeframes": "M1"},
        environ={}, dotenv=None,
    )
    source = CountingSim(cfg.symbols, rate=2000)  # a chunk of 512 ticks every ~0.26 s
    service = EngineService(cfg, source, ctx)
    service.open()
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        threading.Event().wait(0.5)  # past the catch-up on the ticks due while history loaded
        ahead, on_demand = source.ahead, source.on_demand
        threading.Event().wait(1.5)
    finally:
        service.stop()
        thread.join(5)
        service.close()
        ctx.destroy(0)
    assert source.ahead - ahead >= 3 and source.on_demand - on_demand == 0
