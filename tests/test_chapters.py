"""The chapters' shape: twins in step with their sources, Colab badge and setup cell, table of contents.

The notebooks themselves run under nbval (``pytest book``); these tests guard what nbval cannot see:
a malformed jupytext header silently yields a notebook with no code cells, and zero tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from book_files import load_script, toc_files

from companion.grade import SOLUTION_TITLE, bound_names, exercises, tags, used_names

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"]["branch"]

twins = load_script("tools/twins.py")

CHAPTERS = twins.chapters()
by_name = pytest.mark.parametrize("source", CHAPTERS, ids=[c.stem for c in CHAPTERS])


def notebook(source: Path) -> nbformat.NotebookNode:
    return nbformat.read(twins.twin_path(source), as_version=4)


def code_cells(source: Path) -> list[str]:
    return [cell.source for cell in notebook(source).cells if cell.cell_type == "code"]


def test_there_are_chapters():
    assert [c.name for c in CHAPTERS][:1] == ["01-neurons.md"]


NOTEBOOKS = twins.notebooks()


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[c.stem for c in NOTEBOOKS])
def test_twin_is_in_step_with_its_source(source):
    twin = twins.twin_path(source)
    assert twin.is_file(), f"{twin} is missing: run `make twins`"
    assert twin.read_text(encoding="utf-8") == twins.twin_text(source), f"{twin} is out of step: run `make twins`"


@by_name
def test_source_is_a_myst_notebook_with_the_python3_kernel(source):
    header = re.match(r"^---\n(.*?)\n---\n", source.read_text(encoding="utf-8"), re.S)
    assert header, f"{source.name} must start with a jupytext YAML header"
    meta = yaml.safe_load(header.group(1))
    assert meta["jupytext"]["text_representation"]["format_name"] == "myst"
    assert meta["kernelspec"]["name"] == "python3"
    cells = code_cells(source)
    assert len(cells) >= 5, f"{source.name} yields {len(cells)} code cells: is its header or cell syntax broken?"


@by_name
def test_chapter_opens_with_its_colab_badge(source):
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    twin = f"book/{source.stem}.ipynb"
    badge = (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/{twin})"
    )
    first_markdown = next(cell.source for cell in notebook(source).cells if cell.cell_type == "markdown")
    assert badge in first_markdown, f"{source.name}: the first markdown cell must hold the badge {badge}"


@by_name
def test_first_code_cell_installs_companion_in_colab_only(source):
    setup = code_cells(source)[0]
    assert re.search(r'^if "google\.colab" in sys\.modules:$', setup, re.M), "install only inside Colab"
    # One install command, split by a backslash so that neither line is wider than the page.
    install = re.search(r'^\s+%pip install --quiet \\\n\s+"companion @ git\+(\S+)@(\S+)"$', setup, re.M)
    assert install, f"{source.name}: the setup cell must `%pip install` companion from the repository"
    assert install.groups() == (REPO_URL, BRANCH)
    assert "==" not in setup and "torch" not in setup and "numpy" not in setup, "never pin Colab's own packages"


@by_name
def test_chapter_has_the_parts_of_a_chapter(source):
    text = source.read_text(encoding="utf-8")
    for heading in ["**What you will learn**", "## Common mistakes", "## Exercises", "## Summary", "## References"]:
        assert heading in text, f"{source.name} lacks the part {heading!r}"
    asserts = sum(len(re.findall(r"^\s*assert\b", cell, re.M)) for cell in code_cells(source))
    assert asserts >= 5, f"{source.name} asserts only {asserts} claims; a chapter checks at least five"
    assert "{cite}`" in text


def test_table_of_contents_lists_every_chapter_and_only_existing_files():
    files = toc_files()
    for name in files:
        assert any((ROOT / name).with_suffix(s).is_file() for s in (".md", ".ipynb")), f"_toc.yml names {name}"
    chapters_in_toc = [f for f in files if re.match(r"book/\d\d-", f)]
    assert chapters_in_toc == [f"book/{c.stem}" for c in CHAPTERS], "every chapter, in order, in _toc.yml"


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))
    for source in CHAPTERS:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", source.read_text(encoding="utf-8")):
            for key in group.split(","):
                assert key.strip() in keys, f"{source.name} cites {key.strip()!r}, missing from references.bib"


def test_the_bibliography_parses_and_formats_as_the_book_build_does():
    database = pytest.importorskip("pybtex.database", reason="pybtex comes with the book extra")
    from pybtex.plugin import find_plugin

    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    parsed = database.parse_string(bib, "bibtex")  # raises on an unclosed entry, as sphinxcontrib-bibtex does
    keys = re.findall(r"^@\w+\{([^,]+),", bib, re.M)
    assert len(parsed.entries) == len(keys) == len(set(keys)), "one parsed entry per @-line, no key twice"
    style = find_plugin("pybtex.style.formatting", "unsrt")()
    for entry in parsed.entries.values():  # a missing required field (a booktitle, a year) raises here
        style.format_entry(entry.key, entry)


MAX_CODE_LINE = 80


@by_name
def test_code_lines_fit_the_page(source):
    long = [
        f"cell {number}: {len(line)} characters: {line[:40]}…"
        for number, cell in enumerate(code_cells(source), start=1)
        for line in cell.splitlines()
        if len(line) > MAX_CODE_LINE
    ]
    assert not long, f"{source.name}: code lines over {MAX_CODE_LINE} characters:\n" + "\n".join(long)


@by_name
def test_solutions_are_hidden_in_the_book_in_jupyter_and_in_colab(source):
    solutions = [c for c in notebook(source).cells if c.cell_type == "code" and "solution" in tags(c)]
    for cell in solutions:
        where = f"{source.name}: solution cell {cell.source.splitlines()[1:2]}"
        assert "hide-input" in tags(cell), f"{where} needs the tag hide-input (the HTML book)"
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, (
            f"{where} needs metadata jupyter: {{source_hidden: true}} (JupyterLab, Notebook 7)"
        )
        assert cell.metadata.get("cellView") == "form", f"{where} needs metadata cellView: form (Colab)"
        assert cell.source.startswith(SOLUTION_TITLE + "\n"), f"{where} must start with {SOLUTION_TITLE!r} (Colab)"


ANSWER_TITLE = "# @title The answer, computed"


def exercise_section_code(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The code cells between a chapter's ``## Exercises`` heading and the next ``## `` heading."""
    inside, cells = False, []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"^## ", cell.source, re.M):
            inside = bool(re.search(r"^## Exercises", cell.source, re.M))
        elif inside and cell.cell_type == "code":
            cells.append(cell)
    return cells


@by_name
def test_a_written_answers_cell_is_folded_everywhere_and_prints_nothing(source):
    """A cell that computes a written answer's numbers would spoil it in Colab's "Run all" if it printed them."""
    for cell in exercise_section_code(notebook(source)):
        if not {"answer", "hide-cell"} & set(tags(cell)):
            continue
        where = f"{source.name}: answer cell {cell.source.splitlines()[1:2]}"
        assert {"answer", "hide-cell"} <= set(tags(cell)), f"{where} needs the tags answer and hide-cell"
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, f"{where} needs source_hidden"
        assert cell.metadata.get("cellView") == "form", f"{where} needs metadata cellView: form (Colab)"
        assert cell.source.startswith(ANSWER_TITLE + "\n"), f"{where} must start with {ANSWER_TITLE!r}"
        assert not re.search(r"\b(print|display|plt)\b", cell.source), f"{where} must show nothing"
        assert cell.source.rstrip().splitlines()[-1].startswith("assert "), f"{where} must end with an assert"


@by_name
def test_each_exercise_is_followed_by_its_solution_and_no_other_cell_reads_the_answer(source):
    nb = notebook(source)
    found = exercises(nb, source.stem)
    solutions = [c for c in nb.cells if c.cell_type == "code" and "solution" in tags(c)]
    assert len(solutions) == len(found), f"{source.name}: {len(found)} exercise cells but {len(solutions)} solutions"
    student_names: set[str] = set()
    for ex in found:
        assert "solution" in tags(ex.solution), f"{ex.label}: the cell after the exercise must be its solution"
        assert not re.search(r"^\s*assert\b", ex.student.source, re.M), f"{ex.label}: no assert in a student cell"
        student, solution = ex.check_call("student"), ex.check_call("solution")
        assert student is not None, f"{ex.label}: the student cell must end with a bare check.<name>(...) call"
        assert solution is not None and ex.solution.source.rstrip().splitlines()[-1].startswith("assert "), (
            f"{ex.label}: the solution cell must end with `assert check.<name>(...)`"
        )
        assert student.func.attr == solution.func.attr, f"{ex.label}: student and solution call different checks"
        names = ex.student_names()
        assert names, f"{ex.label}: the student cell binds no my_ name for the answer"
        solution_names = bound_names(ex.solution.source)
        for name in names:
            assert f"{name.removeprefix('my_')}_solution" in solution_names, (
                f"{ex.label}: {name} has no counterpart {name.removeprefix('my_')}_solution in the solution"
            )
        student_names |= set(names)
    owners = {id(ex.student) for ex in found}
    for cell in nb.cells:
        if cell.cell_type == "code" and id(cell) not in owners:
            leaked = used_names(cell.source) & student_names
            assert not leaked, f"{source.name}: a cell outside the exercises reads the student's {sorted(leaked)}"
