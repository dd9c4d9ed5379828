"""The mt5 source against the MetaTrader5 stand-in: shapes, exactly-once ticks, faults."""
from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from engine.aggregation import CandleAggregator
from engine.config import EngineConfig
from engine.models import Tick
from engine.sources.base import SourceError
from engine.sources.mt5 import (
    MAX_MASK_SYMBOLS,
    MT5Source,
    TickCursor,
    advance,
    book_from_entries,
    cursor_at_second,
    next_clock_offset,
    ticks_from_array,
    utc_offset_s,
)
from engine.timeframes import timeframe
from tests import mt5_standin
from tests.mt5_standin import MT5StandIn

T0 = 1_704_189_600_000  # 2024-01-02 10:00:00.000
PASSWORD = "s3cret-pass"


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


def collect(source: MT5Source, count: int, timeout: float = 3.0) -> list[Tick]:
    """Poll like the engine until ``count`` ticks came (or the deadline), then a bit more."""
    got: list[Tick] = []

    def enough() -> bool:
        got.extend(source.poll(0))
        return len(got) >= count

    wait_for(enough, timeout)
    time.sleep(0.02)  # anything extra (a duplicate) would show up now
    got.extend(source.poll(0))
    return got


def feed(mt5: MT5StandIn, symbol: str, times: list[int], base: float = 1.1) -> list[Tick]:
    """Add ticks at ``times`` and return what the engine should receive for them."""
    expected = []
    for i, t in enumerate(times):
        bid = round(base + (i % 50) * 1e-5, 5)
        ask = round(bid + 0.0001, 5)
        mt5.add_tick(symbol, t, bid, ask, volume=i % 3)
        expected.append(Tick(symbol, t, bid, ask, 0.0, i % 3, mt5.last_tick(symbol).flags, float(i % 3)))
    return expected


@pytest.fixture
def mt5() -> MT5StandIn:
    m = MT5StandIn(password=PASSWORD)
    m.add_symbol("EURUSD", 5, description="Euro vs US Dollar", currency_base="EUR",
                 currency_profit="USD")
    m.add_symbol("USDJPY", 3, description="US Dollar vs Japanese Yen", depth=False)
    # History the terminal holds before the source starts: never streamed.
    m.add_tick("EURUSD", T0 - 5, 1.09990, 1.10000)
    m.add_tick("EURUSD", T0 - 5, 1.09991, 1.10001)
    m.add_tick("USDJPY", T0 - 3, 150.000, 150.010)
    return m


@pytest.fixture
def make_source() -> Callable[..., MT5Source]:
    sources: list[MT5Source] = []

    def make(module: object, **overrides: object) -> MT5Source:
        settings: dict[str, object] = dict(
            source="mt5", symbols=("EURUSD", "USDJPY"), mt5_login=5001234,
            mt5_password=PASSWORD, mt5_server="Demo-Server", mt5_poll_ms=1,
            book_interval_ms=10, account_interval_ms=10,
        )
        tuning = {k: overrides.pop(k) for k in list(overrides)
                  if k in ("batch", "backoff_initial_s", "backoff_max_s", "terminal_check_s",
                           "history_wait_s", "fill_in_settle_s")}
        settings.update(overrides)
        source = MT5Source(
            EngineConfig(**settings), module,  # type: ignore[arg-type]
            **{"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "terminal_check_s": 0.02,
               **tuning},
        )
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.stop()


# -- pure pieces ---------------------------------------------------------------------------


def test_advance_skips_exactly_the_ticks_already_delivered_at_the_last_millisecond() -> None:
    # Delivered so far: up to t=2005, two of the ticks at 2005. The request (from second 2)
    # returns those again plus a third tick at 2005 and later ones.
    times = np.array([2000, 2003, 2005, 2005, 2005, 2007, 2007], dtype=np.int64)
    start, cursor = advance(times, TickCursor(2005, at_time=2, in_second=4))
    assert start == 4
    assert cursor == TickCursor(2007, at_time=2, in_second=7)


def test_advance_with_nothing_new_keeps_the_cursor() -> None:
    times = np.array([2000, 2005, 2005], dtype=np.int64)
    start, cursor = advance(times, TickCursor(2005, at_time=2, in_second=3))
    assert start == 3
    assert cursor == TickCursor(2005, at_time=2, in_second=3)


def test_advance_from_a_second_start_delivers_the_whole_second() -> None:
    times = np.array([3000, 3000, 3999, 4000], dtype=np.int64)
    start, cursor = advance(times, cursor_at_second(3456))
    assert start == 0
    assert cursor == TickCursor(4000, at_time=1, in_second=1)
    assert cursor.request_from == 4


def test_ticks_from_array_reads_the_real_dtype_into_plain_python_values() -> None:
    arr = np.array(
        [(1, 1.1, 1.2, 0.0, 3, 1001, 6, 3.25), (1, 1.15, 1.2, 1.16, 0, 1002, 2, 0.0)],
        dtype=mt5_standin.TICK_DTYPE,
    )
    ticks = ticks_from_array("EURUSD", arr)
    assert ticks == [
        Tick("EURUSD", 1001, 1.1, 1.2, 0.0, 3, 6, 3.25), Tick("EURUSD", 1002, 1.15, 1.2, 1.16, 0, 2, 0.0),
    ]
    assert type(ticks[0].time_msc) is int and type(ticks[0].volume) is int
    assert type(ticks[0].bid) is float and type(ticks[0].flags) is int
    assert type(ticks[0].volume_real) is float


def test_book_from_entries_puts_best_prices_first() -> None:
    BookInfo = mt5_standin.BookInfo
    entries = (  # the terminal's order: sells high to low, then buys high to low
        BookInfo(1, 1.10030, 5, 5.0), BookInfo(1, 1.10020, 3, 3.0), BookInfo(3, 1.10010, 1, 1.5),
        BookInfo(4, 1.10000, 2, 2.0), BookInfo(2, 1.09990, 4, 4.0), BookInfo(2, 1.09980, 6, 6.0),
    )
    book = book_from_entries("EURUSD", 123, entries)
    assert book is not None
    assert book.asks == [[1.10010, 1.5], [1.10020, 3.0], [1.10030, 5.0]]
    assert book.bids == [[1.10000, 2.0], [1.09990, 4.0], [1.09980, 6.0]]
    assert book_from_entries("EURUSD", 123, ()) is None
    assert book_from_entries("EURUSD", 123, None) is None


# -- start, symbols, history ----------------------------------------------------------------


def test_start_selects_symbols_and_reports_their_info(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    infos = {s.name: s for s in source.symbols()}
    assert set(infos) == {"EURUSD", "USDJPY"}
    eur = infos["EURUSD"]
    assert (eur.digits, eur.point, eur.description) == (5, 1e-05, "Euro vs US Dollar")
    assert (eur.currency_base, eur.currency_profit) == ("EUR", "USD")
    assert eur.trade_contract_size == 100000.0
    assert infos["USDJPY"].digits == 3
    assert mt5.init_calls[0] == {
        "path": None, "login": 5001234, "password": PASSWORD, "server": "Demo-Server",
        "timeout": 60_000, "portable": False,
    }
    assert source.health().status == "ok" and source.health().connected


def test_initialize_gets_only_the_settings_that_are_set(mt5, make_source) -> None:
    source = make_source(mt5, mt5_login=0, mt5_password="", mt5_server="", mt5_path=r"C:\MT5\terminal64.exe",
                         mt5_timeout_ms=90_000, mt5_portable=True)
    source.start()
    assert mt5.init_calls[0] == {
        "path": r"C:\MT5\terminal64.exe", "login": None, "password": None, "server": None,
        "timeout": 90_000, "portable": True,
    }


def test_history_is_oldest_first_with_the_forming_bar_last(mt5, make_source) -> None:
    h1 = 3600
    base = T0 // 1000 - T0 // 1000 % h1
    rows = [(base + i * h1, 1.1 + i / 1000, 1.2, 1.0, 1.15, 100 + i, 7, 0) for i in range(-4, 1)]
    mt5.set_rates("EURUSD", mt5_standin.TIMEFRAME_H1, rows)
    source = make_source(mt5)
    source.start()
    candles = source.history("EURUSD", timeframe("H1"), 3)
    assert [c.time for c in candles] == [base - 2 * h1, base - h1, base]
    last = candles[-1]
    assert (last.symbol, last.timeframe, last.open, last.high, last.low, last.close) == (
        "EURUSD", "H1", 1.1, 1.2, 1.0, 1.15)
    assert (last.tick_volume, last.spread, last.real_volume) == (100, 7, 0)
    assert type(last.time) is int and type(last.tick_volume) is int
    assert source.history("USDJPY", timeframe("H1"), 3) == []  # the terminal has none


# -- live ticks -----------------------------------------------------------------------------


def test_ticks_from_before_the_start_are_not_streamed(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    time.sleep(0.05)
    assert source.poll(0) == []


def test_every_tick_is_delivered_once_in_order_including_same_millisecond(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    # Same millisecond as the last pre-start ticks, several per millisecond, across seconds.
    first = feed(mt5, "EURUSD", [T0 - 5, T0 - 5, T0, T0, T0, T0 + 999, T0 + 1000, T0 + 1000])
    assert collect(source, len(first)) == first
    # More ticks at the millisecond already delivered, in a later poll.
    second = feed(mt5, "EURUSD", [T0 + 1000, T0 + 1000, T0 + 1001])
    jpy = feed(mt5, "USDJPY", [T0 + 1000, T0 + 1000], base=150.0)
    got = collect(source, len(second) + len(jpy))
    assert [t for t in got if t.symbol == "EURUSD"] == second
    assert [t for t in got if t.symbol == "USDJPY"] == jpy


def test_a_burst_larger_than_one_request_in_one_millisecond_is_delivered_once(
    mt5, make_source,
) -> None:
    source = make_source(mt5, batch=3)
    source.start()
    burst = feed(mt5, "EURUSD", [T0] * 10 + [T0 + 1] * 4 + [T0 + 2000])
    assert collect(source, len(burst)) == burst


def test_ticks_landing_while_a_poll_is_in_progress_are_delivered_once(mt5, make_source) -> None:
    mt5.call_delay = 0.001  # each call takes 1 ms; the feeder adds ticks meanwhile
    source = make_source(mt5)
    source.start()
    rng = random.Random(7)
    times, t = [], T0
    for _ in range(1500):
        t += rng.choice((0, 0, 0, 1, 1, 7, 400))  # many ticks share a millisecond
        times.append(t)
    expected: list[Tick] = []

    def feeder() -> None:
        for i in range(0, len(times), 5):
            expected.extend(feed(mt5, "EURUSD", times[i:i + 5]))
            time.sleep(0.0002)

    thread = threading.Thread(target=feeder)
    thread.start()
    got = collect(source, len(times), timeout=10.0)
    thread.join()
    assert len(got) == len(expected)
    assert got == expected


# -- faults ---------------------------------------------------------------------------------


def test_reconnect_after_an_ipc_drop_loses_and_duplicates_no_tick(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    before = feed(mt5, "EURUSD", [T0, T0, T0 + 1])
    assert collect(source, len(before)) == before

    mt5.drop_ipc()
    assert wait_for(lambda: source.health().status == "degraded", timeout=2.0)
    health = source.health()
    assert not health.connected and "-10004" in health.detail
    # The terminal keeps recording while we are cut off, also at the last delivered ms.
    during = feed(mt5, "EURUSD", [T0 + 1, T0 + 1, T0 + 500, T0 + 1500])
    time.sleep(0.05)
    assert source.poll(0) == []
    inits = mt5.calls["initialize"]

    mt5.restore_ipc()
    assert wait_for(lambda: source.health().status == "ok", timeout=2.0)
    assert mt5.calls["initialize"] > inits
    after = feed(mt5, "EURUSD", [T0 + 1500, T0 + 2000])
    assert collect(source, len(during) + len(after)) == during + after


def test_a_none_answer_makes_the_source_reinitialize_without_losing_ticks(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    mt5.fail_next("copy_ticks_from", times=1, error=mt5_standin.IPC_TIMEOUT)
    ticks = feed(mt5, "EURUSD", [T0, T0, T0 + 3])
    assert collect(source, len(ticks)) == ticks
    assert mt5.calls["initialize"] >= 2
    assert wait_for(lambda: source.health().status == "ok")


def test_terminal_without_trade_server_is_degraded_until_it_reconnects(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    mt5.set_connected(False)
    assert wait_for(lambda: source.health().status == "degraded", timeout=2.0)
    assert "trade server" in source.health().detail
    mt5.set_connected(True)
    assert wait_for(lambda: source.health().status == "ok", timeout=2.0)


def test_auth_failure_at_start_is_a_clear_error_without_the_password(
    mt5, make_source, caplog,
) -> None:
    caplog.set_level(logging.DEBUG)
    source = make_source(mt5, mt5_password="wrong-password-123")
    with pytest.raises(SourceError) as err:
        source.start()
    message = str(err.value)
    assert "-6" in message and "Authorization failed" in message
    assert "5001234" in message and "Demo-Server" in message
    assert "wrong-password-123" not in message and PASSWORD not in message
    assert "wrong-password-123" not in caplog.text


def test_auth_failure_while_reconnecting_stays_degraded_and_retries(
    mt5, make_source, caplog,
) -> None:
    caplog.set_level(logging.DEBUG)
    source = make_source(mt5)
    source.start()
    mt5.drop_ipc()
    mt5.fail_auth(True)
    mt5.restore_ipc()
    assert wait_for(lambda: "Authorization failed" in source.health().detail, timeout=2.0)
    tries = mt5.calls["initialize"]
    assert wait_for(lambda: mt5.calls["initialize"] >= tries + 3, timeout=2.0)
    assert source.health().status == "degraded"
    ticks = feed(mt5, "EURUSD", [T0, T0 + 1])
    mt5.fail_auth(False)
    assert collect(source, len(ticks)) == ticks
    assert source.health().status == "ok"
    assert PASSWORD not in caplog.text


def test_reconnect_backs_off_exponentially(mt5, make_source) -> None:
    source = make_source(mt5, backoff_initial_s=0.01, backoff_max_s=0.08)
    source.start()
    mt5.drop_ipc()
    time.sleep(0.5)
    tries = mt5.calls["initialize"] - 1
    # 10, 20, 40, 80, 80, ... ms: about 8 tries in 0.5 s, far fewer than polling at 1 ms.
    assert 4 <= tries <= 12


def test_missing_package_names_the_sim_source(monkeypatch, make_source) -> None:
    monkeypatch.setitem(sys.modules, "MetaTrader5", None)  # import fails, as off Windows
    source = make_source(None)
    with pytest.raises(SourceError, match="--source sim") as err:
        source.start()
    assert "Windows" in str(err.value)


def test_symbols_the_broker_lacks_are_reported_with_its_similar_names(mt5, make_source, caplog) -> None:
    mt5.add_symbol("GBPUSDm", 5)
    mt5.add_symbol("GBPUSD.pro", 5)
    source = make_source(mt5, symbols=("EURUSD", "GBPUSD", "USDJPY"))
    with caplog.at_level(logging.WARNING, logger="engine.sources.mt5"):
        source.start()
    assert [s.name for s in source.symbols()] == ["EURUSD", "USDJPY"]
    assert source.report()["missing_symbols"] == ["GBPUSD"]
    warning = next(r.getMessage() for r in caplog.records if "GBPUSD" in r.getMessage())
    assert "'GBPUSD' is not on this trade server (it has GBPUSDm, GBPUSD.pro)" in warning
    eur = feed(mt5, "EURUSD", [T0, T0 + 1])
    assert collect(source, len(eur)) == eur


def test_a_symbol_without_info_is_missing_not_fatal(mt5, make_source) -> None:
    mt5.fail_next("symbol_info", symbol="USDJPY")
    source = make_source(mt5)
    source.start()
    assert [s.name for s in source.symbols()] == ["EURUSD"]
    assert source.report()["missing_symbols"] == ["USDJPY"]


def test_no_symbol_on_the_server_is_a_clear_error(mt5, make_source) -> None:
    source = make_source(mt5, symbols=("EURUSDx", "XAUUSD"))
    with pytest.raises(SourceError, match="none of EURUSDx,XAUUSD is on this trade server"):
        source.start()
    assert mt5.calls["shutdown"] == 1


def test_group_masks_are_resolved_by_the_terminal_in_order(mt5, make_source) -> None:
    for name in ("EURUSDm", "EURUSD.pro", "GBPUSD.pro", "GBPUSDm", "XAUUSD"):
        mt5.add_symbol(name, 5)
    source = make_source(mt5, symbols=("XAUUSD", "EURUSD*", "GBPUSD*", "!*.pro"))
    source.start()
    # Plain names first, then the group's matches in the terminal's order, each once.
    assert [s.name for s in source.symbols()] == ["XAUUSD", "EURUSD", "EURUSDm", "GBPUSDm"]
    assert source.report()["missing_symbols"] == []
    assert all(mt5.symbol_info(s.name).select for s in source.symbols())
    gbp = feed(mt5, "GBPUSDm", [T0, T0 + 5], base=1.27)
    assert collect(source, len(gbp)) == gbp


def test_a_mask_matching_more_than_one_connection_can_poll_is_refused(mt5, make_source) -> None:
    for i in range(MAX_MASK_SYMBOLS):
        mt5.add_symbol(f"S{i:04d}", 2)
    source = make_source(mt5, symbols=("*",))
    with pytest.raises(SourceError, match=rf"matches {MAX_MASK_SYMBOLS + 2} symbols, more than the {MAX_MASK_SYMBOLS}"):
        source.start()


def test_the_symbols_reply_has_what_a_bot_needs_to_size_orders(mt5, make_source) -> None:
    mt5.add_symbol("SBER", 2, currency_base="RUB", currency_profit="RUB", contract_size=10.0,
                   chart_mode=1)
    source = make_source(mt5, symbols=("EURUSD", "USDJPY", "SBER"))
    source.start()
    infos = {s.name: s.to_dict() for s in source.symbols()}
    eur, jpy = infos["EURUSD"], infos["USDJPY"]
    assert {k: eur[k] for k in ("volume_min", "volume_max", "volume_step", "trade_tick_size",
                                "currency_margin", "trade_mode", "chart_mode")} == {
        "volume_min": 0.01, "volume_max": 500.0, "volume_step": 0.01, "trade_tick_size": 1e-05,
        "currency_margin": "EUR", "trade_mode": 4, "chart_mode": 0}
    assert eur["trade_tick_value"] == pytest.approx(1.0)  # 1e-5 x 100,000 USD per lot
    assert jpy["trade_tick_value"] == pytest.approx(1e-3 * 100_000 / 150.0)  # in USD at 150.000
    assert infos["SBER"]["chart_mode"] == 1


# -- failures stay local ------------------------------------------------------------------------


def test_a_symbol_failing_alone_goes_stale_and_the_others_keep_flowing(mt5, make_source) -> None:
    source = make_source(mt5, backoff_initial_s=0.05, backoff_max_s=0.2)
    source.start()
    inits = mt5.calls["initialize"]
    mt5.fail_next("copy_ticks_from", times=4, symbol="USDJPY")
    jpy = feed(mt5, "USDJPY", [T0, T0 + 1], base=150.0)
    eur = feed(mt5, "EURUSD", [T0, T0 + 2])
    assert wait_for(lambda: source.report()["stale_symbols"] == ["USDJPY"])
    health = source.health()
    assert (health.status, health.connected) == ("degraded", True)
    assert "USDJPY" in health.detail
    got = collect(source, len(eur) + len(jpy), timeout=5.0)
    assert [t for t in got if t.symbol == "EURUSD"] == eur
    assert [t for t in got if t.symbol == "USDJPY"] == jpy  # retried, then delivered once
    assert wait_for(lambda: source.report()["stale_symbols"] == [] and source.health().status == "ok")
    assert mt5.calls["initialize"] == inits  # the session was never given up


def test_backoff_of_a_stale_symbol_grows(mt5, make_source) -> None:
    source = make_source(mt5, backoff_initial_s=0.02, backoff_max_s=0.16)
    source.start()
    mt5.fail_next("copy_ticks_from", times=10_000, symbol="USDJPY")
    time.sleep(1.0)
    # About 0.02+0.04+0.08 then every 0.16 s: a handful of tries in a second, not hundreds.
    tries = 10_000 - len(mt5._scripted[("copy_ticks_from", "USDJPY")])
    assert 4 <= tries <= 12, tries
    assert mt5.calls["copy_ticks_from"] - tries > 100  # EURUSD polled all along


def test_a_failing_terminal_info_ends_the_session(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    inits = mt5.calls["initialize"]
    mt5.fail_next("terminal_info", error=mt5_standin.CALL_FAILED)
    assert wait_for(lambda: mt5.calls["initialize"] > inits)
    assert wait_for(lambda: source.health().status == "ok")
    ticks = feed(mt5, "EURUSD", [T0, T0 + 7])
    assert collect(source, len(ticks)) == ticks


# -- history that is really there ----------------------------------------------------------------


def m1_rows(count: int, end_s: int) -> list[tuple]:
    return [(end_s - (count - 1 - i) * 60, 1.1, 1.2, 1.0, 1.15, 10 + i, 5, 0) for i in range(count)]


@pytest.mark.parametrize(("ready", "per_call", "max_bars", "got", "short"), [
    (200, 300, 100_000, 1000, []),  # downloads while we wait
    (200, 0, 100_000, 200, ["EURUSD M1 200/1000"]),  # the terminal has no more
    (1000, 0, 500, 500, ["EURUSD M1 500/1000"]),  # its "Max bars in chart"
], ids=["downloading", "no-more", "max-bars"])
def test_history_waits_for_the_download_and_reports_what_it_got(
    mt5, make_source, ready, per_call, max_bars, got, short,
) -> None:
    rows = m1_rows(1200, T0 // 1000)
    mt5.set_rates("EURUSD", mt5_standin.TIMEFRAME_M1, rows, ready=ready, per_call=per_call)
    mt5.max_bars = max_bars
    source = make_source(mt5)
    source.start()
    bars = source.history("EURUSD", timeframe("M1"), 1000)
    assert [b.time for b in bars] == [r[0] for r in rows[-got:]]
    assert source.report()["history_incomplete"] == short


def test_history_asks_again_while_the_terminal_is_not_synchronized(mt5, make_source) -> None:
    rows = m1_rows(50, T0 // 1000)
    mt5.set_rates("EURUSD", mt5_standin.TIMEFRAME_M1, rows)
    source = make_source(mt5)
    source.start()
    mt5.fail_next("copy_rates_from_pos", times=3, symbol="EURUSD")
    assert [b.time for b in source.history("EURUSD", timeframe("M1"), 50)] == [r[0] for r in rows]
    assert source.report()["history_incomplete"] == []


def test_history_gives_up_in_bounded_time(mt5, make_source) -> None:
    source = make_source(mt5, history_wait_s=0.3)
    source.start()
    mt5.fail_next("copy_rates_from_pos", times=10_000, symbol="EURUSD")
    started = time.monotonic()
    assert source.history("EURUSD", timeframe("M1"), 10) == []
    assert time.monotonic() - started < 2.0
    assert source.report()["history_incomplete"] == ["EURUSD M1 0/10"]


def test_history_says_which_ticks_its_forming_bar_holds(mt5, make_source) -> None:
    """Ticks arriving after the stream started are in the terminal's forming bar already:
    ``history_covers`` names the newest, so the engine folds only later ones."""
    source = make_source(mt5)
    source.start()
    early = feed(mt5, "EURUSD", [T0, T0 + 10])
    mt5.set_rates("EURUSD", mt5_standin.TIMEFRAME_M1, m1_rows(3, T0 // 1000))
    bars = source.history("EURUSD", timeframe("M1"), 3)
    assert len(bars) == 3
    assert source.history_covers("EURUSD", timeframe("M1")) == T0 + 10
    assert collect(source, len(early)) == early  # still published as ticks


# -- outages --------------------------------------------------------------------------------------


def test_ticks_the_terminal_fills_in_after_a_restart_are_not_skipped(mt5, make_source) -> None:
    """A restarted terminal answers from its local ticks first: the outage's ticks appear a
    little after the live ones, and the source must not move past them meanwhile."""
    source = make_source(mt5)
    source.start()
    agg = CandleAggregator("EURUSD", 0.00001, [timeframe("M1")])
    minute = T0 - T0 % 60_000
    before = feed(mt5, "EURUSD", [minute + 1_000, minute + 2_000])
    got = collect(source, len(before))
    mt5.drop_ipc()
    assert wait_for(lambda: not source.health().connected)
    during = feed(mt5, "EURUSD", [minute + 30_000, minute + 61_000, minute + 62_000, minute + 125_000])
    mt5.restore_ipc(fill_in_after_s=0.4)
    after = feed(mt5, "EURUSD", [minute + 181_000, minute + 182_000])
    got += collect(source, len(during) + len(after), timeout=8.0)
    assert got == before + during + after
    closed = [c for tick in got for c, is_closed in agg.on_tick(tick) if is_closed]
    assert [(c.time * 1000 - minute) // 60_000 for c in closed] == [0, 1, 2]  # no hole
    assert [c.tick_volume for c in closed] == [3, 2, 1]
    assert agg.late_ticks == 0


# -- book and account -------------------------------------------------------------------------


def test_book_comes_best_first_and_none_without_depth(mt5, make_source) -> None:
    mt5.set_book("EURUSD", [(1, 1.1003, 5), (1, 1.1002, 3), (2, 1.1000, 2), (2, 1.0999, 4)])
    source = make_source(mt5)
    source.start()
    book = source.book("EURUSD", 0)
    assert book is not None and book.symbol == "EURUSD"
    assert book.asks == [[1.1002, 3.0], [1.1003, 5.0]]
    assert book.bids == [[1.1000, 2.0], [1.0999, 4.0]]
    mt5.set_book("EURUSD", [(1, 1.1004, 1), (2, 1.1001, 1)])
    assert wait_for(lambda: source.book("EURUSD", 0).asks == [[1.1004, 1.0]])
    assert source.book("USDJPY", 0) is None  # this broker has no depth for it


def test_account_is_account_info_as_a_dict_and_stays_fresh(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    account = source.account(0)
    assert account is not None
    assert list(account) == list(mt5_standin.AccountInfo._fields)
    assert (account["login"], account["equity"], account["currency"]) == (5001234, 10000.0, "USD")
    mt5.trades.deposit(T0, 12.5)
    assert wait_for(lambda: source.account(0)["equity"] == 10012.5)


def test_stop_is_prompt_and_shuts_the_terminal_down(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 1.0
    assert mt5.calls["shutdown"] >= 1
    assert source.health().status == "down"


def test_market_clock_follows_the_server_and_freezes_while_the_terminal_is_lost(mt5, make_source) -> None:
    source = make_source(mt5)
    source.start()
    assert source.market_time(T0) == 0  # no tick yet: never close a bar by guesswork
    server_ahead = 2 * 3600_000  # a broker on UTC+2
    local_now = T0 - server_ahead
    feed(mt5, "EURUSD", [T0])
    assert wait_for(lambda: bool(source._out))
    source.poll(local_now + 40)  # received 40 ms after it happened
    assert source.market_time(local_now + 1000) == T0 + 960
    mt5.drop_ipc()
    assert wait_for(lambda: source.health().status == "degraded", timeout=2.0)
    assert source.market_time(local_now + 60_000) == T0  # outage bars stay open
    mt5.restore_ipc()
    assert wait_for(lambda: source.health().status == "ok", timeout=2.0)
    # Still held until the engine has taken what was read after the reconnect.
    assert source.market_time(local_now + 60_000) == T0
    assert wait_for(lambda: source._resumed, timeout=2.0)
    source.poll(local_now + 60_000)
    assert source.market_time(local_now + 60_000) == T0 + 59_960


# Broker time across a daylight-saving switch: most brokers run UTC+3 in summer and UTC+2 in
# winter, switching over a weekend, and stamp ticks in that clock.
HOUR_MS = 3600_000


def test_the_clock_offset_follows_the_server_down_and_up_but_not_delivery_delays() -> None:
    summer = 3 * HOUR_MS - 40  # a tick received 40 ms after it happened, on UTC+3
    assert next_clock_offset(None, summer) == summer
    assert next_clock_offset(summer, summer - 900) == summer  # a slower delivery is not a change
    assert next_clock_offset(summer, summer + 15) == summer + 15  # a faster one sharpens it
    winter = 2 * HOUR_MS - 55
    assert next_clock_offset(summer, winter) == winter  # autumn: an hour down, taken at once
    assert next_clock_offset(winter, summer) == summer  # spring: an hour up
    assert [utc_offset_s(o) for o in (None, summer, winter, -5 * HOUR_MS + 30, 5 * HOUR_MS + 45 * 60_000)] == \
        [0, 10_800, 7_200, -18_000, 20_700]  # Nepal's UTC+5:45 is whole quarter hours too


@pytest.mark.parametrize(("before_h", "after_h"), [(3, 2), (2, 3)], ids=["autumn", "spring"])
def test_a_weekend_dst_switch_closes_no_bar_early_and_drops_no_tick(mt5, make_source, before_h, after_h) -> None:
    """Friday's ticks on one offset, Monday's on the other: the engine's loop (poll, aggregate,
    close bars by the market clock) keeps every tick of Monday's first minute in its M1 bar."""
    source = make_source(mt5)
    source.start()
    agg = CandleAggregator("EURUSD", 0.00001, [timeframe("M1"), timeframe("H1")])
    friday_local = T0  # this machine's clock (UTC), Friday 10:00
    monday_local = friday_local + 3 * 24 * HOUR_MS

    def run_minute(local_start: int, offset_h: int) -> list[int]:
        """Six ticks, 10 s apart, stamped in the server's clock and seen 30 ms later."""
        stamps = [local_start + offset_h * HOUR_MS + 10_000 * i + 5 for i in range(6)]
        closed = []
        for stamp in stamps:
            feed(mt5, "EURUSD", [stamp])
            assert wait_for(lambda: bool(source._out))
            received = stamp - offset_h * HOUR_MS + 30
            events = [e for tick in source.poll(received) for e in agg.on_tick(tick)]
            events += agg.on_time(source.market_time(received + 5))
            closed += [c.time for c, is_closed in events if is_closed and c.timeframe == "M1"]
        return closed

    assert run_minute(friday_local, before_h) == []
    assert source.server_utc_offset_s() == before_h * 3600
    closed_early = run_minute(monday_local, after_h)
    assert closed_early == [(friday_local + before_h * HOUR_MS) // 1000]  # only Friday's bar closes
    assert agg.late_ticks == 0
    assert source.server_utc_offset_s() == after_h * 3600
    monday_bar = agg.candles("M1", 1)[-1]
    assert monday_bar.time == (monday_local + after_h * HOUR_MS) // 1000 and monday_bar.tick_volume == 6


@pytest.mark.parametrize(("error", "session_lost"), [((-10000, "IPC call failed"), True),
                                                   ((-1, "Terminal: Call failed"), False)])
def test_only_the_ipc_family_ends_the_session(mt5, make_source, error, session_lost) -> None:
    """A failed order book read is normal (no depth right now) unless the code is of the IPC
    family, -10000 ("IPC call failed") included: then the session is initialized again."""
    source = make_source(mt5, book_interval_ms=10)
    source.start()
    inits = mt5.calls["initialize"]
    reads = mt5.calls["market_book_get"]
    mt5.fail_next("market_book_get", times=1, error=error)
    assert wait_for(lambda: mt5.calls["market_book_get"] > reads + 2, timeout=2.0)
    assert wait_for(lambda: source.health().status == "ok", timeout=3.0)
    assert (mt5.calls["initialize"] > inits) is session_lost
