"""From-scratch attention against PyTorch's fused kernel, in one process, as the sequence grows.

For each length L it times, forward and backward, on the same random inputs
``[batch, heads, L, head_dim]``:

1. :func:`companion.attention.scaled_dot_product_attention` (causal): the
   ``softmax(Q Kᵀ / √d_k) V`` of chapter 9, which builds the whole ``L × L``
   matrix of scores and weights;
2. ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)``,
   which PyTorch computes with a fused kernel (flash attention where it can).

It prints milliseconds per call of each, their ratio (how many times slower the
from-scratch version is), and the memory of one ``L × L`` weight matrix per
head and batch, which grows with ``L²``.

    python bench/attention.py [--lengths 64 128 256 512 1024] [--batch 8] [--heads 4] [--head-dim 32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from companion import attention, config
from timing import synchronize


def milliseconds(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best of three wall-clock means of ``work()`` over ``repeats`` calls, in milliseconds, after a warm-up."""
    work()
    best = float("inf")
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="default: companion.config.device()")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else config.device()
    gen = torch.Generator().manual_seed(0)

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"causal self-attention, batch {args.batch}, {args.heads} heads of {args.head_dim}, float32, "
          "forward + backward")  # fmt: skip
    print(f"{'length':>7}{'scratch ms':>12}{'torch ms':>10}{'ratio':>8}{'weights MB':>12}")
    for length in args.lengths:
        shape = (args.batch, args.heads, length, args.head_dim)
        q, k, v = (torch.randn(shape, generator=gen).to(device).requires_grad_() for _ in range(3))
        grad = torch.randn(shape, generator=gen).to(device)

        def scratch() -> None:
            attention.scaled_dot_product_attention(q, k, v, causal=True).backward(grad)

        def fused() -> None:
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

        t_scratch = milliseconds(scratch, device, args.repeats)
        t_fused = milliseconds(fused, device, args.repeats)
        weights_mb = args.batch * args.heads * length * length * 4 / 2**20
        print(f"{length:7d}{t_scratch:12.2f}{t_fused:10.2f}{t_scratch / t_fused:8.2f}{weights_mb:12.1f}")
    print("ratio = from-scratch time / F.scaled_dot_product_attention time (above 1: ours is slower)")


if __name__ == "__main__":
    main()
