"""What the chapters' models share: parameter counts, input checks, the sampling of the next token, and finding sub-modules by name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fnmatch import fnmatchcase

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


def _check_input(x: torch.Tensor, model: str, expected: str, ok: bool, dtype: torch.dtype | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} takes a torch tensor; got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{model} takes floating-point inputs; got dtype {x.dtype} (for 0-255 images use x.float() / 255)"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{model}'s weights are {dtype} but the input is {x.dtype}: convert the input (x.to({dtype})) "
            f"or the model (model.to({x.dtype}))"
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


def select_modules(model: nn.Module, patterns: str | Sequence[str]) -> dict[str, nn.Module]:
    """The sub-modules of ``model`` whose qualified names match ``patterns``, by name in model order.

    A pattern is a shell-style glob (``*`` matches any run of characters, dots
    included) that matches a name either whole or as its last dotted parts:
    ``"out_proj"`` matches ``"blocks.0.attn.out_proj"``, ``"blocks.*.mlp.0"``
    matches the first layer of every block's MLP, ``"head"`` only a module named
    ``head`` (at any depth), never ``"heads"``.

    Args:
        model: any ``torch.nn.Module``.
        patterns: one pattern or a sequence of them.

    Raises:
        ValueError: a pattern matches no module (the message lists the names there are).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, Sequence) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise TypeError(f"patterns must be a non-empty str or a sequence of them; got {patterns!r}")
    named = [(name, module) for name, module in model.named_modules() if name]
    chosen: dict[str, nn.Module] = {}
    for pattern in patterns:
        found = {n: m for n, m in named if fnmatchcase(n, pattern) or fnmatchcase(n, f"*.{pattern}")}
        if not found:
            names = [n for n, _ in named]
            raise ValueError(f"no module of the model is named like {pattern!r}; its modules are {names}")
        chosen |= found
    return {name: chosen[name] for name, _ in named if name in chosen}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the sub-module called ``name`` (e.g. ``"blocks.0.attn.out_proj"``) was."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
