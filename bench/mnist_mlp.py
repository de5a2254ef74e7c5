"""One training epoch of the 784-512-512-10 MLP on MNIST, two ways, in one process.

1. the plain PyTorch loop of the introductory articles: a ``Dataset`` that turns
   one 28×28 ``uint8`` image at a time into a float tensor, batched by a
   ``DataLoader``;
2. :func:`companion.train.fit` with the whole training set on the device as one
   float tensor, batched by index (:func:`companion.data.batches`).

It prints samples per second of each and their ratio, the arithmetic of one
epoch (the matrix products of forward and backward passes, in FLOPs), the
FLOP/s each way achieves, and what fraction that is of ``torch.matmul`` doing
the very same products back to back on this machine.

    COMPANION_DATA=/path/to/data python bench/mnist_mlp.py [--batch-size 128] [--samples 60000]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from companion import config, data, train
from companion.models import MLP
from timing import seconds

SIZES = (784, 512, 512, 10)


class PerSampleMNIST(Dataset):
    """Images as the articles feed them: one sample at a time, converted to float ``[1, 28, 28]`` in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div(255).unsqueeze(0), int(self.labels[i])


def dataloader_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device) -> None:
    """The articles' loop: per-sample tensors collated by the ``DataLoader``, moved to the device per batch."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        loss.item()  # read the loss each step, as a progress display does


def gemm_flops_per_sample(sizes: tuple[int, ...] = SIZES) -> int:
    """FLOPs of the matrix products of one training step, per sample (2 per multiply-add).

    Forward ``X W`` and weight gradient ``Xᵀ G`` for every layer, input gradient
    ``G Wᵀ`` for every layer but the first (the images need no gradient):
    ``2 Σ_l n_{l-1} n_l · 2 + 2 Σ_{l≥2} n_{l-1} n_l``. Biases, ReLU and softmax are left out.
    """
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 4 * sum(products) + 2 * sum(products[1:])


def matmul_epoch_seconds(n: int, batch_size: int, device: torch.device, sizes: tuple[int, ...] = SIZES) -> float:
    """Seconds ``torch.matmul`` needs for the products of one epoch's steps (the same shapes), best of 3."""
    gen = torch.Generator().manual_seed(0)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        x, w, g = (torch.randn(shape, generator=gen).to(device) for shape in ((batch_size, a), (a, b), (batch_size, b)))
        layers.append((x, w, g))

    def one_epoch() -> None:
        for _ in range(n // batch_size):
            for i, (x, w, g) in enumerate(layers):
                torch.matmul(x, w)
                torch.matmul(x.T, g)
                if i > 0:
                    torch.matmul(g, w.T)

    one_epoch()  # warm-up
    full_batches = min(seconds(one_epoch, device) for _ in range(3))
    return full_batches * n / (n // batch_size * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=60_000, help="training images per epoch (at most 60,000)")
    parser.add_argument("--device", default=None, help="default: companion.config.device()")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else config.device()

    images, labels = data.mnist("train")
    images, labels = images[: args.samples], labels[: args.samples]
    n = len(images)
    config.seed_everything(0)
    template = MLP(list(SIZES)).to(device)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(template)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    loader = DataLoader(PerSampleMNIST(images, labels), batch_size=args.batch_size, shuffle=True)
    X, y = (images.float() / 255).to(device), labels.to(device)

    def with_dataloader() -> None:
        dataloader_epoch(*fresh(), loader, device)

    def with_fit() -> None:
        model, optimizer = fresh()
        train.fit(model, optimizer, nn.CrossEntropyLoss(), (X, y), epochs=1, batch_size=args.batch_size,
                  device=device, progress=False, generator=0)  # fmt: skip

    warm = min(n, 20 * args.batch_size)
    dataloader_epoch(*fresh(), DataLoader(PerSampleMNIST(images[:warm], labels[:warm]), batch_size=args.batch_size), device)
    t_loader, t_fit = seconds(with_dataloader, device), seconds(with_fit, device)
    t_matmul = matmul_epoch_seconds(n, args.batch_size, device)
    flops = gemm_flops_per_sample() * n

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"one epoch: {n:,} images, batch size {args.batch_size}, MLP {'-'.join(map(str, SIZES))}")
    print(f"{'':28}{'seconds':>10}{'samples/s':>12}{'GFLOP/s':>10}{'of matmul':>11}")
    for name, t in (("DataLoader, per sample", t_loader), ("fit, on-device batches", t_fit), ("torch.matmul only", t_matmul)):
        print(f"{name:28}{t:10.3f}{n / t:12,.0f}{flops / t / 1e9:10.2f}{t_matmul / t:11.1%}")
    print(f"speed-up of fit over the DataLoader loop: {t_loader / t_fit:.1f}x "
          f"(at most {t_loader / t_matmul:.1f}x here, were fit to take no longer than its matrix products)")  # fmt: skip
    print(f"arithmetic of one epoch (matrix products only): {flops / 1e9:.1f} GFLOP "
          f"= {gemm_flops_per_sample():,} FLOP per image")  # fmt: skip


if __name__ == "__main__":
    main()
