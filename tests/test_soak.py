"""Soak: sim at 10k ticks/s, an indicator worker, the bridge with 500 Node Socket.IO clients and a
plain ZeroMQ bot, for SOAK_SECONDS (60 in the normal run; `pytest -m soak` runs 10 minutes).
Nothing may be lost: every closed M1 candle reaches every client, the bot sees no gap, and the
processes' memory stays flat.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from tests.bridge_procs import JS_DIR, npm_install

SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"]

NODE_CLIENTS = r"""
const [lib, url, n, symbols] = process.argv.slice(1);  // node -e: no script path
const { io } = require(lib);
const syms = symbols.split(",");
const sockets = [];
let ready = 0, disconnects = 0, errors = 0, ticks = 0, done = false;
const closed = [];  // per client: {symbol: [bar times]}
for (let i = 0; i < Number(n); i++) {
  const seen = {};
  closed.push(seen);
  setTimeout(() => {
    const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, timeout: 30000 });
    s.on("connect", () => { for (const symbol of syms) s.emit("subscribe", { symbol, timeframe: "M1" }); });
    s.on("subscribed", () => { if (++ready === Number(n) * syms.length) console.log("ready"); });
    s.on("error", () => { errors++; });
    s.on("disconnect", () => { if (!done) disconnects++; });
    s.on("tick", () => { ticks++; });
    s.on("candles", ({ symbol, candles }) => {
      for (const c of candles) if (c.closed) (seen[symbol] = seen[symbol] || []).push(c.time);
    });
    sockets.push(s);
  }, Math.floor(i / 25) * 20);
}
process.stdin.on("data", () => {
  done = true;
  const line = JSON.stringify({ closed, disconnects, errors, ticks }) + "\n";
  for (const s of sockets) s.disconnect();
  process.stdout.write(line, () => process.exit(0));
});
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


class Bot(threading.Thread):
    """A plain SUB on every tick, checking seq per topic as it reads."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.rcvhwm = 1_000_000
        self.sock.subscribe(b"tick:")
        self.sock.connect(endpoint)
        self.stop = threading.Event()
        self.received = self.gaps = 0
        self.last: dict[bytes, int] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(100):
                continue
            topic, payload = self.sock.recv_multipart()
            seq = msgpack.unpackb(payload)["seq"]
            prev = self.last.get(topic)
            if prev is not None and seq != prev + 1:
                self.gaps += 1
            self.last[topic] = seq
            self.received += 1

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.sock.close(0)
        self.ctx.term()


def soak(start_stack, seconds: float, clients: int) -> None:
    node = npm_install()
    engine, worker, bridge = start_stack("--rate", "10000", "--timeframes", "M1")
    bot = Bot(engine.bus)
    bot.start()
    load = subprocess.Popen([node, "-e", NODE_CLIENTS, str(JS_DIR / "node_modules" / "socket.io-client"),
                             bridge.url, str(clients), ",".join(SYMBOLS)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert load.stdout.readline().strip() == "ready"
        start = time.time()
        procs = {"engine": engine.proc.pid, "worker": worker.proc.pid, "bridge": bridge.proc.pid}
        time.sleep(min(20.0, seconds / 3))  # settle, then take the memory baseline
        baseline = {name: rss_mb(pid) for name, pid in procs.items()}
        time.sleep(max(0.0, start + seconds - time.time()))
        end = time.time()
        final = {name: rss_mb(pid) for name, pid in procs.items()}
        time.sleep(1.5)  # the last closes and flushes land
        out, _ = load.communicate("stop\n", timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
        bot.close()
    result = json.loads(out)
    from engine.client import RpcClient
    with RpcClient(engine.rpc) as rpc:
        history = {s: [c["time"] for c in rpc.candles(s, "M1", 1000) if c["closed"]] for s in SYMBOLS}
    # Bars that closed (their next minute began) well inside the window must be everywhere.
    expected = {s: {t for t in times if start + 2 < t + 60 < end - 1} for s, times in history.items()}
    lost = sum(len(expected[s] - set(client.get(s, []))) for client in result["closed"] for s in SYMBOLS)
    duplicated = sum(len(v) - len(set(v)) for client in result["closed"] for v in client.values())
    assert result["disconnects"] == 0 and result["errors"] == 0
    assert sum(len(v) for v in expected.values()) >= len(SYMBOLS) * int((seconds - 3) // 60)
    assert lost == 0 and duplicated == 0
    assert bot.gaps == 0 and bot.received > 0.8 * 10_000 * (end - start - 1)
    for name in procs:
        assert final[name] <= baseline[name] * 1.10 + 5, (name, baseline[name], final[name])
    print(f"soak {seconds:.0f} s: sim 10k ticks/s, {clients} Socket.IO clients, worker, bot. "
          f"{sum(len(v) for v in expected.values())} closed M1 candles x {clients} clients, 0 lost, 0 twice; "
          f"bot {bot.received} ticks, 0 gaps; RSS MB " +
          ", ".join(f"{n} {baseline[n]:.0f}->{final[n]:.0f}" for n in procs) +
          f"; client ticks {result['ticks']}")


@pytest.mark.timeout(300)
def test_soak_one_minute(start_stack):
    soak(start_stack, float(os.environ.get("SOAK_SECONDS", "65")), 500)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_soak_ten_minutes(start_stack):
    soak(start_stack, 600.0, 500)
