"""Attention and the Transformer block, from scratch (chapter 9).

Everything here is a few lines of tensor algebra that can be read top to bottom:

* :func:`scaled_dot_product_attention` — ``softmax(Q Kᵀ / √d_k) V``, with
  boolean or additive masks and a causal switch;
* :func:`causal_mask` — the lower-triangular "no peeking ahead" mask;
* :class:`MultiHeadAttention` — several attentions side by side on slices of the model dimension;
* :func:`sinusoidal_positional_encoding` — the fixed position signals of the original Transformer;
* :class:`LayerNorm` — normalisation over the features of each token;
* :class:`TransformerBlock` — pre-norm ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

Masks follow the convention of :func:`torch.nn.functional.scaled_dot_product_attention`:
a **boolean** mask is True where a query *may* attend to a key, a **float** mask
is *added* to the scores (``0`` to keep, ``-inf`` to block). (``nn.MultiheadAttention``'s
``key_padding_mask`` uses the opposite boolean convention: True there means *ignore*.)
Each piece is tested against its PyTorch counterpart.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Backend = Literal["scratch", "torch"]
BACKENDS: tuple[str, ...] = ("scratch", "torch")
"""The two implementations of attention, this module's own (``"scratch"``) and ``F.scaled_dot_product_attention``."""

__all__ = [
    "BACKENDS",
    "LayerNorm",
    "MultiHeadAttention",
    "TransformerBlock",
    "causal_mask",
    "scaled_dot_product_attention",
    "sinusoidal_positional_encoding",
]


def causal_mask(length: int, keys: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The causal mask ``[length, keys]``: True where key ``j`` may be seen by query ``i``, i.e. ``j <= i``.

    ``keys`` defaults to ``length``; the mask is aligned at the top left, as
    ``is_causal=True`` of :func:`torch.nn.functional.scaled_dot_product_attention`.
    """
    for name, n in (("length", length), ("keys", length if keys is None else keys)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
    keys = length if keys is None else keys
    return torch.ones(length, keys, dtype=torch.bool, device=device).tril()


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch tensor (bool or float); got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(
            f"mask must be bool (True = may attend) or float (added to the scores); got dtype {mask.dtype}"
        )
    fits = mask.ndim <= len(scores_shape) and all(
        m in (1, s) for m, s in zip(reversed(mask.shape), reversed(scores_shape))
    )
    if not fits:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores "
            f"[..., queries, keys] = {tuple(scores_shape)}"
        )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of queries over keys and values: ``softmax(Q Kᵀ · scale + M) V``.

    Args:
        q: queries ``[..., L, d_k]`` (e.g. ``[B, L, d_k]`` or ``[B, heads, L, d_k]``).
        k: keys ``[..., S, d_k]``, the same leading dimensions as ``q``.
        v: values ``[..., S, d_v]``, the same leading dimensions as ``q``.
        mask: broadcastable to ``[..., L, S]``; bool (True: query ``i`` may attend
            to key ``j``) or float (added to the scores, ``-inf`` blocks).
        causal: also block every key after the query's own position (``j > i``).
        scale: multiplies the scores; default ``1 / √d_k``.
        return_weights: also return the attention weights.

    Returns:
        the output ``[..., L, d_v]``, and with ``return_weights`` the pair
        ``(output, weights)`` with weights ``[..., L, S]`` (each row sums to 1;
        a query that may attend to no key at all gets zero weights and a zero output,
        as in PyTorch).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor; got {type(t).__name__}")
        if t.ndim < 2 or not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor [..., length, dim]; got {t.dtype} {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"queries and keys need the same head dimension d_k; got q [..., {q.shape[-1]}] and k [..., {k.shape[-1]}]"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"keys and values need the same length; got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(
            "q, k and v need the same leading (batch, head) dimensions; "
            f"got {tuple(q.shape[:-2])}, {tuple(k.shape[:-2])} and {tuple(v.shape[:-2])}"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # [..., L, S]
    if mask is not None:
        _check_mask(mask, scores.shape)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask.to(scores.device), -math.inf)
        else:
            scores = scores + mask.to(scores.device, scores.dtype)
    if causal:
        scores = scores.masked_fill(~causal_mask(*scores.shape[-2:], device=scores.device), -math.inf)
    if mask is None:  # (a causal mask alone always leaves key 0 to every query)
        weights = torch.softmax(scores, dim=-1)
    else:  # a query that may see no key at all: softmax of a row of -inf is 0/0; give it zero weights
        blind = torch.isneginf(scores).all(dim=-1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(blind, 0.0), dim=-1).masked_fill(blind, 0.0)
    out = weights @ v
    return (out, weights) if return_weights else out


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    return backend


def _check_tokens(x: object, dim: int, module: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{module} takes a torch tensor; got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != dim or not x.dtype.is_floating_point:
        raise ValueError(f"{module} expects float inputs [batch, length, {dim}]; got {x.dtype} {tuple(x.shape)}")
    return x


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: ``heads`` attentions of width ``dim / heads``, concatenated, projected.

    ``Q, K, V = x W_qkv`` (one ``Linear(dim, 3·dim)``, the three matrices stacked
    in the order q, k, v as ``nn.MultiheadAttention.in_proj_weight``); each of the
    ``heads`` slices of width ``d_k = dim / heads`` attends on its own; the outputs
    are concatenated and mixed by ``W_o`` (``Linear(dim, dim)``, ``out_proj``).
    Parameters: ``4·dim² + 4·dim`` with biases.

    Args:
        dim: the model dimension, divisible by ``heads``.
        heads: number of attention heads.
        bias: give the projections biases.
        dropout: dropout on the output projection (training only).
        backend: ``"scratch"`` (:func:`scaled_dot_product_attention` of this module)
            or ``"torch"`` (``F.scaled_dot_product_attention``: the same numbers, faster).

    Shapes: input ``[B, L, dim]``; output ``[B, L, dim]``; weights ``[B, heads, L, L]``.
    """

    def __init__(self, dim: int, heads: int, bias: bool = True, dropout: float = 0.0, backend: Backend = "scratch") -> None:
        super().__init__()
        _positive_int("dim", dim)
        _positive_int("heads", heads)
        if dim % heads:
            raise ValueError(f"the model dimension dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.backend = _check_backend(backend)
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Self-attention of ``x [B, L, dim]`` → ``[B, L, dim]`` (and weights ``[B, heads, L, L]``).

        ``mask`` broadcasts to ``[B, heads, L, L]``: a padding mask of keys is
        ``[B, 1, 1, L]``, a mask shared by the batch ``[L, L]``.
        """
        B, L, _ = _check_tokens(x, self.dim, "MultiHeadAttention").shape
        # [B, L, 3·dim] → three [B, heads, L, head_dim]
        q, k, v = self.in_proj(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.backend == "torch":
            if return_weights:
                raise ValueError("return_weights needs backend='scratch' (torch's fused attention returns no weights)")
            if mask is not None:
                _check_mask(mask, torch.Size((B, self.heads, L, L)))
                mask = mask.to(x.device) if mask.dtype == torch.bool else mask.to(x.device, q.dtype)
                if causal:
                    mask, causal = _with_causal(mask, L), False
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask, causal, return_weights=True)
        out = self.dropout(self.out_proj(out.transpose(1, 2).reshape(B, L, self.dim)))
        return (out, weights) if return_weights else out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, backend={self.backend!r}"


def _with_causal(mask: torch.Tensor, length: int) -> torch.Tensor:
    """``mask`` combined with the causal mask, in ``mask``'s own kind (bool or additive)."""
    allowed = causal_mask(length, device=mask.device)
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, -math.inf)


def sinusoidal_positional_encoding(
    length: int, dim: int, base: float = 10_000.0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """The fixed position signals of Vaswani et al. (2017), ``[length, dim]``.

    ``PE[p, 2i] = sin(p / base^(2i/dim))`` and ``PE[p, 2i+1] = cos(p / base^(2i/dim))``:
    each pair of columns is a clock turning at its own speed, from one turn every
    2π positions down to one every ``2π·base``. Every value lies in [-1, 1].
    """
    _positive_int("length", length)
    _positive_int("dim", dim)
    position = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    frequency = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
    angle = position * frequency  # [length, ceil(dim / 2)]
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :dim]
    return pe.to(dtype)


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension: ``y = (x - mean) / √(var + eps) · γ + β``.

    Mean and (biased) variance are taken over the ``dim`` features of each token
    separately, so it works the same in training and evaluation and for a batch of one.
    ``γ`` (``weight``) starts at 1 and ``β`` (``bias``) at 0.

    Shapes: input ``[..., dim]`` → output of the same shape.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.dim, self.eps = _positive_int("dim", dim), float(eps)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"LayerNorm expects inputs [..., {self.dim}]; got {shape}")
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class TransformerBlock(nn.Module):
    """One pre-norm Transformer block: ``x + attn(ln₁(x))``, then ``x + mlp(ln₂(x))``.

    The MLP is ``Linear(dim, mlp_ratio·dim) → GELU → Linear(mlp_ratio·dim, dim)``,
    applied to every token on its own. Parameters with the default ``mlp_ratio=4``:
    ``12·dim² + 13·dim`` (attention ``4d² + 4d``, MLP ``8d² + 5d``, two layer norms ``4d``).

    Args:
        dim: the model dimension, divisible by ``heads``.
        heads: attention heads.
        mlp_ratio: width of the MLP's hidden layer as a multiple of ``dim``.
        dropout: dropout on the outputs of the attention and of the MLP (training only).
        backend: the attention's backend, ``"scratch"`` or ``"torch"``.

    Shapes: ``[B, L, dim]`` → ``[B, L, dim]``.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0, backend: Backend = "scratch"
    ) -> None:
        super().__init__()
        _positive_int("mlp_ratio", mlp_ratio)
        self.ln1 = LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout=dropout, backend=backend)
        self.ln2 = LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask=mask, causal=causal)
        return x + self.mlp(self.ln2(x))
