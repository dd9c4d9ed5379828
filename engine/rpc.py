"""The engine's request/reply API: validation and dispatch (pure), and the ROUTER shell.

Request: a msgpack map ``{"op": ..., ...}`` (an optional ``id`` is echoed back, for DEALER
clients that pipeline). Reply: ``{"ok": true, "data": ...}`` or
``{"ok": false, "error": {"code": ..., "message": ...}}``. Every request gets a reply.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

import zmq

from engine.protocol import (
    MAX_REQUEST_BYTES,
    ErrorCode,
    ProtocolError,
    RpcError,
    decode,
    encode,
    ok_reply,
)
from engine.security import CurveServer

log = logging.getLogger("engine.rpc")

MAX_PREFIX_LEN = 256
MAX_SNAPSHOT_MESSAGES = 50_000
# Requests served per wake-up before the engine goes back to publishing.
MAX_REQUESTS_PER_TURN = 64


class MarketState(Protocol):
    """What the RPC reads from the engine."""

    max_candles: int

    def symbol_infos(self) -> list[dict[str, Any]]: ...
    def has_symbol(self, symbol: str) -> bool: ...
    def has_timeframe(self, timeframe: str) -> bool: ...
    def timeframe_names(self) -> tuple[str, ...]: ...
    def last_tick(self, symbol: str) -> dict[str, Any] | None: ...
    def candles(self, symbol: str, timeframe: str, count: int) -> list[dict[str, Any]]: ...
    def book(self, symbol: str) -> dict[str, Any] | None: ...
    def account(self) -> dict[str, Any] | None: ...
    def snapshot(self, prefix: bytes) -> list[list[Any]]: ...
    def health(self) -> dict[str, Any]: ...


class RpcHandler:
    """Turns one request into one reply; never raises."""

    def __init__(self, state: MarketState) -> None:
        self.state = state
        self.requests = 0
        self.errors = 0
        self._ops = {
            "symbols": self._symbols,
            "tick": self._tick,
            "candles": self._candles,
            "book": self._book,
            "account": self._account,
            "snapshot": self._snapshot,
            "health": self._health,
        }

    def handle(self, raw: bytes) -> bytes:
        self.requests += 1
        request_id = None
        try:
            if len(raw) > MAX_REQUEST_BYTES:
                raise RpcError(ErrorCode.BAD_REQUEST,
                               f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}")
            try:
                request = decode(raw)
            except ProtocolError as exc:
                raise RpcError(ErrorCode.BAD_REQUEST, f"request must be a msgpack map: {exc}") from None
            request_id = request.get("id")
            if not isinstance(request_id, (int, str, type(None))) or isinstance(request_id, bool):
                request_id = None
                raise RpcError(ErrorCode.BAD_REQUEST, "'id' must be an integer or a string")
            op = request.get("op")
            if not isinstance(op, str):
                raise RpcError(ErrorCode.BAD_REQUEST, f"'op' must be a string, one of {', '.join(self._ops)}")
            handler = self._ops.get(op)
            if handler is None:
                raise RpcError(ErrorCode.UNKNOWN_OP, f"unknown op {op[:64]!r}; valid: {', '.join(self._ops)}")
            reply = ok_reply(handler(request))
        except RpcError as exc:
            self.errors += 1
            reply = exc.to_reply()
        except Exception:
            self.errors += 1
            log.exception("internal error")
            reply = RpcError(ErrorCode.INTERNAL, "internal error; see the engine log").to_reply()
        if request_id is not None:
            reply["id"] = request_id
        return encode(reply)

    # Field checks: each raises RpcError naming the field and what it must be.
    def _symbol(self, request: dict[str, Any]) -> str:
        symbol = request.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise RpcError(ErrorCode.BAD_REQUEST, "'symbol' must be a non-empty string")
        if not self.state.has_symbol(symbol):
            raise RpcError(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {symbol[:64]!r}")
        return symbol

    def _timeframe(self, request: dict[str, Any]) -> str:
        tf = request.get("timeframe")
        if not isinstance(tf, str):
            raise RpcError(ErrorCode.BAD_REQUEST, "'timeframe' must be a string such as 'H1'")
        if not self.state.has_timeframe(tf):
            raise RpcError(ErrorCode.UNKNOWN_TIMEFRAME,
                           f"unknown timeframe {tf[:16]!r}; served: {', '.join(self.state.timeframe_names())}")
        return tf

    def _count(self, request: dict[str, Any]) -> int:
        count = request.get("count", 100)
        if not isinstance(count, int) or isinstance(count, bool):
            raise RpcError(ErrorCode.BAD_REQUEST, "'count' must be an integer")
        if count < 1:
            raise RpcError(ErrorCode.BAD_REQUEST, f"'count' must be at least 1, got {count}")
        if count > self.state.max_candles:
            raise RpcError(ErrorCode.TOO_MANY, f"'count' {count} exceeds MAX_CANDLES={self.state.max_candles}")
        return count

    def _symbols(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        return self.state.symbol_infos()

    def _tick(self, request: dict[str, Any]) -> dict[str, Any]:
        tick = self.state.last_tick(self._symbol(request))
        if tick is None:
            raise RpcError(ErrorCode.UNAVAILABLE, "no tick yet for this symbol")
        return tick

    def _candles(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        symbol = self._symbol(request)
        timeframe = self._timeframe(request)
        return self.state.candles(symbol, timeframe, self._count(request))

    def _book(self, request: dict[str, Any]) -> dict[str, Any]:
        book = self.state.book(self._symbol(request))
        if book is None:
            raise RpcError(ErrorCode.UNAVAILABLE, "the source has no order book for this symbol")
        return book

    def _account(self, request: dict[str, Any]) -> dict[str, Any]:
        account = self.state.account()
        if account is None:
            raise RpcError(ErrorCode.UNAVAILABLE, "the source has no account")
        return account

    def _snapshot(self, request: dict[str, Any]) -> list[list[Any]]:
        prefix = request.get("prefix", "")
        if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX_LEN:
            raise RpcError(ErrorCode.BAD_REQUEST, f"'prefix' must be a string of at most {MAX_PREFIX_LEN} characters")
        messages = self.state.snapshot(prefix.encode())
        if len(messages) > MAX_SNAPSHOT_MESSAGES:
            raise RpcError(ErrorCode.TOO_MANY,
                           f"{len(messages)} topics match {prefix!r}; narrow the prefix (limit {MAX_SNAPSHOT_MESSAGES})")
        return messages

    def _health(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.state.health()


class RpcServer:
    """The ROUTER socket shell: reads requests (REQ or DEALER envelopes) and sends replies."""

    def __init__(self, ctx: zmq.Context, endpoint: str, handler: RpcHandler,
                 curve: CurveServer | None = None) -> None:
        self.handler = handler
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.linger = 0
        if curve is not None:
            curve.apply(self.socket)
        # A hard cap far above MAX_REQUEST_BYTES: ZeroMQ drops peers that send more, so a
        # hostile client cannot make the engine buffer gigabytes; smaller oversize requests
        # still get a bad_request reply.
        self.socket.setsockopt(zmq.MAXMSGSIZE, 16 * MAX_REQUEST_BYTES)
        self.socket.sndhwm = 10_000
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close(0)
            raise OSError(f"cannot bind the RPC endpoint {endpoint}: {exc.strerror}") from None

    def serve_pending(self) -> int:
        """Answer the requests waiting now (at most MAX_REQUESTS_PER_TURN); returns how many."""
        served = 0
        sock = self.socket
        while served < MAX_REQUESTS_PER_TURN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            served += 1
            if len(frames) < 2:
                continue  # no body: nothing to answer
            reply = self.handler.handle(frames[-1])
            try:
                sock.send_multipart([*frames[:-1], reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                log.warning("could not reply to a client that went away")
        return served

    def close(self) -> None:
        self.socket.close(0)
