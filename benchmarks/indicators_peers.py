"""Cost of one new close for SMA(20), EMA(20), RSI(14) and MACD(12, 26, 9) together: this core
against its peers, measured in ONE run. Prints a JSON object.

    .venv/bin/python benchmarks/indicators_peers.py [--quick] [--out FILE]

Peers (each skipped with a note when it does not import):
  core_update        indicators.{SMA,EMA,RSI,MACD}.update(x), one Python call per indicator
  core_update_many   update_many on a 100k array, per element
  talipp             talipp 2.7.0 `add(x)` then `ind[-1]` (pure Python)
  talib_stream       TA-Lib 0.8 stateful stream handles, `handle.update(x)`
  talib_batch        talib.SMA/EMA/RSI/MACD on a 100k array, per element
  nautilus           NautilusTrader `update_raw(x)` then `.value` (`nautilus_update_raw`: without
                     reading the value); its MACD has no signal line, its RSI uses other smoothing,
                     so it does less work than the others for MACD.

Every stream figure is the median over repeats of (loop time - empty loop time) / N; the empty
loop (`for x in values: pass`) is reported as the baseline. Repeats go round-robin over the peers
so that load from other processes hits them alike.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import indicators  # noqa: E402
from benchmarks.report import emit, machine  # noqa: E402
from indicators import EMA, MACD, RSI, SMA  # noqa: E402

NAMES = ["SMA20", "EMA20", "RSI14", "MACD"]
BATCH_SAMPLES_PER_REPEAT = 5


def price_series(n: int, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50_000.0 + np.cumsum(rng.normal(0.0, 20.0, n))


# ------------------------------------------------------------------------------------------------
# stream peers: each factory takes the warm-up history and returns {name: per-value callable}

def _core_indicators(history: np.ndarray) -> list:
    inds = [SMA(20), EMA(20), RSI(14), MACD(12, 26, 9)]
    for ind in inds:
        ind.update_many(history)
    return inds


def core_stream(history: np.ndarray) -> dict[str, Callable]:
    return {name: ind.update for name, ind in zip(NAMES, _core_indicators(history))}


def core_peek_stream(history: np.ndarray) -> dict[str, Callable]:
    """``peek(x)``: what ``update(x)`` would return, changing nothing. Timed by
    bench_indicators.py only; not in STREAM_PEERS, so this script's JSON leaves it out."""
    return {name: ind.peek for name, ind in zip(NAMES, _core_indicators(history))}


def talib_stream(history: np.ndarray) -> dict[str, Callable]:
    from talib import stream
    handles = [stream.SMA(history, timeperiod=20), stream.EMA(history, timeperiod=20),
               stream.RSI(history, timeperiod=14),
               stream.MACD(history, fastperiod=12, slowperiod=26, signalperiod=9)]
    return {name: h.update for name, h in zip(NAMES, handles)}


def talipp_stream(history: np.ndarray) -> dict[str, Callable]:
    from talipp.indicators import EMA as TEMA, MACD as TMACD, RSI as TRSI, SMA as TSMA
    inds = [TSMA(20), TEMA(20), TRSI(14), TMACD(12, 26, 9)]
    for ind in inds:
        for x in history.tolist():
            ind.add(x)

    def adder(ind):
        add = ind.add

        def step(x):
            add(x)
            return ind[-1]
        return step
    return {name: adder(ind) for name, ind in zip(NAMES, inds)}


def _nautilus_indicators(history: np.ndarray):
    from nautilus_trader.indicators import (ExponentialMovingAverage, MovingAverageConvergenceDivergence,
                                            RelativeStrengthIndex, SimpleMovingAverage)
    inds = [SimpleMovingAverage(20), ExponentialMovingAverage(20), RelativeStrengthIndex(14),
            MovingAverageConvergenceDivergence(12, 26)]
    for ind in inds:
        for x in history.tolist():
            ind.update_raw(x)
    return inds


def nautilus_stream(history: np.ndarray) -> dict[str, Callable]:
    def reader(ind):
        upd = ind.update_raw

        def step(x):
            upd(x)
            return ind.value
        return step
    return {name: reader(ind) for name, ind in zip(NAMES, _nautilus_indicators(history))}


def nautilus_update_raw_stream(history: np.ndarray) -> dict[str, Callable]:
    return {name: ind.update_raw for name, ind in zip(NAMES, _nautilus_indicators(history))}


INSTALL_HINTS = {
    "talipp": "pip install talipp==2.7.0 (the `bench` extra)",
    "nautilus": "optional, ~300 MB: pip install nautilus_trader",
    "nautilus_update_raw": "optional, ~300 MB: pip install nautilus_trader",
    "talib_stream": "TA-Lib==0.8.2 (the `test` extra)",
    "talib_batch": "TA-Lib==0.8.2 (the `test` extra)",
}


def not_importable(peer: str, exc: ImportError) -> str:
    return f"skipped, not importable ({exc}); {INSTALL_HINTS.get(peer, '')}"


STREAM_PEERS = {
    "core_update": core_stream,
    "talib_stream": talib_stream,
    "talipp": talipp_stream,
    "nautilus": nautilus_stream,
    "nautilus_update_raw": nautilus_update_raw_stream,
}


def loop_all4(fns: dict[str, Callable], values: list[float]) -> float:
    a, b, c, d = (fns[n] for n in NAMES)
    t0 = time.perf_counter_ns()
    for x in values:
        a(x)
        b(x)
        c(x)
        d(x)
    return time.perf_counter_ns() - t0


def loop_one(fn: Callable, values: list[float]) -> float:
    t0 = time.perf_counter_ns()
    for x in values:
        fn(x)
    return time.perf_counter_ns() - t0


def loop_empty(values: list[float]) -> float:
    t0 = time.perf_counter_ns()
    for x in values:
        pass
    return time.perf_counter_ns() - t0


# ------------------------------------------------------------------------------------------------
# batch peers: each returns a callable running all four indicators over the array

def core_batch() -> dict[str, Callable]:
    inds = [SMA(20), EMA(20), RSI(14), MACD(12, 26, 9)]
    return {name: ind.update_many for name, ind in zip(NAMES, inds)}


def talib_batch() -> dict[str, Callable]:
    import talib
    return {"SMA20": lambda x: talib.SMA(x, 20), "EMA20": lambda x: talib.EMA(x, 20),
            "RSI14": lambda x: talib.RSI(x, 14), "MACD": lambda x: talib.MACD(x, 12, 26, 9)}


BATCH_PEERS = {"core_update_many": core_batch, "talib_batch": talib_batch}


def measure(n_stream: int, n_batch: int, repeats: int) -> dict:
    history = price_series(2_000, seed=1)
    stream_values = price_series(n_stream, seed=2).tolist()
    batch_values = price_series(n_batch, seed=3)

    skipped: dict[str, str] = {}
    stream_fns: dict[str, dict[str, Callable]] = {}
    for name, factory in STREAM_PEERS.items():
        try:
            stream_fns[name] = factory(history)
        except ImportError as exc:
            skipped[name] = not_importable(name, exc)
    batch_fns: dict[str, dict[str, Callable]] = {}
    for name, factory in BATCH_PEERS.items():
        try:
            batch_fns[name] = factory()
        except ImportError as exc:
            skipped[name] = not_importable(name, exc)

    samples: dict[str, dict[str, list[float]]] = {
        peer: {key: [] for key in ["all4", *NAMES]} for peer in [*stream_fns, *batch_fns]}
    empty: list[float] = []
    for _ in range(repeats):
        base = loop_empty(stream_values)
        empty.append(base / n_stream)
        for peer, fns in stream_fns.items():
            samples[peer]["all4"].append((loop_all4(fns, stream_values) - base) / n_stream)
            for key in NAMES:
                samples[peer][key].append((loop_one(fns[key], stream_values) - base) / n_stream)
        for _ in range(BATCH_SAMPLES_PER_REPEAT):      # cheap, and noisier: more samples
            for peer, fns in batch_fns.items():
                total = 0.0
                for key in NAMES:
                    fn = fns[key]
                    t0 = time.perf_counter_ns()
                    fn(batch_values)
                    dt = (time.perf_counter_ns() - t0) / n_batch
                    samples[peer][key].append(dt)
                    total += dt
                samples[peer]["all4"].append(total)

    ns = {peer: {key: round(statistics.median(v), 2) for key, v in by_key.items()}
          for peer, by_key in samples.items()}
    return {"ns": ns, "empty_loop_ns": round(statistics.median(empty), 2), "skipped": skipped}


def check_core_equals_talib(x: np.ndarray) -> str:
    try:
        import talib
    except ImportError:
        return "TA-Lib not importable: not checked"
    pairs = [(SMA(20).update_many(x), talib.SMA(x, 20)), (EMA(20).update_many(x), talib.EMA(x, 20)),
             (RSI(14).update_many(x), talib.RSI(x, 14))]
    pairs += list(zip(MACD(12, 26, 9).update_many(x), talib.MACD(x, 12, 26, 9)))
    same = all(np.array_equal(a, b, equal_nan=True) for a, b in pairs)
    return "bit-identical" if same else "DIFFERENT"


def version_of(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer values and repeats (smoke run)")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)
    n_stream, n_batch, repeats = (2_000, 10_000, 3) if args.quick else (20_000, 100_000, 9)

    res = measure(n_stream, n_batch, repeats)
    ns = res["ns"]

    def ratio(a: str, b: str, key: str = "all4") -> float | None:
        if a in ns and b in ns and ns[b][key] > 0:
            return round(ns[a][key] / ns[b][key], 2)
        return None

    ratios = {
        "talipp/core_update": ratio("talipp", "core_update"),
        "nautilus/core_update": ratio("nautilus", "core_update"),
        "nautilus_update_raw/core_update": ratio("nautilus_update_raw", "core_update"),
        "talib_stream/core_update": ratio("talib_stream", "core_update"),
        "core_update_many/talib_batch": ratio("core_update_many", "talib_batch"),
    }
    targets = {
        "core_update >= 20x faster than talipp": {
            "value": ratios["talipp/core_update"], "target": ">= 20",
            "met": None if ratios["talipp/core_update"] is None else ratios["talipp/core_update"] >= 20},
        "core_update no slower than nautilus": {
            "value": ratios["nautilus/core_update"], "target": ">= 1",
            "met": None if ratios["nautilus/core_update"] is None else ratios["nautilus/core_update"] >= 1},
        "core_update_many within 1.5x of talib batch": {
            "value": ratios["core_update_many/talib_batch"], "target": "<= 1.5",
            "met": None if ratios["core_update_many/talib_batch"] is None
            else ratios["core_update_many/talib_batch"] <= 1.5},
    }
    out = {
        "benchmark": "one new close for SMA20 + EMA20 + RSI14 + MACD(12,26,9): ns per update",
        "config": {"stream_values": n_stream, "batch_values": n_batch, "repeats": repeats,
                   "batch_samples": repeats * BATCH_SAMPLES_PER_REPEAT,
                   "statistic": "median over repeats, empty-loop time subtracted (stream peers)"},
        "machine": machine(platform=platform.platform()),
        "versions": {"indicators": indicators.__name__, "TA-Lib": version_of("TA-Lib"),
                     "talipp": version_of("talipp"), "nautilus_trader": version_of("nautilus_trader"),
                     "numpy": np.__version__},
        "baseline": {"empty_python_loop_ns": res["empty_loop_ns"],
                     "facts_md_anchors_all4_ns": {"talipp": 7200, "talib_stream": "550-630",
                                                  "nautilus_update_raw": 1400, "talib_batch": "12-14"}},
        "ns_per_update": ns,
        "ratios": ratios,
        "targets": targets,
        "core_vs_talib_values": check_core_equals_talib(price_series(100_000, seed=4)),
        "skipped": res["skipped"],
        "notes": [
            "core_update_many and talib_batch are per element of a 100k array (allocation of the outputs included)",
            "talipp keeps every input/output in growing lists (not purged here)",
            "nautilus MACD has no signal line and its RSI/EMA seed differently, so it is not value-equivalent",
        ],
    }
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
