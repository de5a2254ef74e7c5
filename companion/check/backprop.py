"""Self-checks of chapter 3, backpropagation.

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

from companion.check.core import (
    PLACEHOLDER_MESSAGE,
    CheckResult,
    _as_array,
    _detached,
    _how_far,
    _run,
    register_hint,
    value,
)

__all__ = [
    "GRADIENT_FORBIDDEN",
    "finite_difference_cost",
    "linear_backward",
    "numerical_gradient",
    "softplus",
    "value_operation",
]

GRADIENT_FORBIDDEN = (
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.Tensor.backward",
    "torch.autograd.functional.jacobian",
    "torch.func.grad",
    "torch.func.vjp",
)
"""What an exercise that computes a gradient itself may not call, autograd's entry points."""

_NONE_RETURNED = "the function returned None (is a `return` missing, or is the placeholder `...` still there?)"


def _difference(expected: Any, got: Any, rtol: float = 1e-6, atol: float = 1e-8) -> str | None:
    """None when ``got`` matches ``expected`` to ``rtol``/``atol``, else how it differs.

    Says how (shape, NaN or infinity, sign, factor, percentage band, at which index),
    never what the expected value is.
    """
    want, have = _as_array(expected), _as_array(got)
    if want is None:
        raise TypeError(f"the expected answer must be numeric; got {type(expected).__name__}")
    if have is None:
        return f"expected a number or a tensor, got {type(got).__name__}"
    if want.shape != have.shape:
        return f"expected shape {want.shape}, got shape {have.shape}"
    if not np.all(np.isfinite(have)) and np.all(np.isfinite(want)):
        return "the result contains NaN or infinity"
    close = np.isclose(have, want, rtol=rtol, atol=atol)
    if close.all():
        return None
    if want.ndim == 0:
        return _how_far(float(want), float(have))
    if np.any(want) and np.all(want[~close] != 0):
        ratios = have[~close] / want[~close]
        if np.allclose(ratios, ratios[0], rtol=1e-6) and np.allclose(have, ratios[0] * want, rtol=rtol, atol=atol):
            return f"every entry is off the same way: {_how_far(1.0, float(ratios[0]))}"
    where = np.unravel_index(np.argmax(np.abs(have - want) * ~close), want.shape)
    index = tuple(int(i) for i in where)
    return (
        f"{int((~close).sum())} of {want.size} entries differ; at index {index} "
        f"{_how_far(float(want[where]), float(have[where]))}"
    )


def value_operation(
    student: Callable[[Any], Any],
    torch_fn: Callable[[torch.Tensor], torch.Tensor],
    name: str = "value_operation",
    inputs: Sequence[float] = (-2.0, -0.5, 0.3, 1.7),
) -> CheckResult:
    """Check a new operation of ``companion.autograd``: its value and its backward rule.

    For each x in ``inputs``: ``out = student(Value(x)); out.backward()`` must give
    ``out.data == torch_fn(x)`` and leave the derivative d torch_fn/dx in the input's ``grad``,
    both to 1e-9 relative, 1e-12 absolute (float64). ``torch_fn``: the same function on a
    0-d float64 tensor.
    """
    from companion.autograd import Value

    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    for x in inputs:
        leaf, xt = Value(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)
        want = torch_fn(xt)
        (slope,) = torch.autograd.grad(want, xt)
        where = f"at x = {x:g}"
        out, error = _run(student, (leaf,))
        if error is not None:
            if "math range error" in error:
                error += "; e^x overflows a float for x above about 709.78"
            return CheckResult(name, False, f"{where} it {error}.")
        if out is None:
            return CheckResult(name, False, f"{where}: {_NONE_RETURNED}")
        if not isinstance(out, Value):
            return CheckResult(name, False, f"{where}: expected a Value, got {type(out).__name__} {out!r}")
        _, error = _run(out.backward, ())
        if error is not None:
            return CheckResult(name, False, f"{where}: backward() {error}")
        why = _difference(want.item(), out.data, rtol=1e-9, atol=1e-12)
        if why is not None:
            return CheckResult(name, False, f"{where} the value is wrong: {why}.")
        why = _difference(slope.item(), leaf.grad, rtol=1e-9, atol=1e-12)
        if why is not None:
            if leaf.grad == 0 and not out.parents:
                hint = (" The result does not depend on the input in the graph: give it parents=(x,) "
                        "and the local derivative in local_grads.")  # fmt: skip
            else:
                hint = " local_grads must hold the derivative of the output with respect to each parent."
            return CheckResult(name, False, f"{where} the value is right but the gradient is wrong: {why}.{hint}")
    return CheckResult(name, True, f"value and gradient match torch at all {len(inputs)} inputs.")


SOFTPLUS_INPUTS = (-2.0, -0.5, 0.0, 0.3, 1.7, 30.0, -30.0, 800.0, -800.0)


def softplus(student: Callable[[Any], Any]) -> CheckResult:
    """Check ``student(v: Value) -> Value``: softplus ``ln(1 + e^x)`` with its backward rule.

    :func:`value_operation` against ``torch.nn.functional.softplus`` at moderate inputs, then at
    ±30 and ±800, where a formula that evaluates ``e^x`` for a large x overflows a float.
    """
    return value_operation(student, torch.nn.functional.softplus, "softplus", SOFTPLUS_INPUTS)


def linear_backward(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(x, W, b, grad_y) -> (grad_x, grad_W, grad_b)``: the backward pass of ``y = x Wᵀ + b``.

    Shapes: ``x [B, n_in]``, ``W [n_out, n_in]``, ``b [n_out]``, ``grad_y = ∂L/∂y [B, n_out]``; the
    three gradients ∂L/∂x, ∂L/∂W, ∂L/∂b have the shapes of x, W and b. Compared with
    ``torch.autograd`` in float64 to 1e-9, for a single example (B = 1), batches, and one output.
    """
    name = "linear_backward"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(4)
    for number, (batch, n_in, n_out) in enumerate([(1, 3, 2), (5, 4, 3), (16, 10, 1)], start=1):
        x, W, b, grad_y = (torch.randn(*shape, generator=gen, dtype=torch.float64)
                           for shape in [(batch, n_in), (n_out, n_in), (n_out,), (batch, n_out)])  # fmt: skip
        leaves = [t.clone().requires_grad_() for t in (x, W, b)]
        expected = torch.autograd.grad(leaves[0] @ leaves[1].T + leaves[2], leaves, grad_y)
        where = f"case {number} (B = {batch}, n_in = {n_in}, n_out = {n_out})"
        got, error = _run(student, (x, W, b, grad_y))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if got is None:
            return CheckResult(name, False, f"{where}: {_NONE_RETURNED}")
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            count = len(got) if isinstance(got, (tuple, list)) else f"one {type(got).__name__}"
            return CheckResult(name, False, f"{where}: expected three gradients (grad_x, grad_W, grad_b), got {count}")
        for label, want, have in zip(("grad_x", "grad_W", "grad_b"), expected, _detached(got)):
            why = _difference(want, have, rtol=1e-9, atol=1e-12)
            if why is None:
                continue
            hint = " Each gradient has the shape of its variable." if why.startswith("expected shape") else ""
            have_array = _as_array(have)
            if batch > 1 and have_array is not None and have_array.shape == tuple(want.shape):
                if np.allclose(have_array, want.numpy() / batch, rtol=1e-9, atol=1e-12):
                    hint = (" It is the right answer divided by B: grad_y already holds each example's share "
                            "of ∂L/∂y, so nothing needs averaging.")  # fmt: skip
            return CheckResult(name, False, f"{where}: {label}: {why}.{hint}")
    return CheckResult(name, True, "3 of 3 cases match torch.autograd.")


def _one_sided(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float) -> torch.Tensor:
    """The forward difference ``(f(x + ε eᵢ) − f(x)) / ε`` for every entry, shape of ``x``."""
    flat = x.reshape(-1)
    steps = torch.eye(flat.numel(), dtype=x.dtype) * eps
    return torch.stack([(f((flat + step).reshape(x.shape)) - f(x)) / eps for step in steps]).reshape(x.shape)


def numerical_gradient(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(f, x, eps) -> grad``: the central-difference estimate of ∇f at x.

    ``f`` maps a float64 tensor ``x`` (any shape, also 0-d) to a 0-d tensor; ``grad`` has the
    shape of ``x``, ``grad[i] = (f(x + ε·eᵢ) − f(x − ε·eᵢ)) / 2ε``. Compared with
    ``torch.autograd`` to 1e-7 (relative) at ε = 1e-5, which a one-sided difference, accurate only
    to O(ε), does not reach. Autograd's entry points (:data:`GRADIENT_FORBIDDEN`) raise while the
    student's function runs.
    """
    name = "numerical_gradient"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(5)
    functions = [
        ("sum(sin(x)·x²)", lambda t: (t.sin() * t**2).sum(), (4,)),
        ("sum(exp(x/2)) + prod(x)", lambda t: (t / 2).exp().sum() + t.prod(), (2, 3)),
        ("x³ − 2x", lambda t: t**3 - 2 * t, ()),
    ]
    for label, f, shape in functions:
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        leaf = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(f(leaf), leaf)
        where = f"f = {label}, x of shape {tuple(shape)}"
        got, error = _run(student, (f, x, 1e-5), forbidden=GRADIENT_FORBIDDEN)
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if got is None:
            return CheckResult(name, False, f"{where}: {_NONE_RETURNED}")
        why = _difference(expected, _detached([got])[0], rtol=1e-7, atol=1e-9)
        if why is not None:
            hint = ""
            if _difference(_one_sided(f, x, 1e-5), _detached([got])[0], rtol=1e-9, atol=1e-12) is None:
                hint = (" It matches a one-sided difference, whose error is of order ε; the exercise asks "
                        "for the central difference, whose error is of order ε².")  # fmt: skip
            return CheckResult(name, False, f"{where}: {why}.{hint}")
    return CheckResult(name, True, f"{len(functions)} of {len(functions)} functions match torch.autograd.")


GPT3_PARAMETERS = 175e9
SECONDS_PER_YEAR = 365.25 * 24 * 3600


def finite_difference_cost(passes: Any, years: Any) -> CheckResult:
    """Check two numbers: the forward passes one central-difference gradient of GPT-3 takes
    (175 billion parameters), and how many years that is at one second per pass.

    The passes must be right to 0.1 %, the years to 1 % (a year of 365 or 365.25 days both pass).
    """
    name = "finite_difference_cost"
    if passes is Ellipsis or years is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    want_passes = 2 * GPT3_PARAMETERS
    for label, answer, expected, rtol in (
        ("the number of forward passes", passes, want_passes, 1e-3),
        ("the number of years", years, want_passes / SECONDS_PER_YEAR, 1e-2),
    ):
        result = value(name, answer, expected, rtol=rtol)
        if not result:
            return CheckResult(name, False, f"{label}: {result.message}")
    return CheckResult(name, True, "both numbers are right.")


register_hint(
    "value_operation",
    "the new Value holds f(x) in data, parents=(x,), and local_grads=(f'(x),): the derivative of the "
    "operation at the input's value.",
)
register_hint(
    "softplus",
    "d/dx ln(1 + e^x) = e^x / (1 + e^x) = 1 / (1 + e^(−x)), the sigmoid. For large |x| never evaluate "
    "e^x of a large positive x: softplus(x) = max(x, 0) + log1p(e^(−|x|)), and the sigmoid is "
    "1 / (1 + e^(−x)) for x ≥ 0 and e^x / (1 + e^x) for x < 0 (or use Value.sigmoid's formula).",
)
register_hint(
    "linear_backward",
    "write y_bj = Σ_i x_bi W_ji + b_j and apply the chain rule: ∂L/∂x = grad_y @ W, ∂L/∂W = grad_yᵀ @ x, "
    "∂L/∂b = grad_y summed over the batch; each gradient has the shape of its variable.",
)
register_hint(
    "numerical_gradient",
    "for each flat index i: copy x, add ε to entry i for one copy and subtract it for another "
    "(x.reshape(-1) gives a flat view of a copy), and store (f(x + ε eᵢ) − f(x − ε eᵢ)) / 2ε at "
    "index i of a tensor shaped like x (grad.view(-1)[i] = ...).",
)
register_hint(
    "finite_difference_cost",
    "a central difference evaluates the loss twice for every parameter (nudged up and nudged down); a year "
    "has 365.25 × 24 × 3600 seconds.",
)
