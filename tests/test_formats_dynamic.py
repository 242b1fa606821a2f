"""Tests of dynamic fixed point and Flexpoint in qref.formats.

Independent references used here: exact rational arithmetic (``fractions.Fraction``) for
"covers without overflow and is minimal"; brute-force searches over every fractional length
or exponent; ``statistics.pstdev`` for the Autoflex prediction; ``to_fixed_point`` (a
different code path) for the equivalences; numbers worked out by hand in the comments.
"""

import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qref import formats
from qref.formats import (
    DFP_RULES,
    FLEX16_5,
    MAX_FRAC_BITS,
    Autoflex,
    DynamicFixedPoint,
    FlexpointFormat,
    dfp_frac_bits,
    flexpoint_decode,
    flexpoint_encode,
    flexpoint_exponent,
    overflow_rate,
    to_dynamic_fixed_point,
    to_fixed_point,
    to_flexpoint,
)


def covers(x, word_bits, fl):
    """No element of x lies outside [-2**(B-1), 2**(B-1) - 1] * 2**-fl, in exact rationals."""
    step = Fraction(2) ** -fl
    lo, hi = -(2 ** (word_bits - 1)) * step, (2 ** (word_bits - 1) - 1) * step
    return all(lo <= Fraction(float(v)) <= hi for v in np.ravel(x))


def brute_force_rate(x, word_bits, fl):
    step = 2.0**-fl
    return float(np.mean((x > (2 ** (word_bits - 1) - 1) * step) | (x < -(2 ** (word_bits - 1)) * step)))


# --------------------------------------------------------------------------------------
# dfp_frac_bits
# --------------------------------------------------------------------------------------

arrays = st.lists(st.floats(-1.0, 1.0, allow_nan=False, width=32), min_size=1, max_size=20).filter(
    lambda v: any(a != 0 for a in v)
)


@given(arrays, st.integers(-30, 30), st.integers(2, 32))
def test_chosen_length_covers_and_is_minimal(values, shift, word_bits):
    x = np.ldexp(np.array(values, dtype=np.float64), shift)
    fl = dfp_frac_bits(x, word_bits=word_bits)
    assert covers(x, word_bits, fl)
    assert not covers(x, word_bits, fl + 1)  # one more fraction bit: something overflows
    assert overflow_rate(x, word_bits=word_bits, frac_bits=fl) == 0.0
    assert overflow_rate(x, word_bits=word_bits, frac_bits=fl + 1) > 0.0


def test_chosen_length_by_hand():
    # 8 bits: codes [-128, 127]. 1.0 needs 127 * 2**-fl >= 1 -> fl = 6 (2**-7 * 127 < 1).
    assert dfp_frac_bits(np.array([1.0]), word_bits=8) == 6
    # -1.0 fits -128 * 2**-7 exactly: the negative side has one more code.
    assert dfp_frac_bits(np.array([-1.0]), word_bits=8) == 7
    assert dfp_frac_bits(np.array([127 / 128]), word_bits=8) == 7
    assert dfp_frac_bits(np.array([0.75]), word_bits=2) == 0   # codes [-2, 1]: 1 * 2**0 >= 0.75
    # large values: negative fractional lengths (steps of 2**3 = 8 here)
    assert dfp_frac_bits(np.array([1000.0]), word_bits=8) == -3  # 127 * 8 = 1016 >= 1000
    # tiny values: FL beyond the word (4 bits, 0.013 <= 7 * 2**-9 = 0.0137)
    assert dfp_frac_bits(np.array([0.013]), word_bits=4) == 9


def test_ristretto_rule():
    # Gysel et al.: IL = ceil(log2 max|x|) + 1 (sign included), FL = B - IL.
    rng = np.random.default_rng(1)
    for _ in range(200):
        x = rng.standard_normal(50) * 10.0 ** rng.uniform(-6, 6)
        m = np.abs(x).max()
        expected = 8 - (int(np.ceil(np.log2(m))) + 1)  # no ties: m is not a power of two
        got = dfp_frac_bits(x, word_bits=8, rule="ristretto")
        assert got == expected
        assert got - dfp_frac_bits(x, word_bits=8) in (0, 1)
    # at a power of two the largest code falls one step short: Ristretto's FL saturates it
    x = np.array([0.25, -0.1])
    assert dfp_frac_bits(x, word_bits=8, rule="ristretto") == 8 - (-2 + 1) == 9
    assert overflow_rate(x, word_bits=8, frac_bits=9) == 0.5
    assert dfp_frac_bits(x, word_bits=8) == 8


def test_extreme_magnitudes_clip_to_the_limit():
    assert dfp_frac_bits(np.array([1e-250]), word_bits=8) == MAX_FRAC_BITS
    assert dfp_frac_bits(np.array([1e250]), word_bits=8) == -MAX_FRAC_BITS
    x_hat, fl = to_dynamic_fixed_point(np.array([1e-250, 0.0]), word_bits=8)
    assert fl == MAX_FRAC_BITS and np.all(x_hat == 0)


def test_all_zero_needs_an_explicit_length():
    with pytest.raises(ValueError, match="all zeros"):
        dfp_frac_bits(np.zeros(5), word_bits=8)
    with pytest.raises(ValueError, match="all zeros"):
        to_dynamic_fixed_point(np.zeros(5), word_bits=8)
    x_hat, fl = to_dynamic_fixed_point(np.zeros(5), word_bits=8, frac_bits=3)
    assert fl == 3 and np.all(x_hat == 0)


# --------------------------------------------------------------------------------------
# overflow_rate and to_dynamic_fixed_point
# --------------------------------------------------------------------------------------


def test_overflow_rate_by_hand_and_by_brute_force():
    x = np.array([0.5, 0.99, 1.0, -1.0, -1.01, 3.0])
    # 8 bits, FL = 7: [-1, 127/128]; 0.99 > 0.9921875? no. 1.0, -1.01, 3.0 overflow.
    assert overflow_rate(x, word_bits=8, frac_bits=7) == 3 / 6
    rng = np.random.default_rng(2)
    y = rng.standard_normal(10_000)
    for fl in range(-3, 12):
        assert overflow_rate(y, word_bits=6, frac_bits=fl) == brute_force_rate(y, 6, fl)
        # "twice the values" at FL is the values at FL + 1 (one integer bit fewer)
        assert overflow_rate(2 * y, word_bits=6, frac_bits=fl) == overflow_rate(y, word_bits=6, frac_bits=fl + 1)


@pytest.mark.parametrize("rounding", ["half_even", "half_away", "floor", "trunc", "stochastic"])
@pytest.mark.parametrize("word_bits", [2, 5, 8, 16])
def test_dfp_equals_fixed_point_for_ordinary_lengths(rounding, word_bits):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(2000) * 4).astype(np.float32)
    for fl in range(word_bits):
        got, used = to_dynamic_fixed_point(x, word_bits=word_bits, frac_bits=fl, rounding=rounding, rng=5)
        ref = to_fixed_point(x, int_bits=word_bits - 1 - fl, frac_bits=fl, rounding=rounding, rng=5)
        assert used == fl and got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)


def test_dfp_values_are_codes_times_the_step():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(5000) * 300
    for fl in (-4, 0, 3, 12):
        x_hat, _ = to_dynamic_fixed_point(x, word_bits=7, frac_bits=fl)
        k = x_hat * 2.0**fl
        assert np.all(k == np.round(k)) and k.min() >= -64 and k.max() <= 63
    # by hand: 4 bits, FL = -2 (step 4, codes [-8, 7]): 5 -> 4, 9 -> 8, 10 -> 8 (tie to even), -1000 -> -32
    x_hat, _ = to_dynamic_fixed_point(np.array([5.0, 9.0, 10.0, -1000.0]), word_bits=4, frac_bits=-2)
    assert x_hat.tolist() == [4.0, 8.0, 8.0, -32.0]


def test_chosen_length_rounds_within_half_a_step():
    rng = np.random.default_rng(5)
    for scale in (1e-4, 1.0, 1e5):
        x = (rng.standard_normal(3000) * scale).astype(np.float32)
        x_hat, fl = to_dynamic_fixed_point(x, word_bits=10)
        err = np.abs(x_hat.astype(np.float64) - x)
        assert err.max() <= 2.0 ** (-fl - 1)  # no saturation: only rounding error


# --------------------------------------------------------------------------------------
# DynamicFixedPoint: the overflow-rate rule of Courbariaux et al.
# --------------------------------------------------------------------------------------


def test_default_max_overflow_rate_is_the_papers():
    assert DynamicFixedPoint(10).max_overflow_rate == 1e-4  # 0.01 %


def test_rising_data_adds_one_integer_bit_per_update():
    base = np.random.default_rng(6).standard_normal(500)
    dfp = DynamicFixedPoint(8, max_overflow_rate=0.0)
    fl0 = dfp.update(base)  # initialised at the covering length; 2x would overflow: stays
    assert fl0 == dfp_frac_bits(base, word_bits=8) and dfp.overflow_rate_ == 0.0
    for t in range(1, 10):
        fl = dfp.update(base * 2.0**t)      # computed with the previous format: overflows
        assert dfp.overflow_rate_ > 0
        assert fl == fl0 - t == dfp_frac_bits(base * 2.0**t, word_bits=8)


def test_falling_data_removes_one_integer_bit_per_update():
    base = np.random.default_rng(7).standard_normal(500)
    dfp = DynamicFixedPoint(8, max_overflow_rate=0.0)
    fl0 = dfp.update(base)
    for t in range(1, 10):
        fl = dfp.update(base * 2.0**-t)
        assert dfp.overflow_rate_ == 0.0
        assert fl == fl0 + t == dfp_frac_bits(base * 2.0**-t, word_bits=8)


def test_slowly_rising_data_is_tracked_with_rare_overflows():
    rng = np.random.default_rng(8)
    dfp = DynamicFixedPoint(8, max_overflow_rate=1e-3)
    rates = []
    for t in range(120):
        x = rng.standard_normal(2000) * 1.05**t
        if t:
            rates.append(overflow_rate(x, word_bits=8, frac_bits=dfp.frac_bits))
        dfp.update(x)
        assert abs(dfp.frac_bits - dfp_frac_bits(x, word_bits=8)) <= 2
    assert np.mean(rates) < 0.01


@pytest.mark.parametrize("rate", [0.0, 1e-4, 1e-2])
def test_steady_state_is_the_largest_length_within_the_rate(rate):
    x = np.random.default_rng(9).standard_normal(20_000)
    # independent: scan every length, keep the largest one whose brute-force rate is allowed
    best = max(fl for fl in range(-10, 30) if brute_force_rate(x, 8, fl) <= rate)
    for start in (-5, 25):
        dfp = DynamicFixedPoint(8, frac_bits=start, max_overflow_rate=rate)
        for _ in range(40):
            dfp.update(x)
        assert dfp.frac_bits == best
        assert dfp.update(x) == best  # and it stays there


def test_zero_tensor_moves_the_point_right_once_initialised():
    dfp = DynamicFixedPoint(8, frac_bits=4)
    assert dfp.update(np.zeros(10)) == 5
    with pytest.raises(ValueError, match="all zeros"):
        DynamicFixedPoint(8).update(np.zeros(10))


def test_quantize_uses_the_current_length_and_does_not_update():
    dfp = DynamicFixedPoint(6, frac_bits=3)
    x = np.array([0.3, 100.0, -0.06], dtype=np.float32)
    got = dfp.quantize(x)
    np.testing.assert_array_equal(got, to_dynamic_fixed_point(x, word_bits=6, frac_bits=3)[0])
    assert got.dtype == np.float32 and dfp.frac_bits == 3 and dfp.n_updates_ == 0
    with pytest.raises(ValueError, match="call update"):
        DynamicFixedPoint(6).quantize(x)


# --------------------------------------------------------------------------------------
# Flexpoint
# --------------------------------------------------------------------------------------


def test_flex16_5_layout():
    f = FLEX16_5
    assert (f.name, f.bits, f.man_bits, f.exp_bits) == ("flex16+5", 16, 16, 5)
    assert (f.qmin, f.qmax) == (np.iinfo(np.int16).min, np.iinfo(np.int16).max)
    assert f.exp_max - f.exp_min + 1 == 32  # a 5-bit exponent: 32 shared exponents
    assert (f.exp_min, f.exp_max) == (-31, 0)
    assert f.max(0) == 32767.0 and f.step(-31) == 2.0**-31
    small = FlexpointFormat(3, 2, exp_bias=1)  # mantissas [-4, 3], exponents [-1, 2]
    assert (small.exp_min, small.exp_max) == (-1, 2)
    assert small.values(2).tolist() == [-16.0, -12.0, -8.0, -4.0, 0.0, 4.0, 8.0, 12.0]


def test_flexpoint_values_are_int16_mantissas_times_two_to_the_exponent():
    rng = np.random.default_rng(10)
    for k in (-31, -20, -8, 0):
        x = (rng.standard_normal(5000) * 2.0 ** (k + 14)).astype(np.float32)
        x[:3] = [1e9, -1e9, 0.0]  # saturation both ways
        x_hat = to_flexpoint(x, exponent=k)
        m = x_hat.astype(np.float64) * 2.0**-k
        assert np.all(m == np.round(m)) and m.min() >= -32768 and m.max() <= 32767
        assert m[0] == 32767 and m[1] == -32768
        codes = flexpoint_encode(x, exponent=k)
        assert codes.dtype == np.int16
        np.testing.assert_array_equal(codes, m)
        np.testing.assert_array_equal(flexpoint_decode(codes, exponent=k), x_hat)


@pytest.mark.parametrize("rounding", ["half_even", "stochastic"])
def test_flexpoint_with_a_fixed_exponent_is_fixed_point(rounding):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(3000) * 50
    for k in range(-31, 1):
        got = to_flexpoint(x, exponent=k, rounding=rounding, rng=3)
        dfp, _ = to_dynamic_fixed_point(x, word_bits=16, frac_bits=-k, rounding=rounding, rng=3)
        np.testing.assert_array_equal(got, dfp)
        if -15 <= k <= 0:  # a Q(m.n) format with n = -k, m = 15 - n
            ref = to_fixed_point(x, int_bits=15 + k, frac_bits=-k, rounding=rounding, rng=3)
            np.testing.assert_array_equal(got, ref)


def test_flexpoint_exponent():
    x = np.array([0.3, -2.5])
    k = flexpoint_exponent(x)
    assert k == -dfp_frac_bits(x, word_bits=16) == -13  # 2.5 <= 32767 * 2**-13 = 3.99988
    assert covers(x, 16, -k) and not covers(x, 16, -k + 1)
    assert flexpoint_exponent(np.array([1e-9])) == FLEX16_5.exp_min   # clipped below
    assert flexpoint_exponent(np.array([1e9])) == FLEX16_5.exp_max    # clipped above (saturates)
    assert flexpoint_exponent(np.zeros(3)) == FLEX16_5.exp_min


# --------------------------------------------------------------------------------------
# Autoflex
# --------------------------------------------------------------------------------------


def smallest_covering_exponent(chi, fmt=FLEX16_5):
    """Brute force: the smallest exponent whose largest value holds chi (clipped to the range)."""
    for k in range(fmt.exp_min, fmt.exp_max + 1):
        if fmt.qmax * 2.0**k >= chi:
            return k
    return fmt.exp_max


def test_autoflex_prediction_matches_an_independent_calculation():
    af = Autoflex(window=4, exponent=-10)
    maxima = [3.0, 5.0, 4.0, 6.0, 2.0, 2.5, 40.0, 30.0, 1.0]  # 5.0 and 40.0 overflow
    window, overflows = [], []
    for m in maxima:
        k = af.exponent
        code = round(m * 2.0**-k)  # the largest mantissa the hardware sees (no ties here)
        over = code > 32767
        gamma = min(code, 32767) * 2.0**k
        window = [2 * gamma] if over else (window + [gamma])[-4:]
        chi = max(window) + 3 * statistics.pstdev(window) + (100 / 2**15) * 2.0 ** (15 + k)
        got = af.update(np.array([m, -m / 3, 0.1]))
        overflows.append(af.overflow_)
        assert af.overflow_ == over
        assert af.maxima == tuple(window)
        assert af.predicted_max_ == pytest.approx(chi, rel=1e-12)
        assert got == smallest_covering_exponent(chi)
    assert overflows == [False, True, False, False, False, False, True, False, False]


def test_autoflex_never_overflows_on_slowly_growing_tensors():
    rng = np.random.default_rng(12)
    af = Autoflex()
    for t in range(300):
        x = rng.standard_normal(1000) * 1e-3 * 1.02**t  # grows 2 % per step, 380-fold overall
        af.update(x)
        assert not af.overflow_
    assert af.overflows_ == 0
    assert af.exponent - flexpoint_exponent(x) in (0, 1, 2)  # and keeps the bits in use


def test_autoflex_adapts_down():
    rng = np.random.default_rng(13)
    af = Autoflex()
    first = af.update(rng.standard_normal(1000))
    for t in range(1, 300):
        x = rng.standard_normal(1000) * 0.97**t  # shrinks 9000-fold
        af.update(x)
    assert af.overflows_ == 0
    assert af.exponent <= first - 12
    assert af.exponent - flexpoint_exponent(x) in (0, 1, 2)


def test_autoflex_overflow_resets_the_history_and_grows_the_exponent():
    rng = np.random.default_rng(14)
    af = Autoflex()
    for _ in range(20):
        af.update(rng.standard_normal(1000))
    k = af.exponent
    x = rng.standard_normal(1000) * 10  # a sudden jump
    af.update(x)
    assert af.overflow_ and af.overflows_ == 1
    saturated = max(min(round(x.max() * 2.0**-k), 32767), -max(round(x.min() * 2.0**-k), -32768))
    assert saturated in (32767, 32768)
    assert af.maxima == (2 * saturated * 2.0**k,)  # the saturated maximum, doubled
    assert af.exponent >= k + 1
    for _ in range(20):
        af.update(rng.standard_normal(1000) * 10)
    assert af.overflows_ <= 3 and not af.overflow_


def test_autoflex_quantize_and_initial_state():
    af = Autoflex()
    with pytest.raises(ValueError, match="call update"):
        af.quantize(np.ones(3))
    x = np.array([0.7, -0.2], dtype=np.float32)
    k = af.update(x)
    got = af.quantize(x)
    np.testing.assert_array_equal(got, to_flexpoint(x, exponent=k))
    assert got.dtype == np.float32


# --------------------------------------------------------------------------------------
# Bad inputs, and inputs are not modified
# --------------------------------------------------------------------------------------

X = np.array([0.5, -0.25])

BAD = [
    (lambda: dfp_frac_bits(X, word_bits=1), ValueError, r"word_bits must be an integer in \[2, 32\], got 1"),
    (lambda: dfp_frac_bits(X, word_bits=8.0), TypeError, "word_bits must be an integer"),
    (lambda: dfp_frac_bits(X, word_bits=8, rule="max"), ValueError, "rule must be one of"),
    (lambda: dfp_frac_bits(np.array([1, 2]), word_bits=8), TypeError, "x must have a floating dtype"),
    (lambda: dfp_frac_bits(np.array([]), word_bits=8), ValueError, "x must not be empty"),
    (lambda: dfp_frac_bits(np.array([np.nan]), word_bits=8), ValueError, "x must be finite"),
    (lambda: overflow_rate(X, word_bits=8, frac_bits=2.5), TypeError, "frac_bits must be an integer"),
    (lambda: overflow_rate(X, word_bits=8, frac_bits=10**4), ValueError, r"frac_bits must be an integer in \[-512, 512\]"),
    (lambda: to_dynamic_fixed_point(X, word_bits=8, rounding="up"), ValueError, "rounding must be one of"),
    (lambda: to_dynamic_fixed_point(X, word_bits=8, frac_bits=3, rule="x"), ValueError, "rule must be one of"),
    (lambda: to_dynamic_fixed_point(np.array([np.inf]), word_bits=8, frac_bits=3), ValueError, "x must be finite"),
    (lambda: DynamicFixedPoint(8, max_overflow_rate=1.0), ValueError, r"max_overflow_rate must be in \[0, 1\)"),
    (lambda: DynamicFixedPoint(8, max_overflow_rate=-0.1), ValueError, "max_overflow_rate"),
    (lambda: DynamicFixedPoint(33), ValueError, "word_bits must be an integer in"),
    (lambda: DynamicFixedPoint(8).update(np.array([])), ValueError, "x must not be empty"),
    (lambda: FlexpointFormat(1, 5), ValueError, r"man_bits must be an integer in \[2, 32\]"),
    (lambda: FlexpointFormat(16, 0), ValueError, "exp_bits must be an integer"),
    (lambda: FlexpointFormat(16, 5, exp_bias=10**4), ValueError, "exp_bias=10000 gives exponents"),
    (lambda: FlexpointFormat(16, 5, exp_bias=1.5), TypeError, "exp_bias must be an integer"),
    (lambda: to_flexpoint(X, exponent=1), ValueError, r"exponent must be an integer in \[-31, 0\] for flex16\+5, got 1"),
    (lambda: to_flexpoint(X, exponent=-3, fmt=formats.FP16), TypeError, "fmt must be a FlexpointFormat"),
    (lambda: flexpoint_encode(X, exponent=-3, rounding="nope"), ValueError, "rounding must be one of"),
    (lambda: flexpoint_decode(np.array([0.5]), exponent=-3), TypeError, "mantissa must have an integer dtype"),
    (lambda: flexpoint_decode(np.array([40000]), exponent=-3), ValueError, r"mantissa must hold integers in \[-32768, 32767\]"),
    (lambda: flexpoint_decode(np.array([1]), exponent=-3, dtype=np.int32), TypeError, "dtype must be a floating dtype"),
    (lambda: flexpoint_exponent(np.array([]), fmt=FLEX16_5), ValueError, "x must not be empty"),
    (lambda: Autoflex(window=0), ValueError, "window must be a positive integer"),
    (lambda: Autoflex(num_std=-1.0), ValueError, "num_std must be >= 0"),
    (lambda: Autoflex(headroom=0.5), ValueError, "headroom must be >= 1"),
    (lambda: Autoflex(offset=-1.0), ValueError, "offset must be >= 0"),
    (lambda: Autoflex(exponent=5), ValueError, "exponent must be an integer in"),
    (lambda: Autoflex(fmt="flex16+5"), TypeError, "fmt must be a FlexpointFormat"),
    (lambda: Autoflex().update(np.array([1, 2])), TypeError, "x must have a floating dtype"),
]


@pytest.mark.parametrize(("call", "exc", "match"), BAD)
def test_bad_inputs_get_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inputs_are_not_modified():
    rng = np.random.default_rng(15)
    x = (rng.standard_normal(300) * 5).astype(np.float32)
    x[0] = 1e6  # forces saturation somewhere
    keep = x.copy()
    x.setflags(write=False)  # any in-place write raises
    dfp_frac_bits(x, word_bits=8)
    dfp_frac_bits(x, word_bits=8, rule="ristretto")
    overflow_rate(x, word_bits=8, frac_bits=2)
    to_dynamic_fixed_point(x, word_bits=8)
    to_dynamic_fixed_point(x, word_bits=8, frac_bits=-3, rounding="stochastic", rng=0)
    dfp = DynamicFixedPoint(8)
    dfp.update(x)
    dfp.quantize(x)
    flexpoint_exponent(x)
    to_flexpoint(x, exponent=-5)
    codes = flexpoint_encode(x, exponent=-5)
    codes_keep = codes.copy()
    codes.setflags(write=False)
    flexpoint_decode(codes, exponent=-5)
    af = Autoflex()
    af.update(x)
    af.quantize(x)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(codes, codes_keep)


def test_scalars_and_shapes():
    x_hat, fl = to_dynamic_fixed_point(0.3, word_bits=8)
    assert np.ndim(x_hat) == 0 and fl == 8  # 0.3 <= 127 / 256 = 0.496
    y = np.ones((2, 3, 4), dtype=np.float64) * 0.1
    assert to_flexpoint(y, exponent=-16).shape == (2, 3, 4)
    assert flexpoint_encode(y, exponent=-16).shape == (2, 3, 4)
    assert DFP_RULES == ("exact", "ristretto")
    assert math.isclose(FLEX16_5.max(-31), 32767 * 2.0**-31)
