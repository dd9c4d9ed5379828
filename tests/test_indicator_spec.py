"""The INDICATORS setting: the spec parser (pure), the settings that read it and the worker's
start-up refusal, and the series that computes a configured set."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from engine.config import ConfigError
from engine.protocol import MAX_INDICATOR_VALUES
from indicators.series import IndicatorSeries, Periods
from indicators.spec import DEFAULT_INDICATORS, SpecError, parse_indicators
from indicators.worker import WorkerConfig

talib = pytest.importorskip("talib")

ISSUE_SET = "ema:9,ema:21,ema:200,rsi:14,macd:12:26:9,bbands:20:2:2,atr:14,stoch:14:3:3,adx:14,cci:20,wma:20,obv"


def test_unnamed_instances_are_named_by_kind_and_parameters_and_publish_their_keys():
    instances = parse_indicators(ISSUE_SET)
    assert [i.name for i in instances] == ["ema_9", "ema_21", "ema_200", "rsi_14", "macd_12_26_9", "bbands_20_2_2",
                                           "atr_14", "stoch_14_3_3", "adx_14", "cci_20", "wma_20", "obv"]
    keys = [k for i in instances for k in i.keys]
    assert keys == ["ema_9", "ema_21", "ema_200", "rsi_14", "macd_12_26_9", "macd_12_26_9_signal",
                    "macd_12_26_9_hist", "bbands_20_2_2_upper", "bbands_20_2_2_middle", "bbands_20_2_2_lower",
                    "atr_14", "stoch_14_3_3_k", "stoch_14_3_3_d", "adx_14", "cci_20", "wma_20", "obv"]
    assert instances[5].params == (20, 2.0, 2.0) and instances[7].params == (14, 3, 3)
    assert repr(instances[5].make()) == "BBANDS(20, 2.0, 2.0, count=0, value=(nan, nan, nan))"


def test_named_instances_and_the_default_set_keep_todays_keys():
    default = parse_indicators(DEFAULT_INDICATORS)
    assert [k for i in default for k in i.keys] == ["sma", "ema", "rsi", "macd", "macd_signal", "macd_hist"]
    assert DEFAULT_INDICATORS == Periods().spec
    fast, slow = parse_indicators(" fast = EMA:9 , slow=ema:21")
    assert (fast.name, fast.params, slow.name, slow.keys) == ("fast", (9,), "slow", ("slow",))
    assert parse_indicators(fast.spec + "," + slow.spec) == (fast, slow)


@pytest.mark.parametrize("spec,message", [
    ("foo:3", "entry 1 'foo:3': unknown kind 'foo' (known: sma, ema, wma, rsi, macd, bbands, atr, adx, cci, stoch, obv)"),
    ("ema:9,macd:12:26", "entry 2 'macd:12:26': macd takes 3 parameter(s) (macd:fastperiod:slowperiod:signalperiod), got 2"),
    ("obv:3", "entry 1 'obv:3': obv takes 0 parameter(s) (obv), got 1"),
    ("rsi", "entry 1 'rsi': rsi takes 1 parameter(s) (rsi:timeperiod), got 0"),
    ("rsi:1", "entry 1 'rsi:1': timeperiod must be in [2, 100000] (TA-Lib's range), got 1"),
    ("sma:100001", "entry 1 'sma:100001': timeperiod must be in [1, 100000] (TA-Lib's range), got 100001"),
    ("stoch:14:0:3", "entry 1 'stoch:14:0:3': slowk_period must be in [1, 100000] (TA-Lib's range), got 0"),
    ("bbands:20:2:4e37", "entry 1 'bbands:20:2:4e37': nbdevdn must be in [-3e+37, 3e+37] (TA-Lib's range), got 4e37"),
    ("bbands:20:two:2", "entry 1 'bbands:20:two:2': nbdevup must be a number, got 'two'"),
    ("ema:9.5", "entry 1 'ema:9.5': timeperiod must be an integer, got '9.5'"),
    ("ema:21,rsi:14,ema:21", "entry 3 'ema:21': duplicate name 'ema_21' (already published by entry 'ema_21=ema:21')"),
    ("x=ema:9,x=sma:9", "entry 2 'x=sma:9': duplicate name 'x' (already published by entry 'x=ema:9')"),
    ("macd=macd:12:26:9,macd_signal=sma:3", "entry 2 'macd_signal=sma:3': duplicate name 'macd_signal' "
                                            "(already published by entry 'macd=macd:12:26:9')"),
    ("b=bbands:5:2:2,b_upper=sma:3", "entry 2 'b_upper=sma:3': duplicate name 'b_upper'"),
    ("time=sma:3", "entry 1 'time=sma:3': duplicate name 'time' (already published by the payload)"),
    ("Fast=ema:9", "entry 1 'Fast=ema:9': name 'Fast' must be lower-case letters"),
    ("9=ema:9", "entry 1 '9=ema:9': name '9' must be lower-case letters"),
    ("ema:9,,rsi:14", "entry 2 is empty"),
    ("   ", "names no indicator"),
])
def test_a_bad_spec_is_refused_naming_the_entry(spec, message):
    with pytest.raises(SpecError) as info:
        parse_indicators(spec)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_max_instances_bounds_a_clients_spec():
    sixteen = ",".join(f"ema:{p}" for p in range(2, 18))
    assert len(parse_indicators(sixteen, max_instances=16)) == 16
    with pytest.raises(SpecError, match="names 17 indicators, at most 16"):
        parse_indicators(sixteen + ",obv", max_instances=16)
    with pytest.raises(SpecError, match="characters long"):
        parse_indicators("ema:9," * 1000, max_instances=16)
    with pytest.raises(SpecError, match="must be a string"):
        parse_indicators(["ema:9"])  # type: ignore[arg-type]


def test_the_settings_read_indicators_and_refuse_it_naming_indicators(tmp_path):
    none = tmp_path / "none.env"
    cfg = WorkerConfig.load(environ={"INDICATORS": ISSUE_SET}, dotenv=none)
    assert len(cfg.indicator_set) == 12
    assert WorkerConfig.load({"indicators": "a=atr:5"}, environ={"INDICATORS": ISSUE_SET}, dotenv=none
                             ).indicator_set[0].name == "a"
    with pytest.raises(ConfigError, match=r"^INDICATORS: entry 2 'ema:0': timeperiod must be in \[1, 100000\]"):
        WorkerConfig.load(environ={"INDICATORS": "rsi:14,ema:0"}, dotenv=none)
    dotenv = tmp_path / ".env"
    dotenv.write_text("INDICATORS=ema:9,cci:1\n")
    with pytest.raises(ConfigError, match=r"^INDICATORS: entry 2 'cci:1'"):
        WorkerConfig.load(environ={}, dotenv=dotenv)


def test_old_ind_variables_set_the_default_sets_periods_and_conflict_with_indicators(tmp_path):
    none = tmp_path / "none.env"
    cfg = WorkerConfig.load(environ={"IND_SMA": "10", "IND_MACD": "5,35,5"}, dotenv=none)
    assert [i.spec for i in cfg.indicator_set] == ["sma=sma:10", "ema=ema:20", "rsi=rsi:14", "macd=macd:5:35:5"]
    with pytest.raises(ConfigError, match=r"^INDICATORS: set together with IND_SMA/IND_EMA/IND_RSI/IND_MACD.*"
                                          r"'sma=sma:10,ema=ema:20,rsi=rsi:14,macd=macd:12:26:9'"):
        WorkerConfig.load(environ={"IND_SMA": "10", "INDICATORS": "ema:9"}, dotenv=none)


def test_the_worker_exits_2_with_one_line_naming_indicators(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "indicators.worker", "--env-file", str(tmp_path / "none.env"),
                           "--indicators", "ema:21,wma:0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ("mt5-indicators: configuration error: INDICATORS: entry 2 'wma:0': timeperiod must be in "
                           "[1, 100000] (TA-Lib's range), got 0\n")


# ------------------------------------------------------------------------------------------------
# a configured set over candles

def ohlc_candles(n: int, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    close = 1.1 + np.cumsum(rng.normal(0, 5e-4, n))
    wick = np.abs(rng.normal(0, 3e-4, (2, n)))
    prev = np.concatenate((close[:1], close[:-1]))
    return [{"symbol": "EURUSD", "timeframe": "H1", "time": 1_700_000_000 + 3600 * i, "open": float(prev[i]),
             "high": float(max(prev[i], close[i]) + wick[0, i]), "low": float(min(prev[i], close[i]) - wick[1, i]),
             "close": float(close[i]), "tick_volume": int(rng.integers(1, 300)), "closed": True} for i in range(n)]


def talib_keys(candles: list[dict]) -> dict[str, np.ndarray]:
    """TA-Lib over the candles for every key of ISSUE_SET."""
    h, l, c, v = (np.array([b[k] for b in candles], dtype=float) for k in ("high", "low", "close", "tick_volume"))
    macd = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2)
    k, d = talib.STOCH(h, l, c, fastk_period=14, slowk_period=3, slowd_period=3)
    return {"ema_9": talib.EMA(c, 9), "ema_21": talib.EMA(c, 21), "ema_200": talib.EMA(c, 200),
            "rsi_14": talib.RSI(c, 14), "macd_12_26_9": macd[0], "macd_12_26_9_signal": macd[1],
            "macd_12_26_9_hist": macd[2], "bbands_20_2_2_upper": upper, "bbands_20_2_2_middle": middle,
            "bbands_20_2_2_lower": lower, "atr_14": talib.ATR(h, l, c, 14), "stoch_14_3_3_k": k,
            "stoch_14_3_3_d": d, "adx_14": talib.ADX(h, l, c, 14), "cci_20": talib.CCI(h, l, c, 20),
            "wma_20": talib.WMA(c, 20), "obv": talib.OBV(c, v)}


def assert_payload_equals(payload: dict, expected: dict[str, np.ndarray], i: int) -> None:
    for key, series in expected.items():
        if math.isnan(series[i]):
            assert payload[key] is None, (key, i)
        else:
            assert math.isclose(payload[key], series[i], rel_tol=1e-9), (key, i, payload[key], series[i])


def test_a_configured_set_warms_commits_and_peeks_like_talib():
    candles = ohlc_candles(400)
    series = IndicatorSeries("EURUSD", "H1", parse_indicators(ISSUE_SET))
    table = series.warm(candles[:300])
    expected = talib_keys(candles)
    assert table.shape == (300, 17)
    for j, key in enumerate(series.keys):
        np.testing.assert_allclose(table[:, j], expected[key][:300], rtol=1e-9, equal_nan=True)
    forming = dict(candles[300], closed=False, close=candles[300]["close"] + 0.002, high=candles[300]["high"] + 0.002)
    peeked = series.on_candle(forming)
    assert list(peeked) == ["symbol", "timeframe", "time", "closed", *series.keys]
    assert_payload_equals(peeked, talib_keys(candles[:300] + [forming]), 300)
    for i in range(300, 400):
        out = series.on_candle(candles[i])
        assert out["closed"] is True and out["time"] == candles[i]["time"]
        assert_payload_equals(out, expected, i)
    assert series.on_candle(candles[399]) is None  # committed once


def test_values_are_nil_while_warming_up():
    series = IndicatorSeries("EURUSD", "H1", parse_indicators("ema:3,stoch:3:2:2,obv"))
    series.warm([])
    outs = [series.on_candle(c) for c in ohlc_candles(6)]
    assert [o["ema_3"] is None for o in outs] == [True, True, False, False, False, False]
    assert [o["stoch_3_2_2_d"] is None for o in outs] == [True, True, True, True, False, False]
    assert outs[0]["obv"] == ohlc_candles(6)[0]["tick_volume"]


def test_a_set_is_bounded_by_the_values_an_ind_payload_may_carry():
    """The recorder (and every reader) takes at most MAX_INDICATOR_VALUES values per ind: map:
    a configured set with more output keys is refused where it is configured, not dropped later."""
    full = ",".join(f"ema:{p}" for p in range(2, 2 + MAX_INDICATOR_VALUES))
    assert len(parse_indicators(full)) == MAX_INDICATOR_VALUES
    with pytest.raises(SpecError, match=f"has {MAX_INDICATOR_VALUES + 1} output keys, at most {MAX_INDICATOR_VALUES}"):
        parse_indicators(",".join(f"ema:{p}" for p in range(2, MAX_INDICATOR_VALUES)) + ",macd:12:26:9")  # 62 + 3
