"""End-to-end latency of the real processes, side by side with a bare pyzmq pair. Prints JSON.

    .venv/bin/python benchmarks/e2e_latency.py [--seconds 8] [--rates 1000,10000,50000]
                                               [--indicator-seconds 30] [--out FILE]

Measured, each in its own processes started as the launcher starts them:
  bot        engine (sim at RATE ticks/s) -> embedded bus -> a plain pyzmq SUB in this process.
             Latency = receipt time - the tick's ``time_msc`` (the instant the sim tick is due,
             so it includes the engine waking up, drawing the tick and publishing it).
  bare_pair  baseline at the same RATE: one process paces the same msgpack tick payloads on the
             same kind of schedule (random arrivals stamped in ms, sent when due) straight PUB ->
             SUB; latency measured the same way.
  max_rate   the engine as fast as possible (``--rate 0``): delivered ticks/s and gaps.
  indicator  candle close -> ``ind:`` message: a replayed M1 export (20 closes a second) with
             one indicator worker; latency = receipt of the ``ind:`` closed message - receipt of
             the ``candle:`` closed message it answers, both at this subscriber.
All clocks are this machine's; percentiles are over every message in the measured window.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq
import zmq.backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine_throughput import count  # noqa: E402
from benchmarks.report import emit, machine  # noqa: E402
from engine.sources.sim import SimSource  # noqa: E402
from engine.timeframes import TIMEFRAMES  # noqa: E402
from tests.procs import EngineProcess, WorkerProcess, free_port  # noqa: E402

PACED_PUBLISHER = r"""
import sys, time, msgpack, zmq, numpy as np
endpoint, rate = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.sndhwm = 100_000
pub.bind(endpoint)
time.sleep(0.5)  # slow joiner
symbols = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"]
topics = [("tick:%s:" % s).encode() for s in symbols]
seqs = [0] * 5
epoch = time.time_ns() // 1_000_000
packb = msgpack.Packer(use_bin_type=True).pack
more = int(zmq.SNDMORE)
send = pub.send
rng = np.random.default_rng(1)
due_ns = time.time_ns()
bid = 1.08
while True:
    gaps = rng.exponential(1e9 / rate, 4096).tolist()
    for gap in gaps:
        due_ns += gap
        due_ms = int(due_ns // 1_000_000) + 1  # stamped in whole ms like the sim, sent at that instant
        wait_ns = due_ms * 1_000_000 - time.time_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        k = int(due_ns) % 5
        seqs[k] += 1
        bid += 0.00001
        send(topics[k], more)
        send(packb({"symbol": symbols[k], "bid": bid, "ask": bid + 0.0001, "last": 0.0, "volume": 0,
                    "time_msc": due_ms, "flags": 6, "volume_real": 0.0, "seq": seqs[k], "epoch": epoch}))
"""


SETTLE_MS = 5.0  # measure once a tick arrives less than this late: past any start-up backlog


def percentiles(values_us: list[float]) -> dict[str, float]:
    if not values_us:
        return {"n": 0}
    arr = np.asarray(values_us)
    return {
        "n": int(arr.size),
        "p50_us": round(float(np.percentile(arr, 50)), 1),
        "p99_us": round(float(np.percentile(arr, 99)), 1),
        "p99_9_us": round(float(np.percentile(arr, 99.9)), 1),
        "max_us": round(float(arr.max()), 1),
    }


def receive(endpoint: str, prefixes: list[bytes], seconds: float, warmup: float = 1.0,
            settle_ms: float | None = None):
    """(receipt ns, topic, payload) for ``seconds`` after ``warmup``; decoded afterwards.

    With ``settle_ms``, the warm-up also lasts until a message's ``time_msc`` is less than that
    old on receipt: an engine starting at a high rate first publishes the ticks that came due
    while it loaded history, and that catch-up is start-up, not steady state.
    """
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 1_000_000
    sub.linger = 0
    for prefix in prefixes:
        sub.subscribe(prefix)
    sub.connect(endpoint)
    sub.rcvtimeo = 100
    # pyzmq's compiled recv, frame by frame: the bot's loop costs ~1 µs a message, so on this
    # 2-core machine the subscriber takes as little CPU from the publisher as it can.
    recv, clock = zmq.backend.Socket.recv.__get__(sub), time.time_ns
    got = []
    append = got.append
    start = time.monotonic() + warmup
    if settle_ms is not None:
        give_up = start + 30
        while (now := time.monotonic()) < give_up:
            try:
                recv()
            except zmq.Again:
                continue
            lag_ms = clock() / 1e6 - msgpack.unpackb(recv())["time_msc"]
            if now >= start and lag_ms < settle_ms:
                break
        start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        try:
            topic = recv()
        except zmq.Again:
            continue
        payload = recv()
        if now >= start:
            append((clock(), topic, payload))
    sub.close(0)
    return [(t, topic, msgpack.unpackb(p)) for t, topic, p in got]


def tick_latencies(messages) -> tuple[list[float], int]:
    latencies, gaps, last = [], 0, {}
    for t_ns, topic, m in messages:
        latencies.append(t_ns / 1000 - m["time_msc"] * 1000)
        prev = last.get(topic)
        if prev is not None and m["seq"] != prev + 1:
            gaps += 1
        last[topic] = m["seq"]
    return latencies, gaps


def run_bot(rate: int, seconds: float) -> dict:
    engine = EngineProcess(["--rate", str(rate)]).start()
    try:
        messages = receive(engine.bus, [b"tick:"], seconds, settle_ms=SETTLE_MS)
    finally:
        engine.stop()
    latencies, gaps = tick_latencies(messages)
    return {"ticks_per_s": round(len(messages) / seconds), "gaps": gaps, **percentiles(latencies)}


def run_bare_pair(rate: int, seconds: float) -> dict:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", PACED_PUBLISHER, endpoint, str(rate)])
    try:
        messages = receive(endpoint, [b"tick:"], seconds, settle_ms=SETTLE_MS)
    finally:
        proc.kill()
        proc.wait()
    latencies, gaps = tick_latencies(messages)
    return {"ticks_per_s": round(len(messages) / seconds), "gaps": gaps, **percentiles(latencies)}


def write_m1_export(path: Path, bars: int) -> None:
    sim = SimSource(["EURUSD"], seed=5, clock_ms=1_790_000_000_000)
    sim.start()
    lines = ["<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>"]
    for b in sim.history("EURUSD", TIMEFRAMES["M1"], bars):
        t = time.gmtime(b.time)
        lines.append(f"{t.tm_year}.{t.tm_mon:02d}.{t.tm_mday:02d}\t{t.tm_hour:02d}:{t.tm_min:02d}:00\t"
                     f"{b.open:.5f}\t{b.high:.5f}\t{b.low:.5f}\t{b.close:.5f}\t{b.tick_volume}\t0\t{b.spread}")
    path.write_text("\n".join(lines) + "\n")


INDICATOR_REPLAY_SPEED = 1200  # M1 bars at 20 closes a second


def run_indicator(seconds: float) -> dict:
    """Candle close -> ind: latency over a replay that closes ~20 M1 bars a second.

    Each close is one sample: a p99 needs several hundred, so this part runs longer.
    """
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "EURUSD_M1_bench.csv"
        # Enough bars to outlast the warm-up and the window at 20 a second.
        write_m1_export(export, int((seconds + 10) * INDICATOR_REPLAY_SPEED / 60))
        engine = EngineProcess(["--source", "replay", "--replay-file", str(export), "--replay-speed", str(INDICATOR_REPLAY_SPEED),
                                "--timeframes", "M1"]).start()
        worker = WorkerProcess(engine=engine)
        try:
            worker.start()
            messages = receive(engine.bus, [b"candle:EURUSD:M1:", b"ind:EURUSD:M1:"], seconds, warmup=0.5)
        finally:
            worker.stop()
            engine.stop()
    closed_at = {m["time"]: t for t, topic, m in messages if topic.startswith(b"candle:") and m["closed"]}
    latencies = [t / 1000 - closed_at[m["time"]] / 1000 for t, topic, m in messages
                 if topic.startswith(b"ind:") and m["closed"] and m["time"] in closed_at]
    return {"closes": len(closed_at), **percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rates", default="1000,10000,50000")
    parser.add_argument("--indicator-seconds", type=float, default=30.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    result: dict = {
        "benchmark": "e2e_latency",
        "machine": machine(libzmq=zmq.zmq_version()),
        "bot": {}, "bare_pair": {}, "p99_ratio_bot_vs_bare": {},
    }
    for rate in rates:
        result["bare_pair"][rate] = run_bare_pair(rate, args.seconds)
        result["bot"][rate] = run_bot(rate, args.seconds)
        bare_p99 = result["bare_pair"][rate].get("p99_us")
        if bare_p99:
            result["p99_ratio_bot_vs_bare"][rate] = round(result["bot"][rate]["p99_us"] / bare_p99, 2)
    engine = EngineProcess(["--rate", "0"]).start()
    try:
        result["max_rate"] = count(engine.bus, args.seconds)
    finally:
        engine.stop()
    result["indicator"] = run_indicator(args.indicator_seconds)
    result["targets"] = {"bot_p99": "within 2x of the bare pair", "max_rate": ">= 100k ticks/s, 0 gaps",
                         "indicator_p99": "< 1000 us"}
    emit(result, args.out)


if __name__ == "__main__":
    main()
