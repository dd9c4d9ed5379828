"""Every integer in its smallest msgpack form and every price a float64, on every path: the fast
encoders (stream ticks and candles, bar replays' tick frames, ``ticks`` replies) write the
bytes msgpack-python writes, so a stream tick and a snapshot of it are the same bytes."""
from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from engine.protocol import (TICK_FIELDS, CandleEncoder, TickEncoder, decode, encode, pack_ticks,
                             tick_frames)

# Each unsigned form's edges: fixint, uint8, uint16, uint32, uint64.
EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 1_796_000_000_123, 2**63 - 1, 2**64 - 1]


def canonical(raw: bytes) -> bytes:
    """``raw`` as msgpack-python writes its value: smallest int forms, float64, str not bin.
    A frame equal to it has exactly those widths."""
    return encode(msgpack.unpackb(raw, raw=False, strict_map_key=False))


def test_tick_encoder_writes_the_bytes_encode_writes_at_every_width():
    encoder = TickEncoder("EURUSD")
    for value in EDGES:
        for field in ("volume", "time_msc", "flags", "seq", "epoch"):
            ints = {"volume": 0, "time_msc": 1_796_000_000_123, "flags": 6, "seq": 1, "epoch": 1_796_000_000_000}
            ints[field] = value
            frame = encoder.encode(1.0, 2.0, 0, ints["volume"], ints["time_msc"], ints["flags"], 3,
                                   ints["seq"], ints["epoch"])
            assert frame == canonical(frame), (field, value)
            tick = decode(frame)
            assert tick[field] == value and type(tick["last"]) is float and type(tick["volume_real"]) is float
    assert decode(encoder.encode(1.0, 2.0, 0.0, -5, 1, 6, 0.0, 1, 2))["volume"] == -5  # encode's own way


# Where the tick encoder's layouts change: each integer's form edges, negatives (msgpack-python's
# own forms), and the times below uint64 (a slower path than MT5's millisecond clocks take).
SMALL_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
NEGATIVE = [-1, -32, -33, -128, -129, -200, -256, -257, -2**63]
TIMES = [0, 2**32 - 1, 2**32, 1_796_000_000_123]


@pytest.mark.parametrize("symbol", ["EURUSD", "X", "Ünï€не", "S" * 64])
def test_tick_encoder_layouts_at_every_width_transition(symbol):
    encoder = TickEncoder(symbol)
    cases = 0
    for volume in [*SMALL_EDGES, *NEGATIVE]:
        for flags in [0, 6, 126, 127, 128, 255, 256, 2**40, -1, -129, -256, -257]:
            for seq in [1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1, -5]:
                for time_msc, epoch in [(1_796_000_000_123, 1_796_000_000_000), (2**32 - 1, 2**32), (5, 0)]:
                    tick = {"symbol": symbol, "bid": 1.1, "ask": 1.2, "last": 0.0, "volume": volume,
                            "time_msc": time_msc, "flags": flags, "volume_real": 0.5, "seq": seq, "epoch": epoch}
                    frame = encoder.encode(1.1, 1.2, 0, volume, time_msc, flags, 0.5, seq, epoch)
                    assert frame == msgpack.packb(tick), tick
                    cases += 1
    for time_msc in TIMES:  # whole-number prices as ints: float64 all the same
        assert encoder.encode(1, 2, 0, 0, time_msc, 6, 0, 1, 2**33) == msgpack.packb(
            {"symbol": symbol, "bid": 1.0, "ask": 2.0, "last": 0.0, "volume": 0, "time_msc": time_msc,
             "flags": 6, "volume_real": 0.0, "seq": 1, "epoch": 2**33})
    print(f"{cases} width combinations of {symbol!r}: msgpack-python's bytes")


def test_tick_encoder_takes_numpy_integers_as_their_values():
    encoder = TickEncoder("EURUSD")
    for volume, seq in [(0, 1), (127, 128), (300, 70_000), (2**40, 2**33)]:
        expected = encoder.encode(1.5, 1.6, 0.0, volume, 1_796_000_000_123, 6, 0.0, seq, 1_796_000_000_000)
        for kind in (np.int64, np.uint64):
            assert encoder.encode(np.float64(1.5), 1.6, 0.0, kind(volume), kind(1_796_000_000_123), kind(6), 0.0,
                                  kind(seq), kind(1_796_000_000_000)) == expected, (kind, volume, seq)


def test_tick_encoder_writes_each_epoch_it_meets():
    """The fast path packs a publisher's epoch once: another epoch (another value, or the same
    value in another object, or one that is not a uint64) is written as msgpack-python writes it."""
    encoder = TickEncoder("EURUSD")
    epochs = [1_796_000_000_000, 1_796_000_000_001, int("1796000000000"), 2**32, 2**32 - 1, 5, 0,
              np.uint64(2**40), np.int64(2**40), 2**64 - 1]
    for epoch in epochs * 2:
        for volume in (0, 300):
            tick = {"symbol": "EURUSD", "bid": 1.1, "ask": 1.2, "last": 0.0, "volume": volume,
                    "time_msc": 1_796_000_000_123, "flags": 6, "volume_real": 0.0, "seq": 300,
                    "epoch": int(epoch)}
            assert encoder.encode(1.1, 1.2, 0.0, volume, 1_796_000_000_123, 6, 0.0, 300, epoch) == msgpack.packb(tick)


def test_candle_encoder_writes_the_bytes_encode_writes_at_every_width():
    encoder = CandleEncoder("EURUSD", "M5")
    for value in [*EDGES[:-2], -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]:
        frame = encoder.encode(1_796_000_000, 1, 2.0, 1.0, 1.5, abs(value) % 2**63, value, 0, True,
                               abs(value) % 2**63 + 1, 7)
        assert frame == canonical(frame), value
        bar = decode(frame)
        assert bar["spread"] == value and type(bar["open"]) is float and bar["closed"] is True


def columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"bid": np.round(1 + rng.random(n), 5), "ask": np.round(1.0001 + rng.random(n), 5),
            "last": np.zeros(n, np.int64),  # a whole-number column: still float64 on the wire
            "volume": rng.choice(EDGES[:8], n), "time_msc": 1_796_000_000_000 + np.arange(n),
            "flags": rng.choice([2, 6, 200], n), "volume_real": np.zeros(n)}


@pytest.mark.parametrize("first_seq", [100, 65_300, 2**32 - 300])  # seq past uint8, uint16, uint32
@pytest.mark.parametrize("varying", [False, True])
def test_pack_ticks_and_tick_frames_write_what_encode_writes(varying, first_seq):
    rng = np.random.default_rng(5)
    cols = columns(600, rng)
    if not varying:  # one layout per seq width: the runs of records
        cols["volume"][:] = 0
        cols["flags"][:] = 6
    seqs = list(range(first_seq, first_seq + 600))
    packed = pack_ticks("EURUSD", cols, first_seq=first_seq, epoch=1_796_000_000_000)
    rows = msgpack.unpackb(packed)
    assert packed == encode(rows) and [r["seq"] for r in rows] == seqs
    assert all(type(r[name]) is float for r in rows for name in ("bid", "ask", "last", "volume_real"))
    frames = tick_frames("EURUSD", cols, first_seq, 1_796_000_000_000)
    assert frames == [encode(r) for r in rows]
    assert pack_ticks("EURUSD", cols) == encode([{k: v for k, v in r.items() if k not in ("seq", "epoch")}
                                                 for r in rows])
    values, read = TickEncoder("EURUSD").values_of(frames)
    assert read.all() and values["seq"].tolist() == seqs
    assert values["volume"].tolist() == cols["volume"].tolist()


def test_values_of_reads_what_the_engine_writes_and_refuses_the_rest():
    encoder = TickEncoder("EURUSD")
    good = [encoder.encode(1.1, 1.2, 0.0, v, 1_796_000_000_123, 6, 0.0, s, 9) for v, s in
            [(0, 1), (300, 127), (0, 128), (70000, 2**40)]]
    other = TickEncoder("GBPUSD").encode(1.1, 1.2, 0.0, 0, 1, 6, 0.0, 1, 9)
    frames = [b"\xc1", *good, good[0][:-1], good[0] + b"\x00", other, encoder.encode(1.0, 2.0, 0.0, -3, 1, 6, 0.0, 1, 2)]
    values, read = encoder.values_of(frames)
    assert read.tolist() == [False, True, True, True, True, False, False, False, True]
    assert values["volume"][read].tolist() == [0, 300, 0, 70000, -3]
    assert values["seq"][read].tolist() == [1, 127, 128, 2**40, 1]


def test_a_stream_tick_and_its_snapshot_are_the_same_bytes_on_the_wire(engine):
    ctx = zmq.Context()
    sub, req = ctx.socket(zmq.SUB), ctx.socket(zmq.REQ)
    for sock in (sub, req):
        sock.linger = 0
    sub.subscribe(b"tick:EURUSD:")
    sub.subscribe(b"candle:EURUSD:M1:")
    sub.connect(engine.bus)
    req.connect(engine.rpc)
    stream: dict[tuple[str, int], bytes] = {}
    try:
        assert sub.poll(5000)
        req.send(encode({"op": "snapshot", "prefix": "tick:EURUSD:"}))
        assert req.poll(5000)
        reply = req.recv()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(stream) < 100:
            if sub.poll(100):
                topic, frame = sub.recv_multipart()
                stream[(topic.decode(), decode(frame)["seq"])] = frame
        req.send(encode({"op": "ticks", "symbol": "EURUSD", "after_seq": 0, "epoch": decode(frame)["epoch"],
                         "count": 50}))
        assert req.poll(5000)
        repaired = req.recv()
    finally:
        sub.close()
        req.close()
        ctx.term()
    assert reply == canonical(reply) and repaired == canonical(repaired)
    for topic, frame in stream.items():
        assert frame == canonical(frame), topic
    [(topic, snapshot)] = decode(reply)["data"]
    print(f"{len(stream)} stream frames, snapshot seq {snapshot['seq']}, "
          f"{len(decode(repaired)['data'])} journaled ticks: all canonical")
    journaled = {row["seq"]: encode(row) for row in decode(repaired)["data"]}
    shared = [seq for (t, seq) in stream if t == topic and seq in journaled]
    assert shared and all(stream[(topic, seq)] == journaled[seq] for seq in shared)
    assert encode(snapshot) == canonical(encode(snapshot)) and list(snapshot) == [*TICK_FIELDS, "seq", "epoch"]


def assert_read_as_decoded(values: np.ndarray, read: np.ndarray, frames: list[bytes],
                           engine_frames: list[int]) -> None:
    """``values_of``'s answer: exactly ``engine_frames`` read, each with the values decode gives."""
    assert np.flatnonzero(read).tolist() == engine_frames
    for i in engine_frames:
        tick = decode(frames[i])
        assert [values[name][i] for name in values.dtype.names] == [tick[name] for name in values.dtype.names], i


def test_values_of_reads_frames_of_one_length_in_other_layouts():
    """A uint16 volume and a uint8 seq make a frame as long as a uint8 volume and a uint16 seq:
    a run of one length is not one layout."""
    encoder = TickEncoder("EURUSD")
    frames = [encoder.encode(1.1, 1.2, 0.0, volume, 1_796_000_000_123 + i, 6, 0.0, seq, 9_000_000_000)
              for i, (volume, seq) in enumerate([(200, 300), (300, 200), (200, 301), (65535, 255), (255, 65535)])]
    assert len(set(map(len, frames))) == 1
    values, read = encoder.values_of(frames)
    assert_read_as_decoded(values, read, frames, [0, 1, 2, 3, 4])
    assert values["volume"].tolist() == [200, 300, 200, 65535, 255]
    assert values["seq"].tolist() == [300, 200, 301, 255, 65535]


def test_values_of_reads_batches_of_many_runs_and_layouts():
    """Past 8 runs of one length the frames are sorted out by layout; past 64 layouts, the
    fewest frames' are parsed field by field: every path reads what decode reads."""
    encoder = TickEncoder("EURUSD")
    widths = [0, 200, 300, 70_000, 2**33]
    layouts = [(volume, flags, seq) for volume in widths for flags in (6, 200, 300) for seq in widths + [-1]]
    assert len(layouts) > 64
    frames, engine_frames = [], []
    for i, (volume, flags, seq) in enumerate(layouts * 3):
        frames.append(encoder.encode(1.1, 1.2, float(i), volume, 1_796_000_000_123, flags, 0.0, seq, 2**40))
        engine_frames.append(len(frames) - 1)
        if i % 50 == 0:  # not this symbol's ticks as the engine writes them
            frames += [b"\xc1", frames[-1][:-1], frames[-1] + b"\x00", encode({"symbol": "EURUSD"}),
                       TickEncoder("GBPUSD").encode(1.1, 1.2, 0.0, 0, 1, 6, 0.0, 1, 9)]
    values, read = encoder.values_of(frames)
    assert_read_as_decoded(values, read, frames, engine_frames)
    few = frames[:5]  # under 8 runs, and one layout per run
    assert_read_as_decoded(*encoder.values_of(few), few, [i for i in engine_frames if i < 5])
    print(f"{len(frames)} frames of {len(set(layouts))} layouts: {int(read.sum())} read as decode reads them")
