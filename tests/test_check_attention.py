"""The self-checks of chapter 9: each passes a right answer and explains plausible wrong ones
without giving the answer away."""

import math
import re

import torch
from torch.nn import functional as F

from companion import check


def weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def test_attention_weights():
    assert check.attention_weights(weights)
    assert check.attention_weights(lambda q, k: F.softmax(q @ k.mT * q.shape[-1] ** -0.5, dim=-1))
    assert not check.attention_weights(...)
    unscaled = check.attention_weights(lambda q, k: torch.softmax(q @ k.transpose(-2, -1), dim=-1))
    assert not unscaled and "not divided by √d_k" in unscaled.message
    by_d = check.attention_weights(lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1))
    assert not by_d and "divided by d_k instead" in by_d.message
    wrong_dim = check.attention_weights(
        lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2)
    )
    assert not wrong_dim and "over the queries" in wrong_dim.message
    no_softmax = check.attention_weights(lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
    assert not no_softmax and "softmax is missing" in no_softmax.message
    only_3d = check.attention_weights(lambda q, k: torch.softmax(torch.bmm(q, k.transpose(1, 2)) / 2, dim=-1))
    assert not only_3d and "case 1" in only_3d.message
    fused = check.attention_weights(
        lambda q, k: F.scaled_dot_product_attention(q, k, torch.eye(k.shape[-2]).expand(*k.shape[:-1], -1))
    )
    assert not fused and "do without" in fused.message


def test_causal_mask():
    assert check.causal_mask(lambda n: torch.ones(n, n, dtype=torch.bool).tril())
    assert check.causal_mask(lambda n: torch.arange(n)[None, :] <= torch.arange(n)[:, None])
    assert not check.causal_mask(...)
    upper = check.causal_mask(lambda n: torch.ones(n, n, dtype=torch.bool).triu())
    assert not upper and "transposed" in upper.message and "case 2 (n=2)" in upper.message
    inverted = check.causal_mask(lambda n: torch.ones(n, n, dtype=torch.bool).triu(1))
    assert not inverted and "swapped" in inverted.message
    strict = check.causal_mask(lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1))
    assert not strict and "diagonal" in strict.message and "case 1 (n=1)" in strict.message
    as_float = check.causal_mask(lambda n: torch.ones(n, n).tril())
    assert not as_float and "bool" in as_float.message
    crashes = check.causal_mask(lambda n: torch.ones(n, n, dtype=torch.bool).tril()[:, :1].expand(n, n + 1))
    assert not crashes and "shape" in crashes.message


def head(x, w_q, w_k, w_v):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    n = x.shape[1]
    scores = q @ k.transpose(1, 2) / math.sqrt(w_q.shape[1])
    scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), -math.inf)
    return scores.softmax(-1) @ v


def test_attention_head():
    assert check.attention_head(head)
    assert not check.attention_head(...)

    def unmasked(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        return (q @ k.transpose(1, 2) / math.sqrt(w_q.shape[1])).softmax(-1) @ v

    result = check.attention_head(unmasked)
    assert not result and "causal mask is missing" in result.message

    def masked_after(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        n = x.shape[1]
        weights = (q @ k.transpose(1, 2) / math.sqrt(w_q.shape[1])).softmax(-1)
        return weights.masked_fill(torch.ones(n, n).triu(1).bool(), 0.0) @ v

    result = check.attention_head(masked_after)
    assert not result and "after the softmax" in result.message

    def model_scale(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        n = x.shape[1]
        scores = q @ k.transpose(1, 2) / math.sqrt(x.shape[-1])
        return scores.masked_fill(torch.ones(n, n).triu(1).bool(), -math.inf).softmax(-1) @ v

    result = check.attention_head(model_scale)
    assert not result and "√d of the model" in result.message

    def fused(x, w_q, w_k, w_v):
        return F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, is_causal=True)

    result = check.attention_head(fused)
    assert not result and "do without torch.nn.functional.scaled_dot_product_attention" in result.message

    def wrong_projection(x, w_q, w_k, w_v):
        return head(x, w_q, w_q, w_v)  # keys made with the query weights

    result = check.attention_head(wrong_projection)
    assert not result and "case 2" in result.message


def test_transformer_block_parameters():
    d = 256
    right = 12 * d * d + 13 * d
    assert check.transformer_block_parameters(right, d)
    assert not check.transformer_block_parameters(..., d)
    for wrong, words in [
        (12 * d * d, "weight matrices only"),
        (12 * d * d + 9 * d, "layer norms have parameters"),
        (4 * d * d + 4 * d, "only one of the two"),
        (right + 1, "too high"),
    ]:
        result = check.transformer_block_parameters(wrong, d)
        assert not result and words in result.message and str(right) not in result.message
    assert check.transformer_block_parameters(600, 8, mlp_ratio=2)  # 4d² + 4d + 2·2d² + 2d + d + 4d


def test_the_courses_own_attention_is_off_limits():
    from companion import attention

    mask = check.causal_mask(lambda n: attention.causal_mask(n))
    assert not mask and "do without companion.attention.causal_mask" in mask.message
    sdpa = check.attention_weights(lambda q, k: attention.scaled_dot_product_attention(q, k, k))
    assert not sdpa and "do without" in sdpa.message

    def captured(x, w_q, w_k, w_v, sdpa=F.scaled_dot_product_attention):  # PyTorch's, captured before the check
        return sdpa(x @ w_q, x @ w_k, x @ w_v, is_causal=True)

    result = check.attention_head(captured)
    assert not result and "do without torch.nn.functional.scaled_dot_product_attention" in result.message


def test_messages_never_give_the_expected_mask_or_method_away():
    result = check.causal_mask(lambda n: torch.ones(n, n, dtype=torch.bool).triu())
    assert "tril" not in result.message
    assert not {"tril", "triu"} & set(re.findall(r"\w+", check.hint("causal_mask").text))  # the way, not the call
    assert "Stuck?" in str(result)
