"""The bridge under N Socket.IO clients, each subscribed to 5 symbols, at the sim's default rate. Prints JSON.

    .venv/bin/python benchmarks/bridge_clients.py [--clients 100,500,1000] [--seconds 15]
        [--client-procs 2] [--probes 10] [--timeframe M1] [--paths fast,public] [--out FILE]

One ``mt5-engine`` (sim, 100 ticks/s over 5 symbols) and one ``mt5-bridge`` run as their own
processes. The clients are the real ``socket.io-client`` (npm, pinned in bridge/js) under Node,
over websocket: ``--probes`` of them in one process (niceness ``--probe-nice``) measure latency,
the rest load the bridge from ``--client-procs`` processes at nice 10. On a 2-core machine the load
clients need more CPU than the bridge (Python clients would need several times more), so the
probes show what a client that is not starved of CPU sees, and the load clients' own figures
are reported beside them. ``--paths`` runs every client count on each delivery path in turn
(``fast``: BRIDGE_FAST_PATH=1, prebuilt frames; ``public``: BRIDGE_FAST_PATH=0, python-engineio's
public API), each on a fresh bridge beside the same engine. Per path and client count:
  delivery          the path the bridge reported in /health
  load_avg_1m       the machine's 1-minute load average as the window began (the machine may be shared)
  delivered_per_s   events received per second by all clients together (tick, order_book, ...)
  latency_ms        probes: p50/p99/max from the tick's ``time_msc`` (engine clock) to receipt
  latency_ms_load_clients / _all_clients   the same for the niced load clients / everyone
  bridge_tick_to_write_ms   the bridge's own view: tick time to the end of the flush that wrote
                    it to every subscriber; bridge_flush_ms / _late_ms: how long its flushes
                    took and how late they started (each over the bridge's last ~8 s)
  bridge_cpu_pct    the bridge process' CPU over the window (100 = one core), from /proc/PID/stat
  client_cpu_pct    all Node client processes together
  conflated         ticks/books replaced by a later one within the same flush (by design)
  skipped_slow, slow_disconnects   the slow-client policy at work (0 when every client keeps up)
  target_met        probes' p99 <= BATCH_INTERVAL_MS + 25 and bridge_cpu_pct < 100
The in-process baseline (one serialisation per client per update, as a loop of per-client emits
does) is benchmarks/bench_bridge.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit, machine  # noqa: E402
from tests.bridge_procs import DELIVERY_PATHS, JS_DIR, BridgeProcess, delivery_env, npm_install  # noqa: E402
from tests.procs import EngineProcess  # noqa: E402

SYMBOLS = "EURUSD,GBPUSD,USDJPY,XAUUSD,BTCUSD"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_NICENESS = 10

NODE_CLIENTS = r"""
const [lib, url, n, symbols, timeframe] = process.argv.slice(2);
const { io } = require(lib);
const syms = symbols.split(",");
let subscribed = 0, connected = 0, failed = 0, disconnects = 0, measuring = false, done = false;
let events = 0, ticks = 0, subscribeErrors = 0;
function settled() { if (subscribed + subscribeErrors === Number(n) * syms.length) console.log("ready"); }
const hist = new Map();  // latency ms -> count
const byEvent = {};
const sockets = [];
function open(i) {
  const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, timeout: 30000 });
  s.on("connect", () => {
    connected++;
    for (const symbol of syms) s.emit("subscribe", timeframe ? { symbol, timeframe } : { symbol });
  });
  s.on("subscribed", () => { subscribed++; settled(); });
  s.on("error", (e) => { if (e.event === "subscribe") { subscribeErrors++; settled(); } });
  s.on("connect_error", () => { failed++; subscribeErrors += syms.length; settled(); });
  s.on("disconnect", () => { if (!done) disconnects++; });
  s.onAny((event, data) => {
    if (!measuring) return;
    events++;
    byEvent[event] = (byEvent[event] || 0) + 1;
    if (event === "tick") {
      ticks++;
      const ms = Date.now() - data.time_msc;
      hist.set(ms, (hist.get(ms) || 0) + 1);
    }
  });
  sockets.push(s);
}
// Open in small groups so the connect storm does not time out.
let i = 0;
const opener = setInterval(() => { for (let k = 0; k < 25 && i < Number(n); k++) open(i++); if (i >= Number(n)) clearInterval(opener); }, 20);
process.stdin.setEncoding("utf8");
process.stdin.on("data", (line) => {
  const [start, stop] = line.trim().split(" ").map(Number);
  setTimeout(() => { measuring = true; }, Math.max(0, start - Date.now()));
  setTimeout(() => {
    measuring = false; done = true;
    const line = JSON.stringify({ events, ticks, byEvent, hist: [...hist], connected, failed, disconnects, subscribeErrors }) + "\n";
    for (const s of sockets) s.disconnect();
    process.stdout.write(line, () => process.exit(0));
  }, Math.max(0, stop - Date.now()));
});
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    rank, seen = q * total, 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float("nan")


def health(bridge: BridgeProcess) -> dict:
    with urllib.request.urlopen(bridge.url + "/health", timeout=5) as resp:
        return json.loads(resp.read())


def _merge(results: list[dict]) -> tuple[dict[int, int], dict[str, int]]:
    hist: dict[int, int] = {}
    by_event: dict[str, int] = {}
    for r in results:
        for ms, count in r["hist"]:
            hist[ms] = hist.get(ms, 0) + count
        for event, count in r["byEvent"].items():
            by_event[event] = by_event.get(event, 0) + count
    return hist, by_event


def _latency(hist: dict[int, int]) -> dict[str, float]:
    return {"p50": percentile(hist, 0.50), "p99": percentile(hist, 0.99),
            "max": float(max(hist)) if hist else float("nan")}


def run_point(bridge: BridgeProcess, node: str, script: Path, clients: int, procs: int, probes: int,
              seconds: float, timeframe: str, batch_ms: int, probe_nice: int) -> dict:
    """``probes`` clients in one normal-priority process, the rest spread over ``procs`` niced ones."""
    load = clients - probes
    shares = [load // procs + (1 if k < load % procs else 0) for k in range(procs)]
    lib = str(JS_DIR / "node_modules" / "socket.io-client")

    def spawn(n: int, niceness: int) -> subprocess.Popen:
        return subprocess.Popen([node, str(script), lib, bridge.url, str(n), SYMBOLS, timeframe],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                preexec_fn=(lambda: os.nice(niceness)) if niceness else None)

    children = [spawn(probes, probe_nice)] + [spawn(n, LOAD_NICENESS) for n in shares if n]
    try:
        for child in children:
            line = child.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a client process did not get ready: {line!r}")
        time.sleep(1.0)  # settle: every client has had a flush
        start = time.time() + 0.5
        stop = start + seconds
        for child in children:
            child.stdin.write(f"{int(start * 1000)} {int(stop * 1000)}\n")
            child.stdin.flush()
        time.sleep(max(0.0, start - time.time()))
        load_avg = os.getloadavg()[0]
        cpu0, stats0 = cpu_seconds(bridge.proc.pid), health(bridge)["stats"]
        clients0 = sum(cpu_seconds(c.pid) for c in children)
        time.sleep(max(0.0, stop - time.time()))
        cpu1, stats1 = cpu_seconds(bridge.proc.pid), health(bridge)["stats"]
        clients1 = sum(cpu_seconds(c.pid) for c in children)
        results = [json.loads(child.stdout.readline()) for child in children]
    finally:
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    hist, by_event = _merge(results)
    probe_hist, _ = _merge(results[:1])
    load_hist, _ = _merge(results[1:])
    probe = _latency(probe_hist)
    bridge_cpu = round(100.0 * (cpu1 - cpu0) / seconds, 1)
    return {
        "delivery": health(bridge)["delivery"],
        "clients": clients,
        "client_procs": len(children),
        "seconds": seconds,
        "delivered_per_s": round(sum(r["events"] for r in results) / seconds, 1),
        "ticks_per_s": round(sum(r["ticks"] for r in results) / seconds, 1),
        "events_per_s": {e: round(c / seconds, 1) for e, c in sorted(by_event.items())},
        "latency_ms": probe,
        "latency_ms_all_clients": _latency(hist),
        "latency_ms_load_clients": _latency(load_hist),
        "bridge_tick_to_write_ms": stats1["tick_to_write_ms"],
        "bridge_cpu_pct": bridge_cpu,
        "bridge_flush_ms": stats1["flush_ms"],
        "bridge_flush_late_ms": stats1["flush_late_ms"],
        "client_cpu_pct": round(100.0 * (clients1 - clients0) / seconds, 1),
        "load_avg_1m": round(load_avg, 2),
        "conflated": stats1["conflated"] - stats0["conflated"],
        "skipped_slow": stats1["skipped_slow"] - stats0["skipped_slow"],
        "slow_disconnects": stats1["slow_disconnects"] - stats0["slow_disconnects"],
        "client_disconnects": sum(r["disconnects"] for r in results),
        "connect_failures": sum(r["failed"] for r in results),
        "subscribe_errors": sum(r["subscribeErrors"] for r in results),
        "target_met": probe["p99"] <= batch_ms + 25 and bridge_cpu < 100.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="100,500,1000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--client-procs", type=int, default=2, help="processes for the load clients")
    parser.add_argument("--probes", type=int, default=10, help="latency probe clients")
    parser.add_argument("--probe-nice", type=int, default=0,
                        help="niceness of the probe process (negative, as root, to model clients with a CPU of their own)")
    parser.add_argument("--timeframe", default="", help="also subscribe to this timeframe (candles, indicators)")
    parser.add_argument("--batch-ms", type=int, default=50)
    parser.add_argument("--paths", default="fast",
                        help=f"delivery paths to measure in turn, comma-separated, of {','.join(DELIVERY_PATHS)}")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    paths = args.paths.split(",")
    unknown = [p for p in paths if p not in DELIVERY_PATHS]
    if unknown:
        parser.error(f"--paths: unknown {unknown}, expected some of {','.join(DELIVERY_PATHS)}")
    node = npm_install()
    engine = EngineProcess()
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "clients.js"
        script.write_text(NODE_CLIENTS)
        try:
            engine.start()
            for path in paths:
                bridge = BridgeProcess(args=["--batch-interval-ms", str(args.batch_ms)], engine=engine,
                                       env=delivery_env(path))
                try:
                    bridge.start()
                    for n in (int(x) for x in args.clients.split(",")):
                        point = run_point(bridge, node, script, n, args.client_procs, min(args.probes, n),
                                          args.seconds, args.timeframe, args.batch_ms, args.probe_nice)
                        if point["delivery"] != path:
                            raise RuntimeError(f"asked for the {path} path, the bridge reports {point['delivery']}")
                        points.append(point)
                        print(json.dumps(point), file=sys.stderr, flush=True)
                finally:
                    bridge.stop()
        finally:
            engine.stop()
    report = {
        "benchmark": "bridge_clients",
        "machine": machine(node=_node_version(node)),
        "sim_rate_ticks_per_s": 100,
        "symbols_per_client": len(SYMBOLS.split(",")),
        "timeframe": args.timeframe or None,
        "batch_interval_ms": args.batch_ms,
        "target": f"p99 <= {args.batch_ms + 25} ms and bridge < 100% of one core",
        "niceness": {"bridge": 0, "engine": 0, "probes": args.probe_nice, "load_clients": LOAD_NICENESS},
        "points": points,
    }
    emit(report, args.out)
    return 0


def _node_version(node: str) -> str:
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
