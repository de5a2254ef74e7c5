"""Self-checks of chapter 5, optimizers: one Adam step, one momentum step, a warm-up + cosine schedule,
and the size of Adam's step without its bias correction.

A failure names the case and the output that differ and says how (a factor, a sign, how far off in
percent bands), and names a common mistake when the answer matches it; it never prints the expected
values. The method is in each check's hint, shown by ``check.hint(name)``.
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
    _named_mistake,
    _run,
    register_hint,
    value,
)

__all__ = [
    "ADAM_FORBIDDEN",
    "ADAM_MISTAKES",
    "MOMENTUM_FORBIDDEN",
    "MOMENTUM_MISTAKES",
    "SCHEDULE_MISTAKES",
    "adam_step",
    "momentum_step",
    "uncorrected_adam_ratio",
    "warmup_cosine_lr",
]

ADAM_FORBIDDEN = (
    "torch.optim.Adam.step",
    "torch.optim.AdamW.step",
    "companion.optim.Adam.step",
    "companion.optim.AdamW.step",
)
"""What the Adam exercise does without, the ``step`` of PyTorch's and the course's Adam and AdamW."""
MOMENTUM_FORBIDDEN = ("torch.optim.SGD.step", "companion.optim.SGD.step")
"""What the momentum exercise does without, the ``step`` of PyTorch's and the course's SGD."""


def _entries_differ(label: str, want: Any, have: Any, rtol: float = 1e-9, atol: float = 1e-12) -> str | None:
    """None when ``have`` matches ``want``; else how it differs — shape, NaN, sign, factor or percent band,
    never the expected numbers."""
    a, b = _as_array(want), _as_array(have)
    if b is None:
        return f"{label}: expected a number or a tensor, got {type(have).__name__}"
    if a.shape != b.shape:
        return f"{label}: expected shape {a.shape}, got shape {b.shape}"
    if not np.all(np.isfinite(b)):
        return f"{label}: contains NaN or infinity"
    close = np.isclose(b, a, rtol=rtol, atol=atol)
    if close.all():
        return None
    wrong = np.argwhere(~close)
    nonzero = a != 0
    if (~close).all() and nonzero.all():
        ratios = b / a
        if np.allclose(ratios, ratios.flat[0], rtol=1e-4):
            return f"{label}: every entry is off the same way: {_how_far(float(a.flat[0]), float(b.flat[0]))}"
    where = tuple(int(i) for i in wrong[0])
    at = f" at index {where}" if a.ndim else ""
    return (
        f"{label}: {len(wrong)} of {a.size} entries differ;{at} "
        f"{_how_far(float(a[where] if a.ndim else a), float(b[where] if b.ndim else b))}"
    )


def _outputs(student: Callable[..., Any], args: Sequence[Any], n: int, forbidden: Sequence[str]) -> tuple | str:
    """``student(*args)`` as a tuple of ``n`` detached values, or a message saying what went wrong."""
    got, error = _run(student, args, forbidden)
    if error is not None:
        return error
    if got is None:
        return "returned None (is a `return` missing, or is the placeholder `...` still there?)"
    if not isinstance(got, (tuple, list)) or len(got) != n:
        return f"expected a tuple of {n} results, got {type(got).__name__}"
    return tuple(_detached(got))


def _first_failure(
    name: str,
    student: Callable[..., Any],
    reference: Callable[..., Sequence[Any]],
    cases: Sequence[tuple[str, tuple[Any, ...]]],
    labels: Sequence[str],
    mistakes: dict[str, str],
    forbidden: Sequence[str],
) -> CheckResult | None:
    """A failed result at the first case whose outputs differ from ``reference(*args)``, else None.

    The first output is a new θ: it is compared as the step it took (new θ − θ), which is
    where a mistake shows, instead of as θ itself, where a wrong step hides in the digits.
    """
    for where, args in cases:
        got = _outputs(student, args, len(labels), forbidden)
        if isinstance(got, str):
            return CheckResult(name, False, f"{where} {got}")
        expected = reference(*args)
        theta = args[0]
        why = None
        for number, (label, want, have) in enumerate(zip(labels, expected, got)):
            if number == 0 and isinstance(have, torch.Tensor) and have.shape == theta.shape:
                why = _entries_differ("the step (new θ − θ)", want - theta, have.double() - theta)
            else:
                why = _entries_differ(label, want, have)
            if why is not None:
                break
        if why is not None:
            variants = {key: reference(*args, mistake=key) for key in mistakes}
            return CheckResult(name, False, f"{where}: {why}.{_named_mistake(got, variants, mistakes)}")
    return None


ADAM_MISTAKES = {
    "eps inside": "ε sits inside the square root",
    "no correction": "the bias correction is missing",
    "corrected state": "the returned m and v are the bias-corrected ones; the running averages themselves "
    "stay uncorrected, the correction enters only the step",
    "t too high": "the step count is one too high: t is this step's number (1 on the first step), used as given",
}
"""The mistakes :func:`adam_step` recognises, by name, each with what a matching answer is told."""


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


def adam_step(student: Callable[..., Any]) -> CheckResult:
    """Check ``student(theta, grad, m, v, t, lr, beta1, beta2, eps) -> (theta, m, v)``: one Adam step.

    ``theta``, ``grad``, ``m``, ``v``: float64 tensors of one shape (``m``, ``v``: the running
    averages after step t − 1); ``t``: this step's number, from 1. The answer is the new θ, m and v:
    m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − η m̂/(√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ).
    Compared to 1e-9 on five cases (the first step, a later one, tiny gradients, other betas, a
    zero gradient); the mistakes of :data:`ADAM_MISTAKES` are named. The optimizers' own ``step``
    (:data:`ADAM_FORBIDDEN`) raise while the student's function runs: the exercise is the update itself.
    """
    name = "adam_step"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
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
        (rand(3), torch.zeros(3, dtype=torch.float64), rand(3, scale=0.1), rand(3).square(), 5, 0.01, 0.9, 0.999,
         1e-8),
    ]  # fmt: skip
    described = [
        (f"case {number} (shape {tuple(case[0].shape)}, t = {case[4]}, lr = {case[5]:g}, "
         f"betas = ({case[6]:g}, {case[7]:g}), eps = {case[8]:g})", case)
        for number, case in enumerate(cases, start=1)
    ]  # fmt: skip
    failure = _first_failure(name, student, _adam_step, described, ("θ", "m", "v"), ADAM_MISTAKES, ADAM_FORBIDDEN)
    if failure is not None:  # a failed CheckResult is falsy: test for None, not truth
        return failure
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference Adam step.")


MOMENTUM_MISTAKES = {
    "average": "the gradient enters the buffer scaled by (1 − momentum); PyTorch's buffer adds it unscaled",
    "velocity": "θ is right, but the buffer has the learning rate inside it; PyTorch's buffer leaves it out",
    "nesterov ignored": "with nesterov=True the step is the same as without: the look-ahead is missing",
}
"""The mistakes :func:`momentum_step` recognises, by name, each with what a matching answer is told."""


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
    zero before the first step). Compared to 1e-9 on five cases (one with momentum 0); the mistakes
    of :data:`MOMENTUM_MISTAKES` are named; the optimizers' own ``step`` (:data:`MOMENTUM_FORBIDDEN`) raise.
    """
    name = "momentum_step"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    gen = torch.Generator().manual_seed(7)
    settings = [((3,), False, True, 0.9), ((2, 3), False, False, 0.5), ((4,), True, True, 0.9),
                ((5,), True, False, 0.5), ((3,), True, False, 0.0)]  # fmt: skip
    cases = []
    for shape, nesterov, first, momentum in settings:
        theta, grad = (torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(2))
        buf = torch.randn(*shape, generator=gen, dtype=torch.float64)
        if first:
            buf = torch.zeros_like(buf)  # the buffer before the first step
        cases.append((theta, grad, buf, 0.1, momentum, nesterov))
    described = [
        (f"case {number} (shape {tuple(case[0].shape)}, lr = {case[3]:g}, momentum = {case[4]:g}, "
         f"nesterov = {case[5]})", case)
        for number, case in enumerate(cases, start=1)
    ]  # fmt: skip
    failure = _first_failure(
        name, student, _momentum_step, described, ("θ", "buf"), MOMENTUM_MISTAKES, MOMENTUM_FORBIDDEN
    )
    if failure is not None:
        return failure
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference step.")


SCHEDULE_MISTAKES = {
    "cosine from 0": "the cosine part counts its progress from step 0 instead of from the end of the warm-up, "
    "so the schedule drops as soon as the warm-up ends",
    "warm-up off by one": "the warm-up is one step ahead: it must give 0 at step 0 and reach peak_lr "
    "exactly at step warmup_steps",
    "final ignored": "the schedule ends at 0 instead of final_lr",
}
"""The mistakes :func:`warmup_cosine_lr` recognises, by name, each with what a matching answer is told."""


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
    step 0..total_steps of four schedules (one without warm-up, one whose warm-up is a single step)
    to 1e-9; :data:`SCHEDULE_MISTAKES` are named. A failure names the first wrong step and how far
    off it is, not the value it should have.
    """
    name = "warmup_cosine_lr"
    if student is Ellipsis:
        return CheckResult(name, False, PLACEHOLDER_MESSAGE)
    if not callable(student):
        return CheckResult(name, False, f"expected a function, got {type(student).__name__}")
    schedules = [(100, 10, 0.1, 0.001), (50, 0, 1.0, 0.0), (20, 5, 3e-4, 3e-5), (10, 1, 0.5, 0.05)]
    for total, warmup, peak, final in schedules:
        where = f"total_steps = {total}, warmup_steps = {warmup}, peak_lr = {peak:g}, final_lr = {final:g}"
        expected = [_warmup_cosine_lr(s, total, warmup, peak, final) for s in range(total + 1)]
        got = []
        for s in range(total + 1):
            answer, error = _run(student, (s, total, warmup, peak, final))
            if error is not None:
                return CheckResult(name, False, f"({where}) at step {s} {error}")
            try:
                got.append(float(answer))
            except (TypeError, ValueError):
                return CheckResult(
                    name, False, f"({where}) at step {s} returned {type(answer).__name__}, not a number"
                )
        wrong = [s for s in range(total + 1) if not math.isclose(got[s], expected[s], rel_tol=1e-9, abs_tol=1e-12)]
        if wrong:
            s = wrong[0]
            variants = {key: [[_warmup_cosine_lr(i, total, warmup, peak, final, key) for i in range(total + 1)]]
                        for key in SCHEDULE_MISTAKES}  # fmt: skip
            named = _named_mistake([got], variants, SCHEDULE_MISTAKES)
            how = _how_far(expected[s], got[s]) if math.isfinite(got[s]) else "it is NaN or infinite"
            return CheckResult(
                name, False, f"({where}) {len(wrong)} of {total + 1} steps differ; the first is step {s}, "
                f"where {how}.{named}"
            )
    return CheckResult(name, True, f"all steps of {len(schedules)} schedules match the reference.")


def _uncorrected_ratio(t: int = 10, beta1: float = 0.9, beta2: float = 0.999) -> float:
    """The step of Adam without bias correction, in units of the learning rate, at step ``t``
    of a constant gradient: (1 − β₁ᵗ)/√(1 − β₂ᵗ) (ε neglected)."""
    return (1 - beta1**t) / math.sqrt(1 - beta2**t)


def uncorrected_adam_ratio(answer: Any) -> CheckResult:
    """Check a number: how many times the learning rate Adam *without* bias correction steps at
    t = 10 for a constant gradient, with β₁ = 0.9 and β₂ = 0.999 (to 0.1 %).

    The expected value is computed here, never shown; a wrong answer is told whether it is the
    value at another step, the inverse, or how far off it is.
    """
    name = "uncorrected_adam_ratio"
    if answer is Ellipsis:
        return value(name, answer, 1.0)
    result = value(name, answer, _uncorrected_ratio(), rtol=1e-3)
    if result:
        return result
    try:
        number = float(answer)
    except (TypeError, ValueError):
        return result
    if not math.isfinite(number) or number == 0:
        return result
    known = {
        "the value at step 1, not at step 10": _uncorrected_ratio(1),
        "the inverse of the ratio (the bias-correction factor itself)": 1 / _uncorrected_ratio(),
        "the ratio without the square root over 1 − β₂ᵗ": (1 - 0.9**10) / (1 - 0.999**10),
        "the ratio at step 10 with only m left uncorrected": 1 - 0.9**10,
        "the ratio at step 10 with only v left uncorrected": 1 / math.sqrt(1 - 0.999**10),
    }
    for what, wrong in known.items():
        if math.isclose(number, wrong, rel_tol=1e-3):
            return CheckResult(name, False, f"{result.message[:-1]}: it looks like {what}.")
    return result


register_hint(
    "adam_step",
    "update the running averages first: m ← β₁m + (1 − β₁)g and v ← β₂v + (1 − β₂)g²; then correct "
    "copies of them, m̂ = m/(1 − β₁ᵗ) and v̂ = v/(1 − β₂ᵗ), and step θ − lr·m̂/(√v̂ + ε). Return the new θ "
    "and the uncorrected m and v.",
)
register_hint(
    "momentum_step",
    "the buffer is a decaying sum, buf ← momentum·buf + grad; the heavy-ball step is θ − lr·buf, and "
    "Nesterov's is θ − lr·(grad + momentum·buf) with the buffer already updated.",
)
register_hint(
    "warmup_cosine_lr",
    "during the warm-up the rate grows in proportion to step/warmup_steps; after it, measure the progress "
    "p from 0 to 1 over the remaining total_steps − warmup_steps steps, starting where the warm-up ends, "
    "and use final_lr + ½(peak_lr − final_lr)(1 + cos πp).",
)
register_hint(
    "uncorrected_adam_ratio",
    "for a gradient g that never changes, m_t = (1 − β₁ᵗ)g and v_t = (1 − β₂ᵗ)g²; without the correction "
    "the step is lr·m_t/√v_t (ε is negligible), so the ratio is (1 − β₁ᵗ)/√(1 − β₂ᵗ) at t = 10.",
)
