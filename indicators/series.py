"""One set of indicators for one (symbol, timeframe), driven by candle payloads. Pure."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.config import ConfigError, Settings, setting
from indicators._core import EMA, MACD, RSI, SMA


@dataclass(frozen=True, slots=True)
class Periods:
    sma: int = 20
    ema: int = 20
    rsi: int = 14
    macd: tuple[int, int, int] = (12, 26, 9)

    @classmethod
    def parse(cls, sma: object, ema: object, rsi: object, macd: str) -> Periods:
        """Periods from settings text (``IND_SMA``.. and ``IND_MACD`` as ``fast,slow,signal``),
        checked as the indicators check them; ``ValueError`` says what is wrong."""
        try:
            fast, slow, signal = (int(p) for p in str(macd).split(","))
            periods = cls(int(sma), int(ema), int(rsi), (fast, slow, signal))  # type: ignore[call-overload]
        except ValueError:
            raise ValueError(f"periods must be integers and MACD fast,slow,signal, got "
                             f"{sma!r}, {ema!r}, {rsi!r}, {macd!r}") from None
        IndicatorSeries("", "", periods)  # raises ValueError for a period out of the indicators' range
        return periods

    @property
    def macd_text(self) -> str:
        return ",".join(map(str, self.macd))


_DEFAULT_PERIODS = Periods()


@dataclass(frozen=True)
class PeriodSettings(Settings):
    """The indicator periods as settings (``IND_SMA``, ...): the workers compute with them and
    the bridge's ``get_indicators`` does too, so both read the same variables this way."""

    ind_sma: int = field(default=_DEFAULT_PERIODS.sma, metadata=setting("IND_SMA"))
    ind_ema: int = field(default=_DEFAULT_PERIODS.ema, metadata=setting("IND_EMA"))
    ind_rsi: int = field(default=_DEFAULT_PERIODS.rsi, metadata=setting("IND_RSI"))
    ind_macd: str = field(default=_DEFAULT_PERIODS.macd_text, metadata=setting("IND_MACD"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _ = self.periods  # refuses bad IND_* values at start-up

    @property
    def periods(self) -> Periods:
        """The indicator periods; ``ConfigError`` when they are not valid ones."""
        try:
            return Periods.parse(self.ind_sma, self.ind_ema, self.ind_rsi, self.ind_macd)
        except ValueError as exc:
            raise ConfigError(f"IND_SMA/IND_EMA/IND_RSI/IND_MACD: {exc}") from None


def closed_bars(candles: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The closed bars of a history (a bar without the ``closed`` key counts as closed)."""
    return [c for c in candles if c.get("closed", True)]


def _nil(x: float) -> float | None:
    """NaN (still warming up) travels as nil."""
    return None if math.isnan(x) else x


class IndicatorSeries:
    """SMA, EMA, RSI and MACD over the closes of one candle topic.

    A closed candle commits its close (once: a bar at or before the last committed one is
    skipped, as after a warm-up that already holds it); a forming candle is peeked, so its
    values are what the close would give, and nothing changes.
    """

    __slots__ = ("symbol", "timeframe", "sma", "ema", "rsi", "macd", "last_closed")

    def __init__(self, symbol: str, timeframe: str, periods: Periods = Periods()) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.sma = SMA(periods.sma)
        self.ema = EMA(periods.ema)
        self.rsi = RSI(periods.rsi)
        self.macd = MACD(*periods.macd)
        self.last_closed = -1  # open time of the last committed bar

    def warm(self, candles: Sequence[dict[str, Any]]) -> np.ndarray:
        """Start over from history (oldest first); only closed bars are committed.

        Returns the values after each closed bar, a row each: sma, ema, rsi, macd, signal, hist
        (NaN while warming up).
        """
        for ind in (self.sma, self.ema, self.rsi, self.macd):
            ind.reset()
        closed = closed_bars(candles)
        closes = np.fromiter((c["close"] for c in closed), dtype=np.float64, count=len(closed))
        table = np.column_stack((self.sma.update_many(closes), self.ema.update_many(closes),
                                 self.rsi.update_many(closes), *self.macd.update_many(closes)))
        self.last_closed = closed[-1]["time"] if closed else -1
        return table

    def on_candle(self, candle: dict[str, Any]) -> dict[str, Any] | None:
        """The ``ind:`` payload for a candle message, or None if it was already counted."""
        close = candle["close"]
        closed = candle["closed"]
        if closed:
            if candle["time"] <= self.last_closed:
                return None
            self.last_closed = candle["time"]
            sma, ema, rsi = self.sma.update(close), self.ema.update(close), self.rsi.update(close)
            macd, signal, hist = self.macd.update(close)
        else:
            if candle["time"] <= self.last_closed:
                return None  # a stale forming update of a bar already closed
            sma, ema, rsi = self.sma.peek(close), self.ema.peek(close), self.rsi.peek(close)
            macd, signal, hist = self.macd.peek(close)
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "time": candle["time"],
            "closed": closed,
            "sma": _nil(sma),
            "ema": _nil(ema),
            "rsi": _nil(rsi),
            "macd": _nil(macd),
            "macd_signal": _nil(signal),
            "macd_hist": _nil(hist),
        }
