import calendar
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.aggregation import CandleAggregator
from engine.candle_store import COLUMNS, Bars, CandleRing
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


# The closed-bar ring buffer: compact storage, same bars as the Candle objects it replaced.
def candle(i: int, point_digits: int = 5, **fields) -> Candle:
    base = round(1.0 + i / 10 ** (point_digits - 1), point_digits)
    values = dict(open=base, high=round(base + 0.002, point_digits), low=round(base - 0.001, point_digits),
                  close=round(base + 0.001, point_digits), tick_volume=10 + i, spread=8, real_volume=0)
    time = fields.pop("time", 1_790_000_040 + 60 * i)
    values.update(fields)
    return Candle("EURUSD", "M1", time, **values)


def fields_of(c: Candle) -> tuple:
    return tuple(getattr(c, f) for f in COLUMNS)


def test_ring_keeps_the_newest_capacity_bars_oldest_first_across_wrap_around():
    ring = CandleRing(5, POINT)
    bars = [candle(i) for i in range(12)]
    for i, c in enumerate(bars):
        ring.append(c)
        kept = bars[max(0, i - 4):i + 1]
        assert len(ring) == len(kept)
        assert [ring.row(k) for k in range(len(ring))] == [fields_of(b) for b in kept]
    assert ring.last(3).payloads("EURUSD", "M1", True) == [b.to_payload(True) for b in bars[-3:]]
    assert ring.last(100).rows() == [fields_of(b) for b in bars[-5:]]
    assert ring.row(-1) == fields_of(bars[-1]) and ring.row(-5) == fields_of(bars[-5])
    with pytest.raises(IndexError):
        ring.row(5)


def test_ring_seeded_with_a_few_bars_grows_to_capacity_then_wraps():
    ring = CandleRing(20, POINT)
    bars = [candle(i) for i in range(30)]
    ring.load(Bars.from_candles(bars[:2]))
    for c in bars[2:]:
        ring.append(c)
    assert ring.last(20).candles("EURUSD", "M1") == bars[-20:]
    ring.load(Bars.from_candles(bars))  # loading more than fits keeps the newest
    assert ring.last(50).candles("EURUSD", "M1") == bars[-20:]


def test_ring_payloads_equal_the_candles_payloads_for_every_digits():
    for digits, point, price in ((5, 1e-5, 1.08501), (3, 1e-3, 149.503), (2, 1e-2, 65000.01), (0, 1.0, 40215.0)):
        bars = [Candle("X", "H1", 3600 * i, round(price + i * point, digits), round(price + 9 * point, digits),
                       round(price - 9 * point, digits), round(price + 2 * i * point, digits), 100 * i, i)
                for i in range(10)]
        loaded, appended = CandleRing(8, point), CandleRing(8, point)
        loaded.load(Bars.from_candles(bars))
        for c in bars:
            appended.append(c)
        for ring in (loaded, appended):
            assert ring.last(8).payloads("X", "H1", True) == [c.to_payload(True) for c in bars[-8:]]


def test_ring_keeps_prices_off_the_grid_and_large_integers_exactly():
    off_grid = math.nextafter(1.08501, 2.0)  # not points / 10**5 for any points
    wide = [candle(0), candle(1, close=off_grid), candle(2, tick_volume=70_000), candle(3, spread=-40_000),
            candle(4, real_volume=5), candle(5, tick_volume=2 ** 40), candle(6, open=1e12, high=1e12),
            candle(7, time=2 ** 32 + 60)]  # after 2106
    for start in range(len(wide)):  # each oddity arriving by append after the others were loaded
        ring = CandleRing(10, POINT)
        ring.load(Bars.from_candles(wide[:start]))
        for c in wide[start:]:
            ring.append(c)
        assert [ring.row(k) for k in range(len(wide))] == [fields_of(c) for c in wide]
        assert ring.last(10).payloads("EURUSD", "M1", True) == [c.to_payload(True) for c in wide]


def test_ring_stores_an_fx_bar_in_24_bytes():
    ring = CandleRing(1000, POINT)
    ring.load(Bars.from_candles([candle(i) for i in range(1000)]))
    assert ring.nbytes == 24 * 1000


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 12),
    seeded=st.integers(0, 15),
    appended=st.lists(st.tuples(
        st.integers(-3, 3).map(lambda k: math.nextafter(1.1, 2.0) if k == 3 else round(1.1 + k * POINT, 5)),
        st.sampled_from([1, 65_535, 65_536, 2 ** 33]),
        st.sampled_from([0, 7, -1, 2 ** 20]),
    ), max_size=30),
)
def test_ring_matches_a_bounded_list_of_candles(capacity, seeded, appended):
    model = [candle(i) for i in range(seeded)]
    ring = CandleRing(capacity, POINT)
    ring.load(Bars.from_candles(model))
    model = model[-capacity:] if model else []
    for i, (price, volume, real) in enumerate(appended, seeded):
        c = candle(i, close=price, tick_volume=volume, real_volume=real)
        ring.append(c)
        model = (model + [c])[-capacity:]
        assert len(ring) == len(model)
        assert ring.row(-1) == fields_of(c)
    assert ring.last(capacity).payloads("EURUSD", "M1", True) == [c.to_payload(True) for c in model]


def test_aggregator_payloads_equal_the_closed_candles_it_emitted():
    a = agg("M1", "M5", throttle=0)  # 100 bars each
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    emitted = {"M1": [], "M5": []}
    bid = 1.1
    for i in range(3 * 60 * 60):  # three hours, a tick every second: the M1 ring wraps
        bid = round(bid + (1 if (i * 7919) % 13 < 6 else -1) * 1e-5, 5)
        for c, closed in a.on_tick(tick(t0 + i * 1000, bid, 8 + i % 5)):
            if closed:
                emitted[c.timeframe].append(c.to_payload(True))
    for tf in ("M1", "M5"):
        expected = emitted[tf][-99:] + [a.forming(tf).to_payload(False)]
        assert a.payloads(tf, 100) == expected
        assert [c.to_payload(c is not a.forming(tf)) for c in a.candles(tf, 100)] == expected
        assert a.payloads(tf, 3) == expected[-3:]


def test_seed_takes_arrays_or_candles_alike():
    history = [candle(i) for i in range(5)]
    from_candles, from_arrays = agg("M1"), agg("M1")
    from_candles.seed("M1", history)
    from_arrays.seed("M1", Bars.from_candles(history))
    assert from_candles.payloads("M1", 10) == from_arrays.payloads("M1", 10)
    assert from_arrays.candles("M1", 10) == history
    assert from_arrays.forming("M1") == history[-1]
