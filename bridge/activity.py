"""The account's open positions and pending orders as the bus gave them (pure).

The bridge answers ``get_positions`` and ``get_orders`` from this cache: each ``position:`` and
``order:`` message upserts its ticket (``open``, ``modified``) or removes it (``closed``); the
engine's snapshot of a kind (at start-up and after an outage) replaces the set, then what the
stream changed while the snapshot was on its way is applied again. Bounded: the bus is not
trusted to be small.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.activity import CLOSED

MAX_OPEN_ITEMS = 10_000  # per kind: far above any account's, far below what hurts

Item = dict[str, Any]


class OpenItems:
    """One kind's open items by ticket, each as its last message."""

    def __init__(self, max_items: int = MAX_OPEN_ITEMS) -> None:
        self._items: dict[int, Item] = {}
        self._max = max_items
        self._since_ask: dict[int, Item | None] | None = None  # what the stream changed during a resync
        self.refused = 0  # new tickets past the bound

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, item: Item) -> bool:
        """Take one stream message; False when it was refused (a new ticket over the bound)."""
        ticket = item["ticket"]
        if item["state"] == CLOSED:
            self._items.pop(ticket, None)
            self._remember(ticket, None)
            return True
        if ticket not in self._items and len(self._items) >= self._max:
            self.refused += 1
            return False
        self._items[ticket] = item
        self._remember(ticket, item)
        return True

    def _remember(self, ticket: int, item: Item | None) -> None:
        if self._since_ask is not None and (ticket in self._since_ask or len(self._since_ask) < self._max):
            self._since_ask[ticket] = item

    def asking(self) -> None:
        """A snapshot is being asked for: remember what the stream changes until it arrives."""
        self._since_ask = {}

    def resync(self, snapshot: Iterable[Item]) -> None:
        """Replace the set with a snapshot's, then apply again what the stream changed since it
        was asked for (an update or a close the snapshot may predate)."""
        fresh: dict[int, Item] = {}
        for item in snapshot:
            if len(fresh) < self._max:
                fresh[item["ticket"]] = item
        for ticket, item in (self._since_ask or {}).items():
            if item is None:
                fresh.pop(ticket, None)
            elif ticket in fresh or len(fresh) < self._max:
                fresh[ticket] = item
        self._items, self._since_ask = fresh, None

    def items(self, symbol: str | None = None) -> list[Item]:
        """The open items (of ``symbol`` only, if given), by ticket."""
        return [self._items[t] for t in sorted(self._items)
                if symbol is None or self._items[t]["symbol"] == symbol]
