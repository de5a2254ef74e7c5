"""A training step of the course's CNN with contiguous (NCHW) against channels-last (NHWC) weights, in one process.

``models.CNN`` stores its convolution weights channels-last: the same function
(``tests/test_models_cnn.py`` checks outputs and gradients in float64), computed
by PyTorch's channels-last convolution kernels, which on a CPU are the faster
ones at the chapters' shapes. This times one Adam step (forward, loss,
backward, update) of chapter 7's network, ``CNN(padding="valid", dropout=0.5)``,
on a batch of MNIST-sized images, both ways, taking turns over ``--rounds``
rounds so that a busy machine slows both alike, and prints the median
milliseconds per step of each and their ratio.

    python bench/cnn_memory_format.py [--batch-size 128] [--steps 15] [--rounds 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

from companion import config, models
from timing import seconds


def training_step(channels_last: bool, batch_size: int, device: torch.device) -> Callable[[], None]:
    """One Adam step of chapter 7's CNN on a fixed random batch, its weights in the chosen layout."""
    torch.manual_seed(0)
    model = models.CNN(padding="valid", dropout=0.5).to(device)
    if not channels_last:
        for conv in model.features[::3]:
            conv.weight.data = conv.weight.data.clone(memory_format=torch.contiguous_format)
    images = torch.randn(batch_size, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the book runs one per kernel)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = config.device()
    steps = {"contiguous": training_step(False, args.batch_size, device),
             "channels-last": training_step(True, args.batch_size, device)}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            step()  # one untimed step: the kernels' first call
            elapsed = seconds(lambda step=step: [step() for _ in range(args.steps)], device)
            times[name].append(elapsed / args.steps * 1000)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"chapter 7's CNN, batch {args.batch_size}, {device}, {torch.get_num_threads()} thread(s)")
    for name, ms in medians.items():
        print(f"  {name:>13}: {ms:6.1f} ms per training step")
    print(f"  contiguous / channels-last: {medians['contiguous'] / medians['channels-last']:.2f}×")


if __name__ == "__main__":
    main()
