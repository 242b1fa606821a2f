"""XNOR-popcount arithmetic (qref.bitops): exact against the float product, twins identical."""

import numpy as np
import pytest

import qref
from qref import bitops as BO

if qref.HAVE_NUMBA:
    import numba

    JIT_DISABLED = bool(numba.config.DISABLE_JIT)
else:  # pragma: no cover
    JIT_DISABLED = True


def _pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)


LENGTHS = [1, 2, 63, 64, 65, 127, 128, 130, 200]


@pytest.mark.parametrize("n", [0] + LENGTHS)
def test_pack_unpack_roundtrip(rng, n):
    x = _pm1(rng, (3, 4, n))
    p = BO.pack_bits(x)
    assert p.dtype == np.uint64 and p.shape == (3, 4, BO.num_words(n))
    np.testing.assert_array_equal(BO.unpack_bits(p, n), x)
    np.testing.assert_array_equal(BO.unpack_bits(p, n, signed=False), (x > 0).astype(np.int8))
    # 0/1, bool and float ±1 inputs pack to the same words
    for other in ((x > 0).astype(np.uint8), x > 0, x.astype(np.float32)):
        np.testing.assert_array_equal(BO.pack_bits(other), p)


def test_pack_bit_layout():
    x = -np.ones(130, np.int8)
    x[[0, 63, 64, 129]] = 1
    p = BO.pack_bits(x)
    assert p.tolist() == [1 + (1 << 63), 1, 2]  # LSB first, padding zero


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("m, k", [(1, 1), (3, 5), (17, 9), (33, 70)])
def test_binary_matmul_exact(rng, m, k, n):
    a, b = _pm1(rng, (m, n)), _pm1(rng, (k, n))
    ref = a.astype(np.float64) @ b.astype(np.float64).T
    pa, pb = BO.pack_bits(a), BO.pack_bits(b)
    got = BO.binary_matmul(pa, pb, n)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(BO._binary_matmul_np(pa, pb, n), ref)
    out = np.empty((m, k), np.int64)
    BO._binary_matmul_nb(pa, pb, n, out)  # the kernel (Python under NUMBA_DISABLE_JIT=1)
    np.testing.assert_array_equal(out, ref)


def test_binary_matmul_extremes(rng):
    a = np.ones((2, 130), np.int8)
    assert BO.binary_matmul(BO.pack_bits(a), BO.pack_bits(a), 130).tolist() == [[130, 130]] * 2
    assert BO.binary_matmul(BO.pack_bits(a), BO.pack_bits(-a), 130).tolist() == [[-130, -130]] * 2
    empty = BO.binary_matmul(np.zeros((2, 0), np.uint64), np.zeros((3, 0), np.uint64), 0)
    assert empty.shape == (2, 3) and not empty.any()
    assert BO.binary_matmul(np.zeros((0, 1), np.uint64), np.zeros((3, 1), np.uint64), 5).shape == (0, 3)


@pytest.mark.skipif(not qref.HAVE_NUMBA, reason="numba is not installed: there is only the numpy twin")
@pytest.mark.parametrize("m, k, n", [(5, 7, 65), (64, 48, 200)] + ([] if JIT_DISABLED else [(131, 257, 1000)]))
def test_public_twins_identical(monkeypatch, rng, m, k, n):
    pa, pb = BO.pack_bits(_pm1(rng, (m, n))), BO.pack_bits(_pm1(rng, (k, n)))
    res, calls = [], []
    kernel = BO._binary_matmul_nb
    for use in (True, False):
        with monkeypatch.context() as mp:
            mp.setattr(BO, "USE_NUMBA", use)
            mp.setattr(BO, "_NUMBA_MIN_WORDS", 0)
            mp.setattr(BO, "_binary_matmul_nb", lambda *a: (calls.append(1), kernel(*a))[1])
            res.append(BO.binary_matmul(pa, pb, n))
    assert calls == [1]
    np.testing.assert_array_equal(res[0], res[1])


def test_non_contiguous_and_inputs_untouched(rng):
    n = 100
    a, b = _pm1(rng, (6, n)), _pm1(rng, (4, n))
    pa, pb = BO.pack_bits(a), BO.pack_bits(b)
    wide = np.repeat(pa, 2, axis=0)[::2]
    ro = pb.copy()
    ro.setflags(write=False)
    copies = wide.copy(), ro.copy(), a.copy()
    np.testing.assert_array_equal(BO.binary_matmul(wide, ro, n), a.astype(float) @ b.astype(float).T)
    BO.pack_bits(a)
    for before, after in zip(copies, (wide, ro, a)):
        np.testing.assert_array_equal(before, after)


def test_bad_input():
    p = BO.pack_bits(np.ones((2, 70)))
    with pytest.raises(TypeError, match="a_packed must be packed bits of dtype uint64"):
        BO.binary_matmul(p.astype(np.int64), p, 70)
    with pytest.raises(ValueError, match="b_packed must be a 2-d array"):
        BO.binary_matmul(p, p[0], 70)
    with pytest.raises(ValueError, match="a_packed must have 1 word"):
        BO.binary_matmul(p, p, 64)
    bad = p.copy()
    bad[0, -1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match="padding bits set"):
        BO.binary_matmul(bad, p, 70)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        BO.binary_matmul(p, p, -1)
    with pytest.raises(TypeError, match="n must be an integer"):
        BO.binary_matmul(p, p, 70.0)
    with pytest.raises(ValueError, match="x must hold only ±1"):
        BO.pack_bits([1, 2])
    with pytest.raises(ValueError, match="a mix of -1, 0 and 1"):
        BO.pack_bits([1, 0, -1])
    with pytest.raises(ValueError, match="at least one dimension"):
        BO.pack_bits(1)
    with pytest.raises(TypeError, match="x must hold ±1 or 0/1"):
        BO.pack_bits(np.array(["a"]))
    with pytest.raises(ValueError, match="x must hold only"):
        BO.pack_bits([np.nan, 1.0])


# ---- out= (bitperf helper) -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("m, k, n", [(3, 5, 63), (33, 70, 130)])
def test_binary_matmul_out(monkeypatch, rng, dtype, use_numba, m, k, n):
    a, b = _pm1(rng, (m, n)), _pm1(rng, (k, n))
    pa, pb = BO.pack_bits(a), BO.pack_bits(b)
    copies = pa.copy(), pb.copy()
    out = np.full((m, k), 12345, dtype)  # stale contents must be overwritten
    monkeypatch.setattr(BO, "USE_NUMBA", use_numba and qref.HAVE_NUMBA)
    monkeypatch.setattr(BO, "_NUMBA_MIN_WORDS", 0)
    got = BO.binary_matmul(pa, pb, n, out=out)
    assert got is out and out.dtype == dtype
    np.testing.assert_array_equal(out, a.astype(np.float64) @ b.astype(np.float64).T)
    np.testing.assert_array_equal(out, BO.binary_matmul(pa, pb, n))
    np.testing.assert_array_equal(pa, copies[0])
    np.testing.assert_array_equal(pb, copies[1])


def test_binary_matmul_out_bad():
    p = BO.pack_bits(np.ones((2, 100)))  # (2, 2) words
    good = np.empty((2, 2), np.int64)
    with pytest.raises(TypeError, match="out must be a numpy array of dtype int64 or int32, got dtype float64"):
        BO.binary_matmul(p, p, 100, out=good.astype(np.float64))
    with pytest.raises(TypeError, match="got list"):
        BO.binary_matmul(p, p, 100, out=[[0, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"out must have shape \(2, 2\)"):
        BO.binary_matmul(p, p, 100, out=np.empty((2, 3), np.int64))
    with pytest.raises(ValueError, match="not C-contiguous"):
        BO.binary_matmul(p, p, 100, out=np.empty((2, 4), np.int64)[:, ::2])
    ro = good.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        BO.binary_matmul(p, p, 100, out=ro)
    with pytest.raises(ValueError, match="int32 holds results only for n < 2"):
        BO.binary_matmul(p, p, 2**31, out=np.empty((2, 2), np.int32))
    with pytest.raises(ValueError, match="must not share memory"):
        BO.binary_matmul(p, p.copy(), 100, out=p.view(np.int64))


# --------------------------------------------------------------------------------------
# qref._numba.tile_intrinsic, the builder shared with qref.intarith's pmadd.wd kernel
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(JIT_DISABLED, reason="intrinsics need the numba compiler")
def test_tile_intrinsic_builds_a_small_dot_product_kernel(rng):
    """A third kernel from the shared builder: int64 dot products of rows, 4 words per vector."""
    from qref._numba import njit, tile_intrinsic

    def body(t):
        ir, builder = t.ir, t.builder
        i64 = ir.IntType(64)
        v4 = ir.VectorType(i64, 4)
        hsum = t.function("llvm.vector.reduce.add.v4i64", i64, [v4])
        acc = [t.cgutils.alloca_once_value(builder, ir.Constant(v4, None)) for _ in range(3 * 2)]
        with t.cgutils.for_range(builder, t.nvec) as loop:
            offset = builder.mul(loop.index, t.const(4))
            for r in range(3):
                for c in range(2):
                    prod = builder.mul(t.load(t.rows_a[r], offset, v4, 8), t.load(t.rows_b[c], offset, v4, 8))
                    builder.store(builder.add(builder.load(acc[2 * r + c]), prod), acc[2 * r + c])
        return [builder.call(hsum, [builder.load(s)]) for s in acc]

    dot_tile = tile_intrinsic("dot_tile", tile_a=3, tile_b=2, result="int64", vector_elems=4, body=body)
    call = njit(cache=False)(lambda a, b, i, j: dot_tile(a, b, i, j))
    a = rng.integers(-100, 100, size=(5, 12))
    b = rng.integers(-100, 100, size=(4, 12))
    got = np.array(call(a, b, 2, 1)).reshape(3, 2)
    np.testing.assert_array_equal(got, a[2:5] @ b[1:3].T)
    bad = tile_intrinsic("bad_tile", tile_a=1, tile_b=2, result="int64", vector_elems=4,
                         body=lambda t: [t.const(0)])
    with pytest.raises(Exception, match="bad_tile: body returned 1 values, expected 2"):
        njit(cache=False)(lambda a, b: bad(a, b, 0, 0))(a, b)


def test_numba_module_imports_without_numba():
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['numba'] = None\n"
        "from qref import _numba, bitops, intarith\n"
        "assert not _numba.HAVE_NUMBA and not intarith.HAVE_MADD_KERNEL\n"
        "try:\n"
        "    _numba.tile_intrinsic('t', tile_a=1, tile_b=1, result='int64', vector_elems=4, body=None)\n"
        "except RuntimeError as e:\n"
        "    assert 'needs numba' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no RuntimeError')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
