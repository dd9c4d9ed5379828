"""The README's JavaScript client example, as written, with the real socket.io-client under Node."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.bridge_procs import JS_DIR, BridgeProcess, npm_install
from tests.procs import ROOT, running


@pytest.fixture(scope="module")
def node():
    return npm_install()


@pytest.fixture(scope="module")
def bridge(engine):
    with running(BridgeProcess(engine=engine)) as proc:
        yield proc


def readme_js_block(marker: str) -> str:
    blocks = re.findall(r"```javascript\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith(f"// {marker}"))


def run_example(node: str, tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = tmp_path / "client.mjs"
    script.write_text(readme_js_block("example-web-client"))
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")  # resolve the pinned client
    return subprocess.run([node, str(script)], cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=30)


def test_readme_javascript_example_receives_connected_subscribed_ticks_and_candles(node, bridge, tmp_path):
    result = run_example(node, tmp_path, {"BRIDGE_URL": bridge.url})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("connected ")
    assert "subscribed EURUSD M1" in lines
    assert "history: 100 bars" in lines
    assert sum(line.startswith("tick EURUSD ") for line in lines) >= 5
    assert any(line.startswith("candles EURUSD M1 100 ") for line in lines)  # the get_candles reply
    assert any(re.match(r"candles EURUSD M1 [12] \d+ [\d.]+ (true|false)$", line) for line in lines)  # streamed
    assert not any(line.startswith(("error", "refused")) for line in lines)


def test_readme_javascript_example_is_refused_without_the_token(node, engine, started, tmp_path):
    bridge = BridgeProcess(engine=engine, env={"BRIDGE_TOKEN": "js-secret"})
    started.append(bridge)
    bridge.start()
    refused = run_example(node, tmp_path, {"BRIDGE_URL": bridge.url})
    assert refused.returncode == 0 and "refused: unauthorized: a valid auth.token is required" in refused.stdout
    (tmp_path / "node_modules").unlink()
    accepted = run_example(node, tmp_path, {"BRIDGE_URL": bridge.url, "BRIDGE_TOKEN": "js-secret"})
    assert accepted.stdout.startswith("connected ")
