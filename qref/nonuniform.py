r"""Non-uniform scalar quantization: Lloyd-Max, powers of two (INQ, LogQuant), ShiftCNN and HWGQ.

Sections of this module, in the order of the book chapter "Non-uniform quantization":

* **Lloyd-Max** (:func:`lloyd_max`, :func:`lloyd_max_data`), the MSE of any level set on a
  density (:func:`quantizer_mse`, :func:`decision_thresholds`) and the best *uniform* quantizer
  it is compared with (:func:`optimal_uniform`);
* **powers of two** with INQ's exponent range and nearest-level rule
  (:func:`inq_exponent_range`, :func:`power_of_two_levels`, :func:`power_of_two_quantize`);
* **logarithmic quantization**, LogQuant of Miyashita et al. (:func:`log_quantize`,
  :func:`log_levels`), base 2 or :math:`\sqrt 2`;
* **LogNet**'s multiplier-free dot products of log-quantized weights and activations, by
  shifts (:func:`log_encode`, :func:`log_shift_dot`) and with log-domain accumulation
  (:func:`log_add`, :func:`log_accumulate`, :func:`log_domain_dot`);
* **ShiftCNN**'s sums of powers of two (:func:`shiftcnn_codebook`, :func:`shiftcnn_encode`,
  :func:`shiftcnn_decode`, :func:`shiftcnn_quantize`);
* **HWGQ**, the half-wave Gaussian quantizer of ReLU activations (:func:`hwgq_levels`,
  :func:`hwgq_quantize`).

The Lloyd-Max quantizer in detail:

A scalar quantizer with :math:`n` levels :math:`y_1 < \dots < y_n` and thresholds
:math:`t_1 < \dots < t_{n-1}` maps :math:`x \in (t_{i-1}, t_i]` to :math:`y_i`
(with :math:`t_0 = -\infty`, :math:`t_n = +\infty`). Its mean squared error for a density
:math:`f` is

.. math::

    D = \sum_{i=1}^{n} \int_{t_{i-1}}^{t_i} (x - y_i)^2 f(x)\,dx .

Lloyd (1982, "Method I") and Max (1960) gave the two necessary conditions of a minimum:

* **nearest neighbour**: each threshold is the midpoint of its two levels,
  :math:`t_i = (y_i + y_{i+1})/2`;
* **centroid**: each level is the conditional mean of its cell,
  :math:`y_i = \mathbb{E}[X \mid t_{i-1} < X \le t_i]`.

Alternating the two never increases :math:`D`; for a log-concave density (Gaussian, Laplace,
uniform) the fixed point is the unique optimum (Fleischer 1964). :func:`lloyd_max` runs the
iteration on a unit-variance density, with the cell probabilities and moments in closed form
(:math:`\operatorname{erf}` for the Gaussian, exponentials for the Laplace), so no numerical
integration and no scipy. :func:`lloyd_max_data` runs the same iteration on samples, where
it is 1-d k-means (for the exact optimum on data see :func:`qref.vq.kmeans_1d_optimal`).

References
----------
Lloyd, S. P. (1982). Least squares quantization in PCM. IEEE Trans. Inf. Theory 28(2),
129-137 (written 1957).

Max, J. (1960). Quantizing for minimum distortion. IRE Trans. Inf. Theory 6(1), 7-12.

Zhou, A., Yao, A., Guo, Y., Xu, L. and Chen, Y. (2017). Incremental network quantization:
towards lossless CNNs with low-precision weights. ICLR.

Miyashita, D., Lee, E. H. and Murmann, B. (2016). Convolutional neural networks using
logarithmic data representation. arXiv:1603.01025.

Lee, E. H., Miyashita, D., Chai, E., Murmann, B. and Wong, S. S. (2017). LogNet:
energy-efficient neural networks using logarithmic computation. ICASSP, 5900-5904.

Gudovskiy, D. A. and Rigazio, L. (2017). ShiftCNN: generalized low-precision architecture for
inference of convolutional neural networks. arXiv:1706.02393.

Cai, Z., He, X., Sun, J. and Vasconcelos, N. (2017). Deep learning with low precision by
half-wave Gaussian quantization. CVPR.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import numpy as np

from ._validation import (as_float_array, as_int_array, check_bits, check_bool, check_choice,
                          check_float_dtype, check_int, check_positive)

__all__ = [
    "LloydMax", "lloyd_max", "lloyd_max_data", "DENSITIES",
    "inq_exponent_range", "power_of_two_levels", "power_of_two_quantize", "POWER_OF_TWO_RULES",
    "decision_thresholds", "quantizer_mse", "optimal_uniform", "log_levels", "log_quantize", "LOG_BASES",
    "log_encode", "log_shift_dot", "log_add", "log_accumulate", "log_domain_dot",
    "shiftcnn_codebook", "shiftcnn_encode", "shiftcnn_decode", "shiftcnn_quantize",
    "hwgq_levels", "hwgq_quantize",
]

#: the unit-variance densities :func:`lloyd_max` knows in closed form
DENSITIES = ("gaussian", "laplace", "uniform")


class LloydMax(NamedTuple):
    """Result of :func:`lloyd_max` / :func:`lloyd_max_data`.

    Attributes
    ----------
    levels : ndarray, shape (n,), float64, increasing
        The reconstruction values :math:`y_1 < \\dots < y_n`.
    thresholds : ndarray, shape (n - 1,), float64, increasing
        The interior decision thresholds :math:`t_i = (y_i + y_{i+1})/2` (the infinite end
        thresholds are left out, as in Max's table).
    mse : float
        The mean squared error :math:`D` of the quantizer (per sample, for data).
    """

    levels: np.ndarray
    thresholds: np.ndarray
    mse: float


# --------------------------------------------------------------------------------------
# Tail moments of the unit-variance densities
# --------------------------------------------------------------------------------------
# For a density symmetric about 0 it is enough to know, for t >= 0, the tail moments
#     T_k(t) = int_t^inf x^k f(x) dx,   k = 0, 1, 2,
# and every moment over an interval [a, b] follows (see _cell_moments).

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LAPLACE_B = 1.0 / math.sqrt(2.0)  # Laplace scale with variance 2 b^2 = 1
_SQRT3 = math.sqrt(3.0)  # the unit-variance uniform lives on [-sqrt 3, sqrt 3]
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _tails_gaussian(t):
    """T_0, T_1, T_2 of the standard normal at t >= 0 (may be inf).

    T_0 = erfc(t / sqrt 2) / 2, T_1 = phi(t), T_2 = T_0 + t phi(t) (integration by parts).
    """
    t0 = 0.5 * _erfc(t / _SQRT2).astype(np.float64)
    fin = np.isfinite(t)
    tt = np.where(fin, t, 0.0)
    phi = np.where(fin, _INV_SQRT_2PI * np.exp(-0.5 * tt * tt), 0.0)
    return t0, phi, t0 + tt * phi


def _tails_laplace(t):
    """T_0, T_1, T_2 of the Laplace density f(x) = exp(-|x|/b) / (2b), b = 1/sqrt 2, at t >= 0.

    T_0 = e/2, T_1 = (t + b) e/2, T_2 = (t^2 + 2bt + 2b^2) e/2, with e = exp(-t/b).
    """
    b = _LAPLACE_B
    fin = np.isfinite(t)
    tt = np.where(fin, t, 0.0)
    e = np.where(fin, np.exp(-tt / b), 0.0)
    return 0.5 * e, 0.5 * (tt + b) * e, 0.5 * (tt * tt + 2.0 * b * tt + 2.0 * b * b) * e


def _tails_uniform(t):
    """T_0, T_1, T_2 of the uniform density 1/(2 sqrt 3) on [-sqrt 3, sqrt 3], at t >= 0."""
    s = np.minimum(t, _SQRT3)
    c = 1.0 / (2.0 * _SQRT3)
    return c * (_SQRT3 - s), c * (3.0 - s * s) / 2.0, c * (3.0 * _SQRT3 - s**3) / 3.0


_TAILS = {"gaussian": _tails_gaussian, "laplace": _tails_laplace, "uniform": _tails_uniform}


def _cell_moments(a, b, density):
    r"""Probability, first and second moment of each cell :math:`[a_i, b_i]`, shape (n,) each.

    With the tail moments :math:`T_k` and :math:`H_k = T_k(0)` of a symmetric density:

    * :math:`0 \le a < b`: :math:`T_k(a) - T_k(b)` (a difference of tails: no cancellation
      far out);
    * :math:`a < b \le 0`: the mirror image, :math:`(-1)^k (T_k(-b) - T_k(-a))`;
    * :math:`a < 0 < b`: :math:`H_k - T_k(b) + (-1)^k (H_k - T_k(-a))`.
    """
    tails = _TAILS[density]
    ta, tb = tails(np.abs(a)), tails(np.abs(b))
    h = tails(np.zeros(1))
    out = []
    for k in range(3):
        sign = -1.0 if k % 2 else 1.0
        pos = ta[k] - tb[k]
        neg = sign * (tb[k] - ta[k])
        mid = (h[k] - tb[k]) + sign * (h[k] - ta[k])
        out.append(np.where(a >= 0, pos, np.where(b <= 0, neg, mid)))
    return out


def _n_levels(bits, n_levels):
    if (bits is None) == (n_levels is None):
        raise TypeError(f"give exactly one of bits and n_levels, got bits={bits!r}, n_levels={n_levels!r}")
    if bits is not None:
        return 2 ** check_bits(bits, "bits", low=1, high=12)
    return check_int(n_levels, "n_levels", low=1)


def _start_levels(n, density):
    r"""Start of the iteration: the asymptotically optimal (companding) levels.

    For many levels the optimal point density is proportional to :math:`f^{1/3}` (Panter and
    Dite 1951), so the levels are the quantiles :math:`(i - 1/2)/n` of the density
    :math:`\propto f^{1/3}`: :math:`\mathcal N(0, 3)` for the Gaussian, a Laplace of three times
    the scale for the Laplace, the density itself for the uniform. A good start only saves
    iterations; the fixed point does not depend on it.
    """
    u = (np.arange(n) + 0.5) / n
    if density == "uniform":
        return _SQRT3 * (2.0 * u - 1.0)
    if density == "laplace":
        s = 3.0 * _LAPLACE_B
        return np.where(u < 0.5, s * np.log(2.0 * u), -s * np.log(2.0 * (1.0 - u)))
    # Gaussian: invert Phi by bisection on [-40, 40] (Phi(z) = erfc(-z / sqrt 2) / 2)
    lo, hi = np.full(n, -40.0), np.full(n, 40.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        below = 0.5 * _erfc(-mid / _SQRT2).astype(np.float64) < u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return math.sqrt(3.0) * 0.5 * (lo + hi)


def _thresholds(levels):
    return 0.5 * (levels[1:] + levels[:-1])


def _pdf(t, density):
    """The unit-variance density at the points ``t`` (0 at +-inf and outside the support)."""
    fin = np.isfinite(t)
    a = np.where(fin, np.abs(t), 0.0)
    if density == "gaussian":
        f = _INV_SQRT_2PI * np.exp(-0.5 * a * a)
    elif density == "laplace":
        f = np.exp(-a / _LAPLACE_B) / (2.0 * _LAPLACE_B)
    else:
        f = np.where(a < _SQRT3, 1.0 / (2.0 * _SQRT3), 0.0)
    return np.where(fin, f, 0.0)


def _solve_tridiagonal(sub, diag, sup, rhs):
    """Solve the tridiagonal system (``sub[i-1]``, ``diag[i]``, ``sup[i]`` on row i) by elimination, O(n)."""
    n = diag.size
    d, r = diag.astype(np.float64), rhs.astype(np.float64)
    for i in range(1, n):  # forward elimination
        w = sub[i - 1] / d[i - 1]
        d[i] -= w * sup[i - 1]
        r[i] -= w * r[i - 1]
    x = np.empty(n)
    x[-1] = r[-1] / d[-1]
    for i in range(n - 2, -1, -1):  # back substitution
        x[i] = (r[i] - sup[i] * x[i + 1]) / d[i]
    return x


def _lloyd_fixed_point(levels, cells, tol, max_iter, *, symmetric=False):
    r"""Solve the centroid condition :math:`y = G(y)` by Lloyd's iteration with Newton steps.

    ``cells(y)`` returns, for each level, its cell's edges ``a, b``, probability ``p`` and
    first moment ``m1`` (so :math:`G_i = m_{1,i} / p_i`) and the density at the edges ``fa,
    fb`` (0 at an edge that does not move with ``y``: infinite or pinned). Every iteration
    computes the Lloyd update :math:`G(y)` and stops when it moves no level by more than
    ``tol`` (returning it). Otherwise it takes a Newton step on :math:`G(y) - y = 0`: with
    edges at the midpoints of the levels, :math:`\partial G_i/\partial a_i = f(a_i)(G_i -
    a_i)/p_i` and :math:`\partial G_i/\partial b_i = f(b_i)(b_i - G_i)/p_i`, so the Jacobian
    is tridiagonal and the step costs O(n). From a good start Newton converges quadratically
    where Lloyd's iteration needs about :math:`n^2` steps. A Newton step that would unsort
    the levels is replaced by the Lloyd update, and once a step fails to shrink the update,
    the iteration stays with plain Lloyd steps (which never increase the distortion).
    ``symmetric``: the density is symmetric, so is the optimum (:math:`y_{n-1-i} = -y_i`), and
    each Newton step is symmetrized; otherwise rounding can push the levels along a direction
    the iteration hardly feels (a common shift, to which the memoryless Laplace tails are
    blind: for two levels its Jacobian is singular). Returns the levels and whether it
    converged.
    """
    y = np.asarray(levels, dtype=np.float64)
    newton, last = True, np.inf
    for _ in range(max_iter):
        a, b, p, m1, fa, fb = cells(y)
        g = np.where(p > 0, m1 / np.where(p > 0, p, 1.0), y)  # an empty cell keeps its level
        step = float(np.max(np.abs(g - y)))
        if step <= tol:
            return g, True
        newton = newton and step < last
        last = step
        y_next = g
        if newton and np.all(p > 0):
            da = 0.5 * np.where(fa > 0, fa * (g - np.where(fa > 0, a, 0.0)), 0.0) / p  # dG_i / dy_{i-1}
            db = 0.5 * np.where(fb > 0, fb * (np.where(fb > 0, b, 0.0) - g), 0.0) / p  # dG_i / dy_{i+1}
            with np.errstate(all="ignore"):  # a singular Jacobian gives inf/nan: rejected below
                cand = y + _solve_tridiagonal(-da[1:], 1.0 - da - db, -db[:-1], g - y)
            if symmetric:
                cand = 0.5 * (cand - cand[::-1])
            if np.all(np.isfinite(cand)) and np.all(np.diff(cand) > 0):
                y_next = cand
        y = y_next
    return y, False


def lloyd_max(bits=None, *, n_levels=None, density="gaussian", tol=1e-12, max_iter=100_000):
    r"""Lloyd-Max quantizer of a unit-variance density: optimal levels, thresholds and MSE.

    Alternates the two optimality conditions of Max (1960) and Lloyd (1982, Method I),

    .. math::

        t_i = \frac{y_i + y_{i+1}}{2}, \qquad
        y_i = \frac{\int_{t_{i-1}}^{t_i} x f(x)\,dx}{\int_{t_{i-1}}^{t_i} f(x)\,dx},

    until no level moves by more than ``tol``, and returns the distortion
    :math:`D = \sum_i \int_{t_{i-1}}^{t_i} (x - y_i)^2 f(x)\,dx
    = \sum_i (M_{2,i} - 2 y_i M_{1,i} + y_i^2 P_i)` computed from the closed-form cell moments
    :math:`P_i, M_{1,i}, M_{2,i}`. A Lloyd step never increases :math:`D`, and for the
    log-concave densities here the fixed point is the global optimum (Fleischer 1964).
    Start: the asymptotically optimal levels, the quantiles of the density
    :math:`\propto f^{1/3}` (Panter and Dite 1951). Lloyd's steps alone need about
    :math:`n^2` iterations (14 s for 8 bits); here each is followed by a Newton step on the
    same fixed-point equations, whose Jacobian is tridiagonal (the cell of level :math:`i`
    moves with levels :math:`i - 1, i, i + 1` only), and the iteration converges in a handful
    of steps (12 bits in well under a second). For many levels the distortion approaches
    the Panter–Dite value :math:`\tfrac{1}{12 n^2} \big(\int f^{1/3}\big)^3`:
    :math:`\sqrt{3}\pi / (2 n^2)` for the Gaussian, :math:`9 / (2 n^2)` for the Laplace.

    For another variance :math:`\sigma^2`, multiply levels and thresholds by :math:`\sigma`
    and the MSE by :math:`\sigma^2`.

    Parameters
    ----------
    bits : int in [1, 12], optional
        ``n = 2**bits`` levels. Give ``bits`` or ``n_levels``, not both.
    n_levels : int >= 1, optional
        The number of levels :math:`n` (any, not only a power of 2).
    density : {"gaussian", "laplace", "uniform"}
        Zero-mean, unit-variance: :math:`\mathcal N(0, 1)`; Laplace with scale
        :math:`1/\sqrt 2`; uniform on :math:`[-\sqrt 3, \sqrt 3]`.
    tol : float > 0
        Stop when the largest level update is at most ``tol``.
    max_iter : int >= 1
        At most this many iterations (a :class:`RuntimeWarning` if not converged).

    Returns
    -------
    LloydMax
        ``(levels, thresholds, mse)``: shapes (n,), (n - 1,), a float.

    Raises
    ------
    TypeError
        If neither or both of ``bits`` and ``n_levels`` are given, or one is not an integer.
    ValueError
        If ``bits``/``n_levels``/``tol``/``max_iter`` is out of range or ``density`` unknown.

    References
    ----------
    Max (1960), "Quantizing for minimum distortion", IRE Trans. Inf. Theory 6(1), Table I.
    Lloyd (1982), "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2).

    Examples
    --------
    >>> levels, thresholds, mse = lloyd_max(2)          # Max (1960), Table I, n = 4
    >>> levels.round(4), thresholds.round(4), round(mse, 4)
    (array([-1.5104, -0.4528,  0.4528,  1.5104]), array([-0.9816,  0.    ,  0.9816]), 0.1175)
    >>> round(lloyd_max(n_levels=2, density="laplace").mse, 4)    # levels +-1/sqrt(2)
    0.5
    """
    n = _n_levels(bits, n_levels)
    check_choice(density, "density", DENSITIES)
    check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", low=1)

    def cells(y):
        t = _thresholds(y)
        a = np.concatenate(([-np.inf], t))
        b = np.concatenate((t, [np.inf]))
        p, m1, _m2 = _cell_moments(a, b, density)
        return a, b, p, m1, _pdf(a, density), _pdf(b, density)

    levels, converged = _lloyd_fixed_point(_start_levels(n, density), cells, tol, max_iter, symmetric=True)
    if not converged:
        warnings.warn(f"lloyd_max did not converge in max_iter={max_iter} iterations", RuntimeWarning,
                      stacklevel=2)
    t = _thresholds(levels)
    a = np.concatenate(([-np.inf], t))
    b = np.concatenate((t, [np.inf]))
    p, m1, m2 = _cell_moments(a, b, density)
    mse = float(np.sum(m2 - 2.0 * levels * m1 + levels**2 * p))
    return LloydMax(levels, t, max(mse, 0.0))


def lloyd_max_data(x, bits=None, *, n_levels=None, init="quantile", tol=1e-10, max_iter=1_000):
    r"""Lloyd's iteration on samples: a locally optimal scalar quantizer of the data (1-d k-means).

    The density of :func:`lloyd_max` is replaced by the empirical distribution of ``x``: the
    thresholds are midpoints of the levels, and each level becomes the mean of the samples in
    its cell. The samples are sorted once; a cell's count, sum and sum of squares then come
    from prefix sums at the positions of its thresholds (a binary search), so an iteration
    costs :math:`O(n \log N)` for :math:`N` samples and :math:`n` levels.

    This finds a *local* optimum (a fixed point of Lloyd's iteration) that depends on the
    start; :func:`qref.vq.kmeans_1d_optimal` finds the global one.

    Parameters
    ----------
    x : array_like of float, any shape, non-empty
        The samples (flattened). Not modified.
    bits, n_levels : int, optional
        As in :func:`lloyd_max`: exactly one of them.
    init : "quantile", "linear" or array_like of float, shape (n,)
        Start levels: the sample quantiles at :math:`(i - 1/2)/n` (default), ``n`` points evenly
        spaced over ``[min(x), max(x)]``, or the given values (sorted).
    tol : float > 0
        Stop when no level moves by more than ``tol`` times the range ``max(x) - min(x)``.
    max_iter : int >= 1

    Returns
    -------
    LloydMax
        ``(levels, thresholds, mse)``: the MSE is the mean over the samples. A level whose
        cell holds no sample keeps its value.

    Raises
    ------
    TypeError, ValueError
        For a non-floating, non-finite or empty ``x``, or bad options.

    References
    ----------
    Lloyd (1982), IEEE Trans. Inf. Theory 28(2), Method I.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(200_000)
    >>> levels = lloyd_max_data(x, 2).levels           # ~ Max's +-0.4528, +-1.510
    >>> bool(np.allclose(levels, [-1.510, -0.4528, 0.4528, 1.510], atol=0.02))
    True
    """
    x = as_float_array(x, "x", allow_empty=False)
    n = _n_levels(bits, n_levels)
    check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", low=1)
    xs = np.sort(x.astype(np.float64, copy=False).ravel())
    N = xs.size
    # prefix sums: S[j] = sum of the j smallest samples (S[0] = 0), Q likewise for squares
    S = np.concatenate(([0.0], np.cumsum(xs)))
    Q = np.concatenate(([0.0], np.cumsum(xs * xs)))
    if isinstance(init, str):
        check_choice(init, "init", ("quantile", "linear"))
        if init == "quantile":
            levels = xs[np.minimum(((np.arange(n) + 0.5) / n * N).astype(np.int64), N - 1)]
        else:
            levels = np.linspace(xs[0], xs[-1], n)
    else:
        levels = np.sort(as_float_array(init, "init", allow_empty=False).astype(np.float64).ravel())
        if levels.size != n:
            raise ValueError(f"init must hold n_levels={n} values, got {levels.size}")
    scale = max(float(xs[-1] - xs[0]), np.finfo(np.float64).tiny)
    for _ in range(max_iter):
        # cell i holds the samples xs[e[i]:e[i+1]], those in (t_{i-1}, t_i]
        e = np.concatenate(([0], np.searchsorted(xs, _thresholds(levels), side="right"), [N]))
        cnt = np.diff(e)
        new = np.where(cnt > 0, np.diff(S[e]) / np.maximum(cnt, 1), levels)
        step = float(np.max(np.abs(new - levels)))
        levels = np.sort(new)
        if step <= tol * scale:
            break
    t = _thresholds(levels)
    e = np.concatenate(([0], np.searchsorted(xs, t, side="right"), [N]))
    mse = float(np.sum(np.diff(Q[e]) - 2.0 * levels * np.diff(S[e]) + levels**2 * np.diff(e))) / N
    return LloydMax(levels, t, max(mse, 0.0))


# --------------------------------------------------------------------------------------
# Powers of two: the level set and nearest-level rule of INQ (Zhou et al. 2017)
# --------------------------------------------------------------------------------------


def _check_exponent(value, name):
    v = check_int(value, name)
    if not -1022 <= v <= 1023:
        raise ValueError(f"{name} must be an integer in [-1022, 1023] (normal float64 powers of two), got {v}")
    return v


def inq_exponent_range(max_abs, bits):
    r"""INQ's exponent range :math:`(n_1, n_2)` for a layer whose largest magnitude is ``max_abs``.

    INQ (Zhou et al. 2017) restricts a layer's weights to
    :math:`\mathcal P_l = \{\pm 2^{n_1}, \dots, \pm 2^{n_2}, 0\}` (Eq. (1)), with

    .. math::

        s = \max |W_l|, \qquad n_1 = \left\lfloor \log_2 \frac{4 s}{3} \right\rfloor,
        \qquad n_2 = n_1 + 1 - \frac{2^{b-1}}{2},

    Eqs. (2)-(3) of Zhou et al. (2017) and the formula for :math:`n_2` in the text after them.
    The bit width :math:`b` counts one bit for zero, so :math:`b - 1` bits code the
    :math:`2^{b-1}` signed powers of two, i.e. :math:`2^{b-2}` exponents. The factor 4/3
    puts :math:`s` inside the cell of the top level, :math:`[\tfrac34 2^{n_1}, \tfrac32 2^{n_1})`
    (see :func:`power_of_two_quantize`), so the largest weight is never pushed down a level.

    :math:`n_1` is computed exactly: with :math:`s = f\,2^E`, :math:`f \in [\tfrac12, 1)`
    (:func:`math.frexp`), :math:`n_1 = E - 1 + [f \ge \tfrac34]`, so no rounding error in
    :math:`\log_2` can move a weight into a neighbouring level.

    Parameters
    ----------
    max_abs : float > 0
        :math:`s`, the largest absolute weight of the layer (before any quantization).
    bits : int in [2, 8]
        :math:`b`; ``bits=2`` gives the ternary set :math:`\{0, \pm 2^{n_1}\}`.

    Returns
    -------
    (n1, n2) : tuple of int
        The largest and the smallest exponent, :math:`n_2 = n_1 + 1 - 2^{b-2} \le n_1`.

    Raises
    ------
    TypeError
        If ``max_abs`` is not a real number or ``bits`` not an integer.
    ValueError
        If ``max_abs`` is not finite and > 0, ``bits`` is outside [2, 8], or the levels
        would leave the normal float64 range (``max_abs`` below about ``1e-289``).

    References
    ----------
    Zhou, Yao, Guo, Xu and Chen (2017), "Incremental network quantization: towards lossless
    CNNs with low-precision weights", ICLR, Eqs. (1)-(3).

    Examples
    --------
    The paper's example: :math:`b = 3` and :math:`n_1 = -1` give :math:`n_2 = -2`.

    >>> inq_exponent_range(0.6, 3)          # 4 * 0.6 / 3 = 0.8, floor(log2 0.8) = -1
    (-1, -2)
    >>> inq_exponent_range(0.6, 5)          # 5 bits: 8 exponents, 2^-1 ... 2^-8
    (-1, -8)
    """
    s = float(check_positive(max_abs, "max_abs"))
    b = check_bits(bits, "bits", low=2, high=8)
    # s = f 2^E exactly (frexp), f in [1/2, 1): floor(log2 s) = E - 1, and 4s/3 reaches the next
    # power of two iff f >= 3/4. No log2, no overflow of 4s, no rounding.
    f, E = math.frexp(s)
    n1 = E - 1 + (f >= 0.75)
    n2 = n1 + 1 - 2 ** (b - 1) // 2
    if n2 < -1022 or n1 > 1023:
        raise ValueError(f"max_abs={s!r} with bits={b} puts the levels 2^{n2} ... 2^{n1} outside the "
                         "normal float64 range [2^-1022, 2^1023]; rescale the weights")
    return n1, n2


def power_of_two_levels(n1, n2):
    r"""The INQ level set :math:`\{0\} \cup \{\pm 2^{n} : n_2 \le n \le n_1\}`, sorted.

    Eq. (1) of Zhou et al. (2017), with :math:`2 (n_1 - n_2 + 1) + 1` values.

    Parameters
    ----------
    n1, n2 : int, n2 <= n1, both in [-1022, 1023]
        The largest and the smallest exponent (from :func:`inq_exponent_range`).

    Returns
    -------
    ndarray of float64, shape (2 * (n1 - n2 + 1) + 1,), increasing

    Raises
    ------
    TypeError
        If ``n1`` or ``n2`` is not an integer.
    ValueError
        If ``n2 > n1`` or an exponent is out of range.

    References
    ----------
    Zhou et al. (2017), ICLR, Eq. (1).

    Examples
    --------
    >>> power_of_two_levels(-1, -2)
    array([-0.5 , -0.25,  0.  ,  0.25,  0.5 ])
    """
    n1 = _check_exponent(n1, "n1")
    n2 = _check_exponent(n2, "n2")
    if n2 > n1:
        raise ValueError(f"n2 must be <= n1, got n1={n1}, n2={n2}")
    mags = np.ldexp(1.0, np.arange(n2, n1 + 1))
    return np.concatenate([-mags[::-1], [0.0], mags])


#: the nearest-level rules of :func:`power_of_two_quantize`
POWER_OF_TWO_RULES = ("inq", "log")


def power_of_two_quantize(w, *, bits, max_abs=None, rule="inq"):
    r"""Quantize weights to zero or signed powers of two with INQ's rule (Zhou et al. 2017, Eq. (4)).

    With :math:`(n_1, n_2)` from :func:`inq_exponent_range` and :math:`\alpha < \beta`
    adjacent elements of the sorted non-negative part :math:`\{0, 2^{n_2}, \dots, 2^{n_1}\}`
    of the level set, INQ's rule (``rule="inq"``) is

    .. math::

        \hat W(i, j) = \begin{cases}
            \beta \operatorname{sgn}(W(i, j)) & \text{if } \frac{\alpha + \beta}{2} \le |W(i, j)|
                < \frac{3\beta}{2}, \\
            0 & \text{otherwise,}
        \end{cases}

    Eq. (4) of Zhou et al. (2017). The thresholds are the **midpoints in the linear domain**:
    between :math:`2^{k}` and :math:`2^{k+1}` at :math:`\tfrac32 2^{k}`, and between 0 and the
    smallest level at :math:`2^{n_2}/2 = 2^{n_2 - 1}`. This is nearest-level rounding (ties go up).

    ``rule="log"`` rounds :math:`\log_2 |W|` to the nearest integer instead, so the threshold
    between :math:`2^{k}` and :math:`2^{k+1}` is their geometric mean :math:`\sqrt2\, 2^{k}
    \approx 1.414 \cdot 2^{k}` (below INQ's :math:`1.5 \cdot 2^{k}`), and exponents below
    :math:`n_2` go to zero, i.e. the zero threshold is :math:`2^{n_2 - 1/2}` (above INQ's
    :math:`2^{n_2 - 1}`). The two rules share the level set but **not the thresholds**: a
    weight in :math:`[\sqrt 2\, 2^k, \tfrac32 2^k)` goes up under ``"log"`` and down under
    ``"inq"``. Only the ``"inq"`` rule minimizes :math:`|W - \hat W|` for each weight.

    **Saturation.** With ``max_abs = max|w|`` (the default), :math:`|w| < \tfrac32 2^{n_1}`
    always holds. If a smaller ``max_abs`` is given, Eq. (4) read literally would send
    :math:`|w| \ge \tfrac32 2^{n_1}` to 0; here such weights saturate to
    :math:`\pm 2^{n_1}` instead (the nearest level).

    Parameters
    ----------
    w : array_like of float, any shape
        The weights. Not modified.
    bits : int in [2, 8]
        :math:`b`, one bit of which is for zero (:func:`inq_exponent_range`).
    max_abs : float > 0, optional
        :math:`s` in Eq. (2). Default ``max(|w|)``. INQ computes it once per layer from the
        pre-trained weights and keeps it while the weights are quantized group by group, so
        pass it explicitly when quantizing a part of a layer.
    rule : {"inq", "log"}
        Linear-domain midpoints (Eq. (4)) or log-domain rounding.

    Returns
    -------
    ndarray, shape and dtype of ``w``
        Every entry is in ``power_of_two_levels(n1, n2)``. If ``max_abs`` is not given and
        ``w`` is all zero (or empty), zeros (there is no scale to fit).

    Raises
    ------
    TypeError
        If ``w`` is not floating point, or ``bits``/``max_abs`` of the wrong type.
    ValueError
        If ``w`` holds NaN or infinity, ``bits`` is outside [2, 8], ``max_abs`` is not > 0,
        or ``rule`` is unknown.

    References
    ----------
    Zhou et al. (2017), "Incremental network quantization", ICLR, Eqs. (1)-(4).
    Miyashita, Lee and Murmann (2016), arXiv:1603.01025 (log-domain rounding).

    Examples
    --------
    >>> w = np.array([0.6, 0.45, 0.36, 0.2, 0.1, 0.05, -0.3])
    >>> power_of_two_quantize(w, bits=3)           # levels 0, +-1/4, +-1/2; thresholds 1/8, 3/8
    array([ 0.5 ,  0.5 ,  0.25,  0.25,  0.  ,  0.  , -0.25])
    >>> power_of_two_quantize(w, bits=3, rule="log")   # thresholds 2^-2.5 = 0.177, 2^-1.5 = 0.354
    array([ 0.5 ,  0.5 ,  0.5 ,  0.25,  0.  ,  0.  , -0.25])
    """
    w = as_float_array(w, "w")
    b = check_bits(bits, "bits", low=2, high=8)
    check_choice(rule, "rule", POWER_OF_TWO_RULES)
    a = np.abs(w.astype(np.float64))
    if max_abs is None:
        s = float(a.max()) if a.size else 0.0
        if s == 0.0:
            return np.zeros_like(w)
    else:
        s = max_abs
    n1, n2 = inq_exponent_range(s, b)
    m, E = np.frexp(a)  # a = m 2^E, m in [0.5, 1) (m = 0, E = 0 for a = 0)
    fl = E - 1  # floor(log2 a) for a > 0
    if rule == "inq":
        # a in [2^fl, 2^(fl+1)): up iff a >= 1.5 2^fl  <=>  m >= 0.75   (exact)
        e = fl + (m >= 0.75)
        zero = (a == 0) | (fl < n2 - 1)  # |w| < 2^(n2 - 1) = (0 + 2^n2) / 2
    else:
        e = np.rint(np.log2(np.where(a > 0, a, 1.0))).astype(np.int64)
        zero = (a == 0) | (e < n2)  # |w| < 2^(n2 - 1/2)
    mag = np.ldexp(1.0, np.clip(e, n2, n1))
    out = np.where(zero, 0.0, np.copysign(mag, w.astype(np.float64)))
    return out.astype(w.dtype)


# --------------------------------------------------------------------------------------
# The MSE of any scalar quantizer on a unit-variance density
# --------------------------------------------------------------------------------------


def _check_levels(levels):
    y = as_float_array(levels, "levels", allow_empty=False, allow_0d=False).astype(np.float64)
    if y.ndim != 1:
        raise ValueError(f"levels must be 1-d, got shape {y.shape}")
    if (np.diff(y) <= 0).any():
        raise ValueError("levels must be strictly increasing")
    return y


def decision_thresholds(levels, *, rule="nearest"):
    r"""The interior decision thresholds of a scalar quantizer with the given levels.

    ``rule="nearest"``: midpoints :math:`t_i = (y_i + y_{i+1})/2`, the nearest-neighbour
    condition of Max (1960) and Lloyd (1982), and INQ's Eq. (4) for powers of two.
    ``rule="log"``: rounding in the log domain (Miyashita et al. 2016): the geometric mean
    :math:`\operatorname{sgn}(y_i) \sqrt{y_i y_{i+1}}` between two levels of the same sign,
    :math:`c / \sqrt 2` between 0 and a level :math:`c`, and 0 between levels of opposite signs
    (the ``rule="log"`` of :func:`power_of_two_quantize`).

    Parameters
    ----------
    levels : array_like of float, shape (n,), strictly increasing
    rule : {"nearest", "log"}

    Returns
    -------
    ndarray of float64, shape (n - 1,), non-decreasing

    Raises
    ------
    TypeError, ValueError
        If ``levels`` is not floating point, empty, not 1-d or not strictly increasing, or
        ``rule`` is unknown.

    References
    ----------
    Max (1960); Zhou et al. (2017), Eq. (4); Miyashita et al. (2016), Eqs. (3)-(5).

    Examples
    --------
    >>> decision_thresholds([0.0, 0.25, 0.5, 1.0])
    array([0.125, 0.375, 0.75 ])
    >>> decision_thresholds([0.0, 0.25, 0.5, 1.0], rule="log").round(4)
    array([0.1768, 0.3536, 0.7071])
    """
    y = _check_levels(levels)
    check_choice(rule, "rule", ("nearest", "log"))
    lo, hi = y[:-1], y[1:]
    if rule == "nearest":
        return 0.5 * (lo + hi)
    same = lo * hi > 0
    geo = np.sign(hi) * np.sqrt(np.where(same, lo * hi, 1.0))
    return np.where(same, geo, np.where(lo == 0, hi / _SQRT2, np.where(hi == 0, lo / _SQRT2, 0.0)))


def quantizer_mse(levels, *, thresholds="nearest", density="gaussian"):
    r"""Mean squared error of a scalar quantizer with given levels on a unit-variance density.

    .. math::

        D = \sum_{i=1}^{n} \int_{t_{i-1}}^{t_i} (x - y_i)^2 f(x)\,dx
          = \sum_i \big(M_{2,i} - 2 y_i M_{1,i} + y_i^2 P_i\big),

    with :math:`t_0 = -\infty`, :math:`t_n = \infty` and the closed-form cell moments of
    :func:`lloyd_max` (no quadrature). Lets any level set -- uniform, Lloyd-Max, powers of two
    -- be compared on the same footing as in Max (1960).

    Parameters
    ----------
    levels : array_like of float, shape (n,), strictly increasing
        The reconstruction values :math:`y_i`.
    thresholds : "nearest", "log" or array_like of float, shape (n - 1,)
        A rule of :func:`decision_thresholds` (midpoints, or rounding in the log domain), or
        the interior thresholds themselves, non-decreasing.
    density : {"gaussian", "laplace", "uniform"}
        As in :func:`lloyd_max`.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``levels`` or ``thresholds`` is not floating point.
    ValueError
        If ``levels`` is empty, not 1-d or not strictly increasing, the thresholds have the
        wrong shape or decrease, or an option is unknown.

    References
    ----------
    Max (1960), IRE Trans. Inf. Theory 6(1), Eq. (1); Miyashita et al. (2016) for the
    log-domain thresholds.

    Examples
    --------
    >>> round(quantizer_mse(lloyd_max(2).levels), 4)          # Max's 0.1175
    0.1175
    >>> lv = [-1.0, -0.5, 0.0, 0.5, 1.0]
    >>> quantizer_mse(lv) < quantizer_mse(lv, thresholds="log")   # nearest is optimal for given levels
    True
    """
    y = _check_levels(levels)
    check_choice(density, "density", DENSITIES)
    if isinstance(thresholds, str):
        check_choice(thresholds, "thresholds", ("nearest", "log"))
        t = decision_thresholds(y, rule=thresholds)
    else:
        t = as_float_array(thresholds, "thresholds").astype(np.float64).ravel()
        if t.size != y.size - 1:
            raise ValueError(f"thresholds must hold len(levels) - 1 = {y.size - 1} values, got {t.size}")
        if (np.diff(t) < 0).any():
            raise ValueError("thresholds must be non-decreasing")
    a = np.concatenate(([-np.inf], t))
    b = np.concatenate((t, [np.inf]))
    p, m1, m2 = _cell_moments(a, b, density)
    return max(float(np.sum(m2 - 2.0 * y * m1 + y * y * p)), 0.0)


# --------------------------------------------------------------------------------------
# The optimal *uniform* quantizer of a density (the baseline Lloyd-Max is compared with)
# --------------------------------------------------------------------------------------


def _uniform_mse(step, n, density):
    """MSE of the symmetric uniform quantizer with n levels (i - (n-1)/2) * step, nearest level."""
    levels = (np.arange(n) - 0.5 * (n - 1)) * step
    t = _thresholds(levels)
    a = np.concatenate(([-np.inf], t))
    b = np.concatenate((t, [np.inf]))
    p, m1, m2 = _cell_moments(a, b, density)
    # each cell's term is an integral of a square, >= 0; clamp the rounding error of the far tails
    return float(np.sum(np.maximum(m2 - 2.0 * levels * m1 + levels**2 * p, 0.0)))


@functools.lru_cache(maxsize=None)
def _optimal_uniform_step(n, density):
    """(step, mse) of the MSE-optimal n-level uniform quantizer of a unit-variance density.

    The one search used by :func:`optimal_uniform` and :func:`qref.allocation.optimal_uniform_step`.
    """
    from ._optimize import golden_section_min

    if density == "uniform":  # the n cells tile [-sqrt 3, sqrt 3] exactly: D = step^2 / 12
        step = 2.0 * _SQRT3 / n
        return step, _uniform_mse(step, n, density)
    # the optimal half-range n*step/2 lies within [0.3, 16] standard deviations for n <= 4096
    # (the Laplace's heavier tail pushes it past 8 at 12 bits); a coarse grid finds the basin,
    # golden-section search refines it
    half = np.geomspace(0.3, 16.0, 120)
    vals = np.array([_uniform_mse(2.0 * h / n, n, density) for h in half])
    j = int(np.argmin(vals))
    lo, hi = half[max(j - 1, 0)], half[min(j + 1, half.size - 1)]
    h = golden_section_min(lambda s: _uniform_mse(2.0 * s / n, n, density), float(lo), float(hi), tol=1e-12)
    step = 2.0 * h / n
    return step, _uniform_mse(step, n, density)


def optimal_uniform(bits=None, *, n_levels=None, density="gaussian"):
    r"""The best *uniform* quantizer of a unit-variance density: the step that minimizes the MSE.

    The levels are :math:`y_i = (i - \tfrac{n - 1}{2})\,\Delta`, :math:`i = 0, \dots, n - 1`
    (symmetric, mid-rise for even :math:`n`), the thresholds their midpoints, the outer cells
    unbounded (values beyond the last level are clipped to it). The distortion

    .. math::

        D(\Delta) = \sum_{i} \int_{t_{i-1}}^{t_i} (x - y_i)^2 f(x)\,dx

    is computed from the same closed-form cell moments as :func:`lloyd_max` and minimized over
    :math:`\Delta` by a coarse grid and golden-section search. This is the "optimum uniform quantizer" of Max
    (1960, Table II): it trades rounding error inside the range against clipping error
    outside it, the same trade-off ACIQ makes.

    Parameters
    ----------
    bits : int in [1, 12], optional
        ``n = 2**bits`` levels. Give ``bits`` or ``n_levels``, not both.
    n_levels : int >= 1, optional
    density : {"gaussian", "laplace", "uniform"}
        As in :func:`lloyd_max`.

    Returns
    -------
    LloydMax
        ``(levels, thresholds, mse)``; the step is ``levels[1] - levels[0]`` (for ``n >= 2``).

    Raises
    ------
    TypeError, ValueError
        As :func:`lloyd_max`.

    References
    ----------
    Max (1960), "Quantizing for minimum distortion", IRE Trans. Inf. Theory 6(1), Table II.

    Examples
    --------
    >>> r = optimal_uniform(2)                     # Max (1960), Table II, n = 4
    >>> round(float(r.levels[1] - r.levels[0]), 4), round(r.mse, 4)
    (0.9957, 0.1188)
    """
    n = _n_levels(bits, n_levels)
    check_choice(density, "density", DENSITIES)
    if n == 1:
        return LloydMax(np.zeros(1), np.zeros(0), 1.0)
    step, mse = _optimal_uniform_step(n, density)
    levels = (np.arange(n) - 0.5 * (n - 1)) * step
    return LloydMax(levels, _thresholds(levels), mse)


# --------------------------------------------------------------------------------------
# Logarithmic quantization (Miyashita, Lee and Murmann 2016)
# --------------------------------------------------------------------------------------

#: the bases of :func:`log_quantize`: 2 (one level per octave) and sqrt 2 (two per octave)
LOG_BASES = ("2", "sqrt2")
_LOG_STEPS = {"2": 1, "sqrt2": 2}  # exponent steps per octave


def _check_fsr(fsr):
    v = check_int(fsr, "fsr")
    if not -256 <= v <= 256:
        raise ValueError(f"fsr must be an integer in [-256, 256], got {v}")
    return v


def _pow_base(e, k):
    """base**e for integer exponents e (array), base = 2**(1/k), k in {1, 2}: exact powers of two
    (k = 1) or a power of two times sqrt 2 (k = 2, odd e), rounded once."""
    e = np.asarray(e, dtype=np.int64)
    if k == 1:
        return np.ldexp(1.0, e)
    q, odd = np.divmod(e, 2)
    return np.ldexp(np.where(odd == 1, _SQRT2, 1.0), q)


def log_levels(bits, *, fsr, base="2", signed=True):
    r"""The level set of :func:`log_quantize`: zero and :math:`\pm\,\text{base}^{e}` for the representable exponents.

    The exponents are :math:`e = \text{FSR} - 2^{b} + 1, \dots, \text{FSR} - 1`
    (:math:`2^b - 1` of them, the :math:`2^b`-th code being zero), see :func:`log_quantize`.

    Parameters
    ----------
    bits : int in [1, 8]
        The bit width of the exponent code (the sign, if any, is an extra bit).
    fsr : int in [-256, 256]
        The full-scale range: the largest level is :math:`\text{base}^{\text{FSR} - 1}`.
    base : {"2", "sqrt2"}
    signed : bool
        Include the negative levels.

    Returns
    -------
    ndarray of float64, increasing, shape (2**bits,) or (2 * 2**bits - 1,) if signed

    Raises
    ------
    TypeError, ValueError
        For an out-of-range or non-integer ``bits``/``fsr``, or an unknown ``base``.

    References
    ----------
    Miyashita, Lee and Murmann (2016), arXiv:1603.01025, Eqs. (3)-(5).

    Examples
    --------
    >>> log_levels(2, fsr=0, signed=False)        # 2^-3, 2^-2, 2^-1 and zero
    array([0.   , 0.125, 0.25 , 0.5  ])
    """
    b = check_bits(bits, "bits", low=1, high=8)
    fsr = _check_fsr(fsr)
    check_choice(base, "base", LOG_BASES)
    signed = check_bool(signed, "signed")
    mags = _pow_base(np.arange(fsr - 2**b + 1, fsr), _LOG_STEPS[base])
    return np.concatenate([-mags[::-1], [0.0], mags]) if signed else np.concatenate([[0.0], mags])


def log_quantize(x, *, bits, fsr, base="2", signed=True, underflow="zero"):
    r"""Logarithmic quantization, LogQuant of Miyashita, Lee and Murmann (2016): round :math:`\log_2|x|`.

    .. math::

        \operatorname{LogQuant}(x, b, \text{FSR}) =
            \begin{cases} 0 & x = 0, \\ \operatorname{sgn}(x)\, 2^{\tilde x} & \text{otherwise,}
            \end{cases}
        \qquad
        \tilde x = \operatorname{Clip}\big(\operatorname{Round}(\log_2 |x|),\
            \text{FSR} - 2^{b},\ \text{FSR}\big),

    .. math::

        \operatorname{Clip}(x, \min, \max) = \begin{cases}
            0 & x \le \min, \\ \max - 1 & x \ge \max, \\ x & \text{otherwise,} \end{cases}

    Eqs. (3)-(5) of Miyashita et al. (2016), with the sign added for weights. The exponent
    takes the :math:`2^b - 1` values :math:`\text{FSR} - 2^b + 1, \dots, \text{FSR} - 1`; the
    remaining code is zero. **Reading of Eq. (5):** its first branch, read literally, would
    give :math:`2^0 = 1` for the smallest inputs; we read it as *underflow to zero*
    (``underflow="zero"``, the code left for zero), while ``underflow="clip"`` clamps to the
    smallest exponent instead (what many re-implementations do).

    ``Round`` is to the nearest integer **in the log domain**, so the threshold between
    :math:`2^k` and :math:`2^{k+1}` is their geometric mean :math:`2^{k + 1/2}`, not INQ's
    linear midpoint :math:`1.5 \cdot 2^k` (:func:`power_of_two_quantize`).

    With ``base="sqrt2"`` the exponent counts half-octaves: :math:`\tilde x =
    \operatorname{Clip}(\operatorname{Round}(2 \log_2 |x|), \dots)` and the value is
    :math:`\sqrt2^{\,\tilde x}` (FSR in the same half-octave units), the finer base the paper
    also evaluates; a product with :math:`\sqrt2^{\,2m+1}` is a shift plus one constant
    multiplication by :math:`\sqrt 2`.

    Parameters
    ----------
    x : array_like of float, any shape
        Not modified.
    bits : int in [1, 8]
        :math:`b`, the bit width of the exponent code (a sign is an extra bit).
    fsr : int in [-256, 256]
        The full-scale range :math:`\text{FSR}`; the largest magnitude is
        :math:`\text{base}^{\text{FSR} - 1}`. A per-layer hyperparameter in the paper; a
        natural choice is ``Round(log_base max|x|) + 1``.
    base : {"2", "sqrt2"}
    signed : bool
        ``True`` for weights (sign kept); ``False`` for non-negative activations (ReLU
        outputs), where a negative ``x`` raises.
    underflow : {"zero", "clip"}
        What exponents :math:`\le \text{FSR} - 2^b` become (see above).

    Returns
    -------
    ndarray, shape and dtype of ``x``
        Every entry is in ``log_levels(bits, fsr=fsr, base=base, signed=signed)`` (rounded
        to the dtype of ``x``).

    Raises
    ------
    TypeError
        If ``x`` is not floating point or an option has the wrong type.
    ValueError
        If ``x`` holds NaN or infinity (or negatives with ``signed=False``), or an option is
        out of range.

    References
    ----------
    Miyashita, Lee and Murmann (2016), "Convolutional neural networks using logarithmic data
    representation", arXiv:1603.01025, Eqs. (3)-(5).

    Examples
    --------
    >>> x = np.array([0.9, 0.7, 0.3, 0.1, 0.02, 0.0, -0.4])
    >>> log_quantize(x, bits=2, fsr=0)        # exponents -3..-1; 2^-1.5 = 0.354 splits 0.25 / 0.5
    array([ 0.5  ,  0.5  ,  0.25 ,  0.125,  0.   ,  0.   , -0.5  ])
    >>> log_quantize(x, bits=2, fsr=0, underflow="clip")[4]
    np.float64(0.125)
    """
    x = as_float_array(x, "x")
    b = check_bits(bits, "bits", low=1, high=8)
    fsr = _check_fsr(fsr)
    check_choice(base, "base", LOG_BASES)
    signed = check_bool(signed, "signed")
    check_choice(underflow, "underflow", ("zero", "clip"))
    xf = x.astype(np.float64)
    if not signed and x.size and (xf < 0).any():
        raise ValueError(f"x must be non-negative with signed=False (activations), got min {xf.min()!r}")
    k = _LOG_STEPS[base]
    a = np.abs(xf)
    with np.errstate(divide="ignore"):
        e = np.rint(k * np.log2(np.where(a > 0, a, 1.0))).astype(np.int64)  # Round(log_base |x|)
    lo = fsr - 2**b  # Clip's "min": exponents <= lo underflow
    under = e <= lo
    e = np.minimum(np.maximum(e, lo + 1), fsr - 1)  # "max - 1" for e >= max
    mag = _pow_base(e, k)
    zero = (a == 0) | (under if underflow == "zero" else False)
    return np.where(zero, 0.0, np.copysign(mag, xf)).astype(x.dtype)


# --------------------------------------------------------------------------------------
# LogNet: dot products of log-quantized weights and activations, by shifts and in the log domain
# (Lee, Miyashita, Chai, Murmann and Wong 2017)
# --------------------------------------------------------------------------------------


def log_encode(x, *, bits, fsr, base="2", signed=True, underflow="zero"):
    r"""The codes behind :func:`log_quantize`: a sign and an integer exponent per entry.

    :math:`\operatorname{LogQuant}(x) = s\,\text{base}^{e}` with :math:`s \in \{-1, 0, +1\}`
    (0 for the zero code) and :math:`e` an integer in :math:`[\text{FSR} - 2^b + 1,
    \text{FSR} - 1]`, Eqs. (3)-(5) of Miyashita et al. (2016); with ``base="sqrt2"``
    :math:`e` counts half-octaves. This is what a log-domain accelerator stores and what
    :func:`log_shift_dot` shifts by. The values come from :func:`log_quantize` itself, so the two
    always agree: ``s * base**e == log_quantize(x, ...)``.

    Parameters
    ----------
    x : array_like of float, any shape
        Not modified.
    bits, fsr, base, signed, underflow
        As in :func:`log_quantize`.

    Returns
    -------
    sign : ndarray of int8, shape of ``x``, values in {-1, 0, 1}
    exponent : ndarray of int64, shape of ``x`` (0 where ``sign == 0``)

    Examples
    --------
    >>> s, e = log_encode(np.array([0.9, 0.3, 0.02, -0.4]), bits=2, fsr=0)
    >>> s, e
    (array([ 1,  1,  0, -1], dtype=int8), array([-1, -2,  0, -1]))
    """
    q = log_quantize(x, bits=bits, fsr=fsr, base=base, signed=signed, underflow=underflow).astype(np.float64)
    k = _LOG_STEPS[base]
    nz = q != 0
    with np.errstate(divide="ignore"):
        e = np.where(nz, np.rint(k * np.log2(np.where(nz, np.abs(q), 1.0))), 0).astype(np.int64)
    return np.sign(q).astype(np.int8), e


def _shift_sum(sign, shift):
    """Exact ``sum(sign * 2**shift, axis=-1)`` for non-negative integer shifts, as Python-exact integers.

    int64 when no partial sum can overflow, else Python integers (object arrays); returns float64,
    each entry the exact integer rounded once (correctly) to float64.
    """
    n = shift.shape[-1]
    top = int(shift.max()) if shift.size else 0
    if top + max(n, 1).bit_length() <= 62:
        acc = (sign.astype(np.int64) << shift).sum(axis=-1)
        return acc.astype(np.float64)
    acc = (sign.astype(object) * (np.ones_like(shift, dtype=object) << shift.astype(object))).sum(axis=-1)
    return np.asarray(acc, dtype=object).astype(np.float64)


def _log_dot_operands(x, w, x_bits, x_fsr, w_bits, w_fsr, w_base):
    """Check the operands of a log-domain dot product and encode them (LogNet's two dot products).

    Returns ``w.ndim`` and the (sign, exponent) codes of ``x`` (unsigned) and of ``w``, the
    latter as ``(n, m)`` columns even for a vector ``w``.
    """
    x = as_float_array(x, "x")
    w = as_float_array(w, "w")
    if x.ndim not in (1, 2) or w.ndim not in (1, 2) or x.shape[-1] != w.shape[0] or x.shape[-1] == 0:
        raise ValueError(f"x (n,) or (batch, n) and w (n,) or (n, m) must share a non-zero n, "
                         f"got shapes {x.shape} and {w.shape}")
    check_choice(w_base, "w_base", LOG_BASES)
    sx, ex = log_encode(x, bits=x_bits, fsr=x_fsr, signed=False)
    sw, ew = log_encode(w, bits=w_bits, fsr=w_fsr, base=w_base)
    if w.ndim == 1:
        sw, ew = sw[:, None], ew[:, None]
    return w.ndim, sx, ex, sw, ew


def log_shift_dot(x, w, *, x_bits, x_fsr, w_bits, w_fsr, w_base="2"):
    r"""LogNet's multiplier-free dot product: :math:`x^\top w = \sum_i s_i\, 2^{\tilde x_i + \tilde w_i}`, one shift per term.

    Both operands are log-quantized with :func:`log_quantize`: the activations
    :math:`x \ge 0` to :math:`2^{\tilde x_i}` (base 2, unsigned), the weights to :math:`s_i\,
    \text{base}^{\tilde w_i}`. A product of two powers of two is a power of two, so the dot
    product of the quantized vectors is

    .. math::

        \sum_i s_i\, 2^{\tilde x_i} 2^{\tilde w_i}
        = \sum_i s_i\, \mathrm{Bitshift}(1, \tilde x_i + \tilde w_i),

    the form given by Miyashita et al. (2016) and used by LogNet (Lee et al. 2017):
    no multiplier, only shifts and an accumulator. Here the accumulator is an exact integer
    in units of the smallest product :math:`2^{p_\min}` (int64, or Python integers when the
    range would overflow), converted to float once at the end: the result is the exact dot
    product of the quantized vectors rounded once to float64, equal to
    ``math.fsum(log_quantize(x) * log_quantize(w))``.

    With ``w_base="sqrt2"`` (weights :math:`\sqrt2^{\,\tilde w_i}`, the finer base of
    Miyashita et al.), a term with odd :math:`\tilde x_i \cdot 2 + \tilde w_i` carries a factor
    :math:`\sqrt 2`. The terms are accumulated in two exact integer sums, even and odd, and the
    odd one is multiplied by :math:`\sqrt 2` once per output (our arrangement; how the papers'
    hardware handles the :math:`\sqrt 2`, e.g. by an approximation with shifts, we could not
    check):

    .. math::

        x^\top w = 2^{q_\min} \big(A_\text{even} + \sqrt 2\, A_\text{odd}\big).

    Parameters
    ----------
    x : array_like of float, shape (n,) or (batch, n), non-negative
        Activations (e.g. ReLU outputs). Not modified.
    w : array_like of float, shape (n,) or (n, m)
        Weights. Not modified.
    x_bits, x_fsr : int
        Bit width and full-scale range of the activations (base 2, unsigned).
    w_bits, w_fsr : int
        Bit width and full-scale range of the weights (signed; in half-octaves for "sqrt2").
    w_base : {"2", "sqrt2"}

    Returns
    -------
    ndarray of float64, shape ``x.shape[:-1] + w.shape[1:]`` (a 0-d array for two vectors)

    Raises
    ------
    TypeError, ValueError
        As :func:`log_quantize`, or if the shapes do not multiply.

    References
    ----------
    Lee, E. H., Miyashita, D., Chai, E., Murmann, B. and Wong, S. S. (2017). LogNet:
    energy-efficient neural networks using logarithmic computation. ICASSP, 5900-5904.

    Miyashita, Lee and Murmann (2016), arXiv:1603.01025 (dot products with bit shifts).

    Examples
    --------
    >>> x = np.array([0.5, 0.3, 1.0])              # -> 2^-1, 2^-2, 2^0
    >>> w = np.array([0.25, -0.5, 0.12])           # -> 2^-2, -2^-1, 2^-3
    >>> float(log_shift_dot(x, w, x_bits=3, x_fsr=1, w_bits=3, w_fsr=0))   # 1/8 - 1/8 + 1/8
    0.125
    """
    w_ndim, sx, ex, sw, ew = _log_dot_operands(x, w, x_bits, x_fsr, w_bits, w_fsr, w_base)
    k = _LOG_STEPS[w_base]
    # [..., i, j]: term i of output j, exponent in units of 1/k octave
    sign = (sx[..., :, None] * sw).astype(np.int8)
    p = k * ex[..., :, None] + ew
    p = np.moveaxis(p, -2, -1)
    sign = np.moveaxis(sign, -2, -1)
    q, odd = np.divmod(p, k)                                 # 2^(p/k) = 2^q * sqrt2^odd
    live = sign != 0
    qmin = int(q[live].min()) if live.any() else 0
    shift = np.where(live, q - qmin, 0)
    total = _shift_sum(np.where(odd == 0, sign, 0), shift)
    if k == 2:
        total = total + _SQRT2 * _shift_sum(np.where(odd == 1, sign, 0), shift)
    out = np.ldexp(total, qmin)
    return out if w_ndim == 2 else out[..., 0]


def log_add(a, b, *, frac_bits=None):
    r"""Addition in the log domain: :math:`\log_2(2^a + 2^b) = \max(a, b) + \log_2(1 + 2^{-|a - b|})`.

    The identity lets an accumulator stay in the log domain: a sum of :math:`2^{p_i}` is
    built by repeatedly combining the running :math:`\log_2` sum with the next exponent. The
    correction :math:`\varphi(d) = \log_2(1 + 2^{-d})` decreases from :math:`\varphi(0) = 1` to
    0, and hardware approximates it by a small table. With ``frac_bits`` :math:`= f` the
    correction is rounded to the nearest multiple of :math:`2^{-f}`, so each addition errs by at
    most :math:`2^{-f-1}` in the log domain (with :math:`f = 0`: :math:`2^{\max + 1}` when
    :math:`|a - b| \le -\log_2(\sqrt2 - 1) \approx 1.27`, e.g. for integer exponents that
    differ by at most 1, else :math:`2^{\max}`); ``None`` computes it exactly. This is the
    textbook log-number-system addition (the "Gaussian logarithm"); LogNet accumulates in the
    log domain with an approximation of this kind, but its exact table we could not check.

    ``-inf`` stands for zero: :math:`\log_2(0 + 2^b) = b`.

    Parameters
    ----------
    a, b : array_like of float, broadcastable (``-inf`` allowed, NaN and ``+inf`` not)
    frac_bits : None or int in [0, 30]

    Returns
    -------
    ndarray of float64, the broadcast shape

    Examples
    --------
    >>> log_add(np.array([3.0, 3.0, 3.0]), np.array([3.0, 2.0, 0.0])).round(4)       # 16, 12, 9
    array([4.    , 3.585 , 3.1699])
    >>> log_add(np.array([3.0, 3.0, 3.0]), np.array([3.0, 2.0, 0.0]), frac_bits=0)
    array([4., 4., 3.])
    """
    a = as_float_array(a, "a", finite=False).astype(np.float64)
    b = as_float_array(b, "b", finite=False).astype(np.float64)
    for name, v in (("a", a), ("b", b)):
        if np.isnan(v).any() or np.isposinf(v).any():
            raise ValueError(f"{name} must hold finite log values or -inf (zero), got NaN or +inf")
    if frac_bits is not None:
        frac_bits = check_int(frac_bits, "frac_bits", low=0)
        if frac_bits > 30:
            raise ValueError(f"frac_bits must be None or an integer in [0, 30], got {frac_bits}")
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    with np.errstate(invalid="ignore"):
        d = np.where(np.isneginf(lo), np.inf, hi - lo)
    phi = np.log2(1.0 + np.exp2(-d))
    if frac_bits is not None:
        phi = np.floor(phi * 2.0**frac_bits + 0.5) / 2.0**frac_bits       # the table entry, rounded half up
    return np.where(np.isneginf(hi), -np.inf, hi + phi)


def log_accumulate(p, *, frac_bits=None, axis=-1):
    r"""Sum :math:`\sum_i 2^{p_i}` without leaving the log domain: fold :func:`log_add` over ``axis``.

    .. math::

        \hat s_1 = p_1, \qquad \hat s_k = \hat s_{k-1} \boxplus p_k
        \approx \log_2 \sum_{i \le k} 2^{p_i}.

    **Error bound.** :math:`\log_2(2^a + 2^b)` has partial derivatives in :math:`[0, 1]`
    summing to 1, so an error :math:`\epsilon` in the running sum passes on as at most
    :math:`\epsilon`, and each rounded correction adds at most :math:`2^{-f-1}`:

    .. math::

        \Big|\hat s_n - \log_2 \sum_{i=1}^n 2^{p_i}\Big| \le (n - 1)\, 2^{-f-1},

    i.e. a relative error of the linear sum of at most :math:`2^{(n-1) 2^{-f-1}} - 1`. Without
    any correction (:math:`\hat s_n = \max_i p_i`) the error lies in :math:`[-\log_2 n, 0]`.

    Parameters
    ----------
    p : array_like of float, non-empty along ``axis`` (``-inf`` for zero terms)
        Not modified.
    frac_bits : None or int in [0, 30]
        As in :func:`log_add`; ``None`` is exact (up to float rounding).
    axis : int

    Returns
    -------
    ndarray of float64, ``p``'s shape without ``axis``

    Examples
    --------
    >>> log_accumulate(np.array([0.0, 0.0, 1.0, 2.0]))                  # 1 + 1 + 2 + 4 = 8
    array(3.)
    >>> log_accumulate(np.array([0.0, 0.0, 1.0, 2.0]), frac_bits=0)     # every step exact here
    array(3.)
    """
    p = as_float_array(p, "p", finite=False, allow_0d=False)
    axis = check_int(axis, "axis")
    if not -p.ndim <= axis < p.ndim:
        raise ValueError(f"axis must be in [{-p.ndim}, {p.ndim - 1}] for p of shape {p.shape}, got {axis}")
    v = np.moveaxis(p.astype(np.float64), axis, 0)
    if v.shape[0] == 0:
        raise ValueError(f"p must have at least one term along axis {axis}, got shape {p.shape}")
    s = log_add(v[0], np.full(v.shape[1:], -np.inf), frac_bits=frac_bits)   # also validates
    for term in v[1:]:
        s = log_add(s, term, frac_bits=frac_bits)
    return s


def log_domain_dot(x, w, *, x_bits, x_fsr, w_bits, w_fsr, w_base="2", frac_bits=None):
    r"""LogNet-style dot product computed entirely in the log domain but for one final subtraction.

    The product exponents :math:`p_i = \tilde x_i + \tilde w_i` (in octaves; half-octave
    weights give half-integers) of the positive and the negative terms are accumulated
    separately with :func:`log_accumulate` (the other terms enter as :math:`-\infty`, i.e.
    zero), and the result is :math:`2^{\hat s_+} - 2^{\hat s_-}`. Log-domain addition of terms
    of *opposite* sign (:math:`\log_2(1 - 2^{-d})`) is ill-conditioned near :math:`d = 0`, so
    we keep the signs apart and subtract once in the linear domain (our arrangement; how
    LogNet treats signs we could not check). Each part obeys the bound of
    :func:`log_accumulate`, :math:`|2^{\hat s_\pm} / S_\pm - 1| \le \epsilon_n = 2^{(n - 1)
    2^{-f-1}} - 1` for the exact parts :math:`S_\pm`, hence

    .. math::

        \big|\,2^{\hat s_+} - 2^{\hat s_-} - x_q^\top w_q\big| \le \epsilon_n\, |x_q|^\top |w_q|,

    where :math:`|x_q|^\top |w_q| = S_+ + S_-` is :func:`log_shift_dot` of ``x`` and ``|w|``.

    Parameters
    ----------
    x : array_like of float, shape (n,) or (batch, n), non-negative
    w : array_like of float, shape (n,) or (n, m)
    x_bits, x_fsr, w_bits, w_fsr, w_base
        As in :func:`log_shift_dot`.
    frac_bits : None or int in [0, 30]
        The precision of the log-add correction table (:func:`log_add`); ``None``: exact.

    Returns
    -------
    value : float64 array, shape ``x.shape[:-1] + w.shape[1:]`` (float for two vectors)
        :math:`2^{\hat s_+} - 2^{\hat s_-}`.
    parts : (array, array)
        :math:`\hat s_+, \hat s_-`, same shape (``-inf`` for an empty part).

    Examples
    --------
    >>> x = np.array([1.0, 1.0, 1.0, 0.5])
    >>> w = np.array([0.5, 0.5, 1.0, -1.0])        # 1/2 + 1/2 + 1 - 1/2 = 1.5
    >>> log_domain_dot(x, w, x_bits=3, x_fsr=1, w_bits=3, w_fsr=1)
    (1.5, (1.0, -1.0))
    """
    x_ndim = np.ndim(x)
    w_ndim, sx, ex, sw, ew = _log_dot_operands(x, w, x_bits, x_fsr, w_bits, w_fsr, w_base)
    # [..., i, j]: term i of output j
    sign = sx[..., :, None] * sw
    p = ex[..., :, None] + ew / _LOG_STEPS[w_base]            # log2 of each product's magnitude
    parts = tuple(log_accumulate(np.where(sign == s, p, -np.inf), frac_bits=frac_bits, axis=-2) for s in (1, -1))
    value = np.exp2(parts[0]) - np.exp2(parts[1])
    if x_ndim == 1 and w_ndim == 1:
        return float(value[0]), (float(parts[0][0]), float(parts[1][0]))
    if w_ndim == 1:
        return value[..., 0], (parts[0][..., 0], parts[1][..., 0])
    return value, parts

# --------------------------------------------------------------------------------------
# ShiftCNN: weights as sums of N powers of two (Gudovskiy and Rigazio 2017)
# --------------------------------------------------------------------------------------


def shiftcnn_codebook(bits, n=1):
    r"""ShiftCNN's codebook :math:`\mathcal C_n` for the :math:`n`-th term, sorted.

    .. math::

        \mathcal C_n = \{0,\ \pm 2^{-n+1},\ \pm 2^{-n},\ \dots,\ \pm 2^{-n - \lfloor M/2 \rfloor + 2}\},
        \qquad M = 2^B - 1,

    the codebook of Gudovskiy and Rigazio (2017): :math:`M` codewords indexed by
    :math:`B` bits (one code unused), for weights normalized to :math:`[-1, 1]`. The
    :math:`n`-th codebook is the first one shifted down by :math:`n - 1` octaves, because the
    residual left after :math:`n - 1` greedy terms is at most :math:`2^{-n+1}` (it agrees with
    the quantization script the authors released).

    Parameters
    ----------
    bits : int in [2, 8]
        :math:`B`.
    n : int in [1, 16]
        The term :math:`n` (1-based).

    Returns
    -------
    ndarray of float64, shape (2**bits - 1,), increasing

    Raises
    ------
    TypeError, ValueError
        For non-integer or out-of-range ``bits`` or ``n``.

    References
    ----------
    Gudovskiy and Rigazio (2017), "ShiftCNN: generalized low-precision architecture for
    inference of convolutional neural networks", arXiv:1706.02393 (the codebook
    definition).

    Examples
    --------
    >>> shiftcnn_codebook(3, 1)
    array([-1.  , -0.5 , -0.25,  0.  ,  0.25,  0.5 ,  1.  ])
    >>> shiftcnn_codebook(3, 2)[4:]
    array([0.125, 0.25 , 0.5  ])
    """
    B = check_bits(bits, "bits", low=2, high=8)
    n = check_int(n, "n", low=1)
    if n > 16:
        raise ValueError(f"n must be an integer in [1, 16], got {n}")
    half = 2 ** (B - 1) - 1  # floor(M / 2)
    mags = np.ldexp(1.0, np.arange(-n - half + 2, -n + 2))  # increasing
    return np.concatenate([-mags[::-1], [0.0], mags])


def _check_n_shifts(n_shifts):
    n = check_int(n_shifts, "n_shifts", low=1)
    if n > 16:
        raise ValueError(f"n_shifts must be an integer in [1, 16], got {n}")
    return n


def shiftcnn_encode(w, *, bits, n_shifts, scale=None):
    r"""ShiftCNN's greedy encoding of weights as sums of ``n_shifts`` signed powers of two.

    The weights are normalized by the layer's largest magnitude, :math:`r_0 = w / s`, and each
    term takes the codeword nearest to what is left (Gudovskiy and Rigazio 2017, the
    quantization algorithm):

    .. math::

        q_n = \arg\min_{c \in \mathcal C_n} |r_{n-1} - c|, \qquad r_n = r_{n-1} - q_n,
        \qquad \hat w = s \sum_{n=1}^{N} q_n .

    Because :math:`0 \in \mathcal C_n`, :math:`|r_n| \le |r_{n-1}|` for every weight: each
    term can only reduce the error. The nearest codeword uses linear midpoints (as INQ's
    rule: :math:`\tfrac32 2^k` between :math:`2^k` and :math:`2^{k+1}`, half the smallest
    codeword between it and zero; ties go to the larger magnitude). *Note:* the authors'
    released script sends a residual to zero below :math:`\tfrac34` of the smallest codeword
    rather than :math:`\tfrac12`; the two agree everywhere else.

    Parameters
    ----------
    w : array_like of float, any shape
        Not modified.
    bits : int in [2, 8]
        :math:`B`, bits per term.
    n_shifts : int in [1, 16]
        :math:`N`, the number of terms (shifts and adds per product).
    scale : float > 0, optional
        :math:`s`; default ``max|w|`` (1.0 if ``w`` is all zero or empty).

    Returns
    -------
    indices : ndarray of uint8, shape ``(n_shifts,) + w.shape``
        ``indices[n - 1]`` indexes ``shiftcnn_codebook(bits, n)``.
    scale : float
        :math:`s`.

    Raises
    ------
    TypeError, ValueError
        For non-floating or non-finite ``w`` or bad options.

    References
    ----------
    Gudovskiy and Rigazio (2017), arXiv:1706.02393.

    Examples
    --------
    >>> idx, s = shiftcnn_encode(np.array([0.7, -1.0]), bits=4, n_shifts=2)
    >>> [shiftcnn_codebook(4, n + 1)[idx[n]].tolist() for n in range(2)]   # 0.7 = 0.5 + 0.25 - 0.05
    [[0.5, -1.0], [0.25, 0.0]]
    """
    w = as_float_array(w, "w")
    B = check_bits(bits, "bits", low=2, high=8)
    N = _check_n_shifts(n_shifts)
    if scale is None:
        s = float(np.max(np.abs(w))) if w.size else 0.0
        s = s if s > 0 else 1.0
    else:
        s = float(check_positive(scale, "scale"))
    r = w.astype(np.float64) / s
    center = 2 ** (B - 1) - 1  # index of 0 in each codebook
    indices = np.empty((N,) + w.shape, dtype=np.uint8)
    for n in range(1, N + 1):
        cb = shiftcnn_codebook(B, n)
        mags = cb[center:]  # [0, smallest, ..., largest]
        j = np.searchsorted(0.5 * (mags[1:] + mags[:-1]), np.abs(r), side="right")  # ties go up
        indices[n - 1] = np.where(r < 0, center - j, center + j)
        r = r - np.copysign(mags[j], r)
    return indices, s


def shiftcnn_decode(indices, *, bits, scale, dtype=np.float32):
    r"""Weights from ShiftCNN codes: :math:`\hat w = s \sum_{n=1}^{N} \mathcal C_n[\text{idx}_n]`.

    The sum of a few powers of two is exact in float64; one rounding to ``dtype`` at the end.

    Parameters
    ----------
    indices : array_like of int, shape ``(N,) + shape``
        From :func:`shiftcnn_encode`.
    bits : int in [2, 8]
    scale : float > 0
    dtype : floating dtype

    Returns
    -------
    ndarray of ``dtype``, shape ``indices.shape[1:]``

    Raises
    ------
    TypeError
        If ``indices`` is not integer or ``dtype`` not floating.
    ValueError
        If ``indices`` is 0-d, has more than 16 terms, or holds an index outside the codebook.

    References
    ----------
    Gudovskiy and Rigazio (2017), arXiv:1706.02393.

    Examples
    --------
    >>> idx, s = shiftcnn_encode(np.array([0.7, -1.0]), bits=4, n_shifts=2)
    >>> shiftcnn_decode(idx, bits=4, scale=s)
    array([ 0.75, -1.  ], dtype=float32)
    """
    idx = as_int_array(indices, "indices")
    B = check_bits(bits, "bits", low=2, high=8)
    s = float(check_positive(scale, "scale"))
    dtype = check_float_dtype(dtype)
    if idx.ndim == 0:
        raise ValueError("indices must have shape (n_shifts, ...), got a 0-d array")
    _check_n_shifts(idx.shape[0])
    M = 2**B - 1
    if idx.size and (idx.min() < 0 or idx.max() >= M):
        raise ValueError(f"indices must be in [0, {M - 1}] for bits={B}, got values in "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    total = np.zeros(idx.shape[1:], dtype=np.float64)
    for n in range(1, idx.shape[0] + 1):
        total += shiftcnn_codebook(B, n)[idx[n - 1]]
    return (s * total).astype(dtype)


def shiftcnn_quantize(w, *, bits, n_shifts, scale=None):
    r"""ShiftCNN approximation of ``w``: :func:`shiftcnn_decode` of :func:`shiftcnn_encode`.

    Parameters
    ----------
    w : array_like of float, any shape
    bits, n_shifts, scale
        As in :func:`shiftcnn_encode`.

    Returns
    -------
    ndarray, shape and dtype of ``w``

    Raises
    ------
    TypeError, ValueError
        As :func:`shiftcnn_encode`.

    References
    ----------
    Gudovskiy and Rigazio (2017), arXiv:1706.02393.

    Examples
    --------
    >>> shiftcnn_quantize(np.array([0.7, 0.3, -0.1, 1.0]), bits=3, n_shifts=2)
    array([ 0.75 ,  0.25 , -0.125,  1.   ])
    """
    w = as_float_array(w, "w")
    idx, s = shiftcnn_encode(w, bits=bits, n_shifts=n_shifts, scale=scale)
    return shiftcnn_decode(idx, bits=bits, scale=s, dtype=w.dtype)


# --------------------------------------------------------------------------------------
# HWGQ: the half-wave Gaussian quantizer of ReLU activations (Cai et al. 2017)
# --------------------------------------------------------------------------------------


def _hwgq_parts(levels):
    """Thresholds [0, midpoints of the positive levels] and MSE of the HWGQ with these levels."""
    q = levels[1:]  # the m positive levels
    t = np.concatenate(([0.0], 0.5 * (q[1:] + q[:-1])))
    hi = np.concatenate((t[1:], [np.inf]))
    t0a, t1a, t2a = _tails_gaussian(t)
    t0b, t1b, t2b = _tails_gaussian(hi)
    p, m1, m2 = t0a - t0b, t1a - t1b, t2a - t2b  # N(0, 1) moments of the cells (t_i, t_{i+1}]
    return t, p, m1, m2, float(np.sum(m2 - 2.0 * q * m1 + q * q * p))


def _hwgq_uniform_mse(step, m):
    return _hwgq_parts(np.arange(m + 1) * step)[-1]


@functools.lru_cache(maxsize=64)
def _hwgq_table(bits, uniform, tol, max_iter):
    """Levels, thresholds and MSE of the HWGQ (pure function of its arguments, memoized)."""
    from ._optimize import golden_section_min

    m = 2**bits - 1
    step = golden_section_min(lambda d: _hwgq_uniform_mse(d, m), 1e-9, 8.0 / m + 1.0, tol=1e-13)
    levels = np.arange(m + 1) * step
    if not uniform:  # Lloyd's iteration on the positive half, started from the uniform optimum

        def cells(q):  # the cells (t_i, t_{i+1}] of the positive levels; t_1 = 0 is pinned
            t, p, m1, _m2, _ = _hwgq_parts(np.concatenate(([0.0], q)))
            hi = np.concatenate((t[1:], [np.inf]))
            return t, hi, p, m1, np.concatenate(([0.0], _pdf(t[1:], "gaussian"))), _pdf(hi, "gaussian")

        q, converged = _lloyd_fixed_point(levels[1:], cells, tol, max_iter)
        levels = np.concatenate(([0.0], q))
        if not converged:
            warnings.warn(f"hwgq_levels did not converge in max_iter={max_iter} iterations",
                          RuntimeWarning, stacklevel=3)
    t, *_, mse = _hwgq_parts(levels)
    return tuple(levels.tolist()), tuple(t.tolist()), max(mse, 0.0)


def hwgq_levels(bits, *, uniform=True, tol=1e-12, max_iter=100_000):
    r"""HWGQ levels and thresholds: the MSE-optimal quantizer of ReLU(:math:`\mathcal N(0, 1)`).

    The half-wave Gaussian quantizer of Cai et al. (2017) approximates
    :math:`g(x) = \max(x, 0)` for batch-normalized pre-activations :math:`x \sim \mathcal N(0, 1)`:

    .. math::

        Q(x) = \begin{cases} q_i & x \in (t_i, t_{i+1}], \\ 0 & x \le 0, \end{cases}
        \qquad
        Q^* = \arg\min_Q \mathbb E_x\big[(Q(x) - g(x))^2\big],

    with :math:`m = 2^b - 1` positive levels :math:`q_1 < \dots < q_m`, :math:`t_1 = 0`,
    :math:`t_{m+1} = \infty` (so all :math:`2^b` codes are used: zero and the :math:`m`
    levels). Negative inputs cost nothing (:math:`Q = g = 0`), so the optimum is Lloyd's
    quantizer of the positive half of the Gaussian with the first threshold pinned at 0:
    :math:`t_i = (q_{i-1} + q_i)/2` for :math:`i \ge 2` and :math:`q_i = \mathbb E[x \mid t_i
    < x \le t_{i+1}]`, from the closed-form Gaussian cell moments of :func:`lloyd_max`.

    ``uniform=True`` gives the **uniform HWGQ** instead, :math:`q_i = i\,\Delta`, with the step
    :math:`\Delta` minimizing the same MSE (golden-section search); its products with binary
    weights reduce to integer arithmetic. Steps: 0.7979 (1 bit, :math:`=\sqrt{2/\pi}`),
    0.5388 (2 bits), 0.3217 (3 bits), 0.1842 (4 bits); the HWGQ authors' later code uses
    0.799, 0.538, 0.3217, 0.185.

    Parameters
    ----------
    bits : int in [1, 8]
        :math:`b`; :math:`2^b - 1` positive levels.
    uniform : bool
        Uniform (default) or non-uniform (Lloyd) levels.
    tol : float > 0
        Lloyd's stopping tolerance on the level updates (non-uniform only).
    max_iter : int >= 1
        Lloyd's iteration cap (a :class:`RuntimeWarning` if reached).

    Returns
    -------
    LloydMax
        ``levels`` shape (2**bits,): ``[0, q_1, ..., q_m]``; ``thresholds`` shape
        (2**bits - 1,): ``[t_1 = 0, t_2, ..., t_m]``; ``mse``
        :math:`= \mathbb E[(Q(x) - \max(x, 0))^2]` for :math:`x \sim \mathcal N(0, 1)`.

    Raises
    ------
    TypeError, ValueError
        For bad ``bits``, ``uniform``, ``tol`` or ``max_iter``.

    References
    ----------
    Cai, He, Sun and Vasconcelos (2017), "Deep learning with low precision by half-wave
    Gaussian quantization", CVPR (the forward approximation).

    Examples
    --------
    >>> r = hwgq_levels(2)                        # uniform 2-bit HWGQ
    >>> r.levels.round(4), r.thresholds.round(4)
    (array([0.    , 0.5388, 1.0776, 1.6164]), array([0.    , 0.8082, 1.347 ]))
    >>> hwgq_levels(2, uniform=False).levels.round(4)     # Lloyd: denser near 0
    array([0.    , 0.3177, 1.0001, 1.8936])
    """
    b = check_bits(bits, "bits", low=1, high=8)
    uniform = check_bool(uniform, "uniform")
    tol = float(check_positive(tol, "tol"))
    max_iter = check_int(max_iter, "max_iter", low=1)
    levels, t, mse = _hwgq_table(b, uniform, tol, max_iter)
    return LloydMax(np.array(levels), np.array(t), mse)


def hwgq_quantize(x, *, bits, uniform=True, scale=1.0):
    r"""Apply the half-wave Gaussian quantizer to pre-activations :math:`x` (the forward pass of HWGQ).

    .. math::

        Q(x) = \begin{cases} \sigma q_i & x \in (\sigma t_i, \sigma t_{i+1}], \\
               0 & x \le 0, \end{cases}

    with the levels and thresholds of :func:`hwgq_levels` (Cai et al. 2017) scaled
    by :math:`\sigma` = ``scale`` (the standard deviation of :math:`x`; 1 after batch
    normalization). It replaces :math:`\max(x, 0)`: the output is a quantized ReLU. Every
    positive input maps to a positive level (the first threshold is 0), as in the paper's
    definition. For training, the paper pairs it with a backward approximation (vanilla,
    clipped or log-tailed ReLU); this function is the forward only.

    Parameters
    ----------
    x : array_like of float, any shape
        Pre-activations (before the ReLU). Not modified.
    bits : int in [1, 8]
    uniform : bool
        As in :func:`hwgq_levels`.
    scale : float > 0
        :math:`\sigma`.

    Returns
    -------
    ndarray, shape and dtype of ``x``
        Values in ``scale * hwgq_levels(bits, uniform=uniform).levels``.

    Raises
    ------
    TypeError, ValueError
        For a non-floating or non-finite ``x`` or bad options.

    References
    ----------
    Cai et al. (2017), CVPR (the forward approximation).

    Examples
    --------
    >>> hwgq_quantize(np.array([-1.0, 0.0, 0.01, 0.9, 1.5, 9.0]), bits=2).round(4)
    array([0.    , 0.    , 0.5388, 1.0776, 1.6164, 1.6164])
    """
    x = as_float_array(x, "x")
    s = float(check_positive(scale, "scale"))
    r = hwgq_levels(bits, uniform=uniform)
    i = np.searchsorted(r.thresholds * s, x.astype(np.float64), side="left")  # t_{i-1} < x <= t_i
    return (s * r.levels[i]).astype(x.dtype)
