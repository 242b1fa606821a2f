"""The full-precision auxiliary module (qref.auxiliary, Zhuang et al. 2020).

* The joint gradient of every parameter (low-precision network, adapter, shared weights, the
  branch's own batch norms and classifier) and of the input against central differences of the
  joint loss, in float64, without quantizers (where the chain rule is exact).
* With quantizers, the main part of the gradient equals the gradient of the network trained alone,
  and main + auxiliary parts add up to the joint gradient.
* Inference never runs the branch, and the deployed network's forward pass is bit-identical with
  and without it.
"""

import numpy as np
import pytest

from qref import auxiliary as AX
from qref import data, nn, qat


def _float_aux(share, seed=0):
    net = nn.mlp((6, 5), rng=seed)
    aux = AX.AuxiliaryNet(net, AX.auxiliary_mlp_branch(net, tap=1, share=share, rng=seed + 1), tap=1)
    return aux.astype(np.float64)


@pytest.mark.parametrize("share", [True, False])
def test_joint_gradient_matches_central_differences(share, rng):
    aux = _float_aux(share)
    X = rng.normal(size=(9, 64))
    y = np.arange(9) % 10
    loss = AX.AuxiliaryLoss(aux, weight=0.7)

    def joint(_):
        return loss.forward(aux(X), y)

    aux.zero_grad()
    joint(None)
    dx = aux.backward(loss.backward())
    params = aux.parameters()
    if share:                                   # the shared Parameters are listed once
        assert len(params) == len({id(p) for p in params})
        assert aux.branch[3].weight is aux.network[2].weight
    for p in params:
        num = nn.numerical_gradient(joint, p.data, eps=1e-6)
        assert np.allclose(p.grad, num, rtol=1e-5, atol=1e-8), p.name
    assert np.allclose(dx, nn.numerical_gradient(joint, X, eps=1e-6), rtol=1e-5, atol=1e-8)


def test_loss_value_and_zero_weight(rng):
    aux = _float_aux(True)
    X, y = rng.normal(size=(5, 64)), np.arange(5)
    loss = AX.AuxiliaryLoss(aux, weight=0.25)
    total = loss.forward(aux(X), y)
    ce = nn.SoftmaxCrossEntropy()
    assert np.isclose(total, ce.forward(aux.network.layers[-1]._x @ aux.network[-1].weight.data.T
                                        + aux.network[-1].bias.data, y) + 0.25 * ce.forward(aux.aux_logits, y))


def _quantized_aux(seed=0, width=32):
    net = nn.mlp((width, width), rng=seed, weight_quantizer=lambda i: qat.LSQ(2, kind="weight"),
                 activation_quantizer=lambda i: qat.LSQ(2))
    return net, AX.AuxiliaryNet(net, AX.auxiliary_mlp_branch(net, tap=2, rng=seed + 1), tap=2)


def test_split_gradients_main_part_is_the_plain_gradient():
    d = data.load_digits()
    X, y = d.X_train[:64], d.y_train[:64]
    net, aux = _quantized_aux()
    aux(X)                                      # initialize LSQ's steps on this batch
    parts = AX.split_gradients(aux, X, y, weight=1.0)
    joint = [p.grad.copy() for layer in net.layers for p in layer.parameters()]
    nn.backprop(net, X, y, nn.SoftmaxCrossEntropy())
    plain = [p.grad.copy() for layer in net.layers for p in layer.parameters()]
    for (name, main, extra), j, p in zip(parts, joint, plain):
        assert np.allclose(main, p, rtol=1e-5, atol=1e-7), name
        assert np.allclose(main + extra, j, rtol=1e-5, atol=1e-7), name
    extra = {name: np.abs(e).sum() for name, _, e in parts}
    assert extra["0.weight"] > 0 and extra["3.weight"] > 0      # below the tap, and the shared layer
    assert extra["6.weight"] == 0 and extra["6.bias"] == 0      # the output layer: main path only


def test_inference_never_runs_the_branch_and_is_bit_identical():
    d = data.load_digits()
    net, aux = _quantized_aux()
    nn.fit(aux, d.X_train[:256], d.y_train[:256], epochs=1, optimizer=nn.Adam(aux.parameters(), lr=3e-3),
           loss=AX.AuxiliaryLoss(aux), progress=False)

    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("the auxiliary branch ran at inference")

    deployed = nn.predict(net, d.X_test)
    branch = aux.branch
    aux.branch = Boom()
    assert np.array_equal(nn.predict(aux, d.X_test), deployed)
    assert nn.accuracy(aux, d.X_test, d.y_test) == nn.accuracy(net, d.X_test, d.y_test)
    aux.branch = branch
    # training mode: the main logits are exactly those of the network alone
    aux.train()
    x = d.X_test[:50]
    out_aux = aux(x)
    assert np.array_equal(out_aux, net(x)) and aux.aux_logits is not None


def test_auxiliary_training_is_reproducible_and_learns():
    d = data.load_digits()
    accs, weights = [], []
    for seed in (0, 0):
        net, aux = _quantized_aux(seed, width=64)
        nn.fit(aux, d.X_train, d.y_train, epochs=4, optimizer=nn.Adam(aux.parameters(), lr=3e-3),
               loss=AX.AuxiliaryLoss(aux), progress=False, rng=seed)
        accs.append(nn.accuracy(aux, d.X_test, d.y_test))
        weights.append(np.concatenate([p.data.ravel() for p in aux.parameters()]))
    assert accs[0] == accs[1] and np.array_equal(*weights)
    assert accs[0] > 0.85


def test_bad_input():
    net = nn.mlp((4, 4), rng=0)
    branch = AX.auxiliary_mlp_branch(net, tap=1)
    with pytest.raises(TypeError, match="network"):
        AX.AuxiliaryNet(object(), branch, tap=1)
    with pytest.raises(TypeError, match="branch"):
        AX.AuxiliaryNet(net, object(), tap=1)
    with pytest.raises(ValueError, match="tap"):
        AX.AuxiliaryNet(net, branch, tap=len(net) - 1)
    with pytest.raises(ValueError, match="tap"):
        AX.auxiliary_mlp_branch(net, tap=3)            # no hidden Linear above
    with pytest.raises(ValueError, match="tap"):
        AX.auxiliary_mlp_branch(nn.mlp((4,)), tap=1)
    with pytest.raises(TypeError, match="layer"):
        AX.SharedLinear(nn.ReLU())
    aux = AX.AuxiliaryNet(net, branch, tap=1)
    with pytest.raises(TypeError, match="net"):
        AX.AuxiliaryLoss(net)
    with pytest.raises(ValueError, match="weight"):
        AX.AuxiliaryLoss(aux, weight=-1.0)
    with pytest.raises(RuntimeError, match="forward"):
        AX.AuxiliaryNet(nn.mlp((4, 4), rng=0), AX.auxiliary_mlp_branch(net, tap=1), tap=1).backward(np.zeros((1, 10)))
    aux(np.zeros((3, 64), np.float32))
    with pytest.raises(RuntimeError, match="AuxiliaryLoss"):
        aux.backward(np.zeros((3, 10), np.float32))
    with pytest.raises(ValueError, match="shape"):
        aux.set_aux_grad(np.zeros((2, 10)))
