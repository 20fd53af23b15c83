"""The scratch batch normalization (bncourse.layers) against torch's own layers.

Parity: the same inputs, parameters and upstream gradients drive nn.BatchNorm1d / nn.BatchNorm2d and
the scratch layer for several steps in a row, in train and eval mode, across shapes and options; the
outputs, the input and parameter gradients, and every buffer must agree to 1e-5 in float32 and
1e-10 in float64.
"""

import io
import itertools

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from bncourse import layers
from bncourse.data import load_tensors
from bncourse.evaluate import batch_statistics
from bncourse.layers import BatchNorm, BatchNormFunction, batch_norm, fold_batchnorm, fold_into
from bncourse.models import MLP, LeNet, batchnorm_layers
from bncourse.train import train_epoch

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
SHAPES = {"2d": (16, 5), "3d": (8, 5, 7), "4d": (6, 5, 4, 3)}


def _close(actual, expected, dtype):
    torch.testing.assert_close(actual, expected, atol=TOL[dtype], rtol=TOL[dtype])


def _torch_layer(shape, **kwargs):
    return (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1], **kwargs)


def _pair(shape, dtype, **kwargs):
    """A torch BN layer with random gamma and beta, and a scratch layer with the same state."""
    ref = _torch_layer(shape, **kwargs).to(dtype)
    if ref.affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            if ref.bias is not None:
                ref.bias.normal_()
    mine = BatchNorm(shape[1], **kwargs).to(dtype)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("momentum", [0.1, 0.7, None], ids=["m0.1", "m0.7", "mNone"])
@pytest.mark.parametrize(
    "params", [{"affine": True}, {"affine": False}, {"affine": True, "bias": False}], ids=["affine", "noaffine", "nobias"]
)
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
def test_parity_with_torch_over_several_steps(dtype, shape, momentum, params, track):
    torch.manual_seed(0)
    ref, mine = _pair(shape, dtype, momentum=momentum, track_running_stats=track, **params)
    # three training steps, an eval step, then training again
    for step, training in enumerate([True, True, True, False, True]):
        ref.train(training)
        mine.train(training)
        x = torch.randn(shape, dtype=dtype) * (step + 1) + step  # a different scale and offset each step
        x_ref = x.clone().requires_grad_()
        x_mine = x.clone().requires_grad_()
        y_ref, y_mine = ref(x_ref), mine(x_mine)
        _close(y_mine, y_ref, dtype)
        upstream = torch.randn_like(y_ref)
        y_ref.backward(upstream)
        y_mine.backward(upstream)
        _close(x_mine.grad, x_ref.grad, dtype)
        for name, p_ref in ref.named_parameters():
            _close(getattr(mine, name).grad, p_ref.grad, dtype)
        if params["affine"]:
            ref.zero_grad()
            mine.zero_grad()
        if track:
            _close(mine.running_mean, ref.running_mean, dtype)
            _close(mine.running_var, ref.running_var, dtype)
            assert mine.num_batches_tracked.item() == ref.num_batches_tracked.item()
    if track:
        assert mine.num_batches_tracked.item() == 4
        assert not torch.equal(mine.running_mean, torch.zeros_like(mine.running_mean))


def test_the_parity_test_can_fail():
    # a layer with a different eps must be caught by the same comparison
    ref, mine = _pair(SHAPES["2d"], torch.float32)
    mine.eps = 1e-1
    x = torch.randn(SHAPES["2d"])
    with pytest.raises(AssertionError):
        _close(mine(x), ref(x), torch.float32)


def test_same_parameters_buffers_and_state_dict_as_torch():
    ref, mine = nn.BatchNorm2d(4), BatchNorm(4)
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in ref.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in mine.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert list(mine.state_dict()) == list(ref.state_dict())
    assert mine.num_batches_tracked.dtype == torch.long
    assert repr(mine) == repr(ref).replace("BatchNorm2d", "BatchNorm")
    bare, bare_ref = BatchNorm(4, affine=False, track_running_stats=False), nn.BatchNorm2d(4, affine=False, track_running_stats=False)
    assert list(bare.parameters()) == [] and list(bare.buffers()) == []
    assert bare.weight is None and bare.running_mean is None and bare.num_batches_tracked is None
    assert list(bare.state_dict()) == list(bare_ref.state_dict()) == []
    no_shift = BatchNorm(4, bias=False)
    assert no_shift.bias is None and repr(no_shift) == repr(nn.BatchNorm2d(4, bias=False)).replace("BatchNorm2d", "BatchNorm")


def test_buffers_round_trip_through_save_and_load_and_move_with_to():
    layer = BatchNorm(3)
    layer(torch.randn(10, 3) * 4 + 2)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    restored = BatchNorm(3)
    restored.load_state_dict(torch.load(buffer))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(restored, name), getattr(layer, name))
    assert restored.num_batches_tracked.item() == 1
    as64 = layer.to(torch.float64)
    assert as64.running_mean.dtype == as64.running_var.dtype == as64.weight.dtype == torch.float64
    assert as64.num_batches_tracked.dtype == torch.long


def test_mode_comes_from_training_flag_not_from_grad_mode():
    layer = BatchNorm(3)
    x = torch.randn(8, 3) * 5 + 3
    with torch.no_grad():  # training mode without gradients still uses and records batch statistics
        y = layer(x)
    assert layer.num_batches_tracked.item() == 1
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    layer.eval()
    x.requires_grad_()
    y = layer(x)  # eval mode with gradients still uses the running statistics
    expected = (x - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps)
    torch.testing.assert_close(y, expected)
    assert layer.num_batches_tracked.item() == 1


def test_eval_without_running_stats_uses_batch_statistics():
    layer = BatchNorm(3, track_running_stats=False).eval()
    y = layer(torch.randn(20, 3) * 7 + 1)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_momentum_none_is_the_cumulative_average():
    layer = BatchNorm(2, momentum=None)
    batches = [torch.randn(6, 2) * (i + 1) + i for i in range(4)]
    for x in batches:
        layer(x)
    torch.testing.assert_close(layer.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0))
    torch.testing.assert_close(layer.running_var, torch.stack([x.var(0) for x in batches]).mean(0))


def test_function_updates_running_stats_in_place_with_unbiased_variance():
    x = torch.randn(5, 3, 4) * 2 + 1
    running_mean, running_var = torch.zeros(3), torch.ones(3)
    y = batch_norm(x, None, None, running_mean, running_var, training=True, momentum=0.25, eps=1e-5)
    per_channel = x.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(running_mean, 0.25 * per_channel.mean(1))
    torch.testing.assert_close(running_var, 0.75 + 0.25 * per_channel.var(1, correction=1))
    # ... while the output is normalized with the biased variance
    expected = (x - per_channel.mean(1).view(1, 3, 1)) / torch.sqrt(per_channel.var(1, correction=0).view(1, 3, 1) + 1e-5)
    torch.testing.assert_close(y, expected)


def test_function_eval_uses_running_statistics_and_leaves_them():
    x = torch.randn(4, 2)
    gamma, beta = torch.tensor([2.0, 0.5]), torch.tensor([1.0, -1.0])
    running_mean, running_var = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.25])
    y = batch_norm(x, gamma, beta, running_mean, running_var, training=False, momentum=0.1, eps=1e-3)
    torch.testing.assert_close(y, gamma * (x - running_mean) / (running_var + 1e-3).sqrt() + beta)
    assert torch.equal(running_mean, torch.tensor([1.0, -2.0]))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
def test_hand_derived_backward_passes_gradcheck(shape, affine):
    torch.manual_seed(1)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).requires_grad_()
    gamma = torch.rand(shape[1], dtype=torch.float64, requires_grad=True) if affine else None
    beta = torch.randn(shape[1], dtype=torch.float64, requires_grad=True) if affine else None
    inputs = (x, gamma, beta) if affine else (x,)

    def f(x, gamma=None, beta=None):
        return batch_norm(x, gamma, beta, None, None, training=True, momentum=0.1, eps=1e-5)

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_hand_derived_backward_equals_autograd_of_the_forward_formula(shape):
    torch.manual_seed(2)
    x = torch.randn(shape, dtype=torch.float64) * 2 - 1
    gamma, beta = torch.rand(shape[1], dtype=torch.float64) + 0.5, torch.randn(shape[1], dtype=torch.float64)
    upstream = torch.randn(shape, dtype=torch.float64)
    dims = [0] + list(range(2, len(shape)))
    view = (1, -1) + (1,) * (len(shape) - 2)
    grads = []
    for hand in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, gamma, beta)]
        if hand:
            y, _, _ = BatchNormFunction.apply(*leaves, 1e-5)
        else:  # the forward formula with plain tensor operations, differentiated by autograd
            xx, g, b = leaves
            mean = xx.mean(dims, keepdim=True)
            var = ((xx - mean) ** 2).mean(dims, keepdim=True)
            y = g.view(view) * (xx - mean) / torch.sqrt(var + 1e-5) + b.view(view)
        y.backward(upstream)
        grads.append([t.grad for t in leaves])
    for hand_grad, auto_grad in zip(*grads):
        torch.testing.assert_close(hand_grad, auto_grad, atol=1e-10, rtol=1e-10)


def test_gradient_only_for_what_is_asked():
    x = torch.randn(6, 3, requires_grad=True)
    gamma, beta = torch.ones(3), torch.zeros(3, requires_grad=True)
    batch_norm(x, gamma, beta, None, None, True, 0.1, 1e-5).sum().backward()
    assert gamma.grad is None and beta.grad is not None and x.grad is not None


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.randn(5), ValueError, "expected 2-D"),
        (torch.randn(2, 3, 4, 5, 6), ValueError, "got 5-D input"),
        (torch.randn(4, 7), ValueError, "expected 3 features/channels"),
        (torch.randn(1, 3), ValueError, "Expected more than 1 value per channel when training"),
        (torch.randn(1, 3, 1), ValueError, "Expected more than 1 value per channel when training"),
        (torch.randn(1, 3, 1, 1), ValueError, "Expected more than 1 value per channel when training"),
        (torch.ones(4, 3, dtype=torch.long), TypeError, "floating-point"),
        ([[1.0, 2.0, 3.0]], TypeError, "torch.Tensor"),
    ],
    ids=["rank1", "rank5", "channels", "one-2d", "one-3d", "one-4d", "int", "list"],
)
def test_bad_input_gets_a_clear_error(x, error, message):
    with pytest.raises(error, match=message):
        BatchNorm(3)(x)


def test_a_batch_of_one_is_fine_in_eval_mode_and_fails_like_torch_in_training():
    layer = BatchNorm(3)
    with pytest.raises(ValueError) as mine:
        layer(torch.randn(1, 3))
    with pytest.raises(ValueError) as theirs:
        nn.BatchNorm1d(3)(torch.randn(1, 3))
    assert str(mine.value) == str(theirs.value)
    assert layer.eval()(torch.randn(1, 3)).shape == (1, 3)
    assert BatchNorm(3)(torch.randn(1, 3, 2)).shape == (1, 3, 2)  # two values per channel are enough


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_features": 0}, ValueError),
        ({"num_features": 2.0}, ValueError),
        ({"num_features": 2, "eps": -1.0}, ValueError),
        ({"num_features": 2, "momentum": 1.5}, ValueError),
        ({"num_features": 2, "momentum": "0.1"}, ValueError),
        ({"num_features": 2, "affine": 1}, TypeError),
        ({"num_features": 2, "track_running_stats": "yes"}, TypeError),
    ],
)
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error):
        BatchNorm(**kwargs)


def test_bad_function_arguments():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        batch_norm(x, torch.ones(4), torch.zeros(4), None, None, True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="both"):
        batch_norm(x, None, None, torch.zeros(3), None, False, 0.1, 1e-5)
    with pytest.raises(ValueError, match="momentum"):
        batch_norm(x, None, None, None, None, True, -0.1, 1e-5)
    with pytest.raises(ValueError, match="eps"):
        batch_norm(x, None, None, None, None, True, 0.1, -1.0)
    with pytest.raises(TypeError, match="training"):
        batch_norm(x, None, None, None, None, "yes", 0.1, 1e-5)


def _trained_bn(layer, shape, steps=3):
    """Give ``layer`` non-trivial gamma, beta and running statistics, then put it in eval mode."""
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.normal_()
    for _ in range(steps):
        layer(torch.randn(shape) * 3 + 1)
    return layer.eval()


@pytest.mark.parametrize("bn_class", [BatchNorm, nn.BatchNorm1d], ids=["scratch", "torch"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fold_linear_equals_unfolded_and_torch_fusion(bn_class, bias):
    torch.manual_seed(3)
    linear = nn.Linear(6, 4, bias=bias).eval()
    bn = _trained_bn(bn_class(4), (32, 4))
    folded = fold_into(linear, bn)
    x = torch.randn(10, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(linear(x)))
        reference = fuse_linear_bn_eval(linear, bn)
        torch.testing.assert_close(folded.weight, reference.weight)
        torch.testing.assert_close(folded.bias, reference.bias)
    assert (linear.bias is None) == (not bias)  # the original layer is untouched


@pytest.mark.parametrize("bn_class", [BatchNorm, nn.BatchNorm2d], ids=["scratch", "torch"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_fold_conv_equals_unfolded_and_torch_fusion(bn_class, bias):
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 5, kernel_size=3, padding=1, bias=bias).eval()
    bn = _trained_bn(bn_class(5), (8, 5, 6, 6))
    folded = fold_into(conv, bn)
    x = torch.randn(3, 2, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
        reference = fuse_conv_bn_eval(conv, bn)
        torch.testing.assert_close(folded.weight, reference.weight)
        torch.testing.assert_close(folded.bias, reference.bias)


def test_fold_into_rejects_what_cannot_be_folded():
    linear = nn.Linear(3, 4)
    with pytest.raises(ValueError, match="eval"):
        fold_into(linear, BatchNorm(4))
    with pytest.raises(ValueError, match="running statistics"):
        fold_into(linear, BatchNorm(4, track_running_stats=False).eval())
    with pytest.raises(ValueError, match="4 outputs"):
        fold_into(linear, BatchNorm(5).eval())
    with pytest.raises(TypeError, match="Linear or nn.Conv2d"):
        fold_into(nn.Conv1d(3, 4, 1), BatchNorm(4).eval())
    with pytest.raises(TypeError, match="BatchNorm"):
        fold_into(linear, nn.LayerNorm(4))


def _warm_up(model, x, steps=3):
    """A few training-mode forward passes, so the running statistics are not the initial ones."""
    model.train()
    with torch.no_grad():
        for bn in batchnorm_layers(model):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
        for _ in range(steps):
            model(x)
    return model.eval()


@pytest.mark.parametrize("norm", [BatchNorm, "torch"], ids=["scratch", "torch"])
def test_fold_batchnorm_on_the_course_models(norm):
    torch.manual_seed(5)
    x = torch.randn(32, 1, 28, 28)
    if norm == "torch":
        models = [MLP((784, 16, 8, 10), batch_norm=True), LeNet(batch_norm=True)]
    else:
        models = [MLP((784, 16, 8, 10), batch_norm=True, norm_layer=norm), LeNet(batch_norm=True, norm2d=norm, norm1d=norm)]
    for model in models:
        _warm_up(model, x)
        folded = fold_batchnorm(model)
        assert batchnorm_layers(folded) == []
        assert len(batchnorm_layers(model)) > 0  # the original keeps its BN layers
        assert not folded.training
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_keeps_bn_after_the_activation_and_checks_its_input():
    torch.manual_seed(6)
    x = torch.randn(16, 1, 28, 28)
    model = _warm_up(MLP((784, 12, 10), batch_norm=True, bn_position="after", norm_layer=BatchNorm), x)
    folded = fold_batchnorm(model)
    assert len(batchnorm_layers(folded)) == 1
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(model.train())
    with pytest.raises(TypeError, match="Sequential"):
        fold_batchnorm(BatchNorm(3))


def test_drop_in_for_the_course_models():
    mlp = MLP((784, 16, 10), batch_norm=True, norm_layer=BatchNorm)
    lenet = LeNet(batch_norm=True, norm2d=BatchNorm, norm1d=BatchNorm)
    assert [type(m) for m in batchnorm_layers(mlp)] == [BatchNorm]
    assert [m.num_features for m in batchnorm_layers(lenet)] == [6, 16, 120, 84]
    x = torch.randn(4, 1, 28, 28)
    assert mlp(x).shape == lenet(x).shape == (4, 10)
    # evaluating with batch statistics leaves the running buffers as they were
    before = [b.clone() for b in lenet.buffers()]
    with batch_statistics(lenet), torch.no_grad():
        lenet(x)
    assert all(torch.equal(a, b) for a, b in zip(before, lenet.buffers()))


def test_one_epoch_with_the_scratch_layer_equals_one_with_batchnorm1d():
    train = load_tensors("MNIST", "train").subset(1024)
    results = {}
    models = {}
    for name, norm in (("torch", nn.BatchNorm1d), ("scratch", BatchNorm)):
        torch.manual_seed(0)
        models[name] = MLP((784, 512, 256, 10), batch_norm=True, norm_layer=norm)
    models["scratch"].load_state_dict(models["torch"].state_dict())  # identical start, checked explicitly
    for name, model in models.items():
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        results[name] = train_epoch(model, train.batches(64, seed=0), optimizer, F.cross_entropy)
    loss_torch, acc_torch, n = results["torch"].loss, results["torch"].accuracy, results["torch"].examples
    loss_scratch, acc_scratch = results["scratch"].loss, results["scratch"].accuracy
    assert n == 1024
    assert loss_scratch == pytest.approx(loss_torch, rel=1e-5)
    assert abs(acc_scratch - acc_torch) <= 2 / n
    for (name, p_torch), p_scratch in zip(models["torch"].state_dict().items(), models["scratch"].state_dict().values()):
        torch.testing.assert_close(p_scratch, p_torch, atol=1e-4, rtol=1e-4, msg=name)


def test_fold_weights_is_the_pure_math_of_fold_into_and_matches_torch():
    from torch.nn.utils.fusion import fuse_linear_bn_weights

    from bncourse.layers import fold_weights
    torch.manual_seed(3)
    w, b = torch.randn(5, 7), torch.randn(5)
    rm, rv, g, beta = torch.randn(5), torch.rand(5) + 0.1, torch.rand(5) + 0.5, torch.randn(5)
    ours = fold_weights(w, b, rm, rv, 1e-3, g, beta)
    theirs = fuse_linear_bn_weights(w, b, rm, rv, 1e-3, g, beta)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    w4 = torch.randn(5, 3, 2, 2)
    nw, nb = fold_weights(w4, None, rm, rv, 1e-5)
    torch.testing.assert_close(nw, w4 / torch.sqrt(rv + 1e-5).view(-1, 1, 1, 1))
    torch.testing.assert_close(nb, -rm / torch.sqrt(rv + 1e-5))


@pytest.mark.parametrize("shape", [(16, 3), (8, 3, 5), (4, 3, 5, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_printed_textbook_function_equals_the_fast_one(shape, dtype):
    """Notebook 02 prints PlainBatchNormFunction; the layer runs BatchNormFunction: same outputs and gradients."""
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g, dtype=dtype) * 3 + 2).requires_grad_()
    gamma = (torch.rand(3, generator=g, dtype=dtype) + 0.5).requires_grad_()
    beta = torch.randn(3, generator=g, dtype=dtype).requires_grad_()
    dy = torch.randn(shape, generator=g, dtype=dtype)
    results = []
    for fn in (layers.BatchNormFunction, layers.PlainBatchNormFunction):
        y, mean, var = fn.apply(x, gamma, beta, 1e-3)
        grads = torch.autograd.grad(y, (x, gamma, beta), dy)
        results.append((y, mean, var, *grads))
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for fast, plain in zip(*results):
        torch.testing.assert_close(fast, plain, **tol)
    assert torch.autograd.gradcheck(layers.PlainBatchNormFunction.apply,
                                    (x.detach().double().requires_grad_(), gamma.detach().double().requires_grad_(),
                                     beta.detach().double().requires_grad_(), 1e-3))
