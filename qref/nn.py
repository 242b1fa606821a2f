r"""A small training substrate: layers with their backward passes, optimizers, and ``fit``.

Quantization-aware training, binarized networks and incremental quantization all need the
same thing: a network whose forward pass can be intercepted by a quantizer and whose
backward pass lets a *surrogate* gradient through. This module is that network, written in
numpy so that every gradient can be read off the code, the way micrograd reads: each layer's
``forward`` and ``backward`` sit side by side, and the backward is the chain rule of
backpropagation (Rumelhart, Hinton & Williams 1986) for that one layer.

The conventions:

* A :class:`Module` has ``forward(x)`` (also ``module(x)``), which stores what the backward
  needs, and ``backward(grad_out)``, which returns :math:`\partial L/\partial x` and
  *accumulates* (``+=``) :math:`\partial L/\partial \theta` into each of its
  :class:`Parameter`'s ``.grad``. ``backward`` must follow the ``forward`` it differentiates.
* Layouts follow PyTorch: ``Linear.weight`` is ``(out, in)``, images are NCHW,
  ``Conv2d.weight`` is ``(out, in, kh, kw)``.
* Layers compute in the dtype of their input (float32 normally; float64 in gradient checks,
  after :meth:`Module.astype`).
* A *quantizer layer* is a Module too: ``forward`` quantizes, ``backward`` returns the
  surrogate (e.g. straight-through) gradient. Put it in a :class:`Sequential` to quantize
  activations, or hand it to :class:`Linear` / :class:`Conv2d` as ``weight_quantizer``.

References
----------
Rumelhart, Hinton, Williams (1986), "Learning representations by back-propagating errors",
Nature 323, 533-536.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field

import numpy as np

from . import formats as _formats
from ._validation import (
    as_float_array, as_int_array, check_bool, check_choice, check_int, check_positive, check_real, check_rng,
)

__all__ = [
    "Parameter", "Module", "Sequential", "Linear", "Conv2d", "ReLU", "ReLU6", "Flatten",
    "BatchNorm1d", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "FakeQuantize", "SoftmaxCrossEntropy",
    "SGD", "Adam", "History", "StopTraining", "backprop", "fit", "cosine_lr", "accuracy", "predict",
    "numerical_gradient", "gradcheck", "mlp", "small_cnn",
]


# --------------------------------------------------------------------------------------
# Parameters and modules
# --------------------------------------------------------------------------------------


class Parameter:
    """A trainable array and the gradient accumulated into it.

    Parameters
    ----------
    data : array_like of float
        The initial value (copied; float32 unless a float64 array is given).
    name : str
        For messages and ``named_parameters``-style listings.
    decay : bool
        Whether weight decay applies (True for weights; False for biases, batch-norm
        scales and shifts, quantizer step sizes and clip values).
    frozen : None or ndarray of bool, same shape as ``data``
        Entries marked True are never changed by an optimizer (incremental quantization
        freezes the weights it has already quantized).

    Attributes
    ----------
    data : ndarray
    grad : ndarray, same shape and dtype as ``data``, zeros after :meth:`zero_grad`.

    Examples
    --------
    >>> p = Parameter(np.ones(3), name="w")
    >>> p.data.dtype, p.grad
    (dtype('float64'), array([0., 0., 0.]))
    """

    def __init__(self, data, *, name="", decay=True, frozen=None):
        arr = as_float_array(data, "data")
        self.data = np.array(arr, dtype=arr.dtype if arr.dtype == np.float64 else np.float32)
        self.grad = np.zeros_like(self.data)
        self.name = str(name)
        self.decay = check_bool(decay, "decay")
        self.frozen = frozen

    @property
    def frozen(self):
        """None, or a bool mask of ``data``'s shape: True entries are never updated."""
        return self._frozen

    @frozen.setter
    def frozen(self, mask):
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != self.data.shape:
                raise ValueError(
                    f"frozen must be None or a bool array of shape {self.data.shape}, "
                    f"got dtype {mask.dtype} and shape {mask.shape}"
                )
            mask = mask.copy()
        self._frozen = mask

    @property
    def shape(self):
        return self.data.shape

    def zero_grad(self):
        """Set ``grad`` to zeros (of ``data``'s current shape and dtype)."""
        if self.grad.shape != self.data.shape or self.grad.dtype != self.data.dtype:
            self.grad = np.zeros_like(self.data)
        else:
            self.grad.fill(0)

    def __repr__(self):
        return f"Parameter(name={self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"


class BackwardBeforeForwardError(AttributeError, RuntimeError):
    """``backward`` was called on a layer whose ``forward`` has not run (nothing to differentiate)."""


class Module:
    """Base class of layers: ``forward``/``backward``, parameters and train/eval mode.

    Subclasses set their :class:`Parameter` and child :class:`Module` objects as attributes
    (lists of modules count too); :meth:`parameters` finds them in attribute order.

    Attributes
    ----------
    training : bool
        True (the default) in training mode; :meth:`eval` / :meth:`train` set it recursively.
        Batch normalization and some quantizers behave differently in the two modes.

    Examples
    --------
    >>> net = Sequential(Linear(3, 2, rng=0), ReLU())
    >>> [p.name for p in net.parameters()], net.eval().training
    (['weight', 'bias'], False)
    """

    #: Names of array attributes (not Parameters) that :meth:`astype` converts too.
    _buffers = ()

    def __init__(self):
        self.training = True

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def __getattr__(self, name):
        # Called only when normal lookup fails. Layers save what backward needs as private
        # attributes in forward (``self._x``); reading one that is not there means backward
        # was called first, which deserves a clearer message than AttributeError's.
        if name.startswith("_") and not name.startswith("__"):
            raise BackwardBeforeForwardError(
                f"{type(self).__name__}.backward needs what forward saves ({name}); call forward first")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def children(self):
        """The direct child modules, in attribute order."""
        out = []
        for value in vars(self).values():
            if isinstance(value, Module):
                out.append(value)
            elif isinstance(value, (list, tuple)):
                out.extend(v for v in value if isinstance(v, Module))
        return out

    def modules(self):
        """This module and all its descendants, depth first."""
        out = [self]
        for child in self.children():
            out.extend(child.modules())
        return out

    def parameters(self):
        """Own Parameters, then the children's, recursively (each Parameter once)."""
        out, seen = [], set()
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else (value,)
            for item in items:
                found = [item] if isinstance(item, Parameter) else item.parameters() if isinstance(item, Module) else []
                for p in found:
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
        return out

    def zero_grad(self):
        """Zero the gradient of every Parameter."""
        for p in self.parameters():
            p.zero_grad()
        return self

    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode, recursively; returns self."""
        mode = check_bool(mode, "mode")
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode, recursively (same as ``train(False)``); returns self."""
        return self.train(False)

    def astype(self, dtype):
        """Convert every Parameter (and buffer, e.g. running statistics) to ``dtype``, in place.

        Gradient checks run in float64: ``model.astype(np.float64)``. Returns self.
        """
        dtype = np.dtype(dtype)
        for m in self.modules():
            for p in vars(m).values():
                if isinstance(p, Parameter):
                    p.data = p.data.astype(dtype)
                    p.grad = np.zeros_like(p.data)
            for name in m._buffers:
                setattr(m, name, getattr(m, name).astype(dtype))
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        kids = self.children()
        if not kids:
            return f"{type(self).__name__}({self.extra_repr()})"
        inner = "\n".join("  " + repr(k).replace("\n", "\n  ") for k in kids)
        return f"{type(self).__name__}({self.extra_repr()}\n{inner}\n)"


class Sequential(Module):
    """Layers applied one after the other; backward runs them in reverse.

    Examples
    --------
    >>> net = Sequential(Linear(4, 3, rng=0), ReLU(), Linear(3, 2, rng=1))
    >>> x = np.ones((5, 4), dtype=np.float32)
    >>> net(x).shape, net.backward(np.ones((5, 2), dtype=np.float32)).shape
    ((5, 2), (5, 4))
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers must be Modules, got {type(layer).__name__} at position {i}")
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)


def _check_input(x, name, ndim, channels, channel_axis, layer):
    """Validate a layer's input (floating, right rank, right width) cheaply."""
    x = as_float_array(x, name, finite=False)
    if x.ndim != ndim or x.shape[channel_axis] != channels:
        want = "(n, {})".format(channels) if ndim == 2 else "(n, {}, H, W)".format(channels)
        raise ValueError(f"{name} must have shape {want} for {layer}, got shape {x.shape}")
    return x


def _bias(n):
    """A zero bias vector; biases are not weight-decayed."""
    return Parameter(np.zeros(n, np.float32), name="bias", decay=False)


def _he_init(shape, fan_in, rng):
    """He et al. (2015) initialization for ReLU networks: N(0, 2 / fan_in)."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)


# --------------------------------------------------------------------------------------
# Linear layers
# --------------------------------------------------------------------------------------


class Linear(Module):
    r"""Fully connected layer :math:`y = x W^\top + b`.

    .. math::

        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y} W, \qquad
        \frac{\partial L}{\partial W} = \Big(\frac{\partial L}{\partial y}\Big)^{\!\top} x, \qquad
        \frac{\partial L}{\partial b} = \sum_n \frac{\partial L}{\partial y_n}.

    With a ``weight_quantizer`` :math:`Q`, the forward pass uses :math:`W_q = Q(W)` and the
    backward pass sends :math:`\partial L/\partial W_q` through ``Q.backward`` to obtain
    :math:`\partial L/\partial W` (the quantizer's own Parameters receive gradients too).

    Parameters
    ----------
    in_features, out_features : int >= 1
    bias : bool
    rng : None, int or numpy.random.Generator
        Seeds the He et al. (2015) initialization :math:`W \sim \mathcal N(0, 2/\text{in})`;
        the bias starts at zero.
    weight_quantizer : Module or None

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
    bias : Parameter, shape (out_features,), or None (``decay=False``)

    Raises
    ------
    TypeError, ValueError
        In ``forward``: for a non-float input or one not of shape ``(n, in_features)``.

    References
    ----------
    Rumelhart, Hinton, Williams (1986), "Learning representations by back-propagating
    errors", Nature 323. He, Zhang, Ren, Sun (2015), "Delving deep into rectifiers", ICCV,
    Sec. 2.2 (the initialization).

    Examples
    --------
    >>> layer = Linear(3, 2, rng=0)
    >>> x = np.ones((4, 3), dtype=np.float32)
    >>> y = layer(x)
    >>> y.shape, y.dtype
    ((4, 2), dtype('float32'))
    >>> dx = layer.backward(np.ones_like(y))
    >>> bool(np.allclose(layer.bias.grad, 4.0)), dx.shape
    (True, (4, 3))
    """

    def __init__(self, in_features, out_features, *, bias=True, rng=None, weight_quantizer=None):
        super().__init__()
        self.in_features = check_positive(in_features, "in_features", integer=True)
        self.out_features = check_positive(out_features, "out_features", integer=True)
        rng = check_rng(rng)
        self.weight = Parameter(_he_init((self.out_features, self.in_features), self.in_features, rng), name="weight")
        self.bias = _bias(self.out_features) if check_bool(bias, "bias") else None
        self.weight_quantizer = _check_quantizer(weight_quantizer, "weight_quantizer")

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"

    def forward(self, x):
        x = _check_input(x, "x", 2, self.in_features, 1, f"Linear({self.in_features}, {self.out_features})")
        w = self.weight.data if self.weight_quantizer is None else self.weight_quantizer(self.weight.data)
        self._x, self._w = x, w
        y = x @ w.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_out):
        grad_w = grad_out.T @ self._x
        if self.weight_quantizer is not None:
            grad_w = self.weight_quantizer.backward(grad_w)
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        return grad_out @ self._w


def _check_quantizer(q, name):
    if q is not None and not isinstance(q, Module):
        raise TypeError(f"{name} must be a Module (forward/backward) or None, got {type(q).__name__}")
    return q


# --------------------------------------------------------------------------------------
# Convolution (im2col)
# --------------------------------------------------------------------------------------


def _im2col(x, kh, kw, stride, padding):
    """Patches of ``x`` (N, C, H, W) as rows: ``cols[(n, i, j), (c, u, v)] = x_pad[n, c, s*i + u, s*j + v]``."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, ho, wo = win.shape[:4]                               # win[n, c, i, j, u, v]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw), ho, wo


def _col2im(dcols, x_shape, kh, kw, stride, padding, ho, wo):
    """The adjoint of :func:`_im2col`: add every patch gradient back where the patch came from."""
    n, c, h, w = x_shape
    dx = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dcols.dtype)
    d = dcols.reshape(n, ho, wo, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)   # d[n, c, u, v, i, j]
    for u in range(kh):
        for v in range(kw):
            dx[:, :, u:u + stride * ho:stride, v:v + stride * wo:stride] += d[:, :, u, v]
    return dx[:, :, padding:padding + h, padding:padding + w]


class Conv2d(Module):
    r"""2-d convolution (cross-correlation, as in every framework) on NCHW images, by im2col.

    .. math::

        y_{n,o,i,j} = b_o + \sum_{c,u,v} W_{o,c,u,v}\, x^{\text{pad}}_{n,c,\,s i + u,\, s j + v}.

    Unrolling the patches into the rows of a matrix :math:`X_{\text{col}}` (im2col) makes it
    a :class:`Linear` layer applied to every patch, :math:`Y = X_{\text{col}} W^\top + b`,
    so the backward pass is Linear's, followed by col2im (the adjoint of im2col, which adds
    each patch's gradient back to the pixels it came from).

    Parameters
    ----------
    in_channels, out_channels : int >= 1
    kernel_size : int >= 1 (square kernels)
    stride : int >= 1
    padding : int >= 0 (zeros on every side)
    bias : bool
    rng : None, int or numpy.random.Generator
        Seeds the He et al. (2015) initialization :math:`\mathcal N(0, 2/(C k^2))`.
    weight_quantizer : Module or None
        As in :class:`Linear`.

    Attributes
    ----------
    weight : Parameter, shape (out_channels, in_channels, kernel_size, kernel_size)
    bias : Parameter, shape (out_channels,), or None

    Raises
    ------
    TypeError, ValueError
        In ``forward``: for a non-float input, one not of shape ``(n, in_channels, H, W)``,
        or one smaller than the kernel.

    References
    ----------
    Chellapilla, Puri, Simard (2006), "High performance convolutional neural networks for
    document processing", IWFHR (convolution unrolled into a matrix product). He et al.
    (2015), Sec. 2.2 (the initialization).

    Examples
    --------
    >>> conv = Conv2d(1, 4, 3, padding=1, rng=0)
    >>> x = np.ones((2, 1, 8, 8), np.float32)
    >>> conv(x).shape, conv.backward(np.ones((2, 4, 8, 8), np.float32)).shape
    ((2, 4, 8, 8), (2, 1, 8, 8))
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=True, rng=None,
                 weight_quantizer=None):
        super().__init__()
        self.in_channels = check_positive(in_channels, "in_channels", integer=True)
        self.out_channels = check_positive(out_channels, "out_channels", integer=True)
        self.kernel_size = check_positive(kernel_size, "kernel_size", integer=True)
        self.stride = check_positive(stride, "stride", integer=True)
        self.padding = check_int(padding, "padding", low=0)
        rng = check_rng(rng)
        k = self.kernel_size
        shape = (self.out_channels, self.in_channels, k, k)
        self.weight = Parameter(_he_init(shape, self.in_channels * k * k, rng), name="weight")
        self.bias = _bias(self.out_channels) if check_bool(bias, "bias") else None
        self.weight_quantizer = _check_quantizer(weight_quantizer, "weight_quantizer")

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")

    def forward(self, x):
        x = _check_input(x, "x", 4, self.in_channels, 1, f"Conv2d({self.in_channels}, {self.out_channels}, ...)")
        k, p = self.kernel_size, self.padding
        if x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k:
            raise ValueError(f"x of spatial size {x.shape[2:]} with padding {p} is smaller than the {k}x{k} kernel")
        w = self.weight.data if self.weight_quantizer is None else self.weight_quantizer(self.weight.data)
        cols, ho, wo = _im2col(x, k, k, self.stride, p)          # (N*Ho*Wo, C*k*k)
        self._cols, self._w, self._x_shape, self._out_hw = cols, w, x.shape, (ho, wo)
        y = cols @ w.reshape(self.out_channels, -1).T             # (N*Ho*Wo, O)
        if self.bias is not None:
            y += self.bias.data
        return y.reshape(x.shape[0], ho, wo, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad_out):
        ho, wo = self._out_hw
        g = grad_out.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)    # (N*Ho*Wo, O)
        grad_w = (g.T @ self._cols).reshape(self.weight.data.shape)
        if self.weight_quantizer is not None:
            grad_w = self.weight_quantizer.backward(grad_w)
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0)
        dcols = g @ self._w.reshape(self.out_channels, -1)        # (N*Ho*Wo, C*k*k)
        k = self.kernel_size
        return _col2im(dcols, self._x_shape, k, k, self.stride, self.padding, ho, wo)


# --------------------------------------------------------------------------------------
# Activations and reshaping
# --------------------------------------------------------------------------------------


class ReLU(Module):
    r"""Rectified linear unit :math:`y = \max(x, 0)`; :math:`\partial y/\partial x = [x > 0]`.

    Examples
    --------
    >>> r = ReLU()
    >>> r(np.array([-1.0, 2.0])), r.backward(np.array([5.0, 5.0]))
    (array([0., 2.]), array([0., 5.]))
    """

    def forward(self, x):
        self._mask = x > 0
        return np.where(self._mask, x, 0).astype(x.dtype, copy=False)

    def backward(self, grad_out):
        return np.where(self._mask, grad_out, 0).astype(grad_out.dtype, copy=False)


class ReLU6(Module):
    r"""ReLU clipped at 6, :math:`y = \min(\max(x, 0), 6)`; gradient :math:`[0 < x < 6]`.

    The bounded activation of MobileNet (Howard et al. 2017), whose fixed range suits
    8-bit activations.

    Examples
    --------
    >>> r = ReLU6()
    >>> r(np.array([-1.0, 2.0, 7.0])), r.backward(np.ones(3))
    (array([0., 2., 6.]), array([0., 1., 0.]))
    """

    def forward(self, x):
        self._mask = (x > 0) & (x < 6)
        return np.clip(x, 0, 6)

    def backward(self, grad_out):
        return np.where(self._mask, grad_out, 0).astype(grad_out.dtype, copy=False)


class Flatten(Module):
    """Flatten every axis but the first: ``(n, ...)`` to ``(n, prod(...))``.

    Examples
    --------
    >>> f = Flatten()
    >>> f(np.zeros((2, 3, 4, 4))).shape, f.backward(np.zeros((2, 48))).shape
    ((2, 48), (2, 3, 4, 4))
    """

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out):
        return grad_out.reshape(self._shape)


# --------------------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------------------


class _BatchNorm(Module):
    _buffers = ("running_mean", "running_var")
    _axes = ()      # the axes statistics are taken over
    _ndim = 0

    def __init__(self, num_features, *, momentum=0.1, eps=1e-5):
        super().__init__()
        self.num_features = check_positive(num_features, "num_features", integer=True)
        self.momentum = check_real(momentum, "momentum")
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.eps = check_positive(eps, "eps")
        self.weight = Parameter(np.ones(self.num_features, np.float32), name="weight", decay=False)   # gamma
        self.bias = Parameter(np.zeros(self.num_features, np.float32), name="bias", decay=False)      # beta
        self.running_mean = np.zeros(self.num_features, np.float32)
        self.running_var = np.ones(self.num_features, np.float32)

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"

    def _shape(self, v):
        """A per-channel vector shaped to broadcast against the input."""
        return v.reshape((1, -1) + (1,) * (self._ndim - 2))

    def forward(self, x):
        x = _check_input(x, "x", self._ndim, self.num_features, 1, f"{type(self).__name__}({self.num_features})")
        if self.training:                                       # Algorithm 1: batch statistics
            mean = x.mean(axis=self._axes, keepdims=True)
            var = x.var(axis=self._axes, keepdims=True)
            m = x.size // self.num_features
            r = self.momentum                                   # running averages (Algorithm 2: population)
            self.running_mean = ((1 - r) * self.running_mean + r * mean.reshape(-1)).astype(self.running_mean.dtype)
            unbiased = var.reshape(-1) * (m / (m - 1) if m > 1 else 1.0)
            self.running_var = ((1 - r) * self.running_var + r * unbiased).astype(self.running_var.dtype)
        else:                                                   # Algorithm 2: population statistics
            mean, var = self._shape(self.running_mean), self._shape(self.running_var)
        self._inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        self._xhat = ((x - mean) * self._inv_std).astype(x.dtype, copy=False)
        return self._xhat * self._shape(self.weight.data) + self._shape(self.bias.data)

    def backward(self, grad_out):
        self.weight.grad += (grad_out * self._xhat).sum(axis=self._axes)
        self.bias.grad += grad_out.sum(axis=self._axes)
        dxhat = grad_out * self._shape(self.weight.data)
        if not self.training:                                   # a fixed affine map
            return dxhat * self._inv_std
        # the mean and variance depend on x too (the backward pass of Algorithm 1)
        return self._inv_std * (dxhat - dxhat.mean(axis=self._axes, keepdims=True)
                                - self._xhat * (dxhat * self._xhat).mean(axis=self._axes, keepdims=True))


_BN_DOC = r"""Batch normalization (Ioffe & Szegedy 2015) over {what}.

    Training mode normalizes with the minibatch statistics (their Algorithm 1) and updates
    running averages; evaluation mode uses the running averages (Algorithm 2, with
    exponential averages in place of the population mean, as frameworks do):

    .. math::

        \hat x = \frac{{x - \mu_B}}{{\sqrt{{\sigma_B^2 + \epsilon}}}}, \qquad y = \gamma \hat x + \beta, \qquad
        \mu \leftarrow (1 - r)\mu + r\mu_B, \quad
        \sigma^2 \leftarrow (1 - r)\sigma^2 + r\tfrac{{m}}{{m - 1}}\sigma_B^2,

    with :math:`m` values per channel in the batch and :math:`r` = ``momentum``. The backward
    pass in training mode differentiates through :math:`\mu_B` and :math:`\sigma_B^2`:

    .. math::

        \frac{{\partial L}}{{\partial x}} = \frac{{1}}{{\sqrt{{\sigma_B^2 + \epsilon}}}}\Big(g - \overline{{g}}
        - \hat x\, \overline{{g \hat x}}\Big), \qquad g = \gamma \frac{{\partial L}}{{\partial y}},

    (bars: means over the batch{bar}); in evaluation mode it is the affine map's.

    Parameters
    ----------
    num_features : int >= 1
        {feat}
    momentum : float in [0, 1]
        :math:`r`, the weight of the current batch in the running averages.
    eps : float > 0

    Attributes
    ----------
    weight, bias : Parameter, shape (num_features,)
        :math:`\gamma` (starts at 1) and :math:`\beta` (starts at 0); ``decay=False``.
    running_mean, running_var : ndarray, shape (num_features,)

    References
    ----------
    Ioffe, Szegedy (2015), "Batch normalization: accelerating deep network training by
    reducing internal covariate shift", ICML, Algorithms 1 and 2 and Sec. 3.

    Examples
    --------
    {example}
    """


class BatchNorm1d(_BatchNorm):
    _axes = (0,)
    _ndim = 2


class BatchNorm2d(_BatchNorm):
    _axes = (0, 2, 3)
    _ndim = 4


BatchNorm1d.__doc__ = _BN_DOC.format(
    what="the features of ``(n, num_features)`` inputs", bar="", feat="Features (columns) of the input.",
    example=""">>> bn = BatchNorm1d(2)
    >>> y = bn(np.array([[1.0, 10.0], [3.0, 30.0]]))
    >>> y.round(3), bn.running_mean
    (array([[-1., -1.],
           [ 1.,  1.]]), array([0.2, 2. ], dtype=float32))""")
BatchNorm2d.__doc__ = _BN_DOC.format(
    what="the channels of NCHW images", bar=", height and width", feat="Channels ``C`` of the input.",
    example=""">>> bn = BatchNorm2d(3)
    >>> y = bn(np.random.default_rng(0).normal(2.0, 3.0, size=(4, 3, 5, 5)))
    >>> bool(np.allclose(y.mean(axis=(0, 2, 3)), 0)), bool(np.allclose(y.std(axis=(0, 2, 3)), 1, atol=1e-4))
    (True, True)""")


# --------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------


def _windows(x, k):
    """Non-overlapping k x k windows of ``x`` (N, C, H, W) as (N, C, H//k, W//k, k*k).

    Rows and columns beyond a multiple of k are dropped (as PyTorch does).
    """
    n, c, h, w = x.shape
    ho, wo = h // k, w // k
    win = x[:, :, :ho * k, :wo * k].reshape(n, c, ho, k, wo, k).transpose(0, 1, 2, 4, 3, 5)
    return win.reshape(n, c, ho, wo, k * k)


def _unwindows(dwin, x_shape, k):
    """The adjoint of :func:`_windows`: windows back to an image, zeros where rows/cols were dropped."""
    n, c, ho, wo, _ = dwin.shape
    d = dwin.reshape(n, c, ho, wo, k, k).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho * k, wo * k)
    if d.shape == tuple(x_shape):
        return d
    out = np.zeros(x_shape, dwin.dtype)
    out[:, :, :ho * k, :wo * k] = d
    return out


class _Pool(Module):
    def __init__(self, kernel_size):
        super().__init__()
        self.kernel_size = check_positive(kernel_size, "kernel_size", integer=True)

    def extra_repr(self):
        return str(self.kernel_size)

    def _check(self, x):
        x = as_float_array(x, "x", finite=False)
        k = self.kernel_size
        if x.ndim != 4 or x.shape[2] < k or x.shape[3] < k:
            raise ValueError(f"x must have shape (n, C, H, W) with H, W >= {k} for "
                             f"{type(self).__name__}({k}), got shape {x.shape}")
        return x


class MaxPool2d(_Pool):
    r"""Max pooling over non-overlapping ``k x k`` windows (stride ``k``; leftover rows/columns dropped).

    The gradient goes to the window's maximum (the first one, on ties) and nowhere else.

    Examples
    --------
    >>> pool = MaxPool2d(2)
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> pool(x)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    def forward(self, x):
        x = self._check(x)
        win = _windows(x, self.kernel_size)                    # (N, C, Ho, Wo, k*k)
        self._arg, self._x_shape = win.argmax(axis=-1)[..., None], x.shape   # first maximum
        return np.take_along_axis(win, self._arg, axis=-1)[..., 0]

    def backward(self, grad_out):
        winner = self._arg == np.arange(self.kernel_size ** 2)  # (N, C, Ho, Wo, k*k): one True per window
        dwin = np.where(winner, grad_out[..., None], grad_out.dtype.type(0))
        return _unwindows(dwin, self._x_shape, self.kernel_size)


class AvgPool2d(_Pool):
    r"""Average pooling over non-overlapping ``k x k`` windows; each input gets :math:`g / k^2`.

    Examples
    --------
    >>> pool = AvgPool2d(2)
    >>> pool(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0, 0]
    array([0.25, 0.25, 0.25, 0.25])
    """

    def forward(self, x):
        x = self._check(x)
        self._x_shape = x.shape
        return _windows(x, self.kernel_size).mean(axis=-1)

    def backward(self, grad_out):
        k2 = self.kernel_size ** 2
        dwin = np.broadcast_to((grad_out / k2)[..., None], grad_out.shape + (k2,))
        return _unwindows(np.ascontiguousarray(dwin), self._x_shape, self.kernel_size)


# --------------------------------------------------------------------------------------
# The simplest quantizer layer
# --------------------------------------------------------------------------------------


class FakeQuantize(Module):
    r"""Min-max fake quantization with the straight-through estimator: the baseline quantizer layer.

    Forward: :math:`\hat x = S(\mathrm{clip}(\mathrm{round}(x/S) + Z, q_{\min}, q_{\max}) - Z)`
    (:func:`qref.uniform.fake_quantize`; Jacob et al. 2018, Sec. 3) with :math:`S, Z` from the
    current tensor's minimum and maximum. Backward: the straight-through estimator of Bengio
    et al. (2013), :math:`\partial L/\partial x = \partial L/\partial \hat x` (nothing is
    clipped, since the range is the data's own). Works as an activation quantizer or as a
    ``weight_quantizer``; :mod:`qref.qat` has the learned-range quantizers.

    Parameters
    ----------
    bits : int in [2, 16]
    symmetric : bool
        Symmetric (zero point 0, for weights) or asymmetric (for activations) range.

    References
    ----------
    Jacob et al. (2018), "Quantization and training of neural networks for efficient
    integer-arithmetic-only inference", CVPR, Sec. 3. Bengio, Léonard, Courville (2013),
    "Estimating or propagating gradients through stochastic neurons for conditional
    computation", arXiv:1308.3432.

    Examples
    --------
    >>> fq = FakeQuantize(bits=2)
    >>> fq(np.array([0.0, 0.2, 0.6, 0.9, 3.0], np.float32))
    array([0., 0., 1., 1., 3.], dtype=float32)
    >>> fq.backward(np.ones(5, np.float32))
    array([1., 1., 1., 1., 1.], dtype=float32)
    """

    def __init__(self, bits=8, *, symmetric=False):
        super().__init__()
        from ._validation import check_bits
        self.bits = check_bits(bits, "bits", low=2, high=16)
        self.symmetric = check_bool(symmetric, "symmetric")

    def extra_repr(self):
        return f"bits={self.bits}, symmetric={self.symmetric}"

    def forward(self, x):
        from .uniform import fake_quantize, params_from_data
        return fake_quantize(x, params_from_data(x, bits=self.bits, symmetric=self.symmetric))

    def backward(self, grad_out):
        return grad_out


# --------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------


class SoftmaxCrossEntropy:
    r"""Mean cross-entropy of softmax probabilities, and its gradient w.r.t. the logits.

    .. math::

        L = -\frac{1}{N}\sum_{n} \log p_{n, y_n}, \qquad
        p_{n,k} = \frac{e^{z_{n,k}}}{\sum_j e^{z_{n,j}}}, \qquad
        \frac{\partial L}{\partial z_{n,k}} = \frac{p_{n,k} - [k = y_n]}{N}.

    Raises
    ------
    TypeError, ValueError
        In ``forward``: for non-float, empty or non-2-D ``logits``, or labels ``y`` that are
        not integers in ``[0, classes)``, one per row.

    Examples
    --------
    >>> loss = SoftmaxCrossEntropy()
    >>> z = np.zeros((2, 4), dtype=np.float32)
    >>> round(loss(z, np.array([0, 3])), 6) == round(float(np.log(4)), 6)
    True
    >>> loss.backward()[0]
    array([-0.375,  0.125,  0.125,  0.125], dtype=float32)
    """

    def forward(self, logits, y):
        z = as_float_array(logits, "logits", allow_empty=False, finite=False)
        if z.ndim != 2:
            raise ValueError(f"logits must have shape (n, classes), got shape {z.shape}")
        y = as_int_array(y, "y")
        if y.shape != (z.shape[0],):
            raise ValueError(f"y must have shape ({z.shape[0]},) to match logits, got shape {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
            bad = int(y.min() if y.min() < 0 else y.max())
            raise ValueError(f"y must hold class labels in [0, {z.shape[1]}) for {z.shape[1]} logits, got {bad}")
        shifted = z - z.max(axis=1, keepdims=True)            # stable: the largest logit is 0
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._p, self._y = np.exp(log_p), y
        return float(-log_p[np.arange(len(y)), y].mean())

    __call__ = forward

    def backward(self):
        g = self._p.copy()
        g[np.arange(len(self._y)), self._y] -= 1
        return g / len(self._y)


# --------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------


class _Optimizer:
    def __init__(self, params, lr, weight_decay):
        params = list(params)
        if not params:
            raise ValueError("params must hold at least one Parameter, got an empty list")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params must hold Parameters, got {type(p).__name__} at position {i}")
        self.params = params
        self.lr = check_positive(lr, "lr")
        self.weight_decay = check_real(weight_decay, "weight_decay")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")

    def zero_grad(self):
        """Zero the gradient of every Parameter."""
        for p in self.params:
            p.zero_grad()

    def _grad(self, p):
        """The gradient plus L2 weight decay (for ``p.decay``), as float64."""
        g = p.grad.astype(np.float64)
        if self.weight_decay and p.decay:
            g += self.weight_decay * p.data
        return g

    def _apply(self, p, new):
        """Write ``new`` into ``p.data``, leaving the frozen entries as they were."""
        if p.frozen is not None:
            new = np.where(p.frozen, p.data, new)
        p.data[...] = new


class SGD(_Optimizer):
    r"""Stochastic gradient descent with momentum, L2 weight decay and optional fixed-point weights.

    .. math::

        g_t = \nabla_\theta L + \lambda\,\theta_{t-1}, \qquad
        v_t = \mu\, v_{t-1} + g_t, \qquad
        \theta_t = \mathrm{Q}\big(\theta_{t-1} - \eta\, v_t\big),

    (the momentum form PyTorch uses; :math:`\lambda` only for Parameters with ``decay=True``).
    :math:`\mathrm{Q}` is the identity, or, with ``weight_format``, the conversion to the
    fixed-point format :math:`\langle \mathrm{IL}, \mathrm{FL} \rangle` of Gupta et al. (2015,
    Sec. 3) after every update, by round-to-nearest (their Eq. 1) or stochastic rounding
    (their Eq. 2) and saturation: the weights live in fixed point, and an update smaller than
    half a step survives only in expectation, through stochastic rounding. The update itself
    is computed in float64 before rounding. Entries marked in ``Parameter.frozen`` never change.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float > 0
        :math:`\eta`.
    momentum : float in [0, 1)
        :math:`\mu`.
    weight_decay : float >= 0
        :math:`\lambda`.
    weight_format : None, FixedPointFormat or (int_bits, frac_bits)
        Keep every parameter in this (signed) fixed-point format after each step.
    rounding : str
        A mode of :func:`qref.rounding.round` (``"stochastic"`` or ``"half_even"`` are the two
        the paper compares); used only with ``weight_format``.
    rng : None, int or numpy.random.Generator
        For stochastic rounding.

    References
    ----------
    Gupta, Agrawal, Gopalakrishnan, Narayanan (2015), "Deep learning with limited numerical
    precision", ICML, Sec. 3 (Eqs. 1-2) and Sec. 4.

    Examples
    --------
    >>> p = Parameter(np.array([1.0, 2.0]))
    >>> p.grad[:] = [0.5, -0.5]
    >>> SGD([p], lr=0.1).step()
    >>> p.data
    array([0.95, 2.05])

    Fixed-point weights with step :math:`2^{-4}`: an update of 0.025 is less than half a step
    and round-to-nearest throws it away.

    >>> p = Parameter(np.array([1.0, 2.0]))
    >>> p.grad[:] = [0.5, -0.5]
    >>> SGD([p], lr=0.05, weight_format=(3, 4), rounding="half_even").step()
    >>> p.data
    array([1., 2.])
    """

    def __init__(self, params, *, lr, momentum=0.0, weight_decay=0.0, weight_format=None, rounding="stochastic",
                 rng=None):
        super().__init__(params, lr, weight_decay)
        self.momentum = check_real(momentum, "momentum")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_format is not None and not isinstance(weight_format, _formats.FixedPointFormat):
            try:
                int_bits, frac_bits = weight_format
            except (TypeError, ValueError):
                raise TypeError(
                    f"weight_format must be None, a FixedPointFormat or a pair (int_bits, frac_bits), "
                    f"got {weight_format!r}"
                ) from None
            weight_format = _formats.FixedPointFormat(int_bits, frac_bits)
        self.weight_format = weight_format
        from .rounding import MODES
        self.rounding = check_choice(rounding, "rounding", MODES)
        self.rng = check_rng(rng)
        self._velocity = [None] * len(self.params)

    def step(self):
        """Update every Parameter from its ``.grad``."""
        for i, p in enumerate(self.params):
            g = self._grad(p)
            if self.momentum:
                v = self._velocity[i]
                self._velocity[i] = g = g if v is None else self.momentum * v + g
            new = p.data - self.lr * g
            if self.weight_format is not None:
                f = self.weight_format
                new = _formats.to_fixed_point(new, int_bits=f.int_bits, frac_bits=f.frac_bits, signed=f.signed,
                                              rounding=self.rounding, rng=self.rng)
            self._apply(p, new)


class Adam(_Optimizer):
    r"""Adam (Kingma & Ba 2015, Algorithm 1), with L2 weight decay added to the gradient.

    .. math::

        g_t &= \nabla_\theta L + \lambda\,\theta_{t-1}, \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \\
        \theta_t &= \theta_{t-1} - \eta\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}.

    :math:`\lambda` applies only to Parameters with ``decay=True``; entries marked in
    ``Parameter.frozen`` never change.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float > 0
        :math:`\eta` (the paper's :math:`\alpha`).
    betas : (float, float), each in [0, 1)
    eps : float > 0
    weight_decay : float >= 0

    References
    ----------
    Kingma, Ba (2015), "Adam: A method for stochastic optimization", ICLR, Algorithm 1.

    Examples
    --------
    The first step moves every entry by ``lr`` against the sign of its gradient:

    >>> p = Parameter(np.array([1.0, 2.0]))
    >>> p.grad[:] = [0.5, -3.0]
    >>> Adam([p], lr=0.1).step()
    >>> p.data.round(6)
    array([0.9, 2.1])
    """

    def __init__(self, params, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (check_real(b1, "betas[0]"), check_real(b2, "betas[1]"))
        for k, b in enumerate(self.betas):
            if not 0 <= b < 1:
                raise ValueError(f"betas[{k}] must be in [0, 1), got {b}")
        self.eps = check_positive(eps, "eps")
        self.t = 0
        self._m = [np.zeros(p.data.shape) for p in self.params]
        self._v = [np.zeros(p.data.shape) for p in self.params]

    def step(self):
        """Update every Parameter from its ``.grad``."""
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self._m, self._v):
            g = self._grad(p)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1 ** self.t)
            v_hat = v / (1 - b2 ** self.t)
            self._apply(p, p.data - self.lr * m_hat / (np.sqrt(v_hat) + self.eps))


# --------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """What :func:`fit` records, one entry per epoch.

    Attributes
    ----------
    loss : list of float
        Mean training loss over the epoch's minibatches.
    train_acc : list of float
        Accuracy on the epoch's minibatches as they were trained (training mode, running).
    val_acc : list of float
        Accuracy on ``(X_val, y_val)`` after the epoch (evaluation mode); empty without them.
    seconds : list of float
        Wall time of each epoch (training and validation).
    """

    loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    seconds: list = field(default_factory=list)


def _check_xy(X, y, xname, yname):
    X = as_float_array(X, xname, allow_empty=False, allow_0d=False)
    y = as_int_array(y, yname)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"{yname} must have shape ({len(X)},) to match {xname}, got shape {y.shape}")
    if y.min() < 0:
        raise ValueError(f"{yname} must hold class labels >= 0, got {int(y.min())}")
    return X, y


def _progress(iterable, enabled):
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is optional
            return iterable
        return tqdm(iterable, desc="fit", unit="epoch")
    return iterable


class StopTraining(Exception):
    """Raise it in :func:`fit`'s ``gradient`` hook or ``callback`` to end training early.

    From ``gradient`` it stops in the middle of an epoch: the minibatch gets no optimizer step,
    and the epoch's ``loss`` entry is NaN (no other entry is recorded for it). From
    ``callback`` it stops after the epoch, which is recorded in full. Either way :func:`fit`
    returns the :class:`History` so far, with the model in evaluation mode.
    """


def backprop(model, x, y, loss, *, zero_grad=None):
    r"""Forward, loss and backward pass on one minibatch: the gradient lands in ``.grad``.

    Computes ``logits = model(x)`` and the loss, then clears the gradients (``zero_grad()``,
    default ``model.zero_grad``) and backpropagates :math:`\partial L/\partial\,\text{logits}`,
    so that each Parameter's ``.grad`` holds the gradient of the mean loss over ``x``. The body
    of :func:`fit`'s minibatch loop (without the optimizer step); a ``gradient`` hook of
    :func:`fit` may call it on parts of the minibatch (as :func:`qref.gradients.fit_data_parallel`
    does for each worker's shard).

    Parameters
    ----------
    model : Module
        In the mode it is in (:func:`fit` sets training mode).
    x : ndarray of float, shape (m, ...)
        Inputs; not checked (use :func:`fit` for checked inputs).
    y : ndarray of int, shape (m,)
    loss : object with ``forward(logits, y) -> float`` and ``backward()``, e.g. :class:`SoftmaxCrossEntropy`
    zero_grad : None or callable
        Clears the gradients before the backward pass; None calls ``model.zero_grad()``.
        :func:`fit` passes ``optimizer.zero_grad``.

    Returns
    -------
    loss_sum : float
        The mean loss times ``len(y)`` (so that sums over minibatches divide by the examples).
    n_correct : int
        Examples whose largest logit is the label.

    Examples
    --------
    >>> net = Sequential(Linear(2, 2, rng=0))
    >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), np.array([0, 1])
    >>> loss_sum, n_correct = backprop(net, x, y, SoftmaxCrossEntropy())
    >>> round(loss_sum / 2, 4) == round(SoftmaxCrossEntropy().forward(net(x), y), 4), net[0].weight.grad.shape
    (True, (2, 2))
    """
    logits = model(x)
    loss_sum = loss.forward(logits, y) * len(y)
    n_correct = np.count_nonzero(logits.argmax(axis=1) == y)
    (model.zero_grad if zero_grad is None else zero_grad)()
    model.backward(loss.backward())
    return loss_sum, n_correct


def fit(model, X, y, *, epochs, optimizer, batch_size=64, rng=0, X_val=None, y_val=None, progress=True,
        callback=None, loss=None, drop_last=False, blas_threads=1, gradient=None):
    r"""Train ``model`` by minibatch gradient descent; return the per-epoch :class:`History`.

    Each epoch visits the training set once in a random order drawn from ``rng``, in
    minibatches of ``batch_size`` (the last one smaller, or dropped with ``drop_last``). For each minibatch:
    ``model(x)``, the loss, ``optimizer.zero_grad()``, ``model.backward(dL/dlogits)``,
    ``optimizer.step()``. The model is in training mode during the epoch; ``fit`` leaves it
    in evaluation mode. With the same ``rng`` and initial model the result is identical.

    Parameters
    ----------
    model : Module
    X : ndarray of float, shape (n, ...)
        Inputs (not modified).
    y : ndarray of int, shape (n,)
        Class labels in ``[0, classes)``.
    epochs : int >= 1
    optimizer : SGD, Adam or any object with ``zero_grad()`` and ``step()``
    batch_size : int >= 1
    rng : None, int or numpy.random.Generator
        Shuffles the minibatches.
    X_val, y_val : optional validation set, evaluated after each epoch.
    progress : bool
        Show a progress bar (``tqdm.auto``, if tqdm is installed).
    callback : None or callable ``(epoch, model, history)``
        Called after each epoch (``epoch`` counts from 0); may, e.g., freeze weights.
    loss : None or object with ``forward(logits, y) -> float`` and ``backward()``
        Default :class:`SoftmaxCrossEntropy`.
    drop_last : bool
        Skip each epoch's last, incomplete minibatch (so every step averages ``batch_size``
        examples); its examples still come up in other epochs, in other minibatches.
    blas_threads : int >= 1 or None
        BLAS threads while training (through ``threadpoolctl``, if installed; None leaves
        the setting alone). One is the default: the matrices of small networks are too small
        for a second thread to pay for its synchronization, and on a busy machine a spinning
        BLAS thread slows training several-fold.
    gradient : None or callable ``(model, xb, yb, loss) -> (loss_sum, n_correct)``
        A per-minibatch hook that replaces the forward and backward pass: it must leave the
        gradient to apply in each Parameter's ``.grad`` and return the minibatch's summed loss
        and number of correct predictions (as :func:`backprop` does, and may be used to do);
        ``fit`` then calls ``optimizer.step()``. With a hook, ``fit`` does not call
        ``optimizer.zero_grad()`` (the hook clears what it needs), so the optimizer needs only
        ``step()``. It may raise :class:`StopTraining`. None (default) is
        ``backprop(model, xb, yb, loss, zero_grad=optimizer.zero_grad)``.
        :func:`qref.gradients.fit_data_parallel` uses it to split each minibatch among
        simulated workers and quantize their gradients.

    Returns
    -------
    History

    Raises
    ------
    TypeError, ValueError
        For non-float or non-finite ``X``, labels that are not integers in range, mismatched
        lengths, or ``epochs`` / ``batch_size`` below 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = Sequential(Linear(2, 2, rng=0))
    >>> h = fit(net, X, y, epochs=5, optimizer=SGD(net.parameters(), lr=0.5), progress=False)
    >>> len(h.loss), h.loss[-1] < h.loss[0], accuracy(net, X, y) > 0.95
    (5, True, True)
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    X, y = _check_xy(X, y, "X", "y")
    epochs = check_positive(epochs, "epochs", integer=True)
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    if gradient is not None and not callable(gradient):
        raise TypeError(f"gradient must be callable or None, got {type(gradient).__name__}")
    if not (hasattr(optimizer, "step") and (gradient is not None or hasattr(optimizer, "zero_grad"))):
        needs = "step()" if gradient is not None else "step() and zero_grad()"
        raise TypeError(f"optimizer must have {needs}, got {type(optimizer).__name__}")
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    if X_val is not None:
        X_val, y_val = _check_xy(X_val, y_val, "X_val", "y_val")
    progress = check_bool(progress, "progress")
    drop_last = check_bool(drop_last, "drop_last")
    if drop_last and batch_size > len(X):
        raise ValueError(f"batch_size must be <= len(X) = {len(X)} with drop_last=True, got {batch_size}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    loss_fn = SoftmaxCrossEntropy() if loss is None else loss
    rng = check_rng(rng)
    if blas_threads is not None:
        blas_threads = check_positive(blas_threads, "blas_threads", integer=True)
    with _blas_limit(blas_threads):
        return _fit(model, X, y, epochs, optimizer, batch_size, rng, X_val, y_val, progress, callback, loss_fn,
                    drop_last, gradient)


def _blas_limit(threads):
    """A context limiting the BLAS to ``threads`` threads (a no-op without threadpoolctl or for None)."""
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl is optional
            pass
        else:
            return threadpool_limits(limits=threads, user_api="blas")
    return contextlib.nullcontext()


def _fit(model, X, y, epochs, optimizer, batch_size, rng, X_val, y_val, progress, callback, loss_fn, drop_last,
         gradient):
    """The training loop of :func:`fit` (arguments already checked)."""

    history = History()
    n = len(X)
    n_used = n - n % batch_size if drop_last else n              # examples trained on per epoch
    bar = _progress(range(epochs), progress)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(n)
        total_loss = total_correct = 0.0
        try:
            for start in range(0, n_used, batch_size):
                idx = order[start:start + batch_size]
                xb, yb = X[idx], y[idx]
                if gradient is None:
                    batch_loss, batch_correct = backprop(model, xb, yb, loss_fn, zero_grad=optimizer.zero_grad)
                else:
                    batch_loss, batch_correct = gradient(model, xb, yb, loss_fn)
                total_loss += batch_loss
                total_correct += batch_correct
                optimizer.step()
        except StopTraining:
            history.loss.append(float("nan"))
            break
        history.loss.append(total_loss / n_used)
        history.train_acc.append(total_correct / n_used)
        if X_val is not None:
            history.val_acc.append(accuracy(model, X_val, y_val))
        history.seconds.append(time.perf_counter() - t0)
        if bar is not None and hasattr(bar, "set_postfix"):
            post = dict(loss=f"{history.loss[-1]:.4f}", acc=f"{history.train_acc[-1]:.4f}")
            if history.val_acc:
                post["val_acc"] = f"{history.val_acc[-1]:.4f}"
            bar.set_postfix(post)
        if callback is not None:
            try:
                callback(epoch, model, history)
            except StopTraining:
                break
    model.eval()
    return history


def cosine_lr(optimizer, *, epochs, lr_min=0.0):
    r"""A :func:`fit` callback that anneals ``optimizer.lr`` along a half cosine (Loshchilov & Hutter 2017).

    .. math::

        \eta_e = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})\big(1 + \cos(\pi e / E)\big),

    set after epoch :math:`e - 1` for epoch :math:`e = 1, \dots, E - 1` (:math:`\eta_0` is the
    optimizer's ``lr`` when the callback is made; no restarts).

    Parameters
    ----------
    optimizer : SGD or Adam (anything with an ``lr`` attribute)
    epochs : int >= 1
        :math:`E`, the ``epochs`` given to :func:`fit`.
    lr_min : float >= 0

    Returns
    -------
    callable ``(epoch, model, history)``

    References
    ----------
    Loshchilov, Hutter (2017), "SGDR: stochastic gradient descent with warm restarts", ICLR,
    Sec. 3 (one period, no restart).

    Examples
    --------
    >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    >>> cb = cosine_lr(opt, epochs=4)
    >>> [cb(e, None, None) or round(opt.lr, 3) for e in range(3)]
    [0.854, 0.5, 0.146]
    """
    epochs = check_positive(epochs, "epochs", integer=True)
    lr_min = check_real(lr_min, "lr_min")
    if lr_min < 0:
        raise ValueError(f"lr_min must be >= 0, got {lr_min}")
    lr0 = optimizer.lr

    def callback(epoch, model, history):
        optimizer.lr = float(lr_min + 0.5 * (lr0 - lr_min) * (1 + np.cos(np.pi * min(epoch + 1, epochs) / epochs)))

    return callback


def predict(model, X, *, batch_size=512):
    """The model's outputs (logits) on ``X`` in evaluation mode, batch by batch.

    The model's train/eval mode is restored afterwards.

    Parameters
    ----------
    model : Module
    X : ndarray of float, shape (n, ...)
    batch_size : int >= 1

    Returns
    -------
    ndarray, shape (n, classes)

    Examples
    --------
    >>> predict(Linear(3, 2, rng=0), np.zeros((4, 3), np.float32)).shape
    (4, 2)
    """
    X = as_float_array(X, "X", allow_empty=False, allow_0d=False)
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return np.concatenate([model(X[i:i + batch_size]) for i in range(0, len(X), batch_size)])
    finally:
        for m, mode in modes:
            m.training = mode


def accuracy(model, X, y, *, batch_size=512):
    """Fraction of ``X`` whose largest logit is the label ``y`` (evaluation mode, restored after).

    Parameters
    ----------
    model : Module
    X : ndarray of float, shape (n, ...)
    y : ndarray of int, shape (n,)
    batch_size : int >= 1

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> net = Linear(2, 2, rng=0)
    >>> net.weight.data[:] = [[1, 0], [0, 1]]
    >>> accuracy(net, np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]]), np.array([0, 1, 0]))
    0.6666666666666666
    """
    X, y = _check_xy(X, y, "X", "y")
    return float(np.mean(predict(model, X, batch_size=batch_size).argmax(axis=1) == y))


# --------------------------------------------------------------------------------------
# Gradient checking
# --------------------------------------------------------------------------------------


def numerical_gradient(f, x, *, eps=1e-3):
    r"""Central-difference gradient of a scalar function of an array.

    .. math::

        \frac{\partial f}{\partial x_i} \approx \frac{f(x + \epsilon e_i) - f(x - \epsilon e_i)}{2\epsilon}.

    ``x`` is perturbed *in place*, one entry at a time, and restored exactly, so ``f`` may
    read it from wherever it lives (e.g. ``f = lambda _: loss()`` reading ``p.data``).

    Parameters
    ----------
    f : callable ``f(x) -> float``
    x : ndarray of float (writable)
    eps : float > 0
        Use float64 and ``eps`` near ``1e-6`` for tight checks.

    Returns
    -------
    ndarray of float64, shape of ``x``

    Examples
    --------
    >>> x = np.array([1.0, 2.0])
    >>> numerical_gradient(lambda v: float((v ** 3).sum()), x, eps=1e-5).round(6)
    array([ 3., 12.])
    """
    eps = check_positive(eps, "eps")
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"x must be a floating numpy array (perturbed in place), got {type(x).__name__}")
    grad = np.zeros(x.shape)
    flat = x.reshape(-1)  # a view (x must be contiguous to be perturbed in place)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        grad.flat[i] = (up - down) / (2 * eps)
    return grad


def gradcheck(module, x, *, eps=1e-6, rtol=1e-5, atol=1e-8, rng=0):
    r"""Check a module's ``backward`` against central differences; return True or raise.

    The scalar checked is :math:`L = \sum r \odot \text{module}(x)` with a fixed random
    :math:`r` (so every output entry matters). Works on a deep copy of ``module`` converted
    to ``x``'s dtype (use float64), in the module's current train/eval mode; checks
    :math:`\partial L/\partial x` and :math:`\partial L/\partial \theta` for every Parameter.

    Parameters
    ----------
    module : Module
    x : ndarray of float (float64 recommended; not modified)
    eps, rtol, atol : float
        Step of the differences and tolerances of ``numpy.allclose``.
    rng : None, int or numpy.random.Generator
        Draws :math:`r`.

    Returns
    -------
    True

    Raises
    ------
    AssertionError
        Naming the first gradient that disagrees and the largest difference.

    Examples
    --------
    >>> gradcheck(Linear(3, 2, rng=0), np.random.default_rng(1).normal(size=(4, 3)))
    True
    """
    x0 = as_float_array(x, "x")
    m = copy.deepcopy(module).astype(x0.dtype)
    xc = x0.copy()
    r = check_rng(rng).normal(size=m(xc).shape).astype(x0.dtype)

    def loss(_):
        return float((m(xc) * r).sum())

    m.zero_grad()
    m(xc)
    analytic = {"x": m.backward(r.copy())}
    params = m.parameters()
    for i, p in enumerate(params):
        analytic[f"parameter {i} ({p.name})"] = p.grad.copy()
    numeric = {"x": numerical_gradient(loss, xc, eps=eps)}
    for i, p in enumerate(params):
        numeric[f"parameter {i} ({p.name})"] = numerical_gradient(loss, p.data, eps=eps)
    for key, a in analytic.items():
        if not np.allclose(a, numeric[key], rtol=rtol, atol=atol):
            err = float(np.max(np.abs(a - numeric[key])))
            raise AssertionError(f"gradient of {key} disagrees with central differences: max |diff| = {err:.3g}")
    return True


# --------------------------------------------------------------------------------------
# Ready-made networks
# --------------------------------------------------------------------------------------


def _factory(f, name):
    if f is not None and not callable(f):
        raise TypeError(f"{name} must be None or a callable (layer_index) -> Module or None, got {type(f).__name__}")
    return (lambda i: None) if f is None else f


def mlp(hidden=(64,), *, in_features=64, classes=10, rng=0, weight_quantizer=None, activation_quantizer=None):
    """A multilayer perceptron ``Linear -> ReLU -> ... -> Linear`` (default: digits, 64-64-10).

    Parameters
    ----------
    hidden : sequence of int
        Widths of the hidden layers.
    in_features, classes : int
    rng : None, int or numpy.random.Generator
        Seeds the initialization.
    weight_quantizer : None or callable ``(i) -> Module or None``
        Called for the i-th Linear layer (i = 0, 1, ...): its weight quantizer.
    activation_quantizer : None or callable ``(i) -> Module or None``
        Called for the i-th hidden activation: a quantizer placed right after its ReLU.

    Returns
    -------
    Sequential

    Examples
    --------
    >>> net = mlp((32,))
    >>> net(np.zeros((2, 64), np.float32)).shape, len(net.parameters())
    ((2, 10), 4)
    """
    hidden = [check_positive(h, "hidden", integer=True) for h in hidden]
    wq = _factory(weight_quantizer, "weight_quantizer")
    aq = _factory(activation_quantizer, "activation_quantizer")
    rng = check_rng(rng)
    widths = [check_positive(in_features, "in_features", integer=True), *hidden,
              check_positive(classes, "classes", integer=True)]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(Linear(widths[i], widths[i + 1], rng=rng, weight_quantizer=wq(i)))
        if i < len(widths) - 2:
            layers.append(ReLU())
            q = aq(i)
            if q is not None:
                layers.append(q)
    return Sequential(*layers)


def small_cnn(*, channels=(16, 32), classes=10, rng=0, weight_quantizer=None, activation_quantizer=None):
    """A small CNN for the 8x8 digits: two ``Conv3x3 -> BatchNorm -> ReLU -> MaxPool2`` blocks and a Linear.

    Input ``(n, 1, 8, 8)``; with the default ``channels=(16, 32)``::

        Conv2d(1, 16, 3, padding=1)  -> BatchNorm2d -> ReLU -> MaxPool2d(2)    # (n, 16, 4, 4)
        Conv2d(16, 32, 3, padding=1) -> BatchNorm2d -> ReLU -> MaxPool2d(2)    # (n, 32, 2, 2)
        Flatten -> Linear(128, 10)

    (6,186 parameters; about 99% test accuracy on :func:`qref.data.load_digits` after 10 epochs of Adam).

    Parameters
    ----------
    channels : (int, int)
        Output channels of the two convolutions.
    classes : int
    rng : None, int or numpy.random.Generator
    weight_quantizer : None or callable ``(i) -> Module or None``
        For the i-th weight layer (0, 1: the convolutions; 2: the Linear).
    activation_quantizer : None or callable ``(i) -> Module or None``
        Placed right after the i-th ReLU (i = 0, 1).

    Returns
    -------
    Sequential

    Examples
    --------
    >>> net = small_cnn()
    >>> net(np.zeros((2, 1, 8, 8), np.float32)).shape
    (2, 10)
    """
    try:
        c1, c2 = channels
    except (TypeError, ValueError):
        raise TypeError(f"channels must be a pair of ints, got {channels!r}") from None
    c1 = check_positive(c1, "channels[0]", integer=True)
    c2 = check_positive(c2, "channels[1]", integer=True)
    classes = check_positive(classes, "classes", integer=True)
    wq = _factory(weight_quantizer, "weight_quantizer")
    aq = _factory(activation_quantizer, "activation_quantizer")
    rng = check_rng(rng)
    layers = []
    for i, (cin, cout) in enumerate(((1, c1), (c1, c2))):
        layers += [Conv2d(cin, cout, 3, padding=1, rng=rng, weight_quantizer=wq(i)), BatchNorm2d(cout), ReLU()]
        q = aq(i)
        if q is not None:
            layers.append(q)
        layers.append(MaxPool2d(2))
    layers += [Flatten(), Linear(4 * c2, classes, rng=rng, weight_quantizer=wq(2))]
    return Sequential(*layers)
