"""``mt5-engine --source mt5`` as a real process across a weekend daylight-saving switch.

The engine imports ``MetaTrader5`` by name and gets the stand-in package (tests/standin_pkg),
whose market (tests/mt5_market.py) ticks on the engine's own clock. libfaketime shifts that
clock by days: Friday evening before the switch, then Sunday just before the reopen, then on
into Monday's first minute. The test process keeps the real clock; it reads what the market made
from its journal and what the engine published from the bus.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

import msgpack
import pytest
import zmq

from tests.mt5_market import (
    SUMMER_OFFSET_S,
    SYMBOLS,
    WINTER_OFFSET_S,
    JournalTick,
    MinuteBars,
    is_fx_open,
    market_environ,
    new_york_zone,
    read_journal,
    server_ms,
    server_offset_s,
)
from tests.procs import ROOT, subscriber


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=timezone.utc).timestamp()


def new_york(*fields: int) -> float:
    return datetime(*fields, tzinfo=new_york_zone()).timestamp()


# -- the broker's clock and week ------------------------------------------------------------


@pytest.mark.parametrize(("switch_utc", "before", "after"), [
    (utc(2026, 3, 8, 7), WINTER_OFFSET_S, SUMMER_OFFSET_S),  # 2nd Sunday of March, 02:00 EST
    (utc(2026, 11, 1, 6), SUMMER_OFFSET_S, WINTER_OFFSET_S),  # 1st Sunday of November, 02:00 EDT
    (utc(2027, 3, 14, 7), WINTER_OFFSET_S, SUMMER_OFFSET_S),
    (utc(2027, 11, 7, 6), SUMMER_OFFSET_S, WINTER_OFFSET_S),
], ids=["spring-2026", "autumn-2026", "spring-2027", "autumn-2027"])
def test_the_server_offset_switches_at_new_yorks_dst_instant(switch_utc, before, after) -> None:
    assert server_offset_s(switch_utc - 0.001) == before
    assert server_offset_s(switch_utc) == after


@pytest.mark.parametrize("friday", [(2026, 10, 30), (2027, 3, 12), (2027, 1, 8), (2026, 7, 3)])
def test_new_yorks_friday_close_is_server_midnight_whatever_the_offset(friday) -> None:
    close_ms = round(new_york(*friday, 17) * 1000)
    assert server_ms(close_ms) % 86_400_000 == 0
    assert is_fx_open((server_ms(close_ms) - 1) / 1000)
    assert not is_fx_open(server_ms(close_ms) / 1000)


@pytest.mark.parametrize("sunday", [(2026, 11, 1), (2027, 3, 14), (2027, 1, 10)])
def test_the_market_reopens_at_server_monday_midnight_after_new_yorks_sunday_17h(sunday) -> None:
    open_ms = round(new_york(*sunday, 17) * 1000)
    assert server_ms(open_ms) % 86_400_000 == 0
    assert not is_fx_open((server_ms(open_ms) - 1) / 1000)
    assert is_fx_open(server_ms(open_ms) / 1000)
    assert datetime.fromtimestamp(server_ms(open_ms) / 1000, timezone.utc).weekday() == 0


# -- the engine process on a shifted clock ------------------------------------------------------

FAKETIME_LIB = "libfaketime/vendor/libfaketime/src/libfaketime.so.1"  # in the libfaketime wheel
PROCESS_SYMBOLS = ("EURUSD", "USDJPY")


def faketime_library() -> Path:
    spec = find_spec("libfaketime")
    assert spec is not None and spec.origin, "the libfaketime wheel (the test extra) is not installed"
    return Path(spec.origin).parent.parent / FAKETIME_LIB


class FakeClock:
    """The wall clock of processes started with ``environ()``: libfaketime reads its offset
    from the real clock ("+seconds" or "-seconds") from a file, so rewriting the file moves their
    clock; monotonic clocks, sleeps and ZeroMQ's timers stay real (``FAKETIME_DONT_FAKE_MONOTONIC``).

    The file is re-read once a second (``FAKETIME_CACHE_DURATION=0``), so a jump lands within a
    second. Not on every read (``FAKETIME_NO_CACHE=1``): the library then parses it into shared
    static buffers from every thread at once, and a thread now and then reads the real time (44
    times in 8 s with four threads reading the clock; none in 25 s and 230 jumps so).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0.0

    def set(self, utc_s: float) -> None:
        """Make the clock read ``utc_s`` now (in the other process: within a second)."""
        self._offset = utc_s - time.time()
        staging = self._path.with_suffix(".new")
        staging.write_text(f"{self._offset:+.6f}\n", encoding="ascii")
        os.replace(staging, self._path)  # whole, never half-written, for the reading process

    def now(self) -> float:
        return time.time() + self._offset

    def environ(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(faketime_library()),
            "FAKETIME_TIMESTAMP_FILE": str(self._path),
            "FAKETIME_CACHE_DURATION": "0",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


class BusRecord:
    """What one SUB socket received, each message with the real time it was read."""

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        self.messages: list[tuple[bytes, dict]] = []

    def until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            if self._sock.poll(20):
                topic, payload = self._sock.recv_multipart()
                self.messages.append((topic, msgpack.unpackb(payload)))
        return True

    def of(self, prefix: bytes) -> list[dict]:
        return [m for topic, m in self.messages if topic.startswith(prefix)]


@dataclass(frozen=True)
class Weekend:
    name: str
    friday: tuple[int, int, int]
    sunday: tuple[int, int, int]

    @property
    def close_utc(self) -> float:
        return new_york(*self.friday, 17)

    @property
    def open_utc(self) -> float:
        return new_york(*self.sunday, 17)


WEEKENDS = [Weekend("autumn", (2026, 10, 30), (2026, 11, 1)),
            Weekend("spring", (2027, 3, 12), (2027, 3, 14))]


def ticks_of(messages: list[dict], symbol: str) -> list[tuple[int, float, float]]:
    return [(m["time_msc"], m["bid"], m["ask"]) for m in messages if m["symbol"] == symbol]


def journaled(journal: list[JournalTick], symbol: str) -> list[tuple[int, float, float]]:
    return [(t.time_msc, t.bid, t.ask) for t in journal if t.symbol == symbol]


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.machine() != "x86_64",
                    reason="the engine's clock is shifted by preloading the libfaketime wheel's "
                           "x86_64 Linux build (LD_PRELOAD)")
@pytest.mark.parametrize("weekend", WEEKENDS, ids=[w.name for w in WEEKENDS])
def test_the_engine_keeps_every_tick_across_a_weekend_dst_switch(
    weekend, start_engine, zmq_ctx, tmp_path, monkeypatch,
) -> None:
    monkeypatch.delenv("FAKETIME", raising=False)  # it would override the timestamp file
    before_s, after_s = server_offset_s(weekend.close_utc - 1), server_offset_s(weekend.open_utc)
    assert before_s != after_s  # the weekend holds a switch
    clock = FakeClock(tmp_path / "faketime")
    journal_path = tmp_path / "journal"
    clock.set(weekend.close_utc - 15)  # Friday, 15 s before the close
    engine = start_engine(
        "--source", "mt5", "--symbols", ",".join(PROCESS_SYMBOLS), "--timeframes", "M1",
        env={**clock.environ(), **market_environ(journal_path, PROCESS_SYMBOLS),
             "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "standin_pkg"), str(ROOT)])},
    )
    ready_fake = clock.now()
    record = BusRecord(subscriber(zmq_ctx, engine.bus, b"tick:", b"candle:", b"health:engine:"))
    # Friday's last seconds, until its last bar has closed by the market clock (1 s grace).
    record.until(lambda: clock.now() >= weekend.close_utc + 2.5, timeout=30)
    clock.set(weekend.open_utc - 3)  # Sunday, a few seconds before the reopen
    record.until(lambda: clock.now() >= weekend.open_utc + 12, timeout=30)
    clock.set(weekend.open_utc + 56)  # a quiet spell to the end of Monday's first minute
    record.until(lambda: clock.now() >= weekend.open_utc + 65, timeout=30)
    journal = read_journal(journal_path)
    newest = {(t.symbol, t.time_msc) for t in journal[-len(PROCESS_SYMBOLS):]}
    record.until(lambda: newest <= {(m["symbol"], m["time_msc"]) for m in record.of(b"tick:")},
                 timeout=5)
    engine.stop()
    record.until(lambda: False, timeout=0.3)  # what was already on its way
    everything = read_journal(journal_path)
    ticks = record.of(b"tick:")
    health = record.of(b"health:engine:")

    close_server_ms = server_ms(round(weekend.close_utc * 1000))
    open_server_ms = server_ms(round(weekend.open_utc * 1000))
    figures = {"engine_ready_after_s": round(ready_fake - (weekend.close_utc - 15), 1)}
    # Every tick the terminal made, from the first one on the bus, came once and in order.
    for symbol in PROCESS_SYMBOLS:
        got, made = ticks_of(ticks, symbol), journaled(journal, symbol)
        assert got, f"no {symbol} tick on the bus: {engine.output()[-3000:]}"
        first = made.index(got[0])
        assert got[:len(made) - first] == made[first:]
        assert got == journaled(everything, symbol)[first:first + len(got)]  # and nothing else
        friday = sum(t < close_server_ms for t, _, _ in got[:len(made) - first])
        monday = sum(t >= open_server_ms for t, _, _ in got[:len(made) - first])
        assert friday >= 20 and monday >= 40, (friday, monday)
        figures[f"{symbol}_ticks_friday_monday"] = (friday, monday)

    # Every closed M1 bar is the terminal's own bar of that minute, Friday's last and Monday's first too.
    closed = [c for c in record.of(b"candle:") if c["closed"] and c["timeframe"] == "M1"]
    for symbol in PROCESS_SYMBOLS:
        bars = MinuteBars.of(everything, SYMBOLS[symbol])
        mine = [c for c in closed if c["symbol"] == symbol]
        times = [c["time"] for c in mine]
        assert times == sorted(set(times))  # each once, in order
        assert {close_server_ms // 1000 - 60, open_server_ms // 1000} <= set(times), times
        for c in mine:
            assert (c["open"], c["high"], c["low"], c["close"], c["tick_volume"], c["spread"]) == \
                bars.bar(c["time"]), (symbol, c)
    figures["m1_bars_checked"] = len(closed)

    # The engine's clock was shifted, and its health tells the server's offset on each side:
    # (time in UTC, offset), each health's time_msc taken to UTC as the README says.
    offsets = [(h["time_msc"] - 1000 * h["server_utc_offset_s"], h["server_utc_offset_s"]) for h in health]
    first_tick_utc_ms = min(m["time_msc"] for m in ticks) - before_s * 1000
    on_friday = {s for t, s in offsets if first_tick_utc_ms + 1000 <= t < weekend.close_utc * 1000}
    assert on_friday == {before_s}, offsets
    on_monday = [(t, s) for t, s in offsets if t >= weekend.open_utc * 1000]
    switched = [t for t, s in on_monday if s == after_s]
    assert switched, on_monday
    assert switched[0] < weekend.open_utc * 1000 + 12_000  # before the quiet spell
    assert {s for t, s in on_monday if t >= switched[0]} == {after_s}
    assert health[-1]["late_ticks"] == 0 and health[-1]["status"] == "ok"
    assert health[-1]["source"] == "mt5"
    figures["offset_before_after_s"] = (before_s, after_s)
    figures["offset_published_after_reopen_ms"] = round(switched[0] - weekend.open_utc * 1000)
    print(f"mt5 dst process {weekend.name}: " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
