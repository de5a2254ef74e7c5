"""Time one ``step()`` of ``companion.optim.Adam`` against ``torch.optim.Adam``.

The model is a stack of linear layers (by default ten 1000 x 1000 layers with
biases: 10.01 M float32 parameters in 20 tensors) whose gradients are filled
once with random numbers; only ``step()`` is timed. Four optimizers (torch's
default, its ``foreach`` and ``fused`` implementations, the course's), each on
its own copy of the model, take turns over several repeats so that a busy
machine slows all of them alike; the median time per step of each is printed
with its ratio to torch's default (on the CPU that is its one-tensor-at-a-time
loop; on CUDA it is ``foreach``).

    python bench/optim_step.py [--layers 10] [--width 1000] [--steps 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from companion import config, optim

MakeOptimizer = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

CONTENDERS: dict[str, MakeOptimizer] = {
    "torch.optim.Adam (default)": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "torch.optim.Adam (foreach=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
    "torch.optim.Adam (fused=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
    "companion.optim.Adam": lambda ps: optim.Adam(ps, lr=1e-3),
}


def model_parameters(layers: int, width: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """Weights ``[width, width]`` and biases ``[width]`` of ``layers`` linear layers, with random float32 grads."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers))).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return list(model.parameters())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(opt: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=10, help="linear layers in the model")
    parser.add_argument("--width", type=int, default=1000, help="inputs = outputs of each layer")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per optimizer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    args = parser.parse_args()

    device = config.device()
    optimizers = {
        name: make(model_parameters(args.layers, args.width, device)) for name, make in CONTENDERS.items()
    }
    n_params = sum(p.numel() for p in optimizers["companion.optim.Adam"].param_groups[0]["params"])
    print(f"torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}, "
          f"CPU cores {os.cpu_count()}")
    print(f"model: {args.layers} x Linear({args.width}, {args.width}) = {n_params / 1e6:.2f} M float32 parameters "
          f"in {2 * args.layers} tensors; {args.warmup} warm-up steps, median of {args.repeats} x {args.steps} steps")

    for opt in optimizers.values():
        for _ in range(args.warmup):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(args.repeats):
        for name, opt in optimizers.items():
            times[name].append(seconds_per_step(opt, args.steps, device))

    baseline = statistics.median(times["torch.optim.Adam (default)"])
    print(f"{'optimizer':<34}{'ms / step':>10}{'ratio':>8}")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:<34}{1e3 * median:>10.2f}{median / baseline:>8.2f}")


if __name__ == "__main__":
    main()
