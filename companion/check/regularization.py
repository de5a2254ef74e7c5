"""Self-checks of chapter 6, overfitting and regularization: the L2 and L1 penalties, shifting images,
and when early stopping stops.

A failure names the case and says how the answer differs (a factor, a sign, a direction, which pixels)
and names a common mistake when the answer matches it; it never prints the expected values. The
method is in each check's hint, shown by ``check.hint(name)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from companion.check.core import (
    not_a_function,
    CheckResult,
    _as_array,
    _how_far,
    _run,
    register_hint,
)

__all__ = [
    "early_stopping",
    "early_stopping_epochs",
    "l1_penalty",
    "l2_penalty",
    "shift_images",
    "shifted",
]


def _parameter_cases() -> list[tuple[str, list[torch.Tensor], float]]:
    """(description, tensors, λ): a tiny matrix, a layer's weight and bias, a network's weights,
    a tensor of zeros next to a single entry, and float64 entries of all sizes."""
    gen = torch.Generator().manual_seed(8)
    cases = [
        [torch.tensor([[1.0, -2.0], [0.5, 0.0]])],
        [torch.randn(5, 3, generator=gen), torch.randn(5, generator=gen)],
        [torch.randn(784, 16, generator=gen), torch.randn(16, generator=gen), torch.randn(16, 10, generator=gen)],
        [torch.zeros(4, 4), torch.tensor([-3.0])],
        [torch.randn(3, 3, generator=gen, dtype=torch.float64) * torch.logspace(-3, 3, 3, dtype=torch.float64)],
    ]
    lams = [0.1, 0.01, 1e-3, 0.5, 2.0]
    return [
        (f"case {number} (tensors of shapes {', '.join(str(tuple(p.shape)) for p in params)}; lam = {lam:g})",
         params, lam)
        for number, (params, lam) in enumerate(zip(cases, lams), start=1)
    ]  # fmt: skip


def _penalty_check(
    name: str,
    student: Callable[[list[torch.Tensor], float], Any],
    reference: Callable[[list[torch.Tensor], float], torch.Tensor],
    mistakes: dict[str, Callable[[list[torch.Tensor], float], torch.Tensor]],
    gradient: Callable[[torch.Tensor, float], torch.Tensor],
) -> CheckResult:
    """Compare a penalty on every case (a 0-d value to 1e-5), then check that its gradient reaches the
    parameters and equals ``gradient(p, λ)``: a penalty that is a plain float cannot train anything."""
    refused = not_a_function(name, student)
    if refused is not None:
        return refused
    for where, params, lam in _parameter_cases():
        got, error = _run(student, ([p.clone() for p in params], lam))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        want, have = _as_array(reference(params, lam)), _as_array(got)
        if have is None:
            return CheckResult(name, False, f"{where}: expected a number or a 0-d tensor, got {type(got).__name__}.")
        if have.shape != ():
            return CheckResult(
                name, False, f"{where}: expected one number (a 0-d tensor), got shape {have.shape}: add up "
                "the contributions of every tensor into a single penalty."
            )
        if not math.isfinite(float(have)):
            return CheckResult(name, False, f"{where}: the result is NaN or infinite.")
        if not math.isclose(float(have), float(want), rel_tol=1e-5, abs_tol=1e-9):
            named = ""
            for what, mistake in mistakes.items():
                if math.isclose(float(have), float(mistake(params, lam)), rel_tol=1e-5, abs_tol=1e-9):
                    named = f" It looks like this mistake: {what}."
                    break
            return CheckResult(name, False, f"{where}: {_how_far(float(want), float(have))}.{named}")
    where, params, lam = _parameter_cases()[1]
    leaves = [p.clone().requires_grad_() for p in params]
    got, error = _run(student, (leaves, lam))
    if error is not None:
        return CheckResult(name, False, f"{where} with parameters that require gradients {error}")
    if not isinstance(got, torch.Tensor) or not got.requires_grad:
        return CheckResult(
            name, False, f"{where}: with parameters that require gradients, the penalty must be a tensor "
            "that autograd can differentiate (no .item(), float() or NumPy), or backward() never reaches "
            "the weights."
        )
    grads = torch.autograd.grad(got, leaves, allow_unused=True)
    for number, (leaf, grad) in enumerate(zip(leaves, grads), start=1):
        if grad is None or not torch.allclose(grad, gradient(leaf.detach(), lam), rtol=1e-5, atol=1e-7):
            return CheckResult(name, False, f"{where}: the gradient of the penalty for tensor {number} is wrong.")
    return CheckResult(name, True, f"{len(_parameter_cases())} cases and the gradient match the reference.")


def l2_penalty(student: Callable[[list[torch.Tensor], float], torch.Tensor]) -> CheckResult:
    """Check ``student(params, lam)``: the L2 penalty ``(λ/2) Σ_p Σ_i p_i²`` over a list of tensors.

    With the ½, the penalty's gradient is ``λ·p``: adding it to the loss is what
    ``weight_decay=λ`` does in ``torch.optim.SGD`` and ``Adam``. The check compares the value on
    five cases (zeros included) to 1e-5 and the gradient on one; the result must be a 0-d tensor
    that autograd can differentiate.
    """
    mistakes = {
        "the ½ is missing: the gradient would be 2λw": lambda ps, lam: lam * sum((p**2).sum() for p in ps),
        "the square root of the sum of squares (a norm), not the sum of squares itself":
            lambda ps, lam: lam / 2 * sum((p**2).sum() for p in ps).sqrt(),
        "a mean over the entries instead of a sum": lambda ps, lam: lam / 2 * sum((p**2).mean() for p in ps),
        "only the first tensor of the list counts": lambda ps, lam: lam / 2 * (ps[0] ** 2).sum(),
    }  # fmt: skip
    return _penalty_check(
        "l2_penalty", student, lambda ps, lam: lam / 2 * sum((p**2).sum() for p in ps), mistakes,
        lambda p, lam: lam * p,
    )  # fmt: skip


def l1_penalty(student: Callable[[list[torch.Tensor], float], torch.Tensor]) -> CheckResult:
    """Check ``student(params, lam)``: the L1 penalty ``λ Σ_p Σ_i |p_i|`` over a list of tensors.

    Its gradient is ``λ·sign(p)``. Compared like :func:`l2_penalty`.
    """
    mistakes = {
        "positive and negative entries cancel: the penalty adds up sizes, not signed values":
            lambda ps, lam: lam * sum(p.sum() for p in ps),
        "a ½ that belongs to the L2 penalty, not to this one": lambda ps, lam: lam / 2 * sum(p.abs().sum() for p in ps),
        "a mean over the entries instead of a sum": lambda ps, lam: lam * sum(p.abs().mean() for p in ps),
        "squares instead of absolute values": lambda ps, lam: lam * sum((p**2).sum() for p in ps),
    }  # fmt: skip
    return _penalty_check(
        "l1_penalty", student, lambda ps, lam: lam * sum(p.abs().sum() for p in ps), mistakes,
        lambda p, lam: lam * p.sign(),
    )  # fmt: skip


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``images [N, H, W]`` moved ``dx`` pixels right and ``dy`` down (negative: left, up); new pixels are 0.

    ``out[n, i, j] = images[n, i - dy, j - dx]`` where that index exists, else 0.
    """
    n, h, w = images.shape
    out = torch.zeros_like(images)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    rows_out, rows_in = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h - max(dy, 0))
    cols_out, cols_in = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w - max(dx, 0))
    out[:, rows_out, cols_out] = images[:, rows_in, cols_in]
    return out


def _shift_mistakes(images: torch.Tensor, dx: int, dy: int) -> dict[str, torch.Tensor]:
    mistakes = {
        "the pixels that leave one edge come back in at the other (a wrap-around, as torch.roll does); "
        "the uncovered pixels must be 0": torch.roll(images, shifts=(dy, dx), dims=(1, 2)),
        "the images move the opposite way: dx > 0 moves right and dy > 0 moves down": shifted(images, -dx, -dy),
    }
    if images.shape[1] == images.shape[2] or dx == dy:
        mistakes["dx and dy are swapped: dx moves along a row (to the right), dy down the columns"] = shifted(
            images, dy, dx
        )
    return mistakes


def shift_images(student: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """Check ``student(images, dx, dy)`` against :func:`shifted`: a shift with zeros, not a wrap-around.

    Shapes: images ``[N, H, W]`` → ``[N, H, W]``; ``dx > 0`` moves right, ``dy > 0`` moves down.
    Cases: a 3×3 image moved each way, random 28×28 images, no shift, a non-square image, a single
    image moved by its whole width (all zeros), and a batch of one. A failure says which pixels differ
    and names a wrap-around, a mirrored direction or swapped axes.
    """
    name = "shift_images"
    refused = not_a_function(name, student)
    if refused is not None:
        return refused
    gen = torch.Generator().manual_seed(9)
    tiny = torch.arange(1.0, 10.0).reshape(1, 3, 3)
    digits = torch.rand(3, 28, 28, generator=gen)
    wide = torch.rand(2, 4, 6, generator=gen)
    cases = [(tiny, 1, 0), (tiny, 0, -1), (tiny, -1, 1)]
    cases += [(digits, dx, dy) for dx, dy in [(2, 1), (-2, 2), (0, 0), (-1, -3)]]
    cases += [(wide, 2, 1), (wide, -5, 0), (digits[:1], 28, 0), (digits[:1], 0, 3)]
    for number, (images, dx, dy) in enumerate(cases, start=1):
        where = f"case {number} (images of shape {tuple(images.shape)}, dx = {dx}, dy = {dy})"
        got, error = _run(student, (images.clone(), dx, dy))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if not isinstance(got, torch.Tensor):
            return CheckResult(name, False, f"{where}: expected a tensor, got {type(got).__name__}.")
        if got.shape != images.shape:
            return CheckResult(
                name, False, f"{where}: expected the shape of the input, {tuple(images.shape)}, got "
                f"{tuple(got.shape)}: a shift keeps the image size."
            )
        want = shifted(images, dx, dy)
        if torch.allclose(got.double(), want.double()):
            continue
        for what, variant in _shift_mistakes(images, dx, dy).items():
            if torch.allclose(got.double(), variant.double()):
                return CheckResult(name, False, f"{where}: it looks like this mistake: {what}.")
        wrong = (got.double() - want.double()).abs() > 1e-6
        image, row, column = (int(i) for i in wrong.nonzero()[0])
        return CheckResult(
            name, False, f"{where}: {int(wrong.sum())} of {want.numel()} pixels differ; the first is image "
            f"{image}, row {row}, column {column}."
        )
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference shift.")


def early_stopping_epochs(losses: Sequence[float], patience: int) -> tuple[int, int]:
    """``(best_epoch, last_epoch)`` of early stopping on per-epoch validation losses (epochs from 1).

    An epoch improves when its loss is below every earlier one (a tie is no
    improvement). Training ends at the first epoch that comes ``patience``
    epochs after the last improvement, or at the last epoch of ``losses``.
    """
    best, best_epoch = math.inf, 0
    for epoch, loss in enumerate(losses, start=1):
        if loss < best:
            best, best_epoch = loss, epoch
        elif epoch - best_epoch >= patience:
            return best_epoch, epoch
    return best_epoch, len(losses)


def _ties_improve(losses: Sequence[float], patience: int) -> tuple[int, int]:
    best, best_epoch = math.inf, 0
    for epoch, loss in enumerate(losses, start=1):
        if loss <= best:
            best, best_epoch = loss, epoch
        elif epoch - best_epoch >= patience:
            return best_epoch, epoch
    return best_epoch, len(losses)


def _looks_ahead(losses: Sequence[float], patience: int) -> tuple[int, int]:
    best_epoch = list(losses).index(min(losses)) + 1
    return best_epoch, min(best_epoch + patience, len(losses))


_STOPPING_MISTAKES = {
    "a loss equal to the best one counts as an improvement; it must be lower": _ties_improve,
    "the best epoch is taken from the whole list of losses, as if training had seen the future; "
    "the best epoch is the best one seen before training stops": _looks_ahead,
    "epochs are counted from 0; the first epoch is epoch 1":
        lambda losses, patience: tuple(e - 1 for e in early_stopping_epochs(losses, patience)),
    "training stops one epoch too late":
        lambda losses, patience: (early_stopping_epochs(losses, patience)[0],
                                  min(early_stopping_epochs(losses, patience)[1] + 1, len(losses))),
}  # fmt: skip


def early_stopping(student: Callable[[Sequence[float], int], tuple[int, int]]) -> CheckResult:
    """Check ``student(losses, patience) -> (best_epoch, last_epoch)`` against :func:`early_stopping_epochs`.

    Cases: a run that stops, the same with more patience, one that never stops, ties, a late improvement
    after a stall, a single epoch and a patience of 1. A failure says which of the two numbers is too
    early or too late, and names the common mistakes, without the expected epochs.
    """
    name = "early_stopping"
    refused = not_a_function(name, student)
    if refused is not None:
        return refused
    cases = [
        ([0.9, 0.7, 0.6, 0.65, 0.7, 0.8], 2),
        ([0.9, 0.7, 0.6, 0.65, 0.7, 0.8], 3),
        ([0.9, 0.8, 0.7, 0.6], 1),
        ([0.5, 0.5, 0.5], 2),
        ([1.0, 0.8, 0.9, 0.7, 0.75, 0.76, 0.77, 0.6], 3),
        ([0.4], 3),
        ([0.5, 0.6, 0.3, 0.2, 0.25], 1),
    ]
    for number, (losses, patience) in enumerate(cases, start=1):
        where = f"case {number} (losses {losses}, patience {patience})"
        got, error = _run(student, (list(losses), patience))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return CheckResult(name, False, f"{where}: expected a pair (best_epoch, last_epoch), got {got!r}.")
        try:
            pair = tuple(int(x) for x in got)
        except (TypeError, ValueError):
            return CheckResult(name, False, f"{where}: expected two whole numbers, got {got!r}.")
        want = early_stopping_epochs(losses, patience)
        if pair == want:
            continue
        for what, mistake in _STOPPING_MISTAKES.items():
            if pair == tuple(mistake(losses, patience)):
                return CheckResult(name, False, f"{where}: it looks like this mistake: {what}.")
        parts = [
            f"{label} is too {'late' if have > expected else 'early'}"
            for label, have, expected in zip(("best_epoch", "last_epoch"), pair, want)
            if have != expected
        ]
        return CheckResult(name, False, f"{where}: {' and '.join(parts)}.")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


register_hint(
    "l2_penalty",
    "square every entry of every tensor, add them all up into one number, and multiply by λ/2; "
    "keep it a tensor (no .item()) so that backward() reaches the weights.",
)
register_hint(
    "l1_penalty",
    "add up the absolute values of every entry of every tensor and multiply by λ (no ½ here); "
    "keep it a tensor so that backward() reaches the weights.",
)
register_hint(
    "shift_images",
    "torch.roll wraps the pixels that leave one edge around to the other; a shift must fill the "
    "uncovered rows and columns with 0 instead. Start from torch.zeros_like(images) and copy into it the "
    "slice of the images that stays in view (or pad with zeros by F.pad and cut the window out).",
)
register_hint(
    "early_stopping",
    "count epochs from 1; an epoch improves only when its loss is below every earlier one (a tie is "
    "not an improvement); training ends at the first epoch that comes `patience` epochs after the last "
    "improvement, or at the last epoch when that never comes.",
)
