"""The fully connected network of the MNIST chapter (chapter 4) and later."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from companion.models.base import _check_dropout, _check_input

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}
"""The activations :class:`MLP` accepts, by name, each with its ``torch.nn`` layer."""


class MLP(nn.Module):
    """A fully connected network: ``Linear → [BatchNorm] → activation → [Dropout]`` per hidden layer.

    ``MLP([784, 512, 512, 10])`` is the digit classifier of chapter 4: inputs of
    784 pixels, two hidden layers of 512 ReLU units, 10 output scores (logits),
    669,706 parameters. The last layer has no activation: a softmax is part of
    the loss (``nn.CrossEntropyLoss``), not of the model.

    Each hidden layer computes ``h = dropout(act(norm(W x + b)))``.

    Args:
        sizes: layer widths, inputs first and outputs last (at least two).
        activation: one of :data:`ACTIVATIONS` (``"relu"``, ``"tanh"``, ...).
        dropout: probability of zeroing a hidden unit during training.
        batchnorm: normalise each hidden layer's pre-activations over the batch.

    Shapes: input ``[N, *]`` with ``sizes[0]`` numbers per sample (images
    ``[N, 28, 28]`` are flattened), output ``[N, sizes[-1]]``.
    """

    def __init__(
        self, sizes: Sequence[int], activation: str = "relu", dropout: float = 0.0, batchnorm: bool = False
    ) -> None:
        super().__init__()
        if (
            isinstance(sizes, (str, bytes))
            or len(sizes) < 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)
        ):
            raise ValueError(f"sizes must list at least two positive int widths, inputs first; got {sizes!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
        self.sizes = tuple(sizes)
        dropout = _check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
            layers.append(nn.Linear(n_in, n_out))
            if batchnorm:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, sizes[-1]]`` of inputs ``[N, ...]`` with ``sizes[0]`` numbers per sample."""
        ok = isinstance(x, torch.Tensor) and x.ndim >= 2 and x.shape[1:].numel() == self.sizes[0]
        _check_input(x, "MLP", f"[N, {self.sizes[0]}] (or [N, ...] with {self.sizes[0]} numbers per sample)", ok)
        return self.net(x)
