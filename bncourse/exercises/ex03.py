"""The exercises of notebook 03 (BatchNorm1d in an MLP): ``q1`` … ``q3``, each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

They practise the notebook's pitfalls and bookkeeping: evaluating a BN network without contaminating its
running statistics or its modes, counting BN's parameters and buffers in a nested model, and building the
MLP with BN before each ReLU and no bias where BN cancels it.

Example:
    >>> from bncourse.exercises import ____
    >>> def evaluate_without_touching(model, x):
    ...     return ____
    >>> evaluate_without_touching = q1.answer_or_solution(evaluate_without_touching)  # doctest: +SKIP
    >>> q1.check(evaluate_without_touching)                                           # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2", "q3",
    # the reference solutions
    "evaluate_without_touching", "count_bn_parameters_and_buffers", "bn_mlp",
    # the exercise classes
    "EvaluateWithoutTouching", "CountParametersAndBuffers", "BuildBatchNormMLP",
]

import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .. import layers, models
from .core import Exercise, _Wrong, _generator


# ---------------------------------------------------------------------------------------------
# 1. Evaluate without touching the model
# ---------------------------------------------------------------------------------------------
def evaluate_without_touching(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference solution of :class:`EvaluateWithoutTouching`."""
    modes = [(m, m.training) for m in model.modules()]   # every module's own mode, not only the top one
    model.eval()                                          # BN: running statistics, no buffer updates
    try:
        with torch.no_grad():                             # no graph; does NOT change BN's mode by itself
            return model(x)
    finally:
        for m, training in modes:
            m.training = training


class EvaluateWithoutTouching(Exercise):
    """The contamination pitfall of notebook 03: evaluate with running statistics and leave no trace."""

    number = 1
    title = "Evaluate without touching the model"
    task = ("Write `evaluate_without_touching(model, x)` returning the model's outputs (logits) for the batch `x` "
            "as in *evaluation* mode — BN layers normalize with their running statistics — computed without "
            "recording gradients. Afterwards the model must be exactly as before: every module in the mode it "
            "was in (a model may be partly in training and partly in eval mode) and every buffer, "
            "`num_batches_tracked` included, unchanged.")
    hint_text = ("`torch.no_grad()` switches off gradient recording but not BN's training mode — only "
                 "`model.eval()` does. Remember each module's `.training` flag (over `model.modules()`) before "
                 "and set it back afterwards, also when the forward pass raises (`try`/`finally`).")
    explanation = ("A training-mode forward pass normalizes with the batch's own statistics *and* writes them into "
                   "the running buffers — under `no_grad` as much as without it — so evaluating that way leaks the "
                   "test set into the model and makes predictions depend on batch-mates. `model.train()` at the end "
                   "is not a restore either: it would switch on a dropout layer or a frozen BN that was deliberately "
                   "in eval mode. `bncourse.evaluate.evaluate` does the same bookkeeping.")
    reference = staticmethod(evaluate_without_touching)

    @staticmethod
    def _models(seed: int) -> list[tuple[str, nn.Module]]:
        torch.manual_seed(seed)
        torch_mlp = models.MLP((12, 10, 8, 3), batch_norm=True)
        nested = nn.Sequential(
            nn.Sequential(nn.Linear(12, 9, bias=False), layers.BatchNorm(9, momentum=0.3), nn.ReLU()),
            nn.Dropout(0.5),
            nn.Sequential(nn.Sequential(nn.Linear(9, 7, bias=False), nn.BatchNorm1d(7, eps=1e-3), nn.ReLU())),
            nn.Linear(7, 3),
        )
        found = []
        for label, model in (("models.MLP with nn.BatchNorm1d", torch_mlp),
                             ("a nested model with the course's BatchNorm and a frozen (eval-mode) BN", nested)):
            model.train()
            for _ in range(3):                              # some history in the running statistics
                model(torch.randn(16, 12) * 2 + 1)
            found.append((label, model))
        nested[2][0][1].eval()                              # a BN deliberately frozen in eval mode
        found.append(("a model entirely in eval mode", copy.deepcopy(torch_mlp).eval()))
        return found

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(301)
        for label, model in self._models(301):
            x = torch.randn(5, 12, generator=g) * 3 - 2
            reference = copy.deepcopy(model).eval()
            with torch.no_grad():
                expected = reference(x)
            modes = {name: m.training for name, m in model.named_modules()}
            buffers = {name: b.clone() for name, b in model.named_buffers()}
            params = {name: p.detach().clone() for name, p in model.named_parameters()}
            given = x.clone()
            got = self._call(answer, model, given)
            where = f"for {label}"
            changed = [n for n, b in model.named_buffers() if not torch.equal(b, buffers[n])]
            if any(n.endswith("num_batches_tracked") for n in changed) or any(n.endswith("running_mean") for n in changed):
                raise _Wrong(f"{where} the running statistics changed ({changed}): the forward pass ran in training "
                             "mode — torch.no_grad() does not switch BN to eval mode, model.eval() does")
            if changed:
                raise _Wrong(f"{where} these buffers changed: {changed}; leave every buffer as it was")
            if any(not torch.equal(p, params[n]) for n, p in model.named_parameters()):
                raise _Wrong(f"{where} the model's parameters changed; evaluation must not change them")
            now = {name: m.training for name, m in model.named_modules()}
            if now != modes:
                wrong = [n or "the model" for n in modes if modes[n] != now[n]]
                if all(not t for t in now.values()):
                    raise _Wrong(f"{where} the model was left in eval mode; put every module back in the mode it "
                                 "was in")
                if all(now.values()):
                    raise _Wrong(f"{where} you switched every module to training mode afterwards, but some were in "
                                 f"eval mode before ({wrong}): restore each module's own mode, not model.train()")
                raise _Wrong(f"{where} these modules are not in the mode they were in: {wrong}")
            if not torch.equal(given, x):
                raise _Wrong(f"{where} you changed x in place")
            if isinstance(got, torch.Tensor) and got.requires_grad:
                raise _Wrong(f"{where} the outputs were computed with gradients recorded; use torch.no_grad()")
            self._diagnose(got, expected, {}, f"{where}, the outputs", atol=1e-5)
        return "eval-mode outputs without gradients; modes (mixed ones too), buffers and parameters left as they were."


# ---------------------------------------------------------------------------------------------
# 2. BN's parameters and buffers
# ---------------------------------------------------------------------------------------------
def count_bn_parameters_and_buffers(model: nn.Module) -> tuple[int, int]:
    """Reference solution of :class:`CountParametersAndBuffers`."""
    n_params = n_buffers = 0
    for m in model.modules():                                   # every depth, not only the children
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(m, layers.BatchNorm):
            n_params += sum(p.numel() for p in m.parameters(recurse=False))
            n_buffers += sum(b.numel() for b in m.buffers(recurse=False))
    return n_params, n_buffers


class CountParametersAndBuffers(Exercise):
    """How many values BN learns and how many it only tracks, in a nested model."""

    number = 2
    title = "BN's parameters and buffers"
    task = ("Write `count_bn_parameters_and_buffers(model)` returning a pair of ints `(n_parameters, n_buffers)`: "
            "the number of *values* (elements, not tensors) in the parameters and in the buffers of all "
            "batch-norm layers of `model` — torch's `BatchNorm1d`/`BatchNorm2d` and the course's "
            "`bncourse.layers.BatchNorm` — at any depth of nesting. `num_batches_tracked` counts as one value. "
            "Layers built with `affine=False` or `track_running_stats=False` have fewer of them.")
    hint_text = ("`model.modules()` walks the whole tree (`children()` only the first level). "
                 "`isinstance(m, nn.modules.batchnorm._BatchNorm)` covers torch's BN layers, not the course's; "
                 "`bncourse.models.batchnorm_layers(model)` finds both. A tensor's `.numel()` counts its values.")
    explanation = ("A BN layer over C features learns 2C values (γ and β) and tracks 2C + 1 (running mean, running "
                   "variance, the batch counter). The parameters are what the optimizer sees and "
                   "`models.count_parameters` counts; the buffers are saved in the `state_dict` but never trained. "
                   "Counting with `children()` silently misses every layer inside a nested block.")
    reference = staticmethod(count_bn_parameters_and_buffers)

    @staticmethod
    def _models() -> list[tuple[str, nn.Module]]:
        torch.manual_seed(302)
        return [
            ("models.MLP((20, 16, 8, 4), batch_norm=True)", models.MLP((20, 16, 8, 4), batch_norm=True)),
            ("a nested model mixing torch's BN layers, the course's BatchNorm, affine=False and "
             "track_running_stats=False",
             nn.Sequential(
                 nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                 nn.Sequential(nn.Conv2d(4, 6, 3, bias=False), layers.BatchNorm(6, affine=False), nn.ReLU(),
                               nn.Sequential(nn.Conv2d(6, 5, 1, bias=False), nn.BatchNorm2d(5))),
                 nn.Flatten(), nn.Linear(5 * 4 * 4, 7, bias=False), layers.BatchNorm(7), nn.Linear(7, 2))),
            ("models.LeNet(batch_norm=True)", models.LeNet(batch_norm=True)),
        ]

    def _verify(self, answer: Callable[..., Any]) -> str:
        for label, model in self._models():
            before = copy.deepcopy(model.state_dict())
            got = self._call(answer, model)
            if any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items()):
                raise _Wrong(f"for {label} the model changed: counting must not run it or modify it")
            expected = count_bn_parameters_and_buffers(model)
            if isinstance(got, tuple) and len(got) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in got):
                got = tuple(got)
            elif isinstance(got, (list, tuple)) and len(got) == 2:
                got = tuple(int(v) if isinstance(v, torch.Tensor) and v.numel() == 1 else v for v in got)
            if got == expected:
                continue
            what = f"for {label} the answer is {expected}, you returned {got!r}"
            bns = models.batchnorm_layers(model)
            torch_only = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            first_level = [m for m in model.children() if m in bns]

            def count(mods: Sequence[nn.Module]) -> tuple[int, int]:
                return (sum(p.numel() for m in mods for p in m.parameters(recurse=False)),
                        sum(b.numel() for m in mods for b in m.buffers(recurse=False)))

            candidates = {
                "you counted tensors, not the values in them (use .numel())":
                    (sum(1 for m in bns for _ in m.parameters(recurse=False)),
                     sum(1 for m in bns for _ in m.buffers(recurse=False))),
                "num_batches_tracked is missing: it counts as one value per layer that tracks statistics":
                    (expected[0], expected[1] - sum(1 for m in bns if getattr(m, "num_batches_tracked", None) is not None)),
                "the course's bncourse.layers.BatchNorm layers were missed (they are not subclasses of torch's _BatchNorm)":
                    count(torch_only),
                "you counted only the first level (children()); BN layers inside nested blocks were missed: use modules()":
                    count(first_level),
                "you counted the parameters of the whole model, not only BN's":
                    (sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers())),
                "the pair is the wrong way round: (n_parameters, n_buffers)": (expected[1], expected[0]),
            }
            for explanation, wrong in candidates.items():
                if got == wrong and wrong != expected:
                    raise _Wrong(f"{what}: {explanation}")
            if not (isinstance(got, tuple) and len(got) == 2):
                raise _Wrong(f"{what}: return a pair of ints (n_parameters, n_buffers)")
            raise _Wrong(what)
        return "right for an MLP, a LeNet and a nested model with the course's BN, affine=False and no running statistics."


# ---------------------------------------------------------------------------------------------
# 3. Build the BN MLP
# ---------------------------------------------------------------------------------------------
def bn_mlp(sizes: Sequence[int], eps: float = 1e-5, momentum: float = 0.1) -> nn.Sequential:
    """Reference solution of :class:`BuildBatchNormMLP`."""
    layers_: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-2], sizes[1:-1]):
        layers_ += [nn.Linear(width_in, width_out, bias=False),         # BN cancels the bias; β replaces it
                    nn.BatchNorm1d(width_out, eps=eps, momentum=momentum),
                    nn.ReLU()]
    layers_.append(nn.Linear(sizes[-2], sizes[-1]))                    # the output layer keeps its bias
    return nn.Sequential(*layers_)


class BuildBatchNormMLP(Exercise):
    """The notebook's network, built by hand, with BN's options passed through."""

    number = 3
    title = "Build the BN MLP"
    task = ("Write `bn_mlp(sizes, eps=1e-5, momentum=0.1)` returning an `nn.Sequential` MLP with widths `sizes`: "
            "each hidden layer is `Linear` (no bias) → `BatchNorm1d(width, eps=eps, momentum=momentum)` → `ReLU`, "
            "and the output layer is a `Linear` with bias and no BN (the course's `bncourse.layers.BatchNorm` is accepted "
            "in place of `nn.BatchNorm1d`). The BN layers learn γ and β and keep running "
            "statistics (the defaults).")
    hint_text = ("Loop over `zip(sizes[:-2], sizes[1:-1])`; pass `bias=False` to the Linear layers that feed BN and "
                 "`eps=eps, momentum=momentum` to each BatchNorm1d. `models.MLP` shows the pattern.")
    explanation = ("BN sits between the affine map and the nonlinearity (Ioffe & Szegedy), its mean subtraction "
                   "cancels the Linear bias, and β takes over its role — hence `bias=False`, one parameter per hidden "
                   "unit saved. `affine=False` would remove γ and β, `track_running_stats=False` the running "
                   "statistics (eval mode would then use batch statistics): both are options silently off. eps and "
                   "momentum are the caller's to choose.")
    reference = staticmethod(bn_mlp)

    @staticmethod
    def _describe(model: nn.Module) -> list[str]:
        parts = []
        for m in model.modules():
            if isinstance(m, nn.Linear):
                parts.append(f"Linear({m.in_features},{m.out_features},bias={m.bias is not None})")
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(m, layers.BatchNorm):
                kind = "BatchNorm1d" if isinstance(m, (nn.BatchNorm1d, layers.BatchNorm)) else type(m).__name__
                parts.append(f"{kind}({m.num_features},eps={m.eps:g},momentum={m.momentum},"
                             f"affine={m.affine},track_running_stats={m.track_running_stats})")
            elif isinstance(m, nn.ReLU):
                parts.append("ReLU")
            elif not isinstance(m, (nn.Sequential, nn.Flatten)):
                parts.append(type(m).__name__)
        return parts

    def _verify(self, answer: Callable[..., Any]) -> str:
        for sizes, eps, momentum in (((20, 16, 12, 5), 1e-5, 0.1), ((10, 7, 3), 1e-3, 0.3), ((8, 6, 6, 6, 2), 0.1, 0.05)):
            model = self._call(answer, sizes, eps=eps, momentum=momentum)
            if not isinstance(model, nn.Module):
                raise _Wrong(f"expected an nn.Sequential, got {type(model).__name__}")
            got, want = self._describe(model), self._describe(bn_mlp(sizes, eps, momentum))
            where = f"for sizes={sizes}, eps={eps}, momentum={momentum}"
            if got != want:
                bns = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, layers.BatchNorm))]
                linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
                if any(not bn.affine for bn in bns):
                    raise _Wrong(f"{where} a BN layer has affine=False: it must learn γ and β")
                if any(not bn.track_running_stats for bn in bns):
                    raise _Wrong(f"{where} a BN layer has track_running_stats=False: it must keep running statistics")
                if any(bn.eps != eps for bn in bns):
                    raise _Wrong(f"{where} a BN layer has eps={[bn.eps for bn in bns]}: pass eps=eps")
                if any(bn.momentum != momentum for bn in bns):
                    raise _Wrong(f"{where} a BN layer has momentum={[bn.momentum for bn in bns]}: pass momentum=momentum")
                if len(bns) != len(sizes) - 2:
                    raise _Wrong(f"{where} expected {len(sizes) - 2} BatchNorm1d layers (one per hidden layer, none on "
                                 f"the output), found {len(bns)}: {got}")
                if any(p == "ReLU" and "Norm" in q for p, q in zip(got, got[1:])):
                    raise _Wrong(f"{where} a BN comes after its ReLU; put it between the Linear and the ReLU: {got}")
                if linears and linears[-1].bias is None:
                    raise _Wrong(f"{where} the output Linear has no bias; only the Linear layers that feed BN drop it")
                if any(m.bias is not None for m in linears[:-1]):
                    raise _Wrong(f"{where} a Linear layer that feeds BN still has a bias; BN cancels it: bias=False")
                raise _Wrong(f"{where} expected the layers {want}, got {got}")
            out = model(torch.randn(4, sizes[0]))
            if out.shape != (4, sizes[-1]):
                raise _Wrong(f"{where} the output has shape {tuple(out.shape)}, expected (4, {sizes[-1]})")
        return "layer order, bias flags, widths, eps, momentum and BN options right for three networks."


#: Notebook 03's exercises in order; ``q1`` … ``q3`` are the same objects.
EXERCISES: tuple[Exercise, ...] = (EvaluateWithoutTouching(), CountParametersAndBuffers(), BuildBatchNormMLP())
q1, q2, q3 = EXERCISES
