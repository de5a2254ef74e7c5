"""The self-checks of chapter 12: each passes a right answer and explains plausible wrong ones
without giving the answer away."""

import copy

import pytest
import torch
from torch.nn import functional as F

from companion import check, instruct, lora, preference
from companion.check.finetune import _merge as lora_merge_reference


def merged(weight, a, b, alpha, rank_stabilized, transposed):
    r = a.shape[0]
    update = (alpha / r**0.5 if rank_stabilized else alpha / r) * b @ a
    return weight + (update.T if transposed else update)


def test_lora_merge():
    assert check.lora_merge(merged)
    assert check.lora_merge(
        lambda w, a, b, alpha, rs, t: w
        + torch.einsum("or,ri->io" if t else "or,ri->oi", b, a) * alpha / a.shape[0] ** (0.5 if rs else 1)
    )
    assert not check.lora_merge(...)
    unscaled = check.lora_merge(lambda w, a, b, alpha, rs, t: merged(w, a, b, a.shape[0], False, t))
    assert not unscaled and "not scaled" in unscaled.message
    plain = check.lora_merge(lambda w, a, b, alpha, rs, t: merged(w, a, b, alpha, False, t))
    assert not plain and "still the one of plain LoRA" in plain.message
    always = check.lora_merge(lambda w, a, b, alpha, rs, t: merged(w, a, b, alpha, True, t))
    assert not always and "rank_stabilized=False" in always.message
    update_only = check.lora_merge(lambda w, a, b, alpha, rs, t: merged(w, a, b, alpha, rs, t) - w)
    assert not update_only and "missing" in update_only.message
    assert check.lora_merge(lambda w, a, b, alpha, rs, t: merged(w, b.T, a.T, alpha, rs, not t))  # (BA)ᵀ = AᵀBᵀ
    assert not check.lora_merge(lambda w, a, b, alpha, rs, t: merged(w, a, b, alpha, rs, not t))


def test_a_merge_that_ignores_the_layout_is_named_where_the_weight_is_square():
    untransposed = check.lora_merge(lambda w, a, b, alpha, rs, t: merged(w, a, b, alpha, rs, False))
    assert not untransposed and "[in, out]" in untransposed.message and "square" in untransposed.message


def test_the_transposed_layout_is_gpt2s_as_peft_merges_it():
    """The reference's [in, out] merge equals peft's merge of a LoRA on GPT-2's Conv1D (fan_in_fan_out)."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=17, n_positions=8, n_embd=12, n_layer=1, n_head=2)).double()
    conv = gpt2.transformer.h[0].attn.c_attn  # weight [in 12, out 36]
    weight = conv.weight.detach().clone()
    for rank_stabilized in (False, True):
        settings = peft.LoraConfig(r=3, lora_alpha=6, target_modules=["c_attn"], fan_in_fan_out=True,
                                   use_rslora=rank_stabilized)
        adapted = peft.get_peft_model(copy.deepcopy(gpt2), settings)
        layer = adapted.base_model.model.transformer.h[0].attn.c_attn
        A, B = torch.randn(3, 12, dtype=torch.float64), torch.randn(36, 3, dtype=torch.float64)
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(A), layer.lora_B["default"].weight.copy_(B)
        theirs = adapted.merge_and_unload().transformer.h[0].attn.c_attn.weight
        ours = lora_merge_reference(weight, A, B, 6.0, rank_stabilized, True)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_lora_merge_without_the_course_layer():
    def borrowed(weight, a, b, alpha, rank_stabilized, transposed):
        layer = torch.nn.Linear(a.shape[1], b.shape[0]).double()
        wrapped = lora.LoRALinear(layer, r=a.shape[0], alpha=alpha)
        wrapped.lora_A.data, wrapped.lora_B.data = a, b
        scale = a.shape[0] ** 0.5 if rank_stabilized else 1.0
        update = wrapped.delta_weight() * scale
        return weight + (update.T if transposed else update)

    result = check.lora_merge(borrowed)
    assert not result and "do without" in result.message and "LoRALinear" in result.message


def test_the_chapters_forward_pass_is_not_a_merge():
    def forward(x, weight, bias, a, b, alpha):
        return x @ weight.T + bias + alpha / a.shape[0] * (x @ a.T) @ b.T

    assert not check.lora_merge(forward)


def ipo(pc, pr, rc, rr, beta):
    return (((pc - rc) - (pr - rr)) - 1 / (2 * beta)).pow(2).mean()


def dpo(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def test_ipo_loss():
    assert check.ipo_loss(ipo)
    assert check.ipo_loss(lambda pc, pr, rc, rr, b: torch.square(pc - pr - (rc - rr) - 0.5 / b).sum() / len(pc))
    assert not check.ipo_loss(...)
    swapped = check.ipo_loss(lambda pc, pr, rc, rr, b: ipo(pr, pc, rr, rc, b))
    assert not swapped and "swapped" in swapped.message
    beta_inside = check.ipo_loss(lambda pc, pr, rc, rr, b: ((b * ((pc - rc) - (pr - rr))) - 1 / (2 * b)).pow(2).mean())
    assert not beta_inside and "as in DPO" in beta_inside.message
    no_ref = check.ipo_loss(lambda pc, pr, rc, rr, b: ((pc - pr) - 1 / (2 * b)).pow(2).mean())
    assert not no_ref and "reference" in no_ref.message
    summed = check.ipo_loss(lambda pc, pr, rc, rr, b: (((pc - rc) - (pr - rr)) - 1 / (2 * b)).pow(2).sum())
    assert not summed and "summed" in summed.message
    whole = check.ipo_loss(lambda pc, pr, rc, rr, b: (((pc - rc) - (pr - rr)) - 1 / b).pow(2).mean())
    assert not whole and "half" in whole.message
    assert not check.ipo_loss(dpo)  # the chapter's DPO loss is another loss
    borrowed = check.ipo_loss(
        lambda pc, pr, rc, rr, b: ipo(*(r / b for r in preference.dpo_loss(pc, pr, rc, rr, b)[1:]), 0 * rc, 0 * rr, b)
    )
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
