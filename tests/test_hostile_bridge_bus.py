"""Hostile bus publishers against the bridge: malformed and forged payloads of every topic family.

A worker may legally publish ``ind:`` and ``health:COMPONENT:``, so those come through the
engine's own bus; the engine's families (ticks, candles, books, account, summary) come through a
bus that lets anyone's topics through (``OpenBus``), as a ``--bus-only`` bus without CURVE does.
The bridge must drop and count every payload not of its declared shape, create no state for
symbols the engine does not serve, keep ``/health`` and ``/metrics`` small, and never let any of
it reach a Socket.IO client. The attack prints what held (``pytest -s``).
"""
from __future__ import annotations

import asyncio
import copy
import json
import math
import time
import urllib.request
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from bridge.bus import READ_BURST, BusReader
from bridge.components import EXPIRE_S, MAX_COMPONENTS, ComponentTable
from bridge.config import BridgeConfig
from bridge.payloads import INDICATOR_VALUES, MAX_BOOK_LEVELS, SHAPES, Malformed, check
from bridge.server import RESYNC_KINDS, Bridge
from engine.launcher import Launcher, build_children
from engine.models import Book, Candle, Tick
from engine.activity import DEALS, ORDERS, POSITIONS
from engine.protocol import (ACCOUNT, BOOK, BOOK_FIELDS, CANDLE, CANDLE_FIELDS, DEAL, DEAL_FIELDS, HEALTH, INDICATOR,
                             ORDER, ORDER_FIELDS, POSITION, POSITION_FIELDS, SUMMARY, TICK, TICK_FIELDS, ErrorCode,
                             RpcError)
from engine.service import EngineService
from engine.sources.sim import SimSource
from engine.sources.sim_account import DEMO_BALANCE, account_info
from indicators.series import IndicatorSeries
from indicators.worker import IndicatorWorker, WorkerConfig
from tests.bridge_procs import BridgeProcess, BusInjector, Recorder
from tests.hostile import OpenBus, RssWatch, report
from tests.mt5_trading import TradeBook
from tests.procs import EngineProcess, engine_config, free_port, running

SYMBOL = "EURUSD"
MARKER = "<script>hostile()</script>"
FORGED_TIME = 4102444800  # 2100-01-01: a bar no engine has
STAMP = {"seq": 1, "epoch": 1}
FORGED = 30_000  # forged components, and forged topics of symbols the engine does not serve, of each kind
FORGED_CHUNK = 250


def valid_payloads() -> dict[str, dict[str, Any]]:
    """One payload per family as its publisher makes it (the engine's models, the worker's series)."""
    series = IndicatorSeries(SYMBOL, "M1")
    bars = [Candle(SYMBOL, "M1", 60 * i, 1.0 + i, 2.0 + i, 0.5, 1.5 + i).to_payload(True) for i in range(30)]
    series.warm(bars)
    ind = series.on_candle(Candle(SYMBOL, "M1", 60 * 30, 1.0, 2.0, 0.5, 1.7).to_payload(False))
    ctx = zmq.Context()
    try:  # neither opens a socket before it runs
        config = engine_config()
        engine_health = EngineService(config, SimSource(config.symbols), ctx).health()
        worker_health = IndicatorWorker(WorkerConfig(), ctx).health()
    finally:
        ctx.destroy(linger=0)
    return {
        f"tick:{SYMBOL}:": {**Tick(SYMBOL, 1_700_000_000_000, 1.1, 1.2).to_payload(), **STAMP},
        f"candle:{SYMBOL}:M1:": {**Candle(SYMBOL, "M1", 60, 1.0, 2.0, 0.5, 1.5, 12).to_payload(False), **STAMP},
        f"ind:{SYMBOL}:M1:": {**ind, **STAMP},
        f"book:{SYMBOL}:": {**Book(SYMBOL, 1, [[1.1, 2.0], [1.0, 1.5]], [[1.2, 0.5]]).to_payload(), **STAMP},
        "account:": {**account_info(DEMO_BALANCE, 12.5, 110.0), **STAMP},
        "summary:": {"time_msc": 1, "symbols": {SYMBOL: {"last": 1.1, "open": 1.0, "high": 1.2, "low": 0.9,
                                                         "prev_close": 1.0, "change": 0.1, "change_pct": 10.0,
                                                         "day": 86400}}, **STAMP},
        "health:engine:": {**engine_health, **STAMP},
        "health:indicators:0:": {**worker_health, **STAMP},
        "health:service:": {**Launcher(build_children(1, True, ".env", []), env={}).health(), **STAMP},
        **activity_payloads(),
    }


def activity_payloads() -> dict[str, dict]:
    """A position, an order and deals (one without a symbol) as the engine publishes them."""
    book = TradeBook(lambda symbol: (1.1, 1.1002, 100_000.0), 0.0)
    book.deposit(1_700_000_000_000, 100.0)
    book.open_position(1_700_000_000_001, SYMBOL, 0, 1.0, 1.1, sl=1.0)
    book.place_order(1_700_000_000_002, SYMBOL, 2, 0.5, 1.05)
    deposit, entry = book.deals(0, 2**40)
    return {
        f"position:{SYMBOL}:": {**POSITIONS.record(book.positions()[0]), "state": "open", **STAMP},
        f"order:{SYMBOL}:": {**ORDERS.record(book.orders()[0]), "state": "modified", **STAMP},
        f"deal:{SYMBOL}:": {**DEALS.record(entry), **STAMP},
        "deal:-:": {**DEALS.record(deposit), **STAMP},
    }


VALID = valid_payloads()


def mutated(topic: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    """The valid payload of ``topic`` with ``changes`` (``DROP`` removes a key)."""
    payload = copy.deepcopy(VALID[topic])
    for key, value in changes.items():
        if value is DROP:
            del payload[key]
        else:
            payload[key] = value
    return topic, payload


DROP = object()
T, C, I, B = f"tick:{SYMBOL}:", f"candle:{SYMBOL}:M1:", f"ind:{SYMBOL}:M1:", f"book:{SYMBOL}:"
W = "health:indicators:0:"
# (topic, payload, what the reason names): every family, every kind of wrongness.
MALFORMED = [
    (*mutated(T, bid=MARKER), "'bid'"), (*mutated(T, bid=True), "'bid'"), (*mutated(T, bid=math.nan), "'bid'"),
    (*mutated(T, ask=math.inf), "'ask'"), (*mutated(T, bid=None), "'bid'"), (*mutated(T, volume=1.5), "'volume'"),
    (*mutated(T, time_msc="1"), "'time_msc'"), (*mutated(T, symbol="GBPUSD"), "topic"),
    (*mutated(T, html=MARKER), "unexpected key"), (*mutated(T, ask=DROP), "no 'ask'"),
    (*mutated(T, seq=DROP), "no 'seq'"), (*mutated(T, epoch="1"), "'epoch'"),
    (*mutated(C, tick_volume=MARKER), "'tick_volume'"), (*mutated(C, close=-math.inf), "'close'"),
    (*mutated(C, closed=1), "'closed'"), (*mutated(C, timeframe="M7"), "'timeframe'"),
    (*mutated(C, time=float(FORGED_TIME)), "'time'"), (*mutated(C, timeframe="M5"), "topic"),
    (*mutated(I, sma=MARKER), "'sma'"), (*mutated(I, ema=math.nan), "'ema'"), (*mutated(I, rsi=math.inf), "'rsi'"),
    (*mutated(I, macd=True), "'macd'"), (*mutated(I, macd_hist=[1.0]), "'macd_hist'"),
    (*mutated(I, time=str(FORGED_TIME)), "'time'"), (*mutated(I, closed="yes"), "'closed'"),
    (*mutated(I, label=MARKER), "unexpected key"), (*mutated(I, symbol="GBPUSD"), "topic"),
    (*mutated(I, macd_signal=DROP), "no 'macd_signal'"),
    (*mutated(B, bids=[[1.0]]), "'bids'"), (*mutated(B, asks=[[1.0, MARKER]]), "'asks'"),
    (*mutated(B, bids=[[1.0, 1.0]] * (MAX_BOOK_LEVELS + 1)), "'bids'"), (*mutated(B, bids=MARKER), "'bids'"),
    (*mutated("account:", leverage=MARKER), "'leverage'"), (*mutated("account:", balance=math.nan), "'balance'"),
    (*mutated("account:", name="x" * 1000), "'name'"), (*mutated("account:", note={"html": MARKER}), "'note'"),
    (*mutated("account:", **{f"k{i}": i for i in range(100)}), "keys"),
    (*mutated("summary:", symbols={SYMBOL: {"last": MARKER}}), "'symbols'"),
    (*mutated("summary:", symbols=[SYMBOL]), "'symbols'"), (*mutated("summary:", time_msc=None), "'time_msc'"),
    (*mutated(W, status=MARKER), "'status'"), (*mutated(W, updates_per_s=MARKER), "'updates_per_s'"),
    (*mutated(W, series=True), "'series'"), (*mutated(W, component="indicators:1"), "topic"),
    (*mutated(W, time_msc=DROP), "no 'time_msc'"), (*mutated(W, deep={"a": {"b": MARKER}}), "'deep'"),
    (*mutated("health:service:", children={"engine": {"running": MARKER, "pid": 1, "restarts": 0}}), "'children'"),
    (*mutated("health:engine:", ticks_per_s=MARKER), "'ticks_per_s'"),
    (*mutated("health:engine:", source_connected="yes"), "'source_connected'"),
    (f"tick:{SYMBOL}", VALID[T], "colon-terminated"), ("tick::", {**VALID[T], "symbol": ""},
                                                                  "'symbol'"),
    (f"candle:{SYMBOL}:", VALID[C], "does not name"), ("account:x:", VALID["account:"],
                                                                  "does not name"),
    ("trade:EURUSD:", VALID[T], "not one the bridge reads"), (T, [1, 2], "not a map"),
]


def worker_may_publish(topic: str) -> bool:
    """``ind:`` and another component's ``health:``: what the engine's bus takes from a worker."""
    return topic.startswith(f"{INDICATOR}:") or (
        topic.startswith(f"{HEALTH}:") and not topic.startswith(("health:engine:", "health:service:")))


# What reaches the bridge's reader as a decoded map (it subscribes to its kinds; a frame that is
# not a map is refused when decoded, and counted apart).
ON_THE_BUS = [(topic, payload) for topic, payload, _ in MALFORMED
              if topic.startswith(tuple(f"{kind}:" for kind in SHAPES)) and isinstance(payload, dict)]
# Frames the reader cannot decode: not msgpack, a topic not UTF-8, not a map, three frames.
UNDECODABLE = [[T.encode(), b"\xc1"], [b"tick:\xff:", msgpack.packb(VALID[T])], [T.encode(), msgpack.packb([1, 2])],
               [T.encode(), msgpack.packb(VALID[T]), b"extra"]]


# The declared shapes: what the publishers send passes, anything else is refused saying why.
def test_what_the_engine_the_worker_and_the_launcher_publish_has_its_declared_shape():
    for topic, payload in valid_payloads().items():  # built afresh: VALID is what the other tests use
        kind, names = check(topic, payload)
        assert ":".join((kind, *names)) + ":" == topic


def test_the_declared_fields_are_the_protocols_and_the_workers():
    assert set(SHAPES) == {TICK, CANDLE, INDICATOR, BOOK, ACCOUNT, SUMMARY, HEALTH, POSITION, ORDER, DEAL}
    stamps = {"seq", "epoch"}
    assert set(SHAPES[POSITION].payload.fields) == {*POSITION_FIELDS, "state", *stamps}
    assert set(SHAPES[ORDER].payload.fields) == {*ORDER_FIELDS, "state", *stamps}
    assert set(SHAPES[DEAL].payload.fields) == {*DEAL_FIELDS, *stamps}
    assert set(SHAPES[TICK].payload.fields) == {*TICK_FIELDS, *stamps}
    assert set(SHAPES[CANDLE].payload.fields) == {*CANDLE_FIELDS, *stamps}
    assert set(SHAPES[BOOK].payload.fields) == {*BOOK_FIELDS, *stamps}
    worker_keys = set(VALID[I]) - stamps
    assert set(SHAPES[INDICATOR].payload.fields) == {*worker_keys, *stamps}
    assert set(INDICATOR_VALUES) == worker_keys - {"symbol", "timeframe", "time", "closed"}


@pytest.mark.parametrize(("topic", "payload", "named"), MALFORMED,
                         ids=[f"{i}-{t.split(':')[0]}-{n}" for i, (t, _, n) in enumerate(MALFORMED)])
def test_a_payload_not_of_its_shape_is_refused_saying_what(topic, payload, named):
    with pytest.raises(Malformed) as refused:
        check(topic, payload)
    assert named in str(refused.value)
    assert len(str(refused.value)) < 300  # the reason quotes a bounded part of the value


# The bridge's reader, unit-level: every family through ``on_bus_message``.
@pytest.fixture
def unit_bridge():
    bridge = Bridge(BridgeConfig())
    bridge._set_symbols([{"name": name} for name in (SYMBOL, "GBPUSD")])
    bridge.fanout.add_client("member")
    bridge.fanout.join("member", ["s:EURUSD", "t:EURUSD:M1"])
    return bridge


def batched(bridge: Bridge) -> list[tuple[str, str, dict[str, Any]]]:
    return [(room, event, payload) for room, events in bridge.batchers[0].take().items()
            for event, payload, _ in events]


def test_the_reader_drops_and_counts_every_malformed_family_and_batches_only_the_valid(unit_bridge):
    for topic, payload, _ in MALFORMED:
        assert unit_bridge.on_bus_message(topic, payload) is False
    assert batched(unit_bridge) == []
    stats = unit_bridge.health()["stats"]
    assert stats["bus_malformed_dropped"] == len(MALFORMED)
    assert unit_bridge.health()["workers"] == {} and unit_bridge.engine_health == {}

    for topic, payload in VALID.items():
        assert unit_bridge.on_bus_message(topic, payload) is True
    events = {event for _, event, _ in batched(unit_bridge)}
    assert events == {"tick", "candles", "indicators", "order_book", "account_update", "market_summary",
                      "position_update", "order_update", "deal"}
    assert set(unit_bridge.health()["workers"]) == {"indicators:0", "service"}
    assert unit_bridge.engine_health["component"] == "engine"


def test_forged_topics_for_symbols_the_engine_does_not_serve_create_no_state(unit_bridge):
    bridge = unit_bridge
    bridge.candles.put(SYMBOL, "M1", [VALID[C]], 100, time.monotonic())
    bridge.on_bus_message(T, VALID[T])
    tracked = len(bridge.tracker._last)
    forged = 0
    for i in range(3000):
        for topic, payload in VALID.items():
            shape = SHAPES[topic.split(":")[0]]
            if shape.served_only and shape.parts[:1] == ("symbol",):
                name = f"FAKE{i}"
                forged_topic = topic.replace(SYMBOL, name)
                assert bridge.on_bus_message(forged_topic, {**payload, "symbol": name}) is False
                forged += 1
    assert bridge.health()["stats"]["bus_unknown_dropped"] == forged
    assert len(bridge.tracker._last) == tracked
    assert list(bridge.candles._entries) == [(SYMBOL, "M1")]
    assert batched(bridge) == [("s:EURUSD", "tick", {k: v for k, v in VALID[T].items()
                                                     if k not in ("seq", "epoch")})]
    # A symbol list without a symbol forgets its history.
    bridge._set_symbols([{"name": "GBPUSD"}, {"name": 5}, {"name": "BAD:NAME"}])
    assert bridge.symbol_names == {"GBPUSD"} and list(bridge.candles._entries) == []


def test_5000_malformed_messages_log_one_line_without_a_traceback(unit_bridge, caplog):
    caplog.set_level("INFO")
    for i in range(5000):
        topic, payload, _ = MALFORMED[i % len(MALFORMED)]
        unit_bridge.on_bus_message(topic, payload)
    lines = [r for r in caplog.records if r.name.startswith("bridge")]
    assert len(lines) == 1 and not lines[0].exc_info
    assert "5000 in all" not in lines[0].getMessage()  # the first is logged at once, the rest held
    assert unit_bridge.malformed_drops.count == 5000


def test_the_largest_engine_health_accepted_keeps_health_small(unit_bridge):
    figures = {f"figure{i}": {f"k{j}": "x" * 64 for j in range(16)} for i in range(64 - 5)}
    biggest = {"component": "engine", "status": "ok", "time_msc": 1, **STAMP, **figures}
    assert unit_bridge.on_bus_message("health:engine:", biggest)
    assert len(json.dumps(unit_bridge.health())) < 100_000
    one_more = {**biggest, "figure0": {f"k{j}": "x" for j in range(17)}}
    assert not unit_bridge.on_bus_message("health:engine:", one_more)
    longer = {**biggest, "figure0": {"k": "x" * 65}}
    assert not unit_bridge.on_bus_message("health:engine:", longer)


def test_components_are_bounded_refused_when_full_and_expire_when_silent():
    default = ComponentTable()
    assert (default.limit, default.expire_s) == (MAX_COMPONENTS, EXPIRE_S) == (64, 30.0)
    table = ComponentTable(limit=3, expire_s=30.0)
    assert [table.put(f"c{i}", {"status": "ok"}, now=float(i)) for i in range(5)] == [True] * 3 + [False] * 2
    assert table.refused == 2 and [name for name, _ in table.items(now=5.0)] == ["c0", "c1", "c2"]
    assert table.put("c0", {"status": "degraded"}, now=20.0)  # heard again: keeps its place, renewed
    assert table.put("c3", {"status": "ok"}, now=31.5)  # c1 silent 31.5 s: expired, c3 takes its place
    assert [name for name, _ in table.items(now=31.5)] == ["c0", "c2", "c3"]
    assert [name for name, _ in table.items(now=49.5)] == ["c0", "c3"]
    assert table.items(now=100.0) == [] and table.expired == 4


def test_forged_components_leave_health_and_metrics_small_and_quick(unit_bridge):
    bridge = unit_bridge
    bridge.engine_seen = time.monotonic()
    bridge.on_bus_message(W, VALID[W])
    health = VALID[W]
    for i in range(30_000):
        name = f"indicators:forged{i}"
        bridge.on_bus_message(f"health:{name}:", {**health, "component": name, "shard": MARKER})
    started = time.perf_counter()
    body = json.dumps(bridge.health())
    health_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    metrics = bridge.metrics.exposition()
    metrics_ms = (time.perf_counter() - started) * 1000
    workers = bridge.health()["workers"]
    assert len(workers) == MAX_COMPONENTS and "indicators:0" in workers
    assert bridge.components.refused == 30_000 - (MAX_COMPONENTS - 1)
    assert len(body) < 16_000 and len(metrics) < 160_000
    report("bridge: 30k forged health components (unit)", None, None, components=len(workers),
           health_bytes=len(body), health_ms=f"{health_ms:.1f}", metrics_bytes=len(metrics),
           metrics_ms=f"{metrics_ms:.1f}")


class FakeRpc:
    """The engine's ``snapshot`` as a test wants it answered; records every call."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[tuple[float, str]] = []
        self.last_ok = self.last_timeout = 0.0
        self.timeouts = 0

    async def call(self, op: str, **params: Any) -> Any:
        assert op == "snapshot"
        self.calls.append((time.monotonic(), params["prefix"]))
        return self.answer(params["prefix"])


def run_monitor(bridge: Bridge, seconds: float) -> None:
    """The bridge's monitor loop for ``seconds``, the engine heard all along."""
    async def main():
        task = asyncio.get_running_loop().create_task(bridge._monitor())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            bridge.engine_seen = time.monotonic()
            await asyncio.sleep(0.05)
            assert not task.done(), task.exception()
        task.cancel()
    bridge.engine_health = {"status": "ok"}
    bridge.symbols.put([{"name": SYMBOL}, {"name": "GBPUSD"}], time.monotonic())
    asyncio.run(main())


def test_a_too_many_or_lost_snapshot_is_asked_again_narrower_once_never_in_a_loop(unit_bridge):
    tick = VALID[T]
    refused = {"ind:", "ind:GBPUSD:", "ind:GBPUSD:H1:"}  # forged topics under ind:, most of them GBPUSD's

    def answer(prefix: str) -> Any:
        if prefix in refused:
            raise RpcError(ErrorCode.TOO_MANY, "narrow the prefix")
        if prefix == "book:":  # a reply over the codec's limit is dropped: the call times out
            raise RpcError(ErrorCode.TIMEOUT, "no reply")
        return [[T, tick]] if prefix == "tick:" else []
    unit_bridge.rpc = rpc = FakeRpc(answer)
    run_monitor(unit_bridge, 1.5)
    asked = [prefix for _, prefix in rpc.calls]
    assert asked == [f"{kind}:" for kind in RESYNC_KINDS] + [
        "ind:EURUSD:", "ind:GBPUSD:", "book:EURUSD:", "book:GBPUSD:",
        *(f"ind:GBPUSD:{tf}:" for tf in unit_bridge.config.timeframes)]
    assert unit_bridge.resync_refused == 1 and not unit_bridge.resync_needed
    assert ("s:EURUSD", "tick", {k: v for k, v in tick.items() if k not in ("seq", "epoch")}) in batched(unit_bridge)


def test_snapshot_errors_back_off(unit_bridge):
    def answer(prefix: str) -> Any:
        raise RpcError(ErrorCode.UNAVAILABLE, "the engine is not connected")
    unit_bridge.rpc = rpc = FakeRpc(answer)
    run_monitor(unit_bridge, 2.2)
    gaps = [b - a for (a, _), (b, _) in zip(rpc.calls, rpc.calls[1:])]
    # 0.25, 0.5, 1 s apart (each a monitor tick late at most): 4 calls in 2.2 s, not 9.
    assert 3 <= len(rpc.calls) <= 4, rpc.calls
    assert gaps[0] < 0.6 and gaps[-1] > 0.9, gaps
    assert unit_bridge.resync_failures == len(rpc.calls) and unit_bridge.resync_needed


def test_a_flood_of_queued_messages_lets_the_other_tasks_run(zmq_ctx):
    """pyzmq hands over a queued message without returning to the loop: the reader yields itself."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub = zmq_ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.sndhwm = 0
    pub.bind(endpoint)

    async def main() -> list[int]:
        ctx = zmq.asyncio.Context.shadow(zmq_ctx)
        reader = BusReader(ctx, endpoint, [b"tick:"])
        for _ in range(100):
            pub.send_multipart([b"tick:X:", msgpack.packb({})])
            if await reader.sock.poll(10):
                break
        for _ in range(20 * READ_BURST):
            pub.send_multipart([b"tick:X:", msgpack.packb({})])
        await asyncio.sleep(0.3)  # all queued
        read, turns = 0, []
        ticker_running = True

        async def ticker():
            while ticker_running:
                turns.append(read)
                await asyncio.sleep(0)
        task = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0)
        async for _ in reader.messages():
            read += 1
            if read == 20 * READ_BURST:
                break
        ticker_running = False
        await task
        reader.close()
        return turns
    turns = asyncio.run(main())
    assert len(turns) >= 15, turns  # the other task ran between bursts, not only after the flood


# The attack against a real bridge.
@pytest.fixture(scope="module")
def attacked():
    """An engine at 1000 ticks/s, an ``OpenBus`` on it, and a bridge reading the open bus."""
    with running(EngineProcess(["--rate", "1000"])) as engine:
        bus = OpenBus(engine.bus)
        try:
            with running(BridgeProcess(engine=SimpleNamespace(bus=bus.endpoint, rpc=engine.rpc))) as bridge:
                yield engine, bus, bridge
        finally:
            bus.close()


def fetch(url: str) -> tuple[int, float]:
    """Bytes and milliseconds of one GET (the best of three)."""
    best = (0, math.inf)
    for _ in range(3):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as resp:
            size = len(resp.read())
        best = min(best, (size, (time.perf_counter() - started) * 1000), key=lambda b: b[1])
    return best


def stats(bridge: BridgeProcess) -> dict[str, Any]:
    return bridge.health()[1]["stats"]


def until_counted(bridge: BridgeProcess, key: str, at_least: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = stats(bridge)[key]
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def connect_injector(injector: BusInjector, bridge: BridgeProcess, topic: str) -> None:
    """Until the bus forwards what ``injector`` sends (a PUB's first messages go nowhere)."""
    payload = next(p for t, p in ON_THE_BUS if t == topic)
    for _ in range(200):
        before = stats(bridge)["bus_malformed_dropped"]
        injector.sock.send_multipart([topic.encode(), msgpack.packb(payload)])
        if until_counted(bridge, "bus_malformed_dropped", before + 1, timeout=0.1) > before:
            counted = stats(bridge)["bus_malformed_dropped"]
            while True:  # until probes sent earlier that are still on their way have arrived
                time.sleep(0.3)
                counted, last = stats(bridge)["bus_malformed_dropped"], counted
                if counted == last:
                    return
    raise TimeoutError("the injector never reached the bridge")


def test_forged_and_malformed_payloads_reach_no_client_and_health_and_metrics_stay_bounded(attacked):
    engine, bus, bridge = attacked
    worker_like, anyone = BusInjector(engine), BusInjector(SimpleNamespace(pub=bus.inject))
    recorder = Recorder()

    async def client_during(attack) -> list[tuple[float, str, Any]]:
        await recorder.connect(bridge.url)
        try:
            await recorder.call("subscribe", {"symbol": SYMBOL, "timeframe": "M1"})
            await recorder.wait_for("tick", timeout=10)
            await asyncio.to_thread(attack)
            await asyncio.sleep(1.0)  # a few more flushes: anything batched would be written now
            return list(recorder.events)
        finally:
            await recorder.close()

    figures: dict[str, Any] = {}

    def attack() -> None:
        connect_injector(worker_like, bridge, I)
        connect_injector(anyone, bridge, T)
        before = stats(bridge)
        figures["health_before"] = fetch(bridge.url + "/health")
        figures["metrics_before"] = fetch(bridge.url + "/metrics")
        with RssWatch(bridge.proc.pid) as rss:
            started = time.perf_counter()
            sent_malformed = 0
            for _ in range(20):
                for topic, payload in ON_THE_BUS:
                    via = worker_like if worker_may_publish(topic) else anyone
                    via.sock.send_multipart([topic.encode(), msgpack.packb(payload)])
                    sent_malformed += 1
                for frames in UNDECODABLE:
                    anyone.sock.send_multipart(frames)
                    sent_malformed += 1
            malformed = until_counted(bridge, "bus_malformed_dropped", before["bus_malformed_dropped"] + sent_malformed)
            health = VALID[W]
            # In chunks, each waited for, so no queue on the way overflows. On a loaded 2-core
            # machine a burst can still pass a high-water mark (dropped as the bus documents):
            # each chunk is then waited for from what did arrive, and a loss costs one timeout.
            unknown = before["bus_unknown_dropped"]
            for chunk in range(0, FORGED, FORGED_CHUNK):
                for i in range(chunk, chunk + FORGED_CHUNK):
                    name = f"indicators:forged{i}"
                    anyone.publish(f"health:{name}:".encode(), {**health, "component": name})
                    forged = f"FAKE{i}"
                    anyone.publish(f"ind:{forged}:M1:".encode(), {**VALID[I], "symbol": forged})
                    anyone.publish(f"tick:{forged}:".encode(), {**VALID[T], "symbol": forged, "bid": 999.0})
                unknown = until_counted(bridge, "bus_unknown_dropped", unknown + 2 * FORGED_CHUNK, timeout=2)
            refused = until_counted(bridge, "components_refused", before["components_refused"] + FORGED - MAX_COMPONENTS,
                                    timeout=5)
            figures["took_s"] = time.perf_counter() - started
            figures["components"] = len(bridge.health()[1]["workers"])
            figures["health_after"] = fetch(bridge.url + "/health")
            figures["metrics_after"] = fetch(bridge.url + "/metrics")
            rss.settle(within_mb=50, timeout_s=30)
        figures.update(rss=rss, sent_malformed=sent_malformed, malformed=malformed - before["bus_malformed_dropped"],
                       unknown=unknown - before["bus_unknown_dropped"],
                       refused=refused - before["components_refused"])

    try:
        events = asyncio.run(asyncio.wait_for(client_during(attack), 120))
    finally:
        worker_like.close()
        anyone.close()

    ticks = [at for at, name, data in events if name == "tick"]
    longest_gap_ms = max(b - a for a, b in zip(ticks, ticks[1:])) * 1000
    report("bridge bus: malformed payloads of every family, 30k forged components, 60k unknown topics",
           figures["rss"], None, malformed_sent=figures["sent_malformed"], malformed_dropped=figures["malformed"],
           unknown_dropped=figures["unknown"], components=figures["components"],
           components_refused=figures["refused"], took_s=f"{figures['took_s']:.1f}",
           health=f"{figures['health_before'][0]}->{figures['health_after'][0]} B "
                  f"{figures['health_before'][1]:.1f}->{figures['health_after'][1]:.1f} ms",
           metrics=f"{figures['metrics_before'][0]}->{figures['metrics_after'][0]} B "
                   f"{figures['metrics_before'][1]:.1f}->{figures['metrics_after'][1]:.1f} ms",
           client_ticks=len(ticks), client_longest_tick_gap_ms=f"{longest_gap_ms:.0f}")

    assert figures["malformed"] == figures["sent_malformed"]
    assert 0.99 * 2 * FORGED <= figures["unknown"] <= 2 * FORGED  # see the chunks' comment
    assert figures["refused"] >= 0.99 * FORGED - MAX_COMPONENTS and figures["components"] == MAX_COMPONENTS
    deadline = time.monotonic() + 10  # the engine's own health, once a second, is still heard
    while bridge.health()[1]["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert bridge.health()[1]["status"] == "ok"
    text = json.dumps([data for _, _, data in events])
    assert "hostile" not in text and "FAKE" not in text
    assert str(FORGED_TIME) not in text
    assert all(type(data["bid"]) is float for _, name, data in events if name == "tick")
    assert figures["health_after"][0] < 16_000 and figures["metrics_after"][0] < 160_000
    assert figures["metrics_after"][1] < max(250.0, 5 * figures["metrics_before"][1])
    assert figures["rss"].after - figures["rss"].before <= 50
    assert ticks[-1] - ticks[0] > 1.0 and longest_gap_ms < 1000  # ticks kept flowing during the attack
    log = bridge.output()
    assert "Traceback" not in log and log.count("malformed bus messages dropped") <= 4


def test_tick_lag_is_measured_in_utc_whatever_the_engine_clock(unit_bridge):
    """A broker on UTC+2 stamps ticks two hours ahead of UTC: the bridge's lag figures take the
    engine's ``server_utc_offset_s`` off, instead of reading -7.2e6 ms (clamped to 0)."""
    offset_s = 2 * 3600
    assert unit_bridge.on_bus_message("health:engine:", {**VALID["health:engine:"], "server_utc_offset_s": offset_s})
    assert unit_bridge.server_offset_ms() == offset_s * 1000
    happened = time.time_ns() // 1_000_000 - 250  # 250 ms ago, UTC
    tick = {**VALID[T], "time_msc": happened + offset_s * 1000}
    assert unit_bridge.on_bus_message(T, tick)
    unit_bridge.stats.on_bus(T, tick)  # as the bus reader does for each accepted message
    lag = unit_bridge.stats.engine_lag
    assert sum(lag.counts) == 1 and 0.25 <= lag.total < 5.0
