"""What an attack cost and what held: RSS of a process, and a normal client's experience.

Every hostile test measures the same figures, so they are comparable across attacks:

* ``RssWatch(pid)``: resident memory before the attack, its peak during it, and after it;
* ``NormalClient(bus, rpc)``: a plain SUB on ``tick:`` and a REQ asking ``health`` every
  ``rpc_every_s``, both on their own threads, giving the longest gap between ticks and the
  RPC round trip's p99 while the attack runs.

``report(name, ...)`` prints one line per attack (run the tests with ``-s`` to read them), and
``OpenBus`` stands for a bus that relays anyone's topics (``--bus-only`` without CURVE).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import msgpack
import numpy as np
import zmq

from tests.procs import free_port


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024.0


class RssWatch:
    """Samples ``pid``'s RSS every ``every_s`` on a thread: ``before``, ``peak``, ``after``."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.before = rss_mb(pid)
        self.peak = self.before
        self.after = self.before
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, StopIteration):
                return

    def settle(self, within_mb: float, timeout_s: float = 30.0) -> float:
        """Wait (at most ``timeout_s``) until RSS is within ``within_mb`` of ``before``;
        returns and records the last reading."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.after = rss_mb(self.pid)
            if self.after - self.before <= within_mb or time.monotonic() >= deadline:
                return self.after
            time.sleep(0.25)


@dataclass
class ClientFigures:
    ticks: int = 0
    longest_tick_gap_ms: float = 0.0
    rpc_calls: int = 0
    rpc_failures: int = 0
    rpc_p99_ms: float = float("nan")
    rtts_ms: list[float] = field(default_factory=list, repr=False)


class NormalClient:
    """A well-behaved bot beside the attacker: reads every tick and asks ``health`` now and
    then. ``figures`` after the ``with`` block says what it saw."""

    def __init__(self, bus: str, rpc: str, rpc_every_s: float = 0.05, rpc_timeout_s: float = 2.0,
                 prefix: bytes = b"tick:") -> None:
        self._bus, self._rpc, self._prefix = bus, rpc, prefix
        self._every, self._timeout = rpc_every_s, rpc_timeout_s
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read_ticks, daemon=True),
                         threading.Thread(target=self._ask_health, daemon=True)]
        self._ready = threading.Event()
        self.figures = ClientFigures()

    def __enter__(self) -> NormalClient:
        for thread in self._threads:
            thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the normal client received no tick within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._ctx.destroy(linger=0)
        rtts = self.figures.rtts_ms
        if rtts:
            self.figures.rpc_p99_ms = float(np.percentile(rtts, 99))

    def _read_ticks(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.linger = 0
        sock.subscribe(self._prefix)
        sock.connect(self._bus)
        last = None
        while not self._stop.is_set():
            if not sock.poll(20):
                continue
            sock.recv_multipart()
            now = time.perf_counter()
            if last is not None:
                gap = (now - last) * 1000.0
                self.figures.longest_tick_gap_ms = max(self.figures.longest_tick_gap_ms, gap)
            else:
                self._ready.set()
            last = now
            self.figures.ticks += 1
        sock.close(0)

    def _ask_health(self) -> None:
        request = msgpack.packb({"op": "health"})
        sock = None
        while not self._stop.wait(self._every):
            if sock is None:  # Lazy Pirate: a fresh REQ after a timeout
                sock = self._ctx.socket(zmq.REQ)
                sock.linger = 0
                sock.connect(self._rpc)
            start = time.perf_counter()
            sock.send(request)
            self.figures.rpc_calls += 1
            if sock.poll(int(self._timeout * 1000)):
                sock.recv()
                self.figures.rtts_ms.append((time.perf_counter() - start) * 1000.0)
            else:
                self.figures.rpc_failures += 1
                sock.close(0)
                sock = None
        if sock is not None:
            sock.close(0)


def report(name: str, rss: RssWatch | None = None, client: ClientFigures | None = None, **extra: object) -> str:
    """One line saying what an attack cost and what held; printed and returned."""
    parts = [f"[hostile] {name}:"]
    if rss is not None:
        parts.append(f"RSS before {rss.before:.0f} MB, peak {rss.peak:.0f} MB, after {rss.after:.0f} MB;")
    if client is not None:
        parts.append(f"normal client: {client.ticks} ticks, longest gap {client.longest_tick_gap_ms:.0f} ms, "
                     f"RPC p99 {client.rpc_p99_ms:.1f} ms over {client.rpc_calls} calls "
                     f"({client.rpc_failures} timed out);")
    parts += [f"{k}={v}" for k, v in extra.items()]
    line = " ".join(parts)
    print(line, flush=True)
    return line


class OpenBus:
    """A bus that lets anyone's topics through: an XSUB connected to the engine's bus
    (``engine_bus``) and open to injectors (``inject``), relaying both, on a thread, to an XPUB
    that workers or a bridge read (``endpoint``, port ``port``); subscriptions go upstream."""

    def __init__(self, engine_bus: str) -> None:
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.inject = f"tcp://127.0.0.1:{free_port()}"
        self._ctx = zmq.Context()
        self._xsub = self._ctx.socket(zmq.XSUB)
        self._xpub = self._ctx.socket(zmq.XPUB)
        for sock in (self._xsub, self._xpub):
            sock.linger = 0
            sock.sndhwm = sock.rcvhwm = 200_000
        self._xsub.connect(engine_bus)
        self._xsub.bind(self.inject)
        self._xpub.bind(self.endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        poller = zmq.Poller()
        poller.register(self._xsub, zmq.POLLIN)
        poller.register(self._xpub, zmq.POLLIN)
        other = {self._xsub: self._xpub, self._xpub: self._xsub}  # messages down, subscriptions up
        while not self._stop.is_set():
            for sock, _ in poller.poll(50):
                while sock.poll(0):
                    other[sock].send_multipart(sock.recv_multipart())

    def __enter__(self) -> OpenBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._ctx.destroy(linger=0)
