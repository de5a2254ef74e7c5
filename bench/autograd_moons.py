"""Chapter 3's pure-Python training, timed: epochs of ``companion.autograd``'s MLP on the two moons.

The network is the chapter's ``MLP(2, [16, 16, 1])`` of Values on 200 points (its
full profile), trained as the chapter trains it: every point's score, the
logistic loss, ``backward()`` and a gradient step. Each epoch builds one node
per multiplication and addition, about 130,000 Values, and sorts them for the
backward pass. Three ways, taking turns over ``--repeats`` rounds so that a busy
machine slows all alike:

1. as the engine was: every node made by ``Value()`` itself, which checks every
   argument, and a topological sort that keeps ``id()`` of each node and
   extends its stack from a generator (:func:`previous_topological_order`);
2. the engine as shipped: the operations' nodes made without the checks by
   ``autograd._node`` (their arguments are floats and Values by construction),
   and a sort that keeps the nodes themselves (a Value hashes by identity);
3. as the chapter runs it: the engine as shipped inside
   ``autograd.cycle_collector_paused()``. Python's cycle collector walks every
   object in memory every so often while a graph is built; the process here
   holds torch and matplotlib, as the chapter's does, so it has as much to walk.

It prints the median seconds per epoch of each and their ratios; all three must
end with the same weights, to the last bit.

    python bench/autograd_moons.py [--points 200] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from unittest import mock

import matplotlib.pyplot  # noqa: F401  (the chapter's heap: torch and matplotlib loaded)
import torch  # noqa: F401

from companion import autograd
from companion.autograd import MLP, Value


def two_moons(n: int, seed: int = 0) -> tuple[list[list[float]], list[int]]:
    """``n`` points of two interleaving half circles with a little noise, and labels ±1."""
    rng = random.Random(seed)
    points, labels = [], []
    for i in range(n):
        angle, upper = rng.uniform(0, math.pi), i % 2 == 0
        x = math.cos(angle) if upper else 1 - math.cos(angle)
        y = math.sin(angle) if upper else 0.5 - math.sin(angle)
        points.append([x + rng.gauss(0, 0.1), y + rng.gauss(0, 0.1)])
        labels.append(1 if upper else -1)
    return points, labels


def train(points: list[list[float]], labels: list[int], epochs: int) -> tuple[float, list[float]]:
    """Seconds per epoch of the chapter's training loop, and the final weights."""
    model = MLP(2, [16, 16, 1], rng=random.Random(0))
    start = time.perf_counter()
    for _ in range(epochs):
        scores = [model(point)[0] for point in points]
        loss = sum((1 + (-label * score).exp()).log() for score, label in zip(scores, labels)) / len(points)
        model.zero_grad()
        loss.backward()
        for param in model.parameters():
            param.data -= 1.0 * param.grad
    return (time.perf_counter() - start) / epochs, [p.data for p in model.parameters()]


def previous_topological_order(self: Value) -> list[Value]:
    """The engine's topological sort before it kept the nodes themselves: the reference of this benchmark."""
    order: list[Value] = []
    seen: set[int] = set()
    stack: list[tuple[Value, bool]] = [(self, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in reversed(node.parents) if id(p) not in seen)
    return order


@contextmanager
def previous_engine() -> Iterator[None]:
    """Every node made by ``Value()`` with its checks, and the previous sort, as the engine was."""

    def node(data: float, parents: tuple[Value, ...], local_grads: tuple[float, ...], op: str) -> Value:
        return Value(data, parents, local_grads, op)

    with mock.patch.object(autograd, "_node", node), \
            mock.patch.object(Value, "topological_order", previous_topological_order):
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200, help="training points (the chapter's full profile: 200)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timing")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the two ways, taken in turn")
    args = parser.parse_args(argv)
    points, labels = two_moons(args.points)
    ways = {"as the engine was": previous_engine, "as shipped": nullcontext,
            "collector paused": autograd.cycle_collector_paused}
    times: dict[str, list[float]] = {way: [] for way in ways}
    weights = {}
    for _ in range(args.repeats):
        for way, context in ways.items():
            with context():
                seconds, weights[way] = train(points, labels, args.epochs)
            times[way].append(seconds)
    assert len({tuple(w) for w in weights.values()}) == 1, "the three ways must train the same weights"
    medians = {way: statistics.median(values) for way, values in times.items()}
    print(f"MLP(2, [16, 16, 1]) of Values, {args.points} points, median of {args.repeats} rounds:")
    for way, median in medians.items():
        print(f"  {way:<20} {median:6.2f} s per epoch")
    before, shipped, paused = medians.values()
    print(f"as shipped / as the engine was: {before / shipped:.2f}x the epochs per second")
    print(f"collector paused / as shipped: {shipped / paused:.2f}x the epochs per second")
    print("(ratios measured in one run; on a shared machine the seconds are not a benchmark)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
