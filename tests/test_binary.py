"""Binary and ternary weights (qref.binary): optimality against brute force, paper rules, bad input."""

import itertools

import numpy as np
import pytest

from qref import binary as BI


def _err(w, w_hat):
    return float(np.sum((np.asarray(w, np.float64) - w_hat) ** 2))


def test_sign_at_zero_and_dtypes():
    x = np.array([-1.5, -0.0, 0.0, 2.0], np.float32)
    assert BI.sign(x).tolist() == [-1, 1, 1, 1]
    y = BI.binarize(x)
    assert y.dtype == np.float32 and y.tolist() == [-1, 1, 1, 1]
    assert BI.binarize(x.astype(np.float16)).dtype == np.float16


def test_hard_sigmoid_and_stochastic(rng):
    x = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    np.testing.assert_array_equal(BI.hard_sigmoid(x), [0, 0, 0.5, 0.75, 1, 1])
    xs = np.repeat(np.array([-1.0, -0.5, 0.0, 0.3, 1.0], np.float32), 20_000)
    b = BI.binarize_stochastic(xs, rng=rng)
    assert b.dtype == np.float32 and set(np.unique(b)) <= {-1.0, 1.0}
    means = b.reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(means, [-1.0, -0.5, 0.0, 0.3, 1.0], atol=0.02)  # unbiased on [-1, 1]
    np.testing.assert_array_equal(BI.binarize_stochastic(xs, rng=3), BI.binarize_stochastic(xs, rng=3))


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_bwn_scale_minimises_l2(rng, axis):
    w = rng.laplace(size=(4, 50))
    b, alpha = BI.binarize_bwn(w, axis=axis)
    assert b.dtype == np.int8 and alpha.shape == ((1, 1) if axis is None else (4, 1) if axis == 0 else (1, 50))
    np.testing.assert_array_equal(b, np.where(w >= 0, 1, -1))
    grid = np.linspace(0.0, 3.0, 30_001)
    rows = [w.ravel()] if axis is None else list(w) if axis == 0 else list(w.T)
    for r, a in zip(rows, alpha.ravel()):
        errs = ((r[None, :] - grid[:, None] * np.where(r >= 0, 1, -1)[None, :]) ** 2).sum(axis=1)
        best = grid[np.argmin(errs)]
        assert abs(best - a) <= 1e-4
        assert _err(r, a * np.sign(r)) <= errs.min() + 1e-12


def test_bwn_signs_are_optimal_brute_force(rng):
    w = rng.normal(size=8)
    _, alpha = BI.binarize_bwn(w, axis=None)
    e = _err(w, alpha * BI.sign(w))
    for s in itertools.product((-1, 1), repeat=8):
        s = np.array(s)
        a = w @ s / 8  # best alpha for these signs
        assert _err(w, a * s) >= e - 1e-12


def test_xnor_scales_and_matmul(rng):
    x, w = rng.normal(size=(5, 130)), rng.normal(size=(7, 130))
    K = BI.xnor_scale_matmul(x)
    np.testing.assert_allclose(K[:, 0], np.abs(x).mean(axis=1))
    _, alpha = BI.binarize_bwn(w)
    ref = (np.sign(x) @ np.sign(w).T) * K * alpha.T
    np.testing.assert_allclose(BI.xnor_matmul(x, w), ref, rtol=1e-12)
    # conv: K at each output position is the mean |x| over channels and the receptive field
    xi = rng.normal(size=(2, 3, 6, 5)).astype(np.float32)
    Kc = BI.xnor_scale_conv2d(xi, (3, 2))
    assert Kc.shape == (2, 1, 4, 4) and Kc.dtype == np.float32
    np.testing.assert_allclose(Kc[1, 0, 2, 3], np.abs(xi[1, :, 2:5, 3:5]).mean(), rtol=1e-6)


def test_abc_shifts_and_error_decreasing(rng):
    np.testing.assert_array_equal(BI.abc_shifts(5), [-1, -0.5, 0, 0.5, 1])
    for w in (rng.normal(size=2000), rng.laplace(size=(20, 50))):
        errs = []
        for m in range(1, 6):
            bases, alphas = BI.binarize_abc(w, m=m)
            assert bases.shape == (m,) + w.shape and bases.dtype == np.int8
            errs.append(_err(w, np.tensordot(alphas, bases, 1)))
        assert all(e1 <= e0 for e0, e1 in zip(errs, errs[1:])), errs
        # with nested shift lists the error can never increase (a theorem, not just data)
        nested = [_err(w, np.tensordot(a, b, 1)) for b, a in
                  (BI.binarize_abc(w, shifts=[-1.0, 0.0, 1.0, -0.5, 0.5, 0.25][:k]) for k in range(1, 7))]
        assert all(e1 <= e0 + 1e-9 for e0, e1 in zip(nested, nested[1:]))
    # M=1 is BWN per tensor on the centred signs; alpha the least-squares value
    w = rng.normal(size=300)
    b, a = BI.binarize_abc(w, m=1)
    s = np.where(w - w.mean() >= 0, 1, -1)
    np.testing.assert_array_equal(b[0], s)
    np.testing.assert_allclose(a[0], w @ s / w.size)


def _twn_brute(w):
    """Best (error, alpha) over every threshold t in {0} U |w| (the codes nonzero where |w| > t)."""
    best = (np.inf, None)
    for t in np.concatenate([[0.0], np.abs(w)]):
        keep = np.abs(w) > t
        a = np.abs(w[keep]).mean() if keep.any() else 0.0
        best = min(best, (_err(w, a * np.sign(w) * keep), a), key=lambda p: p[0])
    return best


def test_twn_exact_equals_brute_force_and_beats_approx(rng):
    for trial in range(40):
        w = rng.normal(size=int(rng.integers(1, 12)))
        if trial % 3 == 0:
            w = np.round(w, 1)  # ties and zeros
        t, alpha, delta = BI.ternarize_twn(w)
        e = _err(w, alpha * t)
        e_brute, _ = _twn_brute(w)
        assert abs(e - e_brute) <= 1e-12 * max(1.0, e_brute)
        np.testing.assert_array_equal(t, np.where(np.abs(w) > delta, np.sign(w), 0))
        ta, aa, _ = BI.ternarize_twn(w, method="approx")
        assert e <= _err(w, aa * ta) + 1e-12
    w = rng.standard_t(3, size=5000)  # heavy tails: the 0.7 rule is noticeably worse
    t, a, _ = BI.ternarize_twn(w)
    ta, aa, da = BI.ternarize_twn(w, method="approx")
    assert _err(w, a * t) < _err(w, aa * ta)
    assert da.item() == pytest.approx(0.7 * np.abs(w).mean())


def test_twn_gaussian_threshold_near_theory(rng):
    w = rng.normal(size=200_000)
    _, _, delta = BI.ternarize_twn(w)
    assert delta.item() == pytest.approx(0.612, abs=0.02)  # Delta* = 0.612 sigma for N(0, 1)


def test_twn_per_channel_and_fgq(rng):
    w = rng.normal(size=(8, 30)).astype(np.float32)
    t, a, d = BI.ternarize_twn(w, axis=0)
    assert a.shape == (8, 1) and a.dtype == np.float32 and t.dtype == np.int8
    for c in range(8):
        tc, ac, _ = BI.ternarize_twn(w[c])
        np.testing.assert_array_equal(tc, t[c])
        assert ac[0] == a[c, 0]
    t1, a1, _ = BI.ternarize_fgq(w, group_size=1)
    np.testing.assert_array_equal(t1, t)
    np.testing.assert_array_equal(a1, a)
    t8, a8, _ = BI.ternarize_fgq(w, group_size=8)
    tt, at, _ = BI.ternarize_twn(w)
    np.testing.assert_array_equal(t8, tt)
    np.testing.assert_array_equal(a8, np.broadcast_to(at, (8, 1)))
    errs = [_err(w, np.asarray(a, np.float64) * t) for t, a, _ in (BI.ternarize_fgq(w, group_size=g) for g in (8, 4, 2, 1))]
    assert all(e1 <= e0 + 1e-6 for e0, e1 in zip(errs, errs[1:]))  # finer groups nest: never worse
    t2, a2, _ = BI.ternarize_fgq(w, group_size=2, axis=1)
    assert a2.shape == (1, 30) and a2[0, 0] == a2[0, 1]


def test_ttq(rng):
    w = rng.normal(size=1000)
    t, wp, wn, delta = BI.ternarize_ttq(w, threshold=0.05)
    assert delta == pytest.approx(0.05 * np.abs(w).max())
    np.testing.assert_array_equal(t, (w > delta).astype(int) - (w < -delta).astype(int))
    assert wp == pytest.approx(w[w > delta].mean()) and wn == pytest.approx(-w[w < -delta].mean())
    t2, wp2, wn2, _ = BI.ternarize_ttq(w, wp=0.5, wn=2.0)
    np.testing.assert_array_equal(t2, t)
    assert (wp2, wn2) == (0.5, 2.0)
    # fitted scales are the least-squares ones for the fixed codes
    w_hat = np.where(t > 0, wp, np.where(t < 0, -wn, 0.0))
    for dp, dn in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        assert _err(w, w_hat) <= _err(w, np.where(t > 0, wp + dp, np.where(t < 0, -wn - dn, 0.0)))


def test_inputs_never_modified(rng):
    w = rng.normal(size=(6, 10)).astype(np.float32)
    w.setflags(write=False)
    before = w.copy()
    for f in (BI.binarize, BI.sign, BI.hard_sigmoid, lambda v: BI.binarize_stochastic(v, rng=0), BI.binarize_bwn,
              BI.binarize_abc, BI.ternarize_twn, BI.ternarize_ttq, lambda v: BI.ternarize_fgq(v, group_size=3),
              BI.xnor_scale_matmul, lambda v: BI.xnor_matmul(v, v)):
        f(w)
    np.testing.assert_array_equal(w, before)


def test_bad_input():
    with pytest.raises(TypeError, match="w must have a floating dtype"):
        BI.binarize_bwn(np.ones(3, np.int8))
    with pytest.raises(ValueError, match="w must be finite"):
        BI.ternarize_twn([1.0, np.nan])
    with pytest.raises(ValueError, match="w must not be empty"):
        BI.ternarize_twn(np.zeros(0))
    with pytest.raises(ValueError, match="method must be one of"):
        BI.ternarize_twn([1.0], method="0.7")
    with pytest.raises(ValueError, match="group_size=3 must divide the length 4"):
        BI.ternarize_fgq(np.ones((4, 2)), group_size=3)
    with pytest.raises(ValueError, match="threshold must be in"):
        BI.ternarize_ttq([1.0], threshold=1.5)
    with pytest.raises(ValueError, match="wp must be finite and > 0"):
        BI.ternarize_ttq([1.0, -1.0], wp=-1.0)
    with pytest.raises(ValueError, match="m must be a positive integer"):
        BI.binarize_abc([1.0, 2.0], m=0)
    with pytest.raises(ValueError, match="axis must be in"):
        BI.binarize_bwn(np.ones((2, 2)), axis=2)
    with pytest.raises(ValueError, match="x .M, n. and w .N, n. must be 2-d"):
        BI.xnor_matmul(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="kernel_shape"):
        BI.xnor_scale_conv2d(np.ones((1, 2, 2)), (3, 3))
    with pytest.raises(TypeError, match="rng must be"):
        BI.binarize_stochastic([0.0], rng="seed")


def test_all_zero_weights():
    z = np.zeros((2, 3))
    t, a, d = BI.ternarize_twn(z)
    assert not t.any() and a.item() == 0.0
    b, alpha = BI.binarize_bwn(z)
    assert (b == 1).all() and not alpha.any()
    bases, alphas = BI.binarize_abc(z, m=3)
    np.testing.assert_allclose(np.tensordot(alphas, bases, 1), z, atol=1e-12)
