"""pytest-benchmark: the engine's per-tick hot path, candle aggregation and tick encoding.

    .venv/bin/python -m pytest benchmarks/bench_aggregation.py --benchmark-enable

Each round feeds BLOCK ticks of one symbol (a random walk, one tick every 100 ms, so M1 bars
roll every 600 ticks as in a busy market) to a fresh ``CandleAggregator`` with the engine's
default timeframes, or to a ``TickEncoder``: divide the reported time by BLOCK for one tick
(also stored as extra_info["ns_per_tick"]).
"""
from __future__ import annotations

import numpy as np

from engine.aggregation import CandleAggregator
from engine.config import DEFAULT_TIMEFRAMES
from engine.models import Tick
from engine.protocol import TickEncoder
from engine.timeframes import TIMEFRAMES

BLOCK = 10_000
ROUNDS = 30
POINT = 0.00001
T0_MS = 1_772_704_800_000  # 2026-03-05 10:00 UTC

_bids = np.round(1.08 + np.cumsum(np.random.default_rng(7).normal(0, 3 * POINT, BLOCK)), 5).tolist()
TICKS = [Tick("EURUSD", T0_MS + 100 * k, bid, round(bid + 12 * POINT, 5), 0.0, k % 3)
         for k, bid in enumerate(_bids)]


def _ns_per_tick(benchmark) -> None:
    benchmark.extra_info["ns_per_tick"] = round(benchmark.stats.stats.mean * 1e9 / BLOCK, 1)


def test_on_tick(benchmark):
    def fresh():
        return (CandleAggregator("EURUSD", POINT, [TIMEFRAMES[t] for t in DEFAULT_TIMEFRAMES]),), {}

    def run(agg):
        on_tick = agg.on_tick
        for t in TICKS:
            on_tick(t)

    benchmark.pedantic(run, setup=fresh, rounds=ROUNDS)
    _ns_per_tick(benchmark)


def test_tick_encoder(benchmark):
    encode = TickEncoder("EURUSD").encode

    def run():
        for seq, (_, time_msc, bid, ask, last, volume, flags, volume_real) in enumerate(TICKS, 1):
            encode(bid, ask, last, volume, time_msc, flags, volume_real, seq, 1)

    benchmark.pedantic(run, rounds=ROUNDS)
    _ns_per_tick(benchmark)
