"""Self-checks of chapter 4, a real network on MNIST: binary and multi-class cross-entropy, the
gradient of cross-entropy, the confusion matrix, precision and recall.

Each check computes its expected answer itself. A failed check names the case and
how the answer is off (a shape, a sign, a factor, a percentage band, a mistake it
recognises) but never the expected numbers and never the method; the method is the
check's hint, shown by ``check.hint(name)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from companion.check.backprop import GRADIENT_FORBIDDEN, _difference
from companion.check.core import (
    PLACEHOLDER_MESSAGE,
    CheckResult,
    _as_array,
    _detached,
    _run,
    register_hint,
)

__all__ = [
    "BINARY_CROSS_ENTROPY_FORBIDDEN",
    "CROSS_ENTROPY_FORBIDDEN",
    "binary_cross_entropy",
    "confusion_matrix",
    "cross_entropy",
    "cross_entropy_grad",
    "precision_recall",
    "precision_recall_of_class",
    "softmax",
]

CROSS_ENTROPY_FORBIDDEN = (
    "torch.nn.functional.cross_entropy",
    "torch.nn.functional.nll_loss",
    "torch.nn.functional.log_softmax",
    "torch.log_softmax",
    "torch.Tensor.log_softmax",
    "torch.special.log_softmax",
    "torch.nn.functional.softmax",
    "torch.softmax",
    "torch.Tensor.softmax",
    "torch.special.softmax",
)
"""What the cross-entropy exercise does without (PyTorch's cross-entropy, NLL loss, softmax and log-softmax)."""

BINARY_CROSS_ENTROPY_FORBIDDEN = (
    "torch.nn.functional.binary_cross_entropy",
    "torch.nn.functional.binary_cross_entropy_with_logits",
    "torch.nn.functional.logsigmoid",
    "torch.nn.functional.soft_margin_loss",
    *CROSS_ENTROPY_FORBIDDEN,
)
"""What the binary cross-entropy exercise does without, PyTorch's ready-made versions of it."""

_NONE_RETURNED = "the function returned None (is a `return` missing, or is the placeholder `...` still there?)"

Case = tuple[str, tuple[Any, ...]]
Diagnosis = Callable[[tuple[Any, ...], Any, Any], str]


def _check_cases(
    name: str,
    student: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    rtol: float,
    atol: float,
    forbidden: Sequence[str] = (),
    diagnose: Diagnosis | None = None,
) -> CheckResult:
    """Run ``student`` on each ``(description, args)`` case and compare it with ``reference(*args)``.

    Stops at the first case that raises or differs and says which case and how it differs,
    without the expected value; ``diagnose(args, expected, got)`` may add a sentence naming a
    recognised mistake (``got`` is None when the student's function raised). ``forbidden``: dotted names that raise while the student's function runs.
    """
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    for number, (description, args) in enumerate(cases, start=1):
        where = f"case {number} ({description})"
        expected = reference(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        got, error = _run(student, args, forbidden)
        if error is not None:
            extra = diagnose(args, expected, None) if diagnose is not None else ""
            return CheckResult(name, False, f"{where} {error}.{extra}")
        if got is None:
            return CheckResult(name, False, f"{where}: {_NONE_RETURNED}")
        if isinstance(got, (tuple, list)):
            got = _detached(got)
        elif isinstance(got, torch.Tensor):
            got = got.detach()
        why = _difference(expected, got, rtol=rtol, atol=atol)
        if why is not None:
            extra = diagnose(args, expected, got) if diagnose is not None else ""
            return CheckResult(name, False, f"{where}: {why}.{extra}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


def _scaled(expected: Any, got: Any, factor: float) -> bool:
    """True when ``got`` equals ``factor · expected`` (both numeric, same shape, expected not all zero)."""
    want, have = _as_array(expected), _as_array(got)
    if want is None or have is None or want.shape != have.shape or not np.any(want):
        return False
    return bool(np.allclose(have, factor * want, rtol=1e-4, atol=1e-6))


def _logit_cases() -> list[Case]:
    """Logits ``[B, C]``: one row, a batch, a batch of one of zeros, large scores, and scores near ±1000."""
    gen = torch.Generator().manual_seed(5)
    return [
        ("one row of 3 logits", (torch.tensor([[2.0, 1.0, 0.1]]),)),
        ("8 rows of 10 logits", (torch.randn(8, 10, generator=gen),)),
        ("one row of zeros", (torch.zeros(1, 4),)),
        ("4 rows of logits of size about 20", (torch.randn(4, 10, generator=gen) * 20,)),
        ("2 rows of logits near ±1000", (torch.tensor([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1000.5]]),)),
    ]


def _softmax_mistake(args: tuple[Any, ...], expected: Any, got: Any) -> str:
    if got is None:
        return ""
    have = _as_array(got)
    if have is None or have.shape != tuple(args[0].shape):
        return ""
    if not np.all(np.isfinite(have)):
        return " exp overflows for logits this large (e^89 is already beyond float32)."
    if np.allclose(have, torch.softmax(args[0], dim=0).numpy(), rtol=1e-4, atol=1e-6):
        return " Each column adds up to 1 instead of each row: a row holds the scores of one example."
    if not np.allclose(have.sum(axis=1), 1, atol=1e-4):
        return " The rows do not add up to 1."
    return ""


def softmax(student: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(logits)``: the softmax of each row, ``p_k = e^{z_k} / Σ_j e^{z_j}``.

    Shapes: logits ``[B, C]`` → probabilities ``[B, C]``; the last case has
    logits near ±1000, where ``exp`` overflows unless the formula avoids it.
    """
    return _check_cases(
        "softmax", student, lambda z: torch.softmax(z, dim=1), _logit_cases(), 1e-4, 1e-7, (), _softmax_mistake
    )


def _with_targets(cases: list[Case], seed: int) -> list[Case]:
    gen = torch.Generator().manual_seed(seed)
    return [(text, (z, torch.randint(0, z.shape[1], (len(z),), generator=gen))) for text, (z,) in cases]


def _cross_entropy_mistake(args: tuple[Any, ...], expected: Any, got: Any) -> str:
    if got is None:
        return ""
    logits = args[0]
    have = _as_array(got)
    if have is not None and not np.all(np.isfinite(have)):
        return (" A probability underflowed to 0 (its log is −inf) or an exp overflowed: for logits this "
                "large the formula must avoid both.")  # fmt: skip
    if have is not None and have.shape == (len(logits),):
        return " The loss of a batch is one number: the mean over its examples."
    if len(logits) > 1 and _scaled(expected, got, len(logits)):
        return f" It is B = {len(logits)} times the right answer: average over the batch instead of summing."
    return ""


def cross_entropy(student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(logits, targets)``: the mean cross-entropy ``-(1/B) Σ_i log softmax(z_i)[y_i]``.

    Shapes: logits ``[B, C]`` float, targets ``[B]`` int64 class indices → a 0-d tensor,
    equal to ``F.cross_entropy(logits, targets)``; the last case has logits near ±1000. PyTorch's
    cross-entropy, NLL loss, softmax and log-softmax (:data:`CROSS_ENTROPY_FORBIDDEN`) raise while the
    student's function runs.
    """
    return _check_cases(
        "cross_entropy",
        student,
        torch.nn.functional.cross_entropy,
        _with_targets(_logit_cases(), 6),
        1e-5,
        1e-6,
        CROSS_ENTROPY_FORBIDDEN,
        _cross_entropy_mistake,
    )


def _reference_cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    leaf = logits.clone().requires_grad_()
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(leaf, targets), leaf)
    return grad


def _gradient_mistake(args: tuple[Any, ...], expected: Any, got: Any) -> str:
    if got is None:
        return ""
    logits = args[0]
    have = _as_array(got)
    if have is None or have.shape != tuple(logits.shape):
        return ""
    if len(logits) > 1 and _scaled(expected, got, len(logits)):
        return f" It is B = {len(logits)} times the right answer: the loss is the mean over the batch."
    if not np.allclose(have.sum(axis=1), 0, atol=1e-5):
        return (" The entries of each row should add up to 0: raising all the logits of a row by the same "
                "amount changes no probability, so it cannot change the loss.")  # fmt: skip
    return ""


def cross_entropy_grad(student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(logits, targets)``: ∂L/∂logits of the mean cross-entropy L, without autograd.

    Shapes: logits ``[B, C]`` float, targets ``[B]`` int64 → a gradient ``[B, C]``, compared with
    ``torch.autograd`` applied to ``F.cross_entropy``. Autograd's entry points
    (:data:`~companion.check.backprop.GRADIENT_FORBIDDEN`) raise while the student's function runs.
    """
    return _check_cases(
        "cross_entropy_grad",
        student,
        _reference_cross_entropy_grad,
        _with_targets(_logit_cases(), 7),
        1e-4,
        1e-7,
        GRADIENT_FORBIDDEN,
        _gradient_mistake,
    )


def _binary_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(8)
    return [
        ("3 examples", (torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0]))),
        ("16 random examples", (torch.randn(16, generator=gen) * 3, torch.randint(0, 2, (16,), generator=gen).float())),
        ("one example with logit 0", (torch.zeros(1), torch.ones(1))),
        ("logits ±30", (torch.tensor([30.0, -30.0, 30.0, -30.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))),
        ("logits ±1000", (torch.tensor([1000.0, -1000.0, 1000.0, -1000.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))),
    ]


def _binary_mistake(args: tuple[Any, ...], expected: Any, got: Any) -> str:
    if got is None:
        return ""
    logits = args[0]
    have = _as_array(got)
    if have is not None and not np.all(np.isfinite(have)):
        return (" σ(z) rounds to exactly 0 or 1 for logits this large, and the log of 0 is −inf (or 0 · log 0 "
                "is NaN): the formula must avoid the log of a rounded probability.")  # fmt: skip
    if have is not None and have.shape == (len(logits),):
        return " The loss of a batch is one number: the mean over its examples."
    if len(logits) > 1 and _scaled(expected, got, len(logits)):
        return f" It is N = {len(logits)} times the right answer: average over the examples instead of summing."
    return ""


def binary_cross_entropy(student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(logits, targets)``: the mean binary cross-entropy of a sigmoid output.

    ``L = −(1/N) Σ_i [y_i log σ(z_i) + (1 − y_i) log(1 − σ(z_i))]``. Shapes: logits ``[N]`` float,
    targets ``[N]`` float 0.0 or 1.0 → a 0-d tensor, equal to
    ``F.binary_cross_entropy_with_logits(logits, targets)``; the last cases have logits ±30 and ±1000.
    PyTorch's binary and multi-class cross-entropy, log-sigmoid and (log-)softmax
    (:data:`BINARY_CROSS_ENTROPY_FORBIDDEN`) raise while the student's function runs.
    """
    return _check_cases(
        "binary_cross_entropy",
        student,
        torch.nn.functional.binary_cross_entropy_with_logits,
        _binary_cases(),
        1e-5,
        1e-6,
        BINARY_CROSS_ENTROPY_FORBIDDEN,
        _binary_mistake,
    )


def _confusion_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(7)
    return [
        ("4 samples, 3 classes", (torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)),
        ("3 samples, 2 classes", (torch.tensor([1, 1, 1]), torch.tensor([0, 0, 1]), 2)),
        ("200 random samples, 10 classes",
         (torch.randint(0, 10, (200,), generator=gen), torch.randint(0, 10, (200,), generator=gen), 10)),
        ("2 samples of class 0, 4 classes", (torch.tensor([0, 0]), torch.tensor([0, 0]), 4)),
    ]  # fmt: skip


def _reference_confusion(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    from companion import metrics

    return metrics.confusion_matrix(predictions, targets, num_classes=num_classes)


def _confusion_mistake(args: tuple[Any, ...], expected: Any, got: Any) -> str:
    if got is None:
        return ""
    want, have = _as_array(expected), _as_array(got)
    if have is not None and have.shape == want.shape and np.array_equal(have, want.T):
        return " Rows and columns are swapped: the rows are the true classes, the columns the predictions."
    return ""


def confusion_matrix(student: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Check ``student(predictions, targets, num_classes)``: counts ``[C, C]``, rows true, columns predicted.

    Entry ``[i, j]`` counts the samples of true class i predicted as j;
    predictions and targets are int64 class indices ``[N]``. The last case has classes that never occur.
    """
    return _check_cases(
        "confusion_matrix", student, _reference_confusion, _confusion_cases(), 0.0, 1e-9, (), _confusion_mistake
    )


def precision_recall_of_class(predictions: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[float, float]:
    """``(precision, recall)`` of class k: ``TP / (TP + FP)`` and ``TP / (TP + FN)``, 0 for a zero denominator."""
    hits = int(((predictions == k) & (targets == k)).sum())
    predicted, actual = int((predictions == k).sum()), int((targets == k).sum())
    return (hits / predicted if predicted else 0.0, hits / actual if actual else 0.0)


def _precision_recall_mistake(args: tuple[Any, ...], expected: Any, got: Any) -> str:
    predictions, targets, k = args
    have = _as_array(got) if got is not None else None
    if have is not None and have.shape == (2,) and np.allclose(have[::-1], expected):
        return " Precision and recall are swapped."
    if not (predictions == k).any():
        return f" Class {k} is never predicted here: precision is 0/0, which the exercise counts as 0.0."
    if not (targets == k).any():
        return f" Class {k} never occurs here: recall is 0/0, which the exercise counts as 0.0."
    return ""


def precision_recall(student: Callable[[torch.Tensor, torch.Tensor, int], tuple[float, float]]) -> CheckResult:
    """Check ``student(predictions, targets, k)`` against :func:`precision_recall_of_class`.

    Predictions and targets are int64 class indices ``[N]``; the answer is two floats. The last
    cases have a class that is never predicted and a class that never occurs.
    """
    cases = [
        (f"{text}, class {k}", (p, t, k))
        for text, (p, t, c) in _confusion_cases()[:3]
        for k in range(min(c, 3))
    ]  # fmt: skip
    cases.append(("3 samples, class 2 never predicted", (torch.tensor([0, 0, 1]), torch.tensor([0, 2, 2]), 2)))
    cases.append(("3 samples, class 1 never occurs", (torch.tensor([0, 1, 1]), torch.tensor([0, 2, 2]), 1)))
    return _check_cases(
        "precision_recall", student, precision_recall_of_class, cases, 1e-6, 1e-9, (), _precision_recall_mistake
    )


register_hint(
    "softmax",
    "exponentiate each score and divide by the row's sum (dim=1); subtract each row's "
    "maximum first, which changes nothing mathematically but keeps exp from overflowing.",
)
register_hint(
    "binary_cross_entropy",
    "with σ(z) = 1 / (1 + e^(−z)): −log σ(z) = log(1 + e^(−z)) and −log(1 − σ(z)) = log(1 + e^z), so one "
    "example's loss is log(1 + e^z) − y·z = softplus(z) − y·z. Compute softplus without overflow as "
    "max(z, 0) + log1p(e^(−|z|)) (chapter 3, exercise 1), then average.",
)
register_hint(
    "cross_entropy",
    "log softmax(z)_k = z_k − log Σ_j e^(z_j); torch.logsumexp(z, dim=1, keepdim=True) computes the second "
    "term without overflow. Pick each row's entry of the true class with z[torch.arange(B), y], negate "
    "and average over the batch.",
)
register_hint(
    "cross_entropy_grad",
    "for one example, L = −z_y + log Σ_j e^(z_j), so ∂L/∂z_k = softmax(z)_k − [k = y]: the probabilities "
    "minus the one-hot target (torch.softmax and F.one_hot are allowed). The batch loss is the mean, "
    "so divide by B.",
)
register_hint(
    "confusion_matrix",
    "start from torch.zeros(C, C) and add 1 at [true, predicted] for each sample; rows are "
    "the true classes, columns the predictions, and the matrix is C × C even for classes that never occur.",
)
register_hint(
    "precision_recall",
    "precision: of the samples predicted as k, the share that are k; recall: of the samples "
    "that are k, the share predicted as k. Return 0.0 when nothing is predicted as k (or nothing is k).",
)
