r"""Training binary and ternary networks: quantizer layers with their surrogate gradients.

:mod:`qref.binary` holds the *forward* maps (sign, BWN's scaled sign, TWN, TTQ); this module
trains networks through them. Every quantizer is a :class:`qref.nn.Module` whose ``forward``
quantizes and whose ``backward`` returns the paper's surrogate gradient, the two side by
side. The same class serves as a weight quantizer (``Linear(..., weight_quantizer=q)``) or,
for activations, as a layer in a :class:`qref.nn.Sequential`.

**Latent weights.** A binary network cannot be trained by changing its binary weights: a
gradient step of size :math:`\eta g` is far smaller than the distance 2 between :math:`-1` and
:math:`+1`, so rounding would undo it. BinaryConnect (Courbariaux et al. 2015, Algorithm 1)
keeps a real-valued *latent* weight :math:`w` for each binary weight, binarizes it in every
forward pass, and applies the gradient computed for the binary weight to :math:`w`, where
small steps accumulate until the sign flips. Latent weights of :class:`BinaryConnect` are
clipped to :math:`[-1, 1]` after every update (beyond that the sign cannot change, and the
weight would only drift away): wrap the optimizer in :class:`ClipLatentWeights`, or call
:func:`clip_latent_weights` yourself after each ``optimizer.step()``. :class:`NoLatentWeights`
is the ablation that stores the quantized weights themselves.

**Straight-through estimators.** :math:`\mathrm{sign}` has derivative 0 almost everywhere.
The straight-through estimator (Bengio et al. 2013; Hubara et al. 2016) passes the gradient
of the quantized value to its real input, cancelled where the input is large:
:math:`g_r = g_q 1_{|r| \le 1}`, the derivative of :math:`\mathrm{Htanh}(r) =
\mathrm{clip}(r, -1, 1)`.

References
----------
Courbariaux, M., Bengio, Y., David, J.-P. (2015). BinaryConnect: Training deep neural networks
with binary weights during propagations. NeurIPS 28. arXiv:1511.00363.

Courbariaux, M., Hubara, I., Soudry, D., El-Yaniv, R., Bengio, Y. (2016). Binarized neural
networks: Training deep neural networks with weights and activations constrained to +1 or -1.
arXiv:1602.02830. (Published as Hubara et al., Binarized Neural Networks, NeurIPS 29, 2016.)

Hubara, I., Courbariaux, M., Soudry, D., El-Yaniv, R., Bengio, Y. (2018). Quantized neural
networks: Training neural networks with low precision weights and activations. JMLR 18(187).
arXiv:1609.07061.

Rastegari, M., Ordonez, V., Redmon, J., Farhadi, A. (2016). XNOR-Net: ImageNet classification
using binary convolutional neural networks. ECCV 2016. arXiv:1603.05279.

Li, F., Zhang, B., Liu, B. (2016). Ternary weight networks. arXiv:1605.04711.

Zhu, C., Han, S., Mao, H., Dally, W. J. (2017). Trained ternary quantization. ICLR 2017.
arXiv:1612.01064.

Faraone, J., Fraser, N., Blott, M., Leong, P. H. W. (2018). SYQ: Learning symmetric
quantization for efficient deep neural networks. CVPR 2018. arXiv:1807.00301.

Cai, Z., He, X., Sun, J., Vasconcelos, N. (2017). Deep learning with low precision by
half-wave Gaussian quantization. CVPR 2017. arXiv:1702.00953.

Bengio, Y., Léonard, N., Courville, A. (2013). Estimating or propagating gradients through
stochastic neurons for conditional computation. arXiv:1308.3432.
"""

from __future__ import annotations

import math

import numpy as np

from . import binary, nn, nonuniform
from ._validation import as_float_array, check_bits, check_bool, check_choice, check_positive, check_real, check_rng

__all__ = [
    "ap2",
    "BinaryConnect",
    "QNNActivation",
    "ShiftBatchNorm",
    "BWN",
    "XNORActivation",
    "TWN",
    "TTQ",
    "SYQ",
    "SYQ_GROUPINGS",
    "syq_alpha_shape",
    "HWGQ",
    "clip_latent_weights",
    "ClipLatentWeights",
    "NoLatentWeights",
    "binary_mlp",
]

_RSQRT2 = 1.0 / math.sqrt(2.0)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _input(x, name="x"):
    """A quantizer's input: a floating, finite, non-empty array (never modified)."""
    return as_float_array(x, name, allow_empty=False)


def _grad(grad_out, shape, name="grad_out"):
    g = as_float_array(grad_out, name, finite=False)
    if g.shape != shape:
        raise ValueError(f"{name} must have the shape {shape} of the last forward output, got shape {g.shape}")
    return g


def _need_forward(module, attr):
    if getattr(module, attr, None) is None:
        raise RuntimeError(f"{type(module).__name__}.backward called before forward")


def _ste_gate(x):
    """The straight-through gate :math:`1_{|x| \\le 1}`, as a bool array."""
    return np.abs(x) <= 1


# --------------------------------------------------------------------------------------
# BinaryConnect: binary weights, latent real weights, clipping
# --------------------------------------------------------------------------------------


class BinaryConnect(nn.Module):
    r"""BinaryConnect's binary weights :math:`w_b = \mathrm{sign}(w)` (or a coin flip) with latent weights.

    Forward (Courbariaux et al. 2015, Eqs. 1–3, via :func:`qref.binary.binarize` and
    :func:`qref.binary.binarize_stochastic`):

    .. math::

        w_b = \begin{cases} +1 & w \ge 0 \\ -1 & w < 0 \end{cases}
        \quad\text{(deterministic)}, \qquad
        w_b = \begin{cases} +1 & \text{with probability } \sigma(w) \\ -1 & \text{otherwise} \end{cases}
        \quad\text{(stochastic)},

    with the hard sigmoid :math:`\sigma(w) = \mathrm{clip}(\tfrac{w+1}{2}, 0, 1)`. In evaluation
    mode the stochastic variant uses the deterministic sign (the binary network one deploys;
    the paper also discusses testing with the real-valued weights, Sec. 2.6).

    Backward (Algorithm 1 of the paper): the gradient with respect to the binary weight is
    applied unchanged to the latent weight,

    .. math::

        \frac{\partial C}{\partial w} = \frac{\partial C}{\partial w_b}
        \qquad\Big(\text{or } \frac{\partial C}{\partial w_b} 1_{|w| \le 1}
        \text{ with } \texttt{cancel\_gradient=True}\text{, the rule of Hubara et al. 2016}\Big),

    and after every update the latent weight is clipped, :math:`w \leftarrow
    \mathrm{clip}(w, -1, 1)`, by :class:`ClipLatentWeights` / :func:`clip_latent_weights`
    (``latent_range = (-1, 1)``). While the weights stay clipped the two backward rules agree.

    Parameters
    ----------
    stochastic : bool
        Stochastic binarization in training mode.
    cancel_gradient : bool
        Multiply the gradient by :math:`1_{|w| \le 1}`.
    rng : None, int or numpy.random.Generator
        For the stochastic coin flips (reproducible with a seed).

    Examples
    --------
    >>> q = BinaryConnect()
    >>> q(np.array([[-0.3, 0.0, 0.7]], dtype=np.float32))
    array([[-1.,  1.,  1.]], dtype=float32)
    >>> q.backward(np.array([[0.5, -1.0, 2.0]], dtype=np.float32))
    array([[ 0.5, -1. ,  2. ]], dtype=float32)
    """

    latent_range = (-1.0, 1.0)

    def __init__(self, *, stochastic=False, cancel_gradient=False, rng=None):
        super().__init__()
        self.stochastic = check_bool(stochastic, "stochastic")
        self.cancel_gradient = check_bool(cancel_gradient, "cancel_gradient")
        self.rng = check_rng(rng)
        self._w = None

    def extra_repr(self):
        return f"stochastic={self.stochastic}, cancel_gradient={self.cancel_gradient}"

    def forward(self, w):
        w = _input(w, "w")
        self._w = w
        if self.stochastic and self.training:
            return binary.binarize_stochastic(w, rng=self.rng)
        return binary.binarize(w)

    def backward(self, grad_out):
        _need_forward(self, "_w")
        g = _grad(grad_out, self._w.shape)
        if self.cancel_gradient:
            return np.where(_ste_gate(self._w), g, 0).astype(g.dtype, copy=False)
        return g.copy()


def _layers_with_latent_weights(model):
    """``(layer, quantizer)`` for every layer whose ``weight`` goes through a weight quantizer."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a qref.nn.Module, got {type(model).__name__}")
    out = []
    for m in model.modules():
        q = getattr(m, "weight_quantizer", None)
        if q is not None and isinstance(getattr(m, "weight", None), nn.Parameter):
            out.append((m, q))
    return out


def clip_latent_weights(model):
    r"""Clip every latent weight to its quantizer's ``latent_range``, in place; return how many moved.

    BinaryConnect's update (Courbariaux et al. 2015, Algorithm 1) is
    :math:`w_{t+1} = \mathrm{clip}(w_t - \eta\, \partial C/\partial w_b, -1, 1)`: call this
    right after ``optimizer.step()`` (or let :class:`ClipLatentWeights` do it). Only layers whose
    ``weight_quantizer`` has a ``latent_range`` (:class:`BinaryConnect`: :math:`[-1, 1]`) are
    touched; this function exists to modify the model's parameters.

    Parameters
    ----------
    model : qref.nn.Module

    Returns
    -------
    int
        The number of weights that were outside their range.

    Examples
    --------
    >>> layer = nn.Linear(2, 1, rng=0, weight_quantizer=BinaryConnect())
    >>> layer.weight.data[:] = [[1.5, -0.2]]
    >>> clip_latent_weights(layer), layer.weight.data
    (1, array([[ 1. , -0.2]], dtype=float32))
    """
    moved = 0
    for layer, q in _layers_with_latent_weights(model):
        rng = getattr(q, "latent_range", None)
        if rng is None:
            continue
        w = layer.weight.data
        lo, hi = rng
        moved += int(np.count_nonzero((w < lo) | (w > hi)))
        np.clip(w, lo, hi, out=w)
    return moved


class _OptimizerWrapper:
    def __init__(self, optimizer, model):
        if not (hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad")):
            raise TypeError(f"optimizer must have step() and zero_grad(), got {type(optimizer).__name__}")
        _layers_with_latent_weights(model)  # type check
        self.optimizer, self.model = optimizer, model

    def zero_grad(self):
        self.optimizer.zero_grad()


class ClipLatentWeights(_OptimizerWrapper):
    """An optimizer that clips the latent weights after every step (BinaryConnect, Algorithm 1).

    ``step()`` runs the wrapped optimizer's ``step()`` and then :func:`clip_latent_weights`;
    pass it to :func:`qref.nn.fit` in place of the optimizer. ``clipped`` counts the weights
    clipped so far.

    Parameters
    ----------
    optimizer : qref.nn.SGD, qref.nn.Adam or any object with ``step()`` and ``zero_grad()``
    model : qref.nn.Module

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 1, rng=0, weight_quantizer=BinaryConnect()))
    >>> opt = ClipLatentWeights(nn.SGD(net.parameters(), lr=10.0), net)
    >>> y = net(np.ones((1, 2), np.float32))
    >>> dx = net.backward(np.ones((1, 1), np.float32))    # dL/dw = [[1, 1]]
    >>> opt.step()                                       # w - 10 would be far below -1
    >>> net[0].weight.data, opt.clipped
    (array([[-1., -1.]], dtype=float32), 2)
    """

    def __init__(self, optimizer, model):
        super().__init__(optimizer, model)
        self.clipped = 0

    def step(self):
        self.optimizer.step()
        self.clipped += clip_latent_weights(self.model)


class NoLatentWeights(_OptimizerWrapper):
    """The ablation without latent weights: after every step each weight is replaced by its quantized value.

    The network then *stores* binary (or ternary) weights, and an update survives only if it
    carries a weight across a threshold in one step. With the small steps of gradient
    descent it almost never does, and training stalls; this is why BinaryConnect keeps latent
    real-valued weights (Courbariaux et al. 2015, Sec. 2).

    The quantizer is evaluated in evaluation mode (deterministic); quantizers with their own
    Parameters (TTQ's scales) keep training them.

    Parameters
    ----------
    optimizer : object with ``step()`` and ``zero_grad()``
    model : qref.nn.Module

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 1, rng=0, weight_quantizer=BinaryConnect()))
    >>> opt = NoLatentWeights(nn.SGD(net.parameters(), lr=0.01), net)
    >>> y = net(np.ones((1, 2), np.float32))
    >>> dx = net.backward(np.ones((1, 1), np.float32))
    >>> opt.step()
    >>> np.abs(net[0].weight.data)                       # the stored weights are now binary
    array([[1., 1.]], dtype=float32)
    """

    def step(self):
        self.optimizer.step()
        for layer, q in _layers_with_latent_weights(self.model):
            mode = q.training
            q.training = False
            try:
                layer.weight.data[...] = q(layer.weight.data)
            finally:
                q.training = mode


# --------------------------------------------------------------------------------------
# BNN / QNN: binary and k-bit activations, shift-based batch normalization
# --------------------------------------------------------------------------------------


class QNNActivation(nn.Module):
    r"""Binarized (BNN) or :math:`k`-bit (QNN) activations with the hard-tanh straight-through gradient.

    Forward: for ``bits=1`` the sign, :math:`q = \mathrm{sign}(r)` (Courbariaux et al. 2016,
    their Eq. 1, via :func:`qref.binary.binarize`, :math:`\mathrm{sign}(0) = +1`); for
    :math:`k \ge 2` bits the :math:`2^k` evenly spaced levels of :math:`[-1, 1]`,

    .. math::

        q = -1 + \frac{2}{2^k - 1}\,\Big\lfloor \frac{(2^k - 1)(\mathrm{clip}(r, -1, 1) + 1)}{2} + \frac12 \Big\rfloor ,

    i.e. the hard tanh rounded to :math:`k` bits (Hubara et al. 2018 quantize activations
    uniformly to :math:`k` bits; the grid including both ends :math:`\pm 1` is our choice, it
    makes ``bits=1`` the sign).

    Backward, the straight-through estimator of Hubara et al. (the derivative of
    :math:`\mathrm{Htanh}`):

    .. math::

        g_r = g_q\, 1_{|r| \le 1}.

    Parameters
    ----------
    bits : int in [1, 16]

    Examples
    --------
    >>> a = QNNActivation()
    >>> a(np.array([-2.0, -0.5, 0.0, 0.5, 2.0]))
    array([-1., -1.,  1.,  1.,  1.])
    >>> a.backward(np.ones(5))
    array([0., 1., 1., 1., 0.])
    >>> QNNActivation(bits=2)(np.array([-0.7, -0.2, 0.2, 0.9]))
    array([-1.        , -0.33333333,  0.33333333,  1.        ])
    """

    def __init__(self, bits=1):
        super().__init__()
        self.bits = check_bits(bits, "bits")
        self._x = None

    def extra_repr(self):
        return f"bits={self.bits}"

    def forward(self, x):
        x = _input(x)
        self._x = x
        if self.bits == 1:
            return binary.binarize(x)
        n = 2**self.bits - 1
        u = np.floor(n * (np.clip(x.astype(np.float64), -1, 1) + 1) / 2 + 0.5)
        return (-1 + 2 * u / n).astype(x.dtype)

    def backward(self, grad_out):
        _need_forward(self, "_x")
        g = _grad(grad_out, self._x.shape)
        return np.where(_ste_gate(self._x), g, 0).astype(g.dtype, copy=False)


def ap2(x):
    r"""The approximate power of two :math:`\mathrm{AP2}(x) = \mathrm{sign}(x)\, 2^{\mathrm{round}(\log_2 |x|)}`.

    Multiplying by :math:`\mathrm{AP2}(x)` is a binary shift (left or right), which is how
    shift-based batch normalization avoids multiplications (Courbariaux et al. 2016, defined
    with their shift-based batch normalizing transform; the algorithm's number differs between
    the paper's versions). :math:`\mathrm{AP2}(0) = 0`. Computed exactly from the binary
    exponent: with :math:`|x| = m\,2^e`, :math:`m \in [\tfrac12, 1)`, the result is
    :math:`2^e` if :math:`m \ge 2^{-1/2}` and :math:`2^{e-1}` otherwise (no tie is possible,
    :math:`2^{-1/2}` being irrational; only magnitudes within :math:`2^{1/2}` of the dtype's
    largest value round up to a power of two it cannot hold, which becomes infinity). The
    relative error is bounded:

    .. math::

        2^{-1/2} \le \mathrm{AP2}(x) / x \le 2^{1/2} \qquad (x \ne 0).

    Parameters
    ----------
    x : array_like of float

    Returns
    -------
    numpy.ndarray, same shape and dtype as ``x``

    Examples
    --------
    >>> ap2(np.array([0.0, 0.3, -3.0, 5.0, 0.7, 0.75]))
    array([ 0.  ,  0.25, -4.  ,  4.  ,  0.5 ,  1.  ])
    """
    x = as_float_array(x, "x")
    m, e = np.frexp(np.abs(x))
    e = np.where(m >= _RSQRT2, e, e - 1)
    return np.where(x == 0, 0, np.sign(x) * np.ldexp(np.ones_like(x), e)).astype(x.dtype)


class ShiftBatchNorm(nn._BatchNorm):
    r"""Shift-based batch normalization (Courbariaux et al. 2016, the shift-based batch normalizing transform), with its backward.

    Per channel, over a minibatch of :math:`m` values (all axes but the channel axis 1):

    .. math::

        \mu = \frac1m \sum_i x_i, \quad C_i = x_i - \mu, \quad
        \sigma^2 = \frac1m \sum_i C_i\, \mathrm{AP2}(C_i), \quad
        \hat x_i = C_i\, \mathrm{AP2}\big((\sigma^2 + \epsilon)^{-1/2}\big), \quad
        y_i = \mathrm{AP2}(\gamma)\, \hat x_i + \beta,

    every product with an :func:`ap2` factor being a shift. (The algorithm's last line, "scale
    and shift", prints only :math:`\mathrm{AP2}(\gamma)\hat x_i`; we add :math:`\beta` as in
    ordinary batch norm.) Since each :math:`\mathrm{AP2}` is within :math:`2^{\pm 1/2}` of its
    argument, :math:`y - \beta` is exact batch norm's :math:`y - \beta` times one positive factor
    per channel in :math:`[2^{-5/4}, 2^{5/4}]`; it *equals* it when the centred values, the
    standard deviation and :math:`\gamma` are powers of two (and :math:`\epsilon \to 0`).

    Backward (training mode): the paper does not spell it out; we apply the rule it uses
    everywhere else, the straight-through estimator, to each :math:`\mathrm{AP2}` (derivative
    taken as 1) and differentiate the rest exactly. With :math:`s =
    \mathrm{AP2}((\sigma^2+\epsilon)^{-1/2})` and :math:`g = \mathrm{AP2}(\gamma)`:

    .. math::

        \frac{\partial L}{\partial \beta} = \sum_i \frac{\partial L}{\partial y_i}, \quad
        \frac{\partial L}{\partial \gamma} = \sum_i \frac{\partial L}{\partial y_i} \hat x_i, \quad
        \frac{\partial L}{\partial C_i} = g s \frac{\partial L}{\partial y_i}
          - \frac{(\sigma^2 + \epsilon)^{-3/2}}{2m} \Big(\sum_j g \frac{\partial L}{\partial y_j} C_j\Big)
          \big(C_i + \mathrm{AP2}(C_i)\big), \quad
        \frac{\partial L}{\partial x_i} = \frac{\partial L}{\partial C_i} - \frac1m \sum_j \frac{\partial L}{\partial C_j}.

    In evaluation mode the running mean and (approximate) variance replace the batch
    statistics, and the layer is the affine map :math:`y = g s (x - \mu_{\text{run}}) + \beta`.

    Parameters
    ----------
    num_features : int >= 1
        Channels :math:`C` of an ``(n, C)`` or ``(n, C, H, W)`` input.
    momentum : float in [0, 1]
        Running statistics: :math:`r \leftarrow (1 - \text{momentum})\,r + \text{momentum}\cdot\text{batch}`.
    eps : float > 0

    Attributes
    ----------
    weight, bias : Parameter, shape (C,) (``decay=False``)
        :math:`\gamma` (starts at 1) and :math:`\beta` (starts at 0), named as in
        :class:`qref.nn.BatchNorm1d` so the two layers are interchangeable.
    running_mean, running_var : ndarray, shape (C,)
        Running averages of :math:`\mu` and of :math:`\tfrac{m}{m-1}\sigma^2` (as
        :class:`qref.nn.BatchNorm1d` keeps them).

    Examples
    --------
    Centred values ±2 (powers of two) are normalized to ±1 exactly, as exact batch norm does:

    >>> bn = ShiftBatchNorm(1, eps=1e-12)
    >>> bn(np.array([[3.0], [-1.0], [3.0], [-1.0]]))
    array([[ 1.],
           [-1.],
           [ 1.],
           [-1.]])
    """

    def __init__(self, num_features, *, momentum=0.1, eps=1e-5):
        # parameters (gamma, beta), running statistics and their checks as nn.BatchNorm1d/2d
        super().__init__(num_features, momentum=momentum, eps=eps)
        self.eps = float(self.eps)
        self._cache = None

    def _check(self, x):
        x = _input(x)
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(
                f"x must have shape (n, {self.num_features}) or (n, {self.num_features}, H, W), got shape {x.shape}"
            )
        return x

    def forward(self, x):
        x = self._check(x)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        g = ap2(self.weight.data).astype(x.dtype).reshape(shape)
        if self.training:
            m = x.size // self.num_features
            if m < 2:
                raise ValueError(f"x must hold at least 2 values per channel in training mode, got shape {x.shape}")
            mu = x.mean(axis=axes, keepdims=True)
            c = x - mu                                          # C(x_i): centred input
            ap2_c = ap2(c)
            var = (c * ap2_c).mean(axis=axes, keepdims=True)    # the shift-based variance
            r = 1 / np.sqrt(var + self.eps)
            s = ap2(r)
            x_hat = c * s
            self.running_mean = ((1 - self.momentum) * self.running_mean + self.momentum * mu.ravel()).astype(self.running_mean.dtype)
            unbiased = var.ravel() * (m / (m - 1))
            self.running_var = ((1 - self.momentum) * self.running_var + self.momentum * unbiased).astype(self.running_var.dtype)
            self._cache = (True, axes, shape, m, c, ap2_c, var, s, x_hat, g)
        else:
            s = ap2(1 / np.sqrt(self.running_var + self.eps)).astype(x.dtype).reshape(shape)
            x_hat = (x - self.running_mean.astype(x.dtype).reshape(shape)) * s
            self._cache = (False, axes, shape, None, None, None, None, s, x_hat, g)
        return (g * x_hat + self.bias.data.astype(x.dtype).reshape(shape)).astype(x.dtype)

    def backward(self, grad_out):
        _need_forward(self, "_cache")
        training, axes, shape, m, c, ap2_c, var, s, x_hat, g = self._cache
        dy = _grad(grad_out, x_hat.shape)
        self.bias.grad += dy.sum(axis=axes).astype(self.bias.grad.dtype)
        self.weight.grad += (dy * x_hat).sum(axis=axes).astype(self.weight.grad.dtype)  # STE through AP2(gamma)
        dx_hat = dy * g
        if not training:
            return (dx_hat * s).astype(dy.dtype)
        ds = (dx_hat * c).sum(axis=axes, keepdims=True)          # x_hat = C * s
        dvar = ds * -0.5 * (var + self.eps) ** -1.5              # s ~ (var + eps)^(-1/2), STE through AP2
        dc = dx_hat * s + dvar * (c + ap2_c) / m                 # var = mean(C * AP2(C)), STE through AP2
        return (dc - dc.mean(axis=axes, keepdims=True)).astype(dy.dtype)


# --------------------------------------------------------------------------------------
# BWN / XNOR-Net: scaled signs and the gradient through the scale
# --------------------------------------------------------------------------------------

_SCALE_GRADS = ("exact", "paper", "none")


def _scaled_sign_backward(x, g, scale, axes, mode):
    r"""Backward of :math:`y = K(x)\,\mathrm{sign}(x)`, :math:`K = \mathrm{mean}_{axes}|x|`, with the STE for the sign."""
    ste = np.where(_ste_gate(x), g * scale, 0)                       # K * 1_{|x|<=1} * dC/dy
    if mode == "none":
        return ste.astype(g.dtype)
    n = int(np.prod([x.shape[a] for a in axes]))
    b = binary.sign(x)
    if mode == "paper":                                              # dC/dy * (1/n + K 1_{|x|<=1}), as printed
        return (g / n + ste).astype(g.dtype)
    through_k = b * (g * b).mean(axis=axes, keepdims=True)          # dK/dx_i = sign(x_i)/n
    return (through_k + ste).astype(g.dtype)


class BWN(nn.Module):
    r"""Binary-Weight-Network weights :math:`\tilde W = \alpha\,\mathrm{sign}(W)`, :math:`\alpha = \mathrm{mean}|W|` per output channel.

    Forward: :func:`qref.binary.binarize_bwn` (Rastegari et al. 2016, Sec. 3.1), one
    :math:`\alpha` per output channel (axis 0), :math:`n` weights per channel.

    Backward (Sec. 3.1, "Training Binary-Weights-Networks"), the gradient through the scaled
    sign is printed as

    .. math::

        \frac{\partial C}{\partial W_i} = \frac{\partial C}{\partial \tilde W_i}
        \Big(\frac1n + \frac{\partial\,\mathrm{sign}}{\partial W_i}\,\alpha\Big),
        \qquad \frac{\partial\,\mathrm{sign}}{\partial W_i} \approx 1_{|W_i| \le 1}.

    Its :math:`1/n` term is the derivative of :math:`\alpha = \frac1n\sum_j |W_j|`, whose exact
    chain rule couples all the weights of a channel. ``scale_grad`` selects:

    * ``"exact"`` (default): the chain rule of :math:`\tilde W_j = \alpha(W)\,\mathrm{sign}(W_j)`
      with the straight-through sign,

      .. math::

          \frac{\partial C}{\partial W_i} = \frac{\mathrm{sign}(W_i)}{n}\sum_j \mathrm{sign}(W_j)
          \frac{\partial C}{\partial \tilde W_j} + \alpha\,1_{|W_i| \le 1}\frac{\partial C}{\partial \tilde W_i};

      its first term is the true derivative of the forward (checked against finite differences);
    * ``"paper"``: the printed formula taken literally, :math:`\frac{\partial C}{\partial \tilde
      W_i}(\frac1n + \alpha 1_{|W_i| \le 1})`;
    * ``"none"``: :math:`\alpha` treated as a constant, :math:`\alpha 1_{|W_i| \le 1}
      \frac{\partial C}{\partial \tilde W_i}`.

    Parameters
    ----------
    scale_grad : {"exact", "paper", "none"}

    Examples
    --------
    >>> q = BWN()
    >>> w = np.array([[0.5, -1.5, 1.0]])
    >>> q(w)
    array([[ 1., -1.,  1.]])
    >>> q.backward(np.array([[1.0, 0.0, 0.0]]))       # (1/3)*sign(w)*1 + alpha*[1, 0, 0]
    array([[ 1.33333333, -0.33333333,  0.33333333]])
    """

    def __init__(self, *, scale_grad="exact"):
        super().__init__()
        self.scale_grad = check_choice(scale_grad, "scale_grad", _SCALE_GRADS)
        self._w = None

    def extra_repr(self):
        return f"scale_grad={self.scale_grad!r}"

    def forward(self, w):
        w = as_float_array(w, "w", allow_empty=False, allow_0d=False)
        if w.ndim < 2:
            raise ValueError(f"w must be a weight tensor (out, in, ...) with at least 2 dimensions, got shape {w.shape}")
        codes, alpha = binary.binarize_bwn(w, axis=0)
        self._w, self._alpha = w, alpha
        return (alpha * codes).astype(w.dtype)

    def backward(self, grad_out):
        _need_forward(self, "_w")
        g = _grad(grad_out, self._w.shape)
        return _scaled_sign_backward(self._w, g, self._alpha, tuple(range(1, self._w.ndim)), self.scale_grad)


class XNORActivation(nn.Module):
    r"""XNOR-Net's binary input :math:`K \odot \mathrm{sign}(x)` with the input scale :math:`K = \mathrm{mean}|x|`.

    XNOR-Net approximates a layer's product :math:`x^\top w \approx (\mathrm{sign}(x)^\top
    \mathrm{sign}(w))\,K\alpha` (Rastegari et al. 2016, Sec. 3.2). This layer produces the
    input half, :math:`K\,\mathrm{sign}(x)`; followed by a ``Linear`` with :class:`BWN`
    weights the layer computes exactly the XNOR-Net product (the ±1 dot products times
    :math:`K\alpha`). :math:`K` is one value per row of an ``(n, features)`` input
    (:func:`qref.binary.xnor_scale_matmul`); for an ``(n, C, H, W)`` input one value per
    position, the mean of :math:`|x|` over the channels (XNOR-Net's :math:`A`; the box filter
    :math:`k` that turns :math:`A` into :math:`K` belongs to the convolution's kernel size and
    is left out here).

    Backward: the sign through the straight-through estimator :math:`1_{|x| \le 1}` (the paper
    uses Hubara et al.'s rule), and :math:`K` as for :class:`BWN` (``scale_grad``):

    .. math::

        \frac{\partial C}{\partial x_i} = \frac{\mathrm{sign}(x_i)}{n} \sum_j \mathrm{sign}(x_j)
        \frac{\partial C}{\partial y_j} + K\, 1_{|x_i| \le 1}\frac{\partial C}{\partial y_i}
        \quad (\texttt{"exact"}).

    Parameters
    ----------
    scale_grad : {"exact", "paper", "none"}

    Examples
    --------
    >>> a = XNORActivation()
    >>> a(np.array([[1.0, -3.0], [0.5, 0.5]]))
    array([[ 2. , -2. ],
           [ 0.5,  0.5]])
    """

    def __init__(self, *, scale_grad="exact"):
        super().__init__()
        self.scale_grad = check_choice(scale_grad, "scale_grad", _SCALE_GRADS)
        self._x = None

    def extra_repr(self):
        return f"scale_grad={self.scale_grad!r}"

    def forward(self, x):
        x = _input(x)
        if x.ndim == 2:
            k = binary.xnor_scale_matmul(x)                                     # (n, 1)
        elif x.ndim == 4:
            k = np.abs(x.astype(np.float64)).mean(axis=1, keepdims=True).astype(x.dtype)  # A: (n, 1, H, W)
        else:
            raise ValueError(f"x must have shape (n, features) or (n, C, H, W), got shape {x.shape}")
        self._x, self._k = x, k
        return (k * binary.sign(x)).astype(x.dtype)

    def backward(self, grad_out):
        _need_forward(self, "_x")
        g = _grad(grad_out, self._x.shape)
        return _scaled_sign_backward(self._x, g, self._k, (1,), self.scale_grad)


# --------------------------------------------------------------------------------------
# Ternary weights: TWN and TTQ
# --------------------------------------------------------------------------------------


class TWN(nn.Module):
    r"""Ternary Weight Networks: :math:`\hat W = \alpha T`, :math:`T \in \{-1, 0, +1\}`, threshold :math:`\Delta \approx 0.7\,\mathbb E|W|`.

    Forward: :func:`qref.binary.ternarize_twn` (Li, Zhang & Liu 2016, Sec. 2), one threshold
    and scale per tensor: :math:`T_i = \mathrm{sign}(W_i)` where :math:`|W_i| > \Delta`, else 0,
    and :math:`\alpha` the mean of the surviving :math:`|W_i|`. ``method="approx"`` is the
    paper's rule of thumb :math:`\Delta = 0.7\,\mathbb E|W|` (used in its training);
    ``"exact"`` the exact least-squares threshold.

    Backward: as in BinaryConnect, the ternary weights are used in the forward and backward
    passes and their gradient updates the full-precision latent weights unchanged (the
    straight-through estimator; :math:`\alpha` and :math:`\Delta` are treated as constants):

    .. math::

        \frac{\partial C}{\partial W} = \frac{\partial C}{\partial \hat W}.

    The attributes ``delta_`` and ``alpha_`` hold the last threshold and scale.

    Parameters
    ----------
    method : {"approx", "exact"}

    Examples
    --------
    >>> q = TWN()
    >>> q(np.array([[0.9, -1.1, 0.05, -0.1, 1.0, 0.02]]))         # delta = 0.7 * 0.5283
    array([[ 1., -1.,  0.,  0.,  1.,  0.]])
    >>> round(q.delta_, 4), round(q.alpha_, 4)
    (0.3698, 1.0)
    """

    def __init__(self, *, method="approx"):
        super().__init__()
        self.method = check_choice(method, "method", ("approx", "exact"))
        self._shape = None

    def extra_repr(self):
        return f"method={self.method!r}"

    def forward(self, w):
        w = as_float_array(w, "w", allow_empty=False)
        t, alpha, delta = binary.ternarize_twn(w, method=self.method)
        self._shape = w.shape
        self.alpha_, self.delta_ = float(alpha.item()), float(delta.item())
        return (alpha * t).astype(w.dtype)

    def backward(self, grad_out):
        _need_forward(self, "_shape")
        return _grad(grad_out, self._shape).copy()


class TTQ(nn.Module):
    r"""Trained Ternary Quantization: weights :math:`\{-W_n, 0, +W_p\}` with *learned* scales, threshold :math:`t\max|W|`.

    Forward (Zhu et al. 2017, Sec. 3; codes and threshold from :func:`qref.binary.ternarize_ttq`):

    .. math::

        \Delta = t \max_i |\tilde w_i|, \qquad
        w^t_i = \begin{cases} +W_p & \tilde w_i > \Delta \\ 0 & |\tilde w_i| \le \Delta \\ -W_n & \tilde w_i < -\Delta \end{cases}

    Backward, with :math:`I_p = \{i: \tilde w_i > \Delta\}`, :math:`I_n = \{i: \tilde w_i <
    -\Delta\}` (the threshold treated as a constant):

    .. math::

        \frac{\partial L}{\partial W_p} = \sum_{i \in I_p} \frac{\partial L}{\partial w^t_i}, \qquad
        \frac{\partial L}{\partial W_n} = -\sum_{i \in I_n} \frac{\partial L}{\partial w^t_i},

    Eq. 7 of the paper (which prints the second sum without the minus sign; with :math:`w^t_i =
    -W_n` on :math:`I_n` the chain rule gives it, and it keeps :math:`W_n` a positive magnitude
    that gradient descent moves the right way), and the scaled gradient for the latent
    weights, Eq. 8:

    .. math::

        \frac{\partial L}{\partial \tilde w_i} = \begin{cases}
            W_p\, \partial L/\partial w^t_i & \tilde w_i > \Delta \\
            1 \cdot \partial L/\partial w^t_i & |\tilde w_i| \le \Delta \\
            W_n\, \partial L/\partial w^t_i & \tilde w_i < -\Delta \end{cases}

    The paper also normalizes the latent weights by their maximum before thresholding; the
    ternary codes do not change by that, so the threshold :math:`t\max|\tilde w|` is applied to
    the latent weights directly.

    Parameters
    ----------
    threshold : float in [0, 1)
        :math:`t` (0.05 in the paper's experiments).
    wp, wn : positive float or None
        Initial scales; ``None`` sets each, at the first forward pass, to its least-squares
        value for the initial codes (the mean of the latent weights above :math:`\Delta`, the
        mean magnitude of those below :math:`-\Delta`).

    Attributes
    ----------
    wp, wn : Parameter, shape () (``decay=False``)
    delta_ : float, the last threshold

    Examples
    --------
    >>> q = TTQ(threshold=0.1, wp=1.5, wn=3.0)
    >>> q(np.array([[2.0, 1.0, -0.05, -3.0, 0.0]]))
    array([[ 1.5,  1.5,  0. , -3. ,  0. ]])
    >>> q.backward(np.array([[1.0, 1.0, 1.0, 1.0, 1.0]]))
    array([[1.5, 1.5, 1. , 3. , 1. ]])
    >>> float(q.wp.grad), float(q.wn.grad)
    (2.0, -1.0)
    """

    def __init__(self, *, threshold=0.05, wp=None, wn=None):
        super().__init__()
        self.threshold = check_real(threshold, "threshold")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self._init = {"wp": wp is None, "wn": wn is None}
        self.wp = nn.Parameter(np.asarray(1.0 if wp is None else check_positive(wp, "wp"), np.float32), name="wp", decay=False)
        self.wn = nn.Parameter(np.asarray(1.0 if wn is None else check_positive(wn, "wn"), np.float32), name="wn", decay=False)
        self._codes = None

    def extra_repr(self):
        return f"threshold={self.threshold}"

    def forward(self, w):
        w = as_float_array(w, "w", allow_empty=False)
        codes, wp0, wn0, delta = binary.ternarize_ttq(w, threshold=self.threshold)
        for name, value in (("wp", wp0), ("wn", wn0)):
            if self._init[name]:                     # least-squares start, once, in place
                getattr(self, name).data[...] = value if value > 0 else 1.0
                self._init[name] = False
        self._codes, self.delta_ = codes, delta
        wp, wn = self.wp.data.astype(w.dtype), self.wn.data.astype(w.dtype)
        return np.where(codes > 0, wp, np.where(codes < 0, -wn, 0)).astype(w.dtype)

    def backward(self, grad_out):
        _need_forward(self, "_codes")
        g = _grad(grad_out, self._codes.shape)
        pos, neg = self._codes > 0, self._codes < 0
        self.wp.grad += g[pos].sum(dtype=np.float64)          # Eq. 7
        self.wn.grad -= g[neg].sum(dtype=np.float64)          # Eq. 7, with the chain rule's sign
        scale = np.where(pos, self.wp.data, np.where(neg, self.wn.data, 1.0))
        return (scale * g).astype(g.dtype)                     # Eq. 8


# --------------------------------------------------------------------------------------
# SYQ: symmetric binary/ternary weights with a learned scale per group of weights
# --------------------------------------------------------------------------------------

#: SYQ's groupings of a convolution's weights (Faraone et al. 2018): one scale per
#: layer, per row of the kernel, or per kernel position ("pixel").
SYQ_GROUPINGS = ("layer", "row", "pixel")


def syq_alpha_shape(grouping, kernel_size=None):
    r"""Shape of SYQ's scales :math:`\alpha` for a grouping; it broadcasts against a weight ``(out, in, kh, kw)``.

    A convolution with a :math:`k_h \times k_w` kernel has, in SYQ's groupings
    (Faraone et al. 2018), one scale per layer, one per kernel row (:math:`k_h`
    scales, each shared by the :math:`k_w` positions of its row over all input and output
    channels) or one per kernel position (:math:`k_h k_w` scales, "pixel-wise"). In the
    im2col view, where the weights form a matrix ``(out, in * kh * kw)``, a pixel group is the
    set of columns that multiply one position of the receptive field, one per input channel.

    Parameters
    ----------
    grouping : {"layer", "row", "pixel"}
    kernel_size : None, int or (int, int)
        Required for "row" and "pixel".

    Returns
    -------
    tuple of int
        ``()`` for "layer", ``(kh, 1)`` for "row", ``(kh, kw)`` for "pixel".

    Examples
    --------
    >>> syq_alpha_shape("layer"), syq_alpha_shape("row", 3), syq_alpha_shape("pixel", (3, 5))
    ((), (3, 1), (3, 5))
    """
    grouping = check_choice(grouping, "grouping", SYQ_GROUPINGS)
    if grouping == "layer":
        return ()
    if kernel_size is None:
        raise ValueError(f"kernel_size is required for grouping={grouping!r}, got None")
    ks = (kernel_size, kernel_size) if np.ndim(kernel_size) == 0 else tuple(kernel_size)
    if len(ks) != 2:
        raise ValueError(f"kernel_size must be an int or a pair of ints, got {kernel_size!r}")
    kh, kw = (check_positive(k, "kernel_size", integer=True) for k in ks)
    return (kh, 1) if grouping == "row" else (kh, kw)


def _sum_to(x, shape):
    """Sum ``x`` over the axes that the (trailing-aligned) ``shape`` broadcasts: one sum per group."""
    lead = x.ndim - len(shape)
    out = x.sum(axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and out.shape[i] != 1)
    return out.sum(axis=axes, keepdims=True) if axes else out


class SYQ(nn.Module):
    r"""SYQ: symmetric binary or ternary weights :math:`\pm\alpha_g` with a *learned* scale per group.

    Forward (Faraone et al. 2018; section numbers not checked): every weight :math:`w_i` of group :math:`g`
    becomes

    .. math::

        Q(w_i) = \alpha_g\, \mathrm{sign}(w_i)\, M_i, \qquad
        M_i = \begin{cases} 1 & \text{binary} \\ 1_{|w_i| > \eta} & \text{ternary,} \end{cases}
        \qquad \eta = \eta_0 \max_j |w_j|,

    with one threshold per layer (:math:`\eta_0 = 0.05` for ternary weights, the default of
    the authors' code; binary is :math:`\eta_0 = 0`) and the codebook :math:`\{-\alpha_g,
    \alpha_g\}` or :math:`\{-\alpha_g, 0, \alpha_g\}` *symmetric*: one scale per group, where
    TTQ has two per layer. The groups are those of :func:`syq_alpha_shape` (layer, kernel row
    or kernel position); :math:`\mathrm{sign}(0) = +1` (:func:`qref.binary.sign`).

    Backward, with :math:`I_g = \{i \in g: M_i = 1\}` and the threshold and the sign treated
    as constants (the straight-through estimator):

    .. math::

        \frac{\partial E}{\partial \alpha_g} = \sum_{i \in I_g} \mathrm{sign}(w_i)
        \frac{\partial E}{\partial Q(w_i)}, \qquad
        \frac{\partial E}{\partial w_i} = \begin{cases}
            \alpha_g\, \partial E / \partial Q(w_i) & i \in I_g \\
            \partial E / \partial Q(w_i) & \text{otherwise.} \end{cases}

    The first is the exact derivative of the forward in :math:`\alpha_g` (checked against
    finite differences in the tests). The second, the gradient to the latent weights
    scaled by the value of their group as in TTQ's Eq. 8, is how the authors' released code
    differentiates :math:`Q` (sign: identity; the product with the scale: the product rule);
    we could not check it against the paper's text.

    Parameters
    ----------
    grouping : {"layer", "row", "pixel"}
        "row" and "pixel" need a 4-d convolution weight ``(out, in, kh, kw)`` and ``kernel_size``.
    kernel_size : None, int or (int, int)
    ternary : bool
        Ternary (mask :math:`M`) or binary weights.
    eta : float in [0, 1)
        :math:`\eta_0`, used when ``ternary``.
    alpha : None or positive float
        Initial scales (all groups). ``None`` sets each scale, at the first forward pass, to
        the mean :math:`|w|` of its group, the initialization of the authors' code.

    Attributes
    ----------
    alpha : Parameter, shape :func:`syq_alpha_shape` (``decay=False``)
    eta_ : float, the last threshold :math:`\eta`

    References
    ----------
    Faraone, J., Fraser, N., Blott, M., Leong, P. H. W. (2018). SYQ: Learning symmetric
    quantization for efficient deep neural networks. CVPR 2018. arXiv:1807.00301. Code:
    github.com/julianfaraone/SYQ (thresholds and initialization checked against it).

    Examples
    --------
    >>> q = SYQ(grouping="row", kernel_size=2, ternary=True, eta=0.1, alpha=2.0)
    >>> w = np.array([[[[0.5, -0.02], [-1.0, 0.3]]]])          # (out, in, kh, kw) = (1, 1, 2, 2)
    >>> q(w)                                                    # eta = 0.1 * 1.0
    array([[[[ 2.,  0.],
             [-2.,  2.]]]])
    >>> q.backward(np.ones_like(w))                             # alpha where M = 1, else 1
    array([[[[2., 1.],
             [2., 2.]]]])
    >>> q.alpha.grad.ravel().tolist()                           # row sums of sign(w) M
    [1.0, 0.0]
    """

    def __init__(self, *, grouping="pixel", kernel_size=None, ternary=False, eta=0.05, alpha=None):
        super().__init__()
        self.grouping = check_choice(grouping, "grouping", SYQ_GROUPINGS)
        shape = syq_alpha_shape(grouping, kernel_size)
        self.ternary = check_bool(ternary, "ternary")
        self.eta = check_real(eta, "eta")
        if not 0.0 <= self.eta < 1.0:
            raise ValueError(f"eta must be in [0, 1), got {eta}")
        self._init = alpha is None
        a0 = 1.0 if alpha is None else check_positive(alpha, "alpha")
        self.alpha = nn.Parameter(np.full(shape, a0, dtype=np.float32), name="alpha", decay=False)
        self._codes = None

    def extra_repr(self):
        return f"grouping={self.grouping!r}, ternary={self.ternary}, eta={self.eta}"

    def _check_weight(self, w):
        shape = self.alpha.data.shape
        if self.grouping == "layer":
            return
        if w.ndim != 4 or w.shape[2] != shape[0] or (self.grouping == "pixel" and w.shape[3] != shape[1]):
            kernel = f"{shape[0]} x {shape[1]}" if self.grouping == "pixel" else f"{shape[0]} rows"
            raise ValueError(f"w must be a convolution weight (out, in, kh, kw) with a kernel of {kernel} "
                             f"for grouping={self.grouping!r}, got shape {w.shape}")

    def forward(self, w):
        w = as_float_array(w, "w", allow_empty=False)
        self._check_weight(w)
        v = w.astype(np.float64)
        self.eta_ = self.eta * float(np.abs(v).max()) if self.ternary else 0.0
        codes = binary.sign(v).astype(np.int8)
        if self.ternary:
            codes = np.where(np.abs(v) > self.eta_, codes, 0).astype(np.int8)
        if self._init:                                    # mean |w| per group, once, in place
            shape = self.alpha.data.shape
            a = _sum_to(np.abs(v), shape) / (v.size / max(1, int(np.prod(shape))))
            self.alpha.data[...] = np.where(a > 0, a, 1.0)
            self._init = False
        self._codes = codes
        return (self.alpha.data.astype(w.dtype) * codes).astype(w.dtype)

    def backward(self, grad_out):
        _need_forward(self, "_codes")
        g = _grad(grad_out, self._codes.shape)
        through = self._codes * g.astype(np.float64)                 # sign(w) M dE/dQ
        self.alpha.grad += _sum_to(through, self.alpha.data.shape)
        scale = np.where(self._codes != 0, self.alpha.data, 1.0)
        return (scale * g).astype(g.dtype)


# --------------------------------------------------------------------------------------
# HWGQ: half-wave Gaussian quantized activations and their backward approximations
# --------------------------------------------------------------------------------------


_HWGQ_BACKWARDS = ("relu", "clipped", "log_tailed")


class HWGQ(nn.Module):
    r"""Half-wave Gaussian quantized activations (Cai et al. 2017) with a ReLU-like backward.

    Forward: the half-wave Gaussian quantizer :math:`Q(x)` of
    :func:`qref.nonuniform.hwgq_quantize`: 0 for :math:`x \le 0`, else the level :math:`q_i`
    of the cell :math:`(t_i, t_{i+1}]` (thresholds at the midpoints of the levels, :math:`t_1 =
    0`), with the :math:`m = 2^b - 1` positive levels of :func:`qref.nonuniform.hwgq_levels`
    (uniform or Lloyd) times ``scale``. The levels suit a unit-variance input, so put batch
    normalization before the layer, as the paper does.

    Backward (Sec. 4): :math:`Q` is piecewise constant, so its gradient is replaced by that of a
    ReLU-like function :math:`\tilde Q`:

    * ``"relu"``, the vanilla ReLU: :math:`\tilde Q'(x) = 1_{x > 0}`;
    * ``"clipped"``, the clipped ReLU :math:`\tilde Q(x) = \min(\max(x, 0), q_m)`:
      :math:`\tilde Q'(x) = 1_{0 < x \le q_m}`;
    * ``"log_tailed"``, the log-tailed ReLU :math:`\tilde Q(x) = q_m + \log(x - \tau)` for
      :math:`x > q_m` (:math:`\tau = q_m - 1`), :math:`x` on :math:`(0, q_m]`, 0 below:
      :math:`\tilde Q'(x) = 1_{0 < x \le q_m} + \frac{1_{x > q_m}}{x - \tau}`.

    Parameters
    ----------
    bits : int in [1, 8]
    uniform : bool
        Uniform levels (default; the paper's main results) or the non-uniform Lloyd levels.
    backward : {"clipped", "relu", "log_tailed"}
    scale : float > 0
        :math:`\sigma`, the standard deviation the levels are scaled to (1 after batch norm).

    Attributes
    ----------
    levels : ndarray of float64, shape (m,)
        The positive levels :math:`q_1 < \dots < q_m` (times ``scale``).

    Examples
    --------
    >>> q = HWGQ(2, backward="log_tailed")
    >>> q.levels.round(4)
    array([0.5388, 1.0776, 1.6164])
    >>> q(np.array([-1.0, 0.1, 0.9, 2.6164])).round(4)
    array([0.    , 0.5388, 1.0776, 1.6164])
    >>> q.backward(np.ones(4)).round(4)  # 1/(x - tau) with tau = q_m - 1: 1/2 at x = q_m + 1
    array([0. , 1. , 1. , 0.5])
    """

    def __init__(self, bits=2, *, uniform=True, backward="clipped", scale=1.0):
        super().__init__()
        self.bits = check_bits(bits, "bits", low=1, high=8)
        self.uniform = check_bool(uniform, "uniform")
        self.backward_rule = check_choice(backward, "backward", _HWGQ_BACKWARDS)
        self.scale = float(check_positive(scale, "scale"))
        self.levels = self.scale * nonuniform.hwgq_levels(self.bits, uniform=self.uniform).levels[1:]
        self._x = None

    def extra_repr(self):
        return f"bits={self.bits}, uniform={self.uniform}, backward={self.backward_rule!r}"

    def forward(self, x):
        x = _input(x)
        self._x = x
        return nonuniform.hwgq_quantize(x, bits=self.bits, uniform=self.uniform, scale=self.scale)

    def backward(self, grad_out):
        _need_forward(self, "_x")
        g = _grad(grad_out, self._x.shape)
        x, qm = self._x, self.levels[-1]
        if self.backward_rule == "relu":
            d = (x > 0).astype(np.float64)
        else:
            d = ((x > 0) & (x <= qm)).astype(np.float64)
            if self.backward_rule == "log_tailed":
                tau = qm - 1.0
                d = d + np.where(x > qm, 1.0 / np.maximum(x - tau, 1.0), 0.0)   # x > q_m  =>  x - tau > 1
        return (g * d).astype(g.dtype)


# --------------------------------------------------------------------------------------
# A network builder for the methods above
# --------------------------------------------------------------------------------------


def _factory(f, name):
    if f is not None and not callable(f):
        raise TypeError(f"{name} must be None or a callable (layer_index) -> Module or None, got {type(f).__name__}")
    return (lambda i: None) if f is None else f


def binary_mlp(hidden=(64,), *, weight_quantizer=None, activation=None, norm="batch", output_norm=True,
               in_features=64, classes=10, rng=0):
    r"""``Linear -> norm -> activation -> ... -> Linear [-> norm]``, the layout of BNN/XNOR-Net/HWGQ MLPs.

    The first layer sees the real inputs (BNN's "first layer" convention: only hidden
    activations are binarized), every ``Linear`` can have a weight quantizer, normalization
    comes *before* the activation (so a sign activation sees centred inputs), and BNN and
    BinaryConnect also normalize the output layer (``output_norm``).

    Parameters
    ----------
    hidden : sequence of int
    weight_quantizer : None or callable ``(i) -> Module or None``
        The i-th Linear layer's weight quantizer (i = 0, 1, ...).
    activation : None or callable ``(i) -> Module``
        The i-th hidden activation; ``None`` (or a factory returning None) gives ReLU.
    norm : {"batch", "shift", None}
        :class:`qref.nn.BatchNorm1d`, :class:`ShiftBatchNorm`, or no normalization.
    output_norm : bool
    in_features, classes : int
    rng : None, int or numpy.random.Generator
        Seeds the initialization.

    Returns
    -------
    qref.nn.Sequential

    Examples
    --------
    >>> net = binary_mlp((32,), weight_quantizer=lambda i: BinaryConnect(), activation=lambda i: QNNActivation(),
    ...                  norm="shift")
    >>> [type(m).__name__ for m in net.layers]
    ['Linear', 'ShiftBatchNorm', 'QNNActivation', 'Linear', 'ShiftBatchNorm']
    """
    hidden = [check_positive(h, "hidden", integer=True) for h in hidden]
    wq = _factory(weight_quantizer, "weight_quantizer")
    act = _factory(activation, "activation")
    if norm is not None:
        check_choice(norm, "norm", ("batch", "shift"))
    output_norm = check_bool(output_norm, "output_norm")
    rng = check_rng(rng)
    widths = [check_positive(in_features, "in_features", integer=True), *hidden,
              check_positive(classes, "classes", integer=True)]
    layers = []
    for i in range(len(widths) - 1):
        last = i == len(widths) - 2
        layers.append(nn.Linear(widths[i], widths[i + 1], rng=rng, weight_quantizer=wq(i)))
        if norm is not None and (not last or output_norm):
            layers.append(ShiftBatchNorm(widths[i + 1]) if norm == "shift" else nn.BatchNorm1d(widths[i + 1]))
        if not last:
            a = act(i)
            layers.append(nn.ReLU() if a is None else a)
    return nn.Sequential(*layers)
