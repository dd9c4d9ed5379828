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
"""
from __future__ import annotations

import asyncio
import struct
from typing import Any

import socketio
from aiohttp.web import WebSocketResponse
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp

# The Engine.IO MESSAGE type prefix of every Socket.IO packet on the wire.
_MESSAGE = str(eio_packet.MESSAGE)
# Bytes a polling client's queued packet is counted as, for its backlog.
_QUEUED_PACKET_BYTES = 256


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

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self.eio_sids: dict[str, str] = {}
        self._connections: dict[str, Connection] = {}
        self.websockets: dict[str, asyncio.Transport] = {}  # eio sid -> its TCP transport
        self.raw_writes = 0
        self.queued_writes = 0
        self._install()

    def _install(self) -> None:
        websockets = self.websockets

        class NoCompressWebSocket(eio_aiohttp.WebSocket):
            """engineio's aiohttp websocket without compression, registering its transport."""

            async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
                request = environ["aiohttp.request"]
                self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
                await self._sock.prepare(request)
                self.environ = environ
                eio_sid = getattr(getattr(self.handler, "__self__", None), "sid", None)
                if eio_sid is not None and request.transport is not None:
                    websockets[eio_sid] = request.transport
                try:
                    await self.handler(self)
                finally:
                    websockets.pop(eio_sid, None)
                return self._sock

        eio = self.sio.eio
        eio._async = {**eio._async, "websocket": NoCompressWebSocket}

    def wrap(self, text: str) -> Wire:
        return Wire(text)

    def bundle(self, wires: list[Wire]) -> Bundle:
        return Bundle(wires)

    def register(self, sid: str) -> None:
        """A client in its connect handler: it is served once the connect packet is queued."""
        self.eio_sids[sid] = self.sio.manager.eio_sid_from_sid(sid, "/")

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
            conn = self._connections[sid] = Connection(self, eio_sid, sock)
        return None if conn.sock.closed else conn

    def disconnect(self, sid: str, reason: str) -> None:
        async def close() -> None:
            await self.sio.emit("error", {"code": "slow_consumer", "message": reason, "event": ""}, to=sid)
            await self.sio.disconnect(sid)
        asyncio.get_running_loop().create_task(close())


class Connection:
    """One client's Engine.IO socket and, once it is on websocket, its TCP transport."""

    __slots__ = ("owner", "eio_sid", "sock")

    def __init__(self, owner: WireTransport, eio_sid: str, sock: Any) -> None:
        self.owner = owner
        self.eio_sid = eio_sid
        self.sock = sock

    def backlog(self) -> int:
        """Bytes waiting to reach the client."""
        tcp = self.owner.websockets.get(self.eio_sid)
        queued = self.sock.queue.qsize() * _QUEUED_PACKET_BYTES
        return queued + (tcp.get_write_buffer_size() if tcp is not None else 0)

    def send(self, bundle: Bundle) -> None:
        sock = self.sock
        tcp = self.owner.websockets.get(self.eio_sid)
        if tcp is not None and sock.upgraded and sock.queue.empty() and not tcp.is_closing():
            self.owner.raw_writes += 1
            tcp.write(bundle.frames)
            return
        self.owner.queued_writes += 1
        for wire in bundle.wires:
            sock.queue.put_nowait(wire.packet)
