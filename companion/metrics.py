"""Classification metrics on torch tensors: accuracy, confusion matrix, precision/recall/F1, ROC and AUC.

Conventions shared by every function:

* ``targets`` are class indices, an integer tensor ``[N]`` with values in ``0..C-1``.
* ``predictions`` are either class indices ``[N]`` or scores ``[N, C]`` (logits
  or probabilities); scores are turned into indices with ``argmax`` over the
  last dimension, so logits and their softmax give the same result.
* Results are plain Python floats, or float64 / int64 tensors on the CPU.

The definitions follow scikit-learn's (rows of the confusion matrix are the true
classes; ties in ROC scores make one diagonal step of the curve), and the tests
compare every function with scikit-learn's on random predictions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def _check_targets(targets: torch.Tensor, name: str = "targets") -> torch.Tensor:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of class indices; got {type(targets).__name__}")
    if targets.ndim != 1:
        raise ValueError(f"{name} must be class indices of shape [N]; got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices; got dtype {targets.dtype}")
    if len(targets) and int(targets.min()) < 0:
        raise ValueError(f"{name} must be class indices >= 0; got {int(targets.min())}")
    return targets.detach().cpu().long()


def as_labels(predictions: torch.Tensor) -> torch.Tensor:
    """Class indices ``int64 [N]`` from scores ``[N, C]`` (argmax) or from indices ``[N]`` (unchanged)."""
    if not isinstance(predictions, torch.Tensor):
        raise TypeError(f"predictions must be a torch tensor; got {type(predictions).__name__}")
    if predictions.ndim == 2:
        if predictions.shape[1] == 0:
            raise ValueError("scores [N, C] need at least one class column; got C = 0")
        return predictions.detach().argmax(dim=1).cpu()
    if predictions.ndim == 1:
        return _check_targets(predictions, "predictions")
    raise ValueError(
        f"predictions must be class indices [N] or scores [N, C]; got shape {tuple(predictions.shape)}"
    )


def _labels_pair(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    predicted, true = as_labels(predictions), _check_targets(targets)
    if len(predicted) != len(true):
        raise ValueError(f"predictions and targets need the same length; got {len(predicted)} and {len(true)}")
    if len(true) == 0:
        raise ValueError("predictions and targets are empty: a metric needs at least one sample")
    return predicted, true


def accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """The fraction of correct predictions, in [0, 1]: ``mean(pred_i == y_i)``.

    Args:
        predictions: scores ``[N, C]`` (logits or probabilities) or class indices ``[N]``.
        targets: class indices, integer ``[N]``.
    """
    predicted, true = _labels_pair(predictions, targets)
    return (predicted == true).double().mean().item()


def accuracy_on_device(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`accuracy` as a 0-d tensor left on the predictions' device (float64; float32 on MPS).

    It checks shapes only, never values, so that nothing waits for the device:
    :func:`companion.train.fit` uses it on every training batch (through
    ``accuracy.on_device``) and reads the epoch's mean once.

    Args:
        predictions: scores ``[N, C]`` or class indices ``[N]``.
        targets: class indices, integer ``[N]``, on the same device.
    """
    if predictions.ndim not in (1, 2) or targets.ndim != 1 or len(predictions) != len(targets):
        raise ValueError(
            "accuracy needs scores [N, C] or indices [N] and targets [N]; "
            f"got shapes {tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    predicted = predictions.argmax(dim=1) if predictions.ndim == 2 else predictions
    dtype = torch.float32 if predictions.device.type == "mps" else torch.float64
    return (predicted == targets).to(dtype).mean()


accuracy.on_device = accuracy_on_device  # type: ignore[attr-defined]


def _num_classes(predictions: torch.Tensor, *labels: torch.Tensor, num_classes: int | None) -> int:
    seen = max(int(t.max()) for t in labels) + 1
    if predictions.ndim == 2:
        seen = max(seen, predictions.shape[1])
    if num_classes is None:
        return seen
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < seen:
        raise ValueError(f"num_classes must be an int covering every class seen (>= {seen}); got {num_classes!r}")
    return num_classes


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Counts ``int64 [C, C]``: entry ``[i, j]`` is the number of samples of true class i predicted as j.

    The diagonal holds the correct predictions; row sums are the class sizes.
    ``C`` is ``num_classes``, else the number of score columns, else the largest label + 1.

    Args:
        predictions: scores ``[N, C]`` or class indices ``[N]``.
        targets: class indices, integer ``[N]``.
        num_classes: the number of classes C (to include classes absent from both).
    """
    predicted, true = _labels_pair(predictions, targets)
    c = _num_classes(predictions, predicted, true, num_classes=num_classes)
    return torch.bincount(true * c + predicted, minlength=c * c).reshape(c, c)


class PerClass(NamedTuple):
    """Per-class scores, each a float64 (``support``: int64) tensor ``[C]``."""

    precision: torch.Tensor
    """``TP / (TP + FP)`` of each class."""
    recall: torch.Tensor
    """``TP / (TP + FN)`` of each class."""
    f1: torch.Tensor
    """``2·TP / (2·TP + FP + FN)``, the harmonic mean of precision and recall."""
    support: torch.Tensor
    """The number of true samples of each class."""


def precision_recall_f1(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None
) -> PerClass:
    """Precision, recall and F1 of every class, and its support (number of true samples).

    With TP, FP, FN counted one class against the rest:
    ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
    ``F1 = 2·TP / (2·TP + FP + FN)`` (the harmonic mean of the two).

    A ratio whose denominator is zero is 0: a class that is never predicted has
    precision 0, a class with no true samples has recall 0, and F1 is 0 when the
    class is neither present nor predicted (scikit-learn's ``zero_division=0``).

    Args:
        predictions: scores ``[N, C]`` or class indices ``[N]``.
        targets: class indices, integer ``[N]``.
        num_classes: the number of classes C.
    """
    counts = confusion_matrix(predictions, targets, num_classes).double()
    tp = counts.diagonal()
    predicted_as = counts.sum(dim=0)  # TP + FP
    support = counts.sum(dim=1)  # TP + FN

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))

    return PerClass(
        precision=ratio(tp, predicted_as),
        recall=ratio(tp, support),
        f1=ratio(2 * tp, predicted_as + support),
        support=support.long(),
    )


class RocCurve(NamedTuple):
    """Points of a ROC curve, each float64 ``[K]``, from the strictest threshold to the loosest."""

    fpr: torch.Tensor
    """False-positive rate ``FP / N`` at each threshold."""
    tpr: torch.Tensor
    """True-positive rate ``TP / P`` at each threshold."""
    thresholds: torch.Tensor
    """The threshold of each point (the first is +inf); a sample counts as positive when ``score >= threshold``."""


def _binary_inputs(scores: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor) or not isinstance(positives, torch.Tensor):
        raise TypeError(
            f"scores and positives must be torch tensors; got {type(scores).__name__} and {type(positives).__name__}"
        )
    if scores.ndim != 1 or positives.ndim != 1 or len(scores) != len(positives):
        raise ValueError(
            f"scores and positives must both have shape [N]; got {tuple(scores.shape)} and {tuple(positives.shape)}"
        )
    if positives.dtype != torch.bool and not set(positives.unique().tolist()) <= {0, 1}:
        raise ValueError("positives must be a bool tensor or hold only 0 and 1")
    positives = positives.detach().cpu().bool()
    n_pos = int(positives.sum())
    if n_pos == 0 or n_pos == len(positives):
        raise ValueError(
            f"a ROC curve needs both positive and negative samples; got {n_pos} positives of {len(positives)}"
        )
    return scores.detach().cpu().double(), positives


def roc_curve(scores: torch.Tensor, positives: torch.Tensor, drop_intermediate: bool = True) -> RocCurve:
    """The receiver operating characteristic of a binary score.

    For each threshold t (every distinct score, highest first, after a first
    point at t = +inf), a sample counts as predicted positive when its score is
    ``>= t``: ``TPR(t) = TP/P`` and ``FPR(t) = FP/N``. Samples with equal scores
    cross the threshold together, so ties make one diagonal step.

    Args:
        scores: float ``[N]``, higher means "more likely positive" (a probability, a logit, any score).
        positives: bool or 0/1 ``[N]``, the true answer; both kinds must occur.
        drop_intermediate: leave out points that lie on a straight segment between
            their neighbours (they change neither the plot nor the area).
    """
    scores, positives = _binary_inputs(scores, positives)
    order = torch.sort(scores, descending=True, stable=True).indices
    scores, positives = scores[order], positives[order].double()
    last_of_each_score = torch.cat([torch.nonzero(scores.diff() != 0).flatten(), torch.tensor([len(scores) - 1])])
    tps = positives.cumsum(0)[last_of_each_score]
    fps = (last_of_each_score + 1).double() - tps
    thresholds = scores[last_of_each_score]
    if drop_intermediate and len(tps) > 2:
        corner = (fps.diff(n=2) != 0) | (tps.diff(n=2) != 0)
        keep = torch.cat([torch.tensor([True]), corner, torch.tensor([True])])
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    zero = torch.zeros(1, dtype=torch.float64)
    tps, fps = torch.cat([zero, tps]), torch.cat([zero, fps])
    thresholds = torch.cat([torch.tensor([float("inf")], dtype=torch.float64), thresholds])
    return RocCurve(fpr=fps / fps[-1], tpr=tps / tps[-1], thresholds=thresholds)


def auc(x: torch.Tensor, y: torch.Tensor) -> float:
    """The area under a curve through the points ``(x_k, y_k)``, by the trapezoid rule.

    ``area = Σ_k (x_{k+1} - x_k) · (y_{k+1} + y_k) / 2``; ``x`` must be monotonic.
    """
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"x and y must be [K] with K >= 2 points; got {tuple(x.shape)} and {tuple(y.shape)}")
    dx = x.double().diff()
    if not (bool((dx >= 0).all()) or bool((dx <= 0).all())):
        raise ValueError("x must be monotonic (increasing or decreasing) for the trapezoid rule")
    return abs(torch.trapezoid(y.double(), x.double()).item())


def roc_auc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """The area under the ROC curve: the chance that a random positive outscores a random negative.

    ``AUC = P(s_pos > s_neg) + ½ · P(s_pos = s_neg)``; 1 is perfect, 0.5 is guessing.
    Arguments as in :func:`roc_curve`.
    """
    curve = roc_curve(scores, positives)
    return auc(curve.fpr, curve.tpr)


def _ovr_inputs(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor [N, C] with one column per class; got {shape}")
    true = _check_targets(targets)
    if len(true) != len(scores):
        raise ValueError(f"scores and targets need the same length; got {len(scores)} and {len(true)}")
    if len(true) and int(true.max()) >= scores.shape[1]:
        raise ValueError(f"targets hold class {int(true.max())} but scores have only {scores.shape[1]} columns")
    return scores, true


def roc_curves_ovr(scores: torch.Tensor, targets: torch.Tensor) -> list[RocCurve]:
    """One-vs-rest ROC curves: for each class c, scores ``[:, c]`` against ``targets == c``.

    Args:
        scores: ``[N, C]`` class probabilities (softmax of the logits; this is what
            scikit-learn's ``multi_class="ovr"`` expects) or any per-class scores.
        targets: class indices, integer ``[N]``; every class must occur, and not alone.
    """
    scores, true = _ovr_inputs(scores, targets)
    sizes = torch.bincount(true, minlength=scores.shape[1])
    lonely = [c for c in range(scores.shape[1]) if sizes[c] in (0, len(true))]
    if lonely:
        raise ValueError(
            f"one-vs-rest ROC curves need every class among the targets, and never alone; "
            f"class {lonely[0]} has {int(sizes[lonely[0]])} of {len(true)} samples"
        )
    return [roc_curve(scores[:, c], true == c) for c in range(scores.shape[1])]


def roc_auc_ovr(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One-vs-rest AUC of every class, float64 ``[C]``; ``.mean()`` is the macro average.

    Arguments as in :func:`roc_curves_ovr`.
    """
    return torch.tensor([auc(c.fpr, c.tpr) for c in roc_curves_ovr(scores, targets)], dtype=torch.float64)
