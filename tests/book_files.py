"""What several tests read of the repository: the table of contents, and the scripts of tools/ and bench/.

A helper module of the tests (pytest puts ``tests/`` on the path), not a test file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parent.parent


def read_toc() -> dict:
    """``_toc.yml`` as a dict."""
    return yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))


def toc_files(toc: dict | None = None) -> list[str]:
    """Every ``file`` a table of contents names (the book's by default), its root first, in order."""
    return load_script("tools/twins.py").toc_files(read_toc() if toc is None else toc)


def load_script(path: str) -> ModuleType:
    """The script ``path`` (relative to the repository, e.g. ``tools/twins.py``) imported as a module, once."""
    name = Path(path).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
