"""ELQ as reconstructed in qref.inq (loss_perturbation, elq_quantize, elq_scores, elq_step,
elq_quantization): Taylor estimates against exact quadratics, the ternary fit against TWN's
exact least squares and against brute force, the incremental step's bookkeeping, and bad input."""

import itertools
import math

import numpy as np
import pytest

from qref import binary, inq, nn


def _ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _J(w, g, c, t, a):
    d = a * t - w
    return float(np.sum(g * d + 0.5 * c * d * d))


# --------------------------------------------------------------------------------------
# loss_perturbation
# --------------------------------------------------------------------------------------


def test_loss_perturbation_exact_for_a_quadratic_loss(rng):
    # L(w) = b.w + 1/2 sum h w^2 is its own second-order Taylor model
    b, h = rng.normal(size=20), rng.uniform(0.1, 2, size=20)
    loss = lambda v: float(b @ v + 0.5 * np.sum(h * v * v))
    w, wq = rng.normal(size=20), rng.normal(size=20)
    g = b + h * w
    assert inq.loss_perturbation(_ro(w), _ro(wq), _ro(g), hessian_diag=_ro(h)) == pytest.approx(loss(wq) - loss(w))
    first = inq.loss_perturbation(w, wq, g)
    assert first == pytest.approx(float(g @ (wq - w)))
    assert first != pytest.approx(loss(wq) - loss(w))


def test_first_order_estimate_is_tangent_to_the_network_loss(digits):
    net = nn.mlp((16,), rng=0)
    nn.fit(net, digits.X_train, digits.y_train, epochs=3, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    ce = nn.SoftmaxCrossEntropy()
    layer = net.layers[0]
    w0 = layer.weight.data.copy()
    nn.backprop(net, digits.X_train, digits.y_train, ce)
    g = layer.weight.grad.astype(np.float64).copy()
    t, a = inq.elq_quantize(w0, g)
    d = a * t - w0
    errs = []
    for eps in (1e-2, 1e-3):
        layer.weight.data[...] = w0 + eps * d
        actual = ce.forward(net(digits.X_train), digits.y_train)
        layer.weight.data[...] = w0
        base = ce.forward(net(digits.X_train), digits.y_train)
        est = inq.loss_perturbation(w0, w0 + eps * d, g)
        errs.append(abs(actual - base - est))
    assert errs[1] < errs[0] / 20                                        # the remainder is O(eps^2)


# --------------------------------------------------------------------------------------
# elq_quantize
# --------------------------------------------------------------------------------------


def test_without_gradient_equals_exact_twn_and_bwn(rng):
    for _ in range(100):
        w = rng.normal(size=int(rng.integers(2, 300))) * rng.uniform(0.05, 3)
        t, a = inq.elq_quantize(_ro(w))
        t2, a2, _ = binary.ternarize_twn(w, method="exact")
        np.testing.assert_array_equal(t, t2)
        assert a == pytest.approx(float(np.ravel(a2)[0]), rel=1e-12)
        tb, ab = inq.elq_quantize(w, ternary=False)
        np.testing.assert_array_equal(tb, np.where(w >= 0, 1, -1))
        assert ab == pytest.approx(np.abs(w).mean())


def test_global_optimum_against_brute_force(rng):
    for _ in range(40):
        n = int(rng.integers(1, 7))
        w, g = rng.normal(size=n), rng.normal(size=n) * 0.3
        h = rng.uniform(-0.5, 2, size=n)
        lam = 1.0
        c = h + lam
        t, a = inq.elq_quantize(w, g, hessian_diag=h, lam=lam)
        best = math.inf
        for codes in itertools.product((-1, 0, 1), repeat=n):
            tc = np.array(codes, float)
            den = float(np.sum(c * tc * tc))
            if den == 0:
                continue
            u = w - g / c
            ac = float(np.sum(c * tc * u)) / den                         # best scale for these codes
            if ac > 0:
                best = min(best, _J(w, g, c, tc, ac))
        assert _J(w, g, c, t, a) <= best + 1e-12
        tb, ab = inq.elq_quantize(w, g, hessian_diag=h, lam=lam, ternary=False)
        for codes in itertools.product((-1, 1), repeat=n):               # binary: brute force too
            tc = np.array(codes, float)
            u = w - g / c
            ac = float(np.sum(c * tc * u) / np.sum(c))
            if ac > 0:
                assert _J(w, g, c, tb, ab) <= _J(w, g, c, tc, ac) + 1e-12


def test_gradient_shifts_the_codes_and_fixed_alpha_rounds_per_weight(rng):
    w = np.array([0.9, 0.5, 0.1, -0.6, -0.05])
    t, a = inq.elq_quantize(w, np.array([0.0, 0.0, -0.3, 0.0, 0.0]))   # u_3 = 0.4: now kept
    assert t.tolist() == [1, 1, 1, -1, 0] and a == pytest.approx(0.6)
    # with alpha fixed, every code is the per-weight argmin of g d + c d^2 / 2
    w, g = rng.normal(size=200), rng.normal(size=200) * 0.5
    t, a = inq.elq_quantize(w, g, alpha=0.7, lam=2.0)
    assert a == 0.7
    cand = np.array([-1, 0, 1])
    d = 0.7 * cand[None, :] - w[:, None]
    np.testing.assert_array_equal(t, cand[np.argmin(g[:, None] * d + d * d, axis=1)])


def test_all_zero_and_dtype_and_shape(rng):
    t, a = inq.elq_quantize(np.zeros(5))
    assert t.tolist() == [0] * 5 and a == 1.0
    w = rng.normal(size=(3, 4)).astype(np.float32)
    t, a = inq.elq_quantize(w)
    assert t.shape == (3, 4) and t.dtype == np.int8 and isinstance(a, float)


def test_scores_sum_to_objective(rng):
    w, g = rng.normal(size=50), rng.normal(size=50) * 0.2
    t, a = inq.elq_quantize(w, g, lam=0.5)
    e, w_hat = inq.elq_scores(w, g, alpha=a, lam=0.5)
    np.testing.assert_array_equal(w_hat, a * t)
    assert e.sum() == pytest.approx(_J(w, g, np.full(50, 0.5), t, a))
    assert e.sum() == pytest.approx(inq.loss_perturbation(w, w_hat, g) + 0.25 * np.sum((w_hat - w) ** 2))


# --------------------------------------------------------------------------------------
# elq_step and elq_quantization
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", inq.ELQ_PARTITIONS)
def test_step_bookkeeping(rng, strategy):
    w = rng.normal(size=(6, 7)).astype(np.float32)
    g = rng.normal(size=w.shape) * 0.1
    frozen = np.zeros(w.shape, bool)
    frozen[0] = True
    w_in = w.copy()
    w_in[0] = 0.5
    w2, f2 = inq.elq_step(_ro(w_in), _ro(g), frozen=_ro(frozen), count=25, alpha=0.5, strategy=strategy)
    assert f2.sum() == 25 and np.all(f2[0]) and w2.dtype == np.float32
    np.testing.assert_array_equal(w2[~f2], w_in[~f2])                   # free weights untouched
    np.testing.assert_array_equal(w2[0], w_in[0])                       # earlier group untouched
    new = f2 & ~frozen
    assert np.isin(w2[new], np.float32([-0.5, 0, 0.5])).all()
    e, _ = inq.elq_scores(w_in, g, alpha=0.5)
    key = e if strategy == "loss" else -np.abs(w_in)
    assert key[new].max() <= key[~f2].min()                             # the chosen are the first in order


def test_elq_quantization_end_to_end(digits):
    net = nn.mlp((16,), rng=0)
    nn.fit(net, digits.X_train, digits.y_train, epochs=5, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    before = [p.data.copy() for p in net.parameters()]
    res = inq.elq_quantization(net, digits.X_train, digits.y_train, epochs=1, rng=0, X_val=digits.X_test,
                               y_val=digits.y_test)
    assert all(np.array_equal(b, p.data) for b, p in zip(before, net.parameters()))      # input untouched
    assert [s.portion for s in res.steps] == [0.5, 0.75, 0.875, 1.0]
    for layer, a in zip(inq.weight_layers(res.model), res.alphas):
        assert np.isin(layer.weight.data, np.float32([-a, 0.0, a])).all() and layer.weight.frozen.all()
        assert (layer.weight.data == 0).any()
    assert res.steps[-1].acc_quantized > 0.6 and res.acc_float > 0.75                 # far above chance (0.1)
    again = inq.elq_quantization(net, digits.X_train, digits.y_train, epochs=1, rng=0, X_val=digits.X_test,
                                 y_val=digits.y_test)
    assert again.steps[-1].acc_quantized == res.steps[-1].acc_quantized                  # reproducible
    binary_res = inq.elq_quantization(net, digits.X_train, digits.y_train, ternary=False, portions=(1.0,))
    for layer, a in zip(inq.weight_layers(binary_res.model), binary_res.alphas):
        assert set(np.unique(np.abs(layer.weight.data))) == {np.float32(a)}


def test_full_gradients_leave_batch_norm_statistics_alone(digits):
    # the loss-error gradient is taken in evaluation mode: running statistics are used, not
    # updated, and the result does not depend on the batch size
    net = nn.Sequential(nn.Linear(64, 16, rng=0), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10, rng=1))
    nn.fit(net, digits.X_train, digits.y_train, epochs=2, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    bn = net.layers[1]
    stats = bn.running_mean.copy(), bn.running_var.copy()
    layers = inq.weight_layers(net)
    X, y = digits.X_train[:300], digits.y_train[:300]
    g1 = inq._full_gradients(net.train(), layers, X, y, batch_size=64)
    assert net.training  # the mode is restored
    g2 = inq._full_gradients(net.eval(), layers, X, y, batch_size=300)
    assert not net.training
    assert np.array_equal(stats[0], bn.running_mean) and np.array_equal(stats[1], bn.running_var)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_input(rng):
    w = rng.normal(size=5)
    with pytest.raises(ValueError, match="grad"):
        inq.elq_quantize(w, np.ones(4))
    with pytest.raises(ValueError, match="lam"):
        inq.elq_quantize(w, lam=0.0)
    with pytest.raises(ValueError, match="hessian_diag"):
        inq.elq_quantize(w, hessian_diag=-2 * np.ones(5), lam=1.0)
    with pytest.raises(ValueError, match="hessian_diag"):
        inq.elq_quantize(w, hessian_diag=np.ones(3))
    with pytest.raises(ValueError, match="alpha"):
        inq.elq_quantize(w, alpha=0.0)
    with pytest.raises(TypeError, match="ternary"):
        inq.elq_quantize(w, ternary="yes")
    with pytest.raises(ValueError):
        inq.elq_quantize(np.array([np.nan, 1.0]))
    with pytest.raises(ValueError):
        inq.elq_quantize(np.array([]))
    with pytest.raises(ValueError, match="w_q"):
        inq.loss_perturbation(w, np.ones(3), w)
    with pytest.raises(ValueError, match="count"):
        inq.elq_step(w, frozen=np.ones(5, bool), count=2, alpha=1.0)
    with pytest.raises(ValueError, match="frozen"):
        inq.elq_step(w, frozen=np.ones(4, bool), count=5, alpha=1.0)
    with pytest.raises(ValueError, match="strategy"):
        inq.elq_step(w, frozen=np.zeros(5, bool), count=5, alpha=1.0, strategy="random")
    net = nn.mlp((4,), rng=0)
    X, y = rng.normal(size=(20, 64)).astype(np.float32), rng.integers(0, 10, size=20)
    with pytest.raises(ValueError, match="portions|1.0|schedule"):
        inq.elq_quantization(net, X, y, portions=(0.5,))
    with pytest.raises(ValueError, match="lam"):
        inq.elq_quantization(net, X, y, lam=-1.0)
    with pytest.raises(TypeError, match="ternary"):
        inq.elq_quantization(net, X, y, ternary=1)
    with pytest.raises(ValueError, match="together"):
        inq.elq_quantization(net, X, y, X_val=X)
    with pytest.raises(TypeError):
        inq.elq_quantization("net", X, y)


@pytest.mark.parametrize("lam", [np.nan, np.inf, -np.inf])
def test_lam_must_be_finite_with_a_hessian(lam, rng):
    # regression: with hessian_diag, lam skipped validation, and lam = inf gave alpha = NaN
    w = rng.normal(size=6)
    with pytest.raises(ValueError, match="lam must be finite"):
        inq.elq_quantize(w, rng.normal(size=6), lam=lam, hessian_diag=np.full(6, 2.0))
    with pytest.raises(TypeError, match="lam"):
        inq.elq_quantize(w, lam="1", hessian_diag=np.full(6, 2.0))
