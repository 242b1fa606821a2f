"""Integer-arithmetic-only inference (qref.intarith) against independent Python-int definitions.

The fixed-point primitives are checked element by element against plain Python integers
(unbounded, so no overflow can hide), on every pair of edge values and on random int32 values.
The int8 GEMM's numba kernel is held equal to its numpy twin (also under NUMBA_DISABLE_JIT=1,
where the kernel runs as Python on small shapes). The integer-only MLP is held equal to its
fake-quantized float simulation within one code on every logit.
"""

import itertools

import numpy as np
import pytest

import qref
from qref import intarith as I
from qref import uniform as U
from qref.data import load_digits, reference_mlp

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
EDGES = [INT32_MIN, INT32_MIN + 1, -(2**30), -65537, -3, -2, -1, 0, 1, 2, 3, 65537, 2**30, INT32_MAX - 1, INT32_MAX]

if qref.HAVE_NUMBA:
    import numba

    JIT_DISABLED = bool(numba.config.DISABLE_JIT)
else:  # pragma: no cover
    JIT_DISABLED = True


# ---- independent definitions on Python ints ------------------------------------------------

def _trunc_div(v, d):
    """v / d rounded toward zero (C's integer division), on Python ints."""
    q = abs(v) // d
    return q if v >= 0 else -q


def srdhm_ref(a, b):
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    return _trunc_div(ab + nudge, 2**31)


def rdbpot_ref(x, e):
    """x / 2**e, nearest, ties away from zero (via divmod of |x|)."""
    q, r = divmod(abs(x), 2**e)
    if 2 * r >= 2**e and e > 0:
        q += 1
    return q if x >= 0 else -q


def _int32(values):
    return np.array(values, dtype=np.int64).astype(np.int32)


# ---- quantize_multiplier -------------------------------------------------------------------

@pytest.mark.parametrize("M", [0.5, 0.75, 0.1, 1e-3, 0.0123, 2.0**-40, 1 - 2.0**-20, 0.999999999999, 1 - 2.0**-53,
                               2.0**-31 * 1.2345, np.float32(0.3), 0.5 - 2.0**-54])
def test_quantize_multiplier_reconstructs_M(M):
    m0, n = I.quantize_multiplier(M)
    assert isinstance(m0, int) and isinstance(n, int)
    assert 2**30 <= m0 <= INT32_MAX and 0 <= n <= 62
    approx = m0 * 2.0**-31 * 2.0**-n
    assert abs(approx - float(M)) <= 2.0**-30 * float(M)


def test_quantize_multiplier_exact_powers_of_two():
    for n in range(0, 40):
        assert I.quantize_multiplier(2.0 ** -(n + 1)) == (2**30, n)


def test_quantize_multiplier_mantissa_rounding_up_to_one():
    # frac * 2**31 rounds to 2**31: becomes 2**30 with one shift less
    M = (1 - 2.0**-40) * 2.0**-3
    assert I.quantize_multiplier(M) == (2**30, 2)
    # ... and next to 1 (no shift to take back) it saturates
    assert I.quantize_multiplier(1 - 2.0**-40) == (INT32_MAX, 0)


@pytest.mark.parametrize("M", [0.0, 1.0, 1.5, -0.25, 2.0**-70])
def test_quantize_multiplier_rejects_out_of_range(M):
    with pytest.raises(ValueError, match="M must"):
        I.quantize_multiplier(M)


@pytest.mark.parametrize("M", ["0.5", True, None, [0.5]])
def test_quantize_multiplier_rejects_non_reals(M):
    with pytest.raises(TypeError, match="M must be a real number"):
        I.quantize_multiplier(M)


def test_quantize_multiplier_rejects_nonfinite():
    with pytest.raises(ValueError, match="M must be finite"):
        I.quantize_multiplier(float("nan"))


# ---- SaturatingRoundingDoublingHighMul -----------------------------------------------------

def test_srdhm_ties_in_both_signs():
    half = 2**30  # b = 2**30 makes a*b/2**31 = a/2
    a = _int32([1, 3, 5, -1, -3, -5, 7, -7])
    got = I.saturating_rounding_doubling_high_mul(a, half)
    # 0.5 -> 1, 1.5 -> 2, 2.5 -> 3 but -0.5 -> 0, -1.5 -> -1, -2.5 -> -2 (ties toward +inf)
    np.testing.assert_array_equal(got, [1, 2, 3, 0, -1, -2, 4, -3])
    assert got.dtype == np.int32
    # next to a negative tie: a*b / 2**31 = -1.5 + delta * 2**-15
    for delta, expected in ((-1, -2), (0, -1), (1, -1)):
        a, b = -3 * 2**14 + delta, 2**16
        assert int(I.saturating_rounding_doubling_high_mul(a, b)) == expected == srdhm_ref(a, b)


def test_srdhm_is_floor_of_nudged_product():
    # the closed form of the docstring, on Python ints
    for a, b in itertools.product(EDGES, repeat=2):
        if a == b == INT32_MIN:
            continue
        assert srdhm_ref(a, b) == (a * b + 2**30) // 2**31


def test_srdhm_saturates_the_single_overflow_case():
    got = I.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)
    assert got.dtype == np.int32 and int(got) == INT32_MAX
    # the neighbours do not saturate
    assert int(I.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN + 1)) == INT32_MAX
    assert int(I.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX)) == INT32_MIN + 1


def test_srdhm_every_edge_pair_matches_python_ints():
    pairs = list(itertools.product(EDGES, repeat=2))
    a = _int32([p[0] for p in pairs])
    b = _int32([p[1] for p in pairs])
    got = I.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [srdhm_ref(x, y) for x, y in pairs]


def test_srdhm_random_matches_python_ints(rng):
    a = rng.integers(INT32_MIN, INT32_MAX, size=20_000, endpoint=True).astype(np.int32)
    b = rng.integers(INT32_MIN, INT32_MAX, size=20_000, endpoint=True).astype(np.int32)
    b[::3] = rng.integers(2**30, 2**31, size=b[::3].size)  # Q31 multipliers as from quantize_multiplier
    got = I.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [srdhm_ref(int(x), int(y)) for x, y in zip(a, b)]


def test_srdhm_broadcasts_and_accepts_small_int_dtypes():
    a = np.arange(-4, 4, dtype=np.int8).reshape(2, 4)
    got = I.saturating_rounding_doubling_high_mul(a, np.array([2**30], dtype=np.int64))
    assert got.shape == (2, 4) and got.dtype == np.int32
    assert got.ravel().tolist() == [srdhm_ref(int(x), 2**30) for x in a.ravel()]


def test_srdhm_bad_input():
    with pytest.raises(TypeError, match="a must have an integer dtype"):
        I.saturating_rounding_doubling_high_mul(np.array([1.0]), 3)
    with pytest.raises(ValueError, match=r"b must hold int32 values"):
        I.saturating_rounding_doubling_high_mul(1, 2**31)
    with pytest.raises(ValueError, match=r"a must hold int32 values"):
        I.saturating_rounding_doubling_high_mul(np.array([INT32_MIN - 1]), 1)


# ---- RoundingDivideByPOT -------------------------------------------------------------------

def test_rdbpot_ties_away_from_zero_in_both_signs():
    x = _int32([2, 6, 10, -2, -6, -10, 1, -1, 3, -3])
    np.testing.assert_array_equal(I.rounding_divide_by_pot(x, 2), [1, 2, 3, -1, -2, -3, 0, 0, 1, -1])
    # exponent 1: halves are the ties
    np.testing.assert_array_equal(I.rounding_divide_by_pot(_int32([1, -1, 3, -3]), 1), [1, -1, 2, -2])


def test_rdbpot_every_edge_and_exponent_matches_python_ints():
    x = _int32(EDGES)
    for e in range(32):
        got = I.rounding_divide_by_pot(x, e)
        assert got.dtype == np.int32
        assert got.tolist() == [rdbpot_ref(v, e) for v in EDGES], e


def test_rdbpot_random_matches_python_ints(rng):
    x = rng.integers(INT32_MIN, INT32_MAX, size=20_000, endpoint=True).astype(np.int32)
    e = rng.integers(0, 32, size=x.size)
    ties = np.arange(0, x.size, 5)
    x[ties] = ((rng.integers(-(2**20), 2**20, size=ties.size) * 2 + 1) << np.minimum(e[ties], 10)) >> 1  # half-way
    e[ties] = np.minimum(e[ties], 10)
    got = I.rounding_divide_by_pot(x, e)
    assert got.tolist() == [rdbpot_ref(int(v), int(k)) for v, k in zip(x, e)]


def test_rdbpot_bad_input():
    with pytest.raises(ValueError, match=r"exponent must be in \[0, 31\]"):
        I.rounding_divide_by_pot([1], 32)
    with pytest.raises(ValueError, match=r"exponent must be in \[0, 31\]"):
        I.rounding_divide_by_pot([1], -1)
    with pytest.raises(TypeError, match="exponent must have an integer dtype"):
        I.rounding_divide_by_pot([1], 1.0)
    with pytest.raises(TypeError, match="x must have an integer dtype"):
        I.rounding_divide_by_pot([1.5], 1)


# ---- multiplier and requantize ---------------------------------------------------------------

@pytest.mark.parametrize("M", [0.9, 0.3, 0.01, 1e-5, 2.0**-35])
def test_fixed_point_multiply_is_within_one_of_exact(rng, M):
    m0, n = I.quantize_multiplier(M)
    x = np.concatenate([_int32(EDGES), rng.integers(-(2**24), 2**24, size=5000).astype(np.int32)])
    got = I.multiply_by_quantized_multiplier(x, m0, n).astype(np.int64)
    exact = x.astype(np.float64) * M
    assert np.abs(got - exact).max() <= 1.0
    # and it is exactly SRDHM followed by rounding right shifts (two for n > 31)
    y = [srdhm_ref(int(v), m0) for v in x]
    ref = [rdbpot_ref(rdbpot_ref(v, min(n, 31)), n - min(n, 31)) for v in y]
    assert got.tolist() == ref


def test_requantize_matches_python_ints_and_clamps(rng):
    m0, n = I.quantize_multiplier(0.0037)
    acc = np.concatenate([_int32(EDGES), rng.integers(-(2**20), 2**20, size=3000).astype(np.int32)])
    for z, lo, hi in ((-128, -128, 127), (5, 5, 127), (0, -128, 127), (10, 10, 10 + round(6 / 0.05))):
        got = I.requantize(acc, m0, n, z, lo, hi)
        assert got.dtype == np.int32
        ref = [min(max(z + rdbpot_ref(srdhm_ref(int(a), m0), n), lo), hi) for a in acc]
        assert got.tolist() == ref
        assert got.min() >= lo and got.max() <= hi


def test_requantize_per_channel_multipliers():
    acc = np.array([[1000, 1000], [-1000, -1000]], dtype=np.int32)
    (m_a, n_a), (m_b, n_b) = I.quantize_multiplier(0.1), I.quantize_multiplier(0.01)
    got = I.requantize(acc, np.array([m_a, m_b]), np.array([n_a, n_b]), 0, -128, 127)
    np.testing.assert_array_equal(got, [[100, 10], [-100, -10]])


def test_requantize_bad_input():
    with pytest.raises(ValueError, match="qmin must be <= qmax"):
        I.requantize([1], 2**30, 0, 0, 5, 4)
    with pytest.raises(TypeError, match="zero_point_out must be an integer"):
        I.requantize([1], 2**30, 0, 0.5, -128, 127)
    with pytest.raises(ValueError, match=r"shift must be in \[0, 62\]"):
        I.requantize([1], 2**30, 63, 0, -128, 127)


# ---- int8 GEMM ---------------------------------------------------------------------------

def _exact(a, b):
    return a.astype(np.int64) @ b.astype(np.int64)


def _int8(rng, shape):
    return rng.integers(-128, 128, size=shape).astype(np.int8)


GEMM_SHAPES = [(1, 1, 1), (3, 5, 2), (4, 7, 3), (5, 2, 9), (9, 37, 11)]
if not JIT_DISABLED:
    GEMM_SHAPES += [(33, 300, 257), (128, 64, 513), (7, 1000, 6)]


@pytest.mark.parametrize("shape", GEMM_SHAPES)
def test_int8_gemm_kernel_equals_numpy_twin(rng, shape):
    m, k, n = shape
    a, b = _int8(rng, (m, k)), _int8(rng, (k, n))
    ref = I._int8_gemm_np(a, b)
    assert ref.dtype == np.int32
    np.testing.assert_array_equal(ref, _exact(a, b))
    out = np.full((m, n), 12345, dtype=np.int32)
    I._int8_gemm_nb(a, np.ascontiguousarray(b.T), out)
    np.testing.assert_array_equal(out, ref)


def test_int8_gemm_extremes_do_not_overflow():
    k = 4096 if JIT_DISABLED else I.MAX_GEMM_K
    a = np.full((2, k), -128, dtype=np.int8)
    b = np.full((k, 3), -128, dtype=np.int8)
    expected = k * 2**14
    assert expected <= INT32_MAX
    np.testing.assert_array_equal(I.int8_gemm(a, b), np.full((2, 3), expected))
    b[:, 1] = 127
    out = I.int8_gemm(a, b)
    assert out[0, 1] == -128 * 127 * k


@pytest.mark.parametrize("use_numba", [True, False])
def test_int8_gemm_public_paths(monkeypatch, rng, use_numba):
    a, b = _int8(rng, (64, 48)), _int8(rng, (48, 40))  # 122880 multiply-adds: above the numba threshold
    calls = []
    kernel = I._int8_gemm_nb
    monkeypatch.setattr(I, "USE_NUMBA", use_numba and qref.HAVE_NUMBA)
    monkeypatch.setattr(I, "_int8_gemm_nb", lambda *args: (calls.append(1), kernel(*args))[1])
    b_view = np.asfortranarray(b)  # a non-contiguous layout must give the same result
    for bb in (b, b_view, b[:, ::-1][:, ::-1]):
        out = I.int8_gemm(a, bb)
        assert out.dtype == np.int32 and out.shape == (64, 40)
        np.testing.assert_array_equal(out, _exact(a, b))
    assert bool(calls) == (use_numba and qref.HAVE_NUMBA)
    assert a.flags.writeable and np.array_equal(b_view, b)  # inputs untouched


def test_int8_gemm_empty():
    out = I.int8_gemm(np.zeros((0, 3), np.int8), np.zeros((3, 4), np.int8))
    assert out.shape == (0, 4) and out.dtype == np.int32
    np.testing.assert_array_equal(I.int8_gemm(np.zeros((2, 0), np.int8), np.zeros((0, 4), np.int8)), 0)


def test_int8_gemm_bad_input():
    a = np.zeros((2, 3), np.int8)
    with pytest.raises(TypeError, match="a must be an int8 array, got dtype int16"):
        I.int8_gemm(a.astype(np.int16), a.T)
    with pytest.raises(TypeError, match="b must be an int8 array, got dtype uint8"):
        I.int8_gemm(a, a.T.astype(np.uint8))
    with pytest.raises(ValueError, match="b must be 2-d"):
        I.int8_gemm(a, np.zeros(3, np.int8))
    with pytest.raises(ValueError, match="matching inner dimensions"):
        I.int8_gemm(a, a)
    with pytest.raises(ValueError, match="inner dimension must be <= 131071"):
        I.int8_gemm(np.zeros((1, I.MAX_GEMM_K + 1), np.int8), np.zeros((I.MAX_GEMM_K + 1, 1), np.int8))


# ---- zero-point corrections, bias, batch-norm folding -----------------------------------------

@pytest.mark.parametrize("z1,z2", [(0, 0), (-128, 0), (17, -5), (127, -128), (-3, 100)])
def test_quantized_matmul_equals_definition(rng, z1, z2):
    q1, q2 = _int8(rng, (13, 29)), _int8(rng, (29, 7))
    bias = rng.integers(-(2**20), 2**20, size=7)
    got = I.quantized_matmul(q1, z1, q2, z2, bias=bias)
    ref = (q1.astype(np.int64) - z1) @ (q2.astype(np.int64) - z2) + bias
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(I.quantized_matmul(q1, z1, q2, z2), ref - bias)


def test_quantized_matmul_bad_input():
    q = np.zeros((2, 2), np.int8)
    with pytest.raises(ValueError, match=r"z1 must be an int8 zero point in \[-128, 127\], got 128"):
        I.quantized_matmul(q, 128, q, 0)
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        I.quantized_matmul(q, 0, q, 0, bias=[1, 2, 3])
    with pytest.raises(TypeError, match="bias must have an integer dtype"):
        I.quantized_matmul(q, 0, q, 0, bias=[1.0, 2.0])


def test_quantize_bias():
    np.testing.assert_array_equal(I.quantize_bias(np.array([0.5, -0.01, 0.0]), 0.01, 0.1), [500, -10, 0])
    with pytest.raises(ValueError, match="must fit in int32"):
        I.quantize_bias(np.array([1.0]), 1e-6, 1e-6)
    with pytest.raises(TypeError, match="bias must have a floating dtype"):
        I.quantize_bias(np.array([1]), 1.0, 1.0)


def test_fold_batch_norm_equals_unfolded(rng):
    W = rng.normal(size=(6, 5))
    b = rng.normal(size=6)
    gamma, beta, mean = rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    var = rng.uniform(0.1, 3.0, size=6)
    x = rng.normal(size=(20, 5))
    y = x @ W.T + b
    unfolded = gamma * (y - mean) / np.sqrt(var + 1e-3) + beta
    w_f, b_f = I.fold_batch_norm(W, b, gamma, beta, mean, var, eps=1e-3)
    np.testing.assert_allclose(x @ w_f.T + b_f, unfolded, rtol=1e-12, atol=1e-12)
    # without a bias: the paper's beta - gamma * mu / sqrt(var + eps)
    w0, b0 = I.fold_batch_norm(W, None, gamma, beta, mean, var, eps=1e-3)
    np.testing.assert_allclose(b0, beta - gamma * mean / np.sqrt(var + 1e-3))
    np.testing.assert_array_equal(w0, w_f)


def test_fold_batch_norm_conv_shape_and_dtype(rng):
    W = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    g = np.array([1.0, 2.0, 0.5, -1.0])
    w_f, b_f = I.fold_batch_norm(W, None, g, np.zeros(4), np.zeros(4), np.ones(4), eps=0.0)
    assert w_f.dtype == np.float32 and b_f.dtype == np.float32 and w_f.shape == W.shape
    np.testing.assert_allclose(w_f, W * g[:, None, None, None].astype(np.float32))


def test_fold_batch_norm_bad_input():
    W = np.ones((3, 2))
    v = np.ones(3)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        I.fold_batch_norm(W, None, np.ones(2), v, v, v)
    with pytest.raises(ValueError, match="var must be >= 0"):
        I.fold_batch_norm(W, None, v, v, v, -v)
    with pytest.raises(ValueError, match="var \\+ eps must be > 0"):
        I.fold_batch_norm(W, None, v, v, v, 0 * v, eps=0.0)
    with pytest.raises(TypeError, match="weight must have a floating dtype"):
        I.fold_batch_norm(np.ones((3, 2), int), None, v, v, v, v)


# ---- the integer-only MLP ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_imlp():
    d = load_digits()
    model = reference_mlp()
    return d, model, I.integer_mlp(model, d.X_train)


def test_integer_mlp_quantization_choices(digits_imlp):
    _, model, imlp = digits_imlp
    assert len(imlp.act_params) == len(model.weights) + 1
    for p in imlp.act_params:
        assert p.bits == 8 and p.signed and p.axis is None
    for Wq, p, bq, (m0, n) in zip(imlp.weight_codes, imlp.weight_params, imlp.bias_codes, imlp.multipliers):
        assert Wq.dtype == np.int8 and int(p.zero_point) == 0 and Wq.min() >= -127
        assert bq.dtype == np.int32
        assert 2**30 <= m0 <= INT32_MAX and n >= 0
    # the post-ReLU range [0, max] puts the zero point at the lowest code
    assert int(imlp.act_params[1].zero_point) == -128


def test_integer_forward_equals_simulation_within_one_code(digits_imlp):
    d, _, imlp = digits_imlp
    p = imlp.act_params[-1]
    for X in (d.X_test, d.X_train):
        q, codes = I.integer_forward(imlp, X, return_codes=True)
        assert q.dtype == np.int8 and all(c.dtype == np.int8 for c in codes)
        sim = I.simulated_forward(imlp, X)
        sim_codes = np.rint(sim / float(p.scale)) + int(p.zero_point)
        np.testing.assert_array_equal(sim, (sim_codes - int(p.zero_point)) * float(p.scale))  # on the grid
        assert np.abs(q.astype(np.int64) - sim_codes.astype(np.int64)).max() <= 1
    # the fused ReLU: hidden codes never go below the zero point
    assert codes[1].min() >= int(imlp.act_params[1].zero_point)


def test_integer_forward_accuracy_within_one_point_of_float(digits_imlp):
    d, model, imlp = digits_imlp
    acc_float = model.accuracy(d.X_test, d.y_test)
    acc_int = float(np.mean(I.integer_forward(imlp, d.X_test).argmax(axis=1) == d.y_test))
    assert abs(acc_int - acc_float) <= 0.01, (acc_int, acc_float)


def test_integer_forward_hidden_layers_match_manual_integer_computation(digits_imlp):
    d, _, imlp = digits_imlp
    X = d.X_test[:50]
    q0 = U.quantize(X, imlp.act_params[0])
    _, codes = I.integer_forward(imlp, X, return_codes=True)
    np.testing.assert_array_equal(codes[0], q0)
    z_in = int(imlp.act_params[0].zero_point)
    acc = (q0.astype(np.int64) - z_in) @ imlp.weight_codes[0].T.astype(np.int64) + imlp.bias_codes[0]
    m0, n = imlp.multipliers[0]
    z = int(imlp.act_params[1].zero_point)
    ref = [[min(max(z + rdbpot_ref(srdhm_ref(int(a), m0), n), z), 127) for a in row] for row in acc]
    assert codes[1].tolist() == ref


def test_integer_mlp_deeper_model_and_lower_bits():
    d = load_digits()
    model = reference_mlp(hidden=(32, 16))
    imlp = I.integer_mlp(model, d.X_train, bits=6)
    q = I.integer_forward(imlp, d.X_test)
    p = imlp.act_params[-1]
    sim_codes = np.rint(I.simulated_forward(imlp, d.X_test) / float(p.scale)) + int(p.zero_point)
    assert np.abs(q.astype(np.int64) - sim_codes).max() <= 1
    assert q.min() >= -32 and q.max() <= 31


def test_integer_mlp_bad_input(digits_imlp):
    d, model, imlp = digits_imlp
    with pytest.raises(ValueError, match=r"bits must be in \[2, 8\]"):
        I.integer_mlp(model, d.X_train, bits=9)
    with pytest.raises(TypeError, match="X_calib must have a floating dtype"):
        I.integer_mlp(model, (d.X_train * 16).astype(np.int64))
    with pytest.raises(ValueError, match=r"X must have shape \(n, 64\)"):
        I.integer_forward(imlp, d.X_test[:, :10])
    with pytest.raises(TypeError, match="imlp must be an IntegerMLP"):
        I.integer_forward(model, d.X_test)
    with pytest.raises(ValueError, match="X must be finite"):
        I.simulated_forward(imlp, np.full((1, 64), np.nan, np.float32))
