"""bncourse.figure1: the drift measure, the paper's network, the probe and the runs (tiny budgets)."""

import numpy as np
import pytest
import torch
from torch import nn

from bncourse import diagnostics
from bncourse import figure1 as f1


def _track(values):
    """(T, 3, U) from a list of (p15, p50, p85) per step, one unit."""
    return np.asarray(values, dtype=float)[:, :, None]


def test_unit_drift_is_the_largest_percentile_move_over_the_mean_spread():
    q = _track([(-1, 0, 1), (-1, 0.5, 1), (0, 1, 2)])  # spread 2 throughout; p15 and p85 move by 1
    assert diagnostics.unit_drift(q) == pytest.approx([0.5])
    assert diagnostics.unit_drift(q, start=1) == pytest.approx([0.5])       # p15: -1 -> 0
    assert diagnostics.unit_drift(q, per_step=True) == pytest.approx([(0.5 + 1) / 2 / 2])


def test_unit_drift_is_zero_for_a_still_distribution_and_finite_for_a_constant_one():
    still = np.tile(_track([(-1, 0, 1)]), (5, 1, 1))
    assert diagnostics.unit_drift(still) == pytest.approx([0.0])
    constant_but_moving = _track([(0, 0, 0), (3, 3, 3)])  # no spread at all: divided by the floor
    assert diagnostics.unit_drift(constant_but_moving) == pytest.approx([3 / diagnostics.MIN_SPREAD])
    narrow = _track([(0, 0, 1e-9), (1e-3, 1e-3, 1e-3)])
    assert np.isfinite(diagnostics.unit_drift(narrow)).all() and diagnostics.unit_drift(narrow)[0] < 0.02


def test_unit_drift_checks_its_arguments():
    q = _track([(-1, 0, 1), (0, 1, 2)])
    with pytest.raises(ValueError, match="shape"):
        diagnostics.unit_drift(q[:1])
    with pytest.raises(ValueError, match="start"):
        diagnostics.unit_drift(q, start=1)
    with pytest.raises(ValueError, match="min_spread"):
        diagnostics.unit_drift(q, min_spread=0)
    assert diagnostics.unit_drift(q, start=np.int64(0)).shape == (1,)


def test_setting_rejects_bad_values_and_labels_itself():
    with pytest.raises(ValueError, match="lr"):
        f1.Setting(lr=0)
    with pytest.raises(ValueError, match="affine_lr"):
        f1.Setting(affine_lr=-1.0)
    with pytest.raises(ValueError, match="steps"):
        f1.Setting(steps=0)
    with pytest.raises(TypeError, match="batch_norm"):
        f1.Setting(batch_norm=1)
    assert f1.Setting(batch_norm=True, affine_lr=10.0).label() == "BN, lr 1, init 0.01, binary, γ/β lr 10"


def test_network_is_the_papers_with_the_asked_initial_scale():
    model = f1.network(f1.Setting(batch_norm=True, init_std=0.05, seed=3))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [100, 100, 100, 10]
    assert sum(isinstance(m, nn.Sigmoid) for m in model) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == 3
    assert linears[0].weight.std().item() == pytest.approx(0.05, rel=0.02)
    assert linears[-1].bias.abs().max().item() == 0
    again = f1.network(f1.Setting(batch_norm=True, init_std=0.05, seed=3))
    assert torch.equal(linears[0].weight, again[1].weight)  # the seed fixes the weights


def test_probe_sees_gamma_xhat_plus_beta_and_leaves_running_statistics_alone():
    model = f1.network(f1.Setting(batch_norm=True, init_std=0.05))
    bn = [m for m in model if isinstance(m, nn.BatchNorm1d)][-1]
    with torch.no_grad():
        bn.weight.fill_(3.0)
        bn.bias.fill_(-2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    h = f1.last_sigmoid_input(model, torch.rand(500, 1, 28, 28))
    assert h.shape == (500, 100)
    assert h.mean(0) == pytest.approx(torch.full((100,), -2.0), abs=1e-4)  # batch statistics, then γ, β
    assert h.std(0, correction=0) == pytest.approx(torch.full((100,), 3.0), rel=1e-3)
    assert not model.training  # the mode is the caller's
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unit_percentiles_per_column():
    values = torch.arange(101, dtype=torch.float32)[:, None] * torch.tensor([[1.0, -1.0]])
    q = f1.unit_percentiles(values)
    assert q.shape == (3, 2)
    assert q[:, 0].tolist() == pytest.approx([15, 50, 85])
    assert q[:, 1].tolist() == pytest.approx([-85, -50, -15])
    with pytest.raises(ValueError, match="2-D"):
        f1.unit_percentiles(torch.zeros(3))


def test_a_tiny_run_probes_from_step_0_and_trains_gamma_beta_at_their_own_rate():
    setting = f1.Setting(batch_norm=True, steps=20, probe_every=10, eval_every=10, affine_lr=5.0)
    result = f1.run(setting)
    assert result.probe_steps.tolist() == [0, 10, 20]
    assert result.percentiles.shape == (3, 3, 100)
    assert (np.diff(result.percentiles, axis=1) >= 0).all()  # p15 <= p50 <= p85
    assert result.eval_steps.tolist() == [10, 20]
    assert ((0 <= result.test_accuracy) & (result.test_accuracy <= 1)).all()
    assert f1.load_splits(True).val.split == "validation" and len(f1.load_splits(True).val) == f1.VALIDATION_SIZE
    groups = f1._optimizer(f1.network(setting), setting).param_groups
    assert [g["lr"] for g in groups] == [1.0, 5.0] and len(groups[1]["params"]) == 6


def test_binary_inputs_are_zero_or_one_and_validation_is_held_out_of_training():
    splits = f1.load_splits(True)
    assert set(torch.unique(splits.train.x).tolist()) == {0.0, 1.0}
    assert len(splits.train) + len(splits.val) == 60000 and splits.probe.shape == (f1.PROBE_SIZE, 1, 28, 28)


def test_run_many_in_workers_gives_the_same_runs_as_in_process():
    settings = [f1.Setting(batch_norm=bn, steps=12, probe_every=6, eval_every=12) for bn in (False, True)]
    here = f1.run_many(settings, processes=1, progress=False)
    there = f1.run_many(settings, processes=2, progress=False)
    for a, b in zip(here, there):
        assert a.setting == b.setting
        np.testing.assert_allclose(a.percentiles, b.percentiles, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="Setting"):
        f1.run_many([], progress=False)
