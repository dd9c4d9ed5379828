"""Indicator values over a candle history (pure): what the worker publishes, bar by bar.

The values come from ``indicators.series.IndicatorSeries``, the worker's own core over the
catalogue: closed bars are committed in order (``warm``, as the worker's warm-up does), and a
forming last bar is peeked (``on_candle``, as the worker does for every forming update).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from indicators.series import IndicatorSeries, closed_bars
from indicators.spec import DEFAULT_SET, Instance


def indicator_history(symbol: str, timeframe: str, candles: Sequence[dict[str, Any]], count: int,
                      instances: Sequence[Instance] = DEFAULT_SET) -> list[dict[str, Any]]:
    """The ``indicators`` payloads of the last ``count`` (>= 1) bars of ``candles`` (oldest first),
    a value per output key of ``instances``.

    Every bar before them warms the indicators up, so pass more history than ``count`` to get
    values for the first bars returned; a value not ready yet is ``None``. Only closed bars are
    committed (as in ``IndicatorSeries.warm``); a forming last bar gets the peeked values.
    """
    series = IndicatorSeries(symbol, timeframe, instances)
    table = series.warm(candles)
    forming = candles[-1] if candles and not candles[-1]["closed"] else None
    closed = closed_bars(candles)
    first = max(0, len(closed) - (count - (forming is not None)))
    cells = table[first:].astype(object)
    cells[np.isnan(table[first:])] = None  # NaN (warming up) travels as null
    keys = series.keys
    values = [{"symbol": symbol, "timeframe": timeframe, "time": bar["time"], "closed": True, **dict(zip(keys, row))}
              for bar, row in zip(closed[first:], cells.tolist())]
    if forming is not None:
        peeked = series.on_candle(forming)
        if peeked is not None:  # None only for a forming bar not after the last closed one
            values.append(peeked)
    return values
