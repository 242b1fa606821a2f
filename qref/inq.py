r"""Incremental Network Quantization (INQ): weights become powers of two, one group at a time.

INQ (Zhou et al. 2017) turns a trained full-precision network into one whose weights are
all zero or signed powers of two, :math:`\mathcal P_l = \{\pm 2^{n_1}, \dots, \pm 2^{n_2}, 0\}`
(their Eq. (1)), without the accuracy drop of quantizing everything at once. It repeats
three operations (Sec. 2.2) until no full-precision weight is left:

1. **weight partition**: split each layer's remaining full-precision weights into a group
   to quantize now and a group to re-train. The paper's "pruning-inspired" rule quantizes
   the *largest* magnitudes first (they matter most, as in magnitude pruning, Han et al.
   2015); a random split is the comparison the paper makes;
2. **group-wise quantization**: round the first group to :math:`\mathcal P_l` with the
   nearest-level rule of Eq. (4) (:func:`qref.nonuniform.power_of_two_quantize`), where
   :math:`n_1, n_2` come from the *pre-trained* layer (Eqs. (2)-(3),
   :func:`qref.nonuniform.inq_exponent_range`) and stay fixed;
3. **re-training**: train the network with the quantized weights **frozen** (a binary mask
   :math:`T_l` zeroes their updates, the masked update rule of Sec. 2.3; here
   :attr:`qref.nn.Parameter.frozen`), so the free weights compensate for the error.

The accumulated portion of quantized weights grows along a schedule; the paper uses
:data:`PAPER_PORTIONS` = 50%, 75%, 87.5%, 100%. Biases stay in full precision (INQ quantizes
the weights of convolutional and fully connected layers).

The pure array functions (:func:`check_portions`, :func:`frozen_counts`,
:func:`inq_partition`, :func:`inq_step`) need nothing but numpy;
:func:`incremental_quantization` runs the whole loop on a :mod:`qref.nn` model.

References
----------
Zhou, A., Yao, A., Guo, Y., Xu, L., Chen, Y. (2017). Incremental Network Quantization:
Towards Lossless CNNs with Low-Precision Weights. ICLR 2017. arXiv:1702.03044.

Zhou, A., Yao, A., Wang, K., Chen, Y. (2018). Explicit Loss-Error-Aware Quantization for
Low-Bit Deep Neural Networks. CVPR 2018. (ELQ: :func:`elq_quantize`, :func:`elq_step`,
:func:`elq_quantization`; a reconstruction from the abstract, see those docstrings.)

Han, S., Pool, J., Tran, J., Dally, W. J. (2015). Learning both Weights and Connections for
Efficient Neural Networks. NeurIPS 2015. arXiv:1506.02626.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ._validation import (
    as_float_array, check_bits, check_choice, check_fraction, check_int, check_positive, check_real, check_rng,
)
from .nonuniform import inq_exponent_range, power_of_two_quantize

__all__ = [
    "PARTITIONS",
    "PAPER_PORTIONS",
    "check_portions",
    "frozen_counts",
    "inq_partition",
    "inq_step",
    "weight_layers",
    "INQStep",
    "INQResult",
    "incremental_quantization",
    "ELQ_PARTITIONS",
    "loss_perturbation",
    "elq_quantize",
    "elq_scores",
    "elq_step",
    "ELQResult",
    "elq_quantization",
]

#: The partition rules: the paper's "pruning-inspired" one (largest magnitudes first) and random.
PARTITIONS = ("magnitude", "random")
#: The accumulated portions of quantized weights used in the paper's experiments (Sec. 3).
PAPER_PORTIONS = (0.5, 0.75, 0.875, 1.0)


def check_portions(portions):
    """Check an INQ schedule of accumulated portions; return it as a tuple of floats.

    A schedule lists, step by step, the fraction of each layer's weights that is quantized
    (and frozen) after that step. It must be non-empty, strictly increasing, inside
    :math:`(0, 1]`, and end at exactly 1.0 so that every weight ends up a power of two.

    Parameters
    ----------
    portions : sequence of float

    Returns
    -------
    tuple of float

    Raises
    ------
    TypeError
        If ``portions`` is not a sequence of real numbers.
    ValueError
        If it is empty, not strictly increasing, has an entry outside (0, 1], or does not
        end at 1.0.

    Examples
    --------
    >>> check_portions([0.5, 0.75, 0.875, 1])
    (0.5, 0.75, 0.875, 1.0)
    """
    if isinstance(portions, (str, bytes)) or not hasattr(portions, "__len__"):
        raise TypeError(
            f"portions must be a sequence of floats such as (0.5, 0.75, 1.0), got {type(portions).__name__}"
        )
    if len(portions) == 0:
        raise ValueError("portions must not be empty; the paper uses (0.5, 0.75, 0.875, 1.0)")
    out = tuple(check_fraction(p, f"portions[{i}]", low_open=True) for i, p in enumerate(portions))
    for i, p in enumerate(out):
        if i and p <= out[i - 1]:
            raise ValueError(f"portions must be strictly increasing, got {out[i - 1]!r} then {p!r} at index {i}")
    if out[-1] != 1.0:
        raise ValueError(f"portions must end at 1.0 so that every weight is quantized, got last entry {out[-1]!r}")
    return out


def frozen_counts(n, portions):
    r"""How many of a layer's ``n`` weights are quantized after each step of the schedule.

    .. math:: m_k = \lfloor \sigma_k n + \tfrac12 \rfloor, \qquad m_K = n,

    i.e. the accumulated portion :math:`\sigma_k` of the weights, rounded half up. For small
    layers two steps can give the same count (that step then quantizes nothing new).

    Parameters
    ----------
    n : int >= 1
        Number of weights of the layer.
    portions : sequence of float
        A schedule accepted by :func:`check_portions`.

    Returns
    -------
    ndarray of int64, shape (len(portions),), non-decreasing, last entry ``n``

    Examples
    --------
    >>> frozen_counts(4096, (0.5, 0.75, 0.875, 1.0))
    array([2048, 3072, 3584, 4096])
    >>> frozen_counts(3, (0.5, 0.75, 1.0))
    array([2, 2, 3])
    """
    n = check_positive(n, "n", integer=True)
    portions = check_portions(portions)
    return np.array([math.floor(p * n + 0.5) for p in portions], dtype=np.int64)


def inq_partition(w, *, count, frozen=None, strategy="magnitude", rng=None):
    r"""INQ's weight partition: grow the quantized group :math:`A^{(1)}` of a layer to ``count`` weights.

    The weights not yet quantized are split into the group quantized now and the group
    re-trained next (Sec. 2.2 of Zhou et al. 2017, :math:`A^{(1)}_l \cup A^{(2)}_l = W_l`,
    :math:`A^{(1)}_l \cap A^{(2)}_l = \emptyset`). ``strategy="magnitude"`` is the paper's
    pruning-inspired rule: among the free weights, those of **largest** :math:`|W|` join the
    quantized group first (ties broken by position). ``strategy="random"`` picks them
    uniformly at random, the comparison the paper reports.

    Parameters
    ----------
    w : array_like of float, any shape, non-empty
        The layer's current weights (retrained values). Not modified.
    count : int
        Size of the accumulated quantized group after this step,
        ``frozen.sum() <= count <= w.size``.
    frozen : None or array_like of bool, shape of ``w``
        Weights quantized in earlier steps (they stay in the group). ``None``: none yet.
    strategy : {"magnitude", "random"}
    rng : None, int or numpy.random.Generator
        Used by ``"random"`` only.

    Returns
    -------
    ndarray of bool, shape of ``w``
        The accumulated quantized group: ``frozen`` plus ``count - frozen.sum()`` new weights.

    Raises
    ------
    TypeError
        If ``w`` is not floating point or ``frozen`` is not boolean.
    ValueError
        If shapes disagree, ``count`` is out of range, or ``strategy`` is unknown.

    References
    ----------
    Zhou et al. (2017), ICLR, Sec. 2.2 (weight partition) and Sec. 3.2 (random vs.
    pruning-inspired partition).

    Examples
    --------
    >>> w = np.array([0.1, -0.9, 0.3, -0.2, 0.5, 0.05])
    >>> first = inq_partition(w, count=3)
    >>> first
    array([False,  True,  True, False,  True, False])
    >>> inq_partition(w, count=5, frozen=first)
    array([ True,  True,  True,  True,  True, False])
    """
    w = as_float_array(w, "w", allow_empty=False)
    strategy = check_choice(strategy, "strategy", PARTITIONS)
    if frozen is None:
        frozen = np.zeros(w.shape, dtype=bool)
    else:
        frozen = np.asarray(frozen)
        if frozen.dtype != np.bool_:
            raise TypeError(f"frozen must be a bool array, got dtype {frozen.dtype}")
        if frozen.shape != w.shape:
            raise ValueError(f"frozen must have the shape of w {w.shape}, got {frozen.shape}")
    already = int(np.count_nonzero(frozen))
    count = check_int(count, "count", low=0)
    if not already <= count <= w.size:
        raise ValueError(f"count must be in [{already}, {w.size}] (already frozen .. all weights), got {count}")
    free = np.flatnonzero(~frozen.reshape(-1))  # [j]: flat index of the j-th free weight
    need = count - already
    if strategy == "magnitude":
        order = np.argsort(-np.abs(w.reshape(-1)[free]), kind="stable")  # largest |w| first
        chosen = free[order[:need]]
    else:
        chosen = check_rng(rng).permutation(free)[:need]
    out = frozen.copy().reshape(-1)
    out[chosen] = True
    return out.reshape(w.shape)


def inq_step(w, *, frozen, count, bits, max_abs, strategy="magnitude", rng=None):
    r"""One INQ step on one layer: partition, then quantize the newly chosen weights to :math:`\mathcal P_l`.

    The new group (``inq_partition(...) & ~frozen``) is rounded with Eq. (4) of Zhou et al.
    (2017) using the exponents :math:`n_1, n_2` of the pre-trained layer (``max_abs`` is
    :math:`s = \max|W_l|` *before* any quantization, Eqs. (2)-(3)). Weights frozen earlier
    and weights left free are returned unchanged, bit for bit.

    Parameters
    ----------
    w : array_like of float, non-empty
        The layer's current weights. Not modified.
    frozen : array_like of bool, shape of ``w``
        Weights already quantized.
    count : int
        Size of the accumulated quantized group after this step.
    bits : int in [2, 8]
        INQ's :math:`b` (one bit of it for zero).
    max_abs : float > 0
        :math:`s` of the pre-trained layer.
    strategy : {"magnitude", "random"}
    rng : None, int or numpy.random.Generator

    Returns
    -------
    w_new : ndarray, shape and dtype of ``w``
    frozen_new : ndarray of bool, shape of ``w``
        ``w_new[frozen_new]`` all lie in ``power_of_two_levels(*inq_exponent_range(max_abs, bits))``.

    Examples
    --------
    >>> w = np.array([0.6, -0.45, 0.2, 0.1], dtype=np.float32)
    >>> w2, f2 = inq_step(w, frozen=np.zeros(4, bool), count=2, bits=3, max_abs=0.6)
    >>> w2, f2
    (array([ 0.5, -0.5,  0.2,  0.1], dtype=float32), array([ True,  True, False, False]))
    """
    w = as_float_array(w, "w", allow_empty=False)
    frozen_new = inq_partition(w, count=count, frozen=frozen, strategy=strategy, rng=rng)
    new = frozen_new & ~np.asarray(frozen)
    out = w.copy()
    out[new] = power_of_two_quantize(w[new], bits=bits, max_abs=max_abs)
    return out, frozen_new


# --------------------------------------------------------------------------------------
# The whole loop on a qref.nn model
# --------------------------------------------------------------------------------------


def weight_layers(model):
    """The layers of a :mod:`qref.nn` model whose weights INQ quantizes (Linear, Conv2d), in order.

    A layer counts if it has a ``weight`` Parameter and a ``weight_quantizer`` attribute, which
    is what :class:`qref.nn.Linear` and :class:`qref.nn.Conv2d` have (batch-norm scales do not).

    Examples
    --------
    >>> from qref import nn
    >>> [type(m).__name__ for m in weight_layers(nn.mlp((8,)))]
    ['Linear', 'Linear']
    """
    from . import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a qref.nn.Module, got {type(model).__name__}")
    return [m for m in model.modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter) and hasattr(m, "weight_quantizer")]


@dataclass
class INQStep:
    """What one step of :func:`incremental_quantization` did.

    Attributes
    ----------
    portion : float
        The accumulated portion :math:`\\sigma_k` of the schedule.
    frozen : list of ndarray of bool
        Per weight layer, the weights quantized and frozen after this step (a copy).
    weights : list of ndarray
        Per weight layer, the weights at the end of this step (after re-training; a copy).
    acc_quantized : float
        Accuracy right after quantizing this step's group (before re-training).
    acc_retrained : float
        Accuracy after re-training the free weights (equal to ``acc_quantized`` at the last
        step, where nothing is left to re-train).
    loss : list of float
        Training loss per re-training epoch (empty at the last step).
    """

    portion: float
    frozen: list
    weights: list
    acc_quantized: float
    acc_retrained: float
    loss: list = field(default_factory=list)


class INQResult(NamedTuple):
    """Result of :func:`incremental_quantization`.

    Attributes
    ----------
    model : qref.nn.Module
        A quantized copy of the input model: every weight of every weight layer is in its
        layer's level set; the weights stay frozen (``Parameter.frozen`` all True).
    steps : list of INQStep
        One per entry of the schedule.
    exponents : list of (int, int)
        :math:`(n_1, n_2)` per weight layer, from the pre-trained weights.
    acc_float : float
        Accuracy of the input (full-precision) model on the same data.
    """

    model: object
    steps: list
    exponents: list
    acc_float: float


def incremental_quantization(model, X, y, *, bits=5, portions=PAPER_PORTIONS, strategy="magnitude", epochs=2,
                             lr=0.01, momentum=0.9, weight_decay=0.0, batch_size=64, rng=0, X_val=None,
                             y_val=None):
    r"""Run INQ on a trained :mod:`qref.nn` model: partition, quantize, freeze, re-train, repeat.

    For each weight layer :math:`l`, :math:`(n_1, n_2)` is fixed from the pre-trained
    weights (Eqs. (2)-(3) of Zhou et al. 2017). Then for each accumulated portion
    :math:`\sigma_k` of the schedule:

    1. grow each layer's quantized group to :math:`\lfloor\sigma_k n_l + \frac12\rfloor`
       weights (:func:`inq_partition`) and round the new members with Eq. (4);
    2. freeze the group (``Parameter.frozen``; the masked update of Sec. 2.3: the optimizer
       never changes a frozen entry, so quantized weights stay exactly on their levels);
    3. unless :math:`\sigma_k = 1`, re-train for ``epochs`` epochs with SGD (a fresh optimizer
       each step; biases and free weights train).

    Weights that grow beyond :math:`\tfrac32 2^{n_1}` while free saturate at :math:`\pm
    2^{n_1}` when quantized (see :func:`qref.nonuniform.power_of_two_quantize`).

    Parameters
    ----------
    model : qref.nn.Module
        A trained network (not modified; a deep copy is quantized). Its weight layers must
        not have a ``weight_quantizer``.
    X, y : training data (float inputs, integer labels).
    bits : int in [2, 8]
        INQ's :math:`b`, one bit of which encodes zero: :math:`2^{b-2}` exponents.
    portions : sequence of float
        Accumulated portions, strictly increasing in (0, 1], ending at 1.0
        (:func:`check_portions`). Default: the paper's (0.5, 0.75, 0.875, 1.0).
    strategy : {"magnitude", "random"}
        Partition rule (:func:`inq_partition`).
    epochs : int >= 1
        Re-training epochs after each step but the last.
    lr : float > 0
    momentum : float in [0, 1)
    weight_decay : float >= 0
    batch_size : int >= 1
    rng : None, int or numpy.random.Generator
        Drives the random partition and the minibatch order: a fixed seed gives a fixed result.
    X_val, y_val : optional
        Data the accuracies are measured on; default the training data.

    Returns
    -------
    INQResult

    Raises
    ------
    TypeError, ValueError
        For a model that is not a :class:`qref.nn.Module` or has no weight layer or a layer
        with a ``weight_quantizer``, a bad schedule (:func:`check_portions`), ``bits``
        outside [2, 8], a non-positive ``lr`` or ``epochs``, an unknown ``strategy``, or a
        layer whose weights are all zero (no :math:`n_1`).

    References
    ----------
    Zhou et al. (2017), "Incremental network quantization", ICLR, Sec. 2 (Eqs. (1)-(4), the
    partition of Sec. 2.2 and the masked re-training of Sec. 2.3) and Sec. 3 (schedule).

    Examples
    --------
    >>> from qref import nn
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> net = nn.mlp((8,), in_features=4, classes=2, rng=0)
    >>> _ = nn.fit(net, X, y, epochs=20, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    >>> res = incremental_quantization(net, X, y, bits=4, epochs=2)
    >>> [s.portion for s in res.steps], res.exponents[0][0] - res.exponents[0][1]
    ([0.5, 0.75, 0.875, 1.0], 3)
    >>> from qref.nonuniform import power_of_two_levels
    >>> W = res.model.layers[0].weight.data
    >>> bool(np.isin(W, power_of_two_levels(*res.exponents[0])).all())
    True
    """
    from . import nn

    _check_model(model, "INQ")
    bits = check_bits(bits, "bits", low=2, high=8)
    portions = check_portions(portions)
    strategy = check_choice(strategy, "strategy", PARTITIONS)
    epochs = check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    gen = check_rng(rng)
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    X_eval, y_eval = (X, y) if X_val is None else (X_val, y_val)

    net = copy.deepcopy(model)
    layers = weight_layers(net)
    acc_float = nn.accuracy(model, X_eval, y_eval)
    max_abs = []
    for i, m in enumerate(layers):
        s = float(np.max(np.abs(m.weight.data)))
        if s == 0.0:
            raise ValueError(f"weight layer {i} is all zero: INQ's n1 = floor(log2(4 s / 3)) needs s = max|W| > 0")
        max_abs.append(s)
    exponents = [inq_exponent_range(s, bits) for s in max_abs]

    def quantize(k, i, w, frozen, count):
        return inq_step(w, frozen=frozen, count=count, bits=bits, max_abs=max_abs[i], strategy=strategy, rng=gen)

    steps = _partition_quantize_retrain(net, X, y, X_eval, y_eval, portions, quantize, epochs=epochs, lr=lr,
                                        momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                                        rng=gen)
    return INQResult(net, steps, exponents, acc_float)


def _check_model(model, method):
    """The weight layers of ``model`` (at least one, none with a ``weight_quantizer``)."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError("model has no weight layer (Linear or Conv2d) to quantize")
    for i, m in enumerate(layers):
        if m.weight_quantizer is not None:
            raise ValueError(f"weight layer {i} has a weight_quantizer; {method} quantizes the weights themselves")
    return layers


def _partition_quantize_retrain(net, X, y, X_eval, y_eval, portions, quantize, *, epochs, lr, momentum,
                                weight_decay, batch_size, rng):
    """The incremental loop of INQ (Sec. 2.3 of Zhou et al. 2017), shared by INQ and ELQ.

    For each accumulated portion ``k``: ``quantize(k, i, w, frozen, count)`` of every weight
    layer ``i`` returns its new weights and frozen mask (``count`` frozen entries); the frozen
    entries are excluded from the optimizer (``Parameter.frozen``); the accuracy is measured;
    and, unless everything is frozen, the rest is re-trained with SGD. Returns the
    :class:`INQStep` records.
    """
    from . import nn

    layers = weight_layers(net)
    counts = [frozen_counts(m.weight.data.size, portions) for m in layers]
    frozen = [np.zeros(m.weight.data.shape, dtype=bool) for m in layers]
    steps = []
    for k, portion in enumerate(portions):
        for i, m in enumerate(layers):
            w_new, frozen[i] = quantize(k, i, m.weight.data, frozen[i], int(counts[i][k]))
            m.weight.data[...] = w_new
            m.weight.frozen = frozen[i]
        acc_q = nn.accuracy(net, X_eval, y_eval)
        loss, acc_r = [], acc_q
        if portion < 1.0:
            opt = nn.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
            hist = nn.fit(net, X, y, epochs=epochs, optimizer=opt, batch_size=batch_size, rng=rng, progress=False)
            loss = list(hist.loss)
            acc_r = nn.accuracy(net, X_eval, y_eval)
        steps.append(INQStep(portion, [f.copy() for f in frozen], [m.weight.data.copy() for m in layers],
                             acc_q, acc_r, loss))
    return steps


# --------------------------------------------------------------------------------------
# ELQ: loss-error-aware ternary/binary weights, quantized incrementally (Zhou et al. 2018)
# --------------------------------------------------------------------------------------

#: ELQ partition rules here: INQ's largest magnitude first ("magnitude"), or smallest estimated
#: loss-error first ("loss", a greedy reading of the paper's abstract; see elq_quantization).
ELQ_PARTITIONS = ("magnitude", "loss")


def _curvature(w, lam, hessian_diag):
    # with a Hessian, lam may be <= 0 as long as h + lam > 0, but it must be a finite real
    lam = float(check_positive(lam, "lam")) if hessian_diag is None else check_real(lam, "lam")
    if hessian_diag is None:
        return np.full(w.shape, lam)
    h = as_float_array(hessian_diag, "hessian_diag").astype(np.float64)
    if h.shape != w.shape:
        raise ValueError(f"hessian_diag must have the shape of w {w.shape}, got {h.shape}")
    c = h + lam
    if (c <= 0).any():
        raise ValueError("hessian_diag + lam must be positive everywhere (a convex local model), "
                         f"got min {float(c.min())!r}")
    return c


def _grad_like(grad, w):
    if grad is None:
        return np.zeros(w.shape)
    g = as_float_array(grad, "grad").astype(np.float64)
    if g.shape != w.shape:
        raise ValueError(f"grad must have the shape of w {w.shape}, got {g.shape}")
    return g


def loss_perturbation(w, w_q, grad, *, hessian_diag=None):
    r"""Taylor estimate of the loss change caused by quantizing the weights, :math:`L(\hat W) - L(W)`.

    .. math::

        \Delta L \approx g^\top (\hat w - w) + \tfrac12 \sum_i h_i (\hat w_i - w_i)^2,

    with :math:`g = \nabla_W L` and :math:`h` the diagonal of the Hessian (omit it for the
    first-order term alone). Zhou et al. (2018) build ELQ on this loss perturbation (its
    first-order Taylor approximation is what their abstract and our reading note describe;
    the second-order term is the usual diagonal extension).

    Parameters
    ----------
    w, w_q, grad : array_like of float, same shape
    hessian_diag : None or array_like of float, same shape

    Returns
    -------
    float

    Examples
    --------
    >>> loss_perturbation(np.array([0.3, -0.2]), np.array([0.5, 0.0]), np.array([1.0, 2.0]))
    0.6000000000000001
    """
    w = as_float_array(w, "w").astype(np.float64)
    w_q = as_float_array(w_q, "w_q").astype(np.float64)
    if w_q.shape != w.shape:
        raise ValueError(f"w_q must have the shape of w {w.shape}, got {w_q.shape}")
    g = _grad_like(grad, w)
    d = w_q - w
    out = float(np.sum(g * d))
    if hessian_diag is not None:
        h = as_float_array(hessian_diag, "hessian_diag").astype(np.float64)
        if h.shape != w.shape:
            raise ValueError(f"hessian_diag must have the shape of w {w.shape}, got {h.shape}")
        out += 0.5 * float(np.sum(h * d * d))
    return out


def elq_quantize(w, grad=None, *, ternary=True, lam=1.0, hessian_diag=None, alpha=None):
    r"""Loss-error-aware ternary (or binary) weights :math:`\hat w = \alpha t`, :math:`t \in \{-1, 0, 1\}^n`.

    **A reconstruction, labelled as such.** The paper (Zhou et al. 2018) minimizes the loss
    perturbation of quantization together with the weight approximation error; its exact
    objective and solver we could not read. Here the objective is the second-order model of
    :func:`loss_perturbation` plus :math:`\frac\lambda2` times the squared weight error,

    .. math::

        J(\alpha, t) = g^\top(\alpha t - w) + \tfrac12 \sum_i c_i (\alpha t_i - w_i)^2,
        \qquad c_i = h_i + \lambda,

    which, completing the square, is a weighted least-squares fit of the *loss-shifted*
    weights :math:`u_i = w_i - g_i / c_i` (a Newton step on the local model):
    :math:`J = \frac12\sum_i c_i(\alpha t_i - u_i)^2 + \text{const}`. For a fixed
    :math:`\alpha` the best code rounds :math:`u_i` to the nearest of
    :math:`\{-\alpha, 0, \alpha\}` (threshold :math:`\alpha/2`; binary: :math:`t_i =
    \mathrm{sign}(u_i)`), so the nonzero codes of an optimum sit on the :math:`k` largest
    :math:`|u_i|` for some :math:`k`. For fixed codes the best scale is the weighted mean
    :math:`\alpha = \sum_{t_i \ne 0} c_i |u_i| / \sum_{t_i \ne 0} c_i`, which leaves
    :math:`J = \text{const} - \frac12 \big(\sum_{t_i \ne 0} c_i|u_i|\big)^2 / \sum_{t_i \ne 0}
    c_i`. Trying every :math:`k` on the sorted :math:`|u|` gives the global optimum exactly,
    in :math:`O(n \log n)`. With :math:`g = 0` and :math:`h = 0` this is the exact
    least-squares ternarization of TWN (:func:`qref.binary.ternarize_twn`, ``method="exact"``)
    and, binary, BWN's :math:`\alpha = \mathrm{mean}|w|`.

    Parameters
    ----------
    w : array_like of float, non-empty
        Weights. Not modified.
    grad : None or array_like of float, shape of ``w``
        :math:`g = \partial L / \partial w`; None: 0.
    ternary : bool
    lam : float
        :math:`\lambda > 0`, the weight of the weight-approximation error (with
        ``hessian_diag``, any value with :math:`h + \lambda > 0`).
    hessian_diag : None or array_like of float, shape of ``w``
    alpha : None or float > 0
        A fixed scale (only the codes are chosen); None: fit it too.

    Returns
    -------
    t : ndarray of int8, shape of ``w``
    alpha : float
        (1.0 when every :math:`u_i = 0` and all codes are 0.)

    Raises
    ------
    TypeError, ValueError
        For non-float or non-finite arrays, shapes that differ from ``w``, a non-positive
        ``lam`` or ``alpha`` (or :math:`h + \lambda \le 0`), a non-bool ``ternary``.

    References
    ----------
    Zhou, A., Yao, A., Wang, K. and Chen, Y. (2018). Explicit loss-error-aware quantization for
    low-bit deep neural networks. CVPR 2018.

    Examples
    --------
    >>> w = np.array([0.9, 0.5, 0.1, -0.6, -0.05])
    >>> elq_quantize(w)                                   # g = 0: TWN's least-squares fit
    (array([ 1,  1,  0, -1,  0], dtype=int8), 0.6666666666666666)
    >>> t, a = elq_quantize(w, np.array([0.0, 0.0, -0.3, 0.0, 0.0]))   # the loss wants w_3 larger
    >>> t, round(a, 4)
    (array([ 1,  1,  1, -1,  0], dtype=int8), 0.6)
    """
    w = as_float_array(w, "w", allow_empty=False)
    v = w.astype(np.float64)
    g = _grad_like(grad, v)
    if not isinstance(ternary, (bool, np.bool_)):
        _bad_bool(ternary)
    c = _curvature(v, lam, hessian_diag)
    u = v - g / c                                                  # loss-shifted weights
    sign = np.where(u >= 0, 1, -1).astype(np.int8)
    if alpha is not None:
        a = float(check_positive(alpha, "alpha"))
        t = sign if not ternary else np.where(np.abs(u) > a / 2, sign, 0).astype(np.int8)
        return t, a
    au, cf = np.abs(u).reshape(-1), c.reshape(-1)
    if not ternary:
        return sign, float(np.sum(cf * au) / np.sum(cf))
    order = np.argsort(-au, kind="stable")                         # [k]: flat index of the k-th largest |u|
    s1 = np.cumsum((cf * au)[order])                               # sum of c|u| over the top k
    s0 = np.cumsum(cf[order])                                      # sum of c over the top k
    k = int(np.argmax(s1 * s1 / s0)) + 1                           # the best number of nonzero codes
    a = float(s1[k - 1] / s0[k - 1])
    if a == 0.0:
        return np.zeros(w.shape, dtype=np.int8), 1.0               # u = 0: codes 0, any scale
    t = np.zeros(au.size, dtype=np.int8)
    t[order[:k]] = sign.reshape(-1)[order[:k]]
    return t.reshape(w.shape), a


def _bad_bool(value):
    raise TypeError(f"ternary must be a bool, got {type(value).__name__}")


def elq_scores(w, grad, *, alpha, ternary=True, lam=1.0, hessian_diag=None):
    r"""Each weight's share of the loss-error objective if it were quantized now (smaller: safer).

    .. math::

        e_i = g_i(\hat w_i - w_i) + \tfrac12 c_i (\hat w_i - w_i)^2, \qquad \hat w_i = \alpha t_i,

    with the codes of :func:`elq_quantize` for the fixed ``alpha``. :math:`\sum_i e_i` is the
    objective :math:`J` of :func:`elq_quantize`; the greedy partition ``strategy="loss"`` of
    :func:`elq_step` quantizes the weights of smallest :math:`e_i` first.

    Parameters
    ----------
    w : array_like of float, non-empty. Not modified.
    grad : None or array_like of float, shape of ``w``
    alpha : float > 0
        The layer's fixed scale.
    ternary, lam, hessian_diag
        As in :func:`elq_quantize`.

    Returns
    -------
    e : ndarray of float64, shape of ``w``
    w_hat : ndarray of float64, shape of ``w``, the quantized values :math:`\alpha t`

    Examples
    --------
    >>> e, wq = elq_scores(np.array([0.5, 0.3]), np.array([0.0, 0.1]), alpha=0.5)
    >>> e.round(3), wq                  # u = 0.3 - 0.1 = 0.2 < alpha / 2: rounds to 0
    (array([0.   , 0.015]), array([0.5, 0. ]))
    """
    w = as_float_array(w, "w", allow_empty=False)
    v = w.astype(np.float64)
    t, a = elq_quantize(v, grad, ternary=ternary, lam=lam, hessian_diag=hessian_diag, alpha=alpha)
    g, c = _grad_like(grad, v), _curvature(v, lam, hessian_diag)
    d = a * t - v
    return g * d + 0.5 * c * d * d, a * t.astype(np.float64)


def elq_step(w, grad=None, *, frozen, count, alpha, ternary=True, lam=1.0, hessian_diag=None, strategy="magnitude"):
    r"""One incremental ELQ step on one layer: grow the frozen group to ``count`` weights and quantize the new ones.

    The free weights are ranked by :func:`elq_scores` (``strategy="loss"``: smallest
    loss-error first) or by magnitude (``"magnitude"``: INQ's largest first), and the chosen
    ones are set to :math:`\alpha t_i`. Frozen weights and the other free ones are returned
    unchanged, bit for bit.

    Parameters
    ----------
    w : array_like of float, non-empty. Not modified.
    grad : None or array_like of float, shape of ``w``
    frozen : array_like of bool, shape of ``w``
    count : int, ``frozen.sum() <= count <= w.size``
    alpha : float > 0
        The layer's scale (fixed for all steps).
    ternary, lam, hessian_diag
        As in :func:`elq_quantize`.
    strategy : {"magnitude", "loss"}

    Returns
    -------
    w_new : ndarray, shape and dtype of ``w``
    frozen_new : ndarray of bool, shape of ``w``

    Examples
    --------
    >>> w = np.array([0.9, 0.5, 0.1, -0.6], dtype=np.float32)
    >>> w2, f2 = elq_step(w, frozen=np.zeros(4, bool), count=3, alpha=0.6, strategy="loss")
    >>> w2, f2                                      # g = 0: the three closest to a level go first
    (array([ 0.9,  0.6,  0. , -0.6], dtype=float32), array([False,  True,  True,  True]))
    """
    w = as_float_array(w, "w", allow_empty=False)
    strategy = check_choice(strategy, "strategy", ELQ_PARTITIONS)
    frozen = np.asarray(frozen)
    if frozen.dtype != np.bool_ or frozen.shape != w.shape:
        raise ValueError(f"frozen must be a bool array of the shape of w {w.shape}, got {frozen.dtype} {frozen.shape}")
    already = int(np.count_nonzero(frozen))
    count = check_int(count, "count", low=0)
    if not already <= count <= w.size:
        raise ValueError(f"count must be in [{already}, {w.size}] (already frozen .. all weights), got {count}")
    e, w_hat = elq_scores(w, grad, alpha=alpha, ternary=ternary, lam=lam, hessian_diag=hessian_diag)
    free = np.flatnonzero(~frozen.reshape(-1))
    key = e.reshape(-1)[free] if strategy == "loss" else -np.abs(w.reshape(-1)[free].astype(np.float64))
    chosen = free[np.argsort(key, kind="stable")[:count - already]]
    out = w.copy().reshape(-1)
    out[chosen] = w_hat.reshape(-1)[chosen]
    f = frozen.copy().reshape(-1)
    f[chosen] = True
    return out.reshape(w.shape), f.reshape(w.shape)


class ELQResult(NamedTuple):
    """Result of :func:`elq_quantization`: the quantized model, the steps, each layer's scale, the float accuracy."""

    model: object
    steps: list
    alphas: list
    acc_float: float


def _full_gradients(net, layers, X, y, batch_size=512):
    """Gradient of the mean training loss w.r.t. every weight layer's weights (float64).

    Taken in evaluation mode, the network as it will be deployed: batch normalization uses
    (and does not update) its running statistics, so the gradient does not depend on how the
    data is cut into batches and the model's statistics are left alone.
    """
    from . import nn

    loss = nn.SoftmaxCrossEntropy()
    total = [np.zeros(m.weight.data.shape) for m in layers]
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(y), batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            nn.backprop(net, xb, yb, loss)
            for t, m in zip(total, layers):
                t += m.weight.grad * (len(yb) / len(y))
    finally:
        net.train(was_training)
    net.zero_grad()
    return total


def elq_quantization(model, X, y, *, ternary=True, portions=PAPER_PORTIONS, strategy="magnitude", lam=1.0,
                     epochs=2, lr=0.01, momentum=0.9, weight_decay=0.0, batch_size=64, rng=0, X_val=None,
                     y_val=None):
    r"""Incremental loss-error-aware ternary (or binary) quantization of a trained :mod:`qref.nn` model.

    **A reconstruction, labelled as such** (see :func:`elq_quantize`): the paper's abstract
    says ELQ combines the loss perturbation of quantization with an incremental strategy;
    here that is INQ's loop (:func:`incremental_quantization`) with ELQ's pieces:

    1. each layer's scale :math:`\alpha_l` is fitted once, on the pre-trained weights and the
       full-batch gradient :math:`g` of the training loss (:func:`elq_quantize`), and fixed;
    2. at every step the gradient is recomputed at the current weights, the free weights are
       ranked (INQ's largest magnitude first, the default, or smallest loss-error :math:`e_i`
       first, :func:`elq_scores`), and the group is set to :math:`\alpha_l t_i` and frozen;
    3. the free weights re-train with SGD (the frozen ones never move).

    Parameters
    ----------
    model : qref.nn.Module
        Trained; not modified. Its weight layers must not have a ``weight_quantizer``.
    X, y : training data
    ternary : bool
    portions : sequence of float
        As in :func:`incremental_quantization` (default: INQ's 50/75/87.5/100%).
    strategy : {"magnitude", "loss"}
        "loss" (smallest loss-error first) is the greedy choice, but it leaves the weights whose
        quantization hurts most to the last step, where nothing is left to re-train: on the
        digits MLP it ends below "magnitude" (the book's ELQ section).
    lam : float > 0
        :math:`\lambda` of :func:`elq_quantize` (no Hessian is used here). On the digits MLP
        the default 1 (codes nearly TWN's) is best; smaller values let the noisy gradient of
        a trained network move many codes and cost accuracy.
    epochs, lr, momentum, weight_decay, batch_size, rng, X_val, y_val
        As in :func:`incremental_quantization`.

    Returns
    -------
    ELQResult
        ``steps`` are :class:`INQStep` records; ``alphas`` one scale per weight layer.

    Examples
    --------
    >>> from qref import nn
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> net = nn.mlp((8,), in_features=4, classes=2, rng=0)
    >>> _ = nn.fit(net, X, y, epochs=20, optimizer=nn.SGD(net.parameters(), lr=0.1), progress=False)
    >>> res = elq_quantization(net, X, y, epochs=1)
    >>> W, a = res.model.layers[0].weight.data, res.alphas[0]
    >>> bool(np.isin(W, np.float32([-a, 0, a])).all())
    True
    """
    from . import nn

    _check_model(model, "ELQ")
    if not isinstance(ternary, (bool, np.bool_)):
        _bad_bool(ternary)
    portions = check_portions(portions)
    strategy = check_choice(strategy, "strategy", ELQ_PARTITIONS)
    check_positive(lam, "lam")
    epochs = check_positive(epochs, "epochs", integer=True)
    check_positive(lr, "lr")
    gen = check_rng(rng)
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    X_eval, y_eval = (X, y) if X_val is None else (X_val, y_val)

    net = copy.deepcopy(model)
    net.train()
    layers = weight_layers(net)
    acc_float = nn.accuracy(model, X_eval, y_eval)
    grads = _full_gradients(net, layers, X, y)
    alphas = []
    for i, (m, g) in enumerate(zip(layers, grads)):
        if not np.any(m.weight.data):
            raise ValueError(f"weight layer {i} is all zero: no scale to fit")
        alphas.append(elq_quantize(m.weight.data, g, ternary=ternary, lam=lam)[1])

    def quantize(k, i, w, frozen, count):
        if k and i == 0:  # the gradients after the previous step's re-training, once per step
            grads[:] = _full_gradients(net, layers, X, y)
        return elq_step(w, grads[i], frozen=frozen, count=count, alpha=alphas[i], ternary=ternary, lam=lam,
                        strategy=strategy)

    steps = _partition_quantize_retrain(net, X, y, X_eval, y_eval, portions, quantize, epochs=epochs, lr=lr,
                                        momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                                        rng=gen)
    return ELQResult(net, steps, alphas, acc_float)
