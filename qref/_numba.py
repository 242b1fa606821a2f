"""The one place where qref decides whether numba accelerates its hot kernels.

Every kernel in qref has two twins:

* a **numpy twin**, the readable definition (the one to read next to the paper), and
* a **numba twin**, the fast one, compiled with :func:`njit` below.

``njit`` compiles with numba when numba is importable and falls back to the plain
Python function otherwise, so ``import qref`` works with numpy alone. With the
environment variable ``NUMBA_DISABLE_JIT=1`` numba itself runs the kernels as Python.
Tests hold the twins equal on the same inputs (``tests/test_twins.py``).

``HAVE_NUMBA`` tells whether the kernels are compiled; ``USE_NUMBA`` is what the public
functions consult to pick a twin. Both are read-only facts about the environment, not
switches that change results.
"""

from __future__ import annotations

import os

try:  # numba is an optional dependency (the `fast` extra)
    import numba as _numba
except ImportError:  # pragma: no cover - exercised by the numpy-only CI job
    _numba = None

HAVE_NUMBA = _numba is not None
#: False when numba is missing or disabled with NUMBA_DISABLE_JIT=1: the numpy twins run.
USE_NUMBA = HAVE_NUMBA and os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")

if HAVE_NUMBA:
    prange = _numba.prange

    def njit(*args, **kwargs):
        """``numba.njit`` with qref's defaults (cached compilation, fast-math off)."""
        kwargs.setdefault("cache", True)
        kwargs.setdefault("nogil", True)
        return _numba.njit(*args, **kwargs)

else:  # pragma: no cover
    prange = range

    def njit(*args, **kwargs):
        """Without numba, a kernel is its own Python function."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f
