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
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from companion import grade

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = grade.sandbox_problem() is None
NO_SANDBOX = [] if SANDBOX else ["--no-sandbox"]  # the attacks' tests (test_grade_attacks.py) need the sandbox
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
        "def my_softmax(z):\n    ...  # your code here\n\n\ncheck.stable_softmax(my_softmax)",
        "def softmax_solution(z):\n    e = (z - z.amax(dim=-1, keepdim=True)).exp()\n"
        "    return e / e.sum(dim=-1, keepdim=True)\n\n\nassert check.stable_softmax(softmax_solution)",
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
        code = grade.main(["submissions", "--book", "book", "--csv", str(csv_path), "--timeout", "120", *NO_SANDBOX])
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
        ["4", "stable_softmax", "missing"],
    ]
    assert rows[0][3].startswith("neuron_forward: ")  # the check's own message, without its ✅
    assert rows[1][3].startswith("double: case 1")
    assert rows[2][3] == "NameError: name 'undefined_total' is not defined"
    assert rows[3][3] == "no cell ends with check.stable_softmax(...)"


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
        ("alice.ipynb", "4", "stable_softmax", "missing"),
        ("bob.ipynb", "1", "neuron_forward", "failed"),
        ("bob.ipynb", "2", "compare", "missing"),
        ("bob.ipynb", "3", "value", "missing"),
        ("bob.ipynb", "4", "stable_softmax", "missing"),
    ]
    assert {r["chapter"] for r in rows} == {"1. A toy chapter"}
    assert rows[2]["message"] == "NameError: name 'undefined_total' is not defined"


def test_nothing_is_written_beside_the_submissions(graded, folder):
    assert sorted(p.name for p in (folder / "submissions").iterdir()) == ["alice.ipynb", "bob.ipynb"]


def test_command_line_grades_and_reports_unreadable_files(folder, tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "companion.grade", "submissions/bob.ipynb", str(broken), "--book", "book", *NO_SANDBOX],
        cwd=folder, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one file could not be graded
    assert "bob.ipynb — 1. A toy chapter: 0 of 4 passed" in done.stdout
    assert f"error: {broken}: not a Jupyter notebook" in done.stderr


def test_unreadable_files_get_a_clear_error_and_no_run(tmp_path, capsys):
    (tmp_path / "empty.ipynb").write_text("{}", encoding="utf-8")
    (tmp_path / "text.ipynb").write_text("hello", encoding="utf-8")
    paths = [str(tmp_path / name) for name in ("missing.ipynb", "empty.ipynb", "text.ipynb")]
    code = grade.main([*paths, *NO_SANDBOX])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {tmp_path / 'missing.ipynb'}: cannot be read (No such file or directory)" in err
    assert f"error: {tmp_path / 'empty.ipynb'}: not a Jupyter notebook" in err
    assert f"error: {tmp_path / 'text.ipynb'}: not a Jupyter notebook (Notebook does not appear to be JSON" in err


def test_a_notebook_without_exercises_is_an_error(tmp_path, capsys):
    path = write(new_notebook(cells=[new_code_cell("1 + 1")]), tmp_path / "nothing.ipynb")
    assert grade.main([str(path), "--book", str(tmp_path), *NO_SANDBOX]) == 1
    assert "no exercise found" in capsys.readouterr().err


def test_the_time_limit_stops_a_notebook_and_its_unrun_answers_count_as_raised(folder, tmp_path):
    slow = new_notebook(
        cells=[
            new_code_cell("import time\ntime.sleep(60)"),
            new_code_cell("check.neuron_forward(my_neuron)"),
        ]
    )
    path, chapters = write(slow, tmp_path / "slow.ipynb"), grade.course(folder / "book")
    grades = grade.grade(path, chapters, timeout=2, sandbox=SANDBOX)
    assert (grades[0].check, grades[0].result) == ("neuron_forward", "raised")
    assert grades[0].message == "not run: the run stopped in code cell 1: the notebook's time limit of 2 s was reached"


def test_the_job_drops_solutions_skips_magics_and_asks_the_chapters_own_question(folder):
    notebook = grade.read(folder / "book" / "01-toy.ipynb")
    notebook.cells.insert(0, new_code_cell(
        'if True:\n    %pip install x \\\n        "y z"\n!pip install "y z"\n%matplotlib inline'
    ))
    answer = next(c for c in notebook.cells if c.source.startswith('my_sum'))
    answer.source = answer.source.replace('285)', '14)')  # a student who made the exercise easier
    chapter = grade.course(folder / "book")[0]
    task, where = grade.job(notebook, chapter, grade.answers(notebook))
    sources = [cell["source"] for cell in task["cells"]]
    assert not [source for source in sources if "_solution" in source]
    assert sources[0] == (
        "if True:\n    pass  # install line skipped by the grader\n"
        "pass  # install line skipped by the grader\npass  # magic skipped by the grader"
    )
    asked = {cell["answer"]["check"]: cell["answer"]["call"] for cell in task["cells"] if cell["answer"]}
    assert asked["value"] == "check.value('sum of squares', my_sum, 285)"
    assert [cell["number"] for cell in task["cells"]] == [1, 2, 3, 5, 7, 9]  # solution cells count, unrun
    assert len({answer.seed for answer in where.values()}) == len(where) == 4


def test_answers_and_chapters_are_matched_by_check_name():
    assert grade.check_name("f = 1\ncheck.adam_step(f)") == "adam_step"
    assert grade.check_name("assert check.adam_step(f)") is None  # a solution's assert is no answer
    assert grade.check_name("def f(:\n    pass\ncheck.adam_step(f)") == "adam_step"  # a syntax error
    assert grade.numbered(["value", "adam_step", "value"]) == ["value", "adam_step", "value (2)"]
    tagged = new_notebook(
        cells=[
            new_code_cell("check.stable_softmax(f)"),  # a demonstration in the text, not tagged
            new_code_cell("check.stable_softmax(g)", metadata={"tags": ["exercise"]}),
        ]
    )
    assert grade.answers(tagged) == {"stable_softmax": 1}
    ch1 = grade.Chapter(Path("01.ipynb"), "1. One", ("stable_softmax", "value"))
    ch2 = grade.Chapter(Path("02.ipynb"), "2. Two", ("adam_step",))
    titled = new_notebook(cells=[new_markdown_cell("#  2.  Two"), new_code_cell("check.stable_softmax(f)")])
    assert grade.find_chapter(titled, [ch1, ch2]) is ch2  # the title wins
    assert grade.find_chapter(tagged, [ch1, ch2]) is ch1
    assert grade.find_chapter(new_notebook(cells=[new_code_cell("check.other(f)")]), [ch1, ch2]) is None


def test_outcome_is_the_judgement_of_the_produced_data_or_what_stopped_the_cell(tmp_path):
    from companion.check import produce, save_produced

    (tmp_path / "answers").mkdir()
    right = produce("neuron_forward", (lambda x, w, b: torch.relu(x @ w + b),), 5)
    save_produced(tmp_path / "answers" / "0.npz", right)
    save_produced(tmp_path / "answers" / "1.npz", right)  # produced with seed 5, judged with seed 6
    (tmp_path / "answers" / "2.npz").write_bytes(b"not an npz file")
    run = grade.Run(set(), {}, set(), numbers=[2, 3, 4, 5, 7, 8])
    run.read(
        [json.dumps({"cell": cell, "event": event, "error": None}) for cell in range(3) for event in ("start", "done")]
        + ["{not json", "[1, 2]", '{"cell": "3", "event": "start"}']
        + [json.dumps({"cell": 3, "event": "start"}), json.dumps({"cell": 3, "event": "done", "error": "CellTimeout",
            "timeout": True})]  # fmt: skip
        + [json.dumps({"cell": 4, "event": "start"})]
    )
    run.stopped = "the process ended with SIGKILL"

    def outcome(cell: int, seed: int = 5) -> tuple[str, str]:
        return grade.outcome(run, tmp_path, "neuron_forward", grade.Answer(cell, seed, run.numbers[cell]), 3)

    assert outcome(0)[0] == "passed" and outcome(0)[1].startswith("neuron_forward: ")
    assert outcome(1, seed=6)[0] == "failed" and "cannot be read" in outcome(1, seed=6)[1]
    assert outcome(2)[0] == "failed" and "cannot be read" in outcome(2)[1]
    assert outcome(3) == ("raised", "code cell 5 ran past its time limit of 3 s and was stopped")
    assert outcome(4) == ("raised", "code cell 7 did not finish: the process ended with SIGKILL")
    assert outcome(5) == ("raised", "not run: the run stopped in code cell 7: the process ended with SIGKILL")
    assert run.running() == 4


def test_limits_the_runner_could_not_set_are_reported_once_and_cannot_be_unsaid(tmp_path, monkeypatch, capsys):
    run = grade.Run(set(), {}, set())
    run.read([json.dumps({"event": "limits", "missing": ["the ban on new processes"]}),
              json.dumps({"event": "limits", "missing": []})])  # a later line, e.g. the submission's  # fmt: skip
    assert run.unlimited == ["the ban on new processes"]

    def run_job(task, work, settings, hidden=()):
        reported = grade.Run(set(), {}, set())
        reported.read([json.dumps({"event": "limits", "missing": ["the limit RLIMIT_CPU"]})])
        return reported

    monkeypatch.setattr(grade, "run_job", run_job)
    notebook = new_notebook(cells=[new_code_cell("from companion import check\ncheck.neuron_forward(f)")])
    grades = grade.grade(write(notebook, tmp_path / "s.ipynb"), [], sandbox=False)
    assert [g.result for g in grades] == ["raised"]
    assert capsys.readouterr().err == f"warning: {tmp_path / 's.ipynb'} ran without the limit RLIMIT_CPU\n"


def test_every_exercise_of_the_course_is_judged_by_the_grader_not_by_the_students_process():
    """Every check an exercise calls has a spec, so the grader computes its verdict from the answer's data."""
    from companion import check

    for chapter in grade.course():
        assert chapter.checks, chapter.path.name
        assert {name.split(" (")[0] for name in chapter.checks} <= set(check.SPECS), chapter.path.name


def test_magics_become_plain_python():
    source = "%matplotlib inline\nx = 1\n%time y = f(2)\n%timeit -n 3 f(3)\n!ls\n  %pip install x"
    assert grade.without_magics(source).splitlines() == [
        "pass  # magic skipped by the grader", "x = 1", "y = f(2)", "f(3)",
        "pass  # magic skipped by the grader", "  pass  # install line skipped by the grader",
    ]  # fmt: skip
    assert grade.without_magics("%%time\nz = 3") == "z = 3"
    assert grade.without_magics("%%bash\nls") == "raise RuntimeError('the grader does not run %%bash cells')"


def test_a_students_own_check_call_may_unpack_its_arguments():
    from companion.grade_runner import arguments

    namespace = {"answers": (1, 2), "options": {"c": 3}, "b": 4}
    assert arguments("check.cost(*answers, b=b, **options)", namespace) == ((1, 2), {"b": 4, "c": 3})
    assert arguments("check.cost(0, *answers)", namespace) == ((0, 1, 2), {})
    with pytest.raises(ValueError, match="not a check call"):
        arguments("answers", namespace)


def test_the_runner_may_start_threads_but_no_process(tmp_path):
    script = (
        "import subprocess, sys, threading\n"
        "from companion.grade_runner import _forbid_new_processes\n"
        "assert _forbid_new_processes()\n"
        "thread = threading.Thread(target=print, args=('thread ran',)); thread.start(); thread.join()\n"
        "try:\n    subprocess.run(['true'])\nexcept OSError as err:\n    print('no process:', err.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["thread ran", "no process: 1"]  # EPERM


def test_without_a_sandbox_the_grader_refuses_in_one_line_unless_told(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grade, "sandbox_problem", lambda: "bubblewrap is not installed")
    csv_path = tmp_path / "grades.csv"
    assert grade.main([str(folder / "submissions"), "--book", str(folder / "book"), "--csv", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bubblewrap is not installed" in err and "--no-sandbox" in err
    assert not csv_path.exists()  # nothing ran
    args = [str(folder / "submissions" / "bob.ipynb"), "--book", str(folder / "book"), "--no-sandbox"]
    assert grade.main([*args, "--csv", str(csv_path)]) == 0
    assert "--no-sandbox" in capsys.readouterr().err
    assert [row["result"] for row in csv.DictReader(csv_path.open(encoding="utf-8"))][0] == "failed"


def test_the_runner_gets_a_private_home_and_nothing_of_the_graders_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hidden")
    env = grade.environment(tmp_path, "quick", sandbox=True)
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HOME"] == str(tmp_path / "home") and env["IPYTHONDIR"].startswith(env["HOME"])
    assert env["COMPANION_PROFILE"] == "quick" and env["PYTHONNOUSERSITE"] == "1"
    command = grade.sandbox_command(tmp_path, [Path(__file__)])
    assert command[-1] == "--" and "--unshare-all" in command and "--die-with-parent" in command
    assert ["--bind", str(tmp_path), str(tmp_path)] == command[command.index("--bind"):][:3]
    assert ["--ro-bind", "/dev/null", str(Path(__file__).resolve())] == command[command.index("/dev/null") - 1:][:3]


def test_homework_page_is_a_myst_notebook_whose_code_fits_the_page():
    import jupytext

    page = ROOT / "book" / "homework.md"
    notebook = jupytext.read(page, fmt="md:myst")
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 5, "the jupytext header or the code-cell syntax of homework.md is broken"
    long = [line for cell in code for line in cell.splitlines() if len(line) > 80]
    assert not long, f"homework.md: code lines over 80 characters: {long}"
    assert "python -m companion.grade" in page.read_text(encoding="utf-8")


def test_homework_snippet_strips_every_solution_and_written_answer(tmp_path):
    page = (ROOT / "book" / "homework.md").read_text(encoding="utf-8")
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "nbformat.write" in block)
    (tmp_path / "book").symlink_to(ROOT / "book")
    subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, check=True, timeout=120)
    written = next(tmp_path.glob("homework-*.ipynb"))
    chapter = grade.read(ROOT / "book" / f"{written.stem.split('-')[1]}-cnn.ipynb")
    copy = grade.read(written)
    assert "<details" in "".join(cell.source for cell in chapter.cells)  # there was a written answer
    assert not [cell for cell in copy.cells if "solution" in cell.metadata.get("tags", [])]
    assert not [cell for cell in copy.cells if "<details" in cell.source.lower() or "_solution" in cell.source]
    assert len(grade.exercises(copy, "copy")) == len(grade.exercises(chapter, "chapter"))
    assert grade.title(copy) == grade.title(chapter)


@pytest.mark.slow
@pytest.mark.skipif(not SANDBOX, reason=f"no OS sandbox here: {grade.sandbox_problem()}")
def test_every_chapters_solutions_pass_and_placeholders_fail_in_the_sandboxed_grader(tmp_path):
    """Each chapter answered as a student would, in one notebook: the imports cell, then for each
    exercise its placeholder cell (which must fail) and the solution under the student's names
    (``X_solution`` → ``my_X``) ending in the bare check (which must pass)."""
    chapters = grade.course()
    assert len(chapters) >= 10
    for chapter in chapters:
        notebook = grade.read(chapter.path)
        cells = [new_markdown_cell(f"# {chapter.title}"), grade.imports_cell(notebook)]
        for exercise in grade.exercises(notebook, chapter.path.stem):
            if grade.check_name(exercise.student.source):
                answer = grade.as_answer(exercise.solution.source)
                cells += [new_code_cell(exercise.student.source), new_code_cell(answer)]
        path = write(new_notebook(cells=cells), tmp_path / f"{chapter.path.stem}.ipynb")
        grades = grade.grade(path, chapters, timeout=300)
        placeholders, solutions = grades[: len(chapter.checks)], grades[len(chapter.checks) :]
        assert [g.result for g in solutions] == ["passed"] * len(chapter.checks), [g.message for g in solutions]
        assert [g.result for g in placeholders] == ["failed"] * len(chapter.checks), [g.message for g in placeholders]


def test_a_value_checks_question_is_the_courses_not_the_one_its_data_pose(tmp_path):
    """A submission's process writes its own data: it must not be able to ask itself an easier question."""
    from companion import check
    from companion.check import produce, save_produced

    assert grade.course_question("parameter_count", "check.parameter_count(my_count, [3, 4, 4, 2])") == ([3, 4, 4, 2],)
    assert grade.course_question("parameter_count", "check.parameter_count(my_count, sizes)") is None
    assert grade.course_question("conv2d_forward", "check.conv2d_forward(my_conv2d)") is None
    own = tmp_path / "own.npz"
    save_produced(own, produce("parameter_count", (2, [1, 1]), 5))  # the right count of a question of its own
    assert grade.judged("parameter_count", 5, own)
    assert not grade.judged("parameter_count", 5, own, ([3, 4, 4, 2],))

    call = "check.network_2(my_params, target=lambda x1, x2: (x1 - x2).abs())"
    zeros = dict.fromkeys(check.NETWORK_2_PARAMETERS, 0.0)
    easy = tmp_path / "easy.npz"
    save_produced(easy, produce("network_2", (zeros, lambda x1, x2: 0 * x1), 5))  # a target of its own
    assert grade.judged("network_2", 5, easy)
    assert not grade.judged("network_2", 5, easy, grade.course_question("network_2", call))
