"""bncourse: the companion package of the Batch Normalization course.

Each module holds one concept the notebooks use:

- :mod:`bncourse.config`   -- seeds, thread count and device in one call (reproducibility).
- :mod:`bncourse.data`     -- MNIST / Fashion-MNIST from the committed files in ``data/``, offline; the
  validation split (``holdout``); CIFAR-10 only if it is already on disk.
- :mod:`bncourse.models`   -- the course's networks, with and without batch normalization; the one way to
  choose a normalization layer by name (``norm_layers``, ``lenet_with_normalization``).
- :mod:`bncourse.train`    -- the one training loop (``train_loop``: steps or epochs, hooks, evaluation)
  under ``train_steps``, ``train_epoch`` and ``fit``, and its per-epoch history.
- :mod:`bncourse.selection` -- select on a validation split, test once, repeat over seeds.
- :mod:`bncourse.evaluate` -- test loss, accuracy, per-class accuracy, batch- vs population-statistics.
- :mod:`bncourse.plots`    -- the figures.
- :mod:`bncourse.layers`   -- batch normalization from scratch: the pure function, the module, its
  hand-derived backward pass, folding into the previous layer (notebook 02).
- :mod:`bncourse.diagnostics` -- hooks recording activation and gradient statistics and update ratios, and the
  drift measures (notebooks 01 and 06).
- :mod:`bncourse.figure1`  -- the faithful reproduction of Figure 1 of Ioffe & Szegedy (notebook 01).
- :mod:`bncourse.experiments` -- controlled sweeps: normalization axes, learning rates, batch sizes (notebook 04).
- :mod:`bncourse.gluon`    -- the MXNet Gluon twin of the PyTorch side, same names and return types (notebook 05).
- :mod:`bncourse.landscape` -- why BN helps, measured: noisy BN, internal covariate shift, the loss
  landscape along the gradient (notebook 06).
- :mod:`bncourse.bnstate`  -- BN's state in practice: freezing, AdaBN, recalibration (notebook 07).
- :mod:`bncourse.distributed` -- BN across devices: a process launcher, sync BN from scratch, ghost BN (notebook 08).
- :mod:`bncourse.report`   -- the claims table at the end of each notebook.
- :mod:`bncourse.exercises` -- self-checking exercises: the framework (``core``: check / hint / solution)
  and each notebook's exercises in a module of their own (``ex01`` ... ``ex08``).
- :mod:`bncourse.checks`   -- the argument checks the public functions share.
"""

__version__ = "0.1.0"
