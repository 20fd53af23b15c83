"""bncourse: the companion package of the Batch Normalization course.

Each module holds one concept the notebooks use:

- :mod:`bncourse.config`   -- seeds, thread count and device in one call (reproducibility).
- :mod:`bncourse.data`     -- MNIST / Fashion-MNIST from the committed files in ``data/``, offline.
- :mod:`bncourse.models`   -- the course's networks, with and without batch normalization.
- :mod:`bncourse.train`    -- the training loop and its per-epoch history.
- :mod:`bncourse.evaluate` -- test loss, accuracy, per-class accuracy, batch- vs population-statistics.
- :mod:`bncourse.plots`    -- the figures.
"""

__version__ = "0.1.0"
