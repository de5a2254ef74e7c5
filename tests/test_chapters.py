"""The chapters' shape: twins in step with their sources, Colab badge and setup cell, table of contents.

The notebooks themselves run under nbval (``pytest book``); these tests guard what nbval cannot see:
a malformed jupytext header silently yields a notebook with no code cells, and zero tests.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"]["branch"]

_spec = importlib.util.spec_from_file_location("twins", ROOT / "tools" / "twins.py")
twins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(twins)

CHAPTERS = twins.chapters()
by_name = pytest.mark.parametrize("source", CHAPTERS, ids=[c.stem for c in CHAPTERS])


def notebook(source: Path) -> nbformat.NotebookNode:
    return nbformat.read(twins.twin_path(source), as_version=4)


def code_cells(source: Path) -> list[str]:
    return [cell.source for cell in notebook(source).cells if cell.cell_type == "code"]


def test_there_are_chapters():
    assert [c.name for c in CHAPTERS][:1] == ["01-neurons.md"]


@by_name
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
    install = re.search(r'^\s+%pip install --quiet "companion @ git\+(\S+)@(\S+)"$', setup, re.M)
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


def toc_files(entries: list[dict]) -> list[str]:
    files = []
    for entry in entries:
        if "file" in entry:
            files.append(entry["file"])
        files += toc_files(entry.get("sections", []) + entry.get("chapters", []))
    return files


def test_table_of_contents_lists_every_chapter_and_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *toc_files(toc.get("chapters", []) + toc.get("parts", []))]
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
