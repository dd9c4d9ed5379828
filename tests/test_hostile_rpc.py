"""Hostile bus subscribers and RPC clients against an engine process (issue 11, section 3).

Each attack runs for a few seconds beside a normal client (ticks at 1000/s, ``health`` every
50 ms) and prints what it cost and what held (``pytest -s``): the engine's RSS before, at its
peak and after, the normal client's longest tick gap and RPC p99, and the engine's counters.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgpack
import pytest
import zmq

from engine.connections import UNREAD_DRIFT_PER_S, unread_over, wire_bytes
from engine.logs import RateLimitedLog
from engine.protocol import (
    MAX_QUEUED_REPLY_BYTES,
    MAX_REQUEST_FRAMES,
    MAX_SUBSCRIPTION_BYTES,
    MAX_SUBSCRIPTION_BYTES_PER_PEER,
    MAX_SUBSCRIPTION_BYTES_TOTAL,
    MAX_SUBSCRIPTION_FRAME_BYTES,
    MAX_SUBSCRIPTIONS_PER_PEER,
    MAX_UNREAD_BYTES,
    decode,
)
from engine.subscriptions import SubscriptionBudget
from tests.hostile import NormalClient, RssWatch, report

GAP_MS = 100  # the bound on a normal client's longest tick gap during an attack
SETTLE_MB = 50  # ... and on RSS over the baseline once the attacker has left
ATTEMPTS = 3  # an attack is run again (at most this often) when only the tick gap missed


@pytest.fixture
def engine(start_engine):
    return start_engine("--rate", "1000")


def health(rpc: str) -> dict:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(rpc)
    sock.send(msgpack.packb({"op": "health"}))
    assert sock.poll(5000), "the engine did not answer health"
    reply = decode(sock.recv())
    sock.close(0)
    return reply["data"]


def subscriber(ctx: zmq.Context, endpoint: str, prefixes: list[bytes]) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    for prefix in prefixes:
        sock.subscribe(prefix)
    sock.connect(endpoint)
    return sock


def quiet_gap_ms(engine, seconds: float = 2.0) -> float:
    """The normal client's longest tick gap with no attack, just before one: on a busy 2-core
    machine the client itself can be held up for tens of milliseconds."""
    with NormalClient(engine.bus, engine.rpc) as client:
        time.sleep(seconds)
    return client.figures.longest_tick_gap_ms


def run_attack(engine, name: str, attack: Callable[[], dict], peak_mb: float) -> dict:
    """Run ``attack()`` (returning the figures to report) beside a normal client and assert the
    issue's bounds: the client's longest tick gap under GAP_MS beyond what it saw with no attack
    just before, every RPC of it answered, the engine's RSS peak under ``peak_mb`` over the
    baseline and back within SETTLE_MB once the attacker has left. On a busy machine the gap
    alone can miss: then the attack is run again, at most ATTEMPTS times."""
    for attempt in range(1, ATTEMPTS + 1):
        quiet = quiet_gap_ms(engine)
        with RssWatch(engine.proc.pid) as rss, NormalClient(engine.bus, engine.rpc) as client:
            figures = attack()
        rss.settle(SETTLE_MB)
        seen = client.figures
        report(name, rss, seen, quiet_gap_ms=round(quiet), attempt=attempt, **figures)
        assert seen.rpc_failures == 0, seen
        assert rss.peak - rss.before < peak_mb, f"RSS peaked at {rss.peak:.0f} MB from {rss.before:.0f} MB"
        assert rss.after - rss.before <= SETTLE_MB, f"RSS {rss.after:.0f} MB, baseline {rss.before:.0f} MB"
        if seen.longest_tick_gap_ms < GAP_MS + quiet:
            return figures
    raise AssertionError(f"longest tick gap {seen.longest_tick_gap_ms:.0f} ms in each of {ATTEMPTS} attempts")


def test_long_subscription_prefixes_close_the_connection_before_they_are_stored(engine):
    """200 prefixes of 100 KB (the red team's 1,000 took the engine to 4.7 GB), closed by libzmq
    before they are stored, and one of 300 bytes (over the prefix bound, under the frame bound),
    closed by the engine and counted."""

    def attack() -> dict:
        ctx = zmq.Context()
        attackers = [subscriber(ctx, engine.bus, [b"tick:%03d" % i + b"x" * 100_000 for i in range(50)])
                     for _ in range(4)]
        attackers.append(subscriber(ctx, engine.bus, [b"tick:" + b"y" * 295]))
        time.sleep(3)
        received = sum(1 for sock in attackers if sock.poll(0))
        during = health(engine.rpc)
        ctx.destroy(0)
        return {"attacker_messages": received, "subscription_bytes": during["bus_subscription_bytes"],
                "refused": during["bus_subscriptions_refused"]}

    figures = run_attack(engine, "200 SUB prefixes of 100 KB, one of 300 bytes", attack, peak_mb=SETTLE_MB)
    assert figures["attacker_messages"] == 0  # never subscribed to anything
    assert figures["subscription_bytes"] <= len(b"tick:") * 2  # the normal clients' only
    assert figures["refused"] >= 1


def test_subscriptions_over_the_budget_close_the_connection_and_are_counted(engine):
    """One connection with 2,000 distinct 110-byte prefixes (over its own budget) and 6 with
    140 each (together over the bus' budget)."""

    def prefixes(tag: bytes, n: int) -> list[bytes]:
        return [b"%s:%05d:" % (tag, i) + b"p" * 96 for i in range(n)]

    def attack() -> dict:
        ctx = zmq.Context()
        attackers = [subscriber(ctx, engine.bus, prefixes(b"greedy", 2000))]
        attackers += [subscriber(ctx, engine.bus, prefixes(b"crowd%02d" % n, 140)) for n in range(6)]
        most = 0
        # At least 3 s, and until both closes are counted (a loaded machine reads the
        # subscription notices later), at most 15 s.
        for round_ in range(60):
            time.sleep(0.25)
            during = health(engine.rpc)
            most = max(most, during["bus_subscription_bytes"])
            if round_ >= 11 and during["bus_subscriptions_refused"] >= 1 and during["bus_connections_closed"] >= 2:
                break
        for sock in attackers:
            sock.close(0)
        ctx.destroy(0)
        time.sleep(0.5)
        return {"refused": during["bus_subscriptions_refused"], "closed": during["bus_connections_closed"],
                "most_subscription_bytes": most, "after_leaving": health(engine.rpc)["bus_subscription_bytes"]}

    figures = run_attack(engine, "SUB prefixes over the budget (2,000 on one connection, 6 x 140 distinct)",
                         attack, peak_mb=SETTLE_MB)
    # The greedy one is closed over its own budget, or for what it sent unread if the engine
    # had not read that many notices yet; one of the crowd when together they pass the bus' budget.
    assert figures["refused"] >= 1 and figures["closed"] >= 2
    assert figures["most_subscription_bytes"] <= MAX_SUBSCRIPTION_BYTES_TOTAL + MAX_SUBSCRIPTION_BYTES_PER_PEER
    assert figures["after_leaving"] <= len(b"tick:") * 2


def test_clients_that_never_read_replies_lose_them_and_the_engine_holds_little(engine):
    """20 DEALERs asking candles(1000) as fast as they can for 3 s, never reading."""
    request = msgpack.packb({"op": "candles", "symbol": "EURUSD", "timeframe": "M1", "count": 1000})

    def attack() -> dict:
        ctx = zmq.Context()
        dealers = []
        for _ in range(20):
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.rcvhwm = 1  # read nothing, and let little wait on this side either
            sock.connect(engine.rpc)
            dealers.append(sock)
        sent = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for sock in dealers:
                try:
                    sock.send_multipart([b"", request], zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass
            time.sleep(0.001)
        dropped = health(engine.rpc)["rpc_replies_dropped"]
        ctx.destroy(0)
        return {"requests": sent, "replies_dropped": dropped}

    # Each client has at most MAX_QUEUED_REPLY_BYTES waiting, most of it in the kernel.
    figures = run_attack(engine, "20 DEALERs never reading candles(1000) replies", attack,
                         peak_mb=20 * MAX_QUEUED_REPLY_BYTES / 2**20)
    assert figures["replies_dropped"] > 0


def test_a_client_that_reads_gets_every_reply_of_a_burst(engine):
    """Requests sent at once, more than the engine answers in one turn and faster than its I/O
    thread hands replies to the kernel, within MAX_QUEUED_REPLY_BYTES: none is dropped."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(engine.rpc)
    candles = {"op": "candles", "symbol": "EURUSD", "timeframe": "M1", "count": 1000}  # ~140 KB each
    for op, burst in (({"op": "health"}, 200), (candles, 20)):
        for i in range(burst):
            sock.send_multipart([b"", msgpack.packb({**op, "id": i})])
        ids = []
        while len(ids) < burst and sock.poll(5000):
            ids.append(decode(sock.recv_multipart()[-1])["id"])
        assert ids == list(range(burst)), op
    assert health(engine.rpc)["rpc_replies_dropped"] == 0
    ctx.destroy(0)


def test_a_request_of_many_frames_is_refused_and_nothing_of_it_is_echoed(engine):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(engine.rpc)
    for _ in range(2000):  # a flood of them costs the engine's log a line a second
        sock.send_multipart([b"envelope-%d" % i for i in range(50)] + [msgpack.packb({"op": "health"})])
    replies = []
    while len(replies) < 2000 and sock.poll(5000):
        replies.append(sock.recv_multipart())
    assert len(replies) == 2000
    assert all(reply[:-1] == [b""] for reply in replies)  # only the delimiter: none of the 50 frames
    error = decode(replies[0][-1])["error"]
    assert error["code"] == "bad_request" and str(MAX_REQUEST_FRAMES) in error["message"]
    sock.send_multipart([b"", msgpack.packb({"op": "health", "id": 7})])  # the same client, served
    assert sock.poll(5000) and decode(sock.recv_multipart()[-1])["id"] == 7
    assert health(engine.rpc)["rpc_requests_refused"] == 2000
    output = engine.output()
    logged = output.count("refused a request of 51 frames")
    print(f"2000 requests of 51 frames: {logged} log line(s)")
    assert 1 <= logged <= 10, f"{logged} lines"
    assert "Traceback" not in output
    ctx.destroy(0)


def test_a_multipart_request_of_huge_frames_closes_the_connection_before_it_is_whole(engine):
    """One request of 300 frames of 1 MB (the red team's 1,500 took the engine to 2.9 GB): libzmq
    holds a message until its last frame, so the engine closes the connection once it has sent
    MAX_UNREAD_BYTES it could not read."""
    frame = b"x" * (1 << 20)

    def attack() -> dict:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 0
        sock.connect(engine.rpc)
        for _ in range(300):
            sock.send(frame, zmq.SNDMORE)
        sock.send(msgpack.packb({"op": "health"}))
        time.sleep(2)
        answered = sock.poll(0)
        ctx.destroy(0)
        return {"answered": answered, "connections_closed": health(engine.rpc)["rpc_connections_closed"]}

    figures = run_attack(engine, "one request of 300 x 1 MB frames", attack,
                         peak_mb=MAX_UNREAD_BYTES / 2**20 + SETTLE_MB)
    assert not figures["answered"]
    assert figures["connections_closed"] >= 1


# The pure parts: the subscription budget, the unread-bytes rule, the log rate limit.

def test_the_subscription_budget_names_the_connection_to_close():
    budget = SubscriptionBudget(max_len=8, per_peer=3, per_peer_bytes=12, total_bytes=20)
    assert budget.subscribe(1, b"x" * 9) == (1, "a prefix of 9 bytes (limit 8)")
    for prefix in (b"tick:", b"tick:", b"ind:"):  # a repeat is held once
        assert budget.subscribe(1, prefix) is None
    assert budget.total == 9
    assert budget.subscribe(1, b"abcd") == (1, "prefixes over 12 bytes")
    assert budget.subscribe(1, b"ab") is None
    assert budget.subscribe(1, b"c") == (1, "more than 3 prefixes")
    budget.unsubscribe(1, b"ab")
    assert budget.total == 9
    assert budget.subscribe(2, b"12345678") is None and budget.subscribe(3, b"12") is None
    assert budget.subscribe(2, b"ind:") is None and budget.total == 19  # held by two, counted once
    # 22 bytes in all: the peer holding the most (12 bytes) is named, not the newcomer.
    peer, why = budget.subscribe(3, b"abc")
    assert peer == 2 and "over 20" in why
    budget.forget(2)
    assert budget.total == 14  # its "ind:" is still peer 1's
    budget.forget(2)  # twice (the monitor's news, then a close) is harmless
    assert budget.total == 14


def test_the_protocol_bounds_fit_every_valid_topic_and_each_other():
    longest_topic = b"candle:" + b"S" * 64 + b":MN1:"  # MAX_SYMBOL_LEN is 64
    assert len(longest_topic) <= MAX_SUBSCRIPTION_BYTES < MAX_SUBSCRIPTION_FRAME_BYTES
    assert MAX_SUBSCRIPTIONS_PER_PEER * MAX_SUBSCRIPTION_BYTES >= MAX_SUBSCRIPTION_BYTES_PER_PEER
    assert MAX_SUBSCRIPTION_BYTES_PER_PEER < MAX_SUBSCRIPTION_BYTES_TOTAL


def test_unread_bytes_allow_for_framing_and_a_little_per_second():
    assert wire_bytes(10) == 12 and wire_bytes(255) == 257 and wire_bytes(256) == 265
    assert wire_bytes(10, curve=True) == 10 + 33 + 2
    assert not unread_over(received=1000 + 100, read=100, age_s=0, bound=1000)
    assert unread_over(received=1000 + 101, read=100, age_s=0, bound=1000)
    assert not unread_over(received=1000 + 100 + UNREAD_DRIFT_PER_S * 10, read=100, age_s=10, bound=1000)


def test_rate_limited_log_says_how_many_it_left_out(caplog, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    limited = RateLimitedLog(logging.getLogger("test.ratelog"), interval_s=1.0)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        logged = [limited.warning("bad", "bad packet %d", n) for n in range(5)]
        assert limited.warning("other", "another kind")
        clock[0] += 1.0
        assert limited.warning("bad", "bad packet %d", 5)
    assert logged == [True, False, False, False, False]
    assert [r.getMessage() for r in caplog.records] == [
        "bad packet 0", "another kind", "bad packet 5 (and 4 more since the last report)"]
