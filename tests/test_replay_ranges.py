"""History by date range from a replay's own file: ``tick_range`` and ``candle_range`` read from
the file's sparse index (not from its top), equal to what playback delivered and what a
subscriber saw, never past what was played; a corrupt region is an error to the one who asked."""
from __future__ import annotations

import calendar
import random
import time
from pathlib import Path

import pytest

from engine.aggregation import CandleAggregator
from engine.client import BadRequest, RpcClient, Subscriber, Unavailable
from engine.config import EngineConfig
from engine.models import Tick
from engine.protocol import MAX_TICKS
from engine.sources.base import SourceError
from engine.sources.replay import ReplaySource
from engine.sources.replay_index import SPACING
from engine.timeframes import timeframe
from tests.replay_bots import BAR_HEADER
from tests.test_recording_store import record

START_S = calendar.timegm((2024, 1, 2, 0, 0, 0))
MEMORY = 20  # MAX_CANDLES of the engines below: older bars come from the file
TICK_HEADER = "<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>"


def stamp(ms: int) -> str:
    return time.strftime("%Y.%m.%d\t%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


def write_tick_export(path: Path, rows: int, bad_line: int | None = None, encoding: str = "utf-8") -> Path:
    """An MT5 tick export: most rows set only the bid or the ask (the other repeats), LAST is set
    once in 700 rows, times repeat now and then; ``bad_line`` (a line number) holds no price."""
    rng = random.Random(5)
    lines, t, bid = [TICK_HEADER], START_S * 1000, 1.10000
    for i in range(rows):
        t += rng.choice((0, 1, 37, 250, 900, 30_000))
        bid = round(bid + rng.choice((-2, -1, 1, 2)) * 1e-5, 5)
        ask = f"{bid + rng.randint(1, 4) * 1e-5:.5f}"
        last = f"{bid:.5f}" if i % 700 == 350 else ""
        kind = i % 3
        fields = ([f"{bid:.5f}", ask, last, "", "6"] if kind == 0 or i < 3 else
                  [f"{bid:.5f}", "", last, "", "2"] if kind == 1 else ["", ask, last, "1", ""])
        lines.append(f"{stamp(t)}\t" + "\t".join(fields))
        if i % 997 == 0:
            lines.append("")  # blank lines are not rows
    if bad_line is not None:
        lines[bad_line - 1] = f"{stamp(t)}\tnot-a-price\t1.1\t\t\t6"
    path.write_text("\r\n".join(lines) + "\r\n", encoding=encoding)
    return path


def write_bar_export(path: Path, bars: int) -> Path:
    """An MT5 M1 bar export with runs of dojis (their direction depends on the bar before),
    one across the first index entry."""
    rng = random.Random(9)
    lines, price = [BAR_HEADER], 1.20000
    for i in range(bars):
        o = price
        c = o if SPACING - 3 <= i <= SPACING + 2 or i % 50 < 3 else round(o + rng.gauss(0, 3e-4), 5)
        h, low = round(max(o, c) + abs(rng.gauss(0, 1e-4)), 5), round(min(o, c) - abs(rng.gauss(0, 1e-4)), 5)
        when = time.strftime("%Y.%m.%d\t%H:%M:%S", time.gmtime(START_S + 60 * i))
        lines.append(f"{when}\t{o:.5f}\t{h:.5f}\t{low:.5f}\t{c:.5f}\t{rng.randint(5, 60)}\t0\t{rng.randint(1, 9)}")
        price = c
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(path: Path, rows: int) -> Path:
    """A plain CSV of three symbols: EURUSD dense, GBPUSD one row in ten, USDJPY one in a hundred."""
    rng = random.Random(3)
    lines, t = ["symbol,time_msc,bid,ask,last,volume,flags"], START_S * 1000
    for i in range(rows):
        t += rng.choice((0, 5, 100, 2000))
        symbol = "USDJPY" if i % 100 == 7 else "GBPUSD" if i % 10 == 3 else "EURUSD"
        bid = round(1.3 + rng.random() / 100, 5)
        lines.append(f"{symbol},{t},{bid:.5f},{bid + 2e-5:.5f},,{rng.choice(('', '2.5'))},")
    path.write_text("\n".join(lines) + "\n")
    return path


def replay(path: Path, speed: float = 0, batch: int = 1000) -> ReplaySource:
    source = ReplaySource(EngineConfig(source="replay", replay_file=str(path), replay_speed=speed), batch=batch)
    source.start()
    return source


def play_all(source: ReplaySource) -> list[Tick]:
    played: list[Tick] = []
    for _ in range(100_000):
        ticks = source.poll(0)
        if not ticks:
            return played
        played += ticks
    raise AssertionError("the replay never finished")


def play_until(source: ReplaySource, now_ms: int) -> list[Tick]:
    """Everything due by ``now_ms`` (a replay at a speed > 0), a batch at a time."""
    played: list[Tick] = []
    while batch := source.poll(now_ms):
        played += batch
    return played


def expected(played: list[Tick], symbol: str, lo: int, hi: int, count: int) -> list[Tick]:
    return [t for t in played if t.symbol == symbol and lo <= t.time_msc <= hi][:count]


@pytest.fixture
def sources():
    opened: list[ReplaySource] = []

    def make(path: Path, **kwargs) -> ReplaySource:
        opened.append(replay(path, **kwargs))
        return opened[-1]

    yield make
    for source in opened:
        source.stop()


FILES = {
    "tick export": lambda d: write_tick_export(d / "EURUSD_ticks.csv", 6000),
    "tick export, UTF-16": lambda d: write_tick_export(d / "EURUSD_ticks.csv", 3000, encoding="utf-16"),
    "bar export": lambda d: write_bar_export(d / "EURUSD_M1_202401020000.csv", 2500),
    "plain CSV": lambda d: write_csv(d / "ticks.csv", 12000),
}


@pytest.mark.parametrize("kind", FILES)
def test_tick_ranges_equal_what_playback_delivered_and_read_from_near_their_start(kind, sources, tmp_path):
    source = sources(FILES[kind](tmp_path))
    played = play_all(source)
    index = source.index
    assert index.rows == source.status()["total"] and index.entries >= 2
    symbols = sorted({t.symbol for t in played})
    rng = random.Random(1)
    for symbol in symbols:
        own = [t for t in played if t.symbol == symbol]
        for _ in range(12):
            a, b = sorted(rng.randrange(len(own)) for _ in range(2))
            lo, hi, count = own[a].time_msc + rng.choice((0, 1)), own[b].time_msc, rng.choice((5, 300, MAX_TICKS))
            parsed = index.rows_parsed
            got = source.tick_range(symbol, lo, hi, count)
            assert got == expected(played, symbol, lo, hi, count), (symbol, lo, hi, count)
            # Read from the entry before the range (of this symbol's stream), not from the top:
            # a row holds a tick or more, and an entry comes every SPACING rows of the symbol.
            in_range = sum(1 for t in played if lo <= t.time_msc <= hi)
            assert index.rows_parsed - parsed <= in_range + len(played) / len(own) * (SPACING + 2) + 2
    assert source.tick_range(symbols[0], 0, played[0].time_msc - 1, 100) == []
    assert source.tick_range("XAUUSD", 0, 2**50, 100) == []


def test_a_range_at_the_end_of_a_big_file_parses_about_its_own_rows(sources, tmp_path):
    source = sources(write_tick_export(tmp_path / "EURUSD_ticks.csv", 60_000))
    played = play_all(source)
    parsed = source.index.rows_parsed
    got = source.tick_range("EURUSD", played[-2000].time_msc, played[-1].time_msc, MAX_TICKS)
    assert got == expected(played, "EURUSD", played[-2000].time_msc, played[-1].time_msc, MAX_TICKS)
    cost = source.index.rows_parsed - parsed
    assert len(got) <= cost <= len(got) + SPACING + 10
    print(f"\n{len(got)} ticks at the end of a {source.index.rows}-row file: {cost} rows parsed, "
          f"{source.index.entries} index entries")


def test_ranges_never_hold_what_was_not_played_even_inside_a_bar(sources, tmp_path):
    path = write_bar_export(tmp_path / "EURUSD_M1_202401020000.csv", 2500)
    source = sources(path, speed=1)
    played = play_until(source, 0)  # the clock starts at the first tick
    played += play_until(source, 30_001)  # 30 s into the file: the first bar's first ticks
    assert played and played[-1].time_msc - played[0].time_msc <= 30_000 and source.playing
    assert source.tick_range("EURUSD", 0, 2**50, MAX_TICKS) == played
    played += play_until(source, SPACING * 60_000 + 20_000)  # past the first index entry, inside a bar
    assert source.tick_range("EURUSD", 0, 2**50, MAX_TICKS) == played[:MAX_TICKS]
    tail = played[-50].time_msc
    assert source.tick_range("EURUSD", tail, 2**50, MAX_TICKS) == played[-50:]
    # Only closed bars: the one forming at the clock is not.
    bars = source.candle_range("EURUSD", timeframe("M1"), 0, 2**40, 100_000)
    assert bars[-1].time * 1000 + 60_000 <= played[-1].time_msc < bars[-1].time * 1000 + 120_000


def aggregated(ticks: list[Tick], point: float, tf: str, upto_ms: int) -> list:
    """Closed bars as the engine builds them from ``ticks`` (its aggregation, its clock)."""
    agg = CandleAggregator(ticks[0].symbol, point, [timeframe(tf)], 10, close_grace_ms=0)
    out = [c for t in ticks for c, closed in agg.on_tick(t) if closed]
    return out + [c for c, closed in agg.on_time(upto_ms) if closed]


def test_candle_ranges_of_a_bar_file_are_its_bars_and_their_aggregates(sources, tmp_path):
    path = write_bar_export(tmp_path / "EURUSD_M1_202401020000.csv", 2500)
    source = sources(path)
    played = play_all(source)
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    file_bars = [(calendar.timegm(time.strptime(f"{r[0]} {r[1]}", "%Y.%m.%d %H:%M:%S")), *map(float, r[2:6]), int(r[8]))
                 for r in rows]
    m1 = source.candle_range("EURUSD", timeframe("M1"), 0, 2**40, 100_000)
    # Every bar but the last (no tick after it closes it), with the file's prices and spread.
    assert [(c.time, c.open, c.high, c.low, c.close, c.spread) for c in m1] == file_bars[:-1]
    h1 = source.candle_range("EURUSD", timeframe("H1"), 0, 2**40, 100_000)
    assert [(c.time, c.open, c.high, c.low, c.close) for c in h1] == [
        (hour[0][0], hour[0][1], max(b[2] for b in hour), min(b[3] for b in hour), hour[-1][4])
        for hour in (
            [b for b in file_bars if b[0] // 3600 == h] for h in sorted({b[0] // 3600 for b in file_bars})[:-1])]
    # A window in the middle, from a time inside a bar: the bars opening in it, at most count.
    lo = file_bars[1500][0] + 30
    middle = source.candle_range("EURUSD", timeframe("M1"), lo, file_bars[1600][0], 40)
    assert [c.time for c in middle] == [b[0] for b in file_bars[1501:1541]]
    assert source.candle_range("EURUSD", timeframe("M1"), 0, file_bars[0][0] - 1, 10) == []
    assert source.candle_range("GBPUSD", timeframe("M1"), 0, 2**40, 10) == []
    assert m1 == aggregated(played, source.symbols()[0].point, "M1", played[-1].time_msc)


def test_candle_ranges_of_a_tick_file_are_the_engines_bars_of_its_ticks(sources, tmp_path):
    source = sources(write_csv(tmp_path / "ticks.csv", 12000))
    played = play_all(source)
    for symbol in ("EURUSD", "USDJPY"):
        own = [t for t in played if t.symbol == symbol]
        bars = aggregated(own, source.symbols()[0].point, "M1", played[-1].time_msc)
        assert len(bars) > 10
        got = source.candle_range(symbol, timeframe("M1"), bars[3].time, bars[-2].time, 1000)
        assert got == bars[3:-1]


def test_a_corrupt_row_fails_only_the_ranges_that_reach_it(sources, tmp_path):
    path = write_tick_export(tmp_path / "EURUSD_ticks.csv", 6000, bad_line=4000)
    source = sources(path)
    played = []
    with pytest.raises(SourceError, match=r"EURUSD_ticks.csv:4000: malformed row"):
        for _ in range(100):
            played += source.poll(0)
    before = played[-1].time_msc - 1  # read up to the last good tick, not to the bad row
    assert source.tick_range("EURUSD", 0, before, MAX_TICKS) == expected(played, "EURUSD", 0, before, MAX_TICKS)
    for lo in (played[-10].time_msc, played[-1].time_msc + 1):  # reaching the bad row
        with pytest.raises(SourceError, match=r"EURUSD_ticks.csv:4000: malformed row"):
            source.tick_range("EURUSD", lo, 2**50, MAX_TICKS)
    assert source.tick_range("EURUSD", 2**49, 2**50, 10) == []  # past it: never played
    with pytest.raises(SourceError, match=r"EURUSD_ticks.csv:4000: malformed row"):
        source.candle_range("EURUSD", timeframe("M1"), played[-10].time_msc // 1000 - 600, 2**40, 10)


# -- through the engine: ranges equal what a subscriber saw ----------------------------------


def stripped(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in ("seq", "epoch")}


def replay_engine(start_engine, path: Path, *extra: str):
    return start_engine("--source", "replay", "--replay-file", str(path), "--replay-speed", "0",
                        "--replay-start", "paused", "--timeframes", "M1,H1", "--tick-journal", "500",
                        "--max-candles", str(MEMORY), *extra)


def watch_replay(engine, prefixes: list[str]) -> list[dict]:
    """Start the paused replay with a subscriber on ``prefixes``; everything it saw."""
    with Subscriber(engine.bus, prefixes) as sub, RpcClient(engine.rpc) as rpc:
        deadline = time.monotonic() + 10
        while rpc.health()["bus_subscription_bytes"] < sum(map(len, prefixes)):
            assert time.monotonic() < deadline, "the subscription never reached the engine"
            time.sleep(0.05)
        rpc.call("replay", action="start")
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = sub.recv(timeout_ms=500)
            if message is None and rpc.call("replay", action="status")["state"] == "finished":
                break
            if message is not None:
                seen.append(message.data)
    return seen


def all_ticks(rpc: RpcClient, lo: int, hi: int) -> list[dict]:
    """Every tick stamped ``lo..hi``, MAX_TICKS a request; a millisecond a full reply cuts
    comes again whole with the next."""
    got: list[dict] = []
    while True:
        page = rpc.ticks("EURUSD", lo, hi)
        if len(page) < MAX_TICKS:
            return got + page
        page = [t for t in page if t["time_msc"] < page[-1]["time_msc"]]
        got, lo = got + page, page[-1]["time_msc"] + 1


def windows(first: int, last: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + step - 1, last)) for lo in range(first, last + 1, step)]


def in_window(seen: list[dict], lo: int, hi: int) -> list[dict]:
    return [stripped(m) for m in seen if "bid" in m and lo <= m["time_msc"] <= hi]


@pytest.mark.parametrize("kind", ["tick export", "bar export"])
def test_ranges_from_the_file_equal_what_a_subscriber_saw(kind, start_engine, tmp_path):
    engine = replay_engine(start_engine, FILES[kind](tmp_path))
    seen = watch_replay(engine, ["tick:EURUSD:", "candle:EURUSD:"])
    ticks = in_window(seen, 0, 2**62)
    with RpcClient(engine.rpc) as rpc:
        status = rpc.call("replay", action="status")
        assert ticks and status["position"] == status["total"]
        # Most are older than the 500 journaled: read from the file.
        assert all_ticks(rpc, 0, ticks[-1]["time_msc"]) == ticks
        lo, hi = ticks[len(ticks) // 3]["time_msc"], ticks[len(ticks) // 2]["time_msc"]
        assert rpc.ticks("EURUSD", lo, hi) == in_window(seen, lo, hi)
        for tf, seconds in (("M1", 60), ("H1", 3600)):
            closed = [stripped(m) for m in seen if m.get("timeframe") == tf and m.get("closed")]
            bars = [bar for lo, hi in windows(closed[0]["time"], closed[-1]["time"], MEMORY * seconds)
                    for bar in rpc.candle_range("EURUSD", tf, lo, hi)]
            assert bars == closed, tf
            assert len(closed) > MEMORY or tf == "H1" and kind == "tick export"  # some from the file
        with pytest.raises(BadRequest, match="is after"):
            rpc.ticks("EURUSD", ticks[-1]["time_msc"], ticks[0]["time_msc"])
        with pytest.raises(BadRequest, match="is after"):
            rpc.candle_range("EURUSD", "M1", closed[-1]["time"], closed[0]["time"])


def damage(path: Path, from_line: int) -> int:
    """Overwrite the bid of the first row from ``from_line`` on that has one, in place (the
    file keeps its length, so the index still points at its rows); that row's line number."""
    lines = path.read_bytes().split(b"\n")
    line = next(n for n in range(from_line, len(lines)) if lines[n - 1].split(b"\t")[2])
    fields = lines[line - 1].split(b"\t")
    fields[2] = b"x" * len(fields[2])
    lines[line - 1] = b"\t".join(fields)
    path.write_bytes(b"\n".join(lines))
    return line


def test_a_corrupt_region_is_an_unavailable_error_naming_its_line_and_nothing_else_stops(start_engine, tmp_path):
    path = write_tick_export(tmp_path / "EURUSD_ticks.csv", 6000)
    engine = replay_engine(start_engine, path)
    seen = in_window(watch_replay(engine, ["tick:EURUSD:"]), 0, 2**62)
    line = damage(path, 3000)  # after it was played: the file on disk is no longer what played
    with RpcClient(engine.rpc) as rpc:
        for _ in range(2):
            with pytest.raises(Unavailable, match=rf"EURUSD_ticks.csv:{line}: malformed row"):
                rpc.ticks("EURUSD", seen[100]["time_msc"], seen[-1]["time_msc"])
        # The ranges before it, and the rest of the engine, go on answering.
        lo, hi = seen[100]["time_msc"], seen[1500]["time_msc"]
        assert rpc.ticks("EURUSD", lo, hi) == in_window(seen, lo, hi)
        assert rpc.health()["source_finished"] is True
        assert len(rpc.candles("EURUSD", "M1", 5)) == 5


def test_a_recordings_ranges_equal_what_it_played_and_skip_the_dates_before_them(sources, tmp_path):
    """A recording directory: ranges read from the date they start on (the files' row counts
    number the ticks before it), and never hold a tick not played yet. Both symbols tick at
    the same times."""
    day_ms, t0 = 86_400_000, START_S * 1000
    ticks = sorted((Tick(symbol, t0 + day * day_ms + k * 600_000 + offset, round(1.1 + k * 1e-5, 5),
                         round(1.1002 + k * 1e-5, 5), 0.0, 0, 6, 0.0)
                    for day in range(4) for k in range(100) for symbol, offset in (("EURUSD", 0), ("GBPUSD", 0))),
                   key=lambda t: t.time_msc)
    record(tmp_path, ticks, [])
    source = sources(tmp_path, batch=49)
    played: list[Tick] = []
    while len(played) < 500:  # into the third day, a batch at a time
        played += source.poll(0)
    # Stopped between the two symbols' ticks of one time: only the place in the play tells
    # the played one from the other.
    assert len(played) % 2 == 1 and played[-1].symbol == "EURUSD" and len(played) < len(ticks)
    reader = source._replay.file
    assert source.tick_range("EURUSD", 0, 2**50, MAX_TICKS) == expected(played, "EURUSD", 0, 2**50, MAX_TICKS)
    lo = t0 + day_ms + 1  # from the second day: numbered after the first day's rows, so cut where play is
    assert source.tick_range("GBPUSD", lo, 2**50, MAX_TICKS) == expected(played, "GBPUSD", lo, 2**50, MAX_TICKS)
    played += play_all(source)
    assert played == ticks
    read = reader.partitions_read
    lo, hi = t0 + 3 * day_ms + 5 * 600_000, t0 + 3 * day_ms + 50 * 600_000
    assert source.tick_range("GBPUSD", lo, hi, MAX_TICKS) == expected(played, "GBPUSD", lo, hi, MAX_TICKS)
    assert reader.partitions_read - read == 2  # the last day's two symbols, nothing before
    for symbol in ("EURUSD", "GBPUSD"):  # across a midnight, cut by count
        lo = t0 + day_ms - 3 * 600_000
        assert source.tick_range(symbol, lo, 2**50, 20) == expected(played, symbol, lo, 2**50, 20)
