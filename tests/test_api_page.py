"""The API reference, ``book/api.md``: every public module of ``companion`` has its section, every public name
a docstring, so that autodoc (which skips what has none) shows the whole public API."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
from book_files import toc_files

import companion

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "api.md"
AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\n((?:   :[\w-]+:.*\n)*)", re.M)


def page_modules() -> dict[str, set[str]]:
    """The modules that ``book/api.md`` documents, each with its directive's options (``{"members", ...}``)."""
    found: dict[str, set[str]] = {}
    for match in AUTOMODULE.finditer(PAGE.read_text(encoding="utf-8")):
        assert match[1] not in found, f"{match[1]} is documented twice"
        found[match[1]] = set(re.findall(r":([\w-]+):", match[2]))
    return found


def public_modules() -> list[str]:
    """``companion.<name>`` for each name of ``companion.__all__``, then the public modules of each package."""
    names = []
    for name in companion.__all__:
        module = importlib.import_module(f"companion.{name}")
        names.append(module.__name__)
        if hasattr(module, "__path__"):
            names += [f"{module.__name__}.{m.name}" for m in pkgutil.iter_modules(module.__path__) if m.name[0] != "_"]
    return names


@cache
def top_level(module: ModuleType) -> dict[str, ast.stmt | ast.Constant]:
    """The module's top-level definitions by name: a def or class node, or an assignment's docstring.

    An assignment maps to the string literal right below it (its attribute docstring),
    or to the assignment itself when it has none; a name imported from a module, to the import.
    """
    body = ast.parse(Path(inspect.getfile(module)).read_text(encoding="utf-8")).body
    found: dict[str, ast.stmt | ast.Constant] = {}
    for node, after in zip(body, [*body[1:], None]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update({alias.asname or alias.name: node for alias in node.names})
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            documented = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = after.value if documented else node
    return found


def definition(module: ModuleType, name: str) -> ast.stmt | ast.Constant | None:
    """Where ``name`` of ``module`` is defined (see :func:`top_level`), following ``from ... import``."""
    node = top_level(module).get(name)
    if isinstance(node, ast.ImportFrom):
        original = next(alias.name for alias in node.names if (alias.asname or alias.name) == name)
        return definition(importlib.import_module(node.module), original)
    return node


def docstring(node: ast.stmt | ast.Constant) -> str | None:
    """The docstring of a def or class node, the text of an attribute docstring, else None."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return ast.get_docstring(node)
    return None


def public_names(module: ModuleType) -> list[str]:
    """What autodoc's ``:members:`` lists: ``__all__``, else the functions and classes the module defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, obj in vars(module).items()
        if name[0] != "_" and (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__
    ]


def undocumented(module: ModuleType) -> list[str]:
    """The public names of ``module``, and the public methods of its public classes, that have no docstring.

    A method that overrides one of a base class is documented by its base (``forward``, a callback's hook).
    """
    missing = []
    for name in public_names(module):
        obj = getattr(module, name)
        node = definition(module, name)
        if inspect.isfunction(obj) and not isinstance(node, ast.FunctionDef) and inspect.getdoc(obj):
            continue  # a function built by a call (a check ``define`` makes): its docstring is its own
        if node is None or not docstring(node):
            missing.append(name)
            continue
        if isinstance(node, ast.ClassDef):
            bases = obj.__mro__[1:]
            for item in node.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) or item.name[0] == "_":
                    continue
                if not ast.get_docstring(item) and not any(item.name in vars(base) for base in bases):
                    missing.append(f"{name}.{item.name}")
    return missing


def test_the_page_is_in_the_table_of_contents_before_the_bibliography():
    files = toc_files()
    assert "book/api" in files
    assert files.index("book/api") < files.index("book/references")


def test_every_public_module_has_its_section_in_the_order_of_companion_all():
    documented = page_modules()
    assert sorted(documented) == sorted(public_modules())
    top = [name.removeprefix("companion.") for name in documented if name.count(".") == 1]
    assert top == companion.__all__
    headings = re.findall(r"^##+ `(\S+)`$", PAGE.read_text(encoding="utf-8"), re.M)
    assert headings == list(documented), "each module's section is headed by its name"
    for name in public_modules():
        if not hasattr(importlib.import_module(name), "__path__"):
            assert "members" in documented[name], f"{name} is on the page without :members:"


def test_the_page_documents_only_public_modules_of_companion():
    for name in page_modules():
        assert name.startswith("companion.") and not any(part[0] == "_" for part in name.split("."))
        importlib.import_module(name)


@pytest.mark.parametrize("name", public_modules())
def test_every_public_name_has_a_docstring(name):
    assert undocumented(importlib.import_module(name)) == []


def test_the_docstring_test_finds_what_autodoc_would_skip(tmp_path, monkeypatch):
    """An undocumented function, class, method or ``__all__`` constant is reported; documented ones are not."""
    (tmp_path / "api_probe.py").write_text(
        '__all__ = ["Bare", "Kept", "LIMIT", "SIZES", "bare", "told"]\n'
        "LIMIT = 3\n"
        "SIZES = (1, 2)\n"
        '"""Two sizes."""\n'
        "def told():\n"
        '    """Documented."""\n'
        "def bare():\n"
        "    return 1\n"
        "class Kept(dict):\n"
        '    """Documented."""\n'
        "    def keys(self):\n"
        "        return []\n"
        "    def extra(self):\n"
        "        return 0\n"
        "    def _private(self):\n"
        "        return 0\n"
        "class Bare:\n"
        "    pass\n"
    )
    spec = importlib.util.spec_from_file_location("api_probe", tmp_path / "api_probe.py")
    probe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "api_probe", probe)
    spec.loader.exec_module(probe)
    assert undocumented(probe) == ["Bare", "Kept.extra", "LIMIT", "bare"]
