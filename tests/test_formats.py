"""Tests of qref.formats against published extremes and independent implementations.

Independent references used here: numpy's own float16/float32 casts (round to nearest
even, IEEE 754), numpy's decoding of every float16 bit pattern, the usual bit trick for
float32 -> bfloat16 (round to nearest even on the upper 16 bits), and a brute-force
nearest-value search over ``values()``.
"""

import dataclasses

import numpy as np
import pytest

from qref.formats import (
    BF16,
    FORMATS,
    FP8_E4M3,
    FP8_E5M2,
    FP16,
    FP32,
    FixedPointFormat,
    FloatFormat,
    fixed_point_values,
    to_fixed_point,
    to_float_format,
)


def random_float32(n, rng):
    """Finite float32 numbers with uniformly random bit patterns (all binades, subnormals)."""
    bits = rng.integers(0, 2**32, size=4 * n, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)][:n]


def midpoints_and_neighbours(values):
    """Exact midpoints between neighbouring values of a format, and the float32 next to them."""
    v = values.astype(np.float32)
    mid = ((values[:-1] + values[1:]) / 2).astype(np.float32)  # exact: needs one more bit
    assert np.array_equal(mid.astype(np.float64), (values[:-1] + values[1:]) / 2)
    return np.concatenate([v, mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))])


# --------------------------------------------------------------------------------------
# Published extremes
# --------------------------------------------------------------------------------------


def test_fp16_extremes_match_ieee_and_numpy():
    fi = np.finfo(np.float16)
    assert FP16.bits == 16 and FP16.bias == 15
    assert FP16.max == 65504.0 == float(fi.max)
    assert FP16.min_normal == 2.0**-14 == float(fi.smallest_normal)
    assert FP16.min_subnormal == 2.0**-24 == float(fi.smallest_subnormal)
    assert FP16.eps == 2.0**-10 == float(fi.eps)


def test_fp32_extremes_match_numpy():
    fi = np.finfo(np.float32)
    assert FP32.max == float(fi.max)
    assert FP32.min_normal == float(fi.smallest_normal) == 2.0**-126
    assert FP32.min_subnormal == float(fi.smallest_subnormal) == 2.0**-149
    assert FP32.eps == float(fi.eps)


def test_bfloat16_extremes():
    # Kalamkar et al. 2019: 8 exponent bits (the range of FP32), 7 mantissa bits.
    assert BF16.bits == 16 and BF16.bias == 127
    assert BF16.max == (2 - 2.0**-7) * 2.0**127
    assert BF16.max == pytest.approx(3.3895e38, rel=1e-4)
    assert BF16.min_normal == 2.0**-126 == FP32.min_normal
    assert BF16.min_subnormal == 2.0**-133
    assert BF16.eps == 2.0**-7


def test_fp8_extremes_micikevicius_table1():
    # Micikevicius et al. 2022, Table 1.
    assert FP8_E4M3.bias == 7 and FP8_E5M2.bias == 15
    assert FP8_E4M3.max == 448.0 == 1.75 * 2**8
    assert FP8_E4M3.min_normal == 2.0**-6
    assert FP8_E4M3.max_subnormal == 0.875 * 2.0**-6
    assert FP8_E4M3.min_subnormal == 2.0**-9
    assert FP8_E5M2.max == 57344.0 == 1.75 * 2**15
    assert FP8_E5M2.min_normal == 2.0**-14
    assert FP8_E5M2.max_subnormal == 0.75 * 2.0**-14
    assert FP8_E5M2.min_subnormal == 2.0**-16


def test_e4m3_ieee_variant_would_stop_at_240():
    assert FloatFormat(4, 3).max == 240.0


def test_formats_dict():
    assert set(FORMATS) == {"fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2"}
    assert FORMATS["fp8_e4m3"] is FP8_E4M3
    assert all(name == fmt.name for name, fmt in FORMATS.items())


# --------------------------------------------------------------------------------------
# values(): enumeration
# --------------------------------------------------------------------------------------


def test_fp16_values_equal_every_finite_float16_decoded_by_numpy():
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = patterns[np.isfinite(patterns)]
    assert finite.size == 63488  # 2**16 - 2 * 2**10 finite bit patterns (+0 and -0 included)
    expected = np.unique(finite.astype(np.float64))
    got = FP16.values()
    assert got.size == 63487  # -0 and +0 are one value
    np.testing.assert_array_equal(got, expected)
    assert np.signbit(got).sum() == got.size // 2  # zero is +0


@pytest.mark.parametrize(
    ("fmt", "n_values"),
    [(FP8_E4M3, 2 * 127 - 1), (FP8_E5M2, 2 * 124 - 1), (BF16, 2 * (2**15 - 128) - 1)],
)
def test_values_count_extremes_and_symmetry(fmt, n_values):
    v = fmt.values()
    assert v.size == n_values
    assert np.all(np.diff(v) > 0)
    np.testing.assert_array_equal(v, -v[::-1])
    assert v[-1] == fmt.max
    assert v[v > 0][0] == fmt.min_subnormal
    assert fmt.min_normal in v


def test_values_of_bfloat16_are_float32_with_zero_low_half():
    v = BF16.values().astype(np.float32)
    assert np.all(v.view(np.uint32) & 0xFFFF == 0)


def test_small_formats_by_hand():
    # E2M1 without specials (the 4-bit float of the OCP MX formats): 0, 0.5, 1, 1.5, 2, 3, 4, 6
    v = FloatFormat(2, 1, inf_nan="none").values()
    assert v[v >= 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    # no subnormals: the gap between 0 and the smallest normal opens up
    ftz = FloatFormat(4, 3, inf_nan="fn", subnormals=False)
    assert ftz.min_subnormal is None and ftz.min_positive == ftz.min_normal == 2.0**-6
    assert ftz.values()[ftz.values() > 0][0] == 2.0**-6
    # zero mantissa bits: powers of two
    p2 = FloatFormat(3, 0, inf_nan="none")
    assert p2.values()[p2.values() > 0].tolist() == [2.0**k for k in range(-2, 5)]
    assert p2.min_subnormal is None
    # FN with no mantissa bits: the all-ones exponent is the NaN pattern, so the top binade is lost
    p2fn = FloatFormat(3, 0, inf_nan="fn")
    assert p2fn.max == 8.0 and p2fn.values()[-1] == 8.0


def test_custom_bias():
    fmt = FloatFormat(4, 3, bias=11, inf_nan="fn")
    assert fmt.max == 448.0 / 16 and fmt.min_subnormal == 2.0**-13


def test_values_refuses_huge_formats():
    with pytest.raises(ValueError, match="fp32 has 32 bits"):
        FP32.values()


# --------------------------------------------------------------------------------------
# to_float_format: rounding
# --------------------------------------------------------------------------------------


def assert_same_float16_bits(got32, x):
    """``got32`` (float32) holds exactly the float16 numpy gives for ``x``, sign of zero included."""
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16)
    got16 = got32.astype(np.float16)
    assert np.array_equal(got16.astype(np.float32), got32, equal_nan=True)  # representable
    np.testing.assert_array_equal(got16.view(np.uint16), expected.view(np.uint16))


def test_fp16_rounding_matches_numpy_on_random_float32():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        random_float32(200_000, rng),  # every binade: overflow, normal, subnormal, underflow
        rng.standard_normal(50_000).astype(np.float32),
        (rng.standard_normal(50_000) * 2.0**-20).astype(np.float32),  # fp16 subnormal range
    ])
    assert_same_float16_bits(to_float_format(x, FP16, saturate=False), x)


def test_fp16_rounding_matches_numpy_at_ties():
    x = midpoints_and_neighbours(FP16.values())
    x = np.concatenate([x, np.float32([65519.0, 65520.0, 65536.0, 2.0**-25, 3 * 2.0**-26])])
    assert_same_float16_bits(to_float_format(x, FP16, saturate=False), x)
    assert_same_float16_bits(to_float_format(-x, FP16, saturate=False), -x)


def test_fp16_saturation():
    x = np.float32([65519.0, 65520.0, 1e6, -1e30])
    np.testing.assert_array_equal(to_float_format(x, FP16), [65504.0, 65504.0, 65504.0, -65504.0])
    np.testing.assert_array_equal(to_float_format(x, FP16, saturate=False), [65504.0, np.inf, np.inf, -np.inf])


def bfloat16_bit_trick(x):
    """float32 -> bfloat16 -> float32 by rounding the bit pattern to nearest even on 16 bits."""
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def test_bfloat16_rounding_matches_bit_trick():
    rng = np.random.default_rng(1)
    x = np.concatenate([random_float32(200_000, rng), rng.standard_normal(50_000).astype(np.float32)])
    ties = (x.view(np.uint32) & 0xFFFF0000) | 0x8000  # exactly half-way between two bfloat16
    x = np.concatenate([x, ties.view(np.float32)])
    x = x[np.isfinite(x)]
    got = to_float_format(x, BF16, saturate=False)
    np.testing.assert_array_equal(got.view(np.uint32), bfloat16_bit_trick(x).view(np.uint32))


def test_fp32_rounding_of_float64_matches_numpy():
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2**63, size=100_000, dtype=np.uint64) | (
        rng.integers(0, 2, size=100_000, dtype=np.uint64) << np.uint64(63)
    )
    x = bits.view(np.float64)
    x = x[np.isfinite(x)]
    x = np.concatenate([x, rng.standard_normal(10_000), rng.standard_normal(10_000) * 2.0**-135])
    with np.errstate(over="ignore"):
        expected = x.astype(np.float32)
    got = to_float_format(x, FP32, saturate=False)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.astype(np.float32).view(np.uint32), expected.view(np.uint32))


def nearest_by_search(x, fmt):
    """Brute-force reference: nearest of fmt.values(), ties to the even bit pattern, saturating.

    Among the non-negative values in ascending order, index i is the bit pattern i, so an even
    index is an even mantissa (the IEEE tie rule). With no mantissa bits every significand is
    1 and "even" is undefined; qref.formats then rounds ties up in magnitude, except the tie
    between 0 and the smallest value, which goes to 0 (documented).
    """
    pos = fmt.values()
    pos = pos[pos >= 0]
    a = np.minimum(np.abs(x.astype(np.float64)), fmt.max)
    hi = np.clip(np.searchsorted(pos, a), 1, pos.size - 1)
    lo = hi - 1
    d_lo, d_hi = a - pos[lo], pos[hi] - a
    tie = np.where(lo == 0, lo, hi) if fmt.man_bits == 0 else np.where(lo % 2 == 0, lo, hi)
    pick = np.where(d_lo < d_hi, lo, np.where(d_hi < d_lo, hi, tie))
    return np.copysign(pos[pick], x)


@pytest.mark.parametrize(
    "fmt",
    [FP8_E4M3, FP8_E5M2, FloatFormat(2, 1, inf_nan="none"), FloatFormat(3, 2, inf_nan="none"),
     FloatFormat(4, 3, bias=11, inf_nan="fn"), FloatFormat(5, 2, subnormals=True),
     FloatFormat(3, 0, inf_nan="fn")],
    ids=lambda f: f.name,
)
def test_small_formats_match_brute_force(fmt):
    rng = np.random.default_rng(3)
    scale = np.ldexp(1.0, rng.integers(-22, 20, size=100_000))
    x = np.concatenate([rng.standard_normal(100_000) * scale, midpoints_and_neighbours(fmt.values())])
    np.testing.assert_array_equal(to_float_format(x, fmt), nearest_by_search(x, fmt))


def test_e4m3_overflow_without_saturation_is_nan():
    x = np.array([448.0, 463.9, 464.0, 465.0, -1000.0])
    np.testing.assert_array_equal(to_float_format(x, FP8_E4M3), [448, 448, 448, 448, -448])
    got = to_float_format(x, FP8_E4M3, saturate=False)
    np.testing.assert_array_equal(got[:3], [448, 448, 448])  # 464 is a tie: to even 448
    assert np.isnan(got[3:]).all()


def test_flush_to_zero_format():
    fmt = FloatFormat(4, 3, inf_nan="fn", subnormals=False)
    m = fmt.min_normal
    x = np.array([0.4 * m, 0.5 * m, 0.6 * m, -0.6 * m, 0.97 * m])
    np.testing.assert_array_equal(to_float_format(x, fmt), [0.0, 0.0, m, -m, m])


def test_idempotent_on_values():
    for fmt in (FP16, BF16, FP8_E4M3, FP8_E5M2):
        v = fmt.values()
        np.testing.assert_array_equal(to_float_format(v, fmt), v)


def test_relative_error_bounded_by_unit_roundoff():
    rng = np.random.default_rng(4)
    for fmt in (FP16, BF16, FP8_E4M3, FP8_E5M2):
        x = rng.uniform(fmt.min_normal, fmt.max / 2, 10_000) * rng.choice([-1, 1], 10_000)
        rel = np.abs(to_float_format(x, fmt) - x) / np.abs(x)
        assert rel.max() <= fmt.eps / 2


def test_dtype_shape_sign_of_zero_and_input_untouched():
    x = np.array([[-1e-30, 0.0], [-0.0, 3.3]], dtype=np.float32)
    x_copy = x.copy()
    y = to_float_format(x, FP8_E5M2)
    assert y.dtype == np.float32 and y.shape == (2, 2)
    assert np.signbit(y).tolist() == [[True, False], [True, False]]
    np.testing.assert_array_equal(x, x_copy)
    assert float(to_float_format(np.float64(3.3), FP16)) == float(np.float16(3.3))
    assert to_float_format(np.zeros((0, 3)), FP16).shape == (0, 3)
    assert to_float_format([1.1, 2.2], BF16).dtype == np.float64


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FP16.man_bits = 3


# --------------------------------------------------------------------------------------
# Fixed point
# --------------------------------------------------------------------------------------


def test_fixed_point_grid():
    v = fixed_point_values(3, 4)
    assert v.size == 256 and v[0] == -8.0 and v[-1] == 8.0 - 1 / 16
    assert np.all(np.diff(v) == 1 / 16)
    np.testing.assert_array_equal(fixed_point_values(7, 0), np.arange(-128, 128))  # int8
    np.testing.assert_array_equal(fixed_point_values(8, 0, signed=False), np.arange(256))  # uint8
    q = FixedPointFormat(0, 15)  # Q0.15: a 16-bit fraction in [-1, 1)
    assert (q.name, q.bits, q.min, q.max) == ("Q0.15", 16, -1.0, 1 - 2.0**-15)
    assert FixedPointFormat(4, 4, signed=False).name == "UQ4.4"


def test_to_fixed_point_rounds_to_grid_and_saturates():
    rng = np.random.default_rng(5)
    x = rng.uniform(-20, 20, 10_000)
    y = to_fixed_point(x, int_bits=3, frac_bits=4)
    np.testing.assert_array_equal(y * 16, np.round(y * 16))  # on the grid
    assert y.min() == -8.0 and y.max() == 8.0 - 1 / 16  # saturated
    inside = (x >= -8) & (x <= 8 - 1 / 16)
    assert np.abs(y - x)[inside].max() <= 1 / 32
    np.testing.assert_array_equal(np.isin(y, fixed_point_values(3, 4)), True)
    u = to_fixed_point(x, int_bits=2, frac_bits=2, signed=False)
    assert u.min() == 0.0 and u.max() == 3.75


def test_to_fixed_point_rounding_modes():
    x = np.array([0.125, 0.375, -0.125, 0.1], dtype=np.float32)  # ties on a 1/4 grid, and one non-tie
    kw = dict(int_bits=2, frac_bits=2)
    np.testing.assert_array_equal(to_fixed_point(x, **kw), [0.0, 0.5, -0.0, 0.0])
    np.testing.assert_array_equal(to_fixed_point(x, rounding="half_away", **kw), [0.25, 0.5, -0.25, 0.0])
    np.testing.assert_array_equal(to_fixed_point(x, rounding="floor", **kw), [0.0, 0.25, -0.25, 0.0])
    assert to_fixed_point(x, **kw).dtype == np.float32
    s1 = to_fixed_point(np.full(20_000, 0.1), rounding="stochastic", rng=0, **kw)
    s2 = to_fixed_point(np.full(20_000, 0.1), rounding="stochastic", rng=0, **kw)
    np.testing.assert_array_equal(s1, s2)
    assert set(np.unique(s1).tolist()) == {0.0, 0.25}
    assert abs(s1.mean() - 0.1) < 0.01  # unbiased


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(exp_bits=0, man_bits=3), ValueError, "exp_bits"),
        (dict(exp_bits=12, man_bits=3), ValueError, "exp_bits"),
        (dict(exp_bits=4.0, man_bits=3), TypeError, "exp_bits"),
        (dict(exp_bits=4, man_bits=-1), ValueError, "man_bits"),
        (dict(exp_bits=4, man_bits=3, inf_nan="ocp"), ValueError, "inf_nan"),
        (dict(exp_bits=4, man_bits=3, subnormals=1), TypeError, "subnormals"),
        (dict(exp_bits=1, man_bits=3), ValueError, "normal binade"),
        (dict(exp_bits=8, man_bits=3, bias=-1000), ValueError, "float64's range"),
        (dict(exp_bits=4, man_bits=3, name=3), TypeError, "name"),
    ],
)
def test_float_format_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        FloatFormat(**kwargs)


def test_to_float_format_bad_input():
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        to_float_format(np.arange(3), FP16)
    with pytest.raises(ValueError, match="x must be finite"):
        to_float_format([1.0, np.nan], FP16)
    with pytest.raises(TypeError, match="fmt must be a FloatFormat"):
        to_float_format([1.0], "fp16")
    with pytest.raises(TypeError, match="saturate"):
        to_float_format([1.0], FP16, saturate="yes")
    with pytest.raises(ValueError, match="saturate=False"):
        to_float_format([1.0], FloatFormat(2, 1, inf_nan="none"), saturate=False)


def test_fixed_point_bad_input():
    with pytest.raises(ValueError, match="int_bits"):
        fixed_point_values(-1, 4)
    with pytest.raises(TypeError, match="frac_bits"):
        fixed_point_values(3, 2.5)
    with pytest.raises(ValueError, match="word length"):
        FixedPointFormat(0, 0, signed=False)
    with pytest.raises(ValueError, match="word length"):
        to_fixed_point([1.0], int_bits=16, frac_bits=16)
    with pytest.raises(ValueError, match="too many values"):
        fixed_point_values(10, 12)
    with pytest.raises(ValueError, match="rounding"):
        to_fixed_point([1.0], int_bits=3, frac_bits=4, rounding="nearest")
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        to_fixed_point(np.array([1, 2]), int_bits=3, frac_bits=4)
    with pytest.raises(TypeError, match="signed"):
        to_fixed_point([1.0], int_bits=3, frac_bits=4, signed=None)
