"""Speed of qref.mixed: exact Hessian-vector products and the Pareto-frontier bit allocation.

* ``LayerHessian.matvec`` on the first layer of a 64-64-32-10 MLP over the 1,437 digits
  training examples, against one forward + backward pass of the loss (``nn.backprop``), the
  unit of cost of any Hessian-vector product (double backpropagation, as HAWQ uses, costs about
  two). Target: within 3x of one gradient.
* ``pareto_frontier`` for 6 layers and 7 bit widths against brute force over all 7^6 = 117,649
  allocations (numpy, vectorized), the baseline it replaces. Target: faster than brute force.

Run it alone with ``python benchmarks/bench_mixed.py`` or with every benchmark through
``python benchmarks/run.py`` (which finds every ``bench_*.py``).
"""

from __future__ import annotations

import itertools

import numpy as np

from qref import data, mixed, nn

from bench_uniform import _best_of, _row

REPEATS = 7


def _brute(omega, sizes, options):
    """Minimum total sensitivity for every possible size, by listing all allocations."""
    L, K = omega.shape
    idx = np.array(list(itertools.product(range(K), repeat=L)))
    cost = (np.asarray(options)[idx] * sizes).sum(1)
    total = omega[np.arange(L), idx].sum(1)
    return cost, total


def run(repeats=REPEATS):
    """The rows of this benchmark (see benchmarks/run.py)."""
    rows = []
    d = data.load_digits()
    net = nn.mlp((64, 32), rng=0)
    with nn._blas_limit(1):
        H = mixed.LayerHessian(net, d.X_train)
        v = np.random.default_rng(0).choice([-1.0, 1.0], size=int(H.sizes[0]))
        net64 = nn.mlp((64, 32), rng=0).astype(np.float64)
        X64 = d.X_train.astype(np.float64)
        loss = nn.SoftmaxCrossEntropy()
        best = _best_of({"hvp": lambda: H.matvec(0, v), "grad": lambda: nn.backprop(net64, X64, d.y_train, loss)},
                        repeats=repeats)
    rows.append(_row("LayerHessian.matvec, 4096 weights, N = 1437", best["hvp"], "one float64 gradient",
                     best["grad"], target=3.0))

    rng = np.random.default_rng(0)
    omega = rng.exponential(size=(6, 7))
    sizes = rng.integers(100, 5000, 6)
    options = [2, 3, 4, 5, 6, 7, 8]
    best = _best_of({"dp": lambda: mixed.pareto_frontier(omega, sizes, options),
                     "brute": lambda: _brute(omega, sizes, options)}, repeats=max(1, repeats // 2))
    rows.append(_row("pareto_frontier, L = 6, K = 7", best["dp"], "brute force over 7^6", best["brute"], target=1.0))
    return rows


main = run


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']:45s} qref {r['qref_s'] * 1e3:8.2f} ms  {r['baseline']:22s} "
              f"{r['baseline_s'] * 1e3:8.2f} ms  ratio {r['ratio']:.2f} (target {r['target']})")
