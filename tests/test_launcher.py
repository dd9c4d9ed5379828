"""mt5-service: children as separate processes, prefixed logs, restarts, clean stop."""
import json
import os
import re
import signal
import socket
import threading
import time

import msgpack
import zmq

from engine.service_health import MAX_LINE_BYTES, HealthReader, HealthWriter
from tests.procs import ServiceProcess


def pids(output: str, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"started {re.escape(name)} \(pid (\d+)\)", output)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_launcher_runs_restarts_and_stops_every_child(started, zmq_ctx):
    service = ServiceProcess(["--no-bridge", "--workers", "2"])
    started.append(service)
    service.start()
    banners = ("[engine] mt5-engine: source=sim", "[indicators:0] mt5-indicators: shard 0/2",
               "[indicators:1] mt5-indicators: shard 1/2")
    assert wait_until(lambda: all(b in service.output() for b in banners), 20), service.output()
    out = service.output()
    children = {name: pids(out, name)[-1] for name in ("engine", "indicators:0", "indicators:1")}
    assert all(alive(pid) for pid in children.values())

    # A child killed with SIGKILL is restarted, and the restart is counted in health.
    health = zmq_ctx.socket(zmq.SUB)
    health.linger = 0
    health.subscribe(b"health:service:")
    health.connect(service.engine.bus)
    os.kill(children["indicators:0"], signal.SIGKILL)
    assert wait_until(lambda: len(pids(service.output(), "indicators:0")) == 2, 10), service.output()
    restarted = pids(service.output(), "indicators:0")[-1]
    assert restarted != children["indicators:0"] and alive(restarted)
    seen = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if health.poll(200):
            seen = msgpack.unpackb(health.recv_multipart()[1])
            if seen["children"]["indicators:0"]["restarts"] == 1:
                break
    assert seen and seen["children"]["indicators:0"]["restarts"] == 1
    assert seen["children"]["indicators:0"]["pid"] == restarted

    # SIGINT stops everything: exit code 0, no child left.
    assert service.stop(signal.SIGINT, timeout=10) == 0
    everyone = [children["engine"], children["indicators:1"], restarted]
    assert wait_until(lambda: not any(alive(p) for p in everyone), 5)


def test_children_die_with_a_killed_launcher(started):
    service = ServiceProcess(["--no-bridge", "--workers", "1"])
    started.append(service)
    service.start()
    assert wait_until(lambda: "[indicators:0] mt5-indicators" in service.output(), 20)
    children = [pids(service.output(), n)[-1] for n in ("engine", "indicators:0")]
    service.proc.kill()
    service.proc.wait(5)
    assert wait_until(lambda: not any(alive(p) for p in children), 10)


def test_any_killed_child_is_back_and_serving_within_five_seconds(started):
    """SIGKILL the engine, then the bridge: each is restarted and serving again within 5 s."""
    import json
    import urllib.error
    import urllib.request

    from tests.procs import free_port

    port = free_port()
    service = ServiceProcess(["--workers", "1"], env={"WS_PORT": str(port)})
    started.append(service)
    service.start()

    def engine_started() -> float | None:
        """When the engine the bridge's /health reports started (from its uptime), while all is ok."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.HTTPError):
            return None
        engine = body["engine"]
        if resp.status != 200 or engine["status"] != "ok":
            return None
        return round(time.time() - engine["health"]["uptime_s"])

    assert wait_until(lambda: engine_started() is not None, 30), service.output()
    for child in ("engine", "bridge"):
        started_at = engine_started()
        before = pids(service.output(), child)
        os.kill(before[-1], signal.SIGKILL)
        killed = time.monotonic()
        if child == "bridge":
            assert engine_started() is None  # really gone
        assert wait_until(lambda: len(pids(service.output(), child)) == len(before) + 1, 5), service.output()
        # Back: the bridge serves again, and after an engine restart it reports the new engine.
        if child == "engine":
            def back():
                now_started = engine_started()
                return now_started is not None and now_started > started_at + 1
        else:
            def back():
                return engine_started() is not None
        assert wait_until(back, 5 - (time.monotonic() - killed)), f"{child}: {service.output()[-2000:]}"
        print(f"{child} SIGKILL: restarted and serving again {time.monotonic() - killed:.1f} s later")
    assert service.stop(signal.SIGINT, timeout=10) == 0


def test_the_engine_takes_the_newest_health_line_and_skips_junk_and_over_long_lines():
    read_fd, write_fd = os.pipe()
    try:
        reader = HealthReader(read_fd).start()
        assert reader.take() is None
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(b"".join([
                b"not json\n", b'{"component": "engine", "status": "down"}\n', b"[1, 2]\n",
                b'{"component": "service", "n": "' + b"x" * MAX_LINE_BYTES + b'"}\n',
                json.dumps({"component": "service", "n": 1}).encode() + b"\n",
                json.dumps({"component": "service", "n": 2}).encode() + b"\n"]))
        taken = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not taken or taken[-1]["n"] != 2):
            health = reader.take()
            if health is not None:
                taken.append(health)
            time.sleep(0.01)
    finally:
        os.close(read_fd)
    # Only the launcher's health lines count, in order; a newer one supersedes an unread one.
    assert taken in ([{"component": "service", "n": 2}],
                     [{"component": "service", "n": 1}, {"component": "service", "n": 2}])
    assert reader.take() is None


def test_a_child_that_does_not_read_its_health_never_blocks_the_launcher():
    read_fd, write_fd = os.pipe()
    writer = HealthWriter(os.fdopen(write_fd, "w"))

    def supervise() -> None:  # the launcher's loop, offering health
        for n in range(20_000):  # ~1 MB: far beyond the pipe's buffer, which nobody reads
            writer.offer({"component": "service", "n": n, "pad": "x" * 40})

    launcher = threading.Thread(target=supervise, daemon=True)
    launcher.start()
    launcher.join(5)
    assert not launcher.is_alive()
    os.close(read_fd)  # the child exits: the writer's thread ends on the broken pipe
    writer.offer({"component": "service", "n": -1})
    writer.close()


def test_a_child_that_cannot_start_stops_everything_with_exit_2(started):
    """The engine's RPC port is taken: restarting cannot help, so mt5-service stops its other
    children and exits 2, the engine's reason relayed and its own last line naming the engine."""
    service = ServiceProcess(["--no-bridge", "--workers", "1"])
    started.append(service)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", service.engine.rpc_port))
        squatter.listen()
        service.spawn()
        began = time.monotonic()
        code = service.proc.wait(20)
        took = time.monotonic() - began
    out = service.output()
    print(f"mt5-service with the RPC port taken: exit {code} after {took:.1f} s")
    assert code == 2, out
    assert "[engine] mt5-engine: cannot start: cannot bind the RPC endpoint" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("mt5-service: engine exited with 2"), out
    assert len(pids(out, "engine")) == 1, "the engine was restarted"
    worker = pids(out, "indicators:0")
    assert worker and wait_until(lambda: not alive(worker[-1]), 5)
