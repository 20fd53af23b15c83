"""bncourse.exercises.ex01 … ex05: every check accepts its reference solution, reports placeholders as not
answered, turns the learner's exceptions into messages, and rejects plausible wrong answers with feedback
that names the mistake."""

import copy
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bncourse import layers, models
from bncourse.exercises import ____, core
from bncourse.exercises import ex01, ex02, ex03, ex04, ex05

MODULES = (ex01, ex02, ex03, ex04, ex05)
ALL = [e for module in MODULES for e in module.EXERCISES]


def rejects(exercise, answer, *fragments):
    """Assert that ``exercise.check(answer)`` fails and its message contains every fragment."""
    result = exercise.check(answer)
    assert not result.passed, f"{exercise.name} accepted a wrong answer"
    assert result.answered
    for fragment in fragments:
        assert fragment in result.message, f"{fragment!r} not in {result.message!r}"
    return result


# --------------------------------------------------------------------------------- mechanics
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_each_module_numbers_its_exercises_from_one(module):
    assert len(module.EXERCISES) >= 3
    assert [e.number for e in module.EXERCISES] == list(range(1, len(module.EXERCISES) + 1))
    assert (module.q1, module.q2, module.q3) == module.EXERCISES[:3]
    assert module.__doc__ and all(name in dir(module) for name in module.__all__)
    assert all(type(e).reference.__name__ in module.__all__ for e in module.EXERCISES)


@pytest.mark.parametrize("exercise", ALL, ids=lambda e: f"{type(e).__module__.rsplit('.', 1)[-1]}-{type(e).__name__}")
def test_every_check_accepts_the_reference_solution_quickly(exercise):
    start = time.perf_counter()
    result = exercise.check(type(exercise).reference)
    assert result.passed, result.message
    assert result.status == "Correct" and exercise.last_result is result
    assert time.perf_counter() - start < 5.0     # well under 1 s on an idle machine; generous for a loaded one


@pytest.mark.parametrize("exercise", ALL, ids=lambda e: f"{type(e).__module__.rsplit('.', 1)[-1]}-{type(e).__name__}")
def test_hint_solution_placeholder_and_crashes(exercise):
    hint, solution = exercise.hint(), exercise.solution()
    assert hint.text and exercise.name in repr(hint)
    assert f"def {type(exercise).reference.__name__}(" in solution.text and exercise.explanation in solution.text
    for answer in (____, lambda *args, **kwargs: ____):
        result = exercise.check(answer)
        assert not result.passed and not result.answered and "____" in result.message
    assert "expected a function" in exercise.check(42).message

    def crashes(*args, **kwargs):
        raise RuntimeError("boom")

    assert "raised RuntimeError: boom" in exercise.check(crashes).message


def test_answer_or_solution_and_scoreboard(monkeypatch):
    monkeypatch.setenv(core.SOLUTIONS_ENV, "1")
    assert ex02.q1.answer_or_solution(____) is ex02.batch_norm_train
    monkeypatch.delenv(core.SOLUTIONS_ENV)
    for module in MODULES:
        for e in module.EXERCISES:
            e.check(type(e).reference)
        assert core.all_passed(module.EXERCISES)
        assert "Exercise 1 ·" in core.summary(module.EXERCISES)


def test_shortcut_tripwires_are_removed_after_a_check():
    before = (F.batch_norm, torch.batch_norm, layers.batch_norm, torch.Tensor.backward, torch.autograd.grad)
    rejects(ex02.q1, lambda x, g, b, eps: (F.batch_norm(x, None, None, g, b, training=True, eps=eps), x.mean(0), x.var(0)),
            "torch.nn.functional.batch_norm")
    rejects(ex02.q2, lambda *a: 1 / 0)
    assert (F.batch_norm, torch.batch_norm, layers.batch_norm, torch.Tensor.backward, torch.autograd.grad) == before
    assert "apply" not in vars(layers.BatchNormFunction)      # the inherited classmethod is uncovered again
    assert nn.BatchNorm1d(3)(torch.randn(4, 3)).shape == (4, 3)
    assert layers.BatchNorm(3)(torch.randn(4, 3)).shape == (4, 3)


# --------------------------------------------------------------------------------- ex01
def test_ex01_q1_rejects_pre_activations_one_tail_and_hard_coded_level():
    def raw(z, activation, level=0.97):
        return (z.abs() >= level).float().mean(0)

    def upper(z, activation, level=0.97):
        y = torch.tanh(z) if activation == "tanh" else torch.sigmoid(z)
        return (y >= level).float().mean(0)

    def fixed(z, activation, level=0.97):
        return ex01.saturated_fraction(z, activation, 0.97)

    rejects(ex01.q1, raw, "pre-activations")
    rejects(ex01.q1, upper, "upper tail")
    rejects(ex01.q1, fixed, "hard-coded")
    rejects(ex01.q1, lambda z, a, level=0.97: ex01.saturated_fraction(z, a, level).mean(), "one number")


def test_ex01_q2_rejects_no_floor_first_width_and_signed_moves():
    def no_floor(t, min_spread):
        return np.abs(t[-1] - t[0]).max(0) / (t[:, -1] - t[:, 0]).mean(0)

    def first_width(t, min_spread):
        return np.abs(t[-1] - t[0]).max(0) / np.maximum(t[0, -1] - t[0, 0], min_spread)

    def signed(t, min_spread):
        return (t[-1] - t[0]).max(0) / np.maximum((t[:, -1] - t[:, 0]).mean(0), min_spread)

    def in_place(t, min_spread):
        t -= t[0]
        return ex01.unit_drift(t, min_spread)

    with np.errstate(divide="ignore", invalid="ignore"):
        rejects(ex01.q2, no_floor, "not finite", "floor")
    rejects(ex01.q2, first_width, "first probe")
    rejects(ex01.q2, signed, "signed")
    rejects(ex01.q2, in_place, "in place")
    rejects(ex01.q2, lambda t, m: np.abs(t[-1] - t[0]).max(0) / np.maximum((t[:, -1] - t[:, 0]).mean(0), 0.1),
            "hard-coded")
    from bncourse import diagnostics
    rejects(ex01.q2, lambda t, m: diagnostics.unit_drift(t, min_spread=m), "diagnostics.unit_drift")


def test_ex01_q3_rejects_reversed_ratio_hard_coded_factor_and_nan():
    def reversed_ratio(norms, factor):
        return ex01.gradient_health(list(reversed(norms)), factor)

    def ten(norms, factor):
        return ex01.gradient_health(norms, 10.0)

    def nan_blind(norms, factor):
        r = norms[0] / norms[-1]
        return "exploding" if r > factor else "vanishing" if r < 1 / factor else "healthy"

    rejects(ex01.q3, reversed_ratio, "wrong way round")
    rejects(ex01.q3, ten, "hard-coded")
    rejects(ex01.q3, nan_blind, "nan")


# --------------------------------------------------------------------------------- ex02
def _forward(x, g, b, eps, var=None, e=None):
    mean = x.mean(0)
    var = x.var(0, unbiased=False) if var is None else var
    return g * (x - mean) / torch.sqrt(var + (eps if e is None else e)) + b, mean, var


def test_ex02_q1_rejects_unbiased_missing_eps_hard_coded_eps_axis_and_mutation():
    def unbiased(x, g, b, eps):
        return _forward(x, g, b, eps, var=x.var(0))

    def in_place(x, g, b, eps):
        y, mean, var = _forward(x.clone(), g, b, eps)
        x -= mean
        return y, mean, var

    def wrong_axis(x, g, b, eps):
        y = g * (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + eps) + b
        return y, x.mean(0), x.var(0, unbiased=False)

    def module(x, g, b, eps):
        bn = nn.BatchNorm1d(x.shape[1], eps=eps).double()
        return bn(x), x.mean(0), x.var(0, unbiased=False)

    def scratch(x, g, b, eps):
        layer = layers.BatchNorm(x.shape[1], eps=eps).double()
        return layer(x), x.mean(0), x.var(0, unbiased=False)

    rejects(ex02.q1, unbiased, "unbiased")
    rejects(ex02.q1, lambda x, g, b, eps: _forward(x, g, b, eps, e=0.0), "eps is missing")
    rejects(ex02.q1, lambda x, g, b, eps: _forward(x, g, b, eps, e=1e-5), "hard-coded")
    rejects(ex02.q1, wrong_axis, "dim 1")
    rejects(ex02.q1, in_place, "in place")
    rejects(ex02.q1, module, "torch.nn.functional.batch_norm")
    rejects(ex02.q1, scratch, "bncourse.layers.batch_norm")


def test_ex02_q2_rejects_constant_statistics_missing_paths_and_autograd():
    def parts(d, x, g, eps):
        s = 1 / torch.sqrt(x.var(0, unbiased=False) + eps)
        xh = (x - x.mean(0)) * s
        return s, xh, (d * xh).sum(0), d.sum(0)

    def constants(d, x, g, eps):
        s, xh, dg, db = parts(d, x, g, eps)
        return g * s * d, dg, db

    def no_var_path(d, x, g, eps):
        s, xh, dg, db = parts(d, x, g, eps)
        return g * s * (d - d.mean(0)), dg, db

    def no_mean_path(d, x, g, eps):
        s, xh, dg, db = parts(d, x, g, eps)
        return g * s * (d - xh * (d * xh).mean(0)), dg, db

    def swapped(d, x, g, eps):
        dx, dg, db = ex02.batch_norm_backward(d, x, g, eps)
        return dx, db, dg

    def autograd(d, x, g, eps):
        x, g = x.clone().requires_grad_(), g.clone().requires_grad_()
        b = torch.zeros_like(g, requires_grad=True)
        dx, dg, db = torch.autograd.grad(_forward(x, g, b, eps)[0], (x, g, b), d)
        return dx, dg, db

    rejects(ex02.q2, constants, "constants")
    rejects(ex02.q2, no_var_path, "through the variance")
    rejects(ex02.q2, no_mean_path, "through the mean")
    rejects(ex02.q2, swapped, "dbeta")
    rejects(ex02.q2, autograd, "torch.autograd.grad")


def test_ex02_q3_rejects_batch_statistics_last_axis_broadcast_missing_sqrt_and_shortcut():
    def batch_stats(x, g, b, rm, rv, eps):
        dims = (0,) + tuple(range(2, x.dim()))
        view = (1, -1) + (1,) * (x.dim() - 2)
        return ex02.batch_norm_eval(x, g, b, x.mean(dims), x.var(dims, unbiased=False), eps) if x.shape[0] > 1 else \
            (x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True) * g.reshape(view) + b.reshape(view)

    def last_axis(x, g, b, rm, rv, eps):
        return g * (x - rm) / torch.sqrt(rv + eps) + b

    def no_sqrt(x, g, b, rm, rv, eps):
        view = (1, -1) + (1,) * (x.dim() - 2)
        return g.reshape(view) * (x - rm.reshape(view)) / (rv.reshape(view) + eps) + b.reshape(view)

    def shortcut(x, g, b, rm, rv, eps):
        return F.batch_norm(x, rm, rv, g, b, training=False, eps=eps)

    rejects(ex02.q3, batch_stats, "batch")
    rejects(ex02.q3, last_axis, "last axis")
    rejects(ex02.q3, no_sqrt, "square root")
    rejects(ex02.q3, shortcut, "torch.nn.functional.batch_norm")
    rejects(ex02.q3, lambda x, g, b, rm, rv, eps: ex02.batch_norm_eval(x, g, b, rm, rv, 1e-5), "hard-coded")


# --------------------------------------------------------------------------------- ex03
def test_ex03_q1_rejects_train_mode_under_no_grad_not_restoring_and_model_train():
    def train_no_grad(model, x):
        with torch.no_grad():
            return model(x)

    def not_restored(model, x):
        model.eval()
        with torch.no_grad():
            return model(x)

    def model_train(model, x):
        out = not_restored(model, x)
        model.train()
        return out

    def with_grad(model, x):
        restore = [(m, m.training) for m in model.modules()]
        out = model.eval()(x)
        for m, t in restore:
            m.training = t
        return out

    rejects(ex03.q1, train_no_grad, "running statistics changed", "no_grad")
    rejects(ex03.q1, not_restored, "left in eval mode")
    rejects(ex03.q1, model_train, "model.train()")
    rejects(ex03.q1, with_grad, "gradients recorded")
    assert ex03.q1.check(lambda model, x: not_restored(copy.deepcopy(model), x)).passed   # a copy is fine


def test_ex03_q2_rejects_children_only_torch_only_tensor_counts_and_missing_counter():
    def count(mods):
        return (sum(p.numel() for m in mods for p in m.parameters(recurse=False)),
                sum(b.numel() for m in mods for b in m.buffers(recurse=False)))

    def children(model):
        return count([m for m in model.children() if m in models.batchnorm_layers(model)])

    def torch_only(model):
        return count([m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)])

    def tensors(model):
        bns = models.batchnorm_layers(model)
        return sum(len(list(m.parameters())) for m in bns), sum(len(list(m.buffers())) for m in bns)

    def no_counter(model):
        bns = models.batchnorm_layers(model)
        return (sum(p.numel() for m in bns for p in m.parameters()),
                sum(b.numel() for m in bns for n, b in m.named_buffers() if n != "num_batches_tracked"))

    rejects(ex03.q2, children, "children()")
    rejects(ex03.q2, torch_only, "course's")
    rejects(ex03.q2, tensors, "tensors")
    rejects(ex03.q2, no_counter, "num_batches_tracked")


def test_ex03_q3_rejects_options_off_bias_kept_hard_coded_eps_and_bn_after_relu():
    def variant(**bn_options):
        def build(sizes, eps=1e-5, momentum=0.1):
            out = []
            for a, b in zip(sizes[:-2], sizes[1:-1]):
                out += [nn.Linear(a, b, bias=bn_options.get("bias", False)),
                        nn.BatchNorm1d(b, eps=bn_options.get("eps", eps), momentum=momentum,
                                       affine=bn_options.get("affine", True),
                                       track_running_stats=bn_options.get("track", True)), nn.ReLU()]
            return nn.Sequential(*out, nn.Linear(sizes[-2], sizes[-1]))
        return build

    def after_relu(sizes, eps=1e-5, momentum=0.1):
        out = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            out += [nn.Linear(a, b, bias=False), nn.ReLU(), nn.BatchNorm1d(b, eps=eps, momentum=momentum)]
        return nn.Sequential(*out, nn.Linear(sizes[-2], sizes[-1]))

    rejects(ex03.q3, variant(affine=False), "affine=False")
    rejects(ex03.q3, variant(track=False), "track_running_stats=False")
    rejects(ex03.q3, variant(bias=True), "still has a bias")
    rejects(ex03.q3, variant(eps=1e-5), "pass eps=eps")
    rejects(ex03.q3, after_relu, "after its ReLU")
    assert ex03.q3.check(lambda s, eps=1e-5, momentum=0.1: models.MLP(
        s, batch_norm=True, norm_layer=lambda w: layers.BatchNorm(w, eps=eps, momentum=momentum))).passed


# --------------------------------------------------------------------------------- ex04
def test_ex04_q1_rejects_per_pixel_unbiased_and_averaged_variances():
    rejects(ex04.q1, lambda f: (f.mean(0), f.var(0, unbiased=False)), "per channel *and pixel*")
    rejects(ex04.q1, lambda f: (f.mean((0, 2, 3)), f.var((0, 2, 3))), "unbiased")
    rejects(ex04.q1, lambda f: (f.mean((0, 2, 3)), f.var(0, unbiased=False).mean((1, 2))), "per-pixel variances")
    rejects(ex04.q1, lambda f: (f.mean((0, 2, 3)), f.var((2, 3), unbiased=False).mean(0)), "per-image variances")
    rejects(ex04.q1, lambda f: (f.mean((1, 2, 3)), f.var((1, 2, 3), unbiased=False)), "LayerNorm")


def test_ex04_q2_rejects_per_pixel_instance_statistics_last_axis_and_shortcut():
    def normalized(x, dims, eps):
        return (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + eps)

    def per_pixel(x, g, b, eps):
        return g.reshape(1, -1, 1, 1) * normalized(x, (0,), eps) + b.reshape(1, -1, 1, 1)

    def instance(x, g, b, eps):
        return g.reshape(1, -1, 1, 1) * normalized(x, (2, 3), eps) + b.reshape(1, -1, 1, 1)

    def last_axis(x, g, b, eps):
        return g * normalized(x, (0, 2, 3), eps) + b

    rejects(ex04.q2, per_pixel, "per pixel")
    rejects(ex04.q2, instance, "InstanceNorm")
    rejects(ex04.q2, last_axis)                       # raises for W != C: a message, not a traceback
    rejects(ex04.q2, lambda x, g, b, eps: nn.BatchNorm2d(x.shape[1], eps=eps).double()(x), "batch_norm")
    rejects(ex04.q2, lambda x, g, b, eps: ex04.batchnorm2d_train(x, g, b, 1e-5), "hard-coded")


def test_ex04_q3_rejects_layer_norm_for_instance_affine_off_running_stats_and_fixed_groups():
    def replace(kind_to_fix, layer_fn):
        def make(kind, channels, num_groups=2):
            return layer_fn(channels) if kind == kind_to_fix else ex04.make_norm(kind, channels, num_groups)
        return make

    rejects(ex04.q3, replace("instance", lambda c: nn.GroupNorm(1, c)), "layer norm")
    rejects(ex04.q3, replace("instance", lambda c: nn.InstanceNorm2d(c)), "affine is off")
    rejects(ex04.q3, replace("instance", lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=True)),
            "eval mode", "no running statistics")
    rejects(ex04.q3, replace("batch", lambda c: nn.BatchNorm2d(c, track_running_stats=False)), "running statistics")
    rejects(ex04.q3, replace("group", lambda c: nn.GroupNorm(2, c)), "num_groups=3")
    rejects(ex04.q3, replace("layer", lambda c: nn.LayerNorm(c)), "running the layer raised")
    shared = nn.BatchNorm2d(6)
    rejects(ex04.q3, replace("batch", lambda c: shared), "same layer")
    assert ex04.q3.check(replace("instance", lambda c: nn.GroupNorm(c, c))).passed       # GroupNorm(C, C) is instance norm


# --------------------------------------------------------------------------------- ex05
def test_ex05_q1_rejects_torch_momentum_unbiased_variance_and_in_place():
    def torch_way(rm, rv, b, m):
        return (1 - m) * rm + m * b.mean(0), (1 - m) * rv + m * b.var(0)

    def unbiased(rm, rv, b, m):
        return m * rm + (1 - m) * b.mean(0), m * rv + (1 - m) * b.var(0, ddof=1)

    def in_place(rm, rv, b, m):
        rm *= m
        rm += (1 - m) * b.mean(0)
        rv *= m
        rv += (1 - m) * b.var(0)
        return rm, rv

    rejects(ex05.q1, torch_way, "PyTorch's way round")
    rejects(ex05.q1, unbiased, "unbiased")
    rejects(ex05.q1, in_place, "in place")


def test_ex05_q2_rejects_missing_inverted_and_misplaced_factor_momentum_and_batch_size():
    def with_factor(factor_fn, decay_fn=lambda p, t: (1 - p) ** t):
        def convert(v, t, m, p, initial=1.0):
            decay = decay_fn(p, t)
            return decay * initial + factor_fn(m) * (v - decay * initial)
        return convert

    rejects(ex05.q2, lambda v, t, m, p, initial=1.0: v.clone(), "factor is missing")
    rejects(ex05.q2, with_factor(lambda m: m / (m - 1)), "inverted")
    rejects(ex05.q2, lambda v, t, m, p, initial=1.0: v * (m - 1) / m, "initial value's share")
    rejects(ex05.q2, with_factor(lambda m: (m - 1) / m, lambda p, t: p ** t), "wrong way round")
    rejects(ex05.q2, with_factor(lambda m: 1 / 2), "N·H·W")


def test_ex05_q3_rejects_views_kept_counter_swapped_names_and_torch_tensors():
    names = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}

    rejects(ex05.q3, lambda s: {names[k]: v.numpy() for k, v in s.items() if k in names}, "shares memory")
    rejects(ex05.q3, lambda s: {names.get(k, k): v.numpy().copy() for k, v in s.items()}, "num_batches_tracked")
    rejects(ex05.q3, lambda s: {("beta" if k == "weight" else "gamma" if k == "bias" else k): v.numpy().copy()
                                for k, v in s.items() if k in names}, "gamma holds β")
    rejects(ex05.q3, lambda s: {names[k]: v.clone() for k, v in s.items() if k in names}, "torch tensor")
    rejects(ex05.q3, lambda s: {k: v.numpy().copy() for k, v in s.items() if k != "num_batches_tracked"}, "'gamma'")
    rejects(ex05.q3, lambda s: {"gamma": s["weight"].numpy().copy(), "beta": s["bias"].numpy().copy(),
                                "running_mean": s["running_mean"].numpy().copy(),
                                "running_var": s["running_var"].numpy().copy()}, "KeyError")

    def pops(s):
        s.pop("num_batches_tracked")
        return ex05.convert_bn_state(s)

    rejects(ex05.q3, pops, "changed the state_dict")
