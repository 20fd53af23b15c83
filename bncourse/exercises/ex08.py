"""The exercises of notebook 08 (BatchNorm across devices): ``q1`` and ``q2``, each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

Example:
    >>> from bncourse.exercises import ____
    >>> def combine_statistics(counts, sums, sums_of_squares):
    ...     return ____
    >>> combine_statistics = q1.answer_or_solution(combine_statistics)  # doctest: +SKIP
    >>> q1.check(combine_statistics)                                     # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2",
    # the reference solutions
    "combine_statistics", "ghost_batch_norm",
    # the exercise classes
    "SyncStatistics", "GhostBatchNormForward",
]

from typing import Any, Callable

import torch
from torch.nn import functional as F

from .core import Exercise, _Wrong, _generator


# ---------------------------------------------------------------------------------------------
# 1. The statistics of sync BN from every rank's sums
# ---------------------------------------------------------------------------------------------
def combine_statistics(counts: torch.Tensor, sums: torch.Tensor, sums_of_squares: torch.Tensor):
    """Reference solution of :class:`SyncStatistics`."""
    n = counts.sum(0)                              # examples per channel in the global batch
    mean = sums.sum(0) / n
    var = sums_of_squares.sum(0) / n - mean ** 2   # biased: what BN normalizes with
    unbiased_var = var * n / (n - 1)               # what the running variance tracks
    return mean, var, unbiased_var


class SyncStatistics(Exercise):
    """Combine per-rank count, sum and sum of squares into the global batch's statistics."""

    number = 1
    title = "Sync BN's statistics from every rank's sums"
    task = ("Each of R ranks sent, per channel, the number of values it holds, their sum and their sum of squares: "
            "`counts`, `sums`, `sums_of_squares`, each of shape (R, C) — the ranks may hold different numbers of "
            "examples. Write `combine_statistics(counts, sums, sums_of_squares)` returning `(mean, var, "
            "unbiased_var)` of the global batch, each of shape (C,): `var` is the biased variance BN normalizes "
            "with, `unbiased_var` the one its running variance tracks. Don't modify the tensors you are given.")
    hint_text = ("Add the counts, sums and sums of squares over the ranks first (that is what an all-reduce "
                 "does), then mean = Σx / N and var = Σx² / N − mean². Averaging the ranks' means or variances "
                 "forgets that the ranks hold different numbers of values and that their means differ.")
    explanation = ("Counts, sums and sums of squares *add* across ranks, so one all-reduce of 3·C numbers gives "
                   "the global batch's statistics exactly (in exact arithmetic). The average of per-rank variances "
                   "misses the spread *between* the ranks' means; averaging per-rank means is wrong whenever the "
                   "ranks hold different numbers of examples. In float32, Σx²/N − mean² cancels catastrophically "
                   "when the mean is large against the spread — `bncourse.distributed.combine_chan` avoids that.")
    reference = staticmethod(combine_statistics)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(81)
        for sizes in ((3, 9), (5, 2, 8)):
            parts = [torch.randn(n, 4, generator=g, dtype=torch.float64) * (1 + r) + 2 * r for r, n in enumerate(sizes)]
            x = torch.cat(parts)
            counts = torch.tensor([[float(n)] * 4 for n in sizes], dtype=torch.float64)
            sums = torch.stack([p.sum(0) for p in parts])
            sumsq = torch.stack([(p * p).sum(0) for p in parts])
            given = (counts.clone(), sums.clone(), sumsq.clone())
            out = self._call(answer, *given)
            if not all(torch.equal(a, b) for a, b in zip(given, (counts, sums, sumsq))):
                raise _Wrong("you changed counts, sums or sums_of_squares in place; compute new tensors instead")
            if not (isinstance(out, tuple) and len(out) == 3):
                raise _Wrong(f"expected a triple (mean, var, unbiased_var), got {type(out).__name__}")
            where = f"with {len(sizes)} ranks holding {', '.join(map(str, sizes))} examples"
            mean, var, unbiased = x.mean(0), x.var(0, unbiased=False), x.var(0, unbiased=True)
            rank_means = torch.stack([p.mean(0) for p in parts])
            self._diagnose(out[0], mean, {
                "you averaged the ranks' means, ignoring that they hold different numbers of examples: weigh each "
                "by its count (Σ sums / Σ counts)": rank_means.mean(0),
            }, f"{where}, the mean", atol=1e-8)
            avg_biased = torch.stack([p.var(0, unbiased=False) for p in parts]).mean(0)
            weighted_biased = (counts * torch.stack([p.var(0, unbiased=False) for p in parts])).sum(0) / counts.sum(0)
            self._diagnose(out[1], var, {
                "that is the unbiased variance (divide by N − 1); BN normalizes with the biased one (N)": unbiased,
                "you averaged the ranks' variances: that misses the spread between the ranks' means": avg_biased,
                "you combined the ranks' variances weighted by their counts, which still misses the spread between "
                "the ranks' means": weighted_biased,
                "you averaged the ranks' unbiased variances: that misses the spread between the ranks' means":
                    torch.stack([p.var(0, unbiased=True) for p in parts]).mean(0),
            }, f"{where}, var", atol=1e-8)
            self._diagnose(out[2], unbiased, {
                "that is the biased variance; the running variance tracks the unbiased one, var · N / (N − 1) with "
                "N the global count": var,
                "you corrected with one rank's count or the number of ranks instead of the global count N":
                    var * len(sizes) / (len(sizes) - 1),
            }, f"{where}, unbiased_var", atol=1e-8)
        return "global mean, biased and unbiased variance exact for 2 and 3 ranks holding unequal numbers of examples."


# ---------------------------------------------------------------------------------------------
# 2. Ghost BN's forward pass
# ---------------------------------------------------------------------------------------------
def ghost_batch_norm(x: torch.Tensor, virtual_batch_size: int, weight: torch.Tensor, bias: torch.Tensor,
                     eps: float) -> torch.Tensor:
    """Reference solution of :class:`GhostBatchNormForward`."""
    outputs = []
    for chunk in x.split(virtual_batch_size):               # consecutive virtual batches
        dims = [0] + list(range(2, chunk.dim()))            # per channel: over examples and positions
        mean = chunk.mean(dims, keepdim=True)
        var = chunk.var(dims, unbiased=False, keepdim=True)
        outputs.append((chunk - mean) / torch.sqrt(var + eps))
    shape = [1, -1] + [1] * (x.dim() - 2)
    return torch.cat(outputs) * weight.view(shape) + bias.view(shape)


class GhostBatchNormForward(Exercise):
    """Normalize a batch in virtual batches, each with its own statistics."""

    number = 2
    title = "Ghost BN's forward pass"
    task = ("Write `ghost_batch_norm(x, virtual_batch_size, weight, bias, eps)` for `x` of shape (N, C) or "
            "(N, C, H, W), N a multiple of `virtual_batch_size`: split the batch into consecutive virtual batches "
            "of `virtual_batch_size` examples, normalize each with its *own* per-channel mean and biased "
            "variance (over its examples and, for images, positions), then scale by `weight` (γ) and shift by "
            "`bias` (β), both of shape (C,). Use the `eps` you are given and don't modify `x`.")
    hint_text = ("`x.split(virtual_batch_size)` gives the virtual batches; in each, the statistics are over "
                 "dimension 0 and every dimension after the channels (`keepdim=True` makes them broadcast). "
                 "`torch.cat` puts the pieces back in order; reshape γ and β to (1, C, 1, 1) for images.")
    explanation = ("This is what k replicas with unsynchronized BN compute when each holds one virtual batch: "
                   "every virtual batch is normalized by itself, so each example's output depends only on the "
                   "examples of its own virtual batch. Hoffer et al. (2017) used it on one device to keep the "
                   "small-batch statistics while training with a large batch.")
    reference = staticmethod(ghost_batch_norm)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(82)
        for shape, vbs, eps in (((12, 3), 4, 1e-5), ((8, 2, 3, 3), 2, 0.5), ((6, 4, 2, 2), 3, 1e-3)):
            x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 1
            c = shape[1]
            weight = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
            bias = torch.randn(c, generator=g, dtype=torch.float64)
            given = x.clone()
            out = self._call(answer, given, vbs, weight.clone(), bias.clone(), eps)
            if not torch.equal(given, x):
                raise _Wrong("you modified x in place (e.g. with sub_ or -=): compute a new tensor instead")
            chunks = x.split(vbs)
            expected = torch.cat([F.batch_norm(ch, None, None, weight, bias, True, 0.0, eps) for ch in chunks])
            view = [1, -1] + [1] * (x.dim() - 2)

            def per_chunk(fn):
                return torch.cat([fn(ch) for ch in chunks]) * weight.view(view) + bias.view(view)

            dims = [0] + list(range(2, x.dim()))
            mistakes = {
                "every example was normalized with the statistics of the whole batch, not of its virtual batch":
                    F.batch_norm(x, None, None, weight, bias, True, 0.0, eps),
                "you used the unbiased variance (N − 1); BN normalizes with the biased one":
                    per_chunk(lambda ch: (ch - ch.mean(dims, keepdim=True)) / torch.sqrt(ch.var(dims, keepdim=True) + eps)),
                "eps is not the one you were given (it was hard-coded)":
                    torch.cat([F.batch_norm(ch, None, None, weight, bias, True, 0.0, 1e-5) for ch in chunks]),
                "γ and β were not applied":
                    torch.cat([F.batch_norm(ch, None, None, None, None, True, 0.0, eps) for ch in chunks]),
                "eps was added to the standard deviation instead of the variance":
                    per_chunk(lambda ch: (ch - ch.mean(dims, keepdim=True)) / (ch.var(dims, unbiased=False, keepdim=True).sqrt() + eps)),
            }
            if x.dim() == 4:
                mistakes["the statistics were taken over the examples only, not over the positions too (per channel "
                         "means over N, H and W)"] = per_chunk(lambda ch: (ch - ch.mean(0, keepdim=True)) /
                                                              torch.sqrt(ch.var(0, unbiased=False, keepdim=True) + eps))
            if vbs > 1:
                strided = torch.empty_like(x)
                k = x.shape[0] // vbs
                for i in range(k):
                    idx = torch.arange(i, x.shape[0], k)
                    strided[idx] = F.batch_norm(x[idx], None, None, weight, bias, True, 0.0, eps)
                mistakes["the virtual batches were taken with a stride (examples i, i + k, …), not as consecutive "
                         "blocks"] = strided
            self._diagnose(out, expected, mistakes,
                           f"for x of shape {tuple(shape)}, virtual batches of {vbs} and eps={eps}", atol=1e-8)
        return "matches BN applied to each virtual batch for (N, C) and (N, C, H, W) inputs, three eps values."


EXERCISES: tuple[Exercise, ...] = (SyncStatistics(), GhostBatchNormForward())
q1, q2 = EXERCISES
