"""The exercises of notebook 07 (BN in practice): ``q1`` (freeze BN for good) and ``q2`` (AdaBN by hand), each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

Example:
    >>> from bncourse.exercises import ____
    >>> def freeze_bn(model):
    ...     return ____
    >>> freeze_bn = q1.answer_or_solution(freeze_bn)  # doctest: +SKIP
    >>> q1.check(freeze_bn)                           # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2",
    # the reference solutions
    "freeze_bn", "adabn",
    # the exercise classes
    "FreezeBatchNorm", "AdaBN",
]

import copy
import types
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import BatchNorm
from ..models import batchnorm_layers
from .core import Exercise, _Wrong, _generator, _max_diff


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in batchnorm_layers(model) if isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchNorm))]


# ---------------------------------------------------------------------------------------------
# 1. Freeze BN so that it stays frozen
# ---------------------------------------------------------------------------------------------
def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)             # whatever mode is asked for: eval


def freeze_bn(model: nn.Module) -> None:
    """Reference solution of :class:`FreezeBatchNorm`."""
    for bn in batchnorm_layers(model):              # every BN, nested ones and the course's own included
        bn.weight.requires_grad_(False)             # gamma
        bn.bias.requires_grad_(False)               # beta
        bn.train = types.MethodType(_stay_in_eval, bn)   # this layer's train() now always means eval()
        bn.eval()


class FreezeBatchNorm(Exercise):
    """Freeze every BN layer -- statistics and γ/β -- so that a later ``model.train()`` cannot undo it."""

    number = 1
    title = "Freeze BN for good"
    task = ("Write `freeze_bn(model)` that freezes every batch-norm layer of `model` in place (return nothing): "
            "each BN layer — however deeply nested, torch's `BatchNorm1d/2d` and the course's own "
            "`bncourse.layers.BatchNorm` alike — must normalize with its running statistics and never update "
            "them, and its γ and β must get no gradient. It must stay that way after the training loop calls "
            "`model.train()`, while every other module (dropout, ...) still follows `model.train()` and every "
            "other parameter still trains.")
    hint_text = ("`model.eval()` is undone by the next `model.train()`, which calls `train()` on every child. So "
                 "give each BN layer a `train` of its own that always switches it to eval mode: "
                 "`bn.train = types.MethodType(some_function, bn)`. Find the layers with "
                 "`bncourse.models.batchnorm_layers(model)` (it walks `model.modules()`, not just `children()`).")
    explanation = ("`nn.Module.train(mode)` sets `self.training` and calls `child.train(mode)` for every child, so a "
                   "`train` method set on the BN instance itself is what its parent calls: it sets the layer to eval "
                   "mode whatever the mode asked for. `requires_grad_(False)` on γ and β alone is the classic "
                   "mistake: the layer stays in training mode, normalizes with batch statistics and overwrites its "
                   "running statistics with those of the new data. `torchvision.ops.FrozenBatchNorm2d` "
                   "(`bncourse.bnstate.to_frozen_batchnorm`) gets there by replacing the layers with ones that "
                   "have no mode and no parameters; `bncourse.bnstate.freeze_bn` is this solution with checks.")
    reference = staticmethod(freeze_bn)

    @staticmethod
    def _model() -> nn.Sequential:
        torch.manual_seed(11)
        block = nn.Sequential(nn.Linear(4 * 4 * 3, 8, bias=False), BatchNorm(8), nn.ReLU(), nn.Dropout(0.5))
        model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                              nn.Sequential(block, nn.Linear(8, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU()),
                              nn.Linear(6, 3))
        g = _generator(12)
        with torch.no_grad():
            for bn in _bn_layers(model):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        return model.train()

    def _verify(self, answer: Callable[..., Any]) -> str:
        model = self._model()
        bns = _bn_layers(model)
        names = {id(m): n for n, m in model.named_modules()}
        out = self._call(answer, model)
        if out is not None and out is not model:
            raise _Wrong(f"freeze the model in place and return None; you returned a {type(out).__name__}")
        if [id(m) for m in _bn_layers(model)] != [id(m) for m in bns]:
            raise _Wrong("the BN layers were replaced or removed: keep them and change their state")
        in_eval_now = [not bn.training for bn in bns]
        model.train()
        training = [names[id(bn)] for bn in bns if bn.training]
        trainable = [f"{names[id(bn)]}.{n}" for bn in bns for n, p in bn.named_parameters() if p.requires_grad]
        if training:
            if all(in_eval_now):
                raise _Wrong(f"right after freeze_bn every BN was in eval mode, but model.train() switched {training} "
                             "back to training mode: eval() does not survive the training loop's model.train()")
            if not trainable and len(training) == len(bns):
                raise _Wrong("γ and β are frozen, but every BN is still in training mode: requires_grad_(False) alone "
                             "leaves the running statistics to be overwritten by every training batch")
            kinds = {type(m).__name__ for m in bns if names[id(m)] in training}
            if kinds == {"BatchNorm"}:
                raise _Wrong(f"the course's own bncourse.layers.BatchNorm ({training}) was not frozen: recognise it "
                             "too (bncourse.models.batchnorm_layers finds both kinds)")
            if all("." in n for n in training):
                raise _Wrong(f"the nested BN layers {training} were missed: walk model.modules(), not only "
                             "model.children()")
            raise _Wrong(f"after model.train() these BN layers are in training mode: {training}")
        if trainable:
            raise _Wrong(f"the BN layers stay in eval mode, but γ/β still get gradients: {trainable}")
        bn_params = {id(p) for bn in bns for p in bn.parameters()}
        frozen_others = [n for n, p in model.named_parameters() if id(p) not in bn_params and not p.requires_grad]
        if frozen_others:
            raise _Wrong(f"you froze parameters that are not BN's γ or β: {frozen_others}")
        not_training = [n for n, m in model.named_modules() if m.training is False and id(m) not in {id(b) for b in bns}]
        if not_training:
            raise _Wrong(f"after model.train() these modules that are not BN stay in eval mode: {not_training} — "
                         "only the BN layers may be frozen")
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        x, y = torch.randn(8, 1, 6, 6, generator=_generator(13)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        F.cross_entropy(model(x), y).backward()
        opt.step()
        state = model.state_dict()
        bn_keys = [f"{names[id(bn)]}.{k}" for bn in bns for k in bn.state_dict()]
        moved = [k for k in bn_keys if k in state and not torch.equal(state[k], snapshot[k])]
        if moved:
            raise _Wrong(f"after a training step this BN state changed: {moved}")
        still = [n for n, p in model.named_parameters() if id(p) not in bn_params and torch.equal(p, snapshot[n])]
        if still:
            raise _Wrong(f"after a training step these weights did not move although they should train: {still}")
        return ("every BN layer (nested, torch's and the course's) stays in eval mode after model.train(), with "
                "fixed γ, β and statistics through an SGD step; the other weights train and dropout follows the model.")


# ---------------------------------------------------------------------------------------------
# 2. AdaBN: re-estimate the statistics on the new domain
# ---------------------------------------------------------------------------------------------
def adabn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Reference solution of :class:`AdaBN`."""
    bns = batchnorm_layers(model)
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    model.eval()                                    # dropout and everything else: inference behaviour
    for bn in bns:
        bn.reset_running_stats()                    # forget the old domain
        bn.momentum = None                          # cumulative average over all batches
        bn.training = True                          # only BN uses (and records) batch statistics
    with torch.no_grad():                           # no gradient, no parameter change
        for x in batches:
            model(x)
    for bn, momentum in momenta.items():
        bn.momentum = momentum
    for m, training in modes.items():
        m.training = training


class AdaBN(Exercise):
    """Re-estimate every BN layer's statistics on new data, as a cumulative average, changing nothing else."""

    number = 2
    title = "AdaBN: statistics of the new domain"
    task = ("Write `adabn(model, batches)` that replaces the running statistics of every BN layer of `model` (in "
            "place, return nothing) by those of the data in `batches` (an iterable of input tensors): for each BN "
            "layer, `running_mean` must become the average over the batches of the batch means of that layer's "
            "input, and `running_var` the average of the unbiased batch variances — PyTorch's cumulative average, "
            "`momentum=None`. Only the BN layers may use batch statistics while this runs (dropout stays off), no "
            "parameter may change, and afterwards every layer's `momentum` and every module's mode must be what "
            "they were.")
    hint_text = ("`bn.reset_running_stats()`, then `bn.momentum = None` makes BN average all batches equally. "
                 "`model.eval()` first, then set `bn.training = True` on the BN layers only; run the batches under "
                 "`torch.no_grad()`; remember the momenta and modes before and put them back at the end. "
                 "`torch.optim.swa_utils.update_bn` does almost this — but with the whole model in training mode.")
    explanation = ("AdaBN (Li et al. 2016) keeps every weight and replaces only the statistics, so the layers see "
                   "normalized inputs again on the new domain. With `momentum=None` torch weighs the n-th batch with "
                   "1/n: after the pass the running mean is the plain average of the batch means, whatever the old "
                   "statistics were (they are reset first). Dropout must stay in eval mode: with it active the "
                   "statistics would describe the dropped-out activations, not the ones seen at inference "
                   "(the variance shift of Li et al. 2019). `bncourse.bnstate.reestimate_bn` is this solution with "
                   "checks.")
    reference = staticmethod(adabn)

    @staticmethod
    def _model() -> nn.Sequential:
        torch.manual_seed(21)
        model = nn.Sequential(nn.Linear(5, 6, bias=False), nn.BatchNorm1d(6, momentum=0.1), nn.ReLU(), nn.Dropout(0.5),
                              nn.Sequential(nn.Linear(6, 4, bias=False), BatchNorm(4, momentum=0.3)), nn.ReLU(),
                              nn.Linear(4, 3))
        g = _generator(22)
        with torch.no_grad():
            for bn in _bn_layers(model):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 3)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 5 + 2)
                bn.num_batches_tracked.fill_(50)
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        return model.eval()

    @staticmethod
    def _batches() -> list[torch.Tensor]:
        g = _generator(23)
        return [torch.randn(n, 5, generator=g) * s + o for n, s, o in ((16, 1.0, 2.0), (8, 2.0, -1.0), (12, 0.5, 0.5))]

    @staticmethod
    def by_hand(model: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The statistics, computed layer by layer with the formulas (batch mean, unbiased batch variance, averaged)."""
        layers = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
        sums = [[0.0, 0.0] for m in layers if isinstance(m, (nn.BatchNorm1d, BatchNorm))]
        with torch.no_grad():
            for x in batches:
                h, k = x, 0
                for m in layers:
                    if isinstance(m, (nn.BatchNorm1d, BatchNorm)):
                        mean, var = h.mean(0), h.var(0, unbiased=True)
                        sums[k][0], sums[k][1] = sums[k][0] + mean, sums[k][1] + var
                        h = (h - mean) / torch.sqrt(h.var(0, unbiased=False) + m.eps) * m.weight + m.bias
                        k += 1
                    elif isinstance(m, nn.Dropout):
                        pass                                  # dropout is off at inference
                    else:
                        h = m(h)
        return [(s / len(batches), v / len(batches)) for s, v in sums]

    def _verify(self, answer: Callable[..., Any]) -> str:
        model = self._model()
        bns = _bn_layers(model)
        batches = self._batches()
        expected = self.by_hand(self._model(), batches)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        old = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
        modes = [m.training for m in model.modules()]
        momenta = [bn.momentum for bn in bns]
        dropout_modes: list[bool] = []
        hooks = [m.register_forward_pre_hook(lambda mod, args: dropout_modes.append(mod.training))
                 for m in model.modules() if isinstance(m, nn.Dropout)]
        try:
            out = self._call(answer, model, [b.clone() for b in batches])
        finally:
            for h in hooks:
                h.remove()
        if out is not None and out is not model:
            raise _Wrong(f"change the model in place and return None; you returned a {type(out).__name__}")
        changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), params[n])]
        if changed:
            raise _Wrong(f"these parameters changed: {changed} — AdaBN takes no gradient step, only the statistics change")
        if [bn.momentum for bn in bns] != momenta:
            raise _Wrong(f"the BN momenta are {[bn.momentum for bn in bns]} afterwards, they were {momenta}: restore them "
                         "(the next training run would otherwise use a cumulative average)")
        if [m.training for m in model.modules()] != modes:
            raise _Wrong("the modules' train/eval modes are not what they were (the model was in eval mode): restore them")
        if all(torch.equal(bn.running_mean, m0) for bn, (m0, _) in zip(bns, old)):
            raise _Wrong("the running statistics did not change: the BN layers must be in training mode while the "
                         "batches pass through")
        with torch.no_grad():
            ema = copy.deepcopy(self._model())
            for bn in _bn_layers(ema):
                bn.train()
            for x in batches:
                ema(x)
            no_reset = copy.deepcopy(self._model())
            for bn in _bn_layers(no_reset):
                bn.momentum, bn.training = None, True
            for x in batches:
                no_reset(x)
        if any(dropout_modes):
            raise _Wrong("dropout was active while the statistics were estimated (model.train(), or update_bn): the "
                         "statistics then describe dropped-out activations; only the BN layers may be in training mode")
        for k, (bn, (mean, var)) in enumerate(zip(bns, expected)):
            for what, got, want in (("running_mean", bn.running_mean, mean), ("running_var", bn.running_var, var)):
                mistakes = {
                    "the momentum was kept: that is an exponential average that still remembers the old domain; "
                    "set momentum=None (cumulative average) while re-estimating":
                        getattr(_bn_layers(ema)[k], what),
                    "the old statistics were not reset first (reset_running_stats), so they are averaged in":
                        getattr(_bn_layers(no_reset)[k], what),
                }
                self._diagnose(got, want, mistakes, f"BN layer {k} ({type(bn).__name__}) {what}", atol=1e-4)
        return ("statistics equal the cumulative average computed by hand, for torch's BatchNorm1d and the course's "
                "nested BatchNorm; parameters, momenta and modes unchanged.")


#: This notebook's exercises in order; ``q1`` and ``q2`` are the same objects.
EXERCISES: tuple[Exercise, ...] = (FreezeBatchNorm(), AdaBN())
q1, q2 = EXERCISES
