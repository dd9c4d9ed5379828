"""The indicator worker as a real process between a real engine and plain pyzmq clients."""
import math
import time

import msgpack
import numpy as np
import talib
import zmq

from engine.sources.sim import SimSource
from engine.timeframes import TIMEFRAMES
from tests.procs import EngineProcess, collect, subscriber

FIVE = {"EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"}


def rpc(ctx, endpoint, request):
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    sock.send(msgpack.packb(request))
    assert sock.poll(5000)
    reply = msgpack.unpackb(sock.recv())
    sock.close(0)
    return reply


def expected_values(closes):
    macd, signal, hist = talib.MACD(closes)
    return {"sma": talib.SMA(closes, 20), "ema": talib.EMA(closes, 20), "rsi": talib.RSI(closes, 14),
            "macd": macd, "macd_signal": signal, "macd_hist": hist}


def assert_matches(message, expected, i):
    for key, series in expected.items():
        want = series[i]
        if math.isnan(want):
            assert message[key] is None, (key, i)
        else:
            assert math.isclose(message[key], want, rel_tol=1e-9), (key, i, message[key], want)


def write_mt5_h1_export(path, bars):
    lines = ["<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>"]
    for b in bars:
        t = time.gmtime(b.time)
        lines.append(f"{t.tm_year}.{t.tm_mon:02d}.{t.tm_mday:02d}\t{t.tm_hour:02d}:00:00\t"
                     f"{b.open:.5f}\t{b.high:.5f}\t{b.low:.5f}\t{b.close:.5f}\t{b.tick_volume}\t0\t{b.spread}")
    path.write_text("\n".join(lines) + "\n")


def test_a_candle_without_a_finite_tick_volume_is_refused():
    """OBV reads the candle's tick_volume, so the worker checks it like the prices."""
    import pytest

    from engine.protocol import ProtocolError, encode
    from indicators.worker import read_candle
    good = {"symbol": "EURUSD", "timeframe": "M1", "time": 60, "open": 1.1, "high": 1.2, "low": 1.0,
            "close": 1.15, "tick_volume": 3, "closed": True, "seq": 1, "epoch": 1}
    assert read_candle(b"candle:EURUSD:M1:", encode(good))["tick_volume"] == 3
    for bad in (math.nan, "3", None):
        with pytest.raises(ProtocolError, match="tick_volume must be a finite number"):
            read_candle(b"candle:EURUSD:M1:", encode({**good, "tick_volume": bad}))


def test_closed_values_equal_talib_over_the_engine_candle_history(tmp_path, start_engine, start_worker, zmq_ctx):
    """Replay 400 H1 bars fast; every closed ind: message equals TA-Lib at that bar."""
    sim = SimSource(["EURUSD"], seed=11, clock_ms=1_790_000_000_000)
    sim.start()
    export = tmp_path / "EURUSD_H1_test.csv"
    write_mt5_h1_export(export, sim.history("EURUSD", TIMEFRAMES["H1"], 400))
    # 400 hours of market in about 8 s of wall clock.
    engine = start_engine("--source", "replay", "--replay-file", str(export), "--replay-speed", "180000",
                          "--timeframes", "H1", "--max-candles", "1000")
    listener = subscriber(zmq_ctx, engine.bus, b"ind:EURUSD:H1:")
    start_worker(engine)
    messages = [m for _, m in collect(
        listener, lambda ms: sum(m["closed"] for _, m in ms) >= 150, 60)]
    closed = [m for m in messages if m["closed"]]
    assert len(closed) >= 150
    history = rpc(zmq_ctx, engine.rpc, {"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 1000})["data"]
    bars = [c for c in history if c["closed"]]
    closes = np.array([c["close"] for c in bars])
    index = {c["time"]: i for i, c in enumerate(bars)}
    expected = expected_values(closes)
    for m in closed:
        assert_matches(m, expected, index[m["time"]])
    times = [m["time"] for m in closed]
    assert times == sorted(set(times)), "each bar closes once, in order"
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_first_values_are_warm_from_history(engine, start_worker, zmq_ctx):
    listener = subscriber(zmq_ctx, engine.bus, b"ind:")
    start_worker(engine)
    first = collect(listener, lambda ms: len(ms) >= 1, 20)
    assert first, "no indicator message"
    message = first[0][1]
    assert {"symbol", "timeframe", "time", "closed", "sma", "ema", "rsi", "macd", "macd_signal",
            "macd_hist", "seq", "epoch"} <= set(message)
    assert all(message[k] is not None for k in ("sma", "ema", "rsi", "macd", "macd_signal", "macd_hist"))
    assert 0 <= message["rsi"] <= 100


def test_shards_split_the_symbols_without_overlap(engine, start_worker, zmq_ctx):
    listener = subscriber(zmq_ctx, engine.bus, b"ind:", b"health:indicators:")
    start_worker(engine, "--shard", "0/2")
    start_worker(engine, "--shard", "1/2")
    messages = collect(listener, lambda ms: {m["symbol"] for t, m in ms if t.startswith(b"ind:")} == FIVE
                       and len({t for t, _ in ms if t.startswith(b"health:")}) == 2, 20)
    by_shard = {}
    health = {t: m for t, m in messages if t.startswith(b"health:")}
    assert set(health) == {b"health:indicators:0:", b"health:indicators:1:"}
    for m in health.values():
        by_shard[m["shard"]] = m["symbols"]
    assert sum(by_shard.values()) == 5
    ind = [m for t, m in messages if t.startswith(b"ind:")]
    assert {m["symbol"] for m in ind} == FIVE


def test_engine_restart_makes_the_worker_warm_up_again(start_engine, start_worker, zmq_ctx):
    engine = start_engine("--symbols", "EURUSD", "--timeframes", "M1")
    listener = subscriber(zmq_ctx, engine.bus, b"health:indicators:")
    start_worker(engine)
    assert collect(listener, lambda ms: any(m["series"] == 1 for _, m in ms), 10)
    engine.stop()
    restarted = EngineProcess(["--symbols", "EURUSD", "--timeframes", "M1"], bus_port=engine.bus_port,
                              rpc_port=engine.rpc_port, pub_port=engine.pub_port)
    try:
        restarted.start()
        health = collect(listener, lambda ms: any(m["rewarms"] >= 1 for _, m in ms), 20)
        assert any(m["rewarms"] >= 1 and m["status"] == "ok" for _, m in health)
    finally:
        restarted.stop()


def test_a_configured_set_publishes_its_keys_equal_to_talib_over_the_engine_history(
        tmp_path, start_engine, start_worker, zmq_ctx):
    """INDICATORS with OHLC and volume indicators: every key of every closed ind: message equals
    TA-Lib over the engine's candle history (RPC candles) at that bar."""
    from tests.test_indicator_spec import ISSUE_SET, talib_keys
    sim = SimSource(["EURUSD"], seed=12, clock_ms=1_790_000_000_000)
    sim.start()
    export = tmp_path / "EURUSD_H1_test.csv"
    write_mt5_h1_export(export, sim.history("EURUSD", TIMEFRAMES["H1"], 400))
    engine = start_engine("--source", "replay", "--replay-file", str(export), "--replay-speed", "180000",
                          "--timeframes", "H1", "--max-candles", "1000")
    listener = subscriber(zmq_ctx, engine.bus, b"ind:EURUSD:H1:")
    start_worker(engine, "--indicators", ISSUE_SET)
    # until the slowest (EMA 200) has values for a while
    messages = [m for _, m in collect(
        listener, lambda ms: sum(m["closed"] and m["ema_200"] is not None for _, m in ms) >= 20, 60)]
    closed = [m for m in messages if m["closed"]]
    assert len(closed) >= 100
    history = rpc(zmq_ctx, engine.rpc, {"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 1000})["data"]
    bars = [c for c in history if c["closed"]]
    index = {c["time"]: i for i, c in enumerate(bars)}
    expected = talib_keys(bars)
    for m in messages:
        assert set(m) == {"symbol", "timeframe", "time", "closed", "seq", "epoch", *expected}
    for m in closed:
        assert_matches(m, expected, index[m["time"]])
    assert sum(m["ema_200"] is not None for m in closed) >= 20
