"""History by date range: ``candles`` with ``from``/``to`` and the ``ticks`` op, from memory and
from each source's own store, equal to what subscribers saw; and every bad input refused."""
import time

import msgpack
import pytest
import zmq

from engine.client import RpcClient, Subscriber, Unavailable
from engine.config import EngineConfig
from engine.protocol import MAX_TICKS, decode, encode
from engine.rpc import RpcHandler
from engine.service import EngineService, now_ms
from engine.sources.replay import ReplaySource
from engine.sources.sim import ANCHOR_S, SimSource
from engine.timeframes import timeframe
from tests import mt5_standin
from tests.procs import engine_config
from tests.test_source_mt5 import T0, feed, make_source, mt5  # noqa: F401 (fixtures)

JOURNAL = 200  # ticks per symbol: the in-process market below publishes about twice that


def strip(payload: dict) -> dict:
    """A bus payload without its stamp: what a range reply holds."""
    return {k: v for k, v in payload.items() if k not in ("seq", "epoch")}


@pytest.fixture(scope="module")
def market():
    """An in-process engine, 40 s of its sim market published, and the ticks it published."""
    ctx = zmq.Context()
    cfg = engine_config(max_candles="300", tick_journal=str(JOURNAL))
    svc = EngineService(cfg, SimSource(cfg.symbols, seed=3, rate=100), ctx)
    svc.open()
    start = svc.source._start_ms
    published = []
    for k in range(1, 41):
        ticks = svc.source.poll(start + k * 1000)
        svc.on_ticks(ticks)
        svc.aggregate_pending()
        published += ticks
    yield svc, start, published
    svc.close()
    ctx.destroy(0)


def call(svc, request):
    reply = decode(RpcHandler(svc).handle(encode(request)), 1 << 30)
    return reply["data"] if reply["ok"] else reply["error"]


def eurusd(published):
    return [t for t in published if t.symbol == "EURUSD"]


def test_a_tick_range_older_than_the_journal_is_regenerated_and_joins_the_journal(market):
    svc, _, published = market
    ticks = eurusd(published)
    assert len(ticks) > 2 * JOURNAL  # most of the range comes from the sim, the rest from memory
    lo, hi = ticks[3].time_msc, ticks[-3].time_msc
    expected = [t.to_payload() for t in ticks if lo <= t.time_msc <= hi]
    assert call(svc, {"op": "ticks", "symbol": "EURUSD", "from_msc": lo, "to_msc": hi}) == expected
    assert call(svc, {"op": "ticks", "symbol": "EURUSD", "from_msc": lo, "to_msc": hi, "count": 250}) == expected[:250]
    # Past the last tick published: nothing from the future.
    assert call(svc, {"op": "ticks", "symbol": "EURUSD", "from_msc": hi, "to_msc": hi + 3_600_000}) == \
        [t.to_payload() for t in ticks if t.time_msc >= hi]


def test_after_seq_gives_the_published_payloads_with_their_seq_and_epoch(market):
    svc, _, published = market
    ticks = eurusd(published)
    epoch = svc._pub.epoch
    n = len(ticks)
    got = call(svc, {"op": "ticks", "symbol": "EURUSD", "after_seq": n - 50, "epoch": epoch, "count": 20})
    assert got == [{**t.to_payload(), "seq": n - 49 + k, "epoch": epoch} for k, t in enumerate(ticks[n - 50:n - 30])]
    assert call(svc, {"op": "ticks", "symbol": "EURUSD", "after_seq": n, "epoch": epoch}) == []


def test_a_candle_range_in_memory_equals_the_candles_op(market):
    svc, _, _ = market
    bars = call(svc, {"op": "candles", "symbol": "GBPUSD", "timeframe": "M1", "count": 300})
    got = call(svc, {"op": "candles", "symbol": "GBPUSD", "timeframe": "M1",
                     "from": bars[10]["time"], "to": bars[-1]["time"]})
    assert got == bars[10:]
    # Bar open times, inclusive: a range inside one bar is that bar only when it opens there.
    assert call(svc, {"op": "candles", "symbol": "GBPUSD", "timeframe": "M1",
                      "from": bars[10]["time"] + 1, "to": bars[11]["time"]}) == [bars[11]]


def test_candles_older_than_memory_are_what_a_longer_history_would_have_loaded(market):
    svc, start, _ = market
    held = call(svc, {"op": "candles", "symbol": "EURUSD", "timeframe": "H1", "count": 300})
    oldest = held[0]["time"]
    got = call(svc, {"op": "candles", "symbol": "EURUSD", "timeframe": "H1",
                     "from": oldest - 200 * 3600, "to": oldest + 99 * 3600})
    longer = SimSource(svc.config.symbols, seed=3, rate=100, clock_ms=start).history_arrays(
        "EURUSD", {timeframe("H1"): 600})["H1"].payloads("EURUSD", "H1", True)
    first = next(i for i, b in enumerate(longer) if b["time"] == oldest - 200 * 3600)
    assert got == longer[first:first + 300]
    assert got[200:] == held[:100]


def test_a_range_before_the_sim_market_began_is_empty(market):
    svc, _, _ = market
    assert call(svc, {"op": "candles", "symbol": "EURUSD", "timeframe": "M5", "from": 0, "to": ANCHOR_S - 1}) == []
    assert call(svc, {"op": "ticks", "symbol": "EURUSD", "from_msc": 0, "to_msc": ANCHOR_S * 1000 - 1}) == []


def test_a_source_without_a_store_says_so_for_ranges_older_than_memory(market, monkeypatch):
    svc, _, _ = market
    monkeypatch.setattr(svc.source, "tick_range", lambda *args: None)
    monkeypatch.setattr(svc.source, "candle_range", lambda *args: None)
    error = call(svc, {"op": "ticks", "symbol": "EURUSD", "from_msc": ANCHOR_S * 1000, "to_msc": now_ms()})
    assert error["code"] == "unavailable" and "keeps none older" in error["message"]
    error = call(svc, {"op": "candles", "symbol": "EURUSD", "timeframe": "M1", "from": 0, "to": 10})
    assert error["code"] == "unavailable" and "keeps none older" in error["message"]
    monkeypatch.setattr(svc.source, "tick_range", lambda *args: 1 / 0)
    error = call(svc, {"op": "ticks", "symbol": "EURUSD", "from_msc": ANCHOR_S * 1000, "to_msc": now_ms()})
    assert error["code"] == "unavailable" and "ZeroDivisionError" in error["message"]


M1 = {"op": "candles", "symbol": "EURUSD", "timeframe": "M1"}
TICKS = {"op": "ticks", "symbol": "EURUSD"}


@pytest.mark.parametrize("request_, code, words", [
    ({**M1, "from": 200, "to": 100}, "bad_request", "'from' (200) is after 'to' (100)"),
    ({**TICKS, "from_msc": 200, "to_msc": 100}, "bad_request", "'from_msc' (200) is after 'to_msc' (100)"),
    ({**M1, "from": 100}, "bad_request", "go together"),
    ({**TICKS, "to_msc": 100}, "bad_request", "go together"),
    ({**M1, "from": "2024-01-01", "to": 100}, "bad_request", "'from' must be an integer"),
    ({**M1, "from": 1.5, "to": 100}, "bad_request", "'from' must be an integer"),
    ({**M1, "from": True, "to": 100}, "bad_request", "'from' must be an integer"),
    ({**M1, "from": -1, "to": 100}, "bad_request", "'from' must be an integer from 0"),
    ({**M1, "from": 0, "to": 2**63}, "bad_request", "'to' must be an integer from 0"),
    ({**M1, "from": 0, "to": 100, "count": 5}, "bad_request", "either 'count' or 'from' and 'to'"),
    ({**M1, "from": 0, "to": 2**31}, "too_many", "MAX_CANDLES=300"),
    ({**M1, "symbol": "NOPE", "from": 0, "to": 1}, "unknown_symbol", "NOPE"),
    ({**M1, "timeframe": "M7", "from": 0, "to": 1}, "unknown_timeframe", "M7"),
    (TICKS, "bad_request", "'from_msc' and 'to_msc'"),
    ({**TICKS, "from_msc": [1], "to_msc": 2}, "bad_request", "'from_msc' must be an integer"),
    ({**TICKS, "from_msc": 1, "to_msc": 2, "count": MAX_TICKS + 1}, "too_many", "MAX_TICKS=10000"),
    ({**TICKS, "from_msc": 1, "to_msc": 2, "count": 0}, "bad_request", "at least 1"),
    ({**TICKS, "from_msc": 1, "to_msc": 2, "after_seq": 3, "epoch": 1}, "bad_request", "not both"),
    ({**TICKS, "after_seq": 3}, "bad_request", "'epoch' must be an integer"),
    ({**TICKS, "after_seq": -3, "epoch": 1}, "bad_request", "'after_seq' must be an integer"),
    ({**TICKS, "after_seq": "3", "epoch": 1}, "bad_request", "'after_seq' must be an integer"),
    ({**TICKS, "symbol": "NOPE", "after_seq": 0, "epoch": 1}, "unknown_symbol", "NOPE"),
    ({**TICKS, "after_seq": 0, "epoch": 1}, "too_old", "not the engine's current epoch"),
])
def test_bad_range_requests_get_a_clear_error(market, request_, code, words):
    error = call(market[0], request_)
    assert error["code"] == code and words in error["message"], error


def test_ticks_gone_from_the_journal_are_too_old(market):
    svc, _, _ = market
    error = call(svc, {**TICKS, "after_seq": 0, "epoch": svc._pub.epoch})
    assert error["code"] == "too_old" and "no longer journaled" in error["message"]


def test_a_bad_range_does_not_stop_the_engine(start_engine):
    engine = start_engine("--rate", "200")
    with RpcClient(engine.rpc) as rpc:
        for request in ({**M1, "from": 5, "to": 1}, {**TICKS, "after_seq": 0, "epoch": 0},
                        {**TICKS, "from_msc": 0, "to_msc": 2**62}):
            with pytest.raises(Exception):
                rpc.call(**request)
        assert rpc.health()["status"] == "ok"
        # And it publishes on: the first EURUSD tick may come a moment after start-up (5 symbols
        # share 200 ticks/s).
        tick, deadline = None, time.monotonic() + 10
        while tick is None and time.monotonic() < deadline:
            try:
                tick = rpc.tick("EURUSD")
            except Unavailable:
                time.sleep(0.05)
        assert tick is not None and tick["bid"] > 0


def collect(sub, until, seconds: float):
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until(out):
        message = sub.recv(timeout_ms=100)
        if message is not None:
            out.append(message.data)
    return out


def test_a_tick_range_equals_what_a_subscriber_saw_from_a_sim_engine(start_engine):
    # A journal smaller than the window: its start is regenerated by the sim, the rest journaled.
    engine = start_engine("--rate", "2000", "--symbols", "EURUSD,GBPUSD", "--tick-journal", "1000")
    with Subscriber(engine.bus, ["tick:EURUSD:"]) as sub, RpcClient(engine.rpc) as rpc:
        seen = collect(sub, lambda out: len(out) >= 2500, 20)
        assert len(seen) >= 2500
        assert [m["seq"] for m in seen] == list(range(seen[0]["seq"], seen[0]["seq"] + len(seen)))
        lo, hi = seen[0]["time_msc"], seen[-1]["time_msc"]
        got = rpc.ticks("EURUSD", lo, hi)
        # Ticks in the window's first ms before the subscriber joined, and in its last ms after
        # it stopped reading, belong to the range too.
        first = next(i for i, t in enumerate(got) if t == strip(seen[0]))
        assert all(t["time_msc"] == lo for t in got[:first])
        assert got[first:first + len(seen)] == [strip(m) for m in seen]
        assert all(t["time_msc"] == hi for t in got[first + len(seen):])


def write_tick_csv(path, start_msc: int, n: int, step_ms: int):
    """A plain CSV of ``n`` EURUSD ticks ``step_ms`` apart; returns them as payloads."""
    rows, ticks = ["symbol,time_msc,bid,ask"], []
    for i in range(n):
        t, bid = start_msc + i * step_ms, 1.1 + ((i * 7) % 13) * 1e-4
        rows.append(f"EURUSD,{t},{bid:.5f},{bid + 1e-4:.5f}")
        ticks.append({"symbol": "EURUSD", "bid": round(bid, 5), "ask": round(bid + 1e-4, 5), "last": 0.0,
                      "volume": 0, "time_msc": t, "flags": 6, "volume_real": 0.0})
    path.write_text("\n".join(rows) + "\n")
    return ticks


def test_ranges_equal_what_a_subscriber_saw_of_a_replay(start_engine, tmp_path):
    start = 1_704_189_600_000  # 2024-01-02 10:00 UTC
    ticks = write_tick_csv(tmp_path / "ticks.csv", start, 2400, 500)  # 20 minutes of market
    engine = start_engine("--source", "replay", "--replay-file", str(tmp_path / "ticks.csv"),
                          "--replay-speed", "300", "--tick-journal", "500", "--timeframes", "M1")
    with Subscriber(engine.bus, ["tick:EURUSD:", "candle:EURUSD:M1:"]) as sub, RpcClient(engine.rpc) as rpc:
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (seen and seen[-1].get("time_msc") == ticks[-1]["time_msc"]):
            message = sub.recv(timeout_ms=100)
            if message is not None:
                seen.append(message.data)
        seen_ticks = [m for m in seen if "bid" in m]
        closed = [strip(m) for m in seen if m.get("closed")]
        assert seen_ticks[-1]["time_msc"] == ticks[-1]["time_msc"] and len(closed) >= 5
        assert rpc.ticks("EURUSD", seen_ticks[0]["time_msc"], seen_ticks[-1]["time_msc"]) == \
            [strip(m) for m in seen_ticks]
        # From the file's start: older than the journal (500 ticks), so read from the file.
        assert rpc.ticks("EURUSD", start, ticks[-1]["time_msc"], count=MAX_TICKS) == ticks
        assert rpc.candle_range("EURUSD", "M1", closed[0]["time"], closed[-1]["time"]) == closed
        # From before the replay's first bar: the file has no older bar, memory the rest.
        older = rpc.candle_range("EURUSD", "M1", 0, closed[-1]["time"])
        assert older[0]["time"] == start // 1000 and older[-len(closed):] == closed


def test_mt5_ranges_come_from_the_terminal(mt5, make_source):  # noqa: F811 (fixtures)
    times = [T0 + 10, T0 + 10, T0 + 400, T0 + 999, T0 + 1000, T0 + 1500, T0 + 2001, T0 + 3000]
    expected = feed(mt5, "EURUSD", times)
    h1 = 3600
    base = T0 // 1000 - T0 // 1000 % h1
    rows = [(base + i * h1, 1.1 + i / 1000, 1.2, 1.0, 1.15, 100 + i, 7, 0) for i in range(-6, 1)]
    mt5.set_rates("EURUSD", mt5_standin.TIMEFRAME_H1, rows)
    source = make_source(mt5)
    source.start()
    # Milliseconds inside the seconds the terminal is asked for.
    assert source.tick_range("EURUSD", T0 + 10, T0 + 1500, 100) == expected[:6]
    assert source.tick_range("EURUSD", T0 + 11, T0 + 2001, 100) == expected[2:7]
    assert source.tick_range("EURUSD", T0, T0 + 5000, 3) == expected[:3]
    assert source.tick_range("EURUSD", T0 + 5000, T0 + 9000, 10) == []
    bars = source.candle_range("EURUSD", timeframe("H1"), base - 4 * h1, base - h1, 100)
    assert [(c.time, c.open, c.tick_volume) for c in bars] == [(r[0], r[1], r[5]) for r in rows[2:6]]
    assert len(source.candle_range("EURUSD", timeframe("H1"), base - 4 * h1, base, 2)) == 2


def test_a_bridge_style_raw_request_with_from_and_to_works(start_engine):
    engine = start_engine("--rate", "200")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(engine.rpc)
    try:
        sock.send(msgpack.packb({"op": "candles", "symbol": "EURUSD", "timeframe": "M5", "from": 0, "to": 10}))
        assert sock.poll(5000)
        assert msgpack.unpackb(sock.recv()) == {"ok": True, "data": []}
    finally:
        sock.close(0)


def test_a_replay_answers_only_with_ticks_it_has_played(tmp_path):
    start = 1_704_189_600_000
    ticks = write_tick_csv(tmp_path / "ticks.csv", start, 100, 1000)
    source = ReplaySource(EngineConfig(source="replay", replay_file=str(tmp_path / "ticks.csv"), replay_speed=0),
                          batch=30)
    source.start()
    try:
        assert source.tick_range("EURUSD", 0, start + 10**9, 1000) == []  # nothing played yet
        played = source.poll(0)
        assert len(played) == 30
        got = source.tick_range("EURUSD", 0, start + 10**9, 1000)
        assert [t.to_payload() for t in got] == ticks[:30] == [t.to_payload() for t in played]
        assert [t.time_msc for t in source.tick_range("EURUSD", start + 5000, start + 7000, 1000)] == \
            [start + 5000, start + 6000, start + 7000]
        assert source.tick_range("GBPUSD", 0, start + 10**9, 1000) == []
    finally:
        source.stop()
