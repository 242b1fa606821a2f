"""Tests of qref.rounding against independent references.

The deterministic modes are checked against Python's :mod:`decimal`, which converts a float
exactly and rounds with its own, independent implementation of each rule; the stochastic
mode against its closed-form mean f and variance f(1 - f); accumulation against hand-worked
sequences and the martingale mean of stochastic rounding.
"""

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import rounding

DTYPES = (np.float16, np.float32, np.float64)
DETERMINISTIC = tuple(m for m in rounding.MODES if m != "stochastic")
NAMED = {
    "half_even": rounding.round_half_even,
    "half_away": rounding.round_half_away,
    "half_up": rounding.round_half_up,
    "half_down": rounding.round_half_down,
    "floor": rounding.round_floor,
    "ceil": rounding.round_ceil,
    "trunc": rounding.round_trunc,
}


def decimal_round(v, mode):
    """The rounding rule ``mode`` applied to the exact value of the float ``v``, with decimal."""
    with localcontext() as ctx:
        ctx.prec = 800  # more digits than any float64 has: every operation below is exact
        d = Decimal(float(v))
        half = Decimal(1) / 2
        if mode == "half_even":
            r = d.to_integral_value(ROUND_HALF_EVEN)
        elif mode == "half_away":
            r = d.to_integral_value(ROUND_HALF_UP)  # decimal's HALF_UP is "ties away from zero"
        elif mode == "half_up":
            r = (d + half).to_integral_value(ROUND_FLOOR)  # floor(x + 1/2), exactly
        elif mode == "half_down":
            r = (d - half).to_integral_value(ROUND_CEILING)  # ceil(x - 1/2), exactly
        elif mode == "floor":
            r = d.to_integral_value(ROUND_FLOOR)
        elif mode == "ceil":
            r = d.to_integral_value(ROUND_CEILING)
        else:
            r = d.to_integral_value(ROUND_DOWN)
        return float(r)


# ---- deterministic modes ---------------------------------------------------------------

TIES = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
TIE_TABLE = {  # worked by hand from each rule's definition
    "half_even": [-2, -2, 0, 0, 2, 2],
    "half_away": [-3, -2, -1, 1, 2, 3],
    "half_up": [-2, -1, 0, 1, 2, 3],
    "half_down": [-3, -2, -1, 0, 1, 2],
    "floor": [-3, -2, -1, 0, 1, 2],
    "ceil": [-2, -1, 0, 1, 2, 3],
    "trunc": [-2, -1, 0, 0, 1, 2],
}
NON_TIES = [-1.7, -1.2, -0.2, 0.2, 1.2, 1.7]
NON_TIE_TABLE = {
    "half_even": [-2, -1, 0, 0, 1, 2],
    "half_away": [-2, -1, 0, 0, 1, 2],
    "half_up": [-2, -1, 0, 0, 1, 2],
    "half_down": [-2, -1, 0, 0, 1, 2],
    "floor": [-2, -2, -1, 0, 1, 1],
    "ceil": [-1, -1, 0, 1, 2, 2],
    "trunc": [-1, -1, 0, 0, 1, 1],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_ties_and_non_ties_hand_table(mode, dtype):
    for xs, table in ((TIES, TIE_TABLE), (NON_TIES, NON_TIE_TABLE)):
        x = np.array(xs, dtype=dtype)
        for r in (rounding.round(x, mode=mode), NAMED[mode](x)):
            assert r.dtype == dtype and r.shape == x.shape
            np.testing.assert_array_equal(r, np.array(table[mode], dtype=dtype))


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("dtype", DTYPES)
def test_just_below_and_above_a_tie_are_not_ties(mode, dtype):
    # 0.49999999999999994 (float64) is the largest float below 1/2: floor(x + 0.5) gets it wrong
    below = np.nextafter(dtype(0.5), dtype(0))
    above = np.nextafter(dtype(0.5), dtype(1))
    if dtype is np.float64:
        assert below == 0.49999999999999994
    x = np.array([below, above, -below, -above, 2 + below, -2 - below], dtype=dtype)
    expected = [decimal_round(v, mode) for v in x]
    np.testing.assert_array_equal(rounding.round(x, mode=mode), np.array(expected, dtype=dtype))
    if mode in ("half_even", "half_away", "half_up", "half_down"):  # nearest: no tie rule applies
        np.testing.assert_array_equal(rounding.round(x[:4], mode=mode), [0, 1, 0, -1])


def test_large_magnitude_ties_are_exact():
    # 2**52 - 0.5 is a representable tie; beyond 2**52 every float64 is an integer
    x = np.array([2.0**52 - 0.5, -(2.0**52 - 0.5), 2.0**53 + 2, 1e300])
    assert rounding.round(x, mode="half_even")[0] == 2.0**52
    assert rounding.round(x, mode="half_down")[0] == 2.0**52 - 1
    assert rounding.round(x, mode="half_up")[1] == -(2.0**52 - 1)
    for mode in DETERMINISTIC:
        np.testing.assert_array_equal(rounding.round(x, mode=mode), [decimal_round(v, mode) for v in x])


@st.composite
def float_arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    width = np.dtype(dtype).itemsize * 8
    elements = st.floats(allow_nan=False, allow_infinity=False, width=width)
    # mix arbitrary floats with values on and near the half-integers, where the rules differ
    halfish = st.integers(-2000, 2000).map(lambda k: k / 2).map(lambda v: float(np.asarray(v, dtype=dtype)))
    x = draw(hnp.arrays(dtype, st.integers(0, 40), elements=st.one_of(elements, halfish)))
    return x


@given(x=float_arrays(), mode=st.sampled_from(DETERMINISTIC))
@example(x=np.array([-0.49999999999999994, -0.5, 0.49999999999999994]), mode="half_down")
@example(x=np.array([-0.49999999999999994, -0.5, -1.5]), mode="half_up")
@example(x=np.float32([-0.49999997, -2.5e-8]), mode="half_down")
def test_every_deterministic_mode_matches_decimal(x, mode):
    r = rounding.round(x, mode=mode)
    assert r.dtype == x.dtype and r.shape == x.shape
    expected = np.array([decimal_round(v, mode) for v in x], dtype=np.float64)
    np.testing.assert_array_equal(r.astype(np.float64), expected)
    np.testing.assert_array_equal(NAMED[mode](x), r)


@pytest.mark.parametrize("mode", rounding.MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (5,), (2, 3, 4)])
def test_dtype_and_shape_preserved(mode, dtype, shape):
    x = (np.arange(int(np.prod(shape))).reshape(shape) * 0.37 - 1).astype(dtype)
    r = rounding.round(x, mode=mode, rng=0)
    assert np.shape(r) == shape
    assert r.dtype == dtype
    assert np.array_equal(r, np.round(r))  # integers


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_integers_are_fixed_points(mode):
    x = np.arange(-50, 51, dtype=np.float64)
    np.testing.assert_array_equal(rounding.round(x, mode=mode), x)


def test_round_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        rounding.round([1.0], mode="nearest")


# ---- stochastic rounding ---------------------------------------------------------------

N_SR = 200_000


@pytest.mark.parametrize("x0", [0.1, 0.25, 0.5, 0.9, 3.75, -0.3, -2.6])
def test_stochastic_is_unbiased_with_variance_f_one_minus_f(x0):
    x = np.full(N_SR, x0)
    r = rounding.round_stochastic(x, rng=1)
    n = np.floor(x0)
    f = x0 - n
    assert set(np.unique(r)) <= {n, n + 1}
    sigma = np.sqrt(f * (1 - f) / N_SR)  # standard error of the mean of N Bernoulli(f) draws
    assert abs(r.mean() - x0) < 5 * sigma
    # variance of the rounding error is f(1-f); its estimate p(1-p) errs by at most
    # |1 - 2f| |p - f| + (p - f)^2, with |p - f| < 5 sigma
    var = r.var()
    assert abs(var - f * (1 - f)) < abs(1 - 2 * f) * 5 * sigma + 25 * sigma**2 + 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_mean_per_element(dtype):
    # many different fractional parts at once: the average over seeds converges to x itself
    x = np.linspace(-3, 3, 97).astype(dtype)
    draws = np.stack([rounding.round(x, mode="stochastic", rng=s) for s in range(400)])
    assert draws.dtype == dtype
    f = (x - np.floor(x)).astype(np.float64)
    sigma = np.sqrt(f * (1 - f) / 400)
    assert np.all(np.abs(draws.mean(axis=0) - x) <= 5 * sigma + 1e-12)


def test_stochastic_leaves_integers_alone():
    x = np.arange(-10.0, 11.0)
    np.testing.assert_array_equal(rounding.round_stochastic(x, rng=3), x)


def test_stochastic_same_seed_same_result_different_seeds_differ():
    x = np.full(1000, 0.5)
    a = rounding.round_stochastic(x, rng=7)
    np.testing.assert_array_equal(a, rounding.round_stochastic(x, rng=7))
    np.testing.assert_array_equal(a, rounding.round(x, mode="stochastic", rng=np.random.default_rng(7)))
    assert not np.array_equal(a, rounding.round_stochastic(x, rng=8))  # P(equal) = 2**-1000
    gen = np.random.default_rng(7)
    first, second = rounding.round_stochastic(x, rng=gen), rounding.round_stochastic(x, rng=gen)
    assert not np.array_equal(first, second)  # a Generator advances


@given(x=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(-1e6, 1e6)), seed=st.integers(0, 2**32))
def test_stochastic_property_neighbours_and_reproducible(x, seed):
    r = rounding.round(x, mode="stochastic", rng=seed)
    np.testing.assert_array_equal(r, rounding.round(x, mode="stochastic", rng=seed))
    lo = np.floor(x)
    assert np.all((r == lo) | (r == lo + 1))
    assert np.all(np.abs(r - x) < 1)


# ---- accumulate ------------------------------------------------------------------------

NEAREST = ("half_even", "half_away", "half_up", "half_down")


def accumulate_reference(increments, step, start, mode):
    """The running sum, rounded after every add with the decimal rules (deterministic modes)."""
    acc = step * decimal_round(start / step, mode)
    out = []
    for d in increments:
        acc = step * decimal_round((acc + d) / step, mode)
        out.append(acc)
    return np.array(out)


@pytest.mark.parametrize("mode", NEAREST)
def test_round_to_nearest_stalls_below_half_a_step(mode):
    step = 2.0**-8
    inc = np.full(1000, 0.4 * step)  # true sum 400 steps
    s = rounding.accumulate(inc, step=step, mode=mode)
    np.testing.assert_array_equal(s, np.zeros(1000))  # every add is lost
    s = rounding.accumulate(inc, step=step, mode=mode, start=0.25)  # start is put on the grid
    np.testing.assert_array_equal(s, np.full(1000, 0.25))


@pytest.mark.parametrize("mode", NEAREST)
def test_round_to_nearest_counts_steps_above_half_a_step(mode):
    step = 0.5
    s = rounding.accumulate(np.full(20, 0.3), step=step, mode=mode)  # 0.6 of a step: up each time
    np.testing.assert_array_equal(s, step * np.arange(1, 21))


def test_stochastic_accumulation_is_unbiased_over_seeds():
    step, n, frac = 2.0**-8, 1000, 0.1
    inc = np.full(n, frac * step)
    finals = np.array([rounding.accumulate(inc, step=step, mode="stochastic", rng=s)[-1] for s in range(200)])
    # a martingale on the grid: each add rounds up with probability frac exactly, so the final
    # value has mean n*frac*step and variance n*frac*(1-frac)*step**2
    mean, var = n * frac * step, n * frac * (1 - frac) * step**2
    assert abs(finals.mean() - mean) < 5 * np.sqrt(var / finals.size)
    assert 0.5 * var < finals.var() < 1.5 * var  # chi-square with 199 d.o.f.: relative s.e. 0.1
    assert np.all(np.abs(finals / step - np.round(finals / step)) < 1e-9)  # on the grid


def test_floor_drifts_down_and_ceil_up():
    step, n = 1.0, 50
    inc = np.tile([0.3, -0.3], n)  # true sum 0 after every pair
    # floor: 0 -> floor(0.3) = 0 -> floor(-0.3) = -1 -> floor(-0.7) = -1 -> floor(-1.3) = -2 ...
    s = rounding.accumulate(inc, step=step, mode="floor")
    np.testing.assert_array_equal(s[1::2], -np.arange(1, n + 1))
    s = rounding.accumulate(inc, step=step, mode="ceil")  # 0 -> 1 -> ceil(0.7) = 1 -> 2 -> 2 ...
    np.testing.assert_array_equal(s[1::2], np.arange(1, n + 1))
    s = rounding.accumulate(inc, step=step, mode="trunc")  # toward zero: stays at 0
    np.testing.assert_array_equal(s, np.zeros(2 * n))
    # with zero-mean random increments floor still drifts down, ceil up, by about half a step per add
    rng = np.random.default_rng(0)
    r = rng.uniform(-0.5, 0.5, 2000) * step
    assert rounding.accumulate(r, step=step, mode="floor")[-1] < -500 * step
    assert rounding.accumulate(r, step=step, mode="ceil")[-1] > 500 * step


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("step", [2.0**-6, 0.1, 3.0])
def test_accumulate_matches_reference_loop(mode, step):
    rng = np.random.default_rng(5)
    inc = rng.normal(scale=2 * step, size=300)
    inc[::7] = 0.5 * step  # exact half steps: ties on a power-of-two grid
    start = 1.3 * step
    s = rounding.accumulate(inc, step=step, mode=mode, start=start)
    assert s.dtype == np.float64 and s.shape == (300,)
    np.testing.assert_array_equal(s, accumulate_reference(inc, step, start, mode))


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_accumulate_start_rounded_with_the_same_mode(mode):
    s = rounding.accumulate(np.zeros(1), step=1.0, mode=mode, start=0.5)
    assert s[0] == decimal_round(0.5, mode)


def test_accumulate_stochastic_reproducible_and_float32_increments():
    inc = np.full(500, 0.003, dtype=np.float32)
    a = rounding.accumulate(inc, step=2**-8, mode="stochastic", rng=3)
    np.testing.assert_array_equal(a, rounding.accumulate(inc, step=2**-8, mode="stochastic", rng=3))
    assert not np.array_equal(a, rounding.accumulate(inc, step=2**-8, mode="stochastic", rng=4))
    assert a.dtype == np.float64


def test_accumulate_empty_increments():
    s = rounding.accumulate(np.zeros(0), step=1.0)
    assert s.shape == (0,) and s.dtype == np.float64
