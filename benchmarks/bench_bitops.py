"""Speed of the XNOR-popcount ±1 matrix product against a float32 matrix product.

``C = A @ B.T`` for ±1 matrices A (2048 x 2048) and B (2048 x 2048):

* qref: :func:`qref.bitops.binary_matmul` on rows packed 64 to a ``uint64`` word
  (one XOR and one POPCNT per 64 multiply-adds), exact int64 result;
* baseline: ``numpy.matmul`` of the same ±1 matrices in float32 (BLAS, all cores).

The target is a ratio of at most 0.1 (the packed product >= 10x faster). Packing both matrices
(:func:`qref.bitops.pack_bits`) is timed separately: a network packs its weights once, and its
activations once per layer. Each result is checked against the float product first.
Timing as in ``bench_uniform.py``: best of ``repeats``, candidates interleaved, but with a
longer pause before each call (``SETTLE_S``).

The third row times both products writing into preallocated outputs (``out=``, as a layer
that reuses its buffer would): a fresh 2048 x 2048 int64 result is 32 MB of new pages that the
kernel must first-touch, which on the 2-vCPU benchmark machine costs about as much as the
popcounts themselves (the float product's fresh result is 16 MB). The fourth row uses an int32
``out`` (exact for n < 2**31; the same 4 bytes per entry as the float32 baseline).
"""

from __future__ import annotations

import numpy as np

from qref import bitops

try:
    from bench_uniform import _best_of, _row
except ImportError:  # pragma: no cover - run from another directory
    from benchmarks.bench_uniform import _best_of, _row

SIZE = 2048
REPEATS = 7
#: untimed pause before each timed call. bench_uniform's 0.03 s is too short here: after a
#: float32 product OpenBLAS's threads keep spinning for longer, and measured on the shared
#: 2-vCPU machine the next call ran 2-3x slower with 0.03 s (~40-65 ms) than with 0.3 s (~17 ms).
SETTLE_S = 0.3


def run(size=SIZE, repeats=REPEATS, seed=0):
    """Time the packed and the float32 product; return a list of rows (see ``benchmarks/run.py``)."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((size, size)) < 0.5, -1, 1).astype(np.int8)
    b = np.where(rng.random((size, size)) < 0.5, -1, 1).astype(np.int8)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    pa, pb = bitops.pack_bits(a), bitops.pack_bits(b)
    if not np.array_equal(bitops.binary_matmul(pa, pb, size), af @ bf.T):
        raise AssertionError("binary_matmul differs from the float32 product")
    out64, out32 = np.empty((size, size), np.int64), np.empty((size, size), np.int32)
    outf, bft = np.empty((size, size), np.float32), bf.T
    for out in (out64, out32):
        bitops.binary_matmul(pa, pb, size, out=out)
        if not np.array_equal(out, af @ bf.T):
            raise AssertionError(f"binary_matmul(out={out.dtype}) differs from the float32 product")
    t = _best_of(
        {
            "xnor": lambda: bitops.binary_matmul(pa, pb, size),
            "float32": lambda: af @ bf.T,
            "xnor_out": lambda: bitops.binary_matmul(pa, pb, size, out=out64),
            "xnor_out32": lambda: bitops.binary_matmul(pa, pb, size, out=out32),
            "float32_out": lambda: np.matmul(af, bft, out=outf),
            "pack": lambda: (bitops.pack_bits(a), bitops.pack_bits(b)),
        },
        repeats,
        settle=SETTLE_S,
    )
    shape = f"{size}x{size} by {size}x{size}"
    return [
        _row(f"±1 matmul {shape}, XNOR-popcount", t["xnor"], "float32 numpy.matmul", t["float32"], 0.1,
             f"{t['float32'] / t['xnor']:.1f}x faster; packing excluded"),
        _row(f"±1 matmul {shape}, pack + XNOR-popcount", t["xnor"] + t["pack"], "float32 numpy.matmul",
             t["float32"], None, f"packing both int8 operands: {t['pack'] * 1e3:.1f} ms"),
        _row(f"±1 matmul {shape}, XNOR-popcount, out=int64", t["xnor_out"], "float32 matmul, out=",
             t["float32_out"], None, f"{t['float32_out'] / t['xnor_out']:.1f}x faster; preallocated outputs"),
        _row(f"±1 matmul {shape}, XNOR-popcount, out=int32", t["xnor_out32"], "float32 matmul, out=",
             t["float32_out"], None, f"{t['float32_out'] / t['xnor_out32']:.1f}x faster; preallocated outputs"),
    ]


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:62s} {r['qref_s'] * 1e3:8.2f} ms  vs {r['baseline']:22s} "
              f"{r['baseline_s'] * 1e3:8.2f} ms  ratio {r['ratio']:5.3f}  {r['note']}")
