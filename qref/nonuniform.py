r"""Non-uniform scalar quantization: the Lloyd-Max quantizer, for a density and for data.

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
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from ._validation import as_float_array, check_bits, check_choice, check_int, check_positive

__all__ = ["LloydMax", "lloyd_max", "lloyd_max_data", "DENSITIES"]

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


def lloyd_max(bits=None, *, n_levels=None, density="gaussian", tol=1e-12, max_iter=100_000):
    r"""Lloyd-Max quantizer of a unit-variance density: optimal levels, thresholds and MSE.

    Alternates the two optimality conditions of Max (1960) and Lloyd (1982, Method I),

    .. math::

        t_i = \frac{y_i + y_{i+1}}{2}, \qquad
        y_i = \frac{\int_{t_{i-1}}^{t_i} x f(x)\,dx}{\int_{t_{i-1}}^{t_i} f(x)\,dx},

    until no level moves by more than ``tol``, and returns the distortion
    :math:`D = \sum_i \int_{t_{i-1}}^{t_i} (x - y_i)^2 f(x)\,dx
    = \sum_i (M_{2,i} - 2 y_i M_{1,i} + y_i^2 P_i)` computed from the closed-form cell moments
    :math:`P_i, M_{1,i}, M_{2,i}`. Each iteration never increases :math:`D`, and for the
    log-concave densities here the fixed point is the global optimum (Fleischer 1964).
    Start: the levels of the optimal uniform-density quantizer,
    :math:`y_i = \sqrt{3}\,(2i - 1 - n)/n`.

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
        At most this many iterations (a :class:`RuntimeWarning` if not converged; many levels
        converge slowly, about :math:`n^2` iterations).

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
    levels = _start_levels(n, density)
    for _ in range(max_iter):
        t = _thresholds(levels)
        a = np.concatenate(([-np.inf], t))
        b = np.concatenate((t, [np.inf]))
        p, m1, _m2 = _cell_moments(a, b, density)
        new = np.where(p > 0, m1 / np.where(p > 0, p, 1.0), levels)  # an empty cell keeps its level
        step = float(np.max(np.abs(new - levels)))
        levels = new
        if step <= tol:
            break
    else:
        warnings.warn(f"lloyd_max did not converge in max_iter={max_iter} iterations "
                      f"(last level update {step:.3g} > tol={tol:g})", RuntimeWarning, stacklevel=2)
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
