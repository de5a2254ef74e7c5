"""The book's configuration for a build that takes its executed notebooks from a cache.

    python tools/book_config.py --cache _build/.jupyter_cache --output _build/config.yml

``make book`` executes every notebook of the book first, several at a time
(``bench/run_notebooks.py --cache``), then builds with the configuration
written here: ``_config.yml`` with ``execute_notebooks: cache`` pointed at that
cache, so the build reads the outputs instead of executing again. ``_config.yml``
itself keeps ``force``, so a plain ``jupyter-book build .`` executes every page
and never shows outputs that an edit to ``companion`` has made stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_config.yml"


def book_config(cache: Path | None = None, unexecuted: Sequence[str] = ()) -> dict:
    """``_config.yml`` for a build from another folder: notebooks from ``cache``, ``unexecuted`` pages not run.

    Args:
        cache: a jupyter-cache folder that holds the executed notebooks; None keeps ``force``.
        unexecuted: pages of the table of contents, such as ``book/07-cnn``, to build without executing.

    Paths of local extensions are made absolute: jupyter-book reads them relative
    to the configuration file, which may live elsewhere (``_build/``, a temporary folder).
    """
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    execute = config["execute"]
    if cache is not None:
        execute["execute_notebooks"] = "cache"
        execute["cache"] = str(Path(cache).resolve())
    if unexecuted:
        execute["exclude_patterns"] = [f"{name}.*" for name in unexecuted]
    sphinx = config.get("sphinx", {})
    for name, path in sphinx.get("local_extensions", {}).items():
        sphinx["local_extensions"][name] = str((ROOT / path).resolve())
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="the jupyter-cache folder of the executed notebooks")
    parser.add_argument("--output", type=Path, required=True, help="the configuration file to write")
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(yaml.safe_dump(book_config(args.cache), sort_keys=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
