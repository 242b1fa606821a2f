r"""Binary and ternary weights: sign, BinaryConnect, BWN/XNOR-Net, ABC-Net, TWN, TTQ, FGQ.

**Sign at zero.** Every binarizer here uses :math:`\mathrm{sign}(0) = +1`:

.. math::

    \mathrm{sign}(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}

(BinaryConnect's Eq. 1 draws the line at :math:`w \ge 0` the same way). ``np.sign`` would
return 0 there, which is not a binary value; ``-0.0`` counts as 0 and gives :math:`+1`.

**Codes and scales.** The scaled methods return integer *codes* (``int8`` in {-1, +1} or
{-1, 0, +1}) and *scales* shaped so that ``scale * codes`` (or, for TTQ, the two scales
applied to the two signs) broadcasts back to the weight's shape. Scales have the weight's
dtype; statistics are computed in float64. Inputs are never modified.

References
----------
Courbariaux, M., Bengio, Y., David, J.-P. (2015). BinaryConnect: Training Deep Neural
Networks with binary weights during propagations. NeurIPS 2015. arXiv:1511.00363.

Rastegari, M., Ordonez, V., Redmon, J., Farhadi, A. (2016). XNOR-Net: ImageNet
Classification Using Binary Convolutional Neural Networks. ECCV 2016. arXiv:1603.05279.

Lin, X., Zhao, C., Pan, W. (2017). Towards Accurate Binary Convolutional Neural Network.
NeurIPS 2017 (ABC-Net). arXiv:1711.11294.

Li, F., Zhang, B., Liu, B. (2016). Ternary Weight Networks. arXiv:1605.04711.

Zhu, C., Han, S., Mao, H., Dally, W. J. (2017). Trained Ternary Quantization. ICLR 2017.
arXiv:1612.01064.

Mellempudi, N., Kundu, A., Mudigere, D., Das, D., Kaul, B., Dubey, P. (2017). Ternary Neural
Networks with Fine-Grained Quantization. arXiv:1705.01462.
"""

from __future__ import annotations

import numpy as np

from . import bitops
from ._validation import as_float_array, check_axis, check_choice, check_int, check_positive, check_real, check_rng

__all__ = [
    "sign",
    "hard_sigmoid",
    "binarize",
    "binarize_stochastic",
    "binarize_bwn",
    "xnor_scale_matmul",
    "xnor_scale_conv2d",
    "xnor_matmul",
    "abc_shifts",
    "binarize_abc",
    "twn_threshold_exact",
    "ternarize_twn",
    "ternarize_ttq",
    "ternarize_fgq",
]

TWN_APPROX = 0.7  #: the constant of TWN's rule of thumb, threshold = 0.7 * mean|w|


def sign(x):
    """``+1`` where ``x >= 0``, ``-1`` elsewhere, as ``int8`` (the codes of a binarizer).

    Examples
    --------
    >>> sign(np.array([-2.0, -0.0, 0.0, 0.3]))
    array([-1,  1,  1,  1], dtype=int8)
    """
    x = as_float_array(x, "x")
    return np.where(x >= 0, np.int8(1), np.int8(-1))


def binarize(x):
    r"""Deterministic binarization :math:`x \mapsto \mathrm{sign}(x) \in \{-1, +1\}`, in ``x``'s dtype.

    BinaryConnect's deterministic rule (Courbariaux et al. 2015, Sec. 2.3, Eq. 1), with
    :math:`\mathrm{sign}(0) = +1`.

    Parameters
    ----------
    x : array_like of float, any shape

    Returns
    -------
    numpy.ndarray, same shape and dtype as ``x``, values in {-1, +1}

    Examples
    --------
    >>> binarize(np.array([-0.5, 0.0, 2.0], dtype=np.float32))
    array([-1.,  1.,  1.], dtype=float32)
    """
    x = as_float_array(x, "x")
    return sign(x).astype(x.dtype)


def hard_sigmoid(x):
    r"""The hard sigmoid :math:`\sigma(x) = \mathrm{clip}\big(\tfrac{x+1}{2}, 0, 1\big)`.

    Courbariaux et al. 2015, Sec. 2.3, Eq. 3. Same shape and dtype as ``x``.

    Examples
    --------
    >>> hard_sigmoid(np.array([-2.0, -1.0, 0.0, 0.5, 3.0]))
    array([0.  , 0.  , 0.5 , 0.75, 1.  ])
    """
    x = as_float_array(x, "x")
    return np.clip((x + 1) / 2, 0, 1).astype(x.dtype)


def binarize_stochastic(x, *, rng=None):
    r"""Stochastic binarization: :math:`+1` with probability :math:`\sigma(x)`, else :math:`-1`.

    .. math::

        x_b = \begin{cases} +1 & \text{with probability } p = \sigma(x) \\
                            -1 & \text{with probability } 1 - p \end{cases},
        \qquad \sigma(x) = \mathrm{clip}\big(\tfrac{x+1}{2}, 0, 1\big)

    (Courbariaux et al. 2015, Sec. 2.3, Eqs. 2–3). Unbiased on :math:`[-1, 1]`:
    :math:`\mathbb{E}[x_b] = 2\sigma(x) - 1 = x` there. Implemented as ``+1`` where
    :math:`u < \sigma(x)` for :math:`u \sim U[0, 1)` drawn from ``rng``, so :math:`x \le -1`
    always gives :math:`-1` and :math:`x \ge 1` always :math:`+1`.

    Parameters
    ----------
    x : array_like of float
    rng : None, int or numpy.random.Generator

    Returns
    -------
    numpy.ndarray, same shape and dtype as ``x``, values in {-1, +1}

    Examples
    --------
    >>> binarize_stochastic(np.array([-3.0, 3.0]), rng=0)
    array([-1.,  1.])
    >>> float(binarize_stochastic(np.full(100_000, 0.5), rng=0).mean().round(2))
    0.5
    """
    x = as_float_array(x, "x")
    gen = check_rng(rng)
    u = gen.random(x.shape)
    return np.where(u < np.clip((x.astype(np.float64) + 1) / 2, 0, 1), 1, -1).astype(x.dtype)


def _channel_reduce(w, axis, name="w"):
    """``w`` (float64) reshaped to ``(C, rest)`` along ``axis`` (or ``(1, size)`` for None) and the keepdims shape."""
    if axis is None:
        return w.reshape(1, -1).astype(np.float64), (1,) * w.ndim
    ax = check_axis(axis, w.ndim)
    keep = tuple(s if i == ax else 1 for i, s in enumerate(w.shape))
    return np.moveaxis(w, ax, 0).reshape(w.shape[ax], -1).astype(np.float64), keep


def binarize_bwn(w, *, axis=0):
    r"""Binary-Weight-Network binarization :math:`W \approx \alpha B` (XNOR-Net's BWN).

    The scale and signs that minimise :math:`\lVert W - \alpha B\rVert_2^2` over
    :math:`\alpha > 0` and :math:`B \in \{-1,+1\}^n` are

    .. math::

        B^* = \mathrm{sign}(W), \qquad \alpha^* = \frac{W^\top B^*}{n} = \frac{1}{n}\lVert W\rVert_{\ell_1}
        = \mathrm{mean}\,|W|

    (Rastegari et al. 2016, Sec. 3.1), one :math:`\alpha` per output channel (each filter
    has its own). For fixed :math:`B` the error is a parabola in :math:`\alpha` with its minimum
    at :math:`W^\top B / n`; :math:`B = \mathrm{sign}(W)` maximises :math:`W^\top B`.

    Parameters
    ----------
    w : array_like of float, non-empty, shape (C, ...)
    axis : int or None
        The output-channel axis (0 for ``(out, in)`` matrices and ``(out, in, kh, kw)``
        filters); ``None`` gives one scale for the whole tensor.

    Returns
    -------
    b : numpy.ndarray of int8, shape of ``w``, values in {-1, +1}
    alpha : numpy.ndarray, dtype of ``w``, shape of ``w`` with every axis but ``axis`` of length 1
        (so ``alpha * b`` is the binarized weight)

    Examples
    --------
    >>> w = np.array([[0.5, -1.5, 1.0], [-0.2, 0.2, 0.0]])
    >>> b, alpha = binarize_bwn(w)
    >>> b
    array([[ 1, -1,  1],
           [-1,  1,  1]], dtype=int8)
    >>> alpha.ravel().round(4)
    array([1.    , 0.1333])
    """
    w = as_float_array(w, "w", allow_empty=False)
    flat, keep = _channel_reduce(w, axis)
    alpha = np.abs(flat).mean(axis=1).reshape(keep).astype(w.dtype)
    return sign(w), alpha


def xnor_scale_matmul(x):
    r"""XNOR-Net's input scale for a matrix product: :math:`K_i = \mathrm{mean}_k |X_{ik}|`.

    When the input is binarized too, :math:`X W^\top \approx (\mathrm{sign}(X)\,
    \mathrm{sign}(W)^\top) \odot K \alpha^\top` with :math:`K` one scale per row of :math:`X`
    (the fully connected case of Rastegari et al. 2016, Sec. 3.2, where :math:`\beta = \lVert
    X_i\rVert_{\ell_1}/n`).

    Parameters
    ----------
    x : array_like of float, shape (M, n), n >= 1

    Returns
    -------
    numpy.ndarray, dtype of ``x``, shape (M, 1)

    Examples
    --------
    >>> xnor_scale_matmul(np.array([[1.0, -3.0], [0.5, 0.5]]))
    array([[2. ],
           [0.5]])
    """
    x = as_float_array(x, "x")
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x must be a 2-d array (M, n) with n >= 1, got shape {x.shape}")
    return np.abs(x.astype(np.float64)).mean(axis=1, keepdims=True).astype(x.dtype)


def xnor_scale_conv2d(x, kernel_shape):
    r"""XNOR-Net's input scale for a 2-d convolution: :math:`K = A * k`.

    :math:`A = \frac{1}{c}\sum_{\text{channels}} |I|` is the mean absolute input over the
    channels, and :math:`k` the :math:`h \times w` box filter with every entry :math:`1/(hw)`,
    so :math:`K` holds one scale per output position: the mean of :math:`|I|` over the
    receptive field of that position (Rastegari et al. 2016, Sec. 3.2). Stride 1, no
    padding ("valid" convolution).

    Parameters
    ----------
    x : array_like of float, shape (c, H, W) or (N, c, H, W)
    kernel_shape : (int, int)
        ``(h, w)``, at most ``(H, W)``.

    Returns
    -------
    numpy.ndarray, dtype of ``x``, shape (1, H-h+1, W-w+1) or (N, 1, H-h+1, W-w+1)
        (broadcasts against the convolution's output channels).

    Examples
    --------
    >>> x = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)   # 2 channels, 3x3
    >>> xnor_scale_conv2d(x, (2, 2))
    array([[[ 6.5,  7.5],
            [ 9.5, 10.5]]])
    """
    x = as_float_array(x, "x", allow_empty=False)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must have shape (c, H, W) or (N, c, H, W), got shape {x.shape}")
    try:
        kh, kw = kernel_shape
    except (TypeError, ValueError):
        raise TypeError(f"kernel_shape must be a pair (h, w) of positive ints, got {kernel_shape!r}") from None
    kh = check_positive(kh, "kernel_shape[0]", integer=True)
    kw = check_positive(kw, "kernel_shape[1]", integer=True)
    if kh > x.shape[-2] or kw > x.shape[-1]:
        raise ValueError(f"kernel_shape {(kh, kw)} must fit in the input's spatial shape {x.shape[-2:]}")
    a = np.abs(x.astype(np.float64)).mean(axis=-3, keepdims=True)  # A: (..., 1, H, W)
    win = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(-2, -1))
    return win.mean(axis=(-2, -1)).astype(x.dtype)


def xnor_matmul(x, w):
    r"""The XNOR-Net product :math:`X W^\top \approx (\mathrm{sign}(X)\,\mathrm{sign}(W)^\top) \odot K\alpha^\top`.

    Both operands binarized, the ±1 product done with XNOR and popcount
    (:func:`qref.bitops.binary_matmul`), then scaled by the per-row input scale :math:`K`
    (:func:`xnor_scale_matmul`) and the per-output-channel weight scale :math:`\alpha`
    (:func:`binarize_bwn`) (Rastegari et al. 2016, Sec. 3.2).

    Parameters
    ----------
    x : array_like of float, shape (M, n)
    w : array_like of float, shape (N, n)  (a ``(out, in)`` weight matrix)

    Returns
    -------
    numpy.ndarray of float64, shape (M, N)

    Examples
    --------
    >>> x = np.array([[1.0, -2.0, 3.0]])
    >>> w = np.array([[0.5, 0.5, -0.5], [1.0, -1.0, 1.0]])
    >>> xnor_matmul(x, w)
    array([[-1.,  6.]])
    """
    x = as_float_array(x, "x")
    w = as_float_array(w, "w")
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or x.shape[1] == 0:
        raise ValueError(f"x (M, n) and w (N, n) must be 2-d with the same n >= 1, got shapes {x.shape} and {w.shape}")
    n = x.shape[1]
    _, alpha = binarize_bwn(w, axis=0)  # (N, 1)
    dots = bitops.binary_matmul(bitops.pack_bits(sign(x)), bitops.pack_bits(sign(w)), n)
    return dots * xnor_scale_matmul(x).astype(np.float64) * alpha.astype(np.float64).T


def abc_shifts(m):
    r"""ABC-Net's shifts :math:`u_i = -1 + (i-1)\frac{2}{M-1}`, :math:`i = 1..M` (0 for :math:`M = 1`).

    Spread evenly over :math:`[-1, 1]` standard deviations (Lin et al. 2017, Sec. 3.1).

    Examples
    --------
    >>> abc_shifts(1), abc_shifts(3)
    (array([0.]), array([-1.,  0.,  1.]))
    """
    m = check_positive(m, "m", integer=True)
    return np.zeros(1) if m == 1 else np.linspace(-1.0, 1.0, m)


def binarize_abc(w, *, m=3, shifts=None):
    r"""ABC-Net: :math:`W \approx \sum_{i=1}^{M} \alpha_i B_i` with shifted signs and least-squares scales.

    .. math::

        B_i = \mathrm{sign}\big(W - \mathrm{mean}(W) + u_i\,\mathrm{std}(W)\big), \qquad
        \alpha^* = \arg\min_\alpha \Big\lVert \mathrm{vec}(W) - \sum_i \alpha_i\,\mathrm{vec}(B_i) \Big\rVert_2^2

    (Lin et al. 2017, Sec. 3.1), the :math:`\alpha` found by linear least squares
    (``np.linalg.lstsq``, the minimum-norm solution when some :math:`B_i` coincide). One set of
    :math:`M` bases per tensor, as in the paper.

    The error is *not* guaranteed to fall with :math:`M` for the default shifts (the sets
    :func:`abc_shifts` for :math:`M` and :math:`M+1` are not nested); it is guaranteed never
    to rise when a shift is *added* to a given list, since the least-squares fit then runs
    over a larger span.

    Parameters
    ----------
    w : array_like of float, non-empty
    m : int >= 1
        Number of binary bases (ignored when ``shifts`` is given).
    shifts : array_like of float, shape (M,), optional
        The :math:`u_i`; default :func:`abc_shifts` ``(m)``.

    Returns
    -------
    bases : numpy.ndarray of int8, shape (M, *w.shape), values in {-1, +1}
    alphas : numpy.ndarray of float64, shape (M,)
        ``np.tensordot(alphas, bases, 1)`` is the approximation of ``w``.

    Examples
    --------
    >>> w = np.random.default_rng(0).normal(size=1000)
    >>> errs = [np.mean((w - np.tensordot(a, b, 1)) ** 2) for b, a in (binarize_abc(w, m=k) for k in (1, 3, 5))]
    >>> bool(errs[0] > errs[1] > errs[2])
    True
    """
    w = as_float_array(w, "w", allow_empty=False)
    if shifts is None:
        u = abc_shifts(m)
    else:
        u = as_float_array(shifts, "shifts", allow_empty=False)
        if u.ndim != 1:
            raise ValueError(f"shifts must be a 1-d array of shifts u_i, got shape {u.shape}")
        u = u.astype(np.float64)
    v = w.astype(np.float64).ravel()
    centred, std = v - v.mean(), v.std()
    bases = np.where(centred[None, :] + u[:, None] * std >= 0, np.int8(1), np.int8(-1))  # [i][k]: B_i, flattened
    alphas = np.linalg.lstsq(bases.T.astype(np.float64), v, rcond=None)[0]
    return bases.reshape((u.size,) + w.shape), alphas


def twn_threshold_exact(a):
    r"""Exact TWN threshold and scale for magnitudes ``a`` (1-d, float64): ``(delta, alpha)``.

    Keeping the :math:`k` largest magnitudes :math:`a_{(1)} \ge \dots \ge a_{(k)}` gives
    error :math:`\lVert W\rVert^2 - S_k^2/k` with :math:`S_k = \sum_{j\le k} a_{(j)}` and the best
    scale :math:`\alpha = S_k/k`; every achievable :math:`k` (where :math:`a_{(k)} > a_{(k+1)}`) is
    tried and the largest :math:`S_k^2/k` kept. ``delta`` is :math:`a_{(k+1)}` (0 for
    :math:`k = n`): the ternary code is nonzero exactly where :math:`|w| > \delta`. All-zero
    input gives ``(0.0, 0.0)``.

    Examples
    --------
    >>> twn_threshold_exact(np.array([3.0, 0.1, 1.0, 0.2]))
    (1.0, 3.0)
    """
    s = np.sort(np.asarray(a, dtype=np.float64))[::-1]
    n = s.size
    csum = np.cumsum(s)
    k = np.arange(1, n + 1)
    nxt = np.append(s[1:], 0.0)
    valid = (s > nxt)  # the top k can be cut off from the rest (and a_(k) > 0)
    if not valid.any():
        return 0.0, 0.0
    obj = np.where(valid, csum**2 / k, -np.inf)
    best = int(np.argmax(obj))
    return float(nxt[best]), float(csum[best] / (best + 1))


def _twn_1d(a, method):
    """``(delta, alpha)`` for the magnitudes ``a`` by the exact search or the 0.7 rule."""
    if method == "exact":
        return twn_threshold_exact(a)
    delta = TWN_APPROX * a.mean()
    kept = a[a > delta]
    return float(delta), float(kept.mean()) if kept.size else 0.0


def ternarize_twn(w, *, method="exact", axis=None):
    r"""Ternary Weight Networks: :math:`W \approx \alpha T`, :math:`T \in \{-1, 0, +1\}^n`.

    With :math:`I_\Delta = \{i : |W_i| > \Delta\}` and :math:`T_i = \mathrm{sign}(W_i)` on
    :math:`I_\Delta` (0 elsewhere), the squared error is minimised by

    .. math::

        \alpha^*_\Delta = \frac{1}{|I_\Delta|}\sum_{i\in I_\Delta} |W_i|, \qquad
        \Delta^* = \arg\max_{\Delta > 0} \frac{1}{|I_\Delta|}\Big(\sum_{i \in I_\Delta}|W_i|\Big)^2

    (Li, Zhang & Liu 2016, Sec. 2). ``method="exact"`` solves for :math:`\Delta^*` by sorting
    :math:`|W|` and trying every threshold (:func:`twn_threshold_exact`, :math:`O(n\log n)`);
    ``method="approx"`` uses the paper's rule of thumb :math:`\Delta^* \approx 0.7\,
    \mathbb{E}|W|`. That constant is a compromise between two distributions for which the
    optimum is known: :math:`W \sim U[-a, a]` gives :math:`\Delta^* = a/3 = 0.667\,\mathbb{E}|W|`
    and :math:`W \sim \mathcal{N}(0, \sigma^2)` gives :math:`\Delta^* \approx 0.612\sigma =
    0.767\,\mathbb{E}|W|`; for heavier-tailed weights it can be far from optimal.

    Parameters
    ----------
    w : array_like of float, non-empty
    method : {"exact", "approx"}
    axis : int or None
        ``None``: one threshold and scale per tensor (as in the paper); an int: one per
        channel along ``axis``.

    Returns
    -------
    t : numpy.ndarray of int8, shape of ``w``, values in {-1, 0, +1}
    alpha, delta : numpy.ndarray, dtype of ``w``, shape of ``w`` with every axis but ``axis``
        of length 1 (all of length 1 for ``axis=None``); ``alpha * t`` is the ternary weight.

    Examples
    --------
    >>> w = np.array([0.9, -1.1, 0.05, -0.1, 1.0, 0.02])
    >>> t, alpha, delta = ternarize_twn(w)
    >>> t, float(alpha[0]), float(delta[0])
    (array([ 1, -1,  0,  0,  1,  0], dtype=int8), 1.0, 0.1)
    """
    w = as_float_array(w, "w", allow_empty=False)
    method = check_choice(method, "method", ("exact", "approx"))
    flat, keep = _channel_reduce(w, axis)
    res = np.array([_twn_1d(np.abs(row), method) for row in flat])  # [c][delta, alpha]
    delta = res[:, 0].reshape(keep)
    alpha = res[:, 1].reshape(keep)
    t = np.where(np.abs(w) > delta, sign(w), np.int8(0)).astype(np.int8)
    return t, alpha.astype(w.dtype), delta.astype(w.dtype)


def ternarize_ttq(w, *, threshold=0.05, wp=None, wn=None):
    r"""Trained Ternary Quantization: :math:`W \mapsto \{-W_n, 0, +W_p\}` with threshold :math:`t\max|W|`.

    .. math::

        \Delta = t \cdot \max|W|, \qquad
        W^t = \begin{cases} W_p & W > \Delta \\ 0 & |W| \le \Delta \\ -W_n & W < -\Delta \end{cases}

    (Zhu et al. 2017, Sec. 3). :math:`W_p, W_n > 0` are trained in the paper;
    here they are given, or, when ``None``, initialised as the mean of the weights above
    :math:`\Delta` and the mean magnitude of those below :math:`-\Delta` (the least-squares
    values for the fixed codes; 0 when a side is empty).

    Parameters
    ----------
    w : array_like of float, non-empty
    threshold : float in [0, 1)
        The paper's :math:`t` (0.05 in its experiments).
    wp, wn : positive float or None

    Returns
    -------
    t : numpy.ndarray of int8, shape of ``w``, values in {-1, 0, +1}
    wp, wn, delta : float

    Examples
    --------
    >>> w = np.array([2.0, 1.0, -0.05, -3.0, 0.0])
    >>> t, wp, wn, delta = ternarize_ttq(w, threshold=0.1)
    >>> t, wp, wn, delta
    (array([ 1,  1,  0, -1,  0], dtype=int8), 1.5, 3.0, 0.30000000000000004)
    """
    w = as_float_array(w, "w", allow_empty=False)
    threshold = check_real(threshold, "threshold")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    v = w.astype(np.float64)
    delta = threshold * float(np.abs(v).max())
    pos, neg = v > delta, v < -delta
    t = pos.astype(np.int8) - neg.astype(np.int8)
    wp = float(v[pos].mean()) if wp is None and pos.any() else (0.0 if wp is None else float(check_positive(wp, "wp")))
    wn = float(-v[neg].mean()) if wn is None and neg.any() else (0.0 if wn is None else float(check_positive(wn, "wn")))
    return t, wp, wn, delta


def ternarize_fgq(w, *, group_size, axis=0, method="exact"):
    r"""Fine-grained ternarization: TWN within groups of ``group_size`` channels.

    The channels along ``axis`` are cut into consecutive groups of :math:`N` = ``group_size``;
    each group (all the weights of its :math:`N` channels) gets its own TWN threshold and scale
    (Mellempudi et al. 2017). :math:`N = 1` is per-channel TWN and :math:`N = C`
    per-tensor TWN; smaller groups fit better and cost more scales.

    Parameters
    ----------
    w : array_like of float, non-empty, at least 1-d
    group_size : int >= 1, dividing ``w.shape[axis]``
    axis : int
        The channel axis the groups are taken along (0: groups of output filters).
    method : {"exact", "approx"}
        As in :func:`ternarize_twn`.

    Returns
    -------
    t : numpy.ndarray of int8, shape of ``w``
    alpha, delta : numpy.ndarray, dtype of ``w``, shape of ``w`` with every axis but ``axis`` of
        length 1: each group's value repeated over its ``group_size`` channels, so ``alpha * t``
        is the ternary weight.

    Examples
    --------
    >>> w = np.array([[1.0, -1.0], [0.9, 0.1], [0.01, -0.02], [0.03, 0.0]])
    >>> t, alpha, delta = ternarize_fgq(w, group_size=2)
    >>> t
    array([[ 1, -1],
           [ 1,  0],
           [ 0, -1],
           [ 1,  0]], dtype=int8)
    >>> alpha.ravel().tolist()
    [0.9666666666666667, 0.9666666666666667, 0.025, 0.025]
    """
    w = as_float_array(w, "w", allow_empty=False, allow_0d=False)
    ax = check_axis(axis, w.ndim)
    g = check_int(group_size, "group_size", low=1)
    c = w.shape[ax]
    if c % g:
        raise ValueError(f"group_size={g} must divide the length {c} of axis {ax}")
    method = check_choice(method, "method", ("exact", "approx"))
    groups = np.moveaxis(w, ax, 0).reshape(c // g, -1).astype(np.float64)  # [group][its weights]
    res = np.array([_twn_1d(np.abs(row), method) for row in groups])
    keep = tuple(s if i == ax else 1 for i, s in enumerate(w.shape))
    delta = np.repeat(res[:, 0], g).reshape(keep)
    alpha = np.repeat(res[:, 1], g).reshape(keep)
    t = np.where(np.abs(w) > delta, sign(w), np.int8(0)).astype(np.int8)
    return t, alpha.astype(w.dtype), delta.astype(w.dtype)
