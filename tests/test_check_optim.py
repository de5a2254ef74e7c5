"""companion.check, chapter 5: the self-checks of one Adam step, one momentum step, a warm-up + cosine schedule
and the size of Adam's uncorrected step.

Each check passes a right answer, fails realistic wrong ones with a message that names the case and how
it differs, never prints the expected values, and keeps the method for ``check.hint``.
"""

from __future__ import annotations

import math
import types
import re

import pytest
import torch

from companion import check


def adam_step_by_torch(theta, grad, m, v, t, lr, beta1, beta2, eps):
    """One step of torch.optim.Adam from the given state: an oracle independent of the check's reference."""
    p = theta.clone().requires_grad_()
    opt = torch.optim.Adam([p], lr=lr, betas=(beta1, beta2), eps=eps)
    opt.state[p] = {"step": torch.tensor(float(t - 1)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]


def adam_step_by_hand(theta, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return theta - lr * m_hat / (v_hat.sqrt() + eps), m, v


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text))


def test_the_reference_adam_step_agrees_with_torch():
    gen = torch.Generator().manual_seed(0)
    for t in (1, 2, 7, 300):
        theta, grad, m = (torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(3))
        v = torch.rand(6, generator=gen, dtype=torch.float64)
        args = (theta, grad, m, v, t, 0.01, 0.9, 0.999, 1e-8)
        for ours, theirs in zip(check.optim._adam_step(*args), adam_step_by_torch(*args)):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_adam_step_passes_a_solution_and_refuses_the_optimizers_own_step():
    assert check.adam_step(adam_step_by_hand)
    by_torch = check.adam_step(adam_step_by_torch)
    assert not by_torch and "do without torch.optim.Adam.step" in by_torch.message
    assert "your line" in by_torch.message
    assert torch.optim.Adam.step is not None and check.adam_step(adam_step_by_hand)  # restored afterwards


def with_mistake(reference, mistake):
    """A student's function that makes ``mistake``: the check's reference copied into a file of its own (the
    check blocks the reference and its copies in its own file)."""
    code = reference.__code__.replace(co_name="student", co_filename="student.py")
    copy = types.FunctionType(code, reference.__globals__)
    return lambda *args: copy(*args, mistake=mistake)


@pytest.mark.parametrize("mistake", check.ADAM_MISTAKES)
def test_adam_step_names_each_common_mistake(mistake):
    result = check.adam_step(with_mistake(check.optim._adam_step, mistake))
    assert not result
    assert f"It looks like this mistake: {check.ADAM_MISTAKES[mistake]}." in result.message
    assert "m̂" not in result.message and "√" not in result.message  # the formula stays in the hint


def test_adam_step_explains_an_unknown_mistake_and_bad_answers_without_the_expected_values():
    def flipped_sign(theta, grad, m, v, t, lr, beta1, beta2, eps):
        new, m, v = adam_step_by_hand(theta, grad, m, v, t, lr, beta1, beta2, eps)
        return 2 * theta - new, m, v

    result = check.adam_step(flipped_sign)
    assert not result and result.message.startswith("case 1 (shape (3,), t = 1, lr = 0.01, betas = (0.9, 0.999)")
    assert "the step (new θ − θ): every entry is off the same way: the sign is wrong" in result.message
    assert "looks like" not in result.message and "expected" not in result.message

    def twice_the_step(theta, grad, m, v, t, lr, beta1, beta2, eps):
        new, m, v = adam_step_by_hand(theta, grad, m, v, t, lr, beta1, beta2, eps)
        return theta + 2 * (new - theta), m, v

    doubled = check.adam_step(twice_the_step)
    assert not doubled and "it is 2 times too large" in doubled.message
    args = check.optim._adam_step  # the expected numbers of case 1 must not appear in the message
    gen = torch.Generator().manual_seed(6)
    theta, grad = torch.randn(3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(3, dtype=torch.float64)
    expected = args(theta, grad, zeros, zeros, 1, 0.01, 0.9, 0.999, 1e-8)
    shown = numbers_in(doubled.message)
    for tensor in expected:
        for x in tensor.tolist():
            assert not any(s in shown for s in (f"{x:.6g}", f"{x:.4g}", f"{x:.3g}"))

    two_outputs = check.adam_step(lambda theta, grad, m, v, *rest: (theta, m))
    assert not two_outputs and "expected 3 results (the step (new θ − θ), m, v), got 2" in two_outputs.message
    crashes = check.adam_step(lambda *args: 1 / 0)
    assert not crashes and "raised ZeroDivisionError" in crashes.message
    nothing = check.adam_step(lambda *args: None)
    assert not nothing and "returned None" in nothing.message
    assert not check.adam_step("adam")
    assert check.adam_step(...).message == check.PLACEHOLDER_MESSAGE


def test_adam_step_tries_a_zero_gradient():
    def skips_zero_gradients(theta, grad, m, v, t, lr, beta1, beta2, eps):
        if not grad.any():
            return theta, m, v
        return adam_step_by_hand(theta, grad, m, v, t, lr, beta1, beta2, eps)

    result = check.adam_step(skips_zero_gradients)
    assert not result and result.message.startswith("case 5")


def momentum_step_by_torch(theta, grad, buf, lr, momentum, nesterov):
    p = theta.clone().requires_grad_()
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=nesterov)
    opt.state[p] = {"momentum_buffer": buf.clone()}
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]["momentum_buffer"]


def momentum_step_by_hand(theta, grad, buf, lr, momentum, nesterov):
    buf = momentum * buf + grad
    return theta - lr * (grad + momentum * buf if nesterov else buf), buf


def test_the_reference_momentum_step_agrees_with_torch():
    gen = torch.Generator().manual_seed(1)
    for nesterov in (False, True):
        theta, grad, buf = (torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(3))
        args = (theta, grad, buf, 0.1, 0.9, nesterov)
        for ours, theirs in zip(check.optim._momentum_step(*args), momentum_step_by_torch(*args)):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_momentum_step_passes_a_solution_refuses_torch_and_names_each_common_mistake():
    assert check.momentum_step(momentum_step_by_hand)
    by_torch = check.momentum_step(momentum_step_by_torch)
    assert not by_torch and "do without torch.optim.SGD.step" in by_torch.message
    for mistake, explanation in check.MOMENTUM_MISTAKES.items():
        result = check.momentum_step(with_mistake(check.optim._momentum_step, mistake))
        assert not result and f"It looks like this mistake: {explanation}." in result.message
        assert "←" not in result.message


def test_momentum_step_reports_which_output_differs():
    result = check.momentum_step(lambda theta, grad, buf, lr, momentum, nesterov: (theta - lr * grad, buf))
    assert not result
    assert result.message.startswith("case 1 (shape (3,), lr = 0.1, momentum = 0.9, nesterov = False): buf:")
    assert check.momentum_step(...).message == check.PLACEHOLDER_MESSAGE


def warmup_cosine_by_hand(step, total_steps, warmup_steps, peak_lr, final_lr):
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_lr + (peak_lr - final_lr) * (1 + math.cos(math.pi * progress)) / 2


def test_warmup_cosine_reference_agrees_with_torch_cosine_annealing():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=0.001)
    for step in range(41):
        ours = check.optim._warmup_cosine_lr(step, 40, 0, 0.1, 0.001)
        assert ours == pytest.approx(scheduler.get_last_lr()[0], abs=1e-12)
        opt.step()
        scheduler.step()
    schedule = [check.optim._warmup_cosine_lr(s, 40, 8, 0.1, 0.001) for s in (0, 4, 8)]
    assert schedule == pytest.approx([0.0, 0.05, 0.1])


def test_warmup_cosine_passes_a_solution_and_names_each_common_mistake_without_the_formula():
    assert check.warmup_cosine_lr(warmup_cosine_by_hand)
    for mistake, explanation in check.SCHEDULE_MISTAKES.items():
        result = check.warmup_cosine_lr(with_mistake(check.optim._warmup_cosine_lr, mistake))
        assert not result and f"It looks like this mistake: {explanation}." in result.message
        assert "entries differ; at index" in result.message
        assert "cos(" not in result.message and "expected" not in result.message and "/" not in result.message
    assert "cos πp" in check.hint("warmup_cosine_lr").text


def test_warmup_cosine_explains_an_unknown_mistake_by_how_far_off():
    def cosine_over_all_steps(step, total_steps, warmup_steps, peak_lr, final_lr):
        if step < warmup_steps:
            return peak_lr * step / warmup_steps
        return final_lr + (peak_lr - final_lr) * (1 + math.cos(math.pi * step / total_steps)) / 2

    result = check.warmup_cosine_lr(cosine_over_all_steps)
    assert not result and "entries differ; at index (10,) it is too low, by 1–10 %" in result.message
    words = check.warmup_cosine_lr(lambda *args: "fast")
    assert not words and "at step 0 it returned str, not a number" in words.message


def test_warmup_cosine_reports_a_crash_with_its_step():
    def divides_by_warmup_always(step, total_steps, warmup_steps, peak_lr, final_lr):
        warmed_up = step / warmup_steps
        return warmup_cosine_by_hand(step, total_steps, warmup_steps, peak_lr, final_lr) if warmed_up >= 0 else 0.0

    result = check.warmup_cosine_lr(divides_by_warmup_always)
    expected_start = "(total_steps = 50, warmup_steps = 0, peak_lr = 1, final_lr = 0; the rates at steps 0, 1, …) raised"
    assert not result and expected_start in result.message and "your line" in result.message


def test_uncorrected_adam_ratio_computes_the_answer_and_never_shows_it():
    right = (1 - 0.9**10) / math.sqrt(1 - 0.999**10)
    assert check.uncorrected_adam_ratio(right)
    assert check.uncorrected_adam_ratio(round(right, 3))  # to 0.1 %
    assert check.uncorrected_adam_ratio(torch.tensor(right))
    assert check.uncorrected_adam_ratio(...).message == check.PLACEHOLDER_MESSAGE
    wrong_answers = {
        math.sqrt(10): "the value at step 1",
        1 / right: "the inverse",
        1 - 0.9**10: "only m left uncorrected",
        1 / math.sqrt(1 - 0.999**10): "only v left uncorrected",
        (1 - 0.9**10) / (1 - 0.999**10): "without the square root",
        5.0: "too low",
        -right: "the sign is wrong",
    }
    for answer, words in wrong_answers.items():
        result = check.uncorrected_adam_ratio(answer)
        assert not result and words in result.message, (answer, result.message)
        assert not numbers_in(result.message), result.message  # no number at all, so not the answer
    assert not check.uncorrected_adam_ratio("6.2")
    assert "(1 − β₁ᵗ)" in check.hint("uncorrected_adam_ratio").text


@pytest.mark.parametrize("name", ["adam_step", "momentum_step", "warmup_cosine_lr", "uncorrected_adam_ratio"])
def test_every_check_has_a_hint(name):
    assert len(check.hint(name).text) > 40
