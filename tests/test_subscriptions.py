"""SubscriptionBudget.wanted: whether any connection's prefixes match a topic, as libzmq's
XPUB trie would say, while prefixes come and go."""
from __future__ import annotations

from engine.subscriptions import WANTED_TOPICS, SubscriptionBudget

TICK, CANDLE = b"tick:EURUSD", b"candle:EURUSD:M1"


def test_a_topic_is_wanted_exactly_while_some_peer_holds_a_prefix_of_it():
    budget = SubscriptionBudget()
    assert not budget.wanted(TICK) and not budget.wanted(CANDLE)
    assert budget.subscribe("bot", b"candle:") is None
    assert budget.wanted(CANDLE) and not budget.wanted(TICK)
    assert budget.subscribe("recorder", b"tick:EUR") is None
    assert budget.wanted(TICK) and not budget.wanted(b"tick:GBPUSD")
    assert budget.subscribe("bot", b"tick:EUR") is None  # a second holder of the same prefix
    budget.unsubscribe("recorder", b"tick:EUR")
    assert budget.wanted(TICK)  # the bot still holds it
    budget.forget("bot")  # its connection is gone
    assert not budget.wanted(TICK) and not budget.wanted(CANDLE)


def test_the_empty_prefix_wants_everything_and_a_longer_prefix_not_a_shorter_topic():
    budget = SubscriptionBudget()
    assert budget.subscribe("bot", b"tick:EURUSD.pro") is None
    assert not budget.wanted(TICK)  # a prefix longer than the topic does not match it
    assert budget.subscribe("all", b"") is None
    assert budget.wanted(TICK) and budget.wanted(b"health:engine")
    budget.unsubscribe("all", b"")
    assert not budget.wanted(TICK) and budget.wanted(b"tick:EURUSD.pro")


def test_a_refused_connection_wants_nothing_once_forgotten():
    budget = SubscriptionBudget(total_bytes=10)
    assert budget.subscribe("small", b"tick:") is None
    peer, _ = budget.subscribe("large", b"candle:EURUSD")  # over the bus-wide bound
    assert peer == "large" and budget.wanted(CANDLE)  # libzmq holds it until the close
    budget.forget(peer)
    assert not budget.wanted(CANDLE) and budget.wanted(TICK)


def test_answers_past_the_remembered_bound_are_still_right():
    budget = SubscriptionBudget()
    assert budget.subscribe("bot", b"tick:A") is None
    topics = [f"tick:{'A' if i % 2 else 'B'}{i}".encode() for i in range(WANTED_TOPICS + 100)]
    assert [budget.wanted(t) for t in topics] == [t.startswith(b"tick:A") for t in topics]
    assert budget.subscribe("bot", b"tick:B") is None
    assert all(budget.wanted(t) for t in topics)
