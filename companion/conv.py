"""Convolution and pooling from scratch (chapter 7): ``conv2d`` by im2col, ``max_pool2d``, ``avg_pool2d``.

Every function here is a few tensor operations with autograd doing the
backward pass, and each gives the same numbers (values and gradients) as its
``torch.nn.functional`` namesake. Images are batches ``[N, C, H, W]``:
N samples, C channels, H rows, W columns.

The idea of im2col ("image to columns"): cut every window that the kernel
visits out of the padded image, lay the windows out as the rows of one big
matrix, and the convolution of all windows with all filters becomes a single
matrix product. ``Tensor.unfold`` cuts the windows without copying (it only
changes strides); the ``reshape`` before the product copies them once.

Like every deep-learning framework, :func:`conv2d` computes a
*cross-correlation* (the kernel is not flipped):

    out[n, o, i, j] = b[o] + Σ_c Σ_p Σ_q x_pad[n, c, i·s + p, j·s + q] · w[o, c, p, q]
"""

from __future__ import annotations

from numbers import Integral

import torch
from torch.nn import functional as F

__all__ = ["avg_pool2d", "conv2d", "max_pool2d", "output_size"]

IntPair = int | tuple[int, int]


def _int(name: str, value: object, least: int) -> int:
    """``value`` as a Python int (NumPy's integers are ints too) when it is ``>= least``; else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        kind = "a positive int" if least == 1 else f"an int >= {least}"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    return int(value)


def _pair(name: str, value: object, least: int) -> tuple[int, int]:
    """``value`` as ``(rows, columns)``: an int stands for both."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return _int(name, value[0], least), _int(name, value[1], least)
    if isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    n = _int(name, value, least)
    return n, n


def output_size(n: int, k: int, p: int = 0, s: int = 1) -> int:
    """Side of the output of a convolution or pooling along one axis.

    A kernel of side ``k`` slides with stride ``s`` over ``n`` positions padded
    with ``p`` on each end; it fits ``⌊(n + 2p − k) / s⌋ + 1`` times.

    Args:
        n: input side (rows or columns), ``>= 1``.
        k: kernel side, ``>= 1`` and at most ``n + 2p``.
        p: padding on each end, ``>= 0``.
        s: stride, ``>= 1``.

    Returns:
        the output side, an int ``>= 1``.

    >>> output_size(28, 3), output_size(28, 3, p=1), output_size(28, 2, s=2), output_size(7, 3, 1, 2)
    (26, 28, 14, 4)
    """
    n, k, p, s = _int("n", n, 1), _int("k", k, 1), _int("p", p, 0), _int("s", s, 1)
    if k > n + 2 * p:
        raise ValueError(f"a kernel of side {k} does not fit in {n} positions padded by {p} on each end ({n + 2 * p})")
    return (n + 2 * p - k) // s + 1


def _check_images(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} takes a torch tensor; got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} takes a batch of images of shape [N, C, H, W]; got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} takes floating-point images; got dtype {x.dtype} (for 0-255 images use x.float() / 255)")
    return x


def _windows(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Every ``kh × kw`` window of ``x [N, C, H, W]``: a view ``[N, C, OH, OW, kh, kw]`` (no copy)."""
    return x.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])


def _fits(name: str, x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int], what: str) -> None:
    h, w = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if kernel[0] > h or kernel[1] > w:
        raise ValueError(
            f"{name}: the {kernel[0]}×{kernel[1]} kernel is larger than the padded input, {h}×{w} "
            f"(input shape {tuple(x.shape)}, {what}, padding {padding})"
        )


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> torch.Tensor:
    """2-D convolution (a cross-correlation, as in every framework), computed by im2col and one matrix product.

    ``out[n, o, i, j] = b[o] + Σ_{c,p,q} x_pad[n, c, i·s_h + p, j·s_w + q] · w[o, c, p, q]``,
    where ``x_pad`` is ``x`` with ``padding`` zeros around each image.

    Args:
        x: images ``[N, C_in, H, W]``, floating point.
        weight: filters ``[C_out, C_in, kh, kw]``, same dtype and device as ``x``.
        bias: ``[C_out]`` or None.
        stride: step between windows, an int or ``(rows, columns)``, ``>= 1``.
        padding: zeros added on each side, an int or ``(rows, columns)``, ``>= 0``.

    Returns:
        ``[N, C_out, OH, OW]`` with ``OH = ⌊(H + 2p_h − kh) / s_h⌋ + 1`` (:func:`output_size`), likewise ``OW``.

    Raises:
        ValueError: shapes that do not fit together (channels, bias, kernel larger than the padded
            input), a stride below 1 or a negative padding; the message names the shapes.
        TypeError: non-tensor or non-floating inputs, or different dtypes.
    """
    x = _check_images("conv2d", x)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"conv2d: weight must have shape [C_out, C_in, kh, kw]; got {shape}")
    if weight.dtype != x.dtype:
        raise TypeError(f"conv2d: input and weight need the same dtype; got {x.dtype} and {weight.dtype}")
    c_out, c_in, kh, kw = weight.shape
    if x.shape[1] != c_in:
        raise ValueError(
            f"conv2d: the input has {x.shape[1]} channels but the weight expects {c_in} "
            f"(input shape {tuple(x.shape)}, weight shape {tuple(weight.shape)}: [N, C_in, H, W] and [C_out, C_in, kh, kw])"
        )
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (c_out,)):
        shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"conv2d: bias must have shape ({c_out},), one per filter of weight {tuple(weight.shape)}; got {shape}")
    (sh, sw), (ph, pw) = _pair("stride", stride, 1), _pair("padding", padding, 0)
    if min(kh, kw) < 1:
        raise ValueError(f"conv2d: weight has an empty kernel, shape {tuple(weight.shape)}")
    _fits("conv2d", x, (kh, kw), (ph, pw), f"weight shape {tuple(weight.shape)}")

    n = x.shape[0]
    x = F.pad(x, (pw, pw, ph, ph))  # zeros: left, right, top, bottom
    windows = _windows(x, (kh, kw), (sh, sw))  # [N, C_in, OH, OW, kh, kw], a view
    oh, ow = windows.shape[2], windows.shape[3]
    columns = windows.permute(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c_in * kh * kw)  # im2col: one row per window
    out = columns @ weight.reshape(c_out, c_in * kh * kw).T  # [N, OH·OW, C_out]
    if bias is not None:
        out = out + bias
    return out.transpose(1, 2).reshape(n, c_out, oh, ow)


def _pool_settings(
    name: str, x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = _pair("kernel_size", kernel_size, 1)
    steps = kernel if stride is None else _pair("stride", stride, 1)
    pads = _pair("padding", padding, 0)
    if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
        raise ValueError(f"{name}: padding {pads} must be at most half the kernel {kernel}")
    _fits(name, x, kernel, pads, f"kernel_size {kernel}")
    return kernel, steps, pads


def max_pool2d(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0
) -> torch.Tensor:
    """Max pooling: the largest value of each window, channel by channel. It has no parameters.

    ``out[n, c, i, j] = max_{p<kh, q<kw} x_pad[n, c, i·s_h + p, j·s_w + q]``, where
    ``x_pad`` is padded with −∞ (padding never wins).

    Args:
        x: ``[N, C, H, W]``, floating point.
        kernel_size: window side, an int or ``(rows, columns)``.
        stride: step between windows; None (default) means ``kernel_size``: windows that do not overlap.
        padding: −∞ added on each side, at most half the kernel.

    Returns:
        ``[N, C, OH, OW]`` with ``OH = ⌊(H + 2p_h − kh) / s_h⌋ + 1``. Its gradient flows only to
        the largest entry of each window.
    """
    x = _check_images("max_pool2d", x)
    kernel, steps, (ph, pw) = _pool_settings("max_pool2d", x, kernel_size, stride, padding)
    x = F.pad(x, (pw, pw, ph, ph), value=-torch.inf)
    return _windows(x, kernel, steps).flatten(-2).max(dim=-1).values


def avg_pool2d(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0
) -> torch.Tensor:
    """Average pooling: the mean of each window, channel by channel. It has no parameters.

    ``out[n, c, i, j] = (1 / (kh·kw)) Σ_{p<kh, q<kw} x_pad[n, c, i·s_h + p, j·s_w + q]``, where
    ``x_pad`` is padded with zeros that count in the mean (``F.avg_pool2d``'s default).

    Args:
        x: ``[N, C, H, W]``, floating point.
        kernel_size: window side, an int or ``(rows, columns)``.
        stride: step between windows; None (default) means ``kernel_size``.
        padding: zeros added on each side, at most half the kernel.

    Returns:
        ``[N, C, OH, OW]``, sizes as for :func:`max_pool2d`.
    """
    x = _check_images("avg_pool2d", x)
    kernel, steps, (ph, pw) = _pool_settings("avg_pool2d", x, kernel_size, stride, padding)
    x = F.pad(x, (pw, pw, ph, ph))
    return _windows(x, kernel, steps).mean(dim=(-2, -1))
