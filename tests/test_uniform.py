"""Tests of qref.uniform against hand-worked values, closed forms, brute force and PyTorch.

Independent references used here: scale and zero point worked by hand from the formulas of
Jacob et al. (2018); the nearest grid level found by brute force over ``levels()``; the same
quantizer applied slice by slice (per channel, per group); and, when it is installed,
``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine`` bit for bit.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import uniform as U

DTYPES = (np.float16, np.float32, np.float64)
EPS = {np.float16: 2.0**-11, np.float32: 2.0**-24, np.float64: 2.0**-53}  # unit roundoff
TINY32 = float(np.finfo(np.float32).tiny)


# ---- code ranges and dtypes ------------------------------------------------------------

def test_qrange_hand_values():
    assert U.qrange(8) == (-128, 127)
    assert U.qrange(8, signed=False) == (0, 255)
    assert U.qrange(8, narrow_range=True) == (-127, 127)
    assert U.qrange(8, signed=False, narrow_range=True) == (1, 255)
    assert U.qrange(4) == (-8, 7)
    assert U.qrange(1) == (-1, 0)
    assert U.qrange(1, signed=False) == (0, 1)
    assert U.qrange(2, narrow_range=True) == (-1, 1)
    assert U.qrange(16) == (-32768, 32767)
    assert U.qrange(16, signed=False) == (0, 65535)


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("signed", [True, False])
def test_qrange_closed_form_and_code_dtype_smallest_fitting(bits, signed):
    qmin, qmax = U.qrange(bits, signed=signed)
    assert qmax - qmin + 1 == 2**bits  # exactly 2**bits codes
    assert (qmin < 0) == signed
    dt = U.code_dtype(bits, signed=signed)
    assert dt.kind == ("i" if signed else "u")
    info = np.iinfo(dt)
    assert info.min <= qmin and qmax <= info.max  # fits
    smaller = [d for d in (np.int8, np.uint8, np.int16, np.uint16) if np.dtype(d).itemsize < dt.itemsize]
    assert all(np.iinfo(d).min > qmin or np.iinfo(d).max < qmax for d in smaller)  # smallest
    assert dt.itemsize == (1 if bits <= 8 else 2)
    p = U.params_from_range(-1.0, 1.0, bits=bits, signed=signed)
    assert p.dtype == dt
    assert U.quantize(np.zeros(3), p).dtype == dt


# ---- QuantParams -----------------------------------------------------------------------

def test_quant_params_attributes_and_immutability():
    p = U.QuantParams(scale=0.5, zero_point=3, bits=4, signed=False)
    assert (p.qmin, p.qmax, p.granularity, p.dtype) == (0, 15, "tensor", np.dtype(np.uint8))
    assert p.scale.dtype == np.float64 and p.zero_point.dtype == np.int64
    with pytest.raises(Exception):
        p.bits = 8  # frozen
    with pytest.raises(ValueError):
        p.scale[...] = 2.0  # read-only array
    pc = U.QuantParams(scale=[0.5, 1.0], zero_point=[0, 1], bits=4, axis=0)
    assert pc.granularity == "channel"
    pg = U.QuantParams(scale=np.ones((2, 3)), zero_point=np.zeros((2, 3), int), bits=4, axis=1, group_size=4)
    assert pg.granularity == "group"
    s, z = pg.broadcast_to((2, 12))
    assert s.shape == (2, 12) and z.shape == (2, 12)
    s, z = pc.broadcast_to((2, 5, 7))
    assert s.shape == (2, 1, 1)


def test_quant_params_equality_and_hash_by_value():
    a = U.params_from_range([-1.0, -2.0], [1.0, 2.0], bits=4, axis=0)
    b = U.params_from_range(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), bits=4, axis=0)
    c = U.params_from_range([-1.0, -2.0], [1.0, 2.5], bits=4, axis=0)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != U.params_from_range([-1.0, -2.0], [1.0, 2.0], bits=4, axis=1)
    assert len({a, b, c}) == 2
    assert U.params_from_range(-1, 1, bits=4) == U.QuantParams(scale=2 / 15, zero_point=0, bits=4)


# ---- scale and zero point from a range: hand-worked cases ------------------------------

@pytest.mark.parametrize(
    "lo, hi, kw, scale, zp",
    [
        # asymmetric: S = (beta - alpha)/(qmax - qmin), Z = qmin - round(alpha/S)
        (-1.0, 3.0, dict(bits=8, signed=False), 4 / 255, 64),  # Z = -round(-63.75) = 64
        (-1.0, 3.0, dict(bits=8), 4 / 255, -64),  # -128 + 64
        (0.5, 2.0, dict(bits=8, signed=False), 2 / 255, 0),  # widened to [0, 2]
        (-2.0, -0.5, dict(bits=8), 2 / 255, 127),  # widened to [-2, 0]: Z = -128 + 255
        (-1.0, 1.0, dict(bits=4), 2 / 15, 0),  # Z = -8 - round(-7.5) = -8 + 8 (ties to even)
        (-1.0, 1.0, dict(bits=4, signed=False), 2 / 15, 8),
        (-1.0, 3.0, dict(bits=8, narrow_range=True), 4 / 254, -63),  # -127 - round(-63.5) = -127 + 64
        (-0.5, 1.5, dict(bits=3, narrow_range=True), 2 / 6, -1),  # -3 - round(-1.5) = -3 + 2
        # symmetric: m = max(|alpha|, |beta|), S = 2m/(qmax - qmin), Z = middle code
        (-1.0, 3.0, dict(bits=8, symmetric=True), 6 / 255, 0),
        (-1.0, 3.0, dict(bits=8, symmetric=True, signed=False), 6 / 255, 128),
        (-1.0, 3.0, dict(bits=8, symmetric=True, narrow_range=True), 3 / 127, 0),
        (-1.0, 3.0, dict(bits=8, symmetric=True, signed=False, narrow_range=True), 3 / 127, 128),
        (-4.0, 1.0, dict(bits=4, symmetric=True), 8 / 15, 0),
        (-4.0, 1.0, dict(bits=4, symmetric=True, signed=False), 8 / 15, 8),
    ],
)
def test_params_from_range_hand_computed(lo, hi, kw, scale, zp):
    p = U.params_from_range(lo, hi, **kw)
    assert float(p.scale) == pytest.approx(scale, rel=1e-15)
    assert int(p.zero_point) == zp
    assert p.granularity == "tensor"


@st.composite
def ranges(draw):
    """A range [lo, hi] with lo <= hi, spanning many magnitudes, zero-width ones included."""
    e = draw(st.integers(-6, 5))
    a = draw(st.floats(-1, 1)) * 10.0**e
    b = draw(st.floats(-1, 1)) * 10.0**e
    return min(a, b), max(a, b)


@st.composite
def quantizers(draw, max_bits=16):
    bits = draw(st.integers(1, max_bits))
    kw = dict(
        bits=bits,
        signed=draw(st.booleans()),
        symmetric=draw(st.booleans()),
        narrow_range=draw(st.booleans()) if bits >= 2 else False,
    )
    lo, hi = draw(ranges())
    return lo, hi, kw


def _alpha_beta(lo, hi, kw):
    alpha, beta = min(lo, 0.0), max(hi, 0.0)
    if kw["symmetric"]:
        m = max(-alpha, beta)
        alpha, beta = -m, m
    return alpha, beta


@given(q=quantizers())
def test_params_from_range_properties(q):
    lo, hi, kw = q
    p = U.params_from_range(lo, hi, **kw)
    qmin, qmax = U.qrange(kw["bits"], signed=kw["signed"], narrow_range=kw["narrow_range"])
    S, Z = float(p.scale), int(p.zero_point)
    assert np.isfinite(S) and S > 0
    assert qmin <= Z <= qmax
    alpha, beta = _alpha_beta(lo, hi, kw)
    if (beta - alpha) / (qmax - qmin) < TINY32:  # zero-width range: scale 1 by convention
        assert S == 1.0
        return
    assert S == pytest.approx((beta - alpha) / (qmax - qmin), rel=1e-15)
    if kw["symmetric"]:
        assert Z == (qmin + qmax + 1) // 2
    # the representable range [S(qmin - Z), S(qmax - Z)] covers [alpha, beta] to within S/2
    lo_q, hi_q = S * (qmin - Z), S * (qmax - Z)
    assert abs(lo_q - alpha) <= S / 2 * (1 + 1e-9)
    assert abs(hi_q - beta) <= S / 2 * (1 + 1e-9)


def test_symmetric_narrow_range_levels_are_symmetric():
    for bits in (2, 3, 4, 8):
        for signed in (True, False):
            lv = U.levels(U.params_from_range(-0.7, 2.0, bits=bits, signed=signed, symmetric=True, narrow_range=True))
            np.testing.assert_allclose(lv, -lv[::-1], rtol=0, atol=1e-15)
            assert lv[-1] == pytest.approx(2.0) and 0.0 in lv


# ---- min-max calibration and granularity -----------------------------------------------

def test_params_from_data_is_params_from_range_of_min_max(rng):
    x = rng.normal(size=(6, 10)).astype(np.float32)
    for kw in (dict(bits=8), dict(bits=4, symmetric=True), dict(bits=3, signed=False, narrow_range=True)):
        assert U.params_from_data(x, **kw) == U.params_from_range(float(x.min()), float(x.max()), **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((5, 7), 0), ((5, 7), 1), ((5, 7), -1), ((3, 4, 6), 1), ((3, 4, 6), 2)])
@pytest.mark.parametrize("kw", [dict(bits=8), dict(bits=4, symmetric=True), dict(bits=3, signed=False)])
def test_per_channel_equals_per_tensor_channel_by_channel(rng, dtype, shape, axis, kw):
    x = (rng.normal(size=shape) * rng.uniform(0.1, 10, size=shape[axis]).reshape(
        [-1 if i == axis % len(shape) else 1 for i in range(len(shape))])).astype(dtype)
    p = U.params_from_data(x, axis=axis, **kw)
    assert p.granularity == "channel" and p.scale.shape == (shape[axis],)
    fq, codes = U.fake_quantize(x, p), U.quantize(x, p)
    for c in range(shape[axis]):
        xc = np.take(x, c, axis=axis)
        pc = U.params_from_data(xc, **kw)
        assert float(p.scale[c]) == float(pc.scale) and int(p.zero_point[c]) == int(pc.zero_point)
        np.testing.assert_array_equal(np.take(fq, c, axis=axis), U.fake_quantize(xc, pc))
        np.testing.assert_array_equal(np.take(codes, c, axis=axis), U.quantize(xc, pc))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis, g", [((3, 12), 1, 4), ((3, 12), -1, 3), ((8, 5), 0, 2), ((2, 6, 4), 1, 3)])
def test_per_group_equals_per_tensor_group_by_group(rng, dtype, shape, axis, g):
    x = rng.laplace(size=shape).astype(dtype)
    kw = dict(bits=4, signed=True)
    p = U.params_from_data(x, axis=axis, group_size=g, **kw)
    ax = axis % len(shape)
    expected_shape = tuple(n // g if i == ax else n for i, n in enumerate(shape))
    assert p.granularity == "group" and p.scale.shape == expected_shape
    fq, codes = U.fake_quantize(x, p), U.quantize(x, p)
    xm, fqm, cm = (np.moveaxis(a, ax, -1) for a in (x, fq, codes))
    for idx in np.ndindex(xm.shape[:-1]):
        for j in range(shape[ax] // g):
            sl = idx + (slice(j * g, (j + 1) * g),)
            pg = U.params_from_data(xm[sl], **kw)
            np.testing.assert_array_equal(fqm[sl], U.fake_quantize(xm[sl], pg))
            np.testing.assert_array_equal(cm[sl], U.quantize(xm[sl], pg))


# ---- quantize / dequantize / fake_quantize: hand-worked values -------------------------

def test_quantize_hand_values():
    p = U.QuantParams(scale=0.5, zero_point=0, bits=4)
    x = np.array([-9.0, -4.0, -0.25, 0.25, 0.75, 1.25, 3.5, 9.0])
    # x/S = -18, -8, -0.5, 0.5, 1.5, 2.5, 7, 18 -> rint -> clip to [-8, 7]
    np.testing.assert_array_equal(U.quantize(x, p), [-8, -8, 0, 0, 2, 2, 7, 7])
    np.testing.assert_array_equal(U.quantize(x, p, rounding="half_away"), [-8, -8, -1, 1, 2, 3, 7, 7])
    np.testing.assert_array_equal(U.quantize(x, p, rounding="floor"), [-8, -8, -1, 0, 1, 2, 7, 7])
    pu = U.QuantParams(scale=0.25, zero_point=5, bits=4, signed=False)
    # x/S + Z = -36+5, -16+5, -1+5, 1+5, 3+5, 5+5, 14+5, 36+5 -> clip to [0, 15]
    np.testing.assert_array_equal(U.quantize(x, pu), [0, 0, 4, 6, 8, 10, 15, 15])
    np.testing.assert_array_equal(U.dequantize(np.array([0, 5, 15], np.uint8), pu), [-1.25, 0.0, 2.5])
    np.testing.assert_array_equal(U.fake_quantize(x, pu), [-1.25, -1.25, -0.25, 0.25, 0.75, 1.25, 2.5, 2.5])


def test_fake_quantize_hand_values_float32():
    x = np.array([-1.0, -0.3, 0.0, 0.26, 0.9, 5.0], dtype=np.float32)
    p = U.params_from_range(-1.0, 1.0, bits=3, symmetric=True, narrow_range=True)  # S = 1/3
    third = np.float32(1) / np.float32(3)
    expected = np.array([-3, -1, 0, 1, 3, 3], dtype=np.float32) * np.float32(float(p.scale))
    np.testing.assert_array_equal(U.fake_quantize(x, p), expected)
    assert U.fake_quantize(x, p)[3] == third


def test_levels_hand_values():
    np.testing.assert_array_equal(U.levels(U.QuantParams(scale=0.5, zero_point=0, bits=2)), [-1.0, -0.5, 0.0, 0.5])
    np.testing.assert_array_equal(
        U.levels(U.QuantParams(scale=0.5, zero_point=1, bits=2, signed=False)), [-0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(
        U.levels(U.QuantParams(scale=1.0, zero_point=0, bits=3, narrow_range=True)), np.arange(-3.0, 4.0))


@given(q=quantizers(max_bits=10))
def test_levels_are_the_fixed_points_and_fake_quantize_picks_the_nearest(q):
    lo, hi, kw = q
    p = U.params_from_range(lo, hi, **kw)
    lv = U.levels(p)
    assert lv.shape == (p.qmax - p.qmin + 1,) and np.all(np.diff(lv) > 0)
    np.testing.assert_array_equal(lv, U.dequantize(np.arange(p.qmin, p.qmax + 1), p, dtype=np.float64))
    np.testing.assert_array_equal(U.fake_quantize(lv, p), lv)
    # brute force: every output is a level at minimal distance from the input
    x = np.linspace(lv[0] - 3 * float(p.scale), lv[-1] + 3 * float(p.scale), 257)
    fq = U.fake_quantize(x, p)
    assert np.isin(fq, lv).all()
    dist = np.abs(x[:, None] - lv[None, :]).min(axis=1)
    np.testing.assert_allclose(np.abs(fq - x), dist, rtol=0, atol=1e-12 * float(p.scale) * (p.qmax - p.qmin + 2))


def test_levels_refuses_per_channel():
    with pytest.raises(ValueError, match="axis"):
        U.levels(U.QuantParams(scale=[1.0], zero_point=[0], bits=4, axis=0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_quantize_dequantize_consistent_with_fake_quantize(rng, dtype, granularity):
    x = (rng.normal(size=(4, 12)) * 3).astype(dtype)
    kw = dict(tensor={}, channel=dict(axis=0), group=dict(axis=1, group_size=4))[granularity]
    for bits in (2, 4, 8) + ((12, 16) if dtype != np.float16 else ()):
        p = U.params_from_data(x * 0.8, bits=bits, **kw)  # some values clipped
        codes = U.quantize(x, p)
        assert codes.dtype == p.dtype
        assert codes.min() >= p.qmin and codes.max() <= p.qmax
        fq = U.fake_quantize(x, p)
        assert fq.dtype == dtype and fq.shape == x.shape
        np.testing.assert_array_equal(U.dequantize(codes, p, dtype=dtype), fq)


def test_dequantize_default_dtype_and_quantized_tensor(rng):
    x = rng.normal(size=(8, 5)).astype(np.float32)
    t = U.quantize_tensor(x, bits=4, axis=0)
    p = U.params_from_data(x, bits=4, axis=0)
    assert t.params == p
    np.testing.assert_array_equal(t.codes, U.quantize(x, p))
    assert t.nbits == 40 * 4
    assert t.dequantize().dtype == np.float32
    np.testing.assert_array_equal(t.dequantize(), U.fake_quantize(x, p))
    np.testing.assert_array_equal(t.dequantize(np.float64), U.dequantize(t.codes, p, dtype=np.float64))


# ---- zero, zero ranges, constants ------------------------------------------------------

@given(q=quantizers(), dtype=st.sampled_from(DTYPES))
def test_zero_is_exactly_representable(q, dtype):
    lo, hi, kw = q
    p = U.params_from_range(lo, hi, **kw)
    zeros = np.zeros(5, dtype=dtype)
    codes = U.quantize(zeros, p)
    assert np.all(codes == int(p.zero_point))
    fq = U.fake_quantize(zeros, p)
    assert fq.dtype == dtype and np.all(fq == 0)
    assert 0.0 in U.levels(p)


def test_zero_exactly_representable_per_channel(rng):
    lo = -rng.uniform(0, 5, 7)
    hi = rng.uniform(0, 5, 7)
    for kw in (dict(bits=8), dict(bits=3, signed=False), dict(bits=5, symmetric=True)):
        p = U.params_from_range(lo, hi, axis=1, **kw)
        z = np.zeros((3, 7), np.float32)
        np.testing.assert_array_equal(U.quantize(z, p), np.broadcast_to(p.zero_point, (3, 7)))
        np.testing.assert_array_equal(U.fake_quantize(z, p), z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(bits=8), dict(bits=8, symmetric=True), dict(bits=4, signed=False)])
def test_all_zero_tensor_and_channel(dtype, kw):
    with np.errstate(all="raise"):  # no division by zero, no invalid operation anywhere
        z = np.zeros((3, 4), dtype=dtype)
        p = U.params_from_data(z, **kw)
        assert float(p.scale) == 1.0
        assert np.all(U.fake_quantize(z, p) == 0)
        assert np.all(U.quantize(z, p) == int(p.zero_point))
        x = np.array([[0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=dtype)
        pc = U.params_from_data(x, axis=0, **kw)
        assert pc.scale[0] == 1.0 and pc.scale[2] == 1.0 and pc.scale[1] != 1.0
        fq = U.fake_quantize(x, pc)
        assert np.isfinite(fq).all()
        assert np.all(fq[[0, 2]] == 0)
        np.testing.assert_array_equal(fq[1], U.fake_quantize(x[1], U.params_from_data(x[1], **kw)))


def test_subnormal_range_gives_scale_one():
    x = np.array([0.0, 1e-40, -1e-41])
    p = U.params_from_data(x, bits=8)
    assert float(p.scale) == 1.0
    np.testing.assert_array_equal(U.fake_quantize(x, p), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_nonzero_tensor(dtype):
    for c in (3.0, -2.0, 0.125):
        x = np.full(7, c, dtype=dtype)
        for kw in (dict(bits=8), dict(bits=8, signed=False), dict(bits=4, symmetric=True, narrow_range=True)):
            p = U.params_from_data(x, **kw)
            S = float(p.scale)
            alpha, beta = min(c, 0.0), max(c, 0.0)
            assert S > 0 and S == pytest.approx((beta - alpha) / (p.qmax - p.qmin) * (2 if kw.get("symmetric") else 1))
            codes = U.quantize(x, p)
            assert np.all(codes == (p.qmax if c > 0 else p.qmin))  # the range ends on c
            fq = U.fake_quantize(x, p).astype(np.float64)
            assert np.all(np.abs(fq - c) <= S / 2 + 4 * EPS[dtype] * abs(c))


# ---- property tests --------------------------------------------------------------------

@st.composite
def inputs_in_range(draw, dtype=None, max_bits=16):
    lo, hi, kw = draw(quantizers(max_bits=max_bits))
    dtype = dtype or draw(st.sampled_from((np.float32, np.float64)))
    p = U.params_from_range(lo, hi, **kw)
    S32 = float(np.asarray(p.scale, dtype=dtype))  # the scale the computation uses
    lo_q, hi_q = S32 * (p.qmin - int(p.zero_point)), S32 * (p.qmax - int(p.zero_point))
    t = draw(hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(0, 1)))
    x = (lo_q + t * (hi_q - lo_q)).astype(dtype)
    return x, p, S32


@given(data=inputs_in_range())
def test_error_at_most_half_a_step_inside_the_range(data):
    x, p, S = data
    eps = EPS[x.dtype.type]
    fq = U.fake_quantize(x, p)
    err = np.abs(fq.astype(np.float64) - x.astype(np.float64))
    # S/2, plus what rounding x*(1/S) and S*(q - Z) in the working precision can add
    tol = 4 * eps * (np.abs(x.astype(np.float64)) + S)
    assert np.all(err <= S / 2 + tol)


@st.composite
def any_inputs(draw, dtypes=(np.float32, np.float64), max_bits=16):
    lo, hi, kw = draw(quantizers(max_bits=max_bits))
    dtype = draw(st.sampled_from(dtypes))
    width = np.dtype(dtype).itemsize * 8
    bound = float(dtype(min(4 * max(abs(lo), abs(hi), 1e-3), float(np.finfo(dtype).max))))
    elements = st.one_of(
        st.floats(-bound, bound, width=width),  # around the range, mostly
        st.floats(allow_nan=False, allow_infinity=False, width=width),  # anything finite
    )
    x = draw(hnp.arrays(dtype, st.integers(1, 40), elements=elements))
    return x, U.params_from_range(lo, hi, **kw)


@given(data=any_inputs())
def test_codes_inside_range_and_idempotent(data):
    x, p = data
    codes = U.quantize(x, p)
    assert codes.dtype == p.dtype
    assert np.all((p.qmin <= codes) & (codes <= p.qmax))
    fq = U.fake_quantize(x, p)
    assert fq.dtype == x.dtype and np.isfinite(fq).all()
    np.testing.assert_array_equal(U.fake_quantize(fq, p), fq)
    np.testing.assert_array_equal(U.quantize(fq, p), codes)


@given(data=any_inputs(dtypes=(np.float16,), max_bits=8))
def test_float16_codes_inside_range_and_idempotent(data):
    x, p = data
    assume(float(p.scale) * (p.qmax - p.qmin) < 6e4)  # the levels must fit in float16
    fq = U.fake_quantize(x, p)
    assert fq.dtype == np.float16 and np.isfinite(fq).all()
    np.testing.assert_array_equal(U.fake_quantize(fq, p), fq)
    # float16 is computed in float32 and rounded once
    np.testing.assert_array_equal(fq, U.fake_quantize(x.astype(np.float32), p).astype(np.float16))
    np.testing.assert_array_equal(U.quantize(x, p), U.quantize(x.astype(np.float32), p))


@given(data=any_inputs(dtypes=(np.float16, np.float32, np.float64)))
def test_monotone(data):
    x, p = data
    xs = np.sort(x)
    for rounding in ("half_even", "half_away", "floor", "ceil", "trunc"):
        fq = U.fake_quantize(xs, p, rounding=rounding)
        assert np.all(np.diff(fq.astype(np.float64)) >= 0)
        assert np.all(np.diff(U.quantize(xs, p, rounding=rounding).astype(np.int64)) >= 0)


@given(q=quantizers(), dtype=st.sampled_from((np.float32, np.float64)), seed=st.integers(0, 2**31))
def test_grid_points_round_trip(q, dtype, seed):
    lo, hi, kw = q
    p = U.params_from_range(lo, hi, **kw)
    codes = np.random.default_rng(seed).integers(p.qmin, p.qmax + 1, size=64).astype(p.dtype)
    codes[:2] = p.qmin, p.qmax
    values = U.dequantize(codes, p, dtype=dtype)
    assert values.dtype == dtype
    np.testing.assert_array_equal(U.quantize(values, p), codes)
    for rounding in ("half_away", "half_up", "half_down", "floor", "ceil", "trunc"):
        # a grid point is no tie and (nearly) an integer multiple: every nearest mode keeps it;
        # directed modes may move it by one code when S*(q-Z)/S lands just off the integer
        got = U.quantize(values, p, rounding=rounding).astype(np.int64)
        tol = 0 if rounding.startswith("half") else 1
        assert np.all(np.abs(got - codes.astype(np.int64)) <= tol)


@given(data=any_inputs(), seed=st.integers(0, 2**31))
def test_stochastic_rounding_same_seed_same_result(data, seed):
    x, p = data
    a = U.fake_quantize(x, p, rounding="stochastic", rng=seed)
    np.testing.assert_array_equal(a, U.fake_quantize(x, p, rounding="stochastic", rng=seed))
    np.testing.assert_array_equal(U.quantize(x, p, rounding="stochastic", rng=seed),
                                  U.quantize(x, p, rounding="stochastic", rng=seed))
    # stochastic picks one of the two neighbouring levels: floor or ceil
    lo_, hi_ = U.fake_quantize(x, p, rounding="floor"), U.fake_quantize(x, p, rounding="ceil")
    assert np.all((a == lo_) | (a == hi_))


def test_stochastic_fake_quantize_is_unbiased_inside_the_range():
    p = U.QuantParams(scale=0.25, zero_point=0, bits=4)
    x = np.array([0.1, -0.3, 0.125, 1.7, -1.9])
    n = 20_000
    draws = U.fake_quantize(np.tile(x, (n, 1)), p, rounding="stochastic", rng=11)
    f = x / 0.25 - np.floor(x / 0.25)
    sigma = 0.25 * np.sqrt(f * (1 - f) / n)
    assert np.all(np.abs(draws.mean(axis=0) - x) <= 5 * sigma + 1e-12)
    assert not np.array_equal(draws, U.fake_quantize(np.tile(x, (n, 1)), p, rounding="stochastic", rng=12))


def test_out_argument(rng):
    x = rng.normal(size=(6, 8)).astype(np.float32)
    p = U.params_from_data(x, bits=4)
    out = np.empty_like(x)
    assert U.fake_quantize(x, p, out=out) is out
    np.testing.assert_array_equal(out, U.fake_quantize(x, p))
    big = np.zeros((6, 16), np.float32)
    U.fake_quantize(x, p, out=big[:, ::2])  # a non-contiguous view
    np.testing.assert_array_equal(big[:, ::2], U.fake_quantize(x, p))
    assert np.all(big[:, 1::2] == 0)
    codes = np.empty(x.shape, p.dtype)
    assert U.quantize(x, p, out=codes) is codes
    np.testing.assert_array_equal(codes, U.quantize(x, p))
    y = x.copy()
    U.fake_quantize(y, p, out=y)  # in place is allowed when asked for
    np.testing.assert_array_equal(y, U.fake_quantize(x, p))
    h = x.astype(np.float16)
    out16 = np.empty_like(h)
    assert U.fake_quantize(h, p, out=out16) is out16
    np.testing.assert_array_equal(out16, U.fake_quantize(h, p))


def test_huge_finite_inputs_clip_without_warnings():
    # x / S overflows to inf: the codes must still clip, with no RuntimeWarning (warnings are errors)
    p = U.params_from_range(-1.0, 1.0, bits=8)
    for dtype in DTYPES:
        big = np.finfo(dtype).max
        x = np.array([big, -big, 0.5], dtype=dtype)
        for rounding in ("half_even", "half_away", "stochastic"):
            np.testing.assert_array_equal(U.quantize(x, p, rounding=rounding, rng=0)[:2], [127, -128])
            assert np.isfinite(U.fake_quantize(x, p, rounding=rounding, rng=0)).all()


def test_float16_small_scales_and_wide_codes():
    # 1/S overflows float16 for S < ~1.5e-5, and codes above 2048 are not float16 integers:
    # float16 is computed in float32, so both work and zero stays exactly zero
    x = np.array([0.0, 1e-3, -1e-3, 3e-4], dtype=np.float16)
    p = U.params_from_data(x, bits=8)
    assert float(p.scale) < 1e-5
    fq = U.fake_quantize(x, p)
    assert fq.dtype == np.float16 and fq[0] == 0 and np.isfinite(fq).all()
    np.testing.assert_array_equal(U.quantize(x, p), U.quantize(x.astype(np.float32), p))
    xw = np.linspace(-1, 1, 11).astype(np.float16)
    pw = U.params_from_data(xw, bits=16, signed=False)
    np.testing.assert_allclose(U.fake_quantize(xw, pw), xw, atol=1e-3)
    np.testing.assert_array_equal(U.dequantize(U.quantize(xw, pw), pw, dtype=np.float16), U.fake_quantize(xw, pw))


# ---- PyTorch, bit for bit --------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch", reason="torch is not installed: the PyTorch comparison is skipped")


def _tie_inputs(rng, scale32, zp, qmin, qmax, n=400):
    """float32 inputs at and around x = (k + 1/2) S, for codes k across and beyond the range."""
    k = rng.integers(qmin - zp - 3, qmax - zp + 3, size=n).astype(np.float32)
    ties = (k + np.float32(0.5)) * np.float32(scale32)
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    wide = rng.normal(scale=scale32 * (qmax - qmin) / 2, size=n).astype(np.float32)
    return np.concatenate([ties, near, wide, np.float32([0.0])]).astype(np.float32)


@pytest.mark.parametrize("bits, signed", [(2, True), (4, True), (8, True), (8, False), (12, False), (16, True)])
def test_fake_quantize_per_tensor_matches_torch(rng, bits, signed):
    torch = _torch()
    qmin, qmax = U.qrange(bits, signed=signed)
    for trial in range(20):
        if trial % 2:  # a power of two: x * (1/S) is exact, so the k + 1/2 inputs are exact ties
            scale = 2.0 ** int(rng.integers(-12, 3))
        else:
            scale = float(rng.uniform(1e-4, 1.0))
        zp = int(rng.integers(qmin, qmax + 1))
        x = _tie_inputs(rng, np.float32(scale), zp, qmin, qmax)
        p = U.QuantParams(scale=scale, zero_point=zp, bits=bits, signed=signed)
        expected = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), scale, zp, qmin, qmax).numpy()
        np.testing.assert_array_equal(U.fake_quantize(x, p), expected)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("bits, signed", [(4, True), (8, False), (8, True)])
def test_fake_quantize_per_channel_matches_torch(rng, axis, bits, signed):
    torch = _torch()
    qmin, qmax = U.qrange(bits, signed=signed)
    shape = [5, 6, 7]
    C = shape[axis]
    scale = np.where(rng.random(C) < 0.5, 2.0 ** rng.integers(-10, 2, C), rng.uniform(1e-3, 1, C)).astype(np.float32)
    zp = rng.integers(qmin, qmax + 1, C)
    x = rng.normal(size=shape).astype(np.float32) * np.float32(4 * 2.0**bits)
    # put exact ties k + 1/2 (in units of each channel's scale) into every channel
    bshape = [1, 1, 1]
    bshape[axis] = C
    k = rng.integers(qmin - 2, qmax + 2, size=shape).astype(np.float32) - zp.reshape(bshape).astype(np.float32)
    ties = (k + np.float32(0.5)) * scale.reshape(bshape)
    x = np.where(rng.random(shape) < 0.5, ties, x).astype(np.float32)
    p = U.QuantParams(scale=scale.astype(np.float64), zero_point=zp, bits=bits, signed=signed, axis=axis)
    expected = torch.fake_quantize_per_channel_affine(
        torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(zp.astype(np.int32)), axis, qmin, qmax).numpy()
    np.testing.assert_array_equal(U.fake_quantize(x, p), expected)
    # and the same through min-max calibrated parameters
    pc = U.params_from_data(x, bits=bits, signed=signed, axis=axis)
    expected = torch.fake_quantize_per_channel_affine(
        torch.from_numpy(x), torch.from_numpy(pc.scale.astype(np.float32)),
        torch.from_numpy(pc.zero_point.astype(np.int32)), axis, qmin, qmax).numpy()
    np.testing.assert_array_equal(U.fake_quantize(x, pc), expected)


def test_fake_quantize_float16_matches_torch_half(rng):
    torch = _torch()
    for trial in range(30):
        scale = float(10 ** rng.uniform(-6, 0))
        zp = int(rng.integers(-128, 128))
        x = (rng.normal(size=2000) * scale * 100).astype(np.float16)
        p = U.QuantParams(scale=scale, zero_point=zp, bits=8)
        expected = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), scale, zp, -128, 127).numpy()
        np.testing.assert_array_equal(U.fake_quantize(x, p), expected)
