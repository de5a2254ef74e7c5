"""Weight-only quantization: store a layer's weights in 4 or 8 bits, blockwise, and compute with them.

Blockwise absmax quantization to ``b`` bits cuts a weight tensor, read in
row-major order, into blocks of ``group_size`` numbers and stores, for each
block, one scale ``s = max|w| / q_max`` (``q_max = 2^(b−1) − 1``: 7 for 4 bits,
127 for 8) and the integers

.. math::

    q_i = \\operatorname{round}(w_i / s) \\in \\{-q_{\\max}, …, q_{\\max}\\},
    \\qquad \\hat w_i = s\\, q_i, \\qquad |w_i - \\hat w_i| \\le s / 2.

A block's largest weight is kept exactly (up to float rounding); one outlier
makes its block's steps coarse, which is why blocks are small. 4-bit codes are
packed two to a byte, so a tensor of ``n`` numbers takes
``⌈n/g⌉·(g·b/8 + 4)`` bytes with float32 scales (:func:`quantized_bytes`):
``b + 32/g`` bits a number, 4.5 for 4 bits in blocks of 64, against 32 for float32.

:class:`QuantLinear` keeps a linear layer's weight that way and dequantizes it
on the fly: a frozen base on which :mod:`companion.lora` can train a low-rank
update — the idea of QLoRA (Dettmers et al. 2023), which uses a 4-bit
"NormalFloat" code and quantizes the scales too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from companion.models.base import replace_module, select_modules

BITS: tuple[int, ...] = (4, 8)
"""The widths a weight can be stored in."""


def _check_format(bits: object, group_size: object) -> None:
    if bits not in BITS or isinstance(bits, bool):
        raise ValueError(f"bits must be one of {BITS}; got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be an even int >= 2; got {group_size!r}")


@dataclass(frozen=True)
class QuantizedTensor:
    """A tensor stored as blockwise absmax integers (see the module's docstring).

    Attributes:
        packed: ``uint8 [⌈n/g⌉·g·bits/8]``: the codes ``q + 2^(bits−1)``, two to a
            byte for 4 bits (the first number in the low half), the last block padded with zeros.
        scales: ``float32 [⌈n/g⌉]``: each block's ``max|w| / q_max``.
        shape: the original tensor's shape.
        bits: 4 or 8.
        group_size: the numbers in a block, ``g``.
    """

    packed: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    bits: int
    group_size: int

    @property
    def nbytes(self) -> int:
        """The bytes the codes and the scales take, measured on the tensors."""
        return self.packed.nbytes + self.scales.nbytes

    def numel(self) -> int:
        """How many numbers the original tensor holds."""
        return math.prod(self.shape)


def quantized_bytes(numel: int, bits: int = 4, group_size: int = 64) -> int:
    """The bytes of ``numel`` numbers quantized by :func:`quantize`, by formula: ``⌈n/g⌉·(g·bits/8 + 4)``."""
    _check_format(bits, group_size)
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be an int >= 0; got {numel!r}")
    return math.ceil(numel / group_size) * (group_size * bits // 8 + 4)


def quantize(weight: torch.Tensor, bits: int = 4, group_size: int = 64) -> QuantizedTensor:
    """Quantize ``weight`` (any shape, floating point) blockwise to ``bits``-bit integers with absmax scales.

    A block of zeros gets the scale 0 and dequantizes to zeros exactly.
    """
    _check_format(bits, group_size)
    if not isinstance(weight, torch.Tensor) or not weight.dtype.is_floating_point:
        raise TypeError(f"quantize takes a floating-point tensor; got {weight!r:.80}")
    if not torch.isfinite(weight).all():
        raise ValueError("quantize takes finite weights; this tensor holds NaN or infinity")
    flat = weight.detach().float().flatten()
    blocks = F.pad(flat, (0, (-len(flat)) % group_size)).view(-1, group_size)
    q_max = 2 ** (bits - 1) - 1
    scales = blocks.abs().amax(dim=1) / q_max
    q = torch.round(blocks / torch.where(scales > 0, scales, 1.0)[:, None]).clamp(-q_max, q_max)
    codes = (q + 2 ** (bits - 1)).to(torch.uint8).flatten()
    if bits == 4:
        codes = codes[0::2] | (codes[1::2] << 4)
    return QuantizedTensor(codes, scales, weight.shape, bits, group_size)


def dequantize(q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The tensor that ``q`` stands for, ``ŵ = s·q``, in its original shape and ``dtype``."""
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"dequantize takes a QuantizedTensor; got {type(q).__name__}")
    codes = q.packed
    if q.bits == 4:
        codes = torch.stack([codes & 0x0F, codes >> 4], dim=1).flatten()
    values = codes.view(-1, q.group_size).float() - 2 ** (q.bits - 1)
    return (values * q.scales[:, None]).flatten()[: q.numel()].view(q.shape).to(dtype)


def quantization_error(weight: torch.Tensor, bits: int = 4, group_size: int = 64) -> float:
    """The relative error of storing ``weight`` in ``bits`` bits: ``‖w − ŵ‖ / ‖w‖`` (Frobenius norms).

    About ``step / (√12 · rms(w))`` when rounding errors spread evenly over a
    step; 0 for a tensor of zeros.
    """
    restored = dequantize(quantize(weight, bits, group_size), torch.float64)
    norm = weight.detach().double().norm()
    return float((weight.detach().double() - restored).norm() / norm) if norm > 0 else 0.0


class QuantLinear(nn.Module):
    """A linear layer whose weight is stored quantized and dequantized at every call: ``y = x ŵᵀ + b``.

    It holds the packed codes and the scales as buffers (nothing trains); the
    bias stays in floating point. Build it from a trained ``nn.Linear``; use
    :func:`quantize_model` to swap a model's layers.

    Args:
        linear: the layer to quantize.
        bits: 4 or 8.
        group_size: numbers per block.
    """

    def __init__(self, linear: nn.Linear, bits: int = 4, group_size: int = 64) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantLinear quantizes an nn.Linear; got {type(linear).__name__}")
        q = quantize(linear.weight, bits, group_size)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bits, self.group_size = bits, group_size
        self.register_buffer("packed", q.packed)
        self.register_buffer("scales", q.scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def quantized(self) -> QuantizedTensor:
        """The stored weight as a :class:`QuantizedTensor`."""
        shape = torch.Size((self.out_features, self.in_features))
        return QuantizedTensor(self.packed, self.scales, shape, self.bits, self.group_size)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight ``ŵ``, ``float32 [out, in]``: a fresh copy, computed on each access."""
        return dequantize(self.quantized())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in_features] → [..., out_features]`` in ``x``'s dtype."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, dequantize(self.quantized(), x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"bits={self.bits}, group_size={self.group_size}"
        )


def quantize_model(
    model: nn.Module, targets: str | Sequence[str] | None = None, bits: int = 4, group_size: int = 64
) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers by :class:`QuantLinear` s, in place; return ``model``.

    Args:
        model: any ``nn.Module``.
        targets: name patterns of the layers to quantize (as
            :func:`~companion.models.base.select_modules` matches them); None means every ``nn.Linear``.
        bits: 4 or 8.
        group_size: numbers per block.
    """
    _check_format(bits, group_size)
    found = select_modules(model, targets) if targets is not None else dict(model.named_modules())
    layers = {name: m for name, m in found.items() if name and isinstance(m, nn.Linear)}
    if not layers:
        raise ValueError(f"no nn.Linear layer to quantize in the modules named by {targets!r}")
    for name, layer in layers.items():
        replace_module(model, name, QuantLinear(layer, bits, group_size))
    return model


def model_bytes(model: nn.Module) -> int:
    """The bytes of all of ``model``'s parameters and buffers, measured on the tensors (shared ones once)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.nbytes for t in tensors.values())
