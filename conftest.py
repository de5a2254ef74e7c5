"""Settings shared by the unit tests and the notebook runs (nbval).

- When the course's data folder sits beside the repository (``../shared/data``,
  as on the CI machine), point ``COMPANION_DATA`` at it before any kernel starts,
  so chapters and tests read the real MNIST files instead of downloading them.
- Under pytest-xdist, share the CPU cores among the workers: each worker's
  notebook kernel inherits ``OMP_NUM_THREADS`` = cores / workers. Left alone,
  every kernel starts one thread per core, and two kernels on two cores run
  several times slower than one after the other.
- Give the kernels glibc's setting that keeps freed memory in the process
  (``KEEP_FREED_MEMORY`` of ``bench/run_notebooks.py``, which ``make book``'s
  kernels run with), unless the environment names its own.
"""

import importlib.util
import os
import sys
from pathlib import Path

_SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

if _SHARED_DATA.is_dir():
    os.environ.setdefault("COMPANION_DATA", str(_SHARED_DATA))
os.environ.setdefault("MPLBACKEND", "Agg")

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


def _run_notebooks():
    """``bench/run_notebooks.py`` as the module ``run_notebooks``, imported once (the tests use it too)."""
    if "run_notebooks" not in sys.modules:
        path = Path(__file__).parent / "bench" / "run_notebooks.py"
        spec = importlib.util.spec_from_file_location("run_notebooks", path)
        sys.modules["run_notebooks"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["run_notebooks"]


for _name, _value in _run_notebooks().KEEP_FREED_MEMORY.items():
    os.environ.setdefault(_name, _value)
