"""Recorder throughput: ticks/s written to Parquet with no gap, beside the engine's max publish
rate, in ONE run. Prints JSON.

    .venv/bin/python benchmarks/recorder_throughput.py [--seconds 5] [--out FILE]

  engine          ``mt5-engine --rate 0`` (sim as fast as possible) read by a plain SUB
                  (``engine_throughput.count``): the engine's max publish rate, the baseline.
  recorder_at_max the same engine with ``mt5-recorder`` as its only subscriber.
  recorder_at_N   ``mt5-engine --rate N`` (default 100,000 ticks/s) with the recorder.
Each recorder run stops the engine after ``--seconds`` and lets the recorder write what it has
queued. The figures come from what it wrote: tick rows; the ticks missing between the first and
last recorded ``seq`` of each symbol (the bus dropped them: the recorder fell behind by more
than its high-water mark); the rate they were published at (their span in the ticks' own clock,
which the sim stamps from the wall clock) and the rate they were written at (until the last
file); and how long after the last tick the last file came (a flush interval when it keeps up).
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
from tests.procs import EngineProcess  # noqa: E402


def recorded_ticks(directory: Path) -> dict[str, float]:
    """Tick rows written, their span in the ticks' clock and the ticks missing inside each
    symbol's run of ``seq`` (dropped by the bus because the recorder fell behind)."""
    table = ds.dataset(directory / "tick", partitioning="hive").to_table(columns=["symbol", "seq", "time_msc"])
    missing = 0
    for symbol in set(table.column("symbol").to_pylist()):
        seqs = table.filter(ds.field("symbol") == symbol).column("seq").to_pylist()
        missing += max(seqs) - min(seqs) + 1 - len(set(seqs))
    times = table.column("time_msc").to_pylist()
    return {"tick_rows": table.num_rows, "first_ms": min(times), "last_ms": max(times), "missing_ticks": missing}


def written(directory: Path) -> tuple[int, int, float]:
    """Files, bytes and the newest file's modification time (s since 1970)."""
    paths = list(directory.rglob("*.parquet"))
    stats = [p.stat() for p in paths]
    return len(paths), sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=0.0)


def run_recorder(rate: str, seconds: float) -> dict[str, object]:
    """An engine at ``--rate rate`` with the recorder as its only subscriber for ``seconds``;
    then the engine stops and the recorder writes what it still has queued."""
    engine = EngineProcess(["--rate", rate]).start()
    with tempfile.TemporaryDirectory(prefix="recording-") as name:
        directory = Path(name)
        recorder = subprocess.Popen(
            [sys.executable, "-m", "engine.recorder", "--env-file", os.devnull, "--dir", name,
             "--bus-endpoint", engine.bus, "--bus-pub-endpoint", engine.pub],
            cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            time.sleep(seconds + 1.0)  # a second to connect and start, then the measurement
            engine.stop()
            stopped = time.time()
            last_change, state = time.monotonic(), written(directory)
            while time.monotonic() - last_change < 3.0:  # until no file appears for 3 s
                time.sleep(0.25)
                if written(directory) != state:
                    last_change, state = time.monotonic(), written(directory)
            recorder.terminate()
            code = recorder.wait(30)
        finally:
            engine.stop()
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
        ticks = recorded_ticks(directory)
        files, size, newest = state
    span_s = (ticks["last_ms"] - ticks["first_ms"]) / 1000
    # The last file comes at most a flush interval (1 s) after the last tick when the recorder
    # keeps up; later, it was still working off a backlog when the engine stopped.
    busy_s = newest - ticks["first_ms"] / 1000
    return {
        "tick_rows": ticks["tick_rows"],
        "missing_ticks": ticks["missing_ticks"],
        "published_ticks_per_s": round(ticks["tick_rows"] / span_s) if span_s else 0,
        "recorded_ticks_per_s": round(ticks["tick_rows"] / busy_s) if busy_s > 0 else 0,
        "last_file_after_last_tick_s": round(newest - ticks["last_ms"] / 1000, 2),
        "last_file_after_engine_stop_s": round(newest - stopped, 2),
        "files": files,
        "bytes_per_tick_row": round(size / max(1, ticks["tick_rows"]), 1),
        "exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=100_000, help="the fixed sim rate to check, ticks/s")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    engine = EngineProcess(["--rate", "0"]).start()
    try:
        baseline = count(engine.bus, args.seconds)
    finally:
        engine.stop()
    at_max = run_recorder("0", args.seconds)
    at_rate = run_recorder(str(args.rate), args.seconds)
    result = {
        "benchmark": "recorder_throughput",
        "machine": machine(zmq=zmq.zmq_version()),
        "engine": baseline,
        "recorder_at_max": at_max,
        f"recorder_at_{args.rate}": at_rate,
        "ratio_recorded_vs_engine_ticks": round(at_max["recorded_ticks_per_s"] / max(1, baseline["ticks_per_s"]), 3),
        "target": f"the recorder keeps up with >= {args.rate} ticks/s: no missing tick, no backlog",
        "met": (at_rate["missing_ticks"] == 0 and at_rate["last_file_after_last_tick_s"] <= 1.5
                and at_rate["published_ticks_per_s"] >= 0.95 * args.rate),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
