"""Write the book's reproducibility page from the committed results of ``bench/run_notebooks.py``.

    python tools/reproducibility.py           # write book/reproducibility.md
    python tools/reproducibility.py --check   # exit 1 when the page is out of step with the results

Every ``bench/results/<profile>-<device>.jsonl`` file is one run of the
chapters: a JSON object per chapter with its wall time, the machine and the
results the chapter recorded with ``companion.config.record``. The page shows
each run as a column: time per chapter, then every recorded result.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "book" / "reproducibility.md"
PROFILE_ORDER = {"quick": 0, "full": 1}
DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU (CUDA)", "mps": "GPU (Apple MPS)"}

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
end; a CPU shared with other work at the time runs slower, so read them as a scale, not a benchmark.
Results are rounded here; the JSON files hold them in full. Runs on other hardware, or with other
versions of PyTorch, give slightly different numbers; the thresholds the chapters assert must hold.
"""

HOW = """## How to reproduce

```bash
make test                                        # creates .venv; every chapter in the quick profile
.venv/bin/python bench/run_notebooks.py --profile quick
.venv/bin/python bench/run_notebooks.py --profile full            # tens of minutes on a CPU
.venv/bin/python bench/run_notebooks.py --profile full 07-cnn     # one chapter
```

Each run replaces its chapters' lines in `bench/results/<profile>-<device>.jsonl` and writes this page
anew. On a machine with an NVIDIA GPU, `COMPANION_REQUIRE_GPU=1` makes a run fail rather than fall
back to the CPU; the GPU workflow (`.github/workflows/gpu.yml`) runs the full profile that way and
keeps the executed notebooks and the JSON as artifacts.
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


def machines(runs: Mapping[str, Run]) -> str:
    rows = []
    for run in runs.values():
        first = run[0]
        dates = sorted({str(line["date"]) for line in run})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        rows.append([
            label(run), str(first["device_name"]), str(first["cpu_cores"]),
            str(first["torch"]), str(first["python"]), when,
        ])
    return table(["run", "device", "CPU cores", "torch", "Python", "date"], rows, text_columns=6)


def page(runs: Mapping[str, Run]) -> str:
    """The whole page for ``runs`` (as :func:`load` returns them)."""
    if not runs:
        return HEAD + "\nNo run has been recorded yet.\n\n" + HOW
    return "\n\n".join([
        HEAD.rstrip(),
        "## Time per chapter\n\n" + times(runs),
        "## Results\n\n" + results(runs),
        "## Machines and versions\n\n" + machines(runs),
        HOW.rstrip(),
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report whether the page is in step; write nothing")
    args = parser.parse_args(argv)
    text = page(load())
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(ROOT)} is out of step with bench/results/: run python tools/reproducibility.py")
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
