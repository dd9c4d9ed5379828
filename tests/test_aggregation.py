import calendar

import pytest

from engine.aggregation import CandleAggregator
from engine.models import Candle, Tick
from engine.timeframes import TIMEFRAMES, timeframe

POINT = 0.00001


def ts(*ymdhms) -> int:
    """UTC seconds for (Y, M, D, h, m, s)."""
    return calendar.timegm((*ymdhms, 0, 0, 0))


def tick(t_ms: int, bid: float, spread_points: int = 10, symbol: str = "EURUSD") -> Tick:
    return Tick(symbol, t_ms, bid, round(bid + spread_points * POINT, 5))


def agg(*tfs: str, throttle: int = 250, grace: int = 1000) -> CandleAggregator:
    return CandleAggregator("EURUSD", POINT, [TIMEFRAMES[t] for t in tfs], 100, throttle, grace)


@pytest.mark.parametrize(
    "name, t, expected",
    [
        ("M1", ts(2026, 3, 5, 10, 7, 59), ts(2026, 3, 5, 10, 7, 0)),
        ("M5", ts(2026, 3, 5, 10, 7, 59), ts(2026, 3, 5, 10, 5, 0)),
        ("H1", ts(2026, 3, 5, 10, 0, 0), ts(2026, 3, 5, 10, 0, 0)),
        ("H4", ts(2026, 3, 5, 10, 0, 0), ts(2026, 3, 5, 8, 0, 0)),
        ("D1", ts(2026, 3, 5, 23, 59, 59), ts(2026, 3, 5, 0, 0, 0)),
        ("D1", ts(2026, 3, 6, 0, 0, 0), ts(2026, 3, 6, 0, 0, 0)),
        ("W1", ts(2026, 3, 5, 12, 0, 0), ts(2026, 3, 1, 0, 0, 0)),  # a Thursday -> Sunday
        ("W1", ts(2026, 3, 1, 0, 0, 0), ts(2026, 3, 1, 0, 0, 0)),
        ("MN1", ts(2026, 3, 31, 23, 59, 59), ts(2026, 3, 1, 0, 0, 0)),
        ("MN1", ts(2026, 12, 15, 0, 0, 0), ts(2026, 12, 1, 0, 0, 0)),
    ],
)
def test_bars_align_to_utc_boundaries(name, t, expected):
    assert timeframe(name).bar_open(t) == expected


def test_next_open_handles_month_and_year_ends():
    mn1 = timeframe("MN1")
    assert mn1.next_open(ts(2026, 12, 1, 0, 0, 0)) == ts(2027, 1, 1, 0, 0, 0)
    assert mn1.next_open(ts(2028, 2, 1, 0, 0, 0)) == ts(2028, 3, 1, 0, 0, 0)
    assert timeframe("W1").next_open(ts(2026, 3, 1, 0, 0, 0)) == ts(2026, 3, 8, 0, 0, 0)


def test_unknown_timeframe_names_the_valid_ones():
    with pytest.raises(KeyError, match="M1"):
        timeframe("M7")


def test_ohlc_from_bid_volume_counts_ticks_spread_is_the_minimum():
    a = agg("M1")
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    for i, (bid, spread) in enumerate([(1.1, 12), (1.3, 9), (0.9, 15), (1.2, 11)]):
        a.on_tick(tick(t0 + i * 1000, bid, spread))
    bar = a.forming("M1")
    assert (bar.open, bar.high, bar.low, bar.close) == (1.1, 1.3, 0.9, 1.2)
    assert bar.tick_volume == 4
    assert bar.spread == 9
    assert bar.time == t0 // 1000


def test_a_tick_exactly_on_the_boundary_opens_the_next_bar_and_closes_the_previous_once():
    a = agg("M1", "D1")
    day_end = ts(2026, 3, 6, 0, 0, 0) * 1000
    a.on_tick(tick(day_end - 1, 1.1))
    events = a.on_tick(tick(day_end, 1.2))
    closed = [(c.timeframe, c.time, c.close) for c, is_closed in events if is_closed]
    assert closed == [("M1", day_end // 1000 - 60, 1.1), ("D1", day_end // 1000 - 86400, 1.1)]
    forming = [(c.timeframe, c.time) for c, is_closed in events if not is_closed]
    assert forming == [("M1", day_end // 1000), ("D1", day_end // 1000)]
    # The clock passing the new bars' ends later closes them, not the old ones again.
    later = a.on_time(day_end + 120_000)
    assert [(c.timeframe, c.time) for c, is_closed in later if is_closed] == [("M1", day_end // 1000)]


def test_each_closed_bar_is_emitted_exactly_once():
    a = agg("M1", "M5", throttle=0)
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    closed = []
    for i in range(0, 20 * 60):  # 20 minutes, a tick every second
        closed += [(c.timeframe, c.time) for c, done in a.on_tick(tick(t0 + i * 1000, 1.1 + i * 1e-5)) if done]
        closed += [(c.timeframe, c.time) for c, done in a.on_time(t0 + i * 1000) if done]
    closed += [(c.timeframe, c.time) for c, done in a.on_time(t0 + 3600_000) if done]
    assert len(closed) == len(set(closed)) == 20 + 4
    assert [t for tf, t in closed if tf == "M1"] == [t0 // 1000 + 60 * i for i in range(20)]


def test_quiet_market_closes_the_bar_after_the_grace_period():
    a = agg("M1", grace=500)
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    a.on_tick(tick(t0 + 100, 1.1))
    assert a.on_time(t0 + 60_000 + 499) == []
    events = a.on_time(t0 + 60_000 + 500)
    assert [(c.time, done) for c, done in events] == [(t0 // 1000, True)]
    assert a.forming("M1") is None
    # A tick for the bar already closed by the clock is late: counted, not folded in.
    assert a.on_tick(tick(t0 + 59_000, 1.5)) == []
    assert a.late_ticks == 1
    assert a.candles("M1", 5)[-1].high == 1.1


def test_forming_updates_are_throttled_and_flushed_when_due():
    a = agg("M1", throttle=250)
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    first = a.on_tick(tick(t0, 1.1))
    assert [done for _, done in first] == [False]  # a new bar is announced at once
    assert a.on_tick(tick(t0 + 100, 1.2)) == []
    assert a.on_tick(tick(t0 + 200, 1.3)) == []
    emitted = a.on_tick(tick(t0 + 250, 1.4))
    assert [(c.close, done) for c, done in emitted] == [(1.4, False)]
    assert a.on_tick(tick(t0 + 300, 1.5)) == []
    assert a.on_time(t0 + 400) == []
    flushed = a.on_time(t0 + 500)
    assert [(c.close, done) for c, done in flushed] == [(1.5, False)]
    assert a.on_time(t0 + 900) == []  # nothing new to flush


def test_seeded_history_continues_with_live_ticks():
    a = agg("M1")
    t0 = ts(2026, 3, 5, 10, 0, 0)
    history = [Candle("EURUSD", "M1", t0 + 60 * i, 1.0, 1.1, 0.9, 1.05, 10, 8) for i in range(3)]
    a.seed("M1", history)
    assert a.candles("M1", 10) == history
    events = a.on_tick(tick((t0 + 120) * 1000 + 500, 1.2))  # still inside the seeded forming bar
    assert events == [] or all(not done for _, done in events)
    assert a.forming("M1").high == 1.2 and a.forming("M1").tick_volume == 11
    events = a.on_tick(tick((t0 + 180) * 1000, 1.3))
    assert [(c.time, done) for c, done in events] == [(t0 + 120, True), (t0 + 180, False)]
    assert [c.time for c in a.candles("M1", 2)] == [t0 + 120, t0 + 180]


def test_history_is_bounded_by_max_candles():
    a = CandleAggregator("EURUSD", POINT, [TIMEFRAMES["M1"]], max_candles=5)
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    for i in range(12):
        a.on_tick(tick(t0 + i * 60_000, 1.0 + i / 100))
    bars = a.candles("M1", 100)
    assert len(bars) == 6  # 5 closed + the forming one
    assert bars[-1].time == (t0 + 11 * 60_000) // 1000
