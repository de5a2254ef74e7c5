"""Every chapter's exercises work for a student.

Run in this process, cell by cell, with only the chapter's ``imports`` cell before them:
the placeholder of each student cell fails its check; the hidden solution passes
it; and a student whose cell holds the right answer (the solution's values bound
to the ``my_`` names) passes the very check call of their own cell. No cell of the
notebook asserts anything about a student's answer, so "Run all" never breaks on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from book_files import load_script

from companion.check import CheckResult
from companion.grade import evaluate, exercises, imports_cell, read, run, without_title

ROOT = Path(__file__).resolve().parent.parent
twins = load_script("tools/twins.py")

CHAPTERS = twins.chapters()
# A chapter without its twin yet fails tests/test_chapters.py; here it has no exercises to run.
EXERCISES = [
    ex for source in CHAPTERS if twins.twin_path(source).is_file()
    for ex in exercises(read(twins.twin_path(source)), source.stem)
]


@pytest.fixture(autouse=True)
def _quick_profile(monkeypatch):
    monkeypatch.setenv("COMPANION_PROFILE", "quick")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def namespace(chapter: str) -> dict:
    ns: dict = {"__name__": "__exercise__"}
    run(imports_cell(read(ROOT / "book" / f"{chapter}.ipynb")).source, ns)
    return ns


@pytest.mark.parametrize("source", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_has_three_exercises_and_one_imports_cell(source):
    notebook = read(twins.twin_path(source))
    assert imports_cell(notebook) is not None, f"{source.name}: tag exactly one code cell `imports`"
    assert len(exercises(notebook, source.stem)) >= 3, f"{source.name}: at least three checked exercises"


@pytest.mark.parametrize("exercise", EXERCISES, ids=[ex.label for ex in EXERCISES])
def test_placeholder_fails_solution_passes_and_a_right_answer_passes_the_students_own_cell(exercise):
    ns = namespace(exercise.chapter)
    placeholder = run(exercise.student.source, ns)
    assert isinstance(placeholder, CheckResult), f"{exercise.label}: the student cell must end with a check call"
    assert not placeholder, f"{exercise.label}: the placeholder passes its check: {placeholder}"
    assert run(without_title(exercise.solution.source), ns), f"{exercise.label}: the solution fails"

    solved = namespace(exercise.chapter)
    run(exercise.student.source, solved)
    run(without_title(exercise.solution.source), solved, evaluate_last=False)
    for name in exercise.student_names():
        solved[name] = solved[name.removeprefix("my_") + "_solution"]
    call = exercise.check_call("student")
    result = evaluate(call, solved)
    assert result, f"{exercise.label}: a student whose answer is the solution's fails: {result}"
