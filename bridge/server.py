"""The Socket.IO bridge: python-socketio on aiohttp, fed by the bus, answering from cache or RPC.

Tasks: the bus reader (updates into the ``Batcher``, caches, engine status), the flusher (every
``BATCH_INTERVAL_MS``: serialise each room once, hand it to the ``Fanout``), the RPC receiver and
the monitor (engine health, ``health`` events on change, symbol list refresh).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import socketio
import zmq.asyncio
from aiohttp import web
from engineio import packet as eio_packet

from bridge.batching import Batcher, encode_room
from bridge.bus import GAP, RESTART, AsyncRpc, BusReader, SeqTracker
from bridge.cache import CandleCache, ValueCache
from bridge.config import BridgeConfig
from bridge.fanout import ALL, Fanout
from bridge.ratelimit import TokenBucket
from bridge.validation import RATE_LIMITED, ClientError, Request, event_name, parse_request
from engine.protocol import ACCOUNT, BOOK, CANDLE, HEALTH, INDICATOR, SUMMARY, TICK, ErrorCode, RpcError

log = logging.getLogger("bridge")

try:
    VERSION = metadata.version("mt5-market-data")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"

SUBSCRIBED_PREFIXES = [f"{kind}:".encode() for kind in (TICK, CANDLE, INDICATOR, BOOK, ACCOUNT, SUMMARY, HEALTH)]
MONITOR_INTERVAL_S = 0.25
SYMBOLS_RETRY_S = 1.0
# Engine errors a client may see as they are; anything else becomes ``unavailable``.
PASSED_CODES = {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_SYMBOL, ErrorCode.UNKNOWN_TIMEFRAME, ErrorCode.TOO_MANY}
STAMP_FIELDS = ("seq", "epoch")
SLOW_CONSUMER_CODE = "slow_consumer"


def symbol_room(symbol: str) -> str:
    return f"s:{symbol}"


def timeframe_room(symbol: str, timeframe: str) -> str:
    return f"t:{symbol}:{timeframe}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def unstamped(data: dict[str, Any]) -> dict[str, Any]:
    """The payload without the bus's ``seq``/``epoch`` (the bridge handles gaps for its clients)."""
    return {k: v for k, v in data.items() if k not in STAMP_FIELDS}


class EngineIoTransport:
    """Queues pre-encoded Engine.IO packets on each client's Engine.IO socket.

    ``wrap`` builds one ``engineio.packet.Packet`` per room packet; it caches its encoding, so
    all members share one string. Queueing on the socket's own send queue (what
    ``AsyncServer.send_packet`` does, without a coroutine per recipient) keeps a flush to a
    thousand clients within a few milliseconds.
    """

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self.eio_sids: dict[str, str] = {}

    def wrap(self, text: str) -> eio_packet.Packet:
        return eio_packet.Packet(eio_packet.MESSAGE, text)

    def _socket(self, sid: str) -> Any:
        sock = self.sio.eio.sockets.get(self.eio_sids.get(sid))
        return None if sock is None or sock.closed else sock

    def backlog(self, sid: str) -> int:
        sock = self._socket(sid)
        return -1 if sock is None else sock.queue.qsize()

    def send(self, sid: str, wires: list[eio_packet.Packet]) -> None:
        sock = self._socket(sid)
        if sock is not None:
            for wire in wires:
                sock.queue.put_nowait(wire)

    def disconnect(self, sid: str, reason: str) -> None:
        async def close() -> None:
            await self.sio.emit("error", {"code": SLOW_CONSUMER_CODE, "message": reason, "event": ""}, to=sid)
            await self.sio.disconnect(sid)
        asyncio.get_running_loop().create_task(close())


@dataclass
class Client:
    bucket: TokenBucket
    limited_at: float = float("-inf")


class Bridge:
    """One bridge process: ``app`` is the aiohttp application to run."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=config.cors_allowed,
            max_http_buffer_size=config.max_message_bytes,
        )
        self.app = web.Application()
        self.sio.attach(self.app)
        self.app.router.add_get("/health", self.http_health)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("*", self.on_event)
        self.transport = EngineIoTransport(self.sio)
        self.fanout = Fanout(self.transport, config.client_queue_soft, config.client_queue_hard)
        self.batcher = Batcher()
        self.candles = CandleCache(config.cache_ttl_seconds, config.max_candles)
        self.symbols = ValueCache(config.cache_ttl_seconds)
        self.symbol_names: frozenset[str] | None = None
        self.tracker = SeqTracker()
        self.clients: dict[str, Client] = {}
        self.started = time.monotonic()
        self.engine_seen = float("-inf")
        self.engine_health: dict[str, Any] = {}
        self.workers: dict[str, tuple[float, dict[str, Any]]] = {}
        self.status = "degraded"
        self.flushes = 0
        self.rate_limited = 0
        self.errors_sent = 0
        self._ctx: zmq.asyncio.Context | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.rpc: AsyncRpc | None = None
        self.bus: BusReader | None = None

    # Lifecycle
    async def _start(self, app: web.Application) -> None:
        self._ctx = zmq.asyncio.Context()
        self.rpc = AsyncRpc(self._ctx, self.config.rpc_endpoint, self.config.rpc_timeout_ms)
        self.bus = BusReader(self._ctx, self.config.bus_endpoint, SUBSCRIBED_PREFIXES)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(coro) for coro in
                       (self.rpc.run(), self._read_bus(), self._flush_loop(), self._monitor())]

    async def _stop(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for closeable in (self.rpc, self.bus):
            if closeable is not None:
                closeable.close()
        if self._ctx is not None:
            self._ctx.term()

    # Socket.IO handlers
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = self.config.token
        if token:
            given = auth.get("token") if isinstance(auth, dict) else None
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
                raise socketio.exceptions.ConnectionRefusedError("unauthorized: a valid auth.token is required")
        self.transport.eio_sids[sid] = self.sio.manager.eio_sid_from_sid(sid, "/")
        self.clients[sid] = Client(TokenBucket(self.config.rate_limit_per_s, self.config.rate_limit_burst,
                                               time.monotonic()))
        self.fanout.add_client(sid)
        await self.sio.emit("connected", {"sid": sid, "server_time": now_ms(), "version": VERSION}, to=sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.clients.pop(sid, None)
        self.fanout.remove_client(sid)
        self.transport.eio_sids.pop(sid, None)

    async def on_event(self, event: Any, sid: str, *args: Any) -> Any:
        """Every client event: rate limit, validate, answer (event + acknowledgement)."""
        client = self.clients.get(sid)
        if client is None:
            return None
        now = time.monotonic()
        if not client.bucket.take(now):
            self.rate_limited += 1
            error = ClientError(RATE_LIMITED, f"more than {self.config.rate_limit_per_s:g} requests/s "
                                f"(burst {self.config.rate_limit_burst}); slow down", event_name(event))
            if now - client.limited_at >= 1.0:  # one error per second, not one per flooded request
                client.limited_at = now
                await self._send_error(sid, error)
            return error.payload()
        try:
            request = parse_request(event, args, self.symbol_names, self.config.timeframes,
                                    self.config.max_candles)
            reply_event, payload = await self._answer(sid, request)
        except ClientError as error:
            await self._send_error(sid, error)
            return error.payload()
        await self.sio.emit(reply_event, payload, to=sid)
        return payload

    async def _send_error(self, sid: str, error: ClientError) -> None:
        self.errors_sent += 1
        await self.sio.emit("error", error.payload(), to=sid)

    async def _answer(self, sid: str, req: Request) -> tuple[str, Any]:
        if req.event == "subscribe":
            self.fanout.join(sid, self._rooms(req))
            return "subscribed", {"symbol": req.symbol, "timeframe": req.timeframe}
        if req.event == "unsubscribe":
            self.fanout.leave(sid, self._rooms(req, leaving=True))
            return "unsubscribed", {"symbol": req.symbol, "timeframe": req.timeframe}
        if req.event == "get_symbols":
            return "symbols", await self._symbols()
        if req.event == "get_candles":
            bars = await self._candles(req)
            return "candles", {"symbol": req.symbol, "timeframe": req.timeframe, "candles": bars}
        if req.event == "get_order_book":
            return "order_book", unstamped(await self._call(req.event, "book", symbol=req.symbol))
        if req.event == "get_account_info":
            return "account_info", unstamped(await self._call(req.event, "account"))
        return "health", self.health()

    def _rooms(self, req: Request, leaving: bool = False) -> list[str]:
        assert req.symbol is not None
        if req.timeframe is not None:
            rooms = [timeframe_room(req.symbol, req.timeframe)]
            return rooms if leaving else [symbol_room(req.symbol), *rooms]
        if leaving:
            return [symbol_room(req.symbol), *(timeframe_room(req.symbol, tf) for tf in self.config.timeframes)]
        return [symbol_room(req.symbol)]

    async def _call(self, event: str, op: str, **params: Any) -> Any:
        """An engine request; its error becomes the client's ``ClientError``."""
        assert self.rpc is not None
        try:
            return await self.rpc.call(op, **params)
        except RpcError as exc:
            code = exc.code if exc.code in PASSED_CODES else ErrorCode.UNAVAILABLE
            raise ClientError(code, f"{event}: {exc.message or exc.code}", event) from None

    async def _symbols(self) -> list[dict[str, Any]]:
        cached = self.symbols.get(time.monotonic())
        if cached is None:
            cached = await self._call("get_symbols", "symbols")
            self._set_symbols(cached)
        return cached

    def _set_symbols(self, symbols: list[dict[str, Any]]) -> None:
        self.symbols.put(symbols, time.monotonic())
        self.symbol_names = frozenset(s["name"] for s in symbols if isinstance(s, dict) and "name" in s)

    async def _candles(self, req: Request) -> list[dict[str, Any]]:
        assert req.symbol is not None and req.timeframe is not None
        bars = self.candles.get(req.symbol, req.timeframe, req.count, time.monotonic())
        if bars is None:
            asked = self.candles.fetch_count(req.count)
            fetched = await self._call(req.event, "candles", symbol=req.symbol, timeframe=req.timeframe, count=asked)
            self.candles.put(req.symbol, req.timeframe, fetched, asked, time.monotonic())
            bars = fetched[-req.count:]
        return bars

    # Bus → batches, caches, status
    async def _read_bus(self) -> None:
        assert self.bus is not None
        async for topic, data in self.bus.messages():
            try:
                self.on_bus_message(topic, data)
            except Exception:
                log.exception("bridge: cannot relay a %s message", topic.split(":", 1)[0])

    def on_bus_message(self, topic: str, data: dict[str, Any]) -> None:
        kind, _, rest = topic.partition(":")
        change = self.tracker.check(topic, data)
        if change is not None:
            self._on_sequence_break(kind, data, change)
        if kind == TICK:
            room = symbol_room(rest[:-1])
            if self.fanout.has_members(room):
                self.batcher.add(room, "tick", unstamped(data))
        elif kind == CANDLE:
            candle = unstamped(data)
            self.candles.on_candle(candle)
            room = timeframe_room(candle.get("symbol", ""), candle.get("timeframe", ""))
            if self.fanout.has_members(room):
                self.batcher.add(room, "candles", candle, closed=bool(candle.get("closed")))
        elif kind == INDICATOR:
            room = timeframe_room(*rest[:-1].split(":", 1)) if rest.count(":") == 2 else ""
            if self.fanout.has_members(room):
                self.batcher.add(room, "indicators", unstamped(data), closed=bool(data.get("closed")))
        elif kind == BOOK:
            room = symbol_room(rest[:-1])
            if self.fanout.has_members(room):
                self.batcher.add(room, "order_book", unstamped(data))
        elif kind == ACCOUNT:
            self.batcher.add(ALL, "account_update", unstamped(data))
        elif kind == SUMMARY:
            self.batcher.add(ALL, "market_summary", unstamped(data))
        elif kind == HEALTH:
            self._on_health(rest[:-1], data)

    def _on_sequence_break(self, kind: str, data: dict[str, Any], change: str) -> None:
        if kind == CANDLE:
            self.candles.invalidate(data.get("symbol"), data.get("timeframe"))
        if change == RESTART and kind in (TICK, CANDLE):
            log.info("bridge: the engine restarted (epoch %s); refreshing caches", data.get("epoch"))
            self.candles.invalidate()
            self.symbols.invalidate()
        elif change == GAP:
            log.warning("bridge: lost bus messages of kind %s (seq gap)", kind)

    def _on_health(self, component: str, data: dict[str, Any]) -> None:
        if component == "engine":
            self.engine_seen = time.monotonic()
            self.engine_health = unstamped(data)
        else:
            self.workers[component] = (time.monotonic(), unstamped(data))

    # Background loops
    async def _flush_loop(self) -> None:
        interval = self.config.batch_interval_ms / 1000.0
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += interval
            delay = deadline - loop.time()
            if delay < 0:  # fell behind: skip the missed slots rather than bunch flushes
                deadline = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            self.flush()

    def flush(self) -> None:
        """Serialise each room's updates once and deliver them."""
        self.flushes += 1
        rooms = self.batcher.take()
        self.fanout.deliver({room: encode_room(events) for room, events in rooms.items()})

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
            status = "ok" if self.engine_status() == "ok" else "degraded"
            if status != self.status:
                self.status = status
                log.info("bridge: status %s (engine %s)", status, self.engine_status())
                await self.sio.emit("health", self.health())
            await asyncio.sleep(MONITOR_INTERVAL_S)

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

    def health(self) -> dict[str, Any]:
        """The ``health`` event and ``GET /health`` body."""
        now = time.monotonic()
        stale = self.config.engine_stale_ms / 1000.0
        engine = self.engine_status()
        stats = self.fanout.stats
        return {
            "status": "ok" if engine == "ok" else "degraded",
            "bridge": "ok",
            "server_time": now_ms(),
            "version": VERSION,
            "uptime": round(now - self.started, 1),
            "clients": len(self.clients),
            "subscriptions": self.fanout.subscriptions(),
            "engine": {"status": engine, **({"health": self.engine_health} if self.engine_health else {})},
            "workers": {name: ("down" if now - seen > stale else str(data.get("status", "ok")))
                        for name, (seen, data) in sorted(self.workers.items())},
            "stats": {
                "flushes": self.flushes, "updates": self.batcher.updates, "conflated": self.batcher.conflated,
                "packets_sent": stats.packets_sent, "skipped_slow": stats.skipped_slow,
                "slow_disconnects": stats.slow_disconnects, "rate_limited": self.rate_limited,
                "errors_sent": self.errors_sent, "bus_gaps": self.tracker.gaps,
                "bus_restarts": self.tracker.restarts,
                "cache_hits": self.candles.hits, "cache_misses": self.candles.misses,
                "rpc_timeouts": self.rpc.timeouts if self.rpc else 0,
            },
        }

    async def http_health(self, request: web.Request) -> web.Response:
        body = self.health()
        return web.json_response(body, status=503 if body["engine"]["status"] == "down" else 200)
