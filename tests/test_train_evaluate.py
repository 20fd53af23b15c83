"""bncourse.train and bncourse.evaluate on tiny problems."""

import inspect

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bncourse import config, data, evaluate, models, train


def _toy(n=256, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    return x, (x @ w).argmax(1)


def _td(x, y):
    return data.TensorData("toy", "train", x, y, tuple("abc"), 0.0, 1.0)


def test_fit_learns_and_records_history():
    config.configure(0, threads=1)
    x, y = _toy()
    model = models.MLP((10, 32, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = train.fit(model, _td(x, y).batches(32, seed=0), opt, epochs=5, val=_td(x, y), device="cpu", progress=False)
    assert hist.epochs == 5
    assert all(len(v) == 5 for v in hist.as_dict().values())
    assert hist.train_loss[-1] < hist.train_loss[0] * 0.7
    assert hist.val_accuracy[-1] > 0.8
    assert all(s > 0 for s in hist.examples_per_second)
    assert hist.metric("val_loss") is hist.val_loss
    with pytest.raises(ValueError, match="unknown metric"):
        hist.metric("speed")
    config.set_threads()


def test_fit_is_reproducible_with_the_same_seed():
    x, y = _toy()
    losses = []
    for _ in range(2):
        config.configure(7, threads=1)
        model = models.MLP((10, 16, 3), batch_norm=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        losses.append(train.fit(model, _td(x, y).batches(16, seed=3), opt, 2, progress=False).train_loss)
    assert losses[0] == losses[1]
    config.set_threads()


def test_train_epoch_accepts_a_dataloader_and_returns_batch_metrics():
    x, y = _toy(64)
    model = nn.Linear(10, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the loss of every batch is the initial one
    result = train.train_epoch(model, DataLoader(TensorDataset(x, y), batch_size=16), opt)
    assert isinstance(result, train.EpochResult) and result.steps == 4
    loss, acc, n = result.loss, result.accuracy, result.examples
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x), y).item()
        expected_acc = (model(x).argmax(1) == y).float().mean().item()
    assert n == 64 and loss == pytest.approx(expected, rel=1e-5) and acc == pytest.approx(expected_acc)
    assert model.training


def test_train_step_is_short_and_readable():
    src = inspect.getsource(train.train_step)
    for needle in ("loss.backward()", "optimizer.step()", "zero_grad"):
        assert needle in src


def test_training_bad_arguments():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="epochs"):
        train.fit(model, [(x, y)], opt, epochs=0)
    with pytest.raises(TypeError, match="optimizer"):
        train.train_epoch(model, [(x, y)], "sgd")
    with pytest.raises(TypeError, match="model"):
        train.train_epoch("net", [(x, y)], opt)
    with pytest.raises(ValueError, match="no examples"):
        train.train_epoch(model, [], opt)
    with pytest.raises(TypeError, match="val"):
        train.fit(model, [(x, y)], opt, 1, val=(x, y), progress=False)


def test_evaluate_eval_mode_matches_manual_and_leaves_model_untouched():
    torch.manual_seed(0)
    x, y = _toy(300)
    model = models.MLP((10, 16, 3), batch_norm=True)
    model.train()
    model(x)  # give the running statistics non-default values
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = evaluate.evaluate(model, (x, y), batch_size=64)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert result.loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    hits = logits.argmax(1) == y
    assert result.accuracy == pytest.approx(hits.float().mean().item())
    for c in range(3):
        assert result.per_class_accuracy[c] == pytest.approx(hits[y == c].float().mean().item())
    assert result.num_examples == 300 and "accuracy" in str(result)
    model.train()
    evaluate.evaluate(model, (x, y))
    assert model.training, "the model's mode is restored"
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_batch_mode_uses_batch_statistics_without_contaminating_buffers():
    torch.manual_seed(0)
    x, y = _toy(200)
    model = models.MLP((10, 8, 3), batch_norm=True).eval()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    result = evaluate.evaluate(model, (x + 5, y), batch_size=200, mode="batch")
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers()), "running statistics unchanged"
    assert not model.training
    with torch.no_grad():
        model.train()
        expected = nn.functional.cross_entropy(model(x + 5), y).item()  # the naive way...
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert not torch.equal(model[2].running_mean, buffers["2.running_mean"]), "...which leaks into the buffers"
    assert model[2].num_batches_tracked.item() == 1


def test_batch_statistics_restores_even_after_an_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
    before = model[1].running_mean.clone()
    with pytest.raises(RuntimeError):
        with evaluate.batch_statistics(model):
            assert model[1].training
            model(torch.randn(8, 3) + 10)
            raise RuntimeError("boom")
    assert torch.equal(model[1].running_mean, before) and not model[1].training


def test_evaluate_bad_arguments():
    model = nn.Linear(2, 2)
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(TypeError, match="TensorData"):
        evaluate.evaluate(model, x)
    with pytest.raises(ValueError, match="mode"):
        evaluate.evaluate(model, (x, y), mode="train")
    with pytest.raises(ValueError, match="batch_size"):
        evaluate.evaluate(model, (x, y), batch_size=0)
    with pytest.raises(ValueError, match="same, non-zero"):
        evaluate.evaluate(model, (x, y[:3]))
    with pytest.raises(TypeError, match="nn.Module"):
        evaluate.batch_statistics(None).__enter__()


def test_train_on_real_data_subset():
    """A few hundred MNIST images: the full pipeline runs and learns."""
    config.configure(0)
    tr = data.load_tensors("MNIST", "train").subset(2000)
    te = data.load_tensors("MNIST", "test").subset(500)
    model = models.MLP((784, 64, 10), batch_norm=True)
    hist = train.fit(model, tr.batches(64), torch.optim.SGD(model.parameters(), lr=0.05), 2, val=te, progress=False)
    assert hist.val_accuracy[-1] > 0.8


def test_train_steps_spends_exactly_the_step_budget_across_passes():
    config.configure(0, threads=1)
    x, y = _toy(n=100)
    model = models.MLP((10, 16, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def probe(step):
        seen.append(step)
        model.eval()  # a probe may leave eval mode behind: the next step trains again

    loss = train.train_steps(model, _td(x, y).batches(30, seed=0), opt, 9, after_step=probe)  # 4 batches a pass
    assert seen == list(range(1, 10))
    assert isinstance(loss, float) and loss > 0
    bn = models.batchnorm_layers(model)[0]
    assert bn.num_batches_tracked.item() == 9  # every step ran in training mode


def test_train_steps_checks_its_arguments():
    x, y = _toy(n=10)
    model = models.MLP((10, 4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        train.train_steps(model, _td(x, y).batches(5), opt, 0)
    with pytest.raises(TypeError, match="after_step"):
        train.train_steps(model, _td(x, y).batches(5), opt, 1, after_step=3)
    with pytest.raises(ValueError, match="batches yielded no examples"):
        train.train_steps(model, [], opt, 1)


def test_holdout_splits_without_overlap_and_names_the_parts():
    x, y = _toy(n=50)
    rest, held = _td(x, y).holdout(10, seed=1)
    assert (len(rest), len(held)) == (40, 10)
    assert (rest.split, held.split) == ("train (fit)", "train (validation)")
    rows = {tuple(r.tolist()) for r in rest.x} | {tuple(r.tolist()) for r in held.x}
    assert len(rows) == 50  # every example in exactly one part
    again = _td(x, y).holdout(10, seed=1)[1]
    assert torch.equal(again.x, held.x) and not torch.equal(_td(x, y).holdout(10, seed=2)[1].x, held.x)
    with pytest.raises(ValueError, match="validation"):
        _td(x, y).holdout(50)


def test_fit_restore_best_selects_on_validation_and_restores_that_epoch(monkeypatch):
    """With restore_best the model ends with the weights and BN statistics of the epoch whose
    validation accuracy was highest -- here epoch 2 of 4, by a scripted validation score."""
    config.configure(0, threads=1)
    x, y = _toy()
    scripted, states = iter([0.5, 0.9, 0.7, 0.9]), []

    def fake_evaluate(model, val, loss_fn=None, device=None):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return evaluate.Evaluation(loss=1.0, accuracy=next(scripted), num_examples=len(val), per_class_accuracy=[])

    monkeypatch.setattr(train, "evaluate", fake_evaluate)
    model = models.MLP((10, 16, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = train.fit(model, _td(x, y).batches(32, seed=0), opt, epochs=4, val=_td(x, y), device="cpu",
                     progress=False, restore_best=True)
    assert hist.best_epoch() == 2                     # the first of the tied best
    final = model.state_dict()
    assert all(torch.equal(final[k], states[1][k]) for k in final)          # epoch 2's weights and buffers
    assert not all(torch.equal(final[k], states[3][k]) for k in final)      # not the last epoch's
    assert any("running_mean" in k for k in final)


def test_fit_restore_best_needs_a_validation_split_and_a_bool():
    x, y = _toy()
    model = models.MLP((10, 16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="held-out split"):
        train.fit(model, _td(x, y).batches(32), opt, epochs=1, progress=False, restore_best=True)
    with pytest.raises(TypeError, match="restore_best must be True or False, got str"):
        train.fit(model, _td(x, y).batches(32), opt, epochs=1, val=_td(x, y), progress=False, restore_best="yes")
    with pytest.raises(ValueError, match="needs validation accuracies"):
        train.History().best_epoch()


def test_train_loop_hooks_see_every_step_in_order():
    config.configure(0, threads=1)
    x, y = _toy(40)
    model = models.MLP((10, 8, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def before(step, xb, yb):
        seen.append(("before", step, xb.shape[0]))

    def after(step):
        seen.append(("after", step))
        model.eval()                                   # the loop sets training mode again
    result = train.train_loop(model, _td(x, y).batches(16, seed=0), opt, epochs=2, before_step=before, after_step=after)
    assert result.steps == 6 and result.examples == 80 and result.losses.shape == (6,)
    assert [s for s in seen if s[0] == "before"] == [("before", i, n) for i, n in enumerate([16, 16, 8] * 2)]
    assert [s for s in seen if s[0] == "after"] == [("after", i) for i in range(1, 7)]
    # the epoch loss is the example-weighted mean of the step losses
    weights = torch.tensor([16, 16, 8] * 2, dtype=torch.float32)
    assert result.example_loss == pytest.approx(float((result.losses * weights).sum() / 80), rel=1e-5)
    config.set_threads()


def test_train_loop_step_budget_evaluations_and_early_stop():
    config.configure(0, threads=1)
    x, y = _toy(40)
    model = models.MLP((10, 8, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = train.train_loop(model, _td(x, y).batches(16, seed=0), opt, steps=7, val=_td(x, y), eval_every=3)
    assert result.steps == 7 and [s for s, _ in result.evaluations] == [3, 6] and not result.stopped
    assert all(0 <= e.accuracy <= 1 for _, e in result.evaluations)
    stop = train.train_loop(model, _td(x, y).batches(16, seed=0), opt, steps=50, after_step=lambda step: step == 4)
    assert stop.steps == 4 and stop.stopped
    blow_up = torch.optim.SGD(model.parameters(), lr=1e30)
    diverged = train.train_loop(model, _td(x, y).batches(16, seed=0), blow_up, steps=50, stop_on_nonfinite=True)
    assert diverged.stopped and not torch.isfinite(diverged.losses[-1]) and torch.isfinite(diverged.losses[:-1]).all()
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        train.train_loop(model, _td(x, y).batches(16), opt)
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        train.train_loop(model, _td(x, y).batches(16), opt, steps=1, epochs=1)
    with pytest.raises(ValueError, match="eval_every must be a positive int, got NoneType None"):
        train.train_loop(model, _td(x, y).batches(16), opt, steps=1, val=_td(x, y))
    with pytest.raises(TypeError, match="before_step must be callable"):
        train.train_loop(model, _td(x, y).batches(16), opt, steps=1, before_step=3)
    config.set_threads()


def test_every_trainer_goes_through_train_loop(monkeypatch):
    """fit, train_epoch, train_steps, the sweeps' train_for_examples and landscape's train_with_probes."""
    from bncourse import experiments, landscape

    calls = []
    real = train.train_loop

    def counting(*args, **kwargs):
        calls.append(kwargs.get("steps") or kwargs.get("epochs"))
        return real(*args, **kwargs)
    for mod in (train, experiments, landscape):
        monkeypatch.setattr(mod, "train_loop", counting)
    x, y = _toy(32)
    model = models.MLP((10, 8, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train.fit(model, _td(x, y).batches(16), opt, 2, progress=False)
    train.train_steps(model, _td(x, y).batches(16), opt, 3)
    experiments.train_for_examples(model, _td(x, y), 8, 16, opt)
    landscape.train_with_probes(model, _td(x, y).batches(16), opt, 1, progress=False)
    assert calls == [1, 1, 3, 2, 1]


def test_only_an_explicit_true_stops_the_loop():
    """A hook that happens to return something (a list, a number) does not end training by accident."""
    x, y = _toy(40)
    model = models.MLP((10, 8, 3), batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = train.train_loop(model, _td(x, y).batches(16, seed=0), opt, steps=5, after_step=lambda step: [step])
    assert result.steps == 5 and not result.stopped
