"""The Socket.IO API against a real engine, indicator worker and bridge (python-socketio AsyncClient)."""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np
import pytest
import talib

from tests.bridge_procs import DELIVERY_PATHS, BridgeProcess, BusInjector, Recorder, delivery_env, run
from tests.procs import running

SYMBOL = "EURUSD"


@pytest.fixture(scope="module", params=DELIVERY_PATHS)
def bridge(request, engine, worker):
    """The bridge on each delivery path (BRIDGE_FAST_PATH=1 and 0): every test runs on both."""
    # H4 is allowed here though the engine does not publish it: a room only injected values reach.
    with running(BridgeProcess(["--timeframes", "M1,M5,M15,H1,H4"], engine=engine,
                               env=delivery_env(request.param))) as proc:
        assert proc.health()[1]["delivery"] == request.param
        yield proc


def test_connected_is_the_first_event_with_sid_time_and_version(bridge):
    async def scenario(c):
        data = await c.wait_for("connected")
        assert c.events[0][1] == "connected"
        assert data["sid"] == c.sio.get_sid()
        assert abs(data["server_time"] - c.events[0][0] * 1000) < 5000
        assert data["version"]
    run(scenario, bridge)


def test_every_request_answers_with_its_event_and_the_same_acknowledgement(bridge):
    async def scenario(c):
        cases = [
            ("get_symbols", None, "symbols"),
            ("get_candles", {"symbol": SYMBOL, "timeframe": "M5", "count": 10}, "candles"),
            ("get_indicators", {"symbol": SYMBOL, "timeframe": "M5", "count": 10}, "indicators_history"),
            ("get_order_book", {"symbol": SYMBOL}, "order_book"),
            ("get_account_info", None, "account_info"),
            ("ping", None, "health"),
            ("subscribe", {"symbol": "GBPUSD"}, "subscribed"),
            ("unsubscribe", {"symbol": "GBPUSD"}, "unsubscribed"),
        ]
        for request, data, reply in cases:
            mark = len(c.events)
            ack = await c.call(request, data)
            event = await c.wait_for(reply, after=mark)
            if reply == "health":  # figures move between the two; the shape is the same
                assert set(ack) == set(event) and ack["status"] == "ok"
            else:
                assert ack == event, request
        return True
    assert run(scenario, bridge)


def test_symbols_list_names_digits_point_description(bridge):
    async def scenario(c):
        return await c.call("get_symbols")
    symbols = run(scenario, bridge)
    names = [s["name"] for s in symbols]
    assert names == ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"]
    eurusd = symbols[0]
    assert eurusd["digits"] == 5 and eurusd["point"] == 1e-05 and eurusd["description"]


def test_get_candles_returns_count_bars_oldest_first_then_serves_from_cache(bridge):
    async def scenario(c):
        first = await c.call("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 50})
        before = bridge.health()[1]["stats"]
        again = await c.call("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 20})
        after = bridge.health()[1]["stats"]
        return first, again, before, after
    first, again, before, after = run(scenario, bridge)
    assert first["symbol"] == SYMBOL and first["timeframe"] == "M1"
    bars = first["candles"]
    assert len(bars) == 50 and [b["time"] for b in bars] == sorted(b["time"] for b in bars)
    assert bars[-1]["closed"] is False and all(b["closed"] for b in bars[:-1])
    assert {"open", "high", "low", "close", "tick_volume", "spread"} <= set(bars[0])
    assert len(again["candles"]) == 20 and again["candles"][0]["time"] == bars[-20]["time"]
    assert after["cache_hits"] == before["cache_hits"] + 1
    assert after["cache_misses"] == before["cache_misses"]


def test_get_indicators_gives_warm_values_for_the_get_candles_bars_and_the_forming_bar_last(bridge):
    async def scenario(c):
        values = await c.call("get_indicators", {"symbol": SYMBOL, "timeframe": "H1", "count": 100})
        candles = await c.call("get_candles", {"symbol": SYMBOL, "timeframe": "H1", "count": 1000})
        return values, candles["candles"]
    reply, bars = run(scenario, bridge)
    assert reply["symbol"] == SYMBOL and reply["timeframe"] == "H1"
    values = reply["values"]
    assert [v["time"] for v in values] == [b["time"] for b in bars[-100:]]
    assert [v["closed"] for v in values] == [True] * 99 + [False]
    assert all(v["symbol"] == SYMBOL and v["timeframe"] == "H1" for v in values)
    fields = ("sma", "ema", "rsi", "macd", "macd_signal", "macd_hist")
    assert all(v[k] is not None for v in values for k in fields), "the first bars shown are warmed up too"
    # Computed over the same 1000 bars of history as the worker warms from: TA-Lib's numbers.
    closes = np.array([b["close"] for b in bars if b["closed"]])
    macd, signal, hist = talib.MACD(closes)
    expected = (talib.SMA(closes, 20), talib.EMA(closes, 20), talib.RSI(closes, 14), macd, signal, hist)
    for k, value in enumerate(values[:-1]):
        i = len(closes) - 99 + k
        assert [value[f] for f in fields] == [float(column[i]) for column in expected], value["time"]


def test_concurrent_candle_requests_on_a_cold_cache_make_one_engine_request(bridge):
    async def scenario(c):
        before = (await asyncio.to_thread(bridge.health))[1]["stats"]["candle_fetches"]
        replies = await asyncio.gather(*(c.call("get_candles", {"symbol": "BTCUSD", "timeframe": "M15", "count": n})
                                         for n in (5, 10, 20, 30)))
        after = (await asyncio.to_thread(bridge.health))[1]["stats"]["candle_fetches"]
        return replies, after - before
    replies, fetches = run(scenario, bridge)
    assert [len(r["candles"]) for r in replies] == [5, 10, 20, 30]
    assert replies[0]["candles"] == replies[3]["candles"][-5:]
    assert fetches == 1


def test_subscribed_client_gets_ticks_candles_books_and_indicators_of_its_symbol_only(bridge):
    async def scenario(c):
        await c.call("subscribe", {"symbol": SYMBOL, "timeframe": "M1"})
        tick = await c.wait_for("tick")
        candles = await c.wait_for("candles", lambda d: d["timeframe"] == "M1")
        book = await c.wait_for("order_book")
        values = await c.wait_for("indicators", timeout=10)
        return tick, candles, book, values, c.events
    tick, candles, book, values, events = run(scenario, bridge)
    assert tick["symbol"] == SYMBOL and tick["ask"] >= tick["bid"] > 0 and "seq" not in tick
    assert set(tick) >= {"bid", "ask", "last", "volume", "time_msc", "flags", "volume_real"}
    assert candles["symbol"] == SYMBOL and candles["candles"][-1]["symbol"] == SYMBOL
    assert book["symbol"] == SYMBOL and book["bids"] and book["asks"]
    assert values["symbol"] == SYMBOL and values["timeframe"] == "M1"
    assert {"sma", "ema", "rsi", "macd", "macd_signal", "macd_hist", "closed", "time"} <= set(values)
    streamed = [d for _, e, d in events if e in ("tick", "order_book", "indicators")]
    assert all(d["symbol"] == SYMBOL for d in streamed)


def test_at_most_one_tick_per_symbol_per_flush(bridge):
    async def scenario(c):
        for symbol in ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD"):
            await c.call("subscribe", {"symbol": symbol})
        await asyncio.sleep(0.3)
        before = (await asyncio.to_thread(bridge.health))[1]["stats"]["conflated"]
        mark, started = len(c.events), time.monotonic()
        await asyncio.sleep(2.0)
        elapsed = time.monotonic() - started
        after = (await asyncio.to_thread(bridge.health))[1]["stats"]["conflated"]
        ticks = Counter(d["symbol"] for _, e, d in c.events[mark:] if e == "tick")
        return ticks, elapsed, after - before
    ticks, elapsed, conflated = run(scenario, bridge)
    assert len(ticks) == 5 and sum(ticks.values()) > 40
    flushes = elapsed / 0.050 + 2  # this client's flushes in the window, at most
    assert all(n <= flushes for n in ticks.values()), ticks
    assert conflated > 0  # ticks that arrived within one flush were replaced by the latest


def test_unsubscribe_stops_updates(bridge):
    async def scenario(c):
        await c.call("subscribe", {"symbol": SYMBOL})
        await c.wait_for("tick")
        await c.call("unsubscribe", {"symbol": SYMBOL})
        await asyncio.sleep(0.2)  # a flush already on its way may still land
        mark = len(c.events)
        await asyncio.sleep(1.0)
        return [e for _, e, _ in c.events[mark:]]
    assert not {"tick", "order_book"} & set(run(scenario, bridge))


STREAMS = ("tick", "order_book", "candles", "indicators")


async def window(c: Recorder, seconds: float) -> Counter:
    """The stream events of ``seconds``, after a flush already on its way has landed, counted by
    (event, symbol, timeframe)."""
    await asyncio.sleep(0.3)
    mark = len(c.events)
    await asyncio.sleep(seconds)
    return Counter((e, d["symbol"], d.get("timeframe")) for _, e, d in c.events[mark:] if e in STREAMS)


def of_symbol(seen: Counter, symbol: str = SYMBOL) -> set[tuple[str, str | None]]:
    return {(event, tf) for event, s, tf in seen if s == symbol}


def test_unsubscribe_with_the_payload_of_the_subscribe_stops_everything_it_started(bridge):
    """The issue's case: ``subscribe {EURUSD, M1}`` then ``unsubscribe`` with the same payload
    kept EURUSD ticks flowing (17 in the next 1.5 s)."""
    async def scenario(c):
        await c.call("subscribe", {"symbol": "GBPUSD"})  # stays: shows the stream went on meanwhile
        await c.call("subscribe", {"symbol": SYMBOL, "timeframe": "M1"})
        for event in STREAMS:
            await c.wait_for(event, lambda d: d["symbol"] == SYMBOL, timeout=10)
        ack = await c.call("unsubscribe", {"symbol": SYMBOL, "timeframe": "M1"})
        return ack, await window(c, 1.5)
    ack, seen = run(scenario, bridge)
    print(f"after the mirrored unsubscribe, 1.5 s: {dict(seen)}")
    assert ack == {"symbol": SYMBOL, "timeframe": "M1"}
    assert of_symbol(seen) == set(), seen
    assert seen[("tick", "GBPUSD", None)] >= 3


def test_after_each_unsubscribe_exactly_what_the_remaining_subscriptions_name_streams(bridge):
    async def scenario(c):
        async def change(event, timeframe):
            await c.call(event, {"symbol": SYMBOL, "timeframe": timeframe})

        for tf in ("M1", "M5"):
            await change("subscribe", tf)
            await c.wait_for("indicators", lambda d: d["timeframe"] == tf, timeout=10)
        seen = []
        for tf in ("M1", "M5"):
            await change("unsubscribe", tf)
            seen.append(of_symbol(await window(c, 1.0)))
        for tf in (None, "M1"):
            await change("subscribe", tf)
        await c.wait_for("indicators", lambda d: d["timeframe"] == "M1", after=len(c.events), timeout=10)
        await change("unsubscribe", "M1")
        seen.append(of_symbol(await window(c, 1.0)))
        return seen
    after_m1, after_m5, symbol_left = run(scenario, bridge)
    print(f"streams left: after M1 {sorted(after_m1)}; after M5 {sorted(after_m5)}; "
          f"{{symbol}} and M1, after M1 {sorted(symbol_left)}")
    assert after_m1 == {("tick", None), ("order_book", None), ("candles", "M5"), ("indicators", "M5")}
    assert after_m5 == set()
    assert symbol_left == {("tick", None), ("order_book", None)}  # {symbol} alone still names it


def test_unsubscribe_without_timeframe_removes_every_subscription_of_the_symbol(bridge):
    async def scenario(c):
        for tf in ("M1", "M5"):
            await c.call("subscribe", {"symbol": SYMBOL, "timeframe": tf})
        await c.wait_for("candles", lambda d: d["timeframe"] == "M5")
        await c.call("unsubscribe", {"symbol": SYMBOL})
        gone = of_symbol(await window(c, 1.0))
        await c.call("subscribe", {"symbol": SYMBOL, "timeframe": "M1"})  # M5 does not come back with it
        return gone, of_symbol(await window(c, 1.0))
    gone, again = run(scenario, bridge)
    print(f"after unsubscribe {{symbol}}: {sorted(gone)}; after subscribing M1 again: {sorted(again)}")
    assert gone == set()
    assert again == {("tick", None), ("order_book", None), ("candles", "M1"), ("indicators", "M1")}


def test_account_update_and_market_summary_reach_every_client(bridge):
    async def scenario(c):
        summary = await c.wait_for("market_summary", timeout=5)
        account = await c.wait_for("account_update", timeout=5)
        return summary, account
    summary, account = run(scenario, bridge)
    day = summary["symbols"][SYMBOL]
    assert {"last", "change", "change_pct", "high", "low"} <= set(day) and day["low"] <= day["last"] <= day["high"]
    assert {"balance", "equity", "margin_free"} <= set(account)


def test_indicator_values_from_the_bus_relay_with_nil_values_and_closed_ones_all_kept(bridge, engine):
    injector = BusInjector(engine)

    async def scenario(c):
        await c.call("subscribe", {"symbol": "XAUUSD", "timeframe": "H4"})
        base = {"symbol": "XAUUSD", "timeframe": "H4", "sma": None, "ema": 2000.5, "rsi": None,
                "macd": None, "macd_signal": None, "macd_hist": None}
        topic = b"ind:XAUUSD:H4:"
        for _ in range(50):  # until the PUB is connected and the bus forwards to it (slow joiner)
            injector.publish(topic, {**base, "time": 50, "closed": False})
            try:
                await c.wait_for("indicators", lambda d: d["time"] == 50, timeout=0.1)
                break
            except TimeoutError:
                pass
        # Within one flush: two closed bars and three forming updates.
        for t, closed in ((100, True), (200, False), (200, True), (300, False), (300, False)):
            injector.publish(topic, {**base, "time": t, "closed": closed})
        await c.wait_for("indicators", lambda d: d["time"] == 300, timeout=5)
        await asyncio.sleep(0.2)
        return [d for d in c.of("indicators") if d["time"] in (100, 200, 300)]
    try:
        values = run(scenario, bridge)
    finally:
        injector.close()
    assert [(v["time"], v["closed"]) for v in values] == [(100, True), (200, True), (300, False)]
    assert values[0]["sma"] is None and values[0]["macd"] is None and values[0]["ema"] == 2000.5


@pytest.mark.parametrize(("event", "data", "code"), [
    ("get_candles", "EURUSD", "bad_request"),
    ("get_candles", {"symbol": SYMBOL}, "bad_request"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 0}, "bad_request"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": "5"}, "bad_request"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M1", "count": 1001}, "too_many"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "M7"}, "unknown_timeframe"),
    ("get_candles", {"symbol": SYMBOL, "timeframe": "H4"}, "unknown_timeframe"),  # the engine's answer
    ("get_candles", {"symbol": "NOPE", "timeframe": "M1"}, "unknown_symbol"),
    ("get_indicators", "EURUSD", "bad_request"),
    ("get_indicators", {"symbol": SYMBOL}, "bad_request"),
    ("get_indicators", {"symbol": SYMBOL, "timeframe": 1}, "bad_request"),
    ("get_indicators", {"symbol": SYMBOL, "timeframe": "M1", "count": 0}, "bad_request"),
    ("get_indicators", {"symbol": SYMBOL, "timeframe": "M1", "count": "5"}, "bad_request"),
    ("get_indicators", {"symbol": SYMBOL, "timeframe": "M1", "count": 1001}, "too_many"),
    ("get_indicators", {"symbol": SYMBOL, "timeframe": "M7"}, "unknown_timeframe"),
    ("get_indicators", {"symbol": SYMBOL, "timeframe": "H4"}, "unknown_timeframe"),  # the engine's answer
    ("get_indicators", {"symbol": "NOPE", "timeframe": "M1"}, "unknown_symbol"),
    ("subscribe", {"symbol": "EURUSD.m"}, "unknown_symbol"),
    ("subscribe", {"symbol": 5}, "bad_request"),
    ("subscribe", {"symbol": "x" * 100}, "bad_request"),
    ("subscribe", {"symbol": SYMBOL, "timeframe": "M1", "extra": 1}, "bad_request"),
    ("subscribe", [SYMBOL], "bad_request"),
    ("get_order_book", {}, "bad_request"),
    ("get_order_book", {"symbol": "NOPE"}, "unknown_symbol"),
    ("no_such_event", {"symbol": SYMBOL}, "bad_request"),
    ("*", {}, "bad_request"),  # python-socketio's catch-all name, sent as an event
    ("connect", {}, "bad_request"),  # python-socketio's own lifecycle names, sent as events
    ("disconnect", {}, "bad_request"),
])
def test_bad_input_gets_an_error_to_its_sender_only_and_the_connection_stays_usable(bridge, event, data, code):
    async def scenario(c, bystander):
        mark = len(bystander.events)
        ack = await c.call(event, data)
        error = await c.wait_for("error")
        assert ack == error
        pong = await c.call("ping")  # still usable
        await asyncio.sleep(0.1)
        return error, pong, [e for _, e, _ in bystander.events[mark:]]
    error, pong, bystander_events = run(scenario, bridge, clients=2)
    assert error["code"] == code and error["event"] == event and error["message"]
    assert pong["status"] == "ok"
    assert "error" not in bystander_events


def test_extra_arguments_are_refused_and_a_malformed_packet_disconnects_with_an_error(bridge):
    async def scenario(c, other):
        await c.sio.emit("get_symbols", ({"a": 1}, 2))  # two arguments: a request error
        first = await c.wait_for("error")
        assert (await c.call("ping"))["status"] == "ok"  # still connected
        await c.sio.eio.send('2["ping",')  # not JSON: no client library sends that
        refused = await c.wait_for("error", after=len(c.events))
        deadline = time.monotonic() + 5
        while c.sio.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return first, refused, c.sio.connected, await other.call("ping")
    error, refused, connected, pong = run(scenario, bridge, clients=2)
    assert error["code"] == "bad_request" and error["event"] == "get_symbols"
    assert refused["code"] == "bad_request" and "decoded" in refused["message"] and not connected
    assert pong["status"] == "ok"


def test_a_flooding_client_is_rate_limited_while_another_is_unaffected(bridge):
    async def scenario(flooder, calm):
        await calm.call("subscribe", {"symbol": SYMBOL})
        await calm.wait_for("tick")
        started = time.monotonic()
        acks = await asyncio.gather(*(flooder.call("ping") for _ in range(150)))
        elapsed = time.monotonic() - started
        limited = [a for a in acks if a.get("code") == "rate_limited"]
        errors = flooder.of("error")
        mark = len(calm.events)
        replies = [await calm.call("get_symbols") for _ in range(5)]
        await calm.wait_for("tick", after=mark)
        return limited, errors, replies, calm.of("error"), elapsed
    limited, errors, replies, calm_errors, elapsed = run(scenario, bridge, clients=2)
    served = 150 - len(limited)
    assert 40 <= served <= 40 + 20 * elapsed + 1  # the burst, then 20/s
    assert 1 <= len(errors) <= elapsed + 2 and errors[0]["code"] == "rate_limited"  # one error a second
    assert all(isinstance(r, list) and len(r) == 5 for r in replies)
    assert calm_errors == []


def test_health_endpoint_reports_bridge_engine_workers_clients_and_subscriptions(bridge):
    async def scenario(c):
        await c.call("subscribe", {"symbol": SYMBOL, "timeframe": "M5"})
        return bridge.health()
    code, body = run(scenario, bridge)
    assert code == 200 and body["status"] == "ok" and body["bridge"] == "ok"
    assert body["engine"]["status"] == "ok" and body["engine"]["health"]["source"] == "sim"
    assert body["workers"] and set(body["workers"].values()) == {"ok"}
    assert body["clients"] >= 1 and body["subscriptions"] >= 2 and body["uptime"] > 0
