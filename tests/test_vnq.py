"""Variational Network Quantization (qref.vnq): KL approximations, reparameterization gradients, training."""

import copy
import math

import numpy as np
import pytest
from scipy import integrate, stats

from qref import binary, nn
from qref import vnq as V


def _exact_kl_log_uniform(log_alpha):
    """-0.5 log alpha + E log|1 + sqrt(alpha) eps| + const, the constant making it 0 as alpha -> inf."""
    s = math.exp(0.5 * log_alpha)

    def f(e):
        return math.log(abs(1.0 + s * e)) * stats.norm.pdf(e)

    e = integrate.quad(f, -np.inf, -1 / s, limit=200)[0] + integrate.quad(f, -1 / s, np.inf, limit=200)[0]
    return -0.5 * log_alpha + e + 0.5 * (np.euler_gamma + math.log(2.0))


def test_molchanov_constants_and_limits():
    assert (V.K1, V.K2, V.K3) == (0.63576, 1.87320, 1.48695)
    # as alpha -> inf the exact KL (up to a constant) tends to -E log|eps| = (gamma + log 2) / 2: that is k1
    assert abs(V.K1 - 0.5 * (np.euler_gamma + math.log(2.0))) < 1e-3
    assert V.kl_log_uniform(1.0, 40.0) == pytest.approx(0.0, abs=1e-9)
    # alpha -> 0: -0.5 log alpha + k1
    assert V.kl_log_uniform(1.0, -30.0) == pytest.approx(15.0 + V.K1, abs=1e-6)


def test_kl_log_uniform_matches_numerical_integration():
    las = np.linspace(-10, 10, 21)
    approx = V.kl_log_uniform(np.ones_like(las), las)              # theta = 1: log alpha = log sigma^2
    exact = np.array([_exact_kl_log_uniform(la) for la in las])
    err = np.abs(approx - exact)
    assert err.max() < 0.012                                          # 0.0094 on a finer grid (at log alpha = -3.5)
    assert np.all(np.diff(approx) < 0)                                # the prior rewards noise
    # depends on alpha only
    assert np.allclose(V.kl_log_uniform([0.1, 3.0], [math.log(0.01) + 1, math.log(9.0) + 1]),
                       V.kl_log_uniform(1.0, 1.0))


def test_kl_reference_is_unbiased_monte_carlo():
    las = np.array([-6.0, -2.0, 0.0, 3.0])
    mc = V.kl_reference(np.ones(4), las, n_samples=400_000, rng=0)
    exact = np.array([_exact_kl_log_uniform(la) for la in las]) + (V.K1 - 0.5 * (np.euler_gamma + math.log(2.0)))
    assert np.abs(mc - exact).max() < 0.01


def test_quantizing_prior_reduces_to_log_uniform_far_from_the_codewords():
    theta = np.array([0.45, 0.7, -1.5, 4.0])          # a = 0.1: the windows have width 0.0375 around +-0.1
    ls = np.array([-3.0, -5.0, -2.0, 0.0])
    assert np.allclose(V.kl_quantizing_prior(theta, ls, a=0.1), V.kl_log_uniform(theta, ls), atol=1e-6)
    # near a codeword: the log-uniform spike centred there
    assert V.kl_quantizing_prior(0.2, -8.0, a=0.2) == pytest.approx(V.kl_log_uniform(1e-9, -8.0), abs=1e-6)


def test_quantizing_prior_scales_with_the_codebook():
    # D_KL(q || p_{c_a}) ~ F_KL(theta / s, sigma / s, c_r), s = a / r (Sec. 3.3): doubling a, theta, sigma changes nothing
    theta = np.linspace(-0.5, 0.5, 21)
    ls = np.full(21, -6.0)
    assert np.allclose(V.kl_quantizing_prior(theta, ls, a=0.2), V.kl_quantizing_prior(2 * theta, ls + 2 * math.log(2), a=0.4))


def test_quantizing_prior_against_monte_carlo():
    # the paper: largest deviation 1.07 from a Monte-Carlo ground truth over the range it uses
    theta = np.linspace(-0.4, 0.4, 33)
    dev = []
    for ls in (-8.0, -6.0, -4.0, -3.0):
        t, s = theta, np.full_like(theta, ls)
        ref = V.kl_reference(t, s, codebook=(-0.2, 0.0, 0.2), n_samples=40_000, rng=1)
        dev.append(np.abs(V.kl_quantizing_prior(t, s, a=0.2) - ref).max())
    assert max(dev) < 1.2, dev


def test_kl_gradient_matches_numerical_gradient():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-0.6, 0.6, 200)
    ls = rng.uniform(-9, 0, 200)
    theta0, ls0 = theta.copy(), ls.copy()
    for a in (0.2, 0.35):
        _, dt, dl = V.kl_quantizing_prior_grad(theta, ls, a=a)
        assert np.array_equal(theta, theta0) and np.array_equal(ls, ls0)          # inputs untouched
        h = 1e-6
        num_t = (V.kl_quantizing_prior(theta + h, ls, a=a) - V.kl_quantizing_prior(theta - h, ls, a=a)) / (2 * h)
        num_l = (V.kl_quantizing_prior(theta, ls + h, a=a) - V.kl_quantizing_prior(theta, ls - h, a=a)) / (2 * h)
        assert np.allclose(dt, num_t, rtol=1e-4, atol=1e-4)
        assert np.allclose(dl, num_l, rtol=1e-4, atol=1e-6)


def _layer64(seed=0, training=True):
    layer = V.VNQLinear(5, 3, a=0.3, rng=seed, log_sigma2=-2.0).astype(np.float64)
    layer.log_sigma2.data[...] = np.random.default_rng(seed + 1).uniform(-4, -1, (3, 5))
    return layer.train(training)


def test_reparameterization_gradient_matches_numerical_gradient():
    # fix the noise by re-seeding the layer's generator before every forward pass
    layer = _layer64()
    x = np.random.default_rng(5).normal(size=(4, 5))
    r = np.random.default_rng(6).normal(size=(4, 3))

    def loss():
        layer.rng = np.random.default_rng(42)
        return float((layer(x) * r).sum())

    loss()
    layer.zero_grad()
    dx = layer.backward(r)
    for p in (layer.weight, layer.log_sigma2, layer.bias):
        num = np.zeros_like(p.data)
        for idx in np.ndindex(p.data.shape):
            old = p.data[idx]
            p.data[idx] = old + 1e-6
            up = loss()
            p.data[idx] = old - 1e-6
            down = loss()
            p.data[idx] = old
            num[idx] = (up - down) / 2e-6
        assert np.allclose(p.grad, num, rtol=1e-5, atol=1e-7), p.name
    num_x = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + 1e-6
        up = loss()
        x[idx] = old - 1e-6
        down = loss()
        x[idx] = old
        num_x[idx] = (up - down) / 2e-6
    assert np.allclose(dx, num_x, rtol=1e-5, atol=1e-7)


def test_local_reparameterization_has_the_right_distribution():
    # y = x theta^T + b + noise with variance x^2 sigma^2^T: the sampled pre-activations match weight sampling
    layer = V.VNQLinear(4, 2, a=0.3, rng=0, log_sigma2=-1.0).astype(np.float64)
    x = np.tile(np.array([[1.0, -2.0, 0.5, 0.0]]), (100_000, 1))
    y = layer(x)
    w = layer.weight.data[None] + np.exp(0.5 * layer.log_sigma2.data)[None] * np.random.default_rng(1).normal(size=(100_000, 2, 4))
    y_w = np.einsum("nij,nj->ni", w, x) + layer.bias.data
    assert np.allclose(y.mean(axis=0), y_w.mean(axis=0), atol=0.03)
    assert np.allclose(y.var(axis=0), y_w.var(axis=0), rtol=0.03)


def test_eval_mode_is_deterministic_and_gradchecks():
    layer = _layer64(training=False)
    x = np.random.default_rng(3).normal(size=(6, 5))
    assert np.array_equal(layer(x), layer(x))
    assert np.allclose(layer(x), x @ layer.weight.data.T + layer.bias.data)
    assert nn.gradcheck(layer, x)
    layer.eval_weights = "quantized"
    assert np.allclose(layer(x), x @ layer.quantized_weight().T + layer.bias.data)
    layer.eval_weights = "median"
    with pytest.raises(ValueError, match="eval_weights"):
        layer(x)


def test_kl_backward_adds_the_scaled_gradient():
    layer = _layer64()
    layer.zero_grad()
    layer.kl_backward(0.25)
    _, dt, dl = V.kl_quantizing_prior_grad(layer.weight.data, layer.log_sigma2.data, a=layer.a)
    assert np.allclose(layer.weight.grad, 0.25 * dt) and np.allclose(layer.log_sigma2.grad, 0.25 * dl)
    assert layer.kl() == pytest.approx(V.kl_quantizing_prior(layer.weight.data, layer.log_sigma2.data, a=0.3).sum())


def test_clip_holds_variances_and_means_in_range():
    layer = V.VNQLinear(3, 2, a=0.3, rng=0)
    layer.log_sigma2.data[...] = [[-12.0, 0.0, 3.0], [-4.0, -4.0, -4.0]]
    layer.weight.data[...] = [[0.9, -0.9, 0.1], [0.3, 0.31, -5.0]]
    w0 = layer.weight.data.copy()
    layer.clip_()
    assert np.array_equal(layer.log_sigma2.data, np.float32([[-10, 0, 1], [-4, -4, -4]]))
    edge = 0.3 + math.exp(-1.5) * np.exp(0.5 * layer.log_sigma2.data)        # log alpha = 3 w.r.t. +-a
    assert np.allclose(layer.weight.data, np.clip(w0, -edge, edge))
    assert layer.weight.data[0, 2] == np.float32(0.1) and layer.weight.data[1, 0] == np.float32(0.3)
    la = np.log(np.exp(layer.log_sigma2.data[0, :2]) / (np.abs(layer.weight.data[0, :2]) - 0.3) ** 2)
    assert np.allclose(la, 3.0, atol=1e-4)


def test_vnq_quantize_prunes_and_rounds():
    theta = np.array([0.31, -0.29, 0.14, 0.16, -0.01, 0.5, 0.3], np.float32)
    ls = np.array([-8, -8, -8, -8, -8, 1.0, 1.0], np.float32)
    q = V.vnq_quantize(theta, ls, a=0.3)
    assert q.dtype == np.float32
    # log alpha = 1 - log 0.25 = 2.39 < 3 for 0.5 (kept), 1 - log 0.09 = 3.41 for 0.3 (pruned)
    assert np.allclose(q, [0.3, -0.3, 0.0, 0.3, 0.0, 0.3, 0.0])
    assert np.allclose(V.vnq_quantize(theta, ls, a=0.3, log_threshold=10.0), [0.3, -0.3, 0, 0.3, 0, 0.3, 0.3])


def test_to_vnq_copies_and_does_not_modify(trained_mlp):
    before = [p.data.copy() for p in trained_mlp.parameters()]
    v = V.to_vnq(trained_mlp)
    layers = V.vnq_layers(v)
    assert len(layers) == 2
    for layer, lin in zip(layers, (trained_mlp.layers[0], trained_mlp.layers[2])):
        assert np.array_equal(layer.weight.data, lin.weight.data)
        assert np.array_equal(layer.bias.data, lin.bias.data)
        assert layer.a == pytest.approx(float(binary.ternarize_twn(lin.weight.data.astype(np.float64))[1].ravel()[0]))
        assert np.all(layer.log_sigma2.data == -8.0)
    for b, p in zip(before, trained_mlp.parameters()):
        assert np.array_equal(b, p.data)
    assert [lay.a for lay in V.vnq_layers(V.to_vnq(trained_mlp, a=[0.1, 0.2]))] == [0.1, 0.2]


def test_training_gives_sparse_ternary_weights(trained_mlp, digits):
    v = V.to_vnq(trained_mlp)
    h = V.train_vnq(v, digits.X_train, digits.y_train, epochs=12, lr=3e-3, warmup_epochs=4, batch_size=32, rng=0)
    assert len(h.kl) == 12 and h.kl[-1] < h.kl[0]
    for layer in V.vnq_layers(v):
        wq = layer.quantized_weight()
        assert set(np.unique(wq).tolist()) <= {-np.float32(layer.a), 0.0, np.float32(layer.a)}
        assert 0.3 < np.mean(wq == 0) < 0.8                                  # sparse, but not empty
        assert layer.log_sigma2.data.min() >= -10 and layer.log_sigma2.data.max() <= 1
        # the means were pulled toward the codewords
        dist = np.min(np.abs(layer.weight.data[..., None] - np.array([-layer.a, 0, layer.a])), axis=-1)
        w0 = {0: trained_mlp.layers[0], 1: trained_mlp.layers[2]}[V.vnq_layers(v).index(layer)].weight.data
        dist0 = np.min(np.abs(w0[..., None] - np.array([-layer.a, 0, layer.a])), axis=-1)
        assert dist.mean() < 0.5 * dist0.mean()
    for layer in V.vnq_layers(v):
        layer.eval_weights = "quantized"
    acc_q = nn.accuracy(v, digits.X_test, digits.y_test)
    # better than ternarizing the float network after training (TWN, the same codebooks)
    twn = copy.deepcopy(trained_mlp)
    for lin in (twn.layers[0], twn.layers[2]):
        c, a, _ = binary.ternarize_twn(lin.weight.data.astype(np.float64))
        lin.weight.data[...] = c * a
    assert acc_q > nn.accuracy(twn, digits.X_test, digits.y_test) + 0.03 and acc_q > 0.95
    for layer in V.vnq_layers(v):
        layer.eval_weights = "mean"
    assert abs(nn.accuracy(v, digits.X_test, digits.y_test) - acc_q) < 0.015     # rounding costs little
    # reproducible
    runs = [V.to_vnq(trained_mlp, rng=3) for _ in range(2)]
    for run in runs:
        V.train_vnq(run, digits.X_train[:300], digits.y_train[:300], epochs=2, rng=1)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(runs[0].parameters(), runs[1].parameters()))


def test_bad_input():
    with pytest.raises(ValueError, match="a must"):
        V.kl_quantizing_prior(0.1, -3.0, a=0.0)
    with pytest.raises(ValueError, match="broadcast"):
        V.kl_log_uniform(np.ones(3), np.ones(2))
    with pytest.raises(ValueError):
        V.kl_log_uniform([np.nan], [0.0])
    with pytest.raises(ValueError, match="shape"):
        V.vnq_quantize(np.ones(3), np.ones((2, 3)), a=0.1)
    with pytest.raises(ValueError, match="x must"):
        V.VNQLinear(3, 2, a=0.1)(np.ones((2, 4)))
    with pytest.raises(TypeError):
        V.to_vnq(V.VNQLinear(3, 2, a=0.1))
    with pytest.raises(ValueError, match="VNQLinear"):
        V.train_vnq(nn.mlp((4,)), np.ones((3, 64), np.float32), np.zeros(3, int), epochs=1)
    with pytest.raises(ValueError, match="weight quantizer"):
        V.to_vnq(nn.mlp((4,), weight_quantizer=lambda i: nn.FakeQuantize(4)))
    with pytest.raises(ValueError, match="n_samples"):
        V.kl_reference(0.1, -3.0, n_samples=0)


def test_kl_warm_up_schedule_is_as_documented(digits):
    # the KL weight of epoch e is kl_scale * min(1, (e + 1) / warmup_epochs) / N: 1/W in the first epoch
    v = V.to_vnq(nn.mlp((8,), rng=0))
    X, y = digits.X_train[:40], digits.y_train[:40]
    seen = []
    for layer in V.vnq_layers(v):
        original = layer.kl_backward
        layer.kl_backward = lambda scale, f=original: (seen.append(scale), f(scale))
    V.train_vnq(v, X, y, epochs=4, warmup_epochs=3, batch_size=40, kl_scale=0.5, rng=0)
    per_epoch = seen[::2]                                                  # two layers, one step per epoch
    np.testing.assert_allclose(per_epoch, [0.5 * b / 40 for b in (1 / 3, 2 / 3, 1.0, 1.0)], rtol=1e-12)


def test_to_vnq_names_a_on_a_bad_length():
    # regression: a list of the wrong length raised numpy's broadcast error, which did not name a
    with pytest.raises(ValueError, match="a must be None, a float or 2 floats"):
        V.to_vnq(nn.mlp((8,), rng=0), a=[0.1, 0.2, 0.3])


def test_noise_does_not_replay_the_initialisation():
    # regression: with an int seed the noise generator restarted the stream of the He initialisation,
    # so the first noise draws were the initial weights divided by their standard deviation
    layer = V.VNQLinear(3, 2, a=0.3, rng=0, bias=False)
    layer(np.eye(3, dtype=np.float32)[:2])
    replay = np.random.default_rng(0).standard_normal(4)                 # the draws behind the weights
    assert np.allclose(layer.weight.data.ravel()[:4] / replay, layer.weight.data.ravel()[0] / replay[0])
    assert not np.allclose(layer._eps.ravel(), replay, atol=1e-3)
    again = V.VNQLinear(3, 2, a=0.3, rng=0, bias=False)                  # still reproducible
    again(np.eye(3, dtype=np.float32)[:2])
    assert np.array_equal(layer._eps, again._eps) and np.array_equal(layer.weight.data, again.weight.data)
    gen = np.random.default_rng(0)
    shared = V.VNQLinear(3, 2, a=0.3, rng=gen, bias=False)              # a Generator is used, not copied
    assert shared.rng is gen


def test_kl_reference_needs_an_antithetic_pair():
    # regression: n_samples is documented as >= 2, but 1 was accepted (and silently drew 2)
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 2, got 1"):
        V.kl_reference(0.1, -3.0, n_samples=1)
    assert np.isfinite(V.kl_reference(0.1, -3.0, n_samples=2, rng=0)).all()
