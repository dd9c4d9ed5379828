"""A broker's market on the wall clock, fed into an ``MT5StandIn`` for a whole engine process.

* ``server_offset_s`` / ``server_ms``: the trade server's clock, UTC+3 while New York keeps
  daylight saving time and UTC+2 otherwise, so New York's 17:00 close is server midnight;
* ``is_fx_open``: the FX week, Monday 00:00 to Friday 24:00 in server time;
* ``ClockMarket``: a daemon thread that, while the market is open, adds one deterministic tick per
  symbol every ``step_s`` of wall time, stamped in server time, keeps the terminal's M1 bars in
  step with them and appends every tick to a journal file, so a test knows exactly what the
  terminal had to offer.

It runs inside the engine's process (``tests/standin_pkg`` starts it on import when
``market_environ`` asks for it), so it reads the engine's clock: shift that process' clock with
libfaketime and the terminal's market moves with it, across a weekend and a DST switch.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import NamedTuple

from tests.mt5_standin import TIMEFRAME_M1, MT5StandIn

WINTER_OFFSET_S = 2 * 3600
SUMMER_OFFSET_S = 3 * 3600
MINUTE_MS = 60_000

# What the stand-in package reads from its process' environment (see ``market_environ``).
MARKET_ENV = "MT5_STANDIN_MARKET"
JOURNAL_ENV = "MT5_STANDIN_JOURNAL"
SYMBOLS_ENV = "MT5_STANDIN_SYMBOLS"
CLOCK_MARKET = "clock"


@functools.cache
def new_york_zone() -> tzinfo:
    """America/New_York, loaded on first use: every process that imports the stand-in package
    imports this module, and some fake their platform (tests/test_windows_path.py), which
    ``zoneinfo``'s import does not survive."""
    from zoneinfo import ZoneInfo

    return ZoneInfo("America/New_York")


def server_offset_s(utc_s: float) -> int:
    """The trade server's offset from UTC at ``utc_s``: it follows New York's daylight saving
    (2nd Sunday of March to 1st Sunday of November, 02:00 local)."""
    dst = datetime.fromtimestamp(utc_s, new_york_zone()).dst()
    return SUMMER_OFFSET_S if dst else WINTER_OFFSET_S


def server_ms(utc_ms: int) -> int:
    """``utc_ms`` on the trade server's clock (server time written as if it were UTC)."""
    return utc_ms + 1000 * server_offset_s(utc_ms / 1000)


def is_fx_open(server_s: float) -> bool:
    """Whether the FX market trades at ``server_s`` (server clock): Monday to Friday, all day."""
    return datetime.fromtimestamp(server_s, timezone.utc).weekday() < 5


@dataclass(frozen=True, slots=True)
class MarketSymbol:
    """A symbol this market quotes: its digits, a price to swing around and a base spread."""

    name: str
    digits: int
    base: float
    spread_points: int

    @property
    def point(self) -> float:
        return 10.0 ** -self.digits

    def quote(self, time_msc: int) -> tuple[float, float]:
        """The deterministic ``(bid, ask)`` at ``time_msc``: a swing of ±50 points and a spread
        that varies by up to 4 points, so highs, lows and the smallest spread mean something."""
        bid = round(self.base + ((time_msc // 7) % 101 - 50) * self.point, self.digits)
        spread = self.spread_points + (time_msc // 13) % 5
        return bid, round(bid + spread * self.point, self.digits)


SYMBOLS = {s.name: s for s in (
    MarketSymbol("EURUSD", 5, 1.08000, 12),
    MarketSymbol("USDJPY", 3, 151.200, 15),
    MarketSymbol("GBPUSD", 5, 1.27000, 15),
)}


class JournalTick(NamedTuple):
    symbol: str
    time_msc: int
    bid: float
    ask: float


def read_journal(path: Path) -> list[JournalTick]:
    """Every tick the market made, in order (a line still being written is left out)."""
    text = path.read_text(encoding="ascii") if path.exists() else ""
    ticks = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            symbol, time_msc, bid, ask = line.split()
            ticks.append(JournalTick(symbol, int(time_msc), float(bid), float(ask)))
    return ticks


class MinuteBars:
    """One symbol's M1 bars as a terminal builds them: OHLC from the bid, ``tick_volume``
    counts ticks, ``spread`` is the bar's smallest spread in points."""

    def __init__(self, point: float) -> None:
        self._point = point
        self._bars: dict[int, list] = {}  # bar open (s) -> [open, high, low, close, ticks, spread]

    def add(self, time_msc: int, bid: float, ask: float) -> None:
        opened = time_msc // MINUTE_MS * 60
        spread = round((ask - bid) / self._point)
        bar = self._bars.get(opened)
        if bar is None:
            self._bars[opened] = [bid, bid, bid, bid, 1, spread]
            return
        bar[1], bar[2], bar[3] = max(bar[1], bid), min(bar[2], bid), bid
        bar[4] += 1
        bar[5] = min(bar[5], spread)

    def rows(self) -> list[tuple]:
        """``copy_rates_*`` rows (``RATES_DTYPE`` order), oldest first."""
        return [(t, o, h, lo, c, n, sp, 0) for t, (o, h, lo, c, n, sp) in sorted(self._bars.items())]

    def bar(self, opened: int) -> tuple | None:
        """``(open, high, low, close, tick_volume, spread)`` of the bar opening at ``opened``."""
        bar = self._bars.get(opened)
        return tuple(bar) if bar is not None else None

    @classmethod
    def of(cls, ticks: Iterable[JournalTick], symbol: MarketSymbol) -> MinuteBars:
        bars = cls(symbol.point)
        for tick in ticks:
            if tick.symbol == symbol.name:
                bars.add(tick.time_msc, tick.bid, tick.ask)
        return bars


class ClockMarket:
    """Ticks ``terminal`` from a daemon thread while the FX market is open, on this process'
    clock, and journals each tick; history of the last ``history_minutes`` is there at start."""

    def __init__(
        self, terminal: MT5StandIn, symbols: Sequence[MarketSymbol], journal: Path,
        step_s: float = 0.15, history_minutes: int = 3,
    ) -> None:
        self._terminal = terminal
        self._symbols = tuple(symbols)
        self._journal_path = journal
        self._step_s = step_s
        self._history_minutes = history_minutes
        self._bars = {s.name: MinuteBars(s.point) for s in self._symbols}
        self._last_ms = 0

    def start(self) -> threading.Thread:
        for symbol in self._symbols:
            self._terminal.add_symbol(symbol.name, symbol.digits)
        self._journal = self._journal_path.open("a", encoding="ascii", buffering=1)
        self._backfill(time.time_ns() // 1_000_000)
        thread = threading.Thread(target=self._run, name="clock-market", daemon=True)
        thread.start()
        return thread

    def _backfill(self, utc_now_ms: int) -> None:
        """The ticks of the last minutes, as a terminal holds them when a client connects."""
        step_ms = round(self._step_s * 1000)
        utc_ms = utc_now_ms - utc_now_ms % MINUTE_MS - self._history_minutes * MINUTE_MS
        while utc_ms <= utc_now_ms:
            self._tick(server_ms(utc_ms))
            utc_ms += step_ms

    def _run(self) -> None:
        while True:
            self._tick(server_ms(time.time_ns() // 1_000_000))
            time.sleep(self._step_s)

    def _tick(self, time_msc: int) -> None:
        # Strictly after the last tick: a terminal's ticks never go back in time.
        if not is_fx_open(time_msc / 1000) or time_msc <= self._last_ms:
            return
        self._last_ms = time_msc
        for symbol in self._symbols:
            bid, ask = symbol.quote(time_msc)
            bars = self._bars[symbol.name]
            bars.add(time_msc, bid, ask)
            self._terminal.add_tick(symbol.name, time_msc, bid, ask)
            self._terminal.set_rates(symbol.name, TIMEFRAME_M1, bars.rows())
            self._journal.write(f"{symbol.name} {time_msc} {bid!r} {ask!r}\n")


def market_environ(journal: Path, symbols: Sequence[str]) -> dict[str, str]:
    """The environment that makes the stand-in package run a ``ClockMarket`` of ``symbols``."""
    return {MARKET_ENV: CLOCK_MARKET, JOURNAL_ENV: str(journal), SYMBOLS_ENV: ",".join(symbols)}


def start_from_environ(terminal: MT5StandIn, environ: Mapping[str, str]) -> ClockMarket | None:
    """Start the market ``market_environ`` describes on ``terminal``, if it describes one."""
    if environ.get(MARKET_ENV) != CLOCK_MARKET:
        return None
    market = ClockMarket(terminal, [SYMBOLS[name] for name in environ[SYMBOLS_ENV].split(",")],
                         Path(environ[JOURNAL_ENV]))
    market.start()
    return market
