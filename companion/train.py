"""Training on tensors: :func:`fit` a model, :func:`evaluate` it, and keep the :class:`History` of a run.

Data are pairs ``(X, y)`` of tensors with one sample per row. :func:`fit` moves
them to the device once and takes mini-batches by index with
:func:`companion.data.batches`, so an epoch costs one gather per batch rather
than a Python call per sample.

A *metric* is a function ``metric(outputs, targets)`` that averages over the
samples of a batch and returns a float or a 0-d tensor, such as
:func:`companion.metrics.accuracy`. During training it is computed on each
batch as the batch goes by and averaged over the epoch (weighted by batch
size); on validation data it is computed once on all the outputs.

On a GPU, reading a number back (``loss.item()``, a metric's float) makes the
host wait for the device. :func:`fit` therefore sums the loss, and every
metric that returns a tensor, on the device and reads the sums once per epoch
(and when a live progress bar refreshes). A metric that carries an
``on_device`` version, as ``metrics.accuracy`` does, is computed with it.

A *callback* is a :class:`Callback`: :func:`fit` calls ``on_train_begin``
before the first epoch, ``on_epoch_end`` after each epoch (returning True
stops training) and ``on_train_end`` at the end. :class:`EarlyStopping` and
:class:`EpochScheduler` are two.
"""

from __future__ import annotations

import math
import time
from numbers import Integral
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from companion import config, plot
from companion.data import batches

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Metric = Callable[[torch.Tensor, torch.Tensor], float]
Metrics = Mapping[str, Metric] | Sequence[Metric] | Metric | None
Pair = tuple[torch.Tensor, torch.Tensor]

_CLASS_INDEX_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
_FLOAT_TARGET_LOSSES = (nn.BCELoss, nn.BCEWithLogitsLoss)
_ELEMENTWISE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
_ELEMENTWISE_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)


class History:
    """Per-epoch records of a training run, one float per epoch under each key.

    Keys are ``"loss"`` and each metric's name for the training data, and the
    same with a ``"val_"`` prefix for the validation data:
    ``history["val_accuracy"][e - 1]`` is the validation accuracy after epoch ``e``.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[float]] = {}

    def append(self, values: Mapping[str, float]) -> None:
        """Add one epoch's values (the same keys every epoch)."""
        if self.records and set(values) != set(self.records):
            raise ValueError(f"every epoch needs the keys {sorted(self.records)}; got {sorted(values)}")
        for key, value in values.items():
            self.records.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        if key not in self.records:
            raise KeyError(f"no record {key!r} in this history; it has {sorted(self.records)}")
        return self.records[key]

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def __len__(self) -> int:
        """The number of epochs recorded."""
        return len(next(iter(self.records.values()), []))

    def keys(self) -> list[str]:
        """The recorded names, e.g. ``["loss", "accuracy", "val_loss", "val_accuracy"]``."""
        return list(self.records)

    def last(self) -> dict[str, float]:
        """Every value of the last epoch."""
        return {key: values[-1] for key, values in self.records.items()}

    def best(self, monitor: str = "val_loss", mode: Literal["min", "max"] = "min") -> tuple[int, float]:
        """``(epoch, value)`` of the best epoch (counted from 1) by ``monitor``; the first one on a tie."""
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        values = torch.tensor(self[monitor], dtype=torch.float64)
        index = int(values.argmin() if mode == "min" else values.argmax())
        return index + 1, values[index].item()

    def plot(self, **kwargs: object) -> Figure:
        """The training curves, drawn by :func:`companion.plot.history` (keyword arguments pass on)."""
        return plot.history(self, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        last = ", ".join(f"{key}={value:.4g}" for key, value in self.last().items())
        return f"History({len(self)} epochs; last: {last})"


class Callback:
    """Hooks that :func:`fit` calls; a subclass overrides the ones it needs."""

    def on_train_begin(self, model: nn.Module) -> None:
        """Called once before the first epoch."""

    def on_epoch_end(self, epoch: int, history: History, model: nn.Module) -> bool:
        """Called after each epoch (counted from 1) with its values already in ``history``; True stops training."""
        return False

    def on_train_end(self, history: History, model: nn.Module) -> None:
        """Called once after the last epoch, also when a callback stopped training."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; then restore the best weights.

    An epoch improves on the best value so far when ``value < best - min_delta``
    (``mode="min"``, for losses) or ``value > best + min_delta`` (``mode="max"``,
    for accuracies). After training, ``best_epoch`` and ``best`` say which epoch
    (counted from 1) was best and its value, and ``stopped_epoch`` the epoch at
    which training stopped (None when it ran to the end).

    Args:
        monitor: a key of the :class:`History`, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        patience: epochs without improvement to wait before stopping, ``>= 1``.
        min_delta: the least change that counts as an improvement, ``>= 0``.
        mode: ``"min"`` or ``"max"``.
        restore_best: load the weights of the best epoch back into the model at the end.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: Literal["min", "max"] = "min",
        restore_best: bool = True,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive int; got {patience!r}")
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"min_delta must be a number >= 0; got {min_delta!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.mode, self.restore_best = mode, restore_best
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch: int | None = None
        self._waited = 0
        self._best_state: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, model: nn.Module) -> None:
        self._reset()

    def _improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, history: History, model: nn.Module) -> bool:
        if self.monitor not in history:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which this run does not record; "
                f"it records {history.keys()} (val_* keys need validation data)"
            )
        value = history[self.monitor][-1]
        if self._improves(value):
            self.best, self.best_epoch, self._waited = value, epoch, 0
            if self.restore_best:
                self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self._waited += 1
        if self._waited >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, history: History, model: nn.Module) -> None:
        if self.restore_best and self._best_state is not None:
            model.load_state_dict(self._best_state)

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, best={self.best:.4g} "
            f"at epoch {self.best_epoch}, stopped_epoch={self.stopped_epoch})"
        )


class EpochScheduler(Callback):
    """Advance a learning-rate scheduler once after every epoch.

    ``EpochScheduler(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.8))``
    trains epoch ``e`` (from 1) with learning rate ``lr₀ · 0.8^(e-1)``.
    """

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        if not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
            raise TypeError(f"scheduler must be a torch.optim.lr_scheduler scheduler; got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def on_epoch_end(self, epoch: int, history: History, model: nn.Module) -> bool:
        self.scheduler.step()
        return False


def _is_loss(loss_fn: object, modules: tuple[type[nn.Module], ...], functions: tuple[Callable, ...]) -> bool:
    return isinstance(loss_fn, modules) or loss_fn in functions


def _loss_name(loss_fn: object) -> str:
    return getattr(loss_fn, "__name__", type(loss_fn).__name__)


def _check_pair(name: str, pair: object, loss_fn: object = None) -> Pair:
    """``pair`` as ``(X, y)`` after checking types, lengths and dtypes; clear errors otherwise."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{name} must be a pair (X, y) of tensors; got {type(pair).__name__}")
    X, y = pair
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must hold torch tensors (X, y); got ({type(X).__name__}, {type(y).__name__})")
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise ValueError(f"{name}: X and y need the same number of rows; got shapes {tuple(X.shape)} and {tuple(y.shape)}")
    if len(X) == 0:
        raise ValueError(f"{name} is empty: X and y have 0 rows")
    if X.dtype in (torch.uint8, torch.bool):
        raise TypeError(
            f"{name}: X has dtype {X.dtype}; a network needs floating-point inputs "
            "(for 0-255 images: X.float() / 255) or int64 token ids"
        )
    if _is_loss(loss_fn, _CLASS_INDEX_LOSSES, (F.cross_entropy, F.nll_loss)) and y.ndim == 1 and y.dtype != torch.long:
        raise TypeError(
            f"{name}: {_loss_name(loss_fn)} takes class indices as targets, dtype torch.int64; "
            f"got {y.dtype} (use y.long(); one-hot or float targets are not class indices)"
        )
    if _is_loss(loss_fn, _FLOAT_TARGET_LOSSES, (F.binary_cross_entropy, F.binary_cross_entropy_with_logits)) and (
        not y.dtype.is_floating_point
    ):
        raise TypeError(f"{name}: {_loss_name(loss_fn)} takes float targets in [0, 1]; got {y.dtype} (use y.float())")
    return X, y


def _check_finite(name: str, X: torch.Tensor, what: str) -> None:
    """A floating-point ``X`` holds no NaN or infinity; else a ``ValueError`` that says where the first one is."""
    if X.dtype.is_floating_point:
        bad = ~torch.isfinite(X)
        if bad.any():
            row = int(bad.reshape(len(X), -1).any(dim=1).nonzero()[0, 0]) if X.ndim else 0
            raise ValueError(
                f"{name}: {what} holds {int(bad.sum())} NaN or infinite values (the first in row {row}); "
                "training on them makes every weight NaN: clean or drop those rows first"
            )


def _check_setup(model: object, optimizer: object, loss_fn: object) -> None:
    """The model, optimizer and loss fit together: clear ``TypeError``/``ValueError`` s before any training."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "optimizer must be a torch.optim.Optimizer built on the model's parameters, "
            f"e.g. torch.optim.SGD(model.parameters(), lr=0.1); got {type(optimizer).__name__}"
        )
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be a function (outputs, targets) -> loss, e.g. nn.CrossEntropyLoss(); got {loss_fn!r}"
        )
    own = {id(p) for p in model.parameters()}
    if not any(id(p) in own for group in optimizer.param_groups for p in group["params"]):
        raise ValueError(
            "the optimizer updates none of this model's parameters (was it built on another model?): "
            "build it on model.parameters() of the model given to fit"
        )
    for index, group in enumerate(optimizer.param_groups):
        lr = group.get("lr")
        lr = float(lr) if isinstance(lr, torch.Tensor) and lr.numel() == 1 else lr
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"the optimizer's learning rate must be a finite number >= 0; group {index} has lr={lr}")


def _check_dtype(model: nn.Module, name: str, X: torch.Tensor) -> None:
    """Floating-point inputs have the dtype of the model's floating-point parameters."""
    dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), None)
    if dtype is not None and X.dtype.is_floating_point and X.dtype != dtype:
        raise TypeError(
            f"{name}: X has dtype {X.dtype} but the model's parameters are {dtype}: "
            f"convert the data (X.to({dtype})) or the model (model.to({X.dtype}))"
        )


def _training_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a ``torch.device`` that exists here; None means :func:`companion.config.device`."""
    if device is None:
        return config.device()
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must name a torch device such as 'cpu', 'cuda' or 'mps'; got {device!r}") from err
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if chosen.type in available and not available[chosen.type]():
        raise ValueError(
            f"device={device!r} but {chosen.type.upper()} is not available on this machine; "
            "device=None picks what there is (companion.config.device())"
        )
    return chosen


def _check_outputs(model: nn.Module, loss_fn: object, pairs: dict[str, Pair]) -> None:
    """Run the model on two rows and check its outputs against the targets the loss will get.

    An element-wise loss (MSE, L1, Huber) needs outputs of the targets' shape:
    ``[N, 1]`` against ``[N]`` would broadcast to ``[N, N]``. A class-index loss
    needs labels in ``0 … C−1`` for ``C`` outputs (or its ``ignore_index``).
    """
    elementwise = _is_loss(loss_fn, _ELEMENTWISE_LOSSES, _ELEMENTWISE_FUNCTIONS)
    class_index = _is_loss(loss_fn, _CLASS_INDEX_LOSSES, (F.cross_entropy, F.nll_loss))
    if not (elementwise or class_index):
        return
    outputs = predict(model, pairs["train"][0][:2])
    for name, (_, targets) in pairs.items():
        if elementwise and outputs.shape[1:] != targets.shape[1:]:
            raise ValueError(
                f"{name}: {_loss_name(loss_fn)} compares outputs and targets element by element, but the model's "
                f"outputs are {_rows(outputs.shape)} and the targets {_rows(targets.shape)}: they would broadcast "
                "to a wrong shape (e.g. [N, N]); reshape the targets (y.unsqueeze(1)) or the outputs to match"
            )
        if class_index and outputs.ndim >= 2 and not targets.dtype.is_floating_point:
            classes, ignore = outputs.shape[1], getattr(loss_fn, "ignore_index", -100)
            labels = targets[targets != ignore]
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
                raise ValueError(
                    f"{name}: {_loss_name(loss_fn)} needs labels in 0 … {classes - 1} for a model with {classes} "
                    f"outputs; got labels from {int(labels.min())} to {int(labels.max())}"
                )


def _rows(shape: torch.Size) -> str:
    """A shape with its first axis, the rows, written ``N``: ``[N, 1]``."""
    return "[" + ", ".join(["N", *map(str, shape[1:])]) + "]"


def _named_metrics(metrics: Metrics) -> dict[str, Metric]:
    if metrics is None:
        return {}
    if callable(metrics):
        metrics = [metrics]
    named = dict(metrics) if isinstance(metrics, Mapping) else {getattr(m, "__name__", repr(m)): m for m in metrics}
    for name, metric in named.items():
        if not callable(metric):
            raise TypeError(f"metric {name!r} must be a function (outputs, targets) -> float; got {metric!r}")
        if name == "loss" or name.startswith("val_"):
            raise ValueError(f"metric name {name!r} is reserved; choose another")
    return named


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool) and generator >= 0:
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, a non-negative int seed or None; got {generator!r}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _model_device(model: nn.Module, default: torch.device) -> torch.device:
    return next((p.device for p in model.parameters()), default)


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's outputs for every row of ``X``, in evaluation mode and without gradients.

    ``X`` is moved to the model's device; the outputs ``[N, ...]`` stay there.
    Each sub-module's train/eval mode is restored afterwards.
    """
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch tensor; got {type(X).__name__}")
    _positive_int("batch_size", batch_size)
    if len(X) == 0:
        raise ValueError("X is empty: there is nothing to predict")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        X = X.to(_model_device(model, X.device))
        return torch.cat([model(X[start : start + batch_size]) for start in range(0, len(X), batch_size)])
    finally:
        for module, training in modes.items():
            module.training = training


def evaluate(
    model: nn.Module,
    data: Pair,
    metrics: Metrics = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data = (X, y)``, in evaluation mode and without gradients.

    The outputs of all batches are gathered first, so every metric (and a
    mean-reduced loss) is computed exactly on the whole data set.

    Returns:
        ``{"loss": ..., name: ...}`` for ``loss_fn`` (when given) and each metric.
    """
    X, y = _check_pair("data", data, loss_fn)
    named = _named_metrics(metrics)
    outputs = predict(model, X, batch_size)
    y = y.to(outputs.device)
    results = {"loss": loss_fn(outputs, y).item()} if loss_fn is not None else {}
    return results | {name: float(metric(outputs, y)) for name, metric in named.items()}


class _EpochProgress:
    """What :func:`fit` shows of one epoch: a live tqdm bar, one line of text at its end, or nothing.

    ``read()`` turns the running sums into means; it waits for the device, so
    a bar calls it at most every ``refresh`` seconds and text only at the end.
    """

    refresh = 0.5

    def __init__(self, style: str | None, epoch: int, epochs: int, total: int) -> None:
        self.style, self.total, self.done = style, total, 0
        self.title = f"epoch {epoch}/{epochs}"
        self.started = self.shown = time.monotonic()
        self.bar = tqdm(total=total, desc=self.title, unit="batch") if style == "bar" else None

    def step(self, read: Callable[[], dict[str, float]]) -> None:
        self.done += 1
        if self.bar is None:
            return
        self.bar.update()
        if time.monotonic() - self.shown >= self.refresh:
            self.bar.set_postfix(_formatted(read()), refresh=False)
            self.shown = time.monotonic()

    def end(self, values: Mapping[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(_formatted(values))
            self.bar.close()
        elif self.style == "text":
            seconds = time.monotonic() - self.started
            scores = ", ".join(f"{key} {value:.4f}" for key, value in values.items())
            print(f"{self.title}: {self.done}/{self.total} batches in {seconds:.1f} s; {scores}")


def _formatted(values: Mapping[str, float]) -> dict[str, str]:
    return {key: f"{value:.4f}" for key, value in values.items()}


def _sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for the running sums of an epoch; float32 on Apple's MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train: Pair,
    batch_size: int,
    metrics: dict[str, Metric],
    generator: torch.Generator | None,
    progress: _EpochProgress,
    precision: config.Precision,
) -> dict[str, float]:
    """One pass over ``train`` in shuffled mini-batches; the batch-size-weighted mean loss and metrics.

    The sums ``Σ n_b · value_b`` stay on the device until the epoch ends.
    """
    model.train()
    device = train[0].device
    sums = {key: torch.zeros((), dtype=_sum_dtype(device), device=device) for key in ["loss", *metrics]}
    batch_metrics = {name: getattr(metric, "on_device", metric) for name, metric in metrics.items()}
    seen = 0

    def means() -> dict[str, float]:
        return {key: total.item() / seen for key, total in sums.items()}

    for step, (xb, yb) in enumerate(batches(*train, batch_size, shuffle=True, generator=generator), start=1):
        optimizer.zero_grad(set_to_none=True)
        with config.mixed_precision(device, precision):
            outputs = model(xb)
            loss = loss_fn(outputs, yb)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ValueError(f"loss_fn must return one number (the batch mean) as a tensor; got {loss!r:.80}")
        if _reads_are_free(device) and not torch.isfinite(loss):  # stop before the step spoils the weights
            _diverged(f"batch {step} of {progress.title}", f"{float(loss.detach())}")
        loss.backward()
        optimizer.step()
        seen += len(xb)
        with torch.no_grad():
            sums["loss"] += loss.detach().to(sums["loss"].dtype) * len(xb)
            for name, metric in batch_metrics.items():
                value = torch.as_tensor(metric(outputs.detach(), yb), dtype=sums[name].dtype, device=device)
                if value.ndim != 0:
                    raise ValueError(f"metric {name!r} must return one number; got shape {tuple(value.shape)}")
                sums[name] += value * len(xb)
        progress.step(means)
    values = means()
    if not math.isfinite(values["loss"]):  # on a GPU, a batch's non-finite loss shows in the epoch's sum
        _diverged(f"a batch of {progress.title}", "NaN or infinite")
    return values


def _reads_are_free(device: torch.device) -> bool:
    """Whether reading a number back costs nothing: on the CPU, where nothing runs ahead of Python."""
    return device.type == "cpu"


def _diverged(where: str, loss: str) -> None:
    raise FloatingPointError(
        f"training stopped: the loss of {where} is {loss}. "
        "Look for NaN or infinity in the data, a learning rate too large for the problem, or log(0) in the loss"
    )


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train: Pair,
    val: Pair | None = None,
    *,
    epochs: int,
    batch_size: int = 64,
    metrics: Metrics = None,
    callbacks: Iterable[Callback] = (),
    device: torch.device | str | None = None,
    generator: torch.Generator | int | None = None,
    progress: bool = True,
    precision: config.Precision = "fp32",
) -> History:
    """Train ``model`` with mini-batch gradient descent and record the loss and metrics of every epoch.

    Each step: ``optimizer.zero_grad(); loss = loss_fn(model(xb), yb); loss.backward(); optimizer.step()``.
    After each epoch the model is evaluated on ``val`` (if given) with :func:`evaluate`.

    Args:
        model: the network; moved to ``device``.
        optimizer: built on ``model.parameters()``.
        loss_fn: ``loss_fn(outputs, targets)`` → the batch-mean loss (a 0-d tensor),
            e.g. ``nn.CrossEntropyLoss()`` with logits ``[B, C]`` and class indices ``int64 [B]``.
        train: ``(X [N, ...], y [N, ...])`` training data.
        val: validation data in the same form, or None.
        epochs: passes over the training data, ``>= 1``.
        batch_size: samples per gradient step.
        metrics: ``{name: metric}``, a list of metrics or one metric (named by ``__name__``).
        callbacks: e.g. ``[EarlyStopping(patience=3)]``.
        device: where to train; None means :func:`companion.config.device`. ``train``
            and ``val`` are moved there once.
        generator: a CPU ``torch.Generator`` or an int seed for the order of the
            batches; with the same seed, the same initial weights (seed before
            building the model) and the same device, a run repeats exactly.
        progress: show each epoch's progress with the running loss and metrics, as
            :func:`companion.config.progress_style` says: a live tqdm bar (a widget
            in Jupyter and Colab) or one line of text when the epoch ends.
        precision: ``"fp32"`` or ``"bf16"``: the forward pass and the loss of each
            step run under :func:`companion.config.mixed_precision` (bf16 matrix
            products, fp32 weights); ``config.precision()`` picks the fast one here.

    Returns:
        the :class:`History` of the run (``history.plot()`` draws it).

    Raises:
        TypeError: ``model``, ``optimizer`` or ``loss_fn`` is not what it should be, or
            the data's dtype is not the model's.
        ValueError: before training, when the data hold NaN or infinity, the optimizer
            updates none of the model's parameters or has a learning rate that is not a
            finite number >= 0, the labels lie outside the model's classes, an element-wise
            loss would broadcast outputs and targets of different shapes, or ``device``
            is not available here.
        FloatingPointError: at the first batch whose loss is NaN or infinite (on the
            CPU before its step; on a GPU at the end of its epoch, when the epoch's
            sums are read).
    """
    _check_setup(model, optimizer, loss_fn)
    precision = config.checked_precision(precision)
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    pairs = {"train": _check_pair("train", train, loss_fn)}
    if val is not None:
        pairs["val"] = _check_pair("val", val, loss_fn)
    for name, (X, y) in pairs.items():
        _check_finite(name, X, "X")
        _check_finite(name, y, "y")
        _check_dtype(model, name, X)
    named = _named_metrics(metrics)
    callbacks = list(callbacks)
    generator = _as_generator(generator)
    device = _training_device(device)
    style = config.progress_style() if progress else None
    model.to(device)
    pairs = {name: (X.to(device), y.to(device)) for name, (X, y) in pairs.items()}
    _check_outputs(model, loss_fn, pairs)
    train, val = pairs["train"], pairs.get("val")

    history = History()
    for callback in callbacks:
        callback.on_train_begin(model)
    for epoch in range(1, epochs + 1):
        total = math.ceil(len(train[0]) / batch_size)
        shown = _EpochProgress(style, epoch, epochs, total)
        values = _train_epoch(model, optimizer, loss_fn, train, batch_size, named, generator, shown, precision)
        if val is not None:
            scores = evaluate(model, val, named, loss_fn, batch_size=max(batch_size, 1024))
            values |= {f"val_{key}": value for key, value in scores.items()}
        shown.end(values)
        history.append(values)
        stops = [callback.on_epoch_end(epoch, history, model) for callback in callbacks]
        if any(stops):
            break
    for callback in callbacks:
        callback.on_train_end(history, model)
    return history
