"""qref.qat.FoldedConv2dBN (Jacob et al. 2018, Sec. 3.2): batch norm folded into a fake-quantized conv.

Checked against a convolution written from its definition (loops over the kernel offsets, not
im2col) followed by a batch norm written from its formula, against qref.nn.Conv2d +
BatchNorm2d and PyTorch (when installed); the backward against central differences of the STE
surrogate in float64; evaluation mode against the deployed layer (folded, quantized weights,
folded bias); training on digits; and the conversion to qref.intarith.integer_cnn.
"""

import numpy as np
import pytest

from qref import intarith, nn, qat, uniform


def _conv_ref(x, w, stride, pad):
    """y[n, o, i, j] = sum_{c,u,v} w[o, c, u, v] x_pad[n, c, s i + u, s j + v], by kernel offsets."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    ho, wo = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    y = np.zeros((x.shape[0], w.shape[0], ho, wo), np.result_type(x, w))
    for u in range(k):
        for v in range(k):
            patch = xp[:, :, u:u + stride * ho:stride, v:v + stride * wo:stride]   # [n, c, i, j]
            y += np.einsum("ncij,oc->noij", patch, w[:, :, u, v])
    return y


def _ch(v):
    return np.asarray(v)[None, :, None, None]


def _surrogate(x, W, gamma, beta, delta, eps, stride, pad, mean=None, var=None):
    """BN(conv(x, W)) + conv(x, delta): the STE surrogate of the layer (batch statistics unless given)."""
    y0 = _conv_ref(x, W, stride, pad)
    mu = y0.mean(axis=(0, 2, 3)) if mean is None else mean
    v = y0.var(axis=(0, 2, 3)) if var is None else var
    return _ch(gamma) * (y0 - _ch(mu)) / np.sqrt(_ch(v) + eps) + _ch(beta) + _conv_ref(x, delta, stride, pad)


def _fq(w, bits):
    return uniform.fake_quantize(w, uniform.params_from_data(w, bits=bits, symmetric=True, narrow_range=True))


def _layer(rng, *, bits=4, stride=2, padding=1, dtype=np.float64):
    layer = qat.FoldedConv2dBN(3, 4, 3, stride=stride, padding=padding, bits=bits, momentum=0.3, rng=0).astype(dtype)
    layer.gamma.data[:] = rng.uniform(0.5, 2, 4)
    layer.beta.data[:] = rng.normal(size=4)
    layer.running_mean = rng.normal(size=4).astype(dtype)
    layer.running_var = rng.uniform(0.5, 2, 4).astype(dtype)
    return layer


@pytest.mark.parametrize("training", [True, False])
def test_gradients_against_central_differences(rng, training):
    layer = _layer(rng)
    layer.train(training)
    x = rng.normal(size=(3, 3, 7, 6))
    r = rng.normal(size=(3, 4, 4, 3))                        # ho = (7 + 2 - 3)//2 + 1 = 4, wo = 3
    stats = {} if training else {"mean": layer.running_mean.copy(), "var": layer.running_var.copy()}
    y = layer(x)
    delta = layer._delta.reshape(layer.weight.data.shape).copy()
    W, gamma, beta = layer.weight.data.copy(), layer.gamma.data.copy(), layer.beta.data.copy()
    assert np.abs(delta).max() > 1e-3                        # 4 bits: the quantization residual is not 0
    np.testing.assert_allclose(y, _surrogate(x, W, gamma, beta, delta, layer.eps, 2, 1, **stats), atol=1e-12)
    dx = layer.backward(r)

    def f(xx=x, WW=W, gg=gamma, bb=beta):
        return float(np.sum(r * _surrogate(xx, WW, gg, bb, delta, layer.eps, 2, 1, **stats)))

    num = lambda fn, a: nn.numerical_gradient(fn, a.copy(), eps=1e-6)           # noqa: E731
    np.testing.assert_allclose(dx, num(lambda v: f(xx=v), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.weight.grad, num(lambda v: f(WW=v), W), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.gamma.grad, num(lambda v: f(gg=v), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.beta.grad, num(lambda v: f(bb=v), beta), rtol=1e-6, atol=1e-8)


def test_training_forward_is_conv_then_batch_norm_at_high_bit_width(rng):
    """16 bits: the folded layer is nn.Conv2d + nn.BatchNorm2d (training mode), running statistics too."""
    x = rng.normal(size=(5, 3, 6, 6)).astype(np.float32)
    layer = qat.FoldedConv2dBN(3, 4, 3, padding=1, bits=16, momentum=0.25, rng=0)
    layer.gamma.data[:] = [0.5, 1.0, 1.5, 2.0]
    layer.beta.data[:] = [-1.0, 0.0, 0.5, 1.0]
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=False, rng=0), nn.BatchNorm2d(4, momentum=0.25)
    assert np.array_equal(conv.weight.data, layer.weight.data)   # the same He initialization
    bn.weight.data[:], bn.bias.data[:] = layer.gamma.data, layer.beta.data
    for _ in range(2):
        y, want = layer(x), bn(conv(x))
        scale = np.abs(want).max()
        np.testing.assert_allclose(y, want, atol=1e-3 * scale)   # 16-bit weights: error ~ 2**-15 relative
        x = x[:, :, ::-1] * 1.5 + 0.25                           # a second batch, other statistics
    np.testing.assert_allclose(layer.running_mean, bn.running_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var, bn.running_var, rtol=1e-5)
    # and from the definition: unbiased variance over n * H_out * W_out values per channel
    y0 = _conv_ref(x.astype(np.float64), layer.weight.data.astype(np.float64), 1, 1)
    m = y0.shape[0] * y0.shape[2] * y0.shape[3]
    assert m == 5 * 6 * 6
    layer2 = qat.FoldedConv2dBN(3, 4, 3, padding=1, momentum=0.25, rng=0)
    layer2(x)
    np.testing.assert_allclose(layer2.running_mean, 0.25 * y0.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer2.running_var, 0.75 + 0.25 * y0.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-5)


def test_training_forward_against_pytorch(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch comparison is skipped")
    x = rng.normal(size=(4, 2, 7, 7)).astype(np.float32)
    layer = qat.FoldedConv2dBN(2, 3, 3, stride=2, padding=1, bits=16, rng=1)
    tconv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    tbn = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5)
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(layer.weight.data))
        want = tbn(tconv(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(layer(x), want, atol=1e-3 * np.abs(want).max())
    np.testing.assert_allclose(layer.running_mean, tbn.running_mean.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.running_var, tbn.running_var.numpy(), rtol=1e-5)


def test_inference_mode_is_the_deployed_layer(rng):
    layer = _layer(rng, bits=6, stride=1, dtype=np.float32)
    x = rng.normal(size=(4, 3, 6, 5)).astype(np.float32)
    layer.train()
    layer(x)                                                 # move the running statistics
    layer.eval()
    # the layer as deployed: a plain convolution with the quantized folded weights and the folded bias
    gamma, beta = layer.gamma.data.astype(np.float64), layer.beta.data.astype(np.float64)
    sd = np.sqrt(layer.running_var.astype(np.float64) + layer.eps)
    w_fold = layer.weight.data.astype(np.float64) * (gamma / sd)[:, None, None, None]
    b_fold = beta - gamma * layer.running_mean / sd
    w_hat = _fq(w_fold.astype(np.float32), 6)
    want = _conv_ref(x, w_hat, 1, 1) + _ch(b_fold)
    y = layer(x)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    w2, b2 = layer.folded()
    np.testing.assert_allclose(w2, w_fold, rtol=1e-6)
    np.testing.assert_allclose(b2, b_fold, rtol=1e-5, atol=1e-6)
    deployed = nn.Conv2d(3, 4, 3, padding=1, rng=0)
    deployed.weight.data[...], deployed.bias.data[...] = w_hat, b_fold
    np.testing.assert_allclose(y, deployed(x), rtol=1e-5, atol=1e-5)
    # at 16 bits, evaluation mode is conv + BN with the running statistics
    layer16 = qat.FoldedConv2dBN(3, 4, 3, padding=1, bits=16, rng=0)
    layer16.running_mean, layer16.running_var = layer.running_mean.copy(), layer.running_var.copy()
    layer16.gamma.data[:], layer16.beta.data[:] = layer.gamma.data, layer.beta.data
    bn = nn.BatchNorm2d(4).eval()
    bn.weight.data[:], bn.bias.data[:] = layer.gamma.data, layer.beta.data
    bn.running_mean, bn.running_var = layer.running_mean.copy(), layer.running_var.copy()
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False, rng=0)
    want16 = bn(conv(x))
    np.testing.assert_allclose(layer16.eval()(x), want16, atol=1e-3 * np.abs(want16).max())
    rm = layer16.running_mean.copy()
    layer16(x * 3)
    assert np.array_equal(layer16.running_mean, rm)            # evaluation mode leaves the statistics alone


def test_linear_and_conv_share_the_folding():
    """A 1x1 convolution on 1x1 images is a linear layer: the two folded layers agree exactly."""
    rng = np.random.default_rng(5)
    lin = qat.FoldedLinearBN(6, 3, bits=5, momentum=0.2, rng=0)
    conv = qat.FoldedConv2dBN(6, 3, 1, bits=5, momentum=0.2, rng=0)
    conv.weight.data[...] = lin.weight.data[:, :, None, None]
    x = rng.normal(size=(8, 6)).astype(np.float32)
    g = rng.normal(size=(8, 3)).astype(np.float32)
    for mode in (True, False):
        lin.train(mode), conv.train(mode)
        np.testing.assert_allclose(conv(x[:, :, None, None])[:, :, 0, 0], lin(x), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(conv.backward(g[:, :, None, None])[:, :, 0, 0], lin.backward(g), rtol=1e-6,
                                   atol=1e-6)
    np.testing.assert_allclose(conv.weight.grad[:, :, 0, 0], lin.weight.grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv.gamma.grad, lin.gamma.grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv.running_var, lin.running_var, rtol=1e-6)
    assert [p.name for p in conv.parameters()] == ["weight", "gamma", "beta"]
    assert [p.decay for p in conv.parameters()] == [True, False, False]


def _folded_cnn(bits, rng):
    return nn.Sequential(
        qat.FoldedConv2dBN(1, 8, 3, padding=1, bits=bits, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        qat.FoldedConv2dBN(8, 16, 3, padding=1, bits=bits, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10, rng=rng))


@pytest.fixture(scope="module")
def trained_folded_cnn(digits):
    X = digits.X_train.reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(0)
    net = _folded_cnn(8, rng)
    h = nn.fit(net, X, digits.y_train, epochs=4, batch_size=64, optimizer=nn.Adam(net.parameters(), lr=1e-2),
               progress=False, rng=0)
    return net, h


def test_small_folded_cnn_trains_on_digits(digits, trained_folded_cnn):
    net, h = trained_folded_cnn
    assert h.loss[-1] < h.loss[0] and np.isfinite(h.loss).all()
    acc = nn.accuracy(net, digits.X_test.reshape(-1, 1, 8, 8), digits.y_test)
    assert acc >= 0.93                                                   # measured 0.953 (4 epochs, 8 bits)
    layer = net.layers[0]
    assert not layer.training and np.all(layer.running_var > 0)


def test_folded_cnn_converts_to_integer_cnn(digits, trained_folded_cnn):
    net, _ = trained_folded_cnn
    X, Xt = digits.X_train.reshape(-1, 1, 8, 8), digits.X_test.reshape(-1, 1, 8, 8)
    before = [p.data.copy() for p in net.parameters()]
    icnn = intarith.integer_cnn(net, X, bits=8, per_channel=False)
    assert [l.kind for l in icnn.layers] == ["conv", "conv", "linear"]
    assert [l.relu for l in icnn.layers] == [True, True, False] and [l.pool for l in icnn.layers] == [2, 2, 0]
    for l, layer in zip(icnn.layers[:2], net.layers[::3]):
        w_fold, b_fold = layer.folded()
        p = uniform.params_from_data(w_fold, bits=8, symmetric=True, narrow_range=True)
        np.testing.assert_array_equal(l.weight_codes, uniform.quantize(w_fold, p))   # the trained FQ weights
        np.testing.assert_allclose(l.bias_codes * float(l.input_params.scale) * float(p.scale), b_fold,
                                   atol=float(l.input_params.scale) * float(p.scale))
    codes = icnn.forward(Xt)
    int_acc = float(np.mean(codes.argmax(axis=1) == digits.y_test))
    acc = nn.accuracy(net, Xt, digits.y_test)
    assert abs(int_acc - acc) <= 0.02                                    # only the activations are new
    assert all(np.array_equal(p.data, b) for p, b in zip(net.parameters(), before))
    assert not net.layers[0].training


def test_bad_input_and_inputs_untouched(rng):
    layer = qat.FoldedConv2dBN(2, 3, 3, rng=0)
    x = rng.normal(size=(2, 2, 5, 5)).astype(np.float32)
    x.setflags(write=False)
    y = layer(x)
    g = np.ones_like(y)
    g.setflags(write=False)
    layer.backward(g)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2, H, W\), got \(2, 3, 5, 5\)"):
        layer(np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        layer(np.zeros((2, 2, 2, 5), np.float32))
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        layer(np.zeros((1, 2, 3, 3), np.float32))                       # one example, one output pixel
    layer(np.zeros((1, 2, 4, 3), np.float32))                           # one example, two output pixels: fine
    with pytest.raises(TypeError, match="x must"):
        layer(np.zeros((2, 2, 5, 5), np.int32))
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\], got 1"):
        qat.FoldedConv2dBN(2, 3, 3, bits=1)
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\], got 0"):
        qat.FoldedConv2dBN(2, 3, 3, momentum=0)
    with pytest.raises(ValueError, match="eps must be"):
        qat.FoldedConv2dBN(2, 3, 3, eps=0)
    with pytest.raises(ValueError, match="kernel_size must be a positive integer"):
        qat.FoldedConv2dBN(2, 3, 0)
    assert "stride=1, padding=0, bits=8" in repr(layer)


def test_backward_rejects_a_grad_of_the_wrong_shape(rng):
    # regression: grad_out of the right size but the wrong shape was reshaped silently (here
    # (1, 3, 6, 6) has the 36 rows of a (4, 2, 5, 5) input with a 3x3 kernel, no padding)
    layer = qat.FoldedConv2dBN(2, 3, 3, rng=0)
    y = layer(rng.normal(size=(4, 2, 5, 5)).astype(np.float32))
    assert y.shape == (4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"grad_out must have the shape \(4, 3, 3, 3\)"):
        layer.backward(np.ones((1, 3, 6, 6), np.float32))
    lin = qat.FoldedLinearBN(4, 3, rng=0)
    lin(rng.normal(size=(5, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"grad_out must have the shape \(5, 3\)"):
        lin.backward(np.ones((3, 5), np.float32))
