"""Rooms and delivery of each flush's serialised packets to their members, with the slow-client policy.

Each room's packets are serialised once (``batching.encode_room``) and wrapped once for the
wire (``Transport.wrap``); a member gets the same objects as every other member. A client with
more than ``soft`` bytes waiting to reach it gets no droppable packets (it is marked stale and gets
the latest state of those rooms once it has caught up; closed candles are still queued); above
``hard`` it is disconnected as a slow consumer.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.batching import Packet

ALL = "*"  # the room every client is in (account_update, market_summary)
ROTATION_STRIDE = 397  # members to advance the starting point by, per flush


class Connection(Protocol):
    def backlog(self) -> int: ...
    def send(self, bundle: Any) -> None: ...


class Transport(Protocol):
    def wrap(self, text: str) -> Any: ...
    def bundle(self, wires: list[Any]) -> Any: ...
    def connection(self, sid: str) -> Connection | None: ...
    def disconnect(self, sid: str) -> None: ...


@dataclass(slots=True)
class _Member:
    group: int
    rooms: frozenset[str] = frozenset()
    stale: set[str] = field(default_factory=set)


@dataclass
class FanoutStats:
    """What delivery did (``bridge.stats`` declares each as a figure)."""

    packets_sent: int = 0
    deliveries: int = 0
    skipped_slow: int = 0
    slow_disconnects: int = 0


# One flush's packets for a set of rooms: (wire, droppable, room, event).
_Items = list[tuple[Any, bool, str, str]]


class Fanout:
    """Who is in which room, and each flush's delivery to them."""

    def __init__(self, transport: Transport, soft: int, hard: int, groups: int = 1) -> None:
        self.transport = transport
        self.soft = soft
        self.hard = hard
        self._rooms: dict[str, set[str]] = defaultdict(set)
        self.members: dict[str, _Member] = {}
        # Clients in turn go to groups 0..groups-1; ``deliver`` serves one group.
        self.groups: list[dict[str, _Member]] = [{} for _ in range(groups)]
        # Members of each room per group, kept as they join and leave: what a flush wrote costs no set work.
        self._group_sizes: list[Counter[str]] = [Counter() for _ in range(groups)]
        self._next_group = 0
        # Latest droppable wire per (room, event): what a stale or new member is sent.
        self._latest: dict[str, dict[str, Any]] = defaultdict(dict)
        self.stats = FanoutStats()
        self._turn = 0

    def add_client(self, sid: str) -> None:
        member = self.members[sid] = _Member(group=self._next_group)
        self.groups[member.group][sid] = member
        self._next_group = (self._next_group + 1) % len(self.groups)
        self.join(sid, [ALL])

    def remove_client(self, sid: str) -> None:
        member = self.members.pop(sid, None)
        if member is None:
            return
        del self.groups[member.group][sid]
        for room in member.rooms:
            self._leave(sid, member.group, room)

    def join(self, sid: str, rooms: list[str]) -> None:
        """Add ``sid`` to ``rooms``; it gets their latest state with the next flush."""
        member = self.members.get(sid)
        if member is None:
            return
        new = [room for room in rooms if room not in member.rooms]
        member.rooms = member.rooms.union(new)
        member.stale.update(new)
        for room in new:
            self._rooms[room].add(sid)
            self._group_sizes[member.group][room] += 1

    def leave(self, sid: str, rooms: list[str]) -> None:
        member = self.members.get(sid)
        if member is None:
            return
        gone = [room for room in rooms if room in member.rooms]
        member.rooms = member.rooms.difference(gone)
        for room in gone:
            member.stale.discard(room)
            self._leave(sid, member.group, room)

    def _leave(self, sid: str, group: int, room: str) -> None:
        sizes = self._group_sizes[group]
        sizes[room] -= 1
        if not sizes[room]:
            del sizes[room]
        sids = self._rooms.get(room)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._rooms[room]

    def has_members(self, room: str) -> bool:
        return room in self._rooms

    def room_sizes(self) -> dict[str, int]:
        """``{room: members}`` of every room with members, the room every client is in included."""
        return {room: len(sids) for room, sids in self._rooms.items()}

    def subscriptions(self) -> int:
        """Room memberships, not counting the room every client is in."""
        return sum(map(len, self._rooms.values())) - len(self._rooms.get(ALL, ()))

    def members_in(self, room: str, group: int) -> int:
        """Members of ``room`` in client group ``group`` (those its flush writes to)."""
        return self._group_sizes[group][room]

    def deliver(self, batch: dict[str, list[Packet]], group: int = 0) -> None:
        """Send one flush to the members of ``group``: ``{room: packets}`` serialised once per room.

        Members with the same set of rooms share one bundle (the concatenation is built once).
        """
        wrap = self.transport.wrap
        by_room: dict[str, _Items] = {}
        for room, packets in batch.items():
            items = by_room[room] = [(wrap(p.text), p.droppable, room, p.event) for p in packets]
            latest = self._latest[room]
            for wire, droppable, _, event in items:
                if droppable:
                    latest[event] = wire
        shared: dict[frozenset[str], tuple[_Items, Any]] = {}
        members = list(self.groups[group].items())  # a slow one may be removed meanwhile
        if members:
            # Start at a different member each flush, so no client is always written last.
            self._turn = (self._turn + ROTATION_STRIDE) % len(members)
            members = members[self._turn:] + members[:self._turn]
        for sid, member in members:
            group = shared.get(member.rooms)
            if group is None:
                items = [item for room in member.rooms if room in by_room for item in by_room[room]]
                group = shared[member.rooms] = (items, self.transport.bundle([i[0] for i in items]) if items else None)
            if group[0] or member.stale:
                self._deliver_one(sid, member, *group)

    def _deliver_one(self, sid: str, member: _Member, items: _Items, bundle: Any) -> None:
        conn = self.transport.connection(sid)
        if conn is None:
            return  # not connected yet, or gone (its disconnect handler will remove it)
        backlog = conn.backlog()
        if backlog > self.hard:
            self.stats.slow_disconnects += 1
            self.remove_client(sid)
            self.transport.disconnect(sid)
            return
        if backlog > self.soft:
            wires = []
            for wire, droppable, room, _ in items:
                if droppable:
                    member.stale.add(room)
                    self.stats.skipped_slow += 1
                else:
                    wires.append(wire)
        elif member.stale:
            wires = [item[0] for item in items]
            fresh = {(room, event) for _, droppable, room, event in items if droppable}
            for room in member.stale:
                for event, wire in self._latest.get(room, {}).items():
                    if (room, event) not in fresh:
                        wires.append(wire)
            member.stale.clear()
        else:
            self.stats.deliveries += 1
            self.stats.packets_sent += len(items)
            conn.send(bundle)
            return
        if wires:
            self.stats.deliveries += 1
            self.stats.packets_sent += len(wires)
            conn.send(self.transport.bundle(wires))
