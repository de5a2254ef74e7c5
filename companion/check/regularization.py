"""Self-checks of chapter 6, overfitting and regularization: the L2 and L1 penalties, shifting images,
and when early stopping stops."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from companion.check.core import CheckSpec, Wrong, define, keyed, sampler


__all__ = ["early_stopping", "l1_penalty", "l2_penalty", "shift_images"]

Penalty = Callable[[list[torch.Tensor], float], torch.Tensor]


def _parameter_cases(gen: torch.Generator) -> list:
    r = sampler(gen, torch.float32)
    cases = [
        ([torch.tensor([[1.0, -2.0], [0.5, 0.0]])], 0.1),
        ([r(5, 3), r(5)], 0.01),
        ([r(784, 16), r(16), r(16, 10)], 1e-3),
        ([torch.zeros(4, 4), torch.tensor([-3.0])], 0.5),
        ([r(3, 3, dtype=torch.float64) * torch.logspace(-3, 3, 3, dtype=torch.float64)], 2.0),
    ]
    return [(f"tensors of shapes {', '.join(str(tuple(p.shape)) for p in ps)}; lam = {lam:g}", (ps, lam))
            for ps, lam in cases]  # fmt: skip


def _with_gradient(penalty: Penalty, params: list[torch.Tensor], lam: float) -> tuple:
    """``(penalty, its gradients)``: the value on ``params`` and the gradient autograd finds for each tensor."""
    value = penalty([p.clone() for p in params], lam)
    if isinstance(value, torch.Tensor) and value.shape != ():
        raise Wrong(f"expected one number (a 0-d tensor), got shape {tuple(value.shape)}: add up the "
                    "contributions of every tensor into a single penalty")  # fmt: skip
    leaves = [p.clone().requires_grad_() for p in params]
    again = penalty(leaves, lam)
    if not isinstance(again, torch.Tensor) or not again.requires_grad:
        raise Wrong("with parameters that require gradients, the penalty must be a tensor that autograd can "
                    "differentiate (no .item(), float() or NumPy), or backward() never reaches the weights")
    grads = torch.autograd.grad(again, leaves, allow_unused=True)
    return value, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _penalty_spec(name: str, penalty: Penalty, mistakes: dict[str, Penalty], hint: str) -> CheckSpec:
    return CheckSpec(
        name, lambda ps, lam: _with_gradient(penalty, ps, lam), _parameter_cases,
        labels=("the penalty", "its gradient"),
        apply=lambda student, ps, lam: _with_gradient(student, ps, lam), rtol=1e-5, atol=1e-7,
        mistakes={text: lambda ps, lam, m=m: _with_gradient(m, ps, lam) for text, m in mistakes.items()}, hint=hint,
        passed="5 cases and the gradient match the reference.",
    )  # fmt: skip


def _squares(ps: list[torch.Tensor], lam: float) -> torch.Tensor:
    return sum((p**2).sum() for p in ps)


l2_penalty = define(_penalty_spec(
    "l2_penalty", lambda ps, lam: lam / 2 * _squares(ps, lam),
    {
        "the ½ is missing: the gradient would be 2λw": lambda ps, lam: lam * _squares(ps, lam),
        "the square root of the sum of squares (a norm), not the sum of squares itself":
            lambda ps, lam: lam / 2 * _squares(ps, lam).sqrt(),
        "a mean over the entries instead of a sum": lambda ps, lam: lam / 2 * sum((p**2).mean() for p in ps),
        "only the first tensor of the list counts": lambda ps, lam: lam / 2 * _squares(ps[:1], lam),
    },
    "one number for the whole list: a sum over every entry of every tensor (not a mean, not the first tensor "
    "alone), with the ½ that makes its gradient λw; keep it a tensor (no .item()) so that backward() reaches "
    "the weights.",
), doc="""Check ``student(params, lam)``: the L2 penalty with its factor ½ over a list of tensors, as
    one 0-d tensor that autograd can differentiate; the value on five cases (zeros included) and its
    gradient, which is what ``weight_decay=lam`` adds in ``torch.optim.SGD``.""")  # fmt: skip
l1_penalty = define(_penalty_spec(
    "l1_penalty", lambda ps, lam: lam * sum(p.abs().sum() for p in ps),
    {
        "positive and negative entries cancel: the penalty adds up sizes, not signed values":
            lambda ps, lam: lam * sum(p.sum() for p in ps),
        "a ½ that belongs to the L2 penalty, not to this one": lambda ps, lam: lam / 2 * sum(p.abs().sum() for p in ps),
        "a mean over the entries instead of a sum": lambda ps, lam: lam * sum(p.abs().mean() for p in ps),
        "squares instead of absolute values": lambda ps, lam: lam * _squares(ps, lam),
    },
    "like the L2 penalty, one number summed over every entry of every tensor, but of the absolute values, "
    "so that signs cannot cancel, and with no ½; keep it a tensor so that backward() reaches the weights.",
), doc="""Check ``student(params, lam)``: the L1 penalty over a list of tensors, compared like
    :func:`l2_penalty`.""")  # fmt: skip


def _shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    n, h, w = images.shape
    out = torch.zeros_like(images)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    rows_out, rows_in = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h - max(dy, 0))
    cols_out, cols_in = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w - max(dx, 0))
    out[:, rows_out, cols_out] = images[:, rows_in, cols_in]
    return out


def _shift_cases(gen: torch.Generator) -> list:
    tiny = torch.arange(1.0, 10.0).reshape(1, 3, 3)
    digits, wide = torch.rand(3, 28, 28, generator=gen), torch.rand(2, 4, 6, generator=gen)
    cases = [(tiny, 1, 0), (tiny, 0, -1), (tiny, -1, 1)]
    cases += [(digits, dx, dy) for dx, dy in [(2, 1), (-2, 2), (0, 0), (-1, -3)]]
    cases += [(wide, 2, 1), (wide, -5, 0), (digits[:1], 28, 0), (digits[:1], 0, 3)]
    return [(f"images of shape {tuple(x.shape)}, dx = {dx}, dy = {dy}", (x, dx, dy)) for x, dx, dy in cases]


shift_images = define(CheckSpec(
    "shift_images", _shifted, _shift_cases, rtol=1e-6, atol=1e-6,
    diagnose=lambda case, want, got: "A shift keeps the image size." if got.shape != want.shape else "",
    mistakes={
        "the pixels that leave one edge come back in at the other (a wrap-around, as torch.roll does); the "
        "uncovered pixels must be 0": lambda x, dx, dy: torch.roll(x, shifts=(dy, dx), dims=(1, 2)),
        "the images move the opposite way: dx > 0 moves right and dy > 0 moves down":
            lambda x, dx, dy: _shifted(x, -dx, -dy),
        "dx and dy are swapped: dx moves along a row (to the right), dy down the columns":
            lambda x, dx, dy: _shifted(x, dy, dx),
    },
    hint="torch.roll wraps the pixels that leave one edge around to the other; a shift must fill the "
    "uncovered rows and columns with 0 instead. Start from zeros shaped like the images (zeros_like) and "
    "copy into them the part that stays in view: which rows and columns land where, for a positive and for "
    "a negative shift? (Or pad with zeros by F.pad and cut the window out.)",
), doc="""Check ``student(images, dx, dy)``: images ``[N, H, W]`` moved ``dx`` pixels right and ``dy`` down
    (negative: left, up), the uncovered pixels 0; the same shape back.""")


def _stopping(losses: Sequence[float], patience: int, mistake: str = "") -> tuple[int, int]:
    if mistake == "future":
        best_epoch = list(losses).index(min(losses)) + 1
        return best_epoch, min(best_epoch + patience, len(losses))
    best, best_epoch, last = math.inf, 0, len(losses)
    for epoch, loss in enumerate(losses, start=1):
        if loss < best or mistake == "ties" and loss == best:
            best, best_epoch = loss, epoch
        elif epoch - best_epoch >= patience:
            last = epoch
            break
    if mistake == "from 0":
        return best_epoch - 1, last - 1
    return best_epoch, min(last + 1, len(losses)) if mistake == "late" else last


early_stopping = define(CheckSpec(
    "early_stopping", _stopping, labels=("best_epoch", "last_epoch"),
    cases=lambda gen: [(f"losses {losses}, patience {p}", (losses, p)) for losses, p in [
        ([0.9, 0.7, 0.6, 0.65, 0.7, 0.8], 2), ([0.9, 0.7, 0.6, 0.65, 0.7, 0.8], 3), ([0.9, 0.8, 0.7, 0.6], 1),
        ([0.5, 0.5, 0.5], 2), ([1.0, 0.8, 0.9, 0.7, 0.75, 0.76, 0.77, 0.6], 3), ([0.4], 3),
        ([0.5, 0.6, 0.3, 0.2, 0.25], 1)]],
    mistakes=keyed(_stopping, {
        "ties": "a loss equal to the best one counts as an improvement; it must be lower",
        "future": "the best epoch is taken from the whole list of losses, as if training had seen the future; the "
        "best epoch is the best one seen before training stops",
        "from 0": "epochs are counted from 0; the first epoch is epoch 1",
        "late": "training stops one epoch too late",
    }),
    hint="count epochs from 1; an epoch improves only when its loss is below every earlier one (a tie is "
    "not an improvement); training ends at the first epoch that comes `patience` epochs after the last "
    "improvement, or at the last epoch when that never comes.",
), doc="""Check ``student(losses, patience) -> (best_epoch, last_epoch)``: early stopping on a list of
    validation losses, epochs counted from 1.""")


