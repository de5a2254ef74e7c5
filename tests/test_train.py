"""companion.train: fit, evaluate, predict, History and EarlyStopping on small synthetic problems."""

import math
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from companion import train
from companion.data import batches
from companion.metrics import accuracy
from companion.models import MLP

CPU = torch.device("cpu")


def blobs(n: int, seed: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian clusters in 2-D: inputs float32 [n, 2], labels int64 [n] (reversed when ``flip``)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    centres = torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    X = centres[y] + 0.5 * torch.randn(n, 2, generator=gen)
    return X, (2 - y if flip else y)


def new_model(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return MLP([2, 16, 3], **kwargs)


def run(model, data, val=None, epochs=3, lr=0.1, **kwargs) -> train.History:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    kwargs = {"batch_size": 32, "device": CPU, "progress": False, **kwargs}
    return train.fit(model, optimizer, nn.CrossEntropyLoss(), data, val, epochs=epochs, **kwargs)


def test_fit_learns_and_records_every_epoch():
    history = run(new_model(), blobs(600, 0), blobs(300, 1), epochs=8, metrics={"acc": accuracy})
    assert history.keys() == ["loss", "acc", "val_loss", "val_acc"]
    assert len(history) == 8 and all(len(history[k]) == 8 for k in history.keys())
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_acc"][-1] > 0.95


class RecordsAutocast(nn.Module):
    """An MLP that notes, at each call, whether autocast was on and the dtype of its output."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp, self.seen = new_model(), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out


def test_fit_in_bf16_runs_each_step_under_autocast_and_still_learns():
    model = RecordsAutocast()
    history = run(model, blobs(600, 0), blobs(300, 1), epochs=8, metrics={"acc": accuracy}, precision="bf16")
    steps = [seen for seen in model.seen if seen[0]]
    assert len(steps) == 8 * math.ceil(600 / 32) and all(dtype == torch.bfloat16 for _, dtype in steps)
    assert all(param.dtype == torch.float32 for param in model.parameters())  # the master weights stay fp32
    assert history["val_acc"][-1] > 0.95
    fp32 = RecordsAutocast()
    run(fp32, blobs(600, 0), epochs=1)
    assert not any(on for on, _ in fp32.seen)


def test_train_values_are_exact_means_when_the_model_does_not_change():
    # With lr = 0 every batch sees the same model, so the batch-size-weighted
    # means of fit must equal the loss and accuracy on the whole training set.
    model, data = new_model(), blobs(250, 2)  # 250 = 7 batches of 32 + one of 26
    history = run(model, data, val=data, epochs=1, lr=0.0, metrics=[accuracy])
    whole = train.evaluate(model, data, [accuracy], nn.CrossEntropyLoss())
    assert history["loss"][0] == pytest.approx(whole["loss"], rel=1e-6)
    assert history["accuracy"][0] == pytest.approx(whole["accuracy"], abs=1e-12)
    assert history["val_loss"][0] == pytest.approx(whole["loss"], abs=1e-12)


def test_same_seed_same_run_different_seed_different_run():
    data = blobs(300, 3)
    first = run(new_model(dropout=0.2), data, epochs=2, generator=7)
    torch.manual_seed(123)  # the batch order must not depend on the global generator
    second = run(new_model(dropout=0.2), data, epochs=2, generator=torch.Generator().manual_seed(7))
    third = run(new_model(dropout=0.2), data, epochs=2, generator=8)
    assert first["loss"] == second["loss"]
    assert first["loss"] != third["loss"]


def test_evaluate_computes_metrics_on_all_outputs_and_restores_the_mode():
    model, (X, y) = new_model(dropout=0.5), blobs(100, 4)
    model.train()
    model.net[1].eval()  # a sub-module in its own mode must keep it
    with torch.no_grad():
        model.eval()
        logits = model(X)
        model.train()
        model.net[1].eval()
    results = train.evaluate(model, (X, y), {"acc": accuracy}, nn.CrossEntropyLoss(), batch_size=7)
    assert results["acc"] == accuracy(logits, y)
    assert results["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert model.training and not model.net[1].training and model.net[2].training
    model.eval()
    train.evaluate(model, (X, y), [accuracy])
    assert not any(m.training for m in model.modules())


def test_predict_runs_without_gradients_in_batches():
    model, (X, _) = new_model(), blobs(50, 5)
    outputs = train.predict(model, X, batch_size=8)
    assert outputs.shape == (50, 3) and not outputs.requires_grad
    torch.testing.assert_close(outputs, model(X).detach())


def test_progress_bar_shows_loss_and_metrics_or_nothing(capsys):
    run(new_model(), blobs(64, 6), blobs(32, 7), epochs=2, progress=True, metrics=[accuracy])
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "loss=" in err and "accuracy=" in err and "val_accuracy=" in err
    run(new_model(), blobs(64, 6), blobs(32, 7), epochs=2, progress=False, metrics=[accuracy])
    assert capsys.readouterr() == ("", "")


def test_text_progress_is_one_line_per_epoch_on_stdout(capsys, monkeypatch):
    monkeypatch.setenv("COMPANION_PROGRESS", "text")
    run(new_model(), blobs(70, 6), blobs(32, 7), epochs=2, progress=True, metrics=[accuracy])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == "" and len(lines) == 2
    for epoch, line in enumerate(lines, start=1):
        assert re.fullmatch(
            rf"epoch {epoch}/2: 3/3 batches in \d+\.\d s; loss \d\.\d{{4}}, accuracy \d\.\d{{4}}, "
            r"val_loss \d\.\d{4}, val_accuracy \d\.\d{4}",
            line,
        ), line


def reference_fit(model, optimizer, data, epochs, batch_size, generator):
    """fit's epoch means computed the plain way: a Python float read after every batch."""
    records = []
    for _ in range(epochs):
        loss_sum = correct_sum = seen = 0.0
        for xb, yb in batches(*data, batch_size, shuffle=True, generator=generator):
            optimizer.zero_grad(set_to_none=True)
            outputs = model(xb)
            loss = F.cross_entropy(outputs, yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(xb)
            correct_sum += accuracy(outputs.detach(), yb) * len(xb)
            seen += len(xb)
        records.append((loss_sum / seen, correct_sum / seen))
    return records


def test_sums_kept_on_the_device_give_exactly_the_per_batch_results():
    data = blobs(250, 12)
    model = new_model(dropout=0.1)
    history = run(model, data, epochs=3, generator=5, metrics=[accuracy])
    model_again = new_model(dropout=0.1)  # the same weights, and the same global state for dropout
    expected = reference_fit(model_again, torch.optim.SGD(model_again.parameters(), lr=0.1), data, 3, 32,
                             torch.Generator().manual_seed(5))
    assert list(zip(history["loss"], history["accuracy"])) == expected
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model_again.state_dict().values()))


def test_fit_reads_the_device_once_per_epoch_not_once_per_batch(monkeypatch):
    reads = []
    item = torch.Tensor.item

    def counted_item(self):
        reads.append(self.shape)
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counted_item)
    monkeypatch.setenv("COMPANION_PROGRESS", "text")
    run(new_model(), blobs(640, 13), epochs=3, metrics=[accuracy], progress=True)  # 20 batches an epoch
    assert len(reads) == 3 * 2  # the loss and the accuracy sums, once per epoch


def test_a_metric_must_return_one_number():
    with pytest.raises(ValueError, match="metric 'rows' must return one number; got shape \\(32,\\)"):
        run(new_model(), blobs(64, 14), epochs=1, metrics={"rows": lambda out, y: (out.argmax(1) == y).float()})


def test_fit_moves_data_to_the_device_and_returns_a_plottable_history():
    model = new_model().double()
    X, y = blobs(64, 8)
    history = run(model, (X.double(), y), epochs=1, device="cpu")
    assert next(model.parameters()).device == CPU
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = history.plot()
    assert [ax.get_title() for ax in fig.axes] == ["loss"]
    plt.close(fig)


def test_early_stopping_stops_and_restores_the_best_weights():
    # Validation labels are permuted, so learning the training labels makes the
    # validation loss rise after the first epochs: training must stop early.
    model, data, wrong_val = new_model(), blobs(400, 9), blobs(200, 10, flip=True)
    stopper = train.EarlyStopping(monitor="val_loss", patience=2)
    history = run(model, data, wrong_val, epochs=30, callbacks=[stopper])
    assert stopper.stopped_epoch == len(history) < 30
    assert stopper.stopped_epoch == stopper.best_epoch + 2
    assert (stopper.best_epoch, stopper.best) == history.best("val_loss")
    now = train.evaluate(model, wrong_val, loss_fn=nn.CrossEntropyLoss())["loss"]
    assert now == pytest.approx(stopper.best, rel=1e-6)  # the weights of the best epoch are back
    assert now < history["val_loss"][-1]


def test_early_stopping_in_max_mode_with_min_delta_and_without_restoring():
    stopper = train.EarlyStopping(monitor="val_acc", patience=2, min_delta=0.05, mode="max", restore_best=False)
    history, model = train.History(), new_model()
    before = [p.clone() for p in model.parameters()]
    stopper.on_train_begin(model)
    decisions = []
    for epoch, value in enumerate([0.50, 0.60, 0.64, 0.70, 0.72, 0.74], start=1):
        history.append({"val_acc": value})
        decisions.append(stopper.on_epoch_end(epoch, history, model))
    assert decisions == [False, False, False, False, False, True]  # 0.64 and 0.72, 0.74 are within min_delta
    assert (stopper.best_epoch, stopper.best, stopper.stopped_epoch) == (4, 0.70, 6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    stopper.on_train_end(history, model)
    assert all(torch.equal(p, b + 1.0) for p, b in zip(model.parameters(), before))


def test_early_stopping_resets_between_runs_and_needs_its_key():
    stopper = train.EarlyStopping(monitor="val_loss", patience=1)
    run(new_model(), blobs(100, 11), blobs(50, 12, flip=True), epochs=20, callbacks=[stopper])
    assert stopper.stopped_epoch is not None
    run(new_model(), blobs(100, 11), blobs(50, 12), epochs=1, callbacks=[stopper])
    assert stopper.stopped_epoch is None and stopper.best_epoch == 1
    with pytest.raises(ValueError, match="val_\\* keys need validation data"):
        run(new_model(), blobs(100, 11), epochs=2, callbacks=[train.EarlyStopping()])


def test_custom_callback_sees_every_epoch_and_can_stop():
    class StopAfterTwo(train.Callback):
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, epoch, history, model):
            self.seen.append((epoch, len(history)))
            return epoch == 2

    callback = StopAfterTwo()
    history = run(new_model(), blobs(64, 13), epochs=5, callbacks=[callback])
    assert callback.seen == [(1, 1), (2, 2)] and len(history) == 2


def test_epoch_scheduler_lowers_the_learning_rate_after_each_epoch():
    model = new_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.4)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)

    class RecordRate(train.Callback):
        def __init__(self):
            self.rates = []

        def on_epoch_end(self, epoch, history, model):
            self.rates.append(optimizer.param_groups[0]["lr"])
            return False

    record = RecordRate()
    train.fit(model, optimizer, nn.CrossEntropyLoss(), blobs(64, 16), epochs=3, device=CPU, progress=False,
              callbacks=[record, train.EpochScheduler(scheduler)])  # fmt: skip
    assert record.rates == [0.4, 0.2, 0.1]  # the rate each epoch trained with
    assert optimizer.param_groups[0]["lr"] == 0.05
    with pytest.raises(TypeError, match="lr_scheduler"):
        train.EpochScheduler(optimizer)


def test_history_records_and_reports():
    history = train.History()
    history.append({"loss": 1.0, "val_loss": 2.0})
    history.append({"loss": 0.5, "val_loss": 3.0})
    assert history.last() == {"loss": 0.5, "val_loss": 3.0}
    assert history.best("val_loss") == (1, 2.0) and history.best("loss", mode="max") == (1, 1.0)
    assert "2 epochs" in repr(history)
    with pytest.raises(KeyError, match="it has \\['loss', 'val_loss'\\]"):
        history["accuracy"]
    with pytest.raises(ValueError, match="the keys"):
        history.append({"loss": 0.1})


def bad_fit(**changes):
    X, y = blobs(20, 14)
    model = new_model()
    args = {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loss_fn": nn.CrossEntropyLoss(),
        "train": (X, y),
        "epochs": 1,
        "device": CPU,
        "progress": False,
        **changes,
    }
    return train.fit(**args)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"train": (torch.zeros(20, 2), torch.zeros(19, dtype=torch.long))}, ValueError, "same number of rows"),
        ({"train": (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))}, ValueError, "empty"),
        ({"train": (torch.zeros(20, 2), torch.zeros(20))}, TypeError, "class indices as targets, dtype torch.int64"),
        ({"train": (torch.zeros(20, 2), torch.zeros(20, dtype=torch.int32))}, TypeError, "use y.long"),
        ({"train": (torch.zeros(20, 2).tolist(), torch.zeros(20, dtype=torch.long))}, TypeError, "torch tensors"),
        ({"train": torch.zeros(20, 2)}, TypeError, r"pair \(X, y\)"),
        ({"train": (torch.zeros(20, 2, dtype=torch.uint8), torch.zeros(20, dtype=torch.long))}, TypeError, "/ 255"),
        ({"val": (torch.zeros(5, 2), torch.zeros(4, dtype=torch.long))}, ValueError, "val: X and y"),
        ({"epochs": 0}, ValueError, "epochs must be a positive int"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"metrics": {"loss": accuracy}}, ValueError, "reserved"),
        ({"metrics": {"acc": 0.5}}, TypeError, "must be a function"),
        ({"generator": "seven"}, TypeError, "generator must be"),
        ({"precision": "fp16"}, ValueError, "precision must be 'fp32' or 'bf16'; got 'fp16'"),
        ({"loss_fn": nn.CrossEntropyLoss(reduction="none")}, ValueError, "must return one number"),
        ({"loss_fn": F.nll_loss, "train": (torch.zeros(20, 2), torch.zeros(20))}, TypeError, "nll_loss takes class"),
        ({"loss_fn": nn.BCEWithLogitsLoss(), "train": (torch.zeros(20, 3), torch.zeros(20, 3, dtype=torch.long))}, TypeError, "float targets"),
    ],
)
def test_bad_input_is_explained(changes, error, message):
    with pytest.raises(error, match=message):
        bad_fit(**changes)


def test_soft_targets_for_cross_entropy_are_allowed():
    X, y = blobs(40, 15)
    history = bad_fit(train=(X, F.one_hot(y, 3).float()), epochs=2)
    assert len(history) == 2


def test_evaluate_bad_input():
    with pytest.raises(ValueError, match="data is empty"):
        train.evaluate(new_model(), (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), [accuracy])
    with pytest.raises(TypeError, match="X must be a torch tensor"):
        train.predict(new_model(), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="X is empty"):
        train.predict(new_model(), torch.zeros(0, 2))


def with_nan(X: torch.Tensor, row: int) -> torch.Tensor:
    X = X.clone()
    X[row, 0] = float("nan")
    return X


def mlp(sizes: list[int]) -> nn.Module:
    torch.manual_seed(0)
    return MLP(sizes)


X_BAD, Y_BAD = blobs(20, 14)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"train": (with_nan(X_BAD, 7), Y_BAD)}, ValueError, r"train: X holds 1 NaN or infinite values \(the first in row 7\)"),
        ({"val": (with_nan(X_BAD, 2), Y_BAD)}, ValueError, "val: X holds 1 NaN"),
        ({"loss_fn": nn.MSELoss(), "model": mlp([2, 1]), "train": (X_BAD, Y_BAD.float().clone().fill_(torch.inf))},
         ValueError, "train: y holds 20 NaN or infinite"),
        ({"lr": float("nan")}, ValueError, "learning rate must be a finite number >= 0; group 0 has lr=nan"),
        ({"lr": float("inf"), "optimizer_class": torch.optim.Adam}, ValueError, "group 0 has lr=inf"),
        ({"optimizer": torch.optim.SGD(mlp([2, 3]).parameters(), lr=0.1)}, ValueError, "none of this model's parameters"),
        ({"loss_fn": None}, TypeError, "loss_fn must be a function.*got None"),
        ({"optimizer": None}, TypeError, "optimizer must be a torch.optim.Optimizer.*got NoneType"),
        ({"model": "mlp"}, TypeError, "model must be a torch.nn.Module"),
        ({"train": (X_BAD, Y_BAD + 3)}, ValueError, r"labels in 0 … 2 for a model with 3 outputs; got labels from 3 to 5"),
        ({"val": (X_BAD, Y_BAD - 1)}, ValueError, "val: CrossEntropyLoss needs labels in 0 … 2.*from -1"),
        ({"loss_fn": F.cross_entropy, "train": (X_BAD, Y_BAD * 2)}, ValueError, "cross_entropy needs labels in 0 … 2"),
        ({"loss_fn": nn.MSELoss(), "model": mlp([2, 1]), "train": (X_BAD, Y_BAD.float())},
         ValueError, r"outputs are \[N, 1\] and the targets \[N\]"),
        ({"loss_fn": nn.HuberLoss(), "model": nn.Sequential(mlp([2, 1]), nn.Flatten(0)), "train": (X_BAD, torch.zeros(20, 1))},
         ValueError, r"HuberLoss compares.*outputs are \[N\] and the targets \[N, 1\]"),
        ({"loss_fn": F.l1_loss, "model": mlp([2, 3]), "train": (X_BAD, torch.zeros(20, 2))},
         ValueError, r"l1_loss compares.*\[N, 3\] and the targets \[N, 2\]"),
        ({"device": "cuda:0" if not torch.cuda.is_available() else "mps"}, ValueError, "is not available on this machine"),
        ({"device": "gpu"}, ValueError, "device must name a torch device"),
        ({"train": (X_BAD.double(), Y_BAD)}, TypeError, "X has dtype torch.float64 but the model's parameters are torch.float32"),
    ],
)  # fmt: skip
def test_bad_setups_are_refused_before_training(changes, error, message):
    model = changes.get("model", new_model())
    make = changes.pop("optimizer_class", torch.optim.SGD)
    lr = changes.pop("lr", 0.1)
    changes.setdefault("optimizer", make(model.parameters(), lr=lr) if isinstance(model, nn.Module) else None)
    before = {k: v.clone() for k, v in model.state_dict().items()} if isinstance(model, nn.Module) else {}
    with pytest.raises(error, match=message):
        bad_fit(**{**changes, "model": model})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "no step was taken"


def test_ignored_labels_and_a_model_of_another_dtype_that_matches_its_data_are_fine():
    X, y = blobs(40, 3)
    y[::4] = -100  # CrossEntropyLoss's ignore_index
    assert len(bad_fit(train=(X, y), epochs=1)) == 1
    model = new_model().double()
    history = train.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), (X.double(), y),
                        epochs=1, device=CPU, progress=False)  # fmt: skip
    assert len(history) == 1


def nan_on_the_third_call() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A cross-entropy loss that is NaN on its third call (the third batch of a run)."""
    calls = []

    def turns_nan(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        loss = F.cross_entropy(outputs, targets)
        return loss * float("nan") if len(calls) == 3 else loss

    return turns_nan


def test_a_loss_that_turns_nan_stops_training_at_its_batch_before_the_step():
    """The third batch's loss is NaN: training stops there, with the weights of the second step."""
    X, y = blobs(64, 5)
    model, twin = new_model(), new_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match=r"the loss of batch 3 of epoch 1/2 is nan\. Look for NaN"):
        train.fit(model, optimizer, nan_on_the_third_call(), (X, y), epochs=2, batch_size=16, device=CPU, generator=0,
                  progress=False)  # fmt: skip
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for step, (xb, yb) in enumerate(batches(X, y, 16, shuffle=True, generator=torch.Generator().manual_seed(0))):
        if step == 2:
            break
        twin_optimizer.zero_grad()
        F.cross_entropy(twin(xb), yb).backward()
        twin_optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_a_learning_rate_far_too_large_stops_training_with_a_message():
    X, y = blobs(64, 5)
    model = new_model()
    with pytest.raises(FloatingPointError, match=r"the loss of batch \d+ of epoch \d/5 is (nan|inf).*learning rate"):
        train.fit(model, torch.optim.SGD(model.parameters(), lr=1e30), nn.CrossEntropyLoss(), (X * 1e10, y),
                  epochs=5, batch_size=16, device=CPU, progress=False)  # fmt: skip


def test_numpy_integers_count_as_ints():
    import numpy as np

    assert len(bad_fit(epochs=np.int64(2), batch_size=np.int32(8))) == 2


def stop_on_the_third_batch(device: torch.device) -> str:
    """Train with a loss that is NaN on the third batch; the message of the error that stops training."""
    X, y = blobs(64, 5)
    model = new_model()
    with pytest.raises(FloatingPointError) as error:
        train.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), nan_on_the_third_call(), (X, y), epochs=2,
                  batch_size=16, device=device, progress=False)  # fmt: skip
    return str(error.value)


def test_where_reading_back_is_not_free_the_epochs_sum_shows_a_nan_loss(monkeypatch):
    """On a GPU, fit reads no loss per batch; a NaN loss turns the epoch's sum NaN, read when the epoch ends."""
    monkeypatch.setattr(train, "_reads_are_free", lambda device: False)
    assert "the loss of a batch of epoch 1/2 is NaN or infinite" in stop_on_the_third_batch(CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_a_nan_loss_stops_training_when_its_epoch_ends():
    assert "the loss of a batch of epoch 1/2 is NaN or infinite" in stop_on_the_third_batch(torch.device("cuda"))
