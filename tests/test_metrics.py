"""Tests of qref.metrics against hand-computed values, closed forms and SciPy."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import metrics as M
from qref import uniform as U

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is needed as the reference for KL and kurtosis")
from scipy.spatial import distance  # noqa: E402  (scipy is known to be importable here)


# ---- mse and sqnr ----------------------------------------------------------------------

def test_mse_hand_values():
    assert M.mse([1.0, 2.0], [1.0, 3.0]) == 0.5
    assert M.mse([[1.0, -1.0], [2.0, 0.0]], [[0.0, 1.0], [2.0, 3.0]]) == (1 + 4 + 0 + 9) / 4
    assert M.mse(np.float32(2.0), np.float32(-1.0)) == 9.0  # 0-d works
    assert M.mse([1.5, 2.5], [1.5, 2.5]) == 0.0


def test_mse_computed_in_float64():
    # in float32 the squares of 1e-23 underflow to 0; the float64 result does not
    x = np.full(4, 1e-23, np.float32)
    assert M.mse(x, np.zeros(4, np.float32)) == pytest.approx(float(np.float32(1e-23)) ** 2, rel=1e-12)
    assert isinstance(M.mse(x, x), float)


@given(x=hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e3, 1e3)),
       e=hnp.arrays(np.float64, 50, elements=st.floats(-1, 1)))
def test_mse_matches_definition(x, e):
    x_hat = x + e[: x.size]
    expected = sum((a - b) ** 2 for a, b in zip(x.tolist(), x_hat.tolist())) / x.size
    assert M.mse(x, x_hat) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_sqnr_hand_values():
    # signal 1 + 1 = 2, noise 0.01 + 0.01 = 0.02: ratio 100 = 20 dB
    assert M.sqnr_db([1.0, -1.0], [0.9, -1.1]) == pytest.approx(20.0, abs=1e-12)
    assert M.sqnr_db([3.0, 4.0], [3.0, 4.0]) == float("inf")
    # signal 25, noise 0.25: ratio 100 -> 20 dB; x10 noise amplitude -> 0 dB
    assert M.sqnr_db([3.0, 4.0], [3.5, 4.0]) == pytest.approx(20.0, abs=1e-12)
    assert M.sqnr_db([3.0, 4.0], [3.0, 9.0]) == pytest.approx(0.0, abs=1e-12)


def test_sqnr_scale_invariant_and_rejects_no_signal(rng):
    x = rng.normal(size=100)
    x_hat = x + 0.01 * rng.normal(size=100)
    assert M.sqnr_db(7 * x, 7 * x_hat) == pytest.approx(M.sqnr_db(x, x_hat), rel=1e-12)
    with pytest.raises(ValueError, match="x"):
        M.sqnr_db([0.0, 0.0], [0.1, 0.0])


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_sqnr_of_uniform_signal_is_six_db_per_bit(rng, bits):
    # a full-scale uniform signal quantized with b bits: SQNR = 10 log10(2**(2b)) = 6.02 b dB
    # (signal power A^2/3, noise power S^2/12 with S = 2A / 2**b)
    x = rng.uniform(-1, 1, 1_000_000)
    p = U.QuantParams(scale=2.0 / 2**bits, zero_point=0, bits=bits)  # levels S*q, q in [-2**(b-1), 2**(b-1))
    # shifted by half a step, the 2**b levels sit at the centres of 2**b equal cells of [-1, 1]
    fq = U.fake_quantize(x - p.scale / 2, p) + p.scale / 2
    assert M.sqnr_db(x, fq) == pytest.approx(20 * bits * np.log10(2), abs=0.05)


# ---- kl divergence ---------------------------------------------------------------------

def test_kl_hand_values():
    # p = (1/2, 1/2), q = (1/4, 3/4): 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    assert M.kl_divergence([1, 1], [1, 3]) == pytest.approx(0.5 * np.log(4 / 3), rel=1e-14)
    assert M.kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.5 * np.log(4 / 3), rel=1e-14)
    assert M.kl_divergence([3, 0, 1], [3, 0, 1]) == 0.0
    assert M.kl_divergence([1, 0], [1, 1]) == pytest.approx(np.log(2), rel=1e-14)  # p_i = 0 adds 0
    assert M.kl_divergence([1, 1], [1, 0]) == float("inf")


@given(
    p=hnp.arrays(np.float64, 12, elements=st.one_of(st.just(0.0), st.floats(1e-3, 1e3))),
    q=hnp.arrays(np.float64, 12, elements=st.floats(1e-3, 1e3)),
)
def test_kl_matches_scipy_entropy(p, q):
    if p.sum() == 0:
        p[0] = 1.0
    assert M.kl_divergence(p, q) == pytest.approx(scipy_stats.entropy(p, q), rel=1e-9, abs=1e-12)
    assert M.kl_divergence(p, q) >= 0
    # counts and their normalisation give the same divergence
    assert M.kl_divergence(10 * p, q / 7) == pytest.approx(M.kl_divergence(p, q), rel=1e-9, abs=1e-12)


def test_kl_eps_smoothing_matches_scipy(rng):
    p = rng.integers(0, 50, 64).astype(float)
    q = rng.integers(0, 50, 64).astype(float)
    q[::5] = 0
    p[1] = 10  # p > 0 where q = 0
    assert M.kl_divergence(p, q) == float("inf")
    eps = 1e-4
    q_s = q / q.sum() + eps
    assert M.kl_divergence(p, q, eps=eps) == pytest.approx(scipy_stats.entropy(p, q_s), rel=1e-12)


# ---- cosine similarity and angle -------------------------------------------------------

def test_cosine_and_angle_hand_values():
    assert M.cosine_similarity([1.0, 0.0], [1.0, 1.0]) == pytest.approx(np.sqrt(0.5), rel=1e-15)
    assert M.angle_degrees([1.0, 0.0], [1.0, 1.0]) == pytest.approx(45.0, rel=1e-13)
    assert M.angle_degrees([1.0, 0.0], [0.0, 2.0]) == pytest.approx(90.0, rel=1e-13)
    # arccos near +-1 loses half the digits (1 - cos ~ angle**2 / 2): about 1e-6 degrees here
    assert M.angle_degrees([1.0, 2.0], [-2.0, -4.0]) == pytest.approx(180.0, abs=1e-5)
    assert M.angle_degrees([[1.0, 2.0], [3.0, 4.0]], [[2.0, 4.0], [6.0, 8.0]]) == pytest.approx(0.0, abs=1e-5)


@given(x=hnp.arrays(np.float64, 20, elements=st.floats(-1e3, 1e3)),
       y=hnp.arrays(np.float64, 20, elements=st.floats(-1e3, 1e3)))
def test_cosine_matches_scipy_and_stays_in_range(x, y):
    # scipy's reference multiplies the two squared norms, which underflows to 0 below norms of
    # ~1e-77 (a divide-by-zero inside scipy); qref itself is checked on tiny vectors below
    if not (np.linalg.norm(x) > 1e-60 and np.linalg.norm(y) > 1e-60):
        return
    c = M.cosine_similarity(x, y)
    assert -1.0 <= c <= 1.0
    assert c == pytest.approx(1.0 - distance.cosine(x, y), abs=1e-9)
    a = M.angle_degrees(x, y)
    assert 0.0 <= a <= 180.0 and np.isfinite(a)
    assert M.angle_degrees(x, x) == pytest.approx(0.0, abs=1e-5)  # clipped: arccos never sees 1 + eps


def test_cosine_of_tiny_vectors():
    x = np.full(20, 7.96514136e-87)
    assert M.cosine_similarity(x, x) == pytest.approx(1.0, abs=1e-12)
    assert M.cosine_similarity(x, -x) == pytest.approx(-1.0, abs=1e-12)


def test_cosine_rejects_zero_vector():
    with pytest.raises(ValueError, match="zero"):
        M.cosine_similarity([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="zero"):
        M.angle_degrees([1.0, 0.0], [0.0, 0.0])


# ---- storage accounting ----------------------------------------------------------------

def test_model_size_and_compression_hand_values():
    assert M.model_size_bits(1000, 4, num_scales=10) == 1000 * 4 + 10 * 32
    assert M.model_size_bits(1000, 4) == 4000
    assert M.model_size_bits(64 * 64, 8, num_scales=64, scale_bits=16) == 64 * 64 * 8 + 64 * 16
    assert M.compression_ratio(32 * 1000, 4320) == pytest.approx(32000 / 4320, rel=1e-15)
    assert M.compression_ratio(32, 4) == 8.0
    assert isinstance(M.model_size_bits(np.int64(10), np.int8(4)), int)


def test_model_size_of_a_per_channel_quantized_matrix(rng):
    w = rng.normal(size=(16, 32)).astype(np.float32)
    t = U.quantize_tensor(w, bits=4, axis=0)
    assert M.model_size_bits(w.size, 4, num_scales=t.params.scale.size) == t.nbits + 16 * 32
    assert M.compression_ratio(w.size * 32, t.nbits) == 8.0
