"""``GET /metrics``: the bridge's figures, and the engine's and workers' from their health topics,
in the Prometheus text format (``prometheus_client`` does the exposition and histogram layout).

Most figures already exist as counters in the bridge (``Bridge.health()["stats"]``); a custom
collector reads them, the fan-out's rooms and the latest ``health:`` payloads at scrape time, so
serving ``/metrics`` costs the hot paths nothing. The few things that need an observation where
they happen are fed by three calls from ``bridge.server``: ``on_bus`` (every bus message the bridge
accepted: counts per kind, and each tick's engine→bridge lag), ``on_flush`` (flush size, duration, ticks written
and each tick's time to its write) and ``TimedRpc`` (RPC latency per op and outcome).

The per-message path uses ``LiteHistogram`` (a bisect into fixed buckets, no lock: the bridge is
one asyncio thread) rather than ``prometheus_client.Histogram`` (a lock and a linear bucket scan
per observation), since it runs for every tick on the bus.

Each ``Bridge`` has its own ``CollectorRegistry`` (not the process-wide default), so bridges in one
process, and tests, do not share figures.
"""
from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bridge.bus import AsyncRpc
from engine.protocol import RpcError

if TYPE_CHECKING:
    from bridge.server import Bridge

TICK = "tick"
STATUSES = ("ok", "degraded", "down")
# Room names as bridge.server makes them: "s:SYMBOL" (ticks, books), "t:SYMBOL:TF" (candles, indicators).
SYMBOL_ROOM, TIMEFRAME_ROOM = "s:", "t:"
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
FLUSH_EVENTS_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LiteHistogram:
    """Cumulative-bucket histogram for one thread: ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets, running = [], 0
        for bound, count in zip((*map(_le, self.bounds), "+Inf"), self.counts):
            running += count
            buckets.append((bound, running))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


def _le(bound: float) -> str:
    return repr(float(bound))


class BridgeMetrics:
    """The registry of one bridge, its hot-path observations and the ``/metrics`` handler."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.registry = CollectorRegistry(auto_describe=False)
        self.bus_messages: dict[str, int] = {}
        self.ticks_out = 0
        self.engine_lag = LiteHistogram(LAG_BUCKETS)
        self.tick_to_write = LiteHistogram(LAG_BUCKETS)
        self.flush_seconds = Histogram(
            "mt5_bridge_flush_duration_seconds", "Time to serialise and hand over one phase's flush",
            buckets=FLUSH_SECONDS_BUCKETS, registry=self.registry)
        self.flush_events = Histogram(
            "mt5_bridge_flush_events", "Events (per room, before fan-out) in one phase's flush",
            buckets=FLUSH_EVENTS_BUCKETS, registry=self.registry)
        self.rpc_seconds = Histogram(
            "mt5_bridge_rpc_duration_seconds", "Bridge-to-engine RPC round trips, by op and outcome",
            ["op", "outcome"], buckets=RPC_BUCKETS, registry=self.registry)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU, open fds
        self.registry.register(_BridgeCollector(self))

    # Hot-path observations (called by bridge.server)
    def on_bus(self, topic: str, data: dict[str, Any]) -> None:
        """Every message read from the bus: counted by kind; a tick's lag since its ``time_msc``."""
        kind = topic[:topic.find(":")]
        counts = self.bus_messages
        counts[kind] = counts.get(kind, 0) + 1
        if kind == TICK:
            sent = data.get("time_msc")
            if isinstance(sent, int):
                lag = (time.time_ns() // 1_000_000 + self.bridge.server_offset_ms() - sent) / 1e3
                self.engine_lag.observe(lag if lag > 0.0 else 0.0)

    def on_flush(self, phase: int, rooms: dict[str, list[tuple[str, dict[str, Any], bool]]],
                 seconds: float) -> None:
        """One phase's flush: its size and duration, and the ticks it wrote to that phase's clients."""
        self.flush_seconds.observe(seconds)
        events = 0
        ticks: list[int] = []
        for room, room_events in rooms.items():
            events += len(room_events)
            for event, payload, _ in room_events:
                if event == TICK:
                    self.ticks_out += self._members(room, phase)
                    sent = payload.get("time_msc")
                    if isinstance(sent, int):
                        ticks.append(sent)
        self.flush_events.observe(events)
        if ticks:
            now = time.time_ns() // 1_000_000 + self.bridge.server_offset_ms()
            for sent in ticks:
                lag = (now - sent) / 1e3
                self.tick_to_write.observe(lag if lag > 0.0 else 0.0)

    def _members(self, room: str, phase: int) -> int:
        """Members of ``room`` in client group ``phase`` (those this flush writes to)."""
        fanout = self.bridge.fanout
        sids = fanout.rooms.get(room)
        if not sids:
            return 0
        group = fanout.groups[phase] if phase < len(fanout.groups) else {}
        return len(group.keys() & sids) if len(fanout.groups) > 1 else len(sids)

    # HTTP
    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def http_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class TimedRpc(AsyncRpc):
    """``AsyncRpc`` whose calls are timed into ``histogram{op, outcome}`` (``ok`` or the error code)."""

    def __init__(self, histogram: Histogram, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._histogram = histogram

    async def call(self, op: str, **params: Any) -> Any:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await super().call(op, **params)
        except RpcError as exc:
            outcome = str(exc.code)
            raise
        finally:
            self._histogram.labels(op, outcome).observe(time.perf_counter() - started)


class _BridgeCollector:
    """Reads the bridge's counters, rooms and the latest health of the engine and workers."""

    def __init__(self, metrics: BridgeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._bridge()
        yield from self._engine()
        yield from self._components()

    def _bridge(self) -> Iterable[Metric]:
        m = self.metrics
        b = m.bridge
        health = b.health()
        stats = health["stats"]
        yield _gauge("mt5_bridge_healthy", "1 when the bridge's status is ok (engine heard, symbols known)",
                     health["status"] == "ok")
        yield _gauge("mt5_bridge_uptime_seconds", "Seconds since the bridge started", health["uptime"])
        yield _gauge("mt5_bridge_clients", "Connected Socket.IO clients", health["clients"])
        yield _gauge("mt5_bridge_subscriptions", "Room memberships of all clients (symbol and timeframe rooms)",
                     health["subscriptions"])
        by_symbol = GaugeMetricFamily("mt5_bridge_symbol_subscribers",
                                      "Clients subscribed to a symbol (its ticks and order book)", labels=["symbol"])
        by_timeframe = GaugeMetricFamily("mt5_bridge_timeframe_subscribers",
                                         "Clients subscribed to a symbol's timeframe (candles, indicators)",
                                         labels=["symbol", "timeframe"])
        for room, sids in sorted(b.fanout.rooms.items()):
            if room.startswith(SYMBOL_ROOM):
                by_symbol.add_metric([room[len(SYMBOL_ROOM):]], len(sids))
            elif room.startswith(TIMEFRAME_ROOM):
                symbol, _, timeframe = room[len(TIMEFRAME_ROOM):].rpartition(":")
                by_timeframe.add_metric([symbol, timeframe], len(sids))
        yield by_symbol
        yield by_timeframe
        bus = CounterMetricFamily("mt5_bridge_bus_messages", "Messages read from the bus and accepted, by kind "
                                  "(the others count in mt5_bridge_bus_*_dropped_total)", labels=["kind"])
        for kind, count in sorted(m.bus_messages.items()):
            bus.add_metric([kind], count)
        yield bus
        yield _counter("mt5_bridge_ticks_in", "Ticks read from the bus", m.bus_messages.get(TICK, 0))
        yield _counter("mt5_bridge_ticks_out", "Tick events written to clients (one per subscribed client "
                       "per flush; a slow client's skipped ones count in mt5_bridge_skipped_slow_total)", m.ticks_out)
        for key, doc in (
            ("updates", "Updates queued for rooms with members"),
            ("conflated", "Updates replaced by a newer one of the same room within a flush (dropped)"),
            ("skipped_slow", "Droppable updates not sent to a client with a full buffer"),
            ("slow_disconnects", "Clients disconnected as slow consumers"),
            ("rate_limited", "Client requests refused by the rate limit"),
            ("errors_sent", "error events sent to clients"),
            ("bus_gaps", "Sequence gaps seen on the bus (lost messages)"),
            ("bus_restarts", "Publisher restarts seen on the bus (new epoch)"),
            ("bus_malformed_dropped", "Bus messages dropped as malformed: undecodable, or a topic or payload "
             "not of its declared shape"),
            ("bus_unknown_dropped", "Bus messages dropped for a symbol the engine does not serve"),
            ("components_refused", "health: messages of a new component refused while the component table was full"),
            ("resync_failures", "Snapshot resyncs the engine did not answer (retried with backoff)"),
            ("resync_refused", "Snapshot prefixes the engine refused as too_many even as a single topic"),
            ("cache_hits", "get_candles answered from the cache"),
            ("cache_misses", "get_candles that asked the engine"),
            ("rpc_timeouts", "RPC calls the engine did not answer in time"),
            ("flushes", "Phase flushes"),
            ("packets_sent", "Socket.IO packets written to clients"),
        ):
            if isinstance(stats.get(key), (int, float)):
                yield _counter(f"mt5_bridge_{key}", doc, stats[key])
        yield _gauge("mt5_bridge_sessions_pending", "Engine.IO sessions that have not joined the namespace yet",
                     health["sessions_pending"])
        for key, name, doc in (
            ("refused", "mt5_bridge_requests_refused", "HTTP requests refused, by reason (host, origin)"),
            ("disconnected", "mt5_bridge_clients_disconnected", "Clients disconnected by the bridge, by reason"),
        ):
            family = CounterMetricFamily(name, doc, labels=["reason"])
            for reason, count in sorted(stats[key].items()):
                family.add_metric([reason], count)
            yield family
        yield _counter("mt5_bridge_library_errors", "Errors python-socketio, python-engineio or aiohttp reported "
                       "for bad client input", stats["library_errors"])
        malformed = getattr(b.bus, "malformed", None)
        if isinstance(malformed, int):
            yield _counter("mt5_bridge_bus_malformed", "Bus frames that could not be decoded", malformed)
        yield m.engine_lag.family("mt5_bridge_engine_lag_seconds",
                                  "Tick time_msc (engine) to its receipt by the bridge (1 ms resolution)")
        yield m.tick_to_write.family("mt5_bridge_tick_to_write_seconds",
                                     "Tick time_msc (engine) to the end of the flush that wrote it to clients")

    def _engine(self) -> Iterable[Metric]:
        b = self.metrics.bridge
        status = b.engine_status()
        yield _gauge("mt5_engine_up", "1 while the bridge hears the engine's health topic", status != "down")
        states = GaugeMetricFamily("mt5_engine_status", "The engine's status as the bridge sees it (1 = current)",
                                   labels=["status"])
        for name in STATUSES:
            states.add_metric([name], 1.0 if status == name else 0.0)
        yield states
        h = b.engine_health
        if not h:
            return
        now = time.monotonic()
        yield _gauge("mt5_engine_health_age_seconds", "Seconds since the last health:engine: message",
                     now - b.engine_seen)
        for key, name, doc, kind in (
            ("ticks_per_s", "mt5_engine_ticks_per_second", "Ticks per second the engine took in (its own figure)", "g"),
            ("ticks_total", "mt5_engine_ticks", "Ticks the engine took in", "c"),
            ("messages_total", "mt5_engine_messages", "Messages the engine published", "c"),
            ("late_ticks", "mt5_engine_late_ticks", "Ticks older than their bar (not aggregated)", "c"),
            ("rpc_requests", "mt5_engine_rpc_requests", "RPC requests the engine answered", "c"),
            ("rpc_errors", "mt5_engine_rpc_errors", "RPC requests answered with an error", "c"),
            ("symbols", "mt5_engine_symbols", "Symbols the engine serves", "g"),
            ("uptime_s", "mt5_engine_uptime_seconds", "Seconds since the engine started", "g"),
            ("source_connected", "mt5_engine_source_connected", "1 while the market source is connected", "g"),
            ("forged_dropped", "mt5_engine_forged_dropped", "Messages of other publishers dropped: topics only "
             "the engine may publish, malformed or undecodable", "c"),
            ("foreign_topics", "mt5_engine_foreign_topics", "Other publishers' topics cached for snapshot", "g"),
            ("rpc_requests_refused", "mt5_engine_rpc_requests_refused", "RPC requests refused as over a bound", "c"),
            ("rpc_replies_dropped", "mt5_engine_rpc_replies_dropped", "RPC replies dropped for clients that do not "
             "read theirs", "c"),
            ("rpc_connections_closed", "mt5_engine_rpc_connections_closed", "RPC connections closed by the engine "
             "for sending more than it could hold", "c"),
            ("bus_subscriptions_refused", "mt5_engine_bus_subscriptions_refused", "Bus subscriptions over the "
             "budget (their connection is closed)", "c"),
            ("bus_subscription_bytes", "mt5_engine_bus_subscription_bytes", "Distinct subscription prefix bytes "
             "held for all bus subscribers", "g"),
            ("bus_connections_closed", "mt5_engine_bus_connections_closed", "Bus subscriber connections closed by "
             "the engine", "c"),
        ):
            value = h.get(key)
            if isinstance(value, (bool, int, float)):
                yield _gauge(name, doc, value) if kind == "g" else _counter(name, doc, value)

    def _components(self) -> Iterable[Metric]:
        """Every other ``health:COMPONENT:`` publisher: indicator workers and the launcher (at most
        ``bridge.components.MAX_COMPONENTS``, their figures of the types ``bridge.payloads`` declares)."""
        b = self.metrics.bridge
        now = time.monotonic()
        stale = b.config.engine_stale_ms / 1000.0
        up = GaugeMetricFamily("mt5_component_up", "1 while a component's health topic is heard "
                               "(indicator workers, the launcher)", labels=["component"])
        ind = {name: GaugeMetricFamily(name, doc, labels=["component", "shard"]) for name, doc in (
            ("mt5_indicators_up", "1 while the worker's health topic is heard"),
            ("mt5_indicators_healthy", "1 while the worker reports ok"),
            ("mt5_indicators_updates_per_second", "Indicator updates per second (the worker's own figure)"),
            ("mt5_indicators_lag_max_seconds", "Largest candle-to-indicator lag in the worker's last health period"),
            ("mt5_indicators_series", "(symbol, timeframe) series the worker keeps"),
            ("mt5_indicators_uptime_seconds", "Seconds since the worker started"),
        )}
        ind_counters = {name: CounterMetricFamily(name, doc, labels=["component", "shard"]) for name, doc in (
            ("mt5_indicators_updates", "Indicator updates the worker published"),
            ("mt5_indicators_rewarms", "Series the worker warmed up again from history"),
            ("mt5_indicators_malformed", "Bus messages the worker could not decode"),
            ("mt5_indicators_rewarms_limited", "Candles dropped because their series warmed up too recently"),
        )}
        children = GaugeMetricFamily("mt5_service_child_running", "1 while mt5-service's child runs",
                                     labels=["child"])
        restarts = CounterMetricFamily("mt5_service_child_restarts", "Restarts of mt5-service's child",
                                       labels=["child"])
        for component, (seen, h) in b.components.items(now):
            alive = now - seen <= stale
            up.add_metric([component], 1.0 if alive else 0.0)
            if component.startswith("indicators"):
                labels = [component, str(h.get("shard", ""))]
                ind["mt5_indicators_up"].add_metric(labels, 1.0 if alive else 0.0)
                ind["mt5_indicators_healthy"].add_metric(labels, 1.0 if alive and h.get("status") == "ok" else 0.0)
                for key, name, scale in (("updates_per_s", "mt5_indicators_updates_per_second", 1.0),
                                         ("lag_us_max", "mt5_indicators_lag_max_seconds", 1e-6),
                                         ("series", "mt5_indicators_series", 1.0),
                                         ("uptime_s", "mt5_indicators_uptime_seconds", 1.0)):
                    if isinstance(h.get(key), (int, float)):
                        ind[name].add_metric(labels, h[key] * scale)
                for key, name in (("updates_total", "mt5_indicators_updates"), ("rewarms", "mt5_indicators_rewarms"),
                                  ("malformed", "mt5_indicators_malformed"),
                                  ("rewarms_limited", "mt5_indicators_rewarms_limited")):
                    if isinstance(h.get(key), (int, float)):
                        ind_counters[name].add_metric(labels, h[key])
            elif component == "service" and isinstance(h.get("children"), dict):
                for child, info in sorted(h["children"].items()):
                    if isinstance(info, dict):
                        children.add_metric([child], 1.0 if alive and info.get("running") else 0.0)
                        restarts.add_metric([child], float(info.get("restarts") or 0))
        yield up
        yield from ind.values()
        yield from ind_counters.values()
        yield children
        yield restarts


def _gauge(name: str, doc: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))
