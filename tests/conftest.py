from __future__ import annotations

import pytest
import zmq

from tests.procs import ChildProcess, EngineProcess, WorkerProcess


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


@pytest.fixture(scope="module")
def engine():
    """One default sim engine shared by a test module."""
    proc = EngineProcess().start()
    yield proc
    proc.stop()
