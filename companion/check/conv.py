"""Self-checks of chapter 7, convolutional networks: the output size of a convolution, a convolution
layer's forward pass and max pooling, each written without the library's own."""

from __future__ import annotations

from typing import Any

import torch

from companion.check.core import CheckSpec, Wrong, aten, define, sampler

__all__ = ["conv2d_forward", "conv_output_size", "max_pool2d"]


def _output_size(n: int, k: int, p: int, s: int) -> int:
    return (n + 2 * p - k) // s + 1


def _an_int(case: tuple, out: Any) -> Any:
    if isinstance(out, float):
        right = out == _output_size(*case)
        raise Wrong("the value is right but it is a float; a size is a whole number of positions, and tensor "
                    "shapes need an int" if right else f"expected an int, got the float {out!r}: a window that "
                    "does not fit entirely gives no output")  # fmt: skip
    return out


conv_output_size = define(CheckSpec(
    "conv_output_size", _output_size, view=_an_int, forbidden=("companion.conv.output_size",),
    cases=lambda gen: [(f"n = {n}, k = {k}, p = {p}, s = {s}", (n, k, p, s)) for n, k, p, s in [
        (28, 3, 0, 1), (28, 3, 1, 1), (28, 2, 0, 2), (7, 3, 1, 2), (32, 5, 2, 3), (5, 5, 0, 1), (3, 5, 1, 1),
        (10, 1, 0, 1), (10, 3, 0, 4), (224, 7, 3, 2), (13, 2, 0, 2)]],
    mistakes={
        "the +1 is missing: a kernel that fits exactly once still gives one output":
            lambda n, k, p, s: (n + 2 * p - k) // s,
        "the padding counts once; it is added on both sides": lambda n, k, p, s: (n + p - k) // s + 1,
        "the division rounds up; a window that does not fit entirely is dropped":
            lambda n, k, p, s: -(-(n + 2 * p - k) // s) + 1,
        "the stride divides the whole size, +1 included": lambda n, k, p, s: (n + 2 * p - k + 1) // s,
    },
    hint="pad the n positions with p on both ends, see how far the kernel's first position can move before "
    "the kernel runs off the end, count the steps of size s that fit — whole steps only, integer division — "
    "and do not forget the starting position.",
), doc="""Check ``student(n, k, p, s) -> int``: the number of outputs along one axis of a convolution or a
    pooling over ``n`` inputs, with kernel size ``k``, padding ``p`` and stride ``s``.""")


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    windows = x.unfold(2, kh, 1).unfold(3, kw, 1)  # [N, C, OH, OW, kh, kw]
    oh, ow = windows.shape[2], windows.shape[3]
    columns = windows.permute(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * kh * kw)
    return (columns @ weight.reshape(o, -1).T + bias).transpose(1, 2).reshape(n, o, oh, ow)


def _conv_cases(gen: torch.Generator) -> list:
    r = sampler(gen)
    edge = torch.tensor([[[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]]], dtype=torch.float64)
    step = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    step[..., 2:] = 1.0
    cases = [
        ("one 5×5 image, one 3×3 edge filter, no bias", (step, edge, torch.zeros(1, dtype=torch.float64))),
        ("one image, one channel, one random 3×3 filter", (r(1, 1, 6, 6), r(1, 1, 3, 3), r(1))),
        ("2 images of 3 channels, 4 filters", (r(2, 3, 7, 7), r(4, 3, 3, 3), r(4))),
        ("a non-square image and a non-square 2×3 kernel", (r(2, 2, 5, 8), r(3, 2, 2, 3), r(3))),
        ("1×1 filters", (r(3, 4, 4, 5), r(2, 4, 1, 1), r(2))),
        ("a kernel as large as the image", (r(2, 2, 4, 4), r(5, 2, 4, 4), r(5))),
    ]
    return [(f"{text}: x {tuple(x.shape)}, weight {tuple(w.shape)}", (x, w, b)) for text, (x, w, b) in cases]


conv2d_forward = define(CheckSpec(
    "conv2d_forward", _conv2d, _conv_cases, rtol=1e-9, atol=1e-9,
    forbidden=(*(f"torch.nn.functional.conv{kind}{n}d" for kind in ("", "_transpose") for n in "123"),
               "companion.conv.conv2d", "scipy.signal._sigtools._convolve2d",
               *aten("convolution", "_convolution", "_convolution_mode", "conv2d", "thnn_conv2d",
                     "_slow_conv2d_forward", "mkldnn_convolution", "slow_conv_dilated2d", "slow_conv_dilated3d",
                     "slow_conv3d", "slow_conv_transpose2d", "slow_conv_transpose3d"),
               *(f"scipy.signal.{f}" for f in ("correlate", "correlate2d", "convolve", "convolve2d", "fftconvolve",
                                               "oaconvolve")),
               "scipy.ndimage.correlate", "scipy.ndimage.convolve", "numpy.correlate", "numpy.convolve"),
    mistakes={
        "the kernel is flipped: that is the convolution of signal processing, y(i, j) = Σ x(i − p, j − q) "
        "w(p, q); deep-learning layers compute the cross-correlation, Σ x(i + p, j + q) w(p, q)":
            lambda x, w, b: _conv2d(x, w.flip(-2, -1), b),
        "the bias is missing": lambda x, w, b: _conv2d(x, w, torch.zeros_like(b)),
        "the bias is added once per input channel instead of once per output":
            lambda x, w, b: _conv2d(x, w, b * x.shape[1]),
    },
    hint="the output has H − kh + 1 rows and W − kw + 1 columns; at each position the window [N, C, kh, kw] "
    "that starts there meets every filter: insert a dimension so that it broadcasts to [N, O, C, kh, kw], "
    "then sum over C, kh and kw, and add one bias per filter. Do not flip the kernel. Loops over the output "
    "positions are fine; unfold cuts out every window at once (im2col).",
), doc="""Check ``student(x, weight, bias)``: a convolution layer's forward pass with stride 1 and no padding,
    as every framework computes it, without PyTorch's, SciPy's, NumPy's or the course's convolutions (they
    raise while it runs). Shapes: ``x [N, C, H, W]``, ``weight [O, C, kh, kw]``, ``bias [O]`` → ``[N, O, H', W']``.""")


def _max_pool2d(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.unfold(2, k, k).unfold(3, k, k).amax(dim=(-2, -1))


def _overlap(case: tuple, expected: Any, got: Any) -> str:
    x, k = case
    if k > 1 and got.shape != expected.shape and got.shape == x.unfold(2, k, 1).unfold(3, k, 1).shape[:4]:
        return "The windows overlap: they move by k, not by 1."
    return ""


max_pool2d = define(CheckSpec(
    "max_pool2d", _max_pool2d, rtol=1e-5, atol=1e-8, diagnose=_overlap,
    forbidden=(*(f"torch.nn.functional.{a}max_pool{n}d{i}" for a in ("", "adaptive_") for n in "123"
                 for i in ("", "_with_indices")), "companion.conv.max_pool2d", "scipy.ndimage.maximum_filter",
               *aten("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
                     "mkldnn_max_pool2d", "adaptive_max_pool2d", "adaptive_max_pool3d")),
    cases=lambda gen: [
        ("a 4×4 image, k = 2", (torch.tensor([[[[1.0, 3.0, 2.0, 0.0], [4.0, 2.0, 1.0, 5.0], [0.0, 1.0, 7.0, 6.0],
                                                 [2.0, 8.0, 3.0, 1.0]]]]), 2)),
        ("all values negative, k = 2", (-torch.rand(1, 2, 4, 6, generator=gen) - 0.1, 2)),
        ("3 images of 4 channels, k = 2", (torch.randn(3, 4, 8, 8, generator=gen), 2)),
        ("k = 1", (torch.randn(2, 3, 5, 5, generator=gen), 1)),
        ("sides that k = 3 does not divide", (torch.randn(2, 2, 7, 8, generator=gen), 3)),
        ("a window as large as the image", (torch.randn(2, 3, 4, 4, generator=gen), 4)),
    ],
    mistakes={
        "an average of each window instead of its maximum":
            lambda x, k: x.unfold(2, k, k).unfold(3, k, k).mean(dim=(-2, -1)),
        "the maximum starts at 0, so negative windows give 0 instead of their largest value":
            lambda x, k: _max_pool2d(x, k).clamp(min=0),
    },
    hint="the output has H // k rows and W // k columns; output (i, j) is the largest entry of the k × k "
    "window that starts at row i·k and column j·k, for every image and channel separately (amax reduces "
    "several dimensions at once). unfold with a step of k cuts out all windows without a loop. Do not start "
    "the maximum at 0: windows may be all negative.",
), doc="""Check ``student(x, k)``: max pooling of ``x [N, C, H, W]`` over non-overlapping ``k × k`` windows, rows and
    columns that do not fill a window dropped, without PyTorch's or the course's pooling (they raise while it runs).""")


