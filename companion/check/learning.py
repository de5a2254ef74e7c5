"""Self-checks of chapter 2, loss and gradient descent.

Each check computes its expected answer itself. A failed check names the case and
how the answer is off (a shape, a sign, a factor, a percentage band, a mistake it
recognises) but never the expected numbers and never the method; the method is the
check's hint, shown by ``check.hint(name)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from companion.check.core import (
    PLACEHOLDER_MESSAGE,
    CheckResult,
    _as_array,
    _detached,
    _how_far,
    _run,
    register_hint,
)

__all__ = [
    "AUTOGRAD_FORBIDDEN",
    "largest_stable_learning_rate",
    "minibatch_epoch",
    "mse_gradients",
    "quadratic_gradients",
]

AUTOGRAD_FORBIDDEN = (
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.Tensor.backward",
    "torch.func.grad",
    "torch.func.vjp",
)
"""What an exercise that computes its gradients by hand may not call, autograd's entry points."""


def _how_outputs_differ(labels: Sequence[str], expected: Sequence[Any], got: Sequence[Any]) -> str | None:
    """``"label: how"`` for the first output of ``got`` that differs from ``expected`` (to 1e-9), else None.

    Says how it differs (shape, NaN, sign, factor, percentage band), never what it should be.
    """
    for label, want, have in zip(labels, expected, got):
        a, b = _as_array(want), _as_array(have)
        if b is None:
            return f"{label}: expected a number, got {type(have).__name__}"
        if a.shape != b.shape:
            return f"{label}: expected shape {a.shape}, got shape {b.shape}"
        if not np.all(np.isfinite(b)):
            return f"{label}: the result contains NaN or infinity"
        close = np.isclose(b, a, rtol=1e-9, atol=1e-12)
        if close.all():
            continue
        if a.ndim == 0:
            return f"{label}: {_how_far(float(a), float(b))}"
        where = tuple(int(i) for i in np.argwhere(~close)[0])
        return f"{label}: at index {where} {_how_far(float(a[where]), float(b[where]))}"
    return None


def _same_scale(expected: Sequence[Any], got: Sequence[Any], factor: float) -> bool:
    """True when every output of ``got`` is ``factor`` times the matching one of ``expected``."""
    want = np.concatenate([np.ravel(_as_array(w)) for w in expected])
    have = np.concatenate([np.ravel(_as_array(h)) for h in got])
    return bool(np.any(want) and np.allclose(have, factor * want, rtol=1e-6, atol=1e-12))


def _gradient_mistake(expected: Sequence[Any], got: Sequence[Any], n: int) -> str:
    """A sentence naming the usual mistake when ``got`` is a scaled copy of ``expected``, else ``""``."""
    known = {
        -1.0: "the sign is flipped (what is the sign of ∂e/∂θ for the error e = y − ŷ?)",
        0.5: "the factor 2 from differentiating the square is missing",
        -0.5: "the sign is flipped and the factor 2 is missing",
        float(n): "this is the gradient of the sum; the loss is a mean, so divide by N",
    }
    if n == 1:
        del known[1.0]
    for factor, text in known.items():
        if _same_scale(expected, got, factor):
            return f" All of it is {factor:g} times the right answer: {text}."
    return ""


def _results(student: Callable[..., Any], args: Sequence[Any], n: int, forbidden: Sequence[str] = ()) -> tuple | str:
    """``student(*args)`` as a tuple of ``n`` detached results, or a message saying what went wrong."""
    got, error = _run(student, args, forbidden)
    if error is not None:
        return error
    if got is None:
        return "returned None (is a `return` missing, or is the placeholder `...` still there?)"
    if isinstance(got, torch.Tensor) and got.shape == (n,):
        got = tuple(got)
    if not isinstance(got, (tuple, list)) or len(got) != n:
        return f"expected {n} results, got {type(got).__name__} {got!r}"
    return tuple(_detached(got))


def _mse_gradients(m: float, b: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = torch.tensor([m, b], dtype=torch.float64, requires_grad=True)
    loss = ((y - (params[0] * x + params[1])) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, params)
    return grad


def mse_gradients(student: Callable[[float, float, torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Check ``student(m, b, x, y) -> (∂L/∂m, ∂L/∂b)`` for network 1's mean squared error.

    L = (1/N) Σᵢ (yᵢ − (m·xᵢ + b))². ``m``, ``b``: floats; ``x``, ``y``: float64 tensors ``[N]``;
    the answer: two numbers (floats or 0-d tensors). Compared with ``torch.autograd`` to 1e-9 on
    chapter 2's example and on random data with N = 5, 1 and 100; a flipped sign, a missing
    factor 2 and a sum in place of the mean are named.
    """
    name = "mse_gradients"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(2)
    cases = [(-1.0, 5.0, torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 5.0], dtype=torch.float64))]
    for n in (5, 1, 100):
        x = torch.randn(n, generator=gen, dtype=torch.float64)
        y = 2 * x + 1 + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
        m, b = torch.randn(2, generator=gen, dtype=torch.float64).tolist()
        cases.append((m, b, x, y))
    for number, (m, b, x, y) in enumerate(cases, start=1):
        expected = tuple(_mse_gradients(m, b, x, y))
        where = f"case {number} (m = {m:.4g}, b = {b:.4g}, N = {len(x)})"
        got = _results(student, (m, b, x, y), 2)
        if isinstance(got, str):
            return CheckResult(name, False, f"{where} {got}")
        why = _how_outputs_differ(("∂L/∂m", "∂L/∂b"), expected, got)
        if why is not None:
            return CheckResult(name, False, f"{where}: {why}.{_gradient_mistake(expected, got, len(x))}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match torch.autograd.")


def _quadratic_gradients(a: float, b: float, c: float, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    params = torch.tensor([a, b, c], dtype=torch.float64, requires_grad=True)
    loss = ((y - (params[0] * x**2 + params[1] * x + params[2])) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, params)
    return tuple(grad)


def quadratic_gradients(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(a, b, c, x, y) -> (∂L/∂a, ∂L/∂b, ∂L/∂c)`` for the model ŷ = a·x² + b·x + c.

    L = (1/N) Σᵢ (yᵢ − ŷᵢ)². ``a``, ``b``, ``c``: floats; ``x``, ``y``: float64 tensors ``[N]``;
    the answer: three numbers (floats or 0-d tensors), derived by hand: ``torch.autograd``
    (:data:`AUTOGRAD_FORBIDDEN`) raises while the function runs. Compared with autograd to 1e-9
    on a small example, one example (N = 1), all-zero inputs, N = 100, and large inputs; a
    flipped sign, a missing factor 2 and a sum in place of the mean are named.
    """
    name = "quadratic_gradients"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(4)

    def rand(n: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(n, generator=gen, dtype=torch.float64)

    f64 = {"dtype": torch.float64}
    cases = [
        (0.5, -1.0, 2.0, torch.tensor([1.0, 2.0, 3.0], **f64), torch.tensor([3.0, 5.0, 7.0], **f64)),
        (1.5, 0.25, -1.0, torch.tensor([2.0], **f64), torch.tensor([-1.0], **f64)),
        (0.3, -0.7, 0.2, torch.zeros(4, **f64), rand(4)),
        (*rand(3).tolist(), rand(100), rand(100, 3.0)),
        (0.01, -0.5, 3.0, rand(6, 50.0), rand(6, 100.0)),
    ]
    labels = ("∂L/∂a", "∂L/∂b", "∂L/∂c")
    for number, (a, b, c, x, y) in enumerate(cases, start=1):
        expected = _quadratic_gradients(a, b, c, x, y)
        where = f"case {number} (a = {a:.4g}, b = {b:.4g}, c = {c:.4g}, N = {len(x)})"
        got = _results(student, (a, b, c, x, y), 3, AUTOGRAD_FORBIDDEN)
        if isinstance(got, str):
            return CheckResult(name, False, f"{where} {got}")
        why = _how_outputs_differ(labels, expected, got)
        if why is not None:
            return CheckResult(name, False, f"{where}: {why}.{_gradient_mistake(expected, got, len(x))}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match torch.autograd.")


def _steepest_curvature(x: Sequence[float]) -> float:
    """λ_max of the Hessian (2/N) Σᵢ [[xᵢ², xᵢ], [xᵢ, 1]] of network 1's MSE on the inputs ``x``."""
    xs = torch.tensor(x, dtype=torch.float64)
    one = torch.ones((), dtype=torch.float64)
    hessian = 2 * torch.stack([torch.stack([(xs**2).mean(), xs.mean()]), torch.stack([xs.mean(), one])])
    return torch.linalg.eigvalsh(hessian).max().item()


def largest_stable_learning_rate(answer: float, x: Sequence[float] = (1.0, 2.0)) -> CheckResult:
    """Check the largest learning rate η at which gradient descent on network 1's MSE still converges.

    ``x``: the training inputs (chapter 2's by default). An answer within 2 % of the limit
    counts, so a limit found by experiment is right too. A wrong answer is told whether
    gradient descent converges or diverges at it, and by how much (a percentage band) it
    is too high or too low; never the limit or the curvature it follows from.
    """
    name = "largest_stable_learning_rate"
    if answer is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or not math.isfinite(answer):
        return CheckResult(name, False, f"expected a finite number, got {type(answer).__name__} {answer!r}")
    if answer <= 0:
        return CheckResult(name, False, f"η = {answer:g} does not descend: a learning rate is positive.")
    limit = 2 / _steepest_curvature(x)
    if abs(answer - limit) <= 0.02 * limit:
        return CheckResult(name, True, "correct: below it gradient descent converges, above it it diverges.")
    how = _how_far(limit, answer)
    how = how[0].upper() + how[1:]
    if answer > limit:
        why = (f"at η = {answer:g} gradient descent diverges: every step overshoots the valley floor "
               f"further than the last. {how}")  # fmt: skip
    else:
        why = f"η = {answer:g} converges, but so do larger rates. {how}"
    return CheckResult(name, False, why + ".")


def _minibatch_epoch(
    m: float, b: float, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float, generator: torch.Generator
) -> tuple[float, float]:
    from companion import data

    for xb, yb in data.batches(x, y, batch_size, generator=generator):
        error = yb - (m * xb + b)
        m, b = m - lr * (-2 * xb * error).mean().item(), b - lr * (-2 * error).mean().item()
    return m, b


def minibatch_epoch(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(m, b, x, y, batch_size, lr, generator) -> (m, b)``: one epoch of mini-batch gradient descent.

    The epoch takes the batches of ``companion.data.batches(x, y, batch_size, generator=generator)``
    in turn and after each one moves m and b against the gradient of that batch's mean squared
    error, scaled by ``lr``. ``m``, ``b``: floats; ``x``, ``y``: float64 ``[N]``. The student and the
    reference get identically seeded generators, so they see the same batches; compared to 1e-9
    with batches of 8 (the last one shorter), 1, 7 and the whole data set.
    """
    name = "minibatch_epoch"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(3)
    x = 4 * torch.rand(30, generator=gen, dtype=torch.float64) - 2
    y = 2 * x + 1 + 0.5 * torch.randn(30, generator=gen, dtype=torch.float64)
    for number, batch_size in enumerate((8, 1, 7, 30), start=1):
        where = f"case {number} (N = 30, batch_size = {batch_size}, lr = 0.05)"
        expected = _minibatch_epoch(-1.0, 5.0, x, y, batch_size, 0.05, torch.Generator().manual_seed(number))
        seeded = torch.Generator().manual_seed(number)
        got = _results(student, (-1.0, 5.0, x, y, batch_size, 0.05, seeded), 2)
        if isinstance(got, str):
            return CheckResult(name, False, f"{where} {got}")
        why = _how_outputs_differ(("m", "b"), expected, got)
        if why is not None:
            one_step = _minibatch_epoch(-1.0, 5.0, x, y, len(x), 0.05, torch.Generator().manual_seed(number))
            hint = (" That is one step on the whole data set: take a step after every batch."
                    if _how_outputs_differ(("m", "b"), one_step, got) is None
                    else "")  # fmt: skip
            return CheckResult(name, False, f"{where}: after the epoch, {why}.{hint}")
    return CheckResult(name, True, "4 of 4 cases match the reference epoch.")


register_hint(
    "mse_gradients",
    "write one term as e² with e = y − (m·x + b); the chain rule gives 2e · ∂e/∂m = −2x·e and "
    "2e · ∂e/∂b = −2e; then take the mean over the examples, as the loss does.",
)
register_hint(
    "quadratic_gradients",
    "write one term as e² with e = y − (a·x² + b·x + c); the chain rule gives 2e times ∂e/∂a = −x², "
    "∂e/∂b = −x and ∂e/∂c = −1; then take the mean over the examples, as the loss does.",
)
register_hint(
    "largest_stable_learning_rate",
    "the loss is quadratic in (m, b) with Hessian H = (2/N) Σ [[x², x], [x, 1]]; a step multiplies the "
    "error along an eigenvector of H by (1 − ηλ), so the steps converge while |1 − ηλ_max| < 1, "
    "that is for η < 2/λ_max (torch.linalg.eigvalsh gives λ). Or try rates and watch the loss.",
)
register_hint(
    "minibatch_epoch",
    "loop `for xb, yb in data.batches(x, y, batch_size, generator=generator):`, compute the MSE "
    "gradients on xb, yb, and update m and b inside the loop, after every batch.",
)
