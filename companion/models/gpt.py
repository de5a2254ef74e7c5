"""A small decoder-only Transformer for characters (chapter 9), after the shape of nanoGPT's model.

``TinyGPT`` reads a window of token ids and, at every position, scores the
next token: token embedding + position embedding → ``layers`` pre-norm
:class:`~companion.attention.TransformerBlock` s with causal attention → a
final layer norm → a linear read-out to ``vocab_size`` logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from companion.attention import BACKENDS, LayerNorm, TransformerBlock, sinusoidal_positional_encoding
from companion.models.base import check_sampling, sample_next


@dataclass
class GPTConfig:
    """The sizes and switches of a :class:`TinyGPT`.

    Attributes:
        vocab_size: number of distinct tokens (65 characters for Tiny Shakespeare).
        context: the longest window the model reads, in tokens.
        dim: the model dimension (width of every token's vector).
        heads: attention heads per block; ``dim`` must be divisible by it.
        layers: number of Transformer blocks.
        dropout: dropout on embeddings, attention outputs and MLP outputs (training only).
        positions: ``"learned"`` (a trained embedding per position, as GPT-2) or
            ``"sinusoidal"`` (the fixed signals of the original Transformer).
        attention: ``"scratch"`` (:mod:`companion.attention`) or ``"torch"``
            (``F.scaled_dot_product_attention``): the same function, computed faster.
    """

    vocab_size: int
    context: int = 64
    dim: int = 128
    heads: int = 4
    layers: int = 3
    dropout: float = 0.0
    positions: Literal["learned", "sinusoidal"] = "learned"
    attention: Literal["scratch", "torch"] = "scratch"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "dim", "heads", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int; got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"GPTConfig.dim={self.dim} must be divisible by heads={self.heads}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"GPTConfig.dropout must be a probability in [0, 1); got {self.dropout!r}")
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"GPTConfig.positions must be 'learned' or 'sinusoidal'; got {self.positions!r}")
        if self.attention not in BACKENDS:
            raise ValueError(f"GPTConfig.attention must be one of {BACKENDS}; got {self.attention!r}")


class TinyGPT(nn.Module):
    """A decoder-only character model: ``[B, T]`` token ids → ``[B, T, vocab_size]`` next-token logits.

    ``logits[b, t]`` scores the token that follows ``ids[b, : t + 1]``: causal
    attention lets position ``t`` see positions ``0 … t`` only, so one forward pass
    trains ``T`` predictions at once. With the default sizes (3 blocks, ``dim=128``)
    and 65 characters the model has about 0.6 million parameters.

    Weights start as in GPT-2: normal with standard deviation 0.02, biases zero,
    the output projections of each residual branch scaled down by ``√(2·layers)``.

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
        else:
            self.register_buffer("sinusoids", sinusoidal_positional_encoding(c.context, c.dim), persistent=False)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.heads, dropout=c.dropout, backend=c.attention) for _ in range(c.layers)
        )
        self.ln_final = LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size)
        self.apply(self._init_weights)
        for block in self.blocks:
            for residual_out in (block.attn.out_proj, block.mlp[2]):
                nn.init.normal_(residual_out.weight, std=0.02 / (2 * c.layers) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def positions(self, length: int) -> torch.Tensor:
        """The position vectors added to the first ``length`` tokens, ``[length, dim]``."""
        if self.config.positions == "learned":
            return self.position_embedding.weight[:length]
        return self.sinusoids[:length]

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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[B, T, vocab_size]`` of token ids ``int64 [B, T]``, ``1 <= T <= context``."""
        self._check_ids(ids)
        T = ids.shape[1]
        if T > self.config.context:
            raise ValueError(f"TinyGPT reads at most context={self.config.context} tokens; got length {T}")
        x = self.dropout(self.token_embedding(ids) + self.positions(T))
        for block in self.blocks:
            x = block(x, causal=True)
        return self.head(self.ln_final(x))

    @torch.no_grad()
    def generate(
        self,
        ids: torch.Tensor,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue each prompt by ``n`` sampled tokens.

        Each step reads the last ``context`` tokens and draws the next one from
        ``softmax(logits / temperature)`` of the last position (restricted to the
        ``top_k`` most likely tokens when given): a temperature below 1 sharpens the
        distribution, above 1 flattens it, and ``temperature=0`` always takes the
        most likely token.

        Args:
            ids: prompts ``int64 [B, T0]`` (or one prompt ``[T0]``), ``T0 >= 1``.
            n: tokens to add, ``>= 0``.
            temperature: ``>= 0``.
            top_k: sample among the k most likely tokens only.
            generator: a ``torch.Generator`` on the model's device, for repeatable samples.

        Returns:
            ``int64 [B, T0 + n]`` (or ``[T0 + n]``): the prompts followed by their continuations.
            The model's train/eval mode is left as it was.
        """
        check_sampling(n, temperature, top_k)
        single = isinstance(ids, torch.Tensor) and ids.ndim == 1
        if single:
            ids = ids.unsqueeze(0)
        self._check_ids(ids)
        was_training = self.training
        self.eval()
        try:
            ids = ids.to(self.head.weight.device, torch.int64)
            for _ in range(n):
                last = self(ids[:, -self.config.context :])[:, -1].float()
                following = sample_next(last, temperature, top_k, generator)
                ids = torch.cat([ids, following], dim=1)
        finally:
            self.train(was_training)
        return ids[0] if single else ids

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items())
