"""Instruments for looking inside a network while it trains.

Three context managers, each attaching hooks on entry and removing every one of them on exit, so a
model outside a ``with`` block carries no hook and pays nothing:

* :class:`ActivationRecorder` -- forward hooks that summarize what chosen modules see or produce
  (mean, standard deviation, percentiles, saturated fraction), one record per forward call.
* :class:`GradientRecorder` -- the same summary of the gradient of the loss with respect to each
  chosen module's output, one record per backward pass.
* :class:`UpdateRatioTracker` -- optimizer step hooks that measure, for each weight, how large the
  step was compared with the weight itself (``||Δw|| / ||w||``).

And two measures of drift built on them: :func:`unit_drift` (how far each unit's percentiles move
over training, relative to their spread: Figure 1 (b, c), notebook 01) and :func:`step_drift` (the
step-to-step move of a layer's percentiles on the training batches, notebook 06).

Summaries are kept as small tensors during training and turned into Python numbers only when
``.history`` is read, so recording does not force a device synchronization every step.

Example:
    >>> model = MLP((784, 100, 10), activation="sigmoid")  # doctest: +SKIP
    >>> with ActivationRecorder(model, saturation="auto") as acts:  # doctest: +SKIP
    ...     train_epoch(model, batches, optimizer)
    >>> acts.history["2"][-1]["p50"]  # median output of the sigmoid on the last batch  # doctest: +SKIP
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .checks import flag, positive_int

__all__ = [
    "ACTIVATION_TYPES",
    "SATURATION_BOUNDS",
    "MAX_VALUES_PER_CALL",
    "DEFERRED_MAX_VALUES",
    "activation_modules",
    "numbered_activations",
    "percentile_keys",
    "summarize",
    "ActivationRecorder",
    "GradientRecorder",
    "UpdateRatioTracker",
    "layer_statistics",
    "update_ratio",
    "MIN_SPREAD",
    "unit_drift",
    "step_drift",
]

#: Module types treated as activations when no modules are given.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Softplus, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softsign, nn.PReLU,
)

#: ``saturation="auto"``: an output ``y`` counts as saturated when ``y <= low`` or ``y >= high``.
#: For sigmoid and tanh these are the flat ends where the local slope has fallen below about 12 %
#: (sigmoid) or 6 % (tanh) of its maximum; for ReLU, the zeros (no gradient passes).
SATURATION_BOUNDS: dict[type[nn.Module], tuple[float, float]] = {
    nn.Sigmoid: (0.03, 0.97),
    nn.Tanh: (-0.97, 0.97),
    nn.ReLU: (0.0, math.inf),
}

#: Larger tensors are summarized from an evenly strided subset of this many values.
MAX_VALUES_PER_CALL: int = 1 << 20

#: A recorded call with at most this many values is kept as a copy and summarized, together with
#: the others, only when the history is read: during training it costs one copy. Larger calls are
#: summarized at once (their copies would use too much memory).
DEFERRED_MAX_VALUES: int = 4096

Saturation = None | str | tuple[float, float] | Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# validation and the summary itself
# --------------------------------------------------------------------------------------------------

def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return model


def _check_percentiles(percentiles: object) -> tuple[float, ...]:
    if isinstance(percentiles, (str, bytes)) or not isinstance(percentiles, Sequence):
        raise TypeError(f"percentiles must be a sequence of numbers in [0, 100], got {type(percentiles).__name__}")
    out = []
    for p in percentiles:
        if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p <= 100:
            raise ValueError(f"percentiles must be numbers in [0, 100], got {p!r}")
        out.append(float(p))
    if len(set(out)) != len(out):
        raise ValueError(f"percentiles must be distinct, got {tuple(percentiles)!r}")
    return tuple(out)


def percentile_keys(percentiles: Sequence[float]) -> list[str]:
    """The record keys of ``percentiles``: ``(15, 50, 85)`` -> ``["p15", "p50", "p85"]``, ``2.5`` -> ``"p2.5"``."""
    return [f"p{p:g}" for p in _check_percentiles(percentiles)]


def _saturation_fn(saturation: Saturation, module: nn.Module | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The mask function for one module (``None``: not measured)."""
    if saturation is None:
        return None
    if isinstance(saturation, str):
        if saturation != "auto":
            raise ValueError(f"saturation must be None, 'auto', a (low, high) pair or a callable, got {saturation!r}")
        bounds = None
        if module is not None:
            bounds = next((b for t, b in SATURATION_BOUNDS.items() if isinstance(module, t)), None)
        return None if bounds is None else _saturation_fn(bounds, None)
    if isinstance(saturation, tuple):
        if len(saturation) != 2 or not all(isinstance(b, Real) and not isinstance(b, bool) for b in saturation):
            raise ValueError(f"a saturation range must be a (low, high) pair of numbers, got {saturation!r}")
        low, high = float(saturation[0]), float(saturation[1])
        if not low < high:
            raise ValueError(f"a saturation range needs low < high, got {saturation!r}")
        return lambda x: (x <= low) | (x >= high)
    if callable(saturation):
        return saturation
    raise TypeError(f"saturation must be None, 'auto', a (low, high) pair or a callable, got {type(saturation).__name__}")


def _summary_rows(x: torch.Tensor, quantiles: torch.Tensor, saturated: Callable | None) -> torch.Tensor:
    """Row ``i``: ``[mean, std, *percentiles, saturation]`` of ``x[i]`` (a 2-D tensor; NaN: not measured)."""
    x = x.detach().float()
    if x.shape[1] == 0:
        raise ValueError("cannot summarize an empty tensor")
    std, mean = torch.std_mean(x, dim=1, correction=0)
    parts = [mean[:, None], std[:, None]]
    if quantiles.numel():
        parts.append(torch.quantile(x, quantiles.to(x.device), dim=1).T)
    if saturated is None:
        parts.append(torch.full((x.shape[0], 1), math.nan, device=x.device))
    else:
        mask = saturated(x)
        if not isinstance(mask, torch.Tensor) or mask.shape != x.shape:
            raise ValueError("a saturation callable must be elementwise: a boolean tensor shaped like its input")
        parts.append(mask.float().mean(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """All values of ``x`` as one row (a strided subset beyond :data:`MAX_VALUES_PER_CALL`)."""
    x = x.detach().reshape(1, -1)
    if x.shape[1] > MAX_VALUES_PER_CALL:
        x = x[:, :: -(-x.shape[1] // MAX_VALUES_PER_CALL)]
    return x


def _row_to_dict(values: Sequence[float], keys: Sequence[str], has_saturation: bool) -> dict[str, float | None]:
    record: dict[str, float | None] = dict(zip(keys, values))
    record["saturation"] = values[len(keys)] if has_saturation else None
    return record


def summarize(
    x: torch.Tensor, percentiles: Sequence[float] = (15, 50, 85), saturation: Saturation = None
) -> dict[str, float | None]:
    """Summarize every value of ``x``: the record the recorders store for one call.

    Args:
        x: any tensor (all its values are pooled).
        percentiles: which percentiles to report, in [0, 100].
        saturation: ``None`` (not measured), a ``(low, high)`` pair (fraction of values ``<= low``
            or ``>= high``) or a callable returning a boolean mask of saturated values.
            (``"auto"`` needs a module and is only accepted by the recorders.)

    Returns:
        ``{"mean", "std", "p15", "p50", "p85", "saturation"}`` (population std; percentiles with
        linear interpolation, as ``numpy.percentile``; saturation a fraction in [0, 1] or ``None``).

    Example:
        >>> summarize(torch.arange(5.0), percentiles=(50,))
        {'mean': 2.0, 'std': 1.4142135381698608, 'p50': 2.0, 'saturation': None}
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(saturation, str):
        raise ValueError("saturation='auto' depends on the module type; pass a (low, high) pair or a callable")
    ps = _check_percentiles(percentiles)
    fn = _saturation_fn(saturation, None)
    q = torch.tensor([p / 100 for p in ps], dtype=torch.float32)
    keys = ["mean", "std", *percentile_keys(ps)]
    return _row_to_dict(_summary_rows(_flat(x), q, fn)[0].tolist(), keys, fn is not None)


def activation_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every activation module of ``model`` (see :data:`ACTIVATION_TYPES`), by its qualified name."""
    _check_model(model)
    return {name: m for name, m in model.named_modules() if isinstance(m, ACTIVATION_TYPES)}


def numbered_activations(model: nn.Module) -> dict[str, nn.Module]:
    """Every activation module of ``model``, named as learners count layers: ``"layer 1"``, ``"layer 2"``, ...

    Pass it as ``modules=`` to a recorder so that histories and plots say "layer 3", not the
    module's index inside an ``nn.Sequential``.
    """
    return {f"layer {i}": m for i, m in enumerate(activation_modules(model).values(), 1)}


def _check_modules(model: nn.Module, modules: Mapping[str, nn.Module] | None) -> dict[str, nn.Module]:
    if modules is None:
        found = activation_modules(model)
        if not found:
            raise ValueError(
                f"{type(model).__name__} has no activation module ({', '.join(t.__name__ for t in ACTIVATION_TYPES[:4])}, ...); "
                "pass modules={name: module} explicitly"
            )
        return found
    if not isinstance(modules, Mapping) or not modules:
        raise TypeError("modules must be None or a non-empty dict mapping a name to an nn.Module of the model")
    inside = {id(m) for m in model.modules()}
    for name, m in modules.items():
        if not isinstance(name, str):
            raise TypeError(f"module names must be strings, got {type(name).__name__}")
        if not isinstance(m, nn.Module):
            raise TypeError(f"modules[{name!r}] must be an nn.Module, got {type(m).__name__}")
        if id(m) not in inside:
            raise ValueError(f"modules[{name!r}] ({type(m).__name__}) is not a submodule of the model")
    return dict(modules)


def _select_unit(x: torch.Tensor, unit: int | None, name: str) -> torch.Tensor:
    if unit is None:
        return x
    if x.dim() < 2 or not -x.shape[1] <= unit < x.shape[1]:
        raise ValueError(f"unit={unit} needs a tensor with at least {unit + 1} features in dim 1; {name!r} gave shape {tuple(x.shape)}")
    return x[:, unit]


# --------------------------------------------------------------------------------------------------
# recorders
# --------------------------------------------------------------------------------------------------

class _Recorder:
    """Shared machinery: attach on ``__enter__``, detach on ``__exit__``, lazy history."""

    def __init__(self) -> None:
        self._handles: list = []
        # name -> (step, tensor, deferred): a summary row, or (deferred) the raw values to summarize.
        self._rows: dict[str, list[tuple[int, torch.Tensor, bool]]] = {}
        self._history: dict[str, list[dict]] = {}

    # the hooks --------------------------------------------------------------------------------
    def _attach(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def attached(self) -> bool:
        """Whether hooks are currently registered."""
        return bool(self._handles)

    def __enter__(self):
        if self._handles:
            raise RuntimeError(f"this {type(self).__name__} is already attached; leave its `with` block first")
        self._attach()
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this recorder registered (safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # the records -------------------------------------------------------------------------------
    def _to_dict(self, name: str, step: int, values: list[float]) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def _summarize_deferred(self, name: str, values: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _summaries(self, name: str, entries: list[tuple[int, torch.Tensor, bool]]) -> list[torch.Tensor]:
        """One summary row per entry; deferred entries of equal length are summarized in one batch."""
        rows: list[torch.Tensor | None] = [t if not deferred else None for _, t, deferred in entries]
        by_length: dict[int, list[int]] = {}
        for i, (_, t, deferred) in enumerate(entries):
            if deferred:
                by_length.setdefault(t.numel(), []).append(i)
        for indices in by_length.values():
            summary = self._summarize_deferred(name, torch.stack([entries[i][1] for i in indices]))
            for i, row in zip(indices, summary):
                rows[i] = row
        return rows  # type: ignore[return-value]

    @property
    def history(self) -> dict[str, list[dict]]:
        """Name -> one dict per recorded call, oldest first (converted from tensors when read)."""
        for name, rows in self._rows.items():
            done = self._history.setdefault(name, [])
            new = rows[len(done):]
            if new:
                values = torch.stack(self._summaries(name, new)).tolist()
                done.extend(self._to_dict(name, entry[0], v) for entry, v in zip(new, values))
        return {name: list(records) for name, records in self._history.items()}

    def series(self, name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one statistic of one module as arrays, ready to plot."""
        history = self.history
        if name not in history:
            raise KeyError(f"nothing recorded for {name!r}; recorded: {sorted(history)}")
        records = history[name]
        if records and key not in records[0]:
            raise KeyError(f"unknown statistic {key!r}; expected one of {list(records[0])}")
        steps = np.array([r["step"] for r in records], dtype=np.int64)
        values = np.array([np.nan if r[key] is None else r[key] for r in records], dtype=np.float64)
        return steps, values

    def clear(self) -> None:
        """Forget everything recorded so far (counters restart at 0)."""
        self._rows = {name: [] for name in self._rows}
        self._history = {}
        self._reset_counters()

    def _reset_counters(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _StatisticsRecorder(_Recorder):
    """Per-module summaries of tensors seen by hooks (activations or gradients)."""

    def __init__(
        self,
        model: nn.Module,
        modules: Mapping[str, nn.Module] | None,
        percentiles: Sequence[float],
        saturation: Saturation,
        every: int,
        unit: int | None,
        keep_last: bool,
    ) -> None:
        super().__init__()
        self.model = _check_model(model)
        self.modules = _check_modules(model, modules)
        self.percentiles = _check_percentiles(percentiles)
        self.every = positive_int("every", every)
        if unit is not None and (isinstance(unit, bool) or not isinstance(unit, int)):
            raise TypeError(f"unit must be None or an int (a feature / channel index), got {type(unit).__name__}")
        self.unit = unit
        self.keep_last = flag("keep_last", keep_last)
        self.saturation = saturation
        self._saturation = {name: _saturation_fn(saturation, m) for name, m in self.modules.items()}
        self._quantiles = torch.tensor([p / 100 for p in self.percentiles], dtype=torch.float32)
        self._keys = ["mean", "std", *percentile_keys(self.percentiles)]
        self._rows = {name: [] for name in self.modules}
        self._calls = {name: 0 for name in self.modules}
        self._last: dict[str, torch.Tensor] = {}

    @property
    def last(self) -> dict[str, torch.Tensor]:
        """Name -> the values of the last recorded call (a detached CPU copy; only with ``keep_last``),
        in the order of ``modules`` (input to output for the default modules)."""
        return {name: self._last[name] for name in self.modules if name in self._last}

    def _reset_counters(self) -> None:
        self._calls = {name: 0 for name in self.modules}
        self._last = {}

    def _record(self, name: str, x: torch.Tensor) -> None:
        step = self._calls[name]
        self._calls[name] = step + 1
        if step % self.every:
            return
        with torch.no_grad():
            x = _select_unit(x, self.unit, name)
            if x.numel() <= DEFERRED_MAX_VALUES:
                self._rows[name].append((step, x.detach().reshape(-1).clone(), True))
            else:
                self._rows[name].append((step, _summary_rows(_flat(x), self._quantiles, self._saturation[name])[0], False))
            if self.keep_last:
                self._last[name] = x.detach().to("cpu", copy=True)

    def _summarize_deferred(self, name: str, values: torch.Tensor) -> torch.Tensor:
        return _summary_rows(values, self._quantiles, self._saturation[name])

    def _to_dict(self, name: str, step: int, values: list[float]) -> dict:
        record = {"step": step}
        record.update(_row_to_dict(values, self._keys, self._saturation[name] is not None))
        return record


class ActivationRecorder(_StatisticsRecorder):
    """Record statistics of what modules produce (or receive) on every forward call.

    Inside ``with ActivationRecorder(model) as rec:`` a forward hook on each chosen module
    summarizes its output; on exit the hooks are removed. ``rec.history[name]`` is a list with one
    dict per recorded call: ``"step"`` (index of the forward call, counted from 0), ``"mean"``,
    ``"std"``, one ``"pNN"`` per percentile (e.g. ``"p15"``, ``"p50"``, ``"p85"``) and
    ``"saturation"`` (fraction of saturated values, or ``None`` when not measured).

    Args:
        model: the network.
        modules: name -> submodule to watch; default every activation module of ``model``, by its
            qualified name (e.g. ``{"2": Sigmoid(), "4": Sigmoid()}`` for an :class:`~bncourse.models.MLP`).
        percentiles: percentiles to record, in [0, 100].
        saturation: ``None``; ``"auto"`` (per module type, :data:`SATURATION_BOUNDS`, ``None`` for
            other types); a ``(low, high)`` pair (fraction ``<= low`` or ``>= high``); or a callable
            mapping the values to a boolean mask.
        every: record one call in ``every`` (calls ``0, every, 2·every, ...``): cheaper long runs.
        unit: record only feature / channel ``unit`` (index in dim 1) instead of the whole layer.
        keep_last: also keep a CPU copy of the last recorded values in ``.last[name]`` (histograms).
        record: ``"output"`` (what the module produces) or ``"input"`` (its first positional input,
            e.g. the pre-activation fed to a sigmoid).
        train_only: skip calls made while the module is in eval mode (e.g. evaluations during training).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid())
        >>> with ActivationRecorder(model, saturation="auto") as rec:
        ...     _ = model(torch.randn(8, 4))
        >>> sorted(rec.history["1"][0])
        ['mean', 'p15', 'p50', 'p85', 'saturation', 'std', 'step']
        >>> model[1]._forward_hooks  # removed on exit
        OrderedDict()
    """

    RECORD = ("output", "input")

    def __init__(
        self,
        model: nn.Module,
        modules: Mapping[str, nn.Module] | None = None,
        percentiles: Sequence[float] = (15, 50, 85),
        saturation: Saturation = None,
        every: int = 1,
        unit: int | None = None,
        keep_last: bool = False,
        record: str = "output",
        train_only: bool = False,
    ) -> None:
        if record not in self.RECORD:
            raise ValueError(f"record must be one of {self.RECORD}, got {record!r}")
        if record == "input" and saturation == "auto":
            raise ValueError("saturation='auto' bounds describe module outputs; with record='input' pass (low, high) bounds")
        flag("train_only", train_only)
        super().__init__(model, modules, percentiles, saturation, every, unit, keep_last)
        self.record = record
        self.train_only = train_only

    def _attach(self) -> None:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        use_input = self.record == "input"

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self.train_only and not module.training:
                return
            x = inputs[0] if use_input else output
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name!r} {self.record} is a {type(x).__name__}, not a tensor; watch another module")
            self._record(name, x)

        return hook


class GradientRecorder(_StatisticsRecorder):
    """Record statistics of the gradient of the loss with respect to each module's output.

    The counterpart of :class:`ActivationRecorder` on the backward pass: a forward hook attaches
    a tensor hook to each chosen module's output, which summarizes the gradient when ``backward()``
    reaches it (the gradient itself is left unchanged). One record per backward pass; forward calls
    without a backward (evaluation, ``torch.no_grad()``) leave no record. The records have the same
    keys as :class:`ActivationRecorder`'s, ``"step"`` counting backward passes.

    Args:
        model, modules, percentiles, every, unit, keep_last: as for :class:`ActivationRecorder`.
        saturation: ``None`` (default), a ``(low, high)`` pair or a callable applied to the
            gradient values (e.g. ``lambda g: g.abs() < 1e-8`` for a "vanished" fraction).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
        >>> with GradientRecorder(model) as grads:
        ...     model(torch.randn(8, 4)).sum().backward()
        >>> len(grads.history["1"])
        1
    """

    def __init__(
        self,
        model: nn.Module,
        modules: Mapping[str, nn.Module] | None = None,
        percentiles: Sequence[float] = (15, 50, 85),
        saturation: Saturation = None,
        every: int = 1,
        unit: int | None = None,
        keep_last: bool = False,
    ) -> None:
        if saturation == "auto":
            raise ValueError("saturation='auto' describes activations; for gradients pass (low, high) bounds or a callable")
        super().__init__(model, modules, percentiles, saturation, every, unit, keep_last)

    def _attach(self) -> None:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def on_gradient(grad: torch.Tensor) -> None:
            self._record(name, grad)

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor) and output.requires_grad and torch.is_grad_enabled():
                output.register_hook(on_gradient)

        return hook


class UpdateRatioTracker(_Recorder):
    """Track, for each weight, the size of every optimizer step relative to the weight.

    The ratio ``||w_after - w_before|| / ||w_before||`` (Frobenius norms) says how fast a layer
    learns independently of its scale: around 1e-3 is a common healthy value for SGD; much smaller
    and the layer barely moves, much larger and it is thrown around. Inside the ``with`` block a
    step pre-hook copies the tracked weights and a step post-hook measures the change; on exit both
    hooks are removed.

    ``history[name]`` holds one dict per recorded step: ``"step"`` (index of the optimizer step,
    from 0), ``"ratio"``, ``"update_norm"`` and ``"weight_norm"``.

    Args:
        model: the network.
        optimizer: the optimizer that updates it.
        params: name -> parameter to track; default every parameter of ``model`` with at least two
            dimensions (the weights of linear and convolutional layers), by its qualified name.
            Every tracked parameter must be updated by ``optimizer``.
        every: measure one step in ``every`` (the copy is made only on those steps).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with UpdateRatioTracker(model, opt) as ratios:
        ...     model(torch.randn(8, 4)).sum().backward(); opt.step()
        >>> sorted(ratios.history)
        ['0.weight', '2.weight']
    """

    KEYS = ("ratio", "update_norm", "weight_norm")

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        params: Mapping[str, nn.Parameter] | None = None,
        every: int = 1,
    ) -> None:
        super().__init__()
        self.model = _check_model(model)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.every = positive_int("every", every)
        if params is None:
            params = {name: p for name, p in model.named_parameters() if p.dim() >= 2}
            if not params:
                raise ValueError(f"{type(model).__name__} has no parameter with 2 or more dimensions; pass params explicitly")
        elif not isinstance(params, Mapping) or not params:
            raise TypeError("params must be None or a non-empty dict mapping a name to a parameter of the model")
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for name, p in params.items():
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params[{name!r}] must be a tensor parameter, got {type(p).__name__}")
            if id(p) not in optimized:
                raise ValueError(f"params[{name!r}] is not updated by the optimizer; build it on model.parameters()")
        self.params = dict(params)
        self._rows = {name: [] for name in self.params}
        self._steps = 0
        self._before: dict[str, torch.Tensor] | None = None

    def _reset_counters(self) -> None:
        self._steps = 0
        self._before = None

    def _attach(self) -> None:
        self._handles.append(self.optimizer.register_step_pre_hook(self._pre))
        self._handles.append(self.optimizer.register_step_post_hook(self._post))

    def _pre(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        self._before = None
        if self._steps % self.every == 0:
            self._before = {name: p.detach().clone() for name, p in self.params.items()}

    def _post(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        step = self._steps
        self._steps += 1
        if self._before is None:
            return
        with torch.no_grad():
            for name, p in self.params.items():
                before = self._before[name]
                update = torch.linalg.vector_norm(p.detach() - before)
                weight = torch.linalg.vector_norm(before)
                self._rows[name].append((step, torch.stack([update / weight, update, weight]).float(), False))
        self._before = None

    def _to_dict(self, name: str, step: int, values: list[float]) -> dict:
        return {"step": step, **dict(zip(self.KEYS, values))}


# --------------------------------------------------------------------------------------------------
# What the instruments compute, in plain form
# --------------------------------------------------------------------------------------------------

def layer_statistics(x: torch.Tensor, percentiles: Sequence[float] = (15, 50, 85),
                     bounds: tuple[float, float] | None = None) -> dict[str, float | None]:
    """What :class:`ActivationRecorder` and :class:`GradientRecorder` store for one call, in plain form.

    The recorders compute the same numbers in batches and turn them into Python numbers only when
    ``.history`` is read (a unit test proves them equal); this is the definition, for reading.
    """
    values = x.detach().float().flatten()                  # every value of the layer, pooled
    record = {"mean": values.mean().item(), "std": values.std(correction=0).item()}
    for p in percentiles:
        record[percentile_keys([p])[0]] = torch.quantile(values, p / 100).item()
    if bounds is None:
        record["saturation"] = None
    else:                                                  # the fraction of values in a flat tail
        low, high = bounds
        record["saturation"] = ((values <= low) | (values >= high)).float().mean().item()
    return record


def update_ratio(before: torch.Tensor, after: torch.Tensor) -> float:
    """What :class:`UpdateRatioTracker` measures for one weight and one step: ``||after - before|| / ||before||``."""
    return (torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before)).item()


# --------------------------------------------------------------------------------------------------
# How far a distribution drifts
# --------------------------------------------------------------------------------------------------

#: The narrowest typical spread :func:`unit_drift` divides by. A sigmoid's slope is at most 1/4, so
#: inputs spread over less than this move its output by less than 0.025: for the sigmoid such a unit
#: is a constant, and a smaller width would only inflate the ratio.
MIN_SPREAD: float = 0.1


def _checked_tracks(percentiles: object, start: object, min_spread: object) -> np.ndarray:
    q = np.asarray(percentiles, dtype=np.float64)
    if q.ndim != 3 or q.shape[0] < 2 or q.shape[1] < 2:
        raise ValueError(f"percentiles must have shape (probes >= 2, percentiles >= 2, units), got {q.shape}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < q.shape[0] - 1:
        raise ValueError(f"start must be a probe index in [0, {q.shape[0] - 2}], got {start!r}")
    if isinstance(min_spread, bool) or not isinstance(min_spread, Real) or not 0 < min_spread < float("inf"):
        raise ValueError(f"min_spread must be a positive finite number, got {min_spread!r}")
    return q


def unit_drift(percentiles: np.ndarray, start: int = 0, per_step: bool = False,
               min_spread: float = MIN_SPREAD) -> np.ndarray:
    """How far each unit's input distribution moves, in units of its own spread (Figure 1 (b, c) as a number).

    For every unit: the largest move of any tracked percentile from probe ``start`` to the last,
    divided by the unit's *typical spread* -- the width ``q_85 - q_15`` averaged over all probes, never
    less than ``min_spread`` (so a distribution that starts out narrow cannot make the ratio explode).
    With ``per_step`` the numerator is the mean move between consecutive probes instead.

    Args:
        percentiles: (T, P, U) percentile tracks, lowest percentile first, e.g. ``figure1.Run.percentiles``.

    Returns:
        (U,) one drift per unit.
    """
    q = _checked_tracks(percentiles, start, min_spread)
    width = q[:, -1, :] - q[:, 0, :]                                   # p85 - p15 at every probe
    spread = np.maximum(width.mean(axis=0), min_spread)                # typical spread, floored
    if per_step:
        moved = np.abs(np.diff(q[start:], axis=0)).max(axis=1).mean(axis=0)   # mean move between probes
    else:
        moved = np.abs(q[-1] - q[start]).max(axis=0)                   # largest percentile move, start -> end
    return moved / spread


def step_drift(records: Sequence[Mapping[str, float]], keys: Sequence[str] = ("p15", "p50", "p85"),
               relative: bool = True) -> float:
    """How far a layer's activation distribution moves per step, on the training batches (notebook 06).

    :func:`unit_drift` measures a fixed probe's net move; this is the step-to-step jitter of a recorder's
    per-step records.

    The mean, over consecutive records and over ``keys``, of ``|v_t - v_{t-1}|``; with ``relative``
    divided by the mean spread ``p_last - p_first`` of the keys (e.g. p85 − p15), so that layers
    with different scales compare fairly (a value of 0.1 means the percentiles jump by a tenth of
    the distribution's width per step).

    Args:
        records: one dict per step, e.g. ``ActivationRecorder(...).history[name]``.
        keys: the percentile keys to follow (at least one; two for ``relative``).
        relative: divide by the mean spread.
    """
    if not isinstance(records, Sequence) or len(records) < 2:
        raise ValueError("records must be a sequence of at least two per-step dicts")
    keys = list(keys)
    if not keys or (relative and len(keys) < 2):
        raise ValueError("keys must name at least one percentile (two when relative=True), e.g. ('p15', 'p50', 'p85')")
    missing = [k for k in keys if k not in records[0]]
    if missing:
        raise KeyError(f"records lack {missing}; they have {sorted(records[0])}")
    values = np.array([[r[k] for k in keys] for r in records], dtype=np.float64)
    drift = float(np.abs(np.diff(values, axis=0)).mean())
    if not relative:
        return drift
    spread = float((values[:, -1] - values[:, 0]).mean())
    if not spread > 0:
        raise ValueError(f"the spread {keys[-1]} - {keys[0]} must be positive on average to make the drift relative")
    return drift / spread
