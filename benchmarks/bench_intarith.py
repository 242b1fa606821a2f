"""Speed of the int8 x int8 -> int32 GEMM (qref.intarith.int8_gemm) against float32 BLAS.

A 1024 x 1024 x 1024 product, int8 codes with int32 accumulation (the numba kernel: rows in
parallel, 4 x 2 register tiles, blocks of columns), compared with ``numpy.matmul`` on float32
arrays of the same shape (multi-threaded BLAS) -- the *target* is parity (ratio <= 1) -- and,
for reference, with the numpy twin (an int32 ``matmul`` of the widened arrays; numpy has no
integer BLAS, so this is a plain loop).

Honest caveats: the numba kernel relies on LLVM's auto-vectorization of an int8 dot product.
With the 8 accumulators of a 4 x 2 tile LLVM emits sign-extensions and ``vpmulld`` / ``vpaddd``
on 8 int32 lanes (checked on AVX2: no ``vpmaddwd``, which it does use for a single-accumulator
dot product, but that variant measured slower). That is half the multiply-adds per cycle of two
float32 FMA units, so on an AVX2 machine without VNNI the kernel is expected at 1-2x the time of
float32 BLAS, not at parity. The result of
every candidate is checked against the exact product first.

Run it alone with ``python benchmarks/bench_intarith.py`` or through ``python benchmarks/run.py``.
"""

from __future__ import annotations


import numpy as np

from qref import intarith
from qref._numba import USE_NUMBA

try:
    from bench_uniform import _best_of, _row
except ImportError:  # pragma: no cover - run from another directory
    from benchmarks.bench_uniform import _best_of, _row

N = 1024
REPEATS = 7
def run(n=N, repeats=REPEATS, seed=0):
    """Time the GEMMs; return a list of rows (see ``benchmarks/run.py``)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, size=(n, n)).astype(np.int8)
    b = rng.integers(-128, 128, size=(n, n)).astype(np.int8)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    exact = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)  # exact: |sums| < 2**53

    if not np.array_equal(intarith.int8_gemm(a, b), exact):
        raise AssertionError("qref.intarith.int8_gemm differs from the exact product")
    if not np.array_equal(intarith._int8_gemm_np(a, b), exact):
        raise AssertionError("the numpy twin differs from the exact product")

    t = _best_of({"int8": lambda: intarith.int8_gemm(a, b), "sgemm": lambda: np.matmul(af, bf)}, repeats)
    t_np = _best_of({"twin": lambda: intarith._int8_gemm_np(a, b)}, 1)["twin"]
    shape = f"{n}x{n}x{n}"
    path = "numba kernel" if USE_NUMBA else "numpy twin (numba off)"
    gops = 2 * n**3 / 1e9
    return [
        _row(f"int8 GEMM {shape}, int32 accumulation ({path})", t["int8"], "float32 numpy.matmul (BLAS)",
             t["sgemm"], 1.0, f"{gops / t['int8']:.0f} GOPS int8 vs {gops / t['sgemm']:.0f} GFLOPS float32"),
        _row(f"int8 GEMM {shape}, int32 accumulation ({path})", t["int8"], "numpy twin (int32 matmul)",
             t_np, None, "numpy's integer matmul has no BLAS"),
    ]


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:55s} {r['qref_s'] * 1e3:8.2f} ms  vs {r['baseline']:28s} "
              f"{r['baseline_s'] * 1e3:8.2f} ms  ratio {r['ratio']:5.2f}  {r['note']}")
