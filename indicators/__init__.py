"""Indicators: a Cython core of incremental SMA/EMA/RSI/MACD whose values equal TA-Lib's.

    from indicators import SMA, EMA, RSI, MACD

    rsi = RSI(14)
    rsi.update_many(history)      # warm up (numpy float64 array in, numpy array out)
    rsi.update(close)             # a closed candle: commits, returns the value (NaN while warming up)
    rsi.peek(forming_close)       # the forming candle: same value update() would give, commits nothing
"""
from indicators._core import EMA, MACD, RSI, SMA

__all__ = ["SMA", "EMA", "RSI", "MACD"]
