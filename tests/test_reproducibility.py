"""The reproducibility record: chapters mark their results, bench/run_notebooks.py collects them, the page shows them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from book_files import load_script

ROOT = Path(__file__).resolve().parent.parent


reproducibility = load_script("tools/reproducibility.py")
run_notebooks = load_script("bench/run_notebooks.py")
twins = load_script("tools/twins.py")

CHAPTERS = twins.chapters()
RECORD = re.compile(r'config\.record\(\s*"([a-z][a-z0-9_]*)"')


def recorded_names(chapter: Path) -> list[str]:
    return RECORD.findall(chapter.read_text(encoding="utf-8"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_every_chapter_records_its_headline_results_once_each(chapter):
    names = recorded_names(chapter)
    assert len(names) >= 2, f"{chapter.name} records {names}; mark its headline results with config.record"
    assert len(set(names)) == len(names), f"{chapter.name} records a name twice: {names}"


RUNS = sorted(reproducibility.load())  # the committed results files: quick-cpu, full-cpu, full-cuda where run


def test_the_cpu_runs_are_committed():
    assert {"quick-cpu", "full-cpu"} <= set(RUNS)


@pytest.mark.parametrize("run", RUNS)
def test_committed_results_cover_every_chapter_and_every_recorded_name(run):
    lines = reproducibility.load()[run]
    by_chapter = {line["chapter"]: line for line in lines}
    profile, device = run.split("-")
    if device == "cpu":  # the reference runs cover every chapter; a GPU run covers the chapters it ran
        assert sorted(by_chapter) == [c.stem for c in CHAPTERS]
    assert set(by_chapter) <= {c.stem for c in CHAPTERS}
    for chapter in (c for c in CHAPTERS if c.stem in by_chapter):
        line = by_chapter[chapter.stem]
        assert line["profile"] == profile and line["device"] == device
        assert line["seconds"] > 0
        missing = set(recorded_names(chapter)) - set(line["results"])
        assert not missing, f"{run}: {chapter.stem} lacks {sorted(missing)}; run bench/run_notebooks.py again"


def test_the_page_is_in_step_with_the_committed_results():
    assert reproducibility.main(["--check"]) == 0


def fake_line(chapter: str, profile: str, seconds: float, results: dict) -> dict:
    return {
        "chapter": chapter, "profile": profile, "seconds": seconds, "results": results, "device": "cpu",
        "device_name": "Test CPU", "cpu_cores": 2, "precision": "fp32", "torch": "2.13.0+cpu", "python": "3.11.7",
        "date": "2026-11-24",
    }


def test_page_shows_each_run_as_a_column():
    runs = {
        "quick-cpu": [fake_line("01-a", "quick", 12.3, {"accuracy": 0.912345, "count": 669706})],
        "full-cpu": [
            fake_line("01-a", "full", 600.0, {"accuracy": 0.98381, "count": 669706, "best": "adam"}),
            fake_line("02-b", "full", 60.0, {"loss": 1.5e-9}),
        ],
    }
    text = reproducibility.page(runs)
    assert "| chapter | quick, CPU | full, CPU |" in text
    assert "| 01-a | 12 s | 600 s |" in text and "| 02-b | — | 60 s |" in text
    assert "| **all chapters** | 0.2 min | 11.0 min |" in text
    assert "| 01-a | `accuracy` | 0.9123 | 0.9838 |" in text
    assert "| 01-a | `count` | 669,706 | 669,706 |" in text
    assert "| 01-a | `best` | — | adam |" in text
    assert "| 02-b | `loss` | — | 1.5e-09 |" in text
    assert "| full, CPU | Test CPU | 2 | — | fp32 | 2.13.0+cpu | 3.11.7 | 2026-11-24 |" in text
    assert "Slowest cells" not in text  # no run timed its cells


def test_page_shows_a_gpu_run_and_the_slowest_cells_of_each_chapter():
    cells = [{"cell": 1, "seconds": 2.0, "line": "import torch"}, {"cell": 2, "seconds": 0.1, "line": "x = 1"},
             {"cell": 3, "seconds": 50.0, "line": "history = train.fit(model, (X, y))"},
             {"cell": 4, "seconds": 7.5, "line": "a | b"}, {"cell": 5, "seconds": 1.0, "line": "plot(`x`)"}]
    gpu = fake_line("01-a", "full", 100.0, {"accuracy": 0.99}) | {
        "device": "cuda", "device_name": "NVIDIA H200", "cpu_cores": 16, "jobs": 6, "threads": 2, "cells": cells,
        "precision": "bf16"}
    runs = {"full-cpu": [fake_line("01-a", "full", 600.0, {"accuracy": 0.98})], "full-cuda": [gpu]}
    text = reproducibility.page(runs)
    assert "| chapter | full, CPU | full, GPU (CUDA) |" in text
    assert "| 01-a | 600 s | 100 s |" in text
    assert "| 01-a | `accuracy` | 0.98 | 0.99 |" in text
    assert "### full, GPU (CUDA)" in text and "### full, CPU" not in text
    rows = [line for line in text.splitlines() if line.startswith("| 01-a | ") and " s | " in line and "%" in line]
    assert rows == [
        "| 01-a | 3 | `history = train.fit(model, (X, y))` | 50.0 s | 50% |",
        "| 01-a | 4 | `a \\| b` | 7.5 s | 8% |",
        "| 01-a | 1 | `import torch` | 2.0 s | 2% |",
    ]
    assert "| full, GPU (CUDA) | NVIDIA H200 | 16 | 6 × 2 threads | bf16 | 2.13.0+cpu | 3.11.7 | 2026-11-24 |" in text


def test_a_run_whose_chapters_ran_on_two_machines_names_both():
    other = {"device_name": "Other CPU", "jobs": 1, "threads": 1, "precision": "bf16", "date": "2026-12-06"}
    run = [fake_line("01-a", "full", 60.0, {}), fake_line("02-b", "full", 60.0, {}),
           fake_line("03-c", "full", 60.0, {}) | other]
    text = reproducibility.page({"full-cpu": run})
    assert ("| full, CPU | Test CPU (2 chapters), Other CPU (1 chapter) | 2 | — (2 chapters), 1 × 1 thread "
            "(1 chapter) | fp32 (2 chapters), bf16 (1 chapter) | 2.13.0+cpu | 3.11.7 | 2026-11-24 to 2026-12-06 |") in text


def test_a_run_recorded_before_runs_named_their_precision_ran_in_fp32():
    line = fake_line("01-a", "full", 60.0, {})
    del line["precision"]
    assert "| full, CPU | Test CPU | 2 | — | fp32 | 2.13.0+cpu |" in reproducibility.page({"full-cpu": [line]})


def test_page_shows_the_wall_clock_of_a_whole_run_with_its_base_models():
    runs = {"quick-cpu": [fake_line("01-a", "quick", 12.0, {})], "full-cpu": [fake_line("01-a", "full", 600.0, {})]}
    whole = fake_line("", "full", 905.04, {}) | {"notebooks": 13, "jobs": 2, "threads": 1,
                                                "base_models": {"shakespeare": 136.6, "tang": 189.2}}
    text = reproducibility.page(runs, {"full-cpu": whole})
    assert "## Whole runs" in text
    assert "| full, CPU | 15.1 min (905 s) | 13 | shakespeare 137 s, tang 189 s | 2 × 1 thread | 2026-11-24 |" in text
    assert "| quick, CPU |" not in text.partition("## Whole runs")[2].partition("## Results")[0]  # no record, no row
    assert "## Whole runs" not in reproducibility.page(runs)


def test_the_full_cpu_run_is_recorded_whole_with_both_base_models():
    record = reproducibility.load_whole_runs()["full-cpu"]
    assert record["profile"] == "full" and record["device"] == "cpu" and record["seconds"] > 0
    assert record["notebooks"] >= len(CHAPTERS)
    assert sorted(record["base_models"]) == ["shakespeare", "tang"]


def write_chapter(book: Path, name: str, code: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), nbformat.v4.new_code_cell(code)]
    (book / f"{name}.md").write_text("# a chapter source\n", encoding="utf-8")
    nbformat.write(notebook, book / f"{name}.ipynb")


def test_run_notebooks_collects_records_and_skips_a_failing_chapter(tmp_path, capsys):
    book = tmp_path / "book"
    book.mkdir()
    write_chapter(book, "01-works", (
        "import os\nfrom companion import config\n"
        "config.record('answer', 42)\n"
        "config.record('profile', os.environ['COMPANION_PROFILE'])\n"
        "config.record('mmap_threshold', os.environ['MALLOC_MMAP_THRESHOLD_'])\n"
        "config.record('answer', 43)\n"
    ))
    write_chapter(book, "02-fails", "from companion import config\nconfig.record('early', 1.0)\n1 / 0\n")
    output = tmp_path / "results.jsonl"
    output.write_text(json.dumps(fake_line("00-kept", "quick", 1.0, {})) + "\n", encoding="utf-8")
    executed = tmp_path / "executed"
    code = run_notebooks.main(["--profile", "quick", "--book", str(book), "--output", str(output),
                               "--executed", str(executed)])
    assert code == 1
    assert "02-fails: a cell failed" in capsys.readouterr().err
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["chapter"] for line in lines] == ["00-kept", "01-works"]
    kept = os.environ.get("MALLOC_MMAP_THRESHOLD_", run_notebooks.KEEP_FREED_MEMORY["MALLOC_MMAP_THRESHOLD_"])
    assert lines[1]["results"] == {"answer": 43, "profile": "quick", "mmap_threshold": kept}
    assert lines[1]["profile"] == "quick" and lines[1]["seconds"] > 0 and lines[1]["device"] == "cpu"
    assert sorted(p.name for p in executed.iterdir()) == ["01-works.ipynb", "02-fails.ipynb"]
    assert not run_notebooks.whole_run_path(output).exists()  # a notebook failed: no whole run to record


def write_cells(book: Path, name: str, cells: list[str]) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.cells = [nbformat.v4.new_markdown_cell(f"# {name}")] + [nbformat.v4.new_code_cell(c) for c in cells]
    (book / f"{name}.md").write_text("---\njupytext:\n---\n# a notebook source\n", encoding="utf-8")
    nbformat.write(notebook, book / f"{name}.ipynb")


def test_run_notebooks_times_each_cell_and_runs_notebooks_side_by_side(tmp_path, capsys):
    book = tmp_path / "book"
    book.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    # Each notebook waits until both have started: it finishes only if the two run at the same time.
    both_started = (
        f"import os, time\nopen({str(marks)!r} + '/' + os.environ['NAME_OF_RUN'], 'w').close()\n"
        f"end = time.monotonic() + 60\n"
        f"while len(os.listdir({str(marks)!r})) < 2 and time.monotonic() < end: time.sleep(0.05)\n"
        f"assert len(os.listdir({str(marks)!r})) == 2"
    )
    for name in ["01-a", "02-b"]:
        write_cells(book, name, [f"import os\nos.environ['NAME_OF_RUN'] = {name!r}", both_started,
                                 "import time\ntime.sleep(0.5)",
                                 "from companion import config\nconfig.record('threads', "
                                 "int(os.environ['OMP_NUM_THREADS']))"])
    output = tmp_path / "results.jsonl"
    code = run_notebooks.main(["--profile", "quick", "--book", str(book), "--output", str(output),
                               "--jobs", "2", "--threads", "1", "--timeout", "120"])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["chapter"] for line in lines] == ["01-a", "02-b"]
    for line in lines:
        assert line["jobs"] == 2 and line["threads"] == 1 and line["results"] == {"threads": 1}
        assert [cell["cell"] for cell in line["cells"]] == [1, 2, 3, 4]
        assert line["cells"][2]["line"] == "import time" and 0.5 <= line["cells"][2]["seconds"] < 5
        assert sum(cell["seconds"] for cell in line["cells"]) <= line["seconds"]
    assert "slowest cell" in capsys.readouterr().out


def test_run_notebooks_stops_a_notebook_at_its_time_limit(tmp_path, capsys):
    book = tmp_path / "book"
    book.mkdir()
    write_cells(book, "01-slow", ["import time\ntime.sleep(1.5)", "time.sleep(30)"])
    write_cells(book, "02-quick", ["x = 1"])
    output = tmp_path / "results.jsonl"
    start = time.monotonic()
    code = run_notebooks.main(["--profile", "quick", "--book", str(book), "--output", str(output),
                               "--timeout", "3"])
    assert code == 1 and time.monotonic() - start < 25
    assert "01-slow: stopped after" in capsys.readouterr().err
    assert [json.loads(line)["chapter"] for line in output.read_text().splitlines()] == ["02-quick"]


def test_run_notebooks_fills_a_cache_that_the_book_build_matches(tmp_path):
    jupyter_cache = pytest.importorskip("jupyter_cache")
    book = tmp_path / "book"
    book.mkdir()
    write_cells(book, "01-figure", ["import os\nprint(os.environ.get('MPLBACKEND', '').split('.')[-1])"])
    write_cells(book, "homework", ["print('not a chapter')"])
    cache = tmp_path / "cache"
    code = run_notebooks.main(["--profile", "quick", "--book", str(book), "--output", str(tmp_path / "r.jsonl"),
                               "--cache", str(cache)])
    assert code == 0
    for name, shown in [("01-figure", "backend_inline\n"), ("homework", "not a chapter\n")]:
        fresh = nbformat.read(book / f"{name}.ipynb", as_version=4)
        _, merged = jupyter_cache.get_cache(str(cache)).merge_match_into_notebook(fresh)
        assert merged.cells[1].outputs[0]["text"] == shown
        assert "execution" not in merged.cells[1].metadata


def test_run_notebooks_names_unknown_chapters(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_notebooks.main(["--profile", "quick", "99-missing", "--output", str(tmp_path / "x.jsonl")])
    assert "no chapter 99-missing" in capsys.readouterr().err


def test_run_jobs_fills_a_free_slot_with_the_first_job_whose_needs_are_done(capsys):
    events: list[str] = []

    def job(name: str, seconds: float, ok: bool = True, needs: tuple[str, ...] = ()) -> object:
        async def run() -> bool:
            events.append(f"start {name}")
            await asyncio.sleep(seconds)
            events.append(f"end {name}")
            return ok

        return run_notebooks.Job(name, run, frozenset(needs))

    queue = [job("model", 0.3), job("broken", 0.05, ok=False), job("reader", 0.05, needs=("model",)),
             job("other", 0.05), job("late", 0.05, needs=("broken",))]
    failed = asyncio.run(run_notebooks.run_jobs(queue, slots=2))
    assert sorted(failed) == ["broken", "late"]
    assert "late: not run: broken failed" in capsys.readouterr().err
    assert "start late" not in events
    # the reader waited for the model; "other", later in the queue, took the free slot meanwhile
    assert events.index("start other") < events.index("end model") < events.index("start reader")
    assert max(sum(1 if e.startswith("start") else -1 for e in events[:i + 1]) for i in range(len(events))) <= 2


def test_exactly_the_chapters_that_load_base_models_wait_for_them():
    readers = [chapter.stem for chapter in CHAPTERS if run_notebooks.reads_base_models(chapter)]
    assert readers == ["11-llm", "12-finetune"]


def test_run_notebooks_builds_the_base_models_before_the_notebooks_that_read_them(tmp_path, capsys, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    built = tmp_path / "built"
    built.mkdir()

    other_ran = tmp_path / "other-ran"

    async def fake_build(corpus: str, settings: object, done: object) -> bool:  # done only once 02-other has run
        end = time.monotonic() + 60
        while not other_ran.exists() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        (built / corpus).touch()
        done(corpus, 1.25)
        return other_ran.exists()

    monkeypatch.setattr(run_notebooks, "build_base_model", fake_build)
    write_cells(book, "01-reader", ["# base_models.base_model(\"tang\")\nimport os\n"
                                    f"assert sorted(os.listdir({str(built)!r})) == ['shakespeare', 'tang']"])
    write_cells(book, "02-other", [f"open({str(other_ran)!r}, 'w').close()"])
    (book / "01-reader.md").write_text("---\njupytext:\n---\nbase_models.base_model(\"tang\")\n", encoding="utf-8")
    output = tmp_path / "results.jsonl"
    code = run_notebooks.main(["--profile", "quick", "--book", str(book), "--output", str(output),
                               "--jobs", "3", "--base-models"])
    assert code == 0, capsys.readouterr().err
    assert [json.loads(line)["chapter"] for line in output.read_text().splitlines()] == ["01-reader", "02-other"]
    whole = json.loads(run_notebooks.whole_run_path(output).read_text())
    assert whole["notebooks"] == 2 and whole["base_models"] == {"shakespeare": 1.2, "tang": 1.2}
    assert whole["profile"] == "quick" and whole["jobs"] == 3 and whole["seconds"] > 0
    assert run_notebooks.whole_run_path(output).name == "results.run.json"
    run_notebooks.whole_run_path(output).unlink()
    assert run_notebooks.main(["--profile", "quick", "--book", str(book), "--output", str(output), "02-other"]) == 0
    assert not run_notebooks.whole_run_path(output).exists()  # one chapter is not a whole run


def test_a_base_model_job_runs_the_package_script(capsys):
    settings = run_notebooks.Settings("quick", timeout=600, threads=1)
    built = {}
    assert asyncio.run(run_notebooks.build_base_model("shakespeare", settings, built.__setitem__))
    assert "base model shakespeare (quick): cached after" in capsys.readouterr().out
    assert list(built) == ["shakespeare"] and built["shakespeare"] > 0


def test_wall_seconds_times_a_run_and_names_a_failing_notebook(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    write_cells(book, "01-sleeps", ["import time\ntime.sleep(0.3)"])
    write_cells(book, "02-fails", ["1 / 0"])
    settings = run_notebooks.Settings("quick", timeout=120, threads=1)
    assert 0.3 <= run_notebooks.wall_seconds([book / "01-sleeps.md"] * 2, settings, 2) < 120
    with pytest.raises(RuntimeError, match="^02-fails failed"):
        run_notebooks.wall_seconds([book / "01-sleeps.md", book / "02-fails.md"], settings, 1)


def test_a_chapter_benchmark_takes_a_chapter_of_the_book_and_names_the_others(capsys):
    args, chapter = run_notebooks.chapter_benchmark("a benchmark", "04-mnist", ["--repeats", "2"])
    assert chapter.stem == "04-mnist" and args.repeats == 2 and args.profile == "quick"
    with pytest.raises(SystemExit):
        run_notebooks.chapter_benchmark("a benchmark", "04-mnist", ["--chapter", "99-none"])
    assert "no chapter 99-none; the chapters are 01-neurons" in capsys.readouterr().err


def test_the_test_sessions_notebook_kernels_keep_freed_memory_as_the_books_do():
    """conftest.py puts KEEP_FREED_MEMORY in the environment that nbval's kernels inherit (unless set)."""
    for name in run_notebooks.KEEP_FREED_MEMORY:
        assert os.environ.get(name), name
