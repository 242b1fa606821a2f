r"""Feature quantization for robustness to image distortion (Sun et al. 2018).

A network trained on clean images loses accuracy on blurred or noisy ones. Sun, Ozay,
Zhang, Liu & Okatani (2018) argue that distortion shifts the *higher moments*
(skewness, kurtosis) of the distributions of a CNN's features, that this shift costs
accuracy, and that ordinary normalization (batch normalization) cannot undo it: a
normalization is an affine map per feature, and skewness and kurtosis are invariant under
affine maps. Their remedy is an extra non-linearity that *quantizes* the features, so that
small perturbations of a feature fall into the same bin (the floor function) or are
compressed (a power function with exponent below one). They propose three:

1. a floor function with scalable resolution, :class:`FloorQuantize`;
2. a power function with learnable exponents, :class:`PowerActivation`;
3. a power function with data-dependent exponents ("HPOW" in the paper),
   :class:`DataDependentPower`.

This module also has the rest of a small experiment on the 8x8 digits
(:func:`qref.data.load_digits`): image distortions (:func:`gaussian_noise`,
:func:`salt_and_pepper`, :func:`motion_blur`, :func:`contrast`, :func:`mixed`,
:func:`distort`), the four moments of a feature distribution (:func:`moments`,
:func:`moment_shift`), the hidden features of a :class:`qref.nn.Sequential`
(:func:`hidden_features`) and the networks compared (:func:`feature_quantized_mlp`).

**What was checked and what was not.** The paper itself was not available: what is verified
is its abstract (the higher-moment argument, the three kinds of non-linearity, and the
ResNet-50 + HPOW gains of 6.95, 5.26 and 5.61 points on ILSVRC-12 with motion blur,
salt-and-pepper and mixed distortions). The exact formulas are **reconstructions**, labelled
as such in each docstring: :math:`\lfloor s x\rfloor / s` for "a floor function with scalable
resolution", :math:`\mathrm{sign}(x)|x|^{\alpha}` for the power function, and, for the
data-dependent exponents, :math:`\alpha = \alpha_{\min} + \mathrm{softplus}(xW^\top + c)` computed
from the features themselves by a small learned layer. The paper's equation numbers, its
backward passes, where in the network the layers sit and its distortion parameters are not
known; no equation number is cited for them.

References
----------
Sun, Z., Ozay, M., Zhang, Y., Liu, X., Okatani, T. (2018). Feature Quantization for Defending
Against Distortion of Images. CVPR 2018, pp. 7957-7966.

Ioffe, S., Szegedy, C. (2015). Batch normalization: accelerating deep network training by
reducing internal covariate shift. ICML 2015.

Bengio, Y., Léonard, N., Courville, A. (2013). Estimating or propagating gradients through
stochastic neurons for conditional computation. arXiv:1308.3432.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from . import nn
from .qat import _Quantizer as _Layer  # a Module whose backward checks it follows a forward
from ._validation import (
    as_float_array, check_axis, check_choice, check_fraction, check_int, check_positive, check_real, check_rng,
)

__all__ = [
    "DISTORTIONS",
    "NONLINEARITIES",
    "gaussian_noise",
    "salt_and_pepper",
    "motion_blur",
    "contrast",
    "mixed",
    "distort",
    "Moments",
    "moments",
    "moment_shift",
    "hidden_features",
    "renormalize_batch_norm",
    "FloorQuantize",
    "PowerActivation",
    "DataDependentPower",
    "feature_quantized_mlp",
]

#: The distortions of :func:`distort` ("mixed": each image gets one of the other four at random).
DISTORTIONS = ("gaussian", "salt_pepper", "motion_blur", "contrast", "mixed")
#: The feature non-linearities of :func:`feature_quantized_mlp` ("none": the plain ReLU network).
NONLINEARITIES = ("none", "floor", "power", "hpow")


# --------------------------------------------------------------------------------------
# Image distortions
# --------------------------------------------------------------------------------------


def _images(images, image_shape):
    """Validate images with pixels in [0, 1]; return (array, (H, W), view of shape (m, H, W))."""
    x = as_float_array(images, "images", allow_0d=False)
    try:
        h, w = image_shape
    except (TypeError, ValueError):
        raise TypeError(f"image_shape must be a pair (height, width), got {image_shape!r}") from None
    h = check_positive(h, "image_shape[0]", integer=True)
    w = check_positive(w, "image_shape[1]", integer=True)
    if x.ndim >= 2 and x.shape[-2:] == (h, w):
        view = x.reshape(-1, h, w)
    elif x.shape[-1] == h * w:
        view = x.reshape(-1, h, w)
    else:
        raise ValueError(
            f"images must have shape (..., {h * w}) (flattened {h}x{w} images) or (..., {h}, {w}), "
            f"got shape {x.shape}; pass image_shape= for other sizes")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must have pixels in [0, 1], got values in [{x.min()}, {x.max()}]")
    return x, (h, w), view


def _out(y, x):
    """Clip to [0, 1] and return in the input's shape and dtype."""
    return np.clip(y, 0.0, 1.0).reshape(x.shape).astype(x.dtype, copy=False)


def gaussian_noise(images, *, sigma, rng=None, image_shape=(8, 8)):
    r"""Add white Gaussian noise to images and clip to the pixel range, :math:`\mathrm{clip}(x + \sigma z, 0, 1)`.

    Parameters
    ----------
    images : array_like of float, shape (..., H*W) or (..., H, W)
        Pixels in [0, 1] (not modified).
    sigma : float >= 0
        Standard deviation of the noise :math:`z \sim \mathcal N(0, 1)`, per pixel.
    rng : None, int or numpy.random.Generator
    image_shape : (int, int)
        :math:`(H, W)`; (8, 8) for :func:`qref.data.load_digits`.

    Returns
    -------
    ndarray, shape and dtype of ``images``, values in [0, 1]

    Raises
    ------
    TypeError, ValueError
        For non-float images, pixels outside [0, 1], NaN, a shape that does not match
        ``image_shape``, or a negative ``sigma``.

    Examples
    --------
    >>> x = np.full((2, 64), 0.5, np.float32)
    >>> y = gaussian_noise(x, sigma=0.1, rng=0)
    >>> y.shape, y.dtype, bool(0 < y.std() < 0.2)
    ((2, 64), dtype('float32'), True)
    """
    x, _, view = _images(images, image_shape)
    sigma = check_real(sigma, "sigma")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noise = check_rng(rng).normal(0.0, sigma, size=view.shape) if sigma > 0 else 0.0
    return _out(view + noise, x)


def salt_and_pepper(images, *, amount, rng=None, image_shape=(8, 8)):
    r"""Set a random fraction of the pixels to 0 (pepper) or 1 (salt), with equal probability.

    Each pixel independently becomes 0 with probability ``amount / 2``, 1 with probability
    ``amount / 2``, and keeps its value otherwise.

    Parameters
    ----------
    images : array_like of float, shape (..., H*W) or (..., H, W)
        Pixels in [0, 1] (not modified).
    amount : float in [0, 1]
        Expected fraction of pixels replaced.
    rng : None, int or numpy.random.Generator
    image_shape : (int, int)

    Returns
    -------
    ndarray, shape and dtype of ``images``

    Examples
    --------
    >>> x = np.full((100, 64), 0.5, np.float32)
    >>> y = salt_and_pepper(x, amount=0.2, rng=0)
    >>> sorted(np.unique(y).tolist()), round(float(np.mean(y != 0.5)), 1)
    ([0.0, 0.5, 1.0], 0.2)
    """
    x, _, view = _images(images, image_shape)
    amount = check_fraction(amount, "amount")
    u = check_rng(rng).random(view.shape)
    y = np.where(u < amount / 2, 0.0, np.where(u < amount, 1.0, view))
    return _out(y, x)


def motion_blur(images, *, length=3, image_shape=(8, 8)):
    r"""Horizontal motion blur: the mean of ``length`` neighbouring pixels of the same row.

    .. math::

        y_{i,j} = \frac{1}{\ell}\sum_{k=-(\ell-1)/2}^{(\ell-1)/2} x_{i,\,j+k},

    a centred box filter of odd length :math:`\ell` along each row, with the edge pixels
    repeated beyond the border (so a constant image stays constant). Deterministic.

    Parameters
    ----------
    images : array_like of float, shape (..., H*W) or (..., H, W)
        Pixels in [0, 1] (not modified).
    length : odd int in [1, 2W - 1]
        :math:`\ell`; 1 leaves the images unchanged.
    image_shape : (int, int)

    Returns
    -------
    ndarray, shape and dtype of ``images``

    Examples
    --------
    >>> x = np.zeros((1, 2, 5), np.float32)
    >>> x[0, 0, 2] = 0.75
    >>> motion_blur(x, length=3, image_shape=(2, 5))[0, 0]
    array([0.  , 0.25, 0.25, 0.25, 0.  ], dtype=float32)
    """
    x, (h, w), view = _images(images, image_shape)
    length = check_int(length, "length", low=1)
    if length % 2 == 0 or length > 2 * w - 1:
        raise ValueError(f"length must be an odd integer in [1, {2 * w - 1}], got {length}")
    r = length // 2
    padded = np.pad(view.astype(np.float64), ((0, 0), (0, 0), (r, r)), mode="edge")
    y = sum(padded[:, :, k:k + w] for k in range(length)) / length
    return _out(y, x)


def contrast(images, *, factor, image_shape=(8, 8)):
    r"""Scale each image's contrast about its own mean, :math:`\mathrm{clip}(\bar x + c(x - \bar x), 0, 1)`.

    Parameters
    ----------
    images : array_like of float, shape (..., H*W) or (..., H, W)
        Pixels in [0, 1] (not modified).
    factor : float >= 0
        :math:`c`; below 1 reduces the contrast (0 gives a flat grey image at the mean),
        above 1 increases it.
    image_shape : (int, int)

    Returns
    -------
    ndarray, shape and dtype of ``images``

    Examples
    --------
    >>> contrast(np.array([[0.0, 1.0, 0.5, 0.5]], np.float32), factor=0.5, image_shape=(2, 2))
    array([[0.25, 0.75, 0.5 , 0.5 ]], dtype=float32)
    """
    x, _, view = _images(images, image_shape)
    factor = check_real(factor, "factor")
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    v = view.astype(np.float64)
    m = v.mean(axis=(1, 2), keepdims=True)
    return _out(m + factor * (v - m), x)


def _severity_parameters(severity):
    """The parameter of each distortion at a severity in [0, 1] (see :func:`distort`)."""
    return {
        "gaussian": 0.5 * severity,                                   # sigma
        "salt_pepper": 0.4 * severity,                                # amount
        "motion_blur": 2 * int(np.floor(4 * severity + 0.5)) + 1,     # length 1, 3, 5, 7, 9
        "contrast": 1.0 - 0.8 * severity,                             # factor
    }


def _apply(view, kind, p, rng, shape):
    if kind == "gaussian":
        return gaussian_noise(view, sigma=p, rng=rng, image_shape=shape)
    if kind == "salt_pepper":
        return salt_and_pepper(view, amount=p, rng=rng, image_shape=shape)
    if kind == "motion_blur":
        return motion_blur(view, length=p, image_shape=shape)
    return contrast(view, factor=p, image_shape=shape)


def distort(images, kind, *, severity, rng=None, image_shape=(8, 8)):
    r"""Apply one of :data:`DISTORTIONS` at a severity in [0, 1].

    The severity :math:`t` sets each distortion's parameter (0: no distortion):

    ============== =====================================================
    ``kind``       parameter at severity :math:`t`
    ============== =====================================================
    "gaussian"     :func:`gaussian_noise`, :math:`\sigma = 0.5\,t`
    "salt_pepper"  :func:`salt_and_pepper`, amount :math:`= 0.4\,t`
    "motion_blur"  :func:`motion_blur`, length :math:`= 2\,\mathrm{round}(4t) + 1` (1, 3, 5, 7, 9)
    "contrast"     :func:`contrast`, factor :math:`= 1 - 0.8\,t`
    "mixed"        :func:`mixed`: each image one of the four above, at the same :math:`t`
    ============== =====================================================

    The scales are this module's choice for 8x8 digits (at :math:`t = 1` a digit is hard
    but not impossible to read); the paper's distortion parameters were not available.

    Parameters
    ----------
    images : array_like of float, shape (..., H*W) or (..., H, W)
        Pixels in [0, 1] (not modified).
    kind : str, one of :data:`DISTORTIONS`
    severity : float in [0, 1]
    rng : None, int or numpy.random.Generator
        For the random distortions (and the choice of distortion in "mixed").
    image_shape : (int, int)

    Returns
    -------
    ndarray, shape and dtype of ``images``

    Examples
    --------
    >>> x = np.random.default_rng(0).random((3, 64)).astype(np.float32)
    >>> bool(np.array_equal(distort(x, "motion_blur", severity=0.0), x))
    True
    >>> np.array_equal(distort(x, "gaussian", severity=0.5, rng=1), distort(x, "gaussian", severity=0.5, rng=1))
    True
    """
    check_choice(kind, "kind", DISTORTIONS)
    severity = check_fraction(severity, "severity")
    if kind == "mixed":
        return mixed(images, severity=severity, rng=rng, image_shape=image_shape)
    x, shape, view = _images(images, image_shape)
    p = _severity_parameters(severity)[kind]
    return _apply(view, kind, p, rng, shape).reshape(x.shape)


def mixed(images, *, severity, rng=None, image_shape=(8, 8)):
    r"""Mixed distortions: each image gets one of the four distortions of :func:`distort`, drawn uniformly.

    Parameters
    ----------
    images : array_like of float, shape (..., H*W) or (..., H, W)
        Pixels in [0, 1] (not modified).
    severity : float in [0, 1]
        The same severity for every image (see :func:`distort`).
    rng : None, int or numpy.random.Generator
        Draws the distortion of each image, then the noise.
    image_shape : (int, int)

    Returns
    -------
    ndarray, shape and dtype of ``images``

    Examples
    --------
    >>> x = np.random.default_rng(0).random((8, 64)).astype(np.float32)
    >>> y = mixed(x, severity=0.5, rng=0)
    >>> y.shape, y.dtype, bool(np.array_equal(y, mixed(x, severity=0.5, rng=0)))
    ((8, 64), dtype('float32'), True)
    """
    x, shape, view = _images(images, image_shape)
    severity = check_fraction(severity, "severity")
    rng = check_rng(rng)
    params = _severity_parameters(severity)
    kinds = DISTORTIONS[:4]
    choice = rng.integers(len(kinds), size=len(view))
    out = np.empty(view.shape, dtype=x.dtype)
    for i, kind in enumerate(kinds):
        idx = np.flatnonzero(choice == i)
        if idx.size:
            out[idx] = _apply(view[idx], kind, params[kind], rng, shape)
    return out.reshape(x.shape)


# --------------------------------------------------------------------------------------
# Moments of feature distributions
# --------------------------------------------------------------------------------------


class Moments(NamedTuple):
    """Mean, standard deviation, skewness and excess kurtosis (arrays or floats)."""

    mean: np.ndarray
    std: np.ndarray
    skewness: np.ndarray
    kurtosis: np.ndarray


def moments(x, *, axis=0):
    r"""The first four moments of the distribution of each feature: mean, std, skewness, excess kurtosis.

    With :math:`\mu = \overline{x}` and the central moments :math:`m_k = \overline{(x - \mu)^k}`
    (population, i.e. biased, estimates; means along ``axis``):

    .. math::

        \sigma = \sqrt{m_2}, \qquad \gamma_1 = \frac{m_3}{m_2^{3/2}}, \qquad
        \gamma_2 = \frac{m_4}{m_2^{2}} - 3 .

    These are ``scipy.stats.skew`` and ``scipy.stats.kurtosis`` with their defaults
    (``bias=True``, Fisher's definition: 0 for a Gaussian). Skewness and kurtosis are
    invariant under :math:`x \mapsto a x + b` with :math:`a > 0`: a normalization that
    standardizes each feature (batch normalization) leaves them unchanged, the argument of
    Sun et al. (2018) for quantizing features instead.

    Parameters
    ----------
    x : array_like of float, shape (n, ...) or any shape
        Samples (not modified); computed in float64.
    axis : int
        The axis of the samples (at least one sample along it).

    Returns
    -------
    Moments
        ``(mean, std, skewness, kurtosis)``, float64 arrays of ``x``'s shape without ``axis``
        (floats for 1-d ``x``). Where a feature is constant (:math:`m_2 \le (\epsilon\,|\mu|)^2`,
        :math:`\epsilon` the float64 machine epsilon, as in scipy) its skewness and kurtosis
        are undefined and returned as NaN (std 0).

    Raises
    ------
    TypeError, ValueError
        For non-float, 0-d, empty or non-finite ``x``, or a bad ``axis``.

    References
    ----------
    Sun et al. (2018), CVPR, the abstract (higher-moment statistics of feature distributions).

    Examples
    --------
    >>> m = moments(np.array([0.0, 0.0, 0.0, 1.0]))
    >>> round(m.mean, 4), round(m.std, 4), round(m.skewness, 4), round(m.kurtosis, 4)
    (0.25, 0.433, 1.1547, -0.6667)
    """
    arr = as_float_array(x, "x", allow_empty=False, allow_0d=False)
    axis = check_axis(axis, arr.ndim)
    v = np.moveaxis(arr.astype(np.float64), axis, 0)
    mu = v.mean(axis=0)
    d = v - mu
    m2 = np.mean(d * d, axis=0)
    m3 = np.mean(d * d * d, axis=0)
    m4 = np.mean((d * d) ** 2, axis=0)
    const = m2 <= (np.finfo(np.float64).eps * np.abs(mu)) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(const, np.nan, m3 / np.where(const, 1.0, m2) ** 1.5)
        kurt = np.where(const, np.nan, m4 / np.where(const, 1.0, m2) ** 2 - 3.0)
    std = np.where(const, 0.0, np.sqrt(m2))
    if v.ndim == 1:
        return Moments(float(mu), float(std), float(skew), float(kurt))
    return Moments(mu, std, skew, kurt)


def moment_shift(clean, distorted, *, axis=0):
    r"""How far distortion moves each moment of the features: mean absolute change over features.

    .. math::

        \Delta_k = \frac{1}{|F|}\sum_{j \in F}\big|\,\mathrm{moment}_k(\text{distorted}_{:,j})
        - \mathrm{moment}_k(\text{clean}_{:,j})\big|, \qquad k \in \{\mu, \sigma, \gamma_1, \gamma_2\},

    over the features :math:`F` whose moment is defined for both inputs (features constant on
    either side have no skewness or kurtosis and are left out of those two averages).

    Parameters
    ----------
    clean, distorted : array_like of float, shape (n, d) and (m, d) (samples along ``axis``)
        Features of clean and of distorted inputs (not modified); the sample counts may differ.
    axis : int

    Returns
    -------
    Moments of float
        NaN for a moment defined for no feature.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(4000, 3))
    >>> a = (a - a.mean(axis=0)) / a.std(axis=0)   # mean 0, std 1 exactly
    >>> s = moment_shift(a, 2 * a + 1)             # affine: mean and std move, shape does not
    >>> round(s.mean, 3), round(s.std, 3), round(s.skewness, 12), round(s.kurtosis, 12)
    (1.0, 1.0, 0.0, 0.0)
    """
    a = as_float_array(clean, "clean", allow_empty=False, allow_0d=False)
    b = as_float_array(distorted, "distorted", allow_empty=False, allow_0d=False)
    ax_a, ax_b = check_axis(axis, a.ndim), check_axis(axis, b.ndim)
    if np.delete(a.shape, ax_a).tolist() != np.delete(b.shape, ax_b).tolist():
        raise ValueError(f"clean and distorted must have the same features, got shapes {a.shape} and {b.shape}")
    ma, mb = moments(a, axis=axis), moments(b, axis=axis)
    out = []
    for u, v in zip(ma, mb):
        diff = np.abs(np.asarray(v, dtype=np.float64) - np.asarray(u, dtype=np.float64)).reshape(-1)
        diff = diff[np.isfinite(diff)]
        out.append(float(diff.mean()) if diff.size else float("nan"))
    return Moments(*out)


def hidden_features(model, X, *, layer, batch_size=512):
    """The output of ``model.layers[layer]`` (the features after it) for inputs ``X``, in evaluation mode.

    Runs ``model.layers[0]`` to ``model.layers[layer]`` inclusive; the model's train/eval
    mode is restored afterwards.

    Parameters
    ----------
    model : qref.nn.Sequential
    X : array_like of float, shape (n, ...)
        Inputs (not modified).
    layer : int
        Index into ``model.layers`` (negative counts from the end).
    batch_size : int >= 1

    Returns
    -------
    ndarray, shape (n, ...)

    Examples
    --------
    >>> net = nn.mlp((16,), rng=0)                 # Linear, ReLU, Linear
    >>> h = hidden_features(net, np.ones((5, 64), np.float32), layer=1)
    >>> h.shape, bool((h >= 0).all())
    ((5, 16), True)
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a qref.nn.Sequential, got {type(model).__name__}")
    n_layers = len(model.layers)
    layer = check_int(layer, "layer")
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer must be in [{-n_layers}, {n_layers - 1}] for a model of {n_layers} layers, got {layer}")
    layer %= n_layers
    X = as_float_array(X, "X", allow_empty=False, allow_0d=False)
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        outs = []
        for start in range(0, len(X), batch_size):
            h = X[start:start + batch_size]
            for lay in model.layers[:layer + 1]:
                h = lay(h)
            outs.append(h)
        return np.concatenate(outs)
    finally:
        for m, mode in modes:
            m.training = mode


def renormalize_batch_norm(model, X):
    r"""A copy of ``model`` whose batch-normalization statistics are re-estimated on ``X``.

    Every :class:`qref.nn.BatchNorm1d` / :class:`qref.nn.BatchNorm2d` of the copy gets the
    mean and the (unbiased) variance of its input over ``X`` as running statistics (one
    forward pass over all of ``X`` in training mode with momentum 1; no parameter changes; a
    later layer's input is computed, as in training, with the earlier layers normalized by the
    batch variance, which differs from the unbiased one by the factor :math:`n/(n-1)`). With
    ``X`` a set of distorted images, this is the most a normalization can do against the
    distortion: it removes the shift of the mean and variance of every normalized feature.
    By the affine invariance of skewness and kurtosis (:func:`moments`) it leaves their
    shift exactly as it was: the argument of Sun et al. (2018) for quantizing the features.

    Parameters
    ----------
    model : qref.nn.Module
        Not modified.
    X : array_like of float, shape (n, ...)
        The data whose statistics the normalizations should use (n >= 2).

    Returns
    -------
    qref.nn.Module
        The copy, in evaluation mode.

    References
    ----------
    Ioffe, Szegedy (2015), ICML, Algorithm 2 (population statistics at inference).
    Sun et al. (2018), CVPR (abstract: ordinary normalization cannot reduce the shift).

    Examples
    --------
    >>> net = feature_quantized_mlp((4,), rng=0)
    >>> X = np.random.default_rng(0).random((50, 64)).astype(np.float32)
    >>> new = renormalize_batch_norm(net, X)
    >>> h = net.layers[0](X)                       # the input of the batch norm
    >>> bool(np.allclose(new.layers[1].running_mean, h.mean(axis=0), atol=1e-6))
    True
    >>> float(net.layers[1].running_mean[0])       # the original is untouched
    0.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a qref.nn.Module, got {type(model).__name__}")
    X = as_float_array(X, "X", allow_empty=False, allow_0d=False)
    if len(X) < 2:
        raise ValueError(f"X must hold at least 2 samples to estimate a variance, got {len(X)}")
    new = copy.deepcopy(model)
    norms = [m for m in new.modules() if isinstance(m, nn._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    new.train()
    new(X)
    new.eval()
    for m, r in zip(norms, momenta):
        m.momentum = r
    return new


# --------------------------------------------------------------------------------------
# The feature-quantization layers
# --------------------------------------------------------------------------------------


class FloorQuantize(_Layer):
    r"""Floor quantization of features with a resolution :math:`s`: :math:`y = \lfloor s x \rfloor / s`.

    Every feature is rounded *down* to the grid :math:`\{k/s : k \in \mathbb Z\}`: a feature
    that a distortion moves by less than the distance to the next grid point below keeps its
    value, and non-negative features below :math:`1/s` (after a ReLU) become exactly zero.
    A larger :math:`s` is a finer grid (:math:`s \to \infty` is the identity).

    Backward: the floor has zero derivative almost everywhere, so the layer uses the
    straight-through estimator of Bengio et al. (2013), :math:`\partial L/\partial x =
    \partial L/\partial y` (:math:`\lfloor s x\rfloor / s = x - \{s x\}/s` differs from the
    identity by less than one step).

    **Reconstruction.** Sun et al. (2018) propose "a floor function with scalable resolution"
    (abstract); the form :math:`\lfloor s x \rfloor / s`, the fixed (not learned) :math:`s`
    and the straight-through backward are this module's reading of that phrase, not verified
    against the paper's text.

    Parameters
    ----------
    resolution : float > 0
        :math:`s`, grid points per unit of the feature.

    Raises
    ------
    TypeError, ValueError
        In ``forward``: non-float or non-finite input. In ``backward``: before ``forward``,
        or a gradient of another shape.

    References
    ----------
    Sun et al. (2018), "Feature quantization for defending against distortion of images",
    CVPR (abstract: the floor function with scalable resolution). Bengio, Léonard, Courville
    (2013), arXiv:1308.3432 (the straight-through estimator).

    Examples
    --------
    >>> fq = FloorQuantize(4.0)
    >>> fq(np.array([0.1, 0.24, 0.25, 0.6, -0.1], np.float32))
    array([ 0.  ,  0.  ,  0.25,  0.5 , -0.25], dtype=float32)
    >>> fq.backward(np.ones(5, np.float32))
    array([1., 1., 1., 1., 1.], dtype=float32)
    """

    def __init__(self, resolution=4.0):
        super().__init__()
        self.resolution = float(check_positive(resolution, "resolution"))

    def extra_repr(self):
        return f"resolution={self.resolution:g}"

    def forward(self, x):
        x = self._input(x)
        s = x.dtype.type(self.resolution)
        return (np.floor(x * s) / s).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        return self._grad(grad_out).copy()


def _safe_abs_log(x):
    """|x| with zeros replaced by 1 (so powers and logs are finite), and the mask of zeros."""
    a = np.abs(x)
    zero = a == 0
    return np.where(zero, 1, a).astype(x.dtype, copy=False), zero


def _power_backward(g, x, y, alpha, safe, zero):
    """dL/dx through y = sign(x)|x|^alpha at fixed alpha, and dL/dalpha elementwise."""
    # dy/dx = alpha |x|^(alpha - 1) for x != 0; at x = 0 we use 1 if alpha == 1 else 0 (see docstrings)
    dydx = np.where(zero, (alpha == 1).astype(x.dtype), alpha * safe ** (alpha - 1))
    # dy/dalpha = sign(x)|x|^alpha ln|x| = y ln|x|, whose limit at x = 0 is 0 (alpha > 0)
    dyda = y * np.log(safe)
    return g * dydx, g * dyda


class PowerActivation(_Layer):
    r"""A power non-linearity with learnable exponents, :math:`y = \mathrm{sign}(x)\,|x|^{\alpha}`.

    With :math:`\alpha < 1` the power compresses large features and stretches small ones
    (a soft, continuous cousin of a logarithmic quantizer); :math:`\alpha = 1` is the
    identity. The exponent is one learned scalar, or one per feature (``num_features``,
    along axis 1). Backward, exactly:

    .. math::

        \frac{\partial y}{\partial x} = \alpha |x|^{\alpha - 1}, \qquad
        \frac{\partial y}{\partial \alpha} = \mathrm{sign}(x)\,|x|^{\alpha}\ln|x| = y \ln|x| .

    At :math:`x = 0`, :math:`\partial y/\partial\alpha = 0` (its limit) and
    :math:`\partial y/\partial x` is taken as 1 for :math:`\alpha = 1` and 0 otherwise (for
    :math:`\alpha < 1` the derivative is infinite there; after a ReLU, whose gradient is zero
    at 0, the choice does not matter).

    **Reconstruction.** Sun et al. (2018) propose "a power function with learnable exponents"
    (abstract); the sign-preserving form, the per-feature exponents and the initial value 1
    are this module's choices, not verified against the paper's text.

    Parameters
    ----------
    alpha : float > 0
        Initial exponent.
    num_features : None or int >= 1
        None: one exponent for the whole tensor; an int: one per feature (axis 1).
    learnable : bool
        False freezes the exponents (:attr:`qref.nn.Parameter.frozen`): a fixed power.

    Attributes
    ----------
    alpha : Parameter, shape () or (num_features,), float32, no weight decay

    Raises
    ------
    ValueError
        In ``forward``: if an exponent has become <= 0 during training, or the input's axis 1
        does not have ``num_features`` entries.

    References
    ----------
    Sun et al. (2018), "Feature quantization for defending against distortion of images",
    CVPR (abstract: the power function with learnable exponents).

    Examples
    --------
    >>> p = PowerActivation(0.5)
    >>> y = p(np.array([4.0, 0.25, 0.0, -9.0], np.float32))
    >>> y
    array([ 2. ,  0.5,  0. , -3. ], dtype=float32)
    >>> p.backward(np.ones(4, np.float32)).round(4)    # alpha |x|^(alpha - 1)
    array([0.25  , 1.    , 0.    , 0.1667], dtype=float32)
    >>> round(float(p.alpha.grad), 4)                 # sum of y ln|x|
    -4.5122
    """

    def __init__(self, alpha=1.0, *, num_features=None, learnable=True):
        super().__init__()
        a = float(check_positive(alpha, "alpha"))
        if num_features is None:
            data = np.array(a, dtype=np.float32)
        else:
            data = np.full(check_positive(num_features, "num_features", integer=True), a, dtype=np.float32)
        self.num_features = num_features
        self.alpha = nn.Parameter(data, name="alpha", decay=False)
        if not isinstance(learnable, (bool, np.bool_)):
            raise TypeError(f"learnable must be True or False, got {type(learnable).__name__} {learnable!r}")
        if not learnable:
            self.alpha.frozen = np.ones(data.shape, dtype=bool)

    def extra_repr(self):
        if self.num_features is None:
            return f"alpha={float(self.alpha.data):.4g}"
        return f"num_features={self.num_features}"

    def _alpha(self, x):
        a = self.alpha.data
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"alpha must stay finite and > 0, got min {float(np.min(a))!r}; "
                             "lower the learning rate")
        if self.num_features is None:
            return x.dtype.type(a)
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have {self.num_features} features along axis 1, got shape {x.shape}")
        return a.astype(x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, x):
        x = self._input(x)
        alpha = self._alpha(x)
        safe, zero = _safe_abs_log(x)
        y = np.where(zero, 0, np.sign(x) * safe ** alpha).astype(x.dtype, copy=False)
        self._x, self._y, self._a, self._safe, self._zero = x, y, alpha, safe, zero
        return y

    def backward(self, grad_out):
        g = self._grad(grad_out)
        dx, da = _power_backward(g, self._x, self._y, self._a, self._safe, self._zero)
        if self.num_features is None:
            self.alpha.grad += np.sum(da, dtype=np.float64)
        else:
            axes = tuple(i for i in range(da.ndim) if i != 1)
            self.alpha.grad += np.sum(da, axis=axes, dtype=np.float64).astype(self.alpha.grad.dtype)
        return dx.astype(self._x.dtype, copy=False)


def _softplus(z):
    return np.logaddexp(0, z)


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


class DataDependentPower(_Layer):
    r"""A power non-linearity whose exponents depend on the input ("HPOW"): a labelled reconstruction.

    For each sample :math:`x \in \mathbb R^d` (a row of the input) a small learned layer
    computes one exponent per feature from the sample's own features, and the power is
    applied with it:

    .. math::

        z = x W^\top + c, \qquad \alpha = \alpha_{\min} + \mathrm{softplus}(z), \qquad
        y_j = \mathrm{sign}(x_j)\,|x_j|^{\alpha_j} .

    :math:`W` starts at zero and :math:`c` at :math:`\mathrm{softplus}^{-1}(\alpha_0 -
    \alpha_{\min})`, so the layer starts as the fixed power :math:`|x|^{\alpha_0}` (the
    identity for :math:`\alpha_0 = 1`) and learns how the exponent should react to the data.
    Backward, exactly (the chain rule through both paths from :math:`x` to :math:`y`), with
    :math:`g = \partial L/\partial y` and :math:`q = g \odot y \odot \ln|x| \odot
    \sigma(z)` (:math:`\sigma` the logistic function, the derivative of softplus):

    .. math::

        \frac{\partial L}{\partial x} = g \odot \alpha \odot |x|^{\alpha - 1} + q\,W, \qquad
        \frac{\partial L}{\partial W} = q^\top x, \qquad
        \frac{\partial L}{\partial c} = \textstyle\sum_n q_n ,

    with the conventions of :class:`PowerActivation` at :math:`x = 0`.

    **Reconstruction.** Sun et al. (2018) name "a power function with data-dependent
    exponents" and call it HPOW (abstract); how their exponents are computed from the data
    was not available. This layer is one way to make the exponent data-dependent (a linear
    map of the features through a softplus, with a floor :math:`\alpha_{\min}` that keeps
    the power well defined); it is not the paper's formula.

    Parameters
    ----------
    num_features : int >= 1
        :math:`d`; the input is ``(n, d)``.
    alpha : float > alpha_min
        :math:`\alpha_0`, the initial exponent of every feature.
    alpha_min : float > 0
        :math:`\alpha_{\min}`, the smallest exponent the layer can produce.

    Attributes
    ----------
    weight : Parameter, shape (d, d), starts at zero (weight decay applies)
    bias : Parameter, shape (d,), no weight decay
    last_alpha : ndarray, shape (n, d)
        The exponents of the last forward pass.

    References
    ----------
    Sun et al. (2018), "Feature quantization for defending against distortion of images",
    CVPR (abstract: the power function with data-dependent exponents, "+HPOW").

    Examples
    --------
    >>> h = DataDependentPower(2, alpha=0.5)
    >>> h(np.array([[4.0, 9.0]], np.float32)).round(4)  # W = 0: the fixed square root
    array([[2., 3.]], dtype=float32)
    >>> h.weight.data[0, 1] = 1.0                     # alpha_0 now grows with feature 1 (= 9)
    >>> y = h(np.array([[4.0, 9.0]], np.float32))
    >>> bool(y[0, 0] > 15), round(float(y[0, 1]), 4)
    (True, 3.0)
    """

    def __init__(self, num_features, *, alpha=1.0, alpha_min=0.1):
        super().__init__()
        d = check_positive(num_features, "num_features", integer=True)
        self.alpha_min = float(check_positive(alpha_min, "alpha_min"))
        alpha = float(check_positive(alpha, "alpha"))
        if alpha <= self.alpha_min:
            raise ValueError(f"alpha must be > alpha_min = {self.alpha_min}, got {alpha}")
        self.num_features = d
        c0 = np.log(np.expm1(alpha - self.alpha_min))            # softplus^{-1}
        self.weight = nn.Parameter(np.zeros((d, d), np.float32), name="weight")
        self.bias = nn.Parameter(np.full(d, c0, np.float32), name="bias", decay=False)

    def extra_repr(self):
        return f"{self.num_features}, alpha_min={self.alpha_min:g}"

    def forward(self, x):
        x = self._input(x)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (n, {self.num_features}), got shape {x.shape}")
        z = x @ self.weight.data.T.astype(x.dtype) + self.bias.data.astype(x.dtype)
        alpha = (x.dtype.type(self.alpha_min) + _softplus(z)).astype(x.dtype, copy=False)
        safe, zero = _safe_abs_log(x)
        with np.errstate(over="ignore"):
            y = np.where(zero, 0, np.sign(x) * safe ** alpha).astype(x.dtype, copy=False)
        if not np.all(np.isfinite(y)):
            raise ValueError("the power overflowed: the learned exponents have grown too large; "
                             "lower the learning rate or add weight decay")
        self._x, self._y, self._a, self._z, self._safe, self._zero = x, y, alpha, z, safe, zero
        self.last_alpha = alpha
        return y

    def backward(self, grad_out):
        g = self._grad(grad_out)
        dx, da = _power_backward(g, self._x, self._y, self._a, self._safe, self._zero)
        q = da * _sigmoid(self._z)                                 # dL/dz
        self.weight.grad += (q.T @ self._x).astype(self.weight.grad.dtype)
        self.bias.grad += q.sum(axis=0).astype(self.bias.grad.dtype)
        return (dx + q @ self.weight.data.astype(q.dtype)).astype(self._x.dtype, copy=False)


# --------------------------------------------------------------------------------------
# The networks compared
# --------------------------------------------------------------------------------------


def feature_quantized_mlp(hidden=(64,), *, nonlinearity="none", resolution=4.0, alpha=1.0, batch_norm=True,
                          in_features=64, classes=10, rng=0):
    r"""An MLP ``Linear -> [BatchNorm1d] -> ReLU -> [feature quantization]`` per hidden layer, then ``Linear``.

    The feature-quantization layer follows each hidden ReLU, as an extra non-linearity on
    the (non-negative) features (where Sun et al. 2018 place theirs in a ResNet was not
    verified):

    ============ ====================================================================
    nonlinearity layer after each ReLU
    ============ ====================================================================
    "none"       nothing (the baseline)
    "floor"      :class:`FloorQuantize` ``(resolution)``
    "power"      :class:`PowerActivation` ``(alpha, num_features=width)`` (learned)
    "hpow"       :class:`DataDependentPower` ``(width, alpha=alpha)``
    ============ ====================================================================

    Parameters
    ----------
    hidden : sequence of int
        Widths of the hidden layers.
    nonlinearity : {"none", "floor", "power", "hpow"}
    resolution : float > 0
        :math:`s` of :class:`FloorQuantize`.
    alpha : float > 0
        Initial exponent of the power layers.
    batch_norm : bool
        Put :class:`qref.nn.BatchNorm1d` between each hidden Linear and its ReLU.
    in_features, classes : int >= 1
    rng : None, int or numpy.random.Generator
        Seeds the initialization (the same weights for every ``nonlinearity``).

    Returns
    -------
    qref.nn.Sequential

    Examples
    --------
    >>> net = feature_quantized_mlp((32,), nonlinearity="floor", resolution=2.0)
    >>> [type(m).__name__ for m in net.layers]
    ['Linear', 'BatchNorm1d', 'ReLU', 'FloorQuantize', 'Linear']
    >>> net(np.zeros((3, 64), np.float32)).shape
    (3, 10)
    """
    check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
    hidden = [check_positive(h, "hidden", integer=True) for h in hidden]
    if not isinstance(batch_norm, (bool, np.bool_)):
        raise TypeError(f"batch_norm must be True or False, got {type(batch_norm).__name__} {batch_norm!r}")
    check_positive(resolution, "resolution")
    check_positive(alpha, "alpha")
    rng = check_rng(rng)
    widths = [check_positive(in_features, "in_features", integer=True), *hidden,
              check_positive(classes, "classes", integer=True)]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], rng=rng))
        if i == len(widths) - 2:
            break
        w = widths[i + 1]
        if batch_norm:
            layers.append(nn.BatchNorm1d(w))
        layers.append(nn.ReLU())
        if nonlinearity == "floor":
            layers.append(FloorQuantize(resolution))
        elif nonlinearity == "power":
            layers.append(PowerActivation(alpha, num_features=w))
        elif nonlinearity == "hpow":
            layers.append(DataDependentPower(w, alpha=alpha))
    return nn.Sequential(*layers)
