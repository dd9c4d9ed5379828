"""Hostile web clients against a real bridge: each attack bounded in time, printing what held.

Every test runs its attack beside a normal Socket.IO client subscribed to one symbol (engine at
``--rate 1000``, so every flush of that room carries a tick) and prints, with ``tests.hostile``,
the bridge's RSS before, at its peak and after, and the normal client's longest gap between tick
events and its ``ping`` round trip. Tick events leave the bridge once per ``BATCH_INTERVAL_MS``
(50 ms) flush, so the gap is about 50 ms on a quiet machine: "no stall" is asserted as a gap under
``BATCH_INTERVAL_MS + 100`` ms. Run with ``-s`` to read the figures.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import pytest
import socketio

from tests.bridge_procs import BridgeProcess
from tests.hostile import ClientFigures, RssWatch, report
from tests.procs import EngineProcess, running

BATCH_INTERVAL_MS = 50
GAP_BOUND_MS = BATCH_INTERVAL_MS + 100  # one flush late at most, plus scheduling noise
JOIN_TIMEOUT_MS = 2000  # SESSION_JOIN_TIMEOUT_MS for this bridge (default 10 s): a short test
SETTLE_MB, SETTLE_S = 50, 30
SYMBOL = "EURUSD"
SIO_PATH = "/socket.io/?EIO=4"
CANDLES_1000 = json.dumps(["get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 1000}])


@pytest.fixture(scope="module")
def fast_engine():
    with running(EngineProcess(["--rate", "1000"])) as proc:
        yield proc


@pytest.fixture(scope="module")
def bridge(fast_engine):
    with running(BridgeProcess(engine=fast_engine, env={"SESSION_JOIN_TIMEOUT_MS": str(JOIN_TIMEOUT_MS)})) as proc:
        yield proc


# A normal client beside the attacker
class SioNormalClient:
    """A python-socketio client on its own thread and loop: subscribed to ``SYMBOL``, it records the
    longest gap between tick events and the round trip of a ``ping`` every ``ping_every_s``."""

    def __init__(self, url: str, ping_every_s: float = 0.1) -> None:
        self.url = url
        self.ping_every_s = ping_every_s
        self.figures = ClientFigures()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> SioNormalClient:
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError(f"the normal client got no tick within 15 s ({self._error!r})")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        rtts = sorted(self.figures.rtts_ms)
        if rtts:
            self.figures.rpc_p99_ms = rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))]

    async def _main(self) -> None:
        client = socketio.AsyncClient(reconnection=False)
        last: list[float] = []

        @client.on("tick")
        async def on_tick(data: object) -> None:
            now = time.perf_counter()
            if last:
                self.figures.longest_tick_gap_ms = max(self.figures.longest_tick_gap_ms, (now - last[0]) * 1000)
                last[0] = now
            else:
                last.append(now)
                self._ready.set()
            self.figures.ticks += 1

        try:
            await client.connect(self.url, transports=["websocket"], wait_timeout=5)
            await client.call("subscribe", {"symbol": SYMBOL}, timeout=5)
            while not self._stop.is_set():
                started = time.perf_counter()
                self.figures.rpc_calls += 1
                try:
                    await client.call("ping", timeout=2)
                    self.figures.rtts_ms.append((time.perf_counter() - started) * 1000)
                except socketio.exceptions.TimeoutError:
                    self.figures.rpc_failures += 1
                await asyncio.sleep(self.ping_every_s)
        except BaseException as exc:  # shown by __enter__ if it never got going
            self._error = exc
            raise
        finally:
            await client.disconnect()


@contextmanager
def watched(bridge: BridgeProcess) -> Iterator[tuple[RssWatch, SioNormalClient]]:
    """RSS of the bridge and a normal client around an attack."""
    with RssWatch(bridge.proc.pid) as rss, SioNormalClient(bridge.url) as normal:
        yield rss, normal


def stats(bridge: BridgeProcess) -> dict:
    return bridge.health()[1]


# Raw clients: they do exactly what the test says, and read nothing unless told
def ws_frame(payload: str | bytes) -> bytes:
    """A masked client WebSocket frame (text for ``str``, binary for ``bytes``)."""
    data = payload.encode() if isinstance(payload, str) else payload
    head = 0x81 if isinstance(payload, str) else 0x82
    n = len(data)
    size = struct.pack("!B", 0x80 | n) if n < 126 else (
        struct.pack("!BH", 0x80 | 126, n) if n < 65536 else struct.pack("!BQ", 0x80 | 127, n))
    mask = os.urandom(4)
    return bytes([head]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def raw_websocket(port: int, rcvbuf: int = 4096, host: str | None = None, origin: str | None = None) -> tuple[socket.socket, int]:
    """A websocket to the bridge's Engine.IO endpoint over a plain socket with a small receive
    buffer; returns it and the HTTP status of the upgrade (101 when accepted)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    headers = [f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
               "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
               f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}"]
    if origin is not None:
        headers.append(f"Origin: {origin}")
    sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, int(head.split(b" ", 2)[1]) if head else 0


def request(port: int, method: str, path: str, body: str = "", host: str | None = None,
         origin: str | None = None) -> tuple[int, dict[str, str], str]:
    """One HTTP request with the ``Host`` (and ``Origin``) given: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        if origin is not None:
            conn.putheader("Origin", origin)
        if body:
            conn.putheader("Content-Type", "text/plain;charset=UTF-8")
            conn.putheader("Content-Length", str(len(body.encode())))
        conn.endheaders(body.encode() if body else None)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode(errors="replace")
    finally:
        conn.close()


def polling_session(port: int, join: bool = True) -> str:
    """A long-polling Engine.IO session (joined to the namespace unless ``join`` is false): its sid."""
    status, _, body = request(port, "GET", f"{SIO_PATH}&transport=polling")
    assert status == 200, body
    sid = json.loads(body[1:])["sid"]
    if join:
        assert request(port, "POST", f"{SIO_PATH}&transport=polling&sid={sid}", "40")[0] == 200
    return sid


def post(port: int, sid: str, *packets: str) -> int:
    """Engine.IO packets (joined by the record separator) POSTed to a polling session: the status."""
    return request(port, "POST", f"{SIO_PATH}&transport=polling&sid={sid}", "\x1e".join(packets))[0]


# 1. Socket.IO clients that never read, asking for the largest reply at the rate limit
def test_clients_that_never_read_their_replies_are_disconnected_and_their_memory_returns(bridge):
    attackers, seconds, burst, rate = 10, 3.0, 40, 20
    with watched(bridge) as (rss, normal):
        before = stats(bridge)
        socks = [raw_websocket(bridge.port)[0] for _ in range(attackers)]
        sent = [0] * attackers
        cut: set[int] = set()
        for sock in socks:
            sock.sendall(ws_frame("40"))
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            allowed = burst + rate * (time.monotonic() - started)  # what the token bucket lets through
            for i, sock in enumerate(socks):
                try:
                    while i not in cut and sent[i] < allowed:
                        sock.sendall(ws_frame(f"42{CANDLES_1000}"))
                        sent[i] += 1
                except OSError:  # the bridge cut it
                    cut.add(i)
            time.sleep(0.01)
        after_attack = stats(bridge)
        for sock in socks:
            sock.close()
    rss.settle(SETTLE_MB, SETTLE_S)
    over = after_attack["stats"]["disconnected"]["over_budget"] - before["stats"]["disconnected"]["over_budget"]
    report("Socket.IO clients that never read, get_candles(1000) at the rate limit", rss, normal.figures,
           attackers=attackers, requests=sum(sent), disconnected_over_budget=over, cut_seen=len(cut))
    assert over == attackers
    assert after_attack["clients"] == before["clients"]
    assert normal.figures.longest_tick_gap_ms < GAP_BOUND_MS and normal.figures.rpc_failures == 0
    assert rss.after - rss.before <= SETTLE_MB


# 2. Long-polling sessions that never GET
def test_polling_sessions_that_never_get_are_bounded_by_the_same_budget(bridge):
    sessions, requests = 10, 30
    with watched(bridge) as (rss, normal):
        before = stats(bridge)
        sids = [polling_session(bridge.port) for _ in range(sessions)]
        statuses = {sid: [] for sid in sids}
        for _ in range(requests):
            for sid in sids:
                statuses[sid].append(post(bridge.port, sid, f"42{CANDLES_1000}"))
        time.sleep(0.5)
        after_attack = stats(bridge)
        gone = [sid for sid in sids if post(bridge.port, sid, "3") == 400]
    rss.settle(SETTLE_MB, SETTLE_S)
    over = after_attack["stats"]["disconnected"]["over_budget"] - before["stats"]["disconnected"]["over_budget"]
    report("long-polling sessions that never GET, get_candles(1000) each", rss, normal.figures,
           sessions=sessions, posts=sessions * requests, disconnected_over_budget=over, sessions_gone=len(gone))
    assert over == sessions and len(gone) == sessions
    assert all(400 in codes for codes in statuses.values())  # refused once it was cut
    assert after_attack["clients"] == before["clients"]
    assert normal.figures.longest_tick_gap_ms < GAP_BOUND_MS and normal.figures.rpc_failures == 0
    assert rss.after - rss.before <= SETTLE_MB


# 3. A binary event announcing a million attachments
def test_packets_announcing_attachments_are_refused_before_anything_is_kept(bridge):
    announce = '451000000-["get_symbols",{"_placeholder":true,"num":0}]'
    before = stats(bridge)

    async def over_websocket(session: aiohttp.ClientSession) -> tuple[list[str], bool]:
        async with session.ws_connect(f"{bridge.url}/socket.io/?EIO=4&transport=websocket") as ws:
            await ws.receive()  # OPEN
            await ws.send_str("40")
            await ws.send_str(announce)
            try:  # the attachments it announced (a few: the bridge must not wait for them)
                for _ in range(100):
                    await ws.send_bytes(b"\0" * 1024)
            except (ConnectionError, aiohttp.ClientError):
                pass
            texts = []
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    texts.append(msg.data)
            return texts, ws.closed

    async def attack() -> list[tuple[list[str], bool]]:
        async with aiohttp.ClientSession() as session:
            return [await asyncio.wait_for(over_websocket(session), 10) for _ in range(20)]

    with watched(bridge) as (rss, normal):
        results = asyncio.run(attack())
        sid = polling_session(bridge.port)
        polled = [post(bridge.port, sid, announce), post(bridge.port, sid, "3")]
        after_attack = stats(bridge)
    rss.settle(SETTLE_MB, SETTLE_S)
    # A websocket is cut for the announcement or, if the bridge read on first, the binary frame after it.
    refused = sum(after_attack["stats"]["disconnected"][k] - before["stats"]["disconnected"][k]
                  for k in ("attachments", "binary"))
    report("binary events announcing 1,000,000 attachments (20 websocket, 1 polling)", rss, normal.figures,
           refused=refused)
    assert refused == 21
    for texts, closed in results:
        errors = [json.loads(t[2:])[1] for t in texts if t.startswith('42["error"')]
        assert closed and errors and errors[-1]["code"] == "bad_request", texts
        assert "attachments" in errors[-1]["message"] or "binary" in errors[-1]["message"]
    assert polled[1] == 400  # the polling session was closed
    assert normal.figures.longest_tick_gap_ms < GAP_BOUND_MS
    assert rss.peak - rss.before < SETTLE_MB and rss.after - rss.before <= SETTLE_MB


# 4. Malformed packets: a bounded log, no tracebacks
def test_malformed_packets_disconnect_or_are_dropped_and_the_log_stays_short(bridge):
    log_before = len(bridge.output())
    before = stats(bridge)
    garbage = ['42["ping",', "49", "4", '42{"not":"a list"}', "42[17]", "43[1]", "x", ""]
    with watched(bridge) as (rss, normal):
        ws_sent = 0
        for i in range(100):  # each connection: one kind of garbage, over and over
            sock, status = raw_websocket(bridge.port, rcvbuf=65536)
            assert status == 101
            try:
                sock.sendall(ws_frame("40"))
                for _ in range(20):
                    frame = garbage[i % len(garbage)]
                    sock.sendall(ws_frame(frame if frame else b"\x00binary"))
                    ws_sent += 1
                while sock.recv(65536):  # until the bridge closes it
                    pass
            except OSError:
                pass  # cut
            sock.close()
        sid = polling_session(bridge.port)
        polled = [post(bridge.port, sid, "x{garbage") for _ in range(1000)]  # Engine.IO-level garbage
        time.sleep(0.5)
        after_attack = stats(bridge)
    rss.settle(SETTLE_MB, SETTLE_S)
    log = bridge.output()[log_before:]
    cut = {k: after_attack["stats"]["disconnected"][k] - before["stats"]["disconnected"][k]
           for k in ("malformed", "binary")}
    report("malformed packets", rss, normal.figures, websocket_packets=ws_sent, polling_posts=len(polled),
           disconnected=cut, log_bytes=len(log), log_lines=log.count("\n"), flush_late=after_attack["stats"]["flush_late_ms"], flush=after_attack["stats"]["flush_ms"])
    assert sum(cut.values()) == 100  # every connection that sent garbage was cut
    assert after_attack["stats"]["library_errors"] - before["stats"]["library_errors"] >= len(polled)
    assert "Traceback" not in log and len(log) < 8000, log[-3000:]
    assert normal.figures.longest_tick_gap_ms < GAP_BOUND_MS
    assert rss.after - rss.before <= SETTLE_MB


# 5. Hosts and origins (DNS rebinding)
def test_a_foreign_host_or_origin_is_refused_on_every_path_and_transport(bridge):
    port = bridge.port
    evil_host, evil_origin = f"evil.example:{port}", f"http://evil.example:{port}"
    before = stats(bridge)
    with watched(bridge) as (rss, normal):
        rebinding = {path: request(port, "GET", path, host=evil_host, origin=evil_origin)
                     for path in ("/", "/health", "/metrics", f"{SIO_PATH}&transport=polling")}
        ws_rebinding = raw_websocket(port, host=evil_host, origin=evil_origin)
        ws_foreign_origin = raw_websocket(port, origin=evil_origin)
        polling_foreign_origin = request(port, "GET", f"{SIO_PATH}&transport=polling", origin=evil_origin)
        no_host = request(port, "GET", "/health", host="")
        own = request(port, "GET", f"{SIO_PATH}&transport=polling", host=f"localhost:{port}",
                   origin=f"http://localhost:{port}")
        ws_own = raw_websocket(port, host=f"localhost:{port}", origin=f"http://localhost:{port}")
        after_attack = stats(bridge)
    for sock, _ in (ws_rebinding, ws_foreign_origin, ws_own):
        sock.close()
    rss.settle(SETTLE_MB, SETTLE_S)
    refused = {k: after_attack["stats"]["refused"][k] - before["stats"]["refused"][k] for k in ("host", "origin")}
    report("DNS rebinding and foreign origins", rss, normal.figures, refused=refused,
           rebinding_statuses=sorted({r[0] for r in rebinding.values()}), websocket_rebinding=ws_rebinding[1])
    for status, headers, _ in rebinding.values():
        assert status == 421 and "access-control-allow-origin" not in headers
    assert ws_rebinding[1] == 421 and no_host[0] == 421
    assert ws_foreign_origin[1] == 403 and polling_foreign_origin[0] == 403
    assert "access-control-allow-origin" not in polling_foreign_origin[1]
    assert own[0] == 200 and own[1]["access-control-allow-origin"] == f"http://localhost:{port}"
    assert ws_own[1] == 101
    assert refused == {"host": 6, "origin": 2}
    assert normal.figures.longest_tick_gap_ms < GAP_BOUND_MS


def test_a_configured_host_and_origin_are_let_in(fast_engine, started):
    app = "http://app.example:3000"
    bridge = BridgeProcess(engine=fast_engine, env={"WS_ALLOWED_HOSTS": "md.example, 127.0.0.1",
                                                    "CORS_ORIGINS": app})
    started.append(bridge)
    bridge.start()
    port = bridge.port
    assert request(port, "GET", "/health", host="md.example")[0] == 421  # port defaults to WS_PORT
    assert request(port, "GET", "/health", host=f"md.example:{port}")[0] == 200
    assert request(port, "GET", "/health", host=f"localhost:{port}")[0] == 421  # not listed any more
    status, headers, _ = request(port, "GET", f"{SIO_PATH}&transport=polling", host=f"md.example:{port}", origin=app)
    assert status == 200 and headers["access-control-allow-origin"] == app
    assert request(port, "GET", f"{SIO_PATH}&transport=polling", origin="http://other.example")[0] == 403


# 6. Engine.IO sessions that never join the namespace
def test_sessions_that_never_join_are_shown_apart_and_closed_after_the_timeout(bridge):
    polling, websockets = 100, 20
    deadline = time.monotonic() + JOIN_TIMEOUT_MS / 1000 + 5
    while (before := stats(bridge))["sessions_pending"] and time.monotonic() < deadline:
        time.sleep(0.2)  # earlier tests' leftovers
    with watched(bridge) as (rss, normal):
        opened = time.monotonic()
        sids = [polling_session(bridge.port, join=False) for _ in range(polling)]
        socks = [raw_websocket(bridge.port)[0] for _ in range(websockets)]
        during = stats(bridge)
        deadline = opened + JOIN_TIMEOUT_MS / 1000 + 5
        while (now := stats(bridge))["sessions_pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
        closed_after = time.monotonic() - opened
        gone = [sid for sid in sids if post(bridge.port, sid, "40") == 400]
    for sock in socks:
        sock.close()
    rss.settle(SETTLE_MB, SETTLE_S)
    unjoined = now["stats"]["disconnected"]["unjoined"] - before["stats"]["disconnected"]["unjoined"]
    report("Engine.IO sessions that never join the namespace", rss, normal.figures,
           sessions=polling + websockets, pending_seen=during["sessions_pending"], closed=unjoined,
           closed_within_s=round(closed_after, 1))
    assert before["sessions_pending"] == 0
    assert during["sessions_pending"] == polling + websockets and during["clients"] == before["clients"]
    assert now["sessions_pending"] == 0 and unjoined == polling + websockets and len(gone) == polling
    assert closed_after >= JOIN_TIMEOUT_MS / 1000
    assert normal.figures.longest_tick_gap_ms < GAP_BOUND_MS
    assert rss.after - rss.before <= SETTLE_MB
