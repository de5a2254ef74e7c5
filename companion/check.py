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
        fresh = [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in case]
        expected = reference(*[arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in case])
        try:
            got = student(*fresh)
        except Exception as err:  # the student's code may fail in any way: report it, don't crash
            return CheckResult(
                name, False, f"case {number} ({_describe(case)}) raised {type(err).__name__}: {err}"
            )
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
