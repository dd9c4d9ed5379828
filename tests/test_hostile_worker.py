"""Hostile candles at an indicator worker: malformed payloads, and a flood of forged candles with
foreign epochs, each of which would ask the engine for a warm-up's history.

The engine's own bus drops candles from other publishers, so the forged ones come in through a
bus of the test's own (``OpenBus``) that carries the engine's stream to the worker as well, or
straight through the worker's handler.
"""
from __future__ import annotations

import os
import time

import msgpack
import pytest
import zmq

import indicators.worker as worker_module
from engine.client import RpcClient
from engine.protocol import ProtocolError, candle_topic, encode
from engine.service import EngineService
from engine.sources import create_source
from indicators.worker import IndicatorWorker, WorkerConfig, read_candle
from tests.hostile import OpenBus, RssWatch, report
from tests.procs import EngineProcess, engine_config, engine_thread, subscriber
from tests.test_faults import check_indicator_values

GOOD = {"symbol": "EURUSD", "timeframe": "M1", "time": 1_790_000_040, "open": 1.1, "high": 1.2, "low": 1.0,
        "close": 1.15, "tick_volume": 3, "spread": 1, "real_volume": 0, "closed": False, "seq": 7, "epoch": 5}


def candle(epoch: int, seq: int = 1, **changes: object) -> list[bytes]:
    """A well-formed ``candle:EURUSD:M1:`` message for the forming bar (a forged one when
    ``epoch`` is not the engine's)."""
    forming = int(time.time()) // 60 * 60
    return [candle_topic("EURUSD", "M1"), encode({**GOOD, "time": forming, "epoch": epoch, "seq": seq, **changes})]


def test_a_well_formed_candle_passes_as_it_is():
    assert read_candle(candle_topic("EURUSD", "M1"), encode(GOOD)) == GOOD
    assert read_candle(*candle(5, close=2, closed=True))["close"] == 2  # an integer price is a number


@pytest.mark.parametrize("topic, payload, why", [
    (b"candle:EURUSD:", encode(GOOD), "not a candle topic"),
    (b"tick:EURUSD:M1:", encode(GOOD), "not a candle topic"),
    (b"candle:EURUSD:M1", encode(GOOD), "not colon-terminated"),
    (b"candle:EUR\xffUSD:M1:", encode(GOOD), "not UTF-8"),
    (b"candle:EURUSD:M7:", encode({**GOOD, "timeframe": "M7"}), "unknown timeframe"),
    (b"candle:" + b"E" * 100 + b":M1:", encode({**GOOD, "symbol": "E" * 100}), "at most 64"),
    (b"candle:EURUSD:M1:", b"\xc1", "not valid msgpack"),
    (b"candle:EURUSD:M1:", msgpack.packb([1, 2]), "must be a map"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "symbol": "GBPUSD"}), "differ from the topic"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "timeframe": "M5"}), "differ from the topic"),
    (b"candle:EURUSD:M1:", encode({k: v for k, v in GOOD.items() if k != "seq"}), "seq must be"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "epoch": "x"}), "epoch must be"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "time": True}), "time must be"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "time": 1.5}), "time must be"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "seq": -1}), "seq must be"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "close": float("nan")}), "close must be a finite"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "high": float("inf")}), "high must be a finite"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "open": "1.1"}), "open must be a finite"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "low": None}), "low must be a finite"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "closed": 1}), "closed must be a bool"),
    (b"candle:EURUSD:M1:", encode({**GOOD, "close": "<img src=x onerror=alert(1)>" * 1000}), "close must be"),
])
def test_a_candle_the_worker_cannot_trust_is_refused_saying_why(topic, payload, why):
    with pytest.raises(ProtocolError, match=why):
        read_candle(topic, payload)


@pytest.fixture
def worker_on_engine(zmq_ctx):
    """A worker (not running its loop: the test calls its handler) on a sim engine in a thread
    that serves EURUSD M1; yields ``(worker, engine_service)``."""
    cfg = engine_config(symbols="EURUSD", timeframes="M1")
    service = EngineService(cfg, create_source(cfg), zmq_ctx)
    with engine_thread(service):
        worker = IndicatorWorker(WorkerConfig(bus_endpoint=cfg.bus_endpoint, bus_pub_endpoint=cfg.bus_pub_endpoint,
                                              rpc_endpoint=cfg.rpc_endpoint), zmq_ctx)
        try:
            assert worker.open()
            yield worker, service
        finally:
            worker.close()


def test_a_series_warms_at_most_once_per_interval_whatever_the_epochs(worker_on_engine, monkeypatch):
    worker, service = worker_on_engine
    requests = lambda: service.health()["rpc_requests"]  # noqa: E731
    worker.handle(candle(epoch=1))
    first = worker.health()
    assert (first["series"], first["updates_total"], first["rewarms"], first["rewarms_limited"]) == (1, 1, 0, 0)
    before = requests()
    for epoch in range(2, 502):
        worker.handle(candle(epoch=epoch))
    flooded = worker.health()
    assert (flooded["series"], flooded["rewarms"], flooded["rewarms_limited"], flooded["malformed"]) == (0, 1, 500, 0)
    assert requests() == before, "no history was asked for during the flood"
    assert flooded["updates_total"] == 1 and flooded["status"] == "ok"

    monkeypatch.setattr(worker_module, "REWARM_EVERY_S", 0.2)
    time.sleep(0.25)
    worker.handle(candle(epoch=600))
    worker.handle(candle(epoch=600, seq=2))  # continues the stream: served warm, no request
    warm = worker.health()
    assert (warm["series"], warm["updates_total"], warm["rewarms_limited"]) == (1, 3, 500)
    assert requests() == before + 1


def test_candles_for_series_the_engine_does_not_serve_cost_one_request_and_no_health(worker_on_engine):
    worker, service = worker_on_engine
    before = service.health()["rpc_requests"]
    for _ in range(100):
        worker.handle([candle_topic("EURUSD", "H4"), encode({**GOOD, "timeframe": "H4"})])
        worker.handle([candle_topic("GBPUSD", "M1"), encode({**GOOD, "symbol": "GBPUSD"})])
    health = worker.health()
    assert service.health()["rpc_requests"] == before + 1  # one candles request for H4, then limited
    assert (health["malformed"], health["rewarms_limited"], health["series"]) == (101, 99, 0)
    assert health["status"] == "ok"


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latest_health(sock: zmq.Socket, seconds: float) -> dict:
    """The last ``health:indicators:`` payload seen in ``seconds``."""
    last = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(50):
            last = msgpack.unpackb(sock.recv_multipart()[1])
    assert last is not None, "no worker health"
    return last


@pytest.fixture
def relayed_worker(start_engine, start_worker, zmq_ctx):
    """An engine serving EURUSD M1, an ``OpenBus`` on its bus and a worker reading the relay
    (publishing to and asking the engine); yields ``(engine, relay, worker, health_sub)``."""
    engine = start_engine("--symbols", "EURUSD", "--timeframes", "M1")
    health = subscriber(zmq_ctx, engine.bus, b"health:indicators:0:")
    with OpenBus(engine.bus) as relay:
        via_relay = EngineProcess(bus_port=relay.port, rpc_port=engine.rpc_port, pub_port=engine.pub_port)
        worker = start_worker(via_relay)
        deadline = time.monotonic() + 15
        while latest_health(health, 1.1)["series"] != 1:
            assert time.monotonic() < deadline, "the worker never warmed up"
        yield engine, relay, worker, health


def test_forged_epoch_flood_costs_a_bounded_number_of_warm_ups(relayed_worker, zmq_ctx):
    """500 forged candles/s for 4 s, each with an epoch of its own: without the limit, each
    would be a candles(1000) request (the red team measured 4,298 of them and ~53% CPU each)."""
    engine, relay, worker, health = relayed_worker
    watcher = subscriber(zmq_ctx, engine.bus, b"candle:EURUSD:M1:", b"ind:EURUSD:M1:")
    attacker = zmq_ctx.socket(zmq.PUB)
    attacker.linger = 0
    attacker.sndhwm = 100_000
    attacker.connect(relay.inject)
    time.sleep(0.3)  # the relay sends this publisher the worker's subscription (slow joiner)
    with RpcClient(engine.rpc, ctx=zmq_ctx) as rpc:
        requests_before = rpc.health()["rpc_requests"]
    before = latest_health(health, 1.1)
    rate, flood_s = 500, 4.0
    sent = int(rate * flood_s)
    cpu_before = {name: cpu_s(pid) for name, pid in (("worker", worker.proc.pid), ("engine", engine.proc.pid))}
    seen: list[tuple[float, bytes, dict]] = []
    with RssWatch(worker.proc.pid) as rss:
        started = time.monotonic()
        for i in range(sent):
            attacker.send_multipart(candle(epoch=10**13 + i, close=999.0))
            if i % 50 == 49:
                time.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        flood_took = time.monotonic() - started
        cpu = {name: round(100 * (cpu_s(pid) - cpu_before[name]) / flood_took)
               for name, pid in (("worker", worker.proc.pid), ("engine", engine.proc.pid))}
        settled_at = time.monotonic() + worker_module.REWARM_EVERY_S + 0.5
        deadline = settled_at + 10
        while time.monotonic() < deadline and sum(1 for at, t, _ in seen if at > settled_at and t[:3] == b"ind") < 4:
            if watcher.poll(50):
                topic, payload = watcher.recv_multipart()
                seen.append((time.monotonic(), topic, msgpack.unpackb(payload)))
        after = latest_health(health, 1.1)
        rss.settle(20, 5)
    with RpcClient(engine.rpc, ctx=zmq_ctx) as rpc:
        requests = rpc.health()["rpc_requests"] - requests_before - 1
    # Every candle message, and the indicator values published once the limit has let the
    # series warm from the engine's history again: each equals TA-Lib over that history.
    fresh = [(t, m) for at, t, m in seen if t.startswith(b"candle:") or at > settled_at]
    checked = check_indicator_values(zmq_ctx, engine, fresh)
    rewarms = after["rewarms"] - before["rewarms"]
    limited = after["rewarms_limited"] - before["rewarms_limited"]
    report("forged-epoch candle flood at a worker", rss, None, forged=sent, rate_per_s=rate,
           flood_s=round(flood_took, 1), rewarms=rewarms, rewarms_limited=limited, engine_requests=requests,
           worker_cpu_pct=cpu["worker"], engine_cpu_pct=cpu["engine"], values_checked_after=checked)
    bound = flood_took / worker_module.REWARM_EVERY_S + 3  # one per interval, the recovery one included
    assert rewarms <= bound and requests <= bound
    assert limited >= 0.95 * sent
    assert checked >= 4 and after["status"] == "ok" and worker.proc.poll() is None


def test_malformed_candles_are_counted_and_the_worker_goes_on(relayed_worker, zmq_ctx):
    engine, relay, worker, health = relayed_worker
    listener = subscriber(zmq_ctx, engine.bus, b"ind:EURUSD:")
    junk = zmq_ctx.socket(zmq.PUB)
    junk.linger = 0
    junk.connect(relay.inject)
    time.sleep(0.3)  # slow joiner
    before = latest_health(health, 1.1)["malformed"]
    bad = [[b"candle:EURUSD:M1:", b"\xc1 not msgpack"], [b"candle:EURUSD:M1:", msgpack.packb([1, 2])],
           [b"candle:EURUSD:M1:", msgpack.packb({"symbol": "EURUSD"})],
           candle(epoch=1, close=float("nan")), candle(epoch=1, seq="x"), candle(epoch=1, closed="yes"),
           [b"candle:EURUSD:M7:", encode({**GOOD, "timeframe": "M7"})],
           [b"candle:EURUSD:M1: one frame only"], [b"candle:EURUSD:M1:", b"", b"a third frame"]]
    for frames in bad:
        junk.send_multipart(frames)
    deadline = time.monotonic() + 10
    while (malformed := latest_health(health, 1.1)["malformed"] - before) < len(bad):
        assert time.monotonic() < deadline, f"{malformed} of {len(bad)} counted"
    assert malformed == len(bad) and worker.proc.poll() is None
    while listener.poll(0):  # values published before the junk was counted
        listener.recv_multipart()
    assert listener.poll(10_000), "no real values after the junk"
    assert listener.recv_multipart()[0] == b"ind:EURUSD:M1:"
