"""Input validation shared by every public function of :mod:`qref`.

All checks live here, so that every function rejects bad input the same way and with
the same kind of message: the argument's name, what was expected, and what came.

The conventions, in one place:

* Array arguments accept anything :func:`numpy.asarray` accepts (lists, tuples, scalars,
  read-only and non-contiguous arrays). They are never modified: functions that need to
  write make their own copy.
* Tensors to be quantized must have a floating dtype (float16, float32 or float64).
  Integer, boolean and complex data raise :class:`TypeError`: silently casting an int8
  tensor of *codes* to float and quantizing it again is a classic bug.
* NaN and infinity raise :class:`ValueError`. A quantizer has no code for them and a
  silent NaN in a scale would poison a whole tensor.
* Empty arrays are accepted by element-wise functions (the result is empty too) and rejected
  by functions that must compute a statistic of the data (a range, a mean).
* 0-d arrays are accepted wherever the function is element-wise or per-tensor; asking for a
  per-channel or per-group computation on a 0-d array raises (there is no axis).
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

__all__ = [
    "as_float_array",
    "as_int_array",
    "check_bits",
    "check_axis",
    "check_choice",
    "check_positive",
    "check_range",
    "check_rng",
    "check_bool",
    "check_int",
    "check_real",
    "check_float_dtype",
    "raise_nonfinite",
    "check_fraction",
]


def as_float_array(x, name, *, allow_empty=True, allow_0d=True, finite=True):
    """Return ``x`` as a floating numpy array (no copy when it already is one).

    Raises
    ------
    TypeError
        If the dtype is not a real floating type (integer, bool, complex, object...).
    ValueError
        If the array is empty (and ``allow_empty`` is false), 0-d (and ``allow_0d`` is
        false), or holds NaN or infinity (when ``finite`` is true).
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of floats, got {type(x).__name__}: {exc}") from None
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must have a floating dtype (float16, float32 or float64), got dtype "
            f"{arr.dtype}; convert explicitly, e.g. {name}.astype(np.float32)"
        )
    if not allow_0d and arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d array")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if finite and arr.size and not np.isfinite(arr).all():
        raise_nonfinite(arr, name)
    return arr


def raise_nonfinite(arr, name):
    """Raise the ValueError for an array known to hold NaN or infinity.

    Kernels that check finiteness on the fly (to save a pass over memory) call this.
    """
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(np.isinf(arr).sum())
    raise ValueError(
        f"{name} must be finite, got {n_nan} NaN and {n_inf} infinite value(s) out of {arr.size}"
    )


def as_int_array(x, name):
    """Return ``x`` as an integer numpy array (codes), rejecting floats and bools."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype (the quantization codes), got dtype {arr.dtype}")
    return arr


def _as_int(value, name):
    """``value`` as a Python int, accepting numpy integers but not floats or bools."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def check_bits(bits, name="bits", *, low=1, high=16):
    """Check a bit width: an integer in ``[low, high]``; return it as ``int``."""
    b = _as_int(bits, name)
    if not low <= b <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {b}")
    return b


def check_axis(axis, ndim, name="axis"):
    """Check an axis against an array of ``ndim`` dimensions; return it non-negative."""
    a = _as_int(axis, name)
    if ndim == 0:
        raise ValueError(f"{name}={a} needs an array with at least one dimension, got a 0-d array")
    if not -ndim <= a < ndim:
        raise ValueError(f"{name} must be in [{-ndim}, {ndim - 1}] for an array of {ndim} dimension(s), got {a}")
    return a % ndim


def check_choice(value, name, options):
    """Check that ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")
    return value


def check_bool(value, name):
    """Check a flag: a Python or numpy bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_int(value, name, *, low=None):
    """Check an integer (numpy integers too, bools and floats refused), ``>= low`` if given."""
    v = _as_int(value, name)
    if low is not None and v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v}")
    return v


def check_real(value, name):
    """Check a finite real number (a Python or numpy scalar, not a bool); return it as ``float``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_float_dtype(dtype, name="dtype"):
    """Check that ``dtype`` names a real floating dtype (float16, float32, float64); return it."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a floating dtype such as np.float32, got {dtype!r}") from None
    if dt.kind != "f":
        raise TypeError(f"{name} must be a floating dtype (float16, float32 or float64), got {dt}")
    return dt


def check_positive(value, name, *, integer=False):
    """Check a finite, strictly positive number (an int if ``integer``); return it."""
    if integer:
        v = _as_int(value, name)
        if v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v}")
        return v
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def check_range(lo, hi, lo_name="lo", hi_name="hi"):
    """Check a (possibly per-channel) range ``lo <= hi`` of finite floats; return float64 arrays."""
    lo_arr = np.asarray(lo, dtype=np.float64) if not _is_bad_dtype(lo) else None
    hi_arr = np.asarray(hi, dtype=np.float64) if not _is_bad_dtype(hi) else None
    for arr, nm, raw in ((lo_arr, lo_name, lo), (hi_arr, hi_name, hi)):
        if arr is None:
            raise TypeError(f"{nm} must be a real number or array of them, got {np.asarray(raw).dtype}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{nm} must be finite, got {raw!r}")
    try:
        lo_b, hi_b = np.broadcast_arrays(lo_arr, hi_arr)
    except ValueError:
        raise ValueError(f"{lo_name} and {hi_name} must have the same shape, got {lo_arr.shape} and {hi_arr.shape}") from None
    if (lo_b > hi_b).any():
        i = np.flatnonzero(lo_b > hi_b)[0]
        raise ValueError(
            f"{lo_name} must be <= {hi_name}, got {lo_name}={lo_b.flat[i]!r} > {hi_name}={hi_b.flat[i]!r}"
        )
    return lo_b, hi_b


def _is_bad_dtype(value):
    kind = np.asarray(value).dtype.kind
    return kind not in "fiu"


def check_rng(rng, name="rng"):
    """Turn ``rng`` (a seed, a :class:`numpy.random.Generator` or None) into a Generator.

    ``None`` gives a fresh, unseeded generator; pass a seed for reproducible results.
    The legacy :class:`numpy.random.RandomState` is refused: it would tie results to
    numpy's global state conventions.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)) and not isinstance(rng, bool):
        if isinstance(rng, numbers.Integral) and rng < 0:
            raise ValueError(f"{name} seed must be non-negative, got {rng}")
        return np.random.default_rng(rng)
    raise TypeError(f"{name} must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def check_fraction(value, name, *, low_open=False, high_open=False):
    """Check a real number in the unit interval, ends closed or open as asked; return it as ``float``.

    ``check_fraction(p, "p", high_open=True)`` accepts :math:`[0, 1)`, e.g. a pruning rate.
    """
    v = check_real(value, name)
    if not ((0.0 < v if low_open else 0.0 <= v) and (v < 1.0 if high_open else v <= 1.0)):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a real number in {interval}, got {value!r}")
    return v
