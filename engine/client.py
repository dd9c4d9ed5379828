"""A Python client for bots: ``Subscriber`` for the bus stream and ``RpcClient`` for requests.

Any ZeroMQ + msgpack client can speak the protocol; this one adds what every bot rewrites:
gap and restart detection from ``seq``/``epoch``, and the Clone pattern's snapshot-on-join.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import zmq

from engine.protocol import (
    MAX_REPLY_BYTES,
    MAX_TICKS,
    TICK,
    ErrorCode,
    ProtocolError,
    RpcError,
    decode,
    encode,
    topic_parts,
)
from engine.security import CurveClient, apply_client


class BadRequest(RpcError):
    pass


class UnknownOp(RpcError):
    pass


class UnknownSymbol(RpcError):
    pass


class UnknownTimeframe(RpcError):
    pass


class TooMany(RpcError):
    pass


class Unavailable(RpcError):
    pass


class TooOld(RpcError):
    pass


class RpcTimeout(RpcError):
    pass


class InternalError(RpcError):
    pass


_ERRORS: dict[str, type[RpcError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.UNKNOWN_OP: UnknownOp,
    ErrorCode.UNKNOWN_SYMBOL: UnknownSymbol,
    ErrorCode.UNKNOWN_TIMEFRAME: UnknownTimeframe,
    ErrorCode.TOO_MANY: TooMany,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.TOO_OLD: TooOld,
    ErrorCode.TIMEOUT: RpcTimeout,
    ErrorCode.INTERNAL: InternalError,
}


class RpcClient:
    """Blocking request/reply over REQ. A timed-out socket is replaced (the Lazy Pirate way)."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5556", timeout_ms: int = 3000,
                 ctx: zmq.Context | None = None, curve: CurveClient | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self._ctx = ctx or zmq.Context.instance()
        self._curve = curve
        self._sock = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = apply_client(self._ctx.socket(zmq.REQ), self._curve)
        sock.linger = 0
        sock.connect(self.endpoint)
        return sock

    def call(self, op: str, **params: Any) -> Any:
        """Send ``{"op": op, **params}``; return ``data`` or raise the error's ``RpcError`` subclass."""
        self._sock.send(encode({"op": op, **params}))
        if not self._sock.poll(self.timeout_ms):
            self._sock.close(0)
            self._sock = self._connect()
            raise RpcTimeout(ErrorCode.TIMEOUT, f"no reply from {self.endpoint} in {self.timeout_ms} ms")
        reply = decode(self._sock.recv(), MAX_REPLY_BYTES)
        if reply.get("ok"):
            return reply.get("data")
        error = reply.get("error") or {}
        code = error.get("code", ErrorCode.INTERNAL)
        raise _ERRORS.get(code, RpcError)(code, error.get("message", ""))

    def symbols(self) -> list[dict[str, Any]]:
        return self.call("symbols")

    def tick(self, symbol: str) -> dict[str, Any]:
        return self.call("tick", symbol=symbol)

    def candles(self, symbol: str, timeframe: str, count: int = 100) -> list[dict[str, Any]]:
        return self.call("candles", symbol=symbol, timeframe=timeframe, count=count)

    def candle_range(self, symbol: str, timeframe: str, from_s: int, to_s: int) -> list[dict[str, Any]]:
        """The bars opening ``from_s..to_s`` (epoch seconds, the market's clock), oldest first."""
        return self.call("candles", symbol=symbol, timeframe=timeframe, **{"from": from_s, "to": to_s})

    def ticks(self, symbol: str, from_msc: int | None = None, to_msc: int | None = None,
              count: int = MAX_TICKS, after_seq: int | None = None,
              epoch: int | None = None) -> list[dict[str, Any]]:
        """The first ``count`` ticks stamped ``from_msc..to_msc``; or, given ``after_seq`` and
        ``epoch``, the journaled ticks after that seq, with their seq (``TooOld`` if gone)."""
        params = {"from_msc": from_msc, "to_msc": to_msc, "after_seq": after_seq, "epoch": epoch}
        return self.call("ticks", symbol=symbol, count=count,
                         **{k: v for k, v in params.items() if v is not None})

    def book(self, symbol: str) -> dict[str, Any]:
        return self.call("book", symbol=symbol)

    def account(self) -> dict[str, Any]:
        return self.call("account")

    def snapshot(self, prefix: str = "") -> list[list[Any]]:
        return self.call("snapshot", prefix=prefix)

    def health(self) -> dict[str, Any]:
        return self.call("health")

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    data: dict[str, Any]
    from_snapshot: bool = False
    repaired: bool = False  # filled into a gap from the engine's tick journal


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages ``first..last`` (inclusive) of ``topic`` never arrived; or, for ``restart``,
    the publisher restarted (``epoch`` changed) and its sequence began again.

    ``outcome`` with ``repair=True``: ``repaired`` (they are delivered, in order, before the
    message that revealed the gap) or ``lost``; empty without repair."""

    topic: str
    kind: str  # "gap" or "restart"
    first: int
    last: int
    epoch: int
    previous_epoch: int = 0
    outcome: str = ""


@dataclass
class _TopicState:
    epoch: int
    seq: int


@dataclass
class Subscriber:
    """Subscribe to topic prefixes on the bus and receive decoded, gap-checked messages.

    ``on_gap`` is called with a ``Gap`` whenever a sequence skips or a publisher restarts. With
    ``rpc`` given and ``snapshot=True``, the current value of every matching topic is delivered
    first (marked ``from_snapshot``), and stream messages it already covers are skipped;
    ``resync(prefix)`` does the same at any time (e.g. from ``on_gap``). Before the first
    snapshot it waits up to ``join_wait_ms`` for the subscription to go live.

    With ``repair=True`` (and ``rpc``), a gap in a tick topic is filled from the engine's tick
    journal (the ``ticks`` op with ``after_seq``) before any later message is delivered, so
    every tick comes once and in order; ``on_gap`` then says ``repaired`` or ``lost`` (ticks
    gone from the journal, the engine unreachable, or a topic the journal does not keep).
    """

    endpoint: str = "tcp://127.0.0.1:5555"
    topics: Iterable[str] = ("",)
    on_gap: Callable[[Gap], None] | None = None
    rpc: RpcClient | None = None
    snapshot: bool = False
    repair: bool = False
    join_wait_ms: int = 1000
    hwm: int = 100_000
    ctx: zmq.Context | None = None
    curve: CurveClient | None = None
    gaps: int = 0
    restarts: int = 0
    malformed: int = 0
    repaired: int = 0  # messages filled into gaps
    lost: int = 0  # messages of gaps that could not be filled
    _state: dict[str, _TopicState] = field(default_factory=dict, init=False)
    _queued: deque[Message] = field(default_factory=deque, init=False)
    _early: deque[list[bytes]] = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        self.topics = tuple(self.topics)
        if self.repair and self.rpc is None:
            raise ValueError("repair=True needs an RpcClient (rpc=...)")
        self._sock = apply_client((self.ctx or zmq.Context.instance()).socket(zmq.SUB), self.curve)
        self._sock.linger = 0
        self._sock.rcvhwm = self.hwm
        for prefix in self.topics:
            self._sock.subscribe(prefix.encode())
        self._sock.connect(self.endpoint)
        if self.snapshot:
            if self.rpc is None:
                raise ValueError("snapshot=True needs an RpcClient (rpc=...)")
            # A subscription takes a moment to reach the publisher, and a snapshot taken
            # before that would miss what is published meanwhile. The first message proves the
            # subscription live (bounded wait, for quiet topics); what came early is checked
            # against the snapshot like any later message.
            if self._sock.poll(self.join_wait_ms):
                self._early.append(self._sock.recv_multipart())
            for prefix in self.topics:
                self.resync(prefix)

    def resync(self, prefix: str) -> None:
        """Queue the snapshot of ``prefix``; stream messages it covers are then dropped."""
        if self.rpc is None:
            raise ValueError("resync needs an RpcClient (rpc=...)")
        for topic, data in self.rpc.snapshot(prefix):
            seq, epoch = data.get("seq", 0), data.get("epoch", 0)
            known = self._state.get(topic)
            if known is not None and known.epoch == epoch and known.seq >= seq:
                continue
            self._state[topic] = _TopicState(epoch, seq)
            self._queued.append(Message(topic, data, from_snapshot=True))

    def recv(self, timeout_ms: int | None = None) -> Message | None:
        """The next message in order, or ``None`` after ``timeout_ms`` (``None``: wait forever)."""
        while True:
            if self._queued:
                return self._queued.popleft()
            if self._early:
                message = self._accept(self._early.popleft())
                if message is not None:
                    return message
                continue
            if timeout_ms is not None and not self._sock.poll(timeout_ms):
                return None
            frames = self._sock.recv_multipart()
            message = self._accept(frames)
            if message is not None:
                return message

    def _accept(self, frames: list[bytes]) -> Message | None:
        if len(frames) != 2:
            self.malformed += 1
            return None
        try:
            topic = frames[0].decode()
            data = decode(frames[1])
        except (UnicodeDecodeError, ProtocolError):
            self.malformed += 1
            return None
        seq, epoch = data.get("seq"), data.get("epoch")
        if not isinstance(seq, int) or not isinstance(epoch, int):
            return Message(topic, data)
        state = self._state.get(topic)
        if state is None:
            self._state[topic] = _TopicState(epoch, seq)
            return Message(topic, data)
        if epoch != state.epoch:
            self.restarts += 1
            gap = Gap(topic, "restart", 1, seq - 1, epoch, state.epoch)
        elif seq <= state.seq:
            return None  # already delivered (e.g. by a snapshot)
        elif seq != state.seq + 1:
            self.gaps += 1
            gap = Gap(topic, "gap", state.seq + 1, seq - 1, epoch)
        else:
            state.seq = seq
            return Message(topic, data)
        state.epoch, state.seq = epoch, seq
        message = Message(topic, data)
        if self.repair:
            filled = self._fill(gap)
            if filled is None:
                self.lost += gap.last - gap.first + 1
                gap = replace(gap, outcome="lost")
            else:
                self.repaired += len(filled)
                gap = replace(gap, outcome="repaired")
                self._queued.extend(filled)
                self._queued.append(message)
                message = None
        if self.on_gap is not None:
            self.on_gap(gap)
        return message

    def _fill(self, gap: Gap) -> list[Message] | None:
        """The messages of ``gap`` from the tick journal, all of them, or None."""
        if gap.last < gap.first:  # a restart at seq 1: nothing is missing
            return []
        out: list[Message] = []
        after = gap.first - 1
        try:
            parts = topic_parts(gap.topic.encode())
            if parts[0] != TICK or len(parts) != 2:
                return None
            while after < gap.last:
                rows = self.rpc.ticks(parts[1], after_seq=after, epoch=gap.epoch,
                                      count=min(MAX_TICKS, gap.last - after))
                for row in rows:
                    if row.get("seq") != after + 1 or row.get("epoch") != gap.epoch:
                        return None
                    out.append(Message(gap.topic, row, repaired=True))
                    after += 1
                if not rows:
                    return None
        except (RpcError, ProtocolError):
            return None
        return out

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.recv()
            if message is not None:
                yield message

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
