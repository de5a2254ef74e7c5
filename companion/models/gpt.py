"""A small decoder-only Transformer (chapters 9 and 11), after the shape of nanoGPT's model.

``TinyGPT`` reads a window of token ids and, at every position, scores the
next token: token embedding (+ position embedding) → ``layers`` pre-norm
:class:`~companion.attention.TransformerBlock` s with causal attention → a
final norm → a linear read-out to ``vocab_size`` logits.

The switches of :class:`GPTConfig` make the same file a GPT-2 (learned
positions, layer norm, GELU MLP, biases, tied read-out) or a Llama (rotary
positions, RMSNorm, SwiGLU, grouped-query attention, no biases); their
defaults are chapter 9's model. :meth:`TinyGPT.generate` keeps a
:class:`~companion.attention.KVCache` per block, so each new token costs one
token's work; :func:`parameter_counts` and :func:`kv_cache_bytes` give the
sizes by formula.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from companion.attention import (
    BACKENDS,
    MLPS,
    NORMS,
    KVCache,
    TransformerBlock,
    make_norm,
    rotary_angles,
    sinusoidal_positional_encoding,
)
from companion.models.base import check_sampling, sample_next

POSITIONS: tuple[str, ...] = ("learned", "sinusoidal", "rope")
"""How :class:`TinyGPT` knows where each token is."""


@dataclass
class GPTConfig:
    """The sizes and switches of a :class:`TinyGPT`; the defaults are chapter 9's GPT-2-style model.

    Attributes:
        vocab_size: number of distinct tokens (65 characters for Tiny Shakespeare).
        context: the longest window the model reads, in tokens.
        dim: the model dimension (width of every token's vector).
        heads: attention (query) heads per block; ``dim`` must be divisible by it.
        layers: number of Transformer blocks.
        dropout: dropout on embeddings, attention outputs and MLP outputs (training only).
        positions: ``"learned"`` (a trained embedding per position, as GPT-2),
            ``"sinusoidal"`` (the fixed signals of the original Transformer) or
            ``"rope"`` (queries and keys rotated by their position, as Llama).
        attention: ``"scratch"`` (:mod:`companion.attention`'s written-out attention
            and norms) or ``"torch"`` (PyTorch's fused ``F.scaled_dot_product_attention``,
            ``F.layer_norm``, ``F.rms_norm``): the same function, computed faster.
        norm: ``"layer"`` (LayerNorm, GPT-2) or ``"rms"`` (RMSNorm, Llama).
        mlp: ``"gelu"``, ``"gelu_tanh"`` (GPT-2's tanh approximation) or ``"swiglu"`` (Llama).
        kv_heads: key/value heads (grouped-query attention), dividing ``heads``;
            ``None``: as many as ``heads``.
        bias: biases in the linear layers and layer norms (GPT-2: yes; Llama: no).
        tie_weights: the read-out reuses the token embedding matrix (GPT-2).
            The read-out has a bias only when ``bias`` and not ``tie_weights``.
        mlp_hidden: the MLP's hidden width; ``None``: ``4·dim``.
        norm_eps: the ``eps`` of the norms.
        rope_base: the ``base`` of the rotary angles (``θᵢ = base^(-2i/head_dim)``).
    """

    vocab_size: int
    context: int = 64
    dim: int = 128
    heads: int = 4
    layers: int = 3
    dropout: float = 0.0
    positions: Literal["learned", "sinusoidal", "rope"] = "learned"
    attention: Literal["scratch", "torch"] = "scratch"
    norm: Literal["layer", "rms"] = "layer"
    mlp: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu"
    kv_heads: int | None = None
    bias: bool = True
    tie_weights: bool = False
    mlp_hidden: int | None = None
    norm_eps: float = 1e-5
    rope_base: float = 10_000.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "dim", "heads", "layers"):
            _check_positive_int(name, getattr(self, name))
        if self.dim % self.heads:
            raise ValueError(f"GPTConfig.dim={self.dim} must be divisible by heads={self.heads}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"GPTConfig.dropout must be a probability in [0, 1); got {self.dropout!r}")
        for name, allowed in (("positions", POSITIONS), ("attention", BACKENDS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}; got {getattr(self, name)!r}")
        if self.kv_heads is not None:
            _check_positive_int("kv_heads", self.kv_heads)
            if self.heads % self.kv_heads:
                raise ValueError(f"GPTConfig.kv_heads={self.kv_heads} must divide heads={self.heads}")
        if self.mlp_hidden is not None:
            _check_positive_int("mlp_hidden", self.mlp_hidden)
        for name in ("bias", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GPTConfig.{name} must be True or False; got {getattr(self, name)!r}")
        for name in ("norm_eps", "rope_base"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"GPTConfig.{name} must be a positive number; got {value!r}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dimension; dim / heads = {self.head_dim}")

    @property
    def head_dim(self) -> int:
        """The width of one attention head, ``dim / heads``."""
        return self.dim // self.heads

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads per block (``kv_heads``, or ``heads`` when it is ``None``)."""
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def hidden(self) -> int:
        """The MLP's hidden width (``mlp_hidden``, or ``4·dim`` when it is ``None``)."""
        return 4 * self.dim if self.mlp_hidden is None else self.mlp_hidden


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"GPTConfig.{name} must be a positive int; got {value!r}")


def parameter_counts(config: GPTConfig) -> dict[str, int]:
    """The parameters of a :class:`TinyGPT` with ``config``, part by part, by formula.

    With ``d = dim``, ``V = vocab_size``, ``T = context``, ``L = layers``,
    ``h`` heads and ``g`` key/value heads of width ``k = d / h``, MLP width ``H``
    and ``b = 1`` with biases (else 0):

    * token embeddings ``V·d``; position embeddings ``T·d`` (learned positions only);
    * attention ``L·((h + 2g)·k·d + d² + b·((h + 2g)·k + d))``: q, k, v and output projections;
    * feed-forward ``L·(2·d·H + b·(H + d))`` with GELU, ``L·(3·d·H + b·(2H + d))`` with SwiGLU;
    * block norms ``L·2·d`` (``L·4·d`` for layer norms with biases), final norm ``d`` (``2d``);
    * head ``d·V`` unless tied, ``+ V`` for its bias.

    For GPT-2's layout (``h = g``, GELU, biases) this is
    :func:`companion.scale.gpt_parameter_counts`: ``12·d² + 13·d`` per block.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"parameter_counts takes a GPTConfig; got {type(config).__name__}")
    c = config
    d, L, H, b = c.dim, c.layers, c.hidden, int(c.bias)
    qkv = (c.heads + 2 * c.n_kv_heads) * c.head_dim
    mlp = 3 * d * H + b * (2 * H + d) if c.mlp == "swiglu" else 2 * d * H + b * (H + d)
    norm = d * (2 if c.norm == "layer" and c.bias else 1)
    return {
        "token embeddings": c.vocab_size * d,
        "position embeddings": c.context * d if c.positions == "learned" else 0,
        "attention": L * (qkv * d + d * d + b * (qkv + d)),
        "feed-forward": L * mlp,
        "block norms": L * 2 * norm,
        "final norm": norm,
        "head": (0 if c.tie_weights else d * c.vocab_size + b * c.vocab_size),
    }


def kv_cache_bytes(config: GPTConfig, batch: int, length: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the keys and values a :class:`TinyGPT` caches for ``batch`` sequences of ``length`` tokens.

    ``2 · layers · batch · kv_heads · head_dim · length · bytes per number``: a key
    and a value per token, head and block. Grouped-query attention divides it by
    ``heads / kv_heads``; it grows with the length, unlike the weights.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"kv_cache_bytes takes a GPTConfig; got {type(config).__name__}")
    for name, value in (("batch", batch), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype; got {dtype!r}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config.layers * batch * config.n_kv_heads * config.head_dim * length * itemsize


class TinyGPT(nn.Module):
    """A decoder-only language model: ``[B, T]`` token ids → ``[B, T, vocab_size]`` next-token logits.

    ``logits[b, t]`` scores the token that follows ``ids[b, : t + 1]``: causal
    attention lets position ``t`` see positions ``0 … t`` only, so one forward pass
    trains ``T`` predictions at once. With the default sizes (3 blocks, ``dim=128``)
    and 65 characters the model has about 0.6 million parameters.

    Weights start as in GPT-2: normal with standard deviation 0.02, biases zero,
    norms' scales one, the output projections of each residual branch scaled
    down by ``√(2·layers)``.

    Args:
        config: a :class:`GPTConfig`.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"TinyGPT takes a GPTConfig; got {type(config).__name__}")
        self.config = c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.dim)
        if c.positions == "learned":
            self.position_embedding = nn.Embedding(c.context, c.dim)
        elif c.positions == "sinusoidal":
            self.register_buffer("sinusoids", sinusoidal_positional_encoding(c.context, c.dim), persistent=False)
        else:
            cos, sin = rotary_angles(c.context, c.head_dim, c.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.dropout = nn.Dropout(c.dropout) if c.dropout else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.heads, dropout=c.dropout, backend=c.attention, kv_heads=c.kv_heads,
                             norm=c.norm, mlp=c.mlp, hidden=c.hidden, bias=c.bias, eps=c.norm_eps)  # fmt: skip
            for _ in range(c.layers)
        )
        self.ln_final = make_norm(c.norm, c.dim, c.norm_eps, c.bias, c.attention)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=c.bias and not c.tie_weights)
        self.apply(self._init_weights)
        for block in self.blocks:
            for residual_out in block.residual_projections:
                nn.init.normal_(residual_out.weight, std=0.02 / (2 * c.layers) ** 0.5)
        if c.tie_weights:
            self.head.weight = self.token_embedding.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def positions(self, length: int, start: int = 0) -> torch.Tensor:
        """The position vectors added to the tokens at ``start … start + length - 1``, ``[length, dim]``."""
        if self.config.positions == "learned":
            return self.position_embedding.weight[start : start + length]
        if self.config.positions == "sinusoidal":
            return self.sinusoids[start : start + length]
        raise ValueError("with positions='rope' nothing is added to the tokens: queries and keys are rotated")

    def _check_ids(self, ids: object) -> None:
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"TinyGPT takes a tensor of token ids; got {type(ids).__name__}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"TinyGPT takes integer token ids (int64); got dtype {ids.dtype}")
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"TinyGPT expects ids of shape [B, T] with T >= 1; got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"token ids must lie in 0 … {self.config.vocab_size - 1}; got {int(ids.min())} … {int(ids.max())}"
            )

    def new_cache(
        self, batch: int, capacity: int | None = None, dtype: torch.dtype | None = None
    ) -> list[KVCache]:
        """An empty :class:`~companion.attention.KVCache` per block for ``batch`` sequences.

        ``capacity`` defaults to ``context``; ``dtype`` and device follow the model's weights.
        Its memory is :func:`kv_cache_bytes` ``(config, batch, capacity, dtype)``.
        """
        c, weight = self.config, self.head.weight
        capacity = c.context if capacity is None else capacity
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= c.context:
            raise ValueError(f"capacity must be an int in 1 … context={c.context}; got {capacity!r}")
        dtype = weight.dtype if dtype is None else dtype
        return [KVCache(batch, c.n_kv_heads, c.head_dim, capacity, dtype, weight.device) for _ in range(c.layers)]

    def _check_cache(self, cache: object, batch: int) -> int:
        """The number of tokens ``cache`` (a list of :class:`KVCache`, one per block) already holds."""
        if (
            not isinstance(cache, list)
            or len(cache) != self.config.layers
            or not all(isinstance(layer, KVCache) for layer in cache)
        ):
            raise TypeError(f"cache must be a list of {self.config.layers} KVCache (one per block): see new_cache")
        lengths = {layer.length for layer in cache}
        if len(lengths) != 1:
            raise ValueError(f"the blocks' caches hold different lengths {sorted(lengths)}")
        if cache[0].keys.shape[0] != batch:
            raise ValueError(f"the cache is for a batch of {cache[0].keys.shape[0]}; got ids for {batch}")
        return lengths.pop()

    def forward(self, ids: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """Next-token logits ``[B, T, vocab_size]`` of token ids ``int64 [B, T]``.

        Without ``cache`` the ids are positions ``0 … T - 1`` (``T <= context``). With a
        ``cache`` (:meth:`new_cache`) holding ``S`` earlier tokens, they are positions
        ``S … S + T - 1`` (``S + T <= context``): their keys and values are appended to
        the cache, and they attend to the earlier tokens through it — a **prefill**
        when ``S = 0``, a **decode** step for ``T = 1``.
        """
        self._check_ids(ids)
        B, T = ids.shape
        start = 0 if cache is None else self._check_cache(cache, B)
        if start + T > self.config.context:
            cached = f" after {start} cached" if start else ""
            raise ValueError(f"TinyGPT reads at most context={self.config.context} tokens; got length {T}{cached}")
        x = self.token_embedding(ids)
        rope = None
        if self.config.positions == "rope":
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        else:
            x = x + self.positions(T, start)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, rope=rope, cache=None if cache is None else cache[i])
        return self.head(self.ln_final(x))

    @torch.no_grad()
    def generate(
        self,
        ids: torch.Tensor,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue each prompt by ``n`` sampled tokens.

        Each step scores the next token from the last ``context`` tokens and draws it
        from ``softmax(logits / temperature)`` (restricted to the ``top_k`` most likely
        tokens, then to the nucleus of probability ``top_p``, when given): a temperature
        below 1 sharpens the distribution, above 1 flattens it, and ``temperature=0``
        always takes the most likely token.

        With ``use_cache`` the prompt is read once (prefill) and every step after
        that runs the model on the one new token (decode), its keys and values kept
        in a :class:`~companion.attention.KVCache` per block. Once ``context`` tokens
        are cached the window slides, every position changes, and each step reads
        the whole window again. The logits are those of ``use_cache=False`` (which
        recomputes every step), up to rounding.

        Args:
            ids: prompts ``int64 [B, T0]`` (or one prompt ``[T0]``), ``T0 >= 1``.
            n: tokens to add, ``>= 0``.
            temperature: a finite number ``>= 0``.
            top_k: sample among the k most likely tokens only.
            generator: a ``torch.Generator`` on the model's device, for repeatable samples.
            top_p: sample among the most likely tokens whose probabilities add up to ``top_p`` ∈ (0, 1].
            use_cache: keep keys and values between steps (default) or recompute.

        Returns:
            ``int64 [B, T0 + n]`` (or ``[T0 + n]``): the prompts followed by their continuations.
            The model's train/eval mode is left as it was.
        """
        check_sampling(n, temperature, top_k, top_p)
        single = isinstance(ids, torch.Tensor) and ids.ndim == 1
        if single:
            ids = ids.unsqueeze(0)
        self._check_ids(ids)
        context = self.config.context
        was_training = self.training
        self.eval()
        try:
            ids = ids.to(self.head.weight.device, torch.int64)
            cache = None
            for _ in range(n):
                if cache is not None and cache[0].length < context:
                    logits = self(ids[:, -1:], cache=cache)  # decode: the newest token only
                else:  # prefill (or, once the window slides, a fresh read of the whole window)
                    cache = self.new_cache(ids.shape[0]) if use_cache else None
                    logits = self(ids[:, -context:], cache=cache)
                following = sample_next(logits[:, -1].float(), temperature, top_k, generator, top_p)
                ids = torch.cat([ids, following], dim=1)
        finally:
            self.train(was_training)
        return ids[0] if single else ids

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items())
