"""Hostile input to the RPC: hypothesis throws wrong types, huge values, deep nesting, unicode,
and raw bytes at every op. Each request gets exactly one well-formed reply; the engine stays up.
"""
from __future__ import annotations

import os

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.protocol import RPC_OPS, ErrorCode, decode
from engine.rpc import RpcHandler
from engine.service import EngineService, now_ms
from engine.sources.sim import SimSource
from tests.procs import engine_config

CODES = {v for k, v in vars(ErrorCode).items() if k.isupper()}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300), st.binary(max_size=300),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=8), st.dictionaries(st.text(max_size=20), inner, max_size=8)), max_leaves=40)
requests = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(RPC_OPS), st.text(max_size=50), scalars)},
    optional={
        "symbol": st.one_of(st.sampled_from(["EURUSD", "EURUSDm", "EUR:USD", "€URUSD", ""]), values),
        "timeframe": st.one_of(st.sampled_from(["M1", "H1", "M7", "h1"]), values),
        "count": st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), values),
        "prefix": st.one_of(st.sampled_from(["", "tick:", "candle:EURUSD:"]), values),
        "id": values,
    },
)
raw_bytes = st.one_of(st.binary(max_size=2000), st.builds(lambda depth: b"\x91" * depth + b"\xc0",
                                                            st.integers(0, 100_000)))
CASES = int(os.environ.get("FUZZ_CASES", "1000"))


@pytest.fixture(scope="module")
def handler():
    ctx = zmq.Context()
    cfg = engine_config(max_candles="200")
    service = EngineService(cfg, SimSource(cfg.symbols, rate=100), ctx)
    service.open()
    service.on_ticks(service.source.poll(now_ms() + 1000))
    service.aggregate_pending()
    yield RpcHandler(service)
    service.close()
    ctx.destroy(0)


def check_reply(raw: bytes) -> dict:
    reply = decode(raw)
    assert set(reply) <= {"ok", "data", "error", "id"}
    if reply["ok"]:
        assert "data" in reply
    else:
        assert reply["error"]["code"] in CODES and reply["error"]["code"] != "internal"
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_every_structured_request_gets_one_clean_reply(handler, request_):
    raw = msgpack.packb(request_, use_bin_type=True)
    check_reply(handler.handle(raw))


@settings(max_examples=CASES // 3, deadline=None)
@given(raw_bytes)
def test_arbitrary_bytes_get_a_bad_request_or_a_reply(handler, raw):
    check_reply(handler.handle(raw))


def test_fuzzed_requests_against_the_process_leave_it_serving_with_bounded_memory(engine):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(engine.rpc)
    pid = engine.proc.pid

    def rss_kb():
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.one_of(requests.map(lambda r: msgpack.packb(r, use_bin_type=True)), raw_bytes))
    def fire(raw):
        sock.send_multipart([b"", raw])
        assert sock.poll(5000), "no reply"
        check_reply(sock.recv_multipart()[-1])

    fire()  # warm-up round: caches and allocator settle
    before = rss_kb()
    fire()
    after = rss_kb()
    sock.send_multipart([b"", msgpack.packb({"op": "health"})])
    assert sock.poll(5000) and decode(sock.recv_multipart()[-1])["ok"]
    assert engine.proc.poll() is None
    assert after - before < 20_000, f"RSS grew {after - before} kB over 300 hostile requests"
    print(f"RPC fuzz: {CASES} structured + {CASES // 3} raw cases in-process, 600 over the socket; "
          f"engine RSS {before} -> {after} kB, still serving")
    sock.close(0)
    ctx.destroy(0)
