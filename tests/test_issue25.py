"""Issue 25: no silent wrong result, no lost state, clear errors -- each case of the hostile-input report.

Every test here failed on the code before the fix (a silent wrong result, a lost model state or an error
from deep inside torch or Python) and names the issue item it proves.
"""

import copy
import io
import math
import pickle

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bncourse import bnstate, data, distributed, evaluate, experiments, layers, models, plots, selection, train
from bncourse.evaluate import Evaluation


def _td(x, y, name="toy"):
    return data.TensorData(name, "train", x, y, tuple(str(c) for c in range(10)), 0.0, 1.0)


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _NaNNet(nn.Module):
    """A classifier whose logits are NaN: a diverged model."""

    def __init__(self, classes=3):
        super().__init__()
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(x) * float("nan")


# --- 1. ghost BN with a virtual batch of one example ------------------------------------------------
def test_ghost_batch_of_one_value_per_channel_raises_and_changes_nothing():
    bn = distributed.GhostBatchNorm(3, 1).train()
    before = _buffers(bn)
    with pytest.raises(ValueError, match="more than 1 value per channel in each virtual batch"):
        bn(torch.randn(4, 3))
    assert _same(before, _buffers(bn)), "a failed forward must leave the running statistics and count alone"
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        distributed.ghost_batch_norm(torch.randn(4, 3), 1)


def test_ghost_batch_of_one_image_is_fine_and_exact():
    """One example with a 2x2 feature map has four values per channel: that is a valid virtual batch."""
    x = torch.randn(4, 3, 2, 2)
    out = distributed.GhostBatchNorm(3, 1).train()(x)
    expected = torch.cat([F.batch_norm(x[i:i + 1], None, None, training=True) for i in range(4)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_convert_ghost_batchnorm_one_example_per_replica_is_an_error_not_nan_logits():
    torch.manual_seed(0)
    model = distributed.convert_ghost_batchnorm(models.LeNet(batch_norm=True), 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.train()(torch.randn(8, 1, 28, 28))
    assert all(torch.isfinite(b).all() for b in model.buffers()), "no NaN running variance left behind"


def test_sweep_replica_batch_refuses_one_example_per_replica_up_front():
    x = torch.randn(16, 1, 28, 28)
    toy = _td(x, torch.arange(16) % 10)
    with pytest.raises(ValueError, match="per-replica batch of 1"):
        distributed.sweep_replica_batch(toy, toy, global_batch=8, per_replica=(1, 4), seeds=[0], steps=1)


# --- 2. evaluate on non-finite logits ---------------------------------------------------------------
def test_evaluate_reports_nonfinite_logits_as_nan_accuracy():
    y = torch.zeros(20, dtype=torch.long)          # class 0: argmax(NaN) == 0 would score 100%
    result = evaluate.evaluate(_NaNNet(), (torch.randn(20, 4), y))
    assert math.isnan(result.accuracy) and all(math.isnan(a) for a in result.per_class_accuracy)
    assert result.nonfinite == 20 and not result.finite
    assert "non-finite" in str(result)
    fine = evaluate.evaluate(nn.Linear(4, 3), (torch.randn(20, 4), y))
    assert fine.finite and fine.nonfinite == 0 and not math.isnan(fine.accuracy)


def test_best_epoch_never_selects_a_nan_epoch():
    h = train.History(val_accuracy=[math.nan, 0.5, 0.7, math.nan])
    assert h.best_epoch() == 3
    h = train.History(train_loss=[1.0, 1.0], val_accuracy=[math.nan, math.nan])
    with pytest.raises(ValueError, match="NaN"):
        h.best_epoch()


def test_run_epochs_keeps_the_best_finite_epoch():
    """A NaN first epoch must not stay "the best": the state of epoch 2 is snapshotted and restored."""
    accuracies = iter([math.nan, 0.4, 0.3])
    epoch, restored = [0], []

    def one_epoch():
        epoch[0] += 1
        return train.EpochResult(loss=1.0, accuracy=0.5, examples=10, steps=1)

    def val():
        return Evaluation(loss=1.0, accuracy=next(accuracies), per_class_accuracy=(0.0,), num_examples=10)

    history = train.run_epochs(one_epoch, 3, evaluate_val=val, snapshot=lambda: epoch[0], restore=restored.append,
                               progress=False)
    assert history.best_epoch() == 2 and restored == [2]


def test_sweep_point_with_nan_accuracy_is_diverged_and_plots_skip_it():
    point = experiments.SweepPoint(0.1, 0.5, math.nan, False, 1.0, 10)
    assert point.diverged
    ok = experiments.SweepPoint(0.01, 0.5, 0.8, False, 1.0, 10)
    assert not ok.diverged
    fig = plots.plot_sweep({"BN": [ok, point]}, metric="val_accuracy")
    ys = fig.axes[0].lines[0].get_ydata()
    assert list(ys) == [0.8]


def test_per_class_plot_of_a_diverged_model():
    nan = Evaluation(loss=math.nan, accuracy=math.nan, per_class_accuracy=(math.nan,) * 3, num_examples=3, nonfinite=3)
    fine = Evaluation(loss=1.0, accuracy=0.5, per_class_accuracy=(0.4, 0.5, 0.6), num_examples=3)
    fig = plots.plot_per_class_accuracy({"diverged": nan, "fine": fine}, list("abc"))
    low, high = fig.axes[0].get_ylim()
    assert math.isfinite(low) and low == pytest.approx(0.35)
    assert "non-finite" in fig.axes[0].get_legend().get_texts()[0].get_text()


# --- 3. a frozen model saves and loads whole ---------------------------------------------------------
def test_frozen_model_survives_torch_save_load_pickle_and_deepcopy():
    torch.manual_seed(0)
    model = bnstate.freeze_bn(models.LeNet(batch_norm=True))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [torch.load(buffer, weights_only=False), pickle.loads(pickle.dumps(model)), copy.deepcopy(model)]
    x = torch.randn(4, 1, 28, 28)
    expected = model.eval()(x)
    for loaded in copies:
        bns = models.batchnorm_layers(loaded.train())
        assert all(bnstate.is_frozen(bn) and not bn.training for bn in bns)
        assert all(bn.train.layer is bn for bn in bns), "the override must point at its own copy of the layer"
        assert torch.equal(loaded(x), expected)
        bnstate.unfreeze_bn(loaded.train())
        assert all(bn.training for bn in bns)


# --- 4. seed_range and NaN ---------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[0.9, math.nan, 0.8], [math.nan, 0.9, 0.8], [0.8, 0.9, math.nan]])
def test_seed_range_of_a_diverged_seed_is_nan_wherever_it_sits(values):
    low, high = selection.seed_range(values)
    assert math.isnan(low) and math.isnan(high)
    assert selection.seed_range([0.8, 0.9, 0.85]) == (0.8, 0.9)


@pytest.mark.parametrize("bad", ["0.9", None, 0.9, [0.9, "0.8"], [True, 0.5]])
def test_seed_range_refuses_what_is_not_numbers(bad):
    with pytest.raises(TypeError, match="values must be"):
        selection.seed_range(bad)


# --- 5. scratch sync BN on a batch of one without a process group ------------------------------------
def test_sync_batchnorm_batch_of_one_without_group_raises_and_changes_nothing():
    bn = distributed.SyncBatchNorm(3).train()
    before = _buffers(bn)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3))
    assert _same(before, _buffers(bn))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        distributed.sync_batch_norm(torch.randn(1, 3), torch.ones(3), torch.zeros(3))
    assert bn(torch.randn(1, 3, 2, 2)).shape == (1, 3, 2, 2)     # four values per channel: fine


# --- 6. convert_sync_batchnorm of the scratch layers -------------------------------------------------
@pytest.mark.parametrize("convert", [distributed.convert_sync_batchnorm,
                                     lambda m: distributed.convert_ghost_batchnorm(m, 8)])
def test_converters_convert_the_scratch_layers_too(convert):
    torch.manual_seed(0)
    source = models.lenet_with_normalization("scratch")
    converted = convert(source)
    kinds = {type(bn) for bn in models.batchnorm_layers(converted)}
    assert kinds <= {distributed.SyncBatchNorm, distributed.GhostBatchNorm} and len(models.batchnorm_layers(converted)) == 4
    assert not any(isinstance(m, layers.BatchNorm) for m in converted.modules())
    x = torch.randn(8, 1, 28, 28)
    reference = copy.deepcopy(source)
    assert torch.allclose(converted.train()(x), reference.train()(x), atol=1e-5)
    for (m0, v0), (m1, v1) in zip(bnstate.running_statistics(reference), bnstate.running_statistics(converted)):
        assert torch.allclose(m0, m1, atol=1e-6) and torch.allclose(v0, v1, atol=1e-5)


def test_converters_refuse_what_they_would_convert_only_in_part():
    ghost = distributed.convert_ghost_batchnorm(models.LeNet(batch_norm=True), 4)
    with pytest.raises(TypeError, match="GhostBatchNorm, which it cannot convert"):
        distributed.convert_sync_batchnorm(ghost)
    with pytest.raises(TypeError, match="SyncBatchNorm, which it cannot convert"):
        distributed.convert_ghost_batchnorm(distributed.convert_sync_batchnorm(models.LeNet(batch_norm=True)), 4)
    with pytest.raises(ValueError, match=r"affine=True.*affine=False"):
        distributed.convert_sync_batchnorm(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, affine=False)))
    with pytest.raises(ValueError, match="no batch-norm layer"):
        distributed.convert_sync_batchnorm(models.LeNet(batch_norm=False))


# --- 7. evaluate(frozen model, mode="batch") ---------------------------------------------------------
def test_batch_mode_uses_batch_statistics_for_frozen_layers_too():
    torch.manual_seed(0)
    model = models.LeNet(batch_norm=True)
    with torch.no_grad():                                   # running statistics far from any batch's
        for bn in models.batchnorm_layers(model):
            bn.running_mean.fill_(3.0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    plain = evaluate.evaluate(model, (x, y), batch_size=32, mode="batch")
    frozen = bnstate.freeze_bn(copy.deepcopy(model))
    before = _buffers(frozen)
    got = evaluate.evaluate(frozen, (x, y), batch_size=32, mode="batch")
    assert got.loss == pytest.approx(plain.loss) and got.loss != pytest.approx(evaluate.evaluate(frozen, (x, y)).loss)
    assert _same(before, _buffers(frozen))
    assert all(bnstate.is_frozen(bn) and not bn.training for bn in models.batchnorm_layers(frozen.train()))


# --- the state-losing failure: reestimate_bn -----------------------------------------------------
@pytest.mark.parametrize("convert", [distributed.convert_sync_batchnorm,
                                     lambda m: distributed.convert_ghost_batchnorm(m, 16)])
def test_reestimate_bn_accepts_the_converters_outputs(convert):
    torch.manual_seed(0)
    source = models.LeNet(batch_norm=True)
    batches = [torch.randn(16, 1, 28, 28) * 2 + 1 for _ in range(3)]
    converted = convert(source)
    bnstate.reestimate_bn(converted, batches)
    bnstate.reestimate_bn(source, batches)
    for (m0, v0), (m1, v1) in zip(bnstate.running_statistics(source), bnstate.running_statistics(converted)):
        assert torch.allclose(m0, m1, atol=1e-5) and torch.allclose(v0, v1, rtol=1e-4, atol=1e-5)
    assert all(bn.momentum == 0.1 for bn in models.batchnorm_layers(converted))


def test_reestimate_bn_failure_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = models.LeNet(batch_norm=True)
    model.train()(torch.randn(16, 1, 28, 28) + 2)
    model.eval()
    before = _buffers(model)
    with pytest.raises(TypeError, match="batches must yield tensors"):
        bnstate.reestimate_bn(model, [torch.randn(16, 1, 28, 28), "not a batch"])
    assert _same(before, _buffers(model)) and not model.training
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnstate.reestimate_bn(model, [torch.randn(16, 1, 28, 28), torch.randn(1, 1, 28, 28)])
    assert _same(before, _buffers(model))
    with pytest.raises(ValueError, match="no batch"):
        bnstate.reestimate_bn(model, [])
    assert _same(before, _buffers(model))
    with pytest.raises(TypeError, match="batches must be an iterable"):
        bnstate.reestimate_bn(model, None)
    assert _same(before, _buffers(model))


# --- confusing errors ----------------------------------------------------------------------------
def _toy_model():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _toy_data(n=12):
    return data.TensorData("toy", "train", torch.randn(n, 4), torch.arange(n) % 3, tuple("abc"), 0.0, 1.0)


def test_train_loop_and_fit_name_bad_arguments():
    model = _toy_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = _toy_data().batches(4)
    with pytest.raises(TypeError, match="batches must be an iterable of .* got NoneType"):
        train.train_loop(model, None, opt, steps=1)
    with pytest.raises(TypeError, match="loss_fn must be callable, got NoneType"):
        train.train_loop(model, batches, opt, steps=1, loss_fn=None)
    with pytest.raises(TypeError, match="model must be an nn.Module, got NoneType"):
        train.fit(None, batches, opt, 1, progress=False)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        train.fit(model, batches, opt, 1, loss_fn=None, progress=False)
    float_labels = [(torch.randn(4, 4), torch.tensor([0.0, 1.0, 2.0, 0.0]))]
    with pytest.raises(TypeError, match="integer class labels .* got dtype torch.float32"):
        train.train_loop(model, float_labels, opt, steps=1)
    with pytest.raises(TypeError, match="batches must yield \\(x, y\\) pairs of tensors"):
        train.train_loop(model, [(torch.randn(4, 4).tolist(), [0, 1, 2, 0])], opt, steps=1)


@pytest.mark.parametrize("device", ["mps", "cuda", "cuda:3", "nonsense"])
def test_unavailable_devices_are_named(device):
    if torch.cuda.is_available() and device.startswith("cuda"):
        pytest.skip("this machine has a GPU")
    model = _toy_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="device"):
        train.train_loop(model, _toy_data().batches(4), opt, steps=1, device=device)
    with pytest.raises(ValueError, match="device"):
        evaluate.evaluate(model, _toy_data(), device=device)
    with pytest.raises(ValueError, match="device"):
        train.fit(model, _toy_data().batches(4), opt, 1, device=device, progress=False)


def test_evaluate_names_bad_labels_and_loss():
    model = _toy_model()
    with pytest.raises(TypeError, match="integer class labels"):
        evaluate.evaluate(model, (torch.randn(6, 4), torch.zeros(6)))
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        evaluate.evaluate(model, _toy_data(), loss_fn=None)


def test_evaluate_batch_mode_with_a_last_batch_of_one_says_so():
    model = _toy_model()
    before = _buffers(model)
    with pytest.raises(ValueError, match="mode='batch'.*batch of one example.*batch_size"):
        evaluate.evaluate(model, _toy_data(9), batch_size=4, mode="batch")
    assert _same(before, _buffers(model))


def test_a_batch_size_of_one_is_not_blamed_on_drop_last():
    model = _toy_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="batch size of at least 2") as info:
        train.train_loop(model, _toy_data().batches(1, drop_last=True), opt, steps=2)
    assert "drop_last" not in str(info.value)


@pytest.mark.parametrize("seed", [2**70, -1])
def test_seeds_out_of_range_are_named(seed):
    with pytest.raises((ValueError, TypeError), match="seed must be an int"):
        data.Batches(torch.zeros(4, 2), torch.zeros(4), 2, seed=seed)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 4294967295\]"):
        selection.train_select_test(_toy_model, lambda p: torch.optim.SGD(p, lr=0.1), _toy_data(), _toy_data(),
                                    _toy_data(), 1, 4, seed=seed, progress=False)


def test_holdout_seed_overflow_is_named():
    with pytest.raises(ValueError, match="seed must be an int in"):
        data.holdout_rows(10, 2, seed=2**70)
    with pytest.raises(TypeError, match="seed must be an int"):
        data.holdout_rows(10, 2, seed="1")


def test_statistics_shift_and_dropout_mlp_name_bad_arguments():
    with pytest.raises(TypeError, match="before must be a list of \\(running_mean, running_var\\) tensor pairs"):
        bnstate.statistics_shift(5, 5)
    with pytest.raises(TypeError, match="sizes must be a list or tuple .* got NoneType"):
        bnstate.dropout_mlp(None)


def test_sync_batch_norm_names_missing_weight_and_bias():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match=r"weight must be a tensor of shape \(3,\).*got NoneType"):
        distributed.sync_batch_norm(x, None, None)
    with pytest.raises(TypeError, match="running_mean and running_var must both be"):
        distributed.sync_batch_norm(x, torch.ones(3), torch.zeros(3), torch.zeros(3), None)
    with pytest.raises(ValueError, match="momentum must be a number in"):
        distributed.sync_batch_norm(x, torch.ones(3), torch.zeros(3), momentum="0.1")


def test_lenet_names_the_input_shape_it_expects():
    with pytest.raises(ValueError, match=r"LeNet expects a batch of shape \(N, 1, 28, 28\).*got \(2, 1, 32, 32\)"):
        models.LeNet()(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got \(2, 3, 28, 28\)"):
        models.LeNet(batch_norm=True)(torch.randn(2, 3, 28, 28))
    assert models.LeNet()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_plots_name_bad_arguments():
    h = train.History(train_loss=[1.0, 0.5], train_accuracy=[0.5, 0.6])
    with pytest.raises(TypeError, match=r"metrics must be a list or tuple of History metric names, e.g. \['train_loss'\]"):
        plots.plot_histories({"run": h}, metrics="train_loss")
    with pytest.raises(ValueError, match="ncols must be a positive int, got int -1"):
        plots.plot_histories({"run": h}, ncols=-1)
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_histories({"run": train.History()})
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_histories({"run": h}, metrics=["val_accuracy"])
    bn = nn.BatchNorm1d(3, affine=False)
    with pytest.raises(TypeError, match="affine=False"):
        plots.plot_gamma_beta({"BN": (bn.weight, bn.bias)})
    with pytest.raises(ValueError, match=r"same length \(not zero\)"):
        plots.plot_gamma_beta({"BN": (torch.zeros(0), torch.zeros(0))})
    plots.plot_histories({"run": h, "empty": train.History()}, metrics=["train_loss"])   # one to draw is enough


@pytest.mark.parametrize("seeds", [[2**70], ["0"], 0, []])
def test_sweep_replica_batch_names_bad_seeds(seeds):
    toy = _td(torch.randn(16, 1, 28, 28), torch.arange(16) % 10)
    with pytest.raises((TypeError, ValueError), match="seed"):
        distributed.sweep_replica_batch(toy, toy, global_batch=8, per_replica=(4,), seeds=seeds, steps=1)


def test_train_epoch_of_a_diverged_model_reports_nan_accuracy_not_argmax_of_nan():
    import math as _math
    import torch
    from torch import nn
    from bncourse import train
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    result = train.train_epoch(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1))
    assert _math.isnan(result.loss) and _math.isnan(result.accuracy)


def test_freeze_bn_refusal_freezes_nothing():
    import pytest as _pytest
    from torch import nn
    from bncourse import bnstate
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False))
    with _pytest.raises(ValueError, match="track_running_stats=False"):
        bnstate.freeze_bn(model)
    assert not bnstate.is_frozen(model[0]) if hasattr(bnstate, "is_frozen") else "train" not in vars(model[0])
    assert model[0].weight.requires_grad and model.train() and model[0].training


def test_to_frozen_batchnorm_converts_a_model_that_is_one_bn_layer():
    import torch
    from torch import nn
    from bncourse import bnstate
    bn = nn.BatchNorm1d(3).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    frozen = bnstate.to_frozen_batchnorm(bn)
    assert isinstance(frozen, bnstate.FrozenBatchNorm1d) and not list(frozen.parameters())
    x = torch.randn(5, 3)
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)


def test_converters_refuse_a_frozen_model_instead_of_unfreezing_it():
    import pytest as _pytest
    from bncourse import bnstate, distributed, models
    frozen = bnstate.freeze_bn(models.LeNet(batch_norm=True))
    for convert in (lambda m: distributed.convert_sync_batchnorm(m), lambda m: distributed.convert_ghost_batchnorm(m, 2)):
        with _pytest.raises(ValueError, match="would unfreeze .*convert first, then freeze"):
            convert(frozen)
    converted = distributed.convert_ghost_batchnorm(models.LeNet(batch_norm=True), 2)
    bnstate.freeze_bn(converted)
    converted.train()
    assert not any(m.training for m in models.batchnorm_layers(converted))


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_scratch_bn_in_half_precision_matches_float64_on_a_large_batch(dtype, atol):
    from bncourse import layers
    torch.manual_seed(0)
    for x in (torch.randn(64, 2, 32, 32), torch.randn(8, 3, 4, 4) * 50 + 300):   # 65,536 values; a large offset
        x = x.to(dtype)
        bn, ref = layers.BatchNorm(x.shape[1]).to(dtype), torch.nn.BatchNorm2d(x.shape[1]).double()
        y = bn(x)
        assert y.dtype == dtype and torch.isfinite(y).all()
        assert (y.double() - ref(x.double())).abs().max().item() < atol * max(1.0, y.double().abs().max().item())
        assert torch.allclose(bn.running_var.double(), ref.running_var, rtol=2e-2)
        xg = x.clone().requires_grad_()
        bn(xg).square().sum().backward()
        assert xg.grad.dtype == dtype and torch.isfinite(xg.grad).all() and bn.weight.grad.dtype == dtype


def test_small_checks_that_used_to_let_bad_values_through():
    from bncourse import bnstate, experiments
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="base_lr must be a finite positive number"):
            experiments.linear_scaling(bad)
    d = data.TensorData("MNIST", "train", torch.randn(40, 1, 28, 28), torch.arange(40) % 10, tuple(map(str, range(10))), 0.0, 1.0)
    with pytest.raises(TypeError, match="seed must be an int, got float 1.5"):
        bnstate.class_sorted_batches(d, 4, 2, seed=1.5)
    ok = [(torch.zeros(3), torch.ones(3))]
    with pytest.raises(ValueError, match="running variances must be > 0"):
        bnstate.statistics_shift(ok, [(torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]))])
