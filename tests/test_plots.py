"""bncourse.plots: figures are drawn from the data given, and bad input is refused."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from bncourse import plots  # noqa: E402
from bncourse.evaluate import Evaluation  # noqa: E402
from bncourse.train import History  # noqa: E402


def _history(scale):
    h = History()
    for e in range(3):
        h.train_loss.append(scale / (e + 1))
        h.val_loss.append(scale / (e + 1) + 0.1)
        h.train_accuracy.append(0.5 + e / 10)
        h.val_accuracy.append(0.4 + e / 10)
    return h


def test_plot_histories_one_line_per_run_per_panel():
    fig = plots.plot_histories({"plain": _history(2.0), "BN": _history(1.0)},
                               metrics=("train_loss", "val_loss", "train_accuracy", "val_accuracy"))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4
    assert [len(ax.lines) for ax in axes] == [2, 2, 2, 2]
    assert list(axes[0].lines[1].get_ydata()) == pytest.approx([1.0, 0.5, 1 / 3])
    assert axes[0].get_ylabel() == "training loss"
    plt.close(fig)


def test_plot_per_class_accuracy_bars():
    e1 = Evaluation(0.3, 0.9, (0.8, 1.0), 10)
    e2 = Evaluation(0.2, 0.95, (0.9, 1.0), 10)
    fig = plots.plot_per_class_accuracy({"a": e1, "b": e2}, ["zero", "one"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([0.8, 1.0, 0.9, 1.0])
    plt.close(fig)


def test_bad_input():
    with pytest.raises(TypeError, match="non-empty mapping"):
        plots.plot_histories({})
    with pytest.raises(TypeError, match="History"):
        plots.plot_histories({"x": [1, 2]})
    with pytest.raises(ValueError, match="unknown metric"):
        plots.plot_histories({"x": _history(1)}, metrics=("loss",))
    with pytest.raises(ValueError, match="classes"):
        plots.plot_per_class_accuracy({"a": Evaluation(0, 1, (1.0,), 1)}, ["a", "b"])


def test_plot_percentile_tracks_one_panel_per_network_three_lines_each():
    import numpy as np

    steps = np.arange(0, 50, 10)
    values = np.stack([steps * 0 - 1, steps * 0.0, steps * 0 + 1], axis=1)
    fig = plots.plot_percentile_tracks({"plain": (steps, values), "BN": (steps, values + 1)})
    assert len(fig.axes) == 2 and all(len(ax.lines) == 3 for ax in fig.axes)
    with pytest.raises(ValueError, match="shape"):
        plots.plot_percentile_tracks({"plain": (steps, values[:, :2])})
    plt.close("all")


def test_plot_gamma_beta_draws_one_bar_per_channel_and_layer():
    import numpy as np
    import torch
    fig = plots.plot_gamma_beta({"a": (torch.ones(6), torch.zeros(6)), "b": (np.full(6, 2.0), np.arange(6.0))}, title="t")
    gamma_ax, beta_ax = fig.axes
    assert len(gamma_ax.patches) == 12 and len(beta_ax.patches) == 12
    assert [p.get_height() for p in beta_ax.patches][6:] == list(range(6))
    with pytest.raises(ValueError, match="same length"):
        plots.plot_gamma_beta({"a": (np.ones(6), np.ones(5))})
    with pytest.raises(ValueError, match="same number of channels"):
        plots.plot_gamma_beta({"a": (np.ones(6), np.ones(6)), "b": (np.ones(3), np.ones(3))})
    with pytest.raises(TypeError, match="non-empty mapping"):
        plots.plot_gamma_beta({})
    plt.close(fig)


def test_plot_sweep_draws_a_diverged_run_at_its_chance_accuracy_not_at_the_top():
    from bncourse.experiments import SweepPoint
    points = {"BN": [SweepPoint(0.1, 0.5, 0.85, False, 1.0, 10), SweepPoint(10.0, float("inf"), 0.1, True, 1.0, 3)]}
    fig = plots.plot_sweep(points, metric="val_accuracy")
    crosses = [line for line in fig.axes[0].lines if line.get_marker() == "x" and len(line.get_xdata())]
    assert [list(line.get_ydata()) for line in crosses] == [[0.1]]
    fig = plots.plot_sweep(points, metric="train_loss")
    crosses = [line for line in fig.axes[0].lines if line.get_marker() == "x" and len(line.get_xdata())]
    assert crosses[0].get_ydata()[0] == pytest.approx(0.5 * 1.1)     # a diverged loss: along the top edge
    plt.close("all")
