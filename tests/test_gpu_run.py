"""``bench/gpu_run.sh`` end to end, on the CPU: one chapter, in a copy of the repository.

The script is made for a machine with an NVIDIA GPU and no network; here it runs with
``COMPANION_REQUIRE_GPU=0`` and without the wheels of ``.whl/`` (this Python has the notebook tools),
on one short chapter, so that a change that breaks it shows before the GPU run. It writes into the
repository it runs in (``bench/results/``, ``book/reproducibility.md``), hence the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

pytestmark = [
    pytest.mark.slow,  # a chapter in the full profile: a minute or so
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout"),
]


def test_gpu_run_writes_the_results_the_page_and_the_executed_notebooks(tmp_path):
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    repo = tmp_path / "repo"
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MPLBACKEND")}
    env |= {"COMPANION_REQUIRE_GPU": "0", "COMPANION_DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(out),
            "GPU_RUN_CHAPTERS": "02-learning", "GPU_RUN_TESTS": "0", "GPU_RUN_LIMIT": "400"}
    if SHARED_DATA.is_dir():
        env.setdefault("COMPANION_DATA", str(SHARED_DATA))
    done = subprocess.run(["bash", "bench/gpu_run.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "1 of 1 chapters ran to the end" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "executed.zip", "full-cpu.jsonl", "machine.txt", "reproducibility.md", "run.log"]
    (line,) = [json.loads(text) for text in (out / "full-cpu.jsonl").read_text().splitlines()]
    assert line["chapter"] == "02-learning" and line["profile"] == "full" and line["cells"]
    assert zipfile.ZipFile(out / "executed.zip").namelist() == ["02-learning.ipynb"]
    assert "### full, CPU" in (out / "reproducibility.md").read_text()  # the slowest cells of the run
