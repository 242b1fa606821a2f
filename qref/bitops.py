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

from ._numba import USE_NUMBA, njit, prange, tile_intrinsic
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


def binary_matmul(a_packed, b_packed, n, *, out=None):
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
    out : numpy.ndarray of int64 or int32, shape (M, N), optional
        A C-contiguous, writeable array to write the result into (like numpy's ``out=``),
        e.g. a layer's buffer reused from call to call. A fresh (M, N) int64 result is
        8 MN bytes of new pages to zero and first-touch: 32 MB at 2048 x 2048, measured at
        3 to 20 ms on the 2-vCPU benchmark machine against ~17 ms for the whole product
        (``benchmarks/bench_bitops.py``). int32 (exact for ``n < 2**31``) halves the bytes
        written. ``out`` must not share memory with the packed inputs.

    Returns
    -------
    numpy.ndarray of int64 (or of out's dtype), shape (M, N)
        A new array, or ``out`` itself when given.

    Raises
    ------
    TypeError
        If a packed array is not uint64, or ``out`` is not an int64/int32 ndarray.
    ValueError
        If a packed array is not 2-d, has the wrong number of words for ``n``, or has a
        padding bit set; if ``out`` has the wrong shape, is not C-contiguous or not
        writeable, shares memory with an input, or is int32 and ``n >= 2**31``.

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
    >>> buf = np.empty((2, 2), dtype=np.int32)
    >>> binary_matmul(pack_bits(A), pack_bits(B), 3, out=buf) is buf
    True
    """
    a = _check_packed(a_packed, "a_packed", ndim=2)
    b = _check_packed(b_packed, "b_packed", ndim=2)
    n = check_int(n, "n", low=0)
    if out is not None:
        _check_out(out, (a.shape[0], b.shape[0]), n, a, b)
    _check_length(a, n, "a_packed")
    _check_length(b, n, "b_packed")
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if USE_NUMBA and a.shape[0] * b.shape[0] * a.shape[1] >= _NUMBA_MIN_WORDS:
        if out is None:
            out = np.empty((a.shape[0], b.shape[0]), dtype=np.int64)
        _binary_matmul_nb(a, b, n, out)
        return out
    if out is None:
        return _binary_matmul_np(a, b, n)
    out[...] = _binary_matmul_np(a, b, n)
    return out


def _check_out(out, shape, n, *inputs):
    """Check the ``out`` argument of :func:`binary_matmul` (see its docstring)."""
    if not isinstance(out, np.ndarray) or out.dtype not in (np.int64, np.int32):
        what = f"dtype {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise TypeError(f"out must be a numpy array of dtype int64 or int32, got {what}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape} (rows of a_packed, rows of b_packed), got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable, got an array that is "
                         + ("not C-contiguous" if not out.flags.c_contiguous else "read-only"))
    if out.dtype == np.int32 and n >= 2**31:
        raise ValueError(f"out of dtype int32 holds results only for n < 2**31, got n={n}; use int64")
    if any(np.may_share_memory(out, x) for x in inputs):
        raise ValueError("out must not share memory with a_packed or b_packed")


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

# Technique. A ±1 matmul is nothing but popcount(a_i XOR b_j) summed over words, for every pair of
# rows. On a CPU with 256-bit vectors (AVX2) the fastest popcount is not the scalar POPCNT
# instruction (one 64-bit word per instruction) but a table lookup on 4-bit nibbles: VPSHUFB
# looks up the bit count of 32 nibbles in one instruction. LLVM emits exactly that when asked for
# ``llvm.ctpop.v32i8`` (the popcount of each of 32 bytes); we ask for it from an ``intrinsic``
# below, since numba has no vector types. The per-byte counts (each <= 8) are summed in byte
# lanes, so the expensive step (adding the 32 bytes of a register together, one VPSADBW and a
# few shuffles) happens once per pair of rows, not once per word. Register blocking: a tile of
# _TILE_A rows of a meets _TILE_B rows of b, so each 32-byte load feeds 2 or 4 XOR-popcounts and
# the 8 running counts stay in the 16 vector registers of AVX2.
#
# Limits (measured 2026-11 on a 2-vCPU AMD EPYC Zen 3, AVX2, no VPOPCNTDQ; 2048^3 product,
# 2^25 pairs of 256-bit vectors). The inner loop (read it with ``inspect_asm``) spends 8 vector
# instructions per vector pair: VPXOR, 2 VPAND, VPSRLW, 2 VPSHUFB, 2 VPADDB, plus 6 loads per 8
# pairs. With 4 vector pipes (shuffles and shifts on 2 of them) that is >= 2 cycles per pair,
# 67 M cycles: 21 ms of one core at 3.2 GHz, 27 ms at the nominal 2.45 GHz. Measured, one
# thread: ~30 ms of CPU, of which ~6 ms write the 32 MB int64 result; two threads: ~17 ms wall.
# So the kernel runs near that bound, and the tile shape does not matter (4x2, 3x3, 2x4, 4x3
# all within 3%). 10x the float32 BLAS product (~100-120 ms) would need ~1 cycle per pair.
# Tried and not kept:
# * the Harley-Seal carry-save popcount (Mula, Kurz & Lemire 2018, "Faster population counts
#   using AVX2 instructions", Comput. J. 61(1)) pays off over 16+ vectors per running count;
#   here a pair of rows has only n/256 = 8 vectors and its 4-5 CSA states per pair would not
#   fit a register tile, so it would cost about as many instructions as it saves;
# * a "Four Russians" table kernel (Arlazarov et al. 1970: 256-entry tables of popcount(p & b)
#   for 32 columns of b, one 32-byte load + add per 8 x 32 bit products) needed 5-10% less CPU
#   single-threaded but scaled worse on two shared cores (its 64 kB tables live in L2);
# * in-register 16-entry tables (VPSHUFB indexed by nibbles of 32 columns of b, one table
#   per nibble of a: 2 VPSHUFB + 2 VPADDB per vector pair, no XOR/AND/shift) cut the
#   popcount part from ~25 to ~19 ms of CPU, but the whole product only from ~30 to ~27 ms
#   (the result still has to be written), for an AVX2-only intrinsic: not worth its code.
# A fresh 32 MB result adds 3-20 ms of page zeroing and first touch: pass ``out=`` to reuse one.

_TILE_A, _TILE_B = 4, 2  #: rows of a x rows of b per register tile (4 x 2 measured best with 4 x 4 and 2 x 4)
_VEC_WORDS = 4  #: uint64 words per 256-bit vector
_MAX_VECS = 31  #: vectors summed in byte lanes before they could overflow (31 * 8 <= 255)
_BLOCK_BYTES = 1 << 18  #: bytes of b reused from cache (L2) while every row of a streams over them (256 kB measured best)

if USE_NUMBA:

    def _xor_popcount_body(t):
        """LLVM IR of :func:`_xor_popcount_tile` (``t``: a :class:`qref._numba.TileCodegen`)."""
        ir, cgutils, builder, const = t.ir, t.cgutils, t.builder, t.const
        count = _TILE_A * _TILE_B
        i8, i16, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(64)
        bytes32, words4, shorts32 = ir.VectorType(i8, 32), ir.VectorType(i64, 4), ir.VectorType(i16, 32)
        ctpop = t.function("llvm.ctpop.v32i8", bytes32, [bytes32])
        hsum = t.function("llvm.vector.reduce.add.v32i16", i16, [shorts32])
        acc = [cgutils.alloca_once(builder, bytes32) for _ in range(count)]  # byte-lane counts
        total = [cgutils.alloca_once_value(builder, const(0)) for _ in range(count)]

        def load(ptr, word):  # 4 words from ptr + word, as 32 bytes
            return builder.bitcast(t.load(ptr, word, words4, align=8), bytes32)

        # chunks of at most _MAX_VECS vectors, so that no byte lane overflows
        with cgutils.for_range_slice(builder, const(0), t.nvec, const(_MAX_VECS)) as (v0, _):
            v1 = builder.add(v0, const(_MAX_VECS))
            v1 = builder.select(builder.icmp_signed("<", v1, t.nvec), v1, t.nvec)
            for slot in acc:
                builder.store(ir.Constant(bytes32, None), slot)
            with cgutils.for_range_slice(builder, v0, v1, const(1)) as (v, _):
                word = builder.mul(v, const(_VEC_WORDS))
                va = [load(p, word) for p in t.rows_a]  # loaded once, used _TILE_B times
                for c in range(_TILE_B):
                    vb = load(t.rows_b[c], word)
                    for r in range(_TILE_A):
                        bits = builder.call(ctpop, [builder.xor(va[r], vb)])  # 32 byte counts, each <= 8
                        slot = acc[r * _TILE_B + c]
                        builder.store(builder.add(builder.load(slot), bits), slot)
            # once per chunk and pair: widen the 32 byte counts to 16 bits and add them up
            for slot, tot in zip(acc, total):
                part = builder.zext(builder.call(hsum, [builder.zext(builder.load(slot), shorts32)]), i64)
                builder.store(builder.add(builder.load(tot), part), tot)
        return [builder.load(x) for x in total]

    #: ``_xor_popcount_tile(a, b, i0, j0)``: for r < _TILE_A, c < _TILE_B, popcount(a[i0 + r] ^ b[j0 + c]),
    #: a tuple, row of a major. ``a`` and ``b`` are C-contiguous with a multiple of 4 words per row; the
    #: rows must exist.
    _xor_popcount_tile = tile_intrinsic("_xor_popcount_tile", tile_a=_TILE_A, tile_b=_TILE_B, result="int64",
                                        vector_elems=_VEC_WORDS, body=_xor_popcount_body)

else:  # numba missing or NUMBA_DISABLE_JIT=1: the kernel below runs as Python

    def _xor_popcount_tile(a, b, i0, j0):
        """Python version of the intrinsic above (same counts, same order)."""
        return tuple(int(np.bitwise_count(a[i0 + r] ^ b[j0 + c]).sum()) for r in range(_TILE_A) for c in range(_TILE_B))


@njit
def _pad_rows_words(x, rows):
    """``x`` with zero rows and zero words appended up to multiples of ``rows`` and of 4 words.

    Zero words in both operands XOR to 0 and add nothing to a popcount; the results for padded
    rows are never written. Returns ``x`` itself when nothing needs padding.
    """
    m, w = x.shape
    mp, wp = -(-m // rows) * rows, -(-w // _VEC_WORDS) * _VEC_WORDS
    if mp == m and wp == w:
        return x
    out = np.zeros((mp, wp), dtype=np.uint64)
    out[:m, :w] = x
    return out


@njit(parallel=True)
def _binary_matmul_nb(a, b, n, out):
    """Fill ``out[i, j] = n - 2 popcount(a[i] ^ b[j])``.

    Blocked for the cache: b is cut into blocks of rows that fit in L2; for each block, tiles of
    _TILE_A rows of a run in parallel, each meeting _TILE_B rows of b at a time through
    :func:`_xor_popcount_tile` (vectorised popcount, see the comment above it).
    """
    m, nb = a.shape[0], b.shape[0]
    if m == 0 or nb == 0:
        return
    a = _pad_rows_words(a, _TILE_A)
    b = _pad_rows_words(b, _TILE_B)
    rows_per_block = max(_TILE_B, _BLOCK_BYTES // max(1, 8 * a.shape[1]) // _TILE_B * _TILE_B)
    for j0 in range(0, b.shape[0], rows_per_block):
        j1 = min(j0 + rows_per_block, b.shape[0])
        for t in prange(a.shape[0] // _TILE_A):
            i = _TILE_A * t
            for j in range(j0, j1, _TILE_B):
                s = _xor_popcount_tile(a, b, i, j)
                for r in range(_TILE_A):
                    for c in range(_TILE_B):
                        if i + r < m and j + c < nb:
                            out[i + r, j + c] = n - 2 * s[r * _TILE_B + c]
