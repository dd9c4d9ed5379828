"""The batch paths a full-speed replay takes, against the one-at-a-time paths they replace:
candle rows encoded a timeframe at a time (``candle_frames``, ``CandleEncoder.encode_columns``),
closed bars stored a batch at a time (``CandleRing.extend``), the worker's one-sum finiteness
check, and the embedded bus relaying other publishers' messages a batch at a time."""
from __future__ import annotations

import random
import time

import numpy as np
import pytest
import zmq

from engine.aggregation import CandleAggregator
from engine.bus import EmbeddedBus
from engine.candle_store import Bars, CandleRing
from engine.models import Candle
from engine.protocol import CandleEncoder, ProtocolError, Stamper, candle_topic, decode, encode
from engine.service import candle_frames
from engine.sources.replay import _Replay
from engine.timeframes import TIMEFRAMES
from indicators.worker import read_candle
from tests.procs import free_port
from tests.replay_bots import write_bar_export

SYMBOL = "EURUSD"
EPOCH = 1_704_150_000_000
BAR_COLUMNS = ("time", "open", "high", "low", "close", "tick_volume", "spread", "real_volume")


@pytest.mark.parametrize("throttle_ms", [0, 60_000])
def test_candle_rows_are_framed_as_each_event_would_be(tmp_path, throttle_ms):
    """Four timeframes' closes and forming updates interleaved: the frames and topics, in order,
    with each topic's seq counting on, are those of encoding event by event."""
    path, _ = write_bar_export(tmp_path, 3000, SYMBOL)
    timeframes = ("M1", "M5", "H1", "D1")
    agg = CandleAggregator(SYMBOL, 0.00001, [TIMEFRAMES[n] for n in timeframes], 10_000,
                           forming_throttle_ms=throttle_ms)
    out = {tf: (candle_topic(SYMBOL, tf), CandleEncoder(SYMBOL, tf)) for tf in timeframes}
    batched, one_by_one = Stamper(EPOCH), Stamper(EPOCH)
    replay = _Replay(path, "")
    topics_seen, rows_seen = set(), 0
    try:
        while next(replay.bars, None) is not None:
            columns, _ = replay.bars.take(700)
            rows = agg.fold_columns(columns, {"M1", "M5", "H1"})
            assert rows is not None and "D1" not in {rows.timeframes[k] for k in rows.series.tolist()}
            topics, frames = candle_frames(rows, out, batched)
            expected = []
            for c, closed in rows.events(SYMBOL):
                topic, encoder = out[c.timeframe]
                expected.append((topic, encoder.encode(c.time, c.open, c.high, c.low, c.close, c.tick_volume,
                                                       c.spread, c.real_volume, closed,
                                                       one_by_one.next_seq(topic), EPOCH)))
            assert list(zip(topics, frames)) == expected
            topics_seen.update(topics)
            rows_seen += len(rows)
    finally:
        replay.close()
    assert len(topics_seen) == 3 and rows_seen > 6000
    assert {t: batched.last_seq(t) for t in topics_seen} == {t: one_by_one.last_seq(t) for t in topics_seen}


def test_encode_columns_writes_what_encode_writes_whatever_the_integers():
    """Integers in every msgpack form (runs of one layout, then many), a negative spread, and
    the closed flag either way: byte for byte ``encode``'s frames, which decode to the values."""
    rng = random.Random(5)
    encoder = CandleEncoder(SYMBOL, "M5")

    def bars(n: int, spread_low: int, widths: int) -> dict[str, np.ndarray]:
        big = [0, 100, 200, 60_000, 70_000, 5_000_000_000][:widths]
        return {"time": np.array([1_704_153_600 + 300 * i for i in range(n)]),
                "open": np.array([rng.uniform(1, 2) for _ in range(n)]),
                "high": np.array([rng.uniform(2, 3) for _ in range(n)]),
                "low": np.array([rng.uniform(0, 1) for _ in range(n)]),
                "close": np.array([rng.uniform(1, 2) for _ in range(n)]),
                "tick_volume": np.array([rng.choice(big) + rng.randint(1, 9) for _ in range(n)]),
                "spread": np.array([rng.randint(spread_low, 30) for _ in range(n)]),
                "real_volume": np.array([rng.choice(big) for _ in range(n)])}

    for n, spread_low, widths, first_seq in ((40, 0, 2, 120), (300, 0, 6, 1), (50, -5, 3, 7), (1, 0, 1, 255)):
        values, closed = bars(n, spread_low, widths), np.array([rng.random() < 0.5 for _ in range(n)])
        frames = encoder.encode_columns(values, closed, first_seq, EPOCH)
        rows = list(zip(*(values[name].tolist() for name in BAR_COLUMNS)))
        assert frames == [encoder.encode(*row, flag, first_seq + i, EPOCH)
                          for i, (row, flag) in enumerate(zip(rows, closed.tolist()))]
        assert [decode(f)["seq"] for f in frames] == list(range(first_seq, first_seq + n))
        assert [decode(f)["closed"] for f in frames] == closed.tolist()
    assert encoder.encode_columns({name: np.zeros(0) for name in BAR_COLUMNS}, np.zeros(0, bool), 1, EPOCH) == []


def test_ring_extend_lands_where_appending_one_by_one_does():
    """Batches of any size against rings of any capacity: the same bars, storage and start."""
    rng = random.Random(3)
    for _ in range(200):
        capacity = rng.randint(1, 40)
        one, many, t = CandleRing(capacity, 0.00001), CandleRing(capacity, 0.00001), 0
        for _ in range(rng.randint(1, 8)):
            n = rng.randint(0, 60)
            candles = [Candle(SYMBOL, "M1", 60 * (t + i), 1.1, 1.2, 1.0, 1.15, 1, 2, 0) for i in range(n)]
            t += n
            for c in candles[max(0, n - capacity):]:  # extend skips the bars it would overwrite
                one.append(c)
            if n:
                many.extend(Bars.from_candles(candles))
            assert many.last(capacity).payloads(SYMBOL, "M1", True) == one.last(capacity).payloads(SYMBOL, "M1", True)
            assert (many.nbytes, len(many), many._start) == (one.nbytes, len(one), one._start)


GOOD = {"symbol": SYMBOL, "timeframe": "M1", "time": 1_790_000_040, "open": 1.1, "high": 1.2, "low": 1.0,
        "close": 1.15, "tick_volume": 3, "spread": 1, "real_volume": 0, "closed": False, "seq": 7, "epoch": 5}


@pytest.mark.parametrize("changes, why", [
    ({"open": float("-inf")}, "open must be a finite"),
    ({"tick_volume": float("nan")}, "tick_volume must be a finite"),
    ({"high": float("inf"), "low": float("-inf")}, "high must be a finite"),  # a sum that is NaN
])
def test_a_candle_with_a_number_not_finite_is_refused(changes, why):
    with pytest.raises(ProtocolError, match=why):
        read_candle(candle_topic(SYMBOL, "M1"), encode({**GOOD, **changes}))


def test_finite_numbers_whose_sum_overflows_still_pass():
    huge = {"open": 1e308, "high": 1.5e308, "low": 1e308, "close": 1.2e308, "tick_volume": 2**64 - 1}
    assert read_candle(candle_topic(SYMBOL, "M1"), encode({**GOOD, **huge})) == {**GOOD, **huge}


def test_the_bus_relays_a_batch_in_order_and_holds_what_a_full_subscriber_cannot_take():
    """Lossless: 3,000 values of 2 kB (every 100th undecodable) into a subscriber that reads
    nothing at first (6 MB: more than its queues and socket buffers hold); the bus holds what
    does not fit and counts the wait, and once the subscriber reads, every decodable value
    arrives once, in order."""
    ctx = zmq.Context()
    bus = EmbeddedBus(ctx, f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", hwm=100)
    bus.lossless()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    topic = b"ind:EURUSD:M1:"
    admissible = lambda messages: [m for m in messages if len(m) == 2 and _decodes(m[1])]  # noqa: E731
    try:
        sub.rcvhwm = 100
        sub.connect(bus.xpub.last_endpoint.decode())
        sub.subscribe(topic)
        pub.sndhwm = 10_000
        pub.connect(bus.xsub.last_endpoint.decode())
        deadline = time.monotonic() + 10
        while bus.subscriptions.total == 0 and time.monotonic() < deadline:  # the subscription is in
            bus.drain_subscriptions()
            time.sleep(0.01)
        while not bus.xsub.poll(100) and time.monotonic() < deadline:  # the publisher's connection is up
            pub.send_multipart([b"probe:", b""])
        while bus.xsub.poll(100):
            bus.xsub.recv_multipart()
        sent = 3000
        for i in range(sent):
            pub.send_multipart([topic, b"\xc1" if i % 100 == 99 else encode({"i": i, "pad": "x" * 2000})])
        relayed = 0
        deadline = time.monotonic() + 10
        while not bus.held and time.monotonic() < deadline:  # the subscriber's queues fill up
            relayed += bus.forward(500, admissible)
            time.sleep(0.01)
        assert bus.held and bus.relays_waited >= 1, relayed
        got = []
        deadline = time.monotonic() + 20
        while len(got) < sent - sent // 100 and time.monotonic() < deadline:
            relayed += bus.forward(500, admissible)
            while sub.poll(0):
                got.append(decode(sub.recv_multipart()[1])["i"])
        assert got == [i for i in range(sent) if i % 100 != 99]
        assert relayed == len(got) and not bus.held
    finally:
        for sock in (pub, sub):
            sock.close(0)
        bus.close()
        ctx.term()


def _decodes(frame: bytes) -> bool:
    try:
        decode(frame)
    except ProtocolError:
        return False
    return True
