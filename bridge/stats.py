"""The bridge's figures, each declared once in ``FIGURES``: ``/health`` (``render_health``) and
``/metrics`` (``bridge.metrics``) both render that one declaration, so a figure cannot be in one
and missing from the other.

A ``Figure`` names its ``/health`` key, its Prometheus family (``mt5_bridge_`` and ``metric``, the
key unless told), its kind, its help text and where its value comes from: a function of the
bridge's public surface. The module that owns a figure keeps it as a plain public int or exposes
it through a public method; what is observed where it happens (bus messages by kind, ticks
written, latencies) is kept by ``BridgeStats``, which ``bridge.server`` feeds. Nothing here reads
another module's private state.

A counter or gauge is a number, a labelled one a mapping nested one level per label
(``{symbol: {timeframe: n}}``), a histogram a ``LiteHistogram`` (``/health`` shows the recent
values' percentiles times ``scale``, ``/metrics`` the cumulative buckets).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from bridge.bus import AsyncRpc
from bridge.components import EXPIRE_S
from bridge.histogram import LiteHistogram
from bridge.subscriptions import subscription_of
from engine.protocol import ORDER, POSITION, TICK, RpcError

if TYPE_CHECKING:
    from bridge.server import Bridge

Kind = Literal["counter", "gauge", "histogram"]
COUNTER: Final = "counter"
GAUGE: Final = "gauge"
HISTOGRAM: Final = "histogram"
PREFIX = "mt5_bridge_"
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
FLUSH_EVENTS_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENCY_WINDOW = 500  # recent ticks (~8 s for 5 symbols at the sim's default rate)
FLUSH_WINDOW = 640  # recent flushes (8 s at 50 ms and 4 phases)
RPC_WINDOW = 100  # recent calls of one op and outcome
MS = 1000.0  # /health shows seconds as milliseconds
# Outcomes kept apart per op (``ok`` and the error codes the engine answered, first come); any
# further one counts as ``other``, so the label set stays bounded whatever an engine answers.
MAX_OUTCOMES = 12
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure of the bridge, as ``/health`` and ``/metrics`` both show it."""

    key: str
    kind: Kind
    help: str
    value: Callable[[Bridge], Any]
    labels: tuple[str, ...] = ()
    metric: str = ""  # the family's name after ``mt5_bridge_`` when it is not ``key``
    top: bool = False  # a field of ``/health`` itself rather than of its ``stats``
    scale: float = 1.0  # histograms: what ``/health`` multiplies the recent values by
    number: Callable[[Any], float] = float  # the metric's value of a ``/health`` value

    @property
    def family(self) -> str:
        """The Prometheus family name (counters get ``_total`` in the exposition)."""
        return PREFIX + (self.metric or self.key)

    def samples(self, value: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        """``(label values, leaf)`` of ``value``: one per labelled series, ``((), value)`` unlabelled."""
        return _flat(value, len(self.labels))

    def shown(self, value: Any) -> Any:
        """``value`` as ``/health`` shows it (a fresh copy: the caller may keep it)."""
        if self.kind == HISTOGRAM:
            return _nested(value, len(self.labels), lambda h: h.percentiles(self.scale))
        return _nested(value, len(self.labels), lambda v: v)


def _flat(value: Any, depth: int, labels: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if depth == 0:
        yield labels, value
        return
    for label, inner in sorted(value.items()):
        yield from _flat(inner, depth - 1, (*labels, label))


def _nested(value: Any, depth: int, leaf: Callable[[Any], Any]) -> Any:
    if depth == 0:
        return leaf(value)
    return {label: _nested(inner, depth - 1, leaf) for label, inner in sorted(value.items())}


def _is_ok(status: str) -> float:
    return 1.0 if status == "ok" else 0.0


def _symbol_subscribers(sizes: Mapping[str, int]) -> dict[str, int]:
    return {sub[0]: n for room, n in sizes.items() if (sub := subscription_of(room)) and sub[1] is None}


def _timeframe_subscribers(sizes: Mapping[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for room, n in sizes.items():
        sub = subscription_of(room)
        if sub is not None and sub[1] is not None:
            out.setdefault(sub[0], {})[sub[1]] = n
    return out


FIGURES: tuple[Figure, ...] = (
    # Fields of /health itself
    Figure("status", GAUGE, "1 when the bridge's status is ok (engine heard, symbols known)",
           lambda b: b.bridge_status(), metric="healthy", top=True, number=_is_ok),
    Figure("uptime", GAUGE, "Seconds since the bridge started",
           lambda b: round(time.monotonic() - b.started, 1), metric="uptime_seconds", top=True),
    Figure("clients", GAUGE, "Connected Socket.IO clients", lambda b: len(b.clients), top=True),
    Figure("sessions_pending", GAUGE, "Engine.IO sessions that have not joined the namespace yet",
           lambda b: len(b.sessions.pending), top=True),
    Figure("subscriptions", GAUGE, "Room memberships of all clients (symbol and timeframe rooms)",
           lambda b: b.fanout.subscriptions(), top=True),
    # /health's stats
    Figure("symbol_subscribers", GAUGE, "Clients subscribed to a symbol (its ticks and order book)",
           lambda b: _symbol_subscribers(b.fanout.room_sizes()), labels=("symbol",)),
    Figure("timeframe_subscribers", GAUGE, "Clients subscribed to a symbol's timeframe (candles, indicators)",
           lambda b: _timeframe_subscribers(b.fanout.room_sizes()), labels=("symbol", "timeframe")),
    Figure("bus_messages", COUNTER, "Messages read from the bus and accepted, by kind "
           "(the others count in mt5_bridge_bus_*_dropped_total)", lambda b: b.stats.bus_messages, labels=("kind",)),
    Figure("ticks_in", COUNTER, "Ticks read from the bus", lambda b: b.stats.bus_messages.get(TICK, 0)),
    Figure("ticks_out", COUNTER, "Tick events written to clients (one per subscribed client per flush; a slow "
           "client's skipped ones count in mt5_bridge_skipped_slow_total)", lambda b: b.stats.ticks_out),
    Figure("flushes", COUNTER, "Phase flushes", lambda b: b.flushes),
    Figure("updates", COUNTER, "Updates queued for rooms with members", lambda b: b.batchers[0].updates),
    Figure("conflated", COUNTER, "Updates replaced by a newer one of the same room within a flush (dropped)",
           lambda b: sum(batcher.conflated for batcher in b.batchers)),
    Figure("deliveries", COUNTER, "Flush bundles handed to clients (one per client per flush with something "
           "to send)", lambda b: b.fanout.stats.deliveries),
    Figure("packets_sent", COUNTER, "Socket.IO packets written to clients", lambda b: b.fanout.stats.packets_sent),
    Figure("skipped_slow", COUNTER, "Droppable updates not sent to a client with a full buffer",
           lambda b: b.fanout.stats.skipped_slow),
    Figure("slow_disconnects", COUNTER, "Clients disconnected as slow consumers",
           lambda b: b.fanout.stats.slow_disconnects),
    Figure("raw_writes", COUNTER, "Flush bundles written straight to a client's websocket (the fast path)",
           lambda b: b.transport.counts.raw_writes),
    Figure("queued_writes", COUNTER, "Flush bundles queued through python-engineio (long-polling, a websocket "
           "with a backlog, the public path)", lambda b: b.transport.counts.queued_writes),
    Figure("rate_limited", COUNTER, "Client requests refused by their rate limit", lambda b: b.rate_limited),
    Figure("indicator_budget_refused", COUNTER, "get_indicators with a client's own set refused because the "
           "bridge-wide indicator budget (INDICATOR_BUDGET_VALUES_PER_S) was spent",
           lambda b: b.indicator_budget_refused),
    Figure("errors_sent", COUNTER, "error events sent to clients", lambda b: b.errors_sent),
    Figure("bus_gaps", COUNTER, "Sequence gaps seen on the bus (lost messages)", lambda b: b.tracker.gaps),
    Figure("bus_restarts", COUNTER, "Publisher restarts seen on the bus (new epoch)", lambda b: b.tracker.restarts),
    Figure("bus_malformed_dropped", COUNTER, "Bus messages dropped as malformed: undecodable, or a topic or "
           "payload not of its declared shape",
           lambda b: b.malformed_drops.count + (b.bus.malformed if b.bus else 0)),
    Figure("bus_undecodable", COUNTER, "Bus frames that could not be decoded (part of bus_malformed_dropped)",
           lambda b: b.bus.malformed if b.bus else 0, metric="bus_malformed"),
    Figure("bus_unknown_dropped", COUNTER, "Bus messages dropped for a symbol the engine does not serve",
           lambda b: b.unknown_drops.count),
    Figure("relay_errors", COUNTER, "Accepted bus messages the bridge failed to relay (a bug; logged)",
           lambda b: b.relay_errors.count),
    Figure("components_refused", COUNTER, "health: messages of a new component refused while the component "
           "table was full", lambda b: b.components.refused),
    Figure("components_expired", COUNTER, f"Components forgotten after {EXPIRE_S:g} s without a health: message",
           lambda b: b.components.expired),
    Figure("resync_failures", COUNTER, "Snapshot resyncs the engine did not answer (retried with backoff)",
           lambda b: b.resync_failures),
    Figure("resync_refused", COUNTER, "Snapshot prefixes the engine refused as too_many even as a single topic",
           lambda b: b.resync_refused),
    Figure("open_positions", GAUGE, "The account's open positions the bridge holds (get_positions)",
           lambda b: len(b.open_items[POSITION])),
    Figure("open_orders", GAUGE, "The account's pending orders the bridge holds (get_orders)",
           lambda b: len(b.open_items[ORDER])),
    Figure("cache_hits", COUNTER, "get_candles answered from the cache", lambda b: b.candles.hits),
    Figure("cache_misses", COUNTER, "get_candles that asked the engine", lambda b: b.candles.misses),
    Figure("candle_fetches", COUNTER, "Candle requests sent to the engine (concurrent misses share one)",
           lambda b: b.candle_fetches),
    Figure("rpc_timeouts", COUNTER, "RPC calls the engine did not answer in time",
           lambda b: b.rpc.timeouts if b.rpc else 0),
    Figure("refused", COUNTER, "HTTP requests refused, by reason (host, origin)",
           lambda b: b.refused, labels=("reason",), metric="requests_refused"),
    Figure("disconnected", COUNTER, "Clients disconnected by the bridge, by reason",
           lambda b: b.sessions.disconnects, labels=("reason",), metric="clients_disconnected"),
    Figure("library_errors", COUNTER, "Errors python-socketio, python-engineio or aiohttp reported for bad "
           "client input", lambda b: b.library_log.errors),
    Figure("engine_lag_ms", HISTOGRAM, "Tick time_msc (engine) to its receipt by the bridge (1 ms resolution)",
           lambda b: b.stats.engine_lag, metric="engine_lag_seconds", scale=MS),
    Figure("tick_to_write_ms", HISTOGRAM, "Tick time_msc (engine) to the end of the flush that wrote it to "
           "clients", lambda b: b.stats.tick_to_write, metric="tick_to_write_seconds", scale=MS),
    Figure("flush_ms", HISTOGRAM, "Time to serialise and hand over one phase's flush",
           lambda b: b.stats.flush_seconds, metric="flush_duration_seconds", scale=MS),
    Figure("flush_late_ms", HISTOGRAM, "How late a phase's flush started after its slot",
           lambda b: b.stats.flush_late, metric="flush_late_seconds", scale=MS),
    Figure("flush_events", HISTOGRAM, "Events (per room, before fan-out) in one phase's flush",
           lambda b: b.stats.flush_events),
    Figure("rpc_ms", HISTOGRAM, "Bridge-to-engine RPC round trips, by op and outcome",
           lambda b: b.stats.rpc, labels=("op", "outcome"), metric="rpc_duration_seconds", scale=MS),
)


def render_health(bridge: Bridge) -> tuple[dict[str, Any], dict[str, Any]]:
    """The declared figures as ``/health`` shows them: (its own fields, its ``stats``)."""
    top: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for figure in FIGURES:
        (top if figure.top else stats)[figure.key] = figure.shown(figure.value(bridge))
    return top, stats


class BridgeStats:
    """The figures observed where they happen: bus messages by kind, ticks written, latencies.

    ``clock_offset_ms`` is how far the engine's market clock is ahead of UTC, so that a tick's
    ``time_msc`` compares with the bridge's clock."""

    def __init__(self, clock_offset_ms: Callable[[], int]) -> None:
        self.clock_offset_ms = clock_offset_ms
        self.bus_messages: dict[str, int] = {}
        self.ticks_out = 0
        self.engine_lag = LiteHistogram(LAG_BUCKETS, LATENCY_WINDOW)
        self.tick_to_write = LiteHistogram(LAG_BUCKETS, LATENCY_WINDOW)
        self.flush_seconds = LiteHistogram(FLUSH_SECONDS_BUCKETS, FLUSH_WINDOW)
        self.flush_late = LiteHistogram(LAG_BUCKETS, FLUSH_WINDOW)
        self.flush_events = LiteHistogram(FLUSH_EVENTS_BUCKETS, FLUSH_WINDOW)
        self.rpc: dict[str, dict[str, LiteHistogram]] = {}

    def on_bus(self, topic: str, data: dict[str, Any]) -> None:
        """A message read from the bus and accepted: counted by kind; a tick's lag since its ``time_msc``."""
        kind = topic[:topic.find(":")]
        counts = self.bus_messages
        counts[kind] = counts.get(kind, 0) + 1
        if kind == TICK:
            sent = data.get("time_msc")
            if isinstance(sent, int):
                lag = (time.time_ns() // 1_000_000 + self.clock_offset_ms() - sent) / 1e3
                self.engine_lag.observe(lag if lag > 0.0 else 0.0)

    def on_flush(self, rooms: dict[str, list[tuple[str, dict[str, Any], bool]]], seconds: float,
                 members: Callable[[str], int]) -> None:
        """One phase's flush of ``rooms`` (``members(room)``: the clients it wrote the room to),
        which took ``seconds``: its size, and each tick's time to its write."""
        self.flush_seconds.observe(seconds)
        events = 0
        ticks: list[int] = []
        for room, room_events in rooms.items():
            events += len(room_events)
            for event, payload, _ in room_events:
                if event == TICK:
                    self.ticks_out += members(room)
                    sent = payload.get("time_msc")
                    if isinstance(sent, int):
                        ticks.append(sent)
        self.flush_events.observe(events)
        if ticks:
            now = time.time_ns() // 1_000_000 + self.clock_offset_ms()
            for sent in ticks:
                lag = (now - sent) / 1e3
                self.tick_to_write.observe(lag if lag > 0.0 else 0.0)

    def on_rpc(self, op: str, outcome: str, seconds: float) -> None:
        """One bridge-to-engine call: ``outcome`` is ``ok`` or the error code."""
        by_outcome = self.rpc.setdefault(op, {})
        histogram = by_outcome.get(outcome)
        if histogram is None:
            if len(by_outcome) >= MAX_OUTCOMES - 1:
                outcome = OTHER
            histogram = by_outcome.get(outcome)
            if histogram is None:
                histogram = by_outcome[outcome] = LiteHistogram(RPC_BUCKETS, RPC_WINDOW)
        histogram.observe(seconds)


class TimedRpc(AsyncRpc):
    """``AsyncRpc`` whose calls are timed into ``BridgeStats.on_rpc`` (by op, ``ok`` or the error code)."""

    def __init__(self, stats: BridgeStats, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats

    async def call(self, op: str, **params: Any) -> Any:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await super().call(op, **params)
        except RpcError as exc:
            outcome = str(exc.code)
            raise
        finally:
            self.stats.on_rpc(op, outcome, time.perf_counter() - started)
