"""Pieces of the lossless replay tests and benchmark: an MT5 bar export writer, and a bot
(``python -m tests.replay_bots``) that records every message it receives on some prefixes.

The bot stores the raw frames while it reads (so reading is all it does) and, once the stream
has been quiet for ``--quiet-s`` or it is stopped, writes them decoded to ``--out`` as JSON:
``{"first": monotonic s, "last": monotonic s, "messages": [[topic, payload], ...]}``, or with
``--summary`` only figures per topic (``summarize``). With ``--pause-every N --pause-ms M`` it
sleeps M ms after every N messages: a slow reader.
"""
from __future__ import annotations

import argparse
import calendar
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import zmq
import zmq.backend

from tests.procs import ChildProcess

BAR_HEADER = "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>"
START = calendar.timegm((2024, 1, 2, 0, 0, 0))


@dataclass(frozen=True)
class Bar:
    time: int  # open, epoch s
    open: float
    high: float
    low: float
    close: float


def write_bar_export(directory: Path, bars: int, symbol: str = "EURUSD", step_s: int = 60,
                     seed: int = 7) -> tuple[Path, list[Bar]]:
    """An MT5 bar export of ``bars`` random-walk bars (5 digits, ``step_s`` apart) named as MT5
    names it (``EURUSD_M1_...csv``); returns its path and the bars."""
    rng = random.Random(seed)
    price, rows, out = 1.10000, [BAR_HEADER], []
    for i in range(bars):
        t = START + i * step_s
        o = price
        c = round(o + rng.gauss(0, 0.0003), 5)
        h = round(max(o, c) + abs(rng.gauss(0, 0.0001)), 5)
        low = round(min(o, c) - abs(rng.gauss(0, 0.0001)), 5)
        out.append(Bar(t, o, h, low, c))
        stamp = time.strftime("%Y.%m.%d\t%H:%M:%S", time.gmtime(t))
        rows.append(f"{stamp}\t{o:.5f}\t{h:.5f}\t{low:.5f}\t{c:.5f}\t{rng.randint(10, 90)}\t0\t{rng.randint(5, 12)}")
        price = c
    tf = {60: "M1", 300: "M5", 3600: "H1"}[step_s]
    path = directory / f"{symbol}_{tf}_{time.strftime('%Y%m%d%H%M', time.gmtime(START))}.csv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return path, out


@dataclass
class BotProcess(ChildProcess):
    """A recording bot on ``endpoint``; ``result()`` once it has written ``out``."""

    module = "tests.replay_bots"
    endpoint: str = ""
    out: Path = Path()
    prefixes: tuple[str, ...] = ()

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--endpoint", self.endpoint, "--out", str(self.out),
                *(f"--prefix={p}" for p in self.prefixes), *self.args]

    def start(self, timeout: float = 30.0) -> BotProcess:
        self.spawn()
        self.wait_output("bot: subscribed", timeout)
        return self

    def result(self, timeout: float = 60.0) -> dict:
        """What the bot received (waits until it has written it)."""
        deadline = time.monotonic() + timeout
        while not self.out.exists():
            if time.monotonic() > deadline or self.proc.poll() not in (None, 0):
                raise TimeoutError(f"the bot wrote nothing: {self.output()}")
            time.sleep(0.05)
        self.proc.wait(timeout)
        return json.loads(self.out.read_text())


@dataclass
class _Args:
    endpoint: str
    out: str
    prefix: list[str] = field(default_factory=list)
    hwm: int = 1000
    pause_every: int = 0
    pause_ms: float = 0.0
    quiet_s: float = 1.5
    max_s: float = 120.0
    summary: bool = False


def summarize(frames: list[bytes], stamps: list[float]) -> dict[str, dict]:
    """Per topic: messages, closed ones, seq gaps, and when (monotonic s) the last closed one
    arrived; ``stamps[i]`` is when message ``i`` arrived."""
    out: dict[str, dict] = {}
    for i, (topic, payload) in enumerate(zip(frames[::2], frames[1::2])):
        message = msgpack.unpackb(payload)
        figures = out.setdefault(topic.decode(), {"messages": 0, "closed": 0, "gaps": 0, "seq": None,
                                                   "last_closed_at": 0.0})
        if figures["seq"] is not None and message["seq"] != figures["seq"] + 1:
            figures["gaps"] += 1
        figures["seq"] = message["seq"]
        figures["messages"] += 1
        if message.get("closed"):
            figures["closed"] += 1
            figures["last_closed_at"] = stamps[i]
    return out


def run_bot(args: _Args) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = args.hwm
    for prefix in args.prefix:
        sub.subscribe(prefix.encode())
    sub.connect(args.endpoint)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    print("bot: subscribed", flush=True)
    recv = zmq.backend.Socket.recv.__get__(sub)
    frames: list[bytes] = []
    stamps: list[float] = []  # when each batch of messages was read (per message)
    first = last = 0.0
    end = time.monotonic() + args.max_s
    while not stopped and time.monotonic() < end:
        if not sub.poll(int(args.quiet_s * 1000) if frames else 100):
            if frames:
                break  # quiet: the stream is over
            continue
        while True:  # every message is [topic, payload]
            try:
                topic = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            frames += (topic, recv())
            last = time.monotonic()
            stamps.append(last)
            first = first or last
            if args.pause_every and len(frames) // 2 % args.pause_every == 0:
                time.sleep(args.pause_ms / 1000)
    if args.summary:
        result = {"first": first, "last": last, "topics": summarize(frames, stamps)}
    else:
        result = {"first": first, "last": last,
                  "messages": [[t.decode(), msgpack.unpackb(p)] for t, p in zip(frames[::2], frames[1::2])]}
    Path(args.out + ".tmp").write_text(json.dumps(result))
    Path(args.out + ".tmp").rename(args.out)
    sub.close(0)
    ctx.term()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--prefix", action="append", default=[])
    parser.add_argument("--hwm", type=int, default=1000)
    parser.add_argument("--pause-every", type=int, default=0)
    parser.add_argument("--pause-ms", type=float, default=0.0)
    parser.add_argument("--quiet-s", type=float, default=1.5)
    parser.add_argument("--max-s", type=float, default=120.0)
    parser.add_argument("--summary", action="store_true", help="write figures per topic, not the messages")
    run_bot(_Args(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
