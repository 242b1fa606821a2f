r"""Variational Network Quantization: a Bayesian route to sparse ternary weights.

Achterhold, Koehler, Schmeink & Genewein (2018) train a *distribution* over every weight, a
Gaussian :math:`q(w_{ij}) = \mathcal N(\theta_{ij}, \sigma_{ij}^2)`, by maximising the evidence
lower bound (Sec. 2.2)

.. math::

    \mathcal L(\theta, \sigma) = \sum_{n=1}^N \mathbb E_{q}\big[\log p(y_n \mid x_n, w)\big]
    - D_{\mathrm{KL}}\big(q(w)\,\|\,p(w)\big),

under a **quantizing prior** (Sec. 3.1): a sum of log-uniform "spikes" at the codebook
values :math:`c_k`, here the ternary codebook :math:`\{-a, 0, a\}`,

.. math::

    p(w) \propto \sum_k p_k \frac{1}{|w - c_k|}, \qquad p_k = \frac1K .

The prior allows a small variance only near a codeword, so each weight ends up either close
to :math:`-a`, :math:`0` or :math:`a` with a small :math:`\sigma`, or with a large variance
relative to its mean, :math:`\log\alpha_{ij} = \log(\sigma_{ij}^2/\theta_{ij}^2)` large. After
training, weights with :math:`\log\alpha \ge \log T_\alpha` are pruned (set to 0) and the
others replaced by the nearest codeword (Sec. 3.2): no fine-tuning.

The KL divergence has no closed form. It is approximated (Sec. 3.3) by mixing shifted copies of
Molchanov et al.'s (2017, Sec. 4.2) approximation for one log-uniform spike,

.. math::

    D_{\mathrm{KL}}\big(\mathcal N(\theta, \sigma^2)\,\|\,p_{\mathrm{LU}}\big)
    \approx k_1 - k_1 S(k_2 + k_3\log\alpha) + \tfrac12\log(1 + \alpha^{-1}) =: F_{\mathrm{LU}}(\theta, \sigma),

:math:`k_1 = 0.63576`, :math:`k_2 = 1.87320`, :math:`k_3 = 1.48695`, :math:`S` the
logistic sigmoid, with Gaussian windows :math:`\Omega` around the non-zero codewords
(:func:`kl_quantizing_prior`).

What is here: the two KL approximations and their gradients, a Monte-Carlo reference
(:func:`kl_reference`), a fully connected layer :class:`VNQLinear` trained with the local
reparameterization trick (Kingma, Salimans & Welling 2015), the conversion of a trained
:func:`qref.nn.mlp` (:func:`to_vnq`), the training loop :func:`train_vnq` (KL warm-up,
clipping of :math:`\log\sigma^2` and of the means) and the final pruning and quantization
(:meth:`VNQLinear.quantized_weight`). Left out: learning the codebook scale :math:`a` (the
paper learns it with a 100 times smaller learning rate; here it is fixed per layer at the
start) and convolutions.

References
----------
Achterhold, J., Koehler, J. M., Schmeink, A., Genewein, T. (2018). Variational Network
Quantization. ICLR 2018. https://openreview.net/forum?id=ry-TW-WAb (equation numbers below
are those of the OpenReview version: Eq. (12) the prior, Eqs. (13)-(15) pruning and MAP
quantization, Eqs. (16)-(17) the KL approximation).

Molchanov, D., Ashukha, A., Vetrov, D. (2017). Variational Dropout Sparsifies Deep Neural
Networks. ICML 2017. arXiv:1701.05369 (Sec. 4.2, the approximation of the KL divergence to
the log-uniform prior).

Kingma, D. P., Salimans, T., Welling, M. (2015). Variational Dropout and the Local
Reparameterization Trick. NeurIPS 28. arXiv:1506.02557.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from . import binary, nn
from ._validation import as_float_array, check_int, check_positive, check_real, check_rng

__all__ = [
    "K1",
    "K2",
    "K3",
    "REFERENCE_R",
    "TAU",
    "kl_log_uniform",
    "kl_quantizing_prior",
    "kl_quantizing_prior_grad",
    "kl_reference",
    "log_alpha",
    "vnq_quantize",
    "VNQLinear",
    "to_vnq",
    "vnq_layers",
    "train_vnq",
]

#: Molchanov et al. (2017)'s constants of the log-uniform KL approximation (Sec. 4.2).
K1, K2, K3 = 0.63576, 1.87320, 1.48695
#: The reference codebook :math:`\{-r, 0, r\}` of Achterhold et al. (2018, Sec. 3.3) ...
REFERENCE_R = 0.2
#: ... and the width of its Gaussian windows :math:`\Omega`.
TAU = 0.075
_EPS = 1e-16        # added to (theta - c)^2 inside log alpha: log alpha stays finite on a codeword
LOG_SIGMA2_RANGE = (-10.0, 1.0)  # the paper's clipping of log sigma^2 (Sec. 4)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))     # = 1 / (1 + exp(-x)), without overflow


def _f_lu(d, log_sigma2):
    """F_LU and its derivatives w.r.t. d = theta - c and log sigma^2 (float64 arrays)."""
    la = log_sigma2 - np.log(d * d + _EPS)                      # log alpha
    s = _sigmoid(K2 + K3 * la)
    f = K1 - K1 * s + 0.5 * np.logaddexp(0.0, -la)               # 0.5 log(1 + 1/alpha)
    df_dla = -K1 * K3 * s * (1.0 - s) - 0.5 * _sigmoid(-la)
    return f, df_dla * (-2.0 * d / (d * d + _EPS)), df_dla


def _as_pair(theta, log_sigma2):
    theta = as_float_array(theta, "theta")
    log_sigma2 = as_float_array(log_sigma2, "log_sigma2")
    try:
        t, s = np.broadcast_arrays(theta.astype(np.float64), log_sigma2.astype(np.float64))
    except ValueError:
        raise ValueError(f"theta and log_sigma2 must broadcast, got shapes {theta.shape} and {log_sigma2.shape}") from None
    return t, s


def log_alpha(theta, log_sigma2):
    r""":math:`\log\alpha = \log\sigma^2 - \log\theta^2`, the log "dropout rate" of each weight.

    Achterhold et al. (2018), Eq. (9); Molchanov et al. (2017). A weight whose mean is small
    against its standard deviation has a large :math:`\log\alpha` and is pruned.

    Parameters
    ----------
    theta, log_sigma2 : array_like of float, broadcastable

    Returns
    -------
    numpy.ndarray of float64 (finite: :math:`10^{-16}` is added to :math:`\theta^2`)

    Examples
    --------
    >>> log_alpha([0.5, 0.01], [math.log(0.5), math.log(0.5)]).round(3)
    array([0.693, 8.517])
    """
    t, s = _as_pair(theta, log_sigma2)
    return s - np.log(t * t + _EPS)


def kl_log_uniform(theta, log_sigma2):
    r"""Molchanov et al.'s approximation of :math:`D_{\mathrm{KL}}(\mathcal N(\theta, \sigma^2)\,\|\,p_{\mathrm{LU}})`.

    For the (improper) log-uniform prior :math:`p(w) \propto 1/|w|` the KL divergence depends
    only on :math:`\alpha = \sigma^2/\theta^2` and is, up to an additive constant,
    :math:`-\frac12\log\alpha + \mathbb E_{\epsilon\sim\mathcal N(0,1)}\log|1 + \sqrt\alpha\,\epsilon|`.
    Molchanov et al. (2017, Sec. 4.2) fit

    .. math::

        D_{\mathrm{KL}} \approx k_1 - k_1 S(k_2 + k_3 \log\alpha) + \tfrac12\log(1 + \alpha^{-1}),
        \qquad k_1 = 0.63576,\ k_2 = 1.87320,\ k_3 = 1.48695,

    (their negative KL, with the constant :math:`C = -k_1` that makes it vanish as
    :math:`\alpha \to \infty`); Achterhold et al. (2018) call it :math:`F_{\mathrm{KL,LU}}`,
    Eq. (7). It is decreasing in :math:`\alpha`: the prior rewards noise.

    Parameters
    ----------
    theta, log_sigma2 : array_like of float, broadcastable
        Posterior means and log-variances.

    Returns
    -------
    numpy.ndarray of float64, the broadcast shape

    References
    ----------
    Molchanov, Ashukha, Vetrov (2017), Sec. 4.2; Achterhold et al. (2018), Eq. (7).

    Examples
    --------
    >>> kl_log_uniform([1.0, 1.0, 1.0], [-20.0, 0.0, 20.0]).round(3)   # log alpha = -20, 0, 20
    array([10.636,  0.431,  0.   ])
    """
    t, s = _as_pair(theta, log_sigma2)
    return _f_lu(t, s)[0]


def _check_a(a):
    a = float(check_positive(a, "a"))
    return a, a / REFERENCE_R          # the scale s of the reference codebook


def kl_quantizing_prior_grad(theta, log_sigma2, *, a):
    r"""The KL approximation of :func:`kl_quantizing_prior` and its two partial derivatives.

    Differentiating Eqs. (16)-(17) of Achterhold et al. (2018) term by term, with
    :math:`\Omega'(d) = -\frac{d}{\tau^2}\Omega(d)` and :math:`\Omega_0 = 1 - \sum\Omega`:

    .. math::

        \frac{\partial F}{\partial\theta'} = \sum_{c \ne 0}\Big[\Omega'(\theta' - c)\,
        \big(F_{\mathrm{LU}}(\theta' - c) - F_{\mathrm{LU}}(\theta')\big)
        + \Omega(\theta' - c)\,\partial_d F_{\mathrm{LU}}(\theta' - c)\Big]
        + \Omega_0\,\partial_d F_{\mathrm{LU}}(\theta'),

    with :math:`\theta' = \theta/s` and :math:`\partial F/\partial\theta = s^{-1}\,\partial
    F/\partial\theta'`; the derivative in :math:`\log\sigma^2` mixes the :math:`\partial
    F_{\mathrm{LU}}/\partial\log\alpha` with the same windows.

    Parameters
    ----------
    theta, log_sigma2 : array_like of float, broadcastable
    a : float > 0

    Returns
    -------
    kl, d_theta, d_log_sigma2 : numpy.ndarray of float64, the broadcast shape

    Examples
    --------
    >>> kl, dt, ds = kl_quantizing_prior_grad([0.15], [-6.0], a=0.2)
    >>> bool(dt[0] < 0), bool(ds[0] < 0)     # descent pulls 0.15 up to the codeword 0.2; more noise is cheaper
    (True, True)
    """
    t, s2 = _as_pair(theta, log_sigma2)
    a, s = _check_a(a)
    tp, ls = t / s, s2 - 2.0 * math.log(s)                     # theta', log sigma'^2
    f0, f0_d, f0_l = _f_lu(tp, ls)
    kl, d_t, d_l = np.zeros_like(tp), np.zeros_like(tp), np.zeros_like(tp)
    omega_sum = np.zeros_like(tp)
    for c in (-REFERENCE_R, REFERENCE_R):                          # the non-zero codewords
        d = tp - c
        omega = np.exp(-0.5 * d * d / TAU**2)
        fc, fc_d, fc_l = _f_lu(d, ls)
        kl += omega * fc
        d_t += -d / TAU**2 * omega * (fc - f0) + omega * fc_d
        d_l += omega * fc_l
        omega_sum += omega
    omega0 = 1.0 - omega_sum
    kl += omega0 * f0
    d_t += omega0 * f0_d
    d_l += omega0 * f0_l
    return kl, d_t / s, d_l


def kl_quantizing_prior(theta, log_sigma2, *, a):
    r"""Achterhold et al.'s approximation of the KL divergence to the ternary quantizing prior.

    For the codebook :math:`\{-a, 0, a\}`, rescaled to the reference codebook
    :math:`\{-r, 0, r\}`, :math:`r = 0.2`, by :math:`s = a/r` (Sec. 3.3: :math:`D_{\mathrm{KL}}
    \approx F_{\mathrm{KL}}(\theta/s, \sigma/s)`), Eqs. (16)-(17):

    .. math::

        F_{\mathrm{KL}}(\theta, \sigma) = \sum_{c \in \{-r, r\}} \Omega(\theta - c)\,
        F_{\mathrm{LU}}(\theta - c, \sigma) + \Omega_0(\theta)\, F_{\mathrm{LU}}(\theta, \sigma),
        \qquad \Omega(d) = e^{-d^2/2\tau^2}, \quad \Omega_0 = 1 - \sum_{c \ne 0}\Omega(\theta - c),

    :math:`\tau = 0.075`, where :math:`F_{\mathrm{LU}}(d, \sigma)` is
    :func:`kl_log_uniform` with :math:`\log\alpha = \log(\sigma^2/d^2)`: near a non-zero
    codeword the KL is that of a log-uniform spike centred there ("local behaviour"), elsewhere
    that of the spike at 0 ("global behaviour"). The paper reports a largest deviation of 1.07
    from a Monte-Carlo ground truth over the range it uses (after aligning the constant at
    large :math:`\theta`); compare with :func:`kl_reference`.

    Parameters
    ----------
    theta, log_sigma2 : array_like of float, broadcastable
    a : float > 0
        The codebook scale.

    Returns
    -------
    numpy.ndarray of float64, the broadcast shape

    References
    ----------
    Achterhold et al. (2018), Sec. 3.3, Eqs. (16)-(17).

    Examples
    --------
    >>> kl = kl_quantizing_prior([0.0, 0.1, 0.2], [-8.0, -8.0, -8.0], a=0.2)
    >>> kl.round(2)          # low variance is cheap only near a codeword (0 or 0.2)
    array([0.17, 2.32, 0.  ])
    """
    return kl_quantizing_prior_grad(theta, log_sigma2, a=a)[0]


def kl_reference(theta, log_sigma2, *, codebook=(0.0,), n_samples=200_000, rng=None):
    r"""Monte-Carlo estimate of the KL divergence to a (multi-)log-uniform prior, for checking the approximations.

    .. math::

        D_{\mathrm{KL}}\big(\mathcal N(\theta, \sigma^2)\,\|\,p\big)
        = k_1 - \log\sigma - \mathbb E_{w \sim \mathcal N(\theta, \sigma^2)}
        \Big[\log \sum_k \frac{1/K}{|w - c_k|}\Big] + \text{const.}

    The priors are improper, so a KL divergence is defined only up to a constant; it is chosen,
    as in Achterhold et al. (2018, Fig. 2), so that the estimate agrees with the approximations
    for large :math:`|\theta|` (both tend to :math:`k_1 + \log|\theta| - \log\sigma`). The
    expectation is estimated with ``n_samples`` antithetic Gaussian draws shared by all entries.

    Parameters
    ----------
    theta, log_sigma2 : array_like of float, broadcastable
    codebook : sequence of float
        The spike locations: ``(0,)`` is the log-uniform prior of :func:`kl_log_uniform`,
        ``(-a, 0, a)`` the quantizing prior of :func:`kl_quantizing_prior`.
    n_samples : int >= 2
    rng : None, int or numpy.random.Generator

    Returns
    -------
    numpy.ndarray of float64, the broadcast shape

    Examples
    --------
    >>> ref = kl_reference([1.0, 1.0], [-4.0, 2.0], rng=0)
    >>> approx = kl_log_uniform([1.0, 1.0], [-4.0, 2.0])
    >>> bool(np.all(np.abs(ref - approx) < 0.02))
    True
    """
    t, s2 = _as_pair(theta, log_sigma2)
    c = as_float_array(codebook, "codebook", allow_empty=False).astype(np.float64).ravel()
    n = check_int(n_samples, "n_samples", low=2)                 # at least one antithetic pair
    half = check_rng(rng).standard_normal(max(n // 2, 1))
    eps = np.concatenate([half, -half])                           # antithetic pairs
    sigma = np.exp(0.5 * s2)
    out = np.empty(t.shape)
    for idx in np.ndindex(t.shape):
        w = t[idx] + sigma[idx] * eps
        log_p = np.log(np.mean(1.0 / np.abs(w[:, None] - c[None, :]), axis=1))   # log sum_k (1/K)/|w - c_k|
        out[idx] = K1 - 0.5 * s2[idx] - log_p.mean()
    return out


def vnq_quantize(theta, log_sigma2, *, a, log_threshold=3.0):
    r"""Prune by :math:`\log\alpha` and round to the nearest codeword: the final ternary weights.

    Achterhold et al. (2018), Sec. 3.2 and Sec. 4: weights with
    :math:`\log\alpha = \log(\sigma^2/\theta^2) \ge \log T_\alpha` are set to 0 (Eq. (9),
    :math:`\log T_\alpha = 3` in their experiments); the others take the codeword with the
    highest posterior density, which for a Gaussian posterior is the nearest one, Eq. (15):

    .. math::

        \hat w = \begin{cases} 0 & \log\alpha \ge \log T_\alpha \\
        \arg\min_{c \in \{-a, 0, a\}} (c - \theta)^2 & \text{otherwise.} \end{cases}

    Parameters
    ----------
    theta, log_sigma2 : array_like of float, same shape
    a : float > 0
    log_threshold : float
        :math:`\log T_\alpha`.

    Returns
    -------
    numpy.ndarray, the shape and dtype of ``theta``, with values in :math:`\{-a, 0, a\}`

    Examples
    --------
    >>> vnq_quantize([0.25, -0.12, 0.05, 0.3], [-8.0, -8.0, -8.0, 1.0], a=0.2)   # log alpha of 0.3: 3.4
    array([ 0.2, -0.2,  0. ,  0. ])
    """
    theta_arr = as_float_array(theta, "theta")
    a, _ = _check_a(a)
    log_threshold = check_real(log_threshold, "log_threshold")
    t, s2 = _as_pair(theta_arr, log_sigma2)
    if t.shape != theta_arr.shape:
        raise ValueError(f"log_sigma2 must have the shape of theta {theta_arr.shape}, got {np.shape(log_sigma2)}")
    nearest = np.where(np.abs(t) > a / 2, np.sign(t) * a, 0.0)     # MAP assignment, Eq. (15)
    pruned = (s2 - np.log(t * t + _EPS)) >= log_threshold          # Eq. (9)
    return np.where(pruned, 0.0, nearest).astype(theta_arr.dtype if theta_arr.dtype.kind == "f" else np.float64)


class VNQLinear(nn.Module):
    r"""A fully connected layer with a Gaussian posterior per weight, for Variational Network Quantization.

    Weights :math:`w_{ij} \sim \mathcal N(\theta_{ij}, \sigma_{ij}^2)` (additive-noise
    parameterization, Achterhold et al. 2018, Eq. (8)), trained with the local
    reparameterization trick (Kingma et al. 2015; Achterhold et al., Sec. 2.2): in training
    mode the pre-activations are sampled directly,

    .. math::

        \mu = x\,\theta^\top + b, \qquad v = x^2\,(\sigma^2)^\top, \qquad
        y = \mu + \sqrt{v}\odot\epsilon, \quad \epsilon \sim \mathcal N(0, I),

    and backward differentiates that sample (the reparameterization gradient): with
    :math:`g = \partial L/\partial y` and :math:`h = g \odot \epsilon / (2\sqrt v)`,

    .. math::

        \frac{\partial L}{\partial\theta} = g^\top x, \qquad
        \frac{\partial L}{\partial\log\sigma^2} = \sigma^2 \odot (h^\top x^2), \qquad
        \frac{\partial L}{\partial x} = g\,\theta + 2x \odot (h\,\sigma^2).

    In evaluation mode the layer is deterministic: it uses the means :math:`\theta`
    (``eval_weights="mean"``) or the pruned and quantized ternary weights
    (``eval_weights="quantized"``, :meth:`quantized_weight`). The KL term is *not* part of
    backward: :meth:`kl` and :meth:`kl_backward` give it and its gradient, and
    :func:`train_vnq` adds it before each optimizer step.

    Parameters
    ----------
    in_features, out_features : int >= 1
    a : float > 0
        The codebook scale: the weights are quantized to :math:`\{-a, 0, a\}`.
    bias : bool
    rng : None, int or numpy.random.Generator
        Seeds the He initialisation of :math:`\theta` and then the noise :math:`\epsilon`.
    log_sigma2 : float
        Initial :math:`\log\sigma^2` of every weight (the paper starts at :math:`-8`).
    log_threshold : float
        :math:`\log T_\alpha` for pruning (3 in the paper).

    Attributes
    ----------
    weight : Parameter, shape (out, in)
        The means :math:`\theta`.
    log_sigma2 : Parameter, shape (out, in), ``decay=False``
    bias : Parameter, shape (out,), or None
    eval_weights : {"mean", "quantized"}

    References
    ----------
    Achterhold et al. (2018), Secs. 2.2, 3; Kingma, Salimans, Welling (2015), Sec. 2.3.

    Examples
    --------
    >>> layer = VNQLinear(3, 2, a=0.5, rng=0)
    >>> x = np.ones((4, 3), np.float32)
    >>> y = layer(x)                                  # training mode: a sample
    >>> layer.eval_weights = "quantized"
    >>> yq = layer.eval()(x)
    >>> sorted(set(np.abs(layer.quantized_weight()).ravel().tolist())) <= [0.0, 0.5]
    True
    """

    def __init__(self, in_features, out_features, *, a, bias=True, rng=None, log_sigma2=-8.0, log_threshold=3.0):
        super().__init__()
        gen = check_rng(rng)             # one stream: the initialisation, then the noise (an int seed must
        base = nn.Linear(in_features, out_features, bias=bias, rng=gen)   # not restart it for the noise)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.log_sigma2 = nn.Parameter(np.full(self.weight.shape, check_real(log_sigma2, "log_sigma2"), np.float32),
                                       name="log_sigma2", decay=False)
        self.a, _ = _check_a(a)
        self.log_threshold = check_real(log_threshold, "log_threshold")
        self.rng = gen
        self.eval_weights = "mean"

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, a={self.a:.4g}, bias={self.bias is not None}"

    def forward(self, x):
        x = as_float_array(x, "x", allow_0d=False)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (n, {self.in_features}), got {x.shape}")
        self._x = x
        b = 0.0 if self.bias is None else self.bias.data
        if not self.training:
            if self.eval_weights not in ("mean", "quantized"):
                raise ValueError(f"eval_weights must be 'mean' or 'quantized', got {self.eval_weights!r}")
            self._w = self.weight.data if self.eval_weights == "mean" else self.quantized_weight()
            return x @ self._w.T + b
        sigma2 = np.exp(self.log_sigma2.data)
        mu = x @ self.weight.data.T + b
        var = (x * x) @ sigma2.T
        self._std = np.sqrt(var + 1e-30)
        self._eps = self.rng.standard_normal(mu.shape).astype(mu.dtype)
        return mu + self._std * self._eps

    def backward(self, grad_out):
        g = as_float_array(grad_out, "grad_out", finite=False)
        x = self._x
        if self.bias is not None:
            self.bias.grad += g.sum(axis=0)
        if not self.training:                         # deterministic layer: the plain linear gradient
            self.weight.grad += g.T @ x
            return g @ self._w
        sigma2 = np.exp(self.log_sigma2.data)
        h = g * self._eps / (2.0 * self._std)          # dL/dv
        self.weight.grad += g.T @ x
        self.log_sigma2.grad += sigma2 * (h.T @ (x * x))
        return g @ self.weight.data + 2.0 * x * (h @ sigma2)

    def log_alpha(self):
        """:math:`\\log\\alpha` of every weight, float64 of shape (out, in)."""
        return log_alpha(self.weight.data, self.log_sigma2.data)

    def kl(self):
        """The approximate KL divergence of the layer, summed over its weights (:func:`kl_quantizing_prior`)."""
        return float(kl_quantizing_prior(self.weight.data, self.log_sigma2.data, a=self.a).sum())

    def kl_backward(self, scale):
        """Add ``scale`` times the gradient of :meth:`kl` to the gradients of ``weight`` and ``log_sigma2``."""
        _, d_t, d_l = kl_quantizing_prior_grad(self.weight.data, self.log_sigma2.data, a=self.a)
        self.weight.grad += (scale * d_t).astype(self.weight.grad.dtype)
        self.log_sigma2.grad += (scale * d_l).astype(self.log_sigma2.grad.dtype)

    def clip_(self, low=LOG_SIGMA2_RANGE[0], high=LOG_SIGMA2_RANGE[1]):
        """Clip in place, as the paper does after each step (Sec. 4).

        :math:`\\log\\sigma^2` into ``[low, high]`` (the paper's (-10, 1)), then :math:`\\theta`
        into :math:`[-a - e^{-3/2}\\sigma, a + e^{-3/2}\\sigma]`: a mean beyond an outer codeword
        is held at the edge of its funnel, :math:`\\log(\\sigma^2/(\\theta \\mp a)^2) = 3`.
        """
        np.clip(self.log_sigma2.data, low, high, out=self.log_sigma2.data)
        edge = (self.a + math.exp(-1.5) * np.exp(0.5 * self.log_sigma2.data)).astype(self.weight.data.dtype)
        np.clip(self.weight.data, -edge, edge, out=self.weight.data)

    def quantized_weight(self, log_threshold=None):
        """The pruned ternary weights :func:`vnq_quantize` (shape (out, in), values in {-a, 0, a})."""
        t = self.log_threshold if log_threshold is None else log_threshold
        return vnq_quantize(self.weight.data, self.log_sigma2.data, a=self.a, log_threshold=t)


def vnq_layers(model):
    """The :class:`VNQLinear` layers of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, VNQLinear)]


def to_vnq(model, *, a=None, log_sigma2=-8.0, log_threshold=3.0, rng=0):
    r"""A copy of ``model`` with every :class:`qref.nn.Linear` replaced by a :class:`VNQLinear` starting at its weights.

    The paper initialises the means from a pre-trained network and :math:`\log\sigma^2 = -8`
    (Sec. 4.1). The codebook scale :math:`a` of each layer defaults to the TWN scale of its
    initial weights (:func:`qref.binary.ternarize_twn`: the mean magnitude of the weights above
    :math:`0.7\,\mathbb E|w|`).

    Parameters
    ----------
    model : qref.nn.Sequential
        Not modified; its Linear layers must have no weight quantizer.
    a : None, float > 0, or sequence of float > 0 (one per Linear layer)
    log_sigma2, log_threshold : float
        As in :class:`VNQLinear`.
    rng : None, int or numpy.random.Generator
        Seeds the layers' noise.

    Returns
    -------
    qref.nn.Sequential

    Examples
    --------
    >>> vnet = to_vnq(nn.mlp((8,), rng=0))
    >>> [type(m).__name__ for m in vnet.layers]
    ['VNQLinear', 'ReLU', 'VNQLinear']
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a qref.nn.Sequential, got {type(model).__name__}")
    out = copy.deepcopy(model)
    linear = [i for i, m in enumerate(out.layers) if isinstance(m, nn.Linear)]
    if a is None:
        scales = [None] * len(linear)
    else:
        try:
            scales = list(np.broadcast_to(np.asarray(a, dtype=float), (len(linear),)))
        except (TypeError, ValueError):
            raise ValueError(f"a must be None, a float or {len(linear)} floats (one per Linear layer), "
                             f"got {a!r}") from None
    gen = check_rng(rng)
    for i, s in zip(linear, scales):
        lin = out.layers[i]
        if lin.weight_quantizer is not None:
            raise ValueError(f"layer {i} has a weight quantizer; VNQ replaces the weights' quantization")
        w = lin.weight.data
        scale = float(binary.ternarize_twn(w.astype(np.float64))[1].ravel()[0]) if s is None else float(s)
        layer = VNQLinear(lin.in_features, lin.out_features, a=scale, bias=lin.bias is not None,
                          rng=gen.integers(2**63), log_sigma2=log_sigma2, log_threshold=log_threshold)
        layer.weight.data[...] = w
        if lin.bias is not None:
            layer.bias.data[...] = lin.bias.data
        out.layers[i] = layer
    return out


class _VNQStep:
    """Optimizer wrapper: add beta/N times the KL gradient, step, clip log sigma^2."""

    def __init__(self, optimizer, layers, n):
        self.optimizer, self.layers, self.n, self.beta = optimizer, layers, n, 0.0

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        if self.beta > 0:
            for layer in self.layers:
                layer.kl_backward(self.beta / self.n)
        self.optimizer.step()
        for layer in self.layers:
            layer.clip_()


def train_vnq(model, X, y, *, epochs, lr=1e-3, warmup_epochs=None, batch_size=64, kl_scale=1.0, rng=0,
              X_val=None, y_val=None, progress=False):
    r"""Train a model with :class:`VNQLinear` layers by maximising the ELBO (Achterhold et al. 2018).

    Minimises, per minibatch, the mean cross-entropy plus :math:`\beta_e\,\lambda\,
    D_{\mathrm{KL}}/N` (the negative ELBO of Eq. (1) divided by the number :math:`N` of
    training examples), with Adam. The warm-up factor :math:`\beta_e` rises linearly,
    :math:`\beta_e = \min\{1, (e + 1)/W\}` in epoch :math:`e = 0, 1, \dots` with :math:`W` =
    ``warmup_epochs``: :math:`1/W` in the first epoch and 1 from the :math:`W`-th on (Sec. 4:
    "warm-up", Sønderby et al. 2016),
    and the learning rate decreases linearly to 0 over the epochs (Sec. 4.1). After every step
    :math:`\log\sigma^2` is clipped to :math:`[-10, 1]` and the means to the outer edges of
    the funnels at :math:`\pm a` (:meth:`VNQLinear.clip_`). :math:`\lambda` = ``kl_scale`` is 1
    in the paper; a smaller value weakens the prior (our data set is small, so the KL term of
    a few thousand weights outweighs :math:`N \approx 1400` examples).

    Parameters
    ----------
    model : qref.nn.Module with VNQLinear layers (trained in place)
    X, y : training data, as for :func:`qref.nn.fit`
    epochs : int >= 1
    lr : float > 0
        Initial Adam learning rate.
    warmup_epochs : None or int >= 1
        Default: a third of ``epochs``.
    batch_size : int >= 1
    kl_scale : float > 0
    rng : None, int or numpy.random.Generator
        Shuffles the minibatches.
    X_val, y_val, progress
        As in :func:`qref.nn.fit`.

    Returns
    -------
    qref.nn.History
        With one extra list, ``kl``: the model's KL approximation after each epoch.

    Examples
    --------
    >>> from qref import data
    >>> d = data.load_digits()
    >>> net = to_vnq(nn.mlp((16,), rng=0))
    >>> h = train_vnq(net, d.X_train[:200], d.y_train[:200], epochs=2)
    >>> len(h.loss), len(h.kl)
    (2, 2)
    """
    layers = vnq_layers(model)
    if not layers:
        raise ValueError("model has no VNQLinear layer (use to_vnq)")
    epochs = check_positive(epochs, "epochs", integer=True)
    warm = max(1, epochs // 3) if warmup_epochs is None else check_positive(warmup_epochs, "warmup_epochs", integer=True)
    kl_scale = float(check_positive(kl_scale, "kl_scale"))
    lr = float(check_positive(lr, "lr"))
    X = as_float_array(X, "X", allow_empty=False)
    adam = nn.Adam(model.parameters(), lr=lr)
    opt = _VNQStep(adam, layers, len(X))
    opt.beta = kl_scale * min(1.0, 1.0 / warm)
    kls = []

    def callback(epoch, m, history):
        kls.append(sum(layer.kl() for layer in layers))
        opt.beta = kl_scale * min(1.0, (epoch + 2) / warm)
        adam.lr = lr * (1.0 - (epoch + 1) / epochs)

    hist = nn.fit(model, X, y, epochs=epochs, optimizer=opt, batch_size=batch_size, rng=rng, X_val=X_val,
                  y_val=y_val, progress=progress, callback=callback)
    hist.kl = kls
    return hist
