"""Indicator values over a candle history (pure): what the worker publishes, bar by bar.

The values come from ``indicators.series.IndicatorSeries``, the worker's own core over the
catalogue: closed bars are committed in order (``warm``, as the worker's warm-up does), and a
forming last bar is peeked (``on_candle``, as the worker does for every forming update).
Computing them is fast (numpy); turning them into payload maps is most of the work, so
``IndicatorRows`` builds the maps a range at a time, and a caller may take turns between ranges.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from indicators.series import IndicatorSeries, closed_bars
from indicators.spec import DEFAULT_SET, Instance


class IndicatorRows(Sequence[dict[str, Any]]):
    """The ``indicators`` payloads of the last ``count`` (>= 1) bars of ``candles`` (oldest
    first), a value per output key of ``instances``, built when a range of them is read.

    Every bar before them warms the indicators up, so pass more history than ``count`` to get
    values for the first bars returned; a value not ready yet is ``None``. Only closed bars are
    committed (as in ``IndicatorSeries.warm``); a forming last bar gets the peeked values.
    """

    def __init__(self, symbol: str, timeframe: str, candles: Sequence[dict[str, Any]], count: int,
                 instances: Sequence[Instance] = DEFAULT_SET) -> None:
        series = IndicatorSeries(symbol, timeframe, instances)
        table = series.warm(candles)
        forming = candles[-1] if candles and not candles[-1]["closed"] else None
        closed = closed_bars(candles)
        first = max(0, len(closed) - (count - (forming is not None)))
        self.symbol, self.timeframe, self.keys = symbol, timeframe, series.keys
        self._closed = closed[first:]
        self._table = table[first:]
        # None only for a forming bar not after the last closed one
        peeked = series.on_candle(forming) if forming is not None else None
        self._forming = [peeked] if peeked is not None else []

    def __len__(self) -> int:
        return len(self._closed) + len(self._forming)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("IndicatorRows are read in ranges (step 1)")
            return self._rows(start, stop)
        if not -len(self) <= index < len(self):
            raise IndexError("IndicatorRows index out of range")
        index %= len(self)
        return self._rows(index, index + 1)[0]

    def _rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """The payloads of rows ``start`` to ``stop`` (the forming bar's last)."""
        shown = len(self._closed)
        closed_stop = min(stop, shown)
        rows: list[dict[str, Any]] = []
        if start < closed_stop:
            table = self._table[start:closed_stop]
            cells = table.astype(object)
            cells[np.isnan(table)] = None  # NaN (warming up) travels as null
            symbol, timeframe, keys = self.symbol, self.timeframe, self.keys
            rows = [{"symbol": symbol, "timeframe": timeframe, "time": bar["time"], "closed": True,
                     **dict(zip(keys, row))}
                    for bar, row in zip(self._closed[start:closed_stop], cells.tolist())]
        return rows + self._forming[max(start, shown) - shown:max(stop, shown) - shown]


def indicator_history(symbol: str, timeframe: str, candles: Sequence[dict[str, Any]], count: int,
                      instances: Sequence[Instance] = DEFAULT_SET) -> list[dict[str, Any]]:
    """Every row of ``IndicatorRows(symbol, timeframe, candles, count, instances)``, built at once."""
    return IndicatorRows(symbol, timeframe, candles, count, instances)[:]
