"""bncourse.selection: selection on the validation split, the test set read once, runs over seeds."""

import pytest
import torch

from bncourse import data, evaluate, models, selection


def _td(n, seed, split="train"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    w = torch.randn(10, 3, generator=torch.Generator().manual_seed(99))
    return data.TensorData("toy", split, x, (x @ w).argmax(1), tuple("abc"), 0.0, 1.0)


def _run(seed=0, **kw):
    args = dict(make_model=lambda: models.MLP((10, 16, 3), batch_norm=True),
                make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1), train=_td(256, 0), val=_td(64, 1),
                test=_td(64, 2, "test"), epochs=3, batch_size=32, device="cpu", progress=False)
    args.update(kw)
    return selection.train_select_test(seed=seed, **args)


def test_the_selected_model_is_the_best_validation_epoch_and_test_is_read_once(monkeypatch):
    calls = []
    real = selection.evaluate
    monkeypatch.setattr(selection, "evaluate", lambda model, d, device=None: calls.append(d.split) or real(model, d, device=device))
    run = _run()
    assert calls == ["test"]                                  # the test set is evaluated once, at the end
    assert run.best_epoch == run.history.best_epoch()
    assert run.val_accuracy == max(run.history.val_accuracy)
    again = evaluate.evaluate(run.model, _td(64, 1))
    assert again.accuracy == pytest.approx(run.val_accuracy)   # the model returned is the selected one
    assert run.test.num_examples == 64


def test_same_seed_same_run_and_seeds_differ():
    a, b, c = _run(0), _run(0), _run(1)
    assert a.history.train_loss == b.history.train_loss and a.test.accuracy == b.test.accuracy
    assert a.history.train_loss != c.history.train_loss


def test_over_seeds_and_seed_range():
    runs = selection.over_seeds([0, 1], make_model=lambda: models.MLP((10, 8, 3)),
                                make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1), train=_td(128, 0), val=_td(32, 1),
                                test=_td(32, 2, "test"), epochs=1, batch_size=32, device="cpu", progress=False)
    assert [r.seed for r in runs] == [0, 1]
    lo, hi = selection.seed_range(r.test.accuracy for r in runs)
    assert lo <= hi
    with pytest.raises(ValueError, match="non-empty sequence"):
        selection.over_seeds([], epochs=1)
    with pytest.raises(TypeError, match="not seed="):
        selection.over_seeds([0], seed=1)
    with pytest.raises(ValueError, match="at least one value"):
        selection.seed_range([])


@pytest.mark.parametrize("kw, error, match", [
    ({"train": "data"}, TypeError, "train must be a bncourse.data.TensorData, got str"),
    ({"make_model": None}, TypeError, "must be callables"),
    ({"seed": 1.5}, TypeError, "seed must be an int, got float"),
    ({"batch_size": 0}, ValueError, "batch_size"),
])
def test_bad_arguments_are_named(kw, error, match):
    seed = kw.pop("seed", 0)
    with pytest.raises(error, match=match):
        _run(seed=seed, **kw)


def test_generalization_gap_measures_both_splits_in_eval_mode():
    import torch.nn as nn
    make = lambda: nn.Sequential(models.MLP((10, 64, 3), batch_norm=True), nn.Dropout(0.5))
    run = selection.generalization_gap(make, lambda p: torch.optim.SGD(p, lr=0.2), _td(64, 0), _td(256, 1),
                                       epochs=30, batch_size=16, seed=0, device="cpu")
    assert run.gap == pytest.approx(run.train_accuracy - run.val_accuracy)
    assert run.train_accuracy > run.val_accuracy          # 64 examples and 30 epochs: it fits them better
    assert run.history.epochs == 30
    again = selection.generalization_gap(make, lambda p: torch.optim.SGD(p, lr=0.2), _td(64, 0), _td(256, 1),
                                         epochs=30, batch_size=16, seed=0, device="cpu")
    assert again == run or (again.train_accuracy, again.val_accuracy) == (run.train_accuracy, run.val_accuracy)
    with pytest.raises(TypeError, match="val must be"):
        selection.generalization_gap(make, lambda p: torch.optim.SGD(p, lr=0.2), _td(64, 0), None, epochs=1, batch_size=16)
