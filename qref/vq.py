r"""Vector quantization: exact 1-d k-means, the k-means estimator, product quantization.

* :func:`kmeans_1d_optimal`: the *globally* optimal k-means of scalar data, by dynamic
  programming over the sorted values (Wang and Song 2011, Ckmeans.1d.dp). The weight-sharing
  codebooks of Deep Compression (Han et al. 2016) are 1-d k-means; this gives the best one.
* :class:`KMeans`: Lloyd's algorithm on vectors, as an estimator (``fit`` / ``encode`` /
  ``decode``), with k-means++ seeding (Arthur and Vassilvitskii 2007).
* :class:`ProductQuantizer`: split each vector into ``M`` sub-vectors and k-means each
  subspace (Jégou, Douze and Schmid 2011); codes of shape ``(N, M)`` and asymmetric distances.

References
----------
Wang, H. and Song, M. (2011). Ckmeans.1d.dp: optimal k-means clustering in one dimension by
dynamic programming. The R Journal 3(2), 29-33.

Arthur, D. and Vassilvitskii, S. (2007). k-means++: the advantages of careful seeding. SODA.

Jégou, H., Douze, M. and Schmid, C. (2011). Product quantization for nearest neighbor search.
IEEE TPAMI 33(1), 117-128.
"""

from __future__ import annotations

import inspect

import numpy as np

from ._numba import USE_NUMBA, njit
from ._validation import as_float_array, as_int_array, check_choice, check_int, check_rng
from .codebook import _index_dtype, _nearest

__all__ = ["kmeans_1d_optimal", "KMeans", "ProductQuantizer"]


# ======================================================================================
# Exact 1-d k-means by dynamic programming
# ======================================================================================
#
# Points: the m distinct sorted values v[0] < ... < v[m-1] with weights w. An optimal
# clustering of sorted scalars is made of contiguous runs, so with
#     D[j][i] = least cost of the points 0..i in j clusters,
#     cost(l, i) = sum_{p=l..i} w_p (v_p - mean_{l..i})^2 = SS - S^2 / W  (prefix sums),
# the recursion of Wang and Song (2011) is
#     D[1][i] = cost(0, i),    D[j][i] = min_{j-1 <= l <= i} D[j-1][l-1] + cost(l, i).
# The best l, opt_j(i), is non-decreasing in i (the cost is a Monge array), so a layer can be
# computed by divide and conquer: solve the middle i, then the left half searches l only up
# to opt(mid) and the right half only from opt(mid): O(m log m) per layer instead of O(m^2).
# It is also non-decreasing in j, opt_{j-1}(i) <= opt_j(i) (the gain of one more cluster,
# D[j-1][i] - D[j][i], grows with i), so each search also starts no lower than the previous
# layer's best start for the same i: ~10-20% fewer cost evaluations for k = 16.


def _cost(W, S, Q, l, i):
    """Weighted within-cluster sum of squares of points l..i (inclusive), from prefix sums."""
    w = W[i + 1] - W[l]
    s = S[i + 1] - S[l]
    return (Q[i + 1] - Q[l]) - s * s / w


_cost_nb = njit(_cost)


def _dp_quadratic(W, S, Q, k):
    """The O(k m^2) dynamic program, vectorized over l: the readable definition.

    Returns the (k, m) table ``B`` of the best start of the last cluster; ``B[j-1, i]`` for j
    clusters on points 0..i (valid for i >= j - 1), and the last layer's costs.
    """
    m = W.size - 1
    B = np.zeros((k, m), dtype=np.int64)
    D = _cost(W, S, Q, np.zeros(m, dtype=np.int64), np.arange(m))  # layer j = 1
    for j in range(2, k + 1):
        Dn = np.full(m, np.inf)
        for i in range(j - 1, m):
            ls = np.arange(j - 1, i + 1)
            c = D[ls - 1] + _cost(W, S, Q, ls, np.full(ls.size, i))
            a = int(np.argmin(c))  # first minimum: the smallest l
            Dn[i], B[j - 1, i] = c[a], ls[a]
        D = Dn
    return B, D


def _dp_dc_numpy(W, S, Q, k):
    """The divide-and-conquer dynamic program in numpy, breadth first.

    All the subproblems ``(ilo, ihi, optlo, opthi)`` at one depth of the recursion are solved
    together: their middle points' candidate ranges ``l in [optlo, min(opthi, mid)]`` are laid
    end to end in one flat array, the costs evaluated at once, and the first minimum of each
    segment found with ``np.minimum.reduceat``. Same arithmetic and same tie rule (smallest l)
    as the numba twin :func:`_dp_dc_kernel`.
    """
    m = W.size - 1
    B = np.zeros((k, m), dtype=np.int64)
    D = _cost(W, S, Q, np.zeros(m, dtype=np.int64), np.arange(m))
    for j in range(2, k + 1):
        Dn = np.full(m, np.inf)
        ilo = np.array([j - 1]); ihi = np.array([m - 1])
        olo = np.array([j - 1]); ohi = np.array([m - 1])
        while ilo.size:
            mid = (ilo + ihi) // 2
            lo = np.maximum(olo, B[j - 2, mid])  # opt_{j-1}(mid) <= opt_j(mid); row 0 is zeros
            hi = np.minimum(ohi, mid)
            lens = hi - lo + 1
            starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
            seg = np.repeat(np.arange(mid.size), lens)
            ls = lo[seg] + (np.arange(seg.size) - starts[seg])
            c = D[ls - 1] + _cost(W, S, Q, ls, mid[seg])
            best = np.minimum.reduceat(c, starts)
            hit = np.flatnonzero(c == best[seg])
            _, first = np.unique(seg[hit], return_index=True)
            arg = ls[hit[first]]
            Dn[mid], B[j - 1, mid] = best, arg
            # children: left (ilo, mid - 1, olo, arg), right (mid + 1, ihi, arg, ohi)
            left = mid - 1 >= ilo
            right = mid + 1 <= ihi
            ilo = np.concatenate((ilo[left], mid[right] + 1))
            ihi = np.concatenate((mid[left] - 1, ihi[right]))
            olo, ohi = np.concatenate((olo[left], arg[right])), np.concatenate((arg[left], ohi[right]))
        D = Dn
    return B, D


@njit
def _dp_dc_kernel(W, S, Q, k):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """Numba twin of :func:`_dp_dc_numpy`: the same recursion, depth first with an explicit stack."""
    m = W.size - 1
    B = np.zeros((k, m), dtype=np.int64)
    D = np.empty(m)
    for i in range(m):
        D[i] = _cost_nb(W, S, Q, 0, i)
    Dn = np.empty(m)
    stack = np.empty((4 * (64 + 2), 4), dtype=np.int64)
    for j in range(2, k + 1):
        for i in range(m):
            Dn[i] = np.inf
        top = 0
        stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = j - 1, m - 1, j - 1, m - 1
        top = 1
        while top > 0:
            top -= 1
            ilo, ihi, olo, ohi = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
            mid = (ilo + ihi) // 2
            lo = max(olo, B[j - 2, mid])  # the previous layer's best start bounds this one
            hi = min(ohi, mid)
            best = np.inf
            arg = lo
            for l in range(lo, hi + 1):
                c = D[l - 1] + _cost_nb(W, S, Q, l, mid)
                if c < best:
                    best = c
                    arg = l
            Dn[mid] = best
            B[j - 1, mid] = arg
            if mid + 1 <= ihi:
                stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = mid + 1, ihi, arg, ohi
                top += 1
            if mid - 1 >= ilo:
                stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = ilo, mid - 1, olo, arg
                top += 1
        for i in range(m):
            D[i] = Dn[i]
    return B, D


def _backtrack(B, m, k):
    """Cluster index of each of the m sorted points from the table of best starts."""
    labels = np.empty(m, dtype=np.int64)
    i = m - 1
    for j in range(k, 0, -1):
        l = int(B[j - 1, i]) if j > 1 else 0
        labels[l:i + 1] = j - 1
        i = l - 1
    return labels


def kmeans_1d_optimal(x, k, *, sample_weight=None, method="auto"):
    r"""Globally optimal k-means of scalar data, by dynamic programming (Ckmeans.1d.dp).

    Minimizes the (weighted) within-cluster sum of squares

    .. math::

        \min_{c_1 < \dots < c_k}\ \sum_{p} w_p \min_j (x_p - c_j)^2 ,

    exactly. In one dimension the clusters of an optimum are runs of the sorted values, so
    with :math:`D[j][i]`, the least cost of the :math:`i` smallest distinct values in
    :math:`j` clusters, Wang and Song (2011) solve

    .. math::

        D[j][i] = \min_{j \le l \le i}\ D[j-1][l-1] + d(l, i), \qquad
        d(l, i) = \sum_{p=l}^{i} w_p x_p^2 - \frac{\big(\sum_{p=l}^{i} w_p x_p\big)^2}{\sum_{p=l}^{i} w_p},

    with :math:`d(l, i)` in O(1) from prefix sums of :math:`w, wx, wx^2` (computed on data
    centred at its weighted mean, to limit cancellation). Because the best :math:`l` is
    non-decreasing in :math:`i`, each layer is solved by divide and conquer in
    :math:`O(m \log m)` (``method="dc"``, the default) rather than :math:`O(m^2)`
    (``method="quadratic"``), for :math:`m` distinct values: :math:`O(n \log n + k\,m \log m)`
    in all. Duplicate values are merged into one weighted point first.

    The ``"dc"`` method runs a numba kernel when numba is available, a breadth-first numpy twin
    otherwise (same arithmetic and tie rule, so the same result).

    Parameters
    ----------
    x : array_like of float, any shape, non-empty
        The values (flattened). Not modified.
    k : int >= 1
        Number of clusters; at most the number of distinct values.
    sample_weight : array_like of float, shape ``x.shape``, optional
        Non-negative weights (default 1); at least ``k`` distinct values must have weight > 0.
        Zero-weight values are assigned to the nearest center but do not move it.
    method : {"auto", "dc", "quadratic"}
        ``"auto"`` is ``"dc"``; ``"quadratic"`` is the plain :math:`O(k m^2)` program (for
        checking).

    Returns
    -------
    centers : ndarray, shape (k,), dtype of ``x``, increasing
        The weighted mean of each cluster.
    labels : ndarray, shape ``x.shape``, smallest unsigned dtype holding ``k - 1``
        Cluster index of each value (clusters numbered in increasing order of their values).
    inertia : float
        :math:`\sum_p w_p (x_p - c_{\ell(p)})^2`, recomputed from the labels in float64.

    Raises
    ------
    TypeError
        For non-floating ``x`` or ``sample_weight``, or a non-integer ``k``.
    ValueError
        For non-finite or empty input, negative weights, a shape mismatch, or ``k`` larger
        than the number of distinct values (with positive weight).

    References
    ----------
    Wang and Song (2011), "Ckmeans.1d.dp: optimal k-means clustering in one dimension by
    dynamic programming", The R Journal 3(2), 29-33.

    Examples
    --------
    >>> centers, labels, inertia = kmeans_1d_optimal(np.array([1.0, 2.0, 3.0, 10.0, 11.0, 30.0]), 3)
    >>> centers, labels, inertia
    (array([ 2. , 10.5, 30. ]), array([0, 0, 0, 1, 1, 2], dtype=uint8), 2.5)
    """
    x = as_float_array(x, "x", allow_empty=False)
    k = check_int(k, "k", low=1)
    check_choice(method, "method", ("auto", "dc", "quadratic"))
    xf = x.astype(np.float64, copy=False).ravel()
    if sample_weight is None:
        wf = np.ones(xf.size)
    else:
        wf = as_float_array(sample_weight, "sample_weight").astype(np.float64, copy=False)
        if wf.shape != x.shape:
            raise ValueError(f"sample_weight must have the shape of x, {x.shape}, got {wf.shape}")
        wf = wf.ravel()
        if (wf < 0).any():
            raise ValueError(f"sample_weight must be >= 0, got a minimum of {wf.min()!r}")
    v, inv = np.unique(xf, return_inverse=True)  # sorted distinct values; x = v[inv]
    w = np.bincount(inv, weights=wf, minlength=v.size)
    keep = w > 0
    m = int(keep.sum())
    if k > m:
        raise ValueError(f"k must be <= the number of distinct values of x (with positive weight), "
                         f"{m}, got k={k}")
    vk, wk = v[keep], w[keep]
    mu = float(np.sum(wk * vk) / np.sum(wk))
    c = vk - mu  # centred: the prefix sums stay small, d(l, i) loses less to cancellation
    W = np.concatenate(([0.0], np.cumsum(wk)))
    S = np.concatenate(([0.0], np.cumsum(wk * c)))
    Q = np.concatenate(([0.0], np.cumsum(wk * c * c)))
    if method == "quadratic":
        B, _ = _dp_quadratic(W, S, Q, k)
    elif USE_NUMBA:
        B, _ = _dp_dc_kernel(W, S, Q, k)
    else:
        B, _ = _dp_dc_numpy(W, S, Q, k)
    lab = _backtrack(B, m, k)
    centers = np.bincount(lab, weights=wk * c, minlength=k) / np.bincount(lab, weights=wk, minlength=k) + mu
    # every distinct value (zero-weight ones included) goes to the nearest center
    lab_all = _nearest(v, centers)
    labels = lab_all[inv].astype(_index_dtype(k)).reshape(x.shape)
    inertia = float(np.sum(wf * (xf - centers[lab_all[inv]]) ** 2))
    return centers.astype(x.dtype), labels, inertia


# ======================================================================================
# Estimators
# ======================================================================================


class _Estimator:
    """A tiny scikit-learn-like base: parameters are the constructor's keyword arguments."""

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep=True):
        """The constructor's parameters as a dict (``deep`` is accepted for compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters (validated at the next ``fit``); return ``self``."""
        names = self._param_names()
        for key, value in params.items():
            if key not in names:
                raise ValueError(f"{key!r} is not a parameter of {type(self).__name__}; "
                                 f"valid parameters: {', '.join(names)}")
            setattr(self, key, value)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self, attr):
        if not hasattr(self, attr):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")


def _as_2d(X, name="X"):
    X = as_float_array(X, name, allow_empty=False, allow_0d=False)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-d, shape (n_samples, n_features), got shape {X.shape}; "
                         f"for scalar data use x.reshape(-1, 1)")
    return X


def _sq_distances(X, C):
    """Squared Euclidean distances, shape (N, k), float64: ||x||^2 - 2 x.c + ||c||^2, clipped at 0."""
    d = (X * X).sum(1)[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _assign(X, C):
    """Nearest center of each row of X: labels (N,) int64 and squared distances (N,) float64."""
    if X.shape[1] == 1:  # scalar data: a binary search in the sorted codebook, no N x k matrix
        order = np.argsort(C[:, 0], kind="stable")
        lab = order[_nearest(X[:, 0], C[order, 0])]
        return lab, (X[:, 0] - C[lab, 0]) ** 2
    d = _sq_distances(X, C)
    lab = np.argmin(d, axis=1)
    return lab, d[np.arange(X.shape[0]), lab]


def _kmeans_pp(X, k, gen):
    """k-means++ seeding (Arthur and Vassilvitskii 2007, Sec. 2.2): sample by D(x)^2."""
    n = X.shape[0]
    C = np.empty((k, X.shape[1]))
    C[0] = X[gen.integers(n)]
    d2 = ((X - C[0]) ** 2).sum(1)
    for j in range(1, k):
        tot = d2.sum()
        i = int(gen.choice(n, p=d2 / tot)) if tot > 0 else int(gen.integers(n))
        C[j] = X[i]
        d2 = np.minimum(d2, ((X - C[j]) ** 2).sum(1))
    return C


class KMeans(_Estimator):
    r"""k-means by Lloyd's algorithm, as a fitted codebook (a scikit-learn-style estimator).

    Minimizes the inertia :math:`\sum_{p} \lVert x_p - c_{\ell(p)} \rVert^2` by alternating
    the assignment :math:`\ell(p) = \arg\min_j \lVert x_p - c_j \rVert^2` and the update
    :math:`c_j = \operatorname{mean}\{x_p : \ell(p) = j\}` (Lloyd 1982). Neither step can
    increase the inertia; the value after each assignment is kept in ``inertia_history_``.
    A cluster left empty is re-seeded at the point farthest from its center (so no center is
    ever NaN and the inertia still does not increase).

    Stops when the summed squared center shift is at most ``tol`` times the mean per-feature
    variance of ``X`` (the convention of scikit-learn), or after ``max_iter`` iterations.

    **API and scikit-learn.** ``fit`` returns ``self``; learned attributes end in ``_``;
    ``get_params``/``set_params`` work. As a *quantizer*, :meth:`encode` returns the codes
    (nearest-codeword indices) and :meth:`decode` the codewords. :meth:`transform` and
    :meth:`inverse_transform` are aliases of ``encode``/``decode``: this **differs from
    scikit-learn**, whose ``KMeans.transform`` returns the distances to the centers.

    Parameters
    ----------
    n_clusters : int >= 1
        Number of codewords :math:`k` (at most the number of samples).
    init : {"k-means++", "random", "linear"} or array_like, shape (n_clusters, n_features)
        ``"k-means++"``: D²-sampling (Arthur and Vassilvitskii 2007); ``"random"``: distinct
        random rows; ``"linear"``: evenly spaced between the per-feature min and max (the
        linear initialization of Deep Compression's weight sharing, Han et al. 2016); or the
        start centers.
    max_iter : int >= 1
    tol : float >= 0
    rng : None, int or numpy.random.Generator
        Randomness of the initialization.

    Attributes
    ----------
    cluster_centers_ : ndarray, shape (n_clusters, n_features), dtype of X
    labels_ : ndarray, shape (n_samples,), smallest unsigned dtype holding ``n_clusters - 1``
    inertia_ : float
    n_iter_ : int
    inertia_history_ : list of float
        The inertia after each assignment step; non-increasing; the last entry is ``inertia_``.

    References
    ----------
    Lloyd (1982), IEEE Trans. Inf. Theory 28(2). Arthur and Vassilvitskii (2007), "k-means++:
    the advantages of careful seeding", SODA.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> km = KMeans(2, rng=0).fit(X)
    >>> km.cluster_centers_[np.argsort(km.cluster_centers_[:, 0])], km.inertia_
    (array([[ 0. ,  0.5],
           [10. ,  0.5]]), 1.0)
    >>> km.encode(X).dtype, km.decode(km.encode(X[:1]))
    (dtype('uint8'), array([[0. , 0.5]]))
    """

    def __init__(self, n_clusters=8, *, init="k-means++", max_iter=300, tol=1e-4, rng=None):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.rng = rng

    def _init_centers(self, X, k, gen):
        if isinstance(self.init, str):
            check_choice(self.init, "init", ("k-means++", "random", "linear"))
            if self.init == "k-means++":
                return _kmeans_pp(X, k, gen)
            if self.init == "random":
                return X[gen.choice(X.shape[0], size=k, replace=False)].copy()
            return np.linspace(X.min(0), X.max(0), k)
        C = as_float_array(self.init, "init").astype(np.float64)
        if C.shape != (k, X.shape[1]):
            raise ValueError(f"init must have shape (n_clusters, n_features) = {(k, X.shape[1])}, got {C.shape}")
        return C.copy()

    def fit(self, X):
        """Learn the codebook from ``X``, shape (n_samples, n_features); return ``self``."""
        X = _as_2d(X)
        k = check_int(self.n_clusters, "n_clusters", low=1)
        max_iter = check_int(self.max_iter, "max_iter", low=1)
        if isinstance(self.tol, (bool, np.bool_)) or not np.isscalar(self.tol) or not self.tol >= 0:
            raise ValueError(f"tol must be a real number >= 0, got {self.tol!r}")
        if k > X.shape[0]:
            raise ValueError(f"n_clusters must be <= n_samples={X.shape[0]}, got {k}")
        gen = check_rng(self.rng)
        Xf = X.astype(np.float64, copy=False)
        tol_abs = float(self.tol) * float(np.mean(np.var(Xf, axis=0)))
        C = self._init_centers(Xf, k, gen)
        history = []
        n_iter = 0
        for n_iter in range(1, max_iter + 1):
            lab, d2 = _assign(Xf, C)
            history.append(float(d2.sum()))
            counts = np.bincount(lab, minlength=k)
            newC = np.empty_like(C)
            for f in range(Xf.shape[1]):
                newC[:, f] = np.bincount(lab, weights=Xf[:, f], minlength=k)
            nonempty = counts > 0
            newC[nonempty] /= counts[nonempty, None]
            empty = np.flatnonzero(~nonempty)
            if empty.size:  # re-seed each empty cluster at one of the farthest points
                far = np.argsort(-d2, kind="stable")[:empty.size]
                newC[empty] = Xf[far]
            shift = float(((newC - C) ** 2).sum())
            C = newC
            if shift <= tol_abs:
                break
        lab, d2 = _assign(Xf, C)
        inertia = float(d2.sum())
        if history and inertia > history[-1]:  # cannot happen in exact arithmetic; guard rounding
            inertia = min(inertia, history[-1])
        history.append(inertia)
        self.cluster_centers_ = C.astype(X.dtype)
        self._centers64 = C
        self.labels_ = lab.astype(_index_dtype(k))
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.inertia_history_ = history
        return self

    def fit_predict(self, X):
        """``fit(X).labels_``."""
        return self.fit(X).labels_

    def encode(self, X):
        """Codes: index of the nearest center of each row, shape (n_samples,), smallest unsigned dtype."""
        self._check_fitted("cluster_centers_")
        X = _as_2d(X)
        if X.shape[1] != self._centers64.shape[1]:
            raise ValueError(f"X must have {self._centers64.shape[1]} features (as in fit), got {X.shape[1]}")
        lab, _ = _assign(X.astype(np.float64, copy=False), self._centers64)
        return lab.astype(_index_dtype(self._centers64.shape[0]))

    predict = encode

    def decode(self, codes):
        """Codewords of the codes: shape ``codes.shape + (n_features,)``, dtype of the fitted X."""
        self._check_fitted("cluster_centers_")
        codes = as_int_array(codes, "codes")
        k = self.cluster_centers_.shape[0]
        if codes.size and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(f"codes must be in [0, {k - 1}], got values in [{codes.min()}, {codes.max()}]")
        return self.cluster_centers_[codes]

    #: alias of :meth:`encode` (NOT scikit-learn's distances; see the class docstring)
    transform = encode
    #: alias of :meth:`decode`
    inverse_transform = decode


class ProductQuantizer(_Estimator):
    r"""Product quantization (Jégou, Douze and Schmid 2011): k-means in ``M`` subspaces.

    A vector :math:`x \in \mathbb R^D` is cut into ``M`` sub-vectors of :math:`D^* = D/M`
    dimensions, :math:`x = (u_1(x), \dots, u_M(x))`, and each is quantized by its own codebook
    of ``Ks`` codewords learned by :class:`KMeans` (Jégou et al. 2011, Sec. II):

    .. math::

        q(x) = \big(q_1(u_1(x)), \dots, q_M(u_M(x))\big),

    so the effective codebook has :math:`K_s^M` codewords but only :math:`M K_s D^*` numbers are
    stored. Codes are one index per subspace, shape (N, M), in the smallest unsigned dtype
    (uint8 for ``Ks <= 256``; not bit-packed). The *asymmetric distance* of a query :math:`y`
    to an encoded :math:`x` (Jégou et al. 2011, Sec. III) is

    .. math::

        \tilde d(x, y)^2 = \sum_{m=1}^{M} \lVert u_m(y) - q_m(u_m(x)) \rVert^2
                         = \sum_m T[m, \mathrm{code}_m(x)],

    read from an (M, Ks) table :math:`T` computed once per query (:meth:`distance_table`).

    The subspaces are fitted in order with one generator made from ``rng``, so with ``M=1``
    the result equals ``KMeans(Ks, init=..., rng=rng)``.

    Parameters
    ----------
    M : int >= 1
        Number of subspaces; must divide the dimension D.
    Ks : int >= 1
        Codewords per subspace.
    init, max_iter, tol, rng
        Passed to each subspace's :class:`KMeans`.

    Attributes
    ----------
    codewords_ : ndarray, shape (M, Ks, D/M), dtype of the fitted X
        ``codewords_[m, ks]``: the ks-th codeword of the m-th subspace.
    Ds_ : int
        :math:`D^* = D / M`.

    References
    ----------
    Jégou, Douze and Schmid (2011), "Product quantization for nearest neighbor search",
    IEEE TPAMI 33(1), 117-128.

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> pq = ProductQuantizer(M=4, Ks=16, rng=0).fit(X)
    >>> codes = pq.encode(X)
    >>> codes.shape, codes.dtype, pq.decode(codes).shape, pq.codewords_.shape
    ((500, 4), dtype('uint8'), (500, 8), (4, 16, 2))
    >>> d = pq.asymmetric_distances(X[0], codes)      # squared distances to every encoded row
    >>> d.shape, bool(np.isclose(d[0], ((X[0] - pq.decode(codes[:1])[0]) ** 2).sum(), rtol=1e-5))
    ((500,), True)
    """

    def __init__(self, M=8, Ks=256, *, init="k-means++", max_iter=300, tol=1e-4, rng=None):
        self.M = M
        self.Ks = Ks
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.rng = rng

    def _check_dim(self, D):
        M = check_int(self.M, "M", low=1)
        if D % M:
            raise ValueError(f"the dimension D={D} must be divisible by M={M}")
        return M, D // M

    def fit(self, X):
        """Learn the M codebooks from ``X``, shape (N, D); return ``self``."""
        X = _as_2d(X)
        M, Ds = self._check_dim(X.shape[1])
        Ks = check_int(self.Ks, "Ks", low=1)
        gen = check_rng(self.rng)
        self.codewords_ = np.empty((M, Ks, Ds), dtype=X.dtype)  # [m][ks][ds]
        self._cw64 = np.empty((M, Ks, Ds))
        for m in range(M):
            km = KMeans(Ks, init=self.init, max_iter=self.max_iter, tol=self.tol, rng=gen)
            km.fit(X[:, m * Ds:(m + 1) * Ds])
            self.codewords_[m] = km.cluster_centers_
            self._cw64[m] = km._centers64
        self.Ds_ = Ds
        return self

    def _check_X(self, X, name="X"):
        self._check_fitted("codewords_")
        X = _as_2d(X, name)
        D = self.codewords_.shape[0] * self.Ds_
        if X.shape[1] != D:
            raise ValueError(f"{name} must have D={D} columns (as in fit), got {X.shape[1]}")
        return X

    def encode(self, X):
        """Codes, shape (N, M), smallest unsigned dtype: the nearest codeword in each subspace."""
        X = self._check_X(X).astype(np.float64, copy=False)
        M, Ks, Ds = self._cw64.shape
        codes = np.empty((X.shape[0], M), dtype=_index_dtype(Ks))
        for m in range(M):
            codes[:, m] = _assign(X[:, m * Ds:(m + 1) * Ds], self._cw64[m])[0]
        return codes

    def decode(self, codes):
        """Reconstruction, shape (N, D), dtype of the fitted X, from codes of shape (N, M)."""
        self._check_fitted("codewords_")
        codes = as_int_array(codes, "codes")
        M, Ks, Ds = self.codewords_.shape
        if codes.ndim != 2 or codes.shape[1] != M:
            raise ValueError(f"codes must have shape (N, M={M}), got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= Ks):
            raise ValueError(f"codes must be in [0, {Ks - 1}], got values in [{codes.min()}, {codes.max()}]")
        # codewords_[m, codes[:, m]] for every m: (N, M, Ds) -> (N, D)
        return self.codewords_[np.arange(M)[None, :], codes].reshape(codes.shape[0], M * Ds)

    transform = encode
    inverse_transform = decode

    def distance_table(self, query):
        """Squared distances of each sub-vector of ``query`` (shape (D,)) to every codeword: (M, Ks) float64."""
        q = as_float_array(query, "query", allow_0d=False)
        D = self.codewords_.shape[0] * self.Ds_ if hasattr(self, "codewords_") else None
        self._check_fitted("codewords_")
        if q.shape != (D,):
            raise ValueError(f"query must have shape (D,) = ({D},), got {q.shape}")
        M, Ks, Ds = self._cw64.shape
        sub = q.astype(np.float64).reshape(M, 1, Ds)
        return ((self._cw64 - sub) ** 2).sum(-1)  # [m][ks]

    def asymmetric_distances(self, query, codes):
        """Asymmetric squared distances (Jégou et al. 2011, ADC) of ``query`` to encoded rows: (N,) float64."""
        T = self.distance_table(query)
        codes = as_int_array(codes, "codes")
        M = T.shape[0]
        if codes.ndim != 2 or codes.shape[1] != M:
            raise ValueError(f"codes must have shape (N, M={M}), got {codes.shape}")
        return T[np.arange(M)[None, :], codes].sum(1)
