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

That fast path leans on python-engineio internals (the ``_async["websocket"]`` driver, the
socket behind ``handler.__self__``, ``eio.sockets``, a socket's ``queue``/``upgraded``/``closing``),
and the session policy (``bridge.sessions``) on more (``create_queue`` building each socket's queue,
python-socketio's engine.io handlers, an aborting ``close``, ``None`` as a queue's end-of-stream).
This module is their one home. ``open_engine_sessions`` self-tests the session internals
(``engine_sessions_problem``) and hands the policy ``EngineSessions``, or ``PublicSessions`` when one
is missing or changed: python-socketio's own handling then (its buffer limit, engine.io's ping
timeout), without the per-client byte budget, the packet checks or the join timeout.
``open_transport`` runs ``fast_path_problem`` (a throwaway socket through the same code) and, when
it or the session self-test finds a problem or ``BRIDGE_FAST_PATH=0`` asks for it, serves through
``PublicTransport`` instead: python-engineio's public ``send_packet`` per client and packet, slower
but with no private attribute in the way. ``/health`` names the path and why.
"""
from __future__ import annotations

import asyncio
import inspect
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import socketio
from aiohttp.web import WebSocketResponse
from engineio import async_socket as eio_socket
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from bridge.budget import OVER_BUDGET
from bridge.encoded import SplicingJson
from bridge.inbound import eio_refusal

if TYPE_CHECKING:
    from bridge.sessions import Sessions

# The Engine.IO MESSAGE type prefix of every Socket.IO packet on the wire.
_MESSAGE = str(eio_packet.MESSAGE)
NAMESPACE = "/"
FAST, PUBLIC = "fast", "public"  # the delivery paths, as ``/health`` names them


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
    in every outgoing payload (a recursive walk in Python) costs four times its JSON encoding.
    A large reply's part encoded ahead, in slices (``bridge.encoded``), is spliced in as it is."""

    uses_binary_events = False
    json = SplicingJson


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


@dataclass
class WriteCounts:
    """How a transport's sends went: straight to the TCP transport, or through the Engine.IO queue."""

    raw_writes: int = 0
    queued_writes: int = 0


def websocket_driver(sessions: Sessions) -> type[eio_aiohttp.WebSocket]:
    """engineio's aiohttp websocket without compression, with its TCP transport on the session's
    queue (for the budget and the direct writes) and every frame checked."""

    class NoCompressWebSocket(eio_aiohttp.WebSocket):
        def __init__(self, handler: Any, server: Any) -> None:
            super().__init__(handler, server)
            self.server = server  # python-engineio before 4.13 does not keep it

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

    return NoCompressWebSocket


# python-socketio's handlers of engine.io's events, which the session policy runs in front of.
SIO_HANDLERS = {"connect": "_handle_eio_connect", "message": "_handle_eio_message",
                "disconnect": "_handle_eio_disconnect"}
# What an eviction passes to a socket's close: at once, without queueing a CLOSE, with a reason.
CLOSE_PARAMETERS = ("wait", "abort", "reason")
CLOSE_REASONS = ("SERVER_DISCONNECT", "CLIENT_DISCONNECT")


class SessionPolicy(Protocol):
    """What ``bridge.sessions.Sessions`` decides, asked from engine.io's session events."""

    def create_queue(self) -> asyncio.Queue[Any]: ...
    def opened(self, eio_sid: str, queue: Any) -> None: ...
    async def admit(self, eio_sid: str, data: Any) -> bool: ...
    def closed(self, eio_sid: str) -> None: ...


def engine_sessions_problem(sio: socketio.AsyncServer) -> str | None:
    """Why the installed python-engineio/python-socketio cannot carry the session policy, or ``None``.

    Checks that python-socketio's engine.io handlers are the ones registered (the policy runs in
    front of them), that engineio builds a socket's queue with ``create_queue`` (a throwaway socket
    gets the queue it returns), and the socket's state flags, close parameters and reasons.
    """
    try:
        eio = sio.eio
        if not isinstance(eio.sockets, dict):
            return "engineio's server has no 'sockets' dict"
        for event, name in SIO_HANDLERS.items():
            handler = getattr(sio, name, None)
            if not inspect.iscoroutinefunction(handler) or eio.handlers.get(event) != handler:
                return f"python-socketio does not handle engine.io's {event!r} event with {name}()"
        for name in CLOSE_REASONS:  # python-engineio 4.11 and later
            if not isinstance(getattr(getattr(eio, "reason", None), name, None), str):
                return f"engineio has no reason.{name}"
        made: asyncio.Queue[Any] = asyncio.Queue()
        eio.create_queue = lambda *args, **kwargs: made
        try:
            sock = eio_socket.AsyncSocket(eio, "probe")
        finally:
            del eio.create_queue
        if sock.queue is not made:
            return "engineio does not build a socket's queue with create_queue"
        for name in ("upgraded", "closed", "closing"):
            if getattr(sock, name, None) is not False:
                return f"a new engineio socket's {name!r} is not False"
        missing = [name for name in CLOSE_PARAMETERS if name not in inspect.signature(sock.close).parameters]
        if missing or not inspect.iscoroutinefunction(sock.close):
            return f"an engineio socket's close() takes no {', '.join(missing) or 'await'}"
    except Exception as exc:  # an incompatible version may fail anywhere in there
        return f"{type(exc).__name__}: {exc}"
    return None


class EngineSessions:
    """The engine.io internals the session policy uses, once ``engine_sessions_problem`` passed."""

    problem = ""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self.eio = sio.eio
        self._policy: SessionPolicy | None = None

    def install(self, policy: SessionPolicy) -> None:
        """Every session's queue from ``policy``, and ``policy`` asked before python-socketio's handlers."""
        self._policy = policy
        # An instance attribute shadows the server's method; engineio builds each socket's queue with it.
        self.eio.create_queue = lambda *args, **kwargs: policy.create_queue()
        self.eio.on("connect", self._on_open)
        self.eio.on("message", self._on_message)
        self.eio.on("disconnect", self._on_close)

    async def _on_open(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        assert self._policy is not None
        sock = self.eio.sockets.get(eio_sid)
        self._policy.opened(eio_sid, None if sock is None else sock.queue)
        return await self.sio._handle_eio_connect(eio_sid, environ)

    async def _on_message(self, eio_sid: str, data: Any) -> None:
        assert self._policy is not None
        if await self._policy.admit(eio_sid, data):
            await self.sio._handle_eio_message(eio_sid, data)

    async def _on_close(self, eio_sid: str, reason: Any) -> None:
        assert self._policy is not None
        self._policy.closed(eio_sid)
        if reason == self.eio.reason.CLIENT_DISCONNECT:
            self._end_poll_soon(eio_sid)
        await self.sio._handle_eio_disconnect(eio_sid, reason)

    def _end_poll_soon(self, eio_sid: str) -> None:
        """On a long-polling client's CLOSE, engineio closes the session without answering the GET
        that waits for packets: it ends only at its timeout, and python-engineio's client, which
        waits for it, takes ~30 s to disconnect. Once the close is done, answer it with a CLOSE
        (what engine.io's own server does); the session is dropped after that GET."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None and not sock.upgraded:
            asyncio.get_running_loop().call_soon(self._end_poll, sock)

    @staticmethod
    def _end_poll(sock: Any) -> None:
        if sock.closed and sock.queue.empty():  # else what is queued answers the poll
            sock.queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))

    def queue(self, eio_sid: str) -> Any:
        """The session's outgoing queue while it is open (``None``: gone, closing or closed)."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None or sock.closing or sock.closed:
            return None
        return sock.queue

    async def close(self, eio_sid: str) -> None:
        """Close the session at once and forget it: its disconnect handlers run, and no CLOSE is
        queued or waited for (a client that reads nothing would never let it through)."""
        sock = self.eio.sockets.get(eio_sid)
        if sock is None:
            return
        await sock.close(wait=False, abort=True, reason=self.eio.reason.SERVER_DISCONNECT)
        self.eio.sockets.pop(eio_sid, None)

    @staticmethod
    def end_stream(queue: asyncio.Queue[Any]) -> None:
        """Mark the end of a closed session's packets: it ends a long-poll with what came before
        and stops engineio's own websocket writer."""
        queue.put_nowait(None)


class PublicSessions:
    """The session policy's hands when its internals are missing or changed: none. python-socketio
    keeps its sessions alone (its buffer limit, engine.io's ping timeout); nothing is evicted."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def install(self, policy: SessionPolicy) -> None:
        """Nothing to install: python-socketio's handlers stay as they are."""

    def queue(self, eio_sid: str) -> Any:
        return None

    async def close(self, eio_sid: str) -> None:
        """Never reached: ``queue`` is ``None`` for every session."""

    def end_stream(self, queue: asyncio.Queue[Any]) -> None:
        """Never reached, as ``close``."""


def open_engine_sessions(sio: socketio.AsyncServer) -> EngineSessions | PublicSessions:
    """The session internals when their self-test passes, else the public stand-in (with why)."""
    problem = engine_sessions_problem(sio)
    return EngineSessions(sio) if problem is None else PublicSessions(problem)


PROBE_TEXT = '2["probe",1]'


def fast_path_problem(sio: socketio.AsyncServer, sessions: Sessions) -> str | None:
    """Why the installed python-engineio/python-socketio cannot carry the fast path, or ``None``.

    Checks each internal the fast path uses, by presence and shape, then puts a throwaway socket
    through the same code: engineio builds its queue with ``create_queue`` (the session budget),
    the websocket driver sees the socket as ``handler.__self__``, and a bundle sent to it while it
    is not on websocket comes out of its queue as the Engine.IO packet of the same text.
    """
    try:
        eio = sio.eio
        drivers = eio._async
        if not isinstance(drivers, dict) or "websocket" not in drivers:
            return "engineio's async drivers have no 'websocket' entry"
        if drivers["websocket"] is not eio_aiohttp.WebSocket:
            return f"engineio's websocket driver is {drivers['websocket']!r}, not its aiohttp WebSocket"
        if not isinstance(eio.sockets, dict):
            return "engineio's server has no 'sockets' dict"
        for name in ("eio_sid_from_sid", "is_connected"):
            if not callable(getattr(sio.manager, name, None)):
                return f"python-socketio's manager has no {name}()"
        sock = eio_socket.AsyncSocket(eio, "probe")
        for name in ("upgraded", "closed", "closing"):
            if getattr(sock, name, None) is not False:
                return f"a new engineio socket's {name!r} is not False"
        queue = sock.queue
        if not (hasattr(queue, "backlog") and hasattr(queue, "tcp")):
            return "engineio does not build a socket's queue with create_queue"
        ws = websocket_driver(sessions)(sock._websocket_handler, eio)
        if getattr(ws.handler, "__self__", None) is not sock:
            return "the websocket driver's handler is not bound to its engineio socket"
        conn = Connection(WriteCounts(), sock)
        conn.send(Bundle([Wire(PROBE_TEXT)]))
        pkt = queue.get_nowait()
        if pkt.encode() != _MESSAGE + PROBE_TEXT or conn.backlog() != 0 or not queue.empty():
            return "a packet queued on an engineio socket does not come out as it went in"
    except Exception as exc:  # an incompatible version may fail anywhere in there
        return f"{type(exc).__name__}: {exc}"
    return None


class Transport(Protocol):
    """What the bridge delivers through: ``fanout.Transport`` plus the session bookkeeping."""

    delivery: str
    reason: str
    counts: WriteCounts

    def wrap(self, text: str) -> Wire: ...
    def bundle(self, wires: list[Wire]) -> Bundle: ...
    def register(self, sid: str) -> None: ...
    def forget(self, sid: str) -> None: ...
    def connection(self, sid: str) -> Any: ...
    def disconnect(self, sid: str) -> None: ...


# What the bridge does without its session internals, as /health's delivery_reason says.
WITHOUT_SESSIONS = ("no per-client byte budget, packet checks or join timeout: python-socketio's "
                    "buffer limit and engine.io's ping timeout apply")


def open_transport(sio: socketio.AsyncServer, sessions: Sessions, fast: bool) -> Transport:
    """The fast path when ``fast`` and the self-tests pass, else the public one (with why)."""
    if sessions.engine.problem:
        reason = f"session self-test failed: {sessions.engine.problem} ({WITHOUT_SESSIONS})"
        return PublicTransport(sio, sessions, reason if fast else f"BRIDGE_FAST_PATH=0; {reason}")
    if not fast:
        return PublicTransport(sio, sessions, "BRIDGE_FAST_PATH=0")
    problem = fast_path_problem(sio, sessions)
    if problem is not None:
        return PublicTransport(sio, sessions, f"fast-path self-test failed: {problem}")
    return WireTransport(sio, sessions)


class _Transport:
    """What both paths share: clients by Socket.IO sid, their engine.io sids and connections."""

    delivery = ""
    reason = ""

    def __init__(self, sio: socketio.AsyncServer, sessions: Sessions) -> None:
        self.sio = sio
        self.sessions = sessions
        self.eio_sids: dict[str, str] = {}
        self._connections: dict[str, Any] = {}
        self.counts = WriteCounts()

    def wrap(self, text: str) -> Wire:
        return Wire(text)

    def bundle(self, wires: list[Wire]) -> Bundle:
        return Bundle(wires)

    def register(self, sid: str) -> None:
        """A client in its connect handler: it is served once the connect packet is queued."""
        eio_sid = self.eio_sids[sid] = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        self.sessions.joined(eio_sid)

    def forget(self, sid: str) -> None:
        self.eio_sids.pop(sid, None)
        self._connections.pop(sid, None)

    def connection(self, sid: str) -> Any:
        """The client's connection, or ``None`` while it is not (or no longer) served."""
        conn = self._connections.get(sid)
        if conn is None:
            eio_sid = self.eio_sids.get(sid)
            # Until python-socketio has queued the CONNECT packet (after the connect handler and
            # its ``connected`` event), nothing may overtake them.
            if eio_sid is None or not self.sio.manager.is_connected(sid, NAMESPACE):
                return None
            conn = self._open(eio_sid)
            if conn is None:
                return None
            self._connections[sid] = conn
        return conn if self._serving(conn) else None

    def _open(self, eio_sid: str) -> Any:
        """A new client's connection (``None``: not yet)."""
        raise NotImplementedError

    def _serving(self, conn: Any) -> bool:
        return True

    def disconnect(self, sid: str) -> None:
        """Disconnect a client over its budget."""
        eio_sid = self.eio_sids.get(sid)
        if eio_sid is not None:
            self.sessions.evict_soon(eio_sid, OVER_BUDGET)


class WireTransport(_Transport):
    """The ``fanout.Transport`` over a python-socketio ``AsyncServer`` (aiohttp mode): the fast path."""

    delivery = FAST

    def __init__(self, sio: socketio.AsyncServer, sessions: Sessions) -> None:
        super().__init__(sio, sessions)
        eio = sio.eio
        eio._async = {**eio._async, "websocket": websocket_driver(sessions)}

    def _open(self, eio_sid: str) -> Connection | None:
        sock = self.sio.eio.sockets.get(eio_sid)
        return None if sock is None else Connection(self.counts, sock)

    def _serving(self, conn: Connection) -> bool:
        return not (conn.sock.closed or conn.sock.closing)


class Connection:
    """One client's Engine.IO socket; its queue knows its TCP transport once it is on websocket."""

    __slots__ = ("counts", "sock")

    def __init__(self, counts: WriteCounts, sock: Any) -> None:
        self.counts = counts
        self.sock = sock

    def backlog(self) -> int:
        """Bytes waiting to reach the client."""
        return self.sock.queue.backlog()

    def send(self, bundle: Bundle) -> None:
        sock = self.sock
        tcp = sock.queue.tcp
        if tcp is not None and sock.upgraded and sock.queue.empty() and not tcp.is_closing():
            self.counts.raw_writes += 1
            tcp.write(bundle.frames)
            return
        self.counts.queued_writes += 1
        for wire in bundle.wires:
            sock.queue.put_nowait(wire.packet)


class PublicTransport(_Transport):
    """The ``fanout.Transport`` through python-engineio's public API only: the public path.

    Each packet goes to each client with ``AsyncServer.send_packet`` (what python-socketio's own
    emit ends in), one coroutine step per client and packet instead of one write per client and
    flush, and websockets keep engineio's own driver (compressed where the client offered it).
    The sends of one flush run in order in one task. What waits for a client is not visible
    through the public API, so ``backlog`` is 0: no conflation above the soft bound; the hard
    bound is the session budget (``budget.BudgetQueue``), which disconnects a client that does
    not read once its queue is full.
    """

    delivery = PUBLIC

    def __init__(self, sio: socketio.AsyncServer, sessions: Sessions, reason: str) -> None:
        super().__init__(sio, sessions)
        self.reason = reason
        self._outbox: list[tuple[str, Bundle]] = []
        self._sending: asyncio.Task[None] | None = None

    def _open(self, eio_sid: str) -> PublicConnection:
        return PublicConnection(self, eio_sid)

    def post(self, eio_sid: str, bundle: Bundle) -> None:
        """Send ``bundle`` to ``eio_sid`` after what was posted before it."""
        self.counts.queued_writes += 1
        self._outbox.append((eio_sid, bundle))
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        send_packet = self.sio.eio.send_packet
        try:
            while self._outbox:
                outbox, self._outbox = self._outbox, []
                for eio_sid, bundle in outbox:
                    for wire in bundle.wires:
                        await send_packet(eio_sid, wire.packet)
        finally:
            self._sending = None


class PublicConnection:
    """One client on the public path."""

    __slots__ = ("owner", "eio_sid")

    def __init__(self, owner: PublicTransport, eio_sid: str) -> None:
        self.owner = owner
        self.eio_sid = eio_sid

    def backlog(self) -> int:
        return 0

    def send(self, bundle: Bundle) -> None:
        self.owner.post(self.eio_sid, bundle)
