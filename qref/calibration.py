r"""Calibration: choosing the clipping range a uniform quantizer covers.

Every function here looks at data (or at a model of its distribution) and returns a range
``(lo, hi)`` that :func:`qref.uniform.params_from_range` turns into a scale and zero point::

    lo, hi = mse_range(w, bits=4, axis=0)
    params = params_from_range(lo, hi, bits=4, symmetric=True, axis=0)

``lo`` and ``hi`` are float64 arrays of shape ``()`` (per tensor, ``axis=None``) or ``(C,)``
(one range per channel along ``axis``, all other axes reduced). A per-channel result is
exactly the per-tensor method applied to each channel on its own.

The trade-off all of them resolve: a wide range clips nothing but spreads the
:math:`2^b` levels thinly (large rounding error); a narrow one rounds finely but clips the
tails (large clipping error). The methods, from cheapest to most modelled:

* :func:`minmax_range`: the full range, no clipping;
* :func:`percentile_range`: drop a fraction of the extreme values;
* :func:`mse_range`: search the clip value minimising the actual fake-quantization MSE;
* :func:`kl_range`: TensorRT's entropy calibration (Migacz 2017), the threshold whose
  quantized histogram is closest to the original one in KL divergence;
* :func:`aciq_range`: ACIQ (Banner et al. 2019), the clip value minimising a closed-form
  MSE for a fitted Laplace or Gaussian model (:func:`aciq_mse`, :func:`aciq_alpha`);
* :func:`sawb_range`: SAWB (Choi et al. 2018), a linear formula in
  :math:`\sqrt{E[w^2]}` and :math:`E|w|` whose coefficients :func:`sawb_fit` derives.

**Degenerate input.** Empty tensors (and NaN or infinity) raise ``ValueError``. A constant
tensor (or channel) ``c`` gives ``(c, c)`` for :func:`minmax_range` and
:func:`percentile_range` and, for the symmetric methods (MSE, KL, ACIQ, SAWB), the range
``(-|c|, |c|)`` or ``(0, 0)`` when there is nothing to spread; ``params_from_range`` widens every
range to contain 0 and handles the all-zero range, so the result is always usable.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._optimize import golden_section_min
from ._validation import as_float_array, check_axis, check_bits, check_bool, check_choice, check_int, check_real
from .metrics import expected_mse
from .uniform import fake_quantize, params_from_range

__all__ = [
    "minmax_range", "percentile_range", "mse_range", "kl_threshold", "kl_range",
    "aciq_mse", "aciq_alpha", "aciq_range", "sawb_fit", "sawb_range", "ACIQ_DISTRIBUTIONS",
    "bias_correction",
]

ACIQ_DISTRIBUTIONS = ("laplace", "gaussian")
_SAWB_DISTRIBUTIONS = ("gaussian", "laplace", "uniform")


# ---- helpers ---------------------------------------------------------------------------

def _data(x):
    return as_float_array(x, "x", allow_empty=False)


def _per_channel(fn, x, axis):
    """``fn(flat_float64_channel) -> (lo, hi)`` per tensor or per channel along ``axis``."""
    if axis is None:
        lo, hi = fn(x.astype(np.float64).reshape(-1))
        return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    axis = check_axis(axis, x.ndim)
    rows = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).astype(np.float64)
    out = np.array([fn(r) for r in rows], dtype=np.float64).reshape(-1, 2)
    return out[:, 0].copy(), out[:, 1].copy()


# ---- min-max and percentile --------------------------------------------------------------

def minmax_range(x, *, axis=None):
    """The full range ``(min x, max x)``, per tensor or per channel: nothing is clipped.

    Parameters
    ----------
    x : array_like of float, not empty
    axis : int or None
        Channel axis (one range per ``x.shape[axis]``), or None for one range.

    Returns
    -------
    lo, hi : ndarray of float64, shape ``()`` or ``(x.shape[axis],)``

    Raises
    ------
    TypeError
        For non-float data.
    ValueError
        For empty data, NaN or infinity, or a bad ``axis``.

    Examples
    --------
    >>> lo, hi = minmax_range(np.array([[-1.0, 2.0], [0.5, 3.0]]), axis=0)   # one range per row
    >>> lo, hi
    (array([-1. ,  0.5]), array([2., 3.]))
    """
    x = _data(x)
    return _per_channel(lambda r: (r.min(), r.max()), x, axis)


def percentile_range(x, *, percentile=99.99, axis=None, symmetric=False):
    r"""Clip the extreme ``100 - percentile`` percent of values.

    Asymmetric: :math:`(P_{100-p}(x), P_p(x))`; symmetric: :math:`(-P_p(|x|), P_p(|x|))`,
    with :math:`P_p` the ``p``-th percentile (linear interpolation, :func:`numpy.percentile`).

    Parameters
    ----------
    x : array_like of float, not empty
    percentile : float in [50, 100]
        100 gives :func:`minmax_range` (or the symmetric ``max|x|`` range).
    axis : int or None
    symmetric : bool

    Returns
    -------
    lo, hi : ndarray of float64, shape ``()`` or ``(x.shape[axis],)``

    Raises
    ------
    ValueError
        For ``percentile`` outside [50, 100] and the cases of :func:`minmax_range`.

    Examples
    --------
    >>> x = np.arange(101, dtype=np.float64)
    >>> [float(v) for v in percentile_range(x, percentile=90.0)]
    [10.0, 90.0]
    >>> [float(v) for v in percentile_range(x - 50.0, percentile=90.0, symmetric=True)]
    [-45.0, 45.0]
    """
    x = _data(x)
    p = check_real(percentile, "percentile")
    if not 50.0 <= p <= 100.0:
        raise ValueError(f"percentile must be in [50, 100], got {p}")
    if check_bool(symmetric, "symmetric"):
        def fn(r):
            m = np.percentile(np.abs(r), p)
            return -m, m
    else:
        def fn(r):
            lo, hi = np.percentile(r, [100.0 - p, p])
            return lo, hi
    return _per_channel(fn, x, axis)


# ---- MSE search --------------------------------------------------------------------------

_DEFAULT_GRID = np.linspace(0.01, 1.0, 100)


def mse_range(x, *, bits, symmetric=True, axis=None, grid=None):
    r"""The clipping range with the smallest fake-quantization MSE, by search over a grid.

    For each fraction :math:`f` in ``grid`` the candidate range is :math:`f\,[-\max|x|, \max|x|]`
    (symmetric) or :math:`f\,[\min(x, 0), \max(x, 0)]` (asymmetric); the data is fake-quantized
    with :func:`qref.uniform.params_from_range` (signed codes, ``bits`` bits) and the range
    minimising :math:`\frac1n\sum_i (x_i - \hat x_i)^2` is returned (the first one on a tie).
    The fraction 1 (min-max) is always a candidate, so the result is never worse than
    :func:`minmax_range` on the same data.

    Parameters
    ----------
    x : array_like of float, not empty
    bits : int in [1, 16]
    symmetric : bool
        Candidates and fake quantization symmetric (zero point 0) or asymmetric.
    axis : int or None
    grid : array_like of float in (0, 1], optional
        Fractions to try; default 100 values ``0.01, 0.02, ..., 1.0``.

    Returns
    -------
    lo, hi : ndarray of float64, shape ``()`` or ``(x.shape[axis],)``

    Raises
    ------
    ValueError
        For an empty grid or fractions outside (0, 1], bad ``bits``, and the cases of
        :func:`minmax_range`.

    Examples
    --------
    >>> x = np.random.default_rng(0).laplace(size=10_000)
    >>> lo, hi = mse_range(x, bits=4)
    >>> bool(0 < hi < np.abs(x).max()), float(lo) == -float(hi)   # clips the Laplace tails
    (True, True)
    """
    x = _data(x)
    bits = check_bits(bits)
    symmetric = check_bool(symmetric, "symmetric")
    g = _DEFAULT_GRID if grid is None else as_float_array(grid, "grid", allow_empty=False).astype(np.float64).ravel()
    if (g <= 0).any() or (g > 1).any():
        raise ValueError(f"grid must hold fractions in (0, 1], got values in [{g.min()}, {g.max()}]")
    g = np.unique(np.append(g, 1.0))[::-1]  # descending: a tie keeps the widest range

    def fn(r):
        if symmetric:
            m = np.abs(r).max()
            base_lo, base_hi = -m, m
        else:
            base_lo, base_hi = min(r.min(), 0.0), max(r.max(), 0.0)
        if base_lo == base_hi:  # all zeros
            return 0.0, 0.0
        best, best_err = (base_lo, base_hi), np.inf
        for f in g:
            lo, hi = f * base_lo, f * base_hi
            p = params_from_range(lo, hi, bits=bits, symmetric=symmetric)
            err = float(np.mean((r - fake_quantize(r, p)) ** 2))
            if err < best_err:
                best, best_err = (lo, hi), err
        return best

    return _per_channel(fn, x, axis)


# ---- KL (TensorRT entropy calibration) ---------------------------------------------------

def kl_threshold(hist, *, bits=8, bin_width=1.0, return_divergence=False):
    r"""TensorRT entropy calibration on a histogram of :math:`|x|` (Migacz 2017).

    For every candidate number of kept bins :math:`i = 2^{b-1}, \dots, n`:

    1. reference :math:`P = h_{0..i-1}` with the outlier mass :math:`\sum_{j \ge i} h_j`
       added to the last bin (clipping moves the outliers there);
    2. candidate :math:`Q`: the *unclipped* bins :math:`h_{0..i-1}` merged into :math:`2^{b-1}`
       levels of :math:`\lfloor i / 2^{b-1} \rfloor` bins each (the last level takes the
       remainder), and expanded back by spreading each level's mass evenly over its
       non-empty bins (empty bins stay empty);
    3. :math:`D_i = \mathrm{KL}(P \,\|\, Q)` of the normalised histograms
       (as :func:`qref.metrics.kl_divergence`; infinite when the last kept bin is empty
       but outliers are folded into it).

    The threshold is the upper edge of the last kept bin, :math:`i^\star \cdot` ``bin_width``,
    for the minimising :math:`i^\star` (the smallest on a tie). This is the pseudocode of
    Migacz (2017), "Calibration" slides, with the threshold taken at the bin edge.

    All candidates are evaluated at once with cumulative sums (no loop over :math:`i`):
    :math:`\sum_j p_j \log q_j = \sum_k S_k \log(S_k / n_k)` over levels with mass
    :math:`S_k` spread on :math:`n_k` non-empty bins, plus the outlier term.

    Parameters
    ----------
    hist : array_like of float or int, 1-D, length >= 2**(bits-1)
        Counts of :math:`|x|` in equal bins starting at 0 (empty bins allowed).
    bits : int in [2, 16]
        :math:`2^{b-1}` levels for the magnitudes (a signed symmetric quantizer).
    bin_width : float > 0
    return_divergence : bool
        Also return the array of :math:`D_i`, ``i = 2**(bits-1), ..., len(hist)``.

    Returns
    -------
    float, or (float, ndarray) with ``return_divergence``

    Raises
    ------
    ValueError
        For a histogram that is not 1-D, shorter than ``2**(bits-1)``, negative, or all zero.

    References
    ----------
    S. Migacz, "8-bit Inference with TensorRT", GPU Technology Conference, 2017.

    Examples
    --------
    >>> h = np.r_[np.full(200, 100.0), np.zeros(50), [1.0]]   # one far outlier
    >>> kl_threshold(h, bits=8) <= 200   # clipped just after the bulk
    True
    """
    h = np.asarray(hist)
    if h.dtype.kind not in "iuf":
        raise TypeError(f"hist must hold real counts, got dtype {h.dtype}")
    h = as_float_array(h.astype(np.float64), "hist", allow_empty=False)
    if h.ndim != 1:
        raise ValueError(f"hist must be 1-D, got shape {h.shape}")
    bits = check_bits(bits, low=2)
    bin_width = check_real(bin_width, "bin_width")
    if bin_width <= 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width}")
    return_divergence = check_bool(return_divergence, "return_divergence")
    m = 2 ** (bits - 1)
    n = h.size
    if n < m:
        raise ValueError(f"hist must have at least 2**(bits-1) = {m} bins for bits={bits}, got {n}")
    if (h < 0).any():
        raise ValueError("hist must be non-negative (counts)")
    total = h.sum()
    if total == 0:
        raise ValueError("hist must have a positive total, got all zeros")

    with np.errstate(divide="ignore", invalid="ignore"):
        hlogh = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    C = np.concatenate([[0.0], np.cumsum(h)])  # C[j] = sum h[:j]
    N = np.concatenate([[0], np.cumsum(h > 0)])  # non-empty bins in h[:j]
    HL = np.concatenate([[0.0], np.cumsum(hlogh)])

    i = np.arange(m, n + 1)  # candidates: number of kept bins
    w = i // m  # bins per level (last level takes the rest)
    k = np.arange(m)
    start = w[:, None] * k[None, :]
    stop = np.where(k[None, :] == m - 1, i[:, None], start + w[:, None])
    S = C[stop] - C[start]  # level masses, shape (candidates, m)
    nk = N[stop] - N[start]
    with np.errstate(divide="ignore", invalid="ignore"):
        slog = np.where(S > 0, S * np.log(np.where(S > 0, S, 1.0) / np.maximum(nk, 1)), 0.0)
    sum_plogq = slog.sum(axis=1)  # over the kept bins, outliers not yet counted
    last = h[i - 1]
    outliers = total - C[i]
    p_last = last + outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        # outlier mass sits in the last bin, whose q value is its level's average
        q_last = S[:, -1] / np.maximum(nk[:, -1], 1)
        sum_plogq = sum_plogq + np.where(outliers > 0, outliers * np.log(np.where(q_last > 0, q_last, 1.0)), 0.0)
        sum_plogp = HL[i - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
    Qs = C[i]  # total of Q (the unclipped kept bins)
    with np.errstate(divide="ignore"):
        div = (sum_plogp - sum_plogq) / total - np.log(total) + np.log(Qs)
    div = np.maximum(div, 0.0)  # Gibbs: >= 0; rounding can give -1e-16
    div[(outliers > 0) & (last == 0)] = np.inf  # p > 0 where q = 0
    div[Qs == 0] = np.inf  # nothing kept: Q undefined
    best = int(i[np.argmin(div)])
    thr = best * bin_width
    return (thr, div) if return_divergence else thr


def kl_range(x, *, bits=8, n_bins=2048, axis=None):
    r"""Symmetric range :math:`(-T, T)` from TensorRT entropy calibration (Migacz 2017).

    Builds the histogram of :math:`|x|` in ``n_bins`` equal bins over :math:`[0, \max|x|]` and
    picks the threshold :math:`T` with :func:`kl_threshold`; :math:`T \le \max|x|` always.

    Parameters
    ----------
    x : array_like of float, not empty
    bits : int in [2, 16]
    n_bins : int >= 2**(bits-1)
    axis : int or None

    Returns
    -------
    lo, hi : ndarray of float64, ``lo = -hi``

    Raises
    ------
    ValueError
        For ``n_bins < 2**(bits-1)`` and the cases of :func:`minmax_range`.

    References
    ----------
    S. Migacz, "8-bit Inference with TensorRT", GPU Technology Conference, 2017.

    Examples
    --------
    >>> x = np.random.default_rng(0).laplace(size=100_000)
    >>> lo, hi = kl_range(x, bits=8)
    >>> bool(hi < np.abs(x).max())
    True
    """
    x = _data(x)
    bits = check_bits(bits, low=2)
    n_bins = check_int(n_bins, "n_bins", low=2 ** (bits - 1))

    def fn(r):
        a = np.abs(r)
        top = a.max()
        if top == 0:
            return 0.0, 0.0
        h, _ = np.histogram(a, bins=n_bins, range=(0.0, top))
        t = min(kl_threshold(h, bits=bits, bin_width=top / n_bins), top)
        return -t, t

    return _per_channel(fn, x, axis)


# ---- ACIQ --------------------------------------------------------------------------------

def _aciq_parts(t, bits, distribution):
    """Clipping and rounding terms for a unit-scale distribution clipped at ``t`` (arrays ok)."""
    t = np.asarray(t, dtype=np.float64)
    rounding = t**2 / (3.0 * 4.0**bits)
    if distribution == "laplace":
        clipping = 2.0 * np.exp(-t)
    else:
        erfc = np.vectorize(math.erfc, otypes=[np.float64])
        clipping = (t**2 + 1.0) * erfc(t / math.sqrt(2.0)) - math.sqrt(2.0 / math.pi) * t * np.exp(-0.5 * t**2)
    return clipping, rounding


def aciq_mse(alpha, *, bits, distribution="laplace", b=None, sigma=None, return_parts=False):
    r"""ACIQ's closed-form expected MSE of clipping at :math:`\pm\alpha` then rounding (Banner et al. 2019).

    The quantizer splits :math:`[-\alpha, \alpha]` into :math:`2^M` equal bins (step
    :math:`\Delta = 2\alpha / 2^M`); inside, the rounding error is modelled as uniform,
    :math:`\Delta^2/12 = \alpha^2 / (3 \cdot 4^M)`; outside, values are clipped to
    :math:`\pm\alpha`. For a zero-mean input:

    * Laplace with scale :math:`b` (Banner et al. 2019, Sec. 4, Eq. 5):

      .. math:: E[(X - Q(X))^2] \approx 2 b^2 e^{-\alpha/b} + \frac{\alpha^2}{3 \cdot 4^M}

    * Gaussian with standard deviation :math:`\sigma` (the exact two-sided clipping term,
      :math:`2\int_\alpha^\infty (x-\alpha)^2 \phi_\sigma(x)\,dx`):

      .. math:: (\alpha^2 + \sigma^2)\,\mathrm{erfc}\!\Big(\frac{\alpha}{\sqrt2\,\sigma}\Big)
                - \sqrt{\tfrac{2}{\pi}}\,\alpha\sigma\, e^{-\alpha^2/(2\sigma^2)}
                + \frac{\alpha^2}{3 \cdot 4^M}

    The clipping terms are exact (checked against numerical integration in the tests); the
    rounding term is the usual high-resolution approximation (it ignores that only the mass
    inside :math:`[-\alpha, \alpha]` is rounded).

    Parameters
    ----------
    alpha : float or array of float >= 0
    bits : int in [1, 16]
        :math:`M`.
    distribution : {"laplace", "gaussian"}
    b : float > 0, optional
        Laplace scale (default 1); only for ``"laplace"``.
    sigma : float > 0, optional
        Gaussian standard deviation (default 1); only for ``"gaussian"``.
    return_parts : bool
        Return ``(clipping, rounding)`` instead of their sum.

    Returns
    -------
    float or ndarray (shape of ``alpha``), or a pair of them

    Raises
    ------
    ValueError
        For negative ``alpha``, a scale that does not belong to ``distribution``, bad ``bits``.

    References
    ----------
    R. Banner, Y. Nahshan, D. Soudry, "Post training 4-bit quantization of convolutional
    networks for rapid-deployment", NeurIPS 2019.

    Examples
    --------
    >>> round(aciq_mse(2.83, bits=2), 4)   # 2 e^-2.83 + 2.83^2 / 48  (b = 1)
    0.2849
    """
    bits = check_bits(bits)
    check_choice(distribution, "distribution", ACIQ_DISTRIBUTIONS)
    scale = _aciq_scale(distribution, b, sigma)
    a = as_float_array(alpha, "alpha", allow_empty=True).astype(np.float64)
    if (a < 0).any():
        raise ValueError(f"alpha must be >= 0, got min {a.min()}")
    clipping, rounding = _aciq_parts(a / scale, bits, distribution)
    clipping, rounding = clipping * scale**2, rounding * scale**2
    conv = (lambda v: float(v)) if a.ndim == 0 else (lambda v: v)
    if check_bool(return_parts, "return_parts"):
        return conv(clipping), conv(rounding)
    return conv(clipping + rounding)


def _aciq_scale(distribution, b, sigma):
    if distribution == "laplace":
        if sigma is not None:
            raise ValueError("sigma is the Gaussian's parameter; pass b for distribution='laplace'")
        s = 1.0 if b is None else check_real(b, "b")
        name = "b"
    else:
        if b is not None:
            raise ValueError("b is the Laplace scale; pass sigma for distribution='gaussian'")
        s = 1.0 if sigma is None else check_real(sigma, "sigma")
        name = "sigma"
    if s <= 0:
        raise ValueError(f"{name} must be > 0, got {s}")
    return s


def _aciq_slope(t, bits, distribution):
    """d/dt of the unit-scale ACIQ MSE; increasing in t (the MSE is convex)."""
    rounding = 2.0 * t / (3.0 * 4.0**bits)
    if distribution == "laplace":
        return -2.0 * math.exp(-t) + rounding
    return 2.0 * t * math.erfc(t / math.sqrt(2.0)) - 2.0 * math.sqrt(2.0 / math.pi) * math.exp(-0.5 * t * t) + rounding


@functools.lru_cache(maxsize=None)
def _aciq_alpha_cached(bits, distribution):
    # bisection on the derivative: negative at 0, positive at 40 (the 16-bit Laplace optimum
    # is ~20.5); run until the bracket stops shrinking (full float64 precision)
    a, b = 0.0, 40.0
    while True:
        mid = 0.5 * (a + b)
        if not a < mid < b:
            return mid
        if _aciq_slope(mid, bits, distribution) < 0:
            a = mid
        else:
            b = mid


def aciq_alpha(bits, *, distribution="laplace"):
    r"""The ACIQ-optimal clipping value in units of the scale: :math:`\alpha^\star / b` or :math:`\alpha^\star/\sigma`.

    Minimises :func:`aciq_mse` (unit scale) over :math:`\alpha` by bisection on its derivative
    (the objective is convex, so the root of the derivative is the minimum). For
    Laplace the optimum solves :math:`t e^{t} = 3 \cdot 4^M` (:math:`t = \alpha/b`, setting
    the derivative of Eq. 5 of Banner et al. 2019 to zero).

    Parameters
    ----------
    bits : int in [1, 16]
    distribution : {"laplace", "gaussian"}

    Returns
    -------
    float

    Examples
    --------
    >>> [round(aciq_alpha(m), 2) for m in (2, 3, 4)]       # Banner et al. print 2.83, 3.89, 5.03
    [2.83, 3.9, 5.03]
    >>> [round(aciq_alpha(m, distribution="gaussian"), 2) for m in (2, 3, 4)]  # printed: 1.71, 2.15, 2.55
    [1.71, 2.15, 2.56]
    """
    bits = check_bits(bits)
    check_choice(distribution, "distribution", ACIQ_DISTRIBUTIONS)
    return _aciq_alpha_cached(bits, distribution)


def aciq_range(x, *, bits, distribution="laplace", axis=None):
    r"""ACIQ clipping range :math:`\mu \pm \alpha^\star` for a Laplace or Gaussian fit of ``x``.

    The scale is estimated from the data: :math:`\hat b = \mathrm{mean}|x - \mu|` (the
    maximum-likelihood Laplace scale about the mean) or :math:`\hat\sigma` = standard deviation
    (Gaussian); :math:`\alpha^\star` = :func:`aciq_alpha` times that scale, and
    :math:`\mu` is the mean. (The range is not cut to the data's min and max.)

    Parameters
    ----------
    x : array_like of float, not empty
    bits : int in [1, 16]
    distribution : {"laplace", "gaussian"}
    axis : int or None

    Returns
    -------
    lo, hi : ndarray of float64

    Examples
    --------
    >>> x = np.random.default_rng(0).laplace(scale=0.5, size=200_000)
    >>> lo, hi = aciq_range(x, bits=4)
    >>> round(float(hi) / 0.5, 1)   # about 5.03 b
    5.0
    """
    x = _data(x)
    bits = check_bits(bits)
    check_choice(distribution, "distribution", ACIQ_DISTRIBUTIONS)
    t = aciq_alpha(bits, distribution=distribution)

    def fn(r):
        mu = r.mean()
        s = np.abs(r - mu).mean() if distribution == "laplace" else r.std()
        return mu - t * s, mu + t * s

    return _per_channel(fn, x, axis)


# ---- SAWB --------------------------------------------------------------------------------

def _optimal_alpha_unit(bits, distribution):
    """MSE-optimal symmetric clip for a unit-variance ``distribution`` (qref quantizer, exact MSE)."""
    def f(a):
        p = params_from_range(-a, a, bits=bits, symmetric=True, narrow_range=bits >= 2)
        return expected_mse(p, distribution=distribution, std=1.0)

    # coarse grid then golden section around the best point (the exact MSE has small ripples)
    grid = np.linspace(0.2, 8.0, 79)
    vals = np.array([f(a) for a in grid])
    j = int(np.argmin(vals))
    return float(golden_section_min(f, float(grid[max(j - 1, 0)]), float(grid[min(j + 1, grid.size - 1)]), tol=1e-7))


_MOMENTS = {  # (sqrt(E w^2), E|w|) for unit variance
    "gaussian": (1.0, math.sqrt(2.0 / math.pi)),
    "laplace": (1.0, 1.0 / math.sqrt(2.0)),
    "uniform": (1.0, math.sqrt(3.0) / 2.0),
}


@functools.lru_cache(maxsize=None)
def _sawb_fit_cached(bits, distributions):
    alphas = np.array([_optimal_alpha_unit(bits, d) for d in distributions])
    A = np.array([[_MOMENTS[d][0], -_MOMENTS[d][1]] for d in distributions])
    (c1, c2), *_ = np.linalg.lstsq(A, alphas, rcond=None)
    return float(c1), float(c2)


def sawb_fit(bits, *, distributions=_SAWB_DISTRIBUTIONS, return_alphas=False):
    r"""Fit SAWB's coefficients :math:`c_1, c_2` for one bit width (Choi et al. 2018).

    SAWB sets the clip value of a symmetric weight quantizer to
    :math:`\alpha = c_1 \sqrt{E[w^2]} - c_2 E|w|`. Following the paper's procedure, the
    coefficients come from a linear least-squares fit of the MSE-optimal :math:`\alpha^\star`
    over a family of distributions. Here, for each distribution (zero mean, unit variance),
    :math:`\alpha^\star` minimises the *exact* expected MSE
    (:func:`qref.metrics.expected_mse`) of qref's symmetric quantizer
    (``params_from_range(-a, a, bits=bits, symmetric=True, narrow_range=True)``, i.e.
    :math:`2^b - 1` levels including 0; plain symmetric for 1 bit). Since every member has
    :math:`\sqrt{E[w^2]} = 1`, the fit regresses :math:`\alpha^\star_d` on
    :math:`(1, -E|w|_d)`.

    The paper's quantizer and distribution family differ in detail, so the numbers need not
    equal its published table.

    Parameters
    ----------
    bits : int in [1, 8]
    distributions : tuple of {"gaussian", "laplace", "uniform"}, at least two distinct
    return_alphas : bool
        Also return the fitted-to :math:`\alpha^\star_d` (dict by distribution).

    Returns
    -------
    (c1, c2), or ((c1, c2), dict) with ``return_alphas``

    References
    ----------
    J. Choi, P. I.-J. Chuang, Z. Wang, S. Venkataramani, V. Srinivasan, K. Gopalakrishnan,
    "Bridging the accuracy gap for 2-bit quantized neural networks (QNN)", arXiv:1807.06964, 2018.

    Examples
    --------
    >>> (c1, c2), alphas = sawb_fit(4, return_alphas=True)
    >>> {d: round(a, 2) for d, a in alphas.items()}          # MSE-optimal clip, unit variance
    {'gaussian': 2.47, 'laplace': 3.41, 'uniform': 1.62}
    >>> round(c1 - c2 * math.sqrt(2 / math.pi), 2)             # the fitted formula on the Gaussian
    2.41
    """
    bits = check_bits(bits, high=8)
    if isinstance(distributions, str):
        raise TypeError("distributions must be a tuple of names, e.g. ('gaussian', 'laplace')")
    distributions = tuple(distributions)
    for d in distributions:
        check_choice(d, "distributions", _SAWB_DISTRIBUTIONS)
    if len(set(distributions)) < 2:
        raise ValueError(f"distributions must name at least two distinct distributions, got {distributions}")
    coeffs = _sawb_fit_cached(bits, tuple(sorted(set(distributions))))
    if check_bool(return_alphas, "return_alphas"):
        return coeffs, {d: _optimal_alpha_unit(bits, d) for d in distributions}
    return coeffs


def sawb_range(x, *, bits, coeffs=None, axis=None):
    r"""SAWB clip range :math:`\pm(c_1\sqrt{\overline{x^2}} - c_2\,\overline{|x|})` (Choi et al. 2018).

    Parameters
    ----------
    x : array_like of float, not empty
    bits : int in [1, 8]
    coeffs : (float, float), optional
        :math:`(c_1, c_2)`; default :func:`sawb_fit` ``(bits)``.
    axis : int or None

    Returns
    -------
    lo, hi : ndarray of float64 (``lo = -hi``; the clip value is floored at 0)

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal(100_000)
    >>> lo, hi = sawb_range(x, bits=4)
    >>> 2.0 < float(hi) < 3.5
    True
    """
    x = _data(x)
    bits = check_bits(bits, high=8)
    if coeffs is None:
        c1, c2 = sawb_fit(bits)
    else:
        if len(coeffs) != 2:
            raise ValueError(f"coeffs must be a pair (c1, c2), got {coeffs!r}")
        c1, c2 = check_real(coeffs[0], "coeffs[0]"), check_real(coeffs[1], "coeffs[1]")

    def fn(r):
        a = max(c1 * math.sqrt(float(np.mean(r * r))) - c2 * float(np.mean(np.abs(r))), 0.0)
        return -a, a

    return _per_channel(fn, x, axis)


# ---- bias correction (Banner et al. 2019, Sec. 5) ----------------------------------------

def bias_correction(w, w_q, *, axis=0, rule="paper", return_params=False):
    r"""Correct the per-channel mean and spread that quantization shifted (Banner et al. 2019, Sec. 5).

    Rounding a channel :math:`W_c` to a coarse grid changes its mean and the norm of its
    deviations from the mean. With the per-channel correction constants

    .. math::

        \mu_c = \mathbb E[W_c] - \mathbb E[W_c^q], \qquad
        \xi_c = \frac{\lVert W_c - \mathbb E[W_c] \rVert_2}{\lVert W_c^q - \mathbb E[W_c^q] \rVert_2},

    Banner et al. update every quantized weight of the channel as

    * ``rule="paper"``: :math:`w \leftarrow \xi_c\,(w + \mu_c)`. The spread (standard deviation)
      then equals the float channel's exactly; the mean becomes :math:`\xi_c\,\mathbb E[W_c]`,
      equal to :math:`\mathbb E[W_c]` only up to :math:`(\xi_c - 1)\,\mathbb E[W_c]`, which
      is small because weight channels have means near 0 and :math:`\xi_c \approx 1`;
    * ``rule="exact"``: :math:`w \leftarrow \mathbb E[W_c] + \xi_c\,(w - \mathbb E[W_c^q])`,
      which matches both the mean and the standard deviation exactly (the same correction,
      with the scaling applied about the mean).

    Both leave :math:`W^q` unchanged when it already has the float channel's mean and norm.
    A quantized channel that is constant (:math:`\lVert W_c^q - \mathbb E W_c^q\rVert = 0`)
    cannot be stretched: there :math:`\xi_c = 1` and only the mean is corrected.

    Note that the corrected weights are generally *off* the quantization grid: the correction
    is an affine map per channel, i.e. a per-channel scale :math:`\xi_c` and a per-channel
    offset that an integer kernel must carry (like a weight zero point).

    Parameters
    ----------
    w : array_like of float
        The float weights :math:`W`.
    w_q : array_like of float, same shape
        Their quantized (dequantized) version :math:`W^q`.
    axis : int
        The channel axis (0: output channels of a ``(out, in)`` weight); statistics are over
        all other axes.
    rule : {"paper", "exact"}
    return_params : bool
        Also return ``(mu, xi)``, float64 arrays of shape ``(w.shape[axis],)``.

    Returns
    -------
    ndarray, shape and dtype of ``w_q``; or ``(corrected, mu, xi)`` with ``return_params``

    Raises
    ------
    TypeError
        For non-float inputs.
    ValueError
        For different shapes, empty or 0-d arrays, NaN/inf, a bad ``axis`` or ``rule``.

    References
    ----------
    R. Banner, Y. Nahshan, D. Soudry, "Post training 4-bit quantization of convolutional
    networks for rapid-deployment", NeurIPS 2019, Sec. 5 (bias correction).

    Examples
    --------
    >>> w = np.array([[0.30, -0.10, 0.55, -0.42], [0.12, 0.01, -0.13, 0.20]])
    >>> w_q = np.round(w / 0.25) * 0.25                       # a coarse grid
    >>> c = bias_correction(w, w_q, rule="exact")
    >>> bool(np.allclose(c.mean(axis=1), w.mean(axis=1))), bool(np.allclose(c.std(axis=1), w.std(axis=1)))
    (True, True)
    """
    w = as_float_array(w, "w", allow_empty=False, allow_0d=False)
    w_q = as_float_array(w_q, "w_q", allow_empty=False, allow_0d=False)
    if w.shape != w_q.shape:
        raise ValueError(f"w and w_q must have the same shape, got {w.shape} and {w_q.shape}")
    axis = check_axis(axis, w.ndim)
    check_choice(rule, "rule", ("paper", "exact"))
    return_params = check_bool(return_params, "return_params")
    C = w.shape[axis]
    rows = np.moveaxis(w, axis, 0).reshape(C, -1).astype(np.float64)
    rows_q = np.moveaxis(w_q, axis, 0).reshape(C, -1).astype(np.float64)
    mean, mean_q = rows.mean(axis=1), rows_q.mean(axis=1)
    norm = np.linalg.norm(rows - mean[:, None], axis=1)
    norm_q = np.linalg.norm(rows_q - mean_q[:, None], axis=1)
    mu = mean - mean_q
    xi = np.where(norm_q > 0, norm / np.where(norm_q > 0, norm_q, 1.0), 1.0)
    if rule == "paper":
        out = xi[:, None] * (rows_q + mu[:, None])
    else:
        out = mean[:, None] + xi[:, None] * (rows_q - mean_q[:, None])
    moved = np.moveaxis(w_q, axis, 0).shape
    out = np.moveaxis(out.reshape(moved), 0, axis).astype(w_q.dtype)
    return (out, mu, xi) if return_params else out
