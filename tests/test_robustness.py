"""Feature quantization against image distortion (qref.robustness, Sun et al. 2018).

* ``moments`` against ``scipy.stats`` and against closed forms of known distributions; the
  invariance of skewness and kurtosis under affine maps and under batch normalization (the
  paper's argument that normalization cannot undo a higher-moment shift).
* The distortions: shape, dtype and range kept, reproducible with a seed, input never modified,
  severity 0 is the identity, and each against an independent computation (scipy.ndimage for
  the blur, the expected replaced fraction for salt-and-pepper, ...).
* The three layers: exact forward values; backward passes (dL/dx and dL/dalpha, dL/dW, dL/dc)
  against central differences; the straight-through backward of the floor.
* Bad input: each raises a ValueError or TypeError naming the argument.
"""

import copy

import numpy as np
import pytest
from hypothesis import given, strategies as st

from qref import nn, robustness as R

scipy_stats = pytest.importorskip("scipy.stats")


# ---- moments --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, axis", [((200,), 0), ((300, 5), 0), ((4, 250), 1), ((50, 3, 4), 0), ((3, 60, 2), -2)])
def test_moments_match_scipy(rng, shape, axis):
    x = rng.gamma(2.0, size=shape).astype(np.float32)
    x_before = x.copy()
    m = R.moments(x, axis=axis)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(m.mean, x64.mean(axis=axis), rtol=1e-12)
    np.testing.assert_allclose(m.std, x64.std(axis=axis), rtol=1e-10)
    np.testing.assert_allclose(m.skewness, scipy_stats.skew(x64, axis=axis), rtol=1e-9)
    np.testing.assert_allclose(m.kurtosis, scipy_stats.kurtosis(x64, axis=axis), rtol=1e-9)
    assert np.array_equal(x, x_before)
    if len(shape) == 1:
        assert all(isinstance(v, float) for v in m)


def test_moments_closed_forms_of_known_distributions(rng):
    n = 400_000
    cases = {   # (skewness, excess kurtosis)
        "normal": (rng.normal(size=n), 0.0, 0.0),
        "uniform": (rng.random(n), 0.0, -1.2),
        "exponential": (rng.exponential(size=n), 2.0, 6.0),
        "laplace": (rng.laplace(size=n), 0.0, 3.0),
    }
    for name, (x, skew, kurt) in cases.items():
        m = R.moments(x)
        assert abs(m.skewness - skew) < 0.05 + 0.02 * abs(skew), name
        assert abs(m.kurtosis - kurt) < 0.05 + 0.1 * abs(kurt), name
    # a two-point distribution, exactly: P(1) = p, P(0) = 1 - p
    p = 0.25
    x = np.array([0.0, 0.0, 0.0, 1.0])
    m = R.moments(x)
    q = 1 - p
    assert np.isclose(m.mean, p) and np.isclose(m.std, np.sqrt(p * q))
    assert np.isclose(m.skewness, (q - p) / np.sqrt(p * q))
    assert np.isclose(m.kurtosis, (1 - 6 * p * q) / (p * q))


def test_moments_of_constant_features_are_nan_like_scipy():
    x = np.array([[1.0, 0.1, 0.0], [2.0, 0.1, 0.0], [4.0, 0.1, 0.0]])
    m = R.moments(x)
    assert np.all(np.isnan(m.skewness[1:])) and np.all(np.isnan(m.kurtosis[1:]))
    assert np.all(m.std[1:] == 0) and np.isfinite(m.skewness[0])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert np.isnan(scipy_stats.skew(x[:, 1]))       # scipy agrees (and warns)


@given(st.floats(0.01, 100), st.floats(-50, 50))
def test_skewness_and_kurtosis_are_affine_invariant(a, b):
    x = np.random.default_rng(3).gamma(1.5, size=(500, 4))
    m, ma = R.moments(x), R.moments(a * x + b)
    np.testing.assert_allclose(ma.skewness, m.skewness, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ma.kurtosis, m.kurtosis, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ma.std, a * m.std, rtol=1e-9)


def test_batch_norm_removes_mean_and_std_shift_but_not_higher_moments(rng):
    clean = rng.gamma(2.0, size=(2000, 6)).astype(np.float32)
    distorted = (clean + rng.exponential(0.7, size=clean.shape)).astype(np.float32)   # shape changes
    bn = nn.BatchNorm1d(6)                        # training mode: each batch's own statistics
    before = R.moment_shift(clean, distorted)
    after = R.moment_shift(bn(clean), bn(distorted))
    assert before.mean > 0.5 and before.skewness > 0.1 and before.kurtosis > 0.1
    assert after.mean < 1e-5 and after.std < 1e-3            # gone (std: eps of batch norm)
    assert np.isclose(after.skewness, before.skewness, rtol=1e-4)
    assert np.isclose(after.kurtosis, before.kurtosis, rtol=1e-4)


def test_moment_shift_averages_absolute_differences_over_defined_features(rng):
    a = rng.normal(size=(300, 3))
    b = rng.gamma(2.0, size=(200, 3))
    b[:, 2] = 5.0                                  # constant: skewness undefined, left out
    s = R.moment_shift(a, b)
    ma, mb = R.moments(a), R.moments(b)
    assert np.isclose(s.mean, np.mean(np.abs(mb.mean - ma.mean)))
    assert np.isclose(s.skewness, np.mean(np.abs(mb.skewness - ma.skewness)[:2]))
    assert np.isclose(s.kurtosis, np.mean(np.abs(mb.kurtosis - ma.kurtosis)[:2]))
    assert np.isnan(R.moment_shift(np.ones((5, 2)), np.ones((4, 2))).skewness)
    with pytest.raises(ValueError, match="same features"):
        R.moment_shift(a, b[:, :2])


# ---- hidden features ------------------------------------------------------------------------


def test_hidden_features_are_the_partial_forward_in_eval_mode_and_restore_mode(rng):
    net = R.feature_quantized_mlp((16,), rng=0)
    X = rng.random((7, 64)).astype(np.float32)
    nn.fit(net, X, np.arange(7) % 3, epochs=1, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    net.train()
    h = R.hidden_features(net, X, layer=2, batch_size=3)
    net.eval()
    expect = net.layers[2](net.layers[1](net.layers[0](X)))
    assert np.allclose(h, expect) and net.training is False
    net.train()
    R.hidden_features(net, X, layer=-1)
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="layer"):
        R.hidden_features(net, X, layer=5)
    with pytest.raises(TypeError, match="model"):
        R.hidden_features(net.layers[0], X, layer=0)


def test_renormalize_batch_norm_uses_the_statistics_of_the_new_data(rng):
    net = R.feature_quantized_mlp((8, 6), rng=0)
    X = rng.random((40, 64)).astype(np.float32)
    before = [p.data.copy() for p in net.parameters()]
    new = R.renormalize_batch_norm(net, X)
    assert all(np.array_equal(p.data, b) for p, b in zip(net.parameters(), before))
    assert np.all(net.layers[1].running_mean == 0) and new.training is False
    h, train_copy = X, copy.deepcopy(new).train()           # layer inputs as training mode computes them
    for layer, twin in zip(new.layers, train_copy.layers):
        if isinstance(layer, nn.BatchNorm1d):
            np.testing.assert_allclose(layer.running_mean, h.mean(axis=0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(layer.running_var, h.var(axis=0, ddof=1), rtol=1e-4, atol=1e-6)
            assert layer.momentum == 0.1
        h = twin(h)
    out = R.hidden_features(new, X, layer=1)                      # normalized on X: mean 0, std ~1
    assert np.allclose(out.mean(axis=0), 0, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        R.renormalize_batch_norm(net, X[:1])
    with pytest.raises(TypeError, match="model"):
        R.renormalize_batch_norm("net", X)


# ---- distortions ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", R.DISTORTIONS)
def test_distortions_keep_shape_dtype_range_and_repeat_with_a_seed(digits, kind):
    x = digits.X_test[:60]
    before = x.copy()
    y = R.distort(x, kind, severity=0.7, rng=5)
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0 and y.max() <= 1 and not np.array_equal(y, x)
    assert np.array_equal(y, R.distort(x, kind, severity=0.7, rng=5))
    assert np.array_equal(x, before)
    assert np.array_equal(R.distort(x, kind, severity=0.0, rng=5), x)
    y3 = R.distort(x.reshape(-1, 8, 8), kind, severity=0.7, rng=5)
    assert y3.shape == (60, 8, 8) and np.array_equal(y3.reshape(60, 64), y)
    y64 = R.distort(x.astype(np.float64), kind, severity=0.7, rng=5)
    assert y64.dtype == np.float64
    if kind in ("gaussian", "salt_pepper", "mixed"):
        assert not np.array_equal(y, R.distort(x, kind, severity=0.7, rng=6))


def test_gaussian_noise_has_the_requested_std(rng):
    x = np.full((400, 64), 0.5, np.float32)
    y = R.gaussian_noise(x, sigma=0.05, rng=rng)
    assert abs(float((y - x).std()) - 0.05) < 0.002 and abs(float((y - x).mean())) < 0.002
    z = R.gaussian_noise(x, sigma=3.0, rng=rng)                  # clipped at the pixel range
    assert set(np.unique(np.round(z, 6))) >= {0.0, 1.0} and z.min() == 0 and z.max() == 1


def test_salt_and_pepper_replaces_the_expected_fraction(rng):
    x = np.full((500, 64), 0.5, np.float32)
    y = R.salt_and_pepper(x, amount=0.3, rng=rng)
    assert set(np.unique(y).tolist()) == {0.0, 0.5, 1.0}
    assert abs(np.mean(y == 0) - 0.15) < 0.01 and abs(np.mean(y == 1) - 0.15) < 0.01
    assert np.all(R.salt_and_pepper(x, amount=1.0, rng=0) != 0.5)


def test_motion_blur_is_a_row_box_filter_like_scipy(digits):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = digits.X_test[:20].reshape(-1, 8, 8).astype(np.float64)
    for length in (1, 3, 5, 7):
        expect = ndimage.uniform_filter1d(x, size=length, axis=-1, mode="nearest")
        np.testing.assert_allclose(R.motion_blur(x, length=length), expect, atol=1e-12)
    const = np.full((2, 64), 0.3, np.float32)
    assert np.allclose(R.motion_blur(const, length=5), 0.3)


def test_contrast_scales_about_each_images_mean():
    x = np.random.default_rng(0).uniform(0.3, 0.7, size=(5, 64))
    y = R.contrast(x, factor=0.5)
    np.testing.assert_allclose(y.mean(axis=1), x.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(y.std(axis=1), 0.5 * x.std(axis=1), rtol=1e-12)
    np.testing.assert_allclose(R.contrast(x, factor=0.0), np.repeat(x.mean(axis=1, keepdims=True), 64, 1))


def test_mixed_gives_each_image_one_of_the_four_distortions(digits):
    x = digits.X_test[:200]
    y = R.mixed(x, severity=0.5, rng=0)
    blur = R.distort(x, "motion_blur", severity=0.5)
    low = R.distort(x, "contrast", severity=0.5)
    frac_blur = np.mean(np.all(y == blur, axis=1))
    frac_contrast = np.mean(np.all(y == low, axis=1))
    assert 0.15 < frac_blur < 0.35 and 0.15 < frac_contrast < 0.35


# ---- the layers -----------------------------------------------------------------------------


def test_floor_quantize_exact_values_and_straight_through_backward():
    fq = R.FloorQuantize(4.0)
    x = np.array([-0.3, -0.25, 0.0, 0.1, 0.2499, 0.25, 0.74, 1.0], np.float32)
    before = x.copy()
    y = fq(x)
    assert y.dtype == np.float32
    assert np.array_equal(y, np.array([-0.5, -0.25, 0.0, 0.0, 0.0, 0.25, 0.5, 1.0], np.float32))
    g = np.arange(8, dtype=np.float32)
    assert np.array_equal(fq.backward(g), g) and np.array_equal(x, before)
    x64 = np.random.default_rng(0).normal(size=1000)
    for s in (0.5, 3.0, 100.0):
        y = R.FloorQuantize(s)(x64)
        assert y.dtype == np.float64 and np.all((x64 - y >= 0) & (x64 - y < 1 / s))
        assert np.allclose(y * s, np.round(y * s))                      # on the grid k/s
    assert R.FloorQuantize(2.0)(np.ones((2, 3, 4, 4), np.float32)).shape == (2, 3, 4, 4)


def test_power_activation_forward_values():
    p = R.PowerActivation(0.5)
    x = np.array([4.0, 0.25, 0.0, -9.0], np.float32)
    assert np.allclose(p(x), [2.0, 0.5, 0.0, -3.0]) and p(x).dtype == np.float32
    x64 = np.random.default_rng(1).normal(size=(6, 3))
    assert np.array_equal(R.PowerActivation(1.0)(x64), x64)
    q = R.PowerActivation(2.0, num_features=3)
    q.alpha.data[:] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(q(x64), np.sign(x64) * np.abs(x64) ** np.array([1.0, 2.0, 3.0]), rtol=1e-6)


@pytest.mark.parametrize("num_features, shape", [(None, (5, 4)), (4, (5, 4)), (3, (2, 3, 2, 2))])
def test_power_activation_gradients_match_central_differences(num_features, shape):
    r = np.random.default_rng(7)
    x = r.uniform(0.2, 2.0, size=shape) * r.choice([-1.0, 1.0], size=shape)    # away from 0
    p = R.PowerActivation(0.7, num_features=num_features)
    p.alpha.data[...] = r.uniform(0.4, 1.6, size=p.alpha.data.shape)
    assert nn.gradcheck(p, x)


def test_power_activation_alpha_gradient_closed_form():
    p = R.PowerActivation(0.5).astype(np.float64)
    x = np.array([4.0, 0.25, 0.0, -9.0])
    y = p(x)
    p.backward(np.ones(4))
    expect = sum(yi * np.log(abs(xi)) for xi, yi in zip(x, y) if xi != 0)
    assert np.isclose(float(p.alpha.grad), expect)
    assert np.allclose(p.backward(np.ones(4)), [0.25, 1.0, 0.0, 0.5 / 3])


def test_power_activation_frozen_or_learned_and_positive_alpha(rng):
    x = rng.uniform(0.1, 2, size=(32, 4)).astype(np.float32)
    for learnable in (True, False):
        p = R.PowerActivation(0.8, num_features=4, learnable=learnable)
        opt = nn.Adam(p.parameters(), lr=0.05)
        p(x)
        p.backward(np.ones_like(x))
        opt.step()
        assert np.array_equal(p.alpha.data, np.full(4, 0.8, np.float32)) != learnable
    p = R.PowerActivation(0.8)
    p.alpha.data[...] = -0.1
    with pytest.raises(ValueError, match="alpha must stay"):
        p(x)


def test_data_dependent_power_gradients_match_central_differences():
    r = np.random.default_rng(11)
    h = R.DataDependentPower(4, alpha=0.8, alpha_min=0.2)
    h.weight.data[...] = r.normal(scale=0.3, size=(4, 4))
    h.bias.data[...] += r.normal(scale=0.3, size=4).astype(np.float32)
    x = r.uniform(0.3, 1.5, size=(6, 4)) * r.choice([-1.0, 1.0], size=(6, 4))
    assert nn.gradcheck(h, x)


def test_data_dependent_power_starts_as_fixed_power_and_respects_alpha_min(rng):
    x = rng.uniform(0, 3, size=(10, 5))
    h = R.DataDependentPower(5, alpha=1.0, alpha_min=0.1).astype(np.float64)
    np.testing.assert_allclose(h(x), x, rtol=1e-6)
    np.testing.assert_allclose(h.last_alpha, 1.0, rtol=1e-6)
    h.bias.data[...] = -50.0                                   # softplus -> 0: alpha -> alpha_min
    h(x)
    assert np.all(h.last_alpha >= 0.1) and np.allclose(h.last_alpha, 0.1)
    h.bias.data[...] = 0.0
    h.weight.data[...] = 0.0
    h.weight.data[0, 1] = 1.0                                  # alpha_0 grows with feature 1
    h(x)
    np.testing.assert_allclose(h.last_alpha[:, 0], 0.1 + np.logaddexp(0, x[:, 1]))
    np.testing.assert_allclose(h.last_alpha[:, 1], 0.1 + np.log(2))


def test_layers_do_not_modify_inputs_and_keep_float32(rng):
    x = rng.uniform(0, 2, size=(8, 6)).astype(np.float32)
    g = rng.normal(size=(8, 6)).astype(np.float32)
    for layer in (R.FloorQuantize(3.0), R.PowerActivation(0.6, num_features=6), R.DataDependentPower(6, alpha=0.6)):
        xb, gb = x.copy(), g.copy()
        y = layer(x)
        dx = layer.backward(g)
        assert y.dtype == np.float32 and dx.dtype == np.float32 and y.shape == dx.shape == x.shape
        assert np.array_equal(x, xb) and np.array_equal(g, gb)


def test_feature_quantized_mlp_layouts_same_init_and_training(digits):
    nets = {nl: R.feature_quantized_mlp((32,), nonlinearity=nl, rng=3) for nl in R.NONLINEARITIES}
    types = {nl: [type(m).__name__ for m in net.layers] for nl, net in nets.items()}
    assert types["none"] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert types["floor"][3] == "FloorQuantize" and types["power"][3] == "PowerActivation"
    assert types["hpow"][3] == "DataDependentPower"
    assert [m.__class__.__name__ for m in R.feature_quantized_mlp((8, 8), batch_norm=False).layers] == \
        ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    for nl, net in nets.items():                  # the same initial weights for every variant
        assert all(np.array_equal(net.layers[i].weight.data, nets["none"].layers[i].weight.data) for i in (0, -1))
    for nl, net in nets.items():
        nn.fit(net, digits.X_train, digits.y_train, epochs=3, optimizer=nn.Adam(net.parameters(), lr=3e-3),
               progress=False)
        assert nn.accuracy(net, digits.X_test, digits.y_test) > 0.85, nl


def test_seeded_training_repeats_exactly(digits):
    def train():
        net = R.feature_quantized_mlp((16,), nonlinearity="hpow", rng=0)
        nn.fit(net, digits.X_train[:300], digits.y_train[:300], epochs=2,
               optimizer=nn.Adam(net.parameters(), lr=3e-3), rng=0, progress=False)
        return net
    a, b = train(), train()
    assert all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters()))


# ---- bad input ------------------------------------------------------------------------------


def _img():
    return np.full((2, 64), 0.5, np.float32)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: R.gaussian_noise(np.array([[np.nan] * 64], np.float32), sigma=0.1), ValueError, "images must be finite"),
    (lambda: R.gaussian_noise(np.full((2, 64), 1.5, np.float32), sigma=0.1), ValueError, r"images must have pixels in \[0, 1\]"),
    (lambda: R.gaussian_noise(np.zeros((2, 64), np.int64), sigma=0.1), TypeError, "images must have a floating dtype"),
    (lambda: R.gaussian_noise(np.zeros((2, 63), np.float32), sigma=0.1), ValueError, "images must have shape"),
    (lambda: R.gaussian_noise(np.float32(0.5), sigma=0.1), ValueError, "images must have at least one dimension"),
    (lambda: R.gaussian_noise(_img(), sigma=-0.1), ValueError, "sigma must be >= 0"),
    (lambda: R.gaussian_noise(_img(), sigma=0.1, image_shape=(8,)), TypeError, "image_shape"),
    (lambda: R.gaussian_noise(_img(), sigma=0.1, rng="a"), TypeError, "rng"),
    (lambda: R.salt_and_pepper(_img(), amount=1.5), ValueError, "amount"),
    (lambda: R.motion_blur(_img(), length=4), ValueError, "length must be an odd"),
    (lambda: R.motion_blur(_img(), length=2.0), TypeError, "length"),
    (lambda: R.contrast(_img(), factor=-1.0), ValueError, "factor must be >= 0"),
    (lambda: R.distort(_img(), "fog", severity=0.5), ValueError, "kind must be one of"),
    (lambda: R.distort(_img(), "gaussian", severity=1.5), ValueError, "severity"),
    (lambda: R.mixed(_img(), severity=-0.1), ValueError, "severity"),
    (lambda: R.moments(np.array([])), ValueError, "x must not be empty"),
    (lambda: R.moments(np.float64(1.0)), ValueError, "x must have at least one dimension"),
    (lambda: R.moments(np.array([1.0, np.nan])), ValueError, "x must be finite"),
    (lambda: R.moments(np.array([1, 2, 3])), TypeError, "x must have a floating dtype"),
    (lambda: R.moments(np.ones((3, 2)), axis=2), ValueError, "axis"),
    (lambda: R.moment_shift(np.ones((3, 2)), np.array([[np.inf, 1.0]])), ValueError, "distorted must be finite"),
    (lambda: R.FloorQuantize(0.0), ValueError, "resolution must be finite and > 0"),
    (lambda: R.FloorQuantize("4"), TypeError, "resolution"),
    (lambda: R.FloorQuantize(2.0)(np.array([np.nan])), ValueError, "x must be finite"),
    (lambda: R.PowerActivation(0.0), ValueError, "alpha must be finite and > 0"),
    (lambda: R.PowerActivation(1.0, num_features=0), ValueError, "num_features"),
    (lambda: R.PowerActivation(1.0, learnable="yes"), TypeError, "learnable"),
    (lambda: R.PowerActivation(1.0, num_features=3)(np.ones((2, 4))), ValueError, "3 features"),
    (lambda: R.DataDependentPower(4, alpha=0.1, alpha_min=0.2), ValueError, "alpha must be > alpha_min"),
    (lambda: R.DataDependentPower(4, alpha_min=0.0), ValueError, "alpha_min"),
    (lambda: R.DataDependentPower(4)(np.ones((2, 3))), ValueError, r"x must have shape \(n, 4\)"),
    (lambda: R.DataDependentPower(4)(np.ones((2, 4), np.int32)), TypeError, "x must have a floating dtype"),
    (lambda: R.feature_quantized_mlp(nonlinearity="relu"), ValueError, "nonlinearity must be one of"),
    (lambda: R.feature_quantized_mlp(resolution=0), ValueError, "resolution"),
    (lambda: R.feature_quantized_mlp(batch_norm=1), TypeError, "batch_norm"),
])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("layer", [R.FloorQuantize(2.0), R.PowerActivation(0.5), R.DataDependentPower(3)])
def test_backward_before_forward_or_with_wrong_shape_raises(layer):
    fresh = copy.deepcopy(layer)
    with pytest.raises(RuntimeError, match="before forward"):
        fresh.backward(np.ones((2, 3), np.float32))
    fresh(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="grad_out must have the shape"):
        fresh.backward(np.ones((3, 3), np.float32))
