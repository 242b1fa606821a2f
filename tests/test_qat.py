"""Quantization-aware training (qref.qat): every surrogate gradient against its paper's formula.

Each quantizer's backward is checked three ways where it applies:

* against the paper's closed form, recomputed here independently (element by element or with
  explicit branches);
* by central differences of the *surrogate* forward pass, the function whose exact gradient the
  straight-through estimator is (rounding replaced by the identity plus a frozen offset; for
  PACT, by the clip alone, as the paper's Eq. 3 says);
* at the boundary cases where the mask conventions differ (PyTorch's against torch itself).

Each method also trains a small MLP on the digits to a stated accuracy with a fixed seed, and
the Jacob et al. (2018) batch-norm-folded model is converted to integers and compared with its
float forward code by code.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qref import intarith, nn, qat, rounding, uniform
from qref.uniform import QuantParams


def _ro(a):
    """A read-only copy: any in-place write by the code under test raises."""
    a = np.array(a)
    a.setflags(write=False)
    return a


def _train(wq, aq, digits, *, epochs=8, hidden=(64,), lr=3e-3, seed=0):
    net = nn.mlp(hidden, rng=seed, weight_quantizer=wq, activation_quantizer=aq)
    nn.fit(net, digits.X_train, digits.y_train, epochs=epochs, optimizer=nn.Adam(net.parameters(), lr=lr),
           progress=False, rng=seed)
    return net, nn.accuracy(net, digits.X_test, digits.y_test)


# ---- mask conventions ------------------------------------------------------------------------


def test_range_mask_boundaries():
    p = QuantParams(scale=0.25, zero_point=1, bits=3, signed=False)      # grid (q - 1) / 4, q = 0..7
    lo, hi = -0.25, 1.5
    x = np.array([np.nextafter(lo, -1), lo, np.nextafter(lo, 1), 0.0, np.nextafter(hi, -1), hi, np.nextafter(hi, 2)])
    assert qat.ste_mask(_ro(x), p).tolist() == [False, True, True, True, True, True, False]
    assert qat.ste_mask(x, p, convention="none").all()


def test_code_mask_boundaries_half_step_and_ties():
    p = QuantParams(scale=0.5, zero_point=0, bits=2)                      # codes -2..1, grid -1..0.5
    # rint(x / 0.5): -2.5 -> -2 (even, passes), -2.6 -> -3, 1.4 -> 1, 1.5 -> 2 (even, blocked)
    x = np.array([-1.3, -1.25, -1.0, 0.5, 0.7, 0.75])
    assert qat.ste_mask(x, p, convention="code").tolist() == [False, True, True, True, True, False]
    assert qat.ste_mask(x, p, convention="range").tolist() == [False, False, True, True, False, False]


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed: the PyTorch comparison is skipped")


@pytest.mark.parametrize("bits,signed", [(2, True), (4, False), (8, True)])
def test_code_mask_is_pytorch_fake_quantize_gradient(rng, bits, signed):
    torch = _torch()
    p = uniform.params_from_range(-0.7, 1.3, bits=bits, signed=signed)
    s, z = float(p.scale), int(p.zero_point)
    x = rng.uniform(-1.5, 2.0, 4000).astype(np.float32)
    # every tie and every end of the range, exactly
    codes = np.arange(p.qmin - 2, p.qmax + 3, dtype=np.float32)
    x = np.concatenate([x, ((codes - z) * np.float32(s)), ((codes - z + np.float32(0.5)) * np.float32(s))])
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(xt, s, z, p.qmin, p.qmax).sum().backward()
    np.testing.assert_array_equal(qat.ste_mask(x, p, convention="code"), xt.grad.numpy() == 1)


def test_code_mask_per_channel_matches_pytorch(rng):
    torch = _torch()
    w = rng.normal(size=(5, 7)).astype(np.float32)
    p = uniform.params_from_data(w * 0.8, bits=4, symmetric=True, axis=0)
    wt = torch.from_numpy(w.copy()).requires_grad_(True)
    torch.fake_quantize_per_channel_affine(wt, torch.from_numpy(p.scale.astype(np.float32)),
                                           torch.from_numpy(p.zero_point.astype(np.int32)), 0,
                                           p.qmin, p.qmax).sum().backward()
    np.testing.assert_array_equal(qat.ste_mask(w, p, convention="code"), wt.grad.numpy() == 1)


@given(st.floats(1e-3, 10.0), st.integers(2, 8), st.booleans(),
       st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=30))
def test_masks_against_their_definitions(scale, bits, signed, xs):
    qmin, qmax = uniform.qrange(bits, signed=signed)
    p = QuantParams(scale=scale, zero_point=(qmin + qmax + 1) // 2 if not signed else 0, bits=bits, signed=signed)
    x = np.array(xs)
    z = int(p.zero_point)
    expect_range = [(qmin - z) * scale <= v <= (qmax - z) * scale for v in xs]
    expect_code = [qmin <= np.rint(v * (1.0 / scale)) + z <= qmax for v in xs]
    assert qat.ste_mask(x, p).tolist() == expect_range
    assert qat.ste_mask(x, p, convention="code").tolist() == expect_code
    # the range is a subset of the code mask: PyTorch passes everything TensorFlow passes
    assert not (qat.ste_mask(x, p) & ~qat.ste_mask(x, p, convention="code")).any()


@pytest.mark.parametrize("mask", qat.MASK_CONVENTIONS)
def test_fake_quantize_layer(rng, mask):
    p = uniform.params_from_range(-1.0, 1.0, bits=3)
    x = _ro(rng.uniform(-2, 2, (6, 5)).astype(np.float32))
    g = _ro(rng.normal(size=(6, 5)).astype(np.float32))
    fq = qat.FakeQuantizeSTE(p, mask=mask)
    y = fq(x)
    np.testing.assert_array_equal(y, uniform.fake_quantize(x, p))
    dx = fq.backward(g)
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_array_equal(dx, np.where(qat.ste_mask(x, p, convention=mask), g, 0))
    if mask == "none":
        np.testing.assert_array_equal(dx, g)


def test_fake_quantize_stochastic_rounding_reproducible(rng):
    p = uniform.params_from_range(0.0, 1.0, bits=2, signed=False)
    x = rng.uniform(0, 1, 1000)
    a = qat.FakeQuantizeSTE(p, rounding="stochastic", rng=3)(x)
    b = qat.FakeQuantizeSTE(p, rounding="stochastic", rng=3)(x)
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean() - x.mean()) < 0.02                   # stochastic rounding is unbiased


# ---- STE variants ----------------------------------------------------------------------------


def test_identity_ste_passes_everything():
    q = qat.STEQuantizer(rounding.round)
    x = _ro([-3.7, -0.5, 0.2, 9.9])
    np.testing.assert_array_equal(q(x), [-4.0, -0.0, 0.0, 10.0])
    np.testing.assert_array_equal(q.backward(_ro([1.0, 2.0, 3.0, 4.0])), [1.0, 2.0, 3.0, 4.0])


def test_clipped_and_hardtanh_ste_closed_interval():
    x = np.array([-1.0000001, -1.0, -0.3, 0.0, 1.0, 1.0000001])
    g = np.arange(1.0, 7.0)
    for q in (qat.STEQuantizer(rounding.round, estimator="hardtanh"),
              qat.STEQuantizer(rounding.round, estimator="clipped", clip=(-1, 1)), qat.SignSTE()):
        q(x)
        np.testing.assert_array_equal(q.backward(g), [0, 2, 3, 4, 5, 0])     # g_r = g_q 1_{|r| <= 1}
    s = qat.SignSTE()
    np.testing.assert_array_equal(s(x), [-1, -1, -1, 1, 1, 1])              # sign(0) = +1


def test_ste_quantizer_wraps_fake_quantize_and_casts_dtype():
    p = uniform.params_from_range(-1.0, 1.0, bits=4)
    q = qat.STEQuantizer(lambda x: uniform.fake_quantize(x, p))
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    assert q(x).dtype == np.float32 and q.backward(np.ones(9, np.float32)).dtype == np.float32
    b = qat.STEQuantizer(lambda x: np.where(x >= 0, 1, -1).astype(np.int8))   # int codes -> x's dtype
    assert b(x).dtype == np.float32


def test_ste_quantizer_errors():
    with pytest.raises(TypeError, match="fn must be callable"):
        qat.STEQuantizer(3)
    with pytest.raises(ValueError, match="estimator must be one of"):
        qat.STEQuantizer(rounding.round, estimator="soft")
    with pytest.raises(ValueError, match="needs clip"):
        qat.STEQuantizer(rounding.round, estimator="clipped")
    with pytest.raises(ValueError, match="lo < hi"):
        qat.STEQuantizer(rounding.round, estimator="clipped", clip=(1, -1))
    with pytest.raises(ValueError, match="clip is used only"):
        qat.STEQuantizer(rounding.round, clip=(0, 1))
    with pytest.raises(ValueError, match="must return an array of x's shape"):
        qat.STEQuantizer(lambda x: x[:1])(np.zeros(3))
    q = qat.STEQuantizer(rounding.round)
    with pytest.raises(RuntimeError, match="before forward"):
        q.backward(np.zeros(3))
    q(np.zeros(3))
    with pytest.raises(ValueError, match="grad_out must have the shape"):
        q.backward(np.zeros(4))


# ---- DoReFa-Net ------------------------------------------------------------------------------


def test_quantize_k_grid():
    r = np.linspace(0, 1, 1001)
    for k in (1, 2, 4):
        n = 2**k - 1
        q = qat.quantize_k(r, bits=k)
        np.testing.assert_allclose(q * n, np.round(q * n), atol=1e-12)          # on the grid i / n
        assert np.abs(q - r).max() <= 0.5 / n + 1e-12
        np.testing.assert_array_equal(qat.quantize_k(q, bits=k), q)             # idempotent


def _dorefa_weight_reference(w, k):
    """Zhou et al. (2016), Sec. 2.4, in float64 with explicit rounding."""
    t = np.tanh(w.astype(np.float64))
    u = t / (2 * np.abs(t).max()) + 0.5
    n = 2**k - 1
    return 2 * np.round(u * n) / n - 1


@pytest.mark.parametrize("k", [2, 3, 8])
def test_dorefa_weight_forward(rng, k):
    w = rng.normal(size=(7, 9)) * 0.8
    out = qat.DoReFaWeight(k)(_ro(w))
    np.testing.assert_allclose(out, _dorefa_weight_reference(w, k), atol=1e-12)
    levels = 2 * np.arange(2**k) / (2**k - 1) - 1
    assert np.isin(np.round(out, 10), np.round(levels, 10)).all()
    assert out.flat[np.argmax(np.abs(w))] == np.sign(w.flat[np.argmax(np.abs(w))])   # the largest -> +-1


def test_dorefa_weight_backward_is_surrogate_gradient(rng):
    w = rng.normal(size=(4, 5))
    r = rng.normal(size=(4, 5))
    q = qat.DoReFaWeight(3)
    q(w)
    g = q.backward(_ro(r))

    def surrogate(v):  # quantize_k replaced by the identity: r_o = tanh(w) / max|tanh w|
        t = np.tanh(v)
        return float(np.sum(r * t / np.abs(t).max()))

    np.testing.assert_allclose(g, nn.numerical_gradient(surrogate, w.copy(), eps=1e-6), rtol=1e-6, atol=1e-8)


def test_dorefa_binary_weight():
    w = np.array([[-1.0, 0.25], [0.0, 0.75]])
    q = qat.DoReFaWeight(1)
    np.testing.assert_allclose(q(_ro(w)), [[-0.5, 0.5], [0.5, 0.5]])       # sign(w) E|w|, sign(0)=+1
    np.testing.assert_array_equal(q.backward(_ro(np.ones((2, 2)))), np.ones((2, 2)))   # straight through
    z = qat.DoReFaWeight(3)
    np.testing.assert_array_equal(z(np.zeros(4)), np.zeros(4))
    np.testing.assert_array_equal(z.backward(np.arange(4.0)), np.arange(4.0))


def test_dorefa_activation():
    a = qat.DoReFaActivation(2)
    x = _ro([-0.1, 0.0, 0.2, 0.5, 1.0, 1.01])
    np.testing.assert_allclose(a(x), [0, 0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_array_equal(a.backward(_ro(np.ones(6))), [0, 1, 1, 1, 1, 0])


def test_dorefa_gradient_grid_unbiased_reproducible(rng):
    g = rng.normal(size=(3, 50)) * np.array([[1e-3], [1.0], [0.0]])           # per-example scales, a zero row
    q = qat.DoReFaGradient(3, rng=7)
    x = rng.normal(size=(3, 50))
    assert q(x) is x                                                           # identity forward
    draws = np.stack([q.backward(_ro(g)) for _ in range(4000)])
    n, m = 7, np.abs(g).max(axis=1, keepdims=True)
    levels = draws[:, :2] / (2 * m[:2]) + 0.5                                   # i / n
    np.testing.assert_allclose(levels * n, np.round(levels * n), atol=1e-9)
    assert (draws[:, 2] == 0).all()
    # unbiased: E = g; the std of one draw is at most 2m/n/2, of the mean over 4000 draws /sqrt(4000)
    tol = 5 * (m[:2] / n) / np.sqrt(4000)
    assert (np.abs(draws[:, :2].mean(axis=0) - g[:2]) <= tol).all()
    a = qat.DoReFaGradient(3, rng=1)
    b = qat.DoReFaGradient(3, rng=1)
    a(x), b(x)
    np.testing.assert_array_equal(a.backward(g), b.backward(g))


def test_dorefa_gradient_exact_expectation_and_k1():
    # E[round(n u + sigma)] = n u for sigma ~ U(-1/2, 1/2): the two neighbours with probabilities
    # 1 - f and f. Check the empirical frequencies on one entry at k = 1 (levels -m, +m).
    q = qat.DoReFaGradient(1, rng=0)
    g = np.array([[0.5, 1.0]])                  # m = 1: u = 0.75 -> P(+m) = 0.75
    q(np.zeros((1, 2)))
    draws = np.stack([q.backward(g)[0] for _ in range(5000)])           # (draw, entry)
    assert set(np.unique(draws[:, 0])) == {-1.0, 1.0}
    assert abs((draws[:, 0] == 1).mean() - 0.75) < 0.031                 # 5 std of a frequency: 0.031
    assert (draws[:, 1] == 1).all()


def test_dorefa_gradient_without_noise_is_nearest_rounding():
    q = qat.DoReFaGradient(2, noise=False)
    q(np.zeros((1, 4)))
    # m = 0.3: levels -0.3, -0.1, 0.1, 0.3; 0.01 -> u = 0.5167 -> 3u = 1.55 -> 2 -> 0.1 (deterministic)
    np.testing.assert_allclose(q.backward(np.array([[-0.3, 0.01, 0.2, 0.3]])), [[-0.3, 0.1, 0.1, 0.3]])
    np.testing.assert_array_equal(q.backward(np.array([[-0.3, 0.01, 0.2, 0.3]])),
                                  q.backward(np.array([[-0.3, 0.01, 0.2, 0.3]])))


def test_dorefa_gradient_placement_quantizes_weight_gradient(rng):
    lin = nn.Linear(4, 3, rng=0)
    net = nn.Sequential(lin, qat.DoReFaGradient(2, rng=0))
    x = rng.normal(size=(5, 4)).astype(np.float32)
    net(x)
    g = rng.normal(size=(5, 3)).astype(np.float32)
    net.backward(g)
    # every row of the gradient reaching the Linear has 4 levels: dW = gq^T x with gq on the grid
    q = qat.DoReFaGradient(2, rng=0)
    q(x[:, :3])
    gq = q.backward(g)
    np.testing.assert_allclose(lin.weight.grad, gq.T @ x, rtol=1e-5)


# ---- PACT ------------------------------------------------------------------------------------


def test_pact_forward_eq2_and_gradient_eq3(rng):
    x = np.concatenate([rng.normal(1.0, 2.0, 200), [0.0, 2.5, -0.0]])
    r = rng.normal(size=x.size)
    p = qat.PACT(3, alpha=2.5)
    y = p(_ro(x))
    n, a = 7, 2.5
    np.testing.assert_allclose(y, np.round(np.clip(x, 0, a) * n / a) * a / n)    # Eq. 2
    dx = p.backward(_ro(r))
    np.testing.assert_array_equal(dx, np.where((x >= 0) & (x < a), r, 0))        # x = 0 passes, x = alpha not
    np.testing.assert_allclose(float(p.alpha.grad), r[x >= a].sum(), rtol=1e-6)   # Eq. 3


def test_pact_gradient_is_derivative_of_clip(rng):
    """Eq. 3 is the exact derivative of the unquantized PACT function (Eq. 1) in x and alpha."""
    x = rng.uniform(-1, 3, 60)
    x = x[np.abs(x - 1.7) > 1e-3]                                                # away from the kinks
    r = rng.normal(size=x.size)
    p = qat.PACT(4, alpha=1.7)
    p.astype(np.float64)
    p(x)
    dx = p.backward(r)

    def eq1(v, alpha):
        return 0.5 * (np.abs(v) - np.abs(v - alpha) + alpha)

    np.testing.assert_allclose(dx, nn.numerical_gradient(lambda v: float(r @ eq1(v, 1.7)), x.copy(), eps=1e-6),
                               atol=1e-7)
    alpha = np.array([1.7])
    fd = nn.numerical_gradient(lambda a: float(r @ eq1(x, a[0])), alpha, eps=1e-6)
    np.testing.assert_allclose(float(p.alpha.grad), fd[0], rtol=1e-6)


def test_pact_alpha_decay_and_errors():
    p = qat.PACT(2, alpha=4.0, alpha_decay=0.01)
    p(np.array([1.0]))
    p.backward(np.array([1.0]))
    assert float(p.alpha.grad) == pytest.approx(0.04)                            # d/da (0.01/2 a^2)
    assert not p.alpha.decay
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        qat.PACT(2, alpha=0.0)
    with pytest.raises(ValueError, match="alpha_decay must be >= 0"):
        qat.PACT(2, alpha_decay=-1.0)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[1, 16\], got 0"):
        qat.PACT(0)
    p.alpha.data[...] = -0.5
    with pytest.raises(ValueError, match="PACT's alpha must stay finite and > 0"):
        p(np.array([1.0]))


# ---- QIL -------------------------------------------------------------------------------------


def test_qil_transform_matches_paper_piecewise(rng):
    w = rng.normal(size=300)
    c, d, gamma = 0.7, 0.4, 1.6
    a, b = 0.5 / d, -0.5 * c / d + 0.5
    expected = [0.0 if abs(v) < c - d else np.sign(v) if abs(v) > c + d else (a * abs(v) + b) ** gamma * np.sign(v)
                for v in w]
    np.testing.assert_allclose(qat.qil_transform(w, center=c, distance=d, gamma=gamma), expected, atol=1e-12)
    x = rng.normal(size=300)
    expected = [0.0 if v < c - d else 1.0 if v > c + d else a * v + b for v in x]
    np.testing.assert_allclose(qat.qil_transform(x, center=c, distance=d, kind="activation"), expected, atol=1e-12)


@pytest.mark.parametrize("bits,kind,q_d", [(2, "weight", 1), (4, "weight", 7), (1, "activation", 1),
                                           (3, "activation", 7)])
def test_qil_discretizer_levels(rng, bits, kind, q_d):
    q = qat.QIL(bits, kind=kind, center=0.8, distance=0.6)
    x = rng.normal(size=500)
    y = q(x)
    np.testing.assert_allclose(y * q_d, np.round(y * q_d), atol=1e-9)
    hat = qat.qil_transform(x, center=0.8, distance=0.6, gamma=1.0, kind=kind)
    assert np.abs(y - hat).max() <= 0.5 / q_d + 1e-7
    assert q.q_d == q_d


@pytest.mark.parametrize("kind,gamma", [("weight", 1.0), ("weight", 0.6), ("weight", 1.8), ("activation", 1.0)])
def test_qil_backward_is_chain_rule_through_transformer(rng, kind, gamma):
    c, d = 0.9, 0.5
    x = rng.uniform(-2, 2, 80) if kind == "weight" else rng.uniform(-0.5, 2, 80)
    mag = np.abs(x) if kind == "weight" else x
    x = x[(np.abs(mag - (c - d)) > 1e-3) & (np.abs(mag - (c + d)) > 1e-3)]       # away from the kinks
    r = rng.normal(size=x.size)
    q = qat.QIL(3, kind=kind, center=c, distance=d, gamma=gamma, learn_gamma=kind == "weight")
    q.astype(np.float64)
    q.center.data[...] = c                                  # exact float64 values (not float32 ones)
    q.distance.data[...] = d
    if q.gamma is not None:
        q.gamma.data[...] = gamma
    q(x)
    dx = q.backward(r)

    def f(v, cc=c, dd=d, gg=gamma):
        return float(r @ qat.qil_transform(v, center=cc, distance=dd, gamma=gg, kind=kind))

    np.testing.assert_allclose(dx, nn.numerical_gradient(f, x.copy(), eps=1e-6), rtol=1e-5, atol=1e-8)
    theta = np.array([c, d, gamma])
    fd = nn.numerical_gradient(lambda t: f(x, t[0], t[1], t[2] if kind == "weight" else 1.0), theta, eps=1e-6)
    np.testing.assert_allclose(float(q.center.grad), fd[0], rtol=1e-5)
    np.testing.assert_allclose(float(q.distance.grad), fd[1], rtol=1e-5)
    if kind == "weight":
        np.testing.assert_allclose(float(q.gamma.grad), fd[2], rtol=1e-5)


def test_qil_lazy_init_and_errors():
    q = qat.QIL(3)
    q(np.array([-2.0, 0.5, 1.0]))
    assert float(q.center.data) == float(q.distance.data) == 1.0                 # interval [0, max|w|]
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\], got 1"):
        qat.QIL(1, kind="weight")
    with pytest.raises(ValueError, match="gamma is for weights only"):
        qat.QIL(2, kind="activation", gamma=2.0)
    with pytest.raises(ValueError, match="given together"):
        qat.QIL(2, center=1.0)
    with pytest.raises(ValueError, match="distance must be finite and > 0"):
        qat.QIL(2, center=1.0, distance=0.0)
    with pytest.raises(ValueError, match="all-zero"):
        qat.QIL(2)(np.zeros(3))
    with pytest.raises(ValueError, match="gamma must be 1 for activations"):
        qat.qil_transform(np.ones(2), center=1, distance=1, gamma=2, kind="activation")


# ---- LSQ -------------------------------------------------------------------------------------


def test_lsq_levels_init_and_grad_scale():
    assert qat.lsq_levels(3, signed=True) == (4, 3) and qat.lsq_levels(3, signed=False) == (0, 7)
    v = np.array([-3.0, 1.0, 2.0])
    assert qat.lsq_init_step(v, bits=4, signed=True) == pytest.approx(2 * 2.0 / np.sqrt(7))
    assert qat.lsq_grad_scale(100, bits=2, signed=True) == pytest.approx(0.1)        # 1/sqrt(100 * 1)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\], got 1"):
        qat.lsq_levels(1, signed=True)
    with pytest.raises(ValueError, match="all zeros"):
        qat.lsq_init_step(np.zeros(3), bits=2, signed=False)


def _lsq_reference(v, s, q_n, q_p, g):
    """Esser et al. (2020), Eqs. 1-3, one element at a time in Python floats."""
    out, dv, ds = [], [], 0.0
    for vi, gi in zip(v.ravel().tolist(), g.ravel().tolist()):
        z = vi / s
        out.append(float(np.rint(min(max(z, -q_n), q_p))) * s)
        if z <= -q_n:
            dv.append(0.0); ds += gi * -q_n
        elif z >= q_p:
            dv.append(0.0); ds += gi * q_p
        else:
            dv.append(gi); ds += gi * (float(np.rint(z)) - z)
    return np.array(out).reshape(v.shape), np.array(dv).reshape(v.shape), ds


@pytest.mark.parametrize("bits,signed", [(2, False), (2, True), (3, True), (8, False)])
def test_lsq_forward_backward_eq1_to_3(rng, bits, signed):
    q_n, q_p = qat.lsq_levels(bits, signed=signed)
    s = 0.375                                       # a binary fraction: v/s at the boundaries is exact
    v = rng.normal(0, 1.5, (10, 6))
    v[0, :4] = [-q_n * s, q_p * s, -q_n * s - 1e-9, q_p * s + 1e-9]                 # the two boundaries
    g = rng.normal(size=v.shape)
    q = qat.LSQ(bits, signed=signed, step=s, grad_scale=None)
    q.astype(np.float64)
    q.step.data[...] = s
    out = q(_ro(v))
    dv = q.backward(_ro(g))
    ref_out, ref_dv, ref_ds = _lsq_reference(v, s, q_n, q_p, g)
    np.testing.assert_allclose(out, ref_out, atol=1e-12)
    np.testing.assert_array_equal(dv, ref_dv)
    np.testing.assert_allclose(float(q.step.grad), ref_ds, rtol=1e-10)
    assert (dv[0, :2] == 0).all()                                                    # v/s = -Q_N, Q_P: blocked


def test_lsq_step_gradient_by_finite_differences(rng):
    """Between jumps the true derivative of s*round(v/s) is round(v/s); LSQ adds the STE term -v/s.

    LSQ's Eq. 3 is the exact derivative of the surrogate s * (clip(v/s) + delta) with the rounding
    offset delta = round(v/s) - v/s frozen at the current s.
    """
    q_n, q_p = 0, 7
    v = rng.uniform(0.0, 3.0, 40)
    s0 = 0.3
    z = v / s0
    v = v[np.abs(z - np.round(z) - 0.5 * np.sign(z - np.round(z))) > 1e-3]           # not near a transition
    r = rng.normal(size=v.size)
    q = qat.LSQ(3, kind="activation", signed=False, step=s0, grad_scale=None)
    q.astype(np.float64)
    q.step.data[...] = s0
    q(v[None])
    q.backward(r[None])

    def true(s):
        return float(r @ (s[0] * np.rint(np.clip(v / s[0], -q_n, q_p))))

    delta = np.rint(np.clip(v / s0, -q_n, q_p)) - np.clip(v / s0, -q_n, q_p)

    def surrogate(s):
        return float(r @ (s[0] * (np.clip(v / s[0], -q_n, q_p) + delta)))

    fd_true = nn.numerical_gradient(true, np.array([s0]), eps=1e-7)[0]
    fd_sur = nn.numerical_gradient(surrogate, np.array([s0]), eps=1e-7)[0]
    inside = (v / s0 > -q_n) & (v / s0 < q_p)
    np.testing.assert_allclose(float(q.step.grad), fd_sur, rtol=1e-6)
    np.testing.assert_allclose(fd_true - float(q.step.grad), r[inside] @ (v[inside] / s0), rtol=1e-6)


def test_lsq_grad_scale_and_lazy_init(rng):
    w = rng.normal(size=(8, 16))
    qw = qat.LSQ(3, kind="weight")
    qw(w)
    assert float(qw.step.data) == pytest.approx(qat.lsq_init_step(w, bits=3, signed=True), rel=1e-6)
    qw.backward(np.ones_like(w))
    g_auto = float(qw.step.grad)
    qn = qat.LSQ(3, kind="weight", step=float(qw.step.data), grad_scale=None)
    qn(w)
    qn.backward(np.ones_like(w))
    assert g_auto == pytest.approx(float(qn.step.grad) / np.sqrt(w.size * 3), rel=1e-5)   # N_W = 128
    a = rng.uniform(0, 2, (5, 12))
    qa = qat.LSQ(2, step=0.5)
    qa(a)
    assert qa.step_grad_scale == pytest.approx(1 / np.sqrt(12 * 3))                                 # N_F = 12 per example


def test_lsq_errors():
    with pytest.raises(ValueError, match="step must be finite and > 0"):
        qat.LSQ(4, step=-1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        qat.LSQ(4, kind="bias")
    with pytest.raises(ValueError, match="grad_scale must be finite and > 0"):
        qat.LSQ(4, grad_scale=0.0)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\], got 1"):
        qat.LSQ(1, kind="weight")
    q = qat.LSQ(4, step=1.0)
    q.step.data[...] = 0.0
    with pytest.raises(ValueError, match="LSQ's step must stay finite and > 0"):
        q(np.ones((2, 2)))


# ---- common properties -----------------------------------------------------------------------


def _all_quantizers():
    p = uniform.params_from_range(-1.0, 1.0, bits=4)
    return [qat.FakeQuantizeSTE(p), qat.SignSTE(), qat.STEQuantizer(rounding.round), qat.DoReFaWeight(3),
            qat.DoReFaWeight(1), qat.DoReFaActivation(3), qat.DoReFaGradient(4, rng=0), qat.PACT(3, alpha=1.0),
            qat.QIL(3), qat.QIL(2, kind="activation"), qat.LSQ(3), qat.LSQ(3, kind="weight"),
            qat.EMAFakeQuantize(8), qat.MinMaxFakeQuantize(4)]


@pytest.mark.parametrize("q", _all_quantizers(), ids=lambda q: type(q).__name__)
def test_float32_in_float32_out_and_inputs_untouched(rng, q):
    x = _ro(rng.normal(size=(6, 5)).astype(np.float32))
    g = _ro(rng.normal(size=(6, 5)).astype(np.float32))
    y = q(x)
    dx = q.backward(g)
    assert y.shape == dx.shape == x.shape
    assert y.dtype == np.float32 and dx.dtype == np.float32
    for p in q.parameters():
        assert p.grad.shape == p.data.shape and np.isfinite(p.grad).all()


@pytest.mark.parametrize("q", _all_quantizers(), ids=lambda q: type(q).__name__)
def test_nonfinite_input_rejected(q):
    with pytest.raises(ValueError, match="must be finite"):
        q(np.array([[0.0, np.nan]]))


@pytest.mark.parametrize("make", [lambda b: qat.DoReFaWeight(b), lambda b: qat.DoReFaActivation(b),
                                  lambda b: qat.DoReFaGradient(b), lambda b: qat.PACT(b), lambda b: qat.LSQ(b),
                                  lambda b: qat.EMAFakeQuantize(b), lambda b: qat.QIL(b, kind="activation")])
@pytest.mark.parametrize("bits", [0, 17])
def test_bits_out_of_range(make, bits):
    with pytest.raises(ValueError, match=f"bits must be an integer in .*got {bits}"):
        make(bits)


def test_bits_must_be_int():
    with pytest.raises(TypeError, match="bits must be an integer"):
        qat.LSQ(2.5)


# ---- training: each method reaches a stated accuracy ------------------------------------------


@pytest.mark.parametrize("name,wq,aq,min_acc", [
    # measured with these seeds: 0.920, 0.858, 0.962, 0.931, 0.824 (float: about 0.97)
    ("DoReFa 2-bit", lambda i: qat.DoReFaWeight(2), lambda i: qat.DoReFaActivation(2), 0.90),
    ("PACT 2-bit", lambda i: qat.DoReFaWeight(2), lambda i: qat.PACT(2, alpha=4.0), 0.83),
    ("QIL 3-bit", lambda i: qat.QIL(3), lambda i: qat.QIL(3, kind="activation"), 0.93),
    ("LSQ 2-bit", lambda i: qat.LSQ(2, kind="weight"), lambda i: qat.LSQ(2), 0.90),
    ("BNN sign", lambda i: qat.SignSTE(), None, 0.78),
])
def test_training_reaches_accuracy(digits, name, wq, aq, min_acc):
    net, acc = _train(wq, aq, digits)
    assert acc >= min_acc, (name, acc)


def test_training_with_dorefa_gradients(digits):
    net = nn.Sequential(nn.Linear(64, 32, rng=0, weight_quantizer=qat.DoReFaWeight(4)), qat.DoReFaGradient(6, rng=0),
                        nn.ReLU(), qat.DoReFaActivation(4),
                        nn.Linear(32, 10, rng=1, weight_quantizer=qat.DoReFaWeight(4)), qat.DoReFaGradient(6, rng=1))
    nn.fit(net, digits.X_train, digits.y_train, epochs=8, optimizer=nn.Adam(net.parameters(), lr=3e-3),
           progress=False, rng=0)
    assert nn.accuracy(net, digits.X_test, digits.y_test) >= 0.9


def test_learned_parameters_move(digits):
    """PACT's clip and LSQ's step are trained; PACT's alpha learns only from clipped activations."""
    made = {"low": [], "high": [], "decay": [], "lsq": []}

    def keep(key, q):
        made[key].append(q)
        return q

    _train(None, lambda i: keep("low", qat.PACT(2, alpha=1.0)), digits, epochs=3)
    _train(None, lambda i: keep("high", qat.PACT(2, alpha=1e3)), digits, epochs=3)
    _train(None, lambda i: keep("decay", qat.PACT(2, alpha=1e3, alpha_decay=10.0)), digits, epochs=3)
    _train(lambda i: keep("lsq", qat.LSQ(2, kind="weight")), None, digits, epochs=3)
    assert abs(float(made["low"][0].alpha.data) - 1.0) > 0.05
    assert float(made["high"][0].alpha.data) == 1e3          # nothing clipped: Eq. 3 gives no gradient
    assert float(made["decay"][0].alpha.data) < 1e3 - 0.1    # the L2 regularizer pulls it down (Adam: ~lr a step)
    steps = [float(q.step.data) for q in made["lsq"]]
    assert all(q.initialized for q in made["lsq"]) and len(set(steps)) == 2


# ---- Jacob et al. 2018: EMA ranges, batch-norm folding, integer model ---------------------------


def test_ema_fake_quantize():
    q = qat.EMAFakeQuantize(4, decay=0.9)
    x1, x2 = np.array([[-1.0, 2.0]]), np.array([[0.5, 4.0]])
    q(x1)
    assert q.range == (-1.0, 2.0)
    y = q(x2)
    assert q.range == pytest.approx((0.9 * -1.0 + 0.1 * 0.5, 0.9 * 2 + 0.1 * 4))
    np.testing.assert_array_equal(y, uniform.fake_quantize(x2, uniform.params_from_range(*q.range, bits=4)))
    q.eval()
    before = q.range
    q(np.array([[100.0, -100.0]]))
    assert q.range == before                                                       # frozen in eval mode
    np.testing.assert_array_equal(q.backward(np.ones((1, 2))), [[0.0, 0.0]])        # both outside the range
    with pytest.raises(RuntimeError, match="no range yet"):
        qat.EMAFakeQuantize().eval()(np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        qat.EMAFakeQuantize(decay=1.0)


def _bn_surrogate(x, W, gamma, beta, delta, eps, mean=None, var=None):
    """y = BN(x W^T) + x delta^T, written out in float64 (batch statistics unless given)."""
    y0 = x @ W.T
    mu = y0.mean(axis=0) if mean is None else mean
    v = y0.var(axis=0) if var is None else var
    return gamma * (y0 - mu) / np.sqrt(v + eps) + beta + x @ delta.T


@pytest.mark.parametrize("training", [True, False])
def test_folded_linear_bn_gradients(rng, training):
    layer = qat.FoldedLinearBN(5, 4, bits=4, rng=0).astype(np.float64)
    layer.gamma.data[:] = rng.uniform(0.5, 2, 4)
    layer.beta.data[:] = rng.normal(size=4)
    layer.running_mean = rng.normal(size=4)
    layer.running_var = rng.uniform(0.5, 2, 4)
    layer.train(training)
    x = rng.normal(size=(9, 5))
    r = rng.normal(size=(9, 4))
    rm, rv = layer.running_mean.copy(), layer.running_var.copy()
    y = layer(x)
    delta = layer._delta.copy()
    stats = {} if training else {"mean": rm, "var": rv}
    W, gamma, beta = layer.weight.data.copy(), layer.gamma.data.copy(), layer.beta.data.copy()
    np.testing.assert_allclose(y, _bn_surrogate(x, W, gamma, beta, delta, layer.eps, **stats), atol=1e-12)
    dx = layer.backward(r)

    def f(xx=x, WW=W, gg=gamma, bb=beta):
        return float(np.sum(r * _bn_surrogate(xx, WW, gg, bb, delta, layer.eps, **stats)))

    num = lambda fn, a: nn.numerical_gradient(fn, a.copy(), eps=1e-6)           # noqa: E731
    np.testing.assert_allclose(dx, num(lambda v: f(xx=v), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.weight.grad, num(lambda v: f(WW=v), W), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.gamma.grad, num(lambda v: f(gg=v), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.beta.grad, num(lambda v: f(bb=v), beta), rtol=1e-6, atol=1e-8)


def test_folded_linear_bn_running_stats_and_eval_forward(rng):
    layer = qat.FoldedLinearBN(3, 2, bits=8, momentum=0.25, rng=0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    layer(x)
    y0 = x @ layer.weight.data.T
    np.testing.assert_allclose(layer.running_mean, 0.25 * y0.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.running_var, 0.75 + 0.25 * y0.var(0, ddof=1), rtol=1e-5)
    layer.eval()
    w_fold, b_fold = intarith.fold_batch_norm(layer.weight.data, None, layer.gamma.data, layer.beta.data,
                                              layer.running_mean, layer.running_var, eps=layer.eps)
    w_hat = uniform.fake_quantize(w_fold, uniform.params_from_data(w_fold, bits=8, symmetric=True, narrow_range=True))
    np.testing.assert_allclose(layer(x), x @ w_hat.T + b_fold, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 examples"):
        layer.train()(x[:1])


def test_jacob_qat_matches_integer_model(digits):
    net = qat.jacob_mlp((64,), bits=8, rng=0)
    nn.fit(net, digits.X_train, digits.y_train, epochs=6, optimizer=nn.Adam(net.parameters(), lr=3e-3),
           progress=False, rng=0)
    acc = nn.accuracy(net, digits.X_test, digits.y_test)
    assert acc >= 0.94                                                               # measured: 0.956
    imlp = qat.integer_mlp_from_qat(net)
    codes = intarith.integer_forward(imlp, digits.X_test)
    p_out = imlp.act_params[-1]
    float_logits = nn.predict(net, digits.X_test)                                   # eval mode, fake-quantized
    float_codes = uniform.quantize(float_logits, p_out).astype(np.int64)
    diff = np.abs(float_codes - codes.astype(np.int64))
    assert diff.max() <= 1                                                           # within one LSB
    assert diff.mean() < 0.05
    int_acc = float(np.mean(codes.argmax(axis=1) == digits.y_test))
    assert abs(int_acc - acc) <= 2 / len(digits.y_test)


def test_integer_mlp_from_qat_errors():
    with pytest.raises(TypeError, match="Sequential"):
        qat.integer_mlp_from_qat(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="must start with an EMAFakeQuantize"):
        qat.integer_mlp_from_qat(nn.Sequential(nn.Linear(2, 2)))
    net = qat.jacob_mlp((4,), rng=0)
    with pytest.raises(RuntimeError, match="no range yet"):
        qat.integer_mlp_from_qat(net)
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\], got 9"):
        qat.jacob_mlp(bits=9)
