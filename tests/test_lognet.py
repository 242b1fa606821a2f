"""LogNet (qref.nonuniform: log_encode, log_shift_dot, log_add, log_accumulate, log_domain_dot).

The shift-based dot product against the exact (fsum) dot product of the quantized values, the
log-domain accumulation against its error bound, hand cases, and bad input."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qref import nonuniform as NU


def _ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------
# log_encode
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", NU.LOG_BASES)
@pytest.mark.parametrize("underflow", ("zero", "clip"))
def test_encode_decodes_to_log_quantize(rng, base, underflow):
    x = rng.normal(size=500) * np.exp(rng.uniform(-6, 2, size=500))
    x[:5] = 0.0
    s, e = NU.log_encode(_ro(x), bits=3, fsr=2, base=base, underflow=underflow)
    assert s.dtype == np.int8 and e.dtype == np.int64
    k = 2 if base == "sqrt2" else 1
    decoded = s * np.ldexp(np.where(e % 2 == 1, math.sqrt(2), 1.0), e // 2) if k == 2 else s * np.ldexp(1.0, e)
    np.testing.assert_array_equal(decoded, NU.log_quantize(x, bits=3, fsr=2, base=base, underflow=underflow))
    live = s != 0
    assert e[live].min() >= 2 - 2**3 + 1 and e[live].max() <= 2 - 1 and np.all(e[~live] == 0)


# --------------------------------------------------------------------------------------
# log_shift_dot: exact agreement with the float dot product of the quantized values
# --------------------------------------------------------------------------------------


def _quantized(x, w, xb, xf, wb, wf, base="2"):
    return (NU.log_quantize(x, bits=xb, fsr=xf, signed=False),
            NU.log_quantize(w, bits=wb, fsr=wf, base=base))


def test_shift_dot_equals_exact_sum_of_products(rng):
    for _ in range(20):
        n = int(rng.integers(1, 300))
        x = np.abs(rng.normal(size=n)) * rng.uniform(0.1, 4)
        w = rng.normal(size=n) * rng.uniform(0.01, 1)
        xb, wb = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        xf, wf = int(rng.integers(-2, 4)), int(rng.integers(-3, 2))
        xq, wq = _quantized(x, w, xb, xf, wb, wf)
        got = NU.log_shift_dot(_ro(x), _ro(w), x_bits=xb, x_fsr=xf, w_bits=wb, w_fsr=wf)
        assert got.shape == () and float(got) == math.fsum(xq * wq)          # bit for bit


def test_shift_dot_equals_numpy_dot_when_float_sum_is_exact(rng):
    # 4-bit codes span 15 octaves: every partial sum of <= 2^20 terms fits in float64's 53 bits
    x = np.abs(rng.normal(size=(7, 64)))
    w = rng.normal(size=(64, 5)) * 0.3
    xq, wq = _quantized(x, w, 4, 2, 4, 0)
    got = NU.log_shift_dot(x, w, x_bits=4, x_fsr=2, w_bits=4, w_fsr=0)
    assert got.shape == (7, 5)
    np.testing.assert_array_equal(got, xq @ wq)


def test_shift_dot_batches_and_vectors_agree(rng):
    x = np.abs(rng.normal(size=(3, 20)))
    w = rng.normal(size=(20, 4))
    full = NU.log_shift_dot(x, w, x_bits=3, x_fsr=2, w_bits=3, w_fsr=1)
    for b in range(3):
        for j in range(4):
            assert full[b, j] == NU.log_shift_dot(x[b], w[:, j], x_bits=3, x_fsr=2, w_bits=3, w_fsr=1)


def test_shift_dot_huge_range_uses_exact_integers():
    # 8-bit codes: products span hundreds of octaves; int64 would overflow, the result stays exact
    x = np.array([2.0**-200, 1.0, 2.0**-150])
    w = np.array([1.0, 2.0**-120, -(2.0**-100)])
    got = NU.log_shift_dot(x, w, x_bits=8, x_fsr=1, w_bits=8, w_fsr=1)
    xq, wq = _quantized(x, w, 8, 1, 8, 1)
    np.testing.assert_array_equal(xq, x)
    np.testing.assert_array_equal(wq, w)
    assert float(got) == math.fsum(xq * wq) == 2.0**-120 + 2.0**-200 - 2.0**-250


def test_shift_dot_sqrt2_weights(rng):
    x = np.abs(rng.normal(size=(4, 50)))
    w = rng.normal(size=(50, 3))
    xq, wq = _quantized(x, w, 3, 2, 4, 1, base="sqrt2")
    got = NU.log_shift_dot(x, w, x_bits=3, x_fsr=2, w_bits=4, w_fsr=1, w_base="sqrt2")
    exact = np.array([[math.fsum(xq[b] * wq[:, j]) for j in range(3)] for b in range(4)])
    np.testing.assert_allclose(got, exact, rtol=1e-14, atol=1e-15)
    # hand case: 2^0 * sqrt2^1 + 2^-1 * sqrt2^-2 = sqrt2 + 1/4
    v = NU.log_shift_dot(np.array([1.0, 0.5]), np.array([1.41, 0.5]), x_bits=2, x_fsr=1, w_bits=3, w_fsr=2,
                         w_base="sqrt2")
    assert float(v) == pytest.approx(math.sqrt(2) + 0.25, rel=1e-15)


def test_shift_dot_zeros_and_dtype(rng):
    assert float(NU.log_shift_dot(np.zeros(4), np.ones(4), x_bits=2, x_fsr=0, w_bits=2, w_fsr=1)) == 0.0
    x32 = np.abs(rng.normal(size=8)).astype(np.float32)
    out = NU.log_shift_dot(x32, x32, x_bits=3, x_fsr=2, w_bits=3, w_fsr=2)
    assert out.dtype == np.float64


@given(st.lists(st.integers(-20, 5), min_size=1, max_size=40), st.lists(st.integers(-20, 5), min_size=1, max_size=40),
       st.lists(st.booleans(), min_size=1, max_size=40))
def test_shift_dot_property_on_exact_powers(ex, ew, neg):
    n = min(len(ex), len(ew), len(neg))
    x = np.ldexp(1.0, np.array(ex[:n]))
    w = np.where(neg[:n], -1.0, 1.0) * np.ldexp(1.0, np.array(ew[:n]))
    got = NU.log_shift_dot(x, w, x_bits=5, x_fsr=6, w_bits=5, w_fsr=6)        # exponents -25..5: no rounding
    assert float(got) == math.fsum(x * w)


# --------------------------------------------------------------------------------------
# log_add / log_accumulate: hand cases and the error bound
# --------------------------------------------------------------------------------------


def test_log_add_hand_cases():
    a = np.array([3.0, 3.0, 3.0, 3.0, -np.inf, -np.inf])
    b = np.array([3.0, 2.0, 0.0, -10.0, 1.5, -np.inf])
    exact = NU.log_add(a, b)
    np.testing.assert_allclose(exact[:5], np.log2([16, 12, 9, 8 + 2**-10, 2**1.5]), rtol=1e-15)
    assert exact[5] == -np.inf
    # f = 0: correction 1 for |a - b| <= 1 (phi(1) = 0.585 rounds up), 0 beyond
    np.testing.assert_array_equal(NU.log_add(a, b, frac_bits=0), [4.0, 4.0, 3.0, 3.0, 1.5, -np.inf])
    # f = 2: phi(1) = 0.585 -> 0.5, phi(3) = 0.170 -> 0.25
    np.testing.assert_array_equal(NU.log_add([3.0, 3.0], [2.0, 0.0], frac_bits=2), [3.5, 3.25])
    assert NU.log_add(1.0, 2.0).shape == ()


def test_log_add_symmetric_and_broadcasts(rng):
    a, b = rng.normal(size=(5, 1)) * 4, rng.normal(size=(1, 6)) * 4
    np.testing.assert_array_equal(NU.log_add(a, b, frac_bits=3), NU.log_add(b, a, frac_bits=3))
    assert NU.log_add(a, b).shape == (5, 6)


@pytest.mark.parametrize("f", [0, 1, 2, 4, 8])
def test_accumulate_error_bound(rng, f):
    worst = 0.0
    for _ in range(50):
        n = int(rng.integers(1, 200))
        p = rng.integers(-12, 4, size=n).astype(np.float64) + (rng.integers(0, 2, size=n) / 2 if f else 0)
        exact = math.log2(math.fsum(2.0**p))
        err = abs(float(NU.log_accumulate(_ro(p), frac_bits=f)) - exact)
        bound = (n - 1) * 2.0 ** (-f - 1)
        assert err <= bound + 1e-12
        worst = max(worst, err / max(bound, 1e-300))
    assert worst > 0.01 or f == 8                       # the bound is not vacuous: errors do occur


def test_accumulate_exact_and_max_bounds(rng):
    p = rng.normal(size=(4, 100)) * 5
    exact = np.log2(np.exp2(p).sum(axis=1))
    np.testing.assert_allclose(NU.log_accumulate(p, axis=1), exact, rtol=1e-12)
    np.testing.assert_allclose(NU.log_accumulate(p.T, axis=0), exact, rtol=1e-12)
    gap = exact - p.max(axis=1)                          # max alone: error in [0, log2 n]
    assert np.all(gap >= 0) and np.all(gap <= math.log2(100))
    assert float(NU.log_accumulate(np.array([2.5]))) == 2.5
    assert float(NU.log_accumulate(np.array([-np.inf, 1.0, -np.inf]), frac_bits=0)) == 1.0


def test_domain_dot_within_bound_of_shift_dot(rng):
    for f in (0, 2, 6):
        for _ in range(20):
            n = int(rng.integers(2, 100))
            x, w = np.abs(rng.normal(size=n)), rng.normal(size=n)
            value, (sp, sn) = NU.log_domain_dot(_ro(x), _ro(w), x_bits=4, x_fsr=2, w_bits=4, w_fsr=1, frac_bits=f)
            xq, wq = _quantized(x, w, 4, 2, 4, 1)
            prod = xq * wq
            for part, exact_terms in ((sp, prod[prod > 0]), (sn, -prod[prod < 0])):
                if exact_terms.size == 0:
                    assert part == -np.inf
                    continue
                rel = abs(2.0**part / math.fsum(exact_terms) - 1)
                assert rel <= 2.0 ** ((exact_terms.size - 1) * 2.0 ** (-f - 1)) - 1 + 1e-12
            assert value == pytest.approx(2.0**sp - 2.0**sn)
    # exact correction: the log-domain result equals the shift-based one (to float rounding)
    x, w = np.abs(rng.normal(size=64)), rng.normal(size=64)
    exact = float(NU.log_shift_dot(x, w, x_bits=4, x_fsr=2, w_bits=4, w_fsr=1))
    assert NU.log_domain_dot(x, w, x_bits=4, x_fsr=2, w_bits=4, w_fsr=1)[0] == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_domain_dot_sqrt2_weights(rng):
    x, w = np.abs(rng.normal(size=30)), rng.normal(size=30)
    exact = float(NU.log_shift_dot(x, w, x_bits=3, x_fsr=2, w_bits=4, w_fsr=1, w_base="sqrt2"))
    got, _ = NU.log_domain_dot(x, w, x_bits=3, x_fsr=2, w_bits=4, w_fsr=1, w_base="sqrt2")
    assert got == pytest.approx(exact, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def test_bad_input():
    kw = dict(x_bits=3, x_fsr=1, w_bits=3, w_fsr=1)
    with pytest.raises(ValueError, match="share"):
        NU.log_shift_dot(np.ones(3), np.ones(4), **kw)
    with pytest.raises(ValueError, match="share"):
        NU.log_shift_dot(np.ones((2, 2, 3)), np.ones(3), **kw)
    with pytest.raises(ValueError, match="share"):
        NU.log_shift_dot(np.ones(0), np.ones(0), **kw)
    with pytest.raises(ValueError, match="non-negative"):
        NU.log_shift_dot(-np.ones(3), np.ones(3), **kw)
    with pytest.raises(ValueError):
        NU.log_shift_dot(np.ones(3), np.array([1.0, np.nan, 1.0]), **kw)
    with pytest.raises(ValueError, match="w_base"):
        NU.log_shift_dot(np.ones(3), np.ones(3), w_base="e", **kw)
    with pytest.raises(ValueError, match="bits"):
        NU.log_shift_dot(np.ones(3), np.ones(3), x_bits=0, x_fsr=1, w_bits=3, w_fsr=1)
    with pytest.raises(TypeError):
        NU.log_shift_dot(np.ones(3, dtype=int), np.ones(3), **kw)
    with pytest.raises(ValueError, match="frac_bits"):
        NU.log_add(1.0, 2.0, frac_bits=31)
    with pytest.raises(ValueError, match="frac_bits"):
        NU.log_add(1.0, 2.0, frac_bits=-1)
    with pytest.raises(ValueError, match="NaN"):
        NU.log_add(np.nan, 2.0)
    with pytest.raises(ValueError, match="inf"):
        NU.log_add(np.inf, 2.0)
    with pytest.raises(ValueError, match="at least one"):
        NU.log_accumulate(np.ones((0, 3)), axis=0)
    with pytest.raises(ValueError, match="axis"):
        NU.log_accumulate(np.ones(3), axis=1)
    with pytest.raises(ValueError, match="share"):
        NU.log_domain_dot(np.ones(3), np.ones(2), **kw)


def test_domain_dot_batched_agrees_with_vectors_and_bound(rng):
    x = np.abs(rng.normal(size=(6, 40)))
    w = rng.normal(size=(40, 3))
    kw = dict(x_bits=4, x_fsr=2, w_bits=4, w_fsr=1)
    for f in (0, 3):
        val, (sp, sn) = NU.log_domain_dot(x, w, frac_bits=f, **kw)
        assert val.shape == sp.shape == sn.shape == (6, 3)
        for b in range(6):
            for j in range(3):
                v, (a, c) = NU.log_domain_dot(x[b], w[:, j], frac_bits=f, **kw)
                assert (v, a, c) == (val[b, j], sp[b, j], sn[b, j])
        exact = NU.log_shift_dot(x, w, **kw)
        scale = NU.log_shift_dot(x, np.abs(w), **kw)                       # |x_q|^T |w_q|
        eps = 2.0 ** ((40 - 1) * 2.0 ** (-f - 1)) - 1
        assert np.all(np.abs(val - exact) <= eps * scale + 1e-12)
    v1, _ = NU.log_domain_dot(x, w[:, 0], **kw)
    assert v1.shape == (6,)


def test_log_add_one_bit_table_threshold():
    # the docstring's rule for frac_bits=0: the correction rounds to 1 while phi(d) >= 1/2, i.e. for
    # d <= -log2(sqrt2 - 1) = 1.2716 (not d <= 1, which the text said before)
    d_star = -math.log2(math.sqrt(2) - 1)
    got = NU.log_add(np.zeros(4), np.array([1.0, 1.2, d_star - 1e-9, d_star + 1e-9]), frac_bits=0)
    np.testing.assert_array_equal(got, [2.0, 2.2, d_star - 1e-9 + 1, d_star + 1e-9])
