"""Gluon port: the scratch BatchNorm block against gluon.nn.BatchNorm, and both frameworks' speed.

One BN-LeNet training step (forward, backward, SGD update) on a Fashion-MNIST batch of 256, for each
framework × implementation: Gluon with the scratch :class:`bncourse.gluon.BatchNorm` and with
``gluon.nn.BatchNorm``, PyTorch with :class:`bncourse.layers.BatchNorm` and with ``nn.BatchNorm2d/1d``.
Target: the scratch Gluon block's step costs at most 1.5× the built-in layer's. The examples/s of
all four are printed (``python benchmarks/bench_gluon.py``) and named in the row.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, ratio_row, round_ratios, round_times  # noqa: E402

from bncourse import data, layers, models  # noqa: E402
from bncourse import gluon as G  # noqa: E402

G.use_np()  # the course's Gluon code runs on MXNet's NumPy interface
from bncourse.train import train_step  # noqa: E402

BATCH = 256
STEPS = 5  # training steps per timed call
TARGET = 1.5


def _gluon_step(norm: str, x, y) -> Callable[[], None]:
    net = G.LeNet(batch_norm=True, norm_layer=norm)
    net.initialize()
    trainer = G.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    loss_fn = G.gluon.loss.SoftmaxCrossEntropyLoss()

    def run() -> None:
        for _ in range(STEPS):
            G.train_step(net, x, y, trainer, loss_fn)
        G.npx.waitall()

    return run


def _torch_step(scratch: bool, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    kwargs = {"norm2d": layers.BatchNorm, "norm1d": layers.BatchNorm} if scratch else {}
    model = models.LeNet(batch_norm=True, **kwargs)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def run() -> None:
        for _ in range(STEPS):
            train_step(model, x, y, optimizer, torch.nn.functional.cross_entropy)

    return run


def step_times(rounds: int = 9) -> dict[str, list[float]]:
    """Seconds per training step of each framework × implementation, in every round (timed in turn)."""
    tensors = data.load_tensors("FashionMNIST", "train").subset(BATCH)
    arrays = G.from_tensors(tensors)
    runs = {
        "Gluon scratch BatchNorm": _gluon_step("scratch", arrays.x, arrays.y),
        "Gluon gluon.nn.BatchNorm": _gluon_step("batch", arrays.x, arrays.y),
        "PyTorch scratch BatchNorm": _torch_step(True, tensors.x, tensors.y),
        "PyTorch nn.BatchNorm2d/1d": _torch_step(False, tensors.x, tensors.y),
    }
    return {name: [s / STEPS for s in times] for name, times in round_times(runs, rounds=rounds).items()}


def rows() -> list[Row]:
    times = step_times()
    seconds = {name: min(t) for name, t in times.items()}
    for name, s in seconds.items():
        print(f"{name}: {BATCH / s:,.0f} examples/s", file=sys.stderr)
    speeds = ", ".join(f"{name.split()[0]} {name.split()[1]} {BATCH / s:,.0f}" for name, s in seconds.items())
    # the ratio of the best times, and how much the ratio of two steps timed side by side varies
    per_round = round_ratios(times, "Gluon scratch BatchNorm", "Gluon gluon.nn.BatchNorm")
    spread = f"per-round ratio {per_round[0]:.2f}-{per_round[-1]:.2f}, median {per_round[len(per_round) // 2]:.2f}"
    return [
        ratio_row(
            f"BN-LeNet training step, batch {BATCH} (examples/s: {speeds}; {spread})",
            "Gluon scratch BatchNorm", seconds["Gluon scratch BatchNorm"],
            "gluon.nn.BatchNorm", seconds["Gluon gluon.nn.BatchNorm"],
            TARGET,
        )
    ]


if __name__ == "__main__":
    from common import format_rows

    print(format_rows(rows()))
