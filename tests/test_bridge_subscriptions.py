"""A client's subscriptions as a set (bridge.subscriptions): every order of subscribe/unsubscribe
over two symbols and two timeframes, against a model written the obvious way."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.subscriptions import MAX_SUBSCRIPTIONS, RoomChange, Subscriptions, rooms_of
from bridge.validation import ClientError

SYMBOLS = ("EURUSD", "GBPUSD")
TIMEFRAMES = (None, "M1", "H1")
REQUESTS = [(event, symbol, tf) for event in ("subscribe", "unsubscribe") for symbol in SYMBOLS for tf in TIMEFRAMES]


class Model:
    """The rules as the README states them, room by room, with no shared code."""

    def __init__(self) -> None:
        self.held: set[tuple[str, str | None]] = set()

    def apply(self, event: str, symbol: str, tf: str | None) -> None:
        if event == "subscribe":
            self.held.add((symbol, tf))
        elif tf is None:
            self.held = {(s, t) for s, t in self.held if s != symbol}
        else:
            self.held.discard((symbol, tf))

    def rooms(self) -> set[str]:
        rooms = set()
        for symbol in SYMBOLS:
            if any(s == symbol for s, _ in self.held):
                rooms.add(f"s:{symbol}")
            for tf in TIMEFRAMES[1:]:
                if (symbol, tf) in self.held:
                    rooms.add(f"t:{symbol}:{tf}")
        return rooms


def replay(requests) -> None:
    """Apply ``requests`` to the core, the model and a room set kept only from the changes."""
    subs, model, joined = Subscriptions(), Model(), set()
    for event, symbol, tf in requests:
        change = getattr(subs, event)(symbol, tf)
        assert not set(change.enter) & joined, "entered a room it was in"
        assert set(change.leave) <= joined, "left a room it was not in"
        joined = (joined | set(change.enter)) - set(change.leave)
        model.apply(event, symbol, tf)
        assert subs.held == model.held
        assert joined == model.rooms() == rooms_of(subs.held), (requests, joined)
        assert list(change.enter) == sorted(change.enter) and list(change.leave) == sorted(change.leave)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_every_sequence_of_up_to_three_requests_matches_the_model(length):
    for requests in itertools.product(REQUESTS, repeat=length):  # 12, 144, 1728 sequences
        replay(requests)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(REQUESTS), max_size=30))
def test_any_longer_sequence_matches_the_model(requests):
    replay(requests)


SUBSCRIBES = [r for r in REQUESTS if r[0] == "subscribe"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SUBSCRIBES), max_size=12), st.sampled_from(SUBSCRIBES))
def test_unsubscribe_with_the_payload_of_a_new_subscribe_undoes_it(earlier, mirrored):
    """Exactly that one when it names a timeframe; without one, every subscription of the symbol
    goes (so exactly that one only when the symbol had no other)."""
    _, symbol, tf = mirrored
    subs = Subscriptions()
    for _, s, t in earlier:
        subs.subscribe(s, t)
    if (symbol, tf) in subs.held:
        return  # already held: subscribing again is no change to undo
    before = subs.held
    entered = subs.subscribe(symbol, tf)
    left = subs.unsubscribe(symbol, tf)
    if tf is not None:
        assert subs.held == before
        assert left.leave == entered.enter and left.enter == ()
    else:
        assert subs.held == {(s, t) for s, t in before if s != symbol}
        assert set(left.leave) == {room for room in rooms_of(before | {mirrored[1:]}) if room.split(":")[1] == symbol}


def test_the_issue_case_subscribe_then_the_same_unsubscribe_leaves_the_tick_room_too():
    subs = Subscriptions()
    assert subs.subscribe("EURUSD", "M1") == RoomChange(enter=("s:EURUSD", "t:EURUSD:M1"))
    assert subs.unsubscribe("EURUSD", "M1") == RoomChange(leave=("s:EURUSD", "t:EURUSD:M1"))
    assert len(subs) == 0


def test_the_tick_room_stays_while_any_subscription_names_the_symbol():
    subs = Subscriptions()
    subs.subscribe("EURUSD", "M1")
    assert subs.subscribe("EURUSD", "H1") == RoomChange(enter=("t:EURUSD:H1",))
    assert subs.subscribe("EURUSD", None) == RoomChange()  # already in its tick room
    assert subs.unsubscribe("EURUSD", "M1") == RoomChange(leave=("t:EURUSD:M1",))
    assert subs.unsubscribe("EURUSD", "H1") == RoomChange(leave=("t:EURUSD:H1",))
    assert subs.held == {("EURUSD", None)}
    assert subs.unsubscribe("EURUSD", None) == RoomChange(leave=("s:EURUSD",))


def test_unsubscribe_without_timeframe_removes_all_of_the_symbol_and_nothing_else():
    subs = Subscriptions()
    for symbol, tf in (("EURUSD", "M1"), ("EURUSD", "H1"), ("GBPUSD", "M1")):
        subs.subscribe(symbol, tf)
    assert subs.unsubscribe("EURUSD", None) == RoomChange(leave=("s:EURUSD", "t:EURUSD:H1", "t:EURUSD:M1"))
    assert subs.held == {("GBPUSD", "M1")}


def test_repeats_and_unknown_unsubscribes_change_nothing():
    subs = Subscriptions()
    assert subs.unsubscribe("EURUSD", "M1") == RoomChange()
    subs.subscribe("EURUSD", "M1")
    assert subs.subscribe("EURUSD", "M1") == RoomChange()
    assert subs.unsubscribe("EURUSD", "H1") == RoomChange()
    assert subs.unsubscribe("GBPUSD", None) == RoomChange()
    assert subs.held == {("EURUSD", "M1")}


def test_a_client_holds_at_most_its_limit_and_may_subscribe_again_after_unsubscribing():
    assert MAX_SUBSCRIPTIONS == Subscriptions().limit
    subs = Subscriptions(limit=3)
    for tf in ("M1", "M5", "H1"):
        subs.subscribe("EURUSD", tf)
    assert subs.subscribe("EURUSD", "M1") == RoomChange()  # held already: not a new one
    with pytest.raises(ClientError) as refused:
        subs.subscribe("EURUSD", None)
    assert refused.value.code == "too_many" and refused.value.event == "subscribe" and "3" in refused.value.message
    assert len(subs) == 3 and rooms_of(subs.held) == {"s:EURUSD", "t:EURUSD:M1", "t:EURUSD:M5", "t:EURUSD:H1"}
    subs.unsubscribe("EURUSD", "M5")
    assert subs.subscribe("GBPUSD", None) == RoomChange(enter=("s:GBPUSD",))
