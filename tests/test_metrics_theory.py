"""Tests of the closed-form and integrated quantization-error theory in qref.metrics."""

import math

import numpy as np
import pytest

from qref import metrics, uniform
from qref.metrics import expected_mse, sqnr_full_scale_db


# ---- sqnr_full_scale_db -----------------------------------------------------------------

def test_sqnr_full_scale_is_6_02_dB_per_bit_for_a_uniform_signal():
    # crest factor sqrt(3): the 4.77 dB term cancels, leaving 20 log10(2) per bit
    for b in (1, 4, 8, 16):
        assert sqnr_full_scale_db(b) == pytest.approx(20 * b * math.log10(2), abs=1e-12)
    assert sqnr_full_scale_db(8) == pytest.approx(48.16, abs=0.005)


def test_sqnr_full_scale_gaussian_four_sigma_offset():
    # the textbook figure: 6.02 b - 7.27 dB for a Gaussian loaded to +-4 sigma
    for b in (2, 8, 12):
        assert sqnr_full_scale_db(b, peak_to_rms=4.0) == pytest.approx(6.0206 * b - 7.27, abs=0.01)


def test_sqnr_full_scale_vectorised_and_shape():
    out = sqnr_full_scale_db(np.array([[2, 3], [4, 5]]), peak_to_rms=2.0)
    assert out.shape == (2, 2) and out.dtype == np.float64
    assert np.allclose(np.diff(out.ravel()), 20 * math.log10(2))
    assert isinstance(sqnr_full_scale_db(np.int64(4)), float)


def test_sqnr_full_scale_matches_bennett_noise_model():
    # SQNR = sigma^2 / (Delta^2 / 12) with Delta = 2 x_max / 2^b
    b, r = 6, 3.3
    delta = 2 * r / 2**b
    assert sqnr_full_scale_db(b, peak_to_rms=r) == pytest.approx(10 * math.log10(12 / delta**2))


@pytest.mark.parametrize("bits, exc", [(0, ValueError), (65, ValueError), (2.5, TypeError), ([3, 0], ValueError),
                                       (True, TypeError)])
def test_sqnr_full_scale_rejects_bad_bits(bits, exc):
    with pytest.raises(exc, match="bits"):
        sqnr_full_scale_db(bits)


@pytest.mark.parametrize("r", [0.5, 0.0, -1.0, float("nan"), float("inf")])
def test_sqnr_full_scale_rejects_bad_peak_to_rms(r):
    with pytest.raises(ValueError, match="peak_to_rms"):
        sqnr_full_scale_db(4, peak_to_rms=r)


# ---- expected_mse -----------------------------------------------------------------------

def _quantile_sample(distribution, n=1_000_000):
    """A deterministic 'sample': the inverse CDF at the midpoints of n equal-probability cells."""
    u = (np.arange(n) + 0.5) / n
    if distribution == "laplace":  # std 1: scale 1/sqrt(2)
        beta = 1 / math.sqrt(2)
        return np.where(u < 0.5, beta * np.log(2 * u), -beta * np.log(2 * (1 - u)))
    if distribution == "uniform":
        return math.sqrt(3) * (2 * u - 1)
    special = pytest.importorskip("scipy.special")
    return special.ndtri(u)


PARAMS = [
    dict(lo=-3.0, hi=3.0, bits=4, symmetric=True),
    dict(lo=-1.0, hi=2.5, bits=3),
    dict(lo=-2.0, hi=2.0, bits=8, symmetric=True, narrow_range=True),
    dict(lo=0.0, hi=3.0, bits=4, signed=False),
    dict(lo=-0.5, hi=0.5, bits=2),
]


@pytest.mark.parametrize("distribution", ["gaussian", "laplace", "uniform"])
@pytest.mark.parametrize("kw", PARAMS)
def test_expected_mse_matches_quantile_sample(distribution, kw):
    x = _quantile_sample(distribution)
    kw = dict(kw)
    p = uniform.params_from_range(kw.pop("lo"), kw.pop("hi"), **kw)
    measured = metrics.mse(x, uniform.fake_quantize(x, p))
    # the midpoint-quantile sum is a quadrature with error O(1/n) away from the tails
    assert expected_mse(p, distribution=distribution) == pytest.approx(measured, rel=2e-3)


def test_expected_mse_matches_random_sample():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1_000_000) * 0.3
    p = uniform.params_from_range(-0.8, 0.9, bits=3)
    assert expected_mse(p, std=0.3) == pytest.approx(metrics.mse(x, uniform.fake_quantize(x, p)), rel=1e-2)


def test_expected_mse_uniform_input_full_scale_is_delta_squared_over_12():
    # levels at +-a and every S/2-cell between: exactly Delta^2/12, no overload
    a = math.sqrt(3)
    for b in (2, 4, 8):
        p = uniform.params_from_range(-a, a, bits=b, symmetric=True, narrow_range=True)
        granular, overload = expected_mse(p, distribution="uniform", return_parts=True)
        assert overload == 0.0
        assert granular == pytest.approx(float(p.scale) ** 2 / 12, rel=1e-10)


def test_expected_mse_parts_granular_and_overload():
    p = uniform.params_from_range(-4.0, 4.0, bits=12, symmetric=True)
    granular, overload = expected_mse(p, return_parts=True)
    assert granular == pytest.approx(float(p.scale) ** 2 / 12, rel=1e-3)
    # overload of a Gaussian beyond its outermost levels, closed form 2 int_c^inf (x-c)^2 phi
    c_hi, c_lo = uniform.levels(p)[-1], -uniform.levels(p)[0]

    def tail(c):
        q = 0.5 * math.erfc(c / math.sqrt(2))
        return (1 + c * c) * q - c * math.exp(-c * c / 2) / math.sqrt(2 * math.pi)

    assert overload == pytest.approx(tail(c_hi) + tail(c_lo), rel=1e-9)
    assert expected_mse(p) == pytest.approx(granular + overload)


def test_expected_mse_laplace_overload_closed_form():
    # a quantizer whose only levels are 0 and 1000: everything rounds to 0, MSE = variance
    p = uniform.QuantParams(scale=1000.0, zero_point=0, bits=1, signed=False)
    for d in ("gaussian", "laplace", "uniform"):
        assert expected_mse(p, distribution=d, std=2.0) == pytest.approx(4.0, rel=1e-9)
    # levels {0, c}: Laplace overload is beta^2 exp(-c / beta) above c plus beta^2 below 0
    p = uniform.QuantParams(scale=1.5, zero_point=0, bits=1, signed=False)
    beta = 1 / math.sqrt(2)
    assert expected_mse(p, distribution="laplace", return_parts=True)[1] == pytest.approx(
        beta**2 * math.exp(-1.5 / beta) + beta**2, rel=1e-12)


def test_expected_mse_scales_with_std():
    p1 = uniform.params_from_range(-2.0, 2.0, bits=4)
    p2 = uniform.params_from_range(-20.0, 20.0, bits=4)
    for d in ("gaussian", "laplace", "uniform"):
        assert expected_mse(p2, distribution=d, std=10.0) == pytest.approx(100 * expected_mse(p1, distribution=d), rel=1e-9)


def test_expected_mse_reproduces_aciq_optimum_region():
    # ACIQ (Banner et al. 2019): for Laplace(b) at 4 bits the optimal clip is about 5.03 b;
    # the exact MSE of the qref grid is flat there: within 0.5% of its minimum
    b = 1.0
    std = b * math.sqrt(2)
    alphas = np.linspace(3.0, 8.0, 501)
    mse = np.array([expected_mse(uniform.params_from_range(-a, a, bits=4, symmetric=True),
                                 distribution="laplace", std=std) for a in alphas])
    at_aciq = expected_mse(uniform.params_from_range(-5.03, 5.03, bits=4, symmetric=True),
                           distribution="laplace", std=std)
    assert 4.5 < alphas[np.argmin(mse)] < 5.5
    assert at_aciq <= 1.005 * mse.min()


def test_expected_mse_is_deterministic_and_fast_for_16_bits():
    p = uniform.params_from_range(-4.0, 4.0, bits=16, symmetric=True)
    assert expected_mse(p) == expected_mse(p)
    granular, overload = expected_mse(p, return_parts=True)
    assert granular == pytest.approx(float(p.scale) ** 2 / 12, rel=1e-6)
    assert overload > 1000 * granular  # at 16 bits the +-4 sigma clipping error dominates


def test_expected_mse_validation():
    p = uniform.params_from_range(-1.0, 1.0, bits=4)
    with pytest.raises(TypeError, match="params"):
        expected_mse((1.0, 0), distribution="gaussian")
    with pytest.raises(ValueError, match="distribution"):
        expected_mse(p, distribution="student_t")
    with pytest.raises(ValueError, match="std"):
        expected_mse(p, std=0.0)
    with pytest.raises(TypeError, match="return_parts"):
        expected_mse(p, return_parts=1)
    pc = uniform.params_from_range(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), bits=4, axis=0)
    with pytest.raises(ValueError, match="per-tensor"):
        expected_mse(pc)
