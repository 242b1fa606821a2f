"""Integer-only inference of a small CNN (qref.intarith.integer_cnn) against independent calculations.

The integer network is held equal, code for code within one, to its fake-quantized float
simulation at every layer output (chained through the whole network, and layer by layer on
the same input codes). The first convolution is recomputed from the definition with Python
integers (explicit loops over the kernel, the gemmlowp primitives written independently),
batch-norm folding against the textbook formula, and max pooling on codes against
qref.nn.MaxPool2d on the dequantized values.
"""

import dataclasses

import numpy as np
import pytest

from qref import intarith as I
from qref import nn
from qref import uniform as U
from qref.data import load_digits

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def srdhm_ref(a, b):
    """SaturatingRoundingDoublingHighMul on Python ints: (ab + nudge) / 2**31 truncated toward zero."""
    if a == b == INT32_MIN:
        return INT32_MAX
    v = a * b + (2**30 if a * b >= 0 else 1 - 2**30)
    q = abs(v) // 2**31
    return q if v >= 0 else -q


def rdbpot_ref(x, e):
    """x / 2**e rounded to nearest, ties away from zero, on Python ints."""
    q, r = divmod(abs(x), 2**e)
    if e > 0 and 2 * r >= 2**e:
        q += 1
    return q if x >= 0 else -q


@pytest.fixture(scope="module")
def trained():
    d = load_digits()
    X, Xt = d.X_train.reshape(-1, 1, 8, 8), d.X_test.reshape(-1, 1, 8, 8)
    net = nn.small_cnn(rng=0)
    nn.fit(net, X, d.y_train, epochs=3, batch_size=64, optimizer=nn.Adam(net.parameters(), lr=1e-2),
           progress=False, rng=0)
    return d, X, Xt, net, I.integer_cnn(net, X)


def _max_code_diff(icnn, codes, values):
    return [int(np.abs(c.astype(np.int64) - icnn.codes_of(l - 1, v)).max()) for l, (c, v) in
            enumerate(zip(codes, values))]


def test_integer_cnn_structure_and_quantization_choices(trained):
    _, _, _, net, icnn = trained
    assert [l.kind for l in icnn.layers] == ["conv", "conv", "linear"]
    assert [l.relu for l in icnn.layers] == [True, True, False]
    assert [l.pool for l in icnn.layers] == [2, 2, 0]
    assert icnn.input_shape == (1, 8, 8)
    for layer, out in zip(icnn.layers, (16, 32, 10)):
        assert layer.weight_codes.dtype == np.int8 and layer.weight_codes.shape[0] == out
        assert np.abs(layer.weight_codes).max() == 127  # narrow range, every channel reaches its max
        assert (np.abs(layer.weight_codes).reshape(out, -1).max(axis=1) == 127).all()  # per channel
        assert np.shape(layer.weight_params.scale) == (out,) and not np.any(layer.weight_params.zero_point)
        assert layer.bias_codes.dtype == np.int32 and layer.bias_codes.shape == (out,)
        assert ((2**30 <= layer.multiplier) & (layer.multiplier <= INT32_MAX)).all() and (layer.shift >= 0).all()
        for p in (layer.input_params, layer.output_params):
            assert p.bits == 8 and p.signed and p.axis is None
    for a, b in zip(icnn.layers[:-1], icnn.layers[1:]):
        assert a.output_params is b.input_params
    # post-ReLU ranges [0, max] put the zero point at the lowest code
    assert int(icnn.layers[0].output_params.zero_point) == -128


def test_multipliers_are_the_scale_ratios(trained):
    icnn = trained[-1]
    for layer in icnn.layers:
        M = float(layer.input_params.scale) * np.asarray(layer.weight_params.scale) / float(layer.output_params.scale)
        approx = layer.multiplier * 2.0**-31 * 2.0 ** -layer.shift.astype(float)
        np.testing.assert_allclose(approx, M, rtol=2.0**-30)


def test_forward_equals_simulation_within_one_code_at_every_layer(trained):
    d, X, Xt, _, icnn = trained
    for XX in (Xt, X[:600]):
        q, codes = icnn.forward(XX, return_codes=True)
        logits, values = icnn.simulate(XX, return_values=True)
        assert q.dtype == np.int8 and all(c.dtype == np.int8 for c in codes)
        assert [c.shape for c in codes] == [v.shape for v in values]
        assert [c.shape[1:] for c in codes] == [(1, 8, 8), (16, 4, 4), (32, 2, 2), (10,)]
        np.testing.assert_array_equal(q, codes[-1])
        np.testing.assert_array_equal(logits, values[-1])
        # chained through the network: every layer output within one code
        diffs = _max_code_diff(icnn, codes, values)
        assert diffs[0] == 0 and max(diffs) <= 1, diffs
        # the simulation's values lie on the grid of their codes
        p = icnn.layers[-1].output_params
        np.testing.assert_allclose(logits, (icnn.codes_of(2, logits) - int(p.zero_point)) * float(p.scale),
                                   rtol=0, atol=1e-12)
        # layer by layer, on the same integer input: within one code, and mostly equal
        for l, layer in enumerate(icnn.layers):
            a = U.dequantize(codes[l], layer.input_params, dtype=np.float64)
            sim = icnn.codes_of(l, icnn.layer_simulate(l, a))
            got = icnn.layer_forward(l, codes[l]).astype(np.int64)
            np.testing.assert_array_equal(got, codes[l + 1])
            assert np.abs(got - sim).max() <= 1
            assert np.mean(got != sim) < 0.05
    # the fused ReLU: hidden codes never go below the zero point
    for l in (0, 1):
        assert codes[l + 1].min() >= int(icnn.layers[l].output_params.zero_point)


def test_first_convolution_from_the_definition_with_python_ints(trained):
    _, _, Xt, _, icnn = trained
    X = Xt[:3]
    layer = icnn.layers[0]
    _, codes = icnn.forward(X, return_codes=True)
    q0 = U.quantize(X, layer.input_params).astype(np.int64)
    np.testing.assert_array_equal(codes[0], q0)
    z_in, z_out = int(layer.input_params.zero_point), int(layer.output_params.zero_point)
    w = layer.weight_codes.astype(np.int64)  # (16, 1, 3, 3)
    out = np.empty((3, 16, 8, 8), dtype=np.int64)
    for n in range(3):
        for o in range(16):
            for i in range(8):
                for j in range(8):
                    acc = int(layer.bias_codes[o])
                    for u in range(3):
                        for v in range(3):
                            r, c = i + u - 1, j + v - 1  # padding 1: outside is real 0, i.e. q - Z = 0
                            if 0 <= r < 8 and 0 <= c < 8:
                                acc += (int(q0[n, 0, r, c]) - z_in) * int(w[o, 0, u, v])
                    y = z_out + rdbpot_ref(srdhm_ref(acc, int(layer.multiplier[o])), int(layer.shift[o]))
                    out[n, o, i, j] = min(max(y, z_out), 127)  # ReLU clamp
    pooled = out.reshape(3, 16, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(codes[1], pooled)


def test_batch_norm_is_folded_and_weights_quantized_per_channel(trained):
    _, _, _, net, icnn = trained
    pairs = ((icnn.layers[0], net.layers[0], net.layers[1]), (icnn.layers[1], net.layers[4], net.layers[5]))
    for layer, conv, bn in pairs:
        k = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
        w_fold = conv.weight.data * k[:, None, None, None]
        b_fold = bn.bias.data + k * (conv.bias.data - bn.running_mean)
        s_w = np.asarray(layer.weight_params.scale)
        w_hat = layer.weight_codes * s_w[:, None, None, None]
        assert (np.abs(w_hat - w_fold) <= s_w[:, None, None, None] * (0.5 + 1e-6)).all()
        np.testing.assert_allclose(s_w, np.abs(w_fold).reshape(len(k), -1).max(axis=1) / 127, rtol=1e-6)
        s_b = float(layer.input_params.scale) * s_w
        assert (np.abs(layer.bias_codes * s_b - b_fold) <= s_b * (0.5 + 1e-6)).all()


def test_max_pool_on_codes_is_exact(trained):
    _, _, Xt, _, icnn = trained
    _, codes = icnn.forward(Xt[:40], return_codes=True)
    for l in (0, 1):
        layer = icnn.layers[l]
        pre = I.IntegerCNN((dataclasses.replace(layer, pool=0),), icnn.input_shape).layer_forward(0, codes[l])
        p = layer.output_params
        pooled_values = nn.MaxPool2d(2)(U.dequantize(pre, p, dtype=np.float64))
        np.testing.assert_array_equal(U.dequantize(codes[l + 1], p, dtype=np.float64), pooled_values)


def test_accuracy_float_fake_quantized_integer(trained):
    d, _, Xt, net, icnn = trained
    acc_float = nn.accuracy(net, Xt, d.y_test)
    acc_int = float(np.mean(icnn.forward(Xt).argmax(axis=1) == d.y_test))
    acc_sim = float(np.mean(icnn.simulate(Xt).argmax(axis=1) == d.y_test))
    assert acc_float > 0.9
    assert abs(acc_int - acc_float) <= 0.01 and abs(acc_sim - acc_int) <= 0.005, (acc_float, acc_sim, acc_int)


def test_per_tensor_weights_and_lower_bits(trained):
    d, X, Xt, net, _ = trained
    for kwargs in ({"per_channel": False}, {"bits": 6}):
        icnn = I.integer_cnn(net, X, **kwargs)
        if "per_channel" in kwargs:
            assert all(np.ndim(l.weight_params.scale) == 0 for l in icnn.layers)
            assert all(len(set(l.shift.tolist())) <= 2 for l in icnn.layers)
        q, codes = icnn.forward(Xt, return_codes=True)
        _, values = icnn.simulate(Xt, return_values=True)
        assert max(_max_code_diff(icnn, codes, values)) <= 1
        if kwargs.get("bits") == 6:
            assert all(c.min() >= -32 and c.max() <= 31 for c in codes)
            assert np.abs(icnn.layers[0].weight_codes).max() == 31
        assert np.mean(q.argmax(axis=1) == d.y_test) > 0.85


def test_an_mlp_converts_too():
    d = load_digits()
    net = nn.mlp((32,), rng=1)
    nn.fit(net, d.X_train, d.y_train, epochs=2, optimizer=nn.Adam(net.parameters(), lr=1e-2), progress=False)
    icnn = I.integer_cnn(net, d.X_train)
    assert [l.kind for l in icnn.layers] == ["linear", "linear"]
    q, codes = icnn.forward(d.X_test, return_codes=True)
    _, values = icnn.simulate(d.X_test, return_values=True)
    assert max(_max_code_diff(icnn, codes, values)) <= 1


def test_inputs_are_not_modified(trained):
    _, X, Xt, net, _ = trained
    net.train()
    before = [p.data.copy() for p in net.parameters()]
    stats = [(m.running_mean.copy(), m.running_var.copy()) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    X0, Xt0 = X.copy(), Xt.copy()
    icnn = I.integer_cnn(net, X)
    icnn.forward(Xt)
    icnn.simulate(Xt)
    assert all(m.training for m in net.modules())
    net.eval()
    for p, b in zip(net.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    for m, (mu, var) in zip([m for m in net.modules() if isinstance(m, nn.BatchNorm2d)], stats):
        np.testing.assert_array_equal(m.running_mean, mu)
        np.testing.assert_array_equal(m.running_var, var)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Xt, Xt0)


def test_bad_input(trained):
    _, X, Xt, net, icnn = trained
    with pytest.raises(ValueError, match=r"bits must be in \[2, 8\]"):
        I.integer_cnn(net, X, bits=9)
    with pytest.raises(TypeError, match="X_calib must have a floating dtype"):
        I.integer_cnn(net, (X * 16).astype(np.int64))
    with pytest.raises(ValueError, match=r"X_calib must have shape \(n, 1, H, W\)"):
        I.integer_cnn(net, X.reshape(-1, 64))
    with pytest.raises(TypeError, match="per_channel must be"):
        I.integer_cnn(net, X, per_channel="yes")
    with pytest.raises(TypeError, match="model must be a qref.nn.Sequential"):
        I.integer_cnn(net.layers[0], X)
    with pytest.raises(TypeError, match=r"model.layers\[1\] \(AvgPool2d\) is not supported"):
        I.integer_cnn(nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(18, 3)), X)
    with pytest.raises(TypeError, match="must end with a Linear layer without ReLU"):
        I.integer_cnn(nn.Sequential(nn.Linear(64, 3), nn.ReLU()), X.reshape(-1, 64))
    with pytest.raises(ValueError, match="has a weight_quantizer"):
        I.integer_cnn(nn.small_cnn(weight_quantizer=lambda i: nn.FakeQuantize(8)), X)
    with pytest.raises(ValueError, match=r"X must have shape \(n, 1, 8, 8\)"):
        icnn.forward(Xt.reshape(-1, 64))
    with pytest.raises(ValueError, match="X must be finite"):
        icnn.simulate(np.full((1, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"l must be a layer index in \[0, 2\]"):
        icnn.layer_forward(3, np.zeros((1, 1, 8, 8), np.int8))
    with pytest.raises(TypeError, match="codes must be an int8 array"):
        icnn.layer_forward(0, np.zeros((1, 1, 8, 8), np.int32))
    # an output range far below S_in * S_w: the multiplier would need a left shift
    lin = nn.Linear(2, 1, rng=0)
    lin.weight.data[:] = [[1.0, -1.0]]
    lin.bias.data[:] = 1e-6
    with pytest.raises(ValueError, match=r"layer 0, output channel 0: M must be a real multiplier in \(0, 1\)"):
        I.integer_cnn(nn.Sequential(lin), np.array([[0.0, 0.0], [1.0, 1.0]], np.float32))
