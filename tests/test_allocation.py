"""Tests for qref.allocation: Max's optimum uniform quantizer, Lin et al.'s SQNR model and layer
allocation, Banner et al.'s per-channel bit allocation.

Every closed form is checked against an independent calculation: numerical integration
(scipy.integrate.quad), numerical optimisation (scipy.optimize), brute force, Monte Carlo, or
numbers printed in Max (1960).
"""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from qref import allocation as A
from qref import metrics, uniform

# Max (1960), Table II, "optimum equally spaced level quantizer", Gaussian, unit variance:
# number of levels N -> step size, as printed (4 significant digits). The paper is not
# available offline; the digits were cross-checked against a public repository that quotes
# "J. Max, Quantizing for minimum distortion, Table 2". The quad/minimize_scalar checks below
# are an independent, high-precision check that does not depend on them.
MAX_1960_STEP = {2: 1.596, 3: 1.224, 4: 0.9957, 8: 0.5860, 16: 0.3352, 32: 0.1881}


def _half_ulp(printed):
    """Half a unit in the last printed digit of a decimal such as 0.5860 (-> 0.00005)."""
    s = f"{printed}"
    digits = len(s.split(".")[1]) if "." in s else 0
    if printed == 0.5860:  # "0.5860" loses its trailing zero as a float literal
        digits = 4
    return 0.5 * 10.0**-digits


# ---- independent references ---------------------------------------------------------------------

def _pdf(distribution):
    if distribution == "gaussian":
        return stats.norm.pdf
    if distribution == "laplace":
        return stats.laplace(scale=1 / math.sqrt(2)).pdf
    a = math.sqrt(3.0)
    return lambda x: np.where(np.abs(x) <= a, 1 / (2 * a), 0.0)


def _quad_mse(step, n, distribution):
    """MSE of the N-level symmetric uniform quantizer by adaptive quadrature, cell by cell."""
    pdf = _pdf(distribution)
    y = (np.arange(n) - 0.5 * (n - 1)) * step
    t = np.concatenate(([-np.inf], 0.5 * (y[1:] + y[:-1]), [np.inf]))
    support = math.sqrt(3.0) if distribution == "uniform" else np.inf
    total = 0.0
    for k in range(n):
        lo, hi = max(t[k], -support), min(t[k + 1], support)
        if lo >= hi:
            continue
        pts = [0.0] if lo < 0 < hi and distribution == "laplace" and np.isfinite(lo) and np.isfinite(hi) else None
        val, _ = integrate.quad(lambda x: (x - y[k]) ** 2 * pdf(x), lo, hi, points=pts, epsabs=1e-14, epsrel=1e-12,
                                limit=200)
        total += val
    return total


# ---- Max (1960) and Lin et al. (2016): the optimal uniform quantizer -------------------------------

@pytest.mark.parametrize("n, printed", sorted(MAX_1960_STEP.items()))
def test_optimal_step_matches_max_1960_table(n, printed):
    step = A.optimal_uniform_step(n_levels=n)
    assert abs(step - printed) <= _half_ulp(printed) + 1e-12, (n, step, printed)


def test_optimal_step_bits_is_max_power_of_two_rows():
    for b in (1, 2, 3, 4, 5):
        assert A.optimal_uniform_step(b) == A.optimal_uniform_step(n_levels=2**b)
    assert A.optimal_uniform_step(3, mode="midtread") == A.optimal_uniform_step(n_levels=7)


def test_one_bit_gaussian_is_exact():
    # two levels +-c: the optimum is the centroid c = sqrt(2/pi), MSE 1 - 2/pi (0.3634 in Max's table)
    assert A.optimal_uniform_step(1) == pytest.approx(2 * math.sqrt(2 / math.pi), abs=1e-7)
    assert A.uniform_quantizer_mse(2 * math.sqrt(2 / math.pi), bits=1) == pytest.approx(1 - 2 / math.pi, rel=1e-12)
    assert round(1 - 2 / math.pi, 4) == 0.3634


@pytest.mark.parametrize("distribution", A.LIN_DISTRIBUTIONS)
@pytest.mark.parametrize("n, step", [(2, 1.3), (3, 0.9), (4, 0.7), (8, 0.45), (16, 0.2)])
def test_mse_matches_quadrature(distribution, n, step):
    assert A.uniform_quantizer_mse(step, n_levels=n, distribution=distribution) == pytest.approx(
        _quad_mse(step, n, distribution), rel=1e-8, abs=1e-14)


@pytest.mark.parametrize("distribution, n", [("gaussian", 2), ("gaussian", 5), ("gaussian", 8), ("laplace", 4)])
def test_optimal_step_matches_scipy_minimisation_of_quadrature(distribution, n):
    res = optimize.minimize_scalar(lambda s: _quad_mse(s, n, distribution), bounds=(0.05, 3.0), method="bounded",
                                   options={"xatol": 1e-9})
    assert A.optimal_uniform_step(n_levels=n, distribution=distribution) == pytest.approx(res.x, abs=2e-6)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_uniform_density_step_tiles_support(bits):
    n = 2**bits
    step = A.optimal_uniform_step(bits, distribution="uniform")
    assert step == pytest.approx(2 * math.sqrt(3) / n, rel=1e-12)
    assert A.uniform_quantizer_mse(step, bits=bits, distribution="uniform") == pytest.approx(step**2 / 12, rel=1e-9)
    assert A.optimal_uniform_sqnr_db(bits, distribution="uniform") == pytest.approx(20 * math.log10(n), abs=1e-8)
    # a slightly wider or narrower step is worse
    for f in (0.97, 1.03):
        assert A.uniform_quantizer_mse(f * step, bits=bits, distribution="uniform") > step**2 / 12


def test_sqnr_gains_about_6db_per_bit():
    """Lin et al. (2016): SQNR grows ~linearly in the bit width; below 6.02 dB/bit at low bits for the Gaussian."""
    for dist in ("gaussian", "laplace"):
        s = np.array([A.optimal_uniform_sqnr_db(b, distribution=dist) for b in range(1, 9)])
        gain = np.diff(s)
        assert ((gain > 4.0) & (gain < 6.03)).all(), (dist, gain)
        assert gain[-1] > gain[0]  # approaches 6.02 from below
    g = np.array([A.optimal_uniform_sqnr_db(b) for b in (4, 8)])
    assert g[0] == pytest.approx(-10 * math.log10(0.01154), abs=0.01)  # Max: MSE 0.01154 at N = 16


def test_monte_carlo_agrees_with_exact_mse(rng):
    x = rng.standard_normal(400_000)
    for bits in (2, 3):
        step = A.optimal_uniform_step(bits)
        mc = float(np.mean((x - A.symmetric_uniform_quantize(x, step=step, bits=bits)) ** 2))
        assert mc == pytest.approx(A.uniform_quantizer_mse(step, bits=bits), rel=0.02)


@pytest.mark.parametrize("distribution", ["gaussian", "laplace", "uniform"])
@pytest.mark.parametrize("bits, clip", [(2, 1.5), (4, 2.7), (6, 3.3)])
def test_midtread_mse_equals_qref_expected_mse(distribution, bits, clip):
    """Odd N is qref's symmetric narrow-range grid: the independent integrator in qref.metrics agrees."""
    p = uniform.params_from_range(-clip, clip, bits=bits, symmetric=True, narrow_range=True)
    ours = A.uniform_quantizer_mse(float(p.scale), bits=bits, mode="midtread", distribution=distribution)
    assert ours == pytest.approx(metrics.expected_mse(p, distribution=distribution), rel=1e-7, abs=1e-15)


def test_symmetric_uniform_quantize_levels_and_ties(rng):
    x = rng.normal(size=1000) * 2
    q = A.symmetric_uniform_quantize(x, step=0.4, bits=3)
    lv = A.uniform_levels(0.4, bits=3)
    assert np.isin(q, lv).all()
    # nearest level (no exact ties in continuous data)
    assert np.array_equal(q, lv[np.argmin(np.abs(x[:, None] - lv[None, :]), axis=1)])
    # midtread = qref's narrow-range fake quantization
    p = uniform.params_from_range(-1.2, 1.2, bits=3, symmetric=True, narrow_range=True)
    assert np.allclose(A.symmetric_uniform_quantize(x, step=float(p.scale), bits=3, mode="midtread"),
                       uniform.fake_quantize(x, p))
    # a threshold goes up; dtype kept
    assert A.symmetric_uniform_quantize(np.array([0.0], np.float32), step=1.0, bits=1).tolist() == [0.5]
    assert A.symmetric_uniform_quantize(np.array([0.5], np.float32), step=1.0, n_levels=3).tolist() == [1.0]
    assert A.symmetric_uniform_quantize(x.astype(np.float32), step=0.4, bits=3).dtype == np.float32


# ---- Lin et al. (2016): network SQNR and the layer allocation --------------------------------------

def test_network_sqnr_closed_form():
    assert A.network_sqnr_db([20.0]) == pytest.approx(20.0)
    assert A.network_sqnr_db([20.0, 20.0]) == pytest.approx(20 - 10 * math.log10(2))
    g = np.array([12.0, 25.0, 31.5])
    assert A.network_sqnr_db(g) == pytest.approx(-10 * math.log10(np.sum(10 ** (-g / 10))))
    assert A.network_sqnr_db(g) < g.min()
    assert A.network_sqnr_db([-400.0, -410.0]) == pytest.approx(-400 - 10 * math.log10(1 + 10**1.0))  # no overflow


def test_network_sqnr_model_on_a_noisy_linear_network(rng):
    """Independent noise added at each layer of an orthogonal (gain-preserving) network: 1/SNR adds up."""
    d, n = 64, 20_000
    layer_db = np.array([18.0, 24.0, 15.0])
    x = rng.standard_normal((n, d))
    clean, noisy = x, x.copy()
    for g in layer_db:
        Qm, _ = np.linalg.qr(rng.standard_normal((d, d)))
        clean, noisy = clean @ Qm, noisy @ Qm
        power = np.mean(clean**2)
        noisy = noisy + rng.standard_normal(noisy.shape) * math.sqrt(power * 10 ** (-g / 10))
    measured = 10 * math.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert measured == pytest.approx(A.network_sqnr_db(layer_db), abs=0.05)


def test_lin_allocation_target_form_matches_numerical_optimisation():
    rho = np.array([1728.0, 36864.0, 4096.0, 640.0])
    kappa, target = 6.02, 28.0
    beta = A.lin_bit_allocation(rho, target_sqnr_db=target, kappa=kappa)
    cons = {"type": "eq", "fun": lambda b: np.log10(np.sum(10 ** (-kappa * b / 10))) + target / 10}
    res = optimize.minimize(lambda b: rho @ b / rho.sum(), x0=np.full(4, 6.0), constraints=[cons], method="SLSQP",
                            options={"ftol": 1e-14, "maxiter": 500})
    assert res.success
    assert np.allclose(beta, res.x, atol=1e-4)
    assert A.network_sqnr_db(kappa * beta) == pytest.approx(target, abs=1e-9)
    # the pairwise rule: beta_i - beta_j = (10 / kappa) log10(rho_j / rho_i)
    for i, j in itertools.combinations(range(4), 2):
        assert beta[i] - beta[j] == pytest.approx(10 / kappa * math.log10(rho[j] / rho[i]), abs=1e-12)


def test_lin_allocation_budget_form_matches_numerical_optimisation():
    rho = np.array([500.0, 8000.0, 1200.0])
    kappa, B = 5.0, 6.0 * rho.sum()
    beta = A.lin_bit_allocation(rho, total_bits=B, kappa=kappa)
    assert rho @ beta == pytest.approx(B)
    cons = {"type": "eq", "fun": lambda b: (rho @ b - B) / rho.sum()}
    res = optimize.minimize(lambda b: np.log10(np.sum(10 ** (-kappa * b / 10))), x0=np.full(3, 6.0),
                            constraints=[cons], method="SLSQP", options={"ftol": 1e-15, "maxiter": 500})
    assert res.success
    assert np.allclose(beta, res.x, atol=1e-4)
    # the two forms describe the same optimum: feed the budget of one into the other
    target = A.network_sqnr_db(kappa * beta)
    assert np.allclose(A.lin_bit_allocation(rho, target_sqnr_db=target, kappa=kappa), beta, atol=1e-10)


def test_lin_allocation_more_parameters_fewer_bits():
    beta = A.lin_bit_allocation([10, 100, 1000], target_sqnr_db=30.0)
    assert (np.diff(beta) < 0).all()
    assert A.lin_bit_allocation([7, 7], total_bits=56.0).tolist() == pytest.approx([4.0, 4.0])


def test_lin_allocation_bad_input():
    with pytest.raises(TypeError, match="exactly one of target_sqnr_db and total_bits"):
        A.lin_bit_allocation([1, 2])
    with pytest.raises(TypeError, match="exactly one"):
        A.lin_bit_allocation([1, 2], target_sqnr_db=20.0, total_bits=10.0)
    with pytest.raises(ValueError, match="sizes must be > 0"):
        A.lin_bit_allocation([1, 0], target_sqnr_db=20.0)
    with pytest.raises(ValueError, match="kappa must be > 0"):
        A.lin_bit_allocation([1, 2], target_sqnr_db=20.0, kappa=0.0)
    with pytest.raises(ValueError, match="total_bits must be > 0"):
        A.lin_bit_allocation([1, 2], total_bits=-3.0)
    with pytest.raises(ValueError, match="1-D"):
        A.lin_bit_allocation([[1, 2]], target_sqnr_db=20.0)
    with pytest.raises(ValueError, match="must not be empty"):
        A.lin_bit_allocation([], target_sqnr_db=20.0)
    with pytest.raises(TypeError, match="real numbers"):
        A.lin_bit_allocation(["a"], target_sqnr_db=20.0)
    with pytest.raises(ValueError, match="finite"):
        A.network_sqnr_db([1.0, np.nan])


def test_uniform_theory_bad_input():
    with pytest.raises(TypeError, match="exactly one of bits and n_levels"):
        A.optimal_uniform_step()
    with pytest.raises(TypeError, match="exactly one of bits and n_levels"):
        A.uniform_quantizer_mse(1.0, bits=2, n_levels=4)
    with pytest.raises(ValueError, match="bits must be an integer in \\[1, 12\\], got 13"):
        A.optimal_uniform_step(13)
    with pytest.raises(ValueError, match="bits must be an integer in \\[2, 12\\], got 1"):
        A.optimal_uniform_step(1, mode="midtread")
    with pytest.raises(ValueError, match="n_levels must be <= 4096"):
        A.uniform_quantizer_mse(0.01, n_levels=5000)
    with pytest.raises(ValueError, match="n_levels must be an integer >= 2, got 1"):
        A.uniform_levels(1.0, n_levels=1)
    with pytest.raises(ValueError, match="step must be > 0, got 0.0"):
        A.uniform_quantizer_mse(0.0, bits=2)
    with pytest.raises(ValueError, match="distribution must be one of"):
        A.optimal_uniform_step(2, distribution="cauchy")
    with pytest.raises(ValueError, match="mode must be one of"):
        A.uniform_levels(1.0, bits=2, mode="midway")
    with pytest.raises(TypeError, match="floating dtype"):
        A.symmetric_uniform_quantize(np.arange(3), step=1.0, bits=2)
    with pytest.raises(ValueError, match="finite"):
        A.symmetric_uniform_quantize(np.array([np.inf]), step=1.0, bits=2)


# ---- Banner et al. (2019): per-channel allocation ---------------------------------------------------

def _noise(alpha, bits):
    return float(np.sum(np.asarray(alpha) ** 2 / (3 * 4.0 ** np.asarray(bits, dtype=float))))


def test_quantization_noise_model():
    assert A.quantization_noise([3.0], 2).tolist() == pytest.approx([9 / 48])
    assert A.quantization_noise([1.0, 2.0, 4.0], 3).tolist() == pytest.approx([1 / 192, 4 / 192, 16 / 192])
    with pytest.raises(ValueError, match="ranges must be > 0"):
        A.quantization_noise([1.0, -1.0], 2)
    with pytest.raises(ValueError, match="broadcast"):
        A.quantization_noise([1.0, 2.0], [1, 2, 3])


@pytest.mark.parametrize("budget", ["bins", "bits"])
def test_continuous_allocation_matches_numerical_optimisation(budget, rng):
    alpha = rng.uniform(0.2, 5.0, size=5)
    mb = 4.0
    m = A.banner_bit_allocation(alpha, mean_bits=mb, budget=budget)
    if budget == "bins":
        # minimise sum alpha^2 / (3 N^2) over the numbers of bins N_i, sum N_i = 5 * 2^4
        total = alpha.size * 2**mb
        cons = {"type": "eq", "fun": lambda N: N.sum() / total - 1}
        res = optimize.minimize(lambda N: 1e3 * np.sum(alpha**2 / (3 * N**2)), x0=np.full(5, total / 5),
                                constraints=[cons], bounds=[(1e-3, None)] * 5, method="SLSQP",
                                options={"ftol": 1e-15, "maxiter": 1000})
        assert res.success
        assert np.allclose(2.0**m, res.x, rtol=1e-4)
        assert (2.0**m).sum() == pytest.approx(total)
        assert m.mean() <= mb + 1e-12  # Jensen
        # the 2/3 law
        assert np.allclose(np.diff(m), (2 / 3) * np.diff(np.log2(alpha)))
    else:
        cons = {"type": "eq", "fun": lambda M: M.sum() - alpha.size * mb}
        res = optimize.minimize(lambda M: 1e3 * _noise(alpha, M), x0=np.full(5, mb), constraints=[cons],
                                method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
        assert res.success
        assert np.allclose(m, res.x, atol=1e-4)
        assert m.mean() == pytest.approx(mb)
        assert np.allclose(np.diff(m), np.diff(np.log2(alpha)))


def _brute_force(alpha, B, lo, hi):
    best, best_bits = np.inf, None
    for bits in itertools.product(range(lo, hi + 1), repeat=len(alpha)):
        if sum(bits) == B:
            d = _noise(alpha, bits)
            if d < best:
                best, best_bits = d, bits
    return best, best_bits


@pytest.mark.parametrize("seed", range(12))
def test_optimal_integer_allocation_equals_brute_force(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(1, 5))
    alpha = np.exp(r.normal(0, 1.5, size=n))
    lo, hi = int(r.integers(1, 3)), int(r.integers(3, 7))
    B = int(r.integers(n * lo, n * hi + 1))
    bits = A.allocate_bits(alpha, mean_bits=B / n, min_bits=lo, max_bits=hi)
    assert bits.dtype == np.int64 and bits.sum() == B
    assert ((bits >= lo) & (bits <= hi)).all()
    best, _ = _brute_force(alpha, B, lo, hi)
    assert _noise(alpha, bits) == pytest.approx(best, rel=1e-12)
    # the paper's rule meets the budget too, and is never better than the optimum
    bb = A.allocate_bits(alpha, mean_bits=B / n, rule="banner", min_bits=lo, max_bits=hi)
    assert bb.sum() == B and ((bb >= lo) & (bb <= hi)).all()
    assert _noise(alpha, bb) >= best * (1 - 1e-12)


def test_banner_rounding_is_largest_remainder_of_the_shifted_two_thirds_rule(rng):
    alpha = np.sort(np.exp(rng.normal(0, 1.0, size=16)))
    lo, hi, mb = 1, 8, 4
    bits = A.allocate_bits(alpha, mean_bits=mb, rule="banner", min_bits=lo, max_bits=hi)
    shape = (2 / 3) * np.log2(alpha)
    c = optimize.brentq(lambda c: np.clip(c + shape, lo, hi).sum() - mb * alpha.size, -50, 50, xtol=1e-14)
    cont = np.clip(c + shape, lo, hi)
    assert (np.abs(bits - cont) < 1).all()
    assert np.array_equal(bits, np.sort(bits))  # larger range, never fewer bits
    # largest remainder: the channels rounded up have larger fractional parts than those rounded down
    frac = cont - np.floor(cont)
    up = bits > np.floor(cont + 1e-12)
    if up.any() and (~up).any():
        assert frac[up].min() >= frac[~up].max() - 1e-9


def test_equal_ranges_get_equal_bits():
    for rule in ("optimal", "banner"):
        assert A.allocate_bits(np.full(6, 0.3), mean_bits=3, rule=rule).tolist() == [3] * 6
    assert np.allclose(A.banner_bit_allocation(np.full(4, 2.0), mean_bits=3.5), 3.5)
    # a half-integer mean with an even number of channels is a whole budget
    assert A.allocate_bits([1.0, 1.0], mean_bits=3.5).sum() == 7


def test_optimal_allocation_beats_uniform_allocation(rng):
    alpha = np.exp(rng.normal(0, 1.0, size=64))
    bits = A.allocate_bits(alpha, mean_bits=4)
    assert _noise(alpha, bits) < _noise(alpha, np.full(64, 4))


def test_allocation_does_not_modify_input():
    alpha = np.array([1.0, 2.0, 3.0])
    before = alpha.copy()
    A.allocate_bits(alpha, mean_bits=4, rule="banner")
    A.banner_bit_allocation(alpha, mean_bits=4)
    assert np.array_equal(alpha, before)


def test_budget_that_cannot_be_met_raises():
    with pytest.raises(ValueError, match="whole number of bits, got 3.3 \\* 3"):
        A.allocate_bits([1.0, 2.0, 3.0], mean_bits=3.3)
    with pytest.raises(ValueError, match="cannot be met with min_bits=2 and max_bits=8: it must lie in \\[6, 24\\]"):
        A.allocate_bits([1.0, 2.0, 3.0], mean_bits=1, min_bits=2)  # 3 bits for 3 channels, 2 each at least
    with pytest.raises(ValueError, match="cannot be met"):
        A.allocate_bits([1.0, 2.0, 3.0], mean_bits=9)  # above max_bits
    with pytest.raises(ValueError, match="max_bits must be >= min_bits"):
        A.allocate_bits([1.0], mean_bits=4, min_bits=5, max_bits=4)
    with pytest.raises(ValueError, match="mean_bits must be > 0"):
        A.allocate_bits([1.0], mean_bits=0)
    with pytest.raises(ValueError, match="ranges must be > 0 .*ranges\\[1\\] = 0.0"):
        A.allocate_bits([1.0, 0.0], mean_bits=4)
    with pytest.raises(ValueError, match="finite"):
        A.banner_bit_allocation([1.0, np.nan], mean_bits=4)
    with pytest.raises(ValueError, match="budget must be one of"):
        A.banner_bit_allocation([1.0], mean_bits=4, budget="bytes")
    with pytest.raises(ValueError, match="rule must be one of"):
        A.allocate_bits([1.0], mean_bits=4, rule="greedy")
    with pytest.raises(ValueError, match="min_bits must be an integer in \\[1, 16\\], got 0"):
        A.allocate_bits([1.0], mean_bits=4, min_bits=0)


# ---- applying an allocation ------------------------------------------------------------------------

def test_fake_quantize_channels_per_row_and_axis(rng):
    w = rng.normal(size=(5, 40)).astype(np.float32)
    bits = np.array([1, 2, 3, 4, 8])
    q = A.fake_quantize_channels(w, bits=bits)
    assert q.dtype == np.float32 and q.shape == w.shape
    for c in range(5):
        a = np.abs(w[c].astype(np.float64)).max()
        n = 2 ** bits[c]
        assert np.allclose(q[c], A.symmetric_uniform_quantize(w[c].astype(np.float64), step=2 * a / n, n_levels=n))
        assert len(np.unique(q[c])) <= n
    assert np.array_equal(A.fake_quantize_channels(w.T, bits=bits, axis=1), q.T)
    assert np.array_equal(A.fake_quantize_channels(w.T, bits=bits, axis=-1), q.T)


def test_fake_quantize_channels_midtread_is_qref_narrow_range(rng):
    w = rng.normal(size=(4, 50))
    q = A.fake_quantize_channels(w, bits=4, mode="midtread")
    m = np.abs(w).max(axis=1)
    p = uniform.params_from_range(-m, m, bits=4, symmetric=True, narrow_range=True, axis=0)
    assert np.allclose(q, uniform.fake_quantize(w, p))


def test_fake_quantize_channels_noise_matches_banner_model(rng):
    """Uniform data filling [-a, a]: the measured MSE is the model alpha^2 / (3 4^M)."""
    alpha = np.array([0.5, 1.0, 2.0])
    bits = np.array([2, 3, 5])
    w = rng.uniform(-1, 1, size=(3, 200_000)) * alpha[:, None]
    q = A.fake_quantize_channels(w, bits=bits, ranges=alpha)
    measured = np.mean((w - q) ** 2, axis=1)
    assert np.allclose(measured, A.quantization_noise(alpha, bits), rtol=0.02)


def test_fake_quantize_channels_edge_cases_and_errors(rng):
    w = np.zeros((2, 3))
    w[1] = [0.1, -0.2, 0.3]
    assert np.array_equal(A.fake_quantize_channels(w, bits=2)[0], np.zeros(3))  # zero channel stays zero
    before = w.copy()
    A.fake_quantize_channels(w, bits=[2, 3])
    assert np.array_equal(w, before)
    with pytest.raises(ValueError, match="one entry per channel, shape \\(2,\\), got shape \\(3,\\)"):
        A.fake_quantize_channels(w, bits=[2, 3, 4])
    with pytest.raises(ValueError, match="bits must be integers in \\[2, 16\\] for mode='midtread'"):
        A.fake_quantize_channels(w, bits=[1, 3], mode="midtread")
    with pytest.raises(ValueError, match="bits must be integers in \\[1, 16\\]"):
        A.fake_quantize_channels(w, bits=[0, 3])
    with pytest.raises(TypeError, match="bits must be integers"):
        A.fake_quantize_channels(w, bits=[2.0, 3.0])
    with pytest.raises(ValueError, match="axis must be in \\[-2, 1\\]"):
        A.fake_quantize_channels(w, bits=2, axis=2)
    with pytest.raises(ValueError, match="ranges must be >= 0"):
        A.fake_quantize_channels(w, bits=2, ranges=[1.0, -1.0])
    with pytest.raises(ValueError, match="ranges must have shape"):
        A.fake_quantize_channels(w, bits=2, ranges=[1.0])
    with pytest.raises(TypeError, match="floating dtype"):
        A.fake_quantize_channels(np.ones((2, 2), dtype=np.int32), bits=2)
    with pytest.raises(ValueError, match="at least one dimension"):
        A.fake_quantize_channels(np.float64(1.0), bits=2)
