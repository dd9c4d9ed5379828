"""The catalogue: every indicator kind in one line (class, candle inputs, parameters with TA-Lib's
names and limits, output key suffixes). A kind registered here can be named in ``INDICATORS``,
is computed by the workers and is checked against TA-Lib by the tests (they iterate ``KINDS``)."""
from __future__ import annotations

from dataclasses import dataclass

from indicators._core import ADX, ATR, BBANDS, CCI, EMA, MACD, OBV, RSI, SMA, STOCH, WMA, Indicator

MAX_PERIOD = 100_000  # TA-Lib's upper bound for every period
MAX_REAL = 3e37  # TA-Lib's bound for a real parameter

# Inputs, as the candle fields that feed ``update`` (in its argument order).
CLOSE = ("close",)
HLC = ("high", "low", "close")
CLOSE_VOLUME = ("close", "tick_volume")


@dataclass(frozen=True, slots=True)
class Param:
    """One constructor argument: TA-Lib's name, its type and TA-Lib's limits (inclusive)."""

    name: str
    type: type[int] | type[float]
    low: float
    high: float


def period(name: str = "timeperiod", low: int = 2) -> Param:
    return Param(name, int, low, MAX_PERIOD)


def real(name: str) -> Param:
    return Param(name, float, -MAX_REAL, MAX_REAL)


@dataclass(frozen=True, slots=True)
class Kind:
    """An indicator kind: ``cls(*params)`` computes it; ``update(*inputs)`` returns one value per
    output suffix, in TA-Lib's order (the key of an output is the instance name + its suffix)."""

    name: str
    cls: type[Indicator]
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    outputs: tuple[str, ...] = ("",)


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("sma", SMA, CLOSE, (period(low=1),)),
    Kind("ema", EMA, CLOSE, (period(low=1),)),
    Kind("wma", WMA, CLOSE, (period(low=1),)),
    Kind("rsi", RSI, CLOSE, (period(),)),
    Kind("macd", MACD, CLOSE, (period("fastperiod"), period("slowperiod"), period("signalperiod", 1)),
         ("", "_signal", "_hist")),
    Kind("bbands", BBANDS, CLOSE, (period(), real("nbdevup"), real("nbdevdn")), ("_upper", "_middle", "_lower")),
    Kind("atr", ATR, HLC, (period(low=1),)),
    Kind("adx", ADX, HLC, (period(),)),
    Kind("cci", CCI, HLC, (period(),)),
    Kind("stoch", STOCH, HLC, (period("fastk_period", 1), period("slowk_period", 1), period("slowd_period", 1)),
         ("_k", "_d")),
    Kind("obv", OBV, CLOSE_VOLUME, ()),
)}
