"""The reproducibility record: chapters mark their results, bench/run_notebooks.py collects them, the page shows them."""

from __future__ import annotations

import json
import re
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


@pytest.mark.parametrize("run", ["quick-cpu", "full-cpu"])
def test_committed_results_cover_every_chapter_and_every_recorded_name(run):
    lines = reproducibility.load()[run]
    by_chapter = {line["chapter"]: line for line in lines}
    assert sorted(by_chapter) == [c.stem for c in CHAPTERS]
    for chapter in CHAPTERS:
        line = by_chapter[chapter.stem]
        assert line["profile"] == run.split("-")[0] and line["device"] == "cpu"
        assert line["seconds"] > 0
        missing = set(recorded_names(chapter)) - set(line["results"])
        assert not missing, f"{run}: {chapter.stem} lacks {sorted(missing)}; run bench/run_notebooks.py again"


def test_the_page_is_in_step_with_the_committed_results():
    assert reproducibility.main(["--check"]) == 0


def fake_line(chapter: str, profile: str, seconds: float, results: dict) -> dict:
    return {
        "chapter": chapter, "profile": profile, "seconds": seconds, "results": results, "device": "cpu",
        "device_name": "Test CPU", "cpu_cores": 2, "torch": "2.13.0+cpu", "python": "3.11.7", "date": "2026-11-24",
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
    assert "| full, CPU | Test CPU | 2 | 2.13.0+cpu | 3.11.7 | 2026-11-24 |" in text


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
    assert lines[1]["results"] == {"answer": 43, "profile": "quick"}
    assert lines[1]["profile"] == "quick" and lines[1]["seconds"] > 0 and lines[1]["device"] == "cpu"
    assert sorted(p.name for p in executed.iterdir()) == ["01-works.ipynb", "02-fails.ipynb"]


def test_run_notebooks_names_unknown_chapters(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_notebooks.main(["--profile", "quick", "99-missing", "--output", str(tmp_path / "x.jsonl")])
    assert "no chapter 99-missing" in capsys.readouterr().err
