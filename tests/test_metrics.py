"""``GET /metrics`` (Prometheus text format) against a real engine, indicator worker and bridge."""
from __future__ import annotations

import ast
import random
import asyncio
import time
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.histogram import LiteHistogram
from bridge.metrics import figure_family
from bridge.config import BridgeConfig
from bridge.fanout import ALL, Fanout
from bridge.server import Bridge
from bridge.stats import (COUNTER, FIGURES, GAUGE, HISTOGRAM, LAG_BUCKETS, MAX_OUTCOMES, OTHER, BridgeStats, Figure,
                          render_health)
from bridge.subscriptions import SYMBOL_ROOM, TIMEFRAME_ROOM, subscription_of, symbol_room, timeframe_room
from tests.bridge_procs import BridgeProcess, Recorder
from tests.procs import ROOT, running

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


# The figures' declaration (bridge.stats.FIGURES): both renderings, and public sources only
HEALTH_DESCRIPTION = {"bridge", "server_time", "version", "delivery", "engine", "workers", "stats"}
METRIC_TYPES = {COUNTER: "counter", GAUGE: "gauge", HISTOGRAM: "histogram"}


def health_series(figure: Figure, body: dict) -> dict[tuple[str, ...], float]:
    """A figure's numbers in a ``/health`` body, by label values (a histogram's: its count)."""
    shown = (body if figure.top else body["stats"])[figure.key]

    def flat(value, depth, labels=()):
        if depth == 0:
            yield labels, value
        else:
            for label, inner in value.items():
                yield from flat(inner, depth - 1, (*labels, label))

    return {labels: leaf["count"] if figure.kind == HISTOGRAM else figure.number(leaf)
            for labels, leaf in flat(shown, len(figure.labels))}


def metric_series(figure: Figure, families: dict) -> dict[tuple[str, ...], float]:
    """A figure's numbers in ``/metrics``, by label values (a histogram's: its ``_count``)."""
    family = families[figure.family]
    assert family.type == METRIC_TYPES[figure.kind], figure.family
    wanted = figure.family + ("_count" if figure.kind == HISTOGRAM else "_total" if figure.kind == COUNTER else "")
    return {tuple(s.labels[name] for name in figure.labels): s.value for s in family.samples if s.name == wanted}


def test_every_declared_figure_is_in_health_and_in_metrics_with_the_same_values(bridge):
    """Each figure of ``FIGURES`` is in ``/health`` and ``/metrics`` of a running bridge with the same
    series, its ``/metrics`` value between two ``/health`` readings taken around it; no ``mt5_bridge_``
    family and no ``stats`` key is undeclared."""
    async def scenario():
        client = await Recorder().connect(bridge.url)
        try:
            await client.call("subscribe", {"symbol": SYMBOL, "timeframe": "M1"})
            await client.call("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 5})
            await client.wait_for("tick", lambda t: t["symbol"] == SYMBOL)
            await until(bridge, lambda s: (value(s, "mt5_bridge_tick_to_write_seconds_count") or 0) > 0)
            before = (await asyncio.to_thread(bridge.health))[1]
            with urllib.request.urlopen(bridge.url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
            after = (await asyncio.to_thread(bridge.health))[1]
        finally:
            await client.close()
        return before, text, after

    before, text, after = asyncio.run(asyncio.wait_for(scenario(), 60))
    families = {f.name: f for f in text_string_to_metric_families(text)}

    declared = {f.family for f in FIGURES}
    assert len(declared) == len(FIGURES) and len({(f.top, f.key) for f in FIGURES}) == len(FIGURES)
    assert {name for name in families if name.startswith("mt5_bridge_")} == declared
    assert set(after["stats"]) == {f.key for f in FIGURES if not f.top}
    assert set(after) == {f.key for f in FIGURES if f.top} | HEALTH_DESCRIPTION

    checked = 0
    for figure in FIGURES:
        low, high = health_series(figure, before), health_series(figure, after)
        scraped = metric_series(figure, families)
        assert scraped, f"{figure.family} has no series"
        assert set(low) <= set(scraped) <= set(high), figure.key  # series only ever appear
        for labels, number in scraped.items():
            first = low.get(labels, high[labels])
            assert min(first, high[labels]) <= number <= max(first, high[labels]), (figure.key, labels)
            checked += 1
    # What the one client did shows in its figures.
    stats = after["stats"]
    assert after["clients"] == 1 and after["subscriptions"] == 2
    assert stats["symbol_subscribers"] == {SYMBOL: 1} and stats["timeframe_subscribers"] == {SYMBOL: {"M1": 1}}
    assert stats["rpc_ms"]["symbols"]["ok"]["count"] >= 1 and stats["ticks_out"] > 0
    assert stats["tick_to_write_ms"]["count"] > 0 and stats["tick_to_write_ms"]["p99"] is not None
    print(f"\n[stats] {len(FIGURES)} figures, {checked} series: the same in /health and /metrics; "
          f"ticks in {stats['ticks_in']}, out {stats['ticks_out']}; tick-to-write p99 "
          f"{stats['tick_to_write_ms']['p99']} ms; flushes {stats['flushes']}", flush=True)


RENDERERS = ("bridge/stats.py", "bridge/metrics.py")
REFLECTION = {"getattr", "setattr", "vars", "eval", "exec", "__dict__"}


def private(name: str) -> bool:
    """``_name`` and ``__name`` (the language's own ``__dunder__`` methods are public)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reads(source: str) -> list[str]:
    """What ``source`` reaches that is not public API: ``._name`` attributes of other objects than
    ``self``, imported ``_names``, reflection (``getattr``, ``vars``, ``__dict__``, ...) and room
    names spelled out."""
    found = []
    for node in ast.walk(ast.parse(source)):
        own = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
        if isinstance(node, ast.Attribute) and (private(node.attr) and not own or node.attr in REFLECTION):
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in REFLECTION:
            found.append(f"{node.lineno}: {node.id}")
        elif isinstance(node, ast.ImportFrom):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if private(a.name)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value.startswith((SYMBOL_ROOM, TIMEFRAME_ROOM)):
            found.append(f"{node.lineno}: room name {node.value!r}")
    return sorted(found)


def test_figures_are_read_through_public_api_only():
    """``/health`` and ``/metrics`` are rendered by ``bridge.stats`` and ``bridge.metrics`` alone
    (``Bridge.health`` adds only what the bridge sees of the others), and neither reads a private
    name, reflects or knows how rooms are named; the check finds each of those when they are there."""
    for path in RENDERERS:
        assert private_reads((ROOT / path).read_text()) == [], path
    assert private_reads("n = len(bridge.fanout._rooms)\nfrom bridge.fanout import _Member\n"
                         "x = getattr(bridge, 'flushes')\nroom = 's:' + symbol\ny = bridge.__dict__\n"
                         "self._mine()\n") == [
        "1: ._rooms", "2: import _Member", "3: getattr", "4: room name 's:'", "5: .__dict__"]
    # A bridge that has not started (no bus, no RPC socket yet) already has every figure.
    bridge = Bridge(BridgeConfig())
    figures, stats = render_health(bridge)
    assert set(figures) | set(stats) == {f.key for f in FIGURES}
    assert stats["bus_undecodable"] == 0 and stats["rpc_timeouts"] == 0 and figures["status"] == "degraded"


def test_subscriber_figures_count_the_fanouts_rooms():
    fanout = Fanout(transport=None, soft=1, hard=2, groups=2)  # no delivery here: rooms only
    for sid in ("a", "b", "c"):
        fanout.add_client(sid)  # groups: a, c -> 0; b -> 1
    fanout.join("a", [symbol_room("EURUSD"), timeframe_room("EURUSD", "M1")])
    fanout.join("b", [symbol_room("EURUSD"), timeframe_room("EURUSD", "H1")])
    fanout.join("c", [symbol_room("GBPUSD")])
    assert fanout.subscriptions() == 5
    assert fanout.members_in(symbol_room("EURUSD"), 0) == 1 and fanout.members_in(symbol_room("EURUSD"), 1) == 1
    assert fanout.members_in(symbol_room("USDJPY"), 0) == 0
    bridge = SimpleNamespace(fanout=fanout)
    shown = {f.key: f.shown(f.value(bridge)) for f in FIGURES if f.key.endswith("_subscribers")}
    assert shown == {"symbol_subscribers": {"EURUSD": 2, "GBPUSD": 1},
                     "timeframe_subscribers": {"EURUSD": {"H1": 1, "M1": 1}}}
    fanout.remove_client("b")
    assert fanout.subscriptions() == 3 and fanout.room_sizes()[symbol_room("EURUSD")] == 1
    assert subscription_of(timeframe_room("BRK.B", "M1")) == ("BRK.B", "M1") and subscription_of(ALL) is None


def test_rpc_outcomes_per_op_are_bounded():
    stats = BridgeStats(lambda: 0)
    for n in range(40):
        stats.on_rpc("candles", f"code{n}", 0.001)
    stats.on_rpc("candles", "code0", 0.002)
    outcomes = stats.rpc["candles"]
    assert len(outcomes) == MAX_OUTCOMES and outcomes[OTHER].count == 40 - (MAX_OUTCOMES - 1)
    assert outcomes["code0"].count == 2


def test_members_in_a_group_follow_every_join_leave_and_removal():
    """``Fanout.members_in`` (what ``ticks_out`` adds per flush) is kept as clients come and go:
    it equals a count over the clients' own rooms after each of 2,000 random changes."""
    rng = random.Random(14)
    fanout = Fanout(transport=None, soft=1, hard=2, groups=3)
    rooms = [symbol_room("EURUSD"), symbol_room("GBPUSD"), timeframe_room("EURUSD", "M1")]
    checked = 0
    for step in range(2000):
        sid = f"c{rng.randrange(40)}"
        action = rng.random()
        if sid not in fanout.members:
            fanout.add_client(sid)
        elif action < 0.45:
            fanout.join(sid, rng.sample(rooms, rng.randint(1, 3)))
        elif action < 0.9:
            fanout.leave(sid, rng.sample(rooms, rng.randint(1, 3)))
        else:
            fanout.remove_client(sid)
        room, group = rng.choice([*rooms, ALL]), rng.randrange(3)
        expected = sum(1 for member in fanout.groups[group].values() if room in member.rooms)
        assert fanout.members_in(room, group) == expected, step
        checked += expected
    assert checked > 0  # the rooms were not empty all along
    assert fanout.subscriptions() == sum(len(m.rooms) - 1 for m in fanout.members.values())
