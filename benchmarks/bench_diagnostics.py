"""Cost of bncourse.diagnostics during training: recording percentiles must not slow training by more than 20 %.

The network and batches are those of notebook 01's Figure 1 reproduction (784-100-100-100-10 sigmoid MLP,
mini-batches of 60, plain SGD). The same steps are timed without any hook, with the recording the notebook
does (15th/50th/85th percentiles of the input to one sigmoid of the last hidden layer, every step), and with
every sigmoid layer summarized whole on every 10th step. Like the notebook, on one thread: for matrices this
small a second thread costs more in synchronization than it saves (the previous thread count is restored).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bncourse import config, data, diagnostics, models, train
from common import Row, best_times, ratio_row

STEPS = 200
BATCH_SIZE = 60


def _steps_fn(batch_norm: bool, recorder: str | None):
    """A function that trains a fresh copy of the Figure 1 network for STEPS steps."""
    train_data = data.load_tensors("MNIST", "train").subset(STEPS * BATCH_SIZE)
    batches = list(train_data.batches(BATCH_SIZE, seed=0))

    def run() -> None:
        torch.manual_seed(0)
        model = models.MLP((784, 100, 100, 100, 10), batch_norm=batch_norm, activation="sigmoid")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        sigmoids = diagnostics.activation_modules(model)
        if recorder == "one unit":
            name = list(sigmoids)[-1]
            rec = diagnostics.ActivationRecorder(model, {name: sigmoids[name]}, record="input", unit=0)
        elif recorder == "all layers":
            rec = diagnostics.ActivationRecorder(model, sigmoids, saturation="auto", every=10)
        else:
            rec = None
        if rec is not None:
            rec.__enter__()
        try:
            for x, y in batches:
                train.train_step(model, x, y, optimizer, F.cross_entropy)
        finally:
            if rec is not None:
                rec.__exit__(None, None, None)
                assert len(next(iter(rec.history.values()))) > 0  # summaries are part of the cost

    return run


def rows() -> list[Row]:
    """Training time with recording / without, for the plain and the BN network."""
    threads = torch.get_num_threads()
    config.set_threads(1)
    out = []
    try:
        for batch_norm in (False, True):
            label = "BN" if batch_norm else "plain"
            runs = {recorder: _steps_fn(batch_norm, recorder) for recorder in (None, "one unit", "all layers")}
            seconds = best_times(runs, rounds=7)  # timed in turn, so slow spells hit all three alike
            for recorder in ("one unit", "all layers"):
                out.append(ratio_row(
                    f"{STEPS} steps, {label} Figure-1 net: percentiles of {recorder}"
                    + (" (every step)" if recorder == "one unit" else " (every 10th step)"),
                    "with recorder", seconds[recorder], "without", seconds[None], 1.2,
                ))
    finally:
        config.set_threads(threads)
    return out


if __name__ == "__main__":
    from common import format_rows

    print(format_rows(rows()))
