"""Why does BN help? The measurements of Santurkar, Tsipras, Ilyas & Madry (2018, arXiv 1805.11604).

Instruments for the debate about batch normalization's mechanism, each usable on any small
``nn.Sequential`` network:

* :class:`NoisyBatchNorm` -- a BN layer followed by noise that changes every step, with non-zero mean
  and non-unit variance: it deliberately *creates* shifting activation distributions.
* :func:`internal_covariate_shift` -- internal covariate shift as Santurkar et al. define it: the
  change of a layer's gradient when the layers before it are updated on the same batch.
* :func:`probe_gradient_direction` -- the loss landscape along the gradient: loss, gradient change
  ("gradient predictiveness") and effective β-smoothness for steps of several lengths.
* :func:`train_with_probes` -- SGD training that runs such probes every few steps.
* :func:`shift_by_phase` -- a run's internal covariate shift per layer, averaged early, late and overall.

All measurements use the model in training mode (BN with batch statistics, as during training)
and leave its parameters, running statistics and train/eval modes exactly as they found them.
"""

from __future__ import annotations

__all__ = [
    "LossFn", "NoisyBatchNorm", "ShiftMeasurement", "weight_layers",
    "internal_covariate_shift", "GradientStepProbe", "probe_gradient_direction", "ProbeRun",
    "train_with_probes", "shift_by_phase",
]

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checks import positive_int
from .evaluate import batch_statistics
from .layers import BatchNorm
from .train import train_loop

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Probe = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return model


def _check_batch(x: object, y: object) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"x and y must hold the same number (>= 2) of examples, got {x.shape[0]} and {y.shape[0]}")


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------------
# noisy BN
# --------------------------------------------------------------------------------------------------

class NoisyBatchNorm(nn.Module):
    """Batch normalization followed by noise with a non-zero mean and a non-unit variance.

    Santurkar et al.'s test of the internal-covariate-shift story: if BN helped *because* it keeps
    each layer's input distribution steady, a BN layer whose output distribution is shaken on purpose
    should lose the benefit. In training mode, at every forward call (every step), this layer draws
    one mean ``mu_t ~ U(-mean_range, mean_range)`` and one scale ``sigma_t ~ U(*scale_range)`` and
    then, per element of the normalized output ``a``, ``m ~ U(mu_t - jitter, mu_t + jitter)`` and
    ``s ~ N(sigma_t, jitter)``, returning ``s * a + m``. In eval mode it is the plain BN.

    Args:
        num_features: C, as for the BN layer.
        norm_layer: the BN to wrap, called with ``num_features`` (default: the course's scratch
            :class:`bncourse.layers.BatchNorm`; ``nn.BatchNorm1d`` works too).
        mean_range: ``mu_t`` is uniform on ``(-mean_range, mean_range)``.
        scale_range: ``(low, high)`` of the uniform ``sigma_t``.
        jitter: half-width of the per-element uniform shift and std of the per-element scale.
        generator: a ``torch.Generator`` for the noise (default: torch's global generator, seeded by
            :func:`bncourse.config.configure`).

    Attributes:
        last_mean, last_scale: ``mu_t`` and ``sigma_t`` of the latest training-mode call (``None`` before).

    Example:
        >>> from bncourse.models import MLP
        >>> MLP((784, 32, 10), batch_norm=True, norm_layer=NoisyBatchNorm)[2]  # doctest: +ELLIPSIS
        NoisyBatchNorm(...)
    """

    def __init__(
        self,
        num_features: int,
        norm_layer: Callable[[int], nn.Module] = BatchNorm,
        mean_range: float = 0.5,
        scale_range: tuple[float, float] = (1.0, 1.25),
        jitter: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        positive_int("num_features", num_features)
        if not callable(norm_layer):
            raise TypeError(f"norm_layer must be callable with the number of features, got {type(norm_layer).__name__}")
        if isinstance(mean_range, bool) or not isinstance(mean_range, (int, float)) or mean_range < 0:
            raise ValueError(f"mean_range must be a number >= 0, got {mean_range!r}")
        if (not isinstance(scale_range, tuple) or len(scale_range) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale_range)
                or not 0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"scale_range must be a (low, high) pair with 0 < low <= high, got {scale_range!r}")
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0:
            raise ValueError(f"jitter must be a number >= 0, got {jitter!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.bn = norm_layer(num_features)
        self.num_features = num_features
        self.mean_range = float(mean_range)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.jitter = float(jitter)
        self.generator = generator
        self.last_mean: float | None = None
        self.last_scale: float | None = None

    def _uniform(self, low: float, high: float, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, dtype=like.dtype, device=like.device)
        return low + (high - low) * u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x``; in training mode, then shake the result (see the class docstring)."""
        a = self.bn(x)
        if not self.training:
            return a
        with torch.no_grad():
            mu = self._uniform(-self.mean_range, self.mean_range, (), a).item()
            sigma = self._uniform(*self.scale_range, (), a).item()
            m = self._uniform(mu - self.jitter, mu + self.jitter, a.shape, a)
            s = sigma + self.jitter * torch.randn(a.shape, generator=self.generator, dtype=a.dtype, device=a.device)
        self.last_mean, self.last_scale = mu, sigma
        return s * a + m

    def extra_repr(self) -> str:
        return f"mean_range={self.mean_range}, scale_range={self.scale_range}, jitter={self.jitter}"


# --------------------------------------------------------------------------------------------------
# distribution stability
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# gradients at shifted parameters
# --------------------------------------------------------------------------------------------------

def _trainable(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


def _gradients(model: nn.Module, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               loss_fn: LossFn) -> tuple[float, tuple[torch.Tensor, ...]]:
    loss = loss_fn(model(x), y)
    return loss.item(), torch.autograd.grad(loss, list(params))


def _flat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@dataclass(frozen=True)
class ShiftMeasurement:
    """Internal covariate shift of one layer (Santurkar et al., Definition 2.1).

    Attributes:
        layer: position of the layer among the measured ones (0 = first weight layer).
        name: the layer's qualified name in the model.
        l2: ``||G - G'||_2`` between the layer's weight gradient before (G) and after (G') the earlier
            layers took their step on the same batch.
        cosine: ``cos(G, G')``; 1 means the direction did not change.
        grad_norm: ``||G||_2``, to put ``l2`` in proportion.
    """

    layer: int
    name: str
    l2: float
    cosine: float
    grad_norm: float

    @property
    def relative_l2(self) -> float:
        """``||G - G'|| / ||G||``: the shift in units of the gradient's own size."""
        return self.l2 / self.grad_norm if self.grad_norm > 0 else math.nan


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Linear`` and ``nn.Conv*`` module of ``model`` with a trainable weight, by qualified name, in order."""
    _check_model(model)
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.weight.requires_grad}


def internal_covariate_shift(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    loss_fn: LossFn = F.cross_entropy,
) -> list[ShiftMeasurement]:
    """Measure internal covariate shift the way Santurkar et al. define it, for every weight layer but the first.

    For weight layer ``i``: ``G`` is the gradient of the loss on ``(x, y)`` with respect to its
    weight at the current parameters; ``G'`` the same gradient after every parameter registered
    *before* that weight (the earlier layers, their BN's γ and β included) has taken one SGD step
    ``-lr * gradient`` on the same batch, the layer itself and the later ones left as they were.
    In a perfectly "shift-free" network ``G' = G``.

    Assumes parameters are registered in forward order (true for ``nn.Sequential`` models such as
    :class:`bncourse.models.MLP`). The model runs in training mode; its parameters, buffers and
    modes are restored afterwards.

    Returns:
        One :class:`ShiftMeasurement` per weight layer after the first, in forward order.
    """
    _check_model(model)
    _check_batch(x, y)
    lr = _check_positive("lr", lr)
    params = _trainable(model)
    index = {id(p): k for k, p in enumerate(params)}
    layers = weight_layers(model)
    if len(layers) < 2:
        raise ValueError("internal covariate shift needs at least two weight layers (Linear / Conv)")
    results = []
    with batch_statistics(model):
        _, grads = _gradients(model, params, x, y, loss_fn)
        for position, (name, layer) in enumerate(layers.items()):
            k = index[id(layer.weight)]
            if position == 0:
                continue
            saved = [p.detach().clone() for p in params[:k]]
            try:
                with torch.no_grad():
                    for p, g in zip(params[:k], grads[:k]):
                        p.sub_(lr * g)
                _, (after,) = _gradients(model, [layer.weight], x, y, loss_fn)
            finally:
                with torch.no_grad():
                    for p, s in zip(params[:k], saved):
                        p.copy_(s)
            before = grads[k]
            l2 = (before - after).norm().item()
            cosine = F.cosine_similarity(before.reshape(1, -1), after.reshape(1, -1)).item()
            results.append(ShiftMeasurement(position, name, l2, cosine, before.norm().item()))
    return results


@dataclass(frozen=True)
class GradientStepProbe:
    """The landscape along the gradient from the current parameters W (Santurkar et al., Section 3.1).

    For each step length ``eta = lr * multiplier`` the probe moved to ``W - eta * g`` (``g`` the
    gradient at W, all trainable parameters together) and recorded:

    Attributes:
        multipliers: the step lengths in units of the learning rate.
        loss0: the loss at W.
        losses: the loss at each ``W - eta * g``.
        gradient_changes: ``||grad L(W) - grad L(W - eta * g)||_2`` (small = the gradient predicts well).
        distances: ``||eta * g||_2``, how far each step moved.
    """

    multipliers: tuple[float, ...]
    loss0: float
    losses: tuple[float, ...]
    gradient_changes: tuple[float, ...]
    distances: tuple[float, ...]

    @property
    def loss_range(self) -> float:
        """Max minus min of the losses along the gradient: how much the loss varies over the step lengths."""
        return max(self.losses) - min(self.losses)

    @property
    def gradient_predictiveness(self) -> float:
        """The largest gradient change over the step lengths (Santurkar et al.'s ℓ2 gradient change)."""
        return max(self.gradient_changes)

    @property
    def beta_smoothness(self) -> float:
        """Effective β-smoothness: the largest gradient change per distance moved, ``max ||Δ∇L|| / ||Δw||``."""
        return max(c / d for c, d in zip(self.gradient_changes, self.distances) if d > 0)


def probe_gradient_direction(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    multipliers: Sequence[float] = (0.5, 1.0, 2.0, 3.0, 4.0),
    loss_fn: LossFn = F.cross_entropy,
) -> GradientStepProbe:
    """Walk along the negative gradient on one batch and record loss and gradient at each step length.

    The model runs in training mode on ``(x, y)``; parameters, buffers and modes are restored.

    Args:
        model: the network.
        x, y: the batch (the same batch at every step length, as in Santurkar et al.).
        lr: the learning rate; steps are ``lr * multiplier``.
        multipliers: positive step lengths in units of ``lr`` (e.g. ½× to 4×).
        loss_fn: mean loss of a batch.
    """
    _check_model(model)
    _check_batch(x, y)
    lr = _check_positive("lr", lr)
    multipliers = tuple(_check_positive("every multiplier", m) for m in multipliers)
    if not multipliers:
        raise ValueError("multipliers must hold at least one step length")
    params = _trainable(model)
    losses, changes, distances = [], [], []
    with batch_statistics(model):
        loss0, grads = _gradients(model, params, x, y, loss_fn)
        g0 = _flat(grads)
        saved = [p.detach().clone() for p in params]
        try:
            for m in multipliers:
                eta = lr * m
                with torch.no_grad():
                    for p, s, g in zip(params, saved, grads):
                        p.copy_(s - eta * g)
                loss, grads_m = _gradients(model, params, x, y, loss_fn)
                losses.append(loss)
                changes.append((g0 - _flat(grads_m)).norm().item())
                distances.append(eta * g0.norm().item())
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    return GradientStepProbe(multipliers, loss0, tuple(losses), tuple(changes), tuple(distances))


# --------------------------------------------------------------------------------------------------
# training with probes
# --------------------------------------------------------------------------------------------------

@dataclass
class ProbeRun:
    """What :func:`train_with_probes` recorded.

    Attributes:
        train_loss: the loss of every training step (on its batch, before the step).
        records: probe name -> list of ``(step, result)``, one entry per probed step.
    """

    train_loss: list[float] = field(default_factory=list)
    records: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Number of training steps taken."""
        return len(self.train_loss)

    def results(self, probe: str) -> tuple[list[int], list[Any]]:
        """``(steps, results)`` of one probe."""
        if probe not in self.records:
            raise KeyError(f"no probe named {probe!r}; recorded: {sorted(self.records)}")
        entries = self.records[probe]
        return [s for s, _ in entries], [r for _, r in entries]


def train_with_probes(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    probes: Mapping[str, Probe] | None = None,
    every: int = 50,
    loss_fn: LossFn = F.cross_entropy,
    recorders: Sequence[contextlib.AbstractContextManager] = (),
    progress: bool = True,
    desc: str | None = None,
) -> ProbeRun:
    """Train with :func:`bncourse.train.train_loop`, calling each probe every ``every`` steps.

    A probe is called as ``probe(model, x, y)`` on the batch about to be trained on, before the
    step, at steps ``0, every, 2·every, ...``; its result is stored with the step number. Probes
    must leave the model as they found it (the ones in this module do).

    ``recorders`` (e.g. a :class:`bncourse.diagnostics.ActivationRecorder`) are attached around each
    training step only, so they record exactly one forward call per step and nothing the probes do.

    Args:
        model: the network (on the device of the batches).
        batches: re-iterable mini-batches, e.g. ``train.batches(128, seed=0)``.
        optimizer: built on ``model.parameters()``.
        epochs: passes over ``batches``.
        probes: name -> probe, e.g. ``{"ics": lambda m, x, y: internal_covariate_shift(m, x, y, lr)}``.
        every: probe period in steps.
        loss_fn: the training loss.
        recorders: context managers entered for each training step and left right after it.
        progress: show a tqdm bar over the steps.
        desc: label of the bar.
    """
    _check_model(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    positive_int("epochs", epochs)
    positive_int("every", every)
    probes = dict(probes or {})
    for name, probe in probes.items():
        if not callable(probe):
            raise TypeError(f"probes[{name!r}] must be callable as probe(model, x, y)")
    recorders = list(recorders)
    for r in recorders:
        if not (hasattr(r, "__enter__") and hasattr(r, "__exit__")):
            raise TypeError(f"recorders must be context managers such as ActivationRecorder, got {type(r).__name__}")
    run = ProbeRun(records={name: [] for name in probes})
    attached = contextlib.ExitStack()

    def before_step(step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if step % every == 0:
            for name, probe in probes.items():
                run.records[name].append((step, probe(model, x, y)))
        for r in recorders:                # attached for the training step only, not for the probes
            attached.enter_context(r)

    def after_step(step: int) -> None:
        attached.close()

    model.train()
    with attached:                         # detached on any error too
        result = train_loop(model, batches, optimizer, epochs=epochs, loss_fn=loss_fn, before_step=before_step,
                            after_step=after_step, progress=progress, desc=desc)
    run.train_loss = result.losses.tolist()
    return run


def shift_by_phase(run: ProbeRun, early: int, probe: str = "ics") -> dict[str, np.ndarray]:
    """Average a run's internal-covariate-shift probes per layer, over three phases of training.

    Args:
        run: a :class:`ProbeRun` whose ``probe`` results are lists of :class:`ShiftMeasurement`
            (one per weight layer), as :func:`internal_covariate_shift` returns them.
        early: the probes at steps ``< early`` form the early phase.
        probe: the name the probe was recorded under.

    Returns:
        ``{"cos early", "cos late", "cos", "l2"}`` -> one value per measured layer: the mean
        cos(G, G') over the probes at steps ``< early``, over the second half of the run (steps
        ``>= last probed step / 2``), over all probes; and the mean ‖G − G'‖₂ over all probes.

    Raises:
        TypeError: ``run`` is not a :class:`ProbeRun`.
        ValueError: ``early`` is not a positive int, or no probe falls in the early phase.
        KeyError: the run recorded no probe named ``probe``.
    """
    if not isinstance(run, ProbeRun):
        raise TypeError(f"run must be a ProbeRun (from train_with_probes), got {type(run).__name__}")
    positive_int("early", early)
    steps, results = run.results(probe)
    steps = np.asarray(steps)
    if not (steps < early).any():
        raise ValueError(f"no {probe!r} probe before step {early}: the first was at step {steps.min() if steps.size else None}")
    cos = np.array([[r.cosine for r in step] for step in results])      # (probes, layers)
    l2 = np.array([[r.l2 for r in step] for step in results])
    return {"cos early": cos[steps < early].mean(0), "cos late": cos[steps >= steps.max() / 2].mean(0),
            "cos": cos.mean(0), "l2": l2.mean(0)}
