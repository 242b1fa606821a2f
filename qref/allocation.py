r"""Bit allocation: how many bits each channel or layer gets, and the uniform quantizer behind it.

Two papers, two granularities.

**Per channel, under a memory budget** (Banner, Nahshan & Soudry 2019, Sec. 4). Channel
:math:`i` holds values in :math:`[-\alpha_i, \alpha_i]`, split into :math:`2^{M_i}` equal bins.
Their rounding-noise model (the second term of their Eq. 5, see
:func:`qref.calibration.aciq_mse`) gives the total noise

.. math::

    D(M_1, \dots, M_n) = \sum_i \frac{\alpha_i^2}{3 \cdot 4^{M_i}}

(:func:`quantization_noise`). Which allocation is best depends on what the budget counts:

* **bins**, :math:`\sum_i 2^{M_i}` fixed: the Lagrangian optimum is
  :math:`2^{M_i} \propto \alpha_i^{2/3}`, the rule Banner et al. state
  (:func:`banner_bit_allocation`, ``budget="bins"``);
* **bits**, :math:`\sum_i M_i` fixed (what a memory holds): the optimum is
  :math:`M_i = \bar M + \log_2 \alpha_i - \overline{\log_2 \alpha}`, the classical
  "log-variance" rule of transform coding (Huang & Schultheiss 1963)
  (``budget="bits"``); the exponent is 1, not 2/3.

Hardware needs integers: :func:`allocate_bits` returns integer bit widths whose sum is
*exactly* the budget, either the exact integer optimum of :math:`D` (``rule="optimal"``,
greedy marginal allocation) or the paper's :math:`\alpha^{2/3}` shape shifted to the bit
budget and rounded by largest remainder (``rule="banner"``, what the authors' code does
in spirit). :func:`fake_quantize_channels` applies such an allocation to a weight matrix.

**Per layer, for a network** (Lin, Talathi & Annapureddy 2016). A symmetric uniform quantizer
with :math:`N` levels :math:`y_k = (k - \tfrac{N-1}{2})\Delta` has an MSE-optimal step
:math:`\Delta^\star` for every input density (:func:`optimal_uniform_step`; the Gaussian case
is Max's 1960 table of optimum uniform quantizers), and its SQNR grows by about 6 dB per
bit (:func:`optimal_uniform_sqnr_db`). If every layer adds independent noise, the network's
SQNR combines the layers' as :math:`1/\mathrm{SQNR} = \sum_l 1/\mathrm{SQNR}_l`
(:func:`network_sqnr_db`), and minimising the model size under that model gives their
closed-form allocation, :math:`\beta_i - \beta_j = \tfrac{10}{\kappa}\log_{10}(\rho_j/\rho_i)`
(:func:`lin_bit_allocation`): a layer with more parameters gets fewer bits.

References
----------
R. Banner, Y. Nahshan, D. Soudry, "Post training 4-bit quantization of convolutional
networks for rapid-deployment", NeurIPS 2019 (arXiv:1810.05723).

D. D. Lin, S. S. Talathi, V. S. Annapureddy, "Fixed point quantization of deep convolutional
networks", ICML 2016 (arXiv:1511.06393).

J. Max, "Quantizing for minimum distortion", IRE Trans. Inf. Theory 6(1), 7-12, 1960.

J. J. Y. Huang, P. M. Schultheiss, "Block quantization of correlated Gaussian random
variables", IEEE Trans. Commun. Syst. 11(3), 289-296, 1963.
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import as_float_array, check_axis, check_bits, check_choice, check_int, check_real
from .nonuniform import _optimal_uniform_step, _uniform_mse

__all__ = [
    "LIN_DISTRIBUTIONS",
    "MODES",
    "uniform_levels",
    "symmetric_uniform_quantize",
    "uniform_quantizer_mse",
    "optimal_uniform_step",
    "optimal_uniform_sqnr_db",
    "network_sqnr_db",
    "lin_bit_allocation",
    "quantization_noise",
    "banner_bit_allocation",
    "allocate_bits",
    "fake_quantize_channels",
]

#: Zero-mean, unit-variance input densities of the uniform-quantizer theory.
LIN_DISTRIBUTIONS = ("gaussian", "laplace", "uniform")
#: ``"midrise"``: :math:`N = 2^b` levels, no level at 0; ``"midtread"``: :math:`N = 2^b - 1`, 0 is a level.
MODES = ("midrise", "midtread")
_MAX_THEORY_LEVELS = 4096  # 12 bits; the closed-form cell moments lose digits beyond


# ---- the symmetric N-level uniform quantizer --------------------------------------------------

def _levels_count(bits, n_levels, mode, max_levels=None):
    """N from ``bits`` and ``mode``, or ``n_levels`` (exactly one of the two)."""
    check_choice(mode, "mode", MODES)
    if (bits is None) == (n_levels is None):
        raise TypeError(f"give exactly one of bits and n_levels, got bits={bits!r}, n_levels={n_levels!r}")
    if bits is not None:
        high = 16 if max_levels is None else int(math.log2(max_levels))
        b = check_bits(bits, "bits", low=2 if mode == "midtread" else 1, high=high)
        n = 2**b if mode == "midrise" else 2**b - 1
    else:
        n = check_int(n_levels, "n_levels", low=2)
        if max_levels is not None and n > max_levels:
            raise ValueError(f"n_levels must be <= {max_levels} for the closed-form theory, got {n}")
    return n


def uniform_levels(step, *, bits=None, n_levels=None, mode="midrise"):
    r"""The levels :math:`y_k = (k - \tfrac{N-1}{2})\,\Delta`, :math:`k = 0, \dots, N-1`, of a symmetric uniform quantizer.

    Even :math:`N` (``mode="midrise"``, :math:`N = 2^b`) has no level at 0 and a threshold
    there; odd :math:`N` (``mode="midtread"``, :math:`N = 2^b - 1`) has 0 as a level.
    This is the quantizer of Max (1960, "equally spaced levels") and of Lin et al. (2016, Sec. 3).

    Parameters
    ----------
    step : float > 0
        :math:`\Delta`.
    bits : int, optional
        :math:`N = 2^b` (midrise, ``1 <= b <= 16``) or :math:`2^b - 1` (midtread, ``2 <= b <= 16``).
    n_levels : int >= 2, optional
        :math:`N` directly (give ``bits`` or ``n_levels``, not both); ``mode`` is then ignored.
    mode : {"midrise", "midtread"}

    Returns
    -------
    ndarray of float64, shape (N,), increasing

    Examples
    --------
    >>> uniform_levels(0.5, bits=2)
    array([-0.75, -0.25,  0.25,  0.75])
    >>> uniform_levels(0.5, bits=2, mode="midtread")
    array([-0.5,  0. ,  0.5])
    """
    n = _levels_count(bits, n_levels, mode)
    step = _positive(step, "step")
    return (np.arange(n, dtype=np.float64) - 0.5 * (n - 1)) * step


def symmetric_uniform_quantize(x, *, step, bits=None, n_levels=None, mode="midrise"):
    r"""Quantize to the nearest of the :math:`N` levels of :func:`uniform_levels` (values beyond the ends clip).

    The cell index is :math:`k = \mathrm{clip}(\lfloor x/\Delta + N/2 \rfloor, 0, N-1)`, so an
    input exactly on a threshold goes to the upper level (for odd :math:`N` this is
    round-half-up of :math:`x/\Delta`).

    Parameters
    ----------
    x : array_like of float
    step : float > 0
    bits, n_levels, mode
        As in :func:`uniform_levels`.

    Returns
    -------
    ndarray, shape and dtype of ``x``

    Raises
    ------
    TypeError
        For non-float ``x`` or a missing/duplicated level count.
    ValueError
        For NaN/inf, a non-positive step or a bad level count.

    Examples
    --------
    >>> symmetric_uniform_quantize(np.array([-3.0, -0.1, 0.0, 0.3, 2.0]), step=0.5, bits=2)
    array([-0.75, -0.25,  0.25,  0.25,  0.75])
    """
    x = as_float_array(x, "x")
    n = _levels_count(bits, n_levels, mode)
    step = _positive(step, "step")
    k = np.clip(np.floor(x.astype(np.float64) / step + 0.5 * n), 0, n - 1)
    return ((k - 0.5 * (n - 1)) * step).astype(x.dtype)


def _positive(value, name):
    v = check_real(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def _mse_unit(step, n, distribution):
    """Exact MSE of the N-level quantizer with step ``step`` on the unit-variance density."""
    return _uniform_mse(step, n, distribution)  # closed-form cell moments (qref.nonuniform)


def uniform_quantizer_mse(step, *, bits=None, n_levels=None, mode="midrise", distribution="gaussian"):
    r"""Exact mean squared error of the symmetric uniform quantizer on a zero-mean, unit-variance input.

    .. math::

        D(\Delta) = \sum_{k=0}^{N-1} \int_{t_{k-1}}^{t_k} (x - y_k)^2 f(x)\,dx,
        \qquad y_k = (k - \tfrac{N-1}{2})\Delta,\quad t_k = \tfrac{y_k + y_{k+1}}{2},

    with :math:`t_{-1} = -\infty`, :math:`t_{N-1} = +\infty`: granular (rounding) and overload
    (clipping) error together, the quantity Max (1960) minimises for "equally spaced levels"
    and Lin et al. (2016, Sec. 3) for their fixed-point quantizer. Each cell's probability and
    first two moments are in closed form (:math:`\mathrm{erfc}` for the Gaussian, exponentials
    for the Laplace), so there is no numerical integration. For an input of standard deviation
    :math:`\sigma`, use step :math:`\Delta/\sigma` and multiply the result by :math:`\sigma^2`.

    Parameters
    ----------
    step : float > 0
    bits : int, optional
        :math:`N = 2^b` (midrise, :math:`b \le 12`) or :math:`2^b - 1` (midtread).
    n_levels : int in [2, 4096], optional
        :math:`N` directly; give ``bits`` or ``n_levels``.
    mode : {"midrise", "midtread"}
    distribution : {"gaussian", "laplace", "uniform"}
        :math:`\mathcal N(0, 1)`, Laplace of scale :math:`1/\sqrt2`, or uniform on
        :math:`[-\sqrt3, \sqrt3]`.

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        For a bad step, level count, mode or distribution.

    References
    ----------
    Max (1960); Lin, Talathi & Annapureddy (2016), Sec. 3.

    Examples
    --------
    >>> round(uniform_quantizer_mse(1.596, bits=1), 4)      # Max (1960): N = 2, MSE 0.3634
    0.3634
    >>> round(uniform_quantizer_mse(2 * math.sqrt(3) / 8, bits=3, distribution="uniform"), 6)
    0.015625
    """
    n = _levels_count(bits, n_levels, mode, max_levels=_MAX_THEORY_LEVELS)
    step = _positive(step, "step")
    check_choice(distribution, "distribution", LIN_DISTRIBUTIONS)
    return _mse_unit(step, n, distribution)


def _optimal_step(n, distribution):
    """(step, mse): the one search, shared with :func:`qref.nonuniform.optimal_uniform`."""
    return _optimal_uniform_step(n, distribution)


def optimal_uniform_step(bits=None, *, n_levels=None, mode="midrise", distribution="gaussian"):
    r"""The MSE-optimal step :math:`\Delta^\star = \arg\min_\Delta D(\Delta)` of the symmetric uniform quantizer, unit variance.

    Lin, Talathi & Annapureddy (2016, Sec. 3) quantize each layer with the optimal uniform
    quantizer of the layer's distribution, found the same way (MSE over the step) for
    Gaussian, Laplace and uniform inputs. For the Gaussian the optimum is Max's (1960) table of
    the optimum equally spaced quantizer (e.g. :math:`N = 2, 4, 8, 16, 32`: 1.596, 0.9957,
    0.5860, 0.3352, 0.1881), which the tests check to the printed digits.

    The minimum is found numerically: :func:`uniform_quantizer_mse` on a grid of 120 half-ranges
    :math:`N\Delta/2 \in [0.3, 16]` (geometric), then golden-section search
    (:func:`qref._optimize.golden_section_min`) around the best grid point. For the uniform
    density the answer is exact: :math:`\Delta^\star = 2\sqrt3/N`, the cells tile the support.

    Parameters
    ----------
    bits, n_levels, mode, distribution
        As in :func:`uniform_quantizer_mse`.

    Returns
    -------
    float
        :math:`\Delta^\star` in units of the standard deviation.

    References
    ----------
    Max (1960), Table II; Lin, Talathi & Annapureddy (2016), Sec. 3.

    Examples
    --------
    >>> [round(optimal_uniform_step(b), 4) for b in (1, 2, 3, 4)]     # Max (1960): 1.596, 0.9957, 0.5860, 0.3352
    [1.5958, 0.9957, 0.586, 0.3352]
    >>> round(optimal_uniform_step(n_levels=3), 3)                   # Max (1960): N = 3, 1.224
    1.224
    """
    n = _levels_count(bits, n_levels, mode, max_levels=_MAX_THEORY_LEVELS)
    check_choice(distribution, "distribution", LIN_DISTRIBUTIONS)
    return _optimal_step(n, distribution)[0]


def optimal_uniform_sqnr_db(bits=None, *, n_levels=None, mode="midrise", distribution="gaussian"):
    r"""SQNR :math:`10\log_{10}(\sigma^2 / D(\Delta^\star))` of the optimal uniform quantizer, in dB.

    The "6 dB per bit" rule: for the uniform density it is exactly :math:`20\log_{10} N =
    6.02\,b` dB; for the Gaussian and Laplace the step per bit is smaller at low bit widths
    (the optimal quantizer also clips) and approaches 6.02 dB slowly (Lin et al. 2016, Sec. 3).

    Parameters
    ----------
    bits, n_levels, mode, distribution
        As in :func:`uniform_quantizer_mse`.

    Returns
    -------
    float

    Examples
    --------
    >>> round(optimal_uniform_sqnr_db(4, distribution="uniform"), 2)    # 20 log10(16)
    24.08
    >>> round(optimal_uniform_sqnr_db(4), 2)                            # Gaussian: -10 log10(0.01154)
    19.38
    """
    n = _levels_count(bits, n_levels, mode, max_levels=_MAX_THEORY_LEVELS)
    check_choice(distribution, "distribution", LIN_DISTRIBUTIONS)
    return -10.0 * math.log10(_optimal_step(n, distribution)[1])


# ---- Lin et al. (2016): SQNR of a network and the layer allocation ------------------------------

def _real_vector(x, name):
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = as_float_array(arr.astype(np.float64), name, allow_empty=False)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per layer or channel), got shape {arr.shape}")
    return arr


def network_sqnr_db(layer_sqnr_db):
    r"""The SQNR of a network from the SQNRs of its quantizers: :math:`1/\gamma = \sum_l 1/\gamma_l`.

    Lin, Talathi & Annapureddy (2016, Sec. 4) model each quantized weight or activation
    tensor :math:`l` as adding independent noise whose power, relative to the signal, is
    :math:`1/\gamma_l`; if the network passes noise and signal through with the same gain,
    the relative noise powers add at the output:

    .. math:: \frac{1}{\gamma_{\text{output}}} = \sum_l \frac{1}{\gamma_l},
              \qquad \gamma_{\text{dB}} = -10\log_{10}\sum_l 10^{-\gamma_{l,\text{dB}}/10}.

    Parameters
    ----------
    layer_sqnr_db : array_like of float, shape (L,), L >= 1
        :math:`\gamma_{l,\text{dB}}`, any real values.

    Returns
    -------
    float
        Always below the smallest :math:`\gamma_{l,\text{dB}}`: the worst layer dominates.

    Examples
    --------
    >>> round(network_sqnr_db([20.0, 20.0]), 2)    # two equal layers: 3 dB worse
    16.99
    >>> round(network_sqnr_db([30.0, 10.0]), 2)    # the worse layer dominates
    9.96
    """
    g = _real_vector(layer_sqnr_db, "layer_sqnr_db")
    m = g.min()  # factor out the largest term: no overflow for very negative dB
    return float(m - 10.0 * np.log10(np.sum(10.0 ** (-(g - m) / 10.0))))


def lin_bit_allocation(sizes, *, target_sqnr_db=None, total_bits=None, kappa=6.02):
    r"""Lin et al.'s (2016) closed-form bit widths per layer: fewer bits where there are more parameters.

    Layer :math:`i` has :math:`\rho_i` parameters stored with :math:`\beta_i` bits, and its
    SQNR grows linearly in the bit width, :math:`\gamma_{i,\text{dB}} = \kappa\beta_i`
    (:math:`\kappa \approx 6` dB/bit, see :func:`optimal_uniform_sqnr_db`). Minimising the
    model size :math:`\sum_i \rho_i\beta_i` subject to the network SQNR
    (:func:`network_sqnr_db`) :math:`\sum_i 10^{-\kappa\beta_i/10} = 10^{-\gamma/10}`, the
    Lagrange condition :math:`\rho_i \propto 10^{-\kappa\beta_i/10}` gives (Sec. 4 of the paper)

    .. math::

        \beta_i - \beta_j = \frac{10}{\kappa}\log_{10}\frac{\rho_j}{\rho_i},
        \qquad
        \beta_i = \frac{1}{\kappa}\Big(\gamma + 10\log_{10}\frac{\sum_j\rho_j}{\rho_i}\Big).

    Given a size budget :math:`\sum_i\rho_i\beta_i = B` instead (and maximising the network
    SQNR), the same condition holds and the constant is set by the budget:
    :math:`\beta_i = c - \tfrac{10}{\kappa}\log_{10}\rho_i`,
    :math:`c = \big(B + \tfrac{10}{\kappa}\sum_j\rho_j\log_{10}\rho_j\big)/\sum_j\rho_j`.

    Parameters
    ----------
    sizes : array_like of int or float > 0, shape (L,)
        :math:`\rho_i` (numbers of parameters; only ratios matter).
    target_sqnr_db : float, optional
        :math:`\gamma`, the network SQNR to reach with the smallest model.
    total_bits : float > 0, optional
        :math:`B`, the model size in bits. Give exactly one of ``target_sqnr_db`` and ``total_bits``.
    kappa : float > 0
        dB of SQNR per bit.

    Returns
    -------
    ndarray of float64, shape (L,)
        The continuous optimum (round or ceil it for hardware; not clipped to >= 0).

    Raises
    ------
    TypeError
        If neither or both of ``target_sqnr_db`` and ``total_bits`` are given.
    ValueError
        For non-positive sizes, ``kappa`` or ``total_bits``.

    References
    ----------
    Lin, Talathi & Annapureddy (2016), Sec. 4 (bit-width optimisation across layers).

    Examples
    --------
    >>> beta = lin_bit_allocation([4096, 640], target_sqnr_db=30.0)
    >>> beta.round(3), round(float(beta[1] - beta[0]), 3)     # (10 / 6.02) log10(4096 / 640)
    (array([5.088, 6.427]), 1.339)
    """
    rho = _real_vector(sizes, "sizes")
    if (rho <= 0).any():
        raise ValueError(f"sizes must be > 0, got min {rho.min()}")
    kappa = _positive(kappa, "kappa")
    if (target_sqnr_db is None) == (total_bits is None):
        raise TypeError("give exactly one of target_sqnr_db and total_bits, "
                        f"got target_sqnr_db={target_sqnr_db!r}, total_bits={total_bits!r}")
    log_rho = np.log10(rho)
    if target_sqnr_db is not None:
        g = check_real(target_sqnr_db, "target_sqnr_db")
        return (g + 10.0 * (np.log10(rho.sum()) - log_rho)) / kappa
    B = _positive(total_bits, "total_bits")
    c = (B + 10.0 / kappa * np.sum(rho * log_rho)) / rho.sum()
    return c - 10.0 / kappa * log_rho


# ---- Banner et al. (2019): per-channel bit allocation -----------------------------------------

def _ranges(ranges):
    a = _real_vector(ranges, "ranges")
    if (a <= 0).any():
        i = int(np.flatnonzero(a <= 0)[0])
        raise ValueError(f"ranges must be > 0 (alpha_i of the range [-alpha_i, alpha_i]), got ranges[{i}] = {a[i]}")
    return a


def quantization_noise(ranges, bits):
    r"""Banner et al.'s rounding-noise model per channel: :math:`\alpha_i^2 / (3 \cdot 4^{M_i})`.

    :math:`[-\alpha_i, \alpha_i]` split into :math:`2^{M_i}` bins of width
    :math:`\Delta_i = 2\alpha_i/2^{M_i}`, uniform error in each: :math:`\Delta_i^2/12`
    (the rounding term of Eq. 5 of Banner et al. 2019). Sum it for the total :math:`D`.

    Parameters
    ----------
    ranges : array_like of float > 0, shape (n,)
        :math:`\alpha_i`.
    bits : int, float or array_like, broadcastable to (n,)
        :math:`M_i` (real values allowed, for continuous allocations).

    Returns
    -------
    ndarray of float64, shape (n,)

    Examples
    --------
    >>> quantization_noise([1.0, 2.0], [1, 2])     # 1/12 and 4/48
    array([0.08333333, 0.08333333])
    """
    a = _ranges(ranges)
    m = np.asarray(bits)
    if m.dtype.kind not in "iuf" or m.dtype.kind == "b":
        raise TypeError(f"bits must hold real numbers, got dtype {m.dtype}")
    m = as_float_array(m.astype(np.float64), "bits")
    try:
        a, m = np.broadcast_arrays(a, m)
    except ValueError:
        raise ValueError(f"bits must broadcast to ranges' shape {a.shape}, got shape {m.shape}") from None
    return a * a / (3.0 * 4.0**m)


def banner_bit_allocation(ranges, *, mean_bits, budget="bins"):
    r"""Continuous per-channel bit widths that minimise :math:`\sum_i \alpha_i^2/(3\cdot4^{M_i})` (Banner et al. 2019, Sec. 4).

    * ``budget="bins"`` -- the rule of Banner et al.: with the total number of bins fixed,
      :math:`\sum_i 2^{M_i} = n\,2^{\bar M}` (as many as :math:`\bar M` bits per channel give),
      the Lagrangian :math:`\sum_i \alpha_i^2 / (3 N_i^2) + \lambda(\sum_i N_i - n 2^{\bar M})`
      in :math:`N_i = 2^{M_i}` is stationary at

      .. math:: 2^{M_i} = n\,2^{\bar M}\,\frac{\alpha_i^{2/3}}{\sum_j \alpha_j^{2/3}},
                \qquad M_i = \bar M + \log_2\frac{n\,\alpha_i^{2/3}}{\sum_j\alpha_j^{2/3}}.

      The mean of these :math:`M_i` is at most :math:`\bar M` (Jensen), with equality only
      for equal ranges.
    * ``budget="bits"`` -- with the total number of bits fixed, :math:`\sum_i M_i = n\bar M`,
      the stationary point is (Huang & Schultheiss 1963)

      .. math:: M_i = \bar M + \log_2\alpha_i - \frac1n\sum_j\log_2\alpha_j .

    Both are exact minimisers of their convex problems over real :math:`M_i`, without
    bounds (a tiny range can get a negative width). :func:`allocate_bits` returns integers.

    Parameters
    ----------
    ranges : array_like of float > 0, shape (n,)
        :math:`\alpha_i` (a range, a standard deviation or any per-channel scale: only
        ratios matter).
    mean_bits : float > 0
        :math:`\bar M`.
    budget : {"bins", "bits"}

    Returns
    -------
    ndarray of float64, shape (n,)

    Raises
    ------
    ValueError
        For non-positive ranges or ``mean_bits``, an unknown ``budget``.

    References
    ----------
    Banner, Nahshan & Soudry (2019), Sec. 4 (per-channel bit allocation);
    Huang & Schultheiss (1963).

    Examples
    --------
    >>> m = banner_bit_allocation([1.0, 8.0], mean_bits=4)            # 2^M proportional to 1 : 4
    >>> m.round(4), round(float((2.0 ** m).sum()), 9)                 # 32 bins, as 2 x 4 bits
    (array([2.6781, 4.6781]), 32.0)
    >>> banner_bit_allocation([1.0, 8.0], mean_bits=4, budget="bits")  # +- log2(8) / 2
    array([2.5, 5.5])
    """
    a = _ranges(ranges)
    mb = _positive(mean_bits, "mean_bits")
    check_choice(budget, "budget", ("bins", "bits"))
    if budget == "bins":
        p = a ** (2.0 / 3.0)
        return mb + np.log2(a.size * p / p.sum())
    la = np.log2(a)
    return mb + la - la.mean()


def _budget(n, mean_bits, min_bits, max_bits):
    mb = _positive(mean_bits, "mean_bits")
    lo = check_bits(min_bits, "min_bits", low=1, high=16)
    hi = check_bits(max_bits, "max_bits", low=1, high=16)
    if hi < lo:
        raise ValueError(f"max_bits must be >= min_bits, got min_bits={lo}, max_bits={hi}")
    total = n * mb
    B = int(round(total))
    if abs(total - B) > 1e-9 * max(1.0, total):
        raise ValueError(f"mean_bits * n_channels must be a whole number of bits, got {mb} * {n} = {total:g}")
    if not n * lo <= B <= n * hi:
        raise ValueError(f"the budget of {B} bits for {n} channels (mean_bits={mb:g}) cannot be met with "
                         f"min_bits={lo} and max_bits={hi}: it must lie in [{n * lo}, {n * hi}]")
    return B, lo, hi


def allocate_bits(ranges, *, mean_bits, rule="optimal", min_bits=1, max_bits=8):
    r"""Integer bit widths per channel, :math:`M_i \in [\text{min}, \text{max}]`, using exactly :math:`\sum_i M_i = n\bar M` bits.

    * ``rule="optimal"``: the exact integer minimiser of Banner et al.'s noise model
      :math:`D = \sum_i \alpha_i^2/(3\cdot4^{M_i})` under the bit budget. Start every channel
      at ``min_bits`` and hand out the remaining bits one at a time to the channel whose noise
      drops most, :math:`\tfrac34\,\alpha_i^2/(3\cdot4^{M_i})` (ties to the lower index).
      Each channel's noise is convex and decreasing in :math:`M_i`, so this greedy
      (marginal-return) allocation is optimal (Fox 1966); the tests check it against brute
      force. Its continuous counterpart is :func:`banner_bit_allocation` with
      ``budget="bits"``: channel widths differ by :math:`\log_2` of their range ratio.
    * ``rule="banner"``: the paper's shape, :math:`M_i = c + \tfrac23\log_2\alpha_i`
      (:func:`banner_bit_allocation`, ``budget="bins"``, shifted by a constant), with
      :math:`c` chosen by bisection so that the widths, clipped to
      ``[min_bits, max_bits]``, sum to the budget (Banner et al.'s code likewise adjusts its
      target until the mean width is the goal). **Rounding rule:** largest remainder -- floor
      every width, then give one more bit to the channels with the largest fractional parts
      (ties to the lower index) until the budget is used up. This keeps the budget exact and
      changes no width by 1 bit or more; it is not the integer optimum of :math:`D`.

    Parameters
    ----------
    ranges : array_like of float > 0, shape (n,)
        :math:`\alpha_i` (per-channel range, or standard deviation: only ratios matter).
    mean_bits : float > 0
        :math:`\bar M`; ``n * mean_bits`` must be a whole number.
    rule : {"optimal", "banner"}
    min_bits, max_bits : int in [1, 16]

    Returns
    -------
    ndarray of int64, shape (n,), summing to ``n * mean_bits``

    Raises
    ------
    ValueError
        If the budget cannot be met: ``n * mean_bits`` not whole, or outside
        ``[n * min_bits, n * max_bits]``; for non-positive ranges.

    References
    ----------
    Banner, Nahshan & Soudry (2019), Sec. 4. B. Fox, "Discrete optimization via marginal
    analysis", Management Science 13(3), 1966.

    Examples
    --------
    >>> allocate_bits([1.0, 1.0, 4.0, 16.0], mean_bits=4)           # widths differ by log2 of the ratio
    array([3, 3, 4, 6])
    >>> allocate_bits([1.0, 1.0, 4.0, 16.0], mean_bits=4, rule="banner")
    array([3, 3, 4, 6])
    """
    a = _ranges(ranges)
    check_choice(rule, "rule", ("optimal", "banner"))
    n = a.size
    B, lo, hi = _budget(n, mean_bits, min_bits, max_bits)
    extra = B - n * lo
    la = np.log2(a)
    if rule == "optimal":
        # candidate increments (i, m -> m + 1) for m = lo .. hi - 1, gain proportional to
        # alpha_i^2 4^-m; per channel the gains fall by 4x, so the best `extra` of them are a
        # prefix of each channel's list and the greedy choice is a top-k selection
        m = np.arange(lo, hi)
        key = (2.0 * la[:, None] - 2.0 * m[None, :]).ravel()  # log2 of the gain (up to a constant)
        chan = np.repeat(np.arange(n), m.size)
        order = np.lexsort((chan, -key))  # largest gain first, ties to the lower channel
        bits = np.full(n, lo, dtype=np.int64)
        np.add.at(bits, chan[order[:extra]], 1)
        return bits
    shape = (2.0 / 3.0) * la

    def used(c):
        return np.clip(c + shape, lo, hi).sum()

    c_lo, c_hi = lo - shape.max() - 1.0, hi - shape.min() + 1.0  # used(c_lo) = n lo, used(c_hi) = n hi
    for _ in range(200):
        c = 0.5 * (c_lo + c_hi)
        if used(c) < B:
            c_lo = c
        else:
            c_hi = c
    cont = np.clip(0.5 * (c_lo + c_hi) + shape, lo, hi)
    bits = np.floor(cont + 1e-12).astype(np.int64)
    frac = cont - bits
    left = int(B - bits.sum())
    if left > 0:
        order = np.lexsort((np.arange(n), -frac))
        order = order[bits[order] < hi]  # never above max_bits
        bits[order[:left]] += 1
    elif left < 0:  # bisection round-off pushed the sum over: take from the smallest fractions
        order = np.lexsort((np.arange(n), frac))
        order = order[bits[order] > lo]
        bits[order[:-left]] -= 1
    return bits


def fake_quantize_channels(w, *, bits, axis=0, ranges=None, mode="midrise"):
    r"""Quantize each channel of ``w`` with its own bit width (symmetric uniform, Banner et al.'s grid).

    Channel :math:`c` (the slice ``w`` along ``axis``) with range :math:`\alpha_c` (default
    :math:`\max|w_c|`) and :math:`M_c` bits is quantized by :func:`symmetric_uniform_quantize`:

    * ``"midrise"`` (default): :math:`2^{M_c}` bins tiling :math:`[-\alpha_c, \alpha_c]`, the
      grid of Banner et al.'s noise model, step :math:`\Delta_c = 2\alpha_c/2^{M_c}`, levels at
      the bin centres (1 bit gives :math:`\pm\alpha_c/2`);
    * ``"midtread"``: :math:`2^{M_c} - 1` levels from :math:`-\alpha_c` to :math:`\alpha_c`
      including 0, step :math:`\alpha_c/(2^{M_c-1}-1)` (needs :math:`M_c \ge 2`); this equals
      :func:`qref.uniform.fake_quantize` with symmetric narrow-range parameters up to ties.

    A channel with :math:`\alpha_c = 0` (all zeros) stays zero.

    Parameters
    ----------
    w : array_like of float, at least 1-D
    bits : int or array_like of int, shape (w.shape[axis],)
        :math:`M_c` in [1, 16] (``"midtread"``: [2, 16]).
    axis : int
        The channel axis (0: output channels of a ``(out, in)`` weight).
    ranges : array_like of float >= 0, shape (w.shape[axis],), optional
        :math:`\alpha_c`; default :math:`\max|w_c|`.
    mode : {"midrise", "midtread"}

    Returns
    -------
    ndarray, shape and dtype of ``w``

    Raises
    ------
    TypeError
        For non-float ``w`` or non-integer ``bits``.
    ValueError
        For a bad axis, bits out of range, a length mismatch, negative ranges, NaN/inf.

    Examples
    --------
    >>> w = np.array([[0.9, -0.2, 0.4], [0.05, -0.1, 0.02]])
    >>> fake_quantize_channels(w, bits=[2, 1])     # row 0: levels +-0.1125, +-0.3375...
    array([[ 0.675, -0.225,  0.225],
           [ 0.05 , -0.05 ,  0.05 ]])
    """
    w = as_float_array(w, "w", allow_0d=False)
    axis = check_axis(axis, w.ndim)
    check_choice(mode, "mode", MODES)
    C = w.shape[axis]
    b = np.asarray(bits)
    if b.dtype.kind not in "iu":
        raise TypeError(f"bits must be integers, got dtype {b.dtype}")
    b = np.broadcast_to(b, (C,)) if b.ndim == 0 else b
    if b.shape != (C,):
        raise ValueError(f"bits must have one entry per channel, shape ({C},), got shape {b.shape}")
    low = 2 if mode == "midtread" else 1
    if (b < low).any() or (b > 16).any():
        raise ValueError(f"bits must be integers in [{low}, 16] for mode={mode!r}, got values in [{b.min()}, {b.max()}]")
    rows = np.moveaxis(w, axis, 0).reshape(C, -1).astype(np.float64)
    if ranges is None:
        alpha = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(C)
    else:
        alpha = as_float_array(np.asarray(ranges, dtype=np.float64), "ranges")
        if alpha.shape != (C,):
            raise ValueError(f"ranges must have shape ({C},), got {alpha.shape}")
        if (alpha < 0).any():
            raise ValueError(f"ranges must be >= 0, got min {alpha.min()}")
    out = np.zeros_like(rows)
    for c in range(C):
        if alpha[c] == 0:
            continue
        n = 2 ** int(b[c]) if mode == "midrise" else 2 ** int(b[c]) - 1
        step = 2.0 * alpha[c] / n if mode == "midrise" else 2.0 * alpha[c] / (n - 1)
        out[c] = symmetric_uniform_quantize(rows[c], step=step, n_levels=n)
    moved = np.moveaxis(w, axis, 0).shape
    return np.moveaxis(out.reshape(moved), 0, axis).astype(w.dtype)
