"""A configurable convolutional network for small square one-channel images (chapters 6 and 7)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from companion.models.base import _check_dropout, _check_input


def _positive(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


class CNN(nn.Module):
    """A stack of ``conv → ReLU [→ max-pool 2×2]`` blocks, then a hidden dense layer and a read-out.

    ``[N,1,S,S] → features [N, channels[-1], s, s] → flatten → Linear → ReLU → Dropout → Linear → [N, num_classes]``.

    Each block is a ``kernel_size × kernel_size`` convolution with stride 1 and a
    ReLU; the first ``pools`` blocks (all of them by default) end in a 2×2 max-pool
    that halves the side of the feature maps. With ``padding="same"`` a
    convolution keeps the side (zero padding of ``kernel_size // 2``); with
    ``"valid"`` (Keras' default) it pads nothing and the side shrinks by
    ``kernel_size − 1``.

    Examples, for MNIST's 28×28 digits:

    * ``CNN()`` — conv32-pool-conv64-pool-dense128-10, "same" padding:
      28 → 14 → 7, 421,642 parameters.
    * ``CNN(padding="valid")`` — the same layers as Keras builds them by default:
      28 → 26 → 13 → 11 → 5, 225,034 parameters.
    * ``CNN(channels=(32, 64, 64), hidden=64, padding="valid", pools=2)`` —
      conv32-pool-conv64-pool-conv64-dense64-10: 28 → 26 → 13 → 11 → 5 → 3,
      93,322 parameters.

    Args:
        channels: output channels of the convolutions, two or more.
        hidden: width of the hidden fully connected layer.
        num_classes: number of output scores.
        dropout: dropout probability before the read-out layer.
        image_size: side of the square input. With ``"same"`` padding it must be
            divisible by ``2 ** pools``, so that no pooling drops a row.
        kernel_size: side of every convolution kernel (odd with ``"same"`` padding).
        padding: ``"same"`` or ``"valid"``.
        pools: how many of the blocks, counted from the first, end in a max-pool;
            None means all of them.

    Shapes: input ``[N, image_size, image_size]`` or ``[N, 1, image_size, image_size]``,
    float; output ``[N, num_classes]``. ``feature_shape`` is the shape of one
    sample's feature maps, ``(channels[-1], s, s)``. The convolution weights are stored
    channels-last (``torch.channels_last``), which changes how the numbers lie in memory, not what
    the network computes.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        num_classes: int = 10,
        dropout: float = 0.0,
        image_size: int = 28,
        *,
        kernel_size: int = 3,
        padding: Literal["same", "valid"] = "same",
        pools: int | None = None,
    ) -> None:
        super().__init__()
        channels = tuple(channels) if isinstance(channels, (tuple, list)) else channels
        if not isinstance(channels, tuple) or len(channels) < 2 or not all(map(_positive, channels)):
            raise ValueError(f"channels must be two or more positive ints, one per convolution; got {channels!r}")
        if not _positive(hidden) or not _positive(num_classes):
            raise ValueError(f"hidden and num_classes must be positive ints; got hidden={hidden!r}, num_classes={num_classes!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid'; got {padding!r}")
        if not _positive(kernel_size) or (padding == "same" and kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be a positive int, odd with 'same' padding; got {kernel_size!r}")
        pools = len(channels) if pools is None else pools
        if isinstance(pools, bool) or not isinstance(pools, int) or not 0 <= pools <= len(channels):
            raise ValueError(f"pools must be an int from 0 to len(channels) = {len(channels)}; got {pools!r}")
        if padding == "same" and (not _positive(image_size) or image_size % 2**pools):
            raise ValueError(
                f"image_size must be a positive int divisible by {2**pools} ({pools} poolings of 'same'-padded maps); "
                f"got {image_size!r}"
            )
        if not _positive(image_size):
            raise ValueError(f"image_size must be a positive int; got {image_size!r}")
        self.image_size = image_size

        layers: list[nn.Module] = []
        side, c_in = image_size, 1
        for index, c_out in enumerate(channels):
            if padding == "valid":
                side -= kernel_size - 1
            if side < (2 if index < pools else 1):
                raise ValueError(
                    f"image_size {image_size} is too small for {len(channels)} {kernel_size}×{kernel_size} "
                    f"'{padding}' convolutions and {pools} poolings: convolution {index + 1} leaves {max(side, 0)}×{max(side, 0)} maps"
                )
            layers += [nn.Conv2d(c_in, c_out, kernel_size, padding=padding), nn.ReLU()]
            if index < pools:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c_out
        self.feature_shape = (channels[-1], side, side)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels[-1] * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(_check_dropout(dropout)),
            nn.Linear(hidden, num_classes),
        )
        # Channels-last (NHWC) convolution weights: the same function, computed by PyTorch's faster
        # kernels (bench/cnn_memory_format.py times a training step both ways); the feature maps come
        # out channels-last too.
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` of images ``[N, S, S]`` or ``[N, 1, S, S]`` (S = ``image_size``)."""
        s = self.image_size
        ok = isinstance(x, torch.Tensor) and (
            (x.ndim == 3 and x.shape[1:] == (s, s)) or (x.ndim == 4 and x.shape[1:] == (1, s, s))
        )
        _check_input(x, "CNN", f"[N, {s}, {s}] or [N, 1, {s}, {s}]", ok, self.classifier[-1].weight.dtype)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))
