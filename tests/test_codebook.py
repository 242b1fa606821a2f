"""Tests of qref.codebook against independent calculations.

* hard assignment against a brute-force argmin over the full n x k distance matrix;
* soft assignment against the softmax formula written out directly;
* the T -> 0 limit of soft quantization against hard quantization;
* random quantization's unbiasedness by Monte Carlo, with a bound in standard errors;
* the uniform codebook against qref.rounding (nearest and stochastic rounding on a grid).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qref import codebook as cbm
from qref import rounding


def brute_force_nearest(x, codebook):
    """Index of the nearest codeword from the full distance matrix; ties to the lower value,
    then to the first occurrence."""
    x = np.asarray(x, dtype=np.float64).ravel()
    cb = np.asarray(codebook, dtype=np.float64)
    d = np.abs(x[:, None] - cb[None, :])  # [n, k]
    out = np.empty(x.size, dtype=np.int64)
    for n in range(x.size):
        cand = np.flatnonzero(d[n] == d[n].min())
        out[n] = cand[np.lexsort((cand, cb[cand]))[0]]  # smallest value, then smallest index
    return out


# --------------------------------------------------------------------------- hard_quantize


@pytest.mark.parametrize("k", [1, 2, 7, 64, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_matches_brute_force(k, dtype):
    rng = np.random.default_rng(k)
    cb = rng.standard_normal(k)  # unsorted
    x = (2.0 * rng.standard_normal((20, 25))).astype(dtype)
    idx, val = cbm.hard_quantize(x, cb)
    assert idx.shape == x.shape and val.shape == x.shape and val.dtype == x.dtype
    np.testing.assert_array_equal(idx.ravel(), brute_force_nearest(x, cb))
    np.testing.assert_array_equal(val, cb[idx].astype(dtype))


# multiples of 2**-10 below 2**20 in magnitude: every difference is exact in float64, so the
# brute force is exact too and exact ties (which hypothesis finds) are real ties
dyadic = st.integers(min_value=-(2**30), max_value=2**30).map(lambda n: n * 2.0**-10)


@settings(max_examples=300, deadline=None)
@given(x=st.lists(dyadic, min_size=0, max_size=30), cb=st.lists(dyadic, min_size=1, max_size=12))
def test_hard_matches_brute_force_property(x, cb):
    idx, _ = cbm.hard_quantize(np.array(x, dtype=np.float64), np.array(cb))
    np.testing.assert_array_equal(idx, brute_force_nearest(x, cb))


def test_hard_ties_go_to_lower_codeword():
    cb = np.array([1.0, -1.0, 0.0, 0.5])
    x = np.array([-0.5, 0.25, 0.75, -0.5000001, 0.2500001])
    _, val = cbm.hard_quantize(x, cb)
    np.testing.assert_array_equal(val, [-1.0, 0.0, 0.5, -1.0, 0.5])


def test_hard_repeated_codewords_report_first_occurrence():
    idx, val = cbm.hard_quantize(np.array([0.1, 2.0, -3.0]), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(idx, [1, 0, 1])
    np.testing.assert_array_equal(val, [0.0, 1.0, 0.0])


def test_hard_on_integer_grid_is_round_half_down():
    x = np.random.default_rng(0).uniform(-7.9, 7.9, 10_000)
    x[:16] = np.arange(-7.5, 8.5)  # exact ties
    _, val = cbm.hard_quantize(x, np.arange(-8.0, 9.0))
    np.testing.assert_array_equal(val, rounding.round(x, mode="half_down"))


def test_hard_clips_outside_range_and_keeps_0d_and_empty():
    _, val = cbm.hard_quantize(np.array([-100.0, 100.0]), [0.0, 1.0])
    np.testing.assert_array_equal(val, [0.0, 1.0])
    # beyond the range the end codeword wins even when the float distances round equal
    idx, _ = cbm.hard_quantize(np.array([1.0]), [0.0, 1e-196])
    np.testing.assert_array_equal(idx, [1])
    idx, val = cbm.hard_quantize(np.array(0.7), [0.0, 1.0])
    assert np.shape(idx) == () and float(val) == 1.0
    idx, val = cbm.hard_quantize(np.zeros((0, 3), np.float32), [0.0, 1.0])
    assert idx.shape == (0, 3) and val.dtype == np.float32


@pytest.mark.parametrize("k, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16), (70_000, np.uint32)])
def test_index_dtype_is_smallest_unsigned(k, dtype):
    cb = np.linspace(-1.0, 1.0, k)
    idx, _ = cbm.hard_quantize(np.array([1.0]), cb)
    assert idx.dtype == dtype and idx[0] == k - 1
    idx, _ = cbm.random_quantize(np.array([1.0]), cb, rng=0)
    assert idx.dtype == dtype


def test_inputs_not_modified():
    x = np.array([0.3, -0.6, 2.0])
    cb = np.array([1.0, -1.0, 0.0])
    x0, cb0 = x.copy(), cb.copy()
    cbm.hard_quantize(x, cb)
    cbm.soft_quantize(x, cb, temperature=0.1)
    cbm.random_quantize(x, cb, rng=0)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(cb, cb0)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "codebook, error, match",
    [
        ([], ValueError, "codebook must not be empty"),
        (np.zeros((2, 2)), ValueError, "codebook must be 1-d"),
        (np.float64(1.0), ValueError, "codebook must have at least one dimension"),
        ([0.0, np.nan], ValueError, "codebook must be finite"),
        ([0.0, np.inf], ValueError, "codebook must be finite"),
        (np.array([0, 1]), TypeError, "codebook must have a floating dtype"),
    ],
)
def test_bad_codebook(codebook, error, match):
    x = np.array([0.5])
    for call in (
        lambda: cbm.hard_quantize(x, codebook),
        lambda: cbm.soft_assign(x, codebook, temperature=1.0),
        lambda: cbm.soft_quantize(x, codebook, temperature=1.0),
        lambda: cbm.random_quantize(x, codebook, rng=0),
    ):
        with pytest.raises(error, match=match):
            call()


def test_bad_x():
    with pytest.raises(ValueError, match="x must be finite"):
        cbm.hard_quantize(np.array([0.0, np.nan]), [0.0, 1.0])
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        cbm.soft_quantize(np.array([1, 2]), [0.0, 1.0], temperature=1.0)


@pytest.mark.parametrize("t, error", [(0.0, ValueError), (-1.0, ValueError), (np.nan, ValueError),
                                      (np.inf, ValueError), ("1", TypeError), (None, TypeError)])
def test_bad_temperature(t, error):
    with pytest.raises(error, match="temperature"):
        cbm.soft_assign(np.array([0.5]), [0.0, 1.0], temperature=t)


def test_bad_rng():
    with pytest.raises(TypeError, match="rng"):
        cbm.random_quantize(np.array([0.5]), [0.0, 1.0], rng="seed")


# --------------------------------------------------------------------------- soft assignment


@pytest.mark.parametrize("temperature", [0.01, 0.3, 5.0])
def test_soft_assign_matches_softmax_formula(temperature):
    rng = np.random.default_rng(1)
    cb = np.array([0.4, -1.0, 0.0, 1.5, -0.3])
    x = rng.uniform(-2.0, 2.0, (6, 7))
    logits = -((x[..., None] - cb) ** 2) / temperature
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    p = cbm.soft_assign(x, cb, temperature=temperature)
    assert p.shape == (6, 7, 5)
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(cbm.soft_quantize(x, cb, temperature=temperature), expected @ cb, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_soft_keeps_dtype_and_sums_to_one(dtype):
    x = np.linspace(-3, 3, 50).astype(dtype)
    p = cbm.soft_assign(x, cbm.uniform_codebook(3), temperature=0.05)
    assert p.dtype == dtype and p.shape == (50, 8)
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=-1), 1.0, rtol=2e-3)
    assert cbm.soft_quantize(x, [0.0, 1.0], temperature=1.0).dtype == dtype


def test_soft_tends_to_hard_at_tiny_temperature():
    rng = np.random.default_rng(2)
    cb = rng.standard_normal(9)
    x = rng.uniform(-3.0, 3.0, 5_000)
    _, hard = cbm.hard_quantize(x, cb)
    np.testing.assert_array_equal(cbm.soft_quantize(x, cb, temperature=1e-12), hard)
    # and the approach is monotone in practice: the gap shrinks as T does
    gaps = [np.abs(cbm.soft_quantize(x, cb, temperature=t) - hard).mean() for t in (1.0, 0.1, 0.01, 0.001)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))


def test_soft_exact_tie_splits_evenly_and_large_temperature_is_uniform():
    p = cbm.soft_assign(np.array([0.5]), [0.0, 1.0], temperature=1e-30)
    np.testing.assert_array_equal(p, [[0.5, 0.5]])
    p = cbm.soft_assign(np.array([0.3, 2.0]), [-1.0, 0.0, 1.0], temperature=1e12)
    np.testing.assert_allclose(p, 1.0 / 3.0, rtol=1e-9)


@pytest.mark.parametrize("temperature", [1e-300, 1e-3, 1.0, 1e300])
def test_soft_large_magnitudes_do_not_overflow(temperature):
    # pytest turns numpy's RuntimeWarnings into errors, so an overflow would fail here
    x = np.array([1e300, -1e300, 1.7e308, -1.7e308, 1e6, 0.0])
    cb = np.array([-1.0, 0.0, 1.0])
    p = cbm.soft_assign(x, cb, temperature=temperature)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-14)
    q = cbm.soft_quantize(x, cb, temperature=temperature)
    assert np.isfinite(q).all() and (np.abs(q) <= 1.0).all()
    if temperature <= 1e-3:  # far outside the range: all the mass on the end codeword
        np.testing.assert_array_equal(q[:5], [1.0, -1.0, 1.0, -1.0, 1.0])
    x32 = np.array([3e38, -3e38], dtype=np.float32)
    assert np.isfinite(cbm.soft_assign(x32, cb, temperature=temperature)).all()


# --------------------------------------------------------------------------- random quantization


def test_random_quantize_is_unbiased_monte_carlo():
    cb = np.array([1.0, -0.5, 0.0, 0.125, 0.25, -2.0])  # non-uniform, unsorted
    xs = np.array([-1.7, -0.3, 0.01, 0.2, 0.6, 0.999, 0.125])
    n = 40_000
    _, v = cbm.random_quantize(np.repeat(xs[:, None], n, axis=1), cb, rng=123)
    u = np.sort(cb)
    for x, row in zip(xs, v):
        i = np.searchsorted(u, x, side="right") - 1
        a, b = u[i], u[min(i + 1, u.size - 1)]
        assert set(np.unique(row)) <= {a, b}  # only the two neighbours
        sigma = np.sqrt((x - a) * (b - x) / n)  # standard error of the mean
        assert abs(row.mean() - x) <= 5 * sigma + 1e-12
        # the empirical variance matches (x - a)(b - x)
        np.testing.assert_allclose(row.var(), (x - a) * (b - x), rtol=0.05, atol=1e-12)


def test_random_quantize_clips_and_hits_codewords_exactly():
    cb = [0.0, 0.25, 1.0]
    _, v = cbm.random_quantize(np.array([-5.0, 7.0, 0.0, 0.25, 1.0] * 100), cb, rng=0)
    np.testing.assert_array_equal(v.reshape(100, 5), np.tile([0.0, 1.0, 0.0, 0.25, 1.0], (100, 1)))
    idx, v = cbm.random_quantize(np.array([-3.0, 0.4, 9.0]), [0.5], rng=0)
    np.testing.assert_array_equal(idx, [0, 0, 0])
    np.testing.assert_array_equal(v, [0.5, 0.5, 0.5])


def test_random_quantize_on_uniform_grid_is_stochastic_rounding():
    # same seed, same uniforms: identical to step * round_stochastic(x / step) on dyadic inputs
    step = 2.0**-4
    x = np.random.default_rng(5).integers(-255, 256, 20_000) * 2.0**-10
    _, v = cbm.random_quantize(x, np.arange(-32, 33) * step, rng=7)
    np.testing.assert_array_equal(v, step * rounding.round_stochastic(x / step, rng=7))


def test_random_quantize_reproducible_and_shapes():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    a = cbm.random_quantize(x, cbm.uniform_codebook(2), rng=3)
    b = cbm.random_quantize(x, cbm.uniform_codebook(2), rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].dtype == np.float32 and a[1].shape == (3, 4)


# --------------------------------------------------------------------------- fixed codebooks


def test_uniform_codebook():
    c = cbm.uniform_codebook(3, -1.0, 2.5)
    assert c.shape == (8,) and c[0] == -1.0 and c[-1] == 2.5
    np.testing.assert_allclose(np.diff(c), 0.5)
    with pytest.raises(ValueError, match="lo must be < hi"):
        cbm.uniform_codebook(2, 1.0, 1.0)
    with pytest.raises(ValueError, match="bits"):
        cbm.uniform_codebook(0)
    with pytest.raises(TypeError, match="bits"):
        cbm.uniform_codebook(2.0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_power_of_two_codebook(bits):
    c = cbm.power_of_two_codebook(bits, max_exponent=1)
    assert c.size == 2**bits - 1 and c.max() == 2.0 and 0.0 in c
    np.testing.assert_array_equal(c, -c[::-1])  # symmetric
    nz = np.abs(c[c != 0])
    np.testing.assert_array_equal(np.log2(nz), np.round(np.log2(nz)))  # exact powers of two
    assert np.all(np.diff(c) > 0)


def test_power_of_two_codebook_errors():
    with pytest.raises(ValueError, match="bits"):
        cbm.power_of_two_codebook(1)
    with pytest.raises(TypeError, match="max_exponent"):
        cbm.power_of_two_codebook(3, max_exponent=0.5)
    with pytest.raises(ValueError, match="max_exponent"):
        cbm.power_of_two_codebook(3, max_exponent=100)
