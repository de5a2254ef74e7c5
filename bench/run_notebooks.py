"""Execute every chapter in one profile and record its time, its cells' times and its headline results.

    python bench/run_notebooks.py --profile quick            # all chapters, one after another
    python bench/run_notebooks.py --profile full --jobs 2    # two kernels at a time, a thread each
    python bench/run_notebooks.py --profile full 07-cnn      # one chapter
    python bench/run_notebooks.py --profile full --executed out/   # also keep the executed notebooks
    python bench/run_notebooks.py --profile full --base-models --cache _build/.jupyter_cache   # the book build

Each chapter's ``.ipynb`` twin runs top to bottom in a fresh kernel of this
Python (nbclient), in the ``book/`` folder as nbval runs it, with
``COMPANION_PROFILE`` set, training progress as text and glibc's allocator
keeping freed memory (``KEEP_FREED_MEMORY``). The headline results
are what the chapter passes to :func:`companion.config.record`; they reach this
script through the file named by ``COMPANION_RECORDS``. Each code cell's wall
time is kept too (``cells``: its number among the code cells, seconds, first
line). A chapter whose cells fail, or that runs past ``--timeout``, gets no
line; the others still run, and the script exits with 1.

``--jobs N`` runs N notebooks at a time, longest first (by the times of the
results file, where it has them), each kernel with ``--threads`` threads
(default: the CPU cores shared equally among the N kernels).
``--base-models`` (``make book``) also trains and caches the base models that
chapters 11 and 12 read (``python -m companion.base_models``, one process per
model), as the first jobs of the same queue: those two chapters wait for them
while the other chapters fill the free slots.

The chapters are the ``book/NN-name.md`` that ``_toc.yml`` lists.
``--cache FOLDER`` stores each executed notebook in a jupyter-cache, where
``jupyter-book build`` with ``execute_notebooks: cache`` takes the outputs
instead of executing again (``make book``; ``tools/book_config.py`` writes that
configuration). The kernels then run as the book's build runs them (figures
inline, no ``MPLBACKEND``), and every MyST notebook that ``_toc.yml`` lists
runs, the chapters and pages such as the homework page.

The lines go to ``bench/results/<profile>-<device>.jsonl`` (``--output``
overrides), each as its chapter finishes, replacing earlier lines of the same
chapters. A run of every notebook that all ran to the end also writes the
whole run's wall clock, the notebooks it ran and the seconds each base model it
built took, beside them (``<profile>-<device>.run.json``). Then the book's
reproducibility page is written anew from every results file (not when
``--output`` names another file).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import nbformat
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import reproducibility  # noqa: E402  (tools/reproducibility.py)
import twins  # noqa: E402  (tools/twins.py)

from companion import base_models, config  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"  # the course's data folder beside the repository, where it exists
LINE_CHARS = 60  # a cell's first line, as the results keep it



def kernel_manager() -> Any:
    """A jupyter_client kernel manager that starts ipykernel with this Python, whatever kernelspecs the user has."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> Any:
            return self.kernel_spec_class(resource_dir=RESOURCES, **get_kernel_dict())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())

def cpu_name() -> str:
    """The processor's model name where Linux tells it (/proc/cpuinfo), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """What ran the chapters: device, its name, the long runs' precision, torch and Python versions, CPU cores."""
    device = config.device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "precision": config.precision(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
    }


def read_records(path: Path) -> dict[str, object]:
    """The results a run recorded, ``{name: value}`` (a name recorded twice keeps its last value)."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return {entry["name"]: entry["value"] for entry in map(json.loads, lines)}


def first_line(source: str) -> str:
    """A cell's first line that is not blank, cut to :data:`LINE_CHARS` characters."""
    line = next((text.strip() for text in source.splitlines() if text.strip()), "")
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"


@dataclass
class CellClock:
    """Wall seconds of each code cell a notebook client runs, taken by the client's hooks."""

    started: dict[int, float] = field(default_factory=dict)
    cells: list[dict[str, object]] = field(default_factory=list)

    def start(self, cell: nbformat.NotebookNode, cell_index: int) -> None:
        self.started[cell_index] = time.perf_counter()

    def stop(self, cell: nbformat.NotebookNode, cell_index: int, execute_reply: object = None) -> None:
        seconds = time.perf_counter() - self.started.pop(cell_index)
        self.cells.append({"cell": cell_index, "seconds": round(seconds, 2), "line": first_line(cell.source)})

    def numbered(self, notebook: nbformat.NotebookNode) -> list[dict[str, object]]:
        """The cells' times, each numbered by its place among the notebook's code cells (from 1)."""
        code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
        number = {index: place for place, index in enumerate(code, start=1)}
        return [entry | {"cell": number[int(entry["cell"])]} for entry in self.cells]


KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}
"""glibc's malloc settings for the kernels and the base models' processes (where the environment names none):
a freed block up to 1 GiB stays in the process for the next allocation. By default glibc hands blocks of
a few MiB back to the system, and a training loop that allocates the same activations at every step then
pays a page fault for each 4 KiB of them, every step: ``bench/allocator.py`` measures what that costs a
chapter. Other C libraries ignore these variables."""


@dataclass(frozen=True)
class Settings:
    """How each notebook runs: profile, time limit, kernel threads, where executed notebooks go."""

    profile: str
    timeout: float  # seconds for all the cells of one notebook
    threads: int | None = None  # the kernel's OMP_NUM_THREADS; None leaves the environment's
    executed: Path | None = None
    for_book: bool = False  # figures inline, as the book's build runs the kernels
    keep_freed_memory: bool = True  # KEEP_FREED_MEMORY in the kernels' environment

    def process_environment(self) -> dict[str, str]:
        """The environment of every process a run starts: this one's, with the profile (and KEEP_FREED_MEMORY)."""
        return {**(KEEP_FREED_MEMORY if self.keep_freed_memory else {}), **os.environ, "COMPANION_PROFILE": self.profile}

    def environment(self, records: Path) -> dict[str, str]:
        env = {
            **self.process_environment(),
            "COMPANION_PROGRESS": "text",
            "COMPANION_RECORDS": str(records),
            "MPLBACKEND": "Agg",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        if self.for_book:
            del env["MPLBACKEND"]  # the kernels' inline backend puts the figures into the outputs
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env


async def run_notebook(twin: Path, settings: Settings) -> tuple[dict[str, object], nbformat.NotebookNode]:
    """Execute ``twin``; return its JSON record (chapter, profile, seconds, cells, results) and the notebook.

    Raises:
        CellExecutionError: a cell failed (its traceback is in the message).
        CellTimeoutError: the cells ran past ``settings.timeout`` seconds in all.
    """
    notebook = nbformat.read(twin, as_version=4)
    clock = CellClock()
    deadline: list[float] = []

    def remaining(cell: nbformat.NotebookNode) -> float:  # the clock starts at the first cell
        deadline[:] = deadline or [time.monotonic() + settings.timeout]
        return max(1.0, deadline[0] - time.monotonic())

    with tempfile.TemporaryDirectory(prefix="companion-run-") as folder:
        records = Path(folder) / "records.jsonl"
        client = NotebookClient(
            notebook, km=kernel_manager(), timeout_func=remaining, record_timing=False,
            on_cell_execute=clock.start, on_cell_executed=clock.stop,
            resources={"metadata": {"path": str(twin.parent)}},
        )  # fmt: skip
        start = time.perf_counter()
        try:
            env = settings.environment(records)
            await client.async_execute(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # kernel logs
        finally:
            seconds = time.perf_counter() - start
            if settings.executed is not None:
                settings.executed.mkdir(parents=True, exist_ok=True)
                nbformat.write(notebook, settings.executed / twin.name)
        results = read_records(records)
    line = {
        "chapter": twin.stem, "profile": settings.profile, "seconds": round(seconds, 1),
        "cells": clock.numbered(notebook), "results": results,
    }  # fmt: skip
    return line, notebook


def cache_notebook(cache: Path, source: Path, notebook: nbformat.NotebookNode, seconds: float) -> None:
    """Store the executed ``notebook`` of ``source`` in the jupyter-cache at ``cache``, as the book's build would."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    bundle = CacheBundleIn(notebook, str(source), data={"execution_seconds": seconds})
    get_cache(str(cache)).cache_notebook_bundle(bundle, check_validity=False, overwrite=True)


def summary(line: dict[str, object]) -> str:
    """One line about a chapter that ran: its time, its results, its slowest cell."""
    text = f"{line['chapter']}: {line['seconds']:.1f} s, {len(line['results'])} results"  # type: ignore[arg-type]
    cells = line["cells"]
    if cells:
        slowest = max(cells, key=lambda cell: cell["seconds"])  # type: ignore[union-attr,index]
        text += f"; slowest cell {slowest['cell']} ({slowest['seconds']:.1f} s): {slowest['line']}"
    return text


@dataclass(frozen=True)
class Job:
    """One thing to run in a slot: ``run()`` says whether it ran to the end; it starts once the jobs ``needs`` names have."""

    name: str
    run: Callable[[], Awaitable[bool]]
    needs: frozenset[str] = frozenset()


async def run_jobs(jobs: Sequence[Job], slots: int) -> list[str]:
    """Run ``jobs``, ``slots`` at a time: each free slot takes the first job, in the order given, whose needs
    have finished. A job whose needs failed does not run and fails too. Returns the failed jobs' names."""
    pending, running = list(jobs), {}
    finished: set[str] = set()
    failed: list[str] = []
    while pending or running:
        for job in [job for job in pending if job.needs & set(failed)]:
            pending.remove(job)
            failed.append(job.name)
            print(f"{job.name}: not run: {', '.join(sorted(job.needs & set(failed)))} failed", file=sys.stderr, flush=True)
        while len(running) < slots:
            ready = next((job for job in pending if job.needs <= finished), None)
            if ready is None:
                break
            pending.remove(ready)
            running[asyncio.ensure_future(ready.run())] = ready
        if not running:  # what is left waits for jobs that are not in the list
            failed += [job.name for job in pending]
            break
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            job = running.pop(task)
            if task.result():
                finished.add(job.name)
            else:
                failed.append(job.name)
    return failed


def reads_base_models(source: Path) -> bool:
    """Whether the notebook of ``source`` loads the course's base models (chapters 11 and 12)."""
    return "base_models.base_model(" in source.read_text(encoding="utf-8")


async def build_base_model(
    corpus: str, settings: Settings, built: Callable[[str, float], None] | None = None
) -> bool:
    """Train and cache the base model of ``corpus`` (``python -m companion.base_models``) in a process of its own;
    ``built(corpus, seconds)``, where given, is called when it succeeds."""
    command = [sys.executable, "-m", "companion.base_models", "--profile", settings.profile, "--corpus", corpus]
    if settings.threads is not None:
        command += ["--threads", str(settings.threads)]
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env=settings.process_environment(),
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode:
        elapsed = time.perf_counter() - start
        print(f"base model {corpus}: failed after {elapsed:.0f} s:\n{err.decode()[-2000:]}", file=sys.stderr, flush=True)
        return False
    print(out.decode().strip(), flush=True)
    if built is not None:
        built(corpus, time.perf_counter() - start)
    return True


async def run_all(
    sources: Sequence[Path],
    settings: Settings,
    jobs: int,
    cache: Path | None,
    done: Callable[[dict[str, object]], None] | None = None,
    build_base_models: bool = False,
    built: Callable[[str, float], None] | None = None,
) -> tuple[list[dict[str, object]], list[str]]:
    """Run the twins of ``sources``, ``jobs`` at a time, in the order given; return their lines and the failed names.

    ``done(line)``, where given, is called as each notebook that ran to the end finishes. With
    ``build_base_models``, the base models of the profile are built first, as jobs of the same queue, and the
    notebooks that read them wait for them while the others run; ``built(corpus, seconds)`` is called as each
    is cached.
    """
    lines: list[dict[str, object]] = []

    async def one(source: Path) -> bool:
        start = time.perf_counter()
        try:
            line, notebook = await run_notebook(twins.twin_path(source), settings)
        except Exception as err:  # noqa: BLE001  (any failure of one notebook leaves the others running)
            elapsed = time.perf_counter() - start
            if isinstance(err, CellExecutionError):
                what = f"a cell failed after {elapsed:.0f} s: {err.ename}: {err.evalue}"
            else:
                what = f"stopped after {elapsed:.0f} s: {type(err).__name__}: {err}"
            print(f"{source.stem}: {what}", file=sys.stderr, flush=True)
            return False
        if cache is not None:
            cache_notebook(cache, source, notebook, float(line["seconds"]))  # type: ignore[arg-type]
        lines.append(line)
        if done is not None:
            done(line)
        print(summary(line), flush=True)
        return True

    readers = {source for source in sources if build_base_models and reads_base_models(source)}
    builds = [Job(f"base model {corpus}", functools.partial(build_base_model, corpus, settings, built))
              for corpus in (base_models.CORPORA if readers else ())]  # fmt: skip
    needs = frozenset(job.name for job in builds)
    queue = builds + [
        Job(source.stem, functools.partial(one, source), needs if source in readers else frozenset())
        for source in sources
    ]
    return lines, await run_jobs(queue, jobs)


def longest_first(sources: Sequence[Path], earlier: Sequence[Path]) -> list[Path]:
    """``sources`` ordered by their chapters' times in the first of the results files ``earlier`` that exists,
    longest first (chapters it lacks first of all)."""
    found = [reproducibility.read_run(path) for path in earlier if path.exists()]
    seconds = {line["chapter"]: float(line["seconds"]) for line in (found[0] if found else [])}
    return sorted(sources, key=lambda source: -seconds.get(source.stem, float("inf")))


def merge(path: Path, lines: Sequence[dict[str, object]]) -> None:
    """Write ``lines`` into the JSON-lines file ``path``, in chapter order, replacing earlier lines of their chapters."""
    kept = {entry["chapter"]: entry for entry in reproducibility.read_run(path)}
    kept |= {line["chapter"]: line for line in lines}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(kept[name]) + "\n" for name in sorted(kept)), encoding="utf-8")


def whole_run_path(output: Path) -> Path:
    """Where the record of a whole run that wrote the results file ``output`` goes: ``full-cpu.jsonl`` →
    ``full-cpu.run.json``."""
    return output.with_suffix(".run.json")


def wall_seconds(chapters: Sequence[Path], settings: Settings, jobs: int) -> float:
    """Wall seconds of running ``chapters``, ``jobs`` at a time, recording nothing: the clock of the benchmarks
    that run a chapter several ways. Raises when one fails."""
    start = time.perf_counter()
    _, failed = asyncio.run(run_all(list(chapters), settings, jobs, cache=None))
    if failed:
        names = ", ".join(sorted(set(failed)))
        raise RuntimeError(f"{names} failed; run it alone with bench/run_notebooks.py to see why")
    return time.perf_counter() - start


def chapter_benchmark(description: str, default: str, argv: list[str] | None) -> tuple[argparse.Namespace, Path]:
    """The options of a benchmark that runs one chapter several ways (``--chapter``, ``--profile``, ``--repeats``)
    and that chapter's source; ``COMPANION_DATA`` points at the course's data folder where it exists."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--chapter", default=default, help=f"a chapter of book/ (default {default})")
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the ways, taken in turn")
    args = parser.parse_args(argv)
    sources = {source.stem: source for source in twins.chapters()}
    if args.chapter not in sources:
        parser.error(f"no chapter {args.chapter}; the chapters are {', '.join(sources)}")
    if SHARED_DATA.is_dir():
        os.environ.setdefault("COMPANION_DATA", str(SHARED_DATA))
    return args, sources[args.chapter]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter names such as 04-mnist (default: every chapter)")
    parser.add_argument("--profile", choices=config.PROFILES, required=True)
    parser.add_argument("--output", type=Path, help="the JSON-lines file (default: bench/results/PROFILE-DEVICE.jsonl)")
    parser.add_argument("--executed", type=Path, help="a folder to keep the executed notebooks in")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one notebook's cells in all")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at a time (default 1)")
    parser.add_argument("--threads", type=int, help="each kernel's threads (default: CPU cores / jobs)")
    parser.add_argument("--cache", type=Path, help="a jupyter-cache folder to store the executed notebooks in")
    parser.add_argument("--base-models", action="store_true",
                        help="build the base models that notebooks read as jobs of the same queue, first")
    parser.add_argument("--book", type=Path, default=twins.BOOK, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"--jobs and --threads must be at least 1; got {args.jobs} and {args.threads}")

    notebooks = twins.in_book(twins.notebooks(args.book) if args.cache else twins.chapters(args.book), args.book)
    sources = {source.stem: source for source in notebooks}
    unknown = sorted(set(args.chapters) - set(sources))
    if unknown:
        parser.error(f"no chapter {', '.join(unknown)}; the chapters are {', '.join(sources)}")
    if SHARED_DATA.is_dir():
        os.environ.setdefault("COMPANION_DATA", str(SHARED_DATA))
    about = machine() | {"date": date.today().isoformat()}
    output = args.output or RESULTS / f"{args.profile}-{about['device']}.jsonl"
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    about |= {"jobs": args.jobs, "threads": threads}
    settings = Settings(args.profile, args.timeout, threads, args.executed, for_book=args.cache is not None)
    chosen = [sources[name] for name in args.chapters or sources]
    order = longest_first(chosen, [RESULTS / f"{args.profile}-{about['device']}.jsonl", RESULTS / "full-cpu.jsonl"])
    # Each chapter's line is written as it finishes: a run stopped from outside keeps what it finished.
    def finished(line: dict[str, object]) -> None:
        merge(output, [about | line])

    built: dict[str, float] = {}
    start = time.perf_counter()
    _, failed = asyncio.run(run_all(order, settings, args.jobs, args.cache, finished, args.base_models,
                                    built.__setitem__))
    if not failed and not args.chapters:  # every notebook ran to the end: the run's wall clock is the book's
        whole = about | {"profile": args.profile, "seconds": round(time.perf_counter() - start, 1),
                         "notebooks": len(order), "base_models": {k: round(v, 1) for k, v in sorted(built.items())}}
        whole_run_path(output).write_text(json.dumps(whole) + "\n", encoding="utf-8")
    if args.output is None:
        reproducibility.main([])
    if failed:
        print(f"failed: {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
