"""One client's subscriptions as a set, and the rooms that set puts it in (pure).

A subscription is ``(symbol, timeframe)`` or ``(symbol, None)``. The client is in a symbol's room
(ticks, order books) while any of its subscriptions names the symbol, and in a (symbol, timeframe)
room (candles, indicators) while it holds that pair. ``subscribe`` adds one; ``unsubscribe`` with
a timeframe removes exactly that pair, without one every subscription of the symbol. Each change
answers the rooms to enter and to leave, so the caller applies exactly the difference.
"""
from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from bridge.validation import ClientError
from engine.protocol import ErrorCode

# A client's subscriptions at most. Validation already bounds them by the symbols and timeframes
# served; this bounds them when an MT5 terminal serves thousands of symbols (about 300 bytes of
# room bookkeeping each: well inside a client's CLIENT_BUFFER_HARD_BYTES).
MAX_SUBSCRIPTIONS = 1000

Subscription = tuple[str, str | None]
SYMBOL_ROOM, TIMEFRAME_ROOM = "s:", "t:"


def symbol_room(symbol: str) -> str:
    """The room of a symbol's ticks and order books."""
    return f"{SYMBOL_ROOM}{symbol}"


def timeframe_room(symbol: str, timeframe: str) -> str:
    """The room of a symbol's candles and indicator values on one timeframe."""
    return f"{TIMEFRAME_ROOM}{symbol}:{timeframe}"


def subscription_of(room: str) -> Subscription | None:
    """What a room serves: ``(symbol, None)`` for a symbol's room, ``(symbol, timeframe)`` for a
    timeframe's; ``None`` for any other room."""
    if room.startswith(SYMBOL_ROOM):
        return room[len(SYMBOL_ROOM):], None
    if room.startswith(TIMEFRAME_ROOM):
        symbol, _, timeframe = room[len(TIMEFRAME_ROOM):].rpartition(":")
        return symbol, timeframe
    return None


def rooms_of(held: Set[Subscription]) -> frozenset[str]:
    """The rooms a client holding ``held`` is in."""
    rooms = {symbol_room(symbol) for symbol, _ in held}
    rooms.update(timeframe_room(symbol, tf) for symbol, tf in held if tf is not None)
    return frozenset(rooms)


@dataclass(frozen=True, slots=True)
class RoomChange:
    """Rooms to enter and to leave after one change, each sorted (a room in at most one)."""

    enter: tuple[str, ...] = ()
    leave: tuple[str, ...] = ()


class Subscriptions:
    """A client's subscriptions, at most ``limit`` of them."""

    def __init__(self, limit: int = MAX_SUBSCRIPTIONS) -> None:
        self.limit = limit
        self._held: set[Subscription] = set()

    @property
    def held(self) -> frozenset[Subscription]:
        return frozenset(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def subscribe(self, symbol: str, timeframe: str | None) -> RoomChange:
        """Add ``(symbol, timeframe)`` (again: nothing changes); ``ClientError(too_many)`` past the limit."""
        wanted = (symbol, timeframe)
        if wanted in self._held:
            return RoomChange()
        if len(self._held) >= self.limit:
            raise ClientError(ErrorCode.TOO_MANY,
                              f"subscribe: a client holds at most {self.limit} subscriptions; unsubscribe first",
                              "subscribe")
        return self._change(self._held | {wanted})

    def unsubscribe(self, symbol: str, timeframe: str | None) -> RoomChange:
        """Remove ``(symbol, timeframe)``, or with no timeframe every subscription of ``symbol``;
        one not held changes nothing."""
        if timeframe is None:
            return self._change({held for held in self._held if held[0] != symbol})
        return self._change(self._held - {(symbol, timeframe)})

    def _change(self, after: set[Subscription]) -> RoomChange:
        before_rooms, after_rooms = rooms_of(self._held), rooms_of(after)
        self._held = after
        return RoomChange(tuple(sorted(after_rooms - before_rooms)), tuple(sorted(before_rooms - after_rooms)))
