"""Self-checks of chapter 7, convolutional networks: the output-size formula, a convolution layer's
forward pass and max pooling, each written by the student without the library's own.

A failure names the case and says how the answer differs (a type, a shape, how far off, which entry)
and names a common mistake when the answer matches it (a flipped kernel, a missing bias, an average
instead of a maximum); it never prints the expected values. The method is in each check's hint,
shown by ``check.hint(name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from companion.check.core import CheckResult, _run, not_a_function, register_hint

__all__ = ["conv2d_forward", "conv_output_size", "max_pool2d", "reference_conv2d", "reference_max_pool2d"]

_CONV_FORBIDDEN = (
    "torch.nn.functional.conv2d",
    "torch.conv2d",
    "torch.nn.functional.conv_transpose2d",
    "companion.conv.conv2d",
)
_POOL_FORBIDDEN = (
    "torch.nn.functional.max_pool2d",
    "torch.nn.functional.max_pool2d_with_indices",
    "torch.nn.functional.adaptive_max_pool2d",
    "torch.max_pool2d",
    "companion.conv.max_pool2d",
)


def _output_size(n: int, k: int, p: int, s: int) -> int:
    return (n + 2 * p - k) // s + 1


_SIZE_MISTAKES: dict[str, Callable[[int, int, int, int], float]] = {
    "the +1 is missing: a kernel that fits exactly once still gives one output":
        lambda n, k, p, s: (n + 2 * p - k) // s,
    "the padding counts once; it is added on both sides": lambda n, k, p, s: (n + p - k) // s + 1,
    "the division rounds up; a window that does not fit entirely is dropped": lambda n, k, p, s: -(-(n + 2 * p - k) // s) + 1,
    "the stride divides the whole size, +1 included": lambda n, k, p, s: (n + 2 * p - k + 1) // s,
}  # fmt: skip


def conv_output_size(student: Callable[[int, int, int, int], int]) -> CheckResult:
    """Check ``student(n, k, p, s)``: the side of a convolution's or pooling's output, ``⌊(n + 2p − k)/s⌋ + 1``.

    Cases: MNIST-sized layers with and without padding, a 2×2 pooling, strides that do not divide
    evenly, a kernel as large as the padded input, a 1×1 kernel, and a large image. The answer must be
    an int; a failure says by how much it is off and names the common mistakes.
    """
    name = "conv_output_size"
    refused = not_a_function(name, student)
    if refused is not None:
        return refused
    cases = [
        (28, 3, 0, 1), (28, 3, 1, 1), (28, 2, 0, 2), (7, 3, 1, 2), (32, 5, 2, 3),
        (5, 5, 0, 1), (3, 5, 1, 1), (10, 1, 0, 1), (10, 3, 0, 4), (224, 7, 3, 2), (13, 2, 0, 2),
    ]  # fmt: skip
    answers = []
    for number, (n, k, p, s) in enumerate(cases, start=1):
        where = f"case {number} (n = {n}, k = {k}, p = {p}, s = {s})"
        got, error = _run(student, (n, k, p, s))
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return CheckResult(name, False, f"{where}: expected an int, got {type(got).__name__} {got!r}.")
        answers.append(got)
    floats: list[str] = []
    for number, ((n, k, p, s), got) in enumerate(zip(cases, answers), start=1):
        where = f"case {number} (n = {n}, k = {k}, p = {p}, s = {s})"
        want = _output_size(n, k, p, s)
        if isinstance(got, float):
            if got.is_integer() and int(got) == want:
                floats.append(where)
                continue
            return CheckResult(
                name, False, f"{where}: expected an int, got the float {got!r}: a window that does not fit "
                "entirely gives no output."
            )
        if got == want:
            continue
        for what, mistake in _SIZE_MISTAKES.items():
            if all(answer == mistake(*case) for case, answer in zip(cases, answers)):
                return CheckResult(name, False, f"{where}: it looks like this mistake: {what}.")
        off = got - want
        return CheckResult(name, False, f"{where}: the answer is {abs(off)} too {'large' if off > 0 else 'small'}.")
    if floats:
        return CheckResult(
            name, False, f"{floats[0]}: the value is right but it is a float; a size is a whole number of "
            "positions, and tensor shapes need an int."
        )
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the formula.")


def reference_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Cross-correlation with stride 1 and no padding, by im2col: ``[N, C, H, W]``, ``[O, C, kh, kw]``,
    ``[O]`` → ``[N, O, H − kh + 1, W − kw + 1]``;
    ``out[n, o, i, j] = b[o] + Σ_{c,p,q} x[n, c, i + p, j + q] · w[o, c, p, q]``."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    windows = x.unfold(2, kh, 1).unfold(3, kw, 1)  # [N, C, OH, OW, kh, kw]
    oh, ow = windows.shape[2], windows.shape[3]
    columns = windows.permute(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * kh * kw)
    out = columns @ weight.reshape(o, -1).T + bias
    return out.transpose(1, 2).reshape(n, o, oh, ow)


def _conv_cases() -> list[tuple[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(7)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    edge = torch.tensor([[[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]]], dtype=torch.float64)
    step = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    step[..., 2:] = 1.0
    cases = [
        ("one 5×5 image, one 3×3 edge filter, no bias", (step, edge, torch.zeros(1, dtype=torch.float64))),
        ("one image, one channel, one random 3×3 filter", (randn(1, 1, 6, 6), randn(1, 1, 3, 3), randn(1))),
        ("2 images of 3 channels, 4 filters", (randn(2, 3, 7, 7), randn(4, 3, 3, 3), randn(4))),
        ("a non-square image and a non-square 2×3 kernel", (randn(2, 2, 5, 8), randn(3, 2, 2, 3), randn(3))),
        ("1×1 filters", (randn(3, 4, 4, 5), randn(2, 4, 1, 1), randn(2))),
        ("a kernel as large as the image", (randn(2, 2, 4, 4), randn(5, 2, 4, 4), randn(5))),
    ]
    return cases


def conv2d_forward(student: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``student(x, weight, bias)``: a convolution layer's forward pass, stride 1, no padding,
    without ``F.conv2d`` (or ``nn.Conv2d``, ``torch.conv2d``, ``companion.conv.conv2d``), which raise
    while it runs.

    Shapes: ``x [N, C, H, W]``, ``weight [O, C, kh, kw]``, ``bias [O]`` → ``[N, O, H − kh + 1, W − kw + 1]``,
    as :func:`reference_conv2d` (a cross-correlation, as in every framework). Cases: a step edge, one
    channel, several images, channels and filters, non-square images and kernels, 1×1 kernels, and a
    kernel as large as the image, in float64 to 1e-9. A failure gives the first entry that differs and
    names a flipped kernel, a missing bias or channels not summed.
    """
    name = "conv2d_forward"
    refused = not_a_function(name, student)
    if refused is not None:
        return refused
    cases = _conv_cases()
    for number, (description, (x, weight, bias)) in enumerate(cases, start=1):
        where = (
            f"case {number} ({description}: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
            f"bias {tuple(bias.shape)})"
        )
        got, error = _run(student, (x, weight, bias), _CONV_FORBIDDEN)
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if not isinstance(got, torch.Tensor):
            return CheckResult(name, False, f"{where}: expected a tensor, got {type(got).__name__}.")
        want = reference_conv2d(x, weight, bias)
        if got.shape != want.shape:
            return CheckResult(
                name, False, f"{where}: expected shape {tuple(want.shape)} = [N, O, H − kh + 1, W − kw + 1], "
                f"got {tuple(got.shape)}."
            )
        got = got.detach().double()
        if torch.allclose(got, want, rtol=1e-9, atol=1e-9):
            continue
        mistakes = {
            "the kernel is flipped: that is the convolution of signal processing, y(i, j) = Σ x(i − p, j − q) "
            "w(p, q); deep-learning layers compute the cross-correlation, Σ x(i + p, j + q) w(p, q)":
                reference_conv2d(x, weight.flip(-2, -1), bias),
            "the bias is missing": reference_conv2d(x, weight, torch.zeros_like(bias)),
            "the bias is added once per input channel instead of once per output":
                reference_conv2d(x, weight, bias * x.shape[1]),
        }  # fmt: skip
        for what, variant in mistakes.items():
            if torch.allclose(got, variant, rtol=1e-9, atol=1e-9):
                return CheckResult(name, False, f"{where}: it looks like this mistake: {what}.")
        wrong = ~torch.isclose(got, want, rtol=1e-9, atol=1e-9)
        first = tuple(int(i) for i in wrong.nonzero()[0])
        return CheckResult(
            name, False, f"{where}: {int(wrong.sum())} of {want.numel()} entries differ; the first is at "
            f"[n, o, i, j] = {list(first)}."
        )
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


def reference_max_pool2d(x: torch.Tensor, k: int) -> torch.Tensor:
    """Max pooling over non-overlapping ``k × k`` windows (stride ``k``), rows and columns that do not
    fill a window dropped: ``[N, C, H, W]`` → ``[N, C, ⌊H/k⌋, ⌊W/k⌋]``."""
    return x.unfold(2, k, k).unfold(3, k, k).amax(dim=(-2, -1))


def max_pool2d(student: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Check ``student(x, k)``: max pooling over non-overlapping ``k × k`` windows, without
    ``F.max_pool2d`` (or ``nn.MaxPool2d``, ``companion.conv.max_pool2d``), which raise while it runs.

    Shapes: ``[N, C, H, W]`` → ``[N, C, ⌊H/k⌋, ⌊W/k⌋]`` (:func:`reference_max_pool2d`). Cases: a 4×4
    example, all-negative values, several images and channels, ``k = 1``, sides that ``k`` does not
    divide, and a window as large as the image. A failure names an average instead of a maximum, a
    zero start for the maximum, or windows that overlap.
    """
    name = "max_pool2d"
    refused = not_a_function(name, student)
    if refused is not None:
        return refused
    gen = torch.Generator().manual_seed(11)
    small = torch.tensor([[[[1.0, 3.0, 2.0, 0.0], [4.0, 2.0, 1.0, 5.0], [0.0, 1.0, 7.0, 6.0], [2.0, 8.0, 3.0, 1.0]]]])
    cases = [
        ("a 4×4 image, k = 2", small, 2),
        ("all values negative, k = 2", -torch.rand(1, 2, 4, 6, generator=gen) - 0.1, 2),
        ("3 images of 4 channels, k = 2", torch.randn(3, 4, 8, 8, generator=gen), 2),
        ("k = 1", torch.randn(2, 3, 5, 5, generator=gen), 1),
        ("sides that k = 3 does not divide", torch.randn(2, 2, 7, 8, generator=gen), 3),
        ("a window as large as the image", torch.randn(2, 3, 4, 4, generator=gen), 4),
    ]
    for number, (description, x, k) in enumerate(cases, start=1):
        where = f"case {number} ({description}: x {tuple(x.shape)})"
        got, error = _run(student, (x, k), _POOL_FORBIDDEN)
        if error is not None:
            return CheckResult(name, False, f"{where} {error}")
        if not isinstance(got, torch.Tensor):
            return CheckResult(name, False, f"{where}: expected a tensor, got {type(got).__name__}.")
        want = reference_max_pool2d(x, k)
        if got.shape != want.shape:
            overlap = x.unfold(2, k, 1).unfold(3, k, 1).amax(dim=(-2, -1))
            why = (
                " The windows overlap: they move by k, not by 1." if got.shape == overlap.shape and k > 1 else ""
            )
            return CheckResult(
                name, False, f"{where}: expected shape {tuple(want.shape)} = [N, C, ⌊H/k⌋, ⌊W/k⌋], got "
                f"{tuple(got.shape)}.{why}"
            )
        got = got.detach().to(want.dtype)
        if torch.allclose(got, want):
            continue
        mistakes = {
            "an average of each window instead of its maximum": x.unfold(2, k, k).unfold(3, k, k).mean(dim=(-2, -1)),
            "the maximum starts at 0, so negative windows give 0 instead of their largest value": want.clamp(min=0),
        }
        for what, variant in mistakes.items():
            if torch.allclose(got, variant):
                return CheckResult(name, False, f"{where}: it looks like this mistake: {what}.")
        wrong = ~torch.isclose(got, want)
        first = tuple(int(i) for i in wrong.nonzero()[0])
        return CheckResult(
            name, False, f"{where}: {int(wrong.sum())} of {want.numel()} entries differ; the first is at "
            f"[n, c, i, j] = {list(first)}."
        )
    return CheckResult(name, True, f"{len(cases)} of {len(cases)} cases match the reference.")


register_hint(
    "conv_output_size",
    "pad the n positions with p on both ends (n + 2p), see how far the kernel's first position can "
    "move (n + 2p − k), count the steps of size s that fit — whole steps only, integer division — and add "
    "one for the starting position.",
)
register_hint(
    "conv2d_forward",
    "the output has H − kh + 1 rows and W − kw + 1 columns; for each position (i, j) take the window "
    "x[:, :, i:i+kh, j:j+kw] of shape [N, C, kh, kw], multiply it with every filter (broadcast to "
    "[N, O, C, kh, kw]) and sum over C, kh and kw; add the bias per filter. Do not flip the kernel. "
    "Without loops: x.unfold(2, kh, 1).unfold(3, kw, 1) cuts out every window at once (im2col).",
)
register_hint(
    "max_pool2d",
    "the output has H // k rows and W // k columns; output (i, j) is the largest entry of the window "
    "x[:, :, i*k:(i+1)*k, j*k:(j+1)*k], for every image and channel separately (amax over the last two "
    "dimensions). Or cut all windows at once with x.unfold(2, k, k).unfold(3, k, k).",
)
