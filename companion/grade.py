"""The exercises of a notebook: read them, and grade students' notebooks.

The exercise mechanism of the course (CONTRIBUTING.md, "Exercises"): a student
cell tagged ``exercise`` holds a placeholder and ends with one bare check call;
the solution cell right after it, tagged ``solution``, defines ``X_solution`` for
every ``my_X`` of the student cell and ends with ``assert check.<same check>(...)``.
Both use only the chapter's ``imports`` cell and what they define themselves.

Grading, for instructors::

    python -m companion.grade alice.ipynb bob.ipynb submissions/ [--csv grades.csv] \
        [--timeout 600] [--cell-timeout 300] [--memory 8] [--profile quick|full] [--book DIR] [--no-sandbox]

prints, for each submission, a table of the exercises of its course chapter,
each ``passed``, ``failed``, ``raised`` or ``missing`` with a message; ``--csv``
writes the same as one row per student and exercise. A folder stands for the
notebooks in it. The rules:

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
- **The run.** Every submission is read before any runs. Each then runs alone
  (:func:`run_job`): its code cells, top to bottom, as a plain Python script
  (:mod:`companion.grade_runner`; magics replaced, :func:`without_magics`;
  ``solution`` cells left out), in a temporary folder of its own with a private
  home, an environment reduced to what Python and the course need, resource
  limits (memory, CPU time, file size, no new processes) and, unless
  ``--no-sandbox``, a bubblewrap sandbox (:func:`sandbox_command`). Errors do
  not stop the run; a cell that runs past ``--cell-timeout`` is interrupted and
  the next one runs; the notebook gets ``--timeout`` seconds in all.
- **The result.** At an answer cell the submission does not check itself: it
  applies its answer to the cases of a seed the grader chose
  (:func:`companion.check.produce`, with the arguments of the course chapter's
  own check call) and writes the outputs as plain data; the grader reads them
  without pickle and judges them with its own reference
  (:func:`companion.check.judge`): ``passed`` or ``failed``. Nothing the
  notebook prints or displays counts. ``raised`` when the cell raised, ran past
  its time limit, or the run ended before it; ``missing`` when no cell answers
  the exercise.
- **The CSV** is rewritten (atomically) after each submission, so it holds
  every submission graded so far.

:func:`main` returns 0 when every submission was graded, whatever the grades;
1 when one could not be (a file that is not a readable notebook, or one with no
exercise of the course); 2 when there is no sandbox and no ``--no-sandbox``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import functools
import inspect
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
import numpy as np

from companion.grade_runner import VERDICT, arguments

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


def as_answer(solution: str) -> str:
    """A solution cell as a student would write it: no title, ``X_solution`` named ``my_X``, and a bare
    check call in place of ``assert check...`` (how the course's own solutions are graded in tests)."""
    source = re.sub(r"\b(\w+)_solution\b", r"my_\1", without_title(solution))
    return source.replace("assert check.", "check.")


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
_TIMED_LINE = re.compile(r"^(\s*)%timeit\s+(?:-\S+\s+\S+\s+)*|^(\s*)%time\s+", re.M)
_MAGIC_LINE = re.compile(r"^(\s*)[%!].*$", re.M)


class GradeError(ValueError):
    """A submission that cannot be graded: unreadable, not a notebook, or without exercises."""


@dataclass(frozen=True)
class Chapter:
    """A course chapter as the grader sees it: its notebook, its title and the checks of its exercises."""

    path: Path
    title: str
    checks: tuple[str, ...]
    calls: tuple[str, ...] = ()
    """The source of each exercise's check call, as the chapter's student cell writes it."""


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
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # a syntax error or magics: the last such line
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
        sources = [ex.student.source for ex in exercises(notebook, path.stem) if check_name(ex.student.source)]
        if sources:
            names = tuple(numbered(check_name(source) or "" for source in sources))
            calls = tuple(_call_source(source) or "" for source in sources)
            chapters.append(Chapter(path, title(notebook), names, calls))
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


def without_magics(source: str) -> str:
    """A cell's source as plain Python: IPython's magics and shell lines become ``pass`` lines.

    ``%pip install`` (and ``!pip``, ``conda``, ``mamba``) is skipped, since the
    installed ``companion`` is the one used; ``%time``/``%timeit`` run their
    statement once; every other ``%`` or ``!`` line is skipped; a cell magic
    (``%%time``, ``%%capture``) runs its body, except ``%%bash`` and the like,
    whose cell becomes an error.
    """
    first, _, rest = source.partition("\n")
    if first.lstrip().startswith("%%"):
        name = first.split()[0][2:]
        if name not in ("time", "timeit", "capture"):
            return f"raise RuntimeError('the grader does not run %%{name} cells')"
        source = rest
    source = _INSTALL_LINE.sub(r"\1pass  # install line skipped by the grader", source)
    source = _TIMED_LINE.sub(lambda match: match[1] or match[2] or "", source)
    return _MAGIC_LINE.sub(r"\1pass  # magic skipped by the grader", source)


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


# --- Running a submission in isolation ---------------------------------------------------------

_SANDBOX = (
    "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
    "--unshare-all", "--die-with-parent", "--new-session",
)  # fmt: skip
"""bubblewrap's options for every sandbox: a read-only system, private /dev, /proc and /tmp, new namespaces
(no network, its own processes) and an end with the grader; :func:`sandbox_command` adds the rest."""
_STARTUP = 120.0
"""Seconds the runner may take to start (import PyTorch and the checks) before its first cell, at least."""
_GRACE = 10.0
"""Seconds a cell may overrun its limit (its own alarm did not stop it) before its process is killed."""


@dataclass(frozen=True)
class Settings:
    """How submissions run: ``timeout`` seconds for a whole notebook, ``cell_timeout`` for each code cell,
    the ``profile``, an OS ``sandbox`` or none, and ``memory`` bytes of address space."""

    timeout: float = 600
    cell_timeout: float = 300
    profile: str = "quick"
    sandbox: bool = True
    memory: int = 8 << 30

    def limits(self) -> dict[str, int]:
        """The resource limits the runner puts on itself (:func:`companion.grade_runner.limit`)."""
        return {
            "cell_seconds": self.cell_timeout,
            "cpu_seconds": math.ceil(self.timeout * (os.cpu_count() or 1)) + 10,
            "memory_bytes": self.memory,
            "file_bytes": 256 << 20,
        }


@functools.cache
def sandbox_problem() -> str | None:
    """None when bubblewrap can make a sandbox on this machine, else why not, in one line."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (Debian, Ubuntu: apt-get install bubblewrap)"
    try:
        done = subprocess.run([bwrap, *_SANDBOX, "--", "true"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bubblewrap does not start: {err}"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"bubblewrap cannot make a sandbox on this machine ({why})"
    return None


def _package_root() -> Path:
    """The folder that holds the ``companion`` package this grader runs, for the runner's ``PYTHONPATH``."""
    return Path(__file__).resolve().parent.parent


def _data_folder() -> Path:
    from companion.data import data_root

    return data_root().resolve()


def environment(work: Path, profile: str, sandbox: bool) -> dict[str, str]:
    """The runner's environment: what Python and the course need, a private home, nothing of the grader's.

    Passed on from the grader's: only ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``LANG``.
    """
    home = work / "home"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "IPYTHONDIR": str(home / ".ipython"),
        "MPLCONFIGDIR": str(home / ".matplotlib"),
        "TMPDIR": "/tmp" if sandbox else str(work / "tmp"),
        "PYTHONPATH": str(_package_root()),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "COMPANION_PROFILE": profile,
        "COMPANION_PROGRESS": "text",
        "COMPANION_DATA": str(_data_folder()),
        "LANG": "C.UTF-8",
    }
    passed_on = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LANG")
    env.update({name: os.environ[name] for name in passed_on if name in os.environ})
    return env


def sandbox_command(work: Path, hidden: Iterable[Path]) -> list[str]:
    """bubblewrap's command line for a run in ``work``.

    The system read-only; ``/tmp`` private and empty; the grader's home empty
    and read-only (what the runner needs from it, its Python, this package and
    the data, shown again, read-only); each file of ``hidden`` (the
    submissions, the CSV) elsewhere replaced by an empty one; ``work`` the only writable folder; no
    capabilities; its own namespaces of processes, network, users, IPC.
    """
    command = [shutil.which("bwrap") or "bwrap", *_SANDBOX]
    home = Path.home().resolve()
    if home != Path("/"):
        command += ["--tmpfs", str(home)]
    needed = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    needed |= {_package_root(), _data_folder()}
    needed |= {Path(p).resolve() for p in sys.path if p and Path(p).is_dir() and "site-packages" in p}
    private = [Path("/tmp"), *([home] if home != Path("/") else [])]
    shown = [p for p in sorted(p.resolve() for p in needed) if p.exists() and _within(p, private)]
    for path in shown:
        command += ["--ro-bind", str(path), str(path)]
    if home != Path("/"):
        command += ["--remount-ro", str(home)]
    for path in (p.resolve() for p in hidden):
        if path.is_file() and (not _within(path, private) or _within(path, shown)):
            command += ["--ro-bind", "/dev/null", str(path)]
    command += ["--bind", str(work), str(work), "--chdir", str(work)]
    if os.geteuid() == 0:
        command += ["--cap-drop", "ALL"]
    return [*command, "--"]


def _within(path: Path, folders: Iterable[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


@dataclass
class Run:
    """What the runner reported: the cells it started, finished (with their error) and why it stopped."""

    started: set[int]
    errors: dict[int, str | None]
    timeouts: set[int]
    stopped: str | None = None
    seconds: float = 0.0
    numbers: list[int] = field(default_factory=list)
    """The number of each job cell among the submission's code cells, for messages."""
    unlimited: list[str] | None = None
    """The limits the runner reported it could not set, before any student code ran."""

    def read(self, lines: Iterable[str]) -> None:
        """Take in report lines (``progress.jsonl``); malformed ones are ignored.

        Only the first ``limits`` line counts: the runner writes it before the
        submission's code runs, which could append more."""
        for line in lines:
            try:
                event = json.loads(line)
                cell = event.get("cell")
            except (ValueError, AttributeError, RecursionError):
                continue
            if event.get("event") == "limits" and self.unlimited is None:
                missing = event.get("missing")
                self.unlimited = [str(m)[:80] for m in missing[:10]] if isinstance(missing, list) else []
            if not isinstance(cell, int):
                continue
            if event.get("event") == "start":
                self.started.add(cell)
            elif event.get("event") == "done":
                error = event.get("error")
                self.errors[cell] = printable(str(error)[:500]) if error is not None else None
                if event.get("timeout") is True:
                    self.timeouts.add(cell)

    def running(self) -> int | None:
        """The cell started and not finished, if any."""
        pending = self.started - set(self.errors)
        return max(pending) if pending else None


def run_job(task: dict[str, Any], work: Path, settings: Settings, hidden: Sequence[Path] = ()) -> Run:
    """Run :mod:`companion.grade_runner` on ``job`` in the folder ``work``, watch it, and return its report.

    The process is killed when the notebook's time limit passes, or when a
    cell overruns its own by more than a few seconds (the runner's alarm should
    have stopped it). Stray processes cannot outlive it: the sandbox dies with
    it, and without one the runner may start none.
    """
    for folder in ("home", "tmp", "answers"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    runner = [sys.executable, "-B", "-m", "companion.grade_runner"]
    command = sandbox_command(work, hidden) + runner if settings.sandbox else runner
    report = Run(set(), {}, set())
    progress = work / "progress.jsonl"
    started = time.monotonic()
    with open(work / "output.txt", "wb") as output:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT, cwd=work,
            env=environment(work, settings.profile, settings.sandbox), start_new_session=True,
        )  # fmt: skip
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps(task).encode())
            process.stdin.close()
        report.stopped = _watch(process, report, progress, settings, started)
    report.seconds = time.monotonic() - started
    code = process.returncode
    if report.stopped is None and code != 0:
        report.stopped = f"the process exited with code {code}" if code > 0 else f"the process ended with {_signal(-code)}"
    return report


def _signal(number: int) -> str:
    """``"SIGKILL"``, ``"SIGXCPU"`` (its CPU time used up), ... for a signal's number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _watch(process: subprocess.Popen, run: Run, progress: Path, settings: Settings, started: float) -> str | None:
    """Wait for ``process``, reading its report; kill it at a time limit, and return why, else None.

    The notebook's clock starts with its first cell; the runner's own start
    (Python, PyTorch and the checks) gets the notebook's time or
    :data:`_STARTUP` seconds, whichever is longer.
    """
    seen, offset, since, begun = None, 0, started, None
    stopped = None
    while process.poll() is None:
        time.sleep(0.1)
        offset = _read_progress(run, progress, offset)
        now, cell = time.monotonic(), run.running()
        if cell != seen:
            seen, since = cell, now
        if begun is None and run.started:
            begun = now  # the notebook's clock starts with its first cell
        if begun is None and now - started > max(settings.timeout, _STARTUP):
            stopped = f"the runner did not start within {max(settings.timeout, _STARTUP):g} s"
        elif begun is not None and now - begun > settings.timeout:
            stopped = f"the notebook's time limit of {settings.timeout:g} s was reached"
        elif cell is not None and now - since > settings.cell_timeout + _GRACE:
            stopped = f"it did not stop at the cell's time limit of {settings.cell_timeout:g} s"
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    _read_progress(run, progress, offset)
    return stopped


def _read_progress(run: Run, path: Path, offset: int, most: int = 1 << 20) -> int:
    """Read the report's new complete lines from ``offset`` (at most ``most`` bytes in all); the new offset."""
    if offset >= most or not path.is_file():
        return offset
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read(most - offset)
    complete = data[: data.rfind(b"\n") + 1]
    run.read(complete.decode("utf-8", "replace").splitlines())
    return offset + len(complete)


def _call_source(source: str) -> str | None:
    """The source of the bare check call that ends a cell, else None (a syntax error, say)."""
    try:
        last = ast.parse(source).body[-1]
    except (SyntaxError, IndexError, ValueError, RecursionError, MemoryError):
        return None
    return ast.unparse(last.value) if isinstance(last, ast.Expr) else None


class Answer(NamedTuple):
    """Where an answered exercise's data come from, and what the grader asks of them."""

    cell: int  # its cell in the runner's job
    seed: int  # the seed of its cases
    number: int  # its code cell's number in the notebook
    question: tuple | None = None  # a value check's question, as the course's own call poses it


def course_question(name: str, call: str) -> tuple | None:
    """The question of the value check ``name`` (its arguments after the answers, defaults filled in) as
    the course's own ``call`` poses it, evaluated in the grader's process, where a submission cannot
    change it; None for a check without a question or a call whose question is not self-contained."""
    import torch

    from companion import check

    spec = check.SPECS.get(name)
    node = ast.parse(call, mode="eval").body if spec is not None and spec.answers else None
    if not isinstance(node, ast.Call) or len(node.args) < spec.answers:
        return None
    node.args[: spec.answers] = [ast.Constant(...)] * spec.answers  # the student's answers are not asked for
    try:
        args, kwargs = arguments(ast.unparse(node), {"torch": torch, "math": math})
        bound = inspect.signature(getattr(check, name)).bind(*args, **kwargs)
    except Exception:  # a question that names the notebook's own variables: the produced one stands
        return None
    bound.apply_defaults()
    return tuple(bound.args[spec.answers:])


def job(notebook: nbformat.NotebookNode, chapter: Chapter | None, found: dict[str, int]) -> tuple[dict, dict]:
    """The runner's job for a submission, and for each answered exercise its :class:`Answer`.

    The cells are the submission's code cells without its solution cells,
    magics replaced. An answer's check call is the course chapter's own when
    the chapter has that exercise (so the exercise's parameters are the course's,
    whatever the student changed), else the student's; its seed is fresh.
    """
    by_index = {index: label for label, index in found.items()}
    cells: list[dict[str, Any]] = []
    where: dict[str, Answer] = {}
    number = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        number += 1
        if "solution" in tags(cell):
            continue
        source, label, answer = without_magics(cell.source), by_index.get(index), None
        if label is not None:
            call = _call_source(source)
            if chapter is not None and label in chapter.checks and chapter.calls:
                call = chapter.calls[chapter.checks.index(label)]
            seed = secrets.randbits(62)
            answer = {"check": label.split(" (")[0], "call": call or "check.missing()", "seed": seed,
                      "file": f"answers/{len(cells)}.npz"}  # fmt: skip
            question = course_question(answer["check"], call) if chapter and call in chapter.calls else None
            where[label] = Answer(len(cells), seed, number, question)
        cells.append({"source": source, "answer": answer, "number": number})
    return {"cells": cells}, where


def judged(name: str, seed: int, path: Path, question: tuple | None = None) -> Any:
    """The grader's :class:`~companion.check.CheckResult` for the data a submission produced at ``path``.

    :func:`companion.check.judge` for a check declared as a spec (asked ``question``, where
    one is given, instead of the question the data pose); for another
    (``compare``, ``value``), the verdict the student's process recorded.
    ValueError for data that is malformed or was not produced for this check and seed.
    """
    from companion import check

    if name in check.SPECS:
        return check.judge(name, seed, check.load_produced(path), question)
    try:
        with np.load(path, allow_pickle=False) as npz:
            produced = json.loads(str(npz["__json__"]))
    except (OSError, KeyError, ValueError, EOFError, RecursionError) as err:
        raise ValueError(f"{path.name}: not a file of produced outputs ({err})") from err
    if not isinstance(produced, dict) or produced.get("format") != VERDICT:
        raise ValueError(f"{path.name}: not a recorded verdict")
    if produced.get("check") != name or produced.get("seed") != seed:
        raise ValueError(f"these outputs were not produced for {name!r} with this seed")
    shown, message = str(produced.get("name"))[:100], str(produced.get("message"))[:1000]
    return check.CheckResult(shown, produced.get("passed") is True, message)


def outcome(run: Run, work: Path, label: str, where: Answer, limit: float) -> tuple[str, str]:
    """``(result, message)`` of one answered exercise: the grader's judgement of the data its cell produced.

    ``limit``: the seconds a cell may run.
    """
    cell, seed, number, question = where
    answer = work / "answers" / f"{cell}.npz"
    if (answer.is_file() or answer.is_symlink()) and run.errors.get(cell, "") is None:
        if answer.is_symlink() or not answer.is_file():
            return "failed", "the answer's data cannot be read: it is not a regular file"
        try:
            verdict = judged(label.split(" (")[0], seed, answer, question)
        except Exception as err:  # whatever the data: a submission's answer never stops the grader
            return "failed", f"the answer's data cannot be read: {' '.join(str(err).split())[:300]}"
        return ("passed" if verdict.passed else "failed"), " ".join(f"{verdict.name}: {verdict.message}".split())
    if cell in run.timeouts:
        return "raised", f"code cell {number} ran past its time limit of {limit:g} s and was stopped"
    if cell in run.errors:
        return "raised", run.errors[cell] or "the cell produced no answer"
    if cell in run.started:
        return "raised", f"code cell {number} did not finish: {run.stopped or 'the run stopped'}"
    where_stopped = f" in code cell {run.numbers[run.running()]}" if run.running() is not None else ""
    return "raised", f"not run: the run stopped{where_stopped}: {run.stopped or 'the runner ended early'}"


def grade(
    path: Path, chapters: Sequence[Chapter], timeout: float = 600, profile: str = "quick",
    cell_timeout: float = 300, sandbox: bool = True,
) -> list[Grade]:  # fmt: skip
    """Run one submission and grade the exercises of its course chapter, then any other check it calls."""
    settings = Settings(timeout, cell_timeout, profile, sandbox)
    return grade_notebook(read_submission(path), str(path), chapters, settings)


def grade_notebook(
    notebook: nbformat.NotebookNode, student: str, chapters: Sequence[Chapter], settings: Settings,
    hidden: Sequence[Path] = (),
) -> list[Grade]:  # fmt: skip
    """Grade a submission already read: run it in its own temporary folder (sandboxed unless
    ``settings.sandbox`` is false, hiding the files ``hidden``) and judge each answer's data."""
    if settings.sandbox and sandbox_problem() is not None:
        raise GradeError(f"no sandbox: {sandbox_problem()}")
    chapter, found = find_chapter(notebook, chapters), answers(notebook)
    expected = list(chapter.checks) if chapter else []
    if not expected and not found:
        raise GradeError(f"{student}: no exercise found (no cell ends with a check call, no course chapter matches)")
    grades = []
    work = Path(tempfile.mkdtemp(prefix="companion-grade-")).resolve()
    try:
        task, where = job(notebook, chapter, found)
        task["limits"] = settings.limits()
        run = run_job(task, work, settings, hidden) if found else Run(set(), {}, set())
        if run.unlimited:
            print(f"warning: {student} ran without {', '.join(run.unlimited)}", file=sys.stderr)
        run.numbers = [cell["number"] for cell in task["cells"]]
        for name in expected + [name for name in found if name not in expected]:
            if name in found:
                result, message = outcome(run, work, name, where[name], settings.cell_timeout)
            else:
                result, message = "missing", f"no cell ends with check.{name.split(' (')[0]}(...)"
            number = expected.index(name) + 1 if name in expected else None
            grades.append(Grade(student, chapter.title if chapter else "", number, name, result, printable(message)))
    finally:
        remove_tree(work)
    return grades


def remove_tree(folder: Path) -> None:
    """Remove a submission's work folder, whatever it left there, without following any link out of it.

    The submission may have made folders read-only; they are made writable first,
    real folders only (``os.chmod`` follows links, so a link in the tree is never
    passed to it), then :func:`shutil.rmtree` removes the tree, links as links.
    """
    for parent, folders, _ in os.walk(folder):
        for path in [parent, *(os.path.join(parent, name) for name in folders)]:
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)
    shutil.rmtree(folder, ignore_errors=True)


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
    """Write the grades to ``path`` as CSV (UTF-8), one row per student and exercise, :data:`CSV_COLUMNS`.

    Atomically: a temporary file beside ``path``, renamed over it, so the file is
    always either the previous grades or these, never half of them.
    """
    path = Path(path)
    with tempfile.NamedTemporaryFile(
        "w", newline="", encoding="utf-8", dir=path.parent or ".", prefix=f".{path.name}.", delete=False
    ) as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for g in grades:
            writer.writerow([g.student, g.chapter, "" if g.number is None else g.number, g.check, g.result,
                             inert(g.message)])
    os.replace(file.name, path)


def printable(text: str) -> str:
    """``text`` with each control character (newlines, terminal escapes) replaced by a space."""
    return "".join(" " if ord(ch) < 32 or 127 <= ord(ch) < 160 else ch for ch in text)


def inert(cell: str) -> str:
    """A CSV cell a spreadsheet shows as text: one starting with ``= + - @`` gets a leading apostrophe."""
    return "'" + cell if cell.startswith(("=", "+", "-", "@")) else cell


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
        description="Run students' notebooks, each in its own sandbox, and grade the course's exercises in them.",
    )
    cli.add_argument("notebooks", nargs="+", type=Path, help="students' notebooks, or folders of them")
    cli.add_argument("--csv", type=Path, metavar="FILE", help="also write the grades to this CSV file")
    cli.add_argument(
        "--timeout", type=float, default=600, metavar="SECONDS", help="seconds for each whole notebook (600)"
    )
    cli.add_argument(
        "--cell-timeout", type=float, default=300, metavar="SECONDS",
        help="seconds for each code cell, after which it is interrupted and the next one runs (300)",
    )  # fmt: skip
    cli.add_argument("--memory", type=float, default=8, metavar="GB", help="memory for each notebook, in GiB (8)")
    cli.add_argument("--profile", choices=("quick", "full"), default="quick", help="COMPANION_PROFILE (quick)")
    cli.add_argument(
        "--book", type=Path, default=BOOK, metavar="DIR", help="the course's book folder (default: %(default)s)"
    )
    cli.add_argument(
        "--no-sandbox", action="store_true",
        help="grade without an OS sandbox where bubblewrap cannot make one (weaker isolation: see book/homework.md)",
    )  # fmt: skip
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Grade the notebooks named in ``argv`` and print a table for each; see the module's docstring.

    Returns 0 when every notebook was graded, 1 when one could not be, 2 when
    nothing was run (no sandbox, and no ``--no-sandbox``).
    """
    cli = parser()
    args = cli.parse_args(argv)
    for option in ("timeout", "cell_timeout", "memory"):
        if getattr(args, option) <= 0:
            cli.error(f"--{option.replace('_', '-')} must be a positive number; got {getattr(args, option):g}")
    if args.book != BOOK and not args.book.is_dir():
        cli.error(f"--book {args.book}: no such folder")
    problem = None if args.no_sandbox else sandbox_problem()
    if problem is not None:
        print(f"error: no sandbox: {problem}; grading needs one, or --no-sandbox to grade without", file=sys.stderr)
        return 2
    if args.no_sandbox:
        print("note: --no-sandbox: submissions run as this user, with limits but no sandbox", file=sys.stderr)
    settings = Settings(args.timeout, args.cell_timeout, args.profile, not args.no_sandbox, int(args.memory * 2**30))
    chapters = course(args.book) if args.book.is_dir() else []
    if not chapters:
        print(f"note: no course chapter in {args.book}; missing exercises cannot be listed", file=sys.stderr)
    paths = submissions(args.notebooks)
    loaded: list[nbformat.NotebookNode | GradeError] = []
    for path in paths:  # every submission is read before any runs
        try:
            loaded.append(read_submission(path))
        except GradeError as err:
            loaded.append(err)
    hidden = [*paths, *([args.csv] if args.csv else [])]
    graded: list[Grade] = []
    if args.csv is not None:
        write_csv(graded, args.csv)
    failures = 0
    for path, notebook in zip(paths, loaded):
        try:
            if isinstance(notebook, GradeError):
                raise notebook
            grades = grade_notebook(notebook, str(path), chapters, settings, hidden)
        except GradeError as err:
            print(f"error: {err}", file=sys.stderr)
            failures += 1
            continue
        except Exception as err:  # noqa: BLE001 — a submission that breaks the grader costs only its own grades
            print(f"error: {path}: not graded: {type(err).__name__}: {printable(str(err))[:300]}", file=sys.stderr)
            failures += 1
            continue
        print(table(grades), end="\n\n", flush=True)
        graded += grades
        if args.csv is not None:
            write_csv(graded, args.csv)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
