"""The replay source: MT5 bar and tick exports, plain CSV, speed factor, bad files."""
from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.models import Tick
from engine.sources.base import SourceError
from engine.sources.replay import (
    ReplaySource,
    bar_is_bullish,
    bar_ticks,
    decimals,
    detect_format,
    parse_clock,
    parse_date,
    symbol_from_filename,
    timeframe_from_filename,
)

DATA = Path(__file__).parent / "data"
M1_EXPORT = DATA / "EURUSD_M1_202401020000_202401020008.csv"
D1_EXPORT = DATA / "GBPUSD_daily.csv"
TICK_EXPORT = DATA / "EURUSD.m_ticks.csv"
PLAIN_CSV = DATA / "ticks_multi.csv"
DAY = calendar.timegm((2024, 1, 2, 0, 0, 0)) * 1000  # 2024.01.02 00:00 in ms
BID_ASK = 6


def make(path: Path, speed: float = 0, symbol: str = "", batch: int = 1000) -> ReplaySource:
    config = EngineConfig(source="replay", replay_file=str(path), replay_speed=speed,
                          replay_symbol=symbol)
    return ReplaySource(config, batch=batch)


@pytest.fixture
def started():
    sources: list[ReplaySource] = []

    def start(path: Path, **kwargs: object) -> ReplaySource:
        source = make(path, **kwargs)  # type: ignore[arg-type]
        sources.append(source)
        source.start()
        return source

    yield start
    for source in sources:
        source.stop()


def play_all(source: ReplaySource) -> list[Tick]:
    ticks: list[Tick] = []
    for _ in range(10_000):
        if source.finished:
            return ticks
        ticks.extend(source.poll(0))
    raise AssertionError("the replay never finished")


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


# -- pure pieces ---------------------------------------------------------------------------


def test_detect_format_tells_the_three_kinds_apart() -> None:
    bars = "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\r\n"
    kind, sep, cols = detect_format(bars)
    assert (kind, sep, cols["TIME"], cols["SPREAD"]) == ("bars", "\t", 1, 8)
    assert detect_format("<DATE>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>")[0] == "bars"
    assert detect_format("<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>")[0] == "ticks"
    kind, sep, cols = detect_format("symbol,time_msc,bid,ask\n")
    assert (kind, sep, cols) == ("csv", ",", {"symbol": 0, "time_msc": 1, "bid": 2, "ask": 3})
    with pytest.raises(ValueError, match="unknown header"):
        detect_format("time,price\n")


def test_row_field_parsers() -> None:
    assert parse_date("2024.01.02") * 1000 == DAY
    assert parse_clock("00:00:00") == 0
    assert parse_clock("13:05:09.123") == ((13 * 60 + 5) * 60 + 9) * 1000 + 123
    assert parse_clock("13:05:09.5") == ((13 * 60 + 5) * 60 + 9) * 1000 + 500
    assert parse_clock("13:05") == (13 * 60 + 5) * 60 * 1000
    for bad in ("25:00:00", "1:00:00", "12:00:0x"):
        with pytest.raises(ValueError):
            parse_clock(bad)
    with pytest.raises(ValueError):
        parse_date("2024.1.2")
    assert [decimals(s) for s in ("1.10390", "1.1", "110", "2063.85")] == [5, 1, 0, 2]


def test_symbol_and_timeframe_come_from_mt5_export_names() -> None:
    assert symbol_from_filename("EURUSD_M1_202401020000_202401312359.csv") == "EURUSD"
    assert symbol_from_filename("/x/EURUSD.m_ticks.csv") == "EURUSD.m"
    assert symbol_from_filename("US30.cash.csv") == "US30.cash"
    assert symbol_from_filename("EURUSD.m") == "EURUSD.m"  # no known extension to strip
    assert timeframe_from_filename("EURUSD_H4_2024.csv").name == "H4"
    assert timeframe_from_filename("EURUSD_M15.csv").name == "M15"
    assert timeframe_from_filename("EURUSD_202401020000_202401312359.csv") is None


def test_bar_ticks_follow_the_tester_order() -> None:
    bull = bar_ticks("X", 60_000, 60_000, 1.0, 1.5, 0.5, 1.2, 0.1, 1, bullish=True)
    assert [(t.time_msc, t.bid, t.ask) for t in bull] == [
        (60_000, 1.0, 1.1), (75_000, 0.5, 0.6), (90_000, 1.5, 1.6), (105_000, 1.2, 1.3)]
    bear = bar_ticks("X", 0, 60_000, 1.2, 1.5, 0.5, 1.0, 0.0, 1, bullish=False)
    assert [t.bid for t in bear] == [1.2, 1.5, 0.5, 1.0]
    # A price equal to the one before is no new tick: open at the low, a flat bar.
    assert [t.bid for t in bar_ticks("X", 0, 60_000, 1.0, 1.5, 1.0, 1.2, 0.0, 1, True)] == [
        1.0, 1.5, 1.2]
    assert len(bar_ticks("X", 0, 60_000, 1.0, 1.0, 1.0, 1.0, 0.0, 1, True)) == 1
    assert bar_is_bullish(1.0, 1.1, previous_bullish=False)
    assert not bar_is_bullish(1.1, 1.0, previous_bullish=True)
    assert bar_is_bullish(1.0, 1.0, previous_bullish=False)  # doji: against the bar before
    assert not bar_is_bullish(1.0, 1.0, previous_bullish=True)


# -- formats ---------------------------------------------------------------------------------


def read_bar_export(path: Path) -> list[tuple]:
    """The test's own reading of the export: (open ms, O, H, L, C, spread)."""
    rows = []
    for line in path.read_text().splitlines()[1:]:
        d, t, o, h, low, c, _, _, spread = line.split("\t")
        y, mo, dd = map(int, d.split("."))
        hh, mm, ss = map(int, t.split(":"))
        ms = calendar.timegm((y, mo, dd, hh, mm, ss)) * 1000
        rows.append((ms, float(o), float(h), float(low), float(c), int(spread)))
    return rows


def aggregate(ticks: list[Tick], length_ms: int, point: float) -> list[tuple]:
    """A tiny bid-OHLC aggregation (spread in points, as the engine computes it)."""
    bars: dict[int, list] = {}
    for t in ticks:
        start = t.time_msc - t.time_msc % length_ms
        spread = round((t.ask - t.bid) / point)
        if start not in bars:
            bars[start] = [start, t.bid, t.bid, t.bid, t.bid, spread, 0]
        bar = bars[start]
        bar[2], bar[3], bar[4] = max(bar[2], t.bid), min(bar[3], t.bid), t.bid
        bar[6] += 1
        assert spread == bar[5]
    return [tuple(b) for b in bars.values()]


def test_bar_export_replays_as_ticks_that_reaggregate_to_the_bars(started) -> None:
    source = started(M1_EXPORT)
    (info,) = source.symbols()
    assert (info.name, info.digits, info.point) == ("EURUSD", 5, 1e-05)
    assert source.history("EURUSD", None, 10) == []
    ticks = play_all(source)
    assert all(a.time_msc < b.time_msc for a, b in zip(ticks, ticks[1:]))
    bars = aggregate(ticks, 60_000, info.point)
    assert [b[:6] for b in bars] == read_bar_export(M1_EXPORT)
    # tick_volume counts the synthetic ticks: 1 for the flat bar, 3 when open == low.
    assert [b[6] for b in bars] == [4, 4, 4, 1, 3, 4, 4, 4]
    # 00:02 is a doji after a bearish bar: played as bullish, low first.
    assert [t.bid for t in ticks if DAY + 120_000 <= t.time_msc < DAY + 180_000] == [
        1.10376, 1.10366, 1.10390, 1.10376]


def test_d1_export_without_time_column_spreads_ticks_over_the_day(started) -> None:
    source = started(D1_EXPORT)
    assert source.symbols()[0].name == "GBPUSD"
    ticks = play_all(source)
    hours = [(t.time_msc - DAY) / 3_600_000 for t in ticks[:4]]
    assert hours == [0, 6, 12, 18]
    bars = aggregate(ticks, 86_400_000, 1e-5)
    assert [(b[0], b[1], b[2], b[3], b[4], b[5]) for b in bars] == [
        (DAY, 1.27310, 1.27582, 1.26102, 1.26150, 12),
        (DAY + 86_400_000, 1.26150, 1.26541, 1.26111, 1.26512, 11),
        (DAY + 2 * 86_400_000, 1.26512, 1.27121, 1.26410, 1.27002, 12),
    ]


def test_tick_export_carries_blank_bid_and_ask(started) -> None:
    source = started(TICK_EXPORT)
    (info,) = source.symbols()
    assert (info.name, info.digits) == ("EURUSD.m", 5)
    s = "EURUSD.m"
    assert play_all(source) == [
        # The first row has no bid yet: skipped.
        Tick(s, DAY + 123, 1.10391, 1.10401, 0.0, 0, BID_ASK),
        Tick(s, DAY + 123, 1.10392, 1.10401, 0.0, 0, 2),
        Tick(s, DAY + 1005, 1.10392, 1.10405, 0.0, 0, 4),
        Tick(s, DAY + 1900, 1.10388, 1.10399, 0.0, 0, BID_ASK),
        Tick(s, DAY + 59_999, 1.10380, 1.10399, 0.0, 0, 2),  # blank FLAGS: inferred
        Tick(s, DAY + 60_000, 1.10381, 1.10390, 0.0, 0, BID_ASK),
        Tick(s, DAY + 60_250, 1.10381, 1.10390, 1.10385, 3, 24, 3.0),
    ]


def test_tick_export_volume_is_the_real_volume_and_its_whole_part(tmp_path, started) -> None:
    path = write(tmp_path, "BTCUSD_ticks.csv", (
        "<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>\n"
        "2024.01.02\t00:00:00.100\t42000.5\t42001.0\t\t\t6\n"
        "2024.01.02\t00:00:00.200\t\t\t42000.8\t0.25\t24\n"
        "2024.01.02\t00:00:00.300\t\t\t42000.9\t2.5\t24\n"))
    assert [(t.last, t.volume, t.volume_real) for t in play_all(started(path))] == [
        (0.0, 0, 0.0), (42000.8, 0, 0.25), (42000.9, 2, 2.5)]


def test_replay_symbol_names_the_symbol_of_an_mt5_export(started) -> None:
    source = started(TICK_EXPORT, symbol="EURUSD")
    assert source.symbols()[0].name == "EURUSD"
    assert {t.symbol for t in play_all(source)} == {"EURUSD"}


def test_plain_csv_with_several_symbols(started) -> None:
    source = started(PLAIN_CSV)
    infos = [(i.name, i.digits) for i in source.symbols()]
    assert infos == [("EURUSD", 5), ("USDJPY", 3), ("XAUUSD", 2)]
    t0 = 1704153600100
    assert play_all(source) == [
        Tick("EURUSD", t0, 1.10391, 1.10401, 0.0, 0, BID_ASK),
        Tick("USDJPY", t0 + 50, 141.012, 141.025, 0.0, 0, BID_ASK),
        Tick("EURUSD", t0 + 50, 1.10392, 1.10402, 0.0, 0, 2),
        Tick("XAUUSD", t0 + 900, 2063.5, 2063.85, 0.0, 0, BID_ASK),
        Tick("USDJPY", t0 + 900, 141.013, 141.026, 0.0, 0, BID_ASK),
        Tick("EURUSD", t0 + 59_900, 1.1039, 1.104, 1.10395, 2, 30, 2.0),
    ]


def test_utf16_export_is_read(tmp_path, started) -> None:
    text = M1_EXPORT.read_text()
    path = write(tmp_path, "EURUSD_M1_utf16.csv", text, encoding="utf-16")
    assert play_all(started(path)) == play_all(started(M1_EXPORT))


# -- speed -------------------------------------------------------------------------------------


def test_real_time_replay_follows_the_wall_clock(started) -> None:
    source = started(TICK_EXPORT, speed=1)
    wall = 5_000_000
    first = source.poll(wall)
    assert [t.time_msc for t in first] == [DAY + 123, DAY + 123]
    assert source.market_time(wall) == DAY + 123
    assert source.next_due(wall) == 1005 - 123
    assert source.poll(wall + 881) == []
    assert source.market_time(wall + 881) == DAY + 1004
    assert [t.time_msc for t in source.poll(wall + 882)] == [DAY + 1005]
    assert [t.time_msc for t in source.poll(wall + 60_000)] == [
        DAY + 1900, DAY + 59_999, DAY + 60_000]
    assert not source.finished
    assert [t.time_msc for t in source.poll(wall + 60_127)] == [DAY + 60_250]
    assert source.finished
    # The clock keeps running after the end, so the last bars close.
    assert source.market_time(wall + 120_000) == DAY + 123 + 120_000


def test_speed_factor_scales_the_waits(started) -> None:
    source = started(TICK_EXPORT, speed=10)
    wall = 1_000
    assert len(source.poll(wall)) == 2
    assert source.next_due(wall) == 89  # 882 ms of file time at 10x, rounded up
    assert source.poll(wall + 88) == []
    assert [t.time_msc for t in source.poll(wall + 89)] == [DAY + 1005]
    assert source.market_time(wall + 100) == DAY + 123 + 1000


def test_max_speed_delivers_batches_and_the_clock_is_the_last_tick(started) -> None:
    source = started(M1_EXPORT, speed=0, batch=5)
    assert source.next_due(0) == 0
    first = source.poll(0)
    assert len(first) == 5
    assert source.market_time(123_456) == first[-1].time_msc
    rest = play_all(source)
    assert len(first) + len(rest) == 28
    assert source.finished
    assert source.market_time(0) == rest[-1].time_msc
    assert source.poll(0) == []


# -- bad files -------------------------------------------------------------------------------


def test_missing_file(tmp_path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        make(tmp_path / "nope.csv").start()


def test_unknown_header_names_what_is_expected(tmp_path) -> None:
    path = write(tmp_path, "x.csv", "time,price\n1,2\n")
    with pytest.raises(SourceError, match=r"x\.csv:1: unknown header .*<DATE>"):
        make(path).start()


def test_malformed_row_is_reported_with_its_line_number(tmp_path, started) -> None:
    lines = TICK_EXPORT.read_text().splitlines()
    lines.insert(4, "2024.01.02\t00:00:00.900\t1.10x91\t1.10401\t\t\t6")
    path = write(tmp_path, "EURUSD_ticks.csv", "\n".join(lines) + "\n")
    source = started(path)
    good = source.poll(0)  # the rows before the bad one are still played
    assert [t.time_msc for t in good] == [DAY + 123, DAY + 123]
    with pytest.raises(SourceError, match=r"EURUSD_ticks\.csv:5: malformed row .*1\.10x91"):
        source.poll(0)


def test_malformed_bar_is_reported_with_its_line_number(tmp_path, started) -> None:
    lines = M1_EXPORT.read_text().splitlines()
    lines[3] = lines[3].replace("1.10390", "1.1O390")
    path = write(tmp_path, "EURUSD_M1_bad.csv", "\n".join(lines))
    source = started(path)
    with pytest.raises(SourceError, match=r":4: malformed row"):
        play_all(source)


def test_bar_whose_prices_break_high_low_is_refused(tmp_path) -> None:
    header = M1_EXPORT.read_text().splitlines()[0]
    path = write(tmp_path, "EURUSD_M1_x.csv",
                 header + "\n2024.01.02\t00:00:00\t1.2\t1.1\t1.0\t1.05\t1\t0\t1\n")
    with pytest.raises(SourceError, match=r":2: malformed row .*low <= open"):
        make(path).start()  # the first tick is read at start


def test_time_going_back_is_refused(tmp_path, started) -> None:
    path = write(tmp_path, "t.csv", "symbol,time_msc,bid,ask\nA,2000,1.0,1.1\nB,1999,1.0,1.1\n")
    source = started(path)
    with pytest.raises(SourceError, match=r"t\.csv:3: time goes back"):
        play_all(source)


def test_file_without_ticks_is_refused(tmp_path) -> None:
    path = write(tmp_path, "EURUSD_M1.csv", M1_EXPORT.read_text().splitlines()[0] + "\n")
    with pytest.raises(SourceError, match="holds no ticks"):
        make(path).start()


def test_symbol_unfit_for_a_topic_is_refused(tmp_path) -> None:
    path = write(tmp_path, "t.csv", "symbol,time_msc,bid,ask\nEUR:USD,2000,1.0,1.1\n")
    with pytest.raises(SourceError, match=r"t\.csv:2: .*contains ':'"):
        make(path).start()
