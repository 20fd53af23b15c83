"""Tests of bncourse.experiments (the axes of each normalization, the sweeps) and of models.lenet_with_normalization and data.offline_cifar10, on tiny configs."""

import math

import pytest
import torch
from torch import nn

from bncourse import data, models
from bncourse import experiments as ex
from bncourse.data import TensorData
from bncourse.models import batchnorm_layers

CLASSES = tuple(str(i) for i in range(10))


def tiny_data(n=64, seed=0, split="train"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return TensorData("tiny", split, x, y, CLASSES, 0.0, 1.0)


# --- lenet_with_normalization ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "kind, conv_type, dense_type",
    [
        ("batch", nn.BatchNorm2d, nn.BatchNorm1d),
        ("group", nn.GroupNorm, nn.GroupNorm),
        ("layer", nn.GroupNorm, nn.GroupNorm),
        ("instance", nn.InstanceNorm2d, nn.GroupNorm),
    ],
)
def test_lenet_with_normalization_uses_the_named_layers(kind, conv_type, dense_type):
    model = models.lenet_with_normalization(kind)
    assert type(model[1]) is conv_type
    assert type(model[10]) is dense_type
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_lenet_group_and_layer_norm_group_counts():
    assert models.lenet_with_normalization("group", groups=2)[1].num_groups == 2
    assert models.lenet_with_normalization("layer")[1].num_groups == 1
    assert models.lenet_with_normalization("layer")[10].num_groups == 1


def test_lenet_without_normalization_has_none():
    model = models.lenet_with_normalization("none")
    assert not model.batch_norm
    assert not any(isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d)) for m in model.modules())
    assert batchnorm_layers(model) == []


def test_lenet_scratch_uses_the_course_layer():
    layers = pytest.importorskip("bncourse.layers")
    model = models.lenet_with_normalization("scratch")
    found = [m for m in model.modules() if isinstance(m, layers.BatchNorm)]
    assert len(found) == 4
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_lenet_position_and_activation_are_passed_on():
    model = models.lenet_with_normalization("batch", bn_position="after", activation="relu")
    assert isinstance(model[1], nn.ReLU) and isinstance(model[2], nn.BatchNorm2d)


@pytest.mark.parametrize("kwargs, error", [
    ({"kind": "batchnorm"}, ValueError),
    ({"kind": None}, ValueError),
    ({"kind": "group", "groups": 4}, ValueError),
    ({"kind": "group", "groups": 0}, ValueError),
    ({"kind": "batch", "bn_position": "middle"}, ValueError),
])
def test_lenet_with_normalization_rejects_bad_input(kwargs, error):
    with pytest.raises(error):
        models.lenet_with_normalization(**kwargs)


def test_norm_layers_is_the_one_way_to_choose_a_normalization():
    norm2d, norm1d = models.norm_layers("batch")
    assert norm2d is nn.BatchNorm2d and norm1d is nn.BatchNorm1d
    assert isinstance(models.norm_layers("group", groups=3)[0](6), nn.GroupNorm)
    for bad in ("none", "batchnorm", 3):
        with pytest.raises(ValueError, match="kind must be one of"):
            models.norm_layers(bad)


# --- standardize_over_axes ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kind, layer",
    [
        ("batch", nn.BatchNorm2d(6, affine=False)),
        ("layer", nn.GroupNorm(1, 6, affine=False)),
        ("instance", nn.InstanceNorm2d(6)),
        ("group", nn.GroupNorm(2, 6, affine=False)),
    ],
)
def test_standardize_over_axes_matches_torch(kind, layer):
    x = torch.randn(5, 6, 4, 3) * 3 + 2
    layer.train()
    torch.testing.assert_close(ex.standardize_over_axes(x, kind, groups=2), layer(x), atol=1e-5, rtol=1e-4)


def test_standardize_over_axes_sets_are_what_the_docstring_says():
    x = torch.randn(4, 6, 5, 5) * 2 + 1
    y = ex.standardize_over_axes(x, "batch")
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(6), atol=1e-5, rtol=0)
    y = ex.standardize_over_axes(x, "instance")
    torch.testing.assert_close(y.mean(dim=(2, 3)), torch.zeros(4, 6), atol=1e-5, rtol=0)
    # batch norm mixes examples: changing example 0 changes example 1's output; the others don't
    x2 = x.clone()
    x2[0] += 5
    assert not torch.allclose(ex.standardize_over_axes(x2, "batch")[1], ex.standardize_over_axes(x, "batch")[1])
    for kind in ("layer", "instance", "group"):
        torch.testing.assert_close(ex.standardize_over_axes(x2, kind)[1], ex.standardize_over_axes(x, kind)[1])


@pytest.mark.parametrize("args, error", [
    ((torch.randn(4, 6), "batch"), TypeError),
    (([1, 2, 3], "batch"), TypeError),
    ((torch.randn(2, 6, 3, 3), "weight"), ValueError),
    ((torch.randn(2, 6, 3, 3), "group", 4), ValueError),
])
def test_standardize_over_axes_rejects_bad_input(args, error):
    with pytest.raises(error):
        ex.standardize_over_axes(*args)


# --- train_for_examples ---------------------------------------------------------------------------

def test_train_for_examples_counts_steps_across_epochs():
    torch.manual_seed(0)
    model = models.lenet_with_normalization("batch")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = ex.train_for_examples(model, tiny_data(20), batch_size=8, num_examples=40, optimizer=opt)
    assert len(losses) == 5  # 40 examples in batches of 8, over 2.5 passes of 16 usable examples each
    assert all(math.isfinite(v) for v in losses)
    assert model.training


def test_train_for_examples_changes_the_weights_and_is_reproducible():
    def run():
        torch.manual_seed(0)
        model = models.lenet_with_normalization("group")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses = ex.train_for_examples(model, tiny_data(32), 4, 32, opt, seed=3)
        return losses, model[0].weight.detach().clone()

    (l1, w1), (l2, w2) = run(), run()
    assert l1 == l2
    torch.testing.assert_close(w1, w2)
    torch.manual_seed(0)
    assert not torch.allclose(models.lenet_with_normalization("group")[0].weight, w1)


def test_train_for_examples_stops_on_divergence():
    torch.manual_seed(0)
    model = models.lenet_with_normalization("none", activation="relu")
    opt = torch.optim.SGD(model.parameters(), lr=1e12)
    losses = ex.train_for_examples(model, tiny_data(32), 4, 400, opt)
    assert not math.isfinite(losses[-1]) and len(losses) < 100


@pytest.mark.parametrize("kwargs, error", [
    ({"batch_size": 0}, ValueError),
    ({"batch_size": 100}, ValueError),
    ({"num_examples": 2}, ValueError),
    ({"num_examples": 1.5}, ValueError),
    ({"optimizer": "sgd"}, TypeError),
    ({"train": (torch.zeros(2), torch.zeros(2))}, TypeError),
    ({"model": "lenet"}, TypeError),
])
def test_train_for_examples_rejects_bad_input(kwargs, error):
    model = models.lenet_with_normalization("none")
    args = {"model": model, "train": tiny_data(16), "batch_size": 4, "num_examples": 8,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    args.update(kwargs)
    with pytest.raises(error):
        ex.train_for_examples(**args)


# --- sweeps ---------------------------------------------------------------------------------------

def test_sweep_learning_rates_reports_each_rate_and_divergence():
    points = ex.sweep_learning_rates(
        lambda: models.lenet_with_normalization("none", activation="relu"), tiny_data(32), tiny_data(16, seed=1, split="test"),
        rates=[0.01, 1e12], epochs=2, batch_size=16, device="cpu", progress=False,
    )
    assert [p.value for p in points] == [0.01, 1e12]
    assert not points[0].diverged and math.isfinite(points[0].train_loss) and points[0].steps == 4
    assert 0.0 <= points[0].val_accuracy <= 1.0
    assert points[1].diverged and points[1].train_loss == math.inf and points[1].val_accuracy == 0.1


def test_sweep_learning_rates_same_seed_same_result():
    def run():
        return ex.sweep_learning_rates(lambda: models.lenet_with_normalization("batch"), tiny_data(32), tiny_data(16, seed=1),
                                       [0.5], epochs=1, batch_size=8, device="cpu", progress=False)[0]

    a, b = run(), run()
    assert a.train_loss == b.train_loss and a.val_accuracy == b.val_accuracy


@pytest.mark.parametrize("kwargs, error", [
    ({"rates": []}, ValueError),
    ({"rates": [0.1, -1]}, ValueError),
    ({"epochs": 0}, ValueError),
    ({"batch_size": 0}, ValueError),
    ({"make_model": "lenet"}, TypeError),
    ({"val": None}, TypeError),
])
def test_sweep_learning_rates_rejects_bad_input(kwargs, error):
    args = {"make_model": lambda: models.lenet_with_normalization("none"), "train": tiny_data(16), "val": tiny_data(8),
            "rates": [0.1], "epochs": 1, "progress": False}
    args.update(kwargs)
    with pytest.raises(error):
        ex.sweep_learning_rates(**args)


def test_sweep_batch_sizes_uses_a_fixed_number_of_examples():
    points = ex.sweep_batch_sizes(
        lambda: models.lenet_with_normalization("group"), tiny_data(64), tiny_data(16, seed=1),
        batch_sizes=[2, 16], num_examples=64, lr=ex.linear_scaling(0.5, 16), device="cpu", progress=False,
    )
    assert [p.value for p in points] == [2.0, 16.0]
    assert [p.steps for p in points] == [32, 4]
    assert all(not p.diverged and math.isfinite(p.train_loss) for p in points)


def test_linear_scaling():
    lr = ex.linear_scaling(0.8, 256)
    assert lr(256) == pytest.approx(0.8) and lr(2) == pytest.approx(0.00625)
    with pytest.raises(ValueError):
        ex.linear_scaling(0)
    with pytest.raises(ValueError):
        ex.linear_scaling(0.1, 0)


@pytest.mark.parametrize("kwargs, error", [
    ({"batch_sizes": []}, ValueError),
    ({"batch_sizes": [0]}, ValueError),
    ({"num_examples": 0}, ValueError),
    ({"lr": 0.1}, TypeError),
    ({"tail": 0}, ValueError),
    ({"train": None}, TypeError),
])
def test_sweep_batch_sizes_rejects_bad_input(kwargs, error):
    args = {"make_model": lambda: models.lenet_with_normalization("none"), "train": tiny_data(16), "val": tiny_data(8),
            "batch_sizes": [4], "num_examples": 8, "lr": ex.linear_scaling(0.1), "progress": False}
    args.update(kwargs)
    with pytest.raises(error):
        ex.sweep_batch_sizes(**args)


# --- offline_cifar10 ------------------------------------------------------------------------------

def test_offline_cifar10_is_none_when_absent(tmp_path):
    assert data.offline_cifar10(tmp_path) is None


def test_offline_cifar10_rejects_bad_root():
    with pytest.raises(TypeError):
        data.offline_cifar10(42)


# --- the figures of notebook 04 -------------------------------------------------------------------

def test_plot_sweep_and_normalization_axes_draw():
    import matplotlib

    matplotlib.use("Agg")
    from bncourse import plots

    points = [ex.SweepPoint(0.1, 1.0, 0.5, False, 1.0, 1), ex.SweepPoint(10.0, math.inf, 0.1, True, 1.0, 1)]
    fig = plots.plot_sweep({"a": points}, metric="train_loss")
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 3  # line, diverged cross, legend entry
    assert len(plots.plot_normalization_axes(4, 6, 2).axes) == 4
    with pytest.raises(ValueError):
        plots.plot_sweep({"a": points}, metric="accuracy")
    with pytest.raises(TypeError):
        plots.plot_sweep({"a": [1, 2]})
    with pytest.raises(ValueError):
        plots.plot_normalization_axes(4, 6, 4)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ex.sweep_learning_rates(lambda: models.lenet_with_normalization("batch"), tiny_data(32), tiny_data(16, seed=1),
                                     rates=0.1, epochs=1, progress=False), TypeError, r"rates must be a list of numbers, e.g. \[0.1\]"),
    (lambda: ex.sweep_learning_rates(lambda: models.lenet_with_normalization("batch"), tiny_data(32), tiny_data(16, seed=1),
                                     rates=[0.1, float("nan")], epochs=1, progress=False), ValueError, "finite number > 0, got float nan"),
    (lambda: ex.sweep_batch_sizes(lambda: models.lenet_with_normalization("batch"), tiny_data(32), tiny_data(16, seed=1),
                                  batch_sizes=4, num_examples=8, lr=ex.linear_scaling(0.1), progress=False), TypeError, "batch_sizes must be a list"),
    (lambda: ex.sweep_batch_sizes(lambda: models.lenet_with_normalization("batch"), tiny_data(32), tiny_data(16, seed=1),
                                  batch_sizes=[4], num_examples=8, lr=ex.linear_scaling(0.1), tail="0.2", progress=False), TypeError, "tail must be a number"),
])
def test_sweeps_name_a_value_where_a_list_or_a_number_belongs(call, error, match):
    with pytest.raises(error, match=match):
        call()
