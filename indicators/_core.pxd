# C-level state of the incremental indicators (logic in _core.pyx).
#
# Each indicator keeps its whole state in one plain C struct, so that
#   * `update` is a handful of instructions on C doubles,
#   * `peek` runs the very same step on a copy of the struct (SMA: on its scalars only),
#   * `update_many` copies the struct to a local, loops without the GIL, and writes it back only
#     if the input was all finite (SMA: its ring too).
# `count` is the number of committed values; the step for the value of index `count`
# reproduces TA-Lib's batch arithmetic for that index, operation for operation.

cdef struct SmaState:
    double total        # TA-Lib's running `periodTotal`: once warm, the sum of the last period-1 values
    double value        # last committed output (NaN while warming up)
    long long count
    int period
    int head            # ring slot of the next value (== count % period)
    double* ring        # the last `period` values; value of index i lives in slot i % period

cdef struct EmaState:
    double k            # 2 / (period + 1)
    double seed_sum     # sum of the first `period` values (seed = seed_sum / period)
    double ema
    double value
    long long count
    int period

cdef struct RsiState:
    double prev         # previous input
    double gain         # Wilder-smoothed average gain (a plain sum while seeding)
    double loss         # Wilder-smoothed average loss (a plain sum while seeding)
    double value
    double recip        # 1 / period
    double pm1          # period - 1
    long long count
    int period

cdef struct MacdState:
    double kfast
    double kslow
    double ksignal
    double fast_sum     # sum of x[slow-fast .. slow-1] (seed of the fast EMA)
    double slow_sum     # sum of x[0 .. slow-1] (seed of the slow EMA)
    double signal_sum   # sum of the first `signal` MACD-line values (seed of the signal EMA)
    double fast
    double slow
    double signal_ema
    double line         # last committed outputs (NaN while warming up)
    double signal
    double hist
    long long count
    int fast_period
    int slow_period
    int signal_period


cdef class SMA:
    cdef SmaState st
    cdef int _check(self, double x, str where) except -1


cdef class EMA:
    cdef EmaState st


cdef class RSI:
    cdef RsiState st


cdef class MACD:
    cdef MacdState st
