"""The self-checks of chapter 12: each passes a right answer and explains plausible wrong ones
without giving the answer away."""

import torch
from torch.nn import functional as F

from companion import check, instruct, lora, preference


def lora_layer(x, weight, bias, a, b, alpha):
    return x @ weight.T + bias + alpha / a.shape[0] * (x @ a.T) @ b.T


def test_lora_forward():
    assert check.lora_forward(lora_layer)
    assert check.lora_forward(lambda x, w, bias, a, b, alpha: F.linear(x, w + alpha / a.shape[0] * b @ a, bias))
    assert not check.lora_forward(...)
    unscaled = check.lora_forward(lambda x, w, bias, a, b, alpha: x @ w.T + bias + (x @ a.T) @ b.T)
    assert not unscaled and "not scaled" in unscaled.message
    times_r = check.lora_forward(lambda x, w, bias, a, b, alpha: x @ w.T + bias + alpha * a.shape[0] * x @ a.T @ b.T)
    assert not times_r and "α·r" in times_r.message
    update_only = check.lora_forward(lambda x, w, bias, a, b, alpha: alpha / a.shape[0] * (x @ a.T) @ b.T)
    assert not update_only and "missing" in update_only.message
    transposed = check.lora_forward(lambda x, w, bias, a, b, alpha: x @ w.T + bias + x @ b @ a)
    assert not transposed


def test_lora_forward_without_the_course_layer():
    def borrowed(x, weight, bias, a, b, alpha):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
        layer.weight.data, layer.bias.data = weight, bias
        wrapped = lora.LoRALinear(layer, r=a.shape[0], alpha=alpha)
        wrapped.lora_A.data, wrapped.lora_B.data = a, b
        return wrapped(x)

    result = check.lora_forward(borrowed)
    assert not result and "do without" in result.message and "LoRALinear" in result.message


def dpo(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def test_dpo_loss():
    assert check.dpo_loss(dpo)
    assert check.dpo_loss(lambda pc, pr, rc, rr, b: torch.log1p(torch.exp(-b * (pc - rc - pr + rr))).mean())
    assert not check.dpo_loss(...)
    swapped = check.dpo_loss(lambda pc, pr, rc, rr, b: dpo(pr, pc, rr, rc, b))
    assert not swapped and "swapped" in swapped.message
    no_beta = check.dpo_loss(lambda pc, pr, rc, rr, b: dpo(pc, pr, rc, rr, 1.0))
    assert not no_beta and "β is missing" in no_beta.message
    no_ref = check.dpo_loss(lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean())
    assert not no_ref and "reference" in no_ref.message
    summed = check.dpo_loss(lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum())
    assert not summed and "summed" in summed.message
    unsigned = check.dpo_loss(lambda pc, pr, rc, rr, b: F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean())
    assert not unsigned and "minus sign" in unsigned.message
    borrowed = check.dpo_loss(lambda pc, pr, rc, rr, b: preference.dpo_loss(pc, pr, rc, rr, b)[0])
    assert not borrowed and "do without" in borrowed.message


def mask(ids, start_id, end_id):
    out = torch.zeros_like(ids, dtype=torch.bool)
    for i, row in enumerate(ids.tolist()):
        inside = False
        for t, token in enumerate(row):
            if inside:
                out[i, t] = True
                if token == end_id:
                    break
            elif token == start_id:
                inside = True
    return out


def test_answer_only_mask():
    assert check.answer_only_mask(mask)
    assert not check.answer_only_mask(...)

    def without_end(ids, s, e):
        return mask(ids, s, e) & (ids != e)

    result = check.answer_only_mask(without_end)
    assert not result and "end token is left out" in result.message
    with_start = check.answer_only_mask(lambda ids, s, e: mask(ids, s, e) | (ids == s))
    assert not with_start and "start token" in with_start.message
    everything = check.answer_only_mask(lambda ids, s, e: mask(ids, s, e) | ((ids == e).int().cumsum(1) == 0))
    assert not everything and "prompt is marked" in everything.message
    padded = check.answer_only_mask(lambda ids, s, e: (ids == s).int().cumsum(1) - (ids == s).int() > 0)
    assert not padded and "padding" in padded.message
    as_int = check.answer_only_mask(lambda ids, s, e: mask(ids, s, e).long())
    assert not as_int and "bool" in as_int.message
    borrowed = check.answer_only_mask(instruct.answer_mask)
    assert not borrowed and "do without" in borrowed.message
