"""Speed of one training epoch of the course's seed MLP (784-512-256-10 with BatchNorm1d, SGD, batch 64).

Four ways to spend one epoch over the 60,000 MNIST training images, timed in turn, round after round, after a
warm-up epoch of each (``common.best_times``), so that a slow spell of the machine hits all four alike:

* **bncourse** -- ``bncourse.train.train_epoch`` over ``TensorData.batches`` (in-memory, normalized
  tensors; one shuffle per epoch, every batch a view).
* **DataLoader** -- the same model trained by a plain loop over a ``torch.utils.data.DataLoader`` of
  ``torchvision_dataset("MNIST", transform=ToTensor())`` (one PIL image and one transform per example).
* **bare loop** -- the same model, batches and optimizer stepped by the five lines of a plain PyTorch loop,
  with none of ``train_epoch``'s bookkeeping (the loss and accuracy it sums, its hooks and checks): what the
  course's loop itself costs.
* **GEMM floor** -- only the matrix products an epoch of this model must compute, with the same shapes:
  for every Linear layer the forward ``x @ W^T``, the weight gradient ``grad^T @ x`` and the input
  gradient ``grad @ W`` -- except for the first layer, whose input gradient autograd never computes
  (the images do not require a gradient). No autograd, no BN, no activation, no optimizer.

Targets: bncourse's epoch at most 2.0x the GEMM floor, at least 2.5x faster than the DataLoader loop, and at
most 1.1x the bare loop. The floor's operands stay hot in the cache from one product to the next, and it skips
BN, the activations and the optimizer, so no real training step reaches it: the bare loop's own ratio to the
floor (printed too) shows how far plain PyTorch gets on this machine.

Usage: ``python benchmarks/run.py training`` (or this file directly, with ``--repeats N``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, best_times, format_rows, ratio_row  # noqa: E402

from bncourse import config, data, models, train  # noqa: E402

SIZES = (784, 512, 256, 10)
BATCH_SIZE = 64
LR = 0.01


def _model_and_optimizer(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    config.seed_everything(seed)
    model = models.MLP(SIZES, batch_norm=True)
    return model, torch.optim.SGD(model.parameters(), lr=LR)


def bncourse_epoch() -> Callable[[], object]:
    """One epoch of ``train.train_epoch`` over in-memory ``TensorData.batches``."""
    train_set = data.load_tensors("MNIST", "train")
    batches = train_set.batches(BATCH_SIZE, seed=0)
    model, optimizer = _model_and_optimizer()
    return lambda: train.train_epoch(model, batches, optimizer, F.cross_entropy, "cpu")


def _plain_loop(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
    """The plainest PyTorch training loop over ``batches`` (a fresh seed model and SGD): no bookkeeping."""
    model, optimizer = _model_and_optimizer()

    def epoch() -> None:
        model.train()
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def bare_loop_epoch() -> Callable[[], object]:
    """One epoch of the plain loop over the same in-memory batches as ``bncourse_epoch``."""
    return _plain_loop(data.load_tensors("MNIST", "train").batches(BATCH_SIZE, seed=0))


def dataloader_epoch() -> Callable[[], object]:
    """One epoch of the plain loop over a DataLoader with the ToTensor transform."""
    dataset = data.torchvision_dataset("MNIST", train=True, transform=ToTensor())
    return _plain_loop(DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True,
                                  generator=torch.Generator().manual_seed(0)))


def gemm_floor_epoch(num_examples: int = 60_000) -> Callable[[], object]:
    """The matrix products of one epoch's forward and backward passes, and nothing else."""
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(n_out, n_in, generator=gen) for n_in, n_out in zip(SIZES[:-1], SIZES[1:])]
    sizes = [BATCH_SIZE] * (num_examples // BATCH_SIZE) + ([num_examples % BATCH_SIZE] if num_examples % BATCH_SIZE else [])
    inputs = {n: [torch.randn(n, w.shape[1], generator=gen) for w in weights] for n in set(sizes)}
    grads = {n: [torch.randn(n, w.shape[0], generator=gen) for w in weights] for n in set(sizes)}

    def epoch() -> None:
        with torch.no_grad():
            for n in sizes:
                for layer, w in enumerate(weights):
                    x, g = inputs[n][layer], grads[n][layer]
                    x @ w.t()               # forward
                    g.t() @ x               # weight gradient
                    if layer > 0:
                        g @ w               # input gradient (not needed below the first layer's input)

    return epoch


def rows(repeats: int = 5) -> list[Row]:
    """Time the four epochs in ``repeats`` alternating rounds (best of each, after one warm-up epoch) and
    return their ratios."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    seconds = best_times({"floor": gemm_floor_epoch(), "bncourse": bncourse_epoch(), "bare": bare_loop_epoch(),
                          "loader": dataloader_epoch()}, rounds=repeats, warmup=1)
    return [
        ratio_row("MLP epoch vs GEMM floor", "bncourse train_epoch", seconds["bncourse"], "GEMM-only floor",
                  seconds["floor"], 2.0),
        ratio_row("MLP epoch vs GEMM floor (plain PyTorch)", "bare step loop", seconds["bare"], "GEMM-only floor",
                  seconds["floor"], 2.0),
        ratio_row("The loop's own cost", "bncourse train_epoch", seconds["bncourse"], "bare step loop",
                  seconds["bare"], 1.1),
        ratio_row("DataLoader loop vs bncourse", "DataLoader+ToTensor loop", seconds["loader"],
                  "bncourse train_epoch", seconds["bncourse"], 2.5, at_most=False),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (best of each is kept)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(format_rows(rows(args.repeats)))
