"""Pure-Python reference indicators, written straight from TA-Lib's published definitions.

Used only by the tests, to check the Cython core (and TA-Lib itself) against something short and
obviously right. Each function takes a sequence of floats and returns a list of the same length,
NaN where TA-Lib gives no value yet. No running sums, no tricks: these are slow on purpose.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

NAN = math.nan


def sma(xs: Sequence[float], period: int) -> list[float]:
    """Mean of the last `period` values; first value at index period-1."""
    return [NAN if i < period - 1 else math.fsum(xs[i - period + 1:i + 1]) / period
            for i in range(len(xs))]


def ema(xs: Sequence[float], period: int) -> list[float]:
    """k = 2/(period+1), seeded with the mean of the first `period` values (index period-1)."""
    k = 2.0 / (period + 1)
    out = [NAN] * len(xs)
    if len(xs) < period:
        return out
    prev = math.fsum(xs[:period]) / period
    out[period - 1] = prev
    for i in range(period, len(xs)):
        prev = prev + k * (xs[i] - prev)
        out[i] = prev
    return out


def rsi(xs: Sequence[float], period: int = 14) -> list[float]:
    """Wilder's RSI: averages of gains and losses seeded with the simple means of the first
    `period` changes, then avg = (avg * (period-1) + today) / period; 100 * gain / (gain + loss),
    0 when there was no move at all. First value at index `period`."""
    out = [NAN] * len(xs)
    if len(xs) <= period:
        return out
    changes = [b - a for a, b in zip(xs, xs[1:])]
    gain = sum(max(c, 0.0) for c in changes[:period]) / period
    loss = sum(max(-c, 0.0) for c in changes[:period]) / period

    def value(g: float, l: float) -> float:
        return 0.0 if g + l == 0.0 else 100.0 * g / (g + l)

    out[period] = value(gain, loss)
    for i in range(period + 1, len(xs)):
        c = changes[i - 1]
        gain = (gain * (period - 1) + max(c, 0.0)) / period
        loss = (loss * (period - 1) + max(-c, 0.0)) / period
        out[i] = value(gain, loss)
    return out


def macd(xs: Sequence[float], fast: int = 12, slow: int = 26, signal: int = 9
         ) -> tuple[list[float], list[float], list[float]]:
    """TA-Lib's MACD: both EMAs start on the same bar (index slow-1), the fast one seeded with
    the mean of the `fast` values ending there; line = fast EMA - slow EMA; signal = EMA(signal)
    of the line; hist = line - signal. All three start at index slow + signal - 2."""
    if slow < fast:
        fast, slow = slow, fast
    n = len(xs)
    nans = [NAN] * n
    if n < slow + signal - 1:
        return nans, list(nans), list(nans)
    tail = xs[slow - 1:]
    fast_ema = ema(list(xs[slow - fast:slow]) + list(tail[1:]), fast)[fast - 1:]
    slow_ema = ema(xs, slow)[slow - 1:]
    line = [f - s for f, s in zip(fast_ema, slow_ema)]        # line[j] is for index slow-1+j
    sig = ema(line, signal)
    start = slow + signal - 2
    out_line, out_sig, out_hist = list(nans), list(nans), list(nans)
    for i in range(start, n):
        j = i - (slow - 1)
        out_line[i], out_sig[i], out_hist[i] = line[j], sig[j], line[j] - sig[j]
    return out_line, out_sig, out_hist
