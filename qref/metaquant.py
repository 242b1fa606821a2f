r"""MetaQuant: a learned replacement for the straight-through estimator of weight quantization.

Training a network with quantized weights :math:`\hat W = Q(\tilde W)` needs the gradient of
the loss :math:`\ell` with respect to the float ("latent") weights :math:`\tilde W`, but
:math:`\partial Q/\partial \tilde W` is zero almost everywhere. The straight-through
estimator (STE) sets :math:`g_{\tilde W} := g_{\hat W}` (possibly masked). Chen, Wang & Pan
(2019) *learn* the map instead: a small network :math:`\mathcal M_\phi`, the **meta
quantizer**, shared by all layers and applied coordinate by coordinate, takes the gradient
with respect to the quantized weight and the float weight and returns the gradient used for
the float weight,

.. math::

    g_{\tilde W} = \mathcal M_\phi\big(g_{\hat W}, \tilde W\big),

which the optimizer then applies. :math:`\phi` is trained through the *next* loss: the update
:math:`\tilde W^t = \tilde W^{t-1} - \eta\,\mathcal M_\phi(g_{\hat W}^{t-1}, \tilde W^{t-1})`
makes the next quantized weights, hence the next loss, a function of :math:`\phi`.

This module has the three pieces, each small enough to read:

* :class:`MetaNetwork`: the meta quantizer, ``forward(g, w)`` and ``backward(grad_m)``;
* :class:`MetaQuantWeight`: a weight quantizer wrapper that records :math:`g_{\hat W}`;
* :class:`MetaQuantSGD`: the optimizer with MetaQuant's update rule and the meta-gradient.

What was checked and what was not: the papers are not available offline. The structure
(meta network on :math:`(g_{\hat W}, \tilde W)`, coordinate-wise and shared; the update
incorporated into the next forward pass; :math:`\phi` trained from the next loss, with the
STE used once for :math:`\partial \hat W/\partial \tilde W` on that path) follows the paper's
abstract and Sec. 3 as summarised by its authors' public tutorial. The paper's meta networks
are "FC-Grad" (a fully connected network of :math:`g_{\hat W}`), "MultiFC" (:math:`g_{\hat W}`
times a fully connected network of the weight) and "LSTMFC"; :class:`MetaNetwork` is a
multiplicative form in the spirit of MultiFC that reads both inputs. Its exact architecture,
the input scaling and the paper's equation numbers were not verified.

References
----------
Chen, S., Wang, W., Pan, S. J. (2019). MetaQuant: Learning to Quantize by Learning to
Penetrate Non-differentiable Quantization. NeurIPS 32.

Baydin, A. G., Cornish, R., Martínez Rubio, D., Schmidt, M., Wood, F. (2018). Online Learning
Rate Adaptation with Hypergradient Descent. ICLR 2018.
"""

from __future__ import annotations

import numpy as np

from . import nn
from ._validation import as_float_array, check_positive, check_real, check_rng

__all__ = ["MetaNetwork", "MetaQuantWeight", "MetaQuantSGD"]


class MetaNetwork(nn.Module):
    r"""The meta quantizer: a tiny coordinate-wise network :math:`g_{\tilde W} = \mathcal M_\phi(g_{\hat W}, \tilde W)`.

    For every coordinate :math:`i` (every weight of every layer, all sharing :math:`\phi`):

    .. math::

        u_i = \big(g_i / \gamma,\; w_i\big), \qquad
        h_i = \tanh(A u_i + a), \qquad
        f_i = v^\top h_i + c, \qquad
        m_i = g_i\,(1 + f_i),

    with :math:`g = g_{\hat W}`, :math:`w = \tilde W`, a fixed gradient unit :math:`\gamma`
    (gradients are tiny; :math:`g/\gamma` is of order one), and :math:`\phi = (A, a, v, c)`,
    :math:`A \in \mathbb R^{H\times 2}`. The output is the input gradient times a learned,
    per-coordinate factor :math:`1 + f_i` (the multiplicative "MultiFC" form of Chen et al.
    2019, Sec. 3, here reading both inputs). :math:`v` and :math:`c` start at zero, so the
    network starts as the **identity** :math:`m = g`, i.e. as the straight-through estimator.

    The backward pass is the chain rule read right to left. With :math:`\delta_i = \partial
    L/\partial m_i`:

    .. math::

        \frac{\partial L}{\partial f_i} = \delta_i g_i, \quad
        \frac{\partial L}{\partial v} = \sum_i \frac{\partial L}{\partial f_i} h_i, \quad
        \frac{\partial L}{\partial c} = \sum_i \frac{\partial L}{\partial f_i}, \quad
        \frac{\partial L}{\partial z_i} = \frac{\partial L}{\partial f_i}\, v \odot (1 - h_i^2),

    .. math::

        \frac{\partial L}{\partial A} = \sum_i \frac{\partial L}{\partial z_i} u_i^\top, \quad
        \frac{\partial L}{\partial a} = \sum_i \frac{\partial L}{\partial z_i}, \quad
        \frac{\partial L}{\partial g_i} = \delta_i (1 + f_i) + \frac{1}{\gamma}
        \Big(A^\top \frac{\partial L}{\partial z_i}\Big)_1, \quad
        \frac{\partial L}{\partial w_i} = \Big(A^\top \frac{\partial L}{\partial z_i}\Big)_2 .

    Parameters
    ----------
    hidden : int >= 1
        :math:`H`, the width of the hidden layer.
    grad_unit : float > 0
        :math:`\gamma`.
    rng : None, int or numpy.random.Generator
        Seeds :math:`A \sim \mathcal N(0, 1)`; :math:`a, v, c` start at zero.

    Attributes
    ----------
    A, a, v, c : Parameter (float32, no weight decay), shapes (H, 2), (H,), (H,), ()

    References
    ----------
    Chen, Wang, Pan (2019), "MetaQuant", NeurIPS, Sec. 3 (the meta quantizer and its designs).

    Examples
    --------
    >>> meta = MetaNetwork(4, rng=0)
    >>> g, w = np.array([0.01, -0.02], np.float32), np.array([0.5, -0.1], np.float32)
    >>> meta(g, w)                      # the identity at initialization
    array([ 0.01, -0.02], dtype=float32)
    >>> meta.c.data[...] = 1.0          # f = 1: every gradient doubled
    >>> meta(g, w)
    array([ 0.02, -0.04], dtype=float32)
    >>> grad_g, grad_w = meta.backward(np.ones(2, np.float32))
    >>> round(float(meta.c.grad), 6)    # sum_i delta_i g_i = 0.01 - 0.02
    -0.01
    """

    def __init__(self, hidden=16, *, grad_unit=1e-3, rng=None):
        super().__init__()
        hidden = check_positive(hidden, "hidden", integer=True)
        self.grad_unit = check_positive(grad_unit, "grad_unit")
        rng = check_rng(rng)
        self.A = nn.Parameter(rng.normal(size=(hidden, 2)).astype(np.float32), name="A", decay=False)
        self.a = nn.Parameter(np.zeros(hidden, np.float32), name="a", decay=False)
        self.v = nn.Parameter(np.zeros(hidden, np.float32), name="v", decay=False)
        self.c = nn.Parameter(np.zeros((), np.float32), name="c", decay=False)

    def extra_repr(self):
        return f"hidden={self.A.data.shape[0]}, grad_unit={self.grad_unit}"

    def __call__(self, g, w):
        return self.forward(g, w)

    def forward(self, g, w):
        """``m = g * (1 + f(g / grad_unit, w))``, of ``g``'s shape; stores what backward needs."""
        g = as_float_array(g, "g")
        w = as_float_array(w, "w")
        if g.shape != w.shape:
            raise ValueError(f"g and w must have the same shape, got {g.shape} and {w.shape}")
        dt = np.result_type(g.dtype, self.A.data.dtype)
        gf, wf = g.reshape(-1).astype(dt), w.reshape(-1).astype(dt)
        u = np.stack([gf / dt.type(self.grad_unit), wf], axis=1)         # (n, 2)
        h = np.tanh(u @ self.A.data.T + self.a.data)                     # (n, H)
        f = h @ self.v.data + self.c.data                                # (n,)
        self._shape, self._g, self._u, self._h, self._f = g.shape, gf, u, h, f
        return (gf * (1 + f)).reshape(g.shape)

    def backward(self, grad_out):
        """Accumulate dL/dA, dL/da, dL/dv, dL/dc; return ``(dL/dg, dL/dw)``, each of ``g``'s shape."""
        delta = as_float_array(grad_out, "grad_out", finite=False)
        if delta.shape != self._shape:
            raise ValueError(f"grad_out must have the shape of g {self._shape}, got {delta.shape}")
        delta = delta.reshape(-1).astype(self._g.dtype)
        g, u, h, f = self._g, self._u, self._h, self._f
        d_f = delta * g                                                  # dL/df_i
        self.v.grad += h.T @ d_f
        self.c.grad += d_f.sum()
        d_z = np.outer(d_f, self.v.data) * (1 - h * h)                   # dL/dz_i, (n, H)
        self.A.grad += d_z.T @ u
        self.a.grad += d_z.sum(axis=0)
        d_u = d_z @ self.A.data                                          # (n, 2)
        d_g = delta * (1 + f) + d_u[:, 0] / self.grad_unit
        return d_g.reshape(self._shape), d_u[:, 1].reshape(self._shape)


class MetaQuantWeight(nn.Module):
    r"""A weight quantizer that records :math:`g_{\hat W} = \partial \ell/\partial \hat W` for MetaQuant.

    ``forward(w)`` is ``quantizer(w)``. ``backward(g)`` stores ``g`` as :attr:`grad_q` and
    returns ``quantizer.backward(g)``, the quantizer's own straight-through gradient; with
    :class:`MetaQuantSGD` that STE gradient is used only on the path that trains the meta
    network (the :math:`\partial \hat W^t/\partial \tilde W^t` of the meta-gradient), while the
    weight update uses the meta network's output instead.

    Parameters
    ----------
    quantizer : qref.nn.Module
        For example ``qref.qat.STEQuantizer(fn)`` (identity STE), as in Chen et al. (2019),
        whose forward quantizers are DoReFa's and BWN's with the STE.

    Attributes
    ----------
    grad_q : ndarray or None
        :math:`g_{\hat W}` from the last backward pass.

    Examples
    --------
    >>> from qref import qat
    >>> q = MetaQuantWeight(qat.STEQuantizer(np.sign))
    >>> q(np.array([0.3, -0.2]))
    array([ 1., -1.])
    >>> q.backward(np.array([0.5, 0.25])), q.grad_q
    (array([0.5 , 0.25]), array([0.5 , 0.25]))
    """

    def __init__(self, quantizer):
        super().__init__()
        if not isinstance(quantizer, nn.Module):
            raise TypeError(f"quantizer must be a qref.nn.Module, got {type(quantizer).__name__}")
        self.quantizer = quantizer
        self.grad_q = None

    def forward(self, w):
        return self.quantizer(w)

    def backward(self, grad_out):
        self.grad_q = np.array(grad_out, copy=True)
        return self.quantizer.backward(grad_out)


class MetaQuantSGD:
    r"""SGD with MetaQuant's update rule: the meta network's output replaces the STE gradient.

    For every layer whose ``weight_quantizer`` is a :class:`MetaQuantWeight` (all other
    parameters, e.g. biases, get plain SGD with their own gradients), one call of
    :meth:`step` after the backward pass of iteration :math:`t` does:

    1. **Meta-gradient** (from iteration :math:`t \ge 2`). The float weights now in the model
       were made by the previous step, :math:`\tilde W^t = \tilde W^{t-1} - \eta\,\mathcal
       M_\phi(g_{\hat W}^{t-1}, \tilde W^{t-1})` (without momentum), so the loss
       :math:`\ell^t` just computed depends on :math:`\phi`:

       .. math::

           \frac{\partial \ell^t}{\partial \phi}
           = \sum_{\text{layers}} \sum_i
             \frac{\partial \ell^t}{\partial \hat W^t_i}\,
             \frac{\partial \hat W^t_i}{\partial \tilde W^t_i}\,
             \frac{\partial \tilde W^t_i}{\partial m_i}\,
             \frac{\partial m_i}{\partial \phi}
           = \sum_i \underbrace{\mathrm{STE}\big(g_{\hat W}^t\big)_i}_{\texttt{weight.grad}}
             \cdot (-\eta) \cdot \frac{\partial \mathcal M_\phi(g^{t-1}_{\hat W,i}, \tilde W^{t-1}_i)}{\partial \phi} .

       The non-differentiable :math:`\partial \hat W/\partial \tilde W` is still needed once,
       on this path, and is the quantizer's STE. The last factor is
       ``meta.backward(-lr * weight.grad)``. With momentum :math:`\mu`, the velocity's
       dependence on earlier outputs is ignored (:math:`\partial \tilde W^t/\partial m =
       -\eta` still holds for the current output). Then ``meta_optimizer`` (Adam) updates
       :math:`\phi`.
    2. **Weight update.** :math:`m = \mathcal M_\phi(g_{\hat W}^t, \tilde W^t)` with the
       updated :math:`\phi`, written into ``weight.grad``; then SGD (learning rate
       :math:`\eta`, momentum :math:`\mu`) updates all parameters. The meta network keeps
       this forward pass for step 1 of the next call.

    This is the order of the authors' algorithm (the meta network's output for iteration
    :math:`t`'s weights is produced after :math:`\phi` was updated from the loss of iteration
    :math:`t - 1`), except that the update is applied at the end of a step rather than at the
    start of the next, so the model always holds its current weights. With ``meta_lr=0`` and
    a meta network that is the identity, MetaQuant *is* SGD with the straight-through estimator,
    bit for bit.

    Parameters
    ----------
    model : qref.nn.Module
        With at least one layer whose ``weight_quantizer`` is a :class:`MetaQuantWeight`.
    meta : MetaNetwork
        Shared by all those layers.
    lr : float > 0
        :math:`\eta` of the network.
    momentum : float in [0, 1)
    meta_lr : float >= 0
        Learning rate of Adam on :math:`\phi`; 0 freezes the meta network.

    Attributes
    ----------
    sgd : qref.nn.SGD
        Over all the model's parameters.
    meta_optimizer : qref.nn.Adam or None

    Raises
    ------
    TypeError
        If ``model`` or ``meta`` has the wrong type.
    ValueError
        If no layer has a :class:`MetaQuantWeight`.

    References
    ----------
    Chen, Wang, Pan (2019), "MetaQuant", NeurIPS, Sec. 3 (the update incorporated into the
    forward pass, and the training of the meta quantizer) and its Algorithm 1.

    Examples
    --------
    >>> from qref import qat
    >>> net = nn.mlp((8,), rng=0, weight_quantizer=lambda i: MetaQuantWeight(qat.STEQuantizer(np.sign)))
    >>> opt = MetaQuantSGD(net, MetaNetwork(4, rng=0), lr=0.1)
    >>> X = np.random.default_rng(0).random((32, 64)).astype(np.float32)
    >>> y = np.arange(32) % 10
    >>> h = nn.fit(net, X, y, epochs=2, optimizer=opt, progress=False)
    >>> len(h.loss), opt.meta_steps
    (2, 1)
    """

    def __init__(self, model, meta, *, lr, momentum=0.0, meta_lr=1e-3):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a qref.nn.Module, got {type(model).__name__}")
        if not isinstance(meta, MetaNetwork):
            raise TypeError(f"meta must be a MetaNetwork, got {type(meta).__name__}")
        self.layers = [m for m in model.modules() if isinstance(getattr(m, "weight_quantizer", None), MetaQuantWeight)]
        if not self.layers:
            raise ValueError("model has no layer whose weight_quantizer is a MetaQuantWeight")
        self.model, self.meta = model, meta
        self.lr = check_positive(lr, "lr")
        self.sgd = nn.SGD(model.parameters(), lr=self.lr, momentum=momentum)
        meta_lr = check_real(meta_lr, "meta_lr")
        if meta_lr < 0:
            raise ValueError(f"meta_lr must be >= 0, got {meta_lr}")
        self.meta_optimizer = nn.Adam(meta.parameters(), lr=meta_lr) if meta_lr > 0 else None
        self._meta_ready = False      # does meta hold the forward pass that made the current weights?
        self.meta_steps = 0

    def zero_grad(self):
        """Clear the model's gradients (the meta network's are cleared in :meth:`step`)."""
        self.model.zero_grad()

    def step(self):
        """The meta-gradient step on :math:`\\phi`, then the MetaQuant weight update (see the class)."""
        weights = [layer.weight for layer in self.layers]
        sizes = [w.data.size for w in weights]
        # 1. d loss^t / d phi through W^t = W^{t-1} - lr * M_phi(...): weight.grad is the STE gradient.
        if self._meta_ready and self.meta_optimizer is not None:
            self.meta.zero_grad()
            ste = np.concatenate([w.grad.reshape(-1) for w in weights])
            self.meta.backward(-self.lr * ste)
            self.meta_optimizer.step()
            self.meta_steps += 1
        # 2. the meta network's gradient for the float weights replaces the STE, then SGD.
        grads = []
        for layer in self.layers:
            g = layer.weight_quantizer.grad_q
            if g is None:
                raise RuntimeError("MetaQuantSGD.step() needs a backward pass first (no gradient was recorded)")
            grads.append(np.asarray(g).reshape(-1))
        m = self.meta(np.concatenate(grads), np.concatenate([w.data.reshape(-1) for w in weights]))
        for w, part in zip(weights, np.split(m, np.cumsum(sizes)[:-1])):
            w.grad[...] = part.reshape(w.data.shape)
        self.sgd.step()
        self._meta_ready = True
