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

from engine.config import EngineConfig
from engine.models import Book, Candle, SourceHealth, SymbolInfo, Tick
from engine.sources.base import MarketSource, SourceError
from engine.timeframes import Timeframe

log = logging.getLogger(__name__)

COPY_TICKS_ALL = -1
BOOK_ASK_TYPES = (1, 3)  # BOOK_TYPE_SELL, BOOK_TYPE_SELL_MARKET
BOOK_BID_TYPES = (2, 4)  # BOOK_TYPE_BUY, BOOK_TYPE_BUY_MARKET
# last_error codes of a broken link to the terminal (internal, send, receive, init, connect,
# timeout): only these end the session; other codes concern one call.
IPC_ERRORS = frozenset({-10000, -10001, -10002, -10003, -10004, -10005})

MISSING_PACKAGE = (
    "the mt5 source needs the MetaTrader5 package, which exists for Windows only and talks to a "
    "running MetaTrader 5 terminal (pip install 'mt5-market-data[mt5]' on Windows). "
    "Use --source sim (the default simulated market), which works everywhere."
)


class TerminalLost(Exception):
    """A call failed in a way that means the terminal session is gone."""

    def __init__(self, call: str, error: tuple[int, str]) -> None:
        super().__init__(f"{call} failed: {error[0]} {error[1]}")
        self.call = call
        self.error = error


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
        # One lock around every package call: the package is one global connection, and
        # last_error() must be read right after the call it explains.
        self._api = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._infos: list[SymbolInfo] = []
        self._cursors: dict[str, TickCursor | None] = {}
        self._has_book: dict[str, bool] = {}
        self._out_lock = threading.Lock()
        self._out: list[Tick] = []
        self._books: dict[str, Book] = {}
        self._account: dict[str, Any] | None = None
        self._health = SourceHealth("down", False, "not started")
        self._lost = ""  # why the session was lost, kept in health while reconnecting
        self._clock_offset: int | None = None  # trade-server clock minus local clock, in ms
        self._newest_ms = 0

    # -- engine side ----------------------------------------------------------------------

    def start(self) -> None:
        self._mt5 = self._module if self._module is not None else import_mt5()
        ok, error = self._initialize()
        if not ok:
            raise SourceError(self._init_failure(error))
        try:
            self._infos = [self._select(s) for s in self._config.symbols]
            self._subscribe_books()
            for symbol in self._config.symbols:
                self._cursors[symbol] = self._start_cursor(symbol)
            self._refresh_books()
            self._refresh_account()
        except TerminalLost as exc:
            self._shutdown()
            raise SourceError(f"MT5 terminal lost during start: {exc}") from None
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
        with self._api:
            arr = self._mt5.copy_rates_from_pos(symbol, timeframe.code, 0, count)
            error = None if arr is not None else self._mt5.last_error()
        if arr is None:
            log.warning("no history: %s symbol=%s timeframe=%s", error, symbol, timeframe.name)
            return []
        return candles_from_rates(symbol, timeframe.name, arr)

    def poll(self, now_ms: int) -> list[Tick]:
        with self._out_lock:
            out, self._out = self._out, []
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
        open until its ticks are fetched after reconnecting.
        """
        if self._clock_offset is None or not self._health.connected:
            return self._newest_ms
        return now_ms + self._clock_offset

    def next_due(self, now_ms: int) -> int:
        return 1

    def book(self, symbol: str, now_ms: int) -> Book | None:
        return self._books.get(symbol)

    def account(self, now_ms: int) -> dict[str, Any] | None:
        account = self._account
        return dict(account) if account is not None else None

    def health(self) -> SourceHealth:
        return self._health

    # -- the source thread --------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff_initial
        online = True
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
            try:
                self._poll_ticks()
                now = time.monotonic()
                if now >= next_check:
                    self._check_terminal()
                    next_check = now + self._check_s
                if now >= next_book:
                    self._refresh_books()
                    next_book = now + self._book_s
                if now >= next_account:
                    self._refresh_account()
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
            for symbol in self._config.symbols:
                self._select(symbol)
            self._subscribe_books()
        except (TerminalLost, SourceError) as exc:
            self._health = SourceHealth("degraded", False, f"{self._lost}; reconnect failed: {exc}")
            self._shutdown()
            return False
        log.info("terminal reconnected; resuming from the last delivered ticks")
        self._health = SourceHealth("ok", True)
        return True

    def _poll_ticks(self) -> None:
        for symbol in self._config.symbols:
            cursor = self._cursors.get(symbol)
            if cursor is None:
                cursor = self._first_tick_cursor(symbol)
                if cursor is None:
                    continue
            self._cursors[symbol] = self._fetch(symbol, cursor, deliver=True)

    def _fetch(self, symbol: str, cursor: TickCursor, deliver: bool) -> TickCursor:
        """Read every tick after ``cursor``; hand them to the engine if ``deliver``."""
        while True:
            count = cursor.in_second + self._batch
            arr = self._call("copy_ticks_from", symbol, cursor.request_from, count, COPY_TICKS_ALL)
            start, cursor = advance(arr["time_msc"], cursor)
            if deliver and start < len(arr):
                ticks = ticks_from_array(symbol, arr[start:])
                with self._out_lock:
                    self._out.extend(ticks)
            if len(arr) < count:  # a full answer means more ticks wait
                return cursor

    def _start_cursor(self, symbol: str) -> TickCursor | None:
        """Skip what the terminal holds now: the stream starts after the current last tick."""
        cursor = self._first_tick_cursor(symbol)
        return None if cursor is None else self._fetch(symbol, cursor, deliver=False)

    def _first_tick_cursor(self, symbol: str) -> TickCursor | None:
        """A cursor from the symbol's latest tick, or ``None`` while it has never ticked."""
        tick = self._optional("symbol_info_tick", symbol)
        return cursor_at_second(tick.time_msc) if tick is not None and tick.time_msc > 0 else None

    def _check_terminal(self) -> None:
        info = self._call("terminal_info")
        if not info.connected:
            self._health = SourceHealth(
                "degraded", False, "terminal is not connected to the trade server")
        elif self._health.status != "ok":
            self._health = SourceHealth("ok", True)

    def _refresh_books(self) -> None:
        # Stamped in the trade server's clock, as ticks and bars are (UTC until a tick tells).
        server_ms = time.time_ns() // 1_000_000 + (self._clock_offset or 0)
        for symbol, has_book in self._has_book.items():
            if not has_book:
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

    # -- calls -------------------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        """Call the package; any failure here means the session is unusable."""
        with self._api:
            result = getattr(self._mt5, name)(*args)
            if result is None:
                raise TerminalLost(name, tuple(self._mt5.last_error()))
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

    def _select(self, symbol: str) -> SymbolInfo:
        with self._api:
            selected = self._mt5.symbol_select(symbol, True)
            error = None if selected else tuple(self._mt5.last_error())
        if error is not None:
            if error[0] in IPC_ERRORS:
                raise TerminalLost("symbol_select", error)
            raise SourceError(
                f"symbol {symbol!r} is unknown to the MT5 terminal ({error[0]} {error[1]}); "
                "SYMBOLS must use the broker's names, suffixes included (EURUSDm, EURUSD.m)")
        return symbol_from_info(self._call("symbol_info", symbol))

    def _subscribe_books(self) -> None:
        for symbol in self._config.symbols:
            added = self._optional("market_book_add", symbol)
            self._has_book[symbol] = bool(added)
            if not added:
                log.info("no depth of market symbol=%s", symbol)

    def _shutdown(self) -> None:
        with self._api:
            self._mt5.shutdown()
