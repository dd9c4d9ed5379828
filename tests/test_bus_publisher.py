"""``BusPublisher.publish_pairs`` on a socket that waits rather than drop: every message goes
out once, in order, and ``sent`` counts them all, those published while a send waits among them."""
from __future__ import annotations

import time

import zmq

from engine.bus import BusPublisher

TOPIC, NESTED = b"ind:EURUSD:M1:", b"health:test:"


def test_sent_counts_each_message_and_what_a_wait_publishes():
    ctx = zmq.Context()
    xpub, sub = ctx.socket(zmq.XPUB), ctx.socket(zmq.SUB)
    got: list[list[bytes]] = []
    waits = {"calls": 0}
    try:
        for sock in (xpub, sub):
            sock.linger = 0
        xpub.sndhwm, sub.rcvhwm = 2, 2
        xpub.setsockopt(zmq.XPUB_NODROP, 1)
        xpub.bind("inproc://publisher-waits")
        sub.connect("inproc://publisher-waits")
        sub.subscribe(b"")
        assert xpub.recv() == b"\x01"  # the subscription is in

        def on_full() -> bool:  # the engine's wait: read what the subscriber can, serve requests
            waits["calls"] += 1
            time.sleep(0.001)
            while sub.poll(0):
                got.append(sub.recv_multipart())
            if waits["calls"] == 1:
                publisher.publish_frame(NESTED, b"\x80")
            return waits["calls"] < 10_000

        publisher = BusPublisher(xpub, on_full=on_full)
        frames = [bytes([0x81, 0xA1, 0x69, i]) for i in range(100)]  # {"i": i}
        publisher.publish_frames(TOPIC, frames)
        deadline = time.monotonic() + 5
        while len(got) < 101 and time.monotonic() < deadline:
            if sub.poll(10):
                got.append(sub.recv_multipart())
    finally:
        sub.close(0)
        xpub.close(0)
        ctx.term()
    assert publisher.waits >= 1 and publisher.dropped == 0
    assert [f for t, f in got if t == TOPIC] == frames
    assert [t for t, _ in got].count(NESTED) == 1
    assert publisher.sent == 101
