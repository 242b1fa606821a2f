"""Data every chapter shares: synthetic weight tensors, the digits data set, a reference model.

Nothing here downloads anything. The digits data set (8x8 images of handwritten digits,
1797 samples, 10 classes) ships inside scikit-learn; the reference model is trained on it
in about a second, deterministically, so every chapter quantizes *the same* model and can
report accuracy. scikit-learn is needed only by :func:`load_digits` and
:func:`reference_mlp` (it is a dependency of the book, not of ``qref``).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from ._validation import (
    as_float_array, check_choice, check_float_dtype, check_int, check_positive, check_real, check_rng,
)

__all__ = ["DISTRIBUTIONS", "synthetic_weights", "Digits", "load_digits", "MLP", "reference_mlp"]

#: The distributions :func:`synthetic_weights` draws from.
DISTRIBUTIONS = ("gaussian", "laplace", "uniform", "student_t")


def synthetic_weights(shape, *, distribution="gaussian", std=1.0, dof=3.0, rng=None, dtype=np.float32):
    r"""A random weight tensor with a given distribution, zero mean and standard deviation ``std``.

    ``"gaussian"`` is the usual model of trained weights, ``"laplace"`` the sharper-peaked,
    heavier-tailed one that fits many trained layers better (Banner et al. 2019), ``"uniform"``
    the distribution for which uniform quantization is optimal, and ``"student_t"`` (with
    ``dof`` degrees of freedom, > 2) a heavy-tailed one whose outliers stress min–max ranges.
    Each is scaled to the requested standard deviation.

    Parameters
    ----------
    shape : int or tuple of int
    distribution : str
        One of :data:`DISTRIBUTIONS`.
    std : float > 0
    dof : float > 2
        Degrees of freedom of the Student t distribution.
    rng : None, int or numpy.random.Generator
    dtype : float dtype of the result

    Returns
    -------
    ndarray of shape ``shape`` and dtype ``dtype``

    Examples
    --------
    >>> w = synthetic_weights((256, 256), distribution="laplace", std=0.1, rng=0)
    >>> w.dtype, round(float(w.std()), 2)
    (dtype('float32'), 0.1)
    """
    check_choice(distribution, "distribution", DISTRIBUTIONS)
    check_positive(std, "std")
    dtype = check_float_dtype(dtype)
    shape = tuple(check_int(n, "shape", low=0) for n in ((shape,) if np.ndim(shape) == 0 else shape))
    gen = check_rng(rng)
    if distribution == "gaussian":
        w = gen.standard_normal(shape)
    elif distribution == "laplace":
        w = gen.laplace(0.0, 1.0 / np.sqrt(2.0), shape)  # variance 2 b^2 = 1
    elif distribution == "uniform":
        w = gen.uniform(-np.sqrt(3.0), np.sqrt(3.0), shape)  # variance a^2 / 3 = 1
    else:
        check_positive(dof, "dof")
        if dof <= 2:
            raise ValueError(f"dof must be > 2 for a finite variance, got {dof}")
        w = gen.standard_t(dof, shape) / np.sqrt(dof / (dof - 2.0))
    return (std * w).astype(dtype)


@dataclass(frozen=True)
class Digits:
    """The digits data set split into train and test parts (pixels scaled to [0, 1])."""

    X_train: np.ndarray  #: shape (n_train, 64), float32
    X_test: np.ndarray  #: shape (n_test, 64), float32
    y_train: np.ndarray  #: shape (n_train,), int64 labels 0..9
    y_test: np.ndarray  #: shape (n_test,), int64 labels 0..9


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:  # pragma: no cover
        raise ImportError("qref.data needs scikit-learn for the digits data set: pip install scikit-learn") from None


def load_digits(*, test_size=0.25, rng=0, dtype=np.float32):
    """The 8x8 digits data set that ships with scikit-learn, split reproducibly.

    Parameters
    ----------
    test_size : float in (0, 1)
        Fraction of the 1797 samples held out for testing (stratified by class).
    rng : int or numpy.random.Generator
        Seed of the split.
    dtype : float dtype of the pixels

    Returns
    -------
    Digits

    Examples
    --------
    >>> d = load_digits()
    >>> d.X_train.shape, d.X_test.shape, float(d.X_train.max())
    ((1347, 64), (450, 64), 1.0)
    """
    _sklearn()
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    if not 0 < check_real(test_size, "test_size") < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    dtype = check_float_dtype(dtype)
    X, y = _load(return_X_y=True)
    if isinstance(rng, np.random.Generator):
        seed = int(rng.integers(2**31))
    else:
        seed = None if rng is None else check_int(rng, "rng", low=0)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    return Digits((X_tr / 16.0).astype(dtype), (X_te / 16.0).astype(dtype), y_tr.astype(np.int64), y_te.astype(np.int64))


@dataclass
class MLP:
    r"""A multilayer perceptron with ReLU hidden layers, as plain numpy arrays.

    Layer :math:`l` computes :math:`a_{l+1} = \mathrm{ReLU}(W_l a_l + b_l)` (no ReLU after the
    last layer, whose outputs are the class logits). ``weights[l]`` has shape
    ``(out_features, in_features)``, the PyTorch ``Linear`` layout, so ``axis=0`` is the
    output-channel axis for per-channel quantization.

    The hooks of :meth:`forward` let a chapter quantize weights and activations without
    re-implementing the model.
    """

    weights: list  #: list of float32 arrays, shape (out, in)
    biases: list  #: list of float32 arrays, shape (out,)

    def forward(self, X, *, weight_quantizer=None, activation_quantizer=None, return_activations=False):
        """Logits for inputs ``X`` of shape (n, 64).

        Parameters
        ----------
        X : array_like of float, shape (n, in_features)
        weight_quantizer : callable ``(W, layer) -> W_hat``, optional
            Applied to each weight matrix (``layer`` is its index).
        activation_quantizer : callable ``(a, layer) -> a_hat``, optional
            Applied to the input of each layer (layer 0's input is the pixels).
        return_activations : bool
            Also return the list of each layer's (unquantized) input.

        Returns
        -------
        logits : ndarray of shape (n, n_classes)
        activations : list of ndarray (only with ``return_activations``)
        """
        a = as_float_array(X, "X", allow_0d=False)
        if a.ndim != 2 or a.shape[1] != self.weights[0].shape[1]:
            raise ValueError(f"X must have shape (n, {self.weights[0].shape[1]}), got {a.shape}")
        acts = []
        for layer, (W, b) in enumerate(zip(self.weights, self.biases)):
            acts.append(a)
            if activation_quantizer is not None:
                a = activation_quantizer(a, layer)
            if weight_quantizer is not None:
                W = weight_quantizer(W, layer)
            a = a @ W.T + b
            if layer < len(self.weights) - 1:
                a = np.maximum(a, 0)
        return (a, acts) if return_activations else a

    def predict(self, X, **hooks):
        """Predicted class for each row of ``X`` (hooks as in :meth:`forward`)."""
        return np.argmax(self.forward(X, **hooks), axis=1)

    def accuracy(self, X, y, **hooks):
        """Fraction of rows of ``X`` whose predicted class is ``y``."""
        return float(np.mean(self.predict(X, **hooks) == np.asarray(y)))

    @property
    def num_params(self):
        """Number of weights and biases."""
        return sum(W.size + b.size for W, b in zip(self.weights, self.biases))


@functools.lru_cache(maxsize=4)
def _train_mlp(hidden, seed):
    _sklearn()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from threadpoolctl import threadpool_limits

    d = load_digits()
    clf = MLPClassifier(hidden_layer_sizes=hidden, alpha=1e-4, learning_rate_init=3e-3,
                        max_iter=60, random_state=seed)
    # One BLAS thread: these matrices are tiny (threads only add contention), and a fixed
    # summation order makes the trained weights the same on every machine.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # 60 epochs is on purpose
        clf.fit(d.X_train, d.y_train)
    weights = tuple(np.ascontiguousarray(W.T, dtype=np.float32) for W in clf.coefs_)
    biases = tuple(b.astype(np.float32) for b in clf.intercepts_)
    return weights, biases


def reference_mlp(*, hidden=(64,), seed=0):
    """The book's reference model: an MLP trained on :func:`load_digits` (default split).

    64 inputs, ``hidden`` ReLU layers, 10 logits; trained with scikit-learn's
    ``MLPClassifier`` (Adam, fixed ``seed``), so it is the same model on every machine and
    at every build, reaching 97.6% test accuracy in about half a second. Each call returns
    fresh copies of the arrays (modifying them does not affect later calls).

    Examples
    --------
    >>> model, d = reference_mlp(), load_digits()
    >>> model.accuracy(d.X_test, d.y_test) > 0.96
    True
    >>> [W.shape for W in model.weights]
    [(64, 64), (10, 64)]
    """
    if not isinstance(hidden, (tuple, list)):
        raise TypeError(f"hidden must be a tuple of layer widths such as (64,), got {type(hidden).__name__} {hidden!r}")
    hidden = tuple(int(check_positive(h, "hidden", integer=True)) for h in hidden)
    seed = check_int(seed, "seed", low=0)
    weights, biases = _train_mlp(hidden, int(seed))
    return MLP([W.copy() for W in weights], [b.copy() for b in biases])
