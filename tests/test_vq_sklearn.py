"""scikit-learn's estimator checks on the fitted quantizers of ``qref.vq``.

Each estimator is run through ``sklearn.utils.estimator_checks.parametrize_with_checks``
(the API checks and the legacy ones). The checks that cannot pass *by design* are listed in
:data:`EXPECTED_FAILED` with the reason; ``parametrize_with_checks`` marks them as expected
failures (xfail), so if one starts passing the list is out of date and the run says so
(XPASS). The reasons, in short:

* **qref refuses integer, complex and object arrays** as data to quantize (an integer array is
  usually a tensor of *codes*, and silently quantizing it again is a classic bug; see
  ``qref/_validation.py``). scikit-learn's checks feed int64/int32 data in
  ``check_estimators_dtypes``, and build their data for the sample-weight checks
  ``check_sample_weights_not_an_array`` / ``check_sample_weights_shape`` as integers, and expect
  a ``ValueError`` (not qref's ``TypeError``) for complex and object data.
* **qref does not import scikit-learn**, so its ``NotFittedError`` cannot be a subclass of
  scikit-learn's; ``check_estimators_unfitted`` insists on scikit-learn's class for
  ``predict`` (which only ``KMeans`` has). qref's error is a ``RuntimeError``, ``ValueError``
  and ``AttributeError``, which is what scikit-learn's own class derives from.
* **Random initialization is not sample-weight equivalent**: fitting with integer weights and
  fitting on repeated rows draw different k-means++ seeds (the data differ in length). The
  same exclusion is made by scikit-learn for its own ``KMeans``. With a deterministic start
  the equivalence holds and is tested in ``tests/test_vq_methods.py``. (``LloydMaxQuantizer``
  with the exact optimum is deterministic and passes.)

The estimators are checked with small settings (3 codewords, ``rng=0``) because the checks
fit on data sets of a few dozen rows; ``ProductQuantizer`` uses ``M=1`` because the checks'
data sets have 1 to 10 columns and the dimension must be divisible by ``M``.
"""

import warnings

import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from qref import vq  # noqa: E402

INTEGER_DATA = ("qref refuses integer data to quantize (TypeError): integers are usually codes; "
                "this check fits on int64/int32 arrays")
NO_COMPLEX = "qref raises TypeError, not ValueError, for complex data (not a floating dtype)"
NO_OBJECT = "qref raises TypeError, not ValueError, for object arrays (not a floating dtype)"
OWN_NOT_FITTED = ("qref.vq.NotFittedError cannot subclass scikit-learn's (qref does not import "
                  "scikit-learn); it is a RuntimeError, ValueError and AttributeError")
RANDOM_INIT_WEIGHTS = ("the random k-means++ seeding draws differently for repeated rows than for "
                       "integer weights (scikit-learn excludes its own KMeans from this check too)")

_COMMON = {
    "check_estimators_dtypes": INTEGER_DATA,
    "check_complex_data": NO_COMPLEX,
    "check_dtype_object": NO_OBJECT,
}
_WEIGHTED = {
    "check_sample_weights_not_an_array": INTEGER_DATA + " (X is built as integers)",
    "check_sample_weights_shape": INTEGER_DATA + " (X is built as integers)",
}

#: estimator class name -> {check name: why it cannot pass}
EXPECTED_FAILED = {
    "KMeans": {**_COMMON, **_WEIGHTED,
               "check_estimators_unfitted": OWN_NOT_FITTED,
               "check_sample_weight_equivalence_on_dense_data": RANDOM_INIT_WEIGHTS},
    "ProductQuantizer": dict(_COMMON),
    "ResidualQuantizer": dict(_COMMON),
    "LloydMaxQuantizer": {**_COMMON, **_WEIGHTED},
}

ESTIMATORS = [
    vq.KMeans(3, rng=0),
    vq.ProductQuantizer(M=1, Ks=3, rng=0),
    vq.ResidualQuantizer(M=2, K=3, rng=0),
    vq.LloydMaxQuantizer(3),
    vq.LloydMaxQuantizer(3, method="lloyd"),
]


def _expected_failed(estimator):
    return EXPECTED_FAILED[type(estimator).__name__]


# parametrize_with_checks hands pytest a generator, which pytest >= 9 deprecates: listify it
# (and it warns that the estimators do not inherit sklearn's BaseEstimator: by design, qref has
# no scikit-learn dependency; its _Estimator provides get_params/set_params/__sklearn_tags__)
_checks = parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Estimator .* does not inherit from `sklearn.base.BaseEstimator`")
    _checks = pytest.mark.parametrize(_checks.args[0], list(_checks.args[1]), **_checks.kwargs)


@_checks
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. sklearn's SkipTestWarning for pandas-only checks
        check(estimator)


def test_every_exclusion_has_a_reason():
    for name, checks in EXPECTED_FAILED.items():
        assert hasattr(vq, name)
        for check, reason in checks.items():
            assert check.startswith("check_") and len(reason) > 20


def test_sklearn_clone_and_pipeline_roundtrip(rng):
    """clone() rebuilds the estimators from get_params, and a fitted quantizer works in a Pipeline."""
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = rng.standard_normal((200, 4))
    for est in ESTIMATORS:
        c = clone(est)
        assert type(c) is type(est) and c.get_params() == est.get_params() and c is not est
        codes = make_pipeline(StandardScaler(), c).fit_transform(X)
        assert codes.shape[0] == 200 and codes.dtype.kind == "u"
