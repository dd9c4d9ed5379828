"""Optional CURVE on the bus and the RPC: keyed clients are served, others get nothing."""
import time

import pytest
import zmq

from engine.client import RpcClient, RpcTimeout, Subscriber
from engine.security import CurveClient, SecurityError, main as keygen


@pytest.fixture
def keys(tmp_path):
    for folder, name in (("server", "server"), ("clients", "bot"), ("outsider", "outsider")):
        assert keygen(["keygen", str(tmp_path / folder), name]) == 0
    # The server accepts the public keys in its clients folder, never a secret one.
    (tmp_path / "clients" / "bot.key_secret").rename(tmp_path / "bot.key_secret")
    return tmp_path


def client(keys, name):
    return CurveClient.load(str(keys / f"{name}.key_secret") if name == "bot"
                            else str(keys / "outsider" / "outsider.key_secret"),
                            str(keys / "server" / "server.key"))


def test_keyed_client_is_served_and_others_are_refused(keys, start_engine, zmq_ctx):
    engine = start_engine(env={"CURVE_SERVER_SECRET": str(keys / "server" / "server.key_secret"),
                               "CURVE_CLIENTS_DIR": str(keys / "clients")}, wait=False)
    bot = client(keys, "bot")
    rpc = RpcClient(engine.rpc, timeout_ms=500, ctx=zmq_ctx, curve=bot)
    deadline = time.monotonic() + 30
    while True:  # until the engine is up
        try:
            assert rpc.health()["status"] == "ok"
            break
        except RpcTimeout:
            assert time.monotonic() < deadline and engine.proc.poll() is None, engine.output()
    with Subscriber(engine.bus, ["tick:"], ctx=zmq_ctx, curve=bot) as sub:
        assert sub.recv(timeout_ms=5000).data["bid"] > 0

    for curve in (None, client(keys, "outsider")):  # no key at all, or a key not accepted
        stranger = RpcClient(engine.rpc, timeout_ms=1000, ctx=zmq_ctx, curve=curve)
        with pytest.raises(RpcTimeout):
            stranger.health()
        stranger.close()
        with Subscriber(engine.bus, ["tick:"], ctx=zmq_ctx, curve=curve) as sub:
            assert sub.recv(timeout_ms=1500) is None
    assert rpc.health()["status"] == "ok"
    rpc.close()
    print("CURVE: the keyed client got ticks and replies; a plain client and an unknown key got nothing")


def test_key_settings_must_come_in_pairs_and_name_the_setting(keys):
    with pytest.raises(SecurityError, match="CURVE_SERVER_KEY"):
        CurveClient.load(str(keys / "bot.key_secret"), "")
    with pytest.raises(SecurityError, match="CURVE_CLIENT_SECRET"):
        CurveClient.load(str(keys / "server" / "server.key"), str(keys / "server" / "server.key"))
    assert CurveClient.load("", "") is None


def test_engine_refuses_to_start_with_an_unreadable_key(start_engine, tmp_path):
    engine = start_engine(env={"CURVE_SERVER_SECRET": str(tmp_path / "missing.key_secret"),
                               "CURVE_CLIENTS_DIR": str(tmp_path)}, wait=False)
    assert engine.proc.wait(20) == 2
    assert "CURVE_SERVER_SECRET" in engine.output()


def test_keygen_writes_what_a_key_may_publish_into_its_public_certificate(tmp_path):
    from engine.publish_policy import ForeignPolicy
    from engine.security import load_publish_grants, read_publish_metadata

    for name, grant in (("engine", ["--publish", "*"]), ("worker", ["--publish", "ind:, health:indicators:"]),
                        ("bot", ["--publish", ""]), ("plain", [])):
        assert keygen(["keygen", str(tmp_path), name, *grant]) == 0
    assert read_publish_metadata(tmp_path / "worker.key") == "ind:, health:indicators:"
    assert read_publish_metadata(tmp_path / "plain.key") is None
    assert keygen(["keygen", str(tmp_path), "bad", "--publish", 'ind:"\nhealth:']) == 2
    grants = load_publish_grants(str(tmp_path))
    by_name = {name: grants[zmq.auth.load_certificate(str(tmp_path / f"{name}.key"))[0].decode()]
               for name in ("engine", "worker", "bot", "plain")}
    assert by_name["engine"].everything and by_name["engine"].refusal(b"tick:EURUSD:", 2) is None
    assert by_name["worker"].prefixes == (b"ind:", b"health:indicators:")
    assert by_name["bot"].refusal(b"ind:EURUSD:M1:", 2) == "topic not granted to the key"
    assert isinstance(by_name["plain"], ForeignPolicy) and by_name["plain"].refusal(b"tick:EURUSD:", 2)
