"""Every long-running process exits cleanly however many stop signals arrive at once.

A launcher killed with SIGKILL makes each child get SIGTERM from the kernel (PDEATHSIG) while
the test harness or an operator may send more. A handler that takes a lock (``Event.set``)
and interrupts the main thread while it holds that same lock deadlocks: the process never
exits and is left an orphan.
"""
import os
import signal

import pytest

from tests.procs import ChildProcess, EngineProcess, ServiceProcess

BURST = 300


def burst_then_wait(proc: ChildProcess, timeout: float = 10.0) -> int | None:
    """SIGTERM ``BURST`` times as fast as possible; the exit code, or None if it hung."""
    for _ in range(BURST):
        try:
            os.kill(proc.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            break  # already gone
    try:
        return proc.proc.wait(timeout)
    except Exception:
        return None


@pytest.mark.parametrize("attempt", range(3))
def test_engine_exits_on_a_burst_of_sigterms(start_engine, attempt):
    engine = start_engine()
    assert burst_then_wait(engine) == 0, engine.output()


def test_bus_only_engine_exits_on_a_burst_of_sigterms(started):
    bus = EngineProcess(["--bus-only"])
    started.append(bus)
    bus.spawn()
    bus.wait_output("mt5-engine: bus only", 20)
    assert burst_then_wait(bus) == 0, bus.output()


@pytest.mark.parametrize("attempt", range(3))
def test_worker_exits_on_a_burst_of_sigterms(engine, start_worker, attempt):
    worker = start_worker(engine)
    assert burst_then_wait(worker) == 0, worker.output()


def test_launcher_exits_on_a_burst_of_sigterms_and_stops_its_children(started):
    service = ServiceProcess(["--no-bridge", "--workers", "1"])
    started.append(service)
    service.start()
    service.wait_output("[indicators:0] mt5-indicators", 20)
    assert burst_then_wait(service, timeout=15) == 0, service.output()
