"""End-to-end through real processes, as a pytest-benchmark run (``e2e_latency.py`` prints JSON).

    .venv/bin/python -m pytest benchmarks/bench_e2e.py --benchmark-enable -q

  test_rpc_round_trip[engine]    one ``health`` request over REQ to the engine process (sim at
                                 its default rate) and its reply, timed per call
  test_rpc_round_trip[bare_rep]  the baseline: the same request to a bare pyzmq REP process that
                                 sends every request straight back
  test_tick_to_bot[engine|bare]  one window of ``e2e_latency.py``'s tick -> bot measurement at
                                 10k ticks/s. pytest-benchmark times calls, not one-way
                                 deliveries, so the timing is the window; the latency
                                 percentiles are in ``extra_info`` (``--benchmark-json``)
  test_candle_close_to_indicator one window of the candle close -> ``ind:`` measurement, the
                                 same way
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq

from benchmarks.e2e_latency import run_bare_pair, run_bot, run_indicator
from tests.procs import EngineProcess, free_port

RATE = 10_000
WINDOW_S = 5.0

BARE_REP = r"""
import sys, zmq
rep = zmq.Context().socket(zmq.REP)
rep.bind(sys.argv[1])
while True:
    rep.send(rep.recv())
"""


@pytest.fixture(params=["engine", "bare_rep"])
def rpc_endpoint(request) -> Iterator[str]:
    if request.param == "engine":
        engine = EngineProcess().start()
        try:
            yield engine.rpc
        finally:
            engine.stop()
        return
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", BARE_REP, endpoint])
    try:
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.benchmark(group="rpc round trip")
def test_rpc_round_trip(benchmark, rpc_endpoint):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 5000
    sock.connect(rpc_endpoint)
    request = msgpack.packb({"op": "health"})
    sock.send(request)
    sock.recv()  # connected and answering

    def call() -> bytes:
        sock.send(request)
        return sock.recv()
    try:
        reply = benchmark(call)
    finally:
        sock.close(0)
    assert reply == request or msgpack.unpackb(reply)["ok"] is True


def one_window(benchmark, measure: Callable[[], dict]) -> dict:
    result = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    return result


@pytest.mark.benchmark(group="tick to bot, 10k ticks/s")
@pytest.mark.parametrize("publisher", ["engine", "bare_pair"])
def test_tick_to_bot(benchmark, publisher):
    measure = run_bot if publisher == "engine" else run_bare_pair
    result = one_window(benchmark, lambda: measure(RATE, WINDOW_S))
    assert result["gaps"] == 0 and result["n"] > RATE * WINDOW_S * 0.9


@pytest.mark.benchmark(group="candle close to ind:")
def test_candle_close_to_indicator(benchmark):
    result = one_window(benchmark, lambda: run_indicator(WINDOW_S * 2))
    assert result["n"] == result["closes"] > 100
