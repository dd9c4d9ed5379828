import numpy as np
import pytest

from engine.aggregation import CandleAggregator
from engine.sources.sim import ANCHOR_S, DAY_S, SimSource, sim_symbol
from engine.timeframes import TIMEFRAMES

START = 1_790_000_000_000  # a fixed instant, so the tests are reproducible
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"]


def sim(clock=START, seed=7, rate=100.0, symbols=SYMBOLS) -> SimSource:
    s = SimSource(symbols, seed=seed, rate=rate, clock_ms=clock)
    s.start()
    return s


def test_default_symbols_have_mt5_digits_and_points():
    infos = {i.name: i for i in sim().symbols()}
    assert [(infos[s].digits, infos[s].point) for s in SYMBOLS] == [
        (5, 1e-5), (5, 1e-5), (3, 1e-3), (2, 1e-2), (2, 1e-2)]
    assert infos["EURUSD"].currency_base == "EUR" and infos["EURUSD"].currency_profit == "USD"
    assert infos["EURUSD"].description


def test_unknown_symbols_get_stable_made_up_parameters():
    assert sim_symbol("SYM0042") == sim_symbol("SYM0042")
    assert sim_symbol("SYM0042").info.digits == 5


@pytest.mark.parametrize("tf", ["M1", "M5", "M15", "H1", "D1"])
def test_history_is_back_filled_to_the_requested_count(tf):
    bars = sim(symbols=["EURUSD"]).history("EURUSD", TIMEFRAMES[tf], 1000)
    assert len(bars) == 1000
    times = [b.time for b in bars]
    assert times == sorted(set(times))
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars)
    assert bars[-1].time == TIMEFRAMES[tf].bar_open(START // 1000)  # the forming bar is last


def test_same_seed_same_market_other_seed_other_market():
    a = sim().history("EURUSD", TIMEFRAMES["M5"], 50)
    b = sim().history("EURUSD", TIMEFRAMES["M5"], 50)
    c = sim(seed=8).history("EURUSD", TIMEFRAMES["M5"], 50)
    assert a == b
    assert a != c


def test_ticks_are_irregular_ordered_and_quote_a_spread():
    s = sim()
    ticks = s.poll(START + 60_000)
    assert 60 * 100 * 0.7 < len(ticks) < 60 * 100 * 1.3  # about the configured 100/s
    times = [t.time_msc for t in ticks]
    assert times == sorted(times)
    gaps = {b - a for a, b in zip(times, times[1:])}
    assert len(gaps) > 20  # not a metronome
    assert all(t.ask > t.bid for t in ticks)
    assert {t.symbol for t in ticks} == set(SYMBOLS)
    assert s.next_due(START + 60_000) >= 0


def test_live_ticks_aggregate_to_exactly_the_history_a_restarted_sim_reports():
    """Restart-reproducibility: bars built live equal the back-filled bars of a later start."""
    tfs = [TIMEFRAMES[n] for n in ("M1", "M5", "H1")]
    live = sim(symbols=["EURUSD", "XAUUSD"], rate=20)
    aggs = {}
    for info in live.symbols():
        aggs[info.name] = CandleAggregator(info.name, info.point, tfs, 1000, 250)
        for tf in tfs:
            aggs[info.name].seed(tf.name, live.history(info.name, tf, 100))
    end = START + 25 * 60_000
    for now in range(START, end + 1, 500):
        for t in live.poll(now):
            aggs[t.symbol].on_tick(t)
    restarted = sim(clock=end, symbols=["EURUSD", "XAUUSD"], rate=20)
    for symbol, agg in aggs.items():
        for tf in tfs:
            built = agg.candles(tf.name, 100)
            backfilled = restarted.history(symbol, tf, 100)
            assert built == backfilled, (symbol, tf.name)


def test_book_has_ten_levels_around_the_quote_best_first():
    s = sim()
    s.poll(START + 1000)
    book = s.book("EURUSD", START + 1000)
    tick = s.last_tick("EURUSD")
    assert len(book.bids) == len(book.asks) == 10
    bid_prices = [p for p, _ in book.bids]
    ask_prices = [p for p, _ in book.asks]
    assert bid_prices == sorted(bid_prices, reverse=True) and bid_prices[0] == tick.bid
    assert ask_prices == sorted(ask_prices) and ask_prices[0] == tick.ask
    assert all(v > 0 for _, v in book.bids + book.asks)


def test_max_rate_mode_delivers_batches_without_waiting():
    s = sim(rate=0)
    batch = s.poll(START)
    assert len(batch) >= 100 and s.next_due(START) == 0
    assert {t.symbol for t in batch} == set(SYMBOLS)
    infos = {i.name: i for i in s.symbols()}
    for tick in batch + s.poll(START + 1):
        info = infos[tick.symbol]
        assert tick.bid == round(tick.bid, info.digits) and tick.ask == round(tick.ask, info.digits)
        assert round((tick.ask - tick.bid) / info.point) == sim_symbol(tick.symbol).spread[0]
    eurusd = [t.bid for t in batch if t.symbol == "EURUSD"]
    assert len(set(eurusd)) > 10 and abs(eurusd[-1] / eurusd[0] - 1) < 0.01  # a walk, not a jump


# History is computed once per symbol for the longest span and aggregated with numpy: these
# check that no shortcut changes a bar, whatever the span, batch or timeframe.
ALL_COUNTS = {"M1": 1000, "M5": 300, "M15": 200, "H1": 1000, "H4": 50, "D1": 2, "W1": 12, "MN1": 4}


def test_history_of_all_timeframes_at_once_equals_each_timeframe_alone():
    s = sim(symbols=["XAUUSD"])
    together = s.history_arrays("XAUUSD", {TIMEFRAMES[tf]: n for tf, n in ALL_COUNTS.items()})
    for tf, n in ALL_COUNTS.items():
        alone = s.history("XAUUSD", TIMEFRAMES[tf], n)
        assert together[tf].candles("XAUUSD", tf) == alone, tf
        assert len(alone) == n


@pytest.mark.parametrize("tf", ["M5", "M15", "H1", "H4", "D1", "W1", "MN1"])
def test_history_starts_count_bars_back_and_ends_with_the_forming_bar(tf):
    timeframe = TIMEFRAMES[tf]
    bars = sim(symbols=["EURUSD"]).history("EURUSD", timeframe, ALL_COUNTS[tf])
    expected = [timeframe.bar_open(START // 1000)]
    while len(expected) < ALL_COUNTS[tf]:
        expected.insert(0, timeframe.bar_open(expected[0] - 1))
    assert [b.time for b in bars] == expected


@pytest.mark.parametrize("tf", ["M5", "M15", "H1"])
def test_history_bars_are_their_minute_bars_aggregated(tf):
    s = sim(symbols=["BTCUSD"])
    m1 = s.history("BTCUSD", TIMEFRAMES["M1"], 1000)
    seconds = TIMEFRAMES[tf].seconds
    for bar in s.history("BTCUSD", TIMEFRAMES[tf], 10):
        minutes = [m for m in m1 if bar.time <= m.time < bar.time + seconds]
        assert minutes[0].time == bar.time  # inside the minute history
        assert (bar.open, bar.high, bar.low, bar.close) == (
            minutes[0].open, max(m.high for m in minutes), min(m.low for m in minutes), minutes[-1].close)
        assert bar.tick_volume == sum(m.tick_volume for m in minutes)
        assert bar.spread == min(m.spread for m in minutes)


def test_a_day_of_minute_bars_does_not_depend_on_the_batch_it_is_computed_in():
    market = sim(symbols=["GBPUSD"])._markets["GBPUSD"]
    first = (START // 1000 - ANCHOR_S) // DAY_S - 20
    batch = market.days(first, first + 9)
    for k in range(9):
        alone = market.days(first + k, first + k + 1)
        for field, values in batch.items():
            assert np.array_equal(values[k], alone[field][0]), (k, field)


def test_live_ticks_of_a_minute_aggregate_to_its_history_bar():
    s = sim(symbols=["USDJPY"])
    market = s._markets["USDJPY"]
    minute = START // 60_000 - 30
    bar = s.history("USDJPY", TIMEFRAMES["M1"], 31)[0]
    ticks = market.minute_ticks(minute)
    bids = [bid for _, bid, _ in ticks]
    assert bar.time == minute * 60
    assert (bar.open, bar.high, bar.low, bar.close, bar.tick_volume) == (
        bids[0], max(bids), min(bids), bids[-1], len(ticks))


def test_a_busy_minute_drawn_in_chunks_still_aggregates_to_its_bar():
    """At 1000 ticks/s a minute has ~30k ticks, drawn in chunks: order and bar still hold."""
    s = sim(symbols=["EURUSD", "BTCUSD"], rate=1000)
    minute = START // 60_000 + 1
    for symbol in ("EURUSD", "BTCUSD"):
        market = s._markets[symbol]
        assert market.chunks(minute) > 5
        ticks = market.minute_ticks(minute)
        times = [t for t, _, _ in ticks]
        assert times == sorted(times) and minute * 60_000 <= times[0] and times[-1] < (minute + 1) * 60_000
        bids = [b for _, b, _ in ticks]
        o, h, l, c, n, _ = market._minute_bar(minute)
        assert (bids[0], max(bids), min(bids), bids[-1], len(bids)) == (o, h, l, c, n)
    polled = [t for t in s.poll(START + 125_000) if t.symbol == "EURUSD" and t.time_msc // 60_000 == minute]
    assert [(t.time_msc, t.bid) for t in polled] == [(t, b) for t, b, _ in s._markets["EURUSD"].minute_ticks(minute)]


def test_prefetching_draws_chunks_ahead_without_changing_a_tick():
    """``prefetch`` moves the drawing of the next chunks off the hot path; the ticks are the same."""
    plain, ahead = sim(rate=2000), sim(rate=2000)
    assert ahead.prefetch_due() is not None and not plain.poll(START - 1)
    ahead.prefetch()
    got_plain, got_ahead, prefetched = [], [], 0
    for now in range(START + 50, START + 130_000, 50):  # crosses chunk and minute boundaries
        got_plain += plain.poll(now)
        got_ahead += ahead.poll(now)
        while ahead.prefetch_due() is not None:
            ahead.prefetch()
            prefetched += 1
    assert got_ahead == got_plain and len(got_plain) > 200_000
    assert prefetched > 2 * len(SYMBOLS)  # every symbol went through several chunks
    times = [t.time_msc for t in got_plain]
    assert times == sorted(times)
    # Each cursor was handed its next chunk ahead: polling on needs no drawing at all.
    market = ahead._markets["EURUSD"]
    drawn = []
    market.chunk_columns = lambda *a: drawn.append(a)
    cursor = next(c for c in ahead._cursors if c.name == "EURUSD")
    cursor.take(cursor.times[-1], [])
    assert drawn == [] and cursor.upcoming is None


def test_prefetch_due_is_when_a_symbol_would_run_out_of_drawn_ticks():
    s = sim(rate=2000)
    s.poll(START)
    due = s.prefetch_due()
    # The first symbol waiting for its next chunk: its drawn ticks end at ``due``.
    waiting = s._unprefetched[0]
    assert due == waiting.times[-1] > START
    drawn = []
    market = s._markets[waiting.name]
    draw = market.chunk_columns
    market.chunk_columns = lambda *a: drawn.append(a) or draw(*a)
    s.poll(due - 1)
    assert drawn == []  # not needed before ``due``...
    s.poll(due)
    assert len(drawn) == 1  # ...and drawn on demand at ``due``, had it not been prefetched
    while s.prefetch_due() is not None:
        s.prefetch()
    assert s.prefetch_due() is None


def test_books_change_every_250_ms_and_repeat_for_the_same_instant():
    s = sim()
    a, b, c = (s.book("EURUSD", START + ms) for ms in (1000, 1100, 1250))
    assert a == b and a.bids != c.bids
    assert sim().book("EURUSD", START + 1000) == a
