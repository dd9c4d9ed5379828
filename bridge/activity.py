"""The account's open positions and pending orders as the bus gave them (pure).

The bridge answers ``get_positions`` and ``get_orders`` from this cache: each ``position:`` and
``order:`` message upserts its ticket (``open``, ``modified``) or removes it (``closed``); the
engine's snapshot of a kind (at start-up and after an outage) replaces the set, keeping the
tickets the stream brought newer news of meanwhile. Bounded: the bus is not trusted to be small.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.activity import CLOSED

MAX_OPEN_ITEMS = 10_000  # per kind: far above any account's, far below what hurts

Item = dict[str, Any]


def _stamp(item: Item) -> tuple[int, int]:
    return item["epoch"], item["seq"]


class OpenItems:
    """One kind's open items by ticket, each as its last message (unstamped for clients)."""

    def __init__(self, max_items: int = MAX_OPEN_ITEMS) -> None:
        self._items: dict[int, Item] = {}
        self._max = max_items
        self.refused = 0  # new tickets past the bound

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, item: Item) -> bool:
        """Take one stream message; False when it was refused (a new ticket over the bound)."""
        ticket = item["ticket"]
        if item["state"] == CLOSED:
            self._items.pop(ticket, None)
            return True
        if ticket not in self._items and len(self._items) >= self._max:
            self.refused += 1
            return False
        self._items[ticket] = item
        return True

    def resync(self, snapshot: Iterable[Item]) -> None:
        """Replace the set with a snapshot's, keeping what the stream brought after it: an item
        whose message is newer than the snapshot's of it, or a ticket opened after the
        snapshot's newest message."""
        fresh: dict[int, Item] = {}
        newest = (0, 0)
        for item in snapshot:
            newest = max(newest, _stamp(item))
            if len(fresh) < self._max:
                fresh[item["ticket"]] = item
        for ticket, held in self._items.items():
            given = fresh.get(ticket)
            if (given is not None and _stamp(held) > _stamp(given)) or (given is None and _stamp(held) > newest):
                fresh[ticket] = held
        self._items = fresh

    def items(self, symbol: str | None = None) -> list[Item]:
        """The open items (of ``symbol`` only, if given), by ticket."""
        return [self._items[t] for t in sorted(self._items)
                if symbol is None or self._items[t]["symbol"] == symbol]
