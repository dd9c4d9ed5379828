"""The bridge's Engine.IO sessions: one byte budget each, refused input, and those that never join.

Installed on a python-socketio ``AsyncServer``:

* every session's outgoing queue is a ``BudgetQueue``; a session over its budget is disconnected;
* every inbound Socket.IO packet is checked (``inbound.sio_refusal``) before python-socketio
  decodes it; a refused one disconnects its session;
* a session that has not joined the Socket.IO namespace within ``join_timeout_s`` is closed
  (``PendingSessions``), so sessions that only hold a connection open cannot pile up.

``evict`` closes a session at once and drops what was queued for it: python-engineio's own close
waits for the queue to drain, which a client that reads nothing never lets happen. A websocket
client gets an ``error`` event and a close frame first, if it still reads.

Every engine.io internal this takes is ``bridge.transport``'s (``open_engine_sessions``): when its
self-test fails, none of this is installed and python-socketio keeps its sessions alone.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import socketio
from socketio import packet as sio_packet

from bridge.budget import OVER_BUDGET, BudgetQueue, packet_bytes
from engine.heap import release_free_memory
from bridge.inbound import ATTACHMENTS, BINARY, MALFORMED, REASONS, sio_refusal
from engine.logs import RateLimitedLog
from bridge.transport import Wire, open_engine_sessions, ws_close_frame
from bridge.validation import SLOW_CONSUMER
from engine.protocol import ErrorCode

UNJOINED = "unjoined"
DISCONNECT_KINDS = (OVER_BUDGET, UNJOINED, *REASONS)
SWEEP_INTERVAL_S = 1.0
# How long an evicted websocket client has to read its error and close frames before the TCP
# connection is cut (what waits in its buffer is freed then at the latest).
CLOSE_GRACE_S = 1.0
# When the heap is trimmed after an eviction: once the cut connections have let go of their buffers.
TRIM_AFTER_S = CLOSE_GRACE_S + 1.0
# The WebSocket close code sent with an eviction: the client broke the bridge's policy.
POLICY_VIOLATION = 1008
MESSAGES = {
    OVER_BUDGET: "more than CLIENT_BUFFER_HARD_BYTES waited to reach this client: it does not read",
    UNJOINED: "the session did not join the Socket.IO namespace in time",
    BINARY: "binary packets are not part of the API",
    ATTACHMENTS: "packets with attachments are not part of the API",
    MALFORMED: "a packet could not be decoded",
}
ERROR_CODES = {OVER_BUDGET: SLOW_CONSUMER}  # the others are bad requests


def error_wire(kind: str) -> Wire:
    """The ``error`` event an evicted client is sent."""
    payload = {"code": ERROR_CODES.get(kind, ErrorCode.BAD_REQUEST), "message": MESSAGES[kind], "event": ""}
    return Wire(f"{sio_packet.EVENT}{json.dumps(['error', payload], separators=(',', ':'))}")


class PendingSessions:
    """When each session that has not joined the namespace yet opened (pure: callers pass the time)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.opened: dict[str, float] = {}

    def open(self, eio_sid: str, now: float) -> None:
        self.opened[eio_sid] = now

    def settle(self, eio_sid: str) -> None:
        """The session joined, or closed: no longer pending."""
        self.opened.pop(eio_sid, None)

    def expired(self, now: float) -> list[str]:
        return [sid for sid, opened in self.opened.items() if now - opened >= self.timeout_s]

    def __len__(self) -> int:
        return len(self.opened)


class Sessions:
    """Engine.IO session policy over ``sio``; ``disconnects`` counts the sessions closed, by reason."""

    def __init__(self, sio: socketio.AsyncServer, budget: int, join_timeout_s: float,
                 bad_input: RateLimitedLog) -> None:
        self.budget = budget
        self.pending = PendingSessions(join_timeout_s)
        self.bad_input = bad_input
        self.disconnects: Counter[str] = Counter({kind: 0 for kind in DISCONNECT_KINDS})
        self._evicting: set[asyncio.Task[None]] = set()
        self._trim: asyncio.TimerHandle | None = None
        self.engine = open_engine_sessions(sio)
        self.engine.install(self)

    # The policy, as engine.io's session events ask it (``transport.SessionPolicy``).
    def create_queue(self) -> BudgetQueue:
        return BudgetQueue(self.budget, self._over_budget)

    def opened(self, eio_sid: str, queue: BudgetQueue | None) -> None:
        if queue is not None:
            queue.eio_sid = eio_sid
        self.pending.open(eio_sid, time.monotonic())

    async def admit(self, eio_sid: str, data: Any) -> bool:
        """Whether python-socketio may decode an inbound packet; a refused one disconnects its session."""
        refusal = sio_refusal(data)
        if refusal is None:
            return True
        await self.refuse(eio_sid, refusal)
        return False

    def closed(self, eio_sid: str) -> None:
        self.pending.settle(eio_sid)
        self._release_memory_later()

    def joined(self, eio_sid: str) -> None:
        """The session's client joined the namespace (it was let in)."""
        self.pending.settle(eio_sid)

    async def refuse(self, eio_sid: str, kind: str) -> None:
        """Disconnect a session for ``kind`` of bad input (counted, logged at a bounded rate)."""
        self.bad_input.warning(kind, "bridge: disconnecting a client: %s", MESSAGES[kind])
        await self.evict(eio_sid, kind)

    def _over_budget(self, queue: BudgetQueue) -> None:
        if queue.eio_sid is not None:
            self.bad_input.warning(OVER_BUDGET, "bridge: disconnecting a client: %s (budget %d bytes)",
                                   MESSAGES[OVER_BUDGET], self.budget)
            self.evict_soon(queue.eio_sid, OVER_BUDGET)

    def evict_soon(self, eio_sid: str, kind: str) -> None:
        """``evict`` from synchronous code (a queue's put, a flush)."""
        task = asyncio.get_running_loop().create_task(self.evict(eio_sid, kind))
        self._evicting.add(task)
        task.add_done_callback(self._evicting.discard)

    async def evict(self, eio_sid: str, kind: str) -> bool:
        """Close the session now and release what it holds; ``False`` if it was already closing."""
        queue: BudgetQueue | None = self.engine.queue(eio_sid)
        if queue is None:
            return False
        self.disconnects[kind] += 1
        self.pending.settle(eio_sid)
        queue.over = True
        queue.discard()
        tcp = queue.tcp
        if tcp is not None and not tcp.is_closing():
            tcp.write(error_wire(kind).frame + ws_close_frame(POLICY_VIOLATION))
            # Half-close: closing outright with the client's frames unread would answer them
            # with a reset, which makes its kernel drop the error before the client reads it.
            tcp.write_eof()
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, tcp.abort)
        # Runs the disconnect handlers (the client leaves the fan-out).
        await self.engine.close(eio_sid)
        if tcp is None:
            # A long-poll, or a websocket on engineio's own driver (the public delivery path):
            # the error goes through the queue (emptied above, so past the budget's check),
            # ahead of the end of the stream, which ends the poll or closes the websocket.
            error = error_wire(kind).packet
            queue.bytes += packet_bytes(error)
            asyncio.Queue.put_nowait(queue, error)
            self.engine.end_stream(queue)
        return True

    def _release_memory_later(self) -> None:
        """Trim the heap once the sessions closing now have let go of their buffers."""
        if self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_AFTER_S, self._release_memory)

    def _release_memory(self) -> None:
        self._trim = None
        release_free_memory()

    async def run(self) -> None:
        """Close the sessions that did not join the namespace in time."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            for eio_sid in self.pending.expired(time.monotonic()):
                if await self.evict(eio_sid, UNJOINED):
                    self.bad_input.warning(UNJOINED, "bridge: closed a session: %s", MESSAGES[UNJOINED])
                else:  # already gone
                    self.pending.settle(eio_sid)
