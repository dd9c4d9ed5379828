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
from indicators.spec import parse_indicators
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
    values = indicator_history("EURUSD", "M5", bars, 50, parse_indicators(periods.spec))
    assert len(values) == 50 and all(v["closed"] for v in values)
    expected = talib_columns(closes_of(bars), periods)
    for k, value in enumerate(values):
        assert_row(value, expected, 250 + k)


def test_no_history_gives_no_values():
    assert indicator_history("EURUSD", "M1", [], 100) == []


# Against a real engine, worker and bridge
def h1_replay_stack(tmp_path, start_engine, start_worker, started, seed: int,
                    indicators: tuple[str, ...] = ()) -> tuple[BridgeProcess, int]:
    """An engine replaying 400 sim H1 bars fast (400 hours of market in about 8 s of wall clock;
    the bridge joins while it plays), a worker and a bridge, both with ``indicators`` flags; the
    bridge and the time of the last bar (it closes a market second after the file's end, as the
    replay clock runs on)."""
    sim = SimSource(["EURUSD"], seed=seed, clock_ms=CLOCK_MS)
    sim.start()
    bars = sim.history("EURUSD", TIMEFRAMES["H1"], 400)
    export = tmp_path / "EURUSD_H1_history.csv"
    write_mt5_h1_export(export, bars)
    engine = start_engine("--source", "replay", "--replay-file", str(export), "--replay-speed", "180000",
                          "--timeframes", "H1")
    start_worker(engine, *indicators)
    bridge = BridgeProcess(["--timeframes", "H1", *indicators], engine=engine)
    started.append(bridge)
    bridge.start()
    return bridge, bars[-1].time


@pytest.mark.timeout(180)
def test_get_indicators_equals_the_live_values_the_worker_published(tmp_path, start_engine, start_worker, started):
    """A fast H1 replay: every closed ``indicators`` event seen live equals, bit for bit, the
    value ``get_indicators`` gives for that bar afterwards; both are TA-Lib over ``get_candles``."""
    bridge, last_closed = h1_replay_stack(tmp_path, start_engine, start_worker, started, seed=5)

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


# A configured set (INDICATORS), and a client's own spec
CUSTOM_SPEC = "fast=ema:5,bb=bbands:10:1.5:2.5,stoch:5:3:3,atr:7,obv"


def custom_talib(bars: list[dict]) -> dict[str, np.ndarray]:
    """TA-Lib over the bars for every key of CUSTOM_SPEC."""
    h, l, c, v = (np.array([b[k] for b in bars], dtype=float) for k in ("high", "low", "close", "tick_volume"))
    upper, middle, lower = talib.BBANDS(c, 10, 1.5, 2.5)
    k, d = talib.STOCH(h, l, c, fastk_period=5, slowk_period=3, slowd_period=3)
    return {"fast": talib.EMA(c, 5), "bb_upper": upper, "bb_middle": middle,
            "bb_lower": lower, "stoch_5_3_3_k": k, "stoch_5_3_3_d": d, "atr_7": talib.ATR(h, l, c, 7),
            "obv": talib.OBV(c, v)}


def test_a_configured_set_gives_its_keys_equal_to_talib_and_bit_identical_to_the_worker():
    from tests.test_indicator_spec import ISSUE_SET, ohlc_candles, talib_keys
    instances = parse_indicators(ISSUE_SET)
    bars = ohlc_candles(600)
    values = indicator_history("EURUSD", "H1", bars, 600, instances)
    keys = {k for i in instances for k in i.keys}
    assert all(set(v) == {"symbol", "timeframe", "time", "closed", *keys} for v in values)
    expected = talib_keys(bars)
    for i, value in enumerate(values):
        for key, column in expected.items():
            want = float(column[i])
            assert (value[key] is None) if math.isnan(want) else math.isclose(value[key], want, rel_tol=1e-9), (key, i)
    worker = IndicatorSeries("EURUSD", "H1", instances)  # the worker: warmed from the same first bar
    worker.warm(bars[:250])
    published = [worker.on_candle(b) for b in bars[250:]]
    assert values[250:] == published  # bit-identical
    print(f"\nconfigured set: {len(keys)} keys over {len(values)} bars equal TA-Lib, "
          f"{len(published)} bit-identical to the worker's")


def test_the_bridge_refuses_a_bad_indicators_setting_naming_it(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "--env-file", str(tmp_path / "none.env"),
                           "--indicators", "ema:21,stoch:5:3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mt5-bridge: configuration error: INDICATORS: entry 2 'stoch:5:3': stoch takes 3")


# Against a real engine, worker and bridge, all with a non-default INDICATORS
@pytest.mark.timeout(180)
def test_a_configured_set_flows_to_clients_and_get_indicators_computes_any_spec(
        tmp_path, start_engine, start_worker, started):
    """INDICATORS set alike for the worker and the bridge: the live ``indicators`` events carry its
    keys, ``get_indicators`` names its instances and equals them; with ``indicators`` it computes
    that spec over the cached history (TA-Lib over ``get_candles``); a bad spec is refused."""
    from tests.test_indicator_spec import ISSUE_SET, talib_keys
    bridge, last_closed = h1_replay_stack(tmp_path, start_engine, start_worker, started, seed=6,
                                          indicators=("--indicators", ISSUE_SET))
    too_many = ",".join(f"ema:{p}" for p in range(2, 19))  # 17 instances

    async def scenario(c):
        await c.call("subscribe", {"symbol": "EURUSD", "timeframe": "H1"})
        await c.wait_for("indicators", lambda d: d["closed"] and d["time"] == last_closed, timeout=40)
        configured = await c.call("get_indicators", {"symbol": "EURUSD", "timeframe": "H1", "count": 1000})
        custom = await c.call("get_indicators", {"symbol": "EURUSD", "timeframe": "H1", "count": 1000,
                                                 "indicators": CUSTOM_SPEC})
        candles = await c.call("get_candles", {"symbol": "EURUSD", "timeframe": "H1", "count": 1000})
        refused = [await c.call("get_indicators", {"symbol": "EURUSD", "timeframe": "H1", "indicators": spec})
                   for spec in ("ema:9,macd:12:26", "rsi:14,sma:1,foo:3", "a=ema:9,a=sma:5", too_many, 5,
                                "ema:9,wma:1001")]
        return [d for d in c.of("indicators") if d["closed"]], configured, custom, candles, refused

    live, configured, custom, candles, refused = run(scenario, bridge, timeout=60.0)
    instances = parse_indicators(ISSUE_SET)
    assert configured["indicators"] == [{"name": i.name, "kind": i.kind.name, "params": list(i.params),
                                         "keys": list(i.keys)} for i in instances]
    keys = {k for i in instances for k in i.keys}
    closed_bars = [b for b in candles["candles"] if b["closed"]]
    assert len(live) >= 100 and all(set(d) == {"symbol", "timeframe", "time", "closed", *keys} for d in live)
    by_time = {v["time"]: v for v in configured["values"]}
    assert [v["time"] for v in configured["values"]] == [b["time"] for b in candles["candles"]]
    for event in live:
        assert event == by_time[event["time"]], event["time"]  # the worker's values, bit for bit
    expected = talib_keys(closed_bars)
    expected_custom = custom_talib(closed_bars)
    assert [i["name"] for i in custom["indicators"]] == ["fast", "bb", "stoch_5_3_3", "atr_7", "obv"]
    assert [v["time"] for v in custom["values"]] == [b["time"] for b in candles["candles"]]
    custom_by_time = {v["time"]: v for v in custom["values"]}
    for i, bar in enumerate(closed_bars):
        value = custom_by_time[bar["time"]]
        assert set(value) == {"symbol", "timeframe", "time", "closed", *expected_custom}
        for key, column in expected_custom.items():
            want = float(column[i])
            assert (value[key] is None) if math.isnan(want) else math.isclose(value[key], want, rel_tol=1e-9), key
        for key, column in expected.items():
            want = float(column[i])
            got = by_time[bar["time"]][key]
            assert (got is None) if math.isnan(want) else math.isclose(got, want, rel_tol=1e-9), key
    assert [r["code"] for r in refused] == ["bad_request"] * 6
    messages = [r["message"] for r in refused]
    assert "entry 2 'macd:12:26': macd takes 3 parameter(s)" in messages[0]
    assert "entry 2 'sma:1'" not in messages[1] and "entry 3 'foo:3': unknown kind 'foo'" in messages[1]
    assert "entry 2 'a=sma:5': duplicate name 'a'" in messages[2]
    assert "names 17 indicators, at most 16" in messages[3]
    assert "'indicators' must be a string" in messages[4]
    # a period longer than the MAX_CANDLES bars of history gives no value: refused before it is built
    assert "entry 2 'wma:1001': timeperiod must be at most 1000 here" in messages[5]
    print(f"\n{len(live)} live closed events with {len(keys)} configured keys equal get_indicators; "
          f"custom spec: {len(expected_custom)} keys x {len(closed_bars)} bars equal TA-Lib; refused: {messages}")


def test_the_ind_shape_holds_the_configured_keys():
    """The bridge checks a worker's ind: payload against its INDICATORS: exactly the configured
    keys, numbers or nil; the default set's payload is refused by a bridge configured otherwise."""
    from bridge.config import BridgeConfig
    from bridge.payloads import INDICATOR_VALUES, Malformed, check, shapes_for
    from tests.test_indicator_spec import ISSUE_SET, ohlc_candles
    config = BridgeConfig.load(environ={"INDICATORS": ISSUE_SET}, dotenv=None)
    shapes = shapes_for(config.indicator_set)
    worker = IndicatorSeries("EURUSD", "H1", config.indicator_set)
    worker.warm(ohlc_candles(300)[:-1])
    payload = {**worker.on_candle(ohlc_candles(300)[-1]), "seq": 1, "epoch": 1}
    assert check("ind:EURUSD:H1:", payload, shapes) == ("ind", ("EURUSD", "H1"))
    warming = {**payload, "ema_200": None}
    assert check("ind:EURUSD:H1:", warming, shapes) == ("ind", ("EURUSD", "H1"))
    default = {k: payload[k] for k in ("symbol", "timeframe", "time", "closed", "seq", "epoch")}
    default.update(dict.fromkeys(INDICATOR_VALUES, 1.0))
    check("ind:EURUSD:H1:", default)  # the default shape takes it
    for bad, named in ((default, "no 'ema_9'"), ({k: v for k, v in payload.items() if k != "obv"}, "no 'obv'"),
                       ({**payload, "atr_14": "1"}, "'atr_14' is '1'"),
                       ({**payload, "sma": 1.0}, "unexpected key 'sma'")):
        with pytest.raises(Malformed, match=named):
            check("ind:EURUSD:H1:", bad, shapes)


def test_a_clients_own_set_counts_as_a_request_per_default_sets_worth_of_keys():
    from bridge.api import DEFAULT_KEYS
    from bridge.ratelimit import TokenBucket
    assert DEFAULT_KEYS == 6
    bucket = TokenBucket(rate=20.0, burst=40, now=0.0)
    assert bucket.take(0.0, 39) and not bucket.take(0.0, 2) and bucket.tokens == 1.0  # refused: none taken
    assert bucket.take(0.05, 2) and bucket.tokens == 0.0
