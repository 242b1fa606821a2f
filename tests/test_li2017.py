"""Stochastic rounding against BinaryConnect (Li et al. 2017), qref.theory: moments, SGD, Markov chain."""

import math

import numpy as np
import pytest

from qref import rounding as R
from qref import theory as T


def _quadratic_grad(w_star, h=1.0, sigma=0.0):
    def grad(w, rng):
        return h * (w - w_star) + (sigma * rng.standard_normal(w.shape) if sigma else 0.0)
    return grad


def test_sr_moments_match_monte_carlo():
    w = np.array([-0.73, -0.5, 0.0, 0.1, 0.37, 1.0])
    delta = 0.25
    mean, var = T.sr_moments(w, delta=delta)
    draws = delta * R.round_stochastic(np.tile(w / delta, (200_000, 1)), rng=0)
    assert np.allclose(draws.mean(axis=0), w, atol=4 * math.sqrt(delta**2 / 4 / 200_000))
    assert np.allclose(draws.var(axis=0), var, rtol=0.02, atol=1e-12)
    assert np.array_equal(mean, w)
    assert var.max() <= delta**2 / 4 and var[1] == 0 and var[2] == 0          # -0.5 and 0 are grid points
    assert T.sr_moments([0.125], delta=0.25)[1][0] == pytest.approx(0.25**2 / 4)


def test_expected_sr_update_is_the_float_update():
    # one SR step from 50,000 copies of the same grid point: the average lands on w - lr g
    delta, lr = 0.1, 0.03
    w0 = np.full(50_000, 0.4)
    grad = _quadratic_grad(-0.123)
    r = T.quantized_sgd(grad, w0, lr=lr, delta=delta, steps=1, rule="sr", rng=3)
    target = 0.4 - lr * (0.4 + 0.123)
    sd = math.sqrt(T.sr_moments([target], delta=delta)[1][0] / w0.size)
    assert abs(r.w_q[1].mean() - target) < 4 * sd
    assert set(np.round(r.w_q[1] / delta).tolist()) == {3.0, 4.0}         # only the two neighbours


def test_quantized_sgd_grid_and_bc_buffer():
    grad = _quadratic_grad(np.array([0.31, -0.17]), sigma=0.2)
    w0 = np.array([1.0, 1.0])
    w0_copy = w0.copy()
    for rule in ("sr", "bc"):
        r = T.quantized_sgd(grad, w0, lr=0.05, delta=0.125, steps=300, rule=rule, rng=7)
        assert r.w_q.shape == r.w_float.shape == (301, 2)
        assert np.allclose(r.w_q / 0.125, np.round(r.w_q / 0.125), atol=1e-12)      # always on the grid
        again = T.quantized_sgd(grad, w0, lr=0.05, delta=0.125, steps=300, rule=rule, rng=7)
        assert np.array_equal(r.w_q, again.w_q)                                         # reproducible
    assert np.array_equal(w0, w0_copy)
    bc = T.quantized_sgd(grad, w0, lr=0.05, delta=0.125, steps=300, rule="bc", rng=7)
    assert np.array_equal(bc.w_q, 0.125 * np.round(bc.w_float / 0.125))
    assert np.array_equal(bc.w_float[0], w0)
    # the BC buffer follows w_{t+1} = w_t - lr * g(Q(w_t)): replay it with the same noise stream
    rng = np.random.default_rng(7)
    w = w0.copy()
    for t in range(300):
        w = w - 0.05 * grad(0.125 * np.round(w / 0.125), rng)
    assert np.allclose(w, bc.w_float[-1])


def test_lr_schedule_and_deterministic_bc_limit_cycle():
    grad = _quadratic_grad(np.array([0.3]))
    r = T.quantized_sgd(grad, [0.0], lr=np.full(400, 0.1), delta=0.25, steps=400, rule="bc", rng=0)
    tail = r.w_q[200:, 0]
    assert set(tail.tolist()) == {0.25, 0.5}
    # the time average of BC's quantized weights is w* (sigma-delta behaviour): 4:1 split of 0.25 and 0.5
    assert abs(tail.mean() - 0.3) < 0.01
    assert abs(r.w_float[-1, 0] - 0.375) < 0.1 * 0.25


def test_transition_matrix_noiseless_closed_form():
    q = np.arange(-4, 5) * 0.25
    lr, h, w_star = 0.1, 1.5, 0.3
    P = T.sr_transition_matrix(q, lr=lr, curvature=h, minimum=w_star)
    assert np.allclose(P.sum(axis=1), 1.0)
    for i, qi in enumerate(q):
        step = lr * h * abs(qi - w_star)                # < delta everywhere on this grid
        assert step < 0.25
        j = i + (1 if qi < w_star else -1)
        assert P[i, j] == pytest.approx(step / 0.25)
        assert P[i, i] == pytest.approx(1 - step / 0.25)


@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_transition_matrix_matches_simulated_step(sigma):
    q = np.arange(-8, 9) * 0.1
    lr, h, w_star = 0.1, 2.0, 0.07
    P = T.sr_transition_matrix(q, lr=lr, curvature=h, minimum=w_star, noise_std=sigma)
    rng = np.random.default_rng(1)
    n = 100_000
    for i in (0, 5, 8, 16):
        u = q[i] - lr * (h * (q[i] - w_star) + sigma * rng.standard_normal(n))
        k = np.clip(R.round_stochastic(u / 0.1, rng=rng).astype(int) + 8, 0, 16)     # ends absorb the rest
        freq = np.bincount(k, minlength=17) / n
        assert np.abs(freq - P[i]).max() < 0.01


def test_stationary_distribution_small_and_simulated():
    assert np.allclose(T.stationary_distribution([[0.9, 0.1], [0.3, 0.7]]), [0.75, 0.25])
    q = np.arange(-6, 7) * 0.1
    lr, h, w_star, sigma = 0.2, 1.0, 0.04, 0.5
    pi = T.stationary_distribution(T.sr_transition_matrix(q, lr=lr, curvature=h, minimum=w_star, noise_std=sigma))
    assert np.allclose(pi @ T.sr_transition_matrix(q, lr=lr, curvature=h, minimum=w_star, noise_std=sigma), pi)
    r = T.quantized_sgd(_quadratic_grad(np.array([w_star]), h, sigma), [0.0], lr=lr, delta=0.1, steps=60_000,
                        rule="sr", rng=2)
    k = np.clip(np.round(r.w_q[1000:, 0] / 0.1).astype(int) + 6, 0, 12)
    freq = np.bincount(k, minlength=13) / k.size
    assert 0.5 * np.abs(freq - pi).sum() < 0.03                         # total variation


@pytest.mark.parametrize("w_star", [0.3, -0.61, 0.05])
def test_two_point_stationary_is_independent_of_lr(w_star):
    delta = 0.25
    levels, probs, excess = T.sr_two_point_stationary(w_star, delta=delta, curvature=2.0)
    q = np.arange(-5, 6) * delta
    for lr in (0.2, 0.02, 0.002):
        pi = T.stationary_distribution(T.sr_transition_matrix(q, lr=lr, curvature=2.0, minimum=w_star))
        on = np.isin(q, levels)
        assert np.allclose(pi[on], probs, atol=1e-9) and pi[~on].max() < 1e-9
        assert np.dot(pi, q) == pytest.approx(w_star)                   # unbiased on average
        assert np.dot(pi, (q - w_star) ** 2) == pytest.approx(excess)   # h/2 E(w - w*)^2, h = 2
    assert excess <= 2.0 * delta**2 / 8


def test_sr_floor_does_not_shrink_with_lr_but_bc_does():
    # Li et al. (2017), Sec. 5: SR's stationary distribution has a limit as lr -> 0
    q = np.arange(-20, 21) * 0.1
    err = []
    for lr in (1e-2, 1e-3, 1e-4):
        pi = T.stationary_distribution(T.sr_transition_matrix(q, lr=lr, curvature=1.0, minimum=0.04, noise_std=1.0))
        err.append(0.5 * np.dot(pi, (q - 0.04) ** 2))
    assert abs(err[1] / err[0] - 1) < 0.05 and abs(err[2] / err[1] - 1) < 0.01
    assert err[2] > 0.5 * 0.1**2 / 4                                   # well above the 2-point floor
    # BC on the same problem: the quantized weights' excess loss drops as lr drops
    grad = _quadratic_grad(np.array([0.04]), 1.0, 1.0)
    bc = [0.5 * np.mean((T.quantized_sgd(grad, [0.0], lr=lr, delta=0.1, steps=int(40 / lr), rule="bc",
                                         rng=4).w_q[int(20 / lr):, 0] - 0.04) ** 2) for lr in (0.1, 0.01)]
    assert bc[1] < 0.5 * bc[0] and bc[1] < 0.5 * err[0]


def test_least_squares_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = rng.normal(size=30)
    p = T.LeastSquares(X, y, batch_size=30)
    assert np.allclose(p.grad(p.w_star), 0.0, atol=1e-12)
    w = rng.normal(size=3)
    assert p.excess_loss(w) == pytest.approx(0.5 * (w - p.w_star) @ p.hessian @ (w - p.w_star))
    eps = 1e-6
    num = [(p.loss(w + eps * e) - p.loss(w - eps * e)) / (2 * eps) for e in np.eye(3)]
    assert np.allclose(p.grad(w), num, atol=1e-6)
    sgd = T.LeastSquares(X, y, batch_size=1)
    g = np.mean([sgd.grad(w, r) for r in np.random.default_rng(1).integers(0, 2**31, 20_000)], axis=0)
    assert np.allclose(g, p.grad(w), atol=0.1)                         # unbiased minibatch gradient
    assert p.loss(np.stack([w, p.w_star])).shape == (2,)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(rule="round"), ValueError), (dict(delta=0.0), ValueError), (dict(steps=0), ValueError),
    (dict(lr=-0.1), ValueError), (dict(lr=[0.1, 0.1]), ValueError), (dict(w0=[[0.0]]), ValueError),
    (dict(w0=[np.nan]), ValueError), (dict(grad=3), TypeError),
    (dict(grad=lambda w, rng: np.array([np.inf])), ValueError),
    (dict(grad=lambda w, rng: np.zeros(2)), ValueError),
])
def test_quantized_sgd_bad_input(kwargs, exc):
    args = dict(grad=lambda w, rng: w, w0=[0.5], lr=0.1, delta=0.25, steps=3, rule="sr")
    args.update(kwargs)
    with pytest.raises(exc):
        T.quantized_sgd(args.pop("grad"), args.pop("w0"), **args)


def test_bad_input_markov_and_problem():
    with pytest.raises(ValueError, match="evenly spaced"):
        T.sr_transition_matrix([0.0, 1.0, 3.0], lr=0.1, curvature=1.0, minimum=0.0)
    with pytest.raises(ValueError, match="levels"):
        T.sr_transition_matrix([0.0], lr=0.1, curvature=1.0, minimum=0.0)
    with pytest.raises(ValueError, match="noise_std"):
        T.sr_transition_matrix([0.0, 1.0], lr=0.1, curvature=1.0, minimum=0.0, noise_std=-1)
    with pytest.raises(ValueError, match="curvature"):
        T.sr_transition_matrix([0.0, 1.0], lr=0.1, curvature=0.0, minimum=0.0)
    with pytest.raises(ValueError, match="row-stochastic"):
        T.stationary_distribution([[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(ValueError, match="delta"):
        T.sr_moments([1.0], delta=-1)
    with pytest.raises(ValueError, match="delta"):
        T.sr_two_point_stationary(0.1, delta=0)
    with pytest.raises(ValueError, match="batch_size"):
        T.LeastSquares(np.ones((3, 2)), np.ones(3), batch_size=4)
    with pytest.raises(ValueError, match="shape"):
        T.LeastSquares(np.ones((3, 2)), np.ones(2))


def test_integer_learning_rate_is_accepted():
    grad = lambda w, gen: 2.0 * (w - 0.3)  # noqa: E731
    a = T.quantized_sgd(grad, [0.0], lr=1, delta=0.25, steps=5, rule="bc", rng=0)
    b = T.quantized_sgd(grad, [0.0], lr=1.0, delta=0.25, steps=5, rule="bc", rng=0)
    assert np.array_equal(a.w_float, b.w_float) and np.array_equal(a.w_q, b.w_q)
