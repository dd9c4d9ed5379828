"""Gap repair: a bot behind a tiny high-water mark gets every tick once, in order, filled from the
engine's tick journal; what the journal no longer holds is reported lost, and the stream goes on."""
import time

import pytest
import zmq

from engine.client import RpcClient, Subscriber
from engine.protocol import Stamper, encode
from tests.procs import EngineProcess, free_port


def read_slowly(sub: Subscriber, messages: int, pause_every: int, pause_s: float, seconds: float = 30.0):
    """Read ``messages`` messages, stalling now and then so the bus drops what it cannot queue;
    returns them per topic."""
    by_topic: dict[str, list] = {}
    n = 0
    deadline = time.monotonic() + seconds
    while n < messages and time.monotonic() < deadline:
        message = sub.recv(timeout_ms=1000)
        if message is None:
            continue
        n += 1
        by_topic.setdefault(message.topic, []).append(message)
        if n % pause_every == 0:
            time.sleep(pause_s)
    return by_topic


def test_a_bot_behind_a_tiny_hwm_repairs_every_gap(start_engine):
    # A journal of 2M ticks a symbol (48 MB each) outlasts the test's run at 20k ticks/s however
    # slow the machine, so what was delivered can be checked against it by seq at the end.
    engine = start_engine("--rate", "20000", "--symbols", "EURUSD,GBPUSD", "--hwm", "100",
                          "--tick-journal", "2000000")
    gaps = []
    with RpcClient(engine.rpc) as rpc, Subscriber(engine.bus, ["tick:"], rpc=rpc, repair=True, hwm=10,
                                                  on_gap=gaps.append) as sub:
        by_topic = read_slowly(sub, 30_000, 4000, 0.3)
        print(f"\ngap repair: {sum(map(len, by_topic.values()))} ticks delivered, {len(gaps)} gaps, "
              f"{sub.repaired} ticks repaired, {sub.lost} lost")
        assert len(gaps) >= 1 and sub.repaired > 0  # the stalls did make the bus drop
        assert {g.outcome for g in gaps} == {"repaired"} and sub.lost == 0
        for topic, messages in by_topic.items():
            seqs = [m.data["seq"] for m in messages]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), topic  # each once, in order
            # What was delivered, live or repaired, is what the engine published.
            tail = messages[-3000:]
            journaled = rpc.ticks(topic.split(":")[1], after_seq=tail[0].data["seq"] - 1,
                                  epoch=tail[0].data["epoch"], count=len(tail))
            assert [m.data for m in tail] == journaled
            assert any(m.repaired for m in messages) or topic not in {g.topic for g in gaps}


def test_ticks_gone_from_the_journal_are_reported_lost_and_the_stream_goes_on(start_engine):
    engine = start_engine("--rate", "20000", "--symbols", "EURUSD", "--hwm", "100", "--tick-journal", "100")
    gaps = []
    with RpcClient(engine.rpc) as rpc, Subscriber(engine.bus, ["tick:"], rpc=rpc, repair=True, hwm=10,
                                                  on_gap=gaps.append) as sub:
        by_topic = read_slowly(sub, 12_000, 3000, 0.5)
        lost = [g for g in gaps if g.outcome == "lost"]
        assert lost and sub.lost >= sum(g.last - g.first + 1 for g in lost)
        seqs = [m.data["seq"] for m in by_topic["tick:EURUSD:"]]
        assert seqs == sorted(set(seqs)) and len(seqs) >= 12_000  # no duplicate, nothing reordered
        for gap in lost:  # the ticks after a lost gap were still delivered
            assert gap.last + 1 in seqs


def test_repair_needs_an_rpc_client_and_keeps_only_ticks(zmq_ctx):
    with pytest.raises(ValueError, match="RpcClient"):
        Subscriber("tcp://127.0.0.1:1", ["tick:"], repair=True, ctx=zmq_ctx)
    pub = zmq_ctx.socket(zmq.PUB)
    pub.linger = 0
    port = free_port()
    pub.bind(f"tcp://127.0.0.1:{port}")
    gaps = []
    # Never called: the journal keeps ticks only, so a candle gap is lost at once.
    rpc = RpcClient(f"tcp://127.0.0.1:{free_port()}", timeout_ms=100, ctx=zmq_ctx)
    sub = Subscriber(f"tcp://127.0.0.1:{port}", ["candle:"], rpc=rpc, repair=True, on_gap=gaps.append,
                     ctx=zmq_ctx)
    stamper = Stamper(epoch=9)
    topic = b"candle:EURUSD:M1:"
    for _ in range(200):  # until the subscription is live (PUB drops before)
        pub.send_multipart([topic, encode(stamper.stamp(topic, {"time": 0}))])
        if sub.recv(timeout_ms=10) is not None:
            break
    for _ in range(3):
        stamper.next_seq(topic)  # three bars never sent
    pub.send_multipart([topic, encode(stamper.stamp(topic, {"time": 1}))])
    message = None
    while message is None or message.data["time"] != 1:
        message = sub.recv(timeout_ms=2000)
        assert message is not None
    assert [(g.kind, g.outcome) for g in gaps] == [("gap", "lost")] and sub.lost == 3
    sub.close()
    rpc.close()


def test_after_an_engine_restart_the_new_run_is_delivered_from_its_first_tick(started):
    first = EngineProcess(["--rate", "2000", "--symbols", "EURUSD"])
    started.append(first.start())
    gaps = []
    with RpcClient(first.rpc) as rpc, Subscriber(first.bus, ["tick:"], rpc=rpc, repair=True,
                                                 on_gap=gaps.append) as sub:
        assert sub.recv(timeout_ms=5000) is not None
        first.stop()
        second = EngineProcess(["--rate", "2000", "--symbols", "EURUSD"], bus_port=first.bus_port,
                               rpc_port=first.rpc_port, pub_port=first.pub_port)
        started.append(second.start())
        epoch = rpc.health()["epoch"]
        delivered = []
        while len(delivered) < 500:
            message = sub.recv(timeout_ms=5000)
            assert message is not None
            if message.data["epoch"] == epoch:
                delivered.append(message)
    restarts = [g for g in gaps if g.kind == "restart"]
    assert [(g.epoch, g.outcome) for g in restarts] == [(epoch, "repaired")]
    # However late the subscriber reconnected, it gets the new run from seq 1, each tick once,
    # in order (what it missed filled from the new engine's journal).
    assert [m.data["seq"] for m in delivered] == list(range(1, 501))
