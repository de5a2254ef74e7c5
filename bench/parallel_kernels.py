"""One kernel per core with one thread each, against one kernel at a time with every core, on a chapter.

The same work both ways: the chapter run once per CPU core (two runs on two
cores), top to bottom in fresh kernels, as ``bench/run_notebooks.py`` runs it.

1. one after another, each kernel with one thread per core (how ``make book``
   ran before it ran notebooks side by side);
2. one after another, each kernel with one thread (what threads alone bring);
3. all at once, one kernel per core, each with one thread (``make book`` now).

The ways take turns over ``--repeats`` rounds, so that a machine busy with
other work slows all alike; the script prints the median seconds of each and
their ratios to the first (above 1: faster than one kernel with every core). Read the ratio, not the seconds:
on a shared machine the seconds say more about the others' work than about the
chapters'.

    COMPANION_DATA=/path/to/data python bench/parallel_kernels.py [--chapter 04-mnist] [--profile quick]
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_notebooks  # noqa: E402  (bench/run_notebooks.py)


def main(argv: list[str] | None = None) -> int:
    args, chapter = run_notebooks.chapter_benchmark(__doc__.splitlines()[0], "04-mnist", argv)
    cores = os.cpu_count() or 1
    ways = {
        f"one kernel at a time, {cores} threads": (1, cores),
        "one kernel at a time, 1 thread": (1, 1),
        f"{cores} kernels at once, 1 thread each": (cores, 1),
    }
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(args.repeats):
        for way, (jobs, threads) in ways.items():
            settings = run_notebooks.Settings(args.profile, timeout=1800, threads=threads)
            times[way].append(run_notebooks.wall_seconds([chapter] * cores, settings, jobs))
    print(f"{args.chapter} ({args.profile} profile) run {cores} times on {cores} CPU cores, "
          f"median of {args.repeats} rounds taken in turn:")
    medians = {way: statistics.median(values) for way, values in times.items()}
    baseline = next(iter(medians.values()))
    for way, median in medians.items():
        print(f"  {way:<40} {median:7.1f} s   {baseline / median:5.2f}x the throughput")
    print("(ratios measured in one run; on a shared machine the seconds are not a benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
