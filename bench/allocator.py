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

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_notebooks  # noqa: E402  (bench/run_notebooks.py)


def seconds(chapter: Path, profile: str, keep_freed_memory: bool) -> float:
    """Wall seconds of one run of ``chapter`` in a fresh kernel with one thread."""
    settings = run_notebooks.Settings(profile, timeout=1800, threads=1, keep_freed_memory=keep_freed_memory)
    start = time.perf_counter()
    _, failed = asyncio.run(run_notebooks.run_all([chapter], settings, 1, cache=None))
    if failed:
        raise RuntimeError(f"{chapter.stem} failed; run it alone with bench/run_notebooks.py to see why")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", default="07-cnn", help="a chapter of book/ (default 07-cnn)")
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the two ways, taken in turn")
    args = parser.parse_args(argv)
    sources = {source.stem: source for source in run_notebooks.twins.chapters()}
    if args.chapter not in sources:
        parser.error(f"no chapter {args.chapter}; the chapters are {', '.join(sources)}")
    if run_notebooks.SHARED_DATA.is_dir():
        os.environ.setdefault("COMPANION_DATA", str(run_notebooks.SHARED_DATA))
    for name in run_notebooks.KEEP_FREED_MEMORY:  # the defaults must be the C library's own
        os.environ.pop(name, None)
    chapter = sources[args.chapter]
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for keep in times:
            times[keep].append(seconds(chapter, args.profile, keep))
    default, kept = (statistics.median(times[keep]) for keep in (False, True))
    print(f"{args.chapter} ({args.profile}), median of {args.repeats} runs with one thread:")
    print(f"  the allocator's defaults   {default:7.1f} s")
    print(f"  keeping freed memory       {kept:7.1f} s   ratio {default / kept:.2f}")
    print("(ratio measured in one run; on a shared machine the seconds are not a benchmark)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
