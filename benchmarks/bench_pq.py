"""Product quantization (``qref.vq.ProductQuantizer``) against faiss and nanopq.

Train and encode 100k float32 vectors of dimension 128 with 8 subspaces of 256 codewords
(64-bit codes), 20 Lloyd iterations per subspace, random initialization, all training
vectors used (faiss subsamples to 256 points per centroid by default; here
``max_points_per_centroid`` is raised so that all three fit the same data):

* qref: ``ProductQuantizer(M=8, Ks=256, init="random", max_iter=20, tol=0)`` then ``encode``;
  the assignment runs in a numba kernel (parallel over rows, float32), the update in one pass;
* faiss-cpu: ``faiss.ProductQuantizer(128, 8, 8)`` with ``cp.niter = 20``, then
  ``compute_codes`` (BLAS distances, OpenMP);
* nanopq: ``nanopq.PQ(M=8, Ks=256).fit(X, iter=20)`` (scipy's ``kmeans2``) then ``encode``.

Reported: the time of train + encode (best of ``repeats``, the candidates interleaved), the
ratio to faiss (target: at most 1.5) and, in the note, the mean squared reconstruction error
relative to faiss's (target: within 1%). faiss and nanopq are benchmark-only dependencies
(``pip install faiss-cpu nanopq``); a missing one gives no row.
"""

from __future__ import annotations

import time

import numpy as np

from qref import vq

N, D, M, KS, ITERS = 100_000, 128, 8, 256, 20
REPEATS = 2


def _best_of(candidates, repeats, settle=0.5):
    """Best wall time of each zero-argument callable (interleaved rounds) and its last result."""
    best = dict.fromkeys(candidates, float("inf"))
    out = {}
    for _ in range(repeats):
        for name, f in candidates.items():
            time.sleep(settle)  # let the other library's worker threads go idle
            t = time.perf_counter()
            out[name] = f()
            best[name] = min(best[name], time.perf_counter() - t)
    return best, out


def _row(benchmark, qref_s, baseline, baseline_s, target=None, note=""):
    return dict(benchmark=benchmark, qref_s=qref_s, baseline=baseline, baseline_s=baseline_s,
                ratio=qref_s / baseline_s, target=target, note=note)


def _qref(X, seed):
    pq = vq.ProductQuantizer(M=M, Ks=KS, init="random", max_iter=ITERS, tol=0, rng=seed).fit(X)
    return pq.decode(pq.encode(X))


def _faiss(X, seed):
    import faiss

    pq = faiss.ProductQuantizer(X.shape[1], M, int(np.log2(KS)))
    pq.cp.niter = ITERS
    pq.cp.seed = seed
    pq.cp.max_points_per_centroid = X.shape[0] // KS + 1  # use every vector, as the others do
    pq.train(X)
    return pq.decode(pq.compute_codes(X))


def _nanopq(X, seed):
    import nanopq

    pq = nanopq.PQ(M=M, Ks=KS, verbose=False).fit(X, iter=ITERS, seed=seed)
    return pq.decode(pq.encode(X))


def _available(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def run(n=N, repeats=REPEATS, seed=0):
    """Time train + encode of the three; return a list of rows (see ``benchmarks/run.py``)."""
    if not _available("faiss"):
        return []
    X = np.random.default_rng(seed).standard_normal((n, D), dtype=np.float32)
    _qref(X[:2 * KS], seed)  # warm-up: load the numba kernels from the cache (or compile them)
    cands = {"qref": lambda: _qref(X, seed), "faiss": lambda: _faiss(X, seed)}
    if _available("nanopq"):
        cands["nanopq"] = lambda: _nanopq(X, seed)
    t, out = _best_of(cands, repeats)
    mse = {k: float(np.mean(((X - v) ** 2).sum(1))) for k, v in out.items()}
    rel = mse["qref"] / mse["faiss"]
    what = f"PQ train+encode, {n // 1000}k x {D} float32, M={M}, Ks={KS}, {ITERS} iter"
    rows = [_row(what, t["qref"], "faiss ProductQuantizer", t["faiss"], 1.5,
                 f"distortion qref/faiss {rel:.4f} (target <= 1.01): {mse['qref']:.3f} vs {mse['faiss']:.3f}")]
    if "nanopq" in t:
        rows.append(_row(what, t["qref"], "nanopq PQ", t["nanopq"], None,
                         f"distortion nanopq/faiss {mse['nanopq'] / mse['faiss']:.4f}"))
    return rows


main = run

if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']}: qref {r['qref_s']:.2f} s vs {r['baseline']} {r['baseline_s']:.2f} s, "
              f"ratio {r['ratio']:.2f} (target {r['target']}); {r['note']}")
