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
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import msgpack
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit, machine  # noqa: E402
from engine.protocol import MAX_REPLY_BYTES, MAX_TICKS, decode  # noqa: E402
from tests.procs import EngineProcess  # noqa: E402

RATE = 10_000


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    engine = EngineProcess(["--rate", str(RATE), "--symbols", "EURUSD", "--tick-journal", "1000000"]).start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(engine.rpc)

    def call(**request):
        sock.send(msgpack.packb(request))
        return decode(sock.recv(), MAX_REPLY_BYTES)["data"]

    try:
        epoch = call(op="health")["epoch"]
        while call(op="tick", symbol="EURUSD")["seq"] < 2 * MAX_TICKS:  # the journal fills
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
        emit(result, args.out)
    finally:
        sock.close(0)
        ctx.term()
        engine.stop()


if __name__ == "__main__":
    main()
