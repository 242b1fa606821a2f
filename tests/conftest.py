"""Shared test configuration.

Hypothesis profiles (pick one with ``QREF_HYPOTHESIS_PROFILE``):

* ``default``: 60 examples per property, no deadline (numba compiles on a kernel's first call);
* ``ci``: the same, derandomized, so a CI run is reproducible (chosen when ``CI`` is set);
* ``thorough``: 2000 examples per property, for a long local hunt for counterexamples.

No example database is written (``database=None``): the tests leave no files behind.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=60, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=2000)
settings.load_profile(os.environ.get("QREF_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))


@pytest.fixture
def rng():
    """A fresh generator with a fixed seed: every test sees the same 'random' data."""
    return np.random.default_rng(20240601)


@pytest.fixture(scope="module")
def digits():
    """The digits data set with the default split (qref.data.load_digits), once per test module."""
    from qref import data

    return data.load_digits()


@pytest.fixture(scope="module")
def trained_mlp(digits):
    """``nn.mlp((64,))`` trained 30 epochs by SGD with momentum (seed 0), once per test module."""
    from qref import nn

    net = nn.mlp((64,), rng=0)
    nn.fit(net, digits.X_train, digits.y_train, epochs=30, progress=False, rng=0,
           optimizer=nn.SGD(net.parameters(), lr=0.05, momentum=0.9))
    return net
