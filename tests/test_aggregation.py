import calendar
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.aggregation import CandleAggregator
from engine.candle_store import COLUMNS, Bars, CandleRing
from engine.models import (
    CHART_MODE_BID, CHART_MODE_LAST, TICK_FLAG_ASK, TICK_FLAG_BID, TICK_FLAG_LAST, TICK_FLAG_VOLUME, Candle,
    Tick,
)
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


# Chart modes, volumes and one-sided quotes.
TRADE = TICK_FLAG_LAST | TICK_FLAG_VOLUME
QUOTE = TICK_FLAG_BID | TICK_FLAG_ASK


def test_real_volume_adds_up_the_ticks_volume_and_a_bid_chart_ignores_last():
    a = agg("M1")
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    for i, (bid, last, volume) in enumerate([(1.1, 0.0, 0), (1.2, 9.9, 3), (1.15, 0.1, 2)]):
        a.on_tick(Tick("EURUSD", t0 + i * 1000, bid, round(bid + 10 * POINT, 5), last, volume,
                       TRADE if last else QUOTE, float(volume)))
    bar = a.forming("M1")
    assert (bar.open, bar.high, bar.low, bar.close) == (1.1, 1.2, 1.1, 1.15)
    assert (bar.tick_volume, bar.real_volume, bar.spread) == (3, 5, 10)


def test_one_sided_quotes_never_open_a_bar_nor_touch_its_prices_or_spread():
    a = agg("M1", throttle=0)
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000

    def quote(dt_ms: int, bid: float, ask: float) -> list:
        return a.on_tick(Tick("EURUSD", t0 + dt_ms, bid, ask))

    assert quote(0, 0.0, 1.1001) == [] and a.forming("M1") is None  # no bid yet
    assert quote(100, -1.0, 1.1001) == [] and a.forming("M1") is None
    assert quote(200, math.nan, 1.1001) == [] and a.forming("M1") is None
    opened = quote(300, 1.1, 0.0)  # a bid without an ask: a price, but no spread
    assert [(c.open, c.low, c.spread, done) for c, done in opened] == [(1.1, 1.1, 0, False)]
    assert quote(400, 0.0, 1.0999) == []
    assert quote(500, 1.1002, 1.1004) != []  # the first spread, 20 points, however large
    assert quote(600, 1.0999, 0.0) != []
    assert quote(700, 1.1001, 1.1004) != []  # 30 points: not the smallest
    assert quote(60_500, 0.0, 1.2) == []  # in the next bar, but without a price: closes nothing
    bar = a.forming("M1")
    assert (bar.time, bar.open, bar.high, bar.low, bar.close) == (t0 // 1000, 1.1, 1.1002, 1.0999, 1.1001)
    assert (bar.tick_volume, bar.spread, a.late_ticks) == (4, 20, 0)
    assert [(c.time, c.low, done) for c, done in quote(61_000, 1.2, 1.2001)] == [
        (t0 // 1000, 1.0999, True), (t0 // 1000 + 60, 1.2, False)]


def test_a_last_chart_builds_bars_from_trades_only():
    a = CandleAggregator("SBER", 0.01, [TIMEFRAMES["M1"], TIMEFRAMES["M5"]], 100, 0,
                         chart_mode=CHART_MODE_LAST)
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000

    def send(dt_ms: int, bid: float, ask: float, last: float, volume: int, flags: int) -> list:
        return a.on_tick(Tick("SBER", t0 + dt_ms, bid, ask, last, volume, flags, float(volume)))

    assert send(0, 250.05, 250.15, 0.0, 0, QUOTE) == []  # quotes before any trade
    assert send(10, 250.05, 250.15, 249.0, 0, QUOTE) == []  # a quote carries the last trade's price
    assert a.forming("M1") is None and a.forming("M5") is None
    opened = send(1000, 250.05, 250.15, 250.10, 5, TRADE)
    assert [(c.timeframe, c.open, c.spread) for c, _ in opened] == [("M1", 250.10, 10), ("M5", 250.10, 10)]
    assert send(2000, 240.0, 240.02, 250.10, 0, QUOTE) == []  # a quote far off: not a trade
    send(3000, 0.0, 0.0, 250.30, 2, TRADE)  # a trade without quotes: price, no spread
    assert send(4000, 250.2, 250.21, 0.0, 1, TRADE) == []  # flagged as a trade, but no price
    send(5000, 249.85, 249.9, 249.90, 1, TRADE | QUOTE)  # 5 points
    bar = a.forming("M1")
    assert (bar.open, bar.high, bar.low, bar.close) == (250.10, 250.30, 249.90, 249.90)
    assert (bar.tick_volume, bar.real_volume, bar.spread) == (3, 8, 5)
    rolled = send(60_000, 250.0, 250.02, 250.01, 4, TRADE)
    assert [(c.timeframe, c.time, c.close, c.tick_volume, c.real_volume, done) for c, done in rolled] == [
        ("M1", t0 // 1000, 249.90, 3, 8, True), ("M1", t0 // 1000 + 60, 250.01, 1, 4, False),
        ("M5", t0 // 1000, 250.01, 4, 12, False)]
    assert a.late_ticks == 0


def test_chart_mode_must_be_bid_or_last():
    with pytest.raises(ValueError, match="chart_mode"):
        CandleAggregator("X", POINT, [TIMEFRAMES["M1"]], chart_mode=2)


_quote_price = st.sampled_from([0.0, -1.0, 1.1, 1.1001, 1.1003, 1.0998, 1.1005])


@settings(max_examples=150, deadline=None)
@given(
    chart_mode=st.sampled_from([CHART_MODE_BID, CHART_MODE_LAST]),
    ticks=st.lists(st.tuples(st.integers(0, 5_000), _quote_price, _quote_price, _quote_price,
                             st.integers(0, 3),
                             st.sampled_from([QUOTE, TRADE, QUOTE | TRADE, TICK_FLAG_BID])),
                   max_size=60),
)
def test_bars_equal_a_plain_model_of_the_chart_price(chart_mode, ticks):
    """Closed and forming M1 bars against bars built by hand from the ticks that count."""
    a = CandleAggregator("EURUSD", POINT, [TIMEFRAMES["M1"]], 100, 0, chart_mode=chart_mode)
    t0 = ts(2026, 3, 5, 10, 0, 0) * 1000
    t, model, emitted = t0, {}, []
    for step, bid, ask, last, volume, flags in ticks:
        t += step * 50  # up to 250 s apart: bars roll, some minutes stay empty
        if chart_mode == CHART_MODE_LAST:
            price = last if flags & TICK_FLAG_LAST else 0.0
        else:
            price = bid
        emitted += [c.to_payload(True) for c, done in a.on_tick(
            Tick("EURUSD", t, bid, ask, last, volume, flags, float(volume))) if done]
        if price <= 0:
            continue
        spread = round((ask - bid) / POINT) if bid > 0 and ask > 0 else None
        opened = t // 60_000 * 60
        bar = model.setdefault(opened, [price, price, price, price, 0, None, 0])
        bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
        bar[4] += 1
        if spread is not None:
            bar[5] = spread if bar[5] is None else min(bar[5], spread)
        bar[6] += volume
    expected = [Candle("EURUSD", "M1", opened, o, h, lo, c, n, sp or 0, rv).to_payload(True)
                for opened, (o, h, lo, c, n, sp, rv) in model.items()]
    forming = a.forming("M1")
    assert emitted + ([forming.to_payload(True)] if forming else []) == expected
    assert all(bar["low"] > 0 for bar in expected) and a.late_ticks == 0


# seed(covered_through_ms): the terminal's forming bar already holds the ticks up to that time.
T0 = ts(2026, 3, 5, 10, 0, 0)  # 10:00 server time


def seeded(m1_cutoff_ms: int | None, m5_cutoff_ms: int | None = None) -> CandleAggregator:
    """M1 bars 10:00-10:02 (10:02 forming, 10 ticks) and the forming M5 bar of 10:00 (50 ticks)."""
    a = agg("M1", "M5", throttle=0)
    a.seed("M1", [Candle("EURUSD", "M1", T0 + 60 * i, 1.0, 1.1, 0.9, 1.05, 10, 8, 10) for i in range(3)],
           covered_through_ms=m1_cutoff_ms)
    a.seed("M5", [Candle("EURUSD", "M5", T0, 1.0, 1.1, 0.9, 1.05, 50, 8, 50)],
           covered_through_ms=m5_cutoff_ms)
    return a


def ohlcv(c: Candle) -> tuple:
    return c.open, c.high, c.low, c.close, c.tick_volume, c.real_volume


def test_seeded_forming_bar_skips_ticks_at_or_before_its_cutoff_and_folds_later_ones():
    cutoff = (T0 + 150) * 1000  # 10:02:30.000
    a = agg("M1", throttle=0)
    a.seed("M1", [Candle("EURUSD", "M1", T0 + 60 * i, 1.0, 1.1, 0.9, 1.05, 10, 8, 10) for i in range(3)],
           covered_through_ms=cutoff)
    assert a.on_tick(tick(cutoff - 20_000, 1.5)) == []  # before the cutoff: already in the bar
    assert a.on_tick(tick(cutoff, 0.5)) == []  # at it: too
    assert ohlcv(a.forming("M1")) == (1.0, 1.1, 0.9, 1.05, 10, 10)
    events = a.on_tick(Tick("EURUSD", cutoff + 1, 1.2, 1.2001, 0.0, 2))
    assert [(ohlcv(c), done) for c, done in events] == [((1.0, 1.2, 0.9, 1.2, 11, 12), False)]
    assert a.on_tick(tick(cutoff - 1, 1.7)) == []  # a covered tick arriving late is still covered
    assert a.late_ticks == 0
    assert a.on_tick(tick((T0 + 119) * 1000, 1.3)) == []  # before the forming bar: late
    assert a.late_ticks == 1
    events = a.on_tick(tick((T0 + 180) * 1000, 1.15))
    assert [(c.time, ohlcv(c), done) for c, done in events] == [
        (T0 + 120, (1.0, 1.2, 0.9, 1.2, 11, 12), True), (T0 + 180, (1.15, 1.15, 1.15, 1.15, 1, 0), False)]


def test_each_timeframe_skips_up_to_its_own_cutoff():
    a = seeded(m1_cutoff_ms=(T0 + 150) * 1000, m5_cutoff_ms=(T0 + 130) * 1000)
    assert a.on_tick(tick((T0 + 125) * 1000, 1.11)) == []  # covered in both
    assert [(c.timeframe, c.tick_volume) for c, _ in a.on_tick(tick((T0 + 140) * 1000, 1.12))] == [("M5", 51)]
    assert [(c.timeframe, c.tick_volume) for c, _ in a.on_tick(tick((T0 + 160) * 1000, 1.13))] == [
        ("M1", 11), ("M5", 52)]
    assert (a.forming("M1").high, a.forming("M5").high) == (1.13, 1.13)
    assert a.late_ticks == 0


def test_without_a_cutoff_every_tick_of_the_seeded_bar_folds():
    a = seeded(m1_cutoff_ms=(T0 + 150) * 1000, m5_cutoff_ms=None)
    assert [(c.timeframe, c.tick_volume) for c, _ in a.on_tick(tick((T0 + 125) * 1000, 1.11))] == [("M5", 51)]
    a = seeded(m1_cutoff_ms=(T0 + 100) * 1000)  # a cutoff before the forming bar covers none of it
    assert [(c.timeframe, c.tick_volume) for c, _ in a.on_tick(tick((T0 + 120) * 1000, 1.11))] == [
        ("M1", 11), ("M5", 51)]


def test_a_cutoff_past_the_forming_bar_still_rolls_into_the_next_bar():
    a = seeded(m1_cutoff_ms=(T0 + 190) * 1000)  # the terminal's clock is past the bar's end
    assert a.on_tick(tick((T0 + 170) * 1000, 1.11)) != []  # M5 folds it, M1 holds it already
    assert a.forming("M1").tick_volume == 10
    events = a.on_tick(tick((T0 + 185) * 1000, 1.12))  # a later bar than the seeded one: rolls
    assert [(c.timeframe, c.time, c.tick_volume, done) for c, done in events] == [
        ("M1", T0 + 120, 10, True), ("M1", T0 + 180, 1, False), ("M5", T0, 52, False)]
    assert a.late_ticks == 0


def test_a_cutoff_without_a_forming_bar_covers_nothing():
    a = agg("M1", throttle=0)
    a.seed("M1", [], covered_through_ms=(T0 + 150) * 1000)
    events = a.on_tick(tick((T0 + 130) * 1000, 1.1))
    assert [(c.time, c.tick_volume, done) for c, done in events] == [(T0 + 120, 1, False)]
    assert a.late_ticks == 0
