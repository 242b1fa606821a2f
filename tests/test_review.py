"""Regression tests for defects found in the independent review of nn, allocation, formats,
nonuniform, bnn and calibration.bias_correction (each fails on the code before its fix)."""

import warnings

import numpy as np
import pytest

from qref import nn


@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 0)])
def test_softmax_cross_entropy_rejects_empty_logits(shape):
    # before the fix an empty batch returned nan with two RuntimeWarnings
    loss = nn.SoftmaxCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="logits must not be empty"):
            loss(np.zeros(shape, np.float32), np.zeros(shape[0], np.int64))


def test_softmax_cross_entropy_still_accepts_a_single_example():
    loss = nn.SoftmaxCrossEntropy()
    value = loss(np.array([[0.0, np.log(3.0)]]), np.array([1]))
    assert value == pytest.approx(-np.log(3.0 / 4.0), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), [[0.25, -0.25]], rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(3, 2, rng=0),
    lambda: nn.Conv2d(1, 2, 3, rng=0),
    lambda: nn.BatchNorm1d(3),
    lambda: nn.MaxPool2d(2),
    lambda: nn.ReLU(),
])
def test_backward_before_forward_names_the_problem(make):
    layer = make()
    with pytest.raises(RuntimeError, match="call forward first"):
        layer.backward(np.ones((2, 2), np.float32))
