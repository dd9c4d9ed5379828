"""The engine's account activity: a source's positions, orders and deals onto the bus.

Each look at the source (``ACCOUNT_INTERVAL_MS``) publishes what changed: a position or order
``open``, ``modified`` or ``closed`` on ``position:SYMBOL:`` / ``order:SYMBOL:``, each new deal
once on ``deal:SYMBOL:``. Every ``ACCOUNT_SNAPSHOT_MS`` the open positions and orders are
published again as last sent (a subscriber that lost one catches up). The last message of each
open position and order answers ``snapshot`` and the ``positions``/``orders`` RPC ops.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.activity import (CLOSED, DEALS, ORDERS, POSITIONS, Activity, ActivityKind, Record, by_ticket,
                             changes, deal_topic_part)
from engine.protocol import ORDER, POSITION, topic

Publish = Callable[[bytes, dict[str, Any]], None]
# The topics whose messages are items of a set (one per open position or order), not values.
SET_PREFIXES = (topic(POSITION), topic(ORDER))


class _OpenSet:
    """One kind's open items as last published (stamped), by ticket."""

    def __init__(self, kind: ActivityKind) -> None:
        self.kind = kind
        self.sent: dict[int, Record] = {}  # ticket -> the last payload published, with seq/epoch
        self.seen: dict[int, Record] = {}  # ticket -> the record as the source gave it

    def update(self, records: tuple[Record, ...], publish: Publish) -> None:
        current = by_ticket(records)
        for record in changes(self.seen, current):
            publish(topic(self.kind.name, record["symbol"]), record)
            if record["state"] == CLOSED:
                self.sent.pop(record["ticket"], None)
            else:
                self.sent[record["ticket"]] = record
        self.seen = current

    def republish(self, publish: Publish) -> None:
        for ticket, record in list(self.sent.items()):
            fresh = {k: v for k, v in record.items() if k not in ("seq", "epoch")}
            publish(topic(self.kind.name, record["symbol"]), fresh)
            self.sent[ticket] = fresh

    def messages(self) -> list[tuple[bytes, Record]]:
        return [(topic(self.kind.name, r["symbol"]), r) for r in self.sent.values()]


class ActivityFeed:
    """Publishes a source's account activity and keeps the open sets for requests."""

    def __init__(self, publish: Publish, snapshot_ms: int) -> None:
        self._publish = publish
        self._snapshot_ms = snapshot_ms
        self._next_snapshot = 0
        self.positions = _OpenSet(POSITIONS)
        self.orders = _OpenSet(ORDERS)
        self.deals = 0  # published
        self.live = False  # the source has given its activity at least once

    def update(self, activity: Activity, now: int) -> None:
        """Publish what changed since the last look, and the open sets when one is due."""
        self.live = True
        publish = self._publish
        self.positions.update(activity.positions, publish)
        self.orders.update(activity.orders, publish)
        for deal in activity.deals:
            publish(topic(DEALS.name, deal_topic_part(deal)), dict(deal))
            self.deals += 1
        if now >= self._next_snapshot:
            if self._next_snapshot:
                self.positions.republish(publish)
                self.orders.republish(publish)
            self._next_snapshot = now + self._snapshot_ms

    def open_items(self, kind: str, symbol: str | None) -> list[Record]:
        """The open positions or orders (payloads as last published), by ticket."""
        items = (self.positions if kind == POSITIONS.name else self.orders).sent.values()
        return sorted((r for r in items if symbol is None or r["symbol"] == symbol), key=lambda r: r["ticket"])

    def snapshot(self, prefix: bytes) -> list[list[Any]]:
        """``[topic, payload]`` of every open position and order whose topic starts with ``prefix``."""
        return [[t.decode(), r] for s in (self.positions, self.orders) for t, r in s.messages()
                if t.startswith(prefix)]
