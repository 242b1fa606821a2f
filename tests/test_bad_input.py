"""The bad-input catalogue: every public function rejects bad input with the documented
exception type and a message that names the offending argument, accepts the unusual-but-valid
inputs (lists, 0-d, empty, non-contiguous, read-only arrays) with the same results as plain
arrays, and never modifies its inputs.
"""

import numpy as np
import pytest

from qref import data as D
from qref import metrics as M
from qref import rounding as R
from qref import uniform as U

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
P = U.params_from_range(-1.0, 1.0, bits=4)
PC = U.params_from_range([-1.0, -2.0, -3.0], [1.0, 2.0, 3.0], bits=4, axis=0)
CODES = np.array([-8, 0, 7], dtype=np.int8)


def _qp(**kw):
    base = dict(scale=0.5, zero_point=0, bits=4)
    base.update(kw)
    return U.QuantParams(**base)


# (id, callable, exception type, regex the message must match: it names the argument)
CATALOGUE = [
    # -- NaN and infinity in data
    ("round-nan", lambda: R.round(np.array([1.0, np.nan])), ValueError, r"\bx\b.*finite"),
    ("round-inf", lambda: R.round(np.array([np.inf])), ValueError, r"\bx\b.*finite"),
    ("stochastic-nan", lambda: R.round_stochastic(np.array([np.nan]), rng=0), ValueError, r"\bx\b"),
    ("accumulate-nan", lambda: R.accumulate([0.1, np.nan], step=1.0), ValueError, "increments"),
    ("quantize-nan", lambda: U.quantize(np.array([0.0, np.nan], np.float32), P), ValueError, r"\bx\b.*finite"),
    ("quantize-inf-large", lambda: U.quantize(np.r_[np.zeros(9999, np.float32), np.inf], P), ValueError, r"\bx\b"),
    ("fake-quantize-nan", lambda: U.fake_quantize(np.array([np.nan]), P), ValueError, r"\bx\b.*finite"),
    ("fake-quantize-inf-large", lambda: U.fake_quantize(np.r_[np.zeros(9999), -np.inf], P), ValueError, r"\bx\b"),
    ("fake-quantize-nan-f16", lambda: U.fake_quantize(np.array([np.nan], np.float16), P), ValueError, r"\bx\b"),
    ("params-from-data-nan", lambda: U.params_from_data([1.0, np.nan], bits=4), ValueError, r"\bx\b.*finite"),
    ("params-from-range-nan", lambda: U.params_from_range(np.nan, 1.0, bits=4), ValueError, r"\blo\b.*finite"),
    ("params-from-range-inf", lambda: U.params_from_range(0.0, np.inf, bits=4), ValueError, r"\bhi\b.*finite"),
    ("mse-nan", lambda: M.mse([1.0, np.nan], [1.0, 1.0]), ValueError, r"\bx\b"),
    ("mse-inf-hat", lambda: M.mse([1.0, 1.0], [1.0, np.inf]), ValueError, "x_hat"),
    ("kl-nan", lambda: M.kl_divergence([1.0, np.nan], [1.0, 1.0]), ValueError, r"\bp\b"),
    ("kl-q-inf", lambda: M.kl_divergence([1.0, 1.0], [np.inf, 1.0]), ValueError, r"\bq\b"),
    ("cosine-nan", lambda: M.cosine_similarity([np.nan, 1.0], [1.0, 1.0]), ValueError, r"\bx\b"),
    ("forward-nan", lambda: D.reference_mlp().forward(np.full((1, 64), np.nan, np.float32)), ValueError, r"\bX\b"),
    ("accumulate-start-inf", lambda: R.accumulate([0.1], step=1.0, start=np.inf), ValueError, "start"),
    # -- empty arrays where a statistic is needed
    ("params-from-data-empty", lambda: U.params_from_data(np.zeros((0, 3)), bits=4), ValueError, r"\bx\b.*empty"),
    ("mse-empty", lambda: M.mse([], []), ValueError, r"\bx\b.*empty"),
    ("sqnr-empty", lambda: M.sqnr_db(np.zeros(0), np.zeros(0)), ValueError, r"\bx\b.*empty"),
    ("kl-empty", lambda: M.kl_divergence([], []), ValueError, r"\bp\b.*empty"),
    ("cosine-empty", lambda: M.cosine_similarity(np.zeros((0, 2)), np.zeros((0, 2))), ValueError, "empty"),
    # -- 0-d arrays asked for a per-channel or per-group computation
    ("params-0d-axis", lambda: U.params_from_data(np.float32(1.0), bits=4, axis=0), ValueError, "axis"),
    ("params-0d-group", lambda: U.params_from_data(np.float32(1.0), bits=4, axis=0, group_size=1), ValueError, "axis"),
    ("quantize-0d-channel", lambda: U.quantize(np.float32(1.0), _qp(scale=[1.0], zero_point=[0], axis=0)),
     ValueError, "axis"),
    ("fake-quantize-0d-channel", lambda: U.fake_quantize(np.float64(1.0), _qp(scale=[1.0], zero_point=[0], axis=0)),
     ValueError, "axis"),
    ("accumulate-0d", lambda: R.accumulate(np.float64(1.0), step=1.0), ValueError, "increments"),
    ("forward-1d", lambda: D.reference_mlp().forward(np.zeros(64, np.float32)), ValueError, r"\bX\b"),
    # -- integer, boolean and complex data
    *[(f"{name}-{kind}", fn(np.ones(3, dtype)), TypeError, arg)
      for kind, dtype in (("int", np.int32), ("bool", np.bool_), ("complex", np.complex64), ("uint8", np.uint8))
      for name, fn, arg in (
          ("round", lambda a: lambda: R.round(a), r"\bx\b.*floating"),
          ("round-half-away", lambda a: lambda: R.round_half_away(a), r"\bx\b.*floating"),
          ("round-stochastic", lambda a: lambda: R.round_stochastic(a, rng=0), r"\bx\b.*floating"),
          ("accumulate", lambda a: lambda: R.accumulate(a, step=1.0), r"increments.*floating"),
          ("quantize", lambda a: lambda: U.quantize(a, P), r"\bx\b.*floating"),
          ("fake-quantize", lambda a: lambda: U.fake_quantize(a, P), r"\bx\b.*floating"),
          ("params-from-data", lambda a: lambda: U.params_from_data(a, bits=4), r"\bx\b.*floating"),
          ("mse", lambda a: lambda: M.mse(a, np.ones(3)), r"\bx\b.*floating"),
          ("mse-hat", lambda a: lambda: M.mse(np.ones(3), a), r"x_hat.*floating"),
          ("sqnr", lambda a: lambda: M.sqnr_db(a, np.ones(3)), r"\bx\b.*floating"),
          ("cosine", lambda a: lambda: M.cosine_similarity(a, np.ones(3)), r"\bx\b.*floating"),
      )],
    ("params-from-range-str", lambda: U.params_from_range("a", 1.0, bits=4), TypeError, r"\blo\b"),
    ("params-from-range-complex", lambda: U.params_from_range(-1.0, 1j, bits=4), TypeError, r"\bhi\b"),
    ("dequantize-float-codes", lambda: U.dequantize(np.array([0.0, 1.0]), P), TypeError, "codes"),
    ("dequantize-bool-codes", lambda: U.dequantize(np.array([True]), P), TypeError, "codes"),
    ("dequantize-int-dtype", lambda: U.dequantize(CODES, P, dtype=np.int32), TypeError, "dtype"),
    ("forward-int", lambda: D.reference_mlp().forward(np.zeros((2, 64), np.int64)), TypeError, r"\bX\b"),
    ("synthetic-int-dtype", lambda: D.synthetic_weights(3, dtype=np.int32), TypeError, "dtype"),
    ("digits-int-dtype", lambda: D.load_digits(dtype=np.int64), TypeError, "dtype"),
    ("ragged-list", lambda: R.round([[1.0, 2.0], [3.0]]), TypeError, r"\bx\b"),
    # -- bit widths: 0, negative, non-integer, too many for the code dtype
    *[(f"{name}-bits-{bits!r}", fn(bits), exc, "bits")
      for bits, exc in ((0, ValueError), (-3, ValueError), (17, ValueError), (2.5, TypeError), ("4", TypeError),
                        (4.0, TypeError), (True, TypeError), (None, TypeError))
      for name, fn in (
          ("qrange", lambda b: lambda: U.qrange(b)),
          ("code-dtype", lambda b: lambda: U.code_dtype(b)),
          ("quant-params", lambda b: lambda: _qp(bits=b)),
          ("params-from-range", lambda b: lambda: U.params_from_range(-1.0, 1.0, bits=b)),
          ("params-from-data", lambda b: lambda: U.params_from_data(X, bits=b)),
          ("quantize-tensor", lambda b: lambda: U.quantize_tensor(X, bits=b)),
      )],
    ("model-size-bits-0", lambda: M.model_size_bits(10, 0), ValueError, "bits"),
    ("model-size-bits-float", lambda: M.model_size_bits(10, 2.5), TypeError, "bits"),
    ("model-size-scale-bits", lambda: M.model_size_bits(10, 4, num_scales=1, scale_bits=0), ValueError, "scale_bits"),
    ("narrow-range-1-bit", lambda: U.qrange(1, narrow_range=True), ValueError, "narrow_range"),
    # -- flags that must be booleans
    ("qrange-signed-int", lambda: U.qrange(4, signed=1), TypeError, "signed"),
    ("code-dtype-signed-str", lambda: U.code_dtype(4, signed="yes"), TypeError, "signed"),
    ("params-symmetric-int", lambda: U.params_from_range(-1, 1, bits=4, symmetric=1), TypeError, "symmetric"),
    ("params-narrow-none", lambda: U.params_from_range(-1, 1, bits=4, narrow_range=None), TypeError, "narrow_range"),
    # -- axes out of range, group sizes that do not divide the axis
    ("params-axis-2", lambda: U.params_from_data(X, bits=4, axis=2), ValueError, "axis"),
    ("params-axis--3", lambda: U.params_from_data(X, bits=4, axis=-3), ValueError, "axis"),
    ("params-axis-float", lambda: U.params_from_data(X, bits=4, axis=1.0), TypeError, "axis"),
    ("params-axis-str", lambda: U.params_from_data(X, bits=4, axis="0"), TypeError, "axis"),
    ("quant-params-axis-str", lambda: _qp(scale=[1.0], zero_point=[0], axis="0"), TypeError, "axis"),
    ("quantize-axis-out-of-range", lambda: U.quantize(X, _qp(scale=[1.0] * 3, zero_point=[0] * 3, axis=2)),
     ValueError, "axis"),
    ("quantize-wrong-channel-count", lambda: U.quantize(X.T, PC), ValueError, "channel"),
    ("params-group-not-dividing", lambda: U.params_from_data(X, bits=4, axis=1, group_size=3), ValueError,
     "group_size"),
    ("params-group-0", lambda: U.params_from_data(X, bits=4, axis=1, group_size=0), ValueError, "group_size"),
    ("params-group-float", lambda: U.params_from_data(X, bits=4, axis=1, group_size=2.0), TypeError, "group_size"),
    ("params-group-no-axis", lambda: U.params_from_data(X, bits=4, group_size=2), ValueError, "group_size"),
    ("quant-params-group-no-axis", lambda: _qp(group_size=2), ValueError, "group_size"),
    ("quantize-group-not-dividing",
     lambda: U.quantize(X, _qp(scale=np.ones((3, 1)), zero_point=np.zeros((3, 1), int), axis=1, group_size=3)),
     ValueError, "group_size"),
    # -- ranges with lo > hi
    ("range-lo-gt-hi", lambda: U.params_from_range(1.0, -1.0, bits=4), ValueError, r"\blo\b.*<=.*\bhi\b"),
    ("range-lo-gt-hi-channel", lambda: U.params_from_range([0.0, 2.0], [1.0, 1.0], bits=4, axis=0), ValueError,
     r"\blo\b"),
    ("range-shape-mismatch", lambda: U.params_from_range([0.0, 0.0], [1.0, 1.0, 1.0], bits=4, axis=0), ValueError,
     r"\blo\b.*\bhi\b"),
    # -- scales: <= 0, NaN, inf, wrong type, not representable in the data's dtype
    *[(f"scale-{s!r}", (lambda s=s: lambda: _qp(scale=s))(), ValueError, "scale")
      for s in (0.0, -1.0, np.nan, np.inf, -np.inf, [0.5, 0.0])],
    ("scale-str", lambda: _qp(scale="1"), TypeError, "scale"),
    ("scale-bool", lambda: _qp(scale=True), TypeError, "scale"),
    ("scale-underflows-float32", lambda: U.fake_quantize(X, _qp(scale=1e-40)), ValueError, "scale"),
    ("scale-overflows-float32", lambda: U.quantize(X, _qp(scale=1e39)), ValueError, "scale"),
    ("scale-underflows-dequantize", lambda: U.dequantize(CODES, _qp(scale=1e-40)), ValueError, "scale"),
    # -- zero points outside the code range or not integers
    ("zero-point-above", lambda: _qp(zero_point=8), ValueError, "zero_point"),
    ("zero-point-below", lambda: _qp(zero_point=-9), ValueError, "zero_point"),
    ("zero-point-unsigned-negative", lambda: _qp(zero_point=-1, signed=False), ValueError, "zero_point"),
    ("zero-point-narrow", lambda: _qp(zero_point=-8, narrow_range=True), ValueError, "zero_point"),
    ("zero-point-fraction", lambda: _qp(zero_point=1.5), TypeError, "zero_point"),
    ("zero-point-nan", lambda: _qp(zero_point=np.nan), TypeError, "zero_point"),
    ("zero-point-bool", lambda: _qp(zero_point=True), TypeError, "zero_point"),
    ("zero-point-shape", lambda: _qp(scale=[1.0, 1.0], zero_point=[0], axis=0), ValueError, "zero_point"),
    ("per-tensor-array-scale", lambda: _qp(scale=[1.0, 1.0], zero_point=[0, 0]), ValueError, "axis"),
    # -- codes outside the range, params of the wrong type, bad options
    ("dequantize-codes-out-of-range", lambda: U.dequantize(np.array([100]), P), ValueError, "codes"),
    ("dequantize-codes-out-of-range-large", lambda: U.dequantize(np.full(10_000, -100, np.int16), P), ValueError,
     "codes"),
    ("quantize-params-tuple", lambda: U.quantize(X, (0.5, 0)), TypeError, "params"),
    ("fake-quantize-params-none", lambda: U.fake_quantize(X, None), TypeError, "params"),
    ("dequantize-params-dict", lambda: U.dequantize(CODES, {"scale": 1}), TypeError, "params"),
    ("levels-params", lambda: U.levels(0.5), TypeError, "params"),
    ("levels-per-channel", lambda: U.levels(PC), ValueError, "axis"),
    ("quantize-rounding", lambda: U.quantize(X, P, rounding="nearest"), ValueError, "rounding"),
    ("fake-quantize-rounding", lambda: U.fake_quantize(X, P, rounding=None), ValueError, "rounding"),
    ("round-mode", lambda: R.round([1.0], mode="up"), ValueError, "mode"),
    ("accumulate-mode", lambda: R.accumulate([1.0], step=1.0, mode="up"), ValueError, "mode"),
    ("quantize-out-dtype", lambda: U.quantize(X, P, out=np.empty(X.shape, np.int16)), ValueError, r"\bout\b"),
    ("quantize-out-shape", lambda: U.quantize(X, P, out=np.empty((4, 3), np.int8)), ValueError, r"\bout\b"),
    ("fake-quantize-out-dtype", lambda: U.fake_quantize(X, P, out=np.empty(X.shape)), ValueError, r"\bout\b"),
    ("fake-quantize-out-list", lambda: U.fake_quantize(X, P, out=[0.0] * 12), ValueError, r"\bout\b"),
    ("fake-quantize-out-readonly",
     lambda: U.fake_quantize(X, P, out=np.lib.stride_tricks.as_strided(np.empty_like(X), writeable=False)),
     ValueError, r"\bout\b"),
    # -- randomness
    ("rng-str", lambda: R.round([1.5], mode="stochastic", rng="a"), TypeError, "rng"),
    ("rng-negative", lambda: R.round_stochastic([1.5], rng=-1), ValueError, "rng"),
    ("rng-float", lambda: U.fake_quantize(X, P, rounding="stochastic", rng=1.5), TypeError, "rng"),
    ("rng-randomstate", lambda: D.synthetic_weights(3, rng=np.random.RandomState(0)), TypeError, "rng"),
    ("digits-rng-str", lambda: D.load_digits(rng="a"), TypeError, "rng"),
    # -- scalars and shapes of the rounding / data helpers
    ("accumulate-2d", lambda: R.accumulate(np.zeros((2, 2)), step=1.0), ValueError, "increments"),
    ("accumulate-step-0", lambda: R.accumulate([1.0], step=0), ValueError, "step"),
    ("accumulate-step-nan", lambda: R.accumulate([1.0], step=np.nan), ValueError, "step"),
    ("accumulate-step-str", lambda: R.accumulate([1.0], step="1"), TypeError, "step"),
    ("accumulate-start-str", lambda: R.accumulate([1.0], step=1.0, start="0"), TypeError, "start"),
    ("synthetic-distribution", lambda: D.synthetic_weights(3, distribution="cauchy"), ValueError, "distribution"),
    ("synthetic-std-0", lambda: D.synthetic_weights(3, std=0.0), ValueError, "std"),
    ("synthetic-std-str", lambda: D.synthetic_weights(3, std="1"), TypeError, "std"),
    ("synthetic-dof-2", lambda: D.synthetic_weights(3, distribution="student_t", dof=2.0), ValueError, "dof"),
    ("synthetic-shape-negative", lambda: D.synthetic_weights((2, -1)), ValueError, "shape"),
    ("synthetic-shape-float", lambda: D.synthetic_weights(2.5), TypeError, "shape"),
    ("digits-test-size-0", lambda: D.load_digits(test_size=0.0), ValueError, "test_size"),
    ("digits-test-size-1", lambda: D.load_digits(test_size=1.0), ValueError, "test_size"),
    ("digits-test-size-str", lambda: D.load_digits(test_size="a"), TypeError, "test_size"),
    ("mlp-hidden-int", lambda: D.reference_mlp(hidden=64), TypeError, "hidden"),
    ("mlp-hidden-0", lambda: D.reference_mlp(hidden=(0,)), ValueError, "hidden"),
    ("mlp-seed-str", lambda: D.reference_mlp(seed="a"), TypeError, "seed"),
    ("forward-wrong-width", lambda: D.reference_mlp().forward(np.zeros((2, 63), np.float32)), ValueError, r"\bX\b"),
    # -- metrics: shapes, signs, totals
    ("mse-shape", lambda: M.mse([1.0, 2.0], [1.0]), ValueError, r"\bx\b.*x_hat"),
    ("sqnr-no-signal", lambda: M.sqnr_db([0.0, 0.0], [1.0, 0.0]), ValueError, r"\bx\b"),
    ("kl-negative", lambda: M.kl_divergence([1.0, -1.0], [1.0, 1.0]), ValueError, r"\bp\b"),
    ("kl-q-negative", lambda: M.kl_divergence([1.0, 1.0], [1.0, -1.0]), ValueError, r"\bq\b"),
    ("kl-zero-total", lambda: M.kl_divergence([0.0, 0.0], [1.0, 1.0]), ValueError, r"\bp\b"),
    ("kl-shape", lambda: M.kl_divergence([1.0, 1.0], [1.0, 1.0, 1.0]), ValueError, r"\bp\b.*\bq\b"),
    ("kl-eps-0", lambda: M.kl_divergence([1.0], [1.0], eps=0.0), ValueError, "eps"),
    ("model-size-params-0", lambda: M.model_size_bits(0, 4), ValueError, "num_params"),
    ("model-size-scales-negative", lambda: M.model_size_bits(10, 4, num_scales=-1), ValueError, "num_scales"),
    ("compression-0", lambda: M.compression_ratio(0, 1), ValueError, "original_bits"),
    ("compression-negative", lambda: M.compression_ratio(1, -1), ValueError, "compressed_bits"),
]


@pytest.mark.parametrize("call, exc, match", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_catalogue_ids_are_unique():
    ids = [c[0] for c in CATALOGUE]
    assert len(ids) == len(set(ids))


# -- argument names in qref.metrics errors
def test_cosine_similarity_names_y():
    with pytest.raises(ValueError, match=r"\by\b"):
        M.cosine_similarity([1.0, 1.0], [np.nan, 1.0])


def test_model_size_bits_rejects_fractional_num_scales():
    with pytest.raises(TypeError, match="num_scales"):
        M.model_size_bits(10, 4, num_scales=2.5)


def test_kl_divergence_names_p_for_complex_input():
    with pytest.raises(TypeError, match=r"\bp\b"):
        M.kl_divergence([1j, 1.0], [1.0, 1.0])


# ---- empty arrays: element-wise functions return empty results --------------------------

@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 4)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_empty_arrays_elementwise(shape, dtype):
    x = np.zeros(shape, dtype)
    for mode in R.MODES:
        r = R.round(x, mode=mode, rng=0)
        assert r.shape == shape and r.dtype == dtype
    for fn in (R.round_half_even, R.round_half_away, R.round_half_up, R.round_half_down,
               R.round_floor, R.round_ceil, R.round_trunc):
        assert fn(x).shape == shape
    assert U.quantize(x, P).shape == shape and U.quantize(x, P).dtype == np.int8
    assert U.fake_quantize(x, P).shape == shape and U.fake_quantize(x, P).dtype == dtype
    assert U.dequantize(np.zeros(shape, np.int8), P, dtype=dtype).shape == shape
    assert R.accumulate(np.zeros(0, dtype), step=0.5).shape == (0,)
    if len(shape) > 1 and shape[0] == 0:
        pc = U.params_from_range(np.zeros(shape[1]) - 1, np.ones(shape[1]), bits=4, axis=1)
        assert U.fake_quantize(x, pc).shape == shape


# ---- 0-d arrays work per tensor --------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_zero_d_per_tensor(dtype):
    x = np.asarray(0.3, dtype=dtype)
    p = U.QuantParams(scale=0.25, zero_point=0, bits=4)
    assert np.ndim(U.quantize(x, p)) == 0 and int(U.quantize(x, p)) == 1
    fq = U.fake_quantize(x, p)
    assert np.ndim(fq) == 0 and fq.dtype == dtype and float(fq) == 0.25
    assert float(U.dequantize(np.asarray(np.int8(2)), p)) == 0.5
    assert float(R.round(x, mode="ceil")) == 1.0 and np.asarray(R.round(x)).dtype == dtype
    pd = U.params_from_data(np.asarray(-2.0, dtype=dtype), bits=8)
    assert float(pd.scale) == pytest.approx(2 / 255)
    assert M.mse(np.asarray(1.0), np.asarray(3.0)) == 4.0
    assert U.fake_quantize(0.3, p) == 0.25  # a Python float is a 0-d float64 array


# ---- lists, non-contiguous and read-only arrays give the same results ------------------

def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _calls():
    """Public calls that take one float array ``a`` (any layout) and return arrays or floats."""
    pc = U.params_from_range(-np.arange(1.0, 5.0), np.arange(1.0, 5.0), bits=4, axis=1)
    pg = U.params_from_range(-np.ones((3, 2)), np.ones((3, 2)), bits=4, axis=1, group_size=2)
    return {
        "round": lambda a: R.round(a, mode="half_away"),
        "round-stochastic": lambda a: R.round(a * 3, mode="stochastic", rng=5),
        "round-half-up": lambda a: R.round_half_up(a * 3),
        "quantize": lambda a: U.quantize(a, P),
        "quantize-stochastic": lambda a: U.quantize(a, P, rounding="stochastic", rng=2),
        "fake-quantize": lambda a: U.fake_quantize(a, P),
        "fake-quantize-channel": lambda a: U.fake_quantize(a, pc),
        "fake-quantize-group": lambda a: U.fake_quantize(a, pg),
        "params-from-data": lambda a: U.params_from_data(a, bits=3, axis=0).scale,
        "params-from-data-group": lambda a: U.params_from_data(a, bits=3, axis=1, group_size=2).zero_point,
        "quantize-tensor": lambda a: U.quantize_tensor(a, bits=5, symmetric=True).codes,
        "mse": lambda a: M.mse(a, a * 0.9),
        "sqnr": lambda a: M.sqnr_db(a, a * 0.9),
        "cosine": lambda a: M.cosine_similarity(a, a + 1),
        "kl": lambda a: M.kl_divergence(np.abs(a) + 0.1, np.abs(a) + 0.2),
        "accumulate": lambda a: R.accumulate(a[0], step=0.125, mode="half_down"),
    }


BASE = np.arange(12, dtype=np.float32).reshape(3, 4) / 7 - 0.75  # 3 x 4, ties included


@pytest.mark.parametrize("name", list(_calls()))
def test_layouts_give_the_same_result(name):
    fn = _calls()[name]
    base = np.ascontiguousarray(BASE)
    expected = fn(base)
    wide = np.zeros((3, 8), np.float32)
    wide[:, ::2] = base
    variants = {
        "strided": wide[:, ::2],
        "fortran": np.asfortranarray(base),
        "transposed-back": np.ascontiguousarray(base.T).T,
        "read-only": _read_only(base),
        "reversed": base[::-1][::-1],
    }
    for label, v in variants.items():
        assert not (label == "strided" and v.flags.c_contiguous)
        np.testing.assert_array_equal(fn(v), expected, err_msg=label)


def test_lists_are_accepted_as_float64_arrays():
    a = BASE.astype(np.float64)
    lst, lst2 = a.tolist(), (a * 0.9).tolist()
    pairs = [
        (R.round(lst, mode="half_away"), R.round(a, mode="half_away")),
        (R.round(lst, mode="stochastic", rng=1), R.round(a, mode="stochastic", rng=1)),
        (R.accumulate(lst[0], step=0.25), R.accumulate(a[0], step=0.25)),
        (U.quantize(lst, P), U.quantize(a, P)),
        (U.fake_quantize(lst, P), U.fake_quantize(a, P)),
        (U.params_from_data(lst, bits=3, axis=0).scale, U.params_from_data(a, bits=3, axis=0).scale),
        (U.params_from_range([-1, -2], [1, 2], bits=4, axis=0).scale,
         U.params_from_range(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), bits=4, axis=0).scale),
        (U.dequantize([[-8, 0, 7]], P), U.dequantize(np.array([[-8, 0, 7]]), P)),
        (M.mse(lst, lst2), M.mse(a, a * 0.9)),
        (M.sqnr_db(lst, lst2), M.sqnr_db(a, a * 0.9)),
        (M.cosine_similarity(lst, lst2), M.cosine_similarity(a, a * 0.9)),
        (M.kl_divergence([1, 2, 3], [3, 2, 1]), M.kl_divergence(np.array([1.0, 2, 3]), np.array([3.0, 2, 1]))),
    ]
    for got, expected in pairs:
        np.testing.assert_array_equal(got, expected)
    assert U.fake_quantize(lst, P).dtype == np.float64


def test_transposed_and_sliced_inputs_large(rng):
    # non-contiguous input above the fast-path size: the same as its contiguous copy
    x = rng.normal(size=(300, 200)).astype(np.float32)
    p = U.params_from_data(x, bits=4)
    for v in (x.T, x[:, ::2], x[::-1], _read_only(x)):
        np.testing.assert_array_equal(U.fake_quantize(v, p), U.fake_quantize(np.ascontiguousarray(v), p))
        np.testing.assert_array_equal(U.quantize(v, p), U.quantize(np.ascontiguousarray(v), p))
    codes = U.quantize(x, p)
    np.testing.assert_array_equal(U.dequantize(codes.T, p), U.dequantize(np.ascontiguousarray(codes.T), p))


# ---- inputs are never modified ---------------------------------------------------------

def _every_public_call(a, codes):
    """Call every public function that takes arrays, with ``a`` (floats) and ``codes`` (ints)."""
    p = U.params_from_data(a, bits=4)
    pc = U.params_from_data(a, bits=4, axis=0)
    for mode in R.MODES:
        R.round(a, mode=mode, rng=0)
    for fn in (R.round_half_even, R.round_half_away, R.round_half_up, R.round_half_down,
               R.round_floor, R.round_ceil, R.round_trunc):
        fn(a)
    R.round_stochastic(a, rng=1)
    R.accumulate(a[0], step=0.25, mode="stochastic", rng=0)
    R.accumulate(a[0], step=0.25, mode="half_even")
    U.params_from_data(a, bits=4, axis=1, group_size=2)
    U.params_from_range(a.min(axis=1), a.max(axis=1), bits=4, axis=0)
    for params in (p, pc):
        U.quantize(a, params)
        U.quantize(a, params, rounding="stochastic", rng=3)
        U.fake_quantize(a, params)
        U.fake_quantize(a, params, out=np.empty_like(a))
        U.quantize(a, params, out=np.empty(a.shape, params.dtype))
    U.dequantize(codes, p)
    U.dequantize(codes, pc, dtype=np.float64)
    U.quantize_tensor(a, bits=3, axis=1)
    M.mse(a, a[::-1])
    M.sqnr_db(a, a * 0.5)
    M.kl_divergence(np.abs(a), np.abs(a[::-1]) + 1)
    M.kl_divergence(np.abs(a) + 1, np.abs(a[::-1]), eps=1e-3)
    M.cosine_similarity(a, a + 1)
    M.angle_degrees(a, a + 1)


@pytest.mark.parametrize("n", [4, 5000])  # below and above the numba fast-path size
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_inputs_never_modified(rng, n, dtype):
    a = rng.normal(size=(4, n)).astype(dtype)
    codes = rng.integers(-8, 8, size=(4, n)).astype(np.int8)
    a0, c0 = a.copy(), codes.copy()
    _every_public_call(a, codes)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(codes, c0)
    assert a.flags.writeable and codes.flags.writeable


def test_params_arrays_are_not_modified_nor_shared():
    lo, hi = np.array([-1.0, -2.0]), np.array([1.0, 2.0])
    lo0, hi0 = lo.copy(), hi.copy()
    p = U.params_from_range(lo, hi, bits=4, axis=0)
    np.testing.assert_array_equal(lo, lo0)
    np.testing.assert_array_equal(hi, hi0)
    scale = np.array([0.5, 0.25])
    q = U.QuantParams(scale=scale, zero_point=np.array([1, 2]), bits=4, axis=0)
    scale[0] = 99.0  # the caller's array changes later: the parameters do not
    assert q.scale[0] == 0.5
    assert not p.scale.flags.writeable


def test_model_and_data_inputs_not_modified():
    model, d = D.reference_mlp(), D.load_digits()
    X = d.X_test[:50].copy()
    X0, W0 = X.copy(), [W.copy() for W in model.weights]
    model.forward(X, weight_quantizer=lambda W, i: U.fake_quantize(W, U.params_from_data(W, bits=4)),
                  activation_quantizer=lambda a, i: U.fake_quantize(a, U.params_from_data(a, bits=8)))
    model.accuracy(X, d.y_test[:50])
    np.testing.assert_array_equal(X, X0)
    for W, w0 in zip(model.weights, W0):
        np.testing.assert_array_equal(W, w0)
