"""The VPMADDWD int8 GEMM kernel of qref.intarith, held bit-exact to the portable kernel and to int64.

On an AVX2 host with numba, ``int8_gemm`` runs the VPMADDWD kernel (int8 widened to int16,
16 multiply-adds per instruction); the portable tile kernel (LLVM's own vectorization) stays as
its readable twin. Both must give the exact product, including at the int32 limit.
"""

import numpy as np
import pytest

from qref import intarith as I

needs_madd = pytest.mark.skipif(not I.HAVE_MADD_KERNEL, reason="needs numba on an AVX2 host")

SHAPES = [(1, 1, 1), (3, 5, 2), (4, 16, 2), (5, 17, 9), (8, 15, 3), (9, 37, 11), (33, 300, 257), (7, 1000, 6),
          (130, 64, 513)]


def _int8(rng, shape):
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def _exact(a, b):
    return a.astype(np.int64) @ b.astype(np.int64)


@needs_madd
@pytest.mark.parametrize("shape", SHAPES)
def test_madd_kernel_equals_portable_kernel_and_exact_product(shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k)
    a, b = _int8(rng, (m, k)), _int8(rng, (k, n))
    bt = np.ascontiguousarray(b.T)
    fast = np.full((m, n), 12345, dtype=np.int32)
    I._int8_gemm_madd(a, bt, fast)
    portable = np.full((m, n), -7, dtype=np.int32)
    I._int8_gemm_tiles_nb(a, bt, portable)
    np.testing.assert_array_equal(fast, portable)
    np.testing.assert_array_equal(fast, _exact(a, b))
    np.testing.assert_array_equal(I.int8_gemm(a, b), _exact(a, b))


@needs_madd
def test_madd_kernel_extremes_at_the_int32_limit():
    k = I.MAX_GEMM_K  # 131071: k * 2**14 is just below 2**31
    a = np.full((5, k), -128, dtype=np.int8)
    b = np.full((k, 3), -128, dtype=np.int8)
    b[:, 1] = 127
    b[::2, 2] = 127
    out = np.empty((5, 3), np.int32)
    I._int8_gemm_madd(a, np.ascontiguousarray(b.T), out)
    np.testing.assert_array_equal(out, _exact(a, b))
    assert out[0, 0] == k * 2**14 and out[0, 1] == -128 * 127 * k


@needs_madd
def test_int8_gemm_uses_the_madd_kernel(monkeypatch):
    rng = np.random.default_rng(3)
    a, b = _int8(rng, (64, 48)), _int8(rng, (48, 40))
    calls = []
    kernel = I._int8_gemm_madd_nb
    monkeypatch.setattr(I, "_int8_gemm_madd_nb", lambda *args: (calls.append(1), kernel(*args))[1])
    np.testing.assert_array_equal(I.int8_gemm(a, b), _exact(a, b))
    assert calls == [1]


def test_dispatch_flag_is_consistent():
    from qref._numba import USE_NUMBA

    assert isinstance(I.HAVE_MADD_KERNEL, bool)
    if not USE_NUMBA:
        assert not I.HAVE_MADD_KERNEL


@needs_madd
@pytest.mark.parametrize("shape", [(1, 1), (31, 33), (64, 64), (65, 130)])
def test_packing_copy_transposes_widens_and_keeps_the_padding_zero(shape):
    n, k = shape
    b = _int8(np.random.default_rng(n + k), (k, n))
    for bt in (b.T, np.ascontiguousarray(b.T), b[:, ::-1].T[::-1]):  # a view, a copy, negative strides
        bt16 = np.zeros((n + 3, k + 5), dtype=np.int16)
        I._pack_int16_nb(bt, bt16)
        expected = np.zeros_like(bt16)
        expected[:n, :k] = b.T
        np.testing.assert_array_equal(bt16, expected)


@pytest.mark.parametrize("layout", ["C", "F", "reversed"])
def test_int8_gemm_any_layout_of_b_is_exact_and_untouched(layout):
    rng = np.random.default_rng(11)
    a, b = _int8(rng, (37, 70)), _int8(rng, (70, 45))  # above the numba threshold, padded tiles
    bb = {"C": b, "F": np.asfortranarray(b), "reversed": b[::-1, ::-1].copy()[::-1, ::-1]}[layout]
    before = bb.copy()
    np.testing.assert_array_equal(I.int8_gemm(a, bb), _exact(a, b))
    np.testing.assert_array_equal(bb, before)
