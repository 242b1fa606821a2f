"""Binary and ternary training (qref.bnn): surrogate gradients against the papers' formulas and
finite differences, shift-based batch norm against exact batch norm, training on digits, bad input."""

import numpy as np
import pytest

from qref import binary, bnn, data, nn
from qref.nonuniform import lloyd_max, lloyd_max_data


def _ro(a):
    """A read-only copy: any in-place write by the code under test raises."""
    a = np.array(a)
    a.setflags(write=False)
    return a


def _fd(f, x, eps=1e-6):
    """Central differences of a scalar function of a float64 array (x is not modified)."""
    x = np.array(x, dtype=np.float64)
    return nn.numerical_gradient(lambda _: f(x), x, eps=eps)


# --------------------------------------------------------------------------------------
# AP2
# --------------------------------------------------------------------------------------


def test_ap2_matches_rounded_log2_and_error_bound(rng):
    x = rng.normal(size=10_000) * np.exp(rng.uniform(-20, 20, size=10_000))
    ref = np.sign(x) * 2.0 ** np.round(np.log2(np.abs(x)))          # the definition, independently
    np.testing.assert_array_equal(bnn.ap2(x), ref)
    ratio = bnn.ap2(x) / x
    assert ratio.min() >= 2**-0.5 and ratio.max() <= 2**0.5
    assert ratio.min() < 0.72 and ratio.max() > 1.40                 # the bound is attained (nearly)


def test_ap2_exact_on_powers_of_two_zero_and_dtype():
    k = np.arange(-30, 31)
    p = np.ldexp(1.0, k).astype(np.float32)
    np.testing.assert_array_equal(bnn.ap2(p), p)
    np.testing.assert_array_equal(bnn.ap2(-p), -p)
    assert bnn.ap2(np.float32(0.0)) == 0 and bnn.ap2(np.array([0.0, -0.0])).tolist() == [0.0, 0.0]
    assert bnn.ap2(p).dtype == np.float32 and bnn.ap2(np.zeros(3, np.float16)).dtype == np.float16
    # the switch between 2^e and 2^(e+1) is at 2^(e+1/2)
    assert bnn.ap2(np.array([1.414, 1.415, 2.828, 2.829])).tolist() == [1.0, 2.0, 2.0, 4.0]


# --------------------------------------------------------------------------------------
# BinaryConnect
# --------------------------------------------------------------------------------------


def test_binaryconnect_forward_backward(rng):
    w = rng.uniform(-1.5, 1.5, size=(6, 5)).astype(np.float32)
    g = rng.normal(size=w.shape).astype(np.float32)
    q = bnn.BinaryConnect()
    out = q(_ro(w))
    np.testing.assert_array_equal(out, binary.binarize(w))
    assert out.dtype == np.float32
    dw = q.backward(_ro(g))
    np.testing.assert_array_equal(dw, g)                               # Algorithm 1: straight through
    assert dw.dtype == np.float32
    q = bnn.BinaryConnect(cancel_gradient=True)
    q(w)
    np.testing.assert_array_equal(q.backward(g), np.where(np.abs(w) <= 1, g, 0))


def test_binaryconnect_stochastic_is_reproducible_unbiased_and_deterministic_in_eval():
    w = np.full((200, 500), 0.4, np.float32)
    a, b = bnn.BinaryConnect(stochastic=True, rng=5), bnn.BinaryConnect(stochastic=True, rng=5)
    s = a(w)
    np.testing.assert_array_equal(s, b(w))
    assert set(np.unique(s)) == {-1.0, 1.0} and abs(s.mean() - 0.4) < 0.01    # E[w_b] = w on [-1, 1]
    a.eval()
    np.testing.assert_array_equal(a(w), np.ones_like(w))


def _digits():
    return data.load_digits()


def _train(net, epochs, lr=0.01, wrap=None, seed=0):
    d = _digits()
    opt = nn.Adam(net.parameters(), lr=lr)
    if wrap is not None:
        opt = wrap(opt, net)
    nn.fit(net, d.X_train, d.y_train, epochs=epochs, optimizer=opt, rng=seed, progress=False)
    return nn.accuracy(net, d.X_test, d.y_test), opt


def test_clip_latent_weights_keeps_them_in_range():
    def make():
        return bnn.binary_mlp((32,), weight_quantizer=lambda i: bnn.BinaryConnect(), rng=1)

    clipped_net = make()
    _, opt = _train(clipped_net, epochs=3, lr=0.1, wrap=bnn.ClipLatentWeights)
    for layer in (clipped_net[0], clipped_net[3]):
        assert np.abs(layer.weight.data).max() <= 1.0
    assert opt.clipped > 100                                           # the clipping did something
    free_net = make()                                                  # the same run without clipping
    _train(free_net, epochs=3, lr=0.1)
    assert np.abs(free_net[0].weight.data).max() > 1.5
    # clip_latent_weights leaves layers without latent_range alone
    net = nn.Sequential(nn.Linear(3, 2, rng=0, weight_quantizer=bnn.TWN()), nn.Linear(2, 2, rng=0))
    net[0].weight.data[:] = 5.0
    net[1].weight.data[:] = 5.0
    assert bnn.clip_latent_weights(net) == 0 and net[0].weight.data.max() == 5.0


def test_no_latent_weights_stores_binary_weights_and_stalls():
    net = bnn.binary_mlp((32,), weight_quantizer=lambda i: bnn.BinaryConnect(), rng=2)
    for layer in (net[0], net[3]):                      # start from stored binary weights
        layer.weight.data[...] = binary.binarize(layer.weight.data)
    before = [net[0].weight.data.copy(), net[3].weight.data.copy()]
    _train(net, epochs=2, lr=0.01, wrap=bnn.NoLatentWeights)
    for layer, w0 in zip((net[0], net[3]), before):
        assert set(np.unique(layer.weight.data)) <= {-1.0, 1.0}
        np.testing.assert_array_equal(layer.weight.data, w0)   # steps of ~lr never flip a sign


# --------------------------------------------------------------------------------------
# BNN / QNN activations
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_qnn_activation_forward_is_nearest_grid_point(rng, bits):
    x = rng.uniform(-2, 2, size=5000)
    out = bnn.QNNActivation(bits)(_ro(x))
    n = 2**bits - 1
    grid = -1 + 2 * np.arange(n + 1) / n
    assert np.unique(out).size == n + 1 and set(np.round(np.unique(out), 12)) <= set(np.round(grid, 12))
    nearest = grid[np.argmin(np.abs(np.clip(x, -1, 1)[:, None] - grid[None, :]), axis=1)]
    np.testing.assert_allclose(out, nearest, atol=1e-12)
    if bits == 1:
        np.testing.assert_array_equal(out, binary.binarize(x))


def test_qnn_activation_backward_is_hard_tanh_derivative(rng):
    x = rng.uniform(-2, 2, size=200)
    x = x[np.abs(np.abs(x) - 1) > 1e-3]
    g = rng.normal(size=x.size)
    a = bnn.QNNActivation()
    a(x)
    np.testing.assert_array_equal(a.backward(g), g * (np.abs(x) <= 1))           # Hubara et al.'s STE
    fd = _fd(lambda v: float((np.clip(v, -1, 1) * g).sum()), x)                 # d/dx of Htanh
    np.testing.assert_allclose(a.backward(g), fd, atol=1e-8)


# --------------------------------------------------------------------------------------
# Shift-based batch normalization
# --------------------------------------------------------------------------------------


def _exact_bn(x, eps):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _algorithm3(x, gamma, beta, eps):
    """Algorithm 3 of Courbariaux et al. (2016) written out independently, 2-d input."""
    mu = x.mean(axis=0)
    c = x - mu
    var = np.mean(c * np.sign(c) * 2.0 ** np.round(np.log2(np.abs(c))), axis=0)
    inv = 1 / np.sqrt(var + eps)
    x_hat = c * 2.0 ** np.round(np.log2(inv))
    return np.sign(gamma) * 2.0 ** np.round(np.log2(np.abs(gamma))) * x_hat + beta


def test_shift_bn_forward_is_algorithm_3(rng):
    x = rng.normal(3.0, 2.5, size=(64, 5))
    bn = bnn.ShiftBatchNorm(5)
    bn.weight.data[:] = [0.3, 1.0, 2.5, -0.7, 1.2]
    bn.bias.data[:] = [0.0, 0.5, -1.0, 0.2, 0.0]
    y = bn(_ro(x))
    np.testing.assert_allclose(y, _algorithm3(x, bn.weight.data.astype(np.float64), bn.bias.data, bn.eps), rtol=1e-12)


def test_shift_bn_within_ap2_bound_of_exact_bn(rng):
    x = rng.normal(size=(128, 16)) * rng.uniform(0.01, 100, size=16) + rng.normal(size=16) * 10
    bn = bnn.ShiftBatchNorm(16)
    bn.weight.data[:] = rng.uniform(0.1, 3, size=16)
    y = bn(x)
    exact = _exact_bn(x, bn.eps) * bn.weight.data
    ratio = y / exact                                       # beta = 0
    per_channel = ratio.mean(axis=0)
    np.testing.assert_allclose(ratio, np.broadcast_to(per_channel, ratio.shape), rtol=1e-9)  # one factor per channel
    assert per_channel.min() >= 2**-1.25 and per_channel.max() <= 2**1.25
    assert np.abs(np.log2(per_channel)).max() > 0.1                                   # not trivially equal
    # the signs, i.e. what a following binary activation sees, are exactly those of exact BN
    np.testing.assert_array_equal(np.sign(y), np.sign(exact))


def test_shift_bn_is_exact_on_powers_of_two():
    c = np.ldexp(1.0, 3) * np.array([[1.0], [-1.0], [1.0], [-1.0]])       # centred values +-8
    x = np.hstack([c + 5.0, 0.25 * c - 3.0])
    bn = bnn.ShiftBatchNorm(2, eps=1e-300)
    bn.weight.data[:] = [0.5, 4.0]
    np.testing.assert_array_equal(bn(x), _exact_bn(x, 0.0) * [0.5, 4.0])


def _linearized_shift_bn(x, gamma, beta, eps, ref):
    """Algorithm 3 with every AP2(z) replaced by AP2(z0) + (z - z0) around the reference point."""
    c0, r0, g0 = ref
    mu = x.mean(axis=0)
    c = x - mu
    var = np.mean(c * (bnn.ap2(c0) + c - c0), axis=0)
    r = 1 / np.sqrt(var + eps)
    s = bnn.ap2(r0) + r - r0
    g = bnn.ap2(g0) + gamma - g0
    return g * c * s + beta


def test_shift_bn_backward_is_ste_chain_rule(rng):
    x = rng.normal(1.0, 2.0, size=(12, 3))
    gamma, beta = np.array([0.8, 1.7, -0.4]), np.array([0.1, -0.2, 0.3])
    bn = bnn.ShiftBatchNorm(3).astype(np.float64)
    bn.weight.data[:], bn.bias.data[:] = gamma, beta
    r = rng.normal(size=x.shape)
    bn(x)
    dx = bn.backward(r)
    c0 = x - x.mean(axis=0)
    r0 = 1 / np.sqrt(np.mean(c0 * bnn.ap2(c0), axis=0) + bn.eps)
    ref = (c0, r0, gamma)

    def loss_x(v):
        return float((_linearized_shift_bn(v, gamma, beta, bn.eps, ref) * r).sum())

    np.testing.assert_allclose(dx, _fd(loss_x, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(bn.weight.grad, _fd(lambda gm: float((_linearized_shift_bn(x, gm, beta, bn.eps, ref) * r).sum()), gamma), rtol=1e-6)
    np.testing.assert_allclose(bn.bias.grad, r.sum(axis=0), rtol=1e-12)
    # the shift-based gradient is close to exact batch norm's (same direction up to the AP2 factors)
    exact = nn.BatchNorm1d(3).astype(np.float64)
    exact.weight.data[:], exact.bias.data[:] = gamma, beta
    exact(x)
    cos = float((dx * exact.backward(r)).sum() / np.linalg.norm(dx) / np.linalg.norm(exact.backward(r)))
    assert cos > 0.9


def test_shift_bn_eval_mode_running_stats_and_4d(rng):
    bn = bnn.ShiftBatchNorm(3, momentum=0.5)
    x = rng.normal(2.0, 3.0, size=(10, 3)).astype(np.float32)
    bn(x)
    c = x - x.mean(axis=0)
    np.testing.assert_allclose(bn.running_mean, 0.5 * x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * np.mean(c * bnn.ap2(c), axis=0) * 10 / 9, rtol=1e-5)
    bn.eval()
    x2 = rng.normal(size=(4, 3)).astype(np.float32)
    s = bnn.ap2(1 / np.sqrt(bn.running_var + bn.eps))
    y = bn(x2)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, (x2 - bn.running_mean) * s, rtol=1e-5)
    g = rng.normal(size=y.shape).astype(np.float32)
    np.testing.assert_allclose(bn.backward(g), g * s, rtol=1e-6)
    # (n, C, H, W): statistics over n, H, W, the same as the (n*H*W, C) matrix
    x4 = rng.normal(size=(3, 2, 4, 5))
    y4 = bnn.ShiftBatchNorm(2)(x4)
    y2 = bnn.ShiftBatchNorm(2)(x4.transpose(0, 2, 3, 1).reshape(-1, 2))
    np.testing.assert_allclose(y4.transpose(0, 2, 3, 1).reshape(-1, 2), y2, rtol=1e-12)


# --------------------------------------------------------------------------------------
# BWN and XNOR-Net
# --------------------------------------------------------------------------------------


def _away_from(x, points, gap=1e-3):
    for p in points:
        x = np.where(np.abs(x - p) < gap, p + 2 * gap, x)
    return x


@pytest.mark.parametrize("shape", [(4, 7), (3, 2, 3, 3)])
def test_bwn_forward_and_exact_gradient_against_finite_differences(rng, shape):
    w = _away_from(rng.normal(0, 0.8, size=shape), (0.0, 1.0, -1.0))
    r = rng.normal(size=shape)
    q = bnn.BWN()
    out = q(_ro(w))
    codes, alpha = binary.binarize_bwn(w, axis=0)
    np.testing.assert_array_equal(out, alpha * codes)
    dw = q.backward(_ro(r))
    ste = alpha * (np.abs(w) <= 1) * r                               # alpha * d sign / dW, straight through
    fd = _fd(lambda v: float((bnn.BWN()(v) * r).sum()), w)           # the true derivative: through alpha only
    np.testing.assert_allclose(dw - ste, fd, rtol=1e-6, atol=1e-9)
    n = int(np.prod(shape[1:]))
    axes = tuple(range(1, len(shape)))
    by_formula = np.sign(w) / n * (np.sign(w) * r).sum(axis=axes, keepdims=True) + ste
    np.testing.assert_allclose(dw, by_formula, rtol=1e-12)


def test_bwn_paper_and_constant_scale_rules(rng):
    w = rng.normal(0, 0.8, size=(5, 6))
    r = rng.normal(size=w.shape)
    alpha = np.abs(w).mean(axis=1, keepdims=True)
    gate = np.abs(w) <= 1
    q = bnn.BWN(scale_grad="paper")
    q(w)
    np.testing.assert_allclose(q.backward(r), r * (1 / 6 + alpha * gate), rtol=1e-12)     # Sec. 3.1 as printed
    q = bnn.BWN(scale_grad="none")
    q(w)
    np.testing.assert_allclose(q.backward(r), r * alpha * gate, rtol=1e-12)


def test_xnor_activation_with_bwn_linear_is_the_xnor_product(rng):
    x = rng.normal(size=(6, 40))
    layer = nn.Linear(40, 5, bias=False, rng=0, weight_quantizer=bnn.BWN()).astype(np.float64)
    y = layer(bnn.XNORActivation()(x))
    np.testing.assert_allclose(y, binary.xnor_matmul(x, layer.weight.data), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 4, 4)])
def test_xnor_activation_gradient(rng, shape):
    x = _away_from(rng.normal(size=shape), (0.0, 1.0, -1.0))
    r = rng.normal(size=shape)
    a = bnn.XNORActivation()
    out = a(_ro(x))
    k = np.abs(x).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(out, k * np.where(x >= 0, 1, -1), rtol=1e-12)
    dx = a.backward(_ro(r))
    ste = k * (np.abs(x) <= 1) * r
    fd = _fd(lambda v: float((bnn.XNORActivation()(v) * r).sum()), x)
    np.testing.assert_allclose(dx - ste, fd, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------
# TWN and TTQ
# --------------------------------------------------------------------------------------


def test_twn_forward_is_07_rule_and_backward_straight_through(rng):
    w = rng.normal(size=(8, 9)).astype(np.float32)
    q = bnn.TWN()
    out = q(_ro(w))
    assert out.dtype == np.float32
    delta = 0.7 * np.abs(w.astype(np.float64)).mean()
    assert q.delta_ == pytest.approx(delta, rel=1e-6)
    alpha = np.abs(w[np.abs(w) > delta]).mean()
    np.testing.assert_allclose(out, alpha * np.sign(w) * (np.abs(w) > delta), rtol=1e-6)
    g = rng.normal(size=w.shape).astype(np.float32)
    np.testing.assert_array_equal(q.backward(_ro(g)), g)
    exact = bnn.TWN(method="exact")
    exact(w)
    assert exact.delta_ == pytest.approx(float(binary.ternarize_twn(w)[2].item()))


def test_ttq_scale_gradients_eq7_against_finite_differences(rng):
    w = _away_from(rng.normal(size=(6, 10)), (0.0,))
    r = rng.normal(size=w.shape)
    q = bnn.TTQ(threshold=0.2, wp=0.7, wn=1.3).astype(np.float64)
    q(w)
    q.zero_grad()
    q.backward(r)
    delta = 0.2 * np.abs(w).max()
    assert q.delta_ == pytest.approx(delta)
    pos, neg = w > delta, w < -delta
    assert q.wp.grad == pytest.approx(r[pos].sum()) and q.wn.grad == pytest.approx(-r[neg].sum())

    def loss(p, name):
        getattr(q, name).data[...] = p[()]
        return float((q(w) * r).sum())

    for name, value in (("wp", 0.7), ("wn", 1.3)):
        fd = _fd(lambda p: loss(p, name), np.array(value))
        getattr(q, name).data[...] = value
        assert getattr(q, name).grad == pytest.approx(float(fd), rel=1e-7)


def test_ttq_latent_gradient_eq8_and_least_squares_start(rng):
    w = rng.normal(size=(7, 11)).astype(np.float32)
    q = bnn.TTQ()
    out = q(_ro(w))
    codes, wp, wn, delta = binary.ternarize_ttq(w, threshold=0.05)
    assert q.wp.data == pytest.approx(wp) and q.wn.data == pytest.approx(wn)
    np.testing.assert_allclose(out, np.where(codes > 0, wp, np.where(codes < 0, -wn, 0)), rtol=1e-6)
    g = rng.normal(size=w.shape).astype(np.float32)
    dw = q.backward(_ro(g))
    assert dw.dtype == np.float32
    np.testing.assert_allclose(dw, g * np.where(w > delta, wp, np.where(w < -delta, wn, 1.0)), rtol=1e-6)  # Eq. 8
    # a second forward keeps the learned scales (no re-initialization)
    q.wp.data[...] = 2.0
    assert q(w).max() == pytest.approx(2.0)


# --------------------------------------------------------------------------------------
# HWGQ
# --------------------------------------------------------------------------------------


def test_hwgq_levels_reproduce_the_authors_and_lloyd():
    # the released 2-bit HWGQ configurations of Cai et al.: uniform 0.538/1.076/1.614, non-uniform 0.453/1.51
    step = bnn.HWGQ(2).levels[0]
    assert 0.538 <= step < 0.539                                   # the authors quote it to 3 decimals
    np.testing.assert_allclose(bnn.HWGQ(2).levels, step * np.array([1, 2, 3]), rtol=1e-12)   # uniform
    np.testing.assert_allclose(lloyd_max(2).levels[2:], [0.453, 1.51], atol=1e-3)
    np.testing.assert_allclose(bnn.HWGQ(1).levels, [np.sqrt(2 / np.pi)], rtol=1e-7)   # E[x | x > 0]
    # independently: Lloyd's iteration on samples of the half-wave Gaussian (positive part)
    x = np.random.default_rng(0).standard_normal(200_000)
    pos = x[x > 0]
    np.testing.assert_allclose(bnn.HWGQ(2, uniform=False).levels, lloyd_max_data(pos, n_levels=3).levels, atol=0.01)
    # the uniform step minimizes the sampled error among a grid of steps (scale s / step: levels s, 2s, 3s)
    steps = np.linspace(0.45, 0.65, 81)
    errs = [np.mean((bnn.HWGQ(2, scale=s / step)(pos) - pos) ** 2) for s in steps]
    assert abs(steps[int(np.argmin(errs))] - step) < 0.005


def test_hwgq_forward_cells(rng):
    x = rng.normal(size=1000).astype(np.float32)
    for bits, uniform, scale in ((2, True, 1.0), (3, False, 2.5)):
        q = bnn.HWGQ(bits, uniform=uniform, scale=scale)
        lv = q.levels
        t = np.concatenate(([0.0], (lv[1:] + lv[:-1]) / 2, [np.inf]))
        ref = np.array([0.0 if v <= 0 else lv[np.flatnonzero((t[:-1] < v) & (v <= t[1:]))[0]] for v in x.astype(float)])
        out = q(_ro(x))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-6)
        assert lv.size == 2**bits - 1 and np.all(np.diff(lv) > 0)


def _clipped_relu(x, qm):
    return np.clip(x, 0, qm)


def _log_tailed_relu(x, qm):
    tau = qm - 1
    return np.where(x > qm, qm + np.log(np.maximum(x - tau, 1e-300)), np.maximum(x, 0))


@pytest.mark.parametrize("rule", ["relu", "clipped", "log_tailed"])
def test_hwgq_backward_is_the_derivative_of_its_relu(rng, rule):
    q = bnn.HWGQ(2, backward=rule)
    qm = q.levels[-1]
    x = _away_from(rng.uniform(-2, 6, size=300), (0.0, qm))
    r = rng.normal(size=x.size)
    q(x)
    dx = q.backward(_ro(r))
    f = {"relu": lambda v: np.maximum(v, 0), "clipped": lambda v: _clipped_relu(v, qm),
         "log_tailed": lambda v: _log_tailed_relu(v, qm)}[rule]
    np.testing.assert_allclose(dx, _fd(lambda v: float((f(v) * r).sum()), x), rtol=1e-6, atol=1e-9)
    if rule == "log_tailed":                                          # Sec. 4: 1/(x - tau), tau = q_m - 1
        above = x > qm
        np.testing.assert_allclose(dx[above], r[above] / (x[above] - (qm - 1)), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Training on digits
# --------------------------------------------------------------------------------------

_METHODS = {  # name -> (binary_mlp keyword arguments, optimizer wrapper, test accuracy to reach with seed 0)
    "BinaryConnect": (dict(weight_quantizer=lambda i: bnn.BinaryConnect()), bnn.ClipLatentWeights, 0.92),
    "BNN": (dict(weight_quantizer=lambda i: bnn.BinaryConnect(), activation=lambda i: bnn.QNNActivation(),
                 norm="shift"), bnn.ClipLatentWeights, 0.85),
    "QNN 2-bit": (dict(weight_quantizer=lambda i: bnn.BinaryConnect(), activation=lambda i: bnn.QNNActivation(2),
                       norm="shift"), bnn.ClipLatentWeights, 0.87),
    "BWN": (dict(weight_quantizer=lambda i: bnn.BWN()), None, 0.93),
    "XNOR-Net": (dict(weight_quantizer=lambda i: bnn.BWN(), activation=lambda i: bnn.XNORActivation()), None, 0.87),
    "TWN": (dict(weight_quantizer=lambda i: bnn.TWN()), None, 0.93),
    "TTQ": (dict(weight_quantizer=lambda i: bnn.TTQ()), None, 0.93),
    "HWGQ": (dict(weight_quantizer=lambda i: bnn.BWN(), activation=lambda i: bnn.HWGQ()), None, 0.91),
}


@pytest.mark.parametrize("name", list(_METHODS))
def test_each_method_trains_on_digits(name):
    kwargs, wrap, target = _METHODS[name]
    net = bnn.binary_mlp((64,), rng=0, **kwargs)
    acc, _ = _train(net, epochs=8, wrap=wrap)
    assert acc >= target, f"{name}: test accuracy {acc:.3f} < {target}"
    # and the trained weights really are binary / ternary
    w = net[0].weight_quantizer.eval()(net[0].weight.data)
    assert np.unique(np.abs(w[np.abs(w) > 0])).size <= (net[0].out_features if name.startswith(("BWN", "XNOR", "HWGQ")) else 2)


def test_trained_ttq_scales_move(rng):
    net = bnn.binary_mlp((32,), weight_quantizer=lambda i: bnn.TTQ(), rng=0)
    net(_digits().X_train[:64])
    start = (float(net[0].weight_quantizer.wp.data), float(net[0].weight_quantizer.wn.data))
    _train(net, epochs=2)
    end = (float(net[0].weight_quantizer.wp.data), float(net[0].weight_quantizer.wn.data))
    assert all(abs(a - b) > 1e-3 for a, b in zip(start, end))


# --------------------------------------------------------------------------------------
# dtypes, inputs not modified, bad input
# --------------------------------------------------------------------------------------

_QUANTIZERS = [
    lambda: bnn.BinaryConnect(), lambda: bnn.BinaryConnect(stochastic=True, rng=0), lambda: bnn.QNNActivation(),
    lambda: bnn.QNNActivation(3), lambda: bnn.BWN(), lambda: bnn.XNORActivation(), lambda: bnn.TWN(),
    lambda: bnn.TTQ(), lambda: bnn.HWGQ(), lambda: bnn.ShiftBatchNorm(5),
]


@pytest.mark.parametrize("make", _QUANTIZERS)
def test_float32_in_float32_out_and_inputs_untouched(rng, make):
    x = rng.normal(size=(8, 5)).astype(np.float32)
    g = rng.normal(size=(8, 5)).astype(np.float32)
    xc, gc = x.copy(), g.copy()
    q = make()
    y = q(_ro(x))
    dx = q.backward(_ro(g))
    assert y.dtype == np.float32 and dx.dtype == np.float32 and y.shape == dx.shape == x.shape
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(g, gc)


def test_bad_input():
    with pytest.raises(ValueError, match="x must be finite"):
        bnn.QNNActivation()(np.array([0.0, np.nan]))
    with pytest.raises(TypeError, match="w must have a floating dtype"):
        bnn.BinaryConnect()(np.array([1, 2]))
    with pytest.raises(ValueError, match="bits must be an integer in"):
        bnn.QNNActivation(0)
    with pytest.raises(ValueError, match="scale_grad must be one of"):
        bnn.BWN(scale_grad="mean")
    with pytest.raises(ValueError, match="w must be a weight tensor"):
        bnn.BWN()(np.ones(3))
    with pytest.raises(ValueError, match="threshold must be in"):
        bnn.TTQ(threshold=1.0)
    with pytest.raises(ValueError, match="wp must be finite and > 0"):
        bnn.TTQ(wp=-1.0)
    with pytest.raises(ValueError, match="backward must be one of"):
        bnn.HWGQ(backward="tanh")
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        bnn.HWGQ(scale=0.0)
    with pytest.raises(ValueError, match="bits must be an integer in"):
        bnn.HWGQ(bits=9)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\)"):
        bnn.ShiftBatchNorm(3)(np.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        bnn.ShiftBatchNorm(3)(np.ones((1, 3)))
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        bnn.ShiftBatchNorm(3, eps=0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        bnn.XNORActivation()(np.ones(3))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        bnn.TTQ().backward(np.ones(3))
    q = bnn.BinaryConnect()
    q(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"grad_out must have the shape \(2, 3\)"):
        q.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="model must be a qref.nn.Module"):
        bnn.clip_latent_weights([1, 2])
    with pytest.raises(TypeError, match="optimizer must have step"):
        bnn.ClipLatentWeights(object(), nn.Linear(2, 2, rng=0))
    with pytest.raises(ValueError, match="norm must be one of"):
        bnn.binary_mlp(norm="layer")
    with pytest.raises(TypeError, match="activation must be None or a callable"):
        bnn.binary_mlp(activation=3)
