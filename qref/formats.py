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
  subnormals :math:`\pm 2^{1 - \text{bias}}\, M 2^{-m}`.

Integers are fixed point with no fractional bits (``int8`` is Q7.0). Fixed point spaces its
values *uniformly*: the absolute gap is :math:`2^{-n}` everywhere. Floating point spaces
them *logarithmically*: the gap relative to the value stays between :math:`2^{-m-1}` and
:math:`2^{-m}` over the whole normal range, which is what lets 16 bits cover
:math:`[6\cdot 10^{-8}, 65504]` (fp16) or even the whole float32 range (bfloat16).

Every format is a frozen dataclass with the same small interface, ``bits``, ``max`` and
``values()``, and a ``to_*`` function that rounds an array to it; formats added later
(dynamic fixed point, block floating point such as Flexpoint) follow the same pattern.

Exactness: everything is computed in float64, where scaling by a power of two is exact, so
the values and the rounding are exact for every format whose values are float64 numbers
(all formats here). The result of a rounding has the input's dtype: the named formats are
subsets of float32, so float32 and float64 inputs lose nothing in that last cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rounding as _rounding
from ._validation import as_float_array, check_bits, check_bool, check_choice

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
