"""MT5_BACKEND=rpyc over a real RPyC connection: rpyc's own classic server, a child process on
127.0.0.1, serving the test stand-in as ``MetaTrader5`` (tests/standin_pkg on its PYTHONPATH),
as mt5linux's server serves the real package from a Wine Python."""
from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import sys
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgpack
import numpy as np
import pytest
import rpyc
from rpyc.core import brine

from engine import cli
from engine.config import ConfigError, EngineConfig
from engine.models import Tick
from engine.sources.mt5 import IPC_ERRORS, MT5Source
from engine.sources.mt5_remote import RemoteMT5, decode, encode, remote_module
from engine.timeframes import timeframe
from tests.mt5_standin import RATES_DTYPE, TICK_DTYPE, MT5StandIn
from tests.procs import ROOT, ChildProcess, EngineProcess, free_port, subscriber

T0 = 1_704_189_600_000  # 2024-01-02 10:00:00.000
LOGIN, PASSWORD, SERVER = 5001234, "s3cret-pass", "Demo-Server"
H1 = 16385
STANDIN_PATH = os.pathsep.join([str(ROOT / "tests" / "standin_pkg"), str(ROOT)])


@dataclass
class ClassicServer(ChildProcess):
    """``rpyc_classic`` (rpyc's threaded classic server) on 127.0.0.1:``port``."""

    module = "rpyc_classic"
    port: int = field(default_factory=free_port)

    def command(self) -> list[str]:
        return [sys.executable, "-c", "from rpyc.cli.rpyc_classic import main; main()",
                "--host", "127.0.0.1", "-p", str(self.port), "-q"]

    def start(self, timeout: float = 20.0) -> ClassicServer:
        self.env = {"PYTHONPATH": STANDIN_PATH}
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rpyc_classic exited with {self.proc.returncode}: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"rpyc_classic did not listen on {self.port} within {timeout} s: {self.output()}")


@pytest.fixture
def start_server(started) -> Callable[..., ClassicServer]:
    def start(port: int | None = None) -> ClassicServer:
        server = ClassicServer() if port is None else ClassicServer(port=port)
        started.append(server)
        return server.start()

    return start


@pytest.fixture
def terminal_of() -> Iterator[Callable[[ClassicServer], object]]:
    """The stand-in terminal in a server's Python, scripted through a classic connection of
    the test's own (closed at teardown)."""
    conns: list = []

    def terminal(server: ClassicServer) -> object:
        conn = rpyc.classic.connect("127.0.0.1", server.port)
        conns.append(conn)
        return conn.modules.MetaTrader5

    yield terminal
    for conn in conns:
        conn.close()


@pytest.fixture
def market(start_server, terminal_of) -> tuple[ClassicServer, object]:
    """An RPyC server whose stand-in terminal has the scripted market, and that terminal."""
    server = start_server()
    terminal = terminal_of(server)
    script_market(terminal)
    return server, terminal


@pytest.fixture
def remotes() -> Iterator[list[RemoteMT5]]:
    made: list[RemoteMT5] = []
    yield made
    for remote in made:
        remote.shutdown()


@pytest.fixture
def make_source() -> Iterator[Callable[..., MT5Source]]:
    sources: list[MT5Source] = []

    def make(port: int, **settings: object) -> MT5Source:
        config = EngineConfig(
            source="mt5", symbols=("EURUSD",), mt5_backend="rpyc", mt5_port=port, mt5_login=LOGIN,
            mt5_password=PASSWORD, mt5_server=SERVER, mt5_poll_ms=1, book_interval_ms=10,
            account_interval_ms=10, **settings)  # type: ignore[arg-type]
        source = MT5Source(config, backoff_initial_s=0.01, backoff_max_s=0.05, terminal_check_s=0.02)
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.stop()


def script_market(mt5: object) -> None:
    """The same market in any stand-in: this process's, or the server's through RPyC."""
    mt5.add_symbol("EURUSD", 5, description="Euro vs US Dollar", currency_base="EUR", currency_profit="USD")
    mt5.add_symbol("XAUUSD.pro", 2, contract_size=100.0, depth=False)
    for i in range(20):
        mt5.add_tick("EURUSD", T0 + 7 * (i // 2), 1.1 + i * 1e-5, 1.1001 + i * 1e-5, volume=i % 3)
    mt5.add_tick("XAUUSD.pro", T0 + 3, 2050.25, 2050.55, last=2050.4, volume=2)
    mt5.set_rates("EURUSD", H1, [(T0 // 1000 - 3600 * k, 1.1, 1.2, 1.0, 1.15, 100 + k, 7, 0) for k in (2, 1, 0)])
    mt5.set_book("EURUSD", [(1, 1.1003, 5.0), (1, 1.1002, 2.5), (2, 1.1001, 3.0)])
    mt5.trades.deposit(T0 - 1000, 500.0)
    ticket = mt5.trades.open_position(T0 + 1, "EURUSD", 0, 0.5, 1.1001, sl=1.09)
    mt5.trades.close_position(T0 + 2, ticket, 1.1005, volume=0.2)
    mt5.trades.place_order(T0 + 3, "XAUUSD.pro", 3, 0.1, 2060.0)


def feed(mt5: object, times: list[int], base: float = 1.2) -> list[tuple[int, float]]:
    """EURUSD ticks at ``times``; what the source must deliver: (time_msc, bid) in order."""
    expected = []
    for i, t in enumerate(times):
        bid = round(base + i * 1e-5, 5)
        mt5.add_tick("EURUSD", t, bid, round(bid + 1e-4, 5))
        expected.append((t, bid))
    return expected


def collect(source: MT5Source, count: int, timeout: float = 10.0) -> list[Tick]:
    """Poll like the engine until ``count`` ticks came (or the deadline), then a little more."""
    got: list[Tick] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(source.poll(0))
        time.sleep(0.002)
    time.sleep(0.05)  # a duplicate would show up now
    got.extend(source.poll(0))
    return got


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# -- the codec ------------------------------------------------------------------------------


def test_the_codec_carries_arrays_structs_and_plain_values_as_brine_values_and_back() -> None:
    Info = namedtuple("Info", "name digits point")
    nested = np.zeros(2, dtype=[("a", "<i4"), ("b", [("c", "<f8"), ("d", "u1", (3,))])])
    nested["b"]["d"][1] = (1, 2, 3)
    values = {
        "ticks": np.array([(1, 1.1, 1.2, 0.0, 3, 1001, 6, 3.0)], dtype=TICK_DTYPE),
        "rates": np.zeros(0, dtype=RATES_DTYPE),
        "nested": nested,
        "plain": np.arange(6, dtype="<f4").reshape(2, 3),
        "struct": Info("EURUSD", np.int64(5), np.float64(1e-5)),
        "book": (Info("A", 1, 0.1), Info("B", 2, 0.2)),
        "mixed": [True, None, b"x", {"k": datetime.datetime(2024, 1, 2, 10, 0, 0, 5)}],
    }
    for name, value in values.items():
        wire = encode(value)
        assert brine.dumpable(wire), name  # RPyC carries it by value, never as a proxy
        back = decode(wire)
        if isinstance(value, np.ndarray):
            assert back.dtype == value.dtype and back.shape == value.shape, name
            assert back.tobytes() == value.tobytes() and back.flags.writeable, name
        else:
            assert back == value, name
    struct = decode(encode(values["struct"]))
    assert type(struct).__name__ == "Info" and struct._fields == ("name", "digits", "point")
    assert type(struct.digits) is int and struct._asdict() == {"name": "EURUSD", "digits": 5, "point": 1e-5}
    with pytest.raises(TypeError, match="cannot carry a object by value"):
        encode(object())


# -- the remote module against the in-process stand-in --------------------------------------


def test_remote_results_equal_the_in_process_standins(start_server, terminal_of, remotes) -> None:
    server = start_server()
    script_market(terminal_of(server))
    local = MT5StandIn()
    script_market(local)
    remote = RemoteMT5("127.0.0.1", server.port, timeout_s=10)
    remotes.append(remote)
    assert remote.initialize(login=LOGIN, password=PASSWORD, server=SERVER) is local.initialize(
        login=LOGIN, password=PASSWORD, server=SERVER) is True
    since = datetime.datetime.fromtimestamp(T0 // 1000, datetime.timezone.utc)
    calls = [
        ("terminal_info", (), {}), ("account_info", (), {}), ("version", (), {}),
        ("symbols_total", (), {}), ("symbols_get", (), {"group": "*,!*.pro"}),
        ("symbol_select", ("EURUSD", True), {}), ("symbol_info", ("EURUSD",), {}),
        ("symbol_info_tick", ("XAUUSD.pro",), {}), ("market_book_add", ("EURUSD",), {}),
        ("market_book_get", ("EURUSD",), {}), ("market_book_add", ("XAUUSD.pro",), {}),
        ("copy_ticks_from", ("EURUSD", T0 // 1000, 100, -1), {}),
        ("copy_ticks_from", ("EURUSD", since, 5, 1), {}),
        ("copy_ticks_range", ("EURUSD", since, since + datetime.timedelta(seconds=1), -1), {}),
        ("copy_rates_from_pos", ("EURUSD", H1, 0, 10), {}),
        ("copy_rates_from", ("EURUSD", H1, since, 2), {}),
        ("copy_rates_from_pos", ("EURUSD", 12345, 0, 10), {}),  # invalid timeframe: None, -2
        ("symbol_info", ("GBPUSD",), {}),  # unknown: None, -4
        ("positions_get", (), {}), ("positions_get", (), {"symbol": "XAUUSD.pro"}),  # none: ()
        ("orders_get", (), {"group": "XAU*"}), ("history_deals_get", (0, T0 // 1000 + 60), {}),
        ("history_deals_get", (since, since + datetime.timedelta(hours=1)), {"group": "EURUSD"}),
    ]
    for name, args, kwargs in calls:
        want, got = getattr(local, name)(*args, **kwargs), getattr(remote, name)(*args, **kwargs)
        case = f"{name}{args}"
        assert remote.last_error() == local.last_error(), case
        assert type(got) is type(want) or type(got).__name__ == type(want).__name__, case
        if isinstance(want, np.ndarray):
            assert got.dtype == want.dtype and np.array_equal(got, want) and len(got) > 0, case
        else:
            assert got == want, case
        for got_struct, want_struct in zip(structs(got), structs(want), strict=True):
            assert type(got_struct).__name__ == type(want_struct).__name__, case
            assert got_struct._asdict() == want_struct._asdict(), case
    assert remote.symbol_info_tick("EURUSD").time_msc == local.symbol_info_tick("EURUSD").time_msc
    constants = {n: v for n, v in vars(local).items() if n.isupper() and not n.startswith("_")}
    assert constants and {n: getattr(remote, n) for n in constants} == constants
    with pytest.raises(AttributeError):
        getattr(remote, "no_such_function")
    remote.shutdown()
    # Constants were read once with the connection; functions now fail as without IPC.
    assert remote.TIMEFRAME_H1 == H1 and remote.COPY_TICKS_ALL == -1
    assert remote.copy_ticks_from("EURUSD", 0, 10, -1) is None
    assert remote.symbol_select("EURUSD", True) is False
    assert remote.last_error()[0] == -10004 and remote.last_error()[0] in IPC_ERRORS


def test_each_call_is_one_round_trip_and_constants_none(start_server, terminal_of, remotes) -> None:
    server = start_server()
    script_market(terminal_of(server))
    local = MT5StandIn()
    script_market(local)
    remote = RemoteMT5("127.0.0.1", server.port, timeout_s=10)
    remotes.append(remote)
    assert remote.initialize() and local.initialize()
    conn = remote._conn  # its requests are numbered: count them

    def requests(call: Callable[[], object]) -> int:
        before = next(conn._seqcounter)
        call()
        return next(conn._seqcounter) - before - 1

    assert requests(lambda: remote.copy_ticks_from("EURUSD", T0 // 1000, 100, -1)) == 1
    assert requests(lambda: remote.symbols_get()) == 1  # a tuple of structs
    assert requests(lambda: remote.account_info()._asdict()) == 1
    assert requests(lambda: (remote.symbol_info("GBPUSD"), remote.last_error())) == 1
    assert requests(lambda: remote.TIMEFRAME_H1 + remote.COPY_TICKS_ALL) == 0
    figures: dict[str, tuple[float, float]] = {}

    def timed(module: object) -> None:
        took = []
        for _ in range(300):
            began = time.perf_counter()
            module.copy_ticks_from("EURUSD", T0 // 1000, 100, -1)
            took.append(time.perf_counter() - began)
        took.sort()
        figures["in-process" if module is local else "over RPyC"] = (took[150] * 1e3, took[296] * 1e3)

    timed(local)
    # 300 requests, no more: results come by value, so no proxy is ever released (a request too).
    assert requests(lambda: timed(remote)) == 300
    print("\ncopy_ticks_from (20 ticks), p50 / p99 ms: "
          + "; ".join(f"{name} {p50:.3f} / {p99:.3f}" for name, (p50, p99) in figures.items()))


def test_the_server_gets_no_hold_on_the_engines_python(start_server, terminal_of, remotes) -> None:
    server = start_server()
    remote = RemoteMT5("127.0.0.1", server.port, timeout_s=5)
    remotes.append(remote)
    assert remote.initialize()
    # The server's connection back to this process (rpyc.classic.connect would expose
    # getmodule, eval and execute on it: the engine's Python to the server).
    back = remote._conn.root.getconn()
    for name in ("getmodule", "eval", "execute", "namespace"):
        with pytest.raises(AttributeError):
            getattr(back.root, name)


def structs(value: object) -> list:
    """The package's struct values in a result (one, or a tuple of them)."""
    if hasattr(value, "_fields"):
        return [value]
    return [v for v in value if hasattr(v, "_fields")] if isinstance(value, tuple) else []


def test_an_unreachable_server_fails_initialize_with_an_ipc_error_naming_it(remotes) -> None:
    port = free_port()  # nothing listens there
    remote = RemoteMT5("127.0.0.1", port, timeout_s=2)
    remotes.append(remote)
    assert remote.initialize() is False
    code, message = remote.last_error()
    assert code == -10003 and code in IPC_ERRORS
    assert f"RPyC server at 127.0.0.1:{port}" in message and "ConnectionRefusedError" in message
    assert remote.terminal_info() is None and remote.last_error()[0] == -10004


def test_a_server_without_metatrader5_fails_initialize_saying_so(started, remotes) -> None:
    server = ClassicServer()
    server.env = {"PYTHONPATH": str(ROOT)}  # no stand-in package there
    started.append(server)
    server.spawn()
    remote = RemoteMT5("127.0.0.1", server.port, timeout_s=5)
    remotes.append(remote)
    assert wait_for(lambda: remote.initialize() or "ModuleNotFoundError" in remote.last_error()[1])
    code, message = remote.last_error()
    assert code == -10003 and "No module named 'MetaTrader5'" in message
    assert "Remote Traceback" not in message  # one line, not the server's traceback


def test_a_hung_call_times_out_as_ipc_timeout_and_initialize_reconnects(start_server, terminal_of, remotes) -> None:
    server = start_server()
    terminal = terminal_of(server)
    script_market(terminal)
    remote = RemoteMT5("127.0.0.1", server.port, timeout_s=0.5)
    remotes.append(remote)
    assert remote.initialize()
    terminal.call_delay = 3.0  # every call of the terminal now hangs 3 s
    began = time.monotonic()
    assert remote.terminal_info() is None
    waited = time.monotonic() - began
    code, message = remote.last_error()
    print(f"\nhung terminal_info returned after {waited:.2f} s: {code} {message}")
    assert waited < 2
    assert code == -10005 and code in IPC_ERRORS and "did not answer terminal_info within 0.5 s" in message
    assert remote.account_info() is None and remote.last_error()[0] == -10004  # the link was dropped
    terminal.call_delay = 0.0
    assert remote.initialize() and remote.terminal_info().connected is True


def process_state(pid: int) -> str:
    """The state letter of ``/proc/PID/stat`` (``T``: stopped)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_shutdown_does_not_wait_long_for_a_stopped_server(start_server, remotes) -> None:
    server = start_server()
    remote = RemoteMT5("127.0.0.1", server.port, timeout_s=30)
    remotes.append(remote)
    assert remote.initialize()
    server.proc.send_signal(signal.SIGSTOP)  # hung: the connection stays up, nothing answers
    try:
        # The signal is asynchronous: a server not stopped yet would still answer.
        deadline = time.monotonic() + 5
        while process_state(server.proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        began = time.monotonic()
        remote.shutdown()
        waited = time.monotonic() - began
    finally:
        server.proc.send_signal(signal.SIGCONT)
    print(f"\nshutdown on a stopped server returned after {waited:.2f} s: {remote.last_error()}")
    assert waited < 3.5
    assert remote.last_error() == (-10005, f"IPC timeout: the RPyC server at 127.0.0.1:{server.port} did not "
                                            "answer shutdown within 2 s")
    assert remote.initialize() and remote.terminal_info() is not None  # the server is back


# -- MT5Source over RPyC ----------------------------------------------------------------------


def test_mt5_source_over_rpyc_delivers_every_tick_once_in_order(market, make_source) -> None:
    server, terminal = market
    source = make_source(server.port)
    source.start()
    assert [s.name for s in source.symbols()] == ["EURUSD"] and source.symbols()[0].digits == 5
    expected = feed(terminal, [T0 + 100 + i // 3 for i in range(300)])  # several ticks per ms
    got = collect(source, len(expected))
    assert [(t.time_msc, t.bid) for t in got] == expected
    assert {t.symbol for t in got} == {"EURUSD"}
    candles = source.history("EURUSD", timeframe("H1"), 10)
    assert [c.time for c in candles] == [T0 // 1000 - 7200, T0 // 1000 - 3600, T0 // 1000]
    assert wait_for(lambda: source.book("EURUSD", 0) is not None)
    assert source.book("EURUSD", 0).asks == [[1.1002, 2.5], [1.1003, 5.0]]
    assert source.account(0)["login"] == LOGIN and source.health().status == "ok"


def test_an_ipc_drop_on_the_server_is_survived_with_no_tick_lost(market, make_source) -> None:
    server, terminal = market
    source = make_source(server.port)
    source.start()
    before = feed(terminal, [T0 + 1000 + i for i in range(50)])
    assert [(t.time_msc, t.bid) for t in collect(source, len(before))] == before
    terminal.drop_ipc()
    assert wait_for(lambda: not source.health().connected)
    during = feed(terminal, [T0 + 2000 + i for i in range(50)], base=1.3)  # the terminal records them
    time.sleep(0.2)
    down = source.health()
    terminal.restore_ipc()
    after = feed(terminal, [T0 + 3000 + i for i in range(50)], base=1.4)
    got = collect(source, len(during) + len(after))
    print(f"\nhealth during the IPC drop: {down}")
    assert [(t.time_msc, t.bid) for t in got] == during + after
    assert down.status == "degraded" and "-10004 No IPC connection" in down.detail
    assert wait_for(lambda: source.health().status == "ok")


def test_a_server_restart_is_survived_and_health_says_what_happened(market, make_source, start_server, terminal_of) -> None:
    server, terminal = market
    source = make_source(server.port)
    source.start()
    before = feed(terminal, [T0 + 1000 + i for i in range(40)])
    assert [(t.time_msc, t.bid) for t in collect(source, len(before))] == before
    server.stop(signal.SIGKILL)  # the Wine Python dies with the server
    assert wait_for(lambda: f"RPyC server at 127.0.0.1:{server.port}" in source.health().detail)
    lost = source.health()
    # (The first reconnect may still reach the dying server's listening socket: reset.)
    assert wait_for(lambda: "ConnectionRefusedError" in source.health().detail)
    retrying = source.health()
    # A new server on the same port; its terminal has the history (the ticks delivered before
    # and those of the outage) and goes on.
    terminal = terminal_of(start_server(port=server.port))
    script_market(terminal)
    feed(terminal, [T0 + 1000 + i for i in range(40)])
    missed = feed(terminal, [T0 + 5000 + i for i in range(40)], base=1.3)
    after = feed(terminal, [T0 + 9000 + i for i in range(40)], base=1.4)
    got = collect(source, len(missed) + len(after))
    print(f"\nhealth when the server died: {lost}\nwhile it was down: {retrying}")
    assert [(t.time_msc, t.bid) for t in got] == missed + after
    assert lost.status == "degraded" and not lost.connected and "-10004 No IPC connection: lost" in lost.detail
    assert "reconnect failed: initialize: -10003 IPC initialize failed: cannot use the RPyC server" in retrying.detail
    assert wait_for(lambda: source.health().status == "ok" and source.health().connected)


def test_the_password_is_never_logged_nor_in_errors(start_server, terminal_of, make_source, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_server()
    terminal = terminal_of(server)
    script_market(terminal)
    source = make_source(server.port)
    source.start()
    terminal.fail_auth()
    terminal.drop_ipc(0.05)  # lost, then every reconnect is refused: Authorization failed
    assert wait_for(lambda: "Authorization failed" in source.health().detail)
    server.stop(signal.SIGKILL)
    assert wait_for(lambda: "ConnectionRefusedError" in source.health().detail)
    texts = [caplog.text, source.health().detail, repr(source._mt5), repr(source._config)]
    assert all(PASSWORD not in text for text in texts)


# -- settings and the engine process -----------------------------------------------------------


def test_backend_host_and_port_are_settings_checked_at_start_up(capsys) -> None:
    config = EngineConfig.load(environ={}, dotenv=None)
    assert (config.mt5_backend, config.mt5_host, config.mt5_port) == ("local", "127.0.0.1", 18812)
    config = EngineConfig.load({"mt5_port": "18813"}, environ={"MT5_BACKEND": "rpyc", "MT5_HOST": "wine-box"},
                               dotenv=None)
    assert (config.mt5_backend, config.mt5_host, config.mt5_port) == ("rpyc", "wine-box", 18813)
    remote = remote_module(config)
    assert (remote.host, remote.port, repr(remote)) == ("wine-box", 18813, "<MetaTrader5 over RPyC at wine-box:18813>")
    for env, message in [({"MT5_BACKEND": "grpc"}, "MT5_BACKEND: must be one of local, rpyc, got 'grpc'"),
                         ({"MT5_PORT": "0"}, "MT5_PORT: must be between 1 and 65535, got 0"),
                         ({"MT5_PORT": "x"}, "MT5_PORT: cannot use 'x' as an integer"),
                         ({"MT5_HOST": "a b"}, "MT5_HOST: must be a host name or address, got 'a b'")]:
        with pytest.raises(ConfigError) as refused:
            EngineConfig.load(environ=env, dotenv=None)
        assert str(refused.value) == message
    assert cli.main(["--env-file", os.devnull, "--mt5-host", ""]) == 2
    assert capsys.readouterr().err == "mt5-engine: configuration error: MT5_HOST: must not be empty\n"


def test_engine_process_with_the_rpyc_backend_publishes_the_terminals_ticks(
        start_server, terminal_of, started, zmq_ctx) -> None:
    server = start_server()
    terminal = terminal_of(server)
    script_market(terminal)
    engine = EngineProcess(["--source", "mt5"], env={
        "MT5_BACKEND": "rpyc", "MT5_PORT": str(server.port), "MT5_LOGIN": str(LOGIN),
        "MT5_PASSWORD": PASSWORD, "MT5_SERVER": SERVER, "SYMBOLS": "EURUSD", "TIMEFRAMES": "M1"})
    started.append(engine)
    engine.start()
    sock = subscriber(zmq_ctx, engine.bus, b"tick:EURUSD:", b"health:engine:")
    time.sleep(0.3)  # the subscription reaches the bus
    now_ms = time.time_ns() // 1_000_000
    expected = feed(terminal, [now_ms + i for i in range(100)], base=1.25)
    ticks, health = [], []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (len(ticks) < len(expected) or not health):
        if sock.poll(50):
            topic, payload = sock.recv_multipart()
            (ticks if topic.startswith(b"tick:") else health).append(msgpack.unpackb(payload))
    assert [(t["time_msc"], t["bid"]) for t in ticks] == expected
    assert health[-1]["source"] == "mt5" and health[-1]["status"] == "ok"
    assert PASSWORD not in engine.output()
