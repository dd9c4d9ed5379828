from __future__ import annotations

import pytest
import zmq

from tests.bridge_procs import BridgeProcess
from tests.procs import ChildProcess, EngineProcess, WorkerProcess, running


@pytest.fixture
def zmq_ctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def started():
    """Processes a test starts go in this list; every one is stopped at teardown."""
    procs: list[ChildProcess] = []
    yield procs
    for proc in reversed(procs):
        proc.stop()


@pytest.fixture
def start_engine(started):
    """Start engines with ``start_engine(*args)``; every one is stopped at teardown."""

    def start(*args: str, wait: bool = True, **kwargs) -> EngineProcess:
        proc = EngineProcess(list(args), **kwargs)
        started.append(proc)
        return proc.start(wait=wait)

    return start


@pytest.fixture
def start_worker(started):
    """Start indicator workers on an engine with ``start_worker(engine, *args)``."""

    def start(engine: EngineProcess, *args: str) -> WorkerProcess:
        proc = WorkerProcess(list(args), engine=engine)
        started.append(proc)
        return proc.start()

    return start


@pytest.fixture
def start_stack(start_engine, start_worker, started):
    """Start an engine (``start_stack(*engine_args)``), an indicator worker on it and a bridge
    on both; returns ``(engine, worker, bridge)``, every one stopped at teardown."""

    def start(*engine_args: str) -> tuple[EngineProcess, WorkerProcess, BridgeProcess]:
        engine = start_engine(*engine_args)
        worker = start_worker(engine)
        bridge = BridgeProcess(engine=engine)
        started.append(bridge)
        return engine, worker, bridge.start()

    return start


@pytest.fixture(scope="module")
def engine():
    """One default sim engine shared by a test module."""
    with running(EngineProcess()) as proc:
        yield proc


@pytest.fixture(scope="module")
def worker(engine):
    """One indicator worker on the module's engine."""
    with running(WorkerProcess(engine=engine)) as proc:
        yield proc
