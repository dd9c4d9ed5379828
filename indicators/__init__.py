"""Indicators: a Cython catalogue of incremental indicators whose values equal TA-Lib's.

    from indicators import RSI, ATR

    rsi = RSI(14)
    rsi.update_many(history)      # warm up (numpy float64 array in, numpy array out)
    rsi.update(close)             # a closed candle: commits, returns the value (NaN while warming up)
    rsi.peek(forming_close)       # the forming candle: same value update() would give, commits nothing
    ATR(14).update(high, low, close)

``indicators.catalog.KINDS`` lists every kind; ``indicators.spec.parse_indicators`` reads the
``INDICATORS`` setting.
"""
from indicators._core import ADX, ATR, BBANDS, CCI, EMA, MACD, OBV, RSI, SMA, STOCH, WMA, Indicator

__all__ = ["Indicator", "SMA", "EMA", "WMA", "RSI", "MACD", "BBANDS", "ATR", "ADX", "CCI", "STOCH", "OBV"]
