"""pytest-benchmark: one new close for SMA20 + EMA20 + RSI14 + MACD(12,26,9), this core vs peers.

    .venv/bin/python -m pytest benchmarks/bench_indicators.py --benchmark-enable
    .venv/bin/python -m pytest benchmarks/bench_indicators.py --benchmark-enable --benchmark-group-by=group

Group "per-update" times a block of BLOCK closes, each fed to all four indicators in a plain
Python loop: divide the reported time by BLOCK (1,000) for the cost of one new close; it is also
stored as extra_info["ns_per_update"]. Group "per-element" times all four over a 100k array;
divide by 100,000 for ns per element (extra_info["ns_per_element"]). Peers that do not import
(talipp, nautilus_trader) are skipped. `benchmarks/indicators_peers.py` prints the same comparison
as JSON with ratios and targets.
"""
from __future__ import annotations

import numpy as np
import pytest

from indicators import EMA, MACD, RSI, SMA

BLOCK = 1_000
ROUNDS = 50
N_BATCH = 100_000


def prices(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50_000.0 + np.cumsum(rng.normal(0.0, 20.0, n))


HISTORY = prices(2_000, 1)
STREAM = prices(BLOCK, 2).tolist()
BATCH = prices(N_BATCH, 3)


def block_runner(a, b, c, d):
    """Feed the BLOCK closes, one by one, to the four per-value callables."""
    values = STREAM

    def run():
        for x in values:
            a(x)
            b(x)
            c(x)
            d(x)
    return run


def record(benchmark, key: str, n: int) -> None:
    stats = getattr(benchmark, "stats", None)          # None under --benchmark-disable
    if stats is not None:
        benchmark.extra_info[key] = round(stats.stats.median * 1e9 / n, 2)


def run_per_update(benchmark, run):
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=2)
    record(benchmark, "ns_per_update", BLOCK)


# ------------------------------------------------------------------------------------------------
# one new close

@pytest.mark.benchmark(group="per-update")
def test_core_update(benchmark):
    inds = [SMA(20), EMA(20), RSI(14), MACD(12, 26, 9)]
    for ind in inds:
        ind.update_many(HISTORY)
    run_per_update(benchmark, block_runner(*(ind.update for ind in inds)))


@pytest.mark.benchmark(group="per-update")
def test_core_peek(benchmark):
    inds = [SMA(20), EMA(20), RSI(14), MACD(12, 26, 9)]
    for ind in inds:
        ind.update_many(HISTORY)
    run_per_update(benchmark, block_runner(*(ind.peek for ind in inds)))


@pytest.mark.benchmark(group="per-update")
def test_talib_stream_update(benchmark):
    stream = pytest.importorskip("talib.stream")
    handles = [stream.SMA(HISTORY, timeperiod=20), stream.EMA(HISTORY, timeperiod=20),
               stream.RSI(HISTORY, timeperiod=14),
               stream.MACD(HISTORY, fastperiod=12, slowperiod=26, signalperiod=9)]
    run_per_update(benchmark, block_runner(*(h.update for h in handles)))


@pytest.mark.benchmark(group="per-update")
def test_talipp_add(benchmark):
    ti = pytest.importorskip("talipp.indicators")
    inds = [ti.SMA(20), ti.EMA(20), ti.RSI(14), ti.MACD(12, 26, 9)]
    for ind in inds:
        for x in HISTORY.tolist():
            ind.add(x)

    def adder(ind):
        add = ind.add

        def step(x):
            add(x)
            return ind[-1]
        return step
    run_per_update(benchmark, block_runner(*(adder(ind) for ind in inds)))


@pytest.mark.benchmark(group="per-update")
def test_nautilus_update_raw(benchmark):
    nt = pytest.importorskip("nautilus_trader.indicators")
    inds = [nt.SimpleMovingAverage(20), nt.ExponentialMovingAverage(20), nt.RelativeStrengthIndex(14),
            nt.MovingAverageConvergenceDivergence(12, 26)]          # no signal line in Nautilus
    for ind in inds:
        for x in HISTORY.tolist():
            ind.update_raw(x)

    def reader(ind):
        upd = ind.update_raw

        def step(x):
            upd(x)
            return ind.value
        return step
    run_per_update(benchmark, block_runner(*(reader(ind) for ind in inds)))


# ------------------------------------------------------------------------------------------------
# a 100k array

@pytest.mark.benchmark(group="per-element")
def test_core_update_many(benchmark):
    inds = [SMA(20), EMA(20), RSI(14), MACD(12, 26, 9)]

    def run():
        for ind in inds:
            ind.update_many(BATCH)
    benchmark.extra_info["elements"] = N_BATCH
    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    record(benchmark, "ns_per_element", N_BATCH)


@pytest.mark.benchmark(group="per-element")
def test_talib_batch(benchmark):
    talib = pytest.importorskip("talib")

    def run():
        talib.SMA(BATCH, 20)
        talib.EMA(BATCH, 20)
        talib.RSI(BATCH, 14)
        talib.MACD(BATCH, 12, 26, 9)
    benchmark.extra_info["elements"] = N_BATCH
    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    record(benchmark, "ns_per_element", N_BATCH)
