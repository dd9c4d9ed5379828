"""Hosts apart, for real: the README's multi-host layout with CURVE on, each host a Linux network
namespace of its own (the bus and engine; an indicator worker; two bridges; the far side, where a
Socket.IO client and bots run), joined by veth pairs to a Linux bridge, on a private /24.

Every process runs as ``ip netns exec HOST python -m ...`` and reaches the others only over that
network, at the addresses and default ports the README shows. Needs root and iproute2; skipped
otherwise. This module is also the far side's program: ``python -m tests.test_netns_hosts
socketio URL...`` or ``... bot BUS RPC [SECRET SERVER_KEY]`` print one ``RESULT`` line of JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.client import RpcClient, RpcTimeout, Subscriber
from engine.security import CurveClient
from engine.security import main as keygen
from tests.bridge_procs import Recorder, fast_h1_replay
from tests.procs import ChildProcess
from tests.test_bridges_side_by_side import HOUR, closed_candles, closed_indicators, same_window

HOSTS = ("bus", "worker", "bridge1", "bridge2", "far")
BUS_PORT, RPC_PORT, PUB_PORT, WS_PORT = 5555, 5556, 5557, 8765  # the defaults: each host is its own
WINDOW_BARS = 20
RESULT = "RESULT "
NO_KEY_WAIT_MS = 3000  # how long a bot without a key listens for anything


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raise with its error output if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class HostProcess(ChildProcess):
    """``python -m program ARGS`` inside the network namespace ``netns``."""

    netns: str = ""
    program: str = ""

    def __post_init__(self) -> None:
        self.module = self.program  # names its log and its errors

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, sys.executable, "-m", self.program, *self.args]

    def start(self) -> HostProcess:
        self.spawn()
        return self


@dataclass
class Lan:
    """Namespaces ``mt5-TOKEN-HOST`` on 10.A.B.0/24, each with one veth to a Linux bridge in the
    namespace ``mt5-TOKEN-switch``. ``start`` runs processes on them; ``close`` stops every
    process, then deletes every namespace (and with it every veth and the bridge)."""

    token: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: str = field(default_factory=lambda: f"10.{random.randrange(256)}.{random.randrange(256)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[HostProcess] = field(default_factory=list)

    def netns(self, host: str) -> str:
        return f"mt5-{self.token}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{HOSTS.index(host) + 1}"

    def add_namespace(self, host: str) -> str:
        ip("netns", "add", self.netns(host))
        self.namespaces.append(self.netns(host))
        ip("-n", self.netns(host), "link", "set", "lo", "up")
        return self.netns(host)

    def build(self) -> Lan:
        """The bridge in the switch namespace (made first, by the fixture), then each host on it."""
        switch = self.netns("switch")
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for i, host in enumerate(HOSTS):
            ns = self.add_namespace(host)
            ip("-n", switch, "link", "add", f"port{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", switch, "link", "set", f"port{i}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def start(self, host: str, program: str, *args: str, env: dict[str, str] | None = None) -> HostProcess:
        proc = HostProcess(list(args), env=env or {}, netns=self.netns(host), program=program)
        self.processes.append(proc)
        return proc.start()

    def result(self, proc: HostProcess, timeout: float = 60.0) -> dict[str, Any]:
        """The ``RESULT`` line of a far-side program once it exited 0; else fail with every log."""
        code = proc.proc.wait(timeout)
        lines = [line for line in proc.output().splitlines() if line.startswith(RESULT)]
        if code != 0 or not lines:
            logs = "\n".join(f"--- {p.netns}: {p.program} {' '.join(p.args)}\n{p.output()[-3000:]}"
                             for p in self.processes)
            raise AssertionError(f"{proc.program} {proc.args} exited with {code}\n{logs}")
        return json.loads(lines[-1][len(RESULT):])

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def lan() -> Iterator[Lan]:
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("network namespaces need root on Linux (ip netns add): run as root to test hosts apart")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` command is not installed: it makes the network namespaces")
    network = Lan()
    try:
        try:
            network.add_namespace("switch")
        except RuntimeError as exc:
            pytest.skip(f"cannot make a network namespace here: {exc}")
        yield network.build()
    finally:
        network.close()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """The README's CURVE layout: the engine's pair, one pair per client with what it may publish,
    the clients' public keys in ``clients/`` and their secrets beside it."""
    assert keygen(["keygen", str(tmp_path / "server"), "server"]) == 0
    for name, publish in (("worker1", "ind:,health:indicators:"), ("bridge1", ""), ("bridge2", ""), ("bot", "")):
        assert keygen(["keygen", str(tmp_path / "clients"), name, "--publish", publish]) == 0
        (tmp_path / "clients" / f"{name}.key_secret").rename(tmp_path / f"{name}.key_secret")
    return tmp_path


def client_env(keys: Path, name: str) -> dict[str, str]:
    return {"CURVE_CLIENT_SECRET": str(keys / f"{name}.key_secret"),
            "CURVE_SERVER_KEY": str(keys / "server" / "server.key")}


@pytest.mark.timeout(90)
def test_ticks_candles_and_indicators_cross_hosts_apart_with_curve_and_a_bot_without_a_key_gets_nothing(
        lan, keys, tmp_path):
    began = time.monotonic()
    bus = lan.address("bus")
    bus_at, rpc_at = f"tcp://{bus}:{BUS_PORT}", f"tcp://{bus}:{RPC_PORT}"
    endpoints = ["--bus-endpoint", bus_at, "--rpc-endpoint", rpc_at]  # what a bridge connects to
    publishes = ["--bus-pub-endpoint", f"tcp://{bus}:{PUB_PORT}"]  # also for the engine and a worker
    replay_args, replayed = fast_h1_replay(tmp_path)
    engine = lan.start("bus", "engine.cli", "--env-file", os.devnull, *replay_args, *endpoints, *publishes,
                       env={"CURVE_SERVER_SECRET": str(keys / "server" / "server.key_secret"),
                            "CURVE_CLIENTS_DIR": str(keys / "clients")})
    engine.wait_output("mt5-engine: source=replay")
    worker = lan.start("worker", "indicators.worker", "--env-file", os.devnull, *endpoints, *publishes,
                       env=client_env(keys, "worker1"))
    bridges = [lan.start(host, "bridge.cli", "--env-file", os.devnull, *endpoints, "--timeframes", "H1",
                         "--ws-host", lan.address(host), "--ws-port", str(WS_PORT), env=client_env(keys, host))
               for host in ("bridge1", "bridge2")]
    worker.wait_output("mt5-indicators: shard")
    for bridge in bridges:
        bridge.wait_output("mt5-bridge: http://")
    urls = [f"http://{lan.address(host)}:{WS_PORT}" for host in ("bridge1", "bridge2")]
    far = lan.start("far", "tests.test_netns_hosts", "socketio", *urls)
    keyed_bot = lan.start("far", "tests.test_netns_hosts", "bot", bus_at, rpc_at,
                          str(keys / "bot.key_secret"), str(keys / "server" / "server.key"))
    plain_bot = lan.start("far", "tests.test_netns_hosts", "bot", bus_at, rpc_at)

    seen = lan.result(far)
    bridge_logs = "\n".join(b.output() for b in bridges)
    first, last = seen["window"]
    window = [first + i * HOUR for i in range(WINDOW_BARS)]
    by_time = {bar.time: bar for bar in replayed}
    for client in seen["clients"]:
        ticks = client["ticks"]
        assert len(ticks) >= 5, bridge_logs
        assert all(t["symbol"] == "EURUSD" and 0 < t["bid"] <= t["ask"] for t in ticks)
        assert [t["time_msc"] for t in ticks] == sorted(t["time_msc"] for t in ticks)
        assert [b["time"] for b in client["candles"]] == window
        assert all(abs(b["close"] - by_time[b["time"]].close) < 1e-9 for b in client["candles"])
        assert [v["time"] for v in client["indicators"]] == window
        assert all(client["indicators"][-1][key] is not None for key in ("sma", "ema", "rsi", "macd"))
    assert seen["clients"][0]["candles"] == seen["clients"][1]["candles"]
    assert seen["clients"][0]["indicators"] == seen["clients"][1]["indicators"]

    keyed, plain = lan.result(keyed_bot), lan.result(plain_bot)
    assert keyed["ticks"] > 0 and keyed["rpc"] == "ok"  # the same bot with a key is served
    assert plain == {"ticks": 0, "rpc": "timeout"}, plain
    took = time.monotonic() - began
    print(f"hosts apart on {lan.subnet}.0/24 (CURVE on): the far side got {len(seen['clients'][0]['ticks'])} and "
          f"{len(seen['clients'][1]['ticks'])} ticks, the same {WINDOW_BARS} closed H1 bars and indicator values "
          f"from both bridges; a keyed bot got {keyed['ticks']} ticks and an RPC reply, a bot without a key "
          f"{plain['ticks']} ticks in {NO_KEY_WAIT_MS / 1000:.0f} s and no RPC reply; {took:.1f} s in all")


# The far side's programs (run inside the far namespace by the test above).
async def wait_healthy(url: str, timeout: float = 30.0) -> None:
    """Until the bridge at ``url`` answers ``/health`` with 200 (it has heard the engine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/health not 200 within {timeout} s")
        await asyncio.sleep(0.1)


async def socketio_side(urls: list[str]) -> dict[str, Any]:
    """Subscribe to EURUSD H1 on every bridge; what each delivered over a window of closed bars."""
    for url in urls:
        await wait_healthy(url)
    clients = [await Recorder().connect(url) for url in urls]
    try:
        for client in clients:
            await client.call("subscribe", {"symbol": "EURUSD", "timeframe": "H1"})
        first, last = await same_window(clients, WINDOW_BARS, timeout=30)
    finally:
        for client in clients:
            await client.close()

    def in_window(items: list[dict]) -> list[dict]:
        return [x for x in items if first <= x["time"] <= last]

    return {"window": [first, last],
            "clients": [{"ticks": c.of("tick"), "candles": in_window(closed_candles(c)),
                         "indicators": in_window(closed_indicators(c))} for c in clients]}


def bot_side(bus: str, rpc: str, curve: CurveClient | None) -> dict[str, Any]:
    """A bot's view of the bus: ticks received within a bounded wait, and whether RPC answers."""
    with Subscriber(bus, ["tick:"], curve=curve) as sub:
        ticks = 0
        deadline = time.monotonic() + NO_KEY_WAIT_MS / 1000
        while (left := deadline - time.monotonic()) > 0 and (curve is None or ticks < 10):
            ticks += sub.recv(timeout_ms=max(1, int(left * 1000))) is not None
    client = RpcClient(rpc, timeout_ms=NO_KEY_WAIT_MS, curve=curve)
    try:
        answer = "ok" if client.call("health")["status"] else "empty"
    except RpcTimeout:
        answer = "timeout"
    finally:
        client.close()
    return {"ticks": ticks, "rpc": answer}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.test_netns_hosts")
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("socketio").add_argument("urls", nargs="+")
    bot = roles.add_parser("bot")
    bot.add_argument("bus")
    bot.add_argument("rpc")
    bot.add_argument("curve", nargs="*", metavar="SECRET SERVER_KEY")
    args = parser.parse_args(argv)
    if args.role == "socketio":
        result = asyncio.run(asyncio.wait_for(socketio_side(args.urls), 60))
    else:
        result = bot_side(args.bus, args.rpc, CurveClient.load(*args.curve) if args.curve else None)
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
