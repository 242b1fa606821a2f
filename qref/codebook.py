r"""Scalar codebooks: hard, soft and random assignment of real values to codewords.

A *codebook* is a finite set of real values :math:`\{c_1, \dots, c_k\}` (the codewords);
quantizing :math:`x` means replacing it by a codeword, and storing the codeword's index
:math:`j` (:math:`\lceil \log_2 k\rceil` bits) instead of :math:`x`. The survey of Guo (2018,
Sec. 3) sorts quantizers along two axes, and this module provides the scalar version of each:

* **Fixed or adaptive codebook.** A fixed codebook is chosen before seeing the data: the
  uniform grid of rounding (:func:`uniform_codebook`), powers of two
  (:func:`power_of_two_codebook`), :math:`\{-1, +1\}`. An adaptive codebook is learned from
  the data (k-means, product quantization); the functions here take *any* 1-d codebook, so a
  learned one plugs in unchanged.
* **Hard or soft assignment.** Hard quantization assigns each value exactly one codeword, the
  nearest (:func:`hard_quantize`). Soft quantization assigns it a probability distribution over
  the codewords (:func:`soft_assign`) and, for a value, their expectation
  (:func:`soft_quantize`). The soft version is differentiable in :math:`x` and in the
  codebook; as its temperature goes to 0 it becomes the hard one, which is how soft-to-hard
  annealing (Agustsson et al. 2017) trains through a quantizer.

The third function, :func:`random_quantize`, is the survey's *random rounding* (Guo 2018,
Sec. 2.2.1) on a general codebook: each value goes to one of its two neighbouring codewords at
random, with the probabilities that make the result unbiased. On a uniform grid it is exactly
stochastic rounding (:func:`qref.rounding.round_stochastic`).

All functions are element-wise: ``x`` has any shape, the codebook is 1-d with ``k >= 1``
finite values, in any order, repeated values allowed (a repeated codeword is represented by
its first occurrence). Decisions are computed in float64; values come back in ``x``'s dtype.

References
----------
Guo, Y. (2018). A survey on methods and theories of quantized neural networks.
arXiv:1808.04752, Sec. 2.2.1 (random rounding) and Sec. 3 (fixed and adaptive codebooks;
hard and soft quantization).

Agustsson, E., Mentzer, F., Tschannen, M., Cavigelli, L., Timofte, R., Benini, L. and
Van Gool, L. (2017). Soft-to-hard vector quantization for end-to-end learning compressible
representations. NeurIPS.
"""

from __future__ import annotations

import numpy as np

from ._numba import USE_NUMBA, njit, prange
from ._validation import as_float_array, check_bits, check_int, check_positive, check_range, check_rng

__all__ = [
    "hard_quantize",
    "soft_assign",
    "soft_quantize",
    "random_quantize",
    "uniform_codebook",
    "power_of_two_codebook",
]


# --------------------------------------------------------------------------------------
# Input handling shared by the assignment functions
# --------------------------------------------------------------------------------------


def _prepare(x, codebook):
    """Validate ``x`` and ``codebook``; return x, the sorted distinct codewords and their indices.

    Returns
    -------
    x : ndarray, any shape, floating
    cb : ndarray, shape (k,), float64 (the codebook as given)
    u : ndarray, shape (m,), float64, strictly increasing
        The distinct codewords, ``m <= k``.
    first : ndarray, shape (m,), int64
        ``first[i]`` is the index in ``codebook`` of the first occurrence of ``u[i]``.
    """
    x = as_float_array(x, "x")
    cb = as_float_array(codebook, "codebook", allow_empty=False, allow_0d=False)
    if cb.ndim != 1:
        raise ValueError(f"codebook must be 1-d (one scalar codeword per entry), got shape {cb.shape}")
    cb = cb.astype(np.float64, copy=False)
    u, first = np.unique(cb, return_index=True)
    return x, cb, u, first


def _index_dtype(k):
    """The smallest unsigned integer dtype that holds the indices ``0 .. k-1``."""
    return np.min_scalar_type(k - 1)


def _nearest_numpy(xf, u):
    """Position in the sorted distinct codewords ``u`` of the one nearest each ``xf``; ties go down.

    A binary search places each value between two neighbours, ``u[hi - 1] < x <= u[hi]``;
    the nearer of the two wins, the lower one on a tie. O(n log k), no n x k matrix.
    """
    hi = np.searchsorted(u, xf, side="left")
    lo = np.maximum(hi - 1, 0)
    hi = np.minimum(hi, u.size - 1)
    take_hi = (u[hi] - xf) < (xf - u[lo])  # strict: a tie keeps the lower codeword
    return np.where(take_hi, hi, lo)


@njit(parallel=True)
def _nearest_kernel(xf, u, out):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """Numba twin of :func:`_nearest_numpy`: the same search and comparison, one value at a time."""
    k = u.size
    for p in prange(xf.size):
        x = xf[p]
        lo = 0
        hi = k
        while lo < hi:  # first position with u >= x: searchsorted(side="left")
            mid = (lo + hi) >> 1
            if u[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        up = min(lo, k - 1)
        down = max(lo - 1, 0)
        out[p] = up if (u[up] - x) < (x - u[down]) else down


_NEAREST_PARALLEL = 1 << 16  #: values from which the numba twin (on all threads) runs
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  #: numba has no float16 arithmetic


def _nearest(xf, u):
    """:func:`_nearest_numpy`, or its numba twin for large inputs (the same int64 positions)."""
    if USE_NUMBA and xf.size >= _NEAREST_PARALLEL and xf.dtype in _KERNEL_DTYPES and u.dtype in _KERNEL_DTYPES:
        out = np.empty(xf.shape, dtype=np.int64)
        _nearest_kernel(xf.reshape(-1), u, out.reshape(-1))
        return out
    return _nearest_numpy(xf, u)


# --------------------------------------------------------------------------------------
# Hard assignment: the nearest codeword
# --------------------------------------------------------------------------------------


def hard_quantize(x, codebook):
    r"""Nearest-codeword (hard) quantization of every element of ``x``.

    .. math::

        j^\star(x) = \operatorname*{arg\,min}_{j} |x - c_j|, \qquad Q(x) = c_{j^\star(x)}

    the *hard quantization* of Guo (2018, Sec. 3). Rounding to nearest is the special case of
    a uniform codebook. The codebook is sorted once and each element is placed between its two
    neighbouring codewords with a binary search, :math:`O(n \log k)` time and :math:`O(n)`
    memory, instead of an :math:`n \times k` distance matrix.

    **Ties** (``x`` exactly halfway between two codewords) go to the *lower* codeword, the
    one nearer :math:`-\infty` (like ``"half_down"`` rounding; a convention, not a law: on a
    uniform grid numpy would round such a value to even). A codeword that appears several
    times in ``codebook`` is reported by the index of its first occurrence. The two candidate
    distances are compared in float64, so two distances that round to the same float count as
    a tie; beyond the codebook's range the end codeword is chosen (it is the nearest).

    Parameters
    ----------
    x : array_like of float, any shape (0-d and empty included)
    codebook : array_like of float, shape (k,), k >= 1
        Finite codewords in any order.

    Returns
    -------
    indices : ndarray, shape ``x.shape``, smallest unsigned dtype holding ``k - 1``
        Index into ``codebook`` of the chosen codeword (uint8 for ``k <= 256``).
    values : ndarray, shape ``x.shape``, dtype of ``x``
        ``codebook[indices]``, cast to ``x``'s dtype.

    Raises
    ------
    TypeError
        If ``x`` or ``codebook`` is not floating point.
    ValueError
        If either holds NaN or infinity, or the codebook is empty or not 1-d.

    References
    ----------
    Guo (2018), "A survey on methods and theories of quantized neural networks",
    arXiv:1808.04752, Sec. 3.

    Examples
    --------
    >>> idx, val = hard_quantize(np.array([-0.9, 0.2, 0.25, 0.7]), [1.0, -1.0, 0.0, 0.5])
    >>> idx, val          # 0.25 is halfway between 0 and 0.5: ties go to the lower codeword
    (array([1, 2, 2, 3], dtype=uint8), array([-1. ,  0. ,  0. ,  0.5]))
    """
    x, cb, u, first = _prepare(x, codebook)
    i = _nearest(x.astype(np.float64, copy=False), u)
    indices = first[i].astype(_index_dtype(cb.size))
    return indices, cb[indices].astype(x.dtype)


# --------------------------------------------------------------------------------------
# Soft assignment: a softmax over negative squared distances
# --------------------------------------------------------------------------------------


def soft_assign(x, codebook, *, temperature):
    r"""Soft assignment of every element of ``x`` to the codewords: a probability vector.

    .. math::

        p_j(x) = \frac{\exp\!\big(-(x - c_j)^2 / T\big)}
                      {\sum_{l=1}^{k} \exp\!\big(-(x - c_l)^2 / T\big)},
        \qquad j = 1, \dots, k,

    the *soft quantization* of Guo (2018, Sec. 3), with the softmax-of-negative-distances form
    of Agustsson et al. (2017), whose hardness parameter :math:`\sigma` is :math:`1/T` here.
    As :math:`T \to 0` the distribution concentrates on the nearest codeword (at an exact tie
    it splits evenly between the two); as :math:`T \to \infty` it becomes uniform.

    Computed stably: the squared distance to the nearest codeword :math:`c_\star` is
    subtracted before exponentiating, in the factored form
    :math:`(x - c_j)^2 - (x - c_\star)^2 = (c_\star - c_j)(2x - c_\star - c_j) \ge 0`, so the
    nearest codeword always gets the exponent 0, large :math:`|x|` neither overflows nor loses
    the distinction between codewords, and a tiny temperature gives an exact one-hot vector
    rather than NaN.

    Parameters
    ----------
    x : array_like of float, any shape
    codebook : array_like of float, shape (k,), k >= 1
    temperature : float > 0
        :math:`T`, in units of :math:`x^2`.

    Returns
    -------
    ndarray, shape ``x.shape + (k,)``, dtype of ``x``
        ``p[..., j]`` is the probability of codeword ``codebook[j]``; every ``p[...]`` sums
        to 1. The formula runs over the list as given, so a codeword repeated twice counts
        twice.

    Raises
    ------
    TypeError
        If ``x`` or ``codebook`` is not floating point, or ``temperature`` not a real number.
    ValueError
        If an input holds NaN or infinity, the codebook is empty or not 1-d, or
        ``temperature <= 0``.

    References
    ----------
    Guo (2018), arXiv:1808.04752, Sec. 3. Agustsson et al. (2017), "Soft-to-hard vector
    quantization for end-to-end learning compressible representations", NeurIPS.

    Examples
    --------
    >>> soft_assign(np.array([0.25]), [0.0, 1.0], temperature=0.5).round(3)
    array([[0.731, 0.269]])
    >>> soft_assign(np.array([0.25]), [0.0, 1.0], temperature=1e-6)   # hard limit
    array([[1., 0.]])
    """
    check_positive(temperature, "temperature")
    x, cb, u, _ = _prepare(x, codebook)
    xf = x.astype(np.float64, copy=False)[..., None]  # [..., 1]
    c_near = u[_nearest(xf, u)]  # [..., 1]: the nearest codeword, whose exponent is 0
    with np.errstate(over="ignore", invalid="ignore"):  # huge |x|: exp(-inf) = 0, which is right
        # (x - c_j)^2 - (x - c_near)^2, factored so that it stays exact for large |x|
        excess = np.where(cb == c_near, 0.0, (c_near - cb) * (2.0 * xf - c_near - cb))  # [..., j]
        w = np.exp(-np.maximum(excess, 0.0) / float(temperature))
    return (w / w.sum(axis=-1, keepdims=True)).astype(x.dtype)


def soft_quantize(x, codebook, *, temperature):
    r"""Soft quantization: the expected codeword under :func:`soft_assign`.

    .. math::

        \tilde Q_T(x) = \sum_{j=1}^{k} p_j(x)\, c_j

    A smooth, differentiable surrogate of the staircase :func:`hard_quantize`, which it
    approaches as :math:`T \to 0` (everywhere except exactly at a tie, where the limit is the
    midpoint of the two codewords). Annealing :math:`T` from large to small during training is
    the soft-to-hard scheme of Agustsson et al. (2017); Guo (2018, Sec. 3) calls the
    assignment *soft quantization*.

    Parameters
    ----------
    x : array_like of float, any shape
    codebook : array_like of float, shape (k,), k >= 1
    temperature : float > 0

    Returns
    -------
    ndarray, shape ``x.shape``, dtype of ``x``
        Always inside ``[min(codebook), max(codebook)]``.

    Raises
    ------
    TypeError, ValueError
        As :func:`soft_assign`.

    References
    ----------
    Agustsson et al. (2017), NeurIPS; Guo (2018), arXiv:1808.04752, Sec. 3.

    Examples
    --------
    >>> x = np.array([-0.8, 0.1, 0.3])
    >>> soft_quantize(x, [-1.0, 0.0, 1.0], temperature=1.0).round(3)
    array([-0.603,  0.085,  0.25 ])
    >>> soft_quantize(x, [-1.0, 0.0, 1.0], temperature=1e-4)   # ~ hard_quantize
    array([-1.,  0.,  0.])
    """
    p = soft_assign(x, codebook, temperature=temperature)
    cb = np.asarray(codebook, dtype=np.float64)
    return (p.astype(np.float64) @ cb).astype(p.dtype)


# --------------------------------------------------------------------------------------
# Random assignment: stochastic rounding on an arbitrary codebook
# --------------------------------------------------------------------------------------


def random_quantize(x, codebook, *, rng=None):
    r"""Random (stochastic) quantization to one of the two neighbouring codewords, unbiased.

    With the distinct codewords sorted, :math:`c_{(1)} < \dots < c_{(m)}`, and
    :math:`c_{(i)} \le x \le c_{(i+1)}`:

    .. math::

        Q(x) = \begin{cases}
            c_{(i+1)} & \text{with probability } \dfrac{x - c_{(i)}}{c_{(i+1)} - c_{(i)}},\\[1ex]
            c_{(i)}   & \text{otherwise,}
        \end{cases}
        \qquad \mathbb{E}[Q(x)] = x .

    This is the survey's *random rounding* (Guo 2018, Sec. 2.2.1) on a general, possibly
    non-uniform codebook; on a uniform grid it is the stochastic rounding of Gupta et al.
    (2015). Its variance is :math:`(x - c_{(i)})(c_{(i+1)} - x)`, zero on a codeword.

    **Outside the codebook's range** no unbiased choice exists: values below the smallest
    codeword go to the smallest, values above the largest to the largest (clipping, as a
    saturating fixed-point format does). A one-codeword codebook maps everything to it.

    Parameters
    ----------
    x : array_like of float, any shape
    codebook : array_like of float, shape (k,), k >= 1
        Any order; repeated codewords are reported by their first index.
    rng : None, int or numpy.random.Generator
        Source of randomness: one uniform draw per element of ``x``.

    Returns
    -------
    indices : ndarray, shape ``x.shape``, smallest unsigned dtype holding ``k - 1``
    values : ndarray, shape ``x.shape``, dtype of ``x``

    Raises
    ------
    TypeError
        If ``x`` or ``codebook`` is not floating point, or ``rng`` is not a seed/Generator.
    ValueError
        If an input holds NaN or infinity, or the codebook is empty or not 1-d.

    References
    ----------
    Guo (2018), arXiv:1808.04752, Sec. 2.2.1. Gupta, Agrawal, Gopalakrishnan and
    Narayanan (2015), "Deep learning with limited numerical precision", ICML.

    Examples
    --------
    >>> cb = [0.0, 0.25, 1.0]                      # non-uniform
    >>> _, v = random_quantize(np.full(100_000, 0.4), cb, rng=0)
    >>> sorted(set(v.tolist())), round(float(v.mean()), 2)   # 0.25 or 1.0, mean 0.4
    ([0.25, 1.0], 0.4)
    """
    x, cb, u, first = _prepare(x, codebook)
    gen = check_rng(rng)
    xf = np.clip(x.astype(np.float64, copy=False), u[0], u[-1])
    draws = gen.random(x.shape)  # float64 uniforms in [0, 1)
    if u.size == 1:
        i = np.zeros(x.shape, dtype=np.intp)
    else:
        lo = np.clip(np.searchsorted(u, xf, side="right") - 1, 0, u.size - 2)  # u[lo] <= x <= u[lo + 1]
        p_up = (xf - u[lo]) / (u[lo + 1] - u[lo])
        i = lo + (draws < p_up)
    indices = first[i].astype(_index_dtype(cb.size))
    return indices, cb[indices].astype(x.dtype)


# --------------------------------------------------------------------------------------
# Two fixed codebooks
# --------------------------------------------------------------------------------------


def uniform_codebook(bits, lo=-1.0, hi=1.0):
    r"""The fixed uniform codebook: :math:`2^b` evenly spaced codewords from ``lo`` to ``hi``.

    .. math::

        c_j = \text{lo} + j\,\Delta, \qquad \Delta = \frac{\text{hi} - \text{lo}}{2^b - 1},
        \qquad j = 0, \dots, 2^b - 1

    Nearest-codeword quantization with it is rounding to nearest on a grid of step
    :math:`\Delta` (with clipping to ``[lo, hi]``), the grid of :mod:`qref.uniform`.

    Parameters
    ----------
    bits : int in [1, 16]
    lo, hi : float, lo < hi
        The smallest and the largest codeword.

    Returns
    -------
    ndarray of float64, shape (2**bits,), increasing

    Raises
    ------
    TypeError
        If ``bits`` is not an integer or ``lo``/``hi`` not real numbers.
    ValueError
        If ``bits`` is out of range or ``lo >= hi``.

    Examples
    --------
    >>> uniform_codebook(2, -1.0, 1.0)
    array([-1.        , -0.33333333,  0.33333333,  1.        ])
    """
    bits = check_bits(bits, high=16)
    lo_a, hi_a = check_range(lo, hi)
    if lo_a.ndim != 0:
        raise ValueError(f"lo and hi must be scalars, got shape {lo_a.shape}")
    if not lo_a < hi_a:
        raise ValueError(f"lo must be < hi for distinct codewords, got lo={float(lo_a)!r}, hi={float(hi_a)!r}")
    return np.linspace(float(lo_a), float(hi_a), 2**bits)


def power_of_two_codebook(bits, *, max_exponent=0):
    r"""A fixed symmetric power-of-two codebook: zero and :math:`\pm 2^e` for the top exponents.

    .. math::

        \mathcal{C} = \{0\} \cup \{\pm 2^{e} : e = e_{\max} - m + 1, \dots, e_{\max}\},
        \qquad m = 2^{b-1} - 1

    so the codebook has :math:`2m + 1 = 2^b - 1` codewords and fits a :math:`b`-bit code
    (one code unused, keeping the codebook symmetric). Multiplying by a codeword is a bit
    shift, which is why such codebooks appear in hardware-friendly quantizers. This is the
    minimal fixed version used in the rounding chapter: ``max_exponent`` is given, not fitted
    to the data (fitting it to the largest weight is INQ's rule, Zhou et al. 2017: see
    :func:`qref.nonuniform.inq_exponent_range` and :func:`qref.nonuniform.power_of_two_quantize`).

    Parameters
    ----------
    bits : int in [2, 8]
    max_exponent : int
        :math:`e_{\max}`: the largest magnitude is ``2.0 ** max_exponent``; in [-64, 64].

    Returns
    -------
    ndarray of float64, shape (2**bits - 1,), increasing

    Raises
    ------
    TypeError
        If ``bits`` or ``max_exponent`` is not an integer.
    ValueError
        If either is out of range.

    Examples
    --------
    >>> power_of_two_codebook(3)
    array([-1.  , -0.5 , -0.25,  0.  ,  0.25,  0.5 ,  1.  ])
    """
    bits = check_bits(bits, low=2, high=8)
    e_max = check_int(max_exponent, "max_exponent")
    if not -64 <= e_max <= 64:
        raise ValueError(f"max_exponent must be an integer in [-64, 64], got {e_max}")
    m = 2 ** (bits - 1) - 1
    mags = 2.0 ** np.arange(e_max - m + 1, e_max + 1)
    return np.concatenate([-mags[::-1], [0.0], mags])
