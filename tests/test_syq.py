"""SYQ (qref.bnn.SYQ): symmetric binary/ternary weights with a learned scale per group.

Forward against an explicit loop over the groups, the scale gradient against finite
differences (alone and inside a Conv2d), the latent-weight gradient against hand cases,
the initialization of the authors' code, training on digits, and bad input."""

import itertools

import numpy as np
import pytest

from qref import bnn, nn


def _ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _groups(shape, grouping):
    """Index masks of the groups of a conv weight (out, in, kh, kw), written as loops (independent)."""
    out, cin, kh, kw = shape
    if grouping == "layer":
        yield (), np.ones(shape, bool)
        return
    for r in range(kh):
        cols = range(kw) if grouping == "pixel" else [None]
        for c in cols:
            m = np.zeros(shape, bool)
            if c is None:
                m[:, :, r, :] = True
                yield (r, 0), m
            else:
                m[:, :, r, c] = True
                yield (r, c), m


@pytest.mark.parametrize("grouping,ternary", list(itertools.product(bnn.SYQ_GROUPINGS, (False, True))))
def test_forward_against_loop_over_groups(rng, grouping, ternary):
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    q = bnn.SYQ(grouping=grouping, kernel_size=3, ternary=ternary)
    out = q(_ro(w))
    assert out.dtype == np.float32 and out.shape == w.shape
    eta = 0.05 * np.abs(w).max() if ternary else 0.0
    assert q.eta_ == pytest.approx(eta)
    expected = np.zeros_like(w)
    for idx, m in _groups(w.shape, grouping):
        alpha0 = np.abs(w[m].astype(np.float64)).mean()                 # the authors' init: mean |w| of the group
        assert float(q.alpha.data[idx]) == pytest.approx(alpha0, rel=1e-6)
        keep = (np.abs(w) > eta) if ternary else np.ones(w.shape, bool)
        expected[m] = (np.where(w >= 0, 1.0, -1.0) * keep * float(q.alpha.data[idx]))[m]
    np.testing.assert_array_equal(out, expected)
    vals = np.unique(np.abs(out))
    assert (0.0 in vals) == ternary                                     # zeros only with the mask


def test_alpha_gradient_matches_finite_differences(rng):
    w = rng.normal(size=(3, 2, 3, 3))
    g = rng.normal(size=w.shape)
    for grouping in bnn.SYQ_GROUPINGS:
        for ternary in (False, True):
            q = bnn.SYQ(grouping=grouping, kernel_size=3, ternary=ternary).astype(np.float64)
            q(w)                                                        # initialize the scales
            q.alpha.data = np.asarray(q.alpha.data + rng.uniform(0.1, 0.5, size=q.alpha.data.shape))
            q.zero_grad()
            q(w)
            q.backward(g)
            num = nn.numerical_gradient(lambda a: float((g * q(w)).sum()), q.alpha.data, eps=1e-6)
            np.testing.assert_allclose(q.alpha.grad, num, rtol=1e-7, atol=1e-9)


def test_alpha_gradient_inside_conv2d(rng):
    q = bnn.SYQ(grouping="pixel", kernel_size=3, ternary=True)
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0, weight_quantizer=q).astype(np.float64)
    x = rng.normal(size=(2, 2, 5, 5))
    g = rng.normal(size=(2, 3, 5, 5))
    conv(x)
    conv.zero_grad()
    conv(x)
    conv.backward(g)
    num = nn.numerical_gradient(lambda a: float((g * conv(x)).sum()), q.alpha.data, eps=1e-6)
    np.testing.assert_allclose(q.alpha.grad, num, rtol=1e-6, atol=1e-9)
    assert q.alpha.grad.shape == (3, 3) and np.abs(q.alpha.grad).min() > 0


def test_hand_case_binary_and_ternary_backward():
    w = np.array([[[[0.5, -0.02], [-1.0, 0.3]]]])
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    qt = bnn.SYQ(grouping="pixel", kernel_size=2, ternary=True, eta=0.1, alpha=3.0)
    np.testing.assert_array_equal(qt(w), [[[[3.0, 0.0], [-3.0, 3.0]]]])
    np.testing.assert_array_equal(qt.backward(g), [[[[3.0, 2.0], [9.0, 12.0]]]])   # alpha * g where M = 1
    np.testing.assert_array_equal(qt.alpha.grad, [[1.0, 0.0], [-3.0, 4.0]])         # sign(w) M g, per pixel
    qb = bnn.SYQ(grouping="layer", alpha=0.5)                                         # binary: eta = 0
    np.testing.assert_array_equal(qb(w), [[[[0.5, -0.5], [-0.5, 0.5]]]])
    np.testing.assert_array_equal(qb.backward(g), 0.5 * g)
    assert float(qb.alpha.grad) == 1.0 - 2.0 - 3.0 + 4.0
    assert qb(np.array([0.0, -0.0, 1.0])).tolist() == [0.5, 0.5, 0.5]                 # sign(0) = +1


def test_gradients_accumulate_and_layer_grouping_any_shape(rng):
    w = rng.normal(size=(5, 7))                                          # a Linear weight
    q = bnn.SYQ(grouping="layer", ternary=True).astype(np.float64)
    q(w)
    q.backward(np.ones_like(w))
    first = float(q.alpha.grad)
    q.backward(np.ones_like(w))
    assert float(q.alpha.grad) == pytest.approx(2 * first)
    assert first == pytest.approx(float(np.sum(np.sign(w) * (np.abs(w) > 0.05 * np.abs(w).max()))))


def test_alpha_init_only_once_and_explicit_alpha_kept(rng):
    w = rng.normal(size=(2, 2, 3, 3))
    q = bnn.SYQ(grouping="row", kernel_size=3)
    q(w)
    a = q.alpha.data.copy()
    q(2 * w)
    np.testing.assert_array_equal(q.alpha.data, a)                       # not re-initialized
    q2 = bnn.SYQ(grouping="row", kernel_size=3, alpha=0.25)
    q2(w)
    assert np.all(q2.alpha.data == 0.25) and q2.alpha.data.shape == (3, 1)
    assert q.alpha.decay is False and q.parameters() == [q.alpha]


def test_paper_defaults():
    # the authors' code: eta = 0.05 for ternary networks, 0 for binary ones; mean-|w| init
    q = bnn.SYQ(ternary=True, kernel_size=3)
    assert q.eta == 0.05 and q.grouping == "pixel" and q.alpha.data.shape == (3, 3)
    assert bnn.syq_alpha_shape("row", (3, 5)) == (3, 1)


def test_training_small_cnn_moves_scales(digits):
    X = digits.X_train.reshape(-1, 1, 8, 8)[:600]
    y = digits.y_train[:600]
    qs = []

    def wq(i):
        if i < 2:
            qs.append(bnn.SYQ(grouping="pixel", kernel_size=3, ternary=True))
            return qs[-1]
        return None

    net = nn.small_cnn(channels=(8, 16), rng=0, weight_quantizer=wq)
    before = None
    opt = nn.Adam(net.parameters(), lr=0.02)
    net(X[:2])
    before = [q.alpha.data.copy() for q in qs]
    nn.fit(net, X, y, epochs=3, optimizer=opt, rng=0, progress=False)
    acc = nn.accuracy(net, digits.X_test.reshape(-1, 1, 8, 8), digits.y_test)
    assert acc > 0.85
    assert all(not np.allclose(b, q.alpha.data) for b, q in zip(before, qs))
    for layer, q in zip((net[0], net[4]), qs):                           # weights are {-a_g, 0, a_g} per pixel
        out = q(layer.weight.data)
        for r, c in itertools.product(range(3), range(3)):
            vals = np.unique(np.abs(out[:, :, r, c]))
            assert set(vals) <= {0.0, np.float32(q.alpha.data[r, c])}


@pytest.mark.parametrize("kwargs,err", [
    (dict(grouping="channel"), ValueError),
    (dict(grouping="pixel"), ValueError),                    # kernel_size missing
    (dict(grouping="row", kernel_size=(3, 3, 3)), ValueError),
    (dict(grouping="row", kernel_size=0), ValueError),
    (dict(eta=1.0), ValueError),
    (dict(eta=-0.1), ValueError),
    (dict(alpha=0.0), ValueError),
    (dict(alpha=-1.0), ValueError),
    (dict(ternary="yes"), TypeError),
])
def test_bad_arguments(kwargs, err):
    kw = dict(grouping="layer") | kwargs
    with pytest.raises(err):
        bnn.SYQ(**kw)


def test_bad_input():
    q = bnn.SYQ(grouping="pixel", kernel_size=3)
    with pytest.raises(RuntimeError, match="before forward"):
        q.backward(np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="kernel"):
        q(np.ones((2, 2, 3, 2)))
    with pytest.raises(ValueError, match="kernel"):
        q(np.ones((2, 9)))
    with pytest.raises(ValueError, match="w"):
        q(np.full((1, 1, 3, 3), np.nan))
    with pytest.raises(TypeError):
        q(np.ones((1, 1, 3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="row"):
        bnn.SYQ(grouping="row", kernel_size=3)(np.ones((1, 1, 2, 3)))
    q(np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="shape"):
        q.backward(np.ones((1, 1, 3, 2)))
