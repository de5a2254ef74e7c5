"""Self-checks for the exercises: run a student's function, compare it with the reference, explain.

Every check returns a :class:`CheckResult`, which is truthy when the answer is
right and displays as a short report in a notebook::

    >>> from companion import check
    >>> check.neuron_forward(my_neuron)       # doctest: +SKIP
    ✅ neuron_forward: 5 of 5 cases match the reference.

A wrong answer gets the first case that differs, what was expected, what
came, and a hint. The core is :func:`compare`; each chapter's checks below
are thin wrappers that supply the reference and the test cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a self-check: ``passed`` and a message that explains it."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"

    def __repr__(self) -> str:
        return str(self)


def _as_array(value: Any) -> np.ndarray | None:
    """``value`` as a float64 NumPy array, or None when it is not numeric."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    if isinstance(value, bool):
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array


def explain_difference(expected: Any, got: Any, rtol: float = 1e-6, atol: float = 1e-8) -> str | None:
    """None when ``got`` matches ``expected`` (numbers, arrays or tensors to ``rtol``/``atol``), else why not.

    Match means ``|got - expected| <= atol + rtol * |expected|`` element-wise, with equal shapes.
    """
    want, have = _as_array(expected), _as_array(got)
    if want is None:
        return None if got == expected else f"expected {expected!r}, got {got!r}"
    if have is None:
        return f"expected a number or array like {expected!r}, got {type(got).__name__} {got!r}"
    if want.shape != have.shape:
        return f"expected shape {want.shape}, got shape {have.shape}"
    if not np.all(np.isfinite(have)) and np.all(np.isfinite(want)):
        return f"the result contains NaN or infinity: {have}"
    close = np.isclose(have, want, rtol=rtol, atol=atol)
    if close.all():
        return None
    if want.ndim == 0:
        return f"expected {want.item():.6g}, got {have.item():.6g}"
    where = np.unravel_index(np.argmax(np.abs(have - want) * ~close), want.shape)
    return (
        f"{int((~close).sum())} of {want.size} entries differ; the largest difference is at index "
        f"{tuple(int(i) for i in where)}: expected {want[where]:.6g}, got {have[where]:.6g}"
    )


def _describe(args: Sequence[Any]) -> str:
    parts = []
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.numel() > 6:
            parts.append(f"tensor of shape {tuple(arg.shape)}")
        else:
            parts.append(repr(arg))
    return ", ".join(parts)


def _fresh(args: Sequence[Any]) -> list[Any]:
    """``args`` with every tensor cloned, so a function that modifies its input spoils nothing."""
    return [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args]


def _run(student: Callable[..., Any], args: Sequence[Any]) -> tuple[Any, str | None]:
    """``(student(*args), None)`` on fresh copies of the tensors, or ``(None, "raised …")`` if it raises."""
    try:
        return student(*_fresh(args)), None
    except Exception as err:  # the student's code may fail in any way: report it, don't crash
        return None, f"raised {type(err).__name__}: {err}"


def compare(
    name: str,
    student: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Iterable[Sequence[Any]],
    rtol: float = 1e-6,
    atol: float = 1e-8,
    hint: str = "",
) -> CheckResult:
    """Call ``student(*case)`` and ``reference(*case)`` on every case and compare the results.

    Stops at the first case that raises or differs, and says which case it
    was, what was expected and what came. Tensors in a case are cloned for
    each call, so a function that modifies its input cannot spoil the reference.
    """
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    cases = [tuple(case) for case in cases]
    for number, case in enumerate(cases, start=1):
        expected = reference(*_fresh(case))
        got, error = _run(student, case)
        if error is not None:
            return CheckResult(name, False, f"case {number} ({_describe(case)}) {error}")
        why = explain_difference(expected, got, rtol, atol)
        if why is not None:
            extra = f" Hint: {hint}" if hint else ""
            return CheckResult(name, False, f"case {number} ({_describe(case)}): {why}.{extra}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


def value(name: str, answer: Any, expected: Any, hint: str = "", rtol: float = 1e-6) -> CheckResult:
    """Check a single answer (a number, array or tensor) against the expected one."""
    why = explain_difference(expected, answer, rtol=rtol)
    if why is None:
        return CheckResult(name, True, "correct.")
    return CheckResult(name, False, why + (f". Hint: {hint}" if hint else "."))


# ---------------------------------------------------------------------------
# Chapter 1: neurons and networks
# ---------------------------------------------------------------------------


def _reference_neuron(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    return torch.relu(x @ w + b)


def neuron_forward(student: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(x, w, b)``: a ReLU neuron, ``relu(x · w + b)``.

    Shapes: ``x [..., n]``, ``w [n]``, ``b []`` → ``[...]``; cases include one
    input vector, a batch of them, and negative pre-activations.
    """
    gen = torch.Generator().manual_seed(0)
    cases = [
        (torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.25]), torch.tensor(0.1)),
        (torch.tensor([1.0, 2.0]), torch.tensor([-0.5, -0.25]), torch.tensor(0.1)),
        (torch.randn(3, generator=gen), torch.randn(3, generator=gen), torch.randn((), generator=gen)),
        (torch.randn(8, 4, generator=gen), torch.randn(4, generator=gen), torch.randn((), generator=gen)),
        (torch.randn(5, 784, generator=gen), torch.randn(784, generator=gen) * 0.05, torch.tensor(-0.2)),
    ]
    return compare(
        "neuron_forward",
        student,
        _reference_neuron,
        cases,
        rtol=1e-5,
        atol=1e-6,
        hint="weighted sum x·w, plus the bias b, then ReLU (max(0, ·)); it must work on a batch [..., n] too.",
    )


def mlp_parameter_count(sizes: Sequence[int]) -> int:
    """Parameters of a fully connected network with layer widths ``sizes`` (inputs first).

    Each layer ``n_in → n_out`` has ``n_in·n_out`` weights and ``n_out`` biases:
    ``Σ_l (n_{l-1} + 1)·n_l``.
    """
    if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must list at least two positive int widths, inputs first; got {sizes!r}")
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def parameter_count(answer: int, sizes: Sequence[int]) -> CheckResult:
    """Check a hand count of the parameters of a fully connected network with widths ``sizes``."""
    expected = mlp_parameter_count(sizes)
    name = f"parameter_count({list(sizes)})"
    if answer == expected:
        return CheckResult(name, True, f"correct: {expected:,} parameters.")
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    biases = sum(sizes[1:])
    if answer == weights:
        why = "you counted the weights but not the biases (one per neuron)"
    elif answer == weights + sum(sizes):
        why = "the input layer has no biases: its 'neurons' only hold the inputs"
    elif isinstance(answer, (int, float)) and not math.isnan(answer):
        why = f"off by {answer - expected:+,}"
    else:
        why = f"expected an int, got {type(answer).__name__}"
    return CheckResult(
        name, False, f"{why}. A layer n_in → n_out has n_in·n_out weights and n_out biases "
        f"(here {weights:,} weights + {biases:,} biases)."
    )


NETWORK_2_PARAMETERS = ("w111", "w112", "b11", "w121", "w122", "b12", "w21", "w22", "b2")


def network_2_relu(params: dict[str, float], x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Chapter 1's network 2 with ReLU hidden neurons, from its nine named parameters.

    ``h_j = relu(w_1j1·x1 + w_1j2·x2 + b_1j)`` for j = 1, 2; ``ŷ = w21·h1 + w22·h2 + b2``.
    Shapes: ``x1``, ``x2`` any equal shape → the same shape.
    """
    h1 = torch.relu(params["w111"] * x1 + params["w112"] * x2 + params["b11"])
    h2 = torch.relu(params["w121"] * x1 + params["w122"] * x2 + params["b12"])
    return params["w21"] * h1 + params["w22"] * h2 + params["b2"]


def network_2(
    params: dict[str, float], target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> CheckResult:
    """Check that network 2 with ReLU and these nine parameters computes ``target(x1, x2)``.

    Compared on a 21 x 21 grid over [-2, 2]² in float64.
    """
    name = "network_2"
    if not isinstance(params, dict):
        return CheckResult(name, False, f"expected a dict of the nine parameters, got {type(params).__name__}")
    missing = [key for key in NETWORK_2_PARAMETERS if key not in params]
    unknown = sorted(set(params) - set(NETWORK_2_PARAMETERS))
    if missing or unknown:
        return CheckResult(
            name, False, f"the parameters must be exactly {', '.join(NETWORK_2_PARAMETERS)}; "
            f"missing: {missing or 'none'}, unknown: {unknown or 'none'}"
        )
    grid = torch.linspace(-2, 2, 21, dtype=torch.float64)
    x1, x2 = (g.reshape(-1) for g in torch.meshgrid(grid, grid, indexing="ij"))
    got = network_2_relu({k: float(v) for k, v in params.items()}, x1, x2)
    want = target(x1, x2)
    wrong = ~torch.isclose(got, want, rtol=1e-9, atol=1e-9)
    if not wrong.any():
        return CheckResult(name, True, f"matches the target on all {len(x1)} grid points.")
    i = int(wrong.nonzero()[0])
    return CheckResult(
        name, False, f"{int(wrong.sum())} of {len(x1)} grid points differ; e.g. at x1 = {x1[i]:g}, "
        f"x2 = {x2[i]:g} the target is {want[i]:.4g} but the network gives {got[i]:.4g}."
    )


# ---------------------------------------------------------------------------
# Chapters 2 and 3: gradient descent and backpropagation
# ---------------------------------------------------------------------------


def _diagnose_scale(expected: Any, got: Any, known: dict[float, str]) -> str:
    """A hint when ``got`` is ``factor · expected`` for one of the ``known`` factors, else ``""``."""
    want, have = _as_array(expected), _as_array(got)
    if want is None or have is None or want.shape != have.shape or not np.any(want):
        return ""
    for factor, hint in known.items():
        if np.allclose(have, factor * want, rtol=1e-6, atol=1e-12):
            return f" It is {factor:g} times the right answer: {hint}."
    return ""


def _detached(answer: Any) -> Any:
    """A tuple or list of numbers and tensors with every tensor detached from autograd's graph."""
    if isinstance(answer, (tuple, list)):
        return [a.detach() if isinstance(a, torch.Tensor) else a for a in answer]
    return answer


def _mse_gradients(m: float, b: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = torch.tensor([m, b], dtype=torch.float64, requires_grad=True)
    loss = ((y - (params[0] * x + params[1])) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, params)
    return grad


def mse_gradients(student: Callable[[float, float, torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Check ``student(m, b, x, y) -> (∂L/∂m, ∂L/∂b)`` for network 1's mean squared error.

    L = (1/N) Σᵢ (yᵢ − (m·xᵢ + b))². ``m``, ``b``: floats; ``x``, ``y``: float64 tensors ``[N]``;
    the answer: two numbers (floats or 0-d tensors). Compared with ``torch.autograd`` to 1e-9 on
    chapter 2's example and on random data with N = 1, 5 and 100; a flipped sign, a missing
    factor 2 and a sum in place of the mean are named.
    """
    name = "mse_gradients"
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
        expected = _mse_gradients(m, b, x, y)
        where = f"case {number} (m = {m:.4g}, b = {b:.4g}, N = {len(x)})"
        got, error = _run(lambda *args: _detached(student(*args)), (m, b, x, y))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        why = explain_difference(expected, got, rtol=1e-9, atol=1e-12)
        if why is not None:
            hint = _diagnose_scale(expected, got, {
                -1.0: "the sign is flipped; the derivative of (y − ŷ)² with respect to ŷ is −2(y − ŷ)",
                0.5: "the factor 2 from differentiating the square is missing",
                -0.5: "the sign is flipped and the factor 2 is missing",
                float(len(x)): "this is the gradient of the sum; the loss is a mean, so divide by N",
            })  # fmt: skip
            return CheckResult(name, False, f"{where}: expected (∂L/∂m, ∂L/∂b), {why}.{hint}")
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match torch.autograd.")


def largest_stable_learning_rate(answer: float, x: Sequence[float] = (1.0, 2.0)) -> CheckResult:
    """Check the largest learning rate η at which gradient descent on network 1's MSE still converges.

    The loss is quadratic in (m, b) with Hessian H = (2/N) Σᵢ [[xᵢ², xᵢ], [xᵢ, 1]]: each step
    multiplies the error along an eigenvector of H by (1 − ηλ), so the steps converge for
    η < 2/λ_max and diverge above. ``x``: the training inputs (chapter 2's by default). An answer
    within 2 % of the limit counts, so a limit found by experiment is right too.
    """
    name = "largest_stable_learning_rate"
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or not math.isfinite(answer):
        return CheckResult(name, False, f"expected a finite number, got {type(answer).__name__} {answer!r}")
    xs = torch.tensor(x, dtype=torch.float64)
    one = torch.ones((), dtype=torch.float64)
    hessian = 2 * torch.stack([torch.stack([(xs**2).mean(), xs.mean()]), torch.stack([xs.mean(), one])])
    steepest = torch.linalg.eigvalsh(hessian).max().item()
    limit = 2 / steepest
    factor = abs(1 - answer * steepest)
    if abs(answer - limit) <= 0.02 * limit:
        return CheckResult(name, True, f"correct: gradient descent converges for η < {limit:.4f} and diverges above.")
    if answer > limit:
        why = (f"at η = {answer:g} gradient descent diverges: along the loss valley's steepest direction "
               f"(curvature λ_max = {steepest:.4f}) each step multiplies the error by "
               f"|1 − ηλ_max| = {factor:.3f} > 1")  # fmt: skip
    else:
        why = (f"η = {answer:g} converges, but so do larger rates: along the steepest direction each step "
               f"multiplies the error by |1 − ηλ_max| = {factor:.3f} < 1. "
               "Raise η until that factor reaches 1")  # fmt: skip
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
    reference get identically seeded generators, so they see the same batches; compared to 1e-9.
    """
    name = "minibatch_epoch"
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(3)
    x = 4 * torch.rand(30, generator=gen, dtype=torch.float64) - 2
    y = 2 * x + 1 + 0.5 * torch.randn(30, generator=gen, dtype=torch.float64)
    for number, batch_size in enumerate((8, 1, 7, 30), start=1):
        where = f"case {number} (N = 30, batch_size = {batch_size}, lr = 0.05)"
        expected = _minibatch_epoch(-1.0, 5.0, x, y, batch_size, 0.05, torch.Generator().manual_seed(number))
        seeded = torch.Generator().manual_seed(number)
        got, error = _run(lambda *args: _detached(student(*args)), (-1.0, 5.0, x, y, batch_size, 0.05, seeded))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        why = explain_difference(torch.tensor(expected, dtype=torch.float64), got, rtol=1e-9, atol=1e-12)
        if why is not None:
            one_step = _minibatch_epoch(-1.0, 5.0, x, y, len(x), 0.05, torch.Generator().manual_seed(number))
            hint = (" That is one step on the whole data set: take a step after every batch."
                    if explain_difference(torch.tensor(one_step, dtype=torch.float64), got, rtol=1e-9) is None
                    else "")  # fmt: skip
            return CheckResult(name, False, f"{where}: expected (m, b) after the epoch, {why}.{hint}")
    return CheckResult(name, True, "4 of 4 cases match the reference epoch.")


def value_operation(
    student: Callable[[Any], Any],
    torch_fn: Callable[[torch.Tensor], torch.Tensor],
    name: str = "value_operation",
    inputs: Sequence[float] = (-2.0, -0.5, 0.3, 1.7),
) -> CheckResult:
    """Check a new operation of ``companion.autograd``: its value and its backward rule.

    For each x in ``inputs``: ``out = student(Value(x)); out.backward()`` must give
    ``out.data == torch_fn(x)`` and leave the derivative d torch_fn/dx in the input's ``grad``,
    both to 1e-9 (float64). ``torch_fn``: the same function on a float64 tensor.
    """
    from companion.autograd import Value

    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    for x in inputs:
        leaf, xt = Value(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)
        want = torch_fn(xt)
        (slope,) = torch.autograd.grad(want, xt)
        try:
            out = student(leaf)
            if not isinstance(out, Value):
                return CheckResult(name, False, f"at x = {x:g}: expected a Value, got {type(out).__name__} {out!r}")
            out.backward()
        except Exception as err:  # the student's code may fail in any way: report it, don't crash
            return CheckResult(name, False, f"at x = {x:g} it raised {type(err).__name__}: {err}")
        if explain_difference(want.item(), out.data, rtol=1e-9, atol=1e-12) is not None:
            return CheckResult(
                name, False, f"at x = {x:g} the value is wrong: expected {want.item():.6g}, got {out.data:.6g}."
            )
        if explain_difference(slope.item(), leaf.grad, rtol=1e-9, atol=1e-12) is not None:
            hint = (" The result does not depend on the input in the graph: give it parents=(x,) and "
                    "local_grads=(d out/dx,)." if leaf.grad == 0 and not out.parents else
                    " local_grads must hold the derivative of the output with respect to each parent.")  # fmt: skip
            return CheckResult(
                name, False, f"at x = {x:g} the gradient is wrong: expected d/dx = {slope.item():.6g}, "
                f"got {leaf.grad:.6g}.{hint}"
            )
    return CheckResult(name, True, f"value and gradient match torch at all {len(inputs)} inputs.")


def linear_backward(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(x, W, b, grad_y) -> (grad_x, grad_W, grad_b)``: the backward pass of ``y = x Wᵀ + b``.

    Shapes: ``x [B, n_in]``, ``W [n_out, n_in]``, ``b [n_out]``, ``grad_y = ∂L/∂y [B, n_out]``; the
    three gradients ∂L/∂x, ∂L/∂W, ∂L/∂b have the shapes of x, W and b. Compared with
    ``torch.autograd`` in float64 to 1e-9, for single examples and batches.
    """
    name = "linear_backward"
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(4)
    for number, (batch, n_in, n_out) in enumerate([(1, 3, 2), (5, 4, 3), (16, 10, 1)], start=1):
        x, W, b, grad_y = (torch.randn(*shape, generator=gen, dtype=torch.float64)
                           for shape in [(batch, n_in), (n_out, n_in), (n_out,), (batch, n_out)])  # fmt: skip
        leaves = [t.clone().requires_grad_() for t in (x, W, b)]
        expected = torch.autograd.grad(leaves[0] @ leaves[1].T + leaves[2], leaves, grad_y)
        where = f"case {number} (B = {batch}, n_in = {n_in}, n_out = {n_out})"
        got, error = _run(lambda *args: tuple(student(*args)), (x, W, b, grad_y))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if len(got) != 3:
            return CheckResult(
                name, False, f"{where}: expected three gradients (grad_x, grad_W, grad_b), got {len(got)}"
            )
        for label, want, have in zip(("grad_x", "grad_W", "grad_b"), expected, got):
            why = explain_difference(want, have, rtol=1e-9, atol=1e-12)
            if why is not None:
                hint = " Each gradient has the shape of its variable." if why.startswith("expected shape") else ""
                hint += _diagnose_scale(want, have, {
                    1 / batch: "you averaged over the batch, but grad_y already holds each example's share of "
                    "∂L/∂y; sum over the batch instead",
                })  # fmt: skip
                return CheckResult(name, False, f"{where}: {label}: {why}.{hint}")
    return CheckResult(name, True, "3 of 3 cases match torch.autograd.")


def numerical_gradient(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(f, x, eps) -> grad``: the central-difference estimate of ∇f at x.

    ``f`` maps a float64 tensor ``x`` (any shape) to a 0-d tensor; ``grad`` has the shape of ``x``,
    ``grad[i] = (f(x + ε·eᵢ) − f(x − ε·eᵢ)) / 2ε``. Compared with ``torch.autograd`` to 1e-7
    (relative) at ε = 1e-5, which a one-sided difference, accurate only to O(ε), does not reach.
    """
    name = "numerical_gradient"
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(5)
    functions = [
        ("sum(sin(x)·x²)", lambda t: (t.sin() * t**2).sum(), (4,)),
        ("sum(exp(x/2)) + prod(x)", lambda t: (t / 2).exp().sum() + t.prod(), (2, 3)),
    ]
    for label, f, shape in functions:
        x = torch.randn(*shape, generator=gen, dtype=torch.float64)
        leaf = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(f(leaf), leaf)
        where = f"f = {label}, x of shape {tuple(shape)}"
        got, error = _run(student, (f, x, 1e-5))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        why = explain_difference(expected, got, rtol=1e-7, atol=1e-9)
        if why is not None:
            flat = x.flatten()
            forward = torch.stack([(f((flat + 1e-5 * e).reshape(shape)) - f(x)) / 1e-5
                                   for e in torch.eye(flat.numel(), dtype=torch.float64)]).reshape(shape)  # fmt: skip
            hint = (" That is the one-sided difference (f(x + ε) − f(x))/ε, whose error is O(ε); the central "
                    "difference (f(x + ε) − f(x − ε))/2ε is accurate to O(ε²)."
                    if explain_difference(forward, got, rtol=1e-9, atol=1e-12) is None else "")  # fmt: skip
            return CheckResult(name, False, f"{where}: {why}.{hint}")
    return CheckResult(name, True, f"{len(functions)} of {len(functions)} functions match torch.autograd.")


# ---------------------------------------------------------------------------
# Chapter 4: optimizers
# ---------------------------------------------------------------------------

ADAM_MISTAKES = {
    "eps inside": "ε sits inside the square root; Adam divides by √v̂ + ε, not by √(v̂ + ε)",
    "no correction": "the bias correction is missing: the step uses m̂ = m/(1 − β₁ᵗ) and v̂ = v/(1 − β₂ᵗ)",
    "corrected state": "the returned m and v are the corrected m̂ and v̂; the running averages stay "
    "uncorrected, the correction enters only the step",
    "t too high": "the step count is one too high: t is this step's number (1 on the first step), used as given",
}


def _adam_step(
    theta: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int,
    lr: float, beta1: float, beta2: float, eps: float, mistake: str = "",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One Adam step → (θ, m, v); ``mistake``, a key of :data:`ADAM_MISTAKES`, makes that mistake instead."""
    t = t + 1 if mistake == "t too high" else t
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat, v_hat = (m, v) if mistake == "no correction" else (m / (1 - beta1**t), v / (1 - beta2**t))
    denom = (v_hat + eps).sqrt() if mistake == "eps inside" else v_hat.sqrt() + eps
    state = (m_hat, v_hat) if mistake == "corrected state" else (m, v)
    return theta - lr * m_hat / denom, *state


def _first_difference(labels: Sequence[str], expected: Sequence[Any], got: Sequence[Any]) -> str | None:
    """``"label: why"`` for the first of several outputs that differs (to 1e-9), else None."""
    for label, want, have in zip(labels, expected, got):
        why = explain_difference(want, have, rtol=1e-9, atol=1e-12)
        if why is not None:
            a, b = _as_array(want), _as_array(have)
            if a is not None and b is not None and a.shape == b.shape and np.isfinite(b).all():
                why += f" (the largest absolute difference is {np.abs(a - b).max():.2g})"
            return f"{label}: {why}"
    return None


def _named_mistake(got: Sequence[Any], variants: dict[str, Sequence[Any]], mistakes: dict[str, str]) -> str:
    """A hint naming the mistake whose variant output ``got`` matches, else ``""``."""
    for key, variant in variants.items():
        if all(explain_difference(want, have, rtol=1e-9, atol=1e-12) is None for want, have in zip(variant, got)):
            return f" It looks like this mistake: {mistakes[key]}."
    return ""


def _call(student: Callable[..., Any], args: Sequence[Any], n_outputs: int) -> tuple[Any, ...] | str:
    """``student(*args)`` as a tuple of ``n_outputs`` detached values, or a message saying what went wrong."""
    got, error = _run(student, args)
    if error is not None:
        return error
    if not isinstance(got, (tuple, list)) or len(got) != n_outputs:
        return f"expected a tuple of {n_outputs} results, got {type(got).__name__} {got!r}"
    return tuple(_detached(got))


def _first_failing_case(
    name: str,
    student: Callable[..., Any],
    reference: Callable[..., Sequence[Any]],
    cases: Sequence[tuple[str, tuple[Any, ...]]],
    labels: Sequence[str],
    mistakes: dict[str, str],
) -> CheckResult | None:
    """Run ``student`` on each ``(description, args)`` case; a failed :class:`CheckResult` at the first
    case whose outputs (named by ``labels``) differ from ``reference(*args)``, naming the mistake of
    ``mistakes`` that explains it when ``reference(*args, mistake=key)`` matches; None when all match."""
    for where, args in cases:
        got = _call(student, args, len(labels))
        if isinstance(got, str):
            return CheckResult(name, False, f"{where} {got}")
        why = _first_difference(labels, reference(*args), got)
        if why is not None:
            variants = {key: reference(*args, mistake=key) for key in mistakes}
            return CheckResult(name, False, f"{where}: {why}.{_named_mistake(got, variants, mistakes)}")
    return None


def adam_step(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(theta, grad, m, v, t, lr, beta1, beta2, eps) -> (theta, m, v)``: one Adam step.

    ``theta``, ``grad``, ``m``, ``v``: float64 tensors of one shape (``m``, ``v``: the running
    averages after step t − 1); ``t``: this step's number, from 1. The answer is the new θ, m and v:
    m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − η m̂/(√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ).
    Compared to 1e-9 on four cases (the first step, a later one, tiny gradients, other betas);
    the mistakes of :data:`ADAM_MISTAKES` are named.
    """
    name = "adam_step"
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(6)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)

    zeros = torch.zeros(3, dtype=torch.float64)
    cases = [  # theta, grad, m, v, t, lr, beta1, beta2, eps
        (rand(3), rand(3), zeros, zeros, 1, 0.01, 0.9, 0.999, 1e-8),
        (rand(2, 4), rand(2, 4), rand(2, 4, scale=0.1), rand(2, 4).square() * 1e-3, 2, 0.01, 0.9, 0.999, 1e-8),
        (rand(5), rand(5, scale=1e-4), rand(5, scale=1e-5), rand(5).square() * 1e-9, 10, 0.001, 0.9, 0.999, 1e-8),
        (rand(4), rand(4), rand(4, scale=0.5), rand(4).square(), 100, 0.1, 0.8, 0.99, 1e-6),
    ]
    described = [
        (f"case {number} (shape {tuple(case[0].shape)}, t = {case[4]}, lr = {case[5]:g}, "
         f"betas = ({case[6]:g}, {case[7]:g}), eps = {case[8]:g})", case)
        for number, case in enumerate(cases, start=1)
    ]  # fmt: skip
    failure = _first_failing_case(name, student, _adam_step, described, ("θ", "m", "v"), ADAM_MISTAKES)
    if failure is not None:  # a failed CheckResult is falsy: test for None, not truth
        return failure
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference Adam step.")


MOMENTUM_MISTAKES = {
    "average": "the buffer is an average, b ← μb + (1 − μ)g; PyTorch's buffer is a sum, b ← μb + g",
    "velocity": "θ is right, but the buffer holds the velocity v = −ηb of the form v ← μv − ηg; keep "
    "PyTorch's b ← μb + g, which leaves the learning rate out of the buffer",
    "nesterov ignored": "with nesterov=True the step must be g + μb (the gradient plus a look-ahead along b), not b",
}


def _momentum_step(
    theta: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, lr: float, momentum: float, nesterov: bool,
    mistake: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One SGD-with-momentum step → (θ, b); ``mistake``, a key of :data:`MOMENTUM_MISTAKES`, makes that mistake."""
    buf = momentum * buf + (1 - momentum if mistake == "average" else 1) * grad
    step = grad + momentum * buf if nesterov and mistake != "nesterov ignored" else buf
    return theta - lr * step, -lr * buf if mistake == "velocity" else buf


def momentum_step(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(theta, grad, buf, lr, momentum, nesterov) -> (theta, buf)``: one step of SGD with momentum.

    PyTorch's convention: b ← μb + g, then θ ← θ − ηb (heavy ball) or θ ← θ − η(g + μb)
    (``nesterov=True``). ``theta``, ``grad``, ``buf``: float64 tensors of one shape (``buf`` is
    zero before the first step). Compared to 1e-9 on four cases; the mistakes of
    :data:`MOMENTUM_MISTAKES` are named.
    """
    name = "momentum_step"
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(7)
    shapes_and_settings = [((3,), False, True), ((2, 3), False, False), ((4,), True, True), ((5,), True, False)]
    cases = []
    for shape, nesterov, first in shapes_and_settings:
        theta, grad = (torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(2))
        buf = torch.randn(*shape, generator=gen, dtype=torch.float64)
        if first:
            buf = torch.zeros_like(buf)  # the buffer before the first step
        cases.append((theta, grad, buf, 0.1, 0.9 if first else 0.5, nesterov))
    described = [
        (f"case {number} (shape {tuple(case[0].shape)}, lr = {case[3]:g}, momentum = {case[4]:g}, "
         f"nesterov = {case[5]})", case)
        for number, case in enumerate(cases, start=1)
    ]  # fmt: skip
    failure = _first_failing_case(name, student, _momentum_step, described, ("θ", "buf"), MOMENTUM_MISTAKES)
    if failure is not None:
        return failure
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference step.")


SCHEDULE_MISTAKES = {
    "cosine from 0": "the cosine starts at step 0; it must start where the warm-up ends, "
    "with progress (step − warmup_steps)/(total_steps − warmup_steps)",
    "warm-up off by one": "the warm-up is one step ahead: it must give 0 at step 0 and reach peak_lr "
    "at step warmup_steps",
    "final ignored": "the schedule ends at 0 instead of final_lr",
}


def _warmup_cosine_lr(
    step: int, total_steps: int, warmup_steps: int, peak_lr: float, final_lr: float, mistake: str = ""
) -> float:
    """The learning rate at ``step``: linear warm-up from 0, then a cosine from ``peak_lr`` down to ``final_lr``."""
    final_lr = 0.0 if mistake == "final ignored" else final_lr
    if step < warmup_steps:
        ahead = 1 if mistake == "warm-up off by one" else 0
        return peak_lr * (step + ahead) / warmup_steps
    start = 0 if mistake == "cosine from 0" else warmup_steps
    progress = (step - start) / (total_steps - start)
    return final_lr + 0.5 * (peak_lr - final_lr) * (1 + math.cos(math.pi * progress))


def warmup_cosine_lr(student: Callable[[int, int, int, float, float], float]) -> CheckResult:
    """Check ``student(step, total_steps, warmup_steps, peak_lr, final_lr) -> lr``: warm-up, then cosine decay.

    For ``step < warmup_steps``: lr = peak_lr · step / warmup_steps (0 at step 0); from there to
    ``total_steps``: lr = final + ½(peak − final)(1 + cos(π p)) with p = (step − warmup)/(total − warmup),
    so it is ``peak_lr`` when the warm-up ends and ``final_lr`` at ``total_steps``. Compared at every
    step 0..total_steps of three schedules (one without warm-up) to 1e-9; :data:`SCHEDULE_MISTAKES` are named.
    """
    name = "warmup_cosine_lr"
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    schedules = [(100, 10, 0.1, 0.001), (50, 0, 1.0, 0.0), (20, 5, 3e-4, 3e-5)]
    for total, warmup, peak, final in schedules:
        where = f"total_steps = {total}, warmup_steps = {warmup}, peak_lr = {peak:g}, final_lr = {final:g}"
        expected = [_warmup_cosine_lr(s, total, warmup, peak, final) for s in range(total + 1)]
        got = []
        for s in range(total + 1):
            try:
                got.append(float(student(s, total, warmup, peak, final)))
            except Exception as err:  # the student's code may fail in any way: report it, don't crash
                return CheckResult(name, False, f"({where}) at step {s} raised {type(err).__name__}: {err}")
        wrong = [s for s in range(total + 1) if explain_difference(expected[s], got[s], rtol=1e-9, atol=1e-12)]
        if wrong:
            s = wrong[0]
            variants = {key: [[_warmup_cosine_lr(i, total, warmup, peak, final, key) for i in range(total + 1)]]
                        for key in SCHEDULE_MISTAKES}  # fmt: skip
            hint = _named_mistake([got], variants, SCHEDULE_MISTAKES)
            return CheckResult(
                name, False, f"({where}) {len(wrong)} of {total + 1} steps differ; the first is step {s}: "
                f"expected {expected[s]:.6g}, got {got[s]:.6g}.{hint}"
            )
    return CheckResult(name, True, f"all steps of {len(schedules)} schedules match the reference.")


# ---------------------------------------------------------------------------
# Chapters 5 and 6: handwritten digits, overfitting and regularization
# ---------------------------------------------------------------------------


def _logit_cases() -> list[tuple[torch.Tensor, ...]]:
    """Logits ``[B, C]`` of growing difficulty: small, a batch, one row, and scores near 1000."""
    gen = torch.Generator().manual_seed(5)
    return [
        (torch.tensor([[2.0, 1.0, 0.1]]),),
        (torch.randn(8, 10, generator=gen),),
        (torch.tensor([[0.0, 0.0, 0.0, 0.0]]),),
        (torch.randn(4, 10, generator=gen) * 20,),
        (torch.tensor([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1000.5]]),),
    ]


def softmax(student: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(logits)``: the softmax of each row, ``p_k = e^{z_k} / Σ_j e^{z_j}``.

    Shapes: logits ``[B, C]`` → probabilities ``[B, C]``; the last case has
    logits near ±1000, where ``exp`` overflows unless the row's maximum is subtracted first.
    """
    return compare(
        "softmax",
        student,
        lambda z: torch.softmax(z, dim=1),
        _logit_cases(),
        rtol=1e-5,
        atol=1e-7,
        hint="exponentiate each score and divide by the row's sum (dim=1); subtract each row's "
        "maximum first, which changes nothing mathematically but keeps exp from overflowing.",
    )


def cross_entropy(student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(logits, targets)``: the mean cross-entropy ``-(1/B) Σ_i log softmax(z_i)[y_i]``.

    Shapes: logits ``[B, C]`` float, targets ``[B]`` int64 class indices → a 0-d tensor,
    equal to ``F.cross_entropy(logits, targets)``; the last case needs a stable log-softmax.
    """
    gen = torch.Generator().manual_seed(6)
    cases = [(z, torch.randint(0, z.shape[1], (len(z),), generator=gen)) for (z,) in _logit_cases()]
    return compare(
        "cross_entropy",
        student,
        torch.nn.functional.cross_entropy,
        cases,
        rtol=1e-5,
        atol=1e-6,
        hint="take log softmax of each row, pick the entry of the true class with logits[i, y_i] "
        "(or gather), negate and average over the batch; log softmax(z) = z - logsumexp(z) stays finite "
        "for large scores.",
    )


def _confusion_cases() -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(7)
    return [
        (torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3),
        (torch.tensor([1, 1, 1]), torch.tensor([0, 0, 1]), 2),  # rows vs columns matter here
        (torch.randint(0, 10, (200,), generator=gen), torch.randint(0, 10, (200,), generator=gen), 10),
        (torch.tensor([0, 0]), torch.tensor([0, 0]), 4),  # classes that never occur
    ]


def confusion_matrix(student: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Check ``student(predictions, targets, num_classes)``: counts ``[C, C]``, rows true, columns predicted.

    Entry ``[i, j]`` counts the samples of true class i predicted as j;
    predictions and targets are int64 class indices ``[N]``.
    """
    from companion import metrics

    return compare(
        "confusion_matrix",
        student,
        lambda p, t, c: metrics.confusion_matrix(p, t, num_classes=c),
        _confusion_cases(),
        hint="start from torch.zeros(C, C) and add 1 at [true, predicted] for each sample; rows are "
        "the true classes, columns the predictions, and the matrix is C × C even for classes that never occur.",
    )


def precision_recall_of_class(predictions: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[float, float]:
    """``(precision, recall)`` of class k: ``TP / (TP + FP)`` and ``TP / (TP + FN)``, 0 for a zero denominator."""
    hits = int(((predictions == k) & (targets == k)).sum())
    predicted, actual = int((predictions == k).sum()), int((targets == k).sum())
    return (hits / predicted if predicted else 0.0, hits / actual if actual else 0.0)


def precision_recall(student: Callable[[torch.Tensor, torch.Tensor, int], tuple[float, float]]) -> CheckResult:
    """Check ``student(predictions, targets, k)`` against :func:`precision_recall_of_class`.

    Predictions and targets are int64 class indices ``[N]``; the answer is two floats.
    """
    cases = [(p, t, k) for p, t, c in _confusion_cases()[:3] for k in range(min(c, 3))]
    cases.append((torch.tensor([0, 0, 1]), torch.tensor([0, 2, 2]), 2))  # class 2 is never predicted
    return compare(
        "precision_recall",
        student,
        precision_recall_of_class,
        cases,
        hint="precision: of the samples predicted as k, the share that are k; recall: of the samples "
        "that are k, the share predicted as k. Return 0.0 when nothing is predicted as k (or nothing is k).",
    )


def _parameter_cases() -> list[tuple[list[torch.Tensor], float]]:
    gen = torch.Generator().manual_seed(8)
    return [
        ([torch.tensor([[1.0, -2.0], [0.5, 0.0]])], 0.1),
        ([torch.randn(5, 3, generator=gen), torch.randn(5, generator=gen)], 0.01),
        ([torch.randn(784, 16, generator=gen), torch.randn(16, generator=gen), torch.randn(16, 10, generator=gen)], 1e-3),
    ]


def l2_penalty(student: Callable[[list[torch.Tensor], float], torch.Tensor]) -> CheckResult:
    """Check ``student(params, lam)``: the L2 penalty ``(λ/2) Σ_p Σ_i p_i²`` over a list of tensors.

    With the ½, the penalty's gradient is ``λ·p``: adding it to the loss is what
    ``weight_decay=λ`` does in ``torch.optim.SGD`` and ``Adam``.
    """
    return compare(
        "l2_penalty",
        student,
        lambda params, lam: lam / 2 * sum((p**2).sum() for p in params),
        _parameter_cases(),
        rtol=1e-5,
        hint="square every entry of every tensor, add them all up, and multiply by λ/2.",
    )


def l1_penalty(student: Callable[[list[torch.Tensor], float], torch.Tensor]) -> CheckResult:
    """Check ``student(params, lam)``: the L1 penalty ``λ Σ_p Σ_i |p_i|`` over a list of tensors."""
    return compare(
        "l1_penalty",
        student,
        lambda params, lam: lam * sum(p.abs().sum() for p in params),
        _parameter_cases(),
        rtol=1e-5,
        hint="add up the absolute values of every entry of every tensor and multiply by λ (no ½ here).",
    )


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


def shift_images(student: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """Check ``student(images, dx, dy)`` against :func:`shifted`: a shift with zeros, not a wrap-around.

    Shapes: images ``[N, H, W]`` → ``[N, H, W]``; ``dx > 0`` moves right, ``dy > 0`` moves down.
    """
    gen = torch.Generator().manual_seed(9)
    digits = torch.rand(3, 28, 28, generator=gen)
    cases = [(torch.arange(1.0, 10.0).reshape(1, 3, 3), 1, 0), (torch.arange(1.0, 10.0).reshape(1, 3, 3), 0, -1)]
    cases += [(digits, dx, dy) for dx, dy in [(2, 1), (-2, 2), (0, 0), (-1, -3)]]
    return compare(
        "shift_images",
        student,
        shifted,
        cases,
        hint="torch.roll wraps the pixels that leave one edge around to the other; a shift must fill the "
        "uncovered rows and columns with 0 instead (copy a slice into torch.zeros_like(images)).",
    )


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


def early_stopping(student: Callable[[Sequence[float], int], tuple[int, int]]) -> CheckResult:
    """Check ``student(losses, patience) -> (best_epoch, last_epoch)`` against :func:`early_stopping_epochs`."""
    cases = [
        ([0.9, 0.7, 0.6, 0.65, 0.7, 0.8], 2),
        ([0.9, 0.7, 0.6, 0.65, 0.7, 0.8], 3),
        ([0.9, 0.8, 0.7, 0.6], 1),
        ([0.5, 0.5, 0.5], 2),
        ([1.0, 0.8, 0.9, 0.7, 0.75, 0.76, 0.77, 0.6], 3),
    ]
    return compare(
        "early_stopping",
        student,
        early_stopping_epochs,
        cases,
        hint="count epochs from 1; a loss equal to the best is not an improvement; training ends `patience` "
        "epochs after the best one, or at the last epoch when that never comes.",
    )
