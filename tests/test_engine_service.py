"""The engine loop in-process, around sources that misbehave."""
import threading

import pytest

from engine.client import RpcClient
from engine.service import EngineService
from engine.sources.base import SourceError
from engine.sources.sim import SimSource
from tests.procs import engine_config, engine_thread


class FlakySim(SimSource):
    """A sim whose poll raises while ``broken`` is set."""

    broken = threading.Event()

    def poll(self, now_ms):
        if self.broken.is_set():
            raise SourceError("replay.csv:7: malformed row")
        return super().poll(now_ms)


@pytest.fixture
def running(zmq_ctx):
    cfg = engine_config(symbols="EURUSD", timeframes="M1")
    service = EngineService(cfg, FlakySim(cfg.symbols, rate=200), zmq_ctx)
    with engine_thread(service) as thread:
        rpc = RpcClient(cfg.rpc_endpoint, timeout_ms=3000, ctx=zmq_ctx)
        yield service, rpc
        FlakySim.broken.clear()
        rpc.close()
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


def test_the_loop_gives_idle_time_to_the_source_so_ticks_are_drawn_ahead(zmq_ctx):
    cfg = engine_config(symbols="EURUSD", timeframes="M1")
    source = CountingSim(cfg.symbols, rate=2000)  # a chunk of 512 ticks every ~0.26 s
    with engine_thread(EngineService(cfg, source, zmq_ctx)):
        threading.Event().wait(0.5)  # past the catch-up on the ticks due while history loaded
        ahead, on_demand = source.ahead, source.on_demand
        threading.Event().wait(1.5)
    assert source.ahead - ahead >= 3 and source.on_demand - on_demand == 0
