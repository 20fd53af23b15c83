"""The course's figures (matplotlib). Every function returns the Figure it drew."""

from __future__ import annotations

__all__ = [
    "METRIC_LABELS", "plot_histories", "plot_per_class_accuracy", "plot_activation_drift",
    "plot_covariate_shift", "plot_gradient_landscape", "plot_percentile_tracks", "plot_step_curves",
    "plot_layer_histograms", "plot_layer_series", "plot_layer_profile", "plot_normalization",
    "SWEEP_METRIC_LABELS", "plot_sweep", "plot_normalization_axes", "plot_gamma_beta",
]

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .checks import positive_int
from .evaluate import Evaluation
from .experiments import SweepPoint
from .landscape import ProbeRun
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
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Sequence):
        raise TypeError(f"metrics must be a list or tuple of History metric names, e.g. [{metrics!r}], "
                        f"got {type(metrics).__name__} {metrics!r}")
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one History metric")
    for m in metrics:
        if m not in METRIC_LABELS:
            raise ValueError(f"unknown metric {m!r}; expected one of {list(METRIC_LABELS)}")
    empty = [label for label, h in histories.items() if not any(h.metric(m) for m in metrics)]
    if len(empty) == len(histories):
        raise ValueError(f"nothing to plot: no history records {metrics} (histories {empty} hold no epoch of them; "
                         "train with fit(...) first, with val=... for validation metrics)")
    if ncols is not None:
        positive_int("ncols", ncols)
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
    """Grouped bars of per-class test accuracy, one group per class, one bar per model.

    A model whose logits were not finite (NaN accuracies, see :class:`bncourse.evaluate.Evaluation`) gets no
    bars and its legend entry says so; the y-axis is scaled to the finite accuracies.
    """
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
        # a diverged model (non-finite logits: NaN accuracies) gets no bars, and says so in the legend
        shown = f"{e.accuracy:.2%}" if e.finite and not math.isnan(e.accuracy) else "non-finite logits, no accuracy"
        ax.bar(idx + (i - (k - 1) / 2) * width, e.per_class_accuracy, width, label=f"{label} ({shown})")
    finite = [a for e in evaluations.values() for a in e.per_class_accuracy if not math.isnan(a)]
    lo = min(finite) if finite else 0.0
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


# --------------------------------------------------------------------------------------------------
# Notebook 01: the intuition, measured (bncourse.diagnostics)
# --------------------------------------------------------------------------------------------------

def _check_nested(name: str, values: Mapping, inner: str) -> None:
    if not isinstance(values, Mapping) or not values:
        raise TypeError(f"{name} must be a non-empty mapping of label -> {inner}")
    for label, v in values.items():
        if not isinstance(v, Mapping) or not v:
            raise TypeError(f"{name}[{label!r}] must be a non-empty mapping of layer name -> {inner}")


def plot_percentile_tracks(
    tracks: Mapping[str, tuple[Sequence[float], object]],
    percentiles: Sequence[float] = (15, 50, 85),
    title: str | None = None,
    ylabel: str = "input of the sigmoid",
) -> Figure:
    """Percentiles of one unit's input against the training step, one panel per network (shared y axis).

    The way Figure 1 (b, c) of Ioffe & Szegedy draws the evolution of a sigmoid's input distribution.

    Args:
        tracks: label -> ``(steps, values)`` with ``values`` of shape (len(steps), len(percentiles)).
        percentiles: what the columns of ``values`` are, lowest first.
        title: figure title.
        ylabel: what the values are.
    """
    if not isinstance(tracks, Mapping) or not tracks:
        raise TypeError("tracks must be a non-empty mapping of label -> (steps, values)")
    arrays = {}
    for label, pair in tracks.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"tracks[{label!r}] must be a pair (steps, values)")
        steps, values = np.asarray(pair[0]), np.asarray(pair[1], dtype=float)
        if values.shape != (len(steps), len(percentiles)) or len(steps) < 2:
            raise ValueError(f"tracks[{label!r}]: values must have shape ({len(steps)}, {len(percentiles)}) "
                             f"with at least two steps, got {values.shape}")
        arrays[label] = (steps, values)
    fig, axes = plt.subplots(1, len(arrays), figsize=(4.2 * len(arrays), 3.2), sharey=True, squeeze=False)
    for ax, (label, (steps, values)) in zip(axes[0], arrays.items()):
        for column, p in enumerate(percentiles):
            ax.plot(steps, values[:, column], lw=1, label=f"{p:g}th percentile")
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _depth_colors(n: int) -> list:
    """``n`` colors from shallow (dark) to deep (light)."""
    return [plt.cm.viridis(i / max(n - 1, 1) * 0.9) for i in range(n)]


def _line_panel(lines, xlabel: str, ylabel: str, title: str | None, logy: bool, ax, figsize: tuple[float, float], **plot_kw) -> Figure:
    """Draw ``(label, x, y)`` lines into ``ax`` (or a new figure), with labels, grid, legend and title."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    for label, x, y in lines:
        ax.plot(x, y, label=label, **plot_kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_step_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
    ax=None,
) -> Figure:
    """Lines of a quantity against the training step, one per run (e.g. test accuracy every 500 steps).

    Args:
        curves: label -> ``(steps, values)`` of equal lengths.
        ylabel: what the values are.
        title: panel title.
        logy: logarithmic y axis.
        ax: draw into this Axes (default: a new figure).
    """
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError("curves must be a non-empty mapping of label -> (steps, values)")
    for label, c in curves.items():
        if not isinstance(c, (tuple, list)) or len(c) != 2 or len(c[0]) != len(c[1]) or len(c[0]) == 0:
            raise ValueError(f"curves[{label!r}] must be a pair (steps, values) of equal, non-zero lengths")
    lines = [(label, np.asarray(steps), np.asarray(values, dtype=float)) for label, (steps, values) in curves.items()]
    return _line_panel(lines, "training step", ylabel, title, logy, ax, figsize=(5.5, 3.4))


def plot_layer_histograms(
    values: Mapping[str, Mapping[str, object]],
    bins: int = 40,
    title: str | None = None,
    xlabel: str = "value",
) -> Figure:
    """One histogram per layer (columns) and network (rows), x axis shared along each row.

    Sharing the x axis within a network shows the layers on one scale: a layer whose values
    (activations, or gradients that have vanished) are much narrower than the others shrinks to a
    spike.

    Args:
        values: label -> layer name -> tensor or array of values (e.g. ``ActivationRecorder.last``).
        bins: bins per histogram.
        title: figure title.
        xlabel: what the values are (bottom row).
    """
    _check_nested("values", values, "tensor of values")
    positive_int("bins", bins)
    ncols = max(len(v) for v in values.values())
    nrows = len(values)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols + 0.6, 1.7 * nrows + 0.5), squeeze=False, sharey="row")
    for r, (label, layers) in enumerate(values.items()):
        arrays = {name: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float).ravel() for name, v in layers.items()}
        lo = min(a.min() for a in arrays.values())
        hi = max(a.max() for a in arrays.values())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        colors = _depth_colors(len(arrays))
        for c, ((name, a), color) in enumerate(zip(arrays.items(), colors)):
            ax = axes[r][c]
            weights = np.full(a.shape, 1.0 / a.size)
            ax.hist(a, bins=edges, weights=weights, color=color)
            ax.set_title(f"{label}: {name}" if c == 0 else name, fontsize=8)
            ax.tick_params(labelsize=6)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            ax.xaxis.get_offset_text().set_fontsize(6)
            if r == nrows - 1:
                ax.set_xlabel(xlabel, fontsize=7)
        for c in range(len(arrays), ncols):
            axes[r][c].set_visible(False)
        axes[r][0].set_ylabel("fraction", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layer_series(
    records: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]],
    key: str,
    ylabel: str | None = None,
    title: str | None = None,
    logy: bool = False,
    reference: float | None = None,
) -> Figure:
    """One statistic of every layer over training: one panel per network, one line per layer.

    Args:
        records: label -> layer name -> records with ``"step"`` and ``key``, e.g.
            ``ActivationRecorder.history``, ``GradientRecorder.history`` or ``UpdateRatioTracker.history``.
        key: the statistic, e.g. ``"std"``, ``"saturation"``, ``"ratio"``.
        ylabel: y label (default ``key``).
        title: figure title.
        logy: logarithmic y axis (shared by the panels).
        reference: draw a dashed horizontal line at this value (e.g. ``1e-3`` for update ratios).
    """
    _check_nested("records", records, "list of records")
    for label, layers in records.items():
        for name, recs in layers.items():
            if not recs or "step" not in recs[0] or key not in recs[0]:
                raise ValueError(f"records[{label!r}][{name!r}] must be a non-empty list of dicts with 'step' and {key!r}")
    fig, axes = plt.subplots(1, len(records), figsize=(4.6 * len(records), 3.3), sharey=True, squeeze=False)
    for ax, (label, layers) in zip(axes[0], records.items()):
        for (name, recs), color in zip(layers.items(), _depth_colors(len(layers))):
            ys = [np.nan if r[key] is None else r[key] for r in recs]
            ax.plot([r["step"] for r in recs], ys, color=color, lw=1, label=name)
        if reference is not None:
            ax.axhline(reference, color="k", ls="--", lw=0.8)
        if logy:
            ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel or key)
    axes[0][-1].legend(fontsize=6, ncol=2, title="layer", title_fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layer_profile(
    profiles: Mapping[str, Mapping[str, float]],
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
    ax=None,
) -> Figure:
    """A statistic against depth, one line per network (e.g. gradient std of each layer at initialization).

    Args:
        profiles: label -> layer name -> value, layers in order from input to output.
        ylabel: what the values are.
        title: panel title.
        logy: logarithmic y axis.
        ax: draw into this Axes (default: a new figure).
    """
    _check_nested("profiles", profiles, "value")
    lines = [(label, np.arange(1, len(layers) + 1), [float(v) for v in layers.values()]) for label, layers in profiles.items()]
    return _line_panel(lines, "layer (from input to output)", ylabel, title, logy, ax, figsize=(5.5, 3.3), marker="o", ms=3)


def plot_normalization(before, after, bins: int = 30, title: str | None = None) -> Figure:
    """Histograms of a batch before and after normalization, each titled with its mean and std.

    Args:
        before: the values fed to the normalization (tensor or array; all values pooled).
        after: the normalized values.
        bins: bins per histogram.
        title: figure title.
    """
    positive_int("bins", bins)
    arrays = []
    for name, v in (("before", before), ("after", after)):
        if not hasattr(v, "__len__") and not hasattr(v, "detach"):
            raise TypeError(f"{name} must be a tensor or an array, got {type(v).__name__}")
        a = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float).ravel()
        if a.size == 0:
            raise ValueError(f"{name} holds no values")
        arrays.append(a)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0))
    for ax, a, label, color in zip(axes, arrays, ("input batch", "normalized batch"), ("tab:gray", "tab:blue")):
        ax.hist(a, bins=bins, color=color)
        ax.axvline(a.mean(), color="k", lw=1)
        ax.set_title(f"{label}: mean {a.mean():+.2f}, std {a.std():.2f}")
        ax.set_xlabel("value")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- notebook 04: sweeps and the axes of each normalization ---------------------------------------


#: y-axis labels of :class:`~bncourse.experiments.SweepPoint` metrics.
SWEEP_METRIC_LABELS = {"train_loss": "final training loss", "val_accuracy": "validation accuracy"}


def plot_sweep(
    results: Mapping[str, Sequence[SweepPoint]],
    metric: str = "train_loss",
    xlabel: str = "learning rate",
    logx: bool = True,
    logy: bool = False,
    title: str | None = None,
) -> Figure:
    """One line per model of a sweep's ``metric`` against the swept value.

    Runs that diverged are drawn as crosses in the colour of their line, so that *where* training broke down
    stays visible: at their recorded value where it is finite (a diverged run's accuracy is chance level), and
    where it is not along the top edge of a loss panel (a diverged run's loss) or at 0 on an accuracy panel.

    Args:
        results: label -> the points of :func:`~bncourse.experiments.sweep_learning_rates` or
            :func:`~bncourse.experiments.sweep_batch_sizes`.
        metric: ``"train_loss"`` or ``"val_accuracy"``.
        xlabel: label of the swept value.
        logx, logy: logarithmic axes.
        title: panel title.
    """
    if not isinstance(results, Mapping) or not results:
        raise TypeError("results must be a non-empty mapping of label -> list of SweepPoint")
    for label, points in results.items():
        if not isinstance(points, Sequence) or not points or not all(isinstance(p, SweepPoint) for p in points):
            raise TypeError(f"results[{label!r}] must be a non-empty sequence of SweepPoint")
    if metric not in SWEEP_METRIC_LABELS:
        raise ValueError(f"metric must be one of {list(SWEEP_METRIC_LABELS)}, got {metric!r}")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    finite = [getattr(p, metric) for pts in results.values() for p in pts if not p.diverged]
    top = max(finite) * (1.6 if logy else 1.1) if finite else 1.0
    any_diverged = False
    for label, points in results.items():
        xs = [p.value for p in points if not p.diverged]
        ys = [getattr(p, metric) for p in points if not p.diverged]
        (line,) = ax.plot(xs, ys, marker="o", ms=4, label=label)
        bad = [p for p in points if p.diverged]
        if bad:
            any_diverged = True
            # at its recorded value where it has a finite one (a diverged run's accuracy is chance level),
            # else along the top edge for a loss and at 0 for an accuracy
            edge = top if "loss" in metric else 0.0
            ys_bad = [getattr(p, metric) if math.isfinite(getattr(p, metric)) else edge for p in bad]
            ax.plot([p.value for p in bad], ys_bad, ls="none", marker="x", ms=9, mew=2, color=line.get_color())
    if any_diverged:
        ax.plot([], [], ls="none", marker="x", color="gray", label="diverged (NaN loss)")
    if logx:
        ax.set_xscale("log", base=2 if xlabel == "batch size" else 10)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(SWEEP_METRIC_LABELS[metric])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _normalization_sets(kind: str, n: int, c: int, groups: int) -> list[tuple[int, int, int, int]]:
    """Each set of values normalized together, as a rectangle (n0, n1, c0, c1) of (example, channel) cells."""
    if kind == "batch":
        return [(0, n, ch, ch + 1) for ch in range(c)]
    if kind == "layer":
        return [(i, i + 1, 0, c) for i in range(n)]
    if kind == "instance":
        return [(i, i + 1, ch, ch + 1) for i in range(n) for ch in range(c)]
    size = c // groups
    return [(i, i + 1, g * size, (g + 1) * size) for i in range(n) for g in range(groups)]


def plot_normalization_axes(num_examples: int = 4, num_channels: int = 6, groups: int = 2) -> Figure:
    """Which values batch, layer, instance and group norm standardize together, side by side.

    Each panel is an ``(N, C, H, W)`` activation seen from above: a column per example, a row per
    channel, each square one whole H×W feature map (every normalization here always pools the H·W
    values of a map). Thick outlines separate the sets that get their own mean and variance; one
    set per panel is filled. Only batch norm's sets run across examples.
    """
    for name, value in (("num_examples", num_examples), ("num_channels", num_channels), ("groups", groups)):
        positive_int(name, value)
    if num_channels % groups:
        raise ValueError(f"groups ({groups}) must divide num_channels ({num_channels})")
    panels = [
        ("batch", "BatchNorm", "one set per channel:\nover N, H, W"),
        ("layer", "LayerNorm", "one set per example:\nover C, H, W"),
        ("instance", "InstanceNorm", "one set per example and channel:\nover H, W"),
        ("group", f"GroupNorm ({groups} groups)", "one set per example and group:\nover C/G, H, W"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.9))
    for ax, (kind, name, rule) in zip(axes, panels):
        sets = _normalization_sets(kind, num_examples, num_channels, groups)
        chosen = sets[min(1, len(sets) - 1)] if kind in ("batch", "layer") else sets[len(sets) // 2]
        for i in range(num_examples):
            for ch in range(num_channels):
                inside = chosen[0] <= i < chosen[1] and chosen[2] <= ch < chosen[3]
                ax.add_patch(plt.Rectangle((i, ch), 1, 1, facecolor="tab:orange" if inside else "0.9",
                                           edgecolor="white", lw=1))
        for n0, n1, c0, c1 in sets:
            ax.add_patch(plt.Rectangle((n0, c0), n1 - n0, c1 - c0, fill=False, edgecolor="0.15", lw=2))
        ax.set_xlim(-0.1, num_examples + 0.1)
        ax.set_ylim(num_channels + 0.1, -0.1)
        ax.set_aspect("equal")
        ax.set_xticks(np.arange(num_examples) + 0.5, [str(i) for i in range(num_examples)])
        ax.set_yticks(np.arange(num_channels) + 0.5, [str(c) for c in range(num_channels)])
        ax.tick_params(length=0)
        ax.set_xlabel("example n")
        ax.set_ylabel("channel c")
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(f"{name}\n{rule}", fontsize=10)
    fig.suptitle("Each square is one H×W feature map; outlined: values sharing one mean and variance", fontsize=10)
    fig.tight_layout()
    return fig


def plot_gamma_beta(layers: Mapping[str, tuple[object, object]], title: str | None = None) -> Figure:
    """The learned scale γ and shift β of a normalization layer, one bar per channel, side by side for
    several layers or frameworks (γ = 1 and β = 0 at the start are drawn as gray lines).

    Args:
        layers: label -> ``(gamma, beta)``, each a 1-d array or tensor of one value per channel
            (all of the same length), e.g. ``{"PyTorch": (bn.weight, bn.bias)}``.
        title: figure title.
    """
    if not isinstance(layers, Mapping) or not layers:
        raise TypeError(f"layers must be a non-empty mapping of label -> (gamma, beta), got {type(layers).__name__}")
    values = {}
    for label, pair in layers.items():
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"layers[{label!r}] must be a (gamma, beta) pair, got {type(pair).__name__}")
        if any(v is None for v in pair):
            raise TypeError(f"layers[{label!r}] must be a (gamma, beta) pair of arrays or tensors, got "
                            f"({type(pair[0]).__name__}, {type(pair[1]).__name__}): a layer with affine=False "
                            "(or bias=False) has no learned γ/β to plot")
        g, b = (np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float) for v in pair)
        if g.ndim != 1 or g.shape != b.shape or g.size == 0:
            raise ValueError(f"layers[{label!r}]: gamma and beta must be 1-d of the same length (not zero), got shapes "
                             f"{g.shape} and {b.shape}")
        values[label] = (g, b)
    channels = {g.size for g, _ in values.values()}
    if len(channels) != 1:
        raise ValueError(f"all layers must have the same number of channels, got {sorted(channels)}")
    n, width = channels.pop(), 0.8 / len(values)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for i, (label, (g, b)) in enumerate(values.items()):
        offset = (i - (len(values) - 1) / 2) * width
        for ax, v in zip(axes, (g, b)):
            ax.bar(np.arange(n) + offset, v, width=width, label=label)
    for ax, name, start in zip(axes, ("γ (scale)", "β (shift)"), (1.0, 0.0)):
        ax.axhline(start, color="gray", lw=0.8, ls="--")
        ax.set_title(name)
        ax.set_xlabel("channel")
        ax.set_xticks(np.arange(n))
    if len(values) > 1:
        axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
