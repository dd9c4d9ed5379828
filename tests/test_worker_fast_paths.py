"""The indicator worker's fast paths give exactly what its checked path gives: a candle read by
its layout (one unpack, or numpy columns for a run), values committed with ``update_many`` and
``ind:`` payloads packed by ``IndicatorEncoder`` are the bytes, values, types, order and ``seq``
of decode, ``read_candle``, ``IndicatorSeries.on_candle`` and ``encode``; anything unusual
(malformed, hostile, another layout) falls back to the checked path."""
from __future__ import annotations

import math
from collections import Counter
import random
import struct

import msgpack
import numpy as np
import pytest

from engine.protocol import CandleEncoder, Stamper, decode, encode
from indicators import worker as worker_module
from indicators.encoder import IndicatorEncoder
from indicators.layouts import LAYOUTS_PER_TOPIC, CandleLayouts, fields_of
from indicators.spec import parse_indicators
from indicators.worker import IndicatorWorker, WorkerConfig

TOPIC = b"candle:EURUSD:M1:"
EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]
EPOCH = 1_764_528_000_000


def typed(fields):
    """The fields, the bar's flattened, each with its type (a float as its bytes: NaN too)."""
    *head, bar = fields
    return [(struct.pack(">d", v) if type(v) is float else v, type(v)) for v in (*head, *bar)]


def bars(n: int, seed: int = 3) -> list[tuple]:
    """``n`` random-walk M1 bars: (time, open, high, low, close, tick_volume)."""
    rng, price, out = random.Random(seed), 1.1, []
    for i in range(n):
        close = round(price + rng.gauss(0, 3e-4), 5)
        out.append((1_704_153_600 + 60 * i, price, max(price, close) + 1e-4, min(price, close) - 1e-4, close,
                    rng.choice([3] * 30 + [90, 200, 70_000])))
        price = close
    return out


def stream(n: int, first_seq: int = 1) -> list[list[bytes]]:
    """The engine's candle messages for ``n`` bars: a forming update, then the closed bar."""
    enc, out, seq = CandleEncoder("EURUSD", "M1"), [], first_seq
    for t, o, h, low, c, v in bars(n):
        for closed in (False, True):
            out.append([TOPIC, enc.encode(t, o, h, low, c, v, -2 if seq % 7 else 5, 0, closed, seq, EPOCH)])
            seq += 1
    return out


def test_a_layout_reads_what_decode_gives_at_every_integer_width():
    enc, layouts = CandleEncoder("EURUSD", "M1"), CandleLayouts()
    for value in EDGES:
        for field in ("time", "tick_volume", "spread", "real_volume", "seq", "epoch"):
            ints = {"time": 60, "tick_volume": 4, "spread": -3, "real_volume": 0, "seq": 9, "epoch": EPOCH}
            ints[field] = value
            for closed in (True, False):
                payload = enc.encode(ints["time"], 1.5, 2.0, 1.0, 1.25, ints["tick_volume"], ints["spread"],
                                     ints["real_volume"], closed, ints["seq"], ints["epoch"])
                if layouts.read(payload) is None:
                    assert layouts.learn(payload, decode(payload))
                assert typed(layouts.read(payload)) == typed(fields_of(decode(payload))), (field, value)


def test_a_changed_byte_is_read_as_decode_reads_it_or_left_to_the_checked_path():
    """Every byte of a learned candle replaced by bytes of other msgpack types: the layout
    reads it only where msgpack decodes the same fields from it."""
    layouts = CandleLayouts()
    payload = stream(1)[1][1]
    assert layouts.learn(payload, decode(payload))
    read = checked = 0
    for at in range(len(payload)):
        for byte in (0x00, 0x05, 0x7F, 0x80, 0xA0, 0xC0, 0xC1, 0xC2, 0xC3, 0xCB, 0xCC, 0xD0, 0xE0, 0xFF):
            changed = payload[:at] + bytes([byte]) + payload[at + 1:]
            fields = layouts.read(changed)
            if fields is None:
                checked += 1
                continue
            read += 1
            candle = decode(changed)
            assert typed(fields) == typed(fields_of(candle)), (at, byte)
            assert fields[0] >= 0 and fields[1] >= 0 and fields[2] >= 0
    assert read and checked  # both ways were taken


def test_columns_of_a_run_equal_the_reads_one_by_one_or_are_refused():
    layouts = CandleLayouts()
    messages = stream(60, first_seq=300)
    for _, payload in messages[:2]:
        layouts.learn(payload, decode(payload))
    payloads = [p for _, p in messages if len(p) == len(messages[0][1])][:40]
    columns = layouts.columns(payloads)
    assert columns is not None
    one_by_one = [layouts.read(p) for p in payloads]
    assert columns.time.tolist() == [f[0] for f in one_by_one]
    assert columns.seq.tolist() == [f[1] for f in one_by_one]
    assert columns.closed.tolist() == [f[3] for f in one_by_one]
    assert np.column_stack(columns.bar).tolist() == [list(f[4]) for f in one_by_one]
    for at in (0, 20, len(payloads[5]) - 12):  # the map header, a key, a closed byte
        spoiled = list(payloads)
        spoiled[5] = spoiled[5][:at] + b"\xc1" + spoiled[5][at + 1:]
        assert layouts.columns(spoiled) is None
    assert layouts.columns(payloads[:3] + [payloads[3] + b"\x00"]) is None  # a longer one


@pytest.mark.parametrize("values", [[1.5, -2.25, 0.0, 3e300, -0.0, 7.0], [math.nan, 2.0, math.nan, 4.0, 5.0, 6.0],
                                    [math.inf, -math.inf, 1.0, 1.0, 1.0, 1.0]])
def test_the_indicator_encoder_writes_the_bytes_encode_writes(values):
    keys = ("sma", "ema", "rsi", "macd", "macd_signal", "macd_hist")
    encoder = IndicatorEncoder("EURUSD", "M1", keys)
    for t in (0, 127, 128, 1_704_153_600, 2**40):
        for seq in (1, 127, 128, 65536, 2**33):
            for closed in (True, False):
                payload = {"symbol": "EURUSD", "timeframe": "M1", "time": t, "closed": closed,
                           **{k: None if math.isnan(v) else v for k, v in zip(keys, values)},
                           "seq": seq, "epoch": EPOCH}
                assert encoder.encode(t, closed, values, seq, EPOCH) == encode(payload)


class Capture:
    """The worker's publisher, keeping what it is given."""

    def __init__(self) -> None:
        self.stamper = Stamper(epoch=EPOCH)
        self.sent: list[tuple[bytes, bytes]] = []

    @property
    def epoch(self) -> int:
        return self.stamper.epoch

    def publish_pairs(self, topics, frames) -> None:
        self.sent += zip(topics, frames)


class NoHistory:
    def candles(self, *args):
        return []


def run_worker(batches: list[list[list[bytes]]], fast: bool, monkeypatch, indicators: str,
               taken: Counter | None = None) -> IndicatorWorker:
    """A worker fed ``batches``; ``taken`` counts the candles each fast path read."""
    with monkeypatch.context() as patch:
        if fast:
            read, columns = CandleLayouts.read, CandleLayouts.columns

            def counted_read(self, payload):
                fields = read(self, payload)
                taken["read"] += fields is not None
                return fields

            def counted_columns(self, payloads):
                out = columns(self, payloads)
                taken["columns"] += 0 if out is None else len(payloads)
                return out
            patch.setattr(CandleLayouts, "read", counted_read)
            patch.setattr(CandleLayouts, "columns", counted_columns)
        else:  # the checked path only: no layouts, no runs
            patch.setattr(CandleLayouts, "read", lambda self, payload: None)
            patch.setattr(worker_module, "MIN_RUN", 10**9)
        patch.setattr(worker_module, "REWARM_EVERY_S", 0.0)  # each gap warms again, at once
        worker = IndicatorWorker(WorkerConfig(indicators=indicators))
        worker._rpc, worker._pub = NoHistory(), Capture()
        worker._symbols = frozenset({"EURUSD", "GBPUSD"})
        for batch in batches:
            worker.handle_batch(batch)
    return worker


def hostile(messages: list[list[bytes]]) -> list[list[bytes]]:
    """``messages`` with what a hostile or broken publisher sends mixed in."""
    out = list(messages)
    out[351] = [TOPIC, encode({**decode(out[351][1]), "time": 2**64 - 1})]  # a closed bar past int64
    bad = decode(out[101][1])
    out[101] = [TOPIC, encode({**bad, "close": math.nan})]  # not finite: malformed
    out[150] = [TOPIC, out[150][1][:-1] + b"\x00"]  # a changed epoch: warms again
    out.insert(210, out[209])  # a seq repeated
    out[230] = [TOPIC, msgpack.packb(decode(out[230][1]), use_single_float=True)]  # another layout, well formed
    out[260] = [TOPIC, out[260][1].replace(b"\xa6closed\xc3", b"\xa6closed\xc0")]  # closed: nil
    out[300] = [TOPIC]  # one frame
    out.insert(320, [b"candle:GBPUSD:M1:", out[320][1]])  # another topic's candle with this one's payload
    del out[400]  # a gap
    return out


@pytest.mark.parametrize("indicators", ["sma=sma:20,ema=ema:20,rsi=rsi:14,macd=macd:12:26:9",
                                        "atr:14,obv,stoch:5:3:3,bbands:20:2:2,wma:9"])
@pytest.mark.parametrize("mixed", [False, True])
def test_the_worker_publishes_the_same_bytes_with_or_without_its_fast_paths(monkeypatch, indicators, mixed):
    messages = stream(400)
    if mixed:
        messages = hostile(messages)
    rng = random.Random(5)
    batches, i = [], 0
    while i < len(messages):
        size = rng.choice([1, 2, 17, 40, 300])
        batches.append(messages[i:i + size])
        i += size
    taken = Counter()
    fast, slow = (run_worker(batches, flag, monkeypatch, indicators, taken) for flag in (True, False))
    assert taken["read"] > 100 and taken["columns"] > 300, taken  # both fast paths were taken
    assert fast._pub.sent == slow._pub.sent
    assert len(slow._pub.sent) > 300
    counters = ("updates", "malformed", "rewarms", "rewarms_limited", "forming_skipped")
    assert [getattr(fast, c) for c in counters] == [getattr(slow, c) for c in counters]
    if mixed:
        assert slow.malformed == 4 and slow.rewarms >= 3
    keys = tuple(k for inst in parse_indicators(indicators) for k in inst.keys)
    last = decode(fast._pub.sent[-1][1])
    assert list(last) == ["symbol", "timeframe", "time", "closed", *keys, "seq", "epoch"]
    assert all(type(last[k]) is float for k in keys)


@pytest.mark.parametrize("first_seq", [1, 100, 127, 250, 65530, 2**32 - 3])
@pytest.mark.parametrize("nan_row", [None, 2])
def test_closed_bars_encoded_at_once_are_the_bytes_encoded_one_by_one(first_seq, nan_row):
    keys = ("a", "b_upper", "c")
    encoder = IndicatorEncoder("XAUUSD", "H1", keys)
    rng = np.random.default_rng(first_seq)
    values = rng.normal(size=(8, 3)) * 1e3
    if nan_row is not None:
        values[nan_row, 1] = np.nan
    for times in (np.arange(8) * 3600 + 1_704_153_600, np.arange(8) * 20 + 100):  # 100..240 crosses 127/255
        frames = encoder.encode_closed(times, values, first_seq, EPOCH)
        assert frames == [encoder.encode(t, True, row, seq, EPOCH)
                          for seq, (t, row) in enumerate(zip(times.tolist(), values.tolist()), first_seq)]
        assert [decode(f)["seq"] for f in frames] == list(range(first_seq, first_seq + 8))


def test_a_bar_time_past_int64_before_a_run_leaves_it_to_the_checked_path(monkeypatch):
    """The series' last bar at 2**64 - 1 (valid msgpack, past numpy's int64), then a run."""
    messages = stream(100)
    messages[59] = [TOPIC, encode({**decode(messages[59][1]), "time": 2**64 - 1})]
    batches = [messages[:60], messages[60:]]
    taken = Counter()
    fast, slow = (run_worker(batches, flag, monkeypatch, "sma:5", taken) for flag in (True, False))
    assert fast._pub.sent == slow._pub.sent and fast.rewarms == slow.rewarms == 1


def test_a_set_of_many_keys_is_encoded_with_a_map16_header_as_encode_writes_it():
    keys = tuple(f"k{i}" for i in range(20))  # 26 entries: past a fixmap's 15
    encoder = IndicatorEncoder("EURUSD", "M1", keys)
    values = np.linspace(-1.0, 1.0, 60).reshape(3, 20)
    times = np.array([60, 120, 180])
    frames = encoder.encode_closed(times, values, 5, EPOCH)
    assert frames[0][:3] == b"\xde\x00\x1a"
    assert frames == [encode({"symbol": "EURUSD", "timeframe": "M1", "time": t, "closed": True,
                              **dict(zip(keys, row)), "seq": seq, "epoch": EPOCH})
                      for seq, (t, row) in enumerate(zip(times.tolist(), values.tolist()), 5)]


def test_a_publisher_padding_candles_to_new_lengths_cannot_keep_the_engines_layout_out():
    layouts = CandleLayouts()
    real = stream(1)[1][1]
    for n in range(100):  # 100 lengths, each a candle read_candle accepts, with a padding key
        padded = encode({**decode(real), "pad": "x" * n, "after": 1.5})  # a layout ends with a number
        assert layouts.learn(padded, decode(padded))
    assert len(layouts) == LAYOUTS_PER_TOPIC
    assert layouts.learn(real, decode(real))
    assert typed(layouts.read(real)) == typed(fields_of(decode(real)))
