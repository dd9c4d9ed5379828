"""The fast tick encoders beside the encoders they replaced and msgpack-python, in ONE run.
Prints JSON.

    .venv/bin/python benchmarks/tick_encoders.py [--rounds 15] [--ticks 10000] [--compare REV ...] [--out FILE]

Each variant encodes the same ticks; rounds alternate the variants (each round starting with the
next), and every figure is the best (minimum) over rounds, with the median beside it (``encode``
is timed in chunks of ``CHUNK`` ticks, its best the sum of each chunk's best: a busy machine
interrupts short chunks less):
  current   engine/protocol.py of this checkout
  REV       engine/protocol.py at each ``--compare`` git revision (default ``f681f41^``, the last
            before canonical integer widths, whose encoders wrote every integer as a uint64)
  msgpack   msgpack-python itself: ``packb`` of the tick's map, of the list of maps, and
            ``unpackb`` of each frame
Operations, on ``--ticks`` ticks of one symbol stamped from seq 1 (so seq takes the fixint,
uint8 and uint16 forms):
  encode       ns per tick: ``TickEncoder.encode`` called once per tick, as the engine's loop does
  pack_ticks   ms: ``pack_ticks`` of the columns, seq and epoch included (a ``ticks`` reply)
  tick_frames  ms: ``tick_frames`` of the columns (a bar replay's frames), where it exists
  values_of    ms: ``TickEncoder.values_of`` of the frames the variant's own encoder wrote
Two markets: ``forex`` (volume 0, flags 6: the layout changes only with seq's width) and
``exchange`` (volumes 0-500 and MT5's flag combinations: a layout per tick, nearly).
``publish_path``: the engine's in-process publish path per tick (``on_ticks`` then
``aggregate_pending``, the sim at rate 0 over 5 and 200 symbols, no journal: as
benchmarks/tick_journal.py's ``engine_no_journal``), each variant's ``TickEncoder`` swapped in.
``ratio_to_REV`` is current / REV on the best figures (below 1: current is faster).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgpack
import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit, machine, module_at  # noqa: E402
from benchmarks.tick_journal import CLOCK_MS, _Discard, per_tick_us  # noqa: E402
from engine import protocol  # noqa: E402
from engine.service import EngineService  # noqa: E402
from engine.sources.sim import SimSource  # noqa: E402
from tests.procs import engine_config  # noqa: E402

SYMBOL = "EURUSD"
EPOCH = 1_796_000_000_000
PRE_CANONICAL = "f681f41^"
CHUNK = 500
# MT5's TICK_FLAG_* combinations an exchange symbol's ticks carry (bid, ask, last, volume, buy, sell).
EXCHANGE_FLAGS = (2, 4, 6, 24, 56, 88, 30)


def columns(market: str, n: int) -> dict[str, np.ndarray]:
    """``n`` ticks of ``market`` as ``pack_ticks`` takes them."""
    rng = np.random.default_rng(17)
    bid = np.round(1.08 + np.cumsum(rng.normal(0, 3e-5, n)), 5)
    exchange = market == "exchange"
    return {"bid": bid, "ask": np.round(bid + 1.2e-4, 5),
            "last": np.round(bid + 6e-5, 5) if exchange else np.zeros(n),
            "volume": rng.integers(0, 500, n) if exchange else np.zeros(n, np.int64),
            "time_msc": EPOCH + 100 * np.arange(n, dtype=np.int64),
            "flags": rng.choice(EXCHANGE_FLAGS, n) if exchange else np.full(n, 6, np.int64),
            "volume_real": rng.integers(0, 500, n) / 100 if exchange else np.zeros(n)}


def encode_args(cols: dict[str, np.ndarray]) -> list[tuple]:
    """``TickEncoder.encode``'s arguments per tick, Python numbers as the engine's loop has them."""
    names = protocol.TICK_FIELDS[1:]
    n = len(cols["time_msc"])
    return list(zip(*(cols[name].tolist() for name in names), range(1, n + 1), [EPOCH] * n))


def tick_map(args: tuple) -> dict:
    return {"symbol": SYMBOL, **dict(zip((*protocol.TICK_FIELDS[1:], "seq", "epoch"), args))}


def operations(module: ModuleType | None, cols: dict[str, np.ndarray]
               ) -> dict[str, list[Callable[[], object]]]:
    """What each operation runs for one variant (``None``: msgpack-python), ready to time: the
    chunks of ``encode``, the whole batch of the others."""
    args = encode_args(cols)
    chunks = [args[start:start + CHUNK] for start in range(0, len(args), CHUNK)]
    maps = [tick_map(a) for a in args]
    if module is None:
        frames = [msgpack.packb(m) for m in maps]
        map_chunks = [maps[start:start + CHUNK] for start in range(0, len(maps), CHUNK)]
        return {"encode": [functools.partial(pack_each, chunk) for chunk in map_chunks],
                "pack_ticks": [lambda: msgpack.packb(maps)],
                "values_of": [lambda: [msgpack.unpackb(f) for f in frames]]}
    encoder = module.TickEncoder(SYMBOL)
    frames = [encoder.encode(*a) for a in args]
    ops = {"encode": [functools.partial(encode_each, encoder, chunk) for chunk in chunks],
           "pack_ticks": [lambda: module.pack_ticks(SYMBOL, cols, 1, EPOCH)],
           "values_of": [lambda: encoder.values_of(frames)]}
    if hasattr(module, "tick_frames"):
        ops["tick_frames"] = [lambda: module.tick_frames(SYMBOL, cols, 1, EPOCH)]
    return ops


def pack_each(maps: list[dict]) -> None:
    """``msgpack.packb`` once per tick's map."""
    for tick in maps:
        msgpack.packb(tick)


def encode_each(encoder, args: list[tuple]) -> None:
    """``encoder.encode`` once per tick, called as the engine's loop calls it."""
    for bid, ask, last, volume, time_msc, flags, volume_real, seq, epoch in args:
        encoder.encode(bid, ask, last, volume, time_msc, flags, volume_real, seq, epoch)


def seconds(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def measure(variants: dict[str, ModuleType | None], market: str, n: int, rounds: int) -> dict:
    """Best and median of every operation of every variant on ``market``'s ticks."""
    cols = columns(market, n)
    ops = {label: operations(module, cols) for label, module in variants.items()}
    times: dict[tuple[str, str], list[list[float]]] = {}  # per round, per chunk
    labels = list(ops)
    for round_ in range(rounds):
        # Each round starts with the next variant: what runs before an operation (how much memory
        # it left allocated or freed) changes its time.
        for label in labels[round_ % len(labels):] + labels[:round_ % len(labels)]:
            for op, runs in ops[label].items():
                times.setdefault((op, label), []).append([seconds(run) for run in runs])
    best = {key: sum(map(min, zip(*spent))) for key, spent in times.items()}
    out: dict = {}
    for (op, label), spent in times.items():
        scale, unit, digits = (1e9 / n, "ns_per_tick", 1) if op == "encode" else (1e3, "ms", 3)
        median = statistics.median(map(sum, spent))
        out.setdefault(op, {})[label] = {f"best_{unit}": round(best[(op, label)] * scale, digits),
                                         f"median_{unit}": round(median * scale, digits)}
    for op, by_label in out.items():
        for label in variants:
            if label != "current" and (op, label) in times:
                by_label[f"ratio_to_{label}"] = round(best[(op, "current")] / best[(op, label)], 3)
    return out


def publish_path(variants: dict[str, ModuleType], symbols: list[str], rounds: int, batches: int = 200) -> dict:
    """CPU µs per tick of the engine's publish path with each variant's ``TickEncoder``."""
    cfg = engine_config(symbols=",".join(symbols), rate="0")
    ctx = zmq.Context()
    svc = EngineService(cfg, SimSource(cfg.symbols, seed=3, rate=0), ctx)
    svc.open()
    try:
        svc._journal = _Discard()
        topics = {name: topic for name, (topic, _) in svc._tick_out.items()}
        encoders = {label: {name: (topic, module.TickEncoder(name)) for name, topic in topics.items()}
                    for label, module in variants.items()}
        clock, spent = CLOCK_MS, {label: [] for label in variants}

        def publish(batch: list) -> None:
            svc.on_ticks(batch)
            svc.aggregate_pending()

        for _ in range(rounds):
            for label in variants:
                svc._tick_out = encoders[label]
                clock += batches  # the market moves on; the sim's work is not timed
                spent[label].append(per_tick_us([svc.source.poll(clock - batches + i) for i in range(batches)],
                                                publish))
    finally:
        svc.close()
        ctx.destroy(0)
    out: dict = {label: {"best_us_per_tick": round(min(v), 3),
                         "median_us_per_tick": round(statistics.median(v), 3)} for label, v in spent.items()}
    for label in variants:
        if label != "current":
            out[f"ratio_to_{label}"] = round(min(spent["current"]) / min(spent[label]), 3)
    return out



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ticks", type=int, default=10_000)
    parser.add_argument("--compare", metavar="REV", nargs="+", default=[PRE_CANONICAL],
                        help="git revisions whose engine/protocol.py is measured beside this one")
    parser.add_argument("--out")
    args = parser.parse_args()
    variants = {"current": protocol, **{rev: module_at(rev, "engine/protocol.py") for rev in args.compare}, "msgpack": None}
    result = {"benchmark": "tick_encoders",
              "machine": machine(msgpack=".".join(map(str, msgpack.version)), numpy=np.__version__),
              "ticks": args.ticks, "rounds": args.rounds,
              **{market: measure(variants, market, args.ticks, args.rounds) for market in ("forex", "exchange")}}
    encoders = {label: module for label, module in variants.items() if module is not None}
    five, many = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"], [f"SIM{i:03d}" for i in range(200)]
    result["publish_path"] = {"symbols_5": publish_path(encoders, five, args.rounds),
                              "symbols_200": publish_path(encoders, many, args.rounds)}
    emit(result, args.out)


if __name__ == "__main__":
    main()
