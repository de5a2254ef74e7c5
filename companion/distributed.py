"""Data-parallel training with ``torch.distributed``: a script for ``torchrun`` and its one-device twins.

Run as a script, one process per worker::

    torchrun --standalone --nproc_per_node 2 -m companion.distributed --out weights.pt

Every worker builds the same model from the same seed, draws the same global
batch of ``batch_size`` samples at each step, and trains on its own contiguous
``batch_size / world_size`` of them. ``DistributedDataParallel`` averages the
gradients of all workers (an *all-reduce*) during ``backward()``, so every worker
takes the same step — the step one device would take on the whole batch, because
the mean of equal-sized shards' mean losses is the mean loss of the batch:

    ∇ (1/B) Σ_{i<B} ℓ_i = (1/W) Σ_{w<W} ∇ (W/B) Σ_{i ∈ shard w} ℓ_i.

:func:`train_one_device` trains the same model on one device, either on the
whole batch at once or by *gradient accumulation* over micro-batches; :func:`launch`
starts the script under ``torchrun`` in a subprocess (a fresh port, a time
limit, every worker stopped on failure) and returns the trained weights.

:func:`ring_all_reduce` shows how an all-reduce moves the numbers: the ring
algorithm, simulated in one process, with the entries each worker sends.

The data are a fixed synthetic classification task (:func:`make_data`), so the
script needs no files. On CPUs the workers talk through the ``gloo`` backend;
on NVIDIA GPUs one would use ``nccl`` and one process per GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["build_model", "launch", "make_data", "global_batch", "main", "ring_all_reduce", "ring_chunk",
           "train_one_device", "train_worker"]

FEATURES, CLASSES, SAMPLES = 20, 4, 2048


def make_data(seed: int = 0, n: int = SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed classification task: ``X`` float32 ``[n, 20]`` from N(0, 1), labels int64 ``[n]`` in 0…3.

    The label of a row is the arg-max of a fixed random linear map of it, so the
    task is learnable; the same ``seed`` gives the same data in every process.
    """
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, FEATURES, generator=gen)
    teacher = torch.randn(FEATURES, CLASSES, generator=gen)
    return X, (X @ teacher).argmax(dim=1)


def build_model(seed: int = 0) -> nn.Module:
    """The demo's network, 20-64-4 with a ReLU, initialised from ``seed`` (the same in every process)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def global_batch(step: int, batch_size: int, n: int, seed: int = 0) -> torch.Tensor:
    """Row indices ``int64 [batch_size]`` of the global batch of ``step``: the same in every process."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (batch_size,), generator=gen)


def ring_chunk(worker: int, step: int, workers: int) -> int:
    """The chunk that ``worker`` sends to its neighbour ``(worker + 1) % workers`` at ``step`` of a ring
    all-reduce: ``(worker − step) mod workers``, in both phases. A worker sends on the chunk it has just
    received (and, in the reduce-scatter, added its own part to)."""
    return (worker - step) % workers


def ring_all_reduce(
    tensors: Sequence[torch.Tensor], schedule: Callable[[int, int, int], int] = ring_chunk
) -> tuple[list[torch.Tensor], list[int]]:
    """The all-reduce (sum) of one tensor per worker, as the ring algorithm computes it, in one process.

    The ``W`` workers stand in a ring; each sends only to the next, ``(w + 1) mod W``. Every tensor is cut
    into ``W`` chunks (flattened, sizes differing by at most one). At each of ``2(W − 1)`` steps every
    worker ``w`` sends chunk ``schedule(w, step, W)`` at once. In the *reduce-scatter* (steps ``0 … W − 2``)
    the receiver adds it to its own copy of that chunk; then each worker holds one chunk summed over all
    workers. In the *all-gather* (steps ``W − 1 … 2W − 3``) the receiver replaces its copy with it. Each
    worker sends ``2(W − 1)`` chunks: ``2(W − 1)/W`` of its tensor, whatever ``W``.

    Args:
        tensors: one tensor per worker, all of one shape and dtype.
        schedule: ``schedule(worker, step, workers)`` → the chunk ``worker`` sends at ``step``, an int in
            ``0 … W − 1``; by default :func:`ring_chunk`.

    Returns:
        ``(reduced, sent)``: every worker's result and the number of entries each worker sent. With a
        schedule that makes every chunk meet every worker once, as the default does, the result is the sum
        (up to the order of additions) and the same bits on every worker. ``DistributedDataParallel``
        gets the mean gradient by dividing each worker's gradient by ``W`` before it all-reduces them.
    """
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence) or not tensors:
        raise TypeError(f"tensors must be a non-empty list of tensors, one per worker; got {type(tensors).__name__}")
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("tensors must be a list of tensors, one per worker")
    first = tensors[0]
    if any(t.shape != first.shape or t.dtype != first.dtype for t in tensors):
        raise ValueError(f"every worker's tensor must have the shape {tuple(first.shape)} and dtype {first.dtype}")
    workers = len(tensors)
    chunks = [list(t.detach().reshape(-1).tensor_split(workers)) for t in tensors]
    sent = [0] * workers
    for step in range(2 * (workers - 1)):
        order = [_scheduled(schedule, worker, step, workers) for worker in range(workers)]
        outgoing = [chunks[worker][c].clone() for worker, c in enumerate(order)]  # all send at once
        for worker, (c, chunk) in enumerate(zip(order, outgoing)):
            to = (worker + 1) % workers
            chunks[to][c] = chunks[to][c] + chunk if step < workers - 1 else chunk
            sent[worker] += chunk.numel()
    return [torch.cat(c).reshape(first.shape) for c in chunks], sent


def _scheduled(schedule: Callable[[int, int, int], int], worker: int, step: int, workers: int) -> int:
    chunk = schedule(worker, step, workers)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)):
        raise TypeError(f"the schedule must give an int chunk; for worker {worker} at step {step} it gave "
                        f"{type(chunk).__name__} {chunk!r}")  # fmt: skip
    if not 0 <= chunk < workers:
        raise ValueError(f"worker {worker} sends chunk {chunk} at step {step}; with {workers} workers the "
                         f"chunks are 0 to {workers - 1}")  # fmt: skip
    return int(chunk)


def _check_sizes(steps: int, batch_size: int, parts: int, what: str) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size), (what, parts)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if batch_size % parts:
        raise ValueError(f"batch_size={batch_size} must be divisible by {what}={parts} (equal shards)")


def _optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def train_one_device(
    steps: int = 20, batch_size: int = 64, lr: float = 0.1, seed: int = 0, accumulation: int = 1
) -> dict[str, torch.Tensor]:
    """Train the demo model on one device; return its final ``state_dict``.

    With ``accumulation = k`` each step runs ``k`` micro-batches of
    ``batch_size / k`` samples, calling ``backward()`` on each micro-batch's loss
    divided by ``k`` (the gradients add up in ``.grad``), and then one optimizer
    step: the same step as one pass over the whole batch, with ``1/k`` of the
    activation memory.
    """
    _check_sizes(steps, batch_size, accumulation, "accumulation")
    X, y = make_data(seed)
    model = build_model(seed)
    optimizer = _optimizer(model, lr)
    micro = batch_size // accumulation
    for step in range(steps):
        index = global_batch(step, batch_size, len(X), seed)
        optimizer.zero_grad()
        for part in index.split(micro):
            loss = F.cross_entropy(model(X[part]), y[part]) / accumulation
            loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_worker(steps: int = 20, batch_size: int = 64, lr: float = 0.1, seed: int = 0) -> dict[str, torch.Tensor]:
    """One worker of data-parallel training; call it in every process of a ``torchrun`` launch.

    Joins the process group (``gloo``; ``torchrun`` sets ``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR`` and ``MASTER_PORT``), trains on its shard of every global
    batch with the gradients averaged by ``DistributedDataParallel``, and returns
    the final ``state_dict`` (the same in every worker).
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        _check_sizes(steps, batch_size, world, "world_size")
        X, y = make_data(seed)
        model = DDP(build_model(seed))  # broadcasts rank 0's weights to all
        optimizer = _optimizer(model, lr)
        shard = batch_size // world
        for step in range(steps):
            index = global_batch(step, batch_size, len(X), seed)
            mine = index[rank * shard : (rank + 1) * shard]
            loss = F.cross_entropy(model(X[mine]), y[mine])
            optimizer.zero_grad()
            loss.backward()  # all-reduce: every worker now holds the mean gradient
            optimizer.step()
        return {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    finally:
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> None:
    """The script: ``torchrun --standalone --nproc_per_node W -m companion.distributed --out FILE [...]``.

    Rank 0 saves the final ``state_dict`` to ``--out`` and prints one line.
    """
    parser = argparse.ArgumentParser(description="Data-parallel training of a small network with torch.distributed.")
    parser.add_argument("--out", required=True, help="file for the final state_dict (written by rank 0)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, split across workers")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("run me under torchrun, e.g. torchrun --standalone --nproc_per_node 2 -m companion.distributed")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    state = train_worker(args.steps, args.batch_size, args.lr, args.seed)
    if rank == 0:
        torch.save(state, args.out)
        print(f"rank 0 of {world}: {args.steps} steps, global batch {args.batch_size} "
              f"({args.batch_size // world} per worker), weights saved")  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    """Stop ``process`` and every process it started (its own session), politely then firmly."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def launch(
    nproc: int = 2,
    steps: int = 20,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    timeout: float = 120.0,
    module: str = "companion.distributed",
) -> tuple[dict[str, torch.Tensor], str]:
    """Run the script under ``torchrun`` with ``nproc`` CPU workers; return ``(state_dict, output)``.

    The command is ``python -m torch.distributed.run --standalone --nproc_per_node
    nproc -m companion.distributed ...`` (``--standalone`` picks a free port). The
    launch runs in its own process session: when it fails or outlives ``timeout``
    seconds, every process of it is stopped before the error is raised.
    ``module`` names the script to run (``python -m`` style); it takes the
    arguments of :func:`main`.

    Raises:
        RuntimeError: the launch failed (its output is in the message).
        TimeoutError: it ran longer than ``timeout`` seconds.
    """
    _check_sizes(steps, batch_size, nproc, "nproc")
    folder = Path(tempfile.mkdtemp(prefix="companion-ddp-"))
    out = folder / "weights.pt"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", module, "--out", str(out),
        "--steps", str(steps), "--batch-size", str(batch_size), "--lr", str(lr), "--seed", str(seed),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        _stop(process)
        shutil.rmtree(folder, ignore_errors=True)
        raise TimeoutError(f"torchrun with {nproc} workers ran longer than {timeout} s and was stopped") from err
    except BaseException:
        _stop(process)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _stop(process)  # any worker left behind
    try:
        if process.returncode != 0 or not out.is_file():
            raise RuntimeError(f"torchrun exited with code {process.returncode}; its output:\n{output}")
        state = torch.load(out, weights_only=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return state, output


if __name__ == "__main__":
    main()
