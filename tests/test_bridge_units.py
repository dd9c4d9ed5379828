"""The bridge's pure cores: batching, validation, rate limit, caches, fan-out policy, config, frames."""
from __future__ import annotations

import json
import math
import struct

import pytest

from bridge.batching import Batcher, dumps, encode_room
from bridge.cache import CandleCache, ValueCache
from bridge.config import BridgeConfig
from bridge.fanout import ALL, Fanout
from bridge.ratelimit import TokenBucket
from bridge.transport import ws_text_frame
from bridge.api import EVENTS
from bridge.validation import ClientError, Context
from engine.config import ConfigError
from indicators.series import Periods

SYMBOLS = frozenset({"EURUSD", "GBPUSD"})
TFS = ("M1", "H1")


def candle(t: int, closed: bool, close: float = 1.0) -> dict:
    return {"symbol": "EURUSD", "timeframe": "M1", "time": t, "close": close, "closed": closed}


# Batching
def test_latest_tick_per_room_wins_and_the_rest_are_counted_as_conflated():
    b = Batcher()
    for i in range(5):
        b.add("s:EURUSD", "tick", {"bid": i})
    b.add("s:GBPUSD", "tick", {"bid": 9})
    out = b.take()
    assert out == {"s:EURUSD": [("tick", {"bid": 4}, True)], "s:GBPUSD": [("tick", {"bid": 9}, True)]}
    assert (b.updates, b.conflated) == (6, 4)
    assert b.take() == {}


def test_closed_candles_are_never_dropped_and_merge_into_one_candles_event():
    b = Batcher()
    for t, closed, close in ((60, False, 1.0), (60, True, 1.0), (120, False, 1.1), (120, False, 1.2),
                             (120, True, 1.3), (180, False, 1.4)):
        b.add("t", "candles", candle(t, closed, close), closed=closed)
    [(event, payload, droppable)] = b.take()["t"]
    assert event == "candles" and not droppable
    assert payload["symbol"] == "EURUSD" and payload["timeframe"] == "M1"
    assert [(c["time"], c["closed"]) for c in payload["candles"]] == [(60, True), (120, True), (180, False)]


def test_a_forming_update_older_than_the_closed_bar_is_superseded():
    b = Batcher()
    b.add("t", "indicators", {"time": 60, "closed": False})
    b.add("t", "indicators", {"time": 60, "closed": True}, closed=True)
    assert b.take()["t"] == [("indicators", {"time": 60, "closed": True}, False)]


def test_forming_only_candles_are_droppable():
    b = Batcher()
    b.add("t", "candles", candle(60, False))
    [(_, _, droppable)] = b.take()["t"]
    assert droppable


def test_each_room_is_serialised_once_as_socketio_event_packets():
    b = Batcher()
    b.add("s:EURUSD", "tick", {"symbol": "EURUSD", "bid": 1.5})
    b.add("s:EURUSD", "order_book", {"symbol": "EURUSD", "bids": [[1.4, 2.0]]})
    packets = encode_room(b.take()["s:EURUSD"])
    assert [p.text for p in packets] == ['2["tick",{"symbol":"EURUSD","bid":1.5}]',
                                         '2["order_book",{"symbol":"EURUSD","bids":[[1.4,2.0]]}]']


def test_nan_and_infinity_become_null():
    text = dumps({"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}, "e": 2.5})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}


# Validation
def parse(event, *args, symbols=SYMBOLS):
    return EVENTS.find(event).parse(args, Context(symbols, TFS, 1000))


def test_valid_requests_parse_with_defaults():
    assert parse("subscribe", {"symbol": "EURUSD"})["timeframe"] is None
    assert parse("get_candles", {"symbol": "EURUSD", "timeframe": "H1"})["count"] == 100
    assert parse("get_candles", {"symbol": "EURUSD", "timeframe": "H1", "count": 1000})["count"] == 1000
    assert parse("get_indicators", {"symbol": "EURUSD", "timeframe": "H1"})["count"] == 100
    assert parse("get_indicators", {"symbol": "EURUSD", "timeframe": "M1", "count": 7})["count"] == 7
    assert parse("ping").event == "ping"
    assert parse("get_symbols", None).event == "get_symbols"
    assert parse("get_account_info", {}).event == "get_account_info"


@pytest.mark.parametrize(("event", "args", "code"), [
    ("nope", (), "bad_request"),
    (7, (), "bad_request"),
    ("ping", ({}, {}), "bad_request"),
    ("ping", ({"x": 1},), "bad_request"),
    ("subscribe", ("EURUSD",), "bad_request"),
    ("subscribe", ({},), "bad_request"),
    ("subscribe", ({"symbol": ""},), "bad_request"),
    ("subscribe", ({"symbol": "E" * 65},), "bad_request"),
    ("subscribe", ({"symbol": ["EURUSD"]},), "bad_request"),
    ("subscribe", ({"symbol": "USDCHF"},), "unknown_symbol"),
    ("subscribe", ({"symbol": "EURUSD", "timeframe": 1},), "bad_request"),
    ("subscribe", ({"symbol": "EURUSD", "timeframe": "M5"},), "unknown_timeframe"),
    ("get_candles", ({"symbol": "EURUSD", "timeframe": "M1", "count": True},), "bad_request"),
    ("get_candles", ({"symbol": "EURUSD", "timeframe": "M1", "count": 1.5},), "bad_request"),
    ("get_candles", ({"symbol": "EURUSD", "timeframe": "M1", "count": -1},), "bad_request"),
    ("get_candles", ({"symbol": "EURUSD", "timeframe": "M1", "count": 1001},), "too_many"),
    ("get_indicators", ({"symbol": "EURUSD"},), "bad_request"),
    ("get_indicators", ({"symbol": "EURUSD", "timeframe": "M1", "count": 1.5},), "bad_request"),
    ("get_indicators", ({"symbol": "EURUSD", "timeframe": "M1", "count": 1001},), "too_many"),
    ("get_indicators", ({"symbol": "USDCHF", "timeframe": "M1"},), "unknown_symbol"),
    ("get_indicators", ({"symbol": "EURUSD", "timeframe": "M5"},), "unknown_timeframe"),
])
def test_invalid_requests_are_refused_with_their_code(event, args, code):
    with pytest.raises(ClientError) as info:
        parse(event, *args)
    assert info.value.code == code
    payload = info.value.payload()
    assert set(payload) == {"code", "message", "event"} and len(payload["event"]) <= 64


def test_symbol_requests_are_unavailable_until_the_symbol_list_is_known():
    with pytest.raises(ClientError) as info:
        parse("subscribe", {"symbol": "EURUSD"}, symbols=None)
    assert info.value.code == "unavailable"
    assert parse("ping", symbols=None).event == "ping"


def test_echoed_event_names_are_bounded_and_printable():
    with pytest.raises(ClientError) as info:
        parse("x\n" * 100)
    assert len(info.value.event) <= 64 and info.value.event.isprintable()


# Rate limit
def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1) and not bucket.take(0.1)
    # Refilled to the burst (3) by t=1.0, then 10/s for 0.99 s: 9 more.
    assert sum(bucket.take(1.0 + i / 100) for i in range(100)) == 3 + 9


# Caches
def test_candle_cache_serves_smaller_counts_and_folds_bus_candles():
    cache = CandleCache(ttl=30, max_candles=1000)
    assert cache.get("EURUSD", "M1", 10, now=0) is None
    bars = [candle(t, t < 180) for t in (60, 120, 180)]
    cache.put("EURUSD", "M1", bars, asked=100, now=0)  # the engine had only 3
    assert [b["time"] for b in cache.get("EURUSD", "M1", 2, now=1)] == [120, 180]
    cache.on_candle(candle(180, True, 2.0))
    cache.on_candle(candle(240, False, 2.1))
    cache.on_candle(candle(60, True, 9.9))  # older than the history: ignored
    got = cache.get("EURUSD", "M1", 100, now=2)
    assert [(b["time"], b["closed"]) for b in got] == [(60, True), (120, True), (180, True), (240, False)]
    assert got[0]["close"] == 1.0
    assert cache.get("EURUSD", "M1", 10, now=31) is None  # expired
    assert (cache.hits, cache.misses) == (2, 2)


def test_candle_cache_refetches_for_more_than_it_holds_and_after_invalidation():
    cache = CandleCache(ttl=30, max_candles=1000)
    cache.put("EURUSD", "M1", [candle(60 * i, True) for i in range(100)], asked=100, now=0)
    assert cache.get("EURUSD", "M1", 100, now=1) is not None
    assert cache.get("EURUSD", "M1", 101, now=1) is None
    assert cache.fetch_count(5) == 100 and cache.fetch_count(500) == 500 and cache.fetch_count(5000) == 1000
    cache.invalidate("EURUSD", "M1")
    assert cache.get("EURUSD", "M1", 10, now=1) is None


def test_value_cache_expires_and_invalidates():
    cache = ValueCache(ttl=5)
    cache.put(["x"], now=0)
    assert cache.get(4) == ["x"] and cache.get(6) is None
    cache.put(["y"], now=10)
    cache.invalidate()
    assert cache.get(10) is None


# Fan-out and the slow-client policy
class FakeConnection:
    def __init__(self, transport, sid):
        self.transport, self.sid = transport, sid

    def backlog(self):
        return self.transport.backlogs.get(self.sid, 0)

    def send(self, bundle):
        self.transport.sent.setdefault(self.sid, []).extend(bundle)


class FakeTransport:
    def __init__(self):
        self.backlogs: dict[str, int] = {}
        self.sent: dict[str, list[str]] = {}
        self.disconnected: list[str] = []

    def wrap(self, text):
        return text

    def bundle(self, wires):
        return list(wires)

    def connection(self, sid):
        return FakeConnection(self, sid)

    def disconnect(self, sid):
        self.disconnected.append(sid)


def flush(fanout: Fanout, updates: list[tuple[str, str, dict, bool]]) -> None:
    b = Batcher()
    for room, event, payload, closed in updates:
        b.add(room, event, payload, closed)
    fanout.deliver({room: encode_room(events) for room, events in b.take().items()})


def test_members_get_their_rooms_only_and_the_latest_state_when_they_join():
    t = FakeTransport()
    f = Fanout(t, soft=100, hard=1000)
    for sid in ("a", "b"):
        f.add_client(sid)
    f.join("a", ["s:EURUSD"])
    flush(f, [("s:EURUSD", "tick", {"bid": 1}, False), ("s:GBPUSD", "tick", {"bid": 2}, False),
              (ALL, "market_summary", {"n": 1}, False)])
    assert sorted(t.sent["a"]) == ['2["market_summary",{"n":1}]', '2["tick",{"bid":1}]']  # rooms in any order
    assert t.sent["b"] == ['2["market_summary",{"n":1}]']
    f.join("b", ["s:EURUSD"])
    flush(f, [])
    assert t.sent["b"][-1] == '2["tick",{"bid":1}]'  # the room's latest, once
    flush(f, [])
    assert len(t.sent["b"]) == 2
    assert f.subscriptions() == 2


def test_slow_client_gets_closed_candles_only_then_catches_up_with_the_latest():
    t = FakeTransport()
    f = Fanout(t, soft=100, hard=1000)
    f.add_client("slow")
    f.add_client("fast")
    for sid in ("slow", "fast"):
        f.join(sid, ["s:EURUSD", "t:EURUSD:M1"])
    flush(f, [])
    t.sent.clear()
    t.backlogs["slow"] = 500
    flush(f, [("s:EURUSD", "tick", {"bid": 1}, False), ("t:EURUSD:M1", "candles", candle(60, True), True)])
    flush(f, [("s:EURUSD", "tick", {"bid": 2}, False)])
    assert [json.loads(p[1:])[0] for p in t.sent["slow"]] == ["candles"]
    assert len(t.sent["fast"]) == 3
    assert f.stats.skipped_slow == 2
    t.backlogs["slow"] = 0
    flush(f, [])
    assert t.sent["slow"][-1] == '2["tick",{"bid":2}]'


def test_client_over_the_hard_limit_is_disconnected_and_counted():
    t = FakeTransport()
    f = Fanout(t, soft=100, hard=1000)
    f.add_client("stuck")
    f.join("stuck", ["s:EURUSD"])
    t.backlogs["stuck"] = 5000
    flush(f, [("s:EURUSD", "tick", {"bid": 1}, False)])
    assert t.disconnected == ["stuck"] and f.stats.slow_disconnects == 1
    assert "stuck" not in f.members and not f.has_members("s:EURUSD")


def test_leaving_a_room_stops_its_updates():
    t = FakeTransport()
    f = Fanout(t, soft=100, hard=1000)
    f.add_client("a")
    f.join("a", ["s:EURUSD"])
    f.leave("a", ["s:EURUSD"])
    flush(f, [("s:EURUSD", "tick", {"bid": 1}, False)])
    assert "a" not in t.sent and not f.has_members("s:EURUSD")
    f.remove_client("a")
    assert not f.has_members(ALL)


# Config and frames
def test_config_defaults_bind_loopback_and_same_origin_cors():
    cfg = BridgeConfig.load(environ={}, dotenv=None)
    assert (cfg.ws_host, cfg.ws_port, cfg.batch_interval_ms) == ("127.0.0.1", 8765, 50)
    assert cfg.cors_origins == () and cfg.token == ""
    assert cfg.host_rule.hosts == {"127.0.0.1:8765", "localhost:8765"}
    assert cfg.bus_endpoint == "tcp://127.0.0.1:5555" and cfg.rpc_endpoint == "tcp://127.0.0.1:5556"


def test_config_layers_and_keeps_the_token_secret(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("BRIDGE_TOKEN=s3cret\nWS_PORT=9000\nCORS_ORIGINS=http://a.example, http://b.example\n")
    cfg = BridgeConfig.load({"ws_port": "9100"}, environ={"BATCH_INTERVAL_MS": "20"}, dotenv=dotenv)
    assert (cfg.ws_port, cfg.batch_interval_ms, cfg.token) == (9100, 20, "s3cret")
    assert cfg.host_rule.origins == {"http://a.example", "http://b.example"}
    assert "s3cret" not in repr(cfg)
    assert BridgeConfig.load(environ={"CORS_ORIGINS": "*"}, dotenv=None).host_rule.origin_ok("http://x.example", "localhost:8765")


def test_config_takes_the_indicator_periods_from_the_workers_variables():
    assert BridgeConfig.load(environ={}, dotenv=None).periods == Periods()
    cfg = BridgeConfig.load(environ={"IND_SMA": "10", "IND_EMA": "30", "IND_RSI": "7", "IND_MACD": "5,35,5"},
                            dotenv=None)
    assert cfg.periods == Periods(10, 30, 7, (5, 35, 5))


@pytest.mark.parametrize("env", [{"WS_PORT": "0"}, {"BATCH_INTERVAL_MS": "x"}, {"TIMEFRAMES": "M7"},
                                 {"CLIENT_BUFFER_SOFT_BYTES": "10", "CLIENT_BUFFER_HARD_BYTES": "5"},
                                 {"IND_SMA": "0"}, {"IND_RSI": "x"}, {"IND_MACD": "12,26"}])
def test_bad_settings_are_refused_naming_the_setting(env):
    with pytest.raises(ConfigError):
        BridgeConfig.load(environ=env, dotenv=None)


def test_the_token_has_no_command_line_flag():
    from bridge.cli import parse_args
    with pytest.raises(SystemExit):
        parse_args(["--token", "x"])


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_websocket_frames_are_final_unmasked_text_frames(size):
    payload = b"x" * size
    frame = ws_text_frame(payload)
    assert frame[0] == 0x81 and not frame[1] & 0x80
    if size < 126:
        assert frame[1] == size and frame[2:] == payload
    elif size < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == size and frame[4:] == payload
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == size and frame[10:] == payload


def test_seq_tracker_reports_gaps_and_restarts_and_orders_snapshots():
    from bridge.bus import GAP, RESTART, SeqTracker

    t = SeqTracker()
    assert t.is_newer("tick:A:", {"seq": 5, "epoch": 1})
    assert [t.check("tick:A:", {"seq": s, "epoch": e}) for s, e in ((1, 1), (2, 1), (5, 1), (1, 2))] == \
        [None, None, GAP, RESTART]
    assert (t.gaps, t.restarts) == (1, 1)
    assert not t.is_newer("tick:A:", {"seq": 1, "epoch": 2}) and t.is_newer("tick:A:", {"seq": 2, "epoch": 2})
    assert t.is_newer("tick:A:", {"seq": 1, "epoch": 3}) and not t.is_newer("tick:A:", {"seq": 9, "epoch": 1})
    assert t.check("x:", {"no": "stamps"}) is None


def test_each_flush_serves_one_group_and_clients_are_spread_over_the_groups():
    t = FakeTransport()
    f = Fanout(t, soft=100, hard=1000, groups=2)
    for sid in ("a", "b", "c"):
        f.add_client(sid)
        f.join(sid, ["s:EURUSD"])
    assert [len(g) for g in f.groups] == [2, 1]
    b = Batcher()
    b.add("s:EURUSD", "tick", {"bid": 1})
    f.deliver({room: encode_room(events) for room, events in b.take().items()}, group=1)
    assert set(t.sent) == {"b"}
    f.remove_client("b")
    assert [len(g) for g in f.groups] == [2, 0]


# Hosts and origins
def test_host_keys_normalise_names_ports_and_ipv6_and_refuse_what_is_not_a_host():
    from bridge.hosts import host_key, origin_host

    assert host_key("LocalHost:8765", 80) == "localhost:8765"
    assert host_key("localhost", 8765) == "localhost:8765"
    assert host_key("[::1]:9000", 80) == "[::1]:9000"
    assert [host_key(v, 80) for v in ("", "a b", "http://x", "x/y", "u@x", "x:99999", "x:port")] == [None] * 7
    assert origin_host("http://localhost:8765") == "localhost:8765"
    assert origin_host("https://app.example") == "app.example:443"
    assert [origin_host(v) for v in ("null", "file://", "ftp://x", "http://x/path")] == [None] * 4


def test_the_host_rule_lets_in_its_own_names_and_same_host_or_listed_origins_only():
    from bridge.hosts import HostRule, default_hosts

    rule = HostRule.build(default_hosts("127.0.0.1"), 8765, ["http://app.example:3000"])
    assert rule.host_ok("127.0.0.1:8765") and rule.host_ok("localhost:8765")
    assert not rule.host_ok("evil.example:8765") and not rule.host_ok("localhost:9999")
    assert not rule.host_ok(None) and not rule.host_ok("")
    assert rule.origin_ok("http://localhost:8765", "localhost:8765")
    assert rule.origin_ok("http://app.example:3000", "localhost:8765")
    assert not rule.origin_ok("http://evil.example:8765", "evil.example:8765")  # same host, but not ours
    assert not rule.origin_ok("http://localhost:8765", "127.0.0.1:8765")  # another of our names
    assert default_hosts("0.0.0.0") == ("localhost", "127.0.0.1") and default_hosts("::1")[0] == "[::1]"
    anything = HostRule.build(["*"], 8765, ["*"])
    assert anything.host_ok("whatever.example") and anything.origin_ok("http://x.example", "y")
    with pytest.raises(ValueError, match="not a host"):
        HostRule.build(["http://x.example"], 8765, [])


def test_ws_allowed_hosts_is_checked_at_load():
    cfg = BridgeConfig.load(environ={"WS_ALLOWED_HOSTS": "md.example, 10.0.0.5:9000", "WS_PORT": "8000"},
                            dotenv=None)
    assert cfg.host_rule.hosts == {"md.example:8000", "10.0.0.5:9000"}
    with pytest.raises(ConfigError, match="WS_ALLOWED_HOSTS"):
        BridgeConfig.load(environ={"WS_ALLOWED_HOSTS": "https://md.example/"}, dotenv=None)
    with pytest.raises(ConfigError, match="SESSION_JOIN_TIMEOUT_MS"):
        BridgeConfig.load(environ={"SESSION_JOIN_TIMEOUT_MS": "0"}, dotenv=None)


# What a client may send
@pytest.mark.parametrize("data, reason", [
    ('2["ping"]', None), ("0", None), ('0{"token":"x"}', None), ("1", None),
    ('51-["x",{"_placeholder":true,"num":0}]', "attachments"), ("61-0[]", "attachments"),
    (b"\x00", "binary"), ('2["ping",', "malformed"), ("2", "malformed"), ("2[17]", "malformed"),
    ('2{"a":1}', "malformed"), ("3[1]", "malformed"), ("4", "malformed"), ("9", "malformed"), ("", "malformed"),
    ("2" + "[" * 100_000, "malformed"),
])
def test_socketio_packets_are_refused_by_kind_before_they_are_decoded(data, reason):
    from bridge.inbound import sio_refusal

    assert sio_refusal(data) == reason


def test_engineio_frames_must_be_text_with_a_known_type():
    from bridge.inbound import eio_refusal

    assert [eio_refusal(f) for f in ("42[]", "2", "3probe", "x", "", "9", b"\x04")] == \
        [None, None, None, "malformed", "malformed", "malformed", "binary"]


# The byte budget
def test_the_budget_queue_counts_bytes_and_refuses_once_past_its_budget():
    import asyncio

    from bridge.budget import BudgetQueue
    from engineio import packet as eio_packet

    over: list[BudgetQueue] = []

    class Tcp:
        def get_write_buffer_size(self):
            return 30

    async def scenario():
        q = BudgetQueue(100, over.append)
        q.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "a" * 39))  # 40 bytes
        q.tcp = Tcp()
        assert q.backlog() == 70
        q.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "b" * 29))  # 70 + 30 = 100: fits
        assert (q.qsize(), q.bytes, over) == (2, 70, [])
        q.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "c"))  # one byte too many
        assert (q.qsize(), over) == (2, [q]) and q.over
        q.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "d"))  # dropped, reported once
        assert (q.qsize(), len(over)) == (2, 1)
        assert (await q.get()).data == "a" * 39 and q.bytes == 30
        q.task_done()  # as engineio does after each get
        q.put_nowait(None)  # the end-of-stream mark always goes in
        q.discard()
        assert (q.qsize(), q.bytes) == (0, 0)
        await asyncio.wait_for(q.join(), 1)  # nothing left unfinished: engineio's close never hangs

    asyncio.run(scenario())


def test_a_take_from_the_budget_queue_stops_at_take_bytes_and_the_rest_stays_counted():
    import asyncio

    from bridge.budget import TAKE_BYTES, BudgetQueue
    from engineio import packet as eio_packet

    async def poll(q):  # what engineio's AsyncSocket.poll does
        packets = [await q.get()]
        while True:
            try:
                packets.append(q.get_nowait())
            except asyncio.QueueEmpty:
                return packets

    async def scenario():
        q = BudgetQueue(10 * TAKE_BYTES, lambda _: None)
        size = TAKE_BYTES // 2
        for _ in range(5):
            q.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "x" * (size - 1)))
        assert (len(await poll(q)), q.bytes) == (2, 3 * size)  # the rest still counts in the budget
        assert [len(await poll(q)) for _ in range(2)] == [2, 1] and q.bytes == 0

    asyncio.run(scenario())


def test_pending_sessions_expire_after_the_timeout_unless_they_joined_or_closed():
    from bridge.sessions import PendingSessions

    p = PendingSessions(10.0)
    for sid, t in (("a", 0.0), ("b", 1.0), ("c", 5.0)):
        p.open(sid, t)
    p.settle("b")
    assert (len(p), p.expired(9.9), p.expired(10.0), p.expired(15.0)) == (2, [], ["a"], ["a", "c"])


def test_bad_input_is_logged_once_per_kind_per_interval_with_a_count_of_the_rest(caplog):
    import logging

    from bridge.quietlog import LibraryLog
    from engine.logs import RateLimitedLog

    limited = RateLimitedLog(logging.getLogger("bridge.test"), interval_s=60)
    library = LibraryLog(logging.getLogger("bridge.test.lib"), limited)
    with caplog.at_level(logging.DEBUG, logger="bridge.test"):
        assert [limited.warning("bad", "bad %s", i) for i in range(3)] == [True, False, False]
        assert limited.warning("other", "other")
        for _ in range(100):
            try:
                raise ValueError("not a packet")
            except ValueError:
                library.exception("post request handler error")
        library.info("Received packet %s", "MESSAGE")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings][:2] == ["bad 0", "other"]
    assert len(warnings) == 3 and "ValueError: not a packet" in warnings[2].getMessage()
    assert not any(r.exc_info for r in warnings) and library.errors == 100
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.exc_info)  # tracebacks at DEBUG only
    try:
        raise ValueError("400, message:\n  Invalid character")
    except ValueError as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "Error handling request", (),
                                   (type(exc), exc, exc.__traceback__))
    plain = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "no traceback", (), None)
    with caplog.at_level(logging.WARNING, logger="bridge.test"):
        assert library.filter(plain) and not library.filter(record)  # dropped: one line logged instead
    assert caplog.records[-1].getMessage() == \
        "bridge: http: Error handling request: ValueError: 400, message: Invalid character"
    logged_at, unlogged = limited._last["bad"]
    limited._last["bad"] = (logged_at - 61, unlogged)  # as if the interval had passed
    with caplog.at_level(logging.WARNING, logger="bridge.test"):
        limited.warning("bad", "bad again")
    assert caplog.records[-1].getMessage() == "bad again (and 2 more since the last report)"
