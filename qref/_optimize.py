"""One-dimensional minimisation shared by the modules that tune a clip or a threshold."""

from __future__ import annotations

import math


def golden_section_min(f, a, b, *, tol):
    """Minimiser of a unimodal ``f`` on ``[a, b]`` by golden-section search (Kiefer 1953).

    Stops when the bracket is shorter than ``tol * max(1, |a| + |b|)`` (relative for large
    arguments, absolute below 1) and returns its midpoint. To maximise, minimise ``-f``.
    """
    invphi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - invphi * (b - a), a + invphi * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol * max(1.0, abs(a) + abs(b)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - invphi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + invphi * (b - a)
            fd = f(d)
    return 0.5 * (a + b)
