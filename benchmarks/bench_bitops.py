"""Speed of the XNOR-popcount ±1 matrix product against a float32 matrix product.

``C = A @ B.T`` for ±1 matrices A (2048 x 2048) and B (2048 x 2048):

* qref: :func:`qref.bitops.binary_matmul` on rows packed 64 to a ``uint64`` word
  (one XOR and one POPCNT per 64 multiply-adds), exact int64 result;
* baseline: ``numpy.matmul`` of the same ±1 matrices in float32 (BLAS, all cores).

The target is a ratio of at most 0.1 (the packed product >= 10x faster). Packing both matrices
(:func:`qref.bitops.pack_bits`) is timed separately: a network packs its weights once, and its
activations once per layer. Each result is checked against the float product first.
Timing as in ``bench_uniform.py``: best of ``repeats``, candidates interleaved.
"""

from __future__ import annotations

import numpy as np

from qref import bitops

try:
    from bench_uniform import _best_of, _row
except ImportError:  # pragma: no cover - run from another directory
    from benchmarks.bench_uniform import _best_of, _row

SIZE = 2048
REPEATS = 5


def run(size=SIZE, repeats=REPEATS, seed=0):
    """Time the packed and the float32 product; return a list of rows (see ``benchmarks/run.py``)."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((size, size)) < 0.5, -1, 1).astype(np.int8)
    b = np.where(rng.random((size, size)) < 0.5, -1, 1).astype(np.int8)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    pa, pb = bitops.pack_bits(a), bitops.pack_bits(b)
    if not np.array_equal(bitops.binary_matmul(pa, pb, size), af @ bf.T):
        raise AssertionError("binary_matmul differs from the float32 product")
    t = _best_of(
        {
            "xnor": lambda: bitops.binary_matmul(pa, pb, size),
            "float32": lambda: af @ bf.T,
            "pack": lambda: (bitops.pack_bits(a), bitops.pack_bits(b)),
        },
        repeats,
    )
    shape = f"{size}x{size} by {size}x{size}"
    return [
        _row(f"±1 matmul {shape}, XNOR-popcount", t["xnor"], "float32 numpy.matmul", t["float32"], 0.1,
             f"{t['float32'] / t['xnor']:.1f}x faster; packing excluded"),
        _row(f"±1 matmul {shape}, pack + XNOR-popcount", t["xnor"] + t["pack"], "float32 numpy.matmul",
             t["float32"], None, f"packing both int8 operands: {t['pack'] * 1e3:.1f} ms"),
    ]


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:50s} {r['qref_s'] * 1e3:8.2f} ms  vs {r['baseline']:22s} "
              f"{r['baseline_s'] * 1e3:8.2f} ms  ratio {r['ratio']:5.3f}  {r['note']}")
