"""bncourse.checks: the shared argument checks."""

import pytest

from bncourse import checks
from bncourse.checks import positive_int


@pytest.mark.parametrize("value", [1, 2, 10**9])
def test_positive_int_returns_the_value(value):
    assert positive_int("n", value) == value


@pytest.mark.parametrize("value", [0, -3, 1.0, 2.5, "3", None, True, False])
def test_positive_int_rejects_with_the_name_and_the_value(value):
    with pytest.raises(ValueError, match=rf"^batch_size must be a positive int, got {type(value).__name__} {value!r}$".replace("(", r"\(")):
        positive_int("batch_size", value)


def test_the_other_checks_name_the_argument_and_the_value():
    import math

    import numpy as np
    import torch

    from bncourse import checks
    assert checks.positive_int("n", np.int64(3)) == 3 and type(checks.positive_int("n", np.int64(3))) is int
    assert checks.flag("shuffle", False) is False
    with pytest.raises(TypeError, match="shuffle must be True or False, got str 'no'"):
        checks.flag("shuffle", "no")
    assert checks.positive_finite("eps", 1e-5) == 1e-5
    for bad in (0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            checks.positive_finite("eps", bad)
    assert checks.probability("p", 0.5) == 0.5
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\], got float 1.5"):
        checks.probability("p", 1.5)
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        checks.module("model", "net")
    assert checks.device_of(torch.nn.Linear(2, 2)) == torch.device("cpu")
    with pytest.raises(ValueError, match="no parameters or buffers"):
        checks.device_of(torch.nn.ReLU())


def test_the_issue25_checks_name_the_argument_and_the_value():
    import numpy as np
    import torch

    assert checks.callable_("loss_fn", len) is len
    with pytest.raises(TypeError, match="loss_fn must be callable, got NoneType None"):
        checks.callable_("loss_fn", None)
    assert checks.seed("seed", np.int64(3)) == 3 and checks.seed("seed", 2**32 - 1) == 2**32 - 1
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 4294967295\], got 1180591620717411303424"):
        checks.seed("seed", 2**70)
    with pytest.raises(TypeError, match="seed must be an int, got str '1'"):
        checks.seed("seed", "1")
    assert checks.seed("seed", -5, lower=-10) == -5
    assert checks.available_device("device", "cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'mps' was requested"):
        checks.available_device("device", "mps")
    with pytest.raises(ValueError, match="device must name a device"):
        checks.available_device("device", "gpu0")
    with pytest.raises(TypeError, match="device must be None, a string"):
        checks.available_device("device", 0)
    assert checks.labels(torch.tensor([0, 2])).dtype == torch.long
    with pytest.raises(TypeError, match="integer class labels .* got dtype torch.float32"):
        checks.labels(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"must be 1-D .* got shape \(2, 1\)"):
        checks.labels(torch.tensor([[0], [1]]))
