"""Tests of qref.data: distributions against SciPy's, the split against scikit-learn's raw
data, and the reference model against a forward pass written out here in numpy."""

import numpy as np
import pytest

from qref import data as D

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is the reference for the distributions")
sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="the digits data set ships with scikit-learn")

N = 400_000

# (distribution, scipy reference with unit variance, excess-free kurtosis E[x^4]/E[x^2]^2)
REFERENCES = {
    "gaussian": (scipy_stats.norm(), 3.0),
    "laplace": (scipy_stats.laplace(scale=1 / np.sqrt(2)), 6.0),  # variance 2 b^2
    "uniform": (scipy_stats.uniform(-np.sqrt(3), 2 * np.sqrt(3)), 1.8),  # variance a^2 / 3
    "student_t": (scipy_stats.t(10, scale=np.sqrt(8 / 10)), 4.0),  # dof 10: 3 + 6 / (dof - 4)
}


# ---- synthetic weights -----------------------------------------------------------------

@pytest.mark.parametrize("distribution", D.DISTRIBUTIONS)
def test_synthetic_weights_moments_and_shape_of_distribution(distribution):
    std = 0.05
    w = D.synthetic_weights(N, distribution=distribution, std=std, dof=10.0, rng=3)
    assert w.shape == (N,) and w.dtype == np.float32
    ref, kurt = REFERENCES[distribution]
    x = w.astype(np.float64)
    assert abs(x.mean()) < 5 * std / np.sqrt(N)
    assert x.std() == pytest.approx(std, rel=0.01)
    # sample kurtosis: standard error about 0.01 (gaussian) to 0.08 (laplace) at this N
    assert scipy_stats.kurtosis(x, fisher=False) == pytest.approx(kurt, abs=0.4)
    # the whole distribution: Kolmogorov-Smirnov distance to the scaled reference, on the first
    # n = 100_000 draws. The critical value at significance 1e-6 is sqrt(ln(2e6) / (2n)) = 0.0085
    z = x[:100_000] / std
    assert scipy_stats.kstest(z, ref.cdf).statistic < 0.0085
    # and it is *not* the others: their CDFs differ from it by 0.048 to 0.113 (gaussian and
    # Student t with 10 d.o.f. by only 0.016, too close to tell apart with certainty here)
    for other, (ref2, _) in REFERENCES.items():
        if other != distribution and {other, distribution} != {"gaussian", "student_t"}:
            assert scipy_stats.kstest(z, ref2.cdf).statistic > 0.03


def test_kurtosis_orders_the_tails():
    k = {d: scipy_stats.kurtosis(D.synthetic_weights(N, distribution=d, rng=5, dof=5.0), fisher=False)
         for d in D.DISTRIBUTIONS}
    assert k["uniform"] < k["gaussian"] < k["laplace"]
    assert k["student_t"] > k["gaussian"] + 1  # dof 5: population kurtosis 9


def test_uniform_weights_are_bounded():
    w = D.synthetic_weights(10_000, distribution="uniform", std=2.0, rng=0, dtype=np.float64)
    assert np.abs(w).max() <= 2.0 * np.sqrt(3)
    assert np.abs(w).max() > 0.99 * 2.0 * np.sqrt(3)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_synthetic_weights_shape_dtype_and_seeds(dtype):
    a = D.synthetic_weights((3, 4, 5), rng=7, dtype=dtype)
    assert a.shape == (3, 4, 5) and a.dtype == dtype
    np.testing.assert_array_equal(a, D.synthetic_weights((3, 4, 5), rng=7, dtype=dtype))
    np.testing.assert_array_equal(a, D.synthetic_weights((3, 4, 5), rng=np.random.default_rng(7), dtype=dtype))
    assert not np.array_equal(a, D.synthetic_weights((3, 4, 5), rng=8, dtype=dtype))
    gen = np.random.default_rng(7)
    assert not np.array_equal(D.synthetic_weights(10, rng=gen), D.synthetic_weights(10, rng=gen))
    assert D.synthetic_weights(6, rng=0).shape == (6,)
    assert D.synthetic_weights((), rng=0).shape == ()
    assert D.synthetic_weights((0, 3), rng=0).shape == (0, 3)


# ---- digits ----------------------------------------------------------------------------

def test_load_digits_shapes_ranges_and_content():
    d = D.load_digits()
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64)
    assert d.y_train.shape == (1347,) and d.y_test.shape == (450,)
    assert d.X_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.X_train.min() == 0.0 and d.X_train.max() == 1.0
    assert set(np.unique(d.y_test)) == set(range(10))
    # the split is a partition of scikit-learn's raw data, pixels divided by 16
    X, y = sklearn_datasets.load_digits(return_X_y=True)
    ours = np.concatenate([d.X_train, d.X_test]) * 16
    key = lambda A: np.lexsort(A.T[::-1])  # noqa: E731 - sort rows lexicographically
    np.testing.assert_array_equal(ours[key(ours)], X[key(X)].astype(np.float32))
    np.testing.assert_array_equal(np.sort(np.concatenate([d.y_train, d.y_test])), np.sort(y))
    # stratified: each class's share of the test set is its share of the data, to one sample
    for c in range(10):
        assert abs((d.y_test == c).sum() - 450 * (y == c).mean()) <= 1


def test_load_digits_split_is_reproducible_and_seeded():
    a, b = D.load_digits(rng=0), D.load_digits(rng=0)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(D.load_digits(rng=1).y_test, a.y_test)
    g1 = D.load_digits(rng=np.random.default_rng(3))
    g2 = D.load_digits(rng=np.random.default_rng(3))
    np.testing.assert_array_equal(g1.X_train, g2.X_train)
    half = D.load_digits(test_size=0.5)
    assert half.X_test.shape[0] in (898, 899) and half.X_train.shape[0] + half.X_test.shape[0] == 1797
    assert D.load_digits(dtype=np.float64).X_train.dtype == np.float64


def test_load_digits_returns_fresh_arrays():
    d = D.load_digits()
    d.X_train[:] = -1
    d.y_test[:] = -1
    e = D.load_digits()
    assert e.X_train.min() == 0.0 and e.y_test.min() == 0


# ---- reference model -------------------------------------------------------------------

def forward_by_hand(weights, biases, X):
    """The MLP written out: ReLU between layers, none after the last."""
    a = X.astype(np.float64)
    for i, (W, b) in enumerate(zip(weights, biases)):
        a = np.einsum("oi,ni->no", W.astype(np.float64), a) + b.astype(np.float64)
        if i < len(weights) - 1:
            a = np.where(a > 0, a, 0.0)
    return a


def test_reference_mlp_shapes_and_accuracy():
    model, d = D.reference_mlp(), D.load_digits()
    assert [W.shape for W in model.weights] == [(64, 64), (10, 64)]
    assert [b.shape for b in model.biases] == [(64,), (10,)]
    assert all(W.dtype == np.float32 for W in model.weights + model.biases)
    assert model.num_params == 64 * 64 + 64 + 10 * 64 + 10
    acc = model.accuracy(d.X_test, d.y_test)
    assert acc > 0.96
    assert acc == np.mean(np.argmax(forward_by_hand(model.weights, model.biases, d.X_test), axis=1) == d.y_test)


def test_reference_mlp_forward_matches_hand_forward():
    model, d = D.reference_mlp(), D.load_digits()
    logits = model.forward(d.X_test)
    assert logits.shape == (450, 10)
    np.testing.assert_allclose(logits, forward_by_hand(model.weights, model.biases, d.X_test), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(model.predict(d.X_test), np.argmax(logits, axis=1))


def test_reference_mlp_is_deterministic_across_retraining():
    first = D.reference_mlp()
    D._train_mlp.cache_clear()  # train again from scratch, not from the cache
    second = D.reference_mlp()
    for a, b in zip(first.weights + first.biases, second.weights + second.biases):
        np.testing.assert_array_equal(a, b)


def test_reference_mlp_other_architecture_and_seed():
    m = D.reference_mlp(hidden=(32, 16), seed=1)
    assert [W.shape for W in m.weights] == [(32, 64), (16, 32), (10, 16)]
    assert m.num_params == 32 * 64 + 32 + 16 * 32 + 16 + 10 * 16 + 10
    d = D.load_digits()
    np.testing.assert_allclose(m.forward(d.X_test[:20]), forward_by_hand(m.weights, m.biases, d.X_test[:20]),
                               rtol=1e-4, atol=1e-4)
    assert not np.array_equal(D.reference_mlp(seed=1).weights[0], D.reference_mlp(seed=0).weights[0])


def test_reference_mlp_returns_copies():
    m = D.reference_mlp()
    w0 = m.weights[0].copy()
    m.weights[0][:] = 0
    m.biases[1][:] = 99
    fresh = D.reference_mlp()
    np.testing.assert_array_equal(fresh.weights[0], w0)
    assert not np.any(fresh.biases[1] == 99)


def test_hooks_are_called_per_layer_and_change_the_result():
    model, d = D.reference_mlp(), D.load_digits()
    X = d.X_test[:30]
    seen = []

    def wq(W, layer):
        seen.append(("w", layer, W.shape))
        return W

    def aq(a, layer):
        seen.append(("a", layer, a.shape))
        return a

    logits, acts = model.forward(X, weight_quantizer=wq, activation_quantizer=aq, return_activations=True)
    assert seen == [("a", 0, (30, 64)), ("w", 0, (64, 64)), ("a", 1, (30, 64)), ("w", 1, (10, 64))]
    np.testing.assert_array_equal(logits, model.forward(X))  # identity hooks change nothing
    np.testing.assert_array_equal(acts[0], X)
    np.testing.assert_allclose(acts[1], np.maximum(X @ model.weights[0].T + model.biases[0], 0), rtol=1e-6)
    # zero weights: the logits are the last bias, whatever the input
    zero = model.forward(X, weight_quantizer=lambda W, layer: np.zeros_like(W))
    np.testing.assert_array_equal(zero, np.broadcast_to(model.biases[1], (30, 10)))
    # an activation hook that rounds the pixels to {0, 1} changes the logits
    binar = model.forward(X, activation_quantizer=lambda a, layer: np.round(a) if layer == 0 else a)
    np.testing.assert_allclose(binar, forward_by_hand(model.weights, model.biases, np.round(X)), rtol=1e-4, atol=1e-4)
    assert model.accuracy(X, d.y_test[:30], weight_quantizer=wq) == model.accuracy(X, d.y_test[:30])
