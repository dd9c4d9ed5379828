"""Account activity (pure): MT5 positions, orders and deals as bus records, what changed
between two polls, and deals delivered exactly once by reads that overlap.

A source polls the terminal for the open positions and pending orders (whole sets) and for the
deals since a cursor; ``changes`` turns two sets into ``open``/``modified``/``closed`` records,
``DealCursor`` drops the deals already delivered.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.protocol import DEAL, DEAL_FIELDS, ORDER, ORDER_FIELDS, POSITION, POSITION_FIELDS

OPEN, MODIFIED, CLOSED = "open", "modified", "closed"
# The topic part of deals that concern no symbol (balance, credit and other account operations).
NO_SYMBOL = "-"

Record = dict[str, Any]


@dataclass(frozen=True)
class Activity:
    """One look at the account: its open positions and pending orders (bus records, without
    ``state``), and the deals booked since the previous look, oldest first."""

    positions: tuple[Record, ...]
    orders: tuple[Record, ...]
    deals: tuple[Record, ...]


@dataclass(frozen=True)
class ActivityKind:
    """One kind of account activity: its topic kind and payload fields, which of them are
    prices or amounts (always floats), and the MT5 attribute each field is read from."""

    name: str
    fields: tuple[str, ...]
    floats: frozenset[str]
    renamed: Mapping[str, str]  # payload field -> MT5 attribute, where they differ

    def record(self, item: Any) -> Record:
        """The payload of one MT5 TradePosition/TradeOrder/TradeDeal (a namedtuple or a map)."""
        read = item.get if isinstance(item, Mapping) else lambda name: getattr(item, name)
        out: Record = {}
        for field in self.fields:
            value = read(self.renamed.get(field, field))
            if field in self.floats:
                out[field] = float(value)
            elif isinstance(value, str):
                out[field] = value
            else:
                out[field] = int(value)
        return out


POSITIONS = ActivityKind(
    POSITION, POSITION_FIELDS,
    frozenset({"volume", "price_open", "sl", "tp", "price_current", "swap", "profit"}), {})
ORDERS = ActivityKind(
    ORDER, ORDER_FIELDS,
    frozenset({"volume_initial", "volume_current", "price_open", "sl", "tp"}), {"order_state": "state"})
DEALS = ActivityKind(
    DEAL, DEAL_FIELDS,
    frozenset({"volume", "price", "commission", "swap", "profit", "fee"}), {})


def by_ticket(records: Iterable[Record]) -> dict[int, Record]:
    return {r["ticket"]: r for r in records}


def changes(before: Mapping[int, Record], after: Mapping[int, Record]) -> list[Record]:
    """What happened between two polls of a set (positions or orders), each record with its
    ``state``: ``open`` (new ticket), ``modified`` (any field changed: SL/TP, volume after a
    partial close, the price and profit of a position), ``closed`` (gone: its last known fields)."""
    out: list[Record] = []
    for ticket, record in after.items():
        old = before.get(ticket)
        if old is None:
            out.append({**record, "state": OPEN})
        elif old != record:
            out.append({**record, "state": MODIFIED})
    out.extend({**record, "state": CLOSED} for ticket, record in before.items() if ticket not in after)
    return out


def deal_topic_part(deal: Record) -> str:
    return deal["symbol"] or NO_SYMBOL


class DealCursor:
    """Where the next deals read starts, and the deals already delivered near it.

    Each read asks from ``overlap_ms`` before the newest deal delivered, so a deal the server
    records late (with an earlier time than one already seen) is still found; the tickets seen
    within that overlap are remembered, so none is delivered twice. Times are the deals' own
    ``time_msc`` (the trade server's clock).
    """

    def __init__(self, start_msc: int, overlap_ms: int) -> None:
        self.newest_msc = start_msc
        self.overlap_ms = overlap_ms
        self._seen: dict[int, int] = {}  # ticket -> time_msc, for the deals within the overlap

    @property
    def from_msc(self) -> int:
        """The earliest deal time the next read must cover."""
        return self.newest_msc - self.overlap_ms

    def accept(self, deals: Iterable[Record]) -> list[Record]:
        """The deals of one read not delivered before, oldest first (by time, then ticket).

        Deals older than ``from_msc`` are left out: they were delivered, or are older than the
        overlap allows (see ``overlap_ms``).
        """
        floor = self.from_msc
        fresh = sorted((d for d in deals if d["time_msc"] >= floor and d["ticket"] not in self._seen),
                       key=lambda d: (d["time_msc"], d["ticket"]))
        for deal in fresh:
            self._seen[deal["ticket"]] = deal["time_msc"]
            self.newest_msc = max(self.newest_msc, deal["time_msc"])
        floor = self.from_msc
        self._seen = {t: ms for t, ms in self._seen.items() if ms >= floor}
        return fresh
