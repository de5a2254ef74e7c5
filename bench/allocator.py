"""A chapter with glibc's allocator keeping freed memory, against the allocator's defaults.

By default glibc's ``malloc`` hands a freed block of a few MiB back to the
system; a training loop that allocates the same activations at every step then
gets them back page by page, a page fault per 4 KiB, every step.
``bench/run_notebooks.py`` (and so ``make book``) starts its kernels with
``KEEP_FREED_MEMORY``, which keeps such blocks in the process. This script runs
one chapter both ways, in fresh kernels with one thread, taking turns over
``--repeats`` rounds, and prints the median seconds of each and their ratio
(above 1: keeping freed memory is faster). On a machine whose C library is not
glibc the two ways are the same.

    COMPANION_DATA=/path/to/data python bench/allocator.py [--chapter 07-cnn] [--profile quick]
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_notebooks  # noqa: E402  (bench/run_notebooks.py)


def main(argv: list[str] | None = None) -> int:
    args, chapter = run_notebooks.chapter_benchmark(__doc__.splitlines()[0], "07-cnn", argv)
    for name in run_notebooks.KEEP_FREED_MEMORY:  # the defaults must be the C library's own
        os.environ.pop(name, None)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for keep in times:
            settings = run_notebooks.Settings(args.profile, timeout=1800, threads=1, keep_freed_memory=keep)
            times[keep].append(run_notebooks.wall_seconds([chapter], settings, 1))
    default, kept = (statistics.median(times[keep]) for keep in (False, True))
    print(f"{args.chapter} ({args.profile}), median of {args.repeats} runs with one thread:")
    print(f"  the allocator's defaults   {default:7.1f} s")
    print(f"  keeping freed memory       {kept:7.1f} s   ratio {default / kept:.2f}")
    print("(ratio measured in one run; on a shared machine the seconds are not a benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
