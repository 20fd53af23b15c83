"""bncourse.models: the networks and their BN variants."""

import pytest
import torch
from torch import nn

from bncourse import models


def test_mlp_without_and_with_bn():
    plain = models.MLP((784, 512, 256, 10))
    bn = models.MLP((784, 512, 256, 10), batch_norm=True)
    assert [type(m) for m in plain] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [type(m) for m in bn] == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert bn[1].bias is None and bn[4].bias is None and bn[7].bias is not None
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Linear))
    x = torch.randn(5, 1, 28, 28)
    assert plain(x).shape == bn(x).shape == (5, 10)
    # BN replaces each removed bias with beta: the parameter count differs by the BN scales only
    assert models.count_parameters(bn) - models.count_parameters(plain) == 512 + 256
    assert len(models.batchnorm_layers(bn)) == 2 and not models.batchnorm_layers(plain)


def test_mlp_bn_after_activation_keeps_bias_and_custom_parts():
    m = models.MLP((20, 8, 3), batch_norm=True, bn_position="after", activation="tanh")
    assert [type(l) for l in m] == [nn.Flatten, nn.Linear, nn.Tanh, nn.BatchNorm1d, nn.Linear]
    assert m[1].bias is not None
    m2 = models.MLP((20, 8, 3), batch_norm=True, activation=nn.GELU, norm_layer=lambda w: nn.LayerNorm(w))
    assert isinstance(m2[2], nn.LayerNorm) and isinstance(m2[3], nn.GELU)
    assert isinstance(m[:2], nn.Sequential) and not isinstance(m[:2], models.MLP)


def test_lenet_shapes_and_variants():
    x = torch.randn(4, 1, 28, 28)
    plain, bn = models.LeNet(), models.LeNet(batch_norm=True)
    assert plain(x).shape == bn(x).shape == (4, 10)
    norms = models.batchnorm_layers(bn)
    assert [type(n) for n in norms] == [nn.BatchNorm2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.BatchNorm1d]
    assert [n.num_features for n in norms] == [6, 16, 120, 84]
    assert bn[0].bias is None and plain[0].bias is not None
    gn = models.LeNet(batch_norm=True, norm2d=lambda c: nn.GroupNorm(2, c), norm1d=nn.LayerNorm)
    assert gn(x).shape == (4, 10) and isinstance(gn[1], nn.GroupNorm)
    after = models.LeNet(batch_norm=True, bn_position="after", activation="relu")
    assert isinstance(after[1], nn.ReLU) and isinstance(after[2], nn.BatchNorm2d) and after[0].bias is not None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sizes": (784,)}, ValueError, "at least two"),
        ({"sizes": (784, 0, 10)}, ValueError, "positive"),
        ({"batch_norm": 1}, TypeError, "batch_norm must be True or False, got int 1"),
        ({"bn_position": "middle"}, ValueError, "bn_position"),
        ({"activation": "swish"}, ValueError, "unknown activation"),
        ({"activation": 3}, TypeError, "activation"),
    ],
)
def test_mlp_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        models.MLP(**kwargs)


def test_lenet_and_helpers_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        models.LeNet(num_classes=0)
    with pytest.raises(ValueError, match="bn_position"):
        models.LeNet(bn_position="x")
    with pytest.raises(TypeError, match="nn.Module"):
        models.count_parameters("model")
    with pytest.raises(TypeError, match="nn.Module"):
        models.batchnorm_layers(None)


def test_init_normal_std_and_gain():
    torch.manual_seed(0)
    model = models.MLP((400, 300, 100, 10), batch_norm=False)
    assert models.init_normal_(model, std=0.03) is model
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in linears:
        assert abs(layer.weight.std().item() - 0.03) < 0.003
        assert torch.count_nonzero(layer.bias) == 0
    models.init_normal_(model, gain=2.0)
    for layer in linears:
        expected = 2.0 / layer.in_features ** 0.5
        assert abs(layer.weight.std().item() / expected - 1) < 0.1, (layer, expected)
    # the same seed gives the same weights (no hidden randomness beyond torch's generator)
    torch.manual_seed(1)
    a = [p.clone() for p in models.init_normal_(models.MLP((20, 5, 3)), std=0.1).parameters()]
    torch.manual_seed(1)
    b = list(models.init_normal_(models.MLP((20, 5, 3)), std=0.1).parameters())
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kwargs", [{}, {"std": 0.1, "gain": 1.0}, {"std": 0.0}, {"gain": -1.0},
                                    {"std": float("inf")}, {"std": True}, {"gain": "2"}])
def test_init_normal_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="std|gain"):
        models.init_normal_(models.MLP((4, 3, 2)), **kwargs)
    with pytest.raises(TypeError, match="nn.Module"):
        models.init_normal_("model", std=0.1)


def test_mlp_dropout_goes_at_the_end_of_every_hidden_layer():
    from torch import nn as _nn
    from bncourse import models as _m
    net = _m.MLP((8, 6, 4, 3), batch_norm=True, bn_position="after", dropout=0.5)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Flatten", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert all(m.p == 0.5 for m in net if isinstance(m, _nn.Dropout))
    assert not any(isinstance(m, _nn.Dropout) for m in _m.MLP((8, 6, 3)))
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="dropout must be a probability"):
            _m.MLP((8, 6, 3), dropout=bad)
