r"""Quantization-aware training: quantizer layers with surrogate gradients.

Every quantizer here is a :class:`qref.nn.Module`. Its ``forward`` quantizes and stores what
the backward needs; its ``backward`` returns a *surrogate* gradient with respect to the input
and accumulates the gradients of the quantizer's own :class:`~qref.nn.Parameter`\ s (a
learned clip, step size or interval). Put one in a :class:`~qref.nn.Sequential` to quantize
activations, or pass it to :class:`~qref.nn.Linear` as ``weight_quantizer``.

**Why a surrogate.** Rounding is piecewise constant, so its derivative is zero almost
everywhere (and undefined at the jumps): the exact gradient of a loss through a quantizer
carries no information. The *straight-through estimator* (STE; Hinton 2012, Bengio et al.
2013) differentiates as if rounding were the identity. Equivalently, the STE gradient is the
*exact* gradient of a surrogate forward pass in which :math:`\mathrm{round}(z)` is replaced
by :math:`z + \delta` with the offset :math:`\delta = \mathrm{round}(z_0) - z_0` frozen at the
current point :math:`z_0`. Every backward here is that derivative (the tests check it by
finite differences of the surrogate), except PACT, which also drops the offset (see
:class:`PACT`).

**Mask conventions.** Fake quantization clips, and a *clipped* STE passes the gradient only
where the input was not clipped. The frameworks draw the boundary differently:

==================  ======================================================================
``"range"``         qref's default and TensorFlow's ``fake_quant_with_min_max_vars``
                    (documented as ``gradients * (inputs >= min && inputs <= max)``):
                    pass where :math:`S(q_{\min} - Z) \le x \le S(q_{\max} - Z)`, the closed
                    real range of the grid (TensorFlow's *nudged* range, which puts 0 on the
                    grid, is this range).
``"code"``          PyTorch's ``fake_quantize_per_tensor_affine``: pass where
                    :math:`q_{\min} \le \mathrm{round}(x/S) + Z \le q_{\max}` (round half to
                    even, computed as ``x * (1/S)``), i.e. up to half a step *beyond* the
                    range, with ties at exactly half a step decided by round-half-to-even.
``"none"``          the identity STE: pass everywhere.
==================  ======================================================================

The learned quantizers follow their papers: LSQ passes on the open interval
:math:`-Q_N < v/s < Q_P` (its Eq. 3 and the STE), PACT on :math:`0 \le x < \alpha` (its Eq. 3),
QIL inside the open interval :math:`(c - d, c + d)`.

References
----------
Hinton, G. (2012). Neural Networks for Machine Learning. Coursera video lectures.

Bengio, Y., Léonard, N., Courville, A. (2013). Estimating or Propagating Gradients Through
Stochastic Neurons for Conditional Computation. arXiv:1308.3432.

Hubara, I., Courbariaux, M., Soudry, D., El-Yaniv, R., Bengio, Y. (2016/2018). Binarized
Neural Networks (NeurIPS 2016, arXiv:1602.02830); Quantized Neural Networks: Training Neural
Networks with Low Precision Weights and Activations (JMLR 18(187), 2018).

Zhou, S., Wu, Y., Ni, Z., Zhou, X., Wen, H., Zou, Y. (2016). DoReFa-Net: Training Low Bitwidth
Convolutional Neural Networks with Low Bitwidth Gradients. arXiv:1606.06160.

Choi, J., Wang, Z., Venkataramani, S., Chuang, P. I-J., Srinivasan, V., Gopalakrishnan, K.
(2018). PACT: Parameterized Clipping Activation for Quantized Neural Networks.
arXiv:1805.06085.

Jung, S., Son, C., Lee, S., Son, J., Kwak, Y., Han, J.-J., Hwang, S. J., Choi, C. (2019).
Learning to Quantize Deep Networks by Optimizing Quantization Intervals with Task Loss.
CVPR 2019. arXiv:1808.05779.

Esser, S. K., McKinstry, J. L., Bablani, D., Appuswamy, R., Modha, D. S. (2020). Learned Step
Size Quantization. ICLR 2020. arXiv:1902.08153.

Jacob, B., Kligys, S., Chen, B., Zhu, M., Tang, M., Howard, A., Adam, H., Kalenichenko, D.
(2018). Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference. CVPR 2018. arXiv:1712.05877.
"""

from __future__ import annotations

import numpy as np

from . import binary as _binary
from . import intarith as _intarith
from . import rounding as _rounding
from . import uniform as _uniform
from ._validation import (
    as_float_array,
    check_bits,
    check_bool,
    check_choice,
    check_positive,
    check_real,
    check_rng,
)
from .nn import Conv2d, Linear, Module, Parameter, ReLU, Sequential, _col2im, _im2col

__all__ = [
    "MASK_CONVENTIONS",
    "STE_ESTIMATORS",
    "ste_mask",
    "STEQuantizer",
    "FakeQuantizeSTE",
    "SignSTE",
    "quantize_k",
    "DoReFaWeight",
    "DoReFaActivation",
    "DoReFaGradient",
    "PACT",
    "qil_transform",
    "QIL",
    "lsq_levels",
    "lsq_init_step",
    "lsq_grad_scale",
    "LSQ",
    "EMAFakeQuantize",
    "MinMaxFakeQuantize",
    "FoldedLinearBN",
    "FoldedConv2dBN",
    "jacob_mlp",
    "integer_mlp_from_qat",
]

#: The gradient masks of :func:`ste_mask` and :class:`FakeQuantizeSTE` (see the module docstring).
MASK_CONVENTIONS = ("range", "code", "none")
#: The estimators of :class:`STEQuantizer`.
STE_ESTIMATORS = ("identity", "clipped", "hardtanh")


# --------------------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------------------


class _Quantizer(Module):
    """A Module whose backward checks that it follows a forward of the same shape."""

    def _input(self, x, name="x"):
        x = as_float_array(x, name)
        if x.dtype == np.float16:  # computed in float32, like qref.uniform
            x = x.astype(np.float32)
        self._shape = x.shape
        return x

    def _grad(self, grad_out):
        if not hasattr(self, "_shape"):
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        g = as_float_array(grad_out, "grad_out", finite=False)
        if g.shape != self._shape:
            raise ValueError(f"grad_out must have the shape of the forward input {self._shape}, got {g.shape}")
        return g


def _scalar_parameter(value, name):
    """A 0-d float32 Parameter without weight decay (clip levels, steps, intervals)."""
    return Parameter(np.array(value, dtype=np.float32), name=name, decay=False)


def _positive_value(p, what, hint):
    """The value of a 0-d Parameter that must stay > 0 during training (else a clear error)."""
    v = float(p.data)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must stay finite and > 0, got {v!r}; {hint}")
    return v


# --------------------------------------------------------------------------------------
# Straight-through estimators
# --------------------------------------------------------------------------------------


def ste_mask(x, params, *, convention="range"):
    r"""Where the clipped straight-through estimator of uniform fake quantization passes the gradient.

    .. math::

        \text{range:}\quad S(q_{\min} - Z) \le x \le S(q_{\max} - Z), \qquad
        \text{code:}\quad q_{\min} \le \mathrm{round}(x/S) + Z \le q_{\max}

    ``"range"`` is TensorFlow's documented mask and qref's default; ``"code"`` is PyTorch's
    (``torch.fake_quantize_per_tensor_affine``, compared in the tests); ``"none"`` passes
    everywhere (the identity STE of Bengio et al. 2013). The fake-quantization itself is
    Jacob et al. (2018), Sec. 3.

    Parameters
    ----------
    x : array_like of float
        The input of the fake quantizer.
    params : qref.uniform.QuantParams
        Per tensor, per channel or per group.
    convention : {"range", "code", "none"}

    Returns
    -------
    ndarray of bool, shape of ``x``

    Examples
    --------
    >>> from qref.uniform import QuantParams
    >>> p = QuantParams(scale=0.5, zero_point=0, bits=2)           # grid {-1, -0.5, 0, 0.5}
    >>> x = np.array([-1.3, -1.25, -1.0, 0.5, 0.6, 0.75])
    >>> ste_mask(x, p).astype(int)                   # -1 <= x <= 0.5
    array([0, 0, 1, 1, 0, 0])
    >>> ste_mask(x, p, convention="code").astype(int)  # rint(x/S) in [-2, 1]: -2.5 -> -2, 1.5 -> 2
    array([0, 1, 1, 1, 1, 0])
    """
    check_choice(convention, "convention", MASK_CONVENTIONS)
    if not isinstance(params, _uniform.QuantParams):
        raise TypeError(f"params must be a qref.uniform.QuantParams, got {type(params).__name__}")
    x = as_float_array(x, "x")
    if convention == "none":
        return np.ones(x.shape, dtype=bool)
    dt = np.float32 if x.dtype == np.float16 else x.dtype.type
    x = x.astype(dt, copy=False)
    scale, zp = params.broadcast_to(x.shape)
    scale, zp = scale.astype(dt), zp.astype(dt)
    if convention == "range":  # the outputs of fake_quantize at the two end codes, in x's dtype
        lo = (dt(params.qmin) - zp) * scale
        hi = (dt(params.qmax) - zp) * scale
        return (x >= lo) & (x <= hi)
    inv_scale = (1.0 / scale).astype(dt)
    with np.errstate(over="ignore"):
        q = np.rint(x * inv_scale) + zp
    return (q >= params.qmin) & (q <= params.qmax)


class STEQuantizer(_Quantizer):
    r"""Any quantizer function forward, a straight-through estimator backward.

    .. math::

        y = f(x), \qquad
        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\cdot
        \begin{cases} 1 & \text{identity} \\
                      \mathbb 1[\ell \le x \le h] & \text{clipped} \\
                      \mathbb 1[|x| \le 1] & \text{hardtanh} \end{cases}

    The identity STE is Hinton's (2012) and Bengio et al.'s (2013) "straight-through"
    estimator. The clipped one cancels the gradient where the input lies outside the range
    the quantizer represents, as Hubara et al. (2016) do for the sign with
    :math:`g_r = g_q \mathbb 1_{|r| \le 1}` (the derivative of :math:`\mathrm{Htanh}(x) =
    \mathrm{clip}(x, -1, 1)`); ``"hardtanh"`` is that case. The interval is closed (qref's
    ``"range"`` convention).

    Parameters
    ----------
    fn : callable ``fn(x) -> array of x's shape``
        The quantizer, e.g. ``qref.rounding.round``, ``qref.binary.binarize`` or
        ``lambda x: qref.uniform.fake_quantize(x, params)``. Its result is cast to ``x``'s dtype.
    estimator : {"identity", "clipped", "hardtanh"}
    clip : (float, float) or None
        ``(lo, hi)`` of the ``"clipped"`` estimator (required there, refused otherwise).

    Examples
    --------
    >>> from qref import rounding
    >>> q = STEQuantizer(rounding.round, estimator="clipped", clip=(-1.0, 1.0))
    >>> q(np.array([-1.6, -0.4, 0.5, 1.0, 1.2]))
    array([-2., -0.,  0.,  1.,  1.])
    >>> q.backward(np.ones(5))
    array([0., 1., 1., 1., 0.])
    """

    def __init__(self, fn, *, estimator="identity", clip=None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable (the quantizer function), got {type(fn).__name__}")
        self.fn = fn
        self.estimator = check_choice(estimator, "estimator", STE_ESTIMATORS)
        if estimator == "clipped":
            if clip is None:
                raise ValueError("the clipped estimator needs clip=(lo, hi)")
            try:
                lo, hi = clip
            except (TypeError, ValueError):
                raise TypeError(f"clip must be a pair (lo, hi), got {clip!r}") from None
            lo, hi = check_real(lo, "clip[0]"), check_real(hi, "clip[1]")
            if lo >= hi:
                raise ValueError(f"clip must have lo < hi, got ({lo}, {hi})")
            self.clip = (lo, hi)
        elif clip is not None:
            raise ValueError(f"clip is used only by estimator='clipped', got clip={clip!r} with estimator={estimator!r}")
        else:
            self.clip = (-1.0, 1.0) if estimator == "hardtanh" else None

    def extra_repr(self):
        return f"estimator={self.estimator!r}" + (f", clip={self.clip}" if self.estimator == "clipped" else "")

    def forward(self, x):
        x = self._input(x)
        y = np.asarray(self.fn(x))
        if y.shape != x.shape:
            raise ValueError(f"fn must return an array of x's shape {x.shape}, got shape {y.shape}")
        self._x = x
        return y.astype(x.dtype, copy=False)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        if self.clip is None:
            return g.astype(self._x.dtype, copy=True)
        lo, hi = self.clip
        return np.where((self._x >= lo) & (self._x <= hi), g, 0).astype(self._x.dtype, copy=False)


class SignSTE(STEQuantizer):
    r"""Binarization with the hard-tanh straight-through estimator (BinaryNet / BNN).

    .. math::

        q = \mathrm{sign}(r) \in \{-1, +1\}, \qquad g_r = g_q\, \mathbb 1_{|r| \le 1}

    (Hubara et al. 2016: the straight-through estimator cancelled where :math:`|r| > 1`, the
    derivative of :math:`\mathrm{Htanh}`; :math:`\mathrm{sign}(0) = +1` as in
    :func:`qref.binary.binarize`.)

    Examples
    --------
    >>> s = SignSTE()
    >>> s(np.array([-2.0, -0.5, 0.0, 0.7, 1.5])), s.backward(np.ones(5))
    (array([-1., -1.,  1.,  1.,  1.]), array([0., 1., 1., 1., 0.]))
    """

    def __init__(self):
        super().__init__(_binary.binarize, estimator="hardtanh")

    def extra_repr(self):
        return ""


class FakeQuantizeSTE(_Quantizer):
    r"""Uniform fake quantization with fixed parameters and a clipped straight-through estimator.

    .. math::

        \hat x = S\big(\mathrm{clip}(\mathrm{round}(x/S) + Z, q_{\min}, q_{\max}) - Z\big), \qquad
        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial \hat x}\cdot m(x)

    with the forward of :func:`qref.uniform.fake_quantize` (Jacob et al. 2018, Sec. 3) and the
    mask :math:`m` of :func:`ste_mask` (``mask="range"``: TensorFlow's closed real range, the
    default; ``"code"``: PyTorch's; ``"none"``: identity STE). The parameters are fixed;
    :class:`qref.nn.FakeQuantize` recomputes them from each tensor's min and max, and
    :class:`EMAFakeQuantize` tracks them with a moving average.

    Parameters
    ----------
    params : qref.uniform.QuantParams
    mask : {"range", "code", "none"}
    rounding : str
        A mode of :mod:`qref.rounding` for the forward pass.
    rng : None, int or numpy.random.Generator
        For ``rounding="stochastic"``; the layer keeps one generator, so a seeded run repeats.

    Examples
    --------
    >>> from qref.uniform import params_from_range
    >>> fq = FakeQuantizeSTE(params_from_range(0.0, 1.0, bits=2, signed=False))   # grid {0, 1/3, 2/3, 1}
    >>> fq(np.array([-0.1, 0.5, 1.0, 1.1]))
    array([0.        , 0.66666667, 1.        , 1.        ])
    >>> fq.backward(np.ones(4))
    array([0., 1., 1., 0.])
    """

    def __init__(self, params, *, mask="range", rounding="half_even", rng=None):
        super().__init__()
        if not isinstance(params, _uniform.QuantParams):
            raise TypeError(f"params must be a qref.uniform.QuantParams, got {type(params).__name__}")
        self.params = params
        self.mask = check_choice(mask, "mask", MASK_CONVENTIONS)
        self.rounding = check_choice(rounding, "rounding", _rounding.MODES)
        self.rng = check_rng(rng)

    def extra_repr(self):
        return f"bits={self.params.bits}, mask={self.mask!r}"

    def forward(self, x):
        x = self._input(x)
        self._x = x
        return _uniform.fake_quantize(x, self.params, rounding=self.rounding, rng=self.rng)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        m = ste_mask(self._x, self.params, convention=self.mask)
        return np.where(m, g, 0).astype(self._x.dtype, copy=False)


# --------------------------------------------------------------------------------------
# DoReFa-Net
# --------------------------------------------------------------------------------------


def quantize_k(r, *, bits):
    r"""DoReFa's k-bit quantizer of a real number in :math:`[0, 1]`.

    .. math::

        \mathrm{quantize}_k(r) = \frac{1}{2^k - 1}\,\mathrm{round}\big((2^k - 1)\, r\big)

    (Zhou et al. 2016; round half to even). The result has ``r``'s dtype; inputs
    outside :math:`[0, 1]` are rounded on the same grid, not clipped (the callers clip).

    Parameters
    ----------
    r : array_like of float
    bits : int in [1, 16]

    Returns
    -------
    ndarray, shape and dtype of ``r``

    Examples
    --------
    >>> quantize_k(np.array([0.0, 0.2, 0.5, 0.9, 1.0]), bits=2)
    array([0.        , 0.33333333, 0.66666667, 1.        , 1.        ])
    """
    bits = check_bits(bits)
    r = as_float_array(r, "r")
    dt = np.float32 if r.dtype == np.float16 else r.dtype.type  # float16 holds no 2^16 - 1: compute in float32
    n = dt(2**bits - 1)
    return (np.rint(r.astype(dt, copy=False) * n) / n).astype(r.dtype, copy=False)


class DoReFaWeight(_Quantizer):
    r"""DoReFa-Net's k-bit weights: tanh normalization, then :func:`quantize_k` (STE).

    For :math:`k \ge 2` (Zhou et al. 2016, the quantization of weights):

    .. math::

        u = \frac{\tanh(r)}{2\max|\tanh(r)|} + \frac12, \qquad
        r_o = 2\,\mathrm{quantize}_k(u) - 1 \in \Big\{\tfrac{2i}{2^k - 1} - 1\Big\}

    (:math:`2^k` symmetric levels in :math:`[-1, 1]`, no zero level). Backward: straight
    through :math:`\mathrm{quantize}_k`, and the exact chain rule through the normalization,
    including the maximum (its gradient goes to the entry of largest :math:`|\tanh r|`):

    .. math::

        \frac{\partial L}{\partial r_j} = \frac{1 - t_j^2}{M}\,g_j
        - \mathbb 1[j = j^*]\,\mathrm{sign}(t_j)\,(1 - t_j^2)\sum_i \frac{g_i\,t_i}{M^2},
        \quad t = \tanh r,\ M = \max_i |t_i|,\ g = \frac{\partial L}{\partial r_o}

    For :math:`k = 1` the weights are binarized with one scale per tensor, the mean
    magnitude, and the gradient passes straight through (the binary-weight case of the paper):

    .. math::

        r_o = \mathrm{sign}(r)\,\mathbb E|r|, \qquad \frac{\partial L}{\partial r} = \frac{\partial L}{\partial r_o}

    (:math:`\mathrm{sign}(0) = +1`; the scale is treated as a constant in the backward pass).
    An all-zero tensor is returned as zeros, with an identity gradient.

    Parameters
    ----------
    bits : int in [1, 16]

    Examples
    --------
    >>> q = DoReFaWeight(2)
    >>> q(np.array([-1.0, -0.1, 0.2, 2.0]))
    array([-1.        , -0.33333333,  0.33333333,  1.        ])
    >>> q1 = DoReFaWeight(1)
    >>> q1(np.array([-1.0, 0.5, 0.5]))         # sign times E|r| = 2/3
    array([-0.66666667,  0.66666667,  0.66666667])
    """

    def __init__(self, bits):
        super().__init__()
        self.bits = check_bits(bits)

    def extra_repr(self):
        return f"bits={self.bits}"

    def forward(self, w):
        w = self._input(w, "w")
        self._zero = w.size == 0 or not np.any(w)
        if self._zero:
            return np.zeros_like(w)
        if self.bits == 1:
            return (_binary.binarize(w) * np.abs(w).mean(dtype=np.float64)).astype(w.dtype)
        t = np.tanh(w)
        absmax = np.abs(t)
        self._jmax = int(np.argmax(absmax))
        self._t, self._m = t, absmax.flat[self._jmax]
        u = t / (2 * self._m) + w.dtype.type(0.5)
        return (2 * quantize_k(u, bits=self.bits) - 1).astype(w.dtype, copy=False)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        if self._zero or self.bits == 1:
            return g.copy()
        t, m, j = self._t, self._m, self._jmax
        # d r_o / d u = 2 (STE through quantize_k); d u / d t_i = 1 / (2M); d u_i / d M = -t_i / (2 M^2)
        grad = g * (1 - t * t) / m
        dm = -np.sum(g * t) / (m * m)                         # dL/dM
        grad.flat[j] += dm * np.sign(t.flat[j]) * (1 - t.flat[j] ** 2)
        return grad.astype(t.dtype, copy=False)


class DoReFaActivation(_Quantizer):
    r"""DoReFa-Net's k-bit activations: clip to :math:`[0, 1]`, then :func:`quantize_k` (STE).

    .. math::

        r_o = \mathrm{quantize}_k\big(\mathrm{clip}(r, 0, 1)\big), \qquad
        \frac{\partial L}{\partial r} = \frac{\partial L}{\partial r_o}\,\mathbb 1[0 \le r \le 1]

    (Zhou et al. 2016: activations are bounded to :math:`[0, 1]` before they are
    quantized; the clip's gradient on the closed interval, qref's ``"range"`` convention).

    Parameters
    ----------
    bits : int in [1, 16]

    Examples
    --------
    >>> a = DoReFaActivation(2)
    >>> a(np.array([-0.5, 0.3, 0.5, 1.0, 3.0])), a.backward(np.ones(5))
    (array([0.        , 0.33333333, 0.66666667, 1.        , 1.        ]), array([0., 1., 1., 1., 0.]))
    """

    def __init__(self, bits):
        super().__init__()
        self.bits = check_bits(bits)

    def extra_repr(self):
        return f"bits={self.bits}"

    def forward(self, x):
        x = self._input(x)
        self._mask = (x >= 0) & (x <= 1)
        return quantize_k(np.clip(x, 0, 1), bits=self.bits)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        return np.where(self._mask, g, 0).astype(g.dtype, copy=False)


class DoReFaGradient(_Quantizer):
    r"""Identity forward; DoReFa-Net's stochastic k-bit quantization of the gradient backward.

    .. math::

        \tilde f^{k}_\gamma(dr) = 2\max_0|dr|\Big[\mathrm{quantize}_k\Big(\frac{dr}{2\max_0|dr|}
        + \frac12 + N(k)\Big) - \frac12\Big], \qquad N(k) = \frac{\sigma}{2^k - 1},\
        \sigma \sim \mathrm{Uniform}(-\tfrac12, \tfrac12)

    (Zhou et al. 2016, the quantization of gradients). :math:`\max_0` is taken over every axis but the first (the
    minibatch), so each example has its own scale. Noise of one quantization step added before
    rounding is stochastic rounding: the quantized gradient is *unbiased*,
    :math:`\mathbb E[\tilde f^k_\gamma(dr)] = dr`. The argument of :math:`\mathrm{quantize}_k`
    is clipped to :math:`[0, 1]` (it leaves it only when a tie is rounded outwards, a
    probability-zero event). Examples whose gradient is all zero stay zero.

    Place it right after a layer (e.g. after each :class:`~qref.nn.Linear`), so that the
    gradient that layer backpropagates, and multiplies into its weight gradient, is the
    quantized one.

    Parameters
    ----------
    bits : int in [1, 16]
    rng : None, int or numpy.random.Generator
        The noise; the layer keeps one generator, so a seeded training run repeats exactly.
    noise : bool
        Add :math:`N(k)` (the paper's rule). ``False`` rounds to nearest instead: deterministic
        and biased (small gradients are rounded away), for comparison.

    Examples
    --------
    >>> q = DoReFaGradient(2, rng=0)
    >>> x = np.zeros((1, 4))
    >>> q(x) is x
    True
    >>> q.backward(np.array([[-0.3, 0.0, 0.1, 0.3]]))   # levels -0.3, -0.1, 0.1, 0.3
    array([[-0.3, -0.1,  0.1,  0.3]])
    """

    def __init__(self, bits, *, rng=None, noise=True):
        super().__init__()
        self.bits = check_bits(bits)
        self.rng = check_rng(rng)
        self.noise = check_bool(noise, "noise")

    def extra_repr(self):
        return f"bits={self.bits}" + ("" if self.noise else ", noise=False")

    def forward(self, x):
        self._input(x)
        return x

    def backward(self, grad_out):
        g = self._grad(grad_out)
        dt = np.float32 if g.dtype == np.float16 else g.dtype
        g = g.astype(dt, copy=False)
        if g.ndim == 0:
            raise ValueError("DoReFaGradient needs a batch axis (grad_out is 0-d)")
        if g.size == 0:  # an empty batch (or empty features): nothing to quantize
            return g.copy()
        n = 2**self.bits - 1
        m = np.abs(g).reshape(len(g), -1).max(axis=1, initial=0.0).reshape((-1,) + (1,) * (g.ndim - 1))
        safe = np.where(m > 0, m, 1).astype(dt)
        noise = (self.rng.random(g.shape) - 0.5) / n if self.noise else 0.0   # N(k) = sigma / (2^k - 1)
        u = np.clip(g / (2 * safe) + 0.5 + noise, 0, 1)
        return np.where(m > 0, 2 * safe * (np.rint(u * n) / n - 0.5), 0).astype(dt)


# --------------------------------------------------------------------------------------
# PACT
# --------------------------------------------------------------------------------------


class PACT(_Quantizer):
    r"""PACT: an activation clipped at a learned level :math:`\alpha`, then quantized to k bits.

    .. math::

        y = \tfrac12\big(|x| - |x - \alpha| + \alpha\big) = \mathrm{clip}(x, 0, \alpha), \qquad
        y_q = \mathrm{round}\Big(y\,\frac{2^k - 1}{\alpha}\Big)\frac{\alpha}{2^k - 1}

    (Choi et al. 2018, Eqs. 1-2). Backward, with the STE :math:`\partial y_q/\partial y = 1`
    (their Eq. 3):

    .. math::

        \frac{\partial y_q}{\partial \alpha} = \begin{cases} 1 & x \ge \alpha \\ 0 & x < \alpha\end{cases},
        \qquad \frac{\partial y_q}{\partial x} = \mathbb 1[0 \le x < \alpha]

    PACT treats :math:`y_q` as :math:`y`, so below the clip the step's dependence on
    :math:`\alpha` is ignored (LSQ keeps it). The L2 regularizer on :math:`\alpha` of the
    paper, :math:`\tfrac{\lambda_\alpha}{2}\alpha^2`, adds :math:`\lambda_\alpha\alpha` to the
    gradient in every backward (``alpha_decay``); :math:`\alpha` is a Parameter with
    ``decay=False``, so an optimizer's weight decay does not apply to it a second time.

    Parameters
    ----------
    bits : int in [1, 16]
        :math:`k`.
    alpha : float > 0
        Initial clipping level.
    alpha_decay : float >= 0
        :math:`\lambda_\alpha`.

    Attributes
    ----------
    alpha : Parameter, shape ()

    Raises
    ------
    ValueError
        In ``forward`` if training has driven :math:`\alpha` to zero or below.

    Examples
    --------
    >>> p = PACT(2, alpha=3.0)                       # levels 0, 1, 2, 3
    >>> p(np.array([-1.0, 0.4, 1.6, 3.0, 5.0]))
    array([0., 0., 2., 3., 3.])
    >>> p.backward(np.ones(5)), float(p.alpha.grad)   # x >= alpha: gradient goes to alpha
    (array([0., 1., 1., 0., 0.]), 2.0)
    """

    def __init__(self, bits, *, alpha=10.0, alpha_decay=0.0):
        super().__init__()
        self.bits = check_bits(bits)
        self.alpha = _scalar_parameter(check_positive(alpha, "alpha"), "alpha")
        self.alpha_decay = check_real(alpha_decay, "alpha_decay")
        if self.alpha_decay < 0:
            raise ValueError(f"alpha_decay must be >= 0, got {alpha_decay}")

    def extra_repr(self):
        return f"bits={self.bits}, alpha={float(self.alpha.data):.4g}"

    def forward(self, x):
        x = self._input(x)
        a = x.dtype.type(_positive_value(self.alpha, "PACT's alpha", "lower the learning rate or add alpha_decay"))
        n = x.dtype.type(2**self.bits - 1)
        self._x, self._a = x, a
        y = np.clip(x, 0, a)
        return (np.rint(y * (n / a)) * (a / n)).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        x, a = self._x, self._a
        self.alpha.grad += np.sum(g * (x >= a), dtype=np.float64) + self.alpha_decay * float(a)
        return np.where((x >= 0) & (x < a), g, 0).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------
# QIL
# --------------------------------------------------------------------------------------


def qil_transform(x, *, center, distance, gamma=1.0, kind="weight"):
    r"""QIL's transformer: the learned interval :math:`[c - d, c + d]` mapped onto :math:`[0, 1]`.

    For weights (Jung et al. 2019, Sec. 3):

    .. math::

        \hat w = \begin{cases} 0 & |w| < c - d \\ \mathrm{sign}(w) & |w| > c + d \\
        (\alpha|w| + \beta)^\gamma\,\mathrm{sign}(w) & \text{otherwise}\end{cases},
        \qquad \alpha = \frac{0.5}{d},\ \beta = -\frac{0.5\,c}{d} + 0.5,

    small weights are pruned, large ones clipped, and :math:`\gamma` bends the map in between.
    For activations (:math:`\gamma = 1`, no sign): :math:`\hat x = \mathrm{clip}(\alpha x +
    \beta, 0, 1)`. Both are written :math:`u^\gamma` with :math:`u = \mathrm{clip}(\alpha|x| +
    \beta, 0, 1)`, which is differentiable in :math:`x, c, d, \gamma` inside the interval.

    Parameters
    ----------
    x : array_like of float
    center, distance : float
        :math:`c` and :math:`d > 0`.
    gamma : float > 0
        Only for weights (must be 1 for activations).
    kind : {"weight", "activation"}

    Returns
    -------
    ndarray, shape and dtype of ``x``; in :math:`[-1, 1]` (weights) or :math:`[0, 1]` (activations)

    Examples
    --------
    >>> qil_transform(np.array([-2.0, -0.6, 0.1, 0.6, 2.0]), center=0.6, distance=0.4)
    array([-1. , -0.5,  0. ,  0.5,  1. ])
    >>> qil_transform(np.array([-1.0, 0.5, 1.0]), center=0.5, distance=0.5, kind="activation")
    array([0. , 0.5, 1. ])
    """
    check_choice(kind, "kind", ("weight", "activation"))
    x = as_float_array(x, "x")
    c = check_real(center, "center")
    d = check_positive(distance, "distance")
    gamma = check_positive(gamma, "gamma")
    if kind == "activation" and gamma != 1:
        raise ValueError(f"gamma must be 1 for activations (QIL learns it for weights only), got {gamma}")
    return _qil_u(x, c, d, gamma, kind)[0]


def _qil_u(x, c, d, gamma, kind):
    """QIL's transform and its pieces: (x_hat, u, magnitude, sign) in x's dtype."""
    dt = x.dtype.type
    if kind == "weight":
        mag, sgn = np.abs(x), np.sign(x)
    else:
        mag, sgn = x, np.ones_like(x)
    u = np.clip((mag - dt(c) + dt(d)) / dt(2 * d), 0, 1)
    t = u if gamma == 1 else u ** dt(gamma)
    return (sgn * t).astype(x.dtype, copy=False), u, mag, sgn


class QIL(_Quantizer):
    r"""QIL: a learned quantization interval (center :math:`c`, distance :math:`d`), transformer plus discretizer.

    Forward: :func:`qil_transform` maps the interval onto :math:`[0, 1]` (with sign for weights,
    bent by a learned :math:`\gamma`), and the discretizer rounds onto :math:`q_D` steps
    (Jung et al. 2019, Sec. 3):

    .. math::

        \bar x = \frac{\mathrm{round}(q_D\,\hat x)}{q_D}, \qquad
        q_D = 2^{N-1} - 1 \text{ (weights, signed levels in } [-1, 1]), \quad
        q_D = 2^{N} - 1 \text{ (activations, levels in } [0, 1]).

    The output is *not* rescaled to the interval: weights live in :math:`[-1, 1]` and
    activations in :math:`[0, 1]` (the following layer absorbs the scale). Backward: STE
    through the discretizer, chain rule through the transformer. With
    :math:`u = (|x| - c + d)/(2d)` strictly inside :math:`(0, 1)` (the open interval
    :math:`c - d < |x| < c + d`; gradients are zero outside) and :math:`s = \mathrm{sign}(x)`
    (1 for activations):

    .. math::

        \frac{\partial \bar x}{\partial x} = \frac{\gamma u^{\gamma - 1}}{2d},\quad
        \frac{\partial \bar x}{\partial c} = -s\,\frac{\gamma u^{\gamma - 1}}{2d},\quad
        \frac{\partial \bar x}{\partial d} = s\,\gamma u^{\gamma - 1}\,\frac{c - |x|}{2d^2},\quad
        \frac{\partial \bar x}{\partial \gamma} = s\,u^\gamma \ln u .

    Parameters
    ----------
    bits : int
        :math:`N`; in [2, 16] for weights, [1, 16] for activations.
    kind : {"weight", "activation"}
    center, distance : float or None
        Initial :math:`c` and :math:`d > 0`. ``None`` (both) initializes them from the first
        tensor seen, to the interval :math:`[0, \max|x|]` (no pruning, no clipping):
        :math:`c = d = \max|x|/2`.
    gamma : float > 0
        Initial :math:`\gamma` (weights only).
    learn_gamma : bool or None
        Learn :math:`\gamma` (default: True for weights; activations use :math:`\gamma = 1`).

    Attributes
    ----------
    center, distance : Parameter, shape ()
    gamma : Parameter, shape (), or None

    Examples
    --------
    >>> q = QIL(3, center=0.6, distance=0.4)          # q_D = 3: levels k/3, k = -3..3
    >>> q(np.array([-2.0, -0.7, 0.1, 0.65, 2.0]))
    array([-1.        , -0.66666667,  0.        ,  0.66666667,  1.        ])
    """

    def __init__(self, bits, *, kind="weight", center=None, distance=None, gamma=1.0, learn_gamma=None):
        super().__init__()
        self.kind = check_choice(kind, "kind", ("weight", "activation"))
        self.bits = check_bits(bits, low=2 if kind == "weight" else 1)
        self.q_d = 2 ** (self.bits - 1) - 1 if kind == "weight" else 2**self.bits - 1
        if (center is None) != (distance is None):
            raise ValueError("center and distance must be given together (or both None, to initialize from data)")
        if center is not None:
            check_real(center, "center")
            check_positive(distance, "distance")
        self.center = _scalar_parameter(0.0 if center is None else center, "center")
        self.distance = _scalar_parameter(1.0 if distance is None else distance, "distance")
        self.initialized = center is not None
        gamma = check_positive(gamma, "gamma")
        learn_gamma = (kind == "weight") if learn_gamma is None else check_bool(learn_gamma, "learn_gamma")
        if kind == "activation" and (learn_gamma or gamma != 1):
            raise ValueError("QIL's gamma is for weights only: activations use gamma = 1 (learn_gamma=False)")
        self.gamma = _scalar_parameter(gamma, "gamma") if learn_gamma else None
        self._gamma_fixed = gamma

    def extra_repr(self):
        return f"bits={self.bits}, kind={self.kind!r}"

    def forward(self, x):
        x = self._input(x)
        if not self.initialized:
            m = float(np.max(np.abs(x))) if x.size else 0.0
            if m == 0:
                raise ValueError("cannot initialize QIL's interval from an all-zero tensor; pass center= and distance=")
            self.center.data[...] = m / 2
            self.distance.data[...] = m / 2
            self.initialized = True
        c = float(self.center.data)
        d = _positive_value(self.distance, "QIL's distance", "lower the learning rate")
        gamma = self._gamma_fixed if self.gamma is None else _positive_value(self.gamma, "QIL's gamma", "lower the learning rate")
        x_hat, u, mag, sgn = _qil_u(x, c, d, gamma, self.kind)
        self._cache = (x, u, mag, sgn, c, d, gamma)
        q = x.dtype.type(self.q_d)
        return (np.rint(x_hat * q) / q).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        x, u, mag, sgn, c, d, gamma = self._cache
        inside = (u > 0) & (u < 1) & (sgn != 0)
        us = np.where(inside, u, 1)                              # safe base for powers and logs
        dxhat_du = np.where(inside, gamma * us ** (gamma - 1), 0) * sgn   # d x_hat / d u
        gu = g * dxhat_du
        self.center.grad += -np.sum(gu, dtype=np.float64) / (2 * d)
        self.distance.grad += np.sum(gu * (c - mag), dtype=np.float64) / (2 * d * d)
        if self.gamma is not None:
            self.gamma.grad += np.sum(np.where(inside, g * sgn * us**gamma * np.log(us), 0), dtype=np.float64)
        # d u / d x = sign(x) / (2d) for weights (|x|), 1 / (2d) for activations: sgn * sgn = 1
        return (gu * sgn / (2 * d)).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------
# LSQ
# --------------------------------------------------------------------------------------


def lsq_levels(bits, *, signed):
    r"""LSQ's code range :math:`(Q_N, Q_P)`: the codes are :math:`-Q_N, \dots, Q_P`.

    Unsigned: :math:`Q_N = 0,\ Q_P = 2^b - 1`; signed: :math:`Q_N = 2^{b-1},\ Q_P = 2^{b-1} - 1`
    (Esser et al. 2020, Sec. 2).

    Examples
    --------
    >>> lsq_levels(2, signed=True), lsq_levels(2, signed=False)
    ((2, 1), (0, 3))
    """
    signed = check_bool(signed, "signed")
    bits = check_bits(bits, low=2 if signed else 1)
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def lsq_init_step(v, *, bits, signed):
    r"""LSQ's initial step size :math:`s_0 = 2\langle|v|\rangle / \sqrt{Q_P}`.

    Computed on the initial weights or the first batch of activations (Esser et al. 2020,
    Sec. 2).

    Parameters
    ----------
    v : array_like of float, not all zero
    bits : int
    signed : bool

    Returns
    -------
    float > 0

    Examples
    --------
    >>> lsq_init_step(np.array([-1.0, 0.5, 0.5, 2.0]), bits=3, signed=True)   # 2 * 1 / sqrt(3)
    1.1547005383792517
    """
    _, q_p = lsq_levels(bits, signed=signed)
    v = as_float_array(v, "v", allow_empty=False)
    m = float(np.mean(np.abs(v), dtype=np.float64))
    if m == 0:
        raise ValueError("v must not be all zeros: LSQ's initial step 2 mean|v| / sqrt(Q_P) would be 0")
    return 2 * m / float(np.sqrt(q_p))


def lsq_grad_scale(n, *, bits, signed):
    r"""LSQ's step-size gradient scale :math:`g = 1/\sqrt{N Q_P}`.

    :math:`N` is the number of weights of the layer (:math:`N_W`) or the number of features of
    one example of the activation (:math:`N_F`) (Esser et al. 2020, Sec. 2, "step size gradient scale").

    Examples
    --------
    >>> lsq_grad_scale(4096, bits=2, signed=False)            # 1 / sqrt(4096 * 3)
    0.009021097956087904
    """
    n = check_positive(n, "n", integer=True)
    _, q_p = lsq_levels(bits, signed=signed)
    return 1.0 / float(np.sqrt(n * q_p))


class LSQ(_Quantizer):
    r"""Learned Step Size Quantization: a uniform quantizer whose step :math:`s` is trained.

    .. math::

        \bar v = \big\lfloor \mathrm{clip}(v/s, -Q_N, Q_P) \big\rceil, \qquad \hat v = \bar v\, s

    (Esser et al. 2020, Eqs. 1-2; :math:`\lfloor\cdot\rceil` rounds half to even). Backward
    (their Eq. 3, and the STE for :math:`v`), with the step's gradient multiplied by the
    gradient scale :math:`g` (Sec. 2):

    .. math::

        \frac{\partial \hat v}{\partial s} = \begin{cases}
            -v/s + \lfloor v/s \rceil & -Q_N < v/s < Q_P \\ -Q_N & v/s \le -Q_N \\ Q_P & v/s \ge Q_P
        \end{cases}, \qquad
        \frac{\partial \hat v}{\partial v} = \mathbb 1[-Q_N < v/s < Q_P].

    The step gradient depends on how close :math:`v` is to a transition point between two
    levels, unlike PACT's (zero below the clip) and QIL's.

    Parameters
    ----------
    bits : int
        In [2, 16] signed, [1, 16] unsigned.
    kind : {"activation", "weight"}
        Decides :math:`N` of the gradient scale: every element (weights, :math:`N_W`) or the
        elements of one example (activations, :math:`N_F` = size / batch).
    signed : bool or None
        Default: signed for weights, unsigned for activations (after a ReLU).
    step : float > 0 or None
        Initial step; ``None`` initializes it with :func:`lsq_init_step` from the first tensor seen.
    grad_scale : "auto", None or float > 0
        ``"auto"``: :math:`g = 1/\sqrt{N Q_P}` (:func:`lsq_grad_scale`); ``None``: 1 (no scaling).

    Attributes
    ----------
    step : Parameter, shape ()
    step_grad_scale : float
        The factor :math:`g` applied to the step's gradient in the last forward pass.

    Examples
    --------
    >>> q = LSQ(2, kind="activation", step=1.0, grad_scale=None)     # Q_N = 0, Q_P = 3
    >>> v = np.array([[-0.5, 0.4, 0.6, 2.4, 3.5]])
    >>> q(v)
    array([[0., 0., 1., 2., 3.]])
    >>> q.backward(np.ones_like(v)), round(float(q.step.grad), 6)   # 0 - 0.4 + 0.4 - 0.4 + 3
    (array([[0., 1., 1., 1., 0.]]), 2.6)
    """

    def __init__(self, bits, *, kind="activation", signed=None, step=None, grad_scale="auto"):
        super().__init__()
        self.kind = check_choice(kind, "kind", ("activation", "weight"))
        self.signed = (kind == "weight") if signed is None else check_bool(signed, "signed")
        self.bits = check_bits(bits, low=2 if self.signed else 1)
        self.q_n, self.q_p = lsq_levels(self.bits, signed=self.signed)
        if step is not None:
            check_positive(step, "step")
        self.step = _scalar_parameter(1.0 if step is None else step, "step")
        self.initialized = step is not None
        if isinstance(grad_scale, str):
            check_choice(grad_scale, "grad_scale", ("auto",))
        elif grad_scale is not None:
            grad_scale = check_positive(grad_scale, "grad_scale")
        self.grad_scale = grad_scale

    def extra_repr(self):
        return f"bits={self.bits}, kind={self.kind!r}, signed={self.signed}, step={float(self.step.data):.4g}"

    def _n(self, v):
        if self.kind == "weight" or v.ndim < 2:
            return v.size
        return v.size // v.shape[0]

    def forward(self, v):
        v = self._input(v, "v")
        if not self.initialized:
            self.step.data[...] = lsq_init_step(v, bits=self.bits, signed=self.signed)
            self.initialized = True
        s = _positive_value(self.step, "LSQ's step", "lower the learning rate")
        if self.grad_scale == "auto":
            self.step_grad_scale = lsq_grad_scale(max(self._n(v), 1), bits=self.bits, signed=self.signed)
        else:
            self.step_grad_scale = 1.0 if self.grad_scale is None else float(self.grad_scale)
        dt = v.dtype.type
        z = v / dt(s)
        self._z = z
        self._zbar = np.rint(np.clip(z, -self.q_n, self.q_p))
        return (self._zbar * dt(s)).astype(v.dtype, copy=False)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        z, zbar = self._z, self._zbar
        inside = (z > -self.q_n) & (z < self.q_p)
        dvhat_ds = np.where(inside, zbar - z, np.where(z <= -self.q_n, -self.q_n, self.q_p))
        self.step.grad += self.step_grad_scale * np.sum(g * dvhat_ds, dtype=np.float64)
        return np.where(inside, g, 0).astype(z.dtype, copy=False)


# --------------------------------------------------------------------------------------
# Jacob et al. 2018: EMA ranges and batch-norm folding
# --------------------------------------------------------------------------------------


class EMAFakeQuantize(_Quantizer):
    r"""Activation fake quantization with a range tracked by an exponential moving average.

    In training mode each batch's :math:`[\min x, \max x]` updates the range,

    .. math::

        a \leftarrow \lambda a + (1 - \lambda)\min x, \qquad b \leftarrow \lambda b + (1 - \lambda)\max x

    (the first batch sets it), and :math:`x` is fake-quantized with
    :func:`qref.uniform.params_from_range` of :math:`[a, b]` (asymmetric; the range widened to
    contain 0, which then lies exactly on the grid). In evaluation mode the stored range is
    used unchanged (Jacob et al. 2018, Sec. 3.1: activation ranges "aggregated via exponential
    moving averages"). Backward: clipped STE with the mask ``mask`` of :func:`ste_mask`.

    Parameters
    ----------
    bits : int in [1, 16]
    decay : float in [0, 1)
        :math:`\lambda`.
    signed : bool
        Signed codes (as :class:`qref.intarith.IntegerMLP` stores them) or unsigned; the
        fake-quantized values are the same.
    mask : {"range", "code", "none"}

    Attributes
    ----------
    range : (float, float) or None
        The tracked :math:`(a, b)`.
    params : qref.uniform.QuantParams (after the first training forward)

    Examples
    --------
    >>> q = EMAFakeQuantize(8, decay=0.5)
    >>> _ = q(np.array([[0.0, 1.0]])); _ = q(np.array([[0.0, 3.0]]))
    >>> q.range
    (0.0, 2.0)
    """

    def __init__(self, bits=8, *, decay=0.99, signed=True, mask="range"):
        super().__init__()
        self.bits, self.signed = check_bits(bits), check_bool(signed, "signed")
        self.decay = check_real(decay, "decay")
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.mask = check_choice(mask, "mask", MASK_CONVENTIONS)
        self.range = None

    def extra_repr(self):
        return f"bits={self.bits}, decay={self.decay}"

    @property
    def params(self):
        """The quantizer of the current range (raises before the first training forward)."""
        if self.range is None:
            raise RuntimeError("EMAFakeQuantize has no range yet: run a forward pass in training mode first")
        return _uniform.params_from_range(*self.range, bits=self.bits, signed=self.signed)

    def forward(self, x):
        x = self._input(x)
        if self.training and x.size:
            lo, hi = float(x.min()), float(x.max())
            if self.range is None:
                self.range = (lo, hi)
            else:
                a, b = self.range
                lam = self.decay
                self.range = (lam * a + (1 - lam) * lo, lam * b + (1 - lam) * hi)
        self._params = self.params
        self._x = x
        return _uniform.fake_quantize(x, self._params)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        return np.where(ste_mask(self._x, self._params, convention=self.mask), g, 0).astype(self._x.dtype, copy=False)


def _weight_params(w, bits):
    """Jacob et al.'s weight quantizer: per tensor, symmetric, narrow range (zero point 0)."""
    return _uniform.params_from_data(w, bits=bits, symmetric=True, narrow_range=True)


class MinMaxFakeQuantize(_Quantizer):
    r"""Weight fake quantization with the range taken from the weights at every step.

    :math:`[a, b] = [-\max|w|, \max|w|]`, symmetric, narrow range (codes
    :math:`-(2^{b-1}-1), \dots, 2^{b-1}-1`, zero point 0), per tensor (Jacob et al. 2018,
    Sec. 3.1 uses the weights' min and max; symmetric narrow-range weights are what
    :mod:`qref.intarith` deploys). Backward: the identity inside the range, which here is
    every weight (``"range"`` mask).

    Parameters
    ----------
    bits : int in [2, 16]

    Examples
    --------
    >>> q = MinMaxFakeQuantize(3)                     # codes -3..3, step max|w| / 3
    >>> q(np.array([-0.9, 0.1, 0.2, 0.6]))
    array([-0.9,  0. ,  0.3,  0.6])
    """

    def __init__(self, bits=8):
        super().__init__()
        self.bits = check_bits(bits, low=2)

    def extra_repr(self):
        return f"bits={self.bits}"

    def forward(self, w):
        w = self._input(w, "w")
        self._x, self._params = w, _weight_params(w, self.bits)
        return _uniform.fake_quantize(w, self._params)

    def backward(self, grad_out):
        g = self._grad(grad_out)
        return np.where(ste_mask(self._x, self._params), g, 0).astype(self._x.dtype, copy=False)


class _FoldedBN(Module):
    r"""Batch norm folded into fake-quantized weights: the math :class:`FoldedLinearBN` and
    :class:`FoldedConv2dBN` share (see :class:`FoldedLinearBN` for the formulas).

    It works on *rows*: ``x2d`` of shape (m, K) and the weight as an (out, K) matrix, so that
    :math:`y_0 = x_\mathrm{2d} W^\top` has one column per output channel and the batch
    statistics of a channel are over the m rows of its column. For a linear layer the rows are
    the examples; for a convolution they are the im2col patches, one per example and output
    pixel, so the statistics are over :math:`(n, H_\mathrm{out}, W_\mathrm{out})`, as in
    :class:`qref.nn.BatchNorm2d`. A subclass sets ``weight`` and calls :meth:`_init_bn`.
    """

    _buffers = ("running_mean", "running_var")
    _rows = "examples per batch"  #: what the rows are, for the error message

    def _init_bn(self, out_channels, bits, momentum, eps):
        self.gamma = Parameter(np.ones(out_channels, np.float32), name="gamma", decay=False)
        self.beta = Parameter(np.zeros(out_channels, np.float32), name="beta", decay=False)
        self.running_mean = np.zeros(out_channels, np.float32)
        self.running_var = np.ones(out_channels, np.float32)
        self.bits = check_bits(bits, low=2)
        self.momentum = check_real(momentum, "momentum")
        if not 0 < self.momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.eps = check_positive(eps, "eps")

    def folded(self):
        """The folded weights and bias with the running statistics: ``(w_fold, b_fold)``."""
        return _intarith.fold_batch_norm(self.weight.data, None, self.gamma.data, self.beta.data,
                                         self.running_mean, self.running_var, eps=self.eps)

    def _fold_forward(self, x, W):
        """``x @ FQ(W_fold).T + b_fold`` for rows ``x`` (m, K) and the weight matrix ``W`` (out, K)."""
        W = W.astype(x.dtype, copy=False)
        if self.training:
            if len(x) < 2:
                raise ValueError(f"batch normalization in training mode needs at least 2 {self._rows}")
            y0 = x @ W.T
            mu, var = y0.mean(axis=0), y0.var(axis=0)
            n = len(x)
            m = self.momentum
            self.running_mean = ((1 - m) * self.running_mean + m * mu).astype(self.running_mean.dtype)
            self.running_var = ((1 - m) * self.running_var + m * var * n / (n - 1)).astype(self.running_var.dtype)
            w_fold, b_fold = _intarith.fold_batch_norm(W, None, self.gamma.data, self.beta.data, mu, var, eps=self.eps)
            sigma = np.sqrt(var.astype(np.float64) + self.eps)
            self._yhat = ((y0 - mu) / sigma).astype(x.dtype)
            self._sigma = sigma
        else:
            w_fold, b_fold = _intarith.fold_batch_norm(W, None, self.gamma.data, self.beta.data,
                                                       self.running_mean, self.running_var, eps=self.eps)
            self._sigma = np.sqrt(self.running_var.astype(np.float64) + self.eps)
            self._yhat = ((x @ W.T - self.running_mean) / self._sigma).astype(x.dtype)
        w_hat = _uniform.fake_quantize(w_fold, _weight_params(w_fold, self.bits))
        self._x, self._W, self._delta, self._train = x, W, w_hat - w_fold, self.training
        return (x @ w_hat.T + b_fold).astype(x.dtype, copy=False)

    def _fold_backward(self, g):
        """Gradients for rows: accumulate gamma's and beta's, return ``(dL/dW, dL/dx)`` as matrices."""
        x, W, yhat = self._x, self._W, self._yhat
        k = (self.gamma.data / self._sigma).astype(x.dtype)
        self.beta.grad += g.sum(axis=0)
        self.gamma.grad += (g * yhat).sum(axis=0)
        if self._train:
            n = len(g)
            dy0 = k / n * (n * g - g.sum(axis=0) - yhat * (g * yhat).sum(axis=0))
        else:  # running statistics are constants
            dy0 = k * g
        return dy0.T @ x, (dy0 @ W + g @ self._delta).astype(x.dtype, copy=False)


class FoldedLinearBN(_FoldedBN):
    r"""A linear layer followed by batch normalization, trained *folded* and fake-quantized.

    The quantization-aware training graph of Jacob et al. (2018), Sec. 3.2 and Fig. C.8.
    In training mode the batch statistics :math:`\mu_B, \sigma_B^2` of :math:`y_0 = x W^\top`
    are computed first, the batch norm is folded into the weights and bias
    (:func:`qref.intarith.fold_batch_norm`), the folded weights are fake-quantized, and the
    layer computes

    .. math::

        W_\mathrm{fold} = \frac{\gamma}{\sqrt{\sigma_B^2 + \varepsilon}}\,W, \quad
        b_\mathrm{fold} = \beta - \frac{\gamma\,\mu_B}{\sqrt{\sigma_B^2 + \varepsilon}}, \quad
        y = x\,\hat W_\mathrm{fold}^\top + b_\mathrm{fold},\ \ \hat W_\mathrm{fold} = \mathrm{FQ}(W_\mathrm{fold}),

    so training sees the very weights the integer model will use. The running statistics
    (momentum update, unbiased variance, as PyTorch) replace the batch ones in evaluation mode.
    Backward: STE through :math:`\mathrm{FQ}` (the residual :math:`\delta = \hat W_\mathrm{fold}
    - W_\mathrm{fold}` held fixed), exact through the statistics. Then :math:`y =
    \mathrm{BN}(y_0) + x\delta^\top`, whose gradient is the batch-norm backward plus
    :math:`g\,\delta`:

    .. math::

        \frac{\partial L}{\partial y_0} = \frac{k}{n}\Big(n g - \sum_n g - \hat y \sum_n g\,\hat y\Big),\quad
        \frac{\partial L}{\partial W} = \Big(\frac{\partial L}{\partial y_0}\Big)^{\!\top} x,\quad
        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y_0} W + g\,\delta,

    with :math:`k = \gamma/\sqrt{\sigma_B^2 + \varepsilon}`, :math:`\hat y = (y_0 - \mu_B)/
    \sqrt{\sigma_B^2+\varepsilon}`, :math:`\partial L/\partial\gamma = \sum_n g\hat y`,
    :math:`\partial L/\partial\beta = \sum_n g`.

    Parameters
    ----------
    in_features, out_features : int >= 1
    bits : int in [2, 16]
        Weights: per tensor, symmetric, narrow range (:class:`MinMaxFakeQuantize`).
    momentum : float in (0, 1]
        Of the running statistics.
    eps : float > 0
    rng : None, int or numpy.random.Generator
        He initialization of :math:`W`; :math:`\gamma = 1`, :math:`\beta = 0`.

    See Also
    --------
    FoldedConv2dBN : the same for a convolution (per output channel).

    Attributes
    ----------
    weight : Parameter (out, in)
    gamma, beta : Parameter (out,), ``decay=False``
    running_mean, running_var : ndarray (out,)

    Examples
    --------
    >>> layer = FoldedLinearBN(3, 2, rng=0)
    >>> y = layer(np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32))
    >>> np.round(y.mean(axis=0), 1) + 0.0, np.round(y.std(axis=0), 1)   # normalized by the batch
    (array([0., 0.], dtype=float32), array([1., 1.], dtype=float32))
    """

    def __init__(self, in_features, out_features, *, bits=8, momentum=0.1, eps=1e-5, rng=None):
        super().__init__()
        lin = Linear(in_features, out_features, bias=False, rng=rng)
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.weight = lin.weight
        self._init_bn(self.out_features, bits, momentum, eps)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bits={self.bits}"

    def forward(self, x):
        x = as_float_array(x, "x", allow_0d=False)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (n, {self.in_features}), got {x.shape}")
        return self._fold_forward(x, self.weight.data)

    def backward(self, grad_out):
        g = as_float_array(grad_out, "grad_out", finite=False)
        want = (len(self._x), self.out_features)
        if g.shape != want:
            raise ValueError(f"grad_out must have the shape {want} of the last output, got {g.shape}")
        grad_w, dx = self._fold_backward(g)
        self.weight.grad += grad_w
        return dx


class FoldedConv2dBN(_FoldedBN):
    r"""A 2-d convolution followed by batch normalization, trained *folded* and fake-quantized.

    The convolutional form of :class:`FoldedLinearBN` (Jacob et al. 2018, Sec. 3.2 and
    Fig. C.8, drawn there for a convolution). The batch norm is folded per output channel
    :math:`o`,

    .. math::

        W_{\mathrm{fold},o} = \frac{\gamma_o}{\sqrt{\sigma_{B,o}^2 + \varepsilon}}\,W_o, \quad
        b_{\mathrm{fold},o} = \beta_o - \frac{\gamma_o\,\mu_{B,o}}{\sqrt{\sigma_{B,o}^2 + \varepsilon}}, \quad
        y = \hat W_\mathrm{fold} * x + b_\mathrm{fold},\ \ \hat W_\mathrm{fold} = \mathrm{FQ}(W_\mathrm{fold}),

    where :math:`W_o` is the (in, kh, kw) filter of channel :math:`o`, :math:`*` the
    convolution of :class:`qref.nn.Conv2d` (stride, zero padding), and
    :math:`\mu_{B,o}, \sigma_{B,o}^2` the mean and (biased) variance of channel :math:`o` of
    :math:`y_0 = W * x` over the batch and all output pixels, as in
    :class:`qref.nn.BatchNorm2d`. FQ is per tensor, symmetric, narrow range
    (:class:`MinMaxFakeQuantize`), as in :class:`FoldedLinearBN`.

    Unrolled by im2col, the convolution is a linear layer applied to every patch,
    :math:`Y = X_\mathrm{col} W^\top`, and a channel's statistics are those of a column of
    :math:`Y`; so the forward and backward are :class:`FoldedLinearBN`'s on the patches (the
    code is shared), followed by col2im for :math:`\partial L/\partial x`. The running
    statistics (momentum update, unbiased variance over :math:`n H_\mathrm{out}
    W_\mathrm{out}` values, as PyTorch) replace the batch ones in evaluation mode. Like
    :class:`FoldedLinearBN`, the layer keeps using batch statistics for as long as it is in
    training mode (it has no switch that freezes them).

    Parameters
    ----------
    in_channels, out_channels : int >= 1
    kernel_size : int >= 1 (square kernels)
    stride : int >= 1
    padding : int >= 0
    bits : int in [2, 16]
    momentum : float in (0, 1]
    eps : float > 0
    rng : None, int or numpy.random.Generator
        He initialization of :math:`W` (as :class:`qref.nn.Conv2d`); :math:`\gamma = 1`,
        :math:`\beta = 0`.

    Attributes
    ----------
    weight : Parameter (out, in, kh, kw)
    gamma, beta : Parameter (out,), ``decay=False``
    running_mean, running_var : ndarray (out,)

    Raises
    ------
    ValueError
        In ``forward``: for an input not of shape ``(n, in_channels, H, W)``, one smaller than
        the kernel, or, in training mode, a batch with a single value per channel.

    References
    ----------
    Jacob et al. (2018), Sec. 3.2 and Fig. C.8. Ioffe, S., Szegedy, C. (2015). Batch
    normalization: accelerating deep network training by reducing internal covariate shift.
    ICML (the statistics per channel over the batch and the pixels, Sec. 3.2).

    Examples
    --------
    >>> layer = FoldedConv2dBN(1, 2, 3, padding=1, rng=0)
    >>> y = layer(np.random.default_rng(1).normal(size=(4, 1, 6, 6)).astype(np.float32))
    >>> y.shape, np.round(y.mean(axis=(0, 2, 3)), 1) + 0.0, np.round(y.std(axis=(0, 2, 3)), 1)
    ((4, 2, 6, 6), array([0., 0.], dtype=float32), array([1., 1.], dtype=float32))
    """

    _rows = "values per channel (examples x output pixels)"

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bits=8, momentum=0.1,
                 eps=1e-5, rng=None):
        super().__init__()
        conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False, rng=rng)
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.stride, self.padding = conv.stride, conv.padding
        self.weight = conv.weight
        self._init_bn(self.out_channels, bits, momentum, eps)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bits={self.bits}")

    def forward(self, x):
        x = as_float_array(x, "x", allow_0d=False)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (n, {self.in_channels}, H, W), got {x.shape}")
        k, p = self.kernel_size, self.padding
        if x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k:
            raise ValueError(f"x of spatial size {x.shape[2:]} with padding {p} is smaller than the {k}x{k} kernel")
        cols, ho, wo = _im2col(x, k, k, self.stride, p)                     # (N*Ho*Wo, C*k*k)
        self._x_shape, self._out_hw = x.shape, (ho, wo)
        y = self._fold_forward(cols, self.weight.data.reshape(self.out_channels, -1))   # (N*Ho*Wo, O)
        return y.reshape(x.shape[0], ho, wo, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad_out):
        g = as_float_array(grad_out, "grad_out", finite=False)
        ho, wo = self._out_hw
        want = (self._x_shape[0], self.out_channels, ho, wo)
        if g.shape != want:      # a wrong shape with the right size would otherwise reshape silently
            raise ValueError(f"grad_out must have the shape {want} of the last output, got {g.shape}")
        grad_w, dcols = self._fold_backward(g.transpose(0, 2, 3, 1).reshape(-1, self.out_channels))
        self.weight.grad += grad_w.reshape(self.weight.data.shape)
        k = self.kernel_size
        return _col2im(dcols, self._x_shape, k, k, self.stride, self.padding, ho, wo)


def jacob_mlp(hidden=(64,), *, bits=8, in_features=64, classes=10, ema_decay=0.99, rng=0):
    r"""An MLP for quantization-aware training in the style of Jacob et al. (2018).

    ``EMAFakeQuantize`` (input) -> [``FoldedLinearBN`` -> ``ReLU`` -> ``EMAFakeQuantize``] per
    hidden layer -> ``Linear`` with :class:`MinMaxFakeQuantize` weights -> ``EMAFakeQuantize``
    (logits). Every activation and weight is fake-quantized to ``bits`` exactly as
    :func:`integer_mlp_from_qat` later quantizes it for :func:`qref.intarith.integer_forward`.

    Parameters
    ----------
    hidden : sequence of int
    bits : int in [2, 8]
    in_features, classes : int
    ema_decay : float in [0, 1)
    rng : None, int or numpy.random.Generator

    Returns
    -------
    qref.nn.Sequential

    Examples
    --------
    >>> net = jacob_mlp((16,))
    >>> [type(m).__name__ for m in net.layers]
    ['EMAFakeQuantize', 'FoldedLinearBN', 'ReLU', 'EMAFakeQuantize', 'Linear', 'EMAFakeQuantize']
    """
    bits = check_bits(bits, low=2, high=8)
    rng = check_rng(rng)
    widths = [check_positive(in_features, "in_features", integer=True),
              *[check_positive(h, "hidden", integer=True) for h in hidden],
              check_positive(classes, "classes", integer=True)]
    layers = [EMAFakeQuantize(bits, decay=ema_decay)]
    for i in range(len(widths) - 2):
        layers += [FoldedLinearBN(widths[i], widths[i + 1], bits=bits, rng=rng), ReLU(),
                   EMAFakeQuantize(bits, decay=ema_decay)]
    layers += [Linear(widths[-2], widths[-1], rng=rng, weight_quantizer=MinMaxFakeQuantize(bits)),
               EMAFakeQuantize(bits, decay=ema_decay)]
    return Sequential(*layers)


def integer_mlp_from_qat(model):
    r"""Convert a trained :func:`jacob_mlp` into an integer-only :class:`qref.intarith.IntegerMLP`.

    Each :class:`FoldedLinearBN` is folded with its *running* statistics by
    :func:`qref.intarith.fold_batch_norm` (a plain ``Linear`` keeps its weights and bias); the
    folded weights get the same symmetric narrow-range quantizer as during training, the
    activations the EMA ranges of the :class:`EMAFakeQuantize` layers, the biases int32 codes
    at scale :math:`S_\mathrm{in} S_w`, and each layer the multiplier :math:`M =
    S_\mathrm{in} S_w / S_\mathrm{out}` (Jacob et al. 2018, Secs. 2.2-2.4 and 3.2). The
    float forward of the model in evaluation mode then agrees with
    :func:`qref.intarith.integer_forward` to within one output code.

    Parameters
    ----------
    model : qref.nn.Sequential from :func:`jacob_mlp`, trained (every EMA range set)

    Returns
    -------
    qref.intarith.IntegerMLP

    Raises
    ------
    TypeError, ValueError
        If the model is not of that form or its quantizers are not signed with at most 8 bits.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a qref.nn.Sequential from jacob_mlp, got {type(model).__name__}")
    layers = list(model.layers)
    if not layers or not isinstance(layers[0], EMAFakeQuantize):
        raise ValueError("model must start with an EMAFakeQuantize of its input (see jacob_mlp)")
    act_params, wq, wp, bq, mult, relu = [layers[0].params], [], [], [], [], []
    i = 1
    while i < len(layers):
        lin = layers[i]
        if isinstance(lin, FoldedLinearBN):
            w, b, bits = *lin.folded(), lin.bits
        elif isinstance(lin, Linear) and isinstance(lin.weight_quantizer, MinMaxFakeQuantize):
            w = lin.weight.data
            b = np.zeros(lin.out_features, w.dtype) if lin.bias is None else lin.bias.data
            bits = lin.weight_quantizer.bits
        else:
            raise ValueError(f"layer {i} must be a FoldedLinearBN or a Linear with MinMaxFakeQuantize weights, "
                             f"got {type(lin).__name__}")
        has_relu = i + 1 < len(layers) and isinstance(layers[i + 1], ReLU)
        j = i + 1 + int(has_relu)
        if j >= len(layers) or not isinstance(layers[j], EMAFakeQuantize):
            raise ValueError(f"layer {j} must be an EMAFakeQuantize (the output of layer {i})")
        p_in, p_out = act_params[-1], layers[j].params
        for p in (p_in, p_out):
            if not p.signed or p.bits > 8:
                raise ValueError("activation quantizers must be signed with at most 8 bits (int8 codes)")
        p_w = _weight_params(w, bits)
        s_in, s_w, s_out = float(p_in.scale), float(p_w.scale), float(p_out.scale)
        wq.append(_uniform.quantize(w, p_w).astype(np.int8))
        wp.append(p_w)
        bq.append(_intarith.quantize_bias(b, s_in, s_w))
        mult.append(_intarith.quantize_multiplier(s_in * s_w / s_out))
        relu.append(has_relu)
        act_params.append(p_out)
        i = j + 1
    return _intarith.IntegerMLP(tuple(act_params), tuple(wq), tuple(wp), tuple(bq), tuple(mult), tuple(relu))
