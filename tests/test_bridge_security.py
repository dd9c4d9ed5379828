"""Shared-secret auth and CORS origins of a real bridge."""
from __future__ import annotations

import asyncio
import time

import pytest
import socketio

from tests.bridge_procs import BridgeProcess, Recorder
from tests.procs import running

TOKEN = "t0ken-for-tests"
APP_ORIGIN = "http://app.example:3000"


@pytest.fixture(scope="module")
def open_bridge(engine):
    with running(BridgeProcess(engine=engine)) as proc:
        yield proc


@pytest.fixture(scope="module")
def secured_bridge(engine):
    with running(BridgeProcess(engine=engine, env={"BRIDGE_TOKEN": TOKEN, "CORS_ORIGINS": APP_ORIGIN})) as proc:
        yield proc


def connects(url: str, **kwargs) -> bool:
    """Whether a client can connect (and is greeted with ``connected``)."""
    async def attempt():
        client = Recorder()
        try:
            await client.connect(url, **kwargs)
            await client.wait_for("connected")
            return True
        except socketio.exceptions.ConnectionError:
            return False
        finally:
            await client.close()
    return asyncio.run(asyncio.wait_for(attempt(), 15))


def test_without_a_token_configured_anyone_on_the_same_host_connects(open_bridge):
    assert connects(open_bridge.url)
    assert connects(open_bridge.url, headers={"Origin": open_bridge.url})


def test_a_foreign_origin_is_refused_by_default(open_bridge):
    assert not connects(open_bridge.url, headers={"Origin": "http://evil.example"})
    assert not connects(open_bridge.url, headers={"Origin": "http://evil.example"}, transports=["polling"])


def test_a_configured_origin_is_allowed_and_others_refused(secured_bridge):
    auth = {"token": TOKEN}
    assert connects(secured_bridge.url, auth=auth, headers={"Origin": APP_ORIGIN})
    assert not connects(secured_bridge.url, auth=auth, headers={"Origin": "http://evil.example"})


def test_missing_or_wrong_token_is_refused_and_the_right_one_accepted(secured_bridge):
    assert not connects(secured_bridge.url)
    assert not connects(secured_bridge.url, auth={"token": "wrong"})
    assert not connects(secured_bridge.url, auth={"token": 12345})
    assert not connects(secured_bridge.url, auth="t0ken-for-tests")
    assert connects(secured_bridge.url, auth={"token": TOKEN})


def test_the_token_never_reaches_the_log_or_health(secured_bridge):
    assert connects(secured_bridge.url, auth={"token": TOKEN})
    assert TOKEN not in secured_bridge.output()
    assert TOKEN not in str(secured_bridge.health()[1])


def test_bridge_reaches_a_curve_engine_with_its_client_keys(tmp_path, start_engine, started):
    from engine.security import main as keygen

    for folder, name in (("server", "server"), ("clients", "bridge")):
        assert keygen(["keygen", str(tmp_path / folder), name]) == 0
    (tmp_path / "clients" / "bridge.key_secret").rename(tmp_path / "bridge.key_secret")
    engine = start_engine(env={"CURVE_SERVER_SECRET": str(tmp_path / "server" / "server.key_secret"),
                               "CURVE_CLIENTS_DIR": str(tmp_path / "clients")}, wait=False)
    bridge = BridgeProcess(engine=engine, env={"CURVE_CLIENT_SECRET": str(tmp_path / "bridge.key_secret"),
                                               "CURVE_SERVER_KEY": str(tmp_path / "server" / "server.key")})
    started.append(bridge)
    bridge.start()
    # ok once it hears health:engine: and its RPC is answered (the engine, started without
    # waiting, may still be loading history when the bridge first asks: bounded wait).
    deadline = time.monotonic() + 15
    while (body := bridge.health()[1])["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert body["status"] == "ok" and body["engine"]["status"] == "ok"
