"""companion.check, chapter 7: the self-checks of the output size, a convolution's forward pass and max pooling.

Each check passes right answers, fails realistic wrong ones with a message that says which case and how,
never prints the expected values, and keeps the method for ``check.hint``.
"""

import re

import torch
from torch.nn import functional as F

from companion import check, conv


def floats_in(text: str) -> set[str]:
    return set(re.findall(r"-?\d+\.\d+", text))


def test_output_size_passes_the_formula_and_the_package():
    assert check.conv_output_size(lambda n, k, p, s: (n + 2 * p - k) // s + 1)
    package = check.conv_output_size(conv.output_size)
    assert not package and "do without companion.conv.output_size" in package.message
    captured = check.conv_output_size(lambda n, k, p, s, size=conv.output_size: size(n, k, p, s))
    assert not captured and "do without companion.conv.output_size" in captured.message
    assert check.conv_output_size(lambda n, k, p, s: torch.tensor((n + 2 * p - k) // s + 1))


def test_output_size_names_the_common_mistakes():
    wrong = {
        "the +1 is missing": lambda n, k, p, s: (n + 2 * p - k) // s,
        "the padding counts once": lambda n, k, p, s: (n + p - k) // s + 1,
        "the division rounds up": lambda n, k, p, s: -(-(n + 2 * p - k) // s) + 1,
        "the value is right but it is a float": lambda n, k, p, s: float((n + 2 * p - k) // s + 1),
        "but it is a float": lambda n, k, p, s: (n + 2 * p - k) / s + 1,
    }
    for words, answer in wrong.items():
        result = check.conv_output_size(answer)
        assert not result and words in result.message, result.message
    off = check.conv_output_size(lambda n, k, p, s: (n + 2 * p - k) // s + 3)
    assert not off and off.message == "case 1 (n = 28, k = 3, p = 0, s = 1): it is too high, by 1–10 %."
    assert "26" not in off.message and "2 too large" not in off.message
    crash = check.conv_output_size(lambda n, k, p, s: n.shape)
    assert not crash and "raised AttributeError" in crash.message
    assert check.conv_output_size(...).message == check.PLACEHOLDER_MESSAGE
    assert not check.conv_output_size(lambda n, k, p, s: None)
    assert "integer division" in check.hint("conv_output_size").text


def loops(x, weight, bias):
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out = torch.zeros(n, o, h - kh + 1, w - kw + 1, dtype=x.dtype)
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            window = x[:, None, :, i : i + kh, j : j + kw]  # [N, 1, C, kh, kw]
            out[:, :, i, j] = (window * weight).sum(dim=(2, 3, 4)) + bias
    return out


def test_conv2d_forward_passes_loops_im2col_and_the_package():
    assert check.conv2d_forward(loops)
    assert check.conv2d_forward(im2col)
    result = check.conv2d_forward(lambda x, w, b: conv.conv2d(x, w, b))
    assert not result and "companion.conv.conv2d" in result.message  # the package's own is off limits too
    private = check.conv2d_forward(check.conv._conv2d)
    assert not private and "do without the check's own reference" in private.message


def im2col(x, weight, bias):
    windows = x.unfold(2, weight.shape[2], 1).unfold(3, weight.shape[3], 1)  # [N, C, OH, OW, kh, kw]
    return torch.einsum("ncijpq,ocpq->noij", windows, weight) + bias[:, None, None]


def test_conv2d_forward_refuses_the_library():
    result = check.conv2d_forward(lambda x, w, b: F.conv2d(x, w, b))
    assert not result and "do without torch.nn.functional.conv2d" in result.message
    layer = check.conv2d_forward(
        lambda x, w, b: torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], dtype=x.dtype)(x)
    )
    assert not layer and "do without" in layer.message
    for shortcut in (
        lambda x, w, b, conv2d=F.conv2d: conv2d(x, w, b),  # captured before the check ran
        lambda x, w, b: torch.convolution(x, w, b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
    ):
        result = check.conv2d_forward(shortcut)
        assert not result and "do without torch." in result.message
    assert F.conv2d(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 1, 1)).sum() == 4  # restored afterwards


def test_conv2d_forward_names_the_common_mistakes():
    flipped = check.conv2d_forward(lambda x, w, b: loops(x, w.flip(-2, -1), b))
    assert not flipped and "the kernel is flipped" in flipped.message and flipped.message.startswith("case 1")
    no_bias = check.conv2d_forward(lambda x, w, b: loops(x, w, torch.zeros_like(b)))
    assert not no_bias and "the bias is missing" in no_bias.message and "case 2" in no_bias.message
    per_channel = check.conv2d_forward(lambda x, w, b: loops(x, w, b * x.shape[1]))
    assert not per_channel and "once per input channel" in per_channel.message
    short = check.conv2d_forward(lambda x, w, b: loops(x, w, b)[..., :-1, :-1])
    assert not short and "expected shape (1, 1, 3, 3), got shape (1, 1, 2, 2)" in short.message
    unsummed = check.conv2d_forward(lambda x, w, b: loops(x[:, :1], w[:, :1], b))
    assert not unsummed and "case 3" in unsummed.message and "entries differ; at index" in unsummed.message
    for result in (no_bias, per_channel, unsummed):
        assert not floats_in(result.message), result.message
    assert check.conv2d_forward(...).message == check.PLACEHOLDER_MESSAGE
    assert "Do not flip the kernel" in check.hint("conv2d_forward").text


def pool_loops(x, k):
    n, c, h, w = x.shape
    out = torch.empty(n, c, h // k, w // k, dtype=x.dtype)
    for i in range(h // k):
        for j in range(w // k):
            out[:, :, i, j] = x[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k].amax(dim=(-2, -1))
    return out


def test_max_pool2d_passes_loops_and_unfold_and_refuses_the_library():
    assert check.max_pool2d(pool_loops)
    assert check.max_pool2d(lambda x, k: x.unfold(2, k, k).unfold(3, k, k).amax(dim=(-2, -1)))
    library = check.max_pool2d(lambda x, k: F.max_pool2d(x, k))
    assert not library and "do without torch.nn.functional.max_pool2d" in library.message
    module = check.max_pool2d(lambda x, k: torch.nn.MaxPool2d(k)(x))
    assert not module and "do without" in module.message
    assert not check.max_pool2d(lambda x, k: conv.max_pool2d(x, k))
    assert F.max_pool2d(torch.ones(1, 1, 2, 2), 2).item() == 1  # restored afterwards


def test_max_pool2d_names_the_common_mistakes():
    average = check.max_pool2d(lambda x, k: x.unfold(2, k, k).unfold(3, k, k).mean(dim=(-2, -1)))
    assert not average and "an average of each window" in average.message and average.message.startswith("case 1")

    def zero_start(x, k):
        return pool_loops(x, k).clamp(min=0)

    zero = check.max_pool2d(zero_start)
    assert not zero and "the maximum starts at 0" in zero.message and "case 2" in zero.message
    overlapping = check.max_pool2d(lambda x, k: x.unfold(2, k, 1).unfold(3, k, 1).amax(dim=(-2, -1)))
    assert not overlapping and "The windows overlap" in overlapping.message
    channels_mixed = check.max_pool2d(lambda x, k: pool_loops(x.amax(dim=1, keepdim=True).expand_as(x), k))
    assert not channels_mixed and "case 2" in channels_mixed.message and "entries differ" in channels_mixed.message
    for result in (average, zero, channels_mixed):
        assert not floats_in(result.message), result.message
    assert check.max_pool2d(...).message == check.PLACEHOLDER_MESSAGE
    assert "amax" in check.hint("max_pool2d").text


def test_the_library_itself_as_the_answer_is_refused():
    assert "do without torch.nn.functional.conv2d" in check.conv2d_forward(F.conv2d).message
    assert "do without torch.nn.functional.max_pool2d" in check.max_pool2d(F.max_pool2d).message
    assert "do without companion.conv.output_size" in check.conv_output_size(conv.output_size).message


def test_a_float32_result_against_float64_inputs_is_told_its_dtype():
    result = check.conv2d_forward(lambda x, w, b: loops(x.float(), w.float(), b.float()))
    assert not result and "float32" in result.message and "float64" in result.message
