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

import os
from pathlib import Path

from tests.book_files import load_script  # pytest puts this folder on the path for its conftest

_SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

if _SHARED_DATA.is_dir():
    os.environ.setdefault("COMPANION_DATA", str(_SHARED_DATA))
os.environ.setdefault("MPLBACKEND", "Agg")

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

for _name, _value in load_script("bench/run_notebooks.py").KEEP_FREED_MEMORY.items():
    os.environ.setdefault(_name, _value)
