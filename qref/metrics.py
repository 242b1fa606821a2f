r"""How far is a quantized tensor from the original, and how much smaller is it?

* :func:`mse` and :func:`sqnr_db`: the error energy and the signal-to-quantization-noise
  ratio :math:`10\log_{10}(\sum x^2 / \sum (x - \hat x)^2)`, whose "6.02 dB per bit" rule
  (Bennett 1948; Gray & Neuhoff 1998, Eq. 8) the uniform chapter checks;
* :func:`kl_divergence`: between two histograms, the quantity TensorRT's entropy
  calibration minimises (Migacz 2017);
* :func:`cosine_similarity` and :func:`angle_degrees`: the direction a quantizer keeps
  (Anderson & Berg 2017 study it for binarization);
* :func:`model_size_bits` and :func:`compression_ratio`: storage accounting.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_float_array, check_bits, check_positive

__all__ = ["mse", "sqnr_db", "kl_divergence", "cosine_similarity", "angle_degrees",
           "model_size_bits", "compression_ratio"]


def _pair(x, x_hat):
    x = as_float_array(x, "x", allow_empty=False)
    x_hat = as_float_array(x_hat, "x_hat", allow_empty=False)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {x.shape} and {x_hat.shape}")
    return x.astype(np.float64), x_hat.astype(np.float64)


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
    p = as_float_array(np.asarray(p, dtype=np.float64), "p", allow_empty=False)
    q = as_float_array(np.asarray(q, dtype=np.float64), "q", allow_empty=False)
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
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


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
    x, y = _pair(x, y)
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
    if int(num_scales) < 0:
        raise ValueError(f"num_scales must be >= 0, got {num_scales}")
    return n * b + int(num_scales) * check_bits(scale_bits, "scale_bits", high=64)


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
