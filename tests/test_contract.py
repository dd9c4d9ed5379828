"""docs/asyncapi.yaml: generated from the declarations, and real messages of every bus topic,
RPC op and Socket.IO event validate against it (a field the schema does not name fails)."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
import yaml
import zmq
from jsonschema import ValidationError

from bridge.api import EVENTS
from bridge.contract import CHANNELS, PATH, SERVER_EVENTS, render, validator
from engine.client import RpcClient
from engine.protocol import RPC_OPS, decode, encode
from tests.bridge_procs import BridgeProcess, run
from tests.procs import running

SYMBOL = "EURUSD"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(PATH.read_text())


def payload_schema(doc: dict[str, Any], channel: str, message: str):
    return validator(doc, doc["channels"][channel]["messages"][message]["payload"])


def test_the_committed_document_is_the_generated_one():
    assert PATH.read_text() == render(), "run: python -m bridge.contract"


def test_the_document_names_every_topic_kind_op_and_client_event(doc):
    assert doc["asyncapi"].startswith("3.")
    assert {ch["address"].split(":")[0] for name, ch in doc["channels"].items() if name in CHANNELS} == set(CHANNELS)
    rpc = doc["channels"]["rpc"]["messages"]
    assert {name.rsplit("_", 1)[0] for name in rpc} == set(RPC_OPS)
    socket = doc["channels"]["socketio"]["messages"]
    assert {f"client_{e.name}" for e in EVENTS} | {f"server_{e.reply}" for e in EVENTS} <= set(socket)


def test_a_field_the_schema_does_not_name_fails_and_a_missing_one_too(doc):
    tick = {"symbol": SYMBOL, "bid": 1.1, "ask": 1.2, "last": 0.0, "volume": 0, "time_msc": 1, "flags": 6,
            "volume_real": 0.0, "seq": 1, "epoch": 2}
    check = payload_schema(doc, "tick", "tick")
    check.validate(tick)
    with pytest.raises(ValidationError, match="Additional properties are not allowed"):
        check.validate({**tick, "spread": 3})
    with pytest.raises(ValidationError, match="'bid' is a required property"):
        check.validate({k: v for k, v in tick.items() if k != "bid"})
    with pytest.raises(ValidationError, match="is not of type 'integer'"):
        check.validate({**tick, "seq": 1.5})


def collect_bus(engine, seconds: float) -> dict[str, list[dict[str, Any]]]:
    """What every topic kind published on ``engine``'s bus for ``seconds``, then its snapshot."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect(engine.bus)
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sub.poll(100):
                topic, payload = sub.recv_multipart()
                kind = topic.decode().split(":", 1)[0]
                if len(seen[kind]) < 200:
                    seen[kind].append(decode(payload))
    finally:
        sub.close(0)
        ctx.term()
    with RpcClient(engine.rpc) as rpc:
        for topic, payload in rpc.snapshot(""):
            seen[topic.split(":", 1)[0]].append(payload)
    return seen


def test_every_topic_the_engine_and_a_worker_publish_validates(engine, worker, doc):
    seen = collect_bus(engine, 4.0)
    print({kind: len(items) for kind, items in sorted(seen.items())})
    # Deals come only as the demo account trades, orders only while it has a pending one.
    assert set(CHANNELS) - {"deal", "order"} <= set(seen), sorted(seen)
    components = {item["component"] for item in seen["health"]}
    assert {"engine", "indicators:0"} <= components, components
    for kind, items in seen.items():
        check = payload_schema(doc, kind, kind)
        for item in items:
            check.validate(item)


def rpc_calls(engine) -> list[tuple[str, dict[str, Any]]]:
    now_s = int(time.time())
    return [
        ("symbols", {}), ("tick", {"symbol": SYMBOL}), ("tick", {"symbol": "NOPE"}),
        ("candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 50}),
        ("candles", {"symbol": SYMBOL, "timeframe": "M1", "from": now_s - 3600, "to": now_s}),
        ("candles", {"symbol": SYMBOL, "timeframe": "Y1"}), ("candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 0}),
        ("ticks", {"symbol": SYMBOL, "from_msc": (now_s - 60) * 1000, "to_msc": now_s * 1000, "count": 20}),
        ("ticks", {"symbol": SYMBOL, "after_seq": 0, "epoch": 1}),
        ("book", {"symbol": SYMBOL}), ("account", {}), ("positions", {}), ("orders", {"symbol": SYMBOL}),
        ("deals", {"from": now_s - 2 * 86400, "to": now_s}), ("deals", {"to": now_s}),
        ("snapshot", {"prefix": ""}), ("snapshot", {"prefix": 5}), ("health", {}),
        ("replay", {"action": "status"}), ("nope", {}),
    ]


def test_every_rpc_op_and_error_validates(engine, worker, doc):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(engine.rpc)
    outcomes = defaultdict(set)
    try:
        for i, (op, fields) in enumerate(rpc_calls(engine)):
            request = {"op": op, "id": i, **fields}
            sock.send_multipart([b"", encode(request)])
            assert sock.poll(5000), op
            reply = decode(sock.recv_multipart()[-1], 8 << 20)
            assert reply["id"] == i
            payload_schema(doc, "rpc", f"{op if op in RPC_OPS else 'health'}_reply").validate(reply)
            outcome = reply["error"]["code"] if not reply["ok"] else "ok"
            if op in RPC_OPS:  # the request schema refuses exactly what the engine calls bad_request
                valid = payload_schema(doc, "rpc", f"{op}_request").is_valid(request)
                assert valid == (outcome != "bad_request"), (request, reply)
            outcomes[op].add(outcome)
    finally:
        sock.close(0)
        ctx.term()
    print(dict(outcomes))
    assert set(outcomes) == {*RPC_OPS, "nope"}
    assert {"ok", "unknown_symbol"} <= outcomes["tick"] and "unknown_timeframe" in outcomes["candles"]
    assert outcomes["nope"] == {"unknown_op"} and outcomes["replay"] == {"unavailable"}
    assert "bad_request" in outcomes["deals"] and "bad_request" in outcomes["snapshot"]


def test_every_socketio_event_a_client_receives_validates(engine, worker, doc):
    now_s = int(time.time())
    requests = [
        ("subscribe", {"symbol": SYMBOL, "timeframe": "M1"}), ("get_symbols", None),
        ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 20}),
        ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "from": now_s - 600, "to": now_s}),
        ("get_ticks", {"symbol": SYMBOL, "from_msc": (now_s - 30) * 1000, "to_msc": now_s * 1000, "count": 10}),
        ("get_indicators", {"symbol": SYMBOL, "timeframe": "M1", "count": 5}),
        ("get_order_book", {"symbol": SYMBOL}), ("get_account_info", None), ("get_positions", None),
        ("get_orders", {"symbol": SYMBOL}), ("get_deals", {"from": now_s - 86400, "to": now_s}), ("ping", None),
        ("get_candles", {"symbol": "NOPE", "timeframe": "M1"}), ("unsubscribe", {"symbol": SYMBOL}),
    ]
    assert {name for name, _ in requests} == {e.name for e in EVENTS}

    async def scenario(c):
        for event, data in requests:
            await c.call(event, data)
            if event == "subscribe":  # stream events, while the rest is asked
                await c.wait_for("candles", timeout=10)
                await c.wait_for("indicators", timeout=70)
                # A quiet sim can go a second without a EURUSD tick: the last and first pushes
                # above may come sooner (on the subscribe itself).
                await c.wait_for("tick", timeout=10)
        return list(c.events)

    with running(BridgeProcess(engine=engine)) as bridge:
        bridge.wait_health(200, healthy=True)
        events = run(scenario, bridge, timeout=120)
    received = defaultdict(int)
    for _, name, payload in events:
        payload_schema(doc, "socketio", f"server_{name}").validate(payload)
        received[name] += 1
    print(dict(received))
    assert {"connected", "subscribed", "tick", "candles", "indicators", "order_book", "symbols", "ticks",
            "indicators_history", "account_info", "positions", "orders", "deals", "health", "error",
            "unsubscribed", "market_summary"} <= set(received)
    assert set(received) <= set(SERVER_EVENTS)


def test_a_bar_replays_ops_and_frames_validate_and_are_canonical(start_engine, doc, tmp_path):
    """The replay op's replies, and what a full-speed bar replay publishes (ticks from
    ``tick_frames``), against the contract; every frame in msgpack-python's own bytes."""
    from tests.replay_bots import write_bar_export
    from tests.test_int_widths import canonical

    path, _ = write_bar_export(tmp_path, 300)
    engine = start_engine("--source", "replay", "--replay-file", str(path), "--replay-speed", "0",
                          "--replay-start", "paused", "--symbols", SYMBOL)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect(engine.bus)
    seen: dict[str, int] = defaultdict(int)
    try:
        with RpcClient(engine.rpc) as rpc:
            time.sleep(0.5)  # the subscription reaches the bus before the replay starts
            replies = [rpc.call("replay", action=action) for action in ("status", "start")]
            deadline = time.monotonic() + 20
            finished = False
            while time.monotonic() < deadline and not finished:
                # Then what is still on its way (a short file plays in one batch).
                finished = rpc.call("replay", action="status")["state"] == "finished"
                while sub.poll(200 if finished else 10):
                    topic, frame = sub.recv_multipart()
                    kind = topic.decode().split(":", 1)[0]
                    payload_schema(doc, kind, kind).validate(decode(frame))
                    assert frame == canonical(frame), topic
                    seen[kind] += 1
            replies.append(rpc.call("replay", action="status"))
    finally:
        sub.close()
        ctx.term()
    check = payload_schema(doc, "rpc", "replay_reply")
    for reply in replies:
        check.validate({"ok": True, "data": reply})
    print(dict(seen), [r["state"] for r in replies])
    assert [r["state"] for r in replies] == ["ready", "playing", "finished"] and seen["tick"] >= 300
