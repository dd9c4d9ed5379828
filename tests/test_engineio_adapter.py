"""The python-engineio/python-socketio internals the fast path and the session policy rely on
(``bridge.transport``), checked against the installed versions over a real connection, and the
public path the bridge falls back to when one of them is missing or changed: a real
``AsyncServer`` on aiohttp on a free port, real clients, the bridge's own ``Sessions``, transport
and ``Fanout``. tests/test_engineio_versions.py runs this file on each supported python-engineio.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

import pytest
import socketio
from aiohttp import web
from engineio import async_socket, base_socket
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import base_server

from bridge.batching import Packet
from bridge.budget import OVER_BUDGET, BudgetQueue
from bridge.config import BridgeConfig
from bridge.fanout import Fanout
from bridge.server import Bridge
from bridge.inbound import MALFORMED
from bridge.sessions import Sessions
from bridge.transport import (FAST, PUBLIC, EngineSessions, TextPacket, Transport, engine_sessions_problem,
                              fast_path_problem, open_transport)
from engine.logs import RateLimitedLog
from tests.procs import free_port
from tests.test_hostile_bridge_clients import polling_session, post, raw_websocket, request, ws_frame

ROOM = "t:EURUSD"
BUDGET = 256 * 1024  # CLIENT_BUFFER_HARD_BYTES of the served bridge: small, so a test fills it fast
SOFT = 64 * 1024


@dataclass
class Served:
    """A python-socketio server on aiohttp with the bridge's session policy and delivery."""

    sio: socketio.AsyncServer
    sessions: Sessions
    transport: Transport
    fanout: Fanout
    url: str

    async def connection(self, sid: str, timeout: float = 5.0) -> Any:
        """The transport's connection for ``sid`` once it is served."""
        deadline = time.monotonic() + timeout
        while (conn := self.transport.connection(sid)) is None:
            assert time.monotonic() < deadline, f"{sid} never served"
            await asyncio.sleep(0.01)
        return conn

    def push(self, *texts: str) -> None:
        """One flush of ``texts`` (Socket.IO EVENT packets, kept in order) to ``ROOM``'s members."""
        self.fanout.deliver({ROOM: [Packet("tick", text, droppable=False) for text in texts]})


def server_and_sessions() -> tuple[socketio.AsyncServer, Sessions]:
    """A python-socketio server with the bridge's session policy, as ``Bridge`` builds them."""
    sio = socketio.AsyncServer(async_mode="aiohttp", serializer=TextPacket)
    return sio, Sessions(sio, BUDGET, 10.0, RateLimitedLog(logging.getLogger("test"), 1.0))


@asynccontextmanager
async def served(fast: bool) -> AsyncIterator[Served]:
    sio, sessions = server_and_sessions()
    app = web.Application()
    sio.attach(app)
    transport = open_transport(sio, sessions, fast)
    fanout = Fanout(transport, SOFT, BUDGET)

    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        transport.register(sid)
        fanout.add_client(sid)
        fanout.join(sid, [ROOM])

    async def on_disconnect(sid: str, reason: Any = None) -> None:
        fanout.remove_client(sid)
        transport.forget(sid)

    sio.on("connect", on_connect)
    sio.on("disconnect", on_disconnect)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Served(sio, sessions, transport, fanout, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


class Listener:
    """A python-socketio client recording the ``tick`` payloads it receives, in order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.ticks: list[Any] = []
        self.client.on("tick", self.ticks.append)

    async def connect(self, url: str, transport: str = "websocket") -> str:
        await self.client.connect(url, transports=[transport], wait_timeout=5)
        return self.client.get_sid()

    async def until(self, count: int, timeout: float = 5.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.ticks) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.ticks


def tick(n: int) -> str:
    return f'2["tick",{{"n":{n}}}]'


def versions() -> str:
    return ", ".join(f"{name} {metadata.version(name)}" for name in ("python-engineio", "python-socketio"))


def test_the_installed_versions_pass_the_fast_path_self_test():
    assert engine_sessions_problem(socketio.AsyncServer(async_mode="aiohttp")) is None
    sio, sessions = server_and_sessions()
    assert isinstance(sessions.engine, EngineSessions) and sessions.engine.problem == ""
    assert fast_path_problem(sio, sessions) is None
    transport = open_transport(*server_and_sessions(), fast=True)
    assert transport.delivery == FAST and transport.reason == ""
    forced = open_transport(*server_and_sessions(), fast=False)
    assert forced.delivery == PUBLIC and forced.reason == "BRIDGE_FAST_PATH=0"
    print(f"\nfast-path self-test passed on {versions()}")


def test_each_internal_the_fast_path_uses_is_there_and_behaves_over_a_real_websocket():
    async def main() -> None:
        async with served(fast=True) as s:
            listener = Listener()
            sid = await listener.connect(s.url)
            try:
                conn = await s.connection(sid)
                eio = s.sio.eio
                # The websocket driver in engineio's registry is the bridge's, and it served this client.
                driver = eio._async["websocket"]
                assert issubclass(driver, eio_aiohttp.WebSocket) and driver is not eio_aiohttp.WebSocket
                eio_sid = s.sio.manager.eio_sid_from_sid(sid, "/")
                sock = eio.sockets[eio_sid]
                assert conn.sock is sock and sock.upgraded and not sock.closing and not sock.closed
                # handler.__self__ was the socket: the driver gave its queue the TCP transport.
                assert sock.queue.tcp is not None and not sock.queue.tcp.is_closing()
                assert conn.backlog() == 0
                before = s.transport.counts.raw_writes
                s.push(tick(1), tick(2))
                s.push(tick(3))
                assert await listener.until(3) == [{"n": 1}, {"n": 2}, {"n": 3}]
                # Written straight to the TCP transport, one write per client and flush.
                assert s.transport.counts.raw_writes - before == 2
                assert s.transport.counts.queued_writes == 0
            finally:
                await listener.client.disconnect()
    asyncio.run(main())


def test_each_internal_the_session_policy_uses_is_there_and_behaves_over_long_polling():
    """create_queue builds the session's queue, the policy's handlers run in front of
    python-socketio's (a refused packet disconnects), an eviction wakes the waiting GET with the
    error, and the aborting close forgets the session."""
    async def main() -> None:
        async with served(fast=True) as s:
            port = int(s.url.rsplit(":", 1)[1])
            eio_sid = await asyncio.to_thread(polling_session, port)
            sock = s.sio.eio.sockets[eio_sid]
            assert isinstance(sock.queue, BudgetQueue) and sock.queue.eio_sid == eio_sid
            while not s.fanout.members:
                await asyncio.sleep(0.01)
            assert eio_sid not in s.sessions.pending.opened  # joined: python-socketio ran after the policy
            sid = next(iter(s.fanout.members))
            await s.connection(sid)
            get = f"/socket.io/?EIO=4&transport=polling&sid={eio_sid}"
            status, _, body = await asyncio.to_thread(request, port, "GET", get)
            assert status == 200 and body == f'40{{"sid":"{sid}"}}'
            started = time.monotonic()
            poll = asyncio.create_task(asyncio.to_thread(request, port, "GET", get))
            await asyncio.sleep(0.2)  # the GET waits for packets
            assert not poll.done()
            assert await asyncio.to_thread(post, port, eio_sid, "42[") == 200  # not a packet
            status, _, body = await asyncio.wait_for(poll, 5)
            waited = time.monotonic() - started
            assert status == 200 and body.startswith('42["error",') and "could not be decoded" in body
            assert s.sessions.disconnects[MALFORMED] == 1
            assert eio_sid not in s.sio.eio.sockets and sock.closed and not s.fanout.members
            assert (await asyncio.to_thread(request, port, "GET", get))[0] == 400
            print(f"\nrefused packet: the waiting GET answered with the error after {waited:.2f} s")
    asyncio.run(main())


POLL_CLOSE_BOUND_S = 2.0  # engine.io's own answer to a pending GET after a CLOSE: ~30 s


@pytest.mark.parametrize("side", ["client", "server", "evicted"])
def test_a_long_polling_client_is_disconnected_within_a_couple_of_seconds(side):
    """Its waiting GET is answered: python-engineio's client waits for it (30 s without the answer)."""
    async def main() -> float:
        async with served(fast=True) as s:
            listener = Listener()
            sid = await listener.connect(s.url, transport="polling")
            await s.connection(sid)
            eio_sid = s.sio.manager.eio_sid_from_sid(sid, "/")
            await asyncio.sleep(0.3)  # its next GET is waiting
            started = time.monotonic()
            if side == "client":
                await asyncio.wait_for(listener.client.disconnect(), 10)
            else:
                if side == "server":
                    await s.sio.disconnect(sid)
                else:
                    assert await s.sessions.evict(eio_sid, OVER_BUDGET)
                while listener.client.eio.state != "disconnected" and time.monotonic() - started < 10:
                    await asyncio.sleep(0.01)
            seconds = time.monotonic() - started
            assert listener.client.eio.state == "disconnected"
            while eio_sid in s.sio.eio.sockets and time.monotonic() - started < 10:
                await asyncio.sleep(0.01)
            assert eio_sid not in s.sio.eio.sockets and not s.fanout.members
            await listener.client.disconnect()
            return seconds
    seconds = asyncio.run(main())
    print(f"\nlong-polling client, {side} side: disconnected in {seconds:.2f} s")
    assert seconds < POLL_CLOSE_BOUND_S


class RenamedDriver(eio_aiohttp.WebSocket):
    """A websocket driver of a python-engineio the bridge does not know."""


def queue_outside_create_queue(monkeypatch: pytest.MonkeyPatch) -> str:
    """A python-engineio whose sockets build their queue without ``create_queue``."""
    init = base_socket.BaseSocket.__init__

    def built_elsewhere(self: Any, server: Any, sid: str) -> None:
        init(self, server, sid)
        self.queue = asyncio.Queue()

    monkeypatch.setattr(base_socket.BaseSocket, "__init__", built_elsewhere)
    return "create_queue"


def renamed_driver(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(eio_aiohttp._async, "websocket", RenamedDriver)
    return "websocket driver"


def socketio_handlers_renamed(monkeypatch: pytest.MonkeyPatch) -> str:
    """A python-socketio whose engine.io handlers are not the ``_handle_eio_*`` methods."""
    init = base_server.BaseServer.__init__

    def registers_others(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for event, handler in list(self.eio.handlers.items()):
            async def forward(*args: Any, _handler: Any = handler) -> Any:
                return await _handler(*args)
            self.eio.on(event, forward)

    monkeypatch.setattr(base_server.BaseServer, "__init__", registers_others)
    return "does not handle engine.io's 'connect' event with _handle_eio_connect()"


def close_takes_options(monkeypatch: pytest.MonkeyPatch) -> str:
    """A python-engineio whose socket close takes its options as ``**kwargs``."""
    close = async_socket.AsyncSocket.close

    async def with_options(self: Any, wait: bool = True, **options: Any) -> None:
        await close(self, wait, **options)

    monkeypatch.setattr(async_socket.AsyncSocket, "close", with_options)
    return "close() takes no abort, reason"


INCOMPATIBLE = {"queue built without create_queue": queue_outside_create_queue,
                "websocket driver renamed": renamed_driver,
                "socketio handlers renamed": socketio_handlers_renamed,
                "socket close changed": close_takes_options}


@pytest.mark.parametrize("change", INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_an_incompatible_version_makes_the_bridge_fall_back_and_still_deliver(change, monkeypatch):
    named = change(monkeypatch)
    bridge = Bridge(replace(BridgeConfig.load(environ={}, dotenv=None), ws_port=free_port()))
    health = bridge.health()
    assert health["delivery"] == PUBLIC and named in health["delivery_reason"]

    async def main() -> None:
        async with served(fast=True) as s:
            assert s.transport.delivery == PUBLIC and named in s.transport.reason
            listeners = [Listener(), Listener()]
            sids = [await listener.connect(s.url) for listener in listeners]
            try:
                for sid in sids:
                    await s.connection(sid)
                s.push(tick(1), tick(2))
                s.push(tick(3))
                for listener in listeners:
                    assert await listener.until(3) == [{"n": 1}, {"n": 2}, {"n": 3}]
                assert s.transport.counts.queued_writes == 4 and s.transport.counts.raw_writes == 0
            finally:
                for listener in listeners:
                    await listener.client.disconnect()
    asyncio.run(main())
    print(f"\n{named}: fell back with {health['delivery_reason']!r}")


@pytest.mark.parametrize("fast", [True, False], ids=[FAST, PUBLIC])
def test_a_client_that_never_reads_is_disconnected_at_its_budget_while_another_gets_everything(fast):
    big = "x" * 16_000

    async def main() -> dict[str, Any]:
        async with served(fast=fast) as s:
            assert s.transport.delivery == (FAST if fast else PUBLIC)
            listener = Listener()
            sid = await listener.connect(s.url)
            await s.connection(sid)
            stuck, status = await asyncio.to_thread(raw_websocket, int(s.url.rsplit(":", 1)[1]))
            assert status == 101
            stuck.sendall(ws_frame("40"))  # joins the namespace, then never reads again
            try:
                while len(s.fanout.members) < 2:
                    await asyncio.sleep(0.01)
                sent, started = 0, time.monotonic()
                while s.sessions.disconnects[OVER_BUDGET] == 0 and time.monotonic() - started < 20:
                    sent += 1
                    s.push(f'2["tick",{{"n":{sent},"pad":"{big}"}}]')
                    await asyncio.sleep(0.002)
                seconds = time.monotonic() - started
                assert s.sessions.disconnects[OVER_BUDGET] == 1, "the client that never reads was never cut"
                while len(s.fanout.members) > 1 and time.monotonic() - started < 25:
                    await asyncio.sleep(0.01)
                assert list(s.fanout.members) == [sid]
                ticks = await listener.until(sent, timeout=10)
                assert [t["n"] for t in ticks] == list(range(1, sent + 1))
                return {"pushed": sent, "mb": round(sent * len(big) / 1e6, 1), "seconds": round(seconds, 2),
                        "skipped_slow": s.fanout.stats.skipped_slow}
            finally:
                stuck.close()
                await listener.client.disconnect()
    figures = asyncio.run(main())
    print(f"\n{FAST if fast else PUBLIC}: never-reading client cut over budget after {figures}")
