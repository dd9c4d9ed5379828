"""``ticks`` reply time for 10,000 ticks against plain RPC baselines, in ONE run. Prints JSON.

    .venv/bin/python benchmarks/ticks_range.py [--rounds 100] [--out FILE]

One engine process (sim, one symbol at 10k ticks/s, so its journal holds what is asked within a
couple of seconds, and keeps it for the whole run with TICK_JOURNAL=1,000,000); this process asks
over REQ, one request at a time, and times each round trip (send, the engine's work, the reply
received: ``p50_ms``/``p99_ms``) and, apart, this client decoding the reply (``decode_p50_ms``):
  health             a bare round trip: the smallest reply (baseline)
  candles_1000       ``candles`` count 1000 (baseline: the largest reply before this issue)
  ticks_journal      ``ticks`` range of 10,000 ticks inside the tick journal (memory)
  ticks_after_seq    ``ticks`` after a seq, 10,000 ticks with their seq and epoch (gap repair)
  ticks_regenerated  ``ticks`` range of 10,000 ticks older than the journal: the sim regenerates
                     them (a source's own store)

and, with ``--replay-rows N`` (0 skips it), the replay source on an MT5 tick export of N rows,
played to its end at full speed by a second engine (TICK_JOURNAL=1,000), the range being the
10,000 ticks just before the last 1,000 (older than the journal: read from the file):
  replay_indexed     ``ticks`` over RPC: read from the file's index entry before the range
  replay_source      the same range from ``ReplaySource.tick_range`` in this process (no RPC)
  replay_reread      the same range from ``ReplaySource.tick_range`` as it was before the index
                     (``BASELINE``, loaded with ``module_at``): the file parsed again from its
                     top, in this process (the baseline)
and what the index costs at start: ``replay_load_s`` (``ReplaySource.start``, which indexes the
file) beside ``replay_load_counting_only_s`` (the pass that only counted its rows before).
"""
from __future__ import annotations

import argparse
import calendar
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit, machine, module_at  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.protocol import MAX_REPLY_BYTES, MAX_TICKS, decode  # noqa: E402
from engine.sources.replay import ReplaySource, count_rows  # noqa: E402
from tests.procs import EngineProcess  # noqa: E402

RATE = 10_000
REPLAY_JOURNAL = 1000
BASELINE = "4d6f5ce"  # main before the replay's index
REPLY_TIMEOUT_MS = 30_000
TICK_HEADER = "<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>"


def req_socket(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A REQ socket on ``endpoint``; a reply lost for ``REPLY_TIMEOUT_MS`` fails the run."""
    sock = ctx.socket(zmq.REQ)
    sock.linger, sock.rcvtimeo = 0, REPLY_TIMEOUT_MS
    sock.connect(endpoint)
    return sock


def timed(sock: zmq.Socket, request: dict, rounds: int) -> dict:
    """p50/p99/max of ``rounds`` round trips of ``request`` (ms), the decoding apart, and the
    reply's size."""
    raw = msgpack.packb(request)
    times, decoding, size, items = [], [], 0, 0
    for _ in range(rounds):
        started = time.perf_counter()
        sock.send(raw)
        reply = sock.recv()
        received = time.perf_counter()
        data = decode(reply, MAX_REPLY_BYTES)
        times.append((received - started) * 1000)
        decoding.append((time.perf_counter() - received) * 1000)
        if not data["ok"]:
            raise RuntimeError(f"{request['op']}: {data['error']}")
        size, items = len(reply), len(data["data"]) if isinstance(data["data"], list) else 1
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(times[int(0.99 * (len(times) - 1))], 3),
            "max_ms": round(times[-1], 3), "decode_p50_ms": round(statistics.median(decoding), 3),
            "reply_bytes": size, "items": items, "rounds": rounds}


def write_tick_export(path: Path, rows: int) -> list[int]:
    """An MT5 tick export of ``rows`` ticks 100 ms apart, bid and ask in turn set alone (the
    other carried); their times."""
    start = calendar.timegm((2024, 1, 2, 0, 0, 0)) * 1000
    times = [start + 100 * i for i in range(rows)]
    with path.open("w") as f:
        f.write(TICK_HEADER + "\n")
        for i, t in enumerate(times):
            bid = 1.1 + (i * 7 % 101) * 1e-5
            prices = (f"{bid:.5f}\t{bid + 2e-5:.5f}" if i == 0 else f"{bid:.5f}\t" if i % 2 else f"\t{bid + 2e-5:.5f}")
            f.write(time.strftime("%Y.%m.%d\t%H:%M:%S", time.gmtime(t // 1000)) + f".{t % 1000:03d}\t{prices}\t\t\t\n")
    return times


def timed_call(call, rounds: int) -> dict:
    """p50/max of ``rounds`` calls of ``call()`` (ms), in this process."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "max_ms": round(times[-1], 3), "rounds": rounds}


def replay_ranges(rows: int, rounds: int) -> dict:
    """The replay section (see the module's docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "EURUSD_ticks.csv"
        times = write_tick_export(path, rows)
        lo, hi = times[-REPLAY_JOURNAL - MAX_TICKS], times[-REPLAY_JOURNAL - 1]
        request = {"op": "ticks", "symbol": "EURUSD", "from_msc": lo, "to_msc": hi, "count": MAX_TICKS}
        engine = EngineProcess(["--source", "replay", "--replay-file", str(path), "--replay-speed", "0",
                                "--tick-journal", str(REPLAY_JOURNAL), "--timeframes", "M1"]).start(timeout=120)
        ctx = zmq.Context()
        sock = req_socket(ctx, engine.rpc)
        config = EngineConfig(source="replay", replay_file=str(path), replay_speed=0)
        source = ReplaySource(config)
        baseline = module_at(BASELINE, "engine/sources/replay.py").ReplaySource(config)
        try:
            started = time.perf_counter()
            source.start()
            loaded_s = time.perf_counter() - started
            started = time.perf_counter()
            count_rows(path)  # what start() read the file for before the index (the baseline)
            counted_s = time.perf_counter() - started
            baseline.start()
            for playing in (source, baseline):
                while playing.poll(0):
                    pass
            while True:  # the engine plays the file to its end
                sock.send(msgpack.packb({"op": "replay", "action": "status"}))
                if decode(sock.recv(), MAX_REPLY_BYTES)["data"]["state"] == "finished":
                    break
                time.sleep(0.2)
            indexed = timed(sock, request, rounds)
            after = source.tick_range("EURUSD", lo, hi, MAX_TICKS)
            before = baseline.tick_range("EURUSD", lo, hi, MAX_TICKS)
            assert after == before and len(after) == MAX_TICKS, (len(after), len(before))
            result = {
                "replay_rows": rows, "file_mb": round(path.stat().st_size / 1e6, 1),
                "replay_index_entries": source.index.entries, "replay_load_s": round(loaded_s, 3),
                "replay_load_counting_only_s": round(counted_s, 3),
                "replay_indexed": indexed,
                "replay_source": timed_call(lambda: source.tick_range("EURUSD", lo, hi, MAX_TICKS), rounds),
                "replay_reread": timed_call(lambda: baseline.tick_range("EURUSD", lo, hi, MAX_TICKS),
                                            max(1, rounds // 20)),
            }
        finally:
            source.stop()
            baseline.stop()
            sock.close(0)
            ctx.term()
            engine.stop()
    result["reread_vs_indexed_source"] = round(result["replay_reread"]["p50_ms"] / result["replay_source"]["p50_ms"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--replay-rows", type=int, default=1_000_000,
                        help="rows of the replay section's tick export (0: no replay section)")
    args = parser.parse_args()
    engine = EngineProcess(["--rate", str(RATE), "--symbols", "EURUSD", "--tick-journal", "1000000"]).start()
    ctx = zmq.Context()
    sock = req_socket(ctx, engine.rpc)

    def call(**request):
        sock.send(msgpack.packb(request))
        return decode(sock.recv(), MAX_REPLY_BYTES).get("data")

    try:
        epoch = call(op="health")["epoch"]
        while (call(op="tick", symbol="EURUSD") or {"seq": 0})["seq"] < 2 * MAX_TICKS:  # the journal fills
            time.sleep(0.2)
        first = call(op="ticks", symbol="EURUSD", after_seq=0, epoch=epoch, count=1)[0]
        last = call(op="tick", symbol="EURUSD")
        rounds = args.rounds
        result = {
            "benchmark": "ticks_range_reply",
            "machine": machine(pyzmq=zmq.pyzmq_version(), libzmq=zmq.zmq_version()),
            "engine_rate_ticks_per_s": RATE,
            "health": timed(sock, {"op": "health"}, rounds),
            "candles_1000": timed(sock, {"op": "candles", "symbol": "EURUSD", "timeframe": "M1",
                                         "count": 1000}, rounds),
            "ticks_journal": timed(sock, {"op": "ticks", "symbol": "EURUSD", "from_msc": first["time_msc"] + 1,
                                          "to_msc": last["time_msc"], "count": MAX_TICKS}, rounds),
            "ticks_after_seq": timed(sock, {"op": "ticks", "symbol": "EURUSD", "after_seq": 1, "epoch": epoch,
                                            "count": MAX_TICKS}, rounds),
            "ticks_regenerated": timed(sock, {"op": "ticks", "symbol": "EURUSD",
                                              "from_msc": first["time_msc"] - 3_600_000,
                                              "to_msc": first["time_msc"] - 1, "count": MAX_TICKS}, rounds),
        }
        for name in ("ticks_journal", "ticks_after_seq", "ticks_regenerated"):
            result[name]["p50_vs_candles_1000"] = round(result[name]["p50_ms"] / result["candles_1000"]["p50_ms"], 2)
    finally:
        sock.close(0)
        ctx.term()
        engine.stop()
    if args.replay_rows:
        result.update(replay_ranges(args.replay_rows, rounds))
        result["replay_indexed"]["p50_vs_candles_1000"] = round(
            result["replay_indexed"]["p50_ms"] / result["candles_1000"]["p50_ms"], 2)
    emit(result, args.out)


if __name__ == "__main__":
    main()
