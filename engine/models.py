"""Market data records shared by the sources, the aggregator and the engine."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

# MT5 tick flag bits.
TICK_FLAG_BID = 2
TICK_FLAG_ASK = 4
TICK_FLAG_LAST = 8
TICK_FLAG_VOLUME = 16


class Tick(NamedTuple):
    """One MT5 tick (``MqlTick``'s fields). ``volume`` is the integer volume, ``volume_real`` the
    exact one (fractional lots on exchange symbols); both 0 where the market reports none."""

    symbol: str
    time_msc: int
    bid: float
    ask: float
    last: float = 0.0
    volume: int = 0
    flags: int = TICK_FLAG_BID | TICK_FLAG_ASK
    volume_real: float = 0.0

    def to_payload(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "bid": self.bid,
            "ask": self.ask,
            "last": self.last,
            "volume": self.volume,
            "time_msc": self.time_msc,
            "flags": self.flags,
            "volume_real": self.volume_real,
        }


class Candle:
    """One OHLC bar with MT5's rate fields; mutable while it is forming."""

    __slots__ = (
        "symbol", "timeframe", "time", "open", "high", "low", "close",
        "tick_volume", "spread", "real_volume",
    )

    def __init__(
        self, symbol: str, timeframe: str, time: int, open: float, high: float, low: float,
        close: float, tick_volume: int = 0, spread: int = 0, real_volume: int = 0,
    ) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.time = time
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.tick_volume = tick_volume
        self.spread = spread
        self.real_volume = real_volume

    def to_payload(self, closed: bool) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "time": self.time,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "tick_volume": self.tick_volume,
            "spread": self.spread,
            "real_volume": self.real_volume,
            "closed": closed,
        }

    def copy(self) -> Candle:
        return Candle(
            self.symbol, self.timeframe, self.time, self.open, self.high, self.low,
            self.close, self.tick_volume, self.spread, self.real_volume,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Candle):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __repr__(self) -> str:
        return (
            f"Candle({self.symbol} {self.timeframe} t={self.time} O={self.open} H={self.high} "
            f"L={self.low} C={self.close} v={self.tick_volume} s={self.spread})"
        )


# symbol_info().chart_mode: the price a symbol's bars are built from.
CHART_MODE_BID = 0
CHART_MODE_LAST = 1  # exchange symbols: bars from trades, volumes in volume_real


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """MT5's ``symbol_info`` fields a bot needs to read prices and size orders.

    ``trade_tick_value`` is the account-currency value of one ``trade_tick_size`` move of one
    lot; ``trade_mode`` is MT5's SYMBOL_TRADE_MODE (4: full access).
    """

    name: str
    digits: int
    point: float
    description: str = ""
    currency_base: str = ""
    currency_profit: str = ""
    trade_contract_size: float = 100000.0
    currency_margin: str = ""
    volume_min: float = 0.01
    volume_max: float = 100.0
    volume_step: float = 0.01
    trade_tick_size: float = 0.0  # 0: one point
    trade_tick_value: float = 0.0
    trade_mode: int = 4
    chart_mode: int = CHART_MODE_BID

    def __post_init__(self) -> None:
        # Where a source does not say, MT5's own defaults for a currency pair.
        if not self.trade_tick_size:
            object.__setattr__(self, "trade_tick_size", self.point)
        if not self.currency_margin:
            object.__setattr__(self, "currency_margin", self.currency_base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Book:
    """Depth of market: ``bids`` and ``asks`` as ``[price, volume]`` lists, best first."""

    symbol: str
    time_msc: int
    bids: list[list[float]]
    asks: list[list[float]]

    def to_payload(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "time_msc": self.time_msc, "bids": self.bids, "asks": self.asks}


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """What a source says of itself: ``status`` is ``ok``, ``degraded`` or ``down``."""

    status: str
    connected: bool
    detail: str = ""
