"""The sim's demo account: a day trader, deterministic from the seed.

The day's first slot opens a core position on the first symbol, held all day; every ``SLOT_S`` of
market time after it the trader may open another position on one of the symbols, move a
position's SL/TP, close part or all of one (not the core one), place a pending limit order or
cancel one; the day's last slot closes and cancels everything. Each UTC day starts flat with a ``DEMO_BALANCE``
deposit, so the account at any instant is a pure function of (seed, symbols, time): a restarted
engine shows the same positions and tickets, and any day's deals can be computed again.

Trades fill at the quote of the minute's first tick (bid for a sell, ask for a buy); positions
are marked at the latest quotes the sim published, and the account's profit, equity and margin
follow them. Records carry MT5's field names (``engine.activity``); times are UTC, the sim's
market clock.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from engine.activity import DEALS, ORDERS, POSITIONS, Activity, Record
from engine.models import SymbolInfo, Tick

DAY_S = 86_400
SLOT_S = 180
SLOTS_PER_DAY = DAY_S // SLOT_S
DEMO_BALANCE = 10_000.0
DEMO_LEVERAGE = 100
MAX_POSITIONS = 4
MAX_ORDERS = 2
VOLUMES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
HISTORY_DAYS = 1  # days before today whose deals the history has
MAGIC = 20_260_101  # the demo trader's EA
# MT5's enumerations, as the package numbers them.
BUY, SELL = 0, 1  # POSITION_TYPE_*, ORDER_TYPE_BUY/SELL, DEAL_TYPE_BUY/SELL
BUY_LIMIT, SELL_LIMIT = 2, 3  # ORDER_TYPE_*
DEAL_BALANCE = 2  # DEAL_TYPE_BALANCE
ENTRY_IN, ENTRY_OUT = 0, 1  # DEAL_ENTRY_*
ORDER_STATE_PLACED = 1

# The quote at a minute's first tick: (symbol, minute since 1970) -> (bid, ask).
MinuteQuote = Callable[[str, int], tuple[float, float]]


def _usd(info: SymbolInfo, amount: float, price: float) -> float:
    """An amount in the symbol's quote currency, in the USD account's currency."""
    if info.currency_profit != "USD" and info.currency_base == "USD":
        return amount / price
    return amount


class DemoDay:
    """One UTC day of the demo account, played slot by slot up to a time."""

    def __init__(self, seed: int, infos: list[SymbolInfo], day: int, quote: MinuteQuote) -> None:
        self.day = day
        self._seed = seed
        self._infos = {i.name: i for i in infos}
        self._names = sorted(self._infos)
        self._quote = quote
        self.positions: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.deals: list[Record] = []
        self.balance = 0.0
        self.slot = -1  # the last slot played
        self.core: int | None = None  # the position held all day
        self._tickets = 10_000_000 + day * 10_000
        self._deal(day * DAY_S * 1000, "", DEAL_BALANCE, ENTRY_IN, 0.0, 0.0, DEMO_BALANCE, 0, 0, "Demo deposit")

    def play_until(self, time_s: int) -> None:
        """Play every slot starting at or before ``time_s``."""
        last = min((time_s - self.day * DAY_S) // SLOT_S, SLOTS_PER_DAY - 1)
        while self.slot < last:
            self.slot += 1
            self._play(self.slot)

    def _play(self, slot: int) -> None:
        t_s = self.day * DAY_S + slot * SLOT_S
        if slot == SLOTS_PER_DAY - 1:  # flat for the night
            for ticket in list(self.positions):
                self._close(ticket, t_s, None)
            for ticket in list(self.orders):
                del self.orders[ticket]
            return
        rng = random.Random(f"{self._seed}:{self.day}:{slot}")
        if slot == 0:
            self.core = self._open(rng, t_s, self._names[0])
            return
        closable = sorted(t for t in self.positions if t != self.core)
        roll = rng.random()
        if roll < 0.30:
            return
        if roll < 0.50 and len(self.positions) < MAX_POSITIONS:
            self._open(rng, t_s)
        elif roll < 0.62 and self.positions:
            position = self.positions[rng.choice(sorted(self.positions))]
            self._protect(rng, position, t_s)
        elif roll < 0.72 and closable:
            ticket = rng.choice(closable)
            volume = self.positions[ticket]["volume"]
            self._close(ticket, t_s, round(volume / 2, 2) if volume >= 0.02 else None)
        elif roll < 0.84 and closable:
            self._close(rng.choice(closable), t_s, None)
        elif roll < 0.94 and len(self.orders) < MAX_ORDERS:
            self._place(rng, t_s)
        elif self.orders:
            del self.orders[rng.choice(sorted(self.orders))]

    def _open(self, rng: random.Random, t_s: int, symbol: str | None = None) -> int:
        symbol = symbol or rng.choice(self._names)
        side = rng.choice((BUY, SELL))
        volume = rng.choice(VOLUMES)
        bid, ask = self._quote(symbol, t_s // 60)
        price = ask if side == BUY else bid
        ticket = self._ticket()
        self.positions[ticket] = {
            "ticket": ticket, "time_msc": t_s * 1000, "type": side, "magic": MAGIC, "identifier": ticket,
            "volume": volume, "price_open": price, "sl": 0.0, "tp": 0.0, "swap": 0.0, "symbol": symbol,
            "comment": "demo",
        }
        self._deal(t_s * 1000, symbol, side, ENTRY_IN, volume, price, 0.0, ticket, ticket, "demo")
        return ticket

    def _protect(self, rng: random.Random, position: dict[str, Any], t_s: int) -> None:
        """Stop loss and take profit a few hundred points from the current price."""
        info = self._infos[position["symbol"]]
        bid, ask = self._quote(info.name, t_s // 60)
        away = rng.randint(100, 600) * info.point
        sign = 1 if position["type"] == BUY else -1
        price = bid if position["type"] == BUY else ask
        position["sl"] = round(price - sign * away, info.digits)
        position["tp"] = round(price + sign * 2 * away, info.digits)

    def _close(self, ticket: int, t_s: int, volume: float | None) -> None:
        position = self.positions[ticket]
        bid, ask = self._quote(position["symbol"], t_s // 60)
        price = bid if position["type"] == BUY else ask
        volume = position["volume"] if volume is None else volume
        profit = self.profit_of(position, price, volume)
        self._deal(t_s * 1000, position["symbol"], 1 - position["type"], ENTRY_OUT, volume, price, profit,
                   self._ticket(), ticket, "demo")
        position["volume"] = round(position["volume"] - volume, 2)
        if position["volume"] <= 0:
            del self.positions[ticket]

    def _place(self, rng: random.Random, t_s: int) -> None:
        symbol = rng.choice(self._names)
        info = self._infos[symbol]
        bid, ask = self._quote(symbol, t_s // 60)
        side = rng.choice((BUY_LIMIT, SELL_LIMIT))
        away = rng.randint(50, 400) * info.point
        price = round(ask - away if side == BUY_LIMIT else bid + away, info.digits)
        ticket = self._ticket()
        volume = rng.choice(VOLUMES)
        self.orders[ticket] = {
            "ticket": ticket, "time_setup_msc": t_s * 1000, "type": side, "state": ORDER_STATE_PLACED,
            "volume_initial": volume, "volume_current": volume, "price_open": price, "sl": 0.0, "tp": 0.0,
            "symbol": symbol, "comment": "demo",
        }

    def profit_of(self, position: Mapping[str, Any], price: float, volume: float) -> float:
        info = self._infos[position["symbol"]]
        move = price - position["price_open"] if position["type"] == BUY else position["price_open"] - price
        return round(_usd(info, move * volume * info.trade_contract_size, price), 2)

    def margin_of(self, position: Mapping[str, Any]) -> float:
        info = self._infos[position["symbol"]]
        notional = position["volume"] * info.trade_contract_size
        if info.currency_base != "USD":
            notional *= position["price_open"]
        return notional / DEMO_LEVERAGE

    def _deal(self, time_msc: int, symbol: str, type: int, entry: int, volume: float, price: float,
              profit: float, order: int, position_id: int, comment: str) -> None:
        self.balance = round(self.balance + profit, 2)
        self.deals.append(DEALS.record({
            "ticket": self._ticket(), "order": order, "time_msc": time_msc, "type": type, "entry": entry,
            "magic": MAGIC if symbol else 0, "position_id": position_id, "volume": volume, "price": price,
            "commission": 0.0, "swap": 0.0, "profit": profit, "fee": 0.0, "symbol": symbol, "comment": comment,
        }))

    def _ticket(self) -> int:
        self._tickets += 1
        return self._tickets


def account_info(balance: float, profit: float, margin: float) -> dict[str, Any]:
    """MT5 ``account_info`` fields of the demo account."""
    equity = round(balance + profit, 2)
    return {
        "login": 10000001, "trade_mode": 0, "leverage": DEMO_LEVERAGE, "limit_orders": 200,
        "margin_so_mode": 0, "trade_allowed": True, "trade_expert": True, "margin_mode": 2,
        "currency_digits": 2, "fifo_close": False, "balance": balance, "credit": 0.0,
        "profit": profit, "equity": equity, "margin": margin,
        "margin_free": round(equity - margin, 2),
        "margin_level": round(equity / margin * 100, 2) if margin else 0.0,
        "margin_so_call": 50.0, "margin_so_so": 30.0, "margin_initial": 0.0,
        "margin_maintenance": 0.0, "assets": 0.0, "liabilities": 0.0,
        "commission_blocked": 0.0, "name": "Demo Trader", "server": "Simulated-Demo",
        "currency": "USD", "company": "MT5 market-data simulator",
    }


class DemoAccount:
    """The demo account as the sim source serves it: today played up to the market clock."""

    def __init__(self, seed: int, infos: list[SymbolInfo], quote: MinuteQuote) -> None:
        self._seed = seed
        self._infos = infos
        self._quote = quote
        self._today: DemoDay | None = None
        self._ended: DemoDay | None = None  # the day before today, until its last deals are taken
        self._looked = False
        self._delivered = 0  # deals of the day being delivered already handed over
        self._now_ms = 0  # the latest market time played to

    def _at(self, now_ms: int) -> DemoDay:
        self._now_ms = max(self._now_ms, now_ms)
        day = now_ms // 1000 // DAY_S
        if self._today is None or self._today.day != day:
            self._ended = self._today
            self._today = DemoDay(self._seed, self._infos, day, self._quote)
        self._today.play_until(now_ms // 1000)
        return self._today

    def activity(self, now_ms: int, last: Mapping[str, Tick]) -> Activity:
        """The open positions and orders now, and the deals since the last call (the first call
        gives none: earlier deals are history, for ``deal_range``)."""
        today = self._at(now_ms)
        ended, self._ended = self._ended, None
        deals: list[Record] = []
        if self._looked:
            if ended is not None:
                ended.play_until(ended.day * DAY_S + DAY_S - 1)
                deals += ended.deals[self._delivered:]
                self._delivered = 0
            deals += today.deals[self._delivered:]
        self._looked = True
        self._delivered = len(today.deals)
        return Activity(self._positions(today, last), tuple(map(ORDERS.record, today.orders.values())),
                        tuple(deals))

    def info(self, now_ms: int, last: Mapping[str, Tick]) -> dict[str, Any]:
        """``account_info``: the day's balance, and the open positions marked at ``last``."""
        today = self._at(now_ms)
        profit = round(sum(p["profit"] for p in self._positions(today, last)), 2)
        margin = round(sum(today.margin_of(p) for p in today.positions.values()), 2)
        return account_info(today.balance, profit, margin)

    def deal_range(self, from_s: int, to_s: int, symbol: str | None, count: int) -> list[Record]:
        """The first ``count`` deals with ``time`` in ``from_s..to_s`` of yesterday and today
        (UTC) up to the latest time played: each day involved is played again."""
        now_s = self._now_ms // 1000
        from_s = max(from_s, (now_s // DAY_S - HISTORY_DAYS) * DAY_S)
        to_s = min(to_s, now_s)
        out: list[Record] = []
        for day in range(from_s // DAY_S, to_s // DAY_S + 1):
            played = DemoDay(self._seed, self._infos, day, self._quote)
            played.play_until(min(to_s, day * DAY_S + DAY_S - 1))
            out += [d for d in played.deals if from_s <= d["time_msc"] // 1000 <= to_s
                    and (symbol is None or d["symbol"] == symbol)]
            if len(out) >= count:
                break
        return out[:count]

    def _positions(self, today: DemoDay, last: Mapping[str, Tick]) -> tuple[Record, ...]:
        out = []
        for position in today.positions.values():
            tick = last.get(position["symbol"])
            price = position["price_open"] if tick is None else (tick.bid if position["type"] == BUY else tick.ask)
            out.append(POSITIONS.record({**position, "price_current": price,
                                         "profit": today.profit_of(position, price, position["volume"])}))
        return tuple(out)
