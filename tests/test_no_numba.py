"""qref must import and give identical results with numba absent (numpy is the only hard dependency).

The test runs a fresh interpreter in which ``import numba`` fails, computes a few results with
the numpy twins, and compares them bit for bit with the results of this process (which uses
numba when it is installed and enabled).
"""

import subprocess
import sys
import textwrap

import numpy as np

import qref

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["numba"] = None          # make `import numba` raise ImportError
    import numpy as np
    import qref
    assert not qref.HAVE_NUMBA and not qref.USE_NUMBA, "numba should be unavailable here"
    x = np.random.default_rng(1).standard_normal(50_000).astype(np.float32)
    p = qref.uniform.params_from_data(x, bits=4, symmetric=True)
    fq = qref.uniform.fake_quantize(x, p)
    q = qref.uniform.quantize(x, p)
    acc = qref.rounding.accumulate(np.full(500, 0.003), step=2**-8, mode="stochastic", rng=3)
    np.savez(sys.argv[1], fq=fq, q=q, acc=acc)
    """
)


def test_qref_works_without_numba(tmp_path):
    out = tmp_path / "no_numba.npz"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = np.load(out)

    x = np.random.default_rng(1).standard_normal(50_000).astype(np.float32)
    p = qref.uniform.params_from_data(x, bits=4, symmetric=True)
    np.testing.assert_array_equal(qref.uniform.fake_quantize(x, p), ref["fq"])
    np.testing.assert_array_equal(qref.uniform.quantize(x, p), ref["q"])
    acc = qref.rounding.accumulate(np.full(500, 0.003), step=2**-8, mode="stochastic", rng=3)
    np.testing.assert_array_equal(acc, ref["acc"])
