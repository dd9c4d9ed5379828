"""Start real services on free loopback ports (child processes, or the engine in a thread of
the test process), and always stop them."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import msgpack
import zmq

from engine.config import EngineConfig

if TYPE_CHECKING:
    from engine.service import EngineService

ROOT = Path(__file__).resolve().parent.parent
# Settings a developer's shell may carry that must not leak into a test's child process.
_SCRUBBED = ("MT5_", "SIM_", "BUS_", "RPC_", "IND_", "WS_", "BRIDGE_", "CURVE_", "SOURCE", "SYMBOLS", "TIMEFRAMES")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port below the ephemeral range, never one this process was given before
    (``free_ports``)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` free ports in a row (as bridges side by side take ``WS_PORT``, ``WS_PORT + 1``)
    below the ephemeral range, none of them given before in this process. A client that keeps
    reconnecting to a stopped server's ephemeral port can be handed that very port as its own
    source port (a TCP self-connect), which then blocks the restarted server's bind; outside the
    range that cannot happen. A port is free when it is chosen but bound only when its process
    starts, so ports chosen meanwhile must differ."""
    low = _ephemeral_range()[0]
    rng = random.Random()
    for _ in range(1000):
        first = rng.randrange(10_000, low - count + 1)
        ports = list(range(first, first + count))
        if _HANDED_OUT.isdisjoint(ports) and all(map(_bindable, ports)):
            _HANDED_OUT.update(ports)
            return ports
    raise RuntimeError(f"no {count} free ports in a row found")


_HANDED_OUT: set[int] = set()  # free_ports' answers in this process (a few thousand at most)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def engine_config(environ: Mapping[str, str] | None = None, **overrides: str) -> EngineConfig:
    """An engine config whose bus, publisher side and RPC are on free 127.0.0.1 ports, with
    ``overrides`` (as CLI flags would give them); no ``.env`` and only ``environ`` is read."""
    ports = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("bus_endpoint", "bus_pub_endpoint", "rpc_endpoint")}
    return EngineConfig.load({**ports, **overrides}, environ=environ or {}, dotenv=None)


@contextmanager
def engine_thread(service: EngineService, open_timeout: float = 30.0) -> Iterator[threading.Thread]:
    """``service`` opened, run and closed by a thread of its own (sockets belong to the thread
    that opens and runs them); on exit, also when the block fails, it is stopped and joined."""
    opened = threading.Event()

    def run() -> None:
        try:
            service.open()
            opened.set()
            service.run()
        finally:
            service.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert opened.wait(open_timeout)
        yield thread
    finally:
        service.stop()
        thread.join(5)


def subscriber(ctx: zmq.Context, endpoint: str, *prefixes: bytes, hwm: int = 100_000) -> zmq.Socket:
    """A plain pyzmq SUB (not our client) on ``prefixes``."""
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = hwm
    for prefix in prefixes:
        sock.subscribe(prefix)
    sock.connect(endpoint)
    return sock


def collect(sock: zmq.Socket, until=lambda messages: False, seconds: float = 5.0) -> list:
    """Decoded ``(topic, payload)`` pairs until ``until(messages)`` or ``seconds`` pass."""
    out: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until(out):
        if sock.poll(20):
            topic, payload = sock.recv_multipart()
            out.append((topic, msgpack.unpackb(payload)))
    return out


@dataclass
class ChildProcess:
    """A ``python -m MODULE`` child; its output goes to a file, not a pipe nobody reads."""

    module = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    _log: tempfile._TemporaryFileWrapper | None = None
    tree: Path = ROOT  # the source tree it runs from (a benchmark's baseline runs an older one)

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--env-file", os.devnull, *self.args]

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
        env.update(self.env)
        self._log = tempfile.NamedTemporaryFile("w+", prefix=f"{self.module}-", suffix=".log")
        self.proc = subprocess.Popen(
            self.command(), cwd=self.tree, env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True,
        )

    def output(self) -> str:
        """Everything the process printed so far."""
        if self._log is None:
            return ""
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_output(self, text: str, timeout: float = 30.0) -> None:
        """Until the process printed ``text`` (raise with its output if it exits or times out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}: {self.output()}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.module} did not print {text!r} within {timeout} s: {self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Signal the process and wait; kill it if it does not exit. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


@dataclass
class EngineProcess(ChildProcess):
    """An ``mt5-engine`` child process on its own free ports (a sim market by default)."""

    module = "engine.cli"
    bus_port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    pub_port: int = field(default_factory=free_port)

    @property
    def bus(self) -> str:
        return f"tcp://127.0.0.1:{self.bus_port}"

    @property
    def rpc(self) -> str:
        return f"tcp://127.0.0.1:{self.rpc_port}"

    @property
    def pub(self) -> str:
        return f"tcp://127.0.0.1:{self.pub_port}"

    def command(self) -> list[str]:
        return [*super().command(), "--bus-endpoint", self.bus, "--rpc-endpoint", self.rpc,
                "--bus-pub-endpoint", self.pub]

    def start(self, wait: bool = True, timeout: float = 30.0) -> EngineProcess:
        self.spawn()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the RPC answers ``health`` (or the process dies: then raise with its output)."""
        deadline = time.monotonic() + timeout
        ctx = zmq.Context.instance()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}: {self.output()}")
            sock = ctx.socket(zmq.REQ)
            sock.linger = 0
            sock.connect(self.rpc)
            sock.send(msgpack.packb({"op": "health"}))
            answered = sock.poll(500)
            sock.close(0)
            if answered:
                return
        raise TimeoutError(f"engine did not answer on {self.rpc} within {timeout} s")


@dataclass
class WorkerProcess(ChildProcess):
    """An ``mt5-indicators`` child attached to ``engine``'s bus and RPC."""

    module = "indicators.worker"
    engine: EngineProcess | None = None

    def command(self) -> list[str]:
        e = self.engine
        return [*super().command(), "--bus-endpoint", e.bus, "--bus-pub-endpoint", e.pub,
                "--rpc-endpoint", e.rpc]

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        self.spawn()
        self.wait_output("mt5-indicators: shard", timeout)
        return self


@dataclass
class ServiceProcess(ChildProcess):
    """``mt5-service`` (the launcher) on free ports; ``args`` go to the launcher."""

    module = "engine.launcher"
    engine: EngineProcess = field(default_factory=EngineProcess)

    def command(self) -> list[str]:
        e = self.engine
        return [*super().command(), "--bus-endpoint", e.bus, "--rpc-endpoint", e.rpc,
                "--bus-pub-endpoint", e.pub]

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        self.spawn()
        self.engine.proc = self.proc  # wait_ready reads its liveness from the launcher
        self.engine.wait_ready(timeout)
        return self


P = TypeVar("P", bound=ChildProcess)


@contextmanager
def running(proc: P) -> Iterator[P]:
    """``proc`` started; stopped on exit, also when starting it or the block fails (for
    module-scoped fixtures, which cannot use the function-scoped ``started`` list)."""
    try:
        yield proc.start()
    finally:
        proc.stop()
