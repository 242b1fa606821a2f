r"""Why quantization works: the high-dimensional geometry of binary, ternary and k-bit vectors.

Anderson & Berg (2018) explain why networks with binary weights still work by two properties
of high-dimensional vectors:

* **Angle preservation.** A random vector :math:`w \in \mathbb R^d` and its binarized version
  :math:`\mathrm{sign}(w)` are separated by an angle that, as :math:`d \to \infty`, tends to

  .. math::

      \theta_\infty = \arccos \frac{\mathbb E|w|}{\sqrt{\mathbb E w^2}}
      = \arccos\sqrt{2/\pi} \approx 37.1^\circ \quad (w_i \sim \mathcal N(0, \sigma^2)),

  while two independent random vectors are almost orthogonal (:math:`90^\circ`).
* **Dot-product proportionality.** For random activations :math:`a`, the dot products
  :math:`\langle w, a\rangle` and :math:`\langle \mathrm{sign}(w), a\rangle` are strongly
  correlated; for isotropic :math:`a` the correlation is exactly :math:`\cos\theta`.

This module computes both for given vectors (one angle per row, the last axis being the
vector) and their exact :math:`d \to \infty` limits for Gaussian, Laplace and uniform
entries, for three *odd* quantizers :math:`q` (the same for every row up to the row's RMS
:math:`r = \sqrt{\frac1d\sum_i w_i^2}`):

* ``"binary"``: :math:`q(w) = \mathrm{sign}(w)` (:func:`qref.binary.binarize`);
* ``"ternary"``: :math:`q(w) = \mathrm{sign}(w)\,\mathbb 1\{|w| > t\,r\}`;
* ``"uniform"``: ``bits``-bit symmetric narrow-range uniform quantization
  (:func:`qref.uniform.fake_quantize`) of the range :math:`[-c\,r, c\,r]`: the
  :math:`2^{b} - 1` levels :math:`kS`, :math:`|k| \le L = 2^{b-1} - 1`, :math:`S = c\,r/L`.

The scale of :math:`q` does not change an angle, so binary and ternary need none. The
thresholds are relative to the row's RMS, which makes every limit exist: a min–max range would
grow like :math:`\sqrt{2\ln d}` and the angle would not converge.

**The limit.** By the law of large numbers, for i.i.d. entries with variance :math:`\sigma^2`,

.. math::

    \cos\theta = \frac{\frac1d\sum_i w_i q(w_i)}{\sqrt{\frac1d\sum_i w_i^2}\sqrt{\frac1d\sum_i q(w_i)^2}}
    \;\longrightarrow\; \frac{\mathbb E[w\,q(w)]}{\sqrt{\mathbb E[w^2]\,\mathbb E[q(w)^2]}}.

For a step function :math:`q` with level :math:`y_k` on the cell :math:`[a_k, b_k)` both
expectations are integrals of the density over the cells, done here in closed form (with
:func:`math.erf` for the Gaussian): :math:`\mathbb E[w\,q(w)] = \sum_k y_k \int_{a_k}^{b_k} w\,p(w)\,dw`
and :math:`\mathbb E[q^2] = \sum_k y_k^2\,P(a_k \le w < b_k)`. For the ternary quantizer this
gives

.. math::

    \cos\theta_\infty = \frac{\mathbb E\big[|w|\,\mathbb 1\{|w| > t\}\big]}{\sqrt{P(|w| > t)\,\mathbb E w^2}}.

References
----------
Anderson, A. G., Berg, C. P. (2018). The High-Dimensional Geometry of Binary Neural Networks.
ICLR 2018. arXiv:1705.07199.

Guo, Y. (2018). A Survey on Methods and Theories of Quantized Neural Networks.
arXiv:1808.04752 (the section on why quantization works).

Li, H., De, S., Xu, Z., Studer, C., Samet, H., Goldstein, T. (2017). Training Quantized Nets:
A Deeper Understanding. NeurIPS 30. arXiv:1706.02379. (The second half of this module:
stochastic rounding against BinaryConnect, :func:`quantized_sgd`, :func:`sr_moments`,
:func:`sr_transition_matrix`, :func:`stationary_distribution`.)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import binary, rounding, uniform
from ._optimize import golden_section_min
from ._validation import (as_float_array, check_bits, check_choice, check_int, check_positive, check_real,
                          check_rng)

__all__ = [
    "QUANTIZERS",
    "DISTRIBUTIONS",
    "BINARY_LIMIT_COS",
    "BINARY_LIMIT_DEGREES",
    "quantize_rows",
    "row_angles",
    "quantization_angle",
    "limit_cos",
    "limit_angle",
    "optimal_threshold",
    "optimal_clip",
    "dot_products",
    "dot_product_correlation",
    "SGD_RULES",
    "QuantizedSGDResult",
    "LeastSquares",
    "sr_moments",
    "quantized_sgd",
    "sr_transition_matrix",
    "stationary_distribution",
    "sr_two_point_stationary",
]

#: The quantizers this module studies.
QUANTIZERS = ("binary", "ternary", "uniform")
#: The entry distributions of the closed-form limits (zero mean; same families as qref.data).
DISTRIBUTIONS = ("gaussian", "laplace", "uniform")
#: :math:`\sqrt{2/\pi}`: the cosine between a Gaussian vector and its sign, as :math:`d \to \infty`.
BINARY_LIMIT_COS = math.sqrt(2.0 / math.pi)
#: :math:`\arccos\sqrt{2/\pi} = 37.07^\circ` (Anderson & Berg 2018).
BINARY_LIMIT_DEGREES = math.degrees(math.acos(BINARY_LIMIT_COS))  # 37.07

_MAX_THEORY_BITS = 12  # 2047 levels; the closed form loops over them
_erf = np.frompyfunc(math.erf, 1, 1)


# ---- the quantizers, row by row --------------------------------------------------------------

def _as_rows(w, name="w"):
    """``w`` (float, >= 1-d, rows non-empty) and its rows as a float64 (m, d) matrix."""
    w = as_float_array(w, name, allow_0d=False)
    if w.shape[-1] == 0:
        raise ValueError(f"{name} must have vectors of length >= 1 along its last axis, got shape {w.shape}")
    return w, w.reshape(-1, w.shape[-1]).astype(np.float64)


def _check_quantizer(quantizer, bits, threshold, clip):
    """Validated ``(quantizer, bits, threshold, clip)``; the defaults filled in (Gaussian optima)."""
    check_choice(quantizer, "quantizer", QUANTIZERS)
    if quantizer == "ternary":
        threshold = optimal_threshold() if threshold is None else check_real(threshold, "threshold")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 (a multiple of the row's RMS), got {threshold}")
    elif quantizer == "uniform":
        if bits is None:
            raise TypeError("bits must be given for quantizer='uniform' (an integer in [2, 16])")
        bits = check_bits(bits, low=2, high=16)
        if clip is None:
            if bits > _MAX_THEORY_BITS:
                raise ValueError(f"clip must be given for bits > {_MAX_THEORY_BITS}, got clip=None and bits={bits}")
            clip = optimal_clip(bits)
        else:
            clip = float(check_positive(clip, "clip"))
    return quantizer, bits, threshold, clip


def quantize_rows(w, *, quantizer="binary", bits=None, threshold=None, clip=None):
    r"""Quantize every vector (last axis) of ``w`` with a binary, ternary or k-bit uniform quantizer.

    With :math:`r` the RMS of the row :math:`w \in \mathbb R^d`,

    .. math::

        q_{\text{binary}}(w) = \mathrm{sign}(w), \qquad
        q_{\text{ternary}}(w) = \mathrm{sign}(w)\,\mathbb 1\{|w| > t\,r\}, \qquad
        q_{\text{uniform}}(w) = S\,\mathrm{clip}\big(\mathrm{round}(w/S), -L, L\big)

    with :math:`L = 2^{b-1} - 1` and :math:`S = c\,r/L` (symmetric narrow-range
    :func:`qref.uniform.fake_quantize`, one scale per row). Binary and ternary values are
    unscaled (:math:`\pm 1`, 0): the angles of Anderson & Berg (2018) do not depend on a scale.

    Parameters
    ----------
    w : array_like of float, shape (..., d), d >= 1
    quantizer : {"binary", "ternary", "uniform"}
    bits : int in [2, 16], only for ``"uniform"``
    threshold : float >= 0, only for ``"ternary"``
        :math:`t`; default :func:`optimal_threshold` (``0.612``, the Gaussian optimum, which is
        also TWN's least-squares threshold).
    clip : float > 0, only for ``"uniform"``
        :math:`c`; default :func:`optimal_clip` ``(bits)`` (the Gaussian optimum; needs
        ``bits <= 12``).

    Returns
    -------
    numpy.ndarray, same shape and dtype as ``w``

    Raises
    ------
    TypeError
        For non-float ``w``, or ``bits`` missing for ``"uniform"``.
    ValueError
        For 0-d ``w``, empty rows, NaN/inf, an unknown quantizer, or bad ``bits``,
        ``threshold``, ``clip``.

    References
    ----------
    Anderson & Berg (2018); Li, Zhang & Liu (2016) (TWN) for the ternary threshold.

    Examples
    --------
    >>> w = np.array([[0.1, -2.0, 0.5, 1.4]])
    >>> quantize_rows(w)
    array([[ 1., -1.,  1.,  1.]])
    >>> quantize_rows(w, quantizer="ternary", threshold=0.5)   # RMS 1.24: |w| > 0.62 kept
    array([[ 0., -1.,  0.,  1.]])
    """
    w, rows = _as_rows(w)
    quantizer, bits, threshold, clip = _check_quantizer(quantizer, bits, threshold, clip)
    if quantizer == "binary":
        return binary.binarize(w)
    rms = np.sqrt(np.mean(rows**2, axis=1))  # r, one per row
    if quantizer == "ternary":
        q = np.where(np.abs(rows) > threshold * rms[:, None], np.sign(rows), 0.0)
        return q.reshape(w.shape).astype(w.dtype)
    m = np.maximum(clip * rms, np.finfo(np.float64).tiny)  # an all-zero row stays zero
    p = uniform.params_from_range(-m, m, bits=bits, symmetric=True, narrow_range=True, axis=0)
    return uniform.fake_quantize(rows, p).reshape(w.shape).astype(w.dtype)


def row_angles(x, y, *, degrees=True):
    r"""Angle between corresponding vectors (last axis) of ``x`` and ``y``.

    .. math:: \theta = \arccos\frac{\langle x, y\rangle}{\lVert x\rVert\,\lVert y\rVert}

    Parameters
    ----------
    x, y : array_like of float, same shape (..., d)
    degrees : bool
        Degrees (default) or radians.

    Returns
    -------
    numpy.ndarray of float64, shape (...) (a 0-d array for 1-d input)

    Raises
    ------
    ValueError
        If the shapes differ or a vector of either is all zero (no angle).

    Examples
    --------
    >>> row_angles([[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, -3.0]])
    array([45., 90.])
    """
    x, xr = _as_rows(x, "x")
    y, yr = _as_rows(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    nx, ny = np.linalg.norm(xr, axis=1), np.linalg.norm(yr, axis=1)
    for n, name in ((nx, "x"), (ny, "y")):
        if (n == 0).any():
            raise ValueError(f"{name} has {int((n == 0).sum())} all-zero vector(s): the angle is undefined")
    theta = np.arccos(np.clip(np.einsum("ij,ij->i", xr, yr) / (nx * ny), -1.0, 1.0))
    theta = np.degrees(theta) if degrees else theta
    return theta.reshape(x.shape[:-1])


def quantization_angle(w, *, quantizer="binary", bits=None, threshold=None, clip=None, degrees=True):
    r"""Angle between each vector of ``w`` and its quantized version (Anderson & Berg's angle).

    ``row_angles(w, quantize_rows(w, ...))``; for Gaussian rows it tends to :func:`limit_angle`
    as the length ``d`` grows (to :math:`37.07^\circ` for ``"binary"``).

    Parameters
    ----------
    w : array_like of float, shape (..., d)
    quantizer, bits, threshold, clip
        As in :func:`quantize_rows`.
    degrees : bool

    Returns
    -------
    numpy.ndarray of float64, shape (...)

    Raises
    ------
    ValueError
        As :func:`quantize_rows`, or when a row or its quantized version is all zero.

    Examples
    --------
    >>> w = np.random.default_rng(0).normal(size=(3, 100_000))
    >>> quantization_angle(w).round(1)
    array([37.1, 37.1, 37.1])
    """
    return row_angles(w, quantize_rows(w, quantizer=quantizer, bits=bits, threshold=threshold, clip=clip),
                      degrees=degrees)


# ---- the d -> infinity limit, by integrating the density over the quantizer's cells ---------

def _cdf_moment(distribution):
    """``(F, M)`` for the unit-variance density: ``F(x) = P(0 <= w < x)`` and ``M(x) = E[w 1{0 <= w < x}]``, x >= 0 (arrays)."""
    if distribution == "gaussian":
        def F(x):
            return 0.5 * _erf(x / math.sqrt(2.0)).astype(np.float64)

        def M(x):
            return (1.0 - np.exp(-0.5 * x * x)) / math.sqrt(2.0 * math.pi)
    elif distribution == "laplace":
        b = 1.0 / math.sqrt(2.0)  # variance 2 b^2 = 1

        def F(x):
            return 0.5 * (1.0 - np.exp(-x / b))

        def M(x):
            return 0.5 * (b - (x + b) * np.exp(-x / b))
    else:
        a = math.sqrt(3.0)  # uniform on [-a, a], variance a^2 / 3 = 1

        def F(x):
            return np.minimum(x, a) / (2.0 * a)

        def M(x):
            return np.minimum(x, a) ** 2 / (4.0 * a)
    return F, M


def _cells(quantizer, bits, threshold, clip):
    """Positive half of the odd step function q: levels y_k on cells [lo_k, hi_k) (w >= 0, RMS 1)."""
    if quantizer == "binary":
        return np.array([1.0]), np.array([0.0]), np.array([np.inf])
    if quantizer == "ternary":
        return np.array([1.0]), np.array([threshold]), np.array([np.inf])
    L = 2 ** (bits - 1) - 1
    step = clip / L
    k = np.arange(1, L + 1, dtype=np.float64)
    hi = np.append((k[:-1] + 0.5) * step, np.inf)  # the top level takes everything above
    return k * step, (k - 0.5) * step, hi


def _limit_cos(quantizer, bits, threshold, clip, distribution):
    F, M = _cdf_moment(distribution)
    y, lo, hi = _cells(quantizer, bits, threshold, clip)
    hi_f = np.where(np.isinf(hi), 1e3, hi)  # 1000 RMS: F and M are at their limits
    e_wq = 2.0 * np.sum(y * (M(hi_f) - M(lo)))  # E[w q(w)], both halves (q is odd)
    e_qq = 2.0 * np.sum(y**2 * (F(hi_f) - F(lo)))  # E[q(w)^2]
    return e_wq / math.sqrt(e_qq) if e_qq > 0 else float("nan")  # E[w^2] = 1


def limit_cos(quantizer="binary", *, bits=None, threshold=None, clip=None, distribution="gaussian"):
    r"""The :math:`d \to \infty` cosine between a random vector and its quantized version.

    .. math::

        \cos\theta_\infty = \frac{\mathbb E[w\,q(w)]}{\sqrt{\mathbb E[w^2]\,\mathbb E[q(w)^2]}}

    for i.i.d. zero-mean entries :math:`w` (the RMS of a row tends to :math:`\sigma`, so the
    result does not depend on :math:`\sigma`). Cases in closed form:

    * binary: :math:`\mathbb E|w|/\sqrt{\mathbb E w^2}`, which is :math:`\sqrt{2/\pi} \approx
      0.798` for a Gaussian (Anderson & Berg 2018), :math:`1/\sqrt 2` for Laplace and
      :math:`\sqrt 3/2` for uniform entries;
    * ternary: :math:`\mathbb E[|w|\mathbb 1\{|w|>t\}]/\sqrt{P(|w|>t)\,\mathbb E w^2}`;
    * uniform: the sum over the cells of the :math:`b`-bit grid, each integral in closed form
      (:func:`math.erf` for the Gaussian).

    Parameters
    ----------
    quantizer, bits, threshold, clip
        As in :func:`quantize_rows` (``bits <= 12`` for ``"uniform"``).
    distribution : {"gaussian", "laplace", "uniform"}

    Returns
    -------
    float in (0, 1]

    Raises
    ------
    ValueError
        For bad options, or when the quantizer maps almost every input to 0 (a ternary
        threshold beyond the support of uniform entries).

    References
    ----------
    Anderson & Berg (2018).

    Examples
    --------
    >>> round(limit_cos(), 6), round(math.sqrt(2 / math.pi), 6)
    (0.797885, 0.797885)
    >>> round(limit_cos("ternary", threshold=0.0), 6)   # t = 0: ternary is binary
    0.797885
    """
    check_choice(distribution, "distribution", DISTRIBUTIONS)
    quantizer, bits, threshold, clip = _check_quantizer(quantizer, bits, threshold, clip)
    if quantizer == "uniform" and bits > _MAX_THEORY_BITS:
        raise ValueError(f"bits must be <= {_MAX_THEORY_BITS} for the limit, got {bits}")
    c = _limit_cos(quantizer, bits, threshold, clip, distribution)
    if not c > 0:
        raise ValueError(f"the {quantizer} quantizer maps (almost) every {distribution} input to 0 "
                         f"(threshold={threshold}, clip={clip}): no angle")
    return float(min(c, 1.0))


def limit_angle(quantizer="binary", *, bits=None, threshold=None, clip=None, distribution="gaussian",
                degrees=True):
    r"""The :math:`d \to \infty` angle :math:`\arccos` :func:`limit_cos` (degrees by default).

    Examples
    --------
    >>> round(limit_angle(), 2)   # arccos(sqrt(2/pi)), Anderson & Berg's 37 degrees
    37.07
    >>> [round(limit_angle("uniform", bits=b), 1) for b in (2, 3, 4)]
    [25.9, 12.5, 6.5]
    """
    c = limit_cos(quantizer, bits=bits, threshold=threshold, clip=clip, distribution=distribution)
    theta = math.acos(c)
    return math.degrees(theta) if degrees else theta


def _grid_then_golden(func, lo, hi, n=200):
    def f(x):
        v = func(x)
        return v if v == v else -math.inf  # NaN: everything maps to 0, the worst possible

    xs = np.linspace(lo, hi, n)
    i = int(np.argmax([f(x) for x in xs]))
    return golden_section_min(lambda x: -f(x), xs[max(i - 1, 0)], xs[min(i + 1, n - 1)], tol=1e-9)


@functools.lru_cache(maxsize=None)
def _optimal_threshold(distribution):
    top = math.sqrt(3.0) if distribution == "uniform" else 4.0
    return float(_grid_then_golden(lambda t: _limit_cos("ternary", None, t, None, distribution), 0.0, top - 1e-6))


@functools.lru_cache(maxsize=None)
def _optimal_clip(bits, distribution):
    return float(_grid_then_golden(lambda c: _limit_cos("uniform", bits, None, c, distribution), 0.05, 8.0))


def optimal_threshold(*, distribution="gaussian"):
    r"""The ternary threshold :math:`t` (in units of the RMS) with the smallest limiting angle.

    Maximises :math:`\mathbb E[|w|\mathbb 1\{|w|>t\}]/\sqrt{P(|w|>t)}`. This is the large-:math:`d`
    form of TWN's objective :math:`\frac{1}{|I_\Delta|}(\sum_{I_\Delta}|w_i|)^2` (Li, Zhang & Liu
    2016, Sec. 2): with the best scale, the squared error of a quantized vector is
    :math:`\lVert w\rVert^2\sin^2\theta`, so the least-squares threshold *is* the
    angle-minimising one. Gaussian: :math:`t^* \approx 0.612` (TWN's :math:`0.6\sigma`);
    uniform: :math:`t^* = \sqrt 3/3`, a third of the support.

    Found by a grid search refined by golden-section search (to ~1e-9).

    Examples
    --------
    >>> round(float(optimal_threshold()), 3), round(float(optimal_threshold(distribution="uniform")), 4)
    (0.612, 0.5774)
    """
    check_choice(distribution, "distribution", DISTRIBUTIONS)
    return _optimal_threshold(distribution)


def optimal_clip(bits, *, distribution="gaussian"):
    r"""The clipping range :math:`c` (in units of the RMS) of the ``bits``-bit grid with the smallest limiting angle.

    Maximises :func:`limit_cos` ``("uniform", bits=bits, clip=c)`` over :math:`c \in [0.05, 8]`
    (grid search refined by golden-section search). At 2 bits the grid is
    :math:`\{-c, 0, c\}` with rounding threshold :math:`c/2`, so the optimum is twice
    :func:`optimal_threshold`.

    Parameters
    ----------
    bits : int in [2, 12]
    distribution : {"gaussian", "laplace", "uniform"}

    Examples
    --------
    >>> round(float(optimal_clip(2)), 3), round(float(optimal_clip(4)), 2)
    (1.224, 2.47)
    """
    bits = check_bits(bits, low=2, high=_MAX_THEORY_BITS)
    check_choice(distribution, "distribution", DISTRIBUTIONS)
    return _optimal_clip(bits, distribution)


# ---- dot-product proportionality -------------------------------------------------------------

def dot_products(w, a, *, quantizer="binary", bits=None, threshold=None, clip=None):
    r"""The dot products :math:`\langle w_j, a_n\rangle` and :math:`\langle q(w_j), a_n\rangle`.

    Parameters
    ----------
    w : array_like of float, shape (m, d) or (d,)
        Weight vectors (rows of an ``(out, in)`` matrix).
    a : array_like of float, shape (n, d)
        Activations, one per row.
    quantizer, bits, threshold, clip
        As in :func:`quantize_rows`.

    Returns
    -------
    exact, quantized : numpy.ndarray of float64, shape (n, m) (or (n,) for 1-d ``w``)

    Examples
    --------
    >>> exact, quant = dot_products(np.array([0.5, -2.0]), np.array([[1.0, 1.0], [2.0, 0.0]]))
    >>> exact, quant
    (array([-1.5,  1. ]), array([0., 2.]))
    """
    w, rows = _as_rows(w)
    if w.ndim > 2:
        raise ValueError(f"w must have shape (m, d) or (d,), got {w.shape}")
    a = as_float_array(a, "a", allow_empty=False)
    if a.ndim != 2 or a.shape[1] != rows.shape[1]:
        raise ValueError(f"a must have shape (n, {rows.shape[1]}) to match w, got {a.shape}")
    q = quantize_rows(rows, quantizer=quantizer, bits=bits, threshold=threshold, clip=clip)
    a64 = a.astype(np.float64)
    exact, quant = a64 @ rows.T, a64 @ q.T  # [n][j]: activation n against row j
    return (exact[:, 0], quant[:, 0]) if w.ndim == 1 else (exact, quant)


def dot_product_correlation(w, a=None, *, quantizer="binary", bits=None, threshold=None, clip=None,
                            n_samples=10_000, rng=None):
    r"""Correlation, over activations, between :math:`\langle w, a\rangle` and :math:`\langle q(w), a\rangle`.

    Anderson & Berg's dot-product proportionality (2018): the Pearson correlation,
    across the activation vectors :math:`a_n`, of the two dot products, one value per row of
    ``w``. For activations with covariance :math:`\Sigma` it tends to

    .. math::

        \rho = \frac{w^\top \Sigma\, q(w)}{\sqrt{w^\top\Sigma w\; q(w)^\top \Sigma\, q(w)}},

    which for isotropic activations (:math:`\Sigma = \sigma^2 I`, e.g. Gaussian) is
    :math:`\cos\theta` of :func:`quantization_angle`: the two properties are one.

    Parameters
    ----------
    w : array_like of float, shape (m, d) or (d,)
    a : array_like of float, shape (n, d), n >= 2, optional
        The activations; by default ``n_samples`` standard Gaussian vectors drawn from ``rng``.
    quantizer, bits, threshold, clip
        As in :func:`quantize_rows`.
    n_samples : int >= 2
    rng : None, int or numpy.random.Generator

    Returns
    -------
    numpy.ndarray of float64, shape (m,) (0-d for 1-d ``w``)

    Raises
    ------
    ValueError
        For fewer than 2 activations, mismatched shapes, or a dot product that does not vary.

    Examples
    --------
    >>> w = np.random.default_rng(0).normal(size=(2, 4096))
    >>> dot_product_correlation(w, rng=1).round(2)
    array([0.8, 0.8])
    """
    w = as_float_array(w, "w", allow_0d=False)
    if a is None:
        n = check_int(n_samples, "n_samples", low=2)
        a = check_rng(rng).standard_normal((n, w.shape[-1]))
    elif np.ndim(a) == 2 and np.shape(a)[0] < 2:
        raise ValueError(f"a must hold at least 2 activation vectors, got shape {np.shape(a)}")
    exact, quant = dot_products(w, a, quantizer=quantizer, bits=bits, threshold=threshold, clip=clip)
    exact, quant = exact.reshape(exact.shape[0], -1), quant.reshape(quant.shape[0], -1)
    xc, yc = exact - exact.mean(axis=0), quant - quant.mean(axis=0)
    sx, sy = np.sqrt((xc**2).sum(axis=0)), np.sqrt((yc**2).sum(axis=0))
    if (sx == 0).any() or (sy == 0).any():
        raise ValueError("a dot product does not vary over the activations: the correlation is undefined")
    rho = np.clip((xc * yc).sum(axis=0) / (sx * sy), -1.0, 1.0)
    return rho.reshape(w.shape[:-1])


# ---- training quantized weights: stochastic rounding against BinaryConnect (Li et al. 2017) --

#: The two training rules of Li et al. (2017): ``"sr"`` stores quantized weights and rounds
#: every update stochastically; ``"bc"`` (BinaryConnect) keeps a float buffer and rounds
#: only to evaluate the gradient.
SGD_RULES = ("sr", "bc")


def _check_delta(delta):
    return float(check_positive(delta, "delta"))


def sr_moments(w, *, delta):
    r"""Mean and variance of stochastic rounding to the grid :math:`\Delta\mathbb Z`.

    With :math:`w = \Delta(k + f)`, :math:`k = \lfloor w/\Delta\rfloor`, :math:`f \in [0, 1)`,
    stochastic rounding :math:`Q_s` returns :math:`\Delta(k+1)` with probability :math:`f`
    and :math:`\Delta k` otherwise (Li et al. 2017, Sec. 3), so

    .. math::

        \mathbb E[Q_s(w)] = w, \qquad
        \operatorname{Var}[Q_s(w)] = \Delta^2 f(1 - f) \le \frac{\Delta^2}{4}.

    The first identity is why SR training is SGD on average: the expected SR update
    :math:`\mathbb E[Q_s(w - \eta g)] = w - \eta g` is the float update. The second is the
    price: the rounding noise has variance up to :math:`\Delta^2/4` per coordinate, *whatever
    the learning rate*, while the signal :math:`\eta g` shrinks with it.

    Parameters
    ----------
    w : array_like of float, any shape
    delta : float > 0
        The grid step :math:`\Delta`.

    Returns
    -------
    mean, var : numpy.ndarray of float64, the shape of ``w``

    References
    ----------
    Li et al. (2017), Sec. 3 (the SR quantizer); Gupta et al. (2015), Eq. (2).

    Examples
    --------
    >>> mean, var = sr_moments([0.25, 0.5, 1.0], delta=1.0)
    >>> mean, var
    (array([0.25, 0.5 , 1.  ]), array([0.1875, 0.25  , 0.    ]))
    """
    w = as_float_array(w, "w").astype(np.float64)
    delta = _check_delta(delta)
    f = w / delta - np.floor(w / delta)
    return w.copy(), delta**2 * f * (1.0 - f)


class QuantizedSGDResult(NamedTuple):
    """What :func:`quantized_sgd` returns.

    Attributes
    ----------
    w_q : ndarray of float64, shape (steps + 1, d)
        The quantized weights of every step, on the grid :math:`\\Delta\\mathbb Z`
        (``w_q[t]`` is the point where the gradient of step ``t`` was taken; ``w_q[-1]`` the
        final one).
    w_float : ndarray of float64, shape (steps + 1, d)
        BC: the float buffer :math:`w^r_t`; SR: the same as ``w_q`` (no float copy exists).
    """

    w_q: np.ndarray
    w_float: np.ndarray


def quantized_sgd(grad, w0, *, lr, delta, steps, rule="bc", rng=None):
    r"""SGD with quantized weights: stochastic rounding (SR) or BinaryConnect (BC).

    The two rules compared by Li et al. (2017, Sec. 3), on the grid :math:`\Delta\mathbb Z`
    (the paper's fixed-point weights of resolution :math:`\Delta`), with a stochastic gradient
    :math:`\tilde\nabla f` and learning rate :math:`\eta_t`:

    .. math::

        \text{SR:}\quad w^b_{t+1} = Q_s\big(w^b_t - \eta_t \tilde\nabla f(w^b_t)\big), \qquad
        \text{BC:}\quad w^r_{t+1} = w^r_t - \eta_t \tilde\nabla f\big(Q_d(w^r_t)\big),

    where :math:`Q_s` is stochastic rounding (:func:`qref.rounding.round_stochastic`) and
    :math:`Q_d` rounding to nearest. SR stores only the quantized weights; an update smaller
    than :math:`\Delta` survives only as a probability of moving one grid step. BC keeps the
    float buffer :math:`w^r`, where small updates accumulate, and quantizes it to evaluate the
    gradient (the deployed weights are :math:`Q_d(w^r)`). The paper's analysis (Sec. 4) bounds
    both for strongly convex problems by an :math:`O(\log T/T)` term plus an error floor
    proportional to :math:`\Delta`; as :math:`\eta \to 0`, BC's float iterate settles near the
    minimiser while SR's distribution over the grid stops concentrating (Sec. 5,
    :func:`sr_transition_matrix`).

    Parameters
    ----------
    grad : callable ``(w, rng) -> array``
        A stochastic gradient at the float64 point ``w`` of shape (d,), drawing its randomness
        (a minibatch) from the numpy Generator ``rng``; e.g. :meth:`LeastSquares.grad`.
    w0 : array_like of float, shape (d,)
        The start (SR rounds it stochastically, BC uses it as the float buffer).
    lr : float > 0, or array_like of float > 0, shape (steps,)
        :math:`\eta_t`, constant or one per step.
    delta : float > 0
        The grid step :math:`\Delta`.
    steps : int >= 1
    rule : {"bc", "sr"}
    rng : None, int or numpy.random.Generator
        Draws the minibatches and the rounding; the same seed gives the same run.

    Returns
    -------
    QuantizedSGDResult
        ``w_q`` and ``w_float``, float64 arrays of shape (steps + 1, d).

    Raises
    ------
    ValueError
        For a bad ``rule``, ``delta``, ``steps`` or ``lr``, or a gradient of the wrong shape
        or not finite.

    References
    ----------
    Li, De, Xu, Studer, Samet, Goldstein (2017), Sec. 3 (the two algorithms) and Sec. 4
    (their convex analysis). Courbariaux, Bengio, David (2015) (BinaryConnect).

    Examples
    --------
    >>> grad = lambda w, rng: w - 0.3                      # f(w) = (w - 0.3)^2 / 2
    >>> bc = quantized_sgd(grad, [0.0], lr=0.1, delta=0.25, steps=200, rule="bc", rng=0)
    >>> sorted(set(bc.w_q[100:, 0].tolist()))               # alternates between the neighbours of 0.3
    [0.25, 0.5]
    >>> round(float(bc.w_float[-1, 0]), 2)                  # the float buffer sits at their midpoint
    0.38
    """
    check_choice(rule, "rule", SGD_RULES)
    if not callable(grad):
        raise TypeError(f"grad must be callable (w, rng) -> gradient, got {type(grad).__name__}")
    w = as_float_array(w0, "w0", allow_empty=False).astype(np.float64)
    if w.ndim != 1:
        raise ValueError(f"w0 must be a vector of shape (d,), got shape {w.shape}")
    delta = _check_delta(delta)
    steps = check_positive(steps, "steps", integer=True)
    if np.ndim(lr) == 0:  # one learning rate (an int is fine), or one per step (floats)
        lrs = np.full(steps, check_positive(lr, "lr"), dtype=np.float64)
    else:
        lrs = as_float_array(lr, "lr").astype(np.float64)
    if lrs.shape != (steps,) or not np.all(lrs > 0):
        raise ValueError(f"lr must be a positive float or {steps} positive floats, got shape {np.shape(lr)}")
    gen = check_rng(rng)
    w_q = np.empty((steps + 1, w.size))
    w_float = np.empty((steps + 1, w.size))
    if rule == "sr":
        w = delta * rounding.round_stochastic(w / delta, rng=gen)
    for t in range(steps):
        q = w if rule == "sr" else delta * np.round(w / delta)      # where the gradient is taken
        w_q[t], w_float[t] = q, w
        g = np.asarray(grad(q.copy(), gen), dtype=np.float64)
        if g.shape != w.shape or not np.all(np.isfinite(g)):
            raise ValueError(f"grad must return finite values of shape {w.shape}, got shape {g.shape}")
        if rule == "sr":
            w = delta * rounding.round_stochastic((w - lrs[t] * g) / delta, rng=gen)
        else:
            w = w - lrs[t] * g
    w_q[steps] = w if rule == "sr" else delta * np.round(w / delta)
    w_float[steps] = w
    return QuantizedSGDResult(w_q, w_float)


class LeastSquares:
    r"""A least-squares problem :math:`f(w) = \frac{1}{2n}\lVert Xw - y\rVert^2` with minibatch gradients.

    A strongly convex test problem (when :math:`X` has full column rank) for
    :func:`quantized_sgd`, like the convex toy problems of Li et al. (2017, Sec. 6).

    Parameters
    ----------
    X : array_like of float, shape (n, d), n >= d
    y : array_like of float, shape (n,)
    batch_size : int in [1, n]
        Rows per stochastic gradient, drawn uniformly with replacement.

    Attributes
    ----------
    w_star : ndarray of float64, shape (d,)
        The minimiser (``numpy.linalg.lstsq``).
    loss_star : float
        :math:`f(w^\star)`.
    hessian : ndarray of float64, shape (d, d)
        :math:`X^\top X / n`.

    Examples
    --------
    >>> p = LeastSquares([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], [1.0, 2.0, 2.0])
    >>> p.w_star.round(3), round(p.loss_star, 4)
    (array([1., 1.]), 0.0)
    >>> p.grad(p.w_star, 0).round(12) + 0.0, round(p.excess_loss(p.w_star + [0.1, 0.0]), 6)   # (0.1^2 + 0.1^2) / 6
    (array([0., 0.]), 0.003333)
    """

    def __init__(self, X, y, *, batch_size=1):
        X = as_float_array(X, "X", allow_empty=False).astype(np.float64)
        y = as_float_array(y, "y", allow_empty=False).astype(np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ValueError(f"X must have shape (n, d) and y shape (n,), got {X.shape} and {y.shape}")
        self.X, self.y = X, y
        self.batch_size = check_positive(batch_size, "batch_size", integer=True)
        if self.batch_size > X.shape[0]:
            raise ValueError(f"batch_size must be <= n = {X.shape[0]}, got {batch_size}")
        self.w_star = np.linalg.lstsq(X, y, rcond=None)[0]
        self.hessian = X.T @ X / X.shape[0]
        self.loss_star = self.loss(self.w_star)

    def loss(self, w):
        """:math:`f(w)`; ``w`` of shape (d,) or (m, d) (then one value per row)."""
        w = np.asarray(w, dtype=np.float64)
        out = 0.5 * np.mean((w @ self.X.T - self.y) ** 2, axis=-1)
        return float(out) if w.ndim == 1 else out

    def excess_loss(self, w):
        """:math:`f(w) - f(w^\\star)`, per row of ``w``."""
        return self.loss(w) - self.loss_star

    def grad(self, w, rng=None):
        """The gradient on ``batch_size`` rows drawn from ``rng`` (the full gradient if it is n)."""
        if self.batch_size == self.X.shape[0]:
            Xb, yb = self.X, self.y
        else:
            idx = check_rng(rng).integers(0, self.X.shape[0], self.batch_size)
            Xb, yb = self.X[idx], self.y[idx]
        return Xb.T @ (Xb @ np.asarray(w, dtype=np.float64) - yb) / len(yb)


def _call(mu, x, tau):
    """``E[(t - x)_+]`` for ``t ~ N(mu, tau^2)`` (``(mu - x)_+`` when tau = 0); arrays."""
    if tau == 0:
        return np.maximum(mu - x, 0.0)
    z = (mu - x) / tau
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)).astype(np.float64))
    return (mu - x) * cdf + tau * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def sr_transition_matrix(levels, *, lr, curvature, minimum, noise_std=0.0):
    r"""Transition matrix of SR training on a 1-D quadratic: a Markov chain on the grid.

    Li et al. (2017, Sec. 5) study SR as a Markov chain whose states are the grid points.
    On :math:`f(w) = \frac h2 (w - w^\star)^2` with the stochastic gradient
    :math:`h(w - w^\star) + \sigma\xi`, :math:`\xi \sim \mathcal N(0, 1)`, one SR step from
    the grid point :math:`q_i` computes :math:`u = q_i - \eta\,(h(q_i - w^\star) + \sigma\xi)
    \sim \mathcal N(m_i, (\eta\sigma)^2)` and rounds it stochastically. Since stochastic
    rounding sends :math:`u` to :math:`q_j` with probability
    :math:`\max(0, 1 - |u - q_j|/\Delta)` (a "tent"),

    .. math::

        P_{ij} = \mathbb E\Big[\max\Big(0, 1 - \frac{|u - q_j|}{\Delta}\Big)\Big]
        = C(-1) - 2C(0) + C(1), \qquad
        C(x) = \mathbb E[(t - x)_+] = (\mu - x)\Phi\Big(\frac{\mu - x}{\tau}\Big)
        + \tau\,\varphi\Big(\frac{\mu - x}{\tau}\Big),

    with :math:`t = (u - q_j)/\Delta \sim \mathcal N(\mu, \tau^2)`. The grid is finite: mass
    that would leave it stays at the end point (one-sided tents at the ends), so every row
    sums to 1. With :math:`\sigma = 0` the chain only moves toward :math:`w^\star`, one step at
    a time, with probability :math:`\eta h |q_i - w^\star|/\Delta` (for steps below
    :math:`\Delta`).

    Parameters
    ----------
    levels : array_like of float, shape (k,), k >= 2
        Consecutive grid points :math:`q_0 < \dots < q_{k-1}`, evenly spaced by :math:`\Delta`.
    lr : float > 0
        :math:`\eta`.
    curvature : float > 0
        :math:`h`.
    minimum : float
        :math:`w^\star`.
    noise_std : float >= 0
        :math:`\sigma`, the standard deviation of the gradient noise.

    Returns
    -------
    numpy.ndarray of float64, shape (k, k)
        Row-stochastic: ``P[i, j]`` is the probability of moving from ``levels[i]`` to
        ``levels[j]``.

    Raises
    ------
    ValueError
        If the levels are fewer than 2 or not evenly spaced and increasing, or for bad
        ``lr``, ``curvature``, ``noise_std``.

    References
    ----------
    Li et al. (2017), Sec. 5 (SR as a Markov chain).

    Examples
    --------
    >>> P = sr_transition_matrix([0.0, 1.0, 2.0], lr=0.1, curvature=1.0, minimum=0.5)
    >>> P.round(3)                         # from 0 and from 2 the chain moves toward 0.5 or stays
    array([[0.95, 0.05, 0.  ],
           [0.05, 0.95, 0.  ],
           [0.  , 0.15, 0.85]])
    """
    q = as_float_array(levels, "levels", allow_empty=False).astype(np.float64)
    if q.ndim != 1 or q.size < 2:
        raise ValueError(f"levels must be a vector of >= 2 grid points, got shape {q.shape}")
    delta = q[1] - q[0]
    if not delta > 0 or not np.allclose(np.diff(q), delta, rtol=1e-9, atol=0.0):
        raise ValueError("levels must be increasing and evenly spaced")
    lr = float(check_positive(lr, "lr"))
    h = float(check_positive(curvature, "curvature"))
    w_star = check_real(minimum, "minimum")
    sigma = check_real(noise_std, "noise_std")
    if sigma < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    m = q - lr * h * (q - w_star)                           # [i]: the mean of u from level i
    mu = (m[:, None] - q[None, :]) / delta                  # [i][j]: (E u - q_j) / delta
    tau = lr * sigma / delta
    P = _call(mu, -1.0, tau) - 2.0 * _call(mu, 0.0, tau) + _call(mu, 1.0, tau)
    P[:, 0] = 1.0 - _call(mu[:, 0], 0.0, tau) + _call(mu[:, 0], 1.0, tau)      # everything below q_0
    P[:, -1] = _call(mu[:, -1], -1.0, tau) - _call(mu[:, -1], 0.0, tau)        # everything above
    return np.clip(P, 0.0, 1.0)


def stationary_distribution(P):
    r"""The stationary distribution :math:`\pi = \pi P`, :math:`\sum_i \pi_i = 1`, of a Markov chain.

    Solved as a linear system (the balance equations with one replaced by the normalisation).

    Parameters
    ----------
    P : array_like of float, shape (k, k)
        Row-stochastic, with a unique stationary distribution (irreducible on the states that
        matter; transient states get probability 0).

    Returns
    -------
    numpy.ndarray of float64, shape (k,)

    Raises
    ------
    ValueError
        If ``P`` is not square and row-stochastic, or the distribution is not unique.

    Examples
    --------
    >>> stationary_distribution([[0.9, 0.1], [0.3, 0.7]])
    array([0.75, 0.25])
    """
    P = as_float_array(P, "P", allow_empty=False).astype(np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or np.any(P < 0) or not np.allclose(P.sum(axis=1), 1.0):
        raise ValueError(f"P must be a square row-stochastic matrix, got shape {P.shape}")
    k = P.shape[0]
    A = P.T - np.eye(k)
    A[-1] = 1.0
    b = np.zeros(k)
    b[-1] = 1.0
    try:
        pi = np.linalg.solve(A, b)
    except np.linalg.LinAlgError as err:
        raise ValueError("the stationary distribution of P is not unique") from err
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def sr_two_point_stationary(minimum, *, delta, curvature=1.0):
    r"""SR's limit on a noiseless 1-D quadratic: two grid points, with weights independent of :math:`\eta`.

    With exact gradients (:math:`\sigma = 0` in :func:`sr_transition_matrix`) and steps smaller
    than :math:`\Delta`, the chain ends on the two grid points :math:`q_- \le w^\star < q_+`
    around the minimiser and jumps between them with probabilities :math:`\eta h(w^\star -
    q_-)/\Delta` (up) and :math:`\eta h(q_+ - w^\star)/\Delta` (down). Detailed balance gives

    .. math::

        \pi_- = \frac{q_+ - w^\star}{\Delta}, \qquad \pi_+ = \frac{w^\star - q_-}{\Delta},
        \qquad \mathbb E_\pi[f] - f(w^\star) = \frac h2\,(w^\star - q_-)(q_+ - w^\star)
        \le \frac{h\Delta^2}{8}:

    the learning rate cancels. Decreasing it slows the chain down and changes nothing else,
    the absence of a "greedy exploitation" phase that Li et al. (2017, Sec. 5) prove in
    general. (Here :math:`\mathbb E_\pi[w] = w^\star`: on average SR is exactly right, but the
    weights themselves never settle.)

    Parameters
    ----------
    minimum : float
        :math:`w^\star`.
    delta : float > 0
    curvature : float > 0
        :math:`h`.

    Returns
    -------
    levels : ndarray of float64, shape (2,)
        :math:`(q_-, q_+)`.
    probs : ndarray of float64, shape (2,)
        :math:`(\pi_-, \pi_+)`.
    excess_loss : float
        :math:`\mathbb E_\pi[f] - f(w^\star)`.

    Examples
    --------
    >>> levels, probs, excess = sr_two_point_stationary(0.3, delta=0.25)
    >>> levels, probs.round(2), round(excess, 5)
    (array([0.25, 0.5 ]), array([0.8, 0.2]), 0.005)
    """
    w_star = check_real(minimum, "minimum")
    delta = _check_delta(delta)
    h = float(check_positive(curvature, "curvature"))
    lo = delta * math.floor(w_star / delta)
    hi = lo + delta
    p_hi = (w_star - lo) / delta
    return np.array([lo, hi]), np.array([1.0 - p_hi, p_hi]), 0.5 * h * (w_star - lo) * (hi - w_star)
