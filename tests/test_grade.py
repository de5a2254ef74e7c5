"""Grading students' notebooks: ``python -m companion.grade``.

A small course (two chapters with tagged ``imports``/``exercise``/``solution``
cells and real checks) and two students' notebooks built here: Alice copied
chapter 1 and answered one exercise right, one wrong, one with a cell that
raises, and deleted the fourth; Bob wrote a fresh notebook with no title and
no tags, a ``%pip install`` line and one wrong answer. The graders run in this
process (table and CSV) and once as ``python -m companion.grade``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from companion import grade

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}, "tags": ["solution", "hide-input"]}

# (student placeholder cell, solution cell) of the toy chapter 1; real checks of companion.check.
EXERCISES_1 = [
    (
        "def my_neuron(x, w, b):\n    ...  # your code here\n\n\ncheck.neuron_forward(my_neuron)",
        "def neuron_solution(x, w, b):\n    return torch.relu(x @ w + b)\n\n\n"
        "assert check.neuron_forward(neuron_solution)",
    ),
    (
        "def my_double(x):\n    ...  # your code here\n\n\n"
        'check.compare("double", my_double, lambda x: 2 * x, [(1.0,), (-3.0,)])',
        "def double_solution(x):\n    return 2 * x\n\n\n"
        'assert check.compare("double", double_solution, lambda x: 2 * x, [(1.0,), (-3.0,)])',
    ),
    (
        'my_sum = ...\n\ncheck.value("sum of squares", my_sum, 285)',
        'sum_solution = sum(i * i for i in range(10))\n\nassert check.value("sum of squares", sum_solution, 285)',
    ),
    (
        "def my_softmax(z):\n    ...  # your code here\n\n\ncheck.softmax(my_softmax)",
        "def softmax_solution(z):\n    return z.softmax(dim=-1)\n\n\nassert check.softmax(softmax_solution)",
    ),
]
IMPORTS = "import torch\n\nfrom companion import check"


def chapter(title: str, pairs: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A course chapter: title, imports cell, then each exercise's task, student cell and solution cell."""
    cells = [new_markdown_cell(f"# {title}\n\nSome text."), new_code_cell(IMPORTS, metadata={"tags": ["imports"]})]
    for number, (student, solution) in enumerate(pairs, start=1):
        cells += [
            new_markdown_cell(f"**Exercise {number}.** Do it."),
            new_code_cell(student, metadata={"tags": ["exercise"]}),
            new_code_cell(f"{grade.SOLUTION_TITLE}\n{solution}", metadata=dict(SOLUTION_METADATA)),
        ]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})


def write(notebook: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("grading"))


def build(root: Path) -> Path:
    """The course (``root/book/``) and the two students' notebooks (``root/submissions/``)."""
    book, submissions = root / "book", root / "submissions"
    book.mkdir(), submissions.mkdir()
    toy = chapter("1. A toy chapter", EXERCISES_1)
    write(toy, book / "01-toy.ipynb")
    other = ("my_rate = ...\n\ncheck.value('rate', my_rate, 0.5)", "assert check.value('rate', 0.5, 0.5)")
    write(chapter("2. Another chapter", [other]), book / "02-other.ipynb")

    alice = nbformat.from_dict(toy)
    answer_cells = [c for c in alice.cells if "exercise" in c.metadata.get("tags", [])]
    answer_cells[0].source = answer_cells[0].source.replace("...  # your code here", "return torch.relu(x @ w + b)")
    answer_cells[1].source = answer_cells[1].source.replace("...  # your code here", "return 3 * x")
    answer_cells[2].source = answer_cells[2].source.replace("...", "sum(i * i for i in range(10)) / undefined_total")
    alice.cells.remove(answer_cells[3])  # the fourth exercise: deleted
    write(alice, submissions / "alice.ipynb")

    bob = new_notebook(
        cells=[
            new_code_cell('%pip install "companion @ git+https://github.com/neurons-to-transformers/course@main"'),
            new_code_cell("import torch\nfrom companion import check"),
            new_code_cell("def my_neuron(x, w, b):\n    return x @ w + b\n\n\ncheck.neuron_forward(my_neuron)"),
        ]
    )
    write(bob, submissions / "bob.ipynb")
    return root


@pytest.fixture(scope="module")
def graded(folder: Path, tmp_path_factory) -> tuple[int, str, str, list[dict[str, str]]]:
    """``main`` run in this process on the folder of submissions: (exit code, stdout, stderr, CSV rows)."""
    csv_path = tmp_path_factory.mktemp("out") / "grades.csv"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.chdir(folder)
        code = grade.main(["submissions", "--book", "book", "--csv", str(csv_path), "--timeout", "120"])
    with open(csv_path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return code, out.getvalue(), err.getvalue(), rows


def rows_of(table: str, student: str) -> list[list[str]]:
    """The rows (#, check, result, message) under the header line of ``student`` in the printed tables."""
    block = table.split(f"{student} — ", 1)[1].split("\n\n", 1)[0].splitlines()
    return [re.split(r"\s{2,}", line.strip(), maxsplit=3) for line in block[2:]]


def test_table_grades_right_wrong_raising_and_missing_answers(graded):
    code, out, err, _ = graded
    assert code == 0, err
    assert f"{os.path.join('submissions', 'alice.ipynb')} — 1. A toy chapter: 1 of 4 passed" in out
    rows = rows_of(out, "alice.ipynb")
    assert [row[:3] for row in rows] == [
        ["1", "neuron_forward", "passed"],
        ["2", "compare", "failed"],
        ["3", "value", "raised"],
        ["4", "softmax", "missing"],
    ]
    assert rows[0][3].startswith("neuron_forward: ")  # the check's own message, without its ✅
    assert rows[1][3].startswith("double: case 1")
    assert rows[2][3] == "NameError: name 'undefined_total' is not defined"
    assert rows[3][3] == "no cell ends with check.softmax(...)"


def test_a_fresh_notebook_is_matched_by_its_checks_and_its_install_line_skipped(graded):
    _, out, _, _ = graded
    assert "bob.ipynb — 1. A toy chapter: 0 of 4 passed" in out  # no title: chapter 1 by its checks
    rows = rows_of(out, "bob.ipynb")
    assert [row[:3] for row in rows][0] == ["1", "neuron_forward", "failed"]
    assert "neuron_forward: case" in rows[0][3]  # the relu is missing: a case with negative values fails
    assert [row[2] for row in rows[1:]] == ["missing"] * 3


def test_csv_has_one_row_per_student_and_exercise(graded):
    _, _, _, rows = graded
    assert list(rows[0]) == list(grade.CSV_COLUMNS)
    assert [(Path(r["student"]).name, r["number"], r["check"], r["result"]) for r in rows] == [
        ("alice.ipynb", "1", "neuron_forward", "passed"),
        ("alice.ipynb", "2", "compare", "failed"),
        ("alice.ipynb", "3", "value", "raised"),
        ("alice.ipynb", "4", "softmax", "missing"),
        ("bob.ipynb", "1", "neuron_forward", "failed"),
        ("bob.ipynb", "2", "compare", "missing"),
        ("bob.ipynb", "3", "value", "missing"),
        ("bob.ipynb", "4", "softmax", "missing"),
    ]
    assert {r["chapter"] for r in rows} == {"1. A toy chapter"}
    assert rows[2]["message"] == "NameError: name 'undefined_total' is not defined"


def test_nothing_is_written_beside_the_submissions(graded, folder):
    assert sorted(p.name for p in (folder / "submissions").iterdir()) == ["alice.ipynb", "bob.ipynb"]


def test_command_line_grades_and_reports_unreadable_files(folder, tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "companion.grade", "submissions/bob.ipynb", str(broken), "--book", "book"],
        cwd=folder, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one file could not be graded
    assert "bob.ipynb — 1. A toy chapter: 0 of 4 passed" in done.stdout
    assert f"error: {broken}: not a Jupyter notebook" in done.stderr


def test_unreadable_files_get_a_clear_error_and_no_run(tmp_path, capsys):
    (tmp_path / "empty.ipynb").write_text("{}", encoding="utf-8")
    (tmp_path / "text.ipynb").write_text("hello", encoding="utf-8")
    code = grade.main([str(tmp_path / "missing.ipynb"), str(tmp_path / "empty.ipynb"), str(tmp_path / "text.ipynb")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {tmp_path / 'missing.ipynb'}: cannot be read (No such file or directory)" in err
    assert f"error: {tmp_path / 'empty.ipynb'}: not a Jupyter notebook" in err
    assert f"error: {tmp_path / 'text.ipynb'}: not a Jupyter notebook (Notebook does not appear to be JSON" in err


def test_a_notebook_without_exercises_is_an_error(tmp_path, capsys):
    path = write(new_notebook(cells=[new_code_cell("1 + 1")]), tmp_path / "nothing.ipynb")
    assert grade.main([str(path), "--book", str(tmp_path)]) == 1
    assert "no exercise found" in capsys.readouterr().err


def test_the_time_limit_stops_a_notebook_and_its_unrun_answers_count_as_raised(folder, tmp_path):
    slow = new_notebook(
        cells=[
            new_code_cell("import time\ntime.sleep(60)"),
            new_code_cell("check.neuron_forward(my_neuron)"),
        ]
    )
    grades = grade.grade(write(slow, tmp_path / "slow.ipynb"), grade.course(folder / "book"), timeout=2)
    assert (grades[0].check, grades[0].result) == ("neuron_forward", "raised")
    assert grades[0].message == "not run to the end: the time limit of 2 s was reached"


def test_prepared_copy_drops_solutions_outputs_and_install_lines(folder):
    notebook = grade.read(folder / "book" / "01-toy.ipynb")
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="old")]
    install = 'if True:\n    %pip install x \\\n        "y z"\n!pip install "y z"\n!{sys.executable} -m pip install z'
    notebook.cells.insert(0, new_code_cell(install))
    ready = grade.prepared(notebook)
    assert not any("solution" in c.metadata.get("tags", []) for c in ready.cells)
    assert all(c.outputs == [] and c.execution_count is None for c in ready.cells if c.cell_type == "code")
    skipped = "pass  # install line skipped by the grader"
    assert ready.cells[0].source == f"if True:\n    {skipped}\n{skipped}\n{skipped}"
    assert len(notebook.cells) == len(ready.cells) + 4 and notebook.cells[2].outputs  # the original is untouched


def test_answers_and_chapters_are_matched_by_check_name():
    assert grade.check_name("f = 1\ncheck.adam_step(f)") == "adam_step"
    assert grade.check_name("assert check.adam_step(f)") is None  # a solution's assert is no answer
    assert grade.check_name("def f(:\n    pass\ncheck.adam_step(f)") == "adam_step"  # a syntax error
    assert grade.numbered(["value", "adam_step", "value"]) == ["value", "adam_step", "value (2)"]
    tagged = new_notebook(
        cells=[
            new_code_cell("check.softmax(f)"),  # a demonstration in the text, not tagged
            new_code_cell("check.softmax(g)", metadata={"tags": ["exercise"]}),
        ]
    )
    assert grade.answers(tagged) == {"softmax": 1}
    ch1 = grade.Chapter(Path("01.ipynb"), "1. One", ("softmax", "value"))
    ch2 = grade.Chapter(Path("02.ipynb"), "2. Two", ("adam_step",))
    titled = new_notebook(cells=[new_markdown_cell("#  2.  Two"), new_code_cell("check.softmax(f)")])
    assert grade.find_chapter(titled, [ch1, ch2]) is ch2  # the title wins
    assert grade.find_chapter(tagged, [ch1, ch2]) is ch1
    assert grade.find_chapter(new_notebook(cells=[new_code_cell("check.other(f)")]), [ch1, ch2]) is None


def test_outcome_reads_the_displayed_check_result_or_the_error():
    def cell(*outputs):
        return new_code_cell("check.x(f)", outputs=list(outputs), execution_count=1)

    shown = nbformat.v4.new_output("execute_result", {"text/plain": "❌ x: case 2: expected shape (), got (1,)."})
    assert grade.outcome(cell(shown)) == ("failed", "x: case 2: expected shape (), got (1,).")
    passed = nbformat.v4.new_output("execute_result", {"text/plain": "✅ x: correct."})
    assert grade.outcome(cell(passed)) == ("passed", "x: correct.")
    error = nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])
    assert grade.outcome(cell(error)) == ("raised", "ZeroDivisionError: division by zero")
    assert grade.outcome(cell())[0] == "failed"


def test_homework_page_is_a_myst_notebook_whose_code_fits_the_page():
    import jupytext

    page = ROOT / "book" / "homework.md"
    notebook = jupytext.read(page, fmt="md:myst")
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 5, "the jupytext header or the code-cell syntax of homework.md is broken"
    long = [line for cell in code for line in cell.splitlines() if len(line) > 80]
    assert not long, f"homework.md: code lines over 80 characters: {long}"
    assert "python -m companion.grade" in page.read_text(encoding="utf-8")
