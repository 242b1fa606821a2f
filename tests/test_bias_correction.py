"""Tests for qref.calibration.bias_correction (Banner et al. 2019, Sec. 5)."""

import numpy as np
import pytest

from qref import allocation, calibration, data, uniform


def _quantize_rows(w, bits, axis=0):
    """Symmetric per-channel min-max quantization along ``axis`` (qref.uniform), the input of the correction."""
    p = uniform.params_from_data(w, bits=bits, symmetric=True, narrow_range=True, axis=axis)
    return uniform.fake_quantize(w, p)


def _stats(x, axis):
    rows = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0).reshape(x.shape[axis], -1)
    return rows.mean(axis=1), rows.std(axis=1)


@pytest.mark.parametrize("shape, axis", [((16, 40), 0), ((40, 16), 1), ((8, 3, 3, 3), 0), ((3, 8, 5), -2)])
def test_exact_rule_matches_mean_and_std_per_channel(shape, axis, rng):
    w = (rng.laplace(size=shape) * 0.1 + 0.02).astype(np.float32)
    w_q = _quantize_rows(w, 3, axis=axis)
    m, s = _stats(w, axis)
    mq, sq = _stats(w_q, axis)
    assert not np.allclose(mq, m, atol=1e-4) and not np.allclose(sq, s, rtol=1e-3)  # 3 bits did shift them
    c = calibration.bias_correction(w, w_q, axis=axis, rule="exact")
    assert c.dtype == np.float32 and c.shape == w.shape
    mc, sc = _stats(c, axis)
    assert np.allclose(mc, m, atol=1e-6)
    assert np.allclose(sc, s, rtol=1e-5)


def test_paper_rule_matches_std_and_mean_up_to_xi_minus_one(rng):
    w = rng.normal(0.05, 0.2, size=(12, 30))
    w_q = _quantize_rows(w, 2)
    c, mu, xi = calibration.bias_correction(w, w_q, rule="paper", return_params=True)
    m, s = _stats(w, 0)
    mc, sc = _stats(c, 0)
    assert np.allclose(sc, s, rtol=1e-12)
    # w <- xi (w + mu): the new mean is xi * E[W], off by (xi - 1) E[W]
    assert np.allclose(mc - m, (xi - 1) * m, atol=1e-14)
    assert not np.allclose(xi, 1.0)


def test_correction_constants_by_hand(rng):
    w = rng.normal(size=(3, 7))
    w_q = np.round(w * 2) / 2
    c, mu, xi = calibration.bias_correction(w, w_q, return_params=True)
    for k in range(3):
        mu_k = w[k].mean() - w_q[k].mean()
        xi_k = np.linalg.norm(w[k] - w[k].mean()) / np.linalg.norm(w_q[k] - w_q[k].mean())
        assert mu[k] == pytest.approx(mu_k) and xi[k] == pytest.approx(xi_k)
        assert np.allclose(c[k], xi_k * (w_q[k] + mu_k))
    assert mu.shape == xi.shape == (3,) and mu.dtype == xi.dtype == np.float64


@pytest.mark.parametrize("rule", ["paper", "exact"])
def test_identity_when_there_is_no_bias(rule, rng):
    w = rng.normal(size=(6, 20)).astype(np.float32)
    assert np.allclose(calibration.bias_correction(w, w, rule=rule), w, atol=1e-7)
    # a per-row permutation has exactly the same mean and norm: nothing to correct
    perm = np.stack([rng.permutation(r) for r in w])
    out, mu, xi = calibration.bias_correction(w, perm, rule=rule, return_params=True)
    assert np.allclose(out, perm, atol=1e-6)
    assert np.allclose(mu, 0, atol=1e-7) and np.allclose(xi, 1, atol=1e-6)


def test_constant_quantized_channel_only_shifts_mean():
    w = np.array([[0.01, -0.02, 0.03, 0.00], [1.0, -2.0, 0.5, 0.25]])
    w_q = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 0.0]])
    c, mu, xi = calibration.bias_correction(w, w_q, rule="exact", return_params=True)
    assert xi[0] == 1.0
    assert np.allclose(c[0], w[0].mean())
    assert np.allclose(c[1].std(), w[1].std())


def test_does_not_modify_inputs(rng):
    w = rng.normal(size=(4, 5))
    w_q = np.round(w)
    wb, qb = w.copy(), w_q.copy()
    calibration.bias_correction(w, w_q)
    assert np.array_equal(w, wb) and np.array_equal(w_q, qb)


def test_reduces_the_mean_shift_of_a_4bit_reference_mlp():
    """On the book's model: 4-bit per-channel bit allocation leaves per-row means off; the correction restores them."""
    W = data.reference_mlp().weights[0]
    bits = allocation.allocate_bits(np.abs(W).max(axis=1), mean_bits=4)
    W_q = allocation.fake_quantize_channels(W, bits=bits)
    before = np.abs(W_q.mean(axis=1) - W.mean(axis=1)).max()
    after = np.abs(calibration.bias_correction(W, W_q, rule="exact").mean(axis=1) - W.mean(axis=1)).max()
    assert after < 1e-6 < before


def test_bad_input():
    w = np.ones((2, 3))
    with pytest.raises(ValueError, match="same shape, got \\(2, 3\\) and \\(3, 2\\)"):
        calibration.bias_correction(w, w.T)
    with pytest.raises(ValueError, match="axis must be in \\[-2, 1\\]"):
        calibration.bias_correction(w, w, axis=2)
    with pytest.raises(ValueError, match="rule must be one of"):
        calibration.bias_correction(w, w, rule="mean")
    with pytest.raises(TypeError, match="floating dtype"):
        calibration.bias_correction(w.astype(np.int64), w)
    with pytest.raises(ValueError, match="finite"):
        calibration.bias_correction(w, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="must not be empty"):
        calibration.bias_correction(np.ones((0, 3)), np.ones((0, 3)))
    with pytest.raises(ValueError, match="at least one dimension"):
        calibration.bias_correction(np.float64(1.0), np.float64(1.0))
    with pytest.raises(TypeError, match="return_params must be True or False"):
        calibration.bias_correction(w, w, return_params=1)
