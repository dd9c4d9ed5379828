"""The tick journal's rings: numbering, eviction, what they cover, exact values in compact storage."""
import random

import msgpack
import pytest

from engine.config import ConfigError, EngineConfig
from engine.models import Tick
from engine.protocol import pack_ticks
from engine.tick_journal import TickJournal, TooOld


EPOCH = 77


def make_ticks(n: int, symbols=("EURUSD", "XAUUSD"), seed: int = 1, start: int = 1_000_000):
    """``n`` ticks over ``symbols`` with non-decreasing times (several per ms at times)."""
    rng = random.Random(seed)
    t, out = start, []
    for _ in range(n):
        t += rng.choice((0, 0, 1, 3))
        symbol = rng.choice(symbols)
        digits = 5 if symbol == "EURUSD" else 2
        bid = round(rng.uniform(1, 2) * (1 if digits == 5 else 2000), digits)
        out.append(Tick(symbol, t, bid, round(bid + 10 ** -digits * 7, digits)))
    return out


def journal_in_batches(capacity: int, points: dict[str, float], ticks, seed: int = 2):
    """A journal given ``ticks`` in random batches as the engine would, counting seq per symbol
    as its publisher does; returns it and every tick with its seq, per symbol."""
    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    journal = TickJournal(capacity, EPOCH, points, seqs.__getitem__)
    numbered: dict[str, list[tuple[int, Tick]]] = {}
    i = 0
    while i < len(ticks):
        batch = ticks[i:i + rng.randint(1, 60)]
        i += len(batch)
        for tick in batch:
            seqs[tick.symbol] = seqs.get(tick.symbol, 0) + 1
            numbered.setdefault(tick.symbol, []).append((seqs[tick.symbol], tick))
        journal.append(batch)
    return journal, numbered


def stamped(seq: int, tick: Tick) -> dict:
    return {**tick.to_payload(), "seq": seq, "epoch": EPOCH}


def since(journal: TickJournal, symbol: str, epoch: int, after_seq: int, count: int) -> list[dict]:
    """The journal's answer as the bus payloads a reply carries."""
    first_seq, columns = journal.since(symbol, epoch, after_seq, count)
    return msgpack.unpackb(pack_ticks(symbol, columns, first_seq, epoch))


def between(journal: TickJournal, symbol: str, lo: int, hi: int, count: int) -> list[dict]:
    return msgpack.unpackb(pack_ticks(symbol, journal.between(symbol, lo, hi, count)))


def test_after_a_seq_gives_the_bus_payloads_in_order_until_evicted_then_too_old():
    journal, numbered = journal_in_batches(100, {"EURUSD": 1e-5, "XAUUSD": 0.01}, make_ticks(1000))
    for symbol, ticks in numbered.items():
        ring = journal.ring(symbol)
        assert len(ring) == 100 and ring.last_seq == ticks[-1][0]
        kept = [stamped(s, t) for s, t in ticks[-100:]]
        assert since(journal, symbol, EPOCH, ring.first_seq - 1, 1000) == kept
        assert since(journal, symbol, EPOCH, ring.first_seq + 9, 5) == kept[10:15]
        assert since(journal, symbol, EPOCH, ring.last_seq, 10) == []
        with pytest.raises(TooOld, match="no longer journaled"):
            journal.since(symbol, EPOCH, ring.first_seq - 2, 10)
    with pytest.raises(TooOld, match="epoch"):
        journal.since("EURUSD", EPOCH + 1, journal.ring("EURUSD").first_seq, 10)


def test_a_time_range_inside_what_it_covers_is_every_tick_of_that_range():
    journal, numbered = journal_in_batches(300, {"EURUSD": 1e-5, "XAUUSD": 0.01}, make_ticks(2000))
    for symbol, ticks in numbered.items():
        covers = journal.covers_from(symbol)
        evicted = [t for _, t in ticks[:-300]]
        # Nothing dropped is at or after covers_from: the journal has all of that range.
        assert evicted[-1].time_msc < covers
        lo, hi = covers + 5, ticks[-1][1].time_msc - 5
        expected = [t.to_payload() for _, t in ticks if lo <= t.time_msc <= hi]
        assert between(journal, symbol, lo, hi, 10_000) == expected
        assert between(journal, symbol, lo, hi, 7) == expected[:7]


def test_ticks_of_one_symbol_beyond_capacity_in_one_batch_keep_the_newest():
    journal = TickJournal(10, EPOCH, {"EURUSD": 1e-5}, lambda symbol: 25)
    ticks = [Tick("EURUSD", 1000 + i, 1.1 + i * 1e-5, 1.2) for i in range(25)]
    journal.append(ticks)
    assert since(journal, "EURUSD", EPOCH, 15, 100) == [stamped(16 + k, t) for k, t in enumerate(ticks[15:])]
    assert journal.covers_from("EURUSD") == ticks[14].time_msc + 1


def test_prices_off_the_grid_and_volumes_are_kept_exactly():
    last = {"EURUSD": 5}
    journal = TickJournal(50, EPOCH, {"EURUSD": 1e-5}, last.__getitem__)
    plain = [Tick("EURUSD", 1000 + i, 1.10001, 1.10011) for i in range(5)]
    odd = [Tick("EURUSD", 2000, 1.1000123456789, 1.2, 1.15, 7, 2**33, 7.25),
           Tick("EURUSD", 2001, 1e12, 1e12 + 1, 0.0, 0, 6, 0.0)]
    journal.append(plain)
    assert len(journal.ring("EURUSD")) == 5  # stored before it is read
    last["EURUSD"] = 7
    journal.append(odd)
    assert since(journal, "EURUSD", EPOCH, 0, 100) == [stamped(k + 1, t) for k, t in enumerate(plain + odd)]


def test_symbols_stored_together_each_keep_their_own_layout():
    # One flush of four symbols: one on its grid, one with a price off it, one with volumes and
    # flags past uint32, one whose point is not a power of ten (kept as float64 from the start).
    points = {"EURUSD": 1e-5, "XAUUSD": 0.01, "ESM4": 0.25, "ODD": 0.0003}
    rows = {
        "EURUSD": [Tick("EURUSD", 1000 + i, round(1.1 + i * 1e-5, 5), round(1.1001 + i * 1e-5, 5))
                   for i in range(6)],
        "XAUUSD": [Tick("XAUUSD", 1000 + i, 2300.5 + (i == 3) * 1e-7, 2300.75) for i in range(6)],
        "ESM4": [Tick("ESM4", 1000 + i, 5300.25, 5300.5, 5300.25, i, 2**40 + i, i * 0.5) for i in range(6)],
        "ODD": [Tick("ODD", 1000 + i, 0.1234 + i * 0.0003, 0.125) for i in range(6)],
    }
    interleaved = [t for group in zip(*rows.values()) for t in group]
    journal = TickJournal(64, EPOCH, points, {s: 6 for s in rows}.__getitem__)
    journal.append(interleaved)
    for symbol, ticks in rows.items():
        assert since(journal, symbol, EPOCH, 0, 100) == [stamped(k + 1, t) for k, t in enumerate(ticks)]
    # An FX pair stays at 24 bytes a tick beside them; the others widened only themselves.
    assert journal.ring("EURUSD").nbytes == 24 * 64
    assert journal.ring("XAUUSD").nbytes == journal.ring("ODD").nbytes == 36 * 64
    assert journal.ring("ESM4").nbytes == 56 * 64  # float64 prices (quarter points), int64 flags, volumes


def test_hundreds_of_symbols_in_random_batches_are_each_kept_exactly():
    symbols = [f"SYM{i:03d}" for i in range(300)]
    points = {s: 0.01 for s in symbols}
    journal, numbered = journal_in_batches(40, points, make_ticks(30_000, symbols, seed=5))
    for symbol in symbols[::7]:
        ticks = numbered[symbol]
        ring = journal.ring(symbol)
        assert ring.last_seq == ticks[-1][0] and len(ring) == min(40, len(ticks))
        kept = [stamped(s, t) for s, t in ticks[-40:]]
        assert since(journal, symbol, EPOCH, ring.first_seq - 1, 1000) == kept
        assert between(journal, symbol, journal.covers_from(symbol), ticks[-1][1].time_msc, 1000) == \
            [t.to_payload() for _, t in ticks if t.time_msc >= journal.covers_from(symbol)]


def test_a_restarted_numbering_replaces_what_was_held():
    last = {"EURUSD": 5}
    journal = TickJournal(50, EPOCH, {"EURUSD": 1e-5}, last.__getitem__)
    journal.append([Tick("EURUSD", 1000 + i, 1.1, 1.2) for i in range(5)])
    assert journal.ring("EURUSD").last_seq == 5
    newer = [Tick("EURUSD", 3000, 1.3, 1.4)]
    last["EURUSD"] = 9  # seq 9 does not follow 5: ticks 6 to 8 were never handed over
    journal.append(newer)
    assert since(journal, "EURUSD", EPOCH, 8, 10) == [stamped(9, newer[0])]
    with pytest.raises(TooOld):
        journal.since("EURUSD", EPOCH, 4, 10)


def test_storage_is_compact_and_grows_with_use():
    journal = TickJournal(100_000, EPOCH, {"EURUSD": 1e-5, "GBPUSD": 1e-5},
                          {"EURUSD": 50_000, "GBPUSD": 1}.__getitem__)
    ticks = [Tick("EURUSD", 1000 + i, 1.1 + (i % 100) * 1e-5, 1.2) for i in range(50_000)]
    journal.append(ticks)
    journal.append([Tick("GBPUSD", 1000, 1.3, 1.4)])
    eurusd, gbpusd = journal.ring("EURUSD"), journal.ring("GBPUSD")
    assert eurusd.nbytes <= 24 * 100_000  # 24 bytes a tick at most, allocated as used
    assert gbpusd.nbytes <= 24 * 64


@pytest.mark.parametrize("value", ["0", "-5", "10000001", "lots"])
def test_tick_journal_setting_is_checked_at_start_up(value):
    with pytest.raises(ConfigError, match="TICK_JOURNAL"):
        EngineConfig.load({"tick_journal": value}, environ={}, dotenv=None)
    assert EngineConfig.load({}, environ={"TICK_JOURNAL": "5000"}, dotenv=None).tick_journal == 5000
    assert EngineConfig.load({}, environ={}, dotenv=None).tick_journal == 100_000
