"""``GET /metrics``: the bridge's figures, and the engine's and workers' from their health topics,
in the Prometheus text format (``prometheus_client`` does the exposition).

The bridge's own families are ``bridge.stats.FIGURES``, the declaration ``/health`` renders too:
a custom collector turns each figure into its family at scrape time, so serving ``/metrics`` costs
the hot paths nothing and a figure cannot be missing from one of the two. The engine's and the
other components' families come from their latest ``health:`` payloads, each declared once below.

Each ``Bridge`` has its own ``CollectorRegistry`` (not the process-wide default), so bridges in one
process, and tests, do not share figures.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bridge.stats import COUNTER, FIGURES, HISTOGRAM, Figure

if TYPE_CHECKING:
    from bridge.server import Bridge

STATUSES = ("ok", "degraded", "down")


class BridgeMetrics:
    """The registry of one bridge and the ``/metrics`` handler."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU, open fds
        self.registry.register(_BridgeCollector(bridge))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def http_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def figure_family(figure: Figure, value: Any) -> Metric:
    """The Prometheus family of one declared figure with its current ``value``."""
    labels = list(figure.labels)
    if figure.kind == HISTOGRAM:
        histograms = HistogramMetricFamily(figure.family, figure.help, labels=labels)
        for names, histogram in figure.samples(value):
            histograms.add_metric(list(names), histogram.buckets(), histogram.total)
        return histograms
    kind = CounterMetricFamily if figure.kind == COUNTER else GaugeMetricFamily
    family = kind(figure.family, figure.help, labels=labels)
    for names, number in figure.samples(value):
        family.add_metric(list(names), figure.number(number))
    return family


class _BridgeCollector:
    """The declared figures of the bridge, and the latest health of the engine and workers."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        for figure in FIGURES:
            yield figure_family(figure, figure.value(self.bridge))
        yield from self._engine()
        yield from self._components()

    def _engine(self) -> Iterable[Metric]:
        b = self.bridge
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
        yield _gauge("mt5_engine_health_age_seconds", "Seconds since the last health:engine: message",
                     b.engine_silence_s())
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
        b = self.bridge
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
