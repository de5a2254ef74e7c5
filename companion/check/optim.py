"""Self-checks of chapter 5, optimizers: one Adam step, one momentum step, a warm-up + cosine schedule,
and the size of Adam's step without its bias correction."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from companion.check.core import CheckSpec, Wrong, define, keyed, randn, sampler

__all__ = ["ADAM_MISTAKES", "MOMENTUM_MISTAKES", "SCHEDULE_MISTAKES", "adam_step", "momentum_step",
           "uncorrected_adam_ratio", "warmup_cosine_lr"]  # fmt: skip

ADAM_MISTAKES = {
    "eps inside": "ε sits inside the square root",
    "no correction": "the bias correction is missing",
    "corrected state": "the returned m and v are the bias-corrected ones; the running averages themselves "
    "stay uncorrected, the correction enters only the step",
    "t too high": "the step count is one too high: t is this step's number (1 on the first step), used as given",
}
"""The mistakes :func:`adam_step` recognises, by name, each with what a matching answer is told."""


def _adam_step(theta: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, lr: float, beta1: float, beta2: float,
               eps: float, mistake: str = "") -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    t = t + 1 if mistake == "t too high" else t
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat, v_hat = (m, v) if mistake == "no correction" else (m / (1 - beta1**t), v / (1 - beta2**t))
    denom = (v_hat + eps).sqrt() if mistake == "eps inside" else v_hat.sqrt() + eps
    state = (m_hat, v_hat) if mistake == "corrected state" else (m, v)
    return theta - lr * m_hat / denom, *state


def _adam_cases(gen: torch.Generator) -> list:
    rand = sampler(gen)
    zeros = torch.zeros(3, dtype=torch.float64)
    cases = [  # theta, grad, m, v, t, lr, beta1, beta2, eps
        (rand(3), rand(3), zeros, zeros, 1, 0.01, 0.9, 0.999, 1e-8),
        (rand(2, 4), rand(2, 4), rand(2, 4, scale=0.1), rand(2, 4).square() * 1e-3, 2, 0.01, 0.9, 0.999, 1e-8),
        (rand(5), rand(5, scale=1e-4), rand(5, scale=1e-5), rand(5).square() * 1e-9, 10, 0.001, 0.9, 0.999, 1e-8),
        (rand(4), rand(4), rand(4, scale=0.5), rand(4).square(), 100, 0.1, 0.8, 0.99, 1e-6),
        (rand(3), zeros, rand(3, scale=0.1), rand(3).square(), 5, 0.01, 0.9, 0.999, 1e-8),
    ]
    return [(f"shape {tuple(c[0].shape)}, t = {c[4]}, lr = {c[5]:g}, betas = ({c[6]:g}, {c[7]:g}), eps = {c[8]:g}", c)
            for c in cases]  # fmt: skip


def _as_step(case: tuple, out: Any) -> tuple:
    """The new θ as the step it took, new θ − θ, which is where a mistake shows (it hides in θ's digits)."""
    return (out[0].double() - case[0], *out[1:])


adam_step = define(CheckSpec(
    "adam_step", _adam_step, _adam_cases, labels=("the step (new θ − θ)", "m", "v"), view=_as_step,
    mistakes=keyed(_adam_step, ADAM_MISTAKES), rtol=1e-9, atol=1e-12,
    forbidden=("torch.optim.Adam.step", "torch.optim.AdamW.step", *(f"torch.optim.adam.{f}" for f in (
               "adam", "_single_tensor_adam", "_multi_tensor_adam", "_fused_adam")), "companion.optim.Adam.step",
               "companion.optim.AdamW.step"),
    hint="follow the order of the chapter's equations: update both running averages with this gradient first; "
    "bias-correct copies of them with this step's t, used as given; step with the corrected copies, with ε "
    "outside the square root. Return the new θ and the uncorrected m and v.",
), doc="""Check ``student(theta, grad, m, v, t, lr, beta1, beta2, eps) -> (theta, m, v)``: one Adam step; ``theta``,
    ``grad``, ``m``, ``v``: float64 tensors of one shape (``m``, ``v``: the running averages after step t − 1);
    ``t``: this step's number, from 1. The optimizers' own ``step`` raise while it runs.""")


MOMENTUM_MISTAKES = {
    "average": "the gradient enters the buffer scaled by (1 − momentum); PyTorch's buffer adds it unscaled",
    "velocity": "θ is right, but the buffer has the learning rate inside it; PyTorch's buffer leaves it out",
    "nesterov ignored": "with nesterov=True the step is the same as without: the look-ahead is missing",
}
"""The mistakes :func:`momentum_step` recognises, by name, each with what a matching answer is told."""


def _momentum_step(theta: Tensor, grad: Tensor, buf: Tensor, lr: float, momentum: float, nesterov: bool,
                   mistake: str = "") -> tuple[Tensor, Tensor]:  # fmt: skip
    buf = momentum * buf + (1 - momentum if mistake == "average" else 1) * grad
    step = grad + momentum * buf if nesterov and mistake != "nesterov ignored" else buf
    return theta - lr * step, -lr * buf if mistake == "velocity" else buf


def _momentum_cases(gen: torch.Generator) -> list:
    cases = []
    for shape, nesterov, first, momentum in [((3,), False, True, 0.9), ((2, 3), False, False, 0.5),
                                             ((4,), True, True, 0.9), ((5,), True, False, 0.5),
                                             ((3,), True, False, 0.0)]:  # fmt: skip
        theta, grad, buf = (randn(gen, *shape) for _ in range(3))
        case = (theta, grad, torch.zeros_like(buf) if first else buf, 0.1, momentum, nesterov)
        cases.append((f"shape {shape}, lr = 0.1, momentum = {momentum:g}, nesterov = {nesterov}", case))
    return cases


momentum_step = define(CheckSpec(
    "momentum_step", _momentum_step, _momentum_cases, labels=("the step (new θ − θ)", "buf"), view=_as_step,
    mistakes=keyed(_momentum_step, MOMENTUM_MISTAKES), rtol=1e-9, atol=1e-12,
    forbidden=("torch.optim.SGD.step", "companion.optim.SGD.step",
               *(f"torch.optim.sgd.{f}" for f in ("sgd", "_single_tensor_sgd", "_multi_tensor_sgd", "_fused_sgd"))),
    hint="in PyTorch's convention the buffer is a decaying sum of the gradients, with no (1 − momentum) and no "
    "learning rate inside it; the plain step follows the updated buffer, and Nesterov's looks ahead by adding "
    "the gradient to momentum times that buffer (the momentum section).",
), doc="""Check ``student(theta, grad, buf, lr, momentum, nesterov) -> (theta, buf)``: one step of SGD with
    momentum in PyTorch's convention; ``theta``, ``grad``, ``buf``: float64 tensors of one shape (``buf``
    is zero before the first step). The optimizers' own ``step`` raise while it runs.""")


SCHEDULE_MISTAKES = {
    "cosine from 0": "the cosine part counts its progress from step 0 instead of from the end of the warm-up, "
    "so the schedule drops as soon as the warm-up ends",
    "warm-up off by one": "the warm-up is one step ahead: it must give 0 at step 0 and reach peak_lr "
    "exactly at step warmup_steps",
    "final ignored": "the schedule ends at 0 instead of final_lr",
}
"""The mistakes :func:`warmup_cosine_lr` recognises, by name, each with what a matching answer is told."""


def _warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float, final_lr: float,
                      mistake: str = "") -> float:  # fmt: skip
    final_lr = 0.0 if mistake == "final ignored" else final_lr
    if step < warmup_steps:
        return peak_lr * (step + (mistake == "warm-up off by one")) / warmup_steps
    start = 0 if mistake == "cosine from 0" else warmup_steps
    return final_lr + 0.5 * (peak_lr - final_lr) * (1 + math.cos(math.pi * (step - start) / (total_steps - start)))


def _schedule(total: int, warmup: int, peak: float, final: float, mistake: str = "") -> Tensor:
    rates = [_warmup_cosine_lr(s, total, warmup, peak, final, mistake) for s in range(total + 1)]
    return torch.tensor(rates, dtype=torch.float64)


def _every_step(student: Callable[..., Any], total: int, warmup: int, peak: float, final: float) -> Tensor:
    rates = []
    for step in range(total + 1):
        try:
            rate = student(step, total, warmup, peak, final)
        except Exception as err:
            err.args = (f"at step {step}: {err}",)
            raise
        if isinstance(rate, torch.Tensor) and rate.numel() == 1:
            rate = rate.item()
        if not isinstance(rate, (int, float)) or isinstance(rate, bool):
            raise Wrong(f"at step {step} it returned {type(rate).__name__}, not a number")
        rates.append(float(rate))
    return torch.tensor(rates, dtype=torch.float64)


warmup_cosine_lr = define(CheckSpec(
    "warmup_cosine_lr", _schedule, apply=_every_step, mistakes=keyed(_schedule, SCHEDULE_MISTAKES), rtol=1e-9,
    atol=1e-12, passed="all steps of 4 schedules match the reference.",
    cases=lambda gen: [(f"total_steps = {t}, warmup_steps = {w}, peak_lr = {p:g}, final_lr = {f:g}; the rates "
                        "at steps 0, 1, …", (t, w, p, f))
                       for t, w, p, f in [(100, 10, 0.1, 0.001), (50, 0, 1.0, 0.0), (20, 5, 3e-4, 3e-5),
                                          (10, 1, 0.5, 0.05)]],
    hint="during the warm-up the rate grows in proportion to the step, from 0 to peak_lr at warmup_steps; after "
    "it, measure the progress p from 0 to 1 over the steps that remain, starting where the warm-up ends, and "
    "let half a cosine period (cos πp falls from 1 to −1) carry the rate from peak_lr down to final_lr.",
), doc="""Check ``student(step, total_steps, warmup_steps, peak_lr, final_lr) -> lr``: a linear warm-up from 0 to
    ``peak_lr``, then a cosine decay to ``final_lr`` at ``total_steps``, compared at every step of four schedules.""")


def _ratio(t: int = 10, beta1: float = 0.9, beta2: float = 0.999) -> float:
    return (1 - beta1**t) / math.sqrt(1 - beta2**t)


uncorrected_adam_ratio = define(CheckSpec(
    "uncorrected_adam_ratio", _ratio, answers=1, rtol=1e-3, passed="correct.",
    mistakes={
        "the value at step 1, not at step 10": lambda: _ratio(1),
        "the inverse of the ratio (the bias-correction factor itself)": lambda: 1 / _ratio(),
        "the ratio without the square root over 1 − β₂ᵗ": lambda: (1 - 0.9**10) / (1 - 0.999**10),
        "the ratio at step 10 with only m left uncorrected": lambda: 1 - 0.9**10,
        "the ratio at step 10 with only v left uncorrected": lambda: 1 / math.sqrt(1 - 0.999**10),
    },
    hint="for a gradient g that never changes, the bias correction divides m_t by exactly the share of g it "
    "has reached, (1 − β₁ᵗ), and v_t by its share of g²; without the correction, how does the step "
    "lr·m_t/√v_t (ε negligible) compare with lr at t = 10?",
), "answer", doc="""Check a number: how many times the learning rate Adam *without* bias correction steps at t = 10 for
    a constant gradient, with β₁ = 0.9 and β₂ = 0.999 (to 0.1 %).""")


