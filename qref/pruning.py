r"""Pruning meets quantization: magnitude pruning, CLIP-Q, prune-then-quantize, and what it all weighs.

**Magnitude pruning** (Han et al. 2015) removes the connections of smallest absolute weight
and re-trains the rest with the removed ones held at zero. **Deep Compression** (Han et al.
2016) follows it with weight sharing (quantization to a small codebook) and stores the
survivors sparsely. The two stages are sequential: a weight pruned in the first stage never
comes back.

**CLIP-Q** (Tung & Mori 2018, Sec. 3.1) prunes and quantizes *in parallel with* fine-tuning.
The full-precision weights are kept; at every training iteration each layer is compressed
anew from them by three operations:

1. **clipping**: thresholds :math:`c^- < 0 < c^+` chosen so that a fraction :math:`p` of the
   layer's positive weights lie in :math:`(0, c^+]` and a fraction :math:`p` of its negative
   weights in :math:`[c^-, 0)`; those weights are set to zero for the next forward pass;
2. **partitioning**: the non-clipped part of the weight axis is cut into :math:`2^b - 1`
   intervals by linear (uniform) partitioning;
3. **quantizing**: every weight in an interval takes the interval's quantization level, the
   *mean of the full-precision weights* in it.

The forward and backward passes use the compressed weights; the update is applied to the
full-precision weights (a straight-through estimator), so a weight clipped at one iteration
can grow back and be un-pruned later, which is the paper's point against two-stage pipelines.
The paper chooses :math:`(p_l, b_l)` for each layer by Bayesian optimization (a Gaussian
process over a trade-off of error and bits saved, Sec. 3.2); **that search is out of scope
here**: :func:`clip_q_train` takes the per-layer :math:`(p, b)` as given.

Conventions of this implementation (where the summaries of the method we could check leave
room): the :math:`2^b - 1` intervals are shared between the negative and the positive
non-clipped ranges in proportion to their lengths (at least one each when both hold weights),
so that no interval mixes signs; an interval with no weight has no level in use (its
codebook entry is its midpoint). Zero is code 0, so a layer needs :math:`b` bits per stored
weight.

References
----------
Tung, F., Mori, G. (2018). CLIP-Q: Deep Network Compression Learning by In-Parallel
Pruning-Quantization. CVPR 2018, pp. 7873-7882. doi:10.1109/CVPR.2018.00821.

Han, S., Pool, J., Tran, J., Dally, W. J. (2015). Learning both Weights and Connections for
Efficient Neural Networks. NeurIPS 2015. arXiv:1506.02626.

Han, S., Mao, H., Dally, W. J. (2016). Deep Compression: Compressing Deep Neural Networks
with Pruning, Trained Quantization and Huffman Coding. ICLR 2016. arXiv:1510.00149.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np

from . import nn
from ._validation import (
    as_float_array, check_bits, check_fraction, check_int, check_positive, check_rng,
)
from .inq import weight_layers

__all__ = [
    "magnitude_prune_mask",
    "magnitude_prune",
    "ClipQ",
    "clip_q_keep",
    "clip_q_quantize",
    "ClipQQuantizer",
    "CompressionResult",
    "clip_q_train",
    "prune_then_quantize",
    "Storage",
    "sparse_storage_bits",
    "dense_storage_bits",
]


# --------------------------------------------------------------------------------------
# Magnitude pruning
# --------------------------------------------------------------------------------------


def _smallest_k(a, k):
    """Bool mask of the ``k`` smallest entries of the 1-d array ``a``, ties broken by position.

    The same set as ``np.argsort(a, kind="stable")[:k]``, in O(n) with ``np.partition``.
    """
    mask = np.zeros(a.size, dtype=bool)
    if k <= 0:
        return mask
    if k >= a.size:
        mask[:] = True
        return mask
    t = np.partition(a, k - 1)[k - 1]  # the k-th smallest value
    np.less(a, t, out=mask)
    mask[np.flatnonzero(a == t)[:k - int(np.count_nonzero(mask))]] = True
    return mask


def magnitude_prune_mask(w, *, sparsity):
    r"""Which weights survive magnitude pruning to a given sparsity (Han et al. 2015).

    .. math::

        \text{keep}_i = \big[\, |w_i| \text{ is not among the }
        \lfloor s n + \tfrac12 \rfloor \text{ smallest} \,\big]

    The :math:`\lfloor s n + \frac12 \rfloor` weights of smallest magnitude are pruned (ties
    broken by position, so exactly that many); Han et al. (2015, Sec. 3) prune by a threshold
    on :math:`|w|`, which is the same set up to ties.

    Parameters
    ----------
    w : array_like of float, non-empty, any shape
        Not modified.
    sparsity : float in [0, 1]
        :math:`s`, the fraction of weights to remove.

    Returns
    -------
    ndarray of bool, shape of ``w``
        True for the weights kept.

    Raises
    ------
    TypeError
        If ``w`` is not floating point or ``sparsity`` not a real number.
    ValueError
        If ``w`` is empty or not finite, or ``sparsity`` is outside [0, 1].

    References
    ----------
    Han, Pool, Tran, Dally (2015), "Learning both weights and connections for efficient
    neural networks", NeurIPS, Sec. 3.

    Examples
    --------
    >>> magnitude_prune_mask(np.array([0.3, -0.05, 0.8, -0.4, 0.01]), sparsity=0.4)
    array([ True, False,  True,  True, False])
    """
    w = as_float_array(w, "w", allow_empty=False)
    s = check_fraction(sparsity, "sparsity")
    k = math.floor(s * w.size + 0.5)
    return ~_smallest_k(np.abs(w.reshape(-1)), k).reshape(w.shape)


def magnitude_prune(w, *, sparsity):
    """Magnitude pruning: ``(w * keep, keep)`` with ``keep = magnitude_prune_mask(w, sparsity=...)``.

    Returns
    -------
    w_pruned : ndarray, shape and dtype of ``w`` (a new array)
    keep : ndarray of bool, shape of ``w``

    References
    ----------
    Han et al. (2015), NeurIPS, Sec. 3.

    Examples
    --------
    >>> magnitude_prune(np.array([0.3, -0.05, 0.8], dtype=np.float32), sparsity=1/3)[0]
    array([0.3, 0. , 0.8], dtype=float32)
    """
    keep = magnitude_prune_mask(w, sparsity=sparsity)
    w = np.asarray(w)
    return np.where(keep, w, np.zeros((), w.dtype)), keep


# --------------------------------------------------------------------------------------
# CLIP-Q: clip, partition, quantize
# --------------------------------------------------------------------------------------


class ClipQ(NamedTuple):
    """One layer compressed by :func:`clip_q_quantize`.

    Attributes
    ----------
    w_q : ndarray, shape and dtype of the input
        The compressed weights, ``codebook[codes]``.
    codes : ndarray of uint8, shape of the input
        0 for a clipped (zero) weight, 1 .. 2**bits - 1 for the intervals in increasing order.
    codebook : ndarray of float64, shape (2**bits,)
        ``codebook[0] == 0``; ``codebook[j]`` is the mean of the weights in interval ``j``.
    keep : ndarray of bool, shape of the input
        The weights not clipped.
    c_minus, c_plus : float
        The clipping thresholds: the clipped weights lie in ``[c_minus, c_plus]`` (0 when
        nothing is clipped on that side).
    """

    w_q: np.ndarray
    codes: np.ndarray
    codebook: np.ndarray
    keep: np.ndarray
    c_minus: float
    c_plus: float


def clip_q_keep(w, *, p):
    r"""CLIP-Q's clipping step: keep all but the fraction ``p`` of smallest positive and of smallest negative weights.

    The thresholds :math:`c^+ > 0` and :math:`c^- < 0` are set so that a fraction :math:`p`
    of the positive weights are :math:`\le c^+` and a fraction :math:`p` of the negative ones
    are :math:`\ge c^-` (Tung & Mori 2018, Sec. 3.1); those weights are clipped to zero.
    Here :math:`\lfloor p\, n_\pm + \frac12 \rfloor` weights are clipped on each side (ties
    by position). Weights that are exactly zero are never kept.

    Parameters
    ----------
    w : array_like of float, non-empty
        The full-precision weights of one layer. Not modified.
    p : float in [0, 1)
        The layer's pruning rate.

    Returns
    -------
    ndarray of bool, shape of ``w``
        True for the weights that are not clipped.

    References
    ----------
    Tung, Mori (2018), "CLIP-Q", CVPR, Sec. 3.1 (clipping).

    Examples
    --------
    >>> clip_q_keep(np.array([0.5, 0.1, 0.3, 0.2, -0.1, -0.7, -0.4, -0.05]), p=0.5)
    array([ True, False,  True, False, False,  True,  True, False])
    """
    w = as_float_array(w, "w", allow_empty=False)
    p = check_fraction(p, "p", high_open=True)
    flat = w.reshape(-1)
    keep = np.zeros(flat.size, dtype=bool)
    for side in (flat > 0, flat < 0):
        idx = np.flatnonzero(side)  # [j]: flat position of the j-th weight of this sign
        k = math.floor(p * idx.size + 0.5)
        keep[idx[~_smallest_k(np.abs(flat[idx]), k)]] = True
    return keep.reshape(w.shape)


def _intervals_per_side(k, len_neg, len_pos, has_neg, has_pos):
    """Share ``k`` intervals between the negative and positive ranges in proportion to length."""
    if not has_neg:
        return 0, k if has_pos else 0
    if not has_pos:
        return k, 0
    total = len_neg + len_pos
    k_neg = math.floor(k * len_neg / total + 0.5) if total > 0 else k // 2
    k_neg = min(max(k_neg, 1), k - 1)
    return k_neg, k - k_neg


def _linear_partition(v, k):
    """Codes 0..k-1 of ``v`` (1-d float64) on k equal intervals of [min v, max v]; level = mean of each."""
    lo, hi = float(v.min()), float(v.max())
    width = (hi - lo) / k
    idx = np.zeros(v.size, dtype=np.int64) if width == 0 else np.minimum(((v - lo) / width).astype(np.int64), k - 1)
    counts = np.bincount(idx, minlength=k)
    sums = np.bincount(idx, weights=v, minlength=k)
    mid = lo + (np.arange(k) + 0.5) * width
    levels = np.where(counts > 0, sums / np.maximum(counts, 1), mid)
    return idx, levels


def clip_q_quantize(w, *, p, bits):
    r"""CLIP-Q's compression of one layer: clip, cut the rest into :math:`2^b - 1` intervals, take their means.

    With :math:`K = 2^b - 1`, the kept (non-clipped, :func:`clip_q_keep`) negative weights span
    :math:`[\min W, c^-_{\text{in}}]` and the positive ones :math:`[c^+_{\text{in}}, \max W]`;
    each range is cut into equal intervals (:math:`K_- + K_+ = K`, shared in proportion to
    the ranges' lengths), and each weight becomes the mean of the full-precision weights in
    its interval:

    .. math::

        \hat w_i = \begin{cases} 0 & i \text{ clipped} \\
        \frac{1}{|I_j|} \sum_{m \in I_j} w_m & w_i \in \text{interval } I_j \end{cases}

    (Tung & Mori 2018, Sec. 3.1: clipping, partitioning, quantizing). Zero plus :math:`K`
    levels fit a :math:`b`-bit code.

    Parameters
    ----------
    w : array_like of float, non-empty
        Full-precision weights of one layer. Not modified.
    p : float in [0, 1)
        Pruning rate (fraction of each sign clipped).
    bits : int in [2, 8]
        :math:`b`.

    Returns
    -------
    ClipQ
        ``(w_q, codes, codebook, keep, c_minus, c_plus)``.

    Raises
    ------
    TypeError
        If ``w`` is not floating point, ``p`` not real or ``bits`` not an integer.
    ValueError
        If ``w`` is empty or not finite, ``p`` outside [0, 1) or ``bits`` outside [2, 8].

    References
    ----------
    Tung, Mori (2018), "CLIP-Q: Deep network compression learning by in-parallel
    pruning-quantization", CVPR, Sec. 3.1.

    Examples
    --------
    One positive and one negative weight of four are clipped; the kept negatives span 0.7
    and the positives 0.2, so of the 3 intervals 2 go to the negative side:

    >>> w = np.array([0.4, 0.05, 0.2, -0.2, -0.9, -0.6, -0.02, 0.0])
    >>> r = clip_q_quantize(w, p=0.25, bits=2)
    >>> r.w_q
    array([ 0.3 ,  0.  ,  0.3 , -0.2 , -0.75, -0.75,  0.  ,  0.  ])
    >>> r.codes, r.codebook
    (array([3, 0, 3, 2, 1, 1, 0, 0], dtype=uint8), array([ 0.  , -0.75, -0.2 ,  0.3 ]))
    """
    w = as_float_array(w, "w", allow_empty=False)
    bits = check_bits(bits, "bits", low=2, high=8)
    keep = clip_q_keep(w, p=p)
    flat = w.reshape(-1).astype(np.float64)
    neg = keep.reshape(-1) & (flat < 0)
    pos = keep.reshape(-1) & (flat > 0)
    k = 2**bits - 1
    vn, vp = flat[neg], flat[pos]
    k_neg, k_pos = _intervals_per_side(k, float(np.ptp(vn)) if vn.size else 0.0,
                                       float(np.ptp(vp)) if vp.size else 0.0, vn.size > 0, vp.size > 0)
    codebook = np.zeros(2**bits)
    codes = np.zeros(flat.size, dtype=np.uint8)
    if k_neg:
        idx, levels = _linear_partition(vn, k_neg)
        codes[neg] = 1 + idx
        codebook[1:1 + k_neg] = levels
    if k_pos:
        idx, levels = _linear_partition(vp, k_pos)
        codes[pos] = 1 + k_neg + idx
        codebook[1 + k_neg:1 + k_neg + k_pos] = levels
    clipped = ~keep.reshape(-1)
    c_minus = float(np.min(flat, where=clipped & (flat < 0), initial=0.0))
    c_plus = float(np.max(flat, where=clipped & (flat > 0), initial=0.0))
    w_q = codebook[codes].astype(w.dtype).reshape(w.shape)
    return ClipQ(w_q, codes.reshape(w.shape), codebook, keep, c_minus, c_plus)


class ClipQQuantizer(nn.Module):
    r"""CLIP-Q as a ``weight_quantizer`` of :class:`qref.nn.Linear` / :class:`qref.nn.Conv2d`.

    Forward: :math:`\hat W = \text{CLIP-Q}_{p, b}(W)` (:func:`clip_q_quantize`), recomputed
    from the full-precision weights at every call, so the clipping thresholds and the levels
    follow the weights as they train. Backward: the straight-through estimator,
    :math:`\partial L/\partial W = \partial L/\partial \hat W`, for *every* entry, clipped
    ones included: the full-precision weights are updated with the gradient of the
    compressed network, and a clipped weight can come back (Tung & Mori 2018, Sec. 3.1).

    Parameters
    ----------
    p : float in [0, 1)
    bits : int in [2, 8]

    Attributes
    ----------
    last_ : ClipQ or None
        The compression computed by the last forward pass.

    References
    ----------
    Tung, Mori (2018), CVPR, Sec. 3.1.

    Examples
    --------
    >>> q = ClipQQuantizer(0.5, 2)
    >>> q(np.array([0.5, 0.1, -0.3, -0.05], np.float32))
    array([ 0.5,  0. , -0.3,  0. ], dtype=float32)
    >>> q.backward(np.ones(4, np.float32))
    array([1., 1., 1., 1.], dtype=float32)
    """

    def __init__(self, p, bits):
        super().__init__()
        self.p = check_fraction(p, "p", high_open=True)
        self.bits = check_bits(bits, "bits", low=2, high=8)
        self.last_ = None

    def extra_repr(self):
        return f"p={self.p}, bits={self.bits}"

    def forward(self, w):
        self.last_ = clip_q_quantize(w, p=self.p, bits=self.bits)
        return self.last_.w_q

    def backward(self, grad_out):
        if self.last_ is None:
            raise RuntimeError("ClipQQuantizer.backward() called before forward()")
        g = as_float_array(grad_out, "grad_out", finite=False)
        if g.shape != self.last_.w_q.shape:
            raise ValueError(f"grad_out must have the shape of the forward input {self.last_.w_q.shape}, got {g.shape}")
        return g.copy()


# --------------------------------------------------------------------------------------
# Training: CLIP-Q, and the two-stage baseline
# --------------------------------------------------------------------------------------


class CompressionResult(NamedTuple):
    """Result of :func:`clip_q_train` and :func:`prune_then_quantize`.

    Attributes
    ----------
    model : qref.nn.Module
        A copy of the input model whose weight layers hold the compressed weights (no
        ``weight_quantizer`` left).
    layers : list of ClipQ
        Per weight layer, the final compression (codes, codebook, mask).
    history : list of qref.nn.History
        The training runs (one for CLIP-Q; prune re-training and quantized fine-tuning for
        the baseline).
    accuracy : float
        Accuracy of the compressed model on the evaluation data.
    """

    model: object
    layers: list
    history: list
    accuracy: float


def _weight_layers(model):
    """The weight layers of ``model`` (as :func:`qref.inq.weight_layers`), at least one, none quantized yet."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError("model has no weight layer (Linear or Conv2d) to compress")
    for i, m in enumerate(layers):
        if m.weight_quantizer is not None:
            raise ValueError(f"weight layer {i} already has a weight_quantizer")
    return layers


def _layer_config(config, n_layers):
    """``config``: one (p, bits) pair for every layer, or a list of ``n_layers`` pairs."""
    def pair(c, where):
        try:
            p, b = c
        except (TypeError, ValueError):
            raise TypeError(f"config{where} must be a pair (p, bits), got {c!r}") from None
        return (check_fraction(p, f"config{where} p", high_open=True),
                check_bits(b, f"config{where} bits", low=2, high=8))

    if isinstance(config, tuple) and len(config) == 2 and not isinstance(config[0], (tuple, list)):
        return [pair(config, "")] * n_layers
    config = list(config)
    if len(config) != n_layers:
        raise ValueError(f"config must hold one (p, bits) pair per weight layer ({n_layers}), got {len(config)}")
    return [pair(c, f"[{i}]") for i, c in enumerate(config)]


def _training_args(epochs, lr, X_val, y_val, X, y):
    check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    return (X, y) if X_val is None else (X_val, y_val)


def _bake(layers, configs):
    """Replace each layer's weights by their final compression and drop the quantizer."""
    out = []
    for m, (p, b) in zip(layers, configs):
        r = clip_q_quantize(m.weight.data, p=p, bits=b)
        m.weight.data[...] = r.w_q
        m.weight_quantizer = None
        out.append(r)
    return out


def clip_q_train(model, X, y, *, config, epochs=10, lr=0.01, momentum=0.9, weight_decay=0.0, batch_size=64,
                 rng=0, X_val=None, y_val=None):
    r"""Fine-tune a trained model with CLIP-Q: prune and quantize every layer in parallel with training.

    Each weight layer :math:`l` gets a :class:`ClipQQuantizer` with its :math:`(p_l, b_l)`;
    the model is fine-tuned with SGD for ``epochs`` epochs (forward and backward through the
    compressed weights, updates to the full-precision ones), and at the end the weights are
    replaced by their compression. The paper's Bayesian optimization of :math:`(p_l, b_l)`
    (Sec. 3.2) is not done here: pass them.

    Parameters
    ----------
    model : qref.nn.Module
        A trained network (not modified).
    X, y : training data.
    config : (p, bits) or list of (p, bits)
        One pair for every weight layer, or one pair per weight layer in model order;
        ``p`` in [0, 1), ``bits`` in [2, 8].
    epochs : int >= 1
    lr : float > 0
    momentum : float in [0, 1)
    weight_decay : float >= 0
    batch_size : int >= 1
    rng : None, int or numpy.random.Generator
        Minibatch order.
    X_val, y_val : optional
        Evaluation data (default: the training data), also recorded per epoch.

    Returns
    -------
    CompressionResult

    References
    ----------
    Tung, Mori (2018), "CLIP-Q", CVPR, Sec. 3.1 (the compression during fine-tuning).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] - X[:, 2] > 0).astype(int)
    >>> net = nn.mlp((16,), in_features=4, classes=2, rng=0)
    >>> _ = nn.fit(net, X, y, epochs=20, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    >>> res = clip_q_train(net, X, y, config=(0.5, 3), epochs=3)
    >>> W = res.model.layers[0].weight.data
    >>> float(np.mean(W == 0)), len(np.unique(W[W != 0])) <= 7
    (0.5, True)
    """
    layers = _weight_layers(model)
    configs = _layer_config(config, len(layers))
    X_eval, y_eval = _training_args(epochs, lr, X_val, y_val, X, y)
    net = copy.deepcopy(model)
    layers = _weight_layers(net)
    for m, (p, b) in zip(layers, configs):
        m.weight_quantizer = ClipQQuantizer(p, b)
    opt = nn.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    hist = nn.fit(net, X, y, epochs=epochs, optimizer=opt, batch_size=batch_size, rng=check_rng(rng),
                  X_val=X_eval, y_val=y_eval, progress=False)
    compressed = _bake(layers, configs)
    return CompressionResult(net, compressed, [hist], nn.accuracy(net, X_eval, y_eval))


def prune_then_quantize(model, X, y, *, config, prune_epochs=5, quantize_epochs=5, lr=0.01, momentum=0.9,
                        weight_decay=0.0, batch_size=64, rng=0, X_val=None, y_val=None):
    r"""The two-stage baseline: magnitude-prune and re-train, then quantize the survivors (and fine-tune).

    Stage 1 (Han et al. 2015): each layer is pruned to sparsity :math:`p_l` by magnitude
    (:func:`magnitude_prune_mask`) and re-trained for ``prune_epochs`` epochs with the pruned
    weights frozen at zero (``Parameter.frozen``): they never come back. Stage 2 (weight
    sharing in the spirit of Han et al. 2016): the surviving weights are quantized with the
    same linear partition into :math:`2^{b_l} - 1` interval means as CLIP-Q
    (:func:`clip_q_quantize` with ``p=0``, zeros staying zero), fine-tuned for
    ``quantize_epochs`` epochs with the straight-through estimator (0: quantize once, no
    fine-tuning). Same budget of epochs as :func:`clip_q_train` when ``prune_epochs +
    quantize_epochs`` equals its ``epochs``.

    Parameters
    ----------
    model : qref.nn.Module
        A trained network (not modified).
    X, y : training data.
    config : (p, bits) or list of (p, bits)
        As in :func:`clip_q_train`.
    prune_epochs : int >= 1
    quantize_epochs : int >= 0
    lr, momentum, weight_decay, batch_size, rng, X_val, y_val
        As in :func:`clip_q_train`.

    Returns
    -------
    CompressionResult

    References
    ----------
    Han, Pool, Tran, Dally (2015), NeurIPS, Sec. 3 (prune, re-train). Han, Mao, Dally (2016),
    "Deep compression", ICLR, Sec. 3 (weight sharing after pruning). Tung, Mori (2018), CVPR,
    introduction (the two-stage approach CLIP-Q argues against).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] - X[:, 2] > 0).astype(int)
    >>> net = nn.mlp((16,), in_features=4, classes=2, rng=0)
    >>> _ = nn.fit(net, X, y, epochs=20, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    >>> res = prune_then_quantize(net, X, y, config=(0.5, 3), prune_epochs=2, quantize_epochs=1)
    >>> float(np.mean(res.model.layers[0].weight.data == 0))
    0.5
    """
    layers = _weight_layers(model)
    configs = _layer_config(config, len(layers))
    X_eval, y_eval = _training_args(prune_epochs, lr, X_val, y_val, X, y)
    quantize_epochs = check_int(quantize_epochs, "quantize_epochs", low=0)
    gen = check_rng(rng)
    net = copy.deepcopy(model)
    layers = _weight_layers(net)
    for m, (p, _) in zip(layers, configs):
        m.weight.data[...], keep = magnitude_prune(m.weight.data, sparsity=p)
        m.weight.frozen = ~keep
    history = []

    def train(n_epochs):
        opt = nn.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        history.append(nn.fit(net, X, y, epochs=n_epochs, optimizer=opt, batch_size=batch_size, rng=gen,
                              X_val=X_eval, y_val=y_eval, progress=False))

    train(prune_epochs)
    stage2 = [(0.0, b) for _, b in configs]  # the zeros are the pruned weights; quantize the rest
    if quantize_epochs:
        for m, (p, b) in zip(layers, stage2):
            m.weight_quantizer = ClipQQuantizer(p, b)
        train(quantize_epochs)
    compressed = _bake(layers, stage2)
    return CompressionResult(net, compressed, history, nn.accuracy(net, X_eval, y_eval))


# --------------------------------------------------------------------------------------
# What a compressed layer weighs
# --------------------------------------------------------------------------------------


class Storage(NamedTuple):
    """Bits of a layer stored sparsely with relative indices (:func:`sparse_storage_bits`).

    Attributes
    ----------
    total : int
        ``codes + indices + codebook``.
    codes : int
        ``entries * bits``.
    indices : int
        ``entries * index_bits``.
    codebook : int
        ``(2**bits - 1) * codeword_bits`` (zero is code 0 and is not stored).
    entries : int
        Stored entries: the non-zero weights plus the filler zeros.
    fillers : int
        Filler zeros inserted where a gap between non-zeros is too long for ``index_bits``.
    """

    total: int
    codes: int
    indices: int
    codebook: int
    entries: int
    fillers: int


def sparse_storage_bits(w_q, *, bits, index_bits, codeword_bits=32):
    r"""Bits to store a pruned and quantized layer: codes and relative indices of the non-zeros, plus the codebook.

    Deep Compression's sparse format (Han et al. 2016, Sec. 2): the non-zero weights are
    stored in order with the *difference* of their positions (in the flattened layer) from the
    previous stored one, in ``index_bits`` bits; a difference :math:`d` larger than
    :math:`2^{k}` (:math:`k` = ``index_bits``; a difference is at least 1 and is stored as
    :math:`d - 1`) is bridged by :math:`\lceil d / 2^k \rceil - 1` filler zeros. Each stored
    entry has a ``bits``-bit code into a codebook of :math:`2^b - 1` non-zero values of
    ``codeword_bits`` bits:

    .. math::

        \text{bits} = (n_{\neq 0} + n_{\text{fill}})\,(b + k) + (2^b - 1)\, b_{\text{codeword}}.

    CLIP-Q measures compression by the storage of the pruned and quantized weight tensors in
    such a sparse format (Tung & Mori 2018).

    Parameters
    ----------
    w_q : array_like of float, non-empty
        The compressed layer (zeros are pruned weights). Not modified.
    bits : int in [1, 16]
        Code width :math:`b`.
    index_bits : int in [1, 32]
        Relative-index width :math:`k` (Deep Compression: 8 for convolutional, 5 for fully
        connected layers).
    codeword_bits : int in [1, 64]

    Returns
    -------
    Storage

    References
    ----------
    Han, Mao, Dally (2016), "Deep compression", ICLR, Sec. 2 and Fig. 2 (relative index,
    filler zeros).

    Examples
    --------
    Non-zeros at positions 1, 3 and 20 with 3-bit indices: differences 2, 2, 17; the last
    needs :math:`\lceil 17/8 \rceil - 1 = 2` fillers.

    >>> w = np.zeros(24); w[[1, 3, 20]] = [0.5, -0.5, 0.25]
    >>> sparse_storage_bits(w, bits=2, index_bits=3)
    Storage(total=121, codes=10, indices=15, codebook=96, entries=5, fillers=2)
    """
    w_q = as_float_array(w_q, "w_q", allow_empty=False)
    b = check_bits(bits, "bits", low=1, high=16)
    k = check_bits(index_bits, "index_bits", low=1, high=32)
    cw = check_bits(codeword_bits, "codeword_bits", low=1, high=64)
    pos = np.flatnonzero(w_q.reshape(-1))
    gaps = np.diff(np.concatenate(([-1], pos)))  # [i]: distance from the previous stored entry
    fillers = int(np.sum(-(-gaps // 2**k) - 1))  # ceil(d / 2^k) - 1 each
    entries = int(pos.size) + fillers
    codebook = (2**b - 1) * cw
    return Storage(entries * (b + k) + codebook, entries * b, entries * k, codebook, entries, fillers)


def dense_storage_bits(n, *, n_levels, codeword_bits=32):
    r"""Bits to store ``n`` weights shared among ``n_levels`` values: dense indices plus the codebook.

    .. math:: n \lceil \log_2 k \rceil + k\, b_{\text{codeword}}

    the denominator of Deep Compression's compression rate :math:`r = n b / (n \log_2 k + k b)`
    (Han et al. 2016, Sec. 3).

    Parameters
    ----------
    n : int >= 1
    n_levels : int >= 1
        :math:`k`, the number of shared values (codebook entries).
    codeword_bits : int in [1, 64]

    Returns
    -------
    int

    References
    ----------
    Han, Mao, Dally (2016), "Deep compression", ICLR, Sec. 3.

    Examples
    --------
    The paper's example: 16 weights shared among 4 values, 32-bit originals, rate 3.2.

    >>> dense_storage_bits(16, n_levels=4), 16 * 32 / dense_storage_bits(16, n_levels=4)
    (160, 3.2)
    """
    n = check_positive(n, "n", integer=True)
    k = check_positive(n_levels, "n_levels", integer=True)
    cw = check_bits(codeword_bits, "codeword_bits", low=1, high=64)
    return n * (k - 1).bit_length() + k * cw
