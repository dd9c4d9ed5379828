"""The dashboard from a wheel: ``pip wheel .`` in a copy of the sources (no node_modules, no
earlier build: a fresh checkout), the wheel installed with ``pip install --no-deps`` into a fresh
venv, and that venv's own ``mt5-bridge`` serving the page and its Socket.IO browser client.

Each build compiles the Cython extension (about 25 s here). Both tests build in the same copy, as
a developer rebuilding would: the second build must not ship the client the first one left in
``build/``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.webui import MISSING_CLIENT, socketio_client_file
from tests.bridge_procs import JS_DIR, BridgeProcess, npm_install
from tests.procs import ROOT

CLIENT_URL = "/static/vendor/socket.io.min.js"
# What a fresh checkout does not have: installs, builds, and the generated extension sources.
NOT_IN_A_CHECKOUT = shutil.ignore_patterns(".git", ".venv", "build", "node_modules", "*.egg-info", "__pycache__",
                                           "*.so", "*.c", "socket.io-client", "tests", "benchmarks", ".*cache",
                                           ".hypothesis", ".benchmarks", ".env")


@dataclass
class InstalledBridge(BridgeProcess):
    """The ``mt5-bridge`` console script of a venv, with the flags a ``BridgeProcess`` passes."""

    venv: Path | None = None

    def command(self) -> list[str]:
        python_m_module = 3  # BridgeProcess runs `python -m bridge.cli`; the script replaces that
        return [str(self.venv / "bin" / "mt5-bridge"), *super().command()[python_m_module:]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Iterator[Path]:
    """The project's sources as a fresh checkout has them, in a directory of their own (removed
    with its build, node_modules and wheels after the module's tests)."""
    checkout = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT, checkout / "src", ignore=NOT_IN_A_CHECKOUT)
    yield checkout / "src"
    shutil.rmtree(checkout)


@pytest.fixture
def scratch(tmp_path) -> Iterator[Path]:
    """``tmp_path`` for a wheel and its venv, removed after the test (a test names it before
    ``started``, so it is removed after the bridge running from it has stopped)."""
    yield tmp_path
    shutil.rmtree(tmp_path)


def build_wheel(src: Path, out: Path, **env: str) -> tuple[Path, float, str]:
    """``pip wheel . --no-deps`` in ``src`` (its build isolation installs setuptools, Cython and
    numpy); the wheel, the seconds the build took and its log."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-v", "-w", str(out)],
                            cwd=src, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-6000:]
    (wheel,) = out.glob("mt5_market_data-*.whl")
    return wheel, time.monotonic() - started, result.stdout


def fresh_venv(wheel: Path, venv: Path) -> Path:
    """A new venv holding only ``wheel``; this venv's site-packages supply the runtime dependencies
    through a ``.pth`` file (a path it adds has its own ``.pth`` files unread, so this venv's
    editable install of the project stays out). Returns the venv's installed ``bridge`` package."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=120)
    where = [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "runtime-dependencies.pth").write_text("\n".join(dict.fromkeys(where)) + "\n")
    found = subprocess.run([str(python), "-c", "import aiohttp, bridge.webui; print(bridge.webui.__file__)"],
                           cwd=venv, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    package = Path(found.stdout.strip()).parent
    assert package.is_relative_to(venv), f"bridge imported from {package}, not from the wheel"
    return package


def get(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of ``GET url``."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def serve_installed(venv: Path, engine, started) -> InstalledBridge:
    bridge = InstalledBridge(engine=engine, venv=venv)
    started.append(bridge)
    return bridge.start()


@pytest.mark.slow  # about 30 s: a wheel build compiles the Cython extension
@pytest.mark.timeout(300)
def test_a_wheel_serves_the_pinned_socketio_client(sources, scratch, start_engine, started) -> None:
    npm_install()  # skips without node/npm; the pinned client to compare with, and npm's cache warm
    locked = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]["node_modules/socket.io-client"]
    pinned = JS_DIR / "node_modules" / "socket.io-client"
    assert json.loads((pinned / "package.json").read_text())["version"] == locked["version"]

    wheel, seconds, log = build_wheel(sources, scratch / "dist")
    assert f"socket.io-client {locked['version']} copied to" in log, log[-3000:]
    package = fresh_venv(wheel, scratch / "venv")
    assert not (package / "js").exists(), "the wheel carries no bridge/js: the client must come from the package"

    bridge = serve_installed(scratch / "venv", start_engine(), started)
    status, kind, page = get(bridge.url + "/")
    assert status == 200 and kind.startswith("text/html") and f'src="{CLIENT_URL}"'.encode() in page
    status, kind, client = get(bridge.url + CLIENT_URL)
    assert status == 200 and "javascript" in kind, (status, kind, client[:200])
    assert client == (pinned / "dist" / "socket.io.min.js").read_bytes(), "not socket.io-client's own build"
    status, _, source_map = get(bridge.url + CLIENT_URL + ".map")
    assert status == 200 and source_map == (pinned / "dist" / "socket.io.min.js.map").read_bytes()
    print(f"\nwheel {wheel.name} ({wheel.stat().st_size / 1e6:.2f} MB) built in {seconds:.1f} s; "
          f"its bridge served socket.io-client {locked['version']} ({len(client)} bytes, {kind})")


@pytest.mark.slow  # about 30 s: a wheel build compiles the Cython extension
@pytest.mark.timeout(300)
def test_a_wheel_built_without_npm_says_the_client_is_missing(sources, scratch, start_engine, started) -> None:
    shutil.rmtree(sources / "bridge" / "js" / "node_modules", ignore_errors=True)
    wheel, seconds, log = build_wheel(sources, scratch / "dist", NPM=str(scratch / "no-npm-here"))
    assert "npm was not found: the dashboard will say its Socket.IO client is missing" in log, log[-3000:]
    package = fresh_venv(wheel, scratch / "venv")
    assert not (package / "dashboard" / "socket.io-client").exists(), "a client the wheel should not carry"

    bridge = serve_installed(scratch / "venv", start_engine(), started)
    status, _, page = get(bridge.url + "/")
    assert status == 200 and f'src="{CLIENT_URL}"'.encode() in page and b"dashboard.js" in page
    status, kind, missing = get(bridge.url + CLIENT_URL)
    assert (status, missing.decode()) == (404, MISSING_CLIENT) and "javascript" in kind
    # The page's own script, as the wheel serves it, tells a person what is missing and why.
    status, _, script = get(bridge.url + "/static/dashboard.js")
    assert status == 200 and b"Socket.IO browser client is missing" in script and b"pip install ." in script
    print(f"\nwheel {wheel.name} built without npm in {seconds:.1f} s: the page is served, {CLIENT_URL} "
          f"answers 404 with {MISSING_CLIENT.strip()!r}")


def test_the_client_is_served_from_the_first_directory_holding_it(tmp_path) -> None:
    """A checkout's live npm install wins over the package's copy; only client files are served."""
    live, copy = tmp_path / "node_modules-dist", tmp_path / "package-copy"
    live.mkdir(), copy.mkdir()
    (copy / "socket.io.min.js").write_text("copy")
    (copy / "socket.io.min.js.map").write_text("{}")
    (copy / "dashboard.js").write_text("not the client")
    assert socketio_client_file("socket.io.min.js", (live, copy)) == copy / "socket.io.min.js"
    (live / "socket.io.min.js").write_text("live")
    assert socketio_client_file("socket.io.min.js", (live, copy)) == live / "socket.io.min.js"
    assert socketio_client_file("socket.io.min.js.map", (live, copy)) == copy / "socket.io.min.js.map"
    assert socketio_client_file("dashboard.js", (live, copy)) is None
    assert socketio_client_file("../package-copy/socket.io.min.js", (live,)) is None
    assert socketio_client_file("socket.io.min.js", (tmp_path / "absent",)) is None
