"""Mixed precision and compilation on the chapters' CNN, four ways, in one process.

1. eager PyTorch in fp32 (the baseline);
2. eager under ``torch.autocast`` (bf16 on the CPU, fp16 on CUDA);
3. ``torch.compile`` in fp32;
4. ``torch.compile`` under ``torch.autocast``.

Each way trains the same CNN from the same initial weights on the same MNIST
batches for one pass over ``--samples`` images (Adam), then measures inference
on the test set. It prints the seconds of the first compiled call apart (the
compilation), training and inference samples per second, their ratio to the
baseline, and the test accuracy each way reaches.

    COMPANION_DATA=/path/to/data python bench/precision.py [--samples 20000] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from torch.nn import functional as F

from companion import config, data, metrics
from companion.models import CNN
from timing import seconds


def run(
    template: nn.Module,
    compiled: bool,
    low: torch.dtype | None,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Train a copy of ``template`` one epoch and evaluate it; seconds and accuracy."""
    model = copy.deepcopy(template)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = torch.compile(model) if compiled else model
    X, y = train
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0)).to(device)

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=low or torch.float32, enabled=low is not None)

    def step(index: torch.Tensor) -> None:
        with autocast():
            loss = F.cross_entropy(net(X[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    batches = order.split(batch_size)
    if len(batches[-1]) < batch_size:  # keep shapes fixed: no recompilation
        batches = batches[:-1]
    first = seconds(lambda: step(batches[0]), device)  # includes compilation when compiled
    train_s = seconds(lambda: [step(b) for b in batches[1:]], device)

    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast():
            return torch.cat([net(part).float() for part in images.split(1000)])

    model.eval()
    predict(test[0][:1000])  # warm-up (compiles the inference graph)
    infer_s = seconds(lambda: predict(test[0]), device)
    accuracy = metrics.accuracy(predict(test[0]), test[1])
    return {
        "first step s": first,
        "train/s": (len(batches) - 1) * batch_size / train_s,
        "infer/s": len(test[0]) / infer_s,
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000, help="training images (at most 60,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default=None, help="default: companion.config.device()")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else config.device()
    low = torch.bfloat16 if device.type == "cpu" else torch.float16

    images, labels = data.mnist("train")
    test_images, test_labels = data.mnist("test")
    train = ((images[: args.samples].float() / 255).to(device), labels[: args.samples].to(device))
    test = ((test_images.float() / 255).to(device), test_labels.to(device))
    config.seed_everything(0)
    template = CNN().to(device)

    ways = {
        "eager fp32": (False, None),
        f"eager autocast {str(low).removeprefix('torch.')}": (False, low),
        "compiled fp32": (True, None),
        f"compiled autocast {str(low).removeprefix('torch.')}": (True, low),
    }
    results = {name: run(template, compiled, dtype, train, test, args.batch_size, device)
               for name, (compiled, dtype) in ways.items()}  # fmt: skip
    base = results["eager fp32"]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"CNN() on {len(train[0]):,} MNIST images, batch size {args.batch_size}, one epoch of Adam; "
          f"inference on {len(test[0]):,} test images")  # fmt: skip
    print(f"{'':26}{'1st step s':>11}{'train/s':>10}{'ratio':>7}{'infer/s':>10}{'ratio':>7}{'accuracy':>10}")
    for name, r in results.items():
        print(f"{name:26}{r['first step s']:11.2f}{r['train/s']:10,.0f}{r['train/s'] / base['train/s']:7.2f}"
              f"{r['infer/s']:10,.0f}{r['infer/s'] / base['infer/s']:7.2f}{r['accuracy']:10.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
