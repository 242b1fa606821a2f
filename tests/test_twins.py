"""Every numba kernel equals its numpy twin, bit for bit.

The public functions choose the numba twin when ``USE_NUMBA`` is true (and the input is large,
per tensor, rounded half to even); here each call is made twice, once with the numba path
forced and once with the numpy path forced, and the results are compared as raw bytes (so
even the sign of zero must agree). A spy checks that the numba path really ran.

Under ``NUMBA_DISABLE_JIT=1`` both twins are Python and the tests still pass (and still
check the kernels' logic). Without numba installed there is only one twin: skipped.
"""

import numpy as np
import pytest

import qref
from qref import rounding as R
from qref import uniform as U

pytestmark = pytest.mark.skipif(not qref.HAVE_NUMBA, reason="numba is not installed: there is only the numpy twin")

if qref.HAVE_NUMBA:
    import numba

    # NUMBA_DISABLE_JIT=1: the "numba" twin is a Python loop (~1 us per element), so the large
    # sizes are checked once rather than for every case
    JIT_DISABLED = bool(numba.config.DISABLE_JIT)
else:  # pragma: no cover
    JIT_DISABLED = True

SMALL_SIZES = [1, 17, 4_095]  # below the fast-path size: both calls take the numpy path
FAST_SIZES = [5_000] if JIT_DISABLED else [5_000, 65_537]  # the single-threaded numba kernels
PARALLEL_SIZE = 200_003  # above the size where the kernels run on all threads
# Every (float dtype, code dtype) pair costs a numba compilation (~1 s, cached on disk after the
# first run): the multi-threaded drivers are run on a few pairs, the kernels on all of them.


def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.size:
        np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.fixture
def twins(monkeypatch):
    """``twins(fn)`` -> (result with the numba path forced, result with the numpy path forced, numba calls)."""

    def run(fn, kernels):
        calls = []
        with monkeypatch.context() as m:
            m.setattr(U, "USE_NUMBA", True)
            if not JIT_DISABLED:
                fn()  # compile first: numba resolves a kernel's callees when it compiles, and must see the real ones
            names = [k for k in kernels if hasattr(U, k)]
            assert names, f"none of the kernels {kernels} exists in qref.uniform any more: update this test"
            for name in names:
                kernel = getattr(U, name)
                m.setattr(U, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])
            fast = fn()
        with monkeypatch.context() as m:
            m.setattr(U, "USE_NUMBA", False)
            slow = fn()
        return fast, slow, calls

    return run


FQ = ("_fake_quantize_nb", "_fake_quantize_par")
QU = ("_quantize_nb", "_quantize_par")
DQ = ("_dequantize_nb", "_dequantize_par")


def _params(rng, bits, signed, narrow, pow2):
    qmin, qmax = U.qrange(bits, signed=signed, narrow_range=narrow)
    scale = 2.0 ** int(rng.integers(-10, 2)) if pow2 else float(rng.uniform(1e-3, 2.0))
    zp = int(rng.integers(qmin, qmax + 1))
    return U.QuantParams(scale=scale, zero_point=zp, bits=bits, signed=signed, narrow_range=narrow)


def _inputs(rng, n, p, dtype):
    """Normal values over and beyond the range, exact ties, zeros of both signs, tiny values."""
    S, Z = float(p.scale), int(p.zero_point)
    span = S * (p.qmax - p.qmin)
    x = rng.normal(scale=span, size=n)
    k = rng.integers(p.qmin - Z - 2, p.qmax - Z + 2, size=n)
    pick = rng.random(n)
    x = np.where(pick < 0.3, (k + 0.5) * S, x)  # ties (exact when S is a power of two)
    x = np.where((pick > 0.3) & (pick < 0.35), 0.0, x)
    x = np.where((pick > 0.35) & (pick < 0.4), -0.0, x)
    x = np.where((pick > 0.4) & (pick < 0.42), 1e-30, x)
    return x.astype(dtype)


CASES = [(8, True, False, True), (8, False, False, False), (4, True, True, True), (2, False, False, False),
         (16, True, False, False), (12, False, True, True)]


def _case_id(c):
    return f"b{c[0]}{'s' if c[1] else 'u'}{'n' if c[2] else ''}{'p2' if c[3] else ''}"


SIZE_CASES = [(c, n, dt) for c in CASES for n in SMALL_SIZES + FAST_SIZES for dt in (np.float32, np.float64)]
SIZE_CASES += [(CASES[0], PARALLEL_SIZE, np.float32)]  # int8 codes
if not JIT_DISABLED:
    SIZE_CASES += [(CASES[4], PARALLEL_SIZE, np.float64)]  # int16 codes


@pytest.mark.parametrize("case, n, dtype", SIZE_CASES,
                         ids=[f"{_case_id(c)}-{n}-{np.dtype(dt).name}" for c, n, dt in SIZE_CASES])
def test_fake_quantize_and_quantize_twins(twins, rng, dtype, case, n):
    p = _params(rng, *case)
    x = _inputs(rng, n, p, dtype)
    fast, slow, calls = twins(lambda: U.fake_quantize(x, p), FQ)
    _bits_equal(fast, slow)
    assert bool(calls) == (n >= FAST_SIZES[0])
    fast, slow, calls = twins(lambda: U.quantize(x, p), QU)
    _bits_equal(fast, slow)
    assert bool(calls) == (n >= FAST_SIZES[0])
    # the codes dequantize to the fake-quantized values on both paths
    fast, slow, calls = twins(lambda: U.dequantize(U.quantize(x, p), p, dtype=dtype), DQ)
    _bits_equal(fast, slow)
    _bits_equal(fast, U.fake_quantize(x, p))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["strided", "transposed", "reversed"])
def test_twins_on_non_contiguous_input_and_out(twins, rng, dtype, layout):
    p = _params(rng, 8, True, False, True)
    base = _inputs(rng, 2 * 6_000 if JIT_DISABLED else 2 * 30_000, p, dtype).reshape(40 if JIT_DISABLED else 200, -1)
    x = {"strided": base[:, ::2], "transposed": base.T, "reversed": base[::-1]}[layout]
    assert not x.flags.c_contiguous
    for out_kind in ("none", "contiguous", "strided"):
        def call(fn, out_dtype):
            if out_kind == "none":
                return fn(x, p)
            if out_kind == "contiguous":
                out = np.empty(x.shape, out_dtype)
            else:
                out = np.zeros((x.shape[0], 2 * x.shape[1]), out_dtype)[:, ::2]
            res = fn(x, p, out=out)
            assert res is out
            return out

        fast, slow, calls = twins(lambda: call(U.fake_quantize, dtype), FQ)
        _bits_equal(fast, slow)
        assert calls
        fast, slow, calls = twins(lambda: call(U.quantize, p.dtype), QU)
        _bits_equal(fast, slow)
        assert calls
        _bits_equal(fast, U.quantize(np.ascontiguousarray(x), p))


@pytest.mark.parametrize("code_dtype, bits, signed", [(np.int8, 8, True), (np.uint8, 8, False),
                                                      (np.int16, 16, True), (np.uint16, 16, False),
                                                      (np.int64, 5, True)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dequantize_twins(twins, rng, code_dtype, bits, signed, dtype):
    qmin, qmax = U.qrange(bits, signed=signed)
    for pow2 in (True, False):
        p = _params(rng, bits, signed, False, pow2)
        if dtype == np.float16 and float(p.scale) * (qmax - qmin) > 6e4:  # keep the levels inside float16
            p = U.QuantParams(scale=2.0**-3, zero_point=p.zero_point, bits=bits, signed=signed)
        parallel = (code_dtype, dtype) in (((np.int8, np.float32),) if JIT_DISABLED else
                                           ((np.int8, np.float32), (np.int8, np.float16), (np.int16, np.float64)))
        for n in (100, 5_000) + ((PARALLEL_SIZE,) if parallel else ()):
            codes = rng.integers(qmin, qmax + 1, size=n).astype(code_dtype)
            fast, slow, calls = twins(lambda: U.dequantize(codes, p, dtype=dtype), DQ)
            _bits_equal(fast, slow)
            assert bool(calls) == (n >= 5_000)
            strided = np.repeat(codes, 2)[::2]
            fast2, _, _ = twins(lambda: U.dequantize(strided, p, dtype=dtype), DQ)
            _bits_equal(fast2, slow)


@pytest.mark.parametrize("n", [10, 5_000] + ([] if JIT_DISABLED else [PARALLEL_SIZE]))
def test_twins_reject_the_same_bad_input(twins, n):
    p = U.params_from_range(-1.0, 1.0, bits=8)
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros(n, np.float32)
        x[n // 2] = bad
        for fn in (U.fake_quantize, U.quantize):
            for use in (True, False):
                with pytest.MonkeyPatch.context() as m:
                    m.setattr(U, "USE_NUMBA", use)
                    with pytest.raises(ValueError, match=r"x must be finite, got \d NaN and \d infinite"):
                        fn(x, p)
    codes = np.zeros(n, np.int8)
    codes[-1] = 100
    for use in (True, False):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(U, "USE_NUMBA", use)
            with pytest.raises(ValueError, match=r"codes must lie in \[-8, 7\]"):
                U.dequantize(codes, U.params_from_range(-1.0, 1.0, bits=4))


# ---- accumulate ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", R.MODES)
@pytest.mark.parametrize("step", [2.0**-8, 0.1, 3.0])
def test_accumulate_kernel_twins(rng, mode, step):
    mode_id = R.MODES.index(mode)
    for n in (0, 1, 1000):
        inc = rng.normal(scale=step, size=n)
        inc[::5] = 0.5 * step  # ties
        inc[1::7] = -0.49999999999999994 * step
        u = rng.random(n)
        u[::11] = 0.0
        start = float(rng.normal()) * step
        a = R._accumulate_nb(inc, step, start, mode_id, u)
        b = R._accumulate_py(inc, step, start, mode_id, u)
        _bits_equal(a, b)
        wide = np.repeat(inc, 2)  # a non-contiguous view of the same increments
        _bits_equal(R._accumulate_nb(wide[::2], step, start, mode_id, u), b)


@pytest.mark.parametrize("mode", R.MODES)
def test_accumulate_public_twins(monkeypatch, rng, mode):
    inc = rng.normal(scale=0.01, size=3000).astype(np.float32)
    results = []
    for use in (True, False):
        monkeypatch.setattr(R, "USE_NUMBA", use)
        results.append(R.accumulate(inc, step=2.0**-7, mode=mode, start=0.3, rng=42))
    _bits_equal(*results)


def test_round_scalar_twins_on_every_mode():
    values = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994,
              0.5000000000000001, -0.5000000000000001, 1e-300, -1e-300, 0.0, -0.0, 3.75, -3.75,
              2.0**52 - 0.5, -(2.0**52) + 0.5, 1e300, -1e300]
    for mode_id, mode in enumerate(R.MODES):
        for v in values:
            for u in (0.0, 0.25, 0.5, 0.75, 1 - 2.0**-53):
                a = R._round_scalar_nb(v, mode_id, u)
                b = R._round_scalar(v, mode_id, u)
                assert np.float64(a).tobytes() == np.float64(b).tobytes(), (mode, v, u)
            if mode != "stochastic":  # and the scalar rule is the array rule
                assert R._round_scalar(v, mode_id, 0.0) == R.round(np.array([v]), mode=mode)[0], (mode, v)
