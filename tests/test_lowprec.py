"""Low-precision training (qref.lowprec): WAGE's quantizers against hand-computed values and their
properties, Range BN against finite differences and the Gaussian range, gradient bifurcation,
training on digits, bad input."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qref import lowprec as LP
from qref import nn


def _ro(a):
    """A read-only copy: any in-place write by the code under test raises."""
    a = np.array(a)
    a.setflags(write=False)
    return a


def _on_grid(y, step):
    return np.array_equal(y / step, np.rint(y / step))


finite = st.floats(-4, 4, allow_nan=False, width=32)


# --------------------------------------------------------------------------------------
# sigma, Q, Shift
# --------------------------------------------------------------------------------------


def test_sigma_values():
    assert [LP.wage_sigma(k) for k in (2, 3, 8, 16)] == [0.5, 0.25, 1 / 128, 2.0**-15]


@pytest.mark.parametrize("bad", [1, 17, 0, -2])
def test_sigma_bad_bits(bad):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\]"):
        LP.wage_sigma(bad)


@pytest.mark.parametrize("bad", [2.0, True, "8", None])
def test_sigma_bits_type(bad):
    with pytest.raises(TypeError, match="bits"):
        LP.wage_sigma(bad)


def test_quantize_hand_values():
    x = _ro(np.array([-0.9, -0.3, -0.2, 0.24, 0.26, 0.8, 5.0]))
    np.testing.assert_array_equal(LP.wage_quantize(x, bits=2), [-0.5, -0.5, 0.0, 0.0, 0.5, 0.5, 0.5])
    # 3 bits: grid 1/4, range [-3/4, 3/4]; ties to even: 0.125 -> 0, 0.375 -> 0.5
    np.testing.assert_array_equal(LP.wage_quantize(np.array([0.125, 0.375, 0.7, -1.0]), bits=3),
                                  [0.0, 0.5, 0.75, -0.75])
    # 8 bits: 0.3 / 2^-7 = 38.4 -> 38
    assert LP.wage_quantize(np.array([0.3]), bits=8)[0] == 38 / 128
    assert np.signbit(LP.wage_quantize(np.array([-0.1]), bits=2)).sum() == 0      # no negative zero


@given(arrays(np.float32, st.integers(1, 40), elements=finite), st.integers(2, 12))
def test_quantize_properties(x, k):
    s = LP.wage_sigma(k)
    y = LP.wage_quantize(_ro(x), bits=k)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert _on_grid(y, s)                                                   # on the sigma(k) grid
    assert np.all(np.abs(y) <= 1 - s)                                       # 2^k - 1 levels at most
    inside = np.abs(x) <= 1 - s
    assert np.all(np.abs(y - x)[inside] <= s / 2 + 1e-7)                    # nearest level inside
    np.testing.assert_array_equal(y[~inside], np.sign(x[~inside]) * (1 - s))  # clipped outside
    assert len(np.unique(LP.wage_quantize(np.linspace(-1.1, 1.1, 2**(k + 2)), bits=k))) == 2**k - 1


def test_quantize_dtype_and_bad_input():
    assert LP.wage_quantize(np.zeros(3, np.float64), bits=4).dtype == np.float64
    assert LP.wage_quantize(np.zeros(3, np.float16), bits=4).dtype == np.float32
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        LP.wage_quantize(np.arange(3), bits=4)
    with pytest.raises(ValueError, match="x must be finite"):
        LP.wage_quantize(np.array([0.0, np.nan]), bits=4)
    assert LP.wage_quantize(np.zeros(0, np.float32), bits=4).shape == (0,)


def test_shift_hand_values_and_bound(rng):
    np.testing.assert_array_equal(LP.shift(np.array([0.3, 1.0, 1.41, 1.42, 5.0, 6.0, 2.0**-20])),
                                  [0.25, 1.0, 1.0, 2.0, 4.0, 8.0, 2.0**-20])
    x = np.exp(rng.uniform(-30, 30, 5000))
    ref = 2.0 ** np.round(np.log2(x))                                       # the definition, independently
    np.testing.assert_array_equal(LP.shift(_ro(x)), ref)
    r = LP.shift(x) / x
    assert r.min() >= 2**-0.5 and r.max() <= 2**0.5


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_shift_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="x must be > 0"):
        LP.shift(np.array([1.0, bad]))


# --------------------------------------------------------------------------------------
# initialization and alpha
# --------------------------------------------------------------------------------------


def test_init_limit_hand_values():
    assert LP.wage_init_limit(64, bits=2) == (0.75, 2.0)                   # L0 = 0.306, 0.75/0.306 = 2.45 -> 2
    assert LP.wage_init_limit(6, bits=2) == (1.0, 1.0)                     # L0 = 1 > L_min: alpha = Shift(0.75) -> 1
    lim, alpha = LP.wage_init_limit(4096, bits=2)                          # 0.75 / 0.0383 = 19.6 -> 16
    assert (lim, alpha) == (0.75, 16.0)
    assert LP.wage_init_limit(64, bits=8) == (math.sqrt(6 / 64), 1.0)
    assert LP.wage_init_limit(64, bits=None) == (math.sqrt(6 / 64), 1.0)
    assert LP.wage_init_limit(64, bits=2, base=3.0) == (0.75, 4.0)         # 0.75 / 0.2165 = 3.46 -> 4
    assert LP.wage_init_limit(64, bits=3, beta=1.0) == (math.sqrt(6 / 64), 1.0)   # L_min = 0.25: 0.82 -> 1


def test_init_draws(rng):
    w, alpha = LP.wage_init((64, 256), bits=2, grid_bits=8, rng=0)
    w2, _ = LP.wage_init((64, 256), bits=2, grid_bits=8, rng=0)
    np.testing.assert_array_equal(w, w2)
    assert w.dtype == np.float32 and alpha == 4.0                          # 0.75 / sqrt(6/256) = 4.9 -> 4
    assert np.abs(w).max() <= 0.75 and np.abs(w).max() > 0.74
    assert _on_grid(w, 2.0**-7)
    assert abs(w.std() - 0.75 / math.sqrt(3)) < 0.01                       # uniform on [-L, L]
    wc, _ = LP.wage_init((4, 2, 3, 3), bits=None, rng=1)                   # conv layout: fan-in 18
    assert np.abs(wc).max() <= math.sqrt(6 / 18)
    with pytest.raises(ValueError, match="shape"):
        LP.wage_init((5,), bits=2)


# --------------------------------------------------------------------------------------
# Q_A, Q_E, Q_G, the update
# --------------------------------------------------------------------------------------


def test_activation_hand_values():
    a = _ro(np.array([0.0, 0.3, 1.0, 3.0, -0.7]))
    np.testing.assert_array_equal(LP.wage_activation(a, bits=3, alpha=2.0), [0.0, 0.25, 0.5, 0.75, -0.25])
    np.testing.assert_array_equal(LP.wage_activation(a, bits=3), LP.wage_quantize(a, bits=3))
    with pytest.raises(ValueError, match="alpha"):
        LP.wage_activation(a, bits=3, alpha=0.0)


def test_error_hand_values_and_scale_invariance(rng):
    e = _ro(np.array([0.005, -0.001, 0.0002, -0.0031]))
    # Shift(0.005) = 2^-8: 1.28 -> clip 7/8; -0.256 -> -2/8; 0.051 -> 0; -0.794 -> -6/8
    np.testing.assert_array_equal(LP.wage_error(e, bits=4), [0.875, -0.25, 0.0, -0.75])
    x = rng.normal(size=(8, 5))
    for c in (2.0**-10, 2.0**7):                                           # power-of-two rescaling changes nothing
        np.testing.assert_array_equal(LP.wage_error(c * x, bits=8), LP.wage_error(x, bits=8))
    y = LP.wage_error(x, bits=8)
    assert _on_grid(y, 2.0**-7) and np.abs(y).max() <= 1 - 2.0**-7
    np.testing.assert_array_equal(LP.wage_error(np.zeros((2, 3)), bits=8), np.zeros((2, 3)))


def test_gradient_hand_values():
    # max|g| = 4 = Shift(4): g_s = lr * g / 4 = [2, -0.5, 0]; the first entry is exactly 2 steps
    outs = {tuple(LP.wage_gradient(np.array([4.0, -1.0, 0.0]), bits=8, lr=2.0, rng=s) * 128) for s in range(40)}
    assert outs == {(2.0, 0.0, 0.0), (2.0, -1.0, 0.0)}
    # integer g_s: deterministic; max|g| = 3 -> Shift = 4; lr = 4 -> g_s = g
    np.testing.assert_array_equal(LP.wage_gradient(np.array([3.0, -2.0, 1.0]), bits=4, lr=4.0, rng=0),
                                  np.array([3.0, -2.0, 1.0]) / 8)
    np.testing.assert_array_equal(LP.wage_gradient(np.zeros(4), bits=8, rng=0), np.zeros(4))


def test_gradient_unbiased_on_grid_and_reproducible(rng):
    g = _ro(rng.normal(size=50).astype(np.float32))
    k, lr = 6, 3.0
    s = LP.wage_sigma(k)
    gs = lr * g.astype(np.float64) / float(LP.shift(np.float64(np.abs(g).max())))
    draws = np.stack([LP.wage_gradient(g, bits=k, lr=lr, rng=seed) for seed in range(4000)])
    assert draws.dtype == np.float32 and _on_grid(draws, s)
    assert np.all(np.abs(draws) <= s * np.ceil(np.abs(gs)) + 1e-9) and np.all(np.abs(draws) >= s * np.floor(np.abs(gs)) - 1e-9)
    frac = np.abs(gs) - np.floor(np.abs(gs))
    se = s * np.sqrt(frac * (1 - frac) / len(draws)) + 1e-12
    z = (draws.mean(axis=0) - s * gs) / se                                  # E[Q_G(g)] = sigma * g_s
    assert np.abs(z).max() < 5
    np.testing.assert_array_equal(LP.wage_gradient(g, bits=k, lr=lr, rng=7), LP.wage_gradient(g, bits=k, lr=lr, rng=7))


def test_update_clip_and_grid():
    w = _ro(np.array([0.5, 0.98, -0.99, 0.0]))
    d = _ro(np.array([0.25, -0.0625, 0.5, -1 / 128]))
    np.testing.assert_array_equal(LP.wage_update(w, d, bits=8), [0.25, 1 - 2**-7, -1 + 2**-7, 1 / 128])
    with pytest.raises(ValueError, match="delta must have the shape"):
        LP.wage_update(w, d[:2], bits=8)


# --------------------------------------------------------------------------------------
# Layers, optimizer, loss
# --------------------------------------------------------------------------------------


def test_layers_forward_backward(rng):
    a = _ro(rng.uniform(-3, 3, size=(4, 6)))
    g = _ro(rng.normal(size=(4, 6)))
    q = LP.WAGEActivation(4, alpha=2.0)
    np.testing.assert_array_equal(q(a), LP.wage_activation(a, bits=4, alpha=2.0))
    np.testing.assert_array_equal(q.backward(g), np.where(np.abs(a / 2) <= 1 - 1 / 8, g / 2, 0))
    qn = LP.WAGEActivation(None, alpha=4.0)
    np.testing.assert_array_equal(qn(a), a / 4)
    np.testing.assert_array_equal(qn.backward(g), g / 4)
    e = LP.WAGEError(8)
    assert e(a) is a
    np.testing.assert_array_equal(e.backward(g), LP.wage_error(g, bits=8))
    e0 = LP.WAGEError(None)
    e0(a)
    np.testing.assert_array_equal(e0.backward(g), g)
    w = LP.WAGEWeight(2)
    np.testing.assert_array_equal(w(a), LP.wage_quantize(a, bits=2))
    np.testing.assert_array_equal(w.backward(g), g)                         # straight through
    c = LP.ConstantScale(8.0)
    np.testing.assert_array_equal(c(a), a / 8)
    np.testing.assert_array_equal(c.backward(g), g / 8)
    assert LP.WAGEActivation(8)(a.astype(np.float32)).dtype == np.float32


def test_layers_bad_use():
    with pytest.raises(RuntimeError, match="before forward"):
        LP.WAGEError(8).backward(np.ones(3))
    q = LP.WAGEActivation(8)
    q(np.ones((2, 3)))
    with pytest.raises(ValueError, match="grad_out must have the shape"):
        q.backward(np.ones((3, 2)))
    with pytest.raises(ValueError, match="alpha"):
        LP.ConstantScale(-1.0)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\]"):
        LP.WAGEWeight(1)


def test_wage_optimizer_keeps_grid_and_frozen(rng):
    p = nn.Parameter(LP.wage_quantize(rng.uniform(-1, 1, size=(5, 7)), bits=6))
    mask = np.zeros((5, 7), bool)
    mask[0] = True
    p.frozen = mask
    before = p.data.copy()
    opt = LP.WAGE([p], bits=6, lr=8.0, rng=0)
    for _ in range(20):
        p.grad[...] = rng.normal(size=(5, 7))
        opt.step()
    assert _on_grid(p.data, 2.0**-5) and np.abs(p.data).max() <= 1 - 2.0**-5
    np.testing.assert_array_equal(p.data[0], before[0])
    assert not np.array_equal(p.data[1:], before[1:])
    with pytest.raises(ValueError, match="lr"):
        LP.WAGE([p], bits=8, lr=0.0)


def test_sse_loss_gradient(rng):
    logits = rng.normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])
    loss = LP.SumSquaredError()
    t = np.eye(4)[y]
    assert loss.forward(logits, y) == pytest.approx(0.5 * np.sum((logits - t) ** 2) / 5)
    num = nn.numerical_gradient(lambda _: LP.SumSquaredError().forward(logits, y), logits, eps=1e-6)
    np.testing.assert_allclose(loss.backward(), num, atol=1e-8)
    with pytest.raises(ValueError, match="labels"):
        loss.forward(logits, np.array([0, 4, 1, 1, 2]))


def test_wage_mlp_structure():
    net = LP.wage_mlp((16, 8), bits=(2, 8, 8, 8), rng=3)
    names = [type(m).__name__ for m in net.layers]
    assert names == ["WAGEActivation", "Linear", "ReLU", "WAGEError", "WAGEActivation", "Linear", "ReLU",
                     "WAGEError", "WAGEActivation", "Linear", "ConstantScale", "WAGEError"]
    alphas = [m.alpha for m in net.layers if isinstance(m, (LP.WAGEActivation, LP.ConstantScale))]
    assert alphas == [1.0, 2.0, 1.0, 1.0]      # input; fan-in 64, 16, 8: Shift(2.45) = 2, Shift(1.22) = 1, max(Shift(0.87), 1) = 1
    for lin in (m for m in net.layers if isinstance(m, nn.Linear)):
        assert lin.bias is None and _on_grid(lin.weight.data, 2.0**-7)
    with pytest.raises(TypeError, match="bits must be a 4-tuple"):
        LP.wage_mlp(bits=(2, 8, 8))
    with pytest.raises(TypeError, match="k_G"):
        LP.wage_mlp(bits=(2, 8, None, 8))


def test_wage_training_reaches_sane_accuracy(digits):
    def run():
        net = LP.wage_mlp((64,), bits=(2, 8, 8, 8), rng=0)
        opt = LP.WAGE(net.parameters(), bits=8, lr=8.0, rng=0)
        h = nn.fit(net, digits.X_train, digits.y_train, epochs=6, optimizer=opt, progress=False, rng=0)
        return net, h
    net, h = run()
    acc = nn.accuracy(net, digits.X_test, digits.y_test)
    assert acc > 0.85, acc
    assert h.loss[-1] < h.loss[0]
    w = net[1].weight_quantizer(net[1].weight.data)
    assert set(np.unique(w).tolist()) == {-0.5, 0.0, 0.5}                  # ternary weights throughout
    _, h2 = run()
    assert h2.loss == h.loss                                               # a seeded run repeats exactly


# --------------------------------------------------------------------------------------
# Range BN
# --------------------------------------------------------------------------------------


def test_range_bn_constant():
    assert LP.range_bn_constant(2) == pytest.approx(1 / math.sqrt(2 * math.log(2)))
    assert LP.range_bn_constant(256) == pytest.approx(0.3002806, abs=1e-7)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        LP.range_bn_constant(1)


def test_expected_gaussian_range_table_and_monte_carlo(rng):
    # d2(n), the expected range of n standard normal samples (Tippett 1925; control-chart tables)
    d2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078, 25: 3.931}
    for n, v in d2.items():
        assert LP.expected_gaussian_range(n) == pytest.approx(v, abs=6e-4)
    assert LP.expected_gaussian_range(2) == pytest.approx(2 / math.sqrt(math.pi), abs=1e-9)
    assert LP.expected_gaussian_range(1) == pytest.approx(0.0, abs=1e-9)
    x = rng.normal(size=(20000, 64))
    r = x.max(axis=1) - x.min(axis=1)
    assert abs(r.mean() - LP.expected_gaussian_range(64)) < 4 * r.std() / math.sqrt(len(r))


def test_c_times_range_tends_to_two_sigma():
    ns = [16, 256, 4096, 2**16, 2**20, 2**30]
    ratio = [LP.range_bn_constant(n) * LP.expected_gaussian_range(n) for n in ns]
    assert all(a < b for a, b in zip(ratio, ratio[1:])) and ratio[-1] < 2      # increases towards 2 from below
    for n, rt in zip(ns, ratio):                                           # the extreme-value expansion
        L = 2 * math.log(n)
        approx = 2 * (1 - (math.log(math.log(n)) + math.log(4 * math.pi) - 2 * 0.5772156649) / (2 * L))
        assert abs(rt - approx) < 0.6 / math.log(n)


@pytest.mark.parametrize("cls,shape", [(LP.RangeBatchNorm1d, (7, 3)), (LP.RangeBatchNorm2d, (3, 2, 3, 2)),
                                       (LP.L1BatchNorm1d, (7, 3)), (LP.L1BatchNorm2d, (3, 2, 3, 2))])
def test_scale_bn_backward_matches_finite_differences(cls, shape, rng):
    # Range BN and L1BN (Wu et al. 2018): one layer, two statistics
    x = rng.normal(size=shape)
    wt = rng.normal(size=shape)
    bn = cls(shape[1]).astype(np.float64)
    bn.weight.data[:] = rng.uniform(0.5, 2, shape[1])
    bn.bias.data[:] = rng.normal(size=shape[1])
    bn(x)
    dx = bn.backward(wt)
    xw = x.copy()
    num = nn.numerical_gradient(lambda _: float(np.sum(bn.forward(xw) * wt)), xw, eps=1e-6)
    np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-7)
    # parameter gradients
    for p in (bn.weight, bn.bias):
        g = p.grad.copy()
        num_p = nn.numerical_gradient(lambda _: float(np.sum(bn.forward(x) * wt)), p.data, eps=1e-6)
        np.testing.assert_allclose(g, num_p, rtol=1e-5, atol=1e-7)


def test_range_bn_forward_hand_and_eval(rng):
    x = _ro(np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [5.0, 1.0]]))
    bn = LP.RangeBatchNorm1d(2, momentum=0.5, eps=1e-12)
    y = bn(x)
    c4 = LP.range_bn_constant(4)
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 2.0) / (c4 * 5.0))
    np.testing.assert_allclose(y[:, 1], 0.0)                                # a constant channel: 0, no NaN
    np.testing.assert_allclose(bn.running_mean, [1.0, 0.5])                  # from 0, momentum 0.5
    np.testing.assert_allclose(bn.running_scale, [0.5 + 0.5 * c4 * 5.0, 0.5], rtol=1e-6)
    bn.eval()
    ye = bn(x)
    np.testing.assert_allclose(ye[:, 0], (x[:, 0] - 1.0) / (0.5 + 0.5 * c4 * 5.0 + 1e-12), rtol=1e-6)
    np.testing.assert_allclose(bn.backward(np.ones((4, 2))), np.ones((4, 2)) / (bn.running_scale + 1e-12), rtol=1e-6)
    # Gaussian data: the output's std is 1 / (C(n) E[R_n] / sigma) on average
    n = 512
    bn = LP.RangeBatchNorm1d(200)
    y = bn(rng.normal(3.0, 5.0, size=(n, 200)))
    assert abs(y.std(axis=0).mean() - 1 / (LP.range_bn_constant(n) * LP.expected_gaussian_range(n))) < 0.01


def test_range_bn_bad_input():
    bn = LP.RangeBatchNorm1d(3)
    with pytest.raises(ValueError, match="shape"):
        bn(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 values"):
        bn(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="finite"):
        bn(np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]]))
    with pytest.raises(TypeError):
        bn(np.zeros((4, 3), int))
    bn2 = LP.RangeBatchNorm1d(3)
    bn2(np.ones((4, 3)))
    with pytest.raises(ValueError, match="grad_out"):
        bn2.backward(np.ones((3, 3)))


def test_range_bn_float32_and_input_untouched(rng):
    x = _ro(rng.normal(size=(16, 4, 3, 3)).astype(np.float32))
    bn = LP.RangeBatchNorm2d(4)
    y = bn(x)
    assert y.dtype == np.float32 and bn.backward(np.ones_like(y)).dtype == np.float32


# L1-norm batch normalization (Wu et al. 2018); its backward pass is checked above


def test_l1_bn_forward_hand_eval_and_gaussian_scale(rng):
    x = _ro(np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [5.0, 1.0]]))
    bn = LP.L1BatchNorm1d(2, momentum=0.5, eps=1e-12)
    y = bn(x)
    k = math.sqrt(math.pi / 2)
    assert LP.L1_BN_CONSTANT == pytest.approx(k, rel=1e-15)
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 2.0) / (k * 1.5))     # mean |x - 2| = (2+1+0+3)/4
    np.testing.assert_allclose(y[:, 1], 0.0)                                # a constant channel: 0, no NaN
    np.testing.assert_allclose(bn.running_scale, [0.5 + 0.5 * k * 1.5, 0.5], rtol=1e-6)
    bn.eval()
    np.testing.assert_allclose(bn(x)[:, 0], (x[:, 0] - 1.0) / (0.5 + 0.5 * k * 1.5 + 1e-12), rtol=1e-6)
    # Gaussian data: sqrt(pi/2) E|x - mu| = sigma, so L1BN matches ordinary batch norm
    z = rng.normal(3.0, 5.0, size=(20_000, 4))
    y1 = LP.L1BatchNorm1d(4)(z)
    y2 = nn.BatchNorm1d(4).astype(np.float64)(z)
    assert abs(y1.std(axis=0) - 1).max() < 0.02
    assert np.abs(y1 - y2).max() < 0.03 * np.abs(y2).max()
    # heavier tails (Laplace): the mean absolute deviation is sigma / sqrt(2), so the output's
    # std is sqrt(2) / sqrt(pi/2) = 2 / sqrt(pi), not 1: the factor is a Gaussian assumption
    y3 = LP.L1BatchNorm1d(4)(rng.laplace(size=(20_000, 4)))
    assert abs(y3.std(axis=0).mean() - 2 / math.sqrt(math.pi)) < 0.02


def test_l1_bn_bad_input_dtype_and_input_untouched(rng):
    bn = LP.L1BatchNorm1d(3)
    with pytest.raises(ValueError, match="shape"):
        bn(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 values"):
        bn(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="finite"):
        bn(np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]]))
    x = _ro(rng.normal(size=(16, 4, 3, 3)).astype(np.float32))
    bn2 = LP.L1BatchNorm2d(4)
    y = bn2(x)
    assert y.dtype == np.float32 and bn2.backward(np.ones_like(y)).dtype == np.float32
    with pytest.raises(ValueError, match="norm"):
        LP.banner_mlp(norm="l2")
    assert [type(m).__name__ for m in LP.banner_mlp((8,), norm="l1").layers][1] == "L1BatchNorm1d"


# --------------------------------------------------------------------------------------
# Gradient quantization and bifurcation
# --------------------------------------------------------------------------------------


def test_quantize_gradient_unbiased_and_grid(rng):
    from qref import uniform as U
    g = _ro(rng.normal(size=30))
    draws = np.stack([LP.quantize_gradient(g, bits=3, rng=s) for s in range(3000)])
    p = U.params_from_data(g, bits=3, signed=False)                         # the min-max grid, integer zero point
    step, lo, hi = float(p.scale), float(p.scale * (p.qmin - p.zero_point)), float(p.scale * (p.qmax - p.zero_point))
    assert np.allclose(draws / step, np.rint(draws / step)) and draws.min() >= lo - 1e-12 and draws.max() <= hi + 1e-12
    inside = (g >= lo) & (g <= hi)                                         # unbiased where no clipping happens
    assert inside.sum() >= 25
    se = 0.5 * step / math.sqrt(len(draws))
    assert np.abs(draws.mean(axis=0) - g)[inside].max() < 5 * se
    np.testing.assert_array_equal(LP.quantize_gradient(np.zeros(5), bits=8, rng=0), np.zeros(5))
    assert LP.quantize_gradient(np.zeros(0), bits=8).shape == (0,)


def test_bifurcation_matches_the_two_copies(rng):
    x = rng.normal(size=(6, 5)).astype(np.float32)
    g = rng.normal(size=(6, 3)).astype(np.float32)
    plain = nn.Linear(5, 3, rng=1)
    bif = LP.GradientBifurcation(nn.Linear(5, 3, rng=1), error_bits=4, weight_bits=None, rng=9)
    np.testing.assert_array_equal(bif(x), plain(x))
    dx = bif.backward(_ro(g))
    plain.backward(g)
    np.testing.assert_array_equal(bif.layer.weight.grad, plain.weight.grad)   # weight gradient from the float copy
    gq = LP.quantize_gradient(g, bits=4, rng=9)
    np.testing.assert_allclose(dx, gq @ plain.weight.data, rtol=1e-6)       # error from the 4-bit copy
    # both None: the plain layer; gradients accumulate (+=) across calls
    both = LP.GradientBifurcation(nn.Linear(5, 3, rng=1), error_bits=None, weight_bits=None)
    both(x)
    np.testing.assert_array_equal(both.backward(g), g @ plain.weight.data)
    both.backward(g)
    np.testing.assert_allclose(both.layer.weight.grad, 2 * plain.weight.grad, rtol=1e-6)
    with pytest.raises(TypeError, match="layer must be"):
        LP.GradientBifurcation(lambda z: z)


def test_banner_mlp_trains(digits):
    net = LP.banner_mlp((32,), norm="range", rng=0)
    h = nn.fit(net, digits.X_train, digits.y_train, epochs=4, progress=False, rng=0,
               optimizer=nn.SGD(net.parameters(), lr=0.1, momentum=0.9))
    assert nn.accuracy(net, digits.X_test, digits.y_test) > 0.9
    assert h.loss[-1] < h.loss[0]
    with pytest.raises(ValueError, match="norm"):
        LP.banner_mlp(norm="layer")


def test_sse_rejects_an_empty_batch():
    # regression: an empty minibatch returned NaN (0/0) with a RuntimeWarning instead of an error
    with pytest.raises(ValueError, match="logits must not be empty"):
        LP.SumSquaredError().forward(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_expected_gaussian_range_meets_its_stated_accuracy_for_huge_n():
    # regression: log(Phi) of a Phi within 1e-10 of 1 lost digits, and n = 1e9 multiplied them into
    # an error of 1.3e-8 against the documented 1e-9. References: mpmath quadrature at 30 digits
    # of the integral of 1 - Phi(x)^n - (1 - Phi(x))^n.
    ref = {10**6: 9.7257949723929254, 10**8: 11.414436951346175, 10**9: 12.1753691688919173}
    for n, v in ref.items():
        assert abs(LP.expected_gaussian_range(n) - v) < 1e-9, n
