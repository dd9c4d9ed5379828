"""The configured indicator set for one (symbol, timeframe), driven by candle payloads. Pure.

Also the settings that choose the set (``INDICATORS``; the old ``IND_*`` periods still work as
periods of the default set), read alike by the workers and the bridge.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Any

import numpy as np

from engine.config import ConfigError, Settings, setting
from indicators.catalog import CLOSE
from indicators.spec import DEFAULT_INDICATORS, DEFAULT_SET, Instance, parse_indicators


@dataclass(frozen=True, slots=True)
class Periods:
    """The periods of the default set (the old ``IND_*`` settings)."""

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
        parse_indicators(periods.spec)  # raises ValueError for a period out of the indicators' range
        return periods

    @property
    def macd_text(self) -> str:
        return ",".join(map(str, self.macd))

    @property
    def spec(self) -> str:
        """The default set with these periods, as an ``INDICATORS`` spec (today's keys)."""
        return f"sma=sma:{self.sma},ema=ema:{self.ema},rsi=rsi:{self.rsi},macd=macd:{':'.join(map(str, self.macd))}"


_DEFAULT_PERIODS = Periods()


def indicator_spec(value: str) -> None:
    """Settings rule: a spec ``parse_indicators`` accepts."""
    parse_indicators(value)


@dataclass(frozen=True)
class IndicatorSettings(Settings):
    """The indicator set as settings: ``INDICATORS`` (``[name=]kind:param:param...``, comma
    separated), and the old ``IND_SMA``, ``IND_EMA``, ``IND_RSI``, ``IND_MACD``, which still set
    the default set's periods (with ``INDICATORS`` too, they are refused). The workers compute
    this set and the bridge's ``get_indicators`` does too, so both read the same variables."""

    indicators: str = field(default=DEFAULT_INDICATORS, metadata=setting("INDICATORS", indicator_spec))
    ind_sma: int = field(default=_DEFAULT_PERIODS.sma, metadata=setting("IND_SMA"))
    ind_ema: int = field(default=_DEFAULT_PERIODS.ema, metadata=setting("IND_EMA"))
    ind_rsi: int = field(default=_DEFAULT_PERIODS.rsi, metadata=setting("IND_RSI"))
    ind_macd: str = field(default=_DEFAULT_PERIODS.macd_text, metadata=setting("IND_MACD"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _ = self.indicator_set  # refuses bad or conflicting values at start-up

    @property
    def periods(self) -> Periods:
        """The default set's periods (``IND_*``); ``ConfigError`` when they are not valid ones."""
        try:
            return Periods.parse(self.ind_sma, self.ind_ema, self.ind_rsi, self.ind_macd)
        except ValueError as exc:
            raise ConfigError(f"IND_SMA/IND_EMA/IND_RSI/IND_MACD: {exc}") from None

    @cached_property
    def indicator_set(self) -> tuple[Instance, ...]:
        """The configured instances, in ``INDICATORS`` order."""
        periods = self.periods
        if periods == _DEFAULT_PERIODS:
            return parse_indicators(self.indicators)
        if self.indicators != DEFAULT_INDICATORS:
            raise ConfigError("INDICATORS: set together with IND_SMA/IND_EMA/IND_RSI/IND_MACD, which only change "
                              f"the default set's periods; put them in INDICATORS (e.g. {periods.spec!r})")
        return parse_indicators(periods.spec)


# The bridge's configuration still imports the settings under their old name.
PeriodSettings = IndicatorSettings


def closed_bars(candles: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The closed bars of a history (a bar without the ``closed`` key counts as closed)."""
    return [c for c in candles if c.get("closed", True)]


# The candle fields an indicator can take, in the order ``values`` gets them.
BAR_FIELDS = ("open", "high", "low", "close", "tick_volume")


def _nil(x: float) -> float | None:
    """NaN (still warming up) travels as nil."""
    return None if math.isnan(x) else x


class IndicatorSeries:
    """The configured indicators over one candle topic (the default set unless told otherwise).

    A closed candle commits its bar (once: a bar at or before the last committed one is skipped,
    as after a warm-up that already holds it); a forming candle is peeked, so its values are what
    the close would give, and nothing changes. Each indicator reads the candle fields it needs
    (``close``; ``high``, ``low``, ``close``; or ``close``, ``tick_volume``).
    """

    __slots__ = ("symbol", "timeframe", "instances", "indicators", "keys", "last_closed", "_plan", "_steps")

    def __init__(self, symbol: str, timeframe: str,
                 indicators: Sequence[Instance] | Periods = DEFAULT_SET) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        if isinstance(indicators, Periods):
            indicators = parse_indicators(indicators.spec)
        self.instances = tuple(indicators)
        self.indicators = [inst.make() for inst in self.instances]
        self.keys = tuple(key for inst in self.instances for key in inst.keys)
        # what on_candle does per indicator: its inputs and its keys
        self._plan = [(ind, inst.kind.inputs, inst.keys) for inst, ind in zip(self.instances, self.indicators)]
        # ``values``' steps for a closed and for a forming bar: the indicator's update (or peek),
        # the bar fields it takes (None: the close alone) and whether it gives several values.
        self._steps = {closed: [(ind.update if closed else ind.peek,
                                 None if inputs == CLOSE else itemgetter(*(BAR_FIELDS.index(n) for n in inputs)),
                                 len(keys) > 1) for ind, inputs, keys in self._plan]
                       for closed in (True, False)}
        self.last_closed = -1  # open time of the last committed bar

    def warm(self, candles: Sequence[dict[str, Any]]) -> np.ndarray:
        """Start over from history (oldest first); only closed bars are committed.

        Returns the values after each closed bar, a row each, a column per key (``keys`` order;
        NaN while warming up).
        """
        closed = closed_bars(candles)
        columns: dict[str, np.ndarray] = {}

        def column(name: str) -> np.ndarray:
            if name not in columns:
                columns[name] = np.fromiter((c[name] for c in closed), dtype=np.float64, count=len(closed))
            return columns[name]

        outputs: list[np.ndarray] = []
        for inst, ind in zip(self.instances, self.indicators):
            ind.reset()
            values = ind.update_many(*(column(name) for name in inst.kind.inputs))
            outputs.extend(values if isinstance(values, tuple) else (values,))
        self.last_closed = closed[-1]["time"] if closed else -1
        return np.column_stack(outputs) if outputs else np.empty((len(closed), 0))

    def on_candle(self, candle: dict[str, Any]) -> dict[str, Any] | None:
        """The ``ind:`` payload for a candle message, or None if it was already counted (a field
        an indicator takes missing: TypeError)."""
        values = self.values(candle["time"], candle["closed"], tuple(candle.get(name) for name in BAR_FIELDS))
        if values is None:
            return None
        payload: dict[str, Any] = {"symbol": self.symbol, "timeframe": self.timeframe,
                                   "time": candle["time"], "closed": candle["closed"]}
        payload.update(zip(self.keys, map(_nil, values)))
        return payload

    def commit_many(self, times: np.ndarray, bar: Sequence[np.ndarray]) -> np.ndarray:
        """``values`` of closed bars in order (``times``: their open times, increasing and after
        ``last_closed``; ``bar``: their ``BAR_FIELDS`` as float64 columns), computed at once:
        a row of values per bar."""
        outputs: list[np.ndarray] = []
        for ind, inputs, _ in self._plan:
            values = ind.update_many(*(bar[BAR_FIELDS.index(name)] for name in inputs))
            outputs.extend(values if isinstance(values, tuple) else (values,))
        self.last_closed = int(times[-1])
        return np.column_stack(outputs) if outputs else np.empty((len(times), 0))

    def values(self, time: int, closed: bool, bar: tuple[float, ...]) -> list[float] | None:
        """``on_candle``'s values (``keys`` order, NaN while warming up) for the bar opened at
        ``time`` (``bar``: its ``BAR_FIELDS``), or None if it was already counted."""
        if time <= self.last_closed:
            return None  # a bar already committed, or a stale forming update of one
        if closed:
            self.last_closed = time
        close = bar[3]
        out: list[float] = []
        for step, inputs, several in self._steps[closed]:
            value = step(close) if inputs is None else step(*inputs(bar))
            if several:
                out += value
            else:
                out.append(value)
        return out
