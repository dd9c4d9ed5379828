"""Indicator history for web clients: the pure ``indicator_history`` on real sim history, and
``get_indicators`` against the live values of a real engine, indicator worker and bridge."""
from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from bridge.indicator_history import indicator_history
from engine.sources.sim import SimSource
from engine.timeframes import TIMEFRAMES
from indicators.series import IndicatorSeries, Periods
from tests import indicator_reference as ref
from tests.bridge_procs import BridgeProcess, run
from tests.test_indicator_worker import write_mt5_h1_export

FIELDS = ("sma", "ema", "rsi", "macd", "macd_signal", "macd_hist")
CLOCK_MS = 1_790_000_000_000  # a fixed instant: the same sim history on every run


def sim_history(timeframe: str = "M1", count: int = 1000, seed: int = 11) -> list[dict]:
    """The sim's history as the engine's ``candles`` RPC gives it: closed bars, the forming one last."""
    sim = SimSource(["EURUSD"], seed=seed, clock_ms=CLOCK_MS)
    sim.start()
    bars = sim.history("EURUSD", TIMEFRAMES[timeframe], count)
    return [b.to_payload(closed=i < len(bars) - 1) for i, b in enumerate(bars)]


def talib_columns(closes: np.ndarray, periods: Periods = Periods()) -> dict[str, np.ndarray]:
    macd, signal, hist = talib.MACD(closes, *periods.macd)
    return {"sma": talib.SMA(closes, periods.sma), "ema": talib.EMA(closes, periods.ema),
            "rsi": talib.RSI(closes, periods.rsi), "macd": macd, "macd_signal": signal, "macd_hist": hist}


def assert_row(value: dict, expected: dict[str, np.ndarray], i: int) -> None:
    """``value`` holds exactly TA-Lib's numbers at index ``i`` (None where TA-Lib has NaN)."""
    for key, column in expected.items():
        want = float(column[i])
        assert (value[key] is None) if math.isnan(want) else (value[key] == want), (key, i, value[key], want)


def closes_of(bars: list[dict]) -> np.ndarray:
    return np.array([b["close"] for b in bars], dtype=np.float64)


# The pure function
def test_values_are_talibs_over_the_whole_history_for_the_last_count_bars():
    bars = sim_history()
    values = indicator_history("EURUSD", "M1", bars, 200)
    assert [v["time"] for v in values] == [b["time"] for b in bars[-200:]]
    assert all(v["symbol"] == "EURUSD" and v["timeframe"] == "M1" for v in values)
    assert [v["closed"] for v in values] == [True] * 199 + [False]
    expected = talib_columns(closes_of(bars[:-1]))  # TA-Lib over every closed bar, not only the shown ones
    for k, value in enumerate(values[:-1]):
        assert_row(value, expected, len(bars) - 200 + k)
    assert all(value[key] is not None for value in values for key in FIELDS), "history warms the first bars"


def test_the_forming_bar_gets_the_values_its_close_would_give():
    bars = sim_history()
    forming = indicator_history("EURUSD", "M1", bars, 1)
    assert len(forming) == 1 and forming[0]["time"] == bars[-1]["time"] and forming[0]["closed"] is False
    assert_row(forming[0], talib_columns(closes_of(bars)), len(bars) - 1)


def test_warm_up_values_are_null_as_in_the_pure_python_reference():
    bars = sim_history("H1", 40)
    values = indicator_history("EURUSD", "H1", bars, 100)  # more than there is: every bar
    assert [v["time"] for v in values] == [b["time"] for b in bars]
    closes = list(closes_of(bars[:-1]))
    macd, signal, hist = ref.macd(closes, 12, 26, 9)
    expected = {"sma": ref.sma(closes, 20), "ema": ref.ema(closes, 20), "rsi": ref.rsi(closes, 14),
                "macd": macd, "macd_signal": signal, "macd_hist": hist}
    for key, column in expected.items():
        got = [v[key] for v in values[:-1]]
        assert [g is None for g in got] == [math.isnan(e) for e in column], key
        assert all(g is None or math.isclose(g, e, rel_tol=1e-9) for g, e in zip(got, column)), key
    assert values[18]["sma"] is None and values[19]["sma"] is not None
    assert all(v["macd_signal"] is None for v in values[:33]) and values[33]["macd_signal"] is not None


def test_values_equal_what_the_worker_publishes_bar_by_bar():
    """The worker warms from history, then updates on each closed bar and peeks the forming one."""
    bars = sim_history()
    worker = IndicatorSeries("EURUSD", "M1")
    worker.warm(bars[:300])
    published = [worker.on_candle(b) for b in bars[300:]]
    assert indicator_history("EURUSD", "M1", bars, 700) == published


@pytest.mark.parametrize("later", [1, 5, 60])
def test_a_history_starting_later_than_the_workers_differs_only_by_rounding(later):
    """The worker warmed from 1000 bars, then ``later`` bars closed; the bridge's 1000 bars start
    ``later`` bars after the worker's: 1000 bars of warm-up leave only rounding between the two."""
    bars = [dict(b, closed=True) for b in sim_history("M1", 1100)]
    worker = IndicatorSeries("EURUSD", "M1")
    worker.warm(bars[:1000])
    published = [worker.on_candle(b) for b in bars[1000:1000 + later]]
    values = indicator_history("EURUSD", "M1", bars[later:1000 + later], later)
    assert [v["time"] for v in values] == [p["time"] for p in published]
    for got, want in zip(values, published):
        assert all(math.isclose(got[k], want[k], rel_tol=1e-12, abs_tol=1e-15) for k in FIELDS), (got, want)


def test_periods_are_the_ones_given_and_a_closed_last_bar_stays_closed():
    bars = [dict(b, closed=True) for b in sim_history("M5", 300)]
    periods = Periods(sma=5, ema=9, rsi=7, macd=(3, 10, 4))
    values = indicator_history("EURUSD", "M5", bars, 50, periods)
    assert len(values) == 50 and all(v["closed"] for v in values)
    expected = talib_columns(closes_of(bars), periods)
    for k, value in enumerate(values):
        assert_row(value, expected, 250 + k)


def test_no_history_gives_no_values():
    assert indicator_history("EURUSD", "M1", [], 100) == []


# Against a real engine, worker and bridge
@pytest.mark.timeout(180)
def test_get_indicators_equals_the_live_values_the_worker_published(tmp_path, start_engine, start_worker, started):
    """A fast H1 replay: every closed ``indicators`` event seen live equals, bit for bit, the
    value ``get_indicators`` gives for that bar afterwards; both are TA-Lib over ``get_candles``."""
    sim = SimSource(["EURUSD"], seed=5, clock_ms=CLOCK_MS)
    sim.start()
    bars = sim.history("EURUSD", TIMEFRAMES["H1"], 400)
    export = tmp_path / "EURUSD_H1_history.csv"
    write_mt5_h1_export(export, bars)
    # 400 hours of market in about 8 s of wall clock (the bridge joins while it plays).
    engine = start_engine("--source", "replay", "--replay-file", str(export), "--replay-speed", "180000",
                          "--timeframes", "H1")
    start_worker(engine)
    bridge = BridgeProcess(["--timeframes", "H1"], engine=engine)
    started.append(bridge)
    bridge.start()
    # The replay clock runs on after the file: its last bar closes a market second after its end.
    last_closed = bars[-1].time

    async def scenario(c):
        await c.call("subscribe", {"symbol": "EURUSD", "timeframe": "H1"})
        await c.wait_for("indicators", lambda d: d["closed"] and d["time"] == last_closed, timeout=40)
        history = await c.call("get_indicators", {"symbol": "EURUSD", "timeframe": "H1", "count": 1000})
        candles = await c.call("get_candles", {"symbol": "EURUSD", "timeframe": "H1", "count": 1000})
        return [d for d in c.of("indicators") if d["closed"]], history, candles

    live, history, candles = run(scenario, bridge, timeout=60.0)
    assert history["symbol"] == "EURUSD" and history["timeframe"] == "H1"
    values = history["values"]
    assert [v["time"] for v in values] == [b["time"] for b in candles["candles"]]
    assert [v["closed"] for v in values] == [b["closed"] for b in candles["candles"]]
    by_time = {v["time"]: v for v in values}
    assert len(live) >= 100, f"only {len(live)} closed values seen live"
    for event in live:
        assert event == by_time[event["time"]], event["time"]
    closed_bars = [b for b in candles["candles"] if b["closed"]]
    expected = talib_columns(closes_of(closed_bars))
    for i, bar in enumerate(closed_bars):
        assert_row(by_time[bar["time"]], expected, i)
