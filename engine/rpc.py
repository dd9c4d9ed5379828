"""The engine's request/reply API: validation and dispatch (pure), and the ROUTER shell.

Request: a msgpack map ``{"op": ..., ...}`` (an optional ``id`` is echoed back, for DEALER
clients that pipeline, and in error replies whenever it can be read). Reply:
``{"ok": true, "data": ...}`` or ``{"ok": false, "error": {"code": ..., "message": ...}}``. Every
request that reaches the handler gets a reply; a frame over MAX_REQUEST_FRAME_BYTES is dropped
inside libzmq with its connection, and a client that does not read its replies has the next ones
dropped (see ``RpcServer`` for the caps).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import msgpack
import zmq

from engine.connections import ENDED, PeerWatch, copying_socket
from engine.logs import RateLimitedLog
from engine.protocol import (
    MAX_DEALS,
    MAX_ENVELOPE_FRAME_BYTES,
    MAX_QUEUED_REPLIES,
    MAX_QUEUED_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_FRAME_BYTES,
    MAX_REQUEST_FRAMES,
    MAX_TICKS,
    MAX_TIME_S,
    MAX_UNREAD_BYTES,
    REPLAY_ACTIONS,
    ErrorCode,
    Packed,
    ProtocolError,
    RpcError,
    decode,
    encode,
    encode_reply,
    msgpack_type_name,
    ok_reply,
    validate_symbol,
)
from engine.security import CurveServer

log = logging.getLogger("engine.rpc")

MAX_PREFIX_LEN = 256
MAX_SNAPSHOT_MESSAGES = 50_000
# Requests served per wake-up before the engine goes back to publishing: at most this many,
# for at most this long (a candles(1000) reply takes about a millisecond).
MAX_REQUESTS_PER_TURN = 64
TURN_BUDGET_S = 0.005
# A client whose reply queue was full has its requests dropped unserved for this long (serving
# them would cost the engine's time for replies that cannot be queued, and asking the kernel
# what it has received costs a system call); at most this many such clients are remembered.
STALLED_S = 0.1
MAX_STALLED_CLIENTS = 10_000
MAX_SEEK_S = 1e11  # the replay op's seek time: epoch seconds, well past any export (and finite)
# The bytes of a refused request (too large, not valid msgpack) read for its ``id``: the map's
# leading entries only, so reading it costs little whatever was sent.
ID_SCAN_BYTES = 4096


def is_request_id(value: object) -> bool:
    """An ``id`` the reply can echo: an integer or a string."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def peek_request_id(raw: bytes) -> int | str | None:
    """The ``id`` of a request that is not served, read from its first ID_SCAN_BYTES bytes:
    None unless they start a map whose entries up to a valid ``id`` are all within them."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=ID_SCAN_BYTES)
    unpacker.feed(raw[:ID_SCAN_BYTES])
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "id":
                value = unpacker.unpack()
                return value if is_request_id(value) else None
            unpacker.skip()
    except Exception:  # not a map, cut short by the scan, or not msgpack: no id to echo
        return None
    return None


class MarketState(Protocol):
    """What the RPC reads from the engine."""

    max_candles: int

    def symbol_infos(self) -> list[dict[str, Any]]: ...
    def has_symbol(self, symbol: str) -> bool: ...
    def has_timeframe(self, timeframe: str) -> bool: ...
    def timeframe_names(self) -> tuple[str, ...]: ...
    def last_tick(self, symbol: str) -> dict[str, Any] | None: ...
    def candles(self, symbol: str, timeframe: str, count: int) -> list[dict[str, Any]]: ...
    def candle_range(self, symbol: str, timeframe: str, from_s: int, to_s: int,
                     count: int) -> list[dict[str, Any]]: ...
    def tick_range(self, symbol: str, from_msc: int, to_msc: int, count: int) -> Packed: ...
    def ticks_since(self, symbol: str, epoch: int, after_seq: int, count: int) -> Packed: ...
    def book(self, symbol: str) -> dict[str, Any] | None: ...
    def account(self) -> dict[str, Any] | None: ...
    def positions(self, symbol: str | None) -> list[dict[str, Any]] | None: ...
    def orders(self, symbol: str | None) -> list[dict[str, Any]] | None: ...
    def deals(self, from_s: int, to_s: int, symbol: str | None, count: int) -> list[dict[str, Any]] | None: ...
    def snapshot(self, prefix: bytes) -> list[list[Any]]: ...
    def health(self) -> dict[str, Any]: ...
    def replay(self, action: str, time_s: float | None) -> dict[str, Any]: ...


class RpcHandler:
    """Turns one request into one reply; never raises."""

    def __init__(self, state: MarketState) -> None:
        self.state = state
        self.requests = 0
        self.errors = 0
        self._log = RateLimitedLog(log)
        self._ops = {
            "symbols": self._symbols,
            "tick": self._tick,
            "candles": self._candles,
            "ticks": self._ticks,
            "book": self._book,
            "account": self._account,
            "positions": self._positions,
            "orders": self._orders,
            "deals": self._deals,
            "snapshot": self._snapshot,
            "health": self._health,
            "replay": self._replay,
        }

    def handle(self, raw: bytes) -> bytes:
        self.requests += 1
        request_id = None
        try:
            try:
                request = decode(raw, MAX_REQUEST_BYTES, "request")
            except ProtocolError as exc:
                request_id = peek_request_id(raw)
                raise RpcError(ErrorCode.BAD_REQUEST, str(exc)) from None
            request_id = request.get("id")
            if request_id is not None and not is_request_id(request_id):
                request_id = None
                raise RpcError(ErrorCode.BAD_REQUEST, "'id' must be an integer or a string, got "
                                                      f"{msgpack_type_name(request['id'])}")
            refused = next((key for key, value in request.items()
                            if isinstance(key, bytes) or isinstance(value, bytes)), None)
            if refused is not None:  # every field is text or a number; bin is a client's mistake
                what = "a key" if isinstance(refused, bytes) else f"'{refused[:64]}'"
                raise RpcError(ErrorCode.BAD_REQUEST, f"{what} is msgpack bin; send strings as msgpack str")
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
            self._log.warning("internal", "internal error", exc_info=True)
            reply = RpcError(ErrorCode.INTERNAL, "internal error; see the engine log").to_reply()
        if request_id is not None:
            reply["id"] = request_id
        return encode_reply(reply)

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

    def _count(self, request: dict[str, Any], default: int, limit: int, limit_name: str) -> int:
        count = request.get("count", default)
        if not isinstance(count, int) or isinstance(count, bool):
            raise RpcError(ErrorCode.BAD_REQUEST, "'count' must be an integer")
        if count < 1:
            raise RpcError(ErrorCode.BAD_REQUEST, f"'count' must be at least 1, got {count}")
        if count > limit:
            raise RpcError(ErrorCode.TOO_MANY, f"'count' {count} exceeds {limit_name}={limit}")
        return count

    @staticmethod
    def _whole(request: dict[str, Any], name: str, limit: int, unit: str) -> int:
        value = request.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise RpcError(ErrorCode.BAD_REQUEST,
                           f"'{name}' must be an integer from 0 to {limit} ({unit}), got {repr(value)[:64]}")
        return value

    def _span(self, request: dict[str, Any], first: str, last: str, limit: int,
              unit: str) -> tuple[int, int] | None:
        """A date range ``(first, last)``, both inclusive; None if the request names neither."""
        if first not in request and last not in request:
            return None
        if first not in request or last not in request:
            raise RpcError(ErrorCode.BAD_REQUEST, f"'{first}' and '{last}' go together (a date range)")
        lo, hi = self._whole(request, first, limit, unit), self._whole(request, last, limit, unit)
        if lo > hi:
            raise RpcError(ErrorCode.BAD_REQUEST, f"'{first}' ({lo}) is after '{last}' ({hi})")
        return lo, hi

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
        limit = self.state.max_candles
        span = self._span(request, "from", "to", MAX_TIME_S, "epoch seconds, bar open times")
        if span is None:
            return self.state.candles(symbol, timeframe, self._count(request, 100, limit, "MAX_CANDLES"))
        if "count" in request:
            raise RpcError(ErrorCode.BAD_REQUEST, "give either 'count' or 'from' and 'to', not both")
        bars = self.state.candle_range(symbol, timeframe, *span, limit + 1)
        if len(bars) > limit:
            raise RpcError(ErrorCode.TOO_MANY, f"{timeframe} bars from {span[0]} to {span[1]} are more "
                                               f"than MAX_CANDLES={limit}; narrow the range")
        return bars

    def _ticks(self, request: dict[str, Any]) -> Packed:
        """A date range (``from_msc``, ``to_msc``) or gap repair (``after_seq``, ``epoch``)."""
        symbol = self._symbol(request)
        count = self._count(request, MAX_TICKS, MAX_TICKS, "MAX_TICKS")
        if "after_seq" in request:
            if "from_msc" in request or "to_msc" in request:
                raise RpcError(ErrorCode.BAD_REQUEST,
                               "give 'after_seq' (with 'epoch') or 'from_msc' and 'to_msc', not both")
            after_seq = self._whole(request, "after_seq", 2**63 - 1, "a tick seq")
            epoch = self._whole(request, "epoch", 2**63 - 1, "the epoch of that seq")
            return self.state.ticks_since(symbol, epoch, after_seq, count)
        span = self._span(request, "from_msc", "to_msc", MAX_TIME_S * 1000, "epoch ms")
        if span is None:
            raise RpcError(ErrorCode.BAD_REQUEST, "'ticks' takes 'from_msc' and 'to_msc' (a date range) "
                                                  "or 'after_seq' and 'epoch' (the ticks after a seq)")
        return self.state.tick_range(symbol, *span, count)

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

    def _positions(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        return self._activity(self.state.positions(self._any_symbol(request)))

    def _orders(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        return self._activity(self.state.orders(self._any_symbol(request)))

    def _deals(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Deals by date range (``from``, ``to``: epoch seconds of the market clock, inclusive)."""
        span = self._span(request, "from", "to", MAX_TIME_S, "epoch seconds")
        if span is None:
            raise RpcError(ErrorCode.BAD_REQUEST, "'deals' takes 'from' and 'to' (epoch seconds, inclusive)")
        deals = self._activity(self.state.deals(*span, self._any_symbol(request), MAX_DEALS + 1))
        if len(deals) > MAX_DEALS:
            raise RpcError(ErrorCode.TOO_MANY, f"deals from {span[0]} to {span[1]} are more than "
                                               f"MAX_DEALS={MAX_DEALS}; narrow the range")
        return deals

    @staticmethod
    def _any_symbol(request: dict[str, Any]) -> str | None:
        """An optional symbol filter: any name, as the account may trade symbols this engine
        does not serve (one it never traded gives an empty list)."""
        if "symbol" not in request:
            return None
        try:
            return validate_symbol(request["symbol"])
        except ProtocolError as exc:
            raise RpcError(ErrorCode.BAD_REQUEST, f"'symbol': {exc}") from None

    @staticmethod
    def _activity(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        if items is None:
            raise RpcError(ErrorCode.UNAVAILABLE, "the source has no account activity "
                                                  "(a replay, or ACCOUNT_STREAMS=0)")
        return items

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

    def _replay(self, request: dict[str, Any]) -> dict[str, Any]:
        """Playback control of the replay source; every action answers with its status."""
        action = request.get("action")
        if not isinstance(action, str) or action not in REPLAY_ACTIONS:
            raise RpcError(ErrorCode.BAD_REQUEST, f"'action' must be one of {', '.join(REPLAY_ACTIONS)}")
        time_s = None
        if action == "seek":
            time_s = request.get("time")
            if type(time_s) not in (int, float) or not 0 <= time_s <= MAX_SEEK_S:
                raise RpcError(ErrorCode.BAD_REQUEST, f"'time' must be a non-negative number up to "
                                                      f"{MAX_SEEK_S:.0f}: epoch seconds in the file's clock")
        return self.state.replay(action, time_s)


class RpcServer:
    """The ROUTER socket shell: reads requests (REQ or DEALER envelopes) and sends replies.

    Hard caps per client: frames of at most ``MAX_REQUEST_FRAME_BYTES`` (a longer one closes
    the connection inside libzmq), requests of at most ``MAX_REQUEST_FRAMES`` frames and
    ``MAX_REQUEST_BYTES`` of body (else a bad_request reply, echoing only its ``id`` if the body's
    first ID_SCAN_BYTES hold it), at most
    ``MAX_UNREAD_BYTES`` sent and not yet read (a multipart message still arriving counts; over
    it the connection is closed), and ``MAX_QUEUED_REPLY_BYTES`` or ``MAX_QUEUED_REPLIES`` of
    replies waiting to be read (the next ones are dropped and counted until the client reads).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, handler: RpcHandler,
                 curve: CurveServer | None = None) -> None:
        self.handler = handler
        self.socket = copying_socket(ctx, zmq.ROUTER)
        self.socket.linger = 0
        if curve is not None:
            curve.apply(self.socket)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_FRAME_BYTES)
        self.socket.sndhwm = MAX_QUEUED_REPLIES
        # A full reply queue raises EAGAIN instead of dropping silently: the drop is counted.
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close(0)
            raise OSError(f"cannot bind the RPC endpoint {endpoint}: {exc.strerror}") from None
        self.clients = PeerWatch(self.socket, "RPC endpoint", MAX_UNREAD_BYTES, curve is not None)
        self.refused = 0  # requests over the frame or byte caps
        self.replies_dropped = 0  # replies to clients whose queue was full
        self._log = RateLimitedLog(log)
        # Clients whose queue was full: their requests wait unserved until this (monotonic s).
        self._stalled: dict[bytes, float] = {}

    def serve_pending(self) -> int:
        """Answer the requests waiting now, for at most MAX_REQUESTS_PER_TURN requests or
        TURN_BUDGET_S; returns how many were read."""
        served = 0
        self.clients.events()
        deadline = time.monotonic() + TURN_BUDGET_S
        while served < MAX_REQUESTS_PER_TURN and time.monotonic() < deadline:
            request = self._read_request()
            if request is None:
                break
            served += 1
            envelope, body, fd = request
            if body is not None:
                reply = self.handler.handle(body) if self._may_serve(envelope[0], fd) else None
                self._reply(envelope, reply, fd)
        return served

    def _read_request(self) -> tuple[list[bytes], bytes | None, int | None] | None:
        """The next request as ``(envelope, body, connection's descriptor)``, its frames read
        one by one and kept only within the caps; body None for a request already answered
        (refused) or to ignore (from a connection being closed)."""
        sock = self.socket
        try:
            frame = sock.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        routing_id = frame.bytes  # made by the ROUTER: not from the wire
        frames: list[zmq.Frame] = []
        count, size, fd, more = 0, 0, None, frame.more  # count and size: of the frames sent
        while more:
            frame = sock.recv(copy=False)  # the rest of a message is there once its first frame is
            more = frame.more
            count += 1
            size += len(frame)
            fd = self.clients.read(frame)
            if count <= MAX_REQUEST_FRAMES:
                frames.append(frame)
        if fd == ENDED or not frames:
            return [routing_id], None, None
        envelope = [routing_id, *(f.bytes for f in frames[:-1])]
        if count > MAX_REQUEST_FRAMES or any(len(f) > MAX_ENVELOPE_FRAME_BYTES for f in envelope[1:]):
            self.refused += 1
            self.handler.errors += 1
            self._log.warning("refused", "refused a request of %d frames, %d bytes (limits: %d frames, "
                              "envelope frames of %d bytes)", count, size, MAX_REQUEST_FRAMES,
                              MAX_ENVELOPE_FRAME_BYTES)
            reply = RpcError(ErrorCode.BAD_REQUEST, f"a request is at most {MAX_REQUEST_FRAMES} frames, "
                                                    f"envelope frames of {MAX_ENVELOPE_FRAME_BYTES} bytes").to_reply()
            request_id = peek_request_id(frames[-1].bytes) if count <= MAX_REQUEST_FRAMES else None
            if request_id is not None:  # the body was read whole: its id is the last frame's
                reply["id"] = request_id
            self._reply([routing_id, b""], encode(reply), fd)
            return [routing_id], None, None
        return envelope, frames[-1].bytes, fd

    def _may_serve(self, routing_id: bytes, fd: int | None) -> bool:
        """False while the client does not read its replies: its request is dropped unserved."""
        until = self._stalled.get(routing_id)
        if until is not None:
            if time.monotonic() < until:
                return False
            del self._stalled[routing_id]
        if fd is not None and self.clients.unsent(fd) > MAX_QUEUED_REPLY_BYTES:
            self._stall(routing_id)
            return False
        return True

    def _stall(self, routing_id: bytes) -> None:
        if len(self._stalled) >= MAX_STALLED_CLIENTS:
            self._stalled.clear()
        self._stalled[routing_id] = time.monotonic() + STALLED_S

    def _reply(self, envelope: list[bytes], reply: bytes | None, fd: int | None) -> None:
        """Send ``reply`` (None: it was dropped unserved) unless the client's queue is full."""
        if reply is not None:
            try:
                self.socket.send_multipart([*envelope, reply], zmq.NOBLOCK)
                if fd is not None:
                    self.clients.sent(fd, [*envelope[1:], reply])
                return
            except zmq.Again:  # MAX_QUEUED_REPLIES waiting: it does not read its replies
                self._stall(envelope[0])
            except zmq.ZMQError:  # EHOSTUNREACH: gone since it asked
                return
        self.replies_dropped += 1
        self._log.warning("dropped", "dropped replies to a client that does not read them (limits: %d "
                          "bytes, %d replies waiting)", MAX_QUEUED_REPLY_BYTES, MAX_QUEUED_REPLIES)

    def watch_clients(self) -> None:
        """Close client connections with more than MAX_UNREAD_BYTES sent and not yet read."""
        self.clients.check()

    def close(self) -> None:
        self.clients.stop()
        self.socket.close(0)
