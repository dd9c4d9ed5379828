"""The trade server's side of the stand-in terminal: positions, pending orders and deals.

A test scripts what a trader (or an EA) does -- ``open_position``, ``modify_position``,
``close_position`` (all or part), ``place_order``, ``cancel_order``, ``fill_order``,
``deposit`` -- at a server time it gives, and the stand-in answers ``positions_get``,
``orders_get`` and ``history_deals_get`` from this book with the package's shapes: namedtuples
with the real field names and order, every time in the trade server's clock.

As on a real account:
- a market order fills at once: it leaves no pending order, only a deal (entry in) and a
  position whose ``identifier`` is the opening order's ticket;
- a partial close is a deal (entry out) for part of the volume, the position keeps its ticket;
- a balance operation is a deal with no symbol;
- a position's ``price_current`` and ``profit`` follow the symbol's latest quote (bid for a buy,
  ask for a sell), and the account's profit and equity follow its positions.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass

POSITION_TYPE_BUY, POSITION_TYPE_SELL = 0, 1
ORDER_TYPE_BUY, ORDER_TYPE_SELL, ORDER_TYPE_BUY_LIMIT, ORDER_TYPE_SELL_LIMIT = 0, 1, 2, 3
ORDER_TYPE_BUY_STOP, ORDER_TYPE_SELL_STOP = 4, 5
ORDER_STATE_STARTED, ORDER_STATE_PLACED, ORDER_STATE_CANCELED = 0, 1, 2
ORDER_STATE_PARTIAL, ORDER_STATE_FILLED = 3, 4
ORDER_TIME_GTC = 0
ORDER_FILLING_FOK, ORDER_FILLING_IOC, ORDER_FILLING_RETURN = 0, 1, 2
DEAL_TYPE_BUY, DEAL_TYPE_SELL, DEAL_TYPE_BALANCE = 0, 1, 2
DEAL_ENTRY_IN, DEAL_ENTRY_OUT = 0, 1
DEAL_REASON_CLIENT, DEAL_REASON_EXPERT = 0, 3
POSITION_REASON_CLIENT, POSITION_REASON_EXPERT = 0, 3
ORDER_REASON_CLIENT, ORDER_REASON_EXPERT = 0, 3

TradePosition = namedtuple(
    "TradePosition",
    "ticket time time_msc time_update time_update_msc type magic identifier reason volume "
    "price_open sl tp price_current swap profit symbol comment external_id",
)
TradeOrder = namedtuple(
    "TradeOrder",
    "ticket time_setup time_setup_msc time_done time_done_msc time_expiration type type_time "
    "type_filling state magic position_id position_by_id reason volume_initial volume_current "
    "price_open sl tp price_current price_stoplimit symbol comment external_id",
)
TradeDeal = namedtuple(
    "TradeDeal",
    "ticket order time time_msc type entry magic position_id reason volume price commission "
    "swap profit fee symbol comment external_id",
)

# A quote and the profit of one lot moving one unit of price, for a symbol: (bid, ask, value).
Quote = Callable[[str], tuple[float, float, float]]


@dataclass
class _Position:
    ticket: int
    time_msc: int
    update_msc: int
    type: int
    magic: int
    volume: float
    price_open: float
    sl: float
    tp: float
    symbol: str
    comment: str


@dataclass
class _Order:
    ticket: int
    setup_msc: int
    type: int
    magic: int
    volume: float
    price_open: float
    sl: float
    tp: float
    symbol: str
    comment: str


class TradeBook:
    """One account's positions, pending orders and deal history on the trade server."""

    def __init__(self, quote: Quote, balance: float) -> None:
        self._quote = quote
        self.balance = balance
        self._positions: dict[int, _Position] = {}
        self._orders: dict[int, _Order] = {}
        self._deals: list[TradeDeal] = []  # in time order
        self._next_ticket = 100_000_001

    # -- what a trader does (server time in ms) -------------------------------------------

    def open_position(self, time_msc: int, symbol: str, type: int, volume: float, price: float, *,
                      sl: float = 0.0, tp: float = 0.0, magic: int = 0, comment: str = "") -> int:
        """A market order filled at ``price``: a deal in, and a position; returns its ticket."""
        order = self._ticket()
        self._positions[order] = _Position(order, time_msc, time_msc, type, magic, volume, price,
                                           sl, tp, symbol, comment)
        self._deal(time_msc, order, order, symbol, _deal_type(type), DEAL_ENTRY_IN, volume, price,
                   0.0, magic, comment)
        return order

    def modify_position(self, time_msc: int, ticket: int, *, sl: float, tp: float) -> None:
        position = self._positions[ticket]
        position.sl, position.tp, position.update_msc = sl, tp, time_msc

    def close_position(self, time_msc: int, ticket: int, price: float, volume: float | None = None) -> int:
        """Close ``volume`` lots (all by default) at ``price``: a deal out; returns its ticket."""
        position = self._positions[ticket]
        volume = position.volume if volume is None else volume
        if not 0 < volume <= position.volume:
            raise ValueError(f"cannot close {volume} of {position.volume} lots")
        profit = self._profit(position, price, volume)
        self.balance += profit
        order = self._ticket()
        deal = self._deal(time_msc, order, ticket, position.symbol, _deal_type(1 - position.type),
                          DEAL_ENTRY_OUT, volume, price, profit, position.magic, position.comment)
        position.volume = round(position.volume - volume, 8)
        position.update_msc = time_msc
        if position.volume <= 0:
            del self._positions[ticket]
        return deal

    def place_order(self, time_msc: int, symbol: str, type: int, volume: float, price: float, *,
                    sl: float = 0.0, tp: float = 0.0, magic: int = 0, comment: str = "") -> int:
        """A pending order (limit or stop); returns its ticket."""
        ticket = self._ticket()
        self._orders[ticket] = _Order(ticket, time_msc, type, magic, volume, price, sl, tp, symbol, comment)
        return ticket

    def cancel_order(self, ticket: int) -> None:
        del self._orders[ticket]

    def fill_order(self, time_msc: int, ticket: int) -> int:
        """The pending order triggers: it leaves the book, a position opens; returns its ticket."""
        order = self._orders.pop(ticket)
        self._positions[ticket] = _Position(ticket, time_msc, time_msc, order.type % 2, order.magic,
                                            order.volume, order.price_open, order.sl, order.tp,
                                            order.symbol, order.comment)
        self._deal(time_msc, ticket, ticket, order.symbol, order.type % 2, DEAL_ENTRY_IN,
                   order.volume, order.price_open, 0.0, order.magic, order.comment)
        return ticket

    def deposit(self, time_msc: int, amount: float, comment: str = "Deposit") -> int:
        """A balance operation: a deal with no symbol, no order and no position."""
        self.balance += amount
        return self._deal(time_msc, 0, 0, "", DEAL_TYPE_BALANCE, DEAL_ENTRY_IN, 0.0, 0.0, amount, 0, comment)

    # -- what the terminal answers --------------------------------------------------------

    def positions(self) -> list[TradePosition]:
        return [self._position_tuple(p) for p in self._positions.values()]

    def orders(self) -> list[TradeOrder]:
        out = []
        for o in self._orders.values():
            bid, ask, _ = self._quote(o.symbol)
            out.append(TradeOrder(
                o.ticket, o.setup_msc // 1000, o.setup_msc, 0, 0, 0, o.type, ORDER_TIME_GTC,
                ORDER_FILLING_RETURN, ORDER_STATE_PLACED, o.magic, 0, 0, ORDER_REASON_CLIENT,
                o.volume, o.volume, o.price_open, o.sl, o.tp, ask if o.type % 2 == 0 else bid, 0.0,
                o.symbol, o.comment, ""))
        return out

    def deals(self, from_s: int, to_s: int) -> list[TradeDeal]:
        """Deals whose ``time`` (server seconds) is within ``[from_s, to_s]``."""
        return [d for d in self._deals if from_s <= d.time <= to_s]

    def profit(self) -> float:
        return sum(p.profit for p in self.positions())

    # -- internals ------------------------------------------------------------------------

    def _position_tuple(self, p: _Position) -> TradePosition:
        bid, ask, _ = self._quote(p.symbol)
        current = bid if p.type == POSITION_TYPE_BUY else ask
        return TradePosition(
            p.ticket, p.time_msc // 1000, p.time_msc, p.update_msc // 1000, p.update_msc, p.type,
            p.magic, p.ticket, POSITION_REASON_CLIENT, p.volume, p.price_open, p.sl, p.tp, current,
            0.0, round(self._profit(p, current, p.volume), 2), p.symbol, p.comment, "")

    def _profit(self, p: _Position, price: float, volume: float) -> float:
        _, _, value = self._quote(p.symbol)
        move = price - p.price_open if p.type == POSITION_TYPE_BUY else p.price_open - price
        return round(move * volume * value, 2)

    def _deal(self, time_msc: int, order: int, position: int, symbol: str, type: int, entry: int,
              volume: float, price: float, profit: float, magic: int, comment: str) -> int:
        if self._deals and time_msc < self._deals[-1].time_msc:
            raise ValueError(f"deal at {time_msc} is older than {self._deals[-1].time_msc}")
        ticket = self._ticket()
        self._deals.append(TradeDeal(
            ticket, order, time_msc // 1000, time_msc, type, entry, magic, position,
            DEAL_REASON_CLIENT, volume, price, 0.0, 0.0, profit, 0.0, symbol, comment, ""))
        return ticket

    def _ticket(self) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        return ticket


def _deal_type(position_type: int) -> int:
    return DEAL_TYPE_BUY if position_type == POSITION_TYPE_BUY else DEAL_TYPE_SELL

