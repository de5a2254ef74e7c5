"""companion.check, chapter 2: each check passes a right answer, explains plausible wrong ones,
and never prints the expected numbers; the method is in the check's hint."""

from __future__ import annotations

import math
import re

import pytest
import torch

from companion import check, data

# ---- quadratic_gradients ------------------------------------------------------------------


def quadratic_by_hand(a, b, c, x, y):
    error = y - (a * x**2 + b * x + c)
    return (-2 * x**2 * error).mean(), (-2 * x * error).mean(), (-2 * error).mean()


def test_quadratic_gradients_accepts_the_derivation_as_floats_or_tensors() -> None:
    result = check.quadratic_gradients(quadratic_by_hand)
    assert result and "5 of 5 cases" in result.message
    assert check.quadratic_gradients(lambda *args: [g.item() for g in quadratic_by_hand(*args)])
    assert check.quadratic_gradients(lambda *args: torch.stack(quadratic_by_hand(*args)))


def _expected_first_case() -> list[float]:
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    y = torch.tensor([3.0, 5.0, 7.0], dtype=torch.float64)
    return [g.item() for g in quadratic_by_hand(0.5, -1.0, 2.0, x, y)]


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda *args: [-g for g in quadratic_by_hand(*args)], "∂L/∂a: the sign is wrong.* sign is flipped"),
        (lambda *args: [g / 2 for g in quadratic_by_hand(*args)], "2 times too small.*factor 2"),
        (lambda *args: [g * len(args[3]) for g in quadratic_by_hand(*args)], "divide by N"),
        (  # x in place of x² for a
            lambda a, b, c, x, y: (quadratic_by_hand(a, b, c, x, y)[1],) + quadratic_by_hand(a, b, c, x, y)[1:],
            r"case 1 .*∂L/∂a: it is too low",
        ),
        (  # the model forgets the x² term in the error
            lambda a, b, c, x, y: quadratic_by_hand(0.0, b, c, x, y),
            r"case 1 .*∂L/∂a",
        ),
        (  # the c gradient without the mean: caught only where it matters (N > 1)
            lambda a, b, c, x, y: quadratic_by_hand(a, b, c, x, y)[:2] + ((-2 * (y - (a * x**2 + b * x + c))).sum(),),
            r"case 1 .*∂L/∂c: it is 3 times too large",
        ),
    ],
)
def test_quadratic_gradients_explains_wrong_answers_without_the_numbers(wrong, message) -> None:
    result = check.quadratic_gradients(wrong)
    assert not result and re.search(message, result.message), result.message
    for number in _expected_first_case():
        for text in (f"{number:g}", f"{number:.4g}", f"{number:.2f}"):
            assert text not in result.message.split(":", 1)[1], (number, result.message)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda a, b, c, x, y: quadratic_by_hand(a, b, c, x, y)[:2], "expected 3 results"),
        (lambda a, b, c, x, y: None, "returned None"),
        (lambda a, b, c, x, y: torch.zeros(2, 2), "expected 3 results"),
    ],
)
def test_quadratic_gradients_explains_malformed_answers(wrong, message) -> None:
    result = check.quadratic_gradients(wrong)
    assert not result and re.search(message, result.message), result.message


def test_quadratic_gradients_catches_a_version_that_fails_on_zero_inputs_or_one_example() -> None:
    def divides_by_x(a, b, c, x, y):  # ∂L/∂a written as x·(∂L/∂b-terms): 0/0 on zero inputs
        error = y - (a * x**2 + b * x + c)
        return (-2 * x**3 * error / x).mean(), (-2 * x * error).mean(), (-2 * error).mean()

    result = check.quadratic_gradients(divides_by_x)
    assert not result and "case 3" in result.message and "NaN" in result.message

    def unbiased_mean(a, b, c, x, y):  # divides by N − 1
        return [g * len(x) / (len(x) - 1) for g in quadratic_by_hand(a, b, c, x, y)]

    result = check.quadratic_gradients(unbiased_mean)
    assert not result and "case 1" in result.message


def test_quadratic_gradients_forbids_autograd() -> None:
    def with_backward(a, b, c, x, y):
        p = torch.tensor([a, b, c], dtype=torch.float64, requires_grad=True)
        ((y - (p[0] * x**2 + p[1] * x + p[2])) ** 2).mean().backward()
        return tuple(p.grad)

    def with_grad(a, b, c, x, y):
        p = torch.tensor([a, b, c], dtype=torch.float64, requires_grad=True)
        return tuple(torch.autograd.grad(((y - (p[0] * x**2 + p[1] * x + p[2])) ** 2).mean(), p)[0])

    for student in (with_backward, with_grad):
        result = check.quadratic_gradients(student)
        assert not result and "do without torch." in result.message
    # autograd works again afterwards
    t = torch.tensor(2.0, requires_grad=True)
    (t**2).backward()
    assert t.grad.item() == 4.0


def test_quadratic_gradients_placeholder_and_hint() -> None:
    assert check.quadratic_gradients(...).message == check.PLACEHOLDER_MESSAGE
    assert not check.quadratic_gradients("f")
    assert "through x²" in check.hint("quadratic_gradients").text


# ---- largest_stable_learning_rate -------------------------------------------------------

LIMIT = 4 / (7 + math.sqrt(45))  # 2 / λ_max of the Hessian [[5, 3], [3, 2]]
LAMBDA_MAX = (7 + math.sqrt(45)) / 2


def test_largest_stable_learning_rate_accepts_the_limit_and_an_experiment() -> None:
    assert check.largest_stable_learning_rate(LIMIT)
    assert check.largest_stable_learning_rate(0.29)  # found by experiment: within 2 %
    assert check.largest_stable_learning_rate(2 / (3 + math.sqrt(5)), x=(0.0, 2.0))  # H = [[4, 2], [2, 2]]
    assert not check.largest_stable_learning_rate(2 / (3 + math.sqrt(5)), x=(1.0, 2.0))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (0.31, "too high, by 1–10 %.*diverges"),
        (0.6, "too high, by more than 50 %.*diverges"),
        (0.1, "too low, by more than 50 %.*converges, but so do larger rates"),
        (0.2, "too low, by 10–50 %.*converges, but so do larger rates"),
        (0.0, "a learning rate is positive"),
    ],
)
def test_largest_stable_learning_rate_never_gives_the_limit_or_the_curvature(answer, message) -> None:
    result = check.largest_stable_learning_rate(answer)
    assert not result and re.search(message, result.message), result.message
    text = str(result)
    for secret in (LIMIT, LAMBDA_MAX, LAMBDA_MAX / 2, 1 - 0.31 * LAMBDA_MAX):
        for digits in (2, 3, 4):
            assert f"{abs(secret):.{digits}f}" not in text, (secret, text)
    assert "λ" not in result.message and "|1 −" not in result.message


@pytest.mark.parametrize(
    ("answer", "message"),
    [("0.29", "expected a number, got a string"), (float("nan"), "NaN or infinity"), (None, "no answer yet"),
     (..., "placeholder")],
)
def test_largest_stable_learning_rate_explains_non_numbers(answer, message) -> None:
    result = check.largest_stable_learning_rate(answer)
    assert not result and re.search(message, result.message), result.message


def test_largest_stable_learning_rate_hint_holds_the_method() -> None:
    assert "largest eigenvalue" in check.hint("largest_stable_learning_rate").text


# ---- minibatch_epoch ----------------------------------------------------------------------


def mse_gradients_by_hand(m, b, x, y):
    error = y - (m * x + b)
    return (-2 * x * error).mean(), (-2 * error).mean()


def minibatch_epoch_solution(m, b, x, y, batch_size, lr, generator):
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        grad_m, grad_b = mse_gradients_by_hand(m, b, x[idx], y[idx])
        m, b = m - lr * grad_m, b - lr * grad_b
    return m, b


def test_minibatch_epoch_accepts_a_step_per_batch() -> None:
    assert check.minibatch_epoch(minibatch_epoch_solution)


def test_minibatch_epoch_takes_the_batches_of_data_batches() -> None:
    """The reference's written-out batches are those of companion.data.batches with the same generator."""
    x, y = torch.randn(23, dtype=torch.float64), torch.randn(23, dtype=torch.float64)
    by_library = (1.0, -1.0)
    for xb, yb in data.batches(x, y, 5, generator=torch.Generator().manual_seed(7)):
        grad_m, grad_b = mse_gradients_by_hand(*by_library, xb, yb)
        by_library = (by_library[0] - 0.1 * grad_m.item(), by_library[1] - 0.1 * grad_b.item())
    by_hand = minibatch_epoch_solution(1.0, -1.0, x, y, 5, 0.1, torch.Generator().manual_seed(7))
    assert by_library == pytest.approx([float(v) for v in by_hand], rel=1e-12)


@pytest.mark.parametrize("loader", ["course", "torch"])
def test_minibatch_epoch_does_without_a_library_batcher(loader) -> None:
    def by_library(m, b, x, y, batch_size, lr, generator):
        if loader == "course":
            pairs = data.batches(x, y, batch_size, generator=generator)
        else:
            dataset = torch.utils.data.TensorDataset(x, y)
            pairs = torch.utils.data.DataLoader(dataset, batch_size, shuffle=True, generator=generator)
        for xb, yb in pairs:
            grad_m, grad_b = mse_gradients_by_hand(m, b, xb, yb)
            m, b = m - lr * grad_m, b - lr * grad_b
        return m, b

    result = check.minibatch_epoch(by_library)
    assert not result and "do without" in result.message


def test_minibatch_epoch_explains_one_step_per_epoch() -> None:
    def one_step(m, b, x, y, batch_size, lr, generator):
        grad_m, grad_b = mse_gradients_by_hand(m, b, x, y)
        return m - lr * grad_m, b - lr * grad_b

    result = check.minibatch_epoch(one_step)
    assert not result and "one step on the whole data set" in result.message
    assert not re.search(r"\d\.\d{3}", result.message.split(")", 1)[1]), result.message


def test_minibatch_epoch_catches_an_unshuffled_epoch() -> None:
    def in_order(m, b, x, y, batch_size, lr, generator):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            grad_m, grad_b = mse_gradients_by_hand(m, b, xb, yb)
            m, b = m - lr * grad_m, b - lr * grad_b
        return m, b

    result = check.minibatch_epoch(in_order)
    assert not result and "in their order" in result.message and "one step" not in result.message


def test_minibatch_epoch_catches_a_sum_over_the_batch() -> None:
    def summed(m, b, x, y, batch_size, lr, generator):
        for xb, yb in data.batches(x, y, batch_size, generator=generator):
            error = yb - (m * xb + b)
            m, b = m - lr * (-2 * xb * error).sum(), b - lr * (-2 * error).sum()
        return m, b

    result = check.minibatch_epoch(summed)
    assert not result and "case 1" in result.message


def test_minibatch_epoch_placeholder_and_hint() -> None:
    def placeholder(m, b, x, y, batch_size, lr, generator):
        ...  # your code here

    assert "returned None" in check.minibatch_epoch(placeholder).message
    assert check.minibatch_epoch(...).message == check.PLACEHOLDER_MESSAGE
    assert "torch.randperm" in check.hint("minibatch_epoch").text
