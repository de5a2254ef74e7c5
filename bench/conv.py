"""The from-scratch ``companion.conv.conv2d`` (im2col) against ``torch.nn.functional.conv2d``, in one process.

For each convolution of chapter 7's networks, at the chapter's batch size, it
times a forward and a backward pass (gradients of the input, the weights and
the bias) both ways, takes the best of several repeats, and prints the
seconds of each, the ratio im2col / F.conv2d and the GFLOP/s each achieves
(2 FLOPs per multiply-add; forward, input gradient and weight gradient each
cost one convolution's worth).

    python bench/conv.py [--batch-size 128] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from companion import config
from companion.conv import conv2d, output_size
from timing import synchronize

# (name, input channels, side of the input, output channels, kernel, padding)
LAYERS = [
    ("conv1 28×28, 1 → 32, 'valid'", 1, 28, 32, 3, 0),
    ("conv2 13×13, 32 → 64, 'valid'", 32, 13, 64, 3, 0),
    ("conv3 5×5, 64 → 64, 'valid'", 64, 5, 64, 3, 0),
    ("conv1 28×28, 1 → 32, 'same'", 1, 28, 32, 3, 1),
    ("conv2 14×14, 32 → 64, 'same'", 32, 14, 64, 3, 1),
]

Conv = Callable[..., torch.Tensor]


def best_seconds(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The least wall-clock time of ``repeats`` runs of ``work()``, after one warm-up run."""
    work()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def forward_backward(fn: Conv, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, padding: int) -> Callable[[], None]:
    def step() -> None:
        for t in (x, w, b):
            t.grad = None
        fn(x, w, b, padding=padding).sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="default: companion.config.device()")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else config.device()
    gen = torch.Generator().manual_seed(0)

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch_size}")
    print("forward + backward (input, weight and bias gradients), best of", args.repeats)
    print(f"{'layer':32}{'im2col s':>10}{'F.conv2d s':>12}{'ratio':>8}{'GFLOP/s':>9}{'(torch)':>9}")
    ratios = []
    for name, c_in, side, c_out, k, p in LAYERS:
        x = torch.randn(args.batch_size, c_in, side, side, generator=gen).to(device).requires_grad_()
        w = (torch.randn(c_out, c_in, k, k, generator=gen) * 0.1).to(device).requires_grad_()
        b = torch.zeros(c_out, device=device, requires_grad=True)
        with torch.no_grad():
            assert torch.allclose(conv2d(x, w, b, padding=p), F.conv2d(x, w, b, padding=p), atol=1e-4)
        ours = best_seconds(forward_backward(conv2d, x, w, b, p), device, args.repeats)
        theirs = best_seconds(forward_backward(F.conv2d, x, w, b, p), device, args.repeats)
        out = output_size(side, k, p)
        flops = 3 * 2 * args.batch_size * c_out * out * out * c_in * k * k
        ratios.append(ours / theirs)
        print(f"{name:32}{ours:10.4f}{theirs:12.4f}{ours / theirs:7.2f}x{flops / ours / 1e9:9.2f}{flops / theirs / 1e9:9.2f}")
    geometric = torch.tensor(ratios).log().mean().exp().item()
    print(f"im2col takes {geometric:.2f}x the time of F.conv2d (geometric mean over the layers above)")


if __name__ == "__main__":
    main()
