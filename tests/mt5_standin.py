"""A stand-in for the ``MetaTrader5`` package, for tests on any OS.

An ``MT5StandIn`` instance looks like the module: the same function names, constants and return
shapes (namedtuples with the real field names and order, numpy structured arrays with the real
dtypes), the same error convention (a failed call returns ``None``/``False`` and ``last_error()``
says why), over an in-memory terminal that a test scripts:

* ``add_symbol`` / ``add_tick`` / ``set_rates`` / ``set_book`` / ``account`` fields feed the market
  (several ticks may share one millisecond);
* ``drop_ipc`` / ``restore_ipc``, ``fail_auth``, ``fail_next``, ``set_connected`` inject faults;
  a restored terminal may answer from its local ticks first and fill the outage in later, and
  ``fail_next`` may concern one symbol only;
* ``set_rates(..., ready=, per_call=)`` models history the terminal is still downloading, and
  ``max_bars`` its "Max bars in chart";
* ``call_delay`` makes every call take time, so ticks land while a call is in progress;
* ``trades`` (``tests.mt5_trading.TradeBook``) is the account's trade server side: positions,
  pending orders and deals a test opens, modifies and closes; ``positions_get``, ``orders_get``
  and ``history_deals_get`` answer from it, and ``account_info``'s balance, profit and equity
  follow it.

``copy_ticks_*`` read ``date_from`` with whole-second resolution (a ``datetime``, aware or naive
local time as Python's ``timestamp()`` reads it, or seconds since 1970), the documented contract,
and return ticks with ``time_msc >= date_from`` in time order, as the terminal does.
"""
from __future__ import annotations

import bisect
import fnmatch
import math
import threading
import time
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from tests import mt5_trading
from tests.mt5_trading import TradeBook, TradeDeal, TradeOrder, TradePosition

# Result codes (last_error), as in the package.
RES_S_OK = 1
RES_E_FAIL = -1
RES_E_INVALID_PARAMS = -2
RES_E_NOT_FOUND = -4
RES_E_AUTH_FAILED = -6
RES_E_INTERNAL_FAIL_INIT = -10003
RES_E_INTERNAL_FAIL_CONNECT = -10004
RES_E_INTERNAL_FAIL_TIMEOUT = -10005

OK = (RES_S_OK, "Success")
NO_IPC = (RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
IPC_TIMEOUT = (RES_E_INTERNAL_FAIL_TIMEOUT, "IPC timeout")
INIT_FAILED = (RES_E_INTERNAL_FAIL_INIT, "IPC initialize failed, MetaTrader 5 x64 not found")
AUTH_FAILED = (RES_E_AUTH_FAILED, "Terminal: Authorization failed")
NOT_FOUND = (RES_E_NOT_FOUND, "Terminal: Not found")
INVALID_PARAMS = (RES_E_INVALID_PARAMS, "Terminal: Invalid params")
CALL_FAILED = (RES_E_FAIL, "Terminal: Call failed")

TIMEFRAME_M1, TIMEFRAME_M2, TIMEFRAME_M3, TIMEFRAME_M4, TIMEFRAME_M5 = 1, 2, 3, 4, 5
TIMEFRAME_M6, TIMEFRAME_M10, TIMEFRAME_M12, TIMEFRAME_M15 = 6, 10, 12, 15
TIMEFRAME_M20, TIMEFRAME_M30 = 20, 30
TIMEFRAME_H1, TIMEFRAME_H2, TIMEFRAME_H3, TIMEFRAME_H4 = 16385, 16386, 16387, 16388
TIMEFRAME_H6, TIMEFRAME_H8, TIMEFRAME_H12 = 16390, 16392, 16396
TIMEFRAME_D1, TIMEFRAME_W1, TIMEFRAME_MN1 = 16408, 32769, 49153

COPY_TICKS_ALL, COPY_TICKS_INFO, COPY_TICKS_TRADE = -1, 1, 2
TICK_FLAG_BID, TICK_FLAG_ASK, TICK_FLAG_LAST = 2, 4, 8
TICK_FLAG_VOLUME, TICK_FLAG_BUY, TICK_FLAG_SELL = 16, 32, 64
BOOK_TYPE_SELL, BOOK_TYPE_BUY, BOOK_TYPE_SELL_MARKET, BOOK_TYPE_BUY_MARKET = 1, 2, 3, 4

TICK_DTYPE = np.dtype([
    ("time", "<i8"), ("bid", "<f8"), ("ask", "<f8"), ("last", "<f8"), ("volume", "<u8"),
    ("time_msc", "<i8"), ("flags", "<u4"), ("volume_real", "<f8"),
])
RATES_DTYPE = np.dtype([
    ("time", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"),
    ("tick_volume", "<u8"), ("spread", "<i4"), ("real_volume", "<u8"),
])

Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")
BookInfo = namedtuple("BookInfo", "type price volume volume_dbl")
TerminalInfo = namedtuple(
    "TerminalInfo",
    "community_account community_connection connected dlls_allowed trade_allowed "
    "tradeapi_disabled email_enabled ftp_enabled notifications_enabled mqid build maxbars "
    "codepage ping_last community_balance retransmission company name language path data_path "
    "commondata_path",
)
AccountInfo = namedtuple(
    "AccountInfo",
    "login trade_mode leverage limit_orders margin_so_mode trade_allowed trade_expert "
    "margin_mode currency_digits fifo_close balance credit profit equity margin margin_free "
    "margin_level margin_so_call margin_so_so margin_initial margin_maintenance assets "
    "liabilities commission_blocked name server currency company",
)
SymbolInfo = namedtuple(
    "SymbolInfo",
    "custom chart_mode select visible session_deals session_buy_orders session_sell_orders "
    "volume volumehigh volumelow time digits spread spread_float ticks_bookdepth "
    "trade_calc_mode trade_mode start_time expiration_time trade_stops_level trade_freeze_level "
    "trade_exemode swap_mode swap_rollover3days margin_hedged_use_leg expiration_mode "
    "filling_mode order_mode order_gtc_mode option_mode option_right bid bidhigh bidlow ask "
    "askhigh asklow last lasthigh lastlow volume_real volumehigh_real volumelow_real "
    "option_strike point trade_tick_value trade_tick_value_profit trade_tick_value_loss "
    "trade_tick_size trade_contract_size trade_accrued_interest trade_face_value "
    "trade_liquidity_rate volume_min volume_max volume_step volume_limit swap_long swap_short "
    "margin_initial margin_maintenance session_volume session_turnover session_interest "
    "session_buy_orders_volume session_sell_orders_volume session_open session_close "
    "session_aw session_price_settlement session_price_limit_min session_price_limit_max "
    "margin_hedged price_change price_volatility price_theoretical price_greeks_delta "
    "price_greeks_theta price_greeks_gamma price_greeks_vega price_greeks_rho "
    "price_greeks_omega price_sensitivity basis category currency_base currency_profit "
    "currency_margin bank description exchange formula isin name page path",
)

_TIMEFRAMES = frozenset({
    TIMEFRAME_M1, TIMEFRAME_M2, TIMEFRAME_M3, TIMEFRAME_M4, TIMEFRAME_M5, TIMEFRAME_M6,
    TIMEFRAME_M10, TIMEFRAME_M12, TIMEFRAME_M15, TIMEFRAME_M20, TIMEFRAME_M30, TIMEFRAME_H1,
    TIMEFRAME_H2, TIMEFRAME_H3, TIMEFRAME_H4, TIMEFRAME_H6, TIMEFRAME_H8, TIMEFRAME_H12,
    TIMEFRAME_D1, TIMEFRAME_W1, TIMEFRAME_MN1,
})
_INFO_BITS = TICK_FLAG_BID | TICK_FLAG_ASK
_TRADE_BITS = TICK_FLAG_LAST | TICK_FLAG_VOLUME


@dataclass
class _Symbol:
    name: str
    digits: int
    description: str
    currency_base: str
    currency_profit: str
    contract_size: float
    depth: bool
    chart_mode: int = 0
    selected: bool = False
    book_subscribed: bool = False
    ticks: list[tuple] = field(default_factory=list)  # rows in TICK_DTYPE order
    times: list[int] = field(default_factory=list)  # time_msc of each row, for bisect
    rates: dict[int, list[tuple]] = field(default_factory=dict)
    rates_ready: dict[int, tuple[int, int]] = field(default_factory=dict)  # (ready, per call)
    hidden: tuple[int, int, float] = (0, 0, 0.0)  # tick rows [lo, hi) unseen until a deadline
    book: list[tuple[int, float, float]] = field(default_factory=list)


def _seconds(value: Any) -> int:
    """Whole seconds since 1970 from a ``datetime`` or a number, as the package reads dates."""
    if isinstance(value, datetime):
        return math.floor(value.timestamp())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.floor(value)
    raise TypeError(f"date must be a datetime or seconds since 1970, got {type(value).__name__}")


class MT5StandIn:
    """One in-memory MT5 terminal behind the ``MetaTrader5`` module's interface."""

    def __init__(
        self, *, login: int = 5001234, password: str = "s3cret-pass", server: str = "Demo-Server",
    ) -> None:
        # The module's integer constants (TIMEFRAME_*, COPY_TICKS_*, ...) as attributes.
        for name, value in (*globals().items(), *vars(mt5_trading).items()):
            if name.isupper() and isinstance(value, int):
                setattr(self, name, value)
        self.login_id = login
        self.password = password
        self.server = server
        self.call_delay = 0.0  # seconds each API call takes, half before and half after its read
        self.max_bars = 100_000  # the terminal's "Max bars in chart"
        self.init_calls: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {}
        self.account_fields: dict[str, Any] = {
            "login": login, "trade_mode": 0, "leverage": 100, "limit_orders": 200,
            "margin_so_mode": 0, "trade_allowed": True, "trade_expert": True, "margin_mode": 2,
            "currency_digits": 2, "fifo_close": False, "balance": 10000.0, "credit": 0.0,
            "profit": 0.0, "equity": 10000.0, "margin": 0.0, "margin_free": 10000.0,
            "margin_level": 0.0, "margin_so_call": 50.0, "margin_so_so": 30.0,
            "margin_initial": 0.0, "margin_maintenance": 0.0, "assets": 0.0, "liabilities": 0.0,
            "commission_blocked": 0.0, "name": "Test Trader", "server": server,
            "currency": "USD", "company": "Stand-in Broker Ltd",
        }
        self._lock = threading.RLock()
        self._symbols: dict[str, _Symbol] = {}
        self.trades = TradeBook(self._quote, self.account_fields["balance"])
        self._initialized = False
        self._ipc_down_until: float | None = None  # monotonic deadline; inf = until restored
        self._ticks_at_drop: dict[str, int] = {}
        self._trade_server_connected = True
        self._auth_fails = False
        self._scripted: dict[tuple[str, str | None], list[tuple[int, str]]] = {}
        self._last_error: tuple[int, str] = OK

    # -- scripting the market -------------------------------------------------------------

    def add_symbol(
        self, name: str, digits: int = 5, *, description: str = "", currency_base: str = "",
        currency_profit: str = "", contract_size: float = 100000.0, depth: bool = True,
        chart_mode: int = 0,
    ) -> None:
        """Make ``name`` exist on the trade server (not yet selected in Market Watch);
        ``chart_mode`` 1 is an exchange symbol whose bars come from ``last``."""
        with self._lock:
            self._symbols[name] = _Symbol(
                name, digits, description or f"{name} description",
                currency_base or name[:3], currency_profit or name[3:6], contract_size, depth,
                chart_mode,
            )

    def add_tick(
        self, symbol: str, time_msc: int, bid: float, ask: float, last: float = 0.0,
        volume: int = 0, flags: int | None = None, volume_real: float | None = None,
    ) -> None:
        """Record one tick; ``flags`` default to the bits of the fields that changed."""
        with self._lock:
            sym = self._symbols[symbol]
            if sym.times and time_msc < sym.times[-1]:
                raise ValueError(f"{symbol}: tick at {time_msc} is older than {sym.times[-1]}")
            if flags is None:
                prev = sym.ticks[-1] if sym.ticks else None
                flags = 0
                if prev is None or prev[1] != bid:
                    flags |= TICK_FLAG_BID
                if prev is None or prev[2] != ask:
                    flags |= TICK_FLAG_ASK
                if last and (prev is None or prev[3] != last):
                    flags |= TICK_FLAG_LAST
                if volume:
                    flags |= TICK_FLAG_VOLUME
            row = (time_msc // 1000, bid, ask, last, volume, time_msc, flags,
                   float(volume if volume_real is None else volume_real))
            sym.ticks.append(row)
            sym.times.append(time_msc)

    def set_rates(
        self, symbol: str, timeframe: int, rows: list[tuple], *, ready: int | None = None,
        per_call: int = 0,
    ) -> None:
        """Bars in RATES_DTYPE field order, oldest first; the last one is the forming bar.

        With ``ready``, only the newest ``ready`` bars are downloaded yet, and each
        ``copy_rates_*`` call downloads ``per_call`` more (0: the rest never comes).
        """
        with self._lock:
            sym = self._symbols[symbol]
            sym.rates[timeframe] = list(rows)
            if ready is None:
                sym.rates_ready.pop(timeframe, None)
            else:
                sym.rates_ready[timeframe] = (ready, per_call)

    def set_book(self, symbol: str, entries: list[tuple[int, float, float]]) -> None:
        """Depth of market as ``(type, price, volume)``, in the terminal's order."""
        with self._lock:
            self._symbols[symbol].book = list(entries)

    def last_tick(self, symbol: str) -> Tick:
        """The latest recorded tick, read from the test's side (no IPC involved)."""
        with self._lock:
            return Tick(*self._symbols[symbol].ticks[-1])

    # -- faults -----------------------------------------------------------------------------

    def drop_ipc(self, seconds: float | None = None) -> None:
        """Lose the terminal (killed or IPC broken) for ``seconds``, or until ``restore_ipc``.

        The session is gone: once the terminal is back, calls keep failing with -10004 until
        ``initialize`` succeeds again. Ticks added meanwhile are recorded by the terminal.
        """
        with self._lock:
            self._initialized = False
            self._ipc_down_until = math.inf if seconds is None else time.monotonic() + seconds
            self._ticks_at_drop = {name: len(sym.ticks) for name, sym in self._symbols.items()}

    def restore_ipc(self, fill_in_after_s: float = 0.0) -> None:
        """End the outage. With ``fill_in_after_s``, the terminal answers from its local ticks
        first: ticks recorded during the outage appear in ``copy_ticks_*`` only that long
        after, while ticks from now on are seen at once (a terminal that was down catching up
        from the server)."""
        with self._lock:
            self._ipc_down_until = None
            if fill_in_after_s > 0:
                visible_at = time.monotonic() + fill_in_after_s
                for name, sym in self._symbols.items():
                    sym.hidden = (self._ticks_at_drop.get(name, 0), len(sym.ticks), visible_at)

    def fail_auth(self, fails: bool = True) -> None:
        """Make every login fail (as after a password change on the server)."""
        with self._lock:
            self._auth_fails = fails

    def fail_next(
        self, function: str, times: int = 1, error: tuple[int, str] = CALL_FAILED,
        symbol: str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``function`` (for ``symbol`` only, if given) fail
        with ``error``."""
        with self._lock:
            self._scripted.setdefault((function, symbol), []).extend([error] * times)

    def set_connected(self, connected: bool) -> None:
        """The terminal's link to the trade server (``terminal_info().connected``)."""
        with self._lock:
            self._trade_server_connected = connected

    # -- the module interface -----------------------------------------------------------------

    def last_error(self) -> tuple[int, str]:
        with self._lock:
            return self._last_error

    def initialize(  # path by position or keyword, as the package takes it
        self, path: str | None = None, *, login: int | None = None, password: str | None = None,
        server: str | None = None, timeout: int | None = None, portable: bool = False,
    ) -> bool:
        self._delay()
        with self._lock:
            self._count("initialize")
            self.init_calls.append({
                "path": path, "login": login, "password": password, "server": server,
                "timeout": timeout, "portable": portable,
            })
            scripted = self._scripted.get(("initialize", None))
            if scripted:
                return self._fail(scripted.pop(0), False)
            if not self._ipc_up():
                return self._fail(INIT_FAILED, False)
            if login is not None and not self._credentials_ok(login, password, server):
                return self._fail(AUTH_FAILED, False)
            if self._auth_fails:
                return self._fail(AUTH_FAILED, False)
            self._initialized = True
            return self._ok(True)

    def login(
        self, login: int, *, password: str | None = None, server: str | None = None,
        timeout: int | None = None,
    ) -> bool:
        with self._lock:
            err = self._precheck("login")
            if err:
                return self._fail(err, False)
            if self._auth_fails or not self._credentials_ok(login, password, server):
                return self._fail(AUTH_FAILED, False)
            return self._ok(True)

    def shutdown(self) -> None:
        with self._lock:
            self._count("shutdown")
            self._initialized = False
            for sym in self._symbols.values():
                sym.book_subscribed = False
            self._last_error = OK

    def version(self) -> tuple[int, int, str] | None:
        with self._lock:
            err = self._precheck("version")
            return self._fail(err, None) if err else self._ok((500, 4410, "7 Jun 2024"))

    def terminal_info(self) -> TerminalInfo | None:
        self._delay()
        with self._lock:
            err = self._precheck("terminal_info")
            if err:
                return self._fail(err, None)
            return self._ok(TerminalInfo(
                False, False, self._trade_server_connected, False, True, False, False, False,
                False, False, 4410, self.max_bars, 0, 25000, 0.0, 0.0, "MetaQuotes Ltd.",
                "MetaTrader 5", "English", r"C:\MT5", r"C:\MT5", r"C:\Common",
            ))

    def account_info(self) -> AccountInfo | None:
        self._delay()
        with self._lock:
            err = self._precheck("account_info")
            if err:
                return self._fail(err, None)
            fields = dict(self.account_fields)
            profit = self.trades.profit()
            fields.update(balance=self.trades.balance, profit=profit,
                          equity=round(self.trades.balance + fields["credit"] + profit, 2))
            fields["margin_free"] = fields["equity"] - fields["margin"]
            return self._ok(AccountInfo(**fields))

    def positions_get(self, symbol: str | None = None, group: str | None = None,
                      ticket: int | None = None) -> tuple[TradePosition, ...] | None:
        return self._trade_items("positions_get", self.trades.positions, symbol, group, ticket)

    def orders_get(self, symbol: str | None = None, group: str | None = None,
                   ticket: int | None = None) -> tuple[TradeOrder, ...] | None:
        return self._trade_items("orders_get", self.trades.orders, symbol, group, ticket)

    def history_deals_get(self, date_from: Any = None, date_to: Any = None, group: str | None = None,
                          ticket: int | None = None, position: int | None = None,
                          ) -> tuple[TradeDeal, ...] | None:
        """Deals with ``date_from <= time <= date_to`` (whole seconds in the server's clock, as
        deal times are), or by the order ``ticket`` or ``position`` alone."""
        self._delay()
        with self._lock:
            err = self._precheck("history_deals_get")
            by_id = ticket is not None or position is not None
            if err is None and not by_id and (date_from is None or date_to is None):
                err = INVALID_PARAMS
            if err:
                return self._fail(err, None)
            if by_id:
                deals = [d for d in self.trades.deals(0, 2**62)
                         if (ticket is None or d.order == ticket) and (position is None or d.position_id == position)]
            else:
                deals = self.trades.deals(_seconds(date_from), _seconds(date_to))
            return self._ok(tuple(d for d in deals if group is None or _in_group(d.symbol, group)))

    def symbols_total(self) -> int:
        with self._lock:
            err = self._precheck("symbols_total")
            return self._fail(err, 0) if err else self._ok(len(self._symbols))

    def symbols_get(self, group: str = "*") -> tuple[SymbolInfo, ...] | None:
        with self._lock:
            err = self._precheck("symbols_get")
            if err:
                return self._fail(err, None)
            return self._ok(tuple(
                self._info(s) for s in self._symbols.values() if _in_group(s.name, group)
            ))

    def symbol_info(self, symbol: str) -> SymbolInfo | None:
        with self._lock:
            err = self._precheck("symbol_info", symbol)
            return self._fail(err, None) if err else self._ok(self._info(self._symbols[symbol]))

    def symbol_info_tick(self, symbol: str) -> Tick | None:
        with self._lock:
            err = self._precheck("symbol_info_tick", symbol)
            if err:
                return self._fail(err, None)
            ticks = self._symbols[symbol].ticks
            return self._ok(Tick(*ticks[-1])) if ticks else self._fail(CALL_FAILED, None)

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        with self._lock:
            err = self._precheck("symbol_select", symbol)
            if err:
                return self._fail(err, False)
            self._symbols[symbol].selected = enable
            return self._ok(True)

    def copy_ticks_from(
        self, symbol: str, date_from: Any, count: int, flags: int,
    ) -> np.ndarray | None:
        return self._copy_ticks("copy_ticks_from", symbol, date_from, None, count, flags)

    def copy_ticks_range(
        self, symbol: str, date_from: Any, date_to: Any, flags: int,
    ) -> np.ndarray | None:
        return self._copy_ticks("copy_ticks_range", symbol, date_from, date_to, None, flags)

    def copy_rates_from_pos(
        self, symbol: str, timeframe: int, start_pos: int, count: int,
    ) -> np.ndarray | None:
        self._delay()
        with self._lock:
            err = (self._precheck("copy_rates_from_pos", symbol)
                   or self._check_rates(timeframe, count))
            if err:
                return self._fail(err, None)
            rows = self._ready_rates(self._symbols[symbol], timeframe)
            end = max(0, len(rows) - start_pos)
            return self._ok(np.array(rows[max(0, end - count):end], dtype=RATES_DTYPE))

    def copy_rates_from(
        self, symbol: str, timeframe: int, date_from: Any, count: int,
    ) -> np.ndarray | None:
        with self._lock:
            err = self._precheck("copy_rates_from", symbol) or self._check_rates(timeframe, count)
            if err:
                return self._fail(err, None)
            rows = self._ready_rates(self._symbols[symbol], timeframe)
            # Bars opening at or before date_from, the last ``count`` of them.
            end = bisect.bisect_right([r[0] for r in rows], _seconds(date_from))
            return self._ok(np.array(rows[max(0, end - count):end], dtype=RATES_DTYPE))

    def copy_rates_range(
        self, symbol: str, timeframe: int, date_from: Any, date_to: Any,
    ) -> np.ndarray | None:
        with self._lock:
            err = self._precheck("copy_rates_range", symbol) or self._check_rates(timeframe, 1)
            if err:
                return self._fail(err, None)
            lo, hi = _seconds(date_from), _seconds(date_to)
            rows = [r for r in self._ready_rates(self._symbols[symbol], timeframe) if lo <= r[0] <= hi]
            return self._ok(np.array(rows, dtype=RATES_DTYPE))

    def market_book_add(self, symbol: str) -> bool:
        with self._lock:
            err = self._precheck("market_book_add", symbol)
            if err:
                return self._fail(err, False)
            sym = self._symbols[symbol]
            if not sym.depth:
                return self._fail(CALL_FAILED, False)
            sym.book_subscribed = True
            return self._ok(True)

    def market_book_get(self, symbol: str) -> tuple[BookInfo, ...] | None:
        self._delay()
        with self._lock:
            err = self._precheck("market_book_get", symbol)
            if err:
                return self._fail(err, None)
            sym = self._symbols[symbol]
            if not sym.book_subscribed:
                return self._fail(CALL_FAILED, None)
            return self._ok(tuple(
                BookInfo(t, p, int(v), float(v)) for t, p, v in sym.book
            ))

    def market_book_release(self, symbol: str) -> bool:
        with self._lock:
            err = self._precheck("market_book_release", symbol)
            if err:
                return self._fail(err, False)
            self._symbols[symbol].book_subscribed = False
            return self._ok(True)

    # -- internals ----------------------------------------------------------------------------

    def _trade_items(self, name: str, items: Any, symbol: str | None, group: str | None,
                     ticket: int | None) -> tuple[Any, ...] | None:
        """``positions_get`` / ``orders_get``: all, or filtered by symbol, group or ticket; an
        empty tuple when none match (a symbol the account never traded is no error)."""
        self._delay()
        with self._lock:
            err = self._precheck(name)
            if err:
                return self._fail(err, None)
            return self._ok(tuple(
                item for item in items()
                if (symbol is None or item.symbol == symbol)
                and (group is None or _in_group(item.symbol, group))
                and (ticket is None or item.ticket == ticket)))

    def _quote(self, symbol: str) -> tuple[float, float, float]:
        """The symbol's latest bid and ask, and the account currency (USD) one lot makes when
        the price moves by one."""
        sym = self._symbols[symbol]
        bid, ask = (sym.ticks[-1][1], sym.ticks[-1][2]) if sym.ticks else (0.0, 0.0)
        value = sym.contract_size / (bid if sym.currency_base == "USD" and bid else 1.0)
        return bid, ask, value

    def _copy_ticks(
        self, name: str, symbol: str, date_from: Any, date_to: Any, count: int | None, flags: int,
    ) -> np.ndarray | None:
        # Half the delay before the read and half after, so ticks land during the call.
        self._delay(0.5)
        with self._lock:
            err = self._precheck(name, symbol)
            if err is None and (count is not None and count <= 0):
                err = INVALID_PARAMS
            if err:
                result = self._fail(err, None)
            else:
                sym = self._symbols[symbol]
                lo = bisect.bisect_left(sym.times, _seconds(date_from) * 1000)
                hi = (len(sym.times) if date_to is None
                      else bisect.bisect_right(sym.times, _seconds(date_to) * 1000))
                rows = sym.ticks[lo:hi]
                hidden_lo, hidden_hi, visible_at = sym.hidden
                if hidden_hi > hidden_lo and time.monotonic() < visible_at:
                    rows = [r for i, r in enumerate(rows, lo) if not hidden_lo <= i < hidden_hi]
                if flags == COPY_TICKS_INFO:
                    rows = [r for r in rows if r[6] & _INFO_BITS]
                elif flags == COPY_TICKS_TRADE:
                    rows = [r for r in rows if r[6] & _TRADE_BITS]
                if count is not None:
                    rows = rows[:count]
                result = self._ok(np.array(rows, dtype=TICK_DTYPE))
        self._delay(0.5)
        return result

    def _ready_rates(self, sym: _Symbol, timeframe: int) -> list[tuple]:
        """The bars downloaded so far (newest ones first), at most ``max_bars``; a call
        downloads the next ``per_call``."""
        rows = sym.rates.get(timeframe, [])
        if timeframe in sym.rates_ready:
            ready, per_call = sym.rates_ready[timeframe]
            sym.rates_ready[timeframe] = (ready + per_call, per_call)
            rows = rows[max(0, len(rows) - ready):]
        return rows[-self.max_bars:]

    def _check_rates(self, timeframe: int, count: int) -> tuple[int, str] | None:
        if timeframe not in _TIMEFRAMES or count <= 0:
            return INVALID_PARAMS
        return None

    def _info(self, s: _Symbol) -> SymbolInfo:
        last = s.ticks[-1] if s.ticks else (0, 0.0, 0.0, 0.0, 0, 0, 0, 0.0)
        point = 10.0 ** -s.digits
        # Account in USD: a point of a USD-quoted symbol is worth point x contract per lot.
        quote = last[1] or 1.0
        tick_value = point * s.contract_size / (quote if s.currency_base == "USD" else 1.0)
        values: dict[str, Any] = dict.fromkeys(SymbolInfo._fields, 0)
        values.update(
            custom=False, select=s.selected, visible=s.selected, time=last[0], digits=s.digits,
            spread=round((last[2] - last[1]) / point), spread_float=True,
            ticks_bookdepth=10 if s.depth else 0, trade_mode=4, bid=last[1], ask=last[2],
            last=last[3], point=point, trade_tick_size=point, trade_tick_value=tick_value,
            chart_mode=s.chart_mode,
            trade_contract_size=s.contract_size, volume_min=0.01, volume_max=500.0,
            volume_step=0.01, margin_hedged_use_leg=False, basis="", category="",
            currency_base=s.currency_base, currency_profit=s.currency_profit,
            currency_margin=s.currency_base, bank="", description=s.description, exchange="",
            formula="", isin="", name=s.name, page="", path=f"Forex\\{s.name}",
        )
        return SymbolInfo(**values)

    def _credentials_ok(self, login: int, password: str | None, server: str | None) -> bool:
        return (login == self.login_id and password == self.password
                and server in (None, self.server))

    def _ipc_up(self) -> bool:
        if self._ipc_down_until is not None and time.monotonic() >= self._ipc_down_until:
            self._ipc_down_until = None
        return self._ipc_down_until is None

    def _precheck(self, name: str, symbol: str | None = None) -> tuple[int, str] | None:
        """The error this call fails with, if any: scripted faults, the IPC link, the symbol."""
        self._count(name)
        for key in ((name, symbol), (name, None)):
            scripted = self._scripted.get(key)
            if scripted:
                return scripted.pop(0)
        if not self._ipc_up() or not self._initialized:
            return NO_IPC
        if symbol is not None and symbol not in self._symbols:
            return NOT_FOUND
        return None

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _delay(self, share: float = 1.0) -> None:
        if self.call_delay:
            time.sleep(self.call_delay * share)

    def _ok(self, value: Any) -> Any:
        self._last_error = OK
        return value

    def _fail(self, error: tuple[int, str], value: Any) -> Any:
        self._last_error = error
        return value


def _in_group(name: str, group: str) -> bool:
    """MT5 group filter: comma-separated masks, ``!`` excludes; the last matching mask wins."""
    selected = False
    for mask in (m.strip() for m in group.split(",")):
        if mask.startswith("!"):
            if fnmatch.fnmatchcase(name, mask[1:]):
                selected = False
        elif fnmatch.fnmatchcase(name, mask):
            selected = True
    return selected
