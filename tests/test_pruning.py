"""Magnitude pruning, CLIP-Q (Tung & Mori 2018), prune-then-quantize, and the storage accounting."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import metrics, nn
from qref import pruning as P

weights = hnp.arrays(np.float64, st.integers(2, 80), elements=st.floats(-3, 3).filter(lambda v: v != 0),
                     unique=True)


# ---- magnitude pruning ------------------------------------------------------------------------


@given(weights, st.floats(0, 1))
def test_magnitude_prune_mask(w, s):
    w0 = w.copy()
    keep = P.magnitude_prune_mask(w, sparsity=s)
    np.testing.assert_array_equal(w, w0)
    assert (~keep).sum() == math.floor(s * w.size + 0.5)
    if keep.any() and (~keep).any():
        assert np.abs(w[keep]).min() >= np.abs(w[~keep]).max()
    pruned, keep2 = P.magnitude_prune(w, sparsity=s)
    np.testing.assert_array_equal(keep, keep2)
    np.testing.assert_array_equal(pruned, np.where(keep, w, 0.0))


# ---- CLIP-Q: one layer -------------------------------------------------------------------------


@given(weights, st.floats(0, 0.99))
def test_clip_q_keep_fraction_per_sign(w, p):
    keep = P.clip_q_keep(w, p=p)
    for side in (w > 0, w < 0):
        n = side.sum()
        assert (side & ~keep).sum() == math.floor(p * n + 0.5)
        kept, clipped = np.abs(w[side & keep]), np.abs(w[side & ~keep])
        if kept.size and clipped.size:
            assert kept.min() > clipped.max()


@given(weights, st.floats(0, 0.9), st.integers(2, 5))
def test_clip_q_quantize_levels_are_interval_means(w, p, bits):
    w0 = w.copy()
    r = P.clip_q_quantize(w, p=p, bits=bits)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(r.keep, P.clip_q_keep(w, p=p))
    np.testing.assert_array_equal(r.w_q, r.codebook[r.codes])
    assert r.codebook[0] == 0 and r.codebook.shape == (2**bits,)
    assert (r.w_q[~r.keep] == 0).all() and (r.codes[~r.keep] == 0).all() and (r.codes[r.keep] > 0).all()
    assert np.unique(r.w_q[r.keep]).size <= 2**bits - 1
    # signs never mix, and each level is the mean of its interval's full-precision weights
    np.testing.assert_array_equal(np.sign(r.w_q[r.keep]), np.sign(w[r.keep]))
    for c in np.unique(r.codes[r.keep]):
        members = w[r.codes == c]
        assert abs(r.codebook[c] - members.mean()) <= 1e-12 * max(1.0, np.abs(members).max())
        assert (np.sign(members) == np.sign(members[0])).all()
    # thresholds bound the clipped weights
    assert r.c_minus <= 0 <= r.c_plus
    clipped = w[~r.keep]
    assert ((clipped >= r.c_minus) & (clipped <= r.c_plus)).all()


@given(weights, st.integers(2, 5))
def test_clip_q_partition_is_linear(w, bits):
    # independent: the intervals shared by length, then equal-width edges from linspace
    r = P.clip_q_quantize(w, p=0.0, bits=bits)
    K = 2**bits - 1
    sides = [w < 0, w > 0]
    lengths = [np.ptp(w[m]) if m.any() else 0.0 for m in sides]
    if all(m.any() for m in sides):
        total = sum(lengths)
        k_neg = min(max(math.floor(K * lengths[0] / total + 0.5) if total else K // 2, 1), K - 1)
    else:
        k_neg = K if sides[0].any() else 0
    for m, k, first in ((sides[0], k_neg, 1), (sides[1], K - k_neg, 1 + k_neg)):
        if not m.any():
            continue
        v = w[m]
        edges = np.linspace(v.min(), v.max(), k + 1)
        expect = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, k - 1) + first
        on_edge = np.isclose(v[:, None], edges[None, 1:-1], rtol=0, atol=1e-9 * (np.ptp(v) + 1e-300)).any(axis=1)
        assert ((r.codes[m] == expect) | on_edge).all()
        assert (r.codes[m] >= first).all() and (r.codes[m] < first + k).all()


def test_intervals_shared_by_length():
    w = np.array([-1.0, -0.5, -0.2, 0.2, 0.3])   # negative range 0.8, positive 0.1, K = 7 -> 6 and 1
    r = P.clip_q_quantize(w, p=0.0, bits=3)
    assert r.codes[w > 0].tolist() == [7, 7] and r.codebook[7] == pytest.approx(0.25)
    one_side = P.clip_q_quantize(np.array([0.1, 0.2, 0.9]), p=0.0, bits=2)
    np.testing.assert_allclose(one_side.w_q, [0.15, 0.15, 0.9])


def test_clip_q_quantizer_module_is_straight_through(rng):
    w = rng.normal(size=(6, 5)).astype(np.float32)
    q = P.ClipQQuantizer(0.3, 3)
    np.testing.assert_array_equal(q(w), P.clip_q_quantize(w, p=0.3, bits=3).w_q)
    g = rng.normal(size=w.shape).astype(np.float32)
    np.testing.assert_array_equal(q.backward(g), g)   # clipped entries get the gradient too
    lin = nn.Linear(5, 6, rng=0, weight_quantizer=q)
    lin.weight.data[...] = w
    x = rng.normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(lin(x), x @ q.last_.w_q.T, rtol=1e-6)


# ---- CLIP-Q and the baseline on digits ----------------------------------------------------------


@pytest.fixture(scope="module")
def compressed(trained_mlp, digits):
    kw = dict(X_val=digits.X_test, y_val=digits.y_test, lr=0.01)
    before = [p.data.copy() for p in trained_mlp.parameters()]
    c = P.clip_q_train(trained_mlp, digits.X_train, digits.y_train, config=[(0.9, 3), (0.5, 4)], epochs=6, **kw)
    b = P.prune_then_quantize(trained_mlp, digits.X_train, digits.y_train, config=[(0.9, 3), (0.5, 4)],
                              prune_epochs=3, quantize_epochs=3, **kw)
    for p, w in zip(trained_mlp.parameters(), before):
        np.testing.assert_array_equal(p.data, w)
    return c, b


def test_clip_q_reaches_target_sparsity_and_levels(compressed):
    c, b = compressed
    for res in (c, b):
        for m, r, (p, bits) in zip(P._weight_layers(res.model), res.layers, [(0.9, 3), (0.5, 4)]):
            W = m.weight.data
            np.testing.assert_array_equal(W, r.w_q)
            assert abs(np.mean(W == 0) - p) <= 2 / W.size
            assert np.unique(W[W != 0]).size <= 2**bits - 1
            assert m.weight_quantizer is None
    assert c.accuracy > 0.9 and b.accuracy > 0.85           # measured 0.93 and 0.94
    assert len(c.history) == 1 and len(c.history[0].val_acc) == 6 and len(b.history) == 2


def test_clip_q_unprunes_baseline_does_not(trained_mlp, compressed):
    c, b = compressed
    W0 = trained_mlp.layers[0].weight.data
    first_clip = ~P.clip_q_keep(W0, p=0.9)
    came_back = (c.layers[0].w_q != 0) & first_clip
    assert came_back.sum() > 10                               # CLIP-Q: clipped weights can return
    pruned = ~P.magnitude_prune_mask(W0, sparsity=0.9)
    np.testing.assert_array_equal(b.layers[0].w_q == 0, pruned)   # baseline: pruned stays pruned


def test_clip_q_wins_at_high_sparsity(trained_mlp, digits):
    kw = dict(X_val=digits.X_test, y_val=digits.y_test, lr=0.01)
    c = P.clip_q_train(trained_mlp, digits.X_train, digits.y_train, config=(0.95, 3), epochs=10, **kw)
    b = P.prune_then_quantize(trained_mlp, digits.X_train, digits.y_train, config=(0.95, 3),
                              prune_epochs=5, quantize_epochs=5, **kw)
    assert c.accuracy > b.accuracy + 0.03                    # measured 0.893 vs 0.796


# ---- storage --------------------------------------------------------------------------------------


def test_deep_compression_weight_sharing_example():
    # Han et al. (2016), Sec. 3: 16 weights, 4 shared values, 32-bit originals -> 16*32 / (4*32 + 2*16) = 3.2
    assert P.dense_storage_bits(16, n_levels=4) == 4 * 32 + 2 * 16
    assert metrics.compression_ratio(16 * 32, P.dense_storage_bits(16, n_levels=4)) == pytest.approx(3.2)
    assert P.dense_storage_bits(10, n_levels=5, codeword_bits=16) == 10 * 3 + 5 * 16


def _encode(w, k):
    """Brute-force relative-index encoder: walk the array, emit (diff, value) with fillers."""
    out, last = [], -1
    for i, v in enumerate(np.ravel(w)):
        if v == 0:
            continue
        while i - last > 2**k:
            last += 2**k
            out.append((2**k, 0.0))
        out.append((i - last, v))
        last = i
    return out


@given(hnp.arrays(np.float64, st.integers(1, 300), elements=st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.5, -0.25])),
       st.integers(1, 6), st.integers(1, 4))
def test_sparse_storage_against_brute_force(w, k, bits):
    if not w.any():
        w[-1] = 1.0
    entries = _encode(w, k)
    assert all(1 <= d <= 2**k for d, _ in entries)
    s = P.sparse_storage_bits(w, bits=bits, index_bits=k)
    assert s.entries == len(entries) and s.fillers == sum(v == 0 for _, v in entries)
    assert s.total == len(entries) * (bits + k) + (2**bits - 1) * 32 == s.codes + s.indices + s.codebook


def test_sparse_storage_hand_example():
    w = np.zeros(24)
    w[[1, 3, 20]] = 1.0
    assert P.sparse_storage_bits(w, bits=2, index_bits=3) == P.Storage(121, 10, 15, 96, 5, 2)


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, err, match", [
    (lambda: P.clip_q_quantize(np.ones(3), p=1.0, bits=3), ValueError, r"p must be a real number in \[0, 1\)"),
    (lambda: P.clip_q_quantize(np.ones(3), p=-0.1, bits=3), ValueError, "p must be"),
    (lambda: P.clip_q_quantize(np.ones(3), p=0.5, bits=1), ValueError, r"bits must be an integer in \[2, 8\]"),
    (lambda: P.clip_q_quantize(np.ones(3), p="0.5", bits=3), TypeError, "p must be a real number"),
    (lambda: P.clip_q_quantize(np.arange(3), p=0.5, bits=3), TypeError, "w must have a floating dtype"),
    (lambda: P.clip_q_quantize(np.array([1.0, np.inf]), p=0.5, bits=3), ValueError, "w must be finite"),
    (lambda: P.clip_q_quantize(np.array([]), p=0.5, bits=3), ValueError, "w must not be empty"),
    (lambda: P.magnitude_prune_mask(np.ones(3), sparsity=1.5), ValueError,
     r"sparsity must be a real number in \[0, 1\]"),
    (lambda: P.ClipQQuantizer(0.5, 9), ValueError, "bits must be"),
    (lambda: P.sparse_storage_bits(np.ones(3), bits=2, index_bits=0), ValueError, "index_bits must be"),
    (lambda: P.dense_storage_bits(0, n_levels=4), ValueError, "n must be a positive integer"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize("config, err, match", [
    ([(0.5, 3)], ValueError, r"one \(p, bits\) pair per weight layer \(2\), got 1"),
    ([(0.5, 3), (1.0, 3)], ValueError, r"config\[1\] p must be a real number in \[0, 1\)"),
    ([(0.5, 3), (0.5, 1)], ValueError, r"config\[1\] bits must be an integer in \[2, 8\]"),
    ([(0.5, 3), 0.5], TypeError, r"config\[1\] must be a pair"),
    ((0.5, 9), ValueError, "config bits must be"),
])
def test_bad_config(trained_mlp, digits, config, err, match):
    with pytest.raises(err, match=match):
        P.clip_q_train(trained_mlp, digits.X_train, digits.y_train, config=config, epochs=1)


def test_bad_training_arguments(trained_mlp, digits):
    X, y = digits.X_train, digits.y_train
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        P.clip_q_train(trained_mlp, X, y, config=(0.5, 3), epochs=0)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        P.prune_then_quantize(trained_mlp, X, y, config=(0.5, 3), lr=0.0)
    with pytest.raises(ValueError, match="quantize_epochs must be an integer >= 0"):
        P.prune_then_quantize(trained_mlp, X, y, config=(0.5, 3), quantize_epochs=-1)
    with pytest.raises(TypeError, match="model must be a qref.nn.Module"):
        P.clip_q_train(None, X, y, config=(0.5, 3))
    with pytest.raises(ValueError, match="already has a weight_quantizer"):
        P.clip_q_train(nn.mlp((8,), weight_quantizer=lambda i: P.ClipQQuantizer(0.5, 3)), X, y, config=(0.5, 3))


@given(hnp.arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])),
       st.integers(-1, 62))
def test_smallest_k_matches_stable_argsort(a, k):
    # heavy ties on purpose: the O(n) selection must pick exactly the stable-sort prefix
    expect = np.zeros(a.size, bool)
    expect[np.argsort(a, kind="stable")[:max(k, 0)]] = True
    np.testing.assert_array_equal(P._smallest_k(a, k), expect)
