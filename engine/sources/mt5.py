"""The ``mt5`` source: a live MetaTrader 5 terminal through the ``MetaTrader5`` package.

Every call of that package blocks, so all of them run on this source's own thread, which polls
``copy_ticks_from`` from the last delivered tick, caches the book and the account, watches the
terminal and re-initializes it after a loss. The engine's thread only swaps a list in ``poll``
and reads the caches.

Tick polling and its de-duplication. The package reads ``date_from`` as a ``datetime`` or as
seconds since 1970, with no documented sub-second resolution, and returns the ticks with
``time >= date_from`` (CopyTicks semantics), oldest first. Times are the terminal's own clock (the
trade server's time written as epoch values), the same clock as ``time_msc``, so we pass whole
seconds (an ``int``: a naive ``datetime`` would be shifted by the local time zone) and never
convert. Each request therefore starts at the second of the last delivered tick and returns again
the ticks of that second we already delivered. A ``TickCursor`` remembers the last delivered
``time_msc`` and how many ticks at exactly that millisecond were delivered (several ticks can share
one), so ``advance`` skips precisely those and nothing else.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.activity import DEALS, ORDERS, POSITIONS, Activity, DealCursor, Record
from engine.config import EngineConfig
from engine.models import Book, Candle, SourceHealth, SymbolInfo, Tick
from engine.sources.base import MarketSource, SourceError
from engine.sources.mt5_remote import remote_module
from engine.symbol_masks import SymbolRequest, served_symbols
from engine.timeframes import Timeframe

log = logging.getLogger(__name__)

COPY_TICKS_ALL = -1
BOOK_ASK_TYPES = (1, 3)  # BOOK_TYPE_SELL, BOOK_TYPE_SELL_MARKET
BOOK_BID_TYPES = (2, 4)  # BOOK_TYPE_BUY, BOOK_TYPE_BUY_MARKET
# last_error codes of a broken link to the terminal (internal, send, receive, init, connect,
# timeout): only these end the session; other codes concern one call.
IPC_ERRORS = frozenset({-10000, -10001, -10002, -10003, -10004, -10005})

# A group mask that selects more symbols than one source thread can poll is a mistake.
MAX_MASK_SYMBOLS = 256
# History: how long the terminal may take to download what was asked, how often to look, and
# how many looks without a new bar mean it has no more.
HISTORY_WAIT_S = 10.0
HISTORY_RETRY_S = 0.25
HISTORY_SETTLED_LOOKS = 3
# After a reconnect the terminal answers from its local ticks first and fills the outage in
# from the server later: re-read until the outage's tick count holds still for this many looks
# this far apart.
FILL_IN_SETTLE_S = 0.3
FILL_IN_SETTLED_LOOKS = 3
FILL_IN_WAIT_S = 5.0
MAX_FILL_IN_TICKS = 1_000_000
# Ticks a tick range reads beyond what it returns: those of its first second before its first
# millisecond (no market has this many in one second).
RANGE_SECOND_TICKS = 10_000

# Deals are read again from this long before the newest one delivered, so a deal the server
# books late is still found (``engine.activity.DealCursor``).
DEAL_OVERLAP_MS = 60_000
# Trade servers' clocks run between UTC-12 and UTC+14: before the first tick tells the offset,
# deal reads reach this far on both sides of the local clock.
MAX_SERVER_OFFSET_MS = 14 * 3600 * 1000

MISSING_PACKAGE = (
    "the mt5 source needs the MetaTrader5 package, which exists for Windows only and talks to a "
    "running MetaTrader 5 terminal (pip install 'mt5-market-data[mt5]' on Windows); from Linux, "
    "reach a terminal under Wine with MT5_BACKEND=rpyc (see the README's Live MT5). "
    "Use --source sim (the default simulated market), which works everywhere."
)


class CallFailed(Exception):
    """A call returned nothing for one request (a symbol, a date range); the session is fine."""

    def __init__(self, call: str, error: tuple[int, str]) -> None:
        super().__init__(f"{call} failed: {error[0]} {error[1]}")
        self.call = call
        self.error = error


class TerminalLost(CallFailed):
    """A call failed in a way that means the terminal session is gone."""


def call_failure(call: str, error: tuple[int, str]) -> CallFailed:
    """The exception for a failed call: only the IPC family means the session is gone."""
    return (TerminalLost if error[0] in IPC_ERRORS else CallFailed)(call, tuple(error))


@dataclass(frozen=True, slots=True)
class TickCursor:
    """How far a symbol's ticks were delivered.

    ``time_msc``: the last delivered tick's time; ``at_time``: how many ticks at exactly that
    millisecond were delivered; ``in_second``: how many ticks from the start of that second up to
    it a request will return again (sizes the next request so it always reaches new ticks).
    """

    time_msc: int
    at_time: int = 0
    in_second: int = 0

    @property
    def request_from(self) -> int:
        """``date_from`` for the next request: the whole second holding ``time_msc``."""
        return self.time_msc // 1000


def cursor_at_second(time_msc: int) -> TickCursor:
    """A cursor that delivers every tick from the start of the second holding ``time_msc``."""
    return TickCursor(time_msc - time_msc % 1000)


def advance(times: np.ndarray, cursor: TickCursor) -> tuple[int, TickCursor]:
    """Where the new ticks start in ``times`` and the cursor once they are delivered.

    ``times`` is the sorted ``time_msc`` column of a request from ``cursor.request_from``: it
    repeats the ticks before and at ``cursor.time_msc`` that were delivered, and only those.
    """
    lo = int(np.searchsorted(times, cursor.time_msc, "left"))
    hi = int(np.searchsorted(times, cursor.time_msc, "right"))
    start = min(lo + cursor.at_time, hi)
    n = len(times)
    if start == n:
        second = cursor.time_msc - cursor.time_msc % 1000
        return start, TickCursor(cursor.time_msc, cursor.at_time,
                                 hi - int(np.searchsorted(times, second, "left")))
    last = int(times[-1])
    first_at_last = int(np.searchsorted(times, last, "left"))
    first_in_second = int(np.searchsorted(times, last - last % 1000, "left"))
    return start, TickCursor(last, n - first_at_last, n - first_in_second)


def ticks_from_array(symbol: str, arr: np.ndarray) -> list[Tick]:
    """``copy_ticks_*`` rows as engine ticks, in order (columns read by name, not position)."""
    return [
        Tick(symbol, t, bid, ask, last, volume, flags, volume_real)
        for t, bid, ask, last, volume, flags, volume_real in zip(
            arr["time_msc"].tolist(), arr["bid"].tolist(), arr["ask"].tolist(),
            arr["last"].tolist(), arr["volume"].tolist(), arr["flags"].tolist(),
            arr["volume_real"].tolist(),
        )
    ]


def candles_from_rates(symbol: str, timeframe: str, arr: np.ndarray) -> list[Candle]:
    """``copy_rates_*`` rows (oldest first) as candles."""
    return [
        Candle(symbol, timeframe, t, o, h, lo, c, tv, sp, rv)
        for t, o, h, lo, c, tv, sp, rv in zip(
            arr["time"].tolist(), arr["open"].tolist(), arr["high"].tolist(),
            arr["low"].tolist(), arr["close"].tolist(), arr["tick_volume"].tolist(),
            arr["spread"].tolist(), arr["real_volume"].tolist(),
        )
    ]


# Real UTC offsets are whole quarter hours; a server clock estimate that drops by more than half
# of one has changed offset (daylight saving ends), not drifted.
OFFSET_QUANTUM_MS = 15 * 60 * 1000


def next_clock_offset(current: int | None, observed: int) -> int:
    """The trade server's clock minus the local clock (ms), given the last estimate and one
    tick's (tick time - receipt time).

    A tick is seen after it happened, so the largest observation is the closest estimate that
    never runs ahead of the server, and smaller ones are delivery delays. One smaller by more
    than half a quarter hour is the server's offset from UTC going down (the autumn switch,
    usually UTC+3 -> UTC+2 over a weekend): the estimate starts again from it, or the market
    clock would run an hour ahead, closing bars at their first tick and dropping the rest as
    late. A switch up is simply a larger observation.
    """
    if current is None or observed > current or observed < current - OFFSET_QUANTUM_MS // 2:
        return observed
    return current


def utc_offset_s(clock_offset_ms: int | None) -> int:
    """The server's offset from UTC in seconds, rounded to the quarter hour (0 while unknown):
    this machine's clock is taken as UTC, to within the rounding."""
    if clock_offset_ms is None:
        return 0
    return round(clock_offset_ms / OFFSET_QUANTUM_MS) * OFFSET_QUANTUM_MS // 1000


def book_from_entries(symbol: str, time_msc: int, entries: Any) -> Book | None:
    """``market_book_get`` entries as a Book, best price first; ``None`` when there is no depth."""
    if not entries:
        return None
    asks: list[list[float]] = []
    bids: list[list[float]] = []
    for e in entries:
        # volume_dbl carries fractional volumes; volume is its integer part.
        level = [float(e.price), float(e.volume_dbl or e.volume)]
        if e.type in BOOK_ASK_TYPES:
            asks.append(level)
        elif e.type in BOOK_BID_TYPES:
            bids.append(level)
    asks.sort(key=lambda lv: lv[0])
    bids.sort(key=lambda lv: -lv[0])
    return Book(symbol, time_msc, bids, asks)


def symbol_from_info(info: Any) -> SymbolInfo:
    return SymbolInfo(
        info.name, int(info.digits), float(info.point), info.description, info.currency_base,
        info.currency_profit, float(info.trade_contract_size), info.currency_margin,
        float(info.volume_min), float(info.volume_max), float(info.volume_step),
        float(info.trade_tick_size), float(info.trade_tick_value), int(info.trade_mode),
        int(info.chart_mode),
    )


def import_mt5() -> Any:
    """The ``MetaTrader5`` module, or ``SourceError`` saying it is Windows-only."""
    try:
        return importlib.import_module("MetaTrader5")
    except ImportError:
        raise SourceError(MISSING_PACKAGE) from None


def mt5_module(config: EngineConfig) -> Any:
    """The ``MetaTrader5`` interface ``MT5_BACKEND`` names: the package in this process, or
    the one in an RPyC classic server's Python (a terminal under Wine)."""
    if config.mt5_backend == "rpyc":
        return remote_module(config)
    return import_mt5()


@dataclass(slots=True)
class SymbolFeed:
    """One served symbol's state on the source thread.

    A call failing for this symbol alone (not the IPC family) makes it stale: it is retried
    with backoff while the other symbols flow.
    """

    cursor: TickCursor | None = None
    has_book: bool = False
    failure: str = ""  # why the symbol is stale; "" while it flows
    retry_at: float = 0.0  # monotonic time of the next try while stale
    backoff_s: float = 0.0


class MT5Source(MarketSource):
    """A MarketSource on a live MT5 terminal; ``module`` stands in for ``MetaTrader5`` in tests."""

    name = "mt5"

    def __init__(
        self,
        config: EngineConfig,
        module: Any = None,
        *,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        terminal_check_s: float = 0.5,
        batch: int = 10_000,
        history_wait_s: float = HISTORY_WAIT_S,
        fill_in_settle_s: float = FILL_IN_SETTLE_S,
    ) -> None:
        self._config = config
        self._module = module
        self._mt5: Any = None
        self._poll_s = max(config.mt5_poll_ms, 0) / 1000
        self._book_s = config.book_interval_ms / 1000
        self._account_s = config.account_interval_ms / 1000
        self._check_s = terminal_check_s
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._batch = batch
        self._history_wait_s = history_wait_s
        self._fill_in_settle_s = fill_in_settle_s
        # One lock around every package call: the package is one global connection, and
        # last_error() must be read right after the call it explains.
        self._api = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._infos: list[SymbolInfo] = []
        self._feeds: dict[str, SymbolFeed] = {}
        self._missing: list[str] = []
        self._stale: list[str] = []  # replaced whole by the source thread, read by the engine's
        self._history_short: dict[str, str] = {}
        self._covered: dict[tuple[str, str], int] = {}
        self._max_bars = 0
        self._out_lock = threading.Lock()
        self._out: list[Tick] = []
        self._books: dict[str, Book] = {}
        self._account: dict[str, Any] | None = None
        self._streams = config.account_streams
        self._positions: tuple[Record, ...] = ()
        self._orders: tuple[Record, ...] = ()
        self._new_deals: list[Record] = []  # under _out_lock
        self._deals: DealCursor | None = None
        self._health = SourceHealth("down", False, "not started")
        self._lost = ""  # why the session was lost, kept in health while reconnecting
        self._clock_offset: int | None = None  # trade-server clock minus local clock, in ms
        self._newest_ms = 0
        # From a loss until the engine has taken the first ticks read after the reconnect, the
        # market clock stands still: no bar of the outage may close before its ticks are in.
        self._clock_held = False
        self._resumed = False  # set with the first ticks after a reconnect, under _out_lock

    # -- engine side ----------------------------------------------------------------------

    def start(self) -> None:
        self._mt5 = self._module if self._module is not None else mt5_module(self._config)
        ok, error = self._initialize()
        if not ok:
            raise SourceError(self._init_failure(error))
        try:
            self._max_bars = int(self._call("terminal_info").maxbars)
            self._infos = self._resolve_symbols()
            self._feeds = {info.name: SymbolFeed() for info in self._infos}
            self._subscribe_books()
            for symbol, feed in self._feeds.items():
                feed.cursor = self._start_cursor(symbol)
            self._refresh_books()
            self._refresh_account()
            if self._streams:
                self._deals = self._deal_cursor()
                self._refresh_activity()
        except CallFailed as exc:
            self._shutdown()
            raise SourceError(f"MT5 terminal failed during start: {exc}") from None
        except SourceError:
            self._shutdown()
            raise
        self._health = SourceHealth("ok", True)
        self._thread = threading.Thread(target=self._run, name="mt5-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._mt5 is not None and self._api.acquire(timeout=1.0):
            try:
                self._mt5.shutdown()
            finally:
                self._api.release()
        self._health = SourceHealth("down", False, "stopped")

    def symbols(self) -> list[SymbolInfo]:
        return list(self._infos)

    def history(self, symbol: str, timeframe: Timeframe, count: int) -> list[Candle]:
        """Up to ``count`` bars (the terminal's "Max bars in chart" at most), waiting a bounded
        time while the terminal downloads them; what fell short is logged and in ``report``."""
        target = min(count, self._max_bars) if self._max_bars else count
        key = f"{symbol} {timeframe.name}"
        deadline = time.monotonic() + self._history_wait_s
        arr, covered, why = None, None, f"still downloading after {self._history_wait_s:g} s"
        sizes: list[int] = []
        while True:
            try:
                arr, covered = self._rates_with_cutoff(symbol, timeframe, target)
            except TerminalLost as exc:
                why = str(exc)
                break
            except CallFailed as exc:  # not synchronized yet: the terminal is downloading
                why = str(exc)
            else:
                sizes.append(len(arr))
                if len(arr) >= target:
                    why = f"the terminal keeps at most {self._max_bars} bars (Max bars in chart)"
                    break
                if sizes[-HISTORY_SETTLED_LOOKS:].count(len(arr)) == HISTORY_SETTLED_LOOKS:
                    why = "the terminal has no more"
                    break
            if time.monotonic() >= deadline or self._stop.wait(HISTORY_RETRY_S):
                break
        got = 0 if arr is None else len(arr)
        if got < count:
            self._history_short[key] = f"{got}/{count}"
            log.warning("history %s: %d of %d bars (%s)", key, got, count, why)
        else:
            self._history_short.pop(key, None)
        if arr is None:
            return []
        if covered is not None:
            self._covered[(symbol, timeframe.name)] = covered
        return candles_from_rates(symbol, timeframe.name, arr)

    def history_covers(self, symbol: str, timeframe: Timeframe) -> int | None:
        """The newest tick time (server ms) the last ``history`` bars of this series hold."""
        return self._covered.get((symbol, timeframe.name))

    def poll(self, now_ms: int) -> list[Tick]:
        with self._out_lock:
            out, self._out = self._out, []
            if self._resumed:
                self._resumed = self._clock_held = False
        if out:
            newest = max(t.time_msc for t in out)
            self._newest_ms = max(self._newest_ms, newest)
            self._clock_offset = next_clock_offset(self._clock_offset, newest - now_ms)
        return out

    def server_utc_offset_s(self) -> int:
        """The trade server's offset from UTC, in the whole quarter hours offsets are made of."""
        return utc_offset_s(self._clock_offset)

    def market_time(self, now_ms: int) -> int:
        """The trade server's clock (ticks carry it; it is often hours off UTC).

        Frozen at the newest tick while the terminal is lost, so the bars of the outage stay
        open until its ticks are fetched after reconnecting and taken by the engine.
        """
        if self._clock_offset is None or self._clock_held or not self._health.connected:
            return self._newest_ms
        return now_ms + self._clock_offset

    def next_due(self, now_ms: int) -> int:
        return 1

    def book(self, symbol: str, now_ms: int) -> Book | None:
        return self._books.get(symbol)

    def account(self, now_ms: int) -> dict[str, Any] | None:
        account = self._account
        return dict(account) if account is not None else None

    def activity(self, now_ms: int) -> Activity | None:
        if not self._streams:
            return None
        with self._out_lock:
            deals, self._new_deals = self._new_deals, []
        return Activity(self._positions, self._orders, tuple(deals))

    def health(self) -> SourceHealth:
        health, stale = self._health, self._stale
        if health.status == "ok" and stale:
            return SourceHealth("degraded", True, f"stale symbols: {', '.join(stale)}")
        return health

    def report(self) -> dict[str, Any]:
        return {
            "missing_symbols": list(self._missing),
            "stale_symbols": list(self._stale),
            "history_incomplete": sorted(f"{k} {v}" for k, v in self._history_short.items()),
        }

    # -- the source thread --------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff_initial
        online, resuming = True, False
        next_check = next_book = next_account = 0.0
        while not self._stop.is_set():
            if not online:
                online = self._reconnect()
                if not online:
                    self._stop.wait(delay)
                    delay = min(delay * 2, self._backoff_max)
                    continue
                delay = self._backoff_initial
                next_check = 0.0
                resuming = True
            try:
                self._poll_ticks()
                if resuming:
                    with self._out_lock:
                        self._resumed = True
                    resuming = False
                now = time.monotonic()
                if now >= next_check:
                    self._check_terminal()
                    next_check = now + self._check_s
                if now >= next_book:
                    self._refresh_books()
                    next_book = now + self._book_s
                if now >= next_account:
                    self._refresh_account()
                    if self._streams:
                        self._refresh_activity()
                    next_account = now + self._account_s
            except TerminalLost as exc:
                log.warning("terminal lost (%s); reconnecting", exc)
                self._lost = f"terminal lost: {exc}"
            except Exception as exc:  # keep the thread alive; say so in health
                log.exception("unexpected error in the source thread")
                self._lost = f"source thread error: {exc!r}"
            else:
                self._stop.wait(self._poll_s)
                continue
            self._clock_held = True
            self._health = SourceHealth("degraded", False, f"{self._lost}; reconnecting")
            self._shutdown()
            online = False

    def _reconnect(self) -> bool:
        ok, error = self._initialize()
        if not ok:
            self._health = SourceHealth(
                "degraded", False,
                f"{self._lost}; reconnect failed: initialize: {error[0]} {error[1]}")
            return False
        try:
            for symbol in self._feeds:
                self._select(symbol)
            self._subscribe_books()
            self._await_fill_in()
        except CallFailed as exc:
            self._health = SourceHealth("degraded", False, f"{self._lost}; reconnect failed: {exc}")
            self._shutdown()
            return False
        log.info("terminal reconnected; resuming from the last delivered ticks")
        self._health = SourceHealth("ok", True)
        return True

    def _await_fill_in(self) -> None:
        """Wait (bounded) until the ticks of the outage stop arriving in the terminal.

        A restarted terminal answers from its local ticks and fills the gap from the server a
        little later; a cursor advanced past the gap meanwhile would skip that window for good.
        Each symbol's count of ticks after its cursor, up to the newest tick seen at the first
        look, is read every ``fill_in_settle_s`` until ``FILL_IN_SETTLED_LOOKS`` looks agree.
        A heuristic: a terminal whose fill-in pauses longer than that is not waited for.
        """
        probes: dict[str, int] = {}
        counts: dict[str, int] = {}
        unchanged = 0
        deadline = time.monotonic() + FILL_IN_WAIT_S
        while True:
            changed = False
            for symbol, feed in self._feeds.items():
                if feed.cursor is None:
                    continue
                try:
                    arr = self._call("copy_ticks_from", symbol, feed.cursor.request_from,
                                     MAX_FILL_IN_TICKS, COPY_TICKS_ALL)
                except TerminalLost:
                    raise
                except CallFailed:
                    continue  # the tick loop makes it stale if it keeps failing
                times = arr["time_msc"]
                probe = probes.setdefault(symbol, int(times[-1]) if len(times) else feed.cursor.time_msc)
                count = int(np.searchsorted(times, probe, "right"))
                changed |= counts.get(symbol) != count
                counts[symbol] = count
            unchanged = 0 if changed else unchanged + 1
            if (unchanged >= FILL_IN_SETTLED_LOOKS - 1 or time.monotonic() >= deadline
                    or self._stop.wait(self._fill_in_settle_s)):
                return

    def _poll_ticks(self) -> None:
        now = time.monotonic()
        for symbol, feed in self._feeds.items():
            if feed.failure and now < feed.retry_at:
                continue
            try:
                if feed.cursor is None:
                    feed.cursor = self._first_tick_cursor(symbol)
                if feed.cursor is not None:
                    self._fetch(symbol, feed, deliver=True)
            except TerminalLost:
                raise
            except CallFailed as exc:
                self._symbol_failed(symbol, feed, exc, now)
                continue
            if feed.failure:
                log.info("symbol %s flows again after: %s", symbol, feed.failure)
                feed.failure, feed.backoff_s = "", 0.0
                self._stale = [s for s in self._stale if s != symbol]

    def _symbol_failed(self, symbol: str, feed: SymbolFeed, exc: CallFailed, now: float) -> None:
        """One symbol's call failed: keep it local, retry it with backoff."""
        if not feed.failure:
            log.warning("symbol %s is stale: %s; retrying with backoff", symbol, exc)
            self._stale = sorted({*self._stale, symbol})
        feed.failure = str(exc)
        feed.backoff_s = min(max(feed.backoff_s * 2, self._backoff_initial), self._backoff_max)
        feed.retry_at = now + feed.backoff_s

    def _fetch(self, symbol: str, feed: SymbolFeed, deliver: bool) -> None:
        """Read every tick after the feed's cursor; hand them to the engine if ``deliver``.

        The cursor moves with each batch handed over, so a call failing halfway never makes
        the next one deliver a batch twice.
        """
        while True:
            cursor = feed.cursor
            count = cursor.in_second + self._batch
            arr = self._call("copy_ticks_from", symbol, cursor.request_from, count, COPY_TICKS_ALL)
            start, feed.cursor = advance(arr["time_msc"], cursor)
            if deliver and start < len(arr):
                ticks = ticks_from_array(symbol, arr[start:])
                with self._out_lock:
                    self._out.extend(ticks)
            if len(arr) < count:  # a full answer means more ticks wait
                return

    def _start_cursor(self, symbol: str) -> TickCursor | None:
        """Skip what the terminal holds now: the stream starts after the current last tick."""
        feed = SymbolFeed(self._first_tick_cursor(symbol))
        if feed.cursor is not None:
            self._fetch(symbol, feed, deliver=False)
        return feed.cursor

    def _first_tick_cursor(self, symbol: str) -> TickCursor | None:
        """A cursor from the symbol's latest tick, or ``None`` while it has never ticked."""
        tick = self._optional("symbol_info_tick", symbol)
        return cursor_at_second(tick.time_msc) if tick is not None and tick.time_msc > 0 else None

    def _rates_with_cutoff(self, symbol: str, timeframe: Timeframe,
                           count: int) -> tuple[np.ndarray, int | None]:
        """``copy_rates_from_pos`` and the newest tick time its forming bar holds.

        The latest tick is read before and after the rates; when they agree no tick arrived
        during the call, so the bars hold exactly the ticks up to it, and the engine folds
        only later ones (the stream started earlier and delivers those ticks too).
        """
        for _ in range(3):
            with self._api:
                before = self._mt5.symbol_info_tick(symbol)
                arr = self._mt5.copy_rates_from_pos(symbol, timeframe.code, 0, count)
                error = tuple(self._mt5.last_error()) if arr is None else None
                after = self._mt5.symbol_info_tick(symbol)
            if error is not None:
                raise call_failure("copy_rates_from_pos", error)
            if before == after:
                return arr, (after.time_msc if after is not None and after.time_msc > 0 else None)
        return arr, None

    def _check_terminal(self) -> None:
        try:
            info = self._call("terminal_info")
        except CallFailed as exc:  # the terminal itself failing: the session is gone
            raise TerminalLost(exc.call, exc.error) from None
        if not info.connected:
            self._health = SourceHealth(
                "degraded", False, "terminal is not connected to the trade server")
        elif self._health.status != "ok":
            self._health = SourceHealth("ok", True)

    def _refresh_books(self) -> None:
        # Stamped in the trade server's clock, as ticks and bars are (UTC until a tick tells).
        server_ms = time.time_ns() // 1_000_000 + (self._clock_offset or 0)
        for symbol, feed in self._feeds.items():
            if not feed.has_book:
                continue
            entries = self._optional("market_book_get", symbol)
            book = book_from_entries(symbol, server_ms, entries)
            if book is None:
                self._books.pop(symbol, None)
            else:
                self._books[symbol] = book

    def _refresh_account(self) -> None:
        info = self._optional("account_info")
        if info is not None:
            self._account = info._asdict()

    def _refresh_activity(self) -> None:
        """Positions and orders replace the last sets only when read: a call that fails keeps
        them (a failed read is not every position closing). Deals since the cursor, once each."""
        positions = self._optional("positions_get")
        if positions is not None:
            self._positions = tuple(map(POSITIONS.record, positions))
        orders = self._optional("orders_get")
        if orders is not None:
            self._orders = tuple(map(ORDERS.record, orders))
        assert self._deals is not None
        try:
            deals = self._read_deals(self._deals.from_msc // 1000)
        except TerminalLost:
            raise
        except CallFailed as exc:  # this read only: the next one covers the same deals
            log.debug("deals not read: %s", exc)
            return
        fresh = self._deals.accept(deals)
        if fresh:
            with self._out_lock:
                self._new_deals.extend(fresh)

    def _deal_cursor(self) -> DealCursor:
        """A cursor after the deals booked so far: they are history (``deal_range``), the
        stream carries the ones booked from now on."""
        cursor = DealCursor(time.time_ns() // 1_000_000 - MAX_SERVER_OFFSET_MS, DEAL_OVERLAP_MS)
        cursor.accept(self._read_deals(cursor.from_msc // 1000))
        return cursor

    def _read_deals(self, from_s: int, to_s: int | None = None) -> list[Record]:
        """``history_deals_get`` over server times ``from_s..to_s``: by default up to beyond any
        server's now, as deal times are the server's clock (a local ``now`` would miss the last
        hours' deals on a server ahead of UTC)."""
        if to_s is None:
            to_s = (time.time_ns() // 1_000_000 + 2 * MAX_SERVER_OFFSET_MS) // 1000
        with self._api:
            result = self._mt5.history_deals_get(from_s, to_s)
            error = tuple(self._mt5.last_error()) if result is None else None
        # None with "Success" is an empty range, as some builds answer it.
        if error is not None and error[0] != 1:
            raise call_failure("history_deals_get", error)
        return [DEALS.record(d) for d in result or ()]

    # -- calls -------------------------------------------------------------------------------

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the package; ``None`` raises ``TerminalLost`` (the IPC family) or ``CallFailed``."""
        with self._api:
            result = getattr(self._mt5, name)(*args, **kwargs)
            error = tuple(self._mt5.last_error()) if result is None else None
        if error is not None:
            raise call_failure(name, error)
        return result

    def _optional(self, name: str, *args: Any) -> Any:
        """Call the package where failing is a normal answer (no depth, no tick yet) unless
        the link itself is broken."""
        with self._api:
            result = getattr(self._mt5, name)(*args)
            error = self._mt5.last_error() if result is None or result is False else None
        if error is not None and error[0] in IPC_ERRORS:
            raise TerminalLost(name, tuple(error))
        return result

    def _initialize(self) -> tuple[bool, tuple[int, str]]:
        cfg = self._config
        kwargs: dict[str, Any] = {"timeout": cfg.mt5_timeout_ms, "portable": cfg.mt5_portable}
        if cfg.mt5_path:
            kwargs["path"] = cfg.mt5_path
        if cfg.mt5_login:
            kwargs["login"] = cfg.mt5_login
        if cfg.mt5_password:
            kwargs["password"] = cfg.mt5_password
        if cfg.mt5_server:
            kwargs["server"] = cfg.mt5_server
        with self._api:
            ok = bool(self._mt5.initialize(**kwargs))
            error = tuple(self._mt5.last_error())
        return ok, error

    def _init_failure(self, error: tuple[int, str]) -> str:
        cfg = self._config
        who = (f" for login {cfg.mt5_login}" if cfg.mt5_login else "") + (
            f" on server {cfg.mt5_server!r}" if cfg.mt5_server else "")
        hint = ("check MT5_LOGIN, MT5_PASSWORD and MT5_SERVER" if error[0] == -6
                else "is the MetaTrader 5 terminal installed and running? (MT5_PATH)")
        return f"MT5 initialize failed{who}: {error[0]} {error[1]}; {hint}"

    def _resolve_symbols(self) -> list[SymbolInfo]:
        """The ``SYMBOLS`` the broker has (names and group masks), each selected in Market
        Watch; the names it lacks are logged and kept for ``report``, not fatal."""
        request = SymbolRequest.parse(self._config.symbols)
        present = [name for name in request.names if self._select(name)]
        matched: list[str] = []
        if request.includes_masks:
            matched = [info.name for info in self._call("symbols_get", group=request.group)]
            if len(matched) > MAX_MASK_SYMBOLS:
                raise SourceError(
                    f"SYMBOLS: the group {request.group!r} matches {len(matched)} symbols, more "
                    f"than the {MAX_MASK_SYMBOLS} one terminal connection can poll; narrow it")
            matched = [name for name in matched if self._select(name)]
        served, self._missing = served_symbols(request, present, matched)
        for name in self._missing:
            log.warning("SYMBOLS: %r is not on this trade server%s; serving the others",
                        name, self._similar(name))
        infos = []
        for name in served:
            try:
                infos.append(symbol_from_info(self._call("symbol_info", name)))
            except TerminalLost:
                raise
            except CallFailed as exc:
                log.warning("SYMBOLS: %r has no symbol_info (%s); serving the others", name, exc)
                self._missing.append(name)
        if not infos:
            raise SourceError(
                f"SYMBOLS: none of {','.join(self._config.symbols)} is on this trade server; "
                "use the broker's names, suffixes included (EURUSDm, EURUSD.m), or a group "
                "mask such as EURUSD*")
        return infos

    def _similar(self, name: str) -> str:
        """A hint naming the broker's symbols that start like ``name`` (EURUSD: EURUSDm)."""
        try:
            found = self._call("symbols_get", group=f"{name}*")
        except TerminalLost:
            raise
        except CallFailed:
            return ""
        names = [info.name for info in found[:5]]
        return f" (it has {', '.join(names)})" if names else ""

    def _select(self, symbol: str) -> bool:
        """Select ``symbol`` in Market Watch; False when the broker does not have it."""
        with self._api:
            selected = self._mt5.symbol_select(symbol, True)
            error = None if selected else tuple(self._mt5.last_error())
        if error is not None:
            if error[0] in IPC_ERRORS:
                raise TerminalLost("symbol_select", error)
            log.debug("symbol_select(%r) failed: %s %s", symbol, *error)
            return False
        return True

    def _subscribe_books(self) -> None:
        for symbol, feed in self._feeds.items():
            feed.has_book = bool(self._optional("market_book_add", symbol))
            if not feed.has_book:
                log.info("no depth of market symbol=%s", symbol)

    def _shutdown(self) -> None:
        with self._api:
            self._mt5.shutdown()

    # -- date ranges (asked from the engine's thread, which waits for a call in progress) ------

    def tick_range(self, symbol: str, from_msc: int, to_msc: int, count: int) -> list[Tick] | None:
        """The terminal's ticks from the second holding ``from_msc`` (the package reads dates
        in seconds), cut to the milliseconds asked for: ``copy_ticks_from`` with a count, as
        ``copy_ticks_range`` would return a long range's millions of ticks at once."""
        arr = self._call("copy_ticks_from", symbol, from_msc // 1000, count + RANGE_SECOND_TICKS,
                         COPY_TICKS_ALL)
        times = arr["time_msc"]
        lo = int(np.searchsorted(times, from_msc, "left"))
        hi = min(int(np.searchsorted(times, to_msc, "right")), lo + count)
        return ticks_from_array(symbol, arr[lo:max(lo, hi)])

    def deal_range(self, from_s: int, to_s: int, symbol: str | None, count: int) -> list[Record] | None:
        if not self._streams:
            return None
        deals = [d for d in self._read_deals(from_s, to_s) if symbol is None or d["symbol"] == symbol]
        deals.sort(key=lambda d: (d["time_msc"], d["ticket"]))
        return deals[:count]

    def candle_range(self, symbol: str, timeframe: Timeframe, from_s: int, to_s: int,
                     count: int) -> list[Candle] | None:
        """``copy_rates_range``: the terminal's bars opening ``from_s..to_s`` (at most its "Max
        bars in chart" of them)."""
        arr = self._call("copy_rates_range", symbol, timeframe.code, from_s, to_s)
        return candles_from_rates(symbol, timeframe.name, arr[:count])
