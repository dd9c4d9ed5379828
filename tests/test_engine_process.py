"""The engine as a real process, spoken to with plain pyzmq + msgpack (not our client)."""
import signal
import time

import msgpack
import pytest
import zmq

from engine.protocol import CANDLE_FIELDS, HEALTH_STATUSES, TICK_FIELDS
from tests.procs import EngineProcess, collect, subscriber

FIVE = {"EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"}


def request(ctx, endpoint, body, timeout_ms=5000):
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    sock.send(body if isinstance(body, bytes) else msgpack.packb(body))
    assert sock.poll(timeout_ms), "no reply"
    reply = msgpack.unpackb(sock.recv())
    sock.close(0)
    return reply


def test_symbol_subscription_is_exact_and_seq_strictly_consecutive(engine, zmq_ctx):
    sock = subscriber(zmq_ctx, engine.bus, b"tick:EURUSD:")
    messages = collect(sock, seconds=2.5)
    assert len(messages) > 10
    assert {topic for topic, _ in messages} == {b"tick:EURUSD:"}
    assert {m["symbol"] for _, m in messages} == {"EURUSD"}
    seqs = [m["seq"] for _, m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert len({m["epoch"] for _, m in messages}) == 1
    assert set(messages[0][1]) == {*TICK_FIELDS, "seq", "epoch"}


def test_kind_prefix_receives_every_symbol(engine, zmq_ctx):
    sock = subscriber(zmq_ctx, engine.bus, b"tick:")
    symbols = {m["symbol"] for _, m in collect(sock, seconds=3.0)}
    assert symbols == FIVE


def test_candle_prefix_of_a_symbol_receives_all_its_timeframes(engine, zmq_ctx):
    sock = subscriber(zmq_ctx, engine.bus, b"candle:XAUUSD:")
    messages = collect(sock, seconds=3.0)
    assert {m["timeframe"] for _, m in messages} == {"M1", "M5", "M15", "H1"}
    assert {m["symbol"] for _, m in messages} == {"XAUUSD"}
    assert all(isinstance(m["closed"], bool) for _, m in messages)
    assert all(set(m) == {*CANDLE_FIELDS, "seq", "epoch"} for _, m in messages)


def test_health_is_published_every_second(engine, zmq_ctx):
    sock = subscriber(zmq_ctx, engine.bus, b"health:engine:")
    health = [m for _, m in collect(sock, seconds=2.6)]
    assert len(health) >= 2
    assert health[-1]["status"] == "ok" and health[-1]["source"] == "sim"
    assert all(h["status"] in HEALTH_STATUSES for h in health)
    assert health[-1]["ticks_per_s"] > 0 and health[-1]["uptime_s"] > 0


def test_rpc_serves_candles_and_errors_and_keeps_serving(engine, zmq_ctx):
    reply = request(zmq_ctx, engine.rpc, {"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 100})
    assert reply["ok"] and len(reply["data"]) == 100
    for bad in (b"\xc1 junk", msgpack.packb({"op": "candles", "symbol": "NOPE", "timeframe": "H1", "count": 5}),
                msgpack.packb("just a string"), b"x" * 200_000):
        reply = request(zmq_ctx, engine.rpc, bad)
        assert reply["ok"] is False and reply["error"]["code"] in ("bad_request", "unknown_symbol")
    assert request(zmq_ctx, engine.rpc, {"op": "health"})["data"]["status"] == "ok"


def test_dealer_clients_are_answered_too(engine, zmq_ctx):
    sock = zmq_ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(engine.rpc)
    for i in range(3):
        sock.send_multipart([b"", msgpack.packb({"op": "tick", "symbol": "EURUSD", "id": i})])
    replies = []
    while len(replies) < 3 and sock.poll(5000):
        replies.append(msgpack.unpackb(sock.recv_multipart()[-1]))
    assert [r["id"] for r in replies] == [0, 1, 2] and all(r["ok"] for r in replies)


def test_snapshot_returns_last_value_of_each_topic_for_late_joiners(engine, zmq_ctx):
    reply = request(zmq_ctx, engine.rpc, {"op": "snapshot", "prefix": "tick:"})
    topics = [t for t, _ in reply["data"]]
    assert topics == sorted(f"tick:{s}:" for s in FIVE)
    assert all(m["seq"] >= 1 for _, m in reply["data"])


def test_a_stalled_subscriber_does_not_block_the_engine(engine, zmq_ctx):
    stalled = subscriber(zmq_ctx, engine.bus, b"", hwm=10)  # never read
    live = subscriber(zmq_ctx, engine.bus, b"tick:EURUSD:")
    collect(live, seconds=1.0)
    messages = collect(live, seconds=2.0)
    seqs = [m["seq"] for _, m in messages]
    assert len(seqs) > 10 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    stalled.close(0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_cleanly_within_two_seconds(start_engine, sig):
    proc = start_engine()
    started = time.monotonic()
    code = proc.stop(sig, timeout=2.0)
    assert code == 0, proc.output()
    assert time.monotonic() - started < 2.0


def test_symbol_with_colon_is_refused_at_start_up(start_engine):
    proc = start_engine("--symbols", "EURUSD,US30:cash", wait=False)
    assert proc.proc.wait(20) == 2
    assert "US30:cash" in proc.output() and "':'" in proc.output()


def test_busy_port_gives_a_clear_start_up_error(engine, start_engine):
    proc = EngineProcess(bus_port=engine.bus_port)
    try:
        proc.start(wait=False)
        assert proc.proc.wait(20) == 2
        assert "cannot" in proc.output() and str(engine.bus_port) in proc.output()
    finally:
        proc.stop()


def test_bus_only_process_carries_an_external_engine_and_other_publishers(start_engine, zmq_ctx):
    bus = EngineProcess(args=["--bus-only"])
    bus.start(wait=False)
    try:
        engine = start_engine("--bus-mode", "external", bus_port=bus.bus_port, pub_port=bus.pub_port)
        sub = subscriber(zmq_ctx, engine.bus, b"tick:EURUSD:", b"ind:EURUSD:")
        worker = zmq_ctx.socket(zmq.PUB)
        worker.linger = 0
        worker.connect(engine.pub)
        deadline = time.monotonic() + 10
        seen = set()
        while time.monotonic() < deadline and seen != {b"tick:EURUSD:", b"ind:EURUSD:H1:"}:
            worker.send_multipart([b"ind:EURUSD:H1:", msgpack.packb({"symbol": "EURUSD", "seq": 1, "epoch": 1})])
            for topic, _ in collect(sub, seconds=0.2):
                seen.add(topic)
        assert seen == {b"tick:EURUSD:", b"ind:EURUSD:H1:"}
        # The engine caches what other publishers put on the bus, for snapshots (its own
        # subscription may see the message a moment after ours did).
        for _ in range(50):
            snap = request(zmq_ctx, engine.rpc, {"op": "snapshot", "prefix": "ind:"})["data"]
            if snap:
                break
            worker.send_multipart([b"ind:EURUSD:H1:", msgpack.packb({"symbol": "EURUSD", "seq": 1, "epoch": 1})])
            time.sleep(0.1)
        assert [t for t, _ in snap] == ["ind:EURUSD:H1:"]
    finally:
        assert bus.stop() == 0


def test_missing_mt5_package_names_the_sim_source(start_engine):
    proc = start_engine("--source", "mt5", wait=False)
    assert proc.proc.wait(20) == 2
    assert "sim" in proc.output()
