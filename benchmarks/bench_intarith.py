"""Speed of the int8 x int8 -> int32 GEMM (qref.intarith.int8_gemm) against float32 BLAS.

A 1024 x 1024 x 1024 product, int8 codes with int32 accumulation, compared with
``numpy.matmul`` on float32 arrays of the same shape (multi-threaded BLAS) -- the *target* is
parity (ratio <= 1) -- timed in interleaved rounds in one process. Rows:

* ``int8_gemm`` as used (numba): on an AVX2 host the VPMADDWD kernel (operands widened to
  int16 and zero-padded, 4 x 2 register tiles of 8-lane int32 accumulators, 16 multiply-adds
  per instruction; ``intarith.HAVE_MADD_KERNEL``), else the portable kernel;
* the portable kernel alone (LLVM's auto-vectorization of the 4 x 2 tile loop: sign extensions
  and ``vpmulld`` / ``vpaddd`` on 8 int32 lanes, half the multiply-adds per instruction);
* for reference, the numpy twin (an int32 ``matmul`` of the widened arrays; numpy has no
  integer BLAS, so this is a plain loop).

Honest caveats: on AVX2 without VNNI, VPMADDWD gives 16 multiply-adds per instruction against
8 per float32 FMA, so parity with BLAS is reachable but not a large margin; the packing (a
widened, padded copy of both operands) is included in the time. The result of every
candidate is checked against the exact product first.

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

    bt = np.ascontiguousarray(b.T)

    def portable():
        out = np.empty((n, n), dtype=np.int32)
        intarith._int8_gemm_tiles_nb(a, bt, out)
        return out

    candidates = {"int8": lambda: intarith.int8_gemm(a, b), "sgemm": lambda: np.matmul(af, bf)}
    if USE_NUMBA:
        if not np.array_equal(portable(), exact):
            raise AssertionError("the portable kernel differs from the exact product")
        candidates["portable"] = portable
    t = _best_of(candidates, repeats)
    t_np = _best_of({"twin": lambda: intarith._int8_gemm_np(a, b)}, 1)["twin"]
    shape = f"{n}x{n}x{n}"
    path = "VPMADDWD kernel" if intarith.HAVE_MADD_KERNEL else "numba kernel"
    path = path if USE_NUMBA else "numpy twin (numba off)"
    gops = 2 * n**3 / 1e9
    rows = [
        _row(f"int8 GEMM {shape}, int32 accumulation ({path})", t["int8"], "float32 numpy.matmul (BLAS)",
             t["sgemm"], 1.0, f"{gops / t['int8']:.0f} GOPS int8 vs {gops / t['sgemm']:.0f} GFLOPS float32"),
    ]
    if USE_NUMBA:
        rows.append(_row(f"int8 GEMM {shape}, portable numba kernel", t["portable"], "float32 numpy.matmul (BLAS)",
                         t["sgemm"], None, "LLVM auto-vectorized 4 x 2 tiles (the readable twin)"))
    rows.append(_row(f"int8 GEMM {shape}, int32 accumulation ({path})", t["int8"], "numpy twin (int32 matmul)",
                     t_np, None, "numpy's integer matmul has no BLAS"))
    return rows

if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:55s} {r['qref_s'] * 1e3:8.2f} ms  vs {r['baseline']:28s} "
              f"{r['baseline_s'] * 1e3:8.2f} ms  ratio {r['ratio']:5.2f}  {r['note']}")
