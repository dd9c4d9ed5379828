"""PeerWatch: which connection each frame came from, against the monitor's own timing."""
from __future__ import annotations

import zmq

from engine.bus import bound_subscriptions
from engine.connections import PeerWatch
from engine.subscriptions import SubscriptionBudget
from tests.procs import free_port


def test_notices_read_before_their_connections_accepted_event_stay_counted():
    """A connection accepted while the engine reads notices: its first notices are read before
    the monitor's ACCEPTED event is taken, and must not be forgotten when it is (the hostile
    test's crowd once never reached the bus-wide budget this way)."""
    ctx = zmq.Context()
    try:
        xpub = ctx.socket(zmq.XPUB)
        xpub.linger = 0
        bound_subscriptions(xpub)
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        xpub.bind(endpoint)
        budget = SubscriptionBudget()
        watch = PeerWatch(xpub, "test subscribers", 10_000, on_gone=budget.forget)
        prefixes = [b"tick:EURUSD", b"candle:EURUSD:M1"]
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        for prefix in prefixes:
            sub.subscribe(prefix)
        sub.connect(endpoint)
        seen = []
        while len(seen) < len(prefixes):  # events() not called first: ACCEPTED still waits
            assert xpub.poll(5000), "no subscription notice in 5 s"
            frame = xpub.recv(copy=False)
            fd = watch.read(frame)
            assert fd is not None and fd >= 0
            assert budget.subscribe(fd, frame.bytes[1:]) is None
            seen.append(frame.bytes[1:])
        watch.events()
        assert sorted(seen) == sorted(prefixes)
        assert budget.total == sum(map(len, prefixes))
        assert watch.connections() == [fd]
        watch.stop()
    finally:
        ctx.destroy(0)
