# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Incremental indicators whose values are TA-Lib's: SMA, EMA, WMA, RSI, MACD, BBANDS (one input,
the close), ATR, ADX, CCI, STOCH (high, low, close) and OBV (close, volume).

Every indicator is an ``Indicator`` (the shared base) with the same small surface:

* ``update(*inputs)`` commits a closed bar and returns the value (NaN while warming up; a tuple in
  TA-Lib's order for MACD ``(macd, signal, hist)``, BBANDS ``(upper, middle, lower)`` and STOCH
  ``(slowk, slowd)``);
* ``peek(*inputs)`` returns what ``update`` would return without changing anything (forming candle);
* ``update_many(*arrays)`` = ``update`` on each element of float64 1-D arrays, returns numpy array(s);
* ``ready``, ``value``, ``count``, ``lookback``, ``params``, ``reset()``;
* ``state()`` / ``cls.from_state(d)`` and pickling, so a worker restarts warm; ``copy()``.

The base carries everything but ``update``/``peek`` and the loop of ``update_many`` (``_run``):
an indicator is its state struct (``_core.pxd``), its step functions and those three.

An indicator is not thread-safe: ``update_many`` runs without the GIL, so feed one indicator from
one thread at a time (distinct indicators may run in parallel threads).

The arithmetic follows TA-Lib 0.8.2's batch functions (C library 0.8.1) operation for operation,
so a fresh indicator fed a series gives TA-Lib's values on it, warm-up NaNs included (SMA, EMA,
RSI and MACD bit for bit; the others within 1e-9 relative, see the tests). Specifics of that
library version, found empirically; they are what a C build with fused multiply-add and
reciprocal division (fast-math style) computes:

* SMA: running total ``t += x; out = t / p; t -= oldest`` (no periodic recomputation);
* EMA: seed = (sum of the first p values) / p, then ``ema = fma(x - ema, k, ema)`` (one rounding,
  a fused multiply-add), k = 2 / (p + 1); EMA(1) is the input itself;
* RSI: seed = (sum of the first p gains / losses) * (1/p); then ``avg = (avg * (p-1) + today) * (1/p)``;
  value ``100 * (gain / (gain + loss))`` and 0 only when ``gain + loss == 0`` exactly;
* MACD: slow and fast EMAs both seeded at index slow-1 (fast on x[slow-fast .. slow-1]), line =
  fast - slow, signal = EMA(signal) of the line seeded by the mean of its first values (all three
  EMAs as above); a slow period shorter than the fast one is swapped with it, as TA-Lib does;
* WMA: TA-Lib's running weighted sum and plain sum; BBANDS: the SMA as middle band and the
  population standard deviation of the window from that mean (slid by Welford's update, summed
  anew every period);
* ATR, ADX: Wilder's smoothing seeded as TA-Lib seeds it (ATR: the SMA of the first true ranges;
  ADX: sums of the first period-1 DMs and true ranges, then the mean of the first period DX);
* CCI: the mean deviation over the window each step, summed in TA-Lib's ring order; 0 when the
  close's deviation or the mean deviation is under 1e-14 of the mean (TA-Lib 0.8's threshold);
* STOCH: fast %K = 100 * ((close - lowest) / (highest - lowest)) over the window, slow %K and %D
  as SMAs of it (TA-Lib's default MA type).

One known difference: where magnitudes near the float limit (|x| ~ 1e307 and up) make a price
change or an RSI sum overflow to inf, TA-Lib's RSI gives values (0 rather than NaN) that its
non-finite arithmetic happens to produce; this RSI gives what IEEE arithmetic gives.
"""
from libc.math cimport NAN, fabs, isfinite, sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import operator

import numpy as np

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* 1 if no element is NaN or +-inf: branch-free, vectorisable (exponent all ones <=> bit 63 of
       (u & EXP) + (1 << 52) is set). */
    static int ind_all_finite(const double *x, Py_ssize_t n) {
        uint64_t acc = 0;
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            uint64_t u;
            memcpy(&u, x + i, sizeof u);
            acc |= (u & 0x7ff0000000000000ULL) + 0x0010000000000000ULL;
        }
        return (acc >> 63) == 0;
    }
    /* TA-Lib's RSI does `if (d < 0) loss -= d; else gain += d;`. The sign of a price change is a
       coin flip, so that branch mispredicts half the time; these give the same two terms without a
       branch (and GCC does not reliably if-convert the ternaries):
         gain term = d < 0 ? 0 : d   (NaN stays NaN, like the else branch; +inf stays +inf)
         loss term = d < 0 ? d : 0   (maxsd/minsd return their second operand when unordered) */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline double ind_gain_term(double d) {
        return _mm_cvtsd_f64(_mm_max_sd(_mm_setzero_pd(), _mm_set_sd(d)));
    }
    static inline double ind_loss_term(double d) {
        return _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(d), _mm_setzero_pd()));
    }
    #else
    static inline double ind_gain_term(double d) { return d < 0.0 ? 0.0 : d; }
    static inline double ind_loss_term(double d) { return d < 0.0 ? d : 0.0; }
    #endif

    /* fma(a, b, c) = a*b + c rounded once (TA-Lib's EMA step). The libm call is correctly rounded
       but costs a call and register spills per step; on x86-64 CPUs with FMA3 (checked once at
       import) the same correctly rounded result comes from one inline vfmadd instruction. */
    #include <math.h>
    static int ind_fma_hw = 0;
    static void ind_detect_cpu(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__FMA__)
        __builtin_cpu_init();
        ind_fma_hw = __builtin_cpu_supports("fma") ? 1 : 0;
    #endif
    }
    static inline double ind_fma(double a, double b, double c) {
    #if defined(__FMA__)
        return __builtin_fma(a, b, c);
    #elif (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
        if (__builtin_expect(ind_fma_hw, 1)) {
            __asm__("vfmadd231sd %2, %1, %0" : "+x"(c) : "x"(a), "x"(b));
            return c;
        }
        return fma(a, b, c);
    #else
        return fma(a, b, c);
    #endif
    }
    """
    bint ind_all_finite(const double* x, Py_ssize_t n) noexcept nogil
    double ind_gain_term(double d) noexcept nogil
    double ind_loss_term(double d) noexcept nogil
    double ind_fma(double a, double b, double c) noexcept nogil
    void ind_detect_cpu() noexcept nogil

ind_detect_cpu()

cdef enum:
    MAX_PERIOD = 100000      # TA-Lib's upper bound for every period

cdef double MAX_REAL = 3e37  # TA-Lib's bound for a real parameter (BBANDS' deviations)

__all__ = ["Indicator", "SMA", "EMA", "WMA", "RSI", "MACD", "BBANDS", "ATR", "ADX", "CCI", "STOCH", "OBV"]

STATE_VERSION = 2



# ----------------------------------------------------------------------------------------------
# helpers

cdef int _check_period(object period, str name, int minimum) except -1:
    """Validate a period the way TA-Lib does (integer in [minimum, 100000])."""
    if isinstance(period, bool):
        raise TypeError(f"{name} must be an integer, got {period!r}")
    try:
        p = operator.index(period)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(period).__name__} {period!r}") from None
    if p < minimum or p > MAX_PERIOD:
        raise ValueError(f"{name} must be in [{minimum}, {MAX_PERIOD}] (TA-Lib's range), got {p}")
    return <int>p


cdef inline int _check_finite(double x, str where) except -1:
    if not isfinite(x):
        raise ValueError(f"{where}: input must be a finite number, got {x!r}")
    return 0


cdef object _as_float64_1d(object values, str where):
    """Return a C-contiguous float64 1-D ndarray for `values` (no copy when it already is one)."""
    if type(values) is np.ndarray:
        arr = values
    else:
        try:
            arr = np.asarray(values)
        except Exception as exc:  # e.g. ragged nested sequences
            raise TypeError(f"{where}: expected a 1-D float64 array, got {type(values).__name__}: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{where}: expected a 1-D float64 array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D array, got {arr.ndim}-D with shape {arr.shape}")
    if arr.dtype != np.float64 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.float64)
    return arr


# update_many checks its input without a pass of its own (a second pass over a 100k array costs
# ~0.5 ns per element, as much as the indicator): it computes on a local copy of the state, and
# NaN/inf is "sticky" in that state -- every input enters a sum or an EMA that stays non-finite
# once it is (NaN absorbs everything, inf - inf is NaN). So a finite final state proves a finite
# input; otherwise this exact check runs, raises, and the copy is dropped (an overflow of huge but
# finite inputs passes it and is committed, as TA-Lib would compute it). EMA(1), whose value is
# just the input, is not sticky and checks first.

cdef int _check_all_finite(const double[::1] xs, str where) except -1:
    cdef Py_ssize_t n = xs.shape[0]
    cdef bint ok
    if n == 0:
        return 0
    with nogil:
        ok = ind_all_finite(&xs[0], n)
    if not ok:
        arr = np.asarray(xs)
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{where}: input must be finite, got {float(arr[bad])!r} at index {bad}"
                         " (state left unchanged)")
    return 0



cdef double _check_real(object value, str name) except? -1.0:
    """Validate a real parameter the way TA-Lib does (a number in [-3e37, 3e37])."""
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}") from None
    if not -MAX_REAL <= v <= MAX_REAL:
        raise ValueError(f"{name} must be in [-3e+37, 3e+37] (TA-Lib's range), got {v!r}")
    return v


cdef int _check_finite3(double a, double b, double c, tuple names, str where) except -1:
    for value, name in zip((a, b, c), names):
        if not isfinite(value):
            raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    return 0


_INPUT_NAMES = {1: ("input",), 2: ("close", "volume"), 3: ("high", "low", "close")}


def _restore(cls, state):
    """Pickle hook: rebuild an indicator from its ``state()`` dict."""
    return cls.from_state(state)


# ----------------------------------------------------------------------------------------------
# the steps: one committed value, TA-Lib's arithmetic. `s.count` is the index of the input.

cdef inline double true_range(double high, double low, double prev_close) noexcept nogil:
    # TA-Lib's TRUE_RANGE; the conditional expressions compile to maxsd, without branches
    cdef double out = high - low
    cdef double d = fabs(high - prev_close)
    out = d if d > out else out
    d = fabs(low - prev_close)
    return d if d > out else out


cdef inline double sma_step(SmaState* s, double* ring, double x) noexcept nogil:
    cdef double out = NAN
    ring[s.head] = x
    s.head += 1
    if s.head == s.period:
        s.head = 0
    s.total += x
    if s.count >= s.period - 1:
        out = s.total / s.period
        s.total -= ring[s.head]        # the oldest of the last `period` values
    s.count += 1
    s.value = out
    return out


cdef inline double sma_peek(const SmaState* s, double x) noexcept nogil:
    if s.count >= s.period - 1:
        return (s.total + x) / s.period
    return NAN

cdef inline double ema_step(EmaState* s, double x) noexcept nogil:
    cdef double out = NAN
    if s.count >= s.period:
        if s.period == 1:              # TA-Lib: EMA(1) is the input itself
            s.ema = x
        else:
            s.ema = ind_fma(x - s.ema, s.k, s.ema)
        out = s.ema
    else:
        s.seed_sum += x
        if s.count == s.period - 1:
            s.ema = s.seed_sum / s.period
            out = s.ema
    s.count += 1
    s.value = out
    return out


cdef inline double rsi_value(double gain, double loss) noexcept nogil:
    # 0 when there was no move at all: TA-Lib 0.8.2 tests gain + loss == 0 exactly (the classic
    # TA_IS_ZERO threshold of 1e-8 is gone: a sum of 1e-320 already gives 100).
    cdef double t = gain + loss
    if t == 0.0:
        return 0.0
    return 100.0 * (gain / t)


cdef inline double rsi_step(RsiState* s, double x) noexcept nogil:
    cdef double out = NAN
    cdef double d = x - s.prev
    cdef double up = ind_gain_term(d)           # TA-Lib: if (d < 0) loss -= d; else gain += d;
    cdef double down = ind_loss_term(d)         # (adding 0.0 to these sums changes no bit)
    s.prev = x
    if s.count > s.period:
        s.gain = (s.gain * s.pm1 + up) * s.recip
        s.loss = (s.loss * s.pm1 - down) * s.recip
        out = rsi_value(s.gain, s.loss)
    elif s.count > 0:
        s.gain += up
        s.loss -= down
        if s.count == s.period:
            s.gain *= s.recip
            s.loss *= s.recip
            out = rsi_value(s.gain, s.loss)
    s.count += 1
    s.value = out
    return out


cdef inline void macd_step_warm(MacdState* s, double x) noexcept nogil:
    """The step once every EMA is seeded (count >= slow + signal - 1)."""
    cdef double line
    s.fast = ind_fma(x - s.fast, s.kfast, s.fast)
    s.slow = ind_fma(x - s.slow, s.kslow, s.slow)
    line = s.fast - s.slow
    if s.signal_period == 1:               # TA-Lib: EMA(1) is the input itself
        s.signal_ema = line
    else:
        s.signal_ema = ind_fma(line - s.signal_ema, s.ksignal, s.signal_ema)
    s.line = line
    s.signal = s.signal_ema
    s.hist = line - s.signal_ema
    s.count += 1


cdef inline void macd_step(MacdState* s, double x) noexcept nogil:
    cdef long long c = s.count
    cdef long long j
    cdef double line
    if c >= s.slow_period + s.signal_period - 1:
        macd_step_warm(s, x)
        return
    # warming up: seed sums, then the EMAs, then the signal's seed sum
    s.line = NAN
    s.signal = NAN
    s.hist = NAN
    s.count = c + 1
    if c >= s.slow_period:
        s.fast = ind_fma(x - s.fast, s.kfast, s.fast)
        s.slow = ind_fma(x - s.slow, s.kslow, s.slow)
    else:
        s.slow_sum += x
        if c >= s.slow_period - s.fast_period:
            s.fast_sum += x
        if c < s.slow_period - 1:
            return
        s.fast = s.fast_sum / s.fast_period
        s.slow = s.slow_sum / s.slow_period
    line = s.fast - s.slow
    j = c - (s.slow_period - 1)            # index of `line` in the MACD-line series (< signal)
    s.signal_sum += line
    if j < s.signal_period - 1:
        return
    s.signal_ema = s.signal_sum / s.signal_period
    s.line = line
    s.signal = s.signal_ema
    s.hist = line - s.signal_ema



cdef inline int ring_next(int slot, int size) noexcept nogil:
    """The slot after `slot` in a ring of `size` (no integer division on the hot path)."""
    slot += 1
    return 0 if slot == size else slot


cdef inline double wma_step(WmaState* s, double* ring, double x) noexcept nogil:
    cdef long long c = s.count
    cdef int p = s.period
    cdef double out = NAN
    ring[s.head] = x
    s.head = ring_next(s.head, p)
    s.count = c + 1
    if p == 1:                             # TA-Lib: WMA(1) is the input itself
        out = x
    elif c < p - 1:
        s.plain += x
        s.total += x * <double>(c + 1)
    else:
        s.plain += x
        s.plain -= s.trailing
        s.total += x * <double>p
        s.trailing = ring[s.head]          # x[c - p + 1], leaving at the next step
        out = s.total * s.recip
        s.total -= s.plain
    s.value = out
    return out


cdef inline double squared_deviations(const double* ring, int p, double mean) noexcept nogil:
    """Sum of squared deviations from `mean` over the ring, in four running sums (so the
    additions overlap)."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, d
    cdef int i = 0
    while i + 4 <= p:
        d = ring[i] - mean
        s0 += d * d
        d = ring[i + 1] - mean
        s1 += d * d
        d = ring[i + 2] - mean
        s2 += d * d
        d = ring[i + 3] - mean
        s3 += d * d
        i += 4
    while i < p:
        d = ring[i] - mean
        s0 += d * d
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef inline void bbands_step(BbandsState* s, double* ring, double x) noexcept nogil:
    cdef long long c = s.count
    cdef int p = s.period
    cdef double mid, leaving = ring[s.head], var, dev
    ring[s.head] = x
    s.head = ring_next(s.head, p)
    s.count = c + 1
    s.total += x
    if c < p - 1:
        s.upper = NAN
        s.middle = NAN
        s.lower = NAN
        return
    mid = s.total / p
    s.total -= ring[s.head]                # x[c - p + 1], the oldest in the window
    # TA-Lib 0.8 sums the squared deviations from the mean (not E[x^2] - mean^2, which loses the
    # digits of a quiet window); this slides that sum by one value (Welford's update) and sums it
    # anew once per period, so rounding cannot build up beyond one period's worth
    if c == p - 1 or s.head == 0:
        s.m2 = squared_deviations(ring, p, mid)
    else:
        s.m2 += (x - leaving) * ((x - mid) + (leaving - s.middle))
    var = s.m2 * s.recip
    dev = sqrt(var) if var > 0.0 else 0.0
    s.middle = mid
    s.upper = mid + dev * s.nbdevup
    s.lower = mid - dev * s.nbdevdn


cdef inline double atr_step(AtrState* s, double high, double low, double close) noexcept nogil:
    cdef long long c = s.count
    cdef int p = s.period
    cdef double tr
    s.count = c + 1
    s.value = NAN
    if c == 0:                             # a true range needs the previous close
        s.prev_close = close
        return NAN
    tr = true_range(high, low, s.prev_close)
    s.prev_close = close
    if c <= p:
        s.tr_sum += tr
        if c < p:
            return NAN
        s.atr = s.tr_sum / p
    else:
        s.atr = ind_fma(s.atr, s.decay, tr * s.recip)   # (atr * (p-1) + tr) / p, one rounding less
    s.value = s.atr
    return s.atr


cdef inline double adx_step(AdxState* s, double high, double low, double close) noexcept nogil:
    cdef long long c = s.count
    cdef int p = s.period
    cdef double diff_p, diff_m, tr, minus_di, plus_di, di_sum, dx = 0.0
    cdef bint has_dx = False
    s.count = c + 1
    s.value = NAN
    if c == 0:
        s.prev_high = high
        s.prev_low = low
        s.prev_close = close
        return NAN
    diff_p = high - s.prev_high
    diff_m = s.prev_low - low
    s.prev_high = high
    s.prev_low = low
    tr = true_range(high, low, s.prev_close)
    s.prev_close = close
    if c >= p:                             # Wilder's smoothing once the first sums are in
        s.minus_dm -= s.minus_dm / p
        s.plus_dm -= s.plus_dm / p
    if diff_m > 0 and diff_p < diff_m:
        s.minus_dm += diff_m
    elif diff_p > 0 and diff_p > diff_m:
        s.plus_dm += diff_p
    if c < p:
        s.tr += tr
        return NAN
    s.tr = s.tr - s.tr / p + tr
    if s.tr != 0.0:
        minus_di = 100.0 * (s.minus_dm / s.tr)
        plus_di = 100.0 * (s.plus_dm / s.tr)
        di_sum = minus_di + plus_di
        if di_sum != 0.0:
            dx = 100.0 * (fabs(minus_di - plus_di) / di_sum)
            has_dx = True
    if c < 2 * p - 1:
        if has_dx:
            s.dx_sum += dx
        return NAN
    if c == 2 * p - 1:
        if has_dx:
            s.dx_sum += dx
        s.adx = s.dx_sum / p
    elif has_dx:
        s.adx = (s.adx * (p - 1) + dx) / p
    s.value = s.adx
    return s.adx


cdef inline double cci_step(CciState* s, double* ring, double high, double low, double close) noexcept nogil:
    cdef long long c = s.count
    cdef int p = s.period
    cdef int i
    cdef double typical = (high + low + close) / 3
    cdef double mean = 0.0, dev = 0.0, t, zero
    ring[s.head] = typical
    s.head = ring_next(s.head, p)
    s.count = c + 1
    s.value = NAN
    if c < p - 1:
        return NAN
    for i in range(p):                     # TA-Lib sums in ring order, not in time order
        mean += ring[i]
    mean /= p
    for i in range(p):
        dev += fabs(ring[i] - mean)
    t = typical - mean
    dev /= p
    # TA-Lib 0.8: 0 when the deviation from the mean or the mean deviation is within 1e-14 of the
    # mean (relative; found empirically: 1e-14 of the mean, not an absolute threshold)
    zero = 1e-14 * fabs(mean)
    s.value = t / (0.015 * dev) if (fabs(t) >= zero and dev >= zero and t != 0.0 and dev != 0.0) else 0.0
    return s.value


cdef inline void stoch_step(StochState* s, double* buf, double high, double low, double close) noexcept nogil:
    cdef int fk = s.fastk_period
    cdef int sk = s.slowk_period
    cdef int sd = s.slowd_period
    cdef double* highs = buf
    cdef double* lows = buf + fk
    cdef double* fastks = buf + 2 * fk
    cdef double* slowks = fastks + sk
    cdef long long c = s.count
    cdef long long trailing, i
    cdef int slot, oldest
    cdef double fastk, slowk
    highs[s.head] = high
    lows[s.head] = low
    s.head = ring_next(s.head, fk)         # now the slot of the oldest bar in the window
    s.count = c + 1
    s.slowk = NAN
    s.slowd = NAN
    if c < fk - 1:
        return
    trailing = c - fk + 1
    oldest = s.head
    # the window's extremes, rescanned only when the old one left the window (TA-Lib's way)
    if s.lowest_idx < trailing:
        s.lowest_idx = trailing
        s.lowest = lows[oldest]
        slot = oldest
        for i in range(trailing + 1, c + 1):
            slot = ring_next(slot, fk)
            if lows[slot] < s.lowest:
                s.lowest_idx = i
                s.lowest = lows[slot]
        s.diff = s.highest - s.lowest
    elif low <= s.lowest:
        s.lowest_idx = c
        s.lowest = low
        s.diff = s.highest - s.lowest
    if s.highest_idx < trailing:
        s.highest_idx = trailing
        s.highest = highs[oldest]
        slot = oldest
        for i in range(trailing + 1, c + 1):
            slot = ring_next(slot, fk)
            if highs[slot] > s.highest:
                s.highest_idx = i
                s.highest = highs[slot]
        s.diff = s.highest - s.lowest
    elif high >= s.highest:
        s.highest_idx = c
        s.highest = high
        s.diff = s.highest - s.lowest
    fastk = 100.0 * ((close - s.lowest) / s.diff) if s.diff != 0.0 else 0.0   # TA-Lib 0.8's order
    # slow %K: the SMA of fast %K (index c - fk + 1 in its series)
    fastks[s.k_head] = fastk
    s.k_head = ring_next(s.k_head, sk)
    s.k_total += fastk
    if c - (fk - 1) < sk - 1:
        return
    slowk = s.k_total / sk
    s.k_total -= fastks[s.k_head]          # the oldest fast %K of the window
    # slow %D: the SMA of slow %K
    slowks[s.d_head] = slowk
    s.d_head = ring_next(s.d_head, sd)
    s.d_total += slowk
    if c - (fk - 1) - (sk - 1) < sd - 1:
        return
    s.slowd = s.d_total / sd
    s.d_total -= slowks[s.d_head]
    s.slowk = slowk


cdef inline double obv_step(ObvState* s, double close, double volume) noexcept nogil:
    if s.count == 0:
        s.obv = volume
    elif close > s.prev_close:
        s.obv += volume
    elif close < s.prev_close:
        s.obv -= volume
    s.prev_close = close
    s.count += 1
    s.value = s.obv
    return s.obv


# ----------------------------------------------------------------------------------------------
# the shared surface

cdef class Indicator:
    """What every indicator shares: ``reset``, ``count``, ``ready``, ``value``, ``lookback``,
    ``params``, ``update_many``, ``state``/``from_state``, ``copy``, pickling and ``repr``.
    A subclass adds its state struct, ``update``, ``peek`` and the loop ``_run``."""

    def __cinit__(self, *args, **kwargs):
        self.buf = NULL
        self.nbuf = 0
        self.params = None

    def __dealloc__(self):
        free(self.buf)
        self.buf = NULL

    cdef int _setup(self, tuple params, int lookback, Py_ssize_t nbuf, int n_in, int n_out,
                    bint precheck) except -1:
        """Called by each constructor once its parameters are checked."""
        cdef double* buf = NULL
        if nbuf:
            buf = <double*>malloc(nbuf * sizeof(double))
            if buf == NULL:
                raise MemoryError()
        free(self.buf)
        self.buf = buf
        self.nbuf = nbuf
        self.params = params
        self.lookback = lookback
        self.n_in = n_in
        self.n_out = n_out
        self.precheck = precheck
        self.reset()
        return 0

    cdef int _need_init(self, str where) except -1:
        if self.params is None:
            raise RuntimeError(f"{where}: {type(self).__name__} was not initialised (call its constructor)")
        return 0

    # the per-indicator hooks (C-level virtual calls, never one per value)
    cdef void _reset(self) noexcept:
        pass

    cdef long long _count(self) noexcept:
        return 0

    cdef object _value(self):
        return NAN

    cdef dict _fields(self):
        return {}

    cdef int _set_fields(self, dict d) except -1:
        return 0

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        """``update`` each of n inputs into `out`; commit and return True, or (unless `force`)
        commit nothing and return False when the final state is not finite."""
        return True

    def reset(self):
        """Forget every value: the indicator is as new."""
        cdef Py_ssize_t i
        self._need_init(f"{type(self).__name__}.reset")
        for i in range(self.nbuf):
            self.buf[i] = 0.0
        self._reset()

    @property
    def count(self):
        """Number of committed values."""
        return self._count()

    @property
    def ready(self):
        """True once a value came out (``count > lookback``)."""
        return self._count() > self.lookback

    @property
    def value(self):
        """The last committed value (a tuple for a multi-output indicator; NaN while warming up)."""
        return self._value()

    def update_many(self, *arrays):
        """``update`` each element of float64 1-D arrays (one per input, equal lengths); return the
        values as a float64 array (a tuple of arrays for a multi-output indicator). A non-finite
        input raises ``ValueError`` and leaves the state unchanged."""
        kind = type(self).__name__
        where = f"{kind}.update_many"
        self._need_init(where)
        names = _INPUT_NAMES[self.n_in]
        if len(arrays) != self.n_in:
            raise TypeError(f"{where} takes {self.n_in} array(s) ({', '.join(names)}), got {len(arrays)}")
        ins = [_as_float64_1d(a, where) for a in arrays]
        cdef Py_ssize_t i, n = ins[0].shape[0]
        for a in ins:
            if a.shape[0] != n:
                raise ValueError(f"{where}: the arrays differ in length ({[a.shape[0] for a in ins]})")
        outs = [np.empty(n, dtype=np.float64) for _ in range(self.n_out)]
        if n == 0:
            return outs[0] if self.n_out == 1 else tuple(outs)
        cdef const double[::1] v0 = ins[0]
        cdef const double[::1] v1 = ins[1 % self.n_in]
        cdef const double[::1] v2 = ins[2 % self.n_in]
        cdef double[::1] o0 = outs[0]
        cdef double[::1] o1 = outs[1 % self.n_out]
        cdef double[::1] o2 = outs[2 % self.n_out]
        cdef const double* xs[3]
        cdef double* out[3]
        cdef bint ok
        xs[0], xs[1], xs[2] = &v0[0], &v1[0], &v2[0]
        out[0], out[1], out[2] = &o0[0], &o1[0], &o2[0]
        cdef double* saved = NULL
        if self.precheck:
            self._check_inputs(ins, where)
        elif self.nbuf:
            # _run may write the windows before it finds the state not finite: keep them
            saved = <double*>malloc(self.nbuf * sizeof(double))
            if saved == NULL:
                raise MemoryError()
            memcpy(saved, self.buf, self.nbuf * sizeof(double))
        try:
            with nogil:
                ok = self._run(xs, out, n, False)
            if not ok:
                if saved != NULL:
                    memcpy(self.buf, saved, self.nbuf * sizeof(double))
                self._check_inputs(ins, where)  # raises; or huge finite inputs overflowed:
                with nogil:                     # commit what TA-Lib would compute
                    self._run(xs, out, n, True)
        finally:
            free(saved)
        return outs[0] if self.n_out == 1 else tuple(outs)

    cdef int _check_inputs(self, list ins, str where) except -1:
        names = _INPUT_NAMES[self.n_in]
        for a, name in zip(ins, names):
            _check_all_finite(a, where if self.n_in == 1 else f"{where} ({name})")
        return 0

    def state(self):
        """Everything needed to continue exactly, as a plain dict of ints, floats and lists."""
        kind = type(self).__name__
        self._need_init(f"{kind}.state")
        return {"kind": kind, "version": STATE_VERSION, "params": list(self.params),
                "fields": self._fields(), "buffer": [self.buf[i] for i in range(self.nbuf)]}

    @classmethod
    def from_state(cls, state):
        """Rebuild an indicator from ``state()``; it continues exactly where that one was."""
        kind = cls.__name__
        where = f"{kind}.from_state"
        if not isinstance(state, dict):
            raise TypeError(f"{where} expects a dict, got {type(state).__name__}")
        if state.get("kind") != kind:
            raise ValueError(f"{where}: state is for {state.get('kind')!r}, not {kind!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{where}: unsupported state version {state.get('version')!r}")
        for key, typ in (("params", list), ("fields", dict), ("buffer", list)):
            if not isinstance(state.get(key), typ):
                raise ValueError(f"{where}: {key!r} must be a {typ.__name__}, got {state.get(key)!r:.60}")
        cdef Indicator ind = cls(*state["params"])
        fresh = ind._fields()
        try:
            ind._set_fields(state["fields"])
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{where}: bad fields: {exc}") from None
        now = ind._fields()
        for key, value in fresh.items():       # the shape of the windows comes from the params
            if key.endswith("period") and now[key] != value:
                raise ValueError(f"{where}: fields say {key}={now[key]!r}, params {value!r}")
        if ind._count() < 0:
            raise ValueError(f"{where}: negative count {ind._count()}")
        if "period" in now and "head" in now and now["head"] != now["count"] % now["period"]:
            raise ValueError(f"{where}: head {now['head']} does not follow count {now['count']}")
        buffer = state["buffer"]
        if len(buffer) != ind.nbuf:
            raise ValueError(f"{where}: buffer has {len(buffer)} values, expected {ind.nbuf}")
        cdef Py_ssize_t i
        for i in range(ind.nbuf):
            ind.buf[i] = float(buffer[i])
        return ind

    def copy(self):
        """An independent indicator in the same state."""
        return type(self).from_state(self.state())

    def __reduce__(self):
        return (_restore, (type(self), self.state()))

    def __repr__(self):
        params = ", ".join(map(repr, self.params or ()))
        return f"{type(self).__name__}({params}, count={self._count()}, value={self._value()!r})"


# ----------------------------------------------------------------------------------------------
# the indicators: each its struct, update, peek and _run

cdef class SMA(Indicator):
    """Simple moving average; TA-Lib's ``SMA(x, timeperiod)``."""

    def __init__(self, timeperiod=30):
        cdef int p = _check_period(timeperiod, "SMA timeperiod", 1)
        self.st.period = p
        self._setup((p,), p - 1, p, 1, 1, False)

    cdef void _reset(self) noexcept:
        self.st.total = 0.0
        self.st.value = NAN
        self.st.count = 0
        self.st.head = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double x):
        """Commit a closed value; return the SMA (NaN until `timeperiod` values were seen)."""
        if not isfinite(x) or self.buf == NULL:
            self._need_init("SMA.update")
            _check_finite(x, "SMA.update")
        return sma_step(&self.st, self.buf, x)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x) or self.buf == NULL:
            self._need_init("SMA.peek")
            _check_finite(x, "SMA.peek")
        return sma_peek(&self.st, x)

    cdef bint _run(self, const double** xs_, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef const double* xs = xs_[0]
        cdef double* o = out[0]
        cdef Py_ssize_t i
        cdef Py_ssize_t p = self.st.period
        cdef long long c0 = self.st.count
        cdef Py_ssize_t head_n = min(n, p - 1)
        cdef double total = self.st.total
        cdef double* ring = self.buf
        # the first period-1 values take their trailing value from before this array (the
        # ring; those slots are not overwritten within these steps), as sma_step would
        for i in range(head_n):
            total += xs[i]
            if c0 + i >= p - 1:
                o[i] = total / p
                total -= ring[(c0 + i + 1) % p]
            else:
                o[i] = NAN
        # from then on the trailing value is in the array itself (TA-Lib's own loop)
        for i in range(head_n, n):
            total += xs[i]
            o[i] = total / p
            total -= xs[i - p + 1]
        if not force and not isfinite(total):     # every input went through `total`
            return False
        # commit: the ring takes the last `period` values, each in its slot (index % period)
        for i in range(max(0, n - p), n):
            ring[(c0 + i) % p] = xs[i]
        self.st.total = total
        self.st.count = c0 + n
        self.st.head = <int>((c0 + n) % p)
        self.st.value = o[n - 1]
        return True

    @property
    def period(self):
        return self.st.period


cdef class EMA(Indicator):
    """Exponential moving average, k = 2/(timeperiod+1), seeded with the SMA of the first
    `timeperiod` values; TA-Lib's ``EMA(x, timeperiod)``."""

    def __init__(self, timeperiod=30):
        cdef int p = _check_period(timeperiod, "EMA timeperiod", 1)
        self.st.period = p
        self.st.k = 2.0 / (p + 1)
        self._setup((p,), p - 1, 0, 1, 1, p == 1)   # EMA(1) is not sticky: it is the input

    cdef void _reset(self) noexcept:
        self.st.seed_sum = 0.0
        self.st.ema = 0.0
        self.st.value = NAN
        self.st.count = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double x):
        """Commit a closed value; return the EMA (NaN until `timeperiod` values were seen)."""
        if not isfinite(x):
            _check_finite(x, "EMA.update")
        return ema_step(&self.st, x)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x):
            _check_finite(x, "EMA.peek")
        cdef EmaState tmp = self.st
        return ema_step(&tmp, x)

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef EmaState st = self.st
        for i in range(n):
            out[0][i] = ema_step(&st, xs[0][i])
        if not force and not (isfinite(st.seed_sum) and isfinite(st.ema)):
            return False
        self.st = st
        return True

    @property
    def period(self):
        return self.st.period


cdef class WMA(Indicator):
    """Weighted moving average (weights 1..timeperiod); TA-Lib's ``WMA(x, timeperiod)``."""

    def __init__(self, timeperiod=30):
        cdef int p = _check_period(timeperiod, "WMA timeperiod", 1)
        self.st.period = p
        self.st.recip = 2.0 / (<double>p * (p + 1))   # in doubles: p * (p + 1) overflows an int past 46340
        self._setup((p,), p - 1, p, 1, 1, p == 1)   # WMA(1) is not sticky: it is the input

    cdef void _reset(self) noexcept:
        self.st.total = 0.0
        self.st.plain = 0.0
        self.st.trailing = 0.0
        self.st.value = NAN
        self.st.count = 0
        self.st.head = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double x):
        """Commit a closed value; return the WMA (NaN until `timeperiod` values were seen)."""
        if not isfinite(x) or self.buf == NULL:
            self._need_init("WMA.update")
            _check_finite(x, "WMA.update")
        return wma_step(&self.st, self.buf, x)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x) or self.buf == NULL:
            self._need_init("WMA.peek")
            _check_finite(x, "WMA.peek")
        cdef WmaState tmp = self.st
        cdef Py_ssize_t slot = tmp.head
        cdef double kept = self.buf[slot]
        cdef double out = wma_step(&tmp, self.buf, x)
        self.buf[slot] = kept
        return out

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef WmaState st = self.st
        for i in range(n):
            out[0][i] = wma_step(&st, self.buf, xs[0][i])
        if not force and not (isfinite(st.total) and isfinite(st.plain)):
            return False
        self.st = st
        return True

    @property
    def period(self):
        return self.st.period


cdef class RSI(Indicator):
    """Wilder's relative strength index (0..100); TA-Lib's ``RSI(x, timeperiod)``.
    The first value comes with the (timeperiod+1)-th input."""

    def __init__(self, timeperiod=14):
        cdef int p = _check_period(timeperiod, "RSI timeperiod", 2)
        self.st.period = p
        self.st.recip = 1.0 / p
        self.st.pm1 = p - 1
        self._setup((p,), p, 0, 1, 1, False)

    cdef void _reset(self) noexcept:
        self.st.prev = 0.0
        self.st.gain = 0.0
        self.st.loss = 0.0
        self.st.value = NAN
        self.st.count = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double x):
        """Commit a closed value; return the RSI (NaN until `timeperiod` + 1 values were seen)."""
        if not isfinite(x):
            _check_finite(x, "RSI.update")
        return rsi_step(&self.st, x)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x):
            _check_finite(x, "RSI.peek")
        cdef RsiState tmp = self.st
        return rsi_step(&tmp, x)

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef RsiState st = self.st
        for i in range(n):
            out[0][i] = rsi_step(&st, xs[0][i])
        if not force and not (isfinite(st.prev) and isfinite(st.gain) and isfinite(st.loss)):
            return False
        self.st = st
        return True

    @property
    def period(self):
        return self.st.period


cdef class MACD(Indicator):
    """Moving average convergence/divergence; TA-Lib's ``MACD(x, fastperiod, slowperiod,
    signalperiod)``. Values are ``(macd, signal, hist)``, all NaN until slow + signal - 1 values
    were seen. As in TA-Lib, a fast period longer than the slow one is swapped with it."""

    def __init__(self, fastperiod=12, slowperiod=26, signalperiod=9):
        cdef int f = _check_period(fastperiod, "MACD fastperiod", 2)
        cdef int s = _check_period(slowperiod, "MACD slowperiod", 2)
        cdef int g = _check_period(signalperiod, "MACD signalperiod", 1)
        params = (f, s, g)
        if s < f:
            f, s = s, f
        self.st.fast_period = f
        self.st.slow_period = s
        self.st.signal_period = g
        self.st.kfast = 2.0 / (f + 1)
        self.st.kslow = 2.0 / (s + 1)
        self.st.ksignal = 2.0 / (g + 1)
        self._setup(params, s + g - 2, 0, 1, 3, False)

    cdef void _reset(self) noexcept:
        self.st.fast_sum = 0.0
        self.st.slow_sum = 0.0
        self.st.signal_sum = 0.0
        self.st.fast = 0.0
        self.st.slow = 0.0
        self.st.signal_ema = 0.0
        self.st.line = NAN
        self.st.signal = NAN
        self.st.hist = NAN
        self.st.count = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return (self.st.line, self.st.signal, self.st.hist)

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double x):
        """Commit a closed value; return ``(macd, signal, hist)`` (NaNs while warming up)."""
        if not isfinite(x):
            _check_finite(x, "MACD.update")
        macd_step(&self.st, x)
        return (self.st.line, self.st.signal, self.st.hist)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x):
            _check_finite(x, "MACD.peek")
        cdef MacdState tmp = self.st
        macd_step(&tmp, x)
        return (tmp.line, tmp.signal, tmp.hist)

    cdef bint _run(self, const double** xs_, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef const double* xs = xs_[0]
        cdef double* o1 = out[0]
        cdef double* o2 = out[1]
        cdef double* o3 = out[2]
        cdef Py_ssize_t i = 0
        cdef MacdState st = self.st
        cdef long long warm = st.slow_period + st.signal_period - 1
        while i < n and st.count < warm:
            macd_step(&st, xs[i])
            o1[i] = st.line
            o2[i] = st.signal
            o3[i] = st.hist
            i += 1
        for i in range(i, n):              # steady state: no warm-up branches
            macd_step_warm(&st, xs[i])
            o1[i] = st.line
            o2[i] = st.signal
            o3[i] = st.hist
        if not force and not (isfinite(st.slow_sum) and isfinite(st.fast_sum) and isfinite(st.signal_sum)
                              and isfinite(st.slow) and isfinite(st.fast) and isfinite(st.signal_ema)):
            return False
        self.st = st
        return True

    @property
    def fast_period(self):
        return self.st.fast_period

    @property
    def slow_period(self):
        return self.st.slow_period

    @property
    def signal_period(self):
        return self.st.signal_period

    @property
    def period(self):
        """``(fast, slow, signal)``, after TA-Lib's swap of fast and slow."""
        return (self.st.fast_period, self.st.slow_period, self.st.signal_period)


cdef class BBANDS(Indicator):
    """Bollinger Bands on the SMA (TA-Lib's default MA type); TA-Lib's ``BBANDS(x, timeperiod,
    nbdevup, nbdevdn)``. Values are ``(upper, middle, lower)``."""

    def __init__(self, timeperiod=5, nbdevup=2.0, nbdevdn=2.0):
        cdef int p = _check_period(timeperiod, "BBANDS timeperiod", 2)
        self.st.period = p
        self.st.nbdevup = _check_real(nbdevup, "BBANDS nbdevup")
        self.st.nbdevdn = _check_real(nbdevdn, "BBANDS nbdevdn")
        self.st.recip = 1.0 / p
        self._setup((p, self.st.nbdevup, self.st.nbdevdn), p - 1, p, 1, 3, False)

    cdef void _reset(self) noexcept:
        self.st.total = 0.0
        self.st.m2 = 0.0
        self.st.upper = NAN
        self.st.middle = NAN
        self.st.lower = NAN
        self.st.count = 0
        self.st.head = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return (self.st.upper, self.st.middle, self.st.lower)

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double x):
        """Commit a closed value; return ``(upper, middle, lower)`` (NaNs while warming up)."""
        if not isfinite(x) or self.buf == NULL:
            self._need_init("BBANDS.update")
            _check_finite(x, "BBANDS.update")
        bbands_step(&self.st, self.buf, x)
        return (self.st.upper, self.st.middle, self.st.lower)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x) or self.buf == NULL:
            self._need_init("BBANDS.peek")
            _check_finite(x, "BBANDS.peek")
        cdef BbandsState tmp = self.st
        cdef Py_ssize_t slot = tmp.head
        cdef double kept = self.buf[slot]
        bbands_step(&tmp, self.buf, x)
        self.buf[slot] = kept
        return (tmp.upper, tmp.middle, tmp.lower)

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef BbandsState st = self.st
        for i in range(n):
            bbands_step(&st, self.buf, xs[0][i])
            out[0][i] = st.upper
            out[1][i] = st.middle
            out[2][i] = st.lower
        if not force and not (isfinite(st.total) and isfinite(st.m2)):
            return False
        self.st = st
        return True

    @property
    def period(self):
        return self.st.period


cdef class ATR(Indicator):
    """Average true range (Wilder); TA-Lib's ``ATR(high, low, close, timeperiod)``."""

    def __init__(self, timeperiod=14):
        cdef int p = _check_period(timeperiod, "ATR timeperiod", 1)
        self.st.period = p
        self.st.decay = (p - 1.0) / p
        self.st.recip = 1.0 / p
        self._setup((p,), p, 0, 3, 1, False)

    cdef void _reset(self) noexcept:
        self.st.prev_close = 0.0
        self.st.tr_sum = 0.0
        self.st.atr = 0.0
        self.st.value = NAN
        self.st.count = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double high, double low, double close, /):
        """Commit a closed bar; return the ATR (NaN until `timeperiod` + 1 bars were seen)."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)):
            _check_finite3(high, low, close, _INPUT_NAMES[3], "ATR.update")
        return atr_step(&self.st, high, low, close)

    def peek(self, double high, double low, double close, /):
        """Return what ``update`` would return, changing nothing."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)):
            _check_finite3(high, low, close, _INPUT_NAMES[3], "ATR.peek")
        cdef AtrState tmp = self.st
        return atr_step(&tmp, high, low, close)

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef const double* high = xs[0]
        cdef const double* low = xs[1]
        cdef const double* close = xs[2]
        cdef double* o = out[0]
        cdef Py_ssize_t i = 0
        cdef Py_ssize_t start
        cdef AtrState st = self.st
        cdef double atr, prev
        # NaN/inf in high or low reaches the ATR and stays there; in the close it may not (a true
        # range takes the max of finite terms), so the closes go through `seen` too (x * 0.0 is
        # NaN for NaN and inf), and so does the first bar, whose high and low are not used
        cdef double seen = 0.0
        while i < n and st.count <= st.period:
            seen += (high[i] + low[i] + close[i]) * 0.0
            o[i] = atr_step(&st, high[i], low[i], close[i])
            i += 1
        start = i
        atr, prev = st.atr, st.prev_close
        for i in range(start, n):              # steady state: atr_step without its warm-up branches
            atr = ind_fma(atr, st.decay, true_range(high[i], low[i], prev) * st.recip)
            prev = close[i]
            seen += prev * 0.0
            o[i] = atr
        if start < n:
            st.count += n - start
            st.atr = atr
            st.value = atr
            st.prev_close = prev
        if not force and not (isfinite(seen) and isfinite(st.tr_sum) and isfinite(st.atr)):
            return False
        self.st = st
        return True

    @property
    def period(self):
        return self.st.period


cdef class ADX(Indicator):
    """Average directional movement index (Wilder); TA-Lib's ``ADX(high, low, close, timeperiod)``.
    The first value comes with the (2 * timeperiod)-th bar."""

    def __init__(self, timeperiod=14):
        cdef int p = _check_period(timeperiod, "ADX timeperiod", 2)
        self.st.period = p
        self._setup((p,), 2 * p - 1, 0, 3, 1, True)

    cdef void _reset(self) noexcept:
        self.st.prev_high = 0.0
        self.st.prev_low = 0.0
        self.st.prev_close = 0.0
        self.st.plus_dm = 0.0
        self.st.minus_dm = 0.0
        self.st.tr = 0.0
        self.st.dx_sum = 0.0
        self.st.adx = 0.0
        self.st.value = NAN
        self.st.count = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double high, double low, double close, /):
        """Commit a closed bar; return the ADX (NaN until 2 * `timeperiod` bars were seen)."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)):
            _check_finite3(high, low, close, _INPUT_NAMES[3], "ADX.update")
        return adx_step(&self.st, high, low, close)

    def peek(self, double high, double low, double close, /):
        """Return what ``update`` would return, changing nothing."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)):
            _check_finite3(high, low, close, _INPUT_NAMES[3], "ADX.peek")
        cdef AdxState tmp = self.st
        return adx_step(&tmp, high, low, close)

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef AdxState st = self.st
        for i in range(n):
            out[0][i] = adx_step(&st, xs[0][i], xs[1][i], xs[2][i])
        self.st = st
        return True

    @property
    def period(self):
        return self.st.period


cdef class CCI(Indicator):
    """Commodity channel index; TA-Lib's ``CCI(high, low, close, timeperiod)``."""

    def __init__(self, timeperiod=14):
        cdef int p = _check_period(timeperiod, "CCI timeperiod", 2)
        self.st.period = p
        self._setup((p,), p - 1, p, 3, 1, True)

    cdef void _reset(self) noexcept:
        self.st.value = NAN
        self.st.count = 0
        self.st.head = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double high, double low, double close, /):
        """Commit a closed bar; return the CCI (NaN until `timeperiod` bars were seen)."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)) or self.buf == NULL:
            self._need_init("CCI.update")
            _check_finite3(high, low, close, _INPUT_NAMES[3], "CCI.update")
        return cci_step(&self.st, self.buf, high, low, close)

    def peek(self, double high, double low, double close, /):
        """Return what ``update`` would return, changing nothing."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)) or self.buf == NULL:
            self._need_init("CCI.peek")
            _check_finite3(high, low, close, _INPUT_NAMES[3], "CCI.peek")
        cdef CciState tmp = self.st
        cdef Py_ssize_t slot = tmp.head
        cdef double kept = self.buf[slot]
        cdef double out = cci_step(&tmp, self.buf, high, low, close)
        self.buf[slot] = kept
        return out

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef CciState st = self.st
        for i in range(n):
            out[0][i] = cci_step(&st, self.buf, xs[0][i], xs[1][i], xs[2][i])
        self.st = st
        return True

    @property
    def period(self):
        return self.st.period


cdef class STOCH(Indicator):
    """Slow stochastic with SMA smoothing (TA-Lib's default MA types); TA-Lib's ``STOCH(high,
    low, close, fastk_period, slowk_period, slowd_period)``. Values are ``(slowk, slowd)``."""

    def __init__(self, fastk_period=5, slowk_period=3, slowd_period=3):
        cdef int fk = _check_period(fastk_period, "STOCH fastk_period", 1)
        cdef int sk = _check_period(slowk_period, "STOCH slowk_period", 1)
        cdef int sd = _check_period(slowd_period, "STOCH slowd_period", 1)
        self.st.fastk_period = fk
        self.st.slowk_period = sk
        self.st.slowd_period = sd
        self._setup((fk, sk, sd), fk + sk + sd - 3, 2 * fk + sk + sd, 3, 2, True)

    cdef void _reset(self) noexcept:
        self.st.highest = 0.0
        self.st.lowest = 0.0
        self.st.diff = 0.0
        self.st.k_total = 0.0
        self.st.d_total = 0.0
        self.st.slowk = NAN
        self.st.slowd = NAN
        self.st.highest_idx = -1
        self.st.lowest_idx = -1
        self.st.count = 0
        self.st.head = 0
        self.st.k_head = 0
        self.st.d_head = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return (self.st.slowk, self.st.slowd)

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        cdef long long k = self.st.count - (self.st.fastk_period - 1)   # fast %K values so far
        cdef long long m = k - (self.st.slowk_period - 1)               # slow %K values so far
        if self.st.count >= 0:                 # the ring slots follow from the count
            self.st.head = self.st.count % self.st.fastk_period
            self.st.k_head = max(k, 0) % self.st.slowk_period
            self.st.d_head = max(m, 0) % self.st.slowd_period
        return 0

    cdef void _slots(self, const StochState* s, Py_ssize_t* slots) noexcept:
        """The four window slots the next step may write (highs, lows, fast %K, slow %K)."""
        slots[0] = s.head
        slots[1] = s.fastk_period + s.head
        slots[2] = 2 * s.fastk_period + s.k_head
        slots[3] = 2 * s.fastk_period + s.slowk_period + s.d_head

    def update(self, double high, double low, double close, /):
        """Commit a closed bar; return ``(slowk, slowd)`` (NaNs while warming up)."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)) or self.buf == NULL:
            self._need_init("STOCH.update")
            _check_finite3(high, low, close, _INPUT_NAMES[3], "STOCH.update")
        stoch_step(&self.st, self.buf, high, low, close)
        return (self.st.slowk, self.st.slowd)

    def peek(self, double high, double low, double close, /):
        """Return what ``update`` would return, changing nothing."""
        if not (isfinite(high) and isfinite(low) and isfinite(close)) or self.buf == NULL:
            self._need_init("STOCH.peek")
            _check_finite3(high, low, close, _INPUT_NAMES[3], "STOCH.peek")
        cdef StochState tmp = self.st
        cdef Py_ssize_t slots[4]
        cdef double kept[4]
        cdef int i
        self._slots(&tmp, slots)
        for i in range(4):
            kept[i] = self.buf[slots[i]]
        stoch_step(&tmp, self.buf, high, low, close)
        for i in range(3, -1, -1):
            self.buf[slots[i]] = kept[i]
        return (tmp.slowk, tmp.slowd)

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef StochState st = self.st
        for i in range(n):
            stoch_step(&st, self.buf, xs[0][i], xs[1][i], xs[2][i])
            out[0][i] = st.slowk
            out[1][i] = st.slowd
        self.st = st
        return True


cdef class OBV(Indicator):
    """On-balance volume; TA-Lib's ``OBV(close, volume)``. The first value is the first volume."""

    def __init__(self):
        self._setup((), 0, 0, 2, 1, True)

    cdef void _reset(self) noexcept:
        self.st.prev_close = 0.0
        self.st.obv = 0.0
        self.st.value = NAN
        self.st.count = 0

    cdef long long _count(self) noexcept:
        return self.st.count

    cdef object _value(self):
        return self.st.value

    cdef dict _fields(self):
        return self.st

    cdef int _set_fields(self, dict d) except -1:
        self.st = d
        return 0

    def update(self, double close, double volume, /):
        """Commit a closed bar; return the OBV."""
        if not (isfinite(close) and isfinite(volume)):
            _check_finite3(close, volume, 0.0, _INPUT_NAMES[2], "OBV.update")
        return obv_step(&self.st, close, volume)

    def peek(self, double close, double volume, /):
        """Return what ``update`` would return, changing nothing."""
        if not (isfinite(close) and isfinite(volume)):
            _check_finite3(close, volume, 0.0, _INPUT_NAMES[2], "OBV.peek")
        cdef ObvState tmp = self.st
        return obv_step(&tmp, close, volume)

    cdef bint _run(self, const double** xs, double** out, Py_ssize_t n, bint force) noexcept nogil:
        cdef Py_ssize_t i
        cdef ObvState st = self.st
        for i in range(n):
            out[0][i] = obv_step(&st, xs[0][i], xs[1][i])
        self.st = st
        return True
