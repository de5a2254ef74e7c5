"""Self-checks of chapter 2, loss and gradient descent: gradients by hand, the largest stable
learning rate, and one epoch of mini-batch gradient descent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from companion.check.core import CheckSpec, define, keyed, randn, sampler, scaled, summed

__all__ = ["EPOCH_MISTAKES", "largest_stable_learning_rate", "minibatch_epoch", "quadratic_gradients"]

AUTOGRAD_FORBIDDEN = ("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward", "torch.func.grad",
                      "torch.func.vjp", "torch.autograd.functional.jacobian", "torch.autograd.functional.vjp",
                      "torch.autograd.functional.jvp", "torch.func.jvp", "torch.func.jacrev", "torch.func.jacfwd",
                      "torch.autograd.graph._engine_run_backward",
                      "torch.autograd.variable.Variable._execution_engine.run_backward",
                      "torch.autograd.forward_ad.make_dual",
                      "companion.autograd.Value.backward")  # fmt: skip
"""Autograd's entry points, its engine and forward mode included, which an exercise that computes its gradients by
hand does without."""


def _parabola(a: float, b: float, c: float, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """∂/∂(a, b, c) of the mean squared error of a·x² + b·x + c against ``y``, by autograd."""
    p = torch.tensor((a, b, c), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(((y - (p[0] * x**2 + p[1] * x + p[2])) ** 2).mean(), p)
    return tuple(grad)


def _parabola_cases(gen: torch.Generator) -> list:
    rand = sampler(gen)
    f64 = {"dtype": torch.float64}
    cases = [
        (0.5, -1.0, 2.0, torch.tensor([1.0, 2.0, 3.0], **f64), torch.tensor([3.0, 5.0, 7.0], **f64)),
        (1.5, 0.25, -1.0, torch.tensor([2.0], **f64), torch.tensor([-1.0], **f64)),
        (0.3, -0.7, 0.2, torch.zeros(4, **f64), rand(4)),
        (*rand(3).tolist(), rand(100), rand(100, scale=3.0)),
        (0.01, -0.5, 3.0, rand(6, scale=50.0), rand(6, scale=100.0)),
    ]
    return [(f"a = {a:.4g}, b = {b:.4g}, c = {c:.4g}, N = {len(x)}", (a, b, c, x, y)) for a, b, c, x, y in cases]


quadratic_gradients = define(CheckSpec(
    "quadratic_gradients", _parabola, _parabola_cases, labels=("∂L/∂a", "∂L/∂b", "∂L/∂c"),
    forbidden=AUTOGRAD_FORBIDDEN, rtol=1e-9, atol=1e-12, mistakes={
        "the sign is flipped (what is the sign of ∂e/∂θ for the error e = y − ŷ?)": scaled(_parabola, -1.0),
        "the factor 2 from differentiating the square is missing": scaled(_parabola, 0.5),
        "the sign is flipped and the factor 2 is missing": scaled(_parabola, -0.5),
        "this is the gradient of the sum; the loss is a mean, so divide by N": summed(_parabola, over=-1),
    },
    passed="5 of 5 cases match torch.autograd.",
    hint="as for the line: write one term as the square of the error y − (a·x² + b·x + c) and apply the chain "
    "rule; the error depends on a through x², on b through x and on c alone; mind its minus sign, and take "
    "the mean over the examples, as the loss does.",
), doc="""Check ``student(a, b, c, x, y) -> (∂L/∂a, ∂L/∂b, ∂L/∂c)``, derived by hand (autograd raises while it runs),
    for the mean squared error of ŷ = a·x² + b·x + c; ``a``, ``b``, ``c``: floats, ``x``, ``y``: float64 ``[N]``.""")


def _stable_limit(x: Sequence[float]) -> float:
    xs = torch.tensor(x, dtype=torch.float64)
    hessian = 2 * torch.stack([torch.stack([(xs**2).mean(), xs.mean()]), torch.stack([xs.mean(), xs.new_tensor(1.0)])])
    return 2 / torch.linalg.eigvalsh(hessian).max().item()


def _what_happens(case: tuple, expected: float, got: Any) -> str:
    if not isinstance(got, (int, float)) or isinstance(got, bool) or got != got or abs(got) == float("inf"):
        return ""
    if got <= 0:
        return f"η = {got:g} does not descend: a learning rate is positive."
    if got > expected:
        return f"At η = {got:g} gradient descent diverges: each step overshoots the valley floor more than the last."
    return f"η = {got:g} converges, but so do larger rates."


largest_stable_learning_rate = define(CheckSpec(
    "largest_stable_learning_rate", _stable_limit, answers=1, rtol=0.02, diagnose=_what_happens,
    passed="correct: below it gradient descent converges, above it it diverges.",
    hint="the loss is quadratic in (m, b), and a step multiplies the error along each eigenvector of its "
    "Hessian by (1 − ηλ): find the largest η for which that factor still shrinks the error along the most "
    "curved direction, the one of the largest eigenvalue (the learning-rate section). Or try rates and watch "
    "the loss.",
), "answer", ("x", (1.0, 2.0)), doc="""Check the largest learning rate at which gradient descent on network 1's MSE
    still converges, for the training inputs ``x`` (chapter 2's by default); within 2 %, so an experiment's answer
    counts. A wrong answer is told whether gradient descent converges or diverges at it, and how far off it is.""")


EPOCH_MISTAKES = {
    "one step": "one step on the whole data set: take a step after every batch",
    "in order": "the examples are taken in their order: shuffle them once per epoch, with the generator you are given",
}
"""The mistakes :func:`minibatch_epoch` recognises, by name, each with what a matching answer is told."""


def _epoch(m: float, b: float, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float, seed: int,
           mistake: str = "") -> tuple:  # fmt: skip
    """One epoch over the batches ``companion.data.batches`` takes: a ``randperm`` of the indices, in slices."""
    shuffled = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    order = torch.arange(len(x)) if mistake == "in order" else shuffled
    size = len(x) if mistake == "one step" else batch_size
    for start in range(0, len(x), size):
        xb, yb = x[order[start : start + size]], y[order[start : start + size]]
        error = yb - (m * xb + b)
        m, b = m - lr * (-2 * xb * error).mean().item(), b - lr * (-2 * error).mean().item()
    return m, b


def _epoch_cases(gen: torch.Generator) -> list:
    x = 4 * torch.rand(30, generator=gen, dtype=torch.float64) - 2
    y = 2 * x + 1 + randn(gen, 30, scale=0.5)
    seeds = torch.randint(0, 2**31, (4,), generator=gen).tolist()
    return [(f"N = 30, batch_size = {size}, lr = 0.05", (-1.0, 5.0, x, y, size, 0.05, seed))
            for size, seed in zip((8, 1, 7, 30), seeds)]  # fmt: skip


minibatch_epoch = define(CheckSpec(
    "minibatch_epoch", _epoch, _epoch_cases, labels=("m after the epoch", "b after the epoch"), rtol=1e-9, atol=1e-12,
    apply=lambda student, *case: student(*case[:-1], torch.Generator().manual_seed(case[-1])),
    mistakes=keyed(_epoch, EPOCH_MISTAKES), passed="4 of 4 cases match the reference epoch.",
    forbidden=("companion.data.batches", "torch.utils.data.DataLoader.__init__"),
    hint="shuffle the indices once per epoch, with torch.randperm and the generator you are given (so that your "
    "order is the check's), and walk through them in slices of batch_size, the last one shorter; compute the MSE "
    "gradients on each batch and update m and b after every batch, not once per epoch.",
), doc="""Check ``student(m, b, x, y, batch_size, lr, generator) -> (m, b)``: one epoch of mini-batch gradient
    descent, the examples shuffled by ``torch.randperm(len(x), generator=generator)`` and taken in slices of
    ``batch_size``, as ``companion.data.batches`` takes them, without it or a ``DataLoader``; the student and the
    reference get identically seeded generators.""")
