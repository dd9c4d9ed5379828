"""The array path of a full-speed bar replay (``BarTicks.take``, ``bars_to_ticks``,
``CandleAggregator.on_tick_columns``) against the tick path it replaces: the same ticks, and the
same candle messages (values, order, ``seq``) on every topic, whatever the batch size and
forming throttle."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.aggregation import CandleAggregator
from engine.candle_store import Bars, CandleRing
from engine.config import EngineConfig
from engine.models import Candle, Tick
from engine.protocol import CandleEncoder, decode
from engine.sources.base import SourceError
from engine.sources.replay import ReplaySource, _Replay, bar_columns, bars_to_ticks
from engine.tick_journal import tick_columns
from engine.timeframes import TIMEFRAMES
from tests.replay_bots import write_bar_export

SYMBOL = "EURUSD"
TIMEFRAMES_TESTED = ("M1", "M5", "H1", "D1", "W1", "MN1")
SATURDAY = "2024.01.06"  # the export starts on Tuesday 2024.01.02


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """8,000 M1 bars (Tuesday to Sunday) without Saturday's, so a weekend gap; a few bars
    made dojis (two in a row) and flat, which the tester's order treats apart."""
    path, _ = write_bar_export(tmp_path_factory.mktemp("fast"), 8000, SYMBOL)
    lines = path.read_text().splitlines()
    rows = [lines[0]] + [line for line in lines[1:] if not line.startswith(SATURDAY)]
    for i, shape in ((10, "doji"), (11, "doji"), (500, "flat"), (501, "doji"), (2000, "flat")):
        f = rows[i].split("\t")
        price = f[2]
        f[5] = price  # close = open
        if shape == "flat":
            f[3] = f[4] = price
        rows[i] = "\t".join(f)
    path.write_text("\r\n".join(rows) + "\r\n")
    return path


def tick_path(path: Path, agg: CandleAggregator) -> tuple[list[Tick], list[tuple[str, dict]]]:
    replay = _Replay(path, "")
    try:
        ticks = list(replay.ticks)
    finally:
        replay.close()
    seqs: dict[str, int] = {}
    # A forming candle is the live object: its payload is taken when it is sent, as the engine does.
    return ticks, [m for tick in ticks for m in stamped(agg.on_tick(tick), seqs)]


def array_path(path: Path, agg: CandleAggregator, batch: int,
               wanted: tuple[str, ...] | None = None) -> tuple[dict, list[tuple[str, dict]]]:
    replay = _Replay(path, "")
    parts, messages, seqs = [], [], {}
    try:
        while next(replay.bars, None) is not None:  # the first tick of a bar drawn: take whole bars
            assert replay.bars.at_bar_start
            columns, error = replay.bars.take(batch)
            assert error is None
            parts.append(columns)
            messages += stamped(agg.on_tick_columns(columns, wanted), seqs)
    finally:
        replay.close()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, messages


def stamped(events: list[tuple[Candle, bool]], seqs: dict[str, int]) -> list[tuple[str, dict]]:
    """Each event as the engine publishes it: its topic and payload with ``seq`` (counted in ``seqs``)."""
    out = []
    for candle, closed in events:
        topic = f"candle:{candle.symbol}:{candle.timeframe}:"
        seqs[topic] = seqs.get(topic, 0) + 1
        out.append((topic, {**candle.to_payload(closed), "seq": seqs[topic]}))
    return out


def aggregator(throttle_ms: int) -> CandleAggregator:
    return CandleAggregator(SYMBOL, 0.00001, [TIMEFRAMES[n] for n in TIMEFRAMES_TESTED], 100_000,
                            forming_throttle_ms=throttle_ms)


@pytest.fixture(scope="module")
def by_ticks(export):
    """The tick path's ticks, messages and aggregator for a throttle, each computed once."""
    done: dict[int, tuple] = {}

    def run(throttle_ms: int) -> tuple:
        if throttle_ms not in done:
            agg = aggregator(throttle_ms)
            done[throttle_ms] = (*tick_path(export, agg), agg)
        return done[throttle_ms]
    return run


@pytest.mark.parametrize("throttle_ms", [0, 250, 20_000, 60_000])
@pytest.mark.parametrize("batch", [3, 1000])
def test_array_path_publishes_the_tick_paths_ticks_and_candles(export, by_ticks, throttle_ms, batch):
    ticks, expected, slow = by_ticks(throttle_ms)
    fast = aggregator(throttle_ms)
    columns, got = array_path(export, fast, batch)
    assert {k: v.tolist() for k, v in tick_columns(ticks).items()} == {k: v.tolist() for k, v in columns.items()}
    assert got == expected  # every topic's messages: values, closed flag, seq, and their order
    closed = [p for t, p in got if p["closed"]]
    days = sorted({p["time"] for t, p in got if t.endswith(":D1:")})
    assert [p["time"] for t, p in got if t.endswith(":D1:") and p["closed"]] == days[:-1]
    assert time.strftime("%Y.%m.%d", time.gmtime(days[-2])) == "2024.01.05"  # Saturday skipped
    assert len(closed) > 7000
    for name in TIMEFRAMES_TESTED:  # the state left behind: history and forming bar alike
        assert fast.payloads(name, 100_000) == slow.payloads(name, 100_000)
        assert (fast._series[name].next_emit_ms, fast._series[name].emitted_volume) == \
            (slow._series[name].next_emit_ms, slow._series[name].emitted_volume)


@pytest.mark.parametrize("throttle_ms", [0, 250, 60_000])
def test_timeframes_not_published_keep_the_tick_paths_state(export, by_ticks, throttle_ms):
    """Folded for their state only (the engine publishes M1 and aggregates D1 for the summary):
    the bars and the forming updates' bookkeeping end as the tick path leaves them."""
    _, expected, slow = by_ticks(throttle_ms)
    fast = aggregator(throttle_ms)
    _, got = array_path(export, fast, 1000, wanted=("M1",))
    assert got == [m for m in expected if m[0].endswith(":M1:")] and len(got) > 7000
    for name in TIMEFRAMES_TESTED:
        assert fast.payloads(name, 100_000) == slow.payloads(name, 100_000)
        assert (fast._series[name].next_emit_ms, fast._series[name].emitted_volume) == \
            (slow._series[name].next_emit_ms, slow._series[name].emitted_volume), name


def test_the_tick_path_takes_over_where_the_array_path_cannot_go():
    """A batch that goes back in time (a late tick) is folded tick by tick: same events."""
    base = 1_704_153_600_000
    times = [base, base + 30_000, base + 61_000, base + 59_000, base + 125_000]
    columns = {"time_msc": np.array(times), "bid": np.array([1.1, 1.2, 1.15, 1.3, 1.12]),
               "ask": np.array([1.10002, 1.20002, 1.15003, 1.30001, 1.12002]),
               "last": np.zeros(5), "volume": np.zeros(5, np.int64), "flags": np.full(5, 6),
               "volume_real": np.zeros(5)}
    slow, fast = aggregator(250), aggregator(250)
    ticks = [Tick(SYMBOL, *row) for row in zip(*(columns[k].tolist() for k in Tick._fields[1:]))]
    seqs: dict[str, int] = {}
    expected = [m for tick in ticks for m in stamped(slow.on_tick(tick), seqs)]
    assert stamped(fast.on_tick_columns(columns), {}) == expected
    assert fast.late_ticks == slow.late_ticks == 1


def test_the_whole_array_read_takes_each_field_as_the_row_read_does(tmp_path):
    """Padded dates, times and prices and digits grouped with underscores, which ``float()``
    accepts: read a block at once (numpy), the same bars as read row by row."""
    path, _ = write_bar_export(tmp_path, 60, SYMBOL)
    lines = path.read_text().splitlines()
    rows = [lines[0]]
    for i, line in enumerate(lines[1:]):
        f = line.split("\t")
        f[(0, 1, 2, 3, 4, 5)[i % 6]] = f" {f[(0, 1, 2, 3, 4, 5)[i % 6]]} "
        if i % 4 == 0:
            f[5] = f[5].strip()[:4] + "_" + f[5].strip()[4:]  # 1.10_014
        rows.append("\t".join(f))
    path.write_text("\n".join(rows) + "\n")
    at_once, by_row = _Replay(path, ""), _Replay(path, "")
    try:
        reader = at_once.bars._bars
        columns = reader._plain(list(reader._rows))
        expected = bar_columns(list(by_row.bars._bars))
    finally:
        at_once.close()
        by_row.close()
    assert columns is not None  # the block was plain: read at once
    assert {k: v.tolist() for k, v in columns.items()} == {k: v.tolist() for k, v in expected.items()}
    assert len(expected["time"]) == 60


@pytest.mark.parametrize("throttle_ms", [0, 5_000])
def test_a_batch_that_starts_before_the_last_update_waits_for_its_throttle(throttle_ms):
    """The second batch starts inside the forming bar but before its last update (ticks a feed
    sent late): its first ticks are not due yet, as on the tick path."""
    base = 1_704_153_600_000
    batches = [[base, base + 30_000], [base + 20_000, base + 29_000, base + 31_000, base + 50_000]]
    slow, fast = aggregator(throttle_ms), aggregator(throttle_ms)
    slow_seqs, fast_seqs = {}, {}
    expected, got = [], []
    for times in batches:
        n = len(times)
        columns = {"time_msc": np.array(times), "bid": np.linspace(1.1, 1.2, n), "ask": np.linspace(1.1, 1.2, n) + 0.0002,
                   "last": np.zeros(n), "volume": np.zeros(n, np.int64), "flags": np.full(n, 6),
                   "volume_real": np.zeros(n)}
        ticks = [Tick(SYMBOL, *row) for row in zip(*(columns[k].tolist() for k in Tick._fields[1:]))]
        expected += [m for tick in ticks for m in stamped(slow.on_tick(tick), slow_seqs)]
        got += stamped(fast.on_tick_columns(columns), fast_seqs)
    assert got == expected
    forming_m1 = [p["tick_volume"] for t, p in got if t.endswith(":M1:") and not p["closed"]]
    assert forming_m1 == ([1, 2, 5, 6] if throttle_ms == 0 else [1, 2, 6])


def test_bars_to_ticks_rounds_the_ask_as_python_does():
    rows = [(0, 60_000, 1.00005, 1.00009, 1.00001, 1.00003, 7, False),
            (60_000, 60_000, 0.12345, 0.12345, 0.12345, 0.12345, 3, True)]
    columns = bars_to_ticks(bar_columns(rows), 0.00001, 5)
    assert columns["bid"].tolist() == [1.00005, 1.00009, 1.00001, 1.00003, 0.12345]
    assert columns["ask"].tolist() == [round(b + s * 0.00001, 5) for b, s in
                                       zip(columns["bid"].tolist(), (7, 7, 7, 7, 3))]
    assert columns["time_msc"].tolist() == [0, 15_000, 30_000, 45_000, 60_000]


def test_ring_extend_equals_appending_one_by_one():
    candles = [Candle(SYMBOL, "M1", 60 * i, 1.1 + i * 1e-5, 1.2, 1.0, 1.15, 70_000 * (i == 3), 5, 0)
               for i in range(12)]
    candles.append(Candle(SYMBOL, "M1", 720, 1.123456789, 1.2, 1.0, 1.1, 1, -3, 5))  # off the grid
    one, many = CandleRing(8, 0.00001), CandleRing(8, 0.00001)
    for c in candles:
        one.append(c)
    many.extend(Bars.from_candles(candles[:5]))
    many.extend(Bars.from_candles(candles[5:]))
    assert many.last(8).payloads(SYMBOL, "M1", True) == one.last(8).payloads(SYMBOL, "M1", True)
    assert many.nbytes == one.nbytes


def test_a_bad_row_ends_the_batch_and_the_bars_before_it_play_first(tmp_path):
    path, bars = write_bar_export(tmp_path, 30, SYMBOL)
    lines = path.read_text().splitlines()
    lines[21] = lines[21].replace("\t", "\tx", 1)  # bar 21's time is broken
    path.write_text("\r\n".join(lines) + "\r\n")
    source = ReplaySource(EngineConfig(source="replay", replay_file=str(path), replay_speed=0), bar_batch=8)
    source.start()
    try:
        assert source.plays_bars
        played = []
        for _ in range(2):
            symbol, columns = source.poll_bars(0)
            played.append(columns["time_msc"][0] // 1000)
        symbol, columns = source.poll_bars(0)  # bars 16..19, then the bad row
        assert symbol == SYMBOL and columns["time_msc"][-1] // 60_000 == bars[19].time // 60
        with pytest.raises(SourceError, match=":22:"):
            source.poll_bars(0)
        assert played == [bars[0].time, bars[8].time] and source.poll_bars(0) is None
    finally:
        source.stop()


@pytest.mark.parametrize("real_volume, spread, closed", [(0, 7, True), (5, -3, False), ((1 << 63) + 5, 7, False)])
def test_candle_encoder_writes_the_stamped_payload_encode_would(real_volume, spread, closed):
    candle = Candle(SYMBOL, "M5", 1_704_153_600, 1.1, 1.2, 1.0, 1.15, 4, spread, real_volume)
    want = {**candle.to_payload(closed), "seq": 9, "epoch": 1_704_150_000_000}
    frame = CandleEncoder(SYMBOL, "M5").encode(
        candle.time, candle.open, candle.high, candle.low, candle.close, candle.tick_volume,
        candle.spread, candle.real_volume, closed, 9, 1_704_150_000_000)
    got = decode(frame)
    assert list(got.items()) == list(want.items())  # key order too
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
