"""KL (entropy) calibration over a 2048-bin histogram, the TensorRT recipe, must be interactive.

``qref.calibration.kl_threshold`` searches every candidate threshold (bins 128..2048 for 8
bits), and for each one merges the clipped histogram into 128 bins, expands it back and
measures the KL divergence: the search a calibration widget re-runs when the reader changes a
layer or the bit width. Target: well under 100 ms (a widget update budget), reported against
that budget as the baseline. A second row times the whole ``kl_range`` (histogram of 1M
activations + search) against ``np.histogram`` alone, the unavoidable part.
"""

from __future__ import annotations

import numpy as np

from qref import calibration

from bench_uniform import _best_of, _row

N = 1_000_000
BINS = 2048
REPEATS = 5
BUDGET_S = 0.100  #: one widget update


def run(n=N, repeats=REPEATS, seed=0):
    """Time the KL search; return a list of rows (see ``benchmarks/run.py``)."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.laplace(0.0, 1.0, n), 0.0).astype(np.float32)  # ReLU activations
    hist, edges = np.histogram(x, bins=BINS, range=(0.0, float(x.max())))
    width = float(edges[1] - edges[0])
    t = _best_of({
        "kl_threshold": lambda: calibration.kl_threshold(hist, bits=8, bin_width=width),
        "kl_range": lambda: calibration.kl_range(x, bits=8, n_bins=BINS),
        "histogram": lambda: np.histogram(x, bins=BINS, range=(0.0, float(x.max()))),
    }, repeats)
    threshold = calibration.kl_threshold(hist, bits=8, bin_width=width)
    return [
        _row(f"KL calibration search, {BINS}-bin histogram, 8 bits", t["kl_threshold"],
             "budget of one widget update", BUDGET_S, target=0.5,
             note=f"threshold {float(np.max(threshold)):.3g} of max {float(x.max()):.3g}"),
        _row(f"kl_range on 1M float32 activations ({BINS} bins)", t["kl_range"],
             "np.histogram alone", t["histogram"],
             note="histogram + search"),
    ]


if __name__ == "__main__":  # pragma: no cover
    for r in run():
        print(f"{r['benchmark']}: {r['qref_s'] * 1e3:.1f} ms vs {r['baseline']} "
              f"{r['baseline_s'] * 1e3:.1f} ms (ratio {r['ratio']:.2f})")
