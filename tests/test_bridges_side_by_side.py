"""Bridges side by side: each reads the bus itself, so clients of different bridges get the same
closed candles and indicator values; ``mt5-service --bridges N`` runs them on consecutive ports."""
from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import socketio

from engine.config import ConfigError
from engine.launcher import MAX_BRIDGES, bridge_ports
from tests.bridge_procs import BridgeProcess, Recorder, fast_h1_replay
from tests.procs import ROOT, ServiceProcess, free_port, free_ports

HOUR = 3600
WINDOW_BARS = 40  # closed bars both clients must have seen, compared bar by bar


def closed_candles(client: Recorder) -> list[dict]:
    return [bar for event in client.of("candles") for bar in event["candles"] if bar["closed"]]


def closed_indicators(client: Recorder) -> list[dict]:
    return [value for value in client.of("indicators") if value["closed"]]


async def same_window(clients: list[Recorder], bars: int, timeout: float) -> tuple[int, int]:
    """``(first, last)`` bar times of a window of ``bars`` closed bars every client saw whole:
    from the latest first closed bar any of them saw, until each has that window's last bar's
    candle and indicator values."""
    for client in clients:
        await client.wait_for("candles", lambda e: any(b["closed"] for b in e["candles"]), timeout)
    first = max(closed_candles(client)[0]["time"] for client in clients)
    last = first + (bars - 1) * HOUR
    for client in clients:
        await client.wait_for("candles", lambda e: any(b["closed"] and b["time"] >= last for b in e["candles"]),
                              timeout)
        await client.wait_for("indicators", lambda v: v["closed"] and v["time"] >= last, timeout)
    return first, last


def test_clients_of_two_bridges_get_the_same_closed_candles_and_indicator_values(tmp_path, start_engine,
                                                                                  start_worker, started):
    engine_args, replayed = fast_h1_replay(tmp_path)
    engine = start_engine(*engine_args)
    start_worker(engine)
    bridges = [BridgeProcess(["--timeframes", "H1"], engine=engine) for _ in range(2)]
    for bridge in bridges:  # both start at once, then each must hear the engine
        started.append(bridge)
        bridge.spawn()
    for bridge in bridges:
        bridge.wait_health(200)

    async def scenario() -> tuple[list[Recorder], tuple[int, int]]:
        clients = [await Recorder().connect(bridge.url) for bridge in bridges]
        try:
            for client in clients:
                await client.call("subscribe", {"symbol": "EURUSD", "timeframe": "H1"})
            return clients, await same_window(clients, WINDOW_BARS, timeout=30)
        finally:
            for client in clients:
                await client.close()

    clients, (first, last) = asyncio.run(asyncio.wait_for(scenario(), 60))
    window = [first + i * HOUR for i in range(WINDOW_BARS)]
    candles = [[b for b in closed_candles(c) if first <= b["time"] <= last] for c in clients]
    values = [[v for v in closed_indicators(c) if first <= v["time"] <= last] for c in clients]
    # Every bar of the window once, in order, on both bridges; the very same candles and values.
    for seen in (*candles, *values):
        assert [x["time"] for x in seen] == window
    assert candles[0] == candles[1]
    assert values[0] == values[1]
    # They are the replayed market's bars, and the indicators are warmed up.
    by_time = {bar.time: bar for bar in replayed}
    for bar in candles[0]:
        assert math.isclose(bar["close"], by_time[bar["time"]].close, abs_tol=1e-9)
    assert all(values[0][-1][key] is not None for key in ("sma", "ema", "rsi", "macd"))
    print(f"two bridges: {WINDOW_BARS} closed H1 bars ({time.strftime('%Y-%m-%d %H:%M', time.gmtime(first))} .. "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(last))}) and their indicator values identical on both; "
          f"last rsi {values[0][-1]['rsi']:.4f}")


def bridge_pids(output: str, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"started {re.escape(name)} \(pid (\d+)\)", output)]


def test_mt5_service_runs_two_bridges_on_consecutive_ports_and_restarts_each(started):
    ports = free_ports(2)
    service = ServiceProcess(["--workers", "0", "--bridges", "2"], env={"WS_PORT": str(ports[0])})
    started.append(service)
    service.start()
    bridges = [BridgeProcess(port=port) for port in ports]  # only their /health is used
    for name, bridge in zip(("bridge:0", "bridge:1"), bridges):
        bridge.proc = service.proc  # liveness read from the launcher
        assert bridge.wait_health(200, 30, healthy=True)["status"] == "ok", service.output()
        assert f"[{name}] mt5-bridge: http://127.0.0.1:{bridge.port} " in service.output()
    assert f"web (Socket.IO):   http://127.0.0.1:{ports[0]}, http://127.0.0.1:{ports[1]}" in service.output()

    # A killed bridge is restarted like every other child, on its own port; the other one serves on.
    killed = bridge_pids(service.output(), "bridge:1")[-1]
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while len(bridge_pids(service.output(), "bridge:1")) < 2 and time.monotonic() < deadline:
        assert bridges[0].health()[0] == 200
        time.sleep(0.05)
    assert len(bridge_pids(service.output(), "bridge:1")) == 2, service.output()
    assert bridges[1].wait_health(200, 10, healthy=True)["status"] == "ok"
    assert service.stop(signal.SIGINT, timeout=10) == 0


@pytest.mark.parametrize(("args", "ws_port", "message"), [
    (["--bridges", "0"], "8765", f"--bridges: must be between 1 and {MAX_BRIDGES}, got 0"),
    (["--bridges", "two"], "8765", "--bridges: cannot use 'two' as an integer"),
    (["--bridges", "3"], "65534", "--bridges: 3 bridges from WS_PORT 65534 need ports up to 65536, past 65535"),
    (["--bridges", "2"], "0", "WS_PORT: must be between 1 and 65535, got 0"),
])
def test_bridges_that_cannot_fit_stop_mt5_service_at_start_with_one_line(args, ws_port, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WS_", "BRIDGE_"))}
    result = subprocess.run([sys.executable, "-m", "engine.launcher", "--env-file", os.devnull, *args],
                            cwd=ROOT, env={**env, "WS_PORT": ws_port}, capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"mt5-service: configuration error: {message}"]
    assert "started engine" not in result.stdout + result.stderr


def test_bridge_ports_are_consecutive_from_ws_port():
    assert bridge_ports(8765, 1) == [8765]
    assert bridge_ports(8765, 3) == [8765, 8766, 8767]
    assert bridge_ports(65534, 2) == [65534, 65535]
    with pytest.raises(ConfigError, match="--bridges: 2 bridges from WS_PORT 65535"):
        bridge_ports(65535, 2)
    with pytest.raises(ConfigError, match="--bridges: must be between 1 and"):
        bridge_ports(8765, MAX_BRIDGES + 1)


def readme_nginx(ports: list[int], listen: int, ip_hash: bool = True) -> str:
    """The README's nginx snippet on these ports, as a whole nginx.conf (``ip_hash`` kept or left out)."""
    block = re.search(r"```nginx\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    block = (block.replace("127.0.0.1:8765", f"127.0.0.1:{ports[0]}").replace("127.0.0.1:8766", f"127.0.0.1:{ports[1]}")
             .replace("listen 80;", f"listen 127.0.0.1:{listen};").replace("md.example.com", "localhost"))
    if not ip_hash:
        block = re.sub(r"\n\s*ip_hash;[^\n]*", "", block)
    return ("daemon off; worker_processes 1; pid nginx.pid; error_log stderr;\n"
            f"events {{}}\nhttp {{\naccess_log off;\n{block}}}\n")


async def ticks_through(url: str, transports: list[str]) -> int:
    """Ticks a client connected with ``transports`` gets in 0.5 s after its first (0: refused)."""
    client = Recorder()
    try:
        await client.connect(url, transports=transports, wait_timeout=2)
        await client.call("subscribe", {"symbol": "EURUSD"})
        await client.wait_for("tick")
        await asyncio.sleep(0.5)
        return len(client.of("tick"))
    except (socketio.exceptions.ConnectionError, TimeoutError):
        return 0
    finally:
        # Without the goodbye a polling client sends: behind nginx without ip_hash, its session
        # may be on the other bridge, or already gone.
        await client.sio.eio.disconnect(abort=True)


def test_the_readme_nginx_snippet_serves_websocket_and_with_ip_hash_long_polling(tmp_path, started):
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed: it runs the README's snippet in front of two bridges")
    ports, listen = free_ports(2), free_port()
    url = f"http://localhost:{listen}"
    service = ServiceProcess(["--workers", "0", "--bridges", "2"],
                             env={"WS_PORT": str(ports[0]), "WS_ALLOWED_HOSTS": f"localhost:{listen},127.0.0.1"})
    started.append(service)
    service.start()
    for port in ports:
        BridgeProcess(port=port, proc=service.proc).wait_health(200)

    def through_nginx(ip_hash: bool) -> dict[str, list[int]]:
        (tmp_path / "nginx.conf").write_text(readme_nginx(ports, listen, ip_hash))
        proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", "nginx.conf"], stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10
            while proxy.poll() is None and time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", listen)) == 0:
                        break
                time.sleep(0.05)
            assert proxy.poll() is None, proxy.stderr.read()

            async def clients(transports: list[str]) -> list[int]:  # one after another: round robin shows
                return [await ticks_through(url, transports) for _ in range(2)]

            return {t[0]: asyncio.run(clients(t)) for t in (["websocket"], ["polling"])}
        finally:
            proxy.terminate()
            proxy.wait(10)

    hashed, balanced = through_nginx(ip_hash=True), through_nginx(ip_hash=False)
    print(f"README nginx snippet before two bridges: ticks per client in 0.5 s: with ip_hash {hashed}; "
          f"without {balanced}")
    assert all(hashed["websocket"]) and all(hashed["polling"]) and all(balanced["websocket"])
    assert not any(balanced["polling"]), "long-polling without ip_hash reached a bridge without its session"
