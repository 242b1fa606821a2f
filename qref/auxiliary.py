r"""Training a low-precision network with a full-precision auxiliary module (Zhuang et al. 2020).

Gradients reach the early layers of a low-precision network only through every quantizer
above them, each a straight-through approximation. Zhuang, Liu, Tan, Shen & Reid (2020) add,
during training only, a **full-precision auxiliary module** :math:`H` that reads intermediate
features of the low-precision network :math:`F` through **adapters** (a 1x1 convolution, or a
linear layer), has its own classifier and loss, and is optimized jointly:

.. math::

    \min_{\theta_F, \theta_H}\; \mathcal L(\theta_F, \theta_H)
    = \ell\big(F(x; \theta_F), y\big) + \lambda\, \ell\big(H(f_k(x; \theta_F); \theta_H), y\big),

where :math:`f_k` is the output of the :math:`k`-th block of :math:`F`. The gradient that
reaches the first :math:`k` blocks is the sum of the usual one and a second one that did not
pass through the quantizers of the blocks above: an extra, full-precision route. At inference
:math:`H` is discarded, so the deployed network and its cost are exactly those of :math:`F`.

Here :math:`F` is any :class:`qref.nn.Sequential` (e.g. ``nn.mlp`` with quantizers from
:mod:`qref.qat`) and :math:`H` any Module; :func:`auxiliary_mlp_branch` builds the branch used
in the book: adapter, its own batch norms, optionally the *full-precision* (latent) weights
of the next layer of :math:`F` shared, and its own classifier.

What was checked and what was not: the papers are not available offline. The joint loss,
the adapters, the full-precision auxiliary module trained jointly and discarded at
inference follow the paper's abstract; the weight sharing with separate batch norms follows a
reading note on the paper ("F and H share the convolution parameters but have independent
BN"). The paper attaches several adapters (one per block, their outputs summed into the
auxiliary stream) and uses its own loss weights; this module attaches one branch at one
layer, with a weight :math:`\lambda` (default 1). Equation numbers were not verified.

References
----------
Zhuang, B., Liu, L., Tan, M., Shen, C., Reid, I. (2020). Training Quantized Neural Networks
with a Full-Precision Auxiliary Module. CVPR 2020, 1488-1497.
"""

from __future__ import annotations

import numpy as np

from . import nn
from ._validation import check_bool, check_int, check_real, check_rng

__all__ = ["SharedLinear", "AuxiliaryNet", "AuxiliaryLoss", "auxiliary_mlp_branch", "split_gradients"]


class SharedLinear(nn.Module):
    r"""A full-precision view of another :class:`qref.nn.Linear`: its weight and bias, no quantizer.

    .. math::

        y = x \tilde W^\top + b, \qquad
        \frac{\partial L}{\partial \tilde W} \mathrel{+}= \Big(\frac{\partial L}{\partial y}\Big)^{\!\top} x

    :math:`\tilde W` is the *latent* float weight of the shared layer (the same Parameter
    object), so the gradient of this path accumulates into the shared layer's ``weight.grad``
    next to the one its own (quantized) forward pass produces.

    Parameters
    ----------
    layer : qref.nn.Linear

    Examples
    --------
    >>> from qref import qat
    >>> lin = nn.Linear(2, 1, rng=0, weight_quantizer=qat.STEQuantizer(np.sign))
    >>> lin.weight.data[:] = [[0.5, -0.25]]
    >>> x = np.array([[1.0, 1.0]], np.float32)
    >>> lin(x), SharedLinear(lin)(x)            # quantized {+-1} weights vs the float ones
    (array([[0.]], dtype=float32), array([[0.25]], dtype=float32))
    """

    def __init__(self, layer):
        super().__init__()
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"layer must be a qref.nn.Linear, got {type(layer).__name__}")
        # Keep the shared Parameters (not the layer: its quantizer is not part of this path).
        self.weight, self.bias = layer.weight, layer.bias
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, shared"

    def forward(self, x):
        x = nn._check_input(x, "x", 2, self.in_features, 1, f"SharedLinear({self.in_features}, {self.out_features})")
        self._x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_out):
        self.weight.grad += grad_out.T @ self._x
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        return grad_out @ self.weight.data


class AuxiliaryNet(nn.Module):
    r"""A low-precision network :math:`F` with a full-precision auxiliary branch :math:`H` at layer ``tap``.

    In training mode ``forward(x)`` runs :math:`F` and, on the way, the branch on the output
    :math:`f_k` of ``network[tap]``; it returns :math:`F`'s logits and keeps the branch's as
    :attr:`aux_logits`. ``backward`` joins the two gradients where the branch leaves :math:`F`
    (the chain rule for a fork):

    .. math::

        \frac{\partial \mathcal L}{\partial f_k}
        = \underbrace{\frac{\partial \ell_F}{\partial f_k}}_{\text{through } F\text{'s upper layers}}
        + \lambda\,\underbrace{\frac{\partial \ell_H}{\partial f_k}}_{\text{through } H} ,

    then continues through ``network[tap]``, ..., ``network[0]``. Parameters shared by both
    paths (see :class:`SharedLinear`) receive the sum of both contributions. In evaluation
    mode ``forward`` is ``network(x)``: the branch is never run (Zhuang et al. 2020 discard it
    at inference), so the deployed network is ``self.network``.

    Use with :class:`AuxiliaryLoss`, which supplies the branch's gradient.

    Parameters
    ----------
    network : qref.nn.Sequential
        :math:`F`, e.g. ``nn.mlp(..., weight_quantizer=..., activation_quantizer=...)``.
    branch : qref.nn.Module
        :math:`H`, full precision, from ``network[tap]``'s output to logits.
    tap : int
        The index of the layer of ``network`` whose output the branch reads (0 <= tap <
        len(network) - 1).

    Attributes
    ----------
    aux_logits : ndarray or None
        The branch's logits from the last training-mode forward pass.

    References
    ----------
    Zhuang, Liu, Tan, Shen, Reid (2020), "Training quantized neural networks with a
    full-precision auxiliary module", CVPR, Sec. 3 (the auxiliary module and joint training).

    Examples
    --------
    >>> net = nn.mlp((8, 8), rng=0)
    >>> aux = AuxiliaryNet(net, auxiliary_mlp_branch(net, tap=1, rng=1), tap=1)
    >>> x = np.ones((4, 64), np.float32)
    >>> aux(x).shape, aux.aux_logits.shape
    ((4, 10), (4, 10))
    >>> bool(np.array_equal(nn.predict(aux, x), nn.predict(net, x)))   # inference: F alone
    True
    """

    def __init__(self, network, branch, *, tap):
        super().__init__()
        if not isinstance(network, nn.Sequential):
            raise TypeError(f"network must be a qref.nn.Sequential, got {type(network).__name__}")
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be a qref.nn.Module, got {type(branch).__name__}")
        tap = check_int(tap, "tap")
        if not 0 <= tap < len(network) - 1:
            raise ValueError(f"tap must be in [0, {len(network) - 2}] (a layer below the last), got {tap}")
        self.network, self.branch, self.tap = network, branch, tap
        self.aux_logits = None
        self._aux_grad = None

    def extra_repr(self):
        return f"tap={self.tap}"

    def forward(self, x):
        if not self.training:
            self.aux_logits = None
            return self.network(x)
        for i, layer in enumerate(self.network.layers):
            x = layer(x)
            if i == self.tap:
                self.aux_logits = self.branch(x)
        self._aux_grad = None
        return x

    def backward(self, grad_out):
        if self.aux_logits is None:
            raise RuntimeError("AuxiliaryNet.backward needs a training-mode forward pass first")
        if self._aux_grad is None:
            raise RuntimeError("AuxiliaryNet.backward needs the branch's gradient: use AuxiliaryLoss "
                               "(or call set_aux_grad) after the forward pass")
        g = grad_out
        for i in range(len(self.network.layers) - 1, -1, -1):
            if i == self.tap:
                g = g + self.branch.backward(self._aux_grad)      # the fork: the two gradients add
            g = self.network.layers[i].backward(g)
        return g

    def set_aux_grad(self, grad):
        """Set :math:`\\partial \\mathcal L/\\partial` ``aux_logits`` for the next backward (AuxiliaryLoss does this)."""
        grad = np.asarray(grad)
        if self.aux_logits is None or grad.shape != self.aux_logits.shape:
            want = None if self.aux_logits is None else self.aux_logits.shape
            raise ValueError(f"grad must have the shape of aux_logits {want}, got {grad.shape}")
        self._aux_grad = grad


class AuxiliaryLoss:
    r"""The joint loss :math:`\ell(F(x), y) + \lambda\,\ell(H(f_k), y)` of an :class:`AuxiliaryNet`.

    Pass it to :func:`qref.nn.fit` as ``loss``. ``forward(logits, y)`` takes :math:`F`'s logits
    (what the model returns) and reads the branch's from ``net.aux_logits``; ``backward()``
    hands :math:`\lambda\,\partial\ell_H/\partial` ``aux_logits`` to the net and returns
    :math:`\partial \ell_F/\partial` ``logits``. In evaluation mode (no branch) it is :math:`\ell_F`.

    Parameters
    ----------
    net : AuxiliaryNet
    weight : float >= 0
        :math:`\lambda`.

    Attributes
    ----------
    last : (float, float)
        :math:`(\ell_F, \ell_H)` of the last forward pass (:math:`\ell_H` is nan in evaluation mode).

    Examples
    --------
    >>> net = nn.mlp((8, 8), rng=0)
    >>> aux = AuxiliaryNet(net, auxiliary_mlp_branch(net, tap=1, rng=1), tap=1)
    >>> loss = AuxiliaryLoss(aux, weight=0.5)
    >>> x, y = np.ones((4, 64), np.float32), np.arange(4)
    >>> total = loss.forward(aux(x), y)
    >>> bool(np.isclose(total, loss.last[0] + 0.5 * loss.last[1]))
    True
    """

    def __init__(self, net, *, weight=1.0):
        if not isinstance(net, AuxiliaryNet):
            raise TypeError(f"net must be an AuxiliaryNet, got {type(net).__name__}")
        weight = check_real(weight, "weight")
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.net, self.weight = net, weight
        self._main, self._aux = nn.SoftmaxCrossEntropy(), nn.SoftmaxCrossEntropy()
        self.last = (float("nan"), float("nan"))

    def forward(self, logits, y):
        main = self._main.forward(logits, y)
        if self.net.aux_logits is None:
            self.last = (main, float("nan"))
            return main
        aux = self._aux.forward(self.net.aux_logits, y)
        self.last = (main, aux)
        return main + self.weight * aux

    def backward(self):
        if self.net.aux_logits is not None:
            self.net.set_aux_grad(self.weight * self._aux.backward())
        return self._main.backward()


def auxiliary_mlp_branch(network, *, tap, share=True, rng=None):
    r"""The full-precision auxiliary branch for an MLP :math:`F` built by :func:`qref.nn.mlp`.

    Reading :math:`f_k`, the output of ``network[tap]`` (width :math:`n`), the branch is

    .. math::

        H(f_k) = C\,\mathrm{ReLU}\Big(\mathrm{BN}_2\big(\tilde W_{k+1}\,
                 \mathrm{ReLU}(\mathrm{BN}_1(A f_k)) + b_{k+1}\big)\Big) + c

    with a full-precision **adapter** :math:`A` (``Linear(n, n)``, the MLP's 1x1 convolution),
    the branch's **own** batch norms :math:`\mathrm{BN}_1, \mathrm{BN}_2`, the **shared**
    full-precision weights :math:`\tilde W_{k+1}, b_{k+1}` of the next Linear of :math:`F`
    (a :class:`SharedLinear`; with ``share=False`` a fresh Linear instead) and its **own**
    classifier :math:`C, c`.

    Parameters
    ----------
    network : qref.nn.Sequential
        From :func:`qref.nn.mlp`, with a Linear above ``tap`` and below the last layer.
    tap : int
        The layer whose output the branch reads (the end of a block, e.g. 2 for the first
        ReLU -> activation quantizer of ``nn.mlp(..., activation_quantizer=...)``).
    share : bool
        Share the next Linear's full-precision weights with :math:`F`.
    rng : None, int or numpy.random.Generator
        Seeds the adapter and classifier (and the unshared Linear).

    Returns
    -------
    qref.nn.Sequential

    Raises
    ------
    ValueError
        If there is no hidden Linear above ``tap``.

    Examples
    --------
    >>> net = nn.mlp((16, 16), rng=0)
    >>> branch = auxiliary_mlp_branch(net, tap=1)
    >>> branch[3].weight is net[2].weight           # the shared full-precision weights
    True
    """
    if not isinstance(network, nn.Sequential):
        raise TypeError(f"network must be a qref.nn.Sequential, got {type(network).__name__}")
    tap = check_int(tap, "tap")
    share = check_bool(share, "share")
    rng = check_rng(rng)
    lins = [i for i, layer in enumerate(network.layers) if isinstance(layer, nn.Linear)]
    above = [i for i in lins if i > tap]
    if not 0 <= tap < len(network) or len(above) < 2:
        raise ValueError(f"tap must index a layer of network below a hidden Linear (at {lins[:-1]}), got {tap}")
    below = [i for i in lins if i <= tap]
    width = network.layers[below[-1]].out_features if below else network.layers[above[0]].in_features
    nxt = network.layers[above[0]]
    classes = network.layers[lins[-1]].out_features
    middle = SharedLinear(nxt) if share else nn.Linear(nxt.in_features, nxt.out_features, rng=rng)
    return nn.Sequential(
        nn.Linear(width, nxt.in_features, rng=rng),       # the adapter
        nn.BatchNorm1d(nxt.in_features), nn.ReLU(),
        middle,
        nn.BatchNorm1d(nxt.out_features), nn.ReLU(),
        nn.Linear(nxt.out_features, classes, rng=rng),    # the branch's own classifier
    )


def split_gradients(net, x, y, *, weight=1.0):
    r"""The gradient of each of :math:`F`'s parameters, split into its main and auxiliary parts.

    .. math::

        \nabla_{\theta_F} \mathcal L
        = \underbrace{\nabla_{\theta_F} \ell_F}_{\text{main}}
        + \underbrace{\lambda \nabla_{\theta_F} \ell_H}_{\text{auxiliary}}

    computed with two backward passes on the minibatch (the joint one, and one with
    :math:`\lambda = 0`), in the net's current mode (training mode is needed for the branch).
    Gradients of the batch-norm statistics' side effect aside (running averages are updated
    twice), nothing else changes; the parameters' ``.grad`` hold the joint gradient afterwards.

    Parameters
    ----------
    net : AuxiliaryNet
    x : ndarray of float, shape (n, ...)
    y : ndarray of int, shape (n,)
    weight : float >= 0
        :math:`\lambda`.

    Returns
    -------
    list of (str, ndarray, ndarray)
        ``(name, main, auxiliary)`` for each parameter of ``net.network``, in order; names are
        ``"<layer index>.<parameter name>"``.

    Examples
    --------
    >>> net = nn.mlp((8, 8), rng=0)
    >>> aux = AuxiliaryNet(net, auxiliary_mlp_branch(net, tap=1, rng=1), tap=1)
    >>> x, y = np.random.default_rng(0).random((16, 64)).astype(np.float32), np.arange(16) % 10
    >>> parts = split_gradients(aux, x, y)
    >>> [name for name, main, extra in parts if not extra.any()]   # the top layer gets no auxiliary part
    ['4.weight', '4.bias']
    """
    if not isinstance(net, AuxiliaryNet):
        raise TypeError(f"net must be an AuxiliaryNet, got {type(net).__name__}")
    names = []
    for i, layer in enumerate(net.network.layers):
        for p in layer.parameters():
            names.append((f"{i}.{p.name}", p))
    grads = []
    for lam in (0.0, weight):
        loss = AuxiliaryLoss(net, weight=lam)
        nn.backprop(net, x, y, loss)
        grads.append([p.grad.copy() for _, p in names])
    return [(name, g0, g1 - g0) for (name, _), g0, g1 in zip(names, *grads)]
