"""One byte budget per client for everything waiting to reach it: replies, acknowledgements, pushes.

python-engineio keeps each session's outgoing packets in an unbounded ``asyncio.Queue`` until its
websocket writer or the client's next long-polling GET takes them, so a client that never reads
would hold every reply it asked for. ``BudgetQueue`` takes that queue's place: it counts the bytes
it holds and, together with what waits in the client's TCP buffer (the bundles the fan-out writes
there directly), refuses to grow past the budget. The first packet that would is dropped and
reported once through ``over_budget``; the owner then disconnects the client.

engineio's writer (and a long-poll) takes everything queued at once and then writes it out; what
it has taken is no longer counted. So one take is cut at ``TAKE_BYTES``: the rest stays queued,
and counted, for the next one.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

OVER_BUDGET = "over_budget"  # why a client over its budget is disconnected (a counter's key)
# What an Engine.IO packet without text or bytes data (OPEN, PING, NOOP...) is counted as.
CONTROL_PACKET_BYTES = 64
TAKE_BYTES = 64 * 1024  # the most a writer or a long-poll takes from the queue at once (and one packet)


def packet_bytes(pkt: Any) -> int:
    """The bytes an Engine.IO packet takes on the wire, near enough (its text is ASCII JSON)."""
    data = getattr(pkt, "data", None)
    return len(data) + 1 if isinstance(data, (str, bytes, bytearray)) else CONTROL_PACKET_BYTES


class BudgetQueue(asyncio.Queue):  # type: ignore[type-arg]
    """An Engine.IO session's outgoing queue, bounded in bytes with the session's TCP buffer.

    ``None`` (engineio's end-of-stream mark) is always accepted and counts nothing.
    """

    def __init__(self, budget: int, over_budget: Callable[[BudgetQueue], None]) -> None:
        super().__init__()
        self.budget = budget
        self.bytes = 0
        self._taken = 0  # bytes taken since the current take began
        self.over = False
        self.eio_sid: str | None = None  # set when the session opens
        self.tcp: asyncio.Transport | None = None  # set while the session is on websocket
        self._over_budget = over_budget

    def backlog(self) -> int:
        """Bytes waiting to reach the client: queued here and in its TCP buffer."""
        tcp = self.tcp
        return self.bytes + (tcp.get_write_buffer_size() if tcp is not None else 0)

    def put_nowait(self, item: Any) -> None:
        if item is None:
            super().put_nowait(item)
            return
        if self.over:
            return  # the client is being disconnected: nothing more for it
        size = packet_bytes(item)
        if self.backlog() + size > self.budget:
            self.over = True
            self._over_budget(self)
            return
        self.bytes += size
        super().put_nowait(item)

    async def get(self) -> Any:
        """The first packet of a take (engineio then takes more with ``get_nowait``)."""
        self._taken = 0
        return await super().get()

    def get_nowait(self) -> Any:
        if self._taken >= TAKE_BYTES:
            raise asyncio.QueueEmpty  # this take is full: the rest waits, counted, for the next
        item = super().get_nowait()
        if item is not None:
            size = packet_bytes(item)
            self.bytes -= size
            self._taken += size
        return item

    def discard(self) -> None:
        """Drop every queued packet now (the client is being disconnected)."""
        while not self.empty():
            super().get_nowait()
            self.task_done()
        self.bytes = 0
