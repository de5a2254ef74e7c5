"""companion.check, chapters 2 and 3: each check passes a right answer and explains a plausible wrong one."""

from __future__ import annotations

import math
import re

import pytest
import torch

from companion import check, data
from companion.autograd import Value

# ---- chapter 2 ----------------------------------------------------------------------


def mse_gradients_by_hand(m, b, x, y):
    error = y - (m * x + b)
    return (-2 * x * error).mean(), (-2 * error).mean()


def test_mse_gradients_accepts_the_derivation() -> None:
    result = check.mse_gradients(mse_gradients_by_hand)
    assert result and "4 of 4 cases" in result.message


def test_mse_gradients_accepts_gradients_that_still_carry_autograd_history() -> None:
    def via_autograd(m, b, x, y):
        mt, bt = torch.tensor(m, requires_grad=True, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        grad_m = torch.autograd.grad(((y - (mt * x + bt)) ** 2).mean(), mt, create_graph=True)[0]
        return grad_m, (-2 * (y - (m * x + b))).mean()

    assert check.mse_gradients(via_autograd)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda m, b, x, y: [-g for g in mse_gradients_by_hand(m, b, x, y)], "the sign is flipped"),
        (lambda m, b, x, y: [g / 2 for g in mse_gradients_by_hand(m, b, x, y)], "factor 2 .* is missing"),
        (lambda m, b, x, y: [g * len(x) for g in mse_gradients_by_hand(m, b, x, y)], "divide by N"),
        (lambda m, b, x, y: ((-2 * (y - (m * x + b))).mean(),) * 2, r"case 1 \(m = -1, b = 5, N = 2\)"),
        (lambda m, b, x, y: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_mse_gradients_explains_wrong_answers(wrong, message) -> None:
    result = check.mse_gradients(wrong)
    assert not result and re.search(message, result.message), result.message


def test_largest_stable_learning_rate() -> None:
    limit = 4 / (7 + math.sqrt(45))  # 2 / λ_max of the Hessian [[5, 3], [3, 2]]
    assert check.largest_stable_learning_rate(limit)
    assert check.largest_stable_learning_rate(0.29)  # found by experiment: within 2 %
    too_large = check.largest_stable_learning_rate(0.31)
    assert not too_large and "diverges" in too_large.message and "1.125 > 1" in too_large.message
    too_small = check.largest_stable_learning_rate(0.1)
    assert not too_small and "so do larger rates" in too_small.message
    assert not check.largest_stable_learning_rate("0.29")  # type: ignore[arg-type]
    assert check.largest_stable_learning_rate(2 / (3 + math.sqrt(5)), x=(0.0, 2.0))  # H = [[4, 2], [2, 2]]
    assert not check.largest_stable_learning_rate(2 / (3 + math.sqrt(5)), x=(1.0, 2.0))


def minibatch_epoch_solution(m, b, x, y, batch_size, lr, generator):
    for xb, yb in data.batches(x, y, batch_size, generator=generator):
        grad_m, grad_b = mse_gradients_by_hand(m, b, xb, yb)
        m, b = m - lr * grad_m, b - lr * grad_b
    return m, b


def test_minibatch_epoch_accepts_a_step_per_batch() -> None:
    assert check.minibatch_epoch(minibatch_epoch_solution)


def test_minibatch_epoch_explains_one_step_per_epoch() -> None:
    def one_step(m, b, x, y, batch_size, lr, generator):
        grad_m, grad_b = mse_gradients_by_hand(m, b, x, y)
        return m - lr * grad_m, b - lr * grad_b

    result = check.minibatch_epoch(one_step)
    assert not result and "one step on the whole data set" in result.message


def test_minibatch_epoch_catches_an_unshuffled_epoch() -> None:
    def in_order(m, b, x, y, batch_size, lr, generator):
        for xb, yb in data.batches(x, y, batch_size, shuffle=False):
            grad_m, grad_b = mse_gradients_by_hand(m, b, xb, yb)
            m, b = m - lr * grad_m, b - lr * grad_b
        return m, b

    result = check.minibatch_epoch(in_order)
    assert not result and "case 1 (N = 30, batch_size = 8" in result.message and "one step" not in result.message


# ---- chapter 3 ----------------------------------------------------------------------


def softplus(v: Value) -> Value:
    return Value(math.log1p(math.exp(v.data)), parents=(v,), local_grads=(1 / (1 + math.exp(-v.data)),))


def test_value_operation_accepts_a_correct_rule() -> None:
    assert check.value_operation(softplus, torch.nn.functional.softplus, "softplus")
    assert check.value_operation(lambda v: (v.exp() + 1).log(), torch.nn.functional.softplus)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda v: Value(math.log1p(math.exp(v.data))), "does not depend on the input in the graph"),
        (
            lambda v: Value(math.log1p(math.exp(v.data)), parents=(v,), local_grads=(math.exp(v.data),)),
            "gradient is wrong: expected d/dx = 0.119203, got 0.135335. local_grads must hold",
        ),
        (lambda v: Value(math.exp(v.data), parents=(v,), local_grads=(math.exp(v.data),)), "the value is wrong"),
        (lambda v: math.log1p(math.exp(v.data)), "expected a Value, got float"),
        (lambda v: v.log(), "raised ValueError: log needs a positive input"),
    ],
)
def test_value_operation_explains_wrong_rules(wrong, message) -> None:
    result = check.value_operation(wrong, torch.nn.functional.softplus, "softplus")
    assert not result and message in result.message, result.message


def linear_backward_solution(x, W, b, grad_y):
    return grad_y @ W, grad_y.T @ x, grad_y.sum(0)


def test_linear_backward_accepts_the_matrix_rules() -> None:
    assert check.linear_backward(linear_backward_solution)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x, W, b, g: (g @ W, x.T @ g, g.sum(0)), r"grad_W: expected shape \(2, 3\), got shape \(3, 2\)"),
        (lambda x, W, b, g: (g @ W, g.T @ x, g.mean(0)), "grad_b: 3 of 3 entries differ.*averaged over the batch"),
        (lambda x, W, b, g: (g @ W, g.T @ x), "expected three gradients"),
    ],
)
def test_linear_backward_explains_wrong_rules(wrong, message) -> None:
    result = check.linear_backward(wrong)
    assert not result and re.search(message, result.message), result.message


def central_difference(f, x, eps):
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        step = torch.zeros_like(x).flatten()
        step[i] = eps
        step = step.reshape(x.shape)
        grad.view(-1)[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def test_numerical_gradient_accepts_central_differences() -> None:
    assert check.numerical_gradient(central_difference)


def test_numerical_gradient_explains_one_sided_differences() -> None:
    def forward_difference(f, x, eps):
        return torch.stack(
            [(f(x + eps * e.reshape(x.shape)) - f(x)) / eps for e in torch.eye(x.numel(), dtype=x.dtype)]
        ).reshape(x.shape)

    result = check.numerical_gradient(forward_difference)
    assert not result and "one-sided difference" in result.message and "O(ε²)" in result.message


def test_numerical_gradient_catches_a_missing_half() -> None:
    result = check.numerical_gradient(lambda f, x, eps: 2 * central_difference(f, x, eps))
    assert not result and "entries differ" in result.message and "one-sided" not in result.message
