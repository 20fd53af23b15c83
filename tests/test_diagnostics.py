"""Unit tests of bncourse.diagnostics on tiny models."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from bncourse import diagnostics
from bncourse.diagnostics import ActivationRecorder, GradientRecorder, UpdateRatioTracker, summarize
from bncourse.models import MLP


def tiny(batch_norm=False, activation="sigmoid"):
    torch.manual_seed(0)
    return MLP((6, 5, 4, 3), batch_norm=batch_norm, activation=activation)


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# --- summarize ------------------------------------------------------------------------------------

def test_summarize_matches_numpy():
    x = torch.randn(7, 9)
    s = summarize(x, percentiles=(15, 50, 85, 2.5), saturation=(-1.0, 1.0))
    flat = x.flatten().numpy().astype(np.float64)
    assert list(s) == ["mean", "std", "p15", "p50", "p85", "p2.5", "saturation"]
    assert s["mean"] == pytest.approx(flat.mean(), abs=1e-6)
    assert s["std"] == pytest.approx(flat.std(), abs=1e-6)
    for p in (15, 50, 85, 2.5):
        assert s[f"p{p:g}"] == pytest.approx(np.percentile(flat, p), abs=1e-5)
    assert s["saturation"] == pytest.approx(np.mean((flat <= -1) | (flat >= 1)))


def test_summarize_without_saturation_and_callable():
    assert summarize(torch.zeros(4))["saturation"] is None
    assert summarize(torch.tensor([0.0, 1.0, 2.0, 3.0]), saturation=lambda v: v > 1.5)["saturation"] == 0.5


@pytest.mark.parametrize("bad, error", [
    (dict(x=[1.0, 2.0]), TypeError),
    (dict(x=torch.zeros(0)), ValueError),
    (dict(x=torch.zeros(3), percentiles=(50, 101)), ValueError),
    (dict(x=torch.zeros(3), percentiles=(50, 50)), ValueError),
    (dict(x=torch.zeros(3), percentiles=50), TypeError),
    (dict(x=torch.zeros(3), saturation="auto"), ValueError),
    (dict(x=torch.zeros(3), saturation=(1.0, 0.0)), ValueError),
    (dict(x=torch.zeros(3), saturation=(0.0, 1.0, 2.0)), ValueError),
    (dict(x=torch.zeros(3), saturation=3), TypeError),
    (dict(x=torch.zeros(3), saturation=lambda v: True), ValueError),
])
def test_summarize_bad_input(bad, error):
    with pytest.raises(error):
        summarize(**bad)


def test_percentile_keys():
    assert diagnostics.percentile_keys((15, 50, 85)) == ["p15", "p50", "p85"]
    assert diagnostics.percentile_keys((2.5,)) == ["p2.5"]


def test_activation_modules_finds_every_activation_by_name():
    assert list(diagnostics.activation_modules(tiny())) == ["2", "4"]
    assert list(diagnostics.activation_modules(tiny(batch_norm=True))) == ["3", "6"]
    assert diagnostics.activation_modules(nn.Linear(2, 2)) == {}
    with pytest.raises(TypeError):
        diagnostics.activation_modules("model")


# --- ActivationRecorder ---------------------------------------------------------------------------

def test_activation_recorder_records_each_call_and_removes_hooks():
    model = tiny()
    x = torch.randn(10, 6)
    assert hook_count(model) == 0
    with ActivationRecorder(model, saturation="auto") as rec:
        assert rec.attached and hook_count(model) == 2
        model(x)
        model(x)
    assert not rec.attached and hook_count(model) == 0
    model(x)  # not recorded any more
    hist = rec.history
    assert set(hist) == {"2", "4"}
    assert [r["step"] for r in hist["2"]] == [0, 1]
    assert set(hist["2"][0]) == {"step", "mean", "std", "p15", "p50", "p85", "saturation"}
    out = torch.sigmoid(model[1](model[0](x)))
    expected = summarize(out, saturation=diagnostics.SATURATION_BOUNDS[nn.Sigmoid])
    for key, value in expected.items():
        assert hist["2"][0][key] == pytest.approx(value, abs=1e-6)


def test_activation_recorder_input_unit_and_every():
    model = tiny()
    x = torch.randn(10, 6)
    sig = model[4]
    with ActivationRecorder(model, {"last": sig}, record="input", unit=1, every=2, keep_last=True) as rec:
        for _ in range(5):
            model(x)
    pre = model[3](model[2](model[1](model[0](x))))[:, 1].detach()
    hist = rec.history["last"]
    assert [r["step"] for r in hist] == [0, 2, 4]
    assert hist[0]["p50"] == pytest.approx(float(np.percentile(pre.numpy(), 50)), abs=1e-6)
    assert hist[0]["saturation"] is None
    assert torch.equal(rec.last["last"], pre)
    steps, p85 = rec.series("last", "p85")
    assert steps.tolist() == [0, 2, 4] and p85.shape == (3,)


def test_activation_recorder_large_tensors_are_summarized_at_once():
    model = nn.Sequential(nn.Linear(3, diagnostics.DEFERRED_MAX_VALUES), nn.ReLU())
    x = torch.randn(2, 3)
    with ActivationRecorder(model, saturation="auto") as rec:
        model(x)
    assert rec._rows["1"][0][2] is False  # summarized in the hook, not deferred
    expected = summarize(torch.relu(model[0](x)), saturation=(0.0, math.inf))
    assert rec.history["1"][0]["saturation"] == pytest.approx(expected["saturation"])
    assert rec.history["1"][0]["p85"] == pytest.approx(expected["p85"], abs=1e-6)


def test_activation_recorder_train_only_and_bn_net():
    model = tiny(batch_norm=True)
    x = torch.randn(16, 6)
    with ActivationRecorder(model, record="input", train_only=True) as rec:
        model(x)
        model.eval()
        model(x)
    assert [len(v) for v in rec.history.values()] == [1, 1]
    # in training mode the input of each sigmoid is the BN output: mean 0, std 1 per unit at init
    assert rec.history["3"][0]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert rec.history["3"][0]["std"] == pytest.approx(1.0, abs=1e-3)


def test_activation_recorder_reentry_clear_and_error_in_block():
    model = tiny()
    rec = ActivationRecorder(model)
    with rec:
        with pytest.raises(RuntimeError):
            rec.__enter__()
        model(torch.randn(4, 6))
    with pytest.raises(ZeroDivisionError):
        with rec:
            model(torch.randn(4, 6))
            1 / 0
    assert hook_count(model) == 0
    assert len(rec.history["2"]) == 2
    rec.clear()
    assert rec.history == {"2": [], "4": []}
    with rec:
        model(torch.randn(4, 6))
    assert rec.history["2"][0]["step"] == 0


def test_activation_recorder_unit_out_of_range_raises():
    model = tiny()
    with ActivationRecorder(model, unit=7):
        with pytest.raises(ValueError, match="unit=7"):
            model(torch.randn(4, 6))
    assert hook_count(model) == 0


@pytest.mark.parametrize("kwargs, error", [
    (dict(model="net"), TypeError),
    (dict(modules={}), TypeError),
    (dict(modules={"x": nn.Sigmoid()}), ValueError),
    (dict(modules={"x": "Sigmoid"}), TypeError),
    (dict(record="weights"), ValueError),
    (dict(record="input", saturation="auto"), ValueError),
    (dict(saturation="max"), ValueError),
    (dict(every=0), ValueError),
    (dict(unit=1.5), TypeError),
    (dict(keep_last=1), TypeError),
    (dict(train_only="yes"), TypeError),
    (dict(percentiles=(-1,)), ValueError),
])
def test_activation_recorder_bad_input(kwargs, error):
    args = dict(model=tiny())
    args.update(kwargs)
    with pytest.raises(error):
        ActivationRecorder(**args)


def test_activation_recorder_needs_modules_when_there_is_no_activation():
    with pytest.raises(ValueError, match="no activation"):
        ActivationRecorder(nn.Linear(3, 2))
    model = nn.Sequential(nn.Linear(3, 2))
    with ActivationRecorder(model, {"linear": model[0]}) as rec:
        model(torch.randn(4, 3))
    assert len(rec.history["linear"]) == 1


def test_series_bad_names():
    model = tiny()
    with ActivationRecorder(model) as rec:
        model(torch.randn(4, 6))
    with pytest.raises(KeyError):
        rec.series("nope", "mean")
    with pytest.raises(KeyError):
        rec.series("2", "p99")


# --- GradientRecorder -----------------------------------------------------------------------------

def test_gradient_recorder_matches_autograd():
    model = tiny(activation="tanh")
    x = torch.randn(8, 6)
    with GradientRecorder(model, keep_last=True) as rec:
        model(x).square().sum().backward()
        with torch.no_grad():
            model(x)  # no backward: no record
    assert hook_count(model) == 0
    h = model[1](model[0](x))
    a = torch.tanh(h)
    a.retain_grad()
    model[5](torch.tanh(model[3](a))).square().sum().backward()
    hist = rec.history
    assert [len(v) for v in hist.values()] == [1, 1]
    assert torch.allclose(rec.last["2"], a.grad, atol=1e-6)
    assert hist["2"][0]["std"] == pytest.approx(a.grad.std(correction=0).item(), rel=1e-5)


def test_gradient_recorder_leaves_gradients_unchanged():
    x = torch.randn(8, 6)
    grads = []
    for record in (False, True):
        model = tiny()
        if record:
            with GradientRecorder(model):
                model(x).sum().backward()
        else:
            model(x).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_gradient_recorder_bad_input():
    with pytest.raises(ValueError):
        GradientRecorder(tiny(), saturation="auto")
    with pytest.raises(ValueError):
        GradientRecorder(tiny(), every=-1)
    rec = GradientRecorder(tiny(), saturation=lambda g: g.abs() < 1e-12)
    assert rec.percentiles == (15.0, 50.0, 85.0)


# --- UpdateRatioTracker ---------------------------------------------------------------------------

def test_update_ratio_tracker_sgd_ratio():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 6)
    with UpdateRatioTracker(model, opt, every=2) as tracker:
        assert len(opt._optimizer_step_pre_hooks) == 1 and len(opt._optimizer_step_post_hooks) == 1
        for _ in range(3):
            opt.zero_grad()
            model(x).sum().backward()
            w = model[1].weight.detach().clone()
            g = model[1].weight.grad.clone()
            opt.step()
    assert len(opt._optimizer_step_pre_hooks) == 0 and len(opt._optimizer_step_post_hooks) == 0
    hist = tracker.history
    assert sorted(hist) == ["1.weight", "3.weight", "5.weight"]
    assert [r["step"] for r in hist["1.weight"]] == [0, 2]
    last = hist["1.weight"][-1]
    assert last["update_norm"] == pytest.approx((0.1 * g).norm().item(), rel=1e-5)
    assert last["weight_norm"] == pytest.approx(w.norm().item(), rel=1e-5)
    assert last["ratio"] == pytest.approx(last["update_norm"] / last["weight_norm"], rel=1e-6)


def test_update_ratio_tracker_zero_lr_gives_zero():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with UpdateRatioTracker(model, opt, {"w": model[1].weight}) as tracker:
        model(torch.randn(4, 6)).sum().backward()
        opt.step()
    assert tracker.history["w"][0]["ratio"] == 0.0


def test_update_ratio_tracker_bad_input():
    model = tiny()
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1)
    with pytest.raises(TypeError):
        UpdateRatioTracker(model, "sgd")
    with pytest.raises(ValueError, match="not updated"):
        UpdateRatioTracker(model, opt)  # tracks 3.weight and 5.weight, which opt does not update
    with pytest.raises(TypeError):
        UpdateRatioTracker(model, opt, params={})
    with pytest.raises(TypeError):
        UpdateRatioTracker(model, opt, params={"w": "weight"})
    with pytest.raises(ValueError):
        UpdateRatioTracker(nn.Sequential(nn.BatchNorm1d(3)), torch.optim.SGD(nn.BatchNorm1d(3).parameters(), lr=1))
    with pytest.raises(ValueError):
        UpdateRatioTracker(model, torch.optim.SGD(model.parameters(), lr=0.1), every=0)


def test_last_is_in_module_order_for_gradients():
    model = tiny(activation="tanh")
    with GradientRecorder(model, keep_last=True) as rec:
        model(torch.randn(4, 6)).sum().backward()
    assert list(rec.last) == ["2", "4"]  # backward reaches "4" first; .last follows the model


# --- the plotting helpers of notebook 01 ----------------------------------------------------------

def _recorded(batch_norm):
    model = tiny(batch_norm=batch_norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ActivationRecorder(model, saturation="auto", keep_last=True) as acts, UpdateRatioTracker(model, opt) as ratios:
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 6)).sum().backward()
            opt.step()
    return acts, ratios


def test_notebook01_plots_draw_and_validate():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bncourse import plots

    (a0, r0), (a1, r1) = _recorded(False), _recorded(True)
    fig = plots.plot_layer_histograms({"plain": a0.last, "BN": a1.last})
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    fig = plots.plot_layer_series({"plain": r0.history, "BN": r1.history}, "ratio", logy=True, reference=1e-3)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3 + 1  # 3 weights + the reference line
    fig = plots.plot_layer_profile({"plain": {"a": 1.0, "b": 0.1}}, "std", logy=True)
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 0.1]
    fig = plots.plot_step_curves({"run": ([0, 500], [0.1, 0.9])}, "test accuracy")
    assert list(fig.axes[0].lines[0].get_xdata()) == [0, 500]
    fig = plots.plot_normalization(torch.randn(50) * 3 + 2, torch.randn(50))
    assert "mean" in fig.axes[0].get_title()
    plt.close("all")
    with pytest.raises(TypeError):
        plots.plot_layer_histograms({})
    with pytest.raises(TypeError):
        plots.plot_layer_histograms({"plain": {}})
    with pytest.raises(ValueError):
        plots.plot_layer_histograms({"plain": a0.last}, bins=0)
    with pytest.raises(ValueError):
        plots.plot_layer_series({"plain": a0.history}, "ratio")
    with pytest.raises(ValueError):
        plots.plot_step_curves({"run": ([0, 1], [0.5])}, "acc")
    with pytest.raises(TypeError):
        plots.plot_layer_profile([], "std")
    with pytest.raises(ValueError):
        plots.plot_normalization(torch.zeros(0), torch.zeros(3))


def test_numbered_activations_count_layers_as_learners_do():
    from bncourse import models

    model = models.MLP((784, 20, 20, 10), batch_norm=True, activation="tanh")
    named = diagnostics.numbered_activations(model)
    assert list(named) == ["layer 1", "layer 2"]
    assert all(isinstance(m, torch.nn.Tanh) for m in named.values())


def test_the_printed_plain_statistics_equal_what_the_recorders_store():
    """Notebook 01 prints layer_statistics and update_ratio; the instruments compute the same, faster."""
    from bncourse import diagnostics as dg

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 300), nn.Tanh(), nn.Linear(300, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    outputs = []
    model[1].register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
    befores = []
    with dg.ActivationRecorder(model, saturation=(-0.5, 0.5)) as acts, dg.UpdateRatioTracker(model, opt) as ratios:
        for batch in (4, 64):                          # 1,200 values (kept whole) and 19,200 (summarized at once)
            x = torch.randn(batch, 20)
            befores.append(model[0].weight.detach().clone())
            nn.functional.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
            opt.step()
            opt.zero_grad()
    for record, out in zip(acts.history["1"], outputs):
        plain = dg.layer_statistics(out, bounds=(-0.5, 0.5))
        for key, value in plain.items():
            assert record[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    after = model[0].weight.detach()
    assert ratios.history["0.weight"][-1]["ratio"] == pytest.approx(dg.update_ratio(befores[-1], after), rel=1e-5)
    assert dg.layer_statistics(torch.arange(5.0), percentiles=(50,)) == dg.summarize(torch.arange(5.0), percentiles=(50,))
