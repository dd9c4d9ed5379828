# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Incremental SMA, EMA, RSI and MACD whose values are identical to TA-Lib's.

Every indicator has the same small surface:

* ``update(x)`` commits a closed value and returns the indicator value (NaN while warming up;
  MACD returns ``(macd, signal, hist)``);
* ``peek(x)`` returns what ``update(x)`` would return without changing anything (forming candle);
* ``update_many(arr)`` = ``update`` on each element of a float64 1-D array, returns numpy array(s);
* ``ready``, ``value``, ``count``, ``lookback`` (+ ``period`` / MACD's three periods), ``reset()``;
* ``state()`` / ``cls.from_state(d)`` and pickling, so a worker restarts warm; ``copy()``.

An indicator is not thread-safe: ``update_many`` runs without the GIL on a copy of the state, so
feed one indicator from one thread at a time (distinct indicators may run in parallel threads).

The arithmetic reproduces TA-Lib 0.8.2's batch functions (C library 0.8.1) operation for operation,
so a fresh indicator fed a series gives bit-identical values to ``talib.SMA/EMA/RSI/MACD`` on it,
warm-up NaNs included. Specifics of that library version, found empirically (see the tests); they
are what a C build with fused multiply-add and reciprocal division (fast-math style) computes:

* SMA: running total ``t += x; out = t / p; t -= oldest`` (no periodic recomputation);
* EMA: seed = (sum of the first p values) / p, then ``ema = fma(x - ema, k, ema)`` (one rounding,
  a fused multiply-add), k = 2 / (p + 1); EMA(1) is the input itself;
* RSI: seed = (sum of the first p gains / losses) * (1/p); then ``avg = (avg * (p-1) + today) * (1/p)``;
  value ``100 * (gain / (gain + loss))`` and 0 only when ``gain + loss == 0`` exactly;
* MACD: slow and fast EMAs both seeded at index slow-1 (fast on x[slow-fast .. slow-1]), line =
  fast - slow, signal = EMA(signal) of the line seeded by the mean of its first values (all three
  EMAs as above); a slow period shorter than the fast one is swapped with it, as TA-Lib does.

One known difference: where magnitudes near the float limit (|x| ~ 1e307 and up) make a price
change or an RSI sum overflow to inf, TA-Lib's RSI gives values (0 rather than NaN) that its
non-finite arithmetic happens to produce; this RSI gives what IEEE arithmetic gives. SMA, EMA and
MACD stay identical there too.
"""
from libc.math cimport NAN, isfinite
from libc.stdlib cimport free, malloc

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

__all__ = ["SMA", "EMA", "RSI", "MACD"]

STATE_VERSION = 1


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


cdef object _state_get(dict d, str key, str kind):
    try:
        return d[key]
    except KeyError:
        raise ValueError(f"{kind}.from_state: missing key {key!r}") from None


cdef dict _state_header(object d, str kind):
    if not isinstance(d, dict):
        raise TypeError(f"{kind}.from_state expects a dict, got {type(d).__name__}")
    if d.get("kind") != kind:
        raise ValueError(f"{kind}.from_state: state is for {d.get('kind')!r}, not {kind!r}")
    if d.get("version") != STATE_VERSION:
        raise ValueError(f"{kind}.from_state: unsupported state version {d.get('version')!r}")
    count = operator.index(_state_get(d, "count", kind))
    if count < 0:
        raise ValueError(f"{kind}.from_state: negative count {count}")
    return d


def _restore(cls, state):
    """Pickle hook: rebuild an indicator from its ``state()`` dict."""
    return cls.from_state(state)


# ----------------------------------------------------------------------------------------------
# the steps: one committed value, TA-Lib's arithmetic. `s.count` is the index of `x`.

cdef inline double sma_step(SmaState* s, double x) noexcept nogil:
    cdef double out = NAN
    s.ring[s.head] = x
    s.head += 1
    if s.head == s.period:
        s.head = 0
    s.total += x
    if s.count >= s.period - 1:
        out = s.total / s.period
        s.total -= s.ring[s.head]      # the oldest of the last `period` values
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


# ----------------------------------------------------------------------------------------------

cdef class SMA:
    """Simple moving average over `period` values; TA-Lib's ``SMA(x, timeperiod=period)``."""

    def __cinit__(self, *args, **kwargs):
        self.st.ring = NULL

    def __init__(self, period):
        cdef int p = _check_period(period, "SMA period", 1)
        cdef double* ring = <double*>malloc(p * sizeof(double))
        if ring == NULL:
            raise MemoryError()
        free(self.st.ring)
        self.st.ring = ring
        self.st.period = p
        self.reset()

    def __dealloc__(self):
        free(self.st.ring)
        self.st.ring = NULL

    cdef int _check(self, double x, str where) except -1:
        if self.st.ring == NULL:
            raise RuntimeError(f"{where}: SMA was not initialised (call SMA(period))")
        return _check_finite(x, where)

    def reset(self):
        """Forget every value: the indicator is as new."""
        cdef int i
        if self.st.ring == NULL:
            self._check(0.0, "SMA.reset")
        for i in range(self.st.period):
            self.st.ring[i] = 0.0
        self.st.total = 0.0
        self.st.value = NAN
        self.st.count = 0
        self.st.head = 0

    def update(self, double x):
        """Commit a closed value; return the SMA (NaN until `period` values were seen)."""
        if not isfinite(x) or self.st.ring == NULL:
            self._check(x, "SMA.update")
        return sma_step(&self.st, x)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x) or self.st.ring == NULL:
            self._check(x, "SMA.peek")
        return sma_peek(&self.st, x)

    def update_many(self, values):
        """``update`` each element of a float64 1-D array; return the values as a float64 array."""
        if self.st.ring == NULL:
            self._check(0.0, "SMA.update_many")
        cdef const double[::1] xs = _as_float64_1d(values, "SMA.update_many")
        cdef Py_ssize_t i, n = xs.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        cdef Py_ssize_t p = self.st.period
        cdef long long c0 = self.st.count
        cdef Py_ssize_t head_n = min(n, p - 1)
        cdef double total = self.st.total
        cdef double* ring = self.st.ring
        with nogil:
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
        if not isfinite(total):                    # every input went through `total`
            _check_all_finite(xs, "SMA.update_many")
        # commit: the ring takes the last `period` values, each in its slot (index % period)
        for i in range(max(0, n - p), n):
            ring[(c0 + i) % p] = xs[i]
        if n:
            self.st.total = total
            self.st.count = c0 + n
            self.st.head = <int>((c0 + n) % p)
            self.st.value = o[n - 1]
        return out

    @property
    def period(self):
        return self.st.period

    @property
    def lookback(self):
        """Number of values consumed before the first output (TA-Lib's lookback)."""
        return self.st.period - 1

    @property
    def count(self):
        return self.st.count

    @property
    def ready(self):
        return self.st.count >= self.st.period

    @property
    def value(self):
        return self.st.value

    def state(self):
        """Everything needed to continue exactly, as a plain dict of ints, floats and lists."""
        cdef Py_ssize_t k = min(self.st.count, self.st.period)
        cdef long long i
        window = [self.st.ring[i % self.st.period] for i in range(self.st.count - k, self.st.count)]
        return {"kind": "SMA", "version": STATE_VERSION, "period": self.st.period,
                "count": self.st.count, "total": self.st.total, "value": self.st.value,
                "window": window}

    @classmethod
    def from_state(cls, state):
        """Rebuild an indicator from ``state()``; it continues exactly where that one was."""
        d = _state_header(state, "SMA")
        cdef SMA ind = cls(_state_get(d, "period", "SMA"))
        cdef long long count = d["count"]
        window = list(_state_get(d, "window", "SMA"))
        if len(window) != min(count, ind.st.period):
            raise ValueError(f"SMA.from_state: window has {len(window)} values, expected "
                             f"{min(count, ind.st.period)}")
        cdef long long start = count - len(window)
        cdef Py_ssize_t j
        for j in range(len(window)):
            ind.st.ring[(start + j) % ind.st.period] = float(window[j])
        ind.st.total = float(_state_get(d, "total", "SMA"))
        ind.st.value = float(_state_get(d, "value", "SMA"))
        ind.st.count = count
        ind.st.head = count % ind.st.period
        return ind

    def copy(self):
        return type(self).from_state(self.state())

    def __reduce__(self):
        return (_restore, (type(self), self.state()))

    def __repr__(self):
        return f"SMA(period={self.st.period}, count={self.st.count}, value={self.st.value!r})"


cdef class EMA:
    """Exponential moving average, k = 2/(period+1), seeded with the SMA of the first `period`
    values; TA-Lib's ``EMA(x, timeperiod=period)``."""

    def __init__(self, period):
        self.st.period = _check_period(period, "EMA period", 1)
        self.st.k = 2.0 / (self.st.period + 1)
        self.reset()

    def reset(self):
        """Forget every value: the indicator is as new."""
        self.st.seed_sum = 0.0
        self.st.ema = 0.0
        self.st.value = NAN
        self.st.count = 0

    def update(self, double x):
        """Commit a closed value; return the EMA (NaN until `period` values were seen)."""
        if not isfinite(x):
            _check_finite(x, "EMA.update")
        return ema_step(&self.st, x)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x):
            _check_finite(x, "EMA.peek")
        cdef EmaState tmp = self.st
        return ema_step(&tmp, x)

    def update_many(self, values):
        """``update`` each element of a float64 1-D array; return the values as a float64 array."""
        cdef const double[::1] xs = _as_float64_1d(values, "EMA.update_many")
        cdef Py_ssize_t i, n = xs.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        cdef EmaState st = self.st
        if st.period == 1:
            _check_all_finite(xs, "EMA.update_many")
        with nogil:
            for i in range(n):
                o[i] = ema_step(&st, xs[i])
        if not (isfinite(st.seed_sum) and isfinite(st.ema)):
            _check_all_finite(xs, "EMA.update_many")
        self.st = st
        return out

    @property
    def period(self):
        return self.st.period

    @property
    def lookback(self):
        """Number of values consumed before the first output (TA-Lib's lookback)."""
        return self.st.period - 1

    @property
    def count(self):
        return self.st.count

    @property
    def ready(self):
        return self.st.count >= self.st.period

    @property
    def value(self):
        return self.st.value

    def state(self):
        """Everything needed to continue exactly, as a plain dict of ints and floats."""
        return {"kind": "EMA", "version": STATE_VERSION, "period": self.st.period,
                "count": self.st.count, "seed_sum": self.st.seed_sum, "ema": self.st.ema,
                "value": self.st.value}

    @classmethod
    def from_state(cls, state):
        """Rebuild an indicator from ``state()``; it continues exactly where that one was."""
        d = _state_header(state, "EMA")
        cdef EMA ind = cls(_state_get(d, "period", "EMA"))
        ind.st.count = d["count"]
        ind.st.seed_sum = float(_state_get(d, "seed_sum", "EMA"))
        ind.st.ema = float(_state_get(d, "ema", "EMA"))
        ind.st.value = float(_state_get(d, "value", "EMA"))
        return ind

    def copy(self):
        return type(self).from_state(self.state())

    def __reduce__(self):
        return (_restore, (type(self), self.state()))

    def __repr__(self):
        return f"EMA(period={self.st.period}, count={self.st.count}, value={self.st.value!r})"


cdef class RSI:
    """Wilder's relative strength index (0..100); TA-Lib's ``RSI(x, timeperiod=period)``.
    The first value comes with the (period+1)-th input."""

    def __init__(self, period=14):
        self.st.period = _check_period(period, "RSI period", 2)
        self.st.recip = 1.0 / self.st.period
        self.st.pm1 = self.st.period - 1
        self.reset()

    def reset(self):
        """Forget every value: the indicator is as new."""
        self.st.prev = 0.0
        self.st.gain = 0.0
        self.st.loss = 0.0
        self.st.value = NAN
        self.st.count = 0

    def update(self, double x):
        """Commit a closed value; return the RSI (NaN until `period` + 1 values were seen)."""
        if not isfinite(x):
            _check_finite(x, "RSI.update")
        return rsi_step(&self.st, x)

    def peek(self, double x):
        """Return what ``update(x)`` would return, changing nothing."""
        if not isfinite(x):
            _check_finite(x, "RSI.peek")
        cdef RsiState tmp = self.st
        return rsi_step(&tmp, x)

    def update_many(self, values):
        """``update`` each element of a float64 1-D array; return the values as a float64 array."""
        cdef const double[::1] xs = _as_float64_1d(values, "RSI.update_many")
        cdef Py_ssize_t i, n = xs.shape[0]
        out = np.empty(n, dtype=np.float64)
        cdef double[::1] o = out
        cdef RsiState st = self.st
        with nogil:
            for i in range(n):
                o[i] = rsi_step(&st, xs[i])
        if not (isfinite(st.prev) and isfinite(st.gain) and isfinite(st.loss)):
            _check_all_finite(xs, "RSI.update_many")
        self.st = st
        return out

    @property
    def period(self):
        return self.st.period

    @property
    def lookback(self):
        """Number of values consumed before the first output (TA-Lib's lookback)."""
        return self.st.period

    @property
    def count(self):
        return self.st.count

    @property
    def ready(self):
        return self.st.count > self.st.period

    @property
    def value(self):
        return self.st.value

    def state(self):
        """Everything needed to continue exactly, as a plain dict of ints and floats."""
        return {"kind": "RSI", "version": STATE_VERSION, "period": self.st.period,
                "count": self.st.count, "prev": self.st.prev, "gain": self.st.gain,
                "loss": self.st.loss, "value": self.st.value}

    @classmethod
    def from_state(cls, state):
        """Rebuild an indicator from ``state()``; it continues exactly where that one was."""
        d = _state_header(state, "RSI")
        cdef RSI ind = cls(_state_get(d, "period", "RSI"))
        ind.st.count = d["count"]
        ind.st.prev = float(_state_get(d, "prev", "RSI"))
        ind.st.gain = float(_state_get(d, "gain", "RSI"))
        ind.st.loss = float(_state_get(d, "loss", "RSI"))
        ind.st.value = float(_state_get(d, "value", "RSI"))
        return ind

    def copy(self):
        return type(self).from_state(self.state())

    def __reduce__(self):
        return (_restore, (type(self), self.state()))

    def __repr__(self):
        return f"RSI(period={self.st.period}, count={self.st.count}, value={self.st.value!r})"


cdef class MACD:
    """Moving average convergence/divergence; TA-Lib's ``MACD(x, fastperiod, slowperiod,
    signalperiod)``. Values are ``(macd, signal, hist)``, all NaN until slow + signal - 1 values
    were seen. As in TA-Lib, a fast period longer than the slow one is swapped with it."""

    def __init__(self, fast=12, slow=26, signal=9):
        cdef int f = _check_period(fast, "MACD fast period", 2)
        cdef int s = _check_period(slow, "MACD slow period", 2)
        cdef int g = _check_period(signal, "MACD signal period", 1)
        if s < f:
            f, s = s, f
        self.st.fast_period = f
        self.st.slow_period = s
        self.st.signal_period = g
        self.st.kfast = 2.0 / (f + 1)
        self.st.kslow = 2.0 / (s + 1)
        self.st.ksignal = 2.0 / (g + 1)
        self.reset()

    def reset(self):
        """Forget every value: the indicator is as new."""
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

    def update_many(self, values):
        """``update`` each element of a float64 1-D array; return ``(macd, signal, hist)`` arrays."""
        cdef const double[::1] xs = _as_float64_1d(values, "MACD.update_many")
        cdef Py_ssize_t i, n = xs.shape[0]
        line = np.empty(n, dtype=np.float64)
        signal = np.empty(n, dtype=np.float64)
        hist = np.empty(n, dtype=np.float64)
        cdef double[::1] o1 = line
        cdef double[::1] o2 = signal
        cdef double[::1] o3 = hist
        cdef MacdState st = self.st
        cdef long long warm = st.slow_period + st.signal_period - 1
        i = 0
        with nogil:
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
        if not (isfinite(st.slow_sum) and isfinite(st.fast_sum) and isfinite(st.signal_sum)
                and isfinite(st.slow) and isfinite(st.fast) and isfinite(st.signal_ema)):
            _check_all_finite(xs, "MACD.update_many")
        self.st = st
        return line, signal, hist

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

    @property
    def lookback(self):
        """Number of values consumed before the first output (TA-Lib's lookback)."""
        return self.st.slow_period + self.st.signal_period - 2

    @property
    def count(self):
        return self.st.count

    @property
    def ready(self):
        return self.st.count >= self.st.slow_period + self.st.signal_period - 1

    @property
    def value(self):
        return (self.st.line, self.st.signal, self.st.hist)

    def state(self):
        """Everything needed to continue exactly, as a plain dict of ints and floats."""
        cdef MacdState* s = &self.st
        return {"kind": "MACD", "version": STATE_VERSION, "fast": s.fast_period,
                "slow": s.slow_period, "signal": s.signal_period, "count": s.count,
                "fast_sum": s.fast_sum, "slow_sum": s.slow_sum, "signal_sum": s.signal_sum,
                "fast_ema": s.fast, "slow_ema": s.slow, "signal_ema": s.signal_ema,
                "value": [s.line, s.signal, s.hist]}

    @classmethod
    def from_state(cls, state):
        """Rebuild an indicator from ``state()``; it continues exactly where that one was."""
        d = _state_header(state, "MACD")
        cdef MACD ind = cls(_state_get(d, "fast", "MACD"), _state_get(d, "slow", "MACD"),
                             _state_get(d, "signal", "MACD"))
        ind.st.count = d["count"]
        ind.st.fast_sum = float(_state_get(d, "fast_sum", "MACD"))
        ind.st.slow_sum = float(_state_get(d, "slow_sum", "MACD"))
        ind.st.signal_sum = float(_state_get(d, "signal_sum", "MACD"))
        ind.st.fast = float(_state_get(d, "fast_ema", "MACD"))
        ind.st.slow = float(_state_get(d, "slow_ema", "MACD"))
        ind.st.signal_ema = float(_state_get(d, "signal_ema", "MACD"))
        line, signal, hist = _state_get(d, "value", "MACD")
        ind.st.line = float(line)
        ind.st.signal = float(signal)
        ind.st.hist = float(hist)
        return ind

    def copy(self):
        return type(self).from_state(self.state())

    def __reduce__(self):
        return (_restore, (type(self), self.state()))

    def __repr__(self):
        return (f"MACD(fast={self.st.fast_period}, slow={self.st.slow_period}, "
                f"signal={self.st.signal_period}, count={self.st.count}, value={self.value!r})")
