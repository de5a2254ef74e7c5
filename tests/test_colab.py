"""Each chapter as a learner meets it in Colab: the twin on its own, a bare Python, the package's wheel.

A learner who clicks "Open in Colab" gets one ``.ipynb`` twin, without the repository around it, in a
Python that holds torch, numpy, matplotlib, tqdm and ipykernel but none of the course's tools; the
notebook's setup cell installs ``companion`` from the repository. Here the session fixture builds the
package's wheel and a virtual environment outside the repository with only those packages and the
wheel (the setup cell does nothing outside Colab, so the wheel stands in for its install line). Each
chapter twin is copied alone into an empty folder and run top to bottom by a kernel of that
environment, in the quick profile: a chapter that leans on the repository's files, on jupytext, on
scikit-learn or on anything else the test extras bring fails here although it passes under nbval.

The chapter of the day runs in every test run, chosen by the day of the year, so that every run
exercises the mechanism and every chapter gets its turn. The others are marked ``colab_sweep`` and run
with ``--colab-every-chapter``: on two cores that is a third run of every chapter after nbval and the
book build, several minutes, which ``.ci/run`` leaves to ``.github/workflows/colab.yml``. That workflow
runs every twin in Colab's own runtime image, from its real install line, on every push to main; the
last test here keeps its matrix in step.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook
from packaging.version import Version

from book_files import load_script

ROOT = Path(__file__).resolve().parent.parent

twins = load_script("tools/twins.py")

TWINS = [twins.twin_path(source) for source in twins.chapters()]
# What Colab's runtime brings that the chapters may use; the package's wheel adds `companion`.
COLAB_PACKAGES = ["numpy", "matplotlib", "tqdm", "ipykernel", "transformers"]  # Colab preinstalls transformers
# What the repository's environment has and Colab's set above does not: no chapter may need it.
ABSENT_MODULES = ["jupyter_book", "nbval", "jupytext", "pytest", "sklearn", "hypothesis"]
KERNEL_NAME = "colab-like"
CELL_TIMEOUT_S = 600
# Variables of the test's own environment that would let the kernel see more than Colab's Python does.
NOT_PASSED_ON = ("PYTHON", "VIRTUAL_ENV", "JUPYTER", "IPYTHON", "COMPANION_", "MPLBACKEND")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def torch_requirement() -> str:
    """The test interpreter's torch version, without its local label (``2.13.0+cpu`` gives ``2.13.0``).

    pip takes a build of that version from its configured indexes and ``find-links``: a local CPU
    wheel, or PyTorch's CPU index where ``PIP_EXTRA_INDEX_URL`` names it. Where pip knows neither, it
    fetches PyPI's build of the version, on Linux the CUDA one (several GB).
    """
    return Version(importlib.metadata.version("torch")).public


def clean_environ() -> dict[str, str]:
    """The test's environment less the variables that would let a bare Python see more than Colab's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(NOT_PASSED_ON)}


def run_quietly(command: list[str | Path], what: str, cwd: Path) -> str:
    """Run ``command`` in ``cwd``; fail the test with its output when it exits non-zero. Returns its stdout."""
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=clean_environ(), capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
    return done.stdout


@dataclass(frozen=True)
class ColabLike:
    """A bare virtual environment with Colab's packages and the package's wheel, and its kernelspec."""

    venv: Path
    kernels: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def kernel_env(self, ipython_dir: Path) -> dict[str, str]:
        """The kernel's environment: the test's own, less what would widen the kernel's view.

        ``COMPANION_DATA`` stays (the course's data folder, as ``conftest.py`` sets it: Colab downloads
        MNIST, the tests may run offline), ``OMP_NUM_THREADS`` stays (the cores shared among test
        workers), the profile is ``quick``, and IPython starts from an empty profile folder.
        """
        env = clean_environ()
        if "COMPANION_DATA" in os.environ:
            env["COMPANION_DATA"] = os.environ["COMPANION_DATA"]
        env["COMPANION_PROFILE"] = "quick"
        env["IPYTHONDIR"] = str(ipython_dir)
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), os.environ.get("PATH", "")])
        return env

    def run(self, twin: Path, tmp_path: Path) -> nbformat.NotebookNode:
        """Copy ``twin`` alone into an empty folder under ``tmp_path`` and execute it there, top to bottom.

        Returns the executed notebook; raises ``CellExecutionError`` at the first failing cell.
        """
        folder, ipython_dir = tmp_path / "notebook", tmp_path / "ipython"
        folder.mkdir()
        ipython_dir.mkdir()
        shutil.copy(twin, folder / twin.name)
        notebook = nbformat.read(folder / twin.name, as_version=4)
        manager = AsyncKernelManager(
            kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(self.kernels)])
        )
        client = NotebookClient(
            notebook,
            km=manager,
            timeout=CELL_TIMEOUT_S,
            startup_timeout=120,
            resources={"metadata": {"path": str(folder)}},
        )
        return client.execute(env=self.kernel_env(ipython_dir))


@pytest.fixture(scope="session")
def colab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColabLike]:
    """Build the wheel of ``companion`` and a bare environment with Colab's packages and that wheel.

    The environment (over a gigabyte, most of it torch) is removed at the end of the session.
    """
    base = tmp_path_factory.mktemp("colab")
    # Build from a copy: pip builds a local folder in place and would leave build/ in the repository.
    source = base / "source"
    shutil.copytree(ROOT / "companion", source / "companion", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", source, "-w", base]
    run_quietly(build, "pip wheel", base)
    (wheel,) = base.glob("companion-*.whl")

    venv = base / "venv"
    run_quietly([sys.executable, "-m", "venv", venv], "python -m venv", base)
    colab = ColabLike(venv=venv, kernels=base / "kernels")
    torch_version = torch_requirement()
    run_quietly(
        [colab.python, "-m", "pip", "install", "--quiet", f"torch=={torch_version}", *COLAB_PACKAGES, wheel],
        "pip install into the bare environment",
        base,
    )

    report = run_quietly(
        [
            colab.python,
            "-c",
            "import importlib.util, json, companion, torch\n"
            "print(json.dumps({'torch': torch.__version__, 'companion': companion.__file__,\n"
            f"  'absent': [m for m in {ABSENT_MODULES!r} if importlib.util.find_spec(m) is None]}}))",
        ],
        "importing companion in the bare environment",
        base,
    )
    found = json.loads(report)
    assert Version(found["torch"]).public == torch_version, f"the bare environment got torch {found['torch']}"
    assert Path(found["companion"]).is_relative_to(venv), f"companion comes from {found['companion']}"
    assert found["absent"] == ABSENT_MODULES, (
        f"the bare environment can import {sorted(set(ABSENT_MODULES) - set(found['absent']))}: "
        "a chapter could pass here on a package Colab does not have"
    )

    spec = colab.kernels / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [str(colab.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Colab-like Python", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    yield colab
    shutil.rmtree(base)


def failure(twin: Path, error: CellExecutionError) -> str:
    """The message of a failed run: the failing cell's source and traceback, without terminal colours."""
    return f"{twin.name} fails on its own in a bare Colab-like Python:\n" + ANSI_ESCAPE.sub("", str(error))


def chapter_of_the_day(today: datetime.date) -> int:
    """The index into ``TWINS`` of the chapter that always runs: a rotation by date."""
    return today.timetuple().tm_yday % len(TWINS)


def chapter_params() -> list:
    """Every chapter twin, ``colab_sweep`` except the chapter of the day (ids do not depend on the date)."""
    today = chapter_of_the_day(datetime.date.today())
    return [
        pytest.param(twin, id=twin.stem, marks=() if i == today else pytest.mark.colab_sweep)
        for i, twin in enumerate(TWINS)
    ]


@pytest.mark.parametrize("twin", chapter_params())
def test_chapter_runs_alone_in_a_colab_like_python(colab, twin, tmp_path):
    try:
        executed = colab.run(twin, tmp_path)
    except CellExecutionError as error:
        pytest.fail(failure(twin, error), pytrace=False)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "every code cell ran"


@pytest.mark.parametrize("module", ["sklearn", "jupytext"])
def test_a_notebook_that_needs_more_than_colab_has_fails(colab, module, tmp_path):
    twin = tmp_path / f"needs-{module}.ipynb"
    cells = [
        new_code_cell("import pathlib, sys\npathlib.Path('prefix.txt').write_text(sys.prefix)"),
        new_code_cell(f"import {module}"),
    ]
    nbformat.write(new_notebook(cells=cells), twin)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CellExecutionError) as raised:
        colab.run(twin, run)
    message = failure(twin, raised.value)
    assert f"import {module}" in message and "ModuleNotFoundError" in message, message
    ran_in = (run / "notebook" / "prefix.txt").read_text()
    assert Path(ran_in).resolve() == colab.venv.resolve(), f"the kernel's Python is {ran_in}, not the bare one"


def test_the_rotation_reaches_every_chapter():
    days = [datetime.date(2025, 1, 1) + datetime.timedelta(days=n) for n in range(len(TWINS))]
    assert sorted(chapter_of_the_day(day) for day in days) == list(range(len(TWINS)))


def test_every_chapter_but_the_days_waits_for_the_option():
    unmarked = [param.id for param in chapter_params() if not any(m.name == "colab_sweep" for m in param.marks)]
    assert unmarked == [TWINS[chapter_of_the_day(datetime.date.today())].stem]


def test_colab_workflow_runs_every_chapter_in_colab_s_image():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "colab.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert job["strategy"]["matrix"]["chapter"] == [twin.stem for twin in TWINS], "one job per chapter twin"
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert "us-docker.pkg.dev/colab-images/public/runtime" in str(workflow)
    assert "${{ github.sha }}" in script and "COMPANION_PROFILE=quick" in script
    assert any(str(step.get("uses", "")).startswith("actions/upload-artifact@") for step in job["steps"])
