"""``GET /metrics`` (Prometheus text format) against a real engine, indicator worker and bridge."""
from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.histogram import LiteHistogram
from bridge.metrics import figure_family
from bridge.stats import HISTOGRAM, LAG_BUCKETS, Figure
from tests.bridge_procs import BridgeProcess, Recorder
from tests.procs import running

SYMBOL = "EURUSD"


@pytest.fixture(scope="module")
def bridge(engine, worker):
    with running(BridgeProcess(engine=engine)) as proc:
        yield proc


def scrape(bridge: BridgeProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, parsed by prometheus_client: {(name, sorted labels): value}."""
    with urllib.request.urlopen(bridge.url + "/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def until(bridge: BridgeProcess, check, timeout: float = 10.0):
    """Scrape until ``check(samples)`` holds; the last samples either way (the assert says why)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, bridge)
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


def test_metrics_follow_a_client_ticks_lag_and_the_engine(bridge):
    async def scenario():
        # The worker's health comes once a second: wait for it too.
        base = await until(bridge, lambda s: value(s, "mt5_bridge_clients") == 0
                           and (value(s, "mt5_bridge_engine_lag_seconds_count") or 0) > 0
                           and value(s, "mt5_indicators_up", component="indicators:0", shard="0/1") == 1)
        assert value(base, "mt5_bridge_clients") == 0
        ticks_in = value(base, "mt5_bridge_ticks_in_total")
        assert ticks_in > 0 and value(base, "mt5_bridge_bus_messages_total", kind="tick") == ticks_in
        assert value(base, "mt5_bridge_engine_lag_seconds_count") > 0
        assert value(base, "mt5_bridge_engine_lag_seconds_bucket", le="+Inf") == \
            value(base, "mt5_bridge_engine_lag_seconds_count")

        client = await Recorder().connect(bridge.url)
        try:
            await client.call("subscribe", {"symbol": SYMBOL, "timeframe": "M1"})
            book = await client.call("get_order_book", {"symbol": SYMBOL})
            assert book["symbol"] == SYMBOL
            await client.wait_for("tick", lambda t: t["symbol"] == SYMBOL)
            joined = await until(bridge, lambda s: (value(s, "mt5_bridge_ticks_out_total") or 0) > 0
                                 and (value(s, "mt5_bridge_tick_to_write_seconds_count") or 0) > 0)
        finally:
            await client.close()
        left = await until(bridge, lambda s: value(s, "mt5_bridge_clients") == 0)
        return base, joined, left

    base, joined, left = asyncio.run(asyncio.wait_for(scenario(), 60))

    # Clients 0 -> 1 -> 0, and the subscriptions of the one client.
    assert value(joined, "mt5_bridge_clients") == 1
    assert value(joined, "mt5_bridge_symbol_subscribers", symbol=SYMBOL) == 1
    assert value(joined, "mt5_bridge_timeframe_subscribers", symbol=SYMBOL, timeframe="M1") == 1
    assert value(joined, "mt5_bridge_subscriptions") == 2
    assert value(left, "mt5_bridge_clients") == 0
    assert value(left, "mt5_bridge_symbol_subscribers", symbol=SYMBOL) is None

    # Ticks in and out move; lag and flush histograms fill.
    assert value(joined, "mt5_bridge_ticks_in_total") > value(base, "mt5_bridge_ticks_in_total")
    assert value(joined, "mt5_bridge_ticks_out_total") > 0
    assert value(joined, "mt5_bridge_tick_to_write_seconds_count") > 0
    assert value(joined, "mt5_bridge_engine_lag_seconds_count") > value(base, "mt5_bridge_engine_lag_seconds_count")
    assert value(joined, "mt5_bridge_flush_duration_seconds_count") > 0
    assert value(joined, "mt5_bridge_flush_events_count") > 0
    assert value(joined, "mt5_bridge_packets_sent_total") > 0
    # RPC latency, by op: the book always asks the engine.
    assert value(joined, "mt5_bridge_rpc_duration_seconds_count", op="book", outcome="ok") >= 1
    assert value(joined, "mt5_bridge_rpc_duration_seconds_count", op="symbols", outcome="ok") >= 1
    for name in ("conflated", "skipped_slow", "slow_disconnects", "rate_limited", "bus_gaps"):
        assert value(joined, f"mt5_bridge_{name}_total") is not None, name
    # Process figures.
    assert value(joined, "process_resident_memory_bytes") > 10_000_000
    assert value(joined, "process_open_fds") > 0

    # The engine's and the worker's figures, from their health topics.
    assert value(joined, "mt5_engine_up") == 1 and value(joined, "mt5_engine_status", status="ok") == 1
    assert value(joined, "mt5_engine_ticks_per_second") > 0
    assert value(joined, "mt5_engine_ticks_total") > 0 and value(joined, "mt5_engine_symbols") == 5
    # What hostile peers cost, from the engine's health: none here.
    for name in ("forged_dropped", "rpc_replies_dropped", "bus_subscriptions_refused", "bus_connections_closed"):
        assert value(joined, f"mt5_engine_{name}_total") == 0, name
    assert value(joined, "mt5_engine_bus_subscription_bytes") > 0
    assert value(joined, "mt5_bridge_clients_disconnected_total", reason="over_budget") == 0
    assert value(joined, "mt5_bridge_requests_refused_total", reason="host") == 0
    assert value(joined, "mt5_bridge_sessions_pending") == 0
    shard = {"component": "indicators:0", "shard": "0/1"}
    assert value(joined, "mt5_indicators_up", **shard) == 1
    assert value(joined, "mt5_indicators_updates_total", **shard) > 0
    assert value(joined, "mt5_indicators_updates_per_second", **shard) is not None
    assert value(joined, "mt5_indicators_rewarms_limited_total", **shard) == 0
    assert value(joined, "mt5_component_up", component="indicators:0") == 1
    assert value(joined, "mt5_bridge_healthy") == 1


def test_lite_histogram_exposes_what_prometheus_client_histogram_does():
    values = [0.0, 0.0004, 0.0005, 0.001, 0.0031, 0.02, 0.7, 3.0, 12.0, 99.0]
    registry = CollectorRegistry()
    reference = Histogram("mt5_bridge_lag_seconds", "lag", buckets=LAG_BUCKETS, registry=registry)
    lite = LiteHistogram(LAG_BUCKETS)
    for v in values:
        reference.observe(v)
        lite.observe(v)

    figure = Figure("lag_ms", HISTOGRAM, "lag", lambda bridge: lite, metric="lag_seconds")

    class One:
        def collect(self):
            yield figure_family(figure, lite)

    mine = CollectorRegistry()
    mine.register(One())
    strip = lambda text: [line for line in text.decode().splitlines() if "_created" not in line]  # noqa: E731
    assert strip(generate_latest(mine)) == strip(generate_latest(registry))
