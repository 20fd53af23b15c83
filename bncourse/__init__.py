"""bncourse: the companion package of the Batch Normalization course.

Each module holds one concept the notebooks use:

- :mod:`bncourse.config`   -- seeds, thread count and device in one call (reproducibility).
- :mod:`bncourse.data`     -- MNIST / Fashion-MNIST from the committed files in ``data/``, offline.
- :mod:`bncourse.models`   -- the course's networks, with and without batch normalization.
- :mod:`bncourse.train`    -- the training loop and its per-epoch history.
- :mod:`bncourse.evaluate` -- test loss, accuracy, per-class accuracy, batch- vs population-statistics.
- :mod:`bncourse.plots`    -- the figures.
- :mod:`bncourse.layers`   -- batch normalization from scratch: the pure function, the module, its
  hand-derived backward pass, folding into the previous layer (notebook 02).
- :mod:`bncourse.diagnostics` -- hooks recording activation and gradient statistics and update ratios (notebook 01).
- :mod:`bncourse.experiments` -- controlled sweeps: normalizations, learning rates, batch sizes (notebook 04).
- :mod:`bncourse.gluon`    -- the MXNet Gluon port (notebook 05).
- :mod:`bncourse.landscape` -- why BN helps, measured: noisy BN, internal covariate shift, the loss
  landscape along the gradient (notebook 06).
- :mod:`bncourse.distributed` -- BN across devices: a process launcher, sync BN from scratch, ghost BN (notebook 08).
- :mod:`bncourse.exercises` -- self-checking exercises: the framework (``core``: check / hint / solution)
  and each notebook's exercises in a module of their own (``ex06``, ``ex08``).
- :mod:`bncourse.checks`   -- the argument checks the public functions share.
"""

__version__ = "0.1.0"
