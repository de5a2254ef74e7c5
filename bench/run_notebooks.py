"""Execute every chapter in one profile and record its time and headline results, one JSON line each.

    python bench/run_notebooks.py --profile quick            # all chapters
    python bench/run_notebooks.py --profile full 07-cnn      # one chapter
    python bench/run_notebooks.py --profile full --executed out/   # also keep the executed notebooks

Each chapter's ``.ipynb`` twin runs top to bottom in a fresh kernel of this
Python (nbclient), in the ``book/`` folder as nbval runs it, with
``COMPANION_PROFILE`` set and training progress as text. The headline results
are what the chapter passes to :func:`companion.config.record`; they reach this
script through the file named by ``COMPANION_RECORDS``. A chapter whose cells
fail gets no line and the script exits with 1.

The lines go to ``bench/results/<profile>-<device>.jsonl`` (``--output``
overrides), replacing earlier lines of the same chapters, and the book's
reproducibility page is written anew from every results file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import reproducibility  # noqa: E402  (tools/reproducibility.py)
import twins  # noqa: E402  (tools/twins.py)

from companion import config  # noqa: E402
from companion.grade import kernel_manager  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"  # the course's data folder beside the repository, where it exists


def cpu_name() -> str:
    """The processor's model name where Linux tells it (/proc/cpuinfo), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """What ran the chapters: device, its name, torch and Python versions, CPU cores."""
    device = config.device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
    }


def read_records(path: Path) -> dict[str, object]:
    """The results a run recorded, ``{name: value}`` (a name recorded twice keeps its last value)."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return {entry["name"]: entry["value"] for entry in map(json.loads, lines)}


def run_chapter(twin: Path, profile: str, timeout: float, executed: Path | None) -> dict[str, object]:
    """Execute ``twin`` and return its JSON record: chapter, profile, seconds, results.

    Raises:
        CellExecutionError: a cell failed (its traceback is in the message).
    """
    notebook = nbformat.read(twin, as_version=4)
    with tempfile.TemporaryDirectory(prefix="companion-run-") as folder:
        records = Path(folder) / "records.jsonl"
        env = {
            **os.environ,
            "COMPANION_PROFILE": profile,
            "COMPANION_PROGRESS": "text",
            "COMPANION_RECORDS": str(records),
            "MPLBACKEND": "Agg",
        }
        client = NotebookClient(
            notebook, km=kernel_manager(), timeout=timeout, resources={"metadata": {"path": str(twin.parent)}}
        )
        start = time.perf_counter()
        try:
            client.execute(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # the kernel's logs
        finally:
            seconds = time.perf_counter() - start
            if executed is not None:
                executed.mkdir(parents=True, exist_ok=True)
                nbformat.write(notebook, executed / twin.name)
        results = read_records(records)
    return {"chapter": twin.stem, "profile": profile, "seconds": round(seconds, 1), "results": results}


def merge(path: Path, lines: Sequence[dict[str, object]]) -> None:
    """Write ``lines`` into the JSON-lines file ``path``, in chapter order, replacing earlier lines of their chapters."""
    kept = {entry["chapter"]: entry for entry in reproducibility.read_run(path)}
    kept |= {line["chapter"]: line for line in lines}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(kept[name]) + "\n" for name in sorted(kept)), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter names such as 04-mnist (default: every chapter)")
    parser.add_argument("--profile", choices=config.PROFILES, required=True)
    parser.add_argument("--output", type=Path, help="the JSON-lines file (default: bench/results/PROFILE-DEVICE.jsonl)")
    parser.add_argument("--executed", type=Path, help="a folder to keep the executed notebooks in")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one cell")
    parser.add_argument("--book", type=Path, default=twins.BOOK, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    sources = {source.stem: source for source in twins.chapters(args.book)}
    unknown = sorted(set(args.chapters) - set(sources))
    if unknown:
        parser.error(f"no chapter {', '.join(unknown)}; the chapters are {', '.join(sources)}")
    if SHARED_DATA.is_dir():
        os.environ.setdefault("COMPANION_DATA", str(SHARED_DATA))
    about = machine() | {"date": date.today().isoformat()}
    output = args.output or RESULTS / f"{args.profile}-{about['device']}.jsonl"
    lines, failed = [], []
    for name in args.chapters or list(sources):
        try:
            line = run_chapter(twins.twin_path(sources[name]), args.profile, args.timeout, args.executed)
        except CellExecutionError as err:
            print(f"{name}: a cell failed: {err.ename}: {err.evalue}", file=sys.stderr)
            failed.append(name)
            continue
        lines.append(about | line)
        print(f"{name}: {line['seconds']:.1f} s, {len(line['results'])} results", flush=True)
    merge(output, lines)
    if args.output is None:
        reproducibility.main([])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
