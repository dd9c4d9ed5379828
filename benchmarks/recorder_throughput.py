"""Recorder throughput: ticks/s written to Parquet with no gap, beside the engine's max publish
rate, in ONE run. Prints JSON.

    .venv/bin/python benchmarks/recorder_throughput.py [--seconds 5] [--out FILE]

  engine          ``mt5-engine --rate 0`` (sim as fast as possible) read by a plain SUB
                  (``engine_throughput.count``): the engine's max publish rate, the baseline.
  recorder_at_max the same engine with ``mt5-recorder`` as its only subscriber.
  recorder_at_N   with ``--rate N``: ``mt5-engine --rate N`` with the recorder (on 2 busy cores the
                  sim at a fixed 100,000 ticks/s falls behind its schedule and catches up in
                  bursts, which overflow any subscriber's high-water mark).
Each recorder run measures the engine's actual publish rate (its ``ticks_total`` over the run),
then stops the engine and lets the recorder write what it has queued. From what it wrote: tick
rows, and the ticks missing between the first and last recorded ``seq`` of each symbol (the bus
dropped them: the recorder fell behind by more than its high-water mark); from /proc, the CPU
time it spent per tick, i.e. the rate it sustains on one core however busy the machine is.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine_throughput import count  # noqa: E402
from benchmarks.report import emit, machine  # noqa: E402
from engine.client import RpcClient  # noqa: E402
from engine.protocol import RpcError  # noqa: E402
from tests.procs import EngineProcess  # noqa: E402


def recorded_ticks(directory: Path) -> dict[str, int]:
    """Tick rows written and the ticks missing inside each symbol's run of ``seq`` (dropped by
    the bus because the recorder fell behind by more than its high-water mark)."""
    table = ds.dataset(directory / "tick", partitioning="hive").to_table(columns=["symbol", "seq"])
    missing = 0
    for symbol in set(table.column("symbol").to_pylist()):
        seqs = table.filter(ds.field("symbol") == symbol).column("seq").to_pylist()
        missing += max(seqs) - min(seqs) + 1 - len(set(seqs))
    return {"tick_rows": table.num_rows, "missing_ticks": missing}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ticks_total(rpc: RpcClient) -> int | None:
    try:
        return rpc.health()["ticks_total"]
    except RpcError:
        return None


def run_recorder(rate: str, seconds: float) -> dict[str, object]:
    """An engine at ``--rate rate`` with the recorder as its only subscriber for ``seconds``;
    then the engine stops and the recorder writes what it still has queued."""
    engine = EngineProcess(["--rate", rate])
    rpc = RpcClient(engine.rpc, timeout_ms=10_000)  # an engine flat out answers late
    with tempfile.TemporaryDirectory(prefix="recording-") as name:
        directory = Path(name)
        recorder = subprocess.Popen(
            [sys.executable, "-m", "engine.recorder", "--env-file", os.devnull, "--dir", name,
             "--bus-endpoint", engine.bus, "--bus-pub-endpoint", engine.pub],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            recorder.stdout.readline()  # started: its banner
            startup_cpu_s = cpu_seconds(recorder.pid)  # imports, not recording
            engine.start()
            time.sleep(1.0)
            t0 = time.monotonic()
            before = ticks_total(rpc)
            time.sleep(seconds)
            after = ticks_total(rpc)
            published = (after - before) / (time.monotonic() - t0) if before is not None and after is not None else None
            engine.stop()
            time.sleep(3.0)  # the recorder writes what it has queued
            cpu_s = cpu_seconds(recorder.pid) - startup_cpu_s
            recorder.terminate()
            code = recorder.wait(30)
        finally:
            rpc.close()
            engine.stop()
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
        ticks = recorded_ticks(directory)
        paths = list(directory.rglob("*.parquet"))
        size = sum(p.stat().st_size for p in paths)
    return {
        "engine_ticks_per_s": None if published is None else round(published),
        "tick_rows": ticks["tick_rows"],
        "missing_ticks": ticks["missing_ticks"],
        # CPU the recorder spent recording (its start-up excluded) per tick written: what it
        # sustains on one core, however busy the machine is. ZeroMQ's I/O thread included.
        "recorder_cpu_s": round(cpu_s, 2),
        "recorder_cpu_us_per_tick": round(cpu_s * 1e6 / max(1, ticks["tick_rows"]), 2),
        "recorder_capacity_ticks_per_s": round(ticks["tick_rows"] / cpu_s) if cpu_s else 0,
        "files": len(paths),
        "bytes_per_tick_row": round(size / max(1, ticks["tick_rows"]), 1),
        "exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=0,
                        help="also record an engine at this fixed sim rate, ticks/s (0: only at max)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    engine = EngineProcess(["--rate", "0"]).start()
    try:
        baseline = count(engine.bus, args.seconds)
    finally:
        engine.stop()
    at_max = run_recorder("0", args.seconds)
    result = {
        "benchmark": "recorder_throughput",
        "machine": machine(zmq=zmq.zmq_version()),
        "engine": baseline,
        "recorder_at_max": at_max,
        "target": "the recorder keeps up with >= 100,000 ticks/s: no missing tick at the engine's max rate, "
                  "and CPU for >= 100,000 ticks/s",
        "met": at_max["missing_ticks"] == 0 and at_max["recorder_capacity_ticks_per_s"] >= 100_000,
    }
    if args.rate:
        result[f"recorder_at_{args.rate}"] = run_recorder(str(args.rate), args.seconds)
    emit(result, args.out)


if __name__ == "__main__":
    main()
