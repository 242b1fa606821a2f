r"""Mixed precision chosen by Hessian sensitivity (HAWQ), and quantization with knowledge distillation.

Two ideas from the survey of Gholami et al. (2021), Secs. 4.B and 4.D:

**Hessian-aware mixed precision.** Layers differ in how much a perturbation of their weights
raises the loss. To second order, a perturbation :math:`\Delta W_l` of layer :math:`l` at a
minimum costs :math:`\tfrac12 \Delta W_l^\top H_l \Delta W_l`, with :math:`H_l` the block of
the loss Hessian that belongs to the layer's weights. HAWQ (Dong et al. 2019) ranks layers by
the top eigenvalue of :math:`H_l`; HAWQ-V2 (Dong et al. 2020) uses the *average* eigenvalue,
:math:`\mathrm{Tr}(H_l)/n_l`, estimated with Hutchinson's (1989) estimator from Hessian-vector
products, and scores a bit width :math:`b_l` by

.. math::

    \Omega_l(b_l) = \frac{\mathrm{Tr}(H_l)}{n_l}\, \big\lVert Q_{b_l}(W_l) - W_l \big\rVert_2^2 .

The bit widths are then chosen on the Pareto frontier of total sensitivity
:math:`\sum_l \Omega_l(b_l)` against model size :math:`\sum_l n_l b_l`.

**Quantized distillation.** A low-precision student learns from a float teacher's
temperature-softened outputs (Hinton, Vinyals and Dean 2015) as well as from the labels
(Polino, Pascanu and Alistarh 2018; Mishra and Marr 2018).

Here the Hessian-vector products are exact: for a network built from ``Linear``/``Conv2d``
layers, ReLUs, pooling and batch normalization in evaluation mode, the logits are *affine* in
the weights of any one layer (between the kinks of the ReLUs and max-pools, i.e. almost
everywhere), so the layer's Hessian block equals its Gauss-Newton matrix
:math:`J_l^\top H_z J_l` (the same fact :func:`qref.vq.mlp_hessian_diagonal` uses for the
diagonal). :class:`LayerHessian` computes :math:`J_l v` with a forward-mode pass (the
R-operator of Pearlmutter 1994) and :math:`J_l^\top u` with the ordinary backward pass. HAWQ's
authors obtain the same product by differentiating the gradient twice (double backpropagation).

References
----------
Dong, Z., Yao, Z., Gholami, A., Mahoney, M. W., Keutzer, K. (2019). HAWQ: Hessian AWare
Quantization of neural networks with mixed-precision. ICCV 2019.

Dong, Z., Yao, Z., Arfeen, D., Gholami, A., Mahoney, M. W., Keutzer, K. (2020). HAWQ-V2: Hessian
Aware trace-Weighted Quantization of neural networks. NeurIPS 2020. arXiv:1911.03852.

Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence matrix for
Laplacian smoothing splines. Communications in Statistics - Simulation and Computation 18(3).

Pearlmutter, B. A. (1994). Fast exact multiplication by the Hessian. Neural Computation 6(1).

Hinton, G., Vinyals, O., Dean, J. (2015). Distilling the knowledge in a neural network.
arXiv:1503.02531.

Polino, A., Pascanu, R., Alistarh, D. (2018). Model compression via distillation and
quantization. ICLR 2018.

Mishra, A., Marr, D. (2018). Apprentice: using knowledge distillation techniques to improve
low-precision network accuracy. ICLR 2018.
"""

from __future__ import annotations

import copy

import numpy as np

from . import nn
from . import uniform as _uniform
from ._validation import (
    as_float_array, as_int_array, check_bits, check_bool, check_fraction, check_int, check_positive, check_real,
    check_rng,
)

__all__ = [
    "weight_layers", "LayerHessian", "hutchinson_trace", "hessian_traces", "quantize_weight",
    "sensitivities", "pareto_frontier", "hawq_allocation", "quantize_model",
    "softmax", "DistillationLoss", "distill",
]


# --------------------------------------------------------------------------------------
# The Hessian blocks of a network's loss
# --------------------------------------------------------------------------------------

_WEIGHT = (nn.Linear, nn.Conv2d)
_SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.ReLU6, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d,
              nn.MaxPool2d, nn.AvgPool2d)


def _flat_layers(model):
    """The leaf layers of nested Sequentials, in execution order; TypeError for anything else."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a qref.nn Module, got {type(model).__name__}")
    if isinstance(model, nn.Sequential):
        out = []
        for layer in model.layers:
            out.extend(_flat_layers(layer))
        return out
    if not isinstance(model, _SUPPORTED):
        raise TypeError(f"model must be built from {', '.join(t.__name__ for t in _SUPPORTED)} "
                        f"(and Sequential), got {type(model).__name__}")
    return [model]


def weight_layers(model):
    """The ``Linear`` and ``Conv2d`` layers of a network, in execution order.

    Parameters
    ----------
    model : qref.nn.Module

    Returns
    -------
    list of Linear / Conv2d (the model's own objects, not copies)

    Examples
    --------
    >>> [type(m).__name__ for m in weight_layers(nn.mlp((8, 4)))]
    ['Linear', 'Linear', 'Linear']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a qref.nn Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, _WEIGHT)]


def _linear_part(layer, weight, x):
    """``layer`` applied to ``x`` with weight ``weight``, no bias, no quantizer (a copy runs it)."""
    c = copy.copy(layer)
    c.weight = nn.Parameter(weight, name="weight")
    c.bias = None
    c.weight_quantizer = None
    return c.forward(x)


def _tangent(layer, x_in, dx):
    """Forward-mode derivative of ``layer`` at its last input (state saved by its forward)."""
    if isinstance(layer, _WEIGHT):
        return _linear_part(layer, layer.weight.data, dx)
    if isinstance(layer, (nn.ReLU, nn.ReLU6)):
        return np.where(layer._mask, dx, 0.0)
    if isinstance(layer, nn.Flatten):
        return dx.reshape(dx.shape[0], -1)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return dx * layer._inv_std * layer._shape(layer.weight.data)
    k = layer.kernel_size
    win = nn._windows(dx, k)
    if isinstance(layer, nn.MaxPool2d):
        return np.take_along_axis(win, layer._arg, axis=-1)[..., 0]
    return win.mean(axis=-1)                                         # AvgPool2d


class LayerHessian:
    r"""Exact products with each layer's block of the Hessian of a network's mean cross-entropy.

    For the loss :math:`\mathcal L = \frac1N\sum_s \ell(z^{(s)})` (softmax cross-entropy of the
    logits :math:`z`) and the weights :math:`w_l` of layer :math:`l` (flattened), the block
    :math:`H_l = \partial^2 \mathcal L/\partial w_l^2` times a vector is

    .. math::

        H_l v = \frac1N \sum_s J_l^{(s)\top}\big(\mathrm{diag}(p^{(s)}) - p^{(s)} p^{(s)\top}\big)
        J_l^{(s)} v, \qquad J_l^{(s)} = \frac{\partial z^{(s)}}{\partial w_l},

    which is exact (almost everywhere) because the logits are piecewise affine in :math:`w_l`
    (module docstring). It does not depend on the labels. :math:`J_l v` is a forward-mode pass
    (Pearlmutter 1994, the :math:`\mathcal R` operator), :math:`J_l^\top u` the backward pass.
    These are the Hessian-vector products HAWQ-V2 feeds to Hutchinson's estimator (Dong et al.
    2020; section numbers not verified offline).

    The network is copied, converted to float64 and put in evaluation mode (batch
    normalization is then a fixed affine map); the forward pass over ``X`` is done once.

    Parameters
    ----------
    model : qref.nn.Module
        ``Sequential`` (possibly nested) of ``Linear``, ``Conv2d``, ``ReLU``, ``ReLU6``,
        ``Flatten``, ``BatchNorm1d/2d``, ``MaxPool2d``, ``AvgPool2d``, ending in the logits,
        without weight quantizers. Not modified.
    X : array_like of float, shape (N, ...)
        The data the loss averages over.
    blas_threads : int >= 1 or None
        BLAS threads during the products (as in :func:`qref.nn.fit`: one is fastest for these
        small matrices, and much faster on a busy machine; None leaves the setting alone).

    Attributes
    ----------
    sizes : ndarray of int64, shape (L,)
        :math:`n_l`, the number of weights of each ``Linear``/``Conv2d`` layer.
    shapes : list of tuple
    probabilities : ndarray of float64, shape (N, classes)
        The softmax outputs :math:`p` at ``X``.

    Raises
    ------
    TypeError
        For an unsupported layer, or a layer with a weight quantizer.
    ValueError
        For bad ``X`` or a network without weight layers.

    References
    ----------
    Pearlmutter (1994), "Fast exact multiplication by the Hessian", Neural Computation 6(1).
    Dong et al. (2020), HAWQ-V2, NeurIPS (arXiv:1911.03852).

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 3, rng=0))
    >>> H = LayerHessian(net, np.eye(2))
    >>> M = H.matrix(0)                                      # 6 x 6, symmetric, PSD
    >>> M.shape, bool(np.allclose(M, M.T)), bool(np.linalg.eigvalsh(M).min() > -1e-12)
    ((6, 6), True, True)
    """

    def __init__(self, model, X, *, blas_threads=1):
        layers = _flat_layers(model)
        for m in layers:
            if isinstance(m, _WEIGHT) and m.weight_quantizer is not None:
                raise TypeError("model must not have weight quantizers: the Hessian is of the float network's loss")
        if not any(isinstance(m, _WEIGHT) for m in layers):
            raise ValueError("model must have at least one Linear or Conv2d layer")
        X = as_float_array(X, "X", allow_empty=False, allow_0d=False)
        self.blas_threads = None if blas_threads is None else check_positive(blas_threads, "blas_threads",
                                                                              integer=True)
        self._model = copy.deepcopy(model).astype(np.float64).eval()
        self._layers = _flat_layers(self._model)
        self._weight_pos = [i for i, m in enumerate(self._layers) if isinstance(m, _WEIGHT)]
        x = np.asarray(X, dtype=np.float64)
        self._inputs = []
        with nn._blas_limit(self.blas_threads):
            for m in self._layers:                             # the primal pass, once
                self._inputs.append(x)
                x = m.forward(x)
        if x.ndim != 2:
            raise ValueError(f"model must output logits of shape (N, classes), got shape {x.shape}")
        z = x - x.max(axis=1, keepdims=True)
        p = np.exp(z)
        self.probabilities = p / p.sum(axis=1, keepdims=True)
        self.shapes = [self._layers[i].weight.data.shape for i in self._weight_pos]
        self.sizes = np.array([int(np.prod(s)) for s in self.shapes], dtype=np.int64)

    @property
    def n_layers(self):
        """The number of weight layers :math:`L`."""
        return len(self._weight_pos)

    def _layer(self, layer):
        layer = check_int(layer, "layer", low=0)
        if layer >= self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers - 1}], got {layer}")
        return layer

    def matvec(self, layer, v):
        r"""The product :math:`H_l v` for layer ``layer`` (0 = first weight layer).

        Parameters
        ----------
        layer : int in [0, L)
        v : array_like of float, shape (n_l,) or the layer's weight shape

        Returns
        -------
        ndarray of float64, same shape as ``v``
        """
        with nn._blas_limit(self.blas_threads):
            return self._matvec(layer, v)

    def _matvec(self, layer, v):
        layer = self._layer(layer)
        v = as_float_array(v, "v")
        shape = self.shapes[layer]
        if v.size != self.sizes[layer]:
            raise ValueError(f"v must have {self.sizes[layer]} entries (weight shape {shape}) for layer {layer}, "
                             f"got shape {v.shape}")
        pos = self._weight_pos[layer]
        m = self._layers[pos]
        dz = _linear_part(m, np.asarray(v, np.float64).reshape(shape), self._inputs[pos])   # J_l v
        for k in range(pos + 1, len(self._layers)):
            dz = _tangent(self._layers[k], self._inputs[k], dz)
        p = self.probabilities
        u = (p * dz - p * (p * dz).sum(axis=1, keepdims=True)) / len(p)      # H_z J v, mean over samples
        for k in range(len(self._layers) - 1, pos, -1):                      # J^T u: the backward pass
            layer = self._layers[k]
            u = u @ layer._w if isinstance(layer, nn.Linear) else layer.backward(u)   # (no weight gradient needed)
        m.weight.grad = np.zeros(shape)
        if m.bias is not None:
            m.bias.grad = np.zeros_like(m.bias.data)
        m.backward(u)
        return m.weight.grad.reshape(v.shape).copy()

    def matrix(self, layer):
        """The dense block :math:`H_l`, shape (n_l, n_l), one :meth:`matvec` per column (small layers only)."""
        layer = self._layer(layer)
        n = int(self.sizes[layer])
        eye = np.eye(n)
        with nn._blas_limit(self.blas_threads):
            return np.stack([self._matvec(layer, eye[i]) for i in range(n)], axis=1)

    def trace(self, layer, *, n_samples=100, rng=None, return_samples=False):
        """:func:`hutchinson_trace` of :math:`H_l` (same arguments), with the BLAS limit set once."""
        layer = self._layer(layer)
        with nn._blas_limit(self.blas_threads):
            return hutchinson_trace(lambda v: self._matvec(layer, v), int(self.sizes[layer]), n_samples=n_samples,
                                    rng=rng, return_samples=return_samples)


def hutchinson_trace(matvec, dim, *, n_samples=100, rng=None, return_samples=False):
    r"""Hutchinson's estimate of :math:`\mathrm{Tr}(H)` from products :math:`Hv`, Rademacher :math:`v`.

    .. math::

        \mathrm{Tr}(H) \approx \frac1m \sum_{i=1}^m v_i^\top H v_i, \qquad
        v_i \in \{-1, +1\}^n \text{ uniform}, \qquad
        \mathrm{Var}\big(v^\top H v\big) = 2 \sum_{j \ne k} H_{jk}^2 \ \ (H \text{ symmetric}).

    :math:`\mathbb E[v v^\top] = I` makes each term unbiased (Hutchinson 1989); the Rademacher
    distribution has the smallest variance among such estimators (Hutchinson 1989; the variance
    formula above is derived in the book chapter and tested exactly). HAWQ-V2 uses this
    estimator with the Hessian of the loss (Dong et al. 2020).

    Parameters
    ----------
    matvec : callable ``v -> H v`` on float64 vectors of shape (dim,)
    dim : int >= 1
    n_samples : int >= 1
        :math:`m`.
    rng : None, int or numpy.random.Generator
    return_samples : bool
        Also return the :math:`m` terms :math:`v_i^\top H v_i`.

    Returns
    -------
    float, or (float, ndarray of float64 shape (m,)) with ``return_samples``

    References
    ----------
    Hutchinson (1989), Communications in Statistics - Simulation and Computation 18(3).

    Examples
    --------
    >>> H = np.array([[2.0, 0.0], [0.0, 3.0]])          # diagonal: every term is exact
    >>> hutchinson_trace(lambda v: H @ v, 2, n_samples=3, rng=0)
    5.0
    """
    if not callable(matvec):
        raise TypeError(f"matvec must be callable, got {type(matvec).__name__}")
    dim = check_positive(dim, "dim", integer=True)
    n_samples = check_positive(n_samples, "n_samples", integer=True)
    rng = check_rng(rng)
    return_samples = check_bool(return_samples, "return_samples")
    terms = np.empty(n_samples)
    for i in range(n_samples):
        v = rng.integers(0, 2, size=dim) * 2.0 - 1.0
        hv = np.asarray(matvec(v), dtype=np.float64).reshape(-1)
        if hv.shape != (dim,):
            raise ValueError(f"matvec must return {dim} values, got {hv.size}")
        terms[i] = v @ hv
    est = float(terms.mean())
    return (est, terms) if return_samples else est


def hessian_traces(model, X, *, n_samples=100, rng=None):
    r"""Hutchinson estimates of :math:`\mathrm{Tr}(H_l)` for every weight layer of a network.

    :math:`H_l` is the layer's block of the Hessian of the mean cross-entropy over ``X``
    (:class:`LayerHessian`); each layer gets ``n_samples`` Rademacher vectors from ``rng``
    (HAWQ-V2, Dong et al. 2020).

    Parameters
    ----------
    model : qref.nn.Module
        As :class:`LayerHessian`.
    X : array_like of float, shape (N, ...)
    n_samples : int >= 1
    rng : None, int or numpy.random.Generator

    Returns
    -------
    ndarray of float64, shape (L,)

    Examples
    --------
    >>> net = nn.mlp((4,), in_features=3, classes=2, rng=0)
    >>> X = np.random.default_rng(0).normal(size=(20, 3))
    >>> hessian_traces(net, X, n_samples=5, rng=0).shape
    (2,)
    """
    rng = check_rng(rng)
    n_samples = check_positive(n_samples, "n_samples", integer=True)
    H = LayerHessian(model, X)          # one BLAS thread: fastest for these small matrices
    return np.array([H.trace(l, n_samples=n_samples, rng=rng) for l in range(H.n_layers)])


# --------------------------------------------------------------------------------------
# Sensitivity and bit allocation
# --------------------------------------------------------------------------------------


def quantize_weight(w, *, bits):
    r"""Symmetric, per-tensor, narrow-range uniform quantization of a weight tensor (min-max scale).

    .. math::

        Q_b(w) = s\,\mathrm{clip}\big(\lfloor w/s \rceil, -(2^{b-1}-1), 2^{b-1}-1\big), \qquad
        s = \max|w| / (2^{b-1} - 1),

    the weight quantizer of Jacob et al. (2018) and of :class:`qref.qat.MinMaxFakeQuantize`;
    HAWQ quantizes weights with a symmetric uniform quantizer too (Dong et al. 2019).

    Parameters
    ----------
    w : array_like of float, non-empty
    bits : int in [2, 16]

    Returns
    -------
    ndarray, shape and dtype of ``w`` (an all-zero ``w`` gives zeros)

    Examples
    --------
    >>> quantize_weight(np.array([-0.9, 0.1, 0.2, 0.6]), bits=3)      # step 0.3
    array([-0.9,  0. ,  0.3,  0.6])
    """
    w = as_float_array(w, "w", allow_empty=False)
    bits = check_bits(bits, low=2)
    if not np.any(w):
        return np.zeros_like(w)
    params = _uniform.params_from_data(w, bits=bits, symmetric=True, narrow_range=True)
    return _uniform.fake_quantize(w, params)


def _bit_options(bit_options):
    b = as_int_array(bit_options, "bit_options").reshape(-1)
    if b.size == 0:
        raise ValueError("bit_options must hold at least one bit width, got none")
    for v in b:
        check_bits(int(v), "bit_options", low=2)
    if len(np.unique(b)) != b.size:
        raise ValueError(f"bit_options must not repeat a bit width, got {b.tolist()}")
    return b


def sensitivities(model, traces, bit_options):
    r"""HAWQ-V2's sensitivity :math:`\Omega_l(b)` of every weight layer at every candidate bit width.

    .. math::

        \Omega_l(b) = \frac{\mathrm{Tr}(H_l)}{n_l}\,\big\lVert Q_b(W_l) - W_l\big\rVert_2^2

    (the :math:`\Omega` metric of Dong et al. 2020, numbered Eq. (2.11) in arXiv:1911.03852 according
    to the caption of its Fig. 4, which we could not check offline; with :math:`Q_b` =
    :func:`quantize_weight`). It is the second-order loss increase
    :math:`\tfrac12\Delta w^\top H_l \Delta w` (up to the factor 1/2) *if* the quantization error
    :math:`\Delta w` were spread evenly over :math:`H_l`'s eigenvectors.

    Parameters
    ----------
    model : qref.nn.Module
        Its ``Linear``/``Conv2d`` weights, in order (:func:`weight_layers`).
    traces : array_like of float, shape (L,)
        :math:`\mathrm{Tr}(H_l)`, e.g. from :func:`hessian_traces`.
    bit_options : array_like of int, shape (K,)
        Candidate bit widths, each in [2, 16].

    Returns
    -------
    ndarray of float64, shape (L, K)

    Examples
    --------
    >>> net = nn.mlp((4,), in_features=3, classes=2, rng=0)
    >>> om = sensitivities(net, [1.0, 2.0], [2, 4, 8])
    >>> om.shape, bool(np.all(np.diff(om, axis=1) <= 0))
    ((2, 3), True)
    """
    layers = weight_layers(model)
    t = as_float_array(traces, "traces").reshape(-1)
    if t.size != len(layers):
        raise ValueError(f"traces must have one entry per weight layer ({len(layers)}), got {t.size}")
    b = _bit_options(bit_options)
    out = np.empty((len(layers), b.size))
    for l, m in enumerate(layers):
        w = m.weight.data.astype(np.float64)
        for k, bits in enumerate(b):
            out[l, k] = t[l] / w.size * float(np.sum((quantize_weight(w, bits=int(bits)) - w) ** 2))
    return out


def _omega_sizes(omega, sizes, bit_options):
    om = as_float_array(omega, "omega")
    b = _bit_options(bit_options)
    if om.ndim != 2 or om.shape[1] != b.size or om.shape[0] == 0:
        raise ValueError(f"omega must have shape (L, {b.size}) for {b.size} bit options, L >= 1, got {om.shape}")
    n = as_int_array(sizes, "sizes").reshape(-1)
    if n.size != om.shape[0]:
        raise ValueError(f"sizes must have one entry per layer ({om.shape[0]}), got {n.size}")
    if (n <= 0).any():
        raise ValueError(f"sizes must be positive numbers of weights, got min {int(n.min())}")
    return om, n.astype(np.int64), b.astype(np.int64)


def pareto_frontier(omega, sizes, bit_options):
    r"""Every bit allocation not beaten in both size and total sensitivity (exact, by dynamic programming).

    An allocation :math:`b = (b_1, \dots, b_L)` has size :math:`S(b) = \sum_l n_l b_l` bits and
    sensitivity :math:`\Omega(b) = \sum_l \Omega_l(b_l)`. Each frontier point has the least
    :math:`\Omega` among all allocations of at most its size, and a strictly smaller
    :math:`\Omega` than every smaller frontier point; HAWQ-V2 picks the allocation of least
    :math:`\Omega` under a size budget from it (Dong et al. 2020, Fig. 4). Both sums are
    additive over layers, so a partial allocation of layers
    :math:`1..l` that is dominated can be dropped (its dominator does at least as well in any
    completion): the frontier is built layer by layer, merging and pruning, instead of listing
    all :math:`K^L` allocations.

    Parameters
    ----------
    omega : array_like of float, shape (L, K)
        :math:`\Omega_l(b)` for each candidate bit width (:func:`sensitivities`).
    sizes : array_like of int > 0, shape (L,)
        :math:`n_l`.
    bit_options : array_like of int, shape (K,)

    Returns
    -------
    size_bits : ndarray of int64, shape (P,)
        Increasing.
    total : ndarray of float64, shape (P,)
        Strictly decreasing.
    bits : ndarray of int64, shape (P, L)
        The allocations. Among allocations equal in size and sensitivity the first in the
        order of ``bit_options`` (layer 0 varying slowest) is kept.

    Examples
    --------
    >>> s, t, b = pareto_frontier([[4.0, 1.0], [2.0, 0.0]], [10, 10], [2, 4])
    >>> s.tolist(), t.tolist(), b.tolist()
    ([40, 60, 80], [6.0, 3.0, 1.0], [[2, 2], [4, 2], [4, 4]])
    """
    om, n, b = _omega_sizes(omega, sizes, bit_options)
    # partial frontier: arrays of sizes, totals, choice indices (P, l)
    cost = np.zeros(1, np.int64)
    total = np.zeros(1)
    choice = np.zeros((1, 0), np.int64)
    for l in range(om.shape[0]):
        c = (cost[:, None] + n[l] * b[None, :]).reshape(-1)
        t = (total[:, None] + om[l][None, :]).reshape(-1)
        ch = np.concatenate([np.repeat(choice, b.size, axis=0), np.tile(np.arange(b.size), len(cost))[:, None]], axis=1)
        order = np.lexsort((np.arange(c.size), t, c))          # by size, then total, then enumeration order
        c, t, ch = c[order], t[order], ch[order]
        keep = t < np.minimum.accumulate(np.concatenate([[np.inf], t[:-1]]))
        cost, total, choice = c[keep], t[keep], ch[keep]
    return cost, total, b[choice]


def hawq_allocation(omega, sizes, bit_options, *, budget_bits):
    r"""The bit widths of least total sensitivity whose model size fits a budget.

    .. math::

        \min_{b \in \mathcal B^L} \sum_l \Omega_l(b_l) \quad \text{s.t.} \quad \sum_l n_l b_l \le B,

    solved exactly on the Pareto frontier (:func:`pareto_frontier`; HAWQ-V2, Dong et al. 2020,
    Fig. 4).

    Parameters
    ----------
    omega, sizes, bit_options :
        As :func:`pareto_frontier`.
    budget_bits : int or float > 0
        :math:`B`, the size of all weights in bits.

    Returns
    -------
    ndarray of int64, shape (L,)

    Raises
    ------
    ValueError
        If even the smallest allocation (every layer at the fewest bits) exceeds the budget.

    Examples
    --------
    >>> hawq_allocation([[4.0, 1.0], [2.0, 0.0]], [10, 10], [2, 4], budget_bits=70)
    array([4, 2])
    """
    budget = check_real(budget_bits, "budget_bits")
    if budget <= 0:
        raise ValueError(f"budget_bits must be > 0, got {budget_bits!r}")
    cost, _, bits = pareto_frontier(omega, sizes, bit_options)
    ok = np.flatnonzero(cost <= budget)
    if ok.size == 0:
        raise ValueError(f"budget_bits must be at least {int(cost[0])} (every layer at the fewest bits), "
                         f"got {budget_bits!r}")
    return bits[ok[-1]].copy()


def quantize_model(model, bits):
    """A copy of ``model`` whose ``Linear``/``Conv2d`` weights are quantized with :func:`quantize_weight`.

    Biases, batch-norm parameters and activations stay in float (post-training weight
    quantization, no fine-tuning).

    Parameters
    ----------
    model : qref.nn.Module
        Not modified.
    bits : array_like of int, shape (L,)
        One bit width per weight layer (:func:`weight_layers` order), each in [2, 16].

    Returns
    -------
    qref.nn.Module

    Examples
    --------
    >>> q = quantize_model(nn.mlp((4,), in_features=3, classes=2), [2, 2])
    >>> np.unique(np.abs(q[0].weight.data)).size <= 2                  # levels {0, +-max}
    True
    """
    layers = weight_layers(model)
    b = as_int_array(bits, "bits").reshape(-1)
    if b.size != len(layers):
        raise ValueError(f"bits must have one entry per weight layer ({len(layers)}), got {b.size}")
    out = copy.deepcopy(model)
    for m, bb in zip(weight_layers(out), b):
        m.weight.data = quantize_weight(m.weight.data, bits=int(bb)).astype(m.weight.data.dtype)
    return out


# --------------------------------------------------------------------------------------
# Knowledge distillation
# --------------------------------------------------------------------------------------


def softmax(logits, *, temperature=1.0):
    r"""Softmax with temperature, :math:`q_i = e^{z_i/T} / \sum_j e^{z_j/T}`, along the last axis.

    Hinton, Vinyals and Dean (2015), Eq. (1): a higher :math:`T` gives a softer distribution.

    Parameters
    ----------
    logits : array_like of float, shape (..., C)
    temperature : float > 0

    Returns
    -------
    ndarray of float64, shape of ``logits``

    Examples
    --------
    >>> softmax([[0.0, np.log(3.0)]]), softmax([[0.0, np.log(9.0)]], temperature=2.0)
    (array([[0.25, 0.75]]), array([[0.25, 0.75]]))
    """
    z = as_float_array(logits, "logits", allow_empty=False, allow_0d=False).astype(np.float64)
    T = check_positive(temperature, "temperature")
    s = z / T
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


class DistillationLoss:
    r"""Hinton et al.'s distillation loss: soft targets at temperature :math:`T` mixed with the labels.

    .. math::

        L = (1 - \alpha)\,\frac1N \sum_n \mathrm{CE}\big(y_n, \mathrm{softmax}(z_n)\big)
            + \alpha\, T^2\, \frac1N \sum_n \mathrm{KL}\big(\mathrm{softmax}(v_n/T)\,\big\|\,
            \mathrm{softmax}(z_n/T)\big),

    with student logits :math:`z` and teacher logits :math:`v`. The gradient (Hinton et al.
    2015, Eq. 2, times :math:`T^2`) is

    .. math::

        \frac{\partial L}{\partial z_{n,i}} = \frac{1-\alpha}{N}\,(p_{n,i} - [i = y_n])
            + \frac{\alpha\,T}{N}\,(q_{n,i} - r_{n,i}),

    :math:`p = \mathrm{softmax}(z)`, :math:`q = \mathrm{softmax}(z/T)`,
    :math:`r = \mathrm{softmax}(v/T)`. The soft term's gradient scales as :math:`1/T^2`
    (Hinton et al. 2015, Sec. 2), so the factor :math:`T^2` keeps the two terms' relative
    weight when :math:`T` changes. The KL divergence differs from Hinton et al.'s soft
    cross-entropy by the teacher's entropy, a constant: the gradients are the same, and
    :math:`L = 0` when :math:`\alpha = 1` and the student matches the teacher. Polino et al.
    (2018) and Mishra and Marr (2018) train low-precision students with such a loss; the
    convention of which term :math:`\alpha` weights varies between papers.

    Parameters
    ----------
    temperature : float > 0
        :math:`T`.
    alpha : float in [0, 1]
        Weight of the soft (teacher) term; 0 is plain cross-entropy on the labels.

    Raises
    ------
    TypeError, ValueError
        In ``forward``: for bad logits, labels or mismatched shapes.

    References
    ----------
    Hinton, Vinyals, Dean (2015), arXiv:1503.02531, Sec. 2. Polino, Pascanu, Alistarh (2018),
    ICLR. Mishra, Marr (2018), ICLR.

    Examples
    --------
    >>> loss = DistillationLoss(temperature=2.0, alpha=1.0)
    >>> z = np.array([[1.0, 2.0, 3.0]])
    >>> loss(z, np.array([2]), z), loss.backward()                   # student = teacher
    (0.0, array([[0., 0., 0.]]))
    """

    def __init__(self, temperature=4.0, alpha=0.5):
        self.temperature = float(check_positive(temperature, "temperature"))
        self.alpha = check_fraction(alpha, "alpha")

    def __repr__(self):
        return f"DistillationLoss(temperature={self.temperature}, alpha={self.alpha})"

    def forward(self, logits, y, teacher_logits):
        z = as_float_array(logits, "logits", allow_empty=False, allow_0d=False)
        if z.ndim != 2:
            raise ValueError(f"logits must have shape (n, classes), got shape {z.shape}")
        v = as_float_array(teacher_logits, "teacher_logits", allow_empty=False, allow_0d=False)
        if v.shape != z.shape:
            raise ValueError(f"teacher_logits must have the shape of logits {z.shape}, got {v.shape}")
        y = as_int_array(y, "y")
        if y.shape != (z.shape[0],):
            raise ValueError(f"y must have shape ({z.shape[0]},) to match logits, got shape {y.shape}")
        if y.min() < 0 or y.max() >= z.shape[1]:
            bad = int(y.min() if y.min() < 0 else y.max())
            raise ValueError(f"y must hold class labels in [0, {z.shape[1]}), got {bad}")
        T, a, n = self.temperature, self.alpha, z.shape[0]
        z64 = z.astype(np.float64)
        p = softmax(z64)
        q = softmax(z64, temperature=T)
        r = softmax(v, temperature=T)
        hard = -np.log(np.maximum(p[np.arange(n), y], np.finfo(np.float64).tiny)).mean()
        log_q = z64 / T - z64.max(1, keepdims=True) / T
        log_q = log_q - np.log(np.exp(log_q).sum(1, keepdims=True))
        log_r = np.log(np.maximum(r, np.finfo(np.float64).tiny))
        kl = np.sum(np.where(r > 0, r * (log_r - log_q), 0.0)) / n
        self._p, self._q, self._r, self._y, self._dtype = p, q, r, y, z.dtype
        return float((1 - a) * hard + a * T * T * kl)

    __call__ = forward

    def backward(self):
        """:math:`\\partial L/\\partial z`, shape and dtype of the last ``logits``."""
        n = len(self._y)
        hard = self._p.copy()
        hard[np.arange(n), self._y] -= 1.0
        g = ((1 - self.alpha) * hard + self.alpha * self.temperature * (self._q - self._r)) / n
        return g.astype(self._dtype)


class _WithTeacher:
    """Adapter giving :func:`qref.nn.backprop` a ``forward(logits, y)`` loss for one minibatch."""

    def __init__(self, loss, teacher_logits):
        self.loss, self.teacher_logits = loss, teacher_logits

    def forward(self, logits, y):
        return self.loss.forward(logits, y, self.teacher_logits)

    def backward(self):
        return self.loss.backward()


def distill(student, teacher, X, y, *, epochs, optimizer, temperature=4.0, alpha=0.5, batch_size=64, rng=0,
            X_val=None, y_val=None, progress=False):
    r"""Train ``student`` on ``(X, y)`` with :class:`DistillationLoss` against a fixed ``teacher``.

    :func:`qref.nn.fit` with a per-minibatch hook: the teacher's logits for the minibatch
    (evaluation mode, never trained) are the soft targets. With a quantized student (e.g.
    :class:`qref.qat.LSQ` weight quantizers) this is quantized distillation (Polino et al.
    2018; Mishra and Marr 2018, one of whose schemes uses a trained, fixed full-precision teacher).
    ``alpha=0`` gives the same training as :func:`qref.nn.fit` without a teacher.

    Parameters
    ----------
    student, teacher : qref.nn.Module
        ``student`` is trained in place; ``teacher`` is not changed.
    X, y, epochs, optimizer, batch_size, rng, X_val, y_val, progress :
        As :func:`qref.nn.fit`.
    temperature, alpha :
        As :class:`DistillationLoss`.

    Returns
    -------
    qref.nn.History

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    >>> teacher = nn.mlp((8,), in_features=4, classes=2, rng=0)
    >>> _ = nn.fit(teacher, X, y, epochs=20, optimizer=nn.Adam(teacher.parameters(), lr=0.02), progress=False)
    >>> student = nn.mlp((8,), in_features=4, classes=2, rng=1)
    >>> h = distill(student, teacher, X, y, epochs=20, optimizer=nn.Adam(student.parameters(), lr=0.02))
    >>> nn.accuracy(student, X, y) > 0.9
    True
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a qref.nn Module, got {type(teacher).__name__}")
    if teacher is student:
        raise ValueError("teacher must be a different model from student")
    loss = DistillationLoss(temperature, alpha)

    def gradient(model, xb, yb, _loss):
        t = nn.predict(teacher, xb, batch_size=len(xb))
        return nn.backprop(model, xb, yb, _WithTeacher(loss, t), zero_grad=optimizer.zero_grad)

    return nn.fit(student, X, y, epochs=epochs, optimizer=optimizer, batch_size=batch_size, rng=rng, X_val=X_val,
                  y_val=y_val, progress=progress, loss=loss, gradient=gradient)
