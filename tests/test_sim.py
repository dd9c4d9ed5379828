import pytest

from engine.aggregation import CandleAggregator
from engine.sources.sim import SimSource, sim_symbol
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


def test_account_equity_moves_with_the_open_position():
    s = sim(symbols=["EURUSD"])
    first = s.account(START)
    s.poll(START + 3 * 3600_000)
    later = s.account(START + 3 * 3600_000)
    assert first["balance"] == later["balance"] == 10_000.0
    assert first["equity"] == round(first["balance"] + first["profit"], 2)
    assert later["equity"] != first["equity"]
    assert {"login", "leverage", "margin_free", "margin_level", "currency"} <= set(first)


def test_max_rate_mode_delivers_batches_without_waiting():
    s = sim(rate=0)
    batch = s.poll(START)
    assert len(batch) >= 100 and s.next_due(START) == 0
    assert {t.symbol for t in batch} == set(SYMBOLS)
