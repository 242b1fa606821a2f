"""Tests for qref.mixed: HAWQ's Hessian traces, sensitivities and Pareto bit allocation; distillation.

Independent references used here:

* the exact Hessian diagonal of a ReLU MLP from :func:`qref.vq.mlp_hessian_diagonal` (a separate,
  closed-form computation), and central differences of back-propagated gradients (for a CNN with
  batch normalization and max pooling);
* the variance of Hutchinson's estimator, :math:`2\\sum_{i\\ne j} H_{ij}^2` for Rademacher vectors,
  which sets the tolerance of every Monte Carlo check (seeded);
* brute-force enumeration of all bit allocations;
* :class:`qref.qat.MinMaxFakeQuantize` for the weight quantizer;
* central differences of the distillation loss, :class:`qref.nn.SoftmaxCrossEntropy` for its
  hard-label part, and Hinton et al.'s high-temperature limit.
"""

import copy
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qref import mixed, nn, qat, vq


def _as_mlp(net):
    """The (weights, biases) view of a qref.nn MLP that qref.vq.mlp_hessian_diagonal expects."""
    lin = mixed.weight_layers(net)

    class M:
        weights = [m.weight.data.astype(np.float64) for m in lin]
        biases = [m.bias.data.astype(np.float64) for m in lin]

    return M


@pytest.fixture(scope="module")
def trained_mlp(digits):
    net = nn.mlp((12,), rng=0)
    nn.fit(net, digits.X_train, digits.y_train, epochs=3, optimizer=nn.Adam(net.parameters(), lr=0.01),
           progress=False, rng=0)
    return net


def _offdiag_var(H):
    """Exact variance of v^T H v for a Rademacher v (H symmetric): 2 sum_{i != j} H_ij^2."""
    return 2.0 * (np.sum(H**2) - np.sum(np.diag(H) ** 2))


# ---- Hessian-vector products ----------------------------------------------------------------

def test_hessian_diagonal_matches_exact_mlp_diagonal(trained_mlp, digits):
    X = digits.X_train[:400]
    H = mixed.LayerHessian(trained_mlp, X)
    D = vq.mlp_hessian_diagonal(_as_mlp(trained_mlp), X.astype(np.float64))
    M1 = H.matrix(1)                                             # 120 x 120
    assert np.allclose(np.diag(M1), D[1].ravel(), rtol=1e-10, atol=1e-14)
    assert np.allclose(M1, M1.T, atol=1e-14)
    assert np.linalg.eigvalsh(M1).min() > -1e-12                  # Gauss-Newton: PSD
    idx = np.random.default_rng(0).choice(H.sizes[0], 60, replace=False)
    e = np.eye(H.sizes[0])
    diag0 = [H.matvec(0, e[i])[i] for i in idx]
    assert np.allclose(diag0, D[0].ravel()[idx], rtol=1e-10, atol=1e-14)
    assert np.any(D[0].ravel()[idx] > 1e-4)                       # not a trivially zero comparison


def _fd_hessian(model, X, y, layer, eps=1e-6):
    """The layer's Hessian block by central differences of back-propagated gradients (float64, eval mode)."""
    m = copy.deepcopy(model).astype(np.float64).eval()
    w = mixed.weight_layers(m)[layer].weight
    loss = nn.SoftmaxCrossEntropy()

    def grad():
        loss.forward(m(X.astype(np.float64)), y)
        m.zero_grad()
        m.backward(loss.backward())
        return w.grad.ravel().copy()

    flat = w.data.reshape(-1)
    cols = []
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = grad()
        flat[i] = old - eps
        down = grad()
        flat[i] = old
        cols.append((up - down) / (2 * eps))
    return np.stack(cols, axis=1)


def test_hessian_block_matches_finite_differences_cnn(rng):
    net = nn.small_cnn(channels=(2, 3), rng=0)
    for m in net.modules():                                        # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = rng.normal(0, 0.3, m.num_features).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2, m.num_features).astype(np.float32)
            m.weight.data = rng.uniform(0.5, 1.5, m.num_features).astype(np.float32)
    X = rng.uniform(0, 1, size=(12, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 12)
    H = mixed.LayerHessian(net, X)
    for layer in (0, 2):                                           # conv (18 weights), linear (120)
        exact = H.matrix(layer)
        fd = _fd_hessian(net, X, y, layer)
        assert np.allclose(exact, fd, rtol=1e-5, atol=1e-8), np.abs(exact - fd).max()
        assert np.abs(exact).max() > 1e-3


def test_layer_hessian_leaves_model_alone(trained_mlp, digits):
    trained_mlp.train()
    before = [p.data.copy() for p in trained_mlp.parameters()]
    X = digits.X_train[:50].copy()
    X.setflags(write=False)
    H = mixed.LayerHessian(trained_mlp, X)
    v = np.ones(H.sizes[1])
    v.setflags(write=False)
    H.matvec(1, v)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, trained_mlp.parameters()))
    assert all(m.training for m in trained_mlp.modules())          # its copy was put in eval mode, not it
    assert all(p.data.dtype == np.float32 for p in trained_mlp.parameters())
    trained_mlp.eval()


# ---- Hutchinson's estimator -----------------------------------------------------------------

def test_hutchinson_exact_mean_and_variance_by_enumeration(rng):
    A = rng.normal(size=(6, 6))
    H = A + A.T
    terms = []
    for signs in itertools.product((-1.0, 1.0), repeat=6):
        v = np.array(signs)
        terms.append(v @ H @ v)
    terms = np.array(terms)
    assert np.isclose(terms.mean(), np.trace(H), rtol=1e-12)          # unbiased
    assert np.isclose(terms.var(), _offdiag_var(H), rtol=1e-12)       # Var = 2 sum_{i != j} H_ij^2


def test_hutchinson_sample_statistics(rng):
    A = rng.normal(size=(8, 8))
    H = A @ A.T
    m = 20000
    est, terms = mixed.hutchinson_trace(lambda v: H @ v, 8, n_samples=m, rng=0, return_samples=True)
    sd = np.sqrt(_offdiag_var(H) / m)
    assert abs(est - np.trace(H)) < 4 * sd
    assert abs(terms.var() / _offdiag_var(H) - 1) < 0.05
    assert est == mixed.hutchinson_trace(lambda v: H @ v, 8, n_samples=m, rng=0)     # reproducible
    assert mixed.hutchinson_trace(lambda v: np.diag(H) * v, 8, n_samples=3, rng=1) == pytest.approx(np.trace(H))


def test_layer_trace_is_hutchinson_on_matvec(trained_mlp, digits):
    H = mixed.LayerHessian(trained_mlp, digits.X_train[:100], blas_threads=None)
    a = H.trace(1, n_samples=7, rng=3, return_samples=True)
    b = mixed.hutchinson_trace(lambda v: H.matvec(1, v), int(H.sizes[1]), n_samples=7, rng=3, return_samples=True)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="blas_threads"):
        mixed.LayerHessian(trained_mlp, digits.X_train[:10], blas_threads=0)


def test_hessian_traces_converge_to_exact_trace(trained_mlp, digits):
    X = digits.X_train[:300]
    exact = [d.sum() for d in vq.mlp_hessian_diagonal(_as_mlp(trained_mlp), X.astype(np.float64))]
    H = mixed.LayerHessian(trained_mlp, X)
    m = 300
    est = mixed.hessian_traces(trained_mlp, X, n_samples=m, rng=0)
    for l in range(2):
        sd = np.sqrt(_offdiag_var(H.matrix(l)) / m)
        assert abs(est[l] - exact[l]) < 4 * sd, (l, est[l], exact[l], sd)
        assert sd < 0.1 * exact[l]                                   # and the tolerance is meaningful


# ---- sensitivity and allocation -------------------------------------------------------------

def test_quantize_weight_matches_minmax_fake_quantize(rng):
    w = rng.normal(size=(5, 7)).astype(np.float32)
    w.setflags(write=False)
    for bits in (2, 3, 4, 8):
        assert np.array_equal(mixed.quantize_weight(w, bits=bits), qat.MinMaxFakeQuantize(bits)(w))
    assert np.array_equal(mixed.quantize_weight(np.zeros(3), bits=4), np.zeros(3))
    q2 = mixed.quantize_weight(w, bits=2)
    assert set(np.unique(np.abs(q2)).tolist()) <= {0.0, float(np.abs(w).max())}


def test_sensitivities_formula(trained_mlp):
    bits = [2, 3, 5, 8]
    om = mixed.sensitivities(trained_mlp, [3.0, 0.5], bits)
    for l, m in enumerate(mixed.weight_layers(trained_mlp)):
        w = m.weight.data.astype(np.float64)
        for k, b in enumerate(bits):
            err = np.sum((qat.MinMaxFakeQuantize(b)(w) - w) ** 2)
            assert om[l, k] == pytest.approx([3.0, 0.5][l] / w.size * err, rel=1e-12)
    assert np.all(np.diff(om, axis=1) < 0)                     # more bits, less sensitivity (here)


def _brute(omega, sizes, options, budget):
    best = None
    for combo in itertools.product(range(len(options)), repeat=len(sizes)):
        cost = sum(n * options[k] for n, k in zip(sizes, combo))
        tot = sum(omega[l][k] for l, k in enumerate(combo))
        if cost <= budget and (best is None or tot < best[0]):
            best = (tot, combo)
    return best


@given(seed=st.integers(0, 2**32 - 1), L=st.integers(1, 4), K=st.integers(1, 4))
def test_allocation_equals_brute_force(seed, L, K):
    r = np.random.default_rng(seed)
    options = sorted(r.choice(np.arange(2, 9), K, replace=False).tolist())
    sizes = r.integers(1, 50, L)
    omega = r.exponential(size=(L, K))
    omega_ro = omega.copy()
    omega_ro.setflags(write=False)
    cost, total, bits = mixed.pareto_frontier(omega_ro, sizes, options)
    assert np.all(np.diff(cost) > 0) and np.all(np.diff(total) < 0)
    lo, hi = min(options) * sizes.sum(), max(options) * sizes.sum()
    for budget in np.linspace(lo, hi, 9):
        b = mixed.hawq_allocation(omega_ro, sizes, options, budget_bits=budget)
        assert np.sum(b * sizes) <= budget                                     # meets the budget
        tot = sum(omega[l][options.index(v)] for l, v in enumerate(b))
        assert tot == pytest.approx(_brute(omega, sizes, options, budget)[0], rel=1e-12, abs=1e-12)
    # every frontier point is optimal for its own size
    for c, t in zip(cost, total):
        assert t == pytest.approx(_brute(omega, sizes, options, c)[0], rel=1e-12, abs=1e-12)


def test_allocation_monotone_and_extremes():
    omega = np.array([[5.0, 1.0, 0.2], [3.0, 2.0, 0.1], [9.0, 0.5, 0.4]])
    sizes, options = [100, 10, 40], [2, 4, 8]
    prev = np.inf
    totals = []
    for budget in range(300, 1201, 20):
        b = mixed.hawq_allocation(omega, sizes, options, budget_bits=budget)
        t = sum(omega[l][options.index(v)] for l, v in enumerate(b))
        assert t <= prev
        prev = t
        totals.append(t)
    assert totals[0] > totals[-1]
    assert mixed.hawq_allocation(omega, sizes, options, budget_bits=300).tolist() == [2, 2, 2]
    assert mixed.hawq_allocation(omega, sizes, options, budget_bits=1200).tolist() == [8, 8, 8]
    # a small layer with a large sensitivity gets bits first
    assert mixed.hawq_allocation(omega, sizes, options, budget_bits=380).tolist() == [2, 2, 4]


def test_quantize_model_copies(trained_mlp, digits):
    before = [p.data.copy() for p in trained_mlp.parameters()]
    q = mixed.quantize_model(trained_mlp, [3, 8])
    assert all(np.array_equal(a, p.data) for a, p in zip(before, trained_mlp.parameters()))
    w0 = mixed.weight_layers(q)[0].weight.data
    assert np.unique(w0).size <= 7
    assert nn.accuracy(mixed.quantize_model(trained_mlp, [8, 8]), digits.X_test, digits.y_test) > 0.8


# ---- distillation ---------------------------------------------------------------------------

@pytest.mark.parametrize("T,alpha", [(1.0, 0.0), (1.0, 1.0), (3.0, 0.5), (20.0, 0.9)])
def test_distillation_gradient_matches_central_differences(rng, T, alpha):
    z = rng.normal(size=(5, 4)) * 3
    v = rng.normal(size=(5, 4)) * 3
    y = rng.integers(0, 4, 5)
    loss = mixed.DistillationLoss(temperature=T, alpha=alpha)
    loss(z, y, v)
    g = loss.backward()
    num = nn.numerical_gradient(lambda zz: loss.forward(zz, y, v), z.copy(), eps=1e-6)
    assert np.allclose(g, num, rtol=1e-6, atol=1e-9)


def test_distillation_loss_special_cases(rng):
    z = rng.normal(size=(6, 5)).astype(np.float32)
    v = rng.normal(size=(6, 5))
    y = rng.integers(0, 5, 6)
    for arr in (z, v, y):
        arr.setflags(write=False)                                   # inputs are never written
    ce = nn.SoftmaxCrossEntropy()
    hard = mixed.DistillationLoss(temperature=7.0, alpha=0.0)
    assert hard(z, y, v) == pytest.approx(ce(z, y), rel=1e-5)
    assert np.allclose(hard.backward(), ce.backward(), atol=1e-7)
    assert hard.backward().dtype == np.float32
    soft = mixed.DistillationLoss(temperature=3.0, alpha=1.0)
    assert soft(z, y, v) > 0
    assert soft(v, y, v) == pytest.approx(0.0, abs=1e-12)
    # soft term = T^2 KL(r || q), computed here from the definition
    r = mixed.softmax(v, temperature=3.0)
    q = mixed.softmax(z, temperature=3.0)
    assert soft(z, y, v) == pytest.approx(9.0 * np.sum(r * np.log(r / q)) / 6, rel=1e-6)


def test_high_temperature_limit():
    """Hinton et al. (2015), Sec. 2.1: with zero-mean logits, dC/dz_i -> (z_i - v_i) / (N T^2)."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1, 10))
    v = rng.normal(size=(1, 10))
    z -= z.mean()
    v -= v.mean()
    errs = []
    for T in (10.0, 100.0, 1000.0):
        loss = mixed.DistillationLoss(temperature=T, alpha=1.0)
        loss(z, np.array([0]), v)
        g = loss.backward() / T**2                     # drop the T^2 factor: Hinton's soft cross-entropy
        limit = (z - v) / (10 * T**2)
        errs.append(np.abs(g - limit).max() / np.abs(limit).max())
    assert errs[2] < 1e-3 and errs[0] > errs[1] > errs[2]
    assert errs[1] / errs[2] == pytest.approx(10, rel=0.05)        # the error is O(1/T)


def test_distill_alpha_zero_is_plain_training(digits):
    X, y = digits.X_train[:300], digits.y_train[:300]
    teacher = nn.mlp((16,), rng=5)
    t_before = [p.data.copy() for p in teacher.parameters()]
    a = nn.mlp((16,), rng=1)
    b = nn.mlp((16,), rng=1)
    ha = nn.fit(a, X, y, epochs=2, optimizer=nn.Adam(a.parameters(), lr=0.01), progress=False, rng=3)
    hb = mixed.distill(b, teacher, X, y, epochs=2, optimizer=nn.Adam(b.parameters(), lr=0.01), alpha=0.0, rng=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert np.allclose(pa.data, pb.data, rtol=1e-4, atol=1e-5)
    assert np.allclose(ha.loss, hb.loss, rtol=1e-5)
    assert all(np.array_equal(t, p.data) for t, p in zip(t_before, teacher.parameters()))


def test_distill_learns_from_teacher_alone(digits):
    """alpha = 1: the labels are never used, yet the student learns the teacher's function."""
    X, y = digits.X_train, digits.y_train
    teacher = nn.mlp((32,), rng=0)
    nn.fit(teacher, X, y, epochs=5, optimizer=nn.Adam(teacher.parameters(), lr=0.01), progress=False)
    student = nn.mlp((32,), rng=1)
    wrong = (y + 1) % 10                                            # labels ignored when alpha = 1
    mixed.distill(student, teacher, X, wrong, epochs=5, optimizer=nn.Adam(student.parameters(), lr=0.01),
                  alpha=1.0, temperature=2.0)
    agree = np.mean(nn.predict(student, digits.X_test).argmax(1) == nn.predict(teacher, digits.X_test).argmax(1))
    assert agree > 0.9


# ---- bad inputs ------------------------------------------------------------------------------

def test_bad_inputs(trained_mlp, digits):
    X = digits.X_train[:20]
    with pytest.raises(TypeError, match="model"):
        mixed.LayerHessian("net", X)
    with pytest.raises(TypeError, match="weight quantizers"):
        mixed.LayerHessian(nn.mlp((4,), weight_quantizer=lambda i: qat.MinMaxFakeQuantize(4)), X)
    with pytest.raises(TypeError, match="LSQ"):
        mixed.LayerHessian(nn.mlp((4,), activation_quantizer=lambda i: qat.LSQ(2)), X)
    with pytest.raises(ValueError, match="Linear or Conv2d"):
        mixed.LayerHessian(nn.Sequential(nn.ReLU()), X)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X"):
        mixed.LayerHessian(trained_mlp, bad)
    H = mixed.LayerHessian(trained_mlp, X)
    with pytest.raises(ValueError, match="v must have"):
        H.matvec(0, np.ones(5))
    with pytest.raises(ValueError, match="layer"):
        H.matvec(2, np.ones(5))
    with pytest.raises(TypeError, match="layer"):
        H.matvec(0.5, np.ones(5))
    with pytest.raises(TypeError, match="matvec"):
        mixed.hutchinson_trace(None, 3)
    with pytest.raises(ValueError, match="dim"):
        mixed.hutchinson_trace(lambda v: v, 0)
    with pytest.raises(ValueError, match="n_samples"):
        mixed.hutchinson_trace(lambda v: v, 3, n_samples=0)
    with pytest.raises(ValueError, match="matvec must return"):
        mixed.hutchinson_trace(lambda v: v[:2], 3)
    with pytest.raises(ValueError, match="traces"):
        mixed.sensitivities(trained_mlp, [1.0], [2, 4])
    with pytest.raises(ValueError, match="bit_options"):
        mixed.sensitivities(trained_mlp, [1.0, 1.0], [1, 4])
    with pytest.raises(ValueError, match="bit_options"):
        mixed.pareto_frontier([[1.0, 2.0]], [3], [4, 4])
    with pytest.raises(ValueError, match="omega"):
        mixed.pareto_frontier([[1.0, 2.0]], [3], [2, 4, 8])
    with pytest.raises(ValueError, match="sizes"):
        mixed.pareto_frontier([[1.0, 2.0]], [0], [2, 4])
    with pytest.raises(ValueError, match="sizes"):
        mixed.pareto_frontier([[1.0, 2.0]], [3, 4], [2, 4])
    with pytest.raises(ValueError, match="omega"):
        mixed.pareto_frontier([[1.0, np.inf]], [3], [2, 4])
    with pytest.raises(ValueError, match="budget_bits must be at least 6"):
        mixed.hawq_allocation([[1.0, 2.0]], [3], [2, 4], budget_bits=5)
    with pytest.raises(ValueError, match="budget_bits"):
        mixed.hawq_allocation([[1.0, 2.0]], [3], [2, 4], budget_bits=-1)
    with pytest.raises(ValueError, match="bits"):
        mixed.quantize_weight(np.ones(3), bits=1)
    with pytest.raises(ValueError, match="w"):
        mixed.quantize_weight(np.array([]), bits=4)
    with pytest.raises(ValueError, match="bits must have"):
        mixed.quantize_model(trained_mlp, [4])
    with pytest.raises(ValueError, match="temperature"):
        mixed.DistillationLoss(temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        mixed.DistillationLoss(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        mixed.softmax([[1.0, 2.0]], temperature=-1.0)
    loss = mixed.DistillationLoss()
    with pytest.raises(ValueError, match="teacher_logits"):
        loss(np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="y must hold"):
        loss(np.zeros((2, 3)), np.array([0, 3]), np.zeros((2, 3)))
    with pytest.raises(TypeError):
        loss(np.zeros((2, 3), dtype=int), np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="different model"):
        mixed.distill(trained_mlp, trained_mlp, X, digits.y_train[:20], epochs=1,
                      optimizer=nn.SGD(trained_mlp.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="teacher"):
        mixed.distill(trained_mlp, None, X, digits.y_train[:20], epochs=1,
                      optimizer=nn.SGD(trained_mlp.parameters(), lr=0.1))
