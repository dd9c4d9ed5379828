"""The bridge's flush core against a naive per-client emit, in-process (pytest-benchmark).

    .venv/bin/python -m pytest benchmarks/bench_bridge.py --benchmark-enable -q

One flush for 1000 clients, each subscribed to the same 5 symbols, carrying a tick and an order
book per symbol (10 updates):
  flush_once_per_room  the bridge: conflate (``Batcher``), serialise each room once
                       (``encode_room``), build each WebSocket frame once and one joined bundle
                       per set of rooms (``Fanout`` + ``transport.Bundle``), one send per client
  naive_per_client     the baseline: serialise every update again for every client (what a loop
                       of ``emit(event, data, to=sid)`` does), one send per update per client
Both end at a counting sink instead of sockets, so the figures are the Python cost alone.
"""
from __future__ import annotations

import json

import pytest

from bridge.batching import Batcher, encode_event, encode_room
from bridge.fanout import Fanout
from bridge.transport import Bundle, Wire, ws_text_frame

CLIENTS = 1000
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
BOOK = {"bids": [[1.0 - i * 1e-5, 1.5] for i in range(10)], "asks": [[1.0 + i * 1e-5, 2.5] for i in range(10)]}


def updates() -> list[tuple[str, str, dict]]:
    out = []
    for k, symbol in enumerate(SYMBOLS):
        out.append((f"s:{symbol}", "tick", {"symbol": symbol, "bid": 1.08 + k, "ask": 1.0801 + k, "last": 0.0,
                                            "volume": 0, "time_msc": 1_700_000_000_000 + k, "flags": 6,
                                            "volume_real": 0.0}))
        out.append((f"s:{symbol}", "order_book", {"symbol": symbol, "time_msc": 1_700_000_000_000, **BOOK}))
    return out


class CountingTransport:
    """Builds what would be written and counts bytes, without sockets."""

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def wrap(self, text: str) -> Wire:
        return Wire(text)

    def bundle(self, wires: list[Wire]) -> Bundle:
        return Bundle(wires)

    def connection(self, sid: str) -> CountingTransport:
        return self

    def backlog(self) -> int:
        return 0

    def send(self, bundle: Bundle) -> None:
        self.writes += 1
        self.bytes += len(bundle.frames)

    def disconnect(self, sid: str) -> None:
        raise AssertionError("no client is slow here")


@pytest.fixture
def fanout() -> tuple[Fanout, CountingTransport]:
    transport = CountingTransport()
    f = Fanout(transport, soft=1 << 20, hard=1 << 22)
    for i in range(CLIENTS):
        f.add_client(f"c{i}")
        f.join(f"c{i}", [f"s:{s}" for s in SYMBOLS])
    f.deliver({})  # the join catch-up flush
    return f, transport


def test_flush_once_per_room(benchmark, fanout):
    f, transport = fanout
    batch = updates()

    def flush():
        b = Batcher()
        for room, event, payload in batch:
            b.add(room, event, payload)
        f.deliver({room: encode_room(events) for room, events in b.take().items()})

    benchmark(flush)
    assert transport.writes >= CLIENTS


def test_naive_per_client(benchmark):
    batch = updates()
    sink = []

    def flush():
        sink.clear()
        for _ in range(CLIENTS):
            for _, event, payload in batch:
                sink.append(ws_text_frame(("4" + encode_event(event, payload)).encode()))

    benchmark(flush)
    assert len(sink) == CLIENTS * len(batch)
    assert json.loads(sink[0][2:].decode()[2:])[0] == "tick"
