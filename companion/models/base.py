"""What the chapters' models share: parameter counts and input checks."""

from __future__ import annotations

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
