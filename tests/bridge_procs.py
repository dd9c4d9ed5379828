"""The bridge as a child process, and a recording python-socketio client for its tests."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import socketio
import zmq

from engine.models import Candle
from engine.sources.sim import SimSource
from engine.timeframes import TIMEFRAMES
from tests.procs import ROOT, ChildProcess, EngineProcess, free_port

JS_DIR = ROOT / "bridge" / "js"
# The bridge's delivery paths, as /health names them: tests of delivery run on each.
DELIVERY_PATHS = ("fast", "public")


def delivery_env(path: str) -> dict[str, str]:
    """The environment that puts a bridge on ``path`` (``fast`` or ``public``)."""
    return {"BRIDGE_FAST_PATH": "1" if path == "fast" else "0"}


@dataclass
class BridgeProcess(ChildProcess):
    """An ``mt5-bridge`` child attached to ``engine``'s bus and RPC, on a free port."""

    module = "bridge.cli"
    engine: EngineProcess | None = None
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        e = self.engine
        return [*super().command(), "--ws-port", str(self.port), "--bus-endpoint", e.bus,
                "--rpc-endpoint", e.rpc]

    def start(self, timeout: float = 30.0, ready: bool = True) -> BridgeProcess:
        """Spawn; with ``ready``, wait until ``/health`` says ok (it has heard the engine)."""
        self.spawn()
        self.wait_health(200 if ready else None, timeout)
        return self

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /health``: (HTTP status, body)."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_health(self, status: int | None, timeout: float = 30.0, healthy: bool = False) -> dict[str, Any]:
        """Until ``/health`` answers (with ``status`` when given, and once it says ``ok`` when
        ``healthy``: a bridge is degraded until it has heard the engine); raise with the output
        if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self.output()}")
            try:
                code, body = self.health()
                if (status is None or code == status) and (not healthy or body.get("status") == "ok"):
                    return body
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"bridge /health not {status} within {timeout} s: {self.output()}")


class Recorder:
    """A python-socketio ``AsyncClient`` that records every event it receives, in order."""

    def __init__(self, **client_kwargs: Any) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, **client_kwargs)
        self.events: list[tuple[float, str, Any]] = []
        self._changed = asyncio.Event()

        @self.sio.on("*")
        async def record(event: str, *args: Any) -> None:
            self.events.append((time.time(), event, args[0] if len(args) == 1 else args))
            self._changed.set()

    async def connect(self, url: str, **kwargs: Any) -> Recorder:
        kwargs.setdefault("transports", ["websocket"])
        kwargs.setdefault("wait_timeout", 5)
        await self.sio.connect(url, **kwargs)
        return self

    def of(self, event: str) -> list[Any]:
        return [data for _, name, data in self.events if name == event]

    async def wait_for(self, event: str, check: Callable[[Any], bool] = lambda _: True,
                       timeout: float = 5.0, after: int = 0) -> Any:
        """The first ``event`` (from index ``after`` on) whose payload passes ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            for _, name, data in self.events[after:]:
                if name == event and check(data):
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                seen = sorted({name for _, name, _ in self.events})
                raise TimeoutError(f"no {event!r} within {timeout} s; seen: {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def call(self, event: str, data: Any = None, timeout: float = 5.0) -> Any:
        """Emit with an acknowledgement and return the acknowledged payload."""
        if data is None:
            return await self.sio.call(event, timeout=timeout)
        return await self.sio.call(event, data, timeout=timeout)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()




def run(scenario: Callable[..., Any], bridge: BridgeProcess, clients: int = 1, timeout: float = 30.0) -> Any:
    """Run ``scenario(*recorders)`` with ``clients`` connected clients; always disconnect them."""
    async def main() -> Any:
        recorders = [Recorder() for _ in range(clients)]
        try:
            for r in recorders:
                await r.connect(bridge.url)
            return await scenario(*recorders)
        finally:
            for r in recorders:
                await r.close()
    return asyncio.run(asyncio.wait_for(main(), timeout))

class BusInjector:
    """Publishes into the bus' publisher side, as an indicator worker would."""

    def __init__(self, engine: EngineProcess) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.linger = 0
        self.sock.connect(engine.pub)
        self.seq: dict[bytes, int] = {}
        self.epoch = time.time_ns() // 1_000_000

    def publish(self, topic: bytes, payload: dict[str, Any]) -> None:
        self.seq[topic] = self.seq.get(topic, 0) + 1
        self.sock.send_multipart([topic, msgpack.packb({**payload, "seq": self.seq[topic], "epoch": self.epoch})])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def npm_install(folder: Path = JS_DIR, package: str = "socket.io-client") -> str:
    """Install ``folder`` (``bridge/js``: the pinned socket.io-client) from its lockfile once, unless
    ``package`` is there; the path of ``node``. Skips where node/npm are absent."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the JavaScript client (install Node.js 18+)")
    if not (folder / "node_modules" / package / "package.json").is_file():
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True,
                                text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"npm ci failed in {folder}: {result.stderr[-2000:]}")
    return node


# H1 bars replayed at this many per second: closed candles and indicator values come fast.
REPLAY_BARS_PER_S = 20


def fast_h1_replay(folder: Path, bars: int = 1000, seed: int = 7) -> tuple[list[str], list[Candle]]:
    """An MT5 H1 export of ``bars`` sim bars in ``folder``, and the engine flags that replay it at
    ``REPLAY_BARS_PER_S`` (only H1): returns ``(engine_args, bars)``."""
    from tests.test_indicator_worker import write_mt5_h1_export

    sim = SimSource(["EURUSD"], seed=seed, clock_ms=1_790_000_000_000)
    sim.start()
    history = sim.history("EURUSD", TIMEFRAMES["H1"], bars)
    export = folder / "EURUSD_H1_replay.csv"
    write_mt5_h1_export(export, history)
    speed = TIMEFRAMES["H1"].seconds * REPLAY_BARS_PER_S
    return ["--source", "replay", "--replay-file", str(export), "--replay-speed", str(speed),
            "--timeframes", "H1"], history
