"""INQ (Zhou et al. 2017): level set, partition, frozen weights, schedule, and the digits result."""

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import inq, nn
from qref.nonuniform import inq_exponent_range, power_of_two_levels


def _run(trained_mlp, digits, **kw):
    kw = {"bits": 5, "epochs": 2, "rng": 0, **kw}
    return inq.incremental_quantization(trained_mlp, digits.X_train, digits.y_train, X_val=digits.X_test,
                                        y_val=digits.y_test, **kw)


def _bits_of(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _nearest_level(x, levels):
    """Independent Eq. (4): nearest element of the level set, ties away from zero, by brute force."""
    d = np.abs(x[:, None] - levels[None, :])
    best = d.min(axis=1, keepdims=True)
    cand = np.where(np.isclose(d, best, rtol=0, atol=1e-15), np.abs(levels)[None, :], -1.0)
    mag = levels[np.argmax(cand, axis=1)]  # among the tied, the larger magnitude
    return mag


# ---- the level set: the paper's formulas, by hand --------------------------------------------


def test_level_set_hand_examples():
    # the paper's example after Eq. (3): b = 3 and n1 = -1 give n2 = -2
    assert inq_exponent_range(0.6, 3) == (-1, -2)          # 4 * 0.6 / 3 = 0.8 -> floor(log2) = -1
    # b = 5, max|W| = 0.9: 4 * 0.9 / 3 = 1.2 -> n1 = 0; n2 = 0 + 1 - 2^4 / 2 = -7
    n1, n2 = inq_exponent_range(0.9, 5)
    assert (n1, n2) == (0, -7)
    levels = power_of_two_levels(n1, n2)
    assert levels.size == 2 ** (5 - 1) + 1 == 17            # 16 signed powers of two and zero
    assert levels.max() == 1.0 and levels[levels > 0].min() == 2.0 ** -7
    # the 4/3: s just below 3/2 * 2^n still rounds to 2^n, at 3/2 * 2^n it moves up
    assert inq_exponent_range(1.4999, 5)[0] == 0 and inq_exponent_range(1.5, 5)[0] == 1
    assert inq_exponent_range(0.75, 5)[0] == 0 and inq_exponent_range(0.7499, 5)[0] == -1


def test_model_exponents_match_hand_formula(trained_mlp, digits):
    res = _run(trained_mlp, digits, bits=4, epochs=1)
    for (n1, n2), m in zip(res.exponents, inq.weight_layers(trained_mlp)):
        s = float(np.abs(m.weight.data).max())
        assert n1 == int(np.floor(np.log2(4 * s / 3)))
        assert n2 == n1 + 1 - 2 ** (4 - 1) // 2


# ---- the schedule ------------------------------------------------------------------------


def test_frozen_counts():
    assert frozen_list(4096) == [2048, 3072, 3584, 4096]
    assert frozen_list(640) == [320, 480, 560, 640]
    np.testing.assert_array_equal(inq.frozen_counts(5, (0.5, 1.0)), [3, 5])  # half up


def frozen_list(n):
    return inq.frozen_counts(n, inq.PAPER_PORTIONS).tolist()


@pytest.mark.parametrize("portions, match", [
    ((), "empty"),
    ((0.5, 0.5, 1.0), "strictly increasing"),
    ((0.75, 0.5, 1.0), "strictly increasing"),
    ((0.5, 0.9), "end at 1.0"),
    ((0.0, 1.0), r"portions\[0\] must be a real number in \(0, 1\]"),
    ((0.5, 1.5), r"portions\[1\]"),
    ((-0.1, 1.0), r"portions\[0\]"),
    ((0.5, float("nan"), 1.0), "finite"),
])
def test_bad_schedules(portions, match):
    with pytest.raises(ValueError, match=match):
        inq.check_portions(portions)


@pytest.mark.parametrize("portions", ["0.5,1.0", 1.0, None, (0.5, "1.0")])
def test_bad_schedule_types(portions):
    with pytest.raises(TypeError, match="portions"):
        inq.check_portions(portions)


# ---- partition ------------------------------------------------------------------------------


@given(hnp.arrays(np.float32, st.integers(1, 60), elements=st.floats(-4, 4, width=32)),
       st.floats(0.01, 1.0), st.floats(0.0, 1.0))
def test_magnitude_partition_takes_largest_free(w, frac1, frac2):
    n = w.size
    c1 = int(frac1 * n)
    c2 = c1 + int(frac2 * (n - c1))
    w0 = w.copy()
    f1 = inq.inq_partition(w, count=c1)
    f1_0 = f1.copy()
    f2 = inq.inq_partition(w, count=c2, frozen=f1)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(f1, f1_0)                           # inputs untouched
    assert f1.sum() == c1 and f2.sum() == c2 and (f2 | ~f1).all()     # sizes; grows
    for grp, rest in ((f1, ~f1), (f2 & ~f1, ~f2)):
        if grp.any() and rest.any():
            assert np.abs(w[grp]).min() >= np.abs(w[rest]).max()


def test_random_partition_is_seeded_and_unbiased(rng):
    w = rng.normal(size=(64, 64)).astype(np.float32)
    a = inq.inq_partition(w, count=2048, strategy="random", rng=1)
    b = inq.inq_partition(w, count=2048, strategy="random", rng=1)
    c = inq.inq_partition(w, count=2048, strategy="random", rng=2)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 2048 and (a != c).any()
    # a random half has the magnitude of the whole; the magnitude half is far above it
    m = inq.inq_partition(w, count=2048)
    assert abs(np.abs(w[a]).mean() - np.abs(w).mean()) < 0.03
    assert np.abs(w[m]).mean() > 1.5 * np.abs(w).mean()


def test_inq_step_quantizes_only_the_new_group(rng):
    w = rng.normal(scale=0.2, size=300).astype(np.float32)
    s = float(np.abs(w).max())
    levels = power_of_two_levels(*inq_exponent_range(s, 4))
    w1, f1 = inq.inq_step(w, frozen=np.zeros(300, bool), count=150, bits=4, max_abs=s)
    w2, f2 = inq.inq_step(w1 * 1.0, frozen=f1, count=250, bits=4, max_abs=s)
    new = f2 & ~f1
    assert np.isin(w2[f2], levels).all()
    np.testing.assert_array_equal(_bits_of(w2[f1]), _bits_of(w1[f1]))       # earlier group untouched
    np.testing.assert_array_equal(_bits_of(w2[~f2]), _bits_of(w[~f2]))      # free weights untouched
    np.testing.assert_array_equal(w2[new], np.sign(w[new]) * _nearest_level(np.abs(w[new]).astype(np.float64),
                                                                              levels[levels >= 0]))


# ---- the whole loop on digits -----------------------------------------------------------------


@pytest.fixture(scope="module")
def result5(trained_mlp, digits):
    before = [p.data.copy() for p in trained_mlp.parameters()]
    res = _run(trained_mlp, digits, bits=5, epochs=3)
    for p, b in zip(trained_mlp.parameters(), before):                       # the input model is untouched
        np.testing.assert_array_equal(p.data, b)
        assert p.frozen is None
    return res


def test_final_weights_are_powers_of_two(result5):
    for (n1, n2), m in zip(result5.exponents, inq.weight_layers(result5.model)):
        W = m.weight.data
        assert np.isin(W, power_of_two_levels(n1, n2)).all()
        nz = np.abs(W[W != 0]).astype(np.float64)
        np.testing.assert_array_equal(nz, 2.0 ** np.round(np.log2(nz)))  # independent check
        assert m.weight.frozen.all()


def test_partition_sizes_match_schedule(result5):
    sizes = [m.weight.data.size for m in inq.weight_layers(result5.model)]
    for k, step in enumerate(result5.steps):
        assert step.portion == inq.PAPER_PORTIONS[k]
        assert [int(f.sum()) for f in step.frozen] == [int(round(step.portion * n)) for n in sizes]
        if k:
            for f_prev, f in zip(result5.steps[k - 1].frozen, step.frozen):
                assert (f | ~f_prev).all()                              # groups only grow


def test_frozen_weights_never_move(result5):
    final = [m.weight.data for m in inq.weight_layers(result5.model)]
    steps = result5.steps
    for k, step in enumerate(steps):
        for i, f in enumerate(step.frozen):
            later = [s.weights[i] for s in steps[k:]] + [final[i]]
            for w in later:
                np.testing.assert_array_equal(_bits_of(w[f]), _bits_of(step.weights[i][f]))
    # and re-training did move the free ones
    assert not np.array_equal(steps[0].weights[0][~steps[0].frozen[0]],
                              steps[1].weights[0][~steps[0].frozen[0]])


def test_five_bit_inq_close_to_float(result5):
    # the paper's claim (5-bit weights lose essentially nothing) at the scale of the digits MLP:
    # measured 0.9733 vs 0.9756 float (seed 0); 1 point is 4.5 test images
    assert result5.acc_float > 0.96
    assert result5.steps[-1].acc_quantized >= result5.acc_float - 0.01
    for s in result5.steps[:-1]:
        assert len(s.loss) == 3 and s.acc_retrained >= s.acc_quantized - 0.01


def test_inq_beats_one_shot_at_two_bits(trained_mlp, digits):
    res = _run(trained_mlp, digits, bits=2, epochs=3)
    one_shot = _run(trained_mlp, digits, bits=2, portions=(1.0,))
    assert len(one_shot.steps) == 1 and one_shot.steps[0].loss == []
    assert res.steps[-1].acc_quantized > one_shot.steps[-1].acc_quantized + 0.1   # 0.909 vs 0.667


def test_reproducible(trained_mlp, digits):
    a = _run(trained_mlp, digits, bits=3, epochs=1, strategy="random", rng=3)
    b = _run(trained_mlp, digits, bits=3, epochs=1, strategy="random", rng=3)
    for x, y in zip(inq.weight_layers(a.model), inq.weight_layers(b.model)):
        np.testing.assert_array_equal(x.weight.data, y.weight.data)
    assert [s.acc_quantized for s in a.steps] == [s.acc_quantized for s in b.steps]


def test_saturation_of_grown_weights():
    # a weight that grew past 3/2 * 2^n1 while free is saturated, not zeroed as Eq. (4) literally says
    w = np.array([0.9, 3.0, 0.1], dtype=np.float32)
    w1, _ = inq.inq_step(w, frozen=np.array([True, False, False]), count=3, bits=3, max_abs=0.9)
    assert w1[1] == 1.0 and w1[2] == 0.0


# ---- bad configurations -----------------------------------------------------------------


@pytest.mark.parametrize("kw, err, match", [
    ({"bits": 1}, ValueError, r"bits must be an integer in \[2, 8\], got 1"),
    ({"bits": 9}, ValueError, "bits must be an integer in"),
    ({"bits": 4.0}, TypeError, "bits must be an integer"),
    ({"lr": 0.0}, ValueError, "lr must be finite and > 0"),
    ({"lr": -1e-3}, ValueError, "lr must be"),
    ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
    ({"strategy": "smallest"}, ValueError, "strategy must be one of 'magnitude', 'random'"),
    ({"portions": (0.5, 0.4, 1.0)}, ValueError, "strictly increasing"),
    ({"portions": (0.5, 0.75)}, ValueError, "end at 1.0"),
    ({"rng": -1}, ValueError, "seed must be non-negative"),
])
def test_bad_arguments(trained_mlp, digits, kw, err, match):
    with pytest.raises(err, match=match):
        _run(trained_mlp, digits, **kw)


def test_bad_models(digits):
    with pytest.raises(TypeError, match="model must be a qref.nn.Module"):
        inq.incremental_quantization("net", digits.X_train, digits.y_train)
    with pytest.raises(ValueError, match="no weight layer"):
        inq.incremental_quantization(nn.Sequential(nn.ReLU()), digits.X_train, digits.y_train)
    q = nn.mlp((8,), weight_quantizer=lambda i: nn.FakeQuantize(4, symmetric=True))
    with pytest.raises(ValueError, match="weight layer 0 has a weight_quantizer"):
        inq.incremental_quantization(q, digits.X_train, digits.y_train)
    z = nn.mlp((8,))
    z.layers[2].weight.data[...] = 0
    with pytest.raises(ValueError, match="weight layer 1 is all zero"):
        inq.incremental_quantization(z, digits.X_train, digits.y_train)
    with pytest.raises(ValueError, match="together"):
        inq.incremental_quantization(nn.mlp((8,)), digits.X_train, digits.y_train, X_val=digits.X_test)


def test_bad_partition_arguments():
    w = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"count must be in \[2, 4\]"):
        inq.inq_partition(w, count=1, frozen=np.array([True, True, False, False]))
    with pytest.raises(ValueError, match=r"count must be in \[0, 4\]"):
        inq.inq_partition(w, count=5)
    with pytest.raises(TypeError, match="frozen must be a bool array"):
        inq.inq_partition(w, count=2, frozen=np.zeros(4))
    with pytest.raises(ValueError, match="frozen must have the shape"):
        inq.inq_partition(w, count=2, frozen=np.zeros(3, bool))
    with pytest.raises(TypeError, match="w must have a floating dtype"):
        inq.inq_partition(np.arange(4), count=2)
    with pytest.raises(ValueError, match="w must be finite"):
        inq.inq_partition(np.array([1.0, np.nan]), count=1)
    with pytest.raises(ValueError, match="w must not be empty"):
        inq.inq_partition(np.array([]), count=0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        inq.frozen_counts(0, (1.0,))


def test_model_copy_is_independent(trained_mlp, digits):
    res = _run(trained_mlp, digits, bits=3, epochs=1)
    w_before = copy.deepcopy(inq.weight_layers(trained_mlp)[0].weight.data)
    inq.weight_layers(res.model)[0].weight.data[...] = 0
    np.testing.assert_array_equal(inq.weight_layers(trained_mlp)[0].weight.data, w_before)
