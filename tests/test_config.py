"""bncourse.config: seeds, threads and device."""

import random

import numpy as np
import pytest
import torch

from bncourse import _mxnet, config


def test_configure_makes_runs_repeatable():
    cfg = config.configure(seed=123, threads=1)
    a = (random.random(), np.random.rand(), torch.rand(3))
    config.configure(seed=123, threads=1)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert cfg.seed == 123 and cfg.threads == 1 and torch.get_num_threads() == 1
    assert "seed=123" in str(cfg) and "device=" in str(cfg)
    assert f"CPU kernels {torch.backends.cpu.get_cpu_capability()}" in str(cfg)
    assert f"torch {torch.__version__}" in str(cfg) and f"numpy {np.__version__}" in str(cfg)
    config.set_threads()
    assert torch.get_num_threads() == config.DEFAULT_THREADS


def test_get_device_defaults_and_overrides():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.get_device().type == expected
    assert config.get_device("cpu") == torch.device("cpu")
    assert config.get_device(torch.device("cpu")).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_gpu():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        config.get_device("cuda")


def test_bad_arguments():
    with pytest.raises(TypeError, match="device"):
        config.get_device(0)
    with pytest.raises(ValueError, match=">= 1"):
        config.set_threads(0)
    with pytest.raises(TypeError, match="threads"):
        config.set_threads(1.5)
    with pytest.raises(TypeError, match="seed"):
        config.seed_everything("0")
    with pytest.raises(ValueError, match="seed"):
        config.seed_everything(-1)


def test_threads_restored_after_importing_mxnet():
    """mxnet lowers OpenMP threads for torch too; set_threads() undoes it."""
    if not _mxnet.available():
        pytest.skip(_mxnet.skip_reason())
    _mxnet.import_mxnet()

    assert config.set_threads() == config.DEFAULT_THREADS
    assert torch.get_num_threads() == config.DEFAULT_THREADS


def test_versions_name_mxnet_only_once_it_is_imported(monkeypatch):
    import sys
    import types

    monkeypatch.delitem(sys.modules, "mxnet", raising=False)
    assert "mxnet" not in config.versions() and config.versions().startswith("Python ")
    monkeypatch.setitem(sys.modules, "mxnet", types.SimpleNamespace(__version__="1.9.1"))
    assert config.versions().endswith(" · mxnet 1.9.1")


@pytest.mark.parametrize("device, error, match", [
    ("mps", ValueError, "MPS device is not available"),
    ("xpu-nonsense", ValueError, "must name a device"),
    (3, TypeError, "device must be None"),
])
def test_get_device_refuses_devices_this_machine_does_not_have(device, error, match):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    with pytest.raises(error, match=match):
        config.get_device(device)


def test_a_seed_out_of_range_is_refused_before_anything_is_seeded():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 18446744073709551615\], got 2\*\*70|got 1180591620717411303424"):
        config.seed_everything(2**70)
    assert torch.equal(torch.rand(1), before)
    with pytest.raises(TypeError, match="seed must be an int, got str"):
        config.seed_everything("0")
