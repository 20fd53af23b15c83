"""bncourse.gluon: the scratch Gluon BN against gluon.nn.BatchNorm and PyTorch, LeNet, data, training."""

import inspect
import os
import subprocess
import sys

import numpy as onp
import pytest
import torch

from bncourse import _mxnet

if not _mxnet.available():  # macOS, Windows: mxnet has no wheel there
    pytest.skip(_mxnet.skip_reason(), allow_module_level=True)

from bncourse import data, models  # noqa: E402
from bncourse import gluon as G  # noqa: E402

G.use_np()  # the course's Gluon code runs on MXNet's NumPy interface (notebook 05's setup does the same)
from bncourse.evaluate import Evaluation  # noqa: E402
from bncourse.train import History  # noqa: E402

mx = G.mx
from mxnet import autograd, gluon, np  # noqa: E402  (after bncourse.gluon has set up mxnet)
from mxnet.gluon import nn  # noqa: E402

SHAPES = {"2d": (16, 5), "4d": (8, 3, 6, 7)}


def _random(shape, seed=0, scale=2.0, shift=0.5):
    return onp.random.RandomState(seed).randn(*shape).astype("float32") * scale + shift


def _pair(shape, seed=0):
    """A scratch block and a gluon.nn.BatchNorm with the same random gamma and beta."""
    c = shape[1]
    scratch, builtin = G.BatchNorm(c), nn.BatchNorm(in_channels=c)
    scratch.initialize()
    builtin.initialize()
    gamma, beta = _random((c,), seed + 1, 0.5, 1.0), _random((c,), seed + 2, 0.5, 0.0)
    for block in (scratch, builtin):
        block.gamma.set_data(np.array(gamma))
        block.beta.set_data(np.array(beta))
    return scratch, builtin


def _train_step(block, x, dy):
    """Forward under record, backward with output gradient dy; returns (y, dx, dgamma, dbeta)."""
    x = x.copy()
    x.attach_grad()
    with autograd.record():
        y = block(x)
    y.backward(dy)
    return y.asnumpy(), x.grad.asnumpy(), block.gamma.grad().asnumpy(), block.beta.grad().asnumpy()


# ------------------------------------------------------------------------------------ threads
def test_importing_the_gluon_side_leaves_torch_threads_as_they_were():
    """A plain ``import mxnet`` can set OpenMP (shared with torch) to one thread; bncourse.gluon undoes it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
    code = "import torch; n = torch.get_num_threads(); import bncourse.gluon; print(n, torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    before, after = out.stdout.split()
    assert after == before
    assert out.stderr == "", out.stderr  # importing prints no warnings


# ------------------------------------------------------------------------------------ batch_norm
@pytest.mark.parametrize("kind", SHAPES)
def test_batch_norm_training_normalizes_and_updates_statistics(kind):
    shape = SHAPES[kind]
    x = _random(shape)
    c = shape[1]
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    with autograd.record():
        y, mean, var = G.batch_norm(np.array(x), np.ones(c), np.zeros(c), np.zeros(c), np.ones(c))
    y = y.asnumpy()
    assert y.shape == shape
    onp.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-5)
    onp.testing.assert_allclose(y.var(axis=axes), 1, atol=1e-3)
    onp.testing.assert_allclose(mean.asnumpy(), 0.1 * x.mean(axis=axes), rtol=1e-5, atol=1e-6)
    onp.testing.assert_allclose(var.asnumpy(), 0.9 + 0.1 * x.var(axis=axes), rtol=1e-5)


def test_batch_norm_prediction_uses_moving_statistics_and_keeps_them():
    x = _random((6, 4))
    rm, rv = _random((4,), 3), onp.abs(_random((4,), 4)) + 0.5
    gamma, beta = _random((4,), 5), _random((4,), 6)
    y, mean, var = G.batch_norm(np.array(x), np.array(gamma), np.array(beta), np.array(rm), np.array(rv))
    expected = gamma * (x - rm) / onp.sqrt(rv + 1e-5) + beta
    onp.testing.assert_allclose(y.asnumpy(), expected, rtol=1e-5, atol=1e-5)
    onp.testing.assert_array_equal(mean.asnumpy(), rm)
    onp.testing.assert_array_equal(var.asnumpy(), rv)


def test_batch_norm_rejects_bad_input():
    c = np.ones(3)
    with pytest.raises(TypeError, match="mxnet.np.ndarray"):
        G.batch_norm(torch.ones(2, 3), c, c, c, c)
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, H, W\)"):
        G.batch_norm(np.ones((2, 3, 4)), c, c, c, c)
    with pytest.raises(ValueError, match="gamma must have shape"):
        G.batch_norm(np.ones((2, 3)), np.ones(4), c, c, c)
    with pytest.raises(ValueError, match="momentum"):
        G.batch_norm(np.ones((2, 3)), c, c, c, c, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        G.batch_norm(np.ones((2, 3)), c, c, c, c, eps=0.0)  # eps must be > 0


def _plain_formula(x, gamma, beta, eps=1e-5):
    """Batch normalization written plainly, for MXNet's autograd to differentiate."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return gamma.reshape(shape) * (x - mean) / np.sqrt(var + eps) + beta.reshape(shape)


@pytest.mark.parametrize("kind", SHAPES)
def test_hand_derived_backward_equals_autograd_of_the_formula(kind):
    shape = SHAPES[kind]
    c = shape[1]
    x_np, dy_np = _random(shape, 5, 3.0, 2.0), _random(shape, 6)
    g_np, b_np = _random((c,), 7, 0.5, 1.0), _random((c,), 8)

    def run(normalize):
        x, gamma, beta = np.array(x_np), np.array(g_np), np.array(b_np)
        for a in (x, gamma, beta):
            a.attach_grad()
        with autograd.record():
            y = normalize(x, gamma, beta)
        y.backward(np.array(dy_np))
        return [a.asnumpy() for a in (y, x.grad, gamma.grad, beta.grad)]

    function = G.BatchNormFunction(eps=1e-5)
    for got, want in zip(run(function), run(_plain_formula)):
        onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the textbook form notebook 05 prints computes the same, outputs and gradients
    for got, want in zip(run(G.PlainBatchNormFunction(eps=1e-5)), run(G.BatchNormFunction(eps=1e-5))):
        onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    onp.testing.assert_allclose(function.mean.asnumpy(), x_np.mean(axis=axes), rtol=1e-5, atol=1e-5)
    onp.testing.assert_allclose(function.var.asnumpy(), x_np.var(axis=axes), rtol=1e-4)  # biased


def test_importing_leaves_mxnet_alone_until_use_np():
    """Importing bncourse.gluon does not switch MXNet to NumPy mode; the course's functions say how to."""
    code = (
        "from bncourse import gluon as G\n"
        "from mxnet import npx\n"
        "print(npx.is_np_array())\n"
        "try:\n"
        "    G.LeNet()\n"
        "except RuntimeError as err:\n"
        "    print(err)\n"
        "G.use_np(); print(npx.is_np_array(), type(G.LeNet()).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "False", out.stderr
    assert "call bncourse.gluon.use_np() first" in lines[1]
    assert lines[2] == "True LeNet"


def test_trainer_step_right_after_backward_does_not_wait_forever():
    """The hand backward must not read gamma: the trainer's queued update of gamma waits for it."""
    code = (
        "from bncourse import gluon as G\n"
        "from mxnet import autograd, gluon, np, npx\n"
        "G.use_np()\n"
        "net = G.LeNet(batch_norm=True, norm_layer='scratch'); net.initialize()\n"
        "trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1})\n"
        "x, y = np.random.uniform(size=(8, 1, 28, 28)), np.arange(8) % 10\n"
        "for _ in range(3):\n"
        "    with autograd.record():\n"
        "        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(x), y)\n"
        "    loss.backward()\n"
        "    trainer.step(8)\n"
        "npx.waitall()\n"
        "print('done')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "done", out.stderr


def test_block_rejects_bad_construction_and_input():
    with pytest.raises(ValueError, match="num_features"):
        G.BatchNorm(0)
    with pytest.raises(ValueError, match="momentum"):
        G.BatchNorm(3, momentum=-0.1)
    block = G.BatchNorm(3)
    block.initialize()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        block(np.ones((2, 4)))
    with pytest.raises(TypeError):
        block(onp.ones((2, 3)))


# ------------------------------------------------------------------- scratch == gluon.nn.BatchNorm
@pytest.mark.parametrize("kind", SHAPES)
def test_scratch_block_equals_gluon_batchnorm(kind):
    shape = SHAPES[kind]
    scratch, builtin = _pair(shape)
    assert [p.split("_", 1)[1] for p in scratch.collect_params()] == [p.split("_", 1)[1] for p in builtin.collect_params()]
    for step in range(4):  # forward + backward (training), several steps
        x = np.array(_random(shape, seed=10 + step, shift=step))
        dy = np.array(_random(shape, seed=20 + step))
        for got, want in zip(_train_step(scratch, x, dy), _train_step(builtin, x, dy)):
            onp.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        for name in ("running_mean", "running_var"):
            onp.testing.assert_allclose(
                getattr(scratch, name).data().asnumpy(), getattr(builtin, name).data().asnumpy(), rtol=1e-5, atol=1e-6
            )
    x = np.array(_random(shape, seed=99))
    onp.testing.assert_allclose(scratch(x).asnumpy(), builtin(x).asnumpy(), rtol=1e-4, atol=1e-4)  # prediction


def test_scratch_block_moving_statistics_move_only_in_training():
    block = G.BatchNorm(4)
    block.initialize()
    x = np.array(_random((10, 4)))
    block(x)  # outside record(): prediction
    onp.testing.assert_array_equal(block.running_mean.data().asnumpy(), onp.zeros(4))
    with autograd.record():
        block(x)  # the scratch block updates in its forward pass
    assert abs(block.running_mean.data().asnumpy()).sum() > 0
    assert "BatchNorm(4" in repr(block)


# ------------------------------------------------------------------ Gluon == PyTorch, conventions
@pytest.mark.parametrize("kind", SHAPES)
def test_gluon_matches_pytorch_outputs_and_gradients(kind):
    shape = SHAPES[kind]
    c = shape[1]
    x_np, dy_np = _random(shape, 1), _random(shape, 2)
    gamma, beta = _random((c,), 3, 0.5, 1.0), _random((c,), 4, 0.5, 0.0)
    torch_bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(c)
    with torch.no_grad():
        torch_bn.weight.copy_(torch.from_numpy(gamma))
        torch_bn.bias.copy_(torch.from_numpy(beta))
    xt = torch.from_numpy(x_np).requires_grad_()
    yt = torch_bn(xt)
    yt.backward(torch.from_numpy(dy_np))
    for block in _pair(shape):
        block.gamma.set_data(np.array(gamma))
        block.beta.set_data(np.array(beta))
        y, dx, dgamma, dbeta = _train_step(block, np.array(x_np), np.array(dy_np))
        onp.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
        onp.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-4)
        onp.testing.assert_allclose(dgamma, torch_bn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        onp.testing.assert_allclose(dbeta, torch_bn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
        # moving statistics agree once the conventions are mapped: the mean directly (0.9 <-> 0.1) ...
        onp.testing.assert_allclose(block.running_mean.data().asnumpy(), torch_bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        # ... the variance after rescaling PyTorch's unbiased batch variance to the biased one
        m = x_np.size // c
        torch_batch_var = (torch_bn.running_var.numpy() - 0.9) / 0.1
        onp.testing.assert_allclose(
            block.running_var.data().asnumpy(), 0.9 + 0.1 * torch_batch_var * (m - 1) / m, rtol=1e-4
        )


def test_pinned_gluon_conventions():
    """Facts of mxnet 1.9.1's gluon.nn.BatchNorm that the notebook's conventions table states."""
    x_np = _random((8, 3))
    axes = 0
    bn = nn.BatchNorm(in_channels=3)
    bn.initialize()
    assert bn._kwargs["momentum"] == 0.9 and bn._kwargs["eps"] == 1e-5  # defaults
    assert torch.nn.BatchNorm1d(3).momentum == 0.1 and torch.nn.BatchNorm1d(3).eps == 1e-5
    x = np.array(x_np)
    # a forward outside record() runs in prediction mode: moving statistics (0, 1) are used
    onp.testing.assert_allclose(bn(x).asnumpy(), x_np / onp.sqrt(1 + 1e-5), rtol=1e-5)
    # a forward under record() without backward leaves the moving statistics unchanged ...
    with autograd.record():
        bn(x)
    onp.testing.assert_array_equal(bn.running_mean.data().asnumpy(), onp.zeros(3))
    onp.testing.assert_array_equal(bn.running_var.data().asnumpy(), onp.ones(3))
    # ... the backward pass updates them; momentum is the weight of the old value
    with autograd.record():
        y = bn(x)
    y.backward()
    onp.testing.assert_allclose(bn.running_mean.data().asnumpy(), 0.1 * x_np.mean(axis=axes), rtol=1e-5, atol=1e-7)
    # moving_var is fed the biased batch variance ...
    onp.testing.assert_allclose(bn.running_var.data().asnumpy(), 0.9 + 0.1 * x_np.var(axis=axes), rtol=1e-5)
    assert not onp.allclose(bn.running_var.data().asnumpy(), 0.9 + 0.1 * x_np.var(axis=axes, ddof=1), rtol=1e-4)
    # ... while PyTorch's running_var is fed the unbiased one
    tbn = torch.nn.BatchNorm1d(3)
    tbn(torch.from_numpy(x_np))
    onp.testing.assert_allclose(tbn.running_var.numpy(), 0.9 + 0.1 * x_np.var(axis=axes, ddof=1), rtol=1e-5)
    # autograd.train_mode() without record(): batch statistics, and no update (no backward)
    before = bn.running_mean.data().asnumpy()
    with autograd.train_mode():
        y = bn(x).asnumpy()
    onp.testing.assert_allclose(y.mean(axis=0), bn.beta.data().asnumpy(), atol=1e-5)
    onp.testing.assert_array_equal(bn.running_mean.data().asnumpy(), before)


# ------------------------------------------------------------------------------------ LeNet
@pytest.mark.parametrize("norm", G.NORM_LAYERS)
def test_lenet_shapes_and_layers(norm):
    net = G.LeNet(batch_norm=True, norm_layer=norm)
    net.initialize()
    assert net(np.ones((3, 1, 28, 28))).shape == (3, 10)
    layers = G.batchnorm_layers(net)
    assert [type(b) for b in layers] == [G.BatchNorm if norm == "scratch" else nn.BatchNorm] * 4
    plain = G.LeNet()
    plain.initialize()
    assert not G.batchnorm_layers(plain) and plain(np.ones((2, 1, 28, 28))).shape == (2, 10)
    weights = lambda n: sum(int(onp.prod(p.shape)) for p in n.collect_params().values() if p.grad_req != "null")  # noqa: E731
    assert weights(net) == models.count_parameters(models.LeNet(batch_norm=True))
    assert weights(plain) == models.count_parameters(models.LeNet())


def test_lenet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="norm_layer"):
        G.LeNet(batch_norm=True, norm_layer="layer")
    with pytest.raises(TypeError, match="norm_layer"):
        G.LeNet(batch_norm=True, norm_layer=3)
    with pytest.raises(ValueError, match="activation"):
        G.LeNet(activation="gelu")
    with pytest.raises(TypeError, match="batch_norm"):
        G.LeNet(batch_norm=1)
    with pytest.raises(ValueError, match="num_classes"):
        G.LeNet(num_classes=0)
    with pytest.raises(TypeError):
        G.batchnorm_layers(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("norm", G.NORM_LAYERS)
def test_lenet_from_torch_weights_computes_what_torch_computes(norm):
    torch.manual_seed(0)
    model = models.LeNet(batch_norm=True)
    with torch.no_grad():  # non-trivial statistics and affine parameters
        for bn in models.batchnorm_layers(model):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    net = G.copy_torch_parameters(G.LeNet(batch_norm=True, norm_layer=norm), model)
    x_np = _random((16, 1, 28, 28))
    model.eval()
    onp.testing.assert_allclose(net(np.array(x_np)).asnumpy(), model(torch.from_numpy(x_np)).detach().numpy(), rtol=1e-4, atol=1e-4)
    model.train()
    with autograd.record():
        y = net(np.array(x_np))
    onp.testing.assert_allclose(y.asnumpy(), model(torch.from_numpy(x_np)).detach().numpy(), rtol=1e-3, atol=1e-3)


def test_copy_torch_parameters_rejects_mismatches():
    with pytest.raises(ValueError, match="parameters"):
        G.copy_torch_parameters(G.LeNet(batch_norm=True), models.LeNet())
    with pytest.raises(TypeError):
        G.copy_torch_parameters(models.LeNet(), models.LeNet())
    with pytest.raises(TypeError):
        G.to_numpy(onp.ones(2))


# ------------------------------------------------------------------------------------ data
def test_load_arrays_gives_the_torch_values():
    tensors = data.load_tensors("MNIST", "test")
    arrays = G.load_arrays("MNIST", "test")
    assert len(arrays) == 10_000 and arrays.x.shape == (10_000, 1, 28, 28)
    assert arrays.x.dtype == onp.float32 and arrays.classes == tensors.classes
    onp.testing.assert_array_equal(arrays.x[:50].asnumpy(), tensors.x[:50].numpy())
    onp.testing.assert_array_equal(arrays.y.asnumpy(), tensors.y.numpy())
    small = arrays.subset(7)
    assert len(small) == 7
    with pytest.raises(ValueError):
        arrays.subset(0)
    with pytest.raises(TypeError):
        G.from_tensors((tensors.x, tensors.y))
    with pytest.raises(ValueError):
        G.load_arrays("CIFAR10")


def test_batches_follow_the_torch_order():
    tensors = data.load_tensors("FashionMNIST", "test").subset(50)
    arrays = G.from_tensors(tensors)
    ours, theirs = arrays.batches(16, seed=3), tensors.batches(16, seed=3)
    assert len(ours) == len(theirs) == 4 and ours.num_examples == 50
    for _ in range(2):  # two epochs: a fresh permutation each, the same on both sides
        for (xa, ya), (xt, yt) in zip(ours, theirs):
            onp.testing.assert_array_equal(xa.asnumpy(), xt.numpy())
            onp.testing.assert_array_equal(ya.asnumpy(), yt.numpy())
    assert len(arrays.batches(16, drop_last=True)) == 3
    with pytest.raises(ValueError):
        G.ArrayBatches(np.ones((3, 2)), np.ones(4), 2)
    with pytest.raises(TypeError):
        G.ArrayBatches(onp.ones((3, 2)), np.ones(3), 2)


# ------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny():
    train = G.load_arrays("FashionMNIST", "train").subset(512)
    test = G.load_arrays("FashionMNIST", "test").subset(300)
    return train, test


@pytest.mark.parametrize("norm", G.NORM_LAYERS)
def test_fit_and_evaluate(tiny, norm):
    train, test = tiny
    mx.random.seed(0)
    net = G.LeNet(batch_norm=True, norm_layer=norm)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.9})
    history = G.fit(net, train.batches(64, seed=0), trainer, epochs=3, val=test, progress=False)
    assert isinstance(history, History) and history.epochs == 3
    assert len(history.val_accuracy) == 3 and all(v > 0 for v in history.examples_per_second)
    assert history.train_loss[-1] < history.train_loss[0]
    result = G.evaluate(net, test)
    assert isinstance(result, Evaluation) and result.num_examples == 300
    assert result.accuracy == pytest.approx(history.val_accuracy[-1])
    assert len(result.per_class_accuracy) == 10 and result.accuracy > 0.2  # chance is 0.1
    # evaluation changes nothing, in either mode
    saved = {k: p.data().asnumpy() for k, p in net.collect_params().items()}
    batch = G.evaluate(net, (test.x, test.y), batch_size=100, mode="batch")
    assert batch.num_examples == 300 and batch.loss != result.loss  # batch statistics differ from moving ones
    for k, p in net.collect_params().items():
        onp.testing.assert_array_equal(p.data().asnumpy(), saved[k])


def test_the_gluon_loop_is_the_twin_of_the_torch_loop(tiny):
    """Same names, arguments and return types on both sides; the loss is the batch's mean loss."""
    from bncourse import train as T

    train, test = tiny
    mx.random.seed(0)
    net = G.LeNet(batch_norm=True, norm_layer="batch")
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.0})   # lr 0: losses are the initial ones
    x, y = next(iter(train.batches(32, seed=0)))
    out = G.train_step(net, x, y, trainer)
    assert isinstance(out, T.StepOutput) and out.loss.shape == () and out.logits.shape == (32, 10)
    per_example = gluon.loss.SoftmaxCrossEntropyLoss()(out.logits, y)
    assert float(out.loss) == pytest.approx(float(per_example.mean()), rel=1e-5)
    epoch = G.train_epoch(net, train.subset(100).batches(32, seed=0), trainer)
    assert isinstance(epoch, T.EpochResult) and epoch.examples == 100 and epoch.steps == 4
    calls = []
    result = G.train_loop(net, train.batches(64, seed=0), trainer, steps=5, val=test, eval_every=2,
                          before_step=lambda step, xb, yb: calls.append(step), after_step=lambda step: step == 4)
    assert isinstance(result, T.LoopResult) and result.steps == 4 and result.stopped and calls == [0, 1, 2, 3]
    assert [s for s, _ in result.evaluations] == [2, 4] and isinstance(result.evaluations[0][1], Evaluation)
    torch_args = set(inspect.signature(T.train_loop).parameters) - {"model", "optimizer", "device"}
    gluon_args = set(inspect.signature(G.train_loop).parameters) - {"net", "trainer"}
    assert torch_args == gluon_args
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        G.train_loop(net, train.batches(64), trainer)


def test_batch_statistics_restores_the_moving_statistics():
    net = G.LeNet(batch_norm=True, norm_layer="scratch")
    net.initialize()
    before = [b.running_var.data().asnumpy() for b in G.batchnorm_layers(net)]
    with G.batch_statistics(net):
        assert autograd.is_training()
        net(np.array(_random((8, 1, 28, 28))))
        assert not onp.allclose(G.batchnorm_layers(net)[0].running_var.data().asnumpy(), before[0])
    assert not autograd.is_training()
    for b, want in zip(G.batchnorm_layers(net), before):
        onp.testing.assert_array_equal(b.running_var.data().asnumpy(), want)


def test_training_functions_reject_bad_input(tiny):
    train, test = tiny
    net = G.LeNet(batch_norm=True)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="epochs"):
        G.fit(net, train.batches(64), trainer, epochs=0)
    with pytest.raises(TypeError, match="val"):
        G.fit(net, train.batches(64), trainer, epochs=1, val=data.load_tensors("MNIST", "test"))
    with pytest.raises(TypeError, match="Trainer"):
        G.train_epoch(net, train.batches(64), torch.optim.SGD(models.LeNet().parameters(), lr=0.1))
    with pytest.raises(TypeError, match="Block"):
        G.train_epoch(models.LeNet(), train.batches(64), trainer)
    with pytest.raises(ValueError, match="no examples"):
        G.train_epoch(net, [], trainer)
    with pytest.raises(ValueError, match="mode"):
        G.evaluate(net, test, mode="train")
    with pytest.raises(ValueError, match="batch_size"):
        G.evaluate(net, test, batch_size=0)
    with pytest.raises(TypeError, match="ArrayData"):
        G.evaluate(net, (test.x.asnumpy(), test.y.asnumpy()))
    with pytest.raises(TypeError):
        G.batch_statistics(models.LeNet()).__enter__()


def test_fit_restore_best_restores_the_selected_epoch(tiny, monkeypatch):
    """The Gluon twin of restore_best: epoch 2 of 3 has the best (scripted) validation accuracy,
    and the network ends with its parameters and BN moving statistics."""
    train, test = tiny
    scripted, values = iter([0.4, 0.8, 0.6]), []

    def fake_evaluate(net, val, loss_fn=None):
        values.append({k: p.data().asnumpy().copy() for k, p in net.collect_params().items()})
        return Evaluation(loss=1.0, accuracy=next(scripted), per_class_accuracy=(), num_examples=len(val))

    monkeypatch.setattr(G, "evaluate", fake_evaluate)
    mx.random.seed(0)
    net = G.LeNet(batch_norm=True)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.9})
    history = G.fit(net, train.batches(64, seed=0), trainer, epochs=3, val=test, progress=False, restore_best=True)
    assert history.best_epoch() == 2
    final = {k: p.data().asnumpy() for k, p in net.collect_params().items()}
    assert all((final[k] == values[1][k]).all() for k in final)
    assert not all((final[k] == values[2][k]).all() for k in final)
    assert any("running_mean" in k for k in final)
    with pytest.raises(ValueError, match="held-out split"):
        G.fit(net, train.batches(64), trainer, epochs=1, progress=False, restore_best=True)


def test_training_with_one_value_per_channel_raises_as_torch_does():
    """One value per channel normalizes to β whatever it was: the scratch block refuses, like nn.BatchNorm."""
    block = G.BatchNorm(3)
    block.initialize()
    with autograd.record():
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            block(np.ones((1, 3)))
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        G.BatchNorm(3, eps=float("nan"))


def test_configure_seeds_mxnet_too():
    from bncourse import config

    def fresh_weights():
        config.configure(seed=5)
        net = G.LeNet(batch_norm=True)
        net.initialize()
        net(np.ones((2, 1, 28, 28)))
        return net.collect_params()[next(iter(net.collect_params()))].data().asnumpy()

    assert (fresh_weights() == fresh_weights()).all()
    config.set_threads()


def test_plain_import_error_is_the_numpy_bool_alias():
    """Why bncourse._mxnet restores numpy.bool: without it, a plain import of mxnet 1.9.1 fails under NumPy 1.26."""
    message = G.plain_import_error()
    assert message is not None and "numpy" in message and "bool" in message, message


def test_array_data_holdout_and_subset_are_the_twins_of_tensor_data(tiny):
    train, _ = tiny
    tensors = data.load_tensors("FashionMNIST", "train").subset(len(train))
    for (g_part, t_part) in zip(train.holdout(100, seed=3), tensors.holdout(100, seed=3)):
        assert g_part.split == t_part.split and len(g_part) == len(t_part)
        onp.testing.assert_array_equal(g_part.y.asnumpy(), t_part.y.numpy())
        onp.testing.assert_array_equal(g_part.x.asnumpy(), t_part.x.numpy())
    assert len(train.subset(onp.int64(5))) == 5                      # NumPy integers are ints too
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="n must be an int between 1 and"):
            train.subset(bad)
    with pytest.raises(ValueError, match="validation must be an int between"):
        train.holdout(len(train))


@pytest.mark.parametrize("momentum", [True, False, None, "0.9", 1.5, -0.1])
def test_scratch_block_momentum_must_be_a_number_in_0_1(momentum):
    """Issue 25: momentum=True was accepted as 1.0 (the moving statistics never changed), None and '0.9' failed
    with errors from inside Python."""
    with pytest.raises(ValueError, match=r"momentum .*must be a number in \[0, 1\], got"):
        G.BatchNorm(3, momentum=momentum)
    assert G.BatchNorm(3, momentum=0).momentum == 0.0 and G.BatchNorm(3, momentum=1).momentum == 1.0


def test_scratch_block_in_float16_on_the_cpu_is_refused_up_front():
    """Issue 25: float16 failed late, inside MXNet's tensordot (asynchronously); now a TypeError names the fix."""
    block = G.BatchNorm(3)
    block.initialize()
    block.cast("float16")
    x = np.array(_random((4, 3))).astype("float16")
    with pytest.raises(TypeError, match="float16 on the CPU.*float32"):
        with autograd.record():
            block(x)
    block.cast("float32")
    with pytest.raises(TypeError, match="x is float16 on the CPU"):
        block(x)
    assert block(x.astype("float32")).dtype == onp.float32


def test_evaluate_reports_nonfinite_logits_as_nan_accuracy():
    """Issue 25: argmax over NaN logits is class 0, which scored as a plausible accuracy; now NaN, flagged."""

    class NaNNet(nn.Block):
        def forward(self, x):
            return np.zeros((x.shape[0], 3)) * onp.nan

    y = np.zeros(10, dtype="int32")
    result = G.evaluate(NaNNet(), (np.ones((10, 4)), y))
    assert onp.isnan(result.accuracy) and result.nonfinite == 10 and not result.finite
    assert all(onp.isnan(a) for a in result.per_class_accuracy)


def test_labels_out_of_range_or_not_integers_are_refused_not_clipped():
    from mxnet import np as mnp
    net = G.LeNet(batch_norm=True)
    net.initialize()
    x = mnp.array(onp.random.RandomState(0).randn(12, 1, 28, 28).astype("float32"))
    for y, error, match in ((onp.full(12, 13, dtype="int32"), ValueError, r"in \[0, 10\), got values from 13 to 13"),
                            (onp.full(12, -1, dtype="int32"), ValueError, "got values from -1"),
                            (onp.full(12, 2.7, dtype="float32"), TypeError, "integer class indices")):
        with pytest.raises(error, match=match):
            G.evaluate(net, (x, mnp.array(y)))
    with pytest.raises(ValueError, match=r"in \[0, 10\), got values from 0 to 42"):
        G.ArrayData("MNIST", "train", x, mnp.array(onp.array([0] * 11 + [42], dtype="int32")), tuple(map(str, range(10))), 0.0, 1.0)
