"""Every RPC op and error code, against an in-process engine's handler (no network needed)."""
import msgpack
import pytest
import zmq

from engine.protocol import BOOK_FIELDS, MAX_REQUEST_BYTES, decode, encode
from engine.rpc import RpcHandler
from engine.service import EngineService, now_ms
from engine.sources.sim import SimSource
from tests.procs import engine_config


@pytest.fixture(scope="module")
def service():
    ctx = zmq.Context()
    cfg = engine_config(max_candles="300")
    svc = EngineService(cfg, SimSource(cfg.symbols, seed=3, rate=100), ctx)
    svc.open()
    svc.on_ticks(svc.source.poll(now_ms() + 1000))  # a second of market, so every symbol has a tick
    svc.aggregate_pending()
    yield svc
    svc.close()
    ctx.destroy(0)


def call(svc, request) -> dict:
    raw = request if isinstance(request, bytes) else encode(request)
    return decode(RpcHandler(svc).handle(raw))


def error_code(svc, request) -> str:
    reply = call(svc, request)
    assert reply["ok"] is False, reply
    assert reply["error"]["message"]
    return reply["error"]["code"]


def test_symbols_lists_digits_point_description_and_currencies(service):
    data = call(service, {"op": "symbols"})["data"]
    eurusd = next(s for s in data if s["name"] == "EURUSD")
    assert eurusd["digits"] == 5 and eurusd["point"] == 1e-5
    assert eurusd["description"] and eurusd["currency_base"] == "EUR" and eurusd["currency_profit"] == "USD"


def test_candles_are_oldest_first_with_the_forming_bar_last(service):
    data = call(service, {"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 100})["data"]
    assert len(data) == 100
    times = [c["time"] for c in data]
    assert times == sorted(times) and times[1] - times[0] == 3600
    assert [c["closed"] for c in data] == [True] * 99 + [False]
    assert set(data[0]) >= {"open", "high", "low", "close", "tick_volume", "spread", "real_volume"}


def test_max_candles_bars_are_available_at_once(service):
    data = call(service, {"op": "candles", "symbol": "XAUUSD", "timeframe": "M1", "count": 300})["data"]
    assert len(data) == 300


def test_tick_book_account_health_and_snapshot(service):
    assert call(service, {"op": "tick", "symbol": "EURUSD"})["data"]["bid"] > 0
    book = call(service, {"op": "book", "symbol": "EURUSD"})["data"]
    assert set(book) == set(BOOK_FIELDS)
    assert len(book["bids"]) == len(book["asks"]) == 10
    assert call(service, {"op": "account"})["data"]["currency"] == "USD"
    assert call(service, {"op": "health"})["data"]["status"] == "ok"
    snap = call(service, {"op": "snapshot", "prefix": "tick:EURUSD:"})["data"]
    assert [t for t, _ in snap] == ["tick:EURUSD:"] and snap[0][1]["seq"] >= 1


def test_request_id_is_echoed(service):
    assert call(service, {"op": "health", "id": 41})["id"] == 41


@pytest.mark.parametrize(
    "request_, code",
    [
        (b"\xc1\xc1 not msgpack", "bad_request"),
        (msgpack.packb([1, 2, 3]), "bad_request"),
        (msgpack.packb({"no": "op"}), "bad_request"),
        ({"op": 7}, "bad_request"),
        ({"op": "trade"}, "unknown_op"),
        ({"op": "tick"}, "bad_request"),
        ({"op": "tick", "symbol": ["EURUSD"]}, "bad_request"),
        ({"op": "tick", "symbol": "EURUSDX"}, "unknown_symbol"),
        ({"op": "candles", "symbol": "EURUSD", "timeframe": "M7", "count": 10}, "unknown_timeframe"),
        ({"op": "candles", "symbol": "EURUSD", "timeframe": 60, "count": 10}, "bad_request"),
        ({"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 301}, "too_many"),
        ({"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 0}, "bad_request"),
        ({"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": "10"}, "bad_request"),
        ({"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": True}, "bad_request"),
        ({"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 2**63}, "too_many"),
        ({"op": "snapshot", "prefix": "x" * 1000}, "bad_request"),
        ({"op": "health", "id": [1]}, "bad_request"),
        (b"\x81" + b"\x91" * 5000, "bad_request"),  # deep nesting
        (encode({"op": "symbols", "pad": "x" * (MAX_REQUEST_BYTES + 1)}), "bad_request"),
    ],
)
def test_malformed_requests_get_an_error_with_a_code_and_a_message(service, request_, code):
    assert error_code(service, request_) == code


def test_unavailable_when_the_source_has_no_book_or_account(service, monkeypatch):
    monkeypatch.setattr(service.source, "book", lambda symbol, now: None)
    monkeypatch.setattr(service.source, "account", lambda now: None)
    assert error_code(service, {"op": "book", "symbol": "EURUSD"}) == "unavailable"
    assert error_code(service, {"op": "account"}) == "unavailable"


def test_an_exception_inside_becomes_an_internal_error_reply(service, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "candles", broken)
    assert error_code(service, {"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 5}) == "internal"
    # and the next request is served normally
    assert call(service, {"op": "health"})["ok"] is True
