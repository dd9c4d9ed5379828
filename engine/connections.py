"""The TCP connections of a bound ZeroMQ socket: which message came from which, what each has
sent that the engine has not read yet, and closing one.

ZeroMQ has no per-connection limits and no call to close one peer of a bound socket. What libzmq
4.3 does expose: every received frame carries its connection's socket descriptor (the private
``__fd`` property behind the deprecated ``ZMQ_SRCFD``), and a monitor reports each connection
accepted and closed with that descriptor. ``shutdown()`` on the descriptor then makes libzmq drop
the connection as if the peer had left: its subscriptions, queued messages and half-received
multipart message are freed.

``TCP_INFO`` (Linux) tells how many bytes each connection has received and how many its peer
has received from us; the engine keeps its own counts of what it read and sent beside them. A
multipart message is held by libzmq until its last frame arrives, so the engine cannot refuse
it frame by frame: ``PeerWatch.check`` closes a connection whose bytes received but not read
pass a bound. ``PeerWatch.unsent`` is what waits for a client to read it, in libzmq and in the
kernel.
"""
from __future__ import annotations

import ctypes
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from engine.heap import release_free_memory
from engine.logs import RateLimitedLog

log = logging.getLogger("engine.connections")

_IPPROTO_TCP, _TCP_INFO = 6, 11
# In struct tcp_info (Linux >= 4.1): tcpi_bytes_acked (what the peer has received of what was
# sent), then tcpi_bytes_received.
_BYTES_ACKED, _BYTES_RECEIVED = slice(120, 128), slice(128, 136)
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
# Unread bytes allowed per second of a connection's life on top of the bound, for what the
# engine never reads as messages (the greeting, heartbeats), so a long-lived client never
# reaches the bound on those alone.
UNREAD_DRIFT_PER_S = 64
_ZERO_COPY_RECV = 10  # zmq.h's ZMQ_ZERO_COPY_RECV; pyzmq does not name it
ENDED = -1  # PeerWatch.read: the frame came from a connection closed by the engine or ended
CURVE_FRAME_OVERHEAD = 33  # a CURVE MESSAGE command: name, nonce, MAC and flags
TRIM_INTERVAL_S = 1.0  # release_free_memory after connections end, at most this often


def copying_socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    """A socket that copies each received message out of libzmq's read buffer.

    By default (``ZMQ_ZERO_COPY_RECV``, a context option read when a socket is made) a received
    message points into the 8 KB buffer it was read into and keeps the whole buffer alive: a
    client whose small requests arrive one per read pins 8 KB for each one queued (measured: 20
    flooding clients, +90 MB). Copied, each queued message costs its own size.
    """
    zero_copy = ctx.get(_ZERO_COPY_RECV)
    ctx.set(_ZERO_COPY_RECV, 0)
    try:
        return ctx.socket(kind)
    finally:
        ctx.set(_ZERO_COPY_RECV, zero_copy)


def frame_fd(frame: zmq.Frame) -> int | None:
    """The socket descriptor of the TCP (or IPC) connection ``frame`` came in on; None for
    frames without one (inproc, or made by the socket itself like a ROUTER's routing id)."""
    try:
        fd = frame.get("__fd")
    except zmq.ZMQError:
        return None
    return int(fd) if fd is not None else None


def wire_bytes(size: int, curve: bool = False) -> int:
    """The bytes a ZMTP 3 frame with a ``size``-byte body takes on the wire."""
    if curve:
        size += CURVE_FRAME_OVERHEAD
    return size + (2 if size <= 255 else 9)


def tcp_bytes(fd: int) -> tuple[int, int] | None:
    """``(acked, received)``: the bytes the peer on ``fd`` has received from us, and we from it
    (None off Linux or when ``fd`` is no TCP socket)."""
    if _libc is None:
        return None
    info = ctypes.create_string_buffer(_BYTES_RECEIVED.stop)
    size = ctypes.c_uint32(_BYTES_RECEIVED.stop)
    if _libc.getsockopt(fd, _IPPROTO_TCP, _TCP_INFO, info, ctypes.byref(size)) != 0 \
            or size.value < _BYTES_RECEIVED.stop:
        return None
    raw = info.raw
    return int.from_bytes(raw[_BYTES_ACKED], sys.byteorder), int.from_bytes(raw[_BYTES_RECEIVED], sys.byteorder)


def unread_over(received: int, read: int, age_s: float, bound: int) -> bool:
    """Whether a connection's bytes received but not read as messages pass ``bound``."""
    return received - read > bound + UNREAD_DRIFT_PER_S * age_s


def shutdown_connection(fd: int, local_port: int) -> bool:
    """Shut down the TCP connection on ``fd`` if it is one accepted on ``local_port``; libzmq,
    which owns the descriptor, then closes it. Never closes ``fd`` itself."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        if sock.getsockname()[1] != local_port:
            return False  # the descriptor was closed and reused by something else
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.detach()


@dataclass
class _Connection:
    since: float  # accepted at (monotonic s)
    read: int = 0  # bytes of the frames the engine has read from it
    sent: int = 0  # ... and sent to it


class PeerWatch:
    """The connections accepted on one bound socket, the bytes read from each, and closing them.

    ``events()`` must run before the socket's messages are read each turn: a descriptor closed
    and reused by a new connection is then known as new before its first message is read.
    ``read`` takes the events itself for a descriptor it does not know as open (a connection
    accepted during the turn).
    ``on_gone(fd)`` is called for each connection that ended (or whose descriptor now belongs
    to a new one).
    """

    def __init__(self, sock: zmq.Socket, what: str, max_unread: int, curve: bool = False,
                 on_gone: Callable[[int], None] | None = None) -> None:
        self.what = what
        self.max_unread = max_unread
        self._curve = curve
        self._on_gone = on_gone
        self._port = _bound_port(sock)
        self._monitor = sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._sock = sock
        self._open: dict[int, _Connection] = {}
        # Descriptors of connections the engine closed or that ended: what libzmq still had
        # queued from them is ignored, until the descriptor is accepted again.
        self._ended: set[int] = set()
        self._trim_due, self._next_trim = False, 0.0
        self.closed = 0  # connections the engine closed
        self._log = RateLimitedLog(log)

    def events(self) -> None:
        """Take the monitor's news of connections accepted and ended."""
        while True:
            try:
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            fd = int(event["value"])
            if self._on_gone is not None:
                self._on_gone(fd)
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._ended.discard(fd)
                self._open[fd] = _Connection(time.monotonic())
            else:
                self._ended.add(fd)
                self._open.pop(fd, None)
                self._trim_due = True  # what libzmq held for it is freed now
        if self._trim_due and time.monotonic() >= self._next_trim:
            self._trim_due, self._next_trim = False, time.monotonic() + TRIM_INTERVAL_S
            release_free_memory()

    def read(self, frame: zmq.Frame) -> int | None:
        """Count ``frame`` as read from its connection; returns that connection's descriptor,
        None when it has none, ``ENDED`` when the engine closed it or it ended (ignore the frame)."""
        fd = frame_fd(frame)
        if fd is None:
            return None
        connection = self._open.get(fd)
        if connection is None:
            # Perhaps accepted since events() last ran: libzmq queues the ACCEPTED event before it
            # reads anything from a connection, so it is there to take now. Taken later, it would
            # forget (``on_gone``) what was already counted for the connection.
            self.events()
            connection = self._open.get(fd)
            if connection is None:
                if fd in self._ended:
                    return ENDED
                connection = self._open[fd] = _Connection(time.monotonic())  # older than the monitor
        connection.read += wire_bytes(len(frame), self._curve)
        return fd

    def connections(self) -> list[int]:
        """The descriptors of the connections open now."""
        return list(self._open)

    def sent(self, fd: int, frames: list[bytes]) -> None:
        """Count ``frames`` as sent to the connection on ``fd``."""
        connection = self._open.get(fd)
        if connection is not None:
            connection.sent += sum(wire_bytes(len(f), self._curve) for f in frames)

    def unsent(self, fd: int) -> int:
        """Bytes sent to the connection on ``fd`` that its peer has not received yet (waiting
        in libzmq and in the kernel); 0 when unknown."""
        connection = self._open.get(fd)
        counts = tcp_bytes(fd) if connection is not None else None
        return 0 if counts is None else max(0, connection.sent - counts[0])

    def check(self) -> None:
        """Close every connection with more than ``max_unread`` bytes received but not read."""
        self.events()  # a connection that never completes a message is known from its ACCEPTED
        if _libc is None:
            return
        now = time.monotonic()
        for fd, connection in list(self._open.items()):
            counts = tcp_bytes(fd)
            if counts is not None and unread_over(counts[1], connection.read, now - connection.since,
                                                  self.max_unread):
                self.close(fd, f"{counts[1] - connection.read} bytes unread (limit {self.max_unread})")

    def close(self, fd: int, why: str) -> None:
        """Close the connection on ``fd``: counted always, logged at a bounded rate."""
        self._open.pop(fd, None)
        if fd in self._ended or not shutdown_connection(fd, self._port):
            return
        self._ended.add(fd)
        self.closed += 1
        self._log.warning("closed", "closed a connection to the %s: %s", self.what, why)

    def stop(self) -> None:
        if not self._sock.closed:  # closing the socket ends its monitor too
            self._sock.disable_monitor()
        self._monitor.close(0)


def _bound_port(sock: zmq.Socket) -> int:
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        return int(endpoint.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1  # not TCP: nothing here is ever closed
