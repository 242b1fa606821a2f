r"""Integer-arithmetic-only inference: fixed-point multipliers, int8 GEMM, requantization.

Jacob et al. (2018) run a quantized network with integer operations only: every tensor is
stored as integer codes :math:`q` with :math:`r = S (q - Z)` (Eq. 1), and a layer
:math:`r_3 = r_1 r_2` (a matrix product) becomes

.. math::

    q_3^{(i,k)} = Z_3 + M \sum_{j=1}^{N} \big(q_1^{(i,j)} - Z_1\big)\big(q_2^{(j,k)} - Z_2\big),
    \qquad M = \frac{S_1 S_2}{S_3},

where the real multiplier :math:`M \in (0, 1)` is written as :math:`M = 2^{-n} M_0` with
:math:`M_0 \in [0.5, 1)` stored as a Q31 int32 (Eqs. 5-6): the product becomes an int32
"rounding doubling high multiply" followed by a rounding right shift, the two fixed-point
primitives of gemmlowp (:func:`saturating_rounding_doubling_high_mul`,
:func:`rounding_divide_by_pot`). The sum expands into an int8 x int8 -> int32 matrix product
plus zero-point corrections (Eqs. 7-8, :func:`quantized_matmul`); the bias is added to the
int32 accumulator at scale :math:`S_1 S_2` with zero point 0, and a fused ReLU / ReLU6 is a
clamp of the output codes (Sec. 2.4).

This module provides those pieces and puts them together into :func:`integer_forward`, the
integer-only forward pass of :func:`qref.data.reference_mlp`, and :func:`simulated_forward`,
the same model in floating point with fake quantization at the same points (Sec. 3), so the
two can be held equal code for code (within one code: the rounding of the fixed-point
multiplier and the double rounding of requantization differ from the float rounding at
near-ties).

:func:`integer_cnn` does the same for a trained convolutional network
(:func:`qref.nn.small_cnn`): batch norms folded into the convolutions, weights per output
channel, convolutions as int8 GEMMs of im2col patches (padded with the input zero point),
max pooling on the codes; :class:`IntegerCNN` has the integer ``forward`` and its fake-quantized
``simulate``, held within one code of each other at every layer output.

**Activations are int8 here.** Jacob et al. store activations as uint8; here they are
asymmetric *int8* codes (the same quantizer with every code and the zero point shifted by
-128), so one int8 x int8 kernel serves both operands. Weights are symmetric int8 with zero
point 0 (then the :math:`Z_2` terms of Eq. 7 vanish).

**Arithmetic conventions.** Integer inputs are taken as int32 values (the functions reject
floats); intermediate products are computed in int64, as in gemmlowp, and the results are
int32. :func:`int8_gemm` accumulates in int32, exact as long as
:math:`K \cdot 2^{14} < 2^{31}`, i.e. for inner dimensions :math:`K \le 131071`.

References
----------
Jacob, B., Kligys, S., Chen, B., Zhu, M., Tang, M., Howard, A., Adam, H., Kalenichenko, D.
(2018). Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference. CVPR 2018, 2704–2713. arXiv:1712.05877.

gemmlowp: a small self-contained low-precision GEMM library (Google), ``fixedpoint/fixedpoint.h``
(``SaturatingRoundingDoublingHighMul``, ``RoundingDivideByPOT``). The functions here are
written from the definitions above, vectorised with numpy, not translated from its code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import uniform as _uniform
from ._numba import USE_NUMBA, njit, prange, tile_intrinsic
from ._validation import as_float_array, as_int_array, check_bool, check_int, check_real

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "HAVE_MADD_KERNEL",
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "requantize",
    "int8_gemm",
    "quantized_matmul",
    "quantize_bias",
    "fold_batch_norm",
    "IntegerMLP",
    "integer_mlp",
    "integer_forward",
    "simulated_forward",
    "IntegerLayer",
    "IntegerCNN",
    "integer_cnn",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
MAX_GEMM_K = (2**31 - 1) // 2**14  #: largest inner dimension whose int8 x int8 sum cannot overflow int32


# ---- the fixed-point multiplier -----------------------------------------------------------

def quantize_multiplier(M):
    r"""A real multiplier :math:`M \in (0, 1)` as a Q31 integer and a right shift.

    .. math::

        M = 2^{-n} M_0,\quad M_0 \in [\tfrac12, 1),\qquad
        m_0 = \mathrm{round}(2^{31} M_0) \in [2^{30}, 2^{31} - 1]

    (Jacob et al. 2018, Eqs. 5-6), so that :math:`M \approx m_0\, 2^{-31}\, 2^{-n}` with a
    relative error at most :math:`2^{-31}`. When :math:`M_0` rounds up to :math:`2^{31}`,
    it becomes :math:`2^{30}` with one shift less; for :math:`M` so close to 1 that the
    shift would become negative, :math:`m_0` saturates to :math:`2^{31} - 1` (relative error
    still below :math:`2^{-30}`).

    Parameters
    ----------
    M : float in (0, 1)
        The real multiplier, e.g. :math:`S_1 S_2 / S_3`. Values :math:`\ge 1` (which would need
        a left shift) are refused: with min-max ranges they do not occur in practice.

    Returns
    -------
    multiplier : int
        :math:`m_0`, a Python int in :math:`[2^{30}, 2^{31} - 1]` (fits an int32).
    shift : int
        The right shift :math:`n \ge 0`.

    Raises
    ------
    TypeError
        If ``M`` is not a real number.
    ValueError
        If ``M`` is not in (0, 1) or is so small (:math:`< 2^{-62}`) that the shift exceeds 62.

    Examples
    --------
    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    >>> m0, n = quantize_multiplier(0.0123)
    >>> m0, n, abs(m0 * 2.0**-31 * 2.0**-n - 0.0123) < 1e-11
    (1690499128, 6, True)
    """
    M = check_real(M, "M")
    if not 0.0 < M < 1.0:
        raise ValueError(f"M must be a real multiplier in (0, 1), got {M!r}")
    frac, exp = math.frexp(M)  # M = frac * 2**exp, frac in [0.5, 1), exp <= 0
    shift = -exp
    m0 = round(frac * 2**31)
    if m0 == 2**31:  # frac rounded up to 1.0
        if shift == 0:
            m0 = INT32_MAX  # would need a left shift: saturate instead
        else:
            m0, shift = 2**30, shift - 1
    if shift > 62:
        raise ValueError(f"M must be >= 2**-62 (a right shift of at most 62), got {M!r}")
    return int(m0), int(shift)


def _as_int32_values(x, name):
    """``x`` as an int64 array holding int32 values (rejecting floats and out-of-range values)."""
    arr = as_int_array(x, name)
    if arr.dtype.itemsize > 4 or arr.dtype == np.uint32:
        if arr.size and (arr.min() < INT32_MIN or arr.max() > INT32_MAX):
            raise ValueError(f"{name} must hold int32 values in [{INT32_MIN}, {INT32_MAX}], "
                             f"got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def saturating_rounding_doubling_high_mul(a, b):
    r"""gemmlowp's ``SaturatingRoundingDoublingHighMul``: the high 32 bits of :math:`2ab`, rounded.

    .. math::

        \mathrm{SRDHM}(a, b) = \mathrm{trunc}\!\left(\frac{a b + \nu}{2^{31}}\right),
        \qquad \nu = \begin{cases} 2^{30} & ab \ge 0\\ 1 - 2^{30} & ab < 0\end{cases}

    (division truncating toward zero, as C's ``/``). Despite the symmetric-looking nudge this is
    :math:`\lfloor (ab + 2^{30}) / 2^{31} \rfloor`: :math:`ab / 2^{31}` rounded to nearest with
    ties toward :math:`+\infty` (1.5 -> 2 but -1.5 -> -1; the negative nudge is one short of
    :math:`-2^{30}`). The one product that overflows int32,
    :math:`a = b = -2^{31}` (exact result :math:`2^{31}`), saturates to :math:`2^{31} - 1`.
    With :math:`b = m_0` from :func:`quantize_multiplier` this multiplies :math:`a` by
    :math:`m_0 2^{-31} \approx M_0` (Jacob et al. 2018, Sec. 2.2).

    Parameters
    ----------
    a, b : array_like of int (int32 values), broadcastable

    Returns
    -------
    ndarray of int32, the broadcast shape

    Raises
    ------
    TypeError
        If an input is not an integer array.
    ValueError
        If an input holds values outside the int32 range.

    Examples
    --------
    >>> saturating_rounding_doubling_high_mul([3, -3, 5, 1 << 30], 1 << 30)   # 1.5, -1.5, 2.5, 2**29
    array([        2,        -1,         3, 536870912], dtype=int32)
    >>> saturating_rounding_doubling_high_mul(-2**31, -2**31)
    array(2147483647, dtype=int32)
    """
    a64 = _as_int32_values(a, "a")
    b64 = _as_int32_values(b, "b")
    ab = a64 * b64  # |ab| <= 2**62: exact in int64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    v = ab + nudge
    q = np.abs(v) >> 31  # truncation toward zero ...
    q = np.where(v < 0, -q, q)  # ... with the sign of v
    return np.asarray(np.minimum(q, INT32_MAX), dtype=np.int32)  # only a == b == INT32_MIN reaches 2**31


def rounding_divide_by_pot(x, exponent):
    r"""gemmlowp's ``RoundingDivideByPOT``: :math:`x / 2^{e}` rounded to nearest, ties away from zero.

    .. math::

        \mathrm{RDBPOT}(x, e) = \lfloor x / 2^e \rfloor + [\,r > t\,],\qquad
        r = x \bmod 2^e,\quad t = \lfloor (2^e - 1)/2 \rfloor + [\,x < 0\,]

    (an arithmetic shift plus a correction computed from the remainder; the rounding right
    shift of Jacob et al. 2018, Sec. 2.2).

    Parameters
    ----------
    x : array_like of int (int32 values)
    exponent : int or array_like of int in [0, 31]
        Broadcast against ``x`` (one shift per output channel, for example).

    Returns
    -------
    ndarray of int32, the broadcast shape

    Raises
    ------
    TypeError
        If an input is not an integer.
    ValueError
        If ``x`` holds values outside the int32 range or an exponent is outside [0, 31].

    Examples
    --------
    >>> rounding_divide_by_pot([5, 6, 7, -5, -6, -7], 2)   # 1.25, 1.5, 1.75 and negatives
    array([ 1,  2,  2, -1, -2, -2], dtype=int32)
    """
    x64 = _as_int32_values(x, "x")
    e = as_int_array(exponent, "exponent").astype(np.int64)
    if e.size and (e.min() < 0 or e.max() > 31):
        raise ValueError(f"exponent must be in [0, 31], got values in [{e.min()}, {e.max()}]")
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return np.asarray((x64 >> e) + (remainder > threshold), dtype=np.int32)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    r"""Fixed-point :math:`x \cdot M` for :math:`M = m_0 2^{-31} 2^{-n}`: SRDHM, then a rounding shift.

    .. math:: \mathrm{RDBPOT}\big(\mathrm{SRDHM}(x, m_0),\ n\big)

    For shifts above 31 the result is 0 for every int32 ``x`` (``|SRDHM| <= 2**31``), but the
    shift is applied in two steps so no exponent leaves [0, 31].

    Parameters
    ----------
    x : array_like of int (int32 values)
    multiplier, shift : int or array_like of int
        From :func:`quantize_multiplier` (arrays broadcast against ``x``: per channel).

    Returns
    -------
    ndarray of int32

    Examples
    --------
    >>> m0, n = quantize_multiplier(0.1)
    >>> multiply_by_quantized_multiplier([100, 15, -15, 1000], m0, n)
    array([ 10,   2,  -2, 100], dtype=int32)
    """
    y = saturating_rounding_doubling_high_mul(x, multiplier)
    s = as_int_array(shift, "shift").astype(np.int64)
    if s.size and (s.min() < 0 or s.max() > 62):
        raise ValueError(f"shift must be in [0, 62], got values in [{s.min()}, {s.max()}]")
    first = np.minimum(s, 31)
    y = rounding_divide_by_pot(y, first)
    if (s > 31).any():
        y = rounding_divide_by_pot(y, s - first)
    return y


def requantize(acc, multiplier, shift, zero_point_out, qmin, qmax):
    r"""int32 accumulators to output codes: :math:`q_3 = \mathrm{clip}(Z_3 + M\,\mathrm{acc},\ q_{\min}, q_{\max})`.

    .. math::

        q_3 = \mathrm{clip}\Big(Z_3 + \mathrm{RDBPOT}\big(\mathrm{SRDHM}(\mathrm{acc}, m_0), n\big),
        \ q_{\min},\ q_{\max}\Big)

    (Jacob et al. 2018, Sec. 2.2 with :math:`M` from Eqs. 5-6, and Sec. 2.4). A fused
    activation is a clamp of the output codes: ReLU is ``qmin = max(qmin, Z_3)`` and ReLU6 also
    ``qmax = min(qmax, Z_3 + round(6 / S_3))``.

    Parameters
    ----------
    acc : array_like of int (int32 values), any shape
        The accumulators :math:`\sum_j (q_1 - Z_1)(q_2 - Z_2)` plus the int32 bias.
    multiplier, shift : int or array_like of int
        From :func:`quantize_multiplier`; arrays broadcast against ``acc`` (per channel along
        the last axis, for example).
    zero_point_out : int
        :math:`Z_3`.
    qmin, qmax : int
        The output code range, after the fused activation's clamp.

    Returns
    -------
    ndarray of int32, shape of ``acc`` (values in ``[qmin, qmax]``; cast to the code dtype)

    Raises
    ------
    ValueError
        If ``qmin > qmax``.

    Examples
    --------
    >>> m0, n = quantize_multiplier(0.01)
    >>> requantize([-3000, 0, 1234, 99999], m0, n, -128, -128, 127)   # 0.01 * acc - 128
    array([-128, -128, -116,  127], dtype=int32)
    """
    z = check_int(zero_point_out, "zero_point_out")
    qmin, qmax = check_int(qmin, "qmin"), check_int(qmax, "qmax")
    if qmin > qmax:
        raise ValueError(f"qmin must be <= qmax, got qmin={qmin} > qmax={qmax}")
    y = multiply_by_quantized_multiplier(acc, multiplier, shift).astype(np.int64) + z
    return np.asarray(np.clip(y, qmin, qmax), dtype=np.int32)


# ---- int8 x int8 -> int32 matrix product ------------------------------------------------

def _check_int8_matrix(x, name):
    arr = np.asarray(x)
    if arr.dtype != np.int8:
        raise TypeError(f"{name} must be an int8 array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-d, got shape {arr.shape}")
    return arr


def int8_gemm(a, b):
    r"""The int8 matrix product :math:`C = A B` with int32 accumulation.

    .. math:: C_{ik} = \sum_{j=1}^{K} A_{ij} B_{jk} \quad (\text{in int32})

    the core of Jacob et al. (2018), Sec. 2.3 (their :math:`\sum_j q_1^{(i,j)} q_2^{(j,k)}` in
    Eq. 7). Exact for :math:`K \le 131071` (each product is at most :math:`2^{14}` in absolute
    value), which is checked. With numba, a compiled kernel runs it (rows in parallel, tiles
    of 4 x 2 outputs held in registers, columns of :math:`B` in blocks); on an AVX2 host
    (``HAVE_MADD_KERNEL``) its inner product uses VPMADDWD on operands widened to int16 (16
    multiply-adds per instruction), otherwise LLVM's own vectorization of the same loop.
    Without numba (or for small products) the numpy twin runs, an int32 ``matmul`` of the
    widened arrays. All three give the same int32 result.

    Parameters
    ----------
    a : array of int8, shape (M, K)
    b : array of int8, shape (K, N)

    Returns
    -------
    ndarray of int32, shape (M, N)

    Raises
    ------
    TypeError
        If an input is not int8.
    ValueError
        If an input is not 2-d, the inner dimensions differ, or K > 131071.

    Examples
    --------
    >>> a = np.array([[127, -128], [1, 2]], dtype=np.int8)
    >>> b = np.array([[127, 0], [-128, 1]], dtype=np.int8)
    >>> int8_gemm(a, b)
    array([[32513,  -128],
           [ -129,     2]], dtype=int32)
    """
    a = _check_int8_matrix(a, "a")
    b = _check_int8_matrix(b, "b")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a and b must have matching inner dimensions, got shapes {a.shape} and {b.shape}")
    if a.shape[1] > MAX_GEMM_K:
        raise ValueError(f"the inner dimension must be <= {MAX_GEMM_K} for exact int32 accumulation, got {a.shape[1]}")
    m, k = a.shape
    n = b.shape[1]
    if USE_NUMBA and m * n * k >= _NUMBA_MIN_MACS and m and n:
        out = np.empty((m, n), dtype=np.int32)
        _int8_gemm_nb(np.ascontiguousarray(a), b.T, out)  # the kernels pack (or copy) b^T themselves
        return out
    return _int8_gemm_np(a, b)


def _int8_gemm_np(a, b):
    """The numpy twin: widen to int32 and multiply (numpy's integer matmul accumulates in int32)."""
    return np.matmul(a.astype(np.int32), b.astype(np.int32))


_NUMBA_MIN_MACS = 1 << 16  #: below this many multiply-adds the numpy twin is as fast
_I32 = np.int32
_COL_BLOCK = 256  #: columns of B (rows of B^T, 256 x K bytes) reused from cache by every row tile


@njit(parallel=True)
def _int8_gemm_tiles_nb(a, bt, out):  # pragma: no cover - compiled
    """Fill ``out[i, k] = sum_j a[i, j] * bt[k, j]`` in int32 (the portable kernel).

    ``bt`` is B transposed (contiguous rows), so every output is a dot product of two
    contiguous int8 rows. For each block of rows of ``bt``, tiles of 4 rows of ``a`` run in
    parallel and meet 2 rows of ``bt`` at a time: every loaded value feeds 2 or 4 products
    and the 8 int32 sums stay in registers (LLVM vectorizes the j loop).

    Every sum is cast back with ``_I32(...)``: numba types ``int32 + int32`` as int64, which
    would make the accumulators int64 and halve the SIMD width (measured 1.6x slower).
    Products of int8 values are below 2**14, so no cast loses anything.
    """
    m, kk = a.shape
    n = bt.shape[0]
    for c0 in range(0, n, _COL_BLOCK):
        c1 = min(c0 + _COL_BLOCK, n)
        for t in prange((m + 3) // 4):
            i0 = 4 * t
            # the last tile repeats its last row where m is not a multiple of 4 (written once below)
            r0, r1, r2, r3 = a[i0], a[min(i0 + 1, m - 1)], a[min(i0 + 2, m - 1)], a[min(i0 + 3, m - 1)]
            for c in range(c0, c1, 2):
                cc = min(c + 1, c1 - 1)
                y0r, y1r = bt[c], bt[cc]
                s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = _I32(0)  # s<row of a><row of bt>
                for j in range(kk):
                    y0, y1 = _I32(y0r[j]), _I32(y1r[j])
                    x = _I32(r0[j])
                    s00 = _I32(s00 + x * y0)
                    s01 = _I32(s01 + x * y1)
                    x = _I32(r1[j])
                    s10 = _I32(s10 + x * y0)
                    s11 = _I32(s11 + x * y1)
                    x = _I32(r2[j])
                    s20 = _I32(s20 + x * y0)
                    s21 = _I32(s21 + x * y1)
                    x = _I32(r3[j])
                    s30 = _I32(s30 + x * y0)
                    s31 = _I32(s31 + x * y1)
                out[i0, c], out[i0, cc] = s00, s01
                if i0 + 1 < m:
                    out[i0 + 1, c], out[i0 + 1, cc] = s10, s11
                if i0 + 2 < m:
                    out[i0 + 2, c], out[i0 + 2, cc] = s20, s21
                if i0 + 3 < m:
                    out[i0 + 3, c], out[i0 + 3, cc] = s30, s31


# The fast kernel on AVX2. The loop above leaves the instruction choice to LLVM, which widens
# to int32 and multiplies 8 lanes at a time (vpmulld). AVX2's VPMADDWD multiplies 16 int16 pairs
# and adds adjacent products into 8 int32 lanes: twice the multiply-adds per instruction, and
# exact here (int8 products are at most 2**14, a pair at most 2**15). We widen both operands to
# int16 once (zero-padded to a multiple of 16 columns and to whole tiles: zeros add nothing) and
# ask for ``llvm.x86.avx2.pmadd.wd`` from an ``intrinsic``, as qref.bitops does for popcounts.
# A tile of _MADD_A rows of a meets _MADD_B rows of b^T: each 32-byte load feeds 2 or 4
# VPMADDWDs, the 8 vector accumulators stay in registers, and each is summed across its lanes
# once at the end.

_MADD_A, _MADD_B = 4, 2  #: register tile (rows of a x rows of b^T)
_MADD_VEC = 16  #: int16 values per 256-bit vector


def _host_has_avx2():
    try:
        import numba
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("avx2")) and not numba.config.CPU_NAME
    except Exception:  # pragma: no cover - no llvmlite or an unknown host
        return False


HAVE_MADD_KERNEL = USE_NUMBA and _host_has_avx2()  #: the VPMADDWD kernel is used (numba on an AVX2 host)

if HAVE_MADD_KERNEL:  # pragma: no cover - compiled

    def _madd_body(t):
        """LLVM IR of :func:`_madd_tile` (``t``: a :class:`qref._numba.TileCodegen`)."""
        ir, cgutils, builder, const = t.ir, t.cgutils, t.builder, t.const
        count = _MADD_A * _MADD_B
        i16, i32 = ir.IntType(16), ir.IntType(32)
        v16, v8 = ir.VectorType(i16, _MADD_VEC), ir.VectorType(i32, _MADD_VEC // 2)
        madd = t.function("llvm.x86.avx2.pmadd.wd", v8, [v16, v16])
        hsum = t.function("llvm.vector.reduce.add.v8i32", i32, [v8])
        acc = [cgutils.alloca_once_value(builder, ir.Constant(v8, None)) for _ in range(count)]

        with cgutils.for_range(builder, t.nvec) as loop:
            offset = builder.mul(loop.index, const(_MADD_VEC))
            va = [t.load(p, offset, v16, align=2) for p in t.rows_a]  # loaded once, used _MADD_B times
            for c in range(_MADD_B):
                vb = t.load(t.rows_b[c], offset, v16, align=2)
                for r in range(_MADD_A):
                    slot = acc[r * _MADD_B + c]  # 8 int32 partial sums
                    builder.store(builder.add(builder.load(slot), builder.call(madd, [va[r], vb])), slot)
        return [builder.call(hsum, [builder.load(slot)]) for slot in acc]

    #: ``_madd_tile(a, b, i0, j0)``: for r < _MADD_A, c < _MADD_B, sum_j a[i0 + r, j] * b[j0 + c, j] in int32,
    #: a tuple, row of a major. ``a`` and ``b`` are C-contiguous int16 with the same multiple of 16 columns;
    #: the rows must exist.
    _madd_tile = tile_intrinsic("_madd_tile", tile_a=_MADD_A, tile_b=_MADD_B, result="int32",
                                vector_elems=_MADD_VEC, body=_madd_body)

    _MADD_CHUNK = 8  #: row tiles (32 rows of a) per parallel work item

    @njit(parallel=True)
    def _int8_gemm_madd_nb(a16, bt16, out):
        """``out[i, k] = sum_j a16[i, j] * bt16[k, j]`` by VPMADDWD tiles; shapes padded to whole tiles.

        One parallel region: each work item, a chunk of row tiles, walks all blocks of
        columns itself. (With the column blocks outside ``prange`` there was one region, and
        one wait for the slower thread, per block. On the 1024^3 product that version took
        30.6 ms against 23.7 ms (best of 30, 2 threads, machine under load) and about 19 ms
        against 17 ms on one thread.)
        """
        m, n = a16.shape[0], bt16.shape[0]
        tiles = m // _MADD_A
        for p in prange(-(-tiles // _MADD_CHUNK)):
            t0 = p * _MADD_CHUNK
            t1 = min(t0 + _MADD_CHUNK, tiles)
            for c0 in range(0, n, _COL_BLOCK):
                c1 = min(c0 + _COL_BLOCK, n)
                for t in range(t0, t1):
                    i0 = _MADD_A * t
                    for c in range(c0, c1, _MADD_B):
                        s = _madd_tile(a16, bt16, i0, c)
                        for r in range(_MADD_A):
                            for d in range(_MADD_B):
                                out[i0 + r, c + d] = s[r * _MADD_B + d]

    _PACK_BLOCK = 32  #: square blocks of the transposing copy (a 32 x 32 block of b stays in L1)

    @njit
    def _pack_int16_nb(bt, bt16):
        """Copy ``bt`` (N, K), any strides (e.g. the view ``b.T``), into the top left of int16 ``bt16``.

        Transposing and widening in one pass, in square blocks so the strided reads of a
        transposed view reuse their cache lines. On a 1024^3 product numpy's two copies
        (``ascontiguousarray(b.T)``, then a widening copy) took about 1.9 ms, this one about
        1.1 ms. It stays serial on purpose: on a shared 2-core machine every extra parallel
        region waits for the slower thread, and a parallel version had a worse median time.
        """
        n, k = bt.shape
        for c0 in range(0, n, _PACK_BLOCK):
            c1 = min(c0 + _PACK_BLOCK, n)
            for j0 in range(0, k, _PACK_BLOCK):
                j1 = min(j0 + _PACK_BLOCK, k)
                for c in range(c0, c1):
                    for j in range(j0, j1):
                        bt16[c, j] = bt[c, j]


def _int8_gemm_madd(a, bt, out):
    """Widen and zero-pad ``a`` (M, K) and ``bt`` (N, K) to int16 tiles, run the VPMADDWD kernel into ``out``."""
    m, k = a.shape
    n = bt.shape[0]
    kp = -(-k // _MADD_VEC) * _MADD_VEC
    a16 = np.zeros((-(-m // _MADD_A) * _MADD_A, kp), dtype=np.int16)
    bt16 = np.zeros((-(-n // _MADD_B) * _MADD_B, kp), dtype=np.int16)
    a16[:m, :k] = a  # contiguous rows: numpy's widening copy is already fast
    _pack_int16_nb(bt, bt16)
    if a16.shape[0] == m and bt16.shape[0] == n and out.flags.c_contiguous:
        _int8_gemm_madd_nb(a16, bt16, out)  # no padded rows: write in place
        return
    full = np.empty((a16.shape[0], bt16.shape[0]), dtype=np.int32)
    _int8_gemm_madd_nb(a16, bt16, full)
    out[...] = full[:m, :n]


def _int8_gemm_nb(a, bt, out):
    """Fill ``out[i, k] = sum_j a[i, j] * bt[k, j]`` in int32: the VPMADDWD kernel on AVX2, else the portable one."""
    if HAVE_MADD_KERNEL and a.shape[0] and bt.shape[0]:
        _int8_gemm_madd(a, bt, out)
    else:
        _int8_gemm_tiles_nb(a, np.ascontiguousarray(bt), out)


def quantized_matmul(q1, z1, q2, z2, *, bias=None):
    r"""The int32 accumulators :math:`\sum_j (q_1^{(i,j)} - Z_1)(q_2^{(j,k)} - Z_2) + b_k` from int8 codes.

    Expanded so the inner loop is the plain int8 product (Jacob et al. 2018, Eqs. 7-8):

    .. math::

        \sum_{j} (q_1^{(i,j)} - Z_1)(q_2^{(j,k)} - Z_2)
        = N Z_1 Z_2 - Z_1 a_2^{(k)} - Z_2 \bar a_1^{(i)} + \sum_j q_1^{(i,j)} q_2^{(j,k)},
        \qquad a_2^{(k)} = \sum_j q_2^{(j,k)},\quad \bar a_1^{(i)} = \sum_j q_1^{(i,j)}

    The bias :math:`b` is int32 at scale :math:`S_1 S_2` and zero point 0
    (:func:`quantize_bias`), added to the accumulator. All arithmetic is integer.

    Parameters
    ----------
    q1 : array of int8, shape (M, N)
    z1 : int in [-128, 127]
    q2 : array of int8, shape (N, K)
    z2 : int in [-128, 127]
    bias : array_like of int (int32 values), shape (K,), optional

    Returns
    -------
    ndarray of int32, shape (M, K)

    Examples
    --------
    >>> q1 = np.array([[10, -3]], dtype=np.int8); q2 = np.array([[2], [5]], dtype=np.int8)
    >>> quantized_matmul(q1, 1, q2, -1, bias=[7])      # (10-1)(2+1) + (-3-1)(5+1) + 7
    array([[10]], dtype=int32)
    """
    q1 = _check_int8_matrix(q1, "q1")
    q2 = _check_int8_matrix(q2, "q2")
    z1, z2 = check_int(z1, "z1"), check_int(z2, "z2")
    for z, nm in ((z1, "z1"), (z2, "z2")):
        if not -128 <= z <= 127:
            raise ValueError(f"{nm} must be an int8 zero point in [-128, 127], got {z}")
    acc = int8_gemm(q1, q2)
    n = q1.shape[1]
    corr = np.int32(n * z1 * z2)  # |N Z1 Z2| <= 131071 * 2**14 < 2**31
    if z1:
        corr = corr - np.int32(z1) * q2.sum(axis=0, dtype=np.int32)  # - Z1 a2^(k), one per column
    if bias is not None:
        b = _as_int32_values(bias, "bias")
        if b.shape != (q2.shape[1],):
            raise ValueError(f"bias must have shape ({q2.shape[1]},), got {b.shape}")
        corr = corr + b.astype(np.int32)
    acc = acc + corr  # broadcast over rows (int32, wraps like the hardware on overflow)
    if z2:
        acc = acc - np.int32(z2) * q1.sum(axis=1, dtype=np.int32)[:, None]  # - Z2 abar1^(i), one per row
    return acc.astype(np.int32, copy=False)


def quantize_bias(bias, input_scale, weight_scale):
    r"""A float bias as int32 codes at scale :math:`S_1 S_2` and zero point 0.

    .. math:: q_{\mathrm{bias}} = \mathrm{round}\big(b / (S_1 S_2)\big)

    (Jacob et al. 2018, Sec. 2.4: the bias is added to the int32 accumulator, so it shares its
    scale; rounding half to even).

    Parameters
    ----------
    bias : array_like of float
    input_scale, weight_scale : float > 0 or array broadcastable against ``bias`` (per channel)

    Returns
    -------
    ndarray of int32, shape of ``bias``

    Raises
    ------
    ValueError
        If a code does not fit in int32.

    Examples
    --------
    >>> quantize_bias(np.array([0.5, -0.01]), 0.01, 0.1)
    array([500, -10], dtype=int32)
    """
    b = as_float_array(bias, "bias").astype(np.float64)
    s = np.asarray(input_scale, dtype=np.float64) * np.asarray(weight_scale, dtype=np.float64)
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("input_scale and weight_scale must be finite and > 0")
    q = np.rint(b / s)
    if q.size and (q.min() < INT32_MIN or q.max() > INT32_MAX):
        raise ValueError(f"bias / (input_scale * weight_scale) must fit in int32, got values in [{q.min()}, {q.max()}]")
    return q.astype(np.int32)


# ---- batch-norm folding ------------------------------------------------------------------

def fold_batch_norm(weight, bias, gamma, beta, mean, var, *, eps=1e-5):
    r"""Fold a batch normalization that follows a linear layer into its weights and bias.

    For :math:`y = \gamma\,(W x + b - \mu)/\sqrt{\sigma^2 + \varepsilon} + \beta`, per output
    channel,

    .. math::

        W_{\mathrm{fold}} = \frac{\gamma}{\sqrt{\sigma^2 + \varepsilon}}\,W,\qquad
        b_{\mathrm{fold}} = \beta + \frac{\gamma\,(b - \mu)}{\sqrt{\sigma^2 + \varepsilon}}

    (Jacob et al. 2018, Sec. 3.2; with :math:`b = 0` this is their
    :math:`\beta - \gamma\mu/\sqrt{\sigma^2+\varepsilon}`). Quantize the *folded* weights: they
    are what the integer-only inference multiplies by.

    Parameters
    ----------
    weight : array_like of float, shape (out, ...)
        Output channels along axis 0 (``(out, in)`` for a linear layer, ``(out, in, kh, kw)``
        for a convolution).
    bias : array_like of float, shape (out,), or None (zero)
    gamma, beta, mean, var : array_like of float, shape (out,)
        Batch-norm scale, shift, and the running mean and variance (``var >= 0``).
    eps : float > 0

    Returns
    -------
    w_fold : ndarray, shape and dtype of ``weight``
    b_fold : ndarray, shape (out,), dtype of ``weight``

    Raises
    ------
    ValueError
        For mismatched shapes, a negative variance or a non-positive ``eps``.

    Examples
    --------
    >>> W = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> w, b = fold_batch_norm(W, None, gamma=[2.0, 1.0], beta=[0.0, 1.0], mean=[1.0, 0.0], var=[4.0, 1.0], eps=0.0)
    >>> w, b
    (array([[1., 2.],
           [3., 4.]]), array([-1.,  1.]))
    """
    w = as_float_array(weight, "weight", allow_0d=False)
    out = w.shape[0]
    vecs = {}
    for name, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        arr = as_float_array(np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind in "iu" else v, name)
        if arr.shape != (out,):
            raise ValueError(f"{name} must have shape ({out},) (one per output channel), got {arr.shape}")
        vecs[name] = arr.astype(np.float64)
    if bias is None:
        b = np.zeros(out)
    else:
        b = as_float_array(bias, "bias").astype(np.float64)
        if b.shape != (out,):
            raise ValueError(f"bias must have shape ({out},), got {b.shape}")
    eps = check_real(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if (vecs["var"] < 0).any():
        raise ValueError("var must be >= 0 everywhere")
    denom = np.sqrt(vecs["var"] + eps)
    if (denom == 0).any():
        raise ValueError("var + eps must be > 0 everywhere")
    k = vecs["gamma"] / denom  # per output channel
    w_fold = (w * k.reshape((out,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b_fold = (vecs["beta"] + k * (b - vecs["mean"])).astype(w.dtype)
    return w_fold, b_fold


# ---- an integer-only MLP ----------------------------------------------------------------

@dataclass(frozen=True)
class IntegerMLP:
    """An MLP quantized for integer-only inference (built by :func:`integer_mlp`).

    Layer ``l`` maps int8 input codes (``act_params[l]``) to int8 output codes
    (``act_params[l + 1]``); the last output is the logits.
    """

    act_params: tuple  #: QuantParams of each layer's input, then of the logits (int8, asymmetric, per tensor)
    weight_codes: tuple  #: int8 arrays, shape (out, in)
    weight_params: tuple  #: QuantParams (int8, symmetric, narrow range, zero point 0, per tensor)
    bias_codes: tuple  #: int32 arrays, shape (out,), scale S_in * S_w
    multipliers: tuple  #: (m0, shift) per layer, for M = S_in S_w / S_out
    relu: tuple  #: bool per layer: fused ReLU (clamp at the output zero point)


def integer_mlp(model, X_calib, *, bits=8):
    r"""Quantize a :class:`qref.data.MLP` for integer-only inference, min-max calibrated on ``X_calib``.

    Weights: per tensor, symmetric, narrow range (codes in [-127, 127], zero point 0).
    Activations (the input, every hidden layer's output after ReLU, and the logits): per tensor,
    asymmetric int8, ranges from the float model's activations on ``X_calib``
    (:func:`qref.uniform.params_from_data`). Biases: int32 at scale :math:`S_\mathrm{in} S_w`.
    Multipliers: :math:`M = S_\mathrm{in} S_w / S_\mathrm{out}` as Q31 + shift (Jacob et al.
    2018, Secs. 2.2-2.4).

    Parameters
    ----------
    model : qref.data.MLP
    X_calib : array_like of float, shape (n, in_features)
    bits : int in [2, 8]
        Bit width of weights and activations (codes stored in int8).

    Returns
    -------
    IntegerMLP

    Raises
    ------
    ValueError
        If a layer's multiplier is not in (0, 1).
    """
    bits = check_int(bits, "bits")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8] (codes stored in int8), got {bits}")
    X = as_float_array(X_calib, "X_calib", allow_empty=False, allow_0d=False)
    logits, acts = model.forward(X, return_activations=True)
    outs = list(acts) + [logits]
    act_params = tuple(_uniform.params_from_data(a, bits=bits, signed=True) for a in outs)
    wq, wp, bq, mult, relu = [], [], [], [], []
    n_layers = len(model.weights)
    for layer, (W, b) in enumerate(zip(model.weights, model.biases)):
        p_w = _uniform.params_from_data(W, bits=bits, symmetric=True, narrow_range=True)
        wq.append(_uniform.quantize(W, p_w))
        wp.append(p_w)
        s_in, s_w, s_out = (float(act_params[layer].scale), float(p_w.scale), float(act_params[layer + 1].scale))
        bq.append(quantize_bias(b, s_in, s_w))
        mult.append(quantize_multiplier(s_in * s_w / s_out))
        relu.append(layer < n_layers - 1)
    return IntegerMLP(act_params, tuple(wq), tuple(wp), tuple(bq), tuple(mult), tuple(relu))


def _check_imlp(imlp):
    if not isinstance(imlp, IntegerMLP):
        raise TypeError(f"imlp must be an IntegerMLP (from integer_mlp), got {type(imlp).__name__}")


def integer_forward(imlp, X, *, return_codes=False):
    r"""The integer-only forward pass: quantize the input, then int8 GEMMs and int32 requantization.

    Per layer (Jacob et al. 2018, Eqs. 5-8 and Sec. 2.4):

    .. math::

        \mathrm{acc} = \sum_j (q_\mathrm{in} - Z_\mathrm{in})\, q_w + q_\mathrm{bias},\qquad
        q_\mathrm{out} = \mathrm{clip}\big(Z_\mathrm{out} + \mathrm{RDBPOT}(\mathrm{SRDHM}(\mathrm{acc}, m_0), n),
        \ q_\mathrm{lo},\ q_\mathrm{max}\big)

    with :math:`q_\mathrm{lo} = \max(q_{\min}, Z_\mathrm{out})` for the fused ReLU of hidden
    layers. After the input is quantized, every operation is on integers.

    Parameters
    ----------
    imlp : IntegerMLP
    X : array_like of float, shape (n, in_features)
    return_codes : bool
        Also return the list of every layer's int8 input codes.

    Returns
    -------
    logit_codes : ndarray of int8, shape (n, n_classes)
        Real logits are ``dequantize(logit_codes, imlp.act_params[-1])``; the predicted class
        is their argmax.
    codes : list of ndarray of int8 (only with ``return_codes``)

    Examples
    --------
    >>> from qref.data import reference_mlp, load_digits
    >>> d = load_digits(); imlp = integer_mlp(reference_mlp(), d.X_train)
    >>> q = integer_forward(imlp, d.X_test)
    >>> q.dtype, float(np.mean(q.argmax(axis=1) == d.y_test)) > 0.96
    (dtype('int8'), True)
    """
    _check_imlp(imlp)
    return_codes = check_bool(return_codes, "return_codes")
    X = as_float_array(X, "X", allow_0d=False)
    if X.ndim != 2 or X.shape[1] != imlp.weight_codes[0].shape[1]:
        raise ValueError(f"X must have shape (n, {imlp.weight_codes[0].shape[1]}), got {X.shape}")
    q = _uniform.quantize(X, imlp.act_params[0]).astype(np.int8)  # the only float operation
    codes = [q]
    for layer, Wq in enumerate(imlp.weight_codes):
        p_in, p_out = imlp.act_params[layer], imlp.act_params[layer + 1]
        acc = quantized_matmul(q, int(p_in.zero_point), Wq.T, 0, bias=imlp.bias_codes[layer])
        m0, shift = imlp.multipliers[layer]
        z_out = int(p_out.zero_point)
        lo = max(p_out.qmin, z_out) if imlp.relu[layer] else p_out.qmin
        q = requantize(acc, m0, shift, z_out, lo, p_out.qmax).astype(np.int8)
        codes.append(q)
    return (q, codes[:-1]) if return_codes else q


def simulated_forward(imlp, X):
    r"""The float simulation of :func:`integer_forward`: fake quantization at the same points.

    The input is fake-quantized, each layer computes :math:`\hat W \hat a + \hat b` in float64
    with the fake-quantized weights and the dequantized int32 bias, then ReLU (hidden layers)
    and fake quantization with the output's parameters (Jacob et al. 2018, Sec. 3). Returns the
    fake-quantized logits; their codes ``rint(logits / S) + Z`` agree with
    :func:`integer_forward` within one code.

    Parameters
    ----------
    imlp : IntegerMLP
    X : array_like of float, shape (n, in_features)

    Returns
    -------
    ndarray of float64, shape (n, n_classes)
    """
    _check_imlp(imlp)
    X = as_float_array(X, "X", allow_0d=False)
    if X.ndim != 2 or X.shape[1] != imlp.weight_codes[0].shape[1]:
        raise ValueError(f"X must have shape (n, {imlp.weight_codes[0].shape[1]}), got {X.shape}")
    # the input in its own dtype, exactly as integer_forward quantizes it; then float64
    a = _uniform.fake_quantize(X, imlp.act_params[0]).astype(np.float64)
    for layer, Wq in enumerate(imlp.weight_codes):
        p_in, p_w, p_out = imlp.act_params[layer], imlp.weight_params[layer], imlp.act_params[layer + 1]
        W_hat = _uniform.dequantize(Wq, p_w, dtype=np.float64)
        b_hat = imlp.bias_codes[layer].astype(np.float64) * (float(p_in.scale) * float(p_w.scale))
        y = a @ W_hat.T + b_hat
        if imlp.relu[layer]:
            y = np.maximum(y, 0.0)
        a = _uniform.fake_quantize(y, p_out)
    return a


# ---- an integer-only convolutional network --------------------------------------------------
#
# The same scheme for a trained qref.nn Sequential of Conv2d [BatchNorm2d] [ReLU] [MaxPool2d]
# blocks, Flatten and Linear layers (qref.nn.small_cnn). Each weight layer, with the batch norm
# folded into it, its fused ReLU and its max pool, is one IntegerLayer: int8 codes in, int8
# codes out.

@dataclass(frozen=True)
class IntegerLayer:
    """One weight layer of an :class:`IntegerCNN`: int8 codes in, int8 codes out.

    A convolution (``kind="conv"``, by im2col) or a fully connected layer (``kind="linear"``,
    on the flattened input), with the following batch norm folded in, the requantization to the
    output's parameters, a fused ReLU (a clamp at the output zero point) and an optional
    ``pool x pool`` max pool on the output codes.
    """

    kind: str  #: "conv" or "linear"
    weight_codes: np.ndarray  #: int8, (out, in, k, k) or (out, in); symmetric, narrow range, zero point 0
    weight_params: object  #: QuantParams of the weights (per output channel: axis 0, or per tensor)
    bias_codes: np.ndarray  #: int32, (out,), at scale S_in * S_w (per channel)
    multiplier: np.ndarray  #: int64, (out,): m0 of M = S_in S_w / S_out per output channel (Q31)
    shift: np.ndarray  #: int64, (out,): the right shift n of M
    input_params: object  #: QuantParams of the input codes (int8, asymmetric, per tensor)
    output_params: object  #: QuantParams of the output codes (before the pool; max pool keeps them)
    relu: bool  #: fused ReLU
    pool: int  #: max-pool window (0: none)
    stride: int = 1
    padding: int = 0


def _im2col_codes(x, k, stride, padding, pad_value):
    """Patches of ``x`` (N, C, H, W) as rows ``[(n, i, j), (c, u, v)]``, padded with ``pad_value``.

    For integer codes the padding value is the input zero point: the code of the real 0 that
    zero padding adds (Jacob et al. 2018, Eq. 1).
    """
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, ho, wo = win.shape[:4]  # win[n, c, i, j, u, v]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k), ho, wo


def _max_pool(x, k):
    """Max over non-overlapping k x k windows of (N, C, H, W) (leftover rows/columns dropped).

    On codes this is exact: :math:`r = S(q - Z)` with :math:`S > 0` is increasing in
    :math:`q`, so the largest code is the code of the largest value.
    """
    n, c, h, w = x.shape
    ho, wo = h // k, w // k
    return x[:, :, :ho * k, :wo * k].reshape(n, c, ho, k, wo, k).max(axis=(3, 5))


def _layer_forward(layer, q):
    """The integer-only layer: int8 codes (N, C, H, W) or (N, F) -> int8 codes."""
    z_in = int(layer.input_params.zero_point)
    n, out = q.shape[0], layer.weight_codes.shape[0]
    w2 = layer.weight_codes.reshape(out, -1)  # [o][(c, u, v)]
    if layer.kind == "conv":
        k = layer.weight_codes.shape[-1]
        cols, ho, wo = _im2col_codes(q, k, layer.stride, layer.padding, np.int8(z_in))
    else:
        cols = q.reshape(n, -1)  # Flatten: (N, C*H*W), same order as qref.nn.Flatten
    acc = quantized_matmul(np.ascontiguousarray(cols), z_in, w2.T, 0, bias=layer.bias_codes)  # int32 (rows, out)
    p = layer.output_params
    z_out = int(p.zero_point)
    lo = max(p.qmin, z_out) if layer.relu else p.qmin  # the fused ReLU is a clamp
    y = requantize(acc, layer.multiplier, layer.shift, z_out, lo, p.qmax).astype(np.int8)
    if layer.kind == "conv":
        y = np.ascontiguousarray(y.reshape(n, ho, wo, out).transpose(0, 3, 1, 2))
    return _max_pool(y, layer.pool) if layer.pool else y


def _layer_simulate(layer, a):
    """The float64 fake-quantized twin of :func:`_layer_forward` (values on the input grid in, output grid out)."""
    n, out = a.shape[0], layer.weight_codes.shape[0]
    w_hat = _uniform.dequantize(layer.weight_codes, layer.weight_params, dtype=np.float64).reshape(out, -1)
    s_w = np.broadcast_to(np.asarray(layer.weight_params.scale, dtype=np.float64), (out,))
    b_hat = layer.bias_codes.astype(np.float64) * (float(layer.input_params.scale) * s_w)
    if layer.kind == "conv":
        k = layer.weight_codes.shape[-1]
        cols, ho, wo = _im2col_codes(a, k, layer.stride, layer.padding, 0.0)
    else:
        cols = a.reshape(n, -1)
    y = cols @ w_hat.T + b_hat
    if layer.relu:
        y = np.maximum(y, 0.0)
    y = _uniform.fake_quantize(y, layer.output_params)
    if layer.kind == "conv":
        y = y.reshape(n, ho, wo, out).transpose(0, 3, 1, 2)
    return _max_pool(y, layer.pool) if layer.pool else y


@dataclass(frozen=True)
class IntegerCNN:
    r"""A convolutional network quantized for integer-only inference (built by :func:`integer_cnn`).

    ``layers[l]`` maps int8 codes with ``layers[l].input_params`` to int8 codes with
    ``layers[l].output_params`` (the input of layer ``l + 1``); the last output is the logits.

    Methods
    -------
    forward(X, *, return_codes=False)
        The integer-only forward pass (Jacob et al. 2018, Eqs. 7-8 and Sec. 2.4).
    simulate(X, *, return_values=False)
        Its float simulation with fake quantization at the same points (Sec. 3).
    layer_forward(l, codes), layer_simulate(l, values)
        One layer of each, to compare them layer by layer on the same input.
    """

    layers: tuple  #: IntegerLayer per weight layer
    input_shape: tuple  #: (C, H, W) of one input image

    def _check_x(self, X):
        X = as_float_array(X, "X", allow_0d=False)
        if X.shape[1:] != self.input_shape:
            raise ValueError(f"X must have shape (n, {', '.join(map(str, self.input_shape))}), got {X.shape}")
        return X

    def _check_l(self, l):
        l = check_int(l, "l")
        if not 0 <= l < len(self.layers):
            raise ValueError(f"l must be a layer index in [0, {len(self.layers) - 1}], got {l}")
        return l

    def forward(self, X, *, return_codes=False):
        r"""Integer-only inference: quantize the input, then only integer operations.

        Per layer: im2col of the int8 codes (padded with the input zero point, the code of a
        real 0), the int8 GEMM with zero-point corrections and the int32 bias (Eqs. 7-8 of
        Jacob et al. 2018), requantization :math:`Z_3 + \mathrm{RDBPOT}(\mathrm{SRDHM}(\mathrm{acc}, m_0), n)`
        with one Q31 multiplier per output channel, the fused ReLU as a clamp, then the max
        pool on the codes.

        Parameters
        ----------
        X : array_like of float, shape (n, C, H, W) (``(n, features)`` for a model starting with Linear)
        return_codes : bool
            Also return the list of every layer's int8 output codes (after its pool).

        Returns
        -------
        logit_codes : ndarray of int8, shape (n, classes)
            Real logits: ``dequantize(logit_codes, layers[-1].output_params)``.
        codes : list of ndarray of int8 (only with ``return_codes``)
            ``codes[0]`` the input codes, ``codes[l + 1]`` the output of layer ``l``.
        """
        return_codes = check_bool(return_codes, "return_codes")
        X = self._check_x(X)
        q = _uniform.quantize(X, self.layers[0].input_params).astype(np.int8)  # the only float operation
        codes = [q]
        for layer in self.layers:
            q = _layer_forward(layer, q)
            codes.append(q)
        return (q, codes) if return_codes else q

    def simulate(self, X, *, return_values=False):
        r"""The float simulation of :meth:`forward`: fake quantization at the same points.

        The input is fake-quantized; each layer computes its convolution or product in
        float64 with the dequantized weights and bias, applies ReLU, fake-quantizes with the
        output parameters and max-pools (Jacob et al. 2018, Sec. 3). The codes
        ``rint(values / S) + Z`` agree with :meth:`forward` within one code on each layer
        given the same input (:meth:`layer_simulate`); chained, a one-code difference can
        move later layers too (tested: it does not on the digits).

        Parameters
        ----------
        X : array_like of float, shape (n, C, H, W)
        return_values : bool
            Also return every layer's fake-quantized output (after its pool).

        Returns
        -------
        logits : ndarray of float64, shape (n, classes)
        values : list of ndarray of float64 (only with ``return_values``), as ``codes`` of :meth:`forward`
        """
        return_values = check_bool(return_values, "return_values")
        X = self._check_x(X)
        a = _uniform.fake_quantize(X, self.layers[0].input_params).astype(np.float64)
        values = [a]
        for layer in self.layers:
            a = _layer_simulate(layer, a)
            values.append(a)
        return (a, values) if return_values else a

    def layer_forward(self, l, codes):
        """Layer ``l`` of :meth:`forward` on int8 input codes (shape of that layer's input); int8 codes out."""
        l = self._check_l(l)
        q = np.asarray(codes)
        if q.dtype != np.int8:
            raise TypeError(f"codes must be an int8 array, got dtype {q.dtype}")
        return _layer_forward(self.layers[l], q)

    def layer_simulate(self, l, values):
        """Layer ``l`` of :meth:`simulate` on float input values (on the input grid); float64 values out."""
        l = self._check_l(l)
        a = as_float_array(values, "values", allow_0d=False).astype(np.float64)
        return _layer_simulate(self.layers[l], a)

    def codes_of(self, l, values):
        """Codes ``rint(values / S) + Z`` of layer ``l``'s output values (``l = -1``: ... of the input)."""
        p = self.layers[0].input_params if l == -1 else self.layers[self._check_l(l)].output_params
        return (np.rint(np.asarray(values, np.float64) / float(p.scale)) + int(p.zero_point)).astype(np.int64)


def _parse_cnn(model):
    """Group a qref.nn.Sequential into weight layers: (layer, bn or None, relu, pool k or 0)."""
    from . import nn, qat  # deferred: intarith does not need the training code otherwise

    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a qref.nn.Sequential (e.g. qref.nn.small_cnn()), got {type(model).__name__}")
    layers, groups, i = list(model.layers), [], 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, nn.Flatten):
            i += 1
            continue
        if not isinstance(m, (nn.Conv2d, nn.Linear, qat.FoldedConv2dBN, qat.FoldedLinearBN)):
            raise TypeError(f"model.layers[{i}] ({type(m).__name__}) is not supported: expected Conv2d "
                            "[BatchNorm2d] [ReLU] [MaxPool2d] blocks (or FoldedConv2dBN [ReLU] [MaxPool2d]), "
                            "Flatten and Linear [BatchNorm1d] [ReLU] (or FoldedLinearBN [ReLU]) layers")
        if getattr(m, "weight_quantizer", None) is not None:
            raise ValueError(f"model.layers[{i}] has a weight_quantizer: "
                             "integer_cnn quantizes the float weights itself")
        conv = isinstance(m, (nn.Conv2d, qat.FoldedConv2dBN))
        bn_cls = nn.BatchNorm2d if conv else nn.BatchNorm1d
        bn, relu, pool, j = None, False, 0, i + 1
        if isinstance(m, (qat.FoldedConv2dBN, qat.FoldedLinearBN)):
            bn = m  # its own batch norm, folded with its running statistics
        elif j < len(layers) and isinstance(layers[j], bn_cls):
            bn, j = layers[j], j + 1
        if j < len(layers) and isinstance(layers[j], nn.ReLU):
            relu, j = True, j + 1
        if conv and j < len(layers) and isinstance(layers[j], nn.MaxPool2d):
            pool, j = layers[j].kernel_size, j + 1
        groups.append((m, bn, relu, pool, j))  # j: the index after the group
        i = j
    if not groups or not isinstance(groups[-1][0], nn.Linear) or groups[-1][2]:
        raise TypeError("model must end with a Linear layer without ReLU (the logits)")
    return groups


def integer_cnn(model, X_calib, *, bits=8, per_channel=True):
    r"""Quantize a trained :func:`qref.nn.small_cnn` (or a similar Sequential) for integer-only inference.

    Every batch norm is folded into the preceding convolution with its running statistics
    (:func:`fold_batch_norm`, Jacob et al. 2018, Sec. 3.2). Weights: symmetric, narrow range
    (codes in :math:`[-(2^{b-1}-1), 2^{b-1}-1]`, zero point 0), one scale per output channel
    (``per_channel=True``, as recommended for convolutions after folding by Krishnamoorthi
    2018, since folding gives each channel its own :math:`\gamma/\sigma`) or per tensor (as in
    Jacob et al.). Activations (the input, each weight layer's output after its ReLU, and the
    logits): asymmetric int8 per tensor, min-max ranges of the float model on ``X_calib``
    (:func:`qref.uniform.params_from_data`). Biases: int32 at scale :math:`S_\mathrm{in} S_{w,c}`
    (:func:`quantize_bias`). Multipliers: :math:`M_c = S_\mathrm{in} S_{w,c} / S_\mathrm{out}`
    as Q31 + shift per output channel (Eqs. 5-6, :func:`quantize_multiplier`).

    Supported layers: ``Conv2d [BatchNorm2d] [ReLU] [MaxPool2d]`` blocks, ``Flatten`` and
    ``Linear [BatchNorm1d] [ReLU]``, the last a ``Linear`` without ReLU. Max pooling is done
    on the codes (exact, since dequantization is increasing), so it needs no parameters.
    A :class:`qref.qat.FoldedConv2dBN` (or :class:`qref.qat.FoldedLinearBN`) stands for a
    convolution (linear layer) with its batch norm: it is folded with its running statistics,
    so with ``per_channel=False`` and the layer's ``bits`` the weight codes are those of the
    fake-quantized weights it used in evaluation mode (folded in float64 here, in the
    layer's dtype there: a code could differ only at a rounding tie). The activation ranges
    still come from ``X_calib`` (min-max), not from training.

    Parameters
    ----------
    model : qref.nn.Sequential
        Trained, float weights (no ``weight_quantizer``). Not modified (its training mode and
        caches are left as they were).
    X_calib : array_like of float, shape (n, C, H, W)
        Calibration inputs (e.g. the training images); ``(n, features)`` for a model that
        starts with a Linear layer (e.g. :func:`qref.nn.mlp`).
    bits : int in [2, 8]
        Bit width of weights and activations (codes stored in int8).
    per_channel : bool
        One weight scale per output channel (default) or one per tensor.

    Returns
    -------
    IntegerCNN

    Raises
    ------
    TypeError
        For a model that is not a supported Sequential, or non-float ``X_calib``.
    ValueError
        For bad ``bits``, ``X_calib`` or a multiplier outside (0, 1).

    References
    ----------
    Jacob et al. (2018), Secs. 2-3 (see the module docstring). Krishnamoorthi, R. (2018).
    Quantizing deep convolutional networks for efficient inference: a whitepaper.
    arXiv:1806.08342 (per-channel weight quantization).

    Examples
    --------
    >>> from qref import nn
    >>> from qref.data import load_digits
    >>> d = load_digits(); X = d.X_train.reshape(-1, 1, 8, 8)
    >>> net = nn.small_cnn(rng=0)
    >>> _ = nn.fit(net, X, d.y_train, epochs=1, optimizer=nn.Adam(net.parameters(), lr=1e-2), progress=False)
    >>> icnn = integer_cnn(net, X)
    >>> q = icnn.forward(d.X_test.reshape(-1, 1, 8, 8))
    >>> q.dtype, q.shape, [l.kind for l in icnn.layers]
    (dtype('int8'), (450, 10), ['conv', 'conv', 'linear'])
    """
    import copy

    bits = check_int(bits, "bits")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8] (codes stored in int8), got {bits}")
    per_channel = check_bool(per_channel, "per_channel")
    groups = _parse_cnn(model)
    X = as_float_array(X_calib, "X_calib", allow_empty=False, allow_0d=False)
    first = groups[0][0]
    if hasattr(first, "in_channels") and (X.ndim != 4 or X.shape[1] != first.in_channels):
        raise ValueError(f"X_calib must have shape (n, {first.in_channels}, H, W), got {X.shape}")
    if hasattr(first, "in_features") and (X.ndim != 2 or X.shape[1] != first.in_features):
        raise ValueError(f"X_calib must have shape (n, {first.in_features}), got {X.shape}")
    # calibration: the float model in eval mode (a copy, so the caller's model keeps its mode and caches)
    net = copy.deepcopy(model).eval()
    act = [_uniform.params_from_data(X, bits=bits, signed=True)]
    x, start, pre_pool = X, 0, []
    for m, bn, relu, pool, end in groups:
        for layer in net.layers[start:end - (1 if pool else 0)]:
            x = layer(x)
        pre_pool.append(x)  # where the requantization happens (the pool keeps the parameters)
        if pool:
            x = net.layers[end - 1](x)
        start = end
    act += [_uniform.params_from_data(y, bits=bits, signed=True) for y in pre_pool]
    out_layers = []
    for idx, (m, bn, relu, pool, _) in enumerate(groups):
        w = m.weight.data.astype(np.float64)
        b = None if getattr(m, "bias", None) is None else m.bias.data.astype(np.float64)
        if bn is m:  # FoldedConv2dBN / FoldedLinearBN: gamma and beta are the layer's own
            w, b = fold_batch_norm(w, None, m.gamma.data, m.beta.data, m.running_mean, m.running_var, eps=m.eps)
        elif bn is not None:
            w, b = fold_batch_norm(w, b, bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var, eps=bn.eps)
        if b is None:
            b = np.zeros(w.shape[0])
        p_w = _uniform.params_from_data(w, bits=bits, symmetric=True, narrow_range=True,
                                        axis=0 if per_channel else None)
        wq = _uniform.quantize(w, p_w).astype(np.int8)
        s_in, s_out = float(act[idx].scale), float(act[idx + 1].scale)
        s_w = np.broadcast_to(np.asarray(p_w.scale, dtype=np.float64), (w.shape[0],))
        bq = quantize_bias(b, s_in, s_w)
        mult = []
        for c, sw in enumerate(s_w):
            try:
                mult.append(quantize_multiplier(s_in * float(sw) / s_out))
            except ValueError as exc:
                raise ValueError(f"layer {idx}, output channel {c}: {exc}") from None
        m0, shift = (np.array(v, dtype=np.int64) for v in zip(*mult))
        conv = hasattr(m, "kernel_size")  # Conv2d or FoldedConv2dBN
        out_layers.append(IntegerLayer(
            kind="conv" if conv else "linear", weight_codes=wq, weight_params=p_w, bias_codes=bq,
            multiplier=m0, shift=shift, input_params=act[idx], output_params=act[idx + 1], relu=relu,
            pool=pool, stride=m.stride if conv else 1, padding=m.padding if conv else 0))
    return IntegerCNN(tuple(out_layers), tuple(X.shape[1:]))
