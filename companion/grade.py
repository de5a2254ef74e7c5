"""The exercises of a notebook: read them, and grade students' notebooks.

The exercise mechanism of the course (CONTRIBUTING.md, "Exercises"): a student
cell tagged ``exercise`` holds a placeholder and ends with one bare check call;
the solution cell right after it, tagged ``solution``, defines ``X_solution`` for
every ``my_X`` of the student cell and ends with ``assert check.<same check>(...)``.
Both use only the chapter's ``imports`` cell and what they define themselves.

Grading, for instructors::

    python -m companion.grade alice.ipynb bob.ipynb submissions/ \
        [--csv grades.csv] [--timeout 600] [--profile quick|full] [--book DIR]

prints, for each submission, a table of the exercises of its course chapter,
each ``passed``, ``failed``, ``raised`` or ``missing`` with the message of its
check; ``--csv`` writes the same as one row per student and exercise. A folder
stands for the notebooks in it. The rules:

- **The chapter.** A submission is a copy of a chapter's notebook (or a fresh
  notebook with the chapter's exercises). Its course chapter is the notebook of
  ``--book`` (default: the ``book/`` folder of this checkout of the course)
  whose title, the first ``# `` heading, is the same; when no title matches,
  the chapter whose exercises call the most of the checks the submission calls.
  The chapter's ``exercise`` cells are the exercises expected.
- **The answers.** An exercise is answered by the submission's cell that ends
  with a bare call of the same check, ``check.<name>(...)`` (only cells tagged
  ``exercise`` count when the submission has any; the second call of one check
  answers the second exercise that calls it, shown as ``name (2)``).
- **The run.** The submission runs top to bottom, as "Run all" would, with
  nbclient in a fresh kernel of this Python, in a temporary working folder
  (nothing is written beside the submission), with ``COMPANION_PROFILE`` set
  (``quick`` by default) and a time limit for the whole notebook. Errors do not
  stop the run. Cells tagged ``solution`` are left out, so a grade reflects the
  student's own cells, and ``%pip install`` lines are skipped: nothing needs
  the network, and the installed ``companion`` is the one used.
- **The result.** ``passed`` or ``failed`` from the ✅ or ❌ that the answer's
  check displays; ``raised`` when the cell shows an error (or the run stopped
  before reaching it: time limit, dead kernel); ``missing`` when no cell answers
  the exercise.

:func:`main` returns 0 when every submission was graded, whatever the grades,
and 1 when one could not be (a file that is not a readable notebook, or one
with no exercise of the course).
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

SOLUTION_TITLE = "# @title Solution"
"""The first line of a solution cell, which folds it in Colab; :func:`without_title` removes it."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of a chapter: its student cell, its solution cell and their parsed forms."""

    chapter: str
    number: int
    student: nbformat.NotebookNode
    solution: nbformat.NotebookNode

    @property
    def label(self) -> str:
        """``"<chapter> exercise <number>"``, as messages name the exercise."""
        return f"{self.chapter} exercise {self.number}"

    def student_names(self) -> list[str]:
        """The ``my_`` names the student cell binds, in order."""
        return [name for name in bound_names(self.student.source) if name.startswith("my_")]

    def check_call(self, cell: str) -> ast.Call | None:
        """The ``check.<name>(...)`` call that ends the student cell (bare) or the solution cell (asserted)."""
        last = ast.parse(getattr(self, cell).source).body[-1]
        node = last.value if isinstance(last, ast.Expr) else last.test if isinstance(last, ast.Assert) else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "check":
                return node
        return None


def tags(cell: nbformat.NotebookNode) -> list[str]:
    """The cell's tags (``exercise``, ``solution``, ``imports``, ...); ``[]`` when it has none."""
    return list(cell.get("metadata", {}).get("tags", []))


def bound_names(source: str) -> list[str]:
    """Names a cell binds at its top level (assignments, defs, imports), in order, once each."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return list(dict.fromkeys(names))


def used_names(source: str) -> set[str]:
    """Every name a cell reads."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # cells with IPython magics
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def imports_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The notebook's one code cell tagged ``imports``; None when there is none or more than one."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and "imports" in tags(c)]
    return cells[0] if len(cells) == 1 else None


def exercises(notebook: nbformat.NotebookNode, chapter: str) -> list[Exercise]:
    """The chapter's exercises: each ``exercise`` cell with the code cell that follows it."""
    code = [c for c in notebook.cells if c.cell_type == "code"]
    found = []
    for i, cell in enumerate(code):
        if "exercise" in tags(cell):
            following = code[i + 1] if i + 1 < len(code) else nbformat.v4.new_code_cell("")
            found.append(Exercise(chapter, len(found) + 1, cell, following))
    return found


def run(source: str, namespace: dict[str, Any], evaluate_last: bool = True) -> Any:
    """Execute a cell's source in ``namespace``.

    Returns the value of its last statement when that is an expression or an
    ``assert`` (the asserted test, not checked), else None. With
    ``evaluate_last=False`` that last statement is not run at all.
    """
    tree = ast.parse(source)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, (ast.Expr, ast.Assert)):
        tree.body.pop()
        exec(compile(tree, "<cell>", "exec"), namespace)
        if not evaluate_last:
            return None
        return evaluate(last.value if isinstance(last, ast.Expr) else last.test, namespace)
    exec(compile(tree, "<cell>", "exec"), namespace)
    return None


def evaluate(node: ast.expr, namespace: dict[str, Any]) -> Any:
    """The value of one parsed expression in ``namespace``."""
    return eval(compile(ast.Expression(node), "<cell>", "eval"), namespace)


def without_title(source: str) -> str:
    """A solution cell's source without its :data:`SOLUTION_TITLE` line."""
    return source.removeprefix(SOLUTION_TITLE).lstrip("\n")


def read(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, as nbformat version 4."""
    return nbformat.read(path, as_version=4)


# --- Grading -----------------------------------------------------------------------------------

BOOK = Path(__file__).resolve().parent.parent / "book"
RESULTS = ("passed", "failed", "raised", "missing")
"""The values of a :class:`Grade`'s ``result`` (the check passed or failed, the cell raised, no cell called it)."""
CSV_COLUMNS = ("student", "chapter", "number", "check", "result", "message")
"""The columns of the CSV file that :func:`write_csv` writes, one per field of :class:`Grade`."""
# %pip, !pip, !python -m pip, with the lines a trailing backslash continues it onto
_INSTALL_LINE = re.compile(r"^(\s*)[%!].*\b(?:pip3?|conda|mamba)\s+install\b(?:.*\\\n)*.*$", re.M)


class GradeError(ValueError):
    """A submission that cannot be graded: unreadable, not a notebook, or without exercises."""


@dataclass(frozen=True)
class Chapter:
    """A course chapter as the grader sees it: its notebook, its title and the checks of its exercises."""

    path: Path
    title: str
    checks: tuple[str, ...]


@dataclass(frozen=True)
class Grade:
    """One exercise of one submission: ``result`` is one of :data:`RESULTS`.

    ``number`` is the exercise's number in the course chapter (None for a check
    the chapter's exercises do not call); ``message`` is the check's own, as
    displayed (without its ✅/❌), or the error the cell raised.
    """

    student: str
    chapter: str
    number: int | None
    check: str
    result: str
    message: str


def check_name(source: str) -> str | None:
    """The ``name`` of the bare ``check.<name>(...)`` call that ends a cell's source, else None."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # a student's syntax error, or IPython magics: the last such line
        calls = re.findall(r"^check\.(\w+)\(", source, re.M)
        return calls[-1] if calls else None
    last = body[-1] if body else None
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
        func = last.value.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "check":
            return func.attr
    return None


def numbered(names: Iterable[str]) -> list[str]:
    """The names made unique in order: the second ``value`` becomes ``value (2)``."""
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def title(notebook: nbformat.NotebookNode) -> str:
    """The text of the notebook's first level-1 Markdown heading (``# 1. Neurons``), or ``""``."""
    for cell in notebook.cells:
        found = re.search(r"^#\s+(.*\S)", cell.source, re.M) if cell.cell_type == "markdown" else None
        if found:
            return " ".join(found.group(1).split())
    return ""


def course(book: Path = BOOK) -> list[Chapter]:
    """The chapters of the course in the folder ``book`` (their ``.ipynb`` twins) that have exercises."""
    chapters = []
    for path in sorted(book.glob("*.ipynb")):
        notebook = read(path)
        names = [check_name(ex.student.source) for ex in exercises(notebook, path.stem)]
        if any(names):
            chapters.append(Chapter(path, title(notebook), tuple(numbered(n for n in names if n))))
    return chapters


def read_submission(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``; a :class:`GradeError` that says why when it cannot be read."""
    try:
        return nbformat.read(path, as_version=4)
    except OSError as err:
        raise GradeError(f"{path}: cannot be read ({err.strerror or err})") from err
    except Exception as err:  # nbformat raises many kinds for a malformed file; all mean the same here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GradeError(f"{path}: not a Jupyter notebook ({reason[:200]})") from err


def prepared(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of a submission ready to run: no ``solution`` cells, no outputs, install lines skipped."""
    copy = nbformat.from_dict(notebook)
    copy.cells = [c for c in copy.cells if not (c.cell_type == "code" and "solution" in tags(c))]
    for cell in copy.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.source = _INSTALL_LINE.sub(r"\1pass  # install line skipped by the grader", cell.source)
    return copy


def answers(notebook: nbformat.NotebookNode) -> dict[str, int]:
    """The cells that answer exercises: check name (as :func:`numbered`) → cell index.

    Code cells that end with a bare ``check.<name>(...)`` call; only those tagged
    ``exercise`` when any is; never a ``solution`` cell.
    """
    code = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code" and "solution" not in tags(c)]
    cells = [(i, c) for i, c in code if "exercise" in tags(c)] or code
    found = [(i, name) for i, name in ((i, check_name(c.source)) for i, c in cells) if name]
    return dict(zip(numbered(name for _, name in found), (i for i, _ in found)))


def find_chapter(notebook: nbformat.NotebookNode, chapters: Sequence[Chapter]) -> Chapter | None:
    """The course chapter a submission copies: the one with its title, else the one sharing most checks."""
    name = title(notebook).casefold()
    for chapter in chapters:
        if name and chapter.title.casefold() == name:
            return chapter
    calls = set(answers(notebook))
    best = max(chapters, key=lambda chapter: len(calls & set(chapter.checks)), default=None)
    return best if best is not None and calls & set(best.checks) else None


def kernel_manager() -> Any:
    """A jupyter_client kernel manager that starts ipykernel with this Python, whatever kernelspecs the user has."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> Any:
            return self.kernel_spec_class(resource_dir=RESOURCES, **get_kernel_dict())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


def execute(notebook: nbformat.NotebookNode, timeout: float, profile: str) -> str | None:
    """Run ``notebook`` in place, top to bottom, in a fresh kernel, in a temporary working folder.

    An error in a cell becomes that cell's output and the run goes on. The
    cells get ``timeout`` seconds in all (the kernel's start is not counted).
    Returns None, or why the run stopped before the end: "the time limit of
    600 s was reached", "the kernel died".
    """
    try:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellTimeoutError, DeadKernelError
    except ImportError as err:
        raise ImportError("grading needs nbclient and ipykernel: pip install 'companion[grade]'") from err
    started: list[float] = []

    def remaining(cell: nbformat.NotebookNode) -> float:  # the clock starts at the first cell
        started[:] = started or [time.monotonic()]
        return max(1.0, started[0] + timeout - time.monotonic())

    env = {**os.environ, "COMPANION_PROFILE": profile, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    with tempfile.TemporaryDirectory(prefix="companion-grade-") as folder:
        client = NotebookClient(
            notebook, km=kernel_manager(), allow_errors=True, timeout_func=remaining,
            resources={"metadata": {"path": folder}},
        )  # fmt: skip
        try:
            client.execute(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # kernel's own logs
        except CellTimeoutError:
            return f"the time limit of {timeout:g} s was reached"
        except DeadKernelError:
            return "the kernel died"
    return None


def outcome(cell: nbformat.NotebookNode, stopped: str | None = None) -> tuple[str, str]:
    """``(result, message)`` of an executed answer cell.

    ``raised`` with the error when the cell shows one; else ``passed`` or
    ``failed`` from the ✅/❌ check result it displays. A cell the run never
    finished (``stopped`` says why) counts as ``raised``.
    """
    outputs = cell.get("outputs", [])
    for output in outputs:
        if output.output_type == "error":
            return "raised", " ".join(f"{output.ename}: {output.evalue}".split())
    for output in outputs:
        text = str(output.get("data", {}).get("text/plain", "")).strip()
        if text[:1] in ("✅", "❌"):
            return ("passed" if text[0] == "✅" else "failed"), " ".join(text[1:].split())
    if stopped is not None:
        return "raised", f"not run to the end: {stopped}"
    return "failed", "the cell displays no check result (does it end with the bare check call?)"


def grade(path: Path, chapters: Sequence[Chapter], timeout: float = 600, profile: str = "quick") -> list[Grade]:
    """Run one submission and grade the exercises of its course chapter, then any other check it calls."""
    notebook = prepared(read_submission(path))
    chapter, found = find_chapter(notebook, chapters), answers(notebook)
    expected = list(chapter.checks) if chapter else []
    if not expected and not found:
        raise GradeError(f"{path}: no exercise found (no cell ends with a check call, no course chapter matches)")
    stopped = execute(notebook, timeout, profile) if found else None
    grades = []
    for name in expected + [name for name in found if name not in expected]:
        if name in found:
            result, message = outcome(notebook.cells[found[name]], stopped)
        else:
            result, message = "missing", f"no cell ends with check.{name.split(' (')[0]}(...)"
        number = expected.index(name) + 1 if name in expected else None
        grades.append(Grade(str(path), chapter.title if chapter else "", number, name, result, message))
    return grades


def table(grades: Sequence[Grade]) -> str:
    """One submission's grades as a text table, under a line naming the student, chapter and score."""
    first = grades[0]
    passed = sum(g.result == "passed" for g in grades)
    chapter = first.chapter or "no course chapter matched"
    rows = [("#", "check", "result", "message")]
    rows += [(str(g.number or "-"), g.check, g.result, g.message) for g in grades]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{first.student} — {chapter}: {passed} of {len(grades)} passed"]
    for row in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    return "\n".join(line.rstrip() for line in lines)


def write_csv(grades: Sequence[Grade], path: Path) -> None:
    """Write the grades to ``path`` as CSV (UTF-8), one row per student and exercise, :data:`CSV_COLUMNS`."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for g in grades:
            writer.writerow([g.student, g.chapter, "" if g.number is None else g.number, g.check, g.result, g.message])


def submissions(paths: Iterable[Path]) -> list[Path]:
    """The notebooks to grade: each path as given, a folder replaced by the ``.ipynb`` files in it."""
    found: list[Path] = []
    for path in paths:
        found += sorted(path.glob("*.ipynb")) if path.is_dir() else [path]
    return found


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m companion.grade``."""
    cli = argparse.ArgumentParser(
        prog="python -m companion.grade",
        description="Run students' notebooks and grade the course's exercises in them.",
    )
    cli.add_argument("notebooks", nargs="+", type=Path, help="students' notebooks, or folders of them")
    cli.add_argument("--csv", type=Path, metavar="FILE", help="also write the grades to this CSV file")
    cli.add_argument(
        "--timeout", type=float, default=600, metavar="SECONDS", help="seconds for each notebook's cells (600)"
    )
    cli.add_argument("--profile", choices=("quick", "full"), default="quick", help="COMPANION_PROFILE (quick)")
    cli.add_argument(
        "--book", type=Path, default=BOOK, metavar="DIR", help="the course's book folder (default: %(default)s)"
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Grade the notebooks named in ``argv`` and print a table for each; see the module's docstring.

    Returns 0 when every notebook was graded, 1 when one could not be.
    """
    cli = parser()
    args = cli.parse_args(argv)
    if args.timeout <= 0:
        cli.error(f"--timeout must be a positive number of seconds; got {args.timeout:g}")
    if args.book != BOOK and not args.book.is_dir():
        cli.error(f"--book {args.book}: no such folder")
    chapters = course(args.book) if args.book.is_dir() else []
    if not chapters:
        print(f"note: no course chapter in {args.book}; missing exercises cannot be listed", file=sys.stderr)
    graded: list[Grade] = []
    failures = 0
    for path in submissions(args.notebooks):
        try:
            grades = grade(path, chapters, args.timeout, args.profile)
        except GradeError as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
            continue
        print(table(grades), end="\n\n", flush=True)
        graded += grades
    if args.csv is not None:
        write_csv(graded, args.csv)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
