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
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import binary, uniform
from ._optimize import golden_section_min
from ._validation import as_float_array, check_bits, check_choice, check_int, check_positive, check_real, check_rng

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
