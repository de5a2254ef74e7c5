"""Self-checks of chapter 9, attention and Transformers: attention weights, a causal mask, one attention head."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from companion.check.core import CheckResult, _run, compare, explain_difference, register_hint

__all__ = ["attention_head", "attention_weights", "causal_mask", "transformer_block_parameters"]

_NO_FUSED_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention",)


def _matches(got: Any, want: torch.Tensor) -> bool:
    return explain_difference(want, got, rtol=1e-5, atol=1e-6) is None


def _diagnose(got: Any, variants: dict[str, torch.Tensor]) -> str:
    """`` It looks like …`` for the first known mistake whose output ``got`` matches, else ``""``."""
    for mistake, output in variants.items():
        if _matches(got, output):
            return f" It looks like {mistake}."
    return ""


def _qk_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Queries ``[..., L, d]`` and keys ``[..., S, d]``: one pair, a batch, a batch of one, large d, 4-D."""
    gen = torch.Generator().manual_seed(9)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    return [
        (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])),
        (randn(3, 4, 8), randn(3, 5, 8)),
        (randn(1, 1, 16), randn(1, 6, 16)),
        (randn(2, 3, 64, scale=2.0), randn(2, 3, 64, scale=2.0)),
        (randn(2, 4, 5, 8), randn(2, 4, 7, 8)),
    ]


def _weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def attention_weights(student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(q, k)``: the attention weights ``softmax(q kᵀ / √d_k)``, softmax over the keys.

    Shapes: ``q [..., L, d_k]``, ``k [..., S, d_k]`` → weights ``[..., L, S]``, each row summing to 1.
    """
    result = compare("attention_weights", student, _weights, _qk_cases(), rtol=1e-5, atol=1e-6,
                     forbidden=_NO_FUSED_ATTENTION)  # fmt: skip
    if result:
        return result
    for q, k in _qk_cases():
        got, error = _run(student, (q, k))
        if error is not None or _matches(got, _weights(q, k)):
            continue
        scores = q @ k.transpose(-2, -1)
        d = q.shape[-1]
        diagnosis = _diagnose(got, {
            "the scores are not divided by √d_k": torch.softmax(scores, dim=-1),
            "the scores are divided by d_k instead of √d_k": torch.softmax(scores / d, dim=-1),
            "the softmax runs over the queries (dim=-2), not over the keys (dim=-1)":
                torch.softmax(scores / math.sqrt(d), dim=-2),
            "the softmax is missing: these are the scaled scores": scores / math.sqrt(d),
        })  # fmt: skip
        if isinstance(got, torch.Tensor) and got.shape == scores.shape and not diagnosis:
            sums = got.detach().float().sum(-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                diagnosis = " Each row of weights should sum to 1; yours do not."
        return CheckResult("attention_weights", False, f"{result.message}{diagnosis}")
    return result


def _causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


def _causal_mistake(student: Callable[[int], torch.Tensor]) -> str:
    """The known mistake that ``student``'s 5×5 mask shows (one size small enough to be ambiguous is not used)."""
    got, error = _run(student, (5,))
    if error is not None or not isinstance(got, torch.Tensor) or got.shape != (5, 5):
        return ""
    want = _causal(5)
    return _diagnose(got.bool(), {
        "True and False are swapped: True must mean 'may attend'": ~want,
        "the mask is transposed: query i (row) may see keys j ≤ i (columns), not j ≥ i": want.T,
        "the diagonal is missing: every token may see itself": want.tril(-1),
    })  # fmt: skip


def causal_mask(student: Callable[[int], torch.Tensor]) -> CheckResult:
    """Check ``student(n)``: the causal mask, a bool ``[n, n]`` tensor, True where query i may see key j (j ≤ i).

    The same convention as ``F.scaled_dot_product_attention``'s boolean ``attn_mask``: True means "may attend".
    """
    name = "causal_mask"
    if student is Ellipsis or not callable(student):
        return compare(name, student, _causal, [(1,)])
    for n in (1, 2, 5, 8):
        got, error = _run(student, (n,))
        if error is not None:
            return CheckResult(name, False, f"case n={n} {error}")
        if not isinstance(got, torch.Tensor):
            return CheckResult(name, False, f"case n={n}: expected a torch tensor, got {type(got).__name__}.")
        if got.shape != (n, n):
            return CheckResult(name, False, f"case n={n}: expected shape ({n}, {n}), got {tuple(got.shape)}.")
        if got.dtype != torch.bool:
            return CheckResult(
                name, False, f"case n={n}: expected a bool tensor (True = may attend), got dtype {got.dtype}."
            )
        want = _causal(n)
        if torch.equal(got, want):
            continue
        diagnosis = _causal_mistake(student)
        wrong = (got != want).nonzero()[0].tolist()
        return CheckResult(
            name, False, f"case n={n}: {int((got != want).sum())} of {n * n} entries are wrong, the first at "
            f"row (query) {wrong[0]}, column (key) {wrong[1]}.{diagnosis}"
        )
    return CheckResult(name, True, "4 of 4 sizes match the reference.")


def _head(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = q @ k.transpose(-2, -1) / math.sqrt(w_q.shape[1])
    n = x.shape[-2]
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _head_cases() -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(19)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    cases = []
    for batch, length, dim, d_k, d_v in [(1, 1, 4, 2, 2), (2, 5, 8, 4, 4), (1, 7, 6, 3, 5), (3, 6, 16, 8, 2)]:
        cases.append((randn(batch, length, dim), randn(dim, d_k), randn(dim, d_k), randn(dim, d_v)))
    return cases


def attention_head(
    student: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> CheckResult:
    """Check ``student(x, w_q, w_k, w_v)``: one causal self-attention head, without ``F.scaled_dot_product_attention``.

    ``Q = x W_q, K = x W_k, V = x W_v``; output ``softmax(Q Kᵀ / √d_k + causal mask) V``.
    Shapes: ``x [B, L, d]``, ``w_q, w_k [d, d_k]``, ``w_v [d, d_v]`` → ``[B, L, d_v]``.
    """
    name = "attention_head"
    result = compare(name, student, _head, _head_cases(), rtol=1e-5, atol=1e-6, forbidden=_NO_FUSED_ATTENTION)
    if result:
        return result
    for x, w_q, w_k, w_v in _head_cases():
        got, error = _run(student, (x, w_q, w_k, w_v), _NO_FUSED_ATTENTION)
        if error is not None or _matches(got, _head(x, w_q, w_k, w_v)):
            continue
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        scores = q @ k.transpose(-2, -1)
        d_k = w_q.shape[1]
        future = ~torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        diagnosis = _diagnose(got, {
            "the causal mask is missing: each token also sees the tokens after it":
                torch.softmax(scores / math.sqrt(d_k), dim=-1) @ v,
            "the scores are not divided by √d_k":
                torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v,
            "the mask is applied after the softmax (zeroed weights no longer sum to 1)":
                torch.softmax(scores / math.sqrt(d_k), dim=-1).masked_fill(future, 0.0) @ v,
            "the scores are divided by √d of the model, not √d_k of the head":
                torch.softmax((scores / math.sqrt(x.shape[-1])).masked_fill(future, float("-inf")), dim=-1) @ v,
        })  # fmt: skip
        return CheckResult(name, False, f"{result.message}{diagnosis}")
    return result


def transformer_block_parameters(answer: Any, dim: int, mlp_ratio: int = 4) -> CheckResult:
    """Check a count of the parameters of one :class:`companion.attention.TransformerBlock` of width ``dim``.

    The count is made by building the block and counting its tensors' entries.
    """
    from companion.attention import TransformerBlock
    from companion.check.core import value

    heads = next(h for h in (4, 2, 1) if dim % h == 0)
    block = TransformerBlock(dim, heads, mlp_ratio=mlp_ratio)
    expected = sum(p.numel() for p in block.parameters())
    result = value("transformer_block_parameters", answer, expected, rtol=0)
    if result or answer is Ellipsis:
        return result
    extra = ""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        d = dim
        if answer == 12 * d * d:
            extra = " That counts the weight matrices only: add the biases and the layer norms' γ and β."
        elif answer == 12 * d * d + 9 * d:
            extra = " The biases are there; the two layer norms have parameters too."
        elif answer == 4 * d * d + 4 * d or answer == 8 * d * d + 5 * d:
            extra = " That is only one of the two sub-layers: a block has attention and an MLP."
    return CheckResult(result.name, False, result.message + extra)


register_hint(
    "attention_weights",
    "scores = q @ k.transpose(-2, -1) compares every query with every key ([..., L, S]); divide them by "
    "math.sqrt(d_k), d_k = q.shape[-1], then take torch.softmax over the last dimension (the keys).",
)
register_hint(
    "causal_mask",
    "start from torch.ones(n, n, dtype=torch.bool) and keep the lower triangle, diagonal included: "
    ".tril(). Row i is query i; it may see columns (keys) 0 … i.",
)
register_hint(
    "attention_head",
    "project x three times (x @ w_q, x @ w_k, x @ w_v); scores = q @ kᵀ / √d_k with d_k = w_q.shape[1]; "
    "set the scores above the diagonal to -inf with masked_fill before the softmax over the last "
    "dimension; multiply the weights by v.",
)
register_hint(
    "transformer_block_parameters",
    "attention: W_q, W_k, W_v and W_o are d×d, with d biases each; the MLP: d×4d plus 4d biases, "
    "4d×d plus d biases; each of the two layer norms has d scales γ and d shifts β.",
)
