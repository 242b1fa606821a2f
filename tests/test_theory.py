"""Angle preservation and dot-product proportionality (qref.theory): limits vs simulation and integration."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from qref import binary as BI
from qref import data as D
from qref import theory as T
from qref import uniform as U

QUANT_CASES = [("binary", {}), ("ternary", {}), ("ternary", {"threshold": 1.1}),
               ("uniform", {"bits": 2}), ("uniform", {"bits": 3}), ("uniform", {"bits": 4, "clip": 2.0}),
               ("uniform", {"bits": 6})]
SCIPY_DIST = {"gaussian": stats.norm(), "laplace": stats.laplace(scale=1 / math.sqrt(2)),
              "uniform": stats.uniform(-math.sqrt(3), 2 * math.sqrt(3))}


def test_binary_limit_is_arccos_sqrt_2_over_pi():
    assert T.limit_cos() == pytest.approx(math.sqrt(2 / math.pi), abs=1e-14)
    assert T.limit_angle() == pytest.approx(math.degrees(math.acos(math.sqrt(2 / math.pi))), abs=1e-12)
    assert T.BINARY_LIMIT_DEGREES == pytest.approx(37.0714, abs=1e-4)
    # the other families in closed form: E|w| / sqrt(E w^2) = 1/sqrt(2) (Laplace), sqrt(3)/2 (uniform)
    assert T.limit_angle(distribution="laplace") == pytest.approx(45.0, abs=1e-9)
    assert T.limit_angle(distribution="uniform") == pytest.approx(30.0, abs=1e-9)


def test_binary_angle_reproduced_at_large_dimension():
    w = D.synthetic_weights((4, 10**6), rng=0, dtype=np.float64)
    theta = T.quantization_angle(w)
    assert theta.shape == (4,)
    assert abs(theta.mean() - T.BINARY_LIMIT_DEGREES) < 0.1
    assert np.all(np.abs(theta - T.BINARY_LIMIT_DEGREES) < 0.1)


@pytest.mark.parametrize("distribution", T.DISTRIBUTIONS)
@pytest.mark.parametrize("quantizer, kw", QUANT_CASES)
def test_limit_matches_simulation(distribution, quantizer, kw):
    w = D.synthetic_weights((8, 200_000), distribution=distribution, rng=1, dtype=np.float64)
    if distribution == "uniform" and kw.get("threshold", 0) > 1.0:
        kw = {"threshold": 0.9}
    theta = T.quantization_angle(w, quantizer=quantizer, **kw).mean()
    assert theta == pytest.approx(T.limit_angle(quantizer, distribution=distribution, **kw), abs=0.1)


@pytest.mark.parametrize("distribution", T.DISTRIBUTIONS)
@pytest.mark.parametrize("quantizer, kw", QUANT_CASES)
def test_closed_form_matches_numerical_integration(distribution, quantizer, kw):
    """E[w q(w)] / sqrt(E[q^2]) by scipy.integrate.quad over the density, q from quantize_rows itself."""
    dist = SCIPY_DIST[distribution]
    if distribution == "uniform" and kw.get("threshold", 0) > 1.0:
        kw = {"threshold": 0.9}
    _, bits, threshold, clip = T._check_quantizer(quantizer, kw.get("bits"), kw.get("threshold"), kw.get("clip"))

    def q(x):  # the quantizer of a row whose RMS is exactly 1: build it from explicit levels
        if quantizer == "binary":
            return 1.0 if x >= 0 else -1.0
        if quantizer == "ternary":
            return float(np.sign(x)) if abs(x) > threshold else 0.0
        L = 2 ** (bits - 1) - 1
        return float(np.clip(np.rint(x / (clip / L)), -L, L) * clip / L)

    lo, hi = dist.support()
    lo, hi = max(lo, -40.0), min(hi, 40.0)
    pts = [0.0] + ([threshold, -threshold] if quantizer == "ternary" else [])
    if quantizer == "uniform":
        L = 2 ** (bits - 1) - 1
        pts += list((np.arange(-L, L) + 0.5) * clip / L)
    pts = sorted(p for p in set(pts) if lo < p < hi)
    opts = {"points": pts, "limit": 500, "epsabs": 1e-13, "epsrel": 1e-12}
    e_wq = integrate.quad(lambda x: x * q(x) * dist.pdf(x), lo, hi, **opts)[0]
    e_qq = integrate.quad(lambda x: q(x) ** 2 * dist.pdf(x), lo, hi, **opts)[0]
    assert T.limit_cos(quantizer, distribution=distribution, **kw) == pytest.approx(e_wq / math.sqrt(e_qq), abs=1e-8)


def test_ternary_limit_formula_and_optimum():
    t = 0.8
    num = 2 * stats.norm.pdf(t)                 # E[|w| 1{|w| > t}]
    p = 2 * stats.norm.sf(t)                    # P(|w| > t)
    assert T.limit_cos("ternary", threshold=t) == pytest.approx(num / math.sqrt(p), abs=1e-12)
    assert T.limit_cos("ternary", threshold=0.0) == pytest.approx(T.limit_cos(), abs=1e-14)
    ts = np.linspace(0.0, 2.0, 2001)
    best = ts[np.argmax([T.limit_cos("ternary", threshold=x) for x in ts])]
    assert T.optimal_threshold() == pytest.approx(best, abs=1e-3)
    assert T.optimal_threshold() == pytest.approx(0.612, abs=1e-3)          # TWN's ~0.6 sigma
    assert T.optimal_threshold(distribution="uniform") == pytest.approx(1 / math.sqrt(3), abs=1e-6)
    assert T.optimal_threshold(distribution="laplace") == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_angle_optimal_threshold_is_twn_least_squares():
    """With the best scale, ||w - alpha q||^2 = ||w||^2 sin^2(theta): TWN's exact threshold minimises the angle."""
    w = D.synthetic_weights(200_000, rng=2, dtype=np.float64)
    t, alpha, delta = BI.ternarize_twn(w)
    rms = math.sqrt(np.mean(w**2))
    assert float(delta[0]) / rms == pytest.approx(T.optimal_threshold(), abs=0.01)
    theta = math.radians(float(T.row_angles(w, t.astype(np.float64))))
    assert np.sum((w - alpha * t) ** 2) == pytest.approx(np.sum(w**2) * math.sin(theta) ** 2, rel=1e-9)


def test_uniform_two_bits_is_ternary_and_angle_decreases_with_bits():
    assert T.optimal_clip(2) == pytest.approx(2 * T.optimal_threshold(), abs=1e-6)
    w = D.synthetic_weights((3, 5000), rng=3, dtype=np.float64)
    np.testing.assert_allclose(T.quantization_angle(w, quantizer="uniform", bits=2, clip=1.3),
                               T.quantization_angle(w, quantizer="ternary", threshold=0.65), atol=1e-9)
    for dist in T.DISTRIBUTIONS:
        limits = [T.limit_angle("uniform", bits=b, distribution=dist) for b in range(2, 11)]
        assert limits[0] < T.limit_angle(distribution=dist)
        assert all(a > b for a, b in zip(limits, limits[1:]))
    sims = [T.quantization_angle(w, quantizer="uniform", bits=b).mean() for b in (2, 3, 4, 6, 8)]
    assert all(a > b for a, b in zip(sims, sims[1:]))
    # each extra bit roughly halves the angle at high resolution
    assert T.limit_angle("uniform", bits=9) / T.limit_angle("uniform", bits=10) == pytest.approx(2.0, abs=0.15)


def test_quantize_rows_values_and_uniform_uses_qref_uniform():
    w = np.array([[0.1, -2.0, 0.5, 1.4], [0.0, 0.0, 3.0, -1.0]], np.float32)
    np.testing.assert_array_equal(T.quantize_rows(w), BI.binarize(w))
    q = T.quantize_rows(w, quantizer="uniform", bits=3, clip=1.5)
    assert q.dtype == np.float32 and q.shape == w.shape
    for row, qrow in zip(w.astype(np.float64), q):
        m = 1.5 * math.sqrt(np.mean(row**2))
        p = U.params_from_range(-m, m, bits=3, symmetric=True, narrow_range=True)
        np.testing.assert_allclose(qrow, U.fake_quantize(row, p), rtol=1e-6)
        assert np.unique(qrow).size <= 7
    t = T.quantize_rows(w[0], quantizer="ternary", threshold=0.5)
    np.testing.assert_array_equal(t, [0, -1, 0, 1])
    w3 = D.synthetic_weights((2, 3, 50), rng=4)
    assert T.quantization_angle(w3, quantizer="ternary").shape == (2, 3)
    assert T.quantization_angle(w3[0, 0]).shape == ()
    w_copy = w.copy()
    T.quantization_angle(w, quantizer="uniform", bits=4)
    np.testing.assert_array_equal(w, w_copy)                  # input not modified


def test_row_angles():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(10, 30)), rng.normal(size=(10, 30))
    ref = [np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))) for a, b in zip(x, y)]
    np.testing.assert_allclose(T.row_angles(x, y), ref, atol=1e-10)
    np.testing.assert_allclose(T.row_angles(x, y, degrees=False), np.radians(ref), atol=1e-12)
    np.testing.assert_allclose(T.row_angles(x, 3 * x), 0.0, atol=1e-5)
    # two random vectors are nearly orthogonal in high dimension
    big = rng.normal(size=(2, 100_000))
    assert abs(float(T.row_angles(big[0], big[1])) - 90.0) < 1.0


def test_dot_product_correlation_equals_cos_for_isotropic_activations():
    w = D.synthetic_weights((6, 512), rng=6, dtype=np.float64)
    cos = np.cos(T.quantization_angle(w, degrees=False))
    rho = T.dot_product_correlation(w, n_samples=20_000, rng=7)
    assert rho.shape == (6,)
    np.testing.assert_allclose(rho, cos, atol=0.01)
    assert abs(rho.mean() - math.sqrt(2 / math.pi)) < 0.03
    # non-Gaussian i.i.d. activations: the same (only the covariance matters)
    a = D.synthetic_weights((20_000, 512), distribution="uniform", rng=8, dtype=np.float64)
    np.testing.assert_allclose(T.dot_product_correlation(w, a), cos, atol=0.01)
    # correlated activations: w^T S q / sqrt(...) with S the activation covariance
    mix = np.random.default_rng(9).normal(size=(64, 64))
    a = np.random.default_rng(10).normal(size=(20_000, 64)) @ mix
    w64 = w[:, :64]
    q = T.quantize_rows(w64, quantizer="ternary")
    S = mix.T @ mix
    expect = [(u @ S @ v) / math.sqrt((u @ S @ u) * (v @ S @ v)) for u, v in zip(w64, q)]
    np.testing.assert_allclose(T.dot_product_correlation(w64, a, quantizer="ternary"), expect, atol=0.01)


def test_dot_products_shapes_and_values():
    w = np.array([[1.0, -2.0, 0.5], [0.2, 0.1, -0.3]])
    a = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, -1.0]])
    exact, quant = T.dot_products(w, a)
    np.testing.assert_allclose(exact, a @ w.T)
    np.testing.assert_allclose(quant, a @ np.where(w >= 0, 1.0, -1.0).T)
    e1, q1 = T.dot_products(w[0], a, quantizer="uniform", bits=3)
    assert e1.shape == q1.shape == (2,)


def test_reproducible_with_rng():
    w = D.synthetic_weights((3, 256), rng=11)
    r1 = T.dot_product_correlation(w, n_samples=500, rng=12)
    r2 = T.dot_product_correlation(w, n_samples=500, rng=np.random.default_rng(12))
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(r1, T.dot_product_correlation(w, n_samples=500, rng=13))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: T.quantize_rows(np.arange(4)), TypeError, "w must have a floating dtype"),
    (lambda: T.quantize_rows(np.float64(1.0)), ValueError, "at least one dimension"),
    (lambda: T.quantize_rows(np.zeros((3, 0))), ValueError, "length >= 1"),
    (lambda: T.quantize_rows(np.array([1.0, np.nan])), ValueError, "finite"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="octal"), ValueError, "quantizer must be one of"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="uniform"), TypeError, "bits must be given"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="uniform", bits=1), ValueError, r"bits must be an integer in \[2, 16\]"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="uniform", bits=2.0), TypeError, "bits must be an integer"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="uniform", bits=14), ValueError, "clip must be given"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="uniform", bits=4, clip=0.0), ValueError, "clip must be finite and > 0"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="ternary", threshold=-0.1), ValueError, "threshold must be >= 0"),
    (lambda: T.quantize_rows(np.ones(3), quantizer="ternary", threshold="a"), TypeError, "threshold must be a real"),
    (lambda: T.quantization_angle(np.zeros((2, 5))), ValueError, "x has 2 all-zero"),
    (lambda: T.quantization_angle(np.ones(4), quantizer="ternary", threshold=1.0), ValueError, "y has 1 all-zero"),
    (lambda: T.row_angles(np.ones((2, 3)), np.ones((3, 2))), ValueError, "same shape"),
    (lambda: T.limit_cos(distribution="cauchy"), ValueError, "distribution must be one of"),
    (lambda: T.limit_cos("uniform", bits=13, clip=3.0), ValueError, "bits must be <= 12"),
    (lambda: T.limit_cos("ternary", threshold=2.0, distribution="uniform"), ValueError, "maps"),
    (lambda: T.optimal_clip(1), ValueError, r"bits must be an integer in \[2, 12\]"),
    (lambda: T.optimal_threshold(distribution="t"), ValueError, "distribution must be one of"),
    (lambda: T.dot_products(np.ones((2, 3)), np.ones((4, 2))), ValueError, r"a must have shape \(n, 3\)"),
    (lambda: T.dot_products(np.ones((2, 2, 3)), np.ones((4, 3))), ValueError, r"w must have shape \(m, d\)"),
    (lambda: T.dot_products(np.ones(3), np.ones((4, 3), int)), TypeError, "a must have a floating dtype"),
    (lambda: T.dot_product_correlation(np.ones(3), np.ones((1, 3))), ValueError, "at least 2"),
    (lambda: T.dot_product_correlation(np.ones(3), n_samples=1), ValueError, "n_samples must be an integer >= 2"),
    (lambda: T.dot_product_correlation(np.ones(3), np.ones((5, 3))), ValueError, "does not vary"),
    (lambda: T.dot_product_correlation(np.ones(3), rng="seed"), TypeError, "rng must be"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
