"""Generation with the KV cache against recomputing every step, as the number of new tokens grows, in one run.

A ``TinyGPT`` (random weights: the speed does not depend on them) continues a
one-token prompt by ``n`` greedy tokens twice: with ``use_cache=True`` (one
prefill, then one token per step, its keys and values appended to a
``KVCache`` per block) and with ``use_cache=False`` (the whole sequence read
again at every step). Both must give the same tokens (checked). Without the cache
step ``t`` costs work in proportion to ``t``, so ``n`` tokens cost ``∝ n²``; with
it ``∝ n`` (plus attention over the cached keys). The two take turns over
``--repeats`` runs; the median milliseconds of each, their ratio (the cache's
speed-up) and the cache's memory by formula are printed for each ``n``.

    python bench/kv_cache.py [--lengths 32 64 128 256] [--layers 4] [--dim 128] [--heads 4] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from companion import config, models
from companion.models.gpt import kv_cache_bytes
from timing import synchronize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256], help="new tokens n")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = config.device()
    torch.manual_seed(0)
    cfg = models.GPTConfig(vocab_size=65, context=max(args.lengths) + 1, dim=args.dim, heads=args.heads,
                           layers=args.layers, attention="torch")  # fmt: skip
    model = models.TinyGPT(cfg).to(device).eval()
    prompt = torch.zeros(args.batch, 1, dtype=torch.int64, device=device)
    print(f"torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"TinyGPT {args.layers} blocks, d={args.dim}, {args.heads} heads; batch {args.batch}; "
          f"median of {args.repeats} runs each")
    print(f"{'new tokens':>10}{'cached ms':>11}{'recomputed ms':>15}{'speed-up':>10}{'cache KiB':>11}")
    for n in args.lengths:
        times: dict[bool, list[float]] = {True: [], False: []}
        outputs = {}
        for _ in range(args.repeats):
            for use_cache in (True, False):
                synchronize(device)
                start = time.perf_counter()
                outputs[use_cache] = model.generate(prompt, n, temperature=0, use_cache=use_cache)
                synchronize(device)
                times[use_cache].append(time.perf_counter() - start)
        assert torch.equal(outputs[True], outputs[False]), "the cache changed the greedy tokens"
        cached, recomputed = statistics.median(times[True]), statistics.median(times[False])
        memory = kv_cache_bytes(cfg, args.batch, n + 1) / 1024
        print(f"{n:>10}{1e3 * cached:>11.1f}{1e3 * recomputed:>15.1f}{recomputed / cached:>9.1f}x{memory:>11.0f}")


if __name__ == "__main__":
    main()
