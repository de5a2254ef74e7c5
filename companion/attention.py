"""Attention and the Transformer block, from scratch (chapter 9).

Everything here is a few lines of tensor algebra that can be read top to bottom:

* :func:`scaled_dot_product_attention` — ``softmax(Q Kᵀ / √d_k) V``, with
  boolean or additive masks and a causal switch;
* :func:`causal_mask` — the lower-triangular "no peeking ahead" mask;
* :class:`MultiHeadAttention` — several attentions side by side on slices of the model dimension;
* :func:`sinusoidal_positional_encoding` — the fixed position signals of the original Transformer;
* :class:`LayerNorm` — normalisation over the features of each token;
* :class:`TransformerBlock` — pre-norm ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

and the pieces by which Llama-style models differ from GPT-2 (chapter 11):

* :class:`RMSNorm` — scale by the root mean square only: no mean, no bias;
* :func:`rotary_angles`, :func:`apply_rotary` — rotary position embeddings (RoPE):
  queries and keys turned by an angle that grows with their position;
* :class:`SwiGLU` — the gated feed-forward ``down(silu(gate(x)) ⊙ up(x))``;
* :func:`repeat_kv` and ``kv_heads`` of :class:`MultiHeadAttention` — grouped-query
  attention (GQA; MQA with one key/value head): several query heads share a key/value head;
* :class:`KVCache` — the keys and values of the tokens already seen, so that
  generation computes each token's only once.

:class:`TransformerBlock` takes switches for all of them, so one block is GPT-2's or Llama's.

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

from companion import recurrent

Backend = Literal["scratch", "torch"]
BACKENDS: tuple[str, ...] = ("scratch", "torch")
"""The two implementations of attention, this module's own (``"scratch"``) and ``F.scaled_dot_product_attention``."""

__all__ = [
    "BACKENDS",
    "KVCache",
    "LayerNorm",
    "MultiHeadAttention",
    "RMSNorm",
    "SwiGLU",
    "TransformerBlock",
    "apply_rotary",
    "causal_mask",
    "repeat_kv",
    "rotary_angles",
    "scaled_dot_product_attention",
    "sinusoidal_positional_encoding",
]


def causal_mask(
    length: int, keys: int | None = None, device: torch.device | str | None = None, offset: int = 0
) -> torch.Tensor:
    """The causal mask ``[length, keys]``: True where key ``j`` may be seen by query ``i``, i.e. ``j <= i + offset``.

    ``keys`` defaults to ``length``. With ``offset=0`` the mask is aligned at the
    top left, as ``is_causal=True`` of :func:`torch.nn.functional.scaled_dot_product_attention`;
    ``offset`` places query ``i`` at position ``offset + i`` — with a :class:`KVCache`
    holding ``offset`` earlier tokens, ``keys = offset + length``.
    """
    for name, n in (("length", length), ("keys", length if keys is None else keys)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int; got {offset!r}")
    keys = length if keys is None else keys
    return torch.ones(length, keys, dtype=torch.bool, device=device).tril(diagonal=offset)


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
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v need the same dtype; got {q.dtype}, {k.dtype} and {v.dtype}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):  # fmt: skip
        raise ValueError(f"scale must be a finite number > 0, or None for 1/√d_k; got {scale!r}")
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



def _with_causal(mask: torch.Tensor | None, allowed: torch.Tensor) -> torch.Tensor:
    """``mask`` (bool, additive or None) combined with the causal mask ``allowed``, in ``mask``'s own kind."""
    if mask is None:
        return allowed
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, -math.inf)


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Each of the ``kv_heads`` key (or value) heads repeated for the ``groups`` query heads that share it.

    ``[B, kv_heads, S, d] → [B, kv_heads·groups, S, d]``: query head ``h`` reads
    key/value head ``h // groups`` (the order of ``enable_gqa=True`` in
    ``F.scaled_dot_product_attention`` and of Llama's ``repeat_kv``).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"repeat_kv expects keys or values [batch, kv_heads, length, head_dim]; got {_shape(x)}")
    _positive_int("groups", groups)
    if groups == 1:
        return x
    B, g, S, d = x.shape
    return x[:, :, None].expand(B, g, groups, S, d).reshape(B, g * groups, S, d)


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def rotary_angles(
    length: int,
    head_dim: int,
    base: float = 10_000.0,
    offset: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines of rotary position embeddings (RoPE) for positions ``offset … offset + length - 1``.

    Coordinates ``i`` and ``i + head_dim/2`` of a query or key form a pair
    (``i < head_dim/2``; the "half" layout of Llama's weights) that turns by the
    angle ``p·θᵢ`` at position ``p``, with ``θᵢ = base^(-2i/head_dim)``: fast clocks
    in the first coordinates, slow ones in the last, as the sinusoids of
    :func:`sinusoidal_positional_encoding`. The angles are computed in float32, as
    by Llama's reference code, then cast to ``dtype``.

    Returns:
        ``(cos, sin)``, each ``[length, head_dim]`` (the ``head_dim/2`` angles twice).
    """
    _positive_int("length", length)
    if _positive_int("head_dim", head_dim) % 2:
        raise ValueError(f"rotary embeddings turn pairs of coordinates: head_dim must be even; got {head_dim}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative int; got {offset!r}")
    inverse_frequency = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    position = torch.arange(offset, offset + length, dtype=torch.float32, device=device)
    angle = position[:, None] * inverse_frequency  # [length, head_dim / 2]
    angle = torch.cat([angle, angle], dim=-1)  # [length, head_dim]
    return angle.cos().to(dtype), angle.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Queries or keys ``x [..., L, head_dim]`` turned by the angles of their positions.

    Each pair ``(a, b) = (x[i], x[i + head_dim/2])`` becomes
    ``(a·cos − b·sin, b·cos + a·sin)``, i.e. ``x·cos + rotate_half(x)·sin`` with
    ``rotate_half(x) = [−x₂, x₁]``. A rotation keeps lengths, and the dot product
    of a query at ``p`` and a key at ``s`` depends on ``p − s`` only: attention
    sees relative positions. ``cos``, ``sin``: ``[L, head_dim]`` from :func:`rotary_angles`.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[-1] % 2:
        raise ValueError(f"apply_rotary expects x [..., length, head_dim] with an even head_dim; got {_shape(x)}")
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(x.shape[-2:]):
            raise ValueError(f"{name} must be [length, head_dim] = {tuple(x.shape[-2:])}; got {_shape(t)}")
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class KVCache:
    """The keys and values one attention layer has computed so far, for generation one token at a time.

    A decoder's key and value of a token never change once computed (causal
    attention: later tokens do not affect them). So after a **prefill** of the
    prompt, each **decode** step computes the key and value of the one new token,
    appends them here and attends over all of them: ``O(length)`` work per token
    instead of recomputing the whole prefix.

    Tensors ``keys``, ``values``: ``[batch, kv_heads, capacity, head_dim]`` each,
    allocated at once and filled up to ``length``. Memory: ``2·batch·kv_heads·
    capacity·head_dim`` numbers (``nbytes``), per layer.
    """

    def __init__(
        self,
        batch: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        for name, value in (("batch", batch), ("kv_heads", kv_heads), ("head_dim", head_dim), ("capacity", capacity)):
            _positive_int(name, value)
        self.keys = torch.zeros(batch, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.length = 0

    @property
    def capacity(self) -> int:
        """How many positions the cache can hold."""
        return self.keys.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes of the two tensors."""
        return 2 * self.keys.numel() * self.keys.element_size()

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the keys and values ``[batch, kv_heads, T, head_dim]`` of ``T`` new tokens.

        Returns all keys and values so far, ``[batch, kv_heads, length, head_dim]`` (views of the cache).
        """
        B, g, _, d = self.keys.shape
        for name, t in (("keys", k), ("values", v)):
            if not isinstance(t, torch.Tensor) or t.ndim != 4 or (t.shape[0], t.shape[1], t.shape[3]) != (B, g, d):
                raise ValueError(f"KVCache.update expects {name} [{B}, {g}, T, {d}]; got {_shape(t)}")
            if t.dtype != self.keys.dtype:
                raise ValueError(f"KVCache holds {self.keys.dtype}; got {name} of dtype {t.dtype}")
        if k.shape[2] != v.shape[2]:
            raise ValueError(f"keys and values need the same length; got {k.shape[2]} and {v.shape[2]}")
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(
                f"the cache holds {self.capacity} positions: {self.length} are filled, {k.shape[2]} more do not fit"
            )
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def __repr__(self) -> str:
        B, g, capacity, d = self.keys.shape
        return f"KVCache(batch={B}, kv_heads={g}, head_dim={d}, length={self.length}, capacity={capacity})"


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: ``heads`` attentions of width ``dim / heads``, concatenated, projected.

    ``Q, K, V = x W_qkv`` (one ``Linear``, the three matrices stacked in the order
    q, k, v as ``nn.MultiheadAttention.in_proj_weight``); each of the ``heads``
    slices of width ``d_k = dim / heads`` attends on its own; the outputs are
    concatenated and mixed by ``W_o`` (``Linear(dim, dim)``, ``out_proj``).
    Parameters: ``4·dim² + 4·dim`` with biases.

    With ``kv_heads < heads`` (grouped-query attention; ``kv_heads=1`` is
    multi-query attention) there are only ``kv_heads`` key and value heads, each
    shared by ``heads / kv_heads`` query heads: ``W_qkv`` is
    ``Linear(dim, (heads + 2·kv_heads)·d_k)``, and a :class:`KVCache` is
    ``heads / kv_heads`` times smaller.

    Args:
        dim: the model dimension, divisible by ``heads``.
        heads: number of (query) attention heads.
        bias: give the projections biases.
        dropout: dropout on the output projection (training only).
        backend: ``"scratch"`` (:func:`scaled_dot_product_attention` of this module)
            or ``"torch"`` (``F.scaled_dot_product_attention``: the same numbers, faster).
        kv_heads: key/value heads, dividing ``heads``; default ``heads``.

    Shapes: input ``[B, L, dim]``; output ``[B, L, dim]``; weights ``[B, heads, L, S]``
    (``S = L``, or the cache's length after the update).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        bias: bool = True,
        dropout: float = 0.0,
        backend: Backend = "scratch",
        kv_heads: int | None = None,
    ) -> None:
        super().__init__()
        _positive_int("dim", dim)
        _positive_int("heads", heads)
        if dim % heads:
            raise ValueError(f"the model dimension dim={dim} must be divisible by heads={heads}")
        kv_heads = heads if kv_heads is None else _positive_int("kv_heads", kv_heads)
        if heads % kv_heads:
            raise ValueError(f"kv_heads={kv_heads} must divide heads={heads}")
        self.dim, self.heads, self.kv_heads, self.head_dim = dim, heads, kv_heads, dim // heads
        self.backend = _check_backend(backend)
        self.in_proj = nn.Linear(dim, (heads + 2 * kv_heads) * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Self-attention of ``x [B, L, dim]`` → ``[B, L, dim]`` (and weights ``[B, heads, L, S]``).

        ``mask`` broadcasts to ``[B, heads, L, S]``: a padding mask of keys is
        ``[B, 1, 1, S]``, a mask shared by the batch ``[L, S]``. ``rope``: the
        ``(cos, sin)`` of :func:`rotary_angles` for these ``L`` positions, applied
        to queries and keys. ``cache``: keys and values of earlier tokens; this
        call's are appended, and with ``causal`` query ``i`` sits at position
        ``cache.length + i``.
        """
        B, L, _ = _check_tokens(x, self.dim, "MultiHeadAttention").shape
        h, g, d = self.heads, self.kv_heads, self.head_dim
        if isinstance(mask, torch.Tensor):
            mask = mask.to(x.device)
        # [B, L, (h + 2g)·d] → [B, h + 2g, L, d] → q [B, h, L, d], k and v [B, g, L, d]
        q, k, v = self.in_proj(x).view(B, L, h + 2 * g, d).transpose(1, 2).split([h, g, g], dim=1)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            offset = cache.length
            k, v = cache.update(k, v)  # [B, g, offset + L, d]
            if causal and offset:  # top-left alignment would be wrong: shift the causal mask
                if mask is not None:
                    _check_mask(mask, torch.Size((B, h, L, offset + L)))
                if L > 1 or mask is not None:  # (one new query may see every key)
                    mask = _with_causal(mask, causal_mask(L, offset + L, x.device, offset))
                causal = False
        S = k.shape[2]
        k, v = repeat_kv(k, h // g), repeat_kv(v, h // g)  # [B, h, S, d]: query head i reads k/v head i // (h/g)
        if self.backend == "torch":
            if return_weights:
                raise ValueError("return_weights needs backend='scratch' (torch's fused attention returns no weights)")
            if mask is not None:
                _check_mask(mask, torch.Size((B, h, L, S)))
                if causal:
                    mask, causal = _with_causal(mask, causal_mask(L, S, x.device)), False
            out = _fused_attention(q, k, v, mask, causal)
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask, causal, return_weights=True)
        out = self.dropout(self.out_proj(out.transpose(1, 2).reshape(B, L, self.dim)))
        return (out, weights) if return_weights else out

    def extra_repr(self) -> str:
        kv = f", kv_heads={self.kv_heads}" if self.kv_heads != self.heads else ""
        return f"dim={self.dim}, heads={self.heads}{kv}, backend={self.backend!r}"


def _fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; on a CPU under ``torch.autocast``, in fp32.

    The CPU's bf16 attention kernel is several times slower than its fp32 one
    backwards (``bench/gpt_precision.py``), while the projections around it gain
    from bf16: so the products of the projections stay in bf16 and attention not.
    """
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return _fused_attention(q.float(), k.float(), v.float(), mask, causal)
    mask = mask if mask is None or mask.dtype == torch.bool else mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


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


def _check_features(x: object, weight: torch.Tensor, module: str) -> None:
    """``x`` is ``[..., dim]`` with the weight's dtype (mixed dtypes are autocast's to reconcile)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"{module} expects inputs [..., {weight.shape[0]}]; got {_shape(x)}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        recurrent._check_dtypes(module, weight.dtype, x=x)


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    return float(eps)


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension: ``y = (x - mean) / √(var + eps) · γ + β``.

    Mean and (biased) variance are taken over the ``dim`` features of each token
    separately, so it works the same in training and evaluation and for a batch of one.
    ``γ`` (``weight``) starts at 1 and ``β`` (``bias``) at 0. ``backend="torch"``
    computes the same function with PyTorch's fused ``F.layer_norm``.

    Shapes: input ``[..., dim]`` → output of the same shape.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, backend: Backend = "scratch") -> None:
        super().__init__()
        self.dim, self.eps = _positive_int("dim", dim), _check_eps(eps)
        self.backend = _check_backend(backend)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.weight, "LayerNorm")
        if self.backend == "torch":
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, backend={self.backend!r}"


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019): ``y = x / √(mean(x²) + eps) · γ``.

    A :class:`LayerNorm` without the centring and without ``β``: each token's
    vector is scaled to unit root mean square, then by the learned ``γ``
    (``weight``, starting at 1). Fewer operations, one parameter vector, and in
    practice as good — the normalisation of Llama. ``backend="torch"`` uses ``F.rms_norm``.

    Shapes: input ``[..., dim]`` → output of the same shape.
    """

    def __init__(self, dim: int, eps: float = 1e-6, backend: Backend = "scratch") -> None:
        super().__init__()
        self.dim, self.eps = _positive_int("dim", dim), _check_eps(eps)
        self.backend = _check_backend(backend)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.weight, "RMSNorm")
        if self.backend == "torch":
            return F.rms_norm(x, (self.dim,), self.weight, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, backend={self.backend!r}"


class SwiGLU(nn.Module):
    """The gated feed-forward of Llama (Shazeer, 2020): ``down(silu(gate(x)) ⊙ up(x))``.

    Two projections ``dim → hidden``: one, through ``silu(z) = z·σ(z)``, decides
    how much of the other passes (``⊙``: elementwise product); a third projects
    back to ``dim``. Parameters: ``3·dim·hidden`` without biases — with
    ``hidden ≈ 8·dim/3`` as many as a GELU MLP of ``4·dim``.

    Shapes: ``[..., dim]`` → ``[..., dim]``.
    """

    def __init__(self, dim: int, hidden: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        _positive_int("dim", dim)
        _positive_int("hidden", hidden)
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))


NORMS: tuple[str, ...] = ("layer", "rms")
"""The normalisations of :class:`TransformerBlock`: :class:`LayerNorm` and :class:`RMSNorm`."""
MLPS: tuple[str, ...] = ("gelu", "gelu_tanh", "swiglu")
"""The feed-forwards of :class:`TransformerBlock`: GELU (exact, or GPT-2's tanh approximation) or :class:`SwiGLU`."""


def make_norm(kind: str, dim: int, eps: float, bias: bool = True, backend: Backend = "scratch") -> nn.Module:
    """A :class:`LayerNorm` (``kind="layer"``, with a bias if ``bias``) or an :class:`RMSNorm` (``"rms"``)."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {kind!r}")
    return LayerNorm(dim, eps, bias, backend) if kind == "layer" else RMSNorm(dim, eps, backend)


class TransformerBlock(nn.Module):
    """One pre-norm Transformer block: ``x + attn(ln₁(x))``, then ``x + mlp(ln₂(x))``.

    The MLP is ``Linear(dim, mlp_ratio·dim) → GELU → Linear(mlp_ratio·dim, dim)``,
    applied to every token on its own. Parameters with the default ``mlp_ratio=4``:
    ``12·dim² + 13·dim`` (attention ``4d² + 4d``, MLP ``8d² + 5d``, two layer norms ``4d``).

    The keyword switches make it a Llama block: ``norm="rms"``, ``mlp="swiglu"``,
    ``kv_heads < heads``, ``bias=False``, and rotary positions passed to ``forward``.

    Args:
        dim: the model dimension, divisible by ``heads``.
        heads: attention heads.
        mlp_ratio: width of the MLP's hidden layer as a multiple of ``dim``.
        dropout: dropout on the outputs of the attention and of the MLP (training only).
        backend: ``"scratch"`` (this module's attention and norms) or ``"torch"``
            (PyTorch's fused ``F.scaled_dot_product_attention`` and ``F.layer_norm``/``F.rms_norm``).
        kv_heads: key/value heads of the attention (grouped-query attention); default ``heads``.
        norm: ``"layer"`` (:class:`LayerNorm`) or ``"rms"`` (:class:`RMSNorm`).
        mlp: ``"gelu"``, ``"gelu_tanh"`` (GPT-2's approximation) or ``"swiglu"`` (:class:`SwiGLU`).
        hidden: the MLP's hidden width; default ``mlp_ratio·dim``.
        bias: biases in the projections (and in the layer norms).
        eps: the norms' ``eps``.

    Shapes: ``[B, L, dim]`` → ``[B, L, dim]``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        backend: Backend = "scratch",
        *,
        kv_heads: int | None = None,
        norm: str = "layer",
        mlp: str = "gelu",
        hidden: int | None = None,
        bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        _positive_int("mlp_ratio", mlp_ratio)
        if mlp not in MLPS:
            raise ValueError(f"mlp must be one of {MLPS}; got {mlp!r}")
        hidden = mlp_ratio * dim if hidden is None else _positive_int("hidden", hidden)
        self.ln1 = make_norm(norm, dim, eps, bias, backend)
        self.attn = MultiHeadAttention(dim, heads, bias=bias, dropout=dropout, backend=backend, kv_heads=kv_heads)
        self.ln2 = make_norm(norm, dim, eps, bias, backend)
        if mlp == "swiglu":
            self.mlp: nn.Module = SwiGLU(dim, hidden, bias=bias, dropout=dropout)
        else:
            approximate = "tanh" if mlp == "gelu_tanh" else "none"
            self.mlp = nn.Sequential(
                nn.Linear(dim, hidden, bias=bias),
                nn.GELU(approximate=approximate),
                nn.Linear(hidden, dim, bias=bias),
                nn.Dropout(dropout) if dropout else nn.Identity(),
            )

    @property
    def residual_projections(self) -> tuple[nn.Linear, nn.Linear]:
        """The two linear layers whose outputs are added to the residual stream (attention's and the MLP's)."""
        return self.attn.out_proj, self.mlp.down if isinstance(self.mlp, SwiGLU) else self.mlp[2]

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask=mask, causal=causal, rope=rope, cache=cache)
        return x + self.mlp(self.ln2(x))
