"""Pure-Python reference indicators, written straight from TA-Lib's published definitions.

Used only by the tests, to check the Cython core (and TA-Lib itself) against something short and
obviously right. Each function takes TA-Lib's inputs (sequences of floats, in TA-Lib's order) and
parameters and returns a list of the same length (a tuple of them for several outputs), NaN where
TA-Lib gives no value yet. No running sums, no tricks: these are slow on purpose.
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


def wma(xs: Sequence[float], period: int) -> list[float]:
    """Weights 1..period, the newest the heaviest; first value at index period-1."""
    div = period * (period + 1) / 2
    return [NAN if i < period - 1 else
            math.fsum(w * x for w, x in zip(range(1, period + 1), xs[i - period + 1:i + 1])) / div
            for i in range(len(xs))]


def bbands(xs: Sequence[float], period: int = 5, nbdevup: float = 2.0, nbdevdn: float = 2.0
           ) -> tuple[list[float], list[float], list[float]]:
    """SMA middle band +- the window's population standard deviation times nbdevup / nbdevdn."""
    mid = sma(xs, period)
    upper, lower = [NAN] * len(xs), [NAN] * len(xs)
    for i in range(period - 1, len(xs)):
        window = xs[i - period + 1:i + 1]
        dev = math.sqrt(math.fsum((x - mid[i]) ** 2 for x in window) / period)
        upper[i], lower[i] = mid[i] + nbdevup * dev, mid[i] - nbdevdn * dev
    return upper, mid, lower


def true_ranges(high: Sequence[float], low: Sequence[float], close: Sequence[float]) -> list[float]:
    """max(high - low, |high - previous close|, |low - previous close|); NaN for the first bar."""
    return [NAN] + [max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
                    for i in range(1, len(close))]


def wilder(values: Sequence[float], period: int, seed: float, start: int) -> list[float]:
    """Wilder's smoothing: ``seed`` at index ``start``, then avg = (avg * (period-1) + x) / period."""
    out = [NAN] * len(values)
    if start >= len(values):
        return out
    out[start] = avg = seed
    for i in range(start + 1, len(values)):
        avg = (avg * (period - 1) + values[i]) / period
        out[i] = avg
    return out


def atr(high: Sequence[float], low: Sequence[float], close: Sequence[float], period: int = 14) -> list[float]:
    """Wilder's average of the true range, seeded with the mean of the first `period` (index period)."""
    tr = true_ranges(high, low, close)
    seed = math.fsum(tr[1:period + 1]) / period if len(tr) > period else NAN
    return wilder(tr, period, seed, period)


def adx(high: Sequence[float], low: Sequence[float], close: Sequence[float], period: int = 14) -> list[float]:
    """Wilder's ADX as TA-Lib computes it: +DM/-DM and TR summed over the first period-1 bars,
    then Wilder-smoothed (x - x/period + today); DX = 100 |+DI - -DI| / (+DI + -DI); ADX seeded with
    the mean of the first `period` DX (index 2*period-1), then Wilder-smoothed."""
    n = len(close)
    out = [NAN] * n
    plus = minus = tr_sum = 0.0
    dxs: list[float | None] = []
    tr = true_ranges(high, low, close)
    for i in range(1, n):
        up, down = high[i] - high[i - 1], low[i - 1] - low[i]
        if i >= period:
            plus, minus, tr_sum = plus - plus / period, minus - minus / period, tr_sum - tr_sum / period
        if down > 0 and up < down:
            minus += down
        elif up > 0 and up > down:
            plus += up
        tr_sum += tr[i]
        if i < period:
            continue
        dx = None
        if tr_sum != 0:
            pdi, mdi = 100 * plus / tr_sum, 100 * minus / tr_sum
            if pdi + mdi != 0:
                dx = 100 * abs(mdi - pdi) / (mdi + pdi)
        dxs.append(dx)
        if i == 2 * period - 1:
            out[i] = value = math.fsum(d for d in dxs if d is not None) / period
        elif i > 2 * period - 1:
            if dx is not None:
                value = (value * (period - 1) + dx) / period
            out[i] = value
    return out


def cci(high: Sequence[float], low: Sequence[float], close: Sequence[float], period: int = 14) -> list[float]:
    """(typical - its SMA) / (0.015 * mean absolute deviation), typical = (h + l + c) / 3; 0 when
    either is within 1e-14 of the mean (TA-Lib 0.8). First value at index period-1."""
    tp = [(h + l + c) / 3 for h, l, c in zip(high, low, close)]
    out = [NAN] * len(tp)
    for i in range(period - 1, len(tp)):
        window = tp[i - period + 1:i + 1]
        mean = math.fsum(window) / period
        dev = math.fsum(abs(x - mean) for x in window) / period
        small = 1e-14 * abs(mean)
        out[i] = 0.0 if min(abs(tp[i] - mean), dev) < small or dev == 0 else (tp[i] - mean) / (0.015 * dev)
    return out


def stoch(high: Sequence[float], low: Sequence[float], close: Sequence[float], fastk_period: int = 5,
          slowk_period: int = 3, slowd_period: int = 3) -> tuple[list[float], list[float]]:
    """Fast %K = 100 (close - lowest low) / (highest high - lowest low) over fastk_period (0 when
    the range is 0); slow %K = its SMA(slowk_period), slow %D = SMA(slowd_period) of slow %K; both
    start at index fastk + slowk + slowd - 3."""
    n = len(close)
    fastk = []
    for i in range(fastk_period - 1, n):
        hh, ll = max(high[i - fastk_period + 1:i + 1]), min(low[i - fastk_period + 1:i + 1])
        fastk.append(0.0 if hh == ll else 100 * (close[i] - ll) / (hh - ll))
    slowk = [x for x in sma(fastk, slowk_period)[slowk_period - 1:]]
    slowd = sma(slowk, slowd_period)
    start = fastk_period + slowk_period + slowd_period - 3
    out_k, out_d = [NAN] * n, [NAN] * n
    for i in range(start, n):
        j = i - (fastk_period - 1) - (slowk_period - 1)
        out_k[i], out_d[i] = slowk[j], slowd[j]
    return out_k, out_d


def obv(close: Sequence[float], volume: Sequence[float]) -> list[float]:
    """Running volume, added on an up close and subtracted on a down one; starts at the first volume."""
    out = []
    total = 0.0
    for i, (c, v) in enumerate(zip(close, volume)):
        if i == 0:
            total = v
        elif c > close[i - 1]:
            total += v
        elif c < close[i - 1]:
            total -= v
        out.append(total)
    return out
