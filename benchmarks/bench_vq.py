"""Exact 1-d k-means (``qref.vq.kmeans_1d_optimal``) against scikit-learn's Lloyd k-means.

Scalar clustering of 1M float32 standard-normal values into 16 levels (the weight-sharing
codebook of a 4-bit layer): the dynamic program of Wang and Song (2011) in its Lagrangian form
(a price per cluster instead of 16 layers: one queue sweep of the data in numba, at a price
estimated on a coarse copy and certified by the cluster count), against
``sklearn.cluster.KMeans(n_clusters=16, n_init=1)`` (k-means++, Lloyd). Reported: the time
ratio (target: qref at most 1/5 of sklearn's time) and, in the note, both inertias (the DP is
the global optimum, so its inertia is never higher). A second row compares with the exact
O(kn) SMAWK program of the ``kmeans1d`` package (C++; Grønlund et al. 2017, Sec. 2.2), when
it is installed (benchmark-only). Timing is best-of-``repeats`` after a warm-up call.
Skipped (no rows) without scikit-learn.
"""

from __future__ import annotations

import time

import numpy as np

from qref import vq
from qref.codebook import hard_quantize

N = 1_000_000
K = 16
REPEATS = 3


def _best(f, repeats):
    f()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(n=N, k=K, repeats=REPEATS, seed=0):
    """Time both; return a list of rows (see ``benchmarks/run.py``)."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:  # pragma: no cover
        return []
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    t_q, (_, _, inertia_q) = _best(lambda: vq.kmeans_1d_optimal(x, k), repeats)
    X = x.reshape(-1, 1)
    t_s, km = _best(lambda: KMeans(n_clusters=k, n_init=1, random_state=seed).fit(X), repeats)
    inertia_s = float(km.inertia_)
    if inertia_q > inertia_s * (1 + 1e-6):
        raise AssertionError(f"the exact DP has a higher inertia ({inertia_q}) than sklearn ({inertia_s})")
    rows = [dict(benchmark=f"kmeans_1d_optimal, {n / 1e6:g}M float32, k={k}", qref_s=t_q,
                 baseline="sklearn KMeans(n_init=1)", baseline_s=t_s, ratio=t_q / t_s, target=0.2,
                 note=f"inertia qref {inertia_q:.6g} (global optimum) vs sklearn {inertia_s:.6g}")]
    try:
        import kmeans1d
    except ImportError:  # pragma: no cover - benchmark-only
        return rows
    xl = x.astype(np.float64)
    t_k, (_, cent) = _best(lambda: kmeans1d.cluster(xl, k), 1)
    cent = np.asarray(cent)
    inertia_k = float(np.sum((xl - hard_quantize(xl, cent)[1]) ** 2))
    if abs(inertia_q - inertia_k) > 1e-9 * inertia_k:
        raise AssertionError(f"two exact programs disagree: qref {inertia_q}, kmeans1d {inertia_k}")
    rows.append(dict(benchmark=f"kmeans_1d_optimal, {n / 1e6:g}M float32, k={k}", qref_s=t_q,
                     baseline="kmeans1d.cluster (exact, C++ SMAWK)", baseline_s=t_k, ratio=t_q / t_k,
                     target=None, note=f"same optimum: inertia {inertia_k:.6g}"))
    return rows


main = run

if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:40s} {r['qref_s']:7.3f} s vs {r['baseline']} {r['baseline_s']:7.3f} s "
              f"ratio {r['ratio']:.3f} (target <= {r['target']}); {r['note']}")
