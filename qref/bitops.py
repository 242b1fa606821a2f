r"""Bit-packed ±1 arithmetic: the XNOR–popcount dot product.

A vector :math:`a \in \{-1, +1\}^n` is stored as :math:`n` bits, bit 1 for :math:`+1` and
bit 0 for :math:`-1`, 64 of them to a ``uint64`` word. For two such vectors the product
:math:`a_k b_k` is :math:`+1` where the bits agree and :math:`-1` where they differ, so

.. math::

    a \cdot b = \#\{\text{agree}\} - \#\{\text{differ}\}
              = n - 2\,\mathrm{popcount}(a \oplus b),

one XOR and one population count per 64 multiply–adds (Rastegari et al. 2016, Sec. 3.2;
Courbariaux et al. 2016 write the same with XNOR: :math:`a\cdot b = 2\,
\mathrm{popcount}(\overline{a \oplus b}) - n`). This is what makes binary networks fast.

**Layout.** Element ``j`` of the last axis goes to word ``j // 64``, bit ``j % 64`` (least
significant bit first). When :math:`n` is not a multiple of 64 the unused high bits of the
last word are *padding*; :func:`pack_bits` sets them to 0 in every vector, so they agree,
XOR to 0, and add nothing to the popcount: the formula with the true :math:`n` stays exact.
:func:`binary_matmul` refuses words with a padding bit set.

**Twins.** :func:`binary_matmul` has a numpy twin (``np.bitwise_count``, numpy >= 2.0; the
definition) and a numba twin (parallel over tiles of rows; popcount through LLVM's
``llvm.ctpop`` intrinsic, since numba does not compile ``np.bitwise_count``). The public
function runs the numba twin when :data:`qref.USE_NUMBA` is true; the two return identical
integers (``tests/test_bitops.py``).

References
----------
Rastegari, M., Ordonez, V., Redmon, J., Farhadi, A. (2016). XNOR-Net: ImageNet
Classification Using Binary Convolutional Neural Networks. ECCV 2016, LNCS 9908, 525–542.

Courbariaux, M., Hubara, I., Soudry, D., El-Yaniv, R., Bengio, Y. (2016). Binarized Neural
Networks: Training Deep Neural Networks with Weights and Activations Constrained to +1 or -1.
arXiv:1602.02830.
"""

from __future__ import annotations

import numpy as np

from ._numba import USE_NUMBA, njit, prange
from ._validation import check_int

__all__ = ["WORD_BITS", "num_words", "pack_bits", "unpack_bits", "binary_matmul"]

WORD_BITS = 64  #: bits per packed word (``uint64``)


def num_words(n):
    """Number of ``uint64`` words that hold ``n`` bits: ``ceil(n / 64)``.

    Examples
    --------
    >>> [num_words(n) for n in (0, 1, 64, 65, 130)]
    [0, 1, 1, 2, 3]
    """
    n = check_int(n, "n", low=0)
    return -(-n // WORD_BITS)


def _as_sign_bits(x, name):
    """``x > 0`` as a bool array, after checking that ``x`` holds only ±1 or only 0/1 values."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold ±1 or 0/1 values as bool, integer or float, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (bits are packed along the last axis), "
                         "got a 0-d array")
    if arr.dtype.kind == "b":
        return arr
    pos, neg, zero = arr == 1, arr == -1, arr == 0
    bad = ~(pos | neg | zero)
    if bad.any():
        raise ValueError(f"{name} must hold only ±1 (or only 0/1) values, got {arr[bad].flat[0]!r} "
                         f"({int(bad.sum())} value(s) outside the set)")
    if neg.any() and zero.any():
        raise ValueError(f"{name} must hold either ±1 values or 0/1 values, got a mix of -1, 0 and 1")
    return pos


def pack_bits(x):
    """Pack a ±1 (or 0/1) tensor along its last axis into ``uint64`` words.

    Bit ``j % 64`` of word ``j // 64`` is 1 where ``x[..., j]`` is ``+1`` (or ``1``/``True``)
    and 0 where it is ``-1`` (or ``0``/``False``); the padding bits of the last word are 0.

    Parameters
    ----------
    x : array_like of shape (..., n)
        Only ±1 values, or only 0/1 values (bool, integer or float dtype). At least 1-d.

    Returns
    -------
    numpy.ndarray of uint64, shape (..., ceil(n / 64))

    Raises
    ------
    TypeError
        For a dtype that is not bool, integer or float.
    ValueError
        For a 0-d array, a value outside {-1, +1} / {0, 1}, or a mix of -1 and 0.

    Examples
    --------
    >>> pack_bits([1, -1, 1, 1])          # bits 0, 2, 3 set: 1 + 4 + 8
    array([13], dtype=uint64)
    >>> pack_bits(np.ones((2, 65))).shape
    (2, 2)
    """
    bits = _as_sign_bits(x, "x")
    n = bits.shape[-1]
    nw = num_words(n)
    if nw == 0:
        return np.zeros(bits.shape[:-1] + (0,), dtype=np.uint64)
    by = np.packbits(bits, axis=-1, bitorder="little")  # (..., ceil(n/8)) bytes, little-endian bits
    pad = nw * 8 - by.shape[-1]
    if pad:
        by = np.concatenate([by, np.zeros(by.shape[:-1] + (pad,), dtype=np.uint8)], axis=-1)
    return np.ascontiguousarray(by).view("<u8").astype(np.uint64)


def _check_packed(p, name, ndim=None):
    arr = np.asarray(p)
    if arr.dtype != np.uint64:
        raise TypeError(f"{name} must be packed bits of dtype uint64 (see pack_bits), got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array of packed rows, got shape {arr.shape}")
    if ndim is None and arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the words), got a 0-d array")
    return arr


def _check_length(arr, n, name):
    """Check that the last axis of ``arr`` holds exactly ``num_words(n)`` words with zero padding."""
    nw = num_words(n)
    if arr.shape[-1] != nw:
        raise ValueError(f"{name} must have {nw} word(s) along its last axis for n={n} bits, got {arr.shape[-1]}")
    r = n % WORD_BITS
    if r and arr.size:
        pad_mask = ~np.uint64((1 << r) - 1)
        if (arr[..., -1] & pad_mask).any():
            raise ValueError(f"{name} has padding bits set beyond bit n={n}: the XNOR-popcount product "
                             "would be wrong; pack with pack_bits, which zeroes them")


def unpack_bits(packed, n, *, signed=True):
    """Inverse of :func:`pack_bits`: the first ``n`` bits of each row as ±1 (or 0/1) ``int8``.

    Parameters
    ----------
    packed : array of uint64, shape (..., ceil(n / 64))
    n : int >= 0
        Number of elements per row.
    signed : bool
        ±1 values (default) or 0/1 values.

    Returns
    -------
    numpy.ndarray of int8, shape (..., n)

    Examples
    --------
    >>> unpack_bits(pack_bits([1, -1, -1, 1, 1]), 5)
    array([ 1, -1, -1,  1,  1], dtype=int8)
    """
    arr = _check_packed(packed, "packed")
    n = check_int(n, "n", low=0)
    _check_length(arr, n, "packed")
    by = np.ascontiguousarray(arr.astype("<u8")).view(np.uint8)
    bits = np.unpackbits(by, axis=-1, count=n, bitorder="little").astype(np.int8)
    return 2 * bits - 1 if signed else bits


def binary_matmul(a_packed, b_packed, n):
    r"""The ±1 matrix product :math:`A B^\top` from packed rows, by XNOR and popcount.

    .. math::

        C_{ij} = \sum_{k<n} A_{ik} B_{jk} = n - 2\,\mathrm{popcount}(a_i \oplus b_j)

    (Rastegari et al. 2016, Sec. 3.2; Courbariaux et al. 2016). Exact: the result
    equals ``A @ B.T`` computed in integers.

    Parameters
    ----------
    a_packed : array of uint64, shape (M, ceil(n / 64))
        The rows of :math:`A \in \{-1,+1\}^{M\times n}`, packed with :func:`pack_bits`.
    b_packed : array of uint64, shape (N, ceil(n / 64))
        The rows of :math:`B \in \{-1,+1\}^{N\times n}` (note: :math:`B`, not :math:`B^\top`).
    n : int >= 0
        The true row length (number of bits used in each row).

    Returns
    -------
    numpy.ndarray of int64, shape (M, N)

    Raises
    ------
    TypeError
        If a packed array is not uint64.
    ValueError
        If a packed array is not 2-d, has the wrong number of words for ``n``, or has a
        padding bit set.

    Examples
    --------
    >>> A = np.array([[1, -1, 1], [-1, -1, -1]])
    >>> B = np.array([[1, 1, 1], [1, -1, 1]])
    >>> binary_matmul(pack_bits(A), pack_bits(B), 3)
    array([[ 1,  3],
           [-3, -1]])
    >>> A @ B.T
    array([[ 1,  3],
           [-3, -1]])
    """
    a = _check_packed(a_packed, "a_packed", ndim=2)
    b = _check_packed(b_packed, "b_packed", ndim=2)
    n = check_int(n, "n", low=0)
    _check_length(a, n, "a_packed")
    _check_length(b, n, "b_packed")
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if USE_NUMBA and a.shape[0] * b.shape[0] * a.shape[1] >= _NUMBA_MIN_WORDS:
        out = np.empty((a.shape[0], b.shape[0]), dtype=np.int64)
        _binary_matmul_nb(a, b, n, out)
        return out
    return _binary_matmul_np(a, b, n)


# ---- the numpy twin: the definition -------------------------------------------------------

_CHUNK_WORDS = 1 << 21  #: words of the temporary XOR array per step of the numpy twin (16 MB)


def _binary_matmul_np(a, b, n):
    """``n - 2 * popcount(a_i XOR b_j)`` for every pair of rows, in chunks of rows of ``a``."""
    m, w = a.shape
    out = np.empty((m, b.shape[0]), dtype=np.int64)
    rows = max(1, _CHUNK_WORDS // max(1, b.shape[0] * w))
    for i0 in range(0, m, rows):
        x = a[i0:i0 + rows, None, :] ^ b[None, :, :]  # [i][j][k]: word k of a_i XOR b_j
        out[i0:i0 + rows] = n - 2 * np.bitwise_count(x).sum(axis=-1, dtype=np.int64)
    return out


# ---- the numba twin: the fast one ---------------------------------------------------------

_NUMBA_MIN_WORDS = 1 << 12  #: below this many word pairs the numpy twin is as fast (no thread start-up)

if USE_NUMBA:
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def _popcount64(typingctx, x):
        """``popcount(x)`` for a uint64, compiled to LLVM's ``llvm.ctpop.i64`` (one POPCNT instruction)."""
        if not isinstance(x, _types.Integer):
            return None
        sig = _types.uint64(_types.uint64)

        def codegen(context, builder, signature, args):
            i64 = _ir.IntType(64)
            fn = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(i64, [i64]), "llvm.ctpop.i64")
            return builder.call(fn, [args[0]])

        return sig, codegen

else:  # numba missing or NUMBA_DISABLE_JIT=1: the kernel below runs as Python

    def _popcount64(x):
        """``popcount(x)`` in Python."""
        return bin(int(x)).count("1")


_BLOCK_BYTES = 1 << 20  #: bytes of b reused from cache while every row of a streams over them (1 MB measured best)


@njit(parallel=True)
def _binary_matmul_nb(a, b, n, out):
    """Fill ``out[i, j] = n - 2 popcount(a[i] ^ b[j])``.

    Blocked for the cache: b is cut into blocks of rows that fit in L2; for each block, tiles
    of 4 rows of a run in parallel, and each tile meets 2 rows of b at a time, so every word
    loaded feeds 2 or 4 XOR-popcounts and the 8 running counts stay in registers. On x86-64 the
    popcount is one POPCNT instruction.
    """
    m, w = a.shape
    nb = b.shape[0]
    rows_per_block = max(2, _BLOCK_BYTES // max(1, 8 * w))
    for j0 in range(0, nb, rows_per_block):
        j1 = min(j0 + rows_per_block, nb)
        for t in prange((m + 3) // 4):
            i0 = 4 * t
            # the last tile repeats its last row where m is not a multiple of 4 (written once below)
            r0, r1, r2, r3 = a[i0], a[min(i0 + 1, m - 1)], a[min(i0 + 2, m - 1)], a[min(i0 + 3, m - 1)]
            for j in range(j0, j1, 2):
                jj = min(j + 1, j1 - 1)
                c0, c1 = b[j], b[jj]
                s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = 0  # s<row of a><row of b>
                for k in range(w):
                    y0, y1 = c0[k], c1[k]
                    x = r0[k]
                    s00 += _popcount64(x ^ y0)
                    s01 += _popcount64(x ^ y1)
                    x = r1[k]
                    s10 += _popcount64(x ^ y0)
                    s11 += _popcount64(x ^ y1)
                    x = r2[k]
                    s20 += _popcount64(x ^ y0)
                    s21 += _popcount64(x ^ y1)
                    x = r3[k]
                    s30 += _popcount64(x ^ y0)
                    s31 += _popcount64(x ^ y1)
                out[i0, j], out[i0, jj] = n - 2 * s00, n - 2 * s01
                if i0 + 1 < m:
                    out[i0 + 1, j], out[i0 + 1, jj] = n - 2 * s10, n - 2 * s11
                if i0 + 2 < m:
                    out[i0 + 2, j], out[i0 + 2, jj] = n - 2 * s20, n - 2 * s21
                if i0 + 3 < m:
                    out[i0 + 3, j], out[i0 + 3, jj] = n - 2 * s30, n - 2 * s31
