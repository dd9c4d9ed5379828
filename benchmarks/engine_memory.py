"""Engine memory and start-up with 5 and 1,000 symbols, beside a bare Python process. Prints JSON.

    .venv/bin/python benchmarks/engine_memory.py [--symbols 5,1000] [--seconds 10] [--out FILE]

Every figure is one child process's own, read from ``/proc/PID/status``:
  baseline   ``python -c "import numpy, zmq"`` and nothing else: the floor any engine stands on.
  engine     ``mt5-engine`` on the sim at the default rate, timeframes and ``MAX_CANDLES`` (1000),
             so 1,000 symbols hold 4 million bars of history. ``open_s`` is spawn -> first RPC
             answer (interpreter start and imports included, as for the baseline's ``start_s``);
             ``rss_open_mb`` right then, ``rss_peak_mb`` the high-water mark (history loading),
             ``rss_running_mb`` after ``--seconds`` of publishing to a subscriber that reads
             everything.
Target (issue 5): engine RSS < 200 MB with 1,000 symbols x 4 timeframes.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit, machine  # noqa: E402
from tests.procs import EngineProcess  # noqa: E402

BASELINE = "import sys, numpy, zmq; print('ready', flush=True); sys.stdin.read()"
TARGET_MB = 200


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of process ``pid`` in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def run_baseline() -> dict[str, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        start_s = time.monotonic() - t0
        return {"start_s": round(start_s, 2), "rss_mb": status_mb(proc.pid)["VmRSS"]}
    finally:
        proc.kill()
        proc.wait()


def drain(endpoint: str, stop: threading.Event, counted: list[int]) -> None:
    """Subscribe to everything and read it all, so the engine publishes for real."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = 0
    sub.subscribe(b"")
    sub.connect(endpoint)
    while not stop.is_set():
        if sub.poll(100):
            while True:
                try:
                    sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                counted[0] += 1
    sub.close(0)


def run_engine(n_symbols: int, seconds: float) -> dict[str, float]:
    symbols = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"] if n_symbols == 5 \
        else [f"SYM{i:04d}" for i in range(n_symbols)]
    engine = EngineProcess(["--symbols", ",".join(symbols)])
    t0 = time.monotonic()
    engine.start(timeout=600)
    open_s = time.monotonic() - t0
    try:
        opened = status_mb(engine.proc.pid)
        stop, counted = threading.Event(), [0]
        reader = threading.Thread(target=drain, args=(engine.bus, stop, counted))
        reader.start()
        time.sleep(seconds)
        running = status_mb(engine.proc.pid)
        stop.set()
        reader.join()
    finally:
        engine.stop()
    return {
        "open_s": round(open_s, 2),
        "rss_open_mb": opened["VmRSS"],
        "rss_peak_mb": running["VmHWM"],
        "rss_running_mb": running["VmRSS"],
        "messages_per_s": round(counted[0] / seconds),
        "bars_of_history": n_symbols * 4 * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", default="5,1000", help="symbol counts to run (default 5,1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="running time before the last reading")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    baseline = run_baseline()
    engines = {n: run_engine(int(n), args.seconds) for n in args.symbols.split(",")}
    result = {
        "benchmark": "engine_memory",
        "machine": machine(numpy=np.__version__, pyzmq=zmq.__version__),
        "baseline_python_numpy_zmq": baseline,
        "engine": engines,
        "over_baseline_mb": {n: round(e["rss_running_mb"] - baseline["rss_mb"], 1) for n, e in engines.items()},
        "target": f"engine rss < {TARGET_MB} MB with 1000 symbols x 4 timeframes",
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
