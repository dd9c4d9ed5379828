"""The bot client: gap and restart detection, snapshot-on-join, typed RPC errors."""
import threading
import time

import msgpack
import pytest
import zmq

from engine.client import Gap, RpcClient, RpcTimeout, Subscriber, TooMany, UnknownSymbol, UnknownTimeframe
from engine.protocol import Stamper, encode
from tests.procs import free_port


@pytest.fixture
def pub(zmq_ctx):
    """A bare PUB on a free port, and the endpoint a Subscriber connects to."""
    sock = zmq_ctx.socket(zmq.PUB)
    sock.linger = 0
    port = free_port()
    sock.bind(f"tcp://127.0.0.1:{port}")
    return sock, f"tcp://127.0.0.1:{port}"


def publish_until_received(sock, sub, frames):
    """Send ``frames`` once the subscription is live (PUB drops until then): bounded."""
    for _ in range(200):
        sock.send_multipart([b"tick:WARMUP:", encode({"seq": 1, "epoch": 1})])
        if sub.recv(timeout_ms=10) is not None:
            break
    for topic, payload in frames:
        sock.send_multipart([topic, encode(payload)])


def drain(sub, n, timeout_ms=2000):
    out = []
    while len(out) < n:
        message = sub.recv(timeout_ms=timeout_ms)
        if message is None:
            break
        out.append(message)
    return out


def test_gap_callback_names_the_exact_missing_range(pub, zmq_ctx):
    sock, endpoint = pub
    gaps = []
    sub = Subscriber(endpoint, ["tick:", "candle:"], on_gap=gaps.append, ctx=zmq_ctx)
    stamper = Stamper(epoch=5)
    frames = []
    for i in range(1, 11):
        payload = stamper.stamp(b"tick:EURUSD:", {"i": i})
        if i not in (4, 5, 6, 9):  # lost on the way
            frames.append((b"tick:EURUSD:", payload))
    publish_until_received(sock, sub, frames)
    got = drain(sub, 6)
    assert [m.data["i"] for m in got] == [1, 2, 3, 7, 8, 10]
    assert gaps == [Gap("tick:EURUSD:", "gap", 4, 6, 5), Gap("tick:EURUSD:", "gap", 9, 9, 5)]
    assert sub.gaps == 2
    sub.close()


def test_publisher_restart_is_reported_once_with_both_epochs(pub, zmq_ctx):
    sock, endpoint = pub
    events = []
    sub = Subscriber(endpoint, ["tick:"], on_gap=events.append, ctx=zmq_ctx)
    old, new = Stamper(epoch=100), Stamper(epoch=200)
    frames = [(b"tick:EURUSD:", old.stamp(b"tick:EURUSD:", {})) for _ in range(3)]
    frames += [(b"tick:EURUSD:", new.stamp(b"tick:EURUSD:", {})) for _ in range(2)]
    publish_until_received(sock, sub, frames)
    got = drain(sub, 5)
    assert [m.data["seq"] for m in got] == [1, 2, 3, 1, 2]
    assert events == [Gap("tick:EURUSD:", "restart", 1, 0, 200, 100)]
    assert sub.restarts == 1 and sub.gaps == 0


def test_malformed_frames_are_counted_and_skipped(pub, zmq_ctx):
    sock, endpoint = pub
    sub = Subscriber(endpoint, ["tick:"], ctx=zmq_ctx)
    publish_until_received(sock, sub, [])
    sock.send_multipart([b"tick:X:", b"\xc1 not msgpack"])
    sock.send_multipart([b"tick:X:", msgpack.packb([1, 2])])
    sock.send(b"tick:X: single frame")
    sock.send_multipart([b"tick:X:", encode({"seq": 1, "epoch": 1, "ok": True})])
    got = drain(sub, 1)
    assert got[0].data["ok"] is True and sub.malformed == 3


def test_snapshot_on_join_delivers_state_first_then_only_newer_messages(engine, zmq_ctx):
    rpc = RpcClient(engine.rpc, ctx=zmq_ctx)
    sub = Subscriber(engine.bus, ["tick:EURUSD:"], rpc=rpc, snapshot=True, ctx=zmq_ctx)
    first = sub.recv(timeout_ms=1000)
    assert first.from_snapshot and first.topic == "tick:EURUSD:"
    stream = drain(sub, 5, timeout_ms=3000)
    seqs = [first.data["seq"]] + [m.data["seq"] for m in stream]
    assert seqs == sorted(set(seqs)), "no message twice, none out of order"
    assert not any(m.from_snapshot for m in stream)
    sub.close()
    rpc.close()


def test_rpc_errors_are_typed(engine, zmq_ctx):
    with RpcClient(engine.rpc, ctx=zmq_ctx) as rpc:
        with pytest.raises(UnknownSymbol):
            rpc.tick("NOPE")
        with pytest.raises(UnknownTimeframe):
            rpc.candles("EURUSD", "M7", 10)
        with pytest.raises(TooMany) as err:
            rpc.candles("EURUSD", "H1", 10**6)
        assert err.value.code == "too_many" and "MAX_CANDLES" in err.value.message
        assert len(rpc.candles("EURUSD", "H1", 100)) == 100


def test_rpc_timeout_then_the_client_still_works(zmq_ctx):
    port = free_port()
    server = zmq_ctx.socket(zmq.ROUTER)
    server.linger = 0
    server.bind(f"tcp://127.0.0.1:{port}")
    rpc = RpcClient(f"tcp://127.0.0.1:{port}", timeout_ms=200, ctx=zmq_ctx)
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        rpc.health()  # the server never answers this one
    assert time.monotonic() - started < 2

    def answer_next():
        frames = server.recv_multipart()
        while frames[-1] and msgpack.unpackb(frames[-1]).get("op") != "symbols":
            frames = server.recv_multipart()  # the stale request from the timed-out socket
        server.send_multipart([*frames[:-1], encode({"ok": True, "data": ["EURUSD"]})])

    responder = threading.Thread(target=answer_next)
    responder.start()
    assert rpc.call("symbols") == ["EURUSD"]
    responder.join(5)
    rpc.close()
