"""The bridge's account activity core: open sets by ticket, their resync, keyed conflation."""
from __future__ import annotations

from bridge.activity import OpenItems
from bridge.batching import Batcher


def item(ticket: int, state: str = "open", seq: int = 1, symbol: str = "EURUSD", epoch: int = 7, **more) -> dict:
    return {"ticket": ticket, "symbol": symbol, "state": state, "seq": seq, "epoch": epoch, **more}


def test_updates_upsert_and_closing_removes() -> None:
    items = OpenItems()
    for message in (item(1), item(2, symbol="XAUUSD"), item(1, "modified", seq=2, volume=0.5), item(3),
                    item(3, "closed", seq=3)):
        assert items.apply(message)
    assert [(i["ticket"], i["state"]) for i in items.items()] == [(1, "modified"), (2, "open")]
    assert items.items()[0]["volume"] == 0.5
    assert [i["ticket"] for i in items.items("XAUUSD")] == [2]
    assert items.items("GBPUSD") == []


def test_the_bound_refuses_new_tickets_but_not_updates_or_closes() -> None:
    items = OpenItems(max_items=2)
    assert items.apply(item(1)) and items.apply(item(2))
    assert not items.apply(item(3)) and items.refused == 1
    assert items.apply(item(2, "modified", seq=2)) and items.apply(item(1, "closed", seq=3))
    assert items.apply(item(3, seq=4)) and len(items) == 2


def test_a_snapshot_replaces_the_set_then_what_the_stream_changed_meanwhile_is_applied() -> None:
    items = OpenItems()
    items.apply(item(1, seq=5))  # closed while the bridge was away: not in the snapshot
    items.apply(item(2, seq=6, volume=1.0))
    items.asking()
    items.apply(item(2, "modified", seq=9, volume=2.0))  # arrives before the (older) snapshot
    items.apply(item(4, seq=12))  # opened after the snapshot was taken
    items.apply(item(5, seq=13))
    items.apply(item(5, "closed", seq=14))  # opened and closed meanwhile: in the snapshot, gone
    items.resync([item(2, seq=6, volume=1.0), item(3, seq=8), item(5, seq=13)])
    assert [(i["ticket"], i["seq"]) for i in items.items()] == [(2, 9), (3, 8), (4, 12)]
    items.asking()
    items.resync([])  # the engine says: nothing open
    assert items.items() == []
    items.apply(item(6))  # not asking: nothing remembered
    items.resync([item(7)])
    assert [i["ticket"] for i in items.items()] == [7]


def test_keyed_conflation_keeps_the_latest_per_ticket_and_every_close() -> None:
    batcher = Batcher()
    batcher.add("*", "position_update", {"ticket": 1, "profit": 1.0}, key=1)
    batcher.add("*", "position_update", {"ticket": 2, "profit": 5.0}, key=2)
    batcher.add("*", "position_update", {"ticket": 1, "profit": 2.0}, key=1)
    batcher.add("*", "position_update", {"ticket": 3, "state": "open"}, key=3)
    batcher.add("*", "position_update", {"ticket": 3, "state": "closed"}, closed=True, key=3)
    for n in range(3):
        batcher.add("*", "deal", {"ticket": 10 + n}, closed=True)
    events = batcher.take()["*"]
    assert [(e, p["ticket"], p.get("profit", p.get("state")), droppable) for e, p, droppable in events] == [
        ("position_update", 1, 2.0, True), ("position_update", 2, 5.0, True),
        ("position_update", 3, "closed", False),  # the close supersedes the open of the same flush
        ("deal", 10, None, False), ("deal", 11, None, False), ("deal", 12, None, False)]
    assert batcher.conflated == 1
