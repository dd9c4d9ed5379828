"""The subscription budget: what each bus connection holds, within the protocol's bounds.

libzmq's XPUB stores every subscription in a trie (about 47 bytes per prefix byte) and offers
no limit of its own, so the engine keeps this account of the notices it reads (XPUB_VERBOSER
reports every subscribe and unsubscribe with the connection it came from) and closes a
connection that goes over. The bus-wide bound counts each distinct prefix once, as the trie
stores it: 2,000 bots subscribed to the same few topics cost what one does, while distinct
prefixes made up to fill the trie are bounded. Pure accounting: ``bus.py`` reads the notices
and closes connections.

The same account says whether any connection would receive a topic at all (``wanted``), so a
publisher can skip encoding what libzmq would only filter out.
"""
from __future__ import annotations

from collections.abc import Hashable

from engine.protocol import (
    MAX_SUBSCRIPTION_BYTES,
    MAX_SUBSCRIPTION_BYTES_PER_PEER,
    MAX_SUBSCRIPTION_BYTES_TOTAL,
    MAX_SUBSCRIPTIONS_PER_PEER,
)

# Topics whose ``wanted`` answer is remembered until a prefix comes or goes: the engine asks of
# its own few topics, so a bound reached only means asking again.
WANTED_TOPICS = 4096


class SubscriptionBudget:
    """Each peer's distinct prefixes and their bytes, and the bytes of the distinct prefixes of
    all peers together (``total``)."""

    def __init__(self, max_len: int = MAX_SUBSCRIPTION_BYTES, per_peer: int = MAX_SUBSCRIPTIONS_PER_PEER,
                 per_peer_bytes: int = MAX_SUBSCRIPTION_BYTES_PER_PEER,
                 total_bytes: int = MAX_SUBSCRIPTION_BYTES_TOTAL) -> None:
        self.max_len, self.per_peer, self.per_peer_bytes, self.total_bytes = (
            max_len, per_peer, per_peer_bytes, total_bytes)
        self._held: dict[Hashable, set[bytes]] = {}
        self._bytes: dict[Hashable, int] = {}
        self._holders: dict[bytes, int] = {}  # prefix -> how many peers hold it
        self.total = 0
        self._wanted: dict[bytes, bool] = {}  # topic -> whether a held prefix matches it

    def subscribe(self, peer: Hashable, prefix: bytes) -> tuple[Hashable, str] | None:
        """Count ``prefix`` for ``peer``; ``(peer to close, why)`` when a bound is passed.

        Over the bus-wide total, the peer holding the most bytes is named, so one client filling the
        bus cannot lock out the next one.
        """
        if len(prefix) > self.max_len:
            return peer, f"a prefix of {len(prefix)} bytes (limit {self.max_len})"
        held = self._held.setdefault(peer, set())
        if prefix in held:
            return None  # libzmq keeps one entry per connection and prefix
        if len(held) >= self.per_peer:
            return peer, f"more than {self.per_peer} prefixes"
        size = self._bytes.get(peer, 0) + len(prefix)
        if size > self.per_peer_bytes:
            return peer, f"prefixes over {self.per_peer_bytes} bytes"
        held.add(prefix)
        self._bytes[peer] = size
        self._hold(prefix)
        if self.total > self.total_bytes:
            largest = max(self._bytes, key=self._bytes.__getitem__)
            return largest, f"the most subscription bytes ({self._bytes[largest]}) when all " \
                            f"connections' went over {self.total_bytes}"
        return None

    def unsubscribe(self, peer: Hashable, prefix: bytes) -> None:
        held = self._held.get(peer)
        if held is not None and prefix in held:
            held.remove(prefix)
            self._bytes[peer] -= len(prefix)
            self._release(prefix)

    def forget(self, peer: Hashable) -> None:
        """The peer is gone (libzmq dropped its subscriptions with its connection)."""
        for prefix in self._held.pop(peer, ()):
            self._release(prefix)
        self._bytes.pop(peer, None)

    def wanted(self, topic: bytes) -> bool:
        """Whether some peer holds a prefix of ``topic``: else libzmq sends it to nobody."""
        known = self._wanted.get(topic)
        if known is None:
            known = any(topic.startswith(prefix) for prefix in self._holders)
            if len(self._wanted) < WANTED_TOPICS:
                self._wanted[topic] = known
        return known

    def _hold(self, prefix: bytes) -> None:
        holders = self._holders.get(prefix, 0)
        self._holders[prefix] = holders + 1
        if not holders:
            self.total += len(prefix)
            self._wanted.clear()

    def _release(self, prefix: bytes) -> None:
        holders = self._holders.pop(prefix) - 1
        if holders:
            self._holders[prefix] = holders
        else:
            self.total -= len(prefix)
            self._wanted.clear()
