"""The one small interface every market source implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from engine.activity import Activity, Record
from engine.models import Book, Candle, SourceHealth, SymbolInfo, Tick
from engine.timeframes import Timeframe


class SourceError(RuntimeError):
    """A source that cannot start (missing package, bad file, failed login)."""


class MarketSource(ABC):
    """A market the engine reads. The engine's loop calls these from its one thread.

    ``poll`` must not block: a source whose API blocks (mt5) does its I/O on its own thread
    and hands ticks over through ``poll``.
    """

    name: str = "source"

    def start(self) -> None:
        """Connect and prepare; raise ``SourceError`` with a clear message if impossible."""

    def stop(self) -> None:
        """Release connections and threads. Called once, also after a failed start."""

    @abstractmethod
    def symbols(self) -> list[SymbolInfo]:
        """The symbols this source serves (valid after ``start``)."""

    @abstractmethod
    def history(self, symbol: str, timeframe: Timeframe, count: int) -> list[Candle]:
        """Up to ``count`` bars ending now, oldest first, the forming bar last."""

    @abstractmethod
    def poll(self, now_ms: int) -> list[Tick]:
        """Ticks that arrived since the last call, in time order per symbol."""

    @abstractmethod
    def next_due(self, now_ms: int) -> int:
        """Milliseconds until ``poll`` may have something new (0: call again at once)."""

    def prefetch_due(self) -> int | None:
        """When ``prefetch`` has work to do: the time (ms, the ticks' clock) by which it is
        needed, after which ``poll`` would do it on the hot path; ``None`` when there is none."""
        return None

    def prefetch(self) -> None:
        """Do one piece of the work ``prefetch_due`` announces.

        The engine calls this while it has time to spare before the next tick is due, so work
        a source would otherwise do on the hot path (drawing the next batch of ticks) does not
        delay ticks.
        """

    def history_covers(self, symbol: str, timeframe: Timeframe) -> int | None:
        """The newest tick time (ms, the ticks' clock) that the forming bar of the last
        ``history`` already holds, when later ``poll`` ticks may repeat ticks before it (a live
        terminal's bars keep growing while the stream starts); ``None`` when none repeat."""
        return None

    def tick_range(self, symbol: str, from_msc: int, to_msc: int, count: int) -> list[Tick] | None:
        """The first ``count`` ticks of ``symbol`` stamped ``from_msc..to_msc`` (inclusive,
        the ticks' clock), oldest first, from the source's own store, never past the last tick
        it delivered; ``None`` where the source keeps none.

        The engine asks only for ranges older than its tick journal holds, from its thread.
        """
        return None

    def candle_range(self, symbol: str, timeframe: Timeframe, from_s: int, to_s: int,
                     count: int) -> list[Candle] | None:
        """The first ``count`` closed bars of ``symbol`` opening ``from_s..to_s`` (inclusive),
        oldest first, from the source's own store; ``None`` where the source keeps none.

        The engine asks only for bars older than the ``MAX_CANDLES`` it holds.
        """
        return None

    def market_time(self, now_ms: int) -> int:
        """The market's clock in ms: wall time for live sources, the replayed time for a replay.

        The engine closes bars and throttles updates by this clock.
        """
        return now_ms

    def server_utc_offset_s(self) -> int:
        """How far the market clock (every published timestamp) is ahead of UTC, in seconds:
        the trade server's offset for mt5, 0 where the clock is UTC (sim, replay)."""
        return 0

    def book(self, symbol: str, now_ms: int) -> Book | None:
        """Current depth of market, or ``None`` where the source has none."""
        return None

    def account(self, now_ms: int) -> dict[str, Any] | None:
        """MT5 ``account_info`` fields, or ``None`` where the source has no account."""
        return None

    def activity(self, now_ms: int) -> Activity | None:
        """The account's positions, pending orders and new deals (``engine.activity``), or
        ``None`` where the source has no account activity. Each deal is returned once."""
        return None

    def deal_range(self, from_s: int, to_s: int, symbol: str | None, count: int) -> list[Record] | None:
        """The first ``count`` deals of the account (of ``symbol`` only, if given) with ``time``
        in ``from_s..to_s`` (inclusive, the market clock), oldest first; ``None`` where the
        source has no account activity."""
        return None

    def health(self) -> SourceHealth:
        return SourceHealth("ok", True)

    def report(self) -> dict[str, Any]:
        """Figures for the engine's health: ``missing_symbols`` (asked for, not on the market)
        and ``stale_symbols`` (served, not flowing now), and any the source adds."""
        return {"missing_symbols": [], "stale_symbols": []}

    @property
    def finished(self) -> bool:
        """True once a finite source (a replay) has delivered everything."""
        return False
