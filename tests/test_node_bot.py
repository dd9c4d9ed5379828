"""The README's Node.js bus bot, as written, with the pinned zeromq and @msgpack/msgpack (engine/js)."""
from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import zmq

from tests.bridge_procs import npm_install
from tests.procs import ROOT, free_port

NODE_DIR = ROOT / "engine" / "js"


@pytest.fixture(scope="module")
def node() -> str:
    """``engine/js`` installed from its lockfile once; skip where node/npm are absent."""
    return npm_install(NODE_DIR, "zeromq")


@contextmanager
def dropping_first_request(rpc: str) -> Iterator[tuple[str, list[int]]]:
    """A ROUTER in front of ``rpc`` that swallows the first request and forwards the rest, as a
    lost message would: a REQ client must time out and retry on a new socket."""
    ctx = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    front.linger = back.linger = 0
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    front.bind(endpoint)
    back.connect(rpc)
    stop, counts = threading.Event(), [0, 0]  # requests dropped, forwarded

    def relay() -> None:
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        while not stop.is_set():
            for sock, _ in poller.poll(50):
                frames = sock.recv_multipart()
                if sock is back:
                    front.send_multipart(frames)
                elif counts[0] == 0:
                    counts[0] += 1
                else:
                    counts[1] += 1
                    back.send_multipart(frames)

    thread = threading.Thread(target=relay)
    thread.start()
    try:
        yield endpoint, counts
    finally:
        stop.set()
        thread.join()
        front.close()
        back.close()
        ctx.term()


def readme_js_block(marker: str) -> str:
    blocks = re.findall(r"```javascript\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith(f"// {marker}"))


def test_readme_node_bot_snapshots_streams_and_retries_a_lost_request(node, engine, tmp_path):
    script = tmp_path / "bot.mjs"
    script.write_text(readme_js_block("example-node-bot"))
    (tmp_path / "node_modules").symlink_to(NODE_DIR / "node_modules")
    with dropping_first_request(engine.rpc) as (rpc, counts):
        result = subprocess.run([node, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "BUS_ENDPOINT": engine.bus, "RPC_ENDPOINT": rpc})
    print(result.stdout[-1500:], counts)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "rpc candles: no reply in 1000 ms, retrying" and counts[0] == 1 and counts[1] >= 3
    assert re.fullmatch(r"100 M1 bars, last close [\d.]+", lines[1])
    snapshot = [line.split() for line in lines if line.startswith("snapshot ")]
    assert [topic for _, topic, _ in snapshot] == ["tick:EURUSD:", "candle:EURUSD:M1:"]
    seqs = [int(line.split()[3]) for line in lines if line.startswith("tick ")]
    assert len(seqs) == 20 and all(line.endswith(" number") for line in lines if line.startswith("tick "))
    # The Clone rule: subscribed before the snapshot, so the stream goes on from its seq, none twice.
    assert seqs == list(range(int(snapshot[0][2]) + 1, int(snapshot[0][2]) + 21))
    assert not any(line.startswith(("gap ", "restart ")) for line in lines)
    assert re.fullmatch(r"last bar \d+ close [\d.]+", lines[-1])
