r"""Uniform (affine) quantization: scale, zero point, codes.

A uniform quantizer with scale :math:`S > 0`, integer zero point :math:`Z` and code range
:math:`[q_{\min}, q_{\max}]` maps a real tensor :math:`r` to integer codes and back
(Jacob et al. 2018, Eq. 1; Gholami et al. 2021, Eqs. 2–3):

.. math::

    q = \mathrm{clip}\big(\mathrm{round}(r / S) + Z,\; q_{\min},\; q_{\max}\big), \qquad
    \hat r = S\,(q - Z).

:func:`fake_quantize` is the composition :math:`r \mapsto \hat r` computed in floating point
("quantize–dequantize", the forward pass of quantization-aware training).

**Choosing S and Z from a range** :math:`[\alpha, \beta]` (:func:`params_from_range`).
The range is first widened to contain 0 (:math:`\alpha \le 0 \le \beta`), so that the real
value 0, which zero padding and ReLU produce everywhere, is represented *exactly*
(Jacob et al. 2018, Sec. 2.1). Then

* asymmetric: :math:`S = (\beta - \alpha)/(q_{\max} - q_{\min})`,
  :math:`Z = q_{\min} - \mathrm{round}(\alpha / S)`, an integer inside the code range;
* symmetric: :math:`\beta = -\alpha = \max(|\alpha|, |\beta|)`, the same :math:`S`, and
  :math:`Z` fixed to the middle code, :math:`\lfloor (q_{\min} + q_{\max} + 1)/2 \rfloor`
  (0 for signed codes, :math:`2^{b-1}` for unsigned), as PyTorch does.

**Code ranges** (:func:`qrange`): signed :math:`[-2^{b-1}, 2^{b-1}-1]`, unsigned
:math:`[0, 2^b-1]`; ``narrow_range=True`` drops the lowest code (e.g. :math:`[-127, 127]`,
symmetric around 0, as TensorFlow Lite uses for weights).

**Granularity.** One :math:`(S, Z)` for the whole tensor (``axis=None``); one per channel
along ``axis`` (the other axes reduced); or one per *group* of ``group_size`` consecutive
elements along ``axis`` (separately at every position of the other axes). The parameter
arrays have shape ``()``, ``(x.shape[axis],)`` and ``x.shape`` with ``x.shape[axis]``
replaced by ``x.shape[axis] // group_size``, respectively.

**Zero range.** Because the range always contains 0, the only tensor with a zero-width
range is the all-zero tensor (or channel/group). There the scale is set to 1.0 (any scale
represents it exactly) and the zero point is chosen as for the range [0, 0]. Scales
smaller than the smallest normal float32 (``1.18e-38``) are treated the same way, so no
code path divides by zero or produces NaN.

**Semantics match PyTorch.** :func:`fake_quantize` computes, in the input's dtype (float32
for float16 input), ``(clip(rint(x * (1/S)) + Z, qmin, qmax) - Z) * S``: multiplication by the
reciprocal of the scale, round half to even, clamp. That is exactly
``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine`` for float32 input
(``tests/test_uniform.py`` compares them when torch is installed). Note ``x * (1/S)`` can
differ from ``x / S`` in the last bit, which matters only at exact ties.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

from . import rounding as _rounding
from ._numba import USE_NUMBA, njit, prange
from ._validation import (
    as_float_array,
    as_int_array,
    check_axis,
    check_bits,
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_range,
    raise_nonfinite,
)

__all__ = [
    "QuantParams",
    "QuantizedTensor",
    "qrange",
    "code_dtype",
    "params_from_range",
    "params_from_data",
    "quantize",
    "dequantize",
    "fake_quantize",
    "quantize_tensor",
    "levels",
]

MAX_BITS = 16  #: codes are stored in at most 16-bit integers
_TINY = float(np.finfo(np.float32).tiny)


def qrange(bits, *, signed=True, narrow_range=False):
    """Smallest and largest integer code of a ``bits``-bit code.

    Parameters
    ----------
    bits : int in [1, 16]
    signed : bool
        Two's complement codes ``[-2**(bits-1), 2**(bits-1) - 1]`` or unsigned ``[0, 2**bits - 1]``.
    narrow_range : bool
        Drop the lowest code (needs ``bits >= 2``).

    Returns
    -------
    (int, int)

    Examples
    --------
    >>> qrange(8), qrange(8, signed=False), qrange(8, narrow_range=True)
    ((-128, 127), (0, 255), (-127, 127))
    """
    bits = check_bits(bits, high=MAX_BITS)
    signed = check_bool(signed, "signed")
    narrow_range = check_bool(narrow_range, "narrow_range")
    if narrow_range and bits < 2:
        raise ValueError(f"narrow_range needs bits >= 2 (a 1-bit narrow range has one code), got bits={bits}")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return qmin + int(narrow_range), qmax


def code_dtype(bits, *, signed=True):
    """The smallest numpy integer dtype that holds ``bits``-bit codes.

    Examples
    --------
    >>> code_dtype(4), code_dtype(8, signed=False), code_dtype(12)
    (dtype('int8'), dtype('uint8'), dtype('int16'))
    """
    bits = check_bits(bits, high=MAX_BITS)
    if check_bool(signed, "signed"):
        return np.dtype(np.int8 if bits <= 8 else np.int16)
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


@dataclass(frozen=True)
class QuantParams:
    """The parameters of a uniform quantizer: scale, zero point and code range.

    Parameters
    ----------
    scale : float or array of float > 0
        Shape ``()`` per tensor, ``(C,)`` per channel, or the grouped shape per group
        (see the module docstring).
    zero_point : int or array of int
        Same shape as ``scale``; every value inside ``[qmin, qmax]``.
    bits : int in [1, 16]
    signed : bool
    narrow_range : bool
    axis : int or None
        Channel axis for per-channel and per-group parameters.
    group_size : int or None
        Group length along ``axis`` for per-group parameters.

    Raises
    ------
    ValueError
        For a non-positive or non-finite scale, a zero point outside the code range or not an
        integer, mismatched shapes, or ``group_size`` without ``axis``.

    Examples
    --------
    >>> p = QuantParams(scale=0.5, zero_point=3, bits=4, signed=False)
    >>> p.qmin, p.qmax, p.granularity
    (0, 15, 'tensor')
    """

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool = True
    narrow_range: bool = False
    axis: int | None = None
    group_size: int | None = None
    qmin: int = field(init=False)
    qmax: int = field(init=False)

    def __post_init__(self):
        set_ = object.__setattr__
        qmin, qmax = qrange(self.bits, signed=self.signed, narrow_range=self.narrow_range)
        set_(self, "bits", int(self.bits))
        set_(self, "qmin", qmin)
        set_(self, "qmax", qmax)
        scale = np.asarray(self.scale)
        if scale.dtype.kind not in "fiu":
            raise TypeError(f"scale must be a real number or array, got dtype {scale.dtype}")
        scale = scale.astype(np.float64)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"scale must be finite and > 0 everywhere, got {self.scale!r}")
        zp = np.asarray(self.zero_point)
        if zp.dtype.kind == "f":
            if not np.array_equal(zp, np.round(zp)):
                raise TypeError(f"zero_point must hold integers (codes), got {self.zero_point!r}")
            zp = zp.astype(np.int64)
        zp = as_int_array(zp, "zero_point").astype(np.int64)
        if zp.shape != scale.shape:
            raise ValueError(f"zero_point must have the shape of scale {scale.shape}, got {zp.shape}")
        if ((zp < qmin) | (zp > qmax)).any():
            raise ValueError(f"zero_point must lie in the code range [{qmin}, {qmax}], got {self.zero_point!r}")
        if self.axis is not None:
            set_(self, "axis", check_int(self.axis, "axis"))
        if self.group_size is not None:
            set_(self, "group_size", check_positive(self.group_size, "group_size", integer=True))
            if self.axis is None:
                raise ValueError("group_size needs an axis: groups are taken along it")
        if self.axis is None and scale.ndim != 0:
            raise ValueError(f"per-tensor parameters (axis=None) need a scalar scale, got shape {scale.shape}")
        if self.axis is not None and self.group_size is None and scale.ndim != 1:
            raise ValueError(f"per-channel parameters need a 1-d scale (one per channel), got shape {scale.shape}")
        scale.setflags(write=False)
        zp.setflags(write=False)
        set_(self, "scale", scale)
        set_(self, "zero_point", zp)

    # The generated __eq__/__hash__ would compare arrays with `==` (ambiguous for per-channel
    # parameters) and hash them (unhashable): compare and hash by value instead.
    def __eq__(self, other):
        if not isinstance(other, QuantParams):
            return NotImplemented
        return (self._key() == other._key() and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.zero_point, other.zero_point))

    def __hash__(self):
        return hash((self._key(), self.scale.tobytes(), self.zero_point.tobytes()))

    def _key(self):
        return (self.bits, bool(self.signed), bool(self.narrow_range), self.axis, self.group_size, self.scale.shape)

    @property
    def granularity(self):
        """``"tensor"``, ``"channel"`` or ``"group"``."""
        if self.axis is None:
            return "tensor"
        return "channel" if self.group_size is None else "group"

    @property
    def dtype(self):
        """The integer dtype of the codes."""
        return code_dtype(self.bits, signed=self.signed)

    def broadcast_to(self, shape):
        """Scale and zero point expanded so they broadcast against an array of ``shape``.

        Raises ``ValueError`` when the parameters do not fit the shape (wrong number of
        channels, group size not dividing the axis).
        """
        ndim = len(shape)
        if self.axis is None:
            return self.scale, self.zero_point
        axis = check_axis(self.axis, ndim)
        n = shape[axis]
        if self.group_size is None:
            if self.scale.shape != (n,):
                raise ValueError(
                    f"per-channel parameters have {self.scale.size} channel(s) but the array has {n} along axis {axis}"
                )
            bshape = [1] * ndim
            bshape[axis] = n
            return self.scale.reshape(bshape), self.zero_point.reshape(bshape)
        g = self.group_size
        _check_groups(n, g, axis)
        expected = tuple(n // g if i == axis else s for i, s in enumerate(shape))
        if self.scale.shape != expected:
            raise ValueError(f"per-group parameters have shape {self.scale.shape}, expected {expected} for shape {tuple(shape)}")
        return np.repeat(self.scale, g, axis=axis), np.repeat(self.zero_point, g, axis=axis)


def _check_groups(n, group_size, axis):
    if n % group_size:
        raise ValueError(f"group_size={group_size} must divide the length {n} of axis {axis}")


def params_from_range(lo, hi, *, bits, signed=True, symmetric=False, narrow_range=False, axis=None, group_size=None):
    r"""Scale and zero point that map the real range ``[lo, hi]`` onto the code range.

    .. math::

        \alpha = \min(lo, 0),\quad \beta = \max(hi, 0),\qquad
        S = \frac{\beta - \alpha}{q_{\max} - q_{\min}},\qquad
        Z = q_{\min} - \mathrm{round}(\alpha / S)

    (Jacob et al. 2018, Sec. 2.1 and Eq. 1; Gholami et al. 2021, Eq. 3). With
    ``symmetric=True`` the range is :math:`[-m, m]`, :math:`m = \max(|\alpha|, |\beta|)`,
    and :math:`Z` is the middle code (0 for signed codes).

    Parameters
    ----------
    lo, hi : float or array of float
        The clipping range; arrays give one quantizer per channel or group (then also pass
        ``axis`` and, for groups, ``group_size``). ``lo <= hi`` everywhere.
    bits : int in [1, 16]
    signed, symmetric, narrow_range : bool
    axis, group_size : int or None
        Recorded in the result so :func:`quantize` knows how to broadcast.

    Returns
    -------
    QuantParams

    Examples
    --------
    >>> p = params_from_range(-1.0, 3.0, bits=8, signed=False)
    >>> round(float(p.scale), 6), int(p.zero_point)
    (0.015686, 64)
    >>> p = params_from_range(-1.0, 3.0, bits=8, symmetric=True, narrow_range=True)
    >>> float(p.scale) == 3.0 / 127, int(p.zero_point)
    (True, 0)
    """
    bits = check_bits(bits, high=MAX_BITS)
    symmetric = check_bool(symmetric, "symmetric")
    qmin, qmax = qrange(bits, signed=signed, narrow_range=narrow_range)
    lo, hi = check_range(lo, hi)
    alpha, beta = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if symmetric:
        m = np.maximum(-alpha, beta)
        alpha, beta = -m, m
    scale = (beta - alpha) / (qmax - qmin)
    degenerate = scale < _TINY
    scale = np.where(degenerate, 1.0, scale)
    if symmetric:
        zero_point = np.full(scale.shape, (qmin + qmax + 1) // 2, dtype=np.int64)
    else:
        zero_point = np.clip(qmin - np.rint(alpha / scale), qmin, qmax).astype(np.int64)
    return QuantParams(
        scale=scale, zero_point=zero_point, bits=bits, signed=signed, narrow_range=narrow_range,
        axis=axis, group_size=group_size,
    )


def _reduce_minmax(x, axis, group_size):
    """Min and max of ``x`` per tensor, per channel along ``axis``, or per group."""
    if axis is None:
        if group_size is not None:
            raise ValueError("group_size needs an axis: groups are taken along it")
        return x.min(), x.max()
    axis = check_axis(axis, x.ndim)
    if group_size is None:
        others = tuple(i for i in range(x.ndim) if i != axis)
        return x.min(axis=others), x.max(axis=others)
    g = check_positive(group_size, "group_size", integer=True)
    n = x.shape[axis]
    _check_groups(n, g, axis)
    xg = np.moveaxis(x, axis, -1)
    xg = xg.reshape(xg.shape[:-1] + (n // g, g))
    lo, hi = xg.min(axis=-1), xg.max(axis=-1)
    return np.moveaxis(lo, -1, axis), np.moveaxis(hi, -1, axis)


def params_from_data(x, *, bits, signed=True, symmetric=False, narrow_range=False, axis=None, group_size=None):
    """Min–max calibration: the quantizer whose range is the data's ``[min, max]``.

    The range is that of :func:`params_from_range`, taken per tensor, per channel or per group.

    Parameters
    ----------
    x : array_like of float, non-empty
    bits, signed, symmetric, narrow_range :
        As in :func:`params_from_range`.
    axis : int or None
        Channel axis (e.g. 0 for the output channels of a ``(out, in)`` weight matrix).
    group_size : int or None
        Group length along ``axis``; must divide ``x.shape[axis]``.

    Returns
    -------
    QuantParams

    Examples
    --------
    >>> w = np.array([[-1.0, 0.5], [0.0, 2.0]], dtype=np.float32)
    >>> params_from_data(w, bits=8, symmetric=True, axis=0).scale * 255 / 2
    array([1., 2.])
    """
    x = as_float_array(x, "x", allow_empty=False)
    lo, hi = _reduce_minmax(x, axis, group_size)
    return params_from_range(
        lo, hi, bits=bits, signed=signed, symmetric=symmetric, narrow_range=narrow_range,
        axis=None if axis is None else check_axis(axis, x.ndim), group_size=group_size,
    )


# float16 holds neither 1/S for scales below ~1.5e-5 (it overflows to inf, and 0 * inf is NaN)
# nor integers above 2048 (codes of more than 11 bits): quantize, dequantize and fake_quantize
# convert float16 (exactly) to float32, compute there and round back once, as PyTorch's half
# kernels do.


def _check_params(params):
    if not isinstance(params, QuantParams):
        raise TypeError(f"params must be a qref.uniform.QuantParams, got {type(params).__name__}")


def _check_scale_fits(params, dtype):
    """The scale must survive the cast to the compute dtype: 1/S and S finite, S not 0."""
    fi = np.finfo(dtype)
    if params.scale.min() < fi.tiny or params.scale.max() > fi.max:
        raise ValueError(
            f"scale must lie in [{fi.tiny}, {fi.max}] to quantize {np.dtype(dtype)} data "
            f"(outside it scale or 1/scale overflows), got values in [{params.scale.min()}, {params.scale.max()}]"
        )


def _scaled(x, params, rounding, rng):
    """``clip(round(x * (1/S)) + Z, qmin, qmax)`` in x's dtype, broadcasting S and Z."""
    scale, zp = params.broadcast_to(x.shape)
    inv_scale = (1.0 / scale.astype(x.dtype)).astype(x.dtype)
    with np.errstate(over="ignore"):  # |x| near the float max: x/S overflows to +-inf, ...
        v = x * inv_scale
    # ... so clip to one code beyond the range first: no result changes, and round() sees no inf
    v = np.clip(v, (params.qmin - 1 - zp).astype(x.dtype), (params.qmax + 1 - zp).astype(x.dtype))
    r = np.rint(v) if rounding == "half_even" else _rounding.round(v, mode=rounding, rng=rng)
    return np.clip(r + zp.astype(x.dtype), params.qmin, params.qmax), scale.astype(x.dtype), zp.astype(x.dtype)


# ---- numba twins of the per-tensor, round-half-even path (the hot kernels) ------------
# Each kernel is a plain loop over a flat, contiguous array, computed in the array's float
# dtype exactly as the numpy twin computes it (fastmath stays off: the results are bit for bit
# those of `_scaled`). The loops stay in floating point (no float -> int -> float round trip), so
# LLVM vectorizes them. Each returns what the caller must check -- the number of non-finite
# inputs, or the smallest and largest code -- so the check costs no extra pass over memory.
# (Finiteness is tracked as one all-finite flag and counted only when it fails: a 64-bit counter
# would halve the SIMD width.)
# The `_par` drivers run the same kernel on one contiguous chunk per thread; `_run` takes them
# only for large arrays: starting the threads costs ~10 us, and on a busy machine a descheduled
# worker thread can stall a call for a scheduler time slice (milliseconds).


@njit
def _count_nonfinite(x):  # pragma: no cover - compiled
    return x.size - np.isfinite(x).sum()


@njit
def _fake_quantize_nb(x, out, inv_scale, scale, zp, qmin, qmax):  # pragma: no cover - compiled
    finite = True
    for i in range(x.size):
        v = x[i]
        finite &= np.isfinite(v)
        q = min(max(np.rint(v * inv_scale) + zp, qmin), qmax)
        out[i] = (q - zp) * scale
    return 0 if finite else _count_nonfinite(x)


@njit
def _quantize_nb(x, out, inv_scale, zp, qmin, qmax):  # pragma: no cover - compiled
    finite = True
    for i in range(x.size):
        v = x[i]
        ok = np.isfinite(v)
        finite &= ok
        q = min(max(np.rint(v * inv_scale) + zp, qmin), qmax)  # an integer-valued float: exact cast
        out[i] = q if ok else zp  # NaN has no integer value (and the caller raises anyway)
    return 0 if finite else _count_nonfinite(x)


@njit
def _dequantize_nb(codes, out, scale, zp):  # pragma: no cover - compiled
    lo, hi = codes[0], codes[0]  # codes is not empty
    for i in range(codes.size):
        c = codes[i]
        lo, hi = min(lo, c), max(hi, c)
        out[i] = (out.dtype.type(c) - zp) * scale
    return lo, hi


@njit(parallel=True)
def _fake_quantize_par(x, out, inv_scale, scale, zp, qmin, qmax, nchunks):  # pragma: no cover - compiled
    step = -(-x.size // nchunks)
    bad = 0
    for c in prange(-(-x.size // step)):  # at most nchunks chunks, none empty
        s = slice(c * step, (c + 1) * step)
        bad += _fake_quantize_nb(x[s], out[s], inv_scale, scale, zp, qmin, qmax)
    return bad


@njit(parallel=True)
def _quantize_par(x, out, inv_scale, zp, qmin, qmax, nchunks):  # pragma: no cover - compiled
    step = -(-x.size // nchunks)
    bad = 0
    for c in prange(-(-x.size // step)):  # at most nchunks chunks, none empty
        s = slice(c * step, (c + 1) * step)
        bad += _quantize_nb(x[s], out[s], inv_scale, zp, qmin, qmax)
    return bad


@njit(parallel=True)
def _dequantize_par(codes, out, scale, zp, nchunks):  # pragma: no cover - compiled
    step = -(-codes.size // nchunks)
    lo, hi = codes[0], codes[0]
    for c in prange(-(-codes.size // step)):  # at most nchunks chunks, none empty
        s = slice(c * step, (c + 1) * step)
        clo, chi = _dequantize_nb(codes[s], out[s], scale, zp)
        lo, hi = min(lo, clo), max(hi, chi)
    return lo, hi


_PARALLEL_MIN = 1 << 17  #: arrays with fewer elements run on one thread

# Without TBB numba's threads come from GNU OpenMP ("omp", not usable after fork(): a forked
# child that launches them is killed) or "workqueue" (aborts the process when two Python threads
# launch at once). So a forked child stays on one thread, and a call that finds another
# parallel launch under way runs on its own thread instead of waiting.
_parallel_lock = threading.Lock()
_forked = False


def _after_fork_in_child():
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _run(kernel, parallel, x, out, *args):
    """``kernel(x, out, *args)`` on 1-d contiguous arrays; on all numba threads if ``x`` is large."""
    if x.size >= _PARALLEL_MIN and not _forked and _parallel_lock.acquire(blocking=False):
        try:
            import numba  # only reached when USE_NUMBA: numba is importable

            return parallel(x, out, *args, numba.get_num_threads())
        finally:
            _parallel_lock.release()
    return kernel(x, out, *args)


def _writes_directly(out, xc):
    """Can a kernel write ``out`` while it reads the flat contiguous ``xc``?

    Yes if ``out`` is contiguous and either apart from ``xc`` or exactly ``xc``'s elements
    (in place); a partial overlap would let a thread overwrite values not yet read.
    """
    if not out.flags.c_contiguous:
        return False
    if not np.may_share_memory(out, xc):
        return True
    return out.dtype == xc.dtype and out.ctypes.data == xc.ctypes.data


def _fast_path(x, params, rounding):
    return USE_NUMBA and params.axis is None and rounding == "half_even" and x.size >= 4096


def _prepare_out(out, shape, dtype, name="out"):
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} must be a writable ndarray of shape {tuple(shape)} and dtype {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return out


def quantize(x, params, *, rounding="half_even", rng=None, out=None):
    r"""Real values to integer codes: :math:`q = \mathrm{clip}(\mathrm{round}(x/S) + Z, q_{\min}, q_{\max})`.

    Jacob et al. (2018), Eq. 1 solved for :math:`q`; Gholami et al. (2021), Eq. 2.

    Parameters
    ----------
    x : array_like of float, any shape
    params : QuantParams
        From :func:`params_from_range`, :func:`params_from_data` or built by hand.
    rounding : str
        A mode of :mod:`qref.rounding` (default round half to even, as PyTorch).
    rng : None, int or numpy.random.Generator
        For ``rounding="stochastic"``.
    out : ndarray, optional
        Preallocated result (shape of ``x``, dtype ``params.dtype``).

    Returns
    -------
    ndarray of ``params.dtype`` (int8, uint8, int16 or uint16), shape of ``x``

    Examples
    --------
    >>> p = QuantParams(scale=0.5, zero_point=0, bits=4)
    >>> quantize(np.array([-9.0, -0.25, 0.25, 0.75, 9.0]), p)
    array([-8,  0,  0,  2,  7], dtype=int8)
    """
    _check_params(params)
    check_choice(rounding, "rounding", _rounding.MODES)
    if np.asarray(x).dtype == np.float16:  # float16: computed in float32 (note above _check_params)
        return quantize(np.asarray(x, dtype=np.float32), params, rounding=rounding, rng=rng, out=out)
    fast = _fast_path(np.asarray(x), params, rounding)
    x = as_float_array(x, "x", finite=not fast)
    _check_scale_fits(params, x.dtype)
    out = _prepare_out(out, x.shape, params.dtype)
    if fast:
        dt = x.dtype.type
        xc = np.ascontiguousarray(x).reshape(-1)
        direct = _writes_directly(out, xc)
        tmp = out.reshape(-1) if direct else np.empty(x.size, params.dtype)
        bad = _run(_quantize_nb, _quantize_par, xc, tmp,
                   dt(1.0 / dt(params.scale)), dt(params.zero_point), dt(params.qmin), dt(params.qmax))
        if bad:
            raise_nonfinite(x, "x")
        if not direct:
            out[...] = tmp.reshape(x.shape)
        return out
    q, _, _ = _scaled(x, params, rounding, rng)
    out[...] = q
    return out


def dequantize(codes, params, *, dtype=np.float32):
    r"""Integer codes back to reals: :math:`\hat r = S (q - Z)` (Jacob et al. 2018, Eq. 1).

    Parameters
    ----------
    codes : array_like of int
    params : QuantParams
    dtype : float dtype of the result (default float32)

    Returns
    -------
    ndarray of ``dtype``, shape of ``codes``

    Examples
    --------
    >>> p = QuantParams(scale=0.5, zero_point=1, bits=4, signed=False)
    >>> dequantize(np.array([0, 1, 15], dtype=np.uint8), p)
    array([-0.5,  0. ,  7. ], dtype=float32)
    """
    _check_params(params)
    codes = as_int_array(codes, "codes")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    _check_scale_fits(params, np.float32 if dtype == np.float16 else dtype)
    if dtype == np.float16:  # float16: computed in float32 (note above _check_params)
        return dequantize(codes, params, dtype=np.float32).astype(np.float16)
    if USE_NUMBA and params.axis is None and codes.size >= 4096:  # range checked in the same pass
        out = np.empty(codes.size, dtype=dtype)
        dt = dtype.type
        lo, hi = _run(_dequantize_nb, _dequantize_par, np.ascontiguousarray(codes).reshape(-1), out,
                      dt(params.scale), dt(params.zero_point))
        if params.qmin <= lo and hi <= params.qmax:
            return out.reshape(codes.shape)
    if codes.size and (codes.min() < params.qmin or codes.max() > params.qmax):
        raise ValueError(f"codes must lie in [{params.qmin}, {params.qmax}], got values in [{codes.min()}, {codes.max()}]")
    scale, zp = params.broadcast_to(codes.shape)
    return ((codes.astype(dtype) - zp.astype(dtype)) * scale.astype(dtype)).astype(dtype, copy=False)


def fake_quantize(x, params, *, rounding="half_even", rng=None, out=None):
    r"""Quantize then dequantize, in floating point: :math:`\hat x = S\,(q(x) - Z)`.

    .. math::

        \hat x = S\left(\mathrm{clip}\big(\mathrm{round}(x/S) + Z, q_{\min}, q_{\max}\big) - Z\right)

    the "simulated quantization" of Jacob et al. (2018), Sec. 3, Eq. 12 (with their
    clamp-round-scale), computed exactly as ``torch.fake_quantize_per_tensor_affine``
    (per channel: ``torch.fake_quantize_per_channel_affine``) for float32 input: reciprocal
    scale, round half to even, clamp (see the module docstring).

    Parameters
    ----------
    x : array_like of float, any shape
    params : QuantParams
    rounding : str
        A mode of :mod:`qref.rounding`.
    rng : None, int or numpy.random.Generator
        For ``rounding="stochastic"``.
    out : ndarray, optional
        Preallocated result, same shape and dtype as ``x`` (may not be ``x`` itself's memory
        if you want ``x`` kept).

    Returns
    -------
    ndarray, same shape and dtype as ``x``

    Examples
    --------
    >>> x = np.array([-1.0, -0.3, 0.0, 0.26, 0.9, 5.0], dtype=np.float32)
    >>> p = params_from_range(-1.0, 1.0, bits=3, symmetric=True, narrow_range=True)
    >>> fake_quantize(x, p)   # levels are multiples of 1/3, clipped to [-1, 1]
    array([-1.        , -0.33333334,  0.        ,  0.33333334,  1.        ,
            1.        ], dtype=float32)
    """
    _check_params(params)
    check_choice(rounding, "rounding", _rounding.MODES)
    if np.asarray(x).dtype == np.float16:  # float16: computed in float32 (note above _check_params)
        xa = np.asarray(x)
        out = _prepare_out(out, xa.shape, xa.dtype)
        out[...] = fake_quantize(xa.astype(np.float32), params, rounding=rounding, rng=rng)
        return out
    fast = _fast_path(np.asarray(x), params, rounding)
    x = as_float_array(x, "x", finite=not fast)
    _check_scale_fits(params, x.dtype)
    out = _prepare_out(out, x.shape, x.dtype)
    if fast:
        dt = x.dtype.type
        scale = dt(params.scale)
        xc = np.ascontiguousarray(x).reshape(-1)
        direct = _writes_directly(out, xc)
        tmp = out.reshape(-1) if direct else np.empty(x.size, x.dtype)
        bad = _run(_fake_quantize_nb, _fake_quantize_par, xc, tmp,
                   dt(dt(1.0) / scale), scale, dt(params.zero_point), dt(params.qmin), dt(params.qmax))
        if bad:
            raise_nonfinite(x, "x")
        if not direct:
            out[...] = tmp.reshape(x.shape)
        return out
    q, scale, zp = _scaled(x, params, rounding, rng)
    out[...] = (q - zp) * scale
    return out


def levels(params):
    """The real values a per-tensor quantizer can output, ascending: ``S * (q - Z)``.

    Examples
    --------
    >>> levels(QuantParams(scale=0.5, zero_point=0, bits=2))
    array([-1. , -0.5,  0. ,  0.5])
    """
    _check_params(params)
    if params.axis is not None:
        raise ValueError("levels() needs per-tensor parameters (axis=None); index a channel first")
    q = np.arange(params.qmin, params.qmax + 1, dtype=np.float64)
    return float(params.scale) * (q - float(params.zero_point))


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes together with the parameters that give them meaning.

    Examples
    --------
    >>> t = quantize_tensor(np.linspace(-1, 1, 5, dtype=np.float32), bits=8, symmetric=True)
    >>> t.codes.dtype, t.nbits
    (dtype('int8'), 40)
    >>> bool(np.allclose(t.dequantize(), np.linspace(-1, 1, 5), atol=float(t.params.scale) / 2))
    True
    """

    codes: np.ndarray
    params: QuantParams

    def dequantize(self, dtype=np.float32):
        """The real values the codes stand for."""
        return dequantize(self.codes, self.params, dtype=dtype)

    @property
    def nbits(self):
        """Payload size in bits (codes only, ``bits`` per element, as if bit-packed)."""
        return int(self.codes.size) * self.params.bits


def quantize_tensor(x, *, bits, signed=True, symmetric=False, narrow_range=False, axis=None, group_size=None,
                    rounding="half_even", rng=None):
    """Min–max calibrate and quantize in one call; returns a :class:`QuantizedTensor`."""
    params = params_from_data(x, bits=bits, signed=signed, symmetric=symmetric, narrow_range=narrow_range,
                              axis=axis, group_size=group_size)
    return QuantizedTensor(quantize(x, params, rounding=rounding, rng=rng), params)
