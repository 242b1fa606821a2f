r"""Rounding: the last step of every quantizer.

A quantizer maps a real number to one of finitely many levels; on a uniform grid of step
:math:`\varepsilon` that is ``step * round(x / step)``, and what ``round`` does with the
fractional part decides the quantizer's bias. This module provides every rounding rule the
book uses, element-wise on floating arrays (the result has the input's dtype and shape):

=================  ============================================================  ============================
``mode``           rule for :math:`x = n + f`, :math:`n = \lfloor x\rfloor`       who uses it
=================  ============================================================  ============================
``"half_even"``    nearest; ties to the even integer                              numpy, PyTorch, IEEE 754
``"half_away"``    nearest; ties away from zero                                   C ``round``, gemmlowp
``"half_up"``      nearest; ties toward :math:`+\infty`                           ``floor(x + 0.5)``
``"half_down"``    nearest; ties toward :math:`-\infty`                           ``ceil(x - 0.5)``
``"floor"``        :math:`n`                                                      bit truncation of two's complement
``"ceil"``         :math:`n + 1` unless :math:`f = 0`
``"trunc"``        toward zero                                                    C casts ``(int) x``
``"stochastic"``   :math:`n + 1` with probability :math:`f`, else :math:`n`        Gupta et al. (2015)
=================  ============================================================  ============================

Stochastic rounding is *unbiased*: :math:`\mathbb{E}[\mathrm{round}(x)] = x`, at the price of a
variance :math:`f(1-f)` (at most 1/4) where round-to-nearest has none. The survey
(Guo 2018, Sec. 2.2.1) calls it *random rounding*: the rounded value is sampled from a
distribution parameterised by the real value.

Exactness: the fractional part is computed as ``x - trunc(x)``, which is exact in binary
floating point, so ties are detected exactly. ``floor(x + 0.5)`` is not (it rounds
0.49999999999999994 up), and neither is ``x - floor(x)`` for small negative ``x`` (for
``x = -0.49999999999999994`` it gives exactly 0.5, a false tie).
"""

from __future__ import annotations

import numpy as np

from ._numba import USE_NUMBA, njit
from ._validation import as_float_array, check_choice, check_positive, check_real, check_rng

__all__ = [
    "MODES",
    "round",
    "round_half_even",
    "round_half_away",
    "round_half_up",
    "round_half_down",
    "round_floor",
    "round_ceil",
    "round_trunc",
    "round_stochastic",
    "accumulate",
]

#: The rounding modes accepted by :func:`round` and :func:`accumulate`.
MODES = ("half_even", "half_away", "half_up", "half_down", "floor", "ceil", "trunc", "stochastic")


def round_half_even(x):
    """Round to nearest, ties to even (numpy's and PyTorch's ``round``; IEEE 754 default).

    Examples
    --------
    >>> round_half_even(np.array([0.5, 1.5, 2.5, -0.5, -1.5]))
    array([ 0.,  2.,  2., -0., -2.])
    """
    x = as_float_array(x, "x")
    return np.rint(x)


def round_half_away(x):
    """Round to nearest, ties away from zero (C's ``round``, gemmlowp's rounding).

    Examples
    --------
    >>> round_half_away(np.array([0.5, 1.5, 2.5, -0.5, -1.5]))
    array([ 1.,  2.,  3., -1., -2.])
    """
    x = as_float_array(x, "x")
    t = np.trunc(x)
    f = x - t  # exact
    return t + np.where(np.abs(f) >= 0.5, np.sign(x), 0).astype(x.dtype)


def round_half_up(x):
    """Round to nearest, ties toward plus infinity (``floor(x + 1/2)`` done exactly).

    Examples
    --------
    >>> round_half_up(np.array([0.5, 1.5, -0.5, -1.5]))
    array([ 1.,  2.,  0., -1.])
    """
    x = as_float_array(x, "x")
    t = np.trunc(x)
    f = x - t  # exact, in (-1, 1), with the sign of x
    return t + (f >= 0.5).astype(x.dtype) - (f < -0.5).astype(x.dtype)


def round_half_down(x):
    """Round to nearest, ties toward minus infinity (``ceil(x - 1/2)`` done exactly).

    Examples
    --------
    >>> round_half_down(np.array([0.5, 1.5, -0.5, -1.5]))
    array([ 0.,  1., -1., -2.])
    """
    x = as_float_array(x, "x")
    t = np.trunc(x)
    f = x - t  # exact, in (-1, 1), with the sign of x
    return t + (f > 0.5).astype(x.dtype) - (f <= -0.5).astype(x.dtype)


def round_floor(x):
    """Round toward minus infinity.

    Examples
    --------
    >>> round_floor(np.array([1.7, -1.2]))
    array([ 1., -2.])
    """
    return np.floor(as_float_array(x, "x"))


def round_ceil(x):
    """Round toward plus infinity.

    Examples
    --------
    >>> round_ceil(np.array([1.2, -1.7]))
    array([ 2., -1.])
    """
    return np.ceil(as_float_array(x, "x"))


def round_trunc(x):
    """Round toward zero (what a C cast ``(int) x`` does).

    Examples
    --------
    >>> round_trunc(np.array([1.7, -1.7]))
    array([ 1., -1.])
    """
    return np.trunc(as_float_array(x, "x"))


def round_stochastic(x, *, rng=None):
    r"""Stochastic (random) rounding: up with probability equal to the fractional part.

    .. math::

        \mathrm{SR}(x) = \begin{cases}
            \lfloor x\rfloor + 1 & \text{with probability } x - \lfloor x\rfloor,\\
            \lfloor x\rfloor & \text{otherwise,}
        \end{cases}

    the rule of Gupta et al. (2015), Eq. (2) (there on a grid of step :math:`\epsilon`;
    here the step is 1, scale first), and the survey's *random rounding* (Guo 2018,
    Sec. 2.2.1). It is unbiased, :math:`\mathbb{E}[\mathrm{SR}(x)] = x`, with variance
    :math:`f(1-f)`, :math:`f = x - \lfloor x\rfloor`.

    Parameters
    ----------
    x : array_like of float, any shape
    rng : None, int or numpy.random.Generator
        Source of randomness; the same seed gives the same result.

    Returns
    -------
    ndarray, same shape and dtype as ``x``

    References
    ----------
    Gupta, Agrawal, Gopalakrishnan, Narayanan (2015), "Deep learning with limited
    numerical precision", ICML, Eq. (2).

    Examples
    --------
    >>> r = round_stochastic(np.full(100_000, 0.25), rng=0)
    >>> float(r.mean())  # close to 0.25: unbiased
    0.25015
    >>> sorted(set(r.tolist()))
    [0.0, 1.0]
    """
    x = as_float_array(x, "x")
    gen = check_rng(rng)
    t = np.trunc(x)
    f = x - t  # exact, in (-1, 1); x - floor(x) = f or 1 + f, which may round
    u = gen.random(x.shape)  # float64 uniforms in [0, 1)
    # up from floor(x) with probability x - floor(x): u < f when f >= 0, and u < 1 + f when
    # f < 0, tested as u - 1 < f (exact) since 1 + f may round
    neg = f < 0
    return t - neg.astype(x.dtype) + (np.where(neg, u - 1.0, u) < f).astype(x.dtype)


_ROUNDERS = {
    "half_even": round_half_even,
    "half_away": round_half_away,
    "half_up": round_half_up,
    "half_down": round_half_down,
    "floor": round_floor,
    "ceil": round_ceil,
    "trunc": round_trunc,
}


def round(x, *, mode="half_even", rng=None):  # noqa: A001 - the module's entry point
    """Round ``x`` element-wise to integers (as floats) with the rounding rule ``mode``.

    Parameters
    ----------
    x : array_like of float, any shape (0-d and empty arrays included)
    mode : str
        One of :data:`MODES`; see the module docstring for the rules.
    rng : None, int or numpy.random.Generator
        Only used by ``mode="stochastic"``.

    Returns
    -------
    ndarray, same shape and dtype as ``x``

    Raises
    ------
    TypeError
        If ``x`` is not floating point.
    ValueError
        If ``x`` holds NaN/Inf or ``mode`` is unknown.

    Examples
    --------
    >>> x = np.array([-2.5, -0.5, 0.5, 2.5], dtype=np.float32)
    >>> round(x, mode="half_even")
    array([-2., -0.,  0.,  2.], dtype=float32)
    >>> round(x, mode="half_away")
    array([-3., -1.,  1.,  3.], dtype=float32)
    """
    check_choice(mode, "mode", MODES)
    if mode == "stochastic":
        return round_stochastic(x, rng=rng)
    return _ROUNDERS[mode](x)


# --------------------------------------------------------------------------------------
# Low-precision accumulation: why stochastic rounding lets small updates survive
# --------------------------------------------------------------------------------------

_MODE_ID = {m: i for i, m in enumerate(MODES)}


def _round_scalar(v, mode_id, u):
    """Round one float with mode number ``mode_id`` (index into MODES); ``u`` in [0, 1)."""
    t = np.trunc(v)
    f = v - t  # exact fractional part, in (-1, 1), with the sign of v
    if mode_id == 0:  # half_even
        return np.rint(v)
    if mode_id == 1:  # half_away
        if abs(f) >= 0.5:
            return t + (1.0 if v > 0 else -1.0)
        return t
    if mode_id == 2:  # half_up
        return t + 1.0 if f >= 0.5 else (t - 1.0 if f < -0.5 else t)
    if mode_id == 3:  # half_down
        return t + 1.0 if f > 0.5 else (t - 1.0 if f <= -0.5 else t)
    if mode_id == 4:  # floor
        return np.floor(v)
    if mode_id == 5:  # ceil
        return np.ceil(v)
    if mode_id == 6:  # trunc
        return t
    # stochastic: up from floor(v) with probability v - floor(v) (f, or 1 + f when f < 0)
    if f >= 0:
        return t + 1.0 if u < f else t
    return t if u - 1.0 < f else t - 1.0


def _accumulate_py(increments, step, start, mode_id, uniforms):
    """Numpy twin of the accumulation kernel: a plain loop, the definition."""
    out = np.empty(increments.shape[0], dtype=np.float64)
    acc = start
    for k in range(increments.shape[0]):
        acc = step * _round_scalar((acc + increments[k]) / step, mode_id, uniforms[k])
        out[k] = acc
    return out


_round_scalar_nb = njit(_round_scalar)


@njit
def _accumulate_nb(increments, step, start, mode_id, uniforms):  # pragma: no cover - compiled
    out = np.empty(increments.shape[0], dtype=np.float64)
    acc = start
    for k in range(increments.shape[0]):
        acc = step * _round_scalar_nb((acc + increments[k]) / step, mode_id, uniforms[k])
        out[k] = acc
    return out


def accumulate(increments, *, step, mode="half_even", start=0.0, rng=None):
    r"""Running sum kept on a fixed-point grid of spacing ``step``, rounded after every add.

    .. math::

        s_0 = \text{start}, \qquad
        s_{k+1} = \text{step}\cdot\mathrm{round}\!\left(\frac{s_k + \Delta_k}{\text{step}}\right)

    This is a low-precision accumulator (a weight being updated by SGD, say). With
    round-to-nearest every increment smaller than half a step is lost: the sum stalls
    ("swamping"). With stochastic rounding each add is unbiased, so the sum is right in
    expectation: the effect Gupta et al. (2015, Sec. 4) report as the reason low-precision
    fixed-point training works with stochastic rounding only.

    Parameters
    ----------
    increments : array_like of float, shape (n,)
    step : float > 0
        Grid spacing of the accumulator (:math:`2^{-\text{FL}}` for a fixed-point format).
    mode : str
        A rounding mode from :data:`MODES`.
    start : float
        Initial value, put on the grid first with the same rounding mode.
    rng : None, int or numpy.random.Generator
        For ``mode="stochastic"``.

    Returns
    -------
    ndarray of float64, shape (n,)
        The accumulator after each add.

    Examples
    --------
    >>> inc = np.full(1000, 0.001)          # true sum 1.0
    >>> float(accumulate(inc, step=1 / 256, mode="half_even")[-1])  # every add is lost
    0.0
    >>> s = accumulate(inc, step=1 / 256, mode="stochastic", rng=0)[-1]
    >>> abs(float(s) - 1.0) < 0.1
    True
    """
    inc = as_float_array(increments, "increments").astype(np.float64, copy=False)
    if inc.ndim != 1:
        raise ValueError(f"increments must be 1-d, got shape {inc.shape}")
    check_positive(step, "step")
    check_choice(mode, "mode", MODES)
    start = check_real(start, "start")
    mode_id = _MODE_ID[mode]
    gen = check_rng(rng)
    u0, uniforms = (gen.random(), gen.random(inc.shape[0])) if mode == "stochastic" else (0.0, np.zeros(inc.shape[0]))
    start_q = float(step) * float(_round_scalar(float(start) / float(step), mode_id, u0))
    kernel = _accumulate_nb if USE_NUMBA else _accumulate_py
    return kernel(inc, float(step), start_q, mode_id, uniforms)
