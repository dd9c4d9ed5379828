"""The README's examples run as written."""
import os
import re
import subprocess
import sys

from tests.procs import ROOT


def readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith(f"# {marker}"))


def test_example_bot_runs_as_written(engine):
    env = {**os.environ, "BUS_ENDPOINT": engine.bus, "RPC_ENDPOINT": engine.rpc, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", readme_block("example-bot")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("100 H1 bars, last close ")
    assert sum(line.startswith("tick ") for line in lines) >= 10


def test_quick_start_is_exactly_two_make_commands():
    quick = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
