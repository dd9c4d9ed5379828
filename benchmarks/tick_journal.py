"""What the tick journal costs the engine's publish path, beside the same path without it, in ONE
run. Prints JSON.

    .venv/bin/python benchmarks/tick_journal.py [--rounds 7] [--batches 400] [--compare REV] [--out FILE]

An in-process engine (the sim at rate 0: batches of 512 ticks, round-robin over its symbols)
publishes onto its embedded bus (no subscriber) and folds the ticks into candles, as its loop
does: ``on_ticks`` then ``aggregate_pending``, which hands them to the journal. Per tick, CPU
time of this thread (``time.process_time``), for 5 and for 200 symbols:
  engine_no_journal   the publish path with a journal that keeps nothing (the baseline)
  engine_journal      the same path with the journal (TICK_JOURNAL=100,000)
  journal_only        ``TickJournal.append`` alone on the same kind of batches (flushes included)
With ``--compare REV`` (a git revision), ``engine/tick_journal.py`` of that revision is measured
too, as ``engine_journal@REV`` and ``journal_only@REV``: before and after, in the same run.
Rounds alternate the variants, each on fresh batches; figures are the median over rounds (and
the best). ``journal_share`` is (engine_journal - engine_no_journal) / engine_journal: the part
of the engine's peak publish rate the journal takes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit, machine, module_at  # noqa: E402
from engine import tick_journal  # noqa: E402
from engine.models import Tick  # noqa: E402
from engine.service import EngineService  # noqa: E402
from engine.sources.sim import SimSource  # noqa: E402
from tests.procs import engine_config  # noqa: E402

CLOCK_MS = 1_800_000_000_000
CAPACITY = 100_000


def per_tick_us(batches: list, run, ticks: int | None = None) -> float:
    """CPU µs per tick of ``run(batch)`` over every batch (``ticks`` of them, or their lengths)."""
    t0 = time.process_time()
    for batch in batches:
        run(batch)
    return (time.process_time() - t0) / (ticks or sum(map(len, batches))) * 1e6


def measure(symbols: list[str], modules: dict[str, ModuleType], rounds: int, batches: int,
            ctx: zmq.Context) -> dict:
    """The figures for ``symbols``, each journal module of ``modules`` (by label) against none."""
    cfg = engine_config(symbols=",".join(symbols), rate="0")
    svc = EngineService(cfg, SimSource(cfg.symbols, seed=3, rate=0), ctx)
    svc.open()
    try:
        points = {info["name"]: info["point"] for info in svc.symbol_infos()}
        last_seq, tick_out = svc._pub.stamper.last_seq, svc._tick_out
        journals = {label: module.TickJournal(CAPACITY, svc._pub.epoch, points,
                                              lambda symbol: last_seq(tick_out[symbol][0]))
                    for label, module in modules.items()}
        clock = CLOCK_MS

        def draw() -> list[list[Tick]]:
            """The next ``batches`` batches, the market moving on (the sim's work is not timed)."""
            nonlocal clock
            clock += batches
            return [svc.source.poll(clock - batches + i) for i in range(batches)]

        def publish(batch: list[Tick]) -> None:
            svc.on_ticks(batch)
            svc.aggregate_pending()

        figures: dict[str, list[float]] = {}
        for _ in range(rounds):
            for label, journal in {"no_journal": _Discard(), **journals}.items():
                svc._journal = journal
                figures.setdefault(f"engine_{label}", []).append(per_tick_us(draw(), publish))
            for label, module in modules.items():
                figures.setdefault(label.replace("journal", "journal_only"), []).append(
                    journal_alone(module, points, draw()))
        out: dict = {name: {"median_us_per_tick": round(statistics.median(v), 3),
                            "best_us_per_tick": round(min(v), 3)} for name, v in figures.items()}
        base = statistics.median(figures["engine_no_journal"])
        for label in journals:
            with_journal = statistics.median(figures[f"engine_{label}"])
            out[f"{label}_share"] = round((with_journal - base) / with_journal, 3)
            out[f"peak_ticks_per_s_{label}"] = round(1e6 / with_journal)
        out["peak_ticks_per_s_no_journal"] = round(1e6 / base)
        out["ticks_per_round"] = batches * len(draw()[0])
        return out
    finally:
        svc.close()


def journal_alone(module: ModuleType, points: dict[str, float], batches: list[list[Tick]]) -> float:
    """CPU µs per tick of ``module.TickJournal.append`` on ``batches``, numbered as published."""
    seqs = dict.fromkeys(points, 0)
    numbered = []  # each batch with every symbol's seq after it, as the engine's stamper has them
    for batch in batches:
        for tick in batch:
            seqs[tick.symbol] += 1
        numbered.append((batch, dict(seqs)))
    journal = module.TickJournal(CAPACITY, 1, points, seqs.__getitem__)

    def append(item: tuple[list[Tick], dict[str, int]]) -> None:
        batch, after = item
        journal._last_seq = after.__getitem__
        journal.append(batch)

    return per_tick_us(numbered, append, sum(map(len, batches)))


class _Discard:
    """A journal that keeps nothing: the baseline."""

    def append(self, ticks: list[Tick]) -> None:
        pass



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--compare", metavar="REV", help="also measure the journal of this git revision")
    parser.add_argument("--out")
    args = parser.parse_args()
    modules = {"journal": tick_journal}
    if args.compare:
        modules[f"journal@{args.compare}"] = module_at(args.compare, "engine/tick_journal.py")
    ctx = zmq.Context()
    five = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"]
    many = [f"SIM{i:03d}" for i in range(200)]
    result = {
        "benchmark": "tick_journal",
        "machine": machine(),
        "symbols_5": measure(five, modules, args.rounds, args.batches, ctx),
        "symbols_200": measure(many, modules, args.rounds, args.batches, ctx),
    }
    ctx.destroy(0)
    emit(result, args.out)


if __name__ == "__main__":
    main()
