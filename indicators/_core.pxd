# C-level state of the incremental indicators (logic in _core.pyx).
#
# Each indicator keeps its scalars in one plain C struct and its windows (if any) in the base's
# one `buf` of doubles, so that
#   * `update` is a handful of instructions on C doubles,
#   * `peek` runs the very same step on a copy of the struct (restoring the window slots it wrote),
#   * `update_many` loops without the GIL (one virtual call per array, none per value),
#   * `state()` is the struct as a dict (Cython converts plain structs both ways) plus `buf`.
# `count` is the number of committed values; the step for the value of index `count`
# reproduces TA-Lib's batch arithmetic for that index. Windows are rings indexed by count % size.

cdef struct SmaState:
    double total        # TA-Lib's running `periodTotal`: once warm, the sum of the last period-1 values
    double value        # last committed output (NaN while warming up)
    long long count
    int period
    int head            # ring slot of the next value (== count % period)

cdef struct EmaState:
    double k            # 2 / (period + 1)
    double seed_sum     # sum of the first `period` values (seed = seed_sum / period)
    double ema
    double value
    long long count
    int period

cdef struct WmaState:
    double total        # TA-Lib's `periodSum`: the weighted sum (weights 1..period)
    double plain        # TA-Lib's `periodSub`: the plain sum of the window
    double trailing     # the value leaving the window at the next step
    double recip        # 1 / (period * (period + 1) / 2), the weights' sum
    double value
    long long count
    int period
    int head            # ring slot of the next value (== count % period)

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

cdef struct BbandsState:
    double total        # running sum (the middle band is TA-Lib's SMA)
    double m2           # sum of squared deviations from the middle band (summed anew every period)
    double recip        # 1 / period
    double nbdevup
    double nbdevdn
    double upper
    double middle
    double lower
    long long count
    int period
    int head            # ring slot of the next value (== count % period)

cdef struct AtrState:
    double prev_close
    double tr_sum       # sum of the first `period` true ranges (the seed)
    double atr
    double value
    double decay        # (period - 1) / period
    double recip        # 1 / period
    long long count
    int period

cdef struct AdxState:
    double prev_high
    double prev_low
    double prev_close
    double plus_dm      # Wilder-smoothed +DM, -DM and true range (plain sums while seeding)
    double minus_dm
    double tr
    double dx_sum       # sum of the first `period` DX values (the ADX seed)
    double adx
    double value
    long long count
    int period

cdef struct CciState:
    double value
    long long count
    int period
    int head            # ring slot of the next value (== count % period)

cdef struct StochState:
    double highest
    double lowest
    double diff         # highest - lowest
    double k_total      # running sums of the slow %K and slow %D SMAs
    double d_total
    double slowk
    double slowd
    long long highest_idx
    long long lowest_idx
    long long count
    int fastk_period
    int slowk_period
    int slowd_period
    int head            # slot of the next bar in the high/low rings (== count % fastk_period)
    int k_head          # slot of the next fast %K (its index % slowk_period)
    int d_head          # slot of the next slow %K (its index % slowd_period)

cdef struct ObvState:
    double prev_close
    double obv
    double value
    long long count


cdef class Indicator:
    cdef double* buf            # the windows, or NULL when the indicator has none
    cdef Py_ssize_t nbuf
    cdef readonly tuple params  # the constructor's arguments, in TA-Lib's order
    cdef readonly int lookback  # values consumed before the first output (TA-Lib's lookback)
    cdef int n_in               # inputs per update (1: close, 2: close+volume, 3: high, low, close)
    cdef int n_out              # outputs per update (a tuple when > 1)
    cdef bint precheck          # update_many checks its inputs first (not "sticky" in the state)

    cdef int _setup(self, tuple params, int lookback, Py_ssize_t nbuf, int n_in, int n_out,
                    bint precheck) except -1
    cdef int _need_init(self, str where) except -1
    cdef int _check_inputs(self, list ins, str where) except -1
    cdef void _reset(self) noexcept
    cdef long long _count(self) noexcept
    cdef object _value(self)
    cdef dict _fields(self)
    cdef int _set_fields(self, dict d) except -1
    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil


cdef class SMA(Indicator):
    cdef SmaState st

cdef class EMA(Indicator):
    cdef EmaState st

cdef class WMA(Indicator):
    cdef WmaState st

cdef class RSI(Indicator):
    cdef RsiState st

cdef class MACD(Indicator):
    cdef MacdState st

cdef class BBANDS(Indicator):
    cdef BbandsState st

cdef class ATR(Indicator):
    cdef AtrState st

cdef class ADX(Indicator):
    cdef AdxState st

cdef class CCI(Indicator):
    cdef CciState st

cdef class STOCH(Indicator):
    cdef StochState st
    cdef void _slots(self, const StochState* s, Py_ssize_t* slots) noexcept

cdef class OBV(Indicator):
    cdef ObvState st
