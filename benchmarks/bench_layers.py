"""The scratch batch normalization (bncourse.layers): training cost and the inference gain of folding.

Rows:

* one training step (forward, backward, SGD update) of the notebook-03 MLP 784-512-256-10 on a batch
  of 64, with the scratch ``BatchNorm`` vs with ``nn.BatchNorm1d``: target <= 1.25x;
* eval-mode inference of BN-LeNet on a batch of 1000 images, with every BN folded into the layer
  before it vs as trained (``nn.BatchNorm2d`` / ``nn.BatchNorm1d`` kept): target folded faster.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from common import Row, best_times, ratio_row

from bncourse.layers import BatchNorm, fold_batchnorm
from bncourse.models import MLP, LeNet

#: Training steps per timed call (one call is one sample of best_times).
STEPS = 20


def _training_steps(norm_layer: type[nn.Module], x: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model = MLP((784, 512, 256, 10), batch_norm=True, norm_layer=norm_layer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def run() -> None:
        for _ in range(STEPS):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def training_step_row() -> Row:
    """Scratch vs built-in BN in one training step of the notebook-03 MLP."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    seconds = best_times({"scratch": _training_steps(BatchNorm, x, y), "builtin": _training_steps(nn.BatchNorm1d, x, y)},
                         rounds=6)
    return ratio_row("MLP training step, batch 64", "scratch BatchNorm", seconds["scratch"] / STEPS,
                     "nn.BatchNorm1d", seconds["builtin"] / STEPS, 1.25)


def folding_row() -> Row:
    """Folded vs unfolded eval-mode inference of BN-LeNet."""
    torch.manual_seed(0)
    model = LeNet(batch_norm=True)
    x = torch.randn(1000, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(3):  # non-trivial running statistics
            model(x[:256])
    model.eval()
    folded = fold_batchnorm(model)

    def infer(net: nn.Module):
        def run() -> None:
            with torch.no_grad():
                net(x)

        return run

    seconds = best_times({"folded": infer(folded), "unfolded": infer(model)}, rounds=9)
    return ratio_row("BN-LeNet eval inference, batch 1000", "BN folded", seconds["folded"], "BN unfolded",
                     seconds["unfolded"], 1.0)


def rows() -> list[Row]:
    """Both comparisons, measured in this process."""
    return [training_step_row(), folding_row()]


if __name__ == "__main__":
    from common import format_rows

    print(format_rows(rows()))
