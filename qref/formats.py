r"""Number formats: which real numbers a handful of bits can name, and rounding to them.

Every quantizer in this book maps real numbers to the values of some *number format*. This
module enumerates those values exactly and rounds to them, so that a chapter can show where
they lie and how far apart they are.

* **fixed point** Q(m.n) (:class:`FixedPointFormat`, :func:`fixed_point_values`,
  :func:`to_fixed_point`): the values :math:`k\,2^{-n}` for every integer :math:`k` of
  :math:`m + n` bits plus a sign bit;
* **floating point** E\ *e*\ M\ *m* (:class:`FloatFormat`, :func:`to_float_format`, the named
  formats :data:`FP32`, :data:`FP16`, :data:`BF16`, :data:`FP8_E4M3`, :data:`FP8_E5M2` and
  the dict :data:`FORMATS`): :math:`\pm 2^{E - \text{bias}}(1 + M 2^{-m})` and the
  subnormals :math:`\pm 2^{1 - \text{bias}}\, M 2^{-m}`;
* **dynamic fixed point** (:func:`dfp_frac_bits`, :func:`to_dynamic_fixed_point`,
  :func:`overflow_rate`, :class:`DynamicFixedPoint`): a word of :math:`B` bits whose
  fractional length is chosen per tensor (per layer) from the data, and updated during
  training by the overflow-rate rule of Courbariaux et al. (2014);
* **Flexpoint** (:class:`FlexpointFormat`, :data:`FLEX16_5`, :func:`flexpoint_exponent`,
  :func:`flexpoint_encode`, :func:`flexpoint_decode`, :func:`to_flexpoint`,
  :class:`Autoflex`): a tensor of 16-bit integer mantissas with one shared 5-bit exponent,
  managed by the Autoflex policy of Köster et al. (2017).

Integers are fixed point with no fractional bits (``int8`` is Q7.0). Fixed point spaces its
values *uniformly*: the absolute gap is :math:`2^{-n}` everywhere. Floating point spaces
them *logarithmically*: the gap relative to the value stays between :math:`2^{-m-1}` and
:math:`2^{-m}` over the whole normal range, which is what lets 16 bits cover
:math:`[6\cdot 10^{-8}, 65504]` (fp16) or even the whole float32 range (bfloat16).

Every static format is a frozen dataclass with the same small interface, ``bits``, ``max`` and
``values()``, and a ``to_*`` function that rounds an array to it. Dynamic fixed point and
Flexpoint are fixed point whose scale :math:`2^{e}` is shared by a whole tensor and *moves*:
for one tensor and one exponent they are exactly :func:`to_fixed_point` (tested), and what
they add is the rule that picks the exponent, from the data or from the history of the
training run (the stateful trackers :class:`DynamicFixedPoint` and :class:`Autoflex`).

Exactness: everything is computed in float64, where scaling by a power of two is exact, so
the values and the rounding are exact for every format whose values are float64 numbers
(all formats here). The result of a rounding has the input's dtype: the named formats are
subsets of float32, so float32 and float64 inputs lose nothing in that last cast.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from . import rounding as _rounding
from ._validation import (
    as_float_array,
    as_int_array,
    check_bits,
    check_bool,
    check_choice,
    check_float_dtype,
    check_int,
    check_positive,
    check_real,
    check_rng,
)

__all__ = [
    "FixedPointFormat",
    "fixed_point_values",
    "to_fixed_point",
    "FloatFormat",
    "to_float_format",
    "INF_NAN",
    "FP32",
    "FP16",
    "BF16",
    "FP8_E4M3",
    "FP8_E5M2",
    "FORMATS",
    "MAX_ENUMERATE_BITS",
    "MAX_FRAC_BITS",
    "DFP_RULES",
    "dfp_frac_bits",
    "overflow_rate",
    "to_dynamic_fixed_point",
    "DynamicFixedPoint",
    "FlexpointFormat",
    "FLEX16_5",
    "flexpoint_exponent",
    "flexpoint_encode",
    "flexpoint_decode",
    "to_flexpoint",
    "Autoflex",
]

#: Largest total bit width for which ``values()`` enumerates a format (2**20 values).
MAX_ENUMERATE_BITS = 20


# --------------------------------------------------------------------------------------
# Fixed point
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedPointFormat:
    r"""The fixed-point format Q(m.n): integers of :math:`m + n` bits (plus a sign) times :math:`2^{-n}`.

    A value is :math:`k\,\varepsilon` with step :math:`\varepsilon = 2^{-n}` and integer code

    .. math::

        k \in [-2^{m+n},\; 2^{m+n} - 1] \ \text{(signed)}, \qquad
        k \in [0,\; 2^{m+n} - 1] \ \text{(unsigned)},

    so a signed Q(m.n) number covers :math:`[-2^m, 2^m - 2^{-n}]` with a word of
    :math:`1 + m + n` bits: the sign bit is *not* counted in ``int_bits`` (the "Q" notation of
    DSP manuals; ``int8`` is Q7.0, a 16-bit fraction Q0.15). Gupta et al. (2015, Sec. 3)
    write the same format as :math:`\langle \mathrm{IL}, \mathrm{FL}\rangle` with the sign
    counted in the integer length, :math:`\mathrm{IL} = m + 1`, :math:`\mathrm{FL} = n`.

    Parameters
    ----------
    int_bits : int >= 0
        :math:`m`, bits left of the binary point (excluding the sign bit).
    frac_bits : int >= 0
        :math:`n`, bits right of the binary point.
    signed : bool
        Two's complement (one extra sign bit) or unsigned.

    Raises
    ------
    TypeError, ValueError
        For non-integer or negative bit counts, or a word longer than 32 bits.

    References
    ----------
    Gupta, Agrawal, Gopalakrishnan, Narayanan (2015), "Deep learning with limited numerical
    precision", ICML, Sec. 3.

    Examples
    --------
    >>> q = FixedPointFormat(3, 4)           # Q3.4: 8-bit word, step 1/16
    >>> q.name, q.bits, q.step, q.min, q.max
    ('Q3.4', 8, 0.0625, -8.0, 7.9375)
    """

    int_bits: int
    frac_bits: int
    signed: bool = True

    def __post_init__(self):
        object.__setattr__(self, "int_bits", check_bits(self.int_bits, "int_bits", low=0, high=32))
        object.__setattr__(self, "frac_bits", check_bits(self.frac_bits, "frac_bits", low=0, high=32))
        object.__setattr__(self, "signed", check_bool(self.signed, "signed"))
        word = int(self.signed) + self.int_bits + self.frac_bits
        if not 1 <= word <= 32:
            raise ValueError(
                f"the word length (sign bit + int_bits + frac_bits) must be in [1, 32], got {word}"
            )

    @property
    def name(self):
        """``"Q{m}.{n}"`` (signed) or ``"UQ{m}.{n}"`` (unsigned)."""
        return f"{'' if self.signed else 'U'}Q{self.int_bits}.{self.frac_bits}"

    @property
    def bits(self):
        """Word length: sign bit (if signed) + ``int_bits`` + ``frac_bits``."""
        return int(self.signed) + self.int_bits + self.frac_bits

    @property
    def step(self):
        r"""The spacing :math:`2^{-n}` between neighbouring values (everywhere the same)."""
        return 2.0 ** -self.frac_bits

    @property
    def qmin(self):
        """Smallest integer code."""
        return -(2 ** (self.int_bits + self.frac_bits)) if self.signed else 0

    @property
    def qmax(self):
        """Largest integer code."""
        return 2 ** (self.int_bits + self.frac_bits) - 1

    @property
    def min(self):
        """Smallest representable value (``-2**int_bits``, or 0 when unsigned)."""
        return self.qmin * self.step

    @property
    def max(self):
        """Largest representable value, ``2**int_bits - 2**-frac_bits``."""
        return self.qmax * self.step

    def values(self):
        """All representable values, ascending.

        Returns
        -------
        ndarray of float64, shape (2**bits,)

        Raises
        ------
        ValueError
            If the word is longer than :data:`MAX_ENUMERATE_BITS` bits.
        """
        _check_enumerable(self.bits, self.name)
        return np.arange(self.qmin, self.qmax + 1, dtype=np.float64) * self.step


def fixed_point_values(int_bits, frac_bits, *, signed=True):
    r"""All values of the fixed-point format Q(``int_bits``.``frac_bits``), ascending.

    The values :math:`k\,2^{-n}` for every code :math:`k` of :class:`FixedPointFormat`:
    a uniform grid of step :math:`2^{-n}` from :math:`-2^m` (or 0) to :math:`2^m - 2^{-n}`.

    Parameters
    ----------
    int_bits, frac_bits : int >= 0
        :math:`m` and :math:`n` (the sign bit is extra when ``signed``).
    signed : bool

    Returns
    -------
    ndarray of float64, shape (2**bits,)

    Raises
    ------
    TypeError, ValueError
        For bad bit counts, or a word of more than :data:`MAX_ENUMERATE_BITS` bits.

    Examples
    --------
    >>> fixed_point_values(1, 1)            # Q1.1: 3-bit word
    array([-2. , -1.5, -1. , -0.5,  0. ,  0.5,  1. ,  1.5])
    >>> fixed_point_values(2, 0, signed=False)
    array([0., 1., 2., 3.])
    """
    return FixedPointFormat(int_bits, frac_bits, signed).values()


def to_fixed_point(x, *, int_bits, frac_bits, signed=True, rounding="half_even", rng=None):
    r"""Round ``x`` to the fixed-point format Q(``int_bits``.``frac_bits``), saturating.

    .. math::

        \hat x = \varepsilon\,\mathrm{clip}\big(\mathrm{round}(x / \varepsilon),\,
        k_{\min},\, k_{\max}\big), \qquad \varepsilon = 2^{-n},

    the conversion of Gupta et al. (2015, Sec. 3): round to the grid, by round-to-nearest
    (their Eq. 1) or stochastically (their Eq. 2, ``rounding="stochastic"``), and saturate to
    the format's range. ``rounding`` is any mode of :func:`qref.rounding.round`.

    Parameters
    ----------
    x : array_like of float, any shape
    int_bits, frac_bits : int >= 0
        :math:`m` and :math:`n` of :class:`FixedPointFormat`.
    signed : bool
    rounding : str
        One of :data:`qref.rounding.MODES`.
    rng : None, int or numpy.random.Generator
        Only used by ``rounding="stochastic"``.

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        (computed in float64; a float16 input holds the result only if the format fits it).

    Raises
    ------
    TypeError
        If ``x`` is not floating point or a bit count is not an integer.
    ValueError
        For NaN/Inf in ``x``, bad bit counts or an unknown ``rounding``.

    References
    ----------
    Gupta, Agrawal, Gopalakrishnan, Narayanan (2015), "Deep learning with limited numerical
    precision", ICML, Sec. 3.

    Examples
    --------
    >>> x = np.array([0.30, 0.3125, -5.0, 9.0], dtype=np.float32)
    >>> to_fixed_point(x, int_bits=2, frac_bits=3)     # step 1/8, range [-4, 3.875]
    array([ 0.25 ,  0.25 , -4.   ,  3.875], dtype=float32)
    """
    fmt = FixedPointFormat(int_bits, frac_bits, signed)
    x = as_float_array(x, "x")
    check_choice(rounding, "rounding", _rounding.MODES)
    k = _rounding.round(np.ldexp(x.astype(np.float64), fmt.frac_bits), mode=rounding, rng=rng)
    k = np.clip(k, fmt.qmin, fmt.qmax)
    return np.ldexp(k, -fmt.frac_bits).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------
# Floating point
# --------------------------------------------------------------------------------------

#: How a :class:`FloatFormat` spends its all-ones exponent field.
INF_NAN = ("ieee", "fn", "none")


@dataclass(frozen=True)
class FloatFormat:
    r"""A binary floating-point format with ``exp_bits`` exponent and ``man_bits`` mantissa bits.

    A bit pattern (sign :math:`s`, exponent field :math:`E`, mantissa field :math:`M`, with
    :math:`e` and :math:`m` bits) encodes (IEEE 754-2019, Sec. 3.4)

    .. math::

        v = (-1)^s \times \begin{cases}
            2^{E - \text{bias}} \,(1 + M\,2^{-m}) & 1 \le E \quad\text{(normal)},\\
            2^{1 - \text{bias}} \,(M\,2^{-m}) & E = 0 \quad\text{(subnormal, zero)},
        \end{cases}

    with default bias :math:`2^{e-1} - 1`. What the all-ones exponent field means is the
    only difference between the formats of deep learning (``inf_nan``):

    * ``"ieee"``: it holds :math:`\pm\infty` (:math:`M = 0`) and NaNs, as in IEEE 754
      (binary16, binary32), bfloat16 (Kalamkar et al. 2019) and FP8 E5M2
      (Micikevicius et al. 2022, Sec. 3);
    * ``"fn"`` ("finite, NaN"): no infinities, and only the pattern with exponent *and*
      mantissa all ones is NaN, so the top binade holds normal numbers too: FP8 E4M3
      (Micikevicius et al. 2022, Sec. 3 and Table 1), which reaches 448 instead of 240;
    * ``"none"``: every pattern is a finite number (formats with no special values at all).

    ``subnormals=False`` drops the subnormals (flush to zero): the smallest positive value
    is then the smallest normal number.

    Parameters
    ----------
    exp_bits : int in [1, 11]
        :math:`e`. (``"ieee"`` needs at least 2.)
    man_bits : int in [0, 52]
        :math:`m`, the stored fraction bits (the precision is :math:`p = m + 1` bits).
    bias : int, optional
        Exponent bias; default :math:`2^{e-1} - 1`.
    subnormals : bool
    inf_nan : {"ieee", "fn", "none"}
    name : str, optional
        Default ``"E{e}M{m}"``.

    Raises
    ------
    TypeError, ValueError
        For bad field widths, a bias that puts values outside float64's range, or a format
        with no normal numbers.

    References
    ----------
    IEEE Computer Society (2019), IEEE Std 754-2019, Sec. 3.3–3.4 and Table 3.5
    (binary interchange formats). Kalamkar et al. (2019), "A study of BFLOAT16 for deep
    learning training" (bfloat16: 8 exponent, 7 mantissa bits). Micikevicius et al. (2022),
    "FP8 formats for deep learning", Sec. 3 and Table 1 (E4M3, E5M2).

    Examples
    --------
    >>> fp8 = FloatFormat(4, 3, inf_nan="fn")
    >>> fp8.bits, fp8.bias, fp8.max, fp8.min_normal, fp8.min_subnormal
    (8, 7, 448.0, 0.015625, 0.001953125)
    >>> FloatFormat(4, 3).max                # the same bits with IEEE conventions
    240.0
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    subnormals: bool = True
    inf_nan: str = "ieee"
    name: str | None = None

    def __post_init__(self):
        e = check_bits(self.exp_bits, "exp_bits", low=1, high=11)
        m = check_bits(self.man_bits, "man_bits", low=0, high=52)
        check_choice(self.inf_nan, "inf_nan", INF_NAN)
        object.__setattr__(self, "exp_bits", e)
        object.__setattr__(self, "man_bits", m)
        object.__setattr__(self, "subnormals", check_bool(self.subnormals, "subnormals"))
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (e - 1) - 1)
        else:
            check_bits(self.bias, "bias", low=-(2**11), high=2**11)
            object.__setattr__(self, "bias", int(self.bias))
        if self.name is None:
            object.__setattr__(self, "name", f"E{e}M{m}")
        elif not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__} {self.name!r}")
        if self._top_exponent_field() < 1:
            raise ValueError(
                f"a FloatFormat needs at least one normal binade; exp_bits={e} with "
                f"inf_nan={self.inf_nan!r} leaves none"
            )
        if self.emax > 1023 or self.emin - m < -1074:
            raise ValueError(
                f"bias={self.bias} puts the format outside float64's range "
                f"(exponents [{self.emin - m}, {self.emax}], float64 has [-1074, 1023])"
            )

    # -- the encoding -----------------------------------------------------------------

    def _top_exponent_field(self):
        """Largest exponent field holding finite numbers."""
        top = 2**self.exp_bits - 1
        if self.inf_nan == "ieee" or (self.inf_nan == "fn" and self.man_bits == 0):
            top -= 1  # all-ones exponent is all specials
        return top

    def _top_mantissa_field(self):
        """Largest mantissa field of a finite number in the top binade."""
        top = 2**self.man_bits - 1
        if self.inf_nan == "fn" and self.man_bits > 0:
            top -= 1  # S.1...1.1...1 is NaN
        return top

    # -- properties ---------------------------------------------------------------------

    @property
    def bits(self):
        """Total width: 1 + ``exp_bits`` + ``man_bits``."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self):
        r"""Exponent of the smallest normal binade, :math:`1 - \text{bias}`."""
        return 1 - self.bias

    @property
    def emax(self):
        """Exponent of the largest binade holding a finite number."""
        return self._top_exponent_field() - self.bias

    @property
    def max(self):
        r"""Largest finite value, :math:`2^{e_{\max}}(1 + M_{\max} 2^{-m})`."""
        return float(np.ldexp(1.0 + self._top_mantissa_field() * 2.0**-self.man_bits, self.emax))

    @property
    def min_normal(self):
        r"""Smallest positive normal value, :math:`2^{1 - \text{bias}}`."""
        return float(np.ldexp(1.0, self.emin))

    @property
    def max_subnormal(self):
        r"""Largest subnormal, :math:`2^{e_{\min}}(1 - 2^{-m})`; None without subnormals."""
        if not self.subnormals or self.man_bits == 0:
            return None
        return float(np.ldexp(1.0 - 2.0**-self.man_bits, self.emin))

    @property
    def min_subnormal(self):
        r"""Smallest positive subnormal, :math:`2^{e_{\min} - m}`; None without subnormals."""
        if not self.subnormals or self.man_bits == 0:
            return None
        return float(np.ldexp(1.0, self.emin - self.man_bits))

    @property
    def min_positive(self):
        """Smallest positive value: the smallest subnormal, or normal if there are none."""
        sub = self.min_subnormal
        return self.min_normal if sub is None else sub

    @property
    def eps(self):
        r"""Machine epsilon :math:`2^{-m}`: the gap between 1 and the next larger value.

        Any value in the normal range is stored with relative error at most
        :math:`\varepsilon/2` (the *unit roundoff*) by round-to-nearest.
        """
        return float(2.0**-self.man_bits)

    # -- enumeration ----------------------------------------------------------------------

    def values(self):
        r"""All finite representable values, ascending (``-0`` and ``+0`` counted once).

        For fp16 that is :math:`2^{16} - 2\cdot 2^{10}` finite bit patterns, 63488, i.e.
        63487 distinct values.

        Returns
        -------
        ndarray of float64, shape (n_values,)

        Raises
        ------
        ValueError
            If the format is wider than :data:`MAX_ENUMERATE_BITS` bits (fp32 is).

        Examples
        --------
        >>> FloatFormat(2, 1, inf_nan="none").values()      # a 4-bit float (E2M1)
        array([-6. , -4. , -3. , -2. , -1.5, -1. , -0.5,  0. ,  0.5,  1. ,  1.5,
                2. ,  3. ,  4. ,  6. ])
        """
        _check_enumerable(self.bits, self.name)
        E = np.arange(2**self.exp_bits)[:, None]  # [E][M]: exponent field, mantissa field
        M = np.arange(2**self.man_bits)[None, :]
        significand = np.where(E == 0, M, M + 2**self.man_bits).astype(np.float64)
        exponent = np.maximum(E, 1) - self.bias - self.man_bits
        mag = np.ldexp(significand, exponent)
        finite = np.zeros(mag.shape, dtype=bool)
        finite[1 : self._top_exponent_field() + 1, :] = True
        finite[self._top_exponent_field(), self._top_mantissa_field() + 1 :] = False
        finite[0, :] = True if self.subnormals else M[0] == 0
        pos = mag[finite]
        out = np.unique(np.concatenate([-pos, pos]))
        out[out == 0] = 0.0  # +0, not -0
        return out


def to_float_format(x, fmt, *, saturate=True):
    r"""Round ``x`` to the nearest value of the floating-point format ``fmt``, ties to even.

    With :math:`a = |x|`, its binade exponent :math:`k = \lfloor \log_2 a \rfloor` clamped
    below at :math:`e_{\min}` (so that tiny values land on the subnormal grid), and the
    quantum :math:`q = 2^{k - m}` of that binade,

    .. math::

        \hat x = \operatorname{sign}(x)\; q \cdot \mathrm{rint}(a / q),

    the IEEE 754 rounding attribute *roundTiesToEven* (IEEE 754-2019, Sec. 4.3.1), the
    rounding Kalamkar et al. (2019) use to convert FP32 tensors to bfloat16 and the
    conversion Micikevicius et al. (2022, Sec. 2) assume for FP8. A value that rounds
    beyond ``fmt.max`` *overflows*: with ``saturate`` it becomes :math:`\pm` ``fmt.max``
    (the saturating conversion of Micikevicius et al. 2022, Sec. 2); otherwise it becomes
    :math:`\pm\infty` (IEEE 754-2019, Sec. 7.4) or NaN for a format without infinities
    (``"fn"``). Without subnormals, magnitudes below ``fmt.min_normal`` go to the nearer of
    0 and ``fmt.min_normal`` (ties to 0). The sign of zero is kept. With ``man_bits=0``
    every significand is 1, so "ties to even" is undefined; the formula then rounds ties up
    in magnitude (:math:`1.5 \cdot 2^k \to 2^{k+1}`), except the tie between 0 and the
    smallest value, which goes to 0.

    Parameters
    ----------
    x : array_like of float, any shape
        Finite values.
    fmt : FloatFormat
    saturate : bool

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        Rounded once, from the exact input value, in float64. For float16 input and a format
        that is not a subset of float16 (bfloat16) the final cast rounds again.

    Raises
    ------
    TypeError
        If ``x`` is not floating point or ``fmt`` is not a :class:`FloatFormat`.
    ValueError
        For NaN/Inf in ``x``, or ``saturate=False`` with a format that has neither infinity
        nor NaN (``inf_nan="none"``: there is nothing to overflow to).

    References
    ----------
    IEEE Computer Society (2019), IEEE Std 754-2019, Secs. 4.3.1 and 7.4.
    Kalamkar et al. (2019), "A study of BFLOAT16 for deep learning training".
    Micikevicius et al. (2022), "FP8 formats for deep learning", Secs. 2–3.

    Examples
    --------
    >>> x = np.array([1.0 + 2**-11, 1.0 + 3 * 2**-11, 1e-8, 70000.0], dtype=np.float32)
    >>> to_float_format(x, FP16).tolist()   # tie to even, tie to even, underflow, saturation
    [1.0, 1.001953125, 0.0, 65504.0]
    >>> to_float_format(np.array([70000.0]), FP16, saturate=False)
    array([inf])
    >>> to_float_format(np.array([0.3, 500.0]), FP8_E4M3).tolist()
    [0.3125, 448.0]
    """
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a FloatFormat (e.g. qref.formats.FP16), got {type(fmt).__name__}")
    x = as_float_array(x, "x")
    saturate = check_bool(saturate, "saturate")
    if not saturate and fmt.inf_nan == "none":
        raise ValueError(
            f"saturate=False needs a format with infinity or NaN to overflow to; "
            f"{fmt.name} has inf_nan='none'"
        )
    x64 = x.astype(np.float64)
    a = np.abs(x64)
    _, e2 = np.frexp(a)  # a = f 2**e2, f in [0.5, 1): floor(log2 a) = e2 - 1 (e2 = 0 for a = 0)
    k = np.maximum(e2 - 1, fmt.emin)
    q_exp = k - fmt.man_bits  # the binade's quantum is 2**q_exp
    r = np.asarray(np.ldexp(np.rint(np.ldexp(a, -q_exp)), q_exp))  # both scalings exact
    if not fmt.subnormals:
        tiny = r < fmt.min_normal
        r[tiny] = np.where(a[tiny] > fmt.min_normal / 2, fmt.min_normal, 0.0)
    over = r > fmt.max
    if over.any():
        r[over] = fmt.max if saturate else (np.inf if fmt.inf_nan == "ieee" else np.nan)
    return np.copysign(r, x64).astype(x.dtype, copy=False)


def _check_enumerable(bits, name):
    if bits > MAX_ENUMERATE_BITS:
        raise ValueError(
            f"{name} has {bits} bits: too many values to enumerate "
            f"(values() is for formats of at most {MAX_ENUMERATE_BITS} bits)"
        )


#: IEEE 754 binary32 (float32): E8M23 (values() refuses it: 2**32 patterns).
FP32 = FloatFormat(8, 23, name="fp32")
#: IEEE 754 binary16 (float16, "half"): E5M10, max 65504.
FP16 = FloatFormat(5, 10, name="fp16")
#: bfloat16: E8M7, the exponent range of float32 (Kalamkar et al. 2019).
BF16 = FloatFormat(8, 7, name="bf16")
#: FP8 E4M3 (OCP "E4M3FN": no infinities, one NaN pattern), max 448 (Micikevicius et al. 2022).
FP8_E4M3 = FloatFormat(4, 3, inf_nan="fn", name="fp8_e4m3")
#: FP8 E5M2 (IEEE conventions), max 57344 (Micikevicius et al. 2022).
FP8_E5M2 = FloatFormat(5, 2, name="fp8_e5m2")

#: The named floating-point formats, by name.
FORMATS = {f.name: f for f in (FP32, FP16, BF16, FP8_E4M3, FP8_E5M2)}


# --------------------------------------------------------------------------------------
# Dynamic fixed point
# --------------------------------------------------------------------------------------

#: Fractional lengths (and Flexpoint exponents) are kept in [-MAX_FRAC_BITS, MAX_FRAC_BITS].
MAX_FRAC_BITS = 512

#: How :func:`dfp_frac_bits` picks a fractional length: the smallest covering scale, or Ristretto's.
DFP_RULES = ("exact", "ristretto")


def _word_codes(word_bits):
    """Code range of a two's complement word of ``word_bits`` bits (sign included)."""
    return -(2 ** (word_bits - 1)), 2 ** (word_bits - 1) - 1


def _ceil_log2(a):
    """:math:`\\lceil \\log_2 a \\rceil` of a float ``a > 0``, exactly (``frexp``, no logarithm)."""
    f, e = math.frexp(a)  # a = f 2**e, f in [0.5, 1)
    return e - 1 if f == 0.5 else e


def _covering_exponent(hi, lo, word_bits):
    """Smallest ``e`` with ``qmin 2**e <= lo`` and ``hi <= qmax 2**e``; None if ``hi == lo == 0``.

    ``hi >= 0 >= lo`` are Python floats. With ``c = ceil(log2 hi) - (B - 1)``,
    ``2**(B-1) 2**c >= hi > 2**(B-1) 2**(c-1)``, and ``qmax = 2**(B-1) - 1`` is one short of
    ``2**(B-1)``, so the answer for ``hi`` is ``c`` or ``c + 1`` (``B >= 2``). The negative
    side has the full ``2**(B-1)`` codes.
    """
    qmin, qmax = _word_codes(word_bits)
    out = []
    if hi > 0:
        c = _ceil_log2(hi) - (word_bits - 1)
        out.append(c if math.ldexp(qmax, c) >= hi else c + 1)  # ldexp: exact comparison
    if lo < 0:
        out.append(_ceil_log2(-lo) - (word_bits - 1))
    return max(out) if out else None


def _extremes(x):
    """``(max(x, 0), min(x, 0))`` as Python floats (exact: float64 holds every float32)."""
    return max(float(x.max()), 0.0), min(float(x.min()), 0.0)


def _check_frac_bits(frac_bits, name="frac_bits"):
    fl = check_int(frac_bits, name)
    if not -MAX_FRAC_BITS <= fl <= MAX_FRAC_BITS:
        raise ValueError(f"{name} must be an integer in [{-MAX_FRAC_BITS}, {MAX_FRAC_BITS}], got {fl}")
    return fl


def _round_to_pot_grid(x, exponent, word_bits, rounding, rng):
    """Codes ``clip(round(x / 2**exponent), qmin, qmax)`` as float64 (shared by DFP and Flexpoint).

    ``x`` is first clipped to one step beyond the code range, so that the scaling by
    ``2**-exponent`` cannot overflow float64; that changes no result, because everything out
    there saturates anyway.
    """
    qmin, qmax = _word_codes(word_bits)
    x64 = np.clip(x.astype(np.float64), math.ldexp(qmin - 1, exponent), math.ldexp(qmax + 1, exponent))
    k = _rounding.round(np.ldexp(x64, -exponent), mode=rounding, rng=rng)
    return np.clip(k, qmin, qmax)


def dfp_frac_bits(x, *, word_bits, rule="exact"):
    r"""The fractional length of a dynamic fixed-point tensor, chosen from its range.

    Dynamic fixed point (Courbariaux et al. 2014; Gysel et al. 2016) stores a tensor as
    :math:`B`-bit two's complement integers :math:`k \in [-2^{B-1}, 2^{B-1} - 1]` times a
    scale :math:`2^{-\mathrm{FL}}` shared by the tensor (a layer's weights, or its
    activations). The *integer length* :math:`\mathrm{IL} = B - \mathrm{FL}` (sign included)
    may be negative and FL may exceed :math:`B`: the binary point can sit outside the word.

    * ``rule="exact"``: the largest FL (the finest step) for which no element overflows,

      .. math::

          \mathrm{FL} = \max\{\, f \in \mathbb{Z} :\ -2^{B-1} 2^{-f} \le \min x,\
          \max x \le (2^{B-1} - 1)\, 2^{-f} \,\},

      so ``overflow_rate(x, word_bits=B, frac_bits=FL) == 0`` and at ``FL + 1`` it is not
      (tested). Computed with ``frexp``, exactly.
    * ``rule="ristretto"``: the integer length of Ristretto (Gysel et al. 2016) for layer
      parameters, :math:`\mathrm{IL} = \lceil \log_2 \max|x| \rceil + 1` (the ``+ 1`` is the
      sign bit) and :math:`\mathrm{FL} = B - \mathrm{IL}`. It assumes an infinitely long
      fraction: when :math:`\max|x|` is a power of two :math:`2^p` (or within one step of
      it), the largest code :math:`2^{B-1} - 1` falls one step short, and that one element
      saturates. Ristretto's FL is therefore the exact one or one more (tested).

    Parameters
    ----------
    x : array_like of float, any shape, not empty
    word_bits : int in [2, 32]
        :math:`B`, the word length including the sign bit.
    rule : {"exact", "ristretto"}

    Returns
    -------
    int
        FL, clipped to ``[-MAX_FRAC_BITS, MAX_FRAC_BITS]`` (only float64 data beyond
        :math:`2^{\pm 480}` gets there).

    Raises
    ------
    TypeError
        If ``x`` is not floating point or ``word_bits`` is not an integer.
    ValueError
        For an empty ``x``, NaN/Inf, a bad ``word_bits`` or ``rule``, or an all-zero ``x``
        (it has no range to fit; pass a fractional length yourself).

    References
    ----------
    Courbariaux, Bengio, David (2014), "Training deep neural networks with low precision
    multiplications", arXiv:1412.7024 (dynamic fixed point).
    Gysel, Motamedi, Ghiasi (2016), "Hardware-oriented approximation of convolutional neural
    networks", arXiv:1604.03168 (Ristretto; the integer length of dynamic fixed point).

    Examples
    --------
    >>> x = np.array([0.3, -0.7, 0.05])
    >>> dfp_frac_bits(x, word_bits=8)            # 0.7 <= 127 / 128: step 1/128
    7
    >>> dfp_frac_bits(np.array([1.0]), word_bits=8), dfp_frac_bits(np.array([1.0]), word_bits=8, rule="ristretto")
    (6, 7)
    """
    x = as_float_array(x, "x", allow_empty=False)
    word_bits = check_bits(word_bits, "word_bits", low=2, high=32)
    check_choice(rule, "rule", DFP_RULES)
    hi, lo = _extremes(x)
    if hi == 0 and lo == 0:
        raise ValueError(
            "x is all zeros: its range gives no fractional length; pass frac_bits explicitly"
        )
    if rule == "exact":
        fl = -_covering_exponent(hi, lo, word_bits)
    else:
        fl = word_bits - (_ceil_log2(max(hi, -lo)) + 1)
    return int(min(max(fl, -MAX_FRAC_BITS), MAX_FRAC_BITS))


def overflow_rate(x, *, word_bits, frac_bits):
    r"""Fraction of the elements of ``x`` outside the range of a dynamic fixed-point word.

    .. math::

        r(x) = \frac{1}{n}\,\#\{\, i :\ x_i > (2^{B-1} - 1)\,2^{-\mathrm{FL}}
        \ \text{or}\ x_i < -2^{B-1}\,2^{-\mathrm{FL}} \,\},

    the quantity Courbariaux et al. (2014) monitor to move the binary point during training
    (:class:`DynamicFixedPoint`). Twice the values overflow at ``frac_bits`` exactly when
    the values overflow at ``frac_bits + 1``: one integer bit fewer.

    Parameters
    ----------
    x : array_like of float, any shape, not empty
    word_bits : int in [2, 32]
        Word length, sign included.
    frac_bits : int in [-MAX_FRAC_BITS, MAX_FRAC_BITS]

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    TypeError, ValueError
        For non-float, empty or non-finite ``x``, or bad bit counts.

    References
    ----------
    Courbariaux, Bengio, David (2014), "Training deep neural networks with low precision
    multiplications", arXiv:1412.7024 (dynamic fixed point: the overflow rate).

    Examples
    --------
    >>> x = np.array([0.5, 0.99, 1.0, -1.0])      # 8 bits, FL = 7: range [-1, 127/128]
    >>> overflow_rate(x, word_bits=8, frac_bits=7)
    0.25
    """
    x = as_float_array(x, "x", allow_empty=False)
    word_bits = check_bits(word_bits, "word_bits", low=2, high=32)
    fl = _check_frac_bits(frac_bits)
    qmin, qmax = _word_codes(word_bits)
    x64 = x.astype(np.float64)
    over = (x64 > math.ldexp(qmax, -fl)) | (x64 < math.ldexp(qmin, -fl))
    return float(np.count_nonzero(over)) / x.size


def to_dynamic_fixed_point(x, *, word_bits, frac_bits=None, rule="exact", rounding="half_even", rng=None):
    r"""Round ``x`` to dynamic fixed point: :math:`B`-bit integers times one shared :math:`2^{-\mathrm{FL}}`.

    .. math::

        \hat x = 2^{-\mathrm{FL}}\,\mathrm{clip}\big(\mathrm{round}(x\, 2^{\mathrm{FL}}),\
        -2^{B-1},\ 2^{B-1} - 1\big),

    with FL given, or chosen from ``x`` by :func:`dfp_frac_bits` (per tensor, the way
    Ristretto quantizes each layer; Gysel et al. 2016). For :math:`0 \le \mathrm{FL} \le
    B - 1` this is exactly :func:`to_fixed_point` with ``int_bits = B - 1 - FL`` (tested);
    dynamic fixed point also allows FL :math:`< 0` (steps larger than 1) and FL
    :math:`> B - 1` (all values below 1 in magnitude).

    Parameters
    ----------
    x : array_like of float, any shape
        Not empty when ``frac_bits`` is None.
    word_bits : int in [2, 32]
        :math:`B`, sign included.
    frac_bits : None or int in [-MAX_FRAC_BITS, MAX_FRAC_BITS]
        FL; None chooses it from ``x`` with ``rule``.
    rule : {"exact", "ristretto"}
        See :func:`dfp_frac_bits`.
    rounding : str
        A mode of :func:`qref.rounding.round` (round to nearest in Courbariaux et al.;
        ``"stochastic"`` for the stochastic rounding of Gupta et al. 2015).
    rng : None, int or numpy.random.Generator
        For ``rounding="stochastic"``.

    Returns
    -------
    x_hat : ndarray, same shape and dtype as ``x``
    frac_bits : int
        The FL used.

    Raises
    ------
    TypeError, ValueError
        As :func:`dfp_frac_bits`, and for an unknown ``rounding``.

    References
    ----------
    Courbariaux, Bengio, David (2014), "Training deep neural networks with low precision
    multiplications", arXiv:1412.7024.
    Gysel, Motamedi, Ghiasi (2016), "Hardware-oriented approximation of convolutional neural
    networks", arXiv:1604.03168.

    Examples
    --------
    >>> w = np.array([0.013, -0.021, 0.0042], dtype=np.float32)
    >>> w_hat, fl = to_dynamic_fixed_point(w, word_bits=4)     # 4 bits, FL = 8: step 1/256
    >>> fl, (w_hat * 2**fl).tolist()
    (8, [3.0, -5.0, 1.0])
    """
    x = as_float_array(x, "x")
    word_bits = check_bits(word_bits, "word_bits", low=2, high=32)
    check_choice(rounding, "rounding", _rounding.MODES)
    if frac_bits is None:
        fl = dfp_frac_bits(x, word_bits=word_bits, rule=rule)
    else:
        check_choice(rule, "rule", DFP_RULES)
        fl = _check_frac_bits(frac_bits)
    k = _round_to_pot_grid(x, -fl, word_bits, rounding, rng)
    return np.ldexp(k, -fl).astype(x.dtype, copy=False), fl


class DynamicFixedPoint:
    r"""A dynamic fixed-point tensor whose binary point follows the data during training.

    Courbariaux et al. (2014) give every group of variables (a layer's weights, its
    activations, its gradients) one scaling factor, and update it from the *overflow rate*
    :math:`r` of :func:`overflow_rate` with a maximum overflow rate :math:`r_{\max}`: after
    each update period,

    .. math::

        \mathrm{FL} \leftarrow \begin{cases}
            \mathrm{FL} - 1 & r(x;\ \mathrm{FL}) > r_{\max}
                \quad\text{(one more integer bit)},\\
            \mathrm{FL} + 1 & r(2x;\ \mathrm{FL}) = r(x;\ \mathrm{FL} + 1) \le r_{\max}
                \quad\text{(one integer bit fewer)},\\
            \mathrm{FL} & \text{otherwise},
        \end{cases}

    one step per update. A tensor whose double would still not overflow too often does not
    need the top integer bit, so the bit moves to the fraction. The decrement test is
    "not above" :math:`r_{\max}`, as in the authors' released code. The authors use
    :math:`r_{\max} = 10^{-4}` (0.01 %).

    The first :meth:`update` (when ``frac_bits`` is None) sets FL to the exact covering
    length of :func:`dfp_frac_bits`, then applies the rule once. (The authors instead
    trained a few epochs in high precision to find the initial scaling factors.)

    Parameters
    ----------
    word_bits : int in [2, 32]
        :math:`B`, sign included (Courbariaux et al.'s 10-bit propagations and 12-bit
        updates count the sign).
    frac_bits : None or int
        Initial FL.
    max_overflow_rate : float in [0, 1)
        :math:`r_{\max}`.
    rounding : str
        Rounding of :meth:`quantize`, a mode of :func:`qref.rounding.round`.
    rng : None, int or numpy.random.Generator
        For ``rounding="stochastic"``.

    Attributes
    ----------
    frac_bits : int or None
        The current FL (None before the first :meth:`update` if not given).
    n_updates_ : int
    overflow_rate_ : float or None
        :math:`r(x; \mathrm{FL})` of the last :meth:`update`, measured *before* it moved FL.

    Raises
    ------
    TypeError, ValueError
        For bad ``word_bits``, ``frac_bits``, ``max_overflow_rate`` or ``rounding``.

    References
    ----------
    Courbariaux, Bengio, David (2014), "Training deep neural networks with low precision
    multiplications", arXiv:1412.7024 (dynamic fixed point: the scaling-factor update).

    Examples
    --------
    >>> dfp = DynamicFixedPoint(8, frac_bits=7)         # range [-1, 127/128]
    >>> dfp.update(np.array([0.2, 3.0])), dfp.overflow_rate_   # 3.0 overflows: one more integer bit
    (6, 0.5)
    >>> dfp.update(np.array([0.2, 0.1]))                # 0.4 and 0.2 would fit: one bit fewer
    7
    >>> dfp.quantize(np.array([0.3]))
    array([0.296875])
    """

    def __init__(self, word_bits, *, frac_bits=None, max_overflow_rate=1e-4, rounding="half_even", rng=None):
        self.word_bits = check_bits(word_bits, "word_bits", low=2, high=32)
        self.frac_bits = None if frac_bits is None else _check_frac_bits(frac_bits)
        rate = check_real(max_overflow_rate, "max_overflow_rate")
        if not 0 <= rate < 1:
            raise ValueError(f"max_overflow_rate must be in [0, 1), got {max_overflow_rate!r}")
        self.max_overflow_rate = rate
        self.rounding = check_choice(rounding, "rounding", _rounding.MODES)
        self.rng = check_rng(rng)
        self.n_updates_ = 0
        self.overflow_rate_ = None

    def update(self, x):
        """Move the binary point by the overflow-rate rule for the tensor ``x``; return the new FL.

        Parameters
        ----------
        x : array_like of float, not empty
            The current value of the tensor (not modified).

        Returns
        -------
        int

        Raises
        ------
        ValueError
            For empty or non-finite ``x``, or an all-zero ``x`` before FL is known.
        """
        x = as_float_array(x, "x", allow_empty=False)
        if self.frac_bits is None:
            self.frac_bits = dfp_frac_bits(x, word_bits=self.word_bits)  # raises for all zeros
        fl = self.frac_bits
        r = overflow_rate(x, word_bits=self.word_bits, frac_bits=fl)
        if r > self.max_overflow_rate:
            fl -= 1
        elif fl < MAX_FRAC_BITS and overflow_rate(x, word_bits=self.word_bits, frac_bits=fl + 1) <= self.max_overflow_rate:
            fl += 1
        self.frac_bits = max(fl, -MAX_FRAC_BITS)
        self.overflow_rate_ = r
        self.n_updates_ += 1
        return self.frac_bits

    def quantize(self, x):
        """Round ``x`` to the current format (no update); same shape and dtype.

        Raises
        ------
        ValueError
            If FL is not known yet (no ``frac_bits`` given and no :meth:`update` made).
        """
        if self.frac_bits is None:
            raise ValueError("the fractional length is not set yet: call update(x) first or pass frac_bits")
        return to_dynamic_fixed_point(x, word_bits=self.word_bits, frac_bits=self.frac_bits,
                                      rounding=self.rounding, rng=self.rng)[0]

    def __repr__(self):
        return (f"DynamicFixedPoint(word_bits={self.word_bits}, frac_bits={self.frac_bits}, "
                f"max_overflow_rate={self.max_overflow_rate})")


# --------------------------------------------------------------------------------------
# Flexpoint
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlexpointFormat:
    r"""Flexpoint flex\ *N*\ +\ *E*: a tensor of :math:`N`-bit integer mantissas with one shared :math:`E`-bit exponent.

    Every element of a Flexpoint tensor is :math:`M_i\, 2^{\kappa}`, with a two's complement
    mantissa :math:`M_i \in [-2^{N-1}, 2^{N-1} - 1]` of its own and an exponent
    :math:`\kappa` shared by the whole tensor (Köster et al. 2017, Sec. 3). Within a tensor it
    is fixed point (the arithmetic is integer arithmetic); across tensors and over training
    the exponent moves, set by an exponent-management policy (:class:`Autoflex`). flex16+5
    (:data:`FLEX16_5`) has 16-bit mantissas and a 5-bit exponent.

    The exponent field :math:`E \in [0, 2^{E_b} - 1]` encodes :math:`\kappa = E -
    \text{bias}`. The paper does not fix the bias; the default here,
    :math:`\text{bias} = (N - 1) + 2^{E_b - 1}`, centres the range of tensor maxima
    :math:`2^{N-1+\kappa}` on 1: for flex16+5, :math:`\kappa \in [-31, 0]`, maxima from
    :math:`(2^{15} - 1)\,2^{-31} \approx 1.5 \cdot 10^{-5}` to 32767.

    Parameters
    ----------
    man_bits : int in [2, 32]
        :math:`N`, mantissa bits including the sign.
    exp_bits : int in [1, 10]
        :math:`E_b`.
    exp_bias : int, optional
        Default :math:`(N - 1) + 2^{E_b - 1}`.

    Raises
    ------
    TypeError, ValueError
        For bad field widths, or a bias that puts exponents outside
        ``[-MAX_FRAC_BITS, MAX_FRAC_BITS]``.

    References
    ----------
    Köster et al. (2017), "Flexpoint: an adaptive numerical format for efficient training of
    deep neural networks", NeurIPS 30, Sec. 3.

    Examples
    --------
    >>> FLEX16_5.name, FLEX16_5.bits, FLEX16_5.exp_min, FLEX16_5.exp_max
    ('flex16+5', 16, -31, 0)
    >>> FLEX16_5.max(-10), FLEX16_5.step(-10)     # mantissa 32767, step 2**-10
    (31.9990234375, 0.0009765625)
    """

    man_bits: int = 16
    exp_bits: int = 5
    exp_bias: int | None = None

    def __post_init__(self):
        n = check_bits(self.man_bits, "man_bits", low=2, high=32)
        e = check_bits(self.exp_bits, "exp_bits", low=1, high=10)
        object.__setattr__(self, "man_bits", n)
        object.__setattr__(self, "exp_bits", e)
        bias = (n - 1) + 2 ** (e - 1) if self.exp_bias is None else check_int(self.exp_bias, "exp_bias")
        object.__setattr__(self, "exp_bias", bias)
        if self.exp_min < -MAX_FRAC_BITS or self.exp_max > MAX_FRAC_BITS:
            raise ValueError(
                f"exp_bias={bias} gives exponents [{self.exp_min}, {self.exp_max}], outside "
                f"[{-MAX_FRAC_BITS}, {MAX_FRAC_BITS}]"
            )

    @property
    def name(self):
        """``"flex{N}+{E}"``, the paper's notation."""
        return f"flex{self.man_bits}+{self.exp_bits}"

    @property
    def bits(self):
        """Bits stored per element: the mantissa (the exponent is stored once per tensor)."""
        return self.man_bits

    @property
    def qmin(self):
        """Smallest mantissa, :math:`-2^{N-1}`."""
        return _word_codes(self.man_bits)[0]

    @property
    def qmax(self):
        """Largest mantissa, :math:`2^{N-1} - 1`."""
        return _word_codes(self.man_bits)[1]

    @property
    def exp_min(self):
        r"""Smallest shared exponent, :math:`-\text{bias}`."""
        return -self.exp_bias

    @property
    def exp_max(self):
        r"""Largest shared exponent, :math:`2^{E_b} - 1 - \text{bias}`."""
        return 2**self.exp_bits - 1 - self.exp_bias

    def check_exponent(self, exponent, name="exponent"):
        """Return ``exponent`` as an int if it is a valid shared exponent of this format; else raise."""
        k = check_int(exponent, name)
        if not self.exp_min <= k <= self.exp_max:
            raise ValueError(f"{name} must be an integer in [{self.exp_min}, {self.exp_max}] for {self.name}, got {k}")
        return k

    def step(self, exponent):
        r"""Spacing :math:`2^{\kappa}` of the values of a tensor with shared exponent :math:`\kappa`."""
        return math.ldexp(1.0, self.check_exponent(exponent))

    def max(self, exponent):
        r"""Largest value :math:`(2^{N-1} - 1)\,2^{\kappa}` of a tensor with shared exponent :math:`\kappa`."""
        return math.ldexp(self.qmax, self.check_exponent(exponent))

    def values(self, exponent):
        """All values of a tensor with shared exponent ``exponent``, ascending.

        Returns
        -------
        ndarray of float64, shape (2**man_bits,)

        Raises
        ------
        ValueError
            For an exponent out of range or more than :data:`MAX_ENUMERATE_BITS` mantissa bits.
        """
        k = self.check_exponent(exponent)
        _check_enumerable(self.man_bits, self.name)
        return np.ldexp(np.arange(self.qmin, self.qmax + 1, dtype=np.float64), k)


#: flex16+5 of Köster et al. (2017): 16-bit mantissas, one 5-bit exponent per tensor.
FLEX16_5 = FlexpointFormat(16, 5)


def _check_flex_format(fmt):
    if not isinstance(fmt, FlexpointFormat):
        raise TypeError(f"fmt must be a FlexpointFormat (e.g. qref.formats.FLEX16_5), got {type(fmt).__name__}")
    return fmt


def _covering_flex_exponent(hi, lo, fmt):
    """Smallest exponent of ``fmt`` covering ``[lo, hi]``, clipped to its range (all zero: the smallest)."""
    k = _covering_exponent(hi, lo, fmt.man_bits)
    return fmt.exp_min if k is None else min(max(k, fmt.exp_min), fmt.exp_max)


def flexpoint_exponent(x, *, fmt=FLEX16_5):
    r"""The smallest shared exponent at which the tensor ``x`` does not overflow.

    .. math::

        \kappa(x) = \min\{\, \kappa :\ -2^{N-1} 2^{\kappa} \le \min x,\
        \max x \le (2^{N-1} - 1)\, 2^{\kappa} \,\},

    clipped to ``[fmt.exp_min, fmt.exp_max]``: the finest step that holds the whole tensor,
    which is what an exponent-management policy aims for (Köster et al. 2017, Sec. 3). It is
    ``-dfp_frac_bits(x, word_bits=N)`` before the clipping. An all-zero tensor gets
    ``fmt.exp_min``.

    Parameters
    ----------
    x : array_like of float, any shape, not empty
    fmt : FlexpointFormat

    Returns
    -------
    int

    Raises
    ------
    TypeError, ValueError
        For non-float, empty or non-finite ``x``, or a ``fmt`` that is not a FlexpointFormat.

    References
    ----------
    Köster et al. (2017), "Flexpoint: an adaptive numerical format for efficient training of
    deep neural networks", NeurIPS 30.

    Examples
    --------
    >>> flexpoint_exponent(np.array([0.3, -2.5]))       # 2.5 <= 32767 * 2**-13
    -13
    """
    fmt = _check_flex_format(fmt)
    x = as_float_array(x, "x", allow_empty=False)
    return _covering_flex_exponent(*_extremes(x), fmt)


def flexpoint_encode(x, *, exponent, fmt=FLEX16_5, rounding="half_even", rng=None):
    r"""The integer mantissas of ``x`` as a Flexpoint tensor with shared exponent ``exponent``.

    .. math::

        M_i = \mathrm{clip}\big(\mathrm{round}(x_i\, 2^{-\kappa}),\ -2^{N-1},\ 2^{N-1} - 1\big),

    saturating (Köster et al. 2017 detect overflows and let the exponent manager react).

    Parameters
    ----------
    x : array_like of float, any shape
    exponent : int
        :math:`\kappa`, in ``[fmt.exp_min, fmt.exp_max]``.
    fmt : FlexpointFormat
    rounding : str
        A mode of :func:`qref.rounding.round`.
    rng : None, int or numpy.random.Generator
        For ``rounding="stochastic"``.

    Returns
    -------
    ndarray of int16 (``man_bits <= 16``) or int32, same shape as ``x``

    Raises
    ------
    TypeError, ValueError
        For non-float or non-finite ``x``, a bad ``fmt``, ``exponent`` or ``rounding``.

    References
    ----------
    Köster et al. (2017), "Flexpoint: an adaptive numerical format for efficient training of
    deep neural networks", NeurIPS 30, Sec. 3.

    Examples
    --------
    >>> flexpoint_encode(np.array([0.5, -1.25, 40.0]), exponent=-10)   # 40 saturates
    array([  512, -1280, 32767], dtype=int16)
    """
    fmt = _check_flex_format(fmt)
    x = as_float_array(x, "x")
    k = fmt.check_exponent(exponent)
    check_choice(rounding, "rounding", _rounding.MODES)
    codes = _round_to_pot_grid(x, k, fmt.man_bits, rounding, rng)
    return codes.astype(np.int16 if fmt.man_bits <= 16 else np.int32)


def flexpoint_decode(mantissa, *, exponent, fmt=FLEX16_5, dtype=np.float32):
    r"""The real values :math:`M_i\, 2^{\kappa}` of a Flexpoint tensor.

    Parameters
    ----------
    mantissa : array_like of int, any shape
        Integers in ``[fmt.qmin, fmt.qmax]``.
    exponent : int
        :math:`\kappa`, in ``[fmt.exp_min, fmt.exp_max]``.
    fmt : FlexpointFormat
    dtype : float dtype
        Of the result (float32 holds every flex16 value whose exponent is at least
        :math:`-149`; float16 does not hold 16-bit mantissas).

    Returns
    -------
    ndarray of ``dtype``, same shape as ``mantissa``

    Raises
    ------
    TypeError
        For non-integer mantissas or a non-float ``dtype``.
    ValueError
        For mantissas outside the format's range or a bad ``exponent``.

    Examples
    --------
    >>> flexpoint_decode(np.array([512, -1280], dtype=np.int16), exponent=-10)
    array([ 0.5 , -1.25], dtype=float32)
    """
    fmt = _check_flex_format(fmt)
    m = as_int_array(mantissa, "mantissa")
    k = fmt.check_exponent(exponent)
    dtype = check_float_dtype(dtype)
    if m.size and (int(m.min()) < fmt.qmin or int(m.max()) > fmt.qmax):
        raise ValueError(
            f"mantissa must hold integers in [{fmt.qmin}, {fmt.qmax}] for {fmt.name}, "
            f"got values in [{int(m.min())}, {int(m.max())}]"
        )
    return np.ldexp(m.astype(np.float64), k).astype(dtype)


def to_flexpoint(x, *, exponent, fmt=FLEX16_5, rounding="half_even", rng=None):
    r"""Round ``x`` to the Flexpoint tensor with shared exponent ``exponent`` (encode, then decode).

    .. math::

        \hat x_i = 2^{\kappa}\,\mathrm{clip}\big(\mathrm{round}(x_i\, 2^{-\kappa}),\
        -2^{N-1},\ 2^{N-1} - 1\big).

    This is dynamic fixed point with word length :math:`N` and :math:`\mathrm{FL} =
    -\kappa` (tested equal to :func:`to_dynamic_fixed_point`): with a fixed exponent,
    Flexpoint *is* fixed point. Pick the exponent with :func:`flexpoint_exponent` or
    :class:`Autoflex`.

    Parameters
    ----------
    x : array_like of float, any shape
    exponent : int
        :math:`\kappa`, in ``[fmt.exp_min, fmt.exp_max]``.
    fmt : FlexpointFormat
    rounding : str
    rng : None, int or numpy.random.Generator

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        (float16 cannot hold 16-bit mantissas: its final cast rounds again).

    Raises
    ------
    TypeError, ValueError
        As :func:`flexpoint_encode`.

    References
    ----------
    Köster et al. (2017), "Flexpoint: an adaptive numerical format for efficient training of
    deep neural networks", NeurIPS 30, Sec. 3.

    Examples
    --------
    >>> x = np.array([0.1, -0.3], dtype=np.float32)
    >>> k = flexpoint_exponent(x)
    >>> k, to_flexpoint(x, exponent=k)              # step 2**-16
    (-16, array([ 0.1000061 , -0.30000305], dtype=float32))
    """
    fmt = _check_flex_format(fmt)
    x = as_float_array(x, "x")
    k = fmt.check_exponent(exponent)
    check_choice(rounding, "rounding", _rounding.MODES)
    codes = _round_to_pot_grid(x, k, fmt.man_bits, rounding, rng)
    return np.ldexp(codes, k).astype(x.dtype, copy=False)


class Autoflex:
    r"""Autoflex: predict each tensor's next Flexpoint exponent from the recent history of its maxima.

    Köster et al. (2017, Sec. 3) manage the shared exponent of every Flexpoint tensor
    *before* it is computed, from statistics of its previous values: a deque :math:`f` of
    the last :math:`l` maxima :math:`\Gamma` (in real units), from which the next maximum is
    predicted by the deque's maximum plus a margin of standard deviations; on an overflow
    the history is reset and the exponent grows. One :meth:`update` per iteration, with the
    tensor :math:`x` as computed with the current exponent :math:`\kappa`:

    1. **measure**: :math:`\Gamma = \max_i |M_i|\, 2^{\kappa}`, the largest mantissa the
       hardware sees (:func:`flexpoint_encode`, round to nearest). The tensor overflowed if
       some :math:`x_i` lies outside :math:`[-2^{N-1} 2^{\kappa}, (2^{N-1}-1) 2^{\kappa}]`;
       then its true maximum is unknown (the mantissas saturated), so the deque is cleared
       and :math:`\Gamma` is doubled;
    2. **remember**: append :math:`\Gamma` to :math:`f` (the oldest value drops out after
       :math:`l`);
    3. **predict**:

       .. math::

           \chi = \alpha\,\big(\max f + \beta\,\operatorname{std} f\big)
           + \gamma\, 2^{N-1} 2^{\kappa},

       (population standard deviation) and set the next exponent to the smallest one whose
       range holds :math:`\chi`, :math:`\kappa \leftarrow \min\{\kappa' : (2^{N-1} - 1)
       2^{\kappa'} \ge \chi\}`, clipped to the format's exponent range.

    What is simplified: the constants (:math:`l = 16`, :math:`\beta = 3`,
    :math:`\alpha = 1`, and :math:`\gamma = 100 / 2^{15}`, i.e. 100 mantissa steps of
    flex16) follow Nervana's open-source Flexpoint simulator, which the paper's experiments
    used; the simulator's special handling of tensors updated only rarely, and its separate
    initialisation pass, are not reproduced. Here the first :meth:`update` (when
    ``exponent`` is None) starts from the covering exponent of its tensor
    (:func:`flexpoint_exponent`), as if that tensor had been computed in high precision.

    Parameters
    ----------
    fmt : FlexpointFormat
    window : int >= 1
        :math:`l`, the number of maxima remembered.
    num_std : float >= 0
        :math:`\beta`.
    headroom : float >= 1
        :math:`\alpha`, a multiplicative safety factor.
    offset : float >= 0
        :math:`\gamma`, an additive margin as a fraction of the current range
        :math:`2^{N-1} 2^{\kappa}`.
    exponent : None or int
        The initial exponent.

    Attributes
    ----------
    exponent : int or None
        The exponent for the next tensor.
    maxima : tuple of float
        The deque :math:`f`, oldest first.
    predicted_max_ : float or None
        :math:`\chi` of the last update.
    overflow_ : bool
        Whether the last tensor overflowed.
    overflows_ : int
        Overflows so far.
    n_updates_ : int

    Raises
    ------
    TypeError, ValueError
        For a bad ``fmt`` or out-of-range constants.

    References
    ----------
    Köster et al. (2017), "Flexpoint: an adaptive numerical format for efficient training of
    deep neural networks", NeurIPS 30, Sec. 3 (exponent management, Autoflex).

    Examples
    --------
    >>> af = Autoflex(exponent=-14)                     # range of about +-2
    >>> af.update(np.array([0.9, -1.1]))                # fits; predict 1.1 + margin: still 2**1
    -14
    >>> af.update(np.array([5.0])), af.overflow_        # overflow: reset, double, grow
    (-12, True)
    >>> to_flexpoint(np.array([5.0]), exponent=af.exponent)
    array([5.])
    """

    def __init__(self, fmt=FLEX16_5, *, window=16, num_std=3.0, headroom=1.0, offset=100 / 2**15, exponent=None):
        self.fmt = _check_flex_format(fmt)
        self.window = check_positive(window, "window", integer=True)
        self.num_std = check_real(num_std, "num_std")
        self.headroom = check_real(headroom, "headroom")
        self.offset = check_real(offset, "offset")
        if self.num_std < 0:
            raise ValueError(f"num_std must be >= 0, got {num_std!r}")
        if self.headroom < 1:
            raise ValueError(f"headroom must be >= 1, got {headroom!r}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset!r}")
        self.exponent = None if exponent is None else self.fmt.check_exponent(exponent)
        self._maxima = deque(maxlen=self.window)
        self.predicted_max_ = None
        self.overflow_ = False
        self.overflows_ = 0
        self.n_updates_ = 0

    @property
    def maxima(self):
        """The remembered maxima :math:`f`, oldest first."""
        return tuple(self._maxima)

    def update(self, x):
        """Record the tensor ``x`` (computed with the current exponent); return the next exponent.

        Parameters
        ----------
        x : array_like of float, not empty (not modified)

        Returns
        -------
        int
        """
        x = as_float_array(x, "x", allow_empty=False)
        fmt = self.fmt
        hi, lo = _extremes(x)
        if self.exponent is None:
            self.exponent = _covering_flex_exponent(hi, lo, fmt)
        k = self.exponent
        self.overflow_ = hi > math.ldexp(fmt.qmax, k) or lo < math.ldexp(fmt.qmin, k)
        ends = _round_to_pot_grid(np.array([hi, lo]), k, fmt.man_bits, "half_even", None)
        gamma = math.ldexp(float(np.abs(ends).max()), k)  # largest |mantissa| times 2**k
        if self.overflow_:
            self._maxima.clear()
            gamma *= 2.0
            self.overflows_ += 1
        self._maxima.append(gamma)
        f = np.array(self._maxima)
        chi = self.headroom * (f.max() + self.num_std * f.std()) + self.offset * math.ldexp(1.0, fmt.man_bits - 1 + k)
        self.predicted_max_ = float(chi)
        self.exponent = _covering_flex_exponent(float(chi), 0.0, fmt)
        self.n_updates_ += 1
        return self.exponent

    def quantize(self, x, *, rounding="half_even", rng=None):
        """Round ``x`` to Flexpoint with the current exponent (no update); same shape and dtype.

        Raises
        ------
        ValueError
            If the exponent is not known yet.
        """
        if self.exponent is None:
            raise ValueError("the exponent is not set yet: call update(x) first or pass exponent")
        return to_flexpoint(x, exponent=self.exponent, fmt=self.fmt, rounding=rounding, rng=rng)

    def __repr__(self):
        return (f"Autoflex({self.fmt.name}, window={self.window}, num_std={self.num_std}, "
                f"exponent={self.exponent})")
