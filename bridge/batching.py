"""Per-room conflation and one-time serialisation of the updates of one flush (pure).

Between flushes the bus reader ``add``s every update to its room. ``take`` then yields, per
room, the events to send: the latest ``tick``/``order_book``/forming value per room, or per key
within a room (a position's latest per ticket; earlier ones are conflated and counted), every
closed candle, closed indicator value, deal and closing update in order (never dropped), the
candles of a room merged into one ``candles {symbol, timeframe, candles}`` event.
``encode_room`` serialises a room's events once; every member of the room gets the same text.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

CANDLES = "candles"


@dataclass(slots=True)
class _Slot:
    """One event kind in one room during one flush."""

    closed: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Packet:
    """A serialised Socket.IO event; ``droppable`` ones only carry the latest state."""

    event: str
    text: str
    droppable: bool


class Batcher:
    """Collects updates between flushes; ``take`` returns and resets them."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[tuple[str, Any], _Slot]] = {}
        self.updates = 0
        self.conflated = 0

    def add(self, room: str, event: str, payload: dict[str, Any], closed: bool = False,
            key: Any = None) -> None:
        """Queue ``payload`` as ``event`` for ``room``; ``closed`` ones are never conflated, the
        others are conflated per ``key`` (one per event and room by default)."""
        self.updates += 1
        slots = self._rooms.get(room)
        if slots is None:
            slots = self._rooms[room] = {}
        slot = slots.get((event, key))
        if slot is None:
            slot = slots[(event, key)] = _Slot()
        if closed:
            slot.closed.append(payload)
            return
        if slot.latest is not None:
            self.conflated += 1
        slot.latest = payload

    def take(self) -> dict[str, list[tuple[str, dict[str, Any], bool]]]:
        """``{room: [(event, payload, droppable), ...]}`` for this flush, and start afresh."""
        rooms, self._rooms = self._rooms, {}
        return {room: _room_events(slots) for room, slots in rooms.items()}


def _room_events(slots: dict[tuple[str, Any], _Slot]) -> list[tuple[str, dict[str, Any], bool]]:
    out: list[tuple[str, dict[str, Any], bool]] = []
    for (event, key), slot in slots.items():
        latest = slot.latest
        if latest is not None and slot.closed and (
                key is not None or latest.get("time", 0) <= slot.closed[-1].get("time", 0)):
            # The bar closed after this update, or the keyed item (a position) was closed:
            # the closing message supersedes it.
            latest = None
        items = [*slot.closed, latest] if latest is not None else slot.closed
        if not items:
            continue
        if event == CANDLES:
            first = items[0]
            out.append((CANDLES, {"symbol": first.get("symbol"), "timeframe": first.get("timeframe"),
                                  "candles": items}, not slot.closed))
        else:
            out.extend((event, item, item is latest) for item in items)
    return out


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Compact JSON; NaN/inf become ``null`` (the fast path tries the value as it is)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)


def encode_event(event: str, payload: Any) -> str:
    """The Socket.IO v5 EVENT packet (default namespace) for ``event`` with ``payload``."""
    return "2" + dumps([event, payload])


def encode_room(events: list[tuple[str, dict[str, Any], bool]]) -> list[Packet]:
    """Serialise one room's events once."""
    return [Packet(event, encode_event(event, payload), droppable) for event, payload, droppable in events]
