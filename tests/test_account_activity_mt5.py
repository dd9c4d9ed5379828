"""Account activity from an MT5 terminal (the stand-in) through the engine: positions, orders
and deals on the bus and over RPC, across a lost terminal, on a server clock ahead of UTC."""
from __future__ import annotations

import time

import pytest
import zmq

from engine.activity import DEALS, ORDERS, POSITIONS
from engine.client import RpcClient
from engine.protocol import ErrorCode, RpcError
from engine.service import EngineService
from engine.sources.mt5 import MT5Source
from tests.mt5_standin import MT5StandIn
from tests.mt5_trading import ORDER_TYPE_BUY_LIMIT, POSITION_TYPE_BUY, POSITION_TYPE_SELL
from tests.procs import collect, engine_config, engine_thread, subscriber

SERVER_AHEAD_MS = 2 * 3600 * 1000  # the broker's clock: UTC+2, as most FX servers in winter
ACTIVITY = (b"position:", b"order:", b"deal:")


@pytest.fixture
def terminal() -> MT5StandIn:
    terminal = MT5StandIn()
    terminal.add_symbol("EURUSD", 5, currency_base="EUR", currency_profit="USD")
    terminal.add_symbol("USDJPY", 3, currency_base="USD", currency_profit="JPY")
    now = server_now()
    terminal.add_tick("EURUSD", now - 10, 1.1000, 1.1002)
    terminal.add_tick("USDJPY", now - 10, 150.00, 150.02)
    # Before the engine starts: a deposit and a closed trade (history, not stream).
    terminal.trades.deposit(now - 60_000, 5_000.0)
    old = terminal.trades.open_position(now - 50_000, "EURUSD", POSITION_TYPE_BUY, 1.0, 1.0990)
    terminal.trades.close_position(now - 40_000, old, 1.0995)
    return terminal


@pytest.fixture
def engine(terminal, zmq_ctx):
    cfg = engine_config(environ={"MT5_PASSWORD": terminal.password}, source="mt5", symbols="EURUSD,USDJPY",
                        timeframes="M1", mt5_login="5001234", mt5_poll_ms="2", account_interval_ms="20",
                        account_snapshot_ms="600000", health_interval_ms="50")
    source = MT5Source(cfg, terminal, backoff_initial_s=0.05, backoff_max_s=0.2, terminal_check_s=0.05)
    with engine_thread(EngineService(cfg, source, zmq_ctx), open_timeout=10):
        bus = subscriber(zmq_ctx, cfg.bus_endpoint, *ACTIVITY, b"health:engine:")
        collect(bus, lambda ms: any(t.startswith(b"health") for t, _ in ms), 5)  # subscription live
        with RpcClient(cfg.rpc_endpoint, ctx=zmq_ctx) as rpc:
            yield cfg, bus, rpc


def server_now() -> int:
    return time.time_ns() // 1_000_000 + SERVER_AHEAD_MS


def activity(bus: zmq.Socket, until, seconds: float = 5.0) -> list:
    return [(t.decode(), m) for t, m in collect(bus, until, seconds) if t.startswith(ACTIVITY)]


def test_each_change_once_and_each_deal_exactly_once_in_order_across_a_lost_terminal(terminal, engine) -> None:
    cfg, bus, rpc = engine
    trades = terminal.trades
    seen = []

    def step(action, until) -> None:
        action()
        seen.extend(activity(bus, until))

    t = server_now()
    state = {}
    step(lambda: state.update(a=trades.open_position(t, "EURUSD", POSITION_TYPE_BUY, 2.0, 1.1002)),
         lambda ms: any(topic.startswith(b"deal") for topic, _ in ms))
    a = state["a"]
    step(lambda: trades.modify_position(t + 10, a, sl=1.0950, tp=1.1100),
         lambda ms: any(m.get("sl") == 1.095 for _, m in ms))
    step(lambda: trades.close_position(t + 20, a, 1.1010, volume=0.5),
         lambda ms: any(m.get("volume") == 1.5 for _, m in ms))
    terminal.drop_ipc()
    time.sleep(0.3)
    # While the terminal is lost: a pending order is placed and the position is closed.
    order = trades.place_order(t + 30, "USDJPY", ORDER_TYPE_BUY_LIMIT, 1.0, 149.50)
    trades.close_position(t + 40, a, 1.1020)
    step(terminal.restore_ipc, lambda ms: any(m.get("state") == "closed" for _, m in ms)
         and any(topic.startswith(b"order") for topic, _ in ms))
    step(lambda: trades.cancel_order(order), lambda ms: any(m.get("state") == "closed" for _, m in ms))
    seen.extend(activity(bus, lambda ms: False, 0.3))  # nothing more comes

    positions = [(m["ticket"], m["state"], m["volume"], m["sl"]) for topic, m in seen if topic == "position:EURUSD:"]
    assert positions == [(a, "open", 2.0, 0.0), (a, "modified", 2.0, 1.095), (a, "modified", 1.5, 1.095),
                         (a, "closed", 1.5, 1.095)]
    orders = [(m["ticket"], m["state"], m["order_state"]) for topic, m in seen if topic == "order:USDJPY:"]
    assert orders == [(order, "open", 1), (order, "closed", 1)]
    deals = [m for topic, m in seen if topic == "deal:EURUSD:"]
    expected = [DEALS.record(d) for d in trades.deals(t // 1000, t // 1000 + 60)]
    assert [{k: d[k] for k in expected[0]} for d in deals] == expected  # each once, in order
    assert [(d["entry"], d["volume"]) for d in deals] == [(0, 2.0), (1, 0.5), (1, 1.5)]
    assert [d["seq"] for d in deals] == [1, 2, 3]  # the history before the start is not streamed
    assert all(topic.count(":") == 2 for topic, _ in seen)


def test_rpc_answers_equal_the_terminals_own_state(terminal, engine) -> None:
    cfg, bus, rpc = engine
    trades = terminal.trades
    t = server_now()
    b = trades.open_position(t, "EURUSD", POSITION_TYPE_SELL, 0.3, 1.1000, tp=1.09)
    c = trades.open_position(t + 1, "USDJPY", POSITION_TYPE_BUY, 1.0, 150.02)
    o = trades.place_order(t + 2, "EURUSD", ORDER_TYPE_BUY_LIMIT, 0.1, 1.0900)
    activity(bus, lambda ms: sum(topic.startswith(b"position") for topic, _ in ms) >= 2
             and any(topic.startswith(b"order") for topic, _ in ms))

    def fields(records, kind):
        return [{k: r[k] for k in kind.fields} for r in records]

    assert fields(rpc.call("positions"), POSITIONS) == [POSITIONS.record(p) for p in trades.positions()]
    assert [p["ticket"] for p in rpc.call("positions", symbol="USDJPY")] == [c]
    assert rpc.call("positions", symbol="XAUUSD") == []  # never traded: empty, not an error
    assert fields(rpc.call("orders"), ORDERS) == [ORDERS.record(x) for x in trades.orders()]
    assert [x["ticket"] for x in rpc.call("orders", symbol="EURUSD")] == [o]
    everything = rpc.call("deals", **{"from": 0, "to": t // 1000 + 3600})
    assert [d["ticket"] for d in everything] == [d.ticket for d in trades.deals(0, 2**40)]
    assert [d["symbol"] for d in everything][:1] == [""]  # the deposit: a deal with no symbol
    only = rpc.call("deals", symbol="USDJPY", **{"from": 0, "to": t // 1000 + 3600})
    assert [d["position_id"] for d in only] == [c]
    assert b in {p["ticket"] for p in rpc.call("positions")}
    # The snapshot of position: holds every open position, not one per topic.
    snap = rpc.snapshot("position:")
    assert sorted(m["ticket"] for _, m in snap) == sorted([b, c])
    # Account equity follows the positions at the terminal's quotes.
    account = rpc.account()
    assert account["equity"] == pytest.approx(account["balance"] + trades.profit())


def test_bad_activity_requests_get_a_clear_error(engine) -> None:
    _, _, rpc = engine
    for op, params, says in [
        ("deals", {"from": 20, "to": 10}, "'from' (20) is after 'to' (10)"),
        ("deals", {"from": 10}, "'from' and 'to' go together"),
        ("deals", {}, "'deals' takes 'from' and 'to'"),
        ("deals", {"from": 0, "to": 10, "symbol": 5}, "'symbol': symbol must be a non-empty string"),
        ("positions", {"symbol": "a:b"}, "contains ':'"),
        ("orders", {"symbol": ""}, "non-empty"),
    ]:
        with pytest.raises(RpcError) as err:
            rpc.call(op, **params)
        assert err.value.code == ErrorCode.BAD_REQUEST and says in err.value.message, (op, params)


def test_a_failed_call_keeps_the_positions_and_the_stream_goes_on(terminal, engine) -> None:
    cfg, bus, rpc = engine
    trades = terminal.trades
    t = server_now()
    a = trades.open_position(t, "EURUSD", POSITION_TYPE_BUY, 1.0, 1.1002)
    activity(bus, lambda ms: any(topic.startswith(b"deal") for topic, _ in ms))
    terminal.fail_next("positions_get", times=3)
    terminal.fail_next("history_deals_get", times=3)
    time.sleep(0.2)
    trades.close_position(t + 5, a, 1.1004)
    seen = activity(bus, lambda ms: any(topic.startswith(b"deal") for topic, _ in ms))
    states = [m["state"] for topic, m in seen if topic.startswith("position")]
    assert states == ["closed"]  # not closed by a failed read, then reopened
    assert [m["entry"] for topic, m in seen if topic.startswith("deal")] == [1]
    terminal.fail_next("history_deals_get")
    with pytest.raises(RpcError) as err:
        rpc.call("deals", **{"from": 0, "to": 1})
    assert err.value.code == ErrorCode.UNAVAILABLE and "history_deals_get" in err.value.message
