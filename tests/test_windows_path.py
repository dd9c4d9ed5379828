"""The engine with the mt5 source on a Windows-like Python: every POSIX-only call on its path is
guarded. A child process makes this Linux Python look like Windows to the engine's code
(``sys.platform`` is ``win32``; the POSIX-only signals, ``signal.pthread_sigmask``, ``os`` and
``select`` functions and modules are gone; no C library can be loaded with ctypes) before it
imports the engine, then runs ``mt5-engine --source mt5 --service-health-stdin`` on the stand-in
``MetaTrader5``, as the engine runs under ``mt5-service`` on Windows, or the launcher itself
(``subprocess`` refuses ``preexec_fn`` there, as on Windows). Each stops on its SIGBREAK
(Ctrl+Break), here signal 21, which the Linux kernel can deliver."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

import msgpack

from engine.protocol import SERVICE_COMPONENT
from tests.procs import _SCRUBBED, ROOT, EngineProcess, ServiceProcess, subscriber

BREAK = 21  # stands for Windows' SIGBREAK: on Linux SIGTTIN, which stops a process that has no handler

# Run first in the child: this Python then looks like Windows to every module imported after it.
# The standard and third-party modules are imported before (their own platform choices are not
# what is tested); the engine's modules after.
WINDOWS_LIKE = f"""
import ctypes, os, select, signal, subprocess, sys, threading, time
import ctypes.util, logging.handlers, json, importlib, calendar, gc, heapq, zlib
import msgpack, numpy, zmq, zmq.auth.thread, zmq.utils.monitor
import rpyc.core.service, rpyc.core.stream, rpyc.utils.factory
import aiohttp, pyarrow, pyarrow.parquet
WINDOWS_SIGNALS = {{"SIGINT", "SIGTERM", "SIGABRT", "SIGFPE", "SIGILL", "SIGSEGV"}}
for name in [n for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_")
             and n not in WINDOWS_SIGNALS] + ["pthread_sigmask", "pthread_kill", "sigwait", "sigwaitinfo",
             "sigtimedwait", "setitimer", "getitimer", "alarm", "pause", "siginterrupt", "sigpending"]:
    if hasattr(signal, name):
        delattr(signal, name)
signal.SIGBREAK = {BREAK}
for name in ("fork", "forkpty", "getuid", "geteuid", "getgid", "getegid", "getpgid", "killpg", "setsid",
             "setpgrp", "nice", "getloadavg", "sched_setaffinity", "sched_getaffinity", "uname", "mkfifo",
             "sysconf", "pipe2", "wait3", "wait4"):
    if hasattr(os, name):
        delattr(os, name)
for name in ("poll", "epoll", "devpoll", "kqueue"):
    if hasattr(select, name):
        delattr(select, name)
for name in ("fcntl", "resource", "termios", "pwd", "grp", "tty", "pty"):
    sys.modules[name] = None
def no_libc(*args, **kwargs):
    raise OSError("Windows: there is no C library to load")
ctypes.CDLL = no_libc
popen_init = subprocess.Popen.__init__
def windows_popen(self, *args, preexec_fn=None, **kwargs):
    if preexec_fn is not None:
        raise ValueError("preexec_fn is not supported on Windows platforms")  # as CPython's
    popen_init(self, *args, **kwargs)
subprocess.Popen.__init__ = windows_popen
sys.platform = "win32"
"""

# mt5-engine on the stand-in terminal, in this process, which ticks every 5 ms.
ENGINE = WINDOWS_LIKE + """
import MetaTrader5  # the stand-in (PYTHONPATH)
terminal = sys.modules["MetaTrader5"]
terminal.add_symbol("EURUSD", 5)
def market():
    t, bid = 0, 1.1
    while True:
        t = max(t + 1, time.time_ns() // 1_000_000)
        terminal.add_tick("EURUSD", t, bid, round(bid + 0.0001, 5))
        bid = round(bid + 0.00001, 5)
        time.sleep(0.005)
threading.Thread(target=market, daemon=True).start()

from engine import cli, connections, heap, service
print(f"windows-like: platform={sys.platform} timer_slack={service.tighten_timer_slack()} "
      f"malloc_trim={heap._TRIM} tcp_info={connections._libc}", flush=True)
sys.exit(cli.main(sys.argv[1:]))
"""

LAUNCHER = WINDOWS_LIKE + """
from engine import launcher
sys.exit(launcher.main(sys.argv[1:]))
"""


@dataclass
class WindowsLikeEngine(EngineProcess):
    """``mt5-engine`` started as the launcher starts it (its health on stdin), on a Python that
    looks like Windows to the engine."""

    def command(self) -> list[str]:
        python, _, _, *rest = super().command()  # python -m engine.cli ...
        return [python, "-c", ENGINE, *rest]

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
        env.update(self.env)
        self._log = tempfile.NamedTemporaryFile("w+", prefix="windows-like-engine-", suffix=".log")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True)


def test_the_mt5_engine_runs_and_stops_on_a_windows_like_python(started, zmq_ctx, tmp_path) -> None:
    log_file = tmp_path / "engine.log"
    engine = WindowsLikeEngine(["--source", "mt5", "--service-health-stdin"], env={
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "standin_pkg"), str(ROOT)]),
        "SYMBOLS": "EURUSD", "TIMEFRAMES": "M1", "LOG_FILE": str(log_file)})
    started.append(engine)
    engine.start()
    assert "windows-like: platform=win32 timer_slack=False malloc_trim=None tcp_info=None" in engine.output()
    sock = subscriber(zmq_ctx, engine.bus, b"tick:EURUSD:", b"health:service:")
    time.sleep(0.3)  # the subscription reaches the bus
    launcher_health = {"component": SERVICE_COMPONENT, "status": "ok", "children": {}}
    engine.proc.stdin.write(json.dumps(launcher_health) + "\n")
    engine.proc.stdin.flush()
    ticks, service_health = [], []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(ticks) < 50 or not service_health):
        if sock.poll(50):
            topic, payload = sock.recv_multipart()
            (ticks if topic.startswith(b"tick:") else service_health).append(msgpack.unpackb(payload))
    times = [t["time_msc"] for t in ticks]
    assert len(ticks) >= 50 and times == sorted(times)
    assert service_health[-1]["component"] == SERVICE_COMPONENT and service_health[-1]["status"] == "ok"
    os.kill(engine.proc.pid, BREAK)  # Ctrl+Break
    assert engine.proc.wait(10) == 0
    output = engine.output()
    print(f"\n{len(ticks)} ticks; output:\n{output}")
    assert "Traceback" not in output and "stopped" in log_file.read_text()


@dataclass
class WindowsLikeService(ServiceProcess):
    """``mt5-service`` on a Python that looks like Windows to the launcher (its children are
    ordinary engines: they are started with ``sys.executable -m``)."""

    def command(self) -> list[str]:
        python, _, _, *rest = super().command()  # python -m engine.launcher ...
        return [python, "-c", LAUNCHER, *rest]


def test_the_launcher_runs_and_stops_its_engine_on_a_windows_like_python(started) -> None:
    service = WindowsLikeService(["--no-bridge", "--workers", "0"])
    started.append(service)
    service.start()  # no preexec_fn (Windows refuses it), the engine child answers
    os.kill(service.proc.pid, BREAK)  # Ctrl+Break
    assert service.proc.wait(15) == 0
    output = service.output()
    print(f"\noutput:\n{output}")
    assert "[engine] mt5-engine: source=sim" in output and "all stopped" in output
    assert "Traceback" not in output
