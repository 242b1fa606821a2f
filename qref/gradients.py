r"""Quantized gradients for (simulated) data-parallel training.

In data-parallel SGD, :math:`N` workers each compute the gradient of the loss on their shard
of a minibatch, send it to a server (or to each other), and every replica applies the
average. For a large model the bottleneck is the message: 32 bits per parameter per worker
per step. The methods here shrink the message:

=====================  ===============================================  ======================================
function / class       message per tensor of :math:`n` entries           paper
=====================  ===============================================  ======================================
:func:`terngrad`       :math:`s\,\mathrm{sign}(g)\circ b`, 3 values      Wen et al. (2017), TernGrad
:func:`qsgd`           :math:`\|g\|_2\,\mathrm{sign}(g_i)\,\xi_i/s`       Alistarh et al. (2017), QSGD
:func:`one_bit`        1 bit + two reconstruction values                 Seide et al. (2014), 1-bit SGD
:class:`ErrorFeedback` any of the above, plus the residual of the last    Seide et al. (2014); Wu et al. (2018)
=====================  ===============================================  ======================================

:func:`terngrad` and :func:`qsgd` are *unbiased*, :math:`\mathbb E[Q(g)] = g`: they round
stochastically (:func:`qref.rounding.round_stochastic`), so the averaged update is right on
average and only its variance grows. :func:`one_bit` is biased (it forgets magnitudes), and
:class:`ErrorFeedback` repairs that by adding what was not sent to the next gradient.

:class:`GradientQuantizer` bundles a method with its options and counts the bits of a
message; :func:`fit_data_parallel` simulates the workers and the server on :mod:`qref.nn`.
Bits are counted *plain*: a fixed-width code per entry plus 32-bit floats for scales. QSGD's
Elias coding of the sparse levels (Alistarh et al., Sec. 3.2) and any other entropy coding are
out of scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._validation import (
    as_float_array,
    as_int_array,
    check_axis,
    check_bool,
    check_choice,
    check_positive,
    check_rng,
)
from .rounding import round_stochastic

__all__ = [
    "METHODS",
    "terngrad",
    "qsgd",
    "qsgd_variance",
    "qsgd_variance_bound",
    "one_bit",
    "GradientQuantizer",
    "ErrorFeedback",
    "DataParallelHistory",
    "fit_data_parallel",
]

METHODS = ("none", "terngrad", "qsgd", "one_bit")


def _work(g):
    """``g`` as float64 for the arithmetic, and the dtype to return (float32 for float16)."""
    out = np.float32 if g.dtype == np.float16 else g.dtype
    return g.astype(np.float64), out


# --------------------------------------------------------------------------------------
# TernGrad
# --------------------------------------------------------------------------------------


def terngrad(g, *, rng=None, clip=None):
    r"""TernGrad: stochastic ternarization of a gradient tensor to :math:`\{-s, 0, s\}`.

    .. math::

        \tilde g = s\cdot \mathrm{sign}(g)\circ b, \qquad s = \max_k |g_k|, \qquad
        b_k \sim \mathrm{Bernoulli}\big(|g_k| / s\big)

    (Wen et al. 2017, Eqs. (4)-(5); one scaler :math:`s` per tensor, i.e. per layer). It is
    unbiased, :math:`\mathbb E[\tilde g] = g`, with variance
    :math:`\sum_k |g_k|\,(s - |g_k|)`. With ``clip=c`` the gradient is first clipped
    element-wise to :math:`[-c\sigma, c\sigma]`, :math:`\sigma` the standard deviation of the
    tensor's entries (the paper's gradient clipping, Sec. 3.3, with :math:`c = 2.5`): a few
    outliers no longer set :math:`s`, so fewer entries round to zero; the result is unbiased for
    the *clipped* gradient. A tensor with :math:`\sigma = 0` (one entry, or all entries equal)
    has no outlier and is not clipped.

    Parameters
    ----------
    g : array_like of float, any shape
        A gradient tensor (not modified).
    rng : None, int or numpy.random.Generator
        Draws :math:`b`.
    clip : None or float > 0
        :math:`c` of the gradient clipping; None (default) does not clip.

    Returns
    -------
    ndarray, shape and dtype of ``g`` (float16 in -> float32 out)
        Entries in :math:`\{-s, 0, s\}`; all zeros if ``g`` is all zero.

    Raises
    ------
    TypeError, ValueError
        For non-float or non-finite ``g``, or ``clip`` not a positive number.

    References
    ----------
    Wen, Xu, Yan, Wu, Wang, Chen, Li (2017), "TernGrad: Ternary gradients to reduce
    communication in distributed deep learning", NeurIPS, Sec. 3.1 and 3.3.

    Examples
    --------
    >>> g = np.array([0.5, -1.0, 0.0, 0.25], dtype=np.float32)
    >>> q = terngrad(g, rng=0)
    >>> q.dtype, set(np.abs(q).tolist()) <= {0.0, 1.0}, q[1]      # the largest entry is kept
    (dtype('float32'), True, np.float32(-1.0))
    """
    g = as_float_array(g, "g")
    if clip is not None:
        clip = check_positive(clip, "clip")
    rng = check_rng(rng)
    x, out = _work(g)
    if clip is not None and x.size:
        bound = clip * x.std()
        if bound > 0:  # sigma = 0: all entries equal, no outlier to clip (clipping at 0 would erase g)
            x = np.clip(x, -bound, bound)
    s = float(np.abs(x).max(initial=0.0))
    if s == 0.0:
        return np.zeros(g.shape, dtype=out)
    b = round_stochastic(np.abs(x) / s, rng=rng)        # Bernoulli(|g_k| / s): |g_k| / s is in [0, 1]
    return (s * np.sign(x) * b).astype(out)


# --------------------------------------------------------------------------------------
# QSGD
# --------------------------------------------------------------------------------------


def _buckets(x, bucket_size):
    """Flatten ``x`` and cut it into rows of ``bucket_size`` (the last zero-padded)."""
    flat = x.reshape(-1)
    d = flat.size if bucket_size is None else min(bucket_size, max(flat.size, 1))
    nb = -(-flat.size // d) if flat.size else 0
    rows = np.zeros((nb, d))
    rows.reshape(-1)[:flat.size] = flat
    return rows


def qsgd(g, *, levels, rng=None, bucket_size=None):
    r"""QSGD: stochastic quantization of :math:`|g_i| / \|g\|_2` to ``levels`` uniform levels.

    .. math::

        Q_s(g_i) = \|g\|_2\cdot \mathrm{sign}(g_i)\cdot \xi_i(g, s), \qquad
        \xi_i = \begin{cases} (l + 1)/s & \text{with probability } s|g_i|/\|g\|_2 - l,\\
                              l/s & \text{otherwise,}\end{cases}

    with :math:`l = \lfloor s|g_i|/\|g\|_2 \rfloor` (Alistarh et al. 2017, Sec. 3.1): each
    entry is stochastically rounded on the grid :math:`\{0, 1/s, \dots, 1\}` of the normalized
    magnitude. It is unbiased, and (their Lemma 3.1)

    .. math::

        \mathbb E\,\|Q_s(g) - g\|_2^2 \le \min\Big(\frac{n}{s^2}, \frac{\sqrt n}{s}\Big)\|g\|_2^2 ;

    the exact value is :func:`qsgd_variance`. With ``bucket_size=d`` the flattened tensor is
    cut into buckets of :math:`d` consecutive entries, each with its own norm (the paper's
    bucketing, Sec. 3.1; the bound then holds per bucket with :math:`n = d`).

    Parameters
    ----------
    g : array_like of float, any shape
        A gradient tensor (not modified).
    levels : int >= 1
        :math:`s`, the number of non-zero levels of the magnitude.
    rng : None, int or numpy.random.Generator
    bucket_size : None or int >= 1
        None: one norm for the whole tensor.

    Returns
    -------
    ndarray, shape and dtype of ``g`` (float16 in -> float32 out)

    Raises
    ------
    TypeError, ValueError
        For non-float or non-finite ``g``, or ``levels`` / ``bucket_size`` not positive integers.

    References
    ----------
    Alistarh, Grubic, Li, Tomioka, Vojnovic (2017), "QSGD: Communication-efficient SGD via
    gradient quantization and encoding", NeurIPS, Sec. 3.1 and Lemma 3.1.

    Examples
    --------
    >>> g = np.array([3.0, -4.0])                  # norm 5
    >>> qsgd(g, levels=5, rng=0)                    # 3/5 and 4/5 are on the grid: exact
    array([ 3., -4.])
    >>> set(np.abs(qsgd(g, levels=1, rng=1)).tolist()) <= {0.0, 5.0}
    True
    """
    g = as_float_array(g, "g")
    s = check_positive(levels, "levels", integer=True)
    if bucket_size is not None:
        bucket_size = check_positive(bucket_size, "bucket_size", integer=True)
    rng = check_rng(rng)
    x, out = _work(g)
    rows = _buckets(x, bucket_size)                             # [bucket][entry]
    norm = np.sqrt((rows * rows).sum(axis=1, keepdims=True))    # [bucket][1]
    safe = np.where(norm > 0, norm, 1.0)
    xi = round_stochastic(s * np.abs(rows) / safe, rng=rng) / s  # l/s or (l+1)/s, unbiased
    q = (norm * np.sign(rows) * xi).reshape(-1)[:x.size]
    return q.reshape(g.shape).astype(out)


def qsgd_variance(g, *, levels, bucket_size=None):
    r"""The exact variance :math:`\mathbb E\|Q_s(g) - g\|_2^2` of :func:`qsgd`.

    .. math::

        \mathbb E\|Q_s(g) - g\|_2^2 = \frac{\|g\|_2^2}{s^2}\sum_i f_i (1 - f_i), \qquad
        f_i = \frac{s|g_i|}{\|g\|_2} - \Big\lfloor \frac{s|g_i|}{\|g\|_2} \Big\rfloor,

    the variance :math:`f(1-f)` of a stochastic rounding, scaled by :math:`(\|g\|_2/s)^2` and
    summed (per bucket with ``bucket_size``). Alistarh et al. (2017), proof of Lemma 3.1.

    Parameters
    ----------
    g : array_like of float, any shape
    levels : int >= 1
    bucket_size : None or int >= 1

    Returns
    -------
    float

    Examples
    --------
    >>> qsgd_variance([1.0, 1.0, 1.0, 1.0], levels=1)      # s|g_i|/||g|| = 1/2: f(1-f) = 1/4 each
    4.0
    """
    g = as_float_array(g, "g")
    s = check_positive(levels, "levels", integer=True)
    if bucket_size is not None:
        bucket_size = check_positive(bucket_size, "bucket_size", integer=True)
    rows = _buckets(g.astype(np.float64), bucket_size)
    sq = (rows * rows).sum(axis=1)
    norm = np.sqrt(sq)
    safe = np.where(norm > 0, norm, 1.0)
    r = s * np.abs(rows) / safe[:, None]
    f = r - np.floor(r)
    return float((sq / s**2 * (f * (1 - f)).sum(axis=1)).sum())


def qsgd_variance_bound(n, *, levels):
    r"""Lemma 3.1 of QSGD: :math:`\min(n/s^2, \sqrt n / s)`, the bound on the relative variance.

    :math:`\mathbb E\|Q_s(g) - g\|_2^2 \le \min(n/s^2, \sqrt n/s)\,\|g\|_2^2` for every
    :math:`g \in \mathbb R^n` (Alistarh et al. 2017, Lemma 3.1 (ii)).

    Parameters
    ----------
    n : int >= 1
        Number of entries (the bucket size with bucketing).
    levels : int >= 1
        :math:`s`.

    Returns
    -------
    float

    Examples
    --------
    >>> qsgd_variance_bound(512, levels=1)          # one level: sqrt(512) ~ 22.6 times ||g||^2
    22.627416997969522
    >>> qsgd_variance_bound(512, levels=32)         # n / s^2 = 0.5
    0.5
    """
    n = check_positive(n, "n", integer=True)
    s = check_positive(levels, "levels", integer=True)
    return float(min(n / s**2, math.sqrt(n) / s))


# --------------------------------------------------------------------------------------
# 1-bit SGD
# --------------------------------------------------------------------------------------


def one_bit(g, *, axis=None, rng=None):
    r"""1-bit quantization: the sign of each entry, reconstructed as the mean of its side.

    .. math::

        Q(g_i) = \begin{cases} \mu_+ = \operatorname{mean}\{g_j : g_j \ge 0\} & g_i \ge 0,\\
                               \mu_- = \operatorname{mean}\{g_j : g_j < 0\} & g_i < 0,\end{cases}

    the quantizer of Seide et al. (2014, Sec. 2): threshold 0, and the two reconstruction
    values that minimize the squared error for that threshold (per matrix column in the paper:
    pass the axis to reduce over). Deterministic and biased; meant to be used with
    :class:`ErrorFeedback`, as in the paper.

    Parameters
    ----------
    g : array_like of float, any shape
        A gradient tensor (not modified).
    axis : None or int
        None: one pair :math:`\mu_\pm` for the whole tensor; an int: one pair per slice along
        the other axes, e.g. ``axis=0`` of an ``(out, in)`` weight gradient gives one pair per
        column (input unit).
    rng : ignored
        Accepted so that every quantizer of this module can be called the same way.

    Returns
    -------
    ndarray, shape and dtype of ``g`` (float16 in -> float32 out)

    References
    ----------
    Seide, Fu, Droppo, Li, Yu (2014), "1-bit stochastic gradient descent and its application
    to data-parallel distributed training of speech DNNs", Interspeech, Sec. 2.

    Examples
    --------
    >>> one_bit(np.array([3.0, 1.0, -2.0, 0.0]))      # mu+ = (3 + 1 + 0)/3, mu- = -2
    array([ 1.33333333,  1.33333333, -2.        ,  1.33333333])
    """
    g = as_float_array(g, "g")
    if axis is not None:
        axis = check_axis(axis, g.ndim)
    x, out = _work(g)
    if x.size == 0:
        return x.astype(out)
    pos = x >= 0
    keep = axis is not None
    n_pos = pos.sum(axis=axis, keepdims=keep)
    n_neg = (~pos).sum(axis=axis, keepdims=keep)
    mu_pos = np.where(pos, x, 0).sum(axis=axis, keepdims=keep) / np.maximum(n_pos, 1)
    mu_neg = np.where(pos, 0, x).sum(axis=axis, keepdims=keep) / np.maximum(n_neg, 1)
    return np.where(pos, mu_pos, mu_neg).astype(out)


# --------------------------------------------------------------------------------------
# A quantizer with its bit count, and error feedback
# --------------------------------------------------------------------------------------


class GradientQuantizer:
    r"""A gradient quantizer of this module with its options, and the bits of its messages.

    Calling it quantizes one tensor, ``q(g, rng=rng)``; :meth:`bits` counts the plain bits of
    the message for a tensor of a given shape:

    ==============  =====================================================================
    method          bits for :math:`n` entries (plain, fixed width; 32-bit floats)
    ==============  =====================================================================
    ``"none"``      :math:`32n`
    ``"terngrad"``  :math:`2n + 32` (3 codes in 2 bits, one scaler :math:`s`)
    ``"qsgd"``      :math:`n\,(1 + \lceil\log_2(s+1)\rceil) + 32 \cdot \#\text{buckets}`
    ``"one_bit"``   :math:`n + 64 \cdot \#\text{groups}` (two floats :math:`\mu_\pm` each)
    ==============  =====================================================================

    With ``packed=True`` the code part is the information content of a fixed alphabet,
    :math:`n \log_2(\#\text{codes})` (e.g. :math:`\log_2 3 \approx 1.585` bits per entry for
    TernGrad), as if several codes were packed into one word. Entropy coding (QSGD's Elias
    code) is not modelled.

    Parameters
    ----------
    method : {"none", "terngrad", "qsgd", "one_bit"}
    **options
        Keyword options of the function: ``clip`` (terngrad), ``levels`` and ``bucket_size``
        (qsgd), ``axis`` (one_bit; a tensor without that axis, e.g. a bias for ``axis=1``, gets
        one pair for the whole tensor).

    Examples
    --------
    >>> q = GradientQuantizer("qsgd", levels=4)
    >>> q
    GradientQuantizer('qsgd', levels=4)
    >>> q.bits((64, 10))                       # 640 * (1 sign + 3 level bits) + one norm
    2592
    >>> GradientQuantizer("terngrad").bits((64, 10)), GradientQuantizer("none").bits((64, 10))
    (1312, 20480)
    """

    _OPTIONS = {"none": (), "terngrad": ("clip",), "qsgd": ("levels", "bucket_size"), "one_bit": ("axis",)}

    def __init__(self, method, **options):
        self.method = check_choice(method, "method", METHODS)
        allowed = self._OPTIONS[method]
        for key in options:
            if key not in allowed:
                raise TypeError(f"{method!r} takes the options {allowed}, got {key!r}")
        if method == "qsgd" and "levels" not in options:
            raise TypeError("'qsgd' needs the option levels (an int >= 1)")
        if "clip" in options and options["clip"] is not None:
            check_positive(options["clip"], "clip")
        if "levels" in options:
            check_positive(options["levels"], "levels", integer=True)
        if options.get("bucket_size") is not None:
            check_positive(options["bucket_size"], "bucket_size", integer=True)
        if options.get("axis") is not None:
            check_axis(options["axis"], 32)          # an int; checked against the tensor when called
        self.options = dict(options)

    def __repr__(self):
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"GradientQuantizer({self.method!r}{opts})"

    def __call__(self, g, *, rng=None):
        """Quantize one gradient tensor (not modified); same shape and dtype."""
        if self.method == "none":
            x = as_float_array(g, "g")
            return x.copy()
        fn = {"terngrad": terngrad, "qsgd": qsgd, "one_bit": one_bit}[self.method]
        options = self.options
        if self.method == "one_bit" and options.get("axis") is not None:
            options = dict(options, axis=self._axis_for(np.ndim(g)))
        return fn(g, rng=rng, **options)

    def _axis_for(self, ndim):
        """one_bit's axis for a tensor of ``ndim`` dimensions: None (one pair) if it has no such axis."""
        axis = self.options["axis"]
        return axis if -ndim <= axis < ndim else None

    def _codes_and_floats(self, shape):
        n = math.prod(shape)
        if self.method == "none":
            return n, None, 0
        if self.method == "terngrad":
            return n, 3, 1
        if self.method == "qsgd":
            s = self.options["levels"]
            d = self.options.get("bucket_size")
            nb = 1 if d is None else -(-n // d)
            return n, 2 * s + 1, nb
        axis = None if self.options.get("axis") is None else self._axis_for(len(shape))
        groups = 1 if axis is None else n // shape[axis] if shape[axis] else 0
        return n, 2, 2 * groups

    def bits(self, shape, *, packed=False):
        """Bits of one message for a tensor of ``shape`` (see the class docstring); an int
        (a float with ``packed=True``)."""
        shape = tuple(int(v) for v in np.atleast_1d(as_int_array(shape, "shape")))
        if any(v < 0 for v in shape):
            raise ValueError(f"shape must hold non-negative sizes, got {shape}")
        packed = check_bool(packed, "packed")
        n, codes, floats = self._codes_and_floats(shape)
        if codes is None:
            return 32 * n
        if self.method == "qsgd" and not packed:
            code_bits = n * (1 + math.ceil(math.log2(self.options["levels"] + 1)))
        elif packed:
            code_bits = n * math.log2(codes)
        else:
            code_bits = n * math.ceil(math.log2(codes))
        return code_bits + 32 * floats


class ErrorFeedback:
    r"""Error feedback: quantize the gradient plus the residual of the previous messages.

    .. math::

        p_t = g_t + e_t, \qquad \Delta_t = Q(p_t), \qquad e_{t+1} = p_t - \Delta_t,
        \qquad e_0 = 0,

    the *error feedback* of 1-bit SGD (Seide et al. 2014, Sec. 2: the quantization error of
    each minibatch is added to the next minibatch's gradient before quantizing) and, with unit
    coefficients, of error-compensated quantized SGD (Wu et al. 2018, Sec. 3, which weighs the
    accumulated error with tunable coefficients). Summing the rule telescopes:
    :math:`\sum_{t<T} \Delta_t = \sum_{t<T} g_t - e_T`, so the updates that were sent track the
    true gradients up to the one residual :math:`e_T`, which stays bounded when :math:`Q`
    contracts, :math:`\|Q(p) - p\| \le \delta \|p\|` with :math:`\delta < 1`
    (:func:`one_bit` does; :func:`qsgd` does in expectation when :math:`n < s^2`). Nothing is
    lost, only delayed: even a biased quantizer gives the right sum.

    One instance holds the residual of one tensor on one worker: make one per worker and per
    parameter (as :func:`fit_data_parallel` does).

    Parameters
    ----------
    quantizer : GradientQuantizer or callable ``(g, *, rng) -> ndarray``

    Attributes
    ----------
    error : None or ndarray of float64
        :math:`e_t` (None before the first call).

    References
    ----------
    Seide, Fu, Droppo, Li, Yu (2014), Interspeech, Sec. 2. Wu, Huang, Huang, Zhang (2018),
    "Error compensated quantized SGD and its applications to large-scale distributed
    optimization", ICML, Sec. 3.

    Examples
    --------
    >>> ef = ErrorFeedback(GradientQuantizer("one_bit"))
    >>> g = np.array([0.3, -0.1, 0.2, -0.4])
    >>> sent = sum(ef(g, rng=0) for _ in range(100))
    >>> np.allclose(sent, 100 * g - ef.error), bool(np.abs(ef.error).max() < 1)
    (True, True)
    """

    def __init__(self, quantizer):
        if not callable(quantizer):
            raise TypeError(f"quantizer must be callable (g, *, rng), got {type(quantizer).__name__}")
        self.quantizer = quantizer
        self.error = None

    def __repr__(self):
        return f"ErrorFeedback({self.quantizer!r})"

    def reset(self):
        """Forget the residual."""
        self.error = None

    def bits(self, shape, *, packed=False):
        """Bits of one message: those of the wrapped quantizer (the residual stays local)."""
        return self.quantizer.bits(shape, packed=packed)

    def __call__(self, g, *, rng=None):
        """Return :math:`\\Delta_t = Q(g_t + e_t)` and store :math:`e_{t+1}`; ``g`` is not modified."""
        g = as_float_array(g, "g")
        if self.error is not None and self.error.shape != g.shape:
            raise ValueError(f"g must have the shape {self.error.shape} of the previous gradients, got {g.shape}")
        p = g.astype(np.float64) if self.error is None else g + self.error
        sent = np.asarray(self.quantizer(p, rng=rng))
        self.error = p - sent
        out = np.float32 if g.dtype == np.float16 else g.dtype
        return sent.astype(out)


# --------------------------------------------------------------------------------------
# Simulated data-parallel training
# --------------------------------------------------------------------------------------


@dataclass
class DataParallelHistory:
    """What :func:`fit_data_parallel` records, one entry per epoch (like :class:`qref.nn.History`).

    Attributes
    ----------
    loss, train_acc, val_acc, seconds : list of float
        As in :class:`qref.nn.History`.
    bits : list of int
        Bits uploaded by all workers together, cumulated up to the end of each epoch.
    bits_per_step : int
        Bits uploaded by all workers in one full step (every worker with a non-empty shard).
    fp32_bits_per_step : int
        The same for 32-bit gradients, for the compression ratio.
    diverged : bool
        True if an averaged gradient was not finite; training stopped there (the last
        ``loss`` entry is NaN, and the model holds the parameters of the last finite step).
    """

    loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    bits: list = field(default_factory=list)
    bits_per_step: int = 0
    fp32_bits_per_step: int = 0
    diverged: bool = False


def fit_data_parallel(model, X, y, *, workers, epochs, optimizer, quantizer=None, error_feedback=False,
                      batch_size=64, rng=0, X_val=None, y_val=None, loss=None, packed=False):
    r"""Train ``model`` by simulated data-parallel SGD with quantized gradients.

    The training loop is :func:`qref.nn.fit`'s (the same shuffling with the same ``rng``, the
    same History entries), with its ``gradient`` hook replaced: each step takes the next
    minibatch and splits it into ``workers`` shards (:func:`numpy.array_split`). Worker
    :math:`k` computes the gradient :math:`g_k` of the mean loss on its shard and sends
    :math:`Q(g_k)` (or :math:`\Delta_k` of its own :class:`ErrorFeedback` per parameter);
    the server averages, weighting by shard size,

    .. math::

        g = \sum_k \frac{n_k}{n}\, Q(g_k)

    (with equal shards, the plain mean of TernGrad's and QSGD's algorithms), writes :math:`g`
    into every Parameter's ``.grad`` and calls ``optimizer.step()``. Every parameter tensor is
    quantized on its own (one TernGrad scaler, one QSGD norm per tensor). Without a quantizer,
    :math:`g` is the minibatch gradient, so the result equals :func:`qref.nn.fit` (to float
    rounding; bit for bit with one worker).

    Parameters
    ----------
    model : qref.nn.Module
        Trained in place (one replica stands for all: the replicas stay identical).
    X : ndarray of float, shape (n, ...)
    y : ndarray of int, shape (n,)
    workers : int >= 1
    epochs : int >= 1
    optimizer : qref.nn.SGD, qref.nn.Adam or any object with ``step()``
        Built on ``model.parameters()``.
    quantizer : None, str, GradientQuantizer or callable ``(g, *, rng)``
        None or ``"none"``: full precision. A string is a method of :class:`GradientQuantizer`
        without options.
    error_feedback : bool
        Wrap the quantizer in an :class:`ErrorFeedback` per worker and parameter.
    batch_size : int >= 1
        The global minibatch (all workers together).
    rng : None, int or numpy.random.Generator
        Shuffles the minibatches (as in :func:`qref.nn.fit`); an independent stream spawned from
        it draws the quantizers' randomness.
    X_val, y_val : optional validation set, evaluated after each epoch.
    loss : None or loss object (default :class:`qref.nn.SoftmaxCrossEntropy`)
    packed : bool
        Count bits with :meth:`GradientQuantizer.bits` ``packed=True``.

    Returns
    -------
    DataParallelHistory

    Raises
    ------
    TypeError, ValueError
        For a model that is not a Module, bad data, or ``workers`` / ``epochs`` /
        ``batch_size`` below 1.

    References
    ----------
    Wen et al. (2017), Algorithm 1; Alistarh et al. (2017), Algorithm 1; Seide et al. (2014).

    Examples
    --------
    >>> from qref import nn
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(256, 2)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = nn.Sequential(nn.Linear(2, 2, rng=0))
    >>> h = fit_data_parallel(net, X, y, workers=4, quantizer="terngrad", epochs=5,
    ...                       optimizer=nn.SGD(net.parameters(), lr=0.5))
    >>> nn.accuracy(net, X, y) > 0.95, h.bits_per_step, h.fp32_bits_per_step   # 4 x (2*6 + 2*32) vs 4 x 6*32
    (True, 304, 768)
    """
    from . import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    X, y = nn._check_xy(X, y, "X", "y")
    workers = check_positive(workers, "workers", integer=True)
    epochs = check_positive(epochs, "epochs", integer=True)
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    if not hasattr(optimizer, "step"):
        raise TypeError(f"optimizer must have step(), got {type(optimizer).__name__}")
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    if X_val is not None:
        X_val, y_val = nn._check_xy(X_val, y_val, "X_val", "y_val")
    error_feedback = check_bool(error_feedback, "error_feedback")
    packed = check_bool(packed, "packed")
    if quantizer is None or isinstance(quantizer, str):
        quantizer = GradientQuantizer("none" if quantizer is None else quantizer)
    elif not callable(quantizer):
        raise TypeError(f"quantizer must be None, a method name or a callable (g, *, rng), got {type(quantizer).__name__}")
    if not hasattr(quantizer, "bits"):
        raise TypeError("quantizer must have a bits(shape) method to count the message (use GradientQuantizer)")
    rng = check_rng(rng)
    noise_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])   # leaves rng's stream alone
    params = model.parameters()
    send = [[ErrorFeedback(quantizer) if error_feedback else quantizer for _ in params] for _ in range(workers)]
    per_worker = sum(int(quantizer.bits(p.data.shape, packed=packed)) for p in params)
    history = DataParallelHistory(bits_per_step=per_worker * workers,
                                  fp32_bits_per_step=workers * 32 * sum(p.data.size for p in params))
    total_bits = 0

    def gradient(model, xb, yb, loss_fn):
        """nn.fit's per-minibatch hook: each worker backpropagates its shard, the server averages Q(g_k)."""
        nonlocal total_bits
        avg = [np.zeros(p.data.shape) for p in params]
        batch_loss = batch_correct = 0.0
        for k, shard in enumerate(np.array_split(np.arange(len(yb)), workers)):
            if len(shard) == 0:
                continue
            shard_loss, shard_correct = nn.backprop(model, xb[shard], yb[shard], loss_fn)
            batch_loss += shard_loss
            batch_correct += shard_correct
            if not all(np.isfinite(p.grad).all() for p in params):
                history.diverged = True
                raise nn.StopTraining            # nn.fit skips the step, records loss NaN and returns
            w = len(shard) / len(yb)
            for j, p in enumerate(params):
                avg[j] += w * send[k][j](p.grad, rng=noise_rng)
            total_bits += per_worker
        if not all(np.isfinite(g).all() for g in avg):
            history.diverged = True
            raise nn.StopTraining
        for p, g in zip(params, avg):
            p.grad[...] = g
        return batch_loss, batch_correct

    def record_bits(epoch, model, fit_history):
        history.bits.append(total_bits)

    with np.errstate(over="ignore", invalid="ignore"):
        fitted = nn.fit(model, X, y, epochs=epochs, optimizer=optimizer, batch_size=batch_size, rng=rng,
                        X_val=X_val, y_val=y_val, progress=False, callback=record_bits, loss=loss, gradient=gradient)
    for name in ("loss", "train_acc", "val_acc", "seconds"):
        setattr(history, name, getattr(fitted, name))
    return history
