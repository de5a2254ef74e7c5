"""Write each notebook's ``.ipynb`` twin from its MyST-markdown source (the ``.md`` is the source).

    python tools/twins.py            # regenerate the twin of every notebook in book/
    python tools/twins.py --check    # exit 1 and name the twins that are out of step

The twin is what jupytext makes of the source, outputs empty, with cell ids
derived from the cells' text so that regenerating an unchanged chapter
changes nothing on disk. Colab opens the twin; Sphinx reads the source.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from pathlib import Path

import jupytext
import yaml

BOOK = Path(__file__).resolve().parent.parent / "book"
TOC = BOOK.parent / "_toc.yml"


def chapters(book: Path = BOOK) -> list[Path]:
    """The chapter sources: ``book/NN-name.md``, in order."""
    return sorted(p for p in book.glob("[0-9][0-9]-*.md"))


def notebooks(book: Path = BOOK) -> list[Path]:
    """Every MyST notebook in ``book/`` (the chapters and pages such as ``homework.md``), in order."""
    return sorted(p for p in book.glob("*.md") if p.read_text(encoding="utf-8").startswith("---\njupytext:"))


def toc_files(toc: dict | Path = TOC) -> list[str]:
    """Every ``file`` a table of contents names (``_toc.yml`` by default), its root first, in order.

    ``toc`` is the file, or its contents as a dict; the names are as written there, e.g. ``book/04-mnist``.
    """
    if isinstance(toc, Path):
        toc = yaml.safe_load(toc.read_text(encoding="utf-8"))
    found = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({key: value for key, value in toc.items() if key != "root"})
    return found


def in_book(sources: list[Path], book: Path = BOOK, toc: Path = TOC) -> list[Path]:
    """Those of ``sources`` that the table of contents lists (all of them when ``book`` has no ``_toc.yml`` beside it)."""
    if book.resolve() != BOOK or not toc.is_file():
        return sources
    listed = set(toc_files(toc))
    return [source for source in sources if f"{book.name}/{source.stem}" in listed]


def twin_path(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def twin_text(source: Path) -> str:
    """The exact text the twin of ``source`` must have."""
    notebook = jupytext.read(source, fmt="md:myst")
    seen: Counter[str] = Counter()
    for cell in notebook.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
        seen[digest] += 1
        cell.id = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return jupytext.writes(notebook, fmt="ipynb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report twins out of step; write nothing")
    parser.add_argument("sources", nargs="*", type=Path, help="chapter sources (default: all)")
    args = parser.parse_args(argv)
    stale = []
    for source in args.sources or notebooks():
        text, twin = twin_text(source), twin_path(source)
        if twin.exists() and twin.read_text(encoding="utf-8") == text:
            continue
        stale.append(twin)
        if not args.check:
            twin.write_text(text, encoding="utf-8")
    verb = "out of step (run `make twins`)" if args.check else "written"
    for twin in stale:
        print(f"{twin}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
