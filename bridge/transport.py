"""Delivery of pre-serialised Socket.IO packets to many clients at the cost of one write each.

python-socketio's room emit encodes a packet once but then runs a coroutine per recipient, and
python-engineio's per-client writer task wakes, frames and writes each packet on its own (and
compresses it when the client offered permessage-deflate, as browsers and Node do). For a
flush that reaches a thousand clients this module instead:

* builds each packet's WebSocket frame once (``Wire.frame``: server frames are unmasked, so the
  bytes are the same for every client), joins the frames once per set of rooms (``Bundle``) and
  writes all of one client's frames for the flush with a single ``transport.write``;
* serves websockets without per-message compression (``NoCompressWebSocket``), so the frames
  go out as they are (an uncompressed frame is valid on a deflate connection too);
* falls back to the client's Engine.IO queue (in order) for polling clients, or while that
  queue still holds packets, so a reply emitted earlier is never overtaken.

What waits for a client, in that queue and in its TCP buffer, is one budget
(``budget.BudgetQueue``); ``sessions.Sessions`` disconnects a client over it.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import socketio
from aiohttp.web import WebSocketResponse
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from bridge.budget import OVER_BUDGET
from bridge.inbound import eio_refusal

if TYPE_CHECKING:
    from bridge.sessions import Sessions

# The Engine.IO MESSAGE type prefix of every Socket.IO packet on the wire.
_MESSAGE = str(eio_packet.MESSAGE)


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (what a server sends) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def ws_close_frame(code: int) -> bytes:
    """An unmasked WebSocket close frame with status ``code``."""
    return struct.pack("!BBH", 0x88, 2, code)


class TextPacket(sio_packet.Packet):
    """python-socketio's packet without binary support: the API has none, and looking for bytes
    in every outgoing payload (a recursive walk in Python) costs four times its JSON encoding."""

    uses_binary_events = False


class Wire:
    """A Socket.IO packet ready for the wire, as an Engine.IO packet or a WebSocket frame (both cached)."""

    __slots__ = ("text", "_packet", "_frame")

    def __init__(self, text: str) -> None:
        self.text = text
        self._packet: eio_packet.Packet | None = None
        self._frame: bytes | None = None

    @property
    def packet(self) -> eio_packet.Packet:
        if self._packet is None:
            self._packet = eio_packet.Packet(eio_packet.MESSAGE, self.text)
        return self._packet

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = ws_text_frame((_MESSAGE + self.text).encode())
        return self._frame


class Bundle:
    """The wires one client gets in one flush; the joined frames are built once for all who share it."""

    __slots__ = ("wires", "_frames")

    def __init__(self, wires: list[Wire]) -> None:
        self.wires = wires
        self._frames: bytes | None = None

    @property
    def frames(self) -> bytes:
        if self._frames is None:
            self._frames = b"".join([w.frame for w in self.wires])
        return self._frames


class WireTransport:
    """The ``fanout.Transport`` over a python-socketio ``AsyncServer`` (aiohttp mode)."""

    def __init__(self, sio: socketio.AsyncServer, sessions: Sessions) -> None:
        self.sio = sio
        self.sessions = sessions
        self.eio_sids: dict[str, str] = {}
        self._connections: dict[str, Connection] = {}
        self.raw_writes = 0
        self.queued_writes = 0
        self._install()

    def _install(self) -> None:
        sessions = self.sessions

        class NoCompressWebSocket(eio_aiohttp.WebSocket):
            """engineio's aiohttp websocket without compression, with its TCP transport on the
            session's queue (for the budget and the direct writes) and every frame checked."""

            async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
                request = environ["aiohttp.request"]
                self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
                await self._sock.prepare(request)
                self.environ = environ
                session = getattr(self.handler, "__self__", None)
                queue = getattr(session, "queue", None)
                if queue is not None and request.transport is not None:
                    queue.tcp = request.transport
                try:
                    await self.handler(self)
                finally:
                    if queue is not None:
                        queue.tcp = None
                return self._sock

            async def wait(self) -> str | bytes:
                """The next frame the session may act on. Once the session is cut, frames are read
                and dropped until the client closes or the connection is cut (an ``OSError``):
                leaving them unread would make the close a reset that loses the error sent."""
                session = getattr(self.handler, "__self__", None)
                while True:
                    frame = await super().wait()
                    if session is not None and session.queue.over:
                        continue
                    refusal = eio_refusal(frame)
                    if refusal is None:
                        return frame
                    if session is None:
                        raise OSError(refusal)  # engineio ends the receive loop on OSError
                    await sessions.refuse(session.sid, refusal)

        eio = self.sio.eio
        eio._async = {**eio._async, "websocket": NoCompressWebSocket}

    def wrap(self, text: str) -> Wire:
        return Wire(text)

    def bundle(self, wires: list[Wire]) -> Bundle:
        return Bundle(wires)

    def register(self, sid: str) -> None:
        """A client in its connect handler: it is served once the connect packet is queued."""
        eio_sid = self.eio_sids[sid] = self.sio.manager.eio_sid_from_sid(sid, "/")
        self.sessions.joined(eio_sid)

    def forget(self, sid: str) -> None:
        self.eio_sids.pop(sid, None)
        self._connections.pop(sid, None)

    def connection(self, sid: str) -> Connection | None:
        """The client's connection, or ``None`` while it is not (or no longer) served."""
        conn = self._connections.get(sid)
        if conn is None:
            eio_sid = self.eio_sids.get(sid)
            # Until python-socketio has queued the CONNECT packet (after the connect handler and
            # its ``connected`` event), nothing may overtake them.
            if eio_sid is None or not self.sio.manager.is_connected(sid, "/"):
                return None
            sock = self.sio.eio.sockets.get(eio_sid)
            if sock is None:
                return None
            conn = self._connections[sid] = Connection(self, sock)
        return None if conn.sock.closed or conn.sock.closing else conn

    def disconnect(self, sid: str) -> None:
        """Disconnect a client over its budget."""
        eio_sid = self.eio_sids.get(sid)
        if eio_sid is not None:
            self.sessions.evict_soon(eio_sid, OVER_BUDGET)


class Connection:
    """One client's Engine.IO socket; its queue knows its TCP transport once it is on websocket."""

    __slots__ = ("owner", "sock")

    def __init__(self, owner: WireTransport, sock: Any) -> None:
        self.owner = owner
        self.sock = sock

    def backlog(self) -> int:
        """Bytes waiting to reach the client."""
        return self.sock.queue.backlog()

    def send(self, bundle: Bundle) -> None:
        sock = self.sock
        tcp = sock.queue.tcp
        if tcp is not None and sock.upgraded and sock.queue.empty() and not tcp.is_closing():
            self.owner.raw_writes += 1
            tcp.write(bundle.frames)
            return
        self.owner.queued_writes += 1
        for wire in bundle.wires:
            sock.queue.put_nowait(wire.packet)
