"""Lloyd-Max quantizers: Max's (1960) table, closed-form moments against quadrature, data version."""

import warnings

import numpy as np
import pytest

from qref import nonuniform as NU

# Max (1960), Table I, unit-variance Gaussian (checked independently with scipy.integrate
# below: the 3-bit MSE is 0.0345478, printed as 0.03454 in the table)
MAX_TABLE = {
    1: ([0.7979], [0.0], 0.3634),
    2: ([0.4528, 1.510], [0.0, 0.9816], 0.1175),
    3: ([0.2451, 0.7560, 1.344, 2.152], [0.0, 0.5006, 1.050, 1.748], 0.03454),
}


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_max_1960_table(bits):
    levels, thresholds, mse = NU.lloyd_max(bits)
    lv, th, m = MAX_TABLE[bits]
    n = 2**bits
    assert levels.shape == (n,) and thresholds.shape == (n - 1,)
    np.testing.assert_allclose(levels[n // 2:], lv, atol=6e-4)
    np.testing.assert_allclose(levels, -levels[::-1], atol=1e-12)  # symmetric
    np.testing.assert_allclose(thresholds[n // 2 - 1:], th, atol=6e-4)
    assert abs(mse - m) < (1e-5 if bits == 3 else 5e-5)  # half a unit in the last printed digit


def test_closed_form_moments_match_quadrature():
    integrate = pytest.importorskip("scipy.integrate")
    stats = pytest.importorskip("scipy.stats")
    dens = {"gaussian": stats.norm(), "laplace": stats.laplace(scale=1 / np.sqrt(2)),
            "uniform": stats.uniform(-np.sqrt(3), 2 * np.sqrt(3))}
    for name, d in dens.items():
        assert abs(d.var() - 1) < 1e-12
        for bits in (1, 2, 3):
            levels, t, mse = NU.lloyd_max(bits, density=name)
            edges = np.concatenate(([-np.inf], t, [np.inf]))
            ref = 0.0
            for i, y in enumerate(levels):
                lo, hi = max(edges[i], d.support()[0]), min(edges[i + 1], d.support()[1])
                p = d.cdf(hi) - d.cdf(lo)
                parts = [(lo, 0.0), (0.0, hi)] if lo < 0 < hi else [(lo, hi)]  # the Laplace kink
                m1 = sum(integrate.quad(lambda x: x * d.pdf(x), a, b)[0] for a, b in parts)
                ref += sum(integrate.quad(lambda x: (x - y) ** 2 * d.pdf(x), a, b)[0] for a, b in parts)
                assert abs(y - m1 / p) < 1e-7  # centroid condition
            assert abs(mse - ref) < 1e-8, (name, bits)


def test_known_closed_forms():
    # 1 bit: levels +-E|X|; MSE 1 - E|X|^2
    assert abs(NU.lloyd_max(1).mse - (1 - 2 / np.pi)) < 1e-12
    assert abs(NU.lloyd_max(n_levels=2, density="laplace").mse - 0.5) < 1e-12
    # uniform density: the uniform quantizer is optimal, MSE = 1/n^2 (range 2 sqrt 3, step^2/12)
    for n in (2, 3, 5, 16):
        r = NU.lloyd_max(n_levels=n, density="uniform")
        assert abs(r.mse - 1 / n**2) < 1e-12
        np.testing.assert_allclose(np.diff(r.levels), 2 * np.sqrt(3) / n, atol=1e-9)


def test_mse_decreases_with_levels_and_beats_uniform():
    prev = np.inf
    for n in (1, 2, 3, 4, 7, 8, 16):
        mse = NU.lloyd_max(n_levels=n, density="laplace").mse
        assert mse < prev
        prev = mse
    assert abs(NU.lloyd_max(n_levels=1).mse - 1.0) < 1e-12


def test_data_version_matches_density_version(rng):
    x = rng.standard_normal(400_000)
    for bits in (1, 2, 3):
        ref = NU.lloyd_max(bits)
        got = NU.lloyd_max_data(x, bits)
        np.testing.assert_allclose(got.levels, ref.levels, atol=0.03)
        assert abs(got.mse - ref.mse) < 0.02 * ref.mse + 1e-3
        # the reported MSE is the empirical MSE of the quantizer it returns
        idx = np.searchsorted(got.thresholds, x, side="left")
        assert abs(np.mean((x - got.levels[idx]) ** 2) - got.mse) < 1e-9


def test_data_version_is_a_lloyd_fixed_point(rng):
    x = rng.laplace(size=5_000).astype(np.float32)
    before = x.copy()
    r = NU.lloyd_max_data(x, n_levels=5, init="linear", tol=1e-14)
    assert np.array_equal(x, before)
    xs = np.sort(x.astype(np.float64))
    idx = np.searchsorted(r.thresholds, xs, side="left")
    for i in range(5):
        assert abs(xs[idx == i].mean() - r.levels[i]) < 1e-9


def test_bad_input():
    with pytest.raises(TypeError, match="exactly one of bits and n_levels"):
        NU.lloyd_max()
    with pytest.raises(TypeError, match="exactly one"):
        NU.lloyd_max(2, n_levels=4)
    with pytest.raises(ValueError, match="density"):
        NU.lloyd_max(2, density="cauchy")
    with pytest.raises(ValueError, match="bits"):
        NU.lloyd_max(0)
    with pytest.raises(ValueError, match="tol"):
        NU.lloyd_max(2, tol=0)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        NU.lloyd_max_data(np.arange(10), 2)
    with pytest.raises(ValueError, match="x must not be empty"):
        NU.lloyd_max_data(np.array([]), 2)
    with pytest.raises(ValueError, match="init must hold"):
        NU.lloyd_max_data(np.zeros(3), 2, init=[0.0, 1.0])
    with pytest.warns(RuntimeWarning, match="did not converge"):
        NU.lloyd_max(4, max_iter=2)


# ---------------------------------------------------------------- Lloyd's iteration with Newton steps


@pytest.mark.parametrize("density", ["gaussian", "laplace", "uniform"])
@pytest.mark.parametrize("bits", [1, 3, 6, 9])
def test_lloyd_max_is_a_symmetric_fixed_point(density, bits):
    # independent of how it was reached: each level is the mean of its cell (computed here by
    # numerical integration), the thresholds are the midpoints, the levels are symmetric
    from scipy import integrate, stats
    dist = {"gaussian": stats.norm(), "laplace": stats.laplace(scale=1 / np.sqrt(2)),
            "uniform": stats.uniform(-np.sqrt(3), 2 * np.sqrt(3))}[density]
    r = NU.lloyd_max(bits, density=density)
    np.testing.assert_array_equal(r.levels, -r.levels[::-1])
    np.testing.assert_allclose(r.thresholds, (r.levels[1:] + r.levels[:-1]) / 2, rtol=0, atol=1e-15)
    edges = np.concatenate(([-np.inf], r.thresholds, [np.inf]))
    for i in range(0, r.levels.size, max(1, r.levels.size // 7)):  # a few cells, tails included
        a, b = edges[i], edges[i + 1]
        p = dist.cdf(b) - dist.cdf(a)
        lo, hi = max(a, dist.support()[0], -50), min(b, dist.support()[1], 50)
        m1 = integrate.quad(lambda x: x * dist.pdf(x), lo, hi, epsabs=1e-14, epsrel=1e-12)[0]
        assert r.levels[i] == pytest.approx(m1 / p, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("density, limit", [("gaussian", np.sqrt(3) * np.pi / 2), ("laplace", 4.5),
                                            ("uniform", 1.0)])
def test_lloyd_max_approaches_the_panter_dite_distortion(density, limit):
    # D ~ (int f^(1/3))^3 / (12 n^2) for many levels (Panter and Dite 1951); 12 bits converge
    # without a warning (Lloyd's steps alone needed ~n^2 iterations: 14 s at 8 bits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = NU.lloyd_max(12, density=density)
    assert r.mse * 4**12 == pytest.approx(limit, rel=1e-3)
    assert NU.lloyd_max(8, density=density).mse * 4**8 == pytest.approx(limit, rel=2e-2)


def test_newton_steps_agree_with_plain_lloyd(monkeypatch):
    # with the Newton step switched off (the tridiagonal solve returns no step), the iteration
    # is Lloyd's; both end at the same levels (Lloyd to its slower tolerance)
    fast = NU.lloyd_max(3, density="laplace")
    monkeypatch.setattr(NU, "_solve_tridiagonal", lambda sub, diag, sup, rhs: np.full(diag.size, np.nan))
    slow = NU.lloyd_max(3, density="laplace", tol=1e-14, max_iter=10**6)
    np.testing.assert_allclose(fast.levels, slow.levels, atol=1e-9)
    assert fast.mse == pytest.approx(slow.mse, rel=1e-12)


def test_solve_tridiagonal(rng):
    n = 7
    sub, sup, rhs = rng.standard_normal(n - 1), rng.standard_normal(n - 1), rng.standard_normal(n)
    diag = 4 + rng.random(n)
    A = np.diag(diag) + np.diag(sub, -1) + np.diag(sup, 1)
    np.testing.assert_allclose(NU._solve_tridiagonal(sub, diag, sup, rhs), np.linalg.solve(A, rhs), rtol=1e-12)
