"""Account activity's pure core: records from MT5's shapes, changes between polls, deals once."""
from __future__ import annotations

import random

from engine.activity import (CLOSED, DEALS, MODIFIED, OPEN, ORDERS, POSITIONS, DealCursor, by_ticket,
                             changes, deal_topic_part)
from engine.protocol import DEAL_FIELDS, ORDER_FIELDS, POSITION_FIELDS, decode, encode
from tests.mt5_trading import ORDER_TYPE_BUY_LIMIT, POSITION_TYPE_BUY, POSITION_TYPE_SELL, TradeBook

T0 = 1_704_189_600_000  # 2024-01-02 10:00:00.000 server time


def quotes(bid: float = 1.1000, ask: float = 1.1002):
    return lambda symbol: (bid, ask, 100_000.0)


def test_records_carry_the_payload_fields_with_floats_for_every_price_and_amount() -> None:
    book = TradeBook(quotes(), 10_000.0)
    ticket = book.open_position(T0, "EURUSD", POSITION_TYPE_BUY, 1.0, 1.0990, sl=1, magic=7)
    book.place_order(T0 + 5, "EURUSD", ORDER_TYPE_BUY_LIMIT, 2.0, 1.0950)
    position = POSITIONS.record(book.positions()[0])
    order = ORDERS.record(book.orders()[0])
    deal = DEALS.record(book.deals(0, 2**40)[0])
    assert list(position) == list(POSITION_FIELDS)
    assert list(order) == list(ORDER_FIELDS)
    assert list(deal) == list(DEAL_FIELDS)
    assert position["ticket"] == ticket and position["identifier"] == ticket
    assert position["sl"] == 1.0 and isinstance(position["sl"], float)  # a whole price stays a float
    assert position["price_current"] == 1.1000 and position["profit"] == 100.0
    assert order["order_state"] == 1 and order["volume_current"] == 2.0  # ORDER_STATE_PLACED
    assert (deal["entry"], deal["position_id"], deal["magic"]) == (0, ticket, 7)
    # The msgpack frame keeps the types: floats as float64, integers as integers.
    assert decode(encode(position)) == position
    assert all(isinstance(decode(encode(position))[f], float) for f in POSITIONS.floats)


def test_records_read_maps_as_well_as_namedtuples() -> None:
    book = TradeBook(quotes(), 0.0)
    book.open_position(T0, "EURUSD", POSITION_TYPE_SELL, 0.5, 1.1010)
    item = book.positions()[0]
    assert POSITIONS.record(item._asdict()) == POSITIONS.record(item)


def test_changes_name_each_open_modification_and_close_once() -> None:
    book = TradeBook(quotes(), 10_000.0)
    polls = [by_ticket(map(POSITIONS.record, book.positions()))]
    a = book.open_position(T0, "EURUSD", POSITION_TYPE_BUY, 1.0, 1.0990)
    b = book.open_position(T0 + 1, "GBPUSD", POSITION_TYPE_SELL, 2.0, 1.2700)
    polls.append(by_ticket(map(POSITIONS.record, book.positions())))
    book.modify_position(T0 + 2, a, sl=1.0900, tp=1.1200)
    book.close_position(T0 + 3, b, 1.2690, volume=0.5)
    polls.append(by_ticket(map(POSITIONS.record, book.positions())))
    polls.append(by_ticket(map(POSITIONS.record, book.positions())))  # nothing happened
    book.close_position(T0 + 4, b, 1.2680)
    polls.append(by_ticket(map(POSITIONS.record, book.positions())))
    steps = [[(r["ticket"], r["state"]) for r in changes(x, y)] for x, y in zip(polls, polls[1:])]
    assert steps == [[(a, OPEN), (b, OPEN)], [(a, MODIFIED), (b, MODIFIED)], [], [(b, CLOSED)]]
    partial = changes(polls[1], polls[2])[1]
    assert partial["volume"] == 1.5
    closed = changes(polls[3], polls[4])[0]
    assert closed["volume"] == 1.5 and closed["symbol"] == "GBPUSD"  # its last known fields


def test_balance_operations_have_their_own_topic_part() -> None:
    book = TradeBook(quotes(), 0.0)
    book.deposit(T0, 500.0)
    book.open_position(T0 + 1, "EURUSD", POSITION_TYPE_BUY, 1.0, 1.1)
    parts = [deal_topic_part(DEALS.record(d)) for d in book.deals(0, 2**40)]
    assert parts == ["-", "EURUSD"]


def test_deal_cursor_delivers_each_deal_once_in_order_across_overlapping_reads() -> None:
    rng = random.Random(5)
    book = TradeBook(quotes(), 10_000.0)
    cursor = DealCursor(T0, overlap_ms=2_000)
    delivered: list[int] = []
    now = T0
    for _ in range(300):
        now += rng.randint(0, 700)
        if rng.random() < 0.6:
            book.deposit(now, 1.0)
        # Each read asks from the cursor's second (the package reads whole seconds), to now.
        read = [DEALS.record(d) for d in book.deals(cursor.from_msc // 1000, now // 1000 + 1)]
        delivered += [d["ticket"] for d in cursor.accept(read)]
    everything = [d.ticket for d in book.deals(0, 2**40)]
    assert delivered == everything
    assert len(cursor._seen) < 30  # only the overlap's tickets are remembered


def test_deal_cursor_finds_a_deal_recorded_late_within_the_overlap() -> None:
    cursor = DealCursor(T0, overlap_ms=5_000)
    first = {"ticket": 2, "time_msc": T0 + 4_000}
    late = {"ticket": 1, "time_msc": T0 + 1_000}  # booked after ticket 2 was read
    assert cursor.accept([first]) == [first]
    assert cursor.accept([first, late]) == [late]
    assert cursor.accept([first, late]) == []
    too_late = {"ticket": 0, "time_msc": T0 - 2_000}  # older than the overlap reaches
    assert cursor.accept([too_late]) == []
