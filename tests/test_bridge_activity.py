"""Account activity over Socket.IO: positions, orders and deals from an MT5 terminal (the
stand-in) through the engine and a bridge to web clients."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from engine.activity import DEALS, POSITIONS
from engine.service import EngineService
from engine.sources.mt5 import MT5Source
from tests.bridge_procs import BridgeProcess, run
from tests.mt5_standin import MT5StandIn
from tests.mt5_trading import ORDER_TYPE_SELL_LIMIT, POSITION_TYPE_BUY, POSITION_TYPE_SELL
from tests.procs import engine_config, engine_thread, running

SERVER_AHEAD_MS = 2 * 3600 * 1000  # a broker on UTC+2


def server_now() -> int:
    return time.time_ns() // 1_000_000 + SERVER_AHEAD_MS


@pytest.fixture
def terminal() -> MT5StandIn:
    terminal = MT5StandIn()
    terminal.add_symbol("EURUSD", 5, currency_base="EUR", currency_profit="USD")
    terminal.add_symbol("XAUUSD", 2, currency_base="XAU", currency_profit="USD", contract_size=100.0)
    now = server_now()
    terminal.add_tick("EURUSD", now - 10, 1.1000, 1.1002)
    terminal.add_tick("XAUUSD", now - 10, 2350.10, 2350.40)
    terminal.trades.deposit(now - 60_000, 1_000.0)
    terminal.trades.open_position(now - 30_000, "EURUSD", POSITION_TYPE_BUY, 0.5, 1.0990)
    return terminal


@pytest.fixture
def bridge(terminal, zmq_ctx):
    # The engine serves EURUSD only; the account also trades gold.
    cfg = engine_config(environ={"MT5_PASSWORD": terminal.password}, source="mt5", symbols="EURUSD",
                        timeframes="M1", mt5_login="5001234", mt5_poll_ms="2", account_interval_ms="20",
                        account_snapshot_ms="600000", health_interval_ms="100")
    source = MT5Source(cfg, terminal, backoff_initial_s=0.05, backoff_max_s=0.2, terminal_check_s=0.05)
    with engine_thread(EngineService(cfg, source, zmq_ctx), open_timeout=10):
        engine = SimpleNamespace(bus=cfg.bus_endpoint, rpc=cfg.rpc_endpoint)
        with running(BridgeProcess(["--timeframes", "M1"], engine=engine)) as proc:
            proc.wait_health(200, healthy=True)
            yield proc


def test_clients_get_positions_orders_and_deals_as_they_happen(terminal, bridge) -> None:
    trades = terminal.trades

    async def scenario(client) -> None:
        first = await client.call("get_positions")
        assert [p["symbol"] for p in first["positions"]] == ["EURUSD"]
        assert "seq" not in first["positions"][0]
        assert (await client.call("get_orders"))["orders"] == []
        t = server_now()
        gold = trades.open_position(t, "XAUUSD", POSITION_TYPE_SELL, 0.1, 2350.10)
        opened = await client.wait_for("position_update", lambda p: p["ticket"] == gold)
        assert opened["state"] == "open" and opened["symbol"] == "XAUUSD"  # not a served symbol: still the account's
        deal = await client.wait_for("deal", lambda d: d["position_id"] == gold)
        assert {k: deal[k] for k in DEALS.fields} == DEALS.record(trades.deals(t // 1000, t // 1000 + 1)[-1])
        order = trades.place_order(t + 1, "EURUSD", ORDER_TYPE_SELL_LIMIT, 0.2, 1.1050)
        placed = await client.wait_for("order_update", lambda o: o["ticket"] == order)
        assert placed["state"] == "open" and placed["price_open"] == 1.105
        trades.close_position(t + 2, gold, 2349.90)
        closed = await client.wait_for("position_update", lambda p: p["ticket"] == gold and p["state"] == "closed")
        assert closed["volume"] == 0.1
        out = await client.wait_for("deal", lambda d: d["position_id"] == gold and d["entry"] == 1)
        assert out["profit"] == pytest.approx(2.0)
        # The bridge's cache follows the topics.
        now = await client.call("get_positions")
        assert [p["ticket"] for p in now["positions"]] == [p.ticket for p in trades.positions()]
        assert {k: now["positions"][0][k] for k in POSITIONS.fields if k not in ("price_current", "profit")} == {
            k: v for k, v in POSITIONS.record(trades.positions()[0]).items() if k not in ("price_current", "profit")}
        mine = await client.call("get_orders", {"symbol": "EURUSD"})
        assert [o["ticket"] for o in mine["orders"]] == [order]
        assert (await client.call("get_orders", {"symbol": "XAUUSD"}))["orders"] == []
        history = await client.call("get_deals", {"from": 0, "to": t // 1000 + 60})
        assert [d["ticket"] for d in history["deals"]] == [d.ticket for d in trades.deals(0, 2**40)]
        assert history["deals"][0]["symbol"] == ""  # the deposit
        gold_only = await client.call("get_deals", {"from": 0, "to": t // 1000 + 60, "symbol": "XAUUSD"})
        assert [d["entry"] for d in gold_only["deals"]] == [0, 1]
        # Each deal was pushed once.
        assert len([d for d in client.of("deal") if d["position_id"] == gold]) == 2

    run(scenario, bridge)


def test_bad_activity_requests_get_a_clear_error_and_the_stream_goes_on(terminal, bridge) -> None:
    async def scenario(client) -> None:
        for event, data, says in [
            ("get_deals", {"from": 20, "to": 10}, "'from' (20) is after 'to' (10)"),
            ("get_deals", {"from": 10}, "'to' is required"),
            ("get_deals", {}, "'from' is required"),
            ("get_positions", {"symbol": 7}, "symbol"),
            ("get_orders", {"ticket": 1}, "unexpected field"),
        ]:
            reply = await client.call(event, data)
            assert reply["code"] == "bad_request" and says in reply["message"], (event, data, reply)
        t = server_now()
        ticket = terminal.trades.open_position(t, "EURUSD", POSITION_TYPE_BUY, 0.01, 1.1002)
        await client.wait_for("deal", lambda d: d["position_id"] == ticket)

    run(scenario, bridge)
