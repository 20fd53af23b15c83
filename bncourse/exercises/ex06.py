"""The exercises of notebook 06 (controversy and exercises): ``q1`` … ``q10``, each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

Example:
    >>> from bncourse.exercises import ____
    >>> def update_running_stats(running_mean, running_var, batch, momentum):
    ...     return ____
    >>> update_running_stats = q9.answer_or_solution(update_running_stats)  # doctest: +SKIP
    >>> q9.check(update_running_stats)                                       # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q10",
    # the reference solutions
    "remove_bias", "largest_usable_lr", "mlp_with_bn", "replace_dropout_with_bn", "freeze_bn_affine", "lite_batch_norm", "group_norm", "fold_into_linear", "update_running_stats", "freeze_bn_affine_gluon",
    # the exercise classes
    "BiasBeforeBatchNorm", "UsableLearningRate", "BatchNormWhere", "DropoutToBatchNorm", "FreezeGammaBeta", "LiteBatchNorm", "GroupNormFromScratch", "FoldBatchNorm", "RunningStatistics", "FreezeGammaBetaGluon",
]

import copy
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .. import _mxnet
from ..models import batchnorm_layers
from .core import Exercise, _Wrong, _Unanswered, _max_diff, _close, _generator


# ---------------------------------------------------------------------------------------------
# 1. The bias before BN
# ---------------------------------------------------------------------------------------------
def remove_bias(linear: nn.Linear, bn: nn.BatchNorm1d) -> tuple[nn.Linear, nn.BatchNorm1d]:
    """Reference solution of :class:`BiasBeforeBatchNorm`."""
    new_linear = nn.Linear(linear.in_features, linear.out_features, bias=False)
    new_bn = copy.deepcopy(bn)                       # same gamma, beta, eps, momentum, buffers
    with torch.no_grad():
        new_linear.weight.copy_(linear.weight)
        if linear.bias is not None:
            # The running mean was accumulated from outputs that contained the bias.
            new_bn.running_mean.sub_(linear.bias)
    return new_linear, new_bn


class BiasBeforeBatchNorm(Exercise):
    """Drop the bias of a Linear layer that feeds a BN layer, without changing what the pair computes."""

    number = 1
    title = "The bias before BN"
    task = ("Write `remove_bias(linear, bn)` returning a *new* pair `(new_linear, new_bn)` in which `new_linear` "
            "has no bias and `new_bn(new_linear(x))` equals `bn(linear(x))` both in training mode (batch "
            "statistics) and in eval mode (running statistics). Leave the modules you are given unchanged.")
    hint_text = ("In training mode BN subtracts the batch mean, and a constant bias moves the batch mean by exactly "
                 "that constant. In eval mode BN subtracts `running_mean` instead: what did that average see?")
    explanation = ("In training mode the bias cancels exactly: the mean of `Wx + b` over the batch is `mean(Wx) + b`. "
                   "The running mean, however, was accumulated from outputs that *included* `b`, so in eval mode "
                   "it must be shifted by `-b` as well; after that shift future running-mean updates stay "
                   "consistent too. β now plays the role the bias had.")
    reference = staticmethod(remove_bias)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(1)
        linear = nn.Linear(6, 4)
        bn = nn.BatchNorm1d(4)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(4, 6, generator=g))
            linear.bias.copy_(torch.tensor([3.0, -2.0, 1.5, 0.5]))
            bn.weight.copy_(torch.rand(4, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(4, generator=g))
            bn.running_mean.copy_(linear.bias + 0.1 * torch.randn(4, generator=g))
            bn.running_var.copy_(torch.rand(4, generator=g) * 3 + 1)
        originals = {k: v.clone() for k, v in {**linear.state_dict(), **{"bn." + n: t for n, t in bn.state_dict().items()}}.items()}
        out = self._call(answer, linear, bn)
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(m, nn.Module) for m in out)):
            raise _Wrong(f"expected a pair (new_linear, new_bn) of modules, got {type(out).__name__}")
        new_linear, new_bn = out
        after = {**linear.state_dict(), **{"bn." + n: t for n, t in bn.state_dict().items()}}
        changed = [k for k in originals if k not in after or not torch.equal(originals[k], after[k])]
        if changed or new_linear is linear or new_bn is bn:
            raise _Wrong("the modules you were given were changed or returned (changed: "
                         f"{changed or 'returned as is'}): build new modules (e.g. with copy.deepcopy) instead")
        if getattr(new_linear, "bias", None) is not None:
            raise _Wrong("new_linear still has a bias: create it with bias=False")
        x = torch.randn(16, 6, generator=g)
        ref_model = nn.Sequential(copy.deepcopy(linear), copy.deepcopy(bn))
        new_model = nn.Sequential(copy.deepcopy(new_linear), copy.deepcopy(new_bn))
        ref_model.train(), new_model.train()
        with torch.no_grad():
            diff_train = _max_diff(ref_model(x), new_model(x))
            if diff_train > 1e-4:
                raise _Wrong(f"in training mode the outputs differ by up to {diff_train:.3g}: with batch statistics "
                             "the bias cancels by itself, so copy the weight and keep γ and β unchanged")
            ref_model.eval(), new_model.eval()
            diff_eval = _max_diff(ref_model(x), new_model(x))
            if diff_eval > 1e-4:
                raise _Wrong(f"training mode matches, but in eval mode the outputs differ by up to {diff_eval:.3g}: "
                             "running_mean was accumulated from outputs that included the bias")
            ref_model.train(), new_model.train()
            ref_model(3 * x + 1), new_model(3 * x + 1)      # one more running-statistics update
            ref_model.eval(), new_model.eval()
            diff_later = _max_diff(ref_model(x), new_model(x))
            if diff_later > 1e-4:
                raise _Wrong(f"the pair matches now but drifts apart after one more training step (eval outputs "
                             f"differ by {diff_later:.3g}): keep BN's momentum and eps as they were")
        return "same outputs in training mode, in eval mode, and after a further running-statistics update."


# ---------------------------------------------------------------------------------------------
# 2. Usable learning rates
# ---------------------------------------------------------------------------------------------
def largest_usable_lr(final_losses: Mapping[float, float], initial_loss: float) -> float | None:
    """Reference solution of :class:`UsableLearningRate`."""
    usable = [lr for lr, loss in final_losses.items() if math.isfinite(loss) and loss < initial_loss]
    return max(usable) if usable else None


class UsableLearningRate(Exercise):
    """From a learning-rate sweep, find the largest rate at which training still works."""

    number = 2
    title = "Usable learning rates"
    task = ("A sweep trained the same network once per learning rate. Write `largest_usable_lr(final_losses, "
            "initial_loss)`: `final_losses` maps each learning rate to the training loss at the end of its run "
            "(it may be `nan` or `inf` when the run diverged, and the rates come in no particular order). "
            "Return the largest learning rate whose final loss is finite and below `initial_loss`, or `None` "
            "if there is none.")
    hint_text = ("Filter first, then take the maximum of the *keys*. `math.isfinite` is False for both `nan` "
                 "and `inf`; remember that every comparison with `nan` is False.")
    explanation = ("The question is how *large* the rate may be, not which rate is best, so the answer is the "
                   "maximum key among the runs that trained. A diverged run can end in `inf` or `nan`; `nan` "
                   "slips through any test written as `not loss > initial_loss`, hence `math.isfinite`.")
    reference = staticmethod(largest_usable_lr)

    CASES: tuple[tuple[dict[float, float], float, float | None, str], ...] = (
        ({0.01: 1.2, 0.1: 0.6, 1.0: 0.4, 3.0: 2.4}, 2.3, 1.0, "a sweep where the largest rate diverges (loss 2.4 > 2.3)"),
        ({3.0: float("nan"), 0.01: 1.5, 1.0: 0.9, 0.1: 0.3}, 2.3, 1.0, "an unsorted sweep whose largest rate ended in nan"),
        ({0.1: 0.5, 0.3: float("inf"), 1.0: 2.0}, 2.3, 1.0, "a sweep with an inf loss between two runs that trained"),
        ({1.0: float("nan"), 10.0: float("inf")}, 2.3, None, "a sweep in which no run trained"),
    )

    def _verify(self, answer: Callable[..., Any]) -> str:
        for losses, initial, expected, description in self.CASES:
            got = self._call(answer, dict(losses), initial)
            if got != expected:
                raise _Wrong(f"for {description}, {losses} with initial loss {initial}, the answer is {expected}, "
                             f"you returned {got!r}" + self._why(losses, got))
        return "largest trained rate found with unsorted rates, nan, inf and a sweep where nothing trained."

    @staticmethod
    def _why(losses: Mapping[float, float], got: Any) -> str:
        finite = {lr: l for lr, l in losses.items() if math.isfinite(l)}
        if finite and got == min(finite, key=finite.get):
            return " — that is the rate with the lowest loss; the question asks for the largest rate that trains"
        if got is not None and got in losses and not math.isfinite(losses[got]):
            return f" — the run at {got} diverged (loss {losses[got]}): check for nan and inf"
        return ""


# ---------------------------------------------------------------------------------------------
# 3. BN in every layer or not
# ---------------------------------------------------------------------------------------------
def mlp_with_bn(sizes: Sequence[int], bn_layers: Sequence[int]) -> nn.Sequential:
    """Reference solution of :class:`BatchNormWhere`."""
    layers: list[nn.Module] = []
    for k, (width_in, width_out) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        normalized = k in bn_layers
        layers.append(nn.Linear(width_in, width_out, bias=not normalized))  # BN cancels the bias
        if normalized:
            layers.append(nn.BatchNorm1d(width_out))
        layers.append(nn.ReLU())
    layers.append(nn.Linear(sizes[-2], sizes[-1]))                         # the output is not normalized
    return nn.Sequential(*layers)


class BatchNormWhere(Exercise):
    """Build an MLP with BN after a chosen subset of its hidden layers."""

    number = 3
    title = "BN in every layer, or only in some"
    task = ("Write `mlp_with_bn(sizes, bn_layers)` returning an `nn.Sequential` MLP: for each hidden layer k "
            "(k = 0 … len(sizes) − 3) a `Linear(sizes[k], sizes[k+1])`, then — only if k is in `bn_layers` — a "
            "`BatchNorm1d(sizes[k+1])`, then a `ReLU`; finally `Linear(sizes[-2], sizes[-1])`. A Linear layer "
            "followed by BN has no bias; the output layer keeps its bias and is never normalized.")
    hint_text = ("Loop over `zip(sizes[:-2], sizes[1:-1])` with `enumerate`; append the BN between the Linear "
                 "and its ReLU; the last Linear comes after the loop.")
    explanation = ("BN goes between the affine map and the nonlinearity, as in Ioffe & Szegedy; the bias before "
                   "it is dropped because BN's mean subtraction removes it (β replaces it). The output layer "
                   "feeds the softmax and is left alone.")
    reference = staticmethod(mlp_with_bn)

    @staticmethod
    def _describe(model: nn.Module) -> list[str]:
        parts = []
        for m in model.children():
            if isinstance(m, nn.Linear):
                parts.append(f"Linear({m.in_features},{m.out_features},bias={m.bias is not None})")
            elif isinstance(m, nn.BatchNorm1d):
                parts.append(f"BatchNorm1d({m.num_features})")
            else:
                parts.append(type(m).__name__)
        return parts

    def _verify(self, answer: Callable[..., Any]) -> str:
        for sizes, bn in (((20, 16, 12, 8, 5), (0, 1, 2)), ((20, 16, 12, 8, 5), (1,)), ((20, 16, 12, 8, 5), ()),
                          ((10, 7, 3), (0,))):
            model = self._call(answer, sizes, bn)
            if not isinstance(model, nn.Sequential):
                raise _Wrong(f"expected an nn.Sequential, got {type(model).__name__}")
            got, want = self._describe(model), self._describe(mlp_with_bn(sizes, bn))
            if got == want:
                out = model(torch.randn(4, sizes[0]))
                if out.shape != (4, sizes[-1]):
                    raise _Wrong(f"the output has shape {tuple(out.shape)}, expected (4, {sizes[-1]})")
                continue
            where = f"for sizes={sizes}, bn_layers={bn}"
            n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in model.children())
            linears = [m for m in model.children() if isinstance(m, nn.Linear)]
            if linears and isinstance(list(model.children())[-1], nn.BatchNorm1d):
                raise _Wrong(f"{where} the model ends with a BatchNorm1d: the output layer is never normalized")
            if n_bn != len(bn):
                raise _Wrong(f"{where} expected {len(bn)} BatchNorm1d layers, found {n_bn}: {got}")
            if any(p == "ReLU" and q.startswith("BatchNorm") for p, q in zip(got, got[1:])):
                raise _Wrong(f"{where} a BN comes after its ReLU; put it between the Linear and the ReLU: {got}")
            if [p.split("bias=")[-1] for p in got if p.startswith("Linear")] != [p.split("bias=")[-1] for p in want if p.startswith("Linear")]:
                raise _Wrong(f"{where} the bias flags are wrong: a Linear followed by BN has bias=False, every "
                             f"other Linear bias=True. Expected {want}, got {got}")
            raise _Wrong(f"{where} expected the layers {want}, got {got}")
        return "layer order, widths, bias flags and output shape right for BN in all, some and no hidden layers."


# ---------------------------------------------------------------------------------------------
# 4. Replace dropout by BN
# ---------------------------------------------------------------------------------------------
def replace_dropout_with_bn(model: nn.Sequential) -> nn.Sequential:
    """Reference solution of :class:`DropoutToBatchNorm`."""
    layers: list[nn.Module] = []
    width = None
    for module in model.children():
        if isinstance(module, nn.Linear):
            width = module.out_features
        if isinstance(module, nn.Dropout):
            layers.append(nn.BatchNorm1d(width))       # the features the dropout received
        else:
            layers.append(copy.deepcopy(module))       # a copy: the original model stays as it was
    return nn.Sequential(*layers)


class DropoutToBatchNorm(Exercise):
    """Swap every dropout layer of a network for a BN layer."""

    number = 4
    title = "Replace dropout by BN"
    task = ("Ioffe & Szegedy found that BN's noise regularizes enough to drop dropout. Write "
            "`replace_dropout_with_bn(model)` that takes an `nn.Sequential` MLP and returns a *new* "
            "`nn.Sequential` in which every `nn.Dropout` is replaced by a fresh `nn.BatchNorm1d` over the features "
            "it receives (the `out_features` of the nearest Linear before it). Every other module is a copy with the "
            "same weights; the model you are given must not change.")
    hint_text = ("Walk through `model.children()`, remember the `out_features` of the last Linear you saw, and "
                 "append `copy.deepcopy(module)` for everything that is not a dropout.")
    explanation = ("Copies keep the trained weights while leaving the original untouched (with shared modules, "
                   "training one model would silently train the other). A fresh BN in eval mode divides by "
                   "√(1 + ε), so before any training the new model computes what the old one did in eval mode.")
    reference = staticmethod(replace_dropout_with_bn)

    def _verify(self, answer: Callable[..., Any]) -> str:
        torch.manual_seed(4)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.ReLU(), nn.Dropout(0.5), nn.Linear(9, 7), nn.ReLU(),
                              nn.Dropout(0.2), nn.Linear(7, 3))
        before = copy.deepcopy(model)
        new = self._call(answer, model)
        if not isinstance(new, nn.Sequential):
            raise _Wrong(f"expected an nn.Sequential, got {type(new).__name__}")
        old_types = [type(m).__name__ for m in model.children()]
        if old_types != [type(m).__name__ for m in before.children()] or any(
                not torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values())):
            raise _Wrong("the model you were given was changed: build a new nn.Sequential from copies of its modules")
        children = list(new.children())
        if any(isinstance(m, nn.Dropout) for m in children):
            raise _Wrong("the new model still contains nn.Dropout: replace each one, don't add BN next to it")
        bns = [m for m in children if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if len(bns) != 2 or len(children) != len(old_types):
            raise _Wrong(f"expected the same {len(old_types)} positions with 2 BatchNorm1d where the dropouts were, got "
                         f"{[type(m).__name__ for m in children]}")
        for pos in (3, 6):
            m = children[pos]
            if not isinstance(m, nn.BatchNorm1d):
                raise _Wrong(f"position {pos} held a Dropout and should now hold a BatchNorm1d, found {type(m).__name__}")
        if [bn.num_features for bn in bns] != [9, 7]:
            raise _Wrong(f"the BN widths must be the widths of the features they receive, [9, 7]; got "
                         f"{[bn.num_features for bn in bns]}")
        shared = {id(p) for p in model.parameters()} & {id(p) for p in new.parameters()}
        if shared:
            raise _Wrong("the new model shares parameters with the old one (training one would change the other): "
                         "use copy.deepcopy")
        x = torch.randn(5, 12)
        model.eval(), new.eval()
        with torch.no_grad():
            diff = _max_diff(model(x), new(x))
        if diff > 1e-3:
            raise _Wrong(f"in eval mode the new model's outputs differ by up to {diff:.3g} from the old one's: keep the "
                         "Linear layers' trained weights (copy them, don't create new ones)")
        return "dropouts replaced by BatchNorm1d of the right widths, weights kept, original untouched."


# ---------------------------------------------------------------------------------------------
# 5. Freeze gamma and beta
# ---------------------------------------------------------------------------------------------
def freeze_bn_affine(model: nn.Module) -> None:
    """Reference solution of :class:`FreezeGammaBeta` (PyTorch)."""
    for bn in batchnorm_layers(model):            # torch's BN layers and the course's own
        if bn.weight is not None:
            bn.weight.requires_grad_(False)        # gamma
            bn.bias.requires_grad_(False)          # beta


class FreezeGammaBeta(Exercise):
    """Freeze BN's learnable scale and shift, and nothing else."""

    number = 5
    title = "Freeze γ and β"
    task = ("Write `freeze_bn_affine(model)` that freezes the learnable γ (`weight`) and β (`bias`) of every "
            "batch-norm layer in `model` — in place, returning nothing — so that an optimizer step leaves them "
            "unchanged, while every other parameter still trains and BN still normalizes with batch statistics "
            "and updates its running statistics. (In Gluon the same is done by setting `grad_req = 'null'` on "
            "the `gamma` and `beta` parameters: exercise 10.)")
    hint_text = ("`bncourse.models.batchnorm_layers(model)` lists the BN layers (or test "
                 "`isinstance(module, nn.modules.batchnorm._BatchNorm)` over `model.modules()`); a tensor's `requires_grad_(False)` stops autograd from computing its gradient. "
                 "`eval()` would be something else entirely.")
    explanation = ("With `requires_grad` off, autograd computes no gradient for γ and β, and optimizers skip "
                   "parameters whose `.grad` is None — so they stay at 1 and 0. The network then normalizes to "
                   "zero mean and unit variance without the learnable rescaling. `model.eval()` would instead switch "
                   "BN to the running statistics and stop updating them, which is not the task. Gluon: "
                   "`net.collect_params('.*gamma|.*beta').setattr('grad_req', 'null')`.")
    reference = staticmethod(freeze_bn_affine)

    def _verify(self, answer: Callable[..., Any]) -> str:
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(8, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5, bias=False),
                              nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
        out = self._call(answer, model)
        if out is not None and out is not model:
            raise _Wrong(f"freeze the model in place and return None; you returned a {type(out).__name__}")
        if any(not m.training for m in model.modules()):
            raise _Wrong("some modules are in eval mode: that makes BN use (and stop updating) running statistics, "
                         "which is not freezing γ and β")
        bns = batchnorm_layers(model)
        not_frozen = [f"BN {i} {name}" for i, bn in enumerate(bns) for name in ("weight", "bias")
                      if getattr(bn, name).requires_grad]
        if not_frozen:
            raise _Wrong(f"still trainable: {not_frozen} — both γ (weight) and β (bias) of every BN layer must be frozen")
        bn_params = {id(p) for bn in bns for p in bn.parameters()}
        frozen_others = [n for n, p in model.named_parameters() if id(p) not in bn_params and not p.requires_grad]
        if frozen_others:
            raise _Wrong(f"you froze parameters that are not BN's γ or β: {frozen_others}")
        snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
        running = bns[0].running_mean.clone()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        F.cross_entropy(model(x), y).backward()
        opt.step()
        moved_bn = [n for n, p in model.named_parameters() if id(p) in bn_params and not torch.equal(p, snapshot[n])]
        if moved_bn:
            raise _Wrong(f"after an optimizer step these BN parameters changed: {moved_bn}")
        still = [n for n, p in model.named_parameters() if id(p) not in bn_params and torch.equal(p, snapshot[n])]
        if still:
            raise _Wrong(f"after an optimizer step these parameters did not move although they should train: {still}")
        if torch.equal(running, bns[0].running_mean):
            raise _Wrong("the running statistics no longer update in training mode: leave BN's buffers and mode alone")
        return "γ and β of every BN layer stay fixed under SGD; the other weights and the running statistics still move."


# ---------------------------------------------------------------------------------------------
# 6. A "lite" BN: mean only or variance only
# ---------------------------------------------------------------------------------------------
def lite_batch_norm(x: torch.Tensor, center: bool = True, scale: bool = True, eps: float = 1e-5) -> torch.Tensor:
    """Reference solution of :class:`LiteBatchNorm`."""
    mean = x.mean(dim=0, keepdim=True)
    out = x - mean if center else x
    if scale:
        var = x.var(dim=0, unbiased=False, keepdim=True)   # biased: divide by N, as BN does
        out = out / torch.sqrt(var + eps)
    return out


class LiteBatchNorm(Exercise):
    """Half a batch norm: only the centring or only the scaling."""

    number = 6
    title = "A lite BN: mean only or variance only"
    task = ("Write `lite_batch_norm(x, center=True, scale=True, eps=1e-5)` for a batch `x` of shape (N, C), "
            "with statistics per feature over the batch (no γ, β): with `center` subtract the batch mean; with "
            "`scale` divide by √(var + eps), where var is the *biased* batch variance around the mean — also "
            "when `center` is False (then the output keeps its mean, only its spread is normalized).")
    hint_text = ("`x.mean(dim=0, keepdim=True)` and `x.var(dim=0, unbiased=False, keepdim=True)`; dim 0 is the "
                 "batch. Compute the variance from `x`, not from the centred tensor only when centring.")
    explanation = ("Mean-only BN removes the shift, variance-only BN removes the scale; full BN does both. Dividing "
                   "by the root mean square `√mean(x²)` is not the variance-only variant: it mixes the mean into "
                   "the scale. BN uses the biased variance (divide by N) to normalize.")
    reference = staticmethod(lite_batch_norm)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(6)
        x = torch.randn(8, 5, generator=g) * torch.tensor([0.5, 1.0, 2.0, 4.0, 1e-3]) + torch.tensor([3.0, -1.0, 0.0, 2.0, 5.0])
        for center, scale in ((True, True), (True, False), (False, True), (False, False)):
            expected = lite_batch_norm(x, center, scale)
            got = self._call(answer, x.clone(), center=center, scale=scale, eps=1e-5)
            mean = x.mean(0, keepdim=True)
            base = x - mean if center else x
            mistakes = {
                "you used the unbiased variance (divide by N − 1); BN normalizes with the biased one (divide by N)":
                    base / torch.sqrt(x.var(0, unbiased=True, keepdim=True) + 1e-5),
                "the statistics were taken over the features (dim 1); they belong over the batch (dim 0)":
                    ((x - x.mean(1, keepdim=True)) if center else x) / (torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5) if scale else 1),
                "eps is missing: divide by √(var + eps)": base / x.var(0, unbiased=False, keepdim=True).sqrt(),
                "you divided by the root mean square √mean(x²), which includes the mean; use the variance around the mean":
                    base / torch.sqrt((x ** 2).mean(0, keepdim=True) + 1e-5),
                "the output is centred although center=False": (x - mean) / torch.sqrt(x.var(0, unbiased=False, keepdim=True) + 1e-5),
                "the output is not centred although center=True": x / torch.sqrt(x.var(0, unbiased=False, keepdim=True) + 1e-5),
                "the output is not scaled although scale=True": base,
            }
            self._diagnose(got, expected, mistakes, f"with center={center}, scale={scale}, the output")
        return "all four combinations of center/scale match, biased variance and eps included."


# ---------------------------------------------------------------------------------------------
# 7. GroupNorm (and LayerNorm) from scratch
# ---------------------------------------------------------------------------------------------
def group_norm(x: torch.Tensor, num_groups: int, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Reference solution of :class:`GroupNormFromScratch`."""
    n, c = x.shape[:2]
    groups = x.reshape(n, num_groups, -1)                     # consecutive channels form a group
    mean = groups.mean(dim=2, keepdim=True)
    var = groups.var(dim=2, unbiased=False, keepdim=True)
    normalized = ((groups - mean) / torch.sqrt(var + eps)).reshape_as(x)
    shape = (1, c) + (1,) * (x.dim() - 2)                     # per-channel gamma and beta
    return normalized * gamma.reshape(shape) + beta.reshape(shape)


class GroupNormFromScratch(Exercise):
    """Group normalization: statistics per example over groups of channels, independent of the batch."""

    number = 7
    title = "GroupNorm (and LayerNorm) from scratch"
    task = ("Write `group_norm(x, num_groups, gamma, beta, eps=1e-5)` for `x` of shape (N, C, H, W): split the C "
            "channels into `num_groups` groups of *consecutive* channels; normalize each example's group with the "
            "mean and biased variance over that group's channels and all positions; then apply the per-channel "
            "`gamma` and `beta` (shape (C,)). With `num_groups=1` it is LayerNorm over (C, H, W), with "
            "`num_groups=C` InstanceNorm. It must equal `torch.nn.functional.group_norm`.")
    hint_text = ("Reshape to (N, num_groups, −1): consecutive channels then share a row. Take mean and "
                 "`var(unbiased=False)` over the last dim, normalize, reshape back, and broadcast γ, β as (1, C, 1, 1).")
    explanation = ("Unlike BN, no statistic crosses examples (nothing is averaged over N), so GroupNorm behaves the "
                   "same at batch size 2 and 256, and in training and evaluation. The reshape (N, G, C/G·H·W) "
                   "groups channels 0…C/G−1, then the next C/G, as torch does; γ and β stay per channel.")
    reference = staticmethod(group_norm)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(7)
        x = torch.randn(3, 6, 4, 5, generator=g) * torch.linspace(0.5, 3, 6).reshape(1, 6, 1, 1) + torch.arange(6.0).reshape(1, 6, 1, 1)
        gamma, beta = torch.rand(6, generator=g) + 0.5, torch.randn(6, generator=g)
        for groups in (2, 3, 1, 6):
            expected = F.group_norm(x, groups, gamma, beta, 1e-5)
            got = self._call(answer, x.clone(), groups, gamma.clone(), beta.clone(), eps=1e-5)
            inter = x.reshape(3, 6 // groups, groups, 4, 5).transpose(1, 2)   # channels c, c+G, c+2G, ... grouped
            inter_mean = inter.mean(dim=(2, 3, 4), keepdim=True)
            inter_var = inter.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
            interleaved = ((inter - inter_mean) / torch.sqrt(inter_var + 1e-5)).transpose(1, 2).reshape_as(x)
            grouped = x.reshape(3, groups, -1)
            unbiased = ((grouped - grouped.mean(2, keepdim=True)) / torch.sqrt(grouped.var(2, keepdim=True) + 1e-5)).reshape_as(x)
            mistakes = {
                "you used the unbiased variance (N − 1); normalization layers use the biased one":
                    unbiased * gamma.reshape(1, 6, 1, 1) + beta.reshape(1, 6, 1, 1),
                "the statistics were taken over the batch and positions per channel — that is BatchNorm, not GroupNorm":
                    F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5),
                "the groups interleave channels (c, c+G, …); a group is C/G consecutive channels (reshape to (N, G, −1))":
                    interleaved * gamma.reshape(1, 6, 1, 1) + beta.reshape(1, 6, 1, 1),
                "γ and β are missing": F.group_norm(x, groups, None, None, 1e-5),
                "each channel was normalized on its own (InstanceNorm), ignoring num_groups":
                    F.group_norm(x, 6, gamma, beta, 1e-5),
                "eps is missing": F.group_norm(x, groups, gamma, beta, 0.0),
            }
            if groups == 6:
                mistakes.pop("each channel was normalized on its own (InstanceNorm), ignoring num_groups")
            self._diagnose(got, expected, mistakes, f"with num_groups={groups}, the output", atol=1e-4)
        return "matches F.group_norm with 2 and 3 groups, as LayerNorm (1 group) and as InstanceNorm (C groups)."


# ---------------------------------------------------------------------------------------------
# 8. Folding BN into the previous layer
# ---------------------------------------------------------------------------------------------
def fold_into_linear(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """Reference solution of :class:`FoldBatchNorm`."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)        # gamma / sigma, one per output feature
    bias = linear.bias if linear.bias is not None else torch.zeros_like(bn.running_mean)
    folded = nn.Linear(linear.in_features, linear.out_features, bias=True)
    with torch.no_grad():
        folded.weight.copy_(linear.weight * scale[:, None])        # row j scaled by gamma_j / sigma_j
        folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return folded


class FoldBatchNorm(Exercise):
    """Merge an eval-mode BN into the Linear layer before it."""

    number = 8
    title = "Fold BN into the previous layer"
    task = ("At inference BN is a fixed affine map per feature. Write `fold_into_linear(linear, bn)` returning a "
            "new `nn.Linear` that computes `bn(linear(x))` with `bn` in eval mode (running statistics), for a "
            "`linear` with or without a bias.")
    hint_text = ("In eval mode, bn(z) = γ·(z − running_mean)/√(running_var + ε) + β. Substitute z = Wx + b and "
                 "collect the terms that multiply x (the new weight) and the rest (the new bias).")
    explanation = ("With s = γ/√(running_var + ε): W′ = diag(s)·W and b′ = s·(b − running_mean) + β. The folded "
                   "network does one matrix product instead of a product plus a normalization, and gives the same "
                   "outputs up to rounding. (bncourse.layers.fold_batchnorm does this for Conv2d too.)")
    reference = staticmethod(fold_into_linear)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(8)
        x = torch.randn(10, 6, generator=g)
        for with_bias in (True, False):
            linear = nn.Linear(6, 4, bias=with_bias)
            bn = nn.BatchNorm1d(4, eps=0.1)          # a large eps, so that forgetting it shows
            with torch.no_grad():
                linear.weight.copy_(torch.randn(4, 6, generator=g))
                if with_bias:
                    linear.bias.copy_(torch.randn(4, generator=g))
                bn.weight.copy_(torch.rand(4, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(4, generator=g))
                bn.running_mean.copy_(torch.randn(4, generator=g))
                bn.running_var.copy_(torch.rand(4, generator=g) * 2 + 0.2)
            bn.eval()
            folded = self._call(answer, copy.deepcopy(linear), copy.deepcopy(bn))
            if not isinstance(folded, nn.Linear):
                raise _Wrong(f"expected an nn.Linear, got {type(folded).__name__}")
            with torch.no_grad():
                expected = bn(linear(x))
                got = folded(x)
                b = linear.bias if with_bias else torch.zeros(4)
                s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                z = x @ linear.weight.T
                batch_mean, batch_var = (z + b).mean(0), (z + b).var(0, unbiased=False)
                mistakes = {
                    "eps is missing from √(running_var + ε)":
                        (z + b - bn.running_mean) * (bn.weight / bn.running_var.sqrt()) + bn.bias,
                    "running_mean was not subtracted": (z + b) * s + bn.bias,
                    "the old bias was not scaled by γ/σ: b′ = s·(b − running_mean) + β":
                        z * s + b - bn.running_mean * s + bn.bias,
                    "the old bias is missing from the new one": (z - bn.running_mean) * s + bn.bias,
                    "β is missing from the new bias": (z + b - bn.running_mean) * s,
                    "you folded the batch statistics of x; at inference BN uses running_mean and running_var":
                        (z + b - batch_mean) / torch.sqrt(batch_var + bn.eps) * bn.weight + bn.bias,
                }
            self._diagnose(got, expected, mistakes, f"for a Linear {'with' if with_bias else 'without'} bias, the folded output",
                           atol=1e-4)
        return "folded layer equals Linear→BN(eval) for a Linear with and without bias."


# ---------------------------------------------------------------------------------------------
# 9. Running statistics by hand
# ---------------------------------------------------------------------------------------------
def update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, batch: torch.Tensor,
                         momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference solution of :class:`RunningStatistics`."""
    batch_mean = batch.mean(dim=0)
    batch_var = batch.var(dim=0, unbiased=True)            # PyTorch tracks the unbiased variance
    new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    new_var = (1 - momentum) * running_var + momentum * batch_var
    return new_mean, new_var


class RunningStatistics(Exercise):
    """One update of BN's running mean and variance, PyTorch's way."""

    number = 9
    title = "Running statistics by hand"
    task = ("Write `update_running_stats(running_mean, running_var, batch, momentum)` returning the new "
            "`(running_mean, running_var)` after one training step of `nn.BatchNorm1d` on `batch` (shape (N, C)) "
            "with PyTorch's convention: new = (1 − momentum)·old + momentum·batch statistic, where the variance "
            "tracked is the *unbiased* batch variance. Return new tensors; don't modify the ones you are given.")
    hint_text = ("`batch.mean(0)` and `batch.var(0, unbiased=True)`. In PyTorch `momentum` is the weight of the "
                 "*new* batch statistic (0.1 by default); Gluon's momentum is the weight of the *old* value "
                 "(0.9 by default) and Gluon tracks the biased variance.")
    explanation = ("This is an exponential moving average: each step keeps (1 − momentum) of the old estimate. "
                   "BN normalizes a batch with its biased variance but tracks the unbiased one, an estimate of the "
                   "population variance from N samples; the difference matters most for small batches.")
    reference = staticmethod(update_running_stats)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(9)
        for momentum, n in ((0.1, 8), (0.3, 4)):
            batch = torch.randn(n, 3, generator=g) * 2 + 1
            mean0, var0 = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 4.0, 0.5])
            args = (mean0.clone(), var0.clone(), batch.clone(), momentum)
            out = self._call(answer, *args)
            if not torch.equal(args[0], mean0) or not torch.equal(args[1], var0):
                raise _Wrong("you changed running_mean / running_var in place; return new tensors instead")
            if not (isinstance(out, tuple) and len(out) == 2):
                raise _Wrong(f"expected a pair (running_mean, running_var), got {type(out).__name__}")
            bn = nn.BatchNorm1d(3, momentum=momentum)
            with torch.no_grad():
                bn.running_mean.copy_(mean0), bn.running_var.copy_(var0)
                bn.train()(batch)
            m, bm, bv, bvb = momentum, batch.mean(0), batch.var(0, unbiased=True), batch.var(0, unbiased=False)
            where = f"with momentum={momentum} and a batch of {n}"
            self._diagnose(out[0], bn.running_mean, {
                "momentum is applied the wrong way round: momentum weighs the new batch mean, (1 − momentum) the old value":
                    m * mean0 + (1 - m) * bm,
                "the old running mean was replaced instead of averaged": bm,
            }, f"{where}, the running mean")
            self._diagnose(out[1], bn.running_var, {
                "you used the biased batch variance (divide by N); PyTorch tracks the unbiased one (N − 1)":
                    (1 - m) * var0 + m * bvb,
                "momentum is applied the wrong way round: momentum weighs the new batch variance, (1 − momentum) the old value":
                    m * var0 + (1 - m) * bv,
                "momentum is the wrong way round and the variance is biased (that is Gluon's convention with momentum 0.9)":
                    m * var0 + (1 - m) * bvb,
                "you tracked the standard deviation instead of the variance": (1 - m) * var0 + m * bv.sqrt(),
            }, f"{where}, the running variance")
        return "running mean and variance equal nn.BatchNorm1d's after one step, for momentum 0.1 and 0.3."


# ---------------------------------------------------------------------------------------------
# 10. Freeze gamma and beta in Gluon
# ---------------------------------------------------------------------------------------------
def freeze_bn_affine_gluon(net: Any) -> None:
    """Reference solution of :class:`FreezeGammaBetaGluon`."""
    for name, param in net.collect_params().items():
        if name.endswith(("_gamma", "_beta")):       # every BN layer's scale and shift
            param.grad_req = "null"                  # no gradient: the Trainer leaves them alone


class FreezeGammaBetaGluon(Exercise):
    """Exercise 5 in MXNet Gluon: freeze BN's γ and β with ``grad_req``."""

    number = 10
    title = "Freeze γ and β in Gluon"
    task = ("The same as exercise 5, in MXNet Gluon: write `freeze_bn_affine_gluon(net)` that sets `grad_req` "
            "to `'null'` on the `gamma` and `beta` parameters of every BatchNorm layer of a Gluon network, in "
            "place, leaving every other trainable parameter at `'write'`. (The check builds the course's Gluon "
            "BN-LeNet from `bncourse.gluon`, so it imports mxnet.)")
    hint_text = ("`net.collect_params()` is a dict from parameter names to Parameters; BN's are named "
                 "`..._gamma`, `..._beta`, `..._running_mean` and `..._running_var`. A parameter's `grad_req` "
                 "is `'write'`, `'add'` or `'null'`.")
    explanation = ("With `grad_req = 'null'` autograd allocates and computes no gradient for the parameter, and "
                   "`gluon.Trainer` skips it. The running statistics already have `grad_req = 'null'`: they are "
                   "not learned but updated by the layer itself. Setting `lr_mult = 0` would also stop the updates "
                   "but still compute every gradient. A one-liner with a regular expression does the same: "
                   "`net.collect_params('.*gamma|.*beta').setattr('grad_req', 'null')`.")
    reference = staticmethod(freeze_bn_affine_gluon)
    requires_mxnet = True

    def _verify(self, answer: Callable[..., Any]) -> str:
        from .. import gluon as bn_gluon  # imports mxnet (bncourse._mxnet): only when checked

        bn_gluon.use_np()           # the course's Gluon code runs on MXNet's NumPy interface (as in notebook 05)
        mx = bn_gluon.mx
        mx_gluon = bn_gluon.gluon

        mx.random.seed(10)
        net = bn_gluon.LeNet(batch_norm=True, norm_layer="batch")
        net.initialize()
        out = self._call(answer, net)
        if out is not None and out is not net:
            raise _Wrong(f"freeze the network in place and return None; you returned a {type(out).__name__}")
        params = net.collect_params()
        affine = [n for n in params if n.endswith(("_gamma", "_beta"))]
        statistics = [n for n in params if n.endswith(("_running_mean", "_running_var"))]
        others = [n for n in params if n not in affine and n not in statistics]
        still = [n for n in affine if params[n].grad_req != "null"]
        if still:
            lr_zero = [n for n in still if params[n].lr_mult == 0]
            extra = (" (lr_mult = 0 stops the update but the gradient is still computed: set grad_req)"
                     if lr_zero else "")
            raise _Wrong(f"these BN parameters still have grad_req != 'null': {still}{extra}")
        frozen = [n for n in others if params[n].grad_req != "write"]
        if frozen:
            raise _Wrong(f"you changed grad_req of parameters that are not BN's γ or β: {frozen}")
        trainer = mx_gluon.Trainer(params, "sgd", {"learning_rate": 0.5})
        x = mx.np.random.normal(size=(8, 1, 28, 28))
        y = mx.np.array([0, 1, 2, 3, 4, 5, 6, 7])
        before = {n: params[n].data().copy() for n in params}
        bn_gluon.train_step(net, x, y, trainer)
        moved = [n for n in affine if float(abs(params[n].data() - before[n]).max()) > 0]
        if moved:
            raise _Wrong(f"after a training step these BN parameters changed: {moved}")
        if all(float(abs(params[n].data() - before[n]).max()) == 0 for n in others):
            raise _Wrong("after a training step no weight moved: only γ and β should be frozen")
        if all(float(abs(params[n].data() - before[n]).max()) == 0 for n in statistics):
            raise _Wrong("the running statistics no longer update: leave them and the network's mode alone")
        return "every BN γ and β has grad_req 'null' and stays fixed in a Trainer step; the weights still train."


#: The course's exercises in order; ``q1`` … ``q10`` are the same objects.
EXERCISES: tuple[Exercise, ...] = (
    BiasBeforeBatchNorm(), UsableLearningRate(), BatchNormWhere(), DropoutToBatchNorm(), FreezeGammaBeta(),
    LiteBatchNorm(), GroupNormFromScratch(), FoldBatchNorm(), RunningStatistics(), FreezeGammaBetaGluon(),
)
q1, q2, q3, q4, q5, q6, q7, q8, q9, q10 = EXERCISES
