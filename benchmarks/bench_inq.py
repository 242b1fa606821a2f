"""Cost of INQ and CLIP-Q on top of plain training, and of one CLIP-Q compression.

* INQ (``qref.inq.incremental_quantization``, 5 bits, the paper's schedule, 3 epochs per
  step) on the digits MLP, against ``nn.fit`` for the same 9 epochs: the overhead of
  partitioning, quantizing and the eight accuracy evaluations (*target*: within 2x).
* CLIP-Q fine-tuning (``qref.pruning.clip_q_train``, p = 0.9, b = 3, 6 epochs), which
  compresses every weight layer at every minibatch, against ``nn.fit`` for 6 epochs
  (*target*: within 4x: a clip, a partition and a gather per layer and minibatch).
* ``qref.pruning.clip_q_quantize`` on 1M float32 weights against ``np.sort`` of the same
  array, the floor of a method that ranks the weights (*target*: within 8x; the selection
  itself is O(n) with ``np.partition``, the rest is a dozen passes of masks and gathers).

Timing is best-of-``repeats``, candidates interleaved as in ``bench_uniform.py``. Run it
alone with ``python benchmarks/bench_inq.py`` or through ``python benchmarks/run.py``.
"""

from __future__ import annotations

import copy

import numpy as np

from qref import data, inq, nn, pruning

from bench_uniform import _best_of, _row

REPEATS = 5


def _trained():
    d = data.load_digits()
    net = nn.mlp((64,), rng=0)
    nn.fit(net, d.X_train, d.y_train, epochs=30, progress=False,
           optimizer=nn.SGD(net.parameters(), lr=0.05, momentum=0.9))
    return d, net


def run(repeats=REPEATS):
    """Time INQ, CLIP-Q and one compression; return rows (see ``benchmarks/run.py``)."""
    d, net = _trained()
    X, y = d.X_train, d.y_train

    def fit(epochs):
        m = copy.deepcopy(net)
        nn.fit(m, X, y, epochs=epochs, optimizer=nn.SGD(m.parameters(), lr=0.01, momentum=0.9), progress=False)

    t = _best_of({
        "inq": lambda: inq.incremental_quantization(net, X, y, bits=5, epochs=3, X_val=d.X_test, y_val=d.y_test),
        "fit9": lambda: fit(9),
        "clipq": lambda: pruning.clip_q_train(net, X, y, config=(0.9, 3), epochs=6),
        "fit6": lambda: fit(6),
    }, repeats)
    w = np.random.default_rng(0).normal(size=1 << 20).astype(np.float32)
    s = _best_of({"clip_q": lambda: pruning.clip_q_quantize(w, p=0.9, bits=3), "sort": lambda: np.sort(w)}, repeats)
    return [
        _row("INQ 5-bit, digits MLP, 4 steps x 3 epochs", t["inq"], "nn.fit 9 epochs", t["fit9"], 2.0),
        _row("CLIP-Q p=0.9 b=3, digits MLP, 6 epochs", t["clipq"], "nn.fit 6 epochs", t["fit6"], 4.0),
        _row("clip_q_quantize, 1M float32, p=0.9 b=3", s["clip_q"], "np.sort", s["sort"], 8.0),
    ]


def main():
    """Print the rows."""
    for r in run():
        print(f"{r['benchmark']:45s} {r['qref_s'] * 1e3:8.1f} ms vs {r['baseline']:16s} "
              f"{r['baseline_s'] * 1e3:8.1f} ms  ratio {r['ratio']:.2f} (target {r['target']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
