"""Engine publish throughput against a bare pyzmq + msgpack publish loop, in ONE run. Prints JSON.

    .venv/bin/python benchmarks/engine_throughput.py [--seconds 5] [--out FILE]

Both publishers run as their own processes; this process is the subscriber for both: a plain
SUB subscribed to everything, decoding every payload and checking ``seq`` per topic for gaps.
  bare_loop  pack a fresh tick dict and ``send_multipart`` it, as fast as possible, straight
             PUB -> SUB over tcp (no proxy, no aggregation): the plain Python publisher.
  bare_loop_two_sends
             the same loop sending the two frames with two calls of pyzmq's compiled ``send``
             and int flags, as the engine does (``send_multipart`` and the pure-Python
             ``Socket.send`` wrapper cost several µs per message): the ceiling for a Python
             publisher.
  engine     ``mt5-engine --rate 0`` (sim as fast as possible): ticks plus the candles aggregated
             from them, through the embedded XSUB/XPUB bus, at the default high-water mark.
Ratios are engine / bare loop in messages per second.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import zmq
import zmq.backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit, machine  # noqa: E402
from tests.procs import EngineProcess, free_port  # noqa: E402

BARE_PUBLISHER = r"""
import sys, time, msgpack, zmq
endpoint = sys.argv[1]
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.sndhwm = 100_000
pub.bind(endpoint)
time.sleep(0.5)  # let the subscriber connect (slow joiner)
symbols = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"]
topics = [("tick:%s:" % s).encode() for s in symbols]
seqs = [0] * 5
epoch = time.time_ns() // 1_000_000
packb = msgpack.Packer(use_bin_type=True).pack
if sys.argv[2] == "two_sends":
    import zmq.backend
    more, raw_send = int(zmq.SNDMORE), zmq.backend.Socket.send.__get__(pub)
    def send(frames):
        raw_send(frames[0], more, True)
        raw_send(frames[1], 0, True)
else:
    send = pub.send_multipart
i = 0
bid = 1.08
while True:
    k = i % 5
    seqs[k] += 1
    bid += 0.00001
    send((topics[k], packb({"symbol": symbols[k], "bid": bid, "ask": bid + 0.0001, "last": 0.0,
                            "volume": 0, "time_msc": time.time_ns() // 1_000_000, "flags": 6, "volume_real": 0.0,
                            "seq": seqs[k], "epoch": epoch})))
    i += 1
"""


def count(endpoint: str, seconds: float, warmup: float = 1.0) -> dict[str, float]:
    """Subscribe to everything at ``endpoint``; count messages, ticks and gaps for ``seconds``.

    The receive loop only stores frames (so the subscriber outpaces the publisher); payloads
    are decoded and their ``seq`` checked after the measurement.
    """
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 100_000
    sub.linger = 0
    sub.rcvtimeo = 1000
    sub.subscribe(b"")
    sub.connect(endpoint)
    deadline = time.monotonic() + 30
    while not sub.poll(100):  # wait for the stream to begin
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing received from {endpoint}")
    end_warmup = time.monotonic() + warmup
    while time.monotonic() < end_warmup:
        sub.recv_multipart()
    # Every message is [topic, payload]: read them as two frames with pyzmq's compiled recv,
    # about 1 µs a frame where ``recv_multipart`` takes several, so the subscriber keeps up.
    recv = zmq.backend.Socket.recv.__get__(sub)
    frames: list[bytes] = []
    append = frames.append
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        for _ in range(1024):
            append(recv())
            append(recv())
        if time.monotonic() >= end:
            break
    elapsed = time.monotonic() - t0
    sub.close(0)
    last: dict[bytes, int] = {}
    ticks = gaps = missing = 0
    for topic, payload in zip(frames[::2], frames[1::2]):
        seq = msgpack.unpackb(payload)["seq"]
        prev = last.get(topic)
        last[topic] = seq
        if topic.startswith(b"tick:"):
            ticks += 1
        if prev is not None and seq != prev + 1:
            gaps += 1
            missing += seq - prev - 1
    return {
        "msgs_per_s": round(len(frames) / 2 / elapsed),
        "ticks_per_s": round(ticks / elapsed),
        "messages": len(frames) // 2,
        "gaps": gaps,
        "missing_messages": missing,
        "seconds": round(elapsed, 2),
    }


def run_bare(seconds: float, mode: str) -> dict[str, float]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", BARE_PUBLISHER, endpoint, mode])
    try:
        return count(endpoint, seconds)
    finally:
        proc.kill()
        proc.wait()


def run_engine(seconds: float) -> dict[str, float]:
    engine = EngineProcess(["--rate", "0"]).start()
    try:
        result = count(engine.bus, seconds)
    finally:
        engine.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    bare = run_bare(args.seconds, "send_multipart")
    bare_two = run_bare(args.seconds, "two_sends")
    engine = run_engine(args.seconds)
    result = {
        "benchmark": "engine_publish_throughput",
        "machine": machine(pyzmq=zmq.__version__, libzmq=zmq.zmq_version()),
        "bare_loop": bare,
        "bare_loop_two_sends": bare_two,
        "engine": engine,
        "ratio_vs_bare_loop": round(engine["msgs_per_s"] / bare["msgs_per_s"], 3),
        "ratio_vs_bare_loop_two_sends": round(engine["msgs_per_s"] / bare_two["msgs_per_s"], 3),
        "ticks_ratio_vs_bare_loop_two_sends": round(engine["ticks_per_s"] / bare_two["ticks_per_s"], 3),
        "target": "engine >= 0.5 x bare loop, 0 gaps at the default HWM",
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
