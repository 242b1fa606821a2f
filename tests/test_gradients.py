"""Quantized gradients (qref.gradients): unbiasedness, variance, error feedback, data-parallel training.

Statistical checks use many draws and a tolerance of a few standard errors computed from the
closed-form variance; each is paired with a biased quantizer that the same check must reject,
so the check can fail.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qref import nn
from qref import gradients as G


def _ro(a):
    """A read-only copy: any in-place write by the code under test raises."""
    a = np.array(a)
    a.setflags(write=False)
    return a


def _mean_of_draws(fn, g, draws, seed=0):
    rng = np.random.default_rng(seed)
    return np.mean([fn(g, rng=rng) for _ in range(draws)], axis=0)


def _unbiased(fn, g, var, draws=4000, z=5.0):
    """Is the mean of ``draws`` quantizations within ``z`` standard errors of ``g``, entry by entry?"""
    mean = _mean_of_draws(fn, g, draws)
    se = np.sqrt(np.maximum(var, 1e-30) / draws)
    return bool(np.all(np.abs(mean - g) <= z * se + 1e-12))


# --------------------------------------------------------------------------------------
# TernGrad
# --------------------------------------------------------------------------------------


def test_terngrad_values_scaler_and_unbiased(rng):
    g = rng.normal(size=24)
    s = np.abs(g).max()
    q = G.terngrad(g, rng=1)
    assert set(np.unique(np.abs(q))) <= {0.0, s}
    assert np.all((q == 0) | (np.sign(q) == np.sign(g)))
    var = np.abs(g) * (s - np.abs(g))                     # Bernoulli(|g|/s) times s
    assert _unbiased(G.terngrad, g, var)
    # the same check rejects a biased ternarizer (deterministic threshold at s/2)
    biased = lambda x, rng=None: np.where(np.abs(x) > s / 2, s * np.sign(x), 0.0)  # noqa: E731
    assert not _unbiased(biased, g, var)


def test_terngrad_variance_matches_closed_form(rng):
    g = rng.normal(size=16)
    s = np.abs(g).max()
    r = np.random.default_rng(3)
    draws = np.array([G.terngrad(g, rng=r) for _ in range(20000)])
    emp = ((draws - g) ** 2).sum(axis=1).mean()
    exact = (np.abs(g) * (s - np.abs(g))).sum()
    assert emp == pytest.approx(exact, rel=0.03)


def test_terngrad_clip():
    g = np.array([100.0] + [1.0, -1.0] * 50)               # one outlier
    sigma = g.std()
    q = G.terngrad(g, rng=0, clip=2.5)
    assert np.abs(q).max() == pytest.approx(2.5 * sigma)
    # unbiased for the clipped gradient, not for g (the outlier is cut to 2.5 sigma)
    clipped = np.clip(g, -2.5 * sigma, 2.5 * sigma)
    s = 2.5 * sigma
    fn = lambda x, rng: G.terngrad(x, rng=rng, clip=2.5)  # noqa: E731
    var = np.abs(clipped) * (s - np.abs(clipped))
    assert _unbiased(lambda x, rng: fn(g, rng), clipped, var, draws=2000)
    assert not _unbiased(fn, g, var, draws=2000)


def test_terngrad_zero_dtype_reproducible():
    assert np.array_equal(G.terngrad(np.zeros(5)), np.zeros(5))
    g = np.linspace(-1, 1, 9, dtype=np.float32)
    assert G.terngrad(g, rng=0).dtype == np.float32
    assert G.terngrad(g.astype(np.float16), rng=0).dtype == np.float32
    assert np.array_equal(G.terngrad(g, rng=5), G.terngrad(g, rng=5))
    assert G.terngrad(np.zeros((0, 3)), rng=0).shape == (0, 3)


# --------------------------------------------------------------------------------------
# QSGD
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_qsgd_unbiased_and_on_grid(rng, levels):
    g = rng.laplace(size=30)
    norm = np.linalg.norm(g)
    q = G.qsgd(g, levels=levels, rng=2)
    k = np.abs(q) / norm * levels                            # level index, an integer
    assert np.allclose(k, np.round(k))
    assert np.all(np.round(k) <= levels)
    f = levels * np.abs(g) / norm % 1
    var = (norm / levels) ** 2 * f * (1 - f)
    fn = lambda x, rng: G.qsgd(x, levels=levels, rng=rng)  # noqa: E731
    assert _unbiased(fn, g, var)
    nearest = lambda x, rng: norm * np.sign(x) * np.round(levels * np.abs(x) / norm) / levels  # noqa: E731
    assert not _unbiased(nearest, g, var)


def test_qsgd_exact_variance_against_monte_carlo(rng):
    g = rng.normal(size=50)
    r = np.random.default_rng(7)
    for s in (1, 3):
        draws = np.array([G.qsgd(g, levels=s, rng=r) for _ in range(20000)])
        emp = ((draws - g) ** 2).sum(axis=1).mean()
        assert emp == pytest.approx(G.qsgd_variance(g, levels=s), rel=0.03)


@given(st.integers(1, 200), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_qsgd_variance_bound_lemma_3_1(n, s, seed):
    g = np.random.default_rng(seed).standard_cauchy(size=n)
    bound = G.qsgd_variance_bound(n, levels=s) * float(g @ g)
    assert G.qsgd_variance(g, levels=s) <= bound * (1 + 1e-9)


def test_qsgd_variance_bound_nearly_tight():
    # all-equal entries, s = 1: variance (sqrt(n) - 1) ||g||^2, against the bound sqrt(n) ||g||^2
    n = 400
    g = np.ones(n)
    assert G.qsgd_variance(g, levels=1) == pytest.approx((math.sqrt(n) - 1) * n)
    assert G.qsgd_variance_bound(n, levels=1) == pytest.approx(math.sqrt(n))
    assert G.qsgd_variance_bound(n, levels=40) == pytest.approx(n / 40**2)


def test_qsgd_buckets(rng):
    g = rng.normal(size=(10, 7))
    q = G.qsgd(g, levels=1, rng=0, bucket_size=10)
    flat, qf = g.reshape(-1), q.reshape(-1)
    for b in range(0, 70, 10):
        nb = np.linalg.norm(flat[b:b + 10])
        assert set(np.round(np.abs(qf[b:b + 10]) / nb, 12)) <= {0.0, 1.0}
    # one bucket holding everything equals no bucketing
    assert np.array_equal(G.qsgd(g, levels=3, rng=4, bucket_size=1000), G.qsgd(g, levels=3, rng=4))
    var_b = G.qsgd_variance(g, levels=2, bucket_size=8)
    assert var_b <= G.qsgd_variance_bound(8, levels=2) * float((g * g).sum()) + 1e-12


def test_qsgd_exact_on_grid_and_zero():
    assert np.array_equal(G.qsgd([3.0, -4.0], levels=5, rng=0), [3.0, -4.0])
    assert np.array_equal(G.qsgd(np.zeros(4), levels=2, rng=0), np.zeros(4))


# --------------------------------------------------------------------------------------
# 1-bit SGD and error feedback
# --------------------------------------------------------------------------------------


def test_one_bit_means_per_tensor_and_per_column():
    g = np.array([[1.0, -2.0], [3.0, -4.0], [-1.0, 0.0]])
    q = G.one_bit(g)
    assert np.allclose(q[g >= 0], np.mean(g[g >= 0]))
    assert np.allclose(q[g < 0], np.mean(g[g < 0]))
    qc = G.one_bit(g, axis=0)                              # one pair per column
    assert np.allclose(qc[:, 0], [2.0, 2.0, -1.0])
    assert np.allclose(qc[:, 1], [-3.0, -3.0, 0.0])
    # the sum of each side is preserved
    assert (qc * (g >= 0)).sum() == pytest.approx((g * (g >= 0)).sum())


@pytest.mark.parametrize("quantizer", [G.GradientQuantizer("one_bit"), G.GradientQuantizer("qsgd", levels=16)])
def test_error_feedback_bounded_and_tracks_sum(rng, quantizer):
    n, steps = 64, 400
    ef = G.ErrorFeedback(quantizer)
    r = np.random.default_rng(1)
    total_g = np.zeros(n)
    total_sent = np.zeros(n)
    norms = []
    for _ in range(steps):
        g = rng.normal(size=n) + 0.3                       # a persistent mean, as gradients have
        total_sent += ef(g, rng=r)
        total_g += g
        norms.append(np.linalg.norm(ef.error))
    assert np.allclose(total_sent, total_g - ef.error)     # telescoping sum
    assert max(norms) < 6 * math.sqrt(n)                   # bounded: no growth with the step count
    assert np.mean(norms[-100:]) < 2 * np.mean(norms[50:150]) + 1
    # without feedback, 1-bit's bias accumulates: the sum drifts linearly
    if quantizer.method == "one_bit":
        r2 = np.random.default_rng(1)
        rng2 = np.random.default_rng(99)
        drift = np.zeros(n)
        for _ in range(steps):
            g = rng2.normal(size=n) + 0.3
            drift += quantizer(g, rng=r2) - g
        assert np.linalg.norm(drift) > 5 * max(norms)


def test_error_feedback_state_and_errors():
    ef = G.ErrorFeedback(G.GradientQuantizer("terngrad"))
    g = _ro(np.array([0.5, -0.25, 0.125], dtype=np.float32))
    out = ef(g, rng=0)
    assert out.dtype == np.float32 and ef.error.shape == (3,)
    assert np.allclose(out + ef.error, g)
    with pytest.raises(ValueError, match="shape"):
        ef(np.zeros(4), rng=0)
    ef.reset()
    assert ef.error is None
    with pytest.raises(TypeError, match="quantizer must be callable"):
        G.ErrorFeedback(3)


# --------------------------------------------------------------------------------------
# Bits
# --------------------------------------------------------------------------------------


def test_bits():
    shape = (64, 64)
    n = 4096
    assert G.GradientQuantizer("none").bits(shape) == 32 * n
    assert G.GradientQuantizer("terngrad").bits(shape) == 2 * n + 32
    assert G.GradientQuantizer("terngrad").bits(shape, packed=True) == pytest.approx(n * math.log2(3) + 32)
    assert G.GradientQuantizer("qsgd", levels=1).bits(shape) == 2 * n + 32
    assert G.GradientQuantizer("qsgd", levels=7).bits(shape) == 4 * n + 32
    assert G.GradientQuantizer("qsgd", levels=2, bucket_size=512).bits(shape) == 3 * n + 8 * 32
    assert G.GradientQuantizer("one_bit").bits(shape) == n + 64
    assert G.GradientQuantizer("one_bit", axis=0).bits(shape) == n + 64 * 64
    # TernGrad's reduction of 32-bit gradients: 16x in the limit of large layers
    assert 32 * n / G.GradientQuantizer("terngrad").bits(shape) == pytest.approx(16, rel=0.01)


# --------------------------------------------------------------------------------------
# Data-parallel training
# --------------------------------------------------------------------------------------


def test_one_worker_unquantized_equals_fit(digits):
    X, y = digits.X_train[:300], digits.y_train[:300]
    a, b = nn.mlp((16,), rng=0), nn.mlp((16,), rng=0)
    h1 = nn.fit(a, X, y, epochs=2, optimizer=nn.SGD(a.parameters(), lr=0.1, momentum=0.9), batch_size=32,
                rng=3, progress=False)
    h2 = G.fit_data_parallel(b, X, y, workers=1, epochs=2, optimizer=nn.SGD(b.parameters(), lr=0.1, momentum=0.9),
                             batch_size=32, rng=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.array_equal(p.data, q.data)
    assert (h1.loss, h1.train_acc) == (h2.loss, h2.train_acc)      # one loop (nn.fit's), bit for bit
    assert isinstance(h2, G.DataParallelHistory) and len(h2.seconds) == len(h2.bits) == 2
    # four workers, no quantizer: the same gradient up to float rounding
    c = nn.mlp((16,), rng=0)
    G.fit_data_parallel(c, X, y, workers=4, epochs=2, optimizer=nn.SGD(c.parameters(), lr=0.1, momentum=0.9),
                        batch_size=32, rng=3)
    for p, q in zip(a.parameters(), c.parameters()):
        assert np.allclose(p.data, q.data, atol=1e-4)


@pytest.mark.parametrize("quantizer, ef, floor", [
    (G.GradientQuantizer("terngrad"), False, 0.92),          # measured 0.942 (fp32: see the chapter)
    (G.GradientQuantizer("qsgd", levels=4), False, 0.92),    # measured 0.936
    (G.GradientQuantizer("one_bit"), True, 0.75),             # measured 0.791; without feedback ~0.3
])
def test_digits_training_reaches_accuracy(digits, quantizer, ef, floor):
    net = nn.mlp((64,), rng=0)
    h = G.fit_data_parallel(net, digits.X_train, digits.y_train, workers=4, quantizer=quantizer, error_feedback=ef,
                            epochs=4, optimizer=nn.SGD(net.parameters(), lr=0.05, momentum=0.9), rng=0)
    assert not h.diverged
    assert nn.accuracy(net, digits.X_test, digits.y_test) >= floor
    full, rest = divmod(len(digits.X_train), 64)             # 21 full steps, then 3 examples on 3 workers
    assert h.bits[-1] == 4 * (full * h.bits_per_step + min(rest, 4) * h.bits_per_step // 4)
    assert h.fp32_bits_per_step / h.bits_per_step > 7                # 8x for QSGD s=4, ~16x TernGrad, ~30x 1-bit


def test_one_bit_without_feedback_fails_and_divergence_is_reported(digits):
    X, y = digits.X_train[:400], digits.y_train[:400]
    net = nn.mlp((32,), rng=0)
    G.fit_data_parallel(net, X, y, workers=4, quantizer="one_bit", epochs=3,
                        optimizer=nn.SGD(net.parameters(), lr=0.05, momentum=0.9), rng=0)
    assert nn.accuracy(net, digits.X_test, digits.y_test) < 0.6
    net = nn.mlp((32,), rng=0)
    h = G.fit_data_parallel(net, X, y, workers=2, epochs=3, optimizer=nn.SGD(net.parameters(), lr=1e36), rng=0)
    assert h.diverged and math.isnan(h.loss[-1])
    assert all(np.isfinite(p.data).all() for p in net.parameters()) and not net.training   # last finite step kept


def test_divergence_in_a_later_epoch_keeps_the_finished_epochs(digits):
    X, y = digits.X_train[:128], digits.y_train[:128]

    class BlowUpAfter(nn.SGD):                         # finite steps, then an infinite weight at step 3
        n = 0

        def step(self):
            super().step()
            BlowUpAfter.n += 1
            if BlowUpAfter.n == 3:
                self.params[-1].data[0] = np.inf         # the output bias: logits inf, loss NaN

    net = nn.mlp((8,), rng=0)
    h = G.fit_data_parallel(net, X, y, workers=2, epochs=4, optimizer=BlowUpAfter(net.parameters(), lr=0.1),
                            rng=0, X_val=X, y_val=y)
    assert h.diverged and len(h.loss) == 2 and math.isnan(h.loss[1]) and np.isfinite(h.loss[0])
    assert len(h.train_acc) == len(h.val_acc) == len(h.seconds) == len(h.bits) == 1
    assert h.bits == [2 * h.bits_per_step]            # two full steps in the one finished epoch


def test_trainer_does_not_modify_inputs(digits):
    X, y = _ro(digits.X_train[:100]), _ro(digits.y_train[:100])
    net = nn.mlp((8,), rng=0)
    G.fit_data_parallel(net, X, y, workers=3, quantizer=G.GradientQuantizer("qsgd", levels=2), error_feedback=True,
                        epochs=1, optimizer=nn.SGD(net.parameters(), lr=0.1), batch_size=10, rng=0)


# --------------------------------------------------------------------------------------
# Bad input, inputs untouched
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [
    lambda g: G.terngrad(g, rng=0), lambda g: G.qsgd(g, levels=2, rng=0), lambda g: G.one_bit(g),
    lambda g: G.qsgd_variance(g, levels=2),
])
def test_bad_gradients(fn):
    with pytest.raises(ValueError, match="g must be finite"):
        fn(np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="g must"):
        fn(np.array([1, 2]))
    g = _ro(np.array([[0.5, -1.0], [2.0, 0.0]]))
    fn(g)                                                   # read-only input: a write would raise


def test_bad_options(digits):
    with pytest.raises(ValueError, match="levels must be a positive integer, got 0"):
        G.qsgd([1.0], levels=0)
    with pytest.raises(TypeError, match="levels must be an integer"):
        G.qsgd([1.0], levels=1.5)
    with pytest.raises(ValueError, match="clip must be finite and > 0"):
        G.terngrad([1.0], clip=-1.0)
    with pytest.raises(ValueError, match="bucket_size must be a positive integer"):
        G.qsgd([1.0], levels=1, bucket_size=0)
    with pytest.raises(ValueError, match="axis must be in"):
        G.one_bit(np.zeros((2, 2)), axis=2)
    with pytest.raises(ValueError, match="method must be one of"):
        G.GradientQuantizer("fourbit")
    with pytest.raises(TypeError, match="takes the options"):
        G.GradientQuantizer("terngrad", levels=2)
    with pytest.raises(TypeError, match="needs the option levels"):
        G.GradientQuantizer("qsgd")
    with pytest.raises(ValueError, match="levels must be a positive integer"):
        G.GradientQuantizer("qsgd", levels=-1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        G.qsgd_variance_bound(0, levels=1)
    net = nn.mlp((8,), rng=0)
    opt = nn.SGD(net.parameters(), lr=0.1)
    X, y = digits.X_train[:20], digits.y_train[:20]
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        G.fit_data_parallel(net, X, y, workers=0, epochs=1, optimizer=opt)
    with pytest.raises(TypeError, match="model must be a Module"):
        G.fit_data_parallel("net", X, y, workers=1, epochs=1, optimizer=opt)
    with pytest.raises(TypeError, match="quantizer must be None"):
        G.fit_data_parallel(net, X, y, workers=1, epochs=1, optimizer=opt, quantizer=3)
    with pytest.raises(TypeError, match="bits"):
        G.fit_data_parallel(net, X, y, workers=1, epochs=1, optimizer=opt, quantizer=lambda g, rng=None: g)
    with pytest.raises(TypeError, match="error_feedback must be True or False"):
        G.fit_data_parallel(net, X, y, workers=1, epochs=1, optimizer=opt, error_feedback=1)
    with pytest.raises(ValueError, match="y must have shape"):
        G.fit_data_parallel(net, X, y[:5], workers=1, epochs=1, optimizer=opt)
