"""The engine.io adapter's contract (tests/test_engineio_adapter.py) on each supported
python-engineio: each minor's last release with the newest python-socketio 5.x that accepts it,
installed from the package index (pip's cache makes a rerun quick) into a directory put ahead of
the venv's own, and the contract run against them in a child pytest.

A release outside this table is not refused (pyproject.toml keeps only lower bounds): the
start-up self-tests send the bridge to the public path if it lacks what the fast path or the
session policy takes. Add a row when a new minor passes.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ROOT

# python-engineio -> python-socketio (5.16.4 and 5.17 need python-engineio 4.13.2, 5.17.1 4.15.1). The
# floor is python-engineio 4.11 (with python-socketio 5.12): before it, engine.io closes have no reason.
SUPPORTED = {
    "4.11.2": "5.16.1",
    "4.12.3": "5.16.1",
    "4.13.5": "5.17.0",
    "4.14.0": "5.17.0",
    "4.15.1": "5.18.1",
}
CONTRACT = "tests/test_engineio_adapter.py"


def install(engineio: str, socketio: str, target: Path) -> None:
    """The two packages alone (their other dependencies are the venv's) into ``target``; a skip
    with pip's last words when the package index cannot give them."""
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--timeout", "15", "--retries", "1", "--target", str(target),
         f"python-engineio=={engineio}", f"python-socketio=={socketio}"],
        capture_output=True, text=True, timeout=180)
    if pip.returncode != 0:
        last = (pip.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"python-engineio {engineio} with python-socketio {socketio} could not be installed "
                    f"from the package index (is it reachable?): {last}")


@pytest.mark.parametrize(("engineio", "socketio"), SUPPORTED.items(), ids=[f"engineio-{v}" for v in SUPPORTED])
def test_the_engineio_adapter_contract_holds_on_each_supported_version(engineio, socketio, tmp_path):
    target = tmp_path / "site"
    install(engineio, socketio, target)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    run = subprocess.run([sys.executable, "-m", "pytest", CONTRACT, "-q", "-s", "-p", "no:cacheprovider"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    # The child imported the versions installed here, not the venv's.
    assert f"self-test passed on python-engineio {engineio}, python-socketio {socketio}" in run.stdout, tail
    assert run.returncode == 0, tail
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed is not None and "failed" not in run.stdout.splitlines()[-1], tail
    print(f"\npython-engineio {engineio}, python-socketio {socketio}: contract {passed.group(0)}")
