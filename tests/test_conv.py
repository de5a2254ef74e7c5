"""companion.conv against torch.nn.functional: values and gradients on random shapes, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from companion import conv

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
FAST = settings(max_examples=60, deadline=None)


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_()


def grads(out: torch.Tensor, upstream: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """d⟨out, upstream⟩/d inputs: the gradients for an arbitrary upstream gradient."""
    return list(torch.autograd.grad(out, inputs, upstream))


@st.composite
def conv_case(draw: st.DrawFn) -> dict:
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    return dict(
        n=draw(st.integers(1, 3)), c_in=draw(st.integers(1, 3)), c_out=draw(st.integers(1, 4)), h=h, w=w,
        kernel=(kh, kw), padding=padding,
        stride=draw(st.sampled_from([(draw(st.integers(1, 3)), draw(st.integers(1, 3))), draw(st.integers(1, 3))])),
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


@FAST
@given(conv_case())
def test_conv2d_matches_torch_values_and_gradients(case):
    gen = torch.Generator().manual_seed(case["seed"])
    x = randn(gen, case["n"], case["c_in"], case["h"], case["w"])
    weight = randn(gen, case["c_out"], case["c_in"], *case["kernel"])
    bias = randn(gen, case["c_out"]) if case["bias"] else None
    settings_ = dict(stride=case["stride"], padding=case["padding"])
    ours, theirs = conv.conv2d(x, weight, bias, **settings_), F.conv2d(x, weight, bias, **settings_)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, **TOL)
    upstream = torch.randn(theirs.shape, generator=gen, dtype=F64)
    inputs = [t for t in (x, weight, bias) if t is not None]
    for mine, reference in zip(grads(ours, upstream, inputs), grads(theirs, upstream, inputs)):
        torch.testing.assert_close(mine, reference, **TOL)


@st.composite
def pool_case(draw: st.DrawFn) -> dict:
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    return dict(
        shape=(draw(st.integers(1, 3)), draw(st.integers(1, 3)),
               draw(st.integers(max(1, kh - 2 * ph), 9)), draw(st.integers(max(1, kw - 2 * pw), 9))),
        kernel=draw(st.sampled_from([(kh, kw), kh])) if kh == kw else (kh, kw),
        stride=draw(st.sampled_from([None, draw(st.integers(1, 3)), (draw(st.integers(1, 3)), draw(st.integers(1, 3)))])),
        padding=(ph, pw), seed=draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


@FAST
@given(pool_case(), st.sampled_from(["max", "avg"]))
def test_pooling_matches_torch_values_and_gradients(case, kind):
    ours_fn, torch_fn = {"max": (conv.max_pool2d, F.max_pool2d), "avg": (conv.avg_pool2d, F.avg_pool2d)}[kind]
    gen = torch.Generator().manual_seed(case["seed"])
    x = randn(gen, *case["shape"])
    args = (case["kernel"], case["stride"], case["padding"])
    ours, theirs = ours_fn(x, *args), torch_fn(x, *args)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, **TOL)
    upstream = torch.randn(theirs.shape, generator=gen, dtype=F64)
    torch.testing.assert_close(grads(ours, upstream, [x])[0], grads(theirs, upstream, [x])[0], **TOL)


def test_gradcheck_of_conv_and_pooling():
    gen = torch.Generator().manual_seed(0)
    x, weight, bias = randn(gen, 2, 3, 7, 6), randn(gen, 4, 3, 3, 2), randn(gen, 4)
    assert torch.autograd.gradcheck(lambda a, w, b: conv.conv2d(a, w, b, stride=(2, 1), padding=1), (x, weight, bias))
    assert torch.autograd.gradcheck(lambda a: conv.max_pool2d(a, 3, 2, padding=1), (x,))
    assert torch.autograd.gradcheck(lambda a: conv.avg_pool2d(a, (2, 3), 1, padding=1), (x,))


def test_max_pool_gradient_goes_to_the_largest_entry_only():
    x = torch.tensor([[[[1.0, 5.0], [3.0, 2.0]]]], requires_grad=True)
    conv.max_pool2d(x, 2).sum().backward()
    assert x.grad.tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]


def test_float32_and_a_real_layer():
    torch.manual_seed(0)
    layer = nn.Conv2d(1, 8, kernel_size=5, stride=2, padding=2)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(conv.conv2d(x, layer.weight, layer.bias, stride=2, padding=2), layer(x))


def test_conv2d_uses_neither_f_conv2d_nor_f_unfold(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("called a library convolution")

    gen = torch.Generator().manual_seed(1)
    x, weight = randn(gen, 1, 2, 5, 5), randn(gen, 3, 2, 3, 3)
    expected = F.conv2d(x, weight, padding=1)
    for name in ("conv2d", "unfold", "max_pool2d", "avg_pool2d"):
        monkeypatch.setattr(F, name, forbidden)
    monkeypatch.setattr(torch, "conv2d", forbidden)
    torch.testing.assert_close(conv.conv2d(x, weight, padding=1), expected, **TOL)
    conv.max_pool2d(x, 2)
    conv.avg_pool2d(x, 2)


@given(
    st.integers(1, 40), st.integers(1, 7), st.integers(0, 3), st.integers(1, 4),
)
@settings(max_examples=60, deadline=None)
def test_output_size_matches_real_layers(n, k, p, s):
    if k > n + 2 * p:
        with pytest.raises(ValueError, match="does not fit"):
            conv.output_size(n, k, p, s)
        return
    layer = nn.Conv2d(1, 1, kernel_size=k, stride=s, padding=p)
    assert layer(torch.zeros(1, 1, n, n)).shape[-1] == conv.output_size(n, k, p, s)


def test_output_size_of_the_chapter():
    assert conv.output_size(28, 3) == 26 and conv.output_size(28, 3, 1) == 28
    assert conv.output_size(28, 2, 0, 2) == 14 and conv.output_size(7, 3, 1, 2) == 4


X = torch.zeros(2, 3, 8, 8)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: conv.conv2d(X, torch.zeros(4, 2, 3, 3)),
         ValueError, r"3 channels but the weight expects 2.*\(2, 3, 8, 8\).*\(4, 2, 3, 3\)"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 9, 3)),
         ValueError, r"9×3 kernel is larger than the padded input, 8×8.*\(2, 3, 8, 8\).*\(4, 3, 9, 3\)"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 11, 3), padding=1), ValueError, "11×3 kernel is larger than the padded input, 10×10"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 3, 3), stride=0), ValueError, "stride must be a positive int; got 0"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 3, 3), stride=(1, -2)), ValueError, "stride must be a positive int"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 3, 3), padding=-1), ValueError, "padding must be an int >= 0"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 3, 3), stride=(1, 2, 3)), ValueError, "an int or a pair"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 3, 3), torch.zeros(3)),
         ValueError, r"bias must have shape \(4,\).*\(4, 3, 3, 3\); got \(3,\)"),
        (lambda: conv.conv2d(X[0], torch.zeros(4, 3, 3, 3)), ValueError, r"\[N, C, H, W\]; got shape \(3, 8, 8\)"),
        (lambda: conv.conv2d(X, torch.zeros(3, 3, 3)), ValueError, r"\[C_out, C_in, kh, kw\]; got \(3, 3, 3\)"),
        (lambda: conv.conv2d(X.long(), torch.zeros(4, 3, 3, 3)), TypeError, "floating-point"),
        (lambda: conv.conv2d(X, torch.zeros(4, 3, 3, 3, dtype=F64)), TypeError, "same dtype"),
        (lambda: conv.conv2d(X.tolist(), torch.zeros(4, 3, 3, 3)), TypeError, "torch tensor"),
        (lambda: conv.max_pool2d(X, 9), ValueError, r"9×9 kernel is larger than the padded input, 8×8.*\(2, 3, 8, 8\)"),
        (lambda: conv.max_pool2d(X, 2, padding=2), ValueError, "at most half the kernel"),
        (lambda: conv.avg_pool2d(X, 0), ValueError, "kernel_size must be a positive int"),
        (lambda: conv.avg_pool2d(X, 2, stride=0), ValueError, "stride must be a positive int"),
        (lambda: conv.output_size(5, 8, 1, 1), ValueError, r"side 8 does not fit in 5 positions padded by 1"),
        (lambda: conv.output_size(5, 3, 0, 0), ValueError, "s must be a positive int"),
    ],
)  # fmt: skip
def test_bad_input_is_explained(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_numpy_integers_are_integers():
    import numpy as np

    assert conv.output_size(np.int64(28), np.int32(3), p=np.int64(1), s=np.int16(2)) == 14
    assert type(conv.output_size(np.int64(28), 3)) is int
    with pytest.raises(ValueError, match="n must be a positive int"):
        conv.output_size(np.float64(28), 3)
    x = torch.randn(1, 1, 6, 6)
    torch.testing.assert_close(conv.max_pool2d(x, np.int64(2)), F.max_pool2d(x, 2))
