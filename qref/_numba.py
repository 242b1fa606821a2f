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

:func:`tile_intrinsic` builds the hand-vectorised register-tile kernels (an LLVM vector
intrinsic numba cannot express) that :mod:`qref.bitops` and :mod:`qref.intarith` share; it
imports llvmlite only when called, so this module imports without numba.
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


class TileCodegen:
    """What a register-tile intrinsic's code generator works with (see :func:`tile_intrinsic`).

    Attributes
    ----------
    ir, cgutils : modules
        ``llvmlite.ir`` and ``numba.core.cgutils``.
    context, builder :
        numba's target context and the ``llvmlite.ir.IRBuilder`` of the kernel.
    nvec : llvmlite value (i64)
        Vectors per row: the length of a row of ``a`` divided by ``vector_elems``.
    rows_a, rows_b : list of llvmlite pointers
        Element 0 of rows ``i0 + r`` of ``a`` (``r < tile_a``) and ``j0 + c`` of ``b`` (``c < tile_b``).
    """

    def __init__(self, ir, cgutils, types, context, builder, signature, args, tile_a, tile_b, vector_elems):
        self.ir, self.cgutils, self.context, self.builder = ir, cgutils, context, builder
        self.i64 = ir.IntType(64)
        arr_a = context.make_array(signature.args[0])(context, builder, args[0])
        arr_b = context.make_array(signature.args[1])(context, builder, args[1])
        row_len = builder.extract_value(arr_a.shape, 1)  # elements per row (a and b alike)
        self.nvec = builder.sdiv(row_len, self.const(vector_elems))
        i0, j0 = (context.cast(builder, x, t, types.int64) for x, t in zip(args[2:], signature.args[2:]))

        def row(arr, first, d):  # pointer to element 0 of row first + d
            return builder.gep(arr.data, [builder.mul(builder.add(first, self.const(d)), row_len)])

        self.rows_a = [row(arr_a, i0, r) for r in range(tile_a)]
        self.rows_b = [row(arr_b, j0, c) for c in range(tile_b)]

    def const(self, value):
        """An i64 constant."""
        return self.ir.Constant(self.i64, value)

    def function(self, name, return_type, arg_types):
        """Declare (once per module) and return the LLVM function or intrinsic ``name``."""
        fnty = self.ir.FunctionType(return_type, arg_types)
        return self.cgutils.get_or_insert_function(self.builder.module, fnty, name)

    def load(self, ptr, offset, vector_type, align):
        """Load one ``vector_type`` from ``ptr + offset`` (offset in elements of the array)."""
        builder = self.builder
        return builder.load(builder.bitcast(builder.gep(ptr, [offset]), vector_type.as_pointer()), align=align)


def tile_intrinsic(name, *, tile_a, tile_b, result, vector_elems, body):
    """Build a numba intrinsic ``f(a, b, i0, j0)`` returning a tile of ``tile_a * tile_b`` results.

    The shared part of qref's two hand-vectorised kernels (the XOR-popcount of
    :mod:`qref.bitops`, the ``pmadd.wd`` int8 product of :mod:`qref.intarith`), which numba
    cannot express because it has no vector types: ``a`` (M, K) and ``b`` (N, K) are
    C-contiguous arrays whose rows are multiples of ``vector_elems`` elements long, and the
    intrinsic computes one result for each pair (row ``i0 + r`` of ``a``, row ``j0 + c`` of
    ``b``), ``r < tile_a``, ``c < tile_b``, returned as a flat tuple, row of ``a`` major. This
    function writes the signature, the array and row-pointer set-up and the tuple; ``body``
    writes the vector loop.

    Parameters
    ----------
    name : str
        The intrinsic's name (for numba's error messages).
    tile_a, tile_b : int
        Rows of ``a`` and of ``b`` per tile.
    result : str
        The numba type of each result, e.g. ``"int64"``.
    vector_elems : int
        Array elements per vector (4 uint64 words or 16 int16 values in 256 bits).
    body : callable ``(TileCodegen) -> list of tile_a * tile_b llvmlite values``

    Returns
    -------
    numba intrinsic, callable from ``njit`` code only

    Raises
    ------
    RuntimeError
        Without numba (callers build their intrinsics only when :data:`USE_NUMBA` is true).
    """
    if not HAVE_NUMBA:
        raise RuntimeError(f"tile_intrinsic({name!r}) needs numba, which is not installed")
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    count = tile_a * tile_b

    def typer(typingctx, a, b, i0, j0):
        sig = types.UniTuple(getattr(types, result), count)(a, b, i0, j0)

        def codegen(context, builder, signature, args):
            tile = TileCodegen(ir, cgutils, types, context, builder, signature, args, tile_a, tile_b, vector_elems)
            values = body(tile)
            if len(values) != count:
                raise ValueError(f"{name}: body returned {len(values)} values, expected {count}")
            return context.make_tuple(builder, signature.return_type, values)

        return sig, codegen

    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)
