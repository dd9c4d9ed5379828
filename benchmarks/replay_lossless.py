"""Lossless replay throughput: M1 bars per second through engine -> worker -> bot, beside the
engine's live publish rate measured in the same run. Prints JSON.

    .venv/bin/python benchmarks/replay_lossless.py [--bars 100000] [--live-seconds 5] [--out FILE]
                                                   [--rounds N] [--compare REV]

  replay  an MT5 M1 bar export of ``--bars`` random-walk bars (written to a temp dir) played
          with ``--replay-speed 0 --replay-start paused`` (``--timeframes M1``) by
          ``mt5-engine``, one ``mt5-indicators`` worker, and a bot (``tests.replay_bots``)
          subscribed to ``candle:EURUSD:M1:`` and ``ind:EURUSD:M1:``. The clock runs from the
          RPC ``replay start`` to the bot's receipt of the last closed indicator value;
          bars/s = closed bars / that time. Lossless: every closed bar and value arrived, with
          no ``seq`` gap. ``--forming-throttle-ms`` (default 60000: one forming update per bar
          and timeframe) bounds the forming updates the worker answers as well.
          ``cpu_s``: CPU seconds each process used from the start until the engine had read
          the whole file (Linux ``/proc``), which a machine shared with other work changes
          far less than the wall time; ``engine_thread_cpu_s`` splits the engine's by thread.
  live    ``mt5-engine --rate 0`` (sim as fast as possible) through its bus to a plain SUB, as
          ``benchmarks/engine_throughput.py`` measures it.
  compare ``--compare REV``: the same replay with the engine and worker of git revision REV
          (its files in a temp dir, its Cython core built there unless its sources are this
          tree's), alternated with this tree's ``--rounds`` times, so a shared machine's ups and
          downs fall on both; medians beside each round.
Target: >= 50,000 M1 bars/s (a year of M1 bars in under 10 s).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine_throughput import run_engine  # noqa: E402
from benchmarks.report import emit, machine  # noqa: E402
from engine.client import RpcClient  # noqa: E402
from tests.procs import EngineProcess, WorkerProcess  # noqa: E402
from tests.replay_bots import BotProcess, write_bar_export  # noqa: E402

SYMBOL = "EURUSD"
TARGET_BARS_PER_S = 50_000


def wait_subscribed(rpc: RpcClient, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while rpc.health()["bus_subscription_bytes"] < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError("the subscriptions never reached the engine")
        time.sleep(0.05)


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """User + system CPU seconds of process ``pid`` (or of its thread ``tid``) so far (None
    off Linux)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid`` by name (``python`` is the interpreter's
    main thread, ``ZMQbg/IO/0`` ZeroMQ's I/O thread), threads of one name summed."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        seconds = cpu_seconds(pid, int(tid))
        if seconds is not None:
            out[name] = out.get(name, 0.0) + seconds
    return out


def wait_finished(rpc: RpcClient, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while rpc.call("replay", action="status")["state"] != "finished":
        if time.monotonic() > deadline:
            raise TimeoutError("the replay never finished")
        time.sleep(0.02)


def tree_at(rev: str) -> Path:
    """The repository's files at git revision ``rev`` in a temp dir, with its Cython core: this
    tree's when the core's sources are the same, else built from them (pip fetches Cython)."""
    tree = Path(tempfile.mkdtemp(prefix="replay-baseline-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    core = ["indicators/_core.pyx", "indicators/_core.pxd"]
    if subprocess.run(["git", "diff", "--quiet", rev, "--", *core], cwd=ROOT).returncode == 0:
        for built in (ROOT / "indicators").glob("_core.*.so"):
            shutil.copy(built, tree / "indicators")
        return tree
    wheels = tree / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(tree)], check=True)
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as wheel:
        for name in wheel.namelist():
            if name.startswith("indicators/_core.") and name.endswith(".so"):
                (tree / name).write_bytes(wheel.read(name))
    return tree


def run_replay(bars: int, throttle_ms: int, tree: Path = ROOT) -> dict:
    """One lossless replay of ``bars`` through the engine and worker of ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = write_bar_export(Path(tmp), bars, SYMBOL)
        engine = EngineProcess(["--source", "replay", "--replay-file", str(path), "--replay-speed", "0",
                                "--replay-start", "paused", "--symbols", SYMBOL, "--timeframes", "M1",
                                "--forming-throttle-ms", str(throttle_ms)], tree=tree)
        prefixes = (f"candle:{SYMBOL}:M1:", f"ind:{SYMBOL}:M1:")
        bot = BotProcess(endpoint=engine.bus, out=Path(tmp) / "bot.json", prefixes=prefixes,
                         args=["--summary", "--hwm", "100000", "--quiet-s", "3", "--max-s", "600"])
        worker = WorkerProcess(engine=engine, tree=tree)
        try:
            engine.start()
            worker.start()
            bot.start()
            with RpcClient(engine.rpc, timeout_ms=10_000) as rpc:
                wait_subscribed(rpc, sum(len(p) for p in prefixes))
                time.sleep(0.2)
                procs = {"engine": engine, "worker": worker, "bot": bot}
                cpu_before = {name: cpu_seconds(p.proc.pid) for name, p in procs.items()}
                threads_before = thread_cpu_seconds(engine.proc.pid)
                began = time.monotonic()
                rpc.call("replay", action="start")
                wait_finished(rpc)
                cpu = {name: None if cpu_before[name] is None else round(cpu_seconds(p.proc.pid) - cpu_before[name], 2)
                       for name, p in procs.items()}
                threads = {name: round(seconds - threads_before.get(name, 0.0), 2)
                           for name, seconds in thread_cpu_seconds(engine.proc.pid).items()}
                result = bot.result(timeout=900)
                health = rpc.health()
        finally:
            for proc in (bot, worker, engine):
                proc.stop()
    candles, values = (result["topics"].get(p, {}) for p in prefixes)
    closed = values.get("closed", 0)
    seconds = values.get("last_closed_at", began) - began
    lossless = (candles.get("closed") == values.get("closed") == bars - 1
                and candles.get("gaps") == values.get("gaps") == 0)
    return {
        "bars": bars,
        "closed_bars_received": candles.get("closed", 0),
        "closed_values_received": closed,
        "candle_messages": candles.get("messages", 0),
        "ind_messages": values.get("messages", 0),
        "seq_gaps": candles.get("gaps", 0) + values.get("gaps", 0),
        "lossless": lossless,
        "seconds": round(seconds, 3),
        "bars_per_s": round(closed / seconds) if seconds > 0 else 0,
        "engine_waits_for_subscribers": health["bus_waits"],
        "cpu_s": cpu,
        "engine_thread_cpu_s": {name: s for name, s in sorted(threads.items()) if s > 0},
        "forming_throttle_ms": throttle_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--forming-throttle-ms", type=int, default=60_000)
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--rounds", type=int, default=1, help="replays of this tree (alternated with --compare's)")
    parser.add_argument("--compare", metavar="REV", help="also replay with the engine and worker of this git revision")
    args = parser.parse_args()
    baseline = tree_at(args.compare) if args.compare else None
    rounds: list[dict] = []
    try:
        for _ in range(args.rounds):
            rounds.append({"this": run_replay(args.bars, args.forming_throttle_ms)})
            if baseline is not None:
                rounds[-1][args.compare] = run_replay(args.bars, args.forming_throttle_ms, baseline)
    finally:
        if baseline is not None:
            shutil.rmtree(baseline)
    replay = {"median_bars_per_s": statistics.median(r["this"]["bars_per_s"] for r in rounds),
              "lossless": all(r["this"]["lossless"] for r in rounds)}
    if baseline is not None:
        replay[f"median_bars_per_s_{args.compare}"] = statistics.median(r[args.compare]["bars_per_s"] for r in rounds)
    live = run_engine(args.live_seconds)
    emit({
        "benchmark": "replay_lossless",
        "machine": machine(pyzmq=zmq.__version__, libzmq=zmq.zmq_version()),
        "replay": replay,
        "rounds": rounds,
        "live_engine": live,
        "replay_bars_per_s_vs_target": round(replay["median_bars_per_s"] / TARGET_BARS_PER_S, 3),
        "target": f">= {TARGET_BARS_PER_S} M1 bars/s engine -> worker -> bot, lossless",
    }, args.out)


if __name__ == "__main__":
    main()
