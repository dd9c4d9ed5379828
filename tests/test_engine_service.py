"""The engine loop in-process, around sources that misbehave, and its timing rules."""
import ctypes
import sys
import threading
import time
from dataclasses import replace

import pytest

from engine.client import RpcClient
from engine.models import CHART_MODE_LAST, TICK_FLAG_LAST, TICK_FLAG_VOLUME, Tick
from engine.service import DELIVERY_NS, PR_SET_TIMERSLACK, EngineService, now_ms, tighten_timer_slack
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
    health = rpc.health()
    assert health["status"] == "ok"
    assert health["server_utc_offset_s"] == 0  # the sim's clock is UTC
    assert (health["missing_symbols"], health["stale_symbols"]) == ([], [])
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
        self.prefetch_started_ns: list[int] = []

    def start(self):
        super().start()
        for market in self._markets.values():
            draw = market.chunk_columns

            def counted(*args, draw=draw):
                if self.polling:
                    self.on_demand += 1
                return draw(*args)
            market.chunk_columns = counted

    def prefetch(self):
        self.prefetch_started_ns.append(time.time_ns())
        self.ahead += self.prefetch_due() is not None
        super().prefetch()

    def poll(self, now_ms):
        self.polling = True
        try:
            return super().poll(now_ms)
        finally:
            self.polling = False


def record_sends(service: EngineService) -> list[int]:
    """The instants the loop finishes publishing each batch of ticks (the engine thread writes
    them, as it writes whatever else a test records, so their order is the loop's order)."""
    sent_ns: list[int] = []
    publish = service.on_ticks

    def recorded(ticks):
        publish(ticks)
        sent_ns.append(time.time_ns())
    service.on_ticks = recorded
    return sent_ns


def within_delivery(sent_ns: list[int], at_ns: int) -> bool:
    """Whether ``at_ns`` falls within ``DELIVERY_NS`` of the last send before it."""
    last = max((s for s in sent_ns if s <= at_ns), default=None)
    return last is not None and at_ns - last < DELIVERY_NS


def test_the_loop_gives_idle_time_to_the_source_so_ticks_are_drawn_ahead(zmq_ctx):
    cfg = engine_config(symbols="EURUSD", timeframes="M1")
    source = CountingSim(cfg.symbols, rate=2000)  # a chunk of 512 ticks every ~0.26 s
    with engine_thread(EngineService(cfg, source, zmq_ctx)):
        threading.Event().wait(0.5)  # past the catch-up on the ticks due while history loaded
        ahead, on_demand = source.ahead, source.on_demand
        threading.Event().wait(1.5)
    assert source.ahead - ahead >= 3 and source.on_demand - on_demand == 0


def test_drawing_ahead_waits_until_the_last_batch_of_ticks_has_been_delivered(zmq_ctx):
    """On two cores the subscribers' I/O threads need a CPU right after a send: prefetching then
    would delay delivery (the 10k ticks/s p99 went from 0.65 ms to 1.0-1.4 ms)."""
    cfg = engine_config(symbols="EURUSD,GBPUSD", timeframes="M1")
    source = CountingSim(cfg.symbols, rate=5000)
    service = EngineService(cfg, source, zmq_ctx)
    sent_ns = record_sends(service)
    with engine_thread(service):
        threading.Event().wait(1.5)
    early = [p for p in source.prefetch_started_ns[10:] if within_delivery(sent_ns, p)]
    assert len(source.prefetch_started_ns) > 10 and len(sent_ns) > 1000
    assert early == []


def test_ticks_go_out_first_and_their_candles_follow_when_aggregated(zmq_ctx):
    cfg = engine_config(symbols="EURUSD,GBPUSD", timeframes="M1")
    service = EngineService(cfg, SimSource(cfg.symbols, rate=2000), zmq_ctx)
    service.open()
    try:
        topics = []
        service._pub.publish_frame = lambda topic, frame: topics.append(topic)
        ticks = service.source.poll(now_ms() + 61_000)  # crosses a minute: bars close and open
        service.on_ticks(ticks)
        assert topics == [f"tick:{t.symbol}:".encode() for t in ticks]
        before = service.candles("EURUSD", "M1", 2)
        service.aggregate_pending()
        after = service.candles("EURUSD", "M1", 2)
    finally:
        service.close()
    candle_events = topics[len(ticks):]
    assert set(candle_events) == {b"candle:EURUSD:M1:", b"candle:GBPUSD:M1:"}
    last_eurusd = next(t for t in reversed(ticks) if t.symbol == "EURUSD")
    assert after[-1]["close"] == last_eurusd.bid and after[-1]["time"] > before[-1]["time"]


def test_candles_wait_until_the_ticks_have_been_delivered_unless_the_next_tick_is_due(zmq_ctx):
    cfg = engine_config(symbols="EURUSD,GBPUSD", timeframes="M1")
    source = SimSource(cfg.symbols, rate=1000)
    service = EngineService(cfg, source, zmq_ctx)
    sent_ns, aggregated = record_sends(service), []
    aggregate = service.aggregate_pending

    def recorded_aggregate():
        if service._unaggregated:
            aggregated.append((time.time_ns(), source.next_due(now_ms()) == 0))
        aggregate()
    service.aggregate_pending = recorded_aggregate
    with engine_thread(service):
        threading.Event().wait(1.5)
    early = [(at, due) for at, due in aggregated[10:] if within_delivery(sent_ns, at) and not due]
    assert len(aggregated) > 300 and early == []
    assert sum(not due for _, due in aggregated) > len(aggregated) / 2  # mostly deferred, not forced


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is a Linux setting")
def test_the_engine_thread_asks_for_no_timer_slack():
    libc = ctypes.CDLL(None, use_errno=True)
    get_slack = lambda: libc.prctl(PR_SET_TIMERSLACK + 1, 0, 0, 0, 0)  # noqa: E731 PR_GET_TIMERSLACK
    ours = get_slack()
    seen = {}

    def engine_thread_start():
        seen["set"] = tighten_timer_slack()
        seen["slack"] = get_slack()
    thread = threading.Thread(target=engine_thread_start)
    thread.start()
    thread.join()
    assert ours > 1 and seen == {"set": True, "slack": 1}
    assert get_slack() == ours  # other threads keep theirs


class EastOfUtcSim(SimSource):
    """A sim whose clock reads like a broker's on UTC+3."""

    def server_utc_offset_s(self):
        return 10_800


def test_health_and_summary_are_stamped_in_the_market_clock(zmq_ctx):
    cfg = engine_config(symbols="EURUSD", timeframes="M1", summary_interval_ms="50")
    service = EngineService(cfg, EastOfUtcSim(cfg.symbols, rate=200), zmq_ctx)
    with engine_thread(service):
        with RpcClient(cfg.rpc_endpoint, timeout_ms=3000, ctx=zmq_ctx) as rpc:
            before = now_ms()
            health = rpc.health()
            deadline = time.monotonic() + 3
            summary = []
            while not summary and time.monotonic() < deadline:
                summary = rpc.snapshot("summary")
                time.sleep(0.05)
            after = now_ms()
    assert health["server_utc_offset_s"] == 10_800
    assert before + 10_800_000 <= health["time_msc"] <= after + 10_800_000
    assert before - 1000 + 10_800_000 <= summary[0][1]["time_msc"] <= after + 10_800_000


class LastChartSim(SimSource):
    """The sim with its symbols charted by trades, as exchange symbols are (``chart_mode`` 1)."""

    def symbols(self):
        return [replace(info, chart_mode=CHART_MODE_LAST) for info in super().symbols()]


def test_a_last_chart_symbols_candles_come_from_its_trades(zmq_ctx):
    cfg = engine_config(symbols="EURUSD", timeframes="M1")
    service = EngineService(cfg, LastChartSim(cfg.symbols, rate=0), zmq_ctx)
    service.open()
    try:
        t = (now_ms() // 60_000 + 2) * 60_000  # a minute of its own, after the seeded bars
        service.on_ticks([
            Tick("EURUSD", t + 100, 1.1, 1.1002, 1.1001, 3, TICK_FLAG_LAST | TICK_FLAG_VOLUME, 3.0),
            Tick("EURUSD", t + 200, 1.2, 1.2002, 1.1001),  # a quote: not on a Last chart
            Tick("EURUSD", t + 300, 0.0, 0.0, 1.0999, 1, TICK_FLAG_LAST, 1.0),  # a trade without quotes
        ])
        service.aggregate_pending()
        bar = service.candles("EURUSD", "M1", 1)[-1]
    finally:
        service.close()
    assert (bar["time"], bar["open"], bar["high"], bar["low"], bar["close"]) == (t // 1000, 1.1001, 1.1001,
                                                                                  1.0999, 1.0999)
    assert (bar["tick_volume"], bar["real_volume"], bar["spread"]) == (2, 4, 20)
