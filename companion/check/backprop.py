"""Self-checks of chapter 3, backpropagation: a new operation of the autograd engine, the backward
pass of a linear layer, a numerical gradient, and what a numerical gradient of GPT-3 would cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from companion.check.core import (CheckResult, CheckSpec, Raised, Wrong, _self_check, aten, define, explain_difference,
                                  randn)
from companion.check.learning import AUTOGRAD_FORBIDDEN

__all__ = ["SOFTPLUS_FORBIDDEN", "finite_difference_cost", "linear_backward", "numerical_gradient", "softplus",
           "value_operation"]

SOFTPLUS_INPUTS = (-2.0, -0.5, 0.0, 0.3, 1.7, 30.0, -30.0, 800.0, -800.0)
SOFTPLUS_FORBIDDEN = ("torch.nn.functional.softplus", "torch.special.expit", "torch.nn.functional.sigmoid",
                      "torch.nn.functional.logsigmoid", "torch.special.log_expit",
                      *aten("softplus", "logaddexp", "logaddexp2", "sigmoid", "sigmoid_", "log_sigmoid",
                            "log_sigmoid_forward"))  # fmt: skip
"""PyTorch's softplus, log-add-exp, sigmoid and log-sigmoid, which the softplus exercise writes stably itself."""


def _apply_operation(student: Callable[[Any], Any], x: float) -> tuple[float, float] | None:
    """``(out.data, x.grad)`` after ``out = student(Value(x)); out.backward()``."""
    from companion.autograd import Value

    leaf = Value(x)
    out = student(leaf)
    if out is None:
        return None
    if not isinstance(out, Value):
        raise Wrong(f"expected a Value, got {type(out).__name__}")
    out.backward()
    return out.data, leaf.grad


def _slope_note(case: tuple, expected: Any, got: Any) -> str:
    if isinstance(got, Raised):
        return "e^x overflows a float for x above about 709.78." if "math range error" in got.message else ""
    if explain_difference(expected[0], got[0], 1e-9, 1e-12) is not None:
        return ""
    if got[1] == 0:
        return ("The result does not depend on the input in the graph: give it parents=(x,) and the local "
                "derivative in local_grads.")  # fmt: skip
    return "local_grads must hold the derivative of the output with respect to each parent."


def _operation_spec(
    name: str, torch_fn: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[float], hint: str = "",
    forbidden: tuple[str, ...] = (),
) -> CheckSpec:
    def reference(x: float) -> tuple[float, float]:
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        out = torch_fn(xt)
        return out.item(), torch.autograd.grad(out, xt)[0].item()

    return CheckSpec(name, reference, lambda gen: [(f"x = {x:g}", (x,)) for x in inputs], labels=("the value",
                     "the gradient"), apply=_apply_operation, diagnose=_slope_note, rtol=1e-9, atol=1e-12,
                     passed=f"value and gradient match torch at all {len(inputs)} inputs.", hint=hint,
                     forbidden=forbidden)  # fmt: skip


def value_operation(
    student: Callable[[Any], Any], torch_fn: Callable[[torch.Tensor], torch.Tensor], name: str = "value_operation",
    inputs: Sequence[float] = (-2.0, -0.5, 0.3, 1.7),
) -> CheckResult:  # fmt: skip
    """Check a new operation of ``companion.autograd``: ``out = student(Value(x)); out.backward()`` must
    give the value of ``torch_fn`` (the same function on a 0-d float64 tensor) and its derivative at
    each of ``inputs``, to 1e-9."""
    return _self_check(_operation_spec(name, torch_fn, inputs), (student,))


softplus = define(_operation_spec("softplus", torch.nn.functional.softplus, SOFTPLUS_INPUTS, hint=(
    "the derivative of softplus is a function of chapter 1, the sigmoid. For large |x| never exponentiate a "
    "large positive number: split off the larger of x and 0 and compute the rest with log1p of an exponential "
    "that cannot overflow; the sigmoid needs the same care on the negative side (see how Value.sigmoid does "
    "it)."), forbidden=SOFTPLUS_FORBIDDEN),
    doc="""Check ``student(v: Value) -> Value``: softplus with its backward rule, at moderate inputs and at ±30 and
    ±800, where a formula that exponentiates a large x overflows a float; PyTorch's softplus, sigmoid and log-add-exp
    raise while it runs.""")


def _linear_backward(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, grad_y: torch.Tensor) -> tuple:
    leaves = [t.clone().requires_grad_() for t in (x, W, b)]
    return torch.autograd.grad(leaves[0] @ leaves[1].T + leaves[2], leaves, grad_y)


def _averaged(case: tuple, expected: Any, got: Any) -> str:
    batch = len(case[0])
    for label, want, have in zip(("grad_x", "grad_W", "grad_b"), expected, got):
        if explain_difference(want, have, 1e-9, 1e-12) is None:
            continue
        if batch > 1 and explain_difference(want / batch, have, 1e-9, 1e-12) is None:
            return (f"{label} is the right answer divided by B: grad_y already holds each example's share of "
                    "∂L/∂y, so nothing needs averaging.")  # fmt: skip
        return "Each gradient has the shape of its variable." if getattr(have, "shape", None) != want.shape else ""
    return ""


linear_backward = define(CheckSpec(
    "linear_backward", _linear_backward, labels=("grad_x", "grad_W", "grad_b"), diagnose=_averaged,
    forbidden=AUTOGRAD_FORBIDDEN,
    rtol=1e-9, atol=1e-12, passed="3 of 3 cases match torch.autograd.",
    cases=lambda gen: [
        (f"B = {b}, n_in = {i}, n_out = {o}", tuple(randn(gen, *s) for s in [(b, i), (o, i), (o,), (b, o)]))
        for b, i, o in [(1, 3, 2), (5, 4, 3), (16, 10, 1)]
    ],
    hint="write one entry y_bj of the output as a sum over the inputs, Σ_i x_bi W_ji, plus b_j, and apply the "
    "chain rule entry by entry; each gradient has the shape of its variable, which tells you which matrix product, and "
    "which transpose, collects the sums; the bias touches every example of the batch.",
), doc="""Check ``student(x, W, b, grad_y) -> (grad_x, grad_W, grad_b)``: the backward pass of a linear layer
    ``y = x Wᵀ + b``, given ∂L/∂y, compared with autograd in float64. Shapes: ``x [B, n_in]``, ``W [n_out, n_in]``,
    ``b [n_out]``, ``grad_y [B, n_out]``; each gradient has the shape of its variable. Autograd raises while it runs.""")


def _numerical_cases(gen: torch.Generator) -> list:
    functions = [
        ("sum(sin(x)·x²)", lambda t: (t.sin() * t**2).sum(), (4,)),
        ("sum(exp(x/2)) + prod(x)", lambda t: (t / 2).exp().sum() + t.prod(), (2, 3)),
        ("x³ − 2x", lambda t: t**3 - 2 * t, ()),
    ]
    return [(f"f = {label}, x of shape {shape}", (f, randn(gen, *shape), 1e-5)) for label, f, shape in functions]


def _autograd_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float) -> torch.Tensor:
    leaf = x.clone().requires_grad_()
    return torch.autograd.grad(f(leaf), leaf)[0]


def _one_sided(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float) -> torch.Tensor:
    steps = torch.eye(x.numel(), dtype=x.dtype) * eps
    return torch.stack([(f(x + step.reshape(x.shape)) - f(x)) / eps for step in steps]).reshape(x.shape)


numerical_gradient = define(CheckSpec(
    "numerical_gradient", _autograd_gradient, _numerical_cases, forbidden=AUTOGRAD_FORBIDDEN, rtol=1e-7, atol=1e-9,
    mistakes={"a one-sided difference, whose error is of order ε; the exercise asks for the central difference, "
              "whose error is of order ε²": _one_sided},
    passed="3 of 3 functions match torch.autograd.",
    hint="go through the entries one flat index at a time: nudge that entry up by ε and down by ε, each on a "
    "copy so that x itself stays unchanged, and the central difference divides the change of f by 2ε; a flat "
    "view of a result shaped like x lets one index reach every entry, whatever the shape (0-d too).",
), doc="""Check ``student(f, x, eps) -> grad``: the central-difference estimate of the gradient of ``f`` at ``x``, a
    float64 tensor of any shape (0-d too), of the shape of ``x``; compared with autograd to 1e-7 at ε = 1e-5, which
    a one-sided difference does not reach. Autograd raises while the function runs.""")


_PASSES = 2 * 175e9
_YEAR = 365.25 * 24 * 3600
finite_difference_cost = define(CheckSpec(
    "finite_difference_cost", lambda: (_PASSES, _PASSES / _YEAR, 3.0), answers=3, rtol=1e-3,
    mistakes={"one forward pass per parameter, as a one-sided difference takes; the central difference takes "
              "two": lambda: (_PASSES / 2, _PASSES / 2 / _YEAR, 3.0)},
    labels=("the number of forward passes", "the number of years", "backpropagation's forward-pass equivalents"),
    passed="all three numbers are right.",
    hint="a central difference evaluates the loss twice for every parameter (nudged up and nudged down); a "
    "year has 365.25 × 24 × 3600 seconds. Backpropagation runs the network forward once, then backward, and "
    "the chapter's summary says what a backward pass costs in forward passes.",
), "passes", "years", "backprop_passes", doc="""Check three numbers: the forward passes one central-difference gradient
    of GPT-3 takes, how many years that is at one second per pass (to 0.1 %; a year of 365 or 365.25 days both
    pass), and about how many forward passes backpropagation's gradient costs, by the chapter's rule of thumb.""")
