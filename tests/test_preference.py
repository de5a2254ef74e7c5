"""companion.preference: sequence log-probabilities against PyTorch's cross-entropy and against a model run on
each prefix alone; the DPO loss against the paper's formula computed by hand; the KL against F.kl_div.

The DPO loss is checked against hand-computed values of Rafailov et al. (2023), eq. 7, in plain Python floats,
not against ``trl``: trl's loss is a method of its trainer, and trl pulls in ``datasets``, ``pandas`` and
``pyarrow``, which the course does not otherwise need.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from companion import preference
from companion.models import GPTConfig, TinyGPT

F64 = torch.float64
fast = settings(max_examples=25, deadline=None)
V = 13


def tiny_gpt(seed: int = 0) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(GPTConfig(vocab_size=V, context=12, dim=16, heads=2, layers=2)).to(F64)


def random_batch(seed: int, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and an answer mask: a prompt of 1 … T−1 tokens, an answer after it, maybe padding after that."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (batch, length), generator=gen)
    start = torch.randint(1, length, (batch, 1), generator=gen)
    stop = start + 1 + (torch.rand(batch, 1, generator=gen) * (length - start)).long()
    positions = torch.arange(length)
    return ids, (positions >= start) & (positions < stop)


@fast
@given(st.integers(1, 4), st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_sequence_logprobs_equal_torchs_cross_entropy_on_the_answer_tokens(batch, length, seed):
    model = tiny_gpt(seed % 5)
    ids, mask = random_batch(seed, batch, length)
    ours = preference.sequence_logprobs(model, ids, mask)
    logits = model(ids)
    for row in range(batch):
        targets = ids[row, 1:].masked_fill(~mask[row, 1:], -100)
        theirs = -F.cross_entropy(logits[row, :-1], targets, ignore_index=-100, reduction="sum")
        torch.testing.assert_close(ours[row], theirs, rtol=1e-12, atol=1e-12)


def test_each_answer_token_is_scored_from_its_prefix_alone():
    model = tiny_gpt(3)
    ids, mask = random_batch(7, 3, 9)
    ours = preference.sequence_logprobs(model, ids, mask)
    for row in range(3):
        by_prefix = sum(
            torch.log_softmax(model(ids[row : row + 1, :t])[0, -1], dim=-1)[ids[row, t]]
            for t in range(1, 9)
            if mask[row, t]
        )
        torch.testing.assert_close(ours[row], by_prefix, rtol=1e-12, atol=1e-12)


def test_sequence_logprobs_carry_the_gradient_to_the_model():
    model = tiny_gpt()
    ids, mask = random_batch(0, 2, 6)
    preference.sequence_logprobs(model, ids, mask).sum().backward()
    assert model.head.weight.grad.abs().sum() > 0


def dpo_by_hand(pc: list[float], pr: list[float], rc: list[float], rr: list[float], beta: float) -> tuple:
    """Eq. 7 of the paper in Python floats: the mean of −log σ(β·log(π/π_ref)(y_w) − β·log(π/π_ref)(y_l))."""
    losses, chosen, rejected = [], [], []
    for a, b, c, d in zip(pc, pr, rc, rr):
        r_w, r_l = beta * (a - c), beta * (b - d)
        z = r_w - r_l
        log_sigmoid = -math.log1p(math.exp(-z)) if z > 0 else z - math.log1p(math.exp(z))
        losses.append(-log_sigmoid)
        chosen.append(r_w)
        rejected.append(r_l)
    return sum(losses) / len(losses), chosen, rejected


logp = st.floats(-80, 0, allow_nan=False)


@fast
@given(st.integers(1, 6).flatmap(lambda n: st.lists(st.tuples(logp, logp, logp, logp), min_size=n, max_size=n)),
       st.sampled_from([0.01, 0.1, 0.5, 2.0]))  # fmt: skip
def test_dpo_loss_equals_the_papers_formula_by_hand(rows, beta):
    pc, pr, rc, rr = (list(column) for column in zip(*rows))
    tensors = [torch.tensor(column, dtype=F64, requires_grad=True) for column in (pc, pr, rc, rr)]
    loss, chosen, rejected = preference.dpo_loss(*tensors, beta=beta)
    expected, expected_chosen, expected_rejected = dpo_by_hand(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert chosen.tolist() == pytest.approx(expected_chosen, rel=1e-12, abs=1e-12)
    assert rejected.tolist() == pytest.approx(expected_rejected, rel=1e-12, abs=1e-12)
    assert not chosen.requires_grad and not rejected.requires_grad
    loss.backward()
    # dL/dz = −(1 − σ(z)) / B with z = r_w − r_l; dz/d(log π(y_w)) = β, dz/d(log π(y_l)) = −β
    n = len(pc)
    d_z = [-(1 - 1 / (1 + math.exp(-(w - l)))) / n for w, l in zip(expected_chosen, expected_rejected)]
    assert tensors[0].grad.tolist() == pytest.approx([beta * g for g in d_z], rel=1e-9, abs=1e-12)
    assert tensors[1].grad.tolist() == pytest.approx([-beta * g for g in d_z], rel=1e-9, abs=1e-12)


def test_dpo_loss_of_a_policy_equal_to_its_reference_is_log_2():
    logps = torch.tensor([-3.0, -7.5, -1.25])
    loss, chosen, rejected = preference.dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.3)
    assert loss.item() == pytest.approx(math.log(2))
    assert preference.reward_margin(chosen, rejected) == 0
    assert preference.preference_accuracy(chosen, rejected) == 0


def test_reward_margin_and_preference_accuracy():
    chosen, rejected = torch.tensor([1.0, 0.5, -2.0, 3.0]), torch.tensor([0.0, 0.5, -1.0, 1.0])
    assert preference.reward_margin(chosen, rejected) == pytest.approx((1 + 0 - 1 + 2) / 4)
    assert preference.preference_accuracy(chosen, rejected) == 0.5


def test_sequence_kl_equals_torchs_kl_div_and_is_zero_for_the_same_model():
    policy, reference = tiny_gpt(1), tiny_gpt(2)
    ids, mask = random_batch(4, 3, 10)
    ours = preference.sequence_kl(policy, reference, ids, mask)
    log_p, log_q = (F.log_softmax(m(ids)[:, :-1], dim=-1) for m in (policy, reference))
    per_token = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(ours, (per_token * mask[:, 1:]).sum(1), rtol=1e-12, atol=1e-12)
    assert (ours > 0).all()
    assert preference.sequence_kl(policy, policy, ids, mask).abs().max() < 1e-12


def test_dpo_steps_make_the_policy_prefer_the_chosen_answers():
    """A few steps of DPO on fixed pairs: the margin and the accuracy go up; the policy drifts from the reference."""
    reference, policy = tiny_gpt(5).requires_grad_(False), tiny_gpt(5)
    chosen, mask = random_batch(1, 6, 10)
    rejected = chosen.clone()
    rejected[mask] = (rejected[mask] + 1) % V
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for step in range(30):
        pc, pr = (preference.sequence_logprobs(policy, ids, mask) for ids in (chosen, rejected))
        rc, rr = (preference.sequence_logprobs(reference, ids, mask) for ids in (chosen, rejected))
        loss, r_w, r_l = preference.dpo_loss(pc, pr, rc, rr, beta=0.1)
        if step == 0:
            first = loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first == pytest.approx(math.log(2))
    assert loss.item() < 0.5 * first
    assert preference.preference_accuracy(r_w, r_l) == 1.0 and preference.reward_margin(r_w, r_l) > 0
    assert (preference.sequence_kl(policy, reference, chosen, mask) > 0).all()


def test_hugging_face_style_outputs_with_logits_are_read_too():
    model = tiny_gpt()

    class Output:
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits = logits

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, ids: torch.Tensor) -> Output:
            return Output(self.inner(ids))

    ids, mask = random_batch(2, 2, 5)
    assert torch.equal(preference.sequence_logprobs(Wrapped(), ids, mask), preference.sequence_logprobs(model, ids, mask))


def test_bad_calls_get_clear_errors():
    model = tiny_gpt()
    ids, mask = random_batch(0, 2, 5)
    with pytest.raises(ValueError, match=r"mask\[:, 0\] must be False"):
        preference.sequence_logprobs(model, ids, torch.ones_like(mask))
    with pytest.raises(TypeError, match="bool tensor of the ids' shape"):
        preference.sequence_logprobs(model, ids, mask.long())
    with pytest.raises(TypeError, match="integer tensor"):
        preference.sequence_logprobs(model, ids.double(), mask)
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="beta must be a positive"):
        preference.dpo_loss(x, x, x, x, beta=0)
    with pytest.raises(ValueError, match="same shape"):
        preference.dpo_loss(x, x, x, torch.zeros(2))
    with pytest.raises(TypeError, match="ref_chosen must be a float tensor"):
        preference.dpo_loss(x, x, [0.0, 0.0, 0.0], x)
    with pytest.raises(ValueError, match="same shape"):
        preference.preference_accuracy(x, torch.zeros(2))
