"""Speed of the uniform-quantization hot kernels against the memory-bandwidth floor.

Fake-quantize and quantize + dequantize 16M float32 values (one 64 MB array; per-tensor,
8-bit, asymmetric, round half to even), compared with

* ``np.copyto(dst, x)`` into a preallocated array: one read and one write of the same
  bytes, the floor for any elementwise kernel (the *target*: fake-quantize within 2x of it);
* ``x.copy()``: the same copy into a fresh array, the floor for calls that return a new
  array (a fresh 64 MB array is above glibc's largest reusable heap block, so the kernel
  hands it zero-filled pages on first touch: one extra write pass that no kernel avoids);
* the plain numpy expression ``(np.clip(np.rint(x * inv_s) + z, qmin, qmax) - z) * s``
  (five passes over memory and four temporaries).

Timing is best-of-``repeats`` after a warm-up call (which compiles the numba kernels or loads
them from numba's cache). The candidates are timed *interleaved* (one call of each per round,
with a short untimed pause before each), so a burst of load from other processes hits all of
them alike and the ratios stay fair on a shared machine. Each result is checked bit for bit
against the numpy expression first.

Run it alone with ``python benchmarks/bench_uniform.py`` or with every benchmark through
``python benchmarks/run.py``.
"""

from __future__ import annotations

import time

import numpy as np

from qref import uniform

N = 1 << 24  #: 16M float32 values, 64 MB: far larger than the caches
SMALL = 1 << 16  #: an array the size a live figure quantizes (serial kernel path)
REPEATS = 7
SETTLE_S = 0.03  #: untimed pause before each timed call


def _best_of(candidates, repeats, settle=SETTLE_S):
    """Best wall time of each zero-argument callable, timed in interleaved rounds.

    After each call the benchmark sleeps ``settle`` seconds (untimed): numba's OpenMP worker
    threads spin for a few milliseconds after a parallel call, and a single-threaded baseline
    timed right after one would share the cores with them.
    """
    for f in candidates.values():  # warm-up: compile / load the kernels, fault the pages in
        f()
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeats):
        for name, f in candidates.items():
            time.sleep(settle)
            t = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def _row(benchmark, qref_s, baseline, baseline_s, target=None, note=""):
    return dict(benchmark=benchmark, qref_s=qref_s, baseline=baseline, baseline_s=baseline_s,
                ratio=qref_s / baseline_s, target=target, note=note)


def _numpy_reference(x, params):
    """The same computation as plain numpy expressions, in float32 (bit-identical to qref)."""
    s = np.float32(params.scale)
    inv_s = np.float32(1.0) / s
    z = np.float32(params.zero_point)
    qmin, qmax = np.float32(params.qmin), np.float32(params.qmax)

    def fake_quantize():
        return (np.clip(np.rint(x * inv_s) + z, qmin, qmax) - z) * s

    def quantize_dequantize():
        q = np.clip(np.rint(x * inv_s) + z, qmin, qmax).astype(params.dtype)
        return (q.astype(np.float32) - z) * s

    return fake_quantize, quantize_dequantize


def run(n=N, repeats=REPEATS, seed=0):
    """Time the kernels; return a list of rows (see ``benchmarks/run.py``)."""
    x = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
    params = uniform.params_from_data(x, bits=8)
    np_fq, np_qdq = _numpy_reference(x, params)

    # the benchmark must time the computation it claims to: check bit-identity first
    if uniform.fake_quantize(x, params).tobytes() != np_fq().tobytes():
        raise AssertionError("qref.uniform.fake_quantize differs from the numpy expression")
    qdq = uniform.dequantize(uniform.quantize(x, params), params)
    if qdq.tobytes() != np_qdq().tobytes():
        raise AssertionError("qref quantize + dequantize differs from the numpy expressions")
    del qdq

    dst = np.empty_like(x)
    out = np.empty_like(x)
    codes = np.empty(n, dtype=params.dtype)
    t = _best_of(
        {
            "copyto": lambda: np.copyto(dst, x),
            "copy": lambda: x.copy(),
            "numpy fq": np_fq,
            "numpy q+dq": np_qdq,
            "fq": lambda: uniform.fake_quantize(x, params),
            "fq out": lambda: uniform.fake_quantize(x, params, out=out),
            "q+dq": lambda: uniform.dequantize(uniform.quantize(x, params), params),
            "q out": lambda: uniform.quantize(x, params, out=codes),
            "dq": lambda: uniform.dequantize(codes, params),
        },
        repeats,
    )
    size = f"{n / 2**20:g}M float32"
    copyto = "np.copyto (preallocated)"
    rows = [
        _row(f"fake_quantize, {size}, fresh output", t["fq"], copyto, t["copyto"], 2.0,
             "the default call; pays the zero-fill of a fresh output (see x.copy() row)"),
        _row(f"fake_quantize, {size}, out=", t["fq out"], copyto, t["copyto"], 2.0,
             "same work as the copy: read x, write out"),
        _row(f"fake_quantize, {size}, fresh output", t["fq"], "x.copy() (fresh output)", t["copy"], None,
             "both pay the page faults of a new 64 MB array"),
        _row(f"fake_quantize, {size}, fresh output", t["fq"], "numpy expression", t["numpy fq"], None,
             f"the numpy expression alone is {t['numpy fq'] / t['copyto']:.1f}x the copy"),
        _row(f"quantize + dequantize, {size}", t["q+dq"], copyto, t["copyto"], None,
             "two calls, an int8 intermediate, fresh outputs"),
        _row(f"quantize + dequantize, {size}", t["q+dq"], "numpy expressions", t["numpy q+dq"], None, ""),
        _row(f"quantize to int8, {size}, out=", t["q out"], copyto, t["copyto"], None,
             "writes 1 byte per value instead of 4"),
        _row(f"dequantize int8, {size}, fresh output", t["dq"], copyto, t["copyto"], None,
             "reads 1 byte per value; the range check is in the same pass"),
    ]

    # a small array, the size a live figure quantizes: one thread, no thread start-up
    xs = x[:SMALL].copy()
    ps = uniform.params_from_data(xs, bits=8)
    np_fq_small, _ = _numpy_reference(xs, ps)
    ts = _best_of({"fq": lambda: uniform.fake_quantize(xs, ps), "numpy fq": np_fq_small}, 20 * repeats, settle=0.002)
    rows.append(_row(f"fake_quantize, {SMALL // 1024}K float32, fresh output", ts["fq"], "numpy expression",
                     ts["numpy fq"], None, "latency of one small call (serial kernel)"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:45s} {r['qref_s'] * 1e3:8.2f} ms  vs {r['baseline']:26s} "
              f"{r['baseline_s'] * 1e3:8.2f} ms  ratio {r['ratio']:5.2f}")
