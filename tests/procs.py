"""Start real service processes on free loopback ports, and always stop them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import zmq

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EngineProcess:
    """An ``mt5-engine`` child process on its own free ports (a sim market by default)."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    bus_port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    pub_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    # Output goes to a file, not a pipe: a pipe nobody reads would block a chatty child.
    _log: tempfile._TemporaryFileWrapper | None = None

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
        return [
            sys.executable, "-m", "engine.cli", "--env-file", os.devnull,
            "--bus-endpoint", self.bus, "--rpc-endpoint", self.rpc,
            "--bus-pub-endpoint", self.pub, *self.args,
        ]

    def start(self, wait: bool = True, timeout: float = 30.0) -> EngineProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MT5_", "SIM_", "BUS_"))}
        env.update(self.env)
        self._log = tempfile.NamedTemporaryFile("w+", prefix="engine-", suffix=".log")
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the RPC answers ``health`` (or the process dies: then raise with its stderr)."""
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

    def output(self) -> str:
        """Everything the process printed so far."""
        if self._log is None:
            return ""
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

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
