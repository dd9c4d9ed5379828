"""Ranges older than the engine's memory, answered from a recording (``RECORD_DIR``)."""
from __future__ import annotations

import pytest

from engine.client import RpcClient, Unavailable
from engine.models import Candle, Tick
from engine.protocol import candle_topic, encode, tick_topic
from engine.recorder import Recorder, RecorderConfig
from engine.recording_store import RecordingStore
from engine.service import EngineService
from engine.sources.sim import SimSource
from engine.timeframes import timeframe
from tests.procs import engine_config, engine_thread

T0 = 1_704_153_600_000  # 2024-01-02 00:00 UTC, long before the sim's memory
DAY_MS = 86_400_000


def record(directory, ticks: list[Tick], candles: list[Candle]) -> None:
    """Write ``ticks`` and closed ``candles`` the way mt5-recorder does, from bus frames."""
    recorder = Recorder(RecorderConfig(record_dir=str(directory)))
    for seq, tick in enumerate(ticks, 1):
        recorder.handle([tick_topic(tick.symbol), encode({**tick.to_payload(), "seq": seq, "epoch": 7})], 0.0)
    for seq, candle in enumerate(candles, 1):
        recorder.handle([candle_topic(candle.symbol, candle.timeframe),
                         encode({**candle.to_payload(True), "seq": seq, "epoch": 7})], 0.0)
    recorder.flush()


@pytest.fixture
def recording(tmp_path):
    # Two days of EURUSD ticks, an hour apart, and their M1 bars; one GBPUSD tick.
    ticks = [Tick("EURUSD", T0 + h * 3_600_000 + k, 1.1 + h * 1e-5, 1.1001 + h * 1e-5, 0.0, k, 6, float(k))
             for h in range(48) for k in range(2)]
    ticks.append(Tick("GBPUSD", T0, 1.27, 1.2701))
    candles = [Candle("EURUSD", "M1", T0 // 1000 + h * 3600, 1.1, 1.2, 1.0, 1.15, 2, 10, 0) for h in range(48)]
    record(tmp_path, ticks, candles)
    return tmp_path, ticks, candles


def test_tick_ranges_come_back_in_order_across_date_partitions(recording) -> None:
    directory, ticks, _ = recording
    store = RecordingStore(directory)
    eur = [t for t in ticks if t.symbol == "EURUSD"]
    assert store.tick_range("EURUSD", T0, T0 + 2 * DAY_MS, 10_000) == eur
    # A range across midnight, cut by count.
    got = store.tick_range("EURUSD", T0 + 23 * 3_600_000, T0 + 30 * 3_600_000, 5)
    assert got == [t for t in eur if t.time_msc >= T0 + 23 * 3_600_000][:5]
    assert store.tick_range("EURUSD", T0 + 3 * DAY_MS, T0 + 4 * DAY_MS, 10) == []
    assert store.tick_range("USDJPY", T0, T0 + DAY_MS, 10) is None  # never recorded
    assert RecordingStore(directory / "nowhere").tick_range("EURUSD", T0, T0 + 1, 1) is None


def test_candle_ranges_are_the_recorded_closed_bars(recording) -> None:
    directory, _, candles = recording
    store = RecordingStore(directory)
    got = store.candle_range("EURUSD", timeframe("M1"), T0 // 1000 + 3600, T0 // 1000 + 5 * 3600, 100)
    assert got == candles[1:6]
    assert store.candle_range("EURUSD", timeframe("H1"), T0 // 1000, T0 // 1000 + DAY_MS, 100) == []


class NoStoreSim(SimSource):
    """A source that keeps nothing older than the engine's memory (as a replay of bars)."""

    def tick_range(self, symbol, from_msc, to_msc, count):
        return None

    def candle_range(self, symbol, timeframe, from_s, to_s, count):
        return None


def test_the_engine_answers_old_ranges_from_the_recording(recording, zmq_ctx) -> None:
    directory, ticks, candles = recording
    for record_dir, answers in ((str(directory), True), ("", False)):
        cfg = engine_config(symbols="EURUSD,GBPUSD", timeframes="M1", record_dir=record_dir)
        with engine_thread(EngineService(cfg, NoStoreSim(cfg.symbols, rate=100), zmq_ctx)):
            with RpcClient(cfg.rpc_endpoint, timeout_ms=5000, ctx=zmq_ctx) as rpc:
                if not answers:
                    with pytest.raises(Unavailable, match="keeps none older"):
                        rpc.ticks("EURUSD", T0, T0 + DAY_MS, 10)
                    continue
                got = rpc.ticks("EURUSD", T0, T0 + DAY_MS - 1, 10_000)
                bars = rpc.candle_range("EURUSD", "M1", T0 // 1000, T0 // 1000 + 2 * 3600)
    expected = [t.to_payload() for t in ticks if t.symbol == "EURUSD" and t.time_msc < T0 + DAY_MS]
    assert [{k: v for k, v in t.items() if k in expected[0]} for t in got] == expected
    assert bars == [c.to_payload(True) for c in candles[:3]]
