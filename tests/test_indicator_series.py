"""The pure core of the worker: one indicator series fed candle payloads."""
import math

import numpy as np
import pytest
import talib

from indicators.series import IndicatorSeries, Periods


def candles(closes, start=1_700_000_000, step=3600, closed=True):
    return [{"symbol": "EURUSD", "timeframe": "H1", "time": start + i * step, "close": c,
             "closed": closed} for i, c in enumerate(closes)]


def talib_row(closes, i):
    macd, signal, hist = talib.MACD(closes)
    return [talib.SMA(closes, 20)[i], talib.EMA(closes, 20)[i], talib.RSI(closes, 14)[i],
            macd[i], signal[i], hist[i]]


def values(payload):
    return [payload[k] for k in ("sma", "ema", "rsi", "macd", "macd_signal", "macd_hist")]


def same(got, expected):
    for g, e in zip(got, expected):
        if math.isnan(e):
            assert g is None
        else:
            assert g is not None and math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-12)


def walk(n, seed=1):
    return 1.1 + np.cumsum(np.random.default_rng(seed).normal(0, 0.001, n))


def test_warm_up_then_closed_candles_equal_talib_over_the_whole_series():
    closes = walk(300)
    series = IndicatorSeries("EURUSD", "H1")
    bars = candles(closes)
    series.warm(bars[:200] + [dict(bars[200], closed=False)])  # the forming bar is not committed
    assert series.last_closed == bars[199]["time"]
    for i in range(200, 300):
        out = series.on_candle(bars[i])
        assert out["closed"] is True and out["time"] == bars[i]["time"]
        same(values(out), talib_row(closes, i))


def test_forming_candle_is_peeked_and_commits_nothing():
    closes = walk(120)
    series = IndicatorSeries("EURUSD", "H1")
    bars = candles(closes)
    series.warm(bars[:100])
    forming = dict(bars[100], close=closes[100] + 0.01, closed=False)
    peeked = series.on_candle(forming)
    assert peeked["closed"] is False
    same(values(peeked), talib_row(np.append(closes[:100], closes[100] + 0.01), 100))
    out = series.on_candle(bars[100])  # the real close commits
    same(values(out), talib_row(closes, 100))


def test_a_bar_already_in_the_history_is_not_counted_twice():
    closes = walk(60)
    series = IndicatorSeries("EURUSD", "H1")
    bars = candles(closes)
    series.warm(bars[:50])
    assert series.on_candle(bars[49]) is None
    assert series.on_candle(dict(bars[49], closed=False)) is None
    assert series.on_candle(bars[50]) is not None


def test_warming_up_nil_until_enough_bars_then_values():
    series = IndicatorSeries("EURUSD", "H1", Periods(sma=3, ema=3, rsi=2, macd=(2, 3, 2)))
    series.warm([])
    outs = [series.on_candle(b) for b in candles([1.0, 1.1, 1.2, 1.15, 1.3])]
    assert outs[0]["sma"] is None and outs[0]["rsi"] is None
    assert outs[2]["sma"] is not None and outs[2]["rsi"] is not None
    assert outs[3]["macd_signal"] is not None


def test_rewarm_resets_state():
    closes = walk(80)
    series = IndicatorSeries("EURUSD", "H1")
    series.warm(candles(closes[:70]))
    series.warm(candles(closes[:40]))
    out = series.on_candle(candles(closes)[40])
    same(values(out), talib_row(closes[:41], 40))


def test_periods_parse_settings_text_and_refuse_what_the_indicators_would():
    assert Periods.parse("10", "30", 7, "5,35,5") == Periods(10, 30, 7, (5, 35, 5))
    assert Periods.parse(*(str(v) for v in (20, 20, 14)), Periods().macd_text) == Periods()
    for bad in [("0", "20", "14", "12,26,9"), ("x", "20", "14", "12,26,9"), ("20", "20", "14", "12,26")]:
        with pytest.raises(ValueError):
            Periods.parse(*bad)


def test_the_worker_refuses_bad_periods_at_start_up(monkeypatch, tmp_path):
    from engine.config import ConfigError
    from indicators.worker import load_config
    for name in ("IND_SMA", "IND_EMA", "IND_MACD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IND_RSI", "0")
    with pytest.raises(ConfigError, match=r"IND_RSI.*rsi=rsi:0.*timeperiod must be in \[2, 100000\]"):
        load_config(["--env-file", str(tmp_path / "none.env")])
    monkeypatch.setenv("IND_RSI", "7")
    assert load_config(["--env-file", str(tmp_path / "none.env"), "--sma", "10"]).periods == Periods(10, 20, 7)
