"""pytest-benchmark: one new close for SMA20 + EMA20 + RSI14 + MACD(12,26,9), this core vs peers.

    .venv/bin/python -m pytest benchmarks/bench_indicators.py --benchmark-enable
    .venv/bin/python -m pytest benchmarks/bench_indicators.py --benchmark-enable --benchmark-group-by=group

Group "per-update" times a block of BLOCK closes, each fed to all four indicators in a plain
Python loop: divide the reported time by BLOCK (1,000) for the cost of one new close; it is also
stored as extra_info["ns_per_update"]. Group "per-element" times all four over a 100k array;
divide by 100,000 for ns per element (extra_info["ns_per_element"]). Group "set12-per-bar" times
BLOCK closed bars into the issue's 12-instance catalogue set (extra_info["ns_per_bar"]). Peers that do not import
(talipp, nautilus_trader) are skipped. The peers are the factories of
`benchmarks/indicators_peers.py`, which prints the same comparison as JSON with ratios and targets.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks.indicators_peers import (BATCH_PEERS, NAMES, SET12_PEERS, core_peek_stream, core_stream,
                                         loop_set12, nautilus_stream, not_importable, ohlcv_series,
                                         price_series, talib_stream, talipp_stream)

BLOCK = 1_000
ROUNDS = 50
N_BATCH = 100_000

HISTORY = price_series(2_000, seed=1)
STREAM = price_series(BLOCK, seed=2).tolist()
BATCH = price_series(N_BATCH, seed=3)
BAR_HISTORY = ohlcv_series(2_000, seed=5)
BARS = ohlcv_series(BLOCK, seed=6)
BAR_ROWS = list(zip(*(BARS[k].tolist() for k in ("high", "low", "close", "tick_volume"))))

PER_UPDATE = {
    "core_update": core_stream,
    "core_peek": core_peek_stream,
    "talib_stream": talib_stream,
    "talipp": talipp_stream,
    "nautilus": nautilus_stream,
}


def build(peer: str, factory: Callable, *args) -> dict[str, Callable]:
    """The peer's {name: callable}, or skip the test when the peer does not import."""
    try:
        return factory(*args)
    except ImportError as exc:
        pytest.skip(not_importable(peer, exc))


def block_runner(fns: dict[str, Callable]) -> Callable[[], None]:
    """Feed the BLOCK closes, one by one, to the four per-value callables."""
    a, b, c, d = (fns[name] for name in NAMES)
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


@pytest.mark.benchmark(group="per-update")
@pytest.mark.parametrize("peer", PER_UPDATE)
def test_per_update(benchmark, peer):
    run = block_runner(build(peer, PER_UPDATE[peer], HISTORY))
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=2)
    record(benchmark, "ns_per_update", BLOCK)


@pytest.mark.benchmark(group="per-element")
@pytest.mark.parametrize("peer", BATCH_PEERS)
def test_per_element(benchmark, peer):
    fns = build(peer, BATCH_PEERS[peer])
    calls = [fns[name] for name in NAMES]

    def run():
        for fn in calls:
            fn(BATCH)
    benchmark.extra_info["elements"] = N_BATCH
    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    record(benchmark, "ns_per_element", N_BATCH)


@pytest.mark.benchmark(group="set12-per-bar")
@pytest.mark.parametrize("peer", SET12_PEERS)
def test_set12_per_bar(benchmark, peer):
    fns = build(peer, SET12_PEERS[peer], BAR_HISTORY)
    benchmark.pedantic(lambda: loop_set12(fns, BAR_ROWS), rounds=ROUNDS, warmup_rounds=2)
    record(benchmark, "ns_per_bar", BLOCK)
