"""What the chapters' models share: parameter counts, input checks and the sampling of the next token."""

from __future__ import annotations

import math

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of scalar parameters of ``model`` (only those with ``requires_grad`` by default)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_dropout(dropout: float) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1); got {dropout!r}")
    return float(dropout)


def _check_input(x: torch.Tensor, model: str, expected: str, ok: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} takes a torch tensor; got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{model} takes floating-point inputs; got dtype {x.dtype} (for 0-255 images use x.float() / 255)"
        )
    if not ok:
        raise ValueError(f"{model} expects inputs of shape {expected}; got {tuple(x.shape)}")


def check_sampling(n: int, temperature: float, top_k: int | None, top_p: float | None = None) -> None:
    """Validate the arguments of a language model's ``generate``; ``ValueError`` says what was expected."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int; got {n!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0; got {temperature!r}")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number (0: always the most likely token); got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None; got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a probability in (0, 1] or None; got {top_p!r}")


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The next token of each row: ``int64 [B, 1]`` drawn from ``softmax(logits / temperature)``.

    ``logits``: ``[B, V]``. ``temperature=0`` takes the most likely token. Otherwise
    the distribution is cut, in this order, to the ``top_k`` largest logits, then to
    the **nucleus** of ``top_p``: the most likely tokens, taken in order of
    probability, until their probabilities add up to ``top_p`` (the token that crosses
    ``top_p`` is kept, so at least one always is). What is cut gets probability 0;
    the rest is renormalised.
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # the probability of the more likely tokens
        cut = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(cut, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
