"""companion.check, chapter 8: the self-checks of one GRU step, clipping by norm and the trigram loss.

Each check passes correct answers computed independently (torch's own layers and clipping, plain loops),
fails realistic wrong answers with a message that names the case and the mistake, and never prints the
expected values.
"""

from __future__ import annotations

import math
import re
import types

import pytest
import torch
from torch import nn

from companion import check
from companion.check import recurrent as rec


def numbers_in(message: str) -> set[str]:
    """Decimal numbers with at least three significant digits in a message (expected values would be such)."""
    return set(re.findall(r"-?\d+\.\d{3,}", message))


def copy_of(reference):
    """A student's function with the code of a check's reference, in a file of its own (the check blocks the
    reference and its copies in its own file)."""
    code = reference.__code__.replace(co_name="student", co_filename="student.py")
    return types.FunctionType(code, reference.__globals__)


def with_mistake(reference, mistake):
    return lambda *args: copy_of(reference)(*args, mistake=mistake)


# --- clip_grad_norm ----------------------------------------------------------------------------


def clip_by_torch_copy(grads, max_norm):
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params], total


def clip_by_hand(grads, max_norm):
    total = math.sqrt(sum(float((g**2).sum()) for g in grads))
    scale = max_norm / total if total > max_norm else 1.0
    return [g * scale for g in grads], total


def test_clip_grad_norm_passes_correct_solutions():
    assert check.clip_grad_norm(clip_by_hand)
    forbidden = check.clip_grad_norm(clip_by_torch_copy)  # torch's own clipping is what the exercise does without
    assert not forbidden and "do without torch.nn.utils.clip_grad_norm_" in forbidden.message
    params = [torch.zeros(2, requires_grad=True)]  # and the forbidden function works again afterwards
    params[0].grad = torch.tensor([3.0, 4.0])
    assert float(torch.nn.utils.clip_grad_norm_(params, 1.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("mistake", check.CLIP_MISTAKES)
def test_clip_grad_norm_names_each_common_mistake(mistake):
    result = check.clip_grad_norm(with_mistake(rec._clip, mistake))
    assert not result
    assert f"It looks like this mistake: {check.CLIP_MISTAKES[mistake]}." in result.message, result.message
    assert not numbers_in(result.message)


def test_clip_grad_norm_explains_other_failures():
    divides_by_zero = check.clip_grad_norm(
        lambda grads, m: ([g * m / torch.sqrt(sum((g**2).sum() for g in grads)) for g in grads], 0.0)
    )
    assert not divides_by_zero
    no_norm = check.clip_grad_norm(lambda grads, m: clip_by_hand(grads, m)[0])
    assert not no_norm and "expected 2 results (the clipped gradients, the total norm)" in no_norm.message
    wrong_norm = check.clip_grad_norm(lambda grads, m: (clip_by_hand(grads, m)[0], 1.0))
    assert not wrong_norm and "the total norm:" in wrong_norm.message
    flat = check.clip_grad_norm(lambda grads, m: (torch.cat([g.flatten() for g in grads]), 1.0))
    assert not flat and "the clipped gradients: expected 1 result, got Tensor" in flat.message


# --- gru_step ----------------------------------------------------------------------------------


def gru_step_by_torch(x, h, W_ih, W_hh, b_ih, b_hh):
    cell = nn.GRUCell(W_ih.shape[1], h.shape[1]).double()
    with torch.no_grad():
        for name, value in [("weight_ih", W_ih), ("weight_hh", W_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)]:
            getattr(cell, name).copy_(value)
        return cell(x, h)


def gru_step_by_companion(x, h, W_ih, W_hh, b_ih, b_hh):
    from companion import recurrent

    return recurrent.gru_cell(x, h, W_ih, W_hh, b_ih, b_hh)


def test_gru_step_refuses_the_courses_own_cell():
    result = check.gru_step(gru_step_by_companion)
    assert not result and "do without companion.recurrent.gru_cell" in result.message


def test_gru_steps_reference_is_pytorchs_gru_cell_which_the_exercise_does_without():
    gen = torch.Generator().manual_seed(0)
    for _, case in rec._gru_cases(gen):
        torch.testing.assert_close(rec._gru_step(*case), gru_step_by_torch(*case), rtol=1e-12, atol=1e-12)
    result = check.gru_step(gru_step_by_torch)
    assert not result and "do without torch" in result.message, result.message


@pytest.mark.parametrize("mistake", check.GRU_STEP_MISTAKES)
def test_gru_step_names_each_common_mistake(mistake):
    result = check.gru_step(with_mistake(rec._gru_step, mistake))
    assert not result
    assert f"It looks like this mistake: {check.GRU_STEP_MISTAKES[mistake]}." in result.message, result.message
    assert not numbers_in(result.message)


def test_gru_step_explains_other_failures():
    assert not check.gru_step(lambda *args: None)
    old_state = check.gru_step(lambda x, h, *weights: h)
    assert not old_state and old_state.message.startswith("case 1 (N = 1, F = 3, H = 2):")
    assert "looks like" not in old_state.message and not numbers_in(old_state.message)


# --- trigram_loss ------------------------------------------------------------------------------


def bigram_by_loops(train, val, V):
    counts = [[1] * V for _ in range(V)]
    for a, b in zip(train.tolist(), train.tolist()[1:]):
        counts[a][b] += 1
    pairs = list(zip(val.tolist(), val.tolist()[1:]))
    return sum(-math.log(counts[a][b] / sum(counts[a])) for a, b in pairs) / len(pairs)


def trigram_by_dict(train, val, V):
    counts: dict[tuple[int, int, int], int] = {}
    t = train.tolist()
    for a, b, c in zip(t, t[1:], t[2:]):
        counts[a, b, c] = counts.get((a, b, c), 0) + 1
    v = val.tolist()
    total = 0.0
    for a, b, c in zip(v, v[1:], v[2:]):
        context = sum(counts.get((a, b, k), 0) for k in range(V))
        total -= math.log((counts.get((a, b, c), 0) + 1) / (context + V))
    return total / (len(v) - 2)


def test_trigram_loss_passes_a_correct_solution():
    result = check.trigram_loss(trigram_by_dict)
    assert result, result.message


@pytest.mark.parametrize("mistake", check.TRIGRAM_MISTAKES)
def test_trigram_loss_names_each_common_mistake(mistake):
    result = check.trigram_loss(lambda train, val, V: copy_of(rec._ngram)(train, val, V, 3, mistake=mistake))
    assert not result, mistake
    assert f"It looks like this mistake: {check.TRIGRAM_MISTAKES[mistake]}." in result.message, result.message
    assert not numbers_in(result.message)


def test_trigram_loss_explains_other_failures():
    result = check.trigram_loss(lambda train, val, V: 1.0)
    assert not result and result.message.startswith("case 1 (train 'ababab', validation 'abab', V = 2): it is too")
    assert not numbers_in(result.message)
    assert not check.trigram_loss(lambda *args: None)
    assert not check.trigram_loss(bigram_by_loops)  # the bigram is not the trigram
    assert "index_put_" in str(check.hint("trigram_loss"))


def test_trigram_counts_that_do_not_add_up_repeats_are_named():
    def indexed_increment(train, val, V):
        counts = torch.ones(V, V, V)
        counts[train[:-2], train[1:-1], train[2:]] += 1  # a repeated triple is counted once
        probs = counts / counts.sum(-1, keepdim=True)
        return -probs[val[:-2], val[1:-1], val[2:]].log().mean()

    result = check.trigram_loss(indexed_increment)
    assert not result and "repeated triples must add up" in result.message, result.message
    assert "validation text" not in result.message
