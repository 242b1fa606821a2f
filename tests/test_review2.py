"""Regression tests for defects found in the second review (qat, gradients, pruning)."""

import numpy as np
import pytest

from qref import gradients as G
from qref import pruning, qat


def _ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------
# TernGrad's gradient clipping on a tensor with sigma = 0
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("g", [[0.3], [-0.25, -0.25, -0.25], [[2.0, 2.0], [2.0, 2.0]]])
def test_terngrad_clip_keeps_tensor_with_zero_std(g):
    # all entries equal: sigma = 0 and clipping at c * sigma = 0 used to erase the gradient
    g = _ro(np.asarray(g, dtype=np.float32))
    q = G.terngrad(g, rng=0, clip=2.5)
    np.testing.assert_array_equal(q, g)     # s = |g_k| for every k: Bernoulli(1), exact
    np.testing.assert_array_equal(q, G.terngrad(g, rng=0))


def test_terngrad_clip_scalar_parameter_in_gradient_quantizer():
    # a 0-d parameter (e.g. PACT's alpha) gets its own TernGrad message in fit_data_parallel
    q = G.GradientQuantizer("terngrad", clip=2.5)
    assert float(q(_ro(np.array(0.7)), rng=0)) == pytest.approx(0.7)


def test_terngrad_clip_still_clips_outliers():
    g = np.zeros(100)
    g[0] = 100.0
    g[1:] = 0.01
    sigma = g.std()
    q = G.terngrad(_ro(g), rng=0, clip=2.5)
    assert np.abs(q).max() == pytest.approx(2.5 * sigma)


# --------------------------------------------------------------------------------------
# DoReFa gradient quantizer on an empty batch
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0,)])
def test_dorefa_gradient_empty_batch(shape):
    q = qat.DoReFaGradient(2, rng=0)
    x = np.zeros(shape, np.float32)
    assert q(x) is x
    g = q.backward(_ro(np.zeros(shape, np.float32)))
    assert g.shape == shape and g.dtype == np.float32


# --------------------------------------------------------------------------------------
# ClipQQuantizer.backward: checks like every other quantizer layer, returns a new array
# --------------------------------------------------------------------------------------


def test_clipq_quantizer_backward_before_forward():
    with pytest.raises(RuntimeError, match="before forward"):
        pruning.ClipQQuantizer(0.5, 2).backward(np.ones(4))


def test_clipq_quantizer_backward_shape_and_copy():
    q = pruning.ClipQQuantizer(0.5, 2)
    q(_ro(np.array([0.5, 0.1, -0.3, -0.05], np.float32)))
    g = np.ones(4, np.float32)
    out = q.backward(g)
    np.testing.assert_array_equal(out, g)
    assert out is not g and not np.shares_memory(out, g)
    with pytest.raises(ValueError, match="grad_out must have the shape"):
        q.backward(np.ones(3, np.float32))


# --------------------------------------------------------------------------------------
# quantize_k on float16 input: 2^k - 1 overflowed float16 for k = 16 (NaN out)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [12, 16])
def test_quantize_k_float16_computed_in_float32(bits):
    r = _ro(np.array([0.0, 0.3, 0.5, 1.0], np.float16))
    q = qat.quantize_k(r, bits=bits)
    assert q.dtype == np.float16 and np.isfinite(q).all()
    n = 2**bits - 1
    expect = (np.rint(r.astype(np.float64) * n) / n).astype(np.float16)
    np.testing.assert_array_equal(q, expect)
