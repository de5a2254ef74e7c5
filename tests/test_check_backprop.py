"""companion.check, chapter 3: each check passes a right answer and explains a plausible wrong one.

A failure message says which case fails and how, never the expected value; the method is in
the check's hint.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from companion import check
from companion.autograd import Value

# ---- chapter 3 ----------------------------------------------------------------------


def stable_softplus(v: Value) -> Value:
    e = math.exp(-abs(v.data))
    slope = 1 / (1 + e) if v.data >= 0 else e / (1 + e)
    return Value(max(v.data, 0.0) + math.log1p(e), parents=(v,), local_grads=(slope,))


def naive_softplus(v: Value) -> Value:
    """Right for moderate inputs; e^x overflows for x = 800."""
    return Value(math.log1p(math.exp(v.data)), parents=(v,), local_grads=(1 / (1 + math.exp(-v.data)),))


def test_softplus_accepts_a_stable_rule_and_tries_large_inputs() -> None:
    assert check.softplus(stable_softplus)
    assert check.softplus(lambda v: v.relu() + Value(math.log1p(math.exp(-abs(v.data))), (v,), (
        (math.exp(-abs(v.data)) if v.data <= 0 else -math.exp(-abs(v.data))) / (1 + math.exp(-abs(v.data))),)))
    assert 800.0 in check.backprop.SOFTPLUS_INPUTS and -800.0 in check.backprop.SOFTPLUS_INPUTS


@pytest.mark.parametrize("overflowing", [naive_softplus, lambda v: (v.exp() + 1).log()])
def test_softplus_fails_a_rule_that_overflows(overflowing) -> None:
    assert check.value_operation(overflowing, torch.nn.functional.softplus, "softplus")  # moderate inputs only
    result = check.softplus(overflowing)
    assert not result and result.message.startswith("case 8 (x = 800) raised OverflowError"), result.message
    assert "overflows a float" in result.message


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda v: Value(math.log1p(math.exp(v.data))), "does not depend on the input in the graph"),
        (
            lambda v: Value(math.log1p(math.exp(v.data)), parents=(v,), local_grads=(math.exp(v.data),)),
            "case 1 (x = -2): the gradient: it is too high, by 10–50 %",
        ),
        (lambda v: Value(math.exp(v.data), parents=(v,), local_grads=(math.exp(v.data),)), "the value: it is"),
        (lambda v: math.log1p(math.exp(v.data)), "expected a Value, got float"),
        (lambda v: v.log(), "raised ValueError: log needs a positive input"),
        (lambda v: None, "returned None"),
    ],
)
def test_softplus_explains_wrong_rules(wrong, message) -> None:
    result = check.softplus(wrong)
    assert not result and message in result.message, result.message


def test_softplus_never_shows_the_expected_value_and_hints_at_the_method() -> None:
    wrong_slope = check.softplus(
        lambda v: Value(math.log1p(math.exp(v.data)), parents=(v,), local_grads=(math.exp(v.data),))
    )
    wrong_value = check.softplus(lambda v: Value(math.exp(v.data), parents=(v,), local_grads=(math.exp(v.data),)))
    expected_slope, expected_value = 1 / (1 + math.exp(2)), math.log1p(math.exp(-2))  # at x = -2
    for result, number in ((wrong_slope, expected_slope), (wrong_value, expected_value)):
        assert f"{number:.6g}" not in str(result) and f"{number:.4f}" not in str(result), str(result)
        assert 'check.hint("softplus")' in str(result)
    assert "sigmoid" in check.hint("softplus").text and "log1p" in check.hint("softplus").text


def test_placeholders_fail() -> None:
    for a_check in (check.softplus, check.linear_backward, check.numerical_gradient):
        result = a_check(...)
        assert not result and "placeholder" in result.message
    assert not check.finite_difference_cost(..., ..., ...)
    assert not check.finite_difference_cost(3.5e11, ..., 3)


def linear_backward_solution(x, W, b, grad_y):
    return grad_y @ W, grad_y.T @ x, grad_y.sum(0)


def test_linear_backward_lets_a_solution_print_its_tensors(capsys) -> None:
    def printing(x, W, b, grad_y):
        print(grad_y.sum(0), f"{x}")  # PyTorch's printing unpacks forward-mode duals
        return linear_backward_solution(x, W, b, grad_y)

    result = check.linear_backward(printing)
    assert result, result.message


def test_linear_backward_accepts_the_matrix_rules() -> None:
    assert check.linear_backward(linear_backward_solution)


def test_linear_backward_accepts_gradients_that_still_carry_autograd_history() -> None:
    def with_history(x, W, b, grad_y):
        tracked = W.clone().requires_grad_()
        return grad_y @ tracked, grad_y.T @ x, grad_y.sum(0)

    assert check.linear_backward(with_history)


@pytest.mark.parametrize("create_graph", [False, True])
def test_linear_backward_does_without_autograd(create_graph) -> None:
    def via_autograd(x, W, b, grad_y):
        leaves = [t.clone().requires_grad_() for t in (x, W, b)]
        return torch.autograd.grad(leaves[0] @ leaves[1].T + leaves[2], leaves, grad_y, create_graph=create_graph)

    result = check.linear_backward(via_autograd)
    assert not result and "do without torch.autograd.grad" in result.message


@pytest.mark.parametrize(
    "library",
    [
        lambda t: (torch.nn.functional.softplus(t), torch.sigmoid(t)),
        lambda t: (torch.logaddexp(t, torch.zeros_like(t)), t.sigmoid()),
        lambda t: (torch.logaddexp(t, torch.zeros_like(t)), torch.special.expit(t)),
    ],
)
def test_softplus_does_without_pytorchs_softplus_and_sigmoid(library) -> None:
    def by_library(v: Value) -> Value:
        value, slope = library(torch.tensor(v.data, dtype=torch.float64))
        return Value(value.item(), parents=(v,), local_grads=(slope.item(),))

    result = check.softplus(by_library)
    assert not result and "do without" in result.message


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda x, W, b, g: (g @ W, x.T @ g, g.sum(0)), r"grad_W: expected shape \(2, 3\), got shape \(3, 2\)"),
        (lambda x, W, b, g: (g @ W, g.T @ x, g.mean(0)), r"case 2 .*grad_b: .*divided by B"),
        (lambda x, W, b, g: (g @ W, g.T @ x), "expected 3 results"),
        (lambda x, W, b, g: (-g @ W, g.T @ x, g.sum(0)), r"grad_x: every entry .* the sign is wrong"),
        (lambda x, W, b, g: None, "returned None"),
    ],
)
def test_linear_backward_explains_wrong_rules(wrong, message) -> None:
    result = check.linear_backward(wrong)
    assert not result and re.search(message, result.message), result.message
    assert "expected -" not in result.message and not re.search(r"expected \d(?! results)", result.message)


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
    assert not result and "one-sided difference" in result.message and "ε²" in result.message
    assert "f(x" not in result.message  # the formula is the hint's, not the failure's
    assert "2ε" in check.hint("numerical_gradient").text


def test_numerical_gradient_catches_a_missing_half_and_a_0d_input() -> None:
    result = check.numerical_gradient(lambda f, x, eps: 2 * central_difference(f, x, eps))
    assert not result and "2 times too large" in result.message and "one-sided" not in result.message

    def by_length(f, x, eps):
        return torch.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in torch.eye(len(x))])

    only_vectors = check.numerical_gradient(by_length)
    assert not only_vectors and "shape (2, 3)" in only_vectors.message


def test_numerical_gradient_refuses_autograd() -> None:
    def with_autograd(f, x, eps):
        leaf = x.clone().requires_grad_()
        return torch.autograd.grad(f(leaf), leaf)[0]

    def with_backward(f, x, eps):
        leaf = x.clone().requires_grad_()
        f(leaf).backward()
        return leaf.grad

    for cheat in (with_autograd, with_backward):
        result = check.numerical_gradient(cheat)
        assert not result and "do without" in result.message
    x = torch.ones(2, requires_grad=True)
    (x * x).sum().backward()  # restored afterwards
    assert x.grad.tolist() == [2.0, 2.0]


def test_finite_difference_cost() -> None:
    passes = 2 * 175e9
    assert check.finite_difference_cost(passes, passes / (365.25 * 24 * 3600), 3)
    assert check.finite_difference_cost(passes + 1, passes / (365 * 24 * 3600), 3.0)  # 365 days pass too
    one_sided = check.finite_difference_cost(175e9 + 1, (175e9 + 1) / (365.25 * 24 * 3600), 3)
    assert not one_sided and "forward passes: it is too low" in one_sided.message and "2 times" not in one_sided.message
    assert "It looks like this mistake: one forward pass per parameter" in one_sided.message
    in_days = check.finite_difference_cost(passes, passes / (24 * 3600), 3)
    assert not in_days and in_days.message.startswith("the number of years: it is too high")
    backward_only = check.finite_difference_cost(passes, passes / (365.25 * 24 * 3600), 2)
    assert not backward_only and backward_only.message.startswith("backpropagation's forward-pass equivalents: it "
                                                                  "is too low")
    for result in (one_sided, in_days, backward_only):
        assert "3.5" not in str(result) and "11" not in str(result) and "3 " not in str(result)
    assert "twice" in check.hint("finite_difference_cost").text
