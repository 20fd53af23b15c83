"""bncourse.exercises.ex08: each check accepts its reference and rejects plausible wrong answers by name."""

import pytest
import torch
from torch.nn import functional as F

from bncourse import distributed
from bncourse.exercises import ____
from bncourse.exercises import ex08 as ex
from bncourse.exercises.ex08 import EXERCISES


def rejects(exercise, answer, *fragments):
    result = exercise.check(answer)
    assert not result.passed, f"{exercise.name} accepted a wrong answer"
    assert result.answered
    for fragment in fragments:
        assert fragment in result.message, f"{fragment!r} not in {result.message!r}"
    return result


def test_numbered_and_named():
    assert [e.number for e in EXERCISES] == [1, 2] and (ex.q1, ex.q2) == EXERCISES


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: type(e).__name__)
def test_every_check_accepts_the_reference_and_shows_hint_and_solution(exercise):
    assert exercise.check(type(exercise).reference).passed
    assert exercise.hint().text and "```python" in exercise.solution()._repr_markdown_()
    assert not exercise.check(____).answered


def test_the_sync_bn_module_and_the_exercise_agree():
    counts = torch.tensor([[3.0, 3.0], [7.0, 7.0]], dtype=torch.float64)
    x = [torch.randn(3, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64) + 1]
    sums, sq = torch.stack([p.sum(0) for p in x]), torch.stack([(p * p).sum(0) for p in x])
    mean, var, _ = ex.combine_statistics(counts, sums, sq)
    m2, v2 = distributed.combine_sums(counts.sum(0), sums.sum(0), sq.sum(0))
    assert torch.allclose(mean, m2) and torch.allclose(var, v2)


def test_q1_rejects_the_classic_mistakes():
    def unbiased_for_both(counts, sums, sq):
        n = counts.sum(0)
        mean = sums.sum(0) / n
        var = (sq.sum(0) / n - mean**2) * n / (n - 1)
        return mean, var, var

    def average_of_variances(counts, sums, sq):
        means = sums / counts
        var = (sq / counts - means**2).mean(0)
        n = counts.sum(0)
        return sums.sum(0) / n, var, var * n / (n - 1)

    def average_of_means(counts, sums, sq):
        mean = (sums / counts).mean(0)
        n = counts.sum(0)
        var = sq.sum(0) / n - mean**2
        return mean, var, var * n / (n - 1)

    def in_place(counts, sums, sq):
        n = counts.sum(0)
        mean = sums.sum(0).div_(n)
        sq /= n
        var = sq.sum(0) - mean**2
        return mean, var, var * n / (n - 1)

    def no_correction(counts, sums, sq):
        n = counts.sum(0)
        mean = sums.sum(0) / n
        var = sq.sum(0) / n - mean**2
        return mean, var, var

    def crashes(counts, sums, sq):
        raise IndexError("oops")

    rejects(ex.q1, unbiased_for_both, "unbiased variance")
    rejects(ex.q1, average_of_variances, "averaged the ranks' variances")
    rejects(ex.q1, average_of_means, "averaged the ranks' means")
    rejects(ex.q1, in_place, "in place")
    rejects(ex.q1, no_correction, "unbiased")
    rejects(ex.q1, crashes, "IndexError", "oops")


def _ghost(x, vbs, weight, bias, eps, *, use_eps=None, unbiased=False, whole=False, inplace=False, affine=True):
    eps = eps if use_eps is None else use_eps
    chunks = [x] if whole else x.split(vbs)
    dims = [0] + list(range(2, x.dim()))
    out = []
    for ch in chunks:
        if inplace:
            ch -= ch.mean(dims, keepdim=True)
            out.append(ch / torch.sqrt(ch.var(dims, unbiased=False, keepdim=True) + eps))
        else:
            out.append((ch - ch.mean(dims, keepdim=True)) / torch.sqrt(ch.var(dims, unbiased=unbiased, keepdim=True) + eps))
    shape = [1, -1] + [1] * (x.dim() - 2)
    y = torch.cat(out)
    return y * weight.view(shape) + bias.view(shape) if affine else y


def test_q2_rejects_the_classic_mistakes():
    rejects(ex.q2, lambda x, v, w, b, e: _ghost(x, v, w, b, e, whole=True), "whole batch")
    rejects(ex.q2, lambda x, v, w, b, e: _ghost(x, v, w, b, e, unbiased=True), "unbiased")
    rejects(ex.q2, lambda x, v, w, b, e: _ghost(x, v, w, b, e, use_eps=1e-5), "hard-coded")
    rejects(ex.q2, lambda x, v, w, b, e: _ghost(x, v, w, b, e, inplace=True), "in place")
    rejects(ex.q2, lambda x, v, w, b, e: _ghost(x, v, w, b, e, affine=False), "γ and β")
    per_example_only = lambda x, v, w, b, e: torch.cat([  # noqa: E731
        F.batch_norm(ch, None, None, w, b, True, 0.0, e) if x.dim() == 2 else
        ((ch - ch.mean(0, keepdim=True)) / torch.sqrt(ch.var(0, unbiased=False, keepdim=True) + e)) * w.view(1, -1, 1, 1)
        + b.view(1, -1, 1, 1) for ch in x.split(v)])
    rejects(ex.q2, per_example_only, "positions")


def test_q2_reference_matches_the_package():
    x = torch.randn(8, 3, 2, 2, dtype=torch.float64)
    w, b = torch.rand(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    assert torch.allclose(ex.ghost_batch_norm(x, 4, w, b, 1e-5), distributed.ghost_batch_norm(x, 4, w, b, 1e-5))
