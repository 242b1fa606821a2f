"""Tests of the speed-motivated details of ``qref.vq`` (the timings themselves live in benchmarks/)."""

import math

import numpy as np
import pytest

from qref import vq


@pytest.mark.parametrize("n", [1, 7, 100_003])
def test_weighted_sum_is_the_exact_sum_up_to_rounding(rng, n):
    w = rng.uniform(0, 3, n)
    d2 = rng.exponential(size=n)
    exact = math.fsum((w * d2).tolist())  # correctly rounded sum of the (rounded) products
    got = vq._weighted_sum(w, d2)
    assert isinstance(got, float)
    assert got == pytest.approx(exact, rel=1e-13)


def test_kmeans_inertia_is_the_weighted_sum_of_squared_distances(rng):
    # large enough (n * k * D >= _SMALL) for the numba assignment kernel and the non-BLAS sum
    X = rng.standard_normal((4000, 8)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, 4000)
    km = vq.KMeans(40, init="random", max_iter=5, tol=0, rng=0).fit(X, sample_weight=w)
    C = km.cluster_centers_.astype(np.float64)
    d2 = ((X.astype(np.float64)[:, None, :] - C[None]) ** 2).sum(-1)
    exact = math.fsum((w * d2.min(1)).tolist())
    assert km.inertia_ == pytest.approx(exact, rel=1e-5)  # distances in float32
    assert km.inertia_history_[-1] == km.inertia_


def test_product_quantizer_fit_does_not_touch_blas_per_iteration(rng, monkeypatch):
    # the Lloyd loop's inertia must come from the numpy sum, not from ``w @ d2`` (BLAS ddot,
    # whose spinning OpenBLAS threads slowed the numba assignment kernel 2x on 2 cores)
    calls = []
    orig = vq._weighted_sum
    monkeypatch.setattr(vq, "_weighted_sum", lambda w, d2: calls.append(w.size) or orig(w, d2))
    X = rng.standard_normal((600, 8)).astype(np.float32)
    vq.ProductQuantizer(M=2, Ks=16, init="random", max_iter=3, tol=0, rng=0).fit(X)
    assert calls == [600] * (2 * (3 + 1))  # each subspace: one per iteration and the final one


def test_prefix_sums_kernel_is_the_numpy_twin_bit_for_bit(rng):
    c = rng.standard_normal(10_001)
    w = rng.integers(1, 5, c.size).astype(np.float64)
    P = np.empty((3, c.size + 1))
    vq._prefix_sums_kernel(c, w, P)
    for got, want in zip(P, vq._prefix_sums(c, w)):
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_nearest_kernel_is_the_numpy_twin_bit_for_bit(rng, dtype, k):
    from qref import codebook
    x = rng.standard_normal(70_001).astype(dtype)
    u = np.sort(rng.choice(x, k, replace=False))  # codewords equal to some values
    if k > 1:
        x[:3] = (u[0] + u[1]) / 2  # exact midpoints: the tie goes to the lower codeword
    x[3:5] = u[0] - 5, u[-1] + 5  # beyond both ends
    out = np.empty(x.size, dtype=np.int64)
    codebook._nearest_kernel(x, u, out)
    want = codebook._nearest_numpy(x, u)
    assert np.array_equal(out, want)
    assert np.array_equal(codebook._nearest(x, u), want)  # the dispatcher (numba at this size)
    if k > 1 and (u[0] + u[1]) / 2 - u[0] == u[1] - (u[0] + u[1]) / 2:
        assert want[0] == 0


def test_nearest_of_float16_takes_the_numpy_twin(rng):
    # numba has no float16 arithmetic: the dispatcher keeps such input on the numpy path
    from qref import codebook
    x = rng.standard_normal(70_001).astype(np.float16)
    u = np.array([-1.0, 0.0, 0.5], dtype=np.float16)
    assert np.array_equal(codebook._nearest(x, u), codebook._nearest_numpy(x, u))


def test_k_equal_to_the_number_of_values_is_every_value_alone(rng):
    x = rng.permutation(np.repeat(rng.standard_normal(40), 3))
    for method in ("lagrangian", "queue", "dc", "quadratic"):
        centers, labels, inertia = vq.kmeans_1d_optimal(x, 40, method=method)
        np.testing.assert_allclose(centers, np.unique(x), rtol=1e-15, atol=1e-15)  # the mean of 3 equal values
        assert inertia < 1e-28
