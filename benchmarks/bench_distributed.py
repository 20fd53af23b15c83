"""The cost of synchronizing BN (bncourse.distributed): DDP training steps of BN-LeNet on 2 CPU processes
(gloo, 127.0.0.1), with the scratch sync BN vs with plain (per-replica) BN.

Row:

* 5 DDP steps, 2 ranks x 32 examples, scratch ``SyncBatchNorm`` (one all-gather in the forward and one
  all-reduce in the backward of each of LeNet's 4 BN layers) vs ``nn.BatchNorm2d/1d``: the two timed in
  turn, round after round, both ranks in lock step; best time of each on rank 0; target <= 1.5x.
"""

from __future__ import annotations

import copy

import torch

from common import Row, ratio_row, round_ratios

from bncourse import distributed
from bncourse.models import LeNet

#: Examples per rank and ranks.
PER_RANK, WORLD = 32, 2

#: Rounds of the alternating timing (each round: 5 steps of each variant).
ROUNDS = 15


def rows() -> list[Row]:
    torch.manual_seed(0)
    state = copy.deepcopy(LeNet(batch_norm=True).state_dict())
    x, y = torch.randn(WORLD * PER_RANK, 1, 28, 28), torch.randint(0, 10, (WORLD * PER_RANK,))
    times = distributed.run_workers(distributed.allreduce_cost_worker, WORLD, (state, x, y, ROUNDS, 5), timeout=900)[0]
    ratios = round_ratios(times, "sync", "plain")
    row = ratio_row(f"DDP step, 2 CPU ranks x {PER_RANK}: scratch sync BN vs per-replica BN "
                    f"(per-round ratios {ratios[0]:.2f}-{ratios[-1]:.2f}, median {ratios[len(ratios) // 2]:.2f})",
                    "sync BN", min(times["sync"]), "plain BN", min(times["plain"]), 1.5)
    return [row]
