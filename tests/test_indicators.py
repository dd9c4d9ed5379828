"""The Cython indicator core: TA-Lib-identical values, and the update/peek/update_many/state contract."""
from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indicators import EMA, MACD, RSI, SMA
from tests import indicator_reference as ref

talib = pytest.importorskip("talib")

N_LONG = 200_000


# ------------------------------------------------------------------------------------------------
# series and helpers

def random_walk(n: int, seed: int, start: float = 50_000.0, step: float = 20.0) -> np.ndarray:
    """A price-like random walk with a large offset (where a running sum loses the most digits)."""
    rng = np.random.default_rng(seed)
    return start + np.cumsum(rng.normal(0.0, step, n))


def fx_walk(n: int, seed: int) -> np.ndarray:
    """A forex-like series near 1.1 with heavy-tailed steps (fat moves next to tiny ones)."""
    rng = np.random.default_rng(seed)
    return 1.1 + np.cumsum(rng.standard_t(3, n)) * 1e-4


def tick_walk(n: int, seed: int) -> np.ndarray:
    """Prices on a tick grid with many unchanged closes (zero changes, flat stretches)."""
    rng = np.random.default_rng(seed)
    return np.round(100.0 + np.cumsum(rng.integers(-1, 2, n)) * 0.25, 2)


SERIES = {
    "walk50000": lambda: random_walk(N_LONG, 1),
    "fx": lambda: fx_walk(N_LONG, 2),
    "ticks": lambda: tick_walk(N_LONG, 3),
}


@pytest.fixture(scope="module", params=sorted(SERIES))
def long_series(request) -> np.ndarray:
    return SERIES[request.param]()


def talib_values(kind: str, params: tuple, x: np.ndarray):
    if kind == "MACD":
        return talib.MACD(x, *params)
    return getattr(talib, kind)(x, *params)


def make(kind: str, params: tuple):
    return {"SMA": SMA, "EMA": EMA, "RSI": RSI, "MACD": MACD}[kind](*params)


def as_outputs(values) -> list[np.ndarray]:
    """One array per output (MACD has three)."""
    return [np.asarray(v, dtype=np.float64) for v in values] if isinstance(values, tuple) \
        else [np.asarray(values, dtype=np.float64)]


def assert_close_with_nan_pattern(ours, theirs, rtol: float = 1e-9, atol: float = 0.0) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg="warm-up NaN pattern differs")
    m = ~np.isnan(theirs)
    err = np.abs(ours[m] - theirs[m])
    bad = err > rtol * np.abs(theirs[m]) + atol
    assert not bad.any(), (f"{bad.sum()} values differ, first at index {np.flatnonzero(m)[np.argmax(bad)]}, "
                           f"max abs err {err.max()!r}")


def same_state(a, b) -> bool:
    """State dicts are equal (repr compares floats exactly and NaN equal to NaN)."""
    return repr(a.state()) == repr(b.state())


def same_value(a, b) -> bool:
    return repr(a) == repr(b)


def exact(values) -> str:
    """Exact text of update/update_many results: floats by repr (NaN == NaN), arrays as lists."""
    if isinstance(values, tuple):
        return repr([exact(v) for v in values])
    if isinstance(values, np.ndarray):
        return repr(values.tolist())
    return repr(float(values))


CASES = [
    ("SMA", (1,)), ("SMA", (2,)), ("SMA", (20,)), ("SMA", (200,)),
    ("EMA", (1,)), ("EMA", (2,)), ("EMA", (20,)), ("EMA", (200,)),
    ("RSI", (2,)), ("RSI", (14,)), ("RSI", (50,)),
    ("MACD", (12, 26, 9)), ("MACD", (5, 35, 5)), ("MACD", (2, 3, 1)), ("MACD", (26, 12, 9)),
    ("MACD", (8, 8, 3)),
]
DEFAULTS = [("SMA", (20,)), ("EMA", (20,)), ("RSI", (14,)), ("MACD", (12, 26, 9))]


# ------------------------------------------------------------------------------------------------
# equality to TA-Lib

@pytest.mark.parametrize("kind,params", CASES, ids=lambda v: str(v))
def test_update_many_equals_talib_over_200k_points(long_series, kind, params):
    ours = as_outputs(make(kind, params).update_many(long_series))
    theirs = as_outputs(talib_values(kind, params, long_series))
    for o, t in zip(ours, theirs):
        assert_close_with_nan_pattern(o, t)


@pytest.mark.parametrize("kind,params", DEFAULTS, ids=lambda v: str(v))
def test_update_one_by_one_equals_talib_over_100k_points(kind, params):
    x = random_walk(100_000, 7)
    ind = make(kind, params)
    values = [ind.update(v) for v in x.tolist()]
    ours = [np.array(v) for v in zip(*values)] if kind == "MACD" else [np.array(values)]
    for o, t in zip(ours, as_outputs(talib_values(kind, params, x))):
        assert_close_with_nan_pattern(o, t)


@pytest.mark.parametrize("kind,params", DEFAULTS, ids=lambda v: str(v))
def test_values_are_bit_identical_to_talib(kind, params):
    """Stronger than the 1e-9 requirement: the core repeats TA-Lib 0.8.2's arithmetic exactly
    (running-sum SMA, fused multiply-add EMA step, RSI times 1/period)."""
    for x in (random_walk(100_000, 11), fx_walk(100_000, 12), tick_walk(100_000, 13)):
        for o, t in zip(as_outputs(make(kind, params).update_many(x)), as_outputs(talib_values(kind, params, x))):
            np.testing.assert_array_equal(o, t)


@pytest.mark.parametrize("kind,params", CASES, ids=lambda v: str(v))
def test_reference_equals_talib_and_core(kind, params):
    """The pure-Python reference (straight from the definitions) agrees with both."""
    for x in (random_walk(3_000, 21), fx_walk(3_000, 22), tick_walk(3_000, 23)):
        atol = 1e-12 * float(np.abs(x).max())      # MACD line/hist cross zero: absolute slack
        fn = getattr(ref, kind.lower())
        expected = as_outputs(fn(x.tolist(), *params))
        for o, t, e in zip(as_outputs(make(kind, params).update_many(x)),
                           as_outputs(talib_values(kind, params, x)), expected):
            assert_close_with_nan_pattern(o, e, atol=atol)
            assert_close_with_nan_pattern(t, e, atol=atol)


@pytest.mark.parametrize("kind,params", CASES, ids=lambda v: str(v))
def test_short_series_give_talibs_nan_pattern(kind, params):
    ind = make(kind, params)
    for n in range(0, ind.lookback + 3):
        x = random_walk(n, n)
        for o, t in zip(as_outputs(make(kind, params).update_many(x)), as_outputs(talib_values(kind, params, x))):
            assert_close_with_nan_pattern(o, t)


def test_sma_running_sum_does_not_drift_over_two_million_points():
    """TA-Lib's SMA is a running total (and so is ours, to stay identical); over 2M points at
    ~50,000 its error against an exact window sum stays far below 1e-9 relative."""
    x = random_walk(2_000_000, 5, step=50.0)
    ours = SMA(20).update_many(x)
    np.testing.assert_array_equal(ours, talib.SMA(x, 20))
    tail = slice(len(x) - 2_000, len(x))
    exact = np.array([math.fsum(x[i - 19:i + 1]) / 20 for i in range(tail.start, tail.stop)])
    assert np.max(np.abs(ours[tail] - exact) / np.abs(exact)) < 1e-11


def test_rsi_is_zero_without_any_move_and_hundred_without_losses():
    assert RSI(14).update_many(np.full(30, 5.0))[14:].tolist() == [0.0] * 16
    up = RSI(14).update_many(np.arange(30.0))
    assert up[14:].tolist() == [100.0] * 16
    np.testing.assert_array_equal(up, talib.RSI(np.arange(30.0), 14))


def test_ema_of_period_one_is_the_input_itself():
    x = np.array([1.0, 1e-20, 1.0, -3e-17, 5.0, 0.1])
    np.testing.assert_array_equal(EMA(1).update_many(x), x)
    np.testing.assert_array_equal(EMA(1).update_many(x), talib.EMA(x, 1))


# ------------------------------------------------------------------------------------------------
# the surface

@pytest.mark.parametrize("kind,params", CASES, ids=lambda v: str(v))
def test_ready_count_value_follow_the_warm_up(kind, params):
    ind = make(kind, params)
    x = random_walk(ind.lookback + 5, 3)
    for i, v in enumerate(x):
        assert ind.ready is (i > ind.lookback) and ind.count == i
        out = ind.update(v)
        assert ind.count == i + 1 and ind.ready is (i >= ind.lookback)
        assert same_value(out, ind.value)
        first = out[0] if kind == "MACD" else out
        assert math.isnan(first) is (i < ind.lookback)


def test_lookbacks_match_talib():
    assert (SMA(20).lookback, EMA(20).lookback, RSI(14).lookback, MACD().lookback) == (19, 19, 14, 33)
    assert MACD(26, 12, 9).period == (12, 26, 9)      # swapped like TA-Lib
    assert (MACD(5, 35, 5).fast_period, MACD(5, 35, 5).slow_period, MACD(5, 35, 5).signal_period) == (5, 35, 5)
    assert SMA(7).period == EMA(7).period == RSI(7).period == 7
    assert RSI().period == 14


def test_fresh_indicators_have_nan_values():
    for ind in (SMA(3), EMA(3), RSI(3), MACD()):
        v = ind.value
        assert all(math.isnan(u) for u in (v if isinstance(v, tuple) else (v,)))
        assert ind.count == 0 and not ind.ready


@pytest.mark.parametrize("factory,minimum", [(SMA, 1), (EMA, 1), (RSI, 2)])
def test_periods_outside_talibs_range_are_rejected(factory, minimum):
    factory(minimum)
    factory(100_000)
    for bad in (minimum - 1, -5, 100_001):
        with pytest.raises(ValueError, match="period"):
            factory(bad)
    for bad in (2.5, "14", None, True):
        with pytest.raises(TypeError):
            factory(bad)


def test_macd_periods_outside_talibs_range_are_rejected():
    MACD(2, 2, 1)
    for args in ((1, 26, 9), (12, 1, 9), (12, 26, 0), (12, 100_001, 9)):
        with pytest.raises(ValueError, match="period"):
            MACD(*args)
    with pytest.raises(TypeError):
        MACD(12.0, 26, 9)


def test_update_many_accepts_array_likes_and_rejects_others():
    x = random_walk(500, 4)
    want = SMA(5).update_many(x)
    np.testing.assert_array_equal(SMA(5).update_many(x.tolist()), want)          # list
    np.testing.assert_array_equal(SMA(5).update_many(x.astype(np.float32)), SMA(5).update_many(
        x.astype(np.float32).astype(np.float64)))                                   # other float dtype
    np.testing.assert_array_equal(SMA(5).update_many(np.arange(10)), talib.SMA(np.arange(10.0), 5))  # ints
    strided = np.repeat(x, 2)[::2]                                                   # non-contiguous
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(SMA(5).update_many(strided), want)
    readonly = x.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(SMA(5).update_many(readonly), want)
    out = SMA(5).update_many(np.array([], dtype=np.float64))
    assert out.dtype == np.float64 and out.shape == (0,)
    for bad, exc in ((np.zeros((3, 3)), ValueError), (np.array(["1.0"]), TypeError),
                     ([1.0, None], TypeError), (np.array([1 + 2j]), TypeError), (5.0, ValueError)):
        with pytest.raises(exc):
            SMA(5).update_many(bad)


def test_macd_update_many_returns_three_float64_arrays():
    out = MACD().update_many(random_walk(100, 1))
    assert isinstance(out, tuple) and len(out) == 3
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (100,) for a in out)


def test_update_accepts_python_and_numpy_numbers():
    a, b = EMA(3), EMA(3)
    for v in (1, 2.5, np.float64(3.0), np.float32(4.0), np.int64(5)):
        a.update(v)
        b.update(float(v))
    assert same_state(a, b)
    with pytest.raises(TypeError):
        a.update("1.0")


def test_from_state_rejects_foreign_or_broken_states():
    s = SMA(5)
    s.update_many(random_walk(10, 1))
    state = s.state()
    with pytest.raises(ValueError, match="EMA"):
        EMA.from_state(state)
    with pytest.raises(ValueError, match="buffer has 4 values, expected 5"):
        SMA.from_state({**state, "buffer": state["buffer"][1:]})
    with pytest.raises(ValueError, match="total"):
        SMA.from_state({**state, "fields": {k: v for k, v in state["fields"].items() if k != "total"}})
    with pytest.raises(ValueError, match="period=6, params 5"):
        SMA.from_state({**state, "fields": {**state["fields"], "period": 6}})
    with pytest.raises(ValueError, match="negative count"):
        SMA.from_state({**state, "fields": {**state["fields"], "count": -5, "head": 0}})
    with pytest.raises(ValueError, match="version"):
        SMA.from_state({**state, "version": 99})
    with pytest.raises(TypeError):
        SMA.from_state([1, 2])


# ------------------------------------------------------------------------------------------------
# properties (hypothesis)

FAST = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

indicators_st = st.one_of(
    st.integers(1, 12).map(lambda p: ("SMA", (p,))),
    st.integers(1, 12).map(lambda p: ("EMA", (p,))),
    st.integers(2, 12).map(lambda p: ("RSI", (p,))),
    st.tuples(st.integers(2, 8), st.integers(2, 12), st.integers(1, 6)).map(lambda t: ("MACD", t)),
)
# prices: random walks from bounded steps, sometimes flat, at an offset up to 1e5
steps_st = st.lists(st.one_of(st.floats(-50.0, 50.0), st.just(0.0), st.integers(-3, 3).map(float)),
                    max_size=60)
offset_st = st.sampled_from([0.0, 1.1, 100.0, 50_000.0])


def prices(offset: float, steps: list[float]) -> np.ndarray:
    return offset + np.cumsum(np.asarray(steps, dtype=np.float64))


def fed(kind_params, xs) -> object:
    ind = make(*kind_params)
    ind.update_many(xs)
    return ind


@FAST
@given(indicators_st, offset_st, steps_st, st.floats(-100.0, 100.0))
def test_peek_never_mutates(kind_params, offset, steps, delta):
    xs = prices(offset, steps)
    ind = fed(kind_params, xs)
    before = ind.state()
    probe = float(xs[-1] if len(xs) else offset) + delta
    peeked = [ind.peek(probe), ind.peek(probe + 1.0), ind.peek(probe)]
    assert repr(ind.state()) == repr(before)
    assert same_value(peeked[0], peeked[2])
    assert same_value(peeked[0], ind.update(probe))       # peek == what update then commits


@FAST
@given(indicators_st, offset_st, steps_st, st.lists(st.integers(0, 60), max_size=4))
def test_update_many_equals_repeated_update(kind_params, offset, steps, cuts):
    xs = prices(offset, steps)
    one = make(*kind_params)
    singles = [one.update(v) for v in xs.tolist()]
    many = make(*kind_params)
    bounds = sorted({0, len(xs), *(c for c in cuts if c <= len(xs))})
    chunks = [many.update_many(xs[a:b]) for a, b in zip(bounds, bounds[1:])]   # continues across calls
    if kind_params[0] == "MACD":
        columns = [np.concatenate([c[k] for c in chunks] + [np.empty(0)]) for k in range(3)]
        got = list(zip(*(col.tolist() for col in columns)))
        assert repr(got) == repr(singles)
    else:
        assert repr(np.concatenate(chunks + [np.empty(0)]).tolist()) == repr(singles)
    assert same_state(one, many)


@FAST
@given(indicators_st, offset_st, steps_st, steps_st)
def test_reset_is_a_fresh_indicator(kind_params, offset, first, second):
    used = fed(kind_params, prices(offset, first))
    used.reset()
    fresh = make(*kind_params)
    assert same_state(used, fresh)
    xs = prices(offset, second)
    assert exact(used.update_many(xs)) == exact(fresh.update_many(xs))


@FAST
@given(indicators_st, offset_st, steps_st, steps_st)
def test_saved_indicator_continues_identically(kind_params, offset, first, second):
    ind = fed(kind_params, prices(offset, first))
    restored = [pickle.loads(pickle.dumps(ind)), copy.deepcopy(ind), ind.copy(),
                type(ind).from_state(json.loads(json.dumps(ind.state())))]
    xs = prices(offset, first + second)[len(first):]         # the same walk, continued
    want = exact(ind.update_many(xs))
    for other in restored:
        assert exact(other.update_many(xs)) == want
        assert same_state(other, ind)


@FAST
@given(indicators_st, st.lists(st.floats(-1e300, 1e300), max_size=80))
def test_any_finite_floats_give_talibs_exact_values(kind_params, values):
    """Whatever the magnitudes (subnormal to 1e300, zeros, flat runs): TA-Lib's bits."""
    xs = np.asarray(values, dtype=np.float64)
    half = len(xs) // 2
    ind = make(*kind_params)
    parts = [as_outputs(ind.update_many(xs[:half])), as_outputs(ind.update_many(xs[half:]))]
    for k, theirs in enumerate(as_outputs(talib_values(*kind_params, xs))):
        np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), theirs)


bad_values_st = st.sampled_from([math.nan, math.inf, -math.inf])


@FAST
@given(indicators_st, offset_st, steps_st, bad_values_st, st.integers(1, 40), st.data())
def test_nan_and_inf_are_rejected_and_leave_state_unchanged(kind_params, offset, steps, bad, n, data):
    ind = fed(kind_params, prices(offset, steps))
    before = repr(ind.state())
    with pytest.raises(ValueError, match="finite"):
        ind.update(bad)
    with pytest.raises(ValueError, match="finite"):
        ind.peek(bad)
    arr = prices(offset + 1.0, data.draw(st.lists(st.floats(-5.0, 5.0), min_size=n, max_size=n)))
    for where in data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3)):
        arr[where] = bad
    with pytest.raises(ValueError, match="finite"):
        ind.update_many(arr)
    assert repr(ind.state()) == before
    # and it goes on as if nothing had happened
    good = prices(offset, steps + [1.0, -2.0, 0.5])[len(steps):]
    fresh = fed(kind_params, prices(offset, steps))
    assert exact(ind.update_many(good)) == exact(fresh.update_many(good))


@pytest.mark.parametrize("kind,params", CASES, ids=lambda v: str(v))
def test_huge_finite_inputs_that_overflow_are_accepted(kind, params):
    """update_many detects NaN/inf from its (non-finite) final state, then checks the input
    exactly: sums that overflow on finite inputs are not an input error. SMA, EMA and MACD then
    still equal TA-Lib bit for bit; TA-Lib's RSI does not follow IEEE arithmetic once a change
    overflows (see the module docstring), so RSI is only checked against itself."""
    x = np.array([1e308, 1.5e308, -1e308, 1e308, 1.7e308] * 12)
    ind = make(kind, params)
    got = [np.concatenate(parts) for parts in zip(as_outputs(ind.update_many(x[:30])),
                                                   as_outputs(ind.update_many(x[30:])))]
    one = make(kind, params)
    singles = [one.update(v) for v in x.tolist()]
    assert exact(tuple(got) if kind == "MACD" else got[0]) == exact(
        tuple(np.array(col) for col in zip(*singles)) if kind == "MACD" else np.array(singles))
    if kind != "RSI":
        for o, t in zip(got, as_outputs(talib_values(kind, params, x))):
            np.testing.assert_array_equal(o, t)
