"""Every registered indicator kind against TA-Lib and the pure-Python reference, and the shared
surface (peek, update_many, state, pickling) on each: the tests iterate ``catalog.KINDS``, so a new
registration is tested at once (it needs only its entry in ``PARAMS``)."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from indicators.catalog import KINDS, Kind
from tests import indicator_reference as ref

talib = pytest.importorskip("talib")
abstract = pytest.importorskip("talib.abstract")

N = 100_000

# The test entry of each kind: constructor arguments to check (the first is the common one).
PARAMS: dict[str, list[tuple]] = {
    "sma": [(20,), (1,), (200,)],
    "ema": [(20,), (1,), (200,)],
    "wma": [(20,), (1,), (2,)],
    "rsi": [(14,), (2,)],
    "macd": [(12, 26, 9), (26, 12, 9), (2, 3, 1)],
    "bbands": [(20, 2.0, 2.0), (2, 1.0, 3.0), (50, -1.5, 0.5)],
    "atr": [(14,), (1,), (50,)],
    "adx": [(14,), (2,), (40,)],
    "cci": [(20,), (2,), (50,)],
    "stoch": [(14, 3, 3), (5, 3, 3), (1, 1, 1), (21, 1, 5)],
    "obv": [()],
}
CASES = [(name, params) for name in KINDS for params in PARAMS.get(name, [])]
COMMON = [(name, PARAMS[name][0]) for name in KINDS if name in PARAMS]


def bars(n: int, seed: int, style: str) -> dict[str, np.ndarray]:
    """OHLC bars and tick volumes: ``fx`` a forex-like walk near 1.1 with heavy-tailed moves;
    ``ticks`` prices on a 0.25 grid with many unchanged closes, flat bars and equal highs."""
    rng = np.random.default_rng(seed)
    if style == "fx":
        close = 1.1 + np.cumsum(rng.standard_t(3, n)) * 1e-4
        wick = np.abs(rng.normal(0.0, 2e-4, (2, n)))
    else:
        close = np.round(100.0 + np.cumsum(rng.integers(-1, 2, n)) * 0.25, 2)
        wick = rng.integers(0, 3, (2, n)) * 0.25
    open_ = np.concatenate((close[:1], close[:-1]))
    return {"open": open_, "high": np.maximum(open_, close) + wick[0], "low": np.minimum(open_, close) - wick[1],
            "close": close, "tick_volume": rng.integers(0, 400, n).astype(np.float64)}


SERIES = {"fx": lambda: bars(N, 1, "fx"), "ticks": lambda: bars(N, 2, "ticks")}


@pytest.fixture(scope="module", params=sorted(SERIES))
def long_bars(request) -> dict[str, np.ndarray]:
    return SERIES[request.param]()


def inputs(kind: Kind, b: dict[str, np.ndarray], stop: int | None = None) -> list[np.ndarray]:
    return [b[name][:stop] for name in kind.inputs]


def outputs(values) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float64) for v in (values if isinstance(values, tuple) else (values,))]


def talib_values(kind: Kind, params: tuple, b: dict[str, np.ndarray], stop: int | None = None):
    """TA-Lib's batch function for the kind (its class name), called with the registry's
    parameter names as keywords (TA-Lib's own names; MA types left at TA-Lib's defaults)."""
    return getattr(talib, kind.cls.__name__)(*inputs(kind, b, stop), **{p.name: v for p, v in zip(kind.params, params)})


def assert_close(ours, theirs, rtol: float = 1e-9, atol: float = 0.0, what: str = "") -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: warm-up NaN pattern differs")
    m = ~np.isnan(theirs)
    err = np.abs(ours[m] - theirs[m])
    bad = err > rtol * np.abs(theirs[m]) + atol
    assert not bad.any(), (f"{what}: {bad.sum()} values differ, first at index {np.flatnonzero(m)[np.argmax(bad)]}, "
                           f"max abs err {err.max()!r}")


def fed(kind: Kind, params: tuple, b: dict[str, np.ndarray], n: int):
    ind = kind.cls(*params)
    ind.update_many(*inputs(kind, b, n))
    return ind


def row(kind: Kind, b: dict[str, np.ndarray], i: int) -> list[float]:
    return [float(b[name][i]) for name in kind.inputs]


# ------------------------------------------------------------------------------------------------
# the registry

def test_every_registered_kind_has_a_test_entry_and_is_a_talib_function():
    assert set(PARAMS) == set(KINDS), "add the new kind's parameters to PARAMS"
    for kind in KINDS.values():
        fn = abstract.Function(kind.cls.__name__)
        assert len(fn.output_names) == len(kind.outputs), kind.name
        assert [p.name for p in kind.params] == [n for n in fn.parameters if not n.endswith("matype")], kind.name


@pytest.mark.parametrize("name", list(KINDS))
def test_registry_limits_are_the_classes_and_talibs(name):
    kind = KINDS[name]
    base = list(PARAMS[name][0])
    for i, param in enumerate(kind.params):
        below, above = (param.low - 1, param.high + 1) if param.type is int else (param.low * 1.5, param.high * 1.5)
        for value, ok in ((param.low, True), (param.high, True), (below, False), (above, False)):
            args = base[:i] + [param.type(value)] + base[i + 1:]
            if ok:
                kind.cls(*args)
            else:
                with pytest.raises(ValueError, match=param.name):
                    kind.cls(*args)
                if param.type is int:
                    b = bars(60, 3, "fx")
                    with pytest.raises(Exception):
                        getattr(talib, kind.cls.__name__)(*inputs(kind, b), **{p.name: v for p, v in zip(kind.params, args)})


# ------------------------------------------------------------------------------------------------
# equality to TA-Lib and to the reference

@pytest.mark.parametrize("name,params", CASES, ids=str)
def test_update_many_equals_talib_over_100k_bars(long_bars, name, params):
    kind = KINDS[name]
    ours = outputs(kind.cls(*params).update_many(*inputs(kind, long_bars)))
    theirs = outputs(talib_values(kind, params, long_bars))
    assert len(ours) == len(theirs) == len(kind.outputs)
    for suffix, o, t in zip(kind.outputs, ours, theirs):
        assert_close(o, t, what=f"{name}{params}{suffix}")


# Stronger than 1e-9: these repeat TA-Lib 0.8's arithmetic operation for operation (README).
BIT_EXACT = ["sma", "ema", "rsi", "macd", "adx", "cci", "stoch", "obv"]


@pytest.mark.parametrize("name", BIT_EXACT)
def test_values_are_bit_identical_to_talib(long_bars, name):
    kind, params = KINDS[name], PARAMS[name][0]
    for o, t in zip(outputs(kind.cls(*params).update_many(*inputs(kind, long_bars))),
                    outputs(talib_values(kind, params, long_bars))):
        np.testing.assert_array_equal(o, t)


@pytest.mark.parametrize("name,params", COMMON, ids=str)
def test_update_one_by_one_equals_talib_over_100k_bars(name, params):
    kind = KINDS[name]
    b = bars(N, 7, "fx")
    ind = kind.cls(*params)
    values = [ind.update(*args) for args in zip(*(b[n].tolist() for n in kind.inputs))]
    ours = [np.array(v) for v in zip(*values)] if len(kind.outputs) > 1 else [np.array(values)]
    for o, t in zip(ours, outputs(talib_values(kind, params, b))):
        assert_close(o, t, what=name)


@pytest.mark.parametrize("name,params", COMMON, ids=str)
def test_reference_equals_talib_and_core_over_100k_bars(name, params):
    """The pure-Python reference (straight from the definitions) agrees with both; values that
    cross zero (MACD, CCI) get an absolute slack of 1e-9 of the output's scale."""
    kind = KINDS[name]
    b = bars(N, 8, "fx")
    expected = outputs(getattr(ref, name)(*(a.tolist() for a in inputs(kind, b)), *params))
    for o, t, e in zip(outputs(kind.cls(*params).update_many(*inputs(kind, b))),
                       outputs(talib_values(kind, params, b)), expected):
        atol = 1e-9 * float(np.nanmax(np.abs(e))) if np.isfinite(e).any() else 0.0
        assert_close(o, e, atol=atol, what=f"core vs reference {name}")
        assert_close(t, e, atol=atol, what=f"TA-Lib vs reference {name}")


@pytest.mark.parametrize("name,params", CASES, ids=str)
def test_short_series_give_talibs_nan_pattern(name, params):
    kind = KINDS[name]
    ind = kind.cls(*params)
    for n in range(0, ind.lookback + 3):
        b = bars(n, n, "fx")
        for o, t in zip(outputs(kind.cls(*params).update_many(*inputs(kind, b))), outputs(talib_values(kind, params, b))):
            assert_close(o, t, what=f"{name} n={n}")


@pytest.mark.parametrize("name,params", CASES, ids=str)
def test_ready_count_value_lookback_follow_the_warm_up(name, params):
    kind = KINDS[name]
    b = bars(300, 4, "fx")
    ind = kind.cls(*params)
    fn = abstract.Function(kind.cls.__name__)
    fn.set_parameters({p.name: v for p, v in zip(kind.params, params)})
    assert ind.lookback == fn.lookback
    assert ind.count == 0 and not ind.ready and all(math.isnan(v) for v in outputs(ind.value))
    for i in range(ind.lookback + 2):
        value = ind.update(*row(kind, b, i))
        assert ind.count == i + 1
        assert ind.ready == (i >= ind.lookback)
        assert all(math.isnan(v) for v in outputs(value)) == (i < ind.lookback)
        assert repr(outputs(ind.value)) == repr(outputs(value))


# ------------------------------------------------------------------------------------------------
# the shared surface on every kind

@pytest.mark.parametrize("name,params", CASES, ids=str)
def test_peek_never_mutates_and_gives_what_update_gives(name, params):
    kind = KINDS[name]
    b = bars(400, 5, "ticks" if len(params) % 2 else "fx")
    for n in (0, 1, max(0, kind.cls(*params).lookback - 1), 150, 399):
        ind = fed(kind, params, b, n)
        before = ind.state()
        probe = row(kind, b, n)
        moved = [v * 1.001 for v in probe]
        peeked = [ind.peek(*probe), ind.peek(*moved), ind.peek(*probe)]
        assert repr(ind.state()) == repr(before)
        assert repr(peeked[0]) == repr(peeked[2])
        assert repr(ind.update(*probe)) == repr(peeked[0])


@pytest.mark.parametrize("name,params", CASES, ids=str)
@pytest.mark.parametrize("cuts", [(0,), (1, 2, 3), (7, 40, 41, 200), (299,)])
def test_update_many_equals_repeated_update(name, params, cuts):
    kind = KINDS[name]
    b = bars(300, 6, "fx")
    one = kind.cls(*params)
    each = [outputs(one.update(*row(kind, b, i))) for i in range(300)]
    many = kind.cls(*params)
    got: list[list[np.ndarray]] = []
    for start, stop in zip((0, *cuts), (*cuts, 300)):
        got.append(outputs(many.update_many(*(a[start:stop] for a in inputs(kind, b)))))
    for k in range(len(kind.outputs)):
        joined = np.concatenate([chunk[k] for chunk in got])
        np.testing.assert_array_equal(joined, np.array([float(v[k]) for v in each]))
    assert repr(many.state()) == repr(one.state())


@pytest.mark.parametrize("name,params", CASES, ids=str)
def test_state_json_and_pickle_round_trips_continue_identically(name, params):
    kind = KINDS[name]
    b = bars(500, 9, "fx")
    for n in (0, 3, 250):
        whole = fed(kind, params, b, 500)
        half = fed(kind, params, b, n)
        restored = [kind.cls.from_state(json.loads(json.dumps(half.state()))), pickle.loads(pickle.dumps(half)),
                    half.copy()]
        for ind in restored:
            assert repr(ind) == repr(half)
            rest = outputs(ind.update_many(*(a[n:] for a in inputs(kind, b))))
            assert repr(ind.state()) == repr(whole.state())
            assert repr(outputs(ind.value)) == repr(outputs(whole.value))
            assert len(rest[0]) == 500 - n
        half.reset()
        assert repr(half.state()) == repr(kind.cls(*params).state())


@pytest.mark.parametrize("name,params", COMMON, ids=str)
def test_nan_and_inf_are_refused_with_the_state_unchanged(name, params):
    kind = KINDS[name]
    b = bars(100, 10, "fx")
    ind = fed(kind, params, b, 60)
    before = ind.state()
    for position in range(len(kind.inputs)):
        for bad in (math.nan, math.inf, -math.inf):
            args = row(kind, b, 60)
            args[position] = bad
            with pytest.raises(ValueError, match=f"{kind.cls.__name__}.update.*finite"):
                ind.update(*args)
            with pytest.raises(ValueError, match="finite"):
                ind.peek(*args)
            arrays = [a[60:80].copy() for a in inputs(kind, b)]
            arrays[position][5] = bad
            with pytest.raises(ValueError, match="index 5"):
                ind.update_many(*arrays)
            assert repr(ind.state()) == repr(before)


def test_update_many_refuses_a_wrong_number_of_arrays_or_lengths():
    atr = KINDS["atr"].cls(14)
    with pytest.raises(TypeError, match=r"ATR.update_many takes 3 array\(s\) \(high, low, close\), got 1"):
        atr.update_many(np.ones(5))
    with pytest.raises(ValueError, match="differ in length"):
        atr.update_many(np.ones(5), np.ones(5), np.ones(4))
    assert atr.count == 0


def test_a_wma_period_past_46340_is_talibs():
    """The weights' sum p(p+1)/2 no longer fits a C int there; it is computed in doubles."""
    kind = KINDS["wma"]
    b = bars(60_000, 11, "fx")
    assert_close(kind.cls(50_000).update_many(b["close"]), talib.WMA(b["close"], 50_000), what="wma(50000)")
