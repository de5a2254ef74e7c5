"""Self-checks of chapter 4, a real network on MNIST: binary and multi-class cross-entropy, the gradient
of cross-entropy, the confusion matrix, precision and recall."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from companion.check.core import CheckSpec, Raised, aten, define, keyed, rows_sum_to, summed
from companion.check.learning import AUTOGRAD_FORBIDDEN
from companion.check.neurons import SOFTMAX_FORBIDDEN

__all__ = ["SKLEARN_COUNTS", "binary_cross_entropy", "confusion_matrix", "cross_entropy", "cross_entropy_grad", "precision_recall"]

CROSS_ENTROPY_FORBIDDEN = ("torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss", *SOFTMAX_FORBIDDEN,
                           *aten("cross_entropy_loss", "nll_loss", "nll_loss_nd", "nll_loss2d", "nll_loss_forward",
                                 "nll_loss2d_forward"))  # fmt: skip
BINARY_CROSS_ENTROPY_FORBIDDEN = (
    "torch.nn.functional.binary_cross_entropy", "torch.nn.functional.binary_cross_entropy_with_logits",
    "torch.nn.functional.logsigmoid", "torch.nn.functional.soft_margin_loss", "torch.nn.functional.softplus",
    *CROSS_ENTROPY_FORBIDDEN, *aten("binary_cross_entropy_with_logits", "binary_cross_entropy", "log_sigmoid",
                                    "log_sigmoid_forward", "softplus", "logaddexp"),
)  # fmt: skip
SKLEARN_COUNTS = ("sklearn.metrics.confusion_matrix", "sklearn.metrics.multilabel_confusion_matrix",
                  "sklearn.metrics.precision_recall_fscore_support")
"""scikit-learn's counting of hits and misses, which its confusion matrix, precision and recall go through."""


def _logits(gen: torch.Generator) -> list:
    cases = [
        ("one row of 3 logits", torch.tensor([[2.0, 1.0, 0.1]])),
        ("8 rows of 10 logits", torch.randn(8, 10, generator=gen)),
        ("one row of zeros", torch.zeros(1, 4)),
        ("4 rows of logits of size about 20", torch.randn(4, 10, generator=gen) * 20),
        ("2 rows of logits near ±1000", torch.tensor([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1000.5]])),
    ]
    return [(text, (z, torch.randint(0, z.shape[1], (len(z),), generator=gen))) for text, z in cases]


def _finite(got: Any) -> bool:
    return not isinstance(got, torch.Tensor) or bool(torch.isfinite(got.double()).all())


def _mean_loss(case: tuple, expected: Any, got: Any) -> str:
    if isinstance(got, Raised) or not _finite(got):
        return "" if isinstance(got, Raised) else (
            "A probability underflowed to 0 (its log is −inf) or an exp overflowed: for logits this large the "
            "formula must avoid both.")  # fmt: skip
    if isinstance(got, torch.Tensor) and got.shape == (len(case[0]),):
        return "The loss of a batch is one number: the mean over its examples."
    return ""


cross_entropy = define(CheckSpec(
    "cross_entropy", F.cross_entropy, _logits, rtol=1e-5, atol=1e-4,
    forbidden=CROSS_ENTROPY_FORBIDDEN, diagnose=_mean_loss,
    mistakes={"the sum over the batch; average over the batch instead of summing": summed(F.cross_entropy)},
    hint="work with the log of the softmax, never the softmax itself: it is a logit minus the log of a sum of "
    "exponentials of the row, which torch.logsumexp computes without overflow. Pick each row's entry of its "
    "true class (index the rows and the targets together), negate, and average over the batch.",
), doc="""Check ``student(logits, targets)``: the mean cross-entropy of logits ``[B, C]`` against class indices
    ``[B]`` (int64), a 0-d tensor; the last case has logits near ±1000. PyTorch's cross-entropy, NLL
    loss, softmax and log-softmax raise while the function runs.""")


def _cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor, smoothing: float,
                        mistake: str = "") -> torch.Tensor:  # fmt: skip
    if mistake == "unscaled":  # p − (y + ε/C): a target whose entries sum to 1 + ε
        one_hot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return (logits.softmax(dim=1) - one_hot - smoothing / logits.shape[1]) / len(targets)
    leaf = logits.clone().requires_grad_()
    loss = F.cross_entropy(leaf, targets, label_smoothing=0.0 if mistake == "ignored" else smoothing)
    return torch.autograd.grad(loss, leaf)[0]


def _smoothed_cases(gen: torch.Generator) -> list:
    smoothing = (0.1, 0.2, 0.1, 0.0, 0.3)
    return [(f"{text}, ε = {eps:g}", (*case, eps)) for (text, case), eps in zip(_logits(gen), smoothing)]


cross_entropy_grad = define(CheckSpec(
    "cross_entropy_grad", _cross_entropy_grad, _smoothed_cases, rtol=1e-4, atol=1e-7,
    forbidden=AUTOGRAD_FORBIDDEN, diagnose=rows_sum_to(0, "The entries of each row should add up to 0: raising all the "
    "logits of a row by the same amount changes no probability, so it cannot change the loss.", atol=1e-5),
    mistakes={"the sum over the batch; the loss is the mean over the batch": summed(_cross_entropy_grad),
              **keyed(_cross_entropy_grad, {
                  "ignored": "this is the gradient without label smoothing: ε changes the target",
                  "unscaled": "the target's entries sum to 1 + ε, and a target is a distribution over the "
                  "classes"})},
    hint="write the smoothed target q as a distribution over the classes; then differentiate one example's loss, "
    "−Σ_k q_k log p_k, with respect to each logit, writing each log p_k in the logits as the chapter does and "
    "using that the q_k add up to 1 (torch.softmax and F.one_hot are allowed). The batch loss is a mean, and "
    "that shows in its gradient.",
), doc="""Check ``student(logits, targets, smoothing) -> grad``: the gradient of the mean cross-entropy with
    label smoothing ε with respect to the logits ``[B, C]``, for class indices ``[B]``, without autograd (it raises
    while the function runs).""")


def _binary_cases(gen: torch.Generator) -> list:
    pm = torch.tensor([1.0, -1.0, 1.0, -1.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    return [
        ("3 examples", (torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0]))),
        ("16 random examples", (torch.randn(16, generator=gen) * 3, torch.randint(0, 2, (16,), generator=gen).float())),
        ("one example with logit 0", (torch.zeros(1), torch.ones(1))),
        ("logits ±30", (30 * pm, labels)),
        ("logits ±1000", (1000 * pm, labels)),
    ]


def _binary_note(case: tuple, expected: Any, got: Any) -> str:
    if isinstance(got, torch.Tensor) and not _finite(got):
        return ("σ(z) rounds to exactly 0 or 1 for logits this large, and the log of 0 is −inf (or 0 · log 0 is "
                "NaN): the formula must avoid the log of a rounded probability.")  # fmt: skip
    return _mean_loss(case, expected, got)


binary_cross_entropy = define(CheckSpec(
    "binary_cross_entropy", F.binary_cross_entropy_with_logits, _binary_cases, rtol=1e-5, atol=1e-6,
    forbidden=BINARY_CROSS_ENTROPY_FORBIDDEN, diagnose=_binary_note,
    mistakes={"the sum over the N examples; average instead of summing": summed(F.binary_cross_entropy_with_logits)},
    hint="write −log σ(z) and −log(1 − σ(z)) as logs of 1 plus an exponential, each a softplus, and combine "
    "the two cases with y into one expression in z; never take the log of a rounded probability. Compute "
    "softplus without overflow as in chapter 3's exercise 1, then average over the examples.",
), doc="""Check ``student(logits, targets)``: the mean binary cross-entropy of sigmoid outputs, logits ``[N]``
    and targets ``[N]`` (0.0 or 1.0) → a 0-d tensor; the last cases have logits ±30 and ±1000. PyTorch's
    ready-made losses, log-sigmoid, softplus, log-add-exp and (log-)softmax raise while the function runs.""")


def _confusion_cases(gen: torch.Generator) -> list:
    return [
        ("4 samples, 3 classes", (torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)),
        ("3 samples, 2 classes", (torch.tensor([1, 1, 1]), torch.tensor([0, 0, 1]), 2)),
        ("200 random samples, 10 classes",
         (torch.randint(0, 10, (200,), generator=gen), torch.randint(0, 10, (200,), generator=gen), 10)),
        ("2 samples of class 0, 4 classes", (torch.tensor([0, 0]), torch.tensor([0, 0]), 4)),
    ]  # fmt: skip


def _confusion(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    return counts.index_put_((targets, predictions), torch.ones_like(targets), accumulate=True)


confusion_matrix = define(CheckSpec(
    "confusion_matrix", _confusion, _confusion_cases, forbidden=("companion.metrics.confusion_matrix", *SKLEARN_COUNTS),
    mistakes={"rows and columns are swapped: the rows are the true classes, the columns the predictions":
              lambda p, t, c: _confusion(t, p, c)},
    hint="start from a C × C matrix of zeros and add 1 at [true, predicted] for each sample, so that repeated "
    "pairs add up; rows are the true classes, columns the predictions, and the matrix is C × C even for "
    "classes that never occur.",
), doc="""Check ``student(predictions, targets, num_classes)``: the counts ``[C, C]`` of each (true, predicted) pair,
    rows true, columns predicted, of int64 class indices ``[N]``; the last case has classes that never occur.""")


def _precision_recall(matrix: torch.Tensor, k: int) -> tuple[float, float]:
    hits, predicted, actual = int(matrix[k, k]), int(matrix[:, k].sum()), int(matrix[k].sum())
    return (hits / predicted if predicted else 0.0, hits / actual if actual else 0.0)


def _empty_class(case: tuple, expected: Any, got: Any) -> str:
    matrix, k = case
    if not matrix[:, k].any():
        return f"Class {k} is never predicted here: precision is 0/0, which the exercise counts as 0.0."
    if not matrix[k].any():
        return f"Class {k} never occurs here: recall is 0/0, which the exercise counts as 0.0."
    return ""


def _precision_recall_cases(gen: torch.Generator) -> list:
    samples = _confusion_cases(gen)[:3] + [
        ("3 samples, class 2 never predicted", (torch.tensor([0, 0, 1]), torch.tensor([0, 2, 2]), 3)),
        ("3 samples, class 1 never occurs", (torch.tensor([0, 1, 1]), torch.tensor([0, 2, 2]), 3)),
    ]
    classes = [range(3), range(2), range(3), (2,), (1,)]
    return [(f"the matrix of {text}, class {k}", (_confusion(*case), k))
            for (text, case), ks in zip(samples, classes) for k in ks]  # fmt: skip


precision_recall = define(CheckSpec(
    "precision_recall", _precision_recall, _precision_recall_cases, labels=("precision", "recall"), atol=1e-9,
    diagnose=_empty_class, forbidden=("companion.metrics.precision_recall_f1", *SKLEARN_COUNTS),
    mistakes={"precision and recall are swapped: the rows are the true classes, the columns the predictions":
              lambda m, k: _precision_recall(m, k)[::-1]},
    hint="precision: of the samples predicted as k, the share that are k; recall: of the samples that are k, "
    "the share predicted as k. Find each group in the matrix (which samples does a row hold, which a column?). "
    "Return 0.0 when nothing is predicted as k (or nothing is k).",
), doc="""Check ``student(matrix, k) -> (precision, recall)`` of class ``k``, read off a confusion matrix ``[C, C]`` of
    int64 counts, rows true, columns predicted; the last cases have a class that is never predicted and a class
    that never occurs.""")
