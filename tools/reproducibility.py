"""Write the book's reproducibility page from the committed results of ``bench/run_notebooks.py``.

    python tools/reproducibility.py           # write book/reproducibility.md
    python tools/reproducibility.py --check   # exit 1 when the page is out of step with the results

Every ``bench/results/<profile>-<device>.jsonl`` file is one run of the
chapters: a JSON object per chapter with its wall time, its code cells' times,
the machine and the results the chapter recorded with
``companion.config.record``. The page shows each run as a column (a GPU run,
``full-cuda.jsonl``, as one more): time per chapter, every recorded result,
then each run's slowest cells per chapter. ``<profile>-<device>.run.json``,
where a run executed every notebook, adds that run's wall clock and the
seconds of the base models it trained.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "book" / "reproducibility.md"
PROFILE_ORDER = {"quick": 0, "full": 1}
DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU (CUDA)", "mps": "GPU (Apple MPS)"}
SLOWEST_CELLS = 3  # per chapter, on the page

Run = list[dict[str, object]]

HEAD = """# Reproducibility

Every chapter asserts its own results in its cells, so a chapter that runs to the end has reproduced
them. This page records what those runs gave, chapter by chapter: how long each chapter took and the
headline results it marks with `config.record(name, value)`, for the **quick** profile (small subsets,
what the tests run) and the **full** profile (the published results), on each machine a run was made on.
The numbers come from `bench/run_notebooks.py`, which executes every chapter in a fresh kernel and
writes one JSON line per chapter to `bench/results/`; this page is generated from those committed files
by `tools/reproducibility.py`, and a test fails when the two disagree.

Times are wall-clock seconds of the whole notebook, kernel start included, on the machine named at the
end, with as many notebooks at a time and threads per kernel as it says. Times are recorded only from a
clean run (a fresh environment, every chapter) on a quiet machine, one doing no other work: a CPU shared
with other work runs slower, and a virtual machine's speed moves with its host's load (unchanged
chapters took a tenth longer in one clean run than in another). Read them as a scale, not a benchmark. The row *all chapters*
adds the chapters' times; where a run executed several notebooks at a time, it took less wall-clock time
than that sum. Chapters 11 and 12 read base models that `python -m companion.base_models` trains and
caches (`make book` trains them as the first jobs of its queue, and those two chapters wait for them);
their times here leave that training out, which a chapter run on its own with an empty cache pays. The
table *Whole runs* gives, for a run of every chapter (`make book` also runs the book's other notebook
pages), its wall clock from the first job to the last (the HTML build that `make book` adds after it is
not included) and the seconds of each base model's job: its training, or only a read where the cache
held it already.

Results are rounded here; the JSON files hold them in full. Runs on other hardware, or with other
versions of PyTorch, give slightly different numbers; the thresholds the chapters assert must hold.
"""

HOW = """## How to reproduce

```bash
make test                                        # creates .venv; every chapter in the quick profile
.venv/bin/python bench/run_notebooks.py --profile quick --jobs 2  # two notebooks at a time
.venv/bin/python bench/run_notebooks.py --profile full --jobs 2   # a quarter of an hour on a 2-core CPU
.venv/bin/python bench/run_notebooks.py --profile full 07-cnn     # one chapter
make book                                        # base models, every chapter in the full profile, the HTML
```

Each run replaces its chapters' lines in `bench/results/<profile>-<device>.jsonl` and writes this page
anew. On a machine with an NVIDIA GPU, `COMPANION_REQUIRE_GPU=1` makes a run fail rather than fall
back to the CPU; the GPU workflow (`.github/workflows/gpu.yml`) runs the full profile that way and
keeps the executed notebooks and the JSON as artifacts. On a GPU machine that holds Python and torch but
no network, `bash bench/gpu_run.sh` does the same from wheels carried in `.whl/`
(`bash bench/gpu_wheels.sh` fetches them beforehand) and writes `bench/results/full-cuda.jsonl`.
"""


def read_run(path: Path) -> Run:
    """The lines of one results file, a dict per chapter; an empty run when the file does not exist."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def load(folder: Path = RESULTS) -> dict[str, Run]:
    """Every results file of ``folder``, ``{"full-cpu": [line, ...]}``, quick before full."""

    def order(path: Path) -> tuple[int, str]:
        profile = path.stem.split("-")[0]
        return PROFILE_ORDER.get(profile, len(PROFILE_ORDER)), path.stem

    return {path.stem: read_run(path) for path in sorted(folder.glob("*.jsonl"), key=order)}


def load_whole_runs(folder: Path = RESULTS) -> dict[str, dict[str, object]]:
    """The record of each whole run of ``folder`` (``full-cpu.run.json``), ``{"full-cpu": record}``."""
    return {path.name.removesuffix(".run.json"): json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(folder.glob("*.run.json"))}  # fmt: skip


def label(run: Run) -> str:
    """A run's column heading, e.g. ``full, CPU``."""
    first = run[0]
    return f"{first['profile']}, {DEVICE_NAMES.get(str(first['device']), first['device'])}"


def number(value: object) -> str:
    """A result as the page shows it: ints with thousands separators, floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:.4e}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A Markdown table: the first ``text_columns`` columns aligned left, the numbers after them right."""
    align = ["---"] * text_columns + ["---:"] * (len(head) - text_columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def by_chapter(run: Run) -> dict[str, Mapping[str, object]]:
    return {str(line["chapter"]): line for line in run}


def times(runs: Mapping[str, Run]) -> str:
    columns = [by_chapter(run) for run in runs.values()]
    rows = []
    for chapter in sorted({chapter for lines in columns for chapter in lines}):
        cells = [lines.get(chapter) for lines in columns]
        rows.append([chapter] + [f"{cell['seconds']:,.0f} s" if cell else "—" for cell in cells])
    totals = [f"{sum(float(line['seconds']) for line in run) / 60:,.1f} min" for run in runs.values()]
    rows.append(["**all chapters**"] + totals)
    return table(["chapter"] + [label(run) for run in runs.values()], rows)


def whole_runs(runs: Mapping[str, Run], records: Mapping[str, Mapping[str, object]]) -> str:
    """One row per run with a whole-run record: its wall clock, notebooks, base models and how it shared the cores."""
    rows = []
    for name, run in runs.items():
        record = records.get(name)
        if record is None:
            continue
        built: Mapping[str, float] = record["base_models"]  # type: ignore[assignment]
        models = ", ".join(f"{corpus} {seconds:,.0f} s" for corpus, seconds in built.items()) or "—"
        rows.append([label(run), f"{float(record['seconds']) / 60:,.1f} min ({float(record['seconds']):,.0f} s)",
                     str(record["notebooks"]), models, kernels(record), str(record["date"])])
    head = ["run", "wall clock", "notebooks", "base models", "notebooks at a time × threads", "date"]
    return table(head, rows, text_columns=1) if rows else ""


def results(runs: Mapping[str, Run]) -> str:
    columns = [by_chapter(run) for run in runs.values()]
    names: dict[tuple[str, str], None] = {}  # (chapter, result) in the order first seen
    for lines in columns:
        for chapter, line in lines.items():
            names |= dict.fromkeys((chapter, name) for name in line["results"])  # type: ignore[union-attr]
    rows = []
    for chapter, name in sorted(names, key=lambda key: key[0]):
        cells = []
        for lines in columns:
            found = lines[chapter]["results"] if chapter in lines else {}
            cells.append(number(found[name]) if name in found else "—")  # type: ignore[operator,index]
        rows.append([chapter, f"`{name}`"] + cells)
    return table(["chapter", "result"] + [label(run) for run in runs.values()], rows, text_columns=2)


def slowest_cells(runs: Mapping[str, Run], count: int = SLOWEST_CELLS) -> str:
    """For each run that timed its cells, a table of each chapter's ``count`` slowest code cells."""
    parts = []
    for run in runs.values():
        rows = []
        for line in sorted(run, key=lambda line: str(line["chapter"])):
            cells = sorted(line.get("cells") or [], key=lambda cell: -float(cell["seconds"]))  # type: ignore[union-attr]
            for cell in cells[:count]:
                share = float(cell["seconds"]) / float(line["seconds"])  # type: ignore[arg-type]
                first = str(cell["line"]).replace("|", "\\|").replace("`", "'")
                rows.append([str(line["chapter"]), str(cell["cell"]), f"`{first}`",
                             f"{float(cell['seconds']):,.1f} s", f"{share:.0%}"])
        if rows:
            heading = f"### {label(run)}\n\n"
            parts.append(heading + table(["chapter", "code cell", "first line", "time", "of the chapter"], rows, 3))
    return "\n\n".join(parts)


def kernels(line: Mapping[str, object]) -> str:
    """How a run shared the cores: notebooks at a time and threads per kernel, where it recorded them."""
    if "jobs" not in line:
        return "—"
    threads = "thread" if line["threads"] == 1 else "threads"
    return f"{line['jobs']} × {line['threads']} {threads}"


PRECISION = (
    "*Long runs' precision*: the precision of the training runs that dominate chapters 8 and 9 and of the base "
    "models, `config.precision()` — bf16 mixed precision where the device multiplies bf16 in hardware, fp32 "
    "elsewhere (chapter 10; `bench/gpt_precision.py` measures the difference in speed)."
)


def field(key: str, before: str | None = None) -> Callable[[Mapping[str, object]], str]:
    """A ``describe`` for :func:`per_chapter`: the line's ``key``, as text; ``before`` for a line recorded before
    the key existed."""
    return lambda line: str(line[key] if before is None else line.get(key, before))


def per_chapter(run: Run, describe: Callable[[Mapping[str, object]], str]) -> str:
    """What ``describe`` says of the run's lines: one value, or each value with its chapters' count."""
    counts = Counter(describe(line) for line in run)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{value} ({n} {'chapter' if n == 1 else 'chapters'})" for value, n in counts.items())


def machines(runs: Mapping[str, Run]) -> str:
    rows = []
    for run in runs.values():
        dates = sorted({str(line["date"]) for line in run})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        rows.append([label(run), *(per_chapter(run, describe) for describe in (
            field("device_name"), field("cpu_cores"), kernels,
            field("precision", before="fp32"),  # every training ran in fp32 before runs recorded their precision
            field("torch"), field("python"))), when])  # fmt: skip
    head = ["run", "device", "CPU cores", "notebooks at a time × threads", "long runs' precision", "torch", "Python",
            "date"]  # fmt: skip
    return table(head, rows, text_columns=len(head))


def page(runs: Mapping[str, Run], records: Mapping[str, Mapping[str, object]] | None = None) -> str:
    """The whole page for ``runs`` (as :func:`load` returns them) and the whole-run ``records`` of some of them
    (as :func:`load_whole_runs` returns them)."""
    if not runs:
        return HEAD + "\nNo run has been recorded yet.\n\n" + HOW
    cells = slowest_cells(runs)
    whole = whole_runs(runs, records or {})
    slowest = [f"## Slowest cells\n\nThe {SLOWEST_CELLS} code cells of each chapter that took longest, "
               "numbered among the chapter's code cells, with the first line of each.\n\n" + cells]
    return "\n\n".join([
        HEAD.rstrip(),
        "## Time per chapter\n\n" + times(runs),
        *([f"## Whole runs\n\n{whole}"] if whole else []),
        "## Results\n\n" + results(runs),
        *(slowest if cells else []),
        "## Machines and versions\n\n" + machines(runs) + "\n\n" + PRECISION,
        HOW.rstrip(),
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report whether the page is in step; write nothing")
    args = parser.parse_args(argv)
    text = page(load(), load_whole_runs())
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(ROOT)} is out of step with bench/results/: run python tools/reproducibility.py")
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
