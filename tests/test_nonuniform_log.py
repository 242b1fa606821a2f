"""Powers of two (INQ), logarithmic (Miyashita), ShiftCNN, HWGQ and the optimal uniform quantizer.

Each method is checked against a number printed in its paper (or the authors' code, where the
paper text was not available to us), against an independent brute-force or quadrature
calculation, and for the properties every quantizer must have: outputs in the level set, sign
symmetry, monotonicity, zero to zero, idempotence, inputs left alone, clear errors.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import nonuniform as NU

def _gauss_pdf(x):  # scalar densities for scipy.integrate.quad (math is ~100x faster than scipy.stats)
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _laplace_pdf(x):  # unit variance: scale 1/sqrt(2)
    return math.exp(-math.sqrt(2) * abs(x)) / math.sqrt(2)


# zero or magnitudes in [1e-6, 1e3] (a layer of subnormal weights has no float64 level set)
finite = st.one_of(st.just(0.0), st.floats(1e-6, 1e3), st.floats(-1e3, -1e-6))
weights = hnp.arrays(np.float64, st.integers(1, 40), elements=finite)


def in_set(values, level_set, dtype=np.float64):
    return np.isin(np.asarray(values), np.asarray(level_set).astype(dtype)).all()


# ======================================================================================
# INQ: exponent range and Eq. (4)
# ======================================================================================


def test_inq_paper_examples():
    # Sec. 2.1: "if b = 3 and n1 = -1, it is easy to get n2 = -2"; any s in [3/8, 3/4) has n1 = -1
    for s in (0.375, 0.5, 0.6, 0.7499):
        assert NU.inq_exponent_range(s, 3) == (-1, -2)
    # 5 bits (the paper's main setting): 1 bit for zero, 16 signed powers of two = 8 exponents
    n1, n2 = NU.inq_exponent_range(0.6, 5)
    assert (n1, n2) == (-1, -8)
    assert NU.power_of_two_levels(n1, n2).size == 17
    # 2 bits: ternary {0, +-2^n1}
    n1, n2 = NU.inq_exponent_range(1.0, 2)
    assert n1 == n2 == 0


@given(st.floats(1e-280, 1.3e308, allow_nan=False, allow_infinity=False), st.integers(2, 8))
def test_inq_n1_is_exact_floor(s, bits):
    n1, n2 = NU.inq_exponent_range(s, bits)
    v = Fraction(4) * Fraction(s) / 3  # exact rational 4s/3
    assert Fraction(2) ** n1 <= v < Fraction(2) ** (n1 + 1)
    assert n2 == n1 + 1 - 2 ** (bits - 1) // 2


def test_inq_n1_at_the_boundary():
    for k in (-7, 0, 3):
        s = 0.75 * 2.0**k  # 4s/3 = 2^k exactly
        assert NU.inq_exponent_range(s, 4)[0] == k
        assert NU.inq_exponent_range(np.nextafter(s, 0), 4)[0] == k - 1


def _inq_eq4_literal(w, n1, n2):
    """Eq. (4) of INQ, one weight at a time: beta sgn(w) if (alpha + beta)/2 <= |w| < 3 beta / 2."""
    pos = [0.0] + [2.0**n for n in range(n2, n1 + 1)]
    out = []
    for x in w:
        q = 0.0
        for alpha, beta in zip(pos[:-1], pos[1:]):
            if (alpha + beta) / 2 <= abs(x) < 3 * beta / 2:
                q = math.copysign(beta, x)
        out.append(q)
    return np.array(out)


@given(weights, st.integers(2, 6))
def test_inq_rule_matches_eq4(w, bits):
    got = NU.power_of_two_quantize(w, bits=bits)
    if not np.abs(w).max() > 0:
        assert not got.any()
        return
    n1, n2 = NU.inq_exponent_range(np.abs(w).max(), bits)
    np.testing.assert_array_equal(got, _inq_eq4_literal(w, n1, n2))
    assert in_set(got, NU.power_of_two_levels(n1, n2))
    # the largest weight always lands on the top level (the role of 4/3 in n1)
    assert np.abs(got).max() == 2.0**n1


@given(weights, st.integers(2, 6))
def test_inq_rule_is_nearest_level(w, bits):
    s = float(np.abs(w).max())
    if s == 0:
        return
    n1, n2 = NU.inq_exponent_range(s, bits)
    lv = NU.power_of_two_levels(n1, n2)
    got = NU.power_of_two_quantize(w, bits=bits)
    best = np.abs(w[:, None] - lv[None, :]).min(axis=1)
    np.testing.assert_allclose(np.abs(w - got), best, rtol=0, atol=1e-12 * s)


@given(weights, st.integers(2, 6))
def test_log_rule_is_nearest_in_log_domain(w, bits):
    s = float(np.abs(w).max())
    if s == 0:
        return
    n1, n2 = NU.inq_exponent_range(s, bits)
    got = NU.power_of_two_quantize(w, bits=bits, rule="log")
    for x, q in zip(w, got):
        a = abs(x)
        if a < 2.0 ** (n2 - 0.5) * (1 - 1e-12):
            assert q == 0
        elif a > 2.0 ** (n2 - 0.5) * (1 + 1e-12):
            e = min(max(round(math.log2(a)), n2), n1)
            if abs(math.log2(a) - round(math.log2(a))) < 0.5 - 1e-9 or e in (n1, n2):
                assert q == math.copysign(2.0**e, x)


def test_inq_and_log_rules_put_thresholds_in_different_places():
    # levels 0, 1/4, 1/2 (b = 3, s = 0.6): INQ splits 1/4 | 1/2 at 3/8, log at 2^-1.5 = 0.3536
    w = np.array([0.6, 0.36, 0.1, 0.15])
    inq = NU.power_of_two_quantize(w, bits=3)
    log = NU.power_of_two_quantize(w, bits=3, rule="log")
    assert inq[1] == 0.25 and log[1] == 0.5  # 0.36 in [0.3536, 0.375)
    # and zero | 1/4 at 1/8 (INQ) versus 2^-2.5 = 0.1768 (log)
    assert inq[3] == 0.25 and log[3] == 0.0  # 0.15 in [0.125, 0.1768)
    assert inq[2] == log[2] == 0.0
    # the INQ rule never has a larger error than the log rule (it is the nearest level)
    x = np.random.default_rng(0).laplace(size=10_000)
    e_inq = np.abs(x - NU.power_of_two_quantize(x, bits=4))
    e_log = np.abs(x - NU.power_of_two_quantize(x, bits=4, rule="log"))
    assert (e_inq <= e_log + 1e-15).all() and (e_inq < e_log).any()


@pytest.mark.parametrize("rule", NU.POWER_OF_TWO_RULES)
@given(w=weights, bits=st.integers(2, 6))
def test_power_of_two_properties(rule, w, bits):
    before = w.copy()
    q = NU.power_of_two_quantize(w, bits=bits, rule=rule)
    assert np.array_equal(w, before)
    np.testing.assert_array_equal(NU.power_of_two_quantize(-w, bits=bits, rule=rule), -q)  # symmetric
    assert (q[w == 0] == 0).all()  # zero to zero
    order = np.argsort(w, kind="stable")
    assert (np.diff(q[order]) >= 0).all()  # monotone
    s = np.abs(w).max()
    if s > 0:  # idempotent, with the layer's s and with the default
        np.testing.assert_array_equal(NU.power_of_two_quantize(q, bits=bits, rule=rule, max_abs=s), q)
        np.testing.assert_array_equal(NU.power_of_two_quantize(q, bits=bits, rule=rule), q)


def test_power_of_two_saturation_dtype_and_zero_input():
    w = np.array([0.3, 2.0, -5.0], dtype=np.float32)  # max_abs 0.3 -> n1 = -2, levels up to 1/4
    q = NU.power_of_two_quantize(w, bits=3, max_abs=0.3)
    assert q.dtype == np.float32
    np.testing.assert_array_equal(q, [0.25, 0.25, -0.25])  # saturates, not zeroed
    assert NU.power_of_two_quantize(np.float16([0.5, 0.1]), bits=4).dtype == np.float16
    z = np.zeros((2, 3), dtype=np.float32)
    assert np.array_equal(NU.power_of_two_quantize(z, bits=4), z)
    assert NU.power_of_two_quantize(np.zeros(0), bits=4).shape == (0,)
    assert NU.power_of_two_quantize(np.float64(0.4), bits=4).shape == ()


def test_power_of_two_levels():
    np.testing.assert_array_equal(NU.power_of_two_levels(-1, -2), [-0.5, -0.25, 0, 0.25, 0.5])
    lv = NU.power_of_two_levels(3, -4)
    assert lv.size == 17 and (np.diff(lv) > 0).all()


def test_power_of_two_bad_input():
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\], got 1"):
        NU.inq_exponent_range(1.0, 1)
    with pytest.raises(ValueError, match="max_abs must be finite and > 0"):
        NU.inq_exponent_range(0.0, 4)
    with pytest.raises(ValueError, match="max_abs"):
        NU.inq_exponent_range(float("nan"), 4)
    with pytest.raises(ValueError, match="outside the normal float64 range"):
        NU.inq_exponent_range(1e-300, 8)
    with pytest.raises(ValueError, match="outside the normal float64 range"):
        NU.power_of_two_quantize(np.array([5e-324]), bits=4)
    assert NU.inq_exponent_range(1.3e308, 8)[0] == 1023
    with pytest.raises(ValueError, match="outside the normal float64 range"):
        NU.inq_exponent_range(1.7e308, 8)  # n1 = 1024
    with pytest.raises(TypeError, match="max_abs must be a real number"):
        NU.inq_exponent_range("1", 4)
    with pytest.raises(ValueError, match="n2 must be <= n1"):
        NU.power_of_two_levels(-3, -2)
    with pytest.raises(TypeError, match="n1 must be an integer"):
        NU.power_of_two_levels(1.0, 0)
    with pytest.raises(TypeError, match="w must have a floating dtype"):
        NU.power_of_two_quantize(np.arange(4), bits=4)
    with pytest.raises(ValueError, match="w must be finite"):
        NU.power_of_two_quantize(np.array([1.0, np.nan]), bits=4)
    with pytest.raises(ValueError, match="rule must be one of"):
        NU.power_of_two_quantize(np.ones(3), bits=4, rule="round")
    with pytest.raises(ValueError, match="bits must be an integer in"):
        NU.power_of_two_quantize(np.ones(3), bits=9)
    with pytest.raises(ValueError, match="max_abs must be finite and > 0"):
        NU.power_of_two_quantize(np.ones(3), bits=4, max_abs=-1.0)


# ======================================================================================
# Logarithmic quantization (Miyashita et al. 2016, Eqs. 3-5)
# ======================================================================================


def _logquant_reference(x, bits, fsr, k=1, underflow="zero"):
    """Eqs. (3)-(5), one value at a time, with Python's math (base 2**(1/k))."""
    out = []
    for v in x:
        if v == 0:
            out.append(0.0)
            continue
        e = round(k * math.log2(abs(v)))
        if e <= fsr - 2**bits:
            if underflow == "zero":
                out.append(0.0)
                continue
            e = fsr - 2**bits + 1
        e = min(e, fsr - 1)
        out.append(math.copysign(2.0 ** (e / k), v))
    return np.array(out)


@pytest.mark.parametrize("base,k", [("2", 1), ("sqrt2", 2)])
@pytest.mark.parametrize("underflow", ["zero", "clip"])
@given(w=weights, bits=st.integers(1, 5), fsr=st.integers(-6, 12))
def test_log_quantize_matches_eqs_3_to_5(base, k, underflow, w, bits, fsr):
    got = NU.log_quantize(w, bits=bits, fsr=fsr, base=base, underflow=underflow)
    np.testing.assert_allclose(got, _logquant_reference(w, bits, fsr, k, underflow), rtol=1e-15, atol=0)
    assert in_set(got, NU.log_levels(bits, fsr=fsr, base=base))


def test_log_quantize_hand_examples():
    # bits = 2, FSR = 0: exponents -3, -2, -1 and zero; Round in the log domain
    x = np.array([0.9, 0.7, 0.36, 0.35, 0.1, 0.06, 0.0, -0.4])
    np.testing.assert_array_equal(NU.log_quantize(x, bits=2, fsr=0),
                                  [0.5, 0.5, 0.5, 0.25, 0.125, 0.0, 0.0, -0.5])
    # 0.06: log2 = -4.06 -> -4 <= FSR - 2^b = -4 underflows; clip keeps 2^-3
    assert NU.log_quantize(np.array([0.06]), bits=2, fsr=0, underflow="clip")[0] == 0.125
    # base sqrt 2: levels sqrt2^e, e = FSR - 3 .. FSR - 1
    np.testing.assert_allclose(NU.log_levels(2, fsr=0, base="sqrt2", signed=False),
                               [0, 2**-1.5, 2**-1, 2**-0.5], rtol=1e-15)
    assert NU.log_quantize(np.array([0.6]), bits=2, fsr=0, base="sqrt2")[0] == pytest.approx(2**-0.5)


@pytest.mark.parametrize("base", NU.LOG_BASES)
@given(w=weights, bits=st.integers(1, 5), fsr=st.integers(-4, 11))
def test_log_quantize_properties(base, w, bits, fsr):
    before = w.copy()
    q = NU.log_quantize(w, bits=bits, fsr=fsr, base=base)
    assert np.array_equal(w, before)
    np.testing.assert_array_equal(NU.log_quantize(-w, bits=bits, fsr=fsr, base=base), -q)
    assert (q[w == 0] == 0).all()
    order = np.argsort(w, kind="stable")
    assert (np.diff(q[order]) >= 0).all()
    np.testing.assert_array_equal(NU.log_quantize(q, bits=bits, fsr=fsr, base=base), q)


def test_log_quantize_unsigned_dtype_and_levels():
    a = np.array([0.0, 0.2, 3.0], dtype=np.float32)
    q = NU.log_quantize(a, bits=3, fsr=1, signed=False)
    assert q.dtype == np.float32 and in_set(q, NU.log_levels(3, fsr=1, signed=False), np.float32)
    assert NU.log_levels(3, fsr=1).size == 2 * 2**3 - 1
    assert NU.log_levels(3, fsr=1, signed=False).size == 2**3


def test_log_quantize_bad_input():
    with pytest.raises(ValueError, match="x must be non-negative with signed=False"):
        NU.log_quantize(np.array([-1.0]), bits=3, fsr=0, signed=False)
    with pytest.raises(ValueError, match="base must be one of"):
        NU.log_quantize(np.ones(2), bits=3, fsr=0, base=2)
    with pytest.raises(ValueError, match="underflow must be one of"):
        NU.log_quantize(np.ones(2), bits=3, fsr=0, underflow="wrap")
    with pytest.raises(TypeError, match="fsr must be an integer"):
        NU.log_quantize(np.ones(2), bits=3, fsr=1.5)
    with pytest.raises(ValueError, match=r"fsr must be an integer in \[-256, 256\]"):
        NU.log_quantize(np.ones(2), bits=3, fsr=1000)
    with pytest.raises(ValueError, match="bits must be an integer"):
        NU.log_quantize(np.ones(2), bits=0, fsr=0)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        NU.log_quantize(np.ones(2, dtype=int), bits=3, fsr=0)
    with pytest.raises(ValueError, match="x must be finite"):
        NU.log_quantize(np.array([np.inf]), bits=3, fsr=0)
    with pytest.raises(TypeError, match="signed must be True or False"):
        NU.log_levels(3, fsr=0, signed=1)


# ======================================================================================
# ShiftCNN
# ======================================================================================


def test_shiftcnn_codebook_definition():
    # B = 4: M = 15 codewords, floor(M/2) = 7 magnitudes 2^{-n+1} ... 2^{-n-5}
    for n in (1, 2, 3):
        cb = NU.shiftcnn_codebook(4, n)
        assert cb.size == 15 and (np.diff(cb) > 0).all() and cb[7] == 0
        np.testing.assert_array_equal(cb[8:], 2.0 ** np.arange(-n - 5, -n + 2))
    np.testing.assert_array_equal(NU.shiftcnn_codebook(2, 1), [-1, 0, 1])  # ternary


def _shiftcnn_reference(w, bits, n_shifts):
    """The greedy algorithm, one weight at a time, with Python's min over the codebook."""
    s = max(abs(v) for v in w) or 1.0
    out, resid = [], []
    for v in w:
        r, total = v / s, 0.0
        for n in range(1, n_shifts + 1):
            cb = NU.shiftcnn_codebook(bits, n).tolist()
            q = min(cb, key=lambda c: (abs(r - c), -abs(c)))  # nearest; a tie goes to the larger
            total += q
            r -= q
        out.append(s * total)
        resid.append(r)
    return np.array(out), np.array(resid)


@given(w=weights, bits=st.integers(2, 5), n_shifts=st.integers(1, 4))
def test_shiftcnn_greedy_matches_reference(w, bits, n_shifts):
    before = w.copy()
    idx, s = NU.shiftcnn_encode(w, bits=bits, n_shifts=n_shifts)
    assert np.array_equal(w, before)
    assert idx.dtype == np.uint8 and idx.shape == (n_shifts,) + w.shape
    ref, _ = _shiftcnn_reference(w, bits, n_shifts)
    got = NU.shiftcnn_decode(idx, bits=bits, scale=s, dtype=np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-14 * s)
    np.testing.assert_array_equal(NU.shiftcnn_quantize(w, bits=bits, n_shifts=n_shifts), got)


@given(w=weights, bits=st.integers(2, 5))
def test_shiftcnn_error_never_grows_with_terms(w, bits):
    s = float(np.abs(w).max()) or 1.0
    prev = np.abs(w / s)
    for n in range(1, 6):
        r = np.abs(w - NU.shiftcnn_quantize(w, bits=bits, n_shifts=n)) / s
        assert (r <= prev + 1e-12).all()
        e_min = -n - (2 ** (bits - 1) - 1) + 2  # smallest exponent of C_n
        assert (r <= max(2.0**-n, 2.0 ** (e_min - 1)) + 1e-12).all()  # halving, until the floor
        prev = r


def test_shiftcnn_hand_example_and_ternary_case():
    w = np.array([0.7, -1.0, 0.0, 0.2])
    # 0.7 -> 1/2 (C_1) + 1/4 (C_2); 0.2 -> 1/4 (C_1, midpoint 3/16 < 0.2), then -1/16 (C_2)
    np.testing.assert_array_equal(NU.shiftcnn_quantize(w, bits=4, n_shifts=2), [0.75, -1.0, 0.0, 0.1875])
    np.testing.assert_array_equal(NU.shiftcnn_quantize(w, bits=4, n_shifts=1), [0.5, -1.0, 0.0, 0.25])
    # B = 2, N = 1 on weights normalized to max 1 is INQ's ternary rule with s = 1
    x = np.random.default_rng(1).standard_normal(1000)
    x /= np.abs(x).max()
    np.testing.assert_array_equal(NU.shiftcnn_quantize(x, bits=2, n_shifts=1),
                                  NU.power_of_two_quantize(x, bits=2, max_abs=1.0))


@given(w=weights, bits=st.integers(2, 5), n_shifts=st.integers(1, 3))
def test_shiftcnn_properties(w, bits, n_shifts):
    q = NU.shiftcnn_quantize(w, bits=bits, n_shifts=n_shifts)
    np.testing.assert_array_equal(NU.shiftcnn_quantize(-w, bits=bits, n_shifts=n_shifts), -q)
    assert (q[w == 0] == 0).all()
    if n_shifts == 1:
        s = float(np.abs(w).max()) or 1.0
        assert in_set(q / s, NU.shiftcnn_codebook(bits, 1))
        order = np.argsort(w, kind="stable")
        assert (np.diff(q[order]) >= 0).all()  # one term: a monotone staircase
        np.testing.assert_array_equal(NU.shiftcnn_quantize(q, bits=bits, n_shifts=1, scale=s), q)


def test_shiftcnn_scale_dtype_and_bad_input():
    w = np.array([[0.5, -0.25]], dtype=np.float32)
    idx, s = NU.shiftcnn_encode(w, bits=3, n_shifts=2)
    assert s == 0.5 and NU.shiftcnn_decode(idx, bits=3, scale=s).dtype == np.float32
    assert NU.shiftcnn_quantize(w, bits=3, n_shifts=2).dtype == np.float32
    idx, s = NU.shiftcnn_encode(np.zeros(3), bits=3, n_shifts=2)
    assert s == 1.0 and not NU.shiftcnn_decode(idx, bits=3, scale=s).any()
    with pytest.raises(ValueError, match=r"indices must be in \[0, 6\] for bits=3"):
        NU.shiftcnn_decode(np.full((1, 2), 7), bits=3, scale=1.0)
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        NU.shiftcnn_decode(np.zeros((1, 2)), bits=3, scale=1.0)
    with pytest.raises(ValueError, match="indices must have shape"):
        NU.shiftcnn_decode(np.int64(3), bits=3, scale=1.0)
    with pytest.raises(ValueError, match="n_shifts must be an integer"):
        NU.shiftcnn_encode(np.ones(2), bits=3, n_shifts=0)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        NU.shiftcnn_encode(np.ones(2), bits=3, n_shifts=1, scale=0.0)
    with pytest.raises(ValueError, match="bits must be an integer in"):
        NU.shiftcnn_codebook(1)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        NU.shiftcnn_codebook(3, 0)


# ======================================================================================
# HWGQ
# ======================================================================================

# Uniform HWGQ steps in the code of the HWGQ first author (zhaoweicai/EdMIPS,
# models/quant_module.py, `hwgq_steps`); we could not check the CVPR paper's own text offline.
HWGQ_PUBLISHED_STEPS = {1: 0.799, 2: 0.538, 3: 0.3217, 4: 0.185}


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_hwgq_uniform_step_published(bits):
    step = NU.hwgq_levels(bits).levels[1]
    # the published steps carry 3-4 digits (0.538 is 0.5388 truncated; 0.799 is sqrt(2/pi) = 0.7979)
    assert abs(step - HWGQ_PUBLISHED_STEPS[bits]) < 1.5e-3
    if bits == 3:
        assert abs(step - 0.3217) < 5e-5
    if bits == 1:
        assert abs(step - math.sqrt(2 / math.pi)) < 1e-8


def test_hwgq_against_quadrature():
    integrate = pytest.importorskip("scipy.integrate")
    optimize = pytest.importorskip("scipy.optimize")
    phi = _gauss_pdf

    def mse(q, t):  # E[(Q(x) - relu(x))^2], cells (t_i, t_{i+1}] -> q_i > 0, x <= 0 -> 0
        edges = list(t) + [np.inf]
        return sum(integrate.quad(lambda x: (x - qi) ** 2 * phi(x), edges[i], edges[i + 1])[0]
                   for i, qi in enumerate(q))

    for bits in (1, 2, 3):
        m = 2**bits - 1
        uni = NU.hwgq_levels(bits)
        np.testing.assert_allclose(uni.levels, np.arange(m + 1) * uni.levels[1], rtol=1e-15)
        assert abs(uni.mse - mse(uni.levels[1:], uni.thresholds)) < 1e-9

        def f(d):
            q = d * np.arange(1, m + 1)
            return mse(q, np.concatenate(([0.0], 0.5 * (q[1:] + q[:-1]))))

        if bits < 3:  # an independent 1-d minimization by scipy
            ref = optimize.minimize_scalar(f, bounds=(0.05, 2.0), method="bounded", options={"xatol": 1e-9})
            assert abs(uni.levels[1] - ref.x) < 1e-6 and uni.mse <= ref.fun + 1e-12
        else:  # cheaper: a local-optimality check of the step
            d = uni.levels[1]
            assert f(d) <= min(f(d * 0.999), f(d * 1.001))

        lm = NU.hwgq_levels(bits, uniform=False)
        q, t = lm.levels[1:], lm.thresholds
        assert t[0] == 0 and np.allclose(t[1:], 0.5 * (q[1:] + q[:-1]), rtol=1e-14)
        edges = list(t) + [np.inf]
        for i, qi in enumerate(q):  # centroid condition on the positive half
            p = integrate.quad(phi, edges[i], edges[i + 1])[0]
            m1 = integrate.quad(lambda x: x * phi(x), edges[i], edges[i + 1])[0]
            assert abs(qi - m1 / p) < 1e-8
        assert abs(lm.mse - mse(q, t)) < 1e-9
        assert lm.mse <= uni.mse + 1e-15 and (bits == 1 or lm.mse < uni.mse)


def test_hwgq_lloyd_is_half_of_the_symmetric_lloyd_max():
    # with t_1 = 0 pinned, the HWGQ problem is the positive half of the symmetric 2m-level
    # Lloyd-Max quantizer of N(0, 1), whose middle threshold is 0: an independent route
    for bits in (1, 2, 3):
        m = 2**bits - 1
        ref = NU.lloyd_max(n_levels=2 * m)
        got = NU.hwgq_levels(bits, uniform=False)
        np.testing.assert_allclose(got.levels[1:], ref.levels[m:], atol=1e-9)
        np.testing.assert_allclose(got.thresholds[1:], ref.thresholds[m:], atol=1e-9)
        assert abs(2 * got.mse - ref.mse) < 1e-10  # the two halves cost the same


def test_hwgq_quantize_semantics_and_empirical_mse(rng):
    x = rng.standard_normal(200_000)
    before = x.copy()
    for uniform in (True, False):
        r = NU.hwgq_levels(2, uniform=uniform)
        q = NU.hwgq_quantize(x, bits=2, uniform=uniform)
        assert np.array_equal(x, before)
        assert in_set(q, r.levels)
        assert (q[x <= 0] == 0).all() and (q[x > 0] > 0).all()  # the paper's t_1 = 0
        order = np.argsort(x)
        assert (np.diff(q[order]) >= 0).all()
        emp = np.mean((q - np.maximum(x, 0)) ** 2)
        assert abs(emp - r.mse) < 0.03 * r.mse
        # idempotent on its own outputs (levels sit inside their own cells)
        np.testing.assert_array_equal(NU.hwgq_quantize(q, bits=2, uniform=uniform), q)
    # scale: quantizing sigma x with scale sigma is sigma times quantizing x
    np.testing.assert_allclose(NU.hwgq_quantize(3 * x[:100], bits=3, scale=3.0),
                               3 * NU.hwgq_quantize(x[:100], bits=3), rtol=1e-15)
    assert NU.hwgq_quantize(np.float32([0.4, -1]), bits=2).dtype == np.float32


def test_hwgq_bad_input():
    with pytest.raises(ValueError, match=r"bits must be an integer in \[1, 8\]"):
        NU.hwgq_levels(0)
    with pytest.raises(TypeError, match="uniform must be True or False"):
        NU.hwgq_levels(2, uniform="yes")
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        NU.hwgq_quantize(np.ones(2), bits=2, scale=0.0)
    with pytest.raises(ValueError, match="x must be finite"):
        NU.hwgq_quantize(np.array([np.nan]), bits=2)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        NU.hwgq_quantize(np.array([1, 2]), bits=2)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        NU.hwgq_levels(4, uniform=False, max_iter=2)


# ======================================================================================
# The optimal uniform quantizer: Max (1960), Table II
# ======================================================================================

# (step, tolerance, MSE, tolerance): half a unit in the last printed digit
MAX_TABLE_UNIFORM = {2: (1.596, 5e-4, 0.3634, 5e-5), 4: (0.9957, 5e-5, 0.1188, 5e-5),
                     8: (0.5860, 5e-5, 0.03744, 5e-6), 16: (0.3352, 5e-5, 0.01154, 5e-6)}


@pytest.mark.parametrize("n", sorted(MAX_TABLE_UNIFORM))
def test_optimal_uniform_max_table(n):
    r = NU.optimal_uniform(n_levels=n)
    step, step_tol, mse, mse_tol = MAX_TABLE_UNIFORM[n]
    assert abs((r.levels[1] - r.levels[0]) - step) < step_tol
    assert abs(r.mse - mse) < mse_tol
    assert r.mse >= NU.lloyd_max(n_levels=n).mse - 1e-15  # Lloyd-Max is never worse


def test_optimal_uniform_against_grid():
    for density in NU.DENSITIES:
        for n in (3, 4, 8):
            r = NU.optimal_uniform(n_levels=n, density=density)
            grid = np.linspace(0.01, 3.0, 300)
            mses = [NU._uniform_mse(d, n, density) for d in grid]
            assert r.mse <= min(mses) + 1e-12
            np.testing.assert_allclose(np.diff(r.levels), r.levels[1] - r.levels[0], rtol=1e-12)
    # uniform density: the uniform quantizer is the Lloyd-Max quantizer, MSE 1/n^2
    assert abs(NU.optimal_uniform(n_levels=5, density="uniform").mse - 1 / 25) < 1e-10
    assert NU.optimal_uniform(n_levels=1).mse == 1.0
    with pytest.raises(TypeError, match="exactly one of bits and n_levels"):
        NU.optimal_uniform()


# ======================================================================================
# quantizer_mse: any level set on a density
# ======================================================================================


def test_quantizer_mse_against_quadrature_and_samples(rng):
    integrate = pytest.importorskip("scipy.integrate")
    dens = {"gaussian": _gauss_pdf, "laplace": _laplace_pdf}
    levels = np.sort(rng.normal(size=6))
    for name, pdf in dens.items():
        t = 0.5 * (levels[1:] + levels[:-1])
        edges = np.concatenate(([-np.inf], t, [np.inf]))
        parts = lambda lo, hi: [(lo, 0.0), (0.0, hi)] if lo < 0 < hi else [(lo, hi)]  # noqa: E731
        ref = sum(integrate.quad(lambda x: (x - y) ** 2 * pdf(x), a, b)[0]
                  for i, y in enumerate(levels) for a, b in parts(edges[i], edges[i + 1]))
        assert abs(NU.quantizer_mse(levels, density=name) - ref) < 1e-8
    # Lloyd-Max and the optimal uniform quantizer report the same MSE as quantizer_mse
    for r in (NU.lloyd_max(3, density="laplace"), NU.optimal_uniform(3, density="laplace")):
        assert abs(NU.quantizer_mse(r.levels, density="laplace") - r.mse) < 1e-12
    # "log" thresholds are the rule="log" of power_of_two_quantize: compare with samples
    x = rng.standard_normal(400_000)
    n1, n2 = NU.inq_exponent_range(np.abs(x).max(), 4)
    lv = NU.power_of_two_levels(n1, n2)
    for rule, th in (("inq", "nearest"), ("log", "log")):
        emp = np.mean((x - NU.power_of_two_quantize(x, bits=4, rule=rule)) ** 2)
        assert abs(emp - NU.quantizer_mse(lv, thresholds=th)) < 0.02 * emp
    # explicit thresholds equal to the midpoints give the "nearest" value
    assert NU.quantizer_mse(lv, thresholds=0.5 * (lv[1:] + lv[:-1])) == NU.quantizer_mse(lv)


def test_quantizer_mse_bad_input():
    with pytest.raises(ValueError, match="levels must be strictly increasing"):
        NU.quantizer_mse([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="levels must not be empty"):
        NU.quantizer_mse(np.array([]))
    with pytest.raises(ValueError, match="thresholds must hold len"):
        NU.quantizer_mse([0.0, 1.0], thresholds=[0.2, 0.3])
    with pytest.raises(ValueError, match="thresholds must be one of"):
        NU.quantizer_mse([0.0, 1.0], thresholds="mid")
    with pytest.raises(ValueError, match="thresholds must be non-decreasing"):
        NU.quantizer_mse([0.0, 1.0, 2.0], thresholds=[0.5, 0.4])
    with pytest.raises(TypeError, match="levels must have a floating dtype"):
        NU.quantizer_mse([0, 1])


def test_decision_thresholds():
    lv = NU.power_of_two_levels(0, -3)  # 0, +-1/8 ... +-1
    t_near = NU.decision_thresholds(lv)
    t_log = NU.decision_thresholds(lv, rule="log")
    pos = lv[lv > 0]
    np.testing.assert_array_equal(t_near[lv.size // 2:], 0.5 * (np.concatenate(([0.0], pos[:-1])) + pos))
    np.testing.assert_allclose(t_log[lv.size // 2 + 1:], np.sqrt(pos[1:] * pos[:-1]), rtol=1e-15)
    assert t_log[lv.size // 2] == pytest.approx(pos[0] / np.sqrt(2))
    np.testing.assert_array_equal(t_log, -t_log[::-1])  # symmetric levels, symmetric thresholds
    # log thresholds reproduce power_of_two_quantize(rule="log") exactly, away from the thresholds
    x = np.random.default_rng(3).uniform(-1.2, 1.2, 5000)
    idx = np.searchsorted(t_log, x, side="right")
    assert NU.inq_exponent_range(1.0, 4) == (0, -3)  # the same level set
    np.testing.assert_array_equal(lv[idx], NU.power_of_two_quantize(x, bits=4, max_abs=1.0, rule="log"))
    assert NU.decision_thresholds([-1.0, 2.0], rule="log")[0] == 0.0  # opposite signs: split at 0
    with pytest.raises(ValueError, match="rule must be one of"):
        NU.decision_thresholds(lv, rule="mid")


def test_hwgq_levels_converge_at_eight_bits():
    # 255 Lloyd levels of the half Gaussian: converged without a warning, and a fixed point
    # (each level the mean of its cell, the first threshold pinned at 0)
    import warnings
    from scipy import stats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = NU.hwgq_levels(8, uniform=False)
    q, t = r.levels[1:], r.thresholds
    assert t[0] == 0.0
    hi = np.concatenate((t[1:], [np.inf]))
    p = stats.norm.cdf(hi) - stats.norm.cdf(t)
    m1 = stats.norm.pdf(t) - stats.norm.pdf(hi)  # int_t^hi x phi(x) dx
    np.testing.assert_allclose(q, m1 / p, rtol=1e-9)
    assert r.mse < NU.hwgq_levels(8).mse  # better than the uniform HWGQ
