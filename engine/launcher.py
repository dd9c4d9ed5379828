"""``mt5-service``: the engine, N indicator workers, the bridge (``--bridges N``: N of them on
consecutive ports from ``WS_PORT``) and (``--record DIR``) the recorder as separate OS processes.

Each child is started as its own console script would run it, reads the same environment and
``.env``, and has its output streamed here line by line with a component prefix. A child that
dies is restarted with exponential backoff (counted in the launcher's health, which the engine
child publishes on ``health:service:``: the launcher writes it into the engine's stdin, see
``engine.service_health``).
SIGINT/SIGTERM stop every child (SIGTERM, then SIGKILL after a grace period) and exit 0; on
Linux the children are also told to die with the launcher, so none is ever orphaned. A child
that exits with 2 cannot start as configured (its one-line reason is relayed like its other
output): the launcher stops every child and exits 2, naming it.

A replay (``--source replay``) is started paused and played once every indicator worker and the
bridge report healthy, so no subscriber of the service misses its first bars; with
``REPLAY_START=paused`` it stays paused for the user's ``replay`` ``start``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Any

from bridge.config import BridgeConfig
from engine import cli as engine_cli
from engine.client import RpcClient
from engine.config import ConfigError, EngineConfig
from engine.logs import setup_logging
from engine.protocol import SERVICE_COMPONENT, RpcError
from engine.security import CurveClient, SecurityError
from engine.service_health import STDIN_FLAG, HealthWriter
from engine.signals import StopFlag, stop_on_signals

log = logging.getLogger("service")

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 30.0  # a child up this long has its backoff reset
STOP_GRACE_S = 5.0
HEALTH_INTERVAL_S = 1.0
REPLAY_CHECK_S = 0.5  # how often a paused replay's readiness is looked at
# What every component exits with when it cannot start as configured (bad settings, a port in
# use): restarting it cannot help, so the launcher stops everything and exits with it too.
EXIT_CANNOT_START = 2
# Bridges side by side are processes of their own, each reading the whole bus: more than a
# host has cores only adds copies of that work.
MAX_BRIDGES = 64


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = BACKOFF_INITIAL_S
    next_start: float = 0.0
    reader: threading.Thread | None = field(default=None, repr=False)
    # Whether this child publishes the launcher's health (read from its stdin): the engine.
    takes_health: bool = False
    health_feed: HealthWriter | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def ready_to_play(workers: dict[str, str], expected: list[str], bridge: str | None) -> list[str]:
    """What a paused replay still waits for: each of the ``expected`` workers whose health
    status (``workers``: component -> status) is not ``ok``, and the bridge unless its status
    (``bridge``, None when there is no bridge) is ``ok``; empty when it may play."""
    waiting = [name for name in expected if workers.get(name) != "ok"]
    if bridge not in (None, "ok"):
        waiting.append("bridge")
    return waiting


class ReplayStarter:
    """Plays the engine's replay once the workers and the bridge report healthy: whenever the
    engine's replay is ``ready`` (loaded paused, also after an engine restart)."""

    def __init__(self, rpc: RpcClient, workers: int, bridge_url: str | None) -> None:
        self._rpc = rpc
        self._expected = [f"indicators:{i}" for i in range(workers)]
        self._bridge_url = bridge_url
        self._said = ""

    def check(self) -> bool:
        """Start the replay if it is ready and may play; True when it was started."""
        try:
            if self._rpc.call("replay", action="status")["state"] != "ready":
                return False
            workers = {payload.get("component"): payload.get("status")
                       for _, payload in self._rpc.snapshot("health:indicators:")}
            waiting = ready_to_play(workers, self._expected, self._bridge_status())
            if waiting:
                self._say(f"replay paused until healthy: {', '.join(waiting)}")
                return False
            self._rpc.call("replay", action="start")
        except RpcError as exc:
            self._say(f"replay not started yet: {exc.message}")
            return False
        log.info("replay started: %s report healthy",
                 ", ".join([*self._expected, *(["bridge"] if self._bridge_url else [])]) or "the engine")
        self._said = ""
        return True

    def _bridge_status(self) -> str | None:
        if self._bridge_url is None:
            return None
        try:
            with urllib.request.urlopen(self._bridge_url + "/health", timeout=1.0) as reply:
                return str(json.load(reply).get("status"))
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError):
            return "not answering"

    def _say(self, line: str) -> None:
        if line != self._said:  # each new reason once, not every check
            self._said = line
            log.info("%s", line)

    def close(self) -> None:
        self._rpc.close()


class Launcher:
    """Starts, watches, restarts and stops the children."""

    def __init__(self, children: list[Child], env: dict[str, str], out: IO[str] = sys.stdout,
                 replay_starter: ReplayStarter | None = None) -> None:
        self.children = children
        self._env = env
        self._out = out
        self._out_lock = threading.Lock()
        self._stop = StopFlag()
        self._started = time.monotonic()
        self.failed: Child | None = None  # the child that exited with EXIT_CANNOT_START
        self._replay_starter = replay_starter

    def stop(self) -> None:
        self._stop.set()

    def _start(self, child: Child) -> None:
        if child.health_feed is not None:
            child.health_feed.close()
        child.proc = subprocess.Popen(
            child.argv, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if child.takes_health else subprocess.DEVNULL,
            text=True, bufsize=1, errors="replace",
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        child.health_feed = HealthWriter(child.proc.stdin) if child.takes_health else None
        child.started_at = time.monotonic()
        child.reader = threading.Thread(target=self._relay, args=(child, child.proc.stdout),
                                        name=f"log-{child.name}", daemon=True)
        child.reader.start()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def _relay(self, child: Child, stream: IO[str]) -> None:
        """Stream a child's output with its component prefix, one whole line at a time."""
        for line in stream:
            with self._out_lock:
                self._out.write(f"[{child.name}] {line if line.endswith(chr(10)) else line + chr(10)}")
                self._out.flush()

    def run(self) -> int:
        """Supervise until stopped or a child cannot start; then stop every child. Returns the
        exit code: 0, or EXIT_CANNOT_START after saying which child could not start."""
        for child in self.children:
            self._start(child)
        if self._replay_starter is not None:
            threading.Thread(target=self._play_when_ready, name="replay-starter", daemon=True).start()
        next_health = 0.0
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for child in self.children:
                self._watch(child, now)
            if now >= next_health:
                next_health = now + HEALTH_INTERVAL_S
                health = self.health()
                for child in self.children:
                    if child.health_feed is not None and child.running:
                        child.health_feed.offer(health)
        self._shutdown()
        if self.failed is None:
            return 0
        # After the children's output (relayed on stdout, whole), so it is the last line.
        print(f"mt5-service: {self.failed.name} exited with {EXIT_CANNOT_START}: it cannot start as "
              f"configured (its message is above); stopped everything", file=sys.stderr, flush=True)
        return EXIT_CANNOT_START

    def _play_when_ready(self) -> None:
        """Start the paused replay whenever it is ready and the children are healthy (its own
        thread: an RPC or HTTP check may take a second)."""
        starter = self._replay_starter
        try:
            while not self._stop.wait(REPLAY_CHECK_S):
                starter.check()
        finally:
            starter.close()

    def _watch(self, child: Child, now: float) -> None:
        if child.running:
            if now - child.started_at > STABLE_AFTER_S:
                child.backoff = BACKOFF_INITIAL_S
            return
        if child.next_start == 0.0:  # just found dead: schedule the restart
            code = child.proc.returncode if child.proc else None
            if code == EXIT_CANNOT_START and self.failed is None:
                self.failed = child
                self._stop.set()
                return
            child.next_start = now + child.backoff
            log.warning("%s exited with %s; restarting in %.1f s", child.name, code, child.backoff)
            child.backoff = min(child.backoff * 2, BACKOFF_MAX_S)
        elif now >= child.next_start:
            child.next_start = 0.0
            child.restarts += 1
            self._start(child)

    def _shutdown(self) -> None:
        for child in reversed(self.children):  # the bridge first, the engine last
            if child.running:
                child.proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", child.name, STOP_GRACE_S)
                child.proc.kill()
                child.proc.wait()
            if child.reader is not None:
                child.reader.join(1.0)
            if child.health_feed is not None:
                child.health_feed.close()
        log.info("all stopped")

    def health(self) -> dict[str, Any]:
        return {
            "component": SERVICE_COMPONENT,
            "status": "ok" if all(c.running for c in self.children) else "degraded",
            "time_msc": time.time_ns() // 1_000_000,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "children": {c.name: {"running": c.running, "pid": c.proc.pid if c.proc else None,
                                  "restarts": c.restarts} for c in self.children},
        }


def bridge_ports(ws_port: int, bridges: int) -> list[int]:
    """The ports of ``bridges`` bridges side by side: ``WS_PORT``, ``WS_PORT + 1``, ...;
    ``ConfigError`` naming ``--bridges`` when there are none, too many, or they pass 65535."""
    if not 1 <= bridges <= MAX_BRIDGES:
        raise ConfigError(f"--bridges: must be between 1 and {MAX_BRIDGES}, got {bridges}")
    last = ws_port + bridges - 1
    if last > 65535:
        raise ConfigError(f"--bridges: {bridges} bridges from WS_PORT {ws_port} need ports up to {last}, "
                          f"past 65535")
    return list(range(ws_port, last + 1))


def build_children(workers: int, bridges: int, env_file: str, engine_args: list[str],
                   record_dir: str = "", ws_port: int = BridgeConfig.ws_port) -> list[Child]:
    """The children: the engine, ``workers`` shards, ``bridges`` bridges on consecutive ports
    from ``ws_port`` (see ``bridge_ports``; named ``bridge``, or ``bridge:i`` for more than one)
    and, with ``record_dir``, the recorder."""
    py = sys.executable
    children = [Child("engine", [py, "-m", "engine.cli", "--env-file", env_file, STDIN_FLAG, *engine_args],
                      takes_health=True)]
    children += [Child(f"indicators:{i}", [py, "-m", "indicators.worker", "--env-file", env_file,
                                            "--shard", f"{i}/{workers}"]) for i in range(workers)]
    children += [Child("bridge" if bridges == 1 else f"bridge:{i}",
                       [py, "-m", "bridge.cli", "--env-file", env_file, "--ws-port", str(ws_port + i)])
                 for i in range(bridges)]
    if record_dir:
        children.append(Child("recorder", [py, "-m", "engine.recorder", "--env-file", env_file,
                                           "--dir", record_dir]))
    return children


def replay_starter(config: EngineConfig, curve: CurveClient | None, workers: int,
                   bridge_url: str | None) -> ReplayStarter:
    """What starts the service's paused replay once its children are healthy."""
    return ReplayStarter(RpcClient(config.rpc_endpoint, timeout_ms=1000, curve=curve), workers, bridge_url)


def _count(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag}: cannot use {text!r} as an integer") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mt5-service",
        description="Run the engine, indicator workers and Socket.IO bridge as separate processes. "
                    "Arguments not listed here are passed to mt5-engine (see mt5-engine --help).",
    )
    parser.add_argument("--workers", type=int, default=1, help="indicator workers (shards), default 1")
    parser.add_argument("--bridges", default="1", metavar="N",
                        help="Socket.IO bridges side by side, on ports WS_PORT, WS_PORT+1, ... (default 1)")
    parser.add_argument("--no-bridge", action="store_true", help="do not start the Socket.IO bridge")
    parser.add_argument("--env-file", default=".env", help="settings file for every child (default: .env)")
    parser.add_argument("--record", metavar="DIR", default="",
                        help="also run mt5-recorder, writing the bus to Parquet in DIR")
    args, engine_args = parser.parse_known_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    try:
        config = engine_cli.load_config(engine_cli.parse_args([*engine_args, "--env-file", args.env_file]))
        curve = CurveClient.load(config.curve_client_secret, config.curve_server_key)
        web = None if args.no_bridge else BridgeConfig.load(dotenv=args.env_file)
        ports = bridge_ports(web.ws_port, _count("--bridges", args.bridges)) if web else []
    except (ConfigError, SecurityError) as exc:
        print(f"mt5-service: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_file)
    urls = [f"http://{web.ws_host}:{port}" for port in ports] if web else []
    starter = None
    if config.source == "replay" and config.replay_start == "now":
        # "now" for the service: as soon as every child can take the first bar.
        engine_args = [*engine_args, "--replay-start", "paused"]
        starter = replay_starter(config, curve, args.workers, urls[0] if urls else None)
    children = build_children(args.workers, len(ports), args.env_file, engine_args, args.record,
                              ports[0] if ports else BridgeConfig.ws_port)
    # Every child gets the engine's endpoints, also those given here as engine flags.
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "BUS_ENDPOINT": config.bus_endpoint,
                 "BUS_PUB_ENDPOINT": config.bus_pub_endpoint, "RPC_ENDPOINT": config.rpc_endpoint}
    if args.record:  # the engine answers ranges older than its memory from the recording too
        child_env["RECORD_DIR"] = args.record
    launcher = Launcher(children, child_env, replay_starter=starter)
    stop_on_signals(launcher.stop)
    print(
        f"mt5-service: engine + {args.workers} indicator worker(s)"
        f"{f' + {len(ports)} bridge(s)' if ports else ''}{' + recorder' if args.record else ''}\n"
        f"  bus (subscribe):   {config.bus_endpoint}\n"
        f"  rpc:               {config.rpc_endpoint}\n"
        + (f"  web (Socket.IO):   {', '.join(urls)}  (dashboard at /, health at /health)\n" if web else "")
        + (f"  recording into:    {args.record}\n" if args.record else ""),
        flush=True,
    )
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
