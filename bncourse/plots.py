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
