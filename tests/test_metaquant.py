"""MetaQuant (qref.metaquant): the meta network's backward, the meta-gradient, the STE reduction.

* The meta network's backward against central differences, for its parameters and its two inputs.
* The meta-gradient of :class:`MetaQuantSGD` against central differences of the *next* loss as a
  function of the meta network's parameters (with an identity quantizer, where the chain rule is exact),
  and, for the constant output ``c``, against its closed form -lr * <STE gradient_t, gradient_{t-1}>.
* With the identity meta network and ``meta_lr=0``, MetaQuant is SGD with the straight-through
  estimator bit for bit; seeded runs repeat exactly.
"""

import copy

import numpy as np
import pytest

from qref import binary, data, metaquant as MQ, nn, qat


def _bwn(w):
    b, alpha = binary.binarize_bwn(w)
    return (alpha * b).astype(w.dtype)


def _meta64(rng, hidden=5, unit=0.1):
    meta = MQ.MetaNetwork(hidden, grad_unit=unit, rng=rng).astype(np.float64)
    r = np.random.default_rng(rng)
    for p in meta.parameters():
        p.data[...] = r.normal(size=p.data.shape)
    return meta


# ---- the meta network -----------------------------------------------------------------------


def test_meta_network_identity_at_init_and_forward_formula(rng):
    meta = MQ.MetaNetwork(7, grad_unit=0.01, rng=0)
    g = rng.normal(scale=0.01, size=(5, 3)).astype(np.float32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    assert np.array_equal(meta(g, w), g)                     # v = c = 0: exactly the STE
    meta = _meta64(1, hidden=4, unit=0.01)
    A, a, v, c = (p.data for p in meta.parameters())
    out = meta(g.astype(np.float64), w.astype(np.float64))
    for i in range(5):                                       # coordinate by coordinate
        for j in range(3):
            u = np.array([g[i, j] / 0.01, w[i, j]])
            f = v @ np.tanh(A @ u + a) + c
            assert np.isclose(out[i, j], g[i, j] * (1 + f), rtol=1e-12)


def test_meta_network_backward_matches_central_differences(rng):
    meta = _meta64(2)
    g = rng.normal(scale=0.1, size=(4, 3))
    w = rng.normal(size=(4, 3))
    r = rng.normal(size=(4, 3))

    def loss(_):
        return float((meta(g, w) * r).sum())

    meta.zero_grad()
    meta(g, w)
    d_g, d_w = meta.backward(r)
    for p in meta.parameters():
        num = nn.numerical_gradient(loss, p.data, eps=1e-6)
        assert np.allclose(p.grad, num, rtol=1e-6, atol=1e-9), p.name
    assert np.allclose(d_g, nn.numerical_gradient(loss, g, eps=1e-6), rtol=1e-6, atol=1e-9)
    assert np.allclose(d_w, nn.numerical_gradient(loss, w, eps=1e-6), rtol=1e-6, atol=1e-9)


def test_meta_network_backward_accumulates_and_inputs_untouched(rng):
    meta = _meta64(3)
    g, w = rng.normal(size=6), rng.normal(size=6)
    g.setflags(write=False)
    w.setflags(write=False)
    meta(g, w)
    meta.backward(np.ones(6))
    once = meta.v.grad.copy()
    meta.backward(np.ones(6))
    assert np.allclose(meta.v.grad, 2 * once) and np.abs(once).sum() > 0


def test_meta_network_bad_input():
    meta = MQ.MetaNetwork(3)
    with pytest.raises(ValueError, match="same shape"):
        meta(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="hidden"):
        MQ.MetaNetwork(0)
    with pytest.raises(ValueError, match="grad_unit"):
        MQ.MetaNetwork(3, grad_unit=0.0)
    with pytest.raises(ValueError, match="g"):
        meta(np.array([np.nan]), np.zeros(1))
    meta(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="grad_out"):
        meta.backward(np.zeros(4))


# ---- the trainer ----------------------------------------------------------------------------


def _nets(quantizer, seed=0, hidden=(16,)):
    ste = nn.mlp(hidden, rng=seed, weight_quantizer=lambda i: qat.STEQuantizer(quantizer))
    meta = nn.mlp(hidden, rng=seed, weight_quantizer=lambda i: MQ.MetaQuantWeight(qat.STEQuantizer(quantizer)))
    return ste, meta


def test_identity_meta_network_is_the_straight_through_estimator():
    d = data.load_digits()
    X, y = d.X_train[:300], d.y_train[:300]
    ste, mq = _nets(_bwn)
    h1 = nn.fit(ste, X, y, epochs=2, optimizer=nn.SGD(ste.parameters(), lr=0.05, momentum=0.9),
                progress=False, rng=3, batch_size=32)
    opt = MQ.MetaQuantSGD(mq, MQ.MetaNetwork(8, rng=0), lr=0.05, momentum=0.9, meta_lr=0.0)
    h2 = nn.fit(mq, X, y, epochs=2, optimizer=opt, progress=False, rng=3, batch_size=32)
    for p, q in zip(ste.parameters(), mq.parameters()):
        assert np.array_equal(p.data, q.data)                # bit for bit
    assert h1.loss == h2.loss and opt.meta_steps == 0


def test_meta_gradient_matches_central_differences_of_the_next_loss(rng):
    """d loss^t / d phi with W^t = W^{t-1} - lr * M_phi(g^{t-1}, W^{t-1}) (identity quantizer: exact)."""
    X = rng.random((12, 64))
    y = np.arange(12) % 10
    ident = lambda w: w  # noqa: E731
    net = nn.mlp((6,), rng=0, weight_quantizer=lambda i: MQ.MetaQuantWeight(qat.STEQuantizer(ident))).astype(np.float64)
    meta = _meta64(4, hidden=3, unit=0.05)
    meta.v.data *= 0.3
    lr = 0.5
    opt = MQ.MetaQuantSGD(net, meta, lr=lr, meta_lr=1e-12)  # a tiny meta step: phi (practically) unchanged
    loss = nn.SoftmaxCrossEntropy()
    nn.backprop(net, X, y, loss)
    before = copy.deepcopy(net)                               # W^{t-1} and g^{t-1} recorded in it
    opt.step()                                                # W^t = W^{t-1} - lr * M_phi(...)
    nn.backprop(net, X, y, loss)
    phi = [p.data.copy() for p in meta.parameters()]
    opt.step()                                                # meta.backward: grads in meta's .grad
    analytic = [p.grad.copy() for p in meta.parameters()]
    for p, v in zip(meta.parameters(), phi):
        p.data[...] = v                                       # undo the (1e-12) meta step

    def next_loss(_):
        m = copy.deepcopy(before)
        grads = [lay.weight_quantizer.grad_q for lay in m.layers if isinstance(lay, nn.Linear)]
        for lay, g in zip([lay for lay in m.layers if isinstance(lay, nn.Linear)], grads):
            lay.weight.data = lay.weight.data - lr * meta(g, lay.weight.data)
            lay.bias.data = lay.bias.data - lr * lay.bias.grad
        return loss.forward(m(X), y)

    for p, a in zip(meta.parameters(), analytic):
        num = nn.numerical_gradient(next_loss, p.data, eps=1e-6)
        assert np.allclose(a, num, rtol=1e-5, atol=1e-9), p.name


def test_constant_output_gradient_is_a_hypergradient(rng):
    """With v = 0, dL/dc = -lr * sum_i STE(g^t)_i g^{t-1}_i (Baydin et al. 2018's hypergradient)."""
    d = data.load_digits()
    X, y = d.X_train[:64], d.y_train[:64]
    net = nn.mlp((16,), rng=1, weight_quantizer=lambda i: MQ.MetaQuantWeight(qat.STEQuantizer(_bwn)))
    meta = MQ.MetaNetwork(4, rng=0)
    opt = MQ.MetaQuantSGD(net, meta, lr=0.1, meta_lr=1e-3)
    loss = nn.SoftmaxCrossEntropy()
    lins = [lay for lay in net.layers if isinstance(lay, nn.Linear)]
    nn.backprop(net, X[:32], y[:32], loss)
    g_prev = [lay.weight_quantizer.grad_q.astype(np.float64) for lay in lins]
    opt.step()
    nn.backprop(net, X[32:], y[32:], loss)
    ste_now = [lay.weight.grad.astype(np.float64) for lay in lins]
    opt.step()
    expected = -0.1 * sum(float((a * b).sum()) for a, b in zip(ste_now, g_prev))
    assert abs(expected) > 1e-6
    assert np.isclose(float(meta.c.grad), expected, rtol=1e-4)
    assert opt.meta_steps == 1


def test_metaquant_trains_and_is_reproducible():
    d = data.load_digits()
    accs, params = [], []
    for seed in (0, 0, 1):
        _, net = _nets(_bwn, seed=seed, hidden=(64,))
        opt = MQ.MetaQuantSGD(net, MQ.MetaNetwork(8, rng=seed), lr=0.05, momentum=0.9)
        nn.fit(net, d.X_train, d.y_train, epochs=4, optimizer=opt, progress=False, rng=seed)
        accs.append(nn.accuracy(net, d.X_test, d.y_test))
        params.append(np.concatenate([p.data.ravel() for p in net.parameters()] +
                                     [p.data.ravel() for p in opt.meta.parameters()]))
    assert accs[0] > 0.8                                      # 1-bit weights, 4 epochs
    assert np.array_equal(params[0], params[1]) and accs[0] == accs[1]
    assert not np.array_equal(params[0], params[2])
    assert opt.meta_steps > 0 and float(opt.meta.c.data) != 0.0   # the meta network did learn


def test_trainer_bad_input():
    net = nn.mlp((4,), rng=0)
    meta = MQ.MetaNetwork(2)
    with pytest.raises(ValueError, match="MetaQuantWeight"):
        MQ.MetaQuantSGD(net, meta, lr=0.1)
    _, net = _nets(np.sign, hidden=(4,))
    with pytest.raises(TypeError, match="meta"):
        MQ.MetaQuantSGD(net, object(), lr=0.1)
    with pytest.raises(TypeError, match="model"):
        MQ.MetaQuantSGD(object(), meta, lr=0.1)
    with pytest.raises(ValueError, match="meta_lr"):
        MQ.MetaQuantSGD(net, meta, lr=0.1, meta_lr=-1.0)
    with pytest.raises(ValueError, match="lr"):
        MQ.MetaQuantSGD(net, meta, lr=0.0)
    with pytest.raises(RuntimeError, match="backward"):
        MQ.MetaQuantSGD(net, meta, lr=0.1).step()
    with pytest.raises(TypeError, match="quantizer"):
        MQ.MetaQuantWeight(np.sign)
