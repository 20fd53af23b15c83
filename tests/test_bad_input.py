"""Bad input gets a clear error naming what was expected and what was received -- never a silent
wrong result or an error from deep inside torch."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from bncourse import checks, config, data, evaluate, layers, models, train


def _td(n=10):
    x = torch.randn(n, 4)
    return data.TensorData("toy", "train", x, torch.arange(n) % 3, tuple("abc"), 0.0, 1.0)


@pytest.mark.parametrize("bad", ["no", 1, None])
def test_flags_must_be_bools(bad):
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        data.Batches(torch.zeros(4, 2), torch.zeros(4), 2, shuffle=bad)
    with pytest.raises(TypeError, match="drop_last must be True or False"):
        data.Batches(torch.zeros(4, 2), torch.zeros(4), 2, drop_last=bad)


@pytest.mark.parametrize("bad", [1.5, "0", -1])
def test_batch_seed_must_be_an_int(bad):
    with pytest.raises(TypeError, match="seed must be an int"):
        data.Batches(torch.zeros(4, 2), torch.zeros(4), 2, seed=bad)


@pytest.mark.parametrize("bad", [1.5, "0"])
def test_config_seed_must_be_an_int(bad):
    with pytest.raises(TypeError, match="seed must be an int, got"):
        config.seed_everything(bad)


def test_numpy_integers_count_as_ints():
    assert checks.positive_int("batch_size", np.int64(8)) == 8
    batches = data.Batches(torch.zeros(8, 2), torch.zeros(8), np.int64(4), seed=np.int64(3))
    assert len(batches) == 2
    config.seed_everything(np.int32(1))


@pytest.mark.parametrize("eps", [math.nan, math.inf, 0.0, -1e-5, True, "1e-5"])
def test_eps_must_be_finite_and_positive(eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        layers.BatchNorm(4, eps=eps)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        layers.batch_norm(torch.randn(4, 2), None, None, None, None, training=True, eps=eps)


def test_scratch_layer_keeps_the_input_dtype():
    for training in (True, False):
        layer = layers.BatchNorm(3).train(training)
        x = torch.randn(8, 3).half()
        assert layer(x).dtype == torch.float16
    x64 = torch.randn(8, 3, dtype=torch.float64)
    assert layers.BatchNorm(3).double()(x64).dtype == torch.float64


def test_mlp_explains_its_arguments():
    with pytest.raises(TypeError, match=r"sizes must be a sequence of layer widths such as \(784, 512, 10\), got int 784"):
        models.MLP(784)
    with pytest.raises(TypeError, match="pass ReLU without parentheses"):
        models.MLP((4, 3, 2), activation=nn.ReLU())
    assert isinstance(models.MLP((4, 3, 2), activation=nn.ReLU)[2], nn.ReLU)


def test_a_used_up_generator_names_the_cause():
    model = models.MLP((4, 8, 3))
    one_shot = ((x, y) for x, y in _td().batches(5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="one-shot iterator"):
        train.fit(model, one_shot, opt, epochs=2, device="cpu", progress=False)


def test_a_last_batch_of_one_hints_at_drop_last():
    model = models.MLP((4, 8, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"drop_last=True"):
        train.fit(model, _td(11).batches(5), opt, epochs=1, device="cpu", progress=False)
    train.fit(model, _td(11).batches(5, drop_last=True), opt, epochs=1, device="cpu", progress=False)


def test_a_model_without_parameters_names_the_problem():
    with pytest.raises(ValueError, match="has no parameters or buffers"):
        evaluate.evaluate(nn.Flatten(), _td())
    assert evaluate.evaluate(nn.Flatten(), _td(), device="cpu").num_examples == 10


def test_fold_batchnorm_folds_a_module_used_twice():
    torch.manual_seed(0)
    lin, bn = nn.Linear(4, 4), nn.BatchNorm1d(4)
    model = nn.Sequential(lin, bn, nn.ReLU(), lin, bn)
    model.train()
    for _ in range(3):
        model(torch.randn(16, 4) * 3 + 1)
    model.eval()
    x = torch.randn(32, 4)
    folded = layers.fold_batchnorm(model)
    assert len(folded) == 3                                   # Linear+BN folded at both uses, ReLU kept
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
