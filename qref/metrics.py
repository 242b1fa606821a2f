r"""How far is a quantized tensor from the original, and how much smaller is it?

* :func:`mse` and :func:`sqnr_db`: the error energy and the signal-to-quantization-noise
  ratio :math:`10\log_{10}(\sum x^2 / \sum (x - \hat x)^2)`, whose "6.02 dB per bit" rule
  (Bennett 1948; Gray & Neuhoff 1998, Sec. I) the uniform chapter checks;
* :func:`kl_divergence`: between two histograms, the quantity TensorRT's entropy
  calibration minimises (Migacz 2017);
* :func:`cosine_similarity` and :func:`angle_degrees`: the direction a quantizer keeps
  (Anderson & Berg 2017 study it for binarization);
* :func:`model_size_bits` and :func:`compression_ratio`: storage accounting;
* theory: :func:`sqnr_full_scale_db` (the closed-form 6 dB-per-bit rule) and
  :func:`expected_mse` (the exact rounding + clipping error of a quantizer on a Gaussian,
  Laplace or uniform input, by integration).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import as_float_array, check_bits, check_bool, check_choice, check_int, check_positive

__all__ = ["mse", "sqnr_db", "kl_divergence", "cosine_similarity", "angle_degrees",
           "model_size_bits", "compression_ratio", "sqnr_full_scale_db", "expected_mse", "THEORY_DISTRIBUTIONS"]


def _pair(x, x_hat, names=("x", "x_hat")):
    a, b = names
    x = as_float_array(x, a, allow_empty=False)
    x_hat = as_float_array(x_hat, b, allow_empty=False)
    if x.shape != x_hat.shape:
        raise ValueError(f"{a} and {b} must have the same shape, got {x.shape} and {x_hat.shape}")
    return x.astype(np.float64), x_hat.astype(np.float64)


def _histogram(h, name):
    """A histogram: counts (integers) or probabilities (floats); bools and complex refused."""
    arr = np.asarray(h)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a histogram of real counts or probabilities, got dtype {arr.dtype}")
    return as_float_array(arr.astype(np.float64), name, allow_empty=False)


def mse(x, x_hat):
    r"""Mean squared error :math:`\frac1n\sum_i (x_i - \hat x_i)^2`, in float64.

    Examples
    --------
    >>> mse([1.0, 2.0], [1.0, 3.0])
    0.5
    """
    x, x_hat = _pair(x, x_hat)
    return float(np.mean((x - x_hat) ** 2))


def sqnr_db(x, x_hat):
    r"""Signal-to-quantization-noise ratio in decibels.

    .. math:: \mathrm{SQNR} = 10 \log_{10} \frac{\sum_i x_i^2}{\sum_i (x_i - \hat x_i)^2}

    Returns ``inf`` when ``x_hat == x`` (no noise).

    Raises
    ------
    ValueError
        If ``x`` is all zeros (no signal: the ratio is undefined).

    Examples
    --------
    >>> round(sqnr_db([1.0, -1.0], [0.9, -1.1]), 2)
    20.0
    """
    x, x_hat = _pair(x, x_hat)
    signal = float(np.sum(x**2))
    if signal == 0.0:
        raise ValueError("x is all zeros: SQNR is undefined without signal")
    noise = float(np.sum((x - x_hat) ** 2))
    return float("inf") if noise == 0.0 else float(10.0 * np.log10(signal / noise))


def kl_divergence(p, q, *, eps=None):
    r"""Kullback–Leibler divergence :math:`\sum_i p_i \log(p_i / q_i)` of two histograms (nats).

    Both histograms are normalised to sum to 1 first (counts are fine). Bins where
    :math:`p_i = 0` contribute 0. Where :math:`p_i > 0` but :math:`q_i = 0` the divergence is
    infinite; pass ``eps`` to smooth ``q`` (``q + eps``, renormalised) as calibrators do.

    Raises
    ------
    ValueError
        For shapes that differ, negative entries, or a histogram with zero total.

    Examples
    --------
    >>> round(kl_divergence([1, 1], [1, 3]), 4)
    0.1438
    """
    p, q = _histogram(p, "p"), _histogram(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    for arr, nm in ((p, "p"), (q, "q")):
        if (arr < 0).any():
            raise ValueError(f"{nm} must be non-negative (a histogram)")
        if arr.sum() == 0:
            raise ValueError(f"{nm} must have a positive total, got all zeros")
    if eps is not None:
        q = q / q.sum() + check_positive(eps, "eps")
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    if (q[mask] == 0).any():
        return float("inf")
    # >= 0 by Gibbs' inequality; rounding can give -1e-16 for (nearly) equal histograms
    return max(0.0, float(np.sum(p[mask] * np.log(p[mask] / q[mask]))))


def cosine_similarity(x, y):
    r"""Cosine of the angle between two tensors seen as vectors, :math:`\langle x,y\rangle/(\|x\|\|y\|)`.

    Raises
    ------
    ValueError
        If either tensor is all zeros (the angle is undefined).

    Examples
    --------
    >>> cosine_similarity([1.0, 0.0], [1.0, 1.0])  # doctest: +ELLIPSIS
    0.7071067811865...
    """
    x, y = _pair(x, y, names=("x", "y"))
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        raise ValueError("cosine similarity is undefined for an all-zero tensor")
    return float(np.clip(np.dot(x.ravel(), y.ravel()) / (nx * ny), -1.0, 1.0))


def angle_degrees(x, y):
    """Angle between two tensors seen as vectors, in degrees.

    Examples
    --------
    >>> angle_degrees([1.0, 0.0], [1.0, 1.0])  # doctest: +ELLIPSIS
    45.0...
    """
    return float(np.degrees(np.arccos(cosine_similarity(x, y))))


def model_size_bits(num_params, bits, *, num_scales=0, scale_bits=32):
    r"""Storage of a quantized tensor in bits: codes plus per-tensor/channel/group parameters.

    .. math:: n\,b + n_{\text{scales}}\,b_{\text{scale}}

    Examples
    --------
    >>> model_size_bits(1000, 4, num_scales=10)  # 4-bit codes, ten float32 scales
    4320
    """
    n = int(check_positive(num_params, "num_params", integer=True))
    b = check_bits(bits, high=64)
    return n * b + check_int(num_scales, "num_scales", low=0) * check_bits(scale_bits, "scale_bits", high=64)


def compression_ratio(original_bits, compressed_bits):
    """``original_bits / compressed_bits``: how many times smaller.

    Examples
    --------
    >>> compression_ratio(32 * 1000, model_size_bits(1000, 4, num_scales=10))
    7.407407407407407
    """
    check_positive(original_bits, "original_bits")
    check_positive(compressed_bits, "compressed_bits")
    return original_bits / compressed_bits


# ---- theory: the error a uniform quantizer makes on a random input ------------------------

#: The input distributions :func:`expected_mse` integrates over.
THEORY_DISTRIBUTIONS = ("gaussian", "laplace", "uniform")

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)  # Gauss-Legendre nodes/weights on [-1, 1]


def sqnr_full_scale_db(bits, *, peak_to_rms=np.sqrt(3.0)):
    r"""SQNR of a ``bits``-bit uniform quantizer whose range is the signal's peak: the 6 dB-per-bit rule.

    A quantizer with :math:`2^b` levels spread over :math:`[-x_{\max}, x_{\max}]` has step
    :math:`\Delta = 2x_{\max}/2^b`. If the rounding error is uniform on
    :math:`[-\Delta/2, \Delta/2]` and nothing is clipped, the noise power is
    :math:`\Delta^2/12` (Bennett 1948; Gray & Neuhoff 1998, Sec. I), so for a signal of
    power :math:`\sigma^2`

    .. math::

        \mathrm{SQNR} = 10\log_{10}\frac{\sigma^2}{\Delta^2/12}
        = 20 b \log_{10} 2 + 10\log_{10} 3 - 20\log_{10}\frac{x_{\max}}{\sigma}
        \approx 6.02\,b + 4.77 - 20\log_{10}\frac{x_{\max}}{\sigma}\ \text{dB}.

    The peak-to-RMS ratio :math:`x_{\max}/\sigma` (the *crest factor*) is :math:`\sqrt 3` for
    a uniform signal, which gives exactly :math:`6.02\,b` dB, and 4 for a Gaussian clipped
    at :math:`\pm 4\sigma`, which gives :math:`6.02\,b - 7.27` dB.

    Parameters
    ----------
    bits : int or array_like of int, each in [1, 64]
    peak_to_rms : float >= 1
        :math:`x_{\max}/\sigma` (default :math:`\sqrt 3`, a full-scale uniform signal).

    Returns
    -------
    float, or ndarray of float64 with the shape of ``bits``

    Raises
    ------
    TypeError
        If ``bits`` is not integer.
    ValueError
        If a bit width is outside [1, 64] or ``peak_to_rms < 1`` (no signal has a peak below
        its RMS value).

    References
    ----------
    W. R. Bennett, "Spectra of quantized signals", Bell Syst. Tech. J. 27, 1948.
    R. M. Gray and D. L. Neuhoff, "Quantization", IEEE Trans. Inf. Theory 44(6), 1998.

    Examples
    --------
    >>> round(sqnr_full_scale_db(8), 2)
    48.16
    >>> sqnr_full_scale_db([4, 8], peak_to_rms=4.0).round(2)   # Gaussian clipped at 4 sigma
    array([16.81, 40.89])
    """
    scalar = np.ndim(bits) == 0
    b = np.array([check_bits(v, high=64) for v in np.ravel(np.asarray(bits, dtype=object))], dtype=np.float64)
    r = check_positive(peak_to_rms, "peak_to_rms")
    if r < 1.0:
        raise ValueError(f"peak_to_rms must be >= 1 (a peak is never below the RMS value), got {peak_to_rms!r}")
    db = 20.0 * b * np.log10(2.0) + 10.0 * np.log10(3.0) - 20.0 * np.log10(r)
    return float(db[0]) if scalar else db.reshape(np.shape(bits))


def _theory_density(distribution, std):
    """pdf, overload(c) = int_c^inf (x - c)^2 p(x) dx for c >= 0, integration half-width, panel width."""
    if distribution == "gaussian":
        pdf = lambda x: np.exp(-0.5 * (x / std) ** 2) / (std * np.sqrt(2.0 * np.pi))  # noqa: E731

        def overload(c):
            z = c / std
            tail = 0.5 * math.erfc(z / math.sqrt(2.0))
            return std**2 * max((1.0 + z * z) * tail - z * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi), 0.0)

        return pdf, overload, 40.0 * std, 0.5 * std
    if distribution == "laplace":
        beta = std / np.sqrt(2.0)  # variance 2 beta^2
        pdf = lambda x: np.exp(-np.abs(x) / beta) / (2.0 * beta)  # noqa: E731
        return pdf, lambda c: beta**2 * math.exp(-c / beta), 750.0 * beta, beta
    a = np.sqrt(3.0) * std  # uniform on [-a, a]
    pdf = lambda x: np.where(np.abs(x) <= a, 1.0 / (2.0 * a), 0.0)  # noqa: E731
    return pdf, lambda c: (a - c) ** 3 / (6.0 * a) if c < a else 0.0, a, a


def expected_mse(params, *, distribution="gaussian", std=1.0, return_parts=False):
    r"""Expected squared error of a per-tensor uniform quantizer on a random input, by integration.

    For :math:`X` with density :math:`p` and a quantizer with levels
    :math:`y_{\min} = y_0 < \dots < y_{L-1} = y_{\max}` (round to nearest, clip to the
    outermost levels),

    .. math::

        \mathbb E\big[(X - Q(X))^2\big]
        = \underbrace{\sum_k \int_{\text{cell } k} (x - y_k)^2 p(x)\,dx}_{\text{granular (rounding)}}
        + \underbrace{\int_{y_{\max}}^{\infty} (x - y_{\max})^2 p(x)\,dx
          + \int_{-\infty}^{y_{\min}} (x - y_{\min})^2 p(x)\,dx}_{\text{overload (clipping)}}

    the split into granular and overload distortion (Gray & Neuhoff 1998), and the two terms
    ACIQ (Banner et al. 2019, Sec. 3) trades against each other to choose a clipping range. Cells are integrated with 16-point Gauss–Legendre on panels no wider than the
    density's scale (exact to ~1e-12 relative); the overload integrals are closed-form.
    No sampling, so the result is deterministic and smooth in the range.

    Parameters
    ----------
    params : qref.uniform.QuantParams
        Per-tensor parameters (``axis=None``).
    distribution : {"gaussian", "laplace", "uniform"}
        Zero-mean input with standard deviation ``std`` (the same families as
        :func:`qref.data.synthetic_weights`).
    std : float > 0
    return_parts : bool
        Return ``(granular, overload)`` instead of their sum.

    Returns
    -------
    float, or (float, float) with ``return_parts``

    Raises
    ------
    TypeError
        If ``params`` is not a :class:`~qref.uniform.QuantParams`.
    ValueError
        For per-channel or per-group parameters or an unknown distribution.

    References
    ----------
    R. M. Gray and D. L. Neuhoff, "Quantization", IEEE Trans. Inf. Theory 44(6), 1998.
    R. Banner, Y. Nahshan, D. Soudry, "Post training 4-bit quantization of convolutional
    networks for rapid-deployment", NeurIPS 2019.

    Examples
    --------
    >>> from qref.uniform import params_from_range
    >>> p = params_from_range(-4.0, 4.0, bits=8, symmetric=True)   # step 8/255
    >>> granular, overload = expected_mse(p, distribution="gaussian", return_parts=True)
    >>> round(granular / (float(p.scale) ** 2 / 12), 3)   # the rounding noise is Delta^2/12
    1.0
    """
    from .uniform import QuantParams, levels  # local import: uniform does not depend on metrics

    if not isinstance(params, QuantParams):
        raise TypeError(f"params must be a qref.uniform.QuantParams, got {type(params).__name__}")
    if params.axis is not None:
        raise ValueError("expected_mse needs per-tensor parameters (axis=None), got per-"
                         f"{params.granularity} parameters")
    check_choice(distribution, "distribution", THEORY_DISTRIBUTIONS)
    std = float(check_positive(std, "std"))
    return_parts = check_bool(return_parts, "return_parts")
    pdf, overload, half_width, panel = _theory_density(distribution, std)
    y = levels(params)  # ascending, step S, contains 0
    step = float(params.scale)
    # breakpoints of the granular region: levels and the midpoints between them (so every
    # piece has one reconstruction value and the Laplace kink at 0 is a breakpoint), cut to
    # where the density lives
    pts = np.sort(np.concatenate([y, 0.5 * (y[1:] + y[:-1])]))
    pts = np.unique(np.clip(pts, -half_width, half_width))
    lo, hi = pts[:-1], pts[1:]
    n = np.maximum(np.ceil((hi - lo) / panel), 1).astype(np.int64)  # panels per piece
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    w = np.repeat((hi - lo) / n, n)
    a = np.repeat(lo, n) + k * w  # panel left ends
    recon = np.repeat(y[np.clip(np.rint((0.5 * (lo + hi) - y[0]) / step), 0, y.size - 1).astype(np.int64)], n)
    x = a[:, None] + 0.5 * w[:, None] * (1.0 + _GL_X)  # [panel][node]
    granular = float(np.sum(0.5 * w * (((x - recon[:, None]) ** 2 * pdf(x)) @ _GL_W)))
    over = float(overload(float(y[-1])) + overload(float(-y[0])))
    return (granular, over) if return_parts else granular + over
