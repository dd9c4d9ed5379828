from __future__ import annotations

import pytest
import zmq

from tests.procs import EngineProcess


@pytest.fixture
def zmq_ctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def start_engine():
    """Start engines with ``start_engine(*args)``; every one is stopped at teardown."""
    started: list[EngineProcess] = []

    def start(*args: str, wait: bool = True, **kwargs) -> EngineProcess:
        proc = EngineProcess(list(args), **kwargs)
        started.append(proc)
        return proc.start(wait=wait)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def engine():
    """One default sim engine shared by a test module."""
    proc = EngineProcess().start()
    yield proc
    proc.stop()
