"""The message bus: ZeroMQ's XSUB/XPUB forwarder and the publisher every component uses.

Publishers (the engine, indicator workers) connect to the XSUB side; subscribers (bots, workers,
the bridge) connect to the XPUB side and see every publisher's topics on one endpoint. PUB and
XPUB drop at their high-water marks rather than block, so a slow subscriber never holds up the
engine. Two ways to run it:

* ``EmbeddedBus``, inside the engine: the engine sends its own messages straight out of the
  XPUB socket and its loop forwards the other publishers' messages (a few per bar), so a tick
  crosses no extra thread on its way to subscribers;
* ``BusProxy``, the bus alone (``mt5-engine --bus-only``), on its own thread: with CURVE off
  ``zmq.proxy_steerable`` in C, relaying whatever any publisher sends (there is no identity to
  check); with CURVE on a Python loop that relays each message only if the key it came with
  may publish its topic (``engine.publish_policy``).

Only the engine speaks for the market: the embedded bus relays what other publishers send only
if the engine's ``admit`` accepts it.
"""
from __future__ import annotations

import logging
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from typing import Any

import zmq
import zmq.backend

from engine.connections import ENDED, PeerWatch, copying_socket, tcp_bytes
from engine.protocol import (
    MAX_SUBSCRIPTION_BYTES_PER_PEER,
    MAX_SUBSCRIPTION_FRAME_BYTES,
    MAX_SUBSCRIPTIONS_PER_PEER,
    Stamper,
    decode,
    encode,
)
from engine.publish_policy import UNKNOWN_KEY, Grant, Refusals
from engine.security import CurveClient, CurveServer, apply_client
from engine.subscriptions import SubscriptionBudget

log = logging.getLogger("engine.bus")

_INPROC_CONTROL = "inproc://bus-control"
# A plain int: pyzmq's send_multipart and enum flags cost several µs per message in Python.
_SNDMORE = int(zmq.SNDMORE)
# pyzmq's compiled send, without the pure-Python wrapper that ``zmq.Socket.send`` puts around it
# for DRAFT routing ids and groups: a third of the cost per frame.
_compiled_send = zmq.backend.Socket.send
_compiled_recv = zmq.backend.Socket.recv
_compiled_get = zmq.backend.Socket.get
_NOBLOCK, _RCVMORE = int(zmq.NOBLOCK), int(zmq.RCVMORE)
# Messages relayed per readable wake-up of the keyed forwarder before it looks at the others.
KEYED_BATCH = 1000
# Subscription notices read per call: enough to keep up with a connection's queue
# (SUBSCRIPTION_QUEUE) several times over, few enough (~1 ms) not to hold up ticks.
SUBSCRIPTION_DRAIN = 1000
SUBSCRIPTION_QUEUE = 100
_SNDMORE_NOBLOCK = _SNDMORE | _NOBLOCK
try:  # Linux: the bytes a TCP socket holds that its peer has not acknowledged (SIOCOUTQ)
    import fcntl
    import termios
    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):
    _OUTQ = None


class BusError(RuntimeError):
    """The bus could not start (usually: an endpoint is already in use)."""


class BusProxy:
    """XSUB (publishers' side) -> XPUB (subscribers' side) forwarding on a background thread.

    With ``curve``, ``grants`` maps each accepted client key (z85, the ZAP User-Id) to what it
    may publish; a message from any other key is dropped.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        sub_endpoints: Iterable[str],
        pub_endpoints: Iterable[str],
        hwm: int = 100_000,
        curve: CurveServer | None = None,
        grants: Mapping[str, Grant] | None = None,
    ) -> None:
        self._ctx = ctx
        self._curve = curve
        self._grants = dict(grants or {})
        self.refusals = Refusals()
        self._sub_endpoints = list(sub_endpoints)
        self._pub_endpoints = list(pub_endpoints)
        self._hwm = hwm
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: Exception | None = None
        self._control: zmq.Socket | None = None
        self._control_endpoint = f"{_INPROC_CONTROL}-{id(self)}"

    def start(self) -> None:
        """Bind every endpoint (raises ``BusError`` if one is taken), then forward in a thread."""
        self._thread = threading.Thread(target=self._run, name="bus-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        if self._error is not None:
            self._thread.join(1.0)
            raise BusError(str(self._error)) from self._error
        self._control = self._ctx.socket(zmq.PAIR)
        self._control.connect(self._control_endpoint)

    def _run(self) -> None:
        # Signals are for the main thread to handle, not to interrupt the proxy's C loop.
        if hasattr(signal, "pthread_sigmask"):  # POSIX only; the mt5 source runs on Windows
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        if self._curve is not None:
            self._run_keyed()
            return
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        control = self._ctx.socket(zmq.PAIR)
        try:
            xsub.rcvhwm = self._hwm
            xpub.sndhwm = self._hwm
            for sock in (xsub, xpub, control):
                sock.linger = 0
            control.bind(self._control_endpoint)
            for endpoint in self._pub_endpoints:
                _bind(xsub, endpoint, "bus publishers' endpoint")
            for endpoint in self._sub_endpoints:
                _bind(xpub, endpoint, "bus subscribers' endpoint")
        except Exception as exc:  # handed to start(), which raises it in the caller's thread
            self._error = exc
            self._ready.set()
            for sock in (xsub, xpub, control):
                sock.close(0)
            return
        self._ready.set()
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (xsub, xpub, control):
                sock.close(0)

    def _run_keyed(self) -> None:
        """Relay each message only if its sender's key may publish its topic; answer the
        control socket's TERMINATE as ``proxy_steerable`` does."""
        control = self._ctx.socket(zmq.PAIR)
        control.linger = 0
        bus = None
        try:
            control.bind(self._control_endpoint)
            bus = EmbeddedBus(self._ctx, self._sub_endpoints[0], self._pub_endpoints[0], self._hwm, self._curve)
            for endpoint in self._pub_endpoints[1:]:
                _bind(bus.xsub, endpoint, "bus publishers' endpoint")
            for endpoint in self._sub_endpoints[1:]:
                _bind(bus.xpub, endpoint, "bus subscribers' endpoint")
        except Exception as exc:  # handed to start(), which raises it in the caller's thread
            self._error = exc
            self._ready.set()
            if bus is not None:
                bus.close()
            control.close(0)
            return
        self._ready.set()
        poller = zmq.Poller()
        for sock in (bus.xsub, bus.xpub, control):
            poller.register(sock, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll(1000))
                if control in ready:
                    control.recv()
                    control.send(b"")
                    break
                if bus.xsub in ready:
                    bus.forward_by_key(KEYED_BATCH, self._admit)
                if bus.xpub in ready:
                    bus.drain_subscriptions()
                line = self.refusals.report(time.time_ns() // 1_000_000)
                if line:
                    log.warning("bus: %s", line)
        except zmq.ContextTerminated:
            pass
        finally:
            bus.close()
            control.close(0)

    def _admit(self, user_id: str, topic: bytes, frames: int) -> bool:
        grant = self._grants.get(user_id)
        reason = UNKNOWN_KEY if grant is None else grant.refusal(topic, frames)
        if reason is not None:
            self.refusals.add(reason)
        return reason is None

    def stop(self) -> None:
        if self._control is not None:
            self._control.send(b"TERMINATE")
            # libzmq 4.3.5 replies to TERMINATE; closing before the reply arrives would leave
            # the proxy blocked in that send, so wait for it.
            self._control.poll(1000)
            self._control.close(0)
            self._control = None
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None


class EmbeddedBus:
    """The bus' two sockets, owned by the engine's thread: publish on ``xpub``; when ``xsub``
    is readable, ``forward()`` relays the other publishers' messages; when ``xpub`` is,
    ``drain_subscriptions()`` holds each subscriber connection to the subscription budget.

    ``publisher_queue`` (messages) and ``max_frame_bytes`` bound what each publisher's
    connection may hold in this process (default: ``hwm``, no frame limit).

    ``lossless()`` makes the XPUB wait instead of drop (a replay): a send to a subscriber at its
    high-water mark raises ``zmq.Again``, relayed messages wait in ``held`` until they fit, and
    ``cut_stalled`` closes the connections that read nothing for a while.
    """

    def __init__(self, ctx: zmq.Context, sub_endpoint: str, pub_endpoint: str, hwm: int = 100_000,
                 curve: CurveServer | None = None, publisher_queue: int | None = None,
                 max_frame_bytes: int = -1) -> None:
        self.xsub = ctx.socket(zmq.XSUB)
        self.xpub = copying_socket(ctx, zmq.XPUB)
        self.subscribers: PeerWatch | None = None
        try:
            self.xsub.rcvhwm = hwm if publisher_queue is None else publisher_queue
            self.xsub.maxmsgsize = max_frame_bytes
            self.xpub.sndhwm = hwm
            bound_subscriptions(self.xpub)
            for sock in (self.xsub, self.xpub):
                sock.linger = 0
                if curve is not None:
                    curve.apply(sock)
            _bind(self.xsub, pub_endpoint, "bus publishers' endpoint")
            _bind(self.xpub, sub_endpoint, "bus subscribers' endpoint")
        except Exception:
            self.close()
            raise
        self.subscriptions = SubscriptionBudget()
        self.subscriptions_refused = 0
        self._send = _compiled_send.__get__(self.xpub)
        self.held: list[list[bytes]] = []  # admitted messages the XPUB could not take yet, in order
        self.relays_waited = 0  # relayed messages that had to wait (lossless only)
        self.stalls = StallWatch()
        self.stalled_closed = 0  # subscribers cut off for reading nothing (lossless only)
        # What a subscriber may send unread: its whole subscription budget, with framing.
        self.subscribers = PeerWatch(self.xpub, "bus subscribers' endpoint",
                                     MAX_SUBSCRIPTION_BYTES_PER_PEER + 16 * MAX_SUBSCRIPTIONS_PER_PEER,
                                     curve is not None, on_gone=self.subscriptions.forget)
        # Other publishers send everything: the engine caches their last values for snapshots,
        # and they publish little. Subscribers' own filters still apply at the XPUB side.
        self.xsub.send(b"\x01")

    def lossless(self) -> None:
        """Never drop: a send to a subscriber at its high-water mark raises ``zmq.Again``
        (``ZMQ_XPUB_NODROP``; every send here is non-blocking)."""
        self.xpub.setsockopt(zmq.XPUB_NODROP, 1)

    def forward(self, limit: int, admit: Callable[[list[list[bytes]]], list[list[bytes]]]) -> int:
        """Relay those of up to ``limit`` waiting messages from other publishers that
        ``admit(messages)`` returns (in order); returns how many were relayed.

        Lossless, the messages the XPUB cannot take yet are ``held`` and nothing more is read
        until they go: the publisher's own queue then fills and it waits, as the engine does.
        """
        fresh = not self.held
        if fresh:
            self.held = admit(recv_waiting(self.xsub, limit))
        relayed = self._relay(self.held)
        if relayed < len(self.held) and (fresh or relayed):
            self.relays_waited += 1  # a message met a full queue for the first time
        del self.held[:relayed]
        return relayed

    def _relay(self, messages: list[list[bytes]]) -> int:
        """Send ``messages`` in order until a subscriber is at its high-water mark (lossless
        only); returns how many were sent."""
        send = self._send
        for k, frames in enumerate(messages):
            last = len(frames) - 1
            try:
                send(frames[0], _SNDMORE_NOBLOCK if last else _NOBLOCK, True)
            except zmq.Again:
                return k
            # Once the first frame is taken the rest are (libzmq checks the HWM per message).
            for i in range(1, last):
                send(frames[i], _SNDMORE, True)
            if last:
                send(frames[last], 0, True)
        return len(messages)

    def cut_stalled(self, stall_s: float) -> int:
        """Close the subscriber connections that have had bytes waiting and received none for
        ``stall_s`` (so one dead bot cannot hold a lossless bus); returns how many."""
        self.subscribers.events()
        cut = 0
        for fd in self.stalls.stalled(self.subscribers.connections(), time.monotonic(), stall_s):
            log.warning("bus: a subscriber read nothing for %.1f s while the replay waited for it; "
                        "cutting it off (REPLAY_STALL_S)", stall_s)
            self.subscribers.close(fd, f"read nothing for {stall_s} s (REPLAY_STALL_S)")
            self.stalled_closed += 1
            cut += 1
        return cut

    def forward_by_key(self, limit: int, admit: Callable[[str, bytes, int], bool]) -> int:
        """Like ``forward``, asking ``admit(user_id, topic, frame_count)``: ``user_id`` is the
        CURVE key (z85) the ZAP handler accepted the sender with, which libzmq attaches to every
        message it receives from that peer ("" when there is none)."""
        # The compiled calls, as in BusPublisher, and a zmq.Frame (which carries the message's
        # properties) only for the first part: both cost more per message than the check.
        recv, more = _compiled_recv.__get__(self.xsub), _compiled_get.__get__(self.xsub)
        send = _compiled_send.__get__(self.xpub)
        relayed = 0
        for _ in range(limit):
            try:
                first = recv(_NOBLOCK, False)
            except zmq.Again:
                break
            frames = [first.bytes]
            while more(_RCVMORE):
                frames.append(recv(0, True))
            if admit(_user_id(first), frames[0], len(frames)):
                last = frames.pop()
                for frame in frames:
                    send(frame, _SNDMORE, True)
                send(last, 0, True)
                relayed += 1
        return relayed

    def drain_subscriptions(self, limit: int = SUBSCRIPTION_DRAIN) -> int:
        """Account up to ``limit`` of the (un)subscribe notices XPUB queues, closing each
        connection that goes over the subscription budget; returns how many were read.

        libzmq has applied a subscription by the time its notice is read: a connection over
        budget is closed, which removes all of its subscriptions.
        """
        watch, budget = self.subscribers, self.subscriptions
        watch.events()
        read = 0
        while read < limit:
            try:
                frame = self.xpub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            read += 1
            fd = watch.read(frame)
            if fd == ENDED:
                continue
            notice = frame.bytes
            if notice[:1] == b"\x01":
                over = budget.subscribe(fd, notice[1:])
                if over is not None:
                    self._refuse(*over)
            elif notice[:1] == b"\x00":
                budget.unsubscribe(fd, notice[1:])
        return read

    def _refuse(self, fd: int | None, why: str) -> None:
        self.subscriptions_refused += 1
        if fd is not None:  # a connection without a descriptor is in-process: ours
            self.subscriptions.forget(fd)
            self.subscribers.close(fd, f"subscriptions over the budget: {why}")

    def watch_subscribers(self) -> None:
        """Close subscriber connections that sent more than the budget without it being read
        (a multipart message libzmq is still assembling)."""
        self.subscribers.check()

    def close(self) -> None:
        if self.subscribers is not None:
            self.subscribers.stop()
        self.xsub.close(0)
        self.xpub.close(0)


def bound_subscriptions(xpub: zmq.Socket) -> None:
    """XPUB options that bound what subscribers can make it store: every (un)subscribe is
    reported (for the budget), a frame over ``MAX_SUBSCRIPTION_FRAME_BYTES`` closes the
    connection before libzmq stores it, and each connection's unread notices wait in a short
    queue (the rest in its TCP buffers)."""
    xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
    xpub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_FRAME_BYTES)
    xpub.rcvhwm = SUBSCRIPTION_QUEUE


def unacked_bytes(fd: int) -> int | None:
    """Bytes the TCP socket ``fd`` holds that its peer has not acknowledged (None off Linux)."""
    if _OUTQ is None:
        return None
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _OUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return None


def still_stalled(previous: tuple[int, float] | None, acked: int, waiting: int,
                  now: float) -> tuple[int, float]:
    """A connection's ``(acked, since)``: since when it has had bytes ``waiting`` without its
    peer acknowledging any more (``since`` is ``now`` again whenever it reads or catches up)."""
    if waiting == 0 or previous is None or previous[0] != acked:
        return acked, now
    return previous


class StallWatch:
    """Which subscriber connections read nothing: bytes wait for them in the kernel (their
    receive window is shut) and their acknowledged count has not moved."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[int, float]] = {}

    def stalled(self, fds: Iterable[int], now: float, stall_s: float) -> list[int]:
        """The connections of ``fds`` stalled for ``stall_s`` or longer (Linux only)."""
        seen, out = {}, []
        for fd in fds:
            counts, waiting = tcp_bytes(fd), unacked_bytes(fd)
            if counts is None or waiting is None:
                continue
            seen[fd] = state = still_stalled(self._seen.get(fd), counts[0], waiting, now)
            if now - state[1] >= stall_s:
                out.append(fd)
                del seen[fd]
        self._seen = seen
        return out


def recv_waiting(sock: zmq.Socket, limit: int) -> list[list[bytes]]:
    """Up to ``limit`` messages already waiting on ``sock``, without blocking. The compiled
    call, in one loop for the batch: ``recv_multipart`` costs twice as much, and asking
    ``RCVMORE`` of the socket more than a frame's own ``more``."""
    recv, out = _compiled_recv.__get__(sock), []
    for _ in range(limit):
        try:
            frame = recv(_NOBLOCK, False)
        except zmq.Again:
            break
        frames = [frame.bytes]
        while frame.more:  # the rest of a message is there once its first frame is
            frame = recv(0, False)
            frames.append(frame.bytes)
        out.append(frames)
    return out


def _user_id(frame: zmq.Frame) -> str:
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP identity (a peer that skipped authentication)
        return ""


def _bind(sock: zmq.Socket, endpoint: str, what: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise BusError(f"cannot bind the {what} {endpoint}: {exc.strerror}") from None


class BusPublisher:
    """Stamps, encodes and sends ``[topic, payload]``; keeps the last payload frame of each topic.

    The last-value cache answers ``snapshot`` requests (the Clone pattern): a late joiner
    subscribes, asks for the snapshot, then drops stream messages with ``seq`` <= the snapshot's.
    """

    def __init__(self, sock: zmq.Socket, stamper: Stamper | None = None,
                 on_full: Callable[[], bool] | None = None) -> None:
        self._sock = sock
        self._send = _compiled_send.__get__(sock)
        self.stamper = stamper or Stamper()
        self.last: dict[bytes, bytes] = {}
        self.sent = 0
        # A socket that waits rather than drop (``ZMQ_XPUB_NODROP``) raises zmq.Again when a
        # subscriber's queue is full: ``on_full()`` is called (it waits a little and serves
        # what must not wait) until the send passes, or drops the message by returning False.
        self._on_full = on_full
        self.waits = 0  # sends that found a subscriber's queue full
        self.dropped = 0  # messages ``on_full`` gave up on

    @property
    def epoch(self) -> int:
        return self.stamper.epoch

    def publish(self, topic: bytes, payload: dict[str, Any]) -> None:
        self.publish_frame(topic, encode(self.stamper.stamp(topic, payload)))

    def publish_frame(self, topic: bytes, frame: bytes) -> None:
        """Send a payload already encoded and stamped (with ``stamper.next_seq(topic)``)."""
        self.last[topic] = frame
        try:
            self._send(topic, _SNDMORE_NOBLOCK, True)
        except zmq.Again:
            if not self._wait_room(topic):
                return
        self._send(frame, 0, True)  # the first frame taken, the rest of the message is
        self.sent += 1

    def keep_last(self, topic: bytes, frame: bytes) -> None:
        """Keep ``frame`` as ``topic``'s last for ``snapshot`` without sending it (no
        subscription matches the topic)."""
        self.last[topic] = frame

    def publish_frames(self, topic: bytes, frames: Iterable[bytes]) -> None:
        """``publish_frame`` for several payloads of one topic, in order."""
        self.publish_pairs(repeat(topic), frames)

    def publish_pairs(self, topics: Iterable[bytes], frames: Iterable[bytes]) -> None:
        """``publish_frame`` for each ``(topics[i], frames[i])``, in order."""
        send, last, sent = self._send, self.last, self.sent
        try:
            for topic, frame in zip(topics, frames):
                last[topic] = frame
                try:
                    send(topic, _SNDMORE_NOBLOCK, True)
                except zmq.Again:
                    # Counted as we go, for health (answered while a send waits) and for what
                    # the wait itself may publish.
                    self.sent = sent
                    room = self._wait_room(topic)
                    sent = self.sent
                    if not room:
                        continue
                send(frame, 0, True)
                sent += 1
        finally:
            self.sent = sent

    def _wait_room(self, topic: bytes) -> bool:
        """Retry the first frame of a message until it is taken (True) or dropped (False)."""
        self.waits += 1
        while self._on_full is not None and self._on_full():
            try:
                self._send(topic, _SNDMORE_NOBLOCK, True)
                return True
            except zmq.Again:
                continue
        self.dropped += 1
        return False

    def last_payload(self, topic: bytes) -> dict[str, Any] | None:
        frame = self.last.get(topic)
        return None if frame is None else decode(frame)

    def close(self) -> None:
        self._sock.close(0)


def publisher_socket(ctx: zmq.Context, endpoint: str, hwm: int,
                     curve: CurveClient | None = None, nodrop: bool = False) -> zmq.Socket:
    """A PUB socket connected to a bus' publishers' endpoint; with ``nodrop`` a send to a full
    queue raises ``zmq.Again`` instead of dropping (a ``BusPublisher`` with ``on_full`` waits)."""
    sock = apply_client(ctx.socket(zmq.PUB), curve)
    sock.sndhwm = hwm
    if nodrop:
        sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.linger = 0
    sock.connect(endpoint)
    return sock
