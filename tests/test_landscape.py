"""bncourse.landscape: noisy BN, percentile drift, internal covariate shift and the gradient-direction probe,
on tiny models."""

import math

import numpy as np

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bncourse import diagnostics
from bncourse import landscape as ls
from bncourse.layers import BatchNorm
from bncourse.models import MLP, batchnorm_layers


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()])


def assert_unchanged(model, snap):
    state, modes = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    assert [m.training for m in model.modules()] == modes


def tiny_batch(n=32, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


# --------------------------------------------------------------------------------- NoisyBatchNorm
@pytest.mark.parametrize("norm_layer", [BatchNorm, nn.BatchNorm1d])
def test_noisy_bn_is_plain_bn_in_eval_and_noisy_in_training(norm_layer):
    torch.manual_seed(0)
    layer = ls.NoisyBatchNorm(16, norm_layer=norm_layer)
    x = torch.randn(256, 16) * 3 + 2
    noisy = layer(x)
    assert noisy.shape == x.shape
    assert -0.5 <= layer.last_mean <= 0.5 and 1.0 <= layer.last_scale <= 1.25
    # mean of s*a + m over many elements is about mu_t (a has zero mean), its std about sigma_t
    assert abs(noisy.mean().item() - layer.last_mean) < 0.05
    assert abs(noisy.std().item() - layer.last_scale) < 0.1
    first = layer.last_mean
    layer(x)
    assert layer.last_mean != first  # a new draw every step
    layer.eval()
    plain = norm_layer(16)
    plain.load_state_dict(layer.bn.state_dict())
    plain.eval()
    assert torch.allclose(layer(x), plain(x))


def test_noisy_bn_in_an_mlp_is_found_and_trains_gradients():
    model = MLP((12, 8, 8, 4), batch_norm=True, norm_layer=ls.NoisyBatchNorm)
    assert len(batchnorm_layers(model)) == 2
    x, y = tiny_batch()
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_noisy_bn_generator_makes_the_noise_reproducible():
    x = torch.randn(8, 5)
    a = ls.NoisyBatchNorm(5, generator=torch.Generator().manual_seed(3))(x)
    b = ls.NoisyBatchNorm(5, generator=torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, error", [
    ({"num_features": 0}, ValueError), ({"mean_range": -1}, ValueError), ({"scale_range": (1.2, 1.0)}, ValueError),
    ({"scale_range": 1.0}, ValueError), ({"jitter": -0.1}, ValueError), ({"norm_layer": 3}, TypeError),
    ({"generator": 1}, TypeError)])
def test_noisy_bn_rejects_bad_arguments(kwargs, error):
    args = {"num_features": 4, **kwargs}
    with pytest.raises(error):
        ls.NoisyBatchNorm(**args)


# ------------------------------------------------------------------ diagnostics.step_drift
def records(p50s, width=2.0):
    return [{"p15": v - width / 2, "p50": v, "p85": v + width / 2} for v in p50s]


def test_step_drift_measures_steps_relative_to_spread():
    assert diagnostics.step_drift(records([1.0] * 5)) == 0.0
    moving = records([0.0, 0.5, 0.0, 0.5])
    assert diagnostics.step_drift(moving, relative=False) == pytest.approx(0.5)
    assert diagnostics.step_drift(moving) == pytest.approx(0.25)
    assert diagnostics.step_drift(moving, keys=("p50",), relative=False) == pytest.approx(0.5)


def test_step_drift_rejects_bad_input():
    with pytest.raises(ValueError):
        diagnostics.step_drift(records([1.0]))
    with pytest.raises(ValueError):
        diagnostics.step_drift(records([1.0, 2.0]), keys=("p50",))
    with pytest.raises(KeyError):
        diagnostics.step_drift(records([1.0, 2.0]), keys=("p10", "p90"))
    with pytest.raises(ValueError):
        diagnostics.step_drift(records([1.0, 2.0], width=0.0))


# --------------------------------------------------------------------------------- internal covariate shift
@pytest.mark.parametrize("batch_norm", [False, True])
def test_ics_one_measurement_per_layer_after_the_first_and_model_untouched(batch_norm):
    torch.manual_seed(0)
    model = MLP((12, 10, 8, 4), batch_norm=batch_norm, norm_layer=BatchNorm)
    x, y = tiny_batch()
    snap = snapshot(model)
    result = ls.internal_covariate_shift(model, x, y, lr=0.5)
    assert_unchanged(model, snap)
    assert [r.layer for r in result] == [1, 2]
    assert [r.name for r in result] == [n for n in ls.weight_layers(model)][1:]
    for r in result:
        assert -1.0 <= r.cosine <= 1.0 and r.l2 > 0 and r.grad_norm > 0
        assert r.relative_l2 == pytest.approx(r.l2 / r.grad_norm)


def test_ics_vanishes_with_a_vanishing_step_and_matches_a_manual_computation():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = tiny_batch(16, 6, 3)
    tiny = ls.internal_covariate_shift(model, x, y, lr=1e-7)[0]
    assert tiny.l2 < 1e-5 and tiny.cosine == pytest.approx(1.0, abs=1e-5)
    # by hand: step the first layer, recompute the second layer's weight gradient
    lr = 0.3
    loss = F.cross_entropy(model(x), y)
    g = torch.autograd.grad(loss, list(model.parameters()))
    shifted = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    shifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        shifted[0].weight -= lr * g[0]
        shifted[0].bias -= lr * g[1]
    g_after = torch.autograd.grad(F.cross_entropy(shifted(x), y), shifted[2].weight)[0]
    measured = ls.internal_covariate_shift(model, x, y, lr=lr)[0]
    assert measured.l2 == pytest.approx((g[2] - g_after).norm().item(), rel=1e-5)
    assert measured.cosine == pytest.approx(F.cosine_similarity(g[2].flatten(), g_after.flatten(), dim=0).item(), rel=1e-5)


def test_ics_rejects_bad_input():
    model = MLP((12, 8, 4))
    x, y = tiny_batch()
    with pytest.raises(TypeError):
        ls.internal_covariate_shift("model", x, y, 0.1)
    with pytest.raises(ValueError):
        ls.internal_covariate_shift(model, x, y, 0.0)
    with pytest.raises(ValueError):
        ls.internal_covariate_shift(model, x, y[:5], 0.1)
    with pytest.raises(ValueError):
        ls.internal_covariate_shift(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), x, y, 0.1)


# --------------------------------------------------------------------------------- gradient direction
def test_probe_on_a_quadratic_finds_the_exact_smoothness():
    torch.manual_seed(2)
    x = torch.randn(20, 3)
    y = torch.randn(20, 1)
    model = nn.Linear(3, 1, bias=False)
    probe = ls.probe_gradient_direction(model, x, y, lr=0.05, multipliers=(0.5, 1, 2), loss_fn=F.mse_loss)
    w = model.weight.detach().reshape(3, 1)
    hessian = 2 * x.T @ x / 20
    g = hessian @ w - 2 * x.T @ y / 20
    # for a quadratic the gradient changes by eta * H g: change / distance = |Hg| / |g| for every step length
    expected = ((hessian @ g).norm() / g.norm()).item()
    assert probe.beta_smoothness == pytest.approx(expected, rel=1e-4)
    assert [c / d for c, d in zip(probe.gradient_changes, probe.distances)] == pytest.approx([expected] * 3, rel=1e-4)
    assert probe.distances == pytest.approx([0.05 * m * g.norm().item() for m in (0.5, 1, 2)], rel=1e-5)
    assert probe.loss0 == pytest.approx(F.mse_loss(model(x), y).item())
    assert probe.gradient_predictiveness == max(probe.gradient_changes)
    assert probe.loss_range == pytest.approx(max(probe.losses) - min(probe.losses))


def test_probe_restores_a_bn_model():
    torch.manual_seed(3)
    model = MLP((12, 10, 4), batch_norm=True, norm_layer=BatchNorm)
    model.eval()
    x, y = tiny_batch()
    snap = snapshot(model)
    probe = ls.probe_gradient_direction(model, x, y, lr=0.1)
    assert_unchanged(model, snap)
    assert len(probe.losses) == len(probe.multipliers) == 5
    assert all(math.isfinite(v) for v in probe.losses)


def test_probe_rejects_bad_input():
    model = MLP((12, 8, 4))
    x, y = tiny_batch()
    with pytest.raises(ValueError):
        ls.probe_gradient_direction(model, x, y, lr=0.1, multipliers=())
    with pytest.raises(ValueError):
        ls.probe_gradient_direction(model, x, y, lr=0.1, multipliers=(1, -1))
    with pytest.raises(ValueError):
        ls.probe_gradient_direction(model, x, y, lr=float("nan"))
    frozen = MLP((12, 8, 4)).requires_grad_(False)
    with pytest.raises(ValueError):
        ls.probe_gradient_direction(frozen, x, y, lr=0.1)


# --------------------------------------------------------------------------------- training with probes
def test_train_with_probes_calls_probes_on_schedule_and_trains():
    torch.manual_seed(4)
    model = MLP((12, 8, 4))
    x, y = tiny_batch(40)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)]  # 5 steps per epoch
    calls = []
    before = [p.clone() for p in model.parameters()]
    run = ls.train_with_probes(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
                               probes={"n": lambda m, xb, yb: calls.append(len(xb)) or len(calls)}, every=3,
                               progress=False)
    assert run.steps == 10 and len(run.train_loss) == 10
    steps, results = run.results("n")
    assert steps == [0, 3, 6, 9] and results == [1, 2, 3, 4]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(KeyError):
        run.results("missing")


def test_train_with_probes_rejects_bad_input():
    model = MLP((12, 8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [tiny_batch(8)]
    with pytest.raises(TypeError):
        ls.train_with_probes(model, batches, "sgd", 1)
    with pytest.raises(ValueError):
        ls.train_with_probes(model, batches, opt, 0)
    with pytest.raises(ValueError):
        ls.train_with_probes(model, batches, opt, 1, every=0)
    with pytest.raises(TypeError):
        ls.train_with_probes(model, batches, opt, 1, probes={"p": 3})
    with pytest.raises(ValueError):
        ls.train_with_probes(model, [], opt, 1, progress=False)


def test_recorders_see_only_the_training_steps_not_the_probes():
    from bncourse.diagnostics import ActivationRecorder

    torch.manual_seed(5)
    model = MLP((12, 8, 4), batch_norm=True, norm_layer=BatchNorm)
    x, y = tiny_batch(40)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)]
    rec = ActivationRecorder(model, {"relu": model[3]}, record="input")
    run = ls.train_with_probes(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                               probes={"landscape": lambda m, xb, yb: ls.probe_gradient_direction(m, xb, yb, 0.1)},
                               every=2, recorders=[rec], progress=False)
    assert len(rec.history["relu"]) == run.steps == 5
    assert not rec.attached
    with pytest.raises(TypeError):
        ls.train_with_probes(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), 1, recorders=[3])


# --------------------------------------------------------------------------------- the figures (bncourse.plots)
@pytest.fixture(scope="module")
def probed_runs():
    from bncourse.diagnostics import ActivationRecorder

    torch.manual_seed(6)
    x, y = tiny_batch(48)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    runs, acts = {}, {}
    for label, bn in (("standard", False), ("BN", True)):
        model = MLP((12, 10, 10, 4), batch_norm=bn, norm_layer=BatchNorm)
        rec = ActivationRecorder(model, {"r": model[-2]}, record="input")
        runs[label] = ls.train_with_probes(
            model, batches, torch.optim.SGD(model.parameters(), lr=0.1), 2,
            {"ics": lambda m, a, b: ls.internal_covariate_shift(m, a, b, 0.1),
             "landscape": lambda m, a, b: ls.probe_gradient_direction(m, a, b, 0.1)},
            every=2, recorders=[rec], progress=False)
        acts[label] = rec.history["r"]
    return runs, acts


def test_plot_activation_drift_one_panel_per_network(probed_runs):
    import matplotlib.pyplot as plt
    from bncourse import plots

    _, acts = probed_runs
    fig = plots.plot_activation_drift(acts, title="t")
    assert len(fig.axes) == 2 and [len(ax.lines) for ax in fig.axes] == [3, 3]
    close_up = plots.plot_activation_drift(acts, max_steps=3)
    assert len(close_up.axes[0].lines[0].get_xdata()) == 3
    with pytest.raises(TypeError):
        plots.plot_activation_drift({})
    with pytest.raises(ValueError):
        plots.plot_activation_drift(acts, keys=("p99",))
    with pytest.raises(ValueError):
        plots.plot_activation_drift(acts, max_steps=1)
    plt.close("all")


def test_plot_covariate_shift_and_landscape_layouts(probed_runs):
    import matplotlib.pyplot as plt
    from bncourse import plots

    runs, _ = probed_runs
    fig = plots.plot_covariate_shift(runs)
    assert len(fig.axes) == 4  # (l2, cos) x two measured layers
    assert all(len(ax.lines) == 2 for ax in fig.axes)
    fig = plots.plot_gradient_landscape(runs, title="x")
    assert len(fig.axes) == 3 and len(fig.axes[2].lines) == 2
    with pytest.raises(TypeError):
        plots.plot_covariate_shift({"a": 1})
    with pytest.raises(KeyError):
        plots.plot_gradient_landscape(runs, probe="nothing")
    plt.close("all")


def test_shift_by_phase_averages_the_probes_of_each_phase(probed_runs):
    runs, _ = probed_runs
    run = runs["BN"]
    steps, results = run.results("ics")
    assert steps == [0, 2, 4]
    cos = np.array([[r.cosine for r in step] for step in results])
    l2 = np.array([[r.l2 for r in step] for step in results])
    phases = ls.shift_by_phase(run, early=3)
    np.testing.assert_allclose(phases["cos early"], cos[:2].mean(0))      # steps 0 and 2
    np.testing.assert_allclose(phases["cos late"], cos[1:].mean(0))       # steps >= 4 / 2
    np.testing.assert_allclose(phases["cos"], cos.mean(0))
    np.testing.assert_allclose(phases["l2"], l2.mean(0))
    assert phases["cos early"].shape == (len(results[0]),)
    np.testing.assert_allclose(ls.shift_by_phase(run, early=1)["cos early"], cos[0])
    with pytest.raises(TypeError, match="ProbeRun"):
        ls.shift_by_phase({"ics": []}, early=3)
    with pytest.raises(ValueError, match="early"):
        ls.shift_by_phase(run, early=0)
    with pytest.raises(KeyError):
        ls.shift_by_phase(run, early=3, probe="missing")
