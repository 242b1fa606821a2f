"""qref.nn: every backward against central differences, layers against direct formulas,
optimizers against their update rules (and PyTorch where installed), fit's determinism,
frozen entries, fixed-point SGD (Gupta et al. 2015), digits accuracy, and bad input."""

import copy

import numpy as np
import pytest

from qref import formats, nn, uniform


def _f64(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# --------------------------------------------------------------------------------------
# gradient checks (float64)
# --------------------------------------------------------------------------------------


class _Scale(nn.Module):
    """A smooth stand-in for a weight quantizer: w -> s * w**3, with a learned s."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(np.array([0.7]), name="s", decay=False)

    def forward(self, w):
        self._w = w
        return self.s.data * w ** 3

    def backward(self, g):
        self.s.grad += (g * self._w ** 3).sum()
        return g * self.s.data * 3 * self._w ** 2


LAYERS = {
    "linear": (lambda: nn.Linear(5, 3, rng=1), (4, 5)),
    "linear_nobias": (lambda: nn.Linear(5, 3, bias=False, rng=1), (4, 5)),
    "linear_wq": (lambda: nn.Linear(5, 3, rng=1, weight_quantizer=_Scale()), (4, 5)),
    "conv_p1": (lambda: nn.Conv2d(2, 3, 3, padding=1, rng=1), (2, 2, 5, 5)),
    "conv_p0_s2": (lambda: nn.Conv2d(2, 3, 3, stride=2, rng=1), (2, 2, 7, 6)),
    "conv_k2_s2_p1": (lambda: nn.Conv2d(1, 2, 2, stride=2, padding=1, rng=1), (2, 1, 5, 5)),
    "conv_wq": (lambda: nn.Conv2d(2, 2, 3, padding=1, rng=1, weight_quantizer=_Scale()), (2, 2, 4, 4)),
    "relu": (nn.ReLU, (3, 7)),
    "relu6": (nn.ReLU6, (3, 7)),
    "flatten": (nn.Flatten, (2, 3, 2, 2)),
    "bn1d": (lambda: nn.BatchNorm1d(4), (6, 4)),
    "bn2d": (lambda: nn.BatchNorm2d(3), (4, 3, 3, 3)),
    "bn1d_eval": (lambda: _bn_eval(nn.BatchNorm1d(4)), (6, 4)),
    "bn2d_eval": (lambda: _bn_eval(nn.BatchNorm2d(3)), (4, 3, 3, 3)),
    "maxpool": (lambda: nn.MaxPool2d(2), (2, 3, 4, 4)),
    "maxpool_odd": (lambda: nn.MaxPool2d(2), (2, 1, 5, 3)),
    "avgpool": (lambda: nn.AvgPool2d(2), (2, 3, 4, 4)),
    "avgpool_odd": (lambda: nn.AvgPool2d(3), (1, 2, 7, 4)),
    "mlp": (lambda: nn.mlp((6, 5), in_features=4, classes=3, rng=2), (5, 4)),
    "small_cnn": (lambda: nn.small_cnn(channels=(2, 3), rng=2), (3, 1, 8, 8)),
}


def _bn_eval(bn):
    rng = np.random.default_rng(5)
    bn.running_mean = rng.normal(size=bn.num_features).astype(np.float32)
    bn.running_var = rng.uniform(0.5, 2, size=bn.num_features).astype(np.float32)
    bn.weight.data[:] = rng.normal(size=bn.num_features)
    bn.bias.data[:] = rng.normal(size=bn.num_features)
    return bn.eval()


@pytest.mark.parametrize("name", LAYERS)
def test_backward_matches_central_differences(name):
    make, shape = LAYERS[name]
    layer = make()
    x = _f64(shape, seed=3)
    if name.startswith("relu6"):
        x = 4 * x  # some entries above 6
    before = copy.deepcopy(layer)
    x0 = x.copy()
    assert nn.gradcheck(layer, x, eps=1e-6, rtol=1e-5, atol=1e-8) is True
    np.testing.assert_array_equal(x, x0)                            # input untouched
    for p, q in zip(layer.parameters(), before.parameters()):        # module untouched (a copy was checked)
        np.testing.assert_array_equal(p.data, q.data)


def test_gradcheck_can_fail():
    class Wrong(nn.ReLU):
        def backward(self, g):
            return 1.01 * super().backward(g)

    with pytest.raises(AssertionError, match="gradient of x"):
        nn.gradcheck(Wrong(), _f64((3, 4)))

    class WrongWeight(nn.Linear):
        def backward(self, g):
            out = super().backward(g)
            self.weight.grad *= 0.5
            return out

    with pytest.raises(AssertionError, match="weight"):
        nn.gradcheck(WrongWeight(3, 2, rng=0), _f64((4, 3)))


def test_softmax_cross_entropy_gradient_and_value():
    z, y = _f64((5, 4)), np.array([0, 3, 1, 1, 2])
    loss = nn.SoftmaxCrossEntropy()
    value = loss(z, y)
    # independent: log-sum-exp by hand in float64
    ref = np.mean([np.log(np.exp(z[i]).sum()) - z[i, y[i]] for i in range(5)])
    assert value == pytest.approx(ref, rel=1e-12)
    g = loss.backward()
    num = nn.numerical_gradient(lambda v: nn.SoftmaxCrossEntropy()(v, y), z.copy(), eps=1e-6)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)
    big = np.array([[1000.0, 0.0], [0.0, -1000.0]])                  # stable for huge logits
    assert loss(big, np.array([0, 0])) == pytest.approx(0.0, abs=1e-12)


def test_numerical_gradient_restores_x_and_is_second_order():
    x = _f64(6)
    x0 = x.copy()
    g = nn.numerical_gradient(lambda v: float(np.sin(v).sum()), x, eps=1e-4)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_allclose(g, np.cos(x0), atol=1e-8)             # error ~ eps**2 / 6


def test_weight_quantizer_receives_gradient_and_is_used_in_forward():
    q = _Scale()
    layer = nn.Linear(3, 2, rng=0, weight_quantizer=q)
    x = np.ones((1, 3))
    y = layer(x)
    np.testing.assert_allclose(y, x @ (0.7 * layer.weight.data.astype(np.float64) ** 3).T, rtol=1e-6)
    layer.backward(np.ones_like(y))
    assert q.s.grad[0] != 0 and q.s in layer.parameters()


# --------------------------------------------------------------------------------------
# forward passes against direct formulas
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 0, 2), (3, 2, 1)])
def test_conv2d_equals_direct_loop(stride, padding, k):
    conv = nn.Conv2d(2, 3, k, stride=stride, padding=padding, rng=0)
    x = _f64((2, 2, 6, 7)).astype(np.float32)
    y = conv(x)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    w, b = conv.weight.data.astype(np.float64), conv.bias.data
    ho, wo = (6 + 2 * padding - k) // stride + 1, (7 + 2 * padding - k) // stride + 1
    ref = np.zeros((2, 3, ho, wo))
    for n in range(2):
        for o in range(3):
            for i in range(ho):
                for j in range(wo):
                    patch = xp[n, :, stride * i:stride * i + k, stride * j:stride * j + k]
                    ref[n, o, i, j] = (patch * w[o]).sum() + b[o]
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_pools_equal_direct_formulas():
    x = _f64((2, 3, 6, 7))
    mp, ap = nn.MaxPool2d(3)(x), nn.AvgPool2d(3)(x)
    for i in range(2):
        for j in range(2):
            win = x[:, :, 3 * i:3 * i + 3, 3 * j:3 * j + 3]
            np.testing.assert_array_equal(mp[:, :, i, j], win.max(axis=(2, 3)))
            np.testing.assert_allclose(ap[:, :, i, j], win.mean(axis=(2, 3)), rtol=1e-13)


def test_maxpool_ties_send_gradient_to_first_maximum_only():
    pool = nn.MaxPool2d(2)
    pool(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(pool.backward(np.full((1, 1, 1, 1), 3.0))[0, 0], [[3.0, 0.0], [0.0, 0.0]])


def test_batchnorm_statistics_and_modes():
    x = _f64((8, 3, 2, 2), seed=1) * 2 + 1
    bn = nn.BatchNorm2d(3, momentum=0.25)
    y = bn(x)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), rtol=1e-5, atol=1e-6)
    m = 8 * 2 * 2
    np.testing.assert_allclose(bn.running_mean, 0.25 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, 0.75 + 0.25 * var * m / (m - 1), rtol=1e-6)   # unbiased, Alg. 2
    bn.eval()
    z = _f64((2, 3, 2, 2), seed=2)
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    np.testing.assert_allclose(bn(z), (z - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5), rtol=1e-5)
    np.testing.assert_array_equal(bn.running_mean, rm)                 # eval does not update


def test_against_torch_layers():
    torch = pytest.importorskip("torch")
    x = _f64((4, 2, 6, 6), seed=4)
    conv, bn = nn.Conv2d(2, 3, 3, stride=1, padding=1, rng=0).astype(np.float64), nn.BatchNorm2d(3).astype(np.float64)
    net = nn.Sequential(conv, bn, nn.ReLU(), nn.MaxPool2d(2))
    tc = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    tb = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        tc.weight.copy_(torch.from_numpy(conv.weight.data))
        tc.bias.copy_(torch.from_numpy(conv.bias.data))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.nn.functional.max_pool2d(torch.relu(tb(tc(xt))), 2)
    g = _f64(tuple(yt.shape), seed=5)
    yt.backward(torch.from_numpy(g))
    y = net(x)
    dx = net.backward(g)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, tc.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad, tb.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------


def test_parameters_order_modes_and_zero_grad():
    net = nn.small_cnn(rng=0)
    names = [p.name for p in net.parameters()]
    assert names == ["weight", "bias"] * 5                            # conv, bn, conv, bn, linear
    shared = nn.Linear(2, 2, rng=0)
    assert len(nn.Sequential(shared, shared).parameters()) == 2          # each Parameter once
    assert all(not m.training for m in net.eval().modules())
    assert all(m.training for m in net.train().modules())
    for p in net.parameters():
        p.grad += 1
    net.zero_grad()
    assert all(not p.grad.any() for p in net.parameters())


def test_dtypes_follow_input():
    net = nn.small_cnn(rng=0)
    assert net(np.zeros((2, 1, 8, 8), np.float32)).dtype == np.float32
    assert net.backward(np.ones((2, 10), np.float32)).dtype == np.float32
    net64 = copy.deepcopy(net).astype(np.float64)
    assert net64(np.zeros((2, 1, 8, 8))).dtype == np.float64
    assert net64[1].running_var.dtype == np.float64


def test_fake_quantize_layer():
    x = _f64((3, 5)).astype(np.float32)
    fq = nn.FakeQuantize(bits=4)
    np.testing.assert_array_equal(fq(x), uniform.fake_quantize(x, uniform.params_from_data(x, bits=4)))
    assert len(np.unique(fq(x))) <= 16
    g = _f64((3, 5), seed=1).astype(np.float32)
    np.testing.assert_array_equal(fq.backward(g), g)                  # straight-through


# --------------------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------------------


def _param(values, grad, **kw):
    p = nn.Parameter(np.array(values, dtype=np.float64), **kw)
    p.grad[:] = grad
    return p


def test_sgd_momentum_and_decay_by_hand():
    p = _param([1.0, -2.0], [0.5, 0.25])
    opt = nn.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()                                   # v1 = g + wd w
    v1 = np.array([0.5 + 0.01, 0.25 - 0.02])
    np.testing.assert_allclose(p.data, [1.0, -2.0] - 0.1 * v1)
    w1 = p.data.copy()
    opt.step()                                   # same grad again: v2 = 0.9 v1 + g + wd w1
    v2 = 0.9 * v1 + np.array([0.5, 0.25]) + 0.01 * w1
    np.testing.assert_allclose(p.data, w1 - 0.1 * v2)


def test_adam_by_hand_two_steps():
    p = _param([1.0, -2.0], [0.5, 0.25])
    opt = nn.Adam([p], lr=0.01, betas=(0.8, 0.9), eps=1e-8)
    opt.step()
    opt.step()
    g = np.array([0.5, 0.25])
    m = 0.8 * (0.2 * g) + 0.2 * g
    v = 0.9 * (0.1 * g * g) + 0.1 * g * g
    w1 = np.array([1.0, -2.0]) - 0.01 * g / (np.abs(g) + 1e-8)  # step 1: m_hat/sqrt(v_hat) = sign(g)
    np.testing.assert_allclose(p.data, w1 - 0.01 * (m / 0.36) / (np.sqrt(v / 0.19) + 1e-8), rtol=1e-12)


def test_optimizers_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=5), rng.normal(size=(4, 5))
    for ours, theirs in [
        (lambda ps: nn.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
         lambda ts: torch.optim.SGD(ts, lr=0.1, momentum=0.9, weight_decay=0.01)),
        (lambda ps: nn.Adam(ps, lr=0.01, weight_decay=0.01),
         lambda ts: torch.optim.Adam(ts, lr=0.01, weight_decay=0.01)),
    ]:
        p = nn.Parameter(w0.copy())
        t = torch.tensor(w0.copy(), requires_grad=True)
        o, ot = ours([p]), theirs([t])
        for g in grads:
            p.grad[:] = g
            t.grad = torch.tensor(g)
            o.step()
            ot.step()
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [
    lambda ps: nn.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: nn.Adam(ps, lr=0.1, weight_decay=0.1),
    lambda ps: nn.SGD(ps, lr=0.1, momentum=0.5, weight_format=(2, 6), rounding="stochastic", rng=0),
])
def test_frozen_entries_never_change(make):
    rng = np.random.default_rng(1)
    p = nn.Parameter(rng.normal(size=(4, 3)).astype(np.float32))
    mask = rng.random((4, 3)) < 0.5
    p.frozen = mask
    w0 = p.data.copy()
    opt = make([p])
    for _ in range(5):
        p.grad[:] = rng.normal(size=(4, 3))
        opt.step()
    np.testing.assert_array_equal(p.data[mask], w0[mask])
    assert np.all(p.data[~mask] != w0[~mask])


def test_weight_decay_only_where_decay_is_true():
    a, b = _param([1.0], [0.0]), _param([1.0], [0.0], decay=False)
    nn.SGD([a, b], lr=0.5, weight_decay=0.1).step()
    assert a.data[0] == pytest.approx(1 - 0.05) and b.data[0] == 1.0


def test_fixed_point_sgd_keeps_weights_on_the_grid():
    rng = np.random.default_rng(0)
    p = nn.Parameter(rng.normal(size=200) * 3)
    opt = nn.SGD([p], lr=0.01, weight_format=formats.FixedPointFormat(1, 5), rounding="half_even")
    for _ in range(3):
        p.grad[:] = rng.normal(size=200)
        opt.step()
        k = p.data * 32
        np.testing.assert_array_equal(k, np.round(k))                  # multiples of 2^-5
        assert p.data.min() >= -2.0 and p.data.max() <= 2 - 1 / 32     # saturated to Q1.5
    assert np.isin(-2.0, p.data) and np.isin(2 - 1 / 32, p.data)


def test_fixed_point_sgd_round_to_nearest_swamps_stochastic_is_unbiased():
    # update 0.3 steps: nearest loses it every time; stochastic keeps it on average (Gupta Eq. 2)
    step, n = 2.0 ** -6, 4000
    p_rn = nn.Parameter(np.zeros(n))
    p_sr = nn.Parameter(np.zeros(n))
    rn = nn.SGD([p_rn], lr=1.0, weight_format=(1, 6), rounding="half_even")
    sr = nn.SGD([p_sr], lr=1.0, weight_format=(1, 6), rounding="stochastic", rng=3)
    for _ in range(10):
        p_rn.grad[:] = p_sr.grad[:] = -0.3 * step
        rn.step()
        sr.step()
    assert not p_rn.data.any()
    mean, exact = p_sr.data.mean(), 10 * 0.3 * step
    assert abs(mean - exact) < 5 * step * np.sqrt(10 * 0.3 * 0.7 / n)
    assert p_sr.data.std() > 0


def test_fixed_point_sgd_is_reproducible():
    def run():
        p = nn.Parameter(np.linspace(-1, 1, 50))
        opt = nn.SGD([p], lr=0.01, weight_format=(2, 8), rng=7)
        for i in range(3):
            p.grad[:] = np.cos(np.arange(50) + i)
            opt.step()
        return p.data
    np.testing.assert_array_equal(run(), run())


def test_cosine_lr():
    opt = nn.Adam([nn.Parameter(np.zeros(1))], lr=0.2)
    cb = nn.cosine_lr(opt, epochs=5, lr_min=0.1)
    lrs = []
    for e in range(5):
        cb(e, None, None)
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, [0.1 + 0.05 * (1 + np.cos(np.pi * min(e + 1, 5) / 5)) for e in range(5)])
    assert lrs[-1] == pytest.approx(0.1)


# --------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------


def _small_fit(digits, seed, **kw):
    net = nn.mlp((16,), rng=seed)
    h = nn.fit(net, digits.X_train[:300], digits.y_train[:300], epochs=2, batch_size=32, rng=seed,
               optimizer=nn.SGD(net.parameters(), lr=0.1, momentum=0.9), progress=False, **kw)
    return net, h


def test_fit_is_deterministic_and_depends_on_the_seed(digits):
    a, ha = _small_fit(digits, 0)
    b, hb = _small_fit(digits, 0)
    c, _ = _small_fit(digits, 1)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert ha.loss == hb.loss and ha.train_acc == hb.train_acc
    assert any(not np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), c.parameters()))


def test_fit_history_callback_and_inputs(digits):
    X, y = digits.X_train[:200].copy(), digits.y_train[:200].copy()
    X0, y0 = X.copy(), y.copy()
    calls = []
    net = nn.small_cnn(rng=0)
    h = nn.fit(net, X.reshape(-1, 1, 8, 8), y, epochs=3, batch_size=50,
               optimizer=nn.Adam(net.parameters(), lr=1e-2), progress=False,
               X_val=digits.X_test[:100].reshape(-1, 1, 8, 8), y_val=digits.y_test[:100],
               callback=lambda e, m, hist: calls.append((e, m is net, len(hist.loss))))
    assert calls == [(0, True, 1), (1, True, 2), (2, True, 3)]
    assert len(h.loss) == len(h.train_acc) == len(h.val_acc) == len(h.seconds) == 3
    assert h.loss[-1] < h.loss[0] and all(0 <= a <= 1 for a in h.train_acc + h.val_acc)
    assert not net.training                                             # left in eval mode
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)
    net.train()
    acc = nn.accuracy(net, digits.X_test[:100].reshape(-1, 1, 8, 8), digits.y_test[:100])
    assert net.training and acc == h.val_acc[-1]                        # accuracy restores the mode


def test_fit_with_progress_bar(digits):
    pytest.importorskip("tqdm")
    net = nn.mlp((8,), rng=0)
    nn.fit(net, digits.X_train[:64], digits.y_train[:64], epochs=1, optimizer=nn.SGD(net.parameters(), lr=0.1),
           progress=True)


def test_mlp_reaches_97_percent(digits):
    net = nn.mlp((64,), rng=0)
    opt = nn.Adam(net.parameters(), lr=1e-2)
    nn.fit(net, digits.X_train, digits.y_train, epochs=20, batch_size=32, optimizer=opt, rng=0,
           progress=False, callback=nn.cosine_lr(opt, epochs=20))
    assert nn.accuracy(net, digits.X_test, digits.y_test) >= 0.97


def test_small_cnn_reaches_98_percent(digits):
    net = nn.small_cnn(rng=0)
    opt = nn.Adam(net.parameters(), lr=1e-2)
    nn.fit(net, digits.X_train.reshape(-1, 1, 8, 8), digits.y_train, epochs=10, batch_size=64, optimizer=opt,
           rng=0, progress=False, callback=nn.cosine_lr(opt, epochs=10))
    assert nn.accuracy(net, digits.X_test.reshape(-1, 1, 8, 8), digits.y_test) >= 0.98


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


def test_layer_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"x must have shape \(n, 5\) for Linear\(5, 3\), got shape \(2, 4\)"):
        nn.Linear(5, 3, rng=0)(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2, H, W\)"):
        nn.Conv2d(2, 3, 3)(np.zeros((1, 1, 5, 5)))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        nn.Conv2d(1, 1, 3)(np.zeros((1, 1, 2, 5)))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 4\)"):
        nn.BatchNorm1d(4)(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="x must have shape"):
        nn.MaxPool2d(3)(np.zeros((1, 1, 2, 2)))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        nn.Linear(2, 2)(np.zeros((1, 2), dtype=int))
    with pytest.raises(TypeError, match="weight_quantizer must be a Module"):
        nn.Linear(2, 2, weight_quantizer=lambda w: w)
    with pytest.raises(ValueError, match="in_features must be a positive integer, got 0"):
        nn.Linear(0, 2)
    with pytest.raises(ValueError, match="frozen must be None or a bool array of shape"):
        nn.Parameter(np.zeros(3)).frozen = np.zeros(3)
    with pytest.raises(TypeError, match="layers must be Modules"):
        nn.Sequential(nn.ReLU(), np.tanh)


def test_optimizer_errors_name_the_argument():
    ps = [nn.Parameter(np.zeros(2))]
    for kw, match in [
        (dict(lr=0.0), "lr must be finite and > 0, got 0.0"),
        (dict(lr=-1.0), "lr must be finite and > 0"),
        (dict(lr=0.1, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
        (dict(lr=0.1, momentum=-0.1), "momentum must be in"),
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay must be >= 0"),
        (dict(lr=0.1, rounding="nearest"), "rounding must be one of"),
        (dict(lr=0.1, weight_format=(40, 0)), "int_bits must be an integer in"),
    ]:
        with pytest.raises(ValueError, match=match):
            nn.SGD(ps, **kw)
    with pytest.raises(TypeError, match="weight_format must be None, a FixedPointFormat or a pair"):
        nn.SGD(ps, lr=0.1, weight_format=8)
    for kw, match in [(dict(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\)"),
                      (dict(betas=(-0.1, 0.9)), r"betas\[0\] must be in"), (dict(eps=0.0), "eps must be")]:
        with pytest.raises(ValueError, match=match):
            nn.Adam(ps, **kw)
    with pytest.raises(TypeError, match="betas must be a pair"):
        nn.Adam(ps, betas=0.9)
    with pytest.raises(ValueError, match="params must hold at least one Parameter"):
        nn.Adam([])
    with pytest.raises(TypeError, match="params must hold Parameters"):
        nn.SGD([np.zeros(2)], lr=0.1)


def test_fit_errors_name_the_argument(digits):
    net = nn.mlp((4,), rng=0)
    opt = nn.SGD(net.parameters(), lr=0.1)
    X, y = digits.X_train[:20].copy(), digits.y_train[:20].copy()
    kw = dict(epochs=1, optimizer=opt, progress=False)
    bad_x = X.copy()
    bad_x[3, 5] = np.nan
    with pytest.raises(ValueError, match="X must be finite, got 1 NaN"):
        nn.fit(net, bad_x, y, **kw)
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        nn.fit(net, X, y, **{**kw, "epochs": 0})
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        nn.fit(net, X, y, batch_size=0, **kw)
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 10\) for 10 logits, got 10"):
        nn.fit(net, X, np.where(y == y[0], 10, y), **kw)
    with pytest.raises(ValueError, match="y must hold class labels >= 0, got -1"):
        nn.fit(net, X, np.where(y == y[0], -1, y), **kw)
    with pytest.raises(TypeError, match="y must have an integer dtype"):
        nn.fit(net, X, y.astype(float), **kw)
    with pytest.raises(ValueError, match=r"y must have shape \(20,\) to match X"):
        nn.fit(net, X, y[:10], **kw)
    with pytest.raises(ValueError, match="X_val and y_val must be given together"):
        nn.fit(net, X, y, X_val=X, **kw)
    with pytest.raises(ValueError, match="X_val must be finite"):
        nn.fit(net, X, y, X_val=bad_x, y_val=y, **kw)
    with pytest.raises(TypeError, match="optimizer must have step"):
        nn.fit(net, X, y, epochs=1, optimizer=None, progress=False)
    with pytest.raises(TypeError, match="callback must be callable"):
        nn.fit(net, X, y, callback=3, **kw)
    with pytest.raises(TypeError, match="model must be a Module"):
        nn.fit(np.tanh, X, y, **kw)
    np.testing.assert_array_equal(X, digits.X_train[:20])


def test_factories_are_called_per_layer():
    wq, aq = [], []
    net = nn.small_cnn(weight_quantizer=lambda i: wq.append(i) or nn.FakeQuantize(4, symmetric=True),
                       activation_quantizer=lambda i: aq.append(i) or nn.FakeQuantize(4))
    assert wq == [0, 1, 2] and aq == [0, 1]
    fqs = [m for m in net.modules() if isinstance(m, nn.FakeQuantize)]
    assert len(fqs) == 5 and len({id(m) for m in fqs}) == 5
    assert net(np.ones((2, 1, 8, 8), np.float32)).shape == (2, 10)
    net2 = nn.mlp((8, 8), activation_quantizer=lambda i: nn.FakeQuantize(4) if i == 1 else None)
    assert [type(m).__name__ for m in net2.layers] == ["Linear", "ReLU", "Linear", "ReLU", "FakeQuantize", "Linear"]
    with pytest.raises(TypeError, match="activation_quantizer must be None or a callable"):
        nn.mlp(activation_quantizer=3)


def test_drop_last_and_blas_threads(digits):
    class Counting(nn.SGD):
        steps = 0

        def step(self):
            Counting.steps += 1
            super().step()

    X, y = digits.X_train[:100], digits.y_train[:100]
    for drop_last, steps in ((False, 4), (True, 3)):
        Counting.steps = 0
        net = nn.mlp((8,), rng=0)
        nn.fit(net, X, y, epochs=1, batch_size=32, drop_last=drop_last, optimizer=Counting(net.parameters(), lr=0.1),
               progress=False, blas_threads=None if drop_last else 2)
        assert Counting.steps == steps
    net = nn.mlp((8,), rng=0)
    opt = nn.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="batch_size must be <= len"):
        nn.fit(net, X, y, epochs=1, batch_size=101, drop_last=True, optimizer=opt, progress=False)
    with pytest.raises(ValueError, match="blas_threads must be a positive integer, got 0"):
        nn.fit(net, X, y, epochs=1, optimizer=opt, progress=False, blas_threads=0)


# --------------------------------------------------------------------------------------
# fit's per-minibatch gradient hook, backprop, StopTraining
# --------------------------------------------------------------------------------------


def test_backprop_is_fits_minibatch_body(digits):
    X, y = digits.X_train[:200], digits.y_train[:200]
    loss = nn.SoftmaxCrossEntropy()
    net = nn.mlp((16,), rng=0)
    net.train()
    loss_sum, n_correct = nn.backprop(net, X[:50], y[:50], loss)
    logits = nn.mlp((16,), rng=0)(X[:50])                 # an independent copy, same weights
    assert loss_sum == pytest.approx(50 * nn.SoftmaxCrossEntropy().forward(logits, y[:50]), rel=1e-6)
    assert n_correct == np.count_nonzero(logits.argmax(axis=1) == y[:50])
    g1 = [p.grad.copy() for p in net.parameters()]
    nn.backprop(net, X[:50], y[:50], loss)                # gradients are cleared, not accumulated
    for p, g in zip(net.parameters(), g1):
        assert np.array_equal(p.grad, g) and np.abs(g).sum() > 0
    # a hook that calls backprop itself trains bit for bit like the default loop
    runs = []
    for hook in (None, lambda m, xb, yb, lf: nn.backprop(m, xb, yb, lf)):
        net = nn.mlp((16,), rng=0)
        h = nn.fit(net, X, y, epochs=2, optimizer=nn.SGD(net.parameters(), lr=0.1, momentum=0.9), batch_size=32,
                   rng=4, progress=False, X_val=X[:40], y_val=y[:40], gradient=hook)
        runs.append((h, [p.data.copy() for p in net.parameters()]))
    (h1, w1), (h2, w2) = runs
    assert (h1.loss, h1.train_acc, h1.val_acc) == (h2.loss, h2.train_acc, h2.val_acc)
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))


def test_gradient_hook_sees_every_minibatch_and_its_grad_is_applied(digits):
    X, y = digits.X_train[:70], digits.y_train[:70]
    seen = []

    def hook(model, xb, yb, loss):
        seen.append(len(yb))
        model.zero_grad()
        for p in model.parameters():
            p.grad[...] = 1.0                          # a fake gradient: SGD must apply exactly it
        return 2.0 * len(yb), 1

    class StepOnly:                                    # with a hook, step() is all fit needs
        def __init__(self, params):
            self.params = params

        def step(self):
            for p in self.params:
                p.data -= 0.5 * p.grad

    net = nn.mlp((4,), rng=0)
    w0 = [p.data.copy() for p in net.parameters()]
    h = nn.fit(net, X, y, epochs=2, batch_size=32, optimizer=StepOnly(net.parameters()), gradient=hook,
               progress=False)
    assert seen == [32, 32, 6] * 2
    assert h.loss == [2.0, 2.0] and h.train_acc == [3 / 70, 3 / 70]
    for p, w in zip(net.parameters(), w0):
        assert np.allclose(p.data, w - 6 * 0.5)
    with pytest.raises(TypeError, match="gradient must be callable or None, got int"):
        nn.fit(net, X, y, epochs=1, optimizer=StepOnly(net.parameters()), gradient=3, progress=False)
    with pytest.raises(TypeError, match=r"optimizer must have step\(\) and zero_grad\(\), got StepOnly"):
        nn.fit(net, X, y, epochs=1, optimizer=StepOnly(net.parameters()), progress=False)


def test_stop_training_from_the_hook_and_from_the_callback(digits):
    X, y = digits.X_train[:100], digits.y_train[:100]
    calls = []

    def hook(model, xb, yb, loss):
        calls.append(1)
        if len(calls) == 6:                            # the 2nd minibatch of the 2nd epoch
            raise nn.StopTraining
        return nn.backprop(model, xb, yb, loss)

    net = nn.mlp((8,), rng=0)
    ref = nn.mlp((8,), rng=0)
    h = nn.fit(net, X, y, epochs=5, batch_size=25, optimizer=nn.SGD(net.parameters(), lr=0.1), gradient=hook,
               rng=0, progress=False, X_val=X, y_val=y)
    assert len(h.loss) == 2 and np.isnan(h.loss[1]) and np.isfinite(h.loss[0])
    assert len(h.train_acc) == len(h.val_acc) == len(h.seconds) == 1
    assert not net.training
    # the interrupted minibatch got no step: 5 steps in all, as a 1.25-epoch run would do
    rng = np.random.default_rng(0)
    opt = nn.SGD(ref.parameters(), lr=0.1)
    ref.train()
    for order in (rng.permutation(100), rng.permutation(100)[:25]):
        for s in range(0, len(order), 25):
            nn.backprop(ref, X[order[s:s + 25]], y[order[s:s + 25]], nn.SoftmaxCrossEntropy(), zero_grad=opt.zero_grad)
            opt.step()
    assert all(np.array_equal(p.data, q.data) for p, q in zip(net.parameters(), ref.parameters()))

    def stop_after_two(epoch, model, history):
        if epoch == 1:
            raise nn.StopTraining

    net = nn.mlp((8,), rng=0)
    h = nn.fit(net, X, y, epochs=5, optimizer=nn.SGD(net.parameters(), lr=0.1), callback=stop_after_two,
               progress=False)
    assert len(h.loss) == len(h.train_acc) == 2 and np.isfinite(h.loss).all() and not net.training
