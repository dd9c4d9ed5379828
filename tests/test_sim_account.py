"""The sim's demo account: deterministic trading whose equity follows the published quotes."""
from __future__ import annotations

import pytest

from engine.activity import by_ticket, changes
from engine.client import RpcClient
from engine.protocol import ErrorCode, RpcError
from engine.service import EngineService
from engine.sources.sim import SimSource
from engine.sources.sim_account import DAY_S, DEMO_BALANCE, SLOT_S
from tests.procs import collect, engine_config, engine_thread, subscriber

SYMBOLS = ("EURUSD", "USDJPY", "XAUUSD")
START_MS = 1_767_225_600_000 + 9 * 3600 * 1000  # 2026-01-01 09:00 UTC


def sim(start_ms: int = START_MS, seed: int = 42) -> SimSource:
    source = SimSource(SYMBOLS, seed=seed, rate=50, clock_ms=start_ms)
    source.start()
    return source


def test_equity_is_balance_plus_the_positions_profit_at_the_published_quotes() -> None:
    source = sim()
    now = START_MS
    checked = 0
    for _ in range(120):  # six hours of market time, a look every three minutes
        now += SLOT_S * 1000
        source.poll(now)  # the ticks published up to now
        activity = source.activity(now)
        account = source.account(now)
        for p in activity.positions:
            tick = source.last_tick(p["symbol"])
            assert p["price_current"] == (tick.bid if p["type"] == 0 else tick.ask)
            checked += 1
        profit = round(sum(p["profit"] for p in activity.positions), 2)
        assert account["profit"] == profit
        assert account["equity"] == round(account["balance"] + profit, 2)
        assert account["margin_free"] == round(account["equity"] - account["margin"], 2)
    assert checked > 50


def test_the_account_trades_opens_modifies_closes_and_books_each_deal_once() -> None:
    source = sim()
    now = START_MS
    before = by_ticket(source.activity(now).positions)
    states, deals = [], []
    for _ in range(200):
        now += 60_000
        activity = source.activity(now)
        after = by_ticket(activity.positions)
        states += [c["state"] for c in changes(before, after)]
        deals += activity.deals
        before = after
    assert {"open", "modified", "closed"} <= set(states)
    tickets = [d["ticket"] for d in deals]
    assert tickets == sorted(set(tickets))  # once each, in order
    assert {d["entry"] for d in deals} == {0, 1}
    # The deals streamed are the deals the history answers for the same span.
    again = source.deal_range(START_MS // 1000 + 1, now // 1000, None, 10_000)
    assert [d["ticket"] for d in again] == tickets
    # Realised profit moved the balance by exactly the deals' profits.
    day_start = START_MS // 1000 // DAY_S * DAY_S
    today = source.deal_range(day_start, now // 1000, None, 10_000)
    assert source.account(now)["balance"] == round(sum(d["profit"] for d in today), 2)
    assert today[0]["profit"] == DEMO_BALANCE and today[0]["symbol"] == ""  # the day's deposit


def test_across_midnight_the_stream_has_the_days_last_deals_then_the_new_days_deposit() -> None:
    evening = START_MS + 14 * 3600 * 1000 + 50 * 60_000  # 23:50
    source = sim(evening)
    source.activity(evening)
    deals = []
    for minute in range(1, 21):  # to 00:10
        deals += source.activity(evening + minute * 60_000).deals
    midnight = (evening // 1000 // DAY_S + 1) * DAY_S * 1000
    before = [d for d in deals if d["time_msc"] < midnight]
    after = [d for d in deals if d["time_msc"] >= midnight]
    assert before and all(d["entry"] == 1 for d in before if d["time_msc"] == midnight - SLOT_S * 1000)
    assert after[0]["profit"] == DEMO_BALANCE and after[0]["time_msc"] == midnight
    history = source.deal_range(evening // 1000, midnight // 1000 + 600, None, 10_000)
    assert [d["ticket"] for d in history] == [d["ticket"] for d in deals]


def test_a_restarted_sim_has_the_same_positions_orders_and_tickets() -> None:
    later = START_MS + 5 * 3600 * 1000
    first, second = sim(), sim(later)
    for k in range(1, 101):
        first.activity(START_MS + k * 180_000)
    a, b = first.activity(later), second.activity(later)
    key = ("ticket", "symbol", "type", "volume", "price_open", "sl", "tp")
    assert [tuple(p[k] for k in key) for p in a.positions] == [tuple(p[k] for k in key) for p in b.positions]
    assert a.orders == b.orders
    assert a.positions or a.orders
    other = sim(later, seed=7).activity(later)
    assert [p["ticket"] for p in other.positions] != [p["ticket"] for p in a.positions] or other.orders != a.orders


def test_history_back_fills_yesterday_and_the_day_is_flat_at_its_end() -> None:
    source = sim()
    day_start = START_MS // 1000 // DAY_S * DAY_S
    yesterday = source.deal_range(day_start - DAY_S, day_start - 1, None, 10_000)
    assert len(yesterday) > 100
    opened = sum(d["volume"] for d in yesterday if d["entry"] == 0)
    closed = sum(d["volume"] for d in yesterday if d["entry"] == 1)
    assert round(opened, 2) == round(closed, 2)  # every position closed by the day's end
    assert source.deal_range(day_start - 3 * DAY_S, day_start - 2 * DAY_S, None, 10) == []
    only = source.deal_range(day_start - DAY_S, day_start - 1, "USDJPY", 10_000)
    assert only and {d["symbol"] for d in only} == {"USDJPY"}


@pytest.fixture
def sim_engine(zmq_ctx):
    cfg = engine_config(symbols=",".join(SYMBOLS), rate="50", account_interval_ms="50",
                        account_snapshot_ms="300", health_interval_ms="50")
    source = SimSource(SYMBOLS, seed=cfg.seed, rate=50)
    with engine_thread(EngineService(cfg, source, zmq_ctx)):
        yield cfg


def test_the_engine_publishes_the_open_set_and_answers_for_it(sim_engine, zmq_ctx) -> None:
    bus = subscriber(zmq_ctx, sim_engine.bus_endpoint, b"position:", b"order:")
    with RpcClient(sim_engine.rpc_endpoint, ctx=zmq_ctx) as rpc:
        positions = rpc.call("positions")
        orders = rpc.call("orders")
        snapshot = rpc.snapshot("position:") + rpc.snapshot("order:")
        account = rpc.account()
    assert positions or orders  # a demo account trading since midnight
    assert sorted((m["ticket"], m["seq"]) for _, m in snapshot) == sorted(
        (m["ticket"], m["seq"]) for m in positions + orders)
    assert all(topic == f"{'position' if 'identifier' in m else 'order'}:{m['symbol']}:" for topic, m in snapshot)
    assert all(m["state"] in ("open", "modified") for m in positions + orders)
    assert account["margin"] > 0 if positions else account["margin"] == 0
    # The open set is published again every ACCOUNT_SNAPSHOT_MS: a late subscriber gets it all.
    tickets = {m["ticket"] for m in positions + orders}
    seen = collect(bus, lambda ms: tickets <= {m["ticket"] for _, m in ms}, 5)
    assert tickets <= {m["ticket"] for _, m in seen}


def test_account_streams_off_keeps_the_activity_off_the_bus_and_the_rpc(zmq_ctx) -> None:
    cfg = engine_config(symbols="EURUSD", rate="50", account_interval_ms="20", account_streams="0",
                        health_interval_ms="50")
    with engine_thread(EngineService(cfg, SimSource(("EURUSD",), seed=cfg.seed, rate=50), zmq_ctx)):
        bus = subscriber(zmq_ctx, cfg.bus_endpoint, b"position:", b"order:", b"deal:", b"health:engine:")
        collect(bus, lambda ms: any(t.startswith(b"health") for t, _ in ms), 5)  # subscription live
        seen = collect(bus, lambda ms: False, 1.0)
        with RpcClient(cfg.rpc_endpoint, ctx=zmq_ctx) as rpc:
            for op, params in (("positions", {}), ("orders", {}), ("deals", {"from": 0, "to": 1})):
                with pytest.raises(RpcError) as err:
                    rpc.call(op, **params)
                assert err.value.code == ErrorCode.UNAVAILABLE and "ACCOUNT_STREAMS" in err.value.message
            assert rpc.snapshot("position:") == []
    assert [t for t, _ in seen if not t.startswith(b"health")] == []


def test_the_core_position_is_held_all_day_but_its_last_slot() -> None:
    day_start = START_MS // 1000 // DAY_S * DAY_S
    for minutes in (0, 1, 59, 600, 1000, 1436):
        at = (day_start + minutes * 60) * 1000
        positions = sim(at).activity(at).positions
        assert positions and positions[0]["symbol"] == SYMBOLS[0], minutes  # sorted names: EURUSD first
    last_slot = (day_start + DAY_S - SLOT_S) * 1000
    assert sim(last_slot).activity(last_slot).positions == ()
