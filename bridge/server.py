"""The Socket.IO bridge: python-socketio on aiohttp, fed by the bus, answering from cache or RPC.

Tasks: the bus reader (each payload checked against its declared shape, ``bridge.payloads``,
and for a symbol the engine serves, the rest dropped and counted; updates into the ``Batcher`` of
each phase, caches, engine and component status), the flusher (every ``BATCH_INTERVAL_MS /
BATCH_PHASES``: serialise each room of one phase once and hand it to the ``Fanout`` for that
phase's client group), the RPC receiver and the monitor (engine health, ``health`` events on
change, snapshot resync, symbol list refresh).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from typing import Any

import socketio
import zmq.asyncio
from aiohttp import web

from bridge.activity import OpenItems
from bridge.api import EVENTS, largest_indicator_work, unstamped
from bridge.batching import Batcher, encode_room
from bridge.bus import RESTART, AsyncRpc, BusReader, EveryLog, SeqTracker
from bridge.cache import CandleCache, ValueCache
from bridge.components import ComponentTable
from bridge.config import BridgeConfig
from bridge.events import ClientNamespace
from bridge.fanout import ALL, Fanout
from bridge.hosts import guard_middleware
from bridge.metrics import BridgeMetrics
from bridge.payloads import SHAPES, SYMBOL, Malformed, shapes_for
from bridge.payloads import check as check_payload
from bridge.quietlog import INTERVAL_S, LibraryLog
from bridge.ratelimit import TokenBucket
from bridge.sessions import Sessions
from bridge.stats import BridgeStats, TimedRpc, render_health
from bridge.subscriptions import Subscriptions, symbol_room, timeframe_room
from bridge.transport import PUBLIC, TextPacket, open_transport
from bridge.validation import ClientError, Context
from bridge.webui import add_dashboard
from engine.logs import RateLimitedLog
from engine.activity import CLOSED
from engine.protocol import (ACCOUNT, BOOK, CANDLE, DEAL, HEALTH, INDICATOR, ORDER, POSITION, SUMMARY, TICK, ErrorCode,
                             RpcError)
from engine.security import CurveClient

log = logging.getLogger("bridge")

try:
    VERSION = metadata.version("mt5-market-data")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"

SUBSCRIBED_PREFIXES = [f"{kind}:".encode() for kind in SHAPES]
# What a resync asks the engine's snapshot for, kind by kind (health comes live every second):
# one prefix for everything could be refused as too_many by foreign topics alone.
RESYNC_KINDS = (TICK, CANDLE, INDICATOR, BOOK, ACCOUNT, SUMMARY, POSITION, ORDER)
# The account's open positions and pending orders: sets kept by ticket (bridge.activity), each
# change pushed to every client as this event, the latest per ticket per flush.
OPEN_ITEM_EVENTS = {POSITION: "position_update", ORDER: "order_update"}
MONITOR_INTERVAL_S = 0.25
RESYNC_BACKOFF_MAX_S = 8.0
# Snapshot errors that a narrower prefix may not have.
NARROWED_ON = (ErrorCode.TOO_MANY, ErrorCode.TIMEOUT)
SYMBOLS_RETRY_S = 0.25
# Engine errors a client may see as they are; anything else becomes ``unavailable``.
PASSED_CODES = {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_SYMBOL, ErrorCode.UNKNOWN_TIMEFRAME, ErrorCode.TOO_MANY}


def engine_error(event: str, exc: RpcError) -> ClientError:
    """The client's error for an engine error in answering ``event``."""
    code = exc.code if exc.code in PASSED_CODES else ErrorCode.UNAVAILABLE
    return ClientError(code, f"{event}: {exc.message or exc.code}", event)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Client:
    bucket: TokenBucket
    limited_at: float = float("-inf")
    subscriptions: Subscriptions = field(default_factory=Subscriptions)


class Bridge:
    """One bridge process: ``app`` is the aiohttp application to run."""

    def __init__(self, config: BridgeConfig) -> None:
        """Raises ``engine.security.SecurityError`` when the CURVE key files cannot be used."""
        self.config = config
        self.shapes = shapes_for(config.indicator_set)  # the ind: payload holds the configured keys
        self.curve = CurveClient.load(config.curve_client_secret, config.curve_server_key)
        rule = config.host_rule
        self.bad_input = RateLimitedLog(log, INTERVAL_S)
        self.library_log = LibraryLog(logging.getLogger("bridge.socketio"), self.bad_input)
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            # The middleware refused other origins already; this gives the allowed ones their
            # Access-Control-Allow-Origin.
            cors_allowed_origins=lambda origin, environ: (
                origin is not None and rule.origin_ok(origin, environ.get("HTTP_HOST"))),
            max_http_buffer_size=config.max_message_bytes,
            serializer=TextPacket,
            logger=self.library_log,
            engineio_logger=self.library_log,
        )
        # aiohttp logs a traceback for every malformed HTTP request: one rate-limited line instead.
        logging.getLogger("aiohttp.server").addFilter(self.library_log)
        self.refused: Counter[str] = Counter({"host": 0, "origin": 0})
        # Host and Origin are checked before anything else sees a request, Socket.IO included.
        self.app = web.Application(middlewares=[guard_middleware(rule, self.refused, self.bad_input)])
        self.sio.attach(self.app)
        self.app.router.add_get("/health", self.http_health)
        self.stats = BridgeStats(self.server_offset_ms)
        self.metrics = BridgeMetrics(self)
        self.app.router.add_get("/metrics", self.metrics.http_metrics)
        add_dashboard(self.app)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)
        # The client events this bridge answers (its own copy: one may be declared on it alone).
        self.events = EVENTS.copy()
        self.sio.register_namespace(ClientNamespace(self, self.events))
        self.sessions = Sessions(self.sio, config.client_buffer_hard, config.session_join_timeout_ms / 1000.0,
                                 self.bad_input)
        self.transport = open_transport(self.sio, self.sessions, config.fast_path)
        if self.transport.delivery == PUBLIC:
            log.warning("bridge: delivery through the public python-engineio API (slower): %s", self.transport.reason)
        else:
            log.info("bridge: delivery through the fast path (prebuilt frames, one write per client)")
        self.fanout = Fanout(self.transport, config.client_buffer_soft, config.client_buffer_hard,
                             config.batch_phases)
        # One batcher per phase: each client group is flushed every BATCH_INTERVAL_MS, the groups
        # staggered, so a flush's writes are spread over the interval instead of one burst.
        self.batchers = [Batcher() for _ in range(config.batch_phases)]
        self.candles = CandleCache(config.cache_ttl_seconds, config.max_candles)
        self.open_items = {kind: OpenItems() for kind in OPEN_ITEM_EVENTS}
        self._unsequenced: dict[str, Callable[[str, tuple[str, ...], dict[str, Any]], None]] = {
            HEALTH: lambda kind, names, data: self._on_health(names[0], data),
            **dict.fromkeys(OPEN_ITEM_EVENTS, self._on_open_item), DEAL: self._on_deal}
        self.symbols = ValueCache(config.cache_ttl_seconds)
        self.symbol_names: frozenset[str] | None = None
        self.tracker = SeqTracker()
        self.malformed_drops = EveryLog("malformed bus messages dropped")
        self.unknown_drops = EveryLog("bus messages dropped for symbols the engine does not serve")
        self.relay_errors = EveryLog("bus messages that could not be relayed")
        self.sequence_breaks = EveryLog("bus sequence breaks (lost messages or a restarted publisher)")
        self.components = ComponentTable()
        self.clients: dict[str, Client] = {}
        self.started = time.monotonic()
        self.engine_seen = float("-inf")
        self.engine_health: dict[str, Any] = {}
        self.status = "degraded"
        self.resync_needed = True
        self.resync_backoff = MONITOR_INTERVAL_S
        self.resync_at = 0.0
        self.resync_failures = 0
        self.resync_refused = 0  # topics the engine refused as too_many even one by one
        self.flushes = 0
        self.rate_limited = 0  # counted by the ClientNamespace and bridge.api.charge
        # What all clients' own indicator sets may cost the event loop together (bridge.api.charge).
        self.indicator_budget = TokenBucket(config.indicator_budget_values_per_s,
                                            largest_indicator_work(config.max_candles), time.monotonic())
        self.indicator_budget_refused = 0
        self.errors_sent = 0  # counted by the ClientNamespace
        self.candle_fetches = 0
        self._fetching: dict[tuple[str, str], tuple[int, asyncio.Task[list[dict[str, Any]]]]] = {}
        self._ctx: zmq.asyncio.Context | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.rpc: AsyncRpc | None = None
        self.bus: BusReader | None = None

    # Lifecycle
    async def _start(self, app: web.Application) -> None:
        self._ctx = zmq.asyncio.Context()
        self.rpc = TimedRpc(self.stats, self._ctx, self.config.rpc_endpoint,
                            self.config.rpc_timeout_ms, self.curve)
        self.bus = BusReader(self._ctx, self.config.bus_endpoint, SUBSCRIBED_PREFIXES, curve=self.curve)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(coro) for coro in
                       (self.rpc.run(), self._read_bus(), self._flush_loop(), self._monitor(),
                        self.sessions.run())]

    async def _stop(self, app: web.Application) -> None:
        logging.getLogger("aiohttp.server").removeFilter(self.library_log)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for closeable in (self.rpc, self.bus):
            if closeable is not None:
                closeable.close()
        if self._ctx is not None:
            self._ctx.term()

    # Socket.IO: connect and disconnect (from the ClientNamespace), and what the client API's
    # handlers (bridge.api) ask of the bridge
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = self.config.token
        if token:
            given = auth.get("token") if isinstance(auth, dict) else None
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
                raise socketio.exceptions.ConnectionRefusedError("unauthorized: a valid auth.token is required")
        self.transport.register(sid)
        self.clients[sid] = Client(TokenBucket(self.config.rate_limit_per_s, self.config.rate_limit_burst,
                                               time.monotonic()))
        self.fanout.add_client(sid)
        await self.sio.emit("connected", {"sid": sid, "server_time": now_ms(), "version": VERSION}, to=sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.clients.pop(sid, None)
        self.fanout.remove_client(sid)
        self.transport.forget(sid)

    async def request_context(self) -> Context:
        """What a client request is checked against; the symbol list fetched now if it is not known
        yet (the engine just started)."""
        if self.symbol_names is None:
            try:
                await self.symbol_list()
            except ClientError:
                pass
        return Context(self.symbol_names, self.config.timeframes, self.config.max_candles)

    async def engine_call(self, event: str, op: str, **params: Any) -> Any:
        """An engine request; its error becomes the client's ``ClientError``."""
        assert self.rpc is not None
        try:
            return await self.rpc.call(op, **params)
        except RpcError as exc:
            raise engine_error(event, exc) from None

    async def symbol_list(self) -> list[dict[str, Any]]:
        """The engine's symbols, cached for CACHE_TTL_SECONDS."""
        cached = self.symbols.get(time.monotonic())
        if cached is None:
            cached = await self.engine_call("get_symbols", "symbols")
            self._set_symbols(cached)
        return cached

    def _set_symbols(self, symbols: list[dict[str, Any]]) -> None:
        self.symbols.put(symbols, time.monotonic())
        self.symbol_names = frozenset(s["name"] for s in symbols if isinstance(s, dict) and SYMBOL.test(s.get("name")))
        self.candles.retain(self.symbol_names)

    async def recent_candles(self, event: str, symbol: str, timeframe: str, count: int) -> list[dict[str, Any]]:
        """The last ``count`` bars for ``event``: from the cache, else from the engine; concurrent
        misses share one request."""
        bars = self.candles.get(symbol, timeframe, count, time.monotonic())
        if bars is not None:
            return bars
        key, asked = (symbol, timeframe), self.candles.fetch_count(count)
        inflight = self._fetching.get(key)
        if inflight is None or inflight[0] < asked:
            task = asyncio.get_running_loop().create_task(self._fetch_candles(symbol, timeframe, asked))
            inflight = self._fetching[key] = (asked, task)
            task.add_done_callback(partial(self._fetched, key))
        try:
            return (await asyncio.shield(inflight[1]))[-count:]
        except RpcError as exc:  # named after this request: the fetch may serve several events
            raise engine_error(event, exc) from None

    def _fetched(self, key: tuple[str, str], task: asyncio.Task[Any]) -> None:
        if self._fetching.get(key, (0, None))[1] is task:
            del self._fetching[key]

    async def _fetch_candles(self, symbol: str, timeframe: str, asked: int) -> list[dict[str, Any]]:
        self.candle_fetches += 1
        assert self.rpc is not None
        fetched = await self.rpc.call("candles", symbol=symbol, timeframe=timeframe, count=asked)
        self.candles.put(symbol, timeframe, fetched, asked, time.monotonic())
        return fetched

    # Bus → batches, caches, status
    async def _read_bus(self) -> None:
        assert self.bus is not None
        async for topic, data in self.bus.messages():
            if self.on_bus_message(topic, data):
                self.stats.on_bus(topic, data)

    def on_bus_message(self, topic: str, data: Any) -> bool:
        """Relay one bus message; ``False`` when it was dropped (counted)."""
        accepted = self.accept(topic, data)
        if accepted is None:
            return False
        self.relay(topic, data, *accepted)
        return True

    def accept(self, topic: Any, data: Any) -> tuple[str, tuple[str, ...]] | None:
        """The kind and topic names of a message of the declared shape for a symbol the engine
        serves; ``None`` (counted, logged at a bounded rate) for anything else."""
        try:
            kind, names = check_payload(topic, data, self.shapes)
        except Malformed as exc:
            self.malformed_drops(str(exc))
            return None
        if self.shapes[kind].served_only and self.shapes[kind].parts[:1] == ("symbol",):
            if self.symbol_names is None:  # just started: no client can be in a symbol's room yet
                return None
            if names[0] not in self.symbol_names:
                self.unknown_drops(f"{kind} of {names[0]!r}")
                return None
        return kind, names

    def relay(self, topic: str, data: dict[str, Any], kind: str, names: tuple[str, ...]) -> None:
        """Hand an accepted message to its rooms, the caches or the engine/component status."""
        try:
            self._relay(topic, data, kind, names)
        except Exception as exc:  # a bug, not bad input (that was refused): keep reading the bus
            self.relay_errors(f"{kind}: {exc!r}", exc_info=True)

    def _relay(self, topic: str, data: dict[str, Any], kind: str, names: tuple[str, ...]) -> None:
        # Kinds without a per-topic sequence to keep: health (each message the whole state), and
        # the account's sets and deals (kept by ticket, their topics not bounded by the served
        # symbols; the engine republishes the sets). One lookup, so ticks pay nothing for them.
        unsequenced = self._unsequenced.get(kind)
        if unsequenced is not None:
            unsequenced(kind, names, data)
            return
        change = self.tracker.check(topic, data)
        if change is not None:
            self._on_sequence_break(kind, data, change)
        if kind == TICK:
            room = symbol_room(names[0])
            if self.fanout.has_members(room):
                self._batch(room, "tick", unstamped(data))
        elif kind == CANDLE:
            candle = unstamped(data)
            self.candles.on_candle(candle)
            room = timeframe_room(*names)
            if self.fanout.has_members(room):
                self._batch(room, "candles", candle, closed=candle["closed"])
        elif kind == INDICATOR:
            room = timeframe_room(*names)
            if self.fanout.has_members(room):
                self._batch(room, "indicators", unstamped(data), closed=data["closed"])
        elif kind == BOOK:
            room = symbol_room(names[0])
            if self.fanout.has_members(room):
                self._batch(room, "order_book", unstamped(data))
        elif kind == ACCOUNT:
            self._batch(ALL, "account_update", unstamped(data))
        elif kind == SUMMARY:
            self._batch(ALL, "market_summary", unstamped(data))

    def _on_open_item(self, kind: str, names: tuple[str, ...], data: dict[str, Any]) -> None:
        if self.open_items[kind].apply(data):
            # A closing update is never conflated nor dropped for a slow client: it would keep
            # showing a position that is gone. Others carry the whole item: the latest will do.
            self._batch(ALL, OPEN_ITEM_EVENTS[kind], unstamped(data), closed=data["state"] == CLOSED,
                        key=data["ticket"])

    def _on_deal(self, kind: str, names: tuple[str, ...], data: dict[str, Any]) -> None:
        self._batch(ALL, "deal", unstamped(data), closed=True)

    def _batch(self, room: str, event: str, payload: dict[str, Any], closed: bool = False,
               key: Any = None) -> None:
        for batcher in self.batchers:
            batcher.add(room, event, payload, closed, key)

    def _on_sequence_break(self, kind: str, data: dict[str, Any], change: str) -> None:
        if kind == CANDLE:
            self.candles.invalidate(data.get("symbol"), data.get("timeframe"))
        if change == RESTART and kind in (TICK, CANDLE):
            self.sequence_breaks(f"the engine restarted (epoch {data['epoch']}); refreshing caches")
            self.candles.invalidate()
            self.symbols.invalidate()
            self.resync_needed = True
        else:
            self.sequence_breaks(f"{change} on {kind}")

    def _on_health(self, component: str, data: dict[str, Any]) -> None:
        if component == "engine":
            self.engine_seen = time.monotonic()
            self.engine_health = unstamped(data)
        else:
            self.components.put(component, unstamped(data), time.monotonic())

    # Background loops
    async def _flush_loop(self) -> None:
        phases = len(self.batchers)
        interval = self.config.batch_interval_ms / 1000.0 / phases
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        phase = 0
        while True:
            deadline += interval
            delay = deadline - loop.time()
            if delay < 0:  # fell behind: skip the missed slots rather than bunch flushes
                deadline = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            self.stats.flush_late.observe(max(0.0, loop.time() - deadline))
            self.flush(phase)
            phase = (phase + 1) % phases

    def flush(self, phase: int = 0) -> None:
        """Serialise each room's updates of this phase once and deliver them to its client group."""
        self.flushes += 1
        started = time.perf_counter()
        rooms = self.batchers[phase].take()
        self.fanout.deliver({room: encode_room(events) for room, events in rooms.items()}, phase)
        self.stats.on_flush(rooms, time.perf_counter() - started, partial(self.fanout.members_in, group=phase))

    def server_offset_ms(self) -> int:
        """How far the engine's market clock is ahead of UTC (the trade server's offset for the
        mt5 source, from the engine's health), so latencies compare like with like."""
        return 1000 * self.engine_health.get("server_utc_offset_s", 0)

    async def _monitor(self) -> None:
        next_symbols = 0.0
        while True:
            now = time.monotonic()
            if self.symbols.get(now) is None and now >= next_symbols:
                next_symbols = now + SYMBOLS_RETRY_S
                try:
                    self._set_symbols(await self.rpc.call("symbols"))  # type: ignore[union-attr]
                except RpcError as exc:
                    log.debug("bridge: symbols not available yet: %s", exc)
            engine = self.engine_status()
            if engine == "down":
                self.resync_needed = True
            elif self.resync_needed and self.symbol_names is not None and now >= self.resync_at:
                await self._resync_with_backoff(now)
            status = self.bridge_status()
            if status != self.status:
                self.status = status
                log.info("bridge: status %s (engine %s)", status, self.engine_status())
                await self.sio.emit("health", self.health())
            await asyncio.sleep(MONITOR_INTERVAL_S)

    async def _resync_with_backoff(self, now: float) -> None:
        """Resync; after an engine error, wait twice as long as last time before the next try."""
        try:
            await self._resync()
        except RpcError as exc:
            self.resync_failures += 1
            self.resync_at = now + self.resync_backoff
            self.resync_backoff = min(2 * self.resync_backoff, RESYNC_BACKOFF_MAX_S)
            log.debug("bridge: snapshot not available (next try in %.2f s): %s", self.resync_at - now, exc)
            return
        self.resync_needed = False
        self.resync_backoff = MONITOR_INTERVAL_S

    async def _resync(self) -> None:
        """The Clone pattern's snapshot: the engine's last message of every topic the stream has
        not brought yet (after start-up, an outage or a restart), so rooms and the room every
        client is in (account, summary) have their current state.

        Asked kind by kind. A prefix the engine refuses as ``too_many``, or whose reply does not
        come (a reply over the codec's limit never does), is asked again narrower: symbol by
        symbol, then timeframe by timeframe; a single topic refused is given up (counted), never
        asked again in a loop. Raises ``RpcError`` for the caller to back off on any other error,
        or on a timeout at the narrowest level (the engine is away)."""
        pending = deque(f"{kind}:" for kind in RESYNC_KINDS)
        for cache in self.open_items.values():
            cache.asking()
        while pending:
            prefix = pending.popleft()
            try:
                messages = await self.rpc.call("snapshot", prefix=prefix)  # type: ignore[union-attr]
            except RpcError as exc:
                narrower = self._narrower(prefix) if exc.code in NARROWED_ON else []
                if narrower:
                    pending.extend(narrower)
                elif exc.code == ErrorCode.TOO_MANY:
                    self.resync_refused += 1
                    log.warning("bridge: the engine's snapshot of %r is too big; its topics come live only", prefix)
                else:
                    raise
                continue
            self._apply_snapshot(messages, prefix)

    def _narrower(self, prefix: str) -> list[str]:
        """The prefixes one name longer (``ind:`` -> ``ind:EURUSD:`` -> ``ind:EURUSD:M1:``) over
        the symbols and timeframes the bridge serves; none for a whole topic."""
        kind, *names = prefix[:-1].split(":")
        parts = SHAPES[kind].parts if kind in SHAPES else ()
        if len(names) >= len(parts):
            return []
        served = {"symbol": sorted(self.symbol_names or ()), "timeframe": self.config.timeframes}
        return [f"{prefix}{name}:" for name in served.get(parts[len(names)], ())]

    def _apply_snapshot(self, messages: Any, prefix: str = "") -> None:
        """Relay each ``[topic, payload]`` the stream has not brought a newer one of. A set's
        items (positions, orders: many per topic) go to its cache instead, replacing the set
        when the snapshot is of the whole kind (``prefix`` ``position:``); clients get them
        with the engine's next republish of the set."""
        if not isinstance(messages, list):
            self.malformed_drops(f"snapshot reply is {type(messages).__name__}, not a list")
            return
        items: dict[str, list[dict[str, Any]]] = {}
        for message in messages:
            if not (isinstance(message, list) and len(message) == 2):
                self.malformed_drops("snapshot entry is not [topic, payload]")
                continue
            topic, data = message
            accepted = self.accept(topic, data)
            if accepted is None or accepted[0] == HEALTH:
                continue
            if accepted[0] in self.open_items:
                items.setdefault(accepted[0], []).append(data)
            elif self.tracker.is_newer(topic, data):
                self.relay(topic, data, *accepted)
        whole = prefix[:-1] if prefix[:-1] in self.open_items else None
        for kind, cache in self.open_items.items():
            if kind == whole:
                cache.resync(items.get(kind, ()))
            else:
                for data in items.get(kind, ()):
                    cache.apply(data)

    # Health
    def engine_status(self) -> str:
        """``down`` without ``health:engine:`` for ENGINE_STALE_MS; ``degraded`` on its word or RPC timeouts."""
        now = time.monotonic()
        stale = self.config.engine_stale_ms / 1000.0
        if now - self.engine_seen > stale:
            return "down"
        rpc = self.rpc
        if rpc is not None and rpc.last_timeout > rpc.last_ok and now - rpc.last_timeout < stale:
            return "degraded"
        return str(self.engine_health.get("status", "degraded"))

    def engine_silence_s(self) -> float:
        """Seconds since the last ``health:engine:`` (infinite before the first)."""
        return time.monotonic() - self.engine_seen

    def bridge_status(self) -> str:
        """``ok`` while the engine is ok and its symbols are known, else ``degraded``."""
        return "ok" if self.engine_status() == "ok" and self.symbol_names is not None else "degraded"

    def health(self) -> dict[str, Any]:
        """The ``health`` event and ``GET /health`` body: the declared figures (``bridge.stats``:
        ``status``, ``uptime``, ``clients``, ... and ``stats``) and what the bridge sees of the others."""
        now = time.monotonic()
        stale = self.config.engine_stale_ms / 1000.0
        figures, stats = render_health(self)
        return {
            **figures,
            "bridge": "ok",
            "server_time": now_ms(),
            "version": VERSION,
            "delivery": self.transport.delivery,
            **({"delivery_reason": self.transport.reason} if self.transport.delivery == PUBLIC else {}),
            "engine": {"status": self.engine_status(),
                       **({"health": self.engine_health} if self.engine_health else {})},
            "workers": {name: ("down" if now - seen > stale else data["status"])
                        for name, (seen, data) in self.components.items(now)},
            "stats": stats,
        }

    async def http_health(self, request: web.Request) -> web.Response:
        body = self.health()
        return web.json_response(body, status=503 if body["engine"]["status"] == "down" else 200)

