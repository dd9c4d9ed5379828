"""The bridge's asyncio side of the bus: a SUB reader with seq/epoch checks, and a DEALER RPC client."""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import zmq
import zmq.asyncio

from engine.logs import RateLimitedLog
from engine.protocol import MAX_REPLY_BYTES, ErrorCode, ProtocolError, RpcError, decode, encode
from engine.security import CurveClient, apply_client

log = logging.getLogger("bridge.bus")

GAP = "gap"
RESTART = "restart"
# Messages read in a row before the other tasks (flushes, HTTP) get a turn: pyzmq's asyncio
# socket hands over a queued message without returning to the event loop, so a flood would stall them.
READ_BURST = 100


class EveryLog:
    """Counts something that may happen per message (bad input, a sequence break) and warns about
    it at most once per ``every_s`` (``engine.logs.RateLimitedLog``), with the latest example."""

    def __init__(self, what: str, every_s: float = 10.0) -> None:
        self.what = what
        self.count = 0
        self._log = RateLimitedLog(log, every_s)

    def __call__(self, detail: str, exc_info: bool = False) -> None:
        self.count += 1
        self._log.warning(self.what, "bridge: %s (%d in all); latest: %s", self.what, self.count, detail,
                          exc_info=exc_info)


class SeqTracker:
    """Per-topic ``seq``/``epoch`` bookkeeping (pure): says when messages were lost or a publisher restarted."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self.gaps = 0
        self.restarts = 0

    def is_newer(self, topic: str, data: dict[str, Any]) -> bool:
        """Whether ``data`` comes after the topic's last message (a snapshot's may not)."""
        last = self._last.get(topic)
        seq, epoch = data.get("seq"), data.get("epoch")
        if last is None:
            return True
        if not isinstance(seq, int) or not isinstance(epoch, int):
            return False
        return epoch > last[0] or (epoch == last[0] and seq > last[1])

    def check(self, topic: str, data: dict[str, Any]) -> str | None:
        """``GAP``, ``RESTART`` or ``None`` for this message; remembers it as the topic's last."""
        seq, epoch = data.get("seq"), data.get("epoch")
        if not isinstance(seq, int) or not isinstance(epoch, int):
            return None
        last = self._last.get(topic)
        self._last[topic] = (epoch, seq)
        if last is None:
            return None
        if epoch != last[0]:
            self.restarts += 1
            return RESTART
        if seq > last[1] + 1:
            self.gaps += 1
            return GAP
        return None


class BusReader:
    """A SUB socket on the bus's subscriber endpoint, yielding ``(topic, payload)``."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, prefixes: Iterable[bytes],
                 hwm: int = 100_000, curve: CurveClient | None = None) -> None:
        self.sock = apply_client(ctx.socket(zmq.SUB), curve)
        self.sock.linger = 0
        self.sock.rcvhwm = hwm
        for prefix in prefixes:
            self.sock.subscribe(prefix)
        self.sock.connect(endpoint)
        # The same socket, read without a Future per message: what is already queued is taken
        # with plain non-blocking reads, a fraction of an awaited read's cost (the asyncio socket
        # looks at the socket's events again before its next wait, so none is missed).
        self._queued = zmq.Socket.shadow(self.sock.underlying)
        self.undecodable = EveryLog("undecodable bus frames dropped")

    @property
    def malformed(self) -> int:
        """Frames dropped as undecodable (not two frames, a topic not UTF-8, a payload not a map)."""
        return self.undecodable.count

    async def messages(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Decoded messages, forever; malformed frames are counted and skipped."""
        sock, queued = self.sock, self._queued
        while True:
            burst = [await sock.recv_multipart()]
            while len(burst) < READ_BURST:
                try:
                    burst.append(queued.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
            for frames in burst:
                if len(frames) != 2:
                    self.undecodable(f"{len(frames)} frames")
                    continue
                try:
                    topic, payload = frames[0].decode(), decode(frames[1])
                except (UnicodeDecodeError, ProtocolError) as exc:
                    self.undecodable(str(exc)[:200])
                    continue
                yield topic, payload
            if len(burst) == READ_BURST:  # queued messages are read without yielding: let the others run
                await asyncio.sleep(0)

    def close(self) -> None:
        self.sock.close(0)


class AsyncRpc:
    """Pipelined requests over one DEALER socket, matched by ``id``, each with a timeout.

    ``IMMEDIATE`` makes a request to an engine that is not connected fail at once
    (``unavailable``) instead of queueing for a peer that may never come back.
    """

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, timeout_ms: int,
                 curve: CurveClient | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout_ms / 1000.0
        self.sock = apply_client(ctx.socket(zmq.DEALER), curve)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.sndhwm = 1000
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.timeouts = 0
        self.last_ok = 0.0
        self.last_timeout = 0.0

    async def run(self) -> None:
        """Receive replies and resolve their requests, until cancelled."""
        while True:
            frames = await self.sock.recv_multipart()
            try:
                reply = decode(frames[-1], MAX_REPLY_BYTES)
            except ProtocolError:
                continue
            future = self._pending.pop(reply.get("id"), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(reply)

    async def call(self, op: str, **params: Any) -> Any:
        """``data`` of the reply, or ``RpcError`` (``timeout``/``unavailable`` when the engine is away)."""
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                await self.sock.send(encode({"op": op, "id": request_id, **params}), zmq.NOBLOCK)
            except zmq.Again:
                raise RpcError(ErrorCode.UNAVAILABLE, f"the engine is not connected ({self.endpoint})") from None
            try:
                reply = await asyncio.wait_for(future, self.timeout)
            except asyncio.TimeoutError:
                self.timeouts += 1
                self.last_timeout = time.monotonic()
                raise RpcError(ErrorCode.TIMEOUT, f"no reply from the engine in {self.timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)
        self.last_ok = time.monotonic()
        if reply.get("ok"):
            return reply.get("data")
        error = reply.get("error") or {}
        raise RpcError(str(error.get("code", ErrorCode.INTERNAL)), str(error.get("message", "")))

    def close(self) -> None:
        self.sock.close(0)
