"""Mixed precision for the course's long training runs: a training step's time in fp32 and in bf16, in one run.

The book trains three models long enough for precision to matter: chapter 9's
``TinyGPT`` and ``CharLSTM`` and the full profile's base models of
:mod:`companion.base_models`. For each shape this script times one AdamW step
(forward, loss, backward, update) on the same random batch three ways:

1. ``fp32``: everything in fp32 (the baseline);
2. ``bf16 everywhere``: under ``torch.autocast`` with PyTorch's own choice of
   kernels, attention included;
3. ``bf16 (companion)``: what :func:`companion.config.mixed_precision` gives the
   chapters — the same, except that on a CPU the fused attention runs in fp32
   (``companion.attention._fused_attention``).

The ways take turns, ``--steps`` steps at a time, ``--rounds`` times, so that a
busy machine slows all of them alike; it prints each way's median milliseconds per
step and its ratio to fp32. bf16 pays only where the hardware multiplies bf16
(:func:`companion.config.native_bf16`: AMX on a CPU, Ampere or later on a GPU);
elsewhere it is emulated and slower.

    python bench/gpt_precision.py [--steps 5] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from companion import attention, config, models
from timing import seconds

Shape = tuple[str, Callable[[], nn.Module], int, int, int]  # name, model, vocab, batch, context


def shapes() -> list[Shape]:
    """Chapter 9's two models and the full profile's base models (vocabularies of 1,024 and 2,048 tokens)."""
    def gpt(vocab: int, context: int, layers: int) -> Callable[[], nn.Module]:
        return lambda: models.TinyGPT(models.GPTConfig(vocab, context, 128, 4, layers, attention="torch"))

    return [
        ("chapter 9 TinyGPT", gpt(65, 64, 3), 65, 64, 64),
        ("chapter 9 CharLSTM", lambda: models.CharLSTM(65, embed_dim=64, hidden=256, layers=2), 65, 64, 64),
        ("base model, Shakespeare", gpt(1024, 128, 4), 1024, 32, 128),
        ("base model, Tang poems", gpt(2048, 128, 4), 2048, 32, 128),
    ]


def attention_in_bf16(q, k, v, mask, causal):
    """``_fused_attention`` without its CPU exception: PyTorch's kernel in the autocast dtype."""
    mask = mask if mask is None or mask.dtype == torch.bool else mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def stepper(make: Callable[[], nn.Module], vocab: int, batch: int, context: int, precision: str,
            device: torch.device) -> Callable[[], None]:
    """One AdamW step of a fresh model (seed 0) on one fixed random batch, in ``precision``."""
    torch.manual_seed(0)
    model = make().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x, y = torch.randint(0, vocab, (2, batch, context), generator=torch.Generator().manual_seed(0)).to(device)

    def step() -> None:
        with config.mixed_precision(device, precision):
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="steps per turn")
    parser.add_argument("--rounds", type=int, default=5, help="turns of each way")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the book runs one per notebook)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = config.device()
    print(f"device {device}, native bf16: {config.native_bf16(device)}, {args.threads} thread(s)")
    fused = attention._fused_attention
    ways = {"fp32": ("fp32", fused), "bf16 everywhere": ("bf16", attention_in_bf16),
            "bf16 (companion)": ("bf16", fused)}  # fmt: skip
    for name, make, vocab, batch, context in shapes():
        steps = {way: stepper(make, vocab, batch, context, precision, device) for way, (precision, _) in ways.items()}
        times: dict[str, list[float]] = {way: [] for way in ways}
        for round_ in range(args.rounds + 1):  # the first round warms up and is not counted
            for way, (_, kernel) in ways.items():
                attention._fused_attention = kernel
                try:
                    spent = seconds(lambda: [steps[way]() for _ in range(args.steps)], device)
                finally:
                    attention._fused_attention = fused
                if round_:
                    times[way].append(1000 * spent / args.steps)
        base = statistics.median(times["fp32"])
        print(f"\n{name} (batch {batch} × {context} tokens)")
        for way, measured in times.items():
            ms = statistics.median(measured)
            print(f"  {way:<18} {ms:7.1f} ms/step   {base / ms:5.2f}× the speed of fp32")


if __name__ == "__main__":
    main()
