"""The grader against submissions that attack it: ``python -m companion.grade`` on chapter 7.

Each test hands the grader a chapter-7 submission that tries one way of
cheating or of harming the grader, other students or the instructor's
machine, and checks that the grades and the CSV stay right. The submissions are
chapter 7's exercise sheet (title, a light imports cell, the three exercise
cells); a right answer is the chapter's own solution under the student's name.

Probes that look for something they should not find (the grader's environment,
its process, a writable folder) turn what they find into the answer: the output
size they return is off by one when the probe succeeded, so a grade of
``passed`` means the submission found nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from companion import grade

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "book" / "07-cnn.ipynb"
SANDBOX = grade.sandbox_problem() is None
needs_sandbox = pytest.mark.skipif(not SANDBOX, reason=f"no OS sandbox here: {grade.sandbox_problem()}")
NO_SANDBOX = [] if SANDBOX else ["--no-sandbox"]  # the attacks that need no sandbox to fail are tested either way


def solutions() -> dict[str, str]:
    """Chapter 7's solutions as a student would write them: ``X_solution`` → ``my_X``, a bare check call."""
    notebook = grade.read(CHAPTER)
    found = {}
    for exercise in grade.exercises(notebook, "07"):
        name = grade.check_name(exercise.student.source)
        if name is None:
            continue
        found[name] = grade.as_answer(exercise.solution.source)
    return found


RIGHT = solutions()
TITLE = grade.title(grade.read(CHAPTER))


def sheet(*cells: str, exercises: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """A chapter-7 submission: title, imports, any extra ``cells``, then the three answers (right by default)."""
    answers = {**RIGHT, **(exercises or {})}
    return new_notebook(
        cells=[
            new_markdown_cell(f"# {TITLE}"),
            new_code_cell("import os\nimport torch\nfrom companion import check", metadata={"tags": ["imports"]}),
            *(new_code_cell(textwrap.dedent(cell)) for cell in cells),
            *(new_code_cell(source, metadata={"tags": ["exercise"]}) for source in answers.values()),
        ]
    )


def off_by_leak(probe: str) -> dict[str, str]:
    """Exercise 1 answered right unless ``probe`` (code that sets ``leaked``) found something."""
    answer = (
        "def my_output_size(n, k, p, s):\n"
        "    return (n + 2 * p - k) // s + 1 + int(bool(leaked))\n\n\n"
        "check.conv_output_size(my_output_size)"
    )
    return {"conv_output_size": f"leaked = False\n{textwrap.dedent(probe)}\n\n{answer}"}


def main(*args: str, cwd: Path) -> tuple[int, str, str, list[dict[str, str]]]:
    """``grade.main(args)`` in this process, run from ``cwd``: (exit code, stdout, stderr, CSV rows)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.chdir(cwd)
        limit = [] if "--timeout" in args else ["--timeout", "120"]
        code = grade.main([*args, "--csv", "grades.csv", *limit, *NO_SANDBOX])
    return code, out.getvalue(), err.getvalue(), read_csv(cwd / "grades.csv")


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def results(rows: list[dict[str, str]], student: str) -> list[str]:
    return [row["result"] for row in rows if Path(row["student"]).stem == student]


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with ``submissions/`` and a private HOME for the grader, which also holds a secret variable."""
    (tmp_path / "submissions").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COMPANION_TEST_SECRET", "s3cr3t-" + uuid.uuid4().hex)
    return tmp_path


def submit(place: Path, name: str, notebook: nbformat.NotebookNode) -> Path:
    path = place / "submissions" / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return path


# --- The verdict is the grader's -------------------------------------------------------------------

WRONG_CONV = (
    "def my_conv2d(x, weight, bias):\n"
    "    n, c, h, w = x.shape\n"
    "    o, _, kh, kw = weight.shape\n"
    "    return torch.zeros(n, o, h - kh + 1, w - kw + 1, dtype=x.dtype)\n\n\n"
)


def test_a_displayed_fake_result_is_not_a_pass(place):
    fake = (
        WRONG_CONV + "from companion.check.core import CheckResult\n"
        "from IPython.display import display\n"
        'print("✅ conv2d_forward: 6 of 6 cases match the reference.")\n'
        'display(CheckResult("conv2d_forward", True, "6 of 6 cases match the reference."))\n'
        "check.conv2d_forward(my_conv2d)"
    )
    submit(place, "faker", sheet(exercises={"conv2d_forward": fake}))
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    assert results(rows, "faker") == ["passed", "failed", "passed"]


def test_a_monkeypatched_check_is_not_a_pass(place):
    patched = (
        WRONG_CONV + "import companion.check.conv\n"
        "from companion.check.core import CheckResult\n"
        'fake = lambda *args: CheckResult("conv2d_forward", True, "fine")\n'
        "check.conv2d_forward = companion.check.conv.conv2d_forward = fake\n"
        "check.conv2d_forward(my_conv2d)"
    )
    submit(place, "patcher", sheet(exercises={"conv2d_forward": patched}))
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    assert results(rows, "patcher") == ["passed", "failed", "passed"]


# --- Each submission is isolated ------------------------------------------------------------------

PROBES = {
    "the grader's environment": 'leaked = "COMPANION_TEST_SECRET" in os.environ',
    "the grader's process": """
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                leaked = leaked or os.readlink(f"/proc/{pid}/cwd") == "{place}"
            except OSError:
                pass
    """,
    "the grader's working folder": """
        try:
            assert os.path.isdir("{place}/submissions")  # it is the grader's folder, not an empty one
            with open("{place}/planted-by-student.txt", "w") as file:
                file.write("planted")
            leaked = True
        except (OSError, AssertionError):
            pass
    """,
    "the grader's home": """
        try:
            with open("{place}/home/planted-by-student.txt", "w") as file:
                file.write("planted")
            leaked = True
        except OSError:
            pass
    """,
    "the package's source": """
        import companion
        try:
            with open(companion.__path__[0] + "/planted_by_student_{token}.py", "w") as file:
                file.write("planted = True")
            leaked = True
        except OSError:
            pass
    """,
}


@needs_sandbox
@pytest.mark.parametrize("target", PROBES)
def test_a_submission_cannot_reach(target, place):
    token = uuid.uuid4().hex
    probe = textwrap.dedent(PROBES[target]).replace("{place}", str(place)).replace("{token}", token)
    submit(place, "prober", sheet(exercises=off_by_leak(probe)))
    planted = [place / "planted-by-student.txt", place / "home" / "planted-by-student.txt"]
    planted.append(ROOT / "companion" / f"planted_by_student_{token}.py")
    try:
        code, _, err, rows = main("submissions", cwd=place)
        assert code == 0, err
        assert results(rows, "prober") == ["passed", "passed", "passed"], rows[0]["message"]
        assert not [path for path in planted if path.exists()]
    finally:
        for path in planted:
            path.unlink(missing_ok=True)


@needs_sandbox
def test_a_submission_cannot_reach_the_network(place):
    """A server listens on the grader's loopback; a submission in its own network namespace cannot connect."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        probe = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
                leaked = True
            except OSError:
                pass
        """
        submit(place, "caller", sheet(exercises=off_by_leak(probe)))
        code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    assert results(rows, "caller") == ["passed", "passed", "passed"], rows[0]["message"]


@needs_sandbox
def test_a_submission_has_a_private_tmp(place):
    """It sees none of the machine's /tmp and leaves nothing there."""
    token = uuid.uuid4().hex
    ours, theirs = Path(f"/tmp/companion-grader-{token}"), Path(f"/tmp/companion-student-{token}")
    ours.write_text("the grader's")
    probe = f"""
        leaked = os.path.exists("{ours}")
        with open("{theirs}", "w") as file:
            file.write("planted")
    """
    submit(place, "tmp-reader", sheet(exercises=off_by_leak(probe)))
    try:
        code, _, err, rows = main("submissions", cwd=place)
        assert code == 0, err
        assert results(rows, "tmp-reader") == ["passed", "passed", "passed"], rows[0]["message"]
        assert not theirs.exists()
    finally:
        ours.unlink()
        theirs.unlink(missing_ok=True)


def test_a_submission_runs_under_a_cpu_time_limit_and_opens_at_most_1024_files(place):
    """The CPU-time limit backs up the wall-clock one: at most the time limit on every core, plus 10 s."""
    bound = 120 * (os.cpu_count() or 1) + 10  # main() grades with --timeout 120
    probe = f"""
        import resource
        cpu = resource.getrlimit(resource.RLIMIT_CPU)[0]
        leaked = cpu == resource.RLIM_INFINITY or cpu > {bound}
        files = []
        try:
            for _ in range(1100):
                files.append(open(os.devnull))
            leaked = True
        except OSError:
            pass
        finally:
            for file in files:
                file.close()
    """
    submit(place, "opener", sheet(exercises=off_by_leak(probe)))
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    assert results(rows, "opener") == ["passed", "passed", "passed"], rows[0]["message"]


def test_a_submission_gets_no_more_memory_and_no_larger_files_than_its_limits(place):
    hog = """
        try:
            hog = bytearray(3 << 30)
            leaked = True
        except MemoryError:
            pass
        try:
            with open("big.bin", "wb") as file:
                file.write(bytes(300 << 20))
            leaked = True
        except OSError:
            pass
    """
    submit(place, "hog", sheet(exercises=off_by_leak(hog)))
    code, _, err, rows = main("submissions", "--memory", "2", cwd=place)
    assert code == 0, err
    assert results(rows, "hog") == ["passed", "passed", "passed"], rows[0]["message"]


def test_a_submission_cannot_change_another_before_it_is_graded(place):
    victim = submit(place, "b-victim", sheet())
    spoil = f"""
        import nbformat
        try:
            notebook = nbformat.read("{victim}", as_version=4)
            for cell in notebook.cells:
                cell.source = cell.source.replace("return", "return 0 *")
            nbformat.write(notebook, "{victim}")
        except OSError:
            pass
    """
    submit(place, "a-attacker", sheet(spoil))
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    assert results(rows, "b-victim") == ["passed", "passed", "passed"]


def test_an_ipython_startup_file_planted_by_one_submission_changes_no_other(place):
    startup = place / "home" / ".ipython" / "profile_default" / "startup"
    plant = f"""
        import os
        try:
            os.makedirs("{startup}", exist_ok=True)
            with open("{startup}/00-spoil.py", "w") as file:
                file.write("import companion.check.conv as c\\nc._conv_cases = None\\n")
        except OSError:
            pass
    """
    submit(place, "a-attacker", sheet(plant))
    submit(place, "b-victim", sheet())
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    assert results(rows, "b-victim") == ["passed", "passed", "passed"]


def test_a_detached_process_cannot_rewrite_the_csv(place):
    script = textwrap.dedent(f"""
        import csv, os, time
        path = "{place}/grades.csv"
        for _ in range(1200):
            time.sleep(0.1)
            if os.path.exists(path) and "a-attacker" in open(path).read():
                rows = list(csv.reader(open(path)))
                rows = rows[:1] + [r[:4] + ["passed"] + r[5:] for r in rows[1:]]
                rows.append(["mallory.ipynb", "", "1", "conv2d_forward", "passed", "ok"])
                with open(path, "w") as file:
                    csv.writer(file).writerows(rows)
                break
    """)
    rewrite = f"""
        import subprocess, sys
        try:
            subprocess.Popen([sys.executable, "-c", {script!r}], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            pass
    """
    submit(place, "a-attacker", sheet(rewrite, exercises={"conv2d_forward": WRONG_CONV + "check.conv2d_forward(my_conv2d)"}))
    code, _, err, rows = main("submissions", cwd=place)
    assert code == 0, err
    time.sleep(3)  # time for a detached process that waited for the grader to finish
    after = read_csv(place / "grades.csv")
    assert after == rows
    assert [(Path(r["student"]).stem, r["result"]) for r in after] == [
        ("a-attacker", "passed"), ("a-attacker", "failed"), ("a-attacker", "passed")
    ]


@needs_sandbox
def test_a_submission_that_kills_its_parent_costs_only_its_own_grades(place):
    submit(place, "a-killer", sheet("import signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    submit(place, "b-honest", sheet())
    done = subprocess.run(
        [sys.executable, "-m", "companion.grade", "submissions", "--csv", "grades.csv", "--timeout", "120"],
        cwd=place, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_csv(place / "grades.csv")
    assert results(rows, "b-honest") == ["passed", "passed", "passed"]
    assert len(results(rows, "a-killer")) == 3


# --- No lost work ---------------------------------------------------------------------------------


def test_an_infinite_loop_costs_only_its_own_exercise_and_names_its_cell(place):
    loop = "def my_conv2d(x, weight, bias):\n    ...\n\n\nwhile True:\n    pass\n\ncheck.conv2d_forward(my_conv2d)"
    submit(place, "looper", sheet(exercises={"conv2d_forward": loop}))
    code, _, err, rows = main("submissions", "--cell-timeout", "3", cwd=place)
    assert code == 0, err
    assert results(rows, "looper") == ["passed", "raised", "passed"]
    message = rows[1]["message"]
    assert "code cell 3" in message and "3 s" in message, message  # the answer to exercise 2


def test_the_csv_gains_each_submission_as_soon_as_it_is_graded(place):
    submit(place, "a-first", sheet())
    submit(place, "b-endless", sheet("import time\ntime.sleep(600)"))
    (place / "tmp").mkdir()  # the killed grader cannot remove its working folder: keep it in the test's
    grader = subprocess.Popen(
        [sys.executable, "-m", "companion.grade", "submissions", "--csv", "grades.csv", "--timeout", "600", *NO_SANDBOX],
        cwd=place, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(place / "tmp")},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not results(read_csv(place / "grades.csv"), "a-first") and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        assert grader.poll() is None  # still on the second submission
    finally:
        grader.send_signal(signal.SIGKILL)
        grader.wait()
    rows = read_csv(place / "grades.csv")
    assert results(rows, "a-first") == ["passed", "passed", "passed"]
    # the CSV is replaced through a hidden temporary file (".grades.csv.*"): none may be left behind
    assert [p.name for p in place.iterdir() if p.name.lstrip(".").startswith("grades")] == ["grades.csv"]


# --- Chapter 7 end to end --------------------------------------------------------------------------


def homework(answers: dict[str, str]) -> nbformat.NotebookNode:
    """Chapter 7 as handed out (no solution cells), its exercise cells replaced by ``answers``."""
    notebook = grade.read(CHAPTER)
    notebook.cells = [cell for cell in notebook.cells if "solution" not in grade.tags(cell)]
    for cell in notebook.cells:
        if "exercise" in grade.tags(cell) and grade.check_name(cell.source) in answers:
            cell.source = answers[grade.check_name(cell.source)]
    return notebook


@needs_sandbox
@pytest.mark.slow
def test_chapter_7_right_wrong_looping_broken_and_malicious_submissions(place, monkeypatch):
    loop = "def my_max_pool2d(x, k):\n    while True:\n        pass\n\n\ncheck.max_pool2d(my_max_pool2d)"
    broken = "def my_output_size(n, k, p, s):\n    return (n + 2p - k) // s + 1\n\n\ncheck.conv_output_size(my_output_size)"
    malicious = (
        WRONG_CONV + "import os\nimport signal\nimport companion.check.conv\nfrom companion.check.core import CheckResult\n"
        'fake = lambda *args: CheckResult("conv2d_forward", True, "fine")\n'
        "check.conv2d_forward = companion.check.conv.conv2d_forward = fake\n"
        'print("✅ conv2d_forward: 6 of 6 cases match the reference.")\n'
        f'open("{place}/grades.csv", "w").write("student\\nmallory")\n'
        "os.kill(os.getppid(), signal.SIGKILL)\n\n"
        "check.conv2d_forward(my_conv2d)"
    )
    kinds = {
        "a-right": ({**RIGHT}, ["passed", "passed", "passed"]),
        "b-wrong": ({"conv2d_forward": WRONG_CONV + "check.conv2d_forward(my_conv2d)"}, ["passed", "failed", "passed"]),
        "c-loop": ({"max_pool2d": loop}, ["passed", "passed", "raised"]),
        "d-broken": ({"conv_output_size": broken}, ["raised", "passed", "passed"]),
        "e-malicious": ({"conv2d_forward": malicious}, ["passed", "failed", "passed"]),
    }
    for name, (answers, _) in kinds.items():
        submit(place, name, homework({**RIGHT, **answers}))
    seconds: dict[str, float] = {}
    grade_notebook = grade.grade_notebook

    def timed(notebook, student, *args, **kwargs):
        started = time.monotonic()
        try:
            return grade_notebook(notebook, student, *args, **kwargs)
        finally:
            seconds[Path(student).stem] = time.monotonic() - started

    monkeypatch.setattr(grade, "grade_notebook", timed)
    code, out, err, rows = main("submissions", "--cell-timeout", "40", "--timeout", "600", cwd=place)
    print("seconds per notebook:", {name: round(s, 1) for name, s in seconds.items()})
    assert code == 0, err
    assert list(rows[0]) == list(grade.CSV_COLUMNS) and len(rows) == 15
    for name, (_, expected) in kinds.items():
        assert results(rows, name) == expected, (name, [r["message"] for r in rows if name in r["student"]])
    assert {row["chapter"] for row in rows} == {TITLE}
    assert [row["number"] for row in rows] == ["1", "2", "3"] * 5
    stopped = next(r for r in rows if "c-loop" in r["student"] and r["result"] == "raised")["message"]
    assert "time limit of 40 s" in stopped and "code cell" in stopped
    assert "SyntaxError" in next(r for r in rows if "d-broken" in r["student"] and r["result"] == "raised")["message"]
