"""Seconds the grader takes per submission, chapter by chapter, in the sandbox it grades with.

For each chapter, two submissions are graded with ``companion.grade.grade``
(quick profile, one after the other, as ``python -m companion.grade`` does):

1. *answers*: the chapter's title, its imports cell and every exercise answered
   with the chapter's own solution under the student's names — what a short
   homework sheet holds;
2. *chapter*: the whole chapter notebook, its exercises answered the same way —
   what a student who works through the chapter's homework copy hands in.

It prints each one's seconds and grade counts; every answer must pass. The time
includes the grader's own work (copying, starting the sandboxed runner, checking
the answers), so *chapter* minus the chapter's quick-profile run is its overhead.

    python bench/grade_time.py [chapter ...]    # e.g. 07-cnn; default: every chapter
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from companion import grade


def answered(chapter: grade.Chapter) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """(answers only, the whole chapter) with every checked exercise answered by its solution."""
    whole = grade.read(chapter.path)
    cells = [new_markdown_cell(f"# {chapter.title}"), grade.imports_cell(whole)]
    for exercise in grade.exercises(whole, chapter.path.stem):
        if grade.check_name(exercise.student.source):
            exercise.student.source = grade.as_answer(exercise.solution.source)  # in the whole chapter too
            cells.append(new_code_cell(exercise.student.source))
    return new_notebook(cells=cells), whole


def timed(notebook: nbformat.NotebookNode, path: Path, chapters: list[grade.Chapter]) -> tuple[float, list[str]]:
    nbformat.write(notebook, path)
    start = time.perf_counter()
    grades = grade.grade(path, chapters, timeout=600, sandbox=grade.sandbox_problem() is None)
    return time.perf_counter() - start, [g.result for g in grades]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter names, e.g. 07-cnn (default: all)")
    args = parser.parse_args()
    chapters = grade.course()
    chosen = [c for c in chapters if not args.chapters or c.path.stem in args.chapters]
    print(f"sandbox: {grade.sandbox_problem() or 'yes'}")
    print(f"{'chapter':<16}{'answers':>9}{'chapter':>9}  results")
    failed = []
    with tempfile.TemporaryDirectory() as folder:
        for chapter in chosen:
            sheet, whole = answered(chapter)
            short, short_results = timed(sheet, Path(folder) / "answers.ipynb", chapters)
            long, long_results = timed(whole, Path(folder) / "chapter.ipynb", chapters)
            counts = {r: long_results.count(r) for r in sorted(set(long_results))}
            print(f"{chapter.path.stem:<16}{short:>8.1f}s{long:>8.1f}s  {counts}", flush=True)
            if {*short_results, *long_results} != {"passed"}:
                failed.append(chapter.path.stem)
    if failed:
        sys.exit(f"answers that did not pass: {', '.join(failed)}")


if __name__ == "__main__":
    main()
