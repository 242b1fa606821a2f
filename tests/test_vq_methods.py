"""qref.vq beyond plain k-means: twins, weighted and Hessian-weighted k-means, the MLP's
curvature, residual quantization with beam search, Huffman and Deep Compression's size
accounting, soft-to-hard annealing, the per-feature Lloyd-Max estimator, and bad input."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qref import codebook, vq
from qref.nonuniform import lloyd_max_data


# ---------------------------------------------------------------- twins


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assign_twins_agree(rng, dtype):
    X = rng.standard_normal((3000, 7)).astype(dtype)
    C = rng.standard_normal((37, 7)).astype(dtype)
    lab_np, d_np = vq._assign_numpy(X, C)
    lab_nb = np.empty(X.shape[0], dtype=np.int64)
    d_nb = np.empty(X.shape[0], dtype=dtype)
    vq._assign_kernel(X, np.ascontiguousarray(C.T), lab_nb, d_nb)
    assert np.array_equal(lab_np, lab_nb)  # random data: no near-ties
    exact = ((X.astype(np.float64)[:, None, :] - C.astype(np.float64)[None]) ** 2).sum(-1)
    assert np.array_equal(lab_nb, exact.argmin(1))  # and both are the true nearest centers
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(d_nb, exact.min(1), rtol=tol, atol=tol)
    np.testing.assert_allclose(d_np, exact.min(1), rtol=tol, atol=10 * tol)
    assert d_np.dtype == d_nb.dtype == dtype


@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_sums_twins_bit_identical(rng, weighted):
    X = rng.standard_normal((500, 3)).astype(np.float32)
    lab = rng.integers(0, 6, 500)
    w = rng.random(500) if weighted else np.ones(500)
    a = vq._cluster_sums_numpy(X, lab, w, 7)  # cluster 6 is empty
    b = vq._cluster_sums_kernel(X, lab, w, 7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0][2], (w[lab == 2, None] * X[lab == 2]).sum(0), rtol=1e-12)
    assert a[1][6] == 0


# ---------------------------------------------------------------- weighted k-means


def test_kmeans_integer_weights_equal_repetition(rng):
    X = rng.standard_normal((60, 2))
    w = rng.integers(1, 4, 60)
    init = X[:4].copy()
    a = vq.KMeans(4, init=init, tol=0, max_iter=100).fit(X, sample_weight=w)
    b = vq.KMeans(4, init=init, tol=0, max_iter=100).fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-12)
    # weighted centers are the weighted means of their clusters (at convergence)
    for j in range(4):
        m = a.labels_ == j
        np.testing.assert_allclose(a.cluster_centers_[j], (w[m, None] * X[m]).sum(0) / w[m].sum(), rtol=1e-12)


def test_kmeans_unit_weights_equal_no_weights(rng):
    X = rng.standard_normal((200, 3))
    for init in ("k-means++", "random", "linear"):
        a = vq.KMeans(5, init=init, rng=3).fit(X)
        b = vq.KMeans(5, init=init, rng=3).fit(X, sample_weight=np.ones(200))
        assert np.array_equal(a.cluster_centers_, b.cluster_centers_) and a.inertia_ == b.inertia_
    # zero weights: the points do not move the centers, but get a label
    w = np.ones(200)
    w[:50] = 0
    c = vq.KMeans(3, init=X[50:53], tol=0).fit(X, sample_weight=w)
    d = vq.KMeans(3, init=X[50:53], tol=0).fit(X[50:])
    np.testing.assert_allclose(c.cluster_centers_, d.cluster_centers_, rtol=1e-12)
    assert c.labels_.shape == (200,)


def test_kmeans_weighted_seeding_follows_weights(rng):
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    w = np.array([0.0, 0.0, 0.0, 1.0])  # only one point may seed
    for init in ("k-means++", "random"):
        km = vq.KMeans(1, init=init, rng=0, max_iter=1).fit(X, sample_weight=w)
        assert km.cluster_centers_[0, 0] == 3.0


def test_kmeans_float32_work_precision(rng):
    X = rng.standard_normal((2000, 4)).astype(np.float32)
    km = vq.KMeans(16, rng=0).fit(X)
    assert km._work.dtype == np.float32 and km.cluster_centers_.dtype == np.float32
    h = np.array(km.inertia_history_)
    assert np.all(np.diff(h) <= 1e-6 * h[0])  # float32 distances: monotone up to float32 rounding
    exact = ((X.astype(np.float64) - km.decode(km.labels_).astype(np.float64)) ** 2).sum()
    assert km.inertia_ == pytest.approx(exact, rel=1e-5)


# ---------------------------------------------------------------- Hessian-weighted k-means


def _brute_weighted(w, h, k):
    """Least Hessian-weighted distortion over every labelling of the points into <= k clusters."""
    best = np.inf
    for lab in itertools.product(range(k), repeat=w.size):
        lab = np.array(lab)
        cost = 0.0
        for j in set(lab.tolist()):
            m = lab == j
            c = (h[m] * w[m]).sum() / h[m].sum() if h[m].sum() > 0 else w[m].mean()
            cost += (h[m] * (w[m] - c) ** 2).sum()
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_hessian_weighted_optimal_equals_brute_force(seed):
    r = np.random.default_rng(seed)
    w, h = r.standard_normal(7), r.exponential(size=7)
    for k in (1, 2, 3):
        centers, labels, d = vq.hessian_weighted_kmeans(w, k, hessian=h)
        assert d == pytest.approx(_brute_weighted(w, h, k), rel=1e-10, abs=1e-12)
        assert d == pytest.approx(vq.hessian_weighted_distortion(w, centers[labels], hessian=h), rel=1e-12)


@pytest.mark.parametrize("method", ["optimal", "lloyd"])
def test_hessian_weighted_centers_are_weighted_means(rng, method):
    w = rng.standard_normal(3000).astype(np.float32)
    h = rng.exponential(size=3000).astype(np.float32) * (1 + 5 * (w > 1))  # large weights matter more
    centers, labels, d = vq.hessian_weighted_kmeans(w, 8, hessian=h, method=method, tol=0)
    assert centers.dtype == np.float32 and labels.dtype == np.uint8 and np.all(np.diff(centers) > 0)
    hw, ww = h.astype(np.float64), w.astype(np.float64)
    for j in range(8):
        m = labels == j
        assert centers[j] == pytest.approx((hw[m] * ww[m]).sum() / hw[m].sum(), rel=1e-5, abs=1e-6)
    # the clustering minimizes the Hessian-weighted distortion, so it beats plain k-means on it
    plain_c, plain_l, _ = vq.kmeans_1d_optimal(w, 8)
    assert d < vq.hessian_weighted_distortion(w, plain_c[plain_l], hessian=h)
    if method == "optimal":  # the global optimum also beats weighted Lloyd
        _, _, d_lloyd = vq.hessian_weighted_kmeans(w, 8, hessian=h, method="lloyd")
        assert d <= d_lloyd * (1 + 1e-9)


def test_hessian_weighted_uniform_hessian_is_plain_kmeans(rng):
    w = rng.laplace(size=500)
    a = vq.hessian_weighted_kmeans(w, 5, hessian=np.full(500, 2.0))
    b = vq.kmeans_1d_optimal(w, 5)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    assert np.array_equal(a[1], b[1]) and a[2] == pytest.approx(2 * b[2], rel=1e-12)


# ---------------------------------------------------------------- curvature of an MLP


def _tiny_mlp(seed=0, sizes=(5, 6, 4, 3)):
    r = np.random.default_rng(seed)
    Ws = [r.standard_normal((o, i)) * 0.7 for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [r.standard_normal(o) * 0.1 for o in sizes[1:]]
    X = r.standard_normal((40, sizes[0]))
    y = r.integers(0, sizes[-1], 40)
    return SimpleNamespace(weights=Ws, biases=bs), X, y


def _loss(model, X, y):
    _, _, p = vq._mlp_forward(model.weights, model.biases, X)
    return -np.mean(np.log(p[np.arange(len(y)), y]))


def test_mlp_hessian_diagonal_matches_finite_differences():
    model, X, y = _tiny_mlp()
    H = vq.mlp_hessian_diagonal(model, X)
    eps = 1e-4
    r = np.random.default_rng(1)
    for l, W in enumerate(model.weights):
        assert H[l].shape == W.shape and H[l].dtype == np.float64 and (H[l] >= 0).all()
        for _ in range(6):
            a, b = r.integers(W.shape[0]), r.integers(W.shape[1])
            f = []
            for s in (-1, 0, 1):
                W[a, b] += s * eps
                f.append(_loss(model, X, y))
                W[a, b] -= s * eps
            fd = (f[0] - 2 * f[1] + f[2]) / eps**2
            assert H[l][a, b] == pytest.approx(fd, rel=2e-3, abs=1e-6)
    # labels do not enter (the diagonal is the Gauss-Newton term): the curvature of the loss
    # with *other* labels is the same diagonal
    y_other = (y + 1) % (int(y.max()) + 1)
    W = model.weights[0]
    f = []
    for s in (-1, 0, 1):
        W[0, 0] += s * eps
        f.append(_loss(model, X, y_other))
        W[0, 0] -= s * eps
    assert H[0][0, 0] == pytest.approx((f[0] - 2 * f[1] + f[2]) / eps**2, rel=2e-3, abs=1e-6)


def test_mlp_adam_second_moment():
    model, X, y = _tiny_mlp(2)
    # one full batch: v_hat = g^2, with g the finite-difference gradient
    v = vq.mlp_adam_second_moment(model, X, y, batch_size=len(y))
    eps = 1e-6
    W = model.weights[0]
    for a, b in [(0, 0), (3, 2), (5, 4)]:
        W[a, b] += eps
        fp = _loss(model, X, y)
        W[a, b] -= 2 * eps
        fm = _loss(model, X, y)
        W[a, b] += eps
        g = (fp - fm) / (2 * eps)
        assert v[0][a, b] == pytest.approx(g * g, rel=1e-5, abs=1e-12)
    # two batches: v_hat = (beta (1 - beta) g1^2 + (1 - beta) g2^2) / (1 - beta^2)
    beta = 0.9
    v2 = vq.mlp_adam_second_moment(model, X, y, batch_size=20, beta2=beta, rng=0)
    order = np.random.default_rng(0).permutation(40)
    g1 = vq.mlp_adam_second_moment(model, X[order[:20]], y[order[:20]], batch_size=20)
    g2 = vq.mlp_adam_second_moment(model, X[order[20:]], y[order[20:]], batch_size=20)
    for l in range(3):
        expect = (beta * (1 - beta) * g1[l] + (1 - beta) * g2[l]) / (1 - beta**2)
        np.testing.assert_allclose(v2[l], expect, rtol=1e-12, atol=1e-300)


def test_reference_mlp_hessian_weighting_helps():
    """On the book's model, Hessian-weighted sharing has a smaller predicted loss increase."""
    from qref import data

    model, d = data.reference_mlp(), data.load_digits()
    H = vq.mlp_hessian_diagonal(model, d.X_train)
    W, h = model.weights[0], H[0]
    c_h, l_h, dist_h = vq.hessian_weighted_kmeans(W, 4, hessian=h)
    c_p, l_p, _ = vq.kmeans_1d_optimal(W, 4)
    assert dist_h < vq.hessian_weighted_distortion(W, c_p[l_p], hessian=h)


# ---------------------------------------------------------------- residual quantization


def test_rq_stages_and_decode(rng):
    X = rng.standard_normal((600, 8)).astype(np.float32)
    rq = vq.ResidualQuantizer(M=4, K=16, rng=0).fit(X)
    assert rq.codebooks_.shape == (4, 16, 8) and rq.codebooks_.dtype == np.float32
    dist = rq.stage_distortion_
    assert dist.shape == (5,) and np.all(np.diff(dist) < 0)  # every stage strictly helps here
    assert dist[0] == pytest.approx(np.mean((X.astype(float) ** 2).sum(1)), rel=1e-6)
    codes = rq.encode(X)
    assert codes.shape == (600, 4) and codes.dtype == np.uint8
    Xh = rq.decode(codes)
    assert Xh.dtype == np.float32
    np.testing.assert_allclose(Xh, sum(rq.codebooks_[m][codes[:, m]].astype(float) for m in range(4)), rtol=1e-6)
    # the greedy training codes reproduce the last stage's training distortion
    assert np.mean(((X - Xh).astype(float) ** 2).sum(1)) == pytest.approx(dist[-1], rel=1e-4)
    # with the first stages only, the distortion follows the table
    for m in range(1, 5):
        part = sum(rq.codebooks_[s][codes[:, s]].astype(float) for s in range(m))
        assert np.mean(((X - part) ** 2).sum(1)) == pytest.approx(dist[m], rel=1e-4)
    big = vq.ResidualQuantizer(M=1, K=300, rng=0).fit(rng.standard_normal((400, 2)))
    assert big.encode(np.zeros((1, 2))).dtype == np.uint16


def test_rq_m1_equals_kmeans(rng):
    X = rng.standard_normal((300, 3))
    rq = vq.ResidualQuantizer(M=1, K=6, rng=5).fit(X)
    km = vq.KMeans(6, rng=5).fit(X)
    assert np.array_equal(rq.codebooks_[0], km.cluster_centers_)
    assert np.array_equal(rq.encode(X)[:, 0], km.encode(X))


def test_beam_width_one_is_greedy_and_full_beam_is_exhaustive(rng):
    X = rng.standard_normal((200, 3))
    rq = vq.ResidualQuantizer(M=3, K=4, rng=1).fit(X)
    cb = rq._work
    greedy, _ = vq._greedy_encode(X, cb)
    assert np.array_equal(vq._beam_encode(X, cb, 1), greedy)
    # beam >= K^(M-1) keeps every partial encoding: the result is the best of all K^M sums
    full = vq._beam_encode(X, cb, 16)
    sums = np.array([cb[0][a] + cb[1][b] + cb[2][c] for a, b, c in itertools.product(range(4), repeat=3)])
    best = ((X[:, None, :] - sums[None]) ** 2).sum(-1).min(1)
    got = ((X - cb[np.arange(3), full].sum(1)) ** 2).sum(1)
    np.testing.assert_allclose(got, best, rtol=1e-12, atol=1e-15)
    assert np.array_equal(rq.encode(X, beam=16), full.astype(np.uint8))


def test_plain_beam_can_lose_the_greedy_path_but_encode_cannot():
    """A 1-d example where a beam of 2 drops the greedy path and ends worse; encode() keeps the better."""
    cb = np.array([[[1.0], [1.2]], [[-1.12], [-1.16]], [[0.12], [0.5]]])  # stages (3, K=2, D=1)
    x = np.zeros((1, 1))
    greedy, R = vq._greedy_encode(x, cb)
    beam = vq._beam_encode(x, cb, 2)
    err = lambda c: float(((x - cb[np.arange(3), c].sum(1)) ** 2).sum())  # noqa: E731
    assert err(greedy) == pytest.approx(0.0, abs=1e-20) and err(beam) > 0.02
    rq = vq.ResidualQuantizer(M=3, K=2)
    rq.codebooks_, rq._work, rq.n_features_in_ = cb.copy(), cb.copy(), 1
    assert err(rq.encode(x, beam=2)) == pytest.approx(0.0, abs=1e-20)


@settings(max_examples=20)
@given(st.integers(0, 10_000), st.integers(2, 5))
def test_encode_with_beam_never_worse_than_greedy(seed, beam):
    r = np.random.default_rng(seed)
    X = r.standard_normal((40, 2))
    cb = r.standard_normal((3, 3, 2))
    rq = vq.ResidualQuantizer(M=3, K=3)
    rq.codebooks_, rq._work, rq.n_features_in_ = cb, cb, 2
    err = lambda c: ((X - rq.decode(c)) ** 2).sum(1)  # noqa: E731
    assert np.all(err(rq.encode(X, beam=beam)) <= err(rq.encode(X)) + 1e-12)


# ---------------------------------------------------------------- Huffman, size accounting


def test_huffman_hand_example():
    assert vq.huffman_code_lengths([5, 2, 1, 1]).tolist() == [1, 2, 3, 3]
    # the textbook source 0.4, 0.2, 0.2, 0.1, 0.1 has average length 2.2 (either optimal tree)
    p = np.array([0.4, 0.2, 0.2, 0.1, 0.1])
    assert float(p @ vq.huffman_code_lengths(p)) == pytest.approx(2.2)
    # dyadic probabilities: lengths are exactly -log2 p
    assert vq.huffman_code_lengths([8, 4, 2, 1, 1]).tolist() == [1, 2, 3, 4, 4]
    assert vq.huffman_code_lengths([0, 7, 0]).tolist() == [0, 0, 0]  # one symbol: no bits
    assert vq.huffman_code_lengths([0, 3, 3]).tolist() == [0, 1, 1]


@given(st.lists(st.integers(0, 1000), min_size=2, max_size=40).filter(lambda c: sum(x > 0 for x in c) >= 2))
def test_huffman_kraft_and_entropy_bounds(counts):
    c = np.array(counts, dtype=float)
    L = vq.huffman_code_lengths(counts)
    used = c > 0
    assert np.all(L[~used] == 0) and np.all(L[used] >= 1)
    assert np.sum(2.0 ** -L[used]) == pytest.approx(1.0, abs=1e-12)  # Kraft equality: a full tree
    p = c[used] / c.sum()
    H = float(-(p * np.log2(p)).sum())
    avg = float(p @ L[used])
    assert H - 1e-12 <= avg < H + 1


def test_deep_compression_size():
    s = vq.deep_compression_size(16, 4)  # Han et al. (2016), Sec. 3: 16*32 / (4*32 + 2*16) = 3.2
    assert s == (512, 32, 128, 160, 3.2, 10.0)
    n, b = 1000, 32
    for k in (2, 16, 32, 256):  # Eq. (1) for powers of two
        assert vq.deep_compression_size(n, k).ratio == pytest.approx(n * b / (n * np.log2(k) + k * b))
    assert vq.deep_compression_size(n, 5).index_bits == 3 * n  # ceil(log2 5)
    assert vq.deep_compression_size(n, 1).index_bits == 0
    # Huffman on uniform counts over 2^b symbols costs exactly b bits: the same as fixed length
    assert vq.deep_compression_size(1024, 8, code_counts=[128] * 8) == vq.deep_compression_size(1024, 8)
    counts = np.array([700, 200, 50, 50])
    s = vq.deep_compression_size(1000, 4, code_counts=counts)
    assert s.index_bits == 700 * 1 + 200 * 2 + 50 * 3 + 50 * 3 and s.total_bits == s.index_bits + 128


# ---------------------------------------------------------------- soft-to-hard annealing


def test_anneal_cold_step_is_a_lloyd_step(rng):
    x = rng.standard_normal(500)
    w = rng.random(500)
    c0 = np.array([-1.0, 0.2, 1.5])
    r = vq.anneal_soft_to_hard(x, c0, temperatures=[1e-9], n_iter=1, sample_weight=w)
    lab = vq._nearest_unsorted(x, c0)
    expect = [(w[lab == j] * x[lab == j]).sum() / w[lab == j].sum() for j in range(3)]
    np.testing.assert_allclose(r.codebook, expect, rtol=1e-12)
    assert r.soft_mse[0] == pytest.approx(r.hard_mse[0], rel=1e-9)


def test_anneal_critical_temperature_and_gap(rng):
    x = rng.standard_normal(4000)
    var = x.var()
    c0 = np.array([-0.3, -0.1, 0.2, 0.4])
    hot = vq.anneal_soft_to_hard(x, c0, temperatures=[3 * var], n_iter=200)
    assert np.ptp(hot.codebook) < 1e-3 and abs(hot.codebook.mean() - x.mean()) < 1e-3  # collapsed
    cool = vq.anneal_soft_to_hard(x, c0, temperatures=[0.5 * var], n_iter=200)
    assert np.ptp(cool.codebook) > 0.5  # below T_c = 2 Var(x) they separate
    r = vq.anneal_soft_to_hard(x, c0, temperatures=np.geomspace(var, 1e-4 * var, 10))
    gap = r.soft_mse - r.hard_mse
    assert abs(gap[-1]) < 1e-3 * abs(gap[0]) and r.hard_mse[-1] < r.hard_mse[0]
    # at the end the codebook is (close to) a fixed point of Lloyd's iteration: k-means
    lab = vq._nearest_unsorted(x, r.codebook)
    np.testing.assert_allclose(r.codebook, [x[lab == j].mean() for j in range(4)], atol=1e-3)
    # and its hard quantization is what codebook.hard_quantize gives
    _, xq = codebook.hard_quantize(x, r.codebook)
    assert np.mean((x - xq) ** 2) == pytest.approx(r.hard_mse[-1], rel=1e-12)


# ---------------------------------------------------------------- LloydMaxQuantizer


def test_lloyd_max_quantizer(rng):
    X = np.column_stack([rng.standard_normal(2000), rng.laplace(size=2000)])
    opt = vq.LloydMaxQuantizer(4).fit(X)
    for f in range(2):
        np.testing.assert_allclose(opt.levels_[f], vq.kmeans_1d_optimal(X[:, f], 4)[0], rtol=1e-12)
    lloyd = vq.LloydMaxQuantizer(4, method="lloyd", tol=0, max_iter=1000).fit(X)
    for f in range(2):
        ref = lloyd_max_data(X[:, f], n_levels=4, tol=1e-14, max_iter=1000)
        np.testing.assert_allclose(lloyd.levels_[f], ref.levels, rtol=1e-9, atol=1e-12)
        assert lloyd.mse_[f] == pytest.approx(ref.mse, rel=1e-9)
        assert opt.mse_[f] <= lloyd.mse_[f] * (1 + 1e-12)
    codes = opt.encode(X)
    assert codes.dtype == np.uint8 and codes.shape == X.shape
    np.testing.assert_allclose(np.mean((X - opt.decode(codes)) ** 2, axis=0), opt.mse_, rtol=1e-12)
    # too few distinct values: kept, padded, never chosen twice
    Y = np.array([[0.0], [1.0], [0.0]])
    q = vq.LloydMaxQuantizer(3).fit(Y)
    assert q.levels_.tolist() == [[0.0, 1.0, 1.0]] and q.encode(np.array([[5.0]])).tolist() == [[1]]


def test_lloyd_max_quantizer_weights(rng):
    x = rng.standard_normal((50, 1))
    w = rng.integers(1, 4, 50)
    for method in ("optimal", "lloyd"):
        a = vq.LloydMaxQuantizer(3, method=method).fit(x, sample_weight=w)
        b = vq.LloydMaxQuantizer(3, method=method).fit(np.repeat(x, w, axis=0))
        np.testing.assert_allclose(a.levels_, b.levels_, rtol=1e-10)


# ---------------------------------------------------------------- API, errors, inputs untouched


def test_not_fitted_error_is_all_three():
    err = vq.NotFittedError
    assert issubclass(err, RuntimeError) and issubclass(err, ValueError) and issubclass(err, AttributeError)
    for est in (vq.KMeans(), vq.ProductQuantizer(), vq.ResidualQuantizer(), vq.LloydMaxQuantizer()):
        with pytest.raises(err, match="not fitted yet"):
            est.encode(np.zeros((2, 8)))
        with pytest.raises(err):
            est.decode(np.zeros((2, 1), dtype=np.uint8))


def test_estimators_bad_input(rng):
    X = rng.standard_normal((30, 4))
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse input is not supported"):
        vq.KMeans(2).fit(scipy_sparse.csr_matrix(X))
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        vq.KMeans(2).fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="Reshape your data"):
        vq.KMeans(2).fit(np.zeros(5))
    km = vq.KMeans(2, rng=0).fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 4 features"):
        km.encode(X[:, :3])
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(n_samples,\)"):
        vq.KMeans(2).fit(X, sample_weight=np.ones(29))
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        vq.KMeans(2).fit(X, sample_weight=-np.ones(30))
    with pytest.raises(ValueError, match="at least one positive"):
        vq.KMeans(2).fit(X, sample_weight=np.zeros(30))
    with pytest.raises(ValueError, match="number of samples with positive weight"):
        vq.KMeans(3).fit(X, sample_weight=np.r_[1.0, 1.0, np.zeros(28)])
    with pytest.raises(TypeError, match="sample_weight must hold real numbers"):
        vq.KMeans(2).fit(X, sample_weight=np.array(["a"] * 30))
    rq = vq.ResidualQuantizer(M=2, K=3, rng=0).fit(X)
    with pytest.raises(ValueError, match="beam must be an integer >= 1"):
        rq.encode(X, beam=0)
    with pytest.raises(ValueError, match=r"codes must have shape \(N, M=2\)"):
        rq.decode(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="codes must be in"):
        rq.decode(np.full((2, 2), 3, dtype=np.uint8))
    with pytest.raises(ValueError, match="hessian must be >= 0"):
        vq.hessian_weighted_kmeans(X.ravel(), 2, hessian=-np.ones(120))
    with pytest.raises(ValueError, match="hessian must have the shape of w"):
        vq.hessian_weighted_kmeans(X, 2, hessian=np.ones(4))
    with pytest.raises(ValueError, match="method must be one of"):
        vq.hessian_weighted_kmeans(X, 2, hessian=np.ones_like(X), method="exact")
    with pytest.raises(ValueError, match="counts must be finite, >= 0"):
        vq.huffman_code_lengths([1, -1])
    with pytest.raises(ValueError, match="non-empty 1-d"):
        vq.huffman_code_lengths([])
    with pytest.raises(ValueError, match="sum to n_weights=10"):
        vq.deep_compression_size(10, 2, code_counts=[3, 3])
    with pytest.raises(ValueError, match="n_weights must be an integer >= 1"):
        vq.deep_compression_size(0, 2)
    with pytest.raises(ValueError, match="temperatures must be a 1-d array of positive"):
        vq.anneal_soft_to_hard(X, [0.0, 1.0], temperatures=[1.0, 0.0])
    with pytest.raises(TypeError, match="model must have .weights and .biases"):
        vq.mlp_hessian_diagonal(object(), X)
    model, Xm, y = _tiny_mlp()
    with pytest.raises(ValueError, match="y must hold class labels"):
        vq.mlp_adam_second_moment(model, Xm, y + 5)
    with pytest.raises(ValueError, match="beta2 must be in"):
        vq.mlp_adam_second_moment(model, Xm, y, beta2=1.0)


def test_inputs_never_modified(rng):
    X = rng.standard_normal((80, 4)).astype(np.float32)
    w = rng.random(80)
    h = rng.random(320).astype(np.float32)
    saved = X.copy(), w.copy(), h.copy()
    vq.KMeans(3, rng=0).fit(X, sample_weight=w)
    vq.ProductQuantizer(M=2, Ks=4, rng=0).fit(X).encode(X)
    vq.ResidualQuantizer(M=2, K=4, beam=3, rng=0).fit(X).encode(X)
    vq.LloydMaxQuantizer(3).fit(X, sample_weight=w)
    vq.hessian_weighted_kmeans(X.ravel(), 4, hessian=h)
    vq.hessian_weighted_kmeans(X.ravel(), 4, hessian=h, method="lloyd", rng=0)
    vq.anneal_soft_to_hard(X, [-1.0, 1.0], temperatures=[1.0, 0.1], sample_weight=np.ones_like(X))
    counts = np.array([3, 1, 1])
    vq.huffman_code_lengths(counts)
    assert np.array_equal(X, saved[0]) and np.array_equal(w, saved[1]) and np.array_equal(h, saved[2])
    assert counts.tolist() == [3, 1, 1]
    model, Xm, y = _tiny_mlp()
    W0 = [W.copy() for W in model.weights]
    vq.mlp_hessian_diagonal(model, Xm)
    vq.mlp_adam_second_moment(model, Xm, y, rng=0)
    assert all(np.array_equal(a, b) for a, b in zip(W0, model.weights))


def test_vq_without_numba_gives_the_same_clustering(tmp_path, rng):
    """With numba absent, the numpy twins (BLAS distances) fit the same codebook."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None
        import numpy as np
        from qref import vq
        X = np.random.default_rng(5).standard_normal((3000, 4))
        km = vq.KMeans(32, rng=0, tol=0, max_iter=50).fit(X)
        np.savez(sys.argv[1], c=km.cluster_centers_, lab=km.labels_)
    """)
    out = tmp_path / "vq.npz"
    proc = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = np.load(out)
    X = np.random.default_rng(5).standard_normal((3000, 4))
    km = vq.KMeans(32, rng=0, tol=0, max_iter=50).fit(X)  # 3000 * 32 * 4 >= _SMALL: the numba kernel here
    assert np.array_equal(km.labels_, ref["lab"])
    np.testing.assert_allclose(km.cluster_centers_, ref["c"], rtol=1e-12, atol=1e-14)
