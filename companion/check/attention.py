"""Self-checks of chapter 9, attention and Transformers: attention weights, a causal mask, one attention
head, and the parameters of a Transformer block."""

from __future__ import annotations

import math

import torch

from companion.check.core import CheckSpec, define, keyed, rows_sum_to, sampler
from companion.check.neurons import FUSED_ATTENTION

__all__ = ["attention_head", "attention_weights", "causal_mask", "transformer_block_parameters"]

_FUSED = (*FUSED_ATTENTION, "companion.attention.scaled_dot_product_attention")


def _qk_cases(gen: torch.Generator) -> list:
    r = sampler(gen, torch.float32)
    cases = [
        (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])),
        (r(3, 4, 8), r(3, 5, 8)),
        (r(1, 1, 16), r(1, 6, 16)),
        (r(2, 3, 64, scale=2.0), r(2, 3, 64, scale=2.0)),
        (r(2, 4, 5, 8), r(2, 4, 7, 8)),
    ]
    return [(f"q {tuple(q.shape)}, k {tuple(k.shape)}", (q, k)) for q, k in cases]


def _weights(q: torch.Tensor, k: torch.Tensor, mistake: str = "") -> torch.Tensor:
    scale = {"unscaled": 1.0, "by d_k": q.shape[-1]}.get(mistake, math.sqrt(q.shape[-1]))
    scores = q @ k.transpose(-2, -1) / scale
    return scores if mistake == "no softmax" else torch.softmax(scores, dim=-2 if mistake == "over queries" else -1)


attention_weights = define(CheckSpec(
    "attention_weights", _weights, _qk_cases, rtol=1e-5, atol=1e-6, forbidden=_FUSED,
    diagnose=rows_sum_to(1, "Each row of weights should sum to 1; yours do not."),
    mistakes=keyed(_weights, {
        "unscaled": "the scores are not divided by √d_k",
        "by d_k": "the scores are divided by d_k instead of √d_k",
        "over queries": "the softmax runs over the queries (dim=-2), not over the keys (dim=-1)",
        "no softmax": "the softmax is missing: these are the scaled scores",
    }),
    hint="what shape must the scores have, one per query and key, whatever batch dimensions come first, and "
    "which dimensions of k must move to get it? Which number keeps the scores' size from growing with the "
    "keys' length, and over which dimension must each row of weights add up to 1?",
), doc="""Check ``student(q, k)``: the scaled dot-product attention weights, softmax over the keys; ``q [..., L, d_k]``,
    ``k [..., S, d_k]`` → ``[..., L, S]``, each row summing to 1.""")


def _causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


causal_mask = define(CheckSpec(
    "causal_mask", _causal, lambda gen: [(f"n={n}", (n,)) for n in (1, 2, 5, 8)],
    forbidden=("companion.attention.causal_mask",), passed="4 of 4 sizes match the reference.",
    mistakes={
        "True and False are swapped: True must mean 'may attend'": lambda n: ~_causal(n),
        "the mask is transposed: query i (row) may see keys j ≤ i (columns), not j ≥ i": lambda n: _causal(n).T,
        "the diagonal is missing: every token may see itself": lambda n: _causal(n).tril(-1),
    },
    hint="row i is query i and column j is key j. Draw the 4 × 4 case: which (row, column) pairs may a "
    "token attend to, and what shape do they make?",
), doc="""Check ``student(n)``: the causal mask for ``n`` tokens, a bool ``[n, n]`` tensor, True where query
    ``i`` (the row) may attend to key ``j`` (the column), the convention of the boolean ``attn_mask`` of
    ``F.scaled_dot_product_attention``. The course's own ``attention.causal_mask`` raises while it runs.""")


def _head(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, mistake: str = "") -> torch.Tensor:
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scale = {"unscaled": 1.0, "model scale": math.sqrt(x.shape[-1])}.get(mistake, math.sqrt(w_q.shape[1]))
    future = ~_causal(x.shape[-2])
    scores = q @ k.transpose(-2, -1) / scale
    if mistake == "after":
        return torch.softmax(scores, dim=-1).masked_fill(future, 0.0) @ v
    return torch.softmax(scores if mistake == "unmasked" else scores.masked_fill(future, float("-inf")), dim=-1) @ v


attention_head = define(CheckSpec(
    "attention_head", _head, rtol=1e-5, atol=1e-6, forbidden=_FUSED,
    cases=lambda gen: [
        (f"B = {b}, L = {n}, d = {d}, d_k = {dk}, d_v = {dv}", tuple(torch.randn(*s, generator=gen) for s in [
            (b, n, d), (d, dk), (d, dk), (d, dv)]))
        for b, n, d, dk, dv in [(1, 1, 4, 2, 2), (2, 5, 8, 4, 4), (1, 7, 6, 3, 5), (3, 6, 16, 8, 2)]
    ],
    mistakes=keyed(_head, {
        "unmasked": "the causal mask is missing: each token also sees the tokens after it",
        "unscaled": "the scores are not divided by √d_k",
        "after": "the mask is applied after the softmax (zeroed weights no longer sum to 1)",
        "model scale": "the scores are divided by √d of the model, not √d_k of the head",
    }),
    hint="project x three times with w_q, w_k and w_v; scale the scores of queries against keys by the "
    "square root of the head's d_k (the width of w_q, not the model's d); hide the future by setting the "
    "scores above the diagonal to -inf before the softmax, not after; the weights then mix the values.",
), doc="""Check ``student(x, w_q, w_k, w_v)``: one causal self-attention head, ``x [B, L, d]``, ``w_q, w_k [d, d_k]``,
    ``w_v [d, d_v]`` → ``[B, L, d_v]``, without ``F.scaled_dot_product_attention`` (it raises while it runs).""")


def _block_parameters(dim: int, mlp_ratio: int = 4) -> int:
    from companion.attention import TransformerBlock

    heads = next(h for h in (4, 2, 1) if dim % h == 0)
    return sum(p.numel() for p in TransformerBlock(dim, heads, mlp_ratio=mlp_ratio).parameters())


transformer_block_parameters = define(CheckSpec(
    "transformer_block_parameters", _block_parameters, answers=1, passed="correct.",
    mistakes={
        "that counts the weight matrices only: add the biases and the layer norms' γ and β":
            lambda d, r: (4 + 2 * r) * d * d,
        "the biases are there; the two layer norms have parameters too": lambda d, r: (4 + 2 * r) * d * d + (5 + r) * d,
        "that is only one of the two sub-layers: a block has attention and an MLP": lambda d, r: 4 * d * d + 4 * d,
        "that is only one of the two sub-layers (a block has attention and an MLP)":
            lambda d, r: 2 * r * d * d + (r + 1) * d,
    },
    hint="count the parts one by one: attention's four projections (queries, keys, values, output), each a "
    "square matrix with a bias; the MLP's two layers, out to four times the width and back, each with a bias; "
    "and two layer norms, each with a scale γ and a shift β per feature.",
), "answer", "dim", ("mlp_ratio", 4), doc="""Check a count of the parameters of one Transformer block of width
    ``dim`` (and MLP width ``mlp_ratio · dim``), made by building a :class:`companion.attention.TransformerBlock`.""")


