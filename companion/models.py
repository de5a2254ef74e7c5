"""The chapters' models, each a plain ``torch.nn.Module`` that can be read top to bottom.

* :class:`MLP` — a fully connected network (chapter 5's 784-512-512-10 digit classifier).
* :class:`CNN` — a small convolutional network for 28×28 images (chapter 6 and later).
* :func:`count_parameters` — how many numbers a model learns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


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


class MLP(nn.Module):
    """A fully connected network: ``Linear → [BatchNorm] → activation → [Dropout]`` per hidden layer.

    ``MLP([784, 512, 512, 10])`` is the digit classifier of chapter 5: inputs of
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


class CNN(nn.Module):
    """A small convolutional network for square one-channel images such as MNIST's 28×28 digits.

    Two blocks ``conv 3×3 (same padding) → ReLU → max-pool 2×2`` halve the image
    twice (28 → 14 → 7) while the channels grow, then a hidden fully connected
    layer and a linear read-out give the logits:
    ``[N,1,28,28] → [N,c1,14,14] → [N,c2,7,7] → [N,hidden] → [N,num_classes]``.

    A convolution shares one small filter across every position of the image,
    so the network has far fewer weights than an MLP of similar power and
    responds to a pattern wherever it appears.

    Args:
        channels: output channels of the two convolutions.
        hidden: width of the fully connected layer.
        num_classes: number of output scores.
        dropout: dropout before the read-out layer.
        image_size: side of the square input, divisible by 4.

    Shapes: input ``[N, image_size, image_size]`` or ``[N, 1, image_size, image_size]``,
    float; output ``[N, num_classes]``.
    """

    def __init__(
        self,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
        num_classes: int = 10,
        dropout: float = 0.0,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        widths = (*channels, hidden, num_classes)
        if len(channels) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in widths):
            raise ValueError(
                f"channels must be two positive ints and hidden, num_classes positive ints; "
                f"got channels={channels!r}, hidden={hidden!r}, num_classes={num_classes!r}"
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4 or image_size % 4:
            raise ValueError(f"image_size must be a positive int divisible by 4; got {image_size!r}")
        self.image_size = image_size
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * (image_size // 4) ** 2, hidden),
            nn.ReLU(),
            nn.Dropout(_check_dropout(dropout)),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` of images ``[N, S, S]`` or ``[N, 1, S, S]`` (S = ``image_size``)."""
        s = self.image_size
        ok = isinstance(x, torch.Tensor) and (
            (x.ndim == 3 and x.shape[1:] == (s, s)) or (x.ndim == 4 and x.shape[1:] == (1, s, s))
        )
        _check_input(x, "CNN", f"[N, {s}, {s}] or [N, 1, {s}, {s}]", ok)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))
