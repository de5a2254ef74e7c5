"""companion.check, chapter 4: the self-checks of one Adam step, one momentum step and a warm-up + cosine schedule."""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("solution", [adam_step_by_torch, adam_step_by_hand])
def test_adam_step_passes_correct_solutions(solution):
    result = check.adam_step(solution)
    assert result, result.message


def with_mistake(reference, mistake):
    return lambda *args: reference(*args, mistake=mistake)


@pytest.mark.parametrize("mistake", check.ADAM_MISTAKES)
def test_adam_step_names_each_common_mistake(mistake):
    result = check.adam_step(with_mistake(check._adam_step, mistake))
    assert not result
    assert f"It looks like this mistake: {check.ADAM_MISTAKES[mistake]}." in result.message


def test_adam_step_explains_an_unknown_mistake_and_bad_answers():
    def flipped_sign(theta, grad, m, v, t, lr, beta1, beta2, eps):
        theta, m, v = adam_step_by_hand(theta, grad, m, v, t, lr, beta1, beta2, eps)
        return -theta, m, v

    result = check.adam_step(flipped_sign)
    assert not result and result.message.startswith("case 1 (shape (3,), t = 1, lr = 0.01, betas = (0.9, 0.999)")
    assert "θ: 3 of 3 entries differ" in result.message and "looks like" not in result.message
    two_outputs = check.adam_step(lambda theta, grad, m, v, *rest: (theta, m))
    assert not two_outputs and "expected a tuple of 3 results, got tuple" in two_outputs.message
    crashes = check.adam_step(lambda *args: 1 / 0)
    assert not crashes and "raised ZeroDivisionError" in crashes.message
    assert not check.adam_step("adam")


def momentum_step_by_torch(theta, grad, buf, lr, momentum, nesterov):
    p = theta.clone().requires_grad_()
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=nesterov)
    opt.state[p] = {"momentum_buffer": buf.clone()}
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]["momentum_buffer"]


def test_momentum_step_passes_torch_and_names_each_common_mistake():
    assert check.momentum_step(momentum_step_by_torch)
    for mistake, explanation in check.MOMENTUM_MISTAKES.items():
        result = check.momentum_step(with_mistake(check._momentum_step, mistake))
        assert not result and f"It looks like this mistake: {explanation}." in result.message


def test_momentum_step_reports_which_output_differs():
    result = check.momentum_step(lambda theta, grad, buf, lr, momentum, nesterov: (theta - lr * grad, buf))
    assert not result
    assert result.message.startswith("case 1 (shape (3,), lr = 0.1, momentum = 0.9, nesterov = False): buf:")


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
        assert check._warmup_cosine_lr(step, 40, 0, 0.1, 0.001) == pytest.approx(scheduler.get_last_lr()[0], abs=1e-12)
        opt.step()
        scheduler.step()
    assert [check._warmup_cosine_lr(s, 40, 8, 0.1, 0.001) for s in (0, 4, 8)] == pytest.approx([0.0, 0.05, 0.1])


def test_warmup_cosine_passes_a_solution_and_names_each_common_mistake():
    assert check.warmup_cosine_lr(warmup_cosine_by_hand)
    for mistake, explanation in check.SCHEDULE_MISTAKES.items():
        result = check.warmup_cosine_lr(with_mistake(check._warmup_cosine_lr, mistake))
        assert not result and f"It looks like this mistake: {explanation}." in result.message
        assert "steps differ; the first is step" in result.message


def test_warmup_cosine_reports_a_crash_with_its_step():
    def divides_by_warmup_always(step, total_steps, warmup_steps, peak_lr, final_lr):
        warmed_up = step / warmup_steps
        return warmup_cosine_by_hand(step, total_steps, warmup_steps, peak_lr, final_lr) if warmed_up >= 0 else 0.0

    result = check.warmup_cosine_lr(divides_by_warmup_always)
    assert not result and "(total_steps = 50, warmup_steps = 0, peak_lr = 1, final_lr = 0) at step 0 raised" in (
        result.message
    )
