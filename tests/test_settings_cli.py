"""Bad settings stop every console script at start-up: exit 2, one line naming the setting on
stderr, no traceback (the real scripts, run as ``python -m`` child processes)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.procs import ROOT, _SCRUBBED

SCRIPTS = {"mt5-engine": "engine.cli", "mt5-indicators": "indicators.worker", "mt5-bridge": "bridge.cli",
           "mt5-service": "engine.launcher"}

# (script, variable, value): the cases of issue 11 for each script that reads the setting.
CASES = [
    *[(script, "LOG_LEVEL", "LOUD") for script in SCRIPTS],
    *[(script, "LOG_FILE", "{tmp}/no-such-dir/x.log") for script in SCRIPTS],
    *[(script, "LOG_FILE", "{tmp}") for script in ("mt5-engine", "mt5-service")],
    *[(script, "SIM_RATE", value) for script in ("mt5-engine", "mt5-service") for value in ("nan", "inf")],
    *[(script, "HEALTH_INTERVAL_MS", "0") for script in ("mt5-engine", "mt5-service")],
    *[(script, "BOOK_INTERVAL_MS", "-1") for script in ("mt5-engine", "mt5-service")],
    ("mt5-bridge", "RATE_LIMIT_PER_S", "nan"),
    ("mt5-bridge", "WS_PORT", "99999"),
    *[(script, "RPC_ENDPOINT", "tcp://127.0.0.1:99999") for script in SCRIPTS],
    ("mt5-indicators", "IND_SHARD", "3/2"),
]


def run_all(cases: list[tuple[str, str, str]], tmp: str) -> list[subprocess.CompletedProcess]:
    """Every case as its own child process, all started at once (each exits at start-up)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith((*_SCRUBBED, "LOG_", "RATE_", "HEALTH_"))}
    procs = []
    for script, name, value in cases:
        argv = [sys.executable, "-m", SCRIPTS[script], "--env-file", os.devnull]
        procs.append(subprocess.Popen(argv, cwd=ROOT, env={**base, name: value.format(tmp=tmp)}, text=True,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


def test_each_bad_setting_exits_2_with_one_line_naming_it(tmp_path):
    results = run_all(CASES, str(tmp_path))
    for (script, name, value), result in zip(CASES, results):
        case = f"{script} {name}={value}: exit {result.returncode}, stderr {result.stderr!r}"
        assert result.returncode == 2, case
        lines = result.stderr.splitlines()
        assert len(lines) == 1, case
        assert lines[0].startswith(f"{script}: configuration error: {name}: "), case
        assert "Traceback" not in result.stdout + result.stderr, case
    print(f"{len(CASES)} bad settings over {len(SCRIPTS)} scripts: each exit 2 with one line naming it")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bad_flag_value_names_its_setting_too(script, tmp_path):
    flag, name = ("--max-candles", "MAX_CANDLES") if script != "mt5-bridge" else ("--ws-port", "WS_PORT")
    argv = [sys.executable, "-m", SCRIPTS[script], "--env-file", os.devnull, flag, "many"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{script}: configuration error: {name}: cannot use 'many' as an integer"]
