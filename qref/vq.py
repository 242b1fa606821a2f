r"""Vector quantization: k-means weight sharing, product and residual quantization, size accounting.

* :func:`kmeans_1d_optimal`: the *globally* optimal k-means of scalar data, by dynamic
  programming over the sorted values (Wang and Song 2011, Ckmeans.1d.dp). The weight-sharing
  codebooks of Deep Compression (Han et al. 2016) are 1-d k-means; this gives the best one.
* :class:`KMeans`: Lloyd's algorithm on vectors, as an estimator (``fit`` / ``encode`` /
  ``decode``), with k-means++ seeding (Arthur and Vassilvitskii 2007) and sample weights.
* :func:`hessian_weighted_kmeans`: weight sharing that minimizes the Hessian-weighted
  distortion of Choi, El-Khamy and Lee (2017), with the curvature of the book's MLP from
  :func:`mlp_hessian_diagonal` (exact diagonal) or :func:`mlp_adam_second_moment` (Adam's
  second-moment estimate, the paper's cheap alternative).
* :class:`ProductQuantizer`: split each vector into ``M`` sub-vectors and k-means each
  subspace (Jégou, Douze and Schmid 2011); codes of shape ``(N, M)`` and asymmetric distances.
* :class:`ResidualQuantizer`: ``M`` stages, each quantizing what the previous ones left over
  (Chen, Guan and Wang 2010), with greedy and beam-search encoding.
* :class:`LloydMaxQuantizer`: one scalar codebook per feature (Lloyd-Max or the exact 1-d
  optimum), as an estimator.
* :func:`huffman_code_lengths` and :func:`deep_compression_size`: the storage accounting of
  Deep Compression (Han et al. 2016, Eq. 1), with Huffman-coded indices.
* :func:`anneal_soft_to_hard`: a scalar codebook fitted with soft assignments whose temperature
  is lowered to zero, the soft-to-hard scheme of Agustsson et al. (2017) (soft quantization in
  the survey of Guo 2018; its stochastic counterpart is :func:`qref.codebook.random_quantize`).

Every estimator follows scikit-learn's conventions (``fit`` returns ``self``, learned
attributes end in ``_``, ``get_params``/``set_params``, ``n_features_in_``) and passes its
estimator checks except where documented in ``tests/test_vq_sklearn.py``. As *quantizers*,
``encode``/``transform`` return codes in the smallest unsigned integer dtype and
``decode``/``inverse_transform`` the reconstruction.

References
----------
Wang, H. and Song, M. (2011). Ckmeans.1d.dp: optimal k-means clustering in one dimension by
dynamic programming. The R Journal 3(2), 29-33.

Arthur, D. and Vassilvitskii, S. (2007). k-means++: the advantages of careful seeding. SODA.

Jégou, H., Douze, M. and Schmid, C. (2011). Product quantization for nearest neighbor search.
IEEE TPAMI 33(1), 117-128.

Chen, Y., Guan, T. and Wang, C. (2010). Approximate nearest neighbor search by residual vector
quantization. Sensors 10(12), 11259-11273.

Choi, Y., El-Khamy, M. and Lee, J. (2017). Towards the limit of network quantization. ICLR.

Han, S., Mao, H. and Dally, W. J. (2016). Deep compression: compressing deep neural networks
with pruning, trained quantization and Huffman coding. ICLR.

Agustsson, E. et al. (2017). Soft-to-hard vector quantization for end-to-end learning
compressible representations. NeurIPS.
"""

from __future__ import annotations

import heapq
import inspect
import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from ._numba import USE_NUMBA, njit, prange
from ._validation import (
    as_float_array, as_int_array, check_choice, check_int, check_positive, check_rng,
)
from .codebook import _index_dtype, _nearest, soft_assign

__all__ = [
    "kmeans_1d_optimal",
    "KMeans",
    "NotFittedError",
    "hessian_weighted_distortion",
    "hessian_weighted_kmeans",
    "mlp_hessian_diagonal",
    "mlp_adam_second_moment",
    "ProductQuantizer",
    "ResidualQuantizer",
    "LloydMaxQuantizer",
    "huffman_code_lengths",
    "CompressedSize",
    "deep_compression_size",
    "SoftToHard",
    "anneal_soft_to_hard",
]


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
# The matrix M[i, l] = D[j-1][l-1] + cost(l, i) is Monge (Gronlund et al. 2017): for l1 < l2
# and i1 < i2, M[i2, l2] - M[i2, l1] <= M[i1, l2] - M[i1, l1], so once a later start l2 beats
# an earlier l1 at some row it beats it at every later row, and the best l, opt_j(i), is
# non-decreasing in i. Three ways to fill a layer with that:
#
# * _dp_quadratic: try every l for every i, O(m^2). The readable definition, for checking.
# * _dp_dc_numpy: divide and conquer, O(m log m): solve the middle row, then the rows above
#   search l only up to its opt and the rows below only from it. Also opt_{j-1}(i) <= opt_j(i)
#   (the gain of one more cluster grows with i), so each search starts no lower than the
#   previous layer's best start for the same row. Breadth first, vectorized: the numpy twin.
# * _dp_queue_kernel: one sweep down the rows with the queue of Hirschberg and Larmore (1987),
#   O(m log m) at worst (a search per new start) and close to O(m) in practice. The queue
#   holds the starts that can still be best for some later row, each with the first row
#   where it takes over from the one before it. A new start i joins at the back (after
#   removing the starts it beats from their own takeover row on); the front is the answer.
#   About 6 comparisons per row here, against ~20 cost evaluations per row for divide and
#   conquer, and the comparisons need no division. The numba kernel.
#
# On top of either fast layer, the layered program meets in the middle: the first ceil(k/2)
# clusters are solved on prefixes (forward) and the last floor(k/2) on suffixes (the same
# program on the reversed, negated values), and the best split point joins them. The two
# halves are independent, so with numba they run on two threads.
#
# Without layers: Lagrangian relaxation (Aggarwal, Schieber and Tokuyama 1994). Charge a
# price lam for every cluster and drop the count:
#     G[i] = min_{0 <= l <= i} G[l-1] + lam + cost(l, i),    G[-1] = 0,
# one sweep of the same queue (a start's value G[l-1] is known by the time it joins, at row
# l). If the clustering it finds has exactly k clusters, it is an optimal k-clustering: any
# other k-clustering P has cost(P) + lam k >= G[m-1] = cost(found) + lam k. The optimal cost
# f(k) is convex in k, so the prices that give k clusters form the interval
# [f(k) - f(k+1), f(k-1) - f(k)]; its middle is estimated on a coarse copy of the data
# (blocks of consecutive values, a few thousand points), and one sweep of the full data
# usually lands in it. If not, the found clusterings bracket k and the slope between them is
# the next price; if k is not a corner of the convex hull of f (no price isolates it), or
# after a few sweeps, the layered program takes over. One sweep costs about one layer, so
# this is ~k/2 times less work than the layers on two threads.


def _cost(W, S, Q, l, i):
    """Weighted within-cluster sum of squares of points l..i (inclusive), from prefix sums."""
    w = W[i + 1] - W[l]
    s = S[i + 1] - S[l]
    return (Q[i + 1] - Q[l]) - s * s / w


def _first_layer(W, S, Q):
    """D[1][i] = cost(0, i) for every i: one cluster holding points 0..i."""
    return Q[1:] - S[1:] * S[1:] / W[1:]


def _dp_quadratic(W, S, Q, k):
    """The O(k m^2) dynamic program, vectorized over l: the readable definition.

    Returns the (k, m) table ``B`` of the best start of the last cluster; ``B[j-1, i]`` for j
    clusters on points 0..i (valid for i >= j - 1), and the last layer's costs.
    """
    m = W.size - 1
    B = np.zeros((k, m), dtype=np.int64)
    D = _first_layer(W, S, Q)
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
    segment found with ``np.minimum.reduceat``. Tie rule: the smallest l, as in
    :func:`_dp_quadratic`.
    """
    m = W.size - 1
    B = np.zeros((k, m), dtype=np.int64)
    D = _first_layer(W, S, Q)
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


@njit(inline="always", error_model="numpy")
def _later_wins(E, W, S, c, b, r):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """Start c beats the earlier start b at row r, compared without a division.

    With ``E[l] = D[j-1][l-1] - Q[l]`` (the ``Q[r+1]`` of both costs cancels), ``c`` wins when
    ``E[c] - s_c^2 / w_c < E[b] - s_b^2 / w_b``; both sides are multiplied by ``w_c w_b > 0``.
    """
    sc = S[r + 1] - S[c]
    wc = W[r + 1] - W[c]
    sb = S[r + 1] - S[b]
    wb = W[r + 1] - W[b]
    return (E[c] - E[b]) * wc * wb < sc * sc * wb - sb * sb * wc


@njit(inline="always", error_model="numpy")
def _push(E, W, S, queue, takeover, head, tail, c, i, last):  # pragma: no cover - compiled
    """Start ``c`` joins the back of ``queue[head:tail]`` at row ``i``; returns the new tail.

    First the starts that ``c`` beats from their own takeover row on are removed (they are
    never best again); then, unless ``c`` is alone, the first row where ``c`` beats the new
    back is found (step out, then bisect). A start that wins at no row up to the last
    is not added. Ties keep the earlier start.
    """
    while tail > head and _later_wins(E, W, S, c, queue[tail - 1], max(takeover[tail - 1], i)):
        tail -= 1
    if tail == head:
        queue[tail] = c
        takeover[tail] = i
        return tail + 1
    b = queue[tail - 1]
    lo = max(takeover[tail - 1], i)  # c loses here
    hi = lo + 1
    step = 1
    while True:
        if hi >= last:
            hi = last
            found = hi > lo and _later_wins(E, W, S, c, b, hi)
            break
        if _later_wins(E, W, S, c, b, hi):
            found = True
            break
        lo = hi
        step = step + 1 if step < 8 else 2 * step
        hi = lo + step
    if not found:
        return tail
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _later_wins(E, W, S, c, b, mid):
            hi = mid
        else:
            lo = mid
    queue[tail] = c
    takeover[tail] = hi
    return tail + 1


@njit(error_model="numpy")
def _dp_queue_kernel(W, S, Q, k):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """The same program as :func:`_dp_dc_numpy`, each layer in one sweep down the rows with a queue.

    ``queue[head:tail]`` holds candidate starts in increasing order, ``takeover[q]`` the first
    row at which ``queue[q]`` beats ``queue[q-1]`` (increasing too). Ties keep the earlier
    start, the smallest-l rule of the other twins.
    """
    m = W.size - 1
    B = np.zeros((k, m), dtype=np.int32)
    D = np.empty(m)
    for i in range(m):
        D[i] = (Q[i + 1]) - S[i + 1] * S[i + 1] / W[i + 1]
    Dn = np.empty(m)
    E = np.empty(m)
    queue = np.empty(m, dtype=np.int64)
    takeover = np.empty(m, dtype=np.int64)
    for j in range(2, k + 1):
        for l in range(j - 1, m):
            E[l] = D[l - 1] - Q[l]
        head = 0
        tail = 0
        for i in range(j - 1, m):
            # the start that becomes possible at row i: a cluster of point i alone
            tail = _push(E, W, S, queue, takeover, head, tail, i, i, m - 1)
            if tail - head >= 2 and takeover[head + 1] <= i:
                head += 1  # takeover rows are distinct: at most one handover per row
            l = queue[head]
            B[j - 1, i] = l
            s = S[i + 1] - S[l]
            w = W[i + 1] - W[l]
            Dn[i] = D[l - 1] + ((Q[i + 1] - Q[l]) - s * s / w)
        for i in range(j - 1, m):
            D[i] = Dn[i]
    return B, D


@njit(error_model="numpy")
def _lagrangian_kernel(W, S, Q, lam, E, work):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """One sweep of ``G[i] = min_l G[l-1] + lam + cost(l, i)``: any number of clusters, each priced ``lam``.

    The queue of :func:`_dp_queue_kernel` with ``E[l] = G[l-1] + lam - Q[l]``, filled as the
    sweep goes (start ``l`` joins at row ``l``, when ``G[l-1]`` is known). Fills ``work[0]``
    with the best start of the last cluster for every row (``work[1:]``: the clusters'
    counts, the queue and the takeover rows; ``E`` and ``work`` (4, m) are scratch passed in,
    since numba's own allocations of large arrays cost more than the sweep's arithmetic).
    Returns the number of clusters of the best clustering of all points and its cost
    (without the price).
    """
    m = W.size - 1
    B, count, queue, takeover = work[0], work[1], work[2], work[3]
    head = 0
    tail = 0
    g = 0.0  # G[i - 1]; G[-1] = 0
    for i in range(m):
        E[i] = g + lam - Q[i]
        tail = _push(E, W, S, queue, takeover, head, tail, i, i, m - 1)
        if tail - head >= 2 and takeover[head + 1] <= i:
            head += 1
        l = queue[head]
        B[i] = l
        s = S[i + 1] - S[l]
        w = W[i + 1] - W[l]
        g = E[l] + Q[i + 1] - s * s / w
        count[i] = count[l - 1] + 1 if l > 0 else 1
    return count[m - 1], g - lam * count[m - 1]


def _backtrack(B, n, k):
    """Bounds ``b[0] = 0 < b[1] < ... < b[k] = n`` of the k runs of the first n sorted points.

    From the table of best starts of a layered program: run ``j`` is ``b[j]..b[j+1]-1``.
    """
    bounds = np.empty(k + 1, dtype=np.int64)
    bounds[k] = n
    i = n - 1
    for j in range(k, 1, -1):
        bounds[j - 1] = B[j - 1, i]
        i = bounds[j - 1] - 1
    bounds[0] = 0
    return bounds


def _prefix_sums(c, w):
    """Prefix sums W, S, Q of w, w c, w c^2 with a leading zero: d(l, i) in O(1)."""
    zero = np.zeros(1)
    return (np.concatenate((zero, np.cumsum(w))), np.concatenate((zero, np.cumsum(w * c))),
            np.concatenate((zero, np.cumsum(w * c * c))))


@njit(error_model="numpy")
def _prefix_sums_kernel(c, w, P):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """:func:`_prefix_sums` in one pass (the same sums, in the same order), into the rows of ``P`` (3, m + 1)."""
    a = b = d = 0.0
    P[0, 0] = P[1, 0] = P[2, 0] = 0.0
    for i in range(c.size):
        wc = w[i] * c[i]
        a += w[i]
        b += wc
        d += wc * c[i]
        P[0, i + 1] = a
        P[1, i + 1] = b
        P[2, i + 1] = d


def _prefix(c, w):
    """:func:`_prefix_sums` by its numba twin when numba runs (allocated here, in numpy: see
    :func:`_lagrangian_kernel`), the numpy twin otherwise; the same bits either way."""
    if not USE_NUMBA:
        return _prefix_sums(c, w)
    P = np.empty((3, c.size + 1))
    _prefix_sums_kernel(c, w, P)
    return P[0], P[1], P[2]


_LAYERS = {"quadratic": _dp_quadratic, "dc": _dp_dc_numpy, "queue": _dp_queue_kernel}
_THREADS_FROM = 20_000  # distinct values; below this two threads cost more than they save
_LAGRANGIAN_FROM = 20_000  # distinct values; below this the layers are as fast
_COARSE = 4096  #: points of the coarse copy that estimates the price (at least 32 per cluster)
_SWEEPS = 8  #: sweeps of the full data before the Lagrangian program gives up


def _layered_runs(c, w, k, method):
    """Bounds of the k runs of the m sorted, distinct, centred values ``c`` (weights ``w``), by layers.

    Meets in the middle: the first ``k1 = ceil(k/2)`` clusters on every prefix (forward), the
    last ``k2 = k - k1`` on every suffix (the same program on ``-c`` reversed), then the split
    point ``p`` (last point of the forward part) that minimizes ``F[k1][p] + G[k2][p + 1]``;
    the first one on a tie. ``"quadratic"`` fills one forward table, the plain definition.
    """
    m = c.size
    layers = _LAYERS[method]
    if method == "quadratic" or k == 1:
        B, _ = layers(*_prefix(c, w), k)
        return _backtrack(B, m, k)
    k1 = (k + 1) // 2
    k2 = k - k1
    forward = (*_prefix(c, w), k1)
    backward = (*_prefix(-c[::-1], w[::-1]), k2)
    if method == "queue" and USE_NUMBA and m >= _THREADS_FROM:  # the kernel releases the GIL
        with ThreadPoolExecutor(max_workers=2) as pool:
            f, g = pool.submit(layers, *forward), pool.submit(layers, *backward)
            (Bf, F), (Bg, G) = f.result(), g.result()
    else:
        (Bf, F), (Bg, G) = layers(*forward), layers(*backward)
    p = np.arange(k1 - 1, m - k2)  # the suffix p+1..m-1 is the reversed prefix 0..m-2-p
    p = int(p[np.argmin(F[p] + G[m - 2 - p])])
    # backward run [a, b) of the reversed points is the forward run [m - b, m - a)
    return np.concatenate((_backtrack(Bf, p + 1, k1)[:-1], m - _backtrack(Bg, m - 1 - p, k2)[::-1]))


def _price_search(W, S, Q, k, lam):
    """Bounds of an optimal k-clustering by Lagrangian sweeps from the price ``lam``, or None.

    Each sweep at price ``lam`` finds a clustering on the lower convex hull of ``(count,
    f(count))``. Until k is bracketed the price is rescaled by ``(count / k)^3`` (for smooth
    data ``f(k) ~ 1/k^2``, so the price ``~ 1/k^3``); then the next price is the slope between
    the nearest hull points on either side. Returns ``(bounds, cost)``, or None when k is not
    a corner of the hull (the slope gives back one of the bracketing counts) or after
    ``_SWEEPS`` sweeps.
    """
    above = below = None  # the nearest hull points (count, cost) with count > k and count < k
    m = W.size - 1
    E, work = np.empty(m), np.empty((4, m), dtype=np.int32)
    for _ in range(_SWEEPS):
        n, cost = _lagrangian_kernel(W, S, Q, lam, E, work)
        if n == k:
            bounds = np.empty(k + 1, dtype=np.int64)
            bounds[k] = i = m
            for j in range(k - 1, -1, -1):
                bounds[j] = i = work[0, i - 1]
            return bounds, cost
        if n > k and (above is None or n < above[0]):
            above = (n, cost)
        if n < k and (below is None or n > below[0]):
            below = (n, cost)
        if above is not None and below is not None:
            new = (below[1] - above[1]) / (above[0] - below[0])
            if new == lam:
                return None  # the hull is straight from below to above: no price isolates k
            lam = new
        else:
            lam *= (n / k) ** 3
    return None


def _estimate_price(W, S, Q, k):
    """The middle of the prices that give k clusters, ``(f(k-1) - f(k+1)) / 2``, on a coarse copy.

    The coarse copy merges runs of consecutive values into ``_COARSE`` (at least 32 k, at most m)
    weighted points at their means; its f(k +- 1) come from :func:`_price_search` started at
    the price of evenly spread data, ``2 f(1) / k^3``. Only a starting point: a poor
    estimate costs sweeps, never exactness.
    """
    m = W.size - 1
    f1 = Q[m] - S[m] ** 2 / W[m]
    guess = 2 * f1 / k ** 3
    idx = np.unique(np.linspace(0, m, min(m, max(_COARSE, 32 * k)) + 1).astype(np.int64))
    Wc, Sc = W[idx], S[idx]
    dw, ds = np.diff(Wc), np.diff(Sc)
    Qc = np.concatenate(([0.0], np.cumsum(ds * ds / dw)))
    f = []
    for kk in (k - 1, k + 1):
        found = _price_search(Wc, Sc, Qc, kk, guess)
        if found is None:
            return guess
        f.append(found[1])
    return (f[0] - f[1]) / 2


def _optimal_runs(c, w, k, method):
    """Bounds ``b[0] = 0 < ... < b[k] = m`` of the k runs of an optimal clustering of sorted ``c``.

    ``"lagrangian"`` tries the price sweeps first and falls back to the layers (``"queue"``
    with numba, ``"dc"`` without).
    """
    if k == c.size:  # every value alone: the only clustering, at cost zero
        return np.arange(k + 1)
    if method == "lagrangian":
        if k > 1:
            W, S, Q = _prefix(c, w)
            found = _price_search(W, S, Q, k, _estimate_price(W, S, Q, k))
            if found is not None:
                return found[0]
        method = "queue" if USE_NUMBA else "dc"
    return _layered_runs(c, w, k, method)


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
    centred at its weighted mean, to limit cancellation), for :math:`m` distinct values
    (duplicates are merged into one weighted point first). The best :math:`l` is
    non-decreasing in :math:`i` (the matrix of the minimization is Monge; Grønlund et al.
    2017), so a layer needs far fewer than the :math:`O(m^2)` evaluations of the plain program
    (``method="quadratic"``): :math:`O(m \log m)` by divide and conquer (``"dc"``, in numpy)
    or in one sweep with the queue of Hirschberg and Larmore (1987) (``"queue"``, in numba;
    :math:`O(m \log m)` at worst, about six comparisons per row in practice). The first
    :math:`\lceil k/2 \rceil` clusters are solved on prefixes and the others on suffixes,
    which meet at the best split point; with numba the two halves run on two threads.

    ``"lagrangian"`` avoids the :math:`k` layers (Aggarwal, Schieber and Tokuyama 1994):
    with a price :math:`\lambda` per cluster and no limit on their number,

    .. math::

        G[i] = \min_{0 \le l \le i}\ G[l-1] + \lambda + d(l, i), \qquad G[-1] = 0,

    is one sweep of the same queue. If its best clustering has exactly :math:`k` clusters
    it is an optimal :math:`k`-clustering, since any other :math:`k`-clustering
    :math:`P` has :math:`\mathrm{cost}(P) + \lambda k \ge G[m-1]`. The optimal cost
    :math:`f(k)` is convex in :math:`k`, so the prices that give :math:`k` clusters are
    :math:`f(k) - f(k+1) \le \lambda \le f(k-1) - f(k)`; the middle of that interval is
    estimated on a coarse copy of the data (a few thousand weighted points), and one sweep of
    the full data usually lands in it (further sweeps take the slope between the clusterings
    found on either side of :math:`k`). Where no price isolates :math:`k` (it is not a
    corner of the convex hull of :math:`f`: ties such as equal, evenly spaced groups), or
    after eight sweeps, the layered program takes over, so the result is always exact.

    ``"auto"`` is ``"lagrangian"`` with numba for at least 20,000 distinct values,
    ``"queue"`` with numba below that, and ``"dc"`` without numba. All methods minimize the
    same objective: their inertias agree to rounding, and so do their clusterings unless two
    clusterings tie (to rounding), when any of them may be returned.

    Parameters
    ----------
    x : array_like of float, any shape, non-empty
        The values (flattened). Not modified.
    k : int >= 1
        Number of clusters; at most the number of distinct values.
    sample_weight : array_like of float, shape ``x.shape``, optional
        Non-negative weights (default 1); at least ``k`` distinct values must have weight > 0.
        Zero-weight values are assigned to the nearest center but do not move it.
    method : {"auto", "lagrangian", "queue", "dc", "quadratic"}
        The program (see above). ``"lagrangian"`` and ``"queue"`` without numba run as plain
        Python, slowly; ``"quadratic"`` is :math:`O(k m^2)`, for checking on small inputs.

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

    Grønlund, Larsen, Mathiasen, Nielsen, Schneider and Song (2017), "Fast exact k-means,
    k-medians and Bregman divergence clustering in 1D", arXiv:1701.07204.

    Hirschberg and Larmore (1987), "The least weight subsequence problem", SIAM Journal on
    Computing 16(4), 628-638.

    Aggarwal, Schieber and Tokuyama (1994), "Finding a minimum-weight k-link path in graphs
    with the concave Monge property and applications", Discrete & Computational Geometry
    12, 263-280.

    Examples
    --------
    >>> centers, labels, inertia = kmeans_1d_optimal(np.array([1.0, 2.0, 3.0, 10.0, 11.0, 30.0]), 3)
    >>> centers, labels, inertia
    (array([ 2. , 10.5, 30. ]), array([0, 0, 0, 1, 1, 2], dtype=uint8), 2.5)
    """
    x = as_float_array(x, "x", allow_empty=False)
    k = check_int(k, "k", low=1)
    check_choice(method, "method", ("auto", "lagrangian", "queue", "dc", "quadratic"))
    xf = x.astype(np.float64, copy=False).ravel()
    if sample_weight is None:
        wf = None
        v, counts = np.unique(x.ravel(), return_counts=True)  # sorted distinct values (sorted in x's dtype)
        v, w = v.astype(np.float64), counts.astype(np.float64)
    else:
        wf = as_float_array(sample_weight, "sample_weight").astype(np.float64, copy=False)
        if wf.shape != x.shape:
            raise ValueError(f"sample_weight must have the shape of x, {x.shape}, got {wf.shape}")
        wf = wf.ravel()
        if (wf < 0).any():
            raise ValueError(f"sample_weight must be >= 0, got a minimum of {wf.min()!r}")
        v, inv = np.unique(xf, return_inverse=True)  # x = v[inv]
        w = np.bincount(inv, weights=wf, minlength=v.size)
    keep = w > 0
    m = int(keep.sum())
    if k > m:
        raise ValueError(f"k must be <= the number of distinct values of x (with positive weight), "
                         f"{m}, got k={k}")
    if method == "auto":
        method = "lagrangian" if USE_NUMBA and m >= _LAGRANGIAN_FROM else "queue" if USE_NUMBA else "dc"
    vk, wk = (v, w) if m == v.size else (v[keep], w[keep])
    mu = float(np.sum(wk * vk) / np.sum(wk))
    c = vk - mu  # centred: the prefix sums stay small, d(l, i) loses less to cancellation
    starts = _optimal_runs(c, wk, k, method)[:-1]
    centers = np.add.reduceat(wk * c, starts) / np.add.reduceat(wk, starts) + mu
    # every value (zero-weight ones included) goes to the nearest center
    lab_x = _nearest(xf, centers)
    err = (xf - centers[lab_x]) ** 2
    inertia = float(np.sum(err if wf is None else wf * err))
    labels = lab_x.astype(_index_dtype(k)).reshape(x.shape)
    return centers.astype(x.dtype), labels, inertia


# ======================================================================================
# Estimators: the shared base, input checks, nearest-codeword assignment
# ======================================================================================


class NotFittedError(RuntimeError, ValueError, AttributeError):
    """A quantizer was used (``encode``, ``decode``, ...) before ``fit``.

    A :class:`RuntimeError`, as qref has always raised, and also a :class:`ValueError` and an
    :class:`AttributeError`, the two that scikit-learn's ``NotFittedError`` derives from, so
    code written for either library catches it.
    """


class _Estimator:
    """A tiny scikit-learn-like base: parameters are the constructor's keyword arguments.

    No import of scikit-learn is needed: :meth:`__sklearn_tags__` imports it only when
    scikit-learn itself asks (in ``check_estimator``, ``clone`` and friends).
    """

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

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags: a transformer whose output (integer codes) is not float."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=[]),
                    input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False))

    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X, y, **fit_params).transform(X)``: the codes of the training data."""
        return self.fit(X, y, **fit_params).transform(X)

    def _check_fitted(self, attr):
        if not hasattr(self, attr):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")

    def _check_features(self, X, name="X"):
        """``X`` as a 2-d float array with the number of features seen in ``fit``."""
        X = _as_2d(X, name)
        n = self.n_features_in_
        if X.shape[1] != n:
            raise ValueError(f"{name} has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{n} features as input ({name} must have {n} features, as in fit)")
        return X


def _check_codes(codes, k, *, columns=None, columns_name="M"):
    """``codes`` as an integer array with values in [0, k) (and ``columns`` columns if given)."""
    codes = as_int_array(codes, "codes")
    if columns is not None and (codes.ndim != 2 or codes.shape[1] != columns):
        raise ValueError(f"codes must have shape (N, {columns_name}={columns}), got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        raise ValueError(f"codes must be in [0, {k - 1}], got values in [{codes.min()}, {codes.max()}]")
    return codes


def _as_2d(X, name="X"):
    if hasattr(X, "toarray") and hasattr(X, "nnz"):  # a scipy.sparse matrix or array
        raise TypeError(f"{name} is a sparse matrix, and sparse input is not supported; "
                        f"pass a dense array, e.g. {name}.toarray()")
    X = as_float_array(X, name, allow_0d=False)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-d, shape (n_samples, n_features), got shape {X.shape}; "
                         f"Reshape your data: for scalar data use x.reshape(-1, 1)")
    for axis, what in ((0, "sample"), (1, "feature")):  # (the wording of scikit-learn's check_array)
        if X.shape[axis] == 0:
            raise ValueError(f"{name} must not be empty: found array with 0 {what}(s) (shape={X.shape}) "
                             f"while a minimum of 1 is required.")
    return X


def _work_dtype(X):
    """Precision of the distance computations: float32 for float32 data (as faiss and
    scikit-learn do), float64 otherwise (float16 has too few digits for a sum of squares)."""
    return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)


def _check_sample_weight(sample_weight, n):
    """Sample weights as float64, shape (n,), finite, >= 0, not all 0; or None."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape (n_samples,) = ({n},), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("sample_weight must be finite")
    if (w < 0).any():
        raise ValueError(f"sample_weight must be >= 0, got a minimum of {w.min()!r}")
    if not w.sum() > 0:
        raise ValueError("sample_weight must have at least one positive entry")
    return w


# --------------------------------------------------------------------------------------
# Nearest codeword: the assignment step of every quantizer here
# --------------------------------------------------------------------------------------
#
# Twins: the numpy one uses BLAS, ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, in chunks of rows
# (so that the (chunk, k) matrix stays in cache); the numba one loops over rows in parallel
# and accumulates the exact squared differences (x_d - c_d)^2, vectorized over the k centers,
# never forming the matrix. They agree up to rounding: the labels are the same except at
# distances equal to the last bits, and the distances to ~1e-12 (float64) or ~1e-6 (float32)
# relative. Both compute in the precision of their inputs.

_CHUNK = 2048  #: rows per BLAS block of the numpy twin
_ROWS = 64  #: rows per parallel task of the numba twin
_SMALL = 1 << 18  #: below this many n * k * D, BLAS beats starting the numba threads


def _assign_numpy(X, C):
    """Nearest center of each row of X (n, D) among C (k, D), same dtype: labels int64, squared distances."""
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int64)
    d2 = np.empty(n, dtype=X.dtype)
    c_sq = (C * C).sum(1)
    for s in range(0, n, _CHUNK):
        x = X[s:s + _CHUNK]
        d = c_sq - 2.0 * (x @ C.T)  # [i][j]: ||c_j||^2 - 2 x_i.c_j (||x_i||^2 is the same for every j)
        lab = np.argmin(d, axis=1)  # first minimum on a tie
        labels[s:s + x.shape[0]] = lab
        d2[s:s + x.shape[0]] = d[np.arange(x.shape[0]), lab] + (x * x).sum(1)
    return labels, np.maximum(d2, 0)


@njit(parallel=True)
def _assign_kernel(X, CT, labels, d2):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """Numba twin of :func:`_assign_numpy`; ``CT`` is the transposed codebook (D, k)."""
    n, D = X.shape
    k = CT.shape[1]
    for blk in prange((n + _ROWS - 1) // _ROWS):
        acc = np.empty(k, dtype=X.dtype)  # [j]: squared distance of the current row to center j
        for i in range(blk * _ROWS, min(n, (blk + 1) * _ROWS)):
            for j in range(k):
                acc[j] = 0.0
            for d in range(D):
                xd = X[i, d]
                for j in range(k):  # contiguous in j: vectorized
                    t = xd - CT[d, j]
                    acc[j] += t * t
            best = acc[0]
            for j in range(1, k):  # the minimum first (branch-free, vectorized), ...
                best = min(best, acc[j])
            arg = 0
            while acc[arg] != best:  # ... then its first position: the same tie rule as argmin
                arg += 1
            labels[i] = arg
            d2[i] = best


def _assign(X, C):
    """Nearest center of each row: labels (n,) int64 and squared distances (n,) in X's dtype.

    ``X`` (n, D) and ``C`` (k, D) must have the same dtype. Scalar data (D = 1) takes a binary
    search in the sorted codebook instead, exact and O(n log k); small problems take the numpy
    twin (starting the numba threads would cost more than the work).
    """
    if X.shape[1] == 1:
        order = np.argsort(C[:, 0], kind="stable")
        lab = order[_nearest(X[:, 0], C[order, 0])]
        return lab, (X[:, 0] - C[lab, 0]) ** 2
    if USE_NUMBA and X.shape[0] * C.shape[0] * X.shape[1] >= _SMALL:
        labels = np.empty(X.shape[0], dtype=np.int64)
        d2 = np.empty(X.shape[0], dtype=X.dtype)
        _assign_kernel(np.ascontiguousarray(X), np.ascontiguousarray(C.T), labels, d2)
        return labels, d2
    return _assign_numpy(X, C)


def _cluster_sums_numpy(X, lab, w, k):
    """Weighted sum of the rows of each cluster (k, D) and the clusters' total weights (k,), float64.

    ``X`` (n, D) float32 or float64, ``lab`` (n,) int64, ``w`` (n,) float64 (ones when unweighted).
    """
    sums = np.empty((k, X.shape[1]))
    for f in range(X.shape[1]):
        sums[:, f] = np.bincount(lab, weights=w * X[:, f], minlength=k)
    return sums, np.bincount(lab, weights=w, minlength=k)


@njit
def _cluster_sums_kernel(X, lab, w, k):  # pragma: no cover - compiled (tests run it under NUMBA_DISABLE_JIT too)
    """Numba twin of :func:`_cluster_sums_numpy`: one pass, the same order of additions (bit-identical)."""
    n, D = X.shape
    sums = np.zeros((k, D))
    counts = np.zeros(k)
    for i in range(n):
        j = lab[i]
        counts[j] += w[i]
        for d in range(D):
            sums[j, d] += w[i] * X[i, d]
    return sums, counts


def _cluster_sums(X, lab, w, k):
    return (_cluster_sums_kernel if USE_NUMBA else _cluster_sums_numpy)(X, lab, w, k)


def _weighted_sum(w, d2):
    """``sum_i w_i d2_i`` as a float, without BLAS.

    ``w @ d2`` would call BLAS ``ddot``, whose worker threads (OpenBLAS) keep spinning for a
    while after a large product and then compete for the cores with the numba assignment
    kernel of the next Lloyd iteration: on 2 cores this more than doubled the time of a
    product-quantizer fit. numpy's own (pairwise) sum runs in the calling thread.
    """
    return float(np.sum(w * d2))


def _kmeans_pp(X, k, gen, w=None):
    """k-means++ seeding (Arthur and Vassilvitskii 2007, Sec. 2.2): sample by w(x) D(x)^2.

    ``X`` float64; ``w`` None (all weights equal) or the sample weights.
    """
    n = X.shape[0]
    C = np.empty((k, X.shape[1]))
    C[0] = X[_draw(gen, n, w)]
    d2 = ((X - C[0]) ** 2).sum(1)
    for j in range(1, k):
        p = d2 if w is None else w * d2
        tot = p.sum()
        i = int(gen.choice(n, p=p / tot)) if tot > 0 else _draw(gen, n, w)
        C[j] = X[i]
        d2 = np.minimum(d2, ((X - C[j]) ** 2).sum(1))
    return C


def _draw(gen, n, w):
    """One index in [0, n), uniform (w None) or with probability proportional to w."""
    return int(gen.integers(n)) if w is None else int(gen.choice(n, p=w / w.sum()))


# ======================================================================================
# k-means (Lloyd), with sample weights
# ======================================================================================


class KMeans(_Estimator):
    r"""k-means by Lloyd's algorithm, as a fitted codebook (a scikit-learn-style estimator).

    Minimizes the (weighted) inertia :math:`\sum_{p} w_p \lVert x_p - c_{\ell(p)} \rVert^2` by
    alternating the assignment :math:`\ell(p) = \arg\min_j \lVert x_p - c_j \rVert^2` and the
    update :math:`c_j = \sum_{\ell(p) = j} w_p x_p / \sum_{\ell(p) = j} w_p`, the weighted mean
    (Lloyd 1982; with all :math:`w_p = 1` the usual mean). Neither step can increase the
    inertia; the value after each assignment is kept in ``inertia_history_``. A cluster left
    empty (or with zero total weight) is re-seeded at the point of positive weight farthest from
    its center (so no center is ever NaN and the inertia still does not increase). With
    Hessian diagonals as weights this is the Hessian-weighted k-means of Choi et al. (2017):
    see :func:`hessian_weighted_kmeans`.

    Stops when the summed squared center shift is at most ``tol`` times the mean per-feature
    variance of ``X`` (the convention of scikit-learn), or after ``max_iter`` iterations.
    Distances are computed in float32 for float32 data (like scikit-learn and faiss), in
    float64 otherwise; centers and inertia are accumulated in float64.

    **API and scikit-learn.** ``fit`` returns ``self``; learned attributes end in ``_``;
    ``get_params``/``set_params`` work. As a *quantizer*, :meth:`encode` returns the codes
    (nearest-codeword indices) and :meth:`decode` the codewords. :meth:`transform` and
    :meth:`inverse_transform` are aliases of ``encode``/``decode``: this **differs from
    scikit-learn**, whose ``KMeans.transform`` returns the distances to the centers.

    Parameters
    ----------
    n_clusters : int >= 1
        Number of codewords :math:`k` (at most the number of samples with positive weight).
    init : {"k-means++", "random", "linear"} or array_like, shape (n_clusters, n_features)
        ``"k-means++"``: D²-sampling (Arthur and Vassilvitskii 2007), by :math:`w\,D^2` with
        weights; ``"random"``: distinct random rows (drawn with probability proportional to the
        weight); ``"linear"``: evenly spaced between the per-feature min and max (the linear
        initialization of Deep Compression's weight sharing, Han et al. 2016, Sec. 3.2); or the
        start centers. With equal weights the draws are exactly those without weights.
    max_iter : int >= 1
    tol : float >= 0
    rng : None, int or numpy.random.Generator
        Randomness of the initialization.

    Attributes
    ----------
    cluster_centers_ : ndarray, shape (n_clusters, n_features), dtype of X
    labels_ : ndarray, shape (n_samples,), smallest unsigned dtype holding ``n_clusters - 1``
    inertia_ : float
        Weighted by ``sample_weight`` when given.
    n_iter_ : int
    inertia_history_ : list of float
        The inertia after each assignment step; non-increasing; the last entry is ``inertia_``.
    n_features_in_ : int

    References
    ----------
    Lloyd (1982), IEEE Trans. Inf. Theory 28(2). Arthur and Vassilvitskii (2007), "k-means++:
    the advantages of careful seeding", SODA. Choi, El-Khamy and Lee (2017), "Towards the limit
    of network quantization", ICLR (weighted k-means).

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> km = KMeans(2, rng=0).fit(X)
    >>> km.cluster_centers_[np.argsort(km.cluster_centers_[:, 0])], km.inertia_
    (array([[ 0. ,  0.5],
           [10. ,  0.5]]), 1.0)
    >>> km.encode(X).dtype, km.decode(km.encode(X[:1]))
    (dtype('uint8'), array([[0. , 0.5]]))
    >>> w = np.array([3.0, 1.0, 1.0, 1.0])                 # weighted: the mean moves to the heavy point
    >>> km = KMeans(2, init=X[[0, 2]], rng=0).fit(X, sample_weight=w)
    >>> km.cluster_centers_
    array([[ 0.  ,  0.25],
           [10.  ,  0.5 ]])
    """

    def __init__(self, n_clusters=8, *, init="k-means++", max_iter=300, tol=1e-4, rng=None):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.rng = rng

    def _init_centers(self, X, k, gen, w):
        if isinstance(self.init, str):
            check_choice(self.init, "init", ("k-means++", "random", "linear"))
            if self.init == "k-means++":
                return _kmeans_pp(X, k, gen, w)
            if self.init == "random":
                p = None if w is None else w / w.sum()
                return X[gen.choice(X.shape[0], size=k, replace=False, p=p)].copy()
            return np.linspace(X.min(0), X.max(0), k)
        C = as_float_array(self.init, "init").astype(np.float64)
        if C.shape != (k, X.shape[1]):
            raise ValueError(f"init must have shape (n_clusters, n_features) = {(k, X.shape[1])}, got {C.shape}")
        return C.copy()

    def fit(self, X, y=None, sample_weight=None):
        """Learn the codebook from ``X``, shape (n_samples, n_features); return ``self``.

        ``y`` is ignored (scikit-learn's convention). ``sample_weight``, shape (n_samples,),
        non-negative, weights each row in the inertia and the means.
        """
        X = _as_2d(X)
        k = check_int(self.n_clusters, "n_clusters", low=1)
        max_iter = check_int(self.max_iter, "max_iter", low=1)
        if isinstance(self.tol, (bool, np.bool_)) or not np.isscalar(self.tol) or not self.tol >= 0:
            raise ValueError(f"tol must be a real number >= 0, got {self.tol!r}")
        if k > X.shape[0]:
            raise ValueError(f"n_clusters must be <= n_samples={X.shape[0]}, got {k}")
        w = _check_sample_weight(sample_weight, X.shape[0])
        if w is not None and np.count_nonzero(w) < k:
            raise ValueError(f"n_clusters must be <= the number of samples with positive weight, "
                             f"{np.count_nonzero(w)}, got {k}")
        gen = check_rng(self.rng)
        wd = _work_dtype(X)
        Xw = np.ascontiguousarray(X, dtype=wd)  # the assignment runs in this precision
        X64 = Xw.astype(np.float64, copy=False)  # centers and sums in float64
        tol_abs = float(self.tol) * float(np.mean(np.var(X64, axis=0)))
        w_init = None if w is None or np.all(w == w[0]) else w  # equal weights: the unweighted draws
        C = self._init_centers(X64, k, gen, w_init)
        wt = np.ones(X.shape[0]) if w is None else w  # (unit weights: the same arithmetic as none)
        history = []
        n_iter = 0
        for n_iter in range(1, max_iter + 1):
            lab, d2 = _assign(Xw, C.astype(wd))
            d2 = d2.astype(np.float64)
            history.append(_weighted_sum(wt, d2))
            newC, counts = _cluster_sums(Xw, lab, wt, k)  # [j][d] weighted sums, [j] total weights
            nonempty = counts > 0
            newC[nonempty] /= counts[nonempty, None]
            empty = np.flatnonzero(~nonempty)
            if empty.size:  # re-seed each empty cluster at one of the farthest points (of positive weight)
                far = np.argsort(-(d2 if w is None else np.where(w > 0, d2, -1.0)), kind="stable")[:empty.size]
                newC[empty] = X64[far]
            shift = float(((newC - C) ** 2).sum())
            C = newC
            if shift <= tol_abs:
                break
        lab, d2 = _assign(Xw, C.astype(wd))
        d2 = d2.astype(np.float64)
        inertia = _weighted_sum(wt, d2)
        if history and inertia > history[-1]:  # cannot happen in exact arithmetic; guard rounding
            inertia = min(inertia, history[-1])
        history.append(inertia)
        self.cluster_centers_ = C.astype(X.dtype)
        self._centers64 = C
        self._work = C.astype(wd)  # the codebook in the precision of the assignment
        self.labels_ = lab.astype(_index_dtype(k))
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.inertia_history_ = history
        self.n_features_in_ = X.shape[1]
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X, sample_weight=sample_weight).labels_``."""
        return self.fit(X, y, sample_weight=sample_weight).labels_

    def encode(self, X):
        """Codes: index of the nearest center of each row, shape (n_samples,), smallest unsigned dtype."""
        self._check_fitted("cluster_centers_")
        X = self._check_features(X)
        lab, _ = _assign(np.ascontiguousarray(X, dtype=self._work.dtype), self._work)
        return lab.astype(_index_dtype(self._work.shape[0]))

    predict = encode

    def decode(self, codes):
        """Codewords of the codes: shape ``codes.shape + (n_features,)``, dtype of the fitted X."""
        self._check_fitted("cluster_centers_")
        codes = _check_codes(codes, self.cluster_centers_.shape[0])
        return self.cluster_centers_[codes]

    #: alias of :meth:`encode` (NOT scikit-learn's distances; see the class docstring)
    transform = encode
    #: alias of :meth:`decode`
    inverse_transform = decode


# ======================================================================================
# Hessian-weighted k-means (Choi, El-Khamy and Lee 2017)
# ======================================================================================
#
# Near a trained minimum (gradient ~ 0) a second-order Taylor expansion of the loss gives
#     delta L ~ 1/2 sum_i h_ii (w_i - q(w_i))^2     (off-diagonal Hessian terms dropped),
# so the clustering that costs the least loss minimizes this Hessian-weighted distortion:
# weighted k-means with the Hessian diagonal as sample weights. The weights come from
# mlp_hessian_diagonal (exact for ReLU networks) or mlp_adam_second_moment (the paper's
# alternative: the square root of Adam's second-moment estimate, free after training).


def hessian_weighted_distortion(w, w_q, *, hessian):
    r"""The Hessian-weighted distortion :math:`\sum_i h_{ii} (w_i - \hat w_i)^2` (Choi et al. 2017).

    .. math::

        \delta \mathcal L \approx \tfrac12 \sum_i h_{ii}\, (w_i - \hat w_i)^2 ,

    the second-order estimate of the loss increase caused by quantizing :math:`w` to
    :math:`\hat w` at a minimum (zero gradient, off-diagonal Hessian terms neglected), which
    Choi, El-Khamy and Lee (2017, Sec. 3) take as the objective of network quantization. This
    function returns the sum without the factor 1/2.

    Parameters
    ----------
    w, w_q : array_like of float, the same shape
        Weights and their quantized values.
    hessian : array_like of float, shape of ``w``, >= 0
        Diagonal of the Hessian (or any non-negative importance, e.g. ``sqrt`` of Adam's
        second-moment estimate).

    Returns
    -------
    float
        Computed in float64.

    Raises
    ------
    TypeError, ValueError
        For non-floating or non-finite input, mismatched shapes or negative ``hessian``.

    References
    ----------
    Choi, El-Khamy and Lee (2017), "Towards the limit of network quantization", ICLR, Sec. 3.

    Examples
    --------
    >>> hessian_weighted_distortion(np.array([1.0, 2.0]), np.array([1.5, 2.0]), hessian=np.array([4.0, 9.0]))
    1.0
    """
    w = as_float_array(w, "w")
    w_q = as_float_array(w_q, "w_q")
    h = _check_hessian(hessian, w.shape)
    if w_q.shape != w.shape:
        raise ValueError(f"w_q must have the shape of w, {w.shape}, got {w_q.shape}")
    return float(np.sum(h * (w.astype(np.float64) - w_q.astype(np.float64)) ** 2))


def _check_hessian(hessian, shape):
    h = as_float_array(hessian, "hessian")
    if h.shape != shape:
        raise ValueError(f"hessian must have the shape of w, {shape}, got {h.shape}")
    if h.size and (h < 0).any():
        raise ValueError(f"hessian must be >= 0 (use the absolute value or clip a general Hessian), "
                         f"got a minimum of {h.min()!r}")
    return h.astype(np.float64, copy=False)


def hessian_weighted_kmeans(w, k, *, hessian, method="optimal", init="linear", max_iter=300, tol=1e-4,
                            rng=None):
    r"""Weight sharing by Hessian-weighted k-means (Choi, El-Khamy and Lee 2017).

    Clusters the scalar weights into ``k`` shared values minimizing the Hessian-weighted
    distortion of :func:`hessian_weighted_distortion`,

    .. math::

        \min_{c_1, \dots, c_k}\ \sum_i h_{ii}\, \min_j (w_i - c_j)^2, \qquad
        c_j = \frac{\sum_{i \in C_j} h_{ii}\, w_i}{\sum_{i \in C_j} h_{ii}},

    the second equation being the center update: a *Hessian-weighted mean*, so weights to which
    the loss is more sensitive pull their shared value closer (Choi et al. 2017, Sec. 3). With
    all :math:`h_{ii}` equal it is the k-means weight sharing of Deep Compression (Han et al.
    2016, Eq. 2).

    Two sources of :math:`h_{ii}` are discussed by Choi et al.: the **diagonal of the Hessian**
    of the training loss (:func:`mlp_hessian_diagonal` computes it exactly for the book's ReLU
    MLP), and, as a free alternative, the **square root of Adam's second-moment estimate**
    :math:`\sqrt{\hat v_i}` of the gradients, which the optimizer has at hand after training
    (:func:`mlp_adam_second_moment`; pass ``hessian=np.sqrt(v_hat)``).

    Parameters
    ----------
    w : array_like of float, any shape, non-empty
        The weights (of one layer, or of several layers concatenated: Choi et al. quantize all
        layers together, the Hessian making the layers' errors comparable). Not modified.
    k : int >= 1
        Number of shared values.
    hessian : array_like of float, shape of ``w``, >= 0
        The importance of each weight. Zero entries are assigned to the nearest center but do
        not move it.
    method : {"optimal", "lloyd"}
        ``"optimal"``: the global optimum by dynamic programming (:func:`kmeans_1d_optimal`
        with ``sample_weight``); ``"lloyd"``: weighted Lloyd iterations (:class:`KMeans`), a
        local optimum, as in the paper.
    init, max_iter, tol, rng
        For ``"lloyd"`` only, as in :class:`KMeans` (default ``"linear"``, Deep Compression's
        initialization).

    Returns
    -------
    centers : ndarray, shape (k,), dtype of ``w``, increasing
    labels : ndarray, shape ``w.shape``, smallest unsigned dtype holding ``k - 1``
    distortion : float
        :math:`\sum_i h_{ii} (w_i - c_{\ell(i)})^2`.

    Raises
    ------
    TypeError, ValueError
        For bad ``w`` or ``hessian`` (non-floating, non-finite, negative, shape mismatch), or
        ``k`` larger than the number of distinct weights with positive ``hessian``.

    References
    ----------
    Choi, El-Khamy and Lee (2017), "Towards the limit of network quantization", ICLR, Sec. 3.
    Han, Mao and Dally (2016), "Deep compression", ICLR, Sec. 3.1.

    Examples
    --------
    >>> w = np.array([0.0, 0.1, 1.0, 1.1])
    >>> h = np.array([1.0, 9.0, 1.0, 1.0])                # the loss is 9x more sensitive to w[1]
    >>> centers, labels, d = hessian_weighted_kmeans(w, 2, hessian=h)
    >>> centers, labels                                   # 0.09 = (1 * 0.0 + 9 * 0.1) / 10
    (array([0.09, 1.05]), array([0, 0, 1, 1], dtype=uint8))
    """
    w = as_float_array(w, "w", allow_empty=False)
    h = _check_hessian(hessian, w.shape)
    k = check_int(k, "k", low=1)
    check_choice(method, "method", ("optimal", "lloyd"))
    if method == "optimal":
        return kmeans_1d_optimal(w, k, sample_weight=h)
    km = KMeans(k, init=init, max_iter=max_iter, tol=tol, rng=rng).fit(w.reshape(-1, 1), sample_weight=h.ravel())
    order = np.argsort(km._centers64[:, 0], kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)  # old cluster index -> position in increasing order
    centers = km._centers64[order, 0]
    labels = rank[km.labels_].astype(_index_dtype(k)).reshape(w.shape)
    distortion = float(np.sum(h * (w.astype(np.float64) - centers[labels]) ** 2))
    return centers.astype(w.dtype), labels, distortion


# --------------------------------------------------------------------------------------
# The curvature of the book's MLP: exact Hessian diagonal, and Adam's second moment
# --------------------------------------------------------------------------------------


def _check_mlp(model, X):
    """The weights and biases of a ReLU MLP (``model.weights[l]`` of shape (out, in)) and X as float64."""
    if not hasattr(model, "weights") or not hasattr(model, "biases"):
        raise TypeError(f"model must have .weights and .biases lists (e.g. qref.data.MLP), got "
                        f"{type(model).__name__}")
    Ws = [as_float_array(W, f"model.weights[{l}]").astype(np.float64) for l, W in enumerate(model.weights)]
    bs = [as_float_array(b, f"model.biases[{l}]").astype(np.float64) for l, b in enumerate(model.biases)]
    X = _as_2d(X)
    if X.shape[1] != Ws[0].shape[1]:
        raise ValueError(f"X must have {Ws[0].shape[1]} columns (the model's inputs), got {X.shape[1]}")
    return Ws, bs, X.astype(np.float64)


def _mlp_forward(Ws, bs, X):
    """Inputs of each layer, ReLU masks of the hidden layers, softmax probabilities (float64)."""
    acts, masks = [], []
    a = X
    for l, (W, b) in enumerate(zip(Ws, bs)):
        acts.append(a)
        z = a @ W.T + b
        if l < len(Ws) - 1:
            masks.append(z > 0)
            a = np.maximum(z, 0.0)
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return acts, masks, p / p.sum(1, keepdims=True)


def mlp_hessian_diagonal(model, X):
    r"""Exact diagonal of the Hessian of a ReLU MLP's mean cross-entropy loss w.r.t. its weights.

    For the loss :math:`\mathcal L = \frac1n \sum_{s} \ell(z^{(s)})`, with logits :math:`z`
    and :math:`\ell` the softmax cross-entropy, a single weight :math:`W^{l}_{ab}` enters the
    logits *piecewise linearly* (it scales one pre-activation by the input :math:`a^{l}_b`, and
    everything after it is linear maps and ReLUs), so :math:`\partial^2 z / \partial
    (W^l_{ab})^2 = 0` almost everywhere and the diagonal entry is exactly its Gauss-Newton term

    .. math::

        \frac{\partial^2 \mathcal L}{\partial (W^{l}_{ab})^2}
        = \frac1n \sum_s \big(a^{l,(s)}_b\big)^2\ g_a^{(s)\top}\big(\mathrm{diag}(p^{(s)})
          - p^{(s)} p^{(s)\top}\big)\, g_a^{(s)},
        \qquad g_a = \frac{\partial z}{\partial z^{l}_a},

    with :math:`p` the softmax probabilities and :math:`z^l_a` the pre-activation fed by the
    weight. It does not depend on the labels. This is the :math:`h_{ii}` of Hessian-weighted
    quantization (Choi, El-Khamy and Lee 2017, Sec. 3), who compute the diagonal with the
    second-order back-propagation of LeCun et al.; for this network the two agree.

    Parameters
    ----------
    model : object with ``weights`` (list of (out, in) arrays) and ``biases``
        A ReLU MLP whose last layer gives the logits, e.g. :func:`qref.data.reference_mlp`.
    X : array_like of float, shape (n, in_features)
        The data over which the loss is averaged (e.g. the training set).

    Returns
    -------
    list of ndarray, float64, one per layer, shape of ``model.weights[l]``, >= 0
        The regularizer of the training objective (weight decay) is not included.

    Raises
    ------
    TypeError, ValueError
        For a model without ``weights``/``biases`` or bad ``X``.

    References
    ----------
    Choi, El-Khamy and Lee (2017), "Towards the limit of network quantization", ICLR, Sec. 3.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> m = SimpleNamespace(weights=[np.array([[0.0, 0.0]])], biases=[np.zeros(1)])  # 1 class: p = 1
    >>> mlp_hessian_diagonal(m, np.ones((3, 2)))
    [array([[0., 0.]])]
    """
    Ws, bs, X = _check_mlp(model, X)
    acts, masks, p = _mlp_forward(Ws, bs, X)
    n, C = p.shape
    G = np.broadcast_to(np.eye(C), (n, C, C))  # [s][c][a]: d z_c / d (pre-activation a of the last layer)
    H = [None] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        pg = (p[:, :, None] * G).sum(1)  # [s][a]: p^T g_a
        s = (p[:, :, None] * G * G).sum(1) - pg * pg  # [s][a]: g_a^T (diag p - p p^T) g_a
        H[l] = (s.T @ acts[l] ** 2) / n  # [a][b]: mean over samples of s_a * (input b)^2
        if l > 0:
            G = (G @ Ws[l]) * masks[l - 1][:, None, :]  # chain rule through layer l and the ReLU below
    return H


def mlp_adam_second_moment(model, X, y, *, batch_size=64, epochs=1, beta2=0.999, rng=None):
    r"""Adam's bias-corrected second-moment estimate of the gradients, at the model's weights.

    Runs Adam's second-moment recursion (Kingma and Ba 2015, Algorithm 1) over minibatch
    gradients of the mean cross-entropy, *without* updating the weights:

    .. math::

        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t \odot g_t, \qquad
        \hat v = v_T / (1 - \beta_2^{T}).

    Choi, El-Khamy and Lee (2017, Sec. 3) propose :math:`\sqrt{\hat v}` of the optimizer that
    trained the network as a free substitute for the Hessian diagonal in Hessian-weighted
    k-means (``hessian_weighted_kmeans(w, k, hessian=np.sqrt(v_hat))``): a trained model ships
    with :math:`\hat v`, while the Hessian needs an extra pass. This function recomputes
    :math:`\hat v` at the final weights, for models whose optimizer state was not kept.

    Parameters
    ----------
    model : object with ``weights`` and ``biases``, as :func:`mlp_hessian_diagonal`
    X : array_like of float, shape (n, in_features)
    y : array_like of int, shape (n,)
        Class labels in ``[0, n_classes)``.
    batch_size : int >= 1
    epochs : int >= 1
        Passes over the data (in a random order each, from ``rng``).
    beta2 : float in (0, 1)
    rng : None, int or numpy.random.Generator

    Returns
    -------
    list of ndarray, float64, one per layer, shape of ``model.weights[l]``, >= 0

    Raises
    ------
    TypeError, ValueError
        For bad inputs or options.

    References
    ----------
    Choi, El-Khamy and Lee (2017), ICLR, Sec. 3. Kingma and Ba (2015), "Adam: a method for
    stochastic optimization", ICLR.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> m = SimpleNamespace(weights=[np.zeros((2, 1))], biases=[np.zeros(2)])
    >>> v = mlp_adam_second_moment(m, np.ones((4, 1)), np.array([0, 0, 0, 0]), batch_size=4)
    >>> v[0]          # one full batch: v_hat = g^2, g = p - onehot = (-0.5, 0.5)
    array([[0.25],
           [0.25]])
    """
    Ws, bs, X = _check_mlp(model, X)
    y = as_int_array(y, "y")
    C = Ws[-1].shape[0]
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape (n,) = ({X.shape[0]},), got {y.shape}")
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"y must hold class labels in [0, {C - 1}], got values in [{y.min()}, {y.max()}]")
    batch_size = check_int(batch_size, "batch_size", low=1)
    epochs = check_int(epochs, "epochs", low=1)
    check_positive(beta2, "beta2")
    if not beta2 < 1:
        raise ValueError(f"beta2 must be in (0, 1), got {beta2!r}")
    gen = check_rng(rng)
    v = [np.zeros_like(W) for W in Ws]
    t = 0
    for _ in range(epochs):
        order = gen.permutation(X.shape[0])
        for s in range(0, X.shape[0], batch_size):
            idx = order[s:s + batch_size]
            acts, masks, p = _mlp_forward(Ws, bs, X[idx])
            delta = p
            delta[np.arange(idx.size), y[idx]] -= 1.0
            delta /= idx.size  # d(mean loss)/d logits
            t += 1
            for l in range(len(Ws) - 1, -1, -1):
                g = delta.T @ acts[l]  # dL/dW_l, shape (out, in)
                v[l] = beta2 * v[l] + (1.0 - beta2) * g * g
                if l > 0:
                    delta = (delta @ Ws[l]) * masks[l - 1]
    return [vl / (1.0 - beta2 ** t) for vl in v]


# ======================================================================================
# Product quantization (Jégou, Douze and Schmid 2011)
# ======================================================================================


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
    Applied to the rows of a weight matrix this is the compression of Gong et al. (2014) and,
    with a data-aware objective, of Stock et al. (2020).

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
    n_iter_ : int
        The largest number of Lloyd iterations of any subspace.
    n_features_in_ : int

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

    def fit(self, X, y=None):
        """Learn the M codebooks from ``X``, shape (N, D); return ``self`` (``y`` is ignored)."""
        X = _as_2d(X)
        M, Ds = self._check_dim(X.shape[1])
        Ks = check_int(self.Ks, "Ks", low=1)
        gen = check_rng(self.rng)
        self.codewords_ = np.empty((M, Ks, Ds), dtype=X.dtype)  # [m][ks][ds]
        self._cw64 = np.empty((M, Ks, Ds))
        self._work = np.empty((M, Ks, Ds), dtype=_work_dtype(X))
        n_iter = 0
        for m in range(M):
            km = KMeans(Ks, init=self.init, max_iter=self.max_iter, tol=self.tol, rng=gen)
            km.fit(np.ascontiguousarray(X[:, m * Ds:(m + 1) * Ds]))
            self.codewords_[m] = km.cluster_centers_
            self._cw64[m] = km._centers64
            self._work[m] = km._work
            n_iter = max(n_iter, km.n_iter_)
        self.Ds_ = Ds
        self.n_iter_ = n_iter
        self.n_features_in_ = X.shape[1]
        return self

    def _check_X(self, X, name="X"):
        self._check_fitted("codewords_")
        return self._check_features(X, name)

    def encode(self, X):
        """Codes, shape (N, M), smallest unsigned dtype: the nearest codeword in each subspace."""
        X = self._check_X(X).astype(self._work.dtype, copy=False)
        M, Ks, Ds = self._work.shape
        codes = np.empty((X.shape[0], M), dtype=_index_dtype(Ks))
        for m in range(M):
            codes[:, m] = _assign(np.ascontiguousarray(X[:, m * Ds:(m + 1) * Ds]), self._work[m])[0]
        return codes

    def decode(self, codes):
        """Reconstruction, shape (N, D), dtype of the fitted X, from codes of shape (N, M)."""
        self._check_fitted("codewords_")
        M, Ks, Ds = self.codewords_.shape
        codes = _check_codes(codes, Ks, columns=M)
        # codewords_[m, codes[:, m]] for every m: (N, M, Ds) -> (N, D)
        return self.codewords_[np.arange(M)[None, :], codes].reshape(codes.shape[0], M * Ds)

    transform = encode
    inverse_transform = decode

    def distance_table(self, query):
        """Squared distances of each sub-vector of ``query`` (shape (D,)) to every codeword: (M, Ks) float64."""
        q = as_float_array(query, "query", allow_0d=False)
        self._check_fitted("codewords_")
        D = self.codewords_.shape[0] * self.Ds_
        if q.shape != (D,):
            raise ValueError(f"query must have shape (D,) = ({D},), got {q.shape}")
        M, Ks, Ds = self._cw64.shape
        sub = q.astype(np.float64).reshape(M, 1, Ds)
        return ((self._cw64 - sub) ** 2).sum(-1)  # [m][ks]

    def asymmetric_distances(self, query, codes):
        """Asymmetric squared distances (Jégou et al. 2011, ADC) of ``query`` to encoded rows: (N,) float64."""
        T = self.distance_table(query)
        M = T.shape[0]
        codes = _check_codes(codes, T.shape[1], columns=M)
        return T[np.arange(M)[None, :], codes].sum(1)


# ======================================================================================
# Residual quantization (Chen, Guan and Wang 2010)
# ======================================================================================


def _greedy_encode(X, codebooks):
    """Stage by stage, the nearest codeword to what is left: codes (N, M) int64, final residual."""
    R = X.copy()
    codes = np.empty((X.shape[0], codebooks.shape[0]), dtype=np.int64)
    for m in range(codebooks.shape[0]):
        codes[:, m] = _assign(R, codebooks[m])[0]
        R -= codebooks[m][codes[:, m]]
    return codes, R


def _beam_encode(X, codebooks, beam, chunk=512):
    """Beam search: after each stage keep the ``beam`` partial encodings with the smallest error.

    Codes (N, M) int64 of the best final candidate. At stage m every kept candidate is
    extended by every codeword (beam * K of them per row), ranked by its squared error
    ``||r||^2 - 2 r.c + ||c||^2`` (ties: the lower candidate, then the lower codeword), and the
    best ``beam`` survive. With ``beam >= K**(M-1)`` nothing is ever dropped: exhaustive search.
    """
    N = X.shape[0]
    M, K, _ = codebooks.shape
    out = np.empty((N, M), dtype=np.int64)
    for s in range(0, N, chunk):
        R = X[s:s + chunk][:, None, :]  # [i][b][d]: residual of candidate b of row i
        paths = np.zeros((R.shape[0], 1, 0), dtype=np.int64)  # [i][b][stage]: its codes so far
        for m in range(M):
            c = codebooks[m]
            err = (R * R).sum(-1)[..., None] - 2.0 * (R @ c.T) + (c * c).sum(1)  # [i][b][j]
            flat = err.reshape(R.shape[0], -1)  # [i][b * K + j]
            order = np.argsort(flat, axis=1, kind="stable")[:, :beam]
            b, j = np.divmod(order, K)
            R = np.take_along_axis(R, b[..., None], 1) - c[j]
            paths = np.concatenate([np.take_along_axis(paths, b[..., None], 1), j[..., None]], axis=-1)
        best = np.argmin((R * R).sum(-1), axis=1)  # exact final errors
        out[s:s + R.shape[0]] = paths[np.arange(R.shape[0]), best]
    return out


class ResidualQuantizer(_Estimator):
    r"""Residual (multi-stage) vector quantization (Chen, Guan and Wang 2010), with beam search.

    Each of ``M`` stages has a codebook of ``K`` full-dimensional codewords and quantizes the
    residual the previous stages left (Chen et al. 2010, Sec. 2):

    .. math::

        r_0 = x, \qquad i_m = \arg\min_j \lVert r_{m-1} - c^{(m)}_j \rVert^2, \qquad
        r_m = r_{m-1} - c^{(m)}_{i_m}, \qquad
        \hat x = \sum_{m=1}^{M} c^{(m)}_{i_m} .

    Training is greedy, as in the paper: stage :math:`m`'s codebook is :class:`KMeans` on the
    training residuals :math:`r_{m-1}`, so the training distortion ``stage_distortion_`` never
    increases from stage to stage. Like product quantization the code is ``M`` indices
    (:math:`M \log_2 K` bits), but every codeword spans all dimensions, so no independence
    between subspaces is assumed.

    **Encoding.** Greedy encoding (``beam=1``) is the recursion above. Since a codeword chosen
    early need not be the best first step of the best *sum*, :meth:`encode` can instead keep the
    ``beam`` best partial encodings after every stage (beam search, as used for multi-stage VQ
    and additive quantization): ``beam >= K**(M-1)`` is exhaustive search of all :math:`K^M`
    sums. A beam can drop the greedy path and end worse than greedy on some vectors, so for
    ``beam > 1`` :meth:`encode` returns, row by row, the better of the beam and the greedy code:
    never worse than greedy.

    Parameters
    ----------
    M : int >= 1
        Number of stages.
    K : int >= 1
        Codewords per stage (at most the number of samples).
    beam : int >= 1
        Default beam width of :meth:`encode` (1: greedy).
    init, max_iter, tol, rng
        Passed to each stage's :class:`KMeans`.

    Attributes
    ----------
    codebooks_ : ndarray, shape (M, K, D), dtype of the fitted X
        ``codebooks_[m, j]``: the j-th codeword of stage m.
    stage_distortion_ : ndarray, shape (M + 1,), float64
        Mean squared training error :math:`\frac1N\sum\lVert r_m\rVert^2` after 0, 1, ..., M
        stages (entry 0 is the mean squared norm of the data); non-increasing.
    n_iter_ : int
        The largest number of Lloyd iterations of any stage.
    n_features_in_ : int

    References
    ----------
    Chen, Guan and Wang (2010), "Approximate nearest neighbor search by residual vector
    quantization", Sensors 10(12), 11259-11273.

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((400, 6))
    >>> rq = ResidualQuantizer(M=3, K=8, rng=0).fit(X)
    >>> codes = rq.encode(X)
    >>> codes.shape, codes.dtype, rq.codebooks_.shape
    ((400, 3), dtype('uint8'), (3, 8, 6))
    >>> bool(np.all(np.diff(rq.stage_distortion_) <= 0))     # every stage helps on the training data
    True
    >>> err = lambda c: float(((X - rq.decode(c)) ** 2).sum())
    >>> err(rq.encode(X, beam=4)) <= err(codes)               # a beam is never worse than greedy
    True
    """

    def __init__(self, M=4, K=256, *, beam=1, init="k-means++", max_iter=300, tol=1e-4, rng=None):
        self.M = M
        self.K = K
        self.beam = beam
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.rng = rng

    def fit(self, X, y=None):
        """Learn the M codebooks from ``X``, shape (N, D), stage by stage; return ``self``."""
        X = _as_2d(X)
        M = check_int(self.M, "M", low=1)
        K = check_int(self.K, "K", low=1)
        check_int(self.beam, "beam", low=1)
        gen = check_rng(self.rng)
        wd = _work_dtype(X)
        R = np.array(X, dtype=wd)  # the residuals, updated in place
        self.codebooks_ = np.empty((M, K, X.shape[1]), dtype=X.dtype)  # [m][j][d]
        self._work = np.empty((M, K, X.shape[1]), dtype=wd)
        dist = [float(np.mean((R.astype(np.float64) ** 2).sum(1)))]
        n_iter = 0
        for m in range(M):
            km = KMeans(K, init=self.init, max_iter=self.max_iter, tol=self.tol, rng=gen).fit(R)
            self.codebooks_[m] = km.cluster_centers_
            self._work[m] = km._work
            R -= km._work[km.labels_]
            dist.append(float(np.mean((R.astype(np.float64) ** 2).sum(1))))
            n_iter = max(n_iter, km.n_iter_)
        self.stage_distortion_ = np.minimum.accumulate(np.array(dist))  # guard float rounding only
        self.n_iter_ = n_iter
        self.n_features_in_ = X.shape[1]
        return self

    def encode(self, X, *, beam=None):
        """Codes, shape (N, M), smallest unsigned dtype; ``beam`` overrides the estimator's width."""
        self._check_fitted("codebooks_")
        X = self._check_features(X).astype(self._work.dtype)
        B = check_int(self.beam if beam is None else beam, "beam", low=1)
        codes, R = _greedy_encode(X, self._work)
        if B > 1:
            cb = _beam_encode(X, self._work, B)
            err_beam = ((X - self._work[np.arange(cb.shape[1]), cb].sum(1)) ** 2).sum(1)
            err_greedy = (R * R).sum(1)
            better = err_beam <= err_greedy
            codes[better] = cb[better]
        return codes.astype(_index_dtype(self._work.shape[1]))

    def decode(self, codes):
        """Reconstruction, shape (N, D), dtype of the fitted X: the sum of the stages' codewords."""
        self._check_fitted("codebooks_")
        M, K, D = self.codebooks_.shape
        codes = _check_codes(codes, K, columns=M)
        cw = self.codebooks_.astype(np.float64)[np.arange(M)[None, :], codes]  # [n][m][d]
        return cw.sum(1).astype(self.codebooks_.dtype)

    def transform(self, X):
        """Alias of :meth:`encode` with the default beam."""
        return self.encode(X)

    inverse_transform = decode


# ======================================================================================
# One scalar codebook per feature: Lloyd-Max or the exact 1-d optimum, as an estimator
# ======================================================================================


class LloydMaxQuantizer(_Estimator):
    r"""A scalar codebook of ``n_levels`` values for each feature (column), as an estimator.

    For column :math:`f` the levels :math:`y_{f,1} < \dots < y_{f,n}` minimize the (weighted)
    squared error :math:`\sum_p w_p \min_i (x_{pf} - y_{f,i})^2`: either by Lloyd's iteration
    from the start levels of :func:`qref.nonuniform.lloyd_max_data` (``method="lloyd"``, a
    local optimum; Lloyd 1982, Max 1960), or exactly (``method="optimal"``,
    :func:`kmeans_1d_optimal`, Wang and Song 2011). Applied to a weight matrix with
    ``X = W.reshape(-1, 1)`` it is Deep Compression's per-layer weight sharing; with
    ``X = W.T``, one codebook per output channel.

    ``"lloyd"`` runs :class:`KMeans` on the column from the (weighted) sample quantiles at
    :math:`(i - 1/2)/n` (``init="quantile"``) or evenly spaced levels (``"linear"``), so it
    accepts sample weights; without weights it is the iteration of ``lloyd_max_data``.

    A column with fewer distinct values (of positive weight) than ``n_levels`` keeps them all
    and repeats its largest one (repeated levels are never chosen by :meth:`encode`).

    Parameters
    ----------
    n_levels : int >= 1
    method : {"optimal", "lloyd"}
    init : {"quantile", "linear"}
        Start levels of ``"lloyd"``.
    max_iter : int >= 1
    tol : float >= 0
        Of ``"lloyd"``, as in :class:`KMeans`.

    Attributes
    ----------
    levels_ : ndarray, shape (n_features, n_levels), dtype of X, non-decreasing along axis 1
    mse_ : ndarray, shape (n_features,), float64
        The (weighted) mean squared error of each column.
    n_iter_ : int
        1 for ``"optimal"`` (no iterations); for ``"lloyd"`` the most iterations of any column.
    n_features_in_ : int

    References
    ----------
    Lloyd (1982), IEEE Trans. Inf. Theory 28(2). Max (1960), IRE Trans. Inf. Theory 6(1).
    Wang and Song (2011), The R Journal 3(2).

    Examples
    --------
    >>> X = np.array([[0.0, 5.0], [0.1, 9.0], [1.0, 10.0], [1.2, 5.0]])
    >>> q = LloydMaxQuantizer(2).fit(X)
    >>> q.levels_
    array([[0.05, 1.1 ],
           [5.  , 9.5 ]])
    >>> q.encode(X).T
    array([[0, 0, 1, 1],
           [0, 1, 1, 0]], dtype=uint8)
    """

    def __init__(self, n_levels=8, *, method="optimal", init="quantile", max_iter=300, tol=1e-8):
        self.n_levels = n_levels
        self.method = method
        self.init = init
        self.max_iter = max_iter
        self.tol = tol

    def _start(self, x, w, k):
        """Lloyd-Max start levels: weighted quantiles at (i - 1/2)/k (inverted CDF) or a linear grid."""
        check_choice(self.init, "init", ("quantile", "linear"))
        keep = w > 0
        if self.init == "linear":
            return np.linspace(x[keep].min(), x[keep].max(), k)
        order = np.argsort(x, kind="stable")
        cw = np.cumsum(w[order])
        pos = np.searchsorted(cw, (np.arange(k) + 0.5) / k * cw[-1], side="right")
        return x[order[np.minimum(pos, x.size - 1)]]

    def fit(self, X, y=None, sample_weight=None):
        """Learn one codebook per column of ``X``, shape (n_samples, n_features); return ``self``."""
        X = _as_2d(X)
        n = check_int(self.n_levels, "n_levels", low=1)
        check_choice(self.method, "method", ("optimal", "lloyd"))
        w = _check_sample_weight(sample_weight, X.shape[0])
        X64 = X.astype(np.float64)
        wf = np.ones(X.shape[0]) if w is None else w
        levels = np.empty((X.shape[1], n))
        n_distinct = np.empty(X.shape[1], dtype=np.int64)
        mse = np.empty(X.shape[1])
        n_iter = 1
        for f in range(X.shape[1]):
            x = X64[:, f]
            k = min(n, np.unique(x[wf > 0]).size)  # at most the distinct values that count
            if self.method == "optimal":
                c = kmeans_1d_optimal(x, k, sample_weight=wf)[0]
            else:
                start = np.unique(self._start(x, wf, k))  # quantiles may repeat: drop duplicates
                if start.size < k:  # top up with the distinct values farthest from the start
                    rest = np.setdiff1d(np.unique(x[wf > 0]), start)
                    far = np.argsort(-np.abs(rest[:, None] - start[None, :]).min(1), kind="stable")
                    start = np.sort(np.concatenate([start, rest[far[:k - start.size]]]))
                km = KMeans(k, init=start.reshape(-1, 1), max_iter=self.max_iter, tol=self.tol)
                km.fit(x.reshape(-1, 1), sample_weight=w)
                c = np.sort(km._centers64[:, 0])
                n_iter = max(n_iter, km.n_iter_)
            levels[f] = np.concatenate([c, np.full(n - c.size, c[-1])])
            n_distinct[f] = c.size
            err = (x - c[_nearest(x, c)]) ** 2
            mse[f] = float(wf @ err / wf.sum())
        self.levels_ = levels.astype(X.dtype)
        self._levels64 = levels
        self._n_distinct = n_distinct
        self.mse_ = mse
        self.n_iter_ = n_iter
        self.n_features_in_ = X.shape[1]
        return self

    def encode(self, X):
        """Codes, shape (n_samples, n_features), smallest unsigned dtype: the nearest level per column."""
        self._check_fitted("levels_")
        X = self._check_features(X).astype(np.float64)
        codes = np.empty(X.shape, dtype=_index_dtype(self._levels64.shape[1]))
        for f in range(X.shape[1]):
            codes[:, f] = _nearest(X[:, f], self._levels64[f, :self._n_distinct[f]])  # ties: the lower level
        return codes

    def decode(self, codes):
        """Values, shape of ``codes``, dtype of the fitted X."""
        self._check_fitted("levels_")
        F, n = self.levels_.shape
        codes = _check_codes(codes, n, columns=F, columns_name="n_features")
        return self.levels_[np.arange(F)[None, :], codes]

    transform = encode
    inverse_transform = decode


# ======================================================================================
# Deep Compression's size accounting: fixed-length indices, codebook, Huffman coding
# ======================================================================================


def huffman_code_lengths(counts):
    r"""Code length of each symbol in a Huffman code for the given counts (Huffman 1952).

    Repeatedly merge the two least frequent subtrees; every symbol inside a merged subtree
    gets one more bit. The result is an optimal prefix code: its average length
    :math:`L = \sum_i p_i \ell_i` satisfies :math:`H \le L < H + 1` with
    :math:`H = -\sum_i p_i \log_2 p_i`, and the lengths meet Kraft's inequality with equality,
    :math:`\sum_i 2^{-\ell_i} = 1`. Deep Compression Huffman-codes the cluster indices of its
    shared weights (Han et al. 2016, Sec. 4), which saves 20-30% of the storage there.

    Ties between equal counts are broken by the order of first appearance (the symbol index,
    then the order of merging), so the result is deterministic. A symbol of count 0 gets length
    0 (it is not coded); if only one symbol occurs it also gets length 0: a decoder that knows
    the number of symbols needs no bits (the Kraft sum is then :math:`2^0 = 1`).

    Parameters
    ----------
    counts : array_like of int or float, shape (k,), >= 0
        How often each symbol occurs (or its probability).

    Returns
    -------
    ndarray of int64, shape (k,)
        ``lengths[i]``: bits of the codeword of symbol ``i``.

    Raises
    ------
    TypeError
        If ``counts`` is not real.
    ValueError
        If it is not 1-d, empty, negative, non-finite or all zero.

    References
    ----------
    Huffman, D. A. (1952). A method for the construction of minimum-redundancy codes. Proc. IRE
    40(9), 1098-1101. Han, Mao and Dally (2016), "Deep compression", ICLR, Sec. 4.

    Examples
    --------
    >>> huffman_code_lengths([5, 2, 1, 1])        # a: 0, b: 10, c: 110, d: 111
    array([1, 2, 3, 3])
    """
    c = np.asarray(counts)
    if c.dtype.kind not in "fiu":
        raise TypeError(f"counts must hold real numbers, got dtype {c.dtype}")
    c = c.astype(np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be a non-empty 1-d array, got shape {c.shape}")
    if not np.isfinite(c).all() or (c < 0).any() or not c.sum() > 0:
        raise ValueError("counts must be finite, >= 0 and not all zero")
    lengths = np.zeros(c.size, dtype=np.int64)
    # a heap of subtrees: (total count, tie-breaker, the symbols in the subtree)
    heap = [(c[i], i, [i]) for i in np.flatnonzero(c > 0)]
    heapq.heapify(heap)
    next_id = c.size
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        lengths[s1] += 1  # both subtrees go one level down under the new node
        lengths[s2] += 1
        heapq.heappush(heap, (c1 + c2, next_id, s1 + s2))
        next_id += 1
    return lengths


class CompressedSize(NamedTuple):
    """Storage of a weight-shared tensor, from :func:`deep_compression_size` (all in bits)."""

    original_bits: int  #: n_weights * weight_bits
    index_bits: int  #: n_weights * ceil(log2 k), or the Huffman-coded total
    codebook_bits: int  #: k * codebook_bits
    total_bits: int  #: index_bits + codebook_bits
    ratio: float  #: original_bits / total_bits
    bits_per_weight: float  #: total_bits / n_weights


def deep_compression_size(n_weights, k, *, weight_bits=32, codebook_bits=32, code_counts=None):
    r"""Bits to store ``n_weights`` weights shared among ``k`` values, and the compression ratio.

    Deep Compression (Han et al. 2016, Eq. 1) stores an index of :math:`\log_2 k` bits per
    weight plus the :math:`k` shared values at :math:`b` bits each, for a compression rate

    .. math::

        r = \frac{n b}{n \log_2 k + k b} .

    Here the index is :math:`\lceil \log_2 k \rceil` bits (a fixed-length code; the same when
    :math:`k` is a power of two). With ``code_counts`` (how many weights use each shared value)
    the indices are Huffman-coded instead (:func:`huffman_code_lengths`; Han et al. 2016,
    Sec. 4) and cost :math:`\sum_j n_j \ell_j` bits. The Huffman table itself, and pruning's
    sparse-index overhead, are not counted.

    Parameters
    ----------
    n_weights : int >= 1
    k : int >= 1
        Number of shared values.
    weight_bits : int in [1, 64]
        Bits of an original weight :math:`b` (32 for float32).
    codebook_bits : int in [1, 64]
        Bits of a stored shared value.
    code_counts : array_like of int, shape (k,), optional
        Occurrences of each index, summing to ``n_weights`` (e.g.
        ``np.bincount(labels.ravel(), minlength=k)``).

    Returns
    -------
    CompressedSize
        ``(original_bits, index_bits, codebook_bits, total_bits, ratio, bits_per_weight)``.

    Raises
    ------
    TypeError, ValueError
        For non-integer or out-of-range sizes, or ``code_counts`` of the wrong length or sum.

    References
    ----------
    Han, Mao and Dally (2016), "Deep compression: compressing deep neural networks with
    pruning, trained quantization and Huffman coding", ICLR, Eq. (1) and Sec. 4.

    Examples
    --------
    >>> deep_compression_size(16, 4).ratio           # the 4x4 example of Han et al. (2016), Sec. 3
    3.2
    >>> deep_compression_size(16, 4, code_counts=[10, 2, 2, 2]).index_bits   # Huffman: 10*1 + 2*2 + 2*3 + 2*3
    26
    """
    n = check_int(n_weights, "n_weights", low=1)
    k = check_int(k, "k", low=1)
    b = check_int(weight_bits, "weight_bits", low=1)
    cb = check_int(codebook_bits, "codebook_bits", low=1)
    if b > 64 or cb > 64:
        raise ValueError(f"weight_bits and codebook_bits must be in [1, 64], got {b} and {cb}")
    if code_counts is None:
        index_bits = n * math.ceil(math.log2(k))
    else:
        counts = as_int_array(code_counts, "code_counts")
        if counts.shape != (k,):
            raise ValueError(f"code_counts must have shape (k,) = ({k},), got {counts.shape}")
        if counts.min() < 0 or int(counts.sum()) != n:
            raise ValueError(f"code_counts must be >= 0 and sum to n_weights={n}, got sum {int(counts.sum())}")
        index_bits = int(counts.astype(np.int64) @ huffman_code_lengths(counts))
    original = n * b
    total = index_bits + k * cb
    return CompressedSize(original, index_bits, k * cb, total, original / total, total / n)


# ======================================================================================
# Soft-to-hard annealing of a scalar codebook
# ======================================================================================


class SoftToHard(NamedTuple):
    """Result of :func:`anneal_soft_to_hard`."""

    codebook: np.ndarray  #: (k,) float64, the final codewords (in the order given)
    temperatures: np.ndarray  #: (n_T,) float64, the schedule
    soft_mse: np.ndarray  #: (n_T,) weighted mean of (x - soft_quantize(x))^2 after each temperature
    hard_mse: np.ndarray  #: (n_T,) weighted mean of (x - hard_quantize(x))^2 after each temperature


def anneal_soft_to_hard(x, codebook, *, temperatures, n_iter=20, sample_weight=None):
    r"""Fit a scalar codebook with soft assignments, lowering the temperature to hard k-means.

    At temperature :math:`T` every value is assigned to every codeword with the probabilities
    of :func:`qref.codebook.soft_assign`, :math:`p_j(x) \propto \exp(-(x - c_j)^2 / T)`, and
    each codeword moves to the mean of the data weighted by its probabilities,

    .. math::

        c_j \leftarrow \frac{\sum_i w_i\, p_j(x_i)\, x_i}{\sum_i w_i\, p_j(x_i)} ,

    ``n_iter`` times per temperature. This is the stationarity condition of the free energy
    :math:`F_T = -T \sum_i w_i \log \sum_j e^{-(x_i - c_j)^2/T}` (the *deterministic annealing*
    of Rose 1998, an EM step of a mixture of equal Gaussians of variance :math:`T/2`), which
    each update does not increase. As :math:`T \to 0`, :math:`p` becomes the one-hot nearest
    codeword, the update becomes Lloyd's and :math:`F_T` the k-means distortion: the soft
    quantizer turns into the hard one. Lowering :math:`T` step by step is the soft-to-hard
    annealing of Agustsson et al. (2017), who train *through* the soft quantizer by gradient
    descent; here only the codebook is fitted, in closed form. Above the critical temperature
    :math:`T_c = 2\,\mathrm{Var}(x)` all codewords collapse to the mean; they split as
    :math:`T` falls (Rose 1998, Sec. III).

    In the survey's terms (Guo 2018, Sec. 3) this is an *adaptive* codebook with *soft*
    assignment annealed to *hard*; :func:`qref.codebook.random_quantize` is the stochastic
    (probabilistic) assignment to a codebook.

    Parameters
    ----------
    x : array_like of float, any shape, non-empty
        The data (e.g. a layer's weights), flattened. Not modified.
    codebook : array_like of float, shape (k,)
        Start codewords (distinct, so that they can separate).
    temperatures : array_like of float, shape (n_T,), > 0
        The schedule, usually decreasing (e.g. ``np.geomspace(var, 1e-6 * var, 12)``).
    n_iter : int >= 1
        Updates per temperature.
    sample_weight : array_like of float, shape of ``x``, >= 0, optional

    Returns
    -------
    SoftToHard
        ``(codebook, temperatures, soft_mse, hard_mse)``; the gap between the two MSEs closes
        as :math:`T \to 0`.

    Raises
    ------
    TypeError, ValueError
        For non-floating, non-finite or empty input, a codebook that is not 1-d, temperatures
        that are not positive, or bad weights.

    References
    ----------
    Agustsson et al. (2017), "Soft-to-hard vector quantization for end-to-end learning
    compressible representations", NeurIPS. Rose, K. (1998), "Deterministic annealing for
    clustering, compression, classification, regression, and related optimization problems",
    Proc. IEEE 86(11), 2210-2239. Guo (2018), arXiv:1808.04752, Sec. 3.

    Examples
    --------
    >>> x = np.concatenate([np.full(50, -1.0), np.full(50, 1.0)])
    >>> hot = anneal_soft_to_hard(x, [-0.1, 0.1], temperatures=[4.0])  # T > T_c = 2 Var(x) = 2
    >>> bool(np.ptp(hot.codebook) < 1e-5)    # both codewords at the mean
    True
    >>> r = anneal_soft_to_hard(x, [-0.1, 0.1], temperatures=[4.0, 0.5, 0.01])
    >>> r.codebook.round(6), bool(r.soft_mse[-1] < 1e-12), float(r.hard_mse[-1])
    (array([-1.,  1.]), True, 0.0)
    """
    x = as_float_array(x, "x", allow_empty=False)
    xf = x.astype(np.float64, copy=False).ravel()
    c = as_float_array(codebook, "codebook", allow_empty=False, allow_0d=False)
    if c.ndim != 1:
        raise ValueError(f"codebook must be 1-d, got shape {c.shape}")
    c = c.astype(np.float64).copy()
    Ts = as_float_array(temperatures, "temperatures", allow_empty=False, allow_0d=False).astype(np.float64)
    if Ts.ndim != 1 or (Ts <= 0).any():
        raise ValueError("temperatures must be a 1-d array of positive numbers")
    n_iter = check_int(n_iter, "n_iter", low=1)
    if sample_weight is None:
        w = np.ones(xf.size)
    else:
        w = as_float_array(sample_weight, "sample_weight")
        if w.shape != x.shape:
            raise ValueError(f"sample_weight must have the shape of x, {x.shape}, got {w.shape}")
        w = _check_sample_weight(w.ravel(), xf.size)
    W = w.sum()
    soft, hard = [], []
    for T in Ts:
        for _ in range(n_iter):
            p = soft_assign(xf, c, temperature=T) * w[:, None]  # [i][j]: w_i p_j(x_i)
            mass = p.sum(0)
            moved = mass > 0  # a codeword with no mass at all keeps its place
            c[moved] = (p[:, moved].T @ xf) / mass[moved]
        p = soft_assign(xf, c, temperature=T)
        soft.append(float(w @ (xf - p @ c) ** 2 / W))
        hard.append(float(w @ (xf - c[_nearest_unsorted(xf, c)]) ** 2 / W))
    return SoftToHard(c, Ts.copy(), np.array(soft), np.array(hard))


def _nearest_unsorted(xf, c):
    """Index in ``c`` (any order) of the nearest codeword to each value, ties to the lower value."""
    order = np.argsort(c, kind="stable")
    return order[_nearest(xf, c[order])]
