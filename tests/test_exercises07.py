"""bncourse.exercises.ex07: both checks accept the reference solution and reject plausible wrong answers with a
message naming the mistake."""

import types

import pytest
import torch
from torch import nn
from torch.optim import swa_utils

from bncourse import models
from bncourse.exercises import ____
from bncourse.exercises import ex07 as ex
from bncourse.exercises.ex07 import EXERCISES, q1, q2


def rejects(exercise, answer, *fragments):
    result = exercise.check(answer)
    assert not result.passed, f"{exercise.name} accepted a wrong answer"
    assert result.answered
    for fragment in fragments:
        assert fragment in result.message, f"{fragment!r} not in {result.message!r}"
    return result


def test_numbering_and_reference_solutions():
    assert [e.number for e in EXERCISES] == [1, 2] and (q1, q2) == EXERCISES
    for exercise in EXERCISES:
        result = exercise.check(type(exercise).reference)
        assert result.passed, result.message
        assert f"def {type(exercise).reference.__name__}(" in exercise.solution().text and exercise.hint().text


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: type(e).__name__)
def test_placeholders_and_crashes_get_feedback(exercise):
    assert not exercise.check(lambda *a: ____).answered
    assert "expected a function" in exercise.check(42).message

    def crashes(*args):
        raise RuntimeError("boom")

    assert "raised RuntimeError: boom" in exercise.check(crashes).message


# ----------------------------------------------------------------------------------------- q1
def _stay(self, mode=True):
    return nn.Module.train(self, False)


def test_freeze_rejects_eval_only():
    def eval_only(model):
        for bn in models.batchnorm_layers(model):
            bn.eval()
            bn.requires_grad_(False)
    rejects(q1, eval_only, "does not survive", "model.train()")


def test_freeze_rejects_requires_grad_only():
    def requires_grad_only(model):
        for bn in models.batchnorm_layers(model):
            bn.requires_grad_(False)
    rejects(q1, requires_grad_only, "requires_grad_(False) alone", "running statistics")


def test_freeze_rejects_walking_children_only():
    def children_only(model):
        for bn in model.children():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.requires_grad_(False)
                bn.train = types.MethodType(_stay, bn)
                bn.eval()
    rejects(q1, children_only, "nested", "model.modules()")


def test_freeze_rejects_missing_the_course_batchnorm():
    def torch_only(model):
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.requires_grad_(False)
                bn.train = types.MethodType(_stay, bn)
                bn.eval()
    rejects(q1, torch_only, "bncourse.layers.BatchNorm")


def test_freeze_rejects_freezing_the_whole_model_and_replacing_layers():
    def whole_model(model):
        model.requires_grad_(False)
        for m in model.modules():
            m.train = types.MethodType(_stay, m)
        model.eval()
    rejects(q1, whole_model, "not BN's γ or β")

    def replace(model):
        model[1] = nn.Identity()
    rejects(q1, replace, "replaced or removed")

    def statistics_but_trainable(model):
        for bn in models.batchnorm_layers(model):
            bn.train = types.MethodType(_stay, bn)
            bn.eval()
    rejects(q1, statistics_but_trainable, "γ/β still get gradients")


# ----------------------------------------------------------------------------------------- q2
def test_adabn_rejects_update_bn_with_dropout_on():
    rejects(q2, lambda model, batches: swa_utils.update_bn(batches, model), "dropout was active")


def test_adabn_rejects_keeping_the_momentum():
    def ema(model, batches):
        for bn in models.batchnorm_layers(model):
            bn.training = True
        with torch.no_grad():
            for x in batches:
                model(x)
        for bn in models.batchnorm_layers(model):
            bn.training = False
    rejects(q2, ema, "momentum was kept", "momentum=None")


def test_adabn_rejects_no_reset():
    def no_reset(model, batches):
        bns = models.batchnorm_layers(model)
        old = [bn.momentum for bn in bns]
        for bn in bns:
            bn.momentum, bn.training = None, True
        with torch.no_grad():
            for x in batches:
                model(x)
        for bn, m in zip(bns, old):
            bn.momentum, bn.training = m, False
    rejects(q2, no_reset, "not reset")


def test_adabn_rejects_forgetting_momentum_modes_and_changing_parameters():
    def no_restore(model, batches):
        model.eval()
        for bn in models.batchnorm_layers(model):
            bn.reset_running_stats()
            bn.momentum, bn.training = None, True
        with torch.no_grad():
            for x in batches:
                model(x)
    rejects(q2, no_restore, "momenta", "restore")

    def left_in_training(model, batches):
        ex.adabn(model, batches)
        for bn in models.batchnorm_layers(model):
            bn.training = True
    rejects(q2, left_in_training, "modes")

    def with_a_step(model, batches):
        ex.adabn(model, batches)
        with torch.no_grad():
            model[0].weight.add_(0.1)
    rejects(q2, with_a_step, "parameters changed", "0.weight")

    rejects(q2, lambda model, batches: None, "did not change")
