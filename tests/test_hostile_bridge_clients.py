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
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bridge.budget import OVER_BUDGET
from bridge.config import BridgeConfig
from tests.bridge_procs import BridgeProcess
from tests.hostile import ClientFigures, RssWatch, report
from tests.procs import EngineProcess, running

BATCH_INTERVAL_MS = BridgeConfig.load(environ={}, dotenv=None).batch_interval_ms
GAP_BOUND_MS = BATCH_INTERVAL_MS + 100  # one flush late at most, plus scheduling noise
JOIN_TIMEOUT_MS = 2000  # SESSION_JOIN_TIMEOUT_MS for this bridge (default 10 s): a short test
SETTLE_MB, SETTLE_S = 50, 30
MIN_WATCH_S = 1.0  # the normal client watches at least this long: some twenty flushes
TRIMMED_MB, TRIM_WAIT_S = 10, 5  # the bridge gives freed memory back about 2 s after clients leave
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


# A normal client beside the attacker, in its own process (the attack's Python work here must not
# delay its reading)
NORMAL_CLIENT = """
import asyncio, json, sys, threading, time
import socketio

async def main(url, symbol, ping_every_s):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    figures = {"ticks": 0, "longest_tick_gap_ms": 0.0, "rtts_ms": [], "rpc_calls": 0, "rpc_failures": 0}
    last = []
    client = socketio.AsyncClient(reconnection=False)

    @client.on("tick")
    async def on_tick(data):
        now = time.perf_counter()
        if last:
            figures["longest_tick_gap_ms"] = max(figures["longest_tick_gap_ms"], (now - last[0]) * 1000)
            last[0] = now
        else:
            last.append(now)
            print("ready", flush=True)
        figures["ticks"] += 1

    await client.connect(url, transports=["websocket"], wait_timeout=5)
    await client.call("subscribe", {"symbol": symbol}, timeout=5)
    while not stop.is_set():
        started = time.perf_counter()
        figures["rpc_calls"] += 1
        try:
            await client.call("ping", timeout=2)
            figures["rtts_ms"].append((time.perf_counter() - started) * 1000)
        except socketio.exceptions.TimeoutError:
            figures["rpc_failures"] += 1
        try:
            await asyncio.wait_for(stop.wait(), ping_every_s)
        except asyncio.TimeoutError:
            pass
    await client.disconnect()
    print(json.dumps(figures), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


class SioNormalClient:
    """A python-socketio client in a child process: subscribed to ``SYMBOL``, it records the
    longest gap between tick events and the round trip of a ``ping`` every ``ping_every_s``."""

    def __init__(self, url: str, ping_every_s: float = 0.1) -> None:
        self.figures = ClientFigures()
        self._proc = subprocess.Popen([sys.executable, "-c", NORMAL_CLIENT, url, SYMBOL, str(ping_every_s)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __enter__(self) -> SioNormalClient:
        ready = threading.Event()
        threading.Thread(target=lambda: (self._proc.stdout.readline(), ready.set()), daemon=True).start()
        if not ready.wait(15):
            self._proc.kill()
            raise TimeoutError("the normal client got no tick within 15 s")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            out, _ = self._proc.communicate("", timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            raise
        seen = json.loads(out.strip().splitlines()[-1])
        rtts = sorted(seen.pop("rtts_ms"))
        self.figures = ClientFigures(**seen, rtts_ms=rtts)
        if rtts:
            self.figures.rpc_p99_ms = rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))]


@dataclass
class Outcome:
    """What one run of an attack left: the bridge's RSS, the normal client's figures, the attack's own."""

    rss: RssWatch
    normal: ClientFigures
    seen: dict[str, Any]


def attack_beside_a_normal_client(bridge: BridgeProcess, attack: Callable[[], dict[str, Any]]) -> Outcome:
    """Run ``attack()`` while a normal client reads ticks and the bridge's RSS is watched, then let
    the bridge settle. Once more if the normal client saw a stall: on a busy shared machine another
    process can cause one; a stall in the second run too fails the test."""
    def run_once() -> Outcome:
        with RssWatch(bridge.proc.pid) as rss, SioNormalClient(bridge.url) as normal:
            started = time.monotonic()
            seen = attack()
            time.sleep(max(0.0, MIN_WATCH_S - (time.monotonic() - started)))
        # The bridge's own view: how late its flushes started over the last 8 s or so.
        seen["bridge_flush_late_max_ms"] = stats(bridge)["stats"]["flush_late_ms"]["max"]
        settle(rss)
        return Outcome(rss, normal.figures, seen)

    outcome = run_once()
    if outcome.normal.longest_tick_gap_ms >= GAP_BOUND_MS:
        print(f"[hostile] the normal client saw a {outcome.normal.longest_tick_gap_ms:.0f} ms gap; "
              "running the attack once more", flush=True)
        outcome = run_once()
    return outcome


def settle(rss: RssWatch) -> None:
    """RSS once the bridge has given back what the attack took (or the issue's bound after 30 s)."""
    if rss.settle(TRIMMED_MB, TRIM_WAIT_S) - rss.before > SETTLE_MB:
        rss.settle(SETTLE_MB, SETTLE_S)


def held(outcome: Outcome) -> None:
    """The issue's bounds: no stall for the normal client, memory back within 50 MB."""
    assert outcome.normal.longest_tick_gap_ms < GAP_BOUND_MS
    assert outcome.rss.after - outcome.rss.before <= SETTLE_MB


def delta(before: dict, after: dict, group: str, *keys: str) -> dict[str, int]:
    return {k: after["stats"][group][k] - before["stats"][group][k] for k in keys}


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
    headers = ["GET /socket.io/?EIO=4&transport=websocket HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
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
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
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

    def attack() -> dict[str, Any]:
        before = stats(bridge)
        socks = [raw_websocket(bridge.port)[0] for _ in range(attackers)]
        sent = [0] * attackers
        cut: set[int] = set()  # seen cut from this side (a write failed)
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
                except OSError:
                    cut.add(i)
            time.sleep(0.01)
        deadline = time.monotonic() + 10  # the last replies may still be on their way
        while delta(before, after := stats(bridge), "disconnected", OVER_BUDGET)[OVER_BUDGET] < attackers \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        for sock in socks:
            sock.close()
        return {"attackers": attackers, "requests": sum(sent), "write_failed": len(cut),
                "cut": delta(before, after, "disconnected", OVER_BUDGET)[OVER_BUDGET],
                "clients_left": after["clients"] - before["clients"]}

    outcome = attack_beside_a_normal_client(bridge, attack)
    report("Socket.IO clients that never read, get_candles(1000) at the rate limit", outcome.rss, outcome.normal,
           **outcome.seen)
    assert outcome.seen["cut"] == attackers and outcome.seen["clients_left"] == 0
    assert outcome.normal.rpc_failures == 0
    held(outcome)


# 2. Long-polling sessions that never GET
def test_polling_sessions_that_never_get_are_bounded_by_the_same_budget(bridge):
    sessions, requests = 10, 30

    def attack() -> dict[str, Any]:
        before = stats(bridge)
        sids = [polling_session(bridge.port) for _ in range(sessions)]
        refused_posts = 0
        for _ in range(requests):
            for sid in sids:
                refused_posts += post(bridge.port, sid, f"42{CANDLES_1000}") == 400
        time.sleep(0.5)
        after = stats(bridge)
        return {"sessions": sessions, "posts": sessions * requests, "refused_posts": refused_posts,
                "cut": delta(before, after, "disconnected", OVER_BUDGET)[OVER_BUDGET],
                "gone": sum(post(bridge.port, sid, "3") == 400 for sid in sids),
                "clients_left": after["clients"] - before["clients"]}

    outcome = attack_beside_a_normal_client(bridge, attack)
    report("long-polling sessions that never GET, get_candles(1000) each", outcome.rss, outcome.normal,
           **outcome.seen)
    seen = outcome.seen
    assert seen["cut"] == sessions and seen["gone"] == sessions and seen["refused_posts"] >= sessions
    assert seen["clients_left"] == 0 and outcome.normal.rpc_failures == 0
    held(outcome)


# 3. A binary event announcing a million attachments
ANNOUNCE = '451000000-["get_symbols",{"_placeholder":true,"num":0}]'
ATTACHMENT, ATTACHMENTS_SENT = b"\0" * 16000, 500  # each under MAX_MESSAGE_BYTES
ANNOUNCERS = 10


async def announce_over_websocket(url: str) -> tuple[list[str], bool, int]:
    """Join, announce a million attachments, send some: every text frame the bridge sent back,
    whether it closed the connection, and the attachment bytes sent."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket") as ws:
            await ws.receive()  # OPEN
            await ws.send_str("40")
            await ws.send_str(ANNOUNCE)
            sent = 0
            try:  # some of the attachments it announced (8 MB): the bridge must keep none of them
                for _ in range(ATTACHMENTS_SENT):
                    await ws.send_bytes(ATTACHMENT)
                    sent += len(ATTACHMENT)
            except (ConnectionError, aiohttp.ClientError):
                pass
            texts = [msg.data async for msg in ws if msg.type == aiohttp.WSMsgType.TEXT]
            return texts, ws.closed, sent


def test_packets_announcing_attachments_are_refused_before_anything_is_kept(bridge):
    def attack() -> dict[str, Any]:
        before = stats(bridge)
        results = [asyncio.run(asyncio.wait_for(announce_over_websocket(bridge.url), 10)) for _ in range(ANNOUNCERS)]
        sid = polling_session(bridge.port)
        polled = [post(bridge.port, sid, ANNOUNCE), post(bridge.port, sid, "3")]
        # A websocket is cut for the announcement or, if the bridge read on first, for the binary
        # frame after it.
        return {"results": results, "polled": polled,
                "cut": sum(delta(before, stats(bridge), "disconnected", "attachments", "binary").values())}

    outcome = attack_beside_a_normal_client(bridge, attack)
    seen = outcome.seen
    report("binary events announcing 1,000,000 attachments", outcome.rss, outcome.normal, websockets=ANNOUNCERS,
           attachment_mb_sent=sum(r[2] for r in seen["results"]) // 10**6, polling=1, cut=seen["cut"])
    assert seen["cut"] == ANNOUNCERS + 1
    for texts, closed, _ in seen["results"]:
        errors = [json.loads(t[2:])[1] for t in texts if t.startswith('42["error"')]
        assert closed and errors and errors[-1]["code"] == "bad_request", texts
        assert "attachments" in errors[-1]["message"] or "binary" in errors[-1]["message"]
    assert seen["polled"][1] == 400  # the polling session was closed
    assert outcome.rss.peak - outcome.rss.before < SETTLE_MB
    held(outcome)


# 4. Malformed packets: a bounded log, no tracebacks
HTTP_GARBAGE = 200
GARBAGE = ['42["ping",', "49", "4", '42{"not":"a list"}', "42[17]", "43[1]", "x", b"\x00binary"]


def test_malformed_packets_disconnect_or_are_dropped_and_the_log_stays_short(bridge):
    def attack() -> dict[str, Any]:
        log_from = len(bridge.output())
        before = stats(bridge)
        ws_sent = 0
        for i in range(100):  # each connection: one kind of garbage, over and over
            sock, status = raw_websocket(bridge.port, rcvbuf=65536)
            assert status == 101
            try:
                sock.sendall(ws_frame("40"))
                for _ in range(20):
                    sock.sendall(ws_frame(GARBAGE[i % len(GARBAGE)]))
                    ws_sent += 1
                while sock.recv(65536):  # until the bridge closes it
                    pass
            except OSError:
                pass  # cut
            sock.close()
        sid = polling_session(bridge.port)
        polled = [post(bridge.port, sid, "x{garbage") for _ in range(1000)]  # Engine.IO-level garbage
        for _ in range(HTTP_GARBAGE):  # aiohttp answers 400 (and used to log a traceback for each)
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as sock:
                sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{bridge.port}\r\n"
                             "Content-Length: x\r\n\r\n".encode())
                assert sock.recv(12)[-3:] == b"400"
        time.sleep(0.5)
        after = stats(bridge)
        log = bridge.output()[log_from:]
        return {"websocket_packets": ws_sent, "polling_posts": len(polled), "bad_http_requests": HTTP_GARBAGE,
                "cut": delta(before, after, "disconnected", "malformed", "binary"),
                "library_errors": after["stats"]["library_errors"] - before["stats"]["library_errors"],
                "log_bytes": len(log), "log": log}

    outcome = attack_beside_a_normal_client(bridge, attack)
    seen = outcome.seen
    log = seen.pop("log")
    report("malformed packets", outcome.rss, outcome.normal, **seen)
    assert sum(seen["cut"].values()) == 100  # every connection that sent garbage was cut
    # Counted, though not cut: engineio drops a bad POST, aiohttp answers a bad request with 400.
    assert seen["library_errors"] >= seen["polling_posts"] + HTTP_GARBAGE
    assert "Traceback" not in log and len(log) < 8000, log[-3000:]
    held(outcome)


# 5. Hosts and origins (DNS rebinding)
def test_a_foreign_host_or_origin_is_refused_on_every_path_and_transport(bridge):
    port = bridge.port
    evil_host, evil_origin = f"evil.example:{port}", f"http://evil.example:{port}"
    own_host, own_origin = f"localhost:{port}", f"http://localhost:{port}"

    def attack() -> dict[str, Any]:
        before = stats(bridge)
        seen = {
            "rebinding": [request(port, "GET", path, host=evil_host, origin=evil_origin)
                          for path in ("/", "/health", "/metrics", f"{SIO_PATH}&transport=polling")],
            "no_host": request(port, "GET", "/health", host=""),
            "polling_foreign_origin": request(port, "GET", f"{SIO_PATH}&transport=polling", origin=evil_origin),
            "own": request(port, "GET", f"{SIO_PATH}&transport=polling", host=own_host, origin=own_origin),
        }
        for name, host, origin in (("ws_rebinding", evil_host, evil_origin), ("ws_foreign_origin", None, evil_origin),
                                   ("ws_own", own_host, own_origin)):
            sock, seen[name] = raw_websocket(port, host=host, origin=origin)
            sock.close()
        seen["refused"] = delta(before, stats(bridge), "refused", "host", "origin")
        return seen

    outcome = attack_beside_a_normal_client(bridge, attack)
    seen = outcome.seen
    report("DNS rebinding and foreign origins", outcome.rss, outcome.normal, refused=seen["refused"],
           rebinding=sorted({r[0] for r in seen["rebinding"]}), websocket_rebinding=seen["ws_rebinding"])
    for status, headers, _ in seen["rebinding"]:
        assert status == 421 and "access-control-allow-origin" not in headers
    assert seen["ws_rebinding"] == 421 and seen["no_host"][0] == 421
    assert seen["ws_foreign_origin"] == 403 and seen["polling_foreign_origin"][0] == 403
    assert "access-control-allow-origin" not in seen["polling_foreign_origin"][1]
    assert seen["own"][0] == 200 and seen["own"][1]["access-control-allow-origin"] == own_origin
    assert seen["ws_own"] == 101
    assert seen["refused"] == {"host": 6, "origin": 2}
    held(outcome)


def test_a_configured_host_and_origin_are_let_in(fast_engine, started):
    app = "http://app.example:3000"
    bridge = BridgeProcess(engine=fast_engine, env={"WS_ALLOWED_HOSTS": "md.example, 127.0.0.1",
                                                    "CORS_ORIGINS": app})
    started.append(bridge)
    bridge.start()
    port = bridge.port
    assert request(port, "GET", "/health", host="md.example")[0] == 421  # the port defaults to WS_PORT's
    assert request(port, "GET", "/health", host=f"md.example:{port}")[0] == 200
    assert request(port, "GET", "/health", host=f"localhost:{port}")[0] == 421  # not listed any more
    status, headers, _ = request(port, "GET", f"{SIO_PATH}&transport=polling", host=f"md.example:{port}", origin=app)
    assert status == 200 and headers["access-control-allow-origin"] == app
    assert request(port, "GET", f"{SIO_PATH}&transport=polling", origin="http://other.example")[0] == 403


# 6. Engine.IO sessions that never join the namespace
def test_sessions_that_never_join_are_shown_apart_and_closed_after_the_timeout(bridge):
    polling, websockets = 100, 20

    def pending_gone(within_s: float) -> dict:
        deadline = time.monotonic() + within_s
        while (body := stats(bridge))["sessions_pending"] and time.monotonic() < deadline:
            time.sleep(0.1)
        return body

    def attack() -> dict[str, Any]:
        before = pending_gone(JOIN_TIMEOUT_MS / 1000 + 5)  # earlier tests' leftovers
        opened = time.monotonic()
        sids = [polling_session(bridge.port, join=False) for _ in range(polling)]
        socks = [raw_websocket(bridge.port)[0] for _ in range(websockets)]
        during = stats(bridge)
        after = pending_gone(JOIN_TIMEOUT_MS / 1000 + 5)
        closed_after = time.monotonic() - opened
        gone = sum(post(bridge.port, sid, "40") == 400 for sid in sids)
        for sock in socks:
            sock.close()
        return {"sessions": polling + websockets, "pending_before": before["sessions_pending"],
                "pending_seen": during["sessions_pending"], "pending_after": after["sessions_pending"],
                "clients_added": during["clients"] - before["clients"],
                "closed": delta(before, after, "disconnected", "unjoined")["unjoined"], "polling_gone": gone,
                "closed_within_s": round(closed_after, 1)}

    outcome = attack_beside_a_normal_client(bridge, attack)
    seen = outcome.seen
    report("Engine.IO sessions that never join the namespace", outcome.rss, outcome.normal, **seen)
    assert seen["pending_before"] == 0 and seen["pending_seen"] == polling + websockets
    assert seen["clients_added"] == 0  # shown apart from the clients
    assert seen["pending_after"] == 0 and seen["closed"] == polling + websockets and seen["polling_gone"] == polling
    assert seen["closed_within_s"] >= JOIN_TIMEOUT_MS / 1000
    held(outcome)
