"""The course's figures (matplotlib). Every function returns the Figure it drew."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .evaluate import Evaluation
from .train import History

#: Human-readable labels of History metrics.
METRIC_LABELS = {
    "train_loss": "training loss",
    "train_accuracy": "training accuracy",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "epoch_seconds": "seconds per epoch",
    "examples_per_second": "examples / s",
}


def _check_histories(histories: Mapping[str, History]) -> None:
    if not isinstance(histories, Mapping) or not histories:
        raise TypeError("histories must be a non-empty mapping of label -> bncourse.train.History")
    for label, h in histories.items():
        if not isinstance(h, History):
            raise TypeError(f"histories[{label!r}] must be a History, got {type(h).__name__}")


def plot_histories(
    histories: Mapping[str, History],
    metrics: Sequence[str] = ("train_loss",),
    ncols: int | None = None,
    title: str | None = None,
    logy: bool = False,
) -> Figure:
    """Compare training runs: one panel per metric, one line per run, x = epoch.

    Args:
        histories: label -> History, e.g. ``{"plain": h0, "BatchNorm": h1}``.
        metrics: History metric names, one panel each.
        ncols: panels per row (default: all in one row, at most 2 per row for 4 panels).
        title: figure title.
        logy: logarithmic y axis.
    """
    _check_histories(histories)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one History metric")
    for m in metrics:
        if m not in METRIC_LABELS:
            raise ValueError(f"unknown metric {m!r}; expected one of {list(METRIC_LABELS)}")
    ncols = ncols or (2 if len(metrics) == 4 else len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for label, h in histories.items():
            values = h.metric(metric)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(METRIC_LABELS[metric])
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(evaluations: Mapping[str, Evaluation], class_names: Sequence[str], title: str | None = None) -> Figure:
    """Grouped bars of per-class test accuracy, one group per class, one bar per model."""
    if not isinstance(evaluations, Mapping) or not evaluations:
        raise TypeError("evaluations must be a non-empty mapping of label -> bncourse.evaluate.Evaluation")
    for label, e in evaluations.items():
        if not isinstance(e, Evaluation):
            raise TypeError(f"evaluations[{label!r}] must be an Evaluation, got {type(e).__name__}")
        if len(e.per_class_accuracy) != len(class_names):
            raise ValueError(f"evaluations[{label!r}] has {len(e.per_class_accuracy)} classes, class_names has {len(class_names)}")
    k = len(evaluations)
    idx = np.arange(len(class_names))
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for i, (label, e) in enumerate(evaluations.items()):
        ax.bar(idx + (i - (k - 1) / 2) * width, e.per_class_accuracy, width, label=f"{label} ({e.accuracy:.2%})")
    lo = min(min(e.per_class_accuracy) for e in evaluations.values())
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_xticks(idx, class_names, rotation=30, ha="right")
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Notebook 06: the controversy about why BN works (bncourse.landscape)
# --------------------------------------------------------------------------------------------------

def plot_activation_drift(
    records: Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str] = ("p15", "p50", "p85"),
    title: str | None = None,
    max_steps: int | None = None,
) -> Figure:
    """Percentiles of one layer's activations over training, one panel per network (shared y axis).

    Args:
        records: label -> per-step records such as ``ActivationRecorder(...).history[name]``.
        keys: the percentile keys to draw, one line each.
        title: figure title.
        max_steps: draw only the first ``max_steps`` records (a close-up of the step-to-step jitter).
    """
    if not isinstance(records, Mapping) or not records:
        raise TypeError("records must be a non-empty mapping of label -> list of per-step records")
    keys = list(keys)
    for label, recs in records.items():
        if not recs or any(k not in recs[0] for k in keys):
            raise ValueError(f"records[{label!r}] must be a non-empty list of dicts holding {keys}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 2):
        raise ValueError(f"max_steps must be None or an int >= 2, got {max_steps!r}")
    fig, axes = plt.subplots(1, len(records), figsize=(4.2 * len(records), 3.2), sharey=True, squeeze=False)
    for ax, (label, recs) in zip(axes[0], records.items()):
        recs = list(recs)[:max_steps] if max_steps else list(recs)
        steps = np.arange(len(recs))
        for key in keys:
            ax.plot(steps, [r[key] for r in recs], lw=0.8, label=key)
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("activation percentiles")
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _probe_results(runs: Mapping[str, object], probe: str) -> dict[str, tuple[list[int], list]]:
    from .landscape import ProbeRun

    if not isinstance(runs, Mapping) or not runs:
        raise TypeError("runs must be a non-empty mapping of label -> bncourse.landscape.ProbeRun")
    out = {}
    for label, run in runs.items():
        if not isinstance(run, ProbeRun):
            raise TypeError(f"runs[{label!r}] must be a ProbeRun, got {type(run).__name__}")
        steps, results = run.results(probe)
        if not results:
            raise ValueError(f"runs[{label!r}] holds no {probe!r} results")
        out[label] = (steps, results)
    return out


def plot_covariate_shift(runs: Mapping[str, object], probe: str = "ics", title: str | None = None) -> Figure:
    """Internal covariate shift over training (Santurkar et al.'s Figure 3 layout).

    Top row ``||G - G'||_2``, bottom row ``cos(G, G')``, one column per measured layer, one line per
    network. ``runs`` maps labels to :class:`bncourse.landscape.ProbeRun` whose ``probe`` results are
    lists of :class:`~bncourse.landscape.ShiftMeasurement`.
    """
    data = _probe_results(runs, probe)
    n_layers = max(len(results[0]) for _, results in data.values())
    fig, axes = plt.subplots(2, n_layers, figsize=(4.0 * n_layers, 5.6), squeeze=False)
    for label, (steps, results) in data.items():
        for i in range(len(results[0])):
            axes[0][i].plot(steps, [r[i].l2 for r in results], lw=1, label=label)
            axes[1][i].plot(steps, [r[i].cosine for r in results], lw=1, label=label)
            axes[0][i].set_title(f"weight layer {results[0][i].layer + 1}")
    for i in range(n_layers):
        axes[0][i].set_ylabel("‖G − G′‖₂")
        axes[1][i].set_ylabel("cos(G, G′)")
        axes[1][i].set_xlabel("training step")
        for ax in axes[:, i]:
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_gradient_landscape(runs: Mapping[str, object], probe: str = "landscape", title: str | None = None) -> Figure:
    """The loss landscape along the gradient over training (Santurkar et al.'s Figure 4 layout).

    Three panels, one colour per network: (a) the band between the smallest and largest loss over
    the probed step lengths; (b) the band of gradient changes ``||∇L(W) − ∇L(W − ηg)||``
    (gradient predictiveness); (c) the effective β-smoothness. ``runs`` maps labels to
    :class:`bncourse.landscape.ProbeRun` whose ``probe`` results are
    :class:`~bncourse.landscape.GradientStepProbe`.
    """
    data = _probe_results(runs, probe)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for k, (label, (steps, results)) in enumerate(data.items()):
        colour = f"C{k}"
        losses = np.array([r.losses for r in results])
        changes = np.array([r.gradient_changes for r in results])
        axes[0].fill_between(steps, losses.min(1), losses.max(1), color=colour, alpha=0.35, label=label)
        axes[1].fill_between(steps, changes.min(1), changes.max(1), color=colour, alpha=0.35, label=label)
        axes[2].plot(steps, [r.beta_smoothness for r in results], color=colour, lw=1, label=label)
    for ax, ylabel, name in zip(axes, ("loss along the gradient", "‖∇L(W) − ∇L(W − ηg)‖₂", "max ‖Δ∇L‖ / ‖ΔW‖"),
                                ("(a) loss landscape", "(b) gradient predictiveness", "(c) effective β-smoothness")):
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
