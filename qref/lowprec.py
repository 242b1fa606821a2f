r"""Low-precision training: WAGE's integer dataflow and Banner et al.'s 8-bit training.

Quantization-aware training (:mod:`qref.qat`) quantizes the forward pass and trains float
weights with float gradients. *Low-precision training* also puts the backward pass and the
update on a low-precision grid. Two papers, two recipes:

**WAGE** (Wu, Li, Chen & Shi 2018) discretizes Weights, Activations, Gradients and Errors
(the gradients with respect to activations) to ``k``-bit signed fixed-point numbers on the
grid of step :math:`\sigma(k) = 2^{1-k}` in :math:`(-1, 1)`. Every scale factor is a power of
two (a shift). A setting is written W-A-G-E, e.g. 2-8-8-8: ternary weights, 8-bit
activations, errors and weight updates.

====================================  ===========================================================================
function / class                      WAGE's operator
====================================  ===========================================================================
:func:`wage_sigma`                    :math:`\sigma(k) = 2^{1-k}`, the grid step
:func:`wage_quantize`                 :math:`Q(x, k)`, round to the grid and clip to :math:`\pm(1 - \sigma)`
:func:`shift`                         :math:`\mathrm{Shift}(x) = 2^{\mathrm{round}(\log_2 x)}`
:func:`wage_init`                     the modified uniform initialization and the layer scale :math:`\alpha`
:class:`WAGEWeight`                   :math:`Q_W(W) = Q(W, k_W)` (a ``weight_quantizer``)
:class:`WAGEActivation`               :math:`Q_A(a) = Q(a/\alpha, k_A)`
:class:`WAGEError`                    :math:`Q_E(e) = Q(e/\mathrm{Shift}(\max|e|), k_E)` (backward only)
:func:`wage_gradient`                 :math:`Q_G(g)`: scale, learning-rate shift, stochastic rounding
:func:`wage_update`, :class:`WAGE`    :math:`W \leftarrow \mathrm{Clip}(W - Q_G(g), \pm(1 - \sigma(k_G)))`
:class:`ConstantScale`                the constant scaling layer that replaces batch norm
:class:`SumSquaredError`              the SSE loss WAGE trains with
:func:`wage_mlp`                      a WAGE multilayer perceptron for :mod:`qref.nn`
====================================  ===========================================================================

**Banner et al. (2018)** keep 8-bit weights, activations and layer gradients, and fix the two
places where 8 bits fail: batch normalization, whose variance needs a sum of squares, is
replaced by *Range BN* (:class:`RangeBatchNorm1d`, :class:`RangeBatchNorm2d`), which divides by
the range of the batch times :math:`C(n) = 1/\sqrt{2\ln n}`; and the gradient of each layer is
*bifurcated* (:class:`GradientBifurcation`): an 8-bit copy, stochastically rounded
(:func:`quantize_gradient`), flows on to the previous layer, a 16-bit copy computes the
weight gradient.

**L1-norm batch normalization** (Wu, Li, Deng, Liu, Xie & Shi 2018; :class:`L1BatchNorm1d`,
:class:`L1BatchNorm2d`) removes the squares the other way: it divides by
:math:`\sqrt{\pi/2}` times the mean absolute deviation, which estimates :math:`\sigma` for
Gaussian data. Range BN and L1BN share one implementation of the layer and differ only in
the statistic.

What could not be verified offline (the papers were not available): the equation numbers of
both papers (we cite sections and symbols instead, and the section numbers are our best
reading of the arXiv versions); WAGE's base limit
:math:`\sqrt{6/n_{\text{in}}}` of the initialization (the authors' released code uses
:math:`\sqrt{3/n_{\text{in}}}`, see :func:`wage_init`); and whether Banner et al. state that
:math:`C(n)\cdot\mathrm{range}` approximates :math:`\sigma` or :math:`2\sigma` (for Gaussian
data it tends to :math:`2\sigma`; :func:`expected_gaussian_range` computes it exactly).

References
----------
Wu, S., Li, G., Chen, F., Shi, L. (2018). Training and inference with integers in deep neural
networks. ICLR 2018. arXiv:1802.04680.

Banner, R., Hubara, I., Hoffer, E., Soudry, D. (2018). Scalable methods for 8-bit training of
neural networks. NeurIPS 31. arXiv:1805.11046.

Gupta, S., Agrawal, A., Gopalakrishnan, K., Narayanan, P. (2015). Deep learning with limited
numerical precision. ICML 2015 (stochastic rounding).
"""

from __future__ import annotations

import math

import numpy as np

from . import nn
from . import uniform as _uniform
from ._validation import as_float_array, as_int_array, check_bits, check_int, check_positive, check_rng
from .bnn import ap2 as _ap2
from .rounding import round_stochastic

__all__ = [
    "WAGE_BETA",
    "wage_sigma",
    "wage_quantize",
    "shift",
    "wage_init_limit",
    "wage_init",
    "wage_activation",
    "wage_error",
    "wage_gradient",
    "wage_update",
    "WAGEWeight",
    "WAGEActivation",
    "WAGEError",
    "ConstantScale",
    "WAGE",
    "SumSquaredError",
    "wage_mlp",
    "range_bn_constant",
    "expected_gaussian_range",
    "RangeBatchNorm1d",
    "RangeBatchNorm2d",
    "L1_BN_CONSTANT",
    "L1BatchNorm1d",
    "L1BatchNorm2d",
    "quantize_gradient",
    "GradientBifurcation",
    "banner_mlp",
]

#: WAGE's constant :math:`\beta` of the initialization limit :math:`L_{\min} = \beta\sigma(k_W)`.
WAGE_BETA = 1.5


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _bits(bits, name, *, allow_none=True):
    """A WAGE bit width: an int in [2, 16], or None (no quantization) where allowed."""
    if bits is None and allow_none:
        return None
    return check_bits(bits, name, low=2, high=16)


def _out_dtype(x):
    """float64 stays float64; float32 and float16 give float32 (the grid needs float32's bits)."""
    return np.float64 if x.dtype == np.float64 else np.float32


def _max_abs(x):
    return float(np.max(np.abs(x))) if x.size else 0.0


# --------------------------------------------------------------------------------------
# WAGE: the linear mapping, the shift, the initialization
# --------------------------------------------------------------------------------------


def wage_sigma(bits):
    r"""WAGE's grid step :math:`\sigma(k) = 2^{1-k}`, the value of one unit in the last place.

    .. math::

        \sigma(k) = 2^{1-k}, \qquad k \ge 2,

    so a ``k``-bit signed integer :math:`n \in [-(2^{k-1} - 1), 2^{k-1} - 1]` stands for
    :math:`n\,\sigma(k) \in (-1, 1)` (Wu et al. 2018, Sec. 3, the linear mapping).

    Parameters
    ----------
    bits : int in [2, 16]
        :math:`k`.

    Returns
    -------
    float

    References
    ----------
    Wu, Li, Chen, Shi (2018), "Training and inference with integers in deep neural networks",
    ICLR, Sec. 3 (the linear mapping :math:`\sigma(k)`).

    Examples
    --------
    >>> wage_sigma(2), wage_sigma(8)
    (0.5, 0.0078125)
    """
    return 2.0 ** (1 - _bits(bits, "bits", allow_none=False))


def wage_quantize(x, *, bits):
    r"""WAGE's ``k``-bit linear mapping :math:`Q(x, k)`: round to the :math:`\sigma(k)` grid and clip.

    .. math::

        Q(x, k) = \mathrm{Clip}\Big\{\sigma(k)\,\mathrm{round}\Big(\frac{x}{\sigma(k)}\Big),
        \ -1 + \sigma(k),\ 1 - \sigma(k)\Big\}, \qquad \sigma(k) = 2^{1-k}

    (Wu et al. 2018, Sec. 3). The outputs are the :math:`2^k - 1` values
    :math:`n\sigma(k)`, :math:`|n| \le 2^{k-1} - 1`: a symmetric ``k``-bit integer times a
    fixed power of two. ``k = 2`` gives the ternary weights :math:`\{-\tfrac12, 0, \tfrac12\}`.
    Round half to even (as ``numpy.rint``).

    Parameters
    ----------
    x : array_like of float, any shape
    bits : int in [2, 16]
        :math:`k`.

    Returns
    -------
    ndarray, shape of ``x``; float64 for float64 input, float32 otherwise

    Raises
    ------
    TypeError
        For non-float ``x`` or non-integer ``bits``.
    ValueError
        For NaN/Inf in ``x`` or ``bits`` outside [2, 16].

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3 (the function :math:`Q(x, k)`).

    Examples
    --------
    >>> wage_quantize(np.array([-0.9, -0.2, 0.26, 0.8]), bits=2)
    array([-0.5,  0. ,  0.5,  0.5])
    >>> wage_quantize(np.array([0.3, 1.5], dtype=np.float32), bits=3)   # grid 1/4, clip at 3/4
    array([0.25, 0.75], dtype=float32)
    """
    x = as_float_array(x, "x")
    s = wage_sigma(bits)
    y = np.clip(s * np.rint(x.astype(np.float64) / s), -1 + s, 1 - s) + 0.0   # + 0.0: no negative zeros
    return y.astype(_out_dtype(x))


def shift(x):
    r"""WAGE's shift operator: the nearest power of two in the log domain.

    .. math::

        \mathrm{Shift}(x) = 2^{\mathrm{round}(\log_2 x)}, \qquad x > 0

    (Wu et al. 2018, Sec. 3). Multiplying or dividing by :math:`\mathrm{Shift}(x)` is a bit
    shift. :math:`2^{-1/2} \le \mathrm{Shift}(x)/x \le 2^{1/2}`. For positive ``x`` it is the
    *AP2* of binarized networks, :func:`qref.bnn.ap2` (which it calls).

    Parameters
    ----------
    x : array_like of float, every entry > 0

    Returns
    -------
    ndarray, same shape and dtype as ``x``

    Raises
    ------
    ValueError
        If an entry is <= 0, NaN or infinite.

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3 (the shift operator).

    Examples
    --------
    >>> shift(np.array([0.3, 1.0, 1.41, 1.42, 5.0]))
    array([0.25, 1.  , 1.  , 2.  , 4.  ])
    """
    x = as_float_array(x, "x")
    if x.size and not (x > 0).all():
        raise ValueError(f"x must be > 0 (Shift takes log2), got minimum {float(x.min())!r}")
    return _ap2(x)


def wage_init_limit(fan_in, *, bits, beta=WAGE_BETA, base=6.0):
    r"""WAGE's initialization limit :math:`L` and layer-wise scale :math:`\alpha`.

    .. math::

        L_0 = \sqrt{\text{base}/n_{\text{in}}}, \quad L_{\min} = \beta\,\sigma(k_W), \quad
        L = \max\{L_{\min}, L_0\}, \quad
        \alpha = \max\Big\{\mathrm{Shift}\Big(\frac{L_{\min}}{L_0}\Big), 1\Big\}

    (Wu et al. 2018, Sec. 3, the modified initialization; :math:`W \sim U(-L, L)`). With few
    weight bits the He-style limit :math:`L_0` is below the first rounding threshold
    :math:`\sigma/2` and nearly every weight would round to 0; WAGE widens the distribution to
    :math:`L_{\min}` with :math:`\beta = 1.5`, which amplifies the layer's output by about
    :math:`L_{\min}/L_0`, and divides the activations by the power of two :math:`\alpha` to
    undo it (:class:`WAGEActivation`, :class:`ConstantScale`).

    ``base = 6`` gives :math:`L_0 = \sqrt{6/n_{\text{in}}}`, the He et al. (2015) uniform limit
    for ReLU networks, which is how we read the paper; the authors' released code uses
    ``base = 3`` (a variance-scaling initializer with factor 1). We could not check the
    paper's text offline.

    Parameters
    ----------
    fan_in : int >= 1
        :math:`n_{\text{in}}`, inputs per output unit.
    bits : int in [2, 16] or None
        :math:`k_W`; None (float weights) gives :math:`L = L_0`, :math:`\alpha = 1`.
    beta : float > 0
    base : float > 0

    Returns
    -------
    limit : float
        :math:`L`.
    alpha : float
        :math:`\alpha`, a power of two >= 1.

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3 (initialization and the scale :math:`\alpha`).

    Examples
    --------
    The digits MLP, 64 inputs, ternary weights (2-8-8-8): :math:`L_0 = 0.306`, :math:`L_{\min}
    = 0.75`, :math:`\alpha = \mathrm{Shift}(2.45) = 2`:

    >>> wage_init_limit(64, bits=2)
    (0.75, 2.0)
    >>> wage_init_limit(64, bits=8)   # L_min = 0.0117 < L_0: plain He limit, alpha = 1
    (0.30618621784789724, 1.0)
    """
    fan_in = check_positive(fan_in, "fan_in", integer=True)
    bits = _bits(bits, "bits")
    beta = check_positive(beta, "beta")
    base = check_positive(base, "base")
    l0 = math.sqrt(base / fan_in)
    if bits is None:
        return l0, 1.0
    l_min = beta * wage_sigma(bits)
    alpha = max(float(shift(np.float64(l_min / l0))), 1.0)
    return max(l_min, l0), alpha


def wage_init(shape, *, bits, beta=WAGE_BETA, base=6.0, grid_bits=None, rng=None):
    r"""Weights drawn from WAGE's modified uniform initialization, and the layer's :math:`\alpha`.

    :math:`W \sim U(-L, L)` with :math:`L` and :math:`\alpha` from :func:`wage_init_limit`
    (fan-in: the product of ``shape[1:]``, PyTorch layout). With ``grid_bits`` the weights
    are put on the :math:`\sigma(k_G)` grid by :func:`wage_quantize`, as WAGE stores them
    (its update keeps them there).

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` or ``(out, in, kh, kw)``.
    bits : int in [2, 16] or None
        :math:`k_W`.
    beta, base : float > 0
        See :func:`wage_init_limit`.
    grid_bits : int in [2, 16] or None
        :math:`k_G`, the storage precision.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    weight : ndarray of float32, shape ``shape``
    alpha : float

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3.

    Examples
    --------
    >>> w, alpha = wage_init((3, 64), bits=2, grid_bits=8, rng=0)
    >>> alpha, bool(np.abs(w).max() <= 0.75), bool(np.all(w * 128 == np.rint(w * 128)))
    (2.0, True, True)
    """
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must have at least two positive dimensions (out, in, ...), got {shape}")
    limit, alpha = wage_init_limit(int(np.prod(shape[1:])), bits=bits, beta=beta, base=base)
    grid_bits = _bits(grid_bits, "grid_bits")
    w = check_rng(rng).uniform(-limit, limit, size=shape).astype(np.float32)
    if grid_bits is not None:
        w = wage_quantize(w, bits=grid_bits)
    return w, alpha


# --------------------------------------------------------------------------------------
# WAGE: the four quantizers as functions
# --------------------------------------------------------------------------------------


def wage_activation(a, *, bits, alpha=1.0):
    r"""WAGE's activation quantizer :math:`Q_A(a) = Q(a/\alpha, k_A)`.

    .. math::

        a_q = Q_A(a) = Q\Big(\frac{a}{\alpha}, k_A\Big)

    (Wu et al. 2018, Sec. 3; :math:`\alpha` from :func:`wage_init_limit`, a power of two, so
    the division is a shift).

    Parameters
    ----------
    a : array_like of float
    bits : int in [2, 16]
        :math:`k_A`.
    alpha : float > 0

    Returns
    -------
    ndarray, shape of ``a`` (dtype as :func:`wage_quantize`)

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3 (activations).

    Examples
    --------
    >>> wage_activation(np.array([0.0, 0.3, 1.0, 3.0]), bits=3, alpha=2.0)
    array([0.  , 0.25, 0.5 , 0.75])
    """
    a = as_float_array(a, "a")
    alpha = check_positive(alpha, "alpha")
    return wage_quantize(a / alpha, bits=bits)


def wage_error(e, *, bits):
    r"""WAGE's error quantizer :math:`Q_E`: divide by the shifted maximum, then :math:`Q(\cdot, k_E)`.

    .. math::

        e_q = Q_E(e) = Q\Big(\frac{e}{\mathrm{Shift}(\max|e|)}, k_E\Big)

    (Wu et al. 2018, Sec. 3, errors). The error is the gradient of the loss with respect to a
    layer's output. Its scale is *not* restored: only the direction of the error travels on,
    and the gradient quantizer :func:`wage_gradient` normalizes the weight gradient anyway.
    Entries below :math:`\sigma(k_E)/2` of the shifted maximum round to zero; the largest
    (up to :math:`\sqrt2` after the shift) clip at :math:`1 - \sigma(k_E)`. An all-zero error
    (``max|e| = 0``) gives zeros.

    Parameters
    ----------
    e : array_like of float
    bits : int in [2, 16]
        :math:`k_E`.

    Returns
    -------
    ndarray, shape of ``e`` (dtype as :func:`wage_quantize`)

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3 (errors).

    Examples
    --------
    >>> wage_error(np.array([0.005, -0.001, 0.0002]), bits=4)   # Shift(0.005) = 2^-8; 1.28 clips to 7/8
    array([ 0.875, -0.25 ,  0.   ])
    """
    e = as_float_array(e, "e")
    m = _max_abs(e)
    if m == 0:
        return np.zeros(e.shape, _out_dtype(e))
    return wage_quantize(e.astype(np.float64) / float(shift(np.float64(m))), bits=bits).astype(_out_dtype(e))


def wage_gradient(g, *, bits, lr=1.0, rng=None):
    r"""WAGE's gradient quantizer :math:`Q_G`: an update that is an integer number of :math:`\sigma(k_G)` steps.

    .. math::

        g_s = \eta\,\frac{g}{\mathrm{Shift}(\max|g|)}, \qquad
        \Delta W = Q_G(g) = \sigma(k_G)\,\mathrm{sgn}(g_s)\Big\{\lfloor|g_s|\rfloor
        + \mathrm{Bernoulli}\big(|g_s| - \lfloor|g_s|\rfloor\big)\Big\}

    (Wu et al. 2018, Sec. 3, gradients). The learning rate :math:`\eta` multiplies the
    *normalized* gradient, whose largest entry is between :math:`2^{-1/2}` and :math:`2^{1/2}`,
    so :math:`\eta` counts grid steps: the largest update is about :math:`\eta` steps of
    :math:`\sigma(k_G)`. Stochastic rounding (:func:`qref.rounding.round_stochastic`, the rule
    of Gupta et al. 2015) makes the update unbiased,
    :math:`\mathbb E[\Delta W] = \sigma(k_G)\,g_s`: updates much smaller than one step survive
    in expectation instead of rounding to zero. (The authors' code first rounds :math:`g_s` to
    16 random bits; we use float64.) An all-zero gradient gives zeros.

    Parameters
    ----------
    g : array_like of float
    bits : int in [2, 16]
        :math:`k_G`.
    lr : float > 0
        :math:`\eta` (the paper uses powers of two, e.g. 8 decaying to 1).
    rng : None, int or numpy.random.Generator

    Returns
    -------
    ndarray, shape of ``g``; float64 for float64 input, float32 otherwise

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3 (gradients and the update).
    Gupta, Agrawal, Gopalakrishnan, Narayanan (2015), ICML, Eq. (2) (stochastic rounding).

    Examples
    --------
    The largest gradient moves exactly :math:`\eta = 2` steps of :math:`\sigma(8) = 1/128`;
    the small one a single step with probability 0.5:

    >>> d = wage_gradient(np.array([4.0, -1.0, 0.0]), bits=8, lr=2.0, rng=0)
    >>> (d * 128).tolist() in ([2.0, 0.0, 0.0], [2.0, -1.0, 0.0])
    True
    """
    g = as_float_array(g, "g")
    s = wage_sigma(bits)
    lr = check_positive(lr, "lr")
    rng = check_rng(rng)
    m = _max_abs(g)
    dt = _out_dtype(g)
    if m == 0:
        return np.zeros(g.shape, dt)
    gs = lr * g.astype(np.float64) / float(shift(np.float64(m)))
    return (s * np.sign(gs) * round_stochastic(np.abs(gs), rng=rng)).astype(dt)


def wage_update(w, delta, *, bits):
    r"""WAGE's weight update: subtract :math:`\Delta W` and clip to the :math:`k_G`-bit range.

    .. math::

        W_{t+1} = \mathrm{Clip}\{W_t - \Delta W_t,\ -1 + \sigma(k_G),\ 1 - \sigma(k_G)\}

    (Wu et al. 2018, Sec. 3). With :math:`W_t` on the :math:`\sigma(k_G)` grid and
    :math:`\Delta W_t` from :func:`wage_gradient`, :math:`W_{t+1}` is on it too: the weights
    are :math:`k_G`-bit integers from start to end.

    Parameters
    ----------
    w, delta : array_like of float, same shape
    bits : int in [2, 16]
        :math:`k_G`.

    Returns
    -------
    ndarray, shape of ``w`` (float64 for float64 ``w``, float32 otherwise)

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3.

    Examples
    --------
    >>> wage_update(np.array([0.5, 0.98]), np.array([0.25, -0.0625]), bits=8)
    array([0.25     , 0.9921875])
    """
    w = as_float_array(w, "w")
    delta = as_float_array(delta, "delta")
    if delta.shape != w.shape:
        raise ValueError(f"delta must have the shape {w.shape} of w, got {delta.shape}")
    s = wage_sigma(bits)
    return np.clip(w.astype(np.float64) - delta, -1 + s, 1 - s).astype(_out_dtype(w))


# --------------------------------------------------------------------------------------
# WAGE: layers, optimizer, loss, network
# --------------------------------------------------------------------------------------


class _Layer(nn.Module):
    """A module whose backward checks that it follows a forward of the same shape."""

    def _input(self, x, name="x"):
        x = as_float_array(x, name)
        self._shape = x.shape
        return x

    def _grad(self, grad_out):
        if not hasattr(self, "_shape"):
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        g = as_float_array(grad_out, "grad_out")
        if g.shape != self._shape:
            raise ValueError(f"grad_out must have the shape of the forward input {self._shape}, got {g.shape}")
        return g


class WAGEWeight(_Layer):
    r"""WAGE's weight quantizer :math:`Q_W(W) = Q(W, k_W)`, with the straight-through backward.

    Forward (Wu et al. 2018, Sec. 3, weights):

    .. math::

        W_q = Q_W(W) = Q(W, k_W),

    backward: the straight-through estimator, :math:`\partial L/\partial W =
    \partial L/\partial W_q` (rounding and clipping are skipped, as in the authors' code). Pass
    it to :class:`qref.nn.Linear` or :class:`qref.nn.Conv2d` as ``weight_quantizer``.

    Parameters
    ----------
    bits : int in [2, 16] or None
        :math:`k_W`; None leaves the weights in float.

    Examples
    --------
    >>> q = WAGEWeight(2)
    >>> q(np.array([[-0.6, 0.1, 0.3]], dtype=np.float32))
    array([[-0.5,  0. ,  0.5]], dtype=float32)
    >>> q.backward(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    array([[1., 2., 3.]], dtype=float32)
    """

    def __init__(self, bits=2):
        super().__init__()
        self.bits = _bits(bits, "bits")

    def extra_repr(self):
        return f"bits={self.bits}"

    def forward(self, w):
        w = self._input(w, "w")
        return w.copy() if self.bits is None else wage_quantize(w, bits=self.bits).astype(w.dtype)

    def backward(self, grad_out):
        return self._grad(grad_out).copy()


class WAGEActivation(_Layer):
    r"""WAGE's activation quantizer :math:`Q_A(a) = Q(a/\alpha, k_A)`, straight-through inside the clip.

    Forward (Wu et al. 2018, Sec. 3, activations):

    .. math::

        a_q = Q\Big(\frac{a}{\alpha}, k_A\Big).

    Backward: rounding is skipped, clipping is kept (as in the authors' code),

    .. math::

        \frac{\partial L}{\partial a} = \frac{1}{\alpha}\,\frac{\partial L}{\partial a_q}\,
        1_{|a/\alpha| \le 1 - \sigma(k_A)}.

    Place it after the ReLU of each hidden layer (and on the input); :math:`\alpha` is the
    scale of the layer before (:func:`wage_init_limit`).

    Parameters
    ----------
    bits : int in [2, 16] or None
        :math:`k_A`; None: only the division by :math:`\alpha` (no rounding, no clipping).
    alpha : float > 0

    Examples
    --------
    >>> q = WAGEActivation(3, alpha=2.0)
    >>> q(np.array([0.3, 1.0, 3.0]))
    array([0.25, 0.5 , 0.75])
    >>> q.backward(np.ones(3))
    array([0.5, 0.5, 0. ])
    """

    def __init__(self, bits=8, *, alpha=1.0):
        super().__init__()
        self.bits = _bits(bits, "bits")
        self.alpha = float(check_positive(alpha, "alpha"))

    def extra_repr(self):
        return f"bits={self.bits}, alpha={self.alpha:g}"

    def forward(self, x):
        x = self._input(x)
        u = x / np.asarray(self.alpha, x.dtype)
        if self.bits is None:
            self._mask = None
            return u
        self._mask = np.abs(u) <= 1 - wage_sigma(self.bits)
        return wage_quantize(u, bits=self.bits).astype(x.dtype)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        g = g / np.asarray(self.alpha, g.dtype)
        return g if self._mask is None else np.where(self._mask, g, 0).astype(g.dtype)


class WAGEError(_Layer):
    r"""The identity forward; WAGE's error quantizer :math:`Q_E` backward.

    .. math::

        \text{forward: } y = x, \qquad
        \text{backward: } \frac{\partial L}{\partial x} \leftarrow Q_E(e) =
        Q\Big(\frac{e}{\mathrm{Shift}(\max|e|)}, k_E\Big), \quad e = \frac{\partial L}{\partial y}

    (Wu et al. 2018, Sec. 3; :func:`wage_error`). The maximum is over the whole tensor
    (the minibatch included). Place it where the error enters a layer's backward pass: after
    each hidden ReLU and after the last layer.

    Parameters
    ----------
    bits : int in [2, 16] or None
        :math:`k_E`; None passes the error through unchanged.

    Examples
    --------
    >>> q = WAGEError(4)
    >>> x = np.zeros((1, 3))
    >>> q(x) is x
    True
    >>> q.backward(np.array([[0.005, -0.001, 0.0002]]))
    array([[ 0.875, -0.25 ,  0.   ]])
    """

    def __init__(self, bits=8):
        super().__init__()
        self.bits = _bits(bits, "bits")

    def extra_repr(self):
        return f"bits={self.bits}"

    def forward(self, x):
        self._input(x)
        return x

    def backward(self, grad_out):
        g = self._grad(grad_out)
        return g.copy() if self.bits is None else wage_error(g, bits=self.bits).astype(g.dtype)


class ConstantScale(_Layer):
    r"""WAGE's constant scaling layer :math:`y = x/\alpha`, the replacement of batch normalization.

    .. math::

        y = \frac{x}{\alpha}, \qquad \frac{\partial L}{\partial x} = \frac{1}{\alpha}\frac{\partial L}{\partial y}

    (Wu et al. 2018, Sec. 3). With :math:`\alpha` a power of two it is a shift; WAGE uses it on
    the output layer, whose output is not quantized by :math:`Q_A`.

    Parameters
    ----------
    alpha : float > 0

    Examples
    --------
    >>> s = ConstantScale(4.0)
    >>> s(np.array([1.0, -8.0])), s.backward(np.array([4.0, 4.0]))
    (array([ 0.25, -2.  ]), array([1., 1.]))
    """

    def __init__(self, alpha):
        super().__init__()
        self.alpha = float(check_positive(alpha, "alpha"))

    def extra_repr(self):
        return f"alpha={self.alpha:g}"

    def forward(self, x):
        x = self._input(x)
        return x / np.asarray(self.alpha, x.dtype)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        return g / np.asarray(self.alpha, g.dtype)


class WAGE(nn._Optimizer):
    r"""WAGE's update rule as an optimizer: :math:`W \leftarrow \mathrm{Clip}(W - Q_G(\partial L/\partial W))`.

    For every Parameter, with its accumulated gradient :math:`g` (Wu et al. 2018, Sec. 3):

    .. math::

        \Delta W = Q_G(g) \ (\text{:func:`wage_gradient`}), \qquad
        W \leftarrow \mathrm{Clip}\{W - \Delta W, -1 + \sigma(k_G), 1 - \sigma(k_G)\}
        \ (\text{:func:`wage_update`}).

    No momentum, no weight decay (WAGE has neither). Entries marked in ``Parameter.frozen``
    never change. Each Parameter is scaled by its own :math:`\mathrm{Shift}(\max|g|)`, and
    every Parameter is clipped to :math:`(-1, 1)`: WAGE networks (:func:`wage_mlp`) have no
    biases and no batch-norm parameters, and this optimizer is not meant for networks that do.

    Parameters
    ----------
    params : iterable of qref.nn.Parameter
    bits : int in [2, 16]
        :math:`k_G`.
    lr : float > 0
        :math:`\eta`, in grid steps (see :func:`wage_gradient`); change ``optimizer.lr``
        between epochs for a schedule.
    rng : None, int or numpy.random.Generator
        The stochastic rounding; one generator for the run, so a seeded run repeats exactly.

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3.

    Examples
    --------
    >>> p = nn.Parameter(np.array([0.5, -0.25]))
    >>> p.grad[:] = [1.0, 0.0]
    >>> WAGE([p], bits=8, lr=4.0, rng=0).step()
    >>> p.data                              # 4 steps of 1/128 on the largest gradient
    array([ 0.46875, -0.25   ])
    """

    def __init__(self, params, *, bits=8, lr=1.0, rng=None):
        super().__init__(params, lr, 0.0)
        self.bits = _bits(bits, "bits", allow_none=False)
        self.rng = check_rng(rng)

    def step(self):
        """Update every Parameter from its ``.grad``."""
        for p in self.params:
            delta = wage_gradient(p.grad, bits=self.bits, lr=self.lr, rng=self.rng)
            self._apply(p, wage_update(p.data, delta, bits=self.bits).astype(p.data.dtype))


class SumSquaredError:
    r"""The sum-of-squared-errors loss on one-hot targets, WAGE's training loss.

    .. math::

        L = \frac{1}{2n}\sum_{i=1}^{n}\sum_{c} \big(y_{ic} - t_{ic}\big)^2, \qquad
        \frac{\partial L}{\partial y_{ic}} = \frac{y_{ic} - t_{ic}}{n},

    with :math:`t` the one-hot label. WAGE uses SSE instead of softmax cross-entropy, whose
    exponentials and logarithms do not fit an integer dataflow (Wu et al. 2018, Sec. 3). The
    mean over the minibatch (the paper sums) only rescales the error, which :class:`WAGEError`
    normalizes away. Interface of :class:`qref.nn.SoftmaxCrossEntropy` (``loss=`` of
    :func:`qref.nn.fit`).

    Examples
    --------
    >>> loss = SumSquaredError()
    >>> loss.forward(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 1]))
    0.125
    >>> loss.backward()
    array([[ 0.  ,  0.  ],
           [ 0.25, -0.25]])
    """

    def forward(self, logits, y):
        logits = as_float_array(logits, "logits", allow_0d=False, allow_empty=False)   # the mean needs examples
        y = as_int_array(y, "y")
        if logits.ndim != 2 or y.shape != (len(logits),):
            raise ValueError(f"logits must be (n, classes) and y (n,), got {logits.shape} and {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= logits.shape[1]):
            raise ValueError(f"y must hold labels in [0, {logits.shape[1]}), got {int(y.min())}..{int(y.max())}")
        t = np.zeros_like(logits)
        t[np.arange(len(y)), y] = 1
        self._diff = logits - t
        return float(0.5 * np.sum(self._diff.astype(np.float64) ** 2) / len(y))

    def backward(self):
        if not hasattr(self, "_diff"):
            raise RuntimeError("SumSquaredError.backward() called before forward()")
        return self._diff / len(self._diff)


def _four_bits(bits):
    try:
        kw, ka, kg, ke = bits
    except (TypeError, ValueError):
        raise TypeError(f"bits must be a 4-tuple (k_W, k_A, k_G, k_E), got {bits!r}") from None
    return (_bits(kw, "bits[0] (k_W)"), _bits(ka, "bits[1] (k_A)"),
            _bits(kg, "bits[2] (k_G)", allow_none=False), _bits(ke, "bits[3] (k_E)"))


def wage_mlp(hidden=(64,), *, bits=(2, 8, 8, 8), in_features=64, classes=10, beta=WAGE_BETA, rng=0):
    r"""A WAGE multilayer perceptron: bias-free Linear layers, shifts instead of batch norm, four quantizers.

    For ``hidden=(64,)`` and ``bits = (k_W, k_A, k_G, k_E)``::

        WAGEActivation(k_A)                                   # the input, on the k_A grid
        Linear(64, 64, bias=False, weight_quantizer=WAGEWeight(k_W))
        ReLU -> WAGEError(k_E) -> WAGEActivation(k_A, alpha_0)
        Linear(64, 10, bias=False, weight_quantizer=WAGEWeight(k_W))
        ConstantScale(alpha_1) -> WAGEError(k_E)              # the output

    the order of the authors' code (quantize the error right after the ReLU, then the
    activation). Weights come from :func:`wage_init` on the :math:`\sigma(k_G)` grid. Train it
    with :class:`WAGE` (``bits=k_G``) and, as the paper, :class:`SumSquaredError`.

    Parameters
    ----------
    hidden : sequence of int
    bits : (k_W, k_A, k_G, k_E)
        Each an int in [2, 16]; ``k_W``, ``k_A``, ``k_E`` may be None (not quantized).
    in_features, classes : int >= 1
    beta : float > 0
        :math:`\beta` of the initialization.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    qref.nn.Sequential

    References
    ----------
    Wu, Li, Chen, Shi (2018), ICLR, Sec. 3 and Fig. 1 (the dataflow).

    Examples
    --------
    >>> net = wage_mlp((32,), bits=(2, 8, 8, 8))
    >>> out = net(np.zeros((4, 64), np.float32))
    >>> out.shape, sorted(set(net[1].weight_quantizer(net[1].weight.data).ravel().tolist()))
    ((4, 10), [-0.5, 0.0, 0.5])
    """
    kw, ka, kg, ke = _four_bits(bits)
    hidden = [check_positive(h, "hidden", integer=True) for h in hidden]
    widths = [check_positive(in_features, "in_features", integer=True), *hidden,
              check_positive(classes, "classes", integer=True)]
    rng = check_rng(rng)
    layers = [WAGEActivation(ka)]
    for i in range(len(widths) - 1):
        lin = nn.Linear(widths[i], widths[i + 1], bias=False, rng=rng, weight_quantizer=WAGEWeight(kw))
        w, alpha = wage_init(lin.weight.shape, bits=kw, beta=beta, grid_bits=kg, rng=rng)
        lin.weight.data[...] = w
        layers.append(lin)
        if i < len(widths) - 2:
            layers += [nn.ReLU(), WAGEError(ke), WAGEActivation(ka, alpha=alpha)]
        else:
            layers += [ConstantScale(alpha), WAGEError(ke)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------
# Banner et al.: Range BN
# --------------------------------------------------------------------------------------


def range_bn_constant(n):
    r"""Range BN's scale adjustment :math:`C(n) = 1/\sqrt{2\ln n}`.

    .. math::

        C(n) = \frac{1}{\sqrt{2\ln n}}, \qquad n \ge 2

    (Banner et al. 2018, Sec. 4). The expected maximum of :math:`n` independent
    :math:`\mathcal N(0, \sigma^2)` samples grows like :math:`\sigma\sqrt{2\ln n}`, so for
    Gaussian data :math:`C(n)` times the range :math:`\max - \min` tends to :math:`2\sigma`
    (slowly, from below; :func:`expected_gaussian_range` gives the exact expectation).

    Parameters
    ----------
    n : int >= 2
        Values per channel in the batch.

    Returns
    -------
    float

    References
    ----------
    Banner, Hubara, Hoffer, Soudry (2018), "Scalable methods for 8-bit training of neural
    networks", NeurIPS, Sec. 4 (Range batch normalization).

    Examples
    --------
    >>> round(range_bn_constant(256), 4)
    0.3003
    """
    n = check_int(n, "n", low=2)
    return 1.0 / math.sqrt(2.0 * math.log(n))


def expected_gaussian_range(n):
    r"""The expected range :math:`\mathbb E[\max_i x_i - \min_i x_i]` of :math:`n` standard normal samples.

    .. math::

        \mathbb E[R_n] = \int_{-\infty}^{\infty} \big(1 - \Phi(x)^n - (1 - \Phi(x))^n\big)\,dx

    (the expectation of :math:`\int 1_{\min \le x < \max}\,dx`; Tippett 1925 tabulated it, and
    quality control calls it :math:`d_2(n)`: 1.128, 1.693, 2.059, 2.326 for
    :math:`n = 2, \dots, 5`). Computed by the trapezoidal rule on :math:`[-12, 12]`, 24001
    points (error below :math:`10^{-9}` for :math:`n \le 10^{9}`). Multiply by :math:`\sigma`
    for :math:`\mathcal N(\mu, \sigma^2)`.

    Parameters
    ----------
    n : int >= 1

    Returns
    -------
    float

    References
    ----------
    Tippett, L. H. C. (1925), "On the extreme individuals and the range of samples taken from a
    normal population", Biometrika 17, 364-387. Banner et al. (2018), NeurIPS, Sec. 4.

    Examples
    --------
    >>> round(expected_gaussian_range(2), 6), round(2 / math.sqrt(math.pi), 6)
    (1.128379, 1.128379)
    """
    n = check_int(n, "n", low=1)
    x = np.linspace(-12.0, 12.0, 24001)
    upper = 0.5 * np.array([math.erfc(v / math.sqrt(2.0)) for v in x])   # 1 - Phi(x)
    lower = upper[::-1]                                                  # Phi(x), by symmetry
    with np.errstate(divide="ignore"):
        # log of a probability near 1 by log1p of its small complement: log(1 - 1e-10) rounded
        # first would lose the digits that n = 1e9 multiplies
        log_upper = np.where(x < 0, np.log1p(-lower), np.log(upper))
        log_lower = np.where(x > 0, np.log1p(-upper), np.log(lower))
        f = 1.0 - np.exp(n * log_lower) - np.exp(n * log_upper)
    return float(np.trapezoid(f, x) if hasattr(np, "trapezoid") else np.trapz(f, x))


class _ScaleBatchNorm(nn._BatchNorm):
    """Batch norm that divides the centred batch by a cheaper statistic than its standard deviation.

    The scale is ``s = factor * t`` per channel, with a constant ``factor`` and a statistic
    ``t`` of the batch: a subclass computes both with :meth:`_statistic` from the values ``xm``
    and the centred values ``cm`` (channel-major, shape ``(C, n)``), and the gradient of ``t``
    with respect to ``c`` times an upstream ``dL/dt`` with :meth:`_statistic_backward`. The
    rest (the shape checks, running averages, affine map, evaluation mode, and the backward
    pass through ``c = x - mu``) is here.
    """

    _buffers = ("running_mean", "running_scale")

    def __init__(self, num_features, *, momentum=0.1, eps=1e-5):
        super().__init__(num_features, momentum=momentum, eps=eps)
        del self.running_var
        self.running_scale = np.ones(self.num_features, np.float32)

    def forward(self, x):
        x = as_float_array(x, "x")
        if x.ndim != self._ndim or x.shape[1] != self.num_features:
            want = f"(n, {self.num_features})" if self._ndim == 2 else f"(n, {self.num_features}, H, W)"
            raise ValueError(f"x must have shape {want} for {type(self).__name__}({self.num_features}), got shape {x.shape}")
        axes, shape = self._axes, (1, -1) + (1,) * (self._ndim - 2)
        if self.training:
            n = x.size // self.num_features
            if n < 2:
                raise ValueError(f"x must hold at least 2 values per channel in training mode, got shape {x.shape}")
            mu = x.mean(axis=axes, keepdims=True)
            c = x - mu
            xm = np.moveaxis(x, 1, 0).reshape(self.num_features, -1)           # [channel][value]
            cm = np.moveaxis(c, 1, 0).reshape(self.num_features, -1)
            factor, t, stat_cache = self._statistic(xm, cm)
            scale = factor * t + self.eps
            r = self.momentum
            self.running_mean = ((1 - r) * self.running_mean + r * mu.reshape(-1)).astype(self.running_mean.dtype)
            self.running_scale = ((1 - r) * self.running_scale + r * factor * t).astype(self.running_scale.dtype)
            self._cache = (True, cm, factor, stat_cache)
        else:
            c = x - self.running_mean.astype(x.dtype).reshape(shape)
            scale = self.running_scale.astype(np.float64) + self.eps
            self._cache = (False, None, None, None)
        self._scale = scale.astype(x.dtype).reshape(shape)
        self._xhat = (c / self._scale).astype(x.dtype, copy=False)
        return self._xhat * self.weight.data.astype(x.dtype).reshape(shape) + self.bias.data.astype(x.dtype).reshape(shape)

    def backward(self, grad_out):
        training, cm, factor, stat_cache = self._cache
        axes, shape = self._axes, (1, -1) + (1,) * (self._ndim - 2)
        g = as_float_array(grad_out, "grad_out", finite=False)
        if g.shape != self._xhat.shape:
            raise ValueError(f"grad_out must have the shape {self._xhat.shape} of the last output, got {g.shape}")
        self.bias.grad += g.sum(axis=axes).astype(self.bias.grad.dtype)
        self.weight.grad += (g * self._xhat).sum(axis=axes).astype(self.weight.grad.dtype)
        dxhat = g * self.weight.data.astype(g.dtype).reshape(shape)
        if not training:
            return (dxhat / self._scale).astype(g.dtype)
        dc = dxhat / self._scale                                          # through c/s, s fixed
        dx = dc - dc.mean(axis=axes, keepdims=True)                       # through c = x - mu
        dscale = -(dxhat * self._xhat).sum(axis=axes) / self._scale.reshape(-1)   # dL/ds
        dt = self._statistic_backward(dscale * factor, cm, stat_cache)    # dL/dc through s = factor t
        dt = dt - dt.mean(axis=1, keepdims=True)                          # through c = x - mu
        moved = np.moveaxis(dx, 1, 0).shape
        dxm = np.moveaxis(dx, 1, 0).reshape(self.num_features, -1) + dt
        return np.moveaxis(dxm.reshape(moved), 0, 1).astype(g.dtype)


class _RangeBatchNorm(_ScaleBatchNorm):
    def _statistic(self, xm, cm):
        # the range, and where it is attained (first index on ties) for the backward pass
        i_max, i_min = xm.argmax(axis=1), xm.argmin(axis=1)
        rows = np.arange(xm.shape[0])
        t = (xm[rows, i_max] - xm[rows, i_min]).astype(np.float64)
        return range_bn_constant(xm.shape[1]), t, (i_max, i_min)

    def _statistic_backward(self, dt, cm, cache):
        i_max, i_min = cache
        d = np.zeros(cm.shape, dtype=np.float64)
        rows = np.arange(cm.shape[0])
        d[rows, i_max] += dt
        d[rows, i_min] -= dt
        return d


#: :math:`\sqrt{\pi/2}`: for Gaussian data, :math:`\sqrt{\pi/2}\,\mathbb{E}|x - \mu| = \sigma`.
L1_BN_CONSTANT = math.sqrt(math.pi / 2)


class _L1BatchNorm(_ScaleBatchNorm):
    def _statistic(self, xm, cm):
        return L1_BN_CONSTANT, np.abs(cm).mean(axis=1, dtype=np.float64), None

    def _statistic_backward(self, dt, cm, cache):
        return dt[:, None] * np.sign(cm) / cm.shape[1]


_RBN_DOC = r"""Range batch normalization (Banner et al. 2018) over {what}: divide by the batch's range, not its standard deviation.

    Training mode, per channel over the :math:`n` values of the minibatch (Banner et al. 2018,
    Sec. 4):

    .. math::

        \hat x_i = \frac{{x_i - \mu}}{{C(n)\,\mathrm{{range}}(x - \mu) + \epsilon}}, \qquad
        \mu = \frac1n\sum_j x_j, \quad \mathrm{{range}}(x) = \max_j x_j - \min_j x_j, \quad
        C(n) = \frac{{1}}{{\sqrt{{2\ln n}}}},

    :math:`y = \gamma\hat x + \beta`. No squares and no square root: the range of 8-bit values
    is an 8-bit value, while the variance needs about twice the bits. (:math:`\epsilon` guards a
    constant channel; the paper has none.) For Gaussian data :math:`C(n)\,\mathrm{{range}}`
    tends to :math:`2\sigma` (:func:`range_bn_constant`), a constant factor that
    :math:`\gamma` absorbs. Backward, with :math:`s = C(n)\,\mathrm{{range}} + \epsilon`,
    :math:`g = \gamma\,\partial L/\partial y` and :math:`i_+, i_-` the positions of the maximum
    and minimum (the first one on ties):

    .. math::

        \frac{{\partial L}}{{\partial x_i}} = \frac{{g_i - \bar g}}{{s}}
        - \frac{{C(n)}}{{s}}\Big(\sum_j g_j \hat x_j\Big)\big(1_{{i = i_+}} - 1_{{i = i_-}}\big),

    since :math:`\mathrm{{range}}` moves only with the two extreme values. Evaluation mode uses
    running averages of :math:`\mu` and of :math:`C(n)\,\mathrm{{range}}` (``running_scale``);
    the layer is then the affine map :math:`y = \gamma(x - \mu_{{\text{{run}}}})/s_{{\text{{run}}}} + \beta`.

    Parameters
    ----------
    num_features : int >= 1
        {feat}
    momentum : float in [0, 1]
    eps : float > 0

    Attributes
    ----------
    weight, bias : Parameter, shape (num_features,)
        :math:`\gamma` (starts at 1) and :math:`\beta` (starts at 0), ``decay=False``; named as
        in :class:`qref.nn.BatchNorm1d`, so the two layers are interchangeable.
    running_mean, running_scale : ndarray, shape (num_features,)

    Raises
    ------
    ValueError
        For a wrong shape, NaN/Inf, or fewer than 2 values per channel in training mode.

    References
    ----------
    Banner, Hubara, Hoffer, Soudry (2018), "Scalable methods for 8-bit training of neural
    networks", NeurIPS, Sec. 4.

    Examples
    --------
    {example}
    """


class RangeBatchNorm1d(_RangeBatchNorm):
    _axes = (0,)
    _ndim = 2


class RangeBatchNorm2d(_RangeBatchNorm):
    _axes = (0, 2, 3)
    _ndim = 4


RangeBatchNorm1d.__doc__ = _RBN_DOC.format(
    what="the features of ``(n, num_features)`` inputs", feat="Features (columns) of the input.",
    example=""">>> bn = RangeBatchNorm1d(1, eps=1e-12)
    >>> x = np.array([[0.0], [1.0], [2.0], [5.0]])   # mean 2, range 5, C(4) = 0.6005
    >>> (bn(x).ravel() * 5 * range_bn_constant(4)).round(6)
    array([-2., -1.,  0.,  3.])""")
RangeBatchNorm2d.__doc__ = _RBN_DOC.format(
    what="the channels of NCHW images", feat="Channels ``C`` of the input.",
    example=""">>> bn = RangeBatchNorm2d(3)
    >>> y = bn(np.random.default_rng(0).normal(2.0, 3.0, size=(8, 3, 4, 4)))
    >>> y.shape, bool(np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-6))
    ((8, 3, 4, 4), True)""")


_L1BN_DOC = r"""L1-norm batch normalization (Wu et al. 2018) over {what}: divide by the mean absolute deviation.

    Training mode, per channel over the :math:`n` values of the minibatch:

    .. math::

        \hat x_i = \frac{{x_i - \mu}}{{\sqrt{{\pi/2}}\;\frac1n\sum_j |x_j - \mu| + \epsilon}}, \qquad
        y_i = \gamma\hat x_i + \beta,

    the L1BN of Wu, Li, Deng, Liu, Xie and Shi (2018): the standard deviation of ordinary batch
    norm is replaced by the mean absolute deviation times :math:`\sqrt{{\pi/2}}`
    (:data:`L1_BN_CONSTANT`), which equals :math:`\sigma` for Gaussian data, so the layer is
    a drop-in replacement. Forward and backward need only sums, absolute values and signs, no
    squares or square roots, which is what makes it friendly to low-bit arithmetic; the same
    motivation as :class:`RangeBatchNorm1d`, with a statistic that averages over the batch
    instead of resting on two extreme values. Backward, with
    :math:`s = \sqrt{{\pi/2}}\,\frac1n\sum_j|c_j| + \epsilon`, :math:`c = x - \mu` and
    :math:`g = \gamma\,\partial L/\partial y`:

    .. math::

        \frac{{\partial L}}{{\partial x_i}} = \frac{{g_i - \bar g}}{{s}}
        - \frac{{\sqrt{{\pi/2}}}}{{n\,s}}\Big(\sum_j g_j \hat x_j\Big)
          \big(\operatorname{{sign}}(c_i) - \overline{{\operatorname{{sign}}(c)}}\big).

    Evaluation mode uses running averages of :math:`\mu` and of the scale (``running_scale``).
    ``sign(0) = 0`` at a value exactly at the mean (a subgradient).

    Parameters
    ----------
    num_features : int >= 1
        {feat}
    momentum : float in [0, 1]
    eps : float > 0

    Attributes
    ----------
    weight, bias : Parameter, shape (num_features,)
        :math:`\gamma` and :math:`\beta`, named as in :class:`qref.nn.BatchNorm1d`.
    running_mean, running_scale : ndarray, shape (num_features,)

    Raises
    ------
    ValueError
        For a wrong shape, NaN/Inf, or fewer than 2 values per channel in training mode.

    References
    ----------
    Wu, S., Li, G., Deng, L., Liu, L., Xie, Y. and Shi, L. (2018). L1-norm batch normalization
    for efficient training of deep neural networks. arXiv:1802.09769.

    Examples
    --------
    {example}
    """


class L1BatchNorm1d(_L1BatchNorm):
    _axes = (0,)
    _ndim = 2


class L1BatchNorm2d(_L1BatchNorm):
    _axes = (0, 2, 3)
    _ndim = 4


L1BatchNorm1d.__doc__ = _L1BN_DOC.format(
    what="the features of ``(n, num_features)`` inputs", feat="Features (columns) of the input.",
    example=""">>> bn = L1BatchNorm1d(1, eps=1e-12)
    >>> x = np.array([[0.0], [1.0], [2.0], [5.0]])   # mean 2, mean |x - 2| = 1.5
    >>> (bn(x).ravel() * 1.5 * L1_BN_CONSTANT).round(6)
    array([-2., -1.,  0.,  3.])""")
L1BatchNorm2d.__doc__ = _L1BN_DOC.format(
    what="the channels of NCHW images", feat="Channels ``C`` of the input.",
    example=""">>> bn = L1BatchNorm2d(3)
    >>> y = bn(np.random.default_rng(0).normal(2.0, 3.0, size=(8, 3, 4, 4)))
    >>> y.shape, bool(np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-6))
    ((8, 3, 4, 4), True)""")


# --------------------------------------------------------------------------------------
# Banner et al.: quantized back-propagation with gradient bifurcation
# --------------------------------------------------------------------------------------


def quantize_gradient(g, *, bits=8, rng=None):
    r"""GEMMLOWP-style min-max quantization of a gradient tensor, with stochastic rounding.

    .. math::

        \Delta = \frac{\max(g, 0) - \min(g, 0)}{2^M - 1}, \qquad
        \hat g = \Delta\,\big(\mathrm{SR}(g/\Delta + Z) - Z\big)

    with the integer zero point :math:`Z` and the clipping of :func:`qref.uniform.fake_quantize`
    (per tensor, unsigned :math:`M`-bit codes, :func:`qref.uniform.params_from_data`) and
    :math:`\mathrm{SR}` the stochastic rounding of Gupta et al. (2015). Banner et al. (2018,
    Sec. 5) quantize the layer gradients this way, rounding stochastically "to prevent noise
    accumulation"; the result is unbiased, :math:`\mathbb E[\hat g] = g`, for every :math:`g`
    inside the grid :math:`[-Z\Delta, (2^M - 1 - Z)\Delta]`. Because :math:`Z` is rounded, that
    grid can miss the extreme gradient by up to :math:`\Delta/2`, which is clipped and so
    biased there (noticeable at 2-4 bits, negligible at 8).

    Parameters
    ----------
    g : array_like of float
    bits : int in [2, 16]
        :math:`M`.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    ndarray, shape and dtype of ``g``

    References
    ----------
    Banner, Hubara, Hoffer, Soudry (2018), NeurIPS, Sec. 5. Jacob et al. (2018), CVPR, Sec. 2
    (the affine uint8 scheme of gemmlowp). Gupta et al. (2015), ICML, Eq. (2).

    Examples
    --------
    >>> g = np.array([-1.0, 0.0, 0.5, 2.0])
    >>> quantize_gradient(g, bits=2, rng=0)   # grid step 1: 0.5 goes to 0 or 1
    array([-1.,  0.,  1.,  2.])
    """
    g = as_float_array(g, "g")
    bits = check_bits(bits, "bits", low=2, high=16)
    if g.size == 0:
        return g.copy()
    params = _uniform.params_from_data(g, bits=bits, signed=False)
    return _uniform.fake_quantize(g, params, rounding="stochastic", rng=check_rng(rng))


class GradientBifurcation(nn.Module):
    r"""Gradient bifurcation: a low-precision copy of the layer gradient for the error, a high-precision one for the weights.

    Wraps a :class:`qref.nn.Linear` or :class:`qref.nn.Conv2d`. Forward: the layer's. Backward
    (Banner et al. 2018, Sec. 5), for the gradient :math:`g_l = \partial L/\partial y` at the
    layer's output:

    .. math::

        g_{l-1} = \frac{\partial y}{\partial x}^{\!\top} Q_{8}(g_l) \quad\text{(to the previous layer)},
        \qquad
        \frac{\partial L}{\partial W} = \frac{\partial y}{\partial W}^{\!\top} Q_{16}(g_l)
        \quad\text{(the weight gradient)},

    with :func:`quantize_gradient` (stochastic rounding) as :math:`Q_8` / :math:`Q_{16}`. The
    error that flows backward through the layers is used once per layer and its quantization
    noise averages out in the next product; the weight gradient is a sum over the minibatch
    that feeds the update, and is kept at higher precision. (``None`` for either width keeps
    that copy in float.) For clarity this runs the layer's backward twice (the first pass's
    parameter gradients are discarded), so it is slower than a fused implementation.

    Parameters
    ----------
    layer : qref.nn.Module
        Usually Linear or Conv2d; any module whose backward accumulates parameter gradients.
    error_bits : int in [2, 16] or None
        Bits of the copy sent to the previous layer (8 in the paper).
    weight_bits : int in [2, 16] or None
        Bits of the copy for the weight gradient (16 in the paper).
    rng : None, int or numpy.random.Generator

    References
    ----------
    Banner, Hubara, Hoffer, Soudry (2018), NeurIPS, Sec. 5 (gradients bifurcation).

    Examples
    --------
    >>> layer = GradientBifurcation(nn.Linear(3, 2, rng=0), error_bits=2, weight_bits=None, rng=0)
    >>> y = layer(np.ones((4, 3), np.float32))
    >>> dx = layer.backward(np.full((4, 2), 0.25, np.float32))
    >>> bool(np.allclose(layer.layer.bias.grad, 1.0)), dx.shape      # float copy: exact bias gradient
    (True, (4, 3))
    """

    def __init__(self, layer, *, error_bits=8, weight_bits=16, rng=None):
        super().__init__()
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be a qref.nn.Module, got {type(layer).__name__}")
        self.layer = layer
        self.error_bits = _bits(error_bits, "error_bits")
        self.weight_bits = _bits(weight_bits, "weight_bits")
        self.rng = check_rng(rng)

    def extra_repr(self):
        return f"error_bits={self.error_bits}, weight_bits={self.weight_bits}"

    def forward(self, x):
        return self.layer(x)

    def _q(self, g, bits):
        return g if bits is None else quantize_gradient(g, bits=bits, rng=self.rng).astype(g.dtype)

    def backward(self, grad_out):
        g = as_float_array(grad_out, "grad_out")
        params = self.layer.parameters()
        saved = [p.grad.copy() for p in params]
        dx = self.layer.backward(self._q(g, self.error_bits))        # the low-precision copy: the error
        for p, s in zip(params, saved):
            p.grad[...] = s
        self.layer.backward(self._q(g, self.weight_bits))           # the high-precision copy: dL/dW
        return dx


def banner_mlp(hidden=(64,), *, norm="range", bits=8, error_bits=8, weight_bits=16, in_features=64, classes=10,
               rng=0):
    r"""An MLP trained the way of Banner et al.: 8-bit weights and activations, Range BN, bifurcated gradients.

    For ``hidden=(64,)``::

        GradientBifurcation(Linear(64, 64, weight_quantizer=FakeQuantize(bits, symmetric=True)))
        RangeBatchNorm1d(64)        # or L1BatchNorm1d (norm="l1"), BatchNorm1d (norm="batch"), or nothing
        ReLU -> FakeQuantize(bits)
        GradientBifurcation(Linear(64, 10, weight_quantizer=FakeQuantize(bits, symmetric=True)))

    (min-max fake quantization with the straight-through estimator, :class:`qref.nn.FakeQuantize`,
    standing in for GEMMLOWP's 8-bit forward pass).

    Parameters
    ----------
    hidden : sequence of int
    norm : {"range", "l1", "batch", None}
        :class:`RangeBatchNorm1d`, :class:`L1BatchNorm1d` (Wu et al. 2018),
        :class:`qref.nn.BatchNorm1d`, or none.
    bits : int in [2, 16] or None
        Weights and activations (None: float).
    error_bits, weight_bits : int in [2, 16] or None
        Of :class:`GradientBifurcation`.
    in_features, classes : int >= 1
    rng : None, int or numpy.random.Generator

    Returns
    -------
    qref.nn.Sequential

    References
    ----------
    Banner, Hubara, Hoffer, Soudry (2018), NeurIPS, Secs. 4-5.

    Examples
    --------
    >>> net = banner_mlp((16,))
    >>> [type(m).__name__ for m in net.layers]
    ['GradientBifurcation', 'RangeBatchNorm1d', 'ReLU', 'FakeQuantize', 'GradientBifurcation']
    """
    if norm not in ("range", "l1", "batch", None):
        raise ValueError(f"norm must be one of 'range', 'l1', 'batch', None; got {norm!r}")
    bits = _bits(bits, "bits")
    hidden = [check_positive(h, "hidden", integer=True) for h in hidden]
    widths = [check_positive(in_features, "in_features", integer=True), *hidden,
              check_positive(classes, "classes", integer=True)]
    rng = check_rng(rng)
    layers = []
    for i in range(len(widths) - 1):
        wq = None if bits is None else nn.FakeQuantize(bits, symmetric=True)
        lin = nn.Linear(widths[i], widths[i + 1], rng=rng, weight_quantizer=wq)
        layers.append(GradientBifurcation(lin, error_bits=error_bits, weight_bits=weight_bits, rng=rng))
        if i < len(widths) - 2:
            if norm == "range":
                layers.append(RangeBatchNorm1d(widths[i + 1]))
            elif norm == "l1":
                layers.append(L1BatchNorm1d(widths[i + 1]))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(nn.ReLU())
            if bits is not None:
                layers.append(nn.FakeQuantize(bits))
    return nn.Sequential(*layers)
