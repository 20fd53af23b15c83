"""bncourse.bnstate: freezing survives train(), re-estimation equals the statistics computed by hand and changes no
parameter, the frozen copies compute the eval-mode function, and bad arguments give clear errors."""

import copy

import pytest
import torch
from torch import nn
from torch.optim import swa_utils
from torchvision.ops import FrozenBatchNorm2d

from bncourse import bnstate, data, models
from bncourse.layers import BatchNorm


def trained_lenet(seed=0):
    torch.manual_seed(seed)
    model = models.LeNet(batch_norm=True, activation="relu")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28) * 2 + 0.5)    # statistics that are not the initial 0 / 1
    return model


def nested_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5),
                         nn.Sequential(nn.Linear(6, 4, bias=False), BatchNorm(4)), nn.ReLU(), nn.Linear(4, 2))


# ----------------------------------------------------------------------------------------- freezing
def test_freeze_bn_survives_train_and_keeps_everything_else_training():
    model = nested_model()
    assert bnstate.freeze_bn(model) is model
    model.train()
    bns = models.batchnorm_layers(model)
    assert len(bns) == 2 and not any(bn.training for bn in bns)
    assert all(bnstate.is_frozen(bn) for bn in bns)
    assert model[3].training and model.training                       # dropout still follows the model
    assert not any(p.requires_grad for bn in bns for p in bn.parameters())
    assert model[0].weight.requires_grad
    state = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(torch.randn(8, 5)).sum().backward()
    opt.step()
    for name in state:
        if name.startswith(("1.", "4.1.")):
            assert torch.equal(state[name], model.state_dict()[name]), name
    assert not torch.equal(state["0.weight"], model[0].weight)


def test_freeze_bn_survives_eval_train_cycles_and_deepcopy():
    model = bnstate.freeze_bn(trained_lenet())
    for _ in range(2):
        model.eval()
        model.train()
    clone = copy.deepcopy(model).train()
    assert not any(bn.training for bn in models.batchnorm_layers(clone))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


def test_unfreeze_bn_restores_training():
    model = bnstate.freeze_bn(nested_model())
    assert bnstate.unfreeze_bn(model.train()) is model
    bns = models.batchnorm_layers(model)
    assert all(bn.training and not bnstate.is_frozen(bn) for bn in bns)
    assert all(p.requires_grad for bn in bns for p in bn.parameters())
    model.eval()
    assert not any(bn.training for bn in bns)


def test_requires_grad_only_lets_the_statistics_move_freeze_bn_does_not():
    for freeze in (False, True):
        model = trained_lenet()
        if freeze:
            bnstate.freeze_bn(model)
        else:
            for bn in models.batchnorm_layers(model):
                bn.requires_grad_(False)
        before = bnstate.running_statistics(model)
        model.train()
        with torch.no_grad():
            model(torch.randn(32, 1, 28, 28) * 3)
        shift = bnstate.statistics_shift(before, bnstate.running_statistics(model))
        moved = any(r["mean_shift"] > 0 or r["var_ratio"] != 1 for r in shift)
        assert moved is not freeze


def test_frozen_batchnorm_copy_equals_eval_mode_and_has_no_mode():
    model = trained_lenet()
    frozen = bnstate.to_frozen_batchnorm(model)
    kinds = [type(m) for m in frozen.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert kinds == [FrozenBatchNorm2d, FrozenBatchNorm2d, bnstate.FrozenBatchNorm1d, bnstate.FrozenBatchNorm1d]
    assert not models.batchnorm_layers(model)[0] in list(frozen.modules())
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(frozen.train()(x), model.eval()(x), atol=1e-5)
    assert all(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in models.batchnorm_layers(model))  # original unchanged
    assert len(list(frozen.parameters())) == len(list(model.parameters())) - 8   # γ and β became buffers


def test_frozen_batchnorm1d_matches_batchnorm1d_for_2d_and_3d_input():
    bn = nn.BatchNorm1d(3, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
        bn.weight.copy_(torch.tensor([0.5, 2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    frozen = bnstate.to_frozen_batchnorm(nn.Sequential(bn))[0]
    bn.eval()
    for x in (torch.randn(5, 3), torch.randn(5, 3, 7)):
        assert torch.allclose(frozen(x), bn(x), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, L\)"):
        frozen(torch.randn(2, 3, 4, 4))


# ----------------------------------------------------------------------------------------- re-estimation
def by_hand(model, batches):
    """Cumulative average of each BN input's batch mean and unbiased variance, with dropout off."""
    inputs = {}
    bns = models.batchnorm_layers(model)
    hooks = [bn.register_forward_pre_hook(lambda m, args, i=i: inputs.setdefault(i, []).append(args[0].detach()))
             for i, bn in enumerate(bns)]
    model.eval()
    for bn in bns:
        bn.training = True
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    return [(torch.stack([t.mean(0) for t in inputs[i]]).mean(0), torch.stack([t.var(0) for t in inputs[i]]).mean(0))
            for i in range(len(bns))]


def test_reestimate_equals_the_statistics_computed_by_hand():
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(n, 5, generator=g) * s + o for n, s, o in ((16, 1.0, 2.0), (8, 2.0, -1.0), (12, 0.5, 0.5))]
    model = nested_model().train()
    with torch.no_grad():
        model(torch.randn(10, 5) * 4)
    expected = by_hand(copy.deepcopy(model), batches)
    params = [p.clone() for p in model.parameters()]
    momenta = [bn.momentum for bn in models.batchnorm_layers(model)]
    assert bnstate.reestimate_bn(model, batches) is model
    for (mean, var), (got_mean, got_var) in zip(expected, bnstate.running_statistics(model)):
        assert torch.allclose(got_mean, mean, atol=1e-5) and torch.allclose(got_var, var, atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))
    assert [bn.momentum for bn in models.batchnorm_layers(model)] == momenta
    assert all(m.training for m in model.modules())                    # modes restored


def test_reestimate_matches_update_bn_without_dropout_and_keeps_frozen_layers_frozen():
    train = data.load_tensors("MNIST").subset(512)
    ours = bnstate.reestimate_bn(trained_lenet().eval(), train.batches(128, shuffle=False))
    theirs = trained_lenet()
    swa_utils.update_bn(train.batches(128, shuffle=False), theirs)
    for (a, b), (c, d) in zip(bnstate.running_statistics(ours), bnstate.running_statistics(theirs)):
        assert torch.allclose(a, c, atol=1e-5) and torch.allclose(b, d, atol=1e-4)
    assert not ours.training
    frozen = bnstate.freeze_bn(trained_lenet())
    bnstate.reestimate_bn(frozen, train.batches(128, shuffle=False), max_batches=2)
    frozen.train()
    assert all(bnstate.is_frozen(bn) and not bn.training for bn in models.batchnorm_layers(frozen))
    assert all(int(bn.num_batches_tracked) == 2 for bn in models.batchnorm_layers(frozen))


def test_reestimate_keeps_dropout_off():
    model = nested_model()
    seen = []
    model[3].register_forward_pre_hook(lambda m, args: seen.append(m.training))
    bnstate.reestimate_bn(model.train(), [torch.randn(8, 5)])
    assert seen == [False] and model[3].training


# ----------------------------------------------------------------------------------------- helpers
def test_shift_domain_and_class_sorted_batches():
    mnist = data.load_tensors("MNIST").subset(600)
    same = bnstate.shift_domain(mnist)
    assert torch.allclose(same.x, mnist.x.clamp(max=(1 - mnist.mean) / mnist.std), atol=1e-5)
    shifted = bnstate.shift_domain(mnist, contrast=0.5, brightness=0.4, noise=0.2, seed=1)
    assert torch.equal(shifted.y, mnist.y) and shifted.x.shape == mnist.x.shape
    assert torch.equal(shifted.x, bnstate.shift_domain(mnist, contrast=0.5, brightness=0.4, noise=0.2, seed=1).x)
    pixels = shifted.x * mnist.std + mnist.mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    batches = bnstate.class_sorted_batches(mnist, 16, seed=0)
    labels = [y for _, y in batches]
    assert len(labels) == len(batches) and all(len(torch.unique(y)) == 1 and len(y) == 16 for y in labels)
    assert len({int(y[0]) for y in labels}) == 10
    pairs = [y for _, y in bnstate.class_sorted_batches(mnist, 16, classes_per_batch=2, seed=0)]
    assert all(len(torch.unique(y)) <= 2 for y in pairs)


def test_dropout_mlp_positions():
    before = bnstate.dropout_mlp((784, 32, 16, 10), p=0.3, position="before_bn")
    after = bnstate.dropout_mlp((784, 32, 16, 10), p=0.3, position="after_bn")
    kinds = lambda m: [type(layer).__name__ for layer in m]
    assert kinds(before) == ["Flatten", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d",
                             "ReLU", "Linear"]
    assert kinds(after) == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert before(torch.randn(4, 1, 28, 28)).shape == (4, 10)


# ----------------------------------------------------------------------------------------- errors
def test_bad_arguments_give_clear_errors():
    plain = models.LeNet(batch_norm=False)
    with pytest.raises(TypeError, match="must be an nn.Module, got str"):
        bnstate.freeze_bn("model")
    with pytest.raises(ValueError, match="no batch-norm layer"):
        bnstate.freeze_bn(plain)
    with pytest.raises(ValueError, match="no batch-norm layer"):
        bnstate.reestimate_bn(plain, [torch.randn(2, 1, 28, 28)])
    with pytest.raises(ValueError, match="no batch-norm layer"):
        bnstate.to_frozen_batchnorm(plain)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        bnstate.freeze_bn(nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)))
    with pytest.raises(TypeError, match="course's BatchNorm"):
        bnstate.to_frozen_batchnorm(nn.Sequential(BatchNorm(3)))
    with pytest.raises(ValueError, match="yielded no batch"):
        bnstate.reestimate_bn(trained_lenet(), [])
    with pytest.raises(TypeError, match="tensors or \\(x, y\\) pairs, got str"):
        bnstate.reestimate_bn(trained_lenet(), ["x"])
    with pytest.raises(ValueError, match="max_batches"):
        bnstate.reestimate_bn(trained_lenet(), [torch.randn(2, 1, 28, 28)], max_batches=0)
    with pytest.raises(ValueError, match="same, non-zero number of layers"):
        bnstate.statistics_shift([], [])
    mnist = data.load_tensors("MNIST").subset(100)
    with pytest.raises(ValueError, match="contrast must be > 0"):
        bnstate.shift_domain(mnist, contrast=0)
    with pytest.raises(TypeError, match="TensorData"):
        bnstate.shift_domain(mnist.x)
    with pytest.raises(ValueError, match="multiple of classes_per_batch"):
        bnstate.class_sorted_batches(mnist, 10, classes_per_batch=3)
    with pytest.raises(ValueError, match="position must be one of"):
        bnstate.dropout_mlp(position="between")
    with pytest.raises(ValueError, match="p must be a number in"):
        bnstate.dropout_mlp(p=1.0)


def test_failed_reestimation_restores_momentum_and_modes():
    model = trained_lenet().eval()
    with pytest.raises(TypeError):
        bnstate.reestimate_bn(model, [torch.randn(2, 1, 28, 28), "x"])
    assert all(bn.momentum == 0.1 for bn in models.batchnorm_layers(model)) and not model.training
