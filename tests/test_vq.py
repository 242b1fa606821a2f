"""Exact 1-d k-means (DP, twins, brute force), the KMeans estimator, product quantization."""

import itertools

import numpy as np
import pytest

from qref import vq
from qref.nonuniform import lloyd_max_data


def _prefix(x, w=None):
    v = np.sort(x)
    w = np.ones(v.size) if w is None else w
    c = v - v.mean()
    cat = lambda a: np.concatenate(([0.0], np.cumsum(a)))  # noqa: E731
    return cat(w), cat(w * c), cat(w * c * c)


def _brute_force(x, k):
    """Least inertia over every labelling of x into at most k clusters (k**n of them)."""
    best = np.inf
    for lab in itertools.product(range(k), repeat=x.size):
        lab = np.array(lab)
        cost = sum(((x[lab == j] - x[lab == j].mean()) ** 2).sum() for j in set(lab.tolist()))
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_equals_brute_force(seed):
    r = np.random.default_rng(seed)
    x = np.round(r.standard_normal(7), 1)  # with ties, sometimes
    for k in (1, 2, 3):
        if k > np.unique(x).size:
            continue
        best = _brute_force(x, k)
        for method in ("auto", "lagrangian"):
            centers, labels, inertia = vq.kmeans_1d_optimal(x, k, method=method)
            assert inertia == pytest.approx(best, rel=1e-10, abs=1e-12)
            assert np.all(np.diff(centers) > 0) and labels.dtype == np.uint8
            np.testing.assert_allclose(((x - centers[labels]) ** 2).sum(), inertia, rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_layer_programs_agree(seed):
    r = np.random.default_rng(seed)
    x = r.laplace(size=257)
    W, S, Q = _prefix(x)
    for k in (1, 2, 5, 9):
        Bq, Dq = vq._dp_quadratic(W, S, Q, k)
        Bn, Dn = vq._dp_dc_numpy(W, S, Q, k)
        Bk, Dk = vq._dp_queue_kernel(W, S, Q, k)
        # every row of every layer: the same best start (smallest l) and the same cost
        for j in range(2, k + 1):
            assert np.array_equal(Bq[j - 1, j - 1:], Bn[j - 1, j - 1:])
            assert np.array_equal(Bq[j - 1, j - 1:], Bk[j - 1, j - 1:])
        np.testing.assert_allclose(Dn[k - 1:], Dq[k - 1:], rtol=1e-12)
        np.testing.assert_allclose(Dk[k - 1:], Dq[k - 1:], rtol=1e-12)
        inertias = [vq.kmeans_1d_optimal(x, k, method=m)[2] for m in ("queue", "dc", "quadratic")]
        assert inertias == pytest.approx([inertias[2]] * 3, rel=1e-12)


@pytest.mark.parametrize("x, k", [([0.0, 1.0, 2.0], 2), (np.arange(12.0), 4), (np.arange(12.0), 5),
                                  (np.arange(9.0), 2)])
def test_exact_ties_take_the_smallest_start(x, k):
    # small integers whose costs are computed exactly, so tied clusterings tie exactly (e.g.
    # {0}{1, 2} and {0, 1}{2}); every program keeps the first (smallest) start of the last
    # cluster. (Where a division rounds, a tie may be broken either way by the rounding.)
    W, S, Q = _prefix(np.asarray(x))
    tables = [f(W, S, Q, k)[0] for f in (vq._dp_quadratic, vq._dp_dc_numpy, vq._dp_queue_kernel)]
    for B in tables[1:]:
        for j in range(2, k + 1):
            assert np.array_equal(B[j - 1, j - 1:], tables[0][j - 1, j - 1:])
    runs = [vq.kmeans_1d_optimal(np.asarray(x), k, method=m) for m in ("queue", "dc")]
    assert np.array_equal(runs[0][1], runs[1][1]) and runs[0][2] == runs[1][2]


def test_meet_in_the_middle_on_two_threads(rng):
    # >= 20,000 distinct values: the forward and backward halves run on two threads
    x = np.concatenate([rng.standard_normal(15_000), 4 + 0.5 * rng.laplace(size=10_000)])
    for k in (2, 7):
        c1, l1, i1 = vq.kmeans_1d_optimal(x, k, method="queue")
        c2, l2, i2 = vq.kmeans_1d_optimal(x, k, method="dc")
        assert i1 == pytest.approx(i2, rel=1e-12) and np.array_equal(l1, l2)
        np.testing.assert_allclose(c1, c2, rtol=1e-12)
        # the split is a true optimum: no single center move or boundary shift improves it
        lloyd = vq.KMeans(k, init=c1.reshape(-1, 1), tol=0).fit(x.reshape(-1, 1))
        assert lloyd.inertia_ >= i1 * (1 - 1e-12)


# ---------------------------------------------------------------- the Lagrangian program


def _penalized_brute_force(x, lam):
    """min over clusterings of sorted distinct x (any number of clusters) of cost + lam * count, O(m^2)."""
    v = np.sort(x)
    G = np.zeros(v.size + 1)  # G[i]: the first i points
    for i in range(1, v.size + 1):
        G[i] = min(G[l] + lam + ((v[l:i] - v[l:i].mean()) ** 2).sum() for l in range(i))
    return G[-1]


@pytest.mark.parametrize("seed", range(4))
def test_lagrangian_sweep_is_the_penalized_optimum(seed):
    # one sweep minimizes cost + lam * count over every number of clusters (checked against
    # the plain O(m^2) recursion), and the clustering it finds is optimal for its own count
    x = np.random.default_rng(seed).laplace(size=40)
    W, S, Q = _prefix(x)
    E, work = np.empty(x.size), np.empty((4, x.size), dtype=np.int32)
    for lam in (1e-3, 0.05, 0.4, 3.0, 1e3):
        n, cost = vq._lagrangian_kernel(W, S, Q, lam, E, work)
        assert cost + lam * n == pytest.approx(_penalized_brute_force(x, lam), rel=1e-12)
        assert cost == pytest.approx(vq.kmeans_1d_optimal(x, int(n), method="quadratic")[2], rel=1e-10, abs=1e-12)


def _spy_fallback(monkeypatch):
    calls = []
    orig = vq._layered_runs
    monkeypatch.setattr(vq, "_layered_runs", lambda *a: calls.append(a[2]) or orig(*a))
    return calls


@pytest.mark.parametrize("dist", ["normal", "laplace", "cauchy", "integers", "mixture"])
def test_lagrangian_equals_the_layers(rng, monkeypatch, dist):
    x = {"normal": rng.standard_normal(3000), "laplace": rng.laplace(size=3000),
         "cauchy": rng.standard_cauchy(2000), "integers": rng.integers(0, 2000, 3000).astype(float),
         "mixture": np.concatenate([rng.standard_normal(2000), 6 + 0.1 * rng.standard_normal(300), [50.0, 51]])}[dist]
    fallback = _spy_fallback(monkeypatch)
    fell = 0
    for k in (2, 3, 8, 16, 40):
        c1, l1, i1 = vq.kmeans_1d_optimal(x, k, method="lagrangian")
        fell += len(fallback)
        c2, l2, i2 = vq.kmeans_1d_optimal(x, k, method="dc")
        fallback.clear()
        assert i1 == pytest.approx(i2, rel=1e-12)
        if dist != "integers":  # distinct reals: no ties, the same clustering
            assert np.array_equal(l1, l2)
            np.testing.assert_allclose(c1, c2, rtol=1e-12)
    assert fell <= 1  # the sweeps found k themselves (ties among integers may defeat one)


def test_lagrangian_falls_back_where_no_price_isolates_k(monkeypatch):
    # three equal pairs far apart: f(3) = 1.5, f(4) = 1, f(5) = 0.5, f(6) = 0 lie on a line, so
    # every price gives 3 or 6 clusters (or all of 3..6 on a tie), never 4 or 5 alone
    x = np.array([0.0, 1.0, 100.0, 101.0, 200.0, 201.0])
    fallback = _spy_fallback(monkeypatch)
    for k in (4, 5):
        _, _, inertia = vq.kmeans_1d_optimal(x, k, method="lagrangian")
        assert inertia == pytest.approx({4: 1.0, 5: 0.5}[k])
    assert fallback == [4, 5]
    for k, f in ((2, 10_001.5), (3, 1.5)):  # corners of the hull: found by a sweep
        assert vq.kmeans_1d_optimal(x, k, method="lagrangian")[2] == pytest.approx(f)
    assert fallback == [4, 5]


def test_auto_is_lagrangian_for_many_distinct_values(rng, monkeypatch):
    x = np.concatenate([rng.standard_normal(15_000), 4 + 0.5 * rng.laplace(size=10_000)]).astype(np.float32)
    sweeps = []
    orig = vq._lagrangian_kernel
    monkeypatch.setattr(vq, "_lagrangian_kernel", lambda *a: sweeps.append(a[0].size) or orig(*a))
    a = vq.kmeans_1d_optimal(x, 16)
    b = vq.kmeans_1d_optimal(x, 16, method="dc")
    assert a[2] == pytest.approx(b[2], rel=1e-12) and np.array_equal(a[1], b[1])
    assert (np.unique(x).size + 1 in sweeps) == vq.USE_NUMBA  # the full data was swept (with numba only)


def test_centers_are_the_weighted_means_of_the_runs(rng):
    x = rng.standard_normal(500)
    w = rng.uniform(0.1, 2.0, 500)
    centers, labels, inertia = vq.kmeans_1d_optimal(x, 6, sample_weight=w)
    for j in range(6):
        np.testing.assert_allclose(centers[j], np.average(x[labels == j], weights=w[labels == j]), rtol=1e-13)
    assert inertia == pytest.approx(float(np.sum(w * (x - centers[labels]) ** 2)), rel=1e-13)


def test_never_worse_than_lloyd(rng):
    x = np.concatenate([rng.standard_normal(3000), 5 + 0.3 * rng.standard_normal(500)]).astype(np.float32)
    for k in (2, 4, 8, 16):
        _, _, best = vq.kmeans_1d_optimal(x, k)
        for init in ("quantile", "linear"):
            r = lloyd_max_data(x, n_levels=k, init=init)
            assert best <= r.mse * x.size * (1 + 1e-9)
        for seed in range(3):
            km = vq.KMeans(k, rng=seed, tol=0).fit(x.reshape(-1, 1))
            assert best <= km.inertia_ * (1 + 1e-6)


def test_weights_equal_repetition(rng):
    v = rng.standard_normal(30)
    w = rng.integers(1, 4, size=30)
    a = vq.kmeans_1d_optimal(v, 4, sample_weight=w.astype(float))
    b = vq.kmeans_1d_optimal(np.repeat(v, w), 4)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    assert a[2] == pytest.approx(b[2], rel=1e-12)


def test_dtype_shape_and_input_untouched(rng):
    x = rng.standard_normal((20, 30)).astype(np.float32)
    before = x.copy()
    centers, labels, inertia = vq.kmeans_1d_optimal(x, 300)
    assert np.array_equal(x, before)
    assert centers.dtype == np.float32 and labels.shape == x.shape and labels.dtype == np.uint16
    assert isinstance(inertia, float)
    # k = number of distinct values: zero inertia
    assert vq.kmeans_1d_optimal(x, np.unique(x).size)[2] < 1e-20


def test_kmeans_1d_bad_input():
    with pytest.raises(ValueError, match="k must be <= the number of distinct values of x"):
        vq.kmeans_1d_optimal(np.array([1.0, 1.0, 2.0]), 3)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        vq.kmeans_1d_optimal(np.arange(5), 2)
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        vq.kmeans_1d_optimal(np.arange(5.0), 2, sample_weight=-np.ones(5))
    with pytest.raises(ValueError, match="sample_weight must have the shape"):
        vq.kmeans_1d_optimal(np.arange(5.0), 2, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        vq.kmeans_1d_optimal(np.arange(5.0), 0)
    with pytest.raises(ValueError, match="x must be finite"):
        vq.kmeans_1d_optimal(np.array([1.0, np.nan]), 1)


# ---------------------------------------------------------------- KMeans


@pytest.mark.parametrize("init", ["k-means++", "random", "linear"])
def test_kmeans_estimator(rng, init):
    X = np.concatenate([rng.normal(c, 0.2, size=(100, 3)) for c in (-3, 0, 3)]).astype(np.float32)
    km = vq.KMeans(3, init=init, rng=0)
    assert km.fit(X) is km
    assert km.cluster_centers_.shape == (3, 3) and km.cluster_centers_.dtype == np.float32
    assert km.labels_.dtype == np.uint8 and km.labels_.shape == (300,)
    h = np.array(km.inertia_history_)
    assert np.all(np.diff(h) <= 1e-9 * h[0]) and h[-1] == km.inertia_
    assert 1 <= km.n_iter_ <= 300
    assert np.array_equal(km.encode(X), km.labels_) and np.array_equal(km.transform(X), km.labels_)
    dec = km.decode(km.encode(X))
    assert dec.shape == X.shape and np.array_equal(dec, km.inverse_transform(km.labels_))
    assert np.isclose(((X.astype(float) - dec) ** 2).sum(), km.inertia_, rtol=1e-4)
    assert km.inertia_ < 300 * 3 * 0.05  # found the three blobs


def test_kmeans_empty_clusters_are_reseeded(rng):
    X = rng.standard_normal((50, 2))
    init = np.vstack([X[:3], [[100.0, 100.0], [200.0, -50.0]]])  # two centers that catch nothing
    km = vq.KMeans(5, init=init, max_iter=50).fit(X)
    assert np.isfinite(km.cluster_centers_).all()
    assert np.unique(km.labels_).size == 5
    h = np.array(km.inertia_history_)
    assert np.all(np.diff(h) <= 1e-12 * h[0])
    # more clusters than distinct points: never NaN
    km = vq.KMeans(4, rng=0).fit(np.zeros((6, 2)) + np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [1.0]]))
    assert np.isfinite(km.cluster_centers_).all() and km.inertia_ == 0.0


def test_kmeans_params_and_errors(rng):
    km = vq.KMeans(4, init="random", rng=3)
    assert km.get_params() == dict(n_clusters=4, init="random", max_iter=300, tol=1e-4, rng=3)
    assert km.set_params(n_clusters=2) is km and km.n_clusters == 2
    with pytest.raises(ValueError, match="not a parameter of KMeans"):
        km.set_params(n_init=3)
    with pytest.raises(RuntimeError, match="not fitted"):
        km.encode(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="X must be 2-d"):
        km.fit(np.zeros(5))
    with pytest.raises(ValueError, match="n_clusters must be <= n_samples"):
        vq.KMeans(10).fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="init must be one of"):
        vq.KMeans(2, init="kmeans||").fit(np.zeros((3, 2)))
    km = vq.KMeans(2, rng=0).fit(rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match="codes must be in"):
        km.decode(np.array([0, 2]))
    with pytest.raises(ValueError, match="X must have 2 features"):
        km.encode(np.zeros((3, 3)))


def test_kmeans_reproducible_and_matches_sklearn(rng):
    X = rng.standard_normal((400, 2))
    a = vq.KMeans(5, rng=7).fit(X)
    b = vq.KMeans(5, rng=7).fit(X)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    cluster = pytest.importorskip("sklearn.cluster")
    init = a.cluster_centers_ + 0.05
    ours = vq.KMeans(5, init=init, tol=0, max_iter=500).fit(X)
    theirs = cluster.KMeans(5, init=init, n_init=1, tol=0, max_iter=500, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(np.sort(ours.cluster_centers_, 0), np.sort(theirs.cluster_centers_, 0), atol=1e-8)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-9)


# ---------------------------------------------------------------- product quantization


def test_pq_shapes_and_asymmetric_distance(rng):
    X = rng.standard_normal((300, 12)).astype(np.float32)
    pq = vq.ProductQuantizer(M=3, Ks=20, rng=1).fit(X)
    assert pq.codewords_.shape == (3, 20, 4) and pq.codewords_.dtype == np.float32
    codes = pq.encode(X)
    assert codes.shape == (300, 3) and codes.dtype == np.uint8
    Xh = pq.decode(codes)
    assert Xh.shape == X.shape and Xh.dtype == np.float32
    d = pq.asymmetric_distances(X[5], codes)
    np.testing.assert_allclose(d, ((X[5].astype(float) - Xh.astype(float)) ** 2).sum(1), rtol=1e-5)
    assert vq.ProductQuantizer(M=2, Ks=300).fit(rng.standard_normal((400, 4))).encode(np.zeros((1, 4))).dtype == np.uint16
    # PQ error is below a single k-means with the same number of stored codewords
    err_pq = ((X - Xh) ** 2).sum()
    err_km = vq.KMeans(20, rng=1).fit(X).inertia_
    assert err_pq < err_km


def test_pq_m1_equals_kmeans(rng):
    X = rng.standard_normal((200, 4))
    for init in ("k-means++", "random"):
        pq = vq.ProductQuantizer(M=1, Ks=8, init=init, rng=11).fit(X)
        km = vq.KMeans(8, init=init, rng=11).fit(X)
        assert np.array_equal(pq.codewords_[0], km.cluster_centers_)
        assert np.array_equal(pq.encode(X)[:, 0], km.encode(X))


def test_pq_errors(rng):
    with pytest.raises(ValueError, match="D=10 must be divisible by M=4"):
        vq.ProductQuantizer(M=4, Ks=4).fit(rng.standard_normal((20, 10)))
    pq = vq.ProductQuantizer(M=2, Ks=4, rng=0).fit(rng.standard_normal((20, 4)))
    with pytest.raises(ValueError, match="codes must have shape"):
        pq.decode(np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="query must have shape"):
        pq.distance_table(np.zeros(5))
    with pytest.raises(TypeError, match="codes must have an integer dtype"):
        pq.decode(np.zeros((3, 2)))
