"""Speed of training with :mod:`qref.nn`: one epoch of ``small_cnn`` on the digits.

One epoch = 1347 training images of 8x8 in minibatches of 64 (22 steps of forward, backward
and an Adam update), timed three ways:

* float32 ``qref.nn.small_cnn``;
* the same network with 8-bit fake quantization of every weight and of the activations after
  each ReLU (straight-through backward): ``qref.qat.MinMaxFakeQuantize`` /
  ``qref.qat.EMAFakeQuantize`` when :mod:`qref.qat` provides them, else ``qref.nn.FakeQuantize``
  (the *target*: at most 1.5x the float epoch);
* the same architecture in PyTorch on the CPU (``torch.nn``, Adam), with as many threads as
  :func:`qref.nn.fit` gives the BLAS (one, its default), when torch is installed.

Each epoch trains a fresh copy of the model (so every timed call does the same work), in the
same shuffled order. Best of ``repeats`` after a warm-up epoch, candidates timed interleaved
(see ``bench_uniform._best_of``).

Run it alone with ``python benchmarks/bench_nn.py`` or through ``python benchmarks/run.py``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_uniform import _best_of, _row  # noqa: E402

from qref import nn  # noqa: E402
from qref.data import load_digits  # noqa: E402

REPEATS = 5
BATCH = 64
THREADS = 1  #: BLAS threads of qref.nn.fit (its default) and torch threads


def _quantizer_factories(bits=8):
    """(weight, activation) quantizer factories: qref.qat's if present, else nn.FakeQuantize."""
    try:
        from qref import qat

        w, a = qat.MinMaxFakeQuantize, qat.EMAFakeQuantize
        return (lambda i: w(bits)), (lambda i: a(bits)), "qat.MinMaxFakeQuantize / qat.EMAFakeQuantize"
    except (ImportError, AttributeError):
        return ((lambda i: nn.FakeQuantize(bits, symmetric=True)), (lambda i: nn.FakeQuantize(bits)),
                "nn.FakeQuantize")


def _qref_epoch(model, X, y):
    """A callable training a fresh copy of ``model`` for one epoch."""
    def epoch():
        m = copy.deepcopy(model)
        nn.fit(m, X, y, epochs=1, batch_size=BATCH, optimizer=nn.Adam(m.parameters(), lr=1e-2), rng=0,
               progress=False, blas_threads=THREADS)
    return epoch


def _torch_epoch(X, y):
    import torch

    torch.set_num_threads(THREADS)
    tnn = torch.nn
    model = tnn.Sequential(
        tnn.Conv2d(1, 16, 3, padding=1), tnn.BatchNorm2d(16), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(16, 32, 3, padding=1), tnn.BatchNorm2d(32), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(128, 10),
    )
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(X)))
    loss_fn = tnn.CrossEntropyLoss()

    def epoch():
        m = copy.deepcopy(model).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for start in range(0, len(X), BATCH):
            idx = order[start:start + BATCH]
            opt.zero_grad()
            loss = loss_fn(m(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return epoch, torch.__version__


def run(repeats=REPEATS):
    """Time one training epoch each way; return a list of rows (see ``benchmarks/run.py``)."""
    d = load_digits()
    X, y = np.ascontiguousarray(d.X_train.reshape(-1, 1, 8, 8)), d.y_train
    wq, aq, qname = _quantizer_factories()
    candidates = {
        "float": _qref_epoch(nn.small_cnn(rng=0), X, y),
        "fq": _qref_epoch(nn.small_cnn(rng=0, weight_quantizer=wq, activation_quantizer=aq), X, y),
    }
    torch_version = None
    try:
        candidates["torch"], torch_version = _torch_epoch(X, y)
    except ImportError:
        pass
    t = _best_of(candidates, repeats, settle=0.05)
    steps = -(-len(X) // BATCH)
    what = f"small_cnn epoch ({len(X)} digits, batch {BATCH}, {steps} Adam steps)"
    rows = [_row(f"{what}, W8A8 fake quant", t["fq"], "float32 epoch", t["float"], 1.5,
                 f"{qname}, straight-through backward; {THREADS} BLAS thread")]
    if torch_version is not None:
        rows.append(_row(f"{what}, float32", t["float"], f"PyTorch {torch_version} CPU", t["torch"], None,
                         f"same network and batches; {THREADS} thread each"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:75s} {r['qref_s'] * 1e3:8.1f} ms  vs {r['baseline']:26s} "
              f"{r['baseline_s'] * 1e3:8.1f} ms  ratio {r['ratio']:5.2f}")
