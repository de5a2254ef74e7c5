"""The project's own consistency: dependencies listed twice agree, the book's settings hold together."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PYPI = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    requirements = [Requirement(line) for line in lines]
    return {r.name.lower(): str(r.specifier) for r in requirements}


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lines = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    found = {}
    for entry in env["dependencies"] + [line.split("#")[0] for line in pip_lines if not line.startswith("-")]:
        if isinstance(entry, dict) or entry.split(">")[0].split("=")[0].strip() in {"python", "pip"}:
            continue
        requirement = Requirement(entry.replace(" ", ""))
        found[CONDA_TO_PYPI.get(requirement.name, requirement.name).lower()] = str(requirement.specifier)
    return found


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_environment_yml_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lines = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    assert any(re.match(r"^(-e|--editable) \.(\s|$)", line) for line in pip_lines)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == "python" + requires_python


def test_torch_is_never_pinned_exactly():
    assert "==" not in pyproject_requirements()["torch"]


def test_book_config_excludes_twins_hidden_folders_and_builds():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    for pattern in [".*", "**/.*", "_build", ".venv", "book/*.ipynb"]:
        assert pattern in config["exclude_patterns"]
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["timeout"] >= 600
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert (ROOT / config["bibtex_bibfiles"][0]).is_file()


def test_import_does_nothing_visible(tmp_path):
    """`import companion` and its modules print nothing, write nothing, download nothing."""
    import os
    import subprocess

    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "COMPANION_DATA": ""}
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")
    code = (
        "import importlib, pkgutil, companion\n"
        "for m in pkgutil.iter_modules(companion.__path__): importlib.import_module('companion.' + m.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert not (tmp_path / "cache").exists()


def test_package_lists_its_modules():
    import pkgutil

    import companion

    on_disk = sorted(m.name for m in pkgutil.iter_modules(companion.__path__))
    assert on_disk == sorted(companion.__all__) == sorted(m for m in dir(companion) if m in on_disk)
    assert companion.optim.Adam.__module__ == "companion.optim"  # loaded on first use


def test_the_published_url_is_the_repository_s_pages_and_is_linked_from_readme_and_front_page():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    owner, name = config["repository"]["url"].removeprefix("https://github.com/").strip("/").split("/")
    url = config["html"]["baseurl"]
    assert url == f"https://{owner}.github.io/{name}/", "GitHub Pages publishes a repository at OWNER.github.io/NAME/"
    for page in ["README.md", "intro.md"]:
        assert f"<{url}>" in (ROOT / page).read_text(), f"{page} should link the published book, {url}"


def workflow(name: str) -> dict:
    """A workflow of .github/workflows/ as a dict (YAML reads its key ``on`` as True)."""
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def test_pages_workflow_builds_the_full_book_from_main_and_deploys_it():
    pages = workflow("pages.yml")
    assert pages[True]["push"]["branches"] == ["main"]
    assert pages["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = pages["jobs"]["build"], pages["jobs"]["deploy"]
    assert build["env"]["COMPANION_PROFILE"] == "full"
    assert build["timeout-minutes"] >= 120, "the full profile on a 2-core runner takes tens of minutes"
    runs = [step["run"] for step in build["steps"] if "run" in step]
    assert any(run.strip() == "make book" for run in runs), "the book is built by the course's own command"
    uses = {step["uses"].split("@")[0]: step for step in build["steps"] if "uses" in step}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert list(uses).index("actions/configure-pages") < list(uses).index("actions/upload-pages-artifact")
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]


def test_pages_workflow_keeps_the_base_models_between_builds_under_a_key_of_their_code_and_torch():
    """The two base models take minutes of a CPU runner; a rebuild of the same recipe, code and torch
    gives the same weights, so the workflow restores them, and any change of what builds them misses."""
    build = workflow("pages.yml")["jobs"]["build"]
    cache_folder = build["env"]["COMPANION_CACHE"]
    steps = build["steps"]
    [cached] = [step for step in steps if "base-models" in step.get("with", {}).get("path", "")]
    assert cached["uses"].startswith("actions/cache@")
    assert cached["with"]["path"] == f"{cache_folder}/base-models", "where companion.base_models keeps them"
    key = cached["with"]["key"]
    for sources in ["'companion/*.py'", "'companion/models/*.py'"]:  # base_models and all it imports
        assert sources in key, f"a change of {sources} can change the weights: it must change the key"
    [torch_step] = [step for step in steps if step.get("id") == "torch"]
    assert "steps.torch.outputs.version" in key and "torch.__version__" in torch_step["run"]
    [book] = [step for step in steps if step.get("run", "").strip() == "make book"]
    assert steps.index(torch_step) < steps.index(cached) < steps.index(book)


def test_every_workflow_checks_out_and_names_pinned_actions():
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for job_name, job in workflow(path.name)["jobs"].items():
            assert job.get("timeout-minutes") or job_name == "deploy", f"{path.name}: {job_name} has no time limit"
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), f"{path.name}: {step['uses']}"
